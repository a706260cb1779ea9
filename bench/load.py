"""The load generator: many clients in one process, multiplexed with ``epoll``.

Strategy: at these rates a Python load generator is easily the bottleneck, so
its per-message work is kept to the minimum and done where it is cheapest:

- sending: a frame is the ``Say`` prefix encoded once plus a 64-byte text made
  by one ``bytes %`` (sender, sequence number, send time); a sender's whole
  window goes out in one ``send``;
- receiving: one read of up to 256 KiB per ready socket into one preallocated
  buffer, the kernel's arrival stamp of the read (below), the bytes kept as
  they are; ``Progress`` (in C for uniform buffers)
  only learns the latest sequence number per sender, which is all the flow
  control and the end-of-run check need. Everything else (latency per
  message, duplicates, reordering) is done by ``accounting.Ledger`` after the
  measured window, from the kept bytes.

A run has three phases: ``connect`` (clients join in batches, each waits for
its ``Welcome`` and every ``Joined`` after it, so no notice is in flight when
the clock starts), ``drive`` (the measured window), and the shutdown (the
runner's). The garbage collector is off during ``drive``.

Rooms: a plan with ``rooms`` spreads its clients over that many rooms (client
*i* in room *i* mod *rooms*, named by ``payload.room_name``, all as long as
``#lobby`` so every relayed message keeps the one size the hot path relies
on). At the end of ``connect`` every client joins its room and parts
``#lobby`` (so the lobby is empty and its notices stop), and the clock starts
only once every client has seen its own ``Parted`` from the lobby and every
``Joined`` of its room, and nothing has arrived for ``ROOMS_QUIET``; a sender says its messages in its own room, and a
receiver expects messages from the senders of its own room only
(``Plan.expected_from``).

Echoes (protocol 3): the server sends a sender's own messages back to it,
numbered like everyone's. They are not deliveries to anyone else: a
receiver's ``Expected`` names its own index, its ``Ledger`` counts them
apart (``echoes``, with their round trip), and the figures (expected,
delivered, latencies) count the copies for the others, as before. A run is
finished once every sender has its last message back too, so every echo is
in the record; flow control still waits for the others, not for the echo.
Every join is now followed by a ``Replay`` (and the room's history, none in
a fresh room), which the join phase passes over like any other notice.

A ``Peer`` is one client; the transport-specific parts (a TCP socket here, a
UDP session in ``bench.udpload``) are its ``fileno``, ``on_readable``,
``on_writable``, ``send`` and ``on_timer``. Everything above them is shared.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import select
import socket
import ssl
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from bench import procstat
from bench.accounting import Expected, Progress, StreamCorrupt
from bench.payload import MAX_ROOMS, SAY_PREFIX, nick_of, room_name, say_frame, say_prefix, sender_key, seq_key
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode, ProtocolError
from common.wire.framing import HEADER_SIZE, FrameType, decode_frame, encode
from tcpchat.tls import TlsLink

_RECV_SIZE: Final = 256 * 1024
#: The one receive buffer of the process (it serves one socket at a time).
_RECV_BUFFER: Final = bytearray(_RECV_SIZE)
_RECV_BUFFERS: Final = [_RECV_BUFFER]
_RECV_VIEW: Final = memoryview(_RECV_BUFFER)
_WELCOME: Final = int(FrameType.WELCOME)
_JOINED: Final = int(FrameType.JOINED)
_PARTED: Final = int(FrameType.PARTED)
_LEFT: Final = int(FrameType.LEFT)
_PING: Final = int(FrameType.PING)
_ERROR: Final = int(FrameType.ERROR)
_GOODBYE: Final = int(FrameType.GOODBYE)
_ALREADY_REGISTERED: Final = int(ErrorCode.ALREADY_REGISTERED).to_bytes(2, "big")
#: Over a transport that loses for good, a full window that has not moved for
#: this long is presumed lost and released: the receiver that holds it back
#: may have lost everything that would move it, and the sender then waits
#: for nothing. Short, so a loss costs a pause, not the run's pace.
RELEASE_AFTER_NS: Final = 50_000_000
#: Lossy joins: stop waiting for join notices after this long without one.
SETTLE_QUIET: Final = 1.0

#: Clients that connect before waiting for their welcomes (below the server's listen backlog).
CONNECT_BATCH: Final = 64
#: Rooms: once every notice is in, the measured window waits until no client
#: has had anything to read for this long (the server's acknowledgements and
#: retransmissions of a million join and part notices die down over UDP).
ROOMS_QUIET: Final = 0.25
#: How often the server's thread count is sampled during the measured window.
SAMPLE_EVERY_NS: Final = 100_000_000


# Receive timestamps. A load generator that serves hundreds of sockets reads
# each one some time after its bytes arrived; timing the read would add that
# wait, which is the load generator's, to the server's latency. The kernel
# stamps every packet as it lands in the socket (SO_TIMESTAMPNS) and hands the
# stamp of the last one a read takes over with the bytes: that is the receive
# time used, and the wait until the read is reported apart (``read_lags``).
# The kernel stamps on CLOCK_REALTIME, so send times are taken on it too.

#: ``SO_TIMESTAMPNS`` (Linux; Python does not name it), also the cmsg type.
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC: Final = struct.Struct("@qq")
#: Room for one timestamp control message.
ANCILLARY_SIZE: Final = socket.CMSG_SPACE(_TIMESPEC.size)


def stamp_arrivals(sock: socket.socket) -> None:
    """Ask the kernel to timestamp what arrives on ``sock`` (where it can)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def kernel_stamp(ancillary: list[tuple[int, int, bytes]], fallback: int) -> int:
    """The arrival time (ns, CLOCK_REALTIME) in a read's control messages, else ``fallback``."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return fallback


def _describe(frame: bytes) -> str:
    """A notice or error, for a run's notes (rare: decoded in full)."""
    try:
        return repr(decode_frame(frame))
    except ProtocolError as exc:
        return f"an undecodable frame ({exc})"


