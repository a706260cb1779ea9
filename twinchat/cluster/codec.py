"""Room events as they travel on the bus: ``Posted`` to text and back.

A published payload is ``AT|BODY``. ``BODY`` is what the server wrote (or,
for the leave notices of a server that died, the script that cleaned up
after it), a JSON array describing one event::

    [kind, fields, rooms, origin, echo, to]

- ``kind``: the event's type (``Message``, ``Action``, ``Joined``, ``Parted``,
  ``Left``, ``Renamed``, ``Topic``, ``Private``);
- ``fields``: its fields in declaration order (a message's seq is 0: Redis gives it);
- ``rooms``: the keys of the rooms it is for (none for a ``Private``);
- ``origin``: ``SERVER|TOKEN``, who made it (empty if nobody);
- ``echo``: 1 if the origin is sent it too, else 0;
- ``to``: for a ``Private``, the nick key it is for (else empty).

``AT`` is what the script that ordered it put there: one seq per room,
comma-separated (``Posted.at``). A run of messages of one room ordered in
one call is one payload, ``FIRST|[event, event, ...]``: the messages are
numbered ``FIRST``, ``FIRST + 1``, ... in that order (one publish and one
parse for the run, not one per message).

Whatever does not decode (another program on the channel, a newer server)
raises ``BadPayload``: the listener logs and drops it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from common.chat import events as ev
from common.ports import Posted
from common.wire.errors import ProtocolError

#: The events the bus carries, by the name a payload gives them.
KINDS: Final[dict[str, type[ev.ServerEvent]]] = {
    cls.__name__: cls
    for cls in (ev.Message, ev.Action, ev.Joined, ev.Parted, ev.Left, ev.Renamed, ev.Topic, ev.Private)
}

#: The fields of each kind, in the order a payload lists them.
_FIELDS: Final = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in KINDS.items()}  # type: ignore[arg-type]

_NUMBERED: Final = (ev.Message, ev.Action)


class BadPayload(ValueError):
    """A payload on the bus that is not a room event of this chat."""


def origin(server: str, token: int) -> str:
    """How a payload names a member: its server and its token there."""
    return f"{server}|{token}" if token else ""


def body(posted: Posted, server: str) -> str:
    """The JSON a server publishes for ``posted`` (the script adds ``AT``)."""
    event = posted.event
    kind = type(event).__name__
    fields = [getattr(event, name) for name in _FIELDS[kind]]
    return json.dumps(
        [kind, fields, posted.rooms, origin(server, posted.origin), int(posted.echo), posted.to],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def bodies(posted: list[Posted], server: str) -> str:
    """The JSON of a run of one room's messages, ordered in one call."""
    return "[" + ",".join(body(each, server) for each in posted) + "]"


def decode(payload: str | bytes, server: str) -> list[Posted]:
    """The events in a payload, in order; ``origin`` is the token only if
    the member is ``server``'s (0 otherwise).

    Raises:
        BadPayload: it is not a payload of this chat's.
    """
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        head, bar, rest = text.partition("|")
        if not bar:
            raise BadPayload("no '|' after the seqs")
        at = tuple(int(seq) for seq in head.split(",")) if head else ()
        data = json.loads(rest)
        if data and isinstance(data[0], list):  # a run of messages of one room
            first = at[0] if len(at) == 1 else -1
            out = [_event(item, (first + i,), server) for i, item in enumerate(data)]
            if first < 1 or not all(isinstance(p.event, _NUMBERED) and len(p.rooms) == 1 for p in out):
                raise BadPayload("a run that is not of numbered messages of one room")
            if len({p.rooms for p in out}) != 1:
                raise BadPayload("a run of more than one room")
            return out
        return [_event(data, at, server)]
    except BadPayload:
        raise
    except (ValueError, KeyError, TypeError, IndexError, ProtocolError) as exc:
        raise BadPayload(f"not a room event ({type(exc).__name__}: {exc})") from None


def _event(data: Any, at: tuple[int, ...], server: str) -> Posted:
    name, fields, rooms, who, echo, to = data
    kind = KINDS[name]
    rooms = tuple(str(room) for room in rooms)
    to = str(to)
    if len(at) != len(rooms) or bool(rooms) == bool(to):
        raise BadPayload(f"{len(at)} seq(s) for {len(rooms)} room(s), for {to!r}")
    fields = list(fields)
    if kind in _NUMBERED:
        fields[3] = at[0]  # its seq: Redis numbered it
    event = kind(*fields)
    mine, _, token = str(who).rpartition("|")
    return Posted(rooms, event, int(token) if mine == server and token else 0, bool(echo), at, to)
