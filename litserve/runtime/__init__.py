"""Where the HTTP server runs: an event loop in a background thread (process mode lands later)."""
