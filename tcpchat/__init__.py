"""twinchat over TCP: a threaded server (``tcpchat.server``) and a client (``tcpchat.client``)."""
