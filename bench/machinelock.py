"""One measured run at a time on a machine: an advisory lock between benchmark processes.

Two benchmarks that run at once on a shared machine each measure the other.
Every run of ``python -m bench`` takes this lock for the length of one run
(one scenario over one transport), so two matrices started side by side
interleave their runs instead of overlapping them. Waiting is bounded: after
``timeout`` seconds the run goes ahead and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

#: Where the lock lives: one file per machine (per temporary directory).
LOCK_PATH: Final = Path(tempfile.gettempdir()) / "twinchat-bench.lock"

#: Seconds between two attempts while another run holds the lock.
POLL: Final = 0.25


@contextlib.contextmanager
def machine_lock(
    timeout: float, log: Callable[[str], None] = lambda line: None, path: Path = LOCK_PATH
) -> Iterator[bool]:
    """Hold the machine's benchmark lock; yield whether it was had (False: timed out)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                if not told:
                    log(f"  waiting for another benchmark's run to finish (lock {path})")
                    told = True
                # Polling, not a blocking flock: the wait must end by the deadline.
                time.sleep(POLL)
        yield held
    finally:
        os.close(fd)  # closing releases the lock
