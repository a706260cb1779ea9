"""Joins refused while one host floods the server with sessions it never
registers (issue 15 item 2).

Starts ``tcpchat.server`` or ``udpchat.server`` as a subprocess with its
default flags, opens ``--flood`` connections (TCP: each sends one byte) or
handshakes (UDP: Hello, Cookie, Hello with the cookie) from 127.0.0.2, and
then, while they are held, makes ``--joins`` joins one after the other from
127.0.0.1 (register a nick, leave), and prints how many were refused::

    python -m tools.one_host_flood --transport udp --flood 1000 --joins 20
    python -m tools.one_host_flood --transport tcp --flood 1000 --joins 20

Figures, not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import socket
import subprocess
import sys
import time

from common.chat import events as ev
from common.session.opener import hello
from common.wire.framing import MAGIC, decode_datagram
from tcpchat.client import tcp_connect
from twinchat.frontend import ConnectError
from udpchat.client import udp_connect

ATTACKER = "127.0.0.2"


def _ignore(_: object) -> None:
    pass


def flood_tcp(address: tuple[str, int], count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((ATTACKER, 0))
        try:
            sock.connect(address)
            sock.sendall(MAGIC[:1])
        except OSError:
            pass  # refused or reset: the server's business
        socks.append(sock)
    return socks


def flood_udp(address: tuple[str, int], count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ATTACKER, 0))
        sock.settimeout(2)
        socks.append(sock)
        sock.sendto(hello(b""), address)
        with contextlib.suppress(OSError):
            cookie = decode_datagram(sock.recv(2048))[0]
            assert isinstance(cookie, ev.Cookie)
            sock.sendto(hello(cookie.cookie), address)
    return socks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Joins refused while one host floods the server.")
    p.add_argument("--transport", choices=["tcp", "udp"], default="udp")
    p.add_argument("--flood", type=int, default=1000, help="connections or handshakes from 127.0.0.2")
    p.add_argument("--joins", type=int, default=20, help="honest joins from 127.0.0.1 meanwhile")
    args = p.parse_args(argv)

    module = f"{args.transport}chat.server"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--log-level", "ERROR"], stdout=subprocess.PIPE, text=True
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match is not None
        address = (match.group(1), int(match.group(2)))
        started = time.monotonic()
        socks = (flood_tcp if args.transport == "tcp" else flood_udp)(address, args.flood)
        flooded = time.monotonic() - started
        connect = tcp_connect if args.transport == "tcp" else udp_connect
        tally: collections.Counter[str] = collections.Counter()
        for i in range(args.joins):
            try:
                link = connect(*address, f"honest{i}", _ignore, _ignore)
            except ConnectError as exc:
                tally["server-full" if "server-full" in str(exc) else str(exc)] += 1
                continue
            tally["welcome"] += 1
            link.close("done")
        joined = time.monotonic() - started - flooded
        print(
            f"{args.transport}: {args.flood} unregistered from {ATTACKER} in {flooded:.1f} s, then"
            f" {args.joins} joins from 127.0.0.1 in {joined:.1f} s: "
            + ", ".join(f"{what} {count}" for what, count in tally.most_common())
        )
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
