"""The WebSocket dialect over a real socket, with a wsproto client: binary and
text modes, WebSocket members beside nc and TCP members, and every way a
WebSocket peer can misbehave (each a clear close, never a dead server)."""

from __future__ import annotations

import http.client
import socket
import struct
import threading

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode
from common.wire.framing import encode
from common.wire.limits import MAX_FRAME, MAX_LINE
from tests.tcp.conftest import FramedClient, LineClient
from tests.test_metrics import parse
from tests.test_one_process import Member
from tests.web.conftest import WAIT, HttpRefused, WsFramed, WsLine, WsSocket, make_server
from twinchat.metrics import CONTENT_TYPE
from twinchat.server import BothServer
from twinchat.web.websocket import Close
from udpchat.client import udp_connect

__all__ = ["make_server"]


def nc(address: tuple[str, int], nick: str) -> LineClient:
    """A person at nc, registered, in the lobby, its join's lines read."""
    person = LineClient(address)
    person.send(nick.encode() + b"\n")
    assert person.line().startswith(f"*** welcome, {nick}")
    assert person.line() == f"*** {nick} joined {LOBBY}"
    return person


def lines_until(person: LineClient | WsLine, wanted: str) -> list[str]:
    """Lines up to and including ``wanted``."""
    seen = []
    for _ in range(200):
        line = person.line()
        seen.append(line)
        if line == wanted:
            return seen
        assert line, f"closed before {wanted!r}; saw {seen}"
    raise AssertionError(f"no {wanted!r} in {seen}")


def test_a_binary_websocket_member_chats_with_nc_and_tcp_members(make_server, opened) -> None:
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    bob = FramedClient(server.address)
    opened.append(bob)
    bob.register("bob")
    assert ann.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    carol = nc(server.address, "carol")
    opened.append(carol)
    assert ann.expect(ev.Joined) == ev.Joined(LOBBY, "carol")

    ann.send(ev.Say(LOBBY, "héllo 🌍 from a browser"))
    echo = ann.expect(ev.Message)
    assert (echo.sender, echo.text) == ("ann", "héllo 🌍 from a browser")
    assert bob.expect(ev.Joined).nick == "carol"
    assert bob.expect(ev.Message).text == "héllo 🌍 from a browser"
    assert lines_until(carol, "ann: héllo 🌍 from a browser")

    carol.send(b"yo\n")
    said = ann.expect(ev.Message)
    assert (said.sender, said.text, said.seq) == ("carol", "yo", echo.seq + 1)

    # Rooms, private messages, nick changes and who, as any member.
    ann.join("#dev")
    ann.send(ev.Whisper("carol", "psst"), ev.ChangeNick("anna"), ev.Who())
    assert ann.expect(ev.Renamed) == ev.Renamed("ann", "anna")
    who = ann.expect(ev.WhoReply)
    assert set(who.nicks) == {"anna", "bob", "carol"}
    assert "*ann* psst" in lines_until(carol, "*** ann is now known as anna")


def test_chat_pings_keep_working(make_server, opened) -> None:
    """A chat Ping gets its Pong over the WebSocket, after everything asked before it."""
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    ann.send(ev.Help(), ev.Ping(42))
    while not isinstance(event := ann.expect(ev.Event), ev.Pong):
        assert isinstance(event, ev.Reply)
    assert event == ev.Pong(42)


def test_a_text_websocket_member_speaks_lines(make_server, opened) -> None:
    server = make_server()
    dan = WsLine(server.address)
    opened.append(dan)
    dan.send(b"dan\n")
    assert dan.line().startswith("*** welcome, dan")
    assert dan.line() == f"*** dan joined {LOBBY}"
    bob = FramedClient(server.address)
    opened.append(bob)
    bob.register("bob")
    assert dan.line() == f"*** bob joined {LOBBY}"
    dan.send("/me waves 👋\n".encode())
    action = bob.expect(ev.Action)
    assert (action.sender, action.text) == ("dan", "waves 👋")
    bob.send(ev.Say(LOBBY, "hi dan"))
    assert dan.line() == "bob: hi dan"
    dan.send(b"/join #dev\n")
    assert dan.line() == "*** dan joined #dev"


