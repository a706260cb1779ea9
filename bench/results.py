"""Result records: one per run, their medians, the JSON file and the stdout table (pure)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Final

from bench.stats import median

#: Version of the JSON layout; bump it when a field changes meaning.
SCHEMA = 2

#: Other processes count as disturbing a run above this share of one core.
DISTURBED_PCT = 25.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything measured in one run of one scenario over one transport."""

    scenario: str
    transport: str
    run: int
    clients: int
    senders: int
    #: Messages the senders sent.
    sent: int
    #: Deliveries that should happen: each message to each receiver.
    expected: int
    #: Unique deliveries that happened.
    delivered: int
    duplicates: int
    out_of_order: int
    #: Relayed messages whose text was not a benchmark text (merged, cut, corrupted).
    garbled: int
    #: From the first send to the last delivery.
    seconds: float
    #: Unique deliveries per second, summed over receivers.
    rate: float
    delivery_ratio: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    #: p99 of how long bytes waited in a client socket before the load generator
    #: read them: not part of the latency above (kernel receive stamps), shown
    #: so a reader sees what a slower reader would have added.
    read_lag_p99_ms: float | None
    #: Server CPU (user + system) over the measured window, and as % of one core.
    server_cpu_s: float
    server_cpu_pct: float
    #: Share of the server's CPU spent in the kernel (system calls, the loopback network stack).
    server_sys_share: float
    server_rss_mb: float
    server_threads: int
    #: The load generator's own CPU over the measured window, and as % of one core.
    load_cpu_s: float
    load_cpu_pct: float
    #: The lossy proxies' CPU, all of them together, % of one core.
    proxy_cpu_pct: float
    #: Every other process on the machine (other people's work), % of one core.
    other_cpu_pct: float
    #: The load generator, or a lossy proxy, was near a full core: the figure is a floor, not the server's.
    load_limited: bool
    #: Every expected delivery happened before the deadline (or the run drained).
    completed: bool
    notes: tuple[str, ...] = ()
    cdf_ms: tuple[float, ...] = field(default=())
    #: A sender's own messages that came back to it (the server's echo), all
    #: senders together: not deliveries, but the server sent them (None: not recorded).
    echoes: int | None = None
    #: Reliable UDP, over the run (joins and the shutdown included): the
    #: ``Data`` segments the server sent (seq numbers used), those it sent
    #: again, and the clients' segments it received twice, from its shutdown
    #: line; then the same of the load clients' channels. None: not UDP, or
    #: the server did not say.
    server_segments: int | None = None
    server_resent: int | None = None
    server_duplicates: int | None = None
    client_segments: int | None = None
    client_resent: int | None = None
    client_duplicates: int | None = None

    @property
    def server_resent_ratio(self) -> float | None:
        """The server's ``Data`` segments sent again, over those it sent."""
        return _ratio(self.server_resent, self.server_segments)

    @property
    def client_resent_ratio(self) -> float | None:
        """The clients' ``Data`` segments sent again, over those they sent."""
        return _ratio(self.client_resent, self.client_segments)

    @property
    def duplicate_data_ratio(self) -> float | None:
        """``Data`` segments received twice, both ways, over all sent (issue 14 asks at most 1%)."""
        if self.server_duplicates is None or self.client_duplicates is None:
            return None
        if self.server_segments is None or self.client_segments is None:
            return None
        return _ratio(self.server_duplicates + self.client_duplicates, self.server_segments + self.client_segments)


