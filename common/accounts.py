"""Account passwords: scrypt verifiers, and throttling of wrong guesses.

A registered nick keeps a *verifier*, never its password: a salted scrypt
hash in one ASCII string that records how it was made::

    scrypt$n=16384,r=8,p=1$<salt, base64>$<key, base64>

(standard base64 alphabet, padding left off, as in the PHC string format). The
cost travels with the hash, so the default can rise later: ``needs_upgrade``
tells a server that a login just proved a password whose verifier is weaker
than today's, and it can store a fresh one made at the new cost.

Passwords are hashed as UTF-8 of their NFC form (RFC 8265's OpaqueString
profile does the same), so an "é" typed as one code point on one system and as
"e" plus a combining accent on another is the same password.

Hashing is the one slow thing here (tens of milliseconds, 16 MiB of memory at
the default cost). The core decides nothing about when it runs: the server
edge calls ``make_verifier``/``verify`` on the connection's own thread, outside
the hub's lock, at most ``MAX_CONCURRENT_HASHES`` at a time, and asks a
``Throttle`` before hashing at all, so a guesser is refused before it costs
anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from common.chat.events import check_password

__all__ = [
    "ScryptCost",
    "DEFAULT_COST",
    "MAX_CONCURRENT_HASHES",
    "make_verifier",
    "verify",
    "needs_upgrade",
    "Throttle",
    "host_key",
]

#: Bounds on what a verifier may ask of ``verify``. The store is ours, but a
#: corrupt or hand-edited one must not make one login take gigabytes or a
#: minute: 2**20 is 64 times today's n; ``128 * n * r`` up to 1 GiB
#: (n=2**20, r=8) and ``n * r * p`` up to 2**24 (n=2**20, r=8, p=2, about 4 s
#: on this machine) are far past any cost we would choose.
MAX_N: Final = 2**20
MAX_R: Final = 32
MAX_P: Final = 16
MAX_MEMORY: Final = 2**30
MAX_WORK: Final = 2**24

SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
# What a verifier read back may hold: a salt of 16 to 64 bytes, a key of 16 to 64.
_MIN_BYTES: Final = 16
_MAX_BYTES: Final = 64
# No well-formed verifier comes near this; a longer string is refused unread.
_MAX_VERIFIER: Final = 256


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """The scrypt parameters (RFC 7914): CPU/memory cost ``n``, block size
    ``r``, parallelization ``p``. One hash takes about ``128 * n * r`` bytes
    and time in proportion to ``n * r * p``.

    Raises:
        ValueError: ``n`` is not a power of two from 2 to ``MAX_N``, ``r`` or
            ``p`` is out of range, or the whole asks too much memory or work.
    """

    n: int
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        n, r, p = self.n, self.r, self.p
        if not (type(n) is int and type(r) is int and type(p) is int):
            raise ValueError("scrypt parameters are integers")
        if not (2 <= n <= MAX_N and n & (n - 1) == 0):
            raise ValueError(f"scrypt's n is a power of two from 2 to {MAX_N}")
        if not (1 <= r <= MAX_R and 1 <= p <= MAX_P):
            raise ValueError(f"scrypt's r is 1 to {MAX_R} and p 1 to {MAX_P}")
        # RFC 7914 section 2: n < 2**(128 * r / 8); OpenSSL refuses otherwise.
        if n.bit_length() > 16 * r:
            raise ValueError("scrypt's n must be below 2**(16 * r)")
        if 128 * n * r > MAX_MEMORY or n * r * p > MAX_WORK:
            raise ValueError("these scrypt parameters ask too much memory or time")

    @property
    def memory(self) -> int:
        """Bytes OpenSSL needs for one hash (its own formula), for ``maxmem``."""
        return 128 * self.r * (self.n + 2) + 128 * self.r * self.p

    def below(self, other: ScryptCost) -> bool:
        """True if this cost is weaker than ``other`` in memory (``n * r``) or
        in work (``n * r * p``): hashes made with it are cheaper to attack."""
        mine, theirs = self.n * self.r, other.n * other.r
        return mine < theirs or mine * self.p < theirs * other.p


# Why n=2**14, r=8, p=1 (16 MiB, measured 32-33 ms a hash on this 2-core
# machine, OpenSSL 3.0; n=2**13: 15 ms, n=2**15: 75 ms, n=2**17: 365 ms):
#
# - RFC 7914 (section 2) calls r=8, p=1 good today and leaves n to the
#   budget; Percival's paper took n=2**14 for interactive logins (< 100 ms).
# - OWASP's Password Storage Cheat Sheet asks at least n=2**17, r=8, p=1
#   (128 MiB), or the equal-work n=2**14, r=8, p=5 (16 MiB). That is 145 to
#   365 ms here: a storm of 1,000 logins on 2 cores would take 70 to 180 s of
#   pure hashing, minutes with the chat's own work on the same cores.
#   We take one fifth of OWASP's work on purpose: 1,000 logins cost
#   about 16 s of both cores, and the throttle keeps a guesser to 5 tries a
#   minute per nick, so online guessing is bounded by the throttle, not by the
#   hash; the hash only slows an offline attack on a stolen store.
#   ``needs_upgrade`` lets a bigger machine raise this without a migration.
#
# Does a login storm stall the chat? No: CPython's ``hashlib.scrypt`` drops
# the GIL around OpenSSL's EVP_PBE_scrypt. Measured here: 20 hashes at this
# cost took 0.57 s on one thread and 0.30 s split over two threads (1.93x
# with 2 cores), and a pure-Python thread kept spinning at full speed while
# another hashed. Hashing competes with the chat for cores, not for the GIL,
# which is why ``MAX_CONCURRENT_HASHES`` exists. The measurement:
#
#     def h(k): [hashlib.scrypt(b"pw", salt=os.urandom(16), n=2**14, r=8, p=1, dklen=32) for _ in range(k)]
#     t = time.perf_counter(); h(20); one = time.perf_counter() - t
#     ts = [threading.Thread(target=h, args=(10,)) for _ in range(2)]
#     t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
#     print(one, time.perf_counter() - t)  # 0.58 0.30
DEFAULT_COST: Final = ScryptCost(n=2**14, r=8, p=1)

#: How many hashes the server edge should run at once (a semaphore around
#: ``make_verifier``/``verify``; the core has no threads). Each takes
#: ``DEFAULT_COST.memory`` (16 MiB), so 4 bound a storm of 1,000 logins to
#: 64 MiB instead of 16 GB; more than the machine's cores would not finish
#: the storm sooner. An edge may take fewer (``os.cpu_count() - 1``) to leave
#: a core to the chat; the rest wait their turn, outside the hub's lock.
MAX_CONCURRENT_HASHES: Final = 4

_PREFIX: Final = "scrypt"
_VERIFIER_RE: Final = re.compile(
    r"scrypt\$n=([1-9][0-9]{0,7}),r=([1-9][0-9]{0,2}),p=([1-9][0-9]{0,2})"
    r"\$([A-Za-z0-9+/]{22,86})\$([A-Za-z0-9+/]{22,86})"
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64, or None (a stray trailing bit
    would let two strings name one key)."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _secret(password: str) -> bytes:
    return unicodedata.normalize("NFC", password).encode("utf-8", "surrogatepass")


def _scrypt(password: str, salt: bytes, cost: ScryptCost, size: int) -> bytes:
    return hashlib.scrypt(
        _secret(password), salt=salt, n=cost.n, r=cost.r, p=cost.p, maxmem=cost.memory + 65536, dklen=size
    )


def _parse(verifier: str) -> tuple[ScryptCost, bytes, bytes] | None:
    """A verifier's cost, salt and key; None if it is not one we could have made."""
    if not isinstance(verifier, str) or len(verifier) > _MAX_VERIFIER:
        return None
    match = _VERIFIER_RE.fullmatch(verifier)
    if match is None:
        return None
    n, r, p, salt_text, key_text = match.groups()
    try:
        cost = ScryptCost(int(n), int(r), int(p))
    except ValueError:
        return None
    salt, key = _unb64(salt_text), _unb64(key_text)
    if salt is None or key is None:
        return None
    if not (_MIN_BYTES <= len(salt) <= _MAX_BYTES and _MIN_BYTES <= len(key) <= _MAX_BYTES):
        return None
    return cost, salt, key


