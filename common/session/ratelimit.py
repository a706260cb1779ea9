"""Flood control: a token bucket, with the clock passed in.

Each message takes one token; tokens come back at ``rate`` per second up to
``burst``. The default burst, ``max(MIN_BURST, 2 * rate)``, lets a paste of
128 lines through at once while a steady flood is held to ``rate``.
"""

from __future__ import annotations

from typing import Final

#: Messages per second a client may keep up by default.
DEFAULT_RATE: Final = 20.0

#: Messages a client may send at once from a full bucket, at the least.
MIN_BURST: Final = 128.0


class TokenBucket:
    """A token bucket; ``rate`` 0 means no limit at all."""

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        self.rate = rate
        self.burst = max(MIN_BURST, 2 * rate) if burst is None else burst
        self._tokens = self.burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if the bucket holds them; say whether it did."""
        if self.rate == 0:
            return True
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0 if they are now)."""
        if self.rate == 0:
            return 0.0
        self._refill(now)
        missing = cost - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate
