"""The command line both chat servers share: flags, signals, the ready line.

``tcpchat-server`` and ``udpchat-server`` (``python -m tcpchat.server``,
``python -m udpchat.server``) take the same
flags where they apply and behave the same way from a shell: they print one
``listening on HOST:PORT`` line once they accept clients (scripts and tests
wait for it), stop on SIGINT or SIGTERM with a goodbye to every client, and
exit 0. Each transport states its own defaults and adds its own flags; this
module owns the rest, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from common.chat import events as ev
from common.chat.hub import DEFAULT_MAX_ROOMS, DEFAULT_REPLAY, DEFAULT_ROOMS_PER_MEMBER, Delivery, Hub, Vetted
from common.chat.log import DEFAULT_HISTORY_LIMIT, MemoryStore
from common.ports import Store, StoreFault
from common.session.ratelimit import DEFAULT_RATE, MIN_BURST
from twinchat import version
from twinchat.durable import Courier
from twinchat.gatekeeper import AccountEvent, Gatekeeper
from twinchat.metrics import Metrics, MetricsListener, parse_address

log = logging.getLogger("twinchat.sessions")

#: Where the servers keep their store unless told otherwise (``--data-dir``),
#: and ``$TWINCHAT_DATA_DIR`` is not set (a service manager's, or a test run's).
DEFAULT_DATA_DIR = "twinchat-data"

#: What one source address may hold at once, as Ergo allows one IP by default:
#: enough for a household behind one NAT, too few to crowd out everyone else.
DEFAULT_MAX_PER_HOST = 16


class Server(Protocol):
    """What a transport's server offers its command line."""

    @property
    def address(self) -> tuple[str, int]: ...

    def serve_forever(self) -> None: ...

    def stop(self) -> None: ...

    def shutdown(self, reason: str = ...) -> None: ...

    @property
    def metrics(self) -> Metrics: ...


class StartFault(Exception):
    """A server cannot start for a reason said in one line (a bad certificate)."""


@dataclass(frozen=True)
class Defaults:
    """A transport's defaults and the wording of its flags' help."""

    port: int
    max_clients: int
    idle_timeout: float
    idle_help: str
    register_timeout: float
    max_queue: int
    max_queue_help: str


def _at_least(minimum: float, kind: Callable[[str], float], *, allow_equal: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < minimum or (value == minimum and not allow_equal):
            relation = "at least" if allow_equal else "above"
            raise argparse.ArgumentTypeError(f"{text} is not {relation} {minimum:g}")
        return value

    return parse


def _metrics_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser(prog: str, description: str, defaults: Defaults, *, tls: bool = False) -> argparse.ArgumentParser:
    """An argument parser with every flag the servers share; add transport flags to it.

    Args:
        tls: add ``--tls-cert`` and ``--tls-key`` (a server with a TCP port).
    """
    count = _at_least(0, int, allow_equal=True)
    seconds = _at_least(0, float, allow_equal=False)
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--version", action="version", version=f"%(prog)s (twinchat {version()})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=defaults.port, help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument(
        "--max-clients",
        type=count,
        default=defaults.max_clients,
        help="most registered clients at once; 0 for no limit (default: %(default)s)",
    )
    p.add_argument(
        "--max-per-host",
        metavar="N",
        type=count,
        default=DEFAULT_MAX_PER_HOST,
        help="most connections (TCP) or unregistered sessions (UDP) one source address may hold; 0 for no limit"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--rate-limit",
        metavar="MSGS_PER_SEC",
        type=_at_least(0, float, allow_equal=True),
        default=DEFAULT_RATE,
        help=f"messages per second a client may keep up, bursts of {MIN_BURST:g} allowed; 0 turns it off"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=seconds,
        default=defaults.idle_timeout,
        help=f"{defaults.idle_help} (default: %(default)s)",
    )
    p.add_argument(
        "--register-timeout",
        metavar="SECONDS",
        type=seconds,
        default=defaults.register_timeout,
        help="close a client that has no nick after this long (default: %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        metavar="BYTES",
        type=count,
        default=defaults.max_queue,
        help=f"{defaults.max_queue_help} (default: %(default)s)",
    )
    p.add_argument(
        "--max-rooms",
        metavar="N",
        type=_at_least(1, int, allow_equal=True),
        default=DEFAULT_MAX_ROOMS,
        help="most rooms at once on the server (default: %(default)s)",
    )
    p.add_argument(
        "--rooms-per-member",
        metavar="N",
        type=_at_least(1, int, allow_equal=True),
        default=DEFAULT_ROOMS_PER_MEMBER,
        help="most rooms one member may be in at once (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=os.environ.get("TWINCHAT_DATA_DIR", DEFAULT_DATA_DIR),
        help="where history, topics and accounts are kept (made if missing); '' keeps them in memory only"
        f" (default: $TWINCHAT_DATA_DIR, else {DEFAULT_DATA_DIR})",
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="keep nothing on disk: history, topics and accounts last as long as the process (--data-dir '')",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        default="",
        help="keep history, topics and accounts in Redis at URL (redis://HOST:PORT/DB) instead of --data-dir,"
        " and be one chat with every server on it; needs the redis package (pip install 'twinchat[redis]')",
    )
    p.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_at_least(0, float, allow_equal=False),
        default=None,
        help="with --redis: how long this server is taken for alive by the others without news; a server killed"
        " outright has its users removed, with leave notices, within this and a third (default: 9)",
    )
    p.add_argument(
        "--reuse-port",
        action="store_true",
        help="let several server processes listen on the same port (SO_REUSEPORT; with --redis they are one chat)",
    )
    p.add_argument(
        "--history-limit",
        metavar="N",
        type=_at_least(1, int, allow_equal=True),
        default=DEFAULT_HISTORY_LIMIT,
        help="messages kept per room (default: %(default)s)",
    )
    p.add_argument(
        "--replay",
        metavar="N",
        type=count,
        default=DEFAULT_REPLAY,
        help="messages of history shown to whoever joins a room (default: %(default)s)",
    )
    if tls:  # the TCP port's: TLS, and the web page's WebSocket
        p.add_argument(
            "--tls-cert",
            metavar="FILE",
            default="",
            help="the TCP port speaks TLS only, with this certificate chain (PEM); needs --tls-key",
        )
        p.add_argument("--tls-key", metavar="FILE", default="", help="the private key of --tls-cert (PEM)")
        p.add_argument(
            "--allowed-origins",
            metavar="ORIGINS",
            default="",
            help="web pages (comma list of origins, e.g. https://chat.example; '*' for any) that may open the"
            " chat's WebSocket besides the page this server serves (default: none)",
        )
    p.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        type=_metrics_address,
        default=None,
        help="serve GET /metrics (Prometheus text format) on this port; HOST defaults to 127.0.0.1,"
        " so only this machine can read it unless told otherwise (default: off)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log: INFO logs each session's start and end (default: %(default)s)",
    )
    return p


