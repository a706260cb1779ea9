"""The UDP chat client: ``python -m udpchat.client --host H --port P --nick N``.

This module is the UDP edge of the client; everything a person sees is the
shared front end (``frontend``). ``udp_connect`` opens a session (the
handshake of PROTOCOL.md: padded ``Hello``, ``Cookie``, padded ``Hello`` with
the cookie, ``Accept``), registers the nick over it and returns a ``UdpLink``
with two threads around one ``common.session.reliability.Channel``:

- the **receive thread** (the one the assignment asks for) feeds each datagram
  to the channel, sends the acknowledgement it makes due at once, answers the
  server's pings and hands every event the channel releases, in order, to the
  front end;
- the **pump thread** sends what the user typed (woken by ``send``, so a
  paste is packed into few datagrams) and, every ``TICK`` seconds, runs the
  channel's timers (retransmission, keepalive, the dead-server verdict).

Both send holding a send lock taken under the channel lock, so datagrams leave
in the order the channel made them.

Closing: ``close(reason)`` sends a ``Goodbye`` through the channel. The server
handles what a session sends in order and answers a Goodbye with its own only
after everything sent before it, so once that answer arrives the server has it
all; the client then acknowledges it and lets go.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from common.chat import events as ev
from common.session.opener import SessionOpener, open_channel
from common.session.reliability import Channel
from common.wire.errors import ErrorCode, RemoteProtocolError, RuleError
from common.wire.framing import decode_datagram, decode_frame, encode
from common.wire.limits import DEFAULT_PORT
from twinchat import frontend
from twinchat.frontend import ConnectError

#: Seconds to open a session and be welcomed.
CONNECT_TIMEOUT: Final = 5.0

#: Seconds ``close`` waits for the server's answer to the Goodbye (a long paste
#: held back by flood control needs a while).
CLOSE_TIMEOUT: Final = 10.0

#: Unreliable mode: seconds between two tries of the Register, and how long
#: ``close`` waits for the answer to its Goodbye (which may well be lost).
REGISTER_RETRY: Final = 0.25
UNRELIABLE_CLOSE: Final = 1.0

#: Seconds without sending before the client sends a keepalive, and of silence
#: from the server before it is given up. A server killed outright is noticed
#: 6 to 8 s after it last spoke (it was 10 to 15 s). Within those 8 s an
#: unanswered keepalive is sent some 8 times (the retransmission timer doubles
#: up to 2 s), so a live server is taken for dead only if all 8 round trips
#: fail: 0.36 ** 8 under 20% loss each way, about once in 2 hours idle, and
#: under 10% loss once in some 300 hours. The server waits far longer
#: (--idle-timeout): the side that gives up first is the one a person watches.
KEEPALIVE_AFTER: Final = 2.0
DEAD_AFTER: Final = 8.0

#: Seconds between two runs of the channel's timers.
TICK: Final = 0.02

#: Bytes asked of one recv: more than MAX_DATAGRAM, so oversize ones are seen.
RECV_SIZE: Final = 2048

#: Bytes of kernel receive buffer asked for: a fan-out burst waits there.
SOCKET_BUFFER: Final = 4 << 20

#: Errors that refuse a registration: connect() reports them.
_REFUSALS: Final = frozenset(
    {
        ErrorCode.BAD_NICK,
        ErrorCode.NICK_TAKEN,
        ErrorCode.SERVER_FULL,
        ErrorCode.NEEDS_PASSWORD,
        ErrorCode.BAD_PASSWORD,
        ErrorCode.TOO_MANY_TRIES,
    }
)

#: What the client says first, on a terminal: nothing on the way is secret.
UNENCRYPTED: Final = "note: UDP sessions are not encrypted: what you type (passwords included) can be read on the way"


class UdpLink:
    """A UDP session with a chat server; see the module docstring."""

    def __init__(
        self,
        sock: socket.socket,
        accept: ev.Accept,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
        *,
        keepalive_after: float = KEEPALIVE_AFTER,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self._sock = sock
        self._on_event = on_event
        self._on_closed = on_closed
        self._channel = open_channel(accept, time.monotonic(), keepalive_after=keepalive_after, dead_after=dead_after)
        self.token = accept.token
        self.unreliable = accept.unreliable
        self._lock = threading.Lock()  # the channel
        self._send_lock = threading.Lock()  # taken under the channel lock, held while sending
        self._wake = threading.Condition(self._lock)  # the pump waits here
        self._room = threading.Condition(self._lock)  # send() waits here for backlog room
        self._dirty = False
        self._stopped = False  # the threads end (lock)
        self._closing = False  # close() was called
        self._close_lock = threading.Lock()
        self._ended = threading.Event()  # the session is over, for whatever reason
        self._end_reason = ""
        self._server_gone = False  # the server said goodbye or stopped answering
        self._closed_told = False
        # Registration, before connect() returns.
        self._registered = threading.Event()
        self._go = threading.Event()  # connect() is about to return: deliver events
        self._refusal: str | None = None
        self._refusal_code: ErrorCode | None = None
        #: Datagrams that were not this session's and were ignored.
        self.ignored = 0
        self._receiver = threading.Thread(target=self._receive_loop, name="udpchat-receive", daemon=True)
        self._pump = threading.Thread(target=self._pump_loop, name="udpchat-pump", daemon=True)
        self._receiver.start()
        self._pump.start()

    # --- the Link interface ------------------------------------------------------

    def send(self, event: ev.ClientEvent) -> None:
        """Queue ``event`` for the server; thread-safe. Waits only while the
        backlog is full (the server is not keeping up), and at most CLOSE_TIMEOUT."""
        frame = encode(event)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        with self._lock:
            while not self._stopped and not self._channel.send(frame):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._room.wait(left)
            if not self._stopped:
                self._poke()

    def close(self, reason: str = "") -> None:
        """Say Goodbye if still open, wait (bounded) for the server's answer, release."""
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        if not self._ended.is_set():
            self.send(ev.Goodbye(ev.scrub(reason)))
            if threading.current_thread() is not self._receiver:
                self._ended.wait(UNRELIABLE_CLOSE if self.unreliable else CLOSE_TIMEOUT)
        elif not self._server_gone:
            # Ended on our side (a front end's callback failed): tell the server
            # once, best effort, rather than leave it to the idle timeout.
            with self._lock:
                self._channel.send(encode(ev.Goodbye(ev.scrub(reason))))
                datagrams = self._channel.datagrams(time.monotonic())
                self._send_lock.acquire()
            self._send_all(datagrams)
        self._end("connection closed")
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the receive thread
        for thread in (self._receiver, self._pump):
            if thread is not threading.current_thread():
                thread.join(CLOSE_TIMEOUT)
        self._sock.close()
        self._tell_closed()

    # --- for tests and benchmarks ------------------------------------------------

    @property
    def flushed(self) -> bool:
        """Everything sent so far has been acknowledged by the server."""
        with self._lock:
            return self._channel.flushed

    @property
    def channel(self) -> Channel:
        """The reliability state (read it under no assumption of stability)."""
        return self._channel

    # --- threads -------------------------------------------------------------------

    def _poke(self) -> None:
        """The channel has something to send: wake the pump (lock held)."""
        if not self._dirty:
            self._dirty = True
            self._wake.notify()

    def _end(self, reason: str) -> None:
        """The session is over: stop the threads (their sockets stay open for close)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._end_reason = reason
            self._wake.notify_all()
            self._room.notify_all()
        self._ended.set()
        self._registered.set()

    def _tell_closed(self) -> None:
        with self._lock:
            if self._closed_told:
                return
            self._closed_told = True
        if self._go.is_set():
            self._on_closed(self._end_reason)

    def _send_all(self, datagrams: list[bytes]) -> None:
        """Send, then release the send lock, which the caller took under the
        channel lock: datagrams leave in the order the channel made them."""
        try:
            for datagram in datagrams:
                with contextlib.suppress(OSError):
                    self._sock.send(datagram)
        finally:
            self._send_lock.release()

    def _pump_loop(self) -> None:
        while True:
            with self._lock:
                if not self._dirty and not self._stopped:
                    self._wake.wait(TICK)
                if self._stopped:
                    return
                self._dirty = False
                now = time.monotonic()
                datagrams = self._channel.datagrams(now)
                dead = self._channel.is_dead(now)
                self._room.notify_all()
                self._send_lock.acquire()
            self._send_all(datagrams)
            if dead:
                self._server_gone = True
                self._end("the server stopped answering")
                self._tell_closed()
                return

    def _receive_loop(self) -> None:
        recv = self._sock.recv
        token = self.token
        try:
            while not self._stopped:
                try:
                    data = recv(RECV_SIZE)
                except OSError:
                    # ECONNREFUSED from an ICMP error: the server may be gone;
                    # the dead-server verdict decides.
                    if self._stopped:
                        return
                    continue
                if not data:
                    return  # close() shut the socket down
                try:
                    frames = decode_datagram(data)
                    first = frames[0]
                    if type(first) is not ev.Session or first.token != token:
                        self.ignored += 1  # a late Cookie or Accept, or not ours
                        continue
                    with self._lock:
                        now = time.monotonic()
                        chunks = self._channel.receive(frames[1:], now)
                        # The ack (and what the window now admits) goes out from
                        # here at once, rather than after a hand-off to the pump.
                        replies = self._channel.datagrams(now) if self._channel.wants_to_send else []
                        if replies:
                            self._room.notify_all()
                            self._send_lock.acquire()
                except RemoteProtocolError:
                    self.ignored += 1
                    continue
                if replies:
                    self._send_all(replies)
                for chunk in chunks:
                    if not self._dispatch(chunk):
                        return
        except Exception as exc:  # a front end's callback failed: end the link, say why
            self._end(f"{frontend.link.CLIENT_ERROR}: {exc!r}")
        finally:
            self._tell_closed()

    def _dispatch(self, chunk: bytes) -> bool:
        """Hand one frame to the front end; False when the session is over."""
        try:
            event = decode_frame(chunk)
        except RemoteProtocolError:
            return True  # a frame we cannot read; the session goes on
        if type(event) is ev.Ping:
            self.send(ev.Pong(event.nonce))
            return True
        if not isinstance(event, ev.ServerEvent):
            return True  # a Pong goes on: the front end's Ping marks where an answer ends
        if not self._go.is_set():
            # Still registering: connect() is waiting for the outcome.
            if type(event) is ev.Welcome:
                self._registered.set()
                while not self._go.wait(TICK):
                    if self._stopped:
                        return False  # connect() gave up meanwhile
            elif type(event) is ev.Error and event.code in _REFUSALS:
                self._refusal = f"refused: {event.detail} ({event.code.slug})"
                self._refusal_code = event.code
                self._registered.set()
                return True
            elif type(event) is ev.Goodbye:
                self._server_gone = True
                self._refusal = self._refusal or f"refused: {event.reason or 'the server said goodbye'}"
                self._acknowledge_last()
                self._end(self._refusal)
                return False
            else:
                return True
        if type(event) is ev.Goodbye:
            self._server_gone = True
            self._acknowledge_last()
            self._on_event(event)
            self._end(event.reason or "disconnected")
            return False
        self._on_event(event)
        return True

    def _abandon(self) -> None:
        """Giving up before the session started: say Goodbye, best effort.

        The server may have registered the nick already (only its Welcome or
        our acks were lost); without a Goodbye it would hold the nick for a
        client that has left. Sent twice, since nobody waits for the answer.
        """
        with self._lock:
            if self._stopped or self._server_gone:
                return
            self._channel.send(encode(ev.Goodbye("gave up waiting for the server")), force=True)
            datagrams = self._channel.datagrams(time.monotonic())
            self._send_lock.acquire()
        self._send_all(datagrams + datagrams)

    def _acknowledge_last(self) -> None:
        """Acknowledge the server's Goodbye at once (twice: the server keeps
        the session until it hears, and nobody will answer a lost ack)."""
        with self._lock:
            datagrams = self._channel.datagrams(time.monotonic())
            self._send_lock.acquire()
        self._send_all(datagrams + datagrams)


def _open_session(sock: socket.socket, where: str, deadline: float) -> ev.Accept:
    """The handshake (``common.session.opener``), until Accept or the deadline."""
    opener = SessionOpener()
    datagram: bytes | None = opener.start(time.monotonic())
    refused = False
    while opener.accepted is None:
        now = time.monotonic()
        if now >= deadline:
            if refused:
                raise ConnectError(f"cannot reach {where}: nothing listens there")
            raise ConnectError(f"{where} did not answer")
        if datagram is not None:
            with contextlib.suppress(OSError):
                sock.send(datagram)
        sock.settimeout(max(0.001, min(opener.deadline, deadline) - now))
        try:
            frames = decode_datagram(sock.recv(RECV_SIZE))
        except TimeoutError:
            datagram = opener.poll(time.monotonic())
            continue
        except ConnectionRefusedError:
            # An ICMP port unreachable: retry at the next deadline all the same.
            refused = True
            datagram = None
            continue
        except RemoteProtocolError:
            raise ConnectError(f"{where} does not speak twinchat") from None
        except OSError as exc:
            raise ConnectError(f"cannot reach {where}: {exc.strerror or exc}") from None
        datagram = opener.receive(frames[0], time.monotonic())
    return opener.accepted


def udp_connect(
    host: str,
    port: int,
    nick: str,
    on_event: Callable[[ev.ServerEvent], None],
    on_closed: Callable[[str], None],
    *,
    timeout: float = CONNECT_TIMEOUT,
    keepalive_after: float = KEEPALIVE_AFTER,
    dead_after: float = DEAD_AFTER,
    password: str = "",
    resume: bool = False,
) -> UdpLink:
    """Open a session with a twinchat UDP server and register ``nick``.

    Args:
        password: the nick's password, if it is registered (UDP is not
            encrypted: the front end asks before sending it off this machine).
        resume: coming back after a lost link: the server puts us in no
            room, and the front end rejoins its own.

    Raises:
        ConnectError: the nick is invalid or refused (a registered nick
            without its password too: NEEDS_PASSWORD, BAD_PASSWORD,
            TOO_MANY_TRIES), the server is full, unreachable or silent, or it
            does not speak twinchat.
    """
    try:
        register = ev.Register(nick, password, resume)
    except RuleError as exc:
        what = "password" if exc.code is ErrorCode.BAD_PASSWORD else f"nick {nick!r}"
        raise ConnectError(f"invalid {what}: {exc.detail}", code=exc.code) from None
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except OSError as exc:
        raise ConnectError(f"cannot reach {where}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    link: UdpLink | None = None
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        # A connected socket hears only the server, and hears ICMP errors.
        sock.connect(addr)
        accept = _open_session(sock, where, deadline)
        sock.settimeout(None)
        link = UdpLink(sock, accept, on_event, on_closed, keepalive_after=keepalive_after, dead_after=dead_after)
        link.send(register)
        # Unreliable mode: nothing retransmits the Register (or the Welcome), so
        # repeat it until answered; the server welcomes a repeated one again.
        while not link._registered.wait(min(REGISTER_RETRY, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise ConnectError(f"{where} did not answer")
            if link.unreliable:
                link.send(register)
        if link._refusal is not None or link._ended.is_set():
            raise ConnectError(
                link._refusal or link._end_reason or f"{where} ended the session", code=link._refusal_code
            )
    except BaseException:
        if link is not None:
            link._abandon()
            link._end("")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            link._receiver.join(1.0)
            link._pump.join(1.0)
        sock.close()
        raise
    link._go.set()  # the receive thread may now hand the Welcome on
    return link


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the exit code."""
    return frontend.main(
        argv, connect=udp_connect, prog="udpchat-client", default_port=DEFAULT_PORT, notice=UNENCRYPTED
    )


if __name__ == "__main__":
    sys.exit(main())
