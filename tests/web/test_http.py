"""HTTP on the chat's TCP port: the page, its files, and every way a request goes wrong.

Real servers on 127.0.0.1:0, real sockets; no browser (see test_browser.py).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.web.conftest import WAIT, HttpRefused, WsSocket, http_get, make_server
from twinchat.web import http

__all__ = ["make_server"]


def test_the_page_and_its_files_are_served(make_server) -> None:
    server = make_server()
    status, headers, body = http_get(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["connection"] == "close"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b"<title>twinchat</title>" in body
    assert int(headers["content-length"]) == len(body)
    for name, kind in [("app.js", "text/javascript"), ("proto.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, body = http_get(server.address, f"GET /static/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200, name
        assert headers["content-type"].startswith(kind)
        assert body
    # A query string does not change the path; HTTP/1.0 is served too.
    status, _, body = http_get(server.address, b"GET /?x=1 HTTP/1.0\r\n\r\n")
    assert status == 200 and b"<title>twinchat</title>" in body


def test_head_has_the_headers_and_no_body(make_server) -> None:
    server = make_server()
    status, headers, body = http_get(server.address, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert int(headers["content-length"]) > 0
    assert body == b""


def test_unknown_paths_are_404_and_other_methods_405(make_server) -> None:
    server = make_server()
    for path in ("/nope", "/static/", "/static/../pyproject.toml", "/static/missing.js", "/index.html"):
        status, _, body = http_get(server.address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 404, path
        assert b"404 Not Found" in body
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"):
        status, headers, _ = http_get(
            server.address, f"{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode()
        )
        assert status == 405, method
        assert headers["allow"] == "GET, HEAD"


def test_ws_without_an_upgrade_is_426(make_server) -> None:
    server = make_server()
    status, headers, body = http_get(server.address, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert b"WebSocket" in body
    # An upgrade without a key is not a handshake: a clear 400, not a traceback.
    status, _, body = http_get(
        server.address, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert status == 400
    assert body


def test_bad_requests_get_400_and_the_server_goes_on(make_server) -> None:
    server = make_server()
    for request in (
        b"GET / FTP/1.1\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 needs a Host
        b"GET \x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        status, _, body = http_get(server.address, request)
        assert status == 400, request
        assert body.startswith(b"400 Bad Request")
    status, _, _ = http_get(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


def test_oversize_headers_are_431(make_server) -> None:
    server = make_server()
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (http.MAX_REQUEST + 100) + b"\r\n\r\n"
    status, _, body = http_get(server.address, big)
    assert status == 431
    assert body.startswith(b"431")


def test_a_request_that_never_ends_is_cut_at_the_registration_timeout(make_server) -> None:
    """Slowloris: a request dribbled a byte at a time, never finished, is closed
    by the registration timeout, and the server serves others meanwhile."""
    server = make_server(register_timeout=0.5)
    with socket.create_connection(server.address, timeout=WAIT) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        status, _, _ = http_get(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        slow.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the blank line
        try:
            answer = slow.recv(1 << 16)  # blocks until the server closes
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed without a word, as any connection silent that long
        assert time.monotonic() - started < 5.0


def test_the_start_of_a_method_waits_for_more_bytes(make_server) -> None:
    """``GE`` then ``T / ...`` in another segment is still a request."""
    server = make_server()
    with socket.create_connection(server.address, timeout=WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # two segments
        sock.sendall(b"GE")
        sock.sendall(b"T / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(1 << 16)
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_routes_table_has_the_page_the_socket_and_the_files() -> None:
    table = http.routes(http.Origins())
    assert {"/", "/ws", "/static/app.js", "/static/proto.js", "/static/style.css"} <= set(table)
    request = http.Request("GET", "/", "/", ((b"host", b"x"),), "127.0.0.1")
    answer = http.answer(table, request)
    assert isinstance(answer, http.Response) and answer.status == 200


def test_origin_rule() -> None:
    same = http.Origins()
    assert same.allow("http://127.0.0.1:7878", "127.0.0.1:7878")
    assert same.allow("HTTPS://Chat.Example", "chat.example")
    assert same.allow(None, "x")  # not a browser page
    assert not same.allow("http://evil.example", "127.0.0.1:7878")
    assert not same.allow("null", "127.0.0.1:7878")
    assert not same.allow("http://127.0.0.1:9999", "127.0.0.1:7878")
    assert not same.allow("ftp://127.0.0.1:7878", "127.0.0.1:7878")
    listed = http.Origins.parse("https://a.example, https://b.example/")
    assert listed.allow("https://b.example", "127.0.0.1:7878")
    assert not listed.allow("https://c.example", "127.0.0.1:7878")
    assert http.Origins.parse("*").allow("http://anything", "127.0.0.1:7878")


def test_a_loopback_only_route_is_not_there_for_others() -> None:
    secret = http.loopback_only(lambda request: http.Response(200, b"numbers"))
    for peer in ("127.0.0.1", "::1", "127.8.9.10"):
        answer = secret(http.Request("GET", "/m", "/m", (), peer))
        assert isinstance(answer, http.Response) and answer.status == 200, peer
    for peer in ("192.0.2.7", "2001:db8::1", ""):
        answer = secret(http.Request("GET", "/m", "/m", (), peer))
        assert isinstance(answer, http.Response) and answer.status == 404, peer


ALLOW = ("--allowed-origins", "https://chat.example")


def test_the_all_in_one_server_serves_the_page_and_takes_allowed_origins() -> None:
    """``twinchat-server``, the README's first command, as a process: the page
    on its TCP port, and ``--allowed-origins`` reaching the WebSocket's rule."""
    proc = subprocess.Popen(
        [*(sys.executable, "-bb", "-m", "twinchat.server"), "--port", "0", "--ephemeral", *ALLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match, "no listening line"
        address = (match.group(1), int(match.group(2)))
        status, _, body = http_get(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and b"<title>twinchat</title>" in body
        WsSocket(address, origin="https://chat.example").close()
        with pytest.raises(HttpRefused) as refused:
            WsSocket(address, origin="https://evil.example")
        assert refused.value.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "https://evil.example" in err  # the refusal's log line


UPGRADE_REQUEST = (
    b"GET /ws?v=1 HTTP/1.1\r\nHost: 127.0.0.1:7878\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:7878\r\n\r\n"
)


def test_a_request_read_whole_byte_by_byte_and_with_bytes_after_it() -> None:
    after = b"\x82\x88first frame"
    for chunks in (
        [UPGRADE_REQUEST + after],
        [UPGRADE_REQUEST[i : i + 1] for i in range(len(UPGRADE_REQUEST))],
    ):
        reader = http.RequestReader("127.0.0.1")
        answers = [reader.feed(chunk) for chunk in chunks]
        assert answers[:-1] == [None] * (len(chunks) - 1)  # "need more" until the blank line
        request = answers[-1]
        assert isinstance(request, http.Request)
        assert (request.method, request.target, request.path) == ("GET", "/ws?v=1", "/ws")
        assert request.header(b"origin") == "http://127.0.0.1:7878"
        assert request.header(b"nope") is None
        assert reader.trailing == (after if len(chunks) == 1 else b"")
        answer = http.answer(http.routes(http.Origins()), request)
        assert answer is http.UPGRADE
