"""The HTTP face of the server: a Quart app whose routes put requests on the engine's queues."""
