"""When to ping a connection and when to give up on it, with the clock passed in.

One policy for every transport: a connection that has not registered a nick
``register_timeout`` seconds after it arrived is dropped; a registered one
that can answer pings is pinged after half of ``idle_timeout`` of silence and
dropped after all of it. (UDP's reliability layer has its own keepalives and
dead-peer timer, so a UDP session uses only the registration deadline.)
"""

from __future__ import annotations

import math
from enum import Enum


class Due(Enum):
    """What ``Liveness.due`` says is to be done now."""

    #: Send a Ping: the connection has been silent for half the idle timeout.
    PING = "ping"
    #: Drop it: no nick registered in time.
    REGISTRATION_TIMEOUT = "registration timeout"
    #: Drop it: silent for the whole idle timeout.
    IDLE_TIMEOUT = "idle timeout"


class Liveness:
    """One connection's timers. ``heard`` on every arrival; ``due`` on every tick.

    Args:
        now: when the connection arrived.
        register_timeout: seconds it has to register a nick.
        idle_timeout: seconds of silence before it is dropped; ``math.inf``
            for a connection that cannot be pinged (a person at ``nc``).
    """

    __slots__ = ("_born", "_checking", "_last_heard", "_pinged", "idle_timeout", "register_timeout")

    def __init__(self, now: float, *, register_timeout: float, idle_timeout: float = math.inf) -> None:
        self.register_timeout = register_timeout
        self.idle_timeout = idle_timeout
        self._born = now
        self._last_heard = now
        self._pinged = False
        self._checking = False

    def checking(self, now: float, *, on: bool) -> None:
        """A password of the connection's is being checked (``on``), or its
        check is over. Registration is under way meanwhile, however long the
        check waits for its turn in a login storm: the deadline waits for
        it, then gives the verdict a whole registration timeout of its own."""
        self._checking = on
        self._born = now

    def heard(self, now: float) -> None:
        """Something arrived from the peer (any bytes answer a ping)."""
        self._last_heard = now
        self._pinged = False

    def deadline(self, *, registered: bool) -> float:
        """When ``due`` may next have something to say (``math.inf``: never,
        until something changes), so a transport can keep its connections in
        a timer heap instead of asking each one on every tick. ``heard`` only
        moves it later: an entry made earlier fires early and finds nothing."""
        if not registered:
            return math.inf if self._checking else self._born + self.register_timeout
        if self._pinged:
            return self._last_heard + self.idle_timeout
        return self._last_heard + self.idle_timeout / 2

    def due(self, now: float, *, registered: bool) -> Due | None:
        """What is to be done at ``now``; a PING is said once per silence."""
        if not registered:
            late = not self._checking and now - self._born > self.register_timeout
            return Due.REGISTRATION_TIMEOUT if late else None
        silent = now - self._last_heard
        if silent > self.idle_timeout:
            return Due.IDLE_TIMEOUT
        if silent > self.idle_timeout / 2 and not self._pinged:
            self._pinged = True
            return Due.PING
        return None
