"""The Unicode security rules: look-alike names and bidi tricks.

Two people must not be able to pass for each other, and a text must not be
able to show another user something other than what it says. This module holds
the checks behind those promises; ``common.chat.nicks`` and
``common.chat.events`` apply them. The data comes from Unicode's own files via
``tools/gen_unicode_tables.py`` (see the header of ``_unicode_tables``).

Strategy:

- *Same name.* Two names are one when their keys are equal: the UTS #39
  confusable skeleton of the case-folded, compatibility-folded name. So
  ``alice``, ``ALICE``, Cyrillic ``аlice``, ``alıce``, ``a1ice`` and fullwidth
  ``ａｌｉｃｅ`` share a key. The table already holds the fixpoint of folding
  and mapping for every character a name can hold, so the key is two
  normalisations and one ``str.translate``, and a key is its own key.
- *Mixed scripts.* A name passes UTS #39's "Highly Restrictive" level: its
  letters share one script (Common and Inherited characters fit any), or it is
  Latin with Han and Hiragana/Katakana, Han and Bopomofo, or Han and Hangul.
  Its decimal digits come from one digit set.
- *Invisible.* No Default_Ignorable_Code_Point (joiners, variation selectors,
  Hangul fillers, bidi controls, ...): they draw nothing, so they only serve to
  make a second name that looks like the first or a name that looks blank.
- *Marks.* A combining mark sits on a letter; at most four non-spacing marks
  follow one another and never the same one twice in a row (UTS #39, 5.4), so
  a name cannot pile marks into an unreadable tower.
- *Bidi in texts.* A text may use explicit embeddings, overrides and isolates,
  but must close each one it opens, in order, before it ends, so it cannot
  reorder what a client shows after it (Trojan Source, CVE-2021-42574). An
  unbalanced text is refused, not repaired: the server relays texts untouched.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from typing import Final

from common.chat._unicode_tables import IGNORABLE_CLASS, KEY_TABLE, SCRIPT_KINDS, SCRIPT_SETS, SCRIPT_STARTS

#: The Bidi_Control characters (PropList.txt): marks, embeddings, overrides, isolates.
BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Opening controls and the control that closes each: embeddings and overrides
# close with PDF, isolates with PDI.
_PDF: Final = "\u202c"
_PDI: Final = "\u2069"
_CLOSER: Final = {
    "\u202a": _PDF,  # LRE
    "\u202b": _PDF,  # RLE
    "\u202d": _PDF,  # LRO
    "\u202e": _PDF,  # RLO
    "\u2066": _PDI,  # LRI
    "\u2067": _PDI,  # RLI
    "\u2068": _PDI,  # FSI
}
_EXPLICIT: Final = re.compile("[\u202a-\u202e\u2066-\u2069]")
_CONTROL_CHARS: Final = (*_CLOSER, _PDF, _PDI)
_ANY_BIDI: Final = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")

_IGNORABLE: Final = re.compile(f"[{IGNORABLE_CLASS}]")
_SCRIPTS: Final = tuple(frozenset(name.split()) for name in SCRIPT_SETS)

# UTS #39's augmented script sets: Han, Hiragana, Katakana, Hangul and Bopomofo
# also count as the writing systems they are part of.
_AUGMENT: Final = {
    "Hani": frozenset({"Hanb", "Jpan", "Kore"}),
    "Hira": frozenset({"Jpan"}),
    "Kana": frozenset({"Jpan"}),
    "Hang": frozenset({"Kore"}),
    "Bopo": frozenset({"Hanb"}),
}
_LATIN_MAY_JOIN: Final = frozenset({"Jpan", "Hanb", "Kore"})

#: At most this many non-spacing marks in a row (UTS #39, section 5.4).
MAX_MARK_RUN: Final = 4

# NFC never shrinks a string by more than this factor (one composed character
# decomposes canonically into at most four), so a longer one is too long
# without normalising it.
_NFC_SHRINK: Final = 8


def skeleton_key(name: str) -> str:
    """The key under which names are compared: equal keys, same name.

    Idempotent, and the same for every normalisation form of ``name``.
    """
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", name).casefold())
    return unicodedata.normalize("NFD", folded.translate(KEY_TABLE))


def nfc_length(text: str, limit: int) -> int:
    """Code points in the NFC form of ``text``, or ``limit + 1`` if that is
    surely over ``limit`` (so a huge input is not normalised)."""
    if text.isascii():
        return len(text)
    if len(text) > limit * _NFC_SHRINK:
        return limit + 1
    if unicodedata.is_normalized("NFC", text):
        return len(text)
    return len(unicodedata.normalize("NFC", text))


def scripts_of(ch: str) -> frozenset[str]:
    """Script_Extensions of a nick character as short codes; empty for
    Common and Inherited, which fit any script. Only letters, marks and
    digits have their own entry; other characters get a neighbour's."""
    return _SCRIPTS[SCRIPT_KINDS[bisect_right(SCRIPT_STARTS, ord(ch)) - 1]]


