"""Reliable, ordered delivery of frames over datagrams, one ``Channel`` per peer.

Sans-IO, like the rest of ``common``: the transport feeds in what it decoded
from a datagram (``receive``), asks for the datagrams to send (``datagrams``)
and passes ``now`` (seconds, any monotonic origin) to both; the channel never
touches a socket or a clock. The byte layouts are ``common.wire.framing``'s
``Data`` and ``Ack`` frames; PROTOCOL.md, "UDP sessions and reliability",
describes the rules below for implementers of other peers.

Strategy, by concern:

- **Segments.** Frames queued together (``send_all``) travel as bundles:
  consecutive frames that fit ``MAX_CHUNK`` together make one ``Data``
  segment with the next sequence number, so a run of chat lines costs one
  header, one place in flight and one ack, not one per line. A frame larger
  than ``MAX_CHUNK`` becomes several consecutive segments (fragments) whose
  ``remaining`` counts down to 0. Nothing waits to fill a bundle: only what
  is queued in one call is bundled. A ``Data`` with an empty chunk is a
  keepalive: it carries nothing and exists to be acknowledged.
- **Windows.** At most ``window`` segments are in flight (sent, not yet
  acknowledged), and, with congestion control, no more bytes than the
  congestion window: NewReno as in RFC 9002 (slow start, halving once per
  recovery, the minimum window after persistent congestion). The rest waits
  in a backlog. ``max_backlog`` bounds the bytes held, waiting and
  unacknowledged together (``send`` says False at the bound, and the
  transport decides: the server drops the slow or deaf peer, the client
  waits); an acknowledged segment lets go of its bytes at once.
- **Acknowledgements.** The receiver acknowledges with ``Ack(next_expected,
  ranges)``: everything below ``next_expected`` arrived, and so did each
  selective range (at most ``MAX_SACK_RANGES``, the lowest ones). An ack is
  owed after any datagram with ``Data``, duplicates included (the earlier ack
  may have been lost); it rides in front of the next datagram the channel
  produces, and with ``ack_delay`` it may wait that long for a second
  datagram or for data of our own to carry it (never for anything out of
  order).
- **Loss and retransmission.** Once a segment sent no earlier than it has been
  acknowledged, a segment is taken for lost, and sent again, when one at least
  ``REORDER_THRESHOLD`` numbers above it has, or when it has been out
  ``TIME_THRESHOLD`` round trips (QUIC's packet and time thresholds, with a
  loss timer for the latter). "Sent" for an acknowledged segment means the
  copy that may have arrived: the first, or one resent because acks showed the
  first overtaken, never one the timer resent (its ack may answer a first copy
  that a queue delayed: RFC 8985). The retransmission timer follows RFC 6298:
  RTO = SRTT + 4 RTTVAR + the peer's MAX_ACK_DELAY, from round-trip samples
  taken only on the segment an ack covers that was sent last, if it was sent
  once (Karn), clamped to [MIN_RTO, MAX_RTO]. When it fires, the ``PROBES``
  oldest segments are sent again first, each in its own datagram (so each
  draws its own ack) and past the congestion window, and the RTO doubles.
  A timeout is as often a peer or a queue slow to answer as a loss, so the
  first sends the probes alone (as QUIC's probe timeout); a second with no
  round trip measured in between also takes the others unacknowledged for a
  whole RTO for lost, to go again as the (shrunken) congestion window admits,
  and acks of first copies cancel what has not gone yet (without congestion
  control, at most ``TIMEOUT_BURST`` are taken). Only a new sample (or an ack that leaves
  nothing in flight) undoes the backoff: an ack of resent segments may be the
  late answer to their first copies, and an RTO kept below the queueing delay
  resends what was never lost.
- **Receiving.** Segments below ``next_expected`` or already buffered are
  duplicates, acknowledged and dropped; segments beyond the receive window
  are dropped unacknowledged; the others are buffered and released in order,
  fragments joined as they come (which bounds reassembly to one frame), and
  a bundle cut into its frames at their headers (``unbundle``).
- **Liveness.** When nothing has been sent for ``keepalive_after`` seconds the
  channel sends a keepalive; a peer not heard from for ``dead_after`` seconds,
  or that leaves a segment unacknowledged that long, is dead (``is_dead``).
- **Unreliable mode** (``reliable=False``): segments are numbered but never
  retransmitted and no acks are sent except to keepalives (so both sides still
  learn the other is alive). The receiver drops duplicates, delivers in arrival
  order, counts the sequence numbers that never arrived (``lost``), and
  reassembles fragments in bounded buffers that expire.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import accumulate, repeat, starmap
from operator import eq
from typing import Final

from common.chat import events as ev
from common.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from common.wire.framing import HEADER, HEADER_SIZE, MAGIC, VERSION, FrameType
from common.wire.limits import MAX_DATAGRAM, MAX_FRAME

#: Bytes of the ``Session`` frame that opens every datagram of a session.
SESSION_FRAME_SIZE: Final = HEADER_SIZE + 8

#: Bytes a ``Data`` frame adds to its chunk: header, seq, remaining, chunk length.
DATA_OVERHEAD: Final = HEADER_SIZE + 8 + 1 + 2

#: Largest chunk of one ``Data`` segment, so that a datagram holding the
#: ``Session`` frame and one full segment is exactly MAX_DATAGRAM bytes.
MAX_CHUNK: Final = MAX_DATAGRAM - SESSION_FRAME_SIZE - DATA_OVERHEAD

#: Segments in flight at most (sent, not yet acknowledged).
SEND_WINDOW: Final = 1024

#: Segments above ``next_expected`` a receiver buffers at most; larger than
#: the send window so a conforming sender never has a segment refused.
RECV_WINDOW: Final = 2 * SEND_WINDOW

#: Selective-ack ranges this implementation puts in one Ack (the frame allows more).
MAX_SACK_RANGES: Final = 16

#: Bytes of encoded segments one channel holds at most, unacknowledged in
#: flight and waiting for the window together, beyond which ``send`` refuses.
MAX_BACKLOG: Final = 1024 * 1024

#: What one held segment costs beyond its bytes (CPython's bytes object and
#: queue slot), charged against ``max_backlog`` so that it bounds memory even
#: for the smallest chat lines.
HELD_OVERHEAD: Final = 48

#: The longest a receiver may hold back an ack (QUIC's max_ack_delay); a sender
#: adds it to its retransmission timeout.
MAX_ACK_DELAY: Final = 0.025

#: Ack-eliciting datagrams after which a delayed ack goes out at once.
ACK_EVERY: Final = 2

#: Congestion control (RFC 9002's NewReno, in bytes of encoded segments):
#: the window at the start, its floor, and how much a loss takes off it.
INITIAL_CWND: Final = 10 * MAX_DATAGRAM
MIN_CWND: Final = 2 * MAX_DATAGRAM
LOSS_REDUCTION: Final = 0.5

#: Retransmission timeout before any round trip was measured, and its bounds.
INITIAL_RTO: Final = 0.2
MIN_RTO: Final = 0.02
MAX_RTO: Final = 2.0

#: Timer granularity assumed by the RTO formula (RFC 6298's G).
GRANULARITY: Final = 0.005

#: A segment this many numbers below an acknowledged one is taken for lost.
REORDER_THRESHOLD: Final = 3

#: Segments resent as probes when the retransmission timer fires.
PROBES: Final = 2

#: Without congestion control: segments, among those unacknowledged for a
#: whole RTO, taken for lost at a second timeout at most.
TIMEOUT_BURST: Final = 64

#: A segment sent this many smoothed round trips before the first transmission
#: of one that has been acknowledged, and not acknowledged itself, is taken for lost.
TIME_THRESHOLD: Final = 1.125

#: Unreliable mode: partial frames kept at most, and for how long.
MAX_REASSEMBLIES: Final = 8
REASSEMBLY_TIMEOUT: Final = 5.0

#: Default liveness timers, in seconds.
KEEPALIVE_AFTER: Final = 5.0
DEAD_AFTER: Final = 15.0

# The Data frame's layout, packed in one call: segments are the hot path (one
# per message per recipient), and building a dataclass per segment to run the
# generic encoder costs more than everything else the channel does. A test
# checks that both encoders give the same bytes.
_DATA_HEAD: Final = struct.Struct(">2sBBIQBH")
_DATA_TYPE: Final = int(FrameType.DATA)
_DATA_FIELDS: Final = DATA_OVERHEAD - HEADER_SIZE
_U64: Final = struct.Struct(">Q")


def encode_data(seq: int, remaining: int, chunk: bytes) -> bytes:
    """The frame of ``Data(seq, remaining, chunk)``, as ``framing.encode`` gives it."""
    return _DATA_HEAD.pack(MAGIC, VERSION, _DATA_TYPE, _DATA_FIELDS + len(chunk), seq, remaining, len(chunk)) + chunk


# The Ack frame's layout: next_expected and the count of ranges, then the
# ranges as pairs; built here rather than through a dataclass and the generic
# encoder, since one goes out for nearly every datagram received. A test checks
# that both encoders give the same bytes.
_ACK_HEAD: Final = struct.Struct(">2sBBIQB")
_ACK_TYPE: Final = int(FrameType.ACK)
_RANGE: Final = struct.Struct(">QQ")
_SESSION_HEAD: Final = struct.Struct(">2sBBIQ")
_SESSION_TYPE: Final = int(FrameType.SESSION)
_DATA_BODY: Final = struct.Struct(">QBH")

#: A datagram's segments as ``Channel.receive_parsed`` receives them, in
#: columns: their seqs, their ``remaining`` counts and their chunks, each in
#: datagram order. Columns, not a tuple per segment: a run of segments is
#: unpacked into them, and taken in order, without a Python step per segment.
Segments = tuple[Sequence[int], Sequence[int], Sequence[bytes]]
#: An acknowledgement as ``Channel.receive_parsed`` receives it: next_expected, ranges.
AckInfo = tuple[int, tuple[tuple[int, int], ...]]

#: No segments (a datagram of acks only).
NO_SEGMENTS: Final[Segments] = ((), (), ())


def encode_ack(next_expected: int, ranges: Sequence[tuple[int, int]] = ()) -> bytes:
    """The frame of ``Ack(next_expected, ranges)``, as ``framing.encode`` gives it."""
    head = _ACK_HEAD.pack(MAGIC, VERSION, _ACK_TYPE, 9 + 16 * len(ranges), next_expected, len(ranges))
    if not ranges:
        return head
    return head + b"".join([_RANGE.pack(start, end) for start, end in ranges])


def parse_session(datagram: bytes) -> tuple[int, Segments, list[AckInfo]] | None:
    """The token, ``Data`` segments and ``Ack`` frames of a session datagram, or
    None when this fast path does not apply (the caller then decodes it in
    full with ``framing.decode_datagram``, which accepts or refuses it).

    Strategy: a busy server receives a ``Data`` or an ``Ack`` for every message
    of every recipient, and the generic decoder builds and validates a
    dataclass per frame. This one unpacks the common shapes with one struct
    call each: a ``Session`` frame, then ``Data`` frames and ``Ack`` frames
    without ranges; and when the rest of the datagram is ``Data`` frames of
    one size (a burst of chat lines: ``_data_run``), all of them in one call.
    It accepts nothing the generic decoder refuses (the same header checks,
    the same exact lengths; every value of these fields is valid), and gives
    up on anything else, an Ack with ranges included.
    """
    size = len(datagram)
    if size < SESSION_FRAME_SIZE or size > MAX_DATAGRAM:
        return None
    magic, version, ftype, length, token = _SESSION_HEAD.unpack_from(datagram, 0)
    if magic != MAGIC or version != VERSION or ftype != _SESSION_TYPE or length != 8:
        return None
    seqs: list[int] = []
    remainings: list[int] = []
    chunks: list[bytes] = []
    acks: list[AckInfo] = []
    unpack = HEADER.unpack_from
    body = _DATA_BODY.unpack_from
    pos = SESSION_FRAME_SIZE
    while pos < size:
        if pos + HEADER_SIZE > size:
            return None
        magic, version, ftype, length = unpack(datagram, pos)
        end = pos + HEADER_SIZE + length
        if magic != MAGIC or version != VERSION or end > size:
            return None
        if ftype == _DATA_TYPE:
            if length < _DATA_FIELDS:
                return None
            stride = end - pos
            if not seqs and size - pos > stride and not (size - pos) % stride:
                run = _data_run(datagram, pos, stride)
                if run is not None:
                    return token, run, acks
            seq, remaining, chunk_size = body(datagram, pos + HEADER_SIZE)
            if DATA_OVERHEAD + chunk_size != stride:
                return None
            seqs.append(seq)
            remainings.append(remaining)
            chunks.append(datagram[pos + DATA_OVERHEAD : end])
        elif ftype == _ACK_TYPE and length == 9 and datagram[end - 1] == 0:
            acks.append((_U64.unpack_from(datagram, pos + HEADER_SIZE)[0], ()))
        else:
            return None
        pos = end
    return token, (seqs, remainings, chunks), acks


#: Struct of ``count`` whole Data frames with chunks of ``size`` bytes, by
#: (count, size): a handful in use at a time, bounded since peers choose them.
_DATA_RUNS: dict[tuple[int, int], struct.Struct] = {}
_DATA_RUNS_MAX: Final = 256


def _data_run(datagram: bytes, pos: int, stride: int) -> Segments | None:
    """The segments of ``datagram`` from ``pos`` to its end, if they are all
    ``Data`` frames of ``stride`` bytes with the header of the first; else None.

    Strategy: a datagram packed from a burst of chat lines holds nine or ten
    segments of one size (every relayed line of a room whose nicks have one
    length, every line of a benchmark), and a client gets a segment per line
    said: walking them one at a time was a sixth of a load client's time.
    One struct unpacks every frame, in C, into one flat tuple of five fields
    a frame; the checks the loop makes per frame (the header, the chunk
    length matching it) become counts over strided slices of it. The header
    at ``pos`` is valid (the caller checked it), so equal headers are too.
    """
    count = (len(datagram) - pos) // stride
    chunk = stride - DATA_OVERHEAD
    layout = _DATA_RUNS.get((count, chunk))
    if layout is None:
        if len(_DATA_RUNS) >= _DATA_RUNS_MAX:
            _DATA_RUNS.clear()
        layout = _DATA_RUNS[count, chunk] = struct.Struct(">" + f"8sQBH{chunk}s" * count)
    fields = layout.unpack_from(datagram, pos)
    heads = fields[0::5]
    if heads.count(heads[0]) != count or fields[3::5].count(chunk) != count:
        return None
    return fields[1::5], fields[2::5], fields[4::5]


def split_frame(frame: bytes) -> list[bytes]:
    """The chunks ``frame`` travels in: itself if it fits one segment, else fragments.

    Raises:
        LocalProtocolError: the frame is empty or larger than MAX_FRAME.
    """
    size = len(frame)
    if size == 0 or size > MAX_FRAME:
        raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, f"cannot send a frame of {size} bytes")
    if size <= MAX_CHUNK:
        return [frame]
    return [frame[i : i + MAX_CHUNK] for i in range(0, size, MAX_CHUNK)]


def is_whole_frame(chunk: bytes) -> bool:
    """Whether ``chunk`` is one complete frame by its header (not a fragment of one)."""
    if len(chunk) < HEADER_SIZE or chunk[:2] != MAGIC:
        return False
    return HEADER_SIZE + int(HEADER.unpack_from(chunk, 0)[3]) == len(chunk)


def unbundle(chunk: bytes, out: list[bytes]) -> bool:
    """Append the frames of a chunk of whole frames (``remaining = 0``) to ``out``, in order.

    The chunk is cut at its frames' headers. Where a header is bad (another
    magic or version, cut short) or declares more bytes than the chunk has
    left, the rest of the chunk from there is appended as one piece: the
    caller's decoder refuses it as it would a chunk that is no frame at all
    (PROTOCOL.md, Sequenced data), and the frames before it stand.

    Returns:
        Whether the chunk was whole frames exactly (False: its last piece is bad).
    """
    size = len(chunk)
    magic, version, _, length = HEADER.unpack_from(chunk, 0) if size >= HEADER_SIZE else (b"", 0, 0, 0)
    if HEADER_SIZE + length == size and magic == MAGIC and version == VERSION:
        out.append(chunk)  # one frame: the common case, no copy
        return True
    unpack = HEADER.unpack_from
    pos = 0
    while pos < size:
        if size - pos >= HEADER_SIZE:
            magic, version, _, length = unpack(chunk, pos)
            end = pos + HEADER_SIZE + length
            if magic == MAGIC and version == VERSION and end <= size:
                out.append(chunk[pos:end])
                pos = end
                continue
        out.append(chunk[pos:] if pos else chunk)
        return False
    return True


class _Segment:
    """What is known of a segment sent more than once, or taken for lost.

    A segment sent once and not judged is nothing but its frame and its
    sending time in the channel's flight queues: an object per segment (one
    per message per recipient on a server) cost a fifth of the server's time
    in making, tracking and collecting it. This record is made the first time
    a segment is taken for lost or probed, and forgotten once it is
    acknowledged.
    """

    __slots__ = ("arrived_sent", "first_sent", "in_flight", "overtaken", "sends", "seq", "size")

    def __init__(self, seq: int, size: int, sent_at: float) -> None:
        self.seq = seq
        self.size = size  # of its encoded Data frame
        self.first_sent = sent_at
        # When the copy an ack of this segment answers was sent, as far as the
        # sender can tell: the first copy, or a copy sent after acks showed
        # an earlier one overtaken (then that one is taken for lost); never a
        # copy the timer resent, which may race a first copy merely delayed.
        self.arrived_sent = sent_at
        self.overtaken = False  # taken for lost on the acks' evidence, not yet resent
        self.sends = 1
        self.in_flight = True  # counted in the congestion controller's bytes in flight


class _Reassembly:
    """Unreliable mode: the fragments of one frame that have arrived, by seq."""

    __slots__ = ("chunks", "size", "started")

    def __init__(self, now: float) -> None:
        self.chunks: dict[int, bytes] = {}
        self.size = 0
        self.started = now


class Channel:
    """One peer's reliable (or numbered, unreliable) delivery; see the module docstring.

    Args:
        now: the current time, which starts the liveness timers.
        prefix: bytes that open every datagram (the encoded ``Session`` frame);
            empty while no session exists.
        reliable: False for the unreliable mode.
        window: segments in flight at most (the congestion window bounds
            them in bytes as well).
        max_backlog: bytes of encoded segments held at most, unacknowledged
            in flight and waiting for the window together, each charged
            HELD_OVERHEAD more; ``send`` refuses past it.
        keepalive_after: send a keepalive after this long without sending.
        dead_after: a peer silent (or not acknowledging) this long is dead.
        ack_delay: how long this side may hold back an ack of data that
            arrived in order, waiting for a second datagram or for data of
            its own to carry it; 0 (the default) acks at the next call to
            ``datagrams``. At most MAX_ACK_DELAY, less the transport's own
            polling interval, for the peer's timers to hold.
        congestion_control: False keeps only the ``window`` in segments (for
            comparisons; the protocol asks for congestion control).
        split_bundles: False delivers a bundle of frames as it came, whole
            frames back to back, for a receiver that feeds a stream decoder
            anyway (the load generator); True (the default) a frame each.
    """

    # Slots, not a dict per channel: a server keeps one per session, and ten
    # thousand of them (or a flood of unregistered ones) add up.
    __slots__ = (
        "_ack_at",
        "_ack_count",
        "_ack_due",
        "_ack_pending",
        "_ack_urgent",
        "_backlog",
        "_backlog_bytes",
        "_backoff",
        "_base_rto",
        "_buffered",
        "_bytes_in_flight",
        "_cwnd",
        "_cwnd_limited",
        "_extra",
        "_flight",
        "_held",
        "_largest_acked",
        "_largest_acked_sent_at",
        "_last_sent",
        "_latest_acked_sent_at",
        "_latest_rtt",
        "_loss_time",
        "_lost",
        "_next_seq",
        "_parts",
        "_parts_left",
        "_parts_size",
        "_probes",
        "_reassembly",
        "_received",
        "_recovery_start",
        "_recv_next",
        "_rto_deadline",
        "_rttvar",
        "_seen",
        "_skipping",
        "_srtt",
        "_ssthresh",
        "_times",
        "_unacked",
        "ack_delay",
        "acks_sent",
        "congestion_control",
        "dead_after",
        "duplicates",
        "keepalive_after",
        "last_heard",
        "malformed",
        "max_backlog",
        "prefix",
        "reliable",
        "retransmits",
        "split_bundles",
        "window",
    )

    def __init__(
        self,
        now: float,
        *,
        prefix: bytes = b"",
        reliable: bool = True,
        window: int = SEND_WINDOW,
        max_backlog: int = MAX_BACKLOG,
        keepalive_after: float = KEEPALIVE_AFTER,
        dead_after: float = DEAD_AFTER,
        ack_delay: float = 0.0,
        congestion_control: bool = True,
        split_bundles: bool = True,
    ) -> None:
        if len(prefix) > MAX_DATAGRAM - MAX_CHUNK - DATA_OVERHEAD:
            raise ValueError("the prefix leaves no room for a full segment")
        if not 1 <= window <= SEND_WINDOW:
            raise ValueError(f"the window holds 1 to {SEND_WINDOW} segments")
        if not 0.0 <= ack_delay <= MAX_ACK_DELAY:
            raise ValueError(f"the ack delay is 0 to {MAX_ACK_DELAY} s")
        self.prefix = prefix
        self.reliable = reliable
        self.window = window
        self.max_backlog = max_backlog
        self.keepalive_after = keepalive_after
        self.dead_after = dead_after
        self.ack_delay = ack_delay
        self.congestion_control = congestion_control
        self.split_bundles = split_bundles

        # Sending.
        self._next_seq = 0
        # Encoded Data frames never sent yet; their seqs run up to _next_seq - 1.
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        # Sent, in seq order, from seq _next_seq - len(_backlog) - len(_flight):
        # each segment's encoded Data frame (b"" once acknowledged: acknowledged
        # ones linger until the head passes) and the time it was last sent.
        self._flight: deque[bytes] = deque()
        self._times: deque[float] = deque()
        self._extra: dict[int, _Segment] = {}  # segments sent again or judged, not yet acknowledged
        self._unacked = 0  # segments sent and not acknowledged
        # What max_backlog bounds: bytes of segments queued or unacknowledged, plus HELD_OVERHEAD each.
        self._held = 0
        self._lost: dict[int, _Segment] = {}  # to retransmit as soon as the congestion window admits
        self._probes: list[int] = []  # the timer fired: resend these seqs, a datagram each
        self._last_sent = now  # last Data segment sent
        self._rto_deadline: float | None = None
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._base_rto = INITIAL_RTO
        self._backoff = 1
        self._largest_acked = -1
        self._largest_acked_sent_at = 0.0  # when its arrived copy was sent (see _Segment.arrived_sent)
        self._latest_acked_sent_at = -1e9  # the latest such time of any segment acknowledged
        self._latest_rtt = 0.0  # the last round-trip sample
        self._loss_time: float | None = None  # when a segment passes the time threshold

        # Congestion control (RFC 9002, section 7), in bytes of encoded segments.
        self._cwnd = float(INITIAL_CWND)
        self._ssthresh = float("inf")
        self._recovery_start = -1e9  # losses of segments sent before this open no new recovery
        self._bytes_in_flight = 0  # sent, neither acknowledged nor taken for lost
        self._cwnd_limited = False  # the last send stopped at the window, not for want of data

        self._init_receiving()
        self.last_heard = now

        #: Counters, for logs and benchmarks.
        self.retransmits = 0
        self.duplicates = 0
        self.malformed = 0
        self.acks_sent = 0

    def _init_receiving(self) -> None:
        self._recv_next = 0  # reliable: lowest seq not yet received; unreliable: highest seen + 1
        self._buffered: dict[int, tuple[int, bytes]] = {}  # reliable: out of order, seq -> (remaining, chunk)
        self._ack_due = False  # an ack goes out at the next call to datagrams()
        self._ack_pending = False  # an ack is owed, by _ack_at at the latest
        self._ack_at = 0.0
        self._ack_count = 0  # datagrams with Data since the last ack
        self._ack_urgent = False  # this datagram held a segment out of order or a duplicate
        self._parts: list[bytes] | None = None  # reliable: fragments of the frame being joined
        self._parts_left = 0
        self._parts_size = 0
        self._skipping = False  # reliable: dropping the rest of a malformed fragment chain
        self._seen: set[int] = set()  # unreliable: seqs that arrived, within RECV_WINDOW of the highest
        self._received = 0  # unreliable: distinct seqs that arrived
        self._reassembly: dict[int, _Reassembly] = {}  # unreliable: by the seq of the last fragment

    # --- sending -----------------------------------------------------------------

    def send(self, frame: bytes, *, force: bool = False) -> bool:
        """Queue one encoded frame for delivery.

        Args:
            force: take it past the bound (a session's last words, which are small).

        Returns:
            False, with nothing queued, when the frame would take the bytes
            the channel holds (unacknowledged and waiting) past
            ``max_backlog``; a frame is always taken when nothing is held.

        Raises:
            LocalProtocolError: the frame is empty or larger than MAX_FRAME.
        """
        size = len(frame)
        held = self._held
        if 0 < size <= MAX_CHUNK:
            # The common case, inlined: one frame, one segment.
            cost = size + DATA_OVERHEAD + HELD_OVERHEAD
            if held + cost > self.max_backlog and held and not force:
                return False
            seq = self._next_seq
            self._next_seq = seq + 1
            head = _DATA_HEAD.pack(MAGIC, VERSION, _DATA_TYPE, _DATA_FIELDS + size, seq, 0, size)
            self._backlog.append(head + frame)
            self._backlog_bytes += size + DATA_OVERHEAD
            self._held = held + cost
            return True
        chunks = split_frame(frame)
        cost = size + (DATA_OVERHEAD + HELD_OVERHEAD) * len(chunks)
        if held + cost > self.max_backlog and held and not force:
            return False
        seq = self._next_seq
        remaining = len(chunks) - 1
        append = self._backlog.append
        for chunk in chunks:
            append(encode_data(seq, remaining, chunk))
            seq += 1
            remaining -= 1
        self._next_seq = seq
        self._backlog_bytes += size + DATA_OVERHEAD * len(chunks)
        self._held = held + cost
        return True

    def send_all(self, frames: Sequence[bytes], *, force: bool = False, joined: bytes = b"") -> int:
        """Queue ``frames`` in order, until one is refused, bundling the small ones.

        Strategy: a server queues a run of frames on every recipient's channel,
        and a segment per frame (its header, its place in flight, its share of
        an ack) was the largest cost reliable UDP added to TCP's. So
        consecutive frames that fit ``MAX_CHUNK`` together share a segment
        (PROTOCOL.md, Sequenced data), cut greedily as ``_pack`` cuts
        datagrams: by bisecting the running total of their sizes, a step per
        bundle. Only this call's frames are bundled: nothing waits for more.
        (Topping up the newest bundle while still unsent, with the next
        call's frames, saved 7% more CPU per delivery but went with client
        retransmissions in the latency scenario: docs/BENCHMARKS.md, third
        round.) A run with a frame to fragment, or that reaches the bound,
        takes ``_send_each``, which bundles the same way.

        Args:
            joined: the frames joined, if the caller has them (a fan-out joins
                a run once for every recipient), else empty.

        Returns:
            How many were queued: all of them, or those before the refused one.

        Raises:
            LocalProtocolError: a frame is empty or larger than MAX_FRAME (those
                before it are queued).
        """
        total = sum(map(len, frames))
        if total <= MAX_CHUNK and all(frames):
            # The common case, inlined: the run fits one bundle.
            if not frames:
                return 0
            held = self._held
            cost = total + DATA_OVERHEAD + HELD_OVERHEAD
            if held + cost <= self.max_backlog or force:
                seq = self._next_seq
                self._next_seq = seq + 1
                head = _DATA_HEAD.pack(MAGIC, VERSION, _DATA_TYPE, _DATA_FIELDS + total, seq, 0, total)
                self._backlog.append(head + (joined or b"".join(frames)))
                self._backlog_bytes += total + DATA_OVERHEAD
                self._held = held + cost
                return len(frames)
            return self._send_each(frames, force)
        sizes = list(map(len, frames))
        if min(sizes) > 0 and max(sizes) <= MAX_CHUNK:
            ends = list(accumulate(sizes))
            cuts: list[int] = []  # where each bundle ends, in frames
            count = len(sizes)
            stop = used = 0
            while stop < count:
                stop = bisect_right(ends, used + MAX_CHUNK, stop)
                cuts.append(stop)
                used = ends[stop - 1]
            added = ends[-1] + DATA_OVERHEAD * len(cuts)
            held = self._held
            if held + added + HELD_OVERHEAD * len(cuts) <= self.max_backlog or force:
                seq = self._next_seq
                append = self._backlog.append
                pack = _DATA_HEAD.pack
                start = used = 0
                for stop in cuts:
                    size = ends[stop - 1] - used
                    head = pack(MAGIC, VERSION, _DATA_TYPE, _DATA_FIELDS + size, seq, 0, size)
                    if joined:
                        append(head + joined[used : ends[stop - 1]])
                    else:
                        append(head + frames[start] if stop - start == 1 else b"".join([head, *frames[start:stop]]))
                    seq += 1
                    start, used = stop, ends[stop - 1]
                self._next_seq = seq
                self._backlog_bytes += added
                self._held = held + added + HELD_OVERHEAD * len(cuts)
                return count
        return self._send_each(frames, force)

    def _send_each(self, frames: Sequence[bytes], force: bool) -> int:
        """``send_all`` a frame at a time: bundles as it does, checks the bound
        frame by frame, and fragments what needs it."""
        queued = 0
        limit = self.max_backlog
        bundle: list[bytes] = []
        bundled = 0  # bytes of the frames in ``bundle``
        for frame in frames:
            size = len(frame)
            if 0 < size <= MAX_CHUNK:
                joins = bundle and bundled + size <= MAX_CHUNK
                held = self._held + (bundled + DATA_OVERHEAD + HELD_OVERHEAD if bundle else 0)
                cost = size if joins else size + DATA_OVERHEAD + HELD_OVERHEAD
                if held + cost > limit and held and not force:
                    break
                if not joins and bundle:
                    self._queue_bundle(bundle, bundled)
                    bundle, bundled = [], 0
                bundle.append(frame)
                bundled += size
            else:
                # Fragments, or an error: the general path, after what came before.
                if bundle:
                    self._queue_bundle(bundle, bundled)
                    bundle, bundled = [], 0
                if not self.send(frame, force=force):
                    break
            queued += 1
        if bundle:
            self._queue_bundle(bundle, bundled)
        return queued

    def _queue_bundle(self, frames: list[bytes], size: int) -> None:
        """Queue one segment holding ``frames`` (``size`` bytes in all, at most MAX_CHUNK)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        head = _DATA_HEAD.pack(MAGIC, VERSION, _DATA_TYPE, _DATA_FIELDS + size, seq, 0, size)
        self._backlog.append(b"".join([head, *frames]))
        self._backlog_bytes += size + DATA_OVERHEAD
        self._held += size + DATA_OVERHEAD + HELD_OVERHEAD

    @property
    def backlog_bytes(self) -> int:
        """Bytes of segments queued and never sent."""
        return self._backlog_bytes

    @property
    def held_bytes(self) -> int:
        """What ``max_backlog`` bounds: the bytes of the segments held (queued,
        or sent and not acknowledged), plus HELD_OVERHEAD for each."""
        return self._held

    @property
    def heard_ack(self) -> bool:
        """The peer has acknowledged at least one segment: it hears us."""
        return self._largest_acked >= 0

    @property
    def in_flight(self) -> int:
        """Segments sent and not acknowledged (always 0 in unreliable mode)."""
        return self._unacked

    @property
    def cwnd(self) -> int:
        """The congestion window, in bytes of encoded segments."""
        return int(self._cwnd)

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of segments sent, not acknowledged and not taken for lost."""
        return self._bytes_in_flight

    @property
    def flushed(self) -> bool:
        """Everything queued has been sent and, in reliable mode, acknowledged."""
        return not self._backlog and not self._unacked

    @property
    def wants_to_send(self) -> bool:
        """An ack is due or segments wait that the windows admit: call ``datagrams``."""
        if self._ack_due:
            return True
        if not self.reliable:
            return bool(self._backlog)
        if not self._cwnd_open():
            return False
        if self._lost:
            return True
        return bool(self._backlog) and self._next_seq - len(self._backlog) < self._window_end()

    @property
    def rto(self) -> float:
        """The current retransmission timeout, backoff included."""
        return min(MAX_RTO, self._base_rto * self._backoff)

    @property
    def srtt(self) -> float | None:
        """The smoothed round-trip time, once one was measured."""
        return self._srtt

    @property
    def sent(self) -> int:
        """Sequence numbers used so far."""
        return self._next_seq

    def _window_end(self) -> int:
        flight = self._flight
        if flight and not flight[0]:
            self._trim()
        return self._flight_base() + self.window

    def _flight_base(self) -> int:
        """The seq of the first segment in the flight queues (if any)."""
        return self._next_seq - len(self._backlog) - len(self._flight)

    def _trim(self) -> None:
        """Let the acknowledged segments at the head of the flight go."""
        flight = self._flight
        times = self._times
        while flight and not flight[0]:
            flight.popleft()
            times.popleft()

    def _record(self, seq: int, index: int) -> _Segment:
        """The record of the segment in flight at ``index``, made if it has none."""
        seg = self._extra.get(seq)
        if seg is None:
            seg = self._extra[seq] = _Segment(seq, len(self._flight[index]), self._times[index])
        return seg

    def _cwnd_open(self) -> bool:
        """Whether the congestion window admits another segment."""
        return not self.congestion_control or self._bytes_in_flight < self._cwnd or not self._bytes_in_flight

    def next_deadline(self) -> float:
        """When ``datagrams`` or ``is_dead`` will next have something to do, at the latest."""
        deadline = min(self._last_sent + self.keepalive_after, self.last_heard + self.dead_after)
        if self._rto_deadline is not None:
            deadline = min(deadline, self._rto_deadline)
        if self._ack_pending:
            deadline = min(deadline, self._ack_at)
        if self._loss_time is not None:
            deadline = min(deadline, self._loss_time)
        if self._reassembly:
            deadline = min(deadline, min(r.started for r in self._reassembly.values()) + REASSEMBLY_TIMEOUT)
        return deadline

    def datagrams(self, now: float) -> list[bytes]:
        """Every datagram to send now: the due ack, retransmissions, new segments
        the windows admit and a keepalive if one is due, packed in as few
        datagrams of at most MAX_DATAGRAM bytes as they fit."""
        frames: list[bytes] = []
        probes: list[bytes] = []
        if self.reliable:
            if self._loss_time is not None and now >= self._loss_time:
                self._detect_losses(now)
            if self._rto_deadline is not None and now >= self._rto_deadline:
                self._on_timeout(now)
            sent_data = self._retransmit(now, frames)
            sent_data = self._send_new(now, frames) or sent_data
            if self._probes:
                probes = self._probe(now)
        else:
            sent_data = bool(self._backlog)
            frames.extend(self._backlog)
            self._backlog.clear()
            self._backlog_bytes = 0
            self._held = 0  # nothing waits for an ack in this mode
        if not sent_data and not probes and not self._unacked and now - self._last_sent >= self.keepalive_after:
            self._keepalive(now, frames)
            sent_data = True
        if sent_data:
            self._last_sent = now
            if self.reliable and self._rto_deadline is None:
                self._rto_deadline = now + self.rto
        # A held-back ack rides along with anything sent, or goes alone when due.
        if self._ack_due or (self._ack_pending and (frames or probes or now >= self._ack_at)):
            ack = self._ack_frame()
            self._ack_due = self._ack_pending = False
            self._ack_count = 0
            self.acks_sent += 1
            if probes and len(probes[0]) + len(ack) <= MAX_DATAGRAM:
                probes[0] = self.prefix + ack + probes[0][len(self.prefix) :]
            else:
                frames.insert(0, ack)
        if not frames:
            return probes
        # Probes first: they carry the oldest segments, which a burst behind
        # them into a full queue must not push out.
        return probes + self._pack(frames)

    def _pack(self, frames: list[bytes]) -> list[bytes]:
        """``frames`` in order, in as few datagrams as they fit, each opened by the prefix.

        Strategy: greedy, as a loop over the frames would pack them, but the
        cuts are found by bisecting the running total of their sizes: one
        step per datagram, not per frame.
        """
        prefix = self.prefix
        limit = MAX_DATAGRAM - len(prefix)
        if sum(map(len, frames)) <= limit:
            return [b"".join([prefix, *frames])]  # the common case: they fit one
        sizes = list(map(len, frames))
        if sizes and max(sizes) > limit:
            size = max(sizes)
            raise LocalProtocolError(ErrorCode.DATAGRAM_TOO_LARGE, f"a frame of {size} bytes passes {limit}")
        ends = list(accumulate(sizes))
        out: list[bytes] = []
        start = 0
        used = 0  # bytes of the frames already packed
        count = len(frames)
        while start < count:
            stop = bisect_right(ends, used + limit, start)
            out.append(b"".join((prefix, *frames[start:stop])))
            used = ends[stop - 1]
            start = stop
        return out or [prefix]

    def _retransmit(self, now: float, frames: list[bytes]) -> bool:
        """Resend the segments taken for lost, in seq order, as the congestion window admits."""
        lost = self._lost
        if not lost:
            return False
        flight = self._flight
        times = self._times
        base = self._flight_base()
        sent = False
        for seq in sorted(lost):
            if not self._cwnd_open():
                break
            seg = lost.pop(seq)
            index = seq - base
            if index < 0 or not flight[index]:
                continue  # acknowledged meanwhile
            times[index] = now
            seg.sends += 1
            if seg.overtaken:
                seg.overtaken = False
                seg.arrived_sent = now
            if not seg.in_flight:
                seg.in_flight = True
                self._bytes_in_flight += seg.size
            frames.append(flight[index])
            self.retransmits += 1
            sent = True
        return sent

    def _probe(self, now: float) -> list[bytes]:
        """The probes the timer asked for, one datagram each, whatever the
        congestion window says (the timer is armed)."""
        out = []
        flight = self._flight
        base = self._flight_base()
        for seq in self._probes:
            index = seq - base
            if index >= 0 and flight[index]:
                self._times[index] = now
                seg = self._record(seq, index)
                seg.sends += 1
                if not seg.in_flight:
                    seg.in_flight = True
                    self._bytes_in_flight += seg.size
                self.retransmits += 1
                out.append(self.prefix + flight[index])
        self._probes.clear()
        self._last_sent = now
        return out

    def _send_new(self, now: float, frames: list[bytes]) -> bool:
        backlog = self._backlog
        first = self._next_seq - len(backlog)
        count = min(len(backlog), self._window_end() - first)
        if count <= 0:
            self._cwnd_limited = bool(backlog)
            return False
        flight = self._flight
        flight_append = flight.append
        times_append = self._times.append
        frames_append = frames.append
        popleft = backlog.popleft
        freed = 0
        # Send while the congestion window has room; the last segment may
        # pass it by less than one segment.
        budget = self._cwnd - self._bytes_in_flight if self.congestion_control else float("inf")
        if budget <= 0 and self._bytes_in_flight:
            self._cwnd_limited = True
            return False
        before = len(flight)
        if count > 2 and count == len(backlog) and self._backlog_bytes - len(backlog[-1]) < budget:
            # All of it: no segment before the last reaches the budget (the
            # loop below would send them all). Moved in C.
            flight.extend(backlog)
            self._times.extend(repeat(now, count))
            frames.extend(backlog)
            freed = self._backlog_bytes
            backlog.clear()
        else:
            for _ in range(count):
                frame = popleft()
                flight_append(frame)
                times_append(now)
                frames_append(frame)
                size = len(frame)
                freed += size
                budget -= size
                if budget <= 0:
                    break
        self._unacked += len(flight) - before
        self._backlog_bytes -= freed
        self._bytes_in_flight += freed
        self._cwnd_limited = bool(backlog)
        return True

    def _keepalive(self, now: float, frames: list[bytes]) -> None:
        seq = self._next_seq
        frame = encode_data(seq, 0, b"")
        if self.reliable:
            self._flight.append(frame)
            self._times.append(now)
            self._unacked += 1
            self._held += len(frame) + HELD_OVERHEAD
            self._bytes_in_flight += len(frame)
        self._next_seq += 1
        frames.append(frame)

    def _on_timeout(self, now: float) -> None:
        """The retransmission timer fired: probes, the stale taken for lost, back off."""
        if not self._unacked:
            self._rto_deadline = None
            return
        # The two oldest unacknowledged as probes, a datagram each and past
        # the congestion window (as QUIC sends two, so one lost datagram or
        # ack does not cost another timeout), even if they already wait to go
        # again: the window may be what holds them. That is all a first
        # timeout sends: it is as often a queue (a peer, or a machine, busy
        # for a while) as a loss, and the acks the probes draw tell which
        # (as QUIC's probe timeout declares nothing lost). A second one with
        # no round trip measured in between (the backoff already doubled)
        # takes what has waited a whole RTO for lost, out of the bytes in
        # flight: resent as the congestion window admits, and the acks of
        # first copies cancel the rest. Without congestion control, at most
        # TIMEOUT_BURST of them. (Taking them at the first timeout resent a
        # window's worth of what was never lost whenever a queue outgrew the
        # RTO: 1.35% of the clients' segments in the saturated scenario.)
        probes = self._probes
        lost = self._lost
        rto = self.rto
        repeated = self._backoff > 1
        cap = self._unacked if self.congestion_control else TIMEOUT_BURST
        stale: list[int] = []
        base = self._flight_base()
        for index, (frame, sent_at) in enumerate(zip(self._flight, self._times, strict=True)):
            seq = base + index
            if not frame:
                continue  # acknowledged
            if len(probes) < PROBES:
                probes.append(seq)
                lost.pop(seq, None)
                self._record(seq, index).overtaken = False
            elif not repeated:
                break  # a first timeout: the probes alone
            elif seq in lost:
                continue  # goes again anyway
            elif sent_at + rto <= now and len(lost) + len(stale) < cap:
                stale.append(seq)
            elif not self.congestion_control:
                break
        if repeated:
            # A second timeout with no round trip measured in between: the
            # path lost everything for about three RTOs (RFC 9002's persistent
            # congestion). Start again from the smallest window.
            self._ssthresh = max(self._cwnd * LOSS_REDUCTION, MIN_CWND)
            self._cwnd = MIN_CWND
            self._recovery_start = now
        self._declare_lost(stale, now)
        self._backoff = min(self._backoff * 2, 64)
        self._rto_deadline = now + self.rto

    def _declare_lost(self, seqs: list[int], now: float) -> None:
        """Take the segments ``seqs`` (in flight, not acknowledged) for lost:
        out of the bytes in flight, to be sent again, and a congestion event
        unless one is under way (RFC 9002, 7.3.2)."""
        if not seqs:
            return
        lost = self._lost
        times = self._times
        base = self._flight_base()
        newest_sent = 0.0
        for seq in seqs:
            index = seq - base
            seg = lost[seq] = self._record(seq, index)
            if seg.in_flight:
                seg.in_flight = False
                self._bytes_in_flight -= seg.size
            newest_sent = max(newest_sent, times[index])
        if newest_sent > self._recovery_start:
            self._recovery_start = now
            self._ssthresh = max(self._cwnd * LOSS_REDUCTION, MIN_CWND)
            self._cwnd = self._ssthresh

    def _ack_frame(self) -> bytes:
        if not self.reliable or not self._buffered:
            return encode_ack(self._recv_next)
        ranges: list[tuple[int, int]] = []
        start = end = -1
        for seq in sorted(self._buffered):
            if seq == end:
                end += 1
                continue
            if start >= 0:
                ranges.append((start, end))
                if len(ranges) == MAX_SACK_RANGES:
                    break
            start, end = seq, seq + 1
        else:
            ranges.append((start, end))
        return encode_ack(self._recv_next, ranges)

    def _on_ack(self, limit: int, ranges: tuple[tuple[int, int], ...], now: float) -> None:
        if not self.reliable or not self._unacked:
            return
        # Loss detection compares sending times with the latest transmission
        # known to have arrived. The ack of a segment sent twice does not say
        # which copy arrived: after a timeout it may answer a first copy that
        # a queue delayed, and taking the probe's time would declare lost
        # everything sent between the two (RFC 8985's concern). So a copy
        # counts only if acks had shown the copies before it overtaken
        # (``arrived_sent``); else the first copy's time does.
        flight = self._flight
        times = self._times
        base = self._flight_base()
        count = min(limit - base, len(flight))
        if count > 0:
            popleft = flight.popleft
            popleft_time = times.popleft
            seqs: list[int] | range = range(base, base + count)
            if count == 1:  # one segment an ack, as a sparse sender's peer sends them
                frames = [popleft()]
                sent = [popleft_time()]
            else:
                frames = list(starmap(popleft, repeat((), count)))  # in C
                sent = list(starmap(popleft_time, repeat((), count)))
            if ranges:
                more = self._selectively_acked(ranges, base + count)
                seqs = [*seqs, *more[0]]
                frames += more[1]
                sent += more[2]
        elif ranges:
            seqs, frames, sent = self._selectively_acked(ranges, base)
        else:
            return  # nothing new: a duplicate or stale ack
        tally = self._retire(seqs, frames, sent)
        if tally is None:
            return  # nothing new: a duplicate or stale ack
        grow, newest, newest_arrived, sample_sent, sample_sends = tally
        if sample_sends == 1:
            # Only the segment sent last among those newly acknowledged gives
            # a sample (as QUIC takes only the largest packet number): an older
            # one may have waited for this ack because its own was lost.
            # Karn: only a segment sent once gives a sample, and only a sample
            # undoes the backoff (RFC 6298, 5.7): an ack of a resent segment
            # may answer the first copy, delayed by a queue the timer did not
            # allow for.
            self._measured(now - sample_sent)
        elif not self._unacked:
            # Everything arrived: no queue of ours is left to slow the next
            # answer, so a new segment starts from the measured RTO again
            # (else a sparse sender on a lossy path, whose every segment
            # needs a second copy, would never measure and wait MAX_RTO).
            self._backoff = 1
        if newest > self._largest_acked:
            self._largest_acked = newest
            self._largest_acked_sent_at = newest_arrived
        self._rto_deadline = now + self.rto if self._unacked else None
        recovery_start = self._recovery_start
        self._detect_losses(now)
        # After loss detection, as RFC 9002 orders it: an ack that starts a
        # recovery grows nothing (all it covers was sent before it began).
        if grow and self._cwnd_limited and self._recovery_start == recovery_start:
            self._grow(grow)

    def _retire(
        self, seqs: Sequence[int], frames: list[bytes], sent: list[float]
    ) -> tuple[int, int, float, float, int] | None:
        """Count the segments ``seqs`` (their frames, b"" for those
        acknowledged before, and last sending times) acknowledged, and let go
        of their bytes, in one pass.

        Returns:
            None if none was new; else the bytes that may grow the congestion
            window (sent after the current recovery began), the highest seq
            and when its arrived copy was sent, and when the one sent last
            (the first such, in this order) was sent and how many times.
        """
        extra = self._extra
        recovery_start = self._recovery_start
        if not extra and type(seqs) is range and all(frames):
            # The steady state, without loss: a cumulative ack of segments
            # each sent once, none acknowledged before. Sums and maxima in C.
            count = len(frames)
            acked_bytes = sum(map(len, frames))
            if sent[0] > recovery_start:  # sent in order, so all of them
                grow = acked_bytes
            else:
                grow = sum([len(f) for f, t in zip(frames, sent, strict=True) if t > recovery_start])
            sample_sent = max(sent)
            self._unacked -= count
            self._bytes_in_flight -= acked_bytes
            self._held -= acked_bytes + HELD_OVERHEAD * count
            self._latest_acked_sent_at = max(self._latest_acked_sent_at, sample_sent)
            return grow, seqs[-1], sent[-1], sample_sent, 1
        latest = self._latest_acked_sent_at
        count = acked_bytes = flown = grow = 0
        newest = -1
        newest_arrived = sample_sent = 0.0
        sample_sends = 0
        for seq, frame, sent_at in zip(seqs, frames, sent, strict=True):
            if not frame:
                continue  # acknowledged before
            size = len(frame)
            count += 1
            acked_bytes += size
            seg = extra.pop(seq, None) if extra else None
            if seg is None:
                arrived, sends, in_flight = sent_at, 1, True
            else:
                arrived, sends, in_flight = seg.arrived_sent, seg.sends, seg.in_flight
                seg.in_flight = False
            if in_flight:
                flown += size
                if sent_at > recovery_start:
                    grow += size
            latest = max(latest, arrived)
            if seq > newest:
                newest, newest_arrived = seq, arrived
            if not sample_sends or sent_at > sample_sent:
                sample_sent, sample_sends = sent_at, sends
        if not count:
            return None
        self._unacked -= count
        self._bytes_in_flight -= flown
        self._held -= acked_bytes + HELD_OVERHEAD * count
        self._latest_acked_sent_at = latest
        return grow, newest, newest_arrived, sample_sent, sample_sends

    def _grow(self, acked: int) -> None:
        """NewReno's increase (RFC 9002, 7.3.1 and 7.3.3): a segment's worth
        per acknowledged byte in slow start, one datagram per window after."""
        if self._cwnd < self._ssthresh:
            self._cwnd += acked
        else:
            self._cwnd += MAX_DATAGRAM * acked / self._cwnd
        # Never beyond what the segment window could use.
        self._cwnd = min(self._cwnd, float(self.window * MAX_DATAGRAM))

    def _selectively_acked(
        self, ranges: tuple[tuple[int, int], ...], base: int
    ) -> tuple[list[int], list[bytes], list[float]]:
        """The segments in flight (from seq ``base``) that ``ranges`` cover, in
        the ranges' order: seqs, frames (b"" for those acknowledged before)
        and sending times; their places in flight are marked acknowledged."""
        flight = self._flight
        times = self._times
        size = len(flight)
        seqs: list[int] = []
        frames: list[bytes] = []
        sent: list[float] = []
        for start, end in ranges:
            for index in range(max(start - base, 0), min(end - base, size)):
                frame = flight[index]
                if frame:
                    seqs.append(base + index)
                    frames.append(frame)
                    sent.append(times[index])
                    flight[index] = b""
        return seqs, frames, sent

    def _detect_losses(self, now: float) -> None:
        """Mark lost what a later transmission overtook (QUIC's two thresholds,
        RFC 9002, 6.1): a segment sent no later than a copy known to have
        arrived is lost once ``REORDER_THRESHOLD`` higher segments sent no
        earlier were acknowledged, or once it has been out ``TIME_THRESHOLD``
        round trips; until then the loss timer waits for that moment."""
        largest = self._largest_acked
        arrived = self._latest_acked_sent_at
        flight = self._flight
        if not self._extra and not self._lost and (not flight or flight[0]):
            # The steady state, checked before any setup: nothing judged or
            # resent, and the oldest segment in flight (if any) was sent
            # after every copy known to have arrived, or with the newest of
            # them and above it. Then so was every later one, and the loop
            # below would stop at the first: nothing is lost, no timer.
            if not flight:
                self._loss_time = None
                return
            sent = self._times[0]
            if sent > arrived or (sent == arrived and self._flight_base() > largest):
                self._loss_time = None
                return
        threshold = largest - REORDER_THRESHOLD
        sent_before = self._largest_acked_sent_at
        delay = max(TIME_THRESHOLD * max(self._srtt or self._base_rto, self._latest_rtt), GRANULARITY)
        lost = self._lost
        extra = self._extra
        found: list[int] = []
        loss_time: float | None = None
        seq = self._flight_base() - 1
        for frame, sent in zip(self._flight, self._times, strict=True):
            seq += 1
            if not frame or seq in lost:
                continue
            seg = extra.get(seq) if extra else None
            once = seg is None or seg.sends == 1
            if sent > arrived or (sent == arrived and seq > largest):
                # Nothing sent after it is known to have arrived: no verdict.
                # A burst shares one clock reading, and went in seq order (a
                # resent segment before new ones): one above every segment
                # acknowledged went after the copy that arrived. Judging it by
                # the time threshold resent, in the saturated scenario, the
                # tail of bursts a busy peer had not read yet (0.8-1% of all).
                if once:
                    break  # later segments were first sent later still, and not resent before this one
                continue
            if (seq <= threshold and sent <= sent_before) or now - sent >= delay:
                found.append(seq)
                continue
            if loss_time is None or sent + delay < loss_time:
                loss_time = sent + delay
            if once and seq > threshold:
                # Every later segment has a higher seq and was sent no earlier
                # (first copies go in seq order; a resent one went later
                # still): neither threshold can take it, nor can its loss
                # time come sooner. Stop here rather than walk the flight
                # behind it on every ack.
                break
        self._loss_time = loss_time
        if found:
            base = self._flight_base()
            for seq in found:
                self._record(seq, seq - base).overtaken = True
            self._declare_lost(found, now)

    def _measured(self, rtt: float) -> None:
        """RFC 6298, section 2, with the peer's ack delay added (RFC 9002's PTO)."""
        rtt = max(rtt, 0.0)
        self._latest_rtt = rtt
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        rto = self._srtt + max(GRANULARITY, 4 * self._rttvar) + MAX_ACK_DELAY
        self._base_rto = min(MAX_RTO, max(MIN_RTO, rto))
        self._backoff = 1

    # --- receiving ---------------------------------------------------------------

    def receive(self, frames: Sequence[ev.Event], now: float) -> list[bytes]:
        """Take the frames of one datagram of this session (after its ``Session``
        frame); return the whole frames now deliverable, in order.

        Raises:
            RemoteProtocolError: a frame is neither ``Data`` nor ``Ack``; the
                datagram was ignored whole.
        """
        seqs: list[int] = []
        remainings: list[int] = []
        chunks: list[bytes] = []
        acks: list[AckInfo] = []
        for frame in frames:
            if type(frame) is ev.Data:
                seqs.append(frame.seq)
                remainings.append(frame.remaining)
                chunks.append(frame.chunk)
            elif type(frame) is ev.Ack:
                acks.append((frame.next_expected, frame.ranges))
            else:
                raise RemoteProtocolError(
                    ErrorCode.UNEXPECTED_FRAME, f"{type(frame).__name__} inside a session datagram"
                )
        return self.receive_parsed((seqs, remainings, chunks), acks, now)

    def receive_parsed(self, data: Segments, acks: Sequence[AckInfo], now: float) -> list[bytes]:
        """``receive`` for a datagram already split (``parse_session``): its
        segments and its acks, in their order. Returns the whole frames now
        deliverable, in order.

        The acks go first: they concern what this side sent, the segments
        what it receives, and neither changes the other's state.
        """
        self.last_heard = now
        for limit, ranges in acks:
            self._on_ack(limit, ranges, now)
        out: list[bytes] = []
        seqs, remainings, chunks = data
        if seqs:
            if not self.reliable:
                for seq, remaining, chunk in zip(seqs, remainings, chunks, strict=True):
                    self._on_datagram_data(seq, remaining, chunk, now, out)
            elif not self._in_order(data, out):
                on_data = self._on_data
                for seq, remaining, chunk in zip(seqs, remainings, chunks, strict=True):
                    on_data(seq, remaining, chunk, out)
                self._owe_ack(now)
            else:
                self._owe_ack(now)
        if self._reassembly:
            self._expire(now)
        return out

    def _in_order(self, data: Segments, out: list[bytes]) -> bool:
        """Take a datagram's segments at once if they are whole frames (one
        or a bundle each) that come next, in order, with no gap to fill nor
        fragment pending; else False, with nothing taken.

        Strategy: the common case of a busy session, checked in C:
        ``_on_data`` and ``_take`` would deliver each chunk's frames as they
        are and ask for no prompt ack.
        """
        seqs, remainings, chunks = data
        nxt = self._recv_next
        count = len(seqs)
        if (
            seqs[0] != nxt
            or self._buffered
            or self._parts is not None
            or self._skipping
            or any(remainings)
            or not all(chunks)
            or not all(map(eq, seqs, range(nxt, nxt + count)))
        ):
            return False
        if not self.split_bundles:
            out += chunks
        else:
            for chunk in chunks:
                unbundle(chunk, out)
        self._recv_next = nxt + count
        return True

    def _owe_ack(self, now: float) -> None:
        """A datagram with Data arrived: an ack is owed, now or within the delay.

        Strategy: as QUIC (RFC 9000, 13.2.1), at once for every second such
        datagram and for anything out of order (a duplicate, a gap, a gap
        filled: the sender needs those news promptly to detect loss), else
        after ``ack_delay`` at the latest, or earlier with data of our own.
        """
        self._ack_count += 1
        if not self._ack_pending:
            self._ack_pending = True
            self._ack_at = now + self.ack_delay
        if self._ack_urgent or self._ack_count >= ACK_EVERY or self.ack_delay <= 0 or self._buffered:
            self._ack_due = True
        self._ack_urgent = False

    def _on_data(self, seq: int, remaining: int, chunk: bytes, out: list[bytes]) -> None:
        nxt = self._recv_next
        if seq < nxt or seq in self._buffered:
            self.duplicates += 1
            self._ack_urgent = True
            return
        if seq >= nxt + RECV_WINDOW:
            return  # beyond the window: not acknowledged, so it comes again later
        if seq != nxt:
            self._buffered[seq] = (remaining, chunk)
            self._ack_urgent = True
            return
        if self._buffered:
            self._ack_urgent = True  # fills a gap
        self._take(remaining, chunk, out)
        nxt += 1
        buffered = self._buffered
        while buffered:
            item = buffered.pop(nxt, None)
            if item is None:
                break
            self._take(item[0], item[1], out)
            nxt += 1
        self._recv_next = nxt

    def _take(self, remaining: int, chunk: bytes, out: list[bytes]) -> None:
        """The next segment in order: a whole frame, a keepalive or a fragment."""
        if self._skipping:
            self._skipping = remaining != 0
            return
        parts = self._parts
        if parts is None:
            if remaining == 0:
                if not chunk:
                    pass  # a keepalive
                elif self.split_bundles:
                    unbundle(chunk, out)
                else:
                    out.append(chunk)
                return
            self._parts = [chunk]
            self._parts_left = remaining
            self._parts_size = len(chunk)
            return
        self._parts_size += len(chunk)
        if remaining != self._parts_left - 1 or self._parts_size > MAX_FRAME:
            # The chain is not what its first fragment announced: drop the frame.
            self.malformed += 1
            self._parts = None
            self._skipping = remaining != 0
            return
        parts.append(chunk)
        self._parts_left = remaining
        if remaining == 0:
            out.append(b"".join(parts))
            self._parts = None

    def _on_datagram_data(self, seq: int, remaining: int, chunk: bytes, now: float, out: list[bytes]) -> None:
        """Unreliable mode: drop duplicates and what is too old to tell, deliver the rest."""
        high = self._recv_next  # highest seq seen + 1
        if seq < high - RECV_WINDOW or seq in self._seen:
            self.duplicates += 1
            return
        self._seen.add(seq)
        self._received += 1
        if seq >= high:
            self._recv_next = high = seq + 1
            if len(self._seen) > 2 * RECV_WINDOW:
                floor = high - RECV_WINDOW
                self._seen = {s for s in self._seen if s >= floor}
        if not chunk:
            self._ack_due = True  # a keepalive: answer it so the peer knows we are here
            return
        if remaining == 0:
            # Whole frames, one or a bundle, if their headers tile the chunk
            # exactly; else the last fragment of a frame (the same guess as
            # the reassembly below makes: a fragment rarely looks like frames).
            frames: list[bytes] = []
            if unbundle(chunk, frames):
                if self.split_bundles:
                    out += frames
                else:
                    out.append(chunk)
                return
        last = seq + remaining
        group = self._reassembly.get(last)
        if group is None:
            if len(self._reassembly) >= MAX_REASSEMBLIES:
                oldest = min(self._reassembly, key=lambda k: self._reassembly[k].started)
                del self._reassembly[oldest]
                self.malformed += 1
            group = self._reassembly[last] = _Reassembly(now)
        group.chunks[seq] = chunk
        group.size += len(chunk)
        if group.size > MAX_FRAME:
            del self._reassembly[last]
            self.malformed += 1
            return
        first = min(group.chunks)
        head = group.chunks[first]
        if (
            len(group.chunks) == last - first + 1
            and len(head) >= HEADER_SIZE
            and head[:2] == MAGIC
            and HEADER_SIZE + int(HEADER.unpack_from(head, 0)[3]) == group.size
        ):
            del self._reassembly[last]
            out.append(b"".join(group.chunks[s] for s in range(first, last + 1)))

    def _expire(self, now: float) -> None:
        for last in [k for k, r in self._reassembly.items() if now - r.started >= REASSEMBLY_TIMEOUT]:
            del self._reassembly[last]
            self.malformed += 1

    @property
    def lost(self) -> int:
        """Unreliable mode: sequence numbers below the highest seen that never arrived."""
        return 0 if self.reliable else self._recv_next - self._received

    @property
    def reassembling(self) -> int:
        """Bytes held for frames not yet complete (bounded)."""
        size = sum(len(c) for _, c in self._buffered.values())
        size += self._parts_size if self._parts is not None else 0
        return size + sum(r.size for r in self._reassembly.values())

    # --- liveness ----------------------------------------------------------------

    def is_dead(self, now: float) -> bool:
        """The peer has been silent, or left a segment unacknowledged, for ``dead_after``."""
        if now - self.last_heard >= self.dead_after:
            return True
        if self._unacked:
            self._trim()
            if self._flight:
                seg = self._extra.get(self._flight_base())
                first_sent = self._times[0] if seg is None else seg.first_sent
                if now - first_sent >= self.dead_after:
                    return True
        return False
