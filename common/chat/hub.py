"""The chat state: who is here, under which nick, in which rooms, and who receives what.

The hub decides; it never sends. A connection is any hashable id the
transport chooses (a connection object, a UDP peer). Every method returns the
deliveries to make, in order: a transport that calls the hub under one lock
and hands the deliveries to ``common.fanout`` before releasing it gives every
member the whole conversation in one total order, so every member of a room
sees that room's events in the same order.

Messages and actions are first appended to the store
(``common.ports.Store``), which numbers them per room, and only then
delivered; a joiner gets the room's latest messages replayed from it (or,
coming back after a lost link, exactly those it missed), and the store keeps
topics, accounts and private messages for the offline. Nick ownership goes
through ``common.ports.NickOwners``. The defaults keep both in memory.

Many servers as one chat (``twinchat.cluster``): given a ``Bus``, the hub
delivers no room event (message, action, join, part, leave, rename, topic)
to the room's members itself. It publishes it, and every server's hub,
this one's included, gets it back numbered and ordered (``arrived``) and
delivers it to its own members of the room; what only concerns the sender
(its own join, replies, errors) still goes straight to it. Each room
remembers the newest seq its members here were given (``seen``), so a
replay and the live events meet without a message shown twice or skipped,
and a jump in the numbers is filled from the store first (``missing``,
``filled``). While the bus is unreachable, new room events are refused
with ``STORE_FAILED``, never dropped in silence.

Passwords are never hashed here, under the lock: the transport's edge checks
them first (``twinchat.gatekeeper``) and hands the hub a ``Vetted`` event
saying against which verifier a password was checked and whether it matched.

The transport's side of the contract:

- ``connect(conn)`` when a client arrives, before anything it says;
- ``take(conn, items, now)`` for what it said: decoded events, and the
  decoding errors in their place (``receive`` and ``reject`` one at a time);
- ``kick(conn, code, detail)`` to end a session for its own reasons (idle,
  slow, flooding), and ``disconnect(conn, reason)`` when the peer vanished;
- ``shutdown(reason)`` to say goodbye to everyone.

A delivery marked ``last`` is the last a connection gets (its ``Goodbye``):
the hub has forgotten the connection already, and the transport flushes what
is queued for it and closes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, NamedTuple, TypeVar, cast

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.log import MemoryNicks, MemoryStore
from common.chat.nicks import check_nick, nick_key
from common.chat.rooms import LOBBY, check_room, room_key
from common.ports import Account, Bus, Entry, Kept, NickOwners, Posted, Presence, Question, RoomRecord, Store
from common.wire.errors import ErrorCode, FrameRejected, ProtocolError, RuleError
from common.wire.limits import ROOMS_CHUNK, WHO_CHUNK

C = TypeVar("C", bound=Hashable)

#: Errors that refuse a registration (and end a framed client's connection).
_REGISTRATION_CODES: Final = frozenset({ErrorCode.BAD_NICK, ErrorCode.NICK_TAKEN})

#: Message and Action built from values the hub has checked already (``ev.CHECKED``).
_new_message: Final = cast(Callable[[str, str, str, int, int, bool], ev.Message], ev.CHECKED[ev.Message])
_new_action: Final = cast(Callable[[str, str, str, int, int, bool], ev.Action], ev.CHECKED[ev.Action])

#: Refusals of a registration that a client may answer with another password.
_PASSWORD_CODES: Final = frozenset({ErrorCode.NEEDS_PASSWORD, ErrorCode.BAD_PASSWORD, ErrorCode.TOO_MANY_TRIES})

#: Rooms larger than this do not announce others' joins, parts and leaves:
#: in a room of thousands, every arrival told to
#: everyone costs the square of the room over a reconnect storm, and the
#: notices drown the talk. Twitch stops at 1,000 members too; /names still lists
#: everyone, and every member is told of its own join and part.
DEFAULT_ANNOUNCE_LIMIT: Final = 1000

#: Messages replayed to a joiner unless told otherwise (``--replay``).
DEFAULT_REPLAY: Final = 20

#: Most messages replayed to a client coming back after a lost link; one that
#: missed more gets the latest this many, and is told of the gap.
MAX_RESUME: Final = 1000

#: Events the bus numbers (the others it carries are notices).
_NUMBERED: Final = (ev.Message, ev.Action)

#: Notices that a room past ``announce_limit`` does not deliver.
_ANNOUNCED: Final = (ev.Joined, ev.Parted, ev.Left)

#: What a member is told of a room event refused while the bus is unreachable.
BUS_DOWN: Final = "the chat's shared store is unreachable or behind; nothing was sent; try again shortly"

#: Account events: their passwords are checked at the edge, outside the lock.
ACCOUNT_EVENTS: Final = (ev.Register, ev.RegisterAccount, ev.ChangePassword, ev.DropAccount)


@dataclass(frozen=True, slots=True)
class Vetted(ev.ClientEvent):
    """Not a frame: an account event whose password the transport's edge has
    checked, outside the hub lock (hashing takes tens of milliseconds).

    ``verifier``: the account's verifier it was checked against ("" if the
    nick had no account), as ``Hub.verifier_for`` gave it; if the account has
    changed since, the hub asks for another try. ``ok``: the password
    matched. ``new_verifier``: for ``RegisterAccount`` and ``ChangePassword``,
    the new password's verifier, and for a ``Register`` proved against a
    verifier weaker than today's, a fresh one to store. ``wait``: the edge's throttle refused the try
    (too many wrong passwords); seconds until another is allowed.
    """

    event: ev.Register | ev.RegisterAccount | ev.ChangePassword | ev.DropAccount
    verifier: str
    ok: bool
    new_verifier: str = ""
    wait: float = 0.0


#: Rooms one member may be in at once, unless told otherwise.
DEFAULT_ROOMS_PER_MEMBER: Final = 32

#: Rooms a server holds at once, unless told otherwise.
DEFAULT_MAX_ROOMS: Final = 10_000


class Delivery(NamedTuple, Generic[C]):
    """Send ``event`` to each of ``recipients``, in this order relative to the others.

    ``last``: the event is the recipients' last (a Goodbye); close after it.

    A named tuple, not a frozen dataclass: one is made per event on the hot
    path, and a tuple is built at half the cost.
    """

    recipients: tuple[C, ...]
    event: ev.ServerEvent
    last: bool = False


class _Room(Generic[C]):
    """A room: its members in join order, its topic, and the audiences it hands out."""

    __slots__ = ("_everyone", "_others", "epoch", "key", "members", "name", "seen", "topic", "topic_at", "topic_by")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        # With a bus: the newest seq this server's members of the room were
        # given (live or replayed); what comes back from the bus at or below
        # it is theirs already.
        self.seen = 0
        #: The numbering ``seen`` belongs to (the store's epoch when the room was opened here).
        self.epoch = ""
        self.members: dict[C, None] = {}
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0
        self._everyone: tuple[C, ...] | None = None
        self._others: dict[C, tuple[C, ...]] = {}

    def everyone(self) -> tuple[C, ...]:
        if self._everyone is None:
            self._everyone = tuple(self.members)
        return self._everyone

    def others(self, conn: C) -> tuple[C, ...]:
        """Every member but ``conn``: the same tuple each time until the members
        change, so the fan-out can tell a run of one sender's messages cheaply."""
        others = self._others.get(conn)
        if others is None:
            others = self._others[conn] = tuple(c for c in self.members if c != conn)
        return others

    def changed(self) -> None:
        self._everyone = None
        self._others.clear()

    @classmethod
    def kept(cls, record: RoomRecord) -> _Room[C]:
        """A room as the store knows it (its topic), with no members yet."""
        room: _Room[C] = cls(record.name, room_key(record.name))
        room.topic, room.topic_by, room.topic_at = record.topic, record.topic_by, record.topic_at
        room.seen, room.epoch = record.last, record.epoch
        return room

    def topic_event(self, *, changed: bool) -> ev.Topic:
        return ev.Topic(self.name, self.topic, self.topic_by, self.topic_at, changed)


