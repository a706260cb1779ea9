"""Chat latency while a thousand registered users log in at once (issue 9).

Starts ``tcpchat.server`` as a subprocess on a fresh SQLite store holding
``--logins`` accounts, all with one password (each login still costs a full
scrypt check: the cost is in the verify, not in the variety). Two other
users chat (one message every 20 ms, its send time in its text); after a
quiet baseline, every account logs in at once from its own connection. Prints
the chat's latency before and during the storm, and how long the storm took::

    python -m tools.login_storm --logins 1000

Figures, not a test. The server hashes passwords on the connections' own
threads, outside the hub lock, at most ``MAX_CONCURRENT_HASHES`` at a time;
``hashlib.scrypt`` releases the GIL, so the storm competes with the chat for
cores, not for the interpreter.
"""

from __future__ import annotations

import argparse
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common.accounts import make_verifier
from common.chat import events as ev
from common.chat.nicks import nick_key
from common.ports import Account
from common.wire.framing import NEED_DATA, StreamDecoder, encode
from twinchat.store.sqlite import SqliteStore

PASSWORD = "correct horse battery staple"
TICK = 0.02


def _accounts(data: Path, count: int) -> None:
    store = SqliteStore(data / "twinchat.sqlite3")
    verifier = make_verifier(PASSWORD)
    for i in range(count):
        nick = f"user{i}"
        store.save_account(Account(nick_key(nick), nick, verifier, int(time.time())))
    store.close()


def _connect(address: tuple[str, int], nick: str, password: str = "") -> tuple[socket.socket, StreamDecoder]:
    sock = socket.create_connection(address, timeout=30)
    sock.sendall(encode(ev.Register(nick, password)))
    return sock, StreamDecoder()


def _read(sock: socket.socket, decoder: StreamDecoder) -> list[ev.Event]:
    decoder.feed(sock.recv(65536) or b"")
    out: list[ev.Event] = []
    while isinstance(item := decoder.next_event(), ev.Event):
        out.append(item)
    return out


def _chat(address: tuple[str, int], stop: threading.Event, latencies: list[tuple[float, float]]) -> None:
    """Talk every TICK; record (sent at, latency) of each line the listener hears."""
    talker, _ = _connect(address, "talker")
    listener, decoder = _connect(address, "listener")
    listener.settimeout(0.05)

    def talk() -> None:
        while not stop.wait(TICK):
            talker.sendall(encode(ev.Say("#lobby", f"t={time.time():.6f}")))

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    while not stop.is_set():
        try:
            events = _read(listener, decoder)
        except TimeoutError:
            continue
        now = time.time()
        for event in events:
            if isinstance(event, ev.Message) and not event.history and event.sender == "talker":
                sent = float(event.text[2:])
                latencies.append((sent, now - sent))
    thread.join()
    talker.close()
    listener.close()


def _storm(address: tuple[str, int], count: int) -> tuple[float, int, int]:
    """Every account logs in at once; (seconds until all answered, welcomed, refused)."""
    sel = selectors.DefaultSelector()
    socks = []
    started = time.monotonic()
    for i in range(count):
        sock = socket.create_connection(address, timeout=30)
        sock.sendall(encode(ev.Register(f"user{i}", PASSWORD)))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, StreamDecoder())
        socks.append(sock)
    welcomed = refused = 0
    deadline = started + 600
    while welcomed + refused < count and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            sock, decoder = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            decoder.feed(data or b"")
            while (item := decoder.next_event()) is not NEED_DATA:
                if isinstance(item, ev.Welcome):
                    welcomed += 1
                elif isinstance(item, ev.Error):
                    refused += 1
                if not isinstance(item, ev.Event):
                    break
            if not data or isinstance(item, ev.Welcome | ev.Error):
                sel.unregister(sock)
    took = time.monotonic() - started
    for sock in socks:
        sock.close()
    sel.close()
    return took, welcomed, refused


def _pcts(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    cuts = statistics.quantiles(values, n=100)
    return (
        f"p50 {cuts[49] * 1e3:.2f} ms, p99 {cuts[98] * 1e3:.2f} ms, max {max(values) * 1e3:.2f} ms ({len(values)} msgs)"
    )


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tools.login_storm", description=__doc__.splitlines()[0])
    p.add_argument("--logins", type=int, default=1000)
    p.add_argument("--baseline", type=float, default=3.0, help="seconds of chat before the storm")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="login-storm-") as tmp:
        data = Path(tmp)
        _accounts(data, args.logins)
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "tcpchat.server", "--port", "0", "--data-dir", str(data)),
                *("--max-per-host", "0", "--max-clients", "0", "--rate-limit", "0", "--log-level", "WARNING"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            match = re.search(r"listening on (\S+):(\d+)", server.stdout.readline())
            assert match is not None, "the server did not start"
            address = (match.group(1), int(match.group(2)))
            stop = threading.Event()
            latencies: list[tuple[float, float]] = []
            chat = threading.Thread(target=_chat, args=(address, stop, latencies), daemon=True)
            chat.start()
            time.sleep(args.baseline)  # a baseline of chat before the storm (wall time is the point)
            storm_from = time.time()
            took, welcomed, refused = _storm(address, args.logins)
            storm_to = time.time()
            time.sleep(0.5)
            stop.set()
            chat.join(10)
        finally:
            server.terminate()
            server.wait(10)
    before = [lat for sent, lat in latencies if sent < storm_from]
    during = [lat for sent, lat in latencies if storm_from <= sent <= storm_to]
    print(
        f"{args.logins} logins at once: {welcomed} welcomed, {refused} refused, in {took:.2f} s"
        f" ({welcomed / took:.0f} logins/s)"
    )
    print(f"chat latency before the storm: {_pcts(before)}")
    print(f"chat latency during the storm: {_pcts(during)}")
    if before and during:
        ratio = statistics.quantiles(during, n=100)[98] / statistics.quantiles(before, n=100)[98]
        print(f"p99 during / before: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
