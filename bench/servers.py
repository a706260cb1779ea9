"""Starting and stopping the processes a run needs: servers and the lossy proxy.

Each is ``python -m MODULE ...`` with our own interpreter, pinned to the CPUs
the run gives it, started so that it prints one line containing
``listening on HOST:PORT``. Its stdout is a pipe we read that line from (it
prints nothing else there); its log goes to a temporary file, never to a pipe
that could fill up and stall it mid-run. Stopping is SIGTERM, then SIGKILL
after a grace period: bounded whatever the process does.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

_LISTENING: Final = re.compile(rb"listening on (?:\[([0-9a-fA-F:.]+)\]|([\w.-]+)):(\d+)")
#: What a server given ``--metrics`` prints before its ``listening on`` line.
_METRICS: Final = re.compile(rb"metrics on http://(?:\[([0-9a-fA-F:.]+)\]|([\w.-]+)):(\d+)/metrics")
_ROOT: Final = Path(__file__).resolve().parent.parent


class StartError(Exception):
    """A process did not come up: it exited or never said where it listens."""


def parse_listening(line: bytes) -> tuple[str, int] | None:
    """``(host, port)`` from a ``listening on HOST:PORT`` line, else None."""
    match = _LISTENING.search(line)
    if match is None:
        return None
    host = match.group(1) or match.group(2)
    return host.decode("ascii"), int(match.group(3))


class Child:
    """One ``python -m MODULE ARGS`` process that announces ``listening on``.

    Args:
        module: the module to run.
        args: its command-line arguments.
        cpus: CPUs to pin it to (inherited by all its threads), or None.
    """

    def __init__(self, module: str, args: Sequence[str], *, cpus: set[int] | None = None) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.cpus = cpus
        self.address: tuple[str, int] | None = None
        #: Where its metrics are served, if it said so (``--metrics``).
        self.metrics_address: tuple[str, int] | None = None
        self.exit_code: int | None = None
        self.killed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        """Start it and wait for its ``listening on`` line.

        Raises:
            StartError: it exited first, or did not say it within ``timeout``.
        """
        # Kept open for the child's lifetime; closed by close().
        self._log = tempfile.TemporaryFile(prefix="bench-child-")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        env.pop("PYTHONWARNINGS", None)
        # The child inherits the affinity of the thread that forks it; pinning
        # ourselves around the fork pins every thread it will ever start.
        saved = os.sched_getaffinity(0) if self.cpus else None
        try:
            if self.cpus:
                os.sched_setaffinity(0, self.cpus)
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=env,
                cwd=_ROOT,
            )
        finally:
            if saved is not None:
                os.sched_setaffinity(0, saved)
        self.address = self._wait_listening(timeout)
        return self.address

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise StartError(f"{' '.join(self.argv[2:])}: no 'listening on' within {timeout:g} s")
                if not sel.select(left):
                    continue
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    self.stop()
                    raise StartError(f"{' '.join(self.argv[2:])} exited: {self.log_tail()}")
                seen += chunk
                for line in seen.split(b"\n"):
                    metrics = _METRICS.search(line)
                    if metrics is not None:
                        host = metrics.group(1) or metrics.group(2)
                        self.metrics_address = (host.decode("ascii"), int(metrics.group(3)))
                    found = parse_listening(line)
                    if found is not None:
                        return found

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting; ``stop`` waits."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                proc.kill()
                proc.wait(grace)
        if proc.stdout is not None:
            proc.stdout.close()
        self.exit_code = proc.returncode
        return self.exit_code

    def log_tail(self, limit: int = 2000) -> str:
        """The end of what it logged, for error messages."""
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - limit))
        return self._log.read().decode("utf-8", "replace").strip()

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
