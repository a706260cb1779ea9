"""Metrics: real servers, real chat, a scrape; the page parsed strictly.

Each test reads the counters before and after what it does, so a figure
that moved by anything but exactly what happened fails it.
"""

from __future__ import annotations

import functools
import http.client
import math
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.chat import events as ev
from common.fanout import SLOW_DETAIL
from common.wire.errors import ErrorCode
from common.wire.framing import encode
from tcpchat.client import tcp_connect
from tcpchat.server import ChatServer as TcpServer
from tests.test_one_process import Member, Person
from twinchat import servercli
from twinchat.frontend import ConnectError
from twinchat.metrics import CONTENT_TYPE, Histogram, MetricsListener, parse_address
from twinchat.server import BothServer
from udpchat.client import udp_connect
from udpchat.server import ChatServer as UdpServer

WAIT = 10.0

pytestmark = pytest.mark.timeout(40)

# --- a strict reader of the text format 0.0.4 -------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_KINDS = {"counter", "gauge", "histogram", "summary", "untyped"}
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class Page:
    """A parsed page: each family's type and help, and every sample."""

    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), default)


def _family_of(name: str, types: dict[str, str]) -> str:
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    raise AssertionError(f"sample {name} has no # TYPE line before it")


def parse(body: bytes) -> Page:
    """Parse ``body`` strictly; raise AssertionError at the first thing the format does not allow."""
    text = body.decode("utf-8")
    assert text.endswith("\n"), "the page ends with a newline"
    page = Page()
    done: set[str] = set()  # families whose samples are over: one block each
    current = ""
    for line in text[:-1].split("\n"):
        assert line, "no empty lines"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[0] == "#" and parts[1] in ("HELP", "TYPE") and len(parts) >= 3, line
            name = parts[2]
            assert re.fullmatch(_NAME, name), line
            if parts[1] == "TYPE":
                assert name not in page.types, f"a second TYPE for {name}"
                assert len(parts) == 4 and parts[3] in _KINDS, line
                page.types[name] = parts[3]
            else:
                assert name not in page.helps, f"a second HELP for {name}"
                page.helps[name] = parts[3] if len(parts) == 4 else ""
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, inner, raw = match.groups()
        family = _family_of(name, page.types)
        if family != current:
            assert family not in done, f"the samples of {family} are not in one block"
            if current:
                done.add(current)
            current = family
        labels: list[tuple[str, str]] = []
        rest = inner or ""
        while rest:
            label = _LABEL.match(rest)
            assert label, f"bad labels in {line!r}"
            value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group()], label.group(2))
            labels.append((label.group(1), value))
            rest = rest[label.end() :]
        assert len({k for k, _ in labels}) == len(labels), f"a label twice in {line!r}"
        value = float(raw)  # +Inf, -Inf and NaN included; anything else raises
        key = (name, tuple(sorted(labels)))
        assert key not in page.samples, f"a sample twice: {line!r}"
        page.samples[key] = value
        if page.types[family] == "counter":
            assert name.endswith("_total") and value >= 0, line
    for name, kind in page.types.items():
        assert name in page.helps, f"{name} has no HELP"
        if kind == "histogram":
            _check_histogram(page, name)
    return page


def _check_histogram(page: Page, name: str) -> None:
    buckets = [(dict(labels)["le"], v) for (n, labels), v in page.samples.items() if n == f"{name}_bucket"]
    bounds = [float(le) for le, _ in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf, f"{name}: buckets out of order or no +Inf"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name}: buckets are not cumulative"
    assert page.value(f"{name}_count") == counts[-1], f"{name}: _count is not the +Inf bucket"
    assert page.value(f"{name}_sum") >= 0


# --- helpers -------------------------------------------------------------------------


def request(address: tuple[str, int], method: str = "GET", path: str = "/metrics") -> tuple[int, str, bytes]:
    """One HTTP request; its status, Content-Type and body."""
    conn = http.client.HTTPConnection(*address, timeout=WAIT)
    try:
        conn.request(method, path)
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type", ""), answer.read()
    finally:
        conn.close()


def scrape(address: tuple[str, int]) -> Page:
    status, kind, body = request(address)
    assert status == 200
    assert kind == CONTENT_TYPE
    return parse(body)


