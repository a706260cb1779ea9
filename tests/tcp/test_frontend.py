"""The shared client front end, driven through a fake link (no network)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.rooms import LOBBY
from common.chat.view import ClientView
from common.wire.errors import ErrorCode
from twinchat.frontend import ConnectError, Link
from twinchat.frontend.plain import run_plain
from twinchat.frontend.terminal import colour, run_terminal, styled

from .conftest import WAIT


class FakeLink:
    """Records what the front end sends; the test plays the server."""

    def __init__(
        self,
        nick: str,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
        *,
        answer_joins: bool,
    ) -> None:
        self.nick = nick
        self.on_event = on_event
        self.on_closed = on_closed
        self.answer_joins = answer_joins
        self.sent: list[ev.ClientEvent] = []
        self.closed_with: list[str] = []
        self.got_goodbye = threading.Event()

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)
        if self.answer_joins and isinstance(event, ev.Join):
            self.on_event(ev.Joined(event.room, self.nick))

    def close(self, reason: str = "") -> None:
        if not self.closed_with:
            self.closed_with.append(reason)
            self.on_event(ev.Goodbye("bye"))
            self.on_closed("bye")


class FakeServer:
    """A ``Connect`` that welcomes (or refuses) and keeps the link it made.

    Like the real server it follows the Welcome with the member's own join of
    the lobby (here before ``connect`` returns). ``answer_joins``: answer each
    ``Join`` at once with its ``Joined``; otherwise the server never answers.
    """

    def __init__(self, refuse: str = "", *, answer_joins: bool = False) -> None:
        self.refuse = refuse
        self.answer_joins = answer_joins
        self.link: FakeLink | None = None
        self.connected = threading.Event()

    def __call__(
        self,
        host: str,
        port: int,
        nick: str,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
    ) -> Link:
        if self.refuse:
            raise ConnectError(self.refuse)
        self.link = FakeLink(nick, on_event, on_closed, answer_joins=self.answer_joins)
        on_event(ev.Welcome(nick, 1))
        on_event(ev.Joined(LOBBY, nick))
        self.connected.set()
        return self.link


def test_interpret_answers_help_and_typos_locally() -> None:
    view = ClientView("bot")
    homeless = view.interpret("hello")  # in no room yet: nowhere to say it
    assert homeless.send is None
    assert [e.code for e in homeless.show if isinstance(e, ev.Error)] == [ErrorCode.NOT_IN_ROOM]
    view.observe(ev.Joined(LOBBY, "bot"))
    assert view.current == LOBBY
    assert view.interpret("hello").send == ev.Say(LOBBY, "hello")
    assert view.interpret("/quit tired").send == ev.Goodbye("tired")
    assert view.interpret("   ").send is None
    shown = view.interpret("/help").show
    assert view.interpret("/help").send is None
    assert shown == tuple(ev.Reply(line) for line in HELP_LINES)
    typo = view.interpret("/shrug")
    assert typo.send is None
    assert isinstance(typo.show[0], ev.Error)
    assert typo.show[0].code is ErrorCode.UNKNOWN_COMMAND
    again = view.interpret("/join #lobby")  # a room it is in: a local switch, no frame
    assert again.send is None
    assert again.show == (ev.Reply("now talking in #lobby"),)


def test_nicks_keep_their_colour_under_casefolding() -> None:
    assert colour("Маша") == colour("маша").replace("маша", "Маша")
    line = styled(ev.Message(LOBBY, "alice", "hi"), LOBBY)
    assert line is not None
    assert "alice" in line
    assert line.endswith(": hi")
    assert "#lobby" not in line  # from the current room: no room in front
    assert line != "alice: hi"  # coloured
    elsewhere = styled(ev.Message("#dev", "alice", "hi"), LOBBY)
    assert elsewhere is not None
    assert "[#dev]" in elsewhere
    assert elsewhere.endswith(line)
    assert styled(ev.Ping(1)) is None


def test_plain_mode_sends_lines_and_prints_events() -> None:
    server = FakeServer()
    stdin = io.StringIO("hello\n/me waves\n/help\n/bogus\n\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=stdout, stderr=stderr)
    assert code == 0
    assert server.link is not None
    assert server.link.sent == [ev.Say(LOBBY, "hello"), ev.Act(LOBBY, "waves")]
    assert server.link.closed_with == [""]
    lines = stdout.getvalue().splitlines()
    assert lines[0] == "*** welcome, bot: nobody else is here"
    assert lines[1] == "*** bot joined #lobby"
    assert lines[2 : 2 + len(HELP_LINES)] == [f"* {line}" for line in HELP_LINES]
    assert lines[-2].startswith("* error (unknown-command)")
    assert lines[-1] == "*** disconnected: bye"
    assert stderr.getvalue() == ""


def test_plain_mode_refused() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_plain(
        FakeServer(refuse="refused: taken"), "h", 1, "bot", prog="x", stdin=io.StringIO(), stdout=stdout, stderr=stderr
    )
    assert code == 1
    assert stdout.getvalue() == ""
    assert stderr.getvalue() == "x: refused: taken\n"


def test_plain_mode_follows_the_current_room() -> None:
    server = FakeServer(answer_joins=True)
    stdin = io.StringIO("/join #dev\nhello dev\n/msg #lobby hello lobby\n/join #lobby\nback home\n/names\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    assert run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=stdout, stderr=stderr) == 0
    assert server.link is not None
    assert server.link.sent == [
        ev.Join("#dev"),
        ev.Say("#dev", "hello dev"),
        ev.Say(LOBBY, "hello lobby"),
        ev.Say(LOBBY, "back home"),  # /join of a room it is in switched without a frame
        ev.Names(LOBBY),
    ]
    assert stdout.getvalue().splitlines()[2:] == [
        "*** bot joined #dev",
        "* now talking in #lobby",
        "*** disconnected: bye",
    ]
    assert stderr.getvalue() == ""


def test_plain_mode_marks_lines_from_other_rooms() -> None:
    server = FakeServer(answer_joins=True)
    stdin = io.StringIO("/join #dev\n")
    stdout = io.StringIO()
    assert run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=stdout, stderr=io.StringIO()) == 0
    view = ClientView("bot")  # what plain mode shows is the common rendering from the reader's view
    view.observe(ev.Joined("#dev", "bot"))
    assert view.render(ev.Message(LOBBY, "ann", "hi")) == "[#lobby] ann: hi"
    assert view.render(ev.Message("#dev", "ann", "hi")) == "ann: hi"
    assert view.render(ev.Parted("#dev", "ann", "")) == "*** ann left #dev"
    assert view.render(ev.Left("ann", "tired")) == "*** ann left (tired)"


# PROTOCOL.md, "The client's view": "/join #room ... sends Join and makes the
# room current at once, so that the next line already goes there", "/part
# leaves at once", and "Lines are read as typed, never held back for the
# server's answers": a script's lines keep their meaning however fast they come.


def test_plain_mode_a_typed_join_is_current_before_the_server_answers() -> None:
    server = FakeServer()  # never answers the Join, as a slow server would not have yet
    stdin = io.StringIO("/join #dev\nhello dev\n")
    code = run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 0
    assert server.link is not None
    assert server.link.sent == [ev.Join("#dev"), ev.Say("#dev", "hello dev")]


def test_plain_mode_a_typed_part_leaves_before_the_server_answers() -> None:
    server = FakeServer(answer_joins=True)  # answers Joins, never Parts
    stdin = io.StringIO("/join #dev\n/part\nhello lobby\n")
    code = run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 0
    assert server.link is not None
    assert server.link.sent == [ev.Join("#dev"), ev.Part("#dev", ""), ev.Say(LOBBY, "hello lobby")]


class Terminal:
    """A prompt_toolkit session that reads keys from a pipe and writes to a buffer."""

    def __init__(self, keys: Callable[[str], None], screen: io.StringIO) -> None:
        self.type = keys
        self.screen = screen


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    screen = io.StringIO()
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=PlainTextOutput(screen)):
        yield Terminal(pipe.send_text, screen)


def test_terminal_sends_what_is_typed_and_quits_on_ctrl_d(terminal: Terminal) -> None:
    server = FakeServer()
    terminal.type("hello\r/msg bob psst\r/help\r\x04")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    assert server.link is not None
    assert server.link.sent == [ev.Say(LOBBY, "hello"), ev.Whisper("bob", "psst")]
    assert server.link.closed_with == [""]
    screen = terminal.screen.getvalue()
    assert "alice [#lobby]> " in screen  # the prompt: nick and current room
    assert f"{colour('alice')}: hello" in screen  # the user's own message, shown locally
    assert "/nick NEW" in screen  # /help, answered locally
    assert "*** disconnected: bye" in screen


def test_terminal_quits_on_ctrl_c(terminal: Terminal) -> None:
    server = FakeServer()
    terminal.type("half typ\x03")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    assert server.link is not None
    assert server.link.sent == []
    assert server.link.closed_with == [""]


def test_terminal_ends_when_the_server_does(terminal: Terminal, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer()

    def server_goes_away() -> None:
        assert server.connected.wait(WAIT)
        assert server.link is not None
        server.link.on_event(ev.Goodbye("the server is shutting down"))
        server.link.on_closed("the server is shutting down")

    thread = threading.Thread(target=server_goes_away)
    thread.start()
    try:
        assert run_terminal(server, "h", 1, "alice", prog="x") == 1
    finally:
        thread.join(WAIT)
    assert "x: the server is shutting down" in capsys.readouterr().err
    assert "*** disconnected: the server is shutting down" in terminal.screen.getvalue()
