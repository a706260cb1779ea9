"""The WebSocket dialect (PROTOCOL.md, "WebSocket"), sans-IO over wsproto.

A binary message carries exactly one frame of PROTOCOL.md, a text message one
line of the text dialect; the first message fixes which a connection speaks
(``Mode``), and a message of the other kind later ends it. So PROTOCOL.md stays
the one spec: the page speaks frames, a person with a WebSocket tool lines.

Strategy, as ``tcpchat.tls.TlsLink``: ``WsLink`` only turns bytes into bytes.
The server's reader thread ``feed``s it what the socket brought and gets the
chat items (events, lines, errors in their place) and any answer to send at
once (a pong, the answer to a close); the fan-out, on whatever thread delivers
(hub lock held), gets the bytes of its messages from ``wrap``. wsproto's
state machine is used by both (the reader's feeds, the fan-out's closing
frame), so a lock held only around its calls keeps the threads apart. Data
frames are not wsproto's business: a server's frames are unmasked (RFC 6455,
5.1) and no extension is agreed, so a message is a 2- to 10-byte header and
the payload, built here without the lock or the state machine, for every
recipient of every delivery (the hot path).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final

import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from common.chat import events as ev
from common.wire.errors import ErrorCode, FrameRejected, ProtocolError, RemoteProtocolError
from common.wire.framing import decode_frame
from common.wire.limits import MAX_FRAME, MAX_LINE


class Mode(Enum):
    """What a WebSocket connection speaks, fixed by its first message."""

    #: Binary messages, one PROTOCOL.md frame each (the page).
    FRAMES = "binary"
    #: Text messages, one line of the text dialect each (a person with a tool).
    LINES = "text"


class Close(IntEnum):
    """The close codes the server sends (RFC 6455, 7.4.1), as PROTOCOL.md lists them."""

    #: After the chat's Goodbye (whatever ended the session), and in answer to the client's close.
    NORMAL = 1000
    #: The WebSocket itself is broken (unmasked client frame, bad opcode, ...).
    PROTOCOL_ERROR = 1002
    #: A text message on a binary connection, or the other way round.
    WRONG_KIND = 1003
    #: A text message that is not UTF-8.
    BAD_DATA = 1007
    #: A binary message that is not a well-formed frame, or a text message of more than one line.
    POLICY = 1008
    #: A message past MAX_FRAME (binary) or MAX_LINE (text).
    TOO_BIG = 1009


#: What a connection hands the chat per message: an event (binary), a line
#: (text), or the error in its place.
Item = ev.Event | str | ProtocolError

#: Header bytes of an unmasked, final data frame, by opcode (RFC 6455, 5.2).
_BINARY: Final = 0x82
_TEXT: Final = 0x81


def wrap(parts: Sequence[bytes], mode: Mode) -> bytes:
    """One WebSocket message per part, as a server sends them (unmasked, unfragmented).

    In ``Mode.LINES`` each part is a rendered line ending with ``\\n``, which
    the message does not carry (a message is the line).
    """
    first = _BINARY if mode is Mode.FRAMES else _TEXT
    trim = 0 if mode is Mode.FRAMES else 1
    out = []
    for part in parts:
        size = len(part) - trim
        if size < 126:
            out.append(bytes((first, size)))
        elif size < 1 << 16:
            out.append(struct.pack("!BBH", first, 126, size))
        else:
            out.append(struct.pack("!BBQ", first, 127, size))
        out.append(part[:size] if trim else part)
    return b"".join(out)


class LastWrapped:
    """The messages of the last delivery wrapped, for the next recipient of it.

    The fan-out pushes one run's parts (one list) to each of its recipients
    in turn; a binary WebSocket recipient's bytes are the same for all of
    them (the server's frames are unmasked), so they are built once per run,
    as the plain TCP stream's join is. Used under the caller's lock (the hub
    lock: one per server, shared by its links); it keeps the last list alive,
    so an identity that matches is that list, never a new one at its address.
    """

    __slots__ = ("_data", "_mode", "_parts")

    def __init__(self) -> None:
        self._parts: Sequence[bytes] | None = None
        self._mode: Mode | None = None
        self._data = b""

    def wrap(self, parts: Sequence[bytes], mode: Mode) -> bytes:
        if parts is not self._parts or mode is not self._mode:
            self._parts, self._mode, self._data = parts, mode, wrap(parts, mode)
        return self._data


class Refused(Exception):
    """The upgrade request is not a valid WebSocket handshake (a 400, with this detail)."""


@dataclass
class Received:
    """What one ``feed`` brought: chat items, bytes to send at once, and whether the WebSocket ended."""

    items: list[Item] = field(default_factory=list)
    reply: bytes = b""
    #: The WebSocket is over (the peer's close, or a broken one): read no more.
    ended: bool = False
    #: Why it ended, for the log.
    why: str = ""


class WsLink:
    """One server-side WebSocket over a byte stream the caller carries.

    Args:
        wrapped: the server's cache of the last delivery wrapped (hub lock).
        max_frame: largest binary message (one frame).
        max_line: largest text message, counted as a line with its newline.
    """

    def __init__(
        self, wrapped: LastWrapped | None = None, max_frame: int = MAX_FRAME, max_line: int = MAX_LINE
    ) -> None:
        self._wrapped = wrapped or LastWrapped()
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self._lock = threading.Lock()
        self._limits = {Mode.FRAMES: max_frame, Mode.LINES: max_line - 1}
        #: Binary or text, once the first message has begun.
        self.mode: Mode | None = None
        self._kind: Mode | None = None  # the message being received
        self._parts: list[bytes] = []
        self._size = 0
        #: The close code the session's last message is followed by.
        self.close_code = Close.NORMAL
        self._broken = False  # a fatal item was handed on: nothing more is
        self._held = b""  # the start of a frame the fast path waits to complete
        self._slow = False  # everything goes to wsproto from now on
        self._fast_limit = max(self._limits.values())

    def accept(self, headers: Sequence[tuple[bytes, bytes]], target: str) -> bytes:
        """The ``101 Switching Protocols`` answering an upgrade request already parsed.

        Raises:
            Refused: the request is not a WebSocket handshake wsproto accepts
                (no key, another version).
        """
        with self._lock:
            try:
                self._ws.initiate_upgrade_connection(list(headers), target)
                for event in self._ws.events():
                    if isinstance(event, Request):
                        return self._ws.send(AcceptConnection())
            except WsRemoteError as exc:
                raise Refused(str(exc)) from None
        raise Refused("not a WebSocket handshake")

    def feed(self, raw: bytes) -> Received:
        """Take the bytes the socket brought; ``b""`` is the end of the stream.

        Strategy: wsproto costs some 20 µs a message, three times the chat's
        own decoding, so the common case is read here: whole frames that are
        each a whole binary or text message, masked, without extensions, as
        a browser sends them. The first frame that is anything else (a
        fragment, a control frame, a frame too big or not UTF-8) and every
        byte after it go to wsproto, which starts on that frame's first byte,
        a frame boundary, and has the last word from then on.
        """
        got = Received()
        with self._lock:
            if self._ws.state is ConnectionState.CLOSED:
                got.ended = True
                return got
            if raw and not self._slow:
                raw = self._fast(raw, got)
                if not raw:
                    return got
            self._ws.receive_data(raw or None)
            self._events(got)
        return got

    def _fast(self, raw: bytes, got: Received) -> bytes:
        """Read the whole plain messages at the start of ``self._held + raw``;
        keep an unfinished one; return what wsproto must read (lock held)."""
        buf = self._held + raw if self._held else raw
        at, end = 0, len(buf)
        limit = self._fast_limit
        while at < end:
            first = buf[at]
            if first not in _PLAIN:
                break  # a fragment, a control frame, extension bits: wsproto's
            if at + 2 > end:
                self._held = buf[at:]
                return b""
            second = buf[at + 1]
            size = second & 0x7F
            head = 6 if size < 126 else 8 if size == 126 else 14  # with the mask key
            if at + head > end:
                self._held = buf[at:]
                return b""
            if size >= 126:
                size = int.from_bytes(buf[at + 2 : at + head - 4], "big")
            if not second & 0x80 or size > limit:
                break  # unmasked (a protocol error), or past any cap: wsproto's
            stop = at + head + size
            if stop > end:
                self._held = buf[at:]
                return b""
            key = buf[stop - size - 4 : stop - size]
            data = _unmask(buf[stop - size : stop], key)
            if first == _TEXT:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    break  # wsproto closes with 1007
            self._whole(_PLAIN[first], data, got)
            at = stop
        self._held = b""
        if at == end:
            return b""
        self._slow = True
        return buf[at:]

    def _events(self, got: Received) -> None:
        """What wsproto found in the bytes it was fed (lock held)."""
        for event in self._ws.events():
            if isinstance(event, BytesMessage | TextMessage):
                self._take(event, got)
            elif isinstance(event, Ping) and self._ws.state is ConnectionState.OPEN:
                got.reply += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self._closed(event, got)
                break

    def _closed(self, event: CloseConnection, got: Received) -> None:
        """The peer closed (or broke) the WebSocket: answer, and read no more (lock held)."""
        got.ended = True
        got.why = _PEER_CLOSES.get(event.code, f"websocket closed ({event.code})")
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            got.reply += self._ws.send(event.response())
        elif state is ConnectionState.OPEN:  # wsproto found the stream broken
            got.why = f"websocket protocol error ({event.code}: {event.reason})"
            got.reply += self._ws.send(CloseConnection(code=event.code, reason=(event.reason or "")[:100]))

    def _take(self, event: BytesMessage | TextMessage, got: Received) -> None:
        """A piece of a data message from wsproto: gather it, refused as soon
        as it breaks a rule, and hand the message on once whole (lock held)."""
        kind = Mode.FRAMES if isinstance(event, BytesMessage) else Mode.LINES
        if self._kind is None:  # a message begins
            if not self._admits(kind, 0, got):
                return
            self._kind = kind
        data = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
        self._size += len(data)
        if not self._admits(kind, self._size, got):
            return
        self._parts.append(data)
        if not event.message_finished:
            return
        message = b"".join(self._parts)
        self._parts, self._size, self._kind = [], 0, None
        self._whole(kind, message, got)

    def _admits(self, kind: Mode, size: int, got: Received) -> bool:
        """Whether a message of ``kind`` and (so far) ``size`` bytes may go on;
        if not, the fatal error is handed on (lock held). The first message
        fixes the connection's kind."""
        if self._broken:
            return False
        if self.mode is None:
            self.mode = kind
        if kind is not self.mode:
            wanted = self.mode.value
            self._fail(
                got,
                Close.WRONG_KIND,
                RemoteProtocolError(ErrorCode.UNEXPECTED_FRAME, f"this connection speaks {wanted} messages only"),
            )
            return False
        if size > self._limits[kind]:
            what = "frame" if kind is Mode.FRAMES else "line"
            self._fail(
                got,
                Close.TOO_BIG,
                RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a {what} passes {self._limits[kind]} bytes"),
            )
            return False
        return True

    def _whole(self, kind: Mode, message: bytes, got: Received) -> None:
        """A whole message: hand on its item, or the error in its place (lock held)."""
        if not self._admits(kind, len(message), got):
            return
        item = _frame_item(message) if kind is Mode.FRAMES else _line_item(message)
        if isinstance(item, ProtocolError) and not isinstance(item, FrameRejected):
            self._fail(got, Close.POLICY, item)
            return
        got.items.append(item)

    def _fail(self, got: Received, code: Close, problem: ProtocolError) -> None:
        """Hand on a fatal error: the chat says goodbye, the close after it carries ``code``."""
        self._broken = True
        self.close_code = code
        self._parts, self._size = [], 0
        got.items.append(problem)

    def wrap(self, parts: Sequence[bytes]) -> bytes:
        """The parts of one delivery as this connection's messages (``wrap``;
        call it under the lock that guards ``wrapped``)."""
        return self._wrapped.wrap(parts, self.mode or Mode.FRAMES)

    def close(self) -> bytes:
        """The close frame that follows the session's last message (b"" if the
        WebSocket is closing already: the peer's close was answered)."""
        with self._lock:
            if self._ws.state is not ConnectionState.OPEN:
                return b""
            return self._ws.send(CloseConnection(code=self.close_code))


#: How the log says why a WebSocket ended, by the peer's close code.
_PEER_CLOSES: Final = {
    1000: "websocket closed",
    1001: "websocket closed (the page went away)",
    1006: "connection closed",  # wsproto's code for a stream that ended without a close
}


#: First header bytes of a frame the fast path reads (FIN, no extension bits): its kind.
_PLAIN: Final = {_BINARY: Mode.FRAMES, _TEXT: Mode.LINES}


def _unmask(payload: bytes, key: bytes) -> bytes:
    """A client's payload unmasked (RFC 6455, 5.3), as one big-integer XOR."""
    size = len(payload)
    if not size:
        return b""
    mask = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(size, "little")


def _frame_item(message: bytes) -> Item:
    """A binary message: exactly one frame, decoded."""
    try:
        return decode_frame(message)
    except ProtocolError as exc:
        if exc.code is ErrorCode.TRUNCATED and len(message) >= 8:
            return RemoteProtocolError(ErrorCode.TRUNCATED, "a binary message holds exactly one frame")
        return exc


def _line_item(message: bytes) -> Item:
    """A text message: one line, an optional line ending dropped."""
    if message.endswith(b"\n"):
        message = message[:-1]
    if message.endswith(b"\r"):
        message = message[:-1]
    if b"\n" in message or b"\r" in message:
        return FrameRejected(ErrorCode.BAD_TEXT, "a text message holds one line")
    return message.decode("utf-8")  # wsproto checked it (1007 otherwise)
