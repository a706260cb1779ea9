"""The picture: latency distribution per transport and the throughput bars.

Strategy: one visual channel per meaning, the same in both panels. Colour
always means the transport (``tcp`` is the same colour on the left as on the
right, and no colour means anything else); a flag that makes a record's
figures doubtful is a line style on the left and a hatching on the right,
explained once in a legend under both panels, and spelt out next to the
record. So an incomplete or load-limited run cannot pass for a transport, nor
a transport for a status.

matplotlib is the optional ``plot`` extra; it is imported only here, only
when a picture is asked for.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from bench.results import RunResult, flags
from bench.scenarios import TRANSPORTS
from bench.stats import CDF_QUANTILES


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


#: One colour per transport, in the order of ``bench.scenarios.TRANSPORTS``
#: (matplotlib's "tab10", colour-blind friendlier than its default cycle's order).
_PALETTE: Final = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#d62728",
    "#393b79",  # an eleventh transport (websocket): tab20b's dark blue
)


def colour_of(transport: str) -> str:
    """The transport's colour, the same in every panel and every picture."""
    names = list(TRANSPORTS)
    index = names.index(transport) if transport in names else len(names) + sum(map(ord, transport))
    return _PALETTE[index % len(_PALETTE)]


@dataclass(frozen=True, slots=True)
class Style:
    """How a record's status is drawn: never a colour."""

    label: str
    linestyle: Literal["-", "--", ":", "-."]
    marker: str
    hatch: str


#: A record with no doubtful flag.
MEASURED: Final = Style("measured", "-", ".", "")

#: The flags that make a record's figures doubtful, worst first: a record is
#: drawn in the style of the first one it raises (its label lists them all).
STATUS: Final = {
    "incomplete": Style("incomplete: not every delivery made it", ":", "x", "xx"),
    "load-limited": Style("load-limited: a floor, not the server's", "--", "^", "//"),
    "disturbed": Style("disturbed: other processes were busy", "-.", "v", ".."),
}


def status_of(r: RunResult) -> list[str]:
    """The doubtful flags ``r`` raises, worst first."""
    raised = {flag.name for flag in flags(r)}
    return [name for name in STATUS if name in raised]


def style_of(r: RunResult) -> Style:
    """How ``r`` is drawn."""
    status = status_of(r)
    return STATUS[status[0]] if status else MEASURED


def _tag(r: RunResult) -> str:
    status = status_of(r)
    return f" [{', '.join(status)}]" if status else ""


def draw(results: Sequence[RunResult], path: Path, *, title: str = "") -> None:
    """Draw ``results`` to a PNG at ``path``.

    Args:
        results: records; the latency panel takes the ``latency`` scenario's,
            the bars the ``throughput`` scenario's.
        path: the PNG to write (its folder is made).
        title: over both panels, one or more lines; a long line wraps.

    Raises:
        PlotUnavailable: matplotlib is missing (install the ``plot`` extra).
    """
    try:
        # Lazily: matplotlib is optional and slow to import.
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        import matplotlib.ticker  # noqa: PLC0415
        from matplotlib.legend_handler import HandlerTuple  # noqa: PLC0415
        from matplotlib.lines import Line2D  # noqa: PLC0415
        from matplotlib.patches import Patch  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed: pip install -e '.[plot]'") from None

    # A distribution of another length was taken at other quantiles: it cannot share the x axis.
    latency = [r for r in results if r.scenario == "latency" and len(r.cdf_ms) == len(CDF_QUANTILES)]
    bars = [r for r in results if r.scenario == "throughput"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 7))
    # The tail matters most: x is "nines", -log10(1 - q), so p50, p90, p99,
    # p99.9 and the maximum are evenly spaced (the maximum drawn at 99.99).
    tail = [(q, i) for i, q in enumerate(CDF_QUANTILES) if q >= 50]
    xs = [-math.log10(1 - min(q, 99.99) / 100) for q, _ in tail]
    for r in latency:
        style = style_of(r)
        p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.2f}"
        left.plot(
            xs,
            [r.cdf_ms[i] for _, i in tail],
            color=colour_of(r.transport),
            linestyle=style.linestyle,
            marker=style.marker,
            markersize=4,
            label=f"{r.transport}: {p99} ms{_tag(r)}",
        )
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
        # Under the axes: over them, it would hide the tail of the slowest lines.
        left.legend(
            fontsize=8,
            title="transport (colour): p99",
            title_fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncols=2,
            frameon=False,
        )
    left.grid(True, which="both", alpha=0.3)

    # Positions, not names: two records of one transport (two files) get two bars.
    ys = range(len(bars))
    right.barh(
        ys,
        [r.rate for r in bars],
        color=[colour_of(r.transport) for r in bars],
        hatch=[style_of(r).hatch for r in bars],
        edgecolor="black",
        linewidth=0.6,
    )
    right.set_yticks(list(ys), [r.transport for r in bars])
    for y, r in zip(ys, bars, strict=True):
        label = f"{r.rate:,.0f}  ({100 * r.delivery_ratio:.1f}% delivered){_tag(r)}"
        right.text(r.rate, y, " " + label, va="center", fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("delivered messages/s (summed over receivers)")
    right.set_title("throughput scenario: every client sending")
    right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:,.0f}k"))
    right.margins(x=0.55)

    # One legend for status, for both panels: the line style and the hatching it means.
    handles: list[Any] = [
        (
            Line2D([], [], color="black", linestyle=style.linestyle, marker=style.marker, markersize=4),
            Patch(facecolor="white", edgecolor="black", hatch=style.hatch),
        )
        for style in (MEASURED, *STATUS.values())
    ]
    right.legend(
        handles,
        [style.label for style in (MEASURED, *STATUS.values())],
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0.8)},
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=2,
        fontsize=8,
        frameon=False,
        handlelength=4,
        title="status, both panels (line style, hatching); colour is always the transport",
        title_fontsize=8,
    )
    # The title is the command that made the figure; long lines wrap rather than run off the page.
    fig.suptitle("\n".join(textwrap.fill(line, width=170) for line in title.splitlines()), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
