"""The load generator's UDP clients: sessions multiplexed in one process.

Each client is a non-blocking connected UDP socket and one
``common.session.reliability.Channel``, the same sans-IO reliability code the UDP
server and client use, driven by the load generator's loop instead of
threads: ``on_readable`` drains the socket and feeds the channel, sends go
through the channel, ``on_timer`` runs its retransmission and keepalive
timers. The handshake (padded ``Hello``, ``Cookie``, padded ``Hello`` with the
cookie, ``Accept``) is a small state machine here, because the UDP client's
``udp_connect`` blocks and starts two threads per session, which a load
generator with hundreds of sessions in one process cannot afford.

Loss: through ``udpchat.lossyproxy`` subprocesses (seeded); one proxy relays
at most ``PROXY_CLIENTS`` clients, so a large scenario gets several, each
client going through proxy ``index % count``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from bench.load import ANCILLARY_SIZE, Peer, kernel_stamp, stamp_arrivals
from bench.scenarios import Transport
from bench.servers import Child
from common.chat import events as ev
from common.session.opener import SessionOpener, open_channel
from common.session.reliability import Channel, parse_session
from common.wire.errors import RemoteProtocolError
from common.wire.framing import FrameType, decode_datagram, encode
from udpchat.server import SEGMENTS_DUPLICATE, SEGMENTS_RESENT, SEGMENTS_SENT

#: Clients one lossy proxy relays at most (``udpchat.lossyproxy.MAX_CLIENTS``).
PROXY_CLIENTS: Final = 256
#: Datagrams taken from one socket per wake-up, so one busy client cannot starve the others.
READ_BURST: Final = 64
#: Kernel receive buffer asked for (the UDP client asks the same).
SOCKET_BUFFER: Final = 4 << 20
#: Seconds before an unanswered Register is sent again (unreliable mode loses some).
REGISTER_RETRY: Final = 0.3
#: Liveness timers: longer than any run, so only real trouble ends a session.
KEEPALIVE_AFTER: Final = 5.0
DEAD_AFTER: Final = 60.0


_SESSION: Final = int(FrameType.SESSION)
_DATA: Final = int(FrameType.DATA)
_ACK: Final = int(FrameType.ACK)
_DATA_FIELDS: Final = struct.Struct(">QBH")  # seq, remaining, chunk length
_U64: Final = struct.Struct(">Q")


class UdpPeer(Peer):
    """A load client over UDP: handshake, then a reliability channel."""

    reads_to_join = True

    def __init__(self, index: int, address: tuple[str, int], *, reads: bool = True) -> None:
        super().__init__(index, reads=reads)
        self.sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        stamp_arrivals(self.sock)
        self.sock.connect(address)
        self.sock.setblocking(False)
        self.channel: Channel | None = None
        self.token = 0
        self._opener = SessionOpener()
        self._register_at = 0.0
        self._due = 0.0  # when the channel's timers next need a look
        self._early: deque[bytes] = deque([encode(ev.Register(self.nick))])  # until the session opens
        self._waiting: deque[bytes] = deque()  # the channel's backlog was full
        self._say_hello(self._opener.start(time.monotonic()))

    def _say_hello(self, datagram: bytes | None) -> None:
        if datagram is not None:
            with contextlib.suppress(OSError):
                self.sock.send(datagram)

    def fileno(self) -> int:
        return self.sock.fileno()

    # --- sending -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.send_frames([data])

    def send_frames(self, frames: list[bytes]) -> None:
        if not self.alive:
            return
        channel = self.channel
        if channel is None:
            self._early.extend(frames)
            return
        waiting = self._waiting
        if waiting:
            waiting.extend(frames)
        else:
            # One call: a window of Says goes as bundles (PROTOCOL.md, Sequenced data).
            queued = channel.send_all(frames)
            if queued < len(frames):
                waiting.extend(frames[queued:])
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        channel = self.channel
        if channel is None:
            return
        waiting = self._waiting
        while waiting and channel.send(waiting[0]):
            waiting.popleft()
        send = self.sock.send
        for datagram in channel.datagrams(now):
            try:
                send(datagram)
            except BlockingIOError:
                break  # the kernel is full; the channel will retransmit
            except OSError as exc:
                self.lost(f"send: {exc}")
                return
        # Only sending and receiving move the channel's timers: remember the
        # next one here, so the timer pass can skip a client in one comparison.
        self._due = channel.next_deadline()

    def idle(self) -> bool:
        if self.muted:
            return True  # a stuck client's backlog is the point, not a delivery in flight
        return self.channel is not None and self.channel.flushed and not self._waiting

    def on_writable(self) -> None:
        pass

    def on_timer(self, now: float) -> None:
        if self.muted:
            return
        channel = self.channel
        if channel is None:
            self._say_hello(self._opener.poll(now))
            return
        if not channel.reliable and self.online_at_join is None and now - self._register_at >= REGISTER_RETRY:
            # Nothing retransmits in unreliable mode; a second Register that
            # meets a live session only earns an ALREADY_REGISTERED error.
            self._register_at = now
            self.send(encode(ev.Register(self.nick)))
        if now < self._due and not self._waiting:
            return  # the common case, for hundreds of clients every few ms
        if channel.wants_to_send or now >= channel.next_deadline():
            self._flush(now)
        if channel.is_dead(now):
            self.lost("the server stopped answering")
        self._due = channel.next_deadline()

    # --- receiving ---------------------------------------------------------------

    def on_readable(self) -> None:
        recvmsg = self.sock.recvmsg
        batch = []
        for _ in range(READ_BURST):
            try:
                datagram, ancillary, _, _ = recvmsg(2048, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                break  # an ICMP error: the session's timers decide
            batch.append((datagram, ancillary))
        if not batch:
            return
        read_at = time.time_ns()
        now = time.monotonic()  # the channel's clock
        for datagram, ancillary in batch:
            self._datagram(datagram, kernel_stamp(ancillary, read_at), read_at, now)
        channel = self.channel
        if channel is not None:
            if channel.wants_to_send:
                self._flush(now)
            else:
                self._due = min(self._due, channel.next_deadline())

    def _datagram(self, datagram: bytes, received_at: int, read_at: int, now: float) -> None:
        channel = self.channel
        # The server's own fast path (``parse_session``): a load client gets a
        # segment per message, and building an event per frame was a quarter
        # of its time, which capped the UDP figures below the server's.
        parsed = parse_session(datagram) if channel is not None else None
        if parsed is not None and channel is not None:
            token, data, acks = parsed
            if token != self.token:
                return
            try:
                chunks = channel.receive_parsed(data, acks, now)
            except RemoteProtocolError:
                return
            if chunks:
                self.deliver(received_at, chunks[0] if len(chunks) == 1 else b"".join(chunks), read_at)
            return
        try:
            frames = decode_datagram(datagram)
        except RemoteProtocolError:
            return
        first = frames[0]
        if type(first) is ev.Session and channel is not None:
            if first.token != self.token:
                return
            try:
                chunks = channel.receive(frames[1:], now)
            except RemoteProtocolError:
                return
            if chunks:
                self.deliver(received_at, chunks[0] if len(chunks) == 1 else b"".join(chunks), read_at)
        elif channel is None:
            self._say_hello(self._opener.receive(first, now))
            if self._opener.accepted is not None:
                self._open(self._opener.accepted, now)

    def _open(self, accept: ev.Accept, now: float) -> None:
        self.token = accept.token
        # Bundles stay whole: ``deliver`` feeds the tally a stream of frames anyway.
        self.channel = open_channel(
            accept, now, keepalive_after=KEEPALIVE_AFTER, dead_after=DEAD_AFTER, split_bundles=False
        )
        self._register_at = now
        early = list(self._early)
        self._early.clear()
        self.send_frames(early)

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """A run's reliable-UDP segments, both ways: what each side sent (seq
    numbers used, keepalives included), sent again, and received twice.

    The server's come from its shutdown line (None if it printed none), the
    clients' from their channels, both over the whole run, the shutdown
    included. On loopback nothing is lost while the kernel's buffers hold, so
    a segment sent again is one a timer or the loss thresholds mistook for lost.
    """

    server_sent: int | None
    server_resent: int | None
    #: The clients' segments the server received twice.
    server_duplicates: int | None
    client_sent: int
    client_resent: int
    #: The server's segments the clients received twice.
    client_duplicates: int


#: The UDP server's shutdown line: ``shut down: 9 this, 2 that``.
_SHUTDOWN: Final = re.compile(r"shut down: (.*)$", re.MULTILINE)
_COUNT: Final = re.compile(r"(\d+) ([^,]+)")


def shutdown_counts(log: str) -> dict[str, int] | None:
    """The counters of the last ``shut down:`` line of a UDP server's log, by name, or None."""
    lines = _SHUTDOWN.findall(log)
    if not lines:
        return None
    return {what.strip(): int(count) for count, what in _COUNT.findall(lines[-1])}


