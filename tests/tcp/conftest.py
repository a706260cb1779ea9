"""Harness for the TCP tests: in-process servers on port 0 and raw test clients.

Every wait is bounded by ``WAIT`` (generous: the machine is shared), and every
wait ends on an event, never on a sleep.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.framing import END_OF_STREAM, NEED_DATA, StreamDecoder, encode
from tcpchat.server import ChatServer

#: Seconds any single wait in a test may take before the test fails.
WAIT = 20.0

E = TypeVar("E", bound=ev.Event)


class FramedClient:
    """A framed-protocol peer on a raw socket, driven step by step by a test."""

    def __init__(self, address: tuple[str, int], *, rcvbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect(address)
        self.decoder = StreamDecoder()
        self.nick = ""

    def send(self, *events: ev.Event) -> None:
        self.sock.sendall(b"".join(encode(e) for e in events))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self) -> ev.Event | None:
        """The next event from the server; None once the server closed the stream."""
        while True:
            item = self.decoder.next_event()
            if item is END_OF_STREAM:
                return None
            if item is not NEED_DATA:
                assert isinstance(item, ev.Event)
                return item
            self.decoder.feed(self.sock.recv(1 << 16))

    def expect(self, kind: type[E], *, skip_pings: bool = True) -> E:
        """The next event, which must be a ``kind`` (pings are answered and skipped)."""
        while True:
            event = self.next()
            if skip_pings and isinstance(event, ev.Ping) and kind is not ev.Ping:
                self.send(ev.Pong(event.nonce))
                continue
            assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
            return event

    def register(self, nick: str) -> ev.Welcome:
        """Register ``nick``: the Welcome is followed at once by the member's own
        join of the lobby (the server sends both in one go, nothing between)."""
        self.send(ev.Register(nick))
        welcome = self.expect(ev.Welcome)
        self.nick = welcome.nick
        assert self.expect(ev.Joined) == ev.Joined(LOBBY, welcome.nick)
        return welcome

    def join(self, room: str) -> ev.Joined:
        """Join ``room``; the next event must be our own join of it."""
        self.send(ev.Join(room))
        joined = self.expect(ev.Joined)
        assert joined == ev.Joined(joined.room, self.nick)
        return joined

    def until_closed(self) -> list[ev.Event]:
        """Every event until the server closes the stream."""
        out = []
        while (event := self.next()) is not None:
            out.append(event)
        return out

    def close(self) -> None:
        self.sock.close()


class LineClient:
    """A line-dialect peer, as ``nc`` would be."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        """The next line without its newline; "" once the server closed."""
        return self.file.readline().decode("utf-8").removesuffix("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ChatServer]]:
    """Start in-process servers on 127.0.0.1:0; shut them down after the test."""
    started: list[tuple[ChatServer, threading.Thread]] = []

    def make(**options: Any) -> ChatServer:
        options.setdefault("rate_limit", 0)
        server = ChatServer("127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, name="test server")
        thread.start()
        started.append((server, thread))
        return server

    yield make
    for server, thread in started:
        server.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()


@pytest.fixture
def clients() -> Iterator[Callable[..., FramedClient]]:
    """Open framed clients; close them after the test."""
    opened: list[FramedClient] = []

    def make(address: tuple[str, int], **options: Any) -> FramedClient:
        client = FramedClient(address, **options)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


@pytest.fixture
def line_clients() -> Iterator[Callable[[tuple[str, int]], LineClient]]:
    opened: list[LineClient] = []

    def make(address: tuple[str, int]) -> LineClient:
        client = LineClient(address)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
