"""The TCP chat client: ``python -m tcpchat.client --host H --port P --nick N``.

This module is the TCP edge of the client; everything a person sees is the
shared front end (``frontend``). ``tcp_connect`` registers and returns a
``TcpLink`` with two threads:

- the **receive thread** (the one the assignment asks for) decodes what the
  server sends, answers its pings, and hands every event to the front end;
- a **send thread** drains an unbounded queue in batches, so ``send`` never
  blocks the UI even while the server holds the client back (flood control
  works by TCP backpressure).

Closing: ``close(reason)`` queues a ``Goodbye``; the server answers with its
own ``Goodbye`` only after everything sent before it, so waiting for that
answer (bounded by ``CLOSE_TIMEOUT``) is waiting until the server has it all.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from common.chat import events as ev
from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError, RuleError
from common.wire.framing import END_OF_STREAM, NEED_DATA, StreamDecoder, encode
from common.wire.limits import DEFAULT_PORT
from tcpchat.tls import TlsLink, TlsSocket
from twinchat import frontend
from twinchat.frontend import ConnectError

#: Seconds to reach the server and be welcomed.
CONNECT_TIMEOUT: Final = 10.0

#: Seconds ``close`` waits for the server to take what is queued and answer
#: the Goodbye (a long paste held back by flood control needs a while).
CLOSE_TIMEOUT: Final = 10.0

_STOP: Final = object()

#: The link's socket: a plain one, or one carrying TLS (``tcpchat.tls``),
#: whose recv and sendall may run on the two threads at once all the same.
_Socket = socket.socket | TlsSocket


class TcpLink:
    """A registered TCP session; see the module docstring."""

    def __init__(
        self,
        sock: _Socket,
        decoder: StreamDecoder,
        welcome: ev.Welcome,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self._sock = sock
        self._decoder = decoder
        self._on_event = on_event
        self._on_closed = on_closed
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closing = False
        self._close_lock = threading.Lock()
        self._ended = threading.Event()  # the receive thread is done
        self._goodbye: str | None = None  # the reason of the server's Goodbye
        self._sender = threading.Thread(target=self._send_loop, name="tcpchat-send", daemon=True)
        self._receiver = threading.Thread(
            target=self._receive_loop, args=(welcome,), name="tcpchat-receive", daemon=True
        )
        self._sender.start()
        self._receiver.start()

    def send(self, event: ev.ClientEvent) -> None:
        """Queue ``event`` for the server; thread-safe, never blocks."""
        if not self._closing:
            self._outbox.put(event)

    def close(self, reason: str = "") -> None:
        """Say Goodbye if still open, wait (bounded) for the server's answer, release."""
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        if not self._ended.is_set():
            self._outbox.put(ev.Goodbye(ev.scrub(reason)))
        self._outbox.put(_STOP)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        self._sender.join(CLOSE_TIMEOUT)
        if threading.current_thread() is not self._receiver:
            self._ended.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes both threads if they still wait
        for thread in (self._sender, self._receiver):
            if thread is not threading.current_thread():
                thread.join(CLOSE_TIMEOUT)
        self._sock.close()

    def _send_loop(self) -> None:
        get, get_nowait = self._outbox.get, self._outbox.get_nowait
        try:
            while True:
                batch = [get()]
                with contextlib.suppress(queue.Empty):
                    while batch[-1] is not _STOP:
                        batch.append(get_nowait())
                data = b"".join(encode(e) for e in batch if isinstance(e, ev.Event))
                if data:
                    self._sock.sendall(data)
                if batch[-1] is _STOP:
                    return
        except OSError:
            pass  # the receive thread reports the end of the link

    def _receive_loop(self, welcome: ev.Welcome) -> None:
        reason = "connection closed by the server"
        try:
            self._on_event(welcome)
            while True:
                try:
                    item = self._decoder.next_event()
                except FrameRejected:
                    continue  # one frame we cannot read; the stream goes on
                if item is NEED_DATA:
                    self._decoder.feed(self._sock.recv(1 << 16))
                elif item is END_OF_STREAM:
                    break
                elif isinstance(item, ev.ServerEvent):
                    if isinstance(item, ev.Ping):
                        self.send(ev.Pong(item.nonce))  # answered here; the front end shows nothing
                    elif isinstance(item, ev.Goodbye):
                        self._goodbye = item.reason
                    self._on_event(item)
        except RemoteProtocolError as exc:
            reason = _broken(exc)
        except OSError as exc:
            reason = "connection closed" if self._closing else f"connection lost ({exc.strerror or exc})"
        except Exception as exc:  # a front end's callback failed: end the link, say why
            reason = f"{frontend.link.CLIENT_ERROR}: {exc!r}"
        finally:
            if self._goodbye is not None:
                reason = self._goodbye or "disconnected"
            self._ended.set()
            self._on_closed(reason)


