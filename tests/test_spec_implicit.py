"""What PROTOCOL.md states that a reader could not have guessed, checked
against the code (issue 13, item 16): which code points a text may not hold,
a whisper to oneself, an Ack with too many ranges, DATAGRAM_TOO_LARGE, and a
Register that is not the first segment."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from common.chat import events as ev
from common.chat.hub import Hub
from common.session.reliability import unbundle
from common.wire.errors import ErrorCode, RemoteProtocolError, RuleError
from common.wire.framing import HEADER, VERSION, decode_datagram, decode_frame, encode
from common.wire.limits import MAX_ACK_RANGES, MAX_DATAGRAM
from tests.udp.harness import PATIENCE, raw_session
from udpchat.server import ChatServer

#: PROTOCOL.md, "What a valid field holds": every code point refused in a text.
REFUSED = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0), 0xD800, 0xDBFF, 0xDC00, 0xDFFF]


@pytest.mark.parametrize("point", REFUSED, ids=lambda p: f"U+{p:04X}")
def test_the_listed_code_points_are_refused_in_a_text(point: int) -> None:
    with pytest.raises(RuleError) as caught:
        ev.Say("#a", f"a{chr(point)}b")
    assert caught.value.code is ErrorCode.BAD_TEXT


@pytest.mark.parametrize("point", [0x09, 0x20, 0x7E, 0xA0, 0x2028, 0xD7FF, 0xE000, 0xFFFD])
def test_the_code_points_around_them_are_carried(point: int) -> None:
    assert ev.Say("#a", f"a{chr(point)}b").text == f"a{chr(point)}b"


def test_a_whisper_to_oneself_is_delivered() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    hub.receive(1, ev.Register("ann"), 0.0)
    out = hub.receive(1, ev.Whisper("ANN", "note to self"), 0.0)
    assert [(d.recipients, d.event) for d in out] == [((1,), ev.Private("ann", "note to self"))]


def _ack_with(ranges: int) -> bytes:
    """An Ack frame with ``ranges`` ranges, built by hand: the event refuses more than 32."""
    payload = struct.pack(">QB", 0, ranges) + b"".join(struct.pack(">QQ", 2 * i + 2, 2 * i + 3) for i in range(ranges))
    return HEADER.pack(b"\xc1\x54", VERSION, 0x65, len(payload)) + payload


def test_an_ack_with_too_many_ranges_takes_its_whole_datagram_down() -> None:
    session, data = encode(ev.Session(1)), encode(ev.Data(0, 0, encode(ev.Ping(1))))
    assert decode_datagram(session + data + _ack_with(MAX_ACK_RANGES))[1] == ev.Data(0, 0, encode(ev.Ping(1)))
    with pytest.raises(RemoteProtocolError):
        decode_datagram(session + data + _ack_with(MAX_ACK_RANGES + 1))


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(port=0, rate_limit=0)
    srv.start()
    yield srv
    srv.shutdown()


def _segments(sock: socket.socket, token: int, *chunks: bytes) -> None:
    datagram = encode(ev.Session(token)) + b"".join(encode(ev.Data(seq, 0, c)) for seq, c in enumerate(chunks))
    sock.send(datagram)


def _frames(sock: socket.socket) -> list[ev.Event]:
    """The frames the server's next datagram carries, unwrapped from their Data (bundles cut)."""
    frames = decode_datagram(sock.recv(2048))
    pieces: list[bytes] = []
    for f in frames:
        if isinstance(f, ev.Data) and f.chunk:
            unbundle(f.chunk, pieces)
    return [decode_frame(p) for p in pieces]


def test_a_register_need_not_be_the_first_segment(server: ChatServer) -> None:
    sock, token = raw_session(server.address)
    with sock:
        sock.connect(server.address)
        # seq 0 is a keepalive (an empty chunk), seq 1 the Register.
        _segments(sock, token, b"", encode(ev.Register("late")))
        seen: list[ev.Event] = []
        sock.settimeout(PATIENCE)
        while not any(isinstance(e, ev.Welcome) for e in seen):
            seen += _frames(sock)
        assert ev.Welcome("late", 1) in seen


def test_an_oversize_datagram_is_ignored_without_an_answer(server: ChatServer) -> None:
    sock, token = raw_session(server.address)
    with sock:
        sock.connect(server.address)
        filler = encode(ev.Data(1, 0, bytes(MAX_DATAGRAM)))
        sock.send(encode(ev.Session(token)) + filler)  # over MAX_DATAGRAM: DATAGRAM_TOO_LARGE, said to nobody
        _segments(sock, token, encode(ev.Register("ann")))
        sock.settimeout(PATIENCE)
        seen: list[ev.Event] = []
        while not any(isinstance(e, ev.Welcome) for e in seen):
            seen += _frames(sock)
        assert not any(isinstance(e, ev.Error) for e in seen)
