"""Percentiles, medians, result records, their JSON and the table."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from bench.results import RunResult, format_table, from_json, medians, to_json
from bench.runner import summarize_events
from bench.scenarios import FULL, TRANSPORTS
from bench.stats import CDF_QUANTILES, median, percentile, rate, summarize_latencies


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 51) == 3


@pytest.mark.parametrize("p", [-1, 101])
def test_percentile_refuses_out_of_range(p: float) -> None:
    with pytest.raises(ValueError):
        percentile([1], p)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_median() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_latency_summary_in_milliseconds() -> None:
    summary = summarize_latencies([i * 1_000_000 for i in range(1, 1001)])  # 1..1000 ms
    assert summary is not None
    assert (summary.count, summary.p50_ms, summary.p99_ms, summary.max_ms) == (1000, 500.0, 990.0, 1000.0)
    assert len(summary.cdf_ms) == len(CDF_QUANTILES)
    assert list(summary.cdf_ms) == sorted(summary.cdf_ms)
    assert summarize_latencies([]) is None


def test_rate() -> None:
    assert rate(10, 2.0) == 5.0
    assert rate(10, 0.0) == 0.0


def record(**changes: object) -> RunResult:
    base = RunResult(
        scenario="throughput",
        transport="tcp",
        run=1,
        clients=10,
        senders=10,
        sent=20_000,
        expected=180_000,
        delivered=180_000,
        duplicates=0,
        out_of_order=0,
        garbled=0,
        seconds=0.5,
        rate=360_000.0,
        delivery_ratio=1.0,
        p50_ms=1.0,
        p99_ms=2.0,
        max_ms=3.0,
        read_lag_p99_ms=0.5,
        server_cpu_s=0.5,
        server_cpu_pct=100.0,
        server_sys_share=0.3,
        server_rss_mb=20.0,
        server_threads=22,
        load_cpu_s=0.3,
        load_cpu_pct=60.0,
        proxy_cpu_pct=0.0,
        other_cpu_pct=3.0,
        load_limited=False,
        completed=True,
        notes=("a note",),
        cdf_ms=(0.5, 1.0, 2.0),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_medians_per_scenario_and_transport() -> None:
    runs = [
        record(run=1, rate=100.0, p99_ms=1.0, server_threads=20, cdf_ms=(1.0, 2.0, 3.0)),
        record(run=2, rate=300.0, p99_ms=None, server_threads=24, load_limited=True, cdf_ms=(3.0, 4.0, 5.0)),
        record(run=3, rate=200.0, p99_ms=3.0, server_threads=22, completed=False, cdf_ms=(2.0, 3.0, 4.0)),
        record(transport="udp", rate=50.0),
    ]
    tcp, udp = medians(runs)
    assert (tcp.transport, tcp.run, tcp.rate, tcp.server_threads) == ("tcp", 3, 200.0, 22)
    assert tcp.p99_ms == 2.0  # the median of the runs that measured one
    assert tcp.cdf_ms == (2.0, 3.0, 4.0)
    assert tcp.load_limited and not tcp.completed
    assert tcp.notes == ("a note (runs 1, 2, 3)",)
    assert (udp.run, udp.rate, udp.notes) == (1, 50.0, ("a note",))


def test_json_round_trip() -> None:
    runs = [record(), record(run=2, p50_ms=None, cdf_ms=()), record(run=3, transport="udp", **_SEGMENTS)]
    text = to_json(runs, medians(runs), {"command": "python -m bench --quick"})
    back_runs, back_summary, meta = from_json(text)
    assert back_runs == runs
    assert back_summary == medians(runs)
    assert meta == {"command": "python -m bench --quick"}


def test_json_refuses_another_document() -> None:
    with pytest.raises(ValueError):
        from_json('{"schema": 999}')


#: A UDP run's segment counts: the server resent 0.5% of its segments, the
#: clients 0.1%, and 20 of 11,000 arrived twice.
_SEGMENTS: dict[str, int] = {
    "echoes": 20_000,
    "server_segments": 10_000,
    "server_resent": 50,
    "server_duplicates": 1,
    "client_segments": 1_000,
    "client_resent": 1,
    "client_duplicates": 19,
}


def test_the_wide_table_gives_echoes_and_the_retransmission_ratios() -> None:
    udp = record(transport="udp", **_SEGMENTS)
    assert (udp.server_resent_ratio, udp.client_resent_ratio) == (0.005, 0.001)
    assert udp.duplicate_data_ratio == 20 / 11_000
    header, tcp_row, udp_row = format_table([record(echoes=20_000), udp], wide=True).splitlines()[:3]
    for column in ("echoes", "resent s/c", "dup data"):
        assert column in header
    assert udp_row.split()[10:13] == ["20000", "0.50%/0.10%", "0.18%"]
    assert tcp_row.split()[10:13] == ["20000", "-/-", "-"]  # TCP has no segments
    # Medians of the counts, run by run; an old record without them shows dashes.
    runs = [replace(udp, run=n, server_resent=n * 10) for n in (1, 2, 3)]
    assert medians(runs)[0].server_resent == 20
    assert format_table([record()], wide=True).splitlines()[1].split()[10:13] == ["-", "-/-", "-"]


def test_wide_table_has_every_column_and_flags_in_words() -> None:
    table = format_table(
        [record(), record(transport="udp", load_limited=True, completed=False, garbled=3, other_cpu_pct=40.0)],
        wide=True,
    )
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["scenario", "transport"]
    for column in ("max ms", "dup", "ooo", "srv MB", "thr", "load cpu", "proxy", "other"):
        assert column in lines[0]
    assert "360,000" in lines[1]
    assert "LOAD-LIMITED" in lines[2] and "INCOMPLETE" in lines[2] and "garbled=3" in lines[2]
    assert "DISTURBED" in lines[2] and "DISTURBED" not in lines[1]
    assert "- throughput/tcp: a note" in table


def _realistic() -> list[RunResult]:
    """Every scenario over every transport with the widest figures a run gives, one row raising every flag."""
    rows = [
        record(
            scenario=s.name,
            transport=t,
            clients=s.clients,
            rate=1_651_656.0,
            p50_ms=42.51,
            p99_ms=2_172.31,
            max_ms=12_682.77,
            delivery_ratio=0.6432,
            server_cpu_pct=101.0,
            server_rss_mb=1234.0,
            server_threads=2002,
            load_cpu_pct=100.0,
            proxy_cpu_pct=48.0,
            other_cpu_pct=3.0,
            notes=(
                f"the kernel dropped 38256 UDP datagrams on full receive buffers (machine-wide count) (runs 1, 2, {t})",
            ),
        )
        for s in FULL
        for t in TRANSPORTS
    ]
    rows[-1] = replace(
        rows[-1], load_limited=True, completed=False, other_cpu_pct=40.0, garbled=12, duplicates=3, out_of_order=4
    )
    return rows


def test_default_table_fits_100_columns() -> None:
    rows = _realistic()
    lines = format_table(rows).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len([line for line in lines if line.startswith(tuple(s.name for s in FULL))]) == len(rows)
    assert rows[-1].transport in lines[len(rows)]  # the last row, with every flag


def _key_letters(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines() if re.match(r"  [A-Z] ", line)]


def test_default_table_flags_are_letters_with_a_key() -> None:
    rows = _realistic()
    table = format_table(rows)
    assert table.splitlines()[len(rows)].split()[-1] == "LIDGRO"
    assert _key_letters(table) == ["L", "I", "D", "G", "R", "O"]
    # Only the letters that some row shows are explained.
    assert "flags:" not in format_table([record()])
    assert _key_letters(format_table([record(), record(load_limited=True)])) == ["L"]


def test_wide_restores_the_details_the_default_leaves_out() -> None:
    rows = _realistic()
    narrow, wide = format_table(rows), format_table(rows, wide=True)
    assert "12682.77" not in narrow and "12682.77" in wide  # max ms
    assert "2002" not in narrow and "2002" in wide  # server threads
    assert "LOAD-LIMITED INCOMPLETE DISTURBED garbled=12" in wide
    assert max(len(line) for line in wide.splitlines()) > 100


def test_default_latency_keeps_hundredths_below_100_ms_only() -> None:
    row = format_table([record(p50_ms=0.26, p99_ms=217.31)]).splitlines()[1].split()
    assert "0.26" in row and "217" in row


def test_client_events_are_counted_once_per_kind() -> None:
    events = [f"b000{i} got Left(nick='b0009')" for i in range(9)] + ["b0001 lost: closed", "b0001 lost: closed"]
    assert summarize_events(events) == ["9 clients: got Left(nick='b0009')", "1 client: lost: closed"]
    many = [f"b0000 kind {k}" for k in range(5)]
    assert summarize_events(many)[-1] == "and 2 other kinds of client events"


@pytest.mark.parametrize("wide", [False, True])
def test_markdown_table(wide: bool) -> None:
    table = format_table([record(), record(transport="udp", load_limited=True)], markdown=True, wide=wide)
    lines = table.splitlines()
    assert lines[0].startswith("| scenario | transport |")
    assert lines[1].startswith("|---|---|---:|")
    assert len(lines[2].split("|")) == len(lines[0].split("|"))
    assert ("| max ms |" in lines[0]) == wide
    assert ("LOAD-LIMITED" in lines[3]) == wide
