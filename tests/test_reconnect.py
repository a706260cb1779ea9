"""Coming back after a lost link (issue 9): the schedule, the resume, and real cuts.

The first half drives ``Reconnecting`` with a fake transport and a fake sleep:
what it sends when it comes back, what it shows, what it queues, when it gives
up. The second half cuts real links: a TCP forwarder that drops the connection
mid-flood, a UDP forwarder that goes silent, a server that restarts without
its history. A person who was cut off must see every message once, in order,
as a person who never was saw them. Every wait is on a condition, bounded.
"""

from __future__ import annotations

import contextlib
import functools
import io
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

import tcpchat.server
import udpchat.server
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.chat.view import ClientView
from common.wire.errors import ErrorCode
from tcpchat.client import tcp_connect
from twinchat.frontend.link import Backoff, ConnectError, Reconnecting
from twinchat.frontend.plain import run_plain
from twinchat.frontend.terminal import Palette, run_terminal
from udpchat.client import udp_connect

WAIT = 20.0

#: Fast enough for tests, with the same doubling and jitter.
QUICK = Backoff(base=0.05, cap=0.2)


#: 2026-12-02 12:34 local time, in Unix milliseconds.
NOON_MS: Final = int(time.mktime((2026, 12, 2, 12, 34, 0, 0, 0, -1)) * 1000)


# --- the schedule ---------------------------------------------------------------------


def test_the_backoff_doubles_from_half_a_second_to_thirty() -> None:
    backoff = Backoff()
    assert [backoff.ceiling(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.delay(3, lambda: 0.5) == 1.0  # full jitter: a share of the ceiling
    assert backoff.delay(1, lambda: 0.0) == 0.0
    assert backoff.ceiling(10_000) == 30  # no overflow, however long it lasts


# --- the session above the transport, with a fake one -----------------------------------


class FakeLink:
    def __init__(self, server: FakeServer, nick: str, on_event: Any, on_closed: Any, login: dict[str, Any]) -> None:
        self.server, self.nick, self.on_event, self.on_closed, self.login = server, nick, on_event, on_closed, login
        self.sent: list[ev.ClientEvent] = []
        self.closed = False
        self.echo = True  # False: what it is sent gets lost on the way back

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)
        if isinstance(event, ev.Join):  # as the hub: Joined, then the replay
            self.on_event(ev.Joined(event.room, self.nick))
            after = max(event.after, self.server.trimmed_to)
            kept = [m for m in self.server.stored if m.room == event.room and m.seq > after]
            last = kept[-1].seq if kept else after
            self.on_event(ev.Replay(event.room, self.server.epoch, after + 1, last, after > event.after))
            for message in kept:
                self.on_event(message)
        elif isinstance(event, ev.Ping):
            self.on_event(ev.Pong(event.nonce))
        elif isinstance(event, ev.Say) and self.echo:  # sent back, numbered, as the hub does to a framed client
            self.server.seq += 1
            self.on_event(ev.Message(event.room, self.nick, event.text, self.server.seq, NOON_MS))

    def close(self, reason: str = "") -> None:
        self.closed = True

    def drop(self, reason: str = "connection lost (reset)", *farewell: ev.ServerEvent) -> None:
        for event in farewell:
            self.on_event(event)
        self.on_closed(reason)


class FakeServer:
    """A ``Connect``: refuses while ``refusals`` lasts, then welcomes."""

    def __init__(self, *refusals: ConnectError) -> None:
        self.refusals = list(refusals)
        self.links: list[FakeLink] = []
        self.tries: list[tuple[str, dict[str, Any]]] = []
        self.epoch = "e1"
        self.seq = 0
        #: What a Join with a position replays (history messages).
        self.stored: list[ev.Message] = []
        #: Messages up to this seq are no longer replayed (a Join from before it gets a gap).
        self.trimmed_to = 0

    def __call__(self, host: str, port: int, nick: str, on_event: Any, on_closed: Any, **login: Any) -> FakeLink:
        self.tries.append((nick, login))
        if self.refusals:
            raise self.refusals.pop(0)
        link = FakeLink(self, nick, on_event, on_closed, login)
        self.links.append(link)
        on_event(ev.Welcome(nick, 1))
        if not login.get("resume"):
            link.send(ev.Join(LOBBY))
            link.sent.clear()
        return link


class Person:
    """The front end's side: a view of the events, status lines, a fake sleep."""

    def __init__(self, server: FakeServer, **options: Any) -> None:
        self.view = ClientView("ann")
        self.lines: list[str] = []
        self.status: list[str] = []
        self.closed: list[str] = []
        self.slept: list[float] = []
        self.changed = threading.Condition()
        self.link = Reconnecting(
            server,
            "127.0.0.1",
            1,
            on_event=self.on_event,
            on_closed=self.on_closed,
            on_status=self.on_status,
            whoami=lambda: (self.view.nick, self.view.resume()),
            draw=lambda: 1.0,  # the ceiling each time: the schedule shows plainly
            wait=self.sleep,
            **options,
        )

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        return False

    def on_event(self, event: ev.ServerEvent) -> None:
        with self.changed:
            self.view.observe(event)
            line = self.view.render(event)
            if line is not None:
                self.lines.append(line)
            self.changed.notify_all()

    def on_status(self, line: str) -> None:
        with self.changed:
            self.status.append(line)
            self.changed.notify_all()

    def on_closed(self, reason: str) -> None:
        with self.changed:
            self.closed.append(reason)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, WAIT)


