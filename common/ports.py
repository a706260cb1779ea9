"""The seams of the core: small interfaces that the edges implement.

Every place where the pure chat core meets something it does not own is named
here, so a reader sees them at once and a new transport, store or broker is a
new edge implementing one of them:

- ``Recipient``: a member's connection as the fan-out pushes to it (TCP and UDP
  connections implement it; a WebSocket one would too);
- ``Store``: rooms, their numbered history, accounts and private messages kept
  for the offline (in memory with ``--ephemeral``, SQLite by default; Redis
  implements it for many servers);
- ``NickOwners``: who holds which nick (a dict today; Redis makes it shared);
- ``Bus`` and ``Presence``: many servers as one chat (``twinchat.cluster``):
  room events go out through the bus, which numbers and orders them, and come
  back to every server (the one that made them included) to be delivered;
  who is online is asked of what all servers share, never waited for
  under the hub lock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple, Protocol, TypeVar

from common.chat import events as ev
from common.chat.view import ClientView

C = TypeVar("C", bound=Hashable)


class Entry(NamedTuple):
    """One stored room message or action: its place in the room's order
    (``seq``, from 1 in the room's epoch), the server time (Unix milliseconds),
    who said it and what. (A named tuple: one is made per message.)"""

    seq: int
    time: int
    sender: str
    text: str
    action: bool


class RoomRecord(NamedTuple):
    """What a store knows of one room.

    ``epoch`` names this room's numbering: a new one is drawn whenever the
    numbering restarts (a new room, a store replaced or wiped), so a client
    that says "I saw up to seq 41 of epoch E" can be told when that no longer
    means anything. ``first`` is the oldest seq kept (``last + 1`` if none is).
    """

    name: str
    epoch: str
    first: int
    last: int
    topic: str
    topic_by: str
    topic_at: int


class Account(NamedTuple):
    """A registered nick: its key, its spelling at registration, the password
    verifier (``common.accounts``'s encoded scrypt hash, cost included) and
    when it was registered (Unix seconds)."""

    key: str
    nick: str
    verifier: str
    created: int


class Kept(NamedTuple):
    """A private message kept for a registered nick that was offline."""

    sender: str
    text: str
    time: int


class Store(Protocol):
    """Rooms, history, accounts and kept private messages (``--data-dir``).

    Every method but ``write`` is called under the hub's lock and must not
    block on disk: ``append`` and the other changes are *staged* (visible at
    once to the queries) and made durable by ``write``, which the server's
    writer thread runs outside the lock on what ``detach`` handed it. The
    server holds back every delivery made after a staged change until the
    ``write`` of that change has returned, so what a client is sent is in the
    store first (``twinchat.durable``). An in-memory store stages nothing:
    ``detach`` returns None and deliveries go out at once.
    """

    def rooms(self) -> list[RoomRecord]:
        """Every room the store keeps (with history or a topic), for a server starting."""
        ...

    def open_room(self, key: str, name: str) -> RoomRecord:
        """The room ``key``, created (with a new epoch) if the store does not have it."""
        ...

    def close_room(self, key: str) -> bool:
        """The room's last member left. True if the store keeps the room (it
        has history or a topic: it outlives its members), False if forgotten."""
        ...

    def append(self, key: str, time: int, sender: str, text: str, action: bool) -> int:
        """Stage one message (or action) as the room's next entry; return its seq."""
        ...

    def after(self, key: str, seq: int, limit: int) -> list[Entry]:
        """The first ``limit`` entries with a seq above ``seq``, oldest first."""
        ...

    def before(self, key: str, seq: int, limit: int) -> list[Entry]:
        """The newest ``limit`` entries with a seq below ``seq`` (0: below none,
        i.e. the newest of all), oldest first."""
        ...

    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        """Stage the room's topic (empty: none)."""
        ...

    def account(self, key: str) -> Account | None:
        """The account of nick key ``key``, if it is registered."""
        ...

    def save_account(self, account: Account) -> None:
        """Stage an account, new or changed (a new verifier)."""
        ...

    def drop_account(self, key: str) -> None:
        """Stage the account's removal (and of the private messages kept for it)."""
        ...

    def keep_private(self, key: str, kept: Kept) -> bool:
        """Stage a private message for the offline account ``key``; False if
        its box is full (``MAX_KEPT``)."""
        ...

    def take_privates(self, key: str) -> list[Kept]:
        """The private messages kept for ``key``, oldest first, and stage their removal."""
        ...

    def dirty(self) -> bool:
        """Whether anything is staged that ``detach`` would hand over (cheap:
        asked on every delivery)."""
        ...

    def detach(self) -> object | None:
        """Hand over everything staged since the last call, as one batch for
        ``write``; None if nothing was staged."""
        ...

    def write(self, batch: object) -> None:
        """Make a batch durable, in one transaction (the writer thread, outside
        the hub lock). Raises ``StoreFault`` if it could not; the store keeps
        the batch and retries it with the next one."""
        ...

    def close(self) -> None:
        """Write what is staged and release the store (the server is stopping)."""
        ...


class StoreFault(Exception):
    """The store could not do what was asked (a full disk, a lost file, a
    locked database): one line for the log, or for a server that cannot start."""


class NickOwners(Protocol[C]):
    """Who holds which nick, by nick key (``common.chat.nicks.nick_key``)."""

    def claim(self, key: str, owner: C, nick: str = "") -> bool:
        """Take ``key`` for ``owner``; False if someone else holds it.
        ``nick``: its spelling, for a table that lists who is online."""
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


class Posted(NamedTuple):
    """A room event on its way through the ``Bus``, or back from it.

    ``rooms``: the keys of the rooms it is for (one, but for ``Left`` and
    ``Renamed``, which concern every room of one member; none for a
    ``Private``). ``event``: a ``Message`` or ``Action`` (numbered by the
    bus: ``seq`` is 0 until it comes back), a room notice (``Joined``,
    ``Parted``, ``Left``, ``Renamed``, ``Topic``), or a ``Private`` to a
    member of another server (``to``: the bus takes it only if someone holds
    that nick, and the hub is told otherwise, ``Hub.offline``). ``origin``:
    the member that made it, as the hub of its server numbers members (0:
    none, or a member of another server). ``echo``: whether the origin is
    sent it too. ``at``: once back from the bus, per room, the room's newest
    seq when it was ordered (a message's own seq), so a server can tell that
    it missed some and fetch them first.
    """

    rooms: tuple[str, ...]
    event: ev.ServerEvent
    origin: int = 0
    echo: bool = True
    at: tuple[int, ...] = ()
    #: For a ``Private`` (which has no room): the nick key it is for.
    to: str = ""


class Bus(Protocol):
    """Where room events are ordered across every server of one chat.

    ``publish`` is called under the hub lock and only records; the edge
    sends it, and every server's hub gets it back (``Hub.arrived``) in the
    one order of its rooms.
    """

    def ready(self) -> bool:
        """Whether events can be published now (False while the bus is unreachable)."""
        ...

    def publish(self, posted: Posted) -> None:
        """Record ``posted`` to be sent (cheap, never blocks)."""
        ...

    def follow(self, key: str) -> None:
        """Room ``key`` has members here now: its messages are wanted (cheap, never blocks)."""
        ...

    def unfollow(self, key: str) -> None:
        """Room ``key`` has no members here any more: its messages are not wanted."""
        ...


#: What a member may ask of every server's members: who is online, who is
#: in a room, which rooms there are.
Question = ev.Who | ev.Names | ev.ListRooms


class Presence(Protocol):
    """Who is online across every server of one chat.

    Nothing here waits for the network under the hub lock: a question is
    recorded (``ask``) and its answer comes back later through
    ``Hub.answered``, which replies to the member who asked.
    """

    def count(self) -> int | None:
        """How many members are online (as last seen, no I/O), or None if unknown."""
        ...

    def ask(self, origin: int, question: Question) -> bool:
        """Record ``question`` of the member ``origin`` (its bus token);
        False if it cannot be asked now (the hub answers from what it knows)."""
        ...
