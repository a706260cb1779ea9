"""Nick rules: who may be called what, and when two nicks are the same.

A nick has 1 to 32 code points after NFC normalisation: letters of any script,
decimal digits and ``_-[]{}|^`\\``, plus combining marks on letters (scripts
such as Devanagari cannot write names without them). It does not start with a
digit or ``-``. On top of that come the Unicode security rules of
``common.chat.unicode_rules``: one script (UTS #39 Highly Restrictive), one
digit set, nothing invisible (so no Hangul filler, joiner, variation selector
or bidi control), and no pile of combining marks.

Two nicks are the same when their keys are equal: the UTS #39 confusable
skeleton of the case-folded name, so ``Маша``/``маша``, ``STRASSE``/``straße``,
the composed and decomposed forms of an accented letter, and ``alice`` and
Cyrillic ``аlice`` all collide. Room names (``#`` and nick characters) use the
same key.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

from common.chat import unicode_rules
from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import MAX_NICK

#: The punctuation a nick may hold, as in IRC.
SPECIALS: Final = frozenset("_-[]{}|^`\\")

# The rules a nick of allowed characters must also pass, each returning why
# it fails or None; in order, so the detail names the first thing to fix.
_SECURITY_RULES: Final = (
    unicode_rules.invisible_problem,
    unicode_rules.marks_problem,
    unicode_rules.script_problem,
    unicode_rules.digits_problem,
)


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
    if nick.isascii():
        return nick  # ASCII letters are all Latin; no marks, invisibles or other digits
    for rule in _SECURITY_RULES:
        problem = rule(nick)
        if problem is not None:
            raise RuleError(ErrorCode.BAD_NICK, problem)
    return nick


# Cached: a join or rename is seen by every member of a room, and a text
# user's view asks whether it names itself, so one nick's key was computed
# once per recipient (14% of the connect phase of a big room, issue 12).
# Bounded, since peers choose the names.
@functools.lru_cache(maxsize=8192)
def nick_key(nick: str) -> str:
    """The form under which nicks (and room names) are compared for uniqueness.

    Equal keys mean the same nick: case, compatibility forms and look-alike
    characters are folded away (see ``unicode_rules.skeleton_key``). The key
    of a key is itself, and every normalisation form of a nick has one key.
    """
    return unicode_rules.skeleton_key(nick)
