"""What ``python -m bench --from-json`` prints: the table's width and the picture's title."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cli
from bench.results import medians, to_json
from tests.bench.test_stats_results import _realistic

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    runs = _realistic()
    path = tmp_path / "bench.json"
    meta = {
        "command": "python -m bench --runs 1 --json /tmp/scratch/bench.json",
        "date": "20261121-174218",
        "runs": 1,
        "machine": {"cpu": "Some CPU", "cpus": 2, "commit": "1ad77cc"},
    }
    path.write_text(to_json(runs, medians(runs), meta))
    return path


def test_the_default_replay_fits_100_columns(results_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--from-json", str(results_file)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "max ms" not in out.splitlines()[0]
    assert "--wide" in out


def test_wide_replay_has_every_column(results_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--from-json", str(results_file), "--wide"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    for column in ("max ms", "dup", "ooo", "srv MB", "thr", "load cpu", "proxy", "other", "flags"):
        assert column in header
