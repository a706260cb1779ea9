"""The client's command line: parse it, then run the terminal UI or plain mode."""

from __future__ import annotations

import argparse
import getpass
import ssl
import sys
from collections.abc import Callable, Sequence

from twinchat import version
from twinchat.frontend.link import Connect
from twinchat.frontend.password import PASSWORD_ENV, Cleartext, given_password
from twinchat.frontend.plain import NICK_RETRIES, run_plain
from twinchat.frontend.terminal import run_terminal

#: What a transport that can speak TLS offers: its ``Connect`` over TLS with a context.
SecureConnect = Callable[[ssl.SSLContext], Connect]


def _parser(prog: str, default_port: int, *, tls: bool) -> argparse.ArgumentParser:
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
    if tls:
        p.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's certificate authorities")
        p.add_argument(
            "--cafile",
            metavar="FILE",
            help="speak TLS, trusting the certificate authorities in FILE (PEM; a private CA); implies --tls",
        )
        p.add_argument(
            "--insecure-skip-verify",
            action="store_true",
            help="speak TLS but trust any certificate: encrypted, yet anyone on the way can pose as the server",
        )
    p.add_argument(
        "--no-reconnect",
        action="store_true",
        help="end when the link drops or the server restarts, instead of coming back by itself",
    )
    return p


def _tls_context(args: argparse.Namespace, prog: str) -> ssl.SSLContext | None:
    """The client's TLS context from ``--tls``, ``--cafile``, ``--insecure-skip-verify``; None without them.

    Raises:
        ValueError: the CA file cannot be read (one line).
    """
    if not (args.tls or args.cafile or args.insecure_skip_verify):
        return None
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--cafile {args.cafile}: {getattr(exc, 'strerror', None) or exc}") from None
    if args.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        print(
            f"{prog}: WARNING: --insecure-skip-verify: the server's certificate is not checked; "
            "anyone on the way can pose as the server and read everything, passwords included",
            file=sys.stderr,
            flush=True,
        )
    return context


def main(
    argv: Sequence[str] | None,
    *,
    connect: Connect,
    prog: str,
    default_port: int,
    notice: str = "",
    tls: SecureConnect | None = None,
) -> int:
    """Parse the command line, connect, run the UI or plain mode, return the exit code.

    Args:
        notice: the first thing a person is told (the UDP client: that it is
            not encrypted); plain mode says it on stderr only with a password.
        tls: the transport can speak TLS: the flags are offered, and this
            makes its ``Connect`` over TLS.

    Returns:
        0 when the user (or the end of stdin) ended the session; 1 when the
        client could not join or the server ended the session for good; 2 for
        a password that may not or cannot be given; 130 when Ctrl-C ended
        plain mode (or the wait for the server).
    """
    args = _parser(prog, default_port, tls=tls is not None).parse_args(argv)
    context = None
    if tls is not None:
        try:
            context = _tls_context(args, prog)
        except ValueError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        if context is not None:
            connect = tls(context)
    plain = args.plain or not sys.stdin.isatty()
    password = given_password(args.password)
    if args.ask_password:
        if not sys.stdin.isatty():
            print(f"{prog}: --ask-password needs a terminal; use {PASSWORD_ENV} or --password", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.nick}: ")
    cleartext = Cleartext(args.host, allowed=args.allow_cleartext_password, encrypted=context is not None)
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