def make_verifier(password: str, *, cost: ScryptCost = DEFAULT_COST, salt: bytes | None = None) -> str:
    """Hash a new password into a verifier to store.

    Args:
        cost: the scrypt parameters; tests pass a cheap one.
        salt: 16 to 64 bytes; a fresh random 16 unless given (tests).

    Returns:
        ``scrypt$n=N,r=R,p=P$<salt>$<key>``, ASCII, at most 256 characters.

    Raises:
        RuleError: BAD_PASSWORD, for a password no frame may carry (empty, over
            MAX_PASSWORD bytes, control characters).
        ValueError: a salt of the wrong size.
    """
    check_password(password)
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if not _MIN_BYTES <= len(salt) <= _MAX_BYTES:
        raise ValueError(f"a salt has {_MIN_BYTES} to {_MAX_BYTES} bytes")
    key = _scrypt(password, salt, cost, KEY_BYTES)
    return f"{_PREFIX}$n={cost.n},r={cost.r},p={cost.p}${_b64(salt)}${_b64(key)}"


def verify(verifier: str, password: str) -> bool:
    """True if ``password`` is the one ``verifier`` was made from.

    The hash is recomputed with the verifier's own cost and salt and compared
    in constant time. Never raises: a verifier that is malformed (another
    scheme, bad base64, absurd parameters) matches no password.
    """
    parsed = _parse(verifier)
    if parsed is None or not isinstance(password, str):
        return False
    cost, salt, key = parsed
    try:
        computed = _scrypt(password, salt, cost, len(key))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(computed, key)


