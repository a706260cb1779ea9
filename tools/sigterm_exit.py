"""How long a UDP server takes to exit on SIGTERM when its peers do not answer.

PROTOCOL.md ("Liveness and closing"): on SIGTERM the server says goodbye to
every session, waits a bounded time for the acknowledgements, and exits 0
within 1 s. This starts ``udpchat.server`` as a subprocess, registers
``--deaf`` sessions by hand that never acknowledge anything (the worst case:
every goodbye is lost) and ``--lossy`` clients behind the seeded lossy proxy,
sends SIGTERM and prints the time to exit, over ``--runs`` runs::

    python -m tools.sigterm_exit --deaf 3 --lossy 3 --runs 3

Figures, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time

from tools.rawsession import register_by_hand
from twinchat.frontend import ConnectError
from udpchat.client import UdpLink, udp_connect
from udpchat.lossyproxy import Impairment, LossyProxy


def _deaf(address: tuple[str, int], nick: str) -> socket.socket:
    """A session that registers and then never acknowledges anything."""
    return register_by_hand(address, nick)[0]


def _ignore(_: object) -> None:
    pass


def one_run(deaf: int, lossy: int, loss: float, seed: int) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-m", "udpchat.server", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
    )
    socks: list[socket.socket] = []
    links: list[UdpLink] = []
    proxy: LossyProxy | None = None
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match is not None
        address = (match.group(1), int(match.group(2)))
        socks = [_deaf(address, f"deaf{i}") for i in range(deaf)]
        proxy = LossyProxy(address, up=Impairment(loss=loss), down=Impairment(loss=loss), seed=seed).start()
        for i in range(lossy):
            with contextlib.suppress(ConnectError):  # the loss won; one client fewer
                links.append(udp_connect(*proxy.address, f"lossy{i}", _ignore, _ignore))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
        print(f"exit code {code} after {took:.3f} s ({deaf} deaf sessions, {len(links)} clients at loss {loss:g})")
        return took
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for sock in socks:
            sock.close()
        for link in links:
            link.close()
        if proxy is not None:
            proxy.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Time a UDP server's exit on SIGTERM with peers that do not answer.")
    p.add_argument("--deaf", type=int, default=3, help="sessions that never acknowledge (default: %(default)s)")
    p.add_argument("--lossy", type=int, default=3, help="clients behind the lossy proxy (default: %(default)s)")
    p.add_argument("--loss", type=float, default=0.5, help="the proxy's loss each way (default: %(default)s)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    times = [one_run(args.deaf, args.lossy, args.loss, seed) for seed in range(1, args.runs + 1)]
    print(f"slowest exit {max(times):.3f} s over {len(times)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
