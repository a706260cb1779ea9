"""What a transport gives the front end: a way to connect, and the link it returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from common.chat.events import ClientEvent, ServerEvent


class ConnectError(Exception):
    """One-line reason the client could not join (refused nick, unreachable server)."""


class Link(Protocol):
    """A registered session with a chat server, as a transport keeps it."""

    def send(self, event: ClientEvent) -> None:
        """Send ``event`` to the server; thread-safe, never blocks long."""

    def close(self, reason: str = "") -> None:
        """Say ``Goodbye(reason)`` if still open, wait (bounded) until the server
        has it, and release everything. Safe to call more than once."""


#: ``connect(host, port, nick, on_event, on_closed)``: register and return once
#: ``Welcome`` arrived, or raise ``ConnectError``. Afterwards the transport's
#: receive thread calls ``on_event`` for every server event (``Welcome`` first)
#: and ``on_closed(reason)`` once when the link ends.
Connect = Callable[[str, int, str, Callable[[ServerEvent], None], Callable[[str], None]], Link]
