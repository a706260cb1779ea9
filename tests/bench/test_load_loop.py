"""The load generator's loop: what arrived is read before the timers judge it."""

from __future__ import annotations

import socket

from bench.load import Loop, Peer, pump


class _Recorder(Peer):
    """A client that notes when it is read and when its timers run."""

    def __init__(self, sock: socket.socket, calls: list[str]) -> None:
        super().__init__(0)
        self.sock = sock
        self.calls = calls

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        self.calls.append(f"read {self.sock.recv(100)!r}")

    def on_timer(self, now: float) -> None:
        self.calls.append("timers")


def test_a_pass_reads_what_arrived_before_it_runs_the_timers() -> None:
    # An ack that arrived while the loop was off its core must stop a
    # retransmission timer, not come after it: a pass with both due reads first.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    loop = Loop(None)
    calls: list[str] = []
    try:
        peer = _Recorder(ours, calls)
        loop.add(peer)
        theirs.send(b"ack")
        loop.next_timers = 0.0  # long due
        assert pump(loop, [peer], 1.0, timed=True) == 1
        assert calls == ["read b'ack'", "timers"]
        # Nothing to read and no timer due: the pass waits for the timers at most.
        calls.clear()
        assert pump(loop, [peer], 1.0, timed=True) == 0
        assert calls == ["timers"]
    finally:
        loop.close()
        ours.close()
        theirs.close()
