"""A seeded, lossy UDP proxy for tests and benchmarks: ``python -m udpchat.lossyproxy``.

Clients send to the proxy instead of the server. For each client address the
proxy opens its own upstream socket, so the server sees one address per
client, as without the proxy. Each datagram, either way, is dropped with
probability ``loss``, else sent twice with probability ``duplicate``, and held
back with probability ``reorder`` until a few later datagrams of the same
direction have passed (or ``HOLD_LIMIT`` seconds, whichever comes first).

Strategy: one thread and one selector over every socket, and one seeded
``random.Random`` per direction of each client, so a given run of datagrams
meets the same fate whatever the other clients do.

The object prints nothing: tests and the benchmark read ``stats``. The
command prints where it listens on stdout (the benchmark reads that line),
and on stderr a one-line tally every few seconds (``--interval``, or none
with ``--quiet``) and a summary when it stops; ``watch`` does both for any
proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import random
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Final

from twinchat import version

#: Seconds a held-back datagram waits at most for later ones to overtake it.
HOLD_LIMIT: Final = 0.02

#: Later datagrams that overtake a held-back one, at most.
OVERTAKE: Final = 3

#: Clients the proxy relays for at most (each costs a socket).
MAX_CLIENTS: Final = 256

#: Where the command listens unless told (the servers' default, 7878, plus one).
DEFAULT_PORT: Final = 7879

#: Seconds between the command's tally lines unless told.
TALLY_INTERVAL: Final = 5.0


@dataclass
class Impairment:
    """What happens to datagrams in one direction."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0


