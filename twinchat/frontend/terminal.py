"""The terminal UI: messages scroll above an input line that stays put.

Strategy: a prompt_toolkit ``PromptSession`` owns the input line, and
``patch_stdout`` turns every ``print`` (from any thread) into "erase the
prompt, print the line above it, draw the prompt again", so the receive
thread never writes over a half-typed line. Lines are coloured with plain
ANSI sequences (``raw=True`` lets them through); server texts cannot carry
control characters (``common.chat.events`` refuses them), so a peer cannot drive
our terminal.

The client's view (``common.chat.view``) knows its nick, its rooms and the
current one: the prompt shows them, a line from another room starts with
that room, and Tab completes commands, room names and the nicks seen so far.
What the terminal adds for a person (the plain rendering is for scripts):

- every line starts with the local time (``HH:MM``); the clock is read here,
  never in ``common``. A message replayed from the history (after a join, a
  reconnect or ``/history``) and a private message kept while we were away
  start with the time they were said instead (and the date, if not today);
- the accepted input line is erased, and the user's own message is shown
  when the server sends it back (numbered, as it is stored): what the person
  saw is what the history holds. A private message is not sent back: it is
  shown once the server has taken it: it is followed by a ``Ping``, and since
  the server answers requests in order (PROTOCOL.md, "Answers of several
  frames"), a ``NO_SUCH_NICK`` comes before the ``Pong`` if it failed;
- when the link drops, status lines say so and when it is back
  (``link.Reconnecting``); what is typed meanwhile waits and is sent then. A
  room whose history could not be resumed (trimmed, or a server restarted
  without it) gets a line saying some messages were lost;
- a registered nick's password is asked for (not echoed) when the server
  wants it, after a yes if it would go in clear to another machine;
- errors are shown by their detail, without the code;
- each nick gets a colour of its own, the least used so far (the first
  eleven nicks all differ), and keeps it for the session;
- a line that mentions the user's nick, and every private message, rings
  the bell and is highlighted;
- a pasted block is sent line by line and a long line as several messages
  (``ClientView.interpret_typed``); a line refused on the spot comes back
  in the input to be mended;
- Ctrl-C clears a half-typed line (as shells do) and quits on an empty one;
  Ctrl-D and ``/quit`` quit;
- a taken or invalid nick at the start is asked for again;
- when the server ends the session, one line says why, and a half-typed line
  is printed back rather than lost.
"""

from __future__ import annotations

import getpass
import itertools
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout

from common.chat import events as ev
from common.chat.commands import COMMANDS
from common.chat.nicks import nick_key
from common.chat.render import render
from common.chat.view import ClientView
from common.wire.errors import ErrorCode
from twinchat.frontend.link import Backoff, Connect, ConnectError, Reconnecting
from twinchat.frontend.password import Cleartext

_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_RED: Final = "\x1b[31m"
_BOLD: Final = "\x1b[1m"
_REVERSE: Final = "\x1b[7m"
_BELL: Final = "\a"
#: Nick colours: the bright ANSI colours, then the normal ones a dark or light
#: terminal both show (not blue, too dark on black; red is for errors).
_PALETTE: Final = (
    "\x1b[91m",
    "\x1b[92m",
    "\x1b[93m",
    "\x1b[94m",
    "\x1b[95m",
    "\x1b[96m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[35m",
    "\x1b[36m",
    "\x1b[90m",
)

#: Errors that come just before the server's Goodbye: the line that ends the
#: UI says why, once, so they are not shown on their own as well.
_FAREWELLS: Final = frozenset(
    {
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.SLOW_CONSUMER,
        ErrorCode.RATE_LIMITED,
        ErrorCode.REGISTRATION_TIMEOUT,
        ErrorCode.SERVER_FULL,
        ErrorCode.BAD_MAGIC,
        ErrorCode.BAD_VERSION,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.TRUNCATED,
    }
)


