"""The shared client front end, driven through a fake link (no network)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.rooms import LOBBY
from common.chat.view import ClientView
from common.wire.errors import ErrorCode
from twinchat.frontend import ConnectError, Link
from twinchat.frontend.plain import run_plain
from twinchat.frontend.terminal import Known, Palette, Styler, calls_for, run_terminal

from .conftest import WAIT

style = Styler()
colour = style.palette.colour
styled = style.styled


class FakeLink:
    """Records what the front end sends; the test plays the server."""

    def __init__(
        self,
        nick: str,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
        *,
        answer_joins: bool,
        absent: frozenset[str] = frozenset(),
    ) -> None:
        self.nick = nick
        self.on_event = on_event
        self.on_closed = on_closed
        self.answer_joins = answer_joins
        self.absent = absent
        self.sent: list[ev.ClientEvent] = []
        self.closed_with: list[str] = []
        self.got_goodbye = threading.Event()
        self.seq = 0

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)
        if isinstance(event, ev.Say | ev.Act):  # the echo, numbered and timed, as the hub sends it
            self.seq += 1
            echo = ev.Message if isinstance(event, ev.Say) else ev.Action
            self.on_event(echo(event.room, self.nick, event.text, self.seq, int(time.time() * 1000)))
        elif self.answer_joins and isinstance(event, ev.Join):
            self.on_event(ev.Joined(event.room, self.nick))
        elif isinstance(event, ev.Whisper) and event.to in self.absent:
            self.on_event(ev.Error(ErrorCode.NO_SUCH_NICK, f"nobody is called {event.to}"))
        elif isinstance(event, ev.Ping):  # in order, after what was sent before, as the hub does
            self.on_event(ev.Pong(event.nonce))

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
    ``taken``: nicks refused with NICK_TAKEN; ``absent``: nobody holds these
    (a Whisper to one is answered NO_SUCH_NICK).
    """

    def __init__(
        self,
        refuse: str = "",
        *,
        answer_joins: bool = False,
        taken: frozenset[str] = frozenset(),
        absent: frozenset[str] = frozenset(),
    ) -> None:
        self.refuse = refuse
        self.answer_joins = answer_joins
        self.taken = taken
        self.absent = absent
        self.tried: list[str] = []
        self.link: FakeLink | None = None
        self.connected = threading.Event()

    def __call__(
        self,
        host: str,
        port: int,
        nick: str,
        on_event: Callable[[ev.ServerEvent], None],
        on_closed: Callable[[str], None],
        **_: object,  # password, resume: this server asks for neither
    ) -> Link:
        self.tried.append(nick)
        if self.refuse:
            raise ConnectError(self.refuse)
        if nick in self.taken:
            raise ConnectError(f"refused: the nick {nick} is taken (nick-taken)", code=ErrorCode.NICK_TAKEN)
        self.link = FakeLink(nick, on_event, on_closed, answer_joins=self.answer_joins, absent=self.absent)
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
    # Its own lines come back from the server (the echo), each once.
    assert lines[2:4] == ["bot: hello", "* bot waves"]
    assert lines[4 : 4 + len(HELP_LINES)] == [f"* {line}" for line in HELP_LINES]
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