@dataclass
class ProxyStats:
    """Datagrams seen and their fates, both directions together."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class _Lane:
    """One direction of one client: its dice and what it holds back."""

    rng: random.Random
    held: list[tuple[float, int, bytes]] = field(default_factory=list)  # (since, overtakes left, datagram)


class _Client:
    def __init__(self, addr: tuple[str, int], upstream: socket.socket, seed: int, index: int) -> None:
        self.addr = addr
        self.upstream = upstream
        # Seeded by arrival order, not port: the nth client meets the same dice in every run.
        self.up = _Lane(random.Random(f"{seed}:up:{index}"))
        self.down = _Lane(random.Random(f"{seed}:down:{index}"))


class LossyProxy:
    """Relay datagrams between clients and ``target`` through lossy lanes.

    Args:
        target: the server's (host, port).
        host, port: where the proxy listens; port 0 picks a free one.
        up: impairment from clients to the server; ``down``: the way back.
        seed: seeds every lane.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.up = up or Impairment()
        self.down = down or Impairment()
        self.seed = seed
        self.stats = ProxyStats()
        self._front = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._front.bind((host, port))
        except OSError:
            self._front.close()
            raise
        self._front.setblocking(False)
        self._clients: dict[tuple[str, int], _Client] = {}
        self._by_upstream: dict[socket.socket, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._front, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where clients should send."""
        name = self._front.getsockname()
        return name[0], name[1]

    @property
    def clients(self) -> int:
        """Clients relayed for so far."""
        return len(self._clients)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the relay has stopped and closed its sockets, at most ``timeout`` seconds.

        Returns:
            True once it has stopped; False if it still runs after ``timeout``.
        """
        return self._stopped.wait(timeout)

    def start(self) -> LossyProxy:
        """Relay in a background thread."""
        self._thread = threading.Thread(target=self.run, name="lossyproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop relaying and close every socket; safe to call twice."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Relay until ``stop()``."""
        try:
            while not self._stop.is_set():
                timeout = HOLD_LIMIT if self._holding() else None
                for key, _ in self._selector.select(timeout):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        continue
                    assert isinstance(sock, socket.socket)
                    self._drain(sock)
                self._release_stale(time.monotonic())
        finally:
            self._close()
            self._stopped.set()

    def _holding(self) -> bool:
        return any(c.up.held or c.down.held for c in self._clients.values())

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier datagram
            self.stats.received += 1
            if sock is self._front:
                client = self._client(addr)
                if client is not None:
                    self._pass(client.up, self.up, data, client.upstream, self.target)
            else:
                client = self._by_upstream[sock]
                self._pass(client.down, self.down, data, self._front, client.addr)

    def _client(self, addr: tuple[str, int]) -> _Client | None:
        client = self._clients.get(addr)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:
                return None
            family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_DGRAM)
            upstream.bind((self._front.getsockname()[0], 0))
            upstream.setblocking(False)
            client = self._clients[addr] = _Client(addr, upstream, self.seed, len(self._clients))
            self._by_upstream[upstream] = client
            self._selector.register(upstream, selectors.EVENT_READ)
        return client

    def _pass(self, lane: _Lane, how: Impairment, data: bytes, out: socket.socket, to: tuple[str, int]) -> None:
        rng = lane.rng
        fate = rng.random()
        copies = 0 if fate < how.loss else 2 if rng.random() < how.duplicate else 1
        if copies == 0:
            self.stats.dropped += 1
        elif copies == 2:
            self.stats.duplicated += 1
        held_back = copies and rng.random() < how.reorder
        # Whatever was held before this datagram is overtaken once more.
        still: list[tuple[float, int, bytes]] = []
        due: list[bytes] = []
        for since, left, old in lane.held:
            if left <= 1:
                due.append(old)
            else:
                still.append((since, left - 1, old))
        lane.held = still
        for _ in range(copies):
            if held_back:
                self.stats.reordered += 1
                lane.held.append((time.monotonic(), rng.randint(1, OVERTAKE), data))
                held_back = False  # a duplicate goes straight on
            else:
                self._send(out, data, to)
        for old in due:
            self._send(out, old, to)

    def _release_stale(self, now: float) -> None:
        for client in self._clients.values():
            for lane, out, to in ((client.up, client.upstream, self.target), (client.down, self._front, client.addr)):
                if lane.held and now - lane.held[0][0] >= HOLD_LIMIT:
                    stale = [d for since, _, d in lane.held if now - since >= HOLD_LIMIT]
                    lane.held = [h for h in lane.held if now - h[0] < HOLD_LIMIT]
                    for data in stale:
                        self._send(out, data, to)

    def _send(self, sock: socket.socket, data: bytes, to: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            sock.sendto(data, to)
            self.stats.forwarded += 1

    def _close(self) -> None:
        self._selector.close()
        for client in self._clients.values():
            client.upstream.close()
        self._front.close()
        self._wake_r.close()
        self._wake_w.close()


# --- what the command prints -------------------------------------------------------


def _counts(stats: ProxyStats) -> str:
    return (
        f"received={stats.received} forwarded={stats.forwarded} dropped={stats.dropped} "
        f"duplicated={stats.duplicated} reordered={stats.reordered}"
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:,.0f} s"


def _clients(count: int) -> str:
    return f"{count} client{'' if count == 1 else 's'}"


def tally(stats: ProxyStats, *, seconds: float, clients: int, received_per_s: float) -> str:
    """The periodic line: how long, for how many clients, the counts so far and the recent rate.

    Args:
        stats: the counts so far.
        seconds: since the proxy started.
        clients: relayed for so far.
        received_per_s: datagrams received per second since the previous line.
    """
    return (
        f"udpchat.lossyproxy: {_duration(seconds)}, {_clients(clients)}, {received_per_s:,.0f} datagrams/s: "
        + _counts(stats)
    )


def summary(stats: ProxyStats, *, seconds: float, clients: int) -> str:
    """The lines printed when the proxy stops: the counts and what share of the datagrams met which fate."""
    lines = [
        f"udpchat.lossyproxy: stopped after {_duration(seconds)}, relayed for {_clients(clients)}",
        f"  {_counts(stats)}",
    ]
    if stats.received:
        share = {
            "dropped": stats.dropped,
            "duplicated": stats.duplicated,
            "held back and reordered": stats.reordered,
        }
        lines.append(
            "  of the datagrams received: "
            + ", ".join(f"{100 * count / stats.received:.1f}% {fate}" for fate, count in share.items())
        )
    else:
        lines.append("  no datagram arrived")
    return "\n".join(lines)


def watch(
    proxy: LossyProxy,
    *,
    interval: float | None,
    write: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Until ``proxy`` stops: ``write`` a tally line every ``interval`` seconds, then the summary.

    Args:
        proxy: a started proxy; this returns once it has stopped.
        interval: seconds between tally lines; None for none (the summary only).
        write: takes each line (the summary is one string of several lines).
        clock: seconds, for the figures in the lines (waiting uses real time).
    """
    began = last = clock()
    before = replace(proxy.stats)
    # Without tally lines, still wake now and then: a signal handler runs between waits.
    while not proxy.wait(interval if interval else 0.5):
        if not interval:
            continue
        now, stats = clock(), replace(proxy.stats)
        rate = (stats.received - before.received) / (now - last) if now > last else 0.0
        write(tally(stats, seconds=now - began, clients=proxy.clients, received_per_s=rate))
        before, last = stats, now
    write(summary(proxy.stats, seconds=clock() - began, clients=proxy.clients))


# --- command line ----------------------------------------------------------------


def _chance(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds")
    return value


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m udpchat.lossyproxy",
        description="Relay UDP datagrams to a server, losing, duplicating and reordering some, reproducibly.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s (twinchat {version()})")
    p.add_argument("--target", type=_target, required=True, help="the server, HOST:PORT")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT}, or a free one if "
        f"{DEFAULT_PORT} is taken; the 'listening on' line says which)",
    )
    p.add_argument("--loss", type=_chance, default=0.0, help="drop chance, each way (default: %(default)s)")
    p.add_argument("--loss-up", type=_chance, help="drop chance from clients to the server (default: --loss)")
    p.add_argument("--loss-down", type=_chance, help="drop chance from the server to clients (default: --loss)")
    p.add_argument("--duplicate", type=_chance, default=0.0, help="duplicate chance, each way (default: %(default)s)")
    p.add_argument("--reorder", type=_chance, default=0.0, help="hold-back chance, each way (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every lane (default: %(default)s)")
    p.add_argument(
        "--interval",
        type=_seconds,
        default=TALLY_INTERVAL,
        metavar="SECONDS",
        help="seconds between tally lines on stderr; 0 for none (default: %(default)g)",
    )
    p.add_argument("--quiet", action="store_true", help="no tally lines, only the summary when it stops")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Relay until SIGINT or SIGTERM, with a tally and a summary on stderr; return 0 (1: cannot listen)."""
    args = _parser().parse_args(argv)

    def lane(loss: float | None) -> Impairment:
        return Impairment(args.loss if loss is None else loss, args.duplicate, args.reorder)

    def listen(port: int) -> LossyProxy:
        return LossyProxy(
            args.target,
            host=args.host,
            port=port,
            up=lane(args.loss_up),
            down=lane(args.loss_down),
            seed=args.seed,
        )

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    port = DEFAULT_PORT if args.port is None else args.port
    try:
        try:
            proxy = listen(port)
        except OSError as exc:
            # The benchmark and the tests start proxies without --port, several
            # at a time: the default is a convenience, not a demand.
            if args.port is not None or exc.errno != errno.EADDRINUSE:
                raise
            err(f"udpchat.lossyproxy: port {port} is taken; listening on a free port instead")
            port = 0
            proxy = listen(port)
    except OSError as exc:
        err(f"udpchat.lossyproxy: cannot listen on {args.host}:{port}: {exc.strerror or exc}")
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        proxy.stop()

    proxy.start()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = proxy.address
    print(f"listening on {host}:{port}, relaying to {args.target[0]}:{args.target[1]}", flush=True)
    watch(proxy, interval=None if args.quiet or not args.interval else args.interval, write=err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
