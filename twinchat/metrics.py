"""Metrics for Prometheus: ``GET /metrics`` in the text exposition format 0.0.4.

Strategy: the hot path pays (almost) nothing. Most figures are not counted
as they happen but read when a scraper asks, from state the servers keep
anyway: the hub's members and rooms, each transport's connections, each
UDP channel's retransmissions. What must be counted is counted with a
plain ``int`` bumped where a lock is already held (the hub lock for the
hub's and the fan-out's counts, the UDP send lock for bytes sent) or by the
one thread that owns the number (a TCP reader's bytes in, folded into its
server's total when the connection is forgotten). A scrape holds the hub
lock only to copy: the hub's figures, then each transport's list of
connections; counting and writing the text happen after it is let go.
Nothing here needs ``prometheus-client`` (its counters take a lock per
increment: see README, "Metrics", for what that was measured to cost).

Two ways to serve it: ``MetricsListener`` is a small HTTP server on a port
of its own (``--metrics [HOST:]PORT``, loopback by default), one request
at a time, each bounded by a timeout, on a thread of its own; and
``Metrics.render()`` gives the page to any other HTTP front end (the chat
port's, for loopback peers).
"""

from __future__ import annotations

import bisect
import http.server
import logging
import math
import socket
import socketserver
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from common.chat.hub import Hub
    from twinchat.durable import Courier
    from twinchat.gatekeeper import Gatekeeper

log = logging.getLogger("twinchat.metrics")

#: The Content-Type of the page (the text format, version 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Where the page is served.
PATH: Final = "/metrics"

#: Upper bounds (seconds) of the store-write histogram's buckets: an SQLite
#: commit with its fsync takes from a tenth of a millisecond (page cache) to
#: tens of milliseconds (a busy disk); a Redis round trip sits at the low end.
STORE_WRITE_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: Seconds a scraper has to send its request, and to take the answer.
REQUEST_TIMEOUT: Final = 5.0

#: Labels of one sample, in the order they are written.
Labels = tuple[tuple[str, str], ...]


