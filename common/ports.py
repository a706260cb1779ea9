"""The seams of the core: small interfaces that the edges implement.

Every place where the pure chat core meets something it does not own is named
here, so a reader sees them at once and a new transport, store or broker is a
new edge implementing one of them:

- ``Recipient``: a member's connection as the fan-out pushes to it (TCP and UDP
  connections implement it; a WebSocket one would too);
- ``FactLog``: the ordered record of what happened in each room (in memory
  today; SQLite and Redis implement it for history and for many servers);
- ``NickOwners``: who holds which nick (a dict today; Redis makes it shared).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple, Protocol, TypeVar

from common.chat import events as ev
from common.chat.view import ClientView

C = TypeVar("C", bound=Hashable)


class Fact(NamedTuple):
    """One thing that happened in a room: its place in that room's order
    (``seq``, from 1), the server time (Unix seconds) and the event. (A named
    tuple: one is made per message, on the hot path.)"""

    room: str
    seq: int
    time: float
    event: ev.ServerEvent


class FactLog(Protocol):
    """The ordered log of room events. ``append`` is called under the hub's
    lock, before anyone is sent the event, so whatever a log keeps is kept
    before any client has seen it."""

    def append(self, room_key: str, room: str, time: float, event: ev.ServerEvent) -> Fact:
        """Record ``event`` as the next fact of the room; return it, numbered."""
        ...

    def forget(self, room_key: str) -> None:
        """The room is gone (empty); a log that keeps no history forgets its count."""
        ...


class NickOwners(Protocol[C]):
    """Who holds which nick, by nick key (``common.chat.nicks.nick_key``)."""

    def claim(self, key: str, owner: C) -> bool:
        """Take ``key`` for ``owner``; False if someone else holds it."""
        ...

    def release(self, key: str, owner: C) -> None:
        """Give ``key`` up, if ``owner`` holds it."""
        ...

    def owner(self, key: str) -> C | None:
        """Who holds ``key``, if anyone."""
        ...


class Batch(Protocol):
    """What one push carries: the encoded events of a run, in order."""

    #: Each event's bytes: a frame each, or a rendered line each.
    parts: list[bytes]

    @property
    def data(self) -> bytes:
        """The parts joined (computed once, shared by every recipient)."""
        ...


class Recipient(Protocol):
    """A connection the fan-out delivers to.

    ``view`` is None for a client that speaks frames; a text-dialect client
    has the server keep its view, which renders events as its lines.
    """

    view: ClientView | None
    #: How logs name it (its address).
    name: str

    def __hash__(self) -> int: ...

    def push(self, batch: Batch, last: bool) -> bool:
        """Queue ``batch`` for sending, in order after everything before.

        Args:
            last: the batch ends with the connection's last event (a Goodbye):
                queue it whatever the limit, then close once it is sent.

        Returns:
            False if the connection's limit is passed; the fan-out then cuts
            the connection off, telling it why (TCP queues nothing of such a
            batch; a UDP channel may have queued its first frames).
        """
        ...
