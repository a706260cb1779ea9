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
- per room it is in, it keeps the epoch (from ``Replay``) and the highest and
  lowest seq of the messages it has shown: the highest is where it resumes
  after a lost link (``resume``), the lowest where ``/history`` pages back from.

Typed lines are interpreted at once, without waiting for the server, so that
a script's lines keep their meaning however fast they come. ``interpret`` is
one line, one event, as the text dialect reads it; ``interpret_typed`` is what
a client does for its own person, who may paste several lines at once or type
a line longer than one message may be: each line goes in turn, and a long
chat text as several messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

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

    __slots__ = ("_answered", "_asked", "_joining", "_key", "current", "nick", "positions", "rooms")

    def __init__(self, nick: str | None = None) -> None:
        self.nick = nick
        self._key = None if nick is None else nick_key(nick)
        #: The rooms it is in, by room key, in the order it joined them.
        self.rooms: dict[str, str] = {}
        #: The room a plain line goes to; None when in no room.
        self.current: str | None = None
        #: Joins sent and not answered: (the room asked for, the room current before).
        self._joining: list[tuple[str, str | None]] = []
        #: Per room key: where this client is in the room's history.
        self.positions: dict[str, Position] = {}
        #: Rooms with a /history request not answered yet, and the last answer.
        self._asked: list[str] = []
        self._answered: ev.Replay | None = None

    def _is_me(self, nick: str) -> bool:
        return self._key is not None and nick_key(nick) == self._key

    def observe(self, event: ev.Event) -> None:
        """Update from one event this client received, in order."""
        follow = _FOLLOW.get(type(event))
        if follow is not None:
            follow(self, event)

    def _said(self, event: ev.Message | ev.Action) -> None:
        position = self.positions.get(room_key(event.room))
        if position is not None:
            position.saw(event.seq)

    def _welcomed(self, event: ev.Welcome) -> None:
        self.nick, self._key = event.nick, nick_key(event.nick)

    def _renamed(self, event: ev.Renamed) -> None:
        if self._is_me(event.old):
            self.nick, self._key = event.new, nick_key(event.new)

    def _joined(self, event: ev.Joined) -> None:
        if self._is_me(event.nick):
            key = room_key(event.room)
            self.rooms[key] = event.room
            self._joining = [j for j in self._joining if room_key(j[0]) != key]
            if self.current is None or room_key(self.current) == key:
                self.current = event.room

    def _parted(self, event: ev.Parted) -> None:
        if self._is_me(event.nick):
            self._leave(room_key(event.room))

    def _refused(self, event: ev.Error) -> None:
        if event.code in _JOIN_REFUSALS and self._joining:
            asked, before = self._joining.pop(0)
            if self.current == asked:
                self.current = before if before is None or room_key(before) in self.rooms else self._latest()

    def _replayed(self, event: ev.Replay) -> None:
        key = room_key(event.room)
        position = self.positions.get(key)
        if position is None or position.epoch != event.epoch:
            position = self.positions[key] = Position(event.epoch)
        if key in self._asked:
            self._asked.remove(key)
            self._answered = event
        if event.first > event.last:
            position.saw(event.last, shown=False)

    def resume(self) -> list[ev.Join]:
        """What a client coming back after a lost link sends, after its
        ``Register(..., resume=True)``: a Join of each of its rooms, in the
        order it joined them, saying where it was in each."""
        joins = []
        for key, room in self.rooms.items():
            position = self.positions.get(key)
            joins.append(ev.Join(room, position.epoch, position.last) if position else ev.Join(room))
        return joins

    def _latest(self) -> str | None:
        return next(reversed(self.rooms.values()), None)

    def _leave(self, key: str) -> None:
        self.rooms.pop(key, None)
        self.positions.pop(key, None)
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
        elif isinstance(event, ev.History):
            key = room_key(event.room)
            position = self.positions.get(key)
            if position is not None and position.oldest:
                event = ev.History(event.room, position.oldest, event.count)
            self._asked.append(key)
        return Typed(send=event)

    def render(self, event: ev.Event) -> str | None:
        """The line this client's person sees for ``event`` (None: nothing)."""
        if event is self._answered and isinstance(event, ev.Replay) and event.first > event.last:
            return f"* no older messages in {event.room}"
        return render(event, self.current)


class Position:
    """Where a client is in one room's history: the room's epoch, and the
    highest and lowest seq it has seen (0: none)."""

    __slots__ = ("epoch", "last", "oldest")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.last = 0
        self.oldest = 0

    def saw(self, seq: int, *, shown: bool = True) -> None:
        self.last = max(self.last, seq)
        if shown and seq and (not self.oldest or seq < self.oldest):
            self.oldest = seq


#: What each kind of event changes in a view.
_FOLLOW: Final[dict[type[ev.Event], Callable[[ClientView, Any], None]]] = {
    ev.Message: ClientView._said,
    ev.Action: ClientView._said,
    ev.Replay: ClientView._replayed,
    ev.Welcome: ClientView._welcomed,
    ev.Renamed: ClientView._renamed,
    ev.Joined: ClientView._joined,
    ev.Parted: ClientView._parted,
    ev.Error: ClientView._refused,
}


def _refused(line: str, exc: RuleError) -> Typed:
    return Typed(show=(ev.Error(exc.code, ev.scrub(exc.detail)),), refused=line)