class Palette:
    """A colour for each nick: the one fewest known nicks have, given at first
    sight and kept, the same for every spelling of one nick (its nick key)."""

    def __init__(self) -> None:
        self._given: dict[str, str] = {}
        self._uses: Counter[str] = Counter(dict.fromkeys(_PALETTE, 0))

    def colour(self, nick: str) -> str:
        """``nick`` in its colour."""
        key = nick_key(nick)
        shade = self._given.get(key)
        if shade is None:
            # min() keeps the palette's order among equals: stable, testable.
            shade = min(_PALETTE, key=self._uses.__getitem__)
            self._given[key] = shade
            self._uses[shade] += 1
        return f"{shade}{nick}{_RESET}"


class Styler:
    """Events as the coloured lines of one session (its palette, its nick)."""

    def __init__(self, palette: Palette | None = None) -> None:
        self.palette = palette or Palette()
        c = self.palette.colour
        self._styles: dict[type[ev.Event], Callable[[Any], str]] = {
            ev.Message: lambda e: f"{c(e.sender)}: {e.text}",
            ev.Action: lambda e: f"* {c(e.sender)} {e.text}",
            ev.Private: lambda e: f"{_BOLD}*{_RESET}{c(e.sender)}{_BOLD}*{_RESET} {e.text}",
            ev.Joined: lambda e: f"{_DIM}***{_RESET} {c(e.nick)} {_DIM}joined {e.room}{_RESET}",
            ev.Renamed: lambda e: f"{_DIM}***{_RESET} {c(e.old)} {_DIM}is now known as{_RESET} {c(e.new)}",
            ev.WhoReply: self._who,
            # For people, the detail says it; the code is for programs.
            ev.Error: lambda e: f"{_RED}* {e.detail or e.code.slug}{_RESET}",
        }

    def _who(self, e: ev.WhoReply) -> str:
        where = f"in {e.room}" if e.room else "online"
        return f"* {where}: " + ", ".join(self.palette.colour(n) for n in e.nicks) + (" ..." if e.more else "")

    def styled(self, event: ev.Event, here: str | None = None, *, me: str | None = None) -> str | None:
        """The coloured line for ``event``: the common rendering, nicks coloured,
        the room in front of a message or action from a room that is not
        ``here``; a private message, or a message or action that names ``me``,
        highlighted with a bell."""
        style = self._styles.get(type(event))
        if style is None:
            text = render(event, here)
            if text is not None and text.startswith("***"):
                return f"{_DIM}{text}{_RESET}"
            return text
        line = style(event)
        if calls_for(event, me):
            # Reverse video again after each reset inside, so the whole line stands out.
            line = _BELL + _REVERSE + line.replace(_RESET, _RESET + _REVERSE) + _RESET
        if isinstance(event, ev.Message | ev.Action) and event.room != here:
            return f"{_DIM}[{event.room}]{_RESET} {line}"
        return line

    def echo(self, nick: str, event: ev.ClientEvent, here: str | None) -> str | None:
        """How the user's own outgoing ``event`` is shown to them, if at all."""
        if isinstance(event, ev.Say):
            return self.styled(ev.Message(event.room, nick, event.text), here)
        if isinstance(event, ev.Act):
            return self.styled(ev.Action(event.room, nick, event.text), here)
        if isinstance(event, ev.Whisper):
            return f"{_BOLD}->{_RESET} *{self.palette.colour(event.to)}* {event.text}"
        return None


def calls_for(event: ev.Event, me: str | None) -> bool:
    """Whether ``event`` is for the user's attention: a private message, or a
    message or action from someone else that has their nick as a word
    (compared casefolded)."""
    if isinstance(event, ev.Private):
        return True
    if me is None or not isinstance(event, ev.Message | ev.Action) or nick_key(event.sender) == nick_key(me):
        return False
    return re.search(rf"(?<!\w){re.escape(me.casefold())}(?!\w)", event.text.casefold()) is not None


