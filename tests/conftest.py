"""What every test shares: servers started as processes keep their store in
the test's own temporary directory, never in the checkout, and never two
tests in one store; hypothesis runs without per-example deadlines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import tcpchat.server
import udpchat.server
from tcpchat.client import tcp_connect
from tests.processes import ServerProcess
from twinchat.frontend.link import Connect
from udpchat.client import udp_connect

# No per-example deadline: on a shared 2-core machine one slow example is the
# machine, not the code, and it failed whole runs. Every test is still bounded
# (pytest-timeout), and the number of examples is fixed.
settings.register_profile("twinchat", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("twinchat")


@pytest.fixture(autouse=True)
def _data_dir_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server's --data-dir defaults to $TWINCHAT_DATA_DIR; child processes inherit it.
    monkeypatch.setenv("TWINCHAT_DATA_DIR", str(tmp_path / "twinchat-data"))


WAIT = 10.0


@pytest.fixture(params=["tcp", "udp"])
def live_server(request: pytest.FixtureRequest) -> Iterator[tuple[Connect, tuple[str, int]]]:
    """A real TCP or UDP server on a free loopback port, and the connect of its client."""
    server: tcpchat.server.ChatServer | udpchat.server.ChatServer
    if request.param == "tcp":
        server = tcpchat.server.ChatServer("127.0.0.1", 0, rate_limit=0)
        thread = threading.Thread(target=server.serve_forever, name="test server")
        thread.start()
        yield tcp_connect, server.address
        server.shutdown()
        thread.join(WAIT)
    else:
        server = udpchat.server.ChatServer(port=0, rate_limit=0)
        server.start()
        yield udp_connect, server.address
        server.shutdown()


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    """A list to put started server processes in; whatever still runs is killed after the test."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()
