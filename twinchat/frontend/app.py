"""The client's command line: parse it, then run the terminal UI or plain mode."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twinchat import version
from twinchat.frontend.link import Connect
from twinchat.frontend.plain import NICK_RETRIES, run_plain
from twinchat.frontend.terminal import run_terminal


def _parser(prog: str, default_port: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Join a twinchat server. On a terminal you get an input line that stays put; "
        "with stdin from a pipe, each line is a message or /command and each event one line on stdout.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s (twinchat {version()})")
    p.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    p.add_argument("--port", type=int, default=default_port, help="server port (default: %(default)s)")
    p.add_argument("--nick", required=True, help="the nick to join under")
    p.add_argument("--plain", action="store_true", help="plain line mode even on a terminal")
    p.add_argument(
        "--nick-retries",
        type=int,
        default=NICK_RETRIES,
        metavar="N",
        help="plain mode: if the nick is taken, try it with _ appended, up to N times (default: %(default)s; "
        "a terminal asks for another nick instead)",
    )
    return p


def main(argv: Sequence[str] | None, *, connect: Connect, prog: str, default_port: int) -> int:
    """Parse --host/--port/--nick (+ --plain to force plain mode), connect, run
    the UI or plain mode, return the exit code.

    Returns:
        0 when the user (or the end of stdin) ended the session; 1 when the
        client could not join or the server ended or lost the link; 130 when
        Ctrl-C ended plain mode (or the wait for the server).
    """
    args = _parser(prog, default_port).parse_args(argv)
    if args.plain or not sys.stdin.isatty():
        return run_plain(connect, args.host, args.port, args.nick, prog=prog, nick_retries=max(0, args.nick_retries))
    return run_terminal(connect, args.host, args.port, args.nick, prog=prog)
