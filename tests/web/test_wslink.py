"""``WsLink`` alone, sans IO: a wsproto client's bytes in, chat items and
answers out, whatever the split of the stream (whole, byte by byte, at points
hypothesis chooses), through its fast path and through wsproto alike."""

from __future__ import annotations

import pytest
import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError
from common.wire.framing import encode
from tests.strategies import split_points
from twinchat.web.websocket import Close, Item, Mode, Refused, WsLink, wrap

UPGRADE = [
    (b"host", b"x"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def client() -> wsproto.connection.Connection:
    return wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)


def opened() -> WsLink:
    link = WsLink()
    assert link.accept(UPGRADE, "/ws").startswith(b"HTTP/1.1 101 ")
    return link


def feed_all(chunks: list[bytes]) -> tuple[list[Item], bytes, bool, WsLink]:
    link = opened()
    items: list[Item] = []
    reply, ended = b"", False
    for chunk in chunks:
        got = link.feed(chunk)
        items += got.items
        reply += got.reply
        ended = ended or got.ended
    return items, reply, ended, link


BINARY_STREAM = b"".join(
    [
        client().send(BytesMessage(encode(ev.Register("ann")))),
        client().send(BytesMessage(encode(ev.Say(LOBBY, "x" * 200)))),  # a 16-bit length
        client().send(BytesMessage(encode(ev.Say(LOBBY, "y" * 4000)))),  # a 16-bit length too
        client().send(Ping(b"hi")),  # a control frame: wsproto's from here on
        client().send(BytesMessage(encode(ev.Ping(9)))),
    ]
)
BINARY_ITEMS: list[Item] = [ev.Register("ann"), ev.Say(LOBBY, "x" * 200), ev.Say(LOBBY, "y" * 4000), ev.Ping(9)]


def test_a_binary_stream_whole_and_byte_by_byte() -> None:
    for chunks in ([BINARY_STREAM], [BINARY_STREAM[i : i + 1] for i in range(len(BINARY_STREAM))]):
        items, reply, ended, link = feed_all(chunks)
        assert items == BINARY_ITEMS
        assert link.mode is Mode.FRAMES
        assert reply == wrap([b"hi"], Mode.FRAMES).replace(b"\x82", b"\x8a", 1)  # the pong: opcode 0xA
        assert not ended


@given(st.data())
def test_any_split_gives_the_same_items(data: st.DataObject) -> None:
    items, reply, _, _ = feed_all(data.draw(split_points(BINARY_STREAM)))
    assert items == BINARY_ITEMS
    assert reply.startswith(b"\x8a\x02hi")


def test_fragments_are_joined_into_one_message() -> None:
    sender = client()
    frame = encode(ev.Say(LOBBY, "fragmented"))
    stream = (
        sender.send(BytesMessage(frame[:5], message_finished=False))
        + sender.send(BytesMessage(frame[5:], message_finished=True))
        + sender.send(BytesMessage(encode(ev.Who())))
    )
    items, _, _, _ = feed_all([stream])
    assert items == [ev.Say(LOBBY, "fragmented"), ev.Who()]


def test_text_lines_and_their_errors() -> None:
    sender = client()
    stream = b"".join(sender.send(TextMessage(text)) for text in ["ann", "héllo 🌍\r\n", "two\nlines", "/me waves"])
    items, _, _, link = feed_all([stream])
    assert link.mode is Mode.LINES
    assert items[:2] == ["ann", "héllo 🌍"]
    assert isinstance(items[2], FrameRejected) and items[2].code is ErrorCode.BAD_TEXT
    assert items[3] == "/me waves"


def test_text_that_is_not_utf8_is_closed_with_1007() -> None:
    sender = client()
    bad = bytearray(sender.send(TextMessage("ok ok")))
    bad[-1] ^= ord("k") ^ 0xFF  # the last byte of the (masked) payload, made 0xFF once unmasked
    items, reply, ended, _ = feed_all([bytes(bad)])
    assert items == []
    assert ended
    assert reply[0] == 0x88 and reply[2:4] == (1007).to_bytes(2, "big")  # close, 1007 (and why)


def test_mixing_and_oversize_are_fatal_with_their_close_codes() -> None:
    sender = client()
    items, _, _, link = feed_all(
        [sender.send(BytesMessage(encode(ev.Ping(1)))) + sender.send(TextMessage("hi")) + sender.send(TextMessage("x"))]
    )
    assert items[0] == ev.Ping(1)
    assert isinstance(items[1], RemoteProtocolError) and items[1].code is ErrorCode.UNEXPECTED_FRAME
    assert len(items) == 2  # nothing after a fatal error
    assert link.close_code is Close.WRONG_KIND
    assert link.close()[:4] == b"\x88\x02\x03\xeb"  # 1003

    items, _, _, link = feed_all([client().send(BytesMessage(b"\xc1\x54" + b"z" * 70_000))])
    assert [type(i) for i in items] == [RemoteProtocolError]
    assert link.close_code is Close.TOO_BIG


def test_a_close_is_answered_and_ends_the_stream() -> None:
    sender = client()
    stream = sender.send(BytesMessage(encode(ev.Ping(3)))) + sender.send(CloseConnection(code=1001))
    items, reply, ended, link = feed_all([stream])
    assert items == [ev.Ping(3)]
    assert ended
    assert reply == b"\x88\x02\x03\xe9"  # 1001 echoed
    assert link.close() == b""  # nothing more to close


def test_an_unmasked_frame_is_a_protocol_error() -> None:
    items, reply, ended, _ = feed_all([wrap([encode(ev.Ping(1))], Mode.FRAMES)])
    assert items == []
    assert ended
    assert reply[0] == 0x88 and reply[2:4] == (1002).to_bytes(2, "big")


def test_the_end_of_the_stream_ends_it() -> None:
    link = opened()
    partial = client().send(BytesMessage(encode(ev.Ping(1))))[:-2]
    assert link.feed(partial).items == []
    got = link.feed(b"")
    assert got.ended and got.items == []


def test_a_request_that_is_no_handshake_is_refused() -> None:
    with pytest.raises(Refused):
        WsLink().accept([(b"host", b"x")], "/ws")


@given(st.binary(max_size=300), st.data())
def test_any_bytes_are_items_or_a_close_never_an_exception(garbage: bytes, data: st.DataObject) -> None:
    """Whatever a peer sends after the upgrade, the link hands on chat items or
    ends the WebSocket with a close; it never raises (no traceback, no dead reader)."""
    prefix = data.draw(st.sampled_from([b"", client().send(BytesMessage(encode(ev.Ping(1)))), b"\x81\x85"]))
    link = opened()
    for chunk in [*data.draw(split_points(prefix + garbage)), b""]:
        got = link.feed(chunk)
        assert all(isinstance(item, ev.Event | str | Exception) for item in got.items)
        if got.ended:
            break
    assert link.feed(b"").ended
