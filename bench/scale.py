"""``python -m bench scale``: how many users one server lets in, and what they cost (issue 12).

For each transport it starts a fresh server (pinned apart from the load, as
the other scenarios are) and runs three phases with N clients in one room:

1. **connect**: N clients connect and register as fast as the server takes
   them (at most ``--window`` of them connecting or registering at once, so
   what is measured is the server's pace, not SYN retries from an overflowing
   listen queue). Reported: the time until all are registered, the server's
   RSS and threads once they are, and the cost of one idle connection
   (RSS over N).
2. **fan-out**: one sender says ``--fanout-messages`` messages, five a
   second; the latency of every delivery to every other member (p50, p99).
3. **storm**: 10% of the clients drop and reconnect at once (same nick),
   while a steady sender chats five times a second; reported: the latency
   of the steady members' deliveries before and during the storm (p99 and
   max: a stall shows as the max) and how long the 10% took to be back.

TCP clients speak the text dialect (a nick line, then lines), as the issue's
author measured; ``tcp-tls`` clients do the same over TLS (a throwaway CA
and certificate made for the run, the client's TLS sans-IO through
``tcpchat.tls.TlsLink``, so the handshake is one more non-blocking state);
UDP clients open a session with the project's handshake
(``common.session.opener``) and keep a ``common.session.reliability.Channel``
each, driven by this process's loop. Every client lives in one process,
multiplexed with ``epoll``; connects are non-blocking.

Strategy: everything is a state machine per client fed by one selector; the
chat lines and messages carry ``m<seq> <send ns>`` and the receive time is
the kernel's arrival stamp (``SO_TIMESTAMPNS``), so the loop's own lag in
reading ten thousand sockets is not counted as the server's latency.

Machine limits: the soft ``RLIMIT_NOFILE`` is raised to the hard one (the
server inherits it), and before a run the file, thread and port limits of the
machine are compared with what N needs; a run the machine cannot hold says so
instead of blaming the server.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import os
import re
import resource
import selectors
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench import procstat
from bench.load import ANCILLARY_SIZE, kernel_stamp, stamp_arrivals
from bench.runner import Placement, make_certificate, server_args
from bench.scenarios import TRANSPORTS, Transport
from bench.servers import Child, StartError
from bench.stats import percentile
from common.chat import events as ev
from common.session.opener import SessionOpener, open_channel
from common.session.reliability import Channel
from common.wire.errors import RemoteProtocolError
from common.wire.framing import FrameType, decode_datagram, decode_frame, encode
from tcpchat.tls import TlsLink

#: The transports this scenario drives (``bench.scenarios.TRANSPORTS`` names).
SCALE_TRANSPORTS: Final = ("tcp", "tcp-tls", "udp")

#: Clients connecting or registering at once, at most.
DEFAULT_WINDOW: Final = 500
#: Messages of the fan-out phase, and the pace of both chat phases.
DEFAULT_FANOUT_MESSAGES: Final = 20
CHAT_RATE: Final = 5.0
#: Seconds the server's CPU is measured with every client registered and silent.
DEFAULT_IDLE: Final = 3.0
#: Share of the clients that drop and reconnect in the storm.
STORM_SHARE: Final = 0.10
#: Seconds of steady chat measured before the storm.
STORM_BEFORE: Final = 2.0
#: Seconds of chat kept up after the last reconnect, still counted as "during".
STORM_AFTER: Final = 1.0
#: The same for UDP: a lost segment is sent again within MAX_RTO (2 s), and a phase
#: that ended in between would miss it.
UDP_QUIET: Final = 2.5
#: Seconds the server has to exit after SIGTERM before it is killed.
EXIT_LIMIT: Final = 10.0
#: Seconds without a byte after which the server is taken to be done with a phase's notices.
QUIET: Final = 0.5
#: Seconds the load waits at most for a phase (connect, deliveries, quiet).
PHASE_LIMIT: Final = 600.0
#: Seconds a refused nick (still held by the connection being replaced) waits to be asked again.
NICK_RETRY: Final = 0.1
#: UDP: seconds between two passes over the channels that have timers running.
UDP_TIMER_PASS: Final = 0.02
#: The server's registration timeout in these runs: a slow connect phase must
#: measure its slowness, not end in kicks.
REGISTER_TIMEOUT: Final = 600.0

_WELCOME: Final = b"*** welcome, "
_REFUSED: Final = b"* error ("
#: A chat line of this benchmark as a text-dialect member sees it: ``u00007: m12 1733...``.
_TEXT_LINE: Final = re.compile(rb"u(\d+): m(\d+) (\d+)\n")
_TEXT: Final = re.compile(r"m(\d+) (\d+)")
_MESSAGE: Final = int(FrameType.MESSAGE)
_WELCOME_TYPE: Final = int(FrameType.WELCOME)
_ERROR_TYPE: Final = int(FrameType.ERROR)


def nick(index: int) -> str:
    return f"u{index:05d}"


@dataclass
class Delivery:
    """One chat message seen by one member."""

    receiver: int
    sender: int
    seq: int
    sent_ns: int
    received_ns: int


class Client:
    """One load client's common state; the transports fill in the I/O."""

    sock: socket.socket

    def __init__(self, index: int, loop: Loop) -> None:
        self.index = index
        self.nick = nick(index)
        self.loop = loop
        self.registered_at: float | None = None
        self.started_at = 0.0
        self.alive = True
        self.failed = ""

    def fileno(self) -> int:
        return self.sock.fileno()

    def fail(self, why: str) -> None:
        if self.alive:
            self.failed = why
            self.alive = False
            self.loop.lost(self, why)
            self.close()

    def close(self) -> None:
        self.alive = False
        self.loop.forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()

    def registered(self, now: float) -> None:
        if self.registered_at is None:
            self.registered_at = now
            self.loop.on_registered(self)

    def on_event(self, mask: int, now: float) -> None:
        raise NotImplementedError

    def say(self, text: str) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        """Leave as a client that restarts does (the storm)."""
        raise NotImplementedError


