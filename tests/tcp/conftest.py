"""Harness for the TCP tests: in-process servers on port 0 and raw test clients.

Every wait is bounded by ``WAIT`` (generous: the machine is shared), and every
wait ends on an event, never on a sleep.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY, room_key
from common.wire.framing import END_OF_STREAM, NEED_DATA, StreamDecoder, encode
from tcpchat.server import ChatServer

#: Seconds any single wait in a test may take before the test fails.
WAIT = 20.0

E = TypeVar("E", bound=ev.Event)

S = TypeVar("S", ev.Message, ev.Action, ev.Private)


def bare(event: S) -> S:
    """``event`` without the seq and time the server stamped on it, to compare
    with one a test builds (its ``history`` and ``kept`` flags stay)."""
    if isinstance(event, ev.Private):
        return dataclasses.replace(event, time=0)
    return dataclasses.replace(event, seq=0, time=0)


class Briefing(NamedTuple):
    """What a joiner is told after its own Joined: the room's topic if it has
    one, the Replay frame, and the history messages it announced."""

    topic: ev.Topic | None
    replay: ev.Replay
    history: list[ev.Message | ev.Action]


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
        #: Per room key, the seq of the last live message seen (from the join's
        #: Replay on): every live Message and Action must come next, so a
        #: framed member provably gets each message of its rooms once, in
        #: order, its own echo included.
        self.last_seq: dict[str, int] = {}
        #: The briefing of the last join (``register`` and ``join``).
        self.briefing: Briefing | None = None

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
                self._check(item)
                return item
            self.decoder.feed(self.sock.recv(1 << 16))

    def _check(self, event: ev.Event) -> None:
        """What every event from a server must be: messages stamped (a server
        never sends seq 0), and the live ones of a room numbered without a gap."""
        if isinstance(event, ev.Message | ev.Action):
            assert event.seq > 0, f"unnumbered {event!r}"
            assert event.time > 0, f"untimed {event!r}"
            key = room_key(event.room)
            if not event.history and key in self.last_seq:
                assert event.seq == self.last_seq[key] + 1, f"after seq {self.last_seq[key]} came {event!r}"
                self.last_seq[key] = event.seq
        elif isinstance(event, ev.Private):
            assert event.time > 0, f"untimed {event!r}"
        elif isinstance(event, ev.Replay):
            self.last_seq.setdefault(room_key(event.room), event.last)
        elif isinstance(event, ev.Parted) and event.nick == self.nick:
            self.last_seq.pop(room_key(event.room), None)
        elif isinstance(event, ev.Renamed) and event.old == self.nick:
            self.nick = event.new

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
        join of the lobby and its briefing (the server sends them in one go,
        nothing between)."""
        self.send(ev.Register(nick))
        welcome = self.expect(ev.Welcome)
        self.nick = welcome.nick
        assert self.expect(ev.Joined) == ev.Joined(LOBBY, welcome.nick)
        self.briefed(LOBBY)
        return welcome

    def join(self, room: str) -> ev.Joined:
        """Join ``room``; the next event must be our own join of it, then its
        briefing (kept in ``briefing``)."""
        self.send(ev.Join(room))
        joined = self.expect(ev.Joined)
        assert joined == ev.Joined(joined.room, self.nick)
        self.briefed(joined.room)
        return joined

    def briefed(self, room: str) -> Briefing:
        """Read what follows our own join of ``room``: its topic if any, the
        Replay, and exactly the history messages it announced, in seq order."""
        event = self.next()
        topic = None
        if isinstance(event, ev.Topic):
            topic, event = event, self.next()
            assert topic.room == room and not topic.changed, topic
        assert isinstance(event, ev.Replay), f"expected Replay, got {event!r}"
        assert event.room == room and not event.gap, event
        history: list[ev.Message | ev.Action] = []
        for seq in range(event.first, event.last + 1):
            said = self.next()
            assert isinstance(said, ev.Message | ev.Action), f"expected history, got {said!r}"
            assert (said.room, said.seq, said.history) == (room, seq, True), said
            history.append(said)
        self.briefing = Briefing(topic, event, history)
        return self.briefing

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


def flood_until_cut(flooder: FramedClient, cut: Callable[[ev.Event], bool], rounds: int = 40) -> bool:
    """Flood the lobby from ``flooder`` in rounds of 500 lines of 1 KB, reading
    its own echoes as it goes (or it would be a slow consumer too), until an
    event it reads is ``cut``; whether one was (the kernel buffers take some
    megabytes first)."""
    text = "y" * 1000
    for round_ in range(rounds):
        flooder.send(*(ev.Say(LOBBY, f"{round_}/{n} {text}") for n in range(500)))
        got, seen = 0, False
        while got < 500:
            event = flooder.expect(ev.Event)
            got += isinstance(event, ev.Message)
            seen = seen or cut(event)
        if seen:
            return True
    return False


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
