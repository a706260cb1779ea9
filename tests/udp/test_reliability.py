"""The sans-IO reliability layer over an in-memory lossy link with a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.chat import events as ev
from common.session.reliability import (
    INITIAL_CWND,
    INITIAL_RTO,
    MAX_ACK_DELAY,
    MAX_CHUNK,
    MAX_RTO,
    MIN_CWND,
    MIN_RTO,
    NO_SEGMENTS,
    PROBES,
    RECV_WINDOW,
    SEND_WINDOW,
    TIMEOUT_BURST,
    Channel,
    encode_data,
    is_whole_frame,
    split_frame,
)
from common.wire.framing import decode_datagram, encode
from common.wire.limits import MAX_DATAGRAM, MAX_FRAME
from tests.udp.simlink import LinkConfig, SimLink, all_within_datagram_limit, session_prefix
from tests.udp.strategies import frame_lists, impairments, loss_rates, message_frames, seeds

_SIM = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(st.integers(0, 2**64 - 1), st.integers(0, 255), st.binary(max_size=MAX_CHUNK))
def test_fast_data_encoder_gives_the_framing_bytes(seq: int, remaining: int, chunk: bytes) -> None:
    assert encode_data(seq, remaining, chunk) == encode(ev.Data(seq, remaining, chunk))


@given(st.binary(min_size=1, max_size=MAX_FRAME))
def test_split_frame_joins_back_and_fits_a_datagram(frame: bytes) -> None:
    chunks = split_frame(frame)
    assert b"".join(chunks) == frame
    assert all(len(c) <= MAX_CHUNK for c in chunks)
    assert len(session_prefix(1) + encode_data(0, 0, chunks[0])) <= MAX_DATAGRAM


def test_is_whole_frame_tells_a_frame_from_a_fragment() -> None:
    frame = encode(ev.Message("#lobby", "bob", "y" * 3000))
    assert is_whole_frame(frame)
    assert not any(is_whole_frame(c) for c in split_frame(frame))


@_SIM
@given(
    seed=seeds,
    loss_ab=loss_rates,
    loss_ba=loss_rates,
    dup=impairments,
    reorder=impairments,
    frames_a=frame_lists(),
    frames_b=frame_lists(max_size=20),
)
def test_every_frame_arrives_once_and_in_order_over_a_lossy_link(
    *,
    seed: int,
    loss_ab: float,
    loss_ba: float,
    dup: float,
    reorder: float,
    frames_a: list[bytes],
    frames_b: list[bytes],
) -> None:
    link = SimLink(
        seed,
        a_to_b=LinkConfig(loss=loss_ab, duplicate=dup, reorder=reorder),
        b_to_a=LinkConfig(loss=loss_ba, duplicate=dup, reorder=reorder),
    )
    link.schedule(link.a, frames_a, spacing=0.001)
    link.schedule(link.b, frames_b, spacing=0.003)
    link.run_until_done(limit=120.0)
    assert link.done()
    assert link.b.delivered == frames_a
    assert link.a.delivered == frames_b
    assert all_within_datagram_limit(link)
    # Everything acknowledged: the accounting comes back to zero exactly.
    for end in (link.a, link.b):
        assert end.channel.bytes_in_flight == 0
        assert end.channel.held_bytes == 0
    assert not link.a.channel.is_dead(link.now)
    assert not link.b.channel.is_dead(link.now)


@pytest.mark.parametrize("loss", [0.0, 0.1, 0.2, 0.3])
def test_a_burst_of_thousands_arrives_whole_at_each_loss_rate(loss: float) -> None:
    frames = message_frames(3000)
    impaired = LinkConfig(loss=loss, duplicate=0.05, reorder=0.1)
    link = SimLink(7, a_to_b=impaired, b_to_a=impaired)
    link.schedule(link.a, frames)
    link.run_until_done(limit=120.0)
    assert link.b.delivered == frames
    # The link duplicates 5% of datagrams: the receiver saw copies, and dropped them.
    assert link.b.channel.duplicates > 0
    assert link.a.channel.in_flight == 0


def test_a_clean_link_packs_frames_and_never_retransmits() -> None:
    frames = message_frames(500)
    link = SimLink(1)
    link.schedule(link.a, frames)
    link.run_until_done(limit=10.0)
    assert link.b.delivered == frames
    assert link.a.channel.retransmits == 0
    # ~100-byte segments, about eleven to a datagram.
    assert link.a.datagrams_out < len(frames) / 8
    assert all_within_datagram_limit(link)
    srtt = link.a.channel.srtt
    assert srtt is not None and srtt == pytest.approx(0.01, rel=0.5)


def test_window_bounds_what_is_in_flight_when_nothing_comes_back() -> None:
    link = SimLink(3, a_to_b=LinkConfig(loss=1.0), b_to_a=LinkConfig(loss=1.0), congestion_control=False)
    # Frames over half a chunk: no two share a segment, so segments are frames.
    link.schedule(link.a, message_frames(3 * SEND_WINDOW, size=MAX_CHUNK // 2))
    for _ in range(200):
        link.step()
        assert link.a.channel.in_flight <= SEND_WINDOW
    assert link.a.channel.in_flight == SEND_WINDOW


def test_congestion_window_bounds_the_bytes_in_flight_when_nothing_comes_back() -> None:
    link = SimLink(3, a_to_b=LinkConfig(loss=1.0), b_to_a=LinkConfig(loss=1.0))
    link.schedule(link.a, message_frames(3 * SEND_WINDOW))
    channel = link.a.channel
    link.step()
    assert INITIAL_CWND - MAX_DATAGRAM < channel.bytes_in_flight <= INITIAL_CWND + MAX_DATAGRAM
    while link.now < 5.0:
        link.step()
        assert channel.bytes_in_flight <= INITIAL_CWND + MAX_DATAGRAM
        assert channel.in_flight < SEND_WINDOW
    # Timeout after timeout with no round trip measured: persistent congestion.
    assert channel.cwnd == MIN_CWND


def test_backlog_refuses_past_its_bound() -> None:
    channel = Channel(0.0, max_backlog=10_000)
    frame = message_frames(1, size=900)[0]
    accepted = 0
    while channel.send(frame):
        accepted += 1
    assert 0 < accepted <= 10_000 // len(frame)
    assert channel.backlog_bytes <= 10_000


@pytest.mark.parametrize("dead_after", [1.0, 15.0])
def test_death_is_declared_within_the_timeout_at_total_loss(dead_after: float) -> None:
    link = SimLink(
        5, a_to_b=LinkConfig(loss=1.0), b_to_a=LinkConfig(loss=1.0), dead_after=dead_after, keepalive_after=0.3
    )
    link.schedule(link.a, message_frames(5))
    declared = None
    while link.now < 3 * dead_after:
        link.step()
        if link.a.channel.is_dead(link.now):
            declared = link.now
            break
    assert declared is not None
    assert dead_after <= declared <= dead_after + 0.01
    # Retransmission backed off but stayed bounded.
    assert MIN_RTO <= link.a.channel.rto <= MAX_RTO


def test_an_idle_peer_that_answers_keepalives_is_never_dead() -> None:
    impaired = LinkConfig(loss=0.3)
    # dead_after is several MAX_RTOs, as the transports set it, so a keepalive
    # has many tries before its peer is given up.
    link = SimLink(11, a_to_b=impaired, b_to_a=impaired, dead_after=10.0, keepalive_after=2.5)
    for _ in range(60):
        link.run_for(1.0)
        assert not link.a.channel.is_dead(link.now)
        assert not link.b.channel.is_dead(link.now)


def test_rto_backs_off_to_its_bound_and_an_ack_that_empties_the_flight_undoes_it() -> None:
    a = Channel(0.0)
    b = Channel(0.0)
    a.send(message_frames(1)[0])
    now = 0.0
    first = a.datagrams(now)
    rtos = []
    for _ in range(12):
        now += a.rto
        resent = a.datagrams(now)
        assert resent, "the timer should have fired"
        rtos.append(a.rto)
    assert rtos == sorted(rtos)
    assert rtos[-1] == MAX_RTO
    assert a.retransmits == 12
    # Karn: the ack of a retransmitted segment gives no round-trip sample,
    # but once nothing is left in flight the backoff is undone.
    b.receive(decode_datagram(first[0]), now)
    a.receive(decode_datagram(b.datagrams(now + 0.001)[0]), now + 0.001)
    assert a.srtt is None
    assert a.rto == INITIAL_RTO
    assert a.flushed
    # A segment sent once, then acknowledged, does give a sample.
    a.send(message_frames(1)[0])
    sent = a.datagrams(now + 1.0)
    b.receive(decode_datagram(sent[0]), now + 1.0)
    a.receive(decode_datagram(b.datagrams(now + 1.05)[0]), now + 1.05)
    assert a.srtt == pytest.approx(0.05)


def test_an_ack_of_resent_segments_keeps_the_backoff_until_a_sample() -> None:
    a = Channel(0.0)
    b = Channel(0.0)
    originals = []
    for i, frame in enumerate(message_frames(3)):
        a.send(frame)
        originals += a.datagrams(i * 0.001)
    base = a.rto
    probes = a.datagrams(base)
    assert len(probes) == PROBES
    assert a.rto == 2 * base
    # The ack of the first original (a queue delayed it) covers a resent
    # segment: no sample, and the third segment is still out: the backoff holds.
    b.receive(decode_datagram(originals[0]), 0.3)
    a.receive(decode_datagram(b.datagrams(0.3)[0]), 0.3)
    assert a.in_flight == 2
    assert a.rto == 2 * base
    # The third was sent once: its ack is a sample, which resets the RTO.
    b.receive(decode_datagram(originals[2]), 0.31)
    a.receive(decode_datagram(b.datagrams(0.31)[0]), 0.31)
    assert a.srtt == pytest.approx(0.31 - 0.002)
    assert a.rto == pytest.approx(a.srtt + 4 * a.srtt / 2 + MAX_ACK_DELAY)


def test_a_segment_whose_own_ack_was_lost_gives_no_round_trip_sample() -> None:
    """Only the segment sent last among those an ack newly covers is timed: an
    older one may have waited for this ack because its own ack was lost."""
    a = Channel(0.0)
    b = Channel(0.0)
    frames = message_frames(6)
    a.send(frames[0])
    a.datagrams(0.01)  # segment 0: lost
    for frame in frames[1:5]:
        a.send(frame)
    evidence = a.datagrams(0.011)  # segments 1 to 4: arrive
    a.send(frames[5])
    late = a.datagrams(0.02)  # segment 5: arrives, but its ack is lost
    for d in evidence:
        b.receive(decode_datagram(d), 0.015)
    ack = b.datagrams(0.015)
    b.receive(decode_datagram(late[0]), 0.021)
    b.datagrams(0.021)
    a.receive(decode_datagram(ack[0]), 0.03)
    resent = a.datagrams(0.03)  # segment 0 again, on the acks' evidence
    assert a.retransmits == 1
    srtt = a.srtt
    b.receive(decode_datagram(resent[0]), 0.031)
    a.receive(decode_datagram(b.datagrams(0.031)[0]), 0.032)
    assert a.flushed
    # Segment 5 waited 12 ms for this ack, which answers the copy of segment 0
    # sent at 0.03: no sample.
    assert a.srtt == srtt


def test_a_late_ack_of_a_probed_segment_declares_nothing_else_lost() -> None:
    """RFC 8985's concern: after a spurious timeout, the ack of the first copy
    of a probed segment must not read as the ack of the probe, which would
    make every segment sent between the two look overtaken."""
    a = Channel(0.0)
    b = Channel(0.0)
    # A round trip of 10 ms first.
    a.send(message_frames(1)[0])
    b.receive(decode_datagram(a.datagrams(0.0)[0]), 0.005)
    a.receive(decode_datagram(b.datagrams(0.005)[0]), 0.01)
    assert a.srtt == pytest.approx(0.01)
    # Then one segment every 5 ms; the peer gets them all, but a queue holds
    # its acks back past the RTO.
    now = 0.01
    sent: list[bytes] = []
    for frame in message_frames(20):
        a.send(frame)
        sent.append(a.datagrams(now)[0])  # the new segment, before any probe
        now += 0.005
    assert a.retransmits == PROBES, "the timer fired once, for two probes"
    for d in sent[:PROBES]:
        b.receive(decode_datagram(d), now)
    a.receive(decode_datagram(b.datagrams(now)[0]), now)
    # The others were sent after the first copies of the probed ones:
    # nothing overtook them, nothing is resent.
    assert a.datagrams(now) == []
    assert a.retransmits == PROBES


def test_the_ack_of_a_segment_resent_on_the_acks_evidence_reveals_older_losses() -> None:
    """A copy sent after acks showed the first one overtaken is taken as the
    copy that arrived: its ack shows what was sent well before it and never
    came, without waiting for the timer."""
    a = Channel(0.0)
    b = Channel(0.0)
    a.send(message_frames(1)[0])
    b.receive(decode_datagram(a.datagrams(0.0)[0]), 0.005)
    a.receive(decode_datagram(b.datagrams(0.005)[0]), 0.01)
    frames = message_frames(6)
    a.send(frames[0])
    lost_first = a.datagrams(0.01)
    for frame in frames[1:5]:
        a.send(frame)
    arrive = a.datagrams(0.012)
    a.send(frames[5])
    lost_later = a.datagrams(0.02)
    assert lost_first and lost_later
    # Segments 2 to 5 arrive; their ack shows segment 1 overtaken: resent.
    for d in arrive:
        b.receive(decode_datagram(d), 0.045)
    a.receive(decode_datagram(b.datagrams(0.045)[0]), 0.05)
    resent = a.datagrams(0.05)
    assert a.retransmits == 1
    b.receive(decode_datagram(resent[0]), 0.055)
    a.receive(decode_datagram(b.datagrams(0.055)[0]), 0.06)
    # That ack answers the copy sent at 0.05, so segment 6, sent at 0.02, was
    # overtaken: lost once it has been out 1.125 round trips (the loss timer),
    # well before the retransmission timer.
    assert a.datagrams(0.06) == []
    assert a.next_deadline() < 0.07
    again = a.datagrams(a.next_deadline())
    assert a.retransmits == 2
    assert decode_datagram(again[0])[-1] == ev.Data(6, 0, frames[5])


def test_a_first_timeout_resends_probes_only_and_their_acks_reveal_the_rest() -> None:
    # Without congestion control, which would pace what goes again anyway.
    a = Channel(0.0, congestion_control=False)
    b = Channel(0.0)
    frames = message_frames(200)
    for frame in frames:
        a.send(frame)
    sent = a.datagrams(0.0)
    # The first datagram is lost; the others arrive, but every ack is lost.
    delivered = []
    for d in sent[1:]:
        delivered += b.receive(decode_datagram(d), 0.005)
    b.datagrams(0.005)
    assert delivered == []
    resent = a.datagrams(a.rto)
    # A timeout may be a queue as well as a loss: the first sends the two
    # probes alone, each in a datagram of its own, before anything else.
    assert [decode_datagram(d) for d in resent] == [[ev.Data(seq, 0, frames[seq])] for seq in range(PROBES)]
    assert a.retransmits == PROBES
    # Their ack shows what is still missing: sent again at once, no timeout.
    now = a.rto
    for _ in range(5):
        now += 0.005
        for d in resent:
            delivered += b.receive(decode_datagram(d), now)
        for d in b.datagrams(now):
            a.receive(decode_datagram(d), now + 0.001)
        resent = a.datagrams(now + 0.001)
    assert delivered == frames
    assert a.flushed
    assert a.retransmits < 2 * (PROBES + TIMEOUT_BURST)


def test_a_second_timeout_without_an_answer_resends_a_bounded_burst() -> None:
    a = Channel(0.0, congestion_control=False)
    for frame in message_frames(200):
        a.send(frame)
    a.datagrams(0.0)  # all lost, and nothing ever answers
    first = a.rto
    a.datagrams(first)
    assert a.retransmits == PROBES  # the first: the probes alone
    resent = a.datagrams(first + a.rto)
    assert len(resent) > PROBES
    assert a.retransmits == 2 * PROBES + TIMEOUT_BURST, "the second takes the stale for lost, a bounded burst"


def test_a_queue_that_outgrows_the_rto_costs_two_probes_not_a_window() -> None:
    # The saturated scenario's case: a window of 64 segments whose acks a
    # busy peer sends late, all of them arriving.
    a = Channel(0.0, prefix=session_prefix(1))
    b = Channel(0.0, prefix=session_prefix(2))
    for frame in message_frames(64):
        a.send(frame)
    sent = a.datagrams(0.0)
    late = a.rto + 0.010
    a.datagrams(a.rto)  # the timer fires before the acks come
    for d in sent:
        b.receive(decode_datagram(d)[1:], late)
    for d in b.datagrams(late):
        a.receive(decode_datagram(d)[1:], late)
    assert a.flushed
    assert a.retransmits == PROBES


def test_segments_beyond_the_receive_window_are_not_buffered() -> None:
    receiver = Channel(0.0)
    flood = [ev.Data(seq, 0, b"z" * 1000) for seq in range(1, RECV_WINDOW + 500)]
    delivered = receiver.receive(flood, 1.0)
    assert delivered == []
    assert receiver.reassembling <= (RECV_WINDOW - 1) * 1000
    # The missing first segment releases exactly the buffered ones, in order.
    delivered = receiver.receive([ev.Data(0, 0, b"a")], 1.0)
    assert delivered == [b"a"] + [b"z" * 1000] * (RECV_WINDOW - 1)
    assert receiver.reassembling == 0


def test_a_malformed_fragment_chain_loses_only_its_frame() -> None:
    receiver = Channel(0.0)
    frames = [
        ev.Data(0, 2, b"first of three"),
        ev.Data(1, 0, b"claims to be last"),  # the chain announced one more
        ev.Data(2, 0, b"whole"),
    ]
    assert receiver.receive(frames, 0.0) == [b"whole"]
    assert receiver.malformed == 1


def test_duplicates_are_acknowledged_and_dropped() -> None:
    receiver = Channel(0.0, prefix=session_prefix(9))
    data = ev.Data(0, 0, b"once")
    assert receiver.receive([data], 0.0) == [b"once"]
    assert receiver.receive([data, data], 0.1) == []
    assert receiver.duplicates == 2
    ack = decode_datagram(receiver.datagrams(0.1)[0])[1]
    assert ack == ev.Ack(1, ())


def test_a_datagram_with_a_foreign_frame_changes_nothing() -> None:
    receiver = Channel(0.0)
    with pytest.raises(Exception, match="inside a session datagram"):
        receiver.receive([ev.Data(0, 0, b"x"), ev.Hello(b"", b"")], 5.0)
    assert receiver.last_heard == 0.0
    assert receiver.receive([ev.Data(0, 0, b"x")], 5.0) == [b"x"]


# --- unreliable mode ------------------------------------------------------------


def test_unreliable_mode_never_retransmits_and_counts_losses() -> None:
    frames = message_frames(2000)
    link = SimLink(21, a_to_b=LinkConfig(loss=0.2, duplicate=0.05, reorder=0.1), reliable=False)
    # Queued one at a time, a segment each: a lost seq is a lost frame.
    link.schedule(link.a, frames, spacing=0.0005)
    link.run_for(2.0)
    delivered = link.b.delivered
    assert link.a.channel.retransmits == 0
    assert len(set(delivered)) == len(delivered), "a duplicate was delivered"
    assert set(delivered) <= set(frames)
    assert 0 < len(delivered) < len(frames)
    # Every message missing below the highest that arrived was counted lost
    # (one after it is not known to exist).
    highest = max(frames.index(frame) for frame in delivered)
    assert link.b.channel.lost == highest + 1 - len(delivered)


def test_unreliable_mode_delivers_bundles_frame_by_frame() -> None:
    frames = message_frames(2000)
    link = SimLink(21, a_to_b=LinkConfig(loss=0.2, duplicate=0.05, reorder=0.1), reliable=False)
    link.schedule(link.a, frames)
    link.run_for(2.0)
    delivered = link.b.delivered
    assert len(set(delivered)) == len(delivered), "a duplicate was delivered"
    assert set(delivered) <= set(frames)
    assert 0 < len(delivered) < len(frames)
    # About ten messages a bundle: a lost segment loses them all, and counts once.
    assert 0 < link.b.channel.lost * 5 < len(frames) - len(delivered)


def test_unreliable_mode_reassembles_a_fragmented_frame_arriving_out_of_order() -> None:
    big = encode(ev.Message("#lobby", "alice", "w" * 4000))
    sender = Channel(0.0, reliable=False)
    receiver = Channel(0.0, reliable=False)
    sender.send(big)
    datagrams = sender.datagrams(0.0)
    assert len(datagrams) == 4
    random.Random(3).shuffle(datagrams)
    out: list[bytes] = []
    for d in datagrams:
        out += receiver.receive(decode_datagram(d), 0.0)
    assert out == [big]
    assert receiver.reassembling == 0


def test_unreliable_reassembly_is_bounded_and_expires() -> None:
    receiver = Channel(0.0, reliable=False)
    # First fragments of many frames whose other fragments never come.
    for i in range(50):
        receiver.receive([ev.Data(i * 10, 3, b"p" * MAX_CHUNK)], 0.0)
    assert receiver.reassembling <= 8 * MAX_CHUNK
    receiver.receive([ev.Data(1000, 0, encode(ev.Joined("#lobby", "bob")))], 100.0)
    assert receiver.reassembling == 0


def test_unreliable_keepalives_are_answered_so_both_sides_stay_alive() -> None:
    link = SimLink(4, reliable=False, dead_after=2.0, keepalive_after=0.5)
    link.run_for(20.0)
    assert not link.a.channel.is_dead(link.now)
    assert not link.b.channel.is_dead(link.now)


# --- delayed acks ---------------------------------------------------------------


def _data_datagram(seq: int) -> list[ev.Event]:
    return [ev.Data(seq, 0, encode(ev.Joined("#lobby", f"n{seq}")))]


def test_a_delayed_ack_waits_for_a_second_datagram_or_its_deadline() -> None:
    receiver = Channel(0.0, ack_delay=0.01)
    receiver.receive(_data_datagram(0), 1.0)
    assert not receiver.wants_to_send
    assert receiver.datagrams(1.005) == []
    assert receiver.next_deadline() == pytest.approx(1.01)
    assert decode_datagram(receiver.datagrams(1.01)[0]) == [ev.Ack(1, ())]
    # Every second datagram with data is acknowledged at once.
    receiver.receive(_data_datagram(1), 2.0)
    assert not receiver.wants_to_send
    receiver.receive(_data_datagram(2), 2.001)
    assert receiver.wants_to_send
    assert decode_datagram(receiver.datagrams(2.001)[0]) == [ev.Ack(3, ())]


@pytest.mark.parametrize(
    "arrivals",
    [[0, 0], [1], [1, 0]],
    ids=["duplicate", "gap", "gap filled"],
)
def test_a_delayed_ack_goes_at_once_for_anything_out_of_order(arrivals: list[int]) -> None:
    receiver = Channel(0.0, ack_delay=0.01)
    now = 1.0
    for seq in arrivals[:-1]:
        receiver.receive(_data_datagram(seq), now)
        now += 0.1
        receiver.datagrams(now)  # past the deadline: the ack went
    receiver.receive(_data_datagram(arrivals[-1]), now)
    assert receiver.wants_to_send


def test_a_delayed_ack_rides_along_with_data() -> None:
    receiver = Channel(0.0, ack_delay=0.01)
    receiver.receive(_data_datagram(0), 1.0)
    receiver.send(encode(ev.Joined("#lobby", "bob")))
    frames = decode_datagram(receiver.datagrams(1.001)[0])
    assert frames[0] == ev.Ack(1, ())
    assert isinstance(frames[1], ev.Data)


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_delayed_acks_save_acks_and_lose_nothing(loss: float) -> None:
    frames = message_frames(2000)
    acks = {}
    for delay in (0.0, MAX_ACK_DELAY / 2):
        impaired = LinkConfig(loss=loss, reorder=loss)
        link = SimLink(12, a_to_b=impaired, b_to_a=impaired, ack_delay=delay)
        link.schedule(link.a, frames, spacing=0.0005)
        link.run_until_done(limit=60.0)
        assert link.b.delivered == frames
        acks[delay] = link.b.channel.acks_sent
    if not loss:
        assert acks[MAX_ACK_DELAY / 2] <= 0.6 * acks[0.0]


def test_the_tail_of_a_burst_beyond_every_ack_is_not_taken_for_lost() -> None:
    # A burst shares one clock reading; its segments above every acknowledged
    # one went after the copy that arrived, so the time threshold does not
    # judge them (a busy peer that has read only the head of the burst).
    prefix = session_prefix(1)
    channel = Channel(0.0, prefix=prefix)
    for _ in range(30):
        channel.send(b"m" * 80)  # a segment each
    assert len(channel.datagrams(0.0)) > 1
    channel.receive_parsed(NO_SEGMENTS, [(10, ())], 0.010)  # 0..9 arrived: a 10 ms round trip
    assert channel.datagrams(0.030) == []  # past 1.125 round trips, before the RTO
    assert channel.retransmits == 0
    # Below the largest acknowledged, the same burst is judged as before.
    channel.receive_parsed(NO_SEGMENTS, [(12, ((13, 20),))], 0.031)
    assert channel.datagrams(0.031) != []
    assert channel.retransmits == 1
