"""A person at ``nc``: the text dialect's session, kept by the server.

A text-dialect user has no client program, so the server keeps for them what
a client would: their view (nick, rooms, current room: ``common.chat.view``),
which turns their lines into events and the events they receive into lines.
The first line is the nick to register; until one is accepted each non-blank
line is another try, and ``/login PASSWORD`` proves the nick just tried when
it is registered. Afterwards each line is what they typed.

Lines that carry a password (``/login``, ``/register``, ``/password``,
``/unregister``) are found by ``account_events`` before the hub lock is taken:
the server's edge checks the password there (hashing is slow) and hands
``take`` the verdict, a ``Vetted`` event, in the line's place.

Strategy: lines are batched into the hub like frames, except that a line
which may change the view (registering, joining, parting, a nick change)
makes the deliveries so far go out before the next line is read, because the
next line's meaning depends on the view (which room a plain line goes to).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Final, TypeVar

from common.chat import events as ev
from common.chat.commands import parse_input
from common.chat.hub import ACCOUNT_EVENTS, Delivery, Hub, Vetted
from common.chat.view import ClientView
from common.wire.errors import ErrorCode, ProtocolError, RuleError

C = TypeVar("C", bound=Hashable)

#: Events whose answer may change the sender's view.
_CHANGES_VIEW: Final = frozenset({ev.Register, ev.Join, ev.Part, ev.ChangeNick, Vetted})

#: How a line that proves a registered nick begins.
_LOGIN: Final = "/login "


class TextSession:
    """The server's side of one text-dialect user."""

    __slots__ = ("tried", "view")

    def __init__(self) -> None:
        self.view = ClientView()
        #: The last nick line tried, which a /login proves.
        self.tried = ""

    def account_events(self, items: list[str | ProtocolError]) -> dict[int, ev.ClientEvent]:
        """The account events that lines of ``items`` ask for, by index: the
        lines that carry a password, for the edge to check outside the lock
        and hand back to ``take`` as ``Vetted`` in their place. Reads the view
        and changes nothing; a nick line followed by ``/login`` in the same
        batch is understood."""
        found: dict[int, ev.ClientEvent] = {}
        tried = self.tried
        registering = self.view.nick is None
        for index, item in enumerate(items):
            if not isinstance(item, str):
                continue
            if registering:
                if item.startswith(_LOGIN) and tried:
                    with contextlib.suppress(RuleError):  # refused: ``take`` says why
                        found[index] = ev.Register(tried, item[len(_LOGIN) :].strip())
                elif item.strip():
                    tried = item.strip()
                # The lines after a nick (or a /login) are read as commands, as
                # they will be once it is taken, unless another /login is next.
                after = items[index + 1] if index + 1 < len(items) else None
                registering = isinstance(after, str) and after.startswith(_LOGIN)
                continue
            if item.startswith("/") and not item.startswith("//"):
                try:
                    event = parse_input(item, self.view.current)
                except RuleError:
                    continue
                if isinstance(event, ACCOUNT_EVENTS):
                    found[index] = event
        return found

    def take(
        self,
        hub: Hub[C],
        conn: C,
        items: list[str | ProtocolError | Vetted],
        now: float,
        deliver: Callable[[list[Delivery[C]]], None],
        *,
        settle: Callable[[], None] | None = None,
    ) -> None:
        """Feed what the user sent (lines, and line errors in their place) to
        the hub, and hand every delivery to ``deliver``, in order.

        ``settle``: makes what was handed to ``deliver`` reach the view now,
        for a server whose deliveries may wait for its store (the next line's
        meaning depends on them)."""
        out: list[Delivery[C]] = []
        stale = False  # the view may lag behind deliveries not made yet
        for item in items:
            if isinstance(item, ProtocolError):
                out += hub.reject(conn, item)
                continue
            if stale:
                deliver(out)
                if settle is not None:
                    settle()
                out, stale = [], False
            if isinstance(item, Vetted):
                out += hub.receive(conn, item, now)
                stale = True
                continue
            if self.view.nick is None:
                nick = item.strip()
                if not nick:
                    continue
                if nick.startswith(_LOGIN.strip()):
                    out += hub.reject(conn, RuleError(ErrorCode.BAD_USAGE, "type the nick first, then /login PASSWORD"))
                    continue
                self.tried = nick
                try:
                    event: ev.ClientEvent | None = ev.Register(nick)
                except RuleError as exc:
                    out += hub.reject(conn, exc)
                    continue
            else:
                typed = self.view.interpret(item)
                out += [Delivery((conn,), shown) for shown in typed.show]
                event = typed.send
            if event is not None:
                out += hub.receive(conn, event, now)
                stale = type(event) in _CHANGES_VIEW
        deliver(out)
