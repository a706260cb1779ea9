"""Account passwords: scrypt verifiers and the wrong-password throttle.

Every hash here uses ``CHEAP`` (n=16, well under a millisecond), so the
properties can run hundreds of examples; one test pays the real cost once.
"""

from __future__ import annotations

import base64
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.accounts import (
    DEFAULT_COST,
    MAX_CONCURRENT_HASHES,
    ScryptCost,
    make_verifier,
    needs_upgrade,
    verify,
)
from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import MAX_PASSWORD
from tests.strategies import text_chars

CHEAP = ScryptCost(n=2**4, r=8, p=1)

#: Passwords a frame may carry: 1 to MAX_PASSWORD bytes of UTF-8, any script, no controls.
passwords = st.text(text_chars, min_size=1, max_size=80).filter(lambda pw: len(pw.encode()) <= MAX_PASSWORD)

_SHAPE = re.compile(r"scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def _pad(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


# --- verifiers -----------------------------------------------------------------


@given(passwords, passwords)
def test_round_trip(password: str, other: str) -> None:
    verifier = make_verifier(password, cost=CHEAP)
    assert verify(verifier, password)
    assert verify(verifier, other) == (unicodedata.normalize("NFC", other) == unicodedata.normalize("NFC", password))


@pytest.mark.parametrize("password", ["hunter2", "пароль", "密码🔑", "Σίσυφος", "a\tb", "x" * MAX_PASSWORD, "ü" * 128])
def test_round_trip_examples(password: str) -> None:
    verifier = make_verifier(password, cost=CHEAP)
    assert verify(verifier, password)
    assert not verify(verifier, password + "!")
    assert not verify(verifier, password[:-1] or "?")


def test_the_default_cost_round_trips() -> None:
    verifier = make_verifier("correct horse", salt=b"s" * 16)
    assert verifier.startswith("scrypt$n=16384,r=8,p=1$")
    assert verify(verifier, "correct horse")
    assert not verify(verifier, "correct horsf")
    assert not needs_upgrade(verifier)


def test_the_same_password_in_nfc_or_nfd_is_one_password() -> None:
    composed, decomposed = "café Ω", unicodedata.normalize("NFD", "café Ω")
    assert composed != decomposed
    assert verify(make_verifier(composed, cost=CHEAP), decomposed)
    assert verify(make_verifier(decomposed, cost=CHEAP), composed)


def test_two_verifiers_of_one_password_differ_by_their_salt() -> None:
    first, second = make_verifier("hunter2", cost=CHEAP), make_verifier("hunter2", cost=CHEAP)
    assert first != second
    assert _SHAPE.fullmatch(first)[4] != _SHAPE.fullmatch(second)[4]  # type: ignore[index]
    assert verify(first, "hunter2") and verify(second, "hunter2")


def test_a_given_salt_makes_the_same_verifier() -> None:
    salt = bytes(range(16))
    assert make_verifier("pw", cost=CHEAP, salt=salt) == make_verifier("pw", cost=CHEAP, salt=salt)


@given(
    passwords,
    st.sampled_from([CHEAP, ScryptCost(2**5, 2, 3), ScryptCost(2, 1, 1)]),
    st.binary(min_size=16, max_size=64),
)
def test_the_encoding_records_cost_salt_and_key(password: str, cost: ScryptCost, salt: bytes) -> None:
    verifier = make_verifier(password, cost=cost, salt=salt)
    assert verifier.isascii() and len(verifier) <= 256
    match = _SHAPE.fullmatch(verifier)
    assert match is not None
    assert (int(match[1]), int(match[2]), int(match[3])) == (cost.n, cost.r, cost.p)
    assert _pad(match[4]) == salt
    assert len(_pad(match[5])) == 32
    assert "=" not in match[4] + match[5]


def test_needs_upgrade_compares_the_recorded_cost() -> None:
    cheap = make_verifier("pw", cost=CHEAP)
    assert needs_upgrade(cheap)
    assert needs_upgrade(cheap, DEFAULT_COST)
    assert not needs_upgrade(cheap, CHEAP)
    assert not needs_upgrade(cheap, ScryptCost(2**3, 8, 1))
    # Less memory (n * r) or less work (n * r * p) is weaker; more of both is not.
    assert needs_upgrade(cheap, ScryptCost(2**4, 8, 2))
    assert needs_upgrade(cheap, ScryptCost(2**5, 8, 1))
    assert not needs_upgrade(cheap, ScryptCost(2**5, 4, 1))  # the same memory and work
    assert not needs_upgrade(make_verifier("pw", cost=ScryptCost(2**5, 8, 2)), CHEAP)
    assert needs_upgrade("not a verifier")


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [(0, 8, 1), (1, 8, 1), (3, 8, 1), (2**14 + 1, 8, 1), (2**21, 8, 1), (16, 0, 1), (16, 33, 1), (16, 8, 0),
     (16, 8, 17), (2**16, 1, 1), (2**20, 16, 1), (2**20, 8, 4), (16.0, 8, 1), (True, 8, 1)],
)  # fmt: skip
def test_absurd_costs_are_refused(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError):
        ScryptCost(n, r, p)


