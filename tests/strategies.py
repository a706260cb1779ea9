"""Hypothesis strategies for twinchat's events, nicks, texts and byte streams."""

from __future__ import annotations

import unicodedata
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.nicks import SPECIALS, check_nick
from common.chat.unicode_rules import bidi_unbalanced
from common.wire.errors import ErrorCode
from common.wire.limits import (
    MAX_ACK_RANGES,
    MAX_EPOCH,
    MAX_HISTORY_PAGE,
    MAX_NICK,
    MAX_PASSWORD,
    MAX_TEXT,
    MAX_TOPIC,
    ROOMS_CHUNK,
    WHO_CHUNK,
)

# Letters of several scripts, so nick rules meet Cyrillic, CJK, Greek and
# Devanagari, not only ASCII; a nick takes its letters from one script (mixed
# scripts are refused), and each script its own combining marks.
_SCRIPT_LETTERS = (
    ("abcxyzABCXYZéßñ", "\u0301\u0308"),
    ("МашаявЖЛ", "\u0301\u0308"),
    ("李雷王", ""),
    ("ΣσςπΩάί", "\u0301\u0308"),
    ("अनपक", "\u093f\u094d"),
)
_DIGITS = st.sampled_from("0123456789")
_SPECIAL = st.sampled_from(sorted(SPECIALS))


@st.composite
def _letter(draw: st.DrawFn, letters: str, marks: str) -> str:
    """A letter, maybe with distinct combining marks it does not hold already."""
    letter = draw(st.sampled_from(letters))
    fresh = [m for m in marks if m not in unicodedata.normalize("NFD", letter)]
    if not fresh:
        return letter
    return letter + "".join(draw(st.lists(st.sampled_from(fresh), unique=True, max_size=2)))


@st.composite
def nicks(draw: st.DrawFn) -> str:
    """A nick that obeys every nick rule, in NFC form."""
    letters, marks = draw(st.sampled_from(_SCRIPT_LETTERS))
    letter = _letter(letters, marks)
    nick = draw(st.one_of(letter, _SPECIAL.filter(lambda ch: ch != "-")))
    for part in draw(st.lists(st.one_of(letter, _DIGITS, _SPECIAL), max_size=MAX_NICK - 1)):
        if len(unicodedata.normalize("NFC", nick + part)) > MAX_NICK:
            break
        nick += part
    return check_nick(nick)


#: Room names: ``#`` and a nick.
rooms = nicks().map(lambda nick: "#" + nick)


#: Any character a text may hold: no controls (Cc) and no lone surrogates (Cs).
text_chars = st.characters(blacklist_categories=("Cc", "Cs"))


def texts(*, min_size: int = 1, max_size: int = 300) -> st.SearchStrategy[str]:
    """Chat texts: UTF-8 of at most MAX_TEXT bytes, any script, emoji included,
    bidi controls balanced."""
    return st.text(text_chars, min_size=min_size, max_size=max_size).filter(
        lambda t: len(t.encode("utf-8")) <= MAX_TEXT and not bidi_unbalanced(t)
    )


