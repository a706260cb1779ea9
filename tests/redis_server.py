"""A real ``redis-server`` for the tests: a child process on a free loopback
port, in a temporary directory, with no persistence unless a test asks to save.

The Redis store is never tested against a fake: a missing ``redis-server`` is
a failure that says how to install it, never a skip. Every wait is bounded.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

#: Seconds to wait for the server to answer PING, or to exit.
WAIT = 10.0

INSTALL_HINT = (
    "redis-server not found on PATH: the Redis store's tests need a real one; "
    "install it (Debian/Ubuntu: apt-get install redis-server; .ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ask(port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """One inline command and the first bytes of its answer ('' if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        try:
            return sock.recv(64)
        except OSError:
            return b""


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port`` with its files in ``directory``.

    ``stop()`` and ``start()`` again keep the port, so a client's URL stays
    valid across a restart; ``stop(save=True)`` writes the data to
    ``dump.rdb`` first (``SHUTDOWN SAVE``), and the next start loads it.
    """

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (on a free port the first time) and wait until it answers PING."""
        assert self.binary is not None and self.proc is None
        for _ in range(3):  # a free port may be taken before the server binds it
            port = self.port or _free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if self._answers(port):
                self.port = port
                return
            out = self._reap()
            if self.port:
                break
        pytest.fail(f"redis-server did not answer PING on port {port} within {WAIT:g} s: {out!r}", pytrace=False)

    def _answers(self, port: int) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if _ask(port, b"PING").startswith(b"+PONG"):
                    return True
            except OSError:
                pass
            time.sleep(0.01)
        return False

    def _reap(self) -> bytes:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=WAIT)
        self.proc = None
        return out

    def stop(self, *, save: bool = False) -> None:
        """Stop it: ``SHUTDOWN SAVE`` if asked, else SIGTERM; then wait, then kill."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if save:
                _ask(self.port, b"SHUTDOWN SAVE", timeout=WAIT)
            else:
                proc.terminate()
            proc.wait(WAIT)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(WAIT)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def flush(self) -> None:
        """Empty every database (between tests on one server)."""
        assert _ask(self.port, b"FLUSHALL").startswith(b"+OK")
