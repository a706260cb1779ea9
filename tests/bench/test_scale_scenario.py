"""The scale scenario (``python -m bench scale``) at a tiny N, end to end.

Figures are printed, never asserted: these tests check that every client is
let in, every fan-out delivery and every reconnect is accounted for, and that
nothing is left running.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import Placement
from bench.scale import ScaleResult, format_table, machine_limits, run_scale
from tests.bench.children import our_children

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("transport", ["tcp", "tcp-tls", "udp"])
def test_fifty_clients_connect_hear_one_sender_and_survive_a_storm(transport: str) -> None:
    result = run_scale(transport, 50, fanout_messages=5, idle=0.2, placement=Placement.split(pin=True))
    print(format_table([result]), result.notes)
    assert result.registered == 50, result.notes
    assert result.connect_s is not None and result.rss_mb is not None and result.threads
    if transport.startswith("tcp"):
        # A reader per connection; a writer only for one whose kernel buffer
        # filled up (none here), where there used to be both for each.
        assert 50 < result.threads < 2 * 50 + 2
    else:
        assert result.threads >= 2  # the receiver and the pump
    assert result.fanout_delivered == 1.0
    assert result.fanout_p99_ms is not None
    assert result.storm_reconnect_s is not None, result.notes
    assert result.storm_before_p99_ms is not None and result.storm_during_p99_ms is not None
    assert our_children() == []


def test_the_machine_limits_are_named_not_blamed_on_the_server() -> None:
    assert machine_limits("tcp", 10) == []
    limits = machine_limits("tcp", 10_000_000)
    assert any("open files" in line for line in limits)
    assert any("threads" in line for line in limits)


def test_the_command_line_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "scale", "--clients", "20", "--transports", "tcp,tcp-tls", "--no-storm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "connect s" in done.stdout and "tcp-tls" in done.stdout
    assert "open files: soft limit" in done.stderr


def test_an_empty_result_prints_dashes() -> None:
    assert " - " in format_table([ScaleResult("udp", 10)])
