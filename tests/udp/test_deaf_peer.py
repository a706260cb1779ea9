"""A peer that never acknowledges: what its channel holds, and that it all comes back.

Issue 15: a deaf UDP session cost the server about 5.4 MB that never came
back. The channel now bounds what it holds, unacknowledged and waiting
together, by ``max_backlog`` (each segment charged HELD_OVERHEAD beyond its
bytes); ``send`` says False at the bound, which is when the server drops the
peer. Memory is measured with tracemalloc around the channel alone.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from common.session.reliability import DATA_OVERHEAD, HELD_OVERHEAD, MAX_BACKLOG, Channel, split_frame
from common.wire.framing import decode_datagram
from common.wire.limits import MAX_FRAME
from tests.udp.simlink import session_prefix
from tests.udp.strategies import message_frames

#: Frame sizes: chat lines, a long message, a frame cut into many fragments.
SIZES = [80, 1000, 4100, MAX_FRAME]


def _frames(size: int) -> list[bytes]:
    """Frames of ``size`` bytes (the channel does not look inside them)."""
    return [bytes([i]) * size for i in range(20)]


@pytest.fixture
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _deafen(channel: Channel, frames: list[bytes], now: float = 0.0) -> tuple[int, float]:
    """Send until the channel refuses, running its timers as a server would
    (every 20 ms, retransmitting into the void); return the frames taken."""
    taken = 0
    while channel.send(frames[taken % len(frames)]):
        taken += 1
        assert channel.held_bytes <= channel.max_backlog
        if taken % 10 == 0:
            now += 0.02
            channel.datagrams(now)
    return taken, now


@pytest.mark.parametrize("size", SIZES)
def test_a_deaf_peer_reaches_the_bound_after_a_bounded_number_of_frames(size: int) -> None:
    frames = _frames(size)
    channel = Channel(0.0, prefix=session_prefix(1), max_backlog=200_000)
    taken, now = _deafen(channel, frames)
    per_frame = size + (DATA_OVERHEAD + HELD_OVERHEAD) * len(split_frame(frames[0]))
    assert 200_000 // per_frame - 1 <= taken <= 200_000 // per_frame + 1
    # It stays refused while the timers run on, and stays within the bound.
    for _ in range(200):
        now += 0.1
        channel.datagrams(now)
        assert not channel.send(frames[0])
        assert channel.held_bytes <= 200_000
    assert channel.is_dead(now)


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("size", SIZES)
def test_what_a_deaf_session_holds_stays_near_the_bound_and_is_freed_with_it(size: int) -> None:
    frames = _frames(size)
    before = tracemalloc.get_traced_memory()[0]
    channel = Channel(0.0, prefix=session_prefix(1))
    _, now = _deafen(channel, frames)
    for _ in range(50):
        now += 0.5
        channel.datagrams(now)
    held = tracemalloc.get_traced_memory()[0] - before
    # The bound counts what the segments cost; Python's bookkeeping of the
    # few in flight (the congestion window) comes on top.
    assert MAX_BACKLOG * 0.9 < held < MAX_BACKLOG * 1.1
    del channel
    gc.collect()
    assert tracemalloc.get_traced_memory()[0] - before < 4096


@pytest.mark.usefixtures("traced")
def test_acknowledged_segments_let_go_of_their_bytes_behind_a_lost_one() -> None:
    """Selectively acknowledged segments wait in the flight queue until the
    lost one before them is acknowledged; their frames must not wait too."""
    sender = Channel(0.0, congestion_control=False)
    for frame in message_frames(400, size=1000):
        sender.send(frame)
    datagrams = sender.datagrams(0.0)
    receiver = Channel(0.0)
    for d in datagrams[1:]:  # the first is lost
        receiver.receive(decode_datagram(d), 0.01)
    ack = decode_datagram(receiver.datagrams(0.01)[0])
    del datagrams, receiver
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    sender.receive(ack, 0.02)
    gc.collect()
    assert sender.in_flight == 1
    assert before - tracemalloc.get_traced_memory()[0] > 399 * 1000
