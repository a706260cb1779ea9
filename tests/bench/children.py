"""What the benchmark tests check after a run: that it left no process behind."""

from __future__ import annotations

import os


def our_children() -> list[int]:
    """Pids of the processes this test process started and that still exist."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
            out.append(int(entry))
    return out