def unreachable() -> ConnectError:
    return ConnectError("cannot reach 127.0.0.1:1: Connection refused")


def test_a_lost_link_comes_back_with_the_same_nick_rooms_and_current_room() -> None:
    server = FakeServer()
    ann = Person(server, password="pw")
    ann.link.open("ann", another=lambda nick, refusal: None)
    first = server.links[0]
    for typed in ann.view.interpret_typed("/join #dev\n/join #ops\n/join #dev"):
        if typed.send is not None:
            ann.link.send(typed.send)
    first.on_event(ev.Message("#dev", "bob", "hi", 7, 0))
    server.refusals = [unreachable(), unreachable()]
    shown = len(ann.lines)
    first.drop()
    assert ann.wait_for(lambda: len(server.links) == 2 and any(s.startswith("-- back") for s in ann.status))
    nick, login = server.tries[-1]
    assert (nick, login) == ("ann", {"password": "pw", "resume": True})
    again = server.links[1]
    joins = [e for e in again.sent if isinstance(e, ev.Join)]
    assert joins == [ev.Join(LOBBY, "e1", 0), ev.Join("#dev", "e1", 7), ev.Join("#ops", "e1", 0)]
    assert isinstance(again.sent[-1], ev.Ping)  # its Pong says the replays are over
    assert ann.view.current == "#dev"
    assert ann.slept == [0.5, 1.0, 2.0]  # three attempts, the third got through
    assert ann.status[0].startswith("-- link lost (connection lost (reset)); reconnecting in 0.5 s (attempt 1);")
    assert (
        ann.status[1]
        == "-- still away (cannot reach 127.0.0.1:1: Connection refused); reconnecting in 1.0 s (attempt 2) --"
    )
    assert ann.status[-1] == "-- back: #lobby, #dev, #ops resumed --"
    # The resume's own Welcome and Joined are bookkeeping, not news.
    assert not any("welcome" in line or "joined" in line for line in ann.lines[shown:])
    assert first.closed  # the old link was released
    assert ann.closed == []


