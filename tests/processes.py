"""A chat server as a child process, for the tests that need the program
itself (its command line, its signals, a ``kill -9``), not a server object.

One place starts a server process and reads its ``listening on HOST:PORT``
line: the tests of the command line, of memory across restarts and of the
Redis store all do that, and they used to each carry a copy.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

#: Seconds a server has to print its listening line, or to exit.
WAIT = 10.0

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    """``python -bb -m MODULE --port PORT ARGS...`` on loopback; ``address``
    is where it listens. Bounded: the constructor returns once the process
    printed its listening line, or fails the test with its stderr."""

    def __init__(self, module: str = "twinchat.server", *args: str, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-bb", "-m", module, "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the process prints it or exits
        match = _LISTENING.search(line)
        if match is None:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=WAIT)
            pytest.fail(f"no listening line from {module}: {line!r} {err!r}")
        self.address = (match.group(1), int(match.group(2)))

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``signum``; the exit status and stderr once it has ended."""
        self.proc.send_signal(signum)
        _, err = self.proc.communicate(timeout=WAIT)
        return self.proc.returncode, err

    def kill(self) -> None:
        """End it at once if it still runs (SIGKILL), and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=WAIT)
