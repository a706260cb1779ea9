"""The chat state: who is here, under which nick, and who receives what.

The hub is transport-agnostic: a connection is any hashable id the transport
chooses (a connection object, a UDP session token). Every method returns the
deliveries to make, in order, and sends nothing itself; a transport that calls
the hub under one lock and queues the deliveries before releasing it gives
every member the whole conversation in one total order.

The transport's side of the contract:

- ``connect(conn)`` when a client arrives, before anything it says;
- ``receive(conn, event)`` for each event decoded from it, and
  ``reject(conn, error)`` for each decoding error;
- ``kick(conn, code, detail)`` to end a session for its own reasons (idle,
  slow, flooding), and ``disconnect(conn, reason)`` when the peer vanished;
- ``shutdown(reason)`` to say goodbye to everyone.

A ``Goodbye`` delivered to a connection is the last event it gets: the hub has
forgotten the connection already, and the transport flushes what is queued for
it and closes it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.nicks import check_nick, nick_key
from common.wire.errors import ErrorCode, FrameRejected, ProtocolError, RuleError
from common.wire.limits import WHO_CHUNK

C = TypeVar("C", bound=Hashable)

#: Errors that refuse a registration (and end a framed client's connection).
_REGISTRATION_CODES: Final = frozenset({ErrorCode.BAD_NICK, ErrorCode.NICK_TAKEN})


@dataclass(frozen=True, slots=True)
class Delivery(Generic[C]):
    """Send ``event`` to each of ``recipients``, in this order relative to the others."""

    recipients: tuple[C, ...]
    event: ev.ServerEvent


class Hub(Generic[C]):
    """Members, nicks and the routing of every event; see the module docstring.

    Args:
        max_clients: most connections at once, registered or not; 0 for no limit.
    """

    def __init__(self, *, max_clients: int = 0) -> None:
        self.max_clients = max_clients
        self._nicks: dict[C, str] = {}  # member -> nick as shown, in join order
        self._owners: dict[str, C] = {}  # nick_key -> member
        self._pending: dict[C, bool] = {}  # not registered yet -> may retry a refused nick
        self._everyone: tuple[C, ...] | None = None  # cache of the members
        self._others: dict[C, tuple[C, ...]] = {}  # cache: every member but the key

    # --- queries -----------------------------------------------------------------

    def __contains__(self, conn: object) -> bool:
        return conn in self._nicks or conn in self._pending

    def __len__(self) -> int:
        """Connections the hub knows, registered or not."""
        return len(self._nicks) + len(self._pending)

    def nick_of(self, conn: C) -> str | None:
        """The member's nick, or None if ``conn`` has not registered."""
        return self._nicks.get(conn)

    def nicks(self) -> tuple[str, ...]:
        """Every member's nick, in join order."""
        return tuple(self._nicks.values())

    # --- the transport's calls ---------------------------------------------------

    def connect(self, conn: C, *, may_retry: bool = False) -> list[Delivery[C]]:
        """A client arrived. ``may_retry``: a refused nick does not end its
        connection (people at ``nc`` may type another one)."""
        if conn in self:
            raise ValueError(f"{conn!r} is connected already")
        if self.max_clients and len(self) >= self.max_clients:
            return _farewell(conn, ErrorCode.SERVER_FULL, f"the server is full ({self.max_clients} clients)")
        self._pending[conn] = may_retry
        return []

    def receive(self, conn: C, event: ev.Event) -> list[Delivery[C]]:
        """The client ``conn`` said ``event``."""
        if conn in self._nicks:
            handler = _MEMBER_HANDLERS.get(type(event))
        elif conn in self._pending:
            handler = _PENDING_HANDLERS.get(type(event))
        else:
            return []  # gone already; a late event from it changes nothing
        if handler is None:
            return [_to(conn, ev.Error(*self._refusal(conn, event)))]
        return handler(self, conn, event)

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
        nick = self._forget(conn)
        out = _farewell(conn, code, detail)
        if nick is not None and self._nicks:
            out.append(Delivery(self._members(), ev.Left(nick, detail)))
        return out

    def disconnect(self, conn: C, reason: str) -> list[Delivery[C]]:
        """``conn`` is gone (closed, reset, silent); tell the others."""
        nick = self._forget(conn)
        if nick is None or not self._nicks:
            return []
        return [Delivery(self._members(), ev.Left(nick, ev.scrub(reason)))]

    def shutdown(self, reason: str) -> list[Delivery[C]]:
        """Say goodbye to every connection and forget them all."""
        everyone = (*self._nicks, *self._pending)
        self._nicks.clear()
        self._owners.clear()
        self._pending.clear()
        self._membership_changed()
        if not everyone:
            return []
        reason = ev.scrub(reason)
        return [
            Delivery(everyone, ev.Error(ErrorCode.SHUTTING_DOWN, reason)),
            Delivery(everyone, ev.Goodbye(reason)),
        ]

    # --- bookkeeping -------------------------------------------------------------

    def _members(self) -> tuple[C, ...]:
        if self._everyone is None:
            self._everyone = tuple(self._nicks)
        return self._everyone

    def _others_of(self, conn: C) -> tuple[C, ...]:
        others = self._others.get(conn)
        if others is None:
            others = self._others[conn] = tuple(c for c in self._nicks if c != conn)
        return others

    def _membership_changed(self) -> None:
        self._everyone = None
        self._others.clear()

    def _forget(self, conn: C) -> str | None:
        """Remove ``conn``; return its nick if it was a member."""
        self._pending.pop(conn, None)
        nick = self._nicks.pop(conn, None)
        if nick is not None:
            del self._owners[nick_key(nick)]
            self._membership_changed()
        return nick

    def _refusal(self, conn: C, event: ev.Event) -> tuple[ErrorCode, str]:
        name = type(event).__name__
        if not isinstance(event, ev.ClientEvent):
            return ErrorCode.UNEXPECTED_FRAME, f"a client does not send {name}"
        if conn in self._pending:
            return ErrorCode.NOT_REGISTERED, f"register a nick before {name}"
        return ErrorCode.ALREADY_REGISTERED, "this connection has a nick already; /nick changes it"

    def _refuse_registration(self, conn: C, code: ErrorCode, detail: str) -> list[Delivery[C]]:
        if self._pending[conn]:
            return [_to(conn, ev.Error(code, detail))]
        del self._pending[conn]
        return _farewell(conn, code, detail)

    # --- handlers, by event type (tables at the end of the module) ---------------

    def _on_register(self, conn: C, event: ev.Register) -> list[Delivery[C]]:
        try:
            nick = check_nick(event.nick)
        except RuleError as exc:
            return self._refuse_registration(conn, exc.code, exc.detail)
        key = nick_key(nick)
        if key in self._owners:
            return self._refuse_registration(conn, ErrorCode.NICK_TAKEN, f"the nick {nick} is taken")
        others = self._members()
        del self._pending[conn]
        self._nicks[conn] = nick
        self._owners[key] = conn
        self._membership_changed()
        out = [_to(conn, ev.Welcome(nick, len(self._nicks)))]
        if others:
            out.append(Delivery(others, ev.Joined(nick)))
        return out

    def _on_say(self, conn: C, event: ev.Say) -> list[Delivery[C]]:
        others = self._others_of(conn)
        return [Delivery(others, ev.Message(self._nicks[conn], event.text))] if others else []

    def _on_act(self, conn: C, event: ev.Act) -> list[Delivery[C]]:
        others = self._others_of(conn)
        return [Delivery(others, ev.Action(self._nicks[conn], event.text))] if others else []

    def _on_whisper(self, conn: C, event: ev.Whisper) -> list[Delivery[C]]:
        target = self._owners.get(nick_key(event.to))
        if target is None:
            return [_to(conn, ev.Error(ErrorCode.NO_SUCH_NICK, f"nobody is called {event.to}"))]
        return [_to(target, ev.Private(self._nicks[conn], event.text))]

    def _on_change_nick(self, conn: C, event: ev.ChangeNick) -> list[Delivery[C]]:
        try:
            nick = check_nick(event.nick)
        except RuleError as exc:
            return [_to(conn, ev.Error(exc.code, exc.detail))]
        old = self._nicks[conn]
        if nick == old:
            return [_to(conn, ev.Reply(f"you are {old} already"))]
        key = nick_key(nick)
        if self._owners.get(key, conn) != conn:
            return [_to(conn, ev.Error(ErrorCode.NICK_TAKEN, f"the nick {nick} is taken"))]
        del self._owners[nick_key(old)]
        self._owners[key] = conn
        self._nicks[conn] = nick
        return [Delivery(self._members(), ev.Renamed(old, nick))]

    def _on_who(self, conn: C, event: ev.Who) -> list[Delivery[C]]:
        nicks = tuple(self._nicks.values())
        starts = range(0, len(nicks), WHO_CHUNK)
        return [_to(conn, ev.WhoReply(nicks[i : i + WHO_CHUNK], i + WHO_CHUNK < len(nicks))) for i in starts]

    def _on_help(self, conn: C, event: ev.Help) -> list[Delivery[C]]:
        return [_to(conn, ev.Reply(line)) for line in HELP_LINES]

    def _on_ping(self, conn: C, event: ev.Ping) -> list[Delivery[C]]:
        return [_to(conn, ev.Pong(event.nonce))]

    def _on_pong(self, conn: C, event: ev.Pong) -> list[Delivery[C]]:
        return []  # the transport saw traffic; that is all a pong is for

    def _on_goodbye(self, conn: C, event: ev.Goodbye) -> list[Delivery[C]]:
        nick = self._forget(conn)
        out = [_to(conn, ev.Goodbye("bye"))]
        if nick is not None and self._nicks:
            out.append(Delivery(self._members(), ev.Left(nick, event.reason)))
        return out


