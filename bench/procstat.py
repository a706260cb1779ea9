"""What a process costs, read from ``/proc/PID`` (Linux).

CPU time is user plus system time of every thread of the process, from
``/proc/PID/stat``; peak RSS is the kernel's own high-water mark (``VmHWM``
in ``/proc/PID/status``), so a spike between two samples is not missed;
the thread count has no high-water mark, so the load generator samples it.
The parsers are pure; ``sample`` reads the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process."""

    cpu_s: float
    #: The part of ``cpu_s`` spent in the kernel (system calls, the network stack).
    sys_s: float
    rss_mb: float
    peak_rss_mb: float
    threads: int


def parse_stat_times(stat: str, ticks: int = _TICKS) -> tuple[float, float]:
    """User and system CPU seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``.

    Raises:
        ValueError: the text is not a stat line.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) / ticks, int(rest[12]) / ticks


def parse_status(status: str) -> tuple[float, float, int]:
    """``(rss_mb, peak_rss_mb, threads)`` from the text of ``/proc/PID/status``.

    Raises:
        ValueError: a field is missing.
    """
    found: dict[str, int] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            found[name] = int(value.split()[0])
    try:
        return found["VmRSS"] / 1024, found["VmHWM"] / 1024, found["Threads"]
    except KeyError as exc:
        raise ValueError(f"/proc status has no {exc.args[0]}") from None


def sample(pid: int) -> ProcSample | None:
    """Read process ``pid`` now; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            user, system = parse_stat_times(f.read())
        with open(f"/proc/{pid}/status") as f:
            rss, peak, threads = parse_status(f.read())
    except (OSError, ValueError):
        return None
    return ProcSample(user + system, system, rss, peak, threads)


def parse_udp_drops(snmp: str) -> int:
    """``RcvbufErrors`` of the ``Udp:`` lines of ``/proc/net/snmp``: datagrams
    the kernel dropped because a socket's receive buffer was full.

    Raises:
        ValueError: the text has no such field.
    """
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        raise ValueError("no Udp RcvbufErrors in /proc/net/snmp")
    return int(rows[1][rows[0].index("RcvbufErrors")])


def udp_drops() -> int | None:
    """The machine's count of UDP datagrams dropped for full receive buffers (all processes)."""
    try:
        with open("/proc/net/snmp") as f:
            return parse_udp_drops(f.read())
    except (OSError, ValueError):
        return None


def parse_machine_busy(stat: str, ticks: int = _TICKS) -> float:
    """CPU seconds the whole machine spent busy (every CPU, every process),
    from the ``cpu`` line of ``/proc/stat``: all but idle and iowait.

    Raises:
        ValueError: the text has no ``cpu`` line.
    """
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]
            idle = values[3] + values[4]
            return (sum(values) - idle) / ticks
    raise ValueError("no cpu line in /proc/stat")


def machine_busy() -> float | None:
    """``parse_machine_busy`` of this machine now; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            return parse_machine_busy(f.read())
    except (OSError, ValueError):
        return None
