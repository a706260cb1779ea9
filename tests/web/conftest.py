"""Harness for the web tests: WebSocket peers made of wsproto over a real socket.

``WsSocket`` is a blocking WebSocket client with the socket calls the TCP
test clients use (``sendall``, ``recv``), so ``WsFramed`` and ``WsLine`` are the
TCP harness's ``FramedClient`` and ``LineClient`` with each frame or line sent
as one message: every helper of theirs (register, join, expect) works over it.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator

import pytest
import wsproto
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from common.chat import events as ev
from common.wire.framing import StreamDecoder, encode
from tests.tcp.conftest import WAIT, FramedClient, LineClient, make_server

__all__ = ["WAIT", "HttpRefused", "WsFramed", "WsLine", "WsSocket", "http_get", "make_server"]


class HttpRefused(Exception):
    """The upgrade was answered with another status than 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body


class WsSocket:
    """A WebSocket client over a blocking socket (TLS if ``context``).

    Raises:
        HttpRefused: the server answered the upgrade with another status.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        origin: str | None = None,
        host: str | None = None,
        context: ssl.SSLContext | None = None,
        path: str = "/ws",
        rcvbuf: int = 0,
    ) -> None:
        raw = socket.socket(socket.AF_INET)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(WAIT)
        raw.connect(address)
        self.sock: socket.socket = context.wrap_socket(raw, server_hostname=address[0]) if context else raw
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        self._parts: list[bytes | str] = []
        #: The close code the server sent, once it closed.
        self.close_code: int | None = None
        headers = [(b"origin", origin.encode())] if origin is not None else []
        self.sock.sendall(
            self.ws.send(Request(host=host or f"{address[0]}:{address[1]}", target=path, extra_headers=headers))
        )
        first = self._event()
        if isinstance(first, RejectConnection):
            body = b""
            while first.has_body:
                data = self._event()
                assert isinstance(data, RejectData), data
                body += data.data
                if data.body_finished:
                    break
            self.sock.close()
            raise HttpRefused(first.status_code, body)
        assert isinstance(first, AcceptConnection), first

    def _event(self) -> Event:
        """The next wsproto event (a CloseConnection once the stream ended)."""
        while not self._events:
            data = self.sock.recv(1 << 16)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    def message(self) -> bytes | str | None:
        """The next whole message; None once the server closed (``close_code`` says how)."""
        while True:
            event = self._event()
            if isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    return b"".join(parts) if isinstance(event, BytesMessage) else "".join(parts)  # type: ignore[arg-type]
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code = event.code
                if self.ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    self.sock.sendall(self.ws.send(event.response()))
                return None

    def send_message(self, data: bytes | str) -> None:
        kind = BytesMessage if isinstance(data, bytes) else TextMessage
        self.sock.sendall(self.ws.send(kind(data=data)))  # type: ignore[arg-type]

    # --- the socket calls the TCP test clients make --------------------------------

    def sendall(self, data: bytes) -> None:
        self.send_message(data)

    def recv(self, size: int) -> bytes:
        message = self.message()
        assert not isinstance(message, str), f"a text message on a binary connection: {message!r}"
        return message or b""

    def until_closed(self) -> int | None:
        """Read (and drop) every message until the server closes; its close code."""
        for _ in range(100_000):
            if self.message() is None:
                return self.close_code
        raise AssertionError("the server never closed")

    def close(self) -> None:
        self.sock.close()


class WsFramed(FramedClient):
    """A framed peer whose frames travel one per binary message."""

    def __init__(self, address: tuple[str, int], **options: object) -> None:
        self.ws_sock = WsSocket(address, **options)  # type: ignore[arg-type]
        self.sock = self.ws_sock  # type: ignore[assignment]
        self.decoder = StreamDecoder()
        self.nick = ""
        self.last_seq = {}
        self.briefing = None

    def send(self, *events: ev.Event) -> None:
        for event in events:
            self.ws_sock.send_message(encode(event))


class WsLine(LineClient):
    """A text-dialect peer whose lines travel one per text message."""

    def __init__(self, address: tuple[str, int], **options: object) -> None:
        self.ws_sock = WsSocket(address, **options)  # type: ignore[arg-type]
        self.sock = self.ws_sock  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            self.ws_sock.send_message(line)

    def line(self) -> str:
        message = self.ws_sock.message()
        if message is None:
            return ""
        assert isinstance(message, str), f"a binary message on a text connection: {message!r}"
        return message

    def close(self) -> None:
        self.ws_sock.close()


def http_get(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the status, headers (lower-case names) and body of the answer."""
    with socket.create_connection(address, timeout=WAIT) as sock:
        sock.sendall(request)
        data = b""
        for _ in range(10_000):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.fixture
def opened() -> Iterator[list[WsFramed | WsLine | LineClient]]:
    """Clients a test opened, closed after it."""
    clients: list[WsFramed | WsLine | LineClient] = []
    yield clients
    for client in clients:
        client.close()
