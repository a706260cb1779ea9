"""The TCP throughput scenario made long: 10 senders x N messages, window 64.

`python -m bench`'s throughput scenario lasts about 0.12 s on TCP, too short for
one run to mean much; this drives the same load for seconds against a server
already running on PORT (start it with --rate-limit 0 --max-clients 0
--max-per-host 0), and prints messages delivered per second:

    taskset -c 0 tcpchat-server --port 7984 --rate-limit 0 --max-clients 0 --max-per-host 0 &
    taskset -c 1 python -m tools.long_throughput 7984 20000   # from the checkout
"""

from __future__ import annotations

import sys
from dataclasses import replace

from bench.load import Loop, TcpPeer, connect, drive
from bench.scenarios import FULL


def main() -> None:
    sc = next(s for s in FULL if s.name == "throughput")
    port, n = int(sys.argv[1]), int(sys.argv[2])
    sc = replace(sc, messages=n, deadline_s=120.0)
    plan = sc.plan(quiet_s=3.0)
    loop = Loop(None)
    peers = connect(lambda i, reads: TcpPeer(i, ("127.0.0.1", port), reads=reads), plan, loop, timed=False, timeout=30)
    out = drive(peers, plan, loop, timed=False, lossy=False)
    secs = (out.ended_at - out.started_at) / 1e9
    print(f"{out.sent * 9 / secs:,.0f}", out.completed)
    for p in peers:
        p.close()


if __name__ == "__main__":
    main()
