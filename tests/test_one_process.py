"""One process, every transport: TCP framed, TCP text (nc) and UDP users in one chat."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from common.chat import events as ev
from common.wire.errors import ErrorCode
from tcpchat.client import tcp_connect
from twinchat.frontend import ConnectError
from twinchat.server import BothServer
from udpchat.client import udp_connect

WAIT = 10.0

pytestmark = pytest.mark.timeout(30)


class Member:
    """A client (of either transport) that keeps every event, with a condition to wait on."""

    def __init__(self, connect: Callable[..., object], address: tuple[str, int], nick: str) -> None:
        self.events: list[ev.ServerEvent] = []
        self.closed: str | None = None
        self._changed = threading.Condition()
        self.link = connect(address[0], address[1], nick, self._on_event, self._on_closed)

    def _on_event(self, event: ev.ServerEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def _on_closed(self, reason: str) -> None:
        with self._changed:
            self.closed = reason
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Member], bool]) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), WAIT)

    def said(self, room: str) -> list[tuple[str, str]]:
        """The live messages of ``room`` (not those replayed), as (sender, text)."""
        return [
            (e.sender, e.text) for e in self.events if isinstance(e, ev.Message) and e.room == room and not e.history
        ]


class Person:
    """Someone at ``nc``: lines in, lines out."""

    def __init__(self, address: tuple[str, int], nick: str) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.sock.sendall(nick.encode() + b"\n")
        self.buffer = b""

    def say(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def read_until(self, line: str) -> list[str]:
        """Every line up to and including ``line`` (bounded by the socket timeout)."""
        wanted = line.encode() + b"\n"
        while wanted not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buffer += data
        return self.buffer.decode().splitlines()


@pytest.fixture
def server() -> Iterator[BothServer]:
    both = BothServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=both.serve_forever, daemon=True)
    thread.start()
    try:
        yield both
    finally:
        both.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()


def test_both_transports_listen_on_one_port_number(server: BothServer) -> None:
    assert server.udp.address[1] == server.address[1]


def test_tcp_text_and_udp_users_share_a_room_in_one_order(server: BothServer) -> None:
    tcp_user = Member(tcp_connect, server.address, "tess")
    udp_user = Member(udp_connect, server.udp.address, "uma")
    person = Person(server.address, "nat")
    try:
        person.say("/join #dev")
        for member in (tcp_user, udp_user):
            member.link.send(ev.Join("#dev"))  # type: ignore[attr-defined]
        # Each is in #dev once its own Joined has come back: the server has applied it.
        assert tcp_user.wait_for(lambda m: ev.Joined("#dev", "tess") in m.events)
        assert udp_user.wait_for(lambda m: ev.Joined("#dev", "uma") in m.events)
        person.read_until("*** nat joined #dev")
        # Each one says three things; everyone sees each sender's lines in order,
        # and any two who both see two lines see them in the same order. The
        # framed clients (TCP and UDP) hear their own lines back among the
        # others', so they see all nine in the room's one order; the person at
        # nc is not sent their own.
        for i in range(3):
            tcp_user.link.send(ev.Say("#dev", f"tcp {i}"))  # type: ignore[attr-defined]
            udp_user.link.send(ev.Say("#dev", f"udp {i}"))  # type: ignore[attr-defined]
            person.say(f"nc {i}")
        assert tcp_user.wait_for(lambda m: len(m.said("#dev")) == 9)
        assert udp_user.wait_for(lambda m: len(m.said("#dev")) == 9)
        lines = person.read_until("uma: udp 2")
        lines = person.read_until("tess: tcp 2") if "tess: tcp 2" not in lines else lines
        heard_by_nc = [tuple(line.split(": ", 1)) for line in lines if line.startswith(("tess: ", "uma: ", "nat: "))]
        for sender, said in (("tess", "tcp"), ("uma", "udp"), ("nat", "nc")):
            assert [t for s, t in tcp_user.said("#dev") if s == sender] == [f"{said} {i}" for i in range(3)]
        assert tcp_user.said("#dev") == udp_user.said("#dev")  # one order, the same numbers
        assert [e.seq for e in tcp_user.events if isinstance(e, ev.Message) and e.room == "#dev"] == list(range(1, 10))
        assert [t for s, t in heard_by_nc if s == "tess"] == ["tcp 0", "tcp 1", "tcp 2"]
        assert [t for s, t in heard_by_nc if s == "uma"] == ["udp 0", "udp 1", "udp 2"]
        assert not [t for s, t in heard_by_nc if s == "nat"]
        assert [m for m in heard_by_nc if m[0] != "nat"] == [m for m in tcp_user.said("#dev") if m[0] != "nat"]
        # /who over UDP lists the TCP and nc users too.
        udp_user.link.send(ev.Who())  # type: ignore[attr-defined]
        assert udp_user.wait_for(lambda m: any(isinstance(e, ev.WhoReply) and not e.room for e in m.events))
        who = next(e for e in udp_user.events if isinstance(e, ev.WhoReply) and not e.room)
        assert set(who.nicks) == {"tess", "uma", "nat"}
    finally:
        for member in (tcp_user, udp_user):
            member.link.close()  # type: ignore[attr-defined]
        person.sock.close()


def test_a_nick_is_one_across_transports(server: BothServer) -> None:
    tcp_user = Member(tcp_connect, server.address, "Маша")
    try:
        with pytest.raises(ConnectError) as refused:
            Member(udp_connect, server.udp.address, "маша")
        assert refused.value.code is ErrorCode.NICK_TAKEN
    finally:
        tcp_user.link.close()  # type: ignore[attr-defined]


def test_shutdown_says_goodbye_on_both_transports(server: BothServer) -> None:
    tcp_user = Member(tcp_connect, server.address, "tess")
    udp_user = Member(udp_connect, server.udp.address, "uma")
    server.shutdown("maintenance")
    for member in (tcp_user, udp_user):
        assert member.wait_for(lambda m: m.closed is not None)
        assert ev.Error(ErrorCode.SHUTTING_DOWN, "maintenance") in member.events
        member.link.close()  # type: ignore[attr-defined]
