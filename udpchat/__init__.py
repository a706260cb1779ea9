"""twinchat over UDP: a peer table, datagram fan-out and reliability (not built yet)."""