def stamp(line: str, now: float, *, today: float | None = None) -> str:
    """``line`` after the local time ``now`` as ``HH:MM``, with the date
    (``YYYY-MM-DD HH:MM``) if ``today`` is given and is another day."""
    when = time.localtime(now)
    shape = "%H:%M"
    if today is not None and time.localtime(today)[:3] != when[:3]:
        shape = "%Y-%m-%d %H:%M"
    return f"{_DIM}{time.strftime(shape, when)}{_RESET} {line}"


def said_at(event: ev.Event) -> float | None:
    """When a replayed message or a kept private message was said (Unix
    seconds), or None for news, which is shown with the time it arrives."""
    if isinstance(event, ev.Message | ev.Action) and event.history:
        return event.time / 1000
    if isinstance(event, ev.Private) and event.kept:
        return event.time / 1000
    return None


def gap_line(room: str) -> str:
    """What a person sees when messages of ``room`` are lost to them."""
    return f"{_DIM}-- some messages of {room} were lost: the history was trimmed or reset --{_RESET}"


class Known:
    """The words Tab completes: commands, and the rooms and nicks seen so far."""

    def __init__(self) -> None:
        self.words: dict[str, None] = dict.fromkeys(f"/{name}" for name in COMMANDS)
        #: Completes the word before the cursor, in any case, from these.
        self.completer = WordCompleter(self, WORD=True, sentence=False, ignore_case=True)

    def see(self, event: ev.Event) -> None:
        for word in _words(event):
            self.words[word] = None

    def __call__(self) -> list[str]:
        return list(self.words)


def _words(event: ev.Event) -> tuple[str, ...]:
    if isinstance(event, ev.Message | ev.Action):
        return (event.room, event.sender)
    if isinstance(event, ev.Joined | ev.Parted):
        return (event.room, event.nick)
    if isinstance(event, ev.Private):
        return (event.sender,)
    if isinstance(event, ev.Renamed):
        return (event.new,)
    if isinstance(event, ev.WhoReply):
        return (event.room, *event.nicks) if event.room else event.nicks
    if isinstance(event, ev.RoomList):
        return tuple(info.room for info in event.rooms)
    if isinstance(event, ev.Topic):
        return (event.room,)
    return ()


class _LinkEnded(Exception):
    """Ends the prompt when the server ends the session."""


class _Whispers:
    """Private messages sent, each waiting for the Pong of the Ping sent after
    it: the server answers in order, so a NO_SUCH_NICK before that Pong is
    this message's, and the Pong says the server has taken it."""

    def __init__(self) -> None:
        self._nonces = itertools.count(1)
        #: nonce -> the line to show once the Pong comes (None: it failed).
        self._waiting: dict[int, str | None] = {}

    def sent(self, echo: str) -> ev.Ping:
        nonce = next(self._nonces)
        self._waiting[nonce] = echo
        return ev.Ping(nonce)

    def failed(self) -> None:
        for nonce, echo in self._waiting.items():
            if echo is not None:
                self._waiting[nonce] = None
                return

    def answered(self, nonce: int) -> str | None:
        return self._waiting.pop(nonce, None)


