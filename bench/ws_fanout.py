"""WebSocket fan-out: end-to-end delay from the probe to live WebSocket clients.

Everything is real and local (docs/benchmarks.md, "ws_fanout"):

- a worker (``python -m pipeline.cli worker``: Faust app, ingest, tables, HTTP API with the
  live hub and its all-partition Kafka feed) on fresh topics of the local Kafka;
- the demo's upstream (``python -m pipeline.demo_upstream``, ~20 ms median, 30% 503 on
  ``/flaky``);
- a load process: an httpx client with the probe (``ProbeTransport``) and the default
  ``KafkaEmitter`` calling that upstream open-loop at ``--rate`` requests/s (nominal: 200);
- ``--clients`` WebSocket clients (default 100) in this process, ``--slow-clients`` of them
  (default 10) slow readers that take ``--slow-delay-ms`` per event (50 ms: 20 events/s,
  a tenth of the feed). Every client answers pings and acks each frame, as the dashboard
  does.

Delay of one event = time a client decoded it - the moment the probe finished the call
(``started_at + elapsed_ms``), both on this machine's clock: emitter batching, Kafka, the
live feed, the hub, the socket and the client's own loop are all inside. ``e2e_p50_ms`` and
``e2e_p99_ms`` are over the fast clients, for events that ended after the warm-up. Slow
clients are reported apart (their drops, their staleness). ``rss_growth_mb``: the worker's
largest RSS during the run minus its RSS before the clients connected.

Run ``.venv/bin/python bench/ws_fanout.py [--quick]``; it starts the local Kafka
(``scripts/kafka-local up``, idempotent) unless ``--bootstrap`` is given, and deletes its
topics at the end. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import psutil
import websockets
from _services import delete_topics, free_port, kafka_up
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.envelope import decode_batch
from pipeline.probe import ProbeConfig, ProbeTransport
from pipeline.probe.emitter import KafkaEmitter

SCRIPT: Final = Path(__file__).resolve()
ROOT: Final = SCRIPT.parent.parent

TARGETS: Final = {"e2e_p99_ms": 500.0, "rss_growth_mb": 50.0}
PARTITIONS: Final = 8
PATHS: Final = ("/users/{n}", "/orders/{n}/items", "/flaky")


def log(message: str) -> None:
    print(f"[ws_fanout] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 s measured (under 2 minutes)")
    parser.add_argument("--duration", type=float, help="measured seconds (20 quick, 120 full)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="probed requests/s (nominal)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--slow-clients", type=int, default=10)
    parser.add_argument("--slow-delay-ms", type=float, default=50.0)
    parser.add_argument(
        "--no-deflate", action="store_true", help="clients do not offer permessage-deflate"
    )
    parser.add_argument("--bootstrap", help="Kafka host:port (default: scripts/kafka-local up)")
    parser.add_argument("--role", choices=("load",), help=argparse.SUPPRESS)
    parser.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "load":
        print(json.dumps(asyncio.run(load_role(json.loads(args.config)))), flush=True)
        return 0
    return run(args)


# -- services -------------------------------------------------------------------------------


@contextlib.contextmanager
def process(
    args: list[str], log_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited: {log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s}s: {log_path.read_text()[-3000:]}")


# -- the load: real calls through the probe --------------------------------------------------


async def load_role(config: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(20241129)
    emitter = KafkaEmitter(config["bootstrap"], service="fanout", topic=config["topic"]).start()
    probe = ProbeConfig(service="fanout", route_templates=("/users/{id}", "/orders/{id}/items"))
    interval = 1.0 / config["rate"]
    requests = 0
    pending: set[asyncio.Task[Any]] = set()
    async with httpx.AsyncClient(
        base_url=config["upstream"], transport=ProbeTransport(probe, sink=emitter), timeout=5.0
    ) as client:

        async def call(path: str) -> None:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(path)

        end = time.monotonic() + config["seconds"]
        next_at = time.monotonic()
        while next_at < end:
            path = rng.choice(PATHS).format(n=rng.randint(1, 500))
            task = asyncio.ensure_future(call(path))
            pending.add(task)
            task.add_done_callback(pending.discard)
            requests += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)
    stats = await emitter.aclose()
    return {"requests": requests, "sent_events": stats.sent_events, "dropped": stats.dropped_total}


# -- WebSocket clients ------------------------------------------------------------------------


class _Line(msgspec.Struct):
    type: str
    started_at: float = 0.0
    elapsed_ms: float = 0.0
    id: int | None = None
    count: int = 0


_decode = msgspec.json.Decoder(_Line).decode


class Client:
    """One live session: acks every frame, answers pings, records each event's delay."""

    def __init__(
        self, url: str, *, slow_delay_s: float | None, since: list[float], deflate: bool
    ) -> None:
        self.url = url
        self.compression = "deflate" if deflate else None
        self.slow_delay_s = slow_delay_s
        self.since = since  # [t]: only events that ended after t are measured
        self.delays = array("d")
        self.events = 0
        self.dropped = 0
        self.notices = 0
        self.hello = asyncio.Event()
        self.close_code: int | None = None

    async def run(self) -> None:
        try:
            connect = websockets.connect(self.url, max_queue=64, compression=self.compression)
            async with connect as ws:
                await ws.send('{"type":"ack","count":0}')
                async for frame in ws:
                    now = time.time()
                    for line in str(frame).split("\n"):
                        message = _decode(line)
                        if message.type == "event":
                            await self._event(message, now)
                        elif message.type == "ping":
                            await ws.send(json.dumps({"type": "pong", "id": message.id}))
                        elif message.type == "dropped":
                            self.dropped += message.count
                            self.notices += 1
                        elif message.type == "hello":
                            self.hello.set()
                    await ws.send(f'{{"type":"ack","count":{self.events}}}')
        except websockets.ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        except asyncio.CancelledError:
            pass

    async def _event(self, message: _Line, now: float) -> None:
        self.events += 1
        ended = message.started_at + message.elapsed_ms / 1000.0
        if self.slow_delay_s is not None:
            await asyncio.sleep(self.slow_delay_s)
            now = time.time()
        if ended >= self.since[0]:
            self.delays.append(now - ended)