class Histogram:
    """A histogram with fixed buckets, as Prometheus reads it.

    Observed by one thread at a time (the store's writes are serialised by
    the courier), read by the scraper without a lock: the count written is
    the sum of the bucket counts read, so the page is consistent in itself
    even if an observation lands mid-read.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def samples(self) -> list[tuple[str, Labels, float]]:
        """``_bucket`` (cumulative, ``le`` labels), ``_sum`` and ``_count`` samples."""
        counts = list(self._counts)
        total = self.sum
        out: list[tuple[str, Labels, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
            running += count
            out.append(("_bucket", (("le", _number(bound)),), running))
        out += [("_sum", (), total), ("_count", (), running)]
        return out


@dataclass
class TransportStats:
    """What one transport reports at a scrape."""

    #: ``tcp`` or ``udp``.
    transport: str
    #: Connections (TCP) or sessions (UDP) open now, by dialect: ``framed``,
    #: ``text``, or ``unknown`` before the first bytes tell (TLS handshake included).
    connections: dict[str, int]
    bytes_in: int
    bytes_out: int
    #: Times a reader waited for the rate limit (TCP holds a flood back instead of kicking it).
    rate_limited_waits: int = 0
    #: UDP: segments sent again, taken for lost (unreliable mode), and received twice.
    retransmitted: int = 0
    lost: int = 0
    duplicates: int = 0
    #: UDP: what the server refused or ended, by what (garbage, spoofed, expired...).
    events: dict[str, int] = field(default_factory=dict)


class Transport(Protocol):
    """A server of one transport, as the metrics see it."""

    def stats(self) -> TransportStats:
        """Its figures now; called without the hub lock, which it takes as
        briefly as it can (the chat waits meanwhile)."""
        ...


class Metrics:
    """Everything one hub's process can tell Prometheus; see the module docstring.

    Args:
        hub: the hub (members, rooms, messages, kicks).
        lock: the hub lock.
        courier: the store's writer (write latency, deliveries pushed).
        gatekeeper: the password checks (failures).
    """

    def __init__(self, hub: Hub[Any], lock: threading.Lock, courier: Courier, gatekeeper: Gatekeeper) -> None:
        self._hub = hub
        self._lock = lock
        self._courier = courier
        self._gatekeeper = gatekeeper
        self._transports: dict[str, Transport] = {}

    def watch(self, name: str, transport: Transport) -> None:
        """Report ``transport`` under ``name`` (``tcp``, ``udp``); it replaces
        one of the same name (a server built again on another port)."""
        with self._lock:
            self._transports[name] = transport

    def render(self) -> bytes:
        """The page, in the text exposition format 0.0.4 (``CONTENT_TYPE``).

        Takes the hub lock for the hub's figures, then each transport takes it
        for its own (TCP only to copy its list of connections: 0.01 ms at
        1,000, 0.5 ms at 10,000 on the development VM, where counting them
        under the lock took 7 ms); safe from any thread.
        """
        hub = self._hub
        with self._lock:
            members, rooms = hub.registered, hub.room_count
            said, kicked = dict(hub.said), dict(hub.kicked)
            pushed = self._courier.tally.pushed
            transports = list(self._transports.values())
        stats = [t.stats() for t in transports]
        gate = self._gatekeeper
        udp = [s for s in stats if s.transport == "udp"]
        families = [
            _family(
                "twinchat_connections",
                "gauge",
                "Connections (TCP) and sessions (UDP) open now, by transport and dialect.",
                [
                    (_labels(transport=s.transport, dialect=d), n)
                    for s in stats
                    for d, n in sorted(s.connections.items())
                ],
            ),
            _family("twinchat_members", "gauge", "Members with a nick.", [((), members)]),
            _family("twinchat_rooms", "gauge", "Rooms that exist now.", [((), rooms)]),
            _family(
                "twinchat_messages_received_total",
                "counter",
                "Messages accepted from clients, by kind (say, act, whisper).",
                [(_labels(kind=k), n) for k, n in said.items()],
            ),
            _family(
                "twinchat_deliveries_total",
                "counter",
                "Events (a text-dialect user's lines) pushed to recipients, once per recipient.",
                [((), pushed)],
            ),
            _family(
                "twinchat_received_bytes_total",
                "counter",
                "Bytes read from clients (TCP: the stream after any TLS handshake; UDP: datagrams).",
                [(_labels(transport=s.transport), s.bytes_in) for s in stats],
            ),
            _family(
                "twinchat_sent_bytes_total",
                "counter",
                "Bytes sent or queued to send to clients (TCP: after any TLS handshake; UDP: datagrams).",
                [(_labels(transport=s.transport), s.bytes_out) for s in stats],
            ),
            _family(
                "twinchat_kicks_total",
                "counter",
                "Sessions the server ended, by error code (slow_consumer, rate_limited: a flood, idle_timeout...).",
                [(_labels(code=code.name.lower()), n) for code, n in sorted(kicked.items(), key=lambda kv: kv[0].name)],
            ),
            _family(
                "twinchat_rate_limited_waits_total",
                "counter",
                "Times a TCP reader held a client back for the rate limit (a flood waits rather than being kicked).",
                [(_labels(transport=s.transport), s.rate_limited_waits) for s in stats if s.transport == "tcp"],
            ),
            _family(
                "twinchat_udp_retransmitted_segments_total",
                "counter",
                "UDP segments sent again (taken for lost, or probes).",
                [((), sum(s.retransmitted for s in udp))] if udp else [],
            ),
            _family(
                "twinchat_udp_lost_segments_total",
                "counter",
                "UDP segments of clients that never arrived (unreliable mode only; reliable mode resends them).",
                [((), sum(s.lost for s in udp))] if udp else [],
            ),
            _family(
                "twinchat_udp_duplicate_segments_total",
                "counter",
                "UDP segments received more than once.",
                [((), sum(s.duplicates for s in udp))] if udp else [],
            ),
            _family(
                "twinchat_udp_events_total",
                "counter",
                "UDP datagrams refused and sessions ended, by what (garbage, spoofed, expired, flooding...).",
                [(_labels(what=w), n) for s in udp for w, n in sorted(s.events.items())],
            ),
            _family(
                "twinchat_login_failures_total",
                "counter",
                "Passwords refused: wrong, or not checked because of too many wrong tries (throttled).",
                [(_labels(reason="wrong_password"), gate.wrong), (_labels(reason="throttled"), gate.throttled)],
            ),
            _family("twinchat_passwords_checked_total", "counter", "Passwords checked (hashed).", [((), gate.checked)]),
            _histogram(
                "twinchat_store_write_seconds",
                "Seconds one store transaction (a group commit of what was said meanwhile) took to write.",
                self._courier.write_seconds,
            ),
        ]
        return "".join(families).encode("utf-8")


def _labels(**labels: str) -> Labels:
    return tuple(labels.items())


def _number(value: float) -> str:
    """A sample value as the format writes it: integers bare, ``+Inf``."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _sample(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
        return f"{name}{{{inner}}} {_number(value)}\n"
    return f"{name} {_number(value)}\n"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> str:
    head = f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n"
    return head + "".join(_sample(name, labels, value) for labels, value in samples)


