"""The server as a program: its command line, its listening line, and signals."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode
from tests.processes import ServerProcess

from .conftest import WAIT, FramedClient, LineClient


@pytest.fixture
def server_process() -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    server = ServerProcess("tcpchat.server", "--log-level", "DEBUG")
    yield server.proc, server.address
    server.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_clients_connected(
    server_process: tuple[subprocess.Popen[str], tuple[str, int]], signum: signal.Signals
) -> None:
    proc, address = server_process
    framed = FramedClient(address)
    nc = LineClient(address)
    try:
        framed.register("alice")
        nc.send(b"bob\n")
        assert nc.line().startswith("*** welcome, bob")
        assert nc.line() == "*** bob joined #lobby"
        assert framed.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
        proc.send_signal(signum)
        assert framed.until_closed()[-2:] == [
            ev.Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down"),
            ev.Goodbye("the server is shutting down"),
        ]
        assert nc.line().startswith("* error (shutting-down)")
        assert nc.line() == "*** disconnected: the server is shutting down"
        assert nc.line() == ""
        assert proc.wait(WAIT) == 0
    finally:
        framed.close()
        nc.close()
    _, err = proc.communicate(timeout=WAIT)
    assert "Traceback" not in err
    assert "registered as alice" in err
    assert "shut down" in err


def test_help_names_every_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tcpchat.server", "--help"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 0
    for flag in ("--host", "--port", "--max-clients", "--rate-limit", "--idle-timeout", "--log-level"):
        assert flag in done.stdout
    assert "7878" in done.stdout


def test_port_in_use_is_one_clear_line(server_process: tuple[subprocess.Popen[str], tuple[str, int]]) -> None:
    _, (host, port) = server_process
    done = subprocess.run(
        [sys.executable, "-m", "tcpchat.server", "--host", host, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1
    assert "cannot listen" in done.stderr


def test_running_out_of_descriptors_does_not_kill_the_server() -> None:
    # The server may hold 32 descriptors: about 25 clients. Forty connect;
    # accept() fails with EMFILE while the others wait in the backlog, and
    # works again once clients leave.
    code = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32)); "
        "sys.argv = ['tcpchat.server', '--port', '0', '--max-per-host', '0', '--ephemeral']; "
        "runpy.run_module('tcpchat.server', run_name='__main__')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert proc.stderr is not None
    assert proc.stdout is not None

    def collect_log(stream: TextIO) -> None:
        for line in stream:
            log.put(line)

    logger = threading.Thread(target=collect_log, args=(proc.stderr,))
    logger.start()
    clients: list[FramedClient] = []
    try:
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match is not None
        address = (match.group(1), int(match.group(2)))
        for i in range(40):
            client = FramedClient(address)
            clients.append(client)
            client.send(ev.Register(f"u{i}"))
        while "accept failed" not in log.get(timeout=WAIT):
            pass
        for client in clients[:20]:
            client.expect(ev.Welcome)
            client.close()
        for client in clients[20:]:
            client.expect(ev.Welcome)  # accepted once descriptors were free again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        logger.join(WAIT)
        proc.stdout.close()
        proc.stderr.close()
    rest = []
    while not log.empty():
        rest.append(log.get())
    assert not any("Traceback" in line for line in rest)
