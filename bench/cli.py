"""``python -m bench``: run the matrix, print the table, write the JSON and the PNG."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.load import LoadError
from bench.machinelock import machine_lock
from bench.results import RunResult, format_table, from_json, medians, to_json
from bench.runner import Placement, run_once
from bench.servers import StartError
from twinchat import version

_DEFAULT_OUT = Path("bench-results")
#: Seconds a run waits for another benchmark's run on this machine before going ahead.
LOCK_WAIT = 600.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the TCP and UDP chat servers on the same work: throughput, latency, "
        "fan-out, a slow consumer and (TCP) memory with 1000 clients. Prints a table, writes a JSON "
        "file and, with matplotlib installed (the 'plot' extra), a PNG. 'python -m bench scale --help': "
        "ten thousand users on one server (issue 12), a command of its own.",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of the whole matrix in under a minute"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s (twinchat {version()})")
    p.add_argument("--runs", type=int, default=1, help="runs of each scenario; the table shows medians (default: 1)")
    p.add_argument(
        "--scenarios",
        help=f"comma-separated subset of: {', '.join(s.name for s in sc.FULL)} (default: all)",
    )
    p.add_argument(
        "--transports",
        help=f"comma-separated subset of: {', '.join(sc.TRANSPORTS)} (default: all; with --quick: "
        f"{', '.join(sc.QUICK_TRANSPORTS)})",
    )
    p.add_argument(
        "--scrape",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="start each server with --metrics and read its /metrics every SECONDS during the run, to see what "
        "metrics cost (default: off)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the lossy proxy (default: %(default)s)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs")
    p.add_argument("--json", type=Path, help="result file (default: bench-results/bench-TIME.json)")
    p.add_argument("--png", type=Path, help="picture (default: next to the JSON file; needs matplotlib)")
    p.add_argument("--no-png", action="store_true", help="do not draw the picture")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="run nothing: print the medians of these result files as one table (and draw --png if given)",
    )
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument(
        "--wide",
        action="store_true",
        help="print every column (20, about 180 characters wide); by default the table fits 100 "
        "columns and the other figures are in the JSON file",
    )
    return p


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "cpu": model,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
    }


def _slow_consumer_notes(results: list[RunResult]) -> list[RunResult]:
    """Add to each slow-consumer record the healthy clients' rate as a share of the baseline's."""
    base = {r.transport: r.rate for r in results if r.scenario == "slow-baseline"}
    out = []
    for r in results:
        if r.scenario == "slow-consumer" and base.get(r.transport):
            share = 100 * r.rate / base[r.transport]
            out.append(replace(r, notes=(*r.notes, f"healthy clients got {share:.0f}% of the slow-baseline rate")))
        else:
            out.append(r)
    return out


def ratios(summary: Sequence[RunResult], base: str = "tcp") -> list[str]:
    """Each TCP-port variant (TLS, WebSocket) against plain ``base`` in the same
    run, per scenario: its rate as a multiple of the base's, and its median
    latency's. (The issue's goal: TLS and WebSocket at least 0.5x TCP's rate.)"""
    by_scenario: dict[str, RunResult] = {r.scenario: r for r in summary if r.transport == base}
    variants = {name for name, t in sc.TRANSPORTS.items() if t.kind == "tcp" and name != base}
    out = []
    for r in summary:
        ref = by_scenario.get(r.scenario)
        if r.transport not in variants or ref is None or not ref.rate:
            continue
        line = f"{r.scenario}: {r.transport} / {base} = {r.rate / ref.rate:.2f}x the rate"
        if r.p50_ms is not None and ref.p50_ms:
            line += f", {r.p50_ms / ref.p50_ms:.2f}x the p50 latency"
        out.append(line)
    return out


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_matrix(
    *,
    count: int,
    chosen: Sequence[sc.Scenario],
    transports: Sequence[sc.Transport],
    placement: Placement,
    seed: int,
    lock_wait: float,
    log: Callable[[str], None],
) -> tuple[list[RunResult], list[str]]:
    """Every run of every scenario over every transport; the runs that could not start are listed, not fatal."""
    runs: list[RunResult] = []
    skipped: list[str] = []
    for run in range(1, count + 1):
        for scenario in chosen:
            for transport in transports:
                if scenario.only is not None and transport.name not in scenario.only:
                    continue
                label = f"{scenario.name}/{transport.name} run {run}"
                log(f"{label}: starting")
                try:
                    with machine_lock(lock_wait, log) as alone:
                        result = run_once(scenario, transport, run, placement=placement, seed=seed, log=log)
                    if not alone:
                        result = replace(
                            result, notes=(*result.notes, "ran alongside another benchmark (its lock was not freed)")
                        )
                except (StartError, LoadError, OSError, ImportError) as exc:
                    skipped.append(f"{label}: {exc}")
                    log(f"{label}: skipped: {exc}")
                    continue
                runs.append(result)
                log(
                    f"{label}: {result.rate:,.0f} msg/s, p99 {result.p99_ms} ms, "
                    f"delivered {100 * result.delivery_ratio:.2f}%"
                )
    return runs, skipped


