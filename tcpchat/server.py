"""The threaded TCP chat server: ``python -m tcpchat.server``.

Strategy: the chat rules live in ``common.chat.hub``; this module only owns the
sockets, the threads and the clock, and drives the hub.

Threads:

- the **accept loop** (``serve_forever``) takes connections and starts the
  reader of each one;
- a **reader** per connection: one ``recv`` brings a batch of bytes; it is
  decoded whole (framed or line dialect), and the whole batch goes through the
  hub under the one hub lock. Its deliveries are queued *before* the lock is
  released, which is what gives every member one total order;
- a **writer** per connection: it sleeps on that connection's outbound queue
  and sends everything queued in one ``sendall``. When nothing is queued or in
  flight, whoever delivers tries a non-blocking ``send`` first (still under the
  hub lock, so the order holds) and queues only what the kernel did not take:
  an idle chat costs no thread wake-up per recipient, and a stuck socket still
  never blocks anyone but its own writer. The writer is started by the first
  thing queued (at the latest the close mark): a member whose kernel buffer
  always takes its chat never needs one, so an idle connection costs one
  thread, not two (issue 12: some 16 KB of RSS and a thread start each, and
  10,000 connections would otherwise need 20,000 threads);
- a **housekeeper** that ticks a few times a second: registration timeout,
  pings, idle timeout, and the deadline of connections that are closing. It
  keeps a heap of (deadline, connection) and looks only at the connections
  whose deadline has come, not at all of them under the hub lock on every
  tick (issue 12): an entry is never moved later (a reader hearing from its
  peer takes no lock for that), so it may fire early, find nothing due, and
  go back in at the connection's new deadline.

Deliveries go out through ``common.fanout``, the one delivery path of every
transport: each run of events is encoded once whatever the number of
recipients, a text-dialect user's lines are rendered from the view the server
keeps for them (``common.session.text``), and a connection whose queue would
pass ``max_queue`` bytes is cut off as a slow consumer: only its
``Error(SLOW_CONSUMER)`` and ``Goodbye`` are still queued, the others get the
leave notice at once, and nobody waits for it. Memory is thus bounded by
``max_queue`` per connection (plus its farewell) and one read batch per reader.

TLS (``--tls-cert``): each connection's reader runs the handshake, then
reads records and hands their plaintext on as above; ``push`` encrypts under
the hub lock and the queue and writer carry records. The SSL object is never
handed the socket, so no two threads use it at once (``tcpchat.tls``).

HTTP and WebSocket (``twinchat.web``): a connection whose first bytes are
an HTTP request gets one answer from the route table (the page, its files,
404...) and is closed, or is upgraded at ``/ws``: from then on its reader
feeds a ``WsLink`` (each message an event or a line, as the first message
chose) and ``push`` sends each event as a message, below TLS if any. The
connection is otherwise a framed or text one, with every rule above.

Closing: a ``Goodbye`` delivered to a connection is its last event. Its writer
sends what is queued, then half-closes (FIN after the data, so the peer reads
everything), and the reader drains until the peer closes too, within
``LINGER`` seconds; the last of the two threads to finish closes the socket.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import queue
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, cast

from common import fanout
from common.chat import events as ev
from common.chat.hub import DEFAULT_MAX_ROOMS, DEFAULT_REPLAY, DEFAULT_ROOMS_PER_MEMBER, Delivery, Hub, Vetted
from common.chat.log import DEFAULT_HISTORY_LIMIT
from common.chat.view import ClientView
from common.ports import Batch
from common.session.liveness import Due, Liveness
from common.session.ratelimit import DEFAULT_RATE, TokenBucket
from common.session.text import TextSession
from common.wire.errors import ErrorCode, FrameRejected, ProtocolError, RemoteProtocolError
from common.wire.framing import StreamDecoder
from common.wire.limits import DEFAULT_PORT
from common.wire.lines import Dialect, LineDecoder, detect_dialect
from tcpchat.tls import TlsLink, TlsSetupError, server_context
from twinchat import servercli
from twinchat.gatekeeper import ACCOUNT_TYPES, AccountEvent, needs_vetting
from twinchat.metrics import CONTENT_TYPE as METRICS_TYPE
from twinchat.metrics import Metrics, TransportStats
from twinchat.web import http
from twinchat.web.websocket import LastWrapped, Mode, Received, Refused, WsLink

log = logging.getLogger("tcpchat.server")


#: Bytes a connection may have queued and unsent before it is cut off as a slow
#: consumer. 1 MiB is 16 frames at the 64 KiB cap, or some 20,000 ordinary chat
#: lines, on top of what the kernel buffers already hold: a client that falls
#: that far behind is stuck, not slow. It also keeps a benchmark client that
#: lags for a moment (a burst of 10 senders) from being cut off, while 1,000
#: stuck clients cost at most 1 GiB.
DEFAULT_MAX_QUEUE: Final = 1 << 20

#: Seconds of silence before a framed client is dropped (it is pinged at half).
DEFAULT_IDLE_TIMEOUT: Final = 60.0

#: Seconds a new connection has to register a nick: a person at ``nc`` gets no
#: prompt and has to type one, a program sends it at once.
DEFAULT_REGISTER_TIMEOUT: Final = 10.0

#: Registered members at once unless told otherwise (unregistered connections
#: are bounded by --max-per-host and by twice this plus 16 sockets in all).
DEFAULT_MAX_CLIENTS: Final = 1000

#: Seconds of silence from a new connection after which it is taken for a
#: person at ``nc`` and greeted. A framed client sends its Register at once, so
#: a connection that has said nothing for this long is not one; the greeting is
#: a text line, which a framed client would take for a bad magic.
GREET_AFTER: Final = 1.0

#: What a silent new connection is told (PROTOCOL.md, "The text dialect").
GREETING: Final = b"* welcome to twinchat: type a nick and press Enter\n"

#: Connections the kernel may hold completed and not yet accepted. At 128 a
#: storm of reconnects (a server restart, every client back at once) overflows
#: it, the kernel drops SYNs and clients wait 1, 3, 7 s to retry; the kernel
#: caps this at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG: Final = 4096

#: Seconds a closing connection has to flush and close before it is aborted.
LINGER: Final = 2.0

#: Seconds the shutdown gives writers to flush before it aborts the sockets.
SHUTDOWN_FLUSH: Final = 1.0

#: Stack of each connection thread. Python code runs on its own frame stack,
#: so a reader's C stack stays shallow (decode, hub, fan-out, send); the
#: default of 8 MiB only reserves address space (the RSS is the pages
#: touched, about the same either way), but 10,000 connections reserved 80
#: GiB of it. 512 KiB leaves a wide margin for deep C calls (logging a
#: traceback, a regular expression) while keeping that to 5 GiB.
THREAD_STACK: Final = 512 << 10

#: Bytes asked of one recv: one batch. A whole frame at the cap fits.
RECV_SIZE: Final = 1 << 16

#: On Linux a blocking socket can still be written without blocking.
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)

#: What a greeted connection that never spoke is told at the registration
#: timeout: the kick a text-dialect user gets, rendered as its lines.
_SILENT_FAREWELL: Final = [
    (ClientView().render(event) or "").encode() + b"\n"
    for event in (
        ev.Error(ErrorCode.REGISTRATION_TIMEOUT, "no nick registered in time"),
        ev.Goodbye("no nick registered in time"),
    )
]

#: No events: pushed as a connection's last, it closes it after what is queued.
_NOTHING: Final = fanout.Encoded([])

#: What a reader hands on per batch: decoded events (or lines), and the errors in their place.
_Item = ev.Event | str | ProtocolError


def _routes(metrics: Metrics, allowed_origins: str) -> dict[str, http.Handler]:
    """What the port answers in HTTP, by path (``--allowed-origins``: which
    pages may open /ws); /metrics is the page --metrics serves, to peers on
    this machine only."""

    def metrics_page(request: http.Request) -> http.Response:
        return http.Response(200, metrics.render(), METRICS_TYPE)

    return http.routes(http.Origins.parse(allowed_origins), [("/metrics", http.loopback_only(metrics_page))])


class _Outbox(queue.SimpleQueue[bytes | None]):
    """A connection's outbound queue (None: close after this). Its first
    ``put`` goes to ``starter``, which starts the writer thread, or does
    what the writer would have done and returns True."""

    starter: Callable[[bytes | None], bool] | None = None

    def put(self, item: bytes | None, block: bool = True, timeout: float | None = None) -> None:
        if self.starter is not None and self.starter(item):
            return
        super().put(item)


class _Conn:
    """One client connection: its socket, its queue and its two threads.

    It is what the hub keys members by (identity hash) and what the fan-out
    pushes to (``common.ports.Recipient``). Fields marked *hub lock* are only
    written with the server's hub lock held.
    """

    def __init__(self, sock: socket.socket, peer: str, now: float, server: ChatServer) -> None:
        self.sock = sock
        self.peer = self.name = peer
        self.host = ""  # the source address, what --max-per-host counts by
        self.known = False  # the hub has had it: the hub logs its departure
        self.why = ""  # why it ends, for the log, when the hub never had it
        self.greeted = False  # silent at first, it was sent the greeting (hub lock)
        self.server = server
        self.view: ClientView | None = None  # a text-dialect user's, once the first bytes tell
        self.text: TextSession | None = None
        self.queue = _Outbox()  # None: close after this
        self.queue.starter = self._first_put
        self.enqueued = 0  # bytes ever put on the queue (hub lock)
        self.sent = 0  # bytes of the queue the writer has sent (writer thread only)
        self.closing = False  # nothing more is queued: Goodbye sent or cut (hub lock)
        self._close_deadline = 0.0
        self.serial = 0  # its key in the server's timer heap
        self.due = math.inf  # when its entry in that heap fires (hub lock)
        self.liveness = Liveness(now, register_timeout=server.register_timeout)
        self._done = 0  # threads finished; the second one closes the socket
        self._done_lock = threading.Lock()
        self.reader: threading.Thread | None = None
        self.writer: threading.Thread | None = None
        #: Its TLS session when the port speaks TLS: what goes through the
        #: socket is records, everything above it plaintext (``tcpchat.tls``).
        self.tls: TlsLink | None = None
        #: Its WebSocket once upgraded (hub lock): each event pushed is one
        #: message, below TLS if any (``twinchat.web.websocket``).
        self.ws: WsLink | None = None
        #: For the metrics: its dialect once its first bytes tell ("" before),
        #: bytes read and rate-limit waits (reader thread only; the server
        #: adds them to its totals when it forgets the connection).
        self.dialect = ""
        self.received = 0
        self.waits = 0

    def __repr__(self) -> str:
        return f"<conn {self.peer}>"

    @property
    def close_deadline(self) -> float:
        """When closing: abort the socket after this (hub lock)."""
        return self._close_deadline

    @close_deadline.setter
    def close_deadline(self, when: float) -> None:
        self._close_deadline = when
        if self.closing and when:
            self.server._arm(self, when)  # sooner than its entry, most likely

    def push(self, batch: Batch, last: bool, *, as_is: bool = False) -> bool:
        """Send ``batch`` now or queue it (hub lock held); see ``Recipient.push``.

        When nothing is queued nor in flight, the kernel may take it all at
        once with a non-blocking send, and the writer is not woken at all.
        Once the kernel has taken part of a batch, the rest is queued whatever
        the limit: refusing it would leave half a frame on the wire. So the
        limit is checked before anything is sent, and a queue may pass it by
        at most one batch.

        ``as_is``: the bytes are sent as they are, not as WebSocket messages
        (an HTTP response, a WebSocket pong).
        """
        if self.closing:
            return True  # its last event is queued already; nothing follows it
        ws = None if as_is else self.ws
        data = batch.data if ws is None else ws.wrap(batch.parts)
        backlog = self.enqueued - self.sent + len(data)
        if backlog > self.server.max_queue and not last and self.enqueued != self.sent:
            log.debug("%s is not reading; cut off", self.peer)  # the hub logs its departure
            return False
        if last and ws is not None:
            data += ws.close()  # the close frame follows the Goodbye
        if self.tls is not None:
            # Encrypted here, under the hub lock, and only once it is sure to
            # be sent (a record dropped would break the stream): records in
            # the queue's order.
            data = self.tls.encrypt(data)
            if last:
                data += self.tls.close_notify()
        self.server.bytes_out += len(data)
        if self.enqueued == self.sent and _DONTWAIT:
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = len(data)  # the peer is gone; its reader will see it and say so
            data = data[sent:]
        if data:
            backlog = self.enqueued - self.sent + len(data)
            self.server.peak_queued = max(self.server.peak_queued, backlog)
            self.enqueued += len(data)
            self.queue.put(data)
        if last:
            self.closing = True
            self.close_deadline = time.monotonic() + LINGER
            self.queue.put(None)  # the writer half-closes after the Goodbye
        return True

    def _first_put(self, item: bytes | None) -> bool:
        """The first thing queued: start the writer for it, or, for a close mark
        with nothing ever queued, half-close here; True if that was done.

        Called with the hub lock held, but for the shutdown's last aborts.
        """
        with self._done_lock:
            if self.queue.starter is None:
                return False
            self.queue.starter = None
        if item is None:
            # Everything pushed was taken by the kernel: the writer's last
            # act (FIN after the data) needs no thread of its own. At
            # shutdown, 10,000 idle members would otherwise start 10,000
            # writers just to half-close.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            if self.thread_done():  # the writer's share; never the last, the reader puts this mark
                self.sock.close()
            return True
        writer = threading.Thread(target=self.server._write_loop, args=(self,), name=f"write {self.peer}", daemon=True)
        try:
            writer.start()
            self.writer = writer  # only once started: the shutdown joins it
        except RuntimeError as exc:  # the machine is out of threads (or of memory for one)
            log.warning("%s: no writer thread (%s); dropped", self.peer, exc)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # its reader ends, and closes the socket
            if self.thread_done():  # the writer's share; the reader had finished already
                self.sock.close()
        return False

    def abort(self) -> None:
        """Wake both threads at once: recv returns b"", a blocked send fails."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.queue.put(None)

    def recv(self) -> bytes:
        """The next plaintext bytes from the peer (blocking); b"" at the end."""
        if self.tls is None:
            data = self.sock.recv(RECV_SIZE)
            self.received += len(data)
            return data
        while True:
            if self.tls.peer_closed:  # its close_notify: the end, even before its FIN
                return b""
            raw = self.sock.recv(RECV_SIZE)
            self.received += len(raw)
            if not raw:
                return b""
            plain = self.tls.feed(raw)
            if plain:
                return plain

    def thread_done(self) -> bool:
        """Count one finished thread; True for the second (it closes the socket)."""
        with self._done_lock:
            self._done += 1
            return self._done == 2


