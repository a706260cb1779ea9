"""The client's half of the UDP handshake, with the clock passed in.

PROTOCOL.md, "Opening a session": the client sends a ``Hello`` padded to a
full datagram; the server answers with a stateless ``Cookie``; the client
sends the ``Hello`` again with the cookie; the server answers ``Accept``
with the session's token. Datagrams get lost, so an unanswered ``Hello`` is
sent again after ``HELLO_RETRY`` seconds, doubling up to ``HELLO_RETRY_MAX``
(a fresh cookie starts the doubling over). Both the chat client and the
benchmark's load clients open their sessions with this one object, and make
the session's channel with ``open_channel``.
"""

from __future__ import annotations

from typing import Final

from common.chat import events as ev
from common.session.reliability import Channel
from common.wire.framing import encode
from common.wire.limits import MAX_DATAGRAM

#: Seconds before an unanswered Hello is sent again, at first.
HELLO_RETRY: Final = 0.25

#: The longest wait between two Hellos.
HELLO_RETRY_MAX: Final = 1.0


def hello(cookie: bytes) -> bytes:
    """A ``Hello`` padded to a full datagram, as the server requires (no amplification)."""
    bare = len(encode(ev.Hello(cookie, b"")))
    return encode(ev.Hello(cookie, bytes(MAX_DATAGRAM - bare)))


class SessionOpener:
    """Drives the handshake: ``start``, then ``receive`` what arrives and
    ``poll`` when ``deadline`` passes, sending every datagram they return,
    until ``accepted`` is set."""

    __slots__ = ("_cookie", "_wait", "accepted", "deadline")

    def __init__(self) -> None:
        self._cookie = b""
        self._wait = HELLO_RETRY
        #: When ``poll`` next has a Hello to send again.
        self.deadline = 0.0
        #: The server's Accept, once it came.
        self.accepted: ev.Accept | None = None

    def start(self, now: float) -> bytes:
        """The first Hello."""
        self.deadline = now + self._wait
        return hello(self._cookie)

    def receive(self, first: ev.Event, now: float) -> bytes | None:
        """The first frame of a datagram from the server; returns the Hello to
        send in answer to a Cookie, or None."""
        if self.accepted is not None:
            return None
        if type(first) is ev.Accept:
            self.accepted = first
            return None
        if type(first) is ev.Cookie:
            self._cookie = first.cookie
            self._wait = HELLO_RETRY
            return self.start(now)
        return None

    def poll(self, now: float) -> bytes | None:
        """The Hello to send again if its answer is overdue, else None."""
        if self.accepted is not None or now < self.deadline:
            return None
        self._wait = min(2 * self._wait, HELLO_RETRY_MAX)
        return self.start(now)


def open_channel(
    accept: ev.Accept, now: float, *, keepalive_after: float, dead_after: float, split_bundles: bool = True
) -> Channel:
    """The reliability channel of the session ``accept`` opened, as its client keeps it."""
    return Channel(
        now,
        prefix=encode(ev.Session(accept.token)),
        reliable=not accept.unreliable,
        keepalive_after=keepalive_after,
        dead_after=dead_after,
        split_bundles=split_bundles,
    )
