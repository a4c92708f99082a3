"""Plain single-device networks. They know nothing of streams, graphs or timing."""