def _resolved(names: str) -> frozenset[str] | None:
    """The resolved script set of ``names``: None means "any script"."""
    resolved: frozenset[str] | None = None
    for ch in set(names):
        scripts = scripts_of(ch)
        if not scripts:
            continue
        for script in scripts & _AUGMENT.keys():
            scripts |= _AUGMENT[script]
        resolved = scripts if resolved is None else resolved & scripts
    return resolved


def script_problem(name: str) -> str | None:
    """Why ``name`` fails UTS #39 Highly Restrictive, or None if it passes."""
    if _resolved(name) != frozenset():
        return None
    rest = _resolved("".join(ch for ch in name if "Latn" not in scripts_of(ch)))
    if rest is not None and rest & _LATIN_MAY_JOIN:
        return None
    return "a name cannot mix letters of different scripts"


def digits_problem(name: str) -> str | None:
    """Why the decimal digits of ``name`` do not belong together, or None."""
    zeros = {ord(ch) - unicodedata.digit(ch) for ch in name if unicodedata.category(ch) == "Nd"}
    return "a name cannot mix digits of different number systems" if len(zeros) > 1 else None


def invisible_problem(name: str) -> str | None:
    """Why ``name`` holds a character that draws nothing, or None."""
    found = _IGNORABLE.search(name)
    return None if found is None else f"U+{ord(found.group()):04X} is invisible"


def marks_problem(name: str) -> str | None:
    """Why the combining marks of ``name`` are not readable, or None.

    Checked on the NFD form, where every mark stands alone.
    """
    on_letter = False
    run = 0
    last = ""
    for ch in unicodedata.normalize("NFD", name):
        category = unicodedata.category(ch)
        if category[0] != "M":
            on_letter, run, last = category[0] == "L", 0, ""
        elif not on_letter:
            return "a combining mark must sit on a letter"
        elif category == "Mc":  # a spacing mark ends a run of non-spacing ones
            run, last = 0, ""
        elif ch == last:
            return "a combining mark cannot repeat"
        else:
            run, last = run + 1, ch
            if run > MAX_MARK_RUN:
                return f"at most {MAX_MARK_RUN} combining marks may follow one another"
    return None


def has_bidi_control(text: str) -> bool:
    """Whether ``text`` holds any Bidi_Control character."""
    return not text.isascii() and _ANY_BIDI.search(text) is not None


def bidi_unbalanced(text: str) -> bool:
    """Whether ``text`` leaves an embedding, override or isolate open, or
    closes one it did not open, or closes them out of order."""
    if text.isascii() or not any(ch in text for ch in _CONTROL_CHARS):
        return False  # the common case, at C speed: a scan per control beats a regex
    expected: list[str] = []
    for found in _EXPLICIT.finditer(text):
        ch = found.group()
        closer = _CLOSER.get(ch)
        if closer is not None:
            expected.append(closer)
        elif not expected or expected.pop() != ch:
            return True
    return bool(expected)


def defuse_bidi(text: str) -> str:
    """``text`` with every embedding, override and isolate control replaced by
    U+FFFD if they do not balance (the same number of UTF-8 bytes)."""
    return _EXPLICIT.sub("\ufffd", text) if bidi_unbalanced(text) else text
