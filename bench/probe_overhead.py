"""Probe overhead: what the probe adds to an httpx request, next to OpenTelemetry's.

Sequential GET requests to a local upstream that answers at once (the worst case for relative
overhead), in one run, through one reused keep-alive client per variant:

- **bare**: plain httpx;
- **probe**: ``ProbeTransport`` (default ``ProbeConfig``) handing its events to a real
  ``KafkaEmitter`` (default settings) that sends them to the local Kafka;
- **probe_phases**: the same with ``phase_timings=True`` (httpcore ``trace`` callbacks);
- **otel**: ``opentelemetry-instrumentation-httpx``'s transport with an SDK
  ``TracerProvider``, ``SimpleSpanProcessor`` and ``InMemorySpanExporter`` (cleared at the
  end of every block, inside the measurement);
- **bare_control**: a second plain httpx client, measured like the others against bare: an
  A/A comparison whose overhead should be 0, so it shows how far this machine's noise moves
  a figure in the same run (``bare_control_overhead_pct``).

The upstream is a raw asyncio HTTP/1.1 server (fixed 200, 11-byte body, keep-alive) in its own
process, so its CPU is not counted. Async httpx first (the headline figures), then sync httpx.
The variants run interleaved in rounds (rotating order, each warmed up first) to cancel drift.
A round gives each variant one block of 3,000 requests (~1.1 s, several emitter flush
intervals), so that the emitter's send cycles mostly run among the timed requests, as in a
service; ``probe_sent_while_timed_share`` says how many of the probe's events Kafka
acknowledged while requests were being timed (the rest, after each probe block's last
request, while the block waited for its acks).

- **latency**: ``perf_counter_ns`` around ``client.get`` (body read); median and p99 over all
  rounds. **Overhead** (``*_overhead_pct``, the figure the target is checked on) is paired:
  per round, the variant's block median / bare's block median of the same round - 1, then
  the median over rounds. This machine has slow stretches of a few seconds (every variant's
  requests ~15% slower, bare's too) that cover whole blocks; a pooled figure (median of all
  of a variant's requests / median of all of bare's - 1, ``*_overhead_pct_pooled``, also
  reported) moves with how many of them fell on which variant's blocks: in A/A runs
  (bare_control) the pooled figure read -6.3 to +1.0%, the paired one -0.9 to +0.3%.
- **CPU**: ``time.process_time`` over each block / its requests, so the emitter thread's CPU
  (it shares the GIL) counts; a probe block ends only once Kafka has acknowledged all of its
  events. Per variant the median over rounds; CPU *added* is the median over rounds of
  (variant - bare) in the same round. ``other thr`` is the part spent outside the calling
  thread (the emitter thread).
- **GC**: the cyclic collector stays on (a full collection before each block, untimed) and its
  time inside the blocks is reported; ``--no-gc`` disables it inside the blocks instead.

Run ``.venv/bin/python bench/probe_overhead.py [--quick] [--profile]``: it starts the local
Kafka (``scripts/kafka-local up``, idempotent) unless ``--bootstrap`` is given, and uses a
topic of its own, deleted at the end. ``--upstream-delay-ms`` makes the upstream answer later
(the overhead against a realistic upstream). ``--profile`` adds a cProfile of the async probe
(calling thread only). A table goes to stdout, then, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.metadata
import importlib.util
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from _services import delete_topics, kafka_up
from opentelemetry.instrumentation.httpx import (
    AsyncOpenTelemetryTransport,
    SyncOpenTelemetryTransport,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.probe import ProbeConfig, ProbeTransport, SyncProbeTransport  # noqa: E402
from pipeline.probe.emitter import KafkaEmitter  # noqa: E402
from pipeline.topics import HOUR_MS, TopicSpec, ensure_topics  # noqa: E402

# In this cyclic order (rounds rotate it) bare_control and probe are each next to bare.
VARIANTS: Final = ("bare", "probe", "probe_phases", "otel", "bare_control")
TARGET_OVERHEAD_PCT: Final = 5.0
TARGET_CPU_SHARE_OF_OTEL: Final = 0.25
SERVICE: Final = "probe-overhead-bench"

_BODY: Final = b'{"ok":true}'
_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


def log(message: str) -> None:
    print(f"probe_overhead: {message}", file=sys.stderr, flush=True)


# -- the upstream (its own process) ----------------------------------------------------------


class _Answer(asyncio.Protocol):
    """Answers every request head (GET, no body) with the same 200; keep-alive."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        heads = buffer.count(b"\r\n\r\n")
        if heads:
            buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
            if self._delay_s > 0:
                asyncio.get_running_loop().call_later(self._delay_s, self._answer, heads)
            else:
                self._answer(heads)
        self._buffer = buffer

    def _answer(self, heads: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_RESPONSE * heads)


