"""The UDP chat server: ``python -m udpchat.server``.

Strategy: the chat rules live in ``common.chat.hub`` and reliable delivery in
``common.session.reliability``; this module owns the socket, the threads and the
clock, and drives both. PROTOCOL.md, "UDP sessions and reliability", has the
wire rules.

Peers are sessions, keyed by a random 64-bit token, not by address. A client
opens one with a two-step handshake: a ``Hello`` padded to a full datagram,
answered by a stateless ``Cookie`` (``common.session.cookies``), echoed in a second
padded ``Hello``, answered by ``Accept(token)``. Only then does the server keep
any state for it, and until then it never answers with more bytes than it got.
A datagram of a session must start with its ``Session(token)`` frame and come
from the address that opened it; anything else is counted, logged at debug
level and ignored, so it changes nobody's session.

Threads:

- the **receiver** takes the datagrams waiting (up to ``READ_BURST`` at once),
  decodes them, and under the one lock feeds each session's segments to its
  ``Channel`` and the frames that completes to the hub; the resulting
  deliveries go through ``common.fanout`` (each event encoded once, queued on
  each recipient's channel) before the lock is released, which gives every
  peer one total order. Still under the
  lock it drains the channels that now have something to say (acks, new
  segments the window admits, packed up to 1200 bytes per datagram) and sends
  them itself: a hand-off to another thread would cost each message a
  scheduling delay, and ``sendto`` on UDP never waits for a peer;
- the **pump** wakes when the earliest timer of any peer is due, and when
  woken by anything that did not come through the receiver (a new session's
  notices, the shutdown): the timers of the peers that are due
  (retransmission, keepalive, idle expiry, registration timeout, flood
  holding) and what they make due.

Timers: a heap of (due time, token), one entry per peer at its earliest
deadline, so a pass costs the peers that are due and nothing for the idle
ones (issue 12: walking every session every 20 ms under the lock cost 5.6%
of a core at 1,000 idle sessions, and would cost half a core at 10,000).
An entry is only ever moved earlier; one that fires early (the peer was
heard from meanwhile, its ack came) finds nothing to do and is put back at
the peer's new deadline. Entries of forgotten peers are skipped, and hold
only a token, not the peer, so a dropped session is freed at once.

Both send outside the hub lock, holding a send lock taken before the hub lock
is let go, so datagrams leave in the order the channels made them.

Slow and dead peers: UDP ``sendto`` never waits for a peer, so nobody can stall
the others; what a peer has not acknowledged piles up in its own channel's
backlog, bounded by ``max_queue`` bytes. A peer whose backlog overflows is cut
off by the fan-out's one slow-consumer policy (its ``Error(SLOW_CONSUMER)`` and
``Goodbye`` queued past the bound, a leave notice to the others); a peer silent
for ``idle_timeout`` seconds (it is sent keepalives at a quarter of that) is
dropped with a leave notice.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from common.chat import events as ev
from common.chat.hub import DEFAULT_MAX_ROOMS, DEFAULT_REPLAY, DEFAULT_ROOMS_PER_MEMBER, Delivery, Hub
from common.chat.log import DEFAULT_HISTORY_LIMIT
from common.chat.view import ClientView
from common.ports import Batch
from common.session.cookies import CookieJar
from common.session.liveness import Due, Liveness
from common.session.ratelimit import DEFAULT_RATE, TokenBucket
from common.session.reliability import MAX_BACKLOG, AckInfo, Channel, Segments, parse_session
from common.wire.errors import ErrorCode, ProtocolError, RemoteProtocolError
from common.wire.framing import decode_datagram, decode_frame, encode
from common.wire.limits import DEFAULT_PORT, MAX_DATAGRAM
from twinchat import servercli
from twinchat.gatekeeper import AccountEvent, needs_vetting
from twinchat.metrics import Metrics, TransportStats

log = logging.getLogger("udpchat.server")


#: Seconds of silence before a peer is dropped; it is sent keepalives at a quarter.
DEFAULT_IDLE_TIMEOUT: Final = 60.0

#: Seconds a new session has to register a nick.
DEFAULT_REGISTER_TIMEOUT: Final = 10.0

#: Registered members at once unless told otherwise (unregistered sessions are
#: bounded by --max-per-host, and all sessions by twice this plus 16).
DEFAULT_MAX_CLIENTS: Final = 1000

#: Bytes the server may hold for one peer, unacknowledged or waiting for the
#: windows, before it is cut off as a slow consumer: some 10,000 chat lines, far
#: more than a benchmark burst, and 1 GiB for 1,000 stuck peers at the very worst.
DEFAULT_MAX_QUEUE: Final = MAX_BACKLOG

#: Events of a flooding peer held back for the rate limit at most; past this
#: it is dropped.
MAX_HELD: Final = 4096

#: Seconds a closing session (its Goodbye queued) has to get its last segments
#: acknowledged before it is forgotten anyway.
LINGER: Final = 2.0

#: Seconds the shutdown waits for every peer to acknowledge its goodbye. Not
#: the whole second PROTOCOL.md allows for the exit: under loss some goodbye is
#: never acknowledged, the wait runs out, and stopping the threads, closing the
#: socket and the interpreter's exit come on top (at 1.0, the exit took 1.07 s
#: with deaf peers: ``tools/sigterm_exit.py``).
SHUTDOWN_FLUSH: Final = 0.8

#: Bytes of dropped sessions' backlogs after which the pump asks the C
#: allocator to give free memory back to the system (see ``_trimmer``).
TRIM_AFTER: Final = 16 << 20

#: Seconds between two runs of one peer's timers, at least: a deadline that
#: is past and that its pass did not move (a keepalive held back by segments
#: in flight) is looked at again after this, not in a busy loop.
TICK: Final = 0.02

#: Longest sleep of the pump with no timer due (it is woken for anything sooner).
PUMP_NAP: Final = 1.0

#: Bytes asked of one recvfrom: more than MAX_DATAGRAM, so oversize ones are seen.
RECV_SIZE: Final = 2048

#: Datagrams the receiver takes in one go when more are waiting.
READ_BURST: Final = 64

#: A session datagram's frames after its ``Session`` frame: split by the fast
#: path (``parse_session``: segments, acks), or decoded events.
Parsed = tuple[Segments, list[AckInfo]] | list[ev.Event]

#: What the shutdown line counts of the sessions' segments, summed over every
#: session (a benchmark reads them there): ``Data`` segments sent (seq numbers
#: used, keepalives included), sent again, received twice, and (unreliable
#: mode) never received.
SEGMENTS_SENT: Final = "data segments sent"
SEGMENTS_RESENT: Final = "retransmitted segments"
SEGMENTS_DUPLICATE: Final = "duplicate segments"
SEGMENTS_LOST: Final = "lost segments"

#: On Linux a blocking socket can still be read without blocking.
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
#: Look at the next datagram without taking it, and without waiting.
_PEEK: Final = socket.MSG_PEEK | _DONTWAIT

#: Seconds a due timer may wait for the receiver to read the datagrams
#: waiting in the socket (see ``_timers_may_wait``): well under MIN_RTO, and
#: under the ack delay every sender allows for.
TIMER_GRACE: Final = 0.01

#: Kernel socket buffers asked for, so a burst of a thousand datagrams waits in
#: the kernel instead of being dropped by it.
SOCKET_BUFFER: Final = 4 << 20


class _Peer:
    """One session: its address, its channel, and the chat-side bookkeeping.

    It is what the hub keys members by and what the fan-out pushes to
    (``common.ports.Recipient``); every field is guarded by the server's lock.
    """

    __slots__ = (
        "__weakref__",  # so tests can check that a dropped session is really freed
        "addr",
        "born",
        "bucket",
        "channel",
        "close_deadline",
        "closing",
        "due",
        "held",
        "liveness",
        "name",
        "server",
        "token",
        "vetting",
        "view",
    )

    def __init__(self, token: int, addr: tuple[str, int], channel: Channel, server: ChatServer, now: float) -> None:
        self.token = token
        self.addr = addr
        self.born = now
        self.name = f"{addr[0]}:{addr[1]}"
        self.channel = channel
        self.server = server
        self.view: ClientView | None = None  # UDP clients speak frames
        self.bucket = TokenBucket(server.rate_limit, now)
        self.liveness = Liveness(now, register_timeout=server.register_timeout)
        self.held: deque[ev.Event | ProtocolError] = deque()  # waiting for rate-limit tokens or a verdict
        self.vetting = False  # a password of it is being checked; what it says next waits
        self.closing = False  # its Goodbye is queued; the hub has forgotten it
        self.close_deadline = 0.0
        self.due = math.inf  # when its entry in the server's timer heap fires

    def __repr__(self) -> str:
        return f"<peer {self.name} {self.token:016x}>"

    def push(self, batch: Batch, last: bool) -> bool:
        """Queue ``batch`` on the channel, a frame a reliable unit (lock held)."""
        if self.closing:
            return True  # its last event is queued already; nothing follows it
        parts = batch.parts
        # The run joined once for every recipient: a run that fits one bundle
        # (the common case) is that and a header (PROTOCOL.md, Sequenced data).
        if self.channel.send_all(parts, force=last, joined=batch.data) < len(parts):
            log.debug("%s is not keeping up; cut off", self.name)
            self.server._count("slow consumer")
            return False
        # The pusher may be another transport's thread (one process serving
        # TCP and UDP from one hub): wake the pump, as for anything else.
        self.server._mark(self)
        if last:
            self.closing = True
            self.close_deadline = time.monotonic() + LINGER
        return True


class ChatServer:
    """A chat server on one UDP port; see the module docstring.

    The socket is bound in the constructor (so ``address`` is known at once,
    ``port=0`` included). ``start()`` runs the threads in the background;
    ``serve_forever()`` runs them until ``stop()`` (safe in a signal handler);
    ``shutdown()`` says goodbye to every peer and releases everything.
    """

    def __init__(  # noqa: PLR0915 (one assignment per piece of state, each with its why)
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_per_host: int = servercli.DEFAULT_MAX_PER_HOST,
        rate_limit: float = DEFAULT_RATE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        register_timeout: float = DEFAULT_REGISTER_TIMEOUT,
        max_queue: int = DEFAULT_MAX_QUEUE,
        unreliable: bool = False,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        rooms_per_member: int = DEFAULT_ROOMS_PER_MEMBER,
        data_dir: str = "",
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        redis_url: str = "",
        heartbeat: float = 0.0,
        reuse_port: bool = False,
        replay: int = DEFAULT_REPLAY,
        shared: servercli.SharedHub | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.rate_limit = rate_limit
        self.idle_timeout = idle_timeout
        self.register_timeout = register_timeout
        self.max_queue = max_queue
        self.unreliable = unreliable
        #: What was refused and why (garbage, spoofed, ...) and other events, for logs and tests.
        self.counters: Counter[str] = Counter()
        self._count_lock = threading.Lock()

        self._random = random
        self._cookies = CookieJar(random)
        # The hub and its lock, this server's own or shared with other
        # transports in one process (twinchat.server): one chat, one order.
        # Made here, it is this server's to close (and its store with it).
        # Bound first: a port in use is the clearer error, and costs no store.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            if reuse_port:  # several server processes share the port (servercli's --reuse-port)
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._owns_shared = shared is None
        if shared is None:
            try:
                store = servercli.open_store(data_dir, history_limit, redis_url, heartbeat)
            except BaseException:
                self._sock.close()
                raise
            shared = servercli.SharedHub.make(max_clients, max_rooms, rooms_per_member, store=store, replay=replay)
        self._shared = shared
        self._hub: Hub[_Peer] = shared.hub
        self._lock = shared.lock  # the hub, the peer tables, every channel
        self._wake = threading.Condition(self._lock)  # the pump waits here for work
        self._gone = threading.Condition(self._lock)  # shutdown waits here for peers to leave
        self._peers: dict[int, _Peer] = {}
        self._by_addr: dict[tuple[str, int], _Peer] = {}
        # Sessions by source address, so that one host's unregistered sessions
        # can be counted (--max-per-host): a host that opens many and never
        # registers must not crowd out the others (issue 15).
        self._by_host: dict[str, dict[_Peer, None]] = {}
        self.max_per_host = max_per_host
        self.max_clients = max_clients
        self._dirty: dict[_Peer, None] = {}  # peers whose channel has something to send, in order
        self._timers: list[tuple[float, int]] = []  # heap of (due, token); see the module docstring
        self._pump_until = 0.0  # when the pump wakes next unless woken (lock)
        self._freed = 0  # bytes held by sessions forgotten since the last trim (lock)
        self._receiving = False  # the receiver holds the lock and will send what is due itself
        self._send_lock = threading.Lock()  # taken under the hub lock, held while sending
        self._stopping = threading.Event()  # serve_forever returns
        self._halt = False  # the threads end (lock)
        self._threads: list[threading.Thread] = []
        self._shut = False
        self._shut_lock = threading.Lock()
        # For the metrics: bytes received (receiver thread only), sent in
        # sessions (send lock) and in handshakes (receiver thread only).
        self._bytes_in = self._bytes_out = self._handshake_out = 0
        shared.metrics.watch("udp", self)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on."""
        name = self._sock.getsockname()
        return name[0], name[1]

    @property
    def metrics(self) -> Metrics:
        """What this server's process reports (``Metrics.render()`` gives the page)."""
        return self._shared.metrics

    def stats(self) -> TransportStats:
        """This transport's figures for the metrics: one pass over the sessions
        under the lock (a channel's loss count is two numbers that move together)."""
        with self._lock:
            return self._stats()

    def _stats(self) -> TransportStats:
        with self._count_lock:
            counted = dict(self.counters)
        # The channels of forgotten sessions were added to the counters; the open ones keep theirs.
        retransmitted = counted.pop("retransmitted segments", 0)
        lost = counted.pop("lost segments", 0)
        duplicates = counted.pop("duplicate segments", 0)
        for peer in self._peers.values():
            channel = peer.channel
            retransmitted += channel.retransmits
            lost += channel.lost
            duplicates += channel.duplicates
        return TransportStats(
            "udp",
            {"framed": len(self._peers)},  # UDP clients speak frames
            self._bytes_in,
            self._bytes_out + self._handshake_out,
            retransmitted=retransmitted,
            lost=lost,
            duplicates=duplicates,
            events=counted,
        )

    def peer_count(self) -> int:
        """Sessions open now, closing ones included (for tests)."""
        with self._lock:
            return len(self._peers)

    # --- running -----------------------------------------------------------------

    def start(self) -> None:
        """Start the receiver and the pump in the background (not after a shutdown)."""
        # Under the shutdown lock, and published only once started: a shutdown
        # racing this start then finds no threads, or threads it can join.
        with self._shut_lock:
            if self._threads or self._shut:
                return
            threads = [
                threading.Thread(target=self._receive_loop, name="udpchat-receiver", daemon=True),
                threading.Thread(target=self._pump_loop, name="udpchat-pump", daemon=True),
            ]
            for thread in threads:
                thread.start()
            self._threads = threads

    def serve_forever(self) -> None:
        """Serve until ``stop()`` or ``shutdown()``."""
        self.start()
        while not self._stopping.wait(0.5):
            pass

    def stop(self) -> None:
        """Make ``serve_forever`` return; safe from a signal handler."""
        self._stopping.set()

    def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Say goodbye to every peer, wait up to ``SHUTDOWN_FLUSH`` seconds for
        them to acknowledge it, then stop the threads and close the socket.
        Idempotent."""
        with self._shut_lock:
            if self._shut:
                return
            self._shut = True
        self.stop()
        deadline = time.monotonic() + SHUTDOWN_FLUSH
        with self._lock:
            if self._threads:
                log.info("shutting down: goodbye to %d session(s)", len(self._peers))
                self._shared.courier.flush()  # what was said goes out before the goodbyes
                self._deliver(self._hub.shutdown(reason), time.monotonic())
                now = time.monotonic()
                for peer in self._peers.values():
                    peer.closing = True  # pending ones included: the hub forgot them all
                    peer.close_deadline = min(peer.close_deadline or deadline, deadline)
                    self._schedule(peer, now)
                while self._peers and (left := deadline - time.monotonic()) > 0:
                    self._gone.wait(left)
            if self._peers:
                with self._count_lock:
                    self.counters["unanswered goodbyes at shutdown"] += len(self._peers)
                for peer in list(self._peers.values()):
                    self._forget(peer)  # its segments counted, and nothing counts them again
            self._halt = True
            self._wake.notify_all()
        with contextlib.suppress(OSError):
            # Wake the receiver out of recvfrom.
            self._sock.sendto(b"", self.address)
        for thread in self._threads:
            thread.join(1.0)
        self._sock.close()
        if self._owns_shared:
            self._shared.close()
        log.info("shut down: %s", servercli.counts(self.counters))

    # --- receiving ---------------------------------------------------------------

    def _receive_loop(self) -> None:
        recvfrom = self._sock.recvfrom
        while True:
            try:
                batch = [recvfrom(RECV_SIZE)]
            except OSError:
                if self._halt:
                    return
                continue  # an ICMP error from an earlier send to a vanished peer
            # Take what else is waiting, so one lock and one wake-up of the
            # pump serve many datagrams, and the pump packs their fan-out.
            with contextlib.suppress(OSError):
                while _DONTWAIT and len(batch) < READ_BURST:
                    batch.append(recvfrom(RECV_SIZE, _DONTWAIT))
            self._bytes_in += sum(len(data) for data, _ in batch)
            if self._halt:
                return
            self._datagrams(batch, time.monotonic())

    def _count(self, what: str) -> None:
        with self._count_lock:
            self.counters[what] += 1

    def _refuse(self, what: str, addr: tuple[str, int], detail: object = "") -> None:
        self._count(what)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s from %s:%s %s", what, addr[0], addr[1], detail)

    def _datagrams(self, batch: list[tuple[bytes, tuple[str, int]]], now: float) -> None:
        """Judge a batch of datagrams; feed the sessions' ones to their peers under one lock."""
        sessions: list[tuple[int, Parsed, tuple[str, int]]] = []
        for data, addr in batch:
            if not data:
                continue  # the shutdown's wake-up call, or an empty probe
            # Data and plain Acks without a dataclass each; anything else
            # (a handshake, an Ack with ranges, garbage) in full.
            parsed = parse_session(data)
            if parsed is not None:
                sessions.append((parsed[0], (parsed[1], parsed[2]), addr))
                continue
            try:
                frames = decode_datagram(data)
            except RemoteProtocolError as exc:
                self._refuse("garbage", addr, exc)
                continue
            first = frames[0]
            if type(first) is ev.Session:
                sessions.append((first.token, frames[1:], addr))
            elif type(first) is ev.Hello and len(frames) == 1:
                self._guarded(self._hello, first, len(data), addr, now)
            else:
                self._refuse("unexpected", addr, type(first).__name__)
        if sessions:
            with self._lock:
                self._receiving = True
                try:
                    for token, segments, addr in sessions:
                        self._guarded(self._session_datagram, token, segments, addr, now)
                    out = self._collect(now, tick=False)
                finally:
                    self._receiving = False
                self._send_lock.acquire()
            self._send_all(out)

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            # A bug must not cost the server its only receiver, nor the batch.
            log.exception("datagram from %s", args[-2])

    def _session_datagram(self, token: int, segments: Parsed, addr: tuple[str, int], now: float) -> None:
        """One datagram of a session, its frames after ``Session`` (lock held)."""
        peer = self._peers.get(token)
        if peer is None or peer.addr != addr:
            self._refuse("spoofed", addr, f"token {token:016x}")
            return
        try:
            if isinstance(segments, tuple):
                chunks = peer.channel.receive_parsed(segments[0], segments[1], now)
            else:
                chunks = peer.channel.receive(segments, now)
        except RemoteProtocolError as exc:
            self._refuse("garbage", addr, exc)
            return
        if chunks and not peer.closing:
            items: list[ev.Event | ProtocolError] = []
            for chunk in chunks:
                try:
                    items.append(decode_frame(chunk))
                except RemoteProtocolError as exc:
                    items.append(exc)
            self._handle(peer, items, now)
        if peer.channel.wants_to_send or (peer.closing and peer.channel.flushed):
            self._mark(peer)  # a closing peer that acknowledged everything is forgotten there
        else:
            self._schedule(peer, now)  # an ack may have started the loss timer

    def _handle(self, peer: _Peer, items: list[ev.Event | ProtocolError], now: float) -> None:
        """Feed what ``peer`` said to the hub, as the rate limit allows (lock held).

        An event with a password stops the batch: it is checked on a thread of
        its own (hashing takes tens of milliseconds, and this is the thread
        that receives for everyone), and what the peer said after it waits in
        ``held`` until the verdict is in the hub.
        """
        held = peer.held
        if peer.vetting:
            held.extend(items)
            items = []
        elif held and not self.rate_limit:
            items = [*held, *items]
            held.clear()
        if self.rate_limit and not peer.vetting:
            held.extend(items)
            items = []
            bucket = peer.bucket
            while held and bucket.take(now):
                items.append(held.popleft())
        if len(held) > MAX_HELD:
            held.clear()
            log.debug("%s floods; dropped", peer.name)
            self._count("flooding")
            self._deliver(self._hub.kick(peer, ErrorCode.RATE_LIMITED, "sending too fast"), now)
            return
        hub = self._hub
        out: list[Delivery[_Peer]] = []
        wall = time.time()
        for index, item in enumerate(items):
            if needs_vetting(item) and not (type(item) is ev.Register and hub.nick_of(peer) is not None):
                held.extendleft(reversed(items[index + 1 :]))
                peer.vetting = True
                peer.liveness.checking(now, on=True)
                threading.Thread(target=self._vet, args=(peer, item), name=f"vet {peer.name}", daemon=True).start()
                break
            if isinstance(item, ProtocolError):
                self._refuse("bad frame", peer.addr, item)
            elif type(item) is ev.Register and hub.nick_of(peer) is None:
                out += self._evict_ghost(peer, item.nick)
            if self.unreliable and type(item) is ev.Register and (nick := hub.nick_of(peer)) is not None:
                # Without retransmission a client repeats its Register until it
                # is answered; the Welcome may be what was lost, so say it again.
                out.append(Delivery((peer,), ev.Welcome(nick, len(hub.nicks()))))
            else:
                out += hub.take(peer, (item,), wall)
        self._deliver(out, now)

    def _vet(self, peer: _Peer, event: AccountEvent) -> None:
        """Check ``event``'s password (no lock held), then give the hub the
        verdict and go on with what ``peer`` said after it."""
        vetted = self._shared.vet(peer, peer.addr[0], event)
        with self._lock:
            peer.vetting = False
            peer.liveness.checking(time.monotonic(), on=False)
            if peer.closing or self._peers.get(peer.token) is not peer:
                return
            out: list[Delivery[_Peer]] = []
            if isinstance(event, ev.Register) and self._hub.nick_of(peer) is None:
                out += self._evict_ghost(peer, event.nick)
            out += self._hub.take(peer, (vetted,), time.time())
            now = time.monotonic()
            self._deliver(out, now)
            self._handle(peer, [], now)
            if peer.channel.wants_to_send:
                self._mark(peer)

    def _evict_ghost(self, peer: _Peer, nick: str) -> list[Delivery[_Peer]]:
        """Free ``nick`` for ``peer`` if a ghost of the same host holds it (lock held).

        A client that gave up waiting for its Welcome (lost, or its acks lost)
        leaves a session that registered and never acknowledged anything. Its
        retry comes from a new port of the same address: that is most likely
        the same person, and the ghost never confirmed it can hear us, so the
        retry gets the nick rather than ``NICK_TAKEN`` (issue 15 item 1).
        """
        ghost = self._hub.holder(nick)
        if (
            not isinstance(ghost, _Peer)  # nobody, or a member of another transport (one process)
            or ghost is peer
            or ghost.closing
            or ghost.addr[0] != peer.addr[0]
            or ghost.channel.heard_ack
            or self.unreliable
        ):
            return []
        log.debug("%s: replaced by a new session from %s", ghost.name, peer.name)
        self._count("ghosts replaced")
        out = self._hub.disconnect(ghost, "replaced by a new session")
        self._forget(ghost)
        return out

    # --- the handshake -----------------------------------------------------------

    def _hello(self, hello: ev.Hello, size: int, addr: tuple[str, int], now: float) -> None:
        if size < MAX_DATAGRAM:
            # Answering a short Hello would let a spoofer aim more bytes than it sent.
            self._refuse("short hello", addr, size)
            return
        key = f"{addr[0]}:{addr[1]}".encode()
        if not hello.cookie:
            self._send_now(encode(ev.Cookie(self._cookies.issue(key, now))), addr)
            return
        if not self._cookies.check(hello.cookie, key, now):
            self._refuse("bad cookie", addr)
            # Perhaps only expired: a fresh one lets an honest client go on.
            self._send_now(encode(ev.Cookie(self._cookies.issue(key, now))), addr)
            return
        with self._lock:
            if self._halt or self._stopping.is_set():
                return
            peer = self._by_addr.get(addr)
            if peer is not None and peer.closing:
                self._forget(peer)  # a new session from the same address replaces an ending one
                peer = None
            if peer is None:
                why = self._crowded(addr[0])
                if why:
                    # No session, no answer: the Hello cost us one HMAC.
                    self._refuse(why, addr)
                    return
                peer = self._open(addr, now)
            token = peer.token
        # Sent again for every valid Hello: the client retries until it has one.
        self._send_now(encode(ev.Accept(token, self.unreliable)), addr)

    def _crowded(self, host: str) -> str:
        """Why a new session from ``host`` is refused, or "" (lock held).

        Unregistered sessions are bounded per source address, and sessions of
        every kind by ``2 * max_clients + 16`` (as TCP bounds sockets): the
        hub's limit counts members only, so unregistered sessions never take a
        member's room.
        """
        hub = self._hub
        if self.max_per_host:
            pending = 0
            for peer in self._by_host.get(host, ()):
                if not peer.closing and hub.nick_of(peer) is None:
                    pending += 1
            if pending >= self.max_per_host:
                return "too many unregistered from one host"
        if self.max_clients and len(self._peers) >= 2 * self.max_clients + 16:
            return "too many sessions"  # as TCP's cap on open sockets
        return ""

    def _open(self, addr: tuple[str, int], now: float) -> _Peer:
        """A new session for ``addr`` (lock held)."""
        token = 0
        while token == 0 or token in self._peers:
            token = int.from_bytes(self._random(8), "big")
        channel = Channel(
            now,
            prefix=encode(ev.Session(token)),
            reliable=not self.unreliable,
            max_backlog=self.max_queue,
            keepalive_after=max(TICK, self.idle_timeout / 4),
            dead_after=self.idle_timeout,
        )
        peer = _Peer(token, addr, channel, self, now)
        self._peers[token] = peer
        self._by_addr[addr] = peer
        self._by_host.setdefault(addr[0], {})[peer] = None
        log.debug("session %016x for %s", token, peer.name)
        servercli.log_connected(peer.name)
        self._deliver(self._hub.connect(peer), now)
        self._schedule(peer, now)
        return peer

    def _send_now(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send a handshake's answer (receiver thread)."""
        try:
            self._handshake_out += self._sock.sendto(datagram, addr)
        except OSError as exc:
            log.debug("sendto %s: %s", addr, exc)

    # --- delivering --------------------------------------------------------------

    def _mark(self, peer: _Peer) -> None:
        """``peer``'s channel has something to send: wake the pump (lock held)."""
        if not self._dirty and not self._receiving:
            self._wake.notify()
        self._dirty[peer] = None

    def _deliver(self, deliveries: list[Delivery[_Peer]], now: float) -> None:
        """Queue ``deliveries`` on the recipients' channels in order (lock held).
        A peer whose channel overflows is cut off by the fan-out, as on every
        transport."""
        if deliveries:
            self._shared.post(deliveries)  # now or once stored; each push wakes the pump

    def _forget(self, peer: _Peer) -> None:
        """Remove ``peer``'s session for good (lock held)."""
        peer.closing = True
        if self._peers.get(peer.token) is peer:
            del self._peers[peer.token]
            self._freed += peer.channel.held_bytes
            self._tally(peer.channel)
        if self._by_addr.get(peer.addr) is peer:
            del self._by_addr[peer.addr]
        same_host = self._by_host.get(peer.addr[0])
        if same_host is not None:
            same_host.pop(peer, None)
            if not same_host:
                del self._by_host[peer.addr[0]]
        self._dirty.pop(peer, None)
        self._gone.notify_all()

    def _tally(self, channel: Channel) -> None:
        """Add a session's segment counts to the counters, once, as it ends."""
        with self._count_lock:
            # Zero counts are not stored, so the shutdown log lists what happened.
            for what, count in (
                (SEGMENTS_SENT, channel.sent),
                (SEGMENTS_LOST, channel.lost),
                (SEGMENTS_RESENT, channel.retransmits),
                (SEGMENTS_DUPLICATE, channel.duplicates),
            ):
                if count:
                    self.counters[what] += count

    # --- the pump: sending and timers --------------------------------------------

    def _pump_loop(self) -> None:
        while True:
            with self._lock:
                while not self._dirty and not self._halt:
                    now = time.monotonic()
                    self._pump_until = min(self._timers[0][0], now + PUMP_NAP) if self._timers else now + PUMP_NAP
                    if self._pump_until <= now:
                        break
                    self._wake.wait(self._pump_until - now)
                self._pump_until = 0.0  # awake: nothing to wake it for
                if self._halt:
                    return
                now = time.monotonic()
                tick = bool(self._timers) and self._timers[0][0] <= now
                if tick and self._timers_may_wait(now):
                    # Datagrams wait unread, acks among them perhaps: the
                    # receiver reads them first (the wait lets go of the lock).
                    self._wake.wait(TIMER_GRACE / 4)
                    now = time.monotonic()
                    tick = False
                out = self._collect(now, tick=tick)
                trim = self._freed >= TRIM_AFTER and _TRIM is not None
                if trim:
                    self._freed = 0
                self._send_lock.acquire()
            self._send_all(out)
            if trim and _TRIM is not None:
                _TRIM(0)  # outside the lock: it takes a few milliseconds

    def _timers_may_wait(self, now: float) -> bool:
        """Whether the timers due now may wait for the receiver: datagrams are
        waiting in the socket and the earliest timer is less than
        ``TIMER_GRACE`` late (lock held).

        Why: on a machine whose other users take the server's core, the
        pump can wake for a retransmission timeout while the acks that would
        cancel it sit unread, and resend what already arrived. (In the
        saturated scenario on such a machine the server resent up to 3% of
        its segments, and every one arrived twice: none had been lost.)
        """
        if not _DONTWAIT or not self._timers or now >= self._timers[0][0] + TIMER_GRACE:
            return False  # without MSG_DONTWAIT a peek could block the pump
        try:
            self._sock.recv(1, _PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # nothing waits
        except OSError:
            return False  # an ICMP error from an earlier send: not an ack
        return True

    def _send_all(self, out: list[tuple[tuple[str, int], list[bytes]]]) -> None:
        """Send what ``_collect`` gathered, then release the send lock.

        The caller takes the send lock before it lets go of the hub lock, so
        datagrams leave in the order the channels made them, whichever thread
        sends; the hub lock is not held meanwhile: ``sendto`` on UDP never waits
        for a peer, so the receiver sending delays nobody.
        """
        sendto = self._sock.sendto
        sent = 0
        try:
            for addr, datagrams in out:
                for datagram in datagrams:
                    try:
                        sent += sendto(datagram, addr)
                    except OSError as exc:
                        log.debug("sendto %s: %s", addr, exc)
        finally:
            self._bytes_out += sent
            self._send_lock.release()

    def _collect(self, now: float, tick: bool) -> list[tuple[tuple[str, int], list[bytes]]]:
        """The datagrams due now, by address: from the dirty channels, and on a
        tick from the channels whose timers are due, once those have run (lock held)."""
        targets: dict[_Peer, None] = {}
        if tick:
            try:
                targets = dict.fromkeys(self._run_timers(now))
            except Exception:
                log.exception("timers failed")
        targets.update(self._dirty)
        self._dirty.clear()
        out = []
        peers = self._peers
        for peer in targets:
            if peers.get(peer.token) is not peer:
                continue  # forgotten by a timer of this pass
            datagrams = peer.channel.datagrams(now)
            if datagrams:
                out.append((peer.addr, datagrams))
            if peer.closing and peer.channel.flushed:
                self._forget(peer)
            else:
                self._schedule(peer, now)
        return out

    def _deadline(self, peer: _Peer, now: float) -> float:
        """When ``peer`` next has a timer to run, at the latest (lock held)."""
        due = peer.channel.next_deadline()
        if peer.closing:
            return min(due, peer.close_deadline)
        if peer.held:
            due = min(due, now + peer.bucket.wait_time(now))
        if self._hub.nick_of(peer) is None or not (peer.channel.heard_ack or self.unreliable):
            # The registration and the unconfirmed-session timeouts (both strict: a hair after).
            due = min(due, peer.born + self.register_timeout + 1e-3)
        return due

    def _schedule(self, peer: _Peer, now: float) -> None:
        """Put ``peer`` in the timer heap at its next deadline, if that is earlier than its entry (lock held)."""
        # Never sooner than a TICK from now: a deadline its pass did not move
        # (a keepalive waiting for segments in flight) must not spin the pump.
        due = max(self._deadline(peer, now), now + TICK)
        if due >= peer.due:
            return  # its entry fires first and finds out
        peer.due = due
        timers = self._timers
        heapq.heappush(timers, (due, peer.token))
        if len(timers) > 4 * len(self._peers) + 64:
            # Entries moved earlier pile up under traffic: keep one per peer.
            timers[:] = [(p.due, t) for t, p in self._peers.items() if p.due < math.inf]
            heapq.heapify(timers)
        if due < self._pump_until:
            self._wake.notify()  # the pump sleeps past it

    def _run_timers(self, now: float) -> list[_Peer]:
        """Run the timers of the peers due by ``now``; return those still open (lock held).

        Expire the dead, the unregistered and the closing; release held events.
        """
        timers = self._timers
        peers = self._peers
        due: list[_Peer] = []
        while timers and timers[0][0] <= now:
            when, token = heapq.heappop(timers)
            peer = peers.get(token)
            if peer is not None and peer.due == when:
                peer.due = math.inf  # no entry now: _collect puts it back
                due.append(peer)
        hub = self._hub
        out: list[Delivery[_Peer]] = []
        for peer in due:
            if peer.closing:
                if now >= peer.close_deadline or peer.channel.is_dead(now):
                    if self._stopping.is_set() and not peer.channel.flushed:
                        # The shutdown counts those it still sees; this one went at the same deadline.
                        self._count("unanswered goodbyes at shutdown")
                    self._forget(peer)
                continue
            if peer.channel.is_dead(now):
                log.debug("%s silent for %g s; dropped", peer.name, self.idle_timeout)
                self._count("expired")
                out += hub.disconnect(peer, f"timed out after {self.idle_timeout:g} s of silence")
                self._forget(peer)
            elif peer.liveness.due(now, registered=hub.nick_of(peer) is not None) is Due.REGISTRATION_TIMEOUT:
                log.debug("%s did not register in time", peer.name)
                out += hub.kick(peer, ErrorCode.REGISTRATION_TIMEOUT, "no nick registered in time")
            elif not peer.channel.heard_ack and not self.unreliable and now - peer.born > self.register_timeout:
                # Registered, yet it never acknowledged its Welcome nor anything
                # since: its client gave up (or never listened). Holding the nick
                # until the idle timeout would leave a ghost in everyone's /who.
                log.debug("%s never confirmed its session; dropped", peer.name)
                self._count("unconfirmed")
                out += hub.disconnect(peer, "never confirmed its session")
                self._forget(peer)
            elif peer.held:
                self._handle(peer, [], now)
        self._deliver(out, now)
        return due


def _trimmer() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere.

    Why: a deaf session's backlog is a megabyte of small segments (about 1.2
    kB each), which glibc carves from its heaps rather than mapping one by
    one. Once the session is dropped, Python frees them all, but glibc keeps
    the pages: 150 deaf sessions left the server's RSS 150 MB higher for good
    (``tools/deaf_waves.py``). Asking for a trim after a lot was freed hands
    the pages back.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl has no malloc_trim)
    return trim


_TRIM: Final = _trimmer()


# --- command line ----------------------------------------------------------------

_DEFAULTS: Final = servercli.Defaults(
    port=DEFAULT_PORT,
    max_clients=DEFAULT_MAX_CLIENTS,
    idle_timeout=DEFAULT_IDLE_TIMEOUT,
    idle_help="drop a client silent this long; keepalives go out at a quarter",
    register_timeout=DEFAULT_REGISTER_TIMEOUT,
    max_queue=DEFAULT_MAX_QUEUE,
    max_queue_help="bytes held for a client (unacknowledged or waiting) after which it is cut off as too slow",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    prog = "udpchat-server"
    p = servercli.parser(prog, "The twinchat UDP chat server.", _DEFAULTS)
    p.add_argument(
        "--unreliable",
        action="store_true",
        help="no acknowledgements, no retransmission: raw datagrams, losses counted",
    )
    args = p.parse_args(argv)

    def build() -> ChatServer:
        return ChatServer(args.host, args.port, unreliable=args.unreliable, **servercli.options(args))

    return servercli.run(args, build, prog=prog, mode="(unreliable)" if args.unreliable else "")


if __name__ == "__main__":
    sys.exit(main())
