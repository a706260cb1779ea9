"""Abuse from one host (issue 15 item 2): it must not lock the others out.

The attacker connects from 127.0.0.2 and the honest user from 127.0.0.1,
which Linux routes to the loopback like any 127.0.0.0/8 address: the server
counts by source address, loopback included.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from common.chat import events as ev
from common.wire.framing import MAGIC
from tcpchat.server import ChatServer

from .conftest import WAIT, FramedClient

MakeServer = Callable[..., ChatServer]
MakeClient = Callable[..., FramedClient]

ATTACKER = "127.0.0.2"


@pytest.fixture
def attacker() -> Iterator[Callable[[tuple[str, int]], socket.socket]]:
    """Connections from ATTACKER; closed after the test."""
    opened: list[socket.socket] = []

    def connect(address: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        opened.append(sock)
        sock.settimeout(WAIT)
        sock.bind((ATTACKER, 0))
        sock.connect(address)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def _wait(predicate: Callable[[], bool], event: threading.Event) -> bool:
    """Poll ``predicate`` at most WAIT seconds (the server offers no event to wait on)."""
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return False


def test_one_host_with_silent_connections_does_not_lock_others_out(
    make_server: MakeServer, clients: MakeClient, attacker: Callable[[tuple[str, int]], socket.socket]
) -> None:
    # Before: every one-byte connection counted toward --max-clients, so 8 of
    # them refused everyone else server-full until the register timeout.
    server = make_server(max_clients=8, max_per_host=8, register_timeout=WAIT)
    socks = [attacker(server.address) for _ in range(20)]
    for sock in socks:
        with contextlib.suppress(OSError):  # the server may have closed it already
            sock.sendall(MAGIC[:1])  # one byte: the framed dialect, never a whole frame
    never = threading.Event()
    assert _wait(lambda: len(server._hub) >= 8, never)
    # The server accepts in order: the first 8 are held, the extras from that
    # address were closed at once, without a word.
    for sock in socks[8:]:
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    honest = clients(server.address)
    assert honest.register("alice") == ev.Welcome("alice", 1)


def test_a_silent_newcomer_is_greeted_and_told_why_it_is_dropped(make_server: MakeServer) -> None:
    # Issue 13 item 4. Before: after `nc HOST PORT` the screen stayed blank,
    # and the registration timeout closed the connection without a word.
    server = make_server(register_timeout=1.5)
    nc = socket.create_connection(server.address, timeout=WAIT)
    try:
        lines = nc.makefile("rb")
        assert lines.readline() == b"* welcome to twinchat: type a nick and press Enter\n"
        assert lines.readline() == b"* error (registration-timeout): no nick registered in time\n"
        assert lines.readline() == b"*** disconnected: no nick registered in time\n"
        assert lines.readline() == b""
        lines.close()
    finally:
        nc.close()


def test_a_greeted_newcomer_can_still_register_by_typing_its_nick(make_server: MakeServer) -> None:
    server = make_server()
    nc = socket.create_connection(server.address, timeout=WAIT)
    try:
        lines = nc.makefile("rb")
        assert lines.readline().startswith(b"* welcome to twinchat")
        nc.sendall(b"carol\n")
        assert lines.readline() == b"*** welcome, carol: nobody else is here\n"
        lines.close()
    finally:
        nc.close()
