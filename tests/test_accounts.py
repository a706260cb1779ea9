"""Account passwords: scrypt verifiers and the wrong-password throttle.

Every hash here uses ``CHEAP`` (n=16, well under a millisecond), so the
properties can run hundreds of examples; one test pays the real cost once.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.accounts import (
    DEFAULT_COST,
    MAX_CONCURRENT_HASHES,
    ScryptCost,
    Throttle,
    host_key,
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


@pytest.mark.parametrize(("n", "r", "p"), [(2, 1, 1), (2**15, 1, 1), (2**20, 8, 1), (2**20, 8, 2), (2**19, 16, 1)])
def test_costs_up_to_the_bounds_are_allowed(n: int, r: int, p: int) -> None:
    assert ScryptCost(n, r, p).memory <= 2**30 + 2**16


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


# --- the throttle --------------------------------------------------------------


def _fail(throttle: Throttle, times: int, nick: str, host: str, now: float) -> None:
    for _ in range(times):
        assert throttle.wait(nick, host, now) == 0.0
        throttle.failed(nick, host, now)


def test_the_sixth_wrong_try_in_a_minute_is_refused_for_the_nick_from_any_host() -> None:
    throttle = Throttle()
    for i, host in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]):
        _fail(throttle, 1, "alice", host, now=float(i))
    assert throttle.wait("alice", "10.0.0.1", 5.0) > 0
    assert throttle.wait("alice", "192.0.2.9", 5.0) > 0  # a new address is refused too
    assert throttle.wait("bob", "192.0.2.9", 5.0) == 0.0
    assert throttle.wait("bob", "10.0.0.1", 5.0) == 0.0  # each address failed only once


def test_the_sixth_wrong_try_in_a_minute_is_refused_for_the_host_with_any_nick() -> None:
    throttle = Throttle()
    for i, nick in enumerate(["a", "b", "c", "d", "e"]):
        _fail(throttle, 1, nick, "10.0.0.1", now=float(i))
    assert throttle.wait("f", "10.0.0.1", 5.0) > 0  # a new nick from that address
    assert throttle.wait("a", "10.0.0.1", 5.0) > 0
    assert throttle.wait("f", "10.0.0.2", 5.0) == 0.0
    assert throttle.wait("a", "10.0.0.2", 5.0) == 0.0  # each nick failed only once


def test_five_tries_pass_and_the_wait_shrinks_to_zero() -> None:
    throttle = Throttle(tries=5, per=60.0)
    _fail(throttle, 5, "alice", "h", now=100.0)
    waits = [throttle.wait("alice", "h", 100.0 + t) for t in range(13)]
    assert waits[0] == pytest.approx(12.0)  # one try comes back every 60 / 5 seconds
    assert all(a > b for a, b in pairwise(waits[:-1]))
    assert waits[-2] == pytest.approx(1.0)
    assert waits[-1] == 0.0
    # Then one more try, and the next is refused for another 12 s.
    throttle.failed("alice", "h", 112.0)
    assert throttle.wait("alice", "h", 112.0) == pytest.approx(12.0)
    # A minute after the last failure, all five are back.
    _fail(throttle, 5, "alice", "h", now=172.0)
    assert throttle.wait("alice", "h", 172.0) > 0


def test_the_long_run_rate_is_tries_per_period() -> None:
    throttle = Throttle(tries=5, per=60.0)
    allowed, now = 0, 0.0
    while now < 600.0:  # a guesser that tries every second for ten minutes
        if throttle.wait("alice", "h", now) == 0.0:
            throttle.failed("alice", "h", now)
            allowed += 1
        now += 1.0
    assert allowed == 5 + 600 // 12 - 1


def test_failures_while_refused_do_not_pile_up_past_a_period() -> None:
    throttle = Throttle(tries=5, per=60.0)
    for _ in range(1000):  # an edge that reports refused tries as failures
        throttle.failed("alice", "h", 0.0)
    assert throttle.wait("alice", "h", 0.0) == pytest.approx(12.0)
    assert throttle.wait("alice", "h", 12.0) == 0.0


def test_success_clears_the_nick_but_not_the_host() -> None:
    throttle = Throttle()
    _fail(throttle, 5, "alice", "10.0.0.1", now=0.0)
    throttle.succeeded("alice", "10.0.0.1")
    assert throttle.wait("alice", "10.0.0.2", 1.0) == 0.0
    assert throttle.wait("alice", "10.0.0.1", 1.0) > 0  # the address keeps its count
    assert throttle.wait("bob", "10.0.0.1", 1.0) > 0
    throttle.succeeded("nobody", "10.0.0.9")  # nothing to forget: no error


def test_tries_in_flight_count_so_parallel_guesses_cannot_race_past() -> None:
    # Ten checks begun before any finishes (ten hashing slots): five get through.
    throttle = Throttle(tries=5, per=60.0)
    begun = [throttle.begin("alice", "h", 0.0) == 0.0 for _ in range(10)]
    assert begun == [True] * 5 + [False] * 5


def test_a_right_password_begun_is_refunded_to_the_host() -> None:
    throttle = Throttle(tries=5, per=60.0)
    for _ in range(20):  # twenty good logins from one address in a second
        assert throttle.begin("alice", "h", 0.0) == 0.0
        throttle.succeeded("alice", "h", begun=True)
    assert throttle.wait("bob", "h", 0.0) == 0.0  # the address is charged nothing
    for _ in range(5):
        assert throttle.begin("bob", "h", 0.0) == 0.0  # and left unrefunded, wrong ones count
    assert throttle.begin("carol", "h", 0.0) > 0


def test_a_clock_that_steps_back_does_not_break_the_throttle() -> None:
    throttle = Throttle()
    _fail(throttle, 5, "alice", "h", now=1000.0)
    assert 0 < throttle.wait("alice", "h", 900.0) <= 112.0 + 1e-9
    throttle.failed("alice", "h", 900.0)
    assert throttle.wait("alice", "h", 1060.0) == 0.0


@pytest.mark.parametrize(("tries", "per", "max_tracked"), [(0, 60.0, 10), (5, 0.0, 10), (5, -1.0, 10), (5, 60.0, 0)])
def test_a_throttle_that_allows_nothing_is_refused(tries: int, per: float, max_tracked: int) -> None:
    with pytest.raises(ValueError):
        Throttle(tries, per, max_tracked)


def test_the_tables_stay_bounded_by_count_when_fed_100000_keys() -> None:
    throttle = Throttle(max_tracked=1000)
    for i in range(100_000):  # all within one second: nothing expires, only eviction bounds it
        throttle.failed(f"nick{i}", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=i / 100_000)
        assert max(throttle.tracked()) <= 1000
    assert throttle.tracked() == (1000, 1000)
    # The newest stay tracked; the oldest were dropped first.
    assert throttle.wait("nick99999", "x", 1.0) == 0.0  # one failure: still 4 tries left
    _fail(throttle, 4, "nick99999", "y", now=1.0)
    assert throttle.wait("nick99999", "z", 1.0) > 0
    _fail(throttle, 5, "nick0", "z", now=1.0)  # forgotten: its five tries are back


def test_expired_keys_are_dropped_first() -> None:
    throttle = Throttle(tries=5, per=60.0, max_tracked=10)
    _fail(throttle, 5, "old", "h0", now=0.0)
    for i in range(9):
        throttle.failed(f"n{i}", f"h{i + 1}", now=61.0 + i)
    assert throttle.tracked() == (9, 9)  # "old" and "h0" expired: dropped, not counted
    for i in range(9, 100):
        throttle.failed(f"n{i}", f"h{i + 1}", now=61.0 + i / 100)
        assert max(throttle.tracked()) <= 10


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.sampled_from("wxyz"), st.floats(0, 30), st.booleans()), max_size=60
    )
)
def test_the_throttle_matches_a_plain_model(steps: list[tuple[str, str, float, bool]]) -> None:
    """Against a slow model that keeps every failure: a key may try again when
    fewer than 5 tries' worth of its failures, each draining 12 s, remain."""
    throttle = Throttle(tries=5, per=60.0, max_tracked=100)
    model: dict[str, float] = {}  # key -> when its bucket is full again

    def model_wait(key: str, now: float) -> float:
        return max(0.0, model.get(key, now) - 48.0 - now)

    now = 0.0
    for nick, host, step, success in steps:
        now += step
        expected = max(model_wait("n" + nick, now), model_wait("h" + host, now))
        assert throttle.wait(nick, host, now) == pytest.approx(expected, abs=1e-9)
        if expected > 0:
            continue
        if success:
            throttle.succeeded(nick, host)
            model.pop("n" + nick, None)
        else:
            throttle.failed(nick, host, now)
            for key in ("n" + nick, "h" + host):
                model[key] = max(model.get(key, now), now) + 12.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
        ("", ""),
    ],
)
def test_host_keys(address: str, key: str) -> None:
    assert host_key(address) == key


def test_an_ipv6_subscriber_is_one_host() -> None:
    throttle = Throttle()
    for i in range(5):
        throttle.failed(f"nick{i}", host_key(f"2001:db8::{i:x}"), now=0.0)
    assert throttle.wait("other", host_key("2001:db8::ffff:1"), 0.0) > 0
    assert throttle.wait("other", host_key("2001:db8:0:1::1"), 0.0) == 0.0