class TcpClient(Client):
    """A person at ``nc``, played by a program: a nick line, then lines."""

    def __init__(self, index: int, loop: Loop) -> None:
        super().__init__(index, loop)
        self.buf = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        stamp_arrivals(self.sock)
        self.started_at = time.monotonic()
        err = self.sock.connect_ex(loop.address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        self.connected = False
        loop.watch(self, selectors.EVENT_WRITE)

    def on_event(self, mask: int, now: float) -> None:
        if self.connected:
            self._readable(now)
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(f"connect: {os.strerror(err)}")
            return
        self.connected = True
        self.loop.watch(self, selectors.EVENT_READ, modify=True)
        self._open()

    def _open(self) -> None:
        """The connection is up: say the nick."""
        self._send(f"{self.nick}\n".encode())

    def _plain(self, raw: bytes) -> bytes:
        """The chat bytes in what came off the socket (b"": nothing for the chat yet)."""
        return raw

    def _readable(self, now: float) -> None:
        try:
            size, ancillary, _, _ = self.sock.recvmsg_into([self.loop.buffer], ANCILLARY_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"recv: {exc}")
            return
        if not size:
            self.fail("closed by the server")
            return
        self.loop.bytes_in += size
        data = self._plain(self.loop.view[:size].tobytes())
        if not data:
            return
        if self.registered_at is None:
            self.buf += data
            if _WELCOME in self.buf:
                self.registered(now)
                data = self.buf[self.buf.index(_WELCOME) :]
                self.buf = b""
            elif _REFUSED in self.buf:
                # The nick is still held by the connection this one replaces: ask again.
                self.buf = b""
                self.loop.later(now + NICK_RETRY, lambda: self._send(f"{self.nick}\n".encode()))
                return
            else:
                return
        if self.loop.recording and b": m" in data:
            if self.buf:
                data = self.buf + data
            cut = data.rfind(b"\n") + 1
            self.buf = data[cut:]
            stamp = kernel_stamp(ancillary, time.time_ns())
            for match in _TEXT_LINE.finditer(data, 0, cut):
                sender, seq, sent = match.groups()
                self.loop.delivered(Delivery(self.index, int(sender), int(seq), int(sent), stamp))
        elif self.buf:
            self.buf = b""

    def _send(self, data: bytes) -> None:
        self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        if sent < len(data):  # a line or a handshake flight: the kernel buffer is never that full here
            self.fail(f"send: the kernel took {sent} of {len(data)} bytes")

    def say(self, text: str) -> None:
        self._send(text.encode() + b"\n")

    def drop(self) -> None:
        self.close()


class TlsClient(TcpClient):
    """The same person at ``openssl s_client``: a TLS handshake, then lines.

    Dropped in the storm without a close_notify, as a crashed client would.
    """

    def __init__(self, index: int, loop: Loop, context: ssl.SSLContext) -> None:
        self.link = TlsLink(context, server_side=False, server_hostname=loop.address[0])
        self.secure = False
        super().__init__(index, loop)

    def _open(self) -> None:
        self._handshake(b"")

    def _handshake(self, raw: bytes) -> None:
        try:
            done, out = self.link.step(raw)
        except ssl.SSLError as exc:
            self.fail(f"TLS handshake: {exc}")
            return
        if out:
            self._send_raw(out)
        if done and not self.secure:
            self.secure = True
            super()._open()

    def _plain(self, raw: bytes) -> bytes:
        if not self.secure:
            self._handshake(raw)
            return b""  # the server says nothing before it has our nick
        try:
            return self.link.feed(raw)
        except ssl.SSLError as exc:
            self.fail(f"TLS: {exc}")
            return b""

    def _send(self, data: bytes) -> None:
        self._send_raw(self.link.encrypt(data))


class UdpClient(Client):
    """A session opened with the project's handshake, one reliability channel."""

    def __init__(self, index: int, loop: Loop) -> None:
        super().__init__(index, loop)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(loop.address)
        self.sock.setblocking(False)
        stamp_arrivals(self.sock)
        self.channel: Channel | None = None
        self.token = 0
        self.opener = SessionOpener()
        self.started_at = now = time.monotonic()
        loop.watch(self, selectors.EVENT_READ)
        self._send_raw(self.opener.start(now))
        loop.timed.add(self)

    def _send_raw(self, datagram: bytes | None) -> None:
        if datagram is not None:
            with contextlib.suppress(OSError):
                self.sock.send(datagram)

    def flush(self, now: float) -> None:
        if self.channel is None or not self.alive:
            return
        for datagram in self.channel.datagrams(now):
            try:
                self.sock.send(datagram)
            except BlockingIOError:
                break  # the channel will retransmit
            except OSError:
                break  # an ICMP error; the timers decide
        if self.channel.in_flight or self.registered_at is None:
            self.loop.timed.add(self)
        else:
            self.loop.timed.discard(self)

    def on_timer(self, now: float) -> None:
        if self.channel is None:
            self._send_raw(self.opener.poll(now))
        elif now >= self.channel.next_deadline() or self.channel.wants_to_send:
            self.flush(now)

    def on_event(self, mask: int, now: float) -> None:
        stamp = 0
        for _ in range(64):
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                break  # an ICMP error from an earlier send
            self.loop.bytes_in += len(data)
            try:
                frames = decode_datagram(data)
            except RemoteProtocolError:
                continue
            first = frames[0]
            channel = self.channel
            if channel is None:
                self._send_raw(self.opener.receive(first, now))
                accepted = self.opener.accepted
                if accepted is not None:
                    self.token = accepted.token
                    self.channel = open_channel(accepted, now, keepalive_after=3600.0, dead_after=3600.0)
                    self.channel.send(encode(ev.Register(self.nick)))
                    self.flush(now)
                continue
            if type(first) is not ev.Session or first.token != self.token:
                continue
            try:
                chunks = channel.receive(frames[1:], now)
            except RemoteProtocolError:
                continue
            for chunk in chunks:
                stamp = self._chunk(chunk, ancillary, stamp, now)
        if self.channel is not None and (self.channel.wants_to_send or self.channel.in_flight):
            self.flush(now)

    def _chunk(self, chunk: bytes, ancillary: list[tuple[int, int, bytes]], stamp: int, now: float) -> int:
        """One frame the channel delivered; returns the read's arrival stamp once it was needed."""
        kind = chunk[3]
        if kind == _MESSAGE and self.loop.recording:
            message = decode_frame(chunk)
            assert isinstance(message, ev.Message)
            found = _TEXT.fullmatch(message.text)
            if found is not None and message.sender.startswith("u"):
                stamp = stamp or kernel_stamp(ancillary, time.time_ns())
                sender = int(message.sender[1:])
                self.loop.delivered(Delivery(self.index, sender, int(found[1]), int(found[2]), stamp))
        elif kind == _WELCOME_TYPE:
            self.registered(now)
        elif kind == _ERROR_TYPE and self.registered_at is None:
            self.loop.later(now + NICK_RETRY, self._register_again)
        return stamp

    def _register_again(self) -> None:
        if self.channel is not None and self.alive:
            self.channel.send(encode(ev.Register(self.nick)))
            self.flush(time.monotonic())

    def say(self, text: str) -> None:
        if self.channel is not None and self.alive:
            self.channel.send(encode(ev.Say("#lobby", text)))
            self.flush(time.monotonic())

    def drop(self) -> None:
        # A client that quits says Goodbye, as the UDP client does, and does not wait for its ack.
        if self.channel is not None:
            self.channel.send(encode(ev.Goodbye("reconnecting")))
            self.flush(time.monotonic())
        self.close()

    def close(self) -> None:
        self.loop.timed.discard(self)
        super().close()


class Loop:
    """The one selector every client of a run lives in."""

    def __init__(self, address: tuple[str, int], make: Callable[[int, Loop], Client]) -> None:
        self.address = address
        self.make = make
        self.sel = selectors.EpollSelector() if hasattr(selectors, "EpollSelector") else selectors.DefaultSelector()
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)
        self.clients: dict[int, Client] = {}
        self.registering: set[int] = set()
        self.timed: set[UdpClient] = set()
        self._later: list[tuple[float, int, Callable[[], None]]] = []
        self._later_n = 0
        self.recording = False
        self.deliveries: list[Delivery] = []
        self.failures: list[str] = []
        self.bytes_in = 0
        self.last_byte = time.monotonic()
        self.limit = PHASE_LIMIT  # seconds a phase may take at most
        self.stopping = False  # the server was told to stop: a closed client is expected
        self.quiet_for = QUIET  # seconds without a byte that end a phase's waiting

    # --- plumbing ---

    def watch(self, client: Client, mask: int, *, modify: bool = False) -> None:
        if modify:
            self.sel.modify(client.sock, mask, client)
        else:
            self.sel.register(client.sock, mask, client)

    def forget(self, client: Client) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.sel.unregister(client.sock)
        if self.clients.get(client.index) is client:
            del self.clients[client.index]
        self.registering.discard(client.index)

    def lost(self, client: Client, why: str) -> None:
        if not self.stopping:
            self.failures.append(f"{client.nick}: {why}")

    def later(self, when: float, action: Callable[[], None]) -> None:
        self._later_n += 1
        heapq.heappush(self._later, (when, self._later_n, action))

    def on_registered(self, client: Client) -> None:
        self.registering.discard(client.index)

    def delivered(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def start(self, index: int) -> Client:
        client = self.make(index, self)
        self.clients[index] = client
        self.registering.add(index)
        return client

    def run_until(
        self, done: Callable[[float], bool], limit: float, tick: Callable[[float], None] | None = None
    ) -> bool:
        """Serve every socket until ``done(now)``; False if ``limit`` seconds passed first."""
        deadline = time.monotonic() + limit
        next_pass = 0.0
        while True:
            now = time.monotonic()
            if done(now):
                return True
            if now >= deadline:
                return False
            if tick is not None:
                tick(now)
            while self._later and self._later[0][0] <= now:
                heapq.heappop(self._later)[2]()
            if self.timed and now >= next_pass:
                next_pass = now + UDP_TIMER_PASS
                for client in list(self.timed):
                    client.on_timer(now)
            events = self.sel.select(0.005)
            if events:
                now = time.monotonic()
                before = self.bytes_in
                for key, mask in events:
                    client = key.data
                    if client.alive:
                        client.on_event(mask, now)
                if self.bytes_in != before:
                    self.last_byte = now

    def quiet(self, now: float) -> bool:
        return now - self.last_byte >= self.quiet_for and not self.registering

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.close()
        self.sel.close()


@dataclass
class ScaleResult:
    """One transport at one N: what the three phases measured."""

    transport: str
    clients: int
    registered: int = 0
    connect_s: float | None = None
    connects_per_s: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    threads: int | None = None
    per_client_kb: float | None = None
    server_cpu_connect_pct: float | None = None
    idle_cpu_pct: float | None = None
    fanout_p50_ms: float | None = None
    fanout_p99_ms: float | None = None
    fanout_max_ms: float | None = None
    fanout_delivered: float | None = None
    storm_reconnect_s: float | None = None
    storm_before_p99_ms: float | None = None
    storm_during_p99_ms: float | None = None
    storm_during_max_ms: float | None = None
    storm_delivered: float | None = None
    load_cpu_pct: float | None = None
    #: The machine's other busy CPU during the connect phase (other people's work), one core = 100.
    other_cpu_pct: float | None = None
    #: Datagrams the kernel dropped for full receive buffers during the connect phase (whole machine).
    udp_drops_connect: int | None = None
    #: Seconds from SIGTERM to the server's exit, every client still connected.
    exit_s: float | None = None
    notes: list[str] = field(default_factory=list)


def _ms(ns: float) -> float:
    return round(ns / 1e6, 2)


def machine_limits(transport: str, clients: int) -> list[str]:
    """What on this machine, not in the server, stops ``clients`` clients; [] if nothing."""
    out = []
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    need_fds = clients + 64
    if soft < need_fds:
        out.append(f"open files: {clients} clients need {need_fds} descriptors per process, the limit is {soft}")
    if TRANSPORTS[transport].kind == "tcp":
        threads = 2 * clients + 8
        # A thread is three memory maps (its stack, the stack's guard page, Python's frame stack).
        for path, what, per_thread in (
            ("/proc/sys/kernel/pid_max", "pid_max", 1),
            ("/proc/sys/kernel/threads-max", "threads-max", 1),
            ("/proc/sys/vm/max_map_count", "vm.max_map_count", 3),
        ):
            with contextlib.suppress(OSError, ValueError):
                limit = int(Path(path).read_text())
                if limit < per_thread * threads + 1000:
                    out.append(
                        f"{what} is {limit}: the server may need {threads} threads (a writer each when backed up)"
                    )
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        if nproc != resource.RLIM_INFINITY and nproc < threads + 1000:
            out.append(f"RLIMIT_NPROC is {nproc}: the server needs {threads} threads")
        with contextlib.suppress(OSError, ValueError):
            low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
            ports = high - low + 1
            needed = int(clients * (1 + STORM_SHARE))  # the storm's closed ports wait in TIME_WAIT
            if ports < needed:
                out.append(f"ephemeral ports: {ports} ({low}-{high}), {needed} needed")
    return out


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard one (the server inherits it); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class _CpuWatch:
    """Server and load CPU over a phase, and the server's thread peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = 0
        self._at = time.monotonic()
        first = procstat.sample(pid)
        self._server = first.cpu_s if first else 0.0
        self._load = _own_cpu()
        self._busy = procstat.machine_busy()
        self._next = 0.0

    def poll(self, now: float) -> None:
        if now >= self._next:
            self._next = now + 0.1
            s = procstat.sample(self.pid)
            if s is not None:
                self.threads = max(self.threads, s.threads)

    def shares(self) -> tuple[float, float]:
        """Server and load CPU since the start, as shares of one core (percent)."""
        return self.all_shares()[:2]

    def all_shares(self) -> tuple[float, float, float | None]:
        """And the rest of the machine's busy CPU (other people's work), or None."""
        wall = max(1e-9, time.monotonic() - self._at)
        s = procstat.sample(self.pid)
        server = ((s.cpu_s if s else self._server) - self._server) / wall
        load = (_own_cpu() - self._load) / wall
        busy = procstat.machine_busy()
        other = None
        if busy is not None and self._busy is not None:
            other = round(max(0.0, 100 * ((busy - self._busy) / wall - server - load)), 1)
        return round(100 * server, 1), round(100 * load, 1), other


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_scale(
    transport: str,
    clients: int,
    *,
    window: int = DEFAULT_WINDOW,
    fanout_messages: int = DEFAULT_FANOUT_MESSAGES,
    storm: bool = True,
    idle: float = DEFAULT_IDLE,
    phase_limit: float = PHASE_LIMIT,
    placement: Placement | None = None,
    log: Callable[[str], None] = lambda line: None,
    server_extra: Sequence[str] = (),
) -> ScaleResult:
    """Run the three phases against a fresh server; see the module docstring."""
    result = ScaleResult(transport, clients)
    kind = TRANSPORTS[transport]
    certificates = tempfile.TemporaryDirectory(prefix="bench-scale-") if kind.tls else None
    try:
        make, tls_files = _client_maker(kind, certificates)
    except StartError as exc:
        result.notes.append(f"server did not start: {exc}")
        if certificates is not None:
            certificates.cleanup()
        return result
    module, args = server_args(kind, 3600.0, tls=tls_files)
    args = [*args, "--register-timeout", f"{REGISTER_TIMEOUT:g}", *server_extra]
    placement = placement or Placement.split(pin=True)
    saved = os.sched_getaffinity(0)
    server = Child(module, args, cpus=placement.server)
    try:
        address = server.start()
        if placement.load:
            os.sched_setaffinity(0, placement.load)
        loop = Loop(address, make)
        loop.limit = phase_limit
        if kind.kind == "udp":
            loop.quiet_for = UDP_QUIET
        try:
            _connect(loop, server.pid, result, window=window, idle=idle, log=log)
            if result.registered == clients:
                _fanout(loop, server.pid, fanout_messages, result, log)
                if storm:
                    _storm(loop, clients, result, log)
            _stop(loop, server, result)
        finally:
            loop.close()
    except StartError as exc:
        result.notes.append(f"server did not start: {exc}")
    finally:
        os.sched_setaffinity(0, saved)
        code = server.stop(grace=EXIT_LIMIT)
        if server.killed:
            result.notes.append(f"the server did not exit within {EXIT_LIMIT:g} s of SIGTERM (killed)")
        elif code not in (0, None):
            result.notes.append(f"server exit code {code}: {server.log_tail(300)}")
        server.close()
        if certificates is not None:
            certificates.cleanup()
    return result


def _client_maker(
    kind: Transport, certificates: tempfile.TemporaryDirectory[str] | None
) -> tuple[Callable[[int, Loop], Client], tuple[str, str] | None]:
    """How the load makes a client of ``kind``, and the server's certificate and
    key files when it speaks TLS (made in ``certificates``, trusted by the clients).

    Raises:
        StartError: TLS is asked for and trustme is missing.
    """
    if certificates is None:
        return (TcpClient if kind.kind == "tcp" else UdpClient), None
    cert, key, context = make_certificate(certificates.name)

    def make(index: int, loop: Loop) -> Client:
        return TlsClient(index, loop, context)

    return make, (cert, key)


def _stop(loop: Loop, server: Child, result: ScaleResult) -> None:
    """SIGTERM while every client is still there and reading, as a real restart
    would find them; the clients only close once the server has said goodbye.

    Why: clients that closed first would each be announced as gone to every
    other member, the same n-squared work as the joins, and the SIGTERM would
    measure that instead of the shutdown.
    """
    loop.stopping = True
    began = time.monotonic()
    server.terminate()
    loop.run_until(lambda now: not server.alive(), EXIT_LIMIT)
    if not server.alive():
        result.exit_s = round(time.monotonic() - began, 2)


def _connect(
    loop: Loop, pid: int, result: ScaleResult, *, window: int, idle: float, log: Callable[[str], None]
) -> None:
    clients = result.clients
    base = procstat.sample(pid)
    drops = procstat.udp_drops()
    watch = _CpuWatch(pid)
    began = time.monotonic()
    started = 0
    last_log = began

    def tick(now: float) -> None:
        nonlocal started, last_log
        while started < clients and len(loop.registering) < window:
            try:
                loop.start(started)
            except OSError as exc:
                loop.failures.append(f"{nick(started)}: {exc}")
                result.notes.append(f"the load could not open client {started}: {exc} (a machine limit)")
                started = clients
                return
            started += 1
        watch.poll(now)
        if now - last_log >= 5.0:
            last_log = now
            log(f"  {clients - len(loop.registering) - (clients - started)} of {clients} registered")

    def done(now: float) -> bool:
        return started >= clients and not loop.registering

    finished = loop.run_until(done, loop.limit, tick)
    elapsed = time.monotonic() - began
    server_cpu, load_cpu, result.other_cpu_pct = watch.all_shares()
    result.registered = sum(1 for c in loop.clients.values() if c.registered_at is not None)
    if not finished:
        result.notes.append(f"connect phase stopped after {loop.limit:g} s with {result.registered} registered")
    else:
        result.connect_s = round(elapsed, 2)
        result.connects_per_s = round(clients / elapsed, 1)
    result.server_cpu_connect_pct = server_cpu
    after = procstat.udp_drops()
    if drops is not None and after is not None:
        result.udp_drops_connect = after - drops
        if after > drops:
            result.notes.append(
                f"{after - drops} datagrams dropped by the kernel (full receive buffers) while connecting"
            )
    result.load_cpu_pct = load_cpu
    _settle(loop, pid, result, base=base, watch=watch, idle=idle)
    log(
        f"  connect: {result.registered}/{clients} registered in {elapsed:.2f} s; "
        f"RSS {result.rss_mb} MB, {result.threads} threads; server CPU {server_cpu}%, load {load_cpu}%, "
        f"other {result.other_cpu_pct}%; "
        f"idle: {result.idle_cpu_pct}%"
    )


def _settle(
    loop: Loop, pid: int, result: ScaleResult, *, base: procstat.ProcSample | None, watch: _CpuWatch, idle: float
) -> None:
    """Once all are in: the server's RSS and threads, then its CPU while everyone is silent."""
    # The join notices still in flight are part of letting users in; RSS once they are out
    # (not waiting for clients still registering: after a connect phase that ran out of time,
    # they may never be).
    loop.run_until(lambda now: now - loop.last_byte >= loop.quiet_for, loop.limit, watch.poll)
    s = procstat.sample(pid)
    if s is not None:
        result.rss_mb = round(s.rss_mb, 1)
        result.peak_rss_mb = round(s.peak_rss_mb, 1)
        result.threads = max(s.threads, watch.threads)
        if base is not None and result.clients:
            result.per_client_kb = round((s.rss_mb - base.rss_mb) * 1024 / result.clients, 1)
    if loop.failures:
        result.notes.append(f"{len(loop.failures)} client(s) failed, e.g. {loop.failures[0]}")
    if idle > 0:
        # What N idle members cost the server per second: its timers, nothing else.
        idle_watch = _CpuWatch(pid)
        until = time.monotonic() + idle
        loop.run_until(lambda now: now >= until, idle + 1)
        result.idle_cpu_pct = idle_watch.shares()[0]


