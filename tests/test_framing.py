"""The frame codec: round trips, every split of a stream, garbage, limits, datagrams."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.wire import framing
from common.wire.errors import ErrorCode, FrameRejected, LocalProtocolError, RemoteProtocolError, RuleError
from common.wire.framing import (
    END_OF_STREAM,
    FRAME_TYPES,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    VERSION,
    FrameType,
    StreamDecoder,
    decode_datagram,
    decode_frame,
    encode,
)
from common.wire.limits import MAX_DATAGRAM, MAX_FRAME, MAX_TEXT
from tests.strategies import EVENTS, any_event, split_points


def drain(decoder: StreamDecoder) -> list[ev.Event]:
    """Every event the decoder can give now; fails the test on any error."""
    out = []
    for _ in range(100_000):
        item = decoder.next_event()
        if item is NEED_DATA or item is END_OF_STREAM:
            return out
        assert isinstance(item, ev.Event)
        out.append(item)
    raise AssertionError("the decoder never asked for more data")


def raw_frame(ftype: int, payload: bytes, *, magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    return HEADER.pack(magic, version, ftype, len(payload)) + payload


#: The room most frames of these tests are said in.
R = "#lobby"


def say_frame(raw_text: bytes, room: bytes = R.encode()) -> bytes:
    return raw_frame(FrameType.SAY, bytes([len(room)]) + room + len(raw_text).to_bytes(2, "big") + raw_text)


# --- round trips -----------------------------------------------------------------


def test_every_frame_type_has_a_strategy() -> None:
    assert set(EVENTS) == set(FRAME_TYPES)


@given(any_event)
def test_decode_inverts_encode(event: ev.Event) -> None:
    assert decode_frame(encode(event)) == event


@given(any_event)
def test_header_states_type_and_length(event: ev.Event) -> None:
    frame = encode(event)
    magic, version, ftype, length = HEADER.unpack_from(frame)
    assert (magic, version, ftype) == (MAGIC, VERSION, FRAME_TYPES[type(event)])
    assert length == len(frame) - HEADER_SIZE <= MAX_FRAME - HEADER_SIZE


def test_known_bytes_of_a_message() -> None:
    # Pinned so that PROTOCOL.md's worked example stays true.
    assert encode(ev.Message("#lobby", "bob", "hi", 7, 1_798_761_600_000, False)) == bytes.fromhex(
        "c154 04 21 00000020 06 236c6f626279 03 626f62 0002 6869 0000000000000007 000001a2ce8bd400 00"
    )


# --- the stream decoder ------------------------------------------------------------


@given(st.lists(any_event, max_size=8), st.data())
def test_any_split_of_a_stream_gives_the_same_events(events: list[ev.Event], data: st.DataObject) -> None:
    stream = b"".join(encode(e) for e in events)
    decoder = StreamDecoder()
    got = []
    for chunk in data.draw(split_points(stream)):
        decoder.feed(chunk)
        got += drain(decoder)
    decoder.feed(b"")
    got += drain(decoder)
    assert got == events
    assert decoder.next_event() is END_OF_STREAM


@given(st.lists(any_event, min_size=1, max_size=4))
def test_whole_and_byte_by_byte_agree(events: list[ev.Event]) -> None:
    stream = b"".join(encode(e) for e in events)
    whole = StreamDecoder()
    whole.feed(stream)
    by_byte = StreamDecoder()
    got = []
    for i in range(len(stream)):
        by_byte.feed(stream[i : i + 1])
        got += drain(by_byte)
    assert drain(whole) == got == events


@given(st.lists(any_event, max_size=4), any_event, st.data())
def test_trailing_partial_frame_stays_buffered(events: list[ev.Event], last: ev.Event, data: st.DataObject) -> None:
    tail = encode(last)
    cut = data.draw(st.integers(1, len(tail) - 1))
    decoder = StreamDecoder()
    decoder.feed(b"".join(encode(e) for e in events) + tail[:cut])
    assert drain(decoder) == events
    assert decoder.buffered == cut
    decoder.feed(tail[cut:])
    assert drain(decoder) == [last]
    assert decoder.buffered == 0


def test_utf8_split_inside_a_character() -> None:
    event = ev.Say(R, "Маша 👋 привет")
    frame = encode(event)
    emoji_at = frame.index("👋".encode()) + 2  # inside the 4-byte emoji
    cyrillic_at = frame.index("М".encode()) + 1  # inside a 2-byte letter
    for cut in (emoji_at, cyrillic_at):
        decoder = StreamDecoder()
        decoder.feed(frame[:cut])
        assert decoder.next_event() is NEED_DATA
        decoder.feed(frame[cut:])
        assert decoder.next_event() == event


@given(st.binary(max_size=2000), st.data())
def test_arbitrary_bytes_decode_or_raise_the_protocol_error(garbage: bytes, data: st.DataObject) -> None:
    decoder = StreamDecoder()
    for chunk in data.draw(split_points(garbage)):
        decoder.feed(chunk)
    decoder.feed(b"")
    for _ in range(len(garbage) + 2):
        try:
            item = decoder.next_event()
        except FrameRejected:
            continue
        except RemoteProtocolError:
            return
        if item is END_OF_STREAM:
            return
        assert isinstance(item, ev.Event)
    raise AssertionError("the decoder neither ended nor failed")


@given(st.integers(0, 255), st.binary(max_size=600))
def test_arbitrary_payloads_behind_a_good_header_decode_or_are_rejected(ftype: int, payload: bytes) -> None:
    decoder = StreamDecoder()
    decoder.feed(raw_frame(ftype, payload) + encode(ev.Ping(7)))
    try:
        first = decoder.next_event()
    except FrameRejected:
        pass
    else:
        assert isinstance(first, ev.Event)
        assert decode_frame(encode(first)) == first
    # Whatever the payload was, the stream is still in step.
    assert decoder.next_event() == ev.Ping(7)


def test_oversize_frame_is_refused_before_it_is_buffered() -> None:
    decoder = StreamDecoder()
    good = encode(ev.Say(R, "before"))
    huge_header = HEADER.pack(MAGIC, VERSION, FrameType.SAY, MAX_FRAME)  # header + payload > cap
    decoder.feed(good + huge_header + b"x" * 5000)
    assert decoder.buffered == len(good)  # nothing of the oversize frame was kept
    decoder.feed(b"y" * 100_000)
    assert decoder.buffered == len(good)
    assert decoder.next_event() == ev.Say(R, "before")
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(RemoteProtocolError):  # and it stays broken
        decoder.next_event()


def test_a_frame_exactly_at_the_cap_is_accepted() -> None:
    payload = b"\x00" * (MAX_FRAME - HEADER_SIZE)
    decoder = StreamDecoder()
    decoder.feed(raw_frame(FrameType.HELP, payload))
    with pytest.raises(FrameRejected) as caught:  # the size is fine; the payload is not a Help
        decoder.next_event()
    assert caught.value.code is ErrorCode.MALFORMED


@pytest.mark.parametrize(
    ("prefix", "code"),
    [
        (b"\x00", ErrorCode.BAD_MAGIC),
        (b"hello\n", ErrorCode.BAD_MAGIC),
        (b"\xc1\x00", ErrorCode.BAD_MAGIC),
        (HEADER.pack(MAGIC, 1, FrameType.SAY, 0), ErrorCode.BAD_VERSION),  # before rooms
        (HEADER.pack(MAGIC, 2, FrameType.SAY, 0), ErrorCode.BAD_VERSION),  # before history
        (HEADER.pack(MAGIC, 3, FrameType.SAY, 0), ErrorCode.BAD_VERSION),  # before bundles
        (HEADER.pack(MAGIC, 5, FrameType.SAY, 0), ErrorCode.BAD_VERSION),
    ],
)
def test_bad_headers_break_the_stream_at_once(prefix: bytes, code: ErrorCode) -> None:
    decoder = StreamDecoder()
    decoder.feed(prefix)
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.code is code
    assert not isinstance(caught.value, FrameRejected)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (say_frame(b"\xff\xfe"), ErrorCode.BAD_UTF8),
        (say_frame("Маша".encode()[:-1]), ErrorCode.BAD_UTF8),  # cut mid-character
        (say_frame(b""), ErrorCode.BAD_TEXT),
        (say_frame(b"a\x1b[31mred"), ErrorCode.BAD_TEXT),
        (say_frame(b"line one\nline two"), ErrorCode.BAD_TEXT),
        (say_frame(b"x" * (MAX_TEXT + 1)), ErrorCode.TEXT_TOO_LONG),
        (raw_frame(0xEE, b"future"), ErrorCode.UNKNOWN_FRAME),
        (raw_frame(FrameType.SAY, b"\x06#lobby\x00\x09short"), ErrorCode.MALFORMED),
        (say_frame(b"hi", room=b"lobby"), ErrorCode.BAD_ROOM),
        (say_frame(b"hi", room=b"#"), ErrorCode.BAD_ROOM),
        (raw_frame(FrameType.ROOM_LIST, b"\x00\x01\x04#dev" + b"\x00" * 8 + b"\x00\x00"), ErrorCode.MALFORMED),
        (raw_frame(FrameType.PING, b"\x00" * 9), ErrorCode.MALFORMED),
        (raw_frame(FrameType.WHO_REPLY, b"\x00\x00\x02"), ErrorCode.MALFORMED),
        (raw_frame(FrameType.ERROR, b"\xff\xff\x00\x00"), ErrorCode.MALFORMED),
        (raw_frame(FrameType.REGISTER, b"\x00\x00\x00\x00"), ErrorCode.BAD_NICK),
    ],
)
def test_a_bad_payload_loses_only_its_frame(frame: bytes, code: ErrorCode) -> None:
    decoder = StreamDecoder()
    decoder.feed(frame + encode(ev.Say(R, "after")))
    with pytest.raises(FrameRejected) as caught:
        decoder.next_event()
    assert caught.value.code is code
    assert decoder.next_event() == ev.Say(R, "after")


def test_events_batches_and_reports_rejections_in_place() -> None:
    decoder = StreamDecoder()
    decoder.feed(encode(ev.Say(R, "a")) + say_frame(b"\xff") + encode(ev.Say(R, "b")) + b"\x00junk")
    batch = decoder.events()
    assert batch[0] == ev.Say(R, "a")
    assert isinstance(batch[1], FrameRejected)
    assert batch[2] == ev.Say(R, "b")
    assert isinstance(batch[3], RemoteProtocolError)
    assert batch[3].code is ErrorCode.BAD_MAGIC
    assert len(batch) == 4


def test_end_of_stream_inside_a_frame_is_truncation() -> None:
    decoder = StreamDecoder()
    decoder.feed(encode(ev.Say(R, "hi"))[:-1])
    decoder.feed(b"")
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.code is ErrorCode.TRUNCATED


def test_feeding_after_end_of_stream_is_a_bug() -> None:
    decoder = StreamDecoder()
    decoder.feed(b"")
    with pytest.raises(RuntimeError):
        decoder.feed(b"x")


# --- what may not be built or sent ---------------------------------------------------


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: ev.Say(R, ""), ErrorCode.BAD_TEXT),
        (lambda: ev.Say(R, "я" * 2049), ErrorCode.TEXT_TOO_LONG),
        (lambda: ev.Say(R, "\ud800"), ErrorCode.BAD_TEXT),
        (lambda: ev.Say(R, "tab\tis fine but bell\x07 is not"), ErrorCode.BAD_TEXT),
        (lambda: ev.Register(""), ErrorCode.BAD_NICK),
        (lambda: ev.Register("x" * 33), ErrorCode.BAD_NICK),
        (lambda: ev.Whisper("a\nb", "hi"), ErrorCode.BAD_NICK),
        (lambda: ev.Ping(-1), ErrorCode.MALFORMED),
        (lambda: ev.Ack(5, ((4, 9),)), ErrorCode.MALFORMED),
        (lambda: ev.WhoReply("", ("a",) * 51, False), ErrorCode.MALFORMED),
        (lambda: ev.WhoReply("lobby", ("a",), False), ErrorCode.BAD_ROOM),
        (lambda: ev.Topic("#dev", "x" * 391, "bob", 0, True), ErrorCode.TEXT_TOO_LONG),
        (lambda: ev.RoomList((ev.RoomInfo("#a", 1, ""),) * 51, False), ErrorCode.MALFORMED),
    ],
)
def test_invalid_events_cannot_be_built(build: object, code: ErrorCode) -> None:
    with pytest.raises(RuleError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.code is code


def test_text_limit_is_in_bytes_not_characters() -> None:
    assert ev.Say(R, "я" * 2048).text  # 4096 bytes: allowed
    assert ev.Say(R, "x\t" * 2048).text  # tabs are allowed
    with pytest.raises(RuleError):
        ev.Say(R, "👋" * 1025)


def test_encoding_something_that_is_not_an_event_is_our_fault() -> None:
    with pytest.raises(LocalProtocolError) as caught:
        encode("hello")  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.UNEXPECTED_FRAME


# --- datagrams -------------------------------------------------------------------------


small_events = any_event.filter(lambda e: len(encode(e)) <= MAX_DATAGRAM)


@given(st.lists(small_events, min_size=1, max_size=20))
def test_frames_joined_into_a_datagram_decode_to_the_same_events(events: list[ev.Event]) -> None:
    frames = [encode(e) for e in events]
    datagram = b"".join(frames)
    if len(datagram) > MAX_DATAGRAM:
        return
    assert decode_datagram(datagram) == events


@given(st.binary(max_size=1500))
def test_arbitrary_datagrams_decode_or_raise_the_protocol_error(garbage: bytes) -> None:
    try:
        decoded = decode_datagram(garbage)
    except RemoteProtocolError:
        return
    assert decoded and all(isinstance(e, ev.Event) for e in decoded)


def test_a_datagram_is_refused_whole() -> None:
    bad = encode(ev.Say(R, "ok")) + say_frame(b"\xff")
    with pytest.raises(RemoteProtocolError) as caught:
        decode_datagram(bad)
    assert caught.value.code is ErrorCode.BAD_UTF8
    with pytest.raises(RemoteProtocolError) as caught:
        decode_datagram(encode(ev.Say(R, "ok"))[:-1])
    assert caught.value.code is ErrorCode.TRUNCATED
    with pytest.raises(RemoteProtocolError) as caught:
        decode_datagram(b"")
    assert caught.value.code is ErrorCode.TRUNCATED


def test_datagram_size_limits() -> None:
    big = encode(ev.Say(R, "x" * 1500))
    with pytest.raises(RemoteProtocolError) as caught:
        decode_datagram(big)
    assert caught.value.code is ErrorCode.DATAGRAM_TOO_LARGE
    frames = [encode(ev.Say(R, "x" * 500)) for _ in range(2)]
    assert decode_datagram(b"".join(frames)) == [ev.Say(R, "x" * 500)] * 2


# --- the Say fast path ------------------------------------------------------------------


@given(st.one_of(st.binary(max_size=120), st.builds(lambda e: encode(e)[HEADER_SIZE:], EVENTS[ev.Say])))
def test_the_say_fast_path_agrees_with_the_generic_decoder(payload: bytes) -> None:
    frame = HEADER.pack(MAGIC, VERSION, FrameType.SAY, len(payload)) + payload
    outcomes = []
    for fast in (True, False):
        try:
            if fast:
                outcomes.append(decode_frame(frame))
            else:
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(framing, "_SAY", -1)  # no frame type: the generic path only
                    outcomes.append(decode_frame(frame))
        except FrameRejected as exc:
            outcomes.append(exc.code)
    assert outcomes[0] == outcomes[1]


def test_the_memo_of_room_fields_is_bounded() -> None:
    decoder = StreamDecoder()
    for i in range(3 * framing._ROOM_FIELDS_MAX):
        decoder.feed(encode(ev.Say(f"#r{i}", "hi")))
    assert [e.room for e in decoder.events()][-1] == f"#r{3 * framing._ROOM_FIELDS_MAX - 1}"  # type: ignore[union-attr]
    assert len(framing._ROOM_FIELDS) <= framing._ROOM_FIELDS_MAX


# --- the chat-line fast encoder ----------------------------------------------------------


@given(st.one_of(EVENTS[ev.Message], EVENTS[ev.Action]))
def test_the_chat_line_encoder_gives_the_layout_encoders_bytes(event: ev.Message | ev.Action) -> None:
    assert encode(event) == framing.encode_by_layout(event)


@pytest.mark.parametrize("cls", [ev.Message, ev.Action])
@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (("#r", "al", "x" * 70_000, 1, 2, False), ErrorCode.FRAME_TOO_LARGE),  # a text past its u16 length
        (("#r", "al", "\ud800", 1, 2, False), ErrorCode.BAD_UTF8),  # a lone surrogate
        (("#" + "r" * 300, "al", "hi", 1, 2, False), ErrorCode.FRAME_TOO_LARGE),  # a room past its u8 length
    ],
)
def test_a_chat_line_the_fast_encoder_cannot_take_gets_the_layout_encoders_error(
    cls: type[ev.Message | ev.Action], fields: tuple[object, ...], code: ErrorCode
) -> None:
    # Built without its checks (as the hub builds lines it checked itself),
    # so only the encoder stands between these and the wire.
    event = ev.CHECKED[cls](*fields)
    with pytest.raises(LocalProtocolError) as caught:
        encode(event)
    assert caught.value.code == code


def test_the_memo_of_chat_line_layouts_is_bounded() -> None:
    for size in range(1, 3 * framing._LINE_LAYOUTS_MAX, 3):
        event = ev.Message("#r", "al", "x" * size, 1, 2)
        assert decode_frame(encode(event)) == event
    assert len(framing._LINE_LAYOUTS) <= framing._LINE_LAYOUTS_MAX
