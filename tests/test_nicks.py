"""Nick rules and nick equality."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.nicks import check_nick, nick_key
from common.wire.errors import ErrorCode, RuleError
from common.wire.framing import decode_frame, encode
from tests.strategies import nicks, text_chars


@pytest.mark.parametrize(
    "nick",
    [
        *("alice", "Маша", "李雷", "प्रिया", "[bot]", "a-b", "x_1", "^_^", "`q`", "a|b{c}", "\\o", "Σίσυφος", "x" * 32),
        *("Nguyễn", "a\u0300\u0301\u0302\u0303", "田中さん", "Tanakaさん", "김철수", "Kim철수", "क१२", "_李"),
    ],
)
def test_valid_nicks(nick: str) -> None:
    assert check_nick(nick) == unicodedata.normalize("NFC", nick)


@pytest.mark.parametrize(
    "nick",
    ["", "1abc", "-x", "x" * 33, "a b", "bob!", "a@b", "tab\t", "👋", "\u0301a", "a.b", "a:b", "٣x"],
)
def test_invalid_nicks(nick: str) -> None:
    with pytest.raises(RuleError) as caught:
        check_nick(nick)
    assert caught.value.code is ErrorCode.BAD_NICK
    assert caught.value.detail


def test_length_counts_characters_after_nfc() -> None:
    decomposed = "e\u0301" * 32  # 64 code points, 32 once composed
    assert len(check_nick(decomposed)) == 32


@pytest.mark.parametrize(
    ("a", "b"),
    [("Маша", "маша"), ("ALICE", "alice"), ("STRASSE", "straße"), ("é", "e\u0301"), ("ΣΊΣΥΦΟΣ", "σίσυφος")],
)
def test_same_nick_under_casefolding(a: str, b: str) -> None:
    assert nick_key(check_nick(a)) == nick_key(check_nick(b))


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("Маша", "Masha"), ("bob", "bib"), ("Kim", "Kin")])
def test_different_nicks(a: str, b: str) -> None:
    assert nick_key(a) != nick_key(b)


@given(nicks())
def test_generated_nicks_are_valid_and_keys_are_case_blind(nick: str) -> None:
    assert check_nick(nick) == nick
    assert nick_key(nick) == nick_key(nick.casefold())


# Issue 15: names that pass for ``alice`` on another user's screen. Each one is
# refused, as a bad nick or as the nick ``alice`` already holds.
_MARKS_31 = "".join(chr(cp) for cp in range(0x300, 0x31F))
LOOK_ALIKES_OF_ALICE = {
    "cyrillic a": "аlice",
    "cyrillic ie": "alicе",
    "cyrillic a, i, es, ie": "аlісе",
    "combining grapheme joiner": "alice\u034f",
    "variation selector 16": "alice\ufe0f",
    "khmer inherent aq": "alice\u17b4",
    "dotless i": "alıce",
    "armenian ech": "alicե",
    "bidi mark": "alice\u200f",
    "zero width joiner": "ali\u200dce",
    "fullwidth": "ａｌｉｃｅ",
    "capital": "ALICE",
    "digit one for l": "a1ice",
    "bar for l": "a|ice",
}


def register(hub: Hub[int], conn: int, nick: str) -> list[Delivery[int]]:
    """``conn`` sends Register(nick), refused by the decoder or by the hub."""
    try:
        event = ev.Register(nick)
    except RuleError as exc:  # what the decoder reports as FrameRejected
        return hub.reject(conn, exc)
    return hub.receive(conn, event, 0.0)


@pytest.mark.parametrize("nick", LOOK_ALIKES_OF_ALICE.values(), ids=LOOK_ALIKES_OF_ALICE.keys())
def test_a_look_alike_cannot_register_beside_alice(nick: str) -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    register(hub, 1, "alice")
    hub.connect(2, may_retry=True)
    out = register(hub, 2, nick)
    assert [type(d.event) for d in out] == [ev.Error]
    assert out[0].event.code in {ErrorCode.BAD_NICK, ErrorCode.NICK_TAKEN}  # type: ignore[union-attr]
    assert hub.nicks() == ("alice",)


@pytest.mark.parametrize("nick", ["аlice", "alicе", "аlісе", "alicե", "Kimч", "ab\u0391"])
def test_mixed_script_nicks_are_refused(nick: str) -> None:
    with pytest.raises(RuleError, match="scripts") as caught:
        check_nick(nick)
    assert caught.value.code is ErrorCode.BAD_NICK


@pytest.mark.parametrize(
    "nick",
    [
        *("alice\u034f", "alice\ufe0f", "alice\u17b4", "ali\u200dce", "ali\u00adce"),  # invisible marks
        *("\u3164", "\u115f", "\uffa0", "\u1160", "x\u3164y"),  # Hangul fillers: print as blank
    ],
)
def test_invisible_and_blank_nicks_are_refused(nick: str) -> None:
    with pytest.raises(RuleError) as caught:
        check_nick(nick)
    assert caught.value.code is ErrorCode.BAD_NICK


@pytest.mark.parametrize("nick", ["a" + _MARKS_31, "a" + "\u0301" * 31, "a\u0301\u0301", "a" + _MARKS_31[:5]])
def test_piles_of_combining_marks_are_refused(nick: str) -> None:
    with pytest.raises(RuleError, match="mark"):
        check_nick(nick)


@pytest.mark.parametrize("nick", ["_\u0301", "x1\u0301", "[\u0308]"])
def test_a_combining_mark_sits_on_a_letter(nick: str) -> None:
    with pytest.raises(RuleError, match="letter"):
        check_nick(nick)


@pytest.mark.parametrize("nick", ["ab\u0661", "क१2"])
def test_digits_of_two_number_systems_are_refused(nick: str) -> None:
    with pytest.raises(RuleError):
        check_nick(nick)


@pytest.mark.parametrize("nick", ["ali\u202ece", "\u2067alice\u2069", "alice\u061c"])
def test_bidi_controls_are_refused_in_nicks(nick: str) -> None:
    with pytest.raises(RuleError):
        check_nick(nick)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "alıce"),
        ("alice", "ａｌｉｃｅ"),
        ("alice", "a1ice"),
        ("bob", "b0b"),
        ("coco", "сосо"),  # Latin and all-Cyrillic: each one script, but they look the same
        ("paul", "раul"),
        ("#room", "#rооm"),  # room names share the key
    ],
)
def test_confusable_nicks_share_a_key(a: str, b: str) -> None:
    assert nick_key(a) == nick_key(b)


def test_an_all_cyrillic_look_alike_is_taken() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    hub.receive(1, ev.Register("coco"), 0.0)
    hub.connect(2)
    assert check_nick("сосо") == "сосо"  # a valid nick on its own
    out = hub.receive(2, ev.Register("сосо"), 0.0)
    assert out[0].event.code is ErrorCode.NICK_TAKEN  # type: ignore[union-attr]


# Issue 13 item 14: the length of a nick is counted after NFC, by the frame
# check as by the nick rules.


def test_a_decomposed_nick_of_32_composed_characters_is_a_valid_field() -> None:
    decomposed = "e\u0301" * 17  # 34 code points, 17 once composed
    register = ev.Register(decomposed)
    assert decode_frame(encode(register)) == register
    assert check_nick(decomposed) == "é" * 17
    hub: Hub[int] = Hub()
    hub.connect(1)
    assert hub.receive(1, ev.Register("e\u0301" * 32), 0.0)[0].event == ev.Welcome("é" * 32, 1)


@pytest.mark.parametrize("nick", ["e\u0301" * 33, "é" * 33, "x" * 1000])
def test_a_nick_field_over_32_characters_after_nfc_is_refused(nick: str) -> None:
    with pytest.raises(RuleError) as caught:
        ev.Register(nick)
    assert caught.value.code is ErrorCode.BAD_NICK


def test_a_nick_field_that_nfc_lengthens_past_32_is_refused() -> None:
    qa = "\u0958"  # DEVANAGARI LETTER QA: a composition exclusion, two code points in NFC
    assert len(unicodedata.normalize("NFC", qa * 20)) == 40
    with pytest.raises(RuleError):
        ev.Register(qa * 20)


# Properties.

_nfd = st.builds(lambda n: unicodedata.normalize("NFD", n), nicks())
_any = st.text(text_chars, max_size=40)


@given(_any)
def test_a_key_is_its_own_key(text: str) -> None:
    assert nick_key(nick_key(text)) == nick_key(text)


@given(nicks())
def test_the_key_of_an_accepted_nick_is_stable(nick: str) -> None:
    accepted = check_nick(nick)
    assert check_nick(accepted) == accepted
    assert nick_key(accepted) == nick_key(nick) == nick_key(nick_key(accepted))


@given(st.one_of(nicks(), _nfd, _any))
def test_every_normal_form_gives_the_same_result(text: str) -> None:
    forms = {form: unicodedata.normalize(form, text) for form in ("NFC", "NFD")}
    outcomes = set()
    for form in forms.values():
        try:
            outcomes.add(check_nick(form))
        except RuleError as exc:
            outcomes.add(exc.detail)
    assert len(outcomes) == 1
    assert nick_key(forms["NFC"]) == nick_key(forms["NFD"]) == nick_key(text)
