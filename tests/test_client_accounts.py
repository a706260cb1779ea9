"""The client's side of accounts (issue 9): where a password comes from, when
it may leave the machine, and what happens when the server wants one.

Against real servers on 127.0.0.1 (both transports: the password check at the
edge, ``twinchat.gatekeeper``), and the front ends' policy with a fake
transport. Every wait is bounded and ends on a condition.
"""

from __future__ import annotations

import io
import socket
import threading
from typing import Any

import pytest

import tcpchat.server
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode
from tcpchat.client import tcp_connect
from twinchat.frontend.app import main
from twinchat.frontend.link import Connect, ConnectError, Reconnecting, is_loopback
from twinchat.frontend.password import PASSWORD_ENV, Cleartext, given_password
from twinchat.frontend.plain import run_plain

WAIT = 20.0


# --- the policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("chat.example.org", False),  # a name is not resolved: it counts as another host
        ("localhost.example.org", False),
    ],
)
def test_only_this_machine_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert Cleartext(host).permits(None) is loopback


def test_a_password_goes_in_clear_to_another_host_only_when_allowed_or_confirmed() -> None:
    asked: list[str] = []

    def no(warning: str) -> bool:
        asked.append(warning)
        return False

    assert Cleartext("10.0.0.1", allowed=True).permits(no) and not asked
    refused = Cleartext("10.0.0.1")
    assert not refused.permits(no) and "not encrypted" in asked[0]
    said_yes = Cleartext("10.0.0.1")
    assert said_yes.permits(lambda warning: True)
    assert said_yes.permits(no) and len(asked) == 1  # asked once a session


def test_the_password_comes_from_the_flag_then_the_environment() -> None:
    assert given_password("flag", {PASSWORD_ENV: "env"}) == "flag"
    assert given_password(None, {PASSWORD_ENV: "env"}) == "env"
    assert given_password(None, {}) == ""


class Recorder:
    """A ``Connect`` that refuses or welcomes as a registered nick's server would."""

    def __init__(self, password: str = "right", *, throttled: bool = False) -> None:
        self.password = password
        self.throttled = throttled
        self.tries: list[dict[str, Any]] = []

    def __call__(self, host: str, port: int, nick: str, on_event: Any, on_closed: Any, **login: Any) -> Any:
        self.tries.append(login)
        given = login.get("password", "")
        if self.throttled:
            raise ConnectError("refused: too many wrong passwords (too-many-tries)", code=ErrorCode.TOO_MANY_TRIES)
        if not given:
            raise ConnectError("refused: give its password (needs-password)", code=ErrorCode.NEEDS_PASSWORD)
        if given != self.password:
            raise ConnectError(f"refused: wrong password for {nick} (bad-password)", code=ErrorCode.BAD_PASSWORD)
        on_event(ev.Welcome(nick, 1))
        on_event(ev.Joined(LOBBY, nick))
        return self

    def send(self, event: ev.ClientEvent) -> None:
        pass

    def close(self, reason: str = "") -> None:
        pass


def plain(connect: Any, **options: Any) -> tuple[int, str]:
    err = io.StringIO()
    code = run_plain(
        connect, "127.0.0.1", 1, "ann", prog="x", stdin=io.StringIO(""), stdout=io.StringIO(), stderr=err, **options
    )
    return code, err.getvalue()


def test_plain_mode_sends_the_password_it_was_given() -> None:
    server = Recorder()
    assert plain(server, password="right") == (0, "")
    assert server.tries == [{"password": "right", "resume": False}]


def test_plain_mode_without_the_password_says_where_to_give_it() -> None:
    code, err = plain(Recorder())
    assert code == 1
    assert err == f"x: refused: give its password (needs-password); give it with --password or {PASSWORD_ENV}\n"


def session(server: Any, answers: list[str]) -> tuple[Reconnecting, list[str]]:
    asked: list[str] = []

    def password_for(nick: str, refusal: ConnectError) -> str | None:
        asked.append(f"{nick}: {refusal.code.slug if refusal.code else ''}")
        return answers.pop(0) if answers else None

    link = Reconnecting(
        server,
        "127.0.0.1",
        1,
        on_event=lambda e: None,
        on_closed=lambda r: None,
        on_status=lambda line: None,
        whoami=lambda: ("ann", []),
    )
    link.open("ann", another=lambda nick, refusal: None, password_for=password_for)
    return link, asked


def test_a_terminal_asks_for_the_password_when_needed_and_again_when_wrong() -> None:
    server = Recorder()
    link, asked = session(server, ["wrong", "right"])
    assert asked == ["ann: needs-password", "ann: bad-password"]
    assert [t.get("password", "") for t in server.tries] == ["", "wrong", "right"]
    assert link.password == "right"  # kept for the reconnects
    link.close()


def test_giving_up_on_the_password_or_being_throttled_ends_it_without_asking_more() -> None:
    with pytest.raises(ConnectError) as gave_up:
        session(Recorder(), [])
    assert gave_up.value.code is ErrorCode.NEEDS_PASSWORD
    with pytest.raises(ConnectError) as throttled:
        session(Recorder(throttled=True), ["right"])
    assert throttled.value.code is ErrorCode.TOO_MANY_TRIES


