"""The client's command line: parse it, then run the terminal UI or plain mode."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from twinchat import version
from twinchat.frontend.link import Connect
from twinchat.frontend.password import PASSWORD_ENV, Cleartext, given_password
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
    p.add_argument(
        "--password",
        metavar="PASSWORD",
        help=f"the password of a registered nick (or set {PASSWORD_ENV}, which other users cannot see in ps); "
        "a terminal asks for it when the server wants one",
    )
    p.add_argument("--ask-password", action="store_true", help="ask for the password at the start (not echoed)")
    p.add_argument(
        "--allow-cleartext-password",
        action="store_true",
        help="send the password to a server that is not on this machine although the link is not encrypted "
        "(a terminal asks instead)",
    )
    p.add_argument(
        "--no-reconnect",
        action="store_true",
        help="end when the link drops or the server restarts, instead of coming back by itself",
    )
    return p


def main(argv: Sequence[str] | None, *, connect: Connect, prog: str, default_port: int, notice: str = "") -> int:
    """Parse the command line, connect, run the UI or plain mode, return the exit code.

    Args:
        notice: the first thing a person is told (the UDP client: that it is
            not encrypted); plain mode says it on stderr only with a password.

    Returns:
        0 when the user (or the end of stdin) ended the session; 1 when the
        client could not join or the server ended the session for good; 2 for
        a password that may not or cannot be given; 130 when Ctrl-C ended
        plain mode (or the wait for the server).
    """
    args = _parser(prog, default_port).parse_args(argv)
    plain = args.plain or not sys.stdin.isatty()
    password = given_password(args.password)
    if args.ask_password:
        if not sys.stdin.isatty():
            print(f"{prog}: --ask-password needs a terminal; use {PASSWORD_ENV} or --password", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.nick}: ")
    cleartext = Cleartext(args.host, allowed=args.allow_cleartext_password)
    reconnect = not args.no_reconnect
    if plain:
        if password and notice:
            print(f"{prog}: {notice}", file=sys.stderr, flush=True)
        if password and not cleartext.permits(None):
            print(f"{prog}: {cleartext.warning}; --allow-cleartext-password sends it anyway", file=sys.stderr)
            return 2
        if password and cleartext.remote:
            print(f"{prog}: warning: {cleartext.warning}", file=sys.stderr, flush=True)
        return run_plain(
            connect,
            args.host,
            args.port,
            args.nick,
            prog=prog,
            nick_retries=max(0, args.nick_retries),
            password=password,
            reconnect=reconnect,
        )
    return run_terminal(
        connect,
        args.host,
        args.port,
        args.nick,
        prog=prog,
        password=password,
        cleartext=cleartext,
        reconnect=reconnect,
        notice=notice,
    )