#: Texts at the size limit, where off-by-one errors live.
long_texts = st.builds(lambda n, c: c * n, st.integers(MAX_TEXT // 4 - 2, MAX_TEXT // 4), st.sampled_from("я👋"))

reasons = texts(min_size=0, max_size=80)
u64 = st.integers(0, 2**64 - 1)
blobs = st.binary(max_size=300)


@st.composite
def _acks(draw: st.DrawFn) -> ev.Ack:
    base = draw(st.integers(0, 2**40))
    ranges = []
    at = base
    for _ in range(draw(st.integers(0, MAX_ACK_RANGES))):
        start = at + draw(st.integers(1, 1000))
        end = start + draw(st.integers(1, 1000))
        ranges.append((start, end))
        at = end
    return ev.Ack(base, tuple(ranges))


_chat_text = st.one_of(texts(), long_texts)

topics = texts(min_size=0, max_size=100).filter(lambda t: len(t.encode("utf-8")) <= MAX_TOPIC)
_room_infos = st.builds(ev.RoomInfo, rooms, u64, topics)
passwords = texts(max_size=60).filter(lambda t: len(t.encode("utf-8")) <= MAX_PASSWORD)
epochs = st.text("0123456789abcdefXYZ", max_size=MAX_EPOCH)

#: One strategy per event class; a test checks that every frame type has one.
EVENTS: dict[type[ev.Event], st.SearchStrategy[Any]] = {
    ev.Register: st.builds(ev.Register, nicks(), st.one_of(st.just(""), passwords), st.booleans()),
    ev.Say: st.builds(ev.Say, rooms, _chat_text),
    ev.Act: st.builds(ev.Act, rooms, texts()),
    ev.Whisper: st.builds(ev.Whisper, nicks(), _chat_text),
    ev.ChangeNick: st.builds(ev.ChangeNick, nicks()),
    ev.Who: st.just(ev.Who()),
    ev.Help: st.just(ev.Help()),
    ev.Join: st.one_of(st.builds(ev.Join, rooms), st.builds(ev.Join, rooms, epochs, u64)),
    ev.History: st.builds(ev.History, rooms, u64, st.integers(1, MAX_HISTORY_PAGE)),
    ev.RegisterAccount: st.builds(ev.RegisterAccount, passwords),
    ev.ChangePassword: st.builds(ev.ChangePassword, passwords, passwords),
    ev.DropAccount: st.builds(ev.DropAccount, passwords),
    ev.Part: st.builds(ev.Part, rooms, reasons),
    ev.ListRooms: st.just(ev.ListRooms()),
    ev.Names: st.builds(ev.Names, rooms),
    ev.GetTopic: st.builds(ev.GetTopic, rooms),
    ev.SetTopic: st.builds(ev.SetTopic, rooms, topics),
    ev.Welcome: st.builds(ev.Welcome, nicks(), u64),
    ev.Message: st.builds(ev.Message, rooms, nicks(), _chat_text, u64, u64, st.booleans()),
    ev.Action: st.builds(ev.Action, rooms, nicks(), texts(), u64, u64, st.booleans()),
    ev.Private: st.builds(ev.Private, nicks(), texts(), u64, st.booleans()),
    ev.Replay: st.builds(ev.Replay, rooms, epochs, u64, u64, st.booleans()),
    ev.Joined: st.builds(ev.Joined, rooms, nicks()),
    ev.Parted: st.builds(ev.Parted, rooms, nicks(), reasons),
    ev.Left: st.builds(ev.Left, nicks(), reasons),
    ev.Renamed: st.builds(ev.Renamed, nicks(), nicks()),
    ev.Topic: st.one_of(
        st.builds(ev.Topic, rooms, topics, nicks(), u64, st.booleans()),
        st.builds(ev.Topic, rooms, st.just(""), st.just(""), st.just(0), st.just(False)),
    ),
    ev.WhoReply: st.builds(
        ev.WhoReply, st.one_of(st.just(""), rooms), st.lists(nicks(), max_size=WHO_CHUNK).map(tuple), st.booleans()
    ),
    ev.RoomList: st.builds(ev.RoomList, st.lists(_room_infos, max_size=ROOMS_CHUNK).map(tuple), st.booleans()),
    ev.Reply: st.builds(ev.Reply, texts()),
    ev.Error: st.builds(ev.Error, st.sampled_from(ErrorCode), reasons),
    ev.Ping: st.builds(ev.Ping, u64),
    ev.Pong: st.builds(ev.Pong, u64),
    ev.Goodbye: st.builds(ev.Goodbye, reasons),
    ev.Hello: st.builds(ev.Hello, blobs, blobs),
    ev.Cookie: st.builds(ev.Cookie, blobs),
    ev.Accept: st.builds(ev.Accept, u64, st.booleans()),
    ev.Session: st.builds(ev.Session, u64),
    ev.Data: st.builds(ev.Data, u64, st.integers(0, 255), blobs),
    ev.Ack: _acks(),
}

any_event: st.SearchStrategy[ev.Event] = st.one_of(*EVENTS.values())


@st.composite
def split_points(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into chunks at points hypothesis chooses (empty chunks excluded)."""
    if not data:
        return []
    cuts = draw(st.lists(st.integers(1, len(data) - 1), max_size=20, unique=True)) if len(data) > 1 else []
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]