def open_store(
    data_dir: str, history_limit: int = DEFAULT_HISTORY_LIMIT, redis_url: str = "", heartbeat: float = 0.0
) -> Store:
    """The store of ``--redis`` if given, else of ``--data-dir``: SQLite in
    ``data_dir``, or memory if it is ''. With ``--redis`` the server is one
    of many on that Redis (``twinchat.cluster``): the store carries the link
    to the others (``cluster``), and ``heartbeat`` (seconds; 0 for the
    default) is how long this server is taken for alive without news.

    Raises:
        StoreFault: it cannot be opened (one line, naming the file or server).
    """
    if redis_url:
        try:
            from twinchat.cluster.store import ClusterStore  # noqa: PLC0415 (redis-py only when used)
        except ImportError as exc:
            raise StoreFault(f"--redis needs the redis package ({exc}); pip install 'twinchat[redis]'") from None
        if heartbeat:
            return ClusterStore(redis_url, history_limit, heartbeat=heartbeat)
        return ClusterStore(redis_url, history_limit)
    if not data_dir:
        return MemoryStore(history_limit)
    from twinchat.store import open_store as open_on_disk  # noqa: PLC0415 (sqlite3 only when used)

    store: Store = open_on_disk(data_dir, history_limit)
    return store


@dataclass(frozen=True)
class SharedHub:
    """One chat's state and the lock that orders it, for every transport a
    process serves: what a TCP and a UDP server in one process share. With
    them, the store's writer (``courier``: every delivery goes through
    ``post``), the password checks (``gatekeeper``) and what all of them
    and every transport report (``metrics``: each transport ``watch``es in)."""

    hub: Hub[Any]
    lock: threading.Lock
    courier: Courier
    gatekeeper: Gatekeeper
    metrics: Metrics
    #: With ``--redis``: this server's link to the others (``twinchat.cluster.node.Cluster``).
    cluster: Any = None

    @classmethod
    def make(
        cls,
        max_clients: int,
        max_rooms: int,
        rooms_per_member: int,
        *,
        store: Store | None = None,
        replay: int = DEFAULT_REPLAY,
    ) -> SharedHub:
        store = MemoryStore() if store is None else store
        cluster = getattr(store, "cluster", None)  # one server of many on Redis (twinchat.cluster)
        hub: Hub[Any] = Hub(
            max_clients=max_clients,
            max_rooms=max_rooms,
            rooms_per_member=rooms_per_member,
            store=store,
            replay=replay,
            departed=log_departure,
            bus=cluster,
            nicks=None if cluster is None else cluster.nicks,
            presence=None if cluster is None else cluster.presence,
        )
        lock = threading.Lock()
        courier, gatekeeper = Courier(hub, lock, store, log_session), Gatekeeper(hub, lock)
        shared = cls(hub, lock, courier, gatekeeper, Metrics(hub, lock, courier, gatekeeper), cluster)
        if cluster is not None:
            cluster.start(hub, lock, shared.post)
        return shared

    def post(self, deliveries: list[Delivery[Any]]) -> None:
        """Deliver, once the store has what they depend on (hub lock held)."""
        self.courier.post(deliveries)

    def vet(self, conn: Any, address: str, event: AccountEvent) -> Vetted:
        """Check ``event``'s password outside the hub lock (``Gatekeeper.vet``)."""
        return self.gatekeeper.vet(conn, address, event)

    def close(self) -> None:
        """Write what is pending, stop the writer, close the store."""
        self.courier.close()


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The shared flags as the keyword arguments every transport's ``ChatServer``
    takes, and ``tls_cert``, ``tls_key`` and ``allowed_origins`` if the parser
    had them (TCP only)."""
    tls = (
        {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "allowed_origins": args.allowed_origins}
        if hasattr(args, "tls_cert")
        else {}
    )
    return tls | {
        "max_clients": args.max_clients,
        "max_per_host": args.max_per_host,
        "rate_limit": args.rate_limit,
        "idle_timeout": args.idle_timeout,
        "register_timeout": args.register_timeout,
        "max_queue": args.max_queue,
        "max_rooms": args.max_rooms,
        "rooms_per_member": args.rooms_per_member,
        "data_dir": "" if args.ephemeral else args.data_dir,
        "history_limit": args.history_limit,
        "redis_url": args.redis,
        "heartbeat": args.heartbeat or 0.0,
        "reuse_port": args.reuse_port,
        "replay": args.replay,
    }


def session_line(name: str, nick: str | None, what: str) -> str:
    """One session event as both servers log it: the address, the nick in
    brackets once there is one, and what happened.

    ``127.0.0.1:40000 connected``, ``127.0.0.1:40000 registered as alice``,
    ``127.0.0.1:40000 (alice) renamed alice -> alicia``,
    ``127.0.0.1:40000 (alicia) left (reason: quit 'bye')``.
    """
    return f"{name} ({nick}) {what}" if nick else f"{name} {what}"


def log_connected(name: str) -> None:
    """A connection or session arrived."""
    log.info("%s", session_line(name, None, "connected"))


def log_session(delivery: Delivery[Any]) -> None:
    """The fan-out's notice: log a registration (its Welcome) or a nick change
    (its Renamed, whose first recipient is the renamer)."""
    event = delivery.event
    if isinstance(event, ev.Welcome):
        log.info("%s", session_line(delivery.recipients[0].name, None, f"registered as {event.nick}"))
    elif isinstance(event, ev.Renamed):
        log.info("%s", session_line(delivery.recipients[0].name, event.old, f"renamed {event.old} -> {event.new}"))
    elif isinstance(event, ev.Goodbye) and log.isEnabledFor(logging.DEBUG):
        log.debug("goodbye to %d client(s): %s", len(delivery.recipients), event.reason)


def log_departure(conn: Any, nick: str | None, why: str) -> None:
    """The hub's ``departed``: a session ended (quit, closed, timed out, cut off...)."""
    log.info("%s", session_line(conn.name, nick, f"left (reason: {why or 'none given'})"))


