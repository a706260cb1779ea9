"""Stateless handshake cookies for the UDP server: sans-IO.

A client proves it receives at its address by echoing a cookie the server sent
there; the server keeps no state per cookie, so a flood of spoofed ``Hello``
datagrams costs it nothing but one HMAC each.

Strategy: time is cut into buckets of ``lifetime`` seconds and each bucket has
its own random secret, drawn (from the transport's ``random``) when the bucket
first issues a cookie and forgotten once the bucket is two old. A cookie is::

    offset  size  field
    0       4     bucket   floor(now / lifetime), big-endian, modulo 2**32
    4       16    mac      HMAC-SHA256(secret of bucket, bucket || address)[:16]

and is valid during its own bucket and the next one, so between ``lifetime``
and ``2 * lifetime`` seconds. Only the server ever reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Final

#: Bytes of a cookie.
COOKIE_SIZE: Final = 20

#: Default seconds per secret.
COOKIE_LIFETIME: Final = 10.0

_BUCKET: Final = struct.Struct(">I")
_SECRET_SIZE: Final = 32


class CookieJar:
    """Issues and checks cookies; see the module docstring.

    Args:
        random: returns that many unpredictable bytes (``os.urandom``).
        lifetime: seconds per secret.
    """

    def __init__(self, random: Callable[[int], bytes], *, lifetime: float = COOKIE_LIFETIME) -> None:
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        self._random = random
        self._lifetime = lifetime
        self._secrets: dict[int, bytes] = {}

    def _bucket(self, now: float) -> int:
        return int(now // self._lifetime) & 0xFFFFFFFF

    def _mac(self, secret: bytes, bucket: bytes, address: bytes) -> bytes:
        return hmac.digest(secret, bucket + address, hashlib.sha256)[:16]

    def issue(self, address: bytes, now: float) -> bytes:
        """A cookie for a client at ``address`` (any stable bytes naming it)."""
        bucket = self._bucket(now)
        secret = self._secrets.get(bucket)
        if secret is None:
            # A new bucket: draw its secret and forget every bucket too old to check.
            secret = self._secrets[bucket] = self._random(_SECRET_SIZE)
            for old in [b for b in self._secrets if (bucket - b) & 0xFFFFFFFF > 1]:
                del self._secrets[old]
        raw = _BUCKET.pack(bucket)
        return raw + self._mac(secret, raw, address)

    def check(self, cookie: bytes, address: bytes, now: float) -> bool:
        """Whether ``cookie`` was issued to ``address`` in this bucket or the previous one."""
        if len(cookie) != COOKIE_SIZE:
            return False
        bucket = _BUCKET.unpack_from(cookie, 0)[0]
        if (self._bucket(now) - bucket) & 0xFFFFFFFF > 1:
            return False
        secret = self._secrets.get(bucket)
        if secret is None:
            return False
        return hmac.compare_digest(cookie[4:], self._mac(secret, cookie[:4], address))
