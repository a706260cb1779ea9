"""``python -m bench cluster --quick``: a smoke run of the cross-server
benchmark (real servers, a real Redis), checked for its table, not its figures."""

from __future__ import annotations

import shutil

import pytest

from bench import cli
from tests.redis_server import INSTALL_HINT

pytestmark = pytest.mark.timeout(120)


def test_the_cluster_benchmark_runs_every_setup_and_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    assert cli.main(["cluster", "--quick"]) == 0  # 0: no receiver missed a message
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "setup" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["one process", "one on redis", "A -> B"]
    assert rows[0].split("|")[3].strip() == "1.00"  # the baseline's own ratio