@pytest.mark.parametrize("password", ["", "a\nb", "\x1b[31m", "x" * (MAX_PASSWORD + 1), "é" * 129])
def test_a_password_no_frame_may_carry_gets_no_verifier(password: str) -> None:
    with pytest.raises(RuleError) as caught:
        make_verifier(password, cost=CHEAP)
    assert caught.value.code is ErrorCode.BAD_PASSWORD


@pytest.mark.parametrize("salt", [b"", b"x" * 15, b"x" * 65])
def test_a_salt_of_the_wrong_size_is_refused(salt: bytes) -> None:
    with pytest.raises(ValueError):
        make_verifier("pw", cost=CHEAP, salt=salt)


def _good() -> str:
    return make_verifier("pw", cost=CHEAP, salt=b"0123456789abcdef")


def _malformed() -> list[str]:
    good = _good()
    _, params, salt, key = good.split("$")
    bad_bit = salt[:-1] + chr(ord(salt[-1]) + 1)  # the same bytes, but stray low bits
    assert _pad(bad_bit) == _pad(salt)
    return [
        "",
        "scrypt",
        "scrypt$$$",
        good.replace("scrypt", "bcrypt"),
        good.replace("scrypt", "SCRYPT"),
        "$" + good,
        good + "$",
        good + "\n",
        " " + good,
        good.replace("n=16", "n=15"),
        good.replace("n=16", "n=0"),
        good.replace("n=16", "n=1"),
        good.replace("n=16", "n=016"),
        good.replace("n=16", "n=2097152"),
        good.replace("n=16", "n=1048576").replace("r=8", "r=32"),
        good.replace("n=16", "n=-16"),
        good.replace("n=16", "n=16.0"),
        good.replace("n=16", "n=１６"),  # fullwidth digits: int() takes them, we do not
        good.replace("n=16", "n=1_6"),
        good.replace("r=8", "r=0"),
        good.replace("r=8", "r=999"),
        good.replace("p=1", "p=0"),
        good.replace("p=1", "p=99"),
        good.replace(",r=8", ""),
        good.replace("n=16,r=8", "r=8,n=16"),
        f"scrypt${params}${salt}",
        f"scrypt${params}${salt}${key}${key}",
        f"scrypt${params}${salt}=${key}",
        f"scrypt${params}${salt}${key}==",
        f"scrypt${params}${salt}${key[:-1]}*",
        f"scrypt${params}${salt}${key[:-2]}é",
        f"scrypt${params}${salt[:-1]}${key}",  # 21 characters: not a whole byte count
        f"scrypt${params}${salt[:20]}${key}",  # 15 bytes of salt
        f"scrypt${params}${'A' * 88}${key}",  # 66 bytes of salt
        f"scrypt${params}${bad_bit}${key}",
        f"scrypt${params}${salt}${key.replace(key[0], '-')}",
        good.replace("$", "\x00"),
        good * 3,
        "x" * 100_000,
    ]


def test_every_kind_of_malformed_verifier_matches_nothing() -> None:
    good = _good()
    assert verify(good, "pw")
    for bad in _malformed():
        assert bad != good
        assert verify(bad, "pw") is False, bad
        assert needs_upgrade(bad, CHEAP), bad


def test_a_verifier_with_another_key_does_not_match() -> None:
    good = _good()
    head, key = good.rsplit("$", 1)
    flipped = bytes([_pad(key)[0] ^ 1]) + _pad(key)[1:]
    assert not verify(f"{head}${base64.b64encode(flipped).decode().rstrip('=')}", "pw")


def test_the_key_length_is_read_from_the_verifier() -> None:
    # scrypt ends in PBKDF2, whose first bytes do not depend on the length asked:
    # a verifier holding the first 16 bytes of the key is the same hash, shorter.
    head, key = _good().rsplit("$", 1)
    short = base64.b64encode(_pad(key)[:16]).decode().rstrip("=")
    assert verify(f"{head}${short}", "pw")
    assert not verify(f"{head}${short}", "pw2")


@given(st.text(max_size=300), st.text(max_size=20))
def test_arbitrary_strings_never_verify_and_never_raise(verifier: str, password: str) -> None:
    assert verify(verifier, password) is False
    needs_upgrade(verifier)


@given(st.text(alphabet="scrypt$n=r,p0123456789ABCDEFabcdef+/=", max_size=120), st.text(max_size=20))
def test_near_miss_strings_never_raise(verifier: str, password: str) -> None:
    assert verify(verifier, password) in (False, True)
    needs_upgrade(verifier)


def test_non_strings_do_not_raise() -> None:
    assert verify(None, "pw") is False  # type: ignore[arg-type]
    assert verify(b"scrypt$", "pw") is False  # type: ignore[arg-type]
    assert verify(_good(), None) is False  # type: ignore[arg-type]


def test_a_password_with_a_lone_surrogate_does_not_raise() -> None:
    assert verify(_good(), "p\ud800w") is False


def test_concurrent_hashes_are_bounded() -> None:
    assert 1 <= MAX_CONCURRENT_HASHES <= 16
    assert MAX_CONCURRENT_HASHES * DEFAULT_COST.memory <= 128 * 2**20
