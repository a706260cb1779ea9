"""Bundles: several whole frames in one ``Data`` chunk (PROTOCOL.md, Sequenced data).

A sender bundles the frames of one ``send_all`` call greedily, at most
``MAX_CHUNK`` bytes a chunk; a receiver cuts a chunk back into its frames at
their headers. Whatever the sizes and the cuts between calls, the frames come
out as they went in, once and in order, over a clean link or a lossy one. A
chunk whose headers do not tile it keeps the frames before the bad header and
hands on the rest as one bad piece, which the decoder refuses; the session
goes on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.session.reliability import (
    DATA_OVERHEAD,
    HELD_OVERHEAD,
    MAX_CHUNK,
    Channel,
    encode_data,
    split_frame,
    unbundle,
)
from common.wire.errors import LocalProtocolError, RemoteProtocolError
from common.wire.framing import HEADER, MAGIC, VERSION, FrameType, decode_datagram, decode_frame, encode
from tests.udp.harness import members, raw_session
from tests.udp.simlink import LinkConfig, SimLink, all_within_datagram_limit, session_prefix
from tests.udp.strategies import frame_lists, impairments, loss_rates, seeds
from udpchat.server import ChatServer

_SIM = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frame_of(size: int) -> bytes:
    """A valid frame of exactly ``size`` bytes (at least 11): a Reply."""
    return encode(ev.Reply("r" * (size - 10)))


def _segments(channel: Channel) -> list[ev.Data]:
    """Every Data segment ``channel`` sends now, in order (windows wide open)."""
    out = []
    for datagram in channel.datagrams(0.0):
        out += [f for f in decode_datagram(datagram)[1:] if isinstance(f, ev.Data)]
    return out


def _model(frames: list[bytes], bound: int, force: bool) -> tuple[int, list[tuple[int, bytes]]]:
    """What ``send_all`` should queue, by a plain loop over the frames: how
    many frames it takes, and its segments as (remaining, chunk)."""
    held = 0
    taken = 0
    segments: list[tuple[int, bytes]] = []
    bundle = b""
    for frame in frames:
        if 0 < len(frame) <= MAX_CHUNK:
            joins = bool(bundle) and len(bundle) + len(frame) <= MAX_CHUNK
            cost = len(frame) if joins else len(frame) + DATA_OVERHEAD + HELD_OVERHEAD
            if held + cost > bound and held and not force:
                break
            if not joins and bundle:
                segments.append((0, bundle))
                bundle = b""
            bundle += frame
            held += cost
        else:
            if bundle:
                segments.append((0, bundle))
                bundle = b""
            chunks = split_frame(frame)
            cost = len(frame) + (DATA_OVERHEAD + HELD_OVERHEAD) * len(chunks)
            if held + cost > bound and held and not force:
                break
            segments += [(len(chunks) - 1 - i, c) for i, c in enumerate(chunks)]
            held += cost
        taken += 1
    if bundle:
        segments.append((0, bundle))
    return taken, segments


@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=40),
    st.integers(2000, 40_000),
    st.booleans(),
    st.booleans(),
)
def test_send_all_bundles_as_a_plain_loop_would(frames: list[bytes], bound: int, force: bool, join: bool) -> None:
    # With or without the run joined by the caller (a fan-out's shared join).
    channel = Channel(0.0, prefix=session_prefix(1), max_backlog=bound, congestion_control=False)
    taken, expected = _model(frames, bound, force)
    assert channel.send_all(frames, force=force, joined=b"".join(frames) if join else b"") == taken
    size = sum(len(c) + DATA_OVERHEAD for _, c in expected)
    assert (channel.sent, channel.backlog_bytes) == (len(expected), size)
    assert channel.held_bytes == size + HELD_OVERHEAD * len(expected)
    assert [(s.remaining, s.chunk) for s in _segments(channel)] == expected


def test_send_all_queues_those_before_a_frame_it_cannot_send() -> None:
    channel = Channel(0.0)
    with pytest.raises(LocalProtocolError):
        channel.send_all([b"a", b"b", b""])
    assert (channel.sent, channel.backlog_bytes) == (1, 2 + DATA_OVERHEAD)  # a and b, one bundle


@pytest.mark.parametrize(
    ("sizes", "chunks"),
    [
        ([MAX_CHUNK // 2, MAX_CHUNK - MAX_CHUNK // 2], [2]),  # exactly full: one chunk
        ([MAX_CHUNK // 2, MAX_CHUNK - MAX_CHUNK // 2 + 1], [1, 1]),  # a byte over: two
        ([MAX_CHUNK], [1]),  # the largest frame that travels whole, alone
        ([20, MAX_CHUNK, 20], [1, 1, 1]),
        ([20, 20, MAX_CHUNK + 1, 20, 20], [2, "fragment", "fragment", 2]),  # fragments break a run
        ([100] * 30, [11, 11, 8]),
    ],
)
def test_bundles_are_cut_at_the_chunk_limit(sizes: list[int], chunks: list[int | str]) -> None:
    frames = [_frame_of(n) for n in sizes]
    channel = Channel(0.0, prefix=session_prefix(1), congestion_control=False)
    assert channel.send_all(frames) == len(frames)
    segments = _segments(channel)
    assert all(len(s.chunk) <= MAX_CHUNK for s in segments)
    shape: list[int | str] = []
    for segment in segments:
        pieces: list[bytes] = []
        if segment.remaining or not unbundle(segment.chunk, pieces):
            shape.append("fragment")
        else:
            shape.append(len(pieces))
    assert shape == chunks


@given(frame_lists(), st.data())
def test_frames_come_out_of_bundles_as_they_went_in(frames: list[bytes], data: st.DataObject) -> None:
    # Any frames, queued in any runs: the receiver delivers them one by one,
    # or (``split_bundles=False``) as byte strings of whole frames that join
    # to the same stream.
    sender = Channel(0.0, prefix=session_prefix(1), congestion_control=False)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frames)), max_size=5)))
    for start, stop in zip([0, *cuts], [*cuts, len(frames)], strict=True):
        assert sender.send_all(frames[start:stop]) == stop - start
    datagrams = sender.datagrams(0.0)
    split, whole = Channel(0.0), Channel(0.0, split_bundles=False)
    one_by_one: list[bytes] = []
    joined: list[bytes] = []
    for datagram in datagrams:
        segments = decode_datagram(datagram)[1:]
        one_by_one += split.receive(segments, 0.0)
        joined += whole.receive(segments, 0.0)
    assert one_by_one == frames
    assert b"".join(joined) == b"".join(frames)
    assert len(joined) == sender.sent - sum(len(split_frame(f)) - 1 for f in frames)


@given(st.lists(st.sampled_from([encode(ev.Ping(1)), encode(ev.Reply("hi"))]), max_size=6), st.binary(max_size=40))
def test_unbundle_keeps_every_byte_and_says_whether_the_frames_tiled(frames: list[bytes], tail: bytes) -> None:
    chunk = b"".join(frames) + tail
    if not chunk:
        return
    pieces: list[bytes] = []
    tiled = unbundle(chunk, pieces)
    assert b"".join(pieces) == chunk
    assert pieces[: len(frames)] == frames or not tiled
    if tiled:
        assert all(decode_frame(p) is not None for p in pieces)
    else:
        # The frames before the bad header stand; the rest is one piece the decoder refuses.
        with pytest.raises(RemoteProtocolError):
            decode_frame(pieces[-1])


def test_a_bad_frame_inside_a_bundle_loses_that_frame_or_the_rest_of_the_chunk() -> None:
    one, two, three = (encode(ev.Reply(t)) for t in ("one", "two", "three"))
    bad_payload = HEADER.pack(MAGIC, VERSION, FrameType.REPLY, 1) + b"\x00"  # a text cut short
    bad_version = HEADER.pack(MAGIC, 3, FrameType.REPLY, 5) + b"\x00\x03two"
    overlong = HEADER.pack(MAGIC, VERSION, FrameType.REPLY, 500) + b"\x00\x03two"
    channel = Channel(0.0)
    out = channel.receive(
        [
            ev.Data(0, 0, one + bad_payload + two),  # tiles: a bad frame among good ones
            ev.Data(1, 0, one + bad_version + three),  # a bad header: the rest is one bad piece
            ev.Data(2, 0, two + overlong),  # a length past the chunk's end: likewise
            ev.Data(3, 0, three),  # and the session goes on
        ],
        0.0,
    )
    assert out == [one, bad_payload, two, one, bad_version + three, two, overlong, three]
    for piece in (bad_payload, bad_version + three, overlong):
        with pytest.raises(RemoteProtocolError):
            decode_frame(piece)


def test_unreliable_mode_unbundles_and_tells_a_bundle_from_a_last_fragment() -> None:
    big = encode(ev.Message("#lobby", "alice", "w" * 3000))
    small = [encode(ev.Reply(str(n))) for n in range(5)]
    sender = Channel(0.0, prefix=session_prefix(1), reliable=False)
    receiver = Channel(0.0, reliable=False)
    assert sender.send_all([*small, big, *small]) == 11
    out: list[bytes] = []
    for datagram in sender.datagrams(0.0):
        out += receiver.receive(decode_datagram(datagram)[1:], 0.0)
    assert out == [*small, big, *small]


@_SIM
@given(
    seed=seeds,
    loss=loss_rates,
    dup=impairments,
    reorder=impairments,
    frames=frame_lists(),
    bursts=st.lists(st.integers(1, 20), min_size=1, max_size=8),
)
def test_bundled_bursts_arrive_once_and_in_order_over_a_lossy_link(
    *, seed: int, loss: float, dup: float, reorder: float, frames: list[bytes], bursts: list[int]
) -> None:
    # Bursts queued at once travel as bundles; the lossy fake-clock link
    # drops, duplicates and reorders their datagrams, both ways.
    impaired = LinkConfig(loss=loss, duplicate=dup, reorder=reorder)
    link = SimLink(seed, a_to_b=impaired, b_to_a=impaired)
    start = 0
    for index, size in enumerate(bursts):
        link.schedule(link.a, frames[start : start + size], start=0.05 * index)
        link.schedule(link.b, list(reversed(frames[start : start + size])), start=0.05 * index + 0.01)
        start += size
    link.schedule(link.a, frames[start:], start=0.05 * len(bursts))
    link.run_until_done(limit=120.0)
    assert link.done()
    assert link.b.delivered == link.a.sent == frames
    assert link.a.delivered == link.b.sent
    assert all_within_datagram_limit(link)
    for end in (link.a, link.b):
        assert end.channel.held_bytes == 0


def test_a_run_of_messages_costs_a_segment_per_bundle_not_per_message() -> None:
    frames = [encode(ev.Message(LOBBY, "ann", f"line {n} " + "x" * 50)) for n in range(100)]
    link = SimLink(5)
    link.schedule(link.a, frames)
    link.run_until_done(limit=10.0)
    assert link.b.delivered == frames
    assert link.a.channel.sent <= len(frames) // 8  # about twelve lines a segment


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(port=0, rate_limit=0)
    srv.start()
    yield srv
    srv.shutdown()


def test_the_server_handles_every_frame_of_a_bundle_and_a_bad_one_as_over_tcp(server: ChatServer) -> None:
    # A frame with a bad payload is refused alone (an Error, the session goes
    # on); a bad header ends the session, as it ends a TCP stream; the frames
    # before it stand.
    with members(server.address, "bob") as (bob,):
        sock, token = raw_session(server.address)
        try:
            prefix = encode(ev.Session(token))
            say = [encode(ev.Say(LOBBY, t)) for t in ("one", "two", "three", "four")]
            bad_payload = HEADER.pack(MAGIC, VERSION, FrameType.SAY, 1) + b"\x00"
            bad_header = b"\xc1\x54\x09" + b"\x00" * 10
            segments = [
                encode_data(0, 0, encode(ev.Register("raw")) + say[0] + bad_payload + say[1]),
                encode_data(1, 0, say[2] + bad_header + say[3]),
            ]
            sock.sendto(prefix + b"".join(segments), server.address)
            assert bob.wait_for(lambda m: m.has(ev.Left, nick="raw"))
        finally:
            sock.close()
        assert bob.texts("raw") == ["one", "two", "three"]
        assert server.counters["bad frame"] == 2
