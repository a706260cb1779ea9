"""The picture: colour means the transport, status is a line style and a hatching."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.plot import MEASURED, STATUS, colour_of, draw, status_of, style_of
from bench.scenarios import TRANSPORTS
from bench.stats import CDF_QUANTILES
from tests.bench.test_stats_results import record

pytestmark = pytest.mark.timeout(30)


def test_every_transport_has_its_own_colour() -> None:
    colours = [colour_of(name) for name in TRANSPORTS]
    assert len(set(colours)) == len(colours)


def test_status_never_changes_the_colour_and_incomplete_is_marked() -> None:
    fine = record(transport="tcp")
    incomplete = replace(fine, completed=False)
    assert colour_of(incomplete.transport) == colour_of(fine.transport)
    assert style_of(fine) == MEASURED
    assert style_of(incomplete) == STATUS["incomplete"]
    assert style_of(incomplete).hatch and style_of(incomplete).linestyle != MEASURED.linestyle


def test_the_worst_status_sets_the_style_and_every_one_is_named() -> None:
    both = record(load_limited=True, completed=False, other_cpu_pct=90.0)
    assert status_of(both) == ["incomplete", "load-limited", "disturbed"]
    assert style_of(both) == STATUS["incomplete"]
    assert style_of(record(other_cpu_pct=90.0)) == STATUS["disturbed"]
    styles = [MEASURED, *STATUS.values()]
    assert len({(s.linestyle, s.marker, s.hatch) for s in styles}) == len(styles)


def test_draw_writes_a_png(tmp_path: Path) -> None:
    cdf = tuple(0.1 * (i + 1) for i in range(len(CDF_QUANTILES)))
    results = [
        record(scenario="latency", transport="tcp", cdf_ms=cdf),
        record(scenario="latency", transport="udp", completed=False, cdf_ms=cdf),
        record(transport="tcp"),
        record(transport="udp", load_limited=True),
        record(transport="udp", other_cpu_pct=50.0),  # the same transport twice: two bars
    ]
    path = tmp_path / "sub" / "b.png"
    draw(results, path, title="python -m bench --from-json a.json\nmedians of 3 runs")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