def segment_counts(peers: Sequence[Peer], server_log: str) -> SegmentCounts | None:
    """The segment counts of a run over reliable or unreliable UDP, or None
    if no client opened a session (not a UDP run)."""
    channels = [p.channel for p in peers if isinstance(p, UdpPeer) and p.channel is not None]
    if not channels:
        return None
    server = shutdown_counts(server_log)
    return SegmentCounts(
        server_sent=None if server is None else server.get(SEGMENTS_SENT, 0),
        server_resent=None if server is None else server.get(SEGMENTS_RESENT, 0),
        server_duplicates=None if server is None else server.get(SEGMENTS_DUPLICATE, 0),
        client_sent=sum(c.sent for c in channels),
        client_resent=sum(c.retransmits for c in channels),
        client_duplicates=sum(c.duplicates for c in channels),
    )


def maker(
    address: tuple[str, int], transport: Transport, *, seed: int, cpus: set[int] | None, clients: int
) -> tuple[Callable[[int, bool], Peer], list[Child]]:
    """A factory of UDP load clients for ``transport``, and the proxies it started.

    Raises:
        bench.servers.StartError: a proxy did not start.
    """
    proxies: list[Child] = []
    targets = [address]
    if transport.loss:
        count = -(-clients // PROXY_CLIENTS)
        targets = []
        try:
            for k in range(count):
                proxy = Child(
                    "udpchat.lossyproxy",
                    [
                        *("--target", f"{address[0]}:{address[1]}"),
                        *("--loss", f"{transport.loss / 100:g}"),
                        *("--seed", str(seed * 1000 + k)),
                    ],
                    cpus=cpus,
                )
                proxies.append(proxy)
                targets.append(proxy.start())
        except BaseException:
            for proxy in proxies:
                proxy.close()
            raise

    def make(index: int, reads: bool) -> Peer:
        return UdpPeer(index, targets[index % len(targets)], reads=reads)

    return make, proxies
