"""A person at ``nc``: the text dialect's session, kept by the server.

A text-dialect user has no client program, so the server keeps for them what
a client would: their view (nick, rooms, current room: ``common.chat.view``),
which turns their lines into events and the events they receive into lines.
The first line is the nick to register; until one is accepted each non-blank
line is another try. Afterwards each line is what they typed.

Strategy: lines are batched into the hub like frames, except that a line
which may change the view (registering, joining, parting, a nick change)
makes the deliveries so far go out before the next line is read, because the
next line's meaning depends on the view (which room a plain line goes to).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final, TypeVar

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.view import ClientView
from common.wire.errors import ProtocolError, RuleError

C = TypeVar("C", bound=Hashable)

#: Events whose answer may change the sender's view.
_CHANGES_VIEW: Final = frozenset({ev.Register, ev.Join, ev.Part, ev.ChangeNick})


class TextSession:
    """The server's side of one text-dialect user."""

    __slots__ = ("view",)

    def __init__(self) -> None:
        self.view = ClientView()

    def take(
        self,
        hub: Hub[C],
        conn: C,
        items: list[str | ProtocolError],
        now: float,
        deliver: Callable[[list[Delivery[C]]], None],
    ) -> None:
        """Feed what the user sent (lines, and line errors in their place) to
        the hub, and hand every delivery to ``deliver``, in order."""
        out: list[Delivery[C]] = []
        stale = False  # the view may lag behind deliveries not made yet
        for item in items:
            if isinstance(item, ProtocolError):
                out += hub.reject(conn, item)
                continue
            if stale:
                deliver(out)
                out, stale = [], False
            if self.view.nick is None:
                nick = item.strip()
                if not nick:
                    continue
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
