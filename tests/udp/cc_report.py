"""Goodput and retransmissions of one bulk transfer through a bottleneck, in the fake-clock link.

Run as ``python -m tests.udp.cc_report``: one sender pushes ``--mbytes`` of chat
frames through a ``--mbit`` bottleneck with a drop-tail queue, at 0%, 5% and
20% random loss each way, with the congestion controller and without it (the
old fixed window of 1024 segments). Deterministic: the link draws from one
seeded ``Random``. The figures are simulated seconds, not the machine's speed,
so they compare rules, not code; tests assert only on loose bounds of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from tests.udp.simlink import LinkConfig, SimLink
from tests.udp.strategies import message_frames

#: The path of the report: 4 Mbit/s, 20 ms of round trip, a queue of about two BDPs.
MBIT = 4.0
ONE_WAY_DELAY = 0.010
QUEUE = 20_000


@dataclass(frozen=True)
class Transfer:
    """What one transfer did."""

    loss: float
    congestion_control: bool
    frames: int
    payload: int  # bytes of frames delivered
    seconds: float  # simulated, from the first send to the last frame delivered
    segments: int  # new segments sent
    retransmits: int
    queue_drops: int
    peak_queue: int
    complete: bool

    @property
    def goodput_mbit(self) -> float:
        return self.payload * 8 / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def retransmit_ratio(self) -> float:
        """Retransmissions per new segment."""
        return self.retransmits / self.segments if self.segments else 0.0


def transfer(
    loss: float,
    *,
    congestion_control: bool = True,
    seed: int = 1,
    count: int = 1000,
    text: int = 1000,
    mbit: float = MBIT,
    queue: int = QUEUE,
    limit: float = 120.0,
) -> Transfer:
    """Push ``count`` messages of ``text`` bytes from a to b through the bottleneck."""
    frames = message_frames(count, size=text)
    forward = LinkConfig(loss=loss, delay=ONE_WAY_DELAY, bandwidth=mbit * 1e6 / 8, queue=queue)
    back = LinkConfig(loss=loss, delay=ONE_WAY_DELAY)
    link = SimLink(seed, a_to_b=forward, b_to_a=back, congestion_control=congestion_control, dead_after=limit)
    link.schedule(link.a, frames)
    delivered = link.b.delivered
    while len(delivered) < count and link.now < limit:
        link.step()
    sender = link.a.channel
    bottleneck = link.bottleneck["a"]
    return Transfer(
        loss=loss,
        congestion_control=congestion_control,
        frames=count,
        payload=sum(len(f) for f in delivered),
        seconds=link.now,
        segments=sender.sent,
        retransmits=sender.retransmits,
        queue_drops=bottleneck.drops,
        peak_queue=bottleneck.peak_queue,
        complete=delivered == frames,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mbit", type=float, default=MBIT, help="bottleneck rate (default: %(default)s)")
    parser.add_argument("--queue", type=int, default=QUEUE, help="drop-tail queue, bytes (default: %(default)s)")
    parser.add_argument("--count", type=int, default=2000, help="messages (default: %(default)s)")
    parser.add_argument("--text", type=int, default=1000, help="bytes of text each (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per row, averaged (default: %(default)s)")
    args = parser.parse_args(argv)
    capacity = args.mbit
    print(
        f"{args.count} messages of {args.text} B through {capacity:g} Mbit/s, "
        f"{2 * ONE_WAY_DELAY * 1000:g} ms RTT, {args.queue} B drop-tail queue; "
        f"loss each way; mean of {args.seeds} seeds"
    )
    print(f"{'loss':>5} {'cc':>8} {'goodput Mbit/s':>15} {'retransmits':>12} {'queue drops':>12} {'done':>5}")
    for loss in (0.0, 0.05, 0.2):
        for cc in (True, False):
            runs = [
                transfer(
                    loss,
                    congestion_control=cc,
                    seed=seed,
                    count=args.count,
                    text=args.text,
                    mbit=args.mbit,
                    queue=args.queue,
                )
                for seed in range(1, args.seeds + 1)
            ]
            goodput = sum(r.goodput_mbit for r in runs) / len(runs)
            ratio = sum(r.retransmit_ratio for r in runs) / len(runs)
            drops = sum(r.queue_drops for r in runs) / len(runs)
            done = all(r.complete for r in runs)
            name = "NewReno" if cc else "fixed"
            print(f"{loss:>5.0%} {name:>8} {goodput:>15.2f} {ratio:>12.1%} {drops:>12.0f} {'yes' if done else 'NO':>5}")


if __name__ == "__main__":
    main()
