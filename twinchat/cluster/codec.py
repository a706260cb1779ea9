"""Room events as they travel on the bus: a ``Posted`` to text and back.

A published payload is ``AT|BODY``: ``AT`` the comma-separated seqs that
Redis's script put there as it ordered the event (``Posted.at``, one per
room), ``BODY`` a JSON object the server wrote (or, for the leave notices of
a server that died, the script that cleaned up after it):

- ``k``: the event's type (``Message``, ``Action``, ``Joined``, ``Parted``,
  ``Left``, ``Renamed``, ``Topic``);
- ``f``: its fields in declaration order (a message's seq is 0: it is ``AT``);
- ``r``: the keys of the rooms it is for, in ``AT``'s order;
- ``o``: its origin, ``SERVER|TOKEN`` (empty if none);
- ``e``: 1 if the origin is sent it too, else 0;
- ``t``: for a ``Private`` (no room, no ``AT``), the nick key it is for.

Whatever does not decode (another program on the channel, a newer server)
raises ``BadPayload``: the listener logs and drops it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Final

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
        {
            "k": kind,
            "f": fields,
            "r": list(posted.rooms),
            "o": origin(server, posted.origin),
            "e": int(posted.echo),
            "t": posted.to,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode(payload: str | bytes, server: str) -> Posted:
    """The ``Posted`` in a payload; ``origin`` is the token only if the
    member is ``server``'s (0 otherwise).

    Raises:
        BadPayload: it is not one.
    """
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        head, bar, rest = text.partition("|")
        at = tuple(int(seq) for seq in head.split(",")) if head else ()
        data = json.loads(rest)
        kind = KINDS[data["k"]]
        rooms = tuple(str(room) for room in data["r"])
        fields = list(data["f"])
        to = str(data.get("t") or "")
        if not bar or len(at) != len(rooms) or bool(rooms) == bool(to):
            raise BadPayload(f"{len(at)} seq(s) for {len(rooms)} room(s), for {to!r}")
        if kind in (ev.Message, ev.Action):
            fields[3] = at[0]  # its seq: Redis numbered it
        event = kind(*fields)
        mine, _, token = str(data["o"]).rpartition("|")
        return Posted(rooms, event, int(token) if mine == server and token else 0, bool(data["e"]), at, to)
    except BadPayload:
        raise
    except (ValueError, KeyError, TypeError, IndexError, ProtocolError) as exc:
        raise BadPayload(f"not a room event ({type(exc).__name__}: {exc})") from None
