"""The plain-text line dialect, so a person can chat with ``nc`` or ``telnet``.

The client sends its nick as the first line, then one message or /command per
line; ``\\n`` and ``\\r\\n`` both end a line. The server answers with one
rendered line per event, ended by ``\\n`` (what the line says is the chat's
business: ``common.session.text``).

One TCP port serves both dialects, and HTTP for the browser client:
``detect_dialect`` tells them apart by the first bytes. A frame starts with
0xC1, which no UTF-8 text can start with; a request line starts with an HTTP
method and a space, which no nick line can hold (a nick has no space).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError
from common.wire.framing import END_OF_STREAM, MAGIC, NEED_DATA, Signal
from common.wire.limits import MAX_LINE


class Dialect(Enum):
    """How a TCP client speaks."""

    #: Binary frames (``common.wire.framing``), as ``tcpchat.client`` speaks.
    FRAMED = "framed"
    #: Lines of text, as a person at ``nc`` types.
    LINES = "lines"
    #: An HTTP request: the web page, or its WebSocket (``twinchat.web``).
    HTTP = "http"


#: How an HTTP request begins: every method of RFC 9110 and a space. Only GET
#: (and HEAD) are served; the others are recognised to be refused in HTTP (405).
HTTP_STARTS: Final = tuple(
    f"{method} ".encode() for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


def detect_dialect(first_bytes: bytes | bytearray) -> Dialect | None:
    """The dialect a client speaks, judged by its first bytes.

    Returns:
        None if they cannot tell yet: nothing arrived, or only the start of an
        HTTP method (``GE``) without a newline; read more and ask again.
    """
    if not first_bytes:
        return None
    if first_bytes[0] == MAGIC[0]:
        return Dialect.FRAMED
    head = bytes(first_bytes[:8])
    for start in HTTP_STARTS:
        if head.startswith(start):
            return Dialect.HTTP
        if start.startswith(head):
            return None  # "GE" may become "GET /" or stay a nick: wait for the next bytes
    return Dialect.LINES


class LineDecoder:
    """Push decoder for the line dialect: ``feed`` bytes, pull lines as ``str``.

    An unfinished line longer than ``max_line`` bytes is refused as soon as it
    is fed (nothing of it stays buffered); a line that is not UTF-8 is skipped
    with ``FrameRejected``, since a person can type it again.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._buf = bytearray()
        self._pos = 0  # start of the next line to return
        self._scanned = 0  # no newline in _buf[_pos:_scanned]
        self._partial = 0  # start of the line that has no newline yet
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as lines."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed the stream."""
        if self._eof:
            raise RuntimeError("feed() after end of stream")
        if not data:
            self._eof = True
            return
        if self._error is not None:
            return
        size = len(self._buf)
        self._buf += data
        last = data.rfind(b"\n")
        if last >= 0:
            self._partial = size + last + 1
        # An unfinished line of max_line bytes cannot end within the cap.
        if len(self._buf) - self._partial >= self._max_line:
            del self._buf[self._partial :]
            self._error = _too_long(self._max_line)

    def next_line(self) -> str | Signal:
        """Return the next line without its line ending, ``NEED_DATA`` or ``END_OF_STREAM``.

        A last line without a newline before the end of stream still counts.

        Raises:
            FrameRejected: the line was not UTF-8 and was skipped.
            RemoteProtocolError: a line passed the cap; every later call raises too.
        """
        buf = self._buf
        newline = buf.find(b"\n", max(self._pos, self._scanned))
        if newline >= 0:
            raw = buf[self._pos : newline]
            self._pos = self._scanned = newline + 1
            if self._pos >= 1 << 16 or self._pos == len(buf):
                del buf[: self._pos]
                self._partial -= self._pos
                self._pos = self._scanned = 0
            if len(raw) + 1 > self._max_line:
                # Several whole lines arrived in one read; this one is too long.
                self._error = _too_long(self._max_line)
                del buf[:]
                self._pos = self._scanned = self._partial = 0
                raise self._error
            return _text(raw)
        self._scanned = len(buf)
        if self._error is not None:
            raise self._error
        if self._eof:
            if self._pos < len(buf):
                raw = buf[self._pos :]
                self._pos = self._scanned = self._partial = len(buf)
                return _text(raw)
            return END_OF_STREAM
        return NEED_DATA


def _too_long(limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a line passes {limit} bytes")


def _text(raw: bytes | bytearray) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        raise FrameRejected(ErrorCode.BAD_UTF8, "that line is not valid UTF-8") from None


#: The end-of-stream and need-data markers, re-exported for line readers.
__all__: Final = [
    "END_OF_STREAM",
    "HTTP_STARTS",
    "NEED_DATA",
    "Dialect",
    "LineDecoder",
    "detect_dialect",
]
