"""The plain-text line dialect: splitting, limits, dialect detection, rendering to bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError
from common.wire.framing import END_OF_STREAM, NEED_DATA, encode
from common.wire.lines import HTTP_STARTS, Dialect, LineDecoder, detect_dialect
from tests.strategies import split_points, text_chars

lines_strategy = st.lists(st.text(text_chars, max_size=40), max_size=8)


def drain(decoder: LineDecoder) -> list[str]:
    out = []
    for _ in range(100_000):
        item = decoder.next_line()
        if item is NEED_DATA or item is END_OF_STREAM:
            return out
        assert isinstance(item, str)
        out.append(item)
    raise AssertionError("the decoder never asked for more data")


@given(lines_strategy, st.sampled_from(["\n", "\r\n"]), st.data())
def test_any_split_gives_the_same_lines(lines: list[str], ending: str, data: st.DataObject) -> None:
    stream = "".join(line + ending for line in lines).encode()
    decoder = LineDecoder()
    got = []
    for chunk in data.draw(split_points(stream)):
        decoder.feed(chunk)
        got += drain(decoder)
    decoder.feed(b"")
    got += drain(decoder)
    assert got == lines


def test_whole_byte_by_byte_and_trailing() -> None:
    stream = "alice\r\nпривет 👋\nlast".encode()
    whole = LineDecoder()
    whole.feed(stream)
    assert drain(whole) == ["alice", "привет 👋"]
    assert whole.buffered == len(b"last")  # the unfinished line waits
    by_byte = LineDecoder()
    got = []
    for i in range(len(stream)):
        by_byte.feed(stream[i : i + 1])
        got += drain(by_byte)
    assert got == ["alice", "привет 👋"]
    by_byte.feed(b"")
    assert drain(by_byte) == ["last"]  # a last line without newline still counts
    assert by_byte.next_line() is END_OF_STREAM


def test_invalid_utf8_loses_only_that_line() -> None:
    decoder = LineDecoder()
    decoder.feed(b"good\n\xff\xfe bad\nalso good\n")
    assert decoder.next_line() == "good"
    with pytest.raises(FrameRejected) as caught:
        decoder.next_line()
    assert caught.value.code is ErrorCode.BAD_UTF8
    assert decoder.next_line() == "also good"


def test_an_overlong_unfinished_line_is_refused_as_it_arrives() -> None:
    decoder = LineDecoder(max_line=100)
    decoder.feed(b"short\n" + b"x" * 60)
    decoder.feed(b"x" * 60)
    assert decoder.buffered <= len(b"short\n")  # nothing of the long line is kept
    decoder.feed(b"x" * 10_000)
    assert decoder.buffered <= len(b"short\n")
    assert decoder.next_line() == "short"
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_line()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


def test_an_overlong_finished_line_is_refused_too() -> None:
    decoder = LineDecoder(max_line=100)
    decoder.feed(b"ok\n" + b"y" * 150 + b"\nafter\n")
    assert decoder.next_line() == "ok"
    with pytest.raises(RemoteProtocolError):
        decoder.next_line()
    with pytest.raises(RemoteProtocolError):
        decoder.next_line()


def test_a_line_at_the_limit_is_accepted() -> None:
    decoder = LineDecoder(max_line=10)
    decoder.feed(b"123456789\n")
    assert decoder.next_line() == "123456789"


def test_dialect_is_told_by_the_first_byte() -> None:
    assert detect_dialect(b"") is None
    assert detect_dialect(encode(ev.Register("bob"))[:1]) is Dialect.FRAMED
    assert detect_dialect(b"bob\n") is Dialect.LINES
    assert detect_dialect("Маша".encode()) is Dialect.LINES


def test_an_http_request_is_told_by_its_method_and_space() -> None:
    assert detect_dialect(b"GET / HTTP/1.1\r\n") is Dialect.HTTP
    assert detect_dialect(b"POST /x HTTP/1.1\r\n") is Dialect.HTTP
    assert detect_dialect(b"GET") is None  # may still become a request: read on
    assert detect_dialect(b"GE") is None
    assert detect_dialect(b"GET\n") is Dialect.LINES  # a nick line "GET"
    assert detect_dialect(b"GETTY\n") is Dialect.LINES
    assert detect_dialect(b"get / HTTP/1.1\r\n") is Dialect.LINES  # methods are case-sensitive


@given(st.text(text_chars, min_size=1))
def test_no_utf8_text_looks_like_a_frame(text: str) -> None:
    data = text.encode()
    told = detect_dialect(data)
    assert told is not Dialect.FRAMED
    # Only the start of an HTTP request line is not text: a nick has no space.
    starts_http = any(data[:8].startswith(s) or s.startswith(data[:8]) for s in HTTP_STARTS)
    assert told is Dialect.LINES or starts_http
