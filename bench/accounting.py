"""What each receiver got: the hot-path tally and the exact offline ledger.

Strategy: the load generator's per-message work is the figure's ceiling, so it
is split in two. While the run is measured, a receiver only timestamps each
read, keeps the bytes, and moves a ``Progress`` that knows the latest sequence
number seen per sender (enough for flow control and for knowing when a run is
complete), in C where the bytes allow (``payload`` explains the fast path).
After the run, a ``Ledger`` walks the kept bytes once more and does the exact
accounting: unique deliveries, duplicates, out-of-order deliveries, garbled
frames and one latency per delivery. Both walk frames by their header only;
a message's fields are read from the fixed place of its text.

Since protocol 3 two kinds of relayed benchmark message are not deliveries:

- a sender's own messages come back to it (the server echoes them to framed
  clients, numbered like everyone's). A ``Ledger`` told whose it is
  (``Expected.own``) counts them apart, as ``echoes`` with their round-trip
  time, so that ``unique``, ``expected`` and ``latencies`` still count the
  copies for the others alone, as before;
- a message replayed from the history (``history`` set: a join's briefing)
  is counted as ``replayed`` and nothing else, by both.

Both are pure: they take bytes and times, never a socket or a clock.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator, Mapping
from typing import Final

from bench.payload import (
    FIELDS,
    HISTORY_OFFSET,
    KEYS,
    MESSAGE_PREFIX,
    MESSAGE_SIZE,
    TEXT_SIZE,
    TRAILER_SIZE,
    parse_text,
)
from common.wire.framing import HEADER, HEADER_SIZE, MAGIC, FrameType

_MESSAGE: Final = int(FrameType.MESSAGE)
#: A Message frame's text length field when the text is a benchmark text.
_TEXT_LENGTH: Final = TEXT_SIZE.to_bytes(2, "big")
#: Benchmark messages end to end, each with MESSAGE_PREFIX (header and room
#: length) and the history flag clear (a live message), as ``_uniform`` checks them.
_TILED: Final = re.compile(
    b"(?:%s.{%d}\\x00)*" % (re.escape(MESSAGE_PREFIX), HISTORY_OFFSET - len(MESSAGE_PREFIX)), re.DOTALL
)
#: From the end of a Message frame back to the end of its text.
_TAIL: Final = TRAILER_SIZE


class Expected(Mapping[int, int]):
    """What one receiver should be sent: per sender of its room but itself,
    how many messages (numbered from 1); and ``own``, its own sender index
    if it sends too, whose ``echoes`` messages the server sends back to it.

    A mapping of the others' counts, as a plain dict was: the echoes are not
    deliveries to anyone else, and a ``Ledger`` counts them apart.
    """

    __slots__ = ("_counts", "echoes", "own")

    def __init__(self, counts: Mapping[int, int], own: int | None = None, echoes: int = 0) -> None:
        if own is not None and own in counts:
            raise ValueError(f"sender {own} cannot be both another's and the receiver's own")
        self._counts = dict(counts)
        self.own = own
        self.echoes = echoes if own is not None else 0

    def __getitem__(self, sender: int) -> int:
        return self._counts[sender]

    def __iter__(self) -> Iterator[int]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"Expected({self._counts!r}, own={self.own!r}, echoes={self.echoes!r})"


class StreamCorrupt(Exception):
    """The bytes from the server are not a stream of twinchat frames."""


def _uniform(buf: bytes | bytearray) -> int:
    """Length of the leading run of ``buf`` made only of benchmark messages.

    The run counts only if it is the whole of ``buf`` rounded down to frames;
    anything else (a notice, a ping, another nick length) returns 0 and the
    caller walks frame by frame.

    Strategy: ``buf`` starts at a frame boundary. If every MESSAGE_SIZE-th
    byte run starts with MESSAGE_PREFIX (header and room length), the first
    frame is a benchmark message, so the second starts where the prefix says,
    and so on: the prefixes tile the buffer. One regular expression checks
    the prefix and the history flag (a replayed message is walked) of every
    frame, in C: 2.6 us for nine messages by ten strided slices, 1.1 us so.
    """
    size = len(buf)
    count = size // MESSAGE_SIZE
    if not count:
        return 0
    whole = count * MESSAGE_SIZE
    if count == 1:  # the common case at low rates: two comparisons
        return whole if buf.startswith(MESSAGE_PREFIX) and not buf[HISTORY_OFFSET] else 0
    return whole if _TILED.fullmatch(buf, 0, whole) else 0


def _walk(buf: bytes | bytearray, start: int) -> tuple[list[tuple[int, int, int]], int]:
    """Frames of ``buf`` from ``start``: ``(type, start, end)`` each, and where the rest begins.

    Raises:
        StreamCorrupt: a header does not begin with the magic.
    """
    frames = []
    pos = start
    size = len(buf)
    unpack = HEADER.unpack_from
    while pos + HEADER_SIZE <= size:
        magic, _, ftype, length = unpack(buf, pos)
        if magic != MAGIC:
            raise StreamCorrupt(f"no frame header at offset {pos}")
        end = pos + HEADER_SIZE + length
        if end > size:
            break
        frames.append((ftype, pos, end))
        pos = end
    return frames, pos


def _is_bench_message(buf: bytes | bytearray, ftype: int, start: int, end: int) -> bool:
    """A Message frame whose text has a benchmark text's length (the text
    ends ``_TAIL`` bytes before the frame does, whatever the room and nick)."""
    tail = end - _TAIL
    return (
        ftype == _MESSAGE
        and tail - start >= HEADER_SIZE + 2 + TEXT_SIZE
        and buf[tail - TEXT_SIZE - 2 : tail - TEXT_SIZE] == _TEXT_LENGTH
    )


def _replayed(buf: bytes | bytearray, end: int) -> bool:
    """The Message frame ending at ``end`` was replayed from the history."""
    return buf[end - 1] != 0


class Progress:
    """The hot-path tally of one receiver: latest sequence number per sender.

    ``latest`` maps a sender's 4-digit key to the 8 digits of the last sequence
    number seen from it (the text's own bytes; equal width, so bytes compare
    as numbers). On an in-order transport the latest is also the highest.
    """

    __slots__ = ("_rest", "latest", "messages", "replayed")

    def __init__(self) -> None:
        self._rest = b""
        self.latest: dict[bytes, bytes] = {}
        #: Benchmark messages seen (duplicates and one's own echoes included).
        self.messages = 0
        #: Benchmark messages replayed from the history: neither counted nor tracked.
        self.replayed = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Take bytes from the stream; return every frame that is not a benchmark
        message, as ``(type, frame)``, for the caller to act on (pings, notices).

        Raises:
            StreamCorrupt: the stream is not twinchat frames.
        """
        buf = self._rest + data if self._rest else data
        whole = _uniform(buf)
        if whole:
            self.latest.update(KEYS.iter_unpack(memoryview(buf)[:whole]))
            self.messages += whole // MESSAGE_SIZE
            self._rest = buf[whole:]
            return []
        frames, rest = _walk(buf, 0)
        others = []
        latest = self.latest
        for ftype, start, end in frames:
            if _is_bench_message(buf, ftype, start, end):
                if _replayed(buf, end):
                    self.replayed += 1
                    continue
                text = end - _TAIL - TEXT_SIZE
                latest[bytes(buf[text : text + 4])] = bytes(buf[text + 5 : text + 13])
                self.messages += 1
            else:
                others.append((ftype, bytes(buf[start:end])))
        self._rest = buf[rest:]
        return others


