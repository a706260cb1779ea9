"""The ``websocket`` transport's load client: ``TcpPeer`` speaking the
WebSocket dialect (PROTOCOL.md, "WebSocket"), one binary message per frame.

Strategy: the load generator must not be what is measured, so the framing
is done here with the least work a client may do. The upgrade is one
blocking request and its 101; then each frame sent becomes one masked
message whose mask key is zero (RFC 6455 asks for an unpredictable key, to
protect proxies from a hostile page; no proxy is on this loopback path, and
the server still runs its unmasking over every byte), and what arrives is
unwrapped back into the stream of frames ``TcpPeer`` accounts, with the
kernel's arrival stamps untouched.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from typing import Final

from bench.load import LoadError, Peer, TcpPeer

#: The opcodes the server sends: binary messages, and the close after a Goodbye.
_BINARY: Final = 0x2
_CLOSE: Final = 0x8


def masked(frames: bytes) -> bytes:
    """Each twinchat frame of ``frames`` (back to back) as one masked binary message."""
    out = []
    at, end = 0, len(frames)
    while at < end:
        size = 8 + int.from_bytes(frames[at + 4 : at + 8], "big")
        if size < 126:
            out.append(bytes((0x82, 0x80 | size, 0, 0, 0, 0)))
        elif size < 1 << 16:
            out.append(struct.pack("!BBHI", 0x82, 0x80 | 126, size, 0))
        else:
            out.append(struct.pack("!BBQI", 0x82, 0x80 | 127, size, 0))
        out.append(frames[at : at + size])
        at += size
    return b"".join(out)


class Unwrapper:
    """Turns the server's messages (unmasked, unfragmented) back into the frame stream."""

    def __init__(self) -> None:
        self._buf = b""
        #: The server sent its close frame.
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        parts = []
        at, end = 0, len(buf)
        while at + 2 <= end:
            first, second = buf[at], buf[at + 1] & 0x7F
            head = 2
            if second == 126:
                if at + 4 > end:
                    break
                second, head = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
            elif second == 127:
                if at + 10 > end:
                    break
                second, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            stop = at + head + second
            if stop > end:
                break
            opcode = first & 0x0F
            if opcode == _BINARY:
                parts.append(buf[at + head : stop])
            elif opcode == _CLOSE:
                self.closed = True
            at = stop
        self._buf = buf[at:]
        return b"".join(parts)


class WsPeer(TcpPeer):
    """A load client over the WebSocket at ``/ws`` of the TCP port."""

    def _handshake(self, address: tuple[str, int]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise LoadError(f"peer {self.index}: the server closed during the upgrade")
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise LoadError(f"peer {self.index}: upgrade refused: {head.splitlines()[0]!r}")
        self._unwrap = Unwrapper()
        if rest:
            raise LoadError(f"peer {self.index}: the server spoke before our Register")

    def send(self, data: bytes) -> None:
        super().send(masked(data))

    def deliver(self, received_at: int, data: bytes, read_at: int) -> None:
        frames = self._unwrap.feed(data)
        if frames:
            super().deliver(received_at, frames, read_at)
        if self._unwrap.closed:
            self.lost("the server closed the WebSocket")


def maker(address: tuple[str, int]) -> Callable[[int, bool], Peer]:
    """Make ``WsPeer`` load clients of the server at ``address`` (``runner.PeerMaker``)."""

    def make(index: int, reads: bool) -> Peer:
        return WsPeer(index, address, reads=reads)

    return make
