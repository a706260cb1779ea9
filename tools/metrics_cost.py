"""What counting for the metrics costs the fan-out: plain integers against prometheus-client.

The fan-out's hot path (``common.fanout.deliver``) to ten recipients, in runs
of 64 messages as the throughput scenario's server makes them, three ways:
no counting; the counting the servers do (an ``int`` per message accepted, a
``fanout.Tally`` per run, a byte count per push, as ``tcpchat.server``'s
``_Conn.push`` keeps); and the same counts as ``prometheus_client.Counter``
increments (a lock each). The recipients' push does nothing else, so the
share is larger than it would be with sockets behind it: an upper bound.
Also the cost of one increment each way. Needs ``prometheus-client``
(``pip install -e '.[metrics-cost]'``), which twinchat itself does not use::

    python -m tools.metrics_cost [--rounds 7]

Figures, not a test: medians of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from common import fanout
from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.ports import Batch

_REGISTRY = CollectorRegistry()
_PUSHED = Counter("pushed_total", "events pushed", registry=_REGISTRY)
_BYTES = Counter("sent_bytes_total", "bytes pushed", registry=_REGISTRY)
_SAID = Counter("said_total", "messages", ["kind"], registry=_REGISTRY).labels(kind="say")

#: Recipients of each message, and messages in one run of the fan-out.
RECIPIENTS = 10
RUN = 64


class _Server:
    bytes_out = 0


class _Recipient:
    """A member whose push only counts, the way the mode says."""

    view = None
    name = "member"

    def __init__(self, mode: str, server: _Server) -> None:
        self.mode = mode
        self.server = server

    def push(self, batch: Batch, last: bool) -> bool:
        data = batch.data
        if self.mode == "int":
            self.server.bytes_out += len(data)
        elif self.mode == "prometheus-client":
            _BYTES.inc(len(data))
        return True


class _PrometheusTally:
    """``fanout.Tally`` with a prometheus-client counter behind it."""

    @property
    def pushed(self) -> int:
        return 0

    @pushed.setter
    def pushed(self, value: int) -> None:
        _PUSHED.inc(value)


def per_message(mode: str, rounds: int) -> float:
    """Microseconds of the fan-out per message, counting as ``mode`` says."""
    hub: Hub[Any] = Hub()
    server = _Server()
    people = tuple(_Recipient(mode, server) for _ in range(RECIPIENTS))
    run = [Delivery(people, ev.Message("#lobby", "alice", f"message {i}", i + 1, 0)) for i in range(RUN)]
    tally: Any = {"none": None, "int": fanout.Tally(), "prometheus-client": _PrometheusTally()}[mode]
    said = {"say": 0}
    began = time.perf_counter()
    for _ in range(rounds):
        for _ in range(RUN):  # the hub's count of each message it accepts
            if mode == "int":
                said["say"] += 1
            elif mode == "prometheus-client":
                _SAID.inc()
        fanout.deliver(hub, run, None, tally)
    return (time.perf_counter() - began) / (rounds * RUN) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.metrics_cost", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="rounds; the medians are shown (default: %(default)s)")
    args = p.parse_args()

    box = _Server()
    for what, stmt in (("int += 1", "box.bytes_out += 1"), ("Counter.inc()", "_PUSHED.inc()")):
        best = min(timeit.repeat(stmt, globals={"box": box, "_PUSHED": _PUSHED}, number=200_000, repeat=5))
        print(f"one increment, {what:14s} {best / 200_000 * 1e9:7.1f} ns")
    modes = ("none", "int", "prometheus-client")
    for mode in modes:
        per_message(mode, 50)  # warm up
    # Interleaved, so that a machine growing busier or idler mid-way weighs on each mode alike.
    samples: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            samples[mode].append(per_message(mode, 300))
    medians = {m: statistics.median(v) for m, v in samples.items()}
    for mode, us in medians.items():
        share = 100 * (us / medians["none"] - 1)
        print(f"fan-out to {RECIPIENTS}, counting {mode:18s} {us:6.2f} µs/message ({share:+.1f}%)")


if __name__ == "__main__":
    main()