def _ratio(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else part / whole


_NUMERIC = tuple(
    f.name
    for f in fields(RunResult)
    if f.name not in {"scenario", "transport", "run", "load_limited", "completed", "notes", "cdf_ms"}
)


def _median_or_none(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    mid = median(present)
    return round(mid) if all(isinstance(v, int) and not isinstance(v, bool) for v in present) else mid


def _runs_of_notes(runs: Sequence[RunResult]) -> tuple[str, ...]:
    """Each distinct note once, saying which runs it is from."""
    where: dict[str, list[int]] = {}
    for r in runs:
        for note in r.notes:
            where.setdefault(note, []).append(r.run)
    return tuple(
        f"{note} (run{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})"
        for note, numbers in where.items()
    )


def medians(results: Iterable[RunResult]) -> list[RunResult]:
    """One record per (scenario, transport): the median of each figure over its runs.

    ``run`` becomes the number of runs; a run that was load-limited or did not
    complete marks the median too, and notes are kept once each with the runs
    they come from.
    """
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.scenario, result.transport), []).append(result)
    out = []
    for runs in groups.values():
        figures = {name: _median_or_none([getattr(r, name) for r in runs]) for name in _NUMERIC}
        cdfs = [r.cdf_ms for r in runs if r.cdf_ms]
        cdf = tuple(median(column) for column in zip(*cdfs, strict=True)) if cdfs else ()
        notes = _runs_of_notes(runs) if len(runs) > 1 else runs[0].notes
        out.append(
            replace(
                runs[0],
                run=len(runs),
                load_limited=any(r.load_limited for r in runs),
                completed=all(r.completed for r in runs),
                notes=notes,
                cdf_ms=cdf,
                **figures,
            )
        )
    return out


def to_json(runs: Sequence[RunResult], summary: Sequence[RunResult], meta: dict[str, Any]) -> str:
    """The JSON file: machine and command in ``meta``, every run, and the medians."""
    document = {
        "schema": SCHEMA,
        "meta": meta,
        "runs": [asdict(r) for r in runs],
        "medians": [asdict(r) for r in summary],
    }
    return json.dumps(document, indent=1)


def result_from_dict(raw: dict[str, Any]) -> RunResult:
    """Rebuild a record from its JSON form."""
    raw = dict(raw)
    raw["notes"] = tuple(raw.get("notes", ()))
    raw["cdf_ms"] = tuple(raw.get("cdf_ms", ()))
    return RunResult(**raw)


