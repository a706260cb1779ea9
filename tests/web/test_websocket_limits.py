"""The WebSocket dialect under the same limits as the others: flood control,
the slow-consumer cut, and TLS (``wss://``) on the same port."""

from __future__ import annotations

import socket

import pytest

import tcpchat.server
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.fanout import SLOW_DETAIL
from common.wire.errors import ErrorCode
from tests.tcp.conftest import FramedClient, flood_until_cut
from tests.tcp.test_tls import Pki, pki, tls_server
from tests.web.conftest import WAIT, WsFramed, WsLine, make_server
from twinchat.web.websocket import Close

__all__ = ["make_server", "pki", "tls_server"]


def test_a_websocket_flood_is_slowed_not_lost(make_server, opened) -> None:
    server = make_server(rate_limit=200.0)
    flooder = WsFramed(server.address)
    reader = FramedClient(server.address)
    opened += [flooder, reader]
    flooder.register("flooder")
    reader.register("reader")
    flooder.send(*(ev.Say(LOBBY, f"n{n}") for n in range(600)))  # burst 400, then 200/s
    assert [reader.expect(ev.Message).text for _ in range(600)] == [f"n{n}" for n in range(600)]
    assert flooder.expect(ev.Joined).nick == "reader"
    assert [flooder.expect(ev.Message).text for _ in range(600)] == [f"n{n}" for n in range(600)]


def test_a_websocket_that_does_not_read_is_cut_off_and_told_why(
    make_server, opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcpchat.server, "LINGER", WAIT)  # the slow one reads only after the flood
    server = make_server(max_queue=16 * 1024)
    slow = WsFramed(server.address, rcvbuf=4096)
    flooder = FramedClient(server.address)
    opened += [slow, flooder]
    slow.register("slow")
    flooder.register("flooder")
    if not flood_until_cut(flooder, lambda event: event == ev.Left("slow", SLOW_DETAIL)):
        pytest.fail("the slow WebSocket was never cut off")
    # What it was sent is whole messages up to its farewell, then the close frame.
    events = slow.until_closed()
    assert events[-2:] == [ev.Error(ErrorCode.SLOW_CONSUMER, SLOW_DETAIL), ev.Goodbye(SLOW_DETAIL)]
    assert all(isinstance(e, ev.Message | ev.Joined) for e in events[:-2])
    assert slow.ws_sock.close_code == Close.NORMAL


def test_wss_and_https_on_the_tls_port(tls_server, pki: Pki, opened) -> None:
    server = tls_server()
    context = pki.client_context()
    ann = WsFramed(server.address, context=context)
    dan = WsLine(server.address, context=context)
    opened += [ann, dan]
    ann.register("ann")
    dan.send(b"dan\n")
    assert dan.line().startswith("*** welcome, dan")
    assert dan.line() == f"*** dan joined {LOBBY}"
    ann.send(ev.Say(LOBBY, "over wss ✓"))
    assert dan.line() == "ann: over wss ✓"
    assert ann.expect(ev.Joined).nick == "dan"
    assert ann.expect(ev.Message).text == "over wss ✓"  # its echo
    ann.send(ev.Goodbye("done"))
    assert ann.expect(ev.Goodbye) == ev.Goodbye("bye")
    assert ann.ws_sock.until_closed() == Close.NORMAL
    # The page itself, over https.
    with context.wrap_socket(
        __import__("socket").create_connection(server.address, WAIT), server_hostname="127.0.0.1"
    ) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = tls.recv(1 << 16)
    assert head.startswith(b"HTTP/1.1 200 OK")
    # A plaintext browser on the TLS port gets no answer, as any plaintext peer.
    with socket.create_connection(server.address, WAIT) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(1 << 16)
        except ConnectionResetError:
            answer = b""
    assert answer == b""
