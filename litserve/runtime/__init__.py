"""Where the HTTP server runs: its thread and event loop, socket binding, the registry of running servers."""
