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
from common.wire.errors import ErrorCode
from frontend import ConnectError, Link
from frontend.commands import interpret
from frontend.plain import run_plain
from frontend.terminal import colour, run_terminal, styled

from .conftest import WAIT


class FakeLink:
    """Records what the front end sends; the test plays the server."""

    def __init__(self, on_event: Callable[[ev.ServerEvent], None], on_closed: Callable[[str], None]) -> None:
        self.on_event = on_event
        self.on_closed = on_closed
        self.sent: list[ev.ClientEvent] = []
        self.closed_with: list[str] = []
        self.got_goodbye = threading.Event()

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)

    def close(self, reason: str = "") -> None:
        if not self.closed_with:
            self.closed_with.append(reason)
            self.on_event(ev.Goodbye("bye"))
            self.on_closed("bye")


class FakeServer:
    """A ``Connect`` that welcomes (or refuses) and keeps the link it made."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
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
        self.link = FakeLink(on_event, on_closed)
        on_event(ev.Welcome(nick, 1))
        self.connected.set()
        return self.link


def test_interpret_answers_help_and_typos_locally() -> None:
    assert interpret("hello").send == ev.Say("hello")
    assert interpret("/quit tired").send == ev.Goodbye("tired")
    assert interpret("   ").send is None
    shown = interpret("/help").show
    assert interpret("/help").send is None
    assert all(isinstance(e, ev.Reply) for e in shown)
    assert len(shown) == 7
    typo = interpret("/shrug")
    assert typo.send is None
    assert isinstance(typo.show[0], ev.Error)
    assert typo.show[0].code is ErrorCode.UNKNOWN_COMMAND


def test_nicks_keep_their_colour_under_casefolding() -> None:
    assert colour("Маша") == colour("маша").replace("маша", "Маша")
    line = styled(ev.Message("alice", "hi"))
    assert line is not None
    assert "alice" in line
    assert line.endswith(": hi")
    assert line != "alice: hi"  # coloured
    assert styled(ev.Ping(1)) is None


def test_plain_mode_sends_lines_and_prints_events() -> None:
    server = FakeServer()
    stdin = io.StringIO("hello\n/me waves\n/help\n/bogus\n\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=stdout, stderr=stderr)
    assert code == 0
    assert server.link is not None
    assert server.link.sent == [ev.Say("hello"), ev.Act("waves")]
    assert server.link.closed_with == [""]
    lines = stdout.getvalue().splitlines()
    assert lines[0] == "*** welcome, bot: nobody else is here"
    assert lines[1].startswith("* /nick NEW")
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
    assert server.link.sent == [ev.Say("hello"), ev.Whisper("bob", "psst")]
    assert server.link.closed_with == [""]
    screen = terminal.screen.getvalue()
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