def needs_upgrade(verifier: str, cost: ScryptCost = DEFAULT_COST) -> bool:
    """True if ``verifier`` was made with a cost below ``cost`` (see
    ``ScryptCost.below``), so a login that just verified should store a new
    one; also True for a malformed verifier, which can never verify."""
    parsed = _parse(verifier)
    return parsed is None or parsed[0].below(cost)


class _Spacing:
    """One table of the throttle: for each key, the time its allowance is whole again.

    Strategy: the generic cell rate algorithm (GCRA), which is a token bucket
    kept as one float a key. A bucket holds ``tries`` tries and gets one back
    every ``per / tries`` seconds; instead of tokens and a timestamp we keep
    ``full_at``, the time the bucket will be full again. A failure moves it
    ``per / tries`` later (from now, if it was already full); a try is allowed
    while the bucket holds at least one, i.e. ``full_at - now <= per - per /
    tries``. So a burst of ``tries`` wrong passwords is allowed, then one every
    ``per / tries`` seconds (12 s by default): 5 a minute in the long run, at
    most ``tries + t * tries / per`` in any ``t`` seconds, and someone who
    typed it wrong five times waits 12 s, not a minute.

    Memory: a key is tracked only while its bucket is not full; ``full_at`` is
    never more than ``per`` past the last failure. The table is an OrderedDict
    in order of last failure: its first key is found in O(1) through its
    linked list, where a plain dict's deletions at the front leave holes that
    finding the first key must skip (6 times slower here at 10,000 keys).
    Each failure drops the expired keys at the front, then the least recently
    failed keys while over ``max_tracked``: an attacker cycling keys makes the
    table forget its own oldest keys, not grow.
    """

    __slots__ = ("_full_at", "_max", "_per", "_spacing")

    def __init__(self, tries: int, per: float, max_tracked: int) -> None:
        self._spacing = per / tries
        self._per = per
        self._max = max_tracked
        self._full_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def wait(self, key: str, now: float) -> float:
        full_at = self._full_at.get(key)
        if full_at is None:
            return 0.0
        return max(0.0, full_at - (self._per - self._spacing) - now)

    def failed(self, key: str, now: float) -> None:
        table = self._full_at
        full_at = table.pop(key, now)
        # Capped at a full bucket's worth: failures reported while refused (or
        # a clock that jumped back) cannot push a key's penalty past ``per``.
        table[key] = min(max(full_at, now) + self._spacing, now + self._per)
        while table:
            oldest = next(iter(table))
            if table[oldest] > now and len(table) <= self._max:
                break
            del table[oldest]

    def forget(self, key: str) -> None:
        self._full_at.pop(key, None)

    def refund(self, key: str) -> None:
        # Exact: a begun try was charged only while the bucket held one, so
        # its charge was never cut by the cap in ``failed``.
        full_at = self._full_at.get(key)
        if full_at is not None:
            self._full_at[key] = full_at - self._spacing