def _broken(exc: RemoteProtocolError) -> str:
    """Why the link ended, for a stream the decoder refused."""
    if exc.code is ErrorCode.TRUNCATED:
        # A server ends a stream inside a frame only when it aborts the
        # connection with data still queued: it cut us off, most likely for
        # reading too slowly (its Error and Goodbye never got out).
        return frontend.link.CUT_OFF
    return f"the server broke the protocol ({exc})"


def tcp_connect(
    host: str,
    port: int,
    nick: str,
    on_event: Callable[[ev.ServerEvent], None],
    on_closed: Callable[[str], None],
    *,
    password: str = "",
    resume: bool = False,
    tls: ssl.SSLContext | None = None,
) -> TcpLink:
    """Connect to a twinchat TCP server and register ``nick``.

    Args:
        password: the nick's password, if it is registered (sent in clear:
            the front end asks before sending it off this machine).
        resume: coming back after a lost link: the server puts us in no
            room, and the front end rejoins its own.
        tls: speak TLS with this context (it says whom to trust); the
            server's certificate must name ``host``.

    Raises:
        ConnectError: the nick is invalid or refused (a registered nick
            without its password too: NEEDS_PASSWORD, BAD_PASSWORD,
            TOO_MANY_TRIES), the server is full or unreachable, or it does
            not speak twinchat.
    """
    try:
        register = ev.Register(nick, password, resume)
    except RuleError as exc:
        what = "password" if exc.code is ErrorCode.BAD_PASSWORD else f"nick {nick!r}"
        raise ConnectError(f"invalid {what}: {exc.detail}", code=exc.code) from None
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ConnectError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    sock: _Socket = raw if tls is None else _secure(raw, tls, host, f"{host}:{port}")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(encode(register))
        decoder = StreamDecoder()
        welcome = _await_welcome(sock, decoder, f"{host}:{port}")
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return TcpLink(sock, decoder, welcome, on_event, on_closed)


def _secure(sock: socket.socket, context: ssl.SSLContext, host: str, where: str) -> TlsSocket:
    """``sock`` after a TLS handshake with the server at ``host``; closed on failure.

    Raises:
        ConnectError: the server's certificate is not trusted or does not
            name ``host``, or the server does not speak TLS.
    """
    link = TlsLink(context, server_side=False, server_hostname=host)
    try:
        pending = link.handshake(sock)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise ConnectError(f"{where} is not trusted: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        sock.close()
        raise ConnectError(f"TLS handshake with {where} failed ({exc.reason or exc}); does it speak TLS?") from None
    except TimeoutError:
        sock.close()
        raise ConnectError(f"{where} did not answer the TLS handshake") from None
    except OSError as exc:
        sock.close()
        raise ConnectError(f"connection to {where} lost during the TLS handshake: {exc.strerror or exc}") from None
    return TlsSocket(sock, link, pending)


def _await_welcome(sock: _Socket, decoder: StreamDecoder, where: str) -> ev.Welcome:
    """Read until the server welcomes us; anything else ends in ConnectError."""
    try:
        while True:
            try:
                item = decoder.next_event()
            except FrameRejected:
                continue
            if item is NEED_DATA:
                decoder.feed(sock.recv(1 << 16))
            elif item is END_OF_STREAM:
                raise ConnectError(f"{where} closed the connection")
            elif isinstance(item, ev.Welcome):
                return item
            elif isinstance(item, ev.Error):
                raise ConnectError(f"refused: {item.detail} ({item.code.slug})", code=item.code)
            elif isinstance(item, ev.Goodbye):
                raise ConnectError(f"refused: {item.reason or 'the server said goodbye'}")
            elif isinstance(item, ev.Ping):
                sock.sendall(encode(ev.Pong(item.nonce)))
    except TimeoutError:
        raise ConnectError(f"{where} did not answer") from None
    except RemoteProtocolError:
        raise ConnectError(f"{where} does not speak twinchat") from None
    except OSError as exc:
        raise ConnectError(f"connection to {where} lost: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the exit code."""
    return frontend.main(argv, connect=tcp_connect, prog="tcpchat-client", default_port=DEFAULT_PORT, tls=_tls_connect)


def _tls_connect(context: ssl.SSLContext) -> frontend.Connect:
    """``tcp_connect`` over TLS with ``context``."""
    return functools.partial(tcp_connect, tls=context)


if __name__ == "__main__":
    sys.exit(main())
