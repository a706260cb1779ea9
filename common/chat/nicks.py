"""Nick rules: who may be called what, and when two nicks are the same.

A nick has 1 to 32 characters (after NFC normalisation): letters of any
script, decimal digits and ``_-[]{}|^`\\``, plus combining marks after the
first character (scripts such as Devanagari cannot write names without them).
It does not start with a digit or ``-``. Two nicks are the same when their
keys are equal: NFKC of the casefolded NFKC form, so ``Маша``/``маша`` and
``STRASSE``/``straße`` collide, and so do the composed and decomposed forms
of an accented letter.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import MAX_NICK

#: The punctuation a nick may hold, as in IRC.
SPECIALS: Final = frozenset("_-[]{}|^`\\")


def _allowed(ch: str, first: bool) -> bool:
    category = unicodedata.category(ch)
    if category[0] == "L" or ch in SPECIALS:
        return not (first and ch == "-")
    if category == "Nd" or category[0] == "M":
        return not first
    return False


def check_nick(nick: str) -> str:
    """Return ``nick`` in NFC form if it obeys the nick rules.

    Raises:
        RuleError: BAD_NICK, with a detail a person can act on.
    """
    nick = unicodedata.normalize("NFC", nick)
    if not 1 <= len(nick) <= MAX_NICK:
        raise RuleError(ErrorCode.BAD_NICK, f"a nick has 1 to {MAX_NICK} characters")
    for index, ch in enumerate(nick):
        if not _allowed(ch, index == 0):
            where = "start a nick" if index == 0 else "be in a nick"
            raise RuleError(ErrorCode.BAD_NICK, f"{ch!r} cannot {where}")
    return nick


def nick_key(nick: str) -> str:
    """The form under which nicks are compared for uniqueness."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", nick).casefold())
