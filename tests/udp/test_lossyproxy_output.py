"""What the lossy proxy prints: a periodic tally, a summary when it stops, its options."""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

from tests.udp.harness import PATIENCE, python, stop
from udpchat import lossyproxy
from udpchat.lossyproxy import Impairment, LossyProxy, ProxyStats, summary, tally, watch

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def target() -> Iterator[socket.socket]:
    """A UDP socket standing in for the server: it only receives."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(PATIENCE)
    yield sock
    sock.close()


def _relay(proxy: LossyProxy, target: socket.socket, count: int) -> None:
    """Send ``count`` datagrams through ``proxy`` and wait until ``target`` has them all."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for i in range(count):
            client.sendto(b"datagram %d" % i, proxy.address)
        for _ in range(count):
            target.recv(100)


class Lines:
    """Collects written lines; ``wait_for`` blocks (bounded) until one matches."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def write(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, part: str, timeout: float = PATIENCE) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(part in line for line in self.lines), timeout)


def test_tally_line_says_how_long_how_many_and_the_counts() -> None:
    stats = ProxyStats(received=1200, forwarded=1180, dropped=24, duplicated=6, reordered=12)
    line = tally(stats, seconds=15.2, clients=3, received_per_s=240.4)
    assert line == (
        "udpchat.lossyproxy: 15 s, 3 clients, 240 datagrams/s: "
        "received=1200 forwarded=1180 dropped=24 duplicated=6 reordered=12"
    )
    assert "\n" not in line and len(line) <= 120
    assert tally(ProxyStats(), seconds=0.5, clients=1, received_per_s=0).startswith(
        "udpchat.lossyproxy: 0.5 s, 1 client,"
    )


def test_summary_is_readable_and_keeps_the_counts() -> None:
    stats = ProxyStats(received=1000, forwarded=990, dropped=20, duplicated=5, reordered=3)
    assert summary(stats, seconds=12.34, clients=2).splitlines() == [
        "udpchat.lossyproxy: stopped after 12 s, relayed for 2 clients",
        "  received=1000 forwarded=990 dropped=20 duplicated=5 reordered=3",
        "  of the datagrams received: 2.0% dropped, 0.5% duplicated, 0.3% held back and reordered",
    ]
    assert summary(ProxyStats(), seconds=1.0, clients=0).splitlines()[-1] == "  no datagram arrived"
    assert "ProxyStats(" not in summary(stats, seconds=1.0, clients=2)


def test_watch_writes_a_tally_while_relaying_then_the_summary(target: socket.socket) -> None:
    out = Lines()
    clock = itertools.count(0.0, 5.0).__next__  # every reading 5 s after the last
    with LossyProxy(target.getsockname(), seed=1) as proxy:
        watcher = threading.Thread(
            target=watch, args=(proxy,), kwargs={"interval": 0.01, "write": out.write, "clock": clock}
        )
        watcher.start()
        _relay(proxy, target, 10)
        assert out.wait_for("datagrams/s: received=10 forwarded=10 dropped=0 duplicated=0 reordered=0")
    watcher.join(PATIENCE)
    assert not watcher.is_alive()
    *tallies, last = out.lines
    assert tallies[0].startswith("udpchat.lossyproxy: 5.0 s, ")
    assert all(line.startswith("udpchat.lossyproxy: ") and "\n" not in line for line in tallies)
    assert last.startswith("udpchat.lossyproxy: stopped after ")
    assert "received=10 forwarded=10 dropped=0 duplicated=0 reordered=0" in last


def test_watch_without_an_interval_writes_only_the_summary(target: socket.socket) -> None:
    out = Lines()
    with LossyProxy(target.getsockname(), up=Impairment(loss=1.0)) as proxy:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"lost", proxy.address)
        watcher = threading.Thread(target=watch, args=(proxy,), kwargs={"interval": None, "write": out.write})
        watcher.start()
    watcher.join(PATIENCE)
    assert not watcher.is_alive()
    (only,) = out.lines
    assert only.startswith("udpchat.lossyproxy: stopped after ")


def test_the_proxy_object_prints_nothing(target: socket.socket, capfd: pytest.CaptureFixture[str]) -> None:
    with LossyProxy(target.getsockname()) as proxy:
        _relay(proxy, target, 3)
    assert proxy.wait(PATIENCE)
    assert capfd.readouterr() == ("", "")


def test_version_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        lossyproxy.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("python -m udpchat.lossyproxy (twinchat ")
    args = lossyproxy._parser().parse_args(["--target", "127.0.0.1:7878"])
    assert (args.host, args.port, args.interval, args.quiet) == ("127.0.0.1", None, lossyproxy.TALLY_INTERVAL, False)
    assert lossyproxy.DEFAULT_PORT == 7879


def test_an_explicit_port_that_is_taken_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert lossyproxy.main(["--target", "127.0.0.1:7878", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def _read_until(stream: IO[str], needle: str, timeout: float) -> str:
    """What ``stream`` (a pipe) gave until it contains ``needle``, or all of it at the deadline."""
    seen = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream.fileno(), selectors.EVENT_READ)
        while needle not in seen and (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                chunk = os.read(stream.fileno(), 4096).decode()
                if not chunk:
                    break
                seen += chunk
    return seen


def test_the_command_falls_back_from_a_taken_default_port_and_tallies(
    target: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = target.getsockname()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        # Whoever holds 7879 now (often nobody), the command must still come up.
        with contextlib.suppress(OSError):  # someone else holds it: the same case
            squatter.bind(("127.0.0.1", lossyproxy.DEFAULT_PORT))
        proc = python(
            "-m", "udpchat.lossyproxy", "--target", f"{host}:{port}", "--interval", "0.05",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:")
            assert int(line.split(":")[1].split(",")[0]) != lossyproxy.DEFAULT_PORT
            err = _read_until(proc.stderr, "datagrams/s", PATIENCE)
            assert f"port {lossyproxy.DEFAULT_PORT} is taken; listening on a free port instead" in err
            assert "udpchat.lossyproxy: " in err and "datagrams/s: received=0" in err
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=PATIENCE)
            assert proc.returncode == 0
            assert "stopped after" in rest and "no datagram arrived" in rest
        finally:
            stop(proc)


def test_quiet_command_prints_only_the_summary(target: socket.socket) -> None:
    host, port = target.getsockname()
    proc = python(
        "-m", "udpchat.lossyproxy", "--target", f"{host}:{port}", "--port", "0", "--interval", "0.01", "--quiet",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0
        assert err.splitlines()[0].startswith("udpchat.lossyproxy: stopped after")
        assert "datagrams/s" not in err
    finally:
        stop(proc)