def counts(counters: dict[str, int]) -> str:
    """Counters as words, largest first: ``2 garbage, 1 spoofed``, or ``nothing to report``."""
    ranked = sorted(counters.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {what}" for what, count in ranked if count) or "nothing to report"


def run(
    args: argparse.Namespace, build: Callable[[], Server], *, prog: str, mode: str | Callable[[Any], str] = ""
) -> int:
    """Build the server, serve until SIGINT or SIGTERM, shut down; return the exit code.

    Args:
        args: the parsed command line (``--log-level``, ``--host`` and ``--port`` are read).
        build: makes the server from ``args``; an ``OSError`` means it cannot listen.
        prog: the command's name, for the one-line error.
        mode: words added after the ready line, e.g. ``(unreliable)``, or a
            function of the server that makes them.
    """
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = build()
    except OSError as exc:
        print(f"{prog}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (StoreFault, StartFault) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    listener = None
    if args.metrics is not None:
        try:
            listener = MetricsListener(server.metrics, *args.metrics)
        except OSError as exc:
            server.shutdown()
            where = "{}:{}".format(*args.metrics)
            print(f"{prog}: cannot serve metrics on {where}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        listener.start()
        mhost, mport = listener.address
        print(f"metrics on http://{f'[{mhost}]' if ':' in mhost else mhost}:{mport}/metrics", flush=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = server.address
    shown = f"[{host}]" if ":" in host else host
    words = mode(server) if callable(mode) else mode
    print(f"listening on {shown}:{port}{f' {words}' if words else ''}", flush=True)
    try:
        server.serve_forever()
    finally:
        if listener is not None:
            listener.close()
        server.shutdown()
    return 0


__all__ = [
    "Defaults",
    "Server",
    "StartFault",
    "counts",
    "log_connected",
    "log_departure",
    "log_session",
    "options",
    "parser",
    "run",
    "session_line",
]
