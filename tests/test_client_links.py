"""What the front end relies on from both transports' links, over real sockets.

The front end offers another nick when the refusal's code says the nick was
the problem, and marks where an answer of several frames ends with a Ping
(PROTOCOL.md, "Answers of several frames"); so both clients must carry the
code on ConnectError and hand the Pong on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

import tcpchat.server
import udpchat.server
from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.wire.errors import ErrorCode
from tcpchat.client import tcp_connect
from twinchat.frontend import Connect, ConnectError, Link
from udpchat.client import udp_connect

WAIT = 10.0


@pytest.fixture(params=["tcp", "udp"])
def transport(request: pytest.FixtureRequest) -> Iterator[tuple[Connect, tuple[str, int]]]:
    server: tcpchat.server.ChatServer | udpchat.server.ChatServer
    if request.param == "tcp":
        server = tcpchat.server.ChatServer("127.0.0.1", 0, rate_limit=0)
        thread = threading.Thread(target=server.serve_forever, name="test server")
        thread.start()
        yield tcp_connect, server.address
        server.shutdown()
        thread.join(WAIT)
    else:
        server = udpchat.server.ChatServer(port=0, rate_limit=0)
        server.start()
        yield udp_connect, server.address
        server.shutdown()


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


def test_a_refused_nick_carries_its_code(transport: tuple[Connect, tuple[str, int]]) -> None:
    connect, address = transport
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


def test_the_pong_after_help_follows_its_last_reply(transport: tuple[Connect, tuple[str, int]]) -> None:
    connect, address = transport
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
