"""One run: a fresh server, the load, the accounting, one ``RunResult``.

Every run starts its own server (and proxy), so peak RSS and thread counts
belong to that run alone, and stops them before it returns, whatever
happened: each wait has a bound (server start, joining, the plan's deadline,
SIGTERM then SIGKILL).

CPUs: on a machine with two or more, the server gets every CPU but the last
and the load generator (this process) gets the last, so the two never compete
for a core. The lossy proxies are not pinned: they go where there is room.
"""

from __future__ import annotations

import http.client
import os
import resource
import ssl
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from bench import procstat, udpload, wsload
from bench.accounting import Ledger, StreamCorrupt
from bench.load import Loop, Outcome, Peer, Plan, TcpPeer, connect, drive, pump
from bench.results import DISTURBED_PCT, RunResult
from bench.scenarios import Scenario, Transport
from bench.servers import Child, StartError
from bench.stats import percentile, rate, summarize_latencies

#: The load generator counts as the bottleneck above this share of one core.
LOAD_LIMIT_PCT: Final = 85.0
#: Most distinct client events (errors, notices) quoted in a run's notes.
MAX_EVENT_NOTES: Final = 3

# Every load client comes from 127.0.0.1: no per-address bound.
_SERVER_FLAGS: Final = (
    *("--host", "127.0.0.1", "--port", "0", "--rate-limit", "0"),
    *("--max-clients", "0", "--max-per-host", "0"),
)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the server and the load run on (None: wherever the kernel likes)."""

    server: set[int] | None
    load: set[int] | None

    @staticmethod
    def split(pin: bool) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return Placement(None, None)
        return Placement(set(cpus[:-1]), {cpus[-1]})


def raise_nofile(needed: int) -> int:
    """Raise our soft open-file limit to at least ``needed`` (children inherit it).

    Returns the soft limit in force. Raises ``OSError`` if the hard limit is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(f"{needed} open files are needed and the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def make_certificate(where: str) -> tuple[str, str, ssl.SSLContext]:
    """A throwaway CA and a certificate for 127.0.0.1 in directory ``where``:
    the certificate and key files, and a client context that trusts the CA.

    Raises:
        StartError: trustme is not installed (it is in the ``test`` extra).
    """
    try:
        import trustme  # noqa: PLC0415 (only for the TLS transport)
    except ImportError:
        raise StartError("the tcp-tls transport needs trustme (pip install trustme)") from None
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
    with open(cert, "wb") as out:
        out.write(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(key)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return cert, key, context


def server_args(
    transport: Transport, idle_timeout: float, data_dir: str = "", tls: tuple[str, str] | None = None
) -> tuple[str, list[str]]:
    """The server module and flags for ``transport``: loopback, a free port,
    no flood control and no client limit (the load would trip both), an idle
    timeout longer than any run, and quiet logs; its store in ``data_dir``
    for a transport with a store, else in memory (``--ephemeral``); with
    ``tls`` (certificate and key files), TLS on its TCP port."""
    # A UDP server's shutdown line (INFO) counts its segments sent and sent
    # again; at INFO it logs sessions coming and going too, never messages.
    level = "INFO" if transport.kind == "udp" else "WARNING"
    args = [*_SERVER_FLAGS, "--idle-timeout", f"{idle_timeout:g}", "--log-level", level]
    if tls is not None:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    if transport.scrape:
        args += ["--metrics", "127.0.0.1:0"]
    if transport.store:
        if not data_dir:
            raise ValueError(f"{transport.name} needs a data directory")
        args += ["--data-dir", data_dir]
    else:
        args.append("--ephemeral")
    if transport.kind == "tcp":
        return "tcpchat.server", args
    if transport.unreliable:
        args.append("--unreliable")
    return "udpchat.server", args


def account(plan: Plan, outcome: Outcome) -> tuple[list[Ledger], int]:
    """Run each receiver's ledger over what it got; return them and the last delivery time."""
    ledgers = []
    last = outcome.started_wall
    for index, chunks in outcome.received.items():
        ledger = Ledger(plan.expected_from(index))
        try:
            for received_at, data in chunks:
                ledger.feed(received_at, data)
        except StreamCorrupt:
            ledger.garbled += 1
        if ledger.last_at is not None:
            last = max(last, ledger.last_at)
        ledgers.append(ledger)
    return ledgers, last


def summarize(
    *,
    scenario: Scenario,
    transport: Transport,
    run: int,
    plan: Plan,
    outcome: Outcome,
    events: list[str],
    peak_rss_mb: float,
    segments: udpload.SegmentCounts | None = None,
) -> RunResult:
    """Turn one run's raw outcome into its result record."""
    ledgers, last = account(plan, outcome)
    latencies: array[int] = array("q")
    for ledger in ledgers:
        latencies.extend(ledger.latencies)
    expected = sum(ledger.expected for ledger in ledgers)
    delivered = sum(ledger.unique for ledger in ledgers)
    seconds = max(0.0, (last - outcome.started_wall) / 1e9)
    wall = max(1e-9, (outcome.ended_at - outcome.started_at) / 1e9)
    lat = summarize_latencies(latencies)
    lags = sorted(outcome.read_lags)
    lag_p99 = round(percentile(lags, 99) / 1e6, 4) if lags else None
    load_pct = 100 * outcome.load_cpu_s / wall
    proxy_pct = 100 * outcome.proxy_cpu_s / wall
    other_pct = 100 * outcome.other_cpu_s / wall
    notes = list(outcome.notes)
    strays = sum(ledger.strays for ledger in ledgers)
    if strays:
        notes.append(f"{strays} messages reached a client outside their room (counted as garbled)")
    notes += summarize_events(events)
    # The proxies are single-threaded processes the kernel places where it has
    # room; one that nears a full core is as much a ceiling as the load generator.
    proxies = len(outcome.proxy_pids) or 1
    limited = load_pct >= LOAD_LIMIT_PCT or proxy_pct / proxies >= LOAD_LIMIT_PCT
    if load_pct >= LOAD_LIMIT_PCT:
        notes.append(f"the load generator used {load_pct:.0f}% of its core: the figures are floors set by it")
    if proxy_pct / proxies >= LOAD_LIMIT_PCT:
        notes.append(
            f"the lossy proxies used {proxy_pct / proxies:.0f}% of a core each: the figures are floors set by them"
        )
    if other_pct >= DISTURBED_PCT:
        notes.append(
            f"other processes on the machine used {other_pct:.0f}% of a core during the run: figures disturbed"
        )
    return RunResult(
        scenario=scenario.name,
        transport=transport.name,
        run=run,
        clients=plan.clients,
        senders=len(plan.senders),
        sent=outcome.sent,
        expected=expected,
        delivered=delivered,
        duplicates=sum(ledger.duplicates for ledger in ledgers),
        out_of_order=sum(ledger.out_of_order for ledger in ledgers),
        garbled=sum(ledger.garbled for ledger in ledgers),
        seconds=round(seconds, 4),
        rate=round(rate(delivered, seconds), 1),
        delivery_ratio=round(delivered / expected, 6) if expected else 0.0,
        p50_ms=lat.p50_ms if lat else None,
        p99_ms=lat.p99_ms if lat else None,
        max_ms=lat.max_ms if lat else None,
        read_lag_p99_ms=lag_p99,
        server_cpu_s=round(outcome.server_cpu_s, 3),
        server_cpu_pct=round(100 * outcome.server_cpu_s / wall, 1),
        server_sys_share=round(outcome.server_sys_s / outcome.server_cpu_s, 3) if outcome.server_cpu_s else 0.0,
        server_rss_mb=round(peak_rss_mb, 1),
        server_threads=outcome.server_threads,
        load_cpu_s=round(outcome.load_cpu_s, 3),
        load_cpu_pct=round(load_pct, 1),
        proxy_cpu_pct=round(proxy_pct, 1),
        other_cpu_pct=round(other_pct, 1),
        load_limited=limited,
        completed=outcome.completed,
        notes=tuple(notes),
        cdf_ms=lat.cdf_ms if lat else (),
        echoes=sum(ledger.echoes for ledger in ledgers),
        server_segments=segments.server_sent if segments else None,
        server_resent=segments.server_resent if segments else None,
        server_duplicates=segments.server_duplicates if segments else None,
        client_segments=segments.client_sent if segments else None,
        client_resent=segments.client_resent if segments else None,
        client_duplicates=segments.client_duplicates if segments else None,
    )


def summarize_events(events: list[str]) -> list[str]:
    """Client events (``"NICK what"``) as notes: each distinct ``what`` once, with
    how many clients saw it, the commonest first."""
    seen: dict[str, set[str]] = {}
    for event in events:
        nick, _, what = event.partition(" ")
        seen.setdefault(what, set()).add(nick)
    ranked = sorted(seen.items(), key=lambda item: -len(item[1]))
    notes = [f"{len(nicks)} client{'s' if len(nicks) > 1 else ''}: {what}" for what, nicks in ranked[:MAX_EVENT_NOTES]]
    if len(ranked) > MAX_EVENT_NOTES:
        notes.append(f"and {len(ranked) - MAX_EVENT_NOTES} other kinds of client events")
    return notes


def _others(children: list[Child]) -> tuple[float, float | None]:
    """CPU seconds of ``children`` (the proxies) and of the whole machine, now."""
    cpu = 0.0
    for child in children:
        reading = procstat.sample(child.pid)
        if reading is not None:
            cpu += reading.cpu_s
    return cpu, procstat.machine_busy()


PeerMaker = Callable[[int, bool], Peer]


def _tcp_maker(address: tuple[str, int], tls: ssl.SSLContext | None = None, *, websocket: bool = False) -> PeerMaker:
    if websocket:
        return wsload.maker(address)

    def make(index: int, reads: bool) -> Peer:
        return TcpPeer(index, address, reads=reads, tls=tls)

    return make


def run_once(
    scenario: Scenario,
    transport: Transport,
    run: int,
    *,
    placement: Placement,
    seed: int,
    log: Callable[[str], None] = lambda line: None,
) -> RunResult:
    """Run ``scenario`` over ``transport`` once, on fresh processes.

    Raises:
        bench.servers.StartError, bench.load.LoadError: the run could not start.
    """
    plan = scenario.plan(quiet_s=0.5 if transport.unreliable else 3.0)
    raise_nofile(2 * plan.clients + 256)
    data_dir = tempfile.TemporaryDirectory(prefix="bench-store-")
    tls_files: tuple[str, str] | None = None
    tls: ssl.SSLContext | None = None
    if transport.tls:
        cert, key, tls = make_certificate(data_dir.name)
        tls_files = (cert, key)
    module, args = server_args(transport, idle_timeout=3600, data_dir=data_dir.name, tls=tls_files)
    saved = os.sched_getaffinity(0)
    children: list[Child] = []
    peers: list[Peer] = []
    loop: Loop | None = None
    try:
        server = Child(module, args, cpus=placement.server)
        children.append(server)
        address = server.start()
        if placement.load:
            os.sched_setaffinity(0, placement.load)
        timed = transport.kind == "udp"
        if timed:
            # The proxies are not pinned: the kernel runs them wherever there is room.
            make, extra = udpload.maker(address, transport, seed=seed + run, cpus=None, clients=plan.clients)
            children.extend(extra)
        else:
            make = _tcp_maker(address, tls, websocket=transport.websocket)
        loop = Loop(server.pid)
        lossy_join = transport.unreliable and bool(transport.loss)
        peers = connect(make, plan, loop, timed=timed, timeout=30 + plan.clients / 20, lossy=lossy_join)
        log(f"  {scenario.name}/{transport.name}: {plan.clients} clients joined, driving")
        outcome, events = _measure(
            plan, loop, peers, children, timed=timed, lossy=transport.unreliable, scrape=transport.scrape
        )
        reading = procstat.sample(server.pid)
        peak = reading.peak_rss_mb if reading else 0.0
        alive = server.alive()
        if not alive:
            outcome.notes.append(f"the server exited during the run: {server.log_tail(300)}")
        segments = _shut_down(server, loop, peers, timed=timed) if alive else None
    finally:
        for peer in peers:
            peer.close()
        if loop is not None:
            loop.close()
        for child in reversed(children):
            child.close()
        data_dir.cleanup()
        os.sched_setaffinity(0, saved)
    result = summarize(
        scenario=scenario,
        transport=transport,
        run=run,
        plan=plan,
        outcome=outcome,
        events=events,
        peak_rss_mb=peak,
        segments=segments,
    )
    if server.killed:
        result = _with_note(result, "the server ignored SIGTERM and was killed")
    elif server.exit_code:
        result = _with_note(result, f"the server exited with {server.exit_code}: {server.log_tail(200)}")
    return result


class Scraper:
    """Reads a server's ``/metrics`` every ``every`` seconds on a thread of
    its own, as Prometheus would (only far more often), while a run is measured."""

    def __init__(self, address: tuple[str, int] | None, every: float) -> None:
        if address is None:
            raise StartError("the server did not say where its metrics are")
        self._address = address
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench scraper", daemon=True)
        self.scrapes = 0
        self.failures = 0
        self.slowest = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> str:
        """Stop (idempotent); say what it did, as a note for the run."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        failed = f", {self.failures} failed" if self.failures else ""
        return (
            f"metrics scraped every {self._every:g} s: {self.scrapes} scrapes{failed}, "
            f"slowest {1000 * self.slowest:.1f} ms"
        )

    def _run(self) -> None:
        while not self._stop.is_set():  # one at once, then every ``every`` seconds
            began = time.perf_counter()
            conn = http.client.HTTPConnection(*self._address, timeout=10)
            try:
                conn.request("GET", "/metrics")
                answer = conn.getresponse()
                answer.read()
                ok = answer.status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            self.slowest = max(self.slowest, time.perf_counter() - began)
            if ok:
                self.scrapes += 1
            else:
                self.failures += 1
            self._stop.wait(self._every)


def _measure(
    plan: Plan,
    loop: Loop,
    peers: list[Peer],
    children: list[Child],
    *,
    timed: bool,
    lossy: bool,
    scrape: float = 0.0,
) -> tuple[Outcome, list[str]]:
    """``drive``, plus what it cannot see: the proxies' CPU, everyone else's,
    and the datagrams the kernel dropped; return the outcome and the client
    events of the run (before the shutdown adds its goodbyes). With
    ``scrape`` seconds, the server's (``children[0]``) metrics are read that often meanwhile."""
    drops_before = procstat.udp_drops()
    others_before = _others(children[1:])
    scraper = Scraper(children[0].metrics_address, scrape) if scrape else None
    if scraper is not None:
        scraper.start()
    try:
        outcome = drive(peers, plan, loop, timed=timed, lossy=lossy)
    finally:
        scraped = scraper.stop() if scraper is not None else ""
    if scraped:
        outcome.notes.append(scraped)
    others_after = _others(children[1:])
    drops_after = procstat.udp_drops()
    outcome.proxy_cpu_s = others_after[0] - others_before[0]
    outcome.proxy_pids = [child.pid for child in children[1:]]
    if others_before[1] is not None and others_after[1] is not None:
        busy = others_after[1] - others_before[1]
        outcome.other_cpu_s = max(0.0, busy - outcome.server_cpu_s - outcome.load_cpu_s - outcome.proxy_cpu_s)
    if timed and drops_before is not None and drops_after is not None and drops_after > drops_before:
        outcome.notes.append(
            f"the kernel dropped {drops_after - drops_before} UDP datagrams on full receive buffers "
            "(machine-wide count)"
        )
    return outcome, [e for p in peers for e in p.events]


#: Seconds the clients keep answering a server that is shutting down.
SHUTDOWN_WAIT: Final = 3.0


def _shut_down(server: Child, loop: Loop, peers: list[Peer], *, timed: bool) -> udpload.SegmentCounts | None:
    """SIGTERM the server while the clients still answer it, so its graceful
    shutdown (a goodbye each, acknowledged over UDP) ends at once instead of
    waiting out its timeouts on clients that are gone. Over UDP, return the
    run's segment counts, the server's from its last line."""
    server.terminate()
    deadline = time.monotonic() + SHUTDOWN_WAIT
    while server.alive() and time.monotonic() < deadline and any(p.alive for p in peers):
        pump(loop, peers, 0.02, timed)
    if not timed:
        return None
    server.stop()  # gone, so its shutdown line is written
    return udpload.segment_counts(peers, server.log_tail())


def _with_note(result: RunResult, note: str) -> RunResult:
    return replace(result, notes=(*result.notes, note))
