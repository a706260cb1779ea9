"""The benchmark's message text and the fixed frame shapes its hot path relies on.

Every benchmark message is a ``Say`` whose text is exactly 64 ASCII bytes::

    SSSS:QQQQQQQQ:TTTTTTTTTTTTTTTTTTTT:-----------------------------
    sender seq      send time (ns, CLOCK_REALTIME)   padding

Fixed-width decimal fields keep it valid chat text (no control characters) and
make byte order equal numeric order, so the hot path can compare sequence
numbers without converting them. The send time is on ``CLOCK_REALTIME``
(``time.time_ns``), the clock the kernel stamps received packets with
(``bench.load`` explains why receive times come from the kernel); it is one
clock for every process on the machine.

Strategy: every client's nick has the same length (``b0000`` to ``b9999``), and
every message is said in a room whose name has the length of ``#lobby`` (the
lobby itself, or ``#r0000`` to ``#r9999`` in the rooms scenario), so every
``Message`` frame the server relays is exactly ``MESSAGE_SIZE`` bytes and
starts with the same ``MESSAGE_PREFIX``. A receiver can then check a whole
buffer of relayed messages with a few strided slices and unpack it with
``struct.iter_unpack``, in C, instead of walking frames in Python.

Since protocol 3 a relayed ``Message`` ends with a fixed-size trailer after
its text: the room's seq (8 bytes), the server's time (8 bytes, Unix ms) and
the ``history`` flag (1 byte); ``TEXT_OFFSET`` and ``HISTORY_OFFSET`` say
where the text and the flag sit in the frame. A message replayed from the
history (a join's briefing) is not a delivery, and the hot path tells it by
that flag.
"""

from __future__ import annotations

import struct
from typing import Final

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.framing import HEADER_SIZE, encode

TEXT_SIZE: Final = 64
NICK_WIDTH: Final = 5
MAX_CLIENTS: Final = 10_000
#: Rooms a plan may spread its clients over (``#r0000`` to ``#r9999``).
MAX_ROOMS: Final = 10_000

_HEAD: Final = b"%04d:%08d:%020d:"
_HEAD_SIZE: Final = 4 + 1 + 8 + 1 + 20 + 1
_PAD: Final = b"-" * (TEXT_SIZE - _HEAD_SIZE)

#: Offsets of the fields inside the text.
SENDER: Final = slice(0, 4)
SEQ: Final = slice(5, 13)
SENT_AT: Final = slice(14, 34)


def nick_of(index: int) -> str:
    """The nick of load client ``index``; all nicks have NICK_WIDTH characters."""
    if not 0 <= index < MAX_CLIENTS:
        raise ValueError(f"client index {index} is out of range")
    return f"b{index:04d}"


def room_name(index: int) -> str:
    """The name of benchmark room ``index``: as long as ``#lobby``, so relayed
    messages keep one size whatever the room."""
    if not 0 <= index < MAX_ROOMS:
        raise ValueError(f"room index {index} is out of range")
    return f"#r{index:04d}"


def make_text(sender: int, seq: int, sent_at_ns: int) -> bytes:
    """The 64-byte text of message ``seq`` (from 1) of client ``sender``."""
    return _HEAD % (sender, seq, sent_at_ns) + _PAD


def parse_text(text: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """``(sender, seq, sent_at_ns)`` of a benchmark text, or None if it is not one."""
    if len(text) != TEXT_SIZE:
        return None
    raw = bytes(text)
    if raw[4:5] != b":" or raw[13:14] != b":" or raw[34:35] != b":":
        return None
    try:
        return int(raw[SENDER]), int(raw[SEQ]), int(raw[SENT_AT])
    except ValueError:
        return None


def seq_key(seq: int) -> bytes:
    """A sequence number as the hot path sees it: the text's own digits."""
    return b"%08d" % seq


def sender_key(sender: int) -> bytes:
    """A sender index as the hot path sees it."""
    return b"%04d" % sender


def say_prefix(room: str) -> bytes:
    """The bytes every benchmark ``Say`` in ``room`` starts with (its text follows).

    Raises:
        ValueError: ``room`` is not as long as ``#lobby`` (its messages would
            not have the one size the hot path relies on).
    """
    if len(room.encode("utf-8")) != len(LOBBY):
        raise ValueError(f"a benchmark room name has {len(LOBBY)} bytes, like {LOBBY}: {room!r}")
    return encode(ev.Say(room, "x" * TEXT_SIZE))[:-TEXT_SIZE]


# Encoded once: every Say frame is a room's prefix followed by its 64-byte text.
SAY_PREFIX: Final = say_prefix(LOBBY)


def say_frame(sender: int, seq: int, sent_at_ns: int, prefix: bytes = SAY_PREFIX) -> bytes:
    """One encoded ``Say`` frame carrying a benchmark text (in ``#lobby`` unless
    ``prefix`` is another room's, from ``say_prefix``)."""
    return prefix + _HEAD % (sender, seq, sent_at_ns) + _PAD


_SAMPLE_TEXT: Final = "x" * TEXT_SIZE
_SAMPLE_MESSAGE: Final = encode(ev.Message(LOBBY, nick_of(0), _SAMPLE_TEXT, seq=1, time=1))

#: Size of every relayed benchmark ``Message`` frame.
MESSAGE_SIZE: Final = len(_SAMPLE_MESSAGE)

#: Header plus the room's length byte: identical for every relayed benchmark message
#: (every benchmark room name is as long as ``#lobby``).
#: 0xC1 (the magic's first byte) never occurs in UTF-8 text or nicks, so in a
#: stream of frames this prefix occurs only where such a frame starts.
MESSAGE_PREFIX: Final = _SAMPLE_MESSAGE[: HEADER_SIZE + 1]

#: Where the text starts inside a relayed benchmark message frame (after the
#: header, the room, the nick and the text's 2-byte length).
TEXT_OFFSET: Final = _SAMPLE_MESSAGE.index(_SAMPLE_TEXT.encode("ascii"))

#: Bytes after the text: the room's seq, the server's time, the history flag.
TRAILER_SIZE: Final = MESSAGE_SIZE - TEXT_OFFSET - TEXT_SIZE

#: Where the ``history`` flag is inside a relayed benchmark message frame
#: (its last byte): 1 for a message replayed to a joiner, 0 for a live one.
HISTORY_OFFSET: Final = MESSAGE_SIZE - 1

#: Unpacks ``(sender, seq)`` digits of each relayed message (the hot path).
KEYS: Final = struct.Struct(f">{TEXT_OFFSET}x4sx8s{TEXT_SIZE - 13 + TRAILER_SIZE}x")

#: Unpacks ``(sender, ":", seq, ":", sent_at, ":")`` of each relayed message (accounting).
FIELDS: Final = struct.Struct(f">{TEXT_OFFSET}x4sc8sc20sc{TEXT_SIZE - 35 + TRAILER_SIZE}x")

assert KEYS.size == FIELDS.size == MESSAGE_SIZE
assert TRAILER_SIZE == 8 + 8 + 1 and _SAMPLE_MESSAGE[HISTORY_OFFSET:] == b"\x00"