def _pace(loop: Loop, sender: Client, count: int, rate: float, first_seq: int = 0) -> float:
    """Start a paced sender: ``count`` messages at ``rate`` a second; returns when the last is due."""
    start = time.monotonic() + 0.05
    for k in range(count):
        seq = first_seq + k

        def send(seq: int = seq) -> None:
            sender.say(f"m{seq} {time.time_ns()}")

        loop.later(start + k / rate, send)
    return start + (count - 1) / rate


def _fanout(loop: Loop, pid: int, count: int, result: ScaleResult, log: Callable[[str], None]) -> None:
    sender = loop.clients[0]
    loop.deliveries = []
    loop.recording = True
    last_due = _pace(loop, sender, count, CHAT_RATE)
    expected = count * (len(loop.clients) - 1)
    loop.run_until(
        lambda now: now > last_due + loop.quiet_for and (len(loop.deliveries) >= expected or loop.quiet(now)),
        loop.limit,
    )
    loop.recording = False
    got = [d for d in loop.deliveries if d.sender == 0 and d.receiver != 0]
    latencies = sorted(d.received_ns - d.sent_ns for d in got)
    unique = len({(d.receiver, d.seq) for d in got})
    result.fanout_delivered = round(unique / expected, 4) if expected else None
    if latencies:
        result.fanout_p50_ms = _ms(percentile(latencies, 50))
        result.fanout_p99_ms = _ms(percentile(latencies, 99))
        result.fanout_max_ms = _ms(latencies[-1])
    log(
        f"  fan-out: {unique}/{expected} delivered, p50 {result.fanout_p50_ms} ms, p99 {result.fanout_p99_ms} ms, "
        f"max {result.fanout_max_ms} ms"
    )