def _histogram(name: str, help_text: str, histogram: Histogram) -> str:
    head = f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} histogram\n"
    return head + "".join(_sample(name + suffix, labels, value) for suffix, labels, value in histogram.samples())


# --- serving -------------------------------------------------------------------


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``[HOST:]PORT`` (``[v6]:PORT`` for an IPv6 host) as (host, port).

    Raises:
        ValueError: not that shape, or the port is not 0 to 65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = default_host
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif not host or ":" in host:
        raise ValueError(f"{text!r} is not [HOST:]PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port is not a number from 0 to 65535")
    return host, int(port_text)


class _Handler(http.server.BaseHTTPRequestHandler):
    """``GET /metrics`` (and ``HEAD``); 404 for any other path. Other methods
    get the standard library's 501, a malformed request its 400."""

    server: _HttpServer
    protocol_version = "HTTP/1.0"  # one request per connection: nobody holds the listener idle
    # Errors get a status line even when the request line was unreadable
    # (the default answers those as HTTP/0.9: a bare page), and plain text.
    default_request_version = "HTTP/1.0"
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"
    server_version = "twinchat-metrics"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # a client that stalls loses its turn

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self.send_error(404, "only /metrics is served here")
            return
        try:
            page = self.server.metrics.render()
        except Exception:
            log.exception("rendering the metrics failed")
            self.send_error(500, "the metrics could not be rendered")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _HttpServer(http.server.HTTPServer):
    def __init__(self, address: tuple[str, int], metrics: Metrics, request_timeout: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics = metrics
        self.request_timeout = request_timeout
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host's name up in the DNS, which may
        # take seconds; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hung up mid-answer is no traceback in the log.
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class MetricsListener:
    """``GET /metrics`` on a port of its own, served by one thread.

    Bound in the constructor (``address`` is known at once, port 0
    included); ``start()`` serves, ``close()`` stops the thread and the socket.
    One request at a time, each bounded by ``request_timeout`` seconds: a
    stuck scraper delays other scrapers at most that long, and never the chat.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(
        self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self._server = _HttpServer((host, port), metrics, request_timeout)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        name = self._server.server_address
        return str(name[0]), int(name[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="twinchat-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._thread is not None:
            self._server.shutdown()  # waits for the request being served, bounded by its timeout
            self._thread.join()
            self._thread = None
        self._server.server_close()


__all__ = [
    "CONTENT_TYPE",
    "PATH",
    "STORE_WRITE_BUCKETS",
    "Histogram",
    "Metrics",
    "MetricsListener",
    "Transport",
    "TransportStats",
    "parse_address",
]