def test_lines_typed_while_away_are_sent_once_back_and_past_the_bound_refused() -> None:
    server = FakeServer()
    ann = Person(server, queue_limit=2)
    gate = threading.Event()
    ann.link._wait = lambda seconds: not gate.wait(WAIT)  # away until the test opens the gate
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.links[0].drop()
    assert ann.wait_for(lambda: bool(ann.status))
    for text in ("one", "two", "three"):
        ann.link.send(ev.Say(LOBBY, text))
    assert ann.status[-1] == "-- not sent: the link is down and 2 lines wait already --"
    gate.set()
    assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
    sent = server.links[1].sent
    assert sent[0] == ev.Join(LOBBY, "e1", 0) and isinstance(sent[1], ev.Ping)
    assert sent[2:] == [ev.Say(LOBBY, "one"), ev.Say(LOBBY, "two")]  # after the rejoin, in order
    ann.link.send(ev.Say(LOBBY, "four"))
    assert sent[-1] == ev.Say(LOBBY, "four")  # and straight through once back


def test_what_the_server_never_took_before_the_cut_is_sent_again_and_what_it_took_is_not() -> None:
    server = FakeServer()
    ann = Person(server)
    gate = threading.Event()
    ann.link._wait = lambda seconds: not gate.wait(WAIT)
    ann.link.open("ann", another=lambda nick, refusal: None)
    first = server.links[0]
    ann.link.send(ev.Say(LOBBY, "echoed"))
    first.echo = False  # from here on the echoes are lost with the link
    for text in ("taken", "lost", "lost too"):
        ann.link.send(ev.Say(LOBBY, text))
    # The server took "taken" (it comes back in the replay); the others never arrived.
    server.stored = [ev.Message(LOBBY, "ann", "taken", 2, NOON_MS, history=True)]
    first.drop()
    assert ann.wait_for(lambda: bool(ann.status))
    ann.link.send(ev.Say(LOBBY, "typed while away"))
    gate.set()
    assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
    sent = server.links[1].sent
    assert sent[0] == ev.Join(LOBBY, "e1", 1) and isinstance(sent[1], ev.Ping)
    assert sent[2:] == [ev.Say(LOBBY, "lost"), ev.Say(LOBBY, "lost too"), ev.Say(LOBBY, "typed while away")]
    assert ann.status[-1] == "-- back: #lobby resumed; 2 line(s) the server had not taken before the cut sent again --"
    assert ann.lines.count("[" + time.strftime("%H:%M", time.gmtime(NOON_MS / 1000)) + "] ann: taken") == 1


def test_after_a_gap_a_line_in_doubt_is_not_sent_twice_and_the_person_is_told() -> None:
    server = FakeServer()
    ann = Person(server)
    gate = threading.Event()
    ann.link._wait = lambda seconds: not gate.wait(WAIT)
    ann.link.open("ann", another=lambda nick, refusal: None)
    first = server.links[0]
    first.echo = False
    ann.link.send(ev.Say(LOBBY, "in doubt"))
    # Much was said after it while ann was away: the resume replays only the latest, with a gap.
    server.trimmed_to = 1000
    server.stored = [ev.Message(LOBBY, "bob", f"m{n}", n, NOON_MS, history=True) for n in range(1001, 1004)]
    first.drop()
    assert ann.wait_for(lambda: bool(ann.status))
    gate.set()
    assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
    assert [e for e in server.links[1].sent if isinstance(e, ev.Say)] == []
    assert ann.status[-1] == (
        "-- back: #lobby resumed; 1 line(s) sent just before the cut may not have reached the server"
        " (too much was said meanwhile to check): not sent again --"
    )


def test_a_line_the_server_refused_is_not_sent_again() -> None:
    server = FakeServer()
    ann = Person(server)
    ann.link.open("ann", another=lambda nick, refusal: None)
    first = server.links[0]
    first.echo = False
    ann.link.send(ev.Say(LOBBY, "refused"))  # answered by an Error, never echoed
    first.echo = True
    ann.link.send(ev.Say(LOBBY, "taken"))  # echoed: the server handled the one before too
    first.drop()
    assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
    assert [e for e in server.links[1].sent if isinstance(e, ev.Say)] == []
    assert ann.status[-1] == "-- back: #lobby resumed --"