def run_terminal(
    connect: Connect,
    host: str,
    port: int,
    nick: str,
    *,
    prog: str,
    clock: Callable[[], float] = time.time,
    password: str = "",
    cleartext: Cleartext | None = None,
    reconnect: bool = True,
    notice: str = "",
    ask_password: Callable[[str], str] = getpass.getpass,
    backoff: Backoff | None = None,
) -> int:
    """Run the interactive UI; return the exit code (0: the user left).

    Args:
        clock: the wall clock the line times are read from.
        password: the nick's password, if known already.
        cleartext: whether a password may go to ``host`` unencrypted (None:
            only to this machine); the person is asked otherwise.
        reconnect: come back after a lost link; ``backoff``: how fast.
        notice: a first line to show (the UDP client: it is not encrypted).
        ask_password: reads a password without echoing it (``getpass``).
    """
    ui = _Terminal(nick, clock, Cleartext(host) if cleartext is None else cleartext, ask_password)
    failed = ""
    code = 1
    with patch_stdout(raw=True):
        ui.show(f"{_DIM}{notice}{_RESET}" if notice else None)
        link = Reconnecting(
            connect,
            host,
            port,
            on_event=ui.on_event,
            on_closed=ui.on_closed,
            on_status=ui.on_status,
            whoami=ui.whoami,
            password=password,
            reconnect=reconnect,
            backoff=backoff,
        )
        try:
            if password and not ui.cleartext.permits(ui.confirm):
                failed, code = "the password was not sent", 2
            else:
                if password and ui.cleartext.remote:
                    ui.show(f"{_DIM}-- warning: {ui.cleartext.warning} --{_RESET}")
                link.open(nick, another=ui.another, password_for=ui.password_for)
        except ConnectError as exc:
            failed = str(exc)
        except KeyboardInterrupt:
            return 130  # Ctrl-C before the prompt: nothing to leave yet
        if not failed:
            left = ui.converse(link)
    if failed:
        print(f"{prog}: {failed}", file=sys.stderr, flush=True)
        return code
    if left:
        return 0
    print(f"{prog}: disconnected: {ui.why[0] if ui.why else 'connection closed'}", file=sys.stderr, flush=True)
    if ui.unsent and ui.unsent[0]:
        print(f"{prog}: not sent: {ui.unsent[0]}", file=sys.stderr, flush=True)
    return 1


