"""One tiny run end to end against the real TCP server, and the command line.

Figures are printed by the benchmark, never asserted here: these tests check
that every message is accounted for and that nothing is left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import Placement, run_once
from bench.scenarios import TRANSPORTS, Scenario
from tests.bench.children import our_children

pytestmark = pytest.mark.timeout(20)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("transport", ["tcp", "tcp-tls", "websocket"])
def test_a_tiny_window_run_accounts_for_every_message(transport: str) -> None:
    tiny = Scenario("throughput", clients=4, senders=4, messages=200, window=16, deadline_s=10)
    result = run_once(tiny, TRANSPORTS[transport], 1, placement=Placement(None, None), seed=1)
    print(result)
    assert result.completed
    assert (result.sent, result.expected, result.delivered) == (800, 2400, 2400)
    assert (result.duplicates, result.out_of_order, result.garbled) == (0, 0, 0)
    assert result.p99_ms is not None and result.server_threads > 0
    assert result.echoes == 800  # every sender got its own messages back
    assert result.server_segments is None and result.client_resent is None  # no segments over TCP
    assert our_children() == []


def test_a_tiny_paced_run_with_a_stuck_client() -> None:
    tiny = Scenario("latency", clients=5, senders=2, messages=10, rate=200, stuck=1, deadline_s=10)
    result = run_once(tiny, TRANSPORTS["tcp"], 1, placement=Placement.split(pin=True), seed=1)
    print(result)
    assert result.completed
    assert result.expected == result.delivered == 2 * 10 * 3
    assert our_children() == []


@pytest.mark.parametrize("transport", ["udp", "udp-unreliable"])
def test_a_tiny_udp_run_accounts_for_every_message(transport: str) -> None:
    tiny = Scenario("throughput", clients=3, senders=3, messages=100, window=16, deadline_s=10)
    result = run_once(tiny, TRANSPORTS[transport], 1, placement=Placement(None, None), seed=1)
    print(result)
    assert result.completed
    assert result.sent == 300
    assert result.expected == 600
    if transport == "udp":
        assert result.delivered == 600
        assert result.out_of_order == 0
    else:
        assert 0 < result.delivered <= 600  # what the kernel dropped is lost, and counted
    assert (result.duplicates, result.garbled) == (0, 0)
    # Segments both ways, the server's from its shutdown line: bundles carry
    # several messages each, so fewer segments than messages (the server's
    # to 3 recipients, the clients' in windows of 16), but some.
    assert result.client_segments is not None and 3 <= result.client_segments < 300
    assert result.server_segments is not None and 3 <= result.server_segments < 900
    assert result.server_resent is not None and result.client_resent is not None
    assert result.server_duplicates is not None and result.client_duplicates is not None
    if transport == "udp":
        assert result.echoes == 300
    assert our_children() == []


def test_the_command_line_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scenarios",
            "throughput",
            "--transports",
            "tcp",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=18,
        check=False,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0
    assert "throughput" in proc.stdout and "msgs/s" in proc.stdout
    document = json.loads(out.read_text())
    assert [r["transport"] for r in document["runs"]] == ["tcp"]
    assert document["runs"][0]["delivery_ratio"] == 1.0
