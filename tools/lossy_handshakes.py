"""Join over a lossy link many times with one nick, and count how each try ended.

Issue 15 item 1: a client that gives up waiting for its Welcome used to leave
a ghost nick on the server, so the same user's next try was refused
``nick-taken``. This runs a UDP server and the seeded lossy proxy in this
process, makes ``--attempts`` tries one after the other with one nick (each
from a new port of 127.0.0.1, as a restarted client would), leaves at once
after each welcome, and prints the tally::

    python -m tools.lossy_handshakes --loss 0.5 --attempts 20

Figures, not a test: the outcome depends on the seed and the machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from common.chat import events as ev
from twinchat.frontend import ConnectError
from udpchat.client import udp_connect
from udpchat.lossyproxy import Impairment, LossyProxy
from udpchat.server import ChatServer


def _ignore(_: object) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--loss", type=float, default=0.5, help="datagrams dropped each way (default: %(default)s)")
    p.add_argument("--attempts", type=int, default=20, help="tries, one after the other (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="the proxy's seed (default: %(default)s)")
    p.add_argument("--nick", default="ann")
    args = p.parse_args(argv)

    server = ChatServer("127.0.0.1", 0)
    server.start()
    lane = Impairment(loss=args.loss)
    proxy = LossyProxy(server.address, up=lane, down=Impairment(loss=args.loss), seed=args.seed).start()
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    try:
        for _ in range(args.attempts):
            try:
                link = udp_connect(*proxy.address, args.nick, _ignore, _ignore)
            except ConnectError as exc:
                text = str(exc)
                tally["nick-taken" if "nick-taken" in text else "did not answer" if "answer" in text else text] += 1
                continue
            tally["welcome"] += 1
            link.close("done")
        ghosts = [n for n in server._hub.nicks() if n == ev.Register(args.nick).nick]
    finally:
        proxy.stop()
        server.shutdown()
    seconds = time.monotonic() - started
    print(
        f"loss {args.loss:g} each way, {args.attempts} tries with one nick in {seconds:.0f} s: "
        + ", ".join(f"{what} {count}" for what, count in tally.most_common())
        + f"; nick still held at the end: {'yes' if ghosts else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
