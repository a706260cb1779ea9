"""Plain mode, for pipes, scripts and bots: lines in, lines out.

Each stdin line is a message or a /command; each server event is one line on
stdout in the common text rendering (``common.chat.render``), flushed at once so a
script can react to it. At the end of stdin the client says goodbye, waits
until the server has everything, and exits 0. Problems go to stderr.

A line longer than one message may be is sent as several
(``ClientView.interpret_typed``). A nick that is taken is tried again with
``_`` appended, up to ``nick_retries`` times (``--nick-retries``), each try
announced on stderr: a script started twice still gets in, under a name that
says it is a second one.

The session comes back by itself when the link drops or the server restarts
(``link.Reconnecting``): what it says about that (link lost, back) goes to
stderr with the other problems, so stdout stays the chat. A registered nick
takes its password from ``--password`` or ``TWINCHAT_PASSWORD``: a pipe has
nobody to ask.

Strategy: a helper thread reads stdin and hands lines to the main thread
through a queue, which the link's end can also wake; so a session the server
ends does not wait for stdin, and reading stdin never waits for the network.
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Callable
from typing import Final, TextIO

from common.chat import events as ev
from common.chat.view import ClientView
from common.wire.errors import ErrorCode
from twinchat.frontend.link import PASSWORD_REFUSALS, Backoff, Connect, ConnectError, Reconnecting
from twinchat.frontend.password import PASSWORD_ENV

#: Seconds to wait after joining for the server to put us in the lobby.
PLACED_TIMEOUT: Final = 5.0

#: Seconds the end of stdin waits for a lost link to come back, when lines
#: typed while it was away still wait to be sent.
DRAIN_TIMEOUT: Final = 30.0

#: How often a taken nick is tried again, with one more ``_``, by default.
NICK_RETRIES: Final = 3

_EOF: Final = object()  # stdin ended
_CLOSED: Final = object()  # the link ended


def run_plain(
    connect: Connect,
    host: str,
    port: int,
    nick: str,
    *,
    prog: str,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    nick_retries: int = NICK_RETRIES,
    password: str = "",
    reconnect: bool = True,
    backoff: Backoff | None = None,
) -> int:
    """Run a plain-mode session; return the exit code.

    Args:
        password: the nick's password ("" if it is not registered).
        reconnect: come back after a lost link; ``backoff``: how fast.
    """
    if stdin is None:
        stdin = _utf8(sys.stdin)
    if stdout is None:
        stdout = _utf8(sys.stdout)
    stderr = stderr or sys.stderr
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    out_lock = threading.Lock()  # guards stdout and the view: the link's thread and ours use both
    view = ClientView(nick)
    placed = threading.Event()  # the server has put us in a room (the lobby): lines have a place to go
    why: list[str] = []

    def write(line: str) -> None:
        with out_lock:
            try:
                stdout.write(line + "\n")
                stdout.flush()
            except (OSError, ValueError):
                pass  # stdout was closed by whoever reads it; keep the session going

    def on_event(event: ev.ServerEvent) -> None:
        with out_lock:
            view.observe(event)
            text = view.render(event)
            if view.current is not None:
                placed.set()
        if text is not None:
            write(text)

    def interpret(line: str) -> list[str | ev.ClientEvent]:
        with out_lock:
            return _outcome(view, line)

    def on_closed(reason: str) -> None:
        why.append(reason)
        placed.set()
        inbox.put(_CLOSED)

    def tell(line: str) -> None:
        print(f"{prog}: {line}", file=stderr, flush=True)

    def whoami() -> tuple[str | None, list[ev.Join]]:
        with out_lock:
            return view.nick, view.resume()

    link = Reconnecting(
        connect,
        host,
        port,
        on_event=on_event,
        on_closed=on_closed,
        on_status=tell,
        whoami=whoami,
        password=password,
        reconnect=reconnect,
        backoff=backoff,
    )
    try:
        _open(link, nick, _underscored(nick_retries, tell))
        # The server says Welcome, then puts us in the lobby; a script's first
        # line must not be read before we know where it goes.
        placed.wait(PLACED_TIMEOUT)
        threading.Thread(target=_read_lines, args=(stdin, inbox), name="stdin", daemon=True).start()
        if _converse(link, inbox, write, interpret):
            return 0
    except ConnectError as exc:
        print(f"{prog}: {exc}", file=stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        link.close("")  # Ctrl-C: leave as cleanly as at the end of stdin (nothing, if not in yet)
        return 130
    print(f"{prog}: {why[0] if why else 'connection closed'}", file=stderr, flush=True)
    return 1


def _open(link: Reconnecting, nick: str, another: Callable[[str, ConnectError], str | None]) -> None:
    """``link.open``; a refusal for want of a password says where to give one."""
    try:
        link.open(nick, another=another)
    except ConnectError as exc:
        if exc.code in PASSWORD_REFUSALS:
            raise ConnectError(f"{exc}; give it with --password or {PASSWORD_ENV}", code=exc.code) from None
        raise


def _outcome(view: ClientView, line: str) -> list[str | ev.ClientEvent]:
    """What to send for ``line`` and the lines to show for it at once, in order."""
    outcome: list[str | ev.ClientEvent] = []
    for typed in view.interpret_typed(line):
        outcome += (view.render(event) or "" for event in typed.show)
        if typed.send is not None:
            outcome.append(typed.send)
    return outcome


def _underscored(retries: int, tell: Callable[[str], None]) -> Callable[[str, ConnectError], str | None]:
    """Plain mode's rule for a taken nick: the same with ``_`` appended, at
    most ``retries`` times, each try told; any other refusal ends it."""
    tries = iter(range(retries))

    def another(taken: str, refusal: ConnectError) -> str | None:
        if refusal.code is not ErrorCode.NICK_TAKEN or next(tries, None) is None:
            return None
        tell(f"{refusal}; trying {taken}_")
        return f"{taken}_"

    return another


def _converse(
    link: Reconnecting,
    inbox: queue.SimpleQueue[object],
    write: Callable[[str], None],
    interpret: Callable[[str], list[str | ev.ClientEvent]],
) -> bool:
    """Send what stdin says until it ends or the link does; True if the user ended it."""
    while True:
        item = inbox.get()
        if item is _EOF:
            link.close("", wait_back=DRAIN_TIMEOUT)  # lines typed while away go first
            return True
        if item is _CLOSED:
            link.close()
            return False
        assert isinstance(item, str)
        for outcome in interpret(item):
            if isinstance(outcome, str):
                write(outcome)
            elif isinstance(outcome, ev.Goodbye):
                link.close(outcome.reason)
                return True
            else:
                link.send(outcome)


def _utf8(stream: TextIO) -> TextIO:
    """Chat text is UTF-8 whatever the locale; bytes that are not become U+FFFD."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(encoding="utf-8", errors="replace")
    return stream


def _read_lines(stdin: TextIO, inbox: queue.SimpleQueue[object]) -> None:
    try:
        for line in stdin:
            inbox.put(line.rstrip("\r\n"))
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # an unreadable stdin ends the input like its end does
    finally:
        inbox.put(_EOF)