class _Member(Generic[C]):
    __slots__ = ("by_name", "echo", "nick", "rooms", "token")

    def __init__(self, nick: str, echo: bool, token: int = 0) -> None:
        self.nick = nick
        # How the bus names it (``Posted.origin``): unique in this hub.
        self.token = token
        # Whether its own messages come back to it (numbered, timed, as the
        # others see them): a client shows what the store holds, and learns
        # the seq it needs to resume. A person at nc sees their line already.
        self.echo = echo
        self.rooms: dict[str, _Room[C]] = {}  # by room key, in join order
        # By the room's own spelling, which is what clients send back: finding
        # the room of a message then costs no Unicode normalisation.
        self.by_name: dict[str, _Room[C]] = {}


class Hub(Generic[C]):
    """Members, nicks, rooms and the routing of every event; see the module docstring.

    Args:
        max_clients: most registered members at once; 0 for no limit. Connections
            that have not registered do not count: a host that opens many and
            never registers must not lock everyone else out (issue 15), so the
            transports bound those themselves, per source address and in all.
        max_rooms: most rooms at once on this server.
        rooms_per_member: most rooms one member may be in at once.
        store: rooms, history, accounts (``MemoryStore`` if not given).
        replay: messages of history a joiner is shown.
        announce_limit: rooms with more members do not announce others'
            joins, parts and leaves.
        nicks: who holds which nick.
        departed: told of every session that ends, but at shutdown:
            ``(conn, nick or None if it never registered, why)``, so that a
            transport logs one line per departure, whoever ended it.
        bus: room events go through it (many servers, one chat); None
            delivers them here at once.
        presence: who is online on every server, for /who, /names and the
            welcome's count; None counts this hub's members.
    """

    def __init__(
        self,
        *,
        max_clients: int = 0,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        rooms_per_member: int = DEFAULT_ROOMS_PER_MEMBER,
        store: Store | None = None,
        replay: int = DEFAULT_REPLAY,
        announce_limit: int = DEFAULT_ANNOUNCE_LIMIT,
        nicks: NickOwners[C] | None = None,
        departed: Callable[[C, str | None, str], None] | None = None,
        bus: Bus | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.max_rooms = max_rooms
        self.rooms_per_member = rooms_per_member
        self.replay = replay
        self.announce_limit = announce_limit
        self._store: Store = MemoryStore() if store is None else store
        self._owners: NickOwners[C] = MemoryNicks() if nicks is None else nicks
        self._members: dict[C, _Member[C]] = {}  # in registration order
        self._pending: dict[C, tuple[bool, bool]] = {}  # not registered yet -> (may retry a refused nick, echo)
        self._rooms: dict[str, _Room[C]] = {}  # by room key
        self._departed = departed
        #: Counts for the metrics, bumped under the hub lock like everything
        #: here: messages accepted by kind, and sessions kicked by error code.
        self.said: dict[str, int] = dict.fromkeys(("say", "act", "whisper"), 0)
        self.kicked: dict[ErrorCode, int] = {}
        self._bus = bus
        self._presence = presence
        self._by_token: dict[int, C] = {}  # members by their bus token
        self._tokens = itertools.count(1)
        for record in self._store.rooms():  # rooms that outlive their members
            self._rooms[room_key(record.name)] = _Room.kept(record)

    # --- queries -----------------------------------------------------------------

    def __contains__(self, conn: object) -> bool:
        return conn in self._members or conn in self._pending

    def __len__(self) -> int:
        """Connections the hub knows, registered or not."""
        return len(self._members) + len(self._pending)

    def nick_of(self, conn: C) -> str | None:
        """The member's nick, or None if ``conn`` has not registered."""
        member = self._members.get(conn)
        return None if member is None else member.nick

    def holder(self, nick: str) -> C | None:
        """Who holds ``nick`` (or a nick that collides with it), if anyone."""
        try:
            return self._owners.owner(nick_key(check_nick(nick)))
        except RuleError:
            return None

    def nicks(self) -> tuple[str, ...]:
        """Every member's nick, in registration order."""
        return tuple(m.nick for m in self._members.values())

    def rooms_of(self, conn: C) -> tuple[str, ...]:
        """The rooms ``conn`` is in, in the order it joined them."""
        member = self._members.get(conn)
        return () if member is None else tuple(r.name for r in member.rooms.values())

    def room_members(self, room: str) -> tuple[C, ...]:
        """Who is in ``room``, in join order (empty if there is no such room)."""
        found = self._rooms.get(room_key(room))
        return () if found is None else found.everyone()

    def room_names(self) -> tuple[str, ...]:
        """Every room that exists now."""
        return tuple(r.name for r in self._rooms.values())

    # --- the transport's calls ---------------------------------------------------

    def connect(self, conn: C, *, may_retry: bool = False, echo: bool = True) -> list[Delivery[C]]:
        """A client arrived. ``may_retry``: a refused nick does not end its
        connection (people at ``nc`` may type another one). ``echo``: its own
        messages come back to it (not for people at ``nc``)."""
        if conn in self:
            raise ValueError(f"{conn!r} is connected already")
        if self._full():
            return self._full_farewell(conn)
        self._pending[conn] = (may_retry, echo)
        return []

    def verifier_for(self, conn: C, event: ev.ClientEvent) -> str:
        """The verifier a password in ``event`` is to be checked against: the
        account of the nick a Register asks for, or of the sender's own nick
        for the other account events; "" if there is none."""
        if isinstance(event, ev.Register):
            try:
                key = nick_key(check_nick(event.nick))
            except RuleError:
                return ""
        else:
            member = self._members.get(conn)
            if member is None:
                return ""
            key = nick_key(member.nick)
        account = self._store.account(key)
        return "" if account is None else account.verifier

    @property
    def registered(self) -> int:
        """Members with a nick (what ``max_clients`` bounds)."""
        return len(self._members)

    @property
    def room_count(self) -> int:
        """Rooms that exist now."""
        return len(self._rooms)

    def _full(self) -> bool:
        return bool(self.max_clients) and len(self._members) >= self.max_clients

    def _full_farewell(self, conn: C) -> list[Delivery[C]]:
        return _farewell(conn, ErrorCode.SERVER_FULL, f"the server is full ({self.max_clients} clients)")

    def take(self, conn: C, items: Iterable[ev.Event | ProtocolError], now: float) -> list[Delivery[C]]:
        """What ``conn`` sent, in order: decoded events and decoding errors.

        Events that are not client events (a client sending ``Message``, a UDP
        session frame inside the chat stream) are refused as UNEXPECTED_FRAME.
        """
        out: list[Delivery[C]] = []
        for item in items:
            if isinstance(item, ev.ClientEvent):
                out += self.receive(conn, item, now)
            elif isinstance(item, ProtocolError):
                out += self.reject(conn, item)
            else:
                name = type(item).__name__
                out += self.reject(conn, FrameRejected(ErrorCode.UNEXPECTED_FRAME, f"a client does not send {name}"))
        return out

    def receive(self, conn: C, event: ev.ClientEvent, now: float) -> list[Delivery[C]]:
        """The client ``conn`` said ``event`` at server time ``now`` (Unix seconds)."""
        if conn in self._members:
            handler = _MEMBER_HANDLERS.get(type(event))
            if handler is None:
                return [_to(conn, ev.Error(ErrorCode.ALREADY_REGISTERED, "you have a nick already; /nick changes it"))]
        elif conn in self._pending:
            handler = _PENDING_HANDLERS.get(type(event))
            if handler is None:
                name = type(event).__name__
                return [_to(conn, ev.Error(ErrorCode.NOT_REGISTERED, f"register a nick before {name}"))]
        else:
            return []  # gone already; a late event from it changes nothing
        return handler(self, conn, event, now)

    def reject(self, conn: C, error: ProtocolError) -> list[Delivery[C]]:
        """Decoding what ``conn`` sent failed with ``error``."""
        if conn not in self:
            return []
        if not isinstance(error, FrameRejected | RuleError):
            return self.kick(conn, error.code, error.detail)
        if conn in self._pending and error.code in _REGISTRATION_CODES:
            return self._refuse_registration(conn, error.code, error.detail)
        return [_to(conn, ev.Error(error.code, ev.scrub(error.detail)))]

    def kick(self, conn: C, code: ErrorCode, detail: str) -> list[Delivery[C]]:
        """End ``conn``'s session: tell it why, and tell the others it left."""
        if conn not in self:
            return []
        detail = ev.scrub(detail)
        self.kicked[code] = self.kicked.get(code, 0) + 1
        return _farewell(conn, code, detail) + self._leave(conn, detail)

    def disconnect(self, conn: C, reason: str) -> list[Delivery[C]]:
        """``conn`` is gone (closed, reset, silent); tell the others."""
        return self._leave(conn, ev.scrub(reason))

    def shutdown(self, reason: str) -> list[Delivery[C]]:
        """Say goodbye to every connection and forget them all."""
        everyone = (*self._members, *self._pending)
        for conn, member in self._members.items():
            self._owners.release(nick_key(member.nick), conn)
        self._members.clear()
        self._pending.clear()
        self._rooms.clear()
        self._by_token.clear()
        if not everyone:
            return []
        reason = ev.scrub(reason)
        return [
            Delivery(everyone, ev.Error(ErrorCode.SHUTTING_DOWN, reason)),
            Delivery(everyone, ev.Goodbye(reason), last=True),
        ]

    # --- the bus's calls (many servers, one chat) ---------------------------------

    def arrived(self, posted: Posted) -> list[Delivery[C]]:
        """A room event back from the bus, numbered (``posted.at``): deliver
        it to this hub's members of its rooms. A message this hub's members
        were given already (``seen``) is skipped; the bus's edge has filled
        any jump before it (``missing``)."""
        event = posted.event
        if posted.to:  # a private message: for whoever holds the nick here, if anyone
            target = self._owners.owner(posted.to)
            return [_to(target, event)] if target is not None and target in self._members else []
        origin = self._by_token.get(posted.origin) if posted.origin else None
        if isinstance(event, _NUMBERED):  # the hot path: one room, one seq
            room = self._rooms.get(posted.rooms[0])
            seq = posted.at[0]
            if room is None or seq <= room.seen:
                return []
            room.seen = seq
            if origin is None or posted.echo or origin not in room.members:
                return [Delivery(room.everyone(), event)]
            others = room.others(origin)
            return [Delivery(others, event)] if others else []
        audience: dict[C, None] = {}
        for key, at in zip(posted.rooms, posted.at, strict=True):
            room = self._rooms.get(key)
            if room is None:
                continue
            room.seen = max(room.seen, at)
            if isinstance(event, ev.Topic):
                room.topic, room.topic_by = event.text, event.setter if event.text else ""
                room.topic_at = event.time if event.text else 0
            if not isinstance(event, _ANNOUNCED) or self._announces(room):
                audience.update(dict.fromkeys(room.members))
        if origin is not None and not posted.echo:
            audience.pop(origin, None)
        return [Delivery(tuple(audience), event)] if audience else []

    def missing(self, posted: Posted) -> list[tuple[str, int, int]]:
        """The messages this hub's members must be given before ``posted``
        and were not (the bus lost them: it reconnected): ``(room key, first
        seq, last seq)`` for the edge to fetch from the store and hand to
        ``filled``. Empty, but after a reconnect."""
        numbered = isinstance(posted.event, _NUMBERED)
        out = []
        for key, at in zip(posted.rooms, posted.at, strict=True):
            room = self._rooms.get(key)
            if room is not None and room.members and room.seen + 1 <= at - numbered:
                out.append((key, room.seen + 1, at - numbered))
        return out

    def filled(self, key: str, entries: Iterable[Entry]) -> list[Delivery[C]]:
        """Messages of room ``key`` fetched from the store to fill a jump, in
        order: delivered as they would have been live (to every member of
        the room here, its sender included unless it is at nc)."""
        room = self._rooms.get(key)
        out: list[Delivery[C]] = []
        if room is None:
            return out
        # Who is not sent their own lines (people at nc), by nick: a stored
        # message says who said it, not which connection.
        quiet = {self._members[c].nick: c for c in room.members if not self._members[c].echo}
        for seq, time, sender, text, action in entries:
            if seq > room.seen and room.members:
                room.seen = seq
                said = (_new_action if action else _new_message)(room.name, sender, text, seq, time, False)
                if sender in quiet:
                    out.append(Delivery(room.others(quiet[sender]), said))
                else:
                    out.append(Delivery(room.everyone(), said))
        return out

    def watched(self) -> list[tuple[str, int]]:
        """Every room with members here and the newest seq they were given:
        what to catch up on from the store after the bus was lost a while."""
        return [(key, room.seen) for key, room in self._rooms.items() if room.members]

    def present(self) -> list[tuple[int, str, list[ev.Joined]]]:
        """Every member here: its bus token, its nick and a join of each of
        its rooms, for telling the others again who is here after they were
        told this server was lost."""
        return [
            (m.token, m.nick, [ev.Joined(r.name, m.nick) for r in m.rooms.values()]) for m in self._members.values()
        ]

    def renumbered(self, key: str, epoch: str, last: int) -> list[Delivery[C]]:
        """The store's numbering of room ``key`` is ``epoch`` now, at ``last``:
        if that is not the one this hub's members follow (the store lost its
        data and began again), they are told, as the protocol says a client
        is told of lost messages: a ``Replay`` of nothing, in the new epoch,
        with ``gap`` set. Live messages then follow from ``last + 1``."""
        room = self._rooms.get(key)
        if room is None or room.epoch == epoch:
            return []
        room.epoch, room.seen = epoch, last
        if not room.members:
            return []
        return [Delivery(room.everyone(), ev.Replay(room.name, epoch, last + 1, last, True))]

    def answered(self, origin: int, question: Question, answer: object) -> list[Delivery[C]]:
        """The answer to a member's ``question`` from every server: nicks for
        ``Who`` and ``Names``, ``RoomInfo`` rows for ``ListRooms``; None if
        it could not be had (then this hub answers from what it knows)."""
        conn = self._by_token.get(origin)
        if conn is None:
            return []  # gone meanwhile
        if answer is None:
            return _ANSWERS_HERE[type(question)](self, conn, question)
        if isinstance(question, ev.ListRooms):
            rows = sorted(cast(list[ev.RoomInfo], answer), key=lambda r: (r.room.casefold(), r.room))
            return _room_list(conn, rows)
        nicks = cast(tuple[str, ...], answer)
        if isinstance(question, ev.Who):
            return _chunked_names(conn, "", nicks)
        if not nicks:  # nobody anywhere: as this hub knows it (no such room, or one kept empty)
            return self._names_here(conn, question)
        room = self._rooms.get(room_key(question.room))
        return _chunked_names(conn, question.room if room is None else room.name, nicks)

    def offline(self, posted: Posted) -> list[Delivery[C]]:
        """Nobody held the nick a ``Private`` was for (``posted.to``) when the
        bus took it: keep it, if that nick is an account's, or say so."""
        conn = self._by_token.get(posted.origin)
        if conn is None or not isinstance(posted.event, ev.Private):
            return []
        account = self._store.account(posted.to)
        return self._tell_offline(conn, posted.to if account is None else account.nick, posted.event)

    def unsent(self, posted: Posted, detail: str) -> list[Delivery[C]]:
        """The bus could not take ``posted``: tell its sender, if it was a
        message and the sender is still here, that it was not sent."""
        origin = self._by_token.get(posted.origin) if posted.origin else None
        if origin is None or not isinstance(posted.event, _NUMBERED):
            return []
        return [_to(origin, ev.Error(ErrorCode.STORE_FAILED, ev.scrub(detail)))]

    # --- bookkeeping -------------------------------------------------------------

    def _leave(self, conn: C, reason: str, why: str | None = None) -> list[Delivery[C]]:
        """Forget ``conn``; tell whoever shared a room with it that it left.
        ``why``: the cause as logs say it, when not ``reason``."""
        if self._pending.pop(conn, None) is not None:
            if self._departed is not None:
                self._departed(conn, None, why or reason)
            return []
        member = self._members.pop(conn, None)
        if member is None:
            return []
        if self._departed is not None:
            self._departed(conn, member.nick, why or reason)
        self._owners.release(nick_key(member.nick), conn)
        del self._by_token[member.token]
        if self._bus is not None:
            if member.rooms:
                left = ev.Left(member.nick, reason)
                self._bus.publish(Posted(tuple(member.rooms), left, member.token, echo=False))
            audience: tuple[C, ...] = ()
        else:
            audience = _audience((r for r in member.rooms.values() if self._announces(r)), conn)
        for room in list(member.rooms.values()):
            self._drop(conn, member, room)
        return [Delivery(audience, ev.Left(member.nick, reason))] if audience else []

    def _drop(self, conn: C, member: _Member[C], room: _Room[C]) -> None:
        """Take ``conn`` out of ``room``; an empty room is gone, with its topic."""
        del member.rooms[room.key]
        del member.by_name[room.name]
        del room.members[conn]
        room.changed()
        if not room.members and self._bus is not None:
            self._bus.unfollow(room.key)
        if not room.members and not self._store.close_room(room.key):
            del self._rooms[room.key]

    def _announces(self, room: _Room[C]) -> bool:
        """Whether ``room`` is small enough to announce others' comings and goings."""
        return len(room.members) <= self.announce_limit

    def _said(self, conn: C, event: ev.Say | ev.Act, now: float) -> list[Delivery[C]]:
        """A message or action: stored (which numbers it), then addressed."""
        room = self._member_room(conn, event.room)
        if isinstance(room, ev.Error):
            return [_to(conn, room)]
        member = self._members[conn]
        action = type(event) is ev.Act
        time = int(now * 1000)
        if self._bus is not None:  # numbered, stored and delivered by way of the bus
            if not self._bus.ready():
                return [_to(conn, ev.Error(ErrorCode.STORE_FAILED, BUS_DOWN))]
            said = (_new_action if action else _new_message)(room.name, member.nick, event.text, 0, time, False)
            self._bus.publish(Posted((room.key,), said, member.token, member.echo))
            self.said["act" if action else "say"] += 1
            return []
        seq = self._store.append(room.key, time, member.nick, event.text, action)
        # Every field was checked already (the room and nick when they were
        # made, the text when the Say was), so the event need not be again.
        said = (_new_action if action else _new_message)(room.name, member.nick, event.text, seq, time, False)
        self.said["act" if action else "say"] += 1
        return [Delivery(room.everyone() if member.echo else room.others(conn), said)]

    def _replay(
        self, conn: C, room: _Room[C], epoch: str, after: int, record: RoomRecord | None = None
    ) -> list[Delivery[C]]:
        """The history a joiner is shown: what it missed since (``epoch``,
        ``after``) if it says where it was and the store still has all of it,
        or else the latest ``replay`` messages (a gap if it asked for more).
        ``record``: the room as the store gave it just now, if it did."""
        record = self._store.open_room(room.key, room.name) if record is None else record
        # With a bus, the store may hold messages that are still on their way
        # here: those come live, so the replay stops where the room's live
        # delivery stands.
        last, below = (record.last, 0) if self._bus is None else (room.seen, room.seen + 1)
        gap = False
        if epoch and epoch == record.epoch and record.first - 1 <= after <= record.last:
            if last - after <= MAX_RESUME:
                entries = self._store.after(room.key, after, last - after) if last > after else []
            else:
                entries, gap = self._store.before(room.key, below, MAX_RESUME), True
        else:
            gap = bool(epoch) and (epoch != record.epoch or after < record.last)
            entries = self._store.before(room.key, below, self.replay) if self.replay else []
        return _history(conn, room.name, record.epoch, last, entries, gap=gap)

    def _refuse_registration(self, conn: C, code: ErrorCode, detail: str) -> list[Delivery[C]]:
        # A password can be given again on the same connection (the edge's
        # throttle bounds the tries); a refused nick ends a framed client's.
        if self._pending[conn][0] or code in _PASSWORD_CODES:
            return [_to(conn, ev.Error(code, detail))]
        return _farewell(conn, code, detail) + self._leave(conn, detail, f"refused: {detail}")

    def _member_room(self, conn: C, name: str) -> _Room[C] | ev.Error:
        """The room ``name`` if ``conn`` is in it, or the error to answer."""
        member = self._members[conn]
        room = member.by_name.get(name) or member.rooms.get(room_key(name))
        if room is None:
            return ev.Error(ErrorCode.NOT_IN_ROOM, f"you are not in {name}; /join {name} first")
        return room

    def _join(self, conn: C, member: _Member[C], event: ev.Join) -> list[Delivery[C]]:
        try:
            name = check_room(event.room)
        except RuleError as exc:
            return [_to(conn, ev.Error(exc.code, exc.detail))]
        key = room_key(name)
        if key in member.rooms:
            if event.epoch:  # a client catching up on a room it is in
                return self._replay(conn, member.rooms[key], event.epoch, event.after)
            return [_to(conn, ev.Reply(f"you are in {member.rooms[key].name} already"))]
        if len(member.rooms) >= self.rooms_per_member:
            detail = f"you are in {self.rooms_per_member} rooms, the most one may be in; /part one first"
            return [_to(conn, ev.Error(ErrorCode.TOO_MANY_ROOMS, detail))]
        opened = self._open_here(key, name)
        if isinstance(opened, ev.Error):
            return [_to(conn, opened)]
        room, record = opened
        room.members[conn] = None
        room.changed()
        member.rooms[key] = room
        member.by_name[room.name] = room
        joined = ev.Joined(room.name, member.nick)
        if self._bus is not None:  # the others hear of it from the bus
            self._bus.publish(Posted((key,), joined, member.token, echo=False))
            out = [_to(conn, joined)]
        else:
            out = [Delivery(room.everyone() if self._announces(room) else (conn,), joined)]
        if room.topic:
            out.append(_to(conn, room.topic_event(changed=False)))
        return out + self._replay(conn, room, event.epoch, event.after, record)

    def _open_here(self, key: str, name: str) -> tuple[_Room[C], RoomRecord | None] | ev.Error:
        """The room ``key`` for a joiner, and the store's record of it if it
        was read just now; opened here if it is not (or the error to answer)."""
        room = self._rooms.get(key)
        record = None
        if room is None:
            if len(self._rooms) >= self.max_rooms and name != LOBBY:
                detail = f"the server holds {self.max_rooms} rooms, its most; join one of them"
                return ev.Error(ErrorCode.TOO_MANY_ROOMS, detail)
            if self._bus is not None and not self._bus.ready():
                return ev.Error(ErrorCode.STORE_FAILED, BUS_DOWN)
            record = self._store.open_room(key, name)
            room = self._rooms[key] = _Room.kept(record)
        elif self._bus is not None and not room.members:  # kept here, and not followed: catch up
            record = self._store.open_room(key, room.name)
            room.seen = max(room.seen, record.last)
        if self._bus is not None and not room.members:
            self._bus.follow(key)  # the first member here: this server wants the room's messages now
        return room, record

    # --- handlers, by event type (tables at the end of the module) ---------------

    def _on_register(self, conn: C, event: ev.Register, now: float) -> list[Delivery[C]]:
        return self._register(conn, event, None, now)

    def _register(self, conn: C, event: ev.Register, vetted: Vetted | None, now: float) -> list[Delivery[C]]:
        try:
            nick = check_nick(event.nick)
        except RuleError as exc:
            return self._refuse_registration(conn, exc.code, exc.detail)
        key = nick_key(nick)
        account = self._store.account(key)
        if account is not None:
            refusal = _proof_refusal(account, vetted, f"the nick {account.nick} is registered")
            if refusal is not None:
                return self._refuse_registration(conn, refusal.code, refusal.detail)
        if self._full():
            # Room filled up while it was registering: no retry can help.
            return self._full_farewell(conn) + self._leave(conn, "the server is full", "refused: the server is full")
        if self._bus is not None and not self._bus.ready():
            return self._refuse_registration(conn, ErrorCode.STORE_FAILED, BUS_DOWN)
        if not self._owners.claim(key, conn, nick):
            return self._refuse_registration(conn, ErrorCode.NICK_TAKEN, f"the nick {nick} is taken")
        _, echo = self._pending.pop(conn)
        member = self._members[conn] = _Member[C](nick, echo, next(self._tokens))
        self._by_token[member.token] = conn
        online = None if self._presence is None else self._presence.count()
        out = [_to(conn, ev.Welcome(nick, len(self._members) if online is None else max(online, 1)))]
        if account is not None and vetted is not None and vetted.new_verifier:
            self._store.save_account(account._replace(verifier=vetted.new_verifier))  # a stronger hash
        if account is not None:
            out += [_to(conn, ev.Private(k.sender, k.text, k.time, True)) for k in self._store.take_privates(key)]
        if not event.resume:
            out += self._join(conn, member, ev.Join(LOBBY))
        return out

    def _on_say(self, conn: C, event: ev.Say, now: float) -> list[Delivery[C]]:
        return self._said(conn, event, now)

    def _on_act(self, conn: C, event: ev.Act, now: float) -> list[Delivery[C]]:
        return self._said(conn, event, now)

    def _on_whisper(self, conn: C, event: ev.Whisper, now: float) -> list[Delivery[C]]:
        key = nick_key(event.to)
        target = self._owners.owner(key)
        sender = self._members[conn].nick
        if target is not None and target in self._members:
            self.said["whisper"] += 1
            return [_to(target, ev.Private(sender, event.text, int(now * 1000)))]
        told = ev.Private(sender, event.text, int(now * 1000))
        if self._bus is not None:  # to whoever holds it on another server, else as to someone offline
            if not self._bus.ready():
                return [_to(conn, ev.Error(ErrorCode.STORE_FAILED, BUS_DOWN))]
            self._bus.publish(Posted((), told, self._members[conn].token, echo=False, to=key))
            self.said["whisper"] += 1
            return []
        return self._tell_offline(conn, event.to, told)

    def _tell_offline(self, conn: C, to: str, told: ev.Private) -> list[Delivery[C]]:
        """A private message for ``to``, whom nobody holds: kept if it is an account's."""
        key = nick_key(to)
        account = self._store.account(key)
        if account is None:
            return [_to(conn, ev.Error(ErrorCode.NO_SUCH_NICK, f"nobody is called {to}"))]
        if not self._store.keep_private(key, Kept(told.sender, told.text, told.time)):
            detail = f"{account.nick} is offline and has too many messages waiting; try later"
            return [_to(conn, ev.Error(ErrorCode.NO_SUCH_NICK, detail))]
        self.said["whisper"] += 1  # kept for them
        return [_to(conn, ev.Reply(f"{account.nick} is offline; they get your message when they log in"))]

    def _on_history(self, conn: C, event: ev.History, now: float) -> list[Delivery[C]]:
        room = self._member_room(conn, event.room)
        if isinstance(room, ev.Error):
            return [_to(conn, room)]
        record = self._store.open_room(room.key, room.name)
        entries = self._store.before(room.key, event.before, event.count)
        last = record.last if event.before == 0 else min(record.last, event.before - 1)
        return _history(conn, room.name, record.epoch, last, entries, gap=False)

    def _on_vetted(self, conn: C, vetted: Vetted, now: float) -> list[Delivery[C]]:
        if vetted.verifier != self.verifier_for(conn, vetted.event):
            detail = "the account changed while your password was checked; try again"
            return [_to(conn, ev.Error(ErrorCode.BAD_PASSWORD, detail))]
        event = vetted.event
        if isinstance(event, ev.Register):
            if conn in self._members:
                return [_to(conn, ev.Error(ErrorCode.ALREADY_REGISTERED, "you have a nick already; /nick changes it"))]
            return self._register(conn, event, vetted, now)
        if conn not in self._members:
            return [_to(conn, ev.Error(ErrorCode.NOT_REGISTERED, "register a nick first"))]
        member = self._members[conn]
        key = nick_key(member.nick)
        account = self._store.account(key)
        unchecked = ev.Error(ErrorCode.BAD_PASSWORD, "the password could not be checked; try again")
        if isinstance(event, ev.RegisterAccount):
            if account is not None:
                return [_to(conn, ev.Error(ErrorCode.ACCOUNT_EXISTS, f"{account.nick} is registered already"))]
            if not vetted.new_verifier:  # a verdict made before the nick was taken
                return [_to(conn, unchecked)]
            self._store.save_account(Account(key, member.nick, vetted.new_verifier, int(now)))
            done = f"{member.nick} is registered: from now on it takes this password to use it"
            return [_to(conn, ev.Reply(done))]
        if account is None:
            return [_to(conn, ev.Error(ErrorCode.NO_ACCOUNT, f"{member.nick} is not registered; /register PASSWORD"))]
        refusal = _proof_refusal(account, vetted, "")
        if refusal is not None:
            return [_to(conn, refusal)]
        if isinstance(event, ev.ChangePassword):
            if not vetted.new_verifier:
                return [_to(conn, unchecked)]
            self._store.save_account(account._replace(verifier=vetted.new_verifier))
            return [_to(conn, ev.Reply(f"the password of {account.nick} is changed"))]
        self._store.drop_account(key)
        return [_to(conn, ev.Reply(f"{account.nick} is not registered any more"))]

    def _on_account(self, conn: C, event: ev.ClientEvent, now: float) -> list[Delivery[C]]:
        # Reached only if a transport skipped the edge's password check.
        detail = "account commands go through the server's password check; this server has none"
        return [_to(conn, ev.Error(ErrorCode.UNEXPECTED_FRAME, detail))]

    def _on_change_nick(self, conn: C, event: ev.ChangeNick, now: float) -> list[Delivery[C]]:
        try:
            nick = check_nick(event.nick)
        except RuleError as exc:
            return [_to(conn, ev.Error(exc.code, exc.detail))]
        member = self._members[conn]
        old = member.nick
        if nick == old:
            return [_to(conn, ev.Reply(f"you are {old} already"))]
        key, old_key = nick_key(nick), nick_key(old)
        account = self._store.account(key) if key != old_key else None
        if account is not None:
            detail = f"{account.nick} is registered; connect with its password to use it"
            return [_to(conn, ev.Error(ErrorCode.NEEDS_PASSWORD, detail))]
        if self._bus is not None and not self._bus.ready():
            return [_to(conn, ev.Error(ErrorCode.STORE_FAILED, BUS_DOWN))]
        if key != old_key and not self._owners.claim(key, conn, nick):
            return [_to(conn, ev.Error(ErrorCode.NICK_TAKEN, f"the nick {nick} is taken"))]
        if key != old_key:
            self._owners.release(old_key, conn)
        member.nick = nick
        renamed = ev.Renamed(old, nick)
        if self._bus is not None:
            if member.rooms:
                self._bus.publish(Posted(tuple(member.rooms), renamed, member.token, echo=False))
            return [_to(conn, renamed)]
        return [Delivery((conn, *_audience(member.rooms.values(), conn)), renamed)]

    def _on_who(self, conn: C, event: ev.Who, now: float) -> list[Delivery[C]]:
        if self._asked(conn, event):
            return []
        return self._who_here(conn, event)

    def _who_here(self, conn: C, event: ev.Who) -> list[Delivery[C]]:
        return _chunked_names(conn, "", self.nicks())

    def _on_names(self, conn: C, event: ev.Names, now: float) -> list[Delivery[C]]:
        if self._asked(conn, event):
            return []
        return self._names_here(conn, event)

    def _asked(self, conn: C, question: Question) -> bool:
        """Whether ``question`` went to every server (``answered`` replies)."""
        return self._presence is not None and self._presence.ask(self._members[conn].token, question)

    def _names_here(self, conn: C, event: ev.Names) -> list[Delivery[C]]:
        room = self._rooms.get(room_key(event.room))
        if room is None:
            return [_to(conn, ev.Error(ErrorCode.NO_SUCH_ROOM, f"there is no room {event.room}"))]
        return _chunked_names(conn, room.name, tuple(self._members[c].nick for c in room.members))

    def _on_list_rooms(self, conn: C, event: ev.ListRooms, now: float) -> list[Delivery[C]]:
        if self._asked(conn, event):
            return []
        return self._rooms_here(conn, event)

    def _rooms_here(self, conn: C, event: ev.ListRooms) -> list[Delivery[C]]:
        rows = [ev.RoomInfo(r.name, len(r.members), r.topic) for r in sorted(self._rooms.values(), key=_by_name)]
        return _room_list(conn, rows)

    def _on_join(self, conn: C, event: ev.Join, now: float) -> list[Delivery[C]]:
        return self._join(conn, self._members[conn], event)

    def _on_part(self, conn: C, event: ev.Part, now: float) -> list[Delivery[C]]:
        room = self._member_room(conn, event.room)
        if isinstance(room, ev.Error):
            return [_to(conn, room)]
        member = self._members[conn]
        parted = ev.Parted(room.name, member.nick, event.reason)
        if self._bus is not None:  # the others hear of it from the bus
            self._bus.publish(Posted((room.key,), parted, member.token, echo=False))
            out = [_to(conn, parted)]
        else:
            out = [Delivery(room.everyone() if self._announces(room) else (conn,), parted)]
        self._drop(conn, member, room)
        return out

    def _on_get_topic(self, conn: C, event: ev.GetTopic, now: float) -> list[Delivery[C]]:
        room = self._rooms.get(room_key(event.room))
        if room is None:
            return [_to(conn, ev.Error(ErrorCode.NO_SUCH_ROOM, f"there is no room {event.room}"))]
        return [_to(conn, room.topic_event(changed=False))]

    def _on_set_topic(self, conn: C, event: ev.SetTopic, now: float) -> list[Delivery[C]]:
        room = self._member_room(conn, event.room)
        if isinstance(room, ev.Error):
            return [_to(conn, room)]
        if self._bus is not None:  # set, in the rooms' one order, when it comes back
            if not self._bus.ready():
                return [_to(conn, ev.Error(ErrorCode.STORE_FAILED, BUS_DOWN))]
            topic = ev.Topic(room.name, event.text, self._members[conn].nick, int(now), True)
            self._bus.publish(Posted((room.key,), topic, self._members[conn].token))
            return []
        room.topic = event.text
        room.topic_by = self._members[conn].nick if event.text else ""
        room.topic_at = int(now) if event.text else 0
        self._store.set_topic(room.key, room.topic, room.topic_by, room.topic_at)
        changed = ev.Topic(room.name, event.text, self._members[conn].nick, int(now), True)
        return [Delivery(room.everyone(), changed)]

    def _on_help(self, conn: C, event: ev.Help, now: float) -> list[Delivery[C]]:
        return [_to(conn, ev.Reply(line)) for line in HELP_LINES]

    def _on_ping(self, conn: C, event: ev.Ping, now: float) -> list[Delivery[C]]:
        return [_to(conn, ev.Pong(event.nonce))]

    def _on_pong(self, conn: C, event: ev.Pong, now: float) -> list[Delivery[C]]:
        return []  # the transport saw traffic; that is all a pong is for

    def _on_goodbye(self, conn: C, event: ev.Goodbye, now: float) -> list[Delivery[C]]:
        return [
            Delivery((conn,), ev.Goodbye("bye"), last=True),
            *self._leave(conn, event.reason, f"quit {event.reason!r}"),
        ]


def _to(conn: C, event: ev.ServerEvent) -> Delivery[C]:
    return Delivery((conn,), event)


def _farewell(conn: C, code: ErrorCode, detail: str) -> list[Delivery[C]]:
    return [_to(conn, ev.Error(code, detail)), Delivery((conn,), ev.Goodbye(detail), last=True)]


def _proof_refusal(account: Account, vetted: Vetted | None, registered: str) -> ev.Error | None:
    """Why a password for ``account`` is not accepted, or None if it is.
    ``registered``: how to say that the nick needs one (empty: it is the
    sender's own account, which knows)."""
    if vetted is not None and vetted.wait > 0:
        return ev.Error(ErrorCode.TOO_MANY_TRIES, f"too many wrong passwords; try again in {vetted.wait:.0f} s")
    password = "" if vetted is None else getattr(vetted.event, "password", getattr(vetted.event, "old", ""))
    if not password:
        lead = f"{registered}: " if registered else ""
        return ev.Error(ErrorCode.NEEDS_PASSWORD, f"{lead}give its password (/login PASSWORD at a terminal)")
    if not vetted or not vetted.ok:
        return ev.Error(ErrorCode.BAD_PASSWORD, f"wrong password for {account.nick}")
    return None


def _history(conn: C, room: str, epoch: str, last: int, entries: list[Entry], *, gap: bool) -> list[Delivery[C]]:
    """A Replay frame and the entries it announces, to ``conn``."""
    first = entries[0].seq if entries else last + 1
    out = [_to(conn, ev.Replay(room, epoch, first, entries[-1].seq if entries else last, gap))]
    for seq, time, sender, text, action in entries:
        out.append(_to(conn, (_new_action if action else _new_message)(room, sender, text, seq, time, True)))
    return out


def _audience(rooms: Iterable[_Room[C]], conn: C) -> tuple[C, ...]:
    """Everyone who shares at least one of ``rooms`` with ``conn``, ``conn`` excluded."""
    seen: dict[C, None] = {}
    for room in rooms:
        seen.update(dict.fromkeys(room.members))
    seen.pop(conn, None)
    return tuple(seen)


def _chunked_names(conn: C, room: str, nicks: tuple[str, ...]) -> list[Delivery[C]]:
    starts = range(0, max(1, len(nicks)), WHO_CHUNK)
    return [_to(conn, ev.WhoReply(room, nicks[i : i + WHO_CHUNK], i + WHO_CHUNK < len(nicks))) for i in starts]


def _room_list(conn: C, rows: list[ev.RoomInfo]) -> list[Delivery[C]]:
    if not rows:
        return [_to(conn, ev.RoomList((), False))]
    starts = range(0, len(rows), ROOMS_CHUNK)
    return [_to(conn, ev.RoomList(tuple(rows[i : i + ROOMS_CHUNK]), i + ROOMS_CHUNK < len(rows))) for i in starts]


def _by_name(room: _Room[Any]) -> tuple[str, str]:
    """The order of /rooms: alphabetical as people read names, not by the
    look-alike key (which maps 0 to o and 1 to l)."""
    return room.name.casefold(), room.name


_Handler = Callable[[Hub[Any], Any, Any, float], list[Delivery[Any]]]

#: What a connection may say before it has a nick.
_PENDING_HANDLERS: Final[dict[type[ev.ClientEvent], _Handler]] = {
    ev.Register: Hub._on_register,
    Vetted: Hub._on_vetted,
    ev.Help: Hub._on_help,
    ev.Ping: Hub._on_ping,
    ev.Pong: Hub._on_pong,
    ev.Goodbye: Hub._on_goodbye,
}

#: How this hub answers a question on its own (no other server could be asked).
_ANSWERS_HERE: Final[dict[type[ev.ClientEvent], Callable[[Hub[Any], Any, Any], list[Delivery[Any]]]]] = {
    ev.Who: Hub._who_here,
    ev.Names: Hub._names_here,
    ev.ListRooms: Hub._rooms_here,
}

#: What a member may say.
_MEMBER_HANDLERS: Final[dict[type[ev.ClientEvent], _Handler]] = {
    ev.Say: Hub._on_say,
    ev.Act: Hub._on_act,
    ev.Whisper: Hub._on_whisper,
    ev.ChangeNick: Hub._on_change_nick,
    ev.Who: Hub._on_who,
    ev.Join: Hub._on_join,
    ev.Part: Hub._on_part,
    ev.ListRooms: Hub._on_list_rooms,
    ev.Names: Hub._on_names,
    ev.GetTopic: Hub._on_get_topic,
    ev.SetTopic: Hub._on_set_topic,
    ev.History: Hub._on_history,
    Vetted: Hub._on_vetted,
    ev.RegisterAccount: Hub._on_account,
    ev.ChangePassword: Hub._on_account,
    ev.DropAccount: Hub._on_account,
    ev.Help: Hub._on_help,
    ev.Ping: Hub._on_ping,
    ev.Pong: Hub._on_pong,
    ev.Goodbye: Hub._on_goodbye,
}
