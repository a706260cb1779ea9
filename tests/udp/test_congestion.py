"""Congestion control in the fake-clock link: a bottleneck, a drop-tail queue, random loss.

Deterministic (seeded) runs; the bounds are loose and about counts (segments,
retransmissions, drops), never about how fast the machine ran them.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.session.reliability import INITIAL_CWND, MIN_CWND, Channel
from common.wire.framing import decode_datagram
from common.wire.limits import MAX_DATAGRAM
from tests.udp.cc_report import QUEUE, transfer
from tests.udp.simlink import LinkConfig, SimLink
from tests.udp.strategies import frame_lists, loss_rates, message_frames, seeds


def test_a_loss_free_bottleneck_costs_few_retransmissions_and_keeps_the_queue_bounded() -> None:
    result = transfer(0.0, count=1500)
    assert result.complete
    # Only slow start's overshoot fills the queue; then the window holds.
    assert result.retransmit_ratio < 0.05
    assert result.queue_drops < 0.05 * result.segments
    assert result.peak_queue <= QUEUE
    # Simulated time, not the machine's: most of the 4 Mbit/s carries payload.
    assert result.goodput_mbit > 3.0


def test_without_congestion_control_the_same_path_drowns_in_retransmissions() -> None:
    with_cc = transfer(0.0, count=300, limit=30.0)
    fixed = transfer(0.0, count=300, congestion_control=False, limit=30.0)
    assert with_cc.complete
    assert fixed.retransmits > 10 * max(1, with_cc.retransmits)


@pytest.mark.parametrize(("loss", "ratio"), [(0.05, 0.15), (0.2, 0.45)])
def test_random_loss_costs_retransmissions_in_proportion(loss: float, ratio: float) -> None:
    result = transfer(loss, count=400, seed=5)
    assert result.complete
    # Each lost segment needs at least one more copy, and not many more.
    assert loss * 0.5 < result.retransmit_ratio < ratio


def test_slow_start_grows_the_window_by_what_is_acknowledged() -> None:
    link = SimLink(2)
    channel = link.a.channel
    link.schedule(link.a, message_frames(3000, size=500))
    assert channel.cwnd == INITIAL_CWND
    link.step()
    first = channel.bytes_in_flight
    assert INITIAL_CWND <= first < INITIAL_CWND + MAX_DATAGRAM
    while channel.bytes_in_flight <= first:
        link.step()
    assert channel.cwnd > INITIAL_CWND
    assert channel.retransmits == 0


def test_a_loss_halves_the_window_once_per_round_trip() -> None:
    a = Channel(0.0)
    b = Channel(0.0)
    for frame in message_frames(200, size=500):
        a.send(frame)
    sent = a.datagrams(0.0)
    assert len(sent) > 6
    before = a.cwnd
    # Two datagrams of the same flight lost: one congestion event.
    for d in sent[:1] + sent[2:3] + sent[4:]:
        b.receive(decode_datagram(d), 0.01)
    a.receive(decode_datagram(b.datagrams(0.01)[0]), 0.02)
    assert a.cwnd == before // 2
    resent = a.datagrams(0.02)
    assert a.retransmits == len(decode_datagram(sent[1])) + len(decode_datagram(sent[3]))
    # The ack of what was sent after the loss grows the window again, slowly.
    for d in resent:
        b.receive(decode_datagram(d), 0.03)
    a.receive(decode_datagram(b.datagrams(0.03)[0]), 0.04)
    assert before // 2 <= a.cwnd < before


def test_timeouts_without_a_sample_shrink_the_window_to_its_floor() -> None:
    a = Channel(0.0)
    for frame in message_frames(100, size=500):
        a.send(frame)
    now = 0.0
    a.datagrams(now)
    for _ in range(3):
        now += a.rto
        a.datagrams(now)
    assert a.cwnd == MIN_CWND
    # Probes go whatever the window; the rest waits for acks.
    assert a.bytes_in_flight <= MIN_CWND + 3 * MAX_DATAGRAM


def test_a_lossy_bottleneck_still_delivers_everything_in_order_both_ways() -> None:
    path = LinkConfig(loss=0.1, reorder=0.05, duplicate=0.02, delay=0.01, bandwidth=250_000, queue=16_000)
    link = SimLink(9, a_to_b=path, b_to_a=path)
    frames_a = message_frames(600, size=300)
    frames_b = message_frames(200, size=900)
    link.schedule(link.a, frames_a)
    link.schedule(link.b, frames_b, spacing=0.002)
    link.run_until_done(limit=60.0)
    assert link.b.delivered == frames_a
    assert link.a.delivered == frames_b
    for end in (link.a, link.b):
        assert end.channel.bytes_in_flight == 0
        assert end.channel.held_bytes == 0


@pytest.mark.parametrize("queue", [100_000, 400_000])
def test_a_deep_queue_overflowing_in_slow_start_does_not_stall_the_transfer(queue: int) -> None:
    """Slow start overshoots a deep queue by a whole window's worth of drops.
    The timer must reach the oldest lost segment even when the congestion
    window holds its retransmission back, and take the stale for lost so
    the window can open again."""
    result = transfer(0.0, count=1000, queue=queue, limit=60.0)
    assert result.complete
    assert result.retransmits < 3 * max(1, result.queue_drops)


@pytest.mark.parametrize("jump", [0.03, 0.06, 0.2])
def test_a_sudden_queue_elsewhere_costs_few_spurious_retransmissions(jump: float) -> None:
    """Issue 14's saturation, in small: for one second a queue elsewhere lifts
    the one-way delay from 5 ms to ``jump``; nothing is lost. The old rules
    resent about half of all segments here (any ack undid the backoff, and
    the late ack of a probed segment's first copy made everything sent
    before the probe look lost)."""
    frames = message_frames(4000, size=100)
    forward = LinkConfig(delay=0.005)
    link = SimLink(1, a_to_b=forward, b_to_a=LinkConfig(delay=0.005), dead_after=60.0)
    link.schedule(link.a, frames, spacing=0.0005)
    while len(link.b.delivered) < len(frames) and link.now < 30.0:
        link.step()
        forward.delay = jump if 0.5 <= link.now < 1.5 else 0.005
    assert link.b.delivered == frames
    assert link.a.channel.retransmits < 0.05 * len(frames)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=seeds,
    loss=loss_rates,
    bandwidth=st.floats(50_000, 2_000_000),
    queue=st.integers(2_500, 200_000),
    frames=frame_lists(),
)
def test_any_bottleneck_delivers_everything_and_the_accounting_returns_to_zero(
    *, seed: int, loss: float, bandwidth: float, queue: int, frames: list[bytes]
) -> None:
    path = LinkConfig(loss=loss, delay=0.01, bandwidth=bandwidth, queue=queue)
    link = SimLink(seed, a_to_b=path, b_to_a=LinkConfig(loss=loss, delay=0.01), dead_after=120.0)
    link.schedule(link.a, frames)
    link.run_until_done(limit=120.0)
    assert link.b.delivered == frames
    channel = link.a.channel
    assert channel.bytes_in_flight == 0
    assert channel.held_bytes == 0
    assert channel.cwnd >= MIN_CWND