class ChatServer:
    """A threaded chat server on one TCP port, speaking both dialects.

    Bind and listen happen in the constructor (so ``address`` is known at
    once, ``port=0`` included); ``serve_forever()`` accepts until
    ``shutdown()`` is called from another thread, or ``stop()`` (safe in a
    signal handler) makes it return.
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
        max_rooms: int = DEFAULT_MAX_ROOMS,
        rooms_per_member: int = DEFAULT_ROOMS_PER_MEMBER,
        data_dir: str = "",
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        redis_url: str = "",
        heartbeat: float = 0.0,
        reuse_port: bool = False,
        replay: int = DEFAULT_REPLAY,
        shared: servercli.SharedHub | None = None,
        tls_cert: str = "",
        tls_key: str = "",
        allowed_origins: str = "",
    ) -> None:
        self.rate_limit = rate_limit
        self.idle_timeout = idle_timeout
        self.register_timeout = register_timeout
        self.max_queue = max_queue
        #: The largest backlog any connection has had queued, in bytes (for tests).
        self.peak_queued = 0

        # The hub and its lock, this server's own or shared with other
        # transports in one process (twinchat.server): one chat, one order.
        # Made here, it is this server's to close (and its store with it).
        # Bound first: a port in use is the clearer error, and costs no store.
        # The certificate is read before that: a bad one is the first fault.
        self._tls = _tls_context(tls_cert, tls_key)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # several server processes share the port (servercli's --reuse-port)
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._listener.bind((host, port))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._owns_shared = shared is None
        if shared is None:
            try:
                store = servercli.open_store(data_dir, history_limit, redis_url, heartbeat)
            except BaseException:
                self._listener.close()
                raise
            shared = servercli.SharedHub.make(max_clients, max_rooms, rooms_per_member, store=store, replay=replay)
        self._shared = shared
        self._hub: Hub[_Conn] = shared.hub
        self._lock = shared.lock  # the hub lock: the hub, every queue's order
        self._conns: set[_Conn] = set()  # hub lock
        # Beyond this many sockets, silent ones included, new ones are closed at once.
        self._hard_cap = 2 * max_clients + 16 if max_clients else 0
        # Connections per source address (hub lock): one host that opens many
        # and never registers must not crowd the others out (issue 15).
        self.max_per_host = max_per_host
        self._per_host: dict[str, int] = {}
        self._refused: dict[str, int] = {}  # connections refused per address in this streak (hub lock)
        self._nonces = itertools.count(1)
        # What the port answers in HTTP, by path (``--allowed-origins``: which pages may open /ws).
        self._routes = _routes(shared.metrics, allowed_origins)
        self._wrapped = LastWrapped()  # hub lock: a run wrapped once for every WebSocket it goes to
        self._serials = itertools.count(1)
        self._by_serial: dict[int, _Conn] = {}  # hub lock: the connections the timer heap can name
        self._timers: list[tuple[float, int]] = []  # heap of (due, serial); see the module docstring
        self._pending: set[_Conn] = set()  # hub lock: not registered yet, looked at on every tick
        self._accept_failing = False  # accept() is failing (out of descriptors), logged once
        # For the metrics (hub lock): bytes pushed, and the forgotten
        # connections' bytes read and rate-limit waits (the open ones keep theirs).
        self.bytes_out = 0
        self._gone_received = 0
        self._gone_waits = 0
        shared.metrics.watch("tcp", self)

        self._stopping = threading.Event()  # accept no more
        self._serving = False
        self._served = threading.Event()  # serve_forever has returned
        self._shut = False
        self._shut_lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None

        # A socket pair wakes the accept loop's select when it is told to stop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)

    @property
    def tls(self) -> bool:
        """The port speaks TLS."""
        return self._tls is not None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on."""
        name = self._listener.getsockname()
        return name[0], name[1]

    @property
    def metrics(self) -> Metrics:
        """What this server's process reports (``Metrics.render()`` gives the page)."""
        return self._shared.metrics

    def stats(self) -> TransportStats:
        """This transport's figures for the metrics: the connections are copied
        under the hub lock and counted after it (their counts only grow, and
        one forgotten meanwhile was in the copy, not yet in the totals read)."""
        with self._lock:
            conns = list(self._conns)
            received, waits, sent = self._gone_received, self._gone_waits, self.bytes_out
        dialects = dict.fromkeys(("framed", "text", "websocket"), 0)  # always there, 0 included
        for conn in conns:
            dialect = conn.dialect or "unknown"
            dialects[dialect] = dialects.get(dialect, 0) + 1
            received += conn.received
            waits += conn.waits
        return TransportStats("tcp", dialects, received, sent, rate_limited_waits=waits)

    # --- accepting ---------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections until ``stop()`` or ``shutdown()``."""
        with self._shut_lock:
            if self._shut:
                self._served.set()
                return
            self._serving = True
        threading.stack_size(THREAD_STACK)  # for every thread started from now on (process-wide)
        self._housekeeper = threading.Thread(target=self._housekeep, name="tcpchat-housekeeper", daemon=True)
        self._housekeeper.start()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._listener, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in sel.select():
                        if key.fileobj is self._listener and not self._stopping.is_set():
                            self._accept()
        finally:
            self._served.set()

    def stop(self) -> None:
        """Make ``serve_forever`` return; safe from a signal handler."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # the connection vanished between select and accept
        except OSError as exc:
            if not self._accept_failing:
                log.warning("accept failed: %s (retrying)", exc)  # once per streak, not 20 times a second
            self._accept_failing = True
            # Out of descriptors: give closing connections a moment instead of spinning.
            self._stopping.wait(0.05)
            return
        if self._accept_failing:
            log.warning("accept works again")
            self._accept_failing = False
        try:
            host, port = sock.getpeername()[:2]
            peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(sock, self.idle_timeout)
        except OSError as exc:
            log.info("dropped a connection before it started: %s", exc)
            sock.close()
            return
        conn = _Conn(sock, peer, time.monotonic(), self)
        conn.host = host
        with self._lock:
            if self._hard_cap and len(self._conns) >= self._hard_cap:
                log.warning("refused %s: %d sockets open", peer, len(self._conns))
                sock.close()
                return
            held = self._per_host.get(host, 0)
            if self.max_per_host and held >= self.max_per_host:
                # Closed before a word: it has not spoken, so there is no
                # dialect to answer in, and answering costs what it saves.
                # Logged once per streak: a flood must not flood the log too.
                refused = self._refused.get(host, 0)
                if not refused:
                    log.warning("refusing connections from %s: it holds %d", host, held)
                self._refused[host] = refused + 1
                sock.close()
                return
            self._per_host[host] = held + 1
            self._conns.add(conn)
            conn.serial = next(self._serials)
            self._by_serial[conn.serial] = conn
            self._pending.add(conn)
        servercli.log_connected(peer)
        self._start_reader(conn)

    def _start_reader(self, conn: _Conn) -> None:
        """Start ``conn``'s reader; its writer starts when something is queued."""
        conn.reader = threading.Thread(target=self._read_loop, args=(conn,), name=f"read {conn.peer}", daemon=True)
        try:
            conn.reader.start()
        except RuntimeError as exc:
            # Out of threads: refuse this one and keep accepting, rather than
            # let the accept loop die with every other connection orphaned.
            log.warning("refused %s: cannot start its thread (%s)", conn.peer, exc)
            conn.reader = None
            conn.queue.starter = None
            conn._done = 2  # neither thread will run
            with self._lock:
                self._forget_conn(conn)
            conn.sock.close()
            servercli.log_departure(conn, None, "refused: no thread for it")

    # --- delivering -------------------------------------------------------------

    def _deliver(self, deliveries: list[Delivery[_Conn]]) -> None:
        """Push ``deliveries`` to their connections, in order (hub lock held)."""
        if deliveries:
            self._shared.post(deliveries)  # now, or once the store has what they carry

    def _cut(self, conn: _Conn) -> None:
        """Drop ``conn`` at once, without flushing (hub lock held)."""
        conn.closing = True
        conn.close_deadline = 0.0
        conn.abort()

    # --- a connection's threads --------------------------------------------------

    def _write_loop(self, conn: _Conn) -> None:
        sock = conn.sock
        get = conn.queue.get
        get_nowait = conn.queue.get_nowait
        try:
            while True:
                parts: list[bytes] = []
                item = get()
                while item is not None:
                    parts.append(item)
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break
                if parts:
                    data = b"".join(parts)
                    sock.sendall(data)
                    conn.sent += len(data)
                if item is None:
                    # Everything before the close mark is sent: FIN after it.
                    sock.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            conn.abort()  # the peer broke it; make the reader notice at once
        except Exception:
            log.exception("writer of %s failed", conn.peer)
            conn.abort()
        finally:
            self._thread_done(conn)

    def _read_loop(self, conn: _Conn) -> None:
        reason = "connection lost"
        try:
            reason = self._serve(conn)
        except OSError as exc:
            reason = f"connection lost ({exc.strerror or type(exc).__name__})"
        except Exception:
            log.exception("reader of %s failed", conn.peer)
            reason = "server error"
        finally:
            try:
                with self._lock:
                    self._deliver(self._hub.disconnect(conn, reason))
                    if not conn.closing:
                        # The peer left: flush what it may still read, then close,
                        # with TLS our close_notify last (a peer that closed
                        # with its own may be waiting for it).
                        conn.push(_NOTHING, True)
                if not conn.known:
                    # The hub never had it, so it logs no departure: say it here.
                    servercli.log_departure(conn, None, conn.why or reason)
            finally:
                self._thread_done(conn)

    def _thread_done(self, conn: _Conn) -> None:
        if conn.thread_done():
            with self._lock:  # no one sends straight to a socket being closed
                conn.closing = True
                conn.sock.close()
                self._forget_conn(conn)

    def _forget_conn(self, conn: _Conn) -> None:
        """Take ``conn`` out of the tables (hub lock held)."""
        self._by_serial.pop(conn.serial, None)
        self._pending.discard(conn)
        if conn in self._conns:
            self._conns.discard(conn)
            self._gone_received += conn.received
            self._gone_waits += conn.waits
            left = self._per_host[conn.host] - 1
            if left:
                self._per_host[conn.host] = left
            else:
                del self._per_host[conn.host]
            refused = self._refused.pop(conn.host, 0)
            if refused:
                log.warning("accepting %s again; %d connection(s) refused meanwhile", conn.host, refused)

    def _serve(self, conn: _Conn) -> str:
        """Run one connection until it ends; return why it ended."""
        sock = conn.sock
        data = b""
        if self._tls is not None:
            failed, data = self._handshake(conn)
            if failed:
                return failed
        data = data or self._first_bytes(conn)
        dialect = detect_dialect(data)
        while dialect is None and data:  # the start of an HTTP method ("GE"): read on
            more = conn.recv()
            if not more:
                break  # a last line of two letters
            data += more
            dialect = detect_dialect(data)
        if not data:
            return "closed before speaking"
        if dialect is Dialect.HTTP:
            reason = self._serve_http(conn, data)
        else:
            framed = dialect is Dialect.FRAMED
            reason = self._begin(conn, framed)
            if not reason:
                reason = self._serve_stream(conn, data, _FramedReader() if framed else _LineReader())
        if conn.closing:
            # We close first: drain until the peer closes, so our close sends
            # no RST over data it has not read yet (the housekeeper aborts
            # this after LINGER). When the peer closed first there is nothing
            # to drain, and a TLS peer may be waiting for our close_notify.
            with contextlib.suppress(OSError):
                while sock.recv(RECV_SIZE):
                    pass
        return reason

    def _begin(self, conn: _Conn, framed: bool, dialect: str = "") -> str:
        """Hand ``conn`` to the hub, speaking frames or lines; return why not, or "".
        ``dialect``: what the metrics call it, if not "framed" or "text"."""
        with self._lock:
            conn.dialect = dialect or ("framed" if framed else "text")
            conn.liveness.heard(time.monotonic())
            if framed:
                conn.liveness.idle_timeout = self.idle_timeout
            else:
                conn.text = TextSession()
                conn.view = conn.text.view
            if self._stopping.is_set():
                return "server shutting down"
            refusal = self._hub.connect(conn, may_retry=not framed, echo=framed)
            conn.known = not refusal
            if refusal:
                conn.why = "refused: the server is full"
            self._deliver(refusal)
        return ""

    def _handshake(self, conn: _Conn) -> tuple[str, bytes]:
        """Run ``conn``'s TLS handshake; return why it failed (or ""), and the
        plaintext that came with its last flight (the client's first bytes).

        Bounded by the registration timeout: each recv by the socket's timeout
        here, the whole by the housekeeper, which cuts a connection that has
        not registered in time (a client stalling mid-handshake included).
        """
        assert self._tls is not None
        link = TlsLink(self._tls, server_side=True)
        conn.sock.settimeout(self.register_timeout)
        try:
            data = link.handshake(conn.sock)
        except ssl.SSLError as exc:
            return f"TLS handshake failed ({exc.reason or exc})", b""
        except TimeoutError:
            return "TLS handshake timed out", b""
        except OSError as exc:
            return f"closed during the TLS handshake ({exc.strerror or exc})", b""
        finally:
            conn.sock.settimeout(None)
        conn.tls = link
        return "", data

    def _first_bytes(self, conn: _Conn) -> bytes:
        """The connection's first bytes; greet it if it is silent for GREET_AFTER."""
        sock = conn.sock
        sock.settimeout(GREET_AFTER)
        try:
            return conn.recv()
        except TimeoutError:
            pass
        finally:
            sock.settimeout(None)  # before anything is sent: the writer blocks as usual
        with self._lock:
            if not conn.closing:
                conn.greeted = True
                conn.push(fanout.Encoded([GREETING]), False)
        return conn.recv()

    def _serve_stream(
        self,
        conn: _Conn,
        data: bytes,
        reader: _FramedReader | _LineReader | _WsReader,
        recv: Callable[[], bytes] | None = None,
    ) -> str:
        recv = recv or conn.recv
        bucket = TokenBucket(self.rate_limit, time.monotonic())
        limited = self.rate_limit > 0
        while True:
            if data:  # b"" only for a WebSocket's start: its reader holds the first message
                reader.feed(data)
            items = reader.items()
            if items:
                if limited:
                    self._handle_limited(conn, items, bucket)
                else:
                    self._handle(conn, items)
            if conn.closing:
                return "closed by the server"
            data = recv()
            conn.liveness.heard(time.monotonic())
            if not data:
                reader.feed(b"")
                items = reader.items()  # a last line without its newline still counts
                if items:
                    self._handle(conn, items)
                return "connection closed"

    # --- the web page and its WebSocket ----------------------------------------------

    def _serve_http(self, conn: _Conn, data: bytes) -> str:
        """Answer one HTTP request (``twinchat.web.http``); serve the chat on
        the connection if it upgrades to a WebSocket. Return why it ended.

        Bounded like any first bytes: by the registration timeout in time (the
        connection has not registered) and by ``http.MAX_REQUEST`` in size.
        """
        parser = http.RequestReader(conn.host)
        request = parser.feed(data)
        while request is None:
            data = conn.recv()
            if not data:
                return "closed before its HTTP request was complete"
            request = parser.feed(data)
        if isinstance(request, http.Response):
            return self._respond(conn, request, f"bad HTTP request ({request.status})")
        answer = http.answer(self._routes, request)
        what = f"{request.method} {request.target[:100]}"
        if isinstance(answer, http.Response):
            if answer.status == 403:
                log.warning("%s: %s refused: %s", conn.peer, what, answer.body.decode().strip())
            return self._respond(conn, answer, f"{what}: {answer.status}", head=request.method == "HEAD")
        link = WsLink(self._wrapped)
        try:
            switch = link.accept(request.headers, request.target)
        except Refused as exc:
            return self._respond(conn, http.error(400, str(exc)), f"{what}: 400")
        with self._lock:
            conn.push(fanout.Encoded([switch]), False, as_is=True)
            conn.ws = link
        return self._serve_websocket(conn, link, parser.trailing)

    def _respond(self, conn: _Conn, response: http.Response, reason: str, *, head: bool = False) -> str:
        """Send ``response`` and close after it; return ``reason``."""
        with self._lock:
            conn.push(fanout.Encoded([response.encode(head=head)]), True, as_is=True)
        return reason

    def _serve_websocket(self, conn: _Conn, link: WsLink, data: bytes) -> str:
        """Serve the chat over ``link``: binary or text, as its first message tells."""

        def answer(reply: bytes, last: bool) -> None:
            with self._lock:
                conn.push(fanout.Encoded([reply]), last, as_is=True)

        reader = _WsReader(link, answer)
        if data:
            reader.feed(data)
        while link.mode is None and not reader.ended:  # bounded as the first bytes of any connection
            reader.feed(conn.recv())
        if link.mode is None:
            reader.feed(b"")  # sends the answer to its close
            return reader.why or "connection closed"
        reason = self._begin(conn, link.mode is Mode.FRAMES, "websocket")
        if reason:
            return reason
        reason = self._serve_stream(conn, b"", reader, lambda: b"" if reader.ended else conn.recv())
        return reader.why or reason

    def _handle_limited(self, conn: _Conn, items: list[_Item], bucket: TokenBucket) -> None:
        """Handle ``items`` as fast as the token bucket allows.

        Strategy: the reader waits for tokens instead of reading on. The
        flooder's bytes pile up in its socket buffers, TCP backpressure slows
        its sender, and nothing it sent is lost or refused.
        """
        start = 0
        while start < len(items):
            now = time.monotonic()
            stop = start
            while stop < len(items) and bucket.take(now):
                stop += 1
            if stop == start:
                # Bytes of it are waiting here: it is held back, not idle.
                conn.waits += 1
                conn.liveness.heard(now)
                if self._stopping.wait(bucket.wait_time(now)) or conn.closing:
                    return
                continue
            self._handle(conn, items[start:stop])
            if conn.closing:
                return
            start = stop

    def _handle(self, conn: _Conn, items: list[_Item]) -> None:
        """Drive the hub with one batch under one lock, and deliver what it says.
        Passwords in the batch are checked first, outside the lock."""
        items = self._vetted(conn, items)
        now = time.time()
        with self._lock:
            if conn.closing:
                return
            # A framed reader hands on events, a line reader lines (str).
            if conn.text is None:
                self._deliver(self._hub.take(conn, cast(list[ev.Event | ProtocolError], items), now))
            else:
                lines = cast(list[str | ProtocolError | Vetted], items)
                conn.text.take(self._hub, conn, lines, now, self._deliver, settle=self._shared.courier.flush)

    def _vetted(self, conn: _Conn, items: list[_Item]) -> list[_Item]:
        """``items`` with every event that carries a password replaced by the
        verdict on it (``Vetted``), hashed here on the reader's thread, no
        lock held. A text user's lines are found by its session."""
        asks: dict[int, object]
        if conn.text is None:
            if ACCOUNT_TYPES.isdisjoint(map(type, items)):
                return items  # the common case, checked at C speed
            asks = {i: item for i, item in enumerate(items) if needs_vetting(item)}
        else:
            asks = dict(conn.text.account_events(cast(list[str | ProtocolError], items)))
        if not asks:
            return items
        vet = self._shared.vet
        with self._lock:
            conn.liveness.checking(time.monotonic(), on=True)
        try:
            return [
                vet(conn, conn.host, cast(AccountEvent, asks[i])) if i in asks else item for i, item in enumerate(items)
            ]
        finally:
            with self._lock:
                conn.liveness.checking(time.monotonic(), on=False)

    # --- timers ------------------------------------------------------------------

    @property
    def _tick(self) -> float:
        return max(0.02, min(0.5, self.idle_timeout / 8, self.register_timeout / 8))

    def _housekeep(self) -> None:
        tick = self._tick
        while not self._stopping.wait(tick):
            try:
                self._check_timers(time.monotonic())
            except Exception:
                log.exception("housekeeping failed")

    def _arm(self, conn: _Conn, when: float) -> None:
        """Have the housekeeper look at ``conn`` at ``when``, unless it will sooner (hub lock)."""
        if when >= conn.due or conn.serial not in self._by_serial:
            return
        conn.due = when
        heapq.heappush(self._timers, (when, conn.serial))
        if len(self._timers) > 4 * len(self._by_serial) + 64:
            # Entries moved sooner pile up: keep one per connection.
            self._timers = [(c.due, s) for s, c in self._by_serial.items() if c.due < math.inf]
            heapq.heapify(self._timers)

    def _still_pending(self) -> list[_Conn]:
        """The connections that have not registered yet (hub lock).

        Walked on every tick, as all connections were: they are the few
        arriving, and the hub, not this module, sees them register (then
        they leave this set for the heap, at their first ping's deadline).
        """
        hub = self._hub
        for conn in [c for c in self._pending if c.closing or hub.nick_of(c) is not None]:
            self._pending.discard(conn)
            self._arm(conn, conn.close_deadline if conn.closing else conn.liveness.deadline(registered=True))
        return list(self._pending)

    def _due_conns(self, now: float) -> list[_Conn]:
        """The connections whose entry has come, taken out of the heap (hub lock)."""
        timers = self._timers
        out = []
        while timers and timers[0][0] <= now:
            when, serial = heapq.heappop(timers)
            conn = self._by_serial.get(serial)
            if conn is not None and conn.due == when:
                conn.due = math.inf
                out.append(conn)
        return out

    def _check_timers(self, now: float) -> None:
        hub = self._hub
        with self._lock:
            out: list[Delivery[_Conn]] = []
            for conn in self._due_conns(now) + self._still_pending():
                if conn.closing:
                    if now > conn.close_deadline:
                        conn.abort()  # it had LINGER seconds to flush and close
                        self._arm(conn, now + LINGER)  # and again, until its threads are gone
                    else:
                        self._arm(conn, conn.close_deadline)
                    continue
                registered = conn not in self._pending
                due = conn.liveness.due(now, registered=registered)
                if registered:
                    # Back in the heap at its next deadline (not before the next tick: the
                    # checks are strict, so one that is exactly due now says so then).
                    self._arm(conn, max(conn.liveness.deadline(registered=True), now + self._tick / 2))
                if due is None:
                    continue
                if due is Due.PING:
                    out.append(Delivery((conn,), ev.Ping(next(self._nonces))))
                    continue
                log.debug("%s: %s", conn.peer, due.value)
                if due is Due.IDLE_TIMEOUT:
                    out += hub.kick(conn, ErrorCode.IDLE_TIMEOUT, f"silent for {self.idle_timeout:g} s")
                elif conn in hub:
                    out += hub.kick(conn, ErrorCode.REGISTRATION_TIMEOUT, "no nick registered in time")
                elif conn.greeted:
                    # Taken for a person at nc: say why, in lines, then close.
                    conn.why = "no nick registered in time (it never spoke)"
                    conn.push(fanout.Encoded(_SILENT_FAREWELL), True)
                else:
                    conn.why = "no nick registered in time (it never spoke)"
                    self._cut(conn)  # it never spoke: there is no dialect to answer in
            self._deliver(out)

    # --- shutting down -----------------------------------------------------------

    def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Stop accepting, say goodbye to everyone, flush, close, join the threads.

        Takes at most about ``SHUTDOWN_FLUSH`` + 0.5 seconds. Idempotent.
        """
        with self._shut_lock:
            if self._shut:
                return
            self._shut = True
        self.stop()
        if self._serving:
            self._served.wait()
        if self._housekeeper is not None:
            self._housekeeper.join()
        deadline = time.monotonic() + SHUTDOWN_FLUSH
        with self._lock:
            log.info("shutting down: goodbye to %d connection(s)", len(self._conns))
            self._shared.courier.flush()  # what was said goes out before the goodbyes
            self._deliver(self._hub.shutdown(reason))
            conns = list(self._conns)
            for conn in conns:
                if not conn.closing:
                    self._cut(conn)  # it has not spoken yet
                conn.close_deadline = min(conn.close_deadline, deadline) if conn.close_deadline else deadline
        threads = [t for c in conns for t in (c.writer, c.reader) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for conn in conns:
            conn.abort()  # whoever did not flush in time
        deadline = time.monotonic() + 0.5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._owns_shared:
            self._shared.close()
        log.info("shut down")


class _FramedReader:
    """Adapts ``StreamDecoder`` to one batch of items per read."""

    def __init__(self) -> None:
        self._decoder = StreamDecoder()

    def feed(self, data: bytes) -> None:
        self._decoder.feed(data)

    def items(self) -> list[_Item]:
        # events() already builds a fresh list of exactly these items: no copy.
        return self._decoder.events()  # type: ignore[return-value]


class _WsReader:
    """Adapts a ``WsLink`` to one batch of items per read: a message each.

    What the link must answer goes to ``answer``: a pong at once, the answer
    to the peer's close only at the next feed (the end of the stream, which
    the server feeds once it has handled the messages that came before the
    close), as the connection's last bytes.
    """

    def __init__(self, link: WsLink, answer: Callable[[bytes, bool], None]) -> None:
        self._link = link
        self._answer = answer
        self._items: list[_Item] = []
        self._farewell = b""
        self.ended = False  # the WebSocket is over: the server reads no more
        self.why = ""

    def feed(self, data: bytes) -> None:
        if self.ended:
            if self._farewell:
                self._answer(self._farewell, True)
                self._farewell = b""
            return
        got: Received = self._link.feed(data)
        self._items += got.items
        if got.ended or not data:
            self.ended = True
            self.why = got.why
            self._farewell = got.reply
        elif got.reply:
            self._answer(got.reply, False)

    def items(self) -> list[_Item]:
        out, self._items = self._items, []
        return out


class _LineReader:
    """Adapts ``LineDecoder`` to one batch of lines per read."""

    def __init__(self) -> None:
        self._decoder = LineDecoder()

    def feed(self, data: bytes) -> None:
        self._decoder.feed(data)

    def items(self) -> list[_Item]:
        out: list[_Item] = []
        next_line = self._decoder.next_line
        while True:
            try:
                line = next_line()
            except FrameRejected as exc:
                out.append(exc)
                continue
            except RemoteProtocolError as exc:
                out.append(exc)
                return out
            if not isinstance(line, str):
                return out
            out.append(line)


def _tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The server's TLS context for ``--tls-cert`` and ``--tls-key``; None without them.

    Raises:
        servercli.StartFault: only one was given, or they cannot be used.
    """
    if not (cert or key):
        return None
    if not (cert and key):
        raise servercli.StartFault("--tls-cert and --tls-key go together")
    try:
        return server_context(cert, key)
    except TlsSetupError as exc:
        raise servercli.StartFault(str(exc)) from None


def _keepalive(sock: socket.socket, idle: float) -> None:
    """Let TCP notice a vanished peer (line clients are never pinged)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        idle_s = min(max(1, int(idle)), 32767)  # the kernel's limit for both
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle_s // 4))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


# --- command line ----------------------------------------------------------------

_DEFAULTS: Final = servercli.Defaults(
    port=DEFAULT_PORT,
    max_clients=DEFAULT_MAX_CLIENTS,
    idle_timeout=DEFAULT_IDLE_TIMEOUT,
    idle_help="drop a client silent this long; it is pinged at half",
    register_timeout=DEFAULT_REGISTER_TIMEOUT,
    max_queue=DEFAULT_MAX_QUEUE,
    max_queue_help="unsent bytes after which a client is cut off as a slow consumer",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    prog = "tcpchat-server"
    args = servercli.parser(prog, "The twinchat TCP chat server.", _DEFAULTS, tls=True).parse_args(argv)

    return servercli.run(
        args,
        lambda: ChatServer(args.host, args.port, **servercli.options(args)),
        prog=prog,
        mode=lambda server: "(tls)" if server.tls else "",
    )


if __name__ == "__main__":
    sys.exit(main())
