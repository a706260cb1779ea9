"""Helpers for the real-socket UDP tests: awaitable clients, raw sessions, subprocesses.

Every wait is on a condition with a generous bound; a test asserts on what
happened, never on how long it took.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.chat import events as ev
from common.session.opener import hello as hello_datagram
from common.wire.framing import decode_datagram
from udpchat.client import udp_connect

ROOT = Path(__file__).resolve().parents[2]

#: Bound of every wait in these tests, in seconds: far beyond what a loaded
#: machine needs, so hitting it means something is broken.
PATIENCE = 20.0


class Member:
    """A client made with ``udp_connect`` whose events are kept for the test."""

    def __init__(self, address: tuple[str, int], nick: str, **kwargs: Any) -> None:
        self.nick = nick
        self.events: list[ev.ServerEvent] = []
        self.closed: str | None = None
        self._cond = threading.Condition()
        self.link = udp_connect(address[0], address[1], nick, self._on_event, self._on_closed, **kwargs)

    def _on_event(self, event: ev.ServerEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def _on_closed(self, reason: str) -> None:
        with self._cond:
            self.closed = reason
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Member], bool], timeout: float = PATIENCE) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _live(self) -> list[ev.Message]:
        """The messages said while this member was there (not replayed from
        the history), in the order received: its own echoed ones included."""
        return [e for e in self.events if isinstance(e, ev.Message) and not e.history]

    def texts(self, sender: str | None = None) -> list[str]:
        with self._cond:
            return [e.text for e in self._live() if sender in (None, e.sender)]

    def shared(self) -> list[ev.ServerEvent]:
        """The events every member sees alike: live messages and notices, not replies."""
        with self._cond:
            return [
                e
                for e in self.events
                if isinstance(e, ev.Joined | ev.Left | ev.Renamed) or (isinstance(e, ev.Message) and not e.history)
            ]

    def said_in(self, room: str) -> list[tuple[str, str]]:
        """(sender, text) of every live message from ``room``, in the order received."""
        with self._cond:
            return [(e.sender, e.text) for e in self._live() if e.room == room]

    def seqs(self, room: str) -> list[int]:
        """The seq of every live message from ``room``, in the order received."""
        with self._cond:
            return [e.seq for e in self._live() if e.room == room]

    def has(self, kind: type[ev.ServerEvent], **fields: object) -> bool:
        with self._cond:
            return any(isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()) for e in self.events)


@contextlib.contextmanager
def members(address: tuple[str, int], *nicks: str, see_joins: bool = True, **kwargs: Any) -> Iterator[list[Member]]:
    """Clients that all joined before the block; closed after it. ``see_joins``:
    also wait until each has seen the later ones join (not if notices may be lost)."""
    made: list[Member] = []
    try:
        for nick in nicks:
            made.append(Member(address, nick, **kwargs))
        # Everyone has seen everyone who came later join.
        for i, m in enumerate(made if see_joins else []):
            for later in nicks[i + 1 :]:
                assert m.wait_for(lambda m, n=later: m.has(ev.Joined, nick=n))
        yield made
    finally:
        for m in made:
            m.link.close()


def raw_session(address: tuple[str, int]) -> tuple[socket.socket, int]:
    """Open a session by hand; return the socket and the token the server gave."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(PATIENCE)
    sock.sendto(hello_datagram(b""), address)
    cookie = decode_datagram(sock.recv(2048))[0]
    assert isinstance(cookie, ev.Cookie)
    sock.sendto(hello_datagram(cookie.cookie), address)
    accept = decode_datagram(sock.recv(2048))[0]
    assert isinstance(accept, ev.Accept)
    return sock, accept.token


def python(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """A Python subprocess in the repository, text pipes, unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-bb", *args],
        cwd=ROOT,
        env=env,
        text=True,
        encoding="utf-8",
        **kwargs,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """Make sure ``proc`` is gone and its pipes closed."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=PATIENCE)
