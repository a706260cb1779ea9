"""The UDP server's pump and its timers."""

from __future__ import annotations

import select
import socket
import time

from udpchat.server import TIMER_GRACE, ChatServer

from .harness import PATIENCE


def test_due_timers_wait_briefly_for_the_datagrams_waiting_unread() -> None:
    # A retransmission timeout must not judge an ack that already arrived and
    # waits in the socket: while datagrams wait, a timer less than
    # TIMER_GRACE late lets the receiver read them first; later, it runs.
    srv = ChatServer("127.0.0.1", 0, rate_limit=0)  # not started: nothing reads its socket
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        due = time.monotonic()
        with srv._lock:
            srv._timers = [(due, 1)]
            assert not srv._timers_may_wait(due)  # nothing waits: the timers run
        client.sendto(b"an ack, say", srv.address)
        assert select.select([srv._sock], [], [], PATIENCE)[0]
        with srv._lock:
            assert srv._timers_may_wait(due + TIMER_GRACE / 2)
            assert not srv._timers_may_wait(due + TIMER_GRACE)  # waited long enough
        assert srv._sock.recv(100) == b"an ack, say"  # looked at, not taken
    finally:
        client.close()
        srv.shutdown()
