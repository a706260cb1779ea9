"""Fan-out: the one delivery path from the hub's decisions to every recipient.

Every transport hands the hub's deliveries to ``deliver`` under the hub lock,
so the order the hub decided is the order each connection queues. The
recipients are the transport's connections, seen through
``common.ports.Recipient``: push encoded bytes, say when full, close after the
last event.

Strategy, for the hot path (one sender's messages to a busy room):

- consecutive deliveries to the same audience form a *run*; a run is encoded
  once (a frame per event, the frames joined once), whatever the number of
  recipients, and each recipient gets the whole run in one push;
- a text-dialect recipient gets lines rendered by its own view, since the
  line depends on its current room; lines are rendered once per current room
  in a run, not once per recipient, unless the run changes views (someone's
  own join or part), which is rare and rendered one recipient at a time;
- one slow-consumer policy for every transport: a recipient whose push is
  refused (its queue is full) gets nothing more but ``Error(SLOW_CONSUMER)``
  and its ``Goodbye``, queued past the limit as the run that ends with its
  last event (they are small, and the client should learn why it was cut off
  rather than find a gap), and the others are told it left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.view import ClientView
from common.ports import Recipient
from common.wire.errors import ErrorCode
from common.wire.framing import encode

R = TypeVar("R", bound=Recipient)

#: Events that can change the view of a recipient they concern (its own
#: nick, rooms, current room): a run holding one is rendered per recipient.
_VIEW_CHANGES: Final = frozenset({ev.Welcome, ev.Renamed, ev.Joined, ev.Parted})

#: Deliveries passed to ``notice``: sessions starting, renaming and ending.
_NOTICED: Final = frozenset({ev.Welcome, ev.Renamed, ev.Goodbye})

#: What a slow consumer is told before its Goodbye.
SLOW_DETAIL: Final = "too slow to read the chat"


class Encoded:
    """A run's bytes for one dialect: the parts, and their join made once."""

    __slots__ = ("_data", "parts")

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        return self._data


#: Called for every delivery that starts, renames or ends sessions (Welcome, Renamed, Goodbye), to log it.
Notice = Callable[[Delivery[R]], None]


class Tally:
    """What the fan-out has pushed, for the metrics: plain counts, bumped
    under the hub lock that ``deliver`` runs under, so they need no lock of
    their own. (Slow consumers are counted where they are kicked: the hub.)"""

    __slots__ = ("pushed",)

    def __init__(self) -> None:
        #: Events (or a text user's lines) pushed, counted once per recipient.
        self.pushed = 0


def deliver(
    hub: Hub[R], deliveries: list[Delivery[R]], notice: Notice[R] | None = None, tally: Tally | None = None
) -> None:
    """Push ``deliveries`` to their recipients, in order (call it under the hub lock).

    Recipients that overflow are kicked as slow consumers, and what that
    causes (their farewell, the others' leave notices) is delivered too.
    ``tally``, if given, counts what was pushed.
    """
    refused: dict[R, None] = {}
    while deliveries:
        overflowed: list[R] = []
        pushed = 0
        for start, stop in _runs(deliveries):
            pushed += _push_run(deliveries[start:stop], refused, overflowed, notice)
        if tally is not None:
            tally.pushed += pushed
        deliveries = []
        for conn in overflowed:
            deliveries += hub.kick(conn, ErrorCode.SLOW_CONSUMER, SLOW_DETAIL)


def _runs(deliveries: Sequence[Delivery[R]]) -> list[tuple[int, int]]:
    """Split into runs of consecutive deliveries to the same audience; a last
    delivery ends its run (nothing may follow it to those recipients)."""
    out = []
    start, count = 0, len(deliveries)
    while start < count:
        first = deliveries[start]
        recipients = first.recipients
        stop = start + 1
        if not first.last:
            while stop < count:
                nxt = deliveries[stop]
                if nxt.recipients is not recipients and nxt.recipients != recipients:
                    break
                stop += 1
                if nxt.last:
                    break
        out.append((start, stop))
        start = stop
    return out


def _push_run(
    run: list[Delivery[R]],
    refused: dict[R, None],
    overflowed: list[R],
    notice: Notice[R] | None,
) -> int:
    """Push one run to its recipients; return the events (or lines) pushed."""
    pushed = 0
    last = run[-1].last
    # One pass over the run's kinds of event serves both questions below; a
    # run of messages (the common case) answers no to both.
    kinds = {type(d.event) for d in run}
    if notice is not None and not kinds.isdisjoint(_NOTICED):
        for delivery in run:
            if type(delivery.event) in _NOTICED:
                notice(delivery)
    framed: Encoded | None = None
    lines: dict[str | None, Encoded] = {}
    changes_views = not kinds.isdisjoint(_VIEW_CHANGES)
    for conn in run[0].recipients:
        if conn in refused and not last:
            continue  # cut off: only its farewell still goes to it
        view = conn.view
        if view is None:
            if framed is None:
                framed = Encoded([encode(d.event) for d in run])
            batch = framed
        elif changes_views:
            batch = Encoded(_render_each(view, run))
        else:
            cached = lines.get(view.current)
            if cached is None:
                cached = lines[view.current] = Encoded(_render_each(view, run))
            batch = cached
        if not batch.parts:
            continue  # only pings for a person, who cannot answer them
        accepted = conn.push(batch, last)
        pushed += len(batch.parts) if accepted else 0
        if not accepted and conn not in refused:
            refused[conn] = None
            overflowed.append(conn)
    return pushed


def _render_each(view: ClientView, run: list[Delivery[R]]) -> list[bytes]:
    """The run as ``view``'s lines; the view follows each event as it goes."""
    out = []
    for delivery in run:
        view.observe(delivery.event)
        line = view.render(delivery.event)
        if line is not None:
            out.append((line + "\n").encode("utf-8"))
    return out
