"""HTTP on the chat's TCP port, sans-IO: requests in, responses out, a route table.

Strategy: h11 parses (``RequestReader`` is fed bytes and says "need more",
a request, or the status to refuse it with); a handler chosen by path from
``routes`` answers with a ``Response``, or with ``UPGRADE`` for the
WebSocket, which the server's edge then hands to ``twinchat.web.websocket``.
No socket, thread or clock here: the edge bounds a request's time with the
registration timeout, and this module bounds its size (``MAX_REQUEST``).

One request per connection: every response says ``Connection: close``. The
page is one HTML file, one script and one style sheet, fetched once; what
lasts is the WebSocket, so keep-alive would buy nothing but a state to bound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

import h11

#: Largest request line and headers, in bytes: a browser's upgrade request is
#: some 600; 8 KiB leaves room for cookies of other apps on the same host.
MAX_REQUEST: Final = 8 * 1024

#: The methods served; any other gets 405.
METHODS: Final = frozenset({"GET", "HEAD"})

#: The type of each static file, by its suffix.
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

#: Headers on every page response: nothing is loaded, run or framed from
#: elsewhere, even if a message ever reached the page as markup.
PAGE_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}


@dataclass(frozen=True)
class Request:
    """One parsed request: its method and path (the query cut off), its
    headers as h11 gives them (lower-case names), and who sent it."""

    method: str
    target: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    peer: str  # the source address, e.g. for a loopback-only route

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower case), or None; the first if repeated."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True)
class Response:
    """An answer: a status, a body, its type and any other headers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    def encode(self, *, head: bool = False) -> bytes:
        """The response's bytes (HTTP/1.1, then the connection closes); ``head``: no body."""
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else self.body)


def error(status: int, detail: str, *headers: tuple[str, str]) -> Response:
    """A plain-text error response whose body says what went wrong in one line."""
    return Response(status, f"{status} {_REASONS.get(status, 'Error')}: {detail}\n".encode(), headers=headers)


class Upgrade(Enum):
    """A handler's answer that hands the connection to the WebSocket dialect."""

    WEBSOCKET = "websocket"


UPGRADE: Final = Upgrade.WEBSOCKET

#: A route's handler: a request in, a response (or the upgrade) out.
Handler = Callable[[Request], Response | Upgrade]


class RequestReader:
    """Push parser for one request (h11): ``feed`` bytes until it answers.

    ``feed`` returns None while the request is incomplete, the ``Request``
    once its headers are in, or the ``Response`` that refuses a bad one
    (400, or 431 past ``MAX_REQUEST``). ``b""`` is the end of the stream.
    """

    def __init__(self, peer: str, max_size: int = MAX_REQUEST) -> None:
        self._peer = peer
        self._max_size = max_size
        self._fed = 0
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)

    def feed(self, data: bytes) -> Request | Response | None:
        self._fed += len(data)
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            return error(exc.error_status_hint, str(exc))
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request):
            # h11 bounds a request still incomplete; one that came whole in one read is measured here.
            if self._fed - len(self.trailing) > self._max_size:
                return error(431, f"the request's headers pass {self._max_size} bytes")
            target = event.target.decode("latin-1")
            return Request(
                method=event.method.decode("latin-1"),
                target=target,
                path=urlsplit(target).path,
                headers=tuple((name, value) for name, value in event.headers),
                peer=self._peer,
            )
        return error(400, "the connection ended before a request")  # ConnectionClosed

    @property
    def trailing(self) -> bytes:
        """Bytes received after the request's headers (a client's first
        WebSocket frames, if it did not wait for the 101)."""
        return self._h11.trailing_data[0]


# --- the origin rule of the WebSocket upgrade -------------------------------------


@dataclass(frozen=True)
class Origins:
    """Which pages may open the WebSocket (``--allowed-origins``).

    The page served by this server may always (its origin is the request's
    Host: same-origin); ``listed`` adds others, ``anyone`` allows every page.
    A request with no Origin header is not from a browser page (a browser
    always sends one on a WebSocket upgrade): it is allowed, as a TCP client is.
    """

    listed: frozenset[str] = frozenset()
    anyone: bool = False

    @classmethod
    def parse(cls, text: str) -> Origins:
        """``--allowed-origins``: a comma list of origins (``https://chat.example``), or ``*``."""
        names = {_origin_key(part) for part in text.split(",") if part.strip()}
        return cls(frozenset(names - {"*"}), "*" in names)

    def allow(self, origin: str | None, host: str | None) -> bool:
        """Whether a page of ``origin`` may open the WebSocket of a server reached as ``host``."""
        if origin is None or self.anyone:
            return True
        key = _origin_key(origin)
        if key in self.listed:
            return True
        parts = urlsplit(key)
        return parts.scheme in {"http", "https"} and host is not None and parts.netloc == host.strip().lower()


def _origin_key(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


# --- routes -----------------------------------------------------------------------


def _static_files() -> dict[str, Response]:
    """Every file of ``static/``, read once, as the response that serves it."""
    folder = resources.files("twinchat.web") / "static"
    out = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in CONTENT_TYPES:
            out[item.name] = Response(200, item.read_bytes(), CONTENT_TYPES[suffix], PAGE_HEADERS)
    return out


def _serve(response: Response) -> Handler:
    return lambda request: response


def _websocket(origins: Origins) -> Handler:
    def upgrade(request: Request) -> Response | Upgrade:
        if request.method != "GET":
            return error(405, "a WebSocket opens with GET", ("Allow", "GET"))
        if (request.header(b"upgrade") or "").lower() != "websocket":
            return error(426, "this is the chat's WebSocket: connect with a WebSocket client", ("Upgrade", "websocket"))
        origin = request.header(b"origin")
        if not origins.allow(origin, request.header(b"host")):
            return error(403, f"pages of {origin} may not open this chat (--allowed-origins)")
        return UPGRADE

    return upgrade


def loopback_only(handler: Handler) -> Handler:
    """``handler`` for peers on this machine only; others get 404, as if it were not there."""

    def guarded(request: Request) -> Response | Upgrade:
        try:
            local = ipaddress.ip_address(request.peer.split("%")[0]).is_loopback
        except ValueError:
            local = False
        return handler(request) if local else error(404, f"nothing at {request.path}")

    return guarded


def routes(origins: Origins, extra: Iterable[tuple[str, Handler]] = ()) -> dict[str, Handler]:
    """The route table: path -> handler. A path not in it is 404.

    Args:
        origins: which pages may open ``/ws``.
        extra: more routes, added last (the server's ``/metrics``, for
            loopback peers only; a test's).
    """
    files = _static_files()
    table: dict[str, Handler] = {
        "/": _serve(files["index.html"]),
        "/ws": _websocket(origins),
    }
    table.update({f"/static/{name}": _serve(response) for name, response in files.items()})
    table.update(extra)
    return table


def answer(table: dict[str, Handler], request: Request) -> Response | Upgrade:
    """What ``table`` answers ``request``: its handler's response, 405 or 404."""
    if request.method not in METHODS:
        return error(405, f"{request.method} is not served here", ("Allow", "GET, HEAD"))
    handler = table.get(request.path)
    if handler is None:
        return error(404, f"nothing at {request.path}")
    return handler(request)