def _storm(loop: Loop, clients: int, result: ScaleResult, log: Callable[[str], None]) -> None:
    """10% drop and come back while client 1 chats; the others' latency before and during."""
    sender = loop.clients.get(1)
    if sender is None:
        return
    stormers = list(range(clients - max(1, int(clients * STORM_SHARE)), clients))
    steady = set(loop.clients) - set(stormers) - {1}
    loop.deliveries = []
    loop.recording = True
    # Chat runs from before the storm until well after it; enough messages for the worst case.
    count = int(CHAT_RATE * (STORM_BEFORE + loop.limit))
    _pace(loop, sender, count, CHAT_RATE, first_seq=1_000_000)
    storm_at = time.monotonic() + STORM_BEFORE
    loop.run_until(lambda now: now >= storm_at, STORM_BEFORE + 1)
    storm_ns = time.time_ns()
    began = time.monotonic()
    for index in stormers:
        client = loop.clients.get(index)
        if client is not None:
            client.drop()
    for index in stormers:
        try:
            loop.start(index)
        except OSError as exc:
            result.notes.append(f"storm: could not reconnect {nick(index)}: {exc}")
            break
    back = loop.run_until(lambda now: not loop.registering, loop.limit)
    back_at = time.monotonic()
    result.storm_reconnect_s = round(back_at - began, 2) if back else None
    after = back_at + STORM_AFTER
    loop.run_until(lambda now: now >= after, STORM_AFTER + 1)
    end_ns = time.time_ns()
    loop._later.clear()  # the rest of the paced chat
    loop.run_until(loop.quiet, 10.0)
    loop.recording = False
    mine = [d for d in loop.deliveries if d.sender == 1 and d.receiver in steady]
    before = sorted(d.received_ns - d.sent_ns for d in mine if d.sent_ns < storm_ns)
    during = sorted(d.received_ns - d.sent_ns for d in mine if storm_ns <= d.sent_ns <= end_ns)
    sent_during = {d.seq for d in mine if storm_ns <= d.sent_ns <= end_ns}
    if before:
        result.storm_before_p99_ms = _ms(percentile(before, 99))
    if during:
        result.storm_during_p99_ms = _ms(percentile(during, 99))
        result.storm_during_max_ms = _ms(during[-1])
    expected = len(sent_during) * len(steady)
    if expected:
        result.storm_delivered = round(len(during) / expected, 4)
    if not back:
        result.notes.append(f"storm: {len(loop.registering)} of {len(stormers)} not back after {loop.limit:g} s")
    log(
        f"  storm: {len(stormers)} back in {result.storm_reconnect_s} s; others' p99 {result.storm_before_p99_ms} ms "
        f"before, {result.storm_during_p99_ms} ms during (max {result.storm_during_max_ms} ms)"
    )


