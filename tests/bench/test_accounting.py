"""The benchmark's message format and its accounting, fed bytes by hand."""

from __future__ import annotations

import random

import pytest

from bench.accounting import Expected, Ledger, Progress, StreamCorrupt, _uniform
from bench.payload import (
    MESSAGE_PREFIX,
    MESSAGE_SIZE,
    SAY_PREFIX,
    TEXT_SIZE,
    make_text,
    nick_of,
    parse_text,
    say_frame,
    sender_key,
    seq_key,
)
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.framing import decode_frame, encode


def relayed(sender: int, seq: int, sent_at: int, *, history: bool = False) -> bytes:
    """The frame a server relays for message ``seq`` of ``sender``: numbered
    and timed by the server (here, one room seq per sender and seq)."""
    text = make_text(sender, seq, sent_at).decode("ascii")
    return encode(ev.Message(LOBBY, nick_of(sender), text, 1000 * sender + seq, 1 + sent_at // 1_000_000, history))


def test_text_round_trip_and_fixed_width() -> None:
    text = make_text(12, 345, 6_789_000_000)
    assert len(text) == TEXT_SIZE
    assert parse_text(text) == (12, 345, 6_789_000_000)
    assert seq_key(9) < seq_key(10)  # equal width: bytes order is number order
    assert sender_key(7) == text[:4].replace(b"12", b"07")


@pytest.mark.parametrize("bad", [b"", b"x" * TEXT_SIZE, make_text(1, 2, 3)[:-1], b"abcd" + make_text(1, 2, 3)[4:]])
def test_parse_text_refuses_what_is_not_a_benchmark_text(bad: bytes) -> None:
    assert parse_text(bad) is None


def test_say_frame_is_the_encoders_frame() -> None:
    frame = say_frame(3, 4, 5)
    assert frame.startswith(SAY_PREFIX)
    assert decode_frame(frame) == ev.Say(LOBBY, make_text(3, 4, 5).decode("ascii"))
    assert len(relayed(3, 4, 5)) == MESSAGE_SIZE


def test_nicks_have_one_width() -> None:
    assert {len(nick_of(i)) for i in (0, 9, 10, 999, 9999)} == {5}
    with pytest.raises(ValueError):
        nick_of(10_000)


def stream(frames: list[bytes], seed: int) -> list[bytes]:
    """The frames joined and cut at random points (1 byte to 300 bytes apart)."""
    data = b"".join(frames)
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 300)
        out.append(data[pos : pos + step])
        pos += step
    return out


@pytest.mark.parametrize("seed", range(5))
def test_progress_tracks_the_latest_seq_per_sender_whatever_the_split(seed: int) -> None:
    frames = [relayed(s, q, 1000 + q) for q in range(1, 40) for s in (1, 2, 3)]
    frames.insert(7, encode(ev.Ping(99)))
    frames.insert(50, encode(ev.Joined(LOBBY, "someone")))
    progress = Progress()
    others = []
    for piece in stream(frames, seed):
        others += progress.feed(piece)
    assert progress.latest == {sender_key(s): seq_key(39) for s in (1, 2, 3)}
    assert progress.messages == 39 * 3
    assert [(t, f) for t, f in others] == [(0x40, encode(ev.Ping(99))), (0x24, encode(ev.Joined(LOBBY, "someone")))]


def test_progress_fast_path_takes_a_whole_uniform_buffer() -> None:
    progress = Progress()
    assert progress.feed(b"".join(relayed(1, q, 0) for q in range(1, 101))) == []
    assert progress.latest == {sender_key(1): seq_key(100)}


def test_progress_refuses_a_stream_that_is_not_frames() -> None:
    with pytest.raises(StreamCorrupt):
        Progress().feed(b"hello, this is not a frame at all")


@pytest.mark.parametrize("seed", range(3))
def test_ledger_counts_every_delivery_once_with_its_latency(seed: int) -> None:
    ledger = Ledger({1: 50, 2: 50})
    frames = [relayed(s, q, 1_000 * q) for q in range(1, 51) for s in (1, 2)]
    t = 0
    for piece in stream(frames, seed):
        t += 10
        ledger.feed(1_000_000 + t, piece)
    assert (ledger.unique, ledger.duplicates, ledger.out_of_order, ledger.garbled) == (100, 0, 0, 0)
    assert ledger.expected == 100
    assert len(ledger.latencies) == 100
    assert all(lat > 0 for lat in ledger.latencies)
    assert ledger.leftover == 0
    assert ledger.first_at is not None and ledger.last_at is not None and ledger.first_at <= ledger.last_at


def test_latency_is_taken_when_the_last_byte_of_a_frame_arrives() -> None:
    ledger = Ledger({1: 1})
    frame = relayed(1, 1, 100)
    ledger.feed(150, frame[:10])
    ledger.feed(400, frame[10:])
    assert list(ledger.latencies) == [300]


def test_ledger_counts_duplicates_reordering_and_garbage() -> None:
    ledger = Ledger({1: 5})
    order = [1, 3, 2, 2, 5, 4, 9]  # 2 is a duplicate; 2 and 4 arrive late; 9 was never sent
    for q in order:
        ledger.feed(10, relayed(1, q, 0))
    ledger.feed(10, relayed(7, 1, 0))  # a sender that does not exist
    ledger.feed(10, encode(ev.Message(LOBBY, nick_of(1), "not a benchmark text")))
    ledger.feed(10, encode(ev.Left(nick_of(2), "bye")))
    assert ledger.unique == 5
    assert ledger.duplicates == 1
    assert ledger.out_of_order == 2
    assert ledger.garbled == 2
    assert ledger.other_frames == 2  # the foreign Message text and the notice


@pytest.mark.parametrize("seed", range(3))
def test_a_senders_echoes_are_counted_apart_from_its_deliveries(seed: int) -> None:
    # Sender 1 hears sender 2's messages and its own back, interleaved.
    ledger = Ledger(Expected({2: 30}, own=1, echoes=30))
    frames = [relayed(s, q, 1_000 * q) for q in range(1, 31) for s in (1, 2)]
    t = 0
    for piece in stream(frames, seed):
        t += 10
        ledger.feed(1_000_000 + t, piece)
    assert (ledger.unique, ledger.expected, len(ledger.latencies)) == (30, 30, 30)
    assert (ledger.echoes, ledger.echoes_expected, len(ledger.echo_latencies)) == (30, 30, 30)
    assert (ledger.duplicates, ledger.out_of_order, ledger.garbled, ledger.strays) == (0, 0, 0, 0)
    # Without being told whose it is, a sender's own message is a stray.
    blind = Ledger({2: 30})
    blind.feed(1, relayed(1, 1, 0))
    assert (blind.unique, blind.strays, blind.garbled) == (0, 1, 1)


def test_an_echo_twice_or_late_is_flagged_like_any_delivery() -> None:
    ledger = Ledger(Expected({}, own=4, echoes=3))
    for q in (2, 1, 1, 3, 7):
        ledger.feed(10, relayed(4, q, 0))
    assert (ledger.echoes, ledger.duplicates, ledger.out_of_order, ledger.garbled) == (3, 1, 1, 1)
    assert ledger.unique == 0 and ledger.expected == 0


def test_replayed_history_is_neither_a_delivery_nor_progress() -> None:
    # A join's briefing replays the room's latest messages, marked history:
    # in a uniform buffer (the fast path must not take it) and walked.
    replay = [relayed(1, q, 0, history=True) for q in (7, 8, 9)]
    live = [relayed(1, q, 5) for q in (1, 2)]
    for data in (b"".join(replay + live), b"".join([*live[:1], encode(ev.Ping(1)), *replay, *live[1:]])):
        progress = Progress()
        progress.feed(data)
        assert progress.latest == {sender_key(1): seq_key(2)}
        assert (progress.messages, progress.replayed) == (2, 3)
        ledger = Ledger({1: 2})
        ledger.feed(10, data)
        assert (ledger.unique, ledger.replayed, ledger.garbled, ledger.duplicates) == (2, 3, 0, 0)


def test_ledger_sees_a_merged_message_as_garbled() -> None:
    # A server that mixes two messages' bytes relays a text that names nobody.
    text = (make_text(1, 1, 0)[:30] + make_text(1, 2, 0)[30:]).replace(b":", b"?", 1)
    ledger = Ledger({1: 2})
    ledger.feed(1, encode(ev.Message(LOBBY, nick_of(1), text.decode("ascii"))))
    assert (ledger.unique, ledger.garbled) == (0, 1)


def test_ledger_keeps_a_partial_frame_as_leftover() -> None:
    ledger = Ledger({1: 1})
    ledger.feed(1, relayed(1, 1, 0)[:-3])
    assert ledger.unique == 0
    assert ledger.leftover == MESSAGE_SIZE - 3


def test_a_buffer_that_only_looks_uniform_is_walked() -> None:
    # Two message prefixes in two messages' worth of bytes, but a ping shifts
    # the second one: counting prefixes alone would take this for two whole messages.
    data = relayed(1, 1, 0) + encode(ev.Ping(5)) + relayed(1, 2, 0)
    progress = Progress()
    others = progress.feed(data[: 2 * MESSAGE_SIZE])
    assert others == [(0x40, encode(ev.Ping(5)))]
    assert progress.latest == {sender_key(1): seq_key(1)}
    assert progress.feed(data[2 * MESSAGE_SIZE :]) == []
    assert progress.latest == {sender_key(1): seq_key(2)}


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_path_takes_a_buffer_exactly_when_every_frame_is_a_live_message(seed: int) -> None:
    # Nine messages, one byte of one changed (or not): taken whole only if every
    # frame still starts with the message prefix and has its history flag clear.
    rng = random.Random(seed)
    data = bytearray(b"".join(relayed(1, q, 0) for q in range(1, 10)))
    if seed % 4:
        data[rng.randrange(len(data))] = rng.randrange(256)
    frames = [bytes(data[i : i + MESSAGE_SIZE]) for i in range(0, len(data), MESSAGE_SIZE)]
    live = all(f.startswith(MESSAGE_PREFIX) and f[-1] == 0 for f in frames)
    assert _uniform(bytes(data)) == (len(data) if live else 0)
    assert _uniform(bytes(data) + b"\xc1") == (len(data) if live else 0)  # a partial frame after them