def _to(conn: C, event: ev.ServerEvent) -> Delivery[C]:
    return Delivery((conn,), event)


def _farewell(conn: C, code: ErrorCode, detail: str) -> list[Delivery[C]]:
    return [_to(conn, ev.Error(code, detail)), _to(conn, ev.Goodbye(detail))]


_Handler = Callable[[Hub[Any], Any, Any], list[Delivery[Any]]]

#: What a connection may say before it has a nick.
_PENDING_HANDLERS: Final[dict[type[ev.Event], _Handler]] = {
    ev.Register: Hub._on_register,
    ev.Help: Hub._on_help,
    ev.Ping: Hub._on_ping,
    ev.Pong: Hub._on_pong,
    ev.Goodbye: Hub._on_goodbye,
}

#: What a member may say.
_MEMBER_HANDLERS: Final[dict[type[ev.Event], _Handler]] = {
    ev.Say: Hub._on_say,
    ev.Act: Hub._on_act,
    ev.Whisper: Hub._on_whisper,
    ev.ChangeNick: Hub._on_change_nick,
    ev.Who: Hub._on_who,
    ev.Help: Hub._on_help,
    ev.Ping: Hub._on_ping,
    ev.Pong: Hub._on_pong,
    ev.Goodbye: Hub._on_goodbye,
}