class Throttle:
    """Wrong-password throttling: ``tries`` wrong passwords per ``per``
    seconds, counted per nick key and per address at once.

    The nick limit stops a guesser spreading over many addresses; the address
    limit stops one address trying many nicks. Both are token buckets (see
    ``_Spacing``): a burst of ``tries``, then one every ``per / tries``
    seconds. Each table tracks at most ``max_tracked`` keys, dropping the
    expired and then the least recently failed first; every call is O(1)
    amortized. Pass addresses through ``host_key`` so an IPv6 client counts
    as its /64, not as one of its 2**64 addresses.

    Usage, at the server edge, under whatever lock guards the throttle:
    ``begin`` a try before hashing. It is refused (a wait, no hash) or charged
    as a failure at once, so tries hashed in parallel count against the
    allowance while in flight and no guess races past it; ``succeeded`` then
    refunds a right one. (``wait`` asks without charging, ``failed`` charges
    a try that was not begun.)

    Raises:
        ValueError: ``tries`` or ``max_tracked`` below 1, ``per`` not positive.
    """

    __slots__ = ("_hosts", "_nicks")

    def __init__(self, tries: int = 5, per: float = 60.0, max_tracked: int = 10_000) -> None:
        if tries < 1 or max_tracked < 1 or not per > 0:
            raise ValueError("a throttle allows at least 1 try per positive time, tracking at least 1 key")
        self._nicks = _Spacing(tries, per, max_tracked)
        self._hosts = _Spacing(tries, per, max_tracked)

    def wait(self, nick_key: str, host: str, now: float) -> float:
        """Seconds until ``host`` may try a password for ``nick_key``; 0.0 if now."""
        return max(self._nicks.wait(nick_key, now), self._hosts.wait(host, now))

    def begin(self, nick_key: str, host: str, now: float) -> float:
        """Start a try: 0.0 and the try charged as a failure (until
        ``succeeded`` says otherwise), or the seconds to wait and nothing charged."""
        wait = self.wait(nick_key, host, now)
        if wait == 0.0:
            self.failed(nick_key, host, now)
        return wait

    def failed(self, nick_key: str, host: str, now: float) -> None:
        """Count a wrong password for ``nick_key`` from ``host``."""
        self._nicks.failed(nick_key, now)
        self._hosts.failed(host, now)

    def succeeded(self, nick_key: str, host: str, *, begun: bool = False) -> None:
        """The right password: forget the nick's failures. The address keeps
        its own, so one good login does not reset a guesser's count of other
        nicks from the same address; only the charge of this try, if it was
        ``begun``, is given back to it."""
        self._nicks.forget(nick_key)
        if begun:
            self._hosts.refund(host)

    def tracked(self) -> tuple[int, int]:
        """How many nick keys and addresses the tables hold (for tests and logs)."""
        return len(self._nicks), len(self._hosts)


def host_key(address: str) -> str:
    """The key the throttle counts an address under: an IPv4 address as it is,
    an IPv6 address as its /64 (one subscriber's usual share, RFC 6177), an
    IPv4-mapped IPv6 address as the IPv4 one. Anything else (a Unix socket
    path, a test's name) is returned unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