async def kafka_tap(bootstrap: str, topic: str, since: list[float], out: array[float]) -> None:
    """Delay from the probe to a plain consumer of the probe topic (the Kafka leg alone)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for record in records:
                    for event in decode_batch(record.value or b"").valid:
                        ended = event.started_at + event.elapsed_ms / 1000.0
                        if ended >= since[0]:
                            out.append(now - ended)
    finally:
        await consumer.stop()


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    args: argparse.Namespace, url: str, worker: psutil.Process, load_config: dict[str, Any]
) -> dict[str, Any]:
    duration = args.duration or (20.0 if args.quick else 120.0)
    baseline = worker.memory_info().rss
    since = [float("inf")]
    slow_s = args.slow_delay_ms / 1000.0
    clients = [
        Client(
            url,
            slow_delay_s=slow_s if i < args.slow_clients else None,
            since=since,
            deflate=not args.no_deflate,
        )
        for i in range(args.clients)
    ]
    tap_delays = array("d")
    tap = asyncio.ensure_future(
        kafka_tap(load_config["bootstrap"], load_config["topic"], since, tap_delays)
    )
    tasks = [tap]
    for client in clients:  # 40 handshakes/s: under the API's per-address rate limit
        tasks.append(asyncio.ensure_future(client.run()))
        await asyncio.sleep(0.025)
    async with asyncio.timeout(30):
        await asyncio.gather(*(client.hello.wait() for client in clients))
    log(f"{len(clients)} clients connected; load {args.rate:.0f} req/s for {duration:.0f} s")
    peak = baseline
    me = psutil.Process()
    cpu_before = worker.cpu_times(), me.cpu_times(), time.monotonic()
    config = {**load_config, "seconds": args.warmup + duration}
    load = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--role",
        "load",
        json.dumps(config),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    started = time.time()
    waiting = asyncio.ensure_future(load.communicate())
    while not waiting.done():
        if since[0] == float("inf") and time.time() - started >= args.warmup:
            since[0] = time.time()
        peak = max(peak, worker.memory_info().rss)
        await asyncio.wait({waiting}, timeout=0.5)
    out, _ = waiting.result()
    load_result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    drain_until = time.monotonic() + 5.0
    sent = load_result["sent_events"]
    while (
        time.monotonic() < drain_until
        and min(c.events for c in clients if c.slow_delay_s is None) < sent
    ):
        peak = max(peak, worker.memory_info().rss)
        await asyncio.sleep(0.2)
    (w0, c0, t0), w1, c1 = cpu_before, worker.cpu_times(), me.cpu_times()
    span = time.monotonic() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    fast = [c for c in clients if c.slow_delay_s is None]
    slow = [c for c in clients if c.slow_delay_s is not None]
    fast_delays = [d * 1000 for c in fast for d in c.delays]
    slow_delays = [d * 1000 for c in slow for d in c.delays]
    return {
        "duration_s": duration,
        "load": load_result,
        "fast_delays": fast_delays,
        "tap_delays": [d * 1000 for d in tap_delays],
        "slow_delays": slow_delays,
        "fast_min_events": min(c.events for c in fast) if fast else 0,
        "fast_dropped": sum(c.dropped for c in fast),
        "slow_events": [c.events for c in slow],
        "slow_dropped": [c.dropped for c in slow],
        "closed_early": sum(1 for c in clients if c.close_code is not None),
        "worker_cpu": (w1.user + w1.system - w0.user - w0.system) / span,
        "clients_cpu": (c1.user + c1.system - c0.user - c0.system) / span,
        "load_avg": os.getloadavg()[0],
        "rss_baseline_mb": baseline / 2**20,
        "rss_peak_mb": peak / 2**20,
    }


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    bootstrap = args.bootstrap or kafka_up()
    tag = f"wsf{int(time.time())}x{os.getpid()}"
    topics = {
        "EGRESSWATCH_PROBE_TOPIC": f"bench.{tag}.probe-events",
        "EGRESSWATCH_DEAD_LETTER_TOPIC": f"bench.{tag}.dead-letters",
        "EGRESSWATCH_ALERTS_TOPIC": f"bench.{tag}.alerts",
        "EGRESSWATCH_PROBE_PARTITIONS": str(PARTITIONS),
    }
    env = {**os.environ, **topics}
    port, upstream_port = free_port(), free_port()
    log(f"kafka {bootstrap}; worker on :{port}, upstream on :{upstream_port}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-wsf-") as tmp:
            worker_log, upstream_log = Path(tmp) / "worker.log", Path(tmp) / "upstream.log"
            worker_cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", bootstrap]
            worker_cmd += ["--http-port", str(port), "--data-dir", str(Path(tmp) / "worker")]
            worker_cmd += ["--app-id", f"bench-{tag}"]
            upstream_cmd = [sys.executable, "-m", "pipeline.demo_upstream", str(upstream_port)]
            with (
                process(worker_cmd, worker_log, env) as worker,
                process(upstream_cmd, upstream_log, env) as upstream,
            ):
                wait_ok(f"http://127.0.0.1:{upstream_port}/health", 30, upstream, upstream_log)
                wait_ok(f"http://127.0.0.1:{port}/v1/health/ready", 120, worker, worker_log)
                load_config = {
                    "bootstrap": bootstrap,
                    "topic": topics["EGRESSWATCH_PROBE_TOPIC"],
                    "upstream": f"http://127.0.0.1:{upstream_port}",
                    "rate": args.rate,
                }
                url = f"ws://127.0.0.1:{port}/v1/ws/events"
                result = asyncio.run(measure(args, url, psutil.Process(worker.pid), load_config))
    finally:
        deleted = asyncio.run(delete_topics(bootstrap, tag))
        log(f"deleted topics: {', '.join(sorted(deleted))}")
    summary = report(args, result)
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary), flush=True)
    return 0


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    fast, slow = r["fast_delays"], r["slow_delays"]
    p50, p99 = quantile(fast, 0.50), quantile(fast, 0.99)
    growth = r["rss_peak_mb"] - r["rss_baseline_mb"]
    sent = r["load"]["sent_events"]
    print(f"\nws_fanout: {args.clients} clients ({args.slow_clients} slow), {args.rate:.0f} req/s")
    print(f"  events sent by the probe        {sent:,} ({r['load']['dropped']} dropped)")
    print(
        f"  fast clients: delay p50 / p95 / p99 / max   {p50:.0f} / {quantile(fast, 0.95):.0f}"
        f" / {p99:.0f} / {max(fast, default=float('nan')):.0f} ms over {len(fast):,} deliveries"
    )
    tap = r["tap_delays"]
    print(
        f"  Kafka leg alone (plain consumer): p50 / p99   {quantile(tap, 0.5):.0f} /"
        f" {quantile(tap, 0.99):.0f} ms"
    )
    print(
        f"  fast clients: fewest events received       {r['fast_min_events']:,} of {sent:,};"
        f" dropped {r['fast_dropped']}"
    )
    print(
        f"  slow clients: events received (min..max)    {min(r['slow_events'], default=0):,}"
        f"..{max(r['slow_events'], default=0):,}; dropped with notice"
        f" {min(r['slow_dropped'], default=0):,}..{max(r['slow_dropped'], default=0):,}"
    )
    print(
        f"  slow clients: staleness p50 / p99           {quantile(slow, 0.5):.0f} /"
        f" {quantile(slow, 0.99):.0f} ms"
    )
    print(f"  sessions closed by the server              {r['closed_early']}")
    print(
        f"  CPU (cores): worker {r['worker_cpu']:.2f}, clients {r['clients_cpu']:.2f};"
        f" machine load average {r['load_avg']:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"  worker RSS: {r['rss_baseline_mb']:.1f} MB before clients, peak"
        f" {r['rss_peak_mb']:.1f} MB (+{growth:.1f} MB)"
    )
    return {
        "bench": "ws_fanout",
        "mode": "quick" if args.quick else "full",
        "rate_per_s": args.rate,
        "duration_s": r["duration_s"],
        "events_sent": sent,
        "clients": args.clients,
        "slow_clients": args.slow_clients,
        "e2e_p50_ms": round(p50, 1),
        "e2e_p95_ms": round(quantile(fast, 0.95), 1),
        "e2e_p99_ms": round(p99, 1),
        "kafka_leg_p50_ms": round(quantile(r["tap_delays"], 0.5), 1),
        "kafka_leg_p99_ms": round(quantile(r["tap_delays"], 0.99), 1),
        "fast_min_delivery_ratio": round(r["fast_min_events"] / sent, 4) if sent else None,
        "fast_dropped": r["fast_dropped"],
        "slow_dropped_min": min(r["slow_dropped"], default=0),
        "slow_staleness_p50_ms": round(quantile(slow, 0.5), 1),
        "closed_by_server": r["closed_early"],
        "rss_growth_mb": round(growth, 1),
        "worker_cpu_cores": round(r["worker_cpu"], 2),
        "load_avg_1m": round(r["load_avg"], 1),
        "deflate": not args.no_deflate,
        "targets": TARGETS,
        "met": p99 < TARGETS["e2e_p99_ms"] and growth < TARGETS["rss_growth_mb"],
    }


if __name__ == "__main__":
    sys.exit(main())