class LoadError(Exception):
    """The load could not be set up (a client could not join)."""


def room_members(clients: int, rooms: int, room: int) -> range:
    """The clients of room ``room`` when ``clients`` are spread over ``rooms``:
    client *i* is in room *i* mod ``rooms``."""
    return range(room, clients, rooms)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the load does in one run.

    Exactly one of ``window`` (send as fast as flow control allows) and
    ``rate`` (messages per second per sender, evenly spaced) is set.
    With ``rooms``, client *i* is in room *i* mod ``rooms`` and only there
    (see the module docstring); without, everyone is in ``#lobby``.
    """

    clients: int
    senders: tuple[int, ...]
    messages: int
    window: int | None = None
    rate: float | None = None
    #: Clients that join and then never read.
    stuck: tuple[int, ...] = ()
    #: Hard bound on the measured window, in seconds.
    deadline_s: float = 60.0
    #: After the last send, give up waiting for deliveries after this long without any.
    quiet_s: float = 2.0
    #: Rooms the clients are spread over, leaving ``#lobby``; 0: everyone stays in ``#lobby``.
    rooms: int = 0

    def __post_init__(self) -> None:
        if (self.window is None) == (self.rate is None):
            raise ValueError("a plan has either a window or a rate")
        if not set(self.senders) | set(self.stuck) <= set(range(self.clients)):
            raise ValueError("senders and stuck clients must be among the clients")
        if set(self.senders) & set(self.stuck):
            raise ValueError("a stuck client does not send")
        if not 0 <= self.rooms <= min(self.clients, MAX_ROOMS):
            raise ValueError(f"a plan spreads its clients over 0 to min(clients, {MAX_ROOMS}) rooms")
        if self.rooms and self.stuck:
            # Settling a room counts the join notices of every member, which
            # a client that never reads cannot report.
            raise ValueError("a plan with rooms has no stuck clients")

    def room_of(self, client: int) -> int | None:
        """The room of ``client`` (an index for ``payload.room_name``), or None: ``#lobby``."""
        return client % self.rooms if self.rooms else None

    def members(self, room: int) -> range:
        """The clients in room ``room``."""
        return room_members(self.clients, self.rooms, room)

    @property
    def receivers(self) -> tuple[int, ...]:
        """The clients that read (everyone but the stuck)."""
        stuck = set(self.stuck)
        return tuple(i for i in range(self.clients) if i not in stuck)

    def expected_from(self, receiver: int) -> Expected:
        """Messages per sender that ``receiver`` should get: from every sender
        in its room but itself (everyone shares ``#lobby`` in a plan without
        rooms); and, if it sends, its own, which the server echoes to it."""
        room = self.room_of(receiver)
        others = {s: self.messages for s in self.senders if s != receiver and self.room_of(s) == room}
        own = receiver if receiver in self.senders else None
        return Expected(others, own, self.messages)

    def audience(self, sender: int) -> tuple[int, ...]:
        """The receivers that should get ``sender``'s messages, in client order."""
        room = self.room_of(sender)
        stuck = set(self.stuck)
        return tuple(i for i in range(self.clients) if i != sender and i not in stuck and self.room_of(i) == room)