def delta(before: Page, after: Page, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


@pytest.fixture
def listening() -> Iterator[Callable[[object], tuple[str, int]]]:
    """Start a metrics listener for a server; every one started is closed after the test."""
    started: list[MetricsListener] = []

    def start(server: object) -> tuple[str, int]:
        listener = MetricsListener(server.metrics)  # type: ignore[attr-defined]
        listener.start()
        started.append(listener)
        return listener.address

    yield start
    for listener in started:
        listener.close()


@pytest.fixture
def both(tmp_path: Path) -> Iterator[BothServer]:
    """One process serving TCP and UDP, its store in SQLite (so writes are timed)."""
    server = BothServer("127.0.0.1", 0, rate_limit=0, data_dir=str(tmp_path / "store"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()


def _saw(nick: str, room: str = "#lobby") -> Callable[[Member], bool]:
    return lambda m: ev.Joined(room, nick) in m.events


def _messages(member: Member, count: int) -> bool:
    return member.wait_for(lambda m: len(m.said("#lobby")) >= count)


# --- counts ------------------------------------------------------------------------------


def test_one_process_counts_exactly_what_happened(both: BothServer, listening: Callable[..., tuple[str, int]]) -> None:
    where = listening(both)
    alice = Member(tcp_connect, both.address, "alice")
    bob = Member(udp_connect, both.udp.address, "bob")
    nat = Person(both.address, "nat")
    try:
        assert alice.wait_for(_saw("bob")) and alice.wait_for(_saw("nat"))
        before = scrape(where)
        assert before.value("twinchat_connections", transport="tcp", dialect="framed") == 1
        assert before.value("twinchat_connections", transport="tcp", dialect="text") == 1
        assert before.value("twinchat_connections", transport="udp", dialect="framed") == 1
        assert before.value("twinchat_members") == 3
        assert before.value("twinchat_rooms") == 1

        for i in range(3):
            alice.link.send(ev.Say("#lobby", f"m{i}"))  # type: ignore[attr-defined]
        assert _messages(alice, 3) and _messages(bob, 3)  # alice hears her own back
        nat.read_until("alice: m2")
        after = scrape(where)
        assert delta(before, after, "twinchat_messages_received_total", kind="say") == 3
        assert delta(before, after, "twinchat_messages_received_total", kind="act") == 0
        # Three messages, three recipients each (the framed sender's echo, bob, nat's lines).
        assert delta(before, after, "twinchat_deliveries_total") == 9
        for transport in ("tcp", "udp"):
            assert delta(before, after, "twinchat_received_bytes_total", transport=transport) > 0
            assert delta(before, after, "twinchat_sent_bytes_total", transport=transport) > 0
        # Every message was written to SQLite before it went out: at least one timed write.
        writes = delta(before, after, "twinchat_store_write_seconds_count")
        assert 1 <= writes <= 3
        assert after.value("twinchat_store_write_seconds_sum") > before.value("twinchat_store_write_seconds_sum")

        alice.link.send(ev.Whisper("bob", "psst"))  # type: ignore[attr-defined]
        alice.link.send(ev.Act("#lobby", "waves"))  # type: ignore[attr-defined]
        assert bob.wait_for(lambda m: any(isinstance(e, ev.Action) for e in m.events))
        assert bob.wait_for(lambda m: any(isinstance(e, ev.Private) for e in m.events))
        last = scrape(where)
        assert delta(after, last, "twinchat_messages_received_total", kind="whisper") == 1
        assert delta(after, last, "twinchat_messages_received_total", kind="act") == 1
        assert delta(after, last, "twinchat_messages_received_total", kind="say") == 0
        assert last.get("twinchat_udp_retransmitted_segments_total", -1) >= 0
        assert last.get("twinchat_udp_lost_segments_total", -1) == 0  # reliable mode on loopback
    finally:
        for member in (alice, bob):
            member.link.close()  # type: ignore[attr-defined]
        nat.sock.close()


def test_what_ends_a_session_is_counted_by_its_code(listening: Callable[..., tuple[str, int]]) -> None:
    server = TcpServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        where = listening(server)
        before = scrape(where)
        with socket.create_connection(server.address, timeout=WAIT) as raw:
            raw.sendall(b"\xc1\x54\xff\x01\x00\x00\x00\x00")  # a frame of protocol version 255
            while raw.recv(4096):  # the server says why and closes
                pass
        after = scrape(where)
        assert delta(before, after, "twinchat_kicks_total", code="bad_version") == 1
        kicks = {labels: v for (n, labels), v in after.samples.items() if n == "twinchat_kicks_total"}
        assert sum(kicks.values()) == 1
    finally:
        server.shutdown()
        thread.join(WAIT)


def test_a_tcp_flood_is_held_back_and_counted_as_waits(listening: Callable[..., tuple[str, int]]) -> None:
    server = TcpServer("127.0.0.1", 0, rate_limit=100)  # a burst of 200, then 100 a second
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    watcher = None
    try:
        where = listening(server)
        watcher = Member(tcp_connect, server.address, "wren")
        flooder = Person(server.address, "flo")
        try:
            assert watcher.wait_for(_saw("flo"))
            before = scrape(where)
            flooder.say(*(f"x{i}" for i in range(230)))  # one paste, 30 past the burst
            assert watcher.wait_for(lambda m: ("flo", "x229") in m.said("#lobby"))
            after = scrape(where)
        finally:
            flooder.sock.close()
        assert delta(before, after, "twinchat_messages_received_total", kind="say") == 230  # none lost
        assert delta(before, after, "twinchat_rate_limited_waits_total", transport="tcp") >= 1
        assert sum(v for (n, _), v in after.samples.items() if n == "twinchat_kicks_total") == 0  # held, not kicked
    finally:
        if watcher is not None:
            watcher.link.close()  # type: ignore[attr-defined]
        server.shutdown()
        thread.join(WAIT)


def test_a_slow_consumer_is_a_kick_by_its_code(listening: Callable[..., tuple[str, int]]) -> None:
    server = TcpServer("127.0.0.1", 0, rate_limit=0, max_queue=16 * 1024)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    flooder = None
    slow = socket.socket()
    try:
        where = listening(server)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(WAIT)
        slow.connect(server.address)
        slow.sendall(encode(ev.Register("slow")))  # and never reads again
        flooder = Member(tcp_connect, server.address, "flood")
        assert flooder.wait_for(lambda m: any(isinstance(e, ev.Welcome) for e in m.events))
        before = scrape(where)
        text = "y" * 1000
        # The kernel's buffers take megabytes on loopback before the server queues any.
        for round_ in range(100):  # bounded: 20 MB at most
            seen = len(flooder.events)
            last = f"{round_}/199 {text}"
            for n in range(200):
                flooder.link.send(ev.Say("#lobby", f"{round_}/{n} {text}"))  # type: ignore[attr-defined]
            assert flooder.wait_for(
                lambda m, seen=seen, last=last: any(
                    isinstance(e, ev.Message) and e.text == last for e in m.events[seen:]
                )
            )
            if ev.Left("slow", SLOW_DETAIL) in flooder.events:
                break
        else:
            pytest.fail("the slow client was never cut off")
        after = scrape(where)
        assert delta(before, after, "twinchat_kicks_total", code="slow_consumer") == 1
    finally:
        slow.close()
        if flooder is not None:
            flooder.link.close()  # type: ignore[attr-defined]
        server.shutdown()
        thread.join(WAIT)


def test_wrong_passwords_are_login_failures(listening: Callable[..., tuple[str, int]]) -> None:
    server = TcpServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    watcher = None
    try:
        where = listening(server)
        watcher = Member(tcp_connect, server.address, "dave")
        carol = Member(tcp_connect, server.address, "carol")
        carol.link.send(ev.RegisterAccount("correct horse"))  # type: ignore[attr-defined]
        assert carol.wait_for(lambda m: any(isinstance(e, ev.Reply) for e in m.events))
        carol.link.close()  # type: ignore[attr-defined]
        assert watcher.wait_for(lambda m: any(isinstance(e, ev.Left) and e.nick == "carol" for e in m.events))
        before = scrape(where)
        with pytest.raises(ConnectError) as refused:
            Member(functools.partial(tcp_connect, password="wrong horse"), server.address, "carol")
        assert refused.value.code is ErrorCode.BAD_PASSWORD
        after = scrape(where)
        assert delta(before, after, "twinchat_login_failures_total", reason="wrong_password") == 1
        assert delta(before, after, "twinchat_login_failures_total", reason="throttled") == 0
        assert delta(before, after, "twinchat_passwords_checked_total") == 1
    finally:
        if watcher is not None:
            watcher.link.close()  # type: ignore[attr-defined]
        server.shutdown()
        thread.join(WAIT)


def test_a_udp_server_alone_reports_its_sessions(listening: Callable[..., tuple[str, int]]) -> None:
    server = UdpServer("127.0.0.1", 0, rate_limit=0)
    server.start()
    try:
        where = listening(server)
        uma = Member(udp_connect, server.address, "uma")
        vic = Member(udp_connect, server.address, "vic")
        try:
            assert uma.wait_for(_saw("vic"))
            before = scrape(where)
            assert before.value("twinchat_connections", transport="udp", dialect="framed") == 2
            transports = {dict(labels)["transport"] for n, labels in before.samples if n == "twinchat_connections"}
            assert transports == {"udp"}
            for i in range(3):
                vic.link.send(ev.Say("#lobby", f"u{i}"))  # type: ignore[attr-defined]
            assert _messages(uma, 3) and _messages(vic, 3)
            after = scrape(where)
            assert delta(before, after, "twinchat_messages_received_total", kind="say") == 3
            assert delta(before, after, "twinchat_deliveries_total") == 6
            assert delta(before, after, "twinchat_received_bytes_total", transport="udp") > 0
            assert delta(before, after, "twinchat_sent_bytes_total", transport="udp") > 0
            assert after.get("twinchat_udp_retransmitted_segments_total", -1) >= 0
        finally:
            for member in (uma, vic):
                member.link.close()  # type: ignore[attr-defined]
    finally:
        server.shutdown()


# --- the listener ------------------------------------------------------------------------


@pytest.fixture
def tcp_server() -> Iterator[TcpServer]:
    server = TcpServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(WAIT)


def test_only_get_metrics_is_answered_and_bad_requests_get_a_clean_answer(
    tcp_server: TcpServer, listening: Callable[..., tuple[str, int]]
) -> None:
    where = listening(tcp_server)
    assert request(where, path="/")[0] == 404
    assert request(where, path="/metrics/../etc/passwd")[0] == 404
    assert request(where, method="POST")[0] == 501
    status, kind, body = request(where, method="HEAD")
    assert (status, kind, body) == (200, CONTENT_TYPE, b"")
    assert request(where, path="/metrics?name[]=x")[0] == 200  # Prometheus may add parameters
    for garbage in (b"\x00\xff\xfe nonsense\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"x" * 70000 + b"\r\n\r\n"):
        with socket.create_connection(where, timeout=WAIT) as raw:
            raw.sendall(garbage)
            answer = b""
            while chunk := raw.recv(4096):
                answer += chunk
        assert re.match(rb"HTTP/1\.0 (400|414|505) ", answer), answer[:80]
        assert answer.endswith(b"\n") and b"<" not in answer  # a line of plain text, then the close
    scrape(where)  # still serving


def test_a_stalled_scraper_loses_its_turn_not_the_listener(tcp_server: TcpServer) -> None:
    listener = MetricsListener(tcp_server.metrics, request_timeout=0.5)
    listener.start()
    try:
        with socket.create_connection(listener.address, timeout=WAIT) as stalled:
            stalled.sendall(b"GET /metr")  # and nothing more
            scrape(listener.address)  # served once the stalled one timed out
            assert stalled.recv(4096) == b""  # it was closed, without an answer
    finally:
        listener.close()


def test_close_stops_the_thread_and_frees_the_port(tcp_server: TcpServer) -> None:
    listener = MetricsListener(tcp_server.metrics)
    listener.start()
    where = listener.address
    assert where[0] == "127.0.0.1"  # loopback unless told otherwise
    scrape(where)
    listener.close()
    listener.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "twinchat-metrics"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(where, timeout=WAIT).close()


def test_the_page_parses_strictly_and_a_histogram_adds_up(tcp_server: TcpServer) -> None:
    page = parse(tcp_server.metrics.render())  # what the chat port's own router will serve
    assert page.types["twinchat_store_write_seconds"] == "histogram"
    assert page.value("twinchat_members") == 0
    hist = Histogram([0.1, 1.0])
    for seconds in (0.05, 0.1, 0.5, 7.0):
        hist.observe(seconds)
    assert [(s, dict(labels).get("le"), v) for s, labels, v in hist.samples()] == [
        ("_bucket", "0.1", 2),
        ("_bucket", "1.0", 3),
        ("_bucket", "+Inf", 4),
        ("_sum", None, pytest.approx(7.65)),
        ("_count", None, 4),
    ]
    with pytest.raises(ValueError):
        Histogram([1.0, 0.5])


@pytest.mark.parametrize(
    ("text", "address"),
    [("9464", ("127.0.0.1", 9464)), ("0.0.0.0:9464", ("0.0.0.0", 9464)), ("[::1]:0", ("::1", 0))],
)
def test_the_metrics_address_is_loopback_unless_a_host_is_given(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "x", "host:", "::1:80", "1:2:3", "70000", "-1"])
def test_a_bad_metrics_address_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        parse_address(text)
    defaults = servercli.Defaults(1, 1, 1.0, "", 1.0, 1, "")
    with pytest.raises(SystemExit) as exited:
        servercli.parser("x", "", defaults).parse_args(["--metrics", text])
    assert exited.value.code == 2
    assert "--metrics" in capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["tcpchat.server", "udpchat.server", "twinchat.server"])
def test_every_server_form_serves_metrics_on_loopback_and_stops_them(module: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--metrics", "0", "--ephemeral"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        ready = proc.stdout.readline()
        found = re.fullmatch(r"metrics on http://127\.0\.0\.1:(\d+)/metrics\n", first)
        assert found, (first, ready)
        assert ready.startswith("listening on")  # the listener is up before the ready line
        where = ("127.0.0.1", int(found.group(1)))
        page = scrape(where)
        expected = {"tcpchat.server": {"tcp"}, "udpchat.server": {"udp"}, "twinchat.server": {"tcp", "udp"}}
        transports = {dict(labels)["transport"] for n, labels in page.samples if n == "twinchat_connections"}
        assert transports == expected[module]
        proc.terminate()
        assert proc.wait(WAIT) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(where, timeout=WAIT).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
