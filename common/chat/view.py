"""What one client knows of its own session: its nick, its rooms, the current one.

A client needs this to turn typed lines into events (a plain line goes to the
current room) and to show events (a line from another room is marked with
it). The server needs the same for its text-dialect users, who have no client
of their own. So it is one class, fed the events its client receives.

The rules (PROTOCOL.md, "Rooms: the client's view"):

- ``Welcome`` gives the nick; ``Renamed`` from it changes it;
- ``/join`` of a room it is in makes that room current, without asking the
  server; ``/join`` of another room makes it current at once (so the next
  line goes there even before the server answers), and if the server refuses
  the join (``TOO_MANY_ROOMS``, ``BAD_ROOM``: only a Join is answered so) the
  room before it is current again;
- ``Joined`` of itself adds the room; it becomes current if nothing else is
  (the lobby at registration), and its name as the server spells it replaces
  the one typed;
- ``/part`` leaves at once: the room is dropped, and if it was current the
  room joined most recently of those left becomes current (none if none is
  left); ``Parted`` of itself does the same (for a part it did not type).

Typed lines are interpreted at once, without waiting for the server, so that
a script's lines keep their meaning however fast they come. ``interpret`` is
one line, one event, as the text dialect reads it; ``interpret_typed`` is what
a client does for its own person, who may paste several lines at once or type
a line longer than one message may be: each line goes in turn, and a long
chat text as several messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from common.chat import events as ev
from common.chat.commands import HELP_LINES, parse_input, parse_typed
from common.chat.nicks import nick_key
from common.chat.render import render
from common.chat.rooms import room_key
from common.wire.errors import ErrorCode, RuleError


@dataclass(frozen=True, slots=True)
class Typed:
    """The outcome of one typed line.

    ``send`` goes to the server (a ``Goodbye`` means: quit); ``show`` is
    answered on the spot, rendered like server events (``/help``, a typo, a
    switch of the current room).
    """

    send: ev.ClientEvent | None = None
    show: tuple[ev.ServerEvent, ...] = ()
    #: The line, when it was refused on the spot (an error in ``show``), so
    #: that a front end can give it back to be mended instead of losing it.
    refused: str = ""


#: The errors that answer only a Join: the view's switch to that room is undone.
_JOIN_REFUSALS = frozenset({ErrorCode.TOO_MANY_ROOMS, ErrorCode.BAD_ROOM})

#: /help is answered without a round trip, so it works even while the link is busy.
_HELP = tuple(ev.Reply(line) for line in HELP_LINES)

#: What ends a line in pasted text; each piece between is a line of its own.
_LINE_BREAK: Final = re.compile("\r\n|\r|\n")


class ClientView:
    """One client's own state, kept from the events it receives."""

    __slots__ = ("_joining", "_key", "current", "nick", "rooms")

    def __init__(self, nick: str | None = None) -> None:
        self.nick = nick
        self._key = None if nick is None else nick_key(nick)
        #: The rooms it is in, by room key, in the order it joined them.
        self.rooms: dict[str, str] = {}
        #: The room a plain line goes to; None when in no room.
        self.current: str | None = None
        #: Joins sent and not answered: (the room asked for, the room current before).
        self._joining: list[tuple[str, str | None]] = []

    def _is_me(self, nick: str) -> bool:
        return self._key is not None and nick_key(nick) == self._key

    def observe(self, event: ev.Event) -> None:
        """Update from one event this client received, in order."""
        kind = type(event)
        if kind is ev.Welcome:
            assert isinstance(event, ev.Welcome)
            self.nick, self._key = event.nick, nick_key(event.nick)
        elif kind is ev.Renamed:
            assert isinstance(event, ev.Renamed)
            if self._is_me(event.old):
                self.nick, self._key = event.new, nick_key(event.new)
        elif kind is ev.Joined:
            assert isinstance(event, ev.Joined)
            if self._is_me(event.nick):
                key = room_key(event.room)
                self.rooms[key] = event.room
                self._joining = [j for j in self._joining if room_key(j[0]) != key]
                if self.current is None or room_key(self.current) == key:
                    self.current = event.room
        elif kind is ev.Parted:
            assert isinstance(event, ev.Parted)
            if self._is_me(event.nick):
                self._leave(room_key(event.room))
        elif kind is ev.Error:
            assert isinstance(event, ev.Error)
            if event.code in _JOIN_REFUSALS and self._joining:
                asked, before = self._joining.pop(0)
                if self.current == asked:
                    self.current = before if before is None or room_key(before) in self.rooms else self._latest()

    def _latest(self) -> str | None:
        return next(reversed(self.rooms.values()), None)

    def _leave(self, key: str) -> None:
        self.rooms.pop(key, None)
        if self.current is not None and room_key(self.current) == key:
            self.current = self._latest()

    def interpret(self, line: str) -> Typed:
        """Turn one typed line (without its newline) into what the client does."""
        try:
            event = parse_input(line, self.current)
        except RuleError as exc:
            return _refused(line, exc)
        return self._apply(event)

    def interpret_typed(self, text: str) -> list[Typed]:
        """What the client does for ``text`` as its person typed or pasted it:
        each line in turn (``\n``, ``\r\n`` or ``\r`` ends one; blank ones
        ask nothing), and a message, action or private message too long for
        one event as several (``common.chat.commands.split_text``)."""
        done: list[Typed] = []
        for line in _LINE_BREAK.split(text):
            try:
                events = parse_typed(line, self.current)
            except RuleError as exc:
                done.append(_refused(line, exc))
                continue
            done += (self._apply(event) for event in events)
        return done

    def _apply(self, event: ev.ClientEvent | None) -> Typed:
        if isinstance(event, ev.Help):
            return Typed(show=_HELP)
        if isinstance(event, ev.Join):
            room = self.rooms.get(room_key(event.room))
            if room is not None:
                self.current = room
                return Typed(show=(ev.Reply(f"now talking in {room}"),))
            self._joining.append((event.room, self.current))
            self.current = event.room
        elif isinstance(event, ev.Part):
            self._leave(room_key(event.room))
        return Typed(send=event)

    def render(self, event: ev.Event) -> str | None:
        """The line this client's person sees for ``event`` (None: nothing)."""
        return render(event, self.current)


def _refused(line: str, exc: RuleError) -> Typed:
    return Typed(show=(ev.Error(exc.code, ev.scrub(exc.detail)),), refused=line)
