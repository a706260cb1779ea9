"""Reading CPU, memory and threads from /proc."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from bench.machinelock import machine_lock
from bench.procstat import parse_machine_busy, parse_stat_times, parse_status, parse_udp_drops, sample
from bench.runner import Placement, raise_nofile
from bench.servers import parse_listening


def test_stat_cpu_counts_from_the_last_parenthesis() -> None:
    # A command name with a space and a parenthesis must not shift the fields.
    fields = ["S", *["0"] * 10, "250", "150", *["0"] * 30]
    line = "1234 (evil) name) " + " ".join(fields)
    assert parse_stat_times(line, ticks=100) == (2.5, 1.5)


def test_status_fields() -> None:
    text = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t7\n"
    assert parse_status(text) == (100.0, 200.0, 7)
    with pytest.raises(ValueError):
        parse_status("Name:\tpython\n")


def test_sample_of_ourselves_and_of_nobody() -> None:
    mine = sample(os.getpid())
    assert mine is not None
    assert mine.threads >= 1 and mine.peak_rss_mb >= mine.rss_mb > 0
    assert sample(2**22 + 12345) is None  # above pid_max: never a process


@pytest.mark.parametrize(
    ("line", "found"),
    [
        (b"listening on 127.0.0.1:40123", ("127.0.0.1", 40123)),
        (b"2026 INFO udpchat: listening on [::1]:7000 (reliable)", ("::1", 7000)),
        (b"starting up", None),
    ],
)
def test_listening_line(line: bytes, found: tuple[str, int] | None) -> None:
    assert parse_listening(line) == found


def test_udp_drops_from_snmp() -> None:
    snmp = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 100 2 7 90 7 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "UdpLite: 0 0 0 0 0 0\n"
    )
    assert parse_udp_drops(snmp) == 7
    with pytest.raises(ValueError):
        parse_udp_drops("Ip: Forwarding\nIp: 1\n")


def test_machine_busy_leaves_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 20 1000 50 1 2 3 0 0\ncpu0 50 0 10 500 25 0 1 1 0 0\n"
    assert parse_machine_busy(stat, ticks=100) == (100 + 5 + 20 + 1 + 2 + 3) / 100
    with pytest.raises(ValueError):
        parse_machine_busy("intr 1 2 3\n")


def test_raise_nofile_keeps_a_limit_that_is_enough_and_refuses_past_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_nofile(min(soft, 64)) == soft
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(OSError):
            raise_nofile(hard + 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_placement_keeps_the_load_apart_from_the_server() -> None:
    placement = Placement.split(pin=True)
    cpus = os.sched_getaffinity(0)
    if len(cpus) >= 2:
        assert placement.server and placement.load
        assert not placement.server & placement.load
        assert placement.server | placement.load == cpus
    assert Placement.split(pin=False) == Placement(None, None)


def test_the_machine_lock_lets_one_run_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with machine_lock(1.0, path=path) as first:
        assert first
        with machine_lock(0.0, path=path) as second:
            assert not second  # held by the first: the wait is bounded and says so
    with machine_lock(0.0, path=path) as third:
        assert third