def from_json(text: str) -> tuple[list[RunResult], list[RunResult], dict[str, Any]]:
    """Read back what ``to_json`` wrote: runs, medians, meta.

    Raises:
        ValueError: not a result file of this schema.
    """
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError("not a twinchat benchmark result of this schema")
    runs = [result_from_dict(r) for r in document["runs"]]
    summary = [result_from_dict(r) for r in document["medians"]]
    return runs, summary, document["meta"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(ratio: float | None) -> str:
    """A ratio as a percentage with hundredths (retransmissions are judged against 1%)."""
    return "-" if ratio is None else f"{100 * ratio:.2f}%"


def _ms_short(value: float | None) -> str:
    """Milliseconds in at most 6 characters up to 100 s: hundredths below 100 ms, whole ones above."""
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


@dataclass(frozen=True, slots=True)
class Flag:
    """Something a reader must know before trusting a record's figures."""

    #: Its name in the picture and the key.
    name: str
    #: Its letter in the default table.
    letter: str
    #: What it means, for the key under the table.
    meaning: str
    raised: Callable[[RunResult], bool]


FLAGS: Final = (
    Flag(
        "load-limited",
        "L",
        "a floor, the load generator or a lossy proxy was near a full core",
        lambda r: r.load_limited,
    ),
    Flag("incomplete", "I", "not every delivery happened before the deadline", lambda r: not r.completed),
    Flag(
        "disturbed",
        "D",
        f"other processes used {DISTURBED_PCT:.0f}% of a core or more",
        lambda r: r.other_cpu_pct >= DISTURBED_PCT,
    ),
    Flag("garbled", "G", "relayed texts that were not benchmark texts", lambda r: r.garbled > 0),
    Flag("repeated", "R", "a receiver got a message twice", lambda r: r.duplicates > 0),
    Flag("out of order", "O", "a receiver got a sender's messages out of order", lambda r: r.out_of_order > 0),
)


def flags(r: RunResult) -> list[Flag]:
    """The flags ``r`` raises, in the order of ``FLAGS``."""
    return [flag for flag in FLAGS if flag.raised(r)]


# The wide table: every figure a run has, 20 columns (about 180 characters).
_WIDE = (
    ("scenario", "<"),
    ("transport", "<"),
    ("clients", ">"),
    ("msgs/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("max ms", ">"),
    ("delivered", ">"),
    ("dup", ">"),
    ("ooo", ">"),
    ("echoes", ">"),
    ("resent s/c", ">"),
    ("dup data", ">"),
    ("srv cpu", ">"),
    ("srv MB", ">"),
    ("thr", ">"),
    ("load cpu", ">"),
    ("proxy", ">"),
    ("other", ">"),
    ("flags", "<"),
)

# The default table fits 100 columns with the longest names we have
# (slow-consumer, udp-unreliable-loss20): the figures a reader compares
# across transports, and each flag as one letter with a key under the table.
_NARROW = (
    ("scenario", "<"),
    ("transport", "<"),
    ("clients", ">"),
    ("msgs/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("delivered", ">"),
    ("srv cpu", ">"),
    ("flags", "<"),
)

#: Plain-text lines under the table (notes, the key) wrap at this width.
WIDTH = 100


def _wide_row(r: RunResult) -> list[str]:
    words = [flag.name.upper() for flag in flags(r) if flag.name in {"load-limited", "incomplete", "disturbed"}]
    if r.garbled:
        words.append(f"garbled={r.garbled}")
    return [
        r.scenario,
        r.transport,
        str(r.clients),
        f"{r.rate:,.0f}",
        _ms(r.p50_ms),
        _ms(r.p99_ms),
        _ms(r.max_ms),
        f"{100 * r.delivery_ratio:.2f}%",
        str(r.duplicates),
        str(r.out_of_order),
        "-" if r.echoes is None else str(r.echoes),
        f"{_pct(r.server_resent_ratio)}/{_pct(r.client_resent_ratio)}",
        _pct(r.duplicate_data_ratio),
        f"{r.server_cpu_pct:.0f}%",
        f"{r.server_rss_mb:.0f}",
        str(r.server_threads),
        f"{r.load_cpu_pct:.0f}%",
        f"{r.proxy_cpu_pct:.0f}%" if r.proxy_cpu_pct else "-",
        f"{r.other_cpu_pct:.0f}%",
        " ".join(words),
    ]


def _narrow_row(r: RunResult) -> list[str]:
    return [
        r.scenario,
        r.transport,
        str(r.clients),
        f"{r.rate:,.0f}",
        _ms_short(r.p50_ms),
        _ms_short(r.p99_ms),
        f"{100 * r.delivery_ratio:.2f}%",
        f"{r.server_cpu_pct:.0f}%",
        "".join(flag.letter for flag in flags(r)),
    ]


def _key(results: Sequence[RunResult]) -> list[str]:
    """What each letter in the flags column means, for the letters some row shows."""
    shown = {flag.letter for r in results for flag in flags(r)}
    return [f"{flag.letter} {flag.name}: {flag.meaning}" for flag in FLAGS if flag.letter in shown]


def format_table(results: Sequence[RunResult], *, markdown: bool = False, wide: bool = False) -> str:
    """A table, one row per record, and the notes under it: plain text, or Markdown.

    Args:
        results: the records, one row each, in this order.
        markdown: a Markdown table instead of aligned plain text.
        wide: every figure (20 columns, about 180 characters); by default the
            plain table fits ``WIDTH`` columns: the figures compared across
            transports, and each flag as a letter with a key under the table.
    """
    columns, render = (_WIDE, _wide_row) if wide else (_NARROW, _narrow_row)
    rows = [[name for name, _ in columns], *(render(r) for r in results)]
    notes = [f"- {r.scenario}/{r.transport}: {note}" for r in results for note in r.notes]
    key = [] if wide else _key(results)
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |"]
        lines.append("|" + "|".join("---:" if align == ">" else "---" for _, align in columns) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
        if key:
            lines += ["", "flags: " + "; ".join(key)]
        if notes:
            lines += ["", "notes:", *notes]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for cells in rows:
        aligned = [
            cell.ljust(width) if align == "<" else cell.rjust(width)
            for cell, width, (_, align) in zip(cells, widths, columns, strict=True)
        ]
        lines.append("  ".join(aligned).rstrip())
    if key:
        lines += [
            "",
            "flags:",
            *(textwrap.fill(k, WIDTH, initial_indent="  ", subsequent_indent="      ") for k in key),
        ]
    if notes:
        lines += [
            "",
            "notes:",
            *(textwrap.fill(note, WIDTH, subsequent_indent="  ", break_on_hyphens=False) for note in notes),
        ]
    return "\n".join(lines)
