"""A UDP session opened by hand, for the tools that play misbehaving clients.

The tools need sessions that do not behave (never acknowledge, go deaf after
their Welcome), so they cannot use ``udpchat.client``; they still open the
session the one way every client does (``common.session.opener``).
"""

from __future__ import annotations

import socket
import time

from common.chat import events as ev
from common.session.opener import SessionOpener
from common.wire.framing import decode_datagram, encode


def register_by_hand(address: tuple[str, int], nick: str, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """Open a session with the UDP server at ``address`` and send ``Register(nick)``
    as its first segment; acknowledge nothing. Returns the socket and the
    session's datagram prefix (its ``Session`` frame).

    Raises:
        TimeoutError: the server did not accept the session within ``timeout``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    deadline = time.monotonic() + timeout
    opener = SessionOpener()
    datagram: bytes | None = opener.start(time.monotonic())
    while opener.accepted is None:
        now = time.monotonic()
        if now >= deadline:
            sock.close()
            raise TimeoutError(f"{address[0]}:{address[1]} did not accept a session")
        if datagram is not None:
            sock.sendto(datagram, address)
        sock.settimeout(max(0.001, min(opener.deadline, deadline) - now))
        try:
            datagram = opener.receive(decode_datagram(sock.recv(2048))[0], time.monotonic())
        except TimeoutError:
            datagram = opener.poll(time.monotonic())
    prefix = encode(ev.Session(opener.accepted.token))
    sock.sendto(prefix + encode(ev.Data(0, 0, encode(ev.Register(nick)))), address)
    sock.settimeout(timeout)
    return sock, prefix