def test_the_end_of_a_scripts_input_waits_for_the_link_to_send_what_was_typed_while_away() -> None:
    server = FakeServer()
    ann = Person(server)
    gate = threading.Event()
    ann.link._wait = lambda seconds: not gate.wait(WAIT)
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.links[0].drop()
    assert ann.wait_for(lambda: bool(ann.status))
    ann.link.send(ev.Say(LOBBY, "last words"))
    closing = threading.Thread(target=ann.link.close, args=("",), kwargs={"wait_back": WAIT})
    closing.start()
    gate.set()
    closing.join(WAIT)
    assert not closing.is_alive()
    assert server.links[1].sent[-1] == ev.Say(LOBBY, "last words")
    assert server.links[1].closed


def test_a_link_lost_before_connect_even_returned_comes_back_too() -> None:
    class Flaky(FakeServer):
        def __call__(self, host: str, port: int, nick: str, on_event: Any, on_closed: Any, **login: Any) -> FakeLink:
            link = super().__call__(host, port, nick, on_event, on_closed, **login)
            if len(self.links) == 1:
                link.drop()  # the transport's receive thread ends before connect() returns
            return link

    server = Flaky()
    ann = Person(server)
    ann.link.open("ann", another=lambda nick, refusal: None)
    assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
    assert ann.closed == [] and len(server.links) == 2


@pytest.mark.parametrize(
    ("code", "comes_back"),
    [
        (ErrorCode.SHUTTING_DOWN, True),  # the server restarts: come back to it
        (ErrorCode.IDLE_TIMEOUT, True),  # it took a slow link for a dead client
        (ErrorCode.SLOW_CONSUMER, False),  # it meant it
        (ErrorCode.RATE_LIMITED, False),
    ],
)
def test_a_goodbye_from_the_server_ends_the_session_unless_it_is_restarting(code: ErrorCode, comes_back: bool) -> None:
    server = FakeServer()
    ann = Person(server)
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.links[0].drop("why", ev.Error(code, "why"), ev.Goodbye("why"))
    if comes_back:
        assert ann.wait_for(lambda: any(s.startswith("-- back") for s in ann.status))
        assert ann.closed == []
    else:
        assert ann.wait_for(lambda: bool(ann.closed))
        assert ann.closed == ["why"] and ann.status == [] and len(server.tries) == 1


def test_a_nick_still_held_by_the_old_session_is_waited_out_and_a_refused_password_ends_it() -> None:
    taken = ConnectError("refused: the nick ann is taken (nick-taken)", code=ErrorCode.NICK_TAKEN)
    wrong = ConnectError("refused: wrong password for ann (bad-password)", code=ErrorCode.BAD_PASSWORD)
    server = FakeServer()
    ann = Person(server)
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.refusals = [taken, wrong]
    server.links[0].drop()
    assert ann.wait_for(lambda: bool(ann.closed))
    assert ann.closed == ["refused: wrong password for ann (bad-password)"]
    assert len(server.tries) == 3


def test_no_reconnect_ends_the_session_when_the_link_drops() -> None:
    server = FakeServer()
    ann = Person(server, reconnect=False)
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.links[0].drop("connection lost (reset)")
    assert ann.closed == ["connection lost (reset)"] and ann.status == []


def test_close_while_away_stops_trying_and_says_what_was_not_sent() -> None:
    server = FakeServer()
    ann = Person(server)
    stop = threading.Event()
    ann.link._wait = lambda seconds: stop.wait(WAIT)  # close() wakes it, as the real one
    ann.link.open("ann", another=lambda nick, refusal: None)
    server.links[0].drop()
    assert ann.wait_for(lambda: bool(ann.status))
    ann.link.send(ev.Say(LOBBY, "lost"))
    stop.set()
    ann.link.close("")
    assert ann.status[-1] == "-- 1 line(s) typed while away were not sent --"
    assert len(server.links) == 1


