"""What the stores cost the hub and the writer: SQLite against Redis (with and without hiredis).

For each store: ``append`` (under the hub lock: staging only), ``detach`` +
``write`` of a batch of 1,000 messages (the writer thread: one transaction or
one MULTI/EXEC), and the reads a join makes (``before(key, 0, 20)``: the
replay; ``after(key, seq, 500)``: a client resuming), all on history already
written. Starts its own ``redis-server`` on a free loopback port unless given
``--redis URL``::

    python -m tools.store_costs [--redis redis://127.0.0.1:6379/15] [--rounds 20]

Figures, not a test: medians of ``--rounds`` rounds, in microseconds.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import _HiredisParser, _RESP2Parser
from redis.retry import Retry

from twinchat.store.redis import READ_TIMEOUT, WRITE_TIMEOUT, RedisStore
from twinchat.store.sqlite import SqliteStore

BATCH = 1_000


@contextmanager
def _redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or give --redis URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url, protocol=2)
            for _ in range(500):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)
            client.close()
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def _use_parser(store: RedisStore, parser: type) -> None:
    """Swap the store's clients for ones with ``parser`` (hiredis or pure Python)."""
    for name, timeout in (("_reader", READ_TIMEOUT), ("_writer", WRITE_TIMEOUT)):
        getattr(store, name).close()
        client = redis.Redis.from_url(
            store.url,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            parser_class=parser,
            protocol=2,
        )
        setattr(store, name, client)


def _median_us(rounds: int, run: Callable[[], Any], per: int = 1) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) / per)
    return statistics.median(times) * 1e6


def measure(store: Any, rounds: int) -> dict[str, float]:
    store.open_room("#a", "#a")
    seq = 0

    def appends() -> None:
        nonlocal seq
        for i in range(BATCH):
            seq = store.append("#a", i, "alice", f"message number {i} with some words in it", False)

    def write() -> None:
        store.write(store.detach())

    costs: dict[str, list[float]] = {"append": [], "write": []}
    for _ in range(rounds):
        started = time.perf_counter()
        appends()
        costs["append"].append((time.perf_counter() - started) / BATCH)
        started = time.perf_counter()
        write()
        costs["write"].append(time.perf_counter() - started)
    store.detach()  # settle: every entry is now read from the store, not the overlay
    return {
        "append (us)": statistics.median(costs["append"]) * 1e6,
        f"write {BATCH} (us)": statistics.median(costs["write"]) * 1e6,
        "before(0, 20) (us)": _median_us(rounds * 10, lambda: store.before("#a", 0, 20)),
        "after(-500, 500) (us)": _median_us(rounds, lambda: store.after("#a", seq - 500, 500)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", metavar="URL", default="", help="a Redis to use (its keys under bench: are left)")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "twinchat.sqlite3", 100_000)
        results["sqlite"] = measure(store, args.rounds)
        store.close()
    with _redis_server() if not args.redis else _given(args.redis) as url:
        for label, parser in (("redis+hiredis", _HiredisParser), ("redis (python parser)", _RESP2Parser)):
            prefix = f"bench{time.monotonic_ns()}:"
            rstore = RedisStore(url, 100_000, prefix=prefix)
            _use_parser(rstore, parser)
            results[label] = measure(rstore, args.rounds)
            rstore.close()
    columns = list(next(iter(results.values())))
    print(f"{'store':24}" + "".join(f"{c:>24}" for c in columns))
    for label, row in results.items():
        print(f"{label:24}" + "".join(f"{row[c]:>24.1f}" for c in columns))


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
