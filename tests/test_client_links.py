"""What the front end relies on from both transports' links, over real sockets.

The front end offers another nick when the refusal's code says the nick was
the problem, and marks where an answer of several frames ends with a Ping
(PROTOCOL.md, "Answers of several frames"); so both clients must carry the
code on ConnectError and hand the Pong on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.wire.errors import ErrorCode
from twinchat.frontend import Connect, ConnectError, Link

WAIT = 10.0


class Listener:
    """Collects a link's events; a test waits for one that matches."""

    def __init__(self) -> None:
        self.events: list[ev.ServerEvent] = []
        self._changed = threading.Condition()

    def on_event(self, event: ev.ServerEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def on_closed(self, reason: str) -> None:
        pass

    def wait_for(self, match: Callable[[ev.ServerEvent], bool]) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(match(e) for e in self.events), WAIT)


def join(connect: Connect, address: tuple[str, int], nick: str) -> tuple[Link, Listener]:
    listener = Listener()
    return connect(address[0], address[1], nick, listener.on_event, listener.on_closed), listener


def test_a_refused_nick_carries_its_code(live_server: tuple[Connect, tuple[str, int]]) -> None:
    connect, address = live_server
    link, _ = join(connect, address, "ann")
    try:
        with pytest.raises(ConnectError) as taken:
            join(connect, address, "ANN")
        assert taken.value.code is ErrorCode.NICK_TAKEN
        with pytest.raises(ConnectError) as bad:
            join(connect, address, "-dash")
        assert bad.value.code is ErrorCode.BAD_NICK
    finally:
        link.close()


def test_the_pong_after_help_follows_its_last_reply(live_server: tuple[Connect, tuple[str, int]]) -> None:
    connect, address = live_server
    link, listener = join(connect, address, "ann")
    try:
        link.send(ev.Help())
        link.send(ev.Whisper("nobody", "psst"))
        link.send(ev.Ping(7))
        assert listener.wait_for(lambda e: e == ev.Pong(7))
        answers = [e for e in listener.events if isinstance(e, ev.Reply | ev.Error | ev.Pong)]
        assert answers == [
            *(ev.Reply(line) for line in HELP_LINES),
            ev.Error(ErrorCode.NO_SUCH_NICK, "nobody is called nobody"),
            ev.Pong(7),
        ]
    finally:
        link.close()