def test_plain_mode_sends_a_long_line_as_several_messages() -> None:
    server = FakeServer()
    long = "ж" * 3000  # 6000 bytes: two messages, cut between characters
    stdin = io.StringIO(f"{long}\n/msg bob {long}\none\rtwo\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    assert run_plain(server, "h", 1, "bot", prog="x", stdin=stdin, stdout=stdout, stderr=stderr) == 0
    assert server.link is not None
    assert server.link.sent == [
        ev.Say(LOBBY, "ж" * 2048),
        ev.Say(LOBBY, "ж" * 952),
        ev.Whisper("bob", "ж" * 2048),
        ev.Whisper("bob", "ж" * 952),
        ev.Say(LOBBY, "one"),  # a carriage return inside a line ends a line, as a newline does
        ev.Say(LOBBY, "two"),
    ]
    assert "error" not in stdout.getvalue()


def test_plain_mode_tries_a_taken_nick_with_underscores() -> None:
    server = FakeServer(taken=frozenset({"bot", "bot_"}))
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_plain(server, "h", 1, "bot", prog="x", stdin=io.StringIO("hi\n"), stdout=stdout, stderr=stderr)
    assert code == 0
    assert server.tried == ["bot", "bot_", "bot__"]
    assert stdout.getvalue().startswith("*** welcome, bot__: ")
    assert stderr.getvalue().splitlines() == [
        "x: refused: the nick bot is taken (nick-taken); trying bot_",
        "x: refused: the nick bot_ is taken (nick-taken); trying bot__",
    ]


def test_plain_mode_gives_up_after_the_retries() -> None:
    server = FakeServer(taken=frozenset({"bot", "bot_"}))
    stderr = io.StringIO()
    code = run_plain(
        server, "h", 1, "bot", prog="x", stdin=io.StringIO(), stdout=io.StringIO(), stderr=stderr, nick_retries=1
    )
    assert code == 1
    assert server.tried == ["bot", "bot_"]
    assert stderr.getvalue().splitlines()[-1] == "x: refused: the nick bot_ is taken (nick-taken)"


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
        "bot: hello dev",
        "[#lobby] bot: hello lobby",
        "* now talking in #lobby",
        "bot: back home",
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


class Screen(io.StringIO):
    """A terminal's output that a test can wait on for some text to appear."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            n = super().write(text)
            self._changed.notify_all()
        return n

    def wait_for(self, text: str, times: int = 1, timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.getvalue().count(text) >= times, timeout)


class Terminal:
    """A prompt_toolkit session that reads keys from a pipe and writes to a buffer."""

    def __init__(self, keys: Callable[[str], None], screen: Screen) -> None:
        self.type = keys
        self.screen = screen

    def run(self, *steps: tuple[str, str, int]) -> Callable[[], None]:
        """Type each step's keys once the screen shows its text (so many times)
        from a thread; returns what joins it. A prompt that ends at once may
        drop a line printed just before (prompt_toolkit's patch_stdout writes
        it into that prompt's loop): the keys that end one wait for the line."""
        failed: list[str] = []

        def play() -> None:
            for keys, text, times in steps:
                if text and not self.screen.wait_for(text, times):
                    failed.append(text)
                self.type(keys)

        thread = threading.Thread(target=play)
        thread.start()

        def join() -> None:
            thread.join(WAIT)
            assert not failed, f"never shown: {failed}"

        return join


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    screen = Screen()
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=PlainTextOutput(screen)):
        yield Terminal(pipe.send_text, screen)


def test_terminal_sends_what_is_typed_and_quits_on_ctrl_d(terminal: Terminal) -> None:
    server = FakeServer()
    palette = Palette()  # as the session's: alice seen first, then bob
    mine, to_bob = f"{palette.colour('alice')}: hello", f"*{palette.colour('bob')}* psst"
    done = terminal.run(
        ("hello\r", "", 0), ("/msg bob psst\r", mine, 1), ("/help\r", to_bob, 1), ("\x04", "current room", 1)
    )
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    done()
    assert server.link is not None
    assert server.link.sent == [ev.Say(LOBBY, "hello"), ev.Whisper("bob", "psst"), ev.Ping(1)]
    assert server.link.closed_with == [""]
    screen = terminal.screen.getvalue()
    assert "alice [#lobby]>" in screen  # the prompt: nick and current room
    assert screen.count(mine) == 1  # the user's own message, shown once, locally
    assert "/nick NEW" in screen  # /help, answered locally
    assert "disconnected" not in screen  # the user left: nothing to explain


def test_terminal_lines_carry_the_local_time(terminal: Terminal) -> None:
    noon = time.mktime((2026, 12, 2, 12, 34, 0, 0, 0, -1))
    # alice, the first nick the session saw, has the palette's first colour.
    mine = f"12:34\x1b[0m {Palette().colour('alice')}: hello"
    done = terminal.run(("hello\r", "", 0), ("\x04", mine, 1))
    assert run_terminal(FakeServer(), "h", 1, "alice", prog="x", clock=lambda: noon) == 0
    done()
    screen = terminal.screen.getvalue()
    assert "\x1b[2m12:34\x1b[0m \x1b[2m*** welcome, alice" in screen


def test_terminal_ctrl_c_clears_a_half_typed_line_and_quits_on_an_empty_one(terminal: Terminal) -> None:
    server = FakeServer()
    terminal.type("half typ\x03hello\r\x03")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    assert server.link is not None
    assert server.link.sent == [ev.Say(LOBBY, "hello")]
    assert server.link.closed_with == [""]


def test_terminal_sends_a_paste_line_by_line_and_a_long_line_in_pieces(terminal: Terminal) -> None:
    server = FakeServer()
    long = "word " * 1000  # 5000 bytes: over one message
    # A bracketed paste arrives as one piece of input, line breaks included.
    terminal.type("\x1b[200~one\ntwo\n/me waves\x1b[201~\r" + long + "\r\x04")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    assert server.link is not None
    sent = server.link.sent
    assert sent[:3] == [ev.Say(LOBBY, "one"), ev.Say(LOBBY, "two"), ev.Act(LOBBY, "waves")]
    pieces = sent[3:]
    assert len(pieces) == 2
    assert all(isinstance(e, ev.Say) and len(e.text.encode()) <= 4096 for e in pieces)
    assert "".join(e.text for e in pieces if isinstance(e, ev.Say)) == long


def test_terminal_gives_a_refused_line_back(terminal: Terminal) -> None:
    server = FakeServer()
    # Enter on the given-back line refuses it again; Ctrl-C drops it; Ctrl-D quits.
    refusal = "unknown command /mee"
    done = terminal.run(("/mee waves\r", "", 0), ("\r", refusal, 1), ("\x03\x04", refusal, 2))
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    done()
    assert server.link is not None
    assert server.link.sent == []
    screen = terminal.screen.getvalue()
    assert screen.count("unknown command /mee") == 2
    assert "(unknown-command)" not in screen  # people get the detail, not the code


def test_terminal_shows_a_private_message_only_once_the_server_took_it(terminal: Terminal) -> None:
    server = FakeServer(absent=frozenset({"nosuch"}))
    palette = Palette()  # as the session's: alice seen first, then nosuch, then bob
    palette.colour("alice")
    palette.colour("nosuch")
    to_bob = f"*{palette.colour('bob')}* psst"
    done = terminal.run(
        ("/msg nosuch hello\r", "", 0), ("/msg bob psst\r", "nobody is called nosuch", 1), ("\x04", to_bob, 1)
    )
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    done()
    assert server.link is not None
    assert server.link.sent == [ev.Whisper("nosuch", "hello"), ev.Ping(1), ev.Whisper("bob", "psst"), ev.Ping(2)]
    assert "* hello" not in terminal.screen.getvalue()  # never shown as if sent


def test_terminal_asks_again_for_a_taken_nick(terminal: Terminal) -> None:
    server = FakeServer(taken=frozenset({"alice"}))
    terminal.type("alice2\r\x04")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 0
    assert server.tried == ["alice", "alice2"]
    assert "the nick alice is taken\n" in terminal.screen.getvalue().replace("\r", "")  # without its code
    assert "alice2 [#lobby]>" in terminal.screen.getvalue()


def test_terminal_gives_up_when_no_other_nick_is_given(terminal: Terminal, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(taken=frozenset({"alice"}))
    terminal.type("\r")
    assert run_terminal(server, "h", 1, "alice", prog="x") == 1
    assert server.tried == ["alice"]
    assert "x: refused: the nick alice is taken" in capsys.readouterr().err


def test_terminal_ends_with_one_line_and_gives_back_the_half_typed_one(
    terminal: Terminal, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer()

    def server_goes_away() -> None:
        assert server.connected.wait(WAIT)
        assert terminal.screen.wait_for("half a thou")
        assert server.link is not None
        server.link.on_event(ev.Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down"))
        server.link.on_event(ev.Goodbye("the server is shutting down"))
        server.link.on_closed("the server is shutting down")

    terminal.type("half a thou")
    thread = threading.Thread(target=server_goes_away)
    thread.start()
    try:
        # Without reconnect=False it would wait for the server to come back (tests/test_reconnect.py).
        assert run_terminal(server, "h", 1, "alice", prog="x", reconnect=False) == 1
    finally:
        thread.join(WAIT)
    err = capsys.readouterr().err
    assert err == "x: disconnected: the server is shutting down\nx: not sent: half a thou\n"
    screen = terminal.screen.getvalue()
    assert "shutting down" not in screen  # said once, on stderr, after the UI is gone


def test_each_nick_gets_a_colour_of_its_own() -> None:
    palette = Palette()
    nicks = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"]
    shades = {palette.colour(n).removesuffix(n + "\x1b[0m") for n in nicks}
    assert len(shades) == len(nicks)
    assert palette.colour("ALICE") == palette.colour("alice").replace("alice", "ALICE")  # kept, by nick key


def test_a_mention_or_a_private_message_rings_and_is_highlighted() -> None:
    assert calls_for(ev.Private("bob", "psst"), "alice")
    assert calls_for(ev.Message(LOBBY, "bob", "hi Alice, look"), "alice")
    assert calls_for(ev.Action(LOBBY, "bob", "waves at alice"), "alice")
    assert not calls_for(ev.Message(LOBBY, "bob", "malice aforethought"), "alice")
    assert not calls_for(ev.Message(LOBBY, "alice", "I am alice"), "alice")  # one's own line
    assert not calls_for(ev.Joined(LOBBY, "alice"), "alice")
    line = Styler().styled(ev.Message(LOBBY, "bob", "alice: ping"), LOBBY, me="alice")
    assert line is not None
    assert line.startswith("\a\x1b[7m")
    plain = Styler().styled(ev.Message(LOBBY, "bob", "hi all"), LOBBY, me="alice")
    assert plain is not None
    assert "\a" not in plain


def completions(known: Known, before_cursor: str) -> list[str]:
    return [c.text for c in known.completer.get_completions(Document(before_cursor), CompleteEvent())]


def test_tab_completes_commands_rooms_and_nicks_seen() -> None:
    known = Known()
    for event in (
        ev.Joined(LOBBY, "zelda"),
        ev.RoomList((ev.RoomInfo("#kitchen", 2, ""),), False),
        ev.Message("#dev", "Zack", "hi"),
        ev.Private("yuri", "psst"),
        ev.Renamed("zelda", "zora"),
        ev.WhoReply("#ops", ("xena",), False),
        ev.Topic("#garden", "roses", "zora", 1, True),
    ):
        known.see(event)
    assert completions(known, "/jo") == ["/join"]
    assert completions(known, "/join #k") == ["#kitchen"]
    assert completions(known, "hi z") == ["zelda", "Zack", "zora"]  # in any case
    assert completions(known, "/msg y") == ["yuri"]
    assert completions(known, "/names #") == ["#lobby", "#kitchen", "#dev", "#ops", "#garden"]
    assert completions(known, "x") == ["xena"]