@dataclass(slots=True)
class Outcome:
    """What the drive phase measured, before the offline accounting."""

    #: Per receiver index: ``(received_at_ns, bytes)`` of every read.
    received: dict[int, list[tuple[int, bytes]]]
    sent: int
    #: CLOCK_MONOTONIC ns: the measured window, for CPU shares.
    started_at: int
    ended_at: int
    #: CLOCK_REALTIME ns when the window opened, the origin of send and receive stamps.
    started_wall: int
    completed: bool
    load_cpu_s: float
    server_cpu_s: float
    #: The part of the server's CPU spent in the kernel.
    server_sys_s: float
    server_threads: int
    notes: list[str] = field(default_factory=list)
    #: Every read's wait in its socket before the load generator took it, ns.
    read_lags: array[int] = field(default_factory=lambda: array("q"))
    #: CPU of the lossy proxies, and of every other process on the machine (set by the runner).
    proxy_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    proxy_pids: list[int] = field(default_factory=list)


class Peer:
    """One load client; subclasses own the socket (see the module docstring)."""

    def __init__(self, index: int, *, reads: bool = True) -> None:
        self.index = index
        #: Called when sends start queueing (the loop then watches for writability).
        self.on_backlog: Callable[[Peer], None] = _ignore
        self.nick = nick_of(index)
        self.reads = reads
        self.alive = True
        self.progress = Progress()
        self.chunks: list[tuple[int, bytes]] = []
        #: Per read: how long its bytes waited in the socket for us, in ns.
        self.read_lags: array[int] = array("q")
        #: Set once the server's Welcome arrives: members online at our join.
        self.online_at_join: int | None = None
        self.joined_seen = 0
        #: In a plan with rooms (``enter_room``): ``Joined`` notices of our room
        #: seen (ours included), and whether our own part from ``#lobby`` arrived.
        self.room_joins = 0
        self.left_lobby = False
        self._room_joined_head: bytes | None = None
        self._lobby_parted: bytes | None = None
        self.events: list[str] = []
        self.recording = False
        #: Set when the loop stops reading it for good.
        self.muted = False

    # --- the transport's part ----------------------------------------------

    def fileno(self) -> int:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Queue one encoded frame (or, over TCP, several joined) for the server."""
        raise NotImplementedError

    def send_frames(self, frames: list[bytes]) -> None:
        """Queue encoded frames for the server, in order, as one batch."""
        self.send(b"".join(frames))

    #: The client must read to join at all (a UDP handshake), even if it never reads afterwards.
    reads_to_join = False

    def on_readable(self) -> None:
        raise NotImplementedError

    def on_writable(self) -> None:
        raise NotImplementedError

    def wants_write(self) -> bool:
        return False

    def on_timer(self, now: float) -> None:
        """Run the timers due at ``now`` (monotonic seconds)."""

    def idle(self) -> bool:
        """Nothing of ours is waiting to be sent or acknowledged."""
        return True

    def close(self) -> None:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------

    def deliver(self, received_at: int, data: bytes, read_at: int) -> None:
        """Frames from the server arrived (a stream piece or whole frames):
        at ``received_at`` by the kernel's clock, read by us at ``read_at``."""
        if self.recording:
            self.chunks.append((received_at, data))
            self.read_lags.append(read_at - received_at)
        try:
            others = self.progress.feed(data)
        except StreamCorrupt as exc:
            self.events.append(f"{self.nick}: {exc}")
            self.lost("corrupt stream")
            return
        for ftype, frame in others:
            self._control(ftype, frame)

    def _control(self, ftype: int, frame: bytes) -> None:
        if ftype == _PING:
            self.send(encode(ev.Pong(int.from_bytes(frame[-8:], "big"))))
        elif ftype == _WELCOME:
            self.online_at_join = int.from_bytes(frame[-8:], "big")
        elif ftype == _JOINED:
            self.joined_seen += 1
            if self._room_joined_head is not None and frame.startswith(self._room_joined_head):
                self.room_joins += 1
        elif ftype == _PARTED:
            if frame == self._lobby_parted:
                self.left_lobby = True
        elif ftype == _ERROR and frame[8:10] == _ALREADY_REGISTERED:
            # A repeated Register of a lossy join: the first one took and its
            # Welcome was lost. Joined, then, at an unknown position.
            if self.online_at_join is None:
                self.online_at_join = 0
        elif ftype in (_ERROR, _LEFT, _GOODBYE):
            self.events.append(f"{self.nick} got {_describe(frame)}")

    def settled(self, clients: int) -> bool:
        """Welcomed, and told of our own join and of every client that joined after us."""
        return self.online_at_join is not None and self.joined_seen >= clients - self.online_at_join + 1

    def enter_room(self, room: str) -> None:
        """Join ``room`` and part ``#lobby``; from now on count the room's
        ``Joined`` notices and watch for our own ``Parted`` from the lobby.

        Every benchmark nick has the same length, so every ``Joined`` of
        ``room`` starts with the same header and room field: a notice is
        recognised by its first bytes, our own part by the whole frame.
        """
        room_field = 1 + len(room.encode("utf-8"))
        self._room_joined_head = encode(ev.Joined(room, self.nick))[: HEADER_SIZE + room_field]
        self._lobby_parted = encode(ev.Parted(LOBBY, self.nick, ""))
        self.send_frames([encode(ev.Join(room)), encode(ev.Part(LOBBY, ""))])

    def lost(self, why: str) -> None:
        """The connection is gone; stop reading it."""
        if self.alive:
            self.alive = False
            self.events.append(f"{self.nick} lost: {why}")


