"""TLS for the TCP edge, sans-IO: ``ssl.MemoryBIO`` and an ``ssl.SSLObject``.

Strategy: OpenSSL forbids using one SSL object from two threads at once, and
a TCP connection here is read on one thread while others send on it (the
server's fan-out pushes under the hub lock, a writer thread flushes; the
client has a receive and a send thread). So no thread ever hands the socket
to OpenSSL. ``TlsLink`` only turns bytes into bytes: ``feed(raw)`` gives the
plaintext the peer's records carried, ``encrypt(plaintext)`` gives the records
to send. A lock held only around the SSLObject calls, never around socket
I/O, keeps the threads apart; the callers send and receive the raw bytes
with their own socket logic (the server's non-blocking send and queue
included). Records come out of ``encrypt`` in the order it is called, so the
caller that orders its sends (the hub lock) orders the records too.

After the handshake the stream inside is the same as without TLS: framed or
text, told apart by its first bytes (PROTOCOL.md, "TCP").
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import Final

#: Bytes asked of one recv during the handshake.
_RECV: Final = 1 << 16


class TlsSetupError(Exception):
    """The certificate or key cannot be used; the message is one line naming them."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the certificate chain in ``cert`` and its ``key`` (PEM files).

    Raises:
        TlsSetupError: a file is missing or unreadable, or the two do not
            make a certificate and its key (one line, naming the files).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        what = f"--tls-cert {cert} / --tls-key {key}"
        raise TlsSetupError(f"{what}: not a certificate and its key ({exc.reason})") from None
    except OSError as exc:
        raise TlsSetupError(f"--tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from None
    return context


class TlsLink:
    """One TLS session over a byte stream the caller carries; see the module docstring.

    Args:
        context: the server's or client's ``SSLContext``.
        server_side: this end is the server.
        server_hostname: the name the server's certificate must carry (client side).
    """

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)
        self._lock = threading.Lock()
        #: The peer sent its close_notify: nothing more will come from it. A
        #: peer that closes this way may wait for ours before it closes the
        #: connection, so its reader must stop reading and answer.
        self.peer_closed = False

    def step(self, raw: bytes) -> tuple[bool, bytes]:
        """One handshake step: feed ``raw`` (b"" at first), return whether the
        handshake is done and the bytes to send to the peer.

        Raises:
            ssl.SSLError: the peer does not speak TLS, or the handshake failed
                (``ssl.SSLCertVerificationError`` for a certificate refused).
        """
        with self._lock:
            if raw:
                self._in.write(raw)
            try:
                self._obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            return done, self._out.read()

    def feed(self, raw: bytes) -> bytes:
        """The plaintext the records in ``raw`` carry (b"" if no record is
        complete yet). ``raw`` of b"" is the end of the stream: b"" back.

        Raises:
            ssl.SSLError: the stream is not valid TLS (an ``OSError``).
        """
        if not raw:
            return b""
        with self._lock:
            self._in.write(raw)
            return self._plaintext()

    def _plaintext(self) -> bytes:
        """The plaintext of every complete record fed so far (lock held)."""
        parts = []
        while True:
            try:
                part = self._obj.read(_RECV)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                part = b""
            if not part:
                # The peer's close_notify (CPython reads it as b"", or raises
                # SSLZeroReturnError if the alert came in an odd state).
                self.peer_closed = True
                break
            parts.append(part)
        return b"".join(parts)

    def encrypt(self, plaintext: bytes) -> bytes:
        """The records that carry ``plaintext``, with anything else pending to
        send (a post-handshake message) before them."""
        with self._lock:
            if plaintext:
                self._obj.write(plaintext)
            return self._out.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send last (b"" if it cannot be made), an
        answer to the peer's or the first word of a close we start."""
        with self._lock:
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the peer's alert is not awaited
                self._obj.unwrap()
            return self._out.read()

    def handshake(self, sock: socket.socket) -> bytes:
        """Run the handshake over blocking ``sock`` (its timeout bounds each recv).

        Returns:
            the plaintext that came in the handshake's last recv (a client
            speaks right after its Finished, often in the same segment).

        Raises:
            ssl.SSLError: the handshake failed.
            ConnectionError: the peer closed the connection during it.
            TimeoutError: the peer stalled.
        """
        raw = b""
        while True:
            done, out = self.step(raw)
            if out:
                sock.sendall(out)
            if done:
                with self._lock:
                    return self._plaintext()
            raw = sock.recv(_RECV)
            if not raw:
                raise ConnectionResetError("closed during the TLS handshake")


class TlsSocket:
    """A blocking socket carrying a ``TlsLink``, for a client: ``recv`` and
    ``sendall`` of plaintext may run on two threads at once."""

    def __init__(self, sock: socket.socket, link: TlsLink, pending: bytes = b"") -> None:
        self.sock = sock
        self.link = link
        self._pending = pending  # plaintext that came with the handshake
        self._send_lock = threading.Lock()  # records go out whole, in order

    def recv(self, size: int) -> bytes:
        """Plaintext, at least one byte; b"" at the end of the stream (the
        peer's close_notify, or its close)."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            if self.link.peer_closed:
                return b""
            raw = self.sock.recv(max(size, _RECV))
            if not raw:
                return b""
            plain = self.link.feed(raw)
            if plain:
                return plain

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(self.link.encrypt(data))

    def settimeout(self, value: float | None) -> None:
        self.sock.settimeout(value)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
