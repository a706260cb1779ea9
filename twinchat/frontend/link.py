"""What a transport gives the front end: a way to connect, and the link it returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from common.chat.events import ClientEvent, ServerEvent
from common.wire.errors import ErrorCode


class ConnectError(Exception):
    """One-line reason the client could not join (refused nick, unreachable server).

    ``code`` is the server's error code when it refused us (or BAD_NICK for a
    nick refused before asking), so a front end can offer another nick."""

    def __init__(self, reason: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(reason)
        self.code = code


#: Refusals that another nick may get past.
NICK_REFUSALS: Final = frozenset({ErrorCode.NICK_TAKEN, ErrorCode.BAD_NICK})


class Link(Protocol):
    """A registered session with a chat server, as a transport keeps it."""

    def send(self, event: ClientEvent) -> None:
        """Send ``event`` to the server; thread-safe, never blocks long."""

    def close(self, reason: str = "") -> None:
        """Say ``Goodbye(reason)`` if still open, wait (bounded) until the server
        has it, and release everything. Safe to call more than once."""


#: ``connect(host, port, nick, on_event, on_closed)``: register and return once
#: ``Welcome`` arrived, or raise ``ConnectError``. Afterwards the transport's
#: receive thread calls ``on_event`` for every server event (``Welcome`` first, ``Pong`` too)
#: and ``on_closed(reason)`` once when the link ends.
Connect = Callable[[str, int, str, Callable[[ServerEvent], None], Callable[[str], None]], Link]


def connect_as(
    connect: Connect,
    host: str,
    port: int,
    nick: str,
    *,
    on_event: Callable[[ServerEvent], None],
    on_closed: Callable[[str], None],
    another: Callable[[str, ConnectError], str | None],
) -> Link:
    """``connect``, and while the nick is refused, again with ``another(nick,
    refusal)`` (None: give up). The retry lives here, above the transports,
    so that both clients offer it alike.

    Raises:
        ConnectError: the last refusal, or any other failure to join.
    """
    while True:
        try:
            return connect(host, port, nick, on_event, on_closed)
        except ConnectError as exc:
            if exc.code not in NICK_REFUSALS:
                raise
            next_nick = another(nick, exc)
            if next_nick is None:
                raise
            nick = next_nick
