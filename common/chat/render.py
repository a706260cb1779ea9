"""Events as one line of text each: the rendering every plain-text user sees.

A chat message from alice is ``alice: T``; every other line starts with ``*``
(``* alice waves``, ``*alice* psst``, ``*** bob joined #dev``), or with the
room in brackets when it comes from a room that is not the reader's current
one (``[#dev] alice: T``), so a script can tell what people said from what the
server said by the first character. A message replayed from the history
starts with the time it was said (``[14:02] alice: T``, UTC). Texts cannot hold line breaks or control
characters (``common.chat.events`` refuses them), so one event is always one
line and a peer cannot forge another's.

Which room is current is the reader's state (``common.chat.view``), so the
rendering takes it as ``here``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from common.chat import events as ev


def _left(e: ev.Left) -> str:
    return f"*** {e.nick} left ({e.reason})" if e.reason else f"*** {e.nick} left"


def _parted(e: ev.Parted) -> str:
    return f"*** {e.nick} left {e.room} ({e.reason})" if e.reason else f"*** {e.nick} left {e.room}"


def _goodbye(e: ev.Goodbye) -> str:
    return f"*** disconnected: {e.reason}" if e.reason else "*** disconnected"


def _who(e: ev.WhoReply) -> str:
    where = f"in {e.room}" if e.room else "online"
    return f"* {where}: " + ", ".join(e.nicks) + (" ..." if e.more else "")


def _welcome(e: ev.Welcome) -> str:
    others = e.online - 1
    company = "nobody else is here" if others == 0 else f"{others} other{'s' if others > 1 else ''} online"
    return f"*** welcome, {e.nick}: {company}"


def clock(unix: int) -> str:
    """``unix`` seconds as ``YYYY-MM-DD HH:MM UTC``.

    Strategy: the civil-from-days conversion of the proleptic Gregorian
    calendar done by hand, because ``common`` reads no clock and so imports
    neither ``time`` nor ``datetime``.
    """
    days, seconds = divmod(unix, 86400)
    era, day_of_era = divmod(days + 719468, 146097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (month <= 2)
    return f"{year:04d}-{month:02d}-{day:02d} {seconds // 3600:02d}:{seconds % 3600 // 60:02d} UTC"


def hour(unix_ms: int) -> str:
    """``unix_ms`` as ``HH:MM`` (UTC): when a replayed message was said."""
    minutes = unix_ms // 60_000 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _replay(e: ev.Replay) -> str | None:
    if e.gap:
        return f"*** some messages of {e.room} are lost to you (its history was trimmed or reset)"
    return None


def _private(e: ev.Private) -> str:
    return f"[{hour(e.time)}] *{e.sender}* {e.text}" if e.kept else f"*{e.sender}* {e.text}"


def _topic(e: ev.Topic) -> str:
    if e.changed:
        if e.text:
            return f"*** {e.setter} set the topic of {e.room}: {e.text}"
        return f"*** {e.setter} cleared the topic of {e.room}"
    if not e.text:
        return f"* {e.room} has no topic"
    return f"* topic of {e.room}: {e.text} (set by {e.setter}, {clock(e.time)})"


def _rooms(e: ev.RoomList) -> str:
    if not e.rooms:
        return "* no rooms"
    rows = [f"{r.room} ({r.members})" + (f": {r.topic}" if r.topic else "") for r in e.rooms]
    return "* rooms: " + "; ".join(rows) + (" ..." if e.more else "")


_RENDERERS: Final[dict[type[ev.Event], Callable[[Any], str | None]]] = {
    ev.Message: lambda e: f"{e.sender}: {e.text}",
    ev.Action: lambda e: f"* {e.sender} {e.text}",
    ev.Private: _private,
    ev.Replay: _replay,
    ev.Joined: lambda e: f"*** {e.nick} joined {e.room}",
    ev.Parted: _parted,
    ev.Left: _left,
    ev.Renamed: lambda e: f"*** {e.old} is now known as {e.new}",
    ev.Topic: _topic,
    ev.Welcome: _welcome,
    ev.WhoReply: _who,
    ev.RoomList: _rooms,
    ev.Reply: lambda e: f"* {e.text}",
    ev.Error: lambda e: f"* error ({e.code.slug}): {e.detail}",
    ev.Goodbye: _goodbye,
}

#: Events said in a room, whose line starts with ``[#room] `` away from it; the
#: room notices name their room in the line already.
SAID: Final = (ev.Message, ev.Action)


def render(event: ev.Event, here: str | None = None) -> str | None:
    """The line a person sees for ``event``, or None if people never see it (pings).

    Args:
        here: the reader's current room; a message or action from another room
            starts with that room in brackets.
    """
    renderer = _RENDERERS.get(type(event))
    if renderer is None:
        return None
    line = renderer(event)
    if line is None or not isinstance(event, SAID):
        return line
    if event.history:
        line = f"[{hour(event.time)}] {line}"
    return line if event.room == here else f"[{event.room}] {line}"
