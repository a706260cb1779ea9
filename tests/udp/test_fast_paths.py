"""The channel's hot-path encoders and parser give what the generic framing gives.

``encode_ack`` must produce the bytes ``framing.encode`` makes of an ``Ack``;
``parse_session`` may decline any datagram (the caller then decodes it in
full), but what it accepts must be a datagram ``decode_datagram`` accepts,
with the same segments and acknowledgements. Datagrams are packed greedily.
(``send_all``, which bundles, is tested in ``test_bundles``.)
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.session.reliability import (
    MAX_CHUNK,
    NO_SEGMENTS,
    AckInfo,
    Channel,
    Segments,
    encode_ack,
    encode_data,
    parse_session,
)
from common.wire.errors import RemoteProtocolError
from common.wire.framing import decode_datagram, encode
from common.wire.limits import MAX_DATAGRAM

_U64 = st.integers(0, 2**64 - 1)


@st.composite
def acks(draw: st.DrawFn) -> ev.Ack:
    nxt = draw(st.integers(0, 2**63))
    cuts = sorted(draw(st.sets(st.integers(nxt + 1, nxt + 10_000), max_size=32)))
    ranges = tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2))
    return ev.Ack(nxt, ranges)


datas = st.builds(ev.Data, _U64, st.integers(0, 255), st.binary(max_size=200))


@st.composite
def session_datagrams(draw: st.DrawFn) -> bytes:
    frames = draw(st.lists(st.one_of(datas, acks()), max_size=6))
    datagram = encode(ev.Session(draw(_U64))) + b"".join(encode(f) for f in frames)
    return datagram[:1200]  # a cut one must be refused by both


Segment = tuple[int, int, bytes]


def _rows(columns: Segments) -> list[Segment]:
    """Columns of segments as one (seq, remaining, chunk) per segment."""
    seqs, remainings, chunks = columns
    assert len(seqs) == len(remainings) == len(chunks)
    return list(zip(seqs, remainings, chunks, strict=True))


def _as_generic(datagram: bytes) -> tuple[int, list[Segment], list[AckInfo]]:
    frames = decode_datagram(datagram)
    first = frames[0]
    assert type(first) is ev.Session
    data = [(f.seq, f.remaining, f.chunk) for f in frames[1:] if type(f) is ev.Data]
    acked = [(f.next_expected, f.ranges) for f in frames[1:] if type(f) is ev.Ack]
    assert len(data) + len(acked) == len(frames) - 1
    return first.token, data, acked


def _agrees(datagram: bytes) -> bool:
    """The fast path declines ``datagram`` (False) or reads it as the decoder does (True)."""
    parsed = parse_session(datagram)
    if parsed is None:
        return False
    try:
        generic = _as_generic(datagram)
    except RemoteProtocolError as exc:
        raise AssertionError(f"the fast path took a datagram the decoder refuses: {exc}") from None
    assert (parsed[0], _rows(parsed[1]), parsed[2]) == generic
    return True


@given(acks())
def test_fast_ack_encoder_gives_the_framing_bytes(ack: ev.Ack) -> None:
    assert encode_ack(ack.next_expected, ack.ranges) == encode(ack)


@given(session_datagrams())
def test_the_fast_parser_agrees_with_the_decoder(datagram: bytes) -> None:
    _agrees(datagram)


@given(session_datagrams(), st.data())
def test_a_damaged_datagram_is_declined_or_read_alike(datagram: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(datagram) - 1))
    byte = data.draw(st.integers(0, 255))
    damaged = datagram[:at] + bytes([byte]) + datagram[at + 1 :]
    _agrees(damaged)
    _agrees(datagram + data.draw(st.binary(max_size=20)))


@st.composite
def uniform_datagrams(draw: st.DrawFn) -> bytes:
    """A burst as a server packs one: Data frames of one chunk size, after an optional ack."""
    size = draw(st.integers(0, 120))
    head = encode_ack(draw(st.integers(0, 2**64 - 1))) if draw(st.booleans()) else b""
    room = (MAX_DATAGRAM - len(encode(ev.Session(0))) - len(head)) // (size + 19)  # Data frames that fit
    count = draw(st.integers(2, min(room, 12)))
    body = b"".join(
        encode_data(draw(_U64), draw(st.integers(0, 255)), draw(st.binary(min_size=size, max_size=size)))
        for _ in range(count)
    )
    return encode(ev.Session(draw(_U64))) + head + body


@given(uniform_datagrams(), st.data())
def test_a_burst_of_equal_segments_is_read_as_the_decoder_reads_it(datagram: bytes, data: st.DataObject) -> None:
    assert _agrees(datagram)  # whole: taken, and alike
    # A byte changed anywhere (a header, a chunk length, a chunk) or cut off:
    # declined, or still read alike.
    at = data.draw(st.integers(0, len(datagram) - 1))
    damaged = datagram[:at] + bytes([data.draw(st.integers(0, 255))]) + datagram[at + 1 :]
    _agrees(damaged)
    _agrees(datagram[: data.draw(st.integers(0, len(datagram)))])


@given(st.binary(max_size=1300))
def test_arbitrary_bytes_are_declined_or_read_alike(datagram: bytes) -> None:
    _agrees(datagram)


def test_the_common_shapes_take_the_fast_path() -> None:
    prefix = encode(ev.Session(7))
    chunk = b"m" * 80
    datagram = prefix + encode_ack(12) + encode_data(3, 0, chunk)
    assert parse_session(datagram) == (7, ([3], [0], [chunk]), [(12, ())])
    assert parse_session(prefix + encode_data(0, 0, b"")) == (7, ([0], [0], [b""]), [])
    assert parse_session(prefix + encode_ack(4)) == (7, ([], [], []), [(4, ())])
    # An Ack with ranges, and anything that is not Data or Ack, take the full decoder.
    assert parse_session(prefix + encode_ack(1, [(3, 4)])) is None
    assert parse_session(prefix + encode(ev.Ping(5))) is None
    assert parse_session(encode(ev.Hello(b"", b"\0" * 100))) is None


@given(st.lists(st.binary(min_size=1, max_size=MAX_CHUNK), min_size=1, max_size=60))
def test_datagrams_are_packed_greedily_in_order(frames: list[bytes]) -> None:
    prefix = encode(ev.Session(3))
    channel = Channel(0.0, prefix=prefix, congestion_control=False)
    for frame in frames:
        assert channel.send(frame)  # a segment each
    datagrams = channel.datagrams(0.0)
    limit = MAX_DATAGRAM - len(prefix)
    segments = [encode_data(seq, 0, frame) for seq, frame in enumerate(frames)]
    expected: list[bytes] = []
    batch = b""
    for segment in segments:
        if len(batch) + len(segment) > limit:
            expected.append(prefix + batch)
            batch = b""
        batch += segment
    expected.append(prefix + batch)
    assert datagrams == expected


def _channel_fed(datagrams: list[bytes], split: bool) -> tuple[list[bytes], Channel]:
    """A channel fed ``datagrams`` through the fast parser, each whole or
    (``split``) one segment per call; what it delivered, and the channel."""
    channel = Channel(0.0, prefix=encode(ev.Session(1)))
    delivered: list[bytes] = []
    for now, datagram in enumerate(datagrams):
        parsed = parse_session(datagram)
        assert parsed is not None
        _, (seqs, remainings, chunks), acks = parsed
        if split:
            for seq, remaining, chunk in zip(seqs, remainings, chunks, strict=True):
                delivered += channel.receive_parsed(([seq], [remaining], [chunk]), [], float(now))
        else:
            delivered += channel.receive_parsed((seqs, remainings, chunks), acks, float(now))
    return delivered, channel


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6)), max_size=12), st.data())
def test_segments_taken_in_bulk_are_taken_as_one_at_a_time(bursts: list[tuple[int, int]], data: st.DataObject) -> None:
    # Bursts of equal whole frames starting anywhere (in order, repeated,
    # ahead of a gap), some with a keepalive or a fragment among them: the
    # channel delivers the same frames, in the same order, whichever way they
    # come in, and owes the same ack.
    prefix = encode(ev.Session(1))
    frame = encode(ev.Ping(9))
    datagrams = []
    for start, count in bursts:
        chunks = [frame] * count
        remainings = [0] * count
        if data.draw(st.booleans()):
            at = data.draw(st.integers(0, count - 1))
            chunks[at] = data.draw(st.sampled_from([b"", frame[:5]]))
            remainings[at] = 0 if not chunks[at] else 1
        datagrams.append(
            prefix
            + b"".join(encode_data(start + i, r, c) for i, (r, c) in enumerate(zip(remainings, chunks, strict=True)))
        )
    whole, bulk = _channel_fed(datagrams, split=False)
    one_by_one, single = _channel_fed(datagrams, split=True)
    assert whole == one_by_one
    assert (bulk.duplicates, bulk.malformed) == (single.duplicates, single.malformed)
    acks = [parse_session(d) for d in (bulk.datagrams(99.0) + single.datagrams(99.0))]
    assert len({tuple(a[2]) for a in acks if a is not None}) <= 1  # one and the same ack, if any


def test_a_burst_in_order_is_delivered_whole() -> None:
    prefix = encode(ev.Session(1))
    frames = [encode(ev.Ping(n)) for n in range(8)]
    channel = Channel(0.0, prefix=prefix)
    first = parse_session(prefix + b"".join(encode_data(n, 0, f) for n, f in enumerate(frames[:4])))
    second = parse_session(prefix + b"".join(encode_data(4 + n, 0, f) for n, f in enumerate(frames[4:])))
    assert first is not None and second is not None
    assert channel.receive_parsed(second[1], [], 0.0) == []  # ahead of a gap: buffered
    assert channel.receive_parsed(first[1], [], 0.0) == frames  # the gap filled: all, in order
    assert channel.receive_parsed(first[1], [], 0.0) == []  # again: duplicates
    assert channel.duplicates == 4
    assert channel.receive_parsed(NO_SEGMENTS, [], 0.0) == []
