"""Nick rules and nick equality."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given

from common.chat.nicks import check_nick, nick_key
from common.wire.errors import ErrorCode, RuleError
from tests.strategies import nicks


@pytest.mark.parametrize(
    "nick",
    ["alice", "Маша", "李雷", "प्रिया", "[bot]", "a-b", "x_1", "^_^", "`q`", "a|b{c}", "\\o", "Σίσυφος", "x" * 32],
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


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("Маша", "Masha"), ("bob", "b0b")])
def test_different_nicks(a: str, b: str) -> None:
    assert nick_key(a) != nick_key(b)


@given(nicks())
def test_generated_nicks_are_valid_and_keys_are_case_blind(nick: str) -> None:
    assert check_nick(nick) == nick
    assert nick_key(nick) == nick_key(nick.casefold())
