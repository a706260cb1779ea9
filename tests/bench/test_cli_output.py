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


def test_the_picture_is_titled_with_the_replay_command_not_the_scratch_path(
    results_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    titles: list[str] = []
    monkeypatch.setattr("bench.plot.draw", lambda results, path, *, title: titles.append(title))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--from-json", str(results_file), "--png", "p.png"]) == 0
    (title,) = titles
    command, what = title.splitlines()
    assert command == "python -m bench --from-json bench.json"
    assert "/tmp/scratch" not in title
    assert what == "one run each; measured 2026-11-21; at commit 1ad77cc; 2 x Some CPU"


def test_provenance_of_several_files() -> None:
    metas = [
        {"runs": 3, "date": "20261121-174218", "machine": {"cpu": "X", "cpus": 2, "commit": "aaa"}},
        {"runs": 3, "date": "20261122-010101", "machine": {"cpu": "X", "cpus": 2, "commit": "bbb"}},
    ]
    assert cli.provenance(metas) == "medians of 3 runs; measured 2026-11-21, 2026-11-22; at commit aaa, bbb; 2 x X"
    assert cli.provenance([{}]) == "medians of ? runs"
