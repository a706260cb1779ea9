"""The picture: latency distribution per transport and the throughput bars.

matplotlib is the optional ``plot`` extra; it is imported only here, only
when a picture is asked for.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from bench.results import DISTURBED_PCT, RunResult
from bench.stats import CDF_QUANTILES


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def _colour(r: RunResult) -> str:
    if r.load_limited or not r.completed:
        return "tab:red"
    return "tab:orange" if r.other_cpu_pct >= DISTURBED_PCT else "tab:blue"


def draw(results: Sequence[RunResult], path: Path, *, title: str = "") -> None:
    """Draw ``results`` to a PNG at ``path``.

    Raises:
        PlotUnavailable: matplotlib is missing (install the ``plot`` extra).
    """
    try:
        # Lazily: matplotlib is optional and slow to import.
        import matplotlib  # noqa: PLC0415
        import matplotlib.ticker  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed: pip install -e '.[plot]'") from None

    latency = [r for r in results if r.scenario == "latency" and r.cdf_ms]
    bars = [r for r in results if r.scenario == "throughput"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    # The tail matters most: x is "nines", -log10(1 - q), so p50, p90, p99,
    # p99.9 and the maximum are evenly spaced (the maximum drawn at 99.99).
    tail = [(q, i) for i, q in enumerate(CDF_QUANTILES) if q >= 50]
    xs = [-math.log10(1 - min(q, 99.99) / 100) for q, _ in tail]
    for r in latency:
        left.plot(xs, [r.cdf_ms[i] for _, i in tail], marker=".", label=f"{r.transport} (p99 {r.p99_ms} ms)")
    left.set_xticks([-math.log10(1 - q / 100) for q in (50, 90, 99, 99.9, 99.99)])
    left.set_xticklabels(["p50", "p90", "p99", "p99.9", "max"])
    left.set_yscale("log")
    left.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    left.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("percentile of deliveries")
    left.set_ylabel("end-to-end latency, ms (log)")
    if latency:
        first = latency[0]
        left.set_title(f"latency scenario: {first.clients} clients, {first.senders} sending at a steady rate")
        left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)

    names = [r.transport for r in bars]
    rates = [r.rate for r in bars]
    colours = [
        "tab:red"
        if r.load_limited or not r.completed
        else "tab:orange"
        if r.other_cpu_pct >= DISTURBED_PCT
        else "tab:blue"
        for r in bars
    ]
    right.barh(names, rates, color=colours)
    for y, r in enumerate(bars):
        label = f"{r.rate:,.0f}  ({100 * r.delivery_ratio:.1f}% delivered)"
        if r.load_limited:
            label += " load-limited"
        if r.other_cpu_pct >= DISTURBED_PCT:
            label += " disturbed"
        right.text(r.rate, y, " " + label, va="center", fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("delivered messages/s (summed over receivers)")
    right.set_title("throughput scenario: every client sending\n(red: incomplete or load-limited; orange: disturbed)")
    right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:,.0f}k"))
    right.margins(x=0.45)
    # The title is the command that made the figure; long ones wrap rather than run off the page.
    fig.suptitle(textwrap.fill(title, width=170), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
