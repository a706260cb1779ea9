"""One binary frame format, for the TCP byte stream and for UDP datagrams.

A frame is an 8-byte header and a payload::

    offset  size  field
    0       2     magic    0xC1 0x54 (0xC1 never begins valid UTF-8, so a
                           text line can never be taken for a frame)
    2       1     version  2
    3       1     type     FrameType
    4       4     length   payload bytes, big-endian; header + payload <= MAX_FRAME

The payload is the event's fields, in declaration order, each laid out by its
kind (the ``Packer``/``Unpacker`` pairs below; PROTOCOL.md has the same table).

Strategy: one table, ``_LAYOUTS``, maps every event class to its frame type and
field kinds; the encoder and both decoders are driven by it, so adding a frame
is adding a row. Checking is split by cost: the header (magic, version, size)
is checked as soon as its bytes arrive, before the payload is buffered, which
is what bounds memory; the payload is decoded and validated only when the
whole frame is there. A bad header breaks the stream (``RemoteProtocolError``);
a bad payload inside a good header only loses that frame (``FrameRejected``),
because the length tells where the next frame starts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from enum import Enum, IntEnum
from typing import Any, Final

from common.chat import events as ev
from common.wire.errors import ErrorCode, FrameRejected, LocalProtocolError, RemoteProtocolError, RuleError
from common.wire.limits import MAX_DATAGRAM, MAX_FRAME

MAGIC: Final = b"\xc1\x54"
#: 2 since rooms: Say, Act, Message, Action, Joined and WhoReply gained a room field.
#: 3 since history and accounts: Message and Action gained seq, time and
#: history; Private gained time and kept; Register gained a password and Join
#: a resume flag, and Join a resume position (epoch, after).
#: 4 since bundles: a UDP Data chunk may hold several whole frames, which a
#: version 3 receiver would take for one bad frame.
VERSION: Final = 4
HEADER: Final = struct.Struct(">2sBBI")
HEADER_SIZE: Final = HEADER.size


class FrameType(IntEnum):
    """The type byte of the header."""

    REGISTER = 0x01
    SAY = 0x02
    ACT = 0x03
    WHISPER = 0x04
    CHANGE_NICK = 0x05
    WHO = 0x06
    HELP = 0x07
    JOIN = 0x08
    PART = 0x09
    LIST_ROOMS = 0x0A
    NAMES = 0x0B
    GET_TOPIC = 0x0C
    SET_TOPIC = 0x0D
    HISTORY = 0x0E
    REGISTER_ACCOUNT = 0x0F
    CHANGE_PASSWORD = 0x10
    DROP_ACCOUNT = 0x11

    WELCOME = 0x20
    MESSAGE = 0x21
    ACTION = 0x22
    PRIVATE = 0x23
    JOINED = 0x24
    LEFT = 0x25
    RENAMED = 0x26
    WHO_REPLY = 0x27
    REPLY = 0x28
    ERROR = 0x29
    PARTED = 0x2A
    TOPIC = 0x2B
    ROOM_LIST = 0x2C
    REPLAY = 0x2D

    PING = 0x40
    PONG = 0x41
    GOODBYE = 0x42

    HELLO = 0x60
    COOKIE = 0x61
    ACCEPT = 0x62
    SESSION = 0x63
    DATA = 0x64
    ACK = 0x65


class Signal(Enum):
    """What ``StreamDecoder.next_event`` returns when it has no event to give."""

    #: Feed more bytes.
    NEED_DATA = "need data"
    #: ``feed(b"")`` was called and every frame before it has been returned.
    END_OF_STREAM = "end of stream"


NEED_DATA: Final = Signal.NEED_DATA
END_OF_STREAM: Final = Signal.END_OF_STREAM


# --- field kinds ---------------------------------------------------------------
#
# A kind packs one field value to bytes and unpacks it from ``buf`` at ``pos``,
# returning the value and the position after it; ``end`` is the end of the
# payload, which no kind may read past.


class _Short(Exception):
    """A field runs past the end of its payload (turned into MALFORMED)."""


Packer = Callable[[Any], bytes]
Unpacker = Callable[[bytes | bytearray, int, int], tuple[Any, int]]


def _int_kind(fmt: str) -> tuple[Packer, Unpacker]:
    st = struct.Struct(fmt)

    def unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
        stop = pos + st.size
        if stop > end:
            raise _Short
        return st.unpack_from(buf, pos)[0], stop

    return st.pack, unpack


def _sized_kind(prefix_fmt: str, *, text: bool) -> tuple[Packer, Unpacker]:
    prefix = struct.Struct(prefix_fmt)
    limit = (1 << (8 * prefix.size)) - 1

    def pack(value: Any) -> bytes:
        raw = value.encode("utf-8") if text else bytes(value)
        if len(raw) > limit:
            raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a field of {len(raw)} bytes exceeds {limit}")
        return prefix.pack(len(raw)) + raw

    def unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
        start = pos + prefix.size
        if start > end:
            raise _Short
        stop = start + prefix.unpack_from(buf, pos)[0]
        if stop > end:
            raise _Short
        if not text:
            return bytes(buf[start:stop]), stop
        try:
            return str(buf[start:stop], "utf-8"), stop
        except UnicodeDecodeError:
            raise FrameRejected(ErrorCode.BAD_UTF8, "a text field is not valid UTF-8") from None

    return pack, unpack


def _list_kind(count_fmt: str, item: tuple[Packer, Unpacker]) -> tuple[Packer, Unpacker]:
    count = struct.Struct(count_fmt)
    pack_item, unpack_item = item

    def pack(values: Any) -> bytes:
        return count.pack(len(values)) + b"".join(pack_item(v) for v in values)

    def unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
        if pos + count.size > end:
            raise _Short
        n = count.unpack_from(buf, pos)[0]
        pos += count.size
        out = []
        for _ in range(n):
            value, pos = unpack_item(buf, pos, end)
            out.append(value)
        return tuple(out), pos

    return pack, unpack


def _pair_kind(fmt: str) -> tuple[Packer, Unpacker]:
    st = struct.Struct(fmt)

    def unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
        stop = pos + st.size
        if stop > end:
            raise _Short
        return st.unpack_from(buf, pos), stop

    return (lambda pair: st.pack(*pair)), unpack


U8: Final = _int_kind(">B")
U16: Final = _int_kind(">H")
U64: Final = _int_kind(">Q")


def _bool_unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
    raw, pos = U8[1](buf, pos, end)
    if raw > 1:
        raise FrameRejected(ErrorCode.MALFORMED, f"a flag byte is {raw}, not 0 or 1")
    return raw == 1, pos


BOOL: Final = (lambda v: b"\x01" if v else b"\x00", _bool_unpack)
NICK: Final = _sized_kind(">B", text=True)
#: A room name is laid out as a nick is (``#`` counts as one of its bytes).
ROOM: Final = NICK
TEXT: Final = _sized_kind(">H", text=True)
BLOB: Final = _sized_kind(">H", text=False)
NICKS: Final = _list_kind(">H", NICK)
RANGES: Final = _list_kind(">B", _pair_kind(">QQ"))


def _code_unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
    raw, pos = U16[1](buf, pos, end)
    try:
        return ErrorCode(raw), pos
    except ValueError:
        raise FrameRejected(ErrorCode.MALFORMED, f"unknown error code {raw}") from None


CODE: Final = (U16[0], _code_unpack)


def _row_kind(cls: type[Any], *kinds: tuple[Packer, Unpacker]) -> tuple[Packer, Unpacker]:
    """A record laid out as its fields in order, built as ``cls`` when read."""
    names = [f.name for f in dataclass_fields(cls)]

    def pack(row: Any) -> bytes:
        return b"".join([kind[0](getattr(row, name)) for name, kind in zip(names, kinds, strict=True)])

    def unpack(buf: bytes | bytearray, pos: int, end: int) -> tuple[Any, int]:
        values = []
        for kind in kinds:
            value, pos = kind[1](buf, pos, end)
            values.append(value)
        return cls(*values), pos

    return pack, unpack


ROOMS: Final = _list_kind(">H", _row_kind(ev.RoomInfo, ROOM, U64, TEXT))

#: Frame type and field kinds of every event, fields in declaration order.
_LAYOUTS: Final[dict[type[ev.Event], tuple[FrameType, tuple[tuple[Packer, Unpacker], ...]]]] = {
    ev.Register: (FrameType.REGISTER, (NICK, TEXT, BOOL)),
    ev.Say: (FrameType.SAY, (ROOM, TEXT)),
    ev.Act: (FrameType.ACT, (ROOM, TEXT)),
    ev.Whisper: (FrameType.WHISPER, (NICK, TEXT)),
    ev.ChangeNick: (FrameType.CHANGE_NICK, (NICK,)),
    ev.Who: (FrameType.WHO, ()),
    ev.Help: (FrameType.HELP, ()),
    ev.Join: (FrameType.JOIN, (ROOM, NICK, U64)),
    ev.History: (FrameType.HISTORY, (ROOM, U64, U16)),
    ev.RegisterAccount: (FrameType.REGISTER_ACCOUNT, (TEXT,)),
    ev.ChangePassword: (FrameType.CHANGE_PASSWORD, (TEXT, TEXT)),
    ev.DropAccount: (FrameType.DROP_ACCOUNT, (TEXT,)),
    ev.Part: (FrameType.PART, (ROOM, TEXT)),
    ev.ListRooms: (FrameType.LIST_ROOMS, ()),
    ev.Names: (FrameType.NAMES, (ROOM,)),
    ev.GetTopic: (FrameType.GET_TOPIC, (ROOM,)),
    ev.SetTopic: (FrameType.SET_TOPIC, (ROOM, TEXT)),
    ev.Welcome: (FrameType.WELCOME, (NICK, U64)),
    ev.Message: (FrameType.MESSAGE, (ROOM, NICK, TEXT, U64, U64, BOOL)),
    ev.Action: (FrameType.ACTION, (ROOM, NICK, TEXT, U64, U64, BOOL)),
    ev.Private: (FrameType.PRIVATE, (NICK, TEXT, U64, BOOL)),
    ev.Joined: (FrameType.JOINED, (ROOM, NICK)),
    ev.Parted: (FrameType.PARTED, (ROOM, NICK, TEXT)),
    ev.Left: (FrameType.LEFT, (NICK, TEXT)),
    ev.Renamed: (FrameType.RENAMED, (NICK, NICK)),
    ev.Topic: (FrameType.TOPIC, (ROOM, TEXT, NICK, U64, BOOL)),
    ev.WhoReply: (FrameType.WHO_REPLY, (ROOM, NICKS, BOOL)),
    ev.RoomList: (FrameType.ROOM_LIST, (ROOMS, BOOL)),
    ev.Replay: (FrameType.REPLAY, (ROOM, NICK, U64, U64, BOOL)),
    ev.Reply: (FrameType.REPLY, (TEXT,)),
    ev.Error: (FrameType.ERROR, (CODE, TEXT)),
    ev.Ping: (FrameType.PING, (U64,)),
    ev.Pong: (FrameType.PONG, (U64,)),
    ev.Goodbye: (FrameType.GOODBYE, (TEXT,)),
    ev.Hello: (FrameType.HELLO, (BLOB, BLOB)),
    ev.Cookie: (FrameType.COOKIE, (BLOB,)),
    ev.Accept: (FrameType.ACCEPT, (U64, BOOL)),
    ev.Session: (FrameType.SESSION, (U64,)),
    ev.Data: (FrameType.DATA, (U64, U8, BLOB)),
    ev.Ack: (FrameType.ACK, (U64, RANGES)),
}

# Derived tables: what the encoder and the decoders look up per frame.


def _field_names(cls: type[ev.Event]) -> list[str]:
    return [f.name for f in dataclass_fields(cls)]  # type: ignore[arg-type]


_ENCODERS: Final = {
    cls: (ftype, tuple(zip(_field_names(cls), [kind[0] for kind in kinds], strict=True)))
    for cls, (ftype, kinds) in _LAYOUTS.items()
}
_DECODERS: Final = {ftype: (cls, tuple(kind[1] for kind in kinds)) for cls, (ftype, kinds) in _LAYOUTS.items()}

#: The frame type of each event class, for code that sorts frames without decoding them.
FRAME_TYPES: Final = {cls: ftype for cls, (ftype, _) in _LAYOUTS.items()}


# --- encoding ------------------------------------------------------------------


def encode(event: ev.Event) -> bytes:
    """Encode one event as one frame.

    Raises:
        LocalProtocolError: the event is not a twinchat event, or its frame would
            pass MAX_FRAME.
    """
    line_type = _LINE_TYPES.get(type(event))
    if line_type is not None:
        frame = _encode_line(line_type, event)  # type: ignore[arg-type]
        if frame is not None:
            return frame
    return encode_by_layout(event)


def encode_by_layout(event: ev.Event) -> bytes:
    """``encode`` driven by the ``_LAYOUTS`` table alone, for every event
    (``encode`` takes a shortcut for chat lines; a test checks both agree).

    Raises:
        LocalProtocolError: as ``encode``.
    """
    try:
        ftype, fields = _ENCODERS[type(event)]
    except KeyError:
        raise LocalProtocolError(ErrorCode.UNEXPECTED_FRAME, f"{type(event).__name__} is not an event") from None
    try:
        payload = b"".join([pack(getattr(event, name)) for name, pack in fields])
    except UnicodeEncodeError:
        raise LocalProtocolError(ErrorCode.BAD_UTF8, "a text field cannot be encoded as UTF-8") from None
    if HEADER_SIZE + len(payload) > MAX_FRAME:
        raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, f"the frame would pass {MAX_FRAME} bytes")
    return HEADER.pack(MAGIC, VERSION, ftype, len(payload)) + payload


#: Chat lines, laid out alike (ROOM, NICK, TEXT, U64, U64, BOOL), by class: their frame type.
_LINE_TYPES: Final[dict[type[ev.Event], int]] = {ev.Message: FrameType.MESSAGE, ev.Action: FrameType.ACTION}
#: A struct for a whole chat-line frame, by its room, sender and text lengths
#: in bytes: a handful in use at a time; bounded, since peers choose the texts.
_LINE_LAYOUTS: dict[tuple[int, int, int], struct.Struct] = {}
_LINE_LAYOUTS_MAX: Final = 1024
#: Bytes of a chat line's frame besides its room, sender and text.
_LINE_OVERHEAD: Final = HEADER_SIZE + 1 + 1 + 2 + 8 + 8 + 1


def _encode_line(ftype: int, event: ev.Message | ev.Action) -> bytes | None:
    """A Message or Action frame in one struct call, or None when the generic
    encoder must say what is wrong (a field too long or not UTF-8, a number
    out of range).

    Strategy: a server encodes a chat line once for all its recipients, yet
    the generic encoder (a packer per field, a join) cost about 12% of the
    TCP server's time and more of the UDP server's. The whole frame is one
    struct, made once per set of field lengths.
    """
    try:
        room = event.room.encode()
        sender = event.sender.encode()
        text = event.text.encode()
    except UnicodeEncodeError:
        return None
    key = (len(room), len(sender), len(text))
    layout = _LINE_LAYOUTS.get(key)
    if layout is None:
        if key[0] > 0xFF or key[1] > 0xFF or key[2] > 0xFFFF or _LINE_OVERHEAD + sum(key) > MAX_FRAME:
            return None
        if len(_LINE_LAYOUTS) >= _LINE_LAYOUTS_MAX:
            _LINE_LAYOUTS.clear()
        layout = _LINE_LAYOUTS[key] = struct.Struct(f">2sBBIB{key[0]}sB{key[1]}sH{key[2]}sQQ?")
    try:
        return layout.pack(
            MAGIC, VERSION, ftype, layout.size - HEADER_SIZE,
            key[0], room, key[1], sender, key[2], text,
            event.seq, event.time, event.history,
        )  # fmt: skip
    except struct.error:
        return None


# --- decoding ------------------------------------------------------------------


def _check_header(magic: bytes, version: int, length: int, max_frame: int) -> RemoteProtocolError | None:
    if magic != MAGIC:
        return RemoteProtocolError(ErrorCode.BAD_MAGIC, "these bytes are not a twinchat frame")
    if version != VERSION:
        return RemoteProtocolError(ErrorCode.BAD_VERSION, f"protocol version {version} is not spoken here")
    if HEADER_SIZE + length > max_frame:
        return RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a frame of {HEADER_SIZE + length} bytes passes the cap")
    return None


#: Room fields already decoded and found well-shaped, by their bytes. A busy
#: chat names a handful of rooms over and over; bounded, since peers choose them.
_ROOM_FIELDS: dict[bytes, str] = {}
_ROOM_FIELDS_MAX: Final = 1024
_SAY: Final = int(FrameType.SAY)
_new_say: Final = ev.CHECKED[ev.Say]


def _decode_say(buf: bytes | bytearray, start: int, end: int) -> ev.Event | None:
    """Say, the frame a busy chat is made of, decoded without the generic table.

    Strategy: the same layout and the same checks as the generic path, but the
    room field is looked up among the rooms seen before (decoded and checked
    once) and the event is built with ``ev.CHECKED`` after its text is checked:
    this saves about a third of the cost of decoding a Say. Anything unusual
    (a short or long payload, bad UTF-8, a refused text or room) returns None,
    and the generic path then says exactly what is wrong.
    """
    room_end = start + 1 + buf[start]
    text_start = room_end + 2
    if text_start > end or text_start + ((buf[room_end] << 8) | buf[room_end + 1]) != end:
        return None
    raw_room = bytes(buf[start + 1 : room_end])
    room = _ROOM_FIELDS.get(raw_room)
    try:
        if room is None:
            room = str(raw_room, "utf-8")
            ev.check_room_shape(room)
            if len(_ROOM_FIELDS) >= _ROOM_FIELDS_MAX:
                _ROOM_FIELDS.clear()
            _ROOM_FIELDS[raw_room] = room
        text = str(buf[text_start:end], "utf-8")
        ev.check_text(text, what="message")
    except (UnicodeDecodeError, RuleError):
        return None
    return _new_say(room, text)


def _decode_payload(ftype: int, buf: bytes | bytearray, start: int, end: int) -> ev.Event:
    """Build the event of one frame whose header has been checked.

    Raises:
        FrameRejected: the payload does not fit its type, or the event refuses it.
    """
    if ftype == _SAY and start < end:
        said = _decode_say(buf, start, end)
        if said is not None:
            return said
    try:
        cls, unpackers = _DECODERS[ftype]  # type: ignore[index]
    except KeyError:
        raise FrameRejected(ErrorCode.UNKNOWN_FRAME, f"unknown frame type 0x{ftype:02x}") from None
    values = []
    pos = start
    try:
        for unpack in unpackers:
            value, pos = unpack(buf, pos, end)
            values.append(value)
    except _Short:
        raise FrameRejected(ErrorCode.MALFORMED, f"{cls.__name__} payload is cut short") from None
    if pos != end:
        raise FrameRejected(ErrorCode.MALFORMED, f"{cls.__name__} payload has {end - pos} extra bytes")
    try:
        return cls(*values)
    except RuleError as exc:
        raise FrameRejected(exc.code, exc.detail) from None


def decode_frame(frame: bytes | bytearray) -> ev.Event:
    """Decode exactly one whole frame (a reassembled UDP payload, a test vector).

    Raises:
        RemoteProtocolError: the header is bad or the bytes are not one frame;
            ``FrameRejected`` if only the payload is.
    """
    if len(frame) < HEADER_SIZE:
        raise RemoteProtocolError(ErrorCode.TRUNCATED, "shorter than a frame header")
    magic, version, ftype, length = HEADER.unpack_from(frame, 0)
    problem = _check_header(magic, version, length, MAX_FRAME)
    if problem is not None:
        raise problem
    if HEADER_SIZE + length != len(frame):
        raise RemoteProtocolError(ErrorCode.TRUNCATED, "the frame length does not match the bytes")
    return _decode_payload(ftype, frame, HEADER_SIZE, len(frame))


class StreamDecoder:
    """Push decoder for a byte stream: ``feed`` bytes, pull events.

    Any split of the stream yields the same events. Bytes of an incomplete
    frame stay buffered; a header that is bad, or declares a frame past
    ``max_frame``, is refused when it arrives: nothing after it is buffered,
    the frames before it are still returned, then ``next_event`` raises.
    """

    #: Compact the buffer once this many consumed bytes sit at its front.
    _COMPACT_AT: Final = 1 << 16

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # start of the next frame to return
        self._checked = 0  # every header before this offset has been checked
        self._error: RemoteProtocolError | None = None
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as events."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed the stream."""
        if self._eof:
            raise RuntimeError("feed() after end of stream")
        if not data:
            self._eof = True
            return
        if self._error is not None:
            return  # the stream is broken; nothing after the bad header counts
        self._buf += data
        self._check_headers()

    def _check_headers(self) -> None:
        buf = self._buf
        size = len(buf)
        at = self._checked
        while at + HEADER_SIZE <= size:
            magic, version, _, length = HEADER.unpack_from(buf, at)
            problem = _check_header(magic, version, length, self._max_frame)
            if problem is not None:
                self._fail(at, problem)
                return
            at += HEADER_SIZE + length
        # A partial header: its magic bytes can be judged already.
        if at < size and not MAGIC.startswith(bytes(buf[at : at + len(MAGIC)])):
            self._fail(at, RemoteProtocolError(ErrorCode.BAD_MAGIC, "these bytes are not a twinchat frame"))
            return
        self._checked = at

    def _fail(self, at: int, problem: RemoteProtocolError) -> None:
        del self._buf[at:]
        self._checked = at
        self._error = problem

    def next_event(self) -> ev.Event | Signal:
        """Return the next event, ``NEED_DATA`` or ``END_OF_STREAM``.

        Raises:
            FrameRejected: one frame was invalid and skipped; call again.
            RemoteProtocolError: the stream is broken; every later call raises too.
        """
        buf = self._buf
        pos = self._pos
        if pos + HEADER_SIZE <= len(buf):
            ftype, length = HEADER.unpack_from(buf, pos)[2:]
            end = pos + HEADER_SIZE + length
            if end <= len(buf):
                self._consume(end)
                # Decode from the old buffer: _consume may have replaced it.
                return _decode_payload(ftype, buf, pos + HEADER_SIZE, end)
        if self._error is not None:
            raise self._error
        if self._eof:
            if pos < len(buf):
                raise RemoteProtocolError(ErrorCode.TRUNCATED, "the stream ended inside a frame")
            return END_OF_STREAM
        return NEED_DATA

    def _consume(self, end: int) -> None:
        if end == len(self._buf):
            self._buf = bytearray()
            self._checked -= end
            self._pos = 0
        elif end >= self._COMPACT_AT:
            # Copy what is left rather than shift in place, so the buffer the
            # caller is decoding from stays intact.
            self._buf = self._buf[end:]
            self._checked -= end
            self._pos = 0
        else:
            self._pos = end

    def events(self) -> list[ev.Event | RemoteProtocolError]:
        """Every event that the buffered bytes complete, in order (one batch).

        A ``FrameRejected`` takes its frame's place in the list and decoding
        goes on; a fatal ``RemoteProtocolError`` ends the list. ``END_OF_STREAM``
        is not reported here: check ``next_event`` after feeding ``b""``.
        """
        out: list[ev.Event | RemoteProtocolError] = []
        while True:
            try:
                item = self.next_event()
            except FrameRejected as exc:
                out.append(exc)
                continue
            except RemoteProtocolError as exc:
                out.append(exc)
                return out
            if isinstance(item, Signal):
                return out
            out.append(item)