def test_a_registered_nick_needs_its_password_over_the_websocket(make_server, opened) -> None:
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    ann.send(ev.RegisterAccount("s3cret-pass"))
    assert ann.expect(ev.Reply)
    ann.send(ev.Goodbye("bye"))
    assert ann.expect(ev.Goodbye)
    again = WsFramed(server.address)
    opened.append(again)
    again.send(ev.Register("ann"))
    assert again.expect(ev.Error).code is ErrorCode.NEEDS_PASSWORD
    again.send(ev.Register("ann", "s3cret-pass"))
    assert again.expect(ev.Welcome).nick == "ann"


@pytest.mark.parametrize("first", ["binary", "text"])
def test_mixing_kinds_of_message_is_refused_with_1003(make_server, opened, first: str) -> None:
    server = make_server()
    peer = WsSocket(server.address)
    if first == "binary":
        peer.send_message(encode(ev.Register("ann")))
        peer.send_message("hello")
    else:
        peer.send_message("ann")
        peer.send_message(encode(ev.Say(LOBBY, "x")))
    seen = []
    while (message := peer.message()) is not None:
        seen.append(message)
    assert peer.close_code == Close.WRONG_KIND
    if first == "binary":
        assert encode(ev.Goodbye("this connection speaks binary messages only")) in seen
    else:
        assert "* error (unexpected-frame): this connection speaks text messages only" in seen
    peer.close()
    # The server goes on.
    bob = FramedClient(server.address)
    opened.append(bob)
    bob.register("bob")


def test_a_message_past_the_cap_is_refused_with_1009(make_server, opened) -> None:
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    ann.ws_sock.send_message(b"\xc1\x54" + b"x" * MAX_FRAME)
    error = ann.expect(ev.Error)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert ann.expect(ev.Goodbye)
    assert ann.ws_sock.until_closed() == Close.TOO_BIG

    dan = WsLine(server.address)
    opened.append(dan)
    dan.ws_sock.send_message("d" * MAX_LINE)
    lines = [dan.line() for _ in range(2)]
    assert lines[0].startswith("* error (frame-too-large)")
    assert dan.ws_sock.until_closed() == Close.TOO_BIG


def test_a_binary_message_is_exactly_one_frame(make_server, opened) -> None:
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    # A frame with a bad payload is skipped, as on TCP; the session goes on.
    ann.ws_sock.send_message(b"\xc1\x54\x04\x02\x00\x00\x00\x01\x00")
    assert ann.expect(ev.Error).code is ErrorCode.MALFORMED
    ann.send(ev.Ping(1))
    assert ann.expect(ev.Pong) == ev.Pong(1)
    # Two frames in one message break the rule: fatal, closed with 1008.
    ann.ws_sock.send_message(encode(ev.Ping(2)) + encode(ev.Ping(3)))
    assert ann.expect(ev.Error).code is ErrorCode.TRUNCATED
    assert ann.expect(ev.Goodbye)
    assert ann.ws_sock.until_closed() == Close.POLICY


