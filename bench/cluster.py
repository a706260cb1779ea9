"""``python -m bench cluster``: many servers on one Redis against one process (issue 10).

Three setups, measured in one run on the same work, each with its own fresh
processes (and Redis):

- ``one process``: one ``twinchat-server --ephemeral`` (no Redis), senders and
  receivers on it: the baseline;
- ``one on redis``: one server with ``--redis``: what the bus costs alone
  (every message goes to Redis and back before anyone gets it);
- ``A -> B``: two servers on one Redis, senders on A, receivers on B.

Each setup runs two phases. **Flood**: every sender sends its messages as
fast as TCP takes them; throughput is the messages each receiver got per
second, from the first send to the last arrival. **Paced**: every sender
sends at a steady rate well under saturation; latency is send to arrival at
the receivers (one ``CLOCK_REALTIME`` for every process of the machine),
p50 and p99. Server and Redis CPU seconds are read from ``/proc`` around the
flood. The load is threads in this process: on a small machine the servers,
Redis and the load share the cores, which the table says.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from bench.payload import make_text, parse_text
from bench.procstat import sample
from bench.servers import Child
from common.chat import events as ev
from common.wire.framing import END_OF_STREAM, NEED_DATA, StreamDecoder, encode

#: Seconds any one wait of the benchmark may take before the run is called failed.
WAIT: Final = 60.0


@dataclass(frozen=True)
class Plan:
    senders: int
    receivers: int
    flood: int  # messages per sender in the flood
    paced: int  # messages per sender in the paced phase
    rate: float  # messages per second per sender in the paced phase


@dataclass(frozen=True)
class Figures:
    setup: str
    flood_rate: float  # messages per second, per receiver
    lost: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    redis_cpu_s: float | None


class Client:
    """A framed TCP client of the benchmark: registers, then sends or counts."""

    def __init__(self, address: tuple[str, int], nick: str) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = StreamDecoder()
        self.sock.sendall(encode(ev.Register(nick)))
        self.until(lambda e: isinstance(e, ev.Replay))  # registered, in the lobby, briefed

    def events(self) -> Iterator[ev.Event]:
        while True:
            item = self.decoder.next_event()
            if item is END_OF_STREAM:
                return
            if item is NEED_DATA:
                data = self.sock.recv(1 << 18)
                self.decoder.feed(data)
                continue
            assert isinstance(item, ev.Event)
            if isinstance(item, ev.Ping):
                self.sock.sendall(encode(ev.Pong(item.nonce)))
            yield item

    def until(self, done: Callable[[ev.Event], bool]) -> None:
        for event in self.events():
            if done(event):
                return
        raise ConnectionError("the server closed the connection")

    def close(self) -> None:
        self.sock.close()


class Receiver(threading.Thread):
    """Counts the benchmark messages it gets and when, until it has ``expected``."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.expected = 0
        self.latencies_ns: list[int] = []
        self.last_ns = 0
        self.done = threading.Event()
        self.go = threading.Condition()

    def expect(self, count: int) -> None:
        with self.go:
            self.latencies_ns = []
            self.expected = count
            self.done.clear()
            self.go.notify()

    def run(self) -> None:
        try:
            for event in self.client.events():
                if isinstance(event, ev.Message) and not event.history:
                    parsed = parse_text(event.text.encode("ascii", "replace"))
                    if parsed is None:
                        continue
                    now = time.time_ns()
                    self.latencies_ns.append(now - parsed[2])
                    self.last_ns = now
                    if len(self.latencies_ns) >= self.expected:
                        self.done.set()
        except OSError:
            pass
        self.done.set()


def _drain(sock: socket.socket) -> None:
    """Read and drop what a sender is sent (its own echoes), so it is never a slow consumer."""
    try:
        while sock.recv(1 << 18):
            pass
    except OSError:
        pass


def _send(sock: socket.socket, sender: int, count: int, rate: float, start: int) -> None:
    """``count`` messages, as fast as TCP takes them (rate 0) or paced."""
    if not rate:
        batch = 100
        for first in range(0, count, batch):
            now = time.time_ns()
            frames = [
                encode(ev.Say("#lobby", make_text(sender, start + i, now).decode()))
                for i in range(first, min(count, first + batch))
            ]
            sock.sendall(b"".join(frames))
        return
    began = time.monotonic()
    for i in range(count):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for a result
        sock.sendall(encode(ev.Say("#lobby", make_text(sender, start + i, time.time_ns()).decode())))