# --- real links, cut ---------------------------------------------------------------------


class TcpForwarder:
    """A TCP relay to ``target`` that cuts the first connection after
    ``cut_after`` bytes from the server: it resets the client's side, as a
    router that lost the connection would, and closes the server's. Later
    connections are relayed whole. (A stream that just stops mid-frame is a
    server cutting off a slow client, which the client takes as meant.)"""

    def __init__(self, target: tuple[str, int], cut_after: int) -> None:
        self.target = target
        self.cut_after = cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.cuts = threading.Event()
        self._socks: list[socket.socket] = []
        self._resetting: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._first = True
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._socks += [client, upstream]
            limit = self.cut_after if self._first else 0
            self._first = False
            for src, dst, budget in ((client, upstream, 0), (upstream, client, limit)):
                thread = threading.Thread(target=self._pump, args=(src, dst, budget, (client, upstream)), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, budget: int, pair: tuple[socket.socket, ...]) -> None:
        try:
            while data := src.recv(1 << 14):
                if budget:
                    if len(data) >= budget:
                        dst.sendall(data[:budget])
                        self._reset(dst)
                        break
                    budget -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        for sock in pair:  # one side ended or the cut came: end both
            if sock in self._resetting:
                continue  # a FIN now would come before the reset
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _reset(self, sock: socket.socket) -> None:
        """Reset ``sock``: no FIN first, and no data after (the peer drops what it holds unread)."""
        self._resetting.add(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes the other pump, which leaves this socket alone
        sock.close()
        self.cuts.set()

    def close(self) -> None:
        self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


class Stdin:
    """A stdin whose lines the test gives, one at a time; ``end`` is its end."""

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def type(self, line: str) -> None:
        self._lines.put(line + "\n")

    def end(self) -> None:
        self._lines.put(None)

    def __iter__(self) -> Iterator[str]:
        while (line := self._lines.get()) is not None:
            yield line


class Screen(io.StringIO):
    """An stdout a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            n = super().write(text)
            self._changed.notify_all()
        return n

    def wait_for(self, text: str) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: text in self.getvalue(), WAIT)

    def lines(self) -> list[str]:
        with self._changed:
            return self.getvalue().splitlines()


class PlainClient:
    """A plain-mode client in a thread: ``run_plain`` as a script would run it."""

    def __init__(self, connect: Any, address: tuple[str, int], nick: str) -> None:
        self.stdin, self.stdout, self.stderr = Stdin(), Screen(), Screen()
        self.code: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.code.append(
                run_plain(
                    connect,
                    address[0],
                    address[1],
                    nick,
                    prog="c",
                    stdin=self.stdin,  # type: ignore[arg-type]
                    stdout=self.stdout,
                    stderr=self.stderr,
                    backoff=QUICK,
                )
            ),
            name=f"plain {nick}",
            daemon=True,  # a failed test must not hang the run
        )
        self.thread.start()

    def quit(self) -> int:
        self.stdin.end()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        return self.code[0]


_SAID_AT: Final = re.compile(r"^\[\d\d:\d\d\] ")


def said(lines: list[str], sender: str) -> list[str]:
    """The messages of ``sender`` as shown, replayed ones without their time."""
    return [_SAID_AT.sub("", line) for line in lines if _SAID_AT.sub("", line).startswith(f"{sender}: ")]


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., tcpchat.server.ChatServer]]:
    started: list[tuple[tcpchat.server.ChatServer, threading.Thread]] = []

    def start(port: int = 0, **options: Any) -> tcpchat.server.ChatServer:
        server = tcpchat.server.ChatServer("127.0.0.1", port, rate_limit=0, **options)
        thread = threading.Thread(target=server.serve_forever, name="test server")
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(WAIT)


def flood(link: Any, words: range) -> None:
    for n in words:
        link.send(ev.Say(LOBBY, f"m{n}"))


def test_tcp_cut_mid_flood_the_person_sees_every_message_once_in_order(
    tcp_server: Callable[..., tcpchat.server.ChatServer],
) -> None:
    server = tcp_server()
    proxy = TcpForwarder(server.address, cut_after=20_000)
    observer = PlainClient(tcp_connect, server.address, "obs")
    assert observer.stdout.wait_for("*** obs joined #lobby")
    cut = PlainClient(tcp_connect, proxy.address, "cut")
    assert observer.stdout.wait_for("*** cut joined #lobby")
    flooder = tcp_connect("127.0.0.1", server.address[1], "flood", lambda e: None, lambda r: None)
    try:
        assert observer.stdout.wait_for("*** flood joined #lobby")
        assert cut.stdout.wait_for("*** flood joined #lobby")
        for n in range(50):  # its own lines, some in flight when the cut comes
            cut.stdin.type(f"mine{n}")
        # Some 27 kB to the cut client: the cut comes in the middle. All told
        # under 1,000 messages, which a server replays to one coming back
        # (past that it replays the latest 1,000 and says there is a gap).
        flood(flooder, range(600))
        assert proxy.cuts.wait(WAIT)
        assert cut.stderr.wait_for("-- link lost"), cut.stderr.getvalue()
        for n in range(50, 100):  # typed while away: queued
            cut.stdin.type(f"mine{n}")
        flood(flooder, range(600, 700))  # while it is away, or coming back
        assert cut.stderr.wait_for("-- back: #lobby resumed")
        flood(flooder, range(700, 800))
        assert observer.stdout.wait_for("flood: m799")
        assert cut.stdout.wait_for("flood: m799")
    finally:
        flooder.close()
        proxy.close()
    seen = said(cut.stdout.lines(), "flood")
    assert seen == said(observer.stdout.lines(), "flood") == [f"flood: m{n}" for n in range(800)]
    assert "some messages of" not in cut.stdout.getvalue()  # no gap: all of it came back
    mine = [f"cut: mine{n}" for n in range(100)]
    assert observer.stdout.wait_for("cut: mine99")
    assert cut.stdout.wait_for("cut: mine99")
    assert said(observer.stdout.lines(), "cut") == said(cut.stdout.lines(), "cut") == mine  # each once, in order
    assert any(_SAID_AT.match(line) for line in cut.stdout.lines())  # some came back replayed
    assert cut.quit() == 0 and observer.quit() == 0


@pytest.fixture(params=["tcp", "udp"])
def restartable(
    request: pytest.FixtureRequest, tcp_server: Callable[..., tcpchat.server.ChatServer]
) -> Iterator[tuple[Any, Callable[[int], tuple[str, int]], Callable[[], None]]]:
    """A transport's connect, a start(port) of a server with the ephemeral
    store (0: any port), and a stop of the last one started."""
    if request.param == "tcp":
        servers: list[Any] = []

        def start_tcp(port: int) -> tuple[str, int]:
            servers.append(tcp_server(port))
            return servers[-1].address

        def stop_tcp() -> None:
            servers[-1].shutdown()  # the last one: a started one replaces it

        yield tcp_connect, start_tcp, stop_tcp
        return
    started: list[udpchat.server.ChatServer] = []

    def start_udp(port: int) -> tuple[str, int]:
        server = udpchat.server.ChatServer(port=port, rate_limit=0)
        server.start()
        started.append(server)
        return server.address

    def stop_udp() -> None:
        started[-1].shutdown()

    try:
        yield functools.partial(udp_connect, timeout=1.0), start_udp, stop_udp
    finally:
        for server in started:
            server.shutdown()


def test_a_server_restarted_without_its_history_the_gap_is_shown_and_the_rooms_come_back(
    restartable: tuple[Any, Callable[[int], tuple[str, int]], Callable[[], None]],
) -> None:
    connect, start, stop = restartable
    address = start(0)
    bot = PlainClient(connect, address, "bot")
    assert bot.stdout.wait_for("*** bot joined #lobby")
    bot.stdin.type("/join #dev")
    bot.stdin.type("before")
    assert bot.stdout.wait_for("bot: before")  # the server's echo: it is in the history
    stop()
    assert bot.stderr.wait_for("-- link lost (the server is shutting down)")
    start(address[1])
    watcher = PlainClient(connect, address, "watcher")
    assert bot.stderr.wait_for("-- back: #lobby, #dev resumed --")
    for room in (LOBBY, "#dev"):
        assert bot.stdout.wait_for(f"*** some messages of {room} are lost to you")
    assert watcher.stdout.wait_for("*** watcher joined #lobby")
    watcher.stdin.type("/join #dev")
    assert watcher.stdout.wait_for("*** watcher joined #dev")
    bot.stdin.type("after")  # still goes to #dev, the room that was current
    assert bot.stdout.wait_for("\nbot: after")
    # The watcher's current room is #dev too: a line from #lobby would say so.
    assert watcher.stdout.wait_for("\nbot: after")
    assert bot.quit() == 0 and watcher.quit() == 0


class UdpForwarder:
    """A UDP relay to ``target``, one upstream socket per client address; while
    ``silent`` is set it drops everything both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.silent = threading.Event()
        self._upstream: dict[tuple[str, int], socket.socket] = {}
        self._closed = False
        threading.Thread(target=self._down, name="udp forwarder", daemon=True).start()

    def _down(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            up = self._upstream.get(peer)
            if up is None:
                up = self._upstream[peer] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.connect(self.target)
                threading.Thread(target=self._up, args=(up, peer), daemon=True).start()
            if not self.silent.is_set():
                with contextlib.suppress(OSError):
                    up.send(data)

    def _up(self, up: socket.socket, peer: tuple[str, int]) -> None:
        while True:
            try:
                data = up.recv(4096)
            except OSError:
                if self._closed:
                    return
                continue
            if not self.silent.is_set():
                with contextlib.suppress(OSError):
                    self.sock.sendto(data, peer)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for up in self._upstream.values():
            up.close()


def test_udp_session_gone_silent_mid_flood_comes_back_and_misses_nothing() -> None:
    server = udpchat.server.ChatServer(port=0, rate_limit=0, idle_timeout=1.5)
    server.start()
    proxy = UdpForwarder(server.address)
    quick = functools.partial(udp_connect, timeout=1.0, keepalive_after=0.2, dead_after=1.0)
    observer = PlainClient(udp_connect, server.address, "obs")
    assert observer.stdout.wait_for("*** obs joined #lobby")
    cut = PlainClient(quick, proxy.address, "cut")
    assert observer.stdout.wait_for("*** cut joined #lobby")
    flooder = udp_connect(*server.address, "flood", lambda e: None, lambda r: None)
    try:
        assert observer.stdout.wait_for("*** flood joined #lobby")
        assert cut.stdout.wait_for("*** flood joined #lobby")
        flood(flooder, range(200))
        assert cut.stdout.wait_for("flood: m100")
        proxy.silent.set()
        flood(flooder, range(200, 400))
        assert cut.stderr.wait_for("-- link lost")
        proxy.silent.clear()
        assert cut.stderr.wait_for("-- back: #lobby resumed")
        flood(flooder, range(400, 500))
        assert observer.stdout.wait_for("flood: m499")
        assert cut.stdout.wait_for("flood: m499")
        seen = said(cut.stdout.lines(), "flood")
        assert seen == said(observer.stdout.lines(), "flood") == [f"flood: m{n}" for n in range(500)]
        assert cut.quit() == 0 and observer.quit() == 0
    finally:
        flooder.close()
        proxy.close()
        server.shutdown()


# --- what the terminal shows ------------------------------------------------------------


class Keys:
    """A terminal for prompt_toolkit: keys from a pipe, the screen in a buffer."""

    def __init__(self, type_keys: Callable[[str], None], screen: Screen) -> None:
        self.type = type_keys
        self.screen = screen

    def after(self, text: str, keys: str) -> threading.Thread:
        """Type ``keys`` once the screen shows ``text`` (from a thread)."""

        def play() -> None:
            if self.screen.wait_for(text):
                self.type(keys)

        thread = threading.Thread(target=play)
        thread.start()
        return thread


@pytest.fixture
def keys() -> Iterator[Keys]:
    screen = Screen()
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=PlainTextOutput(screen)):
        yield Keys(pipe.send_text, screen)


def test_the_terminal_shows_own_lines_from_the_server_history_at_its_time_and_the_link_status(keys: Keys) -> None:
    server = FakeServer()
    later = NOON_MS / 1000 + 3600  # the clock says 13:34: replayed lines keep their own 12:34
    typed = keys.after("alice [#lobby]>", "hello\r")
    mine = f"{Palette().colour('alice')}: hello"

    def play() -> None:
        assert keys.screen.wait_for(mine)
        link = server.links[0]
        link.on_event(ev.Replay("#lobby", "e1", 1, 1, False))
        link.on_event(ev.Message("#lobby", "bob", "said before", 1, NOON_MS, history=True))
        link.on_event(ev.Replay("#old", "e2", 5, 4, True))
        link.drop()
        assert keys.screen.wait_for("-- back: #lobby resumed --")
        keys.type("\x04")

    player = threading.Thread(target=play)
    player.start()
    code = run_terminal(server, "127.0.0.1", 1, "alice", prog="x", clock=lambda: later, backoff=QUICK)
    typed.join(WAIT)
    player.join(WAIT)
    assert code == 0
    screen = keys.screen.getvalue()
    assert screen.count(mine) == 1  # from the server's echo, not shown locally as well
    assert "12:34\x1b[0m " in screen and "bob\x1b[0m: said before" in screen
    assert "-- some messages of #old were lost: the history was trimmed or reset --" in screen
    assert "-- link lost (connection lost (reset)); reconnecting in" in screen
    assert server.tries[-1] == ("alice", {"password": "", "resume": True})


def test_the_terminal_asks_for_a_password_unechoed_and_a_yes_before_sending_it_in_clear(keys: Keys) -> None:
    class Registered(FakeServer):
        def __call__(self, host: str, port: int, nick: str, on_event: Any, on_closed: Any, **login: Any) -> FakeLink:
            if login.get("password") != "s3cret":
                self.tries.append((nick, login))
                code = ErrorCode.BAD_PASSWORD if login.get("password") else ErrorCode.NEEDS_PASSWORD
                raise ConnectError(f"refused: the nick ann is registered ({code.slug})", code=code)
            return super().__call__(host, port, nick, on_event, on_closed, **login)

    server = Registered()
    asked: list[str] = []

    def getpass(prompt: str) -> str:
        asked.append(prompt)
        return "s3cret"

    answered = keys.after("send it anyway? (yes/no):", "yes\r")
    quits = keys.after("ann [#lobby]>", "\x04")
    code = run_terminal(server, "192.0.2.1", 1, "ann", prog="x", ask_password=getpass, backoff=QUICK)
    answered.join(WAIT)
    quits.join(WAIT)
    assert code == 0
    assert "192.0.2.1 is another machine and this link is not encrypted" in keys.screen.getvalue()
    assert asked == ["refused: the nick ann is registered\npassword for ann (empty: give up): "]
    assert "s3cret" not in keys.screen.getvalue()
    assert server.tries[-1] == ("ann", {"password": "s3cret", "resume": False})
