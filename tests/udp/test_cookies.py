"""Stateless handshake cookies."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from common.session.cookies import COOKIE_SIZE, CookieJar


def _jar(lifetime: float = 10.0) -> CookieJar:
    counter = itertools.count()
    return CookieJar(lambda n: next(counter).to_bytes(n, "big"), lifetime=lifetime)


def test_a_cookie_is_valid_for_its_address_for_one_to_two_lifetimes() -> None:
    jar = _jar()
    cookie = jar.issue(b"127.0.0.1:4000", 100.0)
    assert len(cookie) == COOKIE_SIZE
    assert jar.check(cookie, b"127.0.0.1:4000", 100.0)
    assert jar.check(cookie, b"127.0.0.1:4000", 119.9)
    assert not jar.check(cookie, b"127.0.0.1:4000", 120.0)
    assert not jar.check(cookie, b"127.0.0.1:4001", 100.0)


def test_secrets_rotate_and_old_ones_are_forgotten() -> None:
    jar = _jar()
    old = jar.issue(b"a", 0.0)
    jar.issue(b"a", 10.0)
    assert jar.check(old, b"a", 10.0)
    jar.issue(b"a", 20.0)  # a third bucket drops the first one's secret
    assert not jar.check(old, b"a", 10.0)


def test_a_cookie_from_another_server_is_refused() -> None:
    cookie = _jar().issue(b"a", 5.0)
    other = CookieJar(lambda n: b"\xff" * n)
    other.issue(b"a", 5.0)
    assert not other.check(cookie, b"a", 5.0)


@given(st.binary(max_size=64))
def test_garbage_is_never_a_valid_cookie(garbage: bytes) -> None:
    jar = _jar()
    jar.issue(b"addr", 1.0)
    assert not jar.check(garbage, b"addr", 1.0)
