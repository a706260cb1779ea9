"""Bidi controls in texts (issue 15), and the generated Unicode tables."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import _unicode_tables as tables
from common.chat import events as ev
from common.chat.commands import parse_input
from common.chat.hub import Hub
from common.chat.nicks import SPECIALS
from common.chat.unicode_rules import bidi_unbalanced, defuse_bidi, scripts_of
from common.wire.errors import ErrorCode, FrameRejected, RuleError
from common.wire.framing import decode_frame, encode
from common.wire.limits import MAX_TEXT
from tests.strategies import text_chars
from tools.gen_unicode_tables import SPECIALS as generator_specials

LRE, RLE, PDF, LRO, RLO = "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"
LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"

#: Every event a text rides in, built around one text.
CARRIERS: dict[str, Callable[[str], ev.Event]] = {
    "Say": lambda t: ev.Say("#lobby", t),
    "Act": lambda t: ev.Act("#lobby", t),
    "Whisper": lambda t: ev.Whisper("bob", t),
    "Message": lambda t: ev.Message("#lobby", "alice", t),
    "Action": lambda t: ev.Action("#lobby", "alice", t),
    "Part": lambda t: ev.Part("#lobby", t),
    "Parted": lambda t: ev.Parted("#lobby", "alice", t),
    "SetTopic": lambda t: ev.SetTopic("#lobby", t),
    "Private": lambda t: ev.Private("alice", t),
    "Reply": ev.Reply,
    "Left": lambda t: ev.Left("alice", t),
    "Goodbye": ev.Goodbye,
    "Error": lambda t: ev.Error(ErrorCode.BAD_TEXT, t),
}

UNBALANCED = [
    "hi \u202egnp.exe",  # shows as "hi exe.png" (the example)
    *(f"x{opener}y" for opener in (LRE, RLE, LRO, RLO, LRI, RLI, FSI)),  # left open
    f"x{PDF}y",  # closes what it did not open
    f"x{PDI}y",
    f"{RLO}a{LRI}b{PDF}c{PDI}",  # closes out of order
    f"{RLI}a{PDF}",  # the wrong closer
    f"{RLO}a{PDF}{PDF}",
]

BALANCED = [
    "plain text",
    f"{RLO}abc{PDF} and on",
    f"{RLI}עברית{PDI} then Latin",
    f"{LRE}{RLI}{FSI}x{PDI}{PDI}{PDF}",
    "\u200fmarks\u200e are\u061c fine",  # RLM, LRM, ALM move no text
    "مرحبا hello",
]


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
@pytest.mark.parametrize("text", UNBALANCED)
def test_a_text_with_unbalanced_bidi_controls_is_refused(carrier: Callable[[str], ev.Event], text: str) -> None:
    with pytest.raises(RuleError, match="bidi") as caught:
        carrier(text)
    assert caught.value.code is ErrorCode.BAD_TEXT


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
@pytest.mark.parametrize("text", BALANCED)
def test_a_text_with_balanced_bidi_controls_is_carried(carrier: Callable[[str], ev.Event], text: str) -> None:
    carrier(text)


def test_a_frame_with_an_unbalanced_override_is_rejected_not_relayed() -> None:
    # Build the frame with a 3-byte stand-in, then swap in RLO (also 3 bytes):
    # no encoder will produce this frame, but a peer can send it.
    frame = encode(ev.Say("#lobby", "hi €gnp.exe")).replace("€".encode(), RLO.encode())
    with pytest.raises(FrameRejected) as caught:
        decode_frame(frame)
    assert caught.value.code is ErrorCode.BAD_TEXT


def test_a_typed_line_with_an_override_is_refused() -> None:
    with pytest.raises(RuleError) as caught:
        parse_input("hi \u202egnp.exe", "#lobby")
    assert caught.value.code is ErrorCode.BAD_TEXT


def test_an_unknown_command_with_an_override_gets_a_defused_error() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1, may_retry=True)
    with pytest.raises(RuleError) as caught:
        parse_input(f"/{RLO}exe", "#lobby")
    (delivery,) = hub.reject(1, caught.value)
    assert delivery.event == ev.Error(ErrorCode.UNKNOWN_COMMAND, caught.value.detail.replace(RLO, "\ufffd"))


@pytest.mark.parametrize("nick", [f"{RLO}bob", f"bob{RLI}", "bob\u200f", "\u061cbob"])
def test_a_nick_field_with_a_bidi_control_is_refused(nick: str) -> None:
    # The hub names the nick of a Whisper in its NO_SUCH_NICK detail.
    with pytest.raises(RuleError) as caught:
        ev.Whisper(nick, "hi")
    assert caught.value.code is ErrorCode.BAD_NICK


def test_scrub_defuses_unbalanced_controls_and_keeps_balanced_ones() -> None:
    assert ev.scrub(f"unknown command /{RLO}x") == "unknown command /\ufffdx"
    assert ev.scrub(f"{RLO}x{PDF}") == f"{RLO}x{PDF}"


def test_scrub_cutting_a_text_keeps_it_valid() -> None:
    long = f"{RLO}{'x' * MAX_TEXT}{PDF}"
    ev.Error(ErrorCode.BAD_TEXT, ev.scrub(long))


@given(st.text(st.one_of(text_chars, st.sampled_from(LRE + RLE + PDF + LRO + RLO + LRI + RLI + FSI + PDI))))
def test_scrub_makes_any_text_fit_a_text_field(text: str) -> None:
    ev.Error(ErrorCode.BAD_TEXT, ev.scrub(text))
    assert not bidi_unbalanced(defuse_bidi(text))
    assert len(defuse_bidi(text).encode()) == len(text.encode("utf-8", "surrogatepass"))


@given(st.lists(st.sampled_from([(RLO, PDF), (LRE, PDF), (RLI, PDI), (FSI, PDI)]), max_size=6), st.text(max_size=5))
def test_properly_nested_controls_balance(pairs: list[tuple[str, str]], middle: str) -> None:
    middle = defuse_bidi(middle)
    text = "".join(o for o, _ in pairs) + middle + "".join(c for _, c in reversed(pairs))
    assert not bidi_unbalanced(text)
    if pairs:
        assert bidi_unbalanced(text[:-1])


def test_tables_name_their_sources() -> None:
    assert tables.__doc__ is not None
    for name in ("confusables.txt", "Scripts.txt", "ScriptExtensions.txt", "DerivedCoreProperties.txt"):
        assert name in tables.__doc__
    assert tables.UNIDATA_VERSION


def test_the_generator_knew_the_nick_specials() -> None:
    # tools/gen_unicode_tables.py keeps its own copy; the key table must cover them.
    assert frozenset(generator_specials) == SPECIALS


@pytest.mark.parametrize(
    ("ch", "scripts"),
    [("a", {"Latn"}), ("а", {"Cyrl"}), ("李", {"Hani"}), ("1", set()), ("\u0301", set()), ("ե", {"Armn"})],
)
def test_scripts_of(ch: str, scripts: set[str]) -> None:
    assert scripts_of(ch) == scripts