def decode_datagram(datagram: bytes | bytearray) -> list[ev.Event]:
    """Decode one UDP datagram, which carries one or more whole frames.

    A datagram is accepted or refused whole: a peer that sends one bad frame
    among good ones is not to be trusted with the rest.

    Raises:
        RemoteProtocolError: anything at all is wrong with it.
    """
    size = len(datagram)
    if size > MAX_DATAGRAM:
        raise RemoteProtocolError(ErrorCode.DATAGRAM_TOO_LARGE, f"a datagram of {size} bytes passes {MAX_DATAGRAM}")
    if size == 0:
        raise RemoteProtocolError(ErrorCode.TRUNCATED, "an empty datagram")
    out = []
    pos = 0
    while pos < size:
        if pos + HEADER_SIZE > size:
            raise RemoteProtocolError(ErrorCode.TRUNCATED, "the datagram ends inside a frame header")
        magic, version, ftype, length = HEADER.unpack_from(datagram, pos)
        problem = _check_header(magic, version, length, MAX_DATAGRAM)
        if problem is not None:
            raise problem
        end = pos + HEADER_SIZE + length
        if end > size:
            raise RemoteProtocolError(ErrorCode.TRUNCATED, "the datagram ends inside a frame")
        try:
            out.append(_decode_payload(ftype, datagram, pos + HEADER_SIZE, end))
        except FrameRejected as exc:
            raise RemoteProtocolError(exc.code, exc.detail) from None
        pos = end
    return out