def test_the_command_line_will_not_send_a_password_in_clear_to_another_host_unasked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    server = Recorder()
    remote = ["--host", "192.0.2.1", "--nick", "ann"]
    assert main([*remote, "--password", "right"], connect=server, prog="x", default_port=1) == 2
    assert server.tries == []
    assert "not encrypted" in capsys.readouterr().err
    monkeypatch.setenv(PASSWORD_ENV, "right")
    assert main([*remote, "--allow-cleartext-password"], connect=server, prog="x", default_port=1) == 0
    assert server.tries[-1]["password"] == "right"
    assert "warning: 192.0.2.1 is another machine" in capsys.readouterr().err  # allowed, still said
    assert main(["--nick", "ann"], connect=server, prog="x", default_port=1) == 0  # loopback: no question
    assert (
        main(
            [*remote, "--password", "right", "--allow-cleartext-password"],
            connect=server,
            prog="x",
            default_port=1,
            notice="UDP is not encrypted",
        )
        == 0
    )
    assert "UDP is not encrypted" in capsys.readouterr().err


# --- against real servers --------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.seen: list[ev.ServerEvent] = []
        self.changed = threading.Condition()

    def on_event(self, event: ev.ServerEvent) -> None:
        with self.changed:
            self.seen.append(event)
            self.changed.notify_all()

    def wait_for(self, kind: type[ev.ServerEvent]) -> ev.ServerEvent | None:
        with self.changed:
            self.changed.wait_for(lambda: any(isinstance(e, kind) for e in self.seen), WAIT)
            return next((e for e in self.seen if isinstance(e, kind)), None)


def registered(connect: Connect, address: tuple[str, int], nick: str, password: str) -> None:
    """Register ``nick`` with ``password`` from a first client, which then leaves."""
    events = Events()
    link = connect(address[0], address[1], nick, events.on_event, lambda reason: None)
    try:
        link.send(ev.RegisterAccount(password))
        reply = events.wait_for(ev.Reply)
        assert reply is not None and "registered" in reply.text, events.seen
    finally:
        link.close()


def test_a_registered_nick_needs_its_password_over_both_transports(
    live_server: tuple[Connect, tuple[str, int]],
) -> None:
    connect, address = live_server
    registered(connect, address, "ann", "s3cret")
    host, port = address
    with pytest.raises(ConnectError) as needs:
        connect(host, port, "ann", lambda e: None, lambda r: None)
    assert needs.value.code is ErrorCode.NEEDS_PASSWORD
    with pytest.raises(ConnectError) as wrong:
        connect(host, port, "ann", lambda e: None, lambda r: None, password="guess")
    assert wrong.value.code is ErrorCode.BAD_PASSWORD
    events = Events()
    link = connect(host, port, "ann", events.on_event, lambda r: None, password="s3cret")
    try:
        assert events.wait_for(ev.Joined) == ev.Joined(LOBBY, "ann")
    finally:
        link.close()


def test_a_session_asks_for_the_password_then_comes_back_with_it_after_a_cut() -> None:
    server = tcpchat.server.ChatServer("127.0.0.1", 0, rate_limit=0)
    thread = threading.Thread(target=server.serve_forever, name="test server")
    thread.start()
    address = server.address
    registered(tcp_connect, address, "ann", "s3cret")
    events = Events()
    status: list[str] = []
    back = threading.Event()

    def on_status(line: str) -> None:
        status.append(line)
        if line.startswith("-- back"):
            back.set()

    view_rooms: list[ev.Join] = []
    link = Reconnecting(
        tcp_connect,
        *address,
        on_event=events.on_event,
        on_closed=lambda r: None,
        on_status=on_status,
        whoami=lambda: ("ann", view_rooms),
        draw=lambda: 0.0,  # at once
    )
    asked: list[ErrorCode | None] = []

    def password_for(nick: str, refusal: ConnectError) -> str | None:
        asked.append(refusal.code)
        return "s3cret"

    try:
        link.open("ann", another=lambda nick, refusal: None, password_for=password_for)
        assert asked == [ErrorCode.NEEDS_PASSWORD]
        assert events.wait_for(ev.Joined) == ev.Joined(LOBBY, "ann")
        view_rooms.append(ev.Join(LOBBY))
        first = link._attempt.link if link._attempt else None
        assert first is not None
        first._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]  # the link drops under it
        assert back.wait(WAIT), status
        assert status[-1] == f"-- back: {LOBBY} resumed --"
        assert asked == [ErrorCode.NEEDS_PASSWORD]  # not asked again: the session kept it
    finally:
        link.close()
        server.shutdown()
        thread.join(WAIT)


def test_too_many_wrong_passwords_are_throttled(live_server: tuple[Connect, tuple[str, int]]) -> None:
    connect, address = live_server
    registered(connect, address, "ann", "s3cret")
    codes: list[ErrorCode | None] = []
    for n in range(8):
        with pytest.raises(ConnectError) as refused:
            connect(address[0], address[1], "ann", lambda e: None, lambda r: None, password=f"guess{n}")
        codes.append(refused.value.code)
        if refused.value.code is ErrorCode.TOO_MANY_TRIES:
            break
    assert codes[0] is ErrorCode.BAD_PASSWORD
    assert codes[-1] is ErrorCode.TOO_MANY_TRIES