async def _serve_upstream(delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Answer(delay_ms / 1000.0), "127.0.0.1", 0)
    print(f"PORT={server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


@contextmanager
def upstream(delay_ms: float) -> Iterator[str]:
    """Start the upstream process; yield its URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--upstream", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("PORT="):
            raise RuntimeError(f"upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split('=', 1)[1]}/v1/items/42"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- Kafka -----------------------------------------------------------------------------------


def start_emitter(bootstrap: str, topic: str, timeout_s: float = 20.0) -> KafkaEmitter:
    emitter = KafkaEmitter(bootstrap, service=SERVICE, topic=topic).start()
    deadline = time.monotonic() + timeout_s
    while not emitter.stats().connected:
        if time.monotonic() > deadline:
            emitter.close(1.0)
            raise RuntimeError(f"the emitter did not connect to {bootstrap} in {timeout_s} s")
        time.sleep(0.05)
    return emitter


_SETTLE_POLL_S: Final = 0.01
_SETTLE_POLLS: Final = 2_000  # 20 s


def settle(emitter: KafkaEmitter) -> None:
    """Until every event submitted so far is acknowledged by Kafka (or counted as dropped).

    Blocking on purpose (the loop has nothing else to do): the wait is inside a probe block's
    CPU measurement, and it can last up to one emitter flush interval. Polling every 2 ms with
    ``asyncio.sleep`` cost ~35 us of CPU a poll (~17 us per ms waited), charged to the probe;
    ``time.sleep`` every 10 ms costs ~27 us a poll (~3 us per ms waited, the sleep syscall
    included).
    """
    for _ in range(_SETTLE_POLLS):
        s = emitter.stats()
        if s.sent_events + s.dropped_total >= s.submitted:
            return
        time.sleep(_SETTLE_POLL_S)
    raise TimeoutError("the emitter did not send its events within 20 s")


# -- the variants ----------------------------------------------------------------------------

Block = Callable[[int], Awaitable[list[int]]]
"""Sends n requests; returns their latencies in ns."""


def _async_block(client: httpx.AsyncClient, url: str) -> Block:
    get = client.get

    async def run(n: int) -> list[int]:
        latencies: list[int] = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            response = await get(url)
            latencies.append(time.perf_counter_ns() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
        return latencies

    return run


def _sync_block(client: httpx.Client, url: str) -> Block:
    get = client.get

    async def run(n: int) -> list[int]:  # blocks the (otherwise idle) loop: sync on purpose
        latencies: list[int] = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            response = get(url)
            latencies.append(time.perf_counter_ns() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
        return latencies

    return run


@dataclass
class Variants:
    blocks: dict[str, Block]
    close: Callable[[], Awaitable[None]]
    exporter: InMemorySpanExporter


def _tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def async_variants(url: str, emitter: KafkaEmitter) -> Variants:
    provider, exporter = _tracer()
    clients = {
        "bare": httpx.AsyncClient(),
        "bare_control": httpx.AsyncClient(),
        "probe": httpx.AsyncClient(transport=ProbeTransport(ProbeConfig(service=SERVICE), emitter)),
        "probe_phases": httpx.AsyncClient(
            transport=ProbeTransport(ProbeConfig(service=SERVICE, phase_timings=True), emitter)
        ),
        "otel": httpx.AsyncClient(
            transport=AsyncOpenTelemetryTransport(
                httpx.AsyncHTTPTransport(), tracer_provider=provider
            )
        ),
    }

    async def close() -> None:
        for client in clients.values():
            await client.aclose()

    blocks = {name: _async_block(client, url) for name, client in clients.items()}
    return Variants(blocks, close, exporter)


def sync_variants(url: str, emitter: KafkaEmitter) -> Variants:
    provider, exporter = _tracer()
    clients = {
        "bare": httpx.Client(),
        "bare_control": httpx.Client(),
        "probe": httpx.Client(transport=SyncProbeTransport(ProbeConfig(service=SERVICE), emitter)),
        "probe_phases": httpx.Client(
            transport=SyncProbeTransport(ProbeConfig(service=SERVICE, phase_timings=True), emitter)
        ),
        "otel": httpx.Client(
            transport=SyncOpenTelemetryTransport(httpx.HTTPTransport(), tracer_provider=provider)
        ),
    }

    async def close() -> None:
        for client in clients.values():
            client.close()

    blocks = {name: _sync_block(client, url) for name, client in clients.items()}
    return Variants(blocks, close, exporter)


# -- measurement -----------------------------------------------------------------------------


@dataclass
class Series:
    """One variant's samples: every latency, and one entry per round in the other lists."""

    latencies_ns: list[int] = field(default_factory=list)
    round_medians_ns: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    other_threads_cpu_us: list[float] = field(default_factory=list)
    gc_s: float = 0.0
    gc_runs: int = 0
    requests: int = 0
    sent_while_timed: int = 0  # probe events Kafka acknowledged while requests were timed
    sent_while_settling: int = 0  # ... and after the block's last request


class _GcClock:
    """Time spent in the cyclic collector, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.runs = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._t0
            self.runs += 1


async def measure(
    variants: Variants,
    emitter: KafkaEmitter,
    *,
    per_round: int,
    rounds: int,
    warmup: int,
    no_gc: bool,
) -> dict[str, Series]:
    series = {name: Series() for name in VARIANTS}
    gc_clock = _GcClock()
    gc.callbacks.append(gc_clock)
    try:
        for block in variants.blocks.values():
            await block(warmup)
        variants.exporter.clear()
        settle(emitter)
        for r in range(rounds):
            k = r % len(VARIANTS)
            for name in VARIANTS[k:] + VARIANTS[:k]:
                s = series[name]
                gc.collect()
                gc_s, gc_runs = gc_clock.total_s, gc_clock.runs
                if no_gc:
                    gc.disable()
                cpu0, thread0 = time.process_time(), time.thread_time()
                sent0 = emitter.stats().sent_events
                latencies = await variants.blocks[name](per_round)
                if name.startswith("probe"):
                    sent1 = emitter.stats().sent_events
                    settle(emitter)
                    s.sent_while_timed += sent1 - sent0
                    s.sent_while_settling += emitter.stats().sent_events - sent1
                elif name == "otel":
                    variants.exporter.clear()
                cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
                gc.enable()
                s.gc_s += gc_clock.total_s - gc_s
                s.gc_runs += gc_clock.runs - gc_runs
                s.cpu_us.append(cpu / per_round * 1e6)
                s.other_threads_cpu_us.append((cpu - thread) / per_round * 1e6)
                s.latencies_ns.extend(latencies)
                s.round_medians_ns.append(statistics.median(latencies))
                s.requests += per_round
    finally:
        gc.callbacks.remove(gc_clock)
        await variants.close()
    return series


def _p99(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])


def summarize(series: dict[str, Series]) -> dict[str, Any]:
    """Figures per variant; overheads and added CPU are against bare in the same run."""
    bare = series["bare"]
    bare_median = statistics.median(bare.latencies_ns)
    out: dict[str, Any] = {}
    for name, s in series.items():
        median = statistics.median(s.latencies_ns)
        per_round = [
            (m / b - 1.0) * 100.0
            for m, b in zip(s.round_medians_ns, bare.round_medians_ns, strict=True)
        ]
        added = [v - b for v, b in zip(s.cpu_us, bare.cpu_us, strict=True)]
        out[name] = {
            "median_ms": round(median / 1e6, 4),
            "p99_ms": round(_p99(s.latencies_ns) / 1e6, 3),
            # Paired: per round against bare's block of that round, then the median over
            # rounds (the module docstring says why).
            "overhead_pct": round(statistics.median(per_round), 1),
            "overhead_pct_pooled": round((median / bare_median - 1.0) * 100.0, 1),
            "overhead_pct_rounds_min_max": [round(min(per_round), 1), round(max(per_round), 1)],
            "overhead_pct_rounds": [round(v, 1) for v in per_round],  # in the order run
            "median_ms_rounds": [round(m / 1e6, 4) for m in s.round_medians_ns],
            "cpu_us_per_req_total": round(statistics.median(s.cpu_us), 1),
            "cpu_us_per_req_added": round(statistics.median(added), 1),
            "other_threads_cpu_us_per_req": round(statistics.median(s.other_threads_cpu_us), 1),
            "gc_ms_per_1k_req": round(s.gc_s / s.requests * 1e6, 2),
            "gc_runs": s.gc_runs,
            "requests": s.requests,
        }
        if name.startswith("probe"):
            # How much of the emitter's work fell among the timed requests (the rest ran
            # while the block settled, after its last request): blocks are made long
            # against the flush interval so that this share stays high.
            sent = s.sent_while_timed + s.sent_while_settling
            out[name]["sent_while_timed_share"] = (
                round(s.sent_while_timed / sent, 3) if sent else None
            )
    return out


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in VARIANTS:
        out[f"{name}_median_ms"] = figures[name]["median_ms"]
        out[f"{name}_p99_ms"] = figures[name]["p99_ms"]
    for name in VARIANTS[1:]:
        out[f"{name}_overhead_pct"] = figures[name]["overhead_pct"]
        out[f"{name}_overhead_pct_pooled"] = figures[name]["overhead_pct_pooled"]
        out[f"{name}_cpu_us_per_req"] = figures[name]["cpu_us_per_req_added"]
    otel_cpu = figures["otel"]["cpu_us_per_req_added"]
    for name in ("probe", "probe_phases"):
        share = figures[name]["cpu_us_per_req_added"] / otel_cpu if otel_cpu > 0 else None
        out[f"{name}_cpu_share_of_otel"] = None if share is None else round(share, 3)
    out["probe_emitter_thread_cpu_us_per_req"] = figures["probe"]["other_threads_cpu_us_per_req"]
    out["probe_sent_while_timed_share"] = figures["probe"]["sent_while_timed_share"]
    return out


def targets(head: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for name in ("probe", "probe_phases"):
        met[f"{name}_overhead_le_5pct"] = head[f"{name}_overhead_pct"] <= TARGET_OVERHEAD_PCT
        share = head[f"{name}_cpu_share_of_otel"]
        met[f"{name}_cpu_le_quarter_of_otel"] = (
            share is not None and share <= TARGET_CPU_SHARE_OF_OTEL
        )
    return met


def print_table(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    header = (
        f"{'variant':<13} {'median ms':>10} {'p99 ms':>8} {'overhead':>9} {'pooled':>8}"
        f" {'rounds min..max':>16}"
        f" {'CPU us/req':>11} {'added':>7} {'other thr':>10} {'GC ms/1k':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in VARIANTS:
        f = figures[name]
        lo, hi = f["overhead_pct_rounds_min_max"]
        print(
            f"{name:<13} {f['median_ms']:>10.4f} {f['p99_ms']:>8.3f}"
            f" {f['overhead_pct']:>+8.1f}% {f['overhead_pct_pooled']:>+7.1f}%"
            f" {f'{lo:+.1f}..{hi:+.1f}%':>16}"
            f" {f['cpu_us_per_req_total']:>11.1f} {f['cpu_us_per_req_added']:>+7.1f}"
            f" {f['other_threads_cpu_us_per_req']:>10.1f} {f['gc_ms_per_1k_req']:>9.2f}"
        )


# -- profile ---------------------------------------------------------------------------------


def _func_name(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    parts = Path(filename).parts
    for anchor in ("site-packages", ROOT.name):
        if anchor in parts:
            return f"{'/'.join(parts[parts.index(anchor) + 1 :])}:{line}({name})"
    return f"{Path(filename).name}:{line}({name})"


def profile_probe(url: str, emitter: KafkaEmitter, n: int, top: int) -> dict[str, Any]:
    """cProfile of n async requests through the probe: the calling thread only.

    cProfile's own cost per call inflates every figure (~3x here): read the ranking and the
    calls per request, not the absolute times.
    """

    async def run() -> cProfile.Profile:
        profiler = cProfile.Profile()
        async with httpx.AsyncClient(
            transport=ProbeTransport(ProbeConfig(service=SERVICE), emitter)
        ) as client:
            for _ in range(200):
                await client.get(url)
            profiler.enable()
            for _ in range(n):
                await client.get(url)
            profiler.disable()
        settle(emitter)
        return profiler

    profiler = asyncio.run(run())
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    own_dir = str(ROOT / "pipeline")
    own = {func: row for func, row in raw.items() if func[0].startswith(own_dir)}
    # Builtins (C functions) called from the probe's own code: locks, dict.get, getrandbits...
    callees: dict[Any, tuple[int, float]] = {}
    for func, row in raw.items():
        if func[0] == "~":
            for caller, crow in row[4].items():
                if caller[0].startswith(own_dir):
                    calls, tottime = callees.get(func, (0, 0.0))
                    callees[func] = (calls + crow[1], tottime + crow[2])

    def ranked(items: dict[Any, Any]) -> list[dict[str, Any]]:
        best = sorted(items.items(), key=lambda item: item[1][1], reverse=True)[:top]
        return [
            {
                "function": _func_name(func),
                "tottime_us_per_req": round(tottime / n * 1e6, 2),
                "calls_per_req": round(calls / n, 2),
            }
            for func, (calls, tottime) in best
        ]

    own_rows = {func: (row[1], row[2]) for func, row in own.items()}
    return {
        "requests": n,
        "profiled_us_per_req": round(total / n * 1e6, 1),
        "probe_own_tottime_us_per_req": round(sum(t for _, t in own_rows.values()) / n * 1e6, 1),
        "probe_own_top": ranked(own_rows),
        "builtins_called_by_probe": ranked(callees),
    }


def _print_profile(profile: dict[str, Any]) -> None:
    print(
        f"\nprofile (async probe, calling thread, {profile['requests']} requests):"
        f" {profile['profiled_us_per_req']} us/req under cProfile,"
        f" of which the probe's own Python code {profile['probe_own_tottime_us_per_req']} us/req"
    )
    for title, key in (
        ("probe's own functions (tottime)", "probe_own_top"),
        ("builtins called by the probe", "builtins_called_by_probe"),
    ):
        print(f" {title}:")
        for r in profile[key]:
            us, calls = r["tottime_us_per_req"], r["calls_per_req"]
            print(f"  {us:>7.2f} us  {calls:>5.2f}x  {r['function']}")


# -- the run ---------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _probe_revision() -> dict[str, Any]:
    """The commit measured, and whether pipeline/ had uncommitted changes then."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "pipeline_dirty": bool(git("status", "--porcelain", "--", "pipeline")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="18,000 requests per variant")
    parser.add_argument("--requests", type=int, help="requests per variant (default 60,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 6 quick, 20 full)")
    parser.add_argument("--no-sync", action="store_true", help="async httpx only")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() inside timed blocks")
    parser.add_argument(
        "--upstream-delay-ms", type=float, default=0.0, help="upstream answers later"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the async probe")
    parser.add_argument("--bootstrap", help="Kafka host:port (default: scripts/kafka-local up)")
    parser.add_argument("--upstream", type=float, metavar="DELAY_MS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream is not None:
        asyncio.run(_serve_upstream(args.upstream))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    # Blocks of 3,000 requests last ~1.1 s, several emitter flush intervals: most send
    # cycles run among the timed requests, as they would in a service, not in the wait for
    # acks that ends every probe block (the JSON's probe_sent_while_timed_share).
    requests = args.requests or (18_000 if args.quick else 60_000)
    rounds = args.rounds or (6 if args.quick else 20)
    per_round = max(1, requests // rounds)
    requests = per_round * rounds
    warmup = 300 if args.quick else 1_000
    started = time.monotonic()
    sniffio = importlib.util.find_spec("sniffio") is not None
    if not sniffio:
        log("WARNING: sniffio is not installed: httpcore pays ~500 us of failed imports a request")
    bootstrap = args.bootstrap or kafka_up()
    topic = f"bench.probe-overhead.{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(topic, partitions=8, retention_ms=HOUR_MS)]))
    log(f"kafka {bootstrap}, topic {topic}, ready after {time.monotonic() - started:.1f} s")
    emitter = start_emitter(bootstrap, topic)
    load_before = os.getloadavg()
    result: dict[str, Any] = {}
    plan = f"{requests} requests per variant, {rounds} rounds"
    options = dict(per_round=per_round, rounds=rounds, warmup=warmup, no_gc=args.no_gc)
    try:
        with upstream(args.upstream_delay_ms) as url:
            log(f"async httpx: {plan}")
            figures = summarize(
                asyncio.run(measure(async_variants(url, emitter), emitter, **options))
            )
            print_table(f"async httpx: {plan}", figures)
            result.update(headline(figures))
            result["async"] = figures
            if not args.no_sync:
                log(f"sync httpx: {plan}")
                sync = summarize(
                    asyncio.run(measure(sync_variants(url, emitter), emitter, **options))
                )
                print_table(f"sync httpx: {plan}", sync)
                result["sync"] = {**headline(sync), "variants": sync}
                result["sync"]["targets_met"] = targets(result["sync"])
            if args.profile:
                log("profiling the async probe")
                n = 2_000 if args.quick else 10_000
                result["profile"] = profile_probe(url, emitter, n, top=15)
    finally:
        stats = emitter.close(10.0)
        try:
            asyncio.run(delete_topics(bootstrap, topic))
        except Exception as exc:
            log(f"could not delete topic {topic}: {exc!r}")
    result["targets_met"] = targets(result)
    result.update(
        requests=requests,
        rounds=rounds,
        upstream_delay_ms=args.upstream_delay_ms,
        sniffio_installed=sniffio,
        gc_in_blocks=not args.no_gc,
        emitter={
            "submitted": stats.submitted,
            "sent_events": stats.sent_events,
            "sent_batches": stats.sent_batches,
            "dropped_total": stats.dropped_total,
            "compression_type": stats.compression_type,
        },
        probe_revision=_probe_revision(),
        versions={
            dist: _version(dist)
            for dist in ("httpx", "httpcore", "sniffio", "opentelemetry-sdk", "aiokafka")
        }
        | {"python": sys.version.split()[0]},
        machine={
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        wall_s=round(time.monotonic() - started, 1),
    )
    print(f"\ntargets (async): {result['targets_met']}")
    if "profile" in result:
        _print_profile(result["profile"])
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
