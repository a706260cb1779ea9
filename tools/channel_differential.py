"""Differential run: the reliability channel of another checkout against this one.

Both channels get the same sends (one at a time and in runs, whole frames and
fragments, with and without force), the same clock and the same acks and data
back from a peer over a seeded link that loses, delays, reorders and
duplicates; every datagram they send and every counter are compared at every
step. A change that claims to keep the channel's behaviour byte for byte must
pass it; the seeds vary the loss (0-60%), the window, the backlog bound, the
keepalive timer and congestion control.

    git worktree add /tmp/before <commit>        # or: git archive <commit> | tar -x -C /tmp/before
    python -m tools.channel_differential /tmp/before 400    # from this checkout
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from common.chat import events as ev
from common.session import reliability as new
from common.wire.framing import decode_datagram, encode

PREFIX = encode(ev.Session(1))
SIZES = (1, 10, 80, 104, 104, 1165, 1166, 3000, 20000)


def load_old(checkout: str) -> ModuleType:
    """The other checkout's ``common/session/reliability.py``, as a module of its own."""
    path = Path(checkout) / "common" / "session" / "reliability.py"
    spec = importlib.util.spec_from_file_location("old_reliability", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no reliability module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feed(channel: Any, module: ModuleType, datagram: bytes, now: float) -> list[bytes]:
    """Give ``datagram`` to ``channel`` as its own transport would."""
    parsed = module.parse_session(datagram)
    if parsed is not None:
        return list(channel.receive_parsed(parsed[1], parsed[2], now))
    return list(channel.receive(decode_datagram(datagram)[1:], now))


def state(c: Any) -> tuple[Any, ...]:
    return (
        c.retransmits, c.cwnd, c.bytes_in_flight, c.held_bytes, c.backlog_bytes, c.in_flight, c.rto, c.srtt,
        c.flushed, c.wants_to_send, c.next_deadline(), c.sent, c.acks_sent, c.duplicates,
    )  # fmt: skip


def one_seed(old: ModuleType, seed: int) -> tuple[int, int]:
    """Run seed ``seed``; return the datagrams compared and the retransmissions among them."""
    rnd = random.Random(seed)
    loss = rnd.choice([0, 0, 0.05, 0.2, 0.4, 0.6])
    reliable = rnd.random() < 0.85
    options = {
        "prefix": PREFIX,
        "reliable": reliable,
        "max_backlog": rnd.choice([1 << 20, 20000, 4000]),
        "keepalive_after": rnd.choice([5.0, 0.05]),
        "congestion_control": rnd.random() < 0.9,
        "window": rnd.choice([1024, 16, 3]),
    }
    a, b = old.Channel(0.0, **options), new.Channel(0.0, **options)
    peer = new.Channel(0.0, prefix=PREFIX, reliable=reliable, ack_delay=rnd.choice([0.0, 0.01]))
    now = 0.0
    ahead: list[tuple[float, bytes]] = []  # to the peer
    back: list[tuple[float, bytes]] = []  # to both senders
    compared = 0
    for step in range(400):
        now += rnd.random() * rnd.choice([0.001, 0.01, 0.05])
        if rnd.random() < 0.4:
            frames = [bytes([rnd.randrange(256)]) * rnd.choice(SIZES) for _ in range(rnd.randint(1, 12))]
            force = rnd.random() < 0.1
            if rnd.random() < 0.5:
                assert a.send_all(frames, force=force) == b.send_all(frames, force=force), (seed, step)
            else:
                for frame in frames:
                    assert a.send(frame, force=force) == b.send(frame, force=force), (seed, step)
        sent = a.datagrams(now)
        assert sent == b.datagrams(now), (seed, step)
        compared += len(sent)
        for datagram in sent:
            if rnd.random() >= loss:
                ahead.append((now + rnd.random() * 0.02, datagram))
                if rnd.random() < 0.03:
                    ahead.append((now + rnd.random() * 0.03, datagram))
        ahead.sort(key=lambda item: item[0])
        while ahead and ahead[0][0] <= now:
            feed(peer, new, ahead.pop(0)[1], now)
        for datagram in peer.datagrams(now):
            if rnd.random() >= loss:
                back.append((now + rnd.random() * 0.02, datagram))
        back.sort(key=lambda item: item[0])
        while back and back[0][0] <= now:
            datagram = back.pop(0)[1]
            feed(a, old, datagram, now)
            feed(b, new, datagram, now)
        assert state(a) == state(b), (seed, step, state(a), state(b))
        assert a.is_dead(now) == b.is_dead(now), (seed, step)
    return compared, a.retransmits


def main() -> None:
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: python -m tools.channel_differential OTHER_CHECKOUT SEEDS [FIRST_SEED]")
    old = load_old(sys.argv[1])
    count = int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) == 4 else 0
    datagrams = retransmits = 0
    for seed in range(first, first + count):
        compared, resent = one_seed(old, seed)
        datagrams += compared
        retransmits += resent
    last = first + count - 1
    print(f"seeds {first}..{last}: {datagrams:,} datagrams alike, {retransmits:,} retransmissions among them")


if __name__ == "__main__":
    main()
