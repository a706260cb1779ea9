"""twinchat over TCP: a threaded server and a client (not built yet)."""
