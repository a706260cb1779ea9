"""Abuse of the UDP server (issue 15): one host must not lock the others out,
and a client that gives up must not leave a ghost nick behind.

Attackers send from 127.0.0.2, honest clients from 127.0.0.1: the server
counts by source address, loopback included.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from common.chat import events as ev
from common.session.opener import hello as hello_datagram
from common.wire.framing import decode_datagram
from udpchat.server import ChatServer

from .harness import PATIENCE, Member

ATTACKER = "127.0.0.2"


@pytest.fixture
def server() -> Iterator[Callable[..., ChatServer]]:
    made: list[ChatServer] = []

    def make(**options: object) -> ChatServer:
        srv = ChatServer("127.0.0.1", 0, rate_limit=0, **options)  # type: ignore[arg-type]
        srv.start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown()


def _wait(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` at most PATIENCE seconds (the server offers no event to wait on)."""
    never = threading.Event()
    for _ in range(int(PATIENCE / 0.01)):
        if predicate():
            return True
        never.wait(0.01)
    return False


def _half_open(address: tuple[str, int], host: str) -> socket.socket:
    """Hello, Cookie, Hello with the cookie, from ``host``; the Accept is not awaited."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(PATIENCE)
    sock.sendto(hello_datagram(b""), address)
    cookie = decode_datagram(sock.recv(2048))[0]
    assert isinstance(cookie, ev.Cookie)
    sock.sendto(hello_datagram(cookie.cookie), address)
    return sock


def test_one_host_with_unregistered_sessions_does_not_lock_others_out(server: Callable[..., ChatServer]) -> None:
    # Before: every unregistered session counted toward --max-clients, so 8
    # handshakes from one address refused every newcomer server-full.
    srv = server(max_clients=8, max_per_host=8, register_timeout=PATIENCE)
    socks = [_half_open(srv.address, ATTACKER) for _ in range(20)]
    try:
        assert _wait(lambda: srv.peer_count() >= 8)
        honest = Member(srv.address, "alice")
        try:
            assert honest.wait_for(lambda m: m.has(ev.Welcome, nick="alice", online=1))
        finally:
            honest.link.close()
        # The extras got no session: no Accept, no state kept.
        assert srv.counters["too many unregistered from one host"] == 12
    finally:
        for sock in socks:
            sock.close()