def _shown(path: Path) -> str:
    """``path`` as a reader would type it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def provenance(metas: Sequence[dict[str, Any]]) -> str:
    """One line on what the figures are and where they were measured, from the files' ``meta``."""

    def each(get: Callable[[dict[str, Any]], Any]) -> list[str]:
        return sorted({str(v) for m in metas if (v := get(m)) not in (None, "")})

    runs = each(lambda m: m.get("runs"))
    what = "one run each" if runs == ["1"] else f"medians of {' or '.join(runs) or '?'} runs"
    days = each(lambda m: m.get("date", "")[:8])
    when = ", ".join(f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else d for d in days)
    commits = each(lambda m: m.get("machine", {}).get("commit"))
    cpus = each(lambda m: "{} x {}".format(m["machine"]["cpus"], m["machine"]["cpu"]) if "machine" in m else None)
    parts = [what, f"measured {when}" if when else "", f"at commit {', '.join(commits)}" if commits else "", *cpus]
    return "; ".join(part for part in parts if part)


def _draw(summary: Sequence[RunResult], png: Path, title: str) -> None:
    from bench.plot import PlotUnavailable, draw  # noqa: PLC0415  (matplotlib only when drawing)

    try:
        draw(summary, png, title=title)
        print(f"picture: {png}")
    except PlotUnavailable as exc:
        print(f"picture: not drawn ({exc})")


def _print_table(summary: Sequence[RunResult], *, markdown: bool, wide: bool) -> None:
    print(format_table(summary, markdown=markdown, wide=wide))
    if summary and not wide and not markdown:
        print("\nmore columns (max ms, dup, ooo, memory, threads, load, proxy, other CPU): --wide, or the JSON")


def _replay(files: Sequence[Path], *, markdown: bool, wide: bool, png: Path | None) -> int:
    """Print (and draw) the medians of result files written earlier, merged."""
    summary: list[RunResult] = []
    metas = []
    for path in files:
        try:
            _, medians_of_file, meta = from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"python -m bench: {path}: {exc}", file=sys.stderr)
            return 2
        summary += medians_of_file
        metas.append(meta)
    _print_table(summary, markdown=markdown, wide=wide)
    if png is not None:
        # The title names the files, as the reader can type it again; the
        # commands that measured them are in their meta (with the paths they
        # were first written to, often a scratch directory).
        command = shlex.join(["python", "-m", "bench", "--from-json", *map(_shown, files)])
        _draw(summary, png, f"{command}\n{provenance(metas)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scale"]:
        # A scenario of its own shape (phases, not a matrix of rates): see bench.scale.
        from bench.scale import main as scale_main  # noqa: PLC0415

        return scale_main(argv[1:])
    if argv[:1] == ["cluster"]:
        # Servers on one Redis against one process (issue 10): see bench.cluster.
        from bench.cluster import main as cluster_main  # noqa: PLC0415

        return cluster_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.from_json:
        return _replay(args.from_json, markdown=args.markdown, wide=args.wide, png=args.png)
    try:
        chosen = sc.select(args.scenarios.split(",") if args.scenarios else None, args.quick)
        default = sc.QUICK_TRANSPORTS if args.quick else tuple(sc.TRANSPORTS)
        names = args.transports.split(",") if args.transports else list(default)
        unknown = [n for n in names if n not in sc.TRANSPORTS]
        if unknown:
            raise ValueError(f"unknown transport {', '.join(unknown)} (known: {', '.join(sc.TRANSPORTS)})")
    except ValueError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    transports = [replace(sc.TRANSPORTS[n], scrape=args.scrape) for n in names]
    placement = Placement.split(pin=not args.no_pin)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    json_path = args.json or _DEFAULT_OUT / f"bench-{stamp}.json"
    png_path = args.png or json_path.with_suffix(".png")
    log = _log

    log(f"server CPUs {placement.server or 'any'}, load CPUs {placement.load or 'any'}")
    began = time.monotonic()
    runs, skipped = _run_matrix(
        count=args.runs,
        chosen=chosen,
        transports=transports,
        placement=placement,
        seed=args.seed,
        # A quick run is a smoke run, not a measurement: it does not queue behind
        # another benchmark (its runs are noted as run alongside instead).
        lock_wait=0.0 if args.quick else LOCK_WAIT,
        log=log,
    )
    summary = _slow_consumer_notes(medians(runs) if args.runs > 1 else runs)
    heading = f"medians of {args.runs} runs" if args.runs > 1 else "one run"
    print(f"twinchat benchmark ({'quick' if args.quick else 'full'}, {heading}, {time.monotonic() - began:.0f} s)")
    _print_table(summary, markdown=args.markdown, wide=args.wide)
    if against := ratios(summary):
        print("\nagainst plain tcp in the same run:")
        for line in against:
            print(f"- {line}")
    if skipped:
        print("\nskipped:")
        for line in skipped:
            print(f"- {line}")
    meta = {
        "command": shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "date": stamp,
        "quick": args.quick,
        "runs": args.runs,
        "placement": {
            "server": sorted(placement.server or []),
            "load": sorted(placement.load or []),
        },
        "machine": _machine(),
        "scenarios": {s.name: s.what for s in chosen},
        "skipped": skipped,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(to_json(runs, summary, meta))
    print(f"\nresults: {json_path}")
    if not args.no_png and summary:
        _draw(summary, png_path, f"{meta['command']}\n{provenance([meta])}")
    return 0 if runs else 1