class Ledger:
    """The exact accounting of one receiver, done after the run.

    Args:
        expected: how many messages each sender sent that this receiver should
            get, numbered from 1 (senders absent here are counted as garbled,
            and as strays too: in a plan with rooms, another room's senders).
            An ``Expected`` also names the receiver's own sender index, whose
            messages come back as echoes: counted apart (``echoes``), never as
            deliveries. Without one, an echo would be a stray.
    """

    def __init__(self, expected: Mapping[int, int]) -> None:
        self._seen = {sender: bytearray(count + 1) for sender, count in expected.items()}
        self._top = dict.fromkeys(expected, 0)
        self.expected = sum(expected.values())
        self.unique = 0
        #: Copies received twice, and copies of a sender's messages received
        #: after a later one of it (echoes included in both).
        self.duplicates = 0
        self.out_of_order = 0
        #: Messages whose text names no expected sender or sequence number.
        self.garbled = 0
        #: Of those, well-formed texts from a sender this receiver should not
        #: hear at all (another room's, or its own when not told it is): the
        #: server's mistake.
        self.strays = 0
        #: Frames that were not benchmark messages (notices, pings).
        self.other_frames = 0
        #: Benchmark messages replayed from the history (a join's briefing).
        self.replayed = 0
        #: Receive time minus send time of each unique delivery, in ns.
        self.latencies: array[int] = array("q")
        self.first_at: int | None = None
        self.last_at: int | None = None
        own = expected.own if isinstance(expected, Expected) else None
        #: The receiver's own sender index, if it sends.
        self.own = own
        #: Its own messages it should get back, and those it got (once each).
        self.echoes_expected = expected.echoes if isinstance(expected, Expected) else 0
        self.echoes = 0
        #: Receive time of each unique echo minus its send time, in ns: the
        #: sender's round trip through the server.
        self.echo_latencies: array[int] = array("q")
        self._echo_seen = bytearray(self.echoes_expected + 1)
        self._echo_top = 0
        self._rest = b""

    def feed(self, received_at: int, data: bytes) -> None:
        """Account for bytes that arrived at ``received_at`` (ns); a frame
        counts when its last byte arrives.

        Raises:
            StreamCorrupt: the stream is not twinchat frames.
        """
        buf = self._rest + data if self._rest else data
        whole = _uniform(buf)
        if whole:
            for sender, colon1, seq, colon2, sent_at, colon3 in FIELDS.iter_unpack(memoryview(buf)[:whole]):
                if colon1 == colon2 == colon3 == b":":
                    self._one(received_at, sender, seq, sent_at)
                else:
                    self.garbled += 1
            self._rest = buf[whole:]
            return
        frames, rest = _walk(buf, 0)
        for ftype, start, end in frames:
            if not _is_bench_message(buf, ftype, start, end):
                self.other_frames += 1
                continue
            if _replayed(buf, end):
                self.replayed += 1
                continue
            fields = parse_text(buf[end - _TAIL - TEXT_SIZE : end - _TAIL])
            if fields is None:
                self.garbled += 1
                continue
            sender, seq, sent_at = fields
            self._record(received_at, sender, seq, sent_at)
        self._rest = buf[rest:]

    @property
    def leftover(self) -> int:
        """Bytes of an incomplete frame at the end of the stream."""
        return len(self._rest)

    def _one(self, received_at: int, sender: bytes, seq: bytes, sent_at: bytes) -> None:
        try:
            self._record(received_at, int(sender), int(seq), int(sent_at))
        except ValueError:
            self.garbled += 1

    def _record(self, received_at: int, sender: int, seq: int, sent_at: int) -> None:
        seen = self._seen.get(sender)
        if seen is None and sender == self.own:
            self._echo(received_at, seq, sent_at)
            return
        if seen is None or not 1 <= seq < len(seen):
            self.garbled += 1
            if seen is None and seq >= 1:
                self.strays += 1
            return
        if seen[seq]:
            self.duplicates += 1
            return
        seen[seq] = 1
        self.unique += 1
        if seq < self._top[sender]:
            self.out_of_order += 1
        else:
            self._top[sender] = seq
        self.latencies.append(received_at - sent_at)
        if self.first_at is None:
            self.first_at = received_at
        self.last_at = received_at

    def _echo(self, received_at: int, seq: int, sent_at: int) -> None:
        seen = self._echo_seen
        if not 1 <= seq < len(seen):
            self.garbled += 1
            return
        if seen[seq]:
            self.duplicates += 1
            return
        seen[seq] = 1
        self.echoes += 1
        if seq < self._echo_top:
            self.out_of_order += 1
        else:
            self._echo_top = seq
        self.echo_latencies.append(received_at - sent_at)
