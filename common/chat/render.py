"""Events as one line of text each: the rendering every plain-text user sees.

A chat message from alice is ``alice: T``; every other line starts with ``*``
(``* alice waves``, ``*alice* psst``, ``*** bob joined``), so a script can tell
what people said from what the server said by the first character. Texts
cannot hold line breaks or control characters (``common.chat.events`` refuses
them), so one event is always one line and a peer cannot forge another's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from common.chat import events as ev


def _left(e: ev.Left) -> str:
    return f"*** {e.nick} left ({e.reason})" if e.reason else f"*** {e.nick} left"


def _goodbye(e: ev.Goodbye) -> str:
    return f"*** disconnected: {e.reason}" if e.reason else "*** disconnected"


def _who(e: ev.WhoReply) -> str:
    return "* online: " + ", ".join(e.nicks) + (" ..." if e.more else "")


def _welcome(e: ev.Welcome) -> str:
    others = e.online - 1
    company = "nobody else is here" if others == 0 else f"{others} other{'s' if others > 1 else ''} online"
    return f"*** welcome, {e.nick}: {company}"


_RENDERERS: Final[dict[type[ev.Event], Callable[[Any], str]]] = {
    ev.Message: lambda e: f"{e.sender}: {e.text}",
    ev.Action: lambda e: f"* {e.sender} {e.text}",
    ev.Private: lambda e: f"*{e.sender}* {e.text}",
    ev.Joined: lambda e: f"*** {e.nick} joined",
    ev.Left: _left,
    ev.Renamed: lambda e: f"*** {e.old} is now known as {e.new}",
    ev.Welcome: _welcome,
    ev.WhoReply: _who,
    ev.Reply: lambda e: f"* {e.text}",
    ev.Error: lambda e: f"* error ({e.code.slug}): {e.detail}",
    ev.Goodbye: _goodbye,
}


def render(event: ev.Event) -> str | None:
    """The line a person sees for ``event``, or None if people never see it (pings)."""
    renderer = _RENDERERS.get(type(event))
    return None if renderer is None else renderer(event)
