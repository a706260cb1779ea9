"""Server memory across waves of deaf UDP sessions (issue 15 item 3).

A deaf session registers, acknowledges its Welcome, and then never
acknowledges anything again: everything sent to it stays held for it until the
server cuts it off at ``--max-queue`` bytes. This starts ``udpchat.server`` as
a subprocess with its default flags (flood limit 20 messages/s, 1 MiB per
session), and runs ``--waves`` waves: each opens ``--deaf`` deaf sessions,
then ``--senders`` clients each say a 4000-byte line 20 times a second (within
the flood limit) until every deaf session of the wave has been reported gone,
then waits for the server to forget them. It prints the server's resident
memory (VmRSS) before and after each wave::

    python -m tools.deaf_waves --waves 3 --deaf 150 --senders 5

Figures, not a test: they depend on the machine and its allocator.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.procstat import parse_status
from common.chat import events as ev
from common.wire.framing import decode_datagram, encode
from tools.rawsession import register_by_hand
from udpchat.client import UdpLink, udp_connect

#: A line as long as the protocol allows, nearly: fills a session's bound fast.
LINE = "x" * 4000

#: Seconds the server keeps a session that was cut off (udpchat.server.LINGER), and a margin.
FORGET_AFTER = 3.0


def rss_mb(pid: int) -> float:
    """The process's resident set size, in MB (as the benchmark reads it)."""
    return parse_status(Path(f"/proc/{pid}/status").read_text())[0]


def deaf_session(address: tuple[str, int], nick: str) -> socket.socket:
    """Open a session by hand, register, acknowledge the Welcome, and go deaf."""
    sock, prefix = register_by_hand(address, nick)
    while True:
        frames = decode_datagram(sock.recv(2048))
        data = [f for f in frames if isinstance(f, ev.Data)]
        if any(f.chunk and isinstance(decode_datagram(f.chunk)[0], ev.Welcome) for f in data):
            sock.sendto(prefix + encode(ev.Ack(max(f.seq for f in data) + 1, ())), address)
            return sock


class Gone:
    """Counts the Left notices the senders see, by nick."""

    def __init__(self) -> None:
        self.nicks: set[str] = set()
        self.cond = threading.Condition()

    def on_event(self, event: ev.ServerEvent) -> None:
        if isinstance(event, ev.Left):
            with self.cond:
                self.nicks.add(event.nick)
                self.cond.notify_all()


def _ignore(_: object) -> None:
    pass


def wave(
    number: int, address: tuple[str, int], senders: list[UdpLink], gone: Gone, *, deaf: int, pid: int
) -> tuple[float, float]:
    """One wave; returns the seconds until every deaf session was reported
    gone, and the highest server RSS seen meanwhile (MB)."""
    nicks = [f"deaf{number}x{i}" for i in range(deaf)]
    socks = [deaf_session(address, nick) for nick in nicks]
    started = time.monotonic()
    peak = rss_mb(pid)
    try:
        while True:
            peak = max(peak, rss_mb(pid))
            with gone.cond:
                if all(n in gone.nicks for n in nicks):
                    break
            if time.monotonic() - started > 300:
                raise SystemExit(f"wave {number}: deaf sessions still there after 300 s")
            for link in senders:
                link.send(ev.Say("#lobby", LINE))
            time.sleep(0.05)  # 20 lines a second per sender: the default flood limit
        return time.monotonic() - started, peak
    finally:
        time.sleep(FORGET_AFTER)  # their farewells go unacknowledged: forgotten after the linger time
        for sock in socks:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Server RSS across waves of deaf UDP sessions.")
    p.add_argument("--waves", type=int, default=3)
    p.add_argument("--deaf", type=int, default=150, help="deaf sessions per wave (default: %(default)s)")
    p.add_argument("--senders", type=int, default=5, help="clients that talk (default: %(default)s)")
    args = p.parse_args(argv)

    proc = subprocess.Popen(
        [sys.executable, "-m", "udpchat.server", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
    )
    links: list[UdpLink] = []
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match is not None
        address = (match.group(1), int(match.group(2)))
        gone = Gone()
        links = [udp_connect(*address, f"talker{i}", gone.on_event, _ignore) for i in range(args.senders)]
        print(f"server RSS at start: {rss_mb(proc.pid):.1f} MB", flush=True)
        for number in range(1, args.waves + 1):
            before = rss_mb(proc.pid)
            took, peak = wave(number, address, links, gone, deaf=args.deaf, pid=proc.pid)
            after = rss_mb(proc.pid)
            print(
                f"wave {number}: {args.deaf} deaf sessions cut off in {took:.1f} s;"
                f" server RSS {before:.1f} MB before, {peak:.1f} MB at most, {after:.1f} MB after",
                flush=True,
            )
    finally:
        for link in links:
            link.close()
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