def test_a_page_of_another_origin_is_refused_with_403(make_server, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    host = f"127.0.0.1:{server.address[1]}"
    with pytest.raises(HttpRefused) as refused:
        WsSocket(server.address, origin="http://evil.example", host=host)
    assert refused.value.status == 403
    assert b"http://evil.example" in refused.value.body
    assert any("refused" in r.message and "evil.example" in r.message for r in caplog.records)
    # Its own page's origin is welcome.
    WsSocket(server.address, origin=f"http://{host}", host=host).close()
    listed = make_server(allowed_origins="https://chat.example")
    WsSocket(listed.address, origin="https://chat.example").close()
    with pytest.raises(HttpRefused):
        WsSocket(listed.address, origin="https://other.example")
    WsSocket(make_server(allowed_origins="*").address, origin="http://evil.example").close()


def test_garbage_after_the_upgrade_is_a_protocol_error(make_server, opened) -> None:
    server = make_server()
    bob = FramedClient(server.address)
    opened.append(bob)
    bob.register("bob")
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    assert bob.expect(ev.Joined).nick == "ann"
    # Unmasked frames from a client break RFC 6455: closed with 1002.
    ann.ws_sock.sock.sendall(b"\x82\x05hello" + bytes(range(256)))
    assert ann.ws_sock.until_closed() == Close.PROTOCOL_ERROR
    left = bob.expect(ev.Left)
    assert left.nick == "ann" and "protocol error" in left.reason
    bob.send(ev.Ping(7))
    assert bob.expect(ev.Pong) == ev.Pong(7)


def test_an_abrupt_disconnect_is_a_departure(make_server, opened) -> None:
    server = make_server()
    carol = nc(server.address, "carol")
    opened.append(carol)
    ann = WsFramed(server.address)
    ann.register("ann")
    assert carol.line() == f"*** ann joined {LOBBY}"
    ann.ws_sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ann.ws_sock.sock.close()  # a reset, no close frame
    assert carol.line().startswith("*** ann left (connection")


def test_a_page_closing_its_websocket_leaves_cleanly(make_server, opened) -> None:
    server = make_server()
    carol = nc(server.address, "carol")
    opened.append(carol)
    ann = WsFramed(server.address)
    ann.register("ann")
    assert carol.line() == f"*** ann joined {LOBBY}"
    ann.send(ev.Say(LOBBY, "last words"))
    ws = ann.ws_sock
    from wsproto.events import CloseConnection  # noqa: PLC0415

    ws.sock.sendall(ws.ws.send(CloseConnection(code=1001)))
    # What came before the close is handled, then the server answers the close.
    assert carol.line() == "ann: last words"
    assert carol.line() == "*** ann left (websocket closed (the page went away))"
    assert ws.until_closed() == 1001
    ws.close()


def test_websocket_pings_are_answered(make_server, opened) -> None:
    from wsproto.events import Ping, Pong  # noqa: PLC0415

    server = make_server()
    peer = WsSocket(server.address)
    peer.sock.sendall(peer.ws.send(Ping(payload=b"are you there")))
    events = []
    while not events:
        data = peer.sock.recv(1 << 16)
        peer.ws.receive_data(data)
        events = list(peer.ws.events())
    assert events == [Pong(payload=b"are you there")]
    peer.close()


def test_a_silent_websocket_is_cut_at_the_registration_timeout(make_server) -> None:
    server = make_server(register_timeout=0.3)
    peer = WsSocket(server.address)
    peer.sock.settimeout(WAIT)
    assert peer.until_closed() in (None, 1006)
    peer.close()


def test_a_websocket_member_and_a_udp_member_share_a_room(opened) -> None:
    """One process, one hub: the page's dialect beside UDP (twinchat-server)."""
    both = BothServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=both.serve_forever, name="test both server")
    thread.start()
    uma = None
    try:
        ann = WsFramed(both.address)
        opened.append(ann)
        ann.register("ann")
        ann.join("#dev")
        uma = Member(udp_connect, both.udp.address, "uma")
        uma.link.send(ev.Join("#dev"))  # type: ignore[attr-defined]
        assert ann.expect(ev.Joined) == ev.Joined(LOBBY, "uma")
        assert ann.expect(ev.Joined) == ev.Joined("#dev", "uma")
        ann.send(ev.Say("#dev", "from the browser's dialect ✓"))
        assert uma.wait_for(lambda m: ("ann", "from the browser's dialect ✓") in m.said("#dev"))
        uma.link.send(ev.Say("#dev", "from udp"))  # type: ignore[attr-defined]
        assert ann.expect(ev.Message).text == "from the browser's dialect ✓"  # its echo first
        said = ann.expect(ev.Message)
        assert (said.sender, said.text) == ("uma", "from udp")
    finally:
        if uma is not None:
            uma.link.close()  # type: ignore[attr-defined]
        both.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()


def test_the_chat_port_serves_metrics_to_this_machine_counting_websocket_members(make_server, opened) -> None:
    server = make_server()
    ann = WsFramed(server.address)
    opened.append(ann)
    ann.register("ann")
    bob = nc(server.address, "bob")
    opened.append(bob)
    assert ann.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    # The same page as --metrics serves; a loopback peer may read it on the chat port.
    page = parse(_get(server.address, "/metrics"))
    assert page.value("twinchat_connections", transport="tcp", dialect="websocket") == 1
    assert page.value("twinchat_connections", transport="tcp", dialect="text") == 1
    assert page.value("twinchat_members") == 2


def _get(address: tuple[str, int], path: str) -> bytes:
    connection = http.client.HTTPConnection(*address, timeout=WAIT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == CONTENT_TYPE
        return response.read()
    finally:
        connection.close()