class TcpPeer(Peer):
    """A load client over TCP: a non-blocking socket with Nagle off."""

    def __init__(
        self, index: int, address: tuple[str, int], *, reads: bool = True, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(index, reads=reads)
        self.sock = socket.create_connection(address, timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stamp_arrivals(self.sock)
        #: Over TLS, as the clients speak it (``tcpchat.tls``): the handshake
        #: blocking here, then records through the same non-blocking socket.
        self._tls: TlsLink | None = None
        if tls is not None:
            link = TlsLink(tls, server_side=False, server_hostname=address[0])
            if link.handshake(self.sock):
                raise LoadError(f"peer {index}: the server spoke before our Register")
            self._tls = link
        self._handshake(address)
        self.sock.setblocking(False)
        self._out = bytearray()
        self.send(encode(ev.Register(self.nick)))

    def _handshake(self, address: tuple[str, int]) -> None:
        """What a client over another layer says before its Register (``bench.wsload``)."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        if not self.alive:
            return
        if self._tls is not None:
            data = self._tls.encrypt(data)
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.lost(f"send: {exc}")
            return
        if sent < len(data):
            self._out += data[sent:]
            self.on_backlog(self)

    def wants_write(self) -> bool:
        return bool(self._out)

    def on_writable(self) -> None:
        if not self._out or not self.alive:
            return
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(f"send: {exc}")
            return
        del self._out[:sent]

    def on_readable(self) -> None:
        # Into one preallocated buffer, then copied out: asking recvmsg for
        # 256 KiB allocates (and the allocator maps) 256 KiB per call, which
        # costs five times the whole read of a small message.
        try:
            size, ancillary, _, _ = self.sock.recvmsg_into(_RECV_BUFFERS, ANCILLARY_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(f"recv: {exc}")
            return
        if not size:
            self.lost("closed by the server")
            return
        data = _RECV_VIEW[:size].tobytes()
        if self._tls is not None:
            try:
                data = self._tls.feed(data)
            except ssl.SSLError as exc:
                self.lost(f"recv: {exc}")
                return
            if not data:
                return  # no record complete yet
        read_at = time.time_ns()
        self.deliver(kernel_stamp(ancillary, read_at), data, read_at)

    def idle(self) -> bool:
        return not self._out

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()


PeerFactory = Callable[[int, bool], Peer]


def _ignore(peer: Peer) -> None:
    pass


class Loop:
    """The ``epoll`` loop over every peer, with timers and the sampling of the server."""

    def __init__(self, server_pid: int | None) -> None:
        self._ep = select.epoll()
        self._by_fd: dict[int, Peer] = {}
        self._writing: dict[int, Peer] = {}
        self._backlog: set[Peer] = set()
        self.server_pid = server_pid
        self.threads_peak = 0
        self._next_sample = 0
        #: When the peers' timers run next (monotonic seconds).
        self.next_timers = 0.0

    def add(self, peer: Peer) -> None:
        """Serve ``peer``. A client that never reads is not watched at all: even
        an error or hang-up on it must not make us read from it."""
        peer.on_backlog = self._backlogged
        if not (peer.reads or peer.reads_to_join):
            return
        fd = peer.fileno()
        self._by_fd[fd] = peer
        self._ep.register(fd, select.EPOLLIN)

    def mute(self, peer: Peer) -> None:
        """Stop reading ``peer`` for good (a stuck client, once it has joined)."""
        peer.muted = True
        fd = peer.fileno()
        if self._by_fd.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._ep.unregister(fd)
        self._writing.pop(peer.index, None)

    def _backlogged(self, peer: Peer) -> None:
        self._backlog.add(peer)

    def _update_interest(self) -> None:
        # Watch for writability only while something is queued; only peers
        # that queued since the last poll, or are being watched, can change.
        check = self._backlog
        self._backlog = set()
        check.update(p for p in self._writing.values())
        for peer in check:
            if peer.fileno() not in self._by_fd or not peer.alive:
                self._writing.pop(peer.index, None)
                continue
            want = peer.wants_write()
            if want == (peer.index in self._writing):
                continue
            with contextlib.suppress(OSError):
                self._ep.modify(peer.fileno(), select.EPOLLIN | (select.EPOLLOUT if want else 0))
            if want:
                self._writing[peer.index] = peer
            else:
                del self._writing[peer.index]

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds; serve every ready peer; return how many were."""
        if self._backlog or self._writing:
            self._update_interest()
        ready = self._ep.poll(max(0.0, timeout))
        by_fd = self._by_fd
        for fd, mask in ready:
            peer = by_fd[fd]
            if mask & select.EPOLLOUT:
                peer.on_writable()
            if mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                peer.on_readable()
            if not peer.alive:
                with contextlib.suppress(OSError, ValueError):
                    self._ep.unregister(fd)
                del by_fd[fd]
                self._writing.pop(peer.index, None)
        return len(ready)

    def sample(self, now_ns: int) -> None:
        """Note the server's thread count, at most every SAMPLE_EVERY_NS."""
        if self.server_pid is None or now_ns < self._next_sample:
            return
        self._next_sample = now_ns + SAMPLE_EVERY_NS
        reading = procstat.sample(self.server_pid)
        if reading is not None:
            self.threads_peak = max(self.threads_peak, reading.threads)

    def close(self) -> None:
        self._ep.close()


#: Seconds between two runs of the peers' timers (retransmission, keepalive):
#: the reliability layer's smallest timeout is 20 ms.
TIMER_EVERY: Final = 0.005


def _timers(peers: Sequence[Peer], now: float) -> None:
    for peer in peers:
        if peer.alive:
            peer.on_timer(now)


def pump(loop: Loop, peers: Sequence[Peer], timeout: float, timed: bool) -> int:
    """Poll once, then run the peers' timers if due; return how many peers were ready.

    Reading first: after the loop was kept off its core (a busy machine),
    the acks that came meanwhile wait in the sockets, and a retransmission
    timer run before them resends what they acknowledge. (With the timers
    first, the clients resent 1-10% of their segments in the saturated
    scenario while the machine's other users took more than a core.)
    """
    if not timed:
        return loop.poll(timeout)
    ready = loop.poll(min(timeout, max(0.0, loop.next_timers - time.monotonic())))
    now = time.monotonic()
    if now >= loop.next_timers:
        _timers(peers, now)
        loop.next_timers = now + TIMER_EVERY
    return ready


def connect(
    make: PeerFactory, plan: Plan, loop: Loop, *, timed: bool, timeout: float, lossy: bool = False
) -> list[Peer]:
    """Join every client of ``plan``, in batches; return them settled.

    ``lossy``: join notices may be lost for good, so after the last welcome
    stop waiting for them once none has come for SETTLE_QUIET seconds.

    Raises:
        LoadError: a client could not connect or was not settled in time.
    """
    deadline = time.monotonic() + timeout
    peers: list[Peer] = []
    try:
        _join(make, plan, loop, peers, timed=timed, deadline=deadline, lossy=lossy)
        if plan.rooms:
            _enter_rooms(plan, loop, peers, timed=timed, deadline=deadline)
    except OSError as exc:
        for peer in peers:
            peer.close()
        raise LoadError(f"cannot connect client {len(peers)}: {exc}") from exc
    except LoadError:
        for peer in peers:
            peer.close()
        raise
    for peer in peers:
        if not peer.reads:
            loop.mute(peer)
    dead = [p.nick for p in peers if not p.alive]
    if dead:
        for peer in peers:
            peer.close()
        raise LoadError(f"clients lost while joining: {', '.join(dead[:5])}")
    return peers


def _join(
    make: PeerFactory, plan: Plan, loop: Loop, peers: list[Peer], *, timed: bool, deadline: float, lossy: bool
) -> None:
    stuck = set(plan.stuck)
    for first in range(0, plan.clients, CONNECT_BATCH):
        for index in range(first, min(first + CONNECT_BATCH, plan.clients)):
            peer = make(index, index not in stuck)
            peers.append(peer)
            loop.add(peer)
        # Wait for this batch's welcomes: the server's accept queue stays short.
        while not all(p.online_at_join is not None for p in peers if p.reads or p.reads_to_join):
            if time.monotonic() > deadline:
                raise LoadError(f"{sum(p.online_at_join is None for p in peers)} clients not welcomed in time")
            pump(loop, peers, 0.05, timed)
    seen, quiet_from = -1, time.monotonic()
    while not all(p.settled(plan.clients) for p in peers if p.reads):
        now = time.monotonic()
        if lossy:
            notices = sum(p.joined_seen for p in peers)
            if notices != seen:
                seen, quiet_from = notices, now
            elif now - quiet_from > SETTLE_QUIET:
                return
        if now > deadline:
            raise LoadError("join notices did not all arrive in time")
        pump(loop, peers, 0.05, timed)


def _enter_rooms(plan: Plan, loop: Loop, peers: list[Peer], *, timed: bool, deadline: float) -> None:
    """Move every client from ``#lobby`` to its room; return once no notice is in flight.

    Strategy: a member that was the k-th of n to join its room hears the
    ``Joined`` of itself and of every later member, n - k notices, so once
    everything has arrived a room's members have counted 1 + 2 + ... + n
    between them; no count ever passes its final value, so that sum is
    reached exactly when the last notice is in. A client's own ``Parted``
    from the lobby is the last lobby notice the server sends it (it hears
    the lobby no more), and its stream is in order. Then, until ROOMS_QUIET
    passes with nothing to read and nothing of ours unacknowledged: over UDP
    the server may still be taking the acknowledgements of the notices (and
    resending what it has not seen acknowledged yet), which would otherwise
    run into the measured window.

    Raises:
        LoadError: a client was lost, or the notices were not all in by ``deadline``.
    """
    for peer in peers:
        room = plan.room_of(peer.index)
        assert room is not None
        peer.enter_room(room_name(room))
    rooms = [([peers[i] for i in plan.members(r)], len(plan.members(r))) for r in range(plan.rooms)]

    def settled() -> bool:
        if not all(p.left_lobby and p.room_joins for p in peers):
            return False
        return all(sum(p.room_joins for p in members) == n * (n + 1) // 2 for members, n in rooms)

    while not settled():
        lost = [p.nick for p in peers if not p.alive]
        if lost:
            raise LoadError(f"clients lost while joining their rooms: {', '.join(lost[:5])}")
        if time.monotonic() > deadline:
            waiting = sum(not (p.left_lobby and p.room_joins) for p in peers)
            raise LoadError(f"room notices did not all arrive in time ({waiting} clients not moved)")
        pump(loop, peers, 0.05, timed)
    quiet_from = time.monotonic()
    while time.monotonic() - quiet_from < ROOMS_QUIET or not all(p.idle() for p in peers):
        if time.monotonic() > deadline:
            raise LoadError(f"the clients were not quiet for {ROOMS_QUIET:g} s after joining their rooms")
        if pump(loop, peers, 0.05, timed):
            quiet_from = time.monotonic()


class _Sender:
    __slots__ = ("acked", "index", "key", "peer", "prefix", "receivers", "sent")

    def __init__(self, peer: Peer, receivers: list[Peer], prefix: bytes) -> None:
        self.peer = peer
        self.index = peer.index
        self.key = sender_key(peer.index)
        #: Everyone who should get its messages (its room but itself).
        self.receivers = receivers
        #: Its room's ``Say`` prefix, encoded once per room.
        self.prefix = prefix
        self.sent = 0
        self.acked = 0

    def seen_by_all(self) -> int:
        """Highest sequence number every live receiver has seen (flow control)."""
        key = self.key
        lowest = b"99999999"
        for r in self.receivers:
            if r.alive:
                got = r.progress.latest.get(key, b"00000000")
                lowest = min(lowest, got)
        return int(lowest)


class _Drive:
    """The measured window's state; ``drive`` is its only user."""

    def __init__(self, peers: Sequence[Peer], plan: Plan, loop: Loop, *, timed: bool, lossy: bool) -> None:
        self.peers = peers
        self.plan = plan
        self.loop = loop
        self.timed = timed
        self.lossy = lossy
        self.receivers = [p for p in peers if p.reads]
        by_index = {p.index: p for p in self.receivers}
        prefixes: dict[int | None, bytes] = {None: SAY_PREFIX}  # encoded once per room
        self.senders = []
        for i in plan.senders:
            room = plan.room_of(i)
            prefix = prefixes.get(room)
            if prefix is None:
                assert room is not None
                prefix = prefixes[room] = say_prefix(room_name(room))
            audience = [by_index[j] for j in plan.audience(i) if j in by_index]
            self.senders.append(_Sender(peers[i], audience, prefix))
        #: Per receiver, the keys of the senders it should hear from, itself
        #: included if it sends: its echo (``finished``).
        self.awaited = [(r, [sender_key(s) for s in self._heard_by(r.index)]) for r in self.receivers]
        self.total = len(self.senders) * plan.messages
        self.last_key = seq_key(plan.messages)
        self.quiet_ns = int(plan.quiet_s * 1e9)
        self.notes: list[str] = []
        self.sent = 0
        self.late_ns = 0
        self.seen = 0
        self.started = self.last_progress = time.monotonic_ns()
        self.started_wall = time.time_ns()
        # Paced sending: a heap of (due_ns, sender position), senders evenly staggered.
        self.gap = int(1e9 / plan.rate) if plan.rate else 0
        count = max(1, len(self.senders))
        self.due = [(self.started + self.gap * k // count, k) for k in range(len(self.senders))] if plan.rate else []
        heapq.heapify(self.due)

    def _heard_by(self, receiver: int) -> list[int]:
        expected = self.plan.expected_from(receiver)
        return [*expected, *([] if expected.own is None else [expected.own])]

    def send_window(self, now: int) -> None:
        """Fill every sender's window; a sender's batch goes out in one write."""
        window = self.plan.window or 0
        messages = self.plan.messages
        for s in self.senders:
            if s.sent >= messages or not s.peer.alive:
                continue
            room = window - (s.sent - s.acked)
            if room <= 0:
                s.acked = s.seen_by_all()
                room = window - (s.sent - s.acked)
                if room <= 0:
                    if self.lossy and now - self.last_progress > RELEASE_AFTER_NS:
                        s.acked = s.sent  # what did not arrive by now is presumed lost
                    continue
            count = min(room, messages - s.sent)
            stamp = time.time_ns()
            first = s.sent + 1
            index = s.index
            prefix = s.prefix
            s.peer.send_frames([say_frame(index, q, stamp, prefix) for q in range(first, first + count)])
            s.sent += count
            self.sent += count

    def send_paced(self, now: int) -> float:
        """Send every message that is due; return seconds until the next one."""
        due = self.due
        while due and due[0][0] <= now:
            at, k = heapq.heappop(due)
            s = self.senders[k]
            self.late_ns = max(self.late_ns, now - at)
            s.sent += 1
            s.peer.send(say_frame(s.index, s.sent, time.time_ns(), s.prefix))
            self.sent += 1
            if s.sent < self.plan.messages:
                heapq.heappush(due, (at + self.gap, k))
        return max(0.0, (due[0][0] - time.monotonic_ns()) / 1e9) if due else 0.05

    def note_progress(self, now: int) -> None:
        seen = sum(r.progress.messages for r in self.receivers)
        if seen != self.seen:
            self.seen = seen
            self.last_progress = now

    def finished(self) -> bool:
        """Every live receiver has seen the last message of every sender it
        should hear, and every live sender its own last one back."""
        last_key = self.last_key
        for r, keys in self.awaited:
            if not r.alive:
                continue
            latest = r.progress.latest
            for key in keys:
                if latest.get(key) != last_key:
                    return False
        return True

    def stalled(self, now: int) -> bool:
        return now - self.last_progress > self.quiet_ns and all(p.idle() for p in self.peers if p.alive)

    def run(self) -> bool:
        """Loop until done; return whether every expected delivery happened."""
        plan = self.plan
        deadline = self.started + int(plan.deadline_s * 1e9)
        while True:
            now = time.monotonic_ns()
            if plan.window is not None:
                self.send_window(now)
                self.note_progress(now)
                timeout = 0.05
            else:
                timeout = self.send_paced(now)
            if self.sent >= self.total:
                self.note_progress(now)
                if self.finished():
                    return True
                if self.stalled(now):
                    if self.lossy:
                        return True  # what is missing now is lost for good: the run is over
                    self.notes.append(f"deliveries stopped for {plan.quiet_s:g} s before every receiver had all")
                    return False
                timeout = min(timeout, 0.01)
            if now > deadline:
                self.notes.append(f"the run hit its {plan.deadline_s:g} s deadline")
                return False
            self.loop.sample(now)
            pump(self.loop, self.peers, timeout, self.timed)


def drive(peers: Sequence[Peer], plan: Plan, loop: Loop, *, timed: bool, lossy: bool) -> Outcome:
    """The measured window: send as the plan says until every receiver has
    everything, or deliveries stop for ``plan.quiet_s`` after the last send,
    or the plan's deadline passes.

    Args:
        timed: peers have timers (UDP sessions); ask them before each poll.
        lossy: deliveries may be lost for good, so flow control must not wait
            for them forever: a window that does not move for RELEASE_AFTER_NS
            is presumed lost and released.
    """
    receivers = [p for p in peers if p.reads]
    for p in receivers:
        p.recording = True
    # A collection walks every kept chunk; pausing the collector keeps its
    # pauses out of the measured window (nothing here makes cycles).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    cpu0 = time.process_time()
    start_reading = procstat.sample(loop.server_pid) if loop.server_pid else None
    state = _Drive(peers, plan, loop, timed=timed, lossy=lossy)
    try:
        completed = state.run()
    finally:
        ended = time.monotonic_ns()
        load_cpu = time.process_time() - cpu0
        if gc_was_enabled:
            gc.enable()
        for p in peers:
            p.recording = False
    end_reading = procstat.sample(loop.server_pid) if loop.server_pid else None
    server_cpu = end_reading.cpu_s - start_reading.cpu_s if end_reading and start_reading else 0.0
    server_sys = end_reading.sys_s - start_reading.sys_s if end_reading and start_reading else 0.0
    if state.late_ns > 5_000_000:
        state.notes.append(f"paced sends ran up to {state.late_ns / 1e6:.1f} ms late (load generator busy)")
    lags: array[int] = array("q")
    for p in receivers:
        lags.extend(p.read_lags)
    return Outcome(
        received={p.index: p.chunks for p in receivers},
        sent=state.sent,
        started_at=state.started,
        ended_at=ended,
        started_wall=state.started_wall,
        read_lags=lags,
        completed=completed,
        load_cpu_s=load_cpu,
        server_cpu_s=server_cpu,
        server_sys_s=server_sys,
        server_threads=loop.threads_peak,
        notes=state.notes,
    )


__all__ = [
    "CONNECT_BATCH",
    "LoadError",
    "Loop",
    "Outcome",
    "Peer",
    "Plan",
    "TcpPeer",
    "connect",
    "drive",
    "pump",
    "room_members",
]