class _Terminal:
    """One session's UI state, shared by the prompt's thread and the link's."""

    def __init__(
        self, nick: str, clock: Callable[[], float], cleartext: Cleartext, ask_password: Callable[[str], str]
    ) -> None:
        self.known = Known()
        self.session: PromptSession[str] = PromptSession(
            completer=self.known.completer, complete_while_typing=False, erase_when_done=True, key_bindings=_keys()
        )
        self.view = ClientView(nick)
        self.style = Styler()
        self.whispers = _Whispers()
        self.clock = clock
        self.cleartext = cleartext
        self.ask_password = ask_password
        self.lock = threading.Lock()  # the view and the whispers: the link's thread and the prompt's use them
        self.ended = threading.Event()
        #: Why the session ended: a farewell error's detail, then the link's reason.
        self.why: list[str] = []
        #: The half-typed line when the link ended under it.
        self.unsent: list[str] = []

    def show(self, line: str | None, when: float | None = None) -> None:
        if line is not None:
            now = self.clock()
            print(stamp(line, now) if when is None else stamp(line, when, today=now), flush=True)

    def on_event(self, event: ev.ServerEvent) -> None:
        line: str | None = None
        with self.lock:
            self.view.observe(event)
            self.known.see(event)
            if isinstance(event, ev.Pong):
                line = self.whispers.answered(event.nonce)
            elif isinstance(event, ev.Error) and event.code in _FAREWELLS:
                self.why.append(event.detail)
            elif isinstance(event, ev.Replay):
                line = gap_line(event.room) if event.gap else self.view.render(event)
            elif not isinstance(event, ev.Goodbye):  # the last line says why, once
                if isinstance(event, ev.Error) and event.code is ErrorCode.NO_SUCH_NICK:
                    self.whispers.failed()
                line = self.style.styled(event, self.view.current, me=self.view.nick)
        self.show(line, said_at(event))

    def on_status(self, line: str) -> None:
        """A line about the link (lost, back, a line not sent)."""
        self.why.clear()  # a farewell before a reconnect is not why the session ends
        self.show(f"{_DIM}{line}{_RESET}")

    def whoami(self) -> tuple[str | None, list[ev.Join]]:
        with self.lock:
            return self.view.nick, self.view.resume()

    def on_closed(self, reason: str) -> None:
        self.why.append(reason)
        self.ended.set()
        app = self.session.app
        loop = app.loop
        if loop is not None and app.is_running:
            loop.call_soon_threadsafe(_end_prompt, app, self.unsent)

    def another(self, taken: str, refusal: ConnectError) -> str | None:
        """Ask for another nick after ``refusal``; None: the user gives up."""
        try:
            answer = self.session.prompt(f"{_for_people(refusal)}\nanother nick (empty: give up): ")
        except (EOFError, KeyboardInterrupt):
            return None
        return answer.strip() or None

    def confirm(self, warning: str) -> bool:
        """Whether the person says yes to sending a password in clear."""
        try:
            answer = self.session.prompt(f"{warning}\nsend it anyway? (yes/no): ")
        except (EOFError, KeyboardInterrupt):
            return False
        return answer.strip().lower() in {"y", "yes"}

    def password_for(self, nick: str, refusal: ConnectError) -> str | None:
        """Ask for ``nick``'s password after ``refusal`` (never echoed); None: give up."""
        if not self.cleartext.permits(self.confirm):
            return None
        try:
            answer = self.ask_password(f"{_for_people(refusal)}\npassword for {nick} (empty: give up): ")
        except (EOFError, KeyboardInterrupt):
            return None
        return answer or None

    def converse(self, link: Reconnecting) -> bool:
        """Read and send what the user types; True if the user left, False if the link ended."""
        given_back = ""
        try:
            while not self.ended.is_set():
                try:
                    # pre_run covers a link that ended before this prompt was running.
                    text = self.session.prompt(
                        lambda: _prompt(self.view),
                        default=given_back,
                        pre_run=lambda: _end_prompt_if(self.ended, self.session.app, self.unsent),
                    )
                except (EOFError, KeyboardInterrupt):
                    return True
                except _LinkEnded:
                    return False
                sends, shown, given_back = self._interpret(text)
                for event in sends:
                    if isinstance(event, ev.Goodbye):
                        link.close(event.reason)
                        return True
                    link.send(event)
                for line in shown:
                    self.show(line)
            return False
        finally:
            link.close()

    def _interpret(self, text: str) -> tuple[list[ev.ClientEvent], list[str | None], str]:
        """What to send for ``text``, the lines to show, and the refused lines to give back."""
        shown: list[str | None] = []
        sends: list[ev.ClientEvent] = []
        refused: list[str] = []
        with self.lock:
            for typed in self.view.interpret_typed(text):
                here = self.view.current
                shown += (self.style.styled(event, here) for event in typed.show)
                if typed.refused:
                    refused.append(typed.refused)
                if typed.send is None:
                    continue
                sends.append(typed.send)
                if isinstance(typed.send, ev.Goodbye):
                    break
                if isinstance(typed.send, ev.Whisper):
                    # Not sent back by the server: shown when the Pong says it arrived.
                    echo = self.style.echo(self.view.nick or "", typed.send, here)
                    if echo is not None:
                        sends.append(self.whispers.sent(echo))
        return sends, shown, "\n".join(refused)


def _for_people(refusal: ConnectError) -> str:
    """A refusal without its code (that is for programs)."""
    why = str(refusal)
    return why if refusal.code is None else why.removesuffix(f" ({refusal.code.slug})")


def _keys() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        # As in a shell: Ctrl-C drops a half-typed line; on an empty one it quits.
        buffer = event.app.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt())

    return keys


def _prompt(view: ClientView) -> str:
    where = view.current or "no room"
    return f"{view.nick} [{where}]> "


def _end_prompt(app: Any, unsent: list[str]) -> None:
    # Before the prompt's future exists, pre_run will end it instead.
    if app.is_running and app.future is not None and not app.is_done:
        unsent.append(app.current_buffer.text)  # printed back: what was typed is not lost
        app.exit(exception=_LinkEnded())


def _end_prompt_if(ended: threading.Event, app: Any, unsent: list[str]) -> None:
    if ended.is_set():
        _end_prompt(app, unsent)
