"""What a typed line asks the client to do: send an event, or answer locally."""

from __future__ import annotations

from dataclasses import dataclass

from common.chat import events as ev
from common.chat.commands import HELP_LINES, parse_input
from common.wire.errors import RuleError


@dataclass(frozen=True, slots=True)
class Typed:
    """The outcome of one typed line.

    ``send`` goes to the server (a ``Goodbye`` means: quit); ``show`` is
    answered locally, rendered like server events (``/help``, a typo).
    """

    send: ev.ClientEvent | None = None
    show: tuple[ev.ServerEvent, ...] = ()


#: /help is answered without a round trip, so it works even while the link is busy.
_HELP: tuple[ev.ServerEvent, ...] = tuple(ev.Reply(line) for line in HELP_LINES)


def interpret(line: str) -> Typed:
    """Turn one typed line (without its newline) into what the client does."""
    try:
        event = parse_input(line)
    except RuleError as exc:
        return Typed(show=(ev.Error(exc.code, ev.scrub(exc.detail)),))
    if isinstance(event, ev.Help):
        return Typed(show=_HELP)
    return Typed(send=event)
