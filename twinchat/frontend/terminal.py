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
The user's own messages are shown locally as they are sent (the server does
not echo them back); ``/help`` is answered locally; ``/quit``, Ctrl-C and
Ctrl-D leave with a Goodbye. When the server ends the session, the prompt is
ended from the receive thread through the UI's event loop.
"""

from __future__ import annotations

import sys
import threading
import zlib
from collections.abc import Callable
from typing import Any, Final

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.patch_stdout import patch_stdout

from common.chat import events as ev
from common.chat.commands import COMMANDS
from common.chat.nicks import nick_key
from common.chat.render import render
from common.chat.view import ClientView
from twinchat.frontend.link import Connect, ConnectError, Link

_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_RED: Final = "\x1b[31m"
_BOLD: Final = "\x1b[1m"
#: Nick colours: the bright ANSI colours a dark or light terminal both show.
_PALETTE: Final = ("\x1b[91m", "\x1b[92m", "\x1b[93m", "\x1b[94m", "\x1b[95m", "\x1b[96m")


def colour(nick: str) -> str:
    """``nick`` in its own colour, the same for every spelling of one nick."""
    shade = _PALETTE[zlib.crc32(nick_key(nick).encode()) % len(_PALETTE)]
    return f"{shade}{nick}{_RESET}"


def _who(e: ev.WhoReply) -> str:
    where = f"in {e.room}" if e.room else "online"
    return f"* {where}: " + ", ".join(colour(n) for n in e.nicks) + (" ..." if e.more else "")


_STYLED: Final[dict[type[ev.Event], Callable[[Any], str]]] = {
    ev.Message: lambda e: f"{colour(e.sender)}: {e.text}",
    ev.Action: lambda e: f"* {colour(e.sender)} {e.text}",
    ev.Private: lambda e: f"{_BOLD}*{_RESET}{colour(e.sender)}{_BOLD}*{_RESET} {e.text}",
    ev.Joined: lambda e: f"{_DIM}***{_RESET} {colour(e.nick)} {_DIM}joined {e.room}{_RESET}",
    ev.Renamed: lambda e: f"{_DIM}***{_RESET} {colour(e.old)} {_DIM}is now known as{_RESET} {colour(e.new)}",
    ev.WhoReply: _who,
    ev.Error: lambda e: f"{_RED}{render(e)}{_RESET}",
}


def styled(event: ev.Event, here: str | None = None) -> str | None:
    """The coloured line for ``event``: the common rendering, nicks coloured,
    and the room in front of a message or action from a room that is not ``here``."""
    style = _STYLED.get(type(event))
    if style is None:
        text = render(event, here)
        if text is not None and text.startswith("***"):
            return f"{_DIM}{text}{_RESET}"
        return text
    line = style(event)
    if isinstance(event, ev.Message | ev.Action) and event.room != here:
        return f"{_DIM}[{event.room}]{_RESET} {line}"
    return line


def echo(nick: str, event: ev.ClientEvent, here: str | None) -> str | None:
    """How the user's own outgoing ``event`` is shown to them, if at all."""
    if isinstance(event, ev.Say):
        return styled(ev.Message(event.room, nick, event.text), here)
    if isinstance(event, ev.Act):
        return styled(ev.Action(event.room, nick, event.text), here)
    if isinstance(event, ev.Whisper):
        return f"{_BOLD}->{_RESET} *{colour(event.to)}* {event.text}"
    return None


class _Known:
    """The words Tab completes: commands, and the rooms and nicks seen so far."""

    def __init__(self) -> None:
        self.words: dict[str, None] = dict.fromkeys(f"/{name}" for name in COMMANDS)

    def see(self, event: ev.Event) -> None:
        for word in _words(event):
            self.words[word] = None

    def __call__(self) -> list[str]:
        return list(self.words)


def _words(event: ev.Event) -> tuple[str, ...]:
    if isinstance(event, ev.Message | ev.Action):
        return (event.room, event.sender)
    if isinstance(event, ev.Joined):
        return (event.room, event.nick)
    if isinstance(event, ev.Private):
        return (event.sender,)
    if isinstance(event, ev.Renamed):
        return (event.new,)
    if isinstance(event, ev.WhoReply):
        return event.nicks
    if isinstance(event, ev.RoomList):
        return tuple(info.room for info in event.rooms)
    return ()


class _LinkEnded(Exception):
    """Ends the prompt when the server ends the session."""


def run_terminal(connect: Connect, host: str, port: int, nick: str, *, prog: str) -> int:
    """Run the interactive UI; return the exit code (0: the user left)."""
    known = _Known()
    completer = WordCompleter(known, WORD=True, sentence=False)
    session: PromptSession[str] = PromptSession(completer=completer, complete_while_typing=False)
    view = ClientView(nick)
    lock = threading.Lock()  # the view: the link's thread and the prompt's both use it
    ended = threading.Event()
    why: list[str] = []

    def on_event(event: ev.ServerEvent) -> None:
        with lock:
            view.observe(event)
            known.see(event)
            line = styled(event, view.current)
        if line is not None:
            print(line, flush=True)

    def on_closed(reason: str) -> None:
        why.append(reason)
        ended.set()
        app = session.app
        loop = app.loop
        if loop is not None and app.is_running:
            loop.call_soon_threadsafe(_end_prompt, app)

    failed = ""
    with patch_stdout(raw=True):
        try:
            link = connect(host, port, nick, on_event, on_closed)
        except ConnectError as exc:
            failed = str(exc)
        except KeyboardInterrupt:
            return 130  # Ctrl-C before the prompt: nothing to leave yet
        else:
            left = _converse(session, link, view, lock, ended)
    if failed:
        print(f"{prog}: {failed}", file=sys.stderr, flush=True)
        return 1
    if left:
        return 0
    print(f"{prog}: {why[0] if why else 'connection closed'}", file=sys.stderr, flush=True)
    return 1


def _prompt(view: ClientView) -> str:
    where = view.current or "no room"
    return f"{view.nick} [{where}]> "


def _converse(
    session: PromptSession[str], link: Link, view: ClientView, lock: threading.Lock, ended: threading.Event
) -> bool:
    """Read and send what the user types; True if the user left, False if the link ended."""
    try:
        while not ended.is_set():
            try:
                # pre_run covers a link that ended before this prompt was running.
                line = session.prompt(lambda: _prompt(view), pre_run=lambda: _end_prompt_if(ended, session.app))
            except (EOFError, KeyboardInterrupt):
                return True
            except _LinkEnded:
                return False
            with lock:
                typed = view.interpret(line)
                here = view.current
                shown = [styled(event, here) for event in typed.show]
                if typed.send is not None and not isinstance(typed.send, ev.Goodbye):
                    shown.append(echo(view.nick or "", typed.send, here))
            if isinstance(typed.send, ev.Goodbye):
                link.close(typed.send.reason)
                return True
            if typed.send is not None:
                link.send(typed.send)
            for text in shown:
                if text is not None:
                    print(text, flush=True)
        return False
    finally:
        link.close()


def _end_prompt(app: Any) -> None:
    # Before the prompt's future exists, pre_run will end it instead.
    if app.is_running and app.future is not None and not app.is_done:
        app.exit(exception=_LinkEnded())


def _end_prompt_if(ended: threading.Event, app: Any) -> None:
    if ended.is_set():
        _end_prompt(app)