def _phase(
    senders: list[Client], receivers: list[Receiver], per_sender: int, rate: float, start: int
) -> tuple[float, int, list[int]]:
    """One phase: (messages per second per receiver, messages lost, latencies)."""
    total = per_sender * len(senders)
    for receiver in receivers:
        receiver.expect(total)
    began = time.time_ns()
    threads = [
        threading.Thread(target=_send, args=(c.sock, i, per_sender, rate, start), daemon=True)
        for i, c in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for receiver in receivers:
        receiver.done.wait(WAIT)
    got = [len(r.latencies_ns) for r in receivers]
    ended = max(r.last_ns for r in receivers)
    lost = sum(max(0, total - g) for g in got)
    rate_per_receiver = min(got) / max(1e-9, (ended - began) / 1e9)
    return rate_per_receiver, lost, [ns for r in receivers for ns in r.latencies_ns]


def _percentile(values: Sequence[int], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _redis() -> Iterator[tuple[str, int]]:
    """A fresh ``redis-server`` on a free loopback port: (URL, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("python -m bench cluster: needs redis-server on PATH (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        port = _free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                        sock.sendall(b"PING\r\n")
                        if sock.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("python -m bench cluster: redis-server did not start") from None
                    time.sleep(0.05)  # polling a child's port until it listens
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def _server(*extra: str) -> Child:
    child = Child("twinchat.server", ["--port", "0", "--rate-limit", "0", "--max-queue", str(64 << 20), *extra])
    child.start()
    return child


def _measure(
    name: str, plan: Plan, send_to: Child, receive_from: Child, *, servers: list[Child], redis_pid: int | None
) -> Figures:
    assert send_to.address is not None and receive_from.address is not None
    receivers = [Receiver(Client(receive_from.address, f"r{i:04d}")) for i in range(plan.receivers)]
    senders = [Client(send_to.address, f"s{i:04d}") for i in range(plan.senders)]
    drains = [threading.Thread(target=_drain, args=(c.sock,), daemon=True) for c in senders]
    try:
        for thread in (*receivers, *drains):
            thread.start()
        before = [sample(s.pid) for s in servers]
        redis_before = sample(redis_pid) if redis_pid else None
        flood_rate, lost, _ = _phase(senders, receivers, plan.flood, 0, 1)
        after = [sample(s.pid) for s in servers]
        redis_after = sample(redis_pid) if redis_pid else None
        _, lost_paced, latencies = _phase(senders, receivers, plan.paced, plan.rate, plan.flood + 1)
    finally:
        for client in (*senders, *(r.client for r in receivers)):
            client.close()
    cpu = sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True) if a and b)
    redis_cpu = redis_after.cpu_s - redis_before.cpu_s if redis_after and redis_before else None
    return Figures(
        name, flood_rate, lost + lost_paced, _percentile(latencies, 0.5), _percentile(latencies, 0.99), cpu, redis_cpu
    )


def run(plan: Plan, log: Callable[[str], None]) -> list[Figures]:
    out = []
    log("one process (no Redis)")
    with _server("--ephemeral") as one:
        out.append(_measure("one process", plan, one, one, servers=[one], redis_pid=None))
    log("one server on Redis")
    with _redis() as (url, pid), _server("--redis", url) as one:
        out.append(_measure("one on redis", plan, one, one, servers=[one], redis_pid=pid))
    log("two servers on Redis: senders on A, receivers on B")
    with _redis() as (url, pid), _server("--redis", url) as a, _server("--redis", url) as b:
        out.append(_measure("A -> B", plan, a, b, servers=[a, b], redis_pid=pid))
    return out


def table(figures: Sequence[Figures]) -> str:
    base = figures[0]
    rows = [
        "| setup | flood msg/s per receiver | x one process | lost | paced p50 ms | p99 ms | x one process (p99) "
        "| servers CPU s (flood) | Redis CPU s (flood) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        redis_cpu = "-" if f.redis_cpu_s is None else f"{f.redis_cpu_s:.2f}"
        rows.append(
            f"| {f.setup} | {f.flood_rate:,.0f} | {f.flood_rate / base.flood_rate:.2f} | {f.lost} | {f.p50_ms:.2f} "
            f"| {f.p99_ms:.2f} | {f.p99_ms / base.p99_ms:.2f} | {f.server_cpu_s:.2f} | {redis_cpu} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench cluster", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--receivers", type=int, default=4)
    p.add_argument("--flood", type=int, default=5000, help="messages per sender in the flood (default: %(default)s)")
    p.add_argument("--paced", type=int, default=400, help="messages per sender, paced (default: %(default)s)")
    p.add_argument(
        "--rate", type=float, default=200.0, help="paced messages per second per sender (default: %(default)s)"
    )
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = p.parse_args(argv)
    plan = Plan(args.senders, args.receivers, args.flood, args.paced, args.rate)
    if args.quick:
        plan = Plan(1, 2, 300, 50, 100.0)

    def log(line: str) -> None:
        print(f"[bench cluster] {line}", file=sys.stderr, flush=True)

    began = time.monotonic()
    figures = run(plan, log)
    cores = len(__import__("os").sched_getaffinity(0))
    print(
        f"twinchat cluster benchmark: {plan.senders} senders, {plan.receivers} receivers, flood {plan.flood} "
        f"and paced {plan.paced} at {plan.rate:g}/s per sender; {cores} CPUs shared by the servers, Redis and "
        f"the load; {time.monotonic() - began:.0f} s"
    )
    print(table(figures))
    return 0 if all(f.lost == 0 for f in figures) else 1