_COLUMNS: Final = (
    ("transport", "transport", "{}"),
    ("clients", "clients", "{:,}"),
    ("connect_s", "connect s", "{:.2f}"),
    ("rss_mb", "RSS MB", "{:.0f}"),
    ("per_client_kb", "KB/client", "{:.1f}"),
    ("threads", "threads", "{:,}"),
    ("server_cpu_connect_pct", "srv cpu", "{:.0f}%"),
    ("idle_cpu_pct", "idle cpu", "{:.1f}%"),
    ("fanout_p99_ms", "fan-out p99 ms", "{:.1f}"),
    ("storm_reconnect_s", "storm back s", "{:.2f}"),
    ("storm_before_p99_ms", "p99 before", "{:.1f}"),
    ("storm_during_p99_ms", "p99 storm", "{:.1f}"),
    ("storm_during_max_ms", "max storm", "{:.1f}"),
    ("exit_s", "exit s", "{:.1f}"),
)


def format_table(results: Sequence[ScaleResult], markdown: bool = False) -> str:
    def cell(r: ScaleResult, key: str, fmt: str) -> str:
        value = getattr(r, key)
        return "-" if value is None else fmt.format(value)

    heads = [head for _, head, _ in _COLUMNS]
    rows = [[cell(r, key, fmt) for key, _, fmt in _COLUMNS] for r in results]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    out = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench scale",
        description="N clients in one room: time to connect and register them all, the server's RSS and "
        "threads, the fan-out latency of one sender to all, and the others' latency while 10%% reconnect.",
    )
    p.add_argument(
        "--clients", default="1000", help="comma-separated client counts, e.g. 1000,5000,10000 (default: 1000)"
    )
    p.add_argument(
        "--transports", default="tcp,udp", help=f"comma-separated: {', '.join(SCALE_TRANSPORTS)} (default: tcp,udp)"
    )
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="clients connecting at once, at most")
    p.add_argument("--fanout-messages", type=int, default=DEFAULT_FANOUT_MESSAGES, help="messages of the fan-out")
    p.add_argument("--no-storm", action="store_true", help="skip the reconnect storm")
    p.add_argument(
        "--idle",
        type=float,
        default=DEFAULT_IDLE,
        help="seconds the idle server's CPU is measured (default: %(default)s)",
    )
    p.add_argument(
        "--phase-limit",
        type=float,
        default=PHASE_LIMIT,
        help="seconds each phase may take before it is given up (default: %(default)s)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        counts = [int(n) for n in args.clients.split(",")]
    except ValueError:
        print("python -m bench scale: --clients takes numbers, e.g. 1000,5000", file=sys.stderr)
        return 2
    transports = args.transports.split(",")
    unknown = [t for t in transports if t not in SCALE_TRANSPORTS]
    if unknown:
        print(
            f"python -m bench scale: unknown transport {', '.join(unknown)} ({', '.join(SCALE_TRANSPORTS)})",
            file=sys.stderr,
        )
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    soft, hard = raise_nofile()
    log(f"open files: soft limit {soft} (hard {hard})")
    placement = Placement.split(pin=not args.no_pin)
    results: list[ScaleResult] = []
    for count in counts:
        for transport in transports:
            limits = machine_limits(transport, count)
            log(f"{transport} x {count}: starting")
            if limits:
                for line in limits:
                    log(f"  machine limit, not the server's: {line}")
            result = run_scale(
                transport,
                count,
                window=args.window,
                fanout_messages=args.fanout_messages,
                storm=not args.no_storm,
                idle=args.idle,
                phase_limit=args.phase_limit,
                placement=placement,
                log=log,
            )
            result.notes += [f"machine limit: {line}" for line in limits]
            results.append(result)
    print(format_table(results, markdown=args.markdown))
    for r in results:
        for note in r.notes:
            print(f"- {r.transport} x {r.clients}: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "command": "python -m bench scale " + " ".join(argv or sys.argv[2:]),
                    "results": [asdict(r) for r in results],
                },
                indent=1,
            )
        )
    return 0 if all(r.registered == r.clients for r in results) else 1
