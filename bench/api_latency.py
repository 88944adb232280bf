"""Latency of ``GET /v1/metrics/network`` under concurrent load, with >= 1,000 keys.

Usage: ``python bench/api_latency.py [--quick] [--keys N] [--rate R] [--requests N] [--clients N]``

- **Server** (a subprocess, as a worker serves it: one process, one event loop, uvicorn):
  the real app from ``api.app.create_api`` over a real ``SummaryView`` holding ``keys``
  keys (``svcNN|GET|/route/NNNNN``, 20 services; quick 1,000, full 1,600 = 48,000 cells,
  just under the worker's default ``view_max_cells`` of 50,000) with a cell in each of the
  30 buckets of a 5m view. While the clients run, a live writer upserts 500 open-bucket
  cells per second (as the changelog follower does under traffic, invalidating their
  cached views), and opens a new bucket every 10 s (every key's view slides). Every
  middleware is on: tracing, rate limit (at a rate it never reaches), timeout; no token.
  Log level WARNING, as in the worker.
- **Open loop** (the headline figures): ``requests`` requests arriving at ``rate``/s
  (Poisson; default 50/s: one client at the default rate limit), spread over 16
  keep-alive connections. Each latency runs from the request's *scheduled* arrival to the
  last byte of its body, so waiting behind a slow answer counts (no coordinated
  omission). The mix: window 10s / 1m / 5m at random; the default page (``limit=100``)
  at a random offset (80%), or one service's keys (20%).
- **Saturation**: ``clients`` closed-loop clients (each sends its next request when the
  last one answered): the throughput ceiling and the latency at it.
- **Full page**: ``limit=1000`` over the 5m window, sequential, for reference.
- The server's CPU time per request (open-loop phase) and the machine's load average are
  reported, since client and server share the machine (2 cores) with whatever else runs.

Both run on the same machine (2 cores), so the figures include the client's own CPU.
Target: p95 < 20 ms. The last line of output is one JSON object with ``p50_ms``,
``p95_ms``, ``p99_ms`` and ``keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _services import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.schema import ProbeEvent, derive_severity  # noqa: E402
from tables import BUCKET_S, SummaryView, WindowAggregate  # noqa: E402

SERVICES = 20
BUCKETS = 30  # one 5m view
TARGET_P95_MS = 20.0


# -- server side -------------------------------------------------------------------------


def _event(key: str, started_at: float, elapsed_ms: float, n: int) -> ProbeEvent:
    service, method, route = key.split("|", 2)
    status = 503 if n % 50 == 0 else 200
    outcome = "ok" if status == 200 else "http_error"
    return ProbeEvent(
        service=service,
        started_at=started_at,
        elapsed_ms=elapsed_ms,
        method=method,  # type: ignore[arg-type]
        route=route,
        upstream="upstream.local:8080",
        outcome=outcome,  # type: ignore[arg-type]
        status_code=status,
        error_class=None if status == 200 else "http_5xx",
        severity=derive_severity(outcome=outcome, status_code=status, elapsed_ms=elapsed_ms),
        trace_id=f"{n + 1:032x}",
        request_id=f"{n + 1:016x}",
        logical_request_id=f"{n + 1:016x}",
    )


def _cell(key: str, bucket: int, rng: random.Random, counter: list[int], events: int) -> Any:
    cell = WindowAggregate(key, bucket)
    for _ in range(events):
        counter[0] += 1
        cell.add(
            _event(
                key,
                bucket + rng.uniform(0, BUCKET_S - 0.01),
                rng.lognormvariate(3, 0.7),
                counter[0],
            )
        )
    return cell


class _Backend:
    """The parts of ``api.backend.Backend`` the network endpoint reads, on a real view."""

    def __init__(self, view: SummaryView) -> None:
        from prometheus_client import CollectorRegistry

        self.view = view
        self.registry = CollectorRegistry()

    def readiness(self) -> list[str]:
        return []

    def pipeline_stats(self) -> dict[str, Any]:
        return {"cells_view": len(self.view)}

    def resilience_state(self, service: str | None = None) -> dict[str, Any]:
        return {"upstreams": [], "pipeline": {}}


UPSERTS_PER_S = 500


async def _live_writer(view: SummaryView, keys: list[str], first_bucket: int, seed: int) -> None:
    """``UPSERTS_PER_S`` open-bucket cells upserted per second (in ticks of 100 ms), random
    keys; a new bucket every 10 s. A key's cell of the open bucket is built once, then
    upserted again as is: the view invalidates exactly as for a changed cell."""
    rng = random.Random(seed)
    counter = [10**9]
    started = time.monotonic()
    cells: dict[str, Any] = {}
    bucket_now = first_bucket
    while True:
        await asyncio.sleep(0.1)
        bucket = first_bucket + int((time.monotonic() - started) // BUCKET_S) * BUCKET_S
        if bucket != bucket_now:
            cells.clear()
            bucket_now = bucket
        for key in rng.sample(keys, min(len(keys), UPSERTS_PER_S // 10)):
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = _cell(key, bucket, rng, counter, 2)
            view.upsert(cell)


def serve(port: int, keys: int, seed: int, *, gc_mode: str = "on") -> None:
    import uvicorn

    from api.app import create_api
    from pipeline.logs import configure_json_logging
    from pipeline.settings import WorkerSettings

    configure_json_logging(logging.WARNING)
    rng = random.Random(seed)
    now_bucket = int(time.time()) // BUCKET_S * BUCKET_S
    first = now_bucket - (BUCKETS - 1) * BUCKET_S
    names = [f"svc{k % SERVICES:02d}|GET|/route/{k:05d}" for k in range(keys)]
    # The worker's bound: a bucket opened while running evicts the oldest one when full.
    view = SummaryView(max_cells=max(WorkerSettings().view_max_cells, keys * BUCKETS))
    counter = [0]
    for bucket in range(first, now_bucket + BUCKET_S, BUCKET_S):
        for key in names:
            view.upsert(_cell(key, bucket, rng, counter, 3))
    settings = WorkerSettings(api_rate_per_s=1e9, api_burst=10**9, api_timeout_s=5.0)
    app = create_api(settings, backend=_Backend(view))
    if gc_mode == "freeze":
        gc.collect()
        gc.freeze()  # the loaded cells leave the collector's generations
    elif gc_mode == "off":
        gc.disable()  # diagnostic only: the API without the collector's pauses

    async def main() -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        writer = asyncio.ensure_future(_live_writer(view, names, now_bucket + BUCKET_S, seed))
        try:
            await server.serve()
        finally:
            writer.cancel()

    asyncio.run(main())


# -- client side -------------------------------------------------------------------------


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _summary(latencies: list[float]) -> dict[str, float]:
    values = sorted(latencies)
    return {
        "p50_ms": round(_quantile(values, 0.50), 2),
        "p95_ms": round(_quantile(values, 0.95), 2),
        "p99_ms": round(_quantile(values, 0.99), 2),
        "max_ms": round(values[-1], 2),
    }


def _params(rng: random.Random, keys: int) -> dict[str, str]:
    window = rng.choice(("10s", "1m", "5m"))
    if rng.random() < 0.2:
        return {"window": window, "service": f"svc{rng.randrange(SERVICES):02d}"}
    return {"window": window, "offset": str(rng.randrange(0, max(1, keys - 100))), "limit": "100"}


async def _call(client: httpx.AsyncClient, params: dict[str, str], errors: list[int]) -> None:
    try:
        response = await client.get("/v1/metrics/network", params=params)
        _ = response.content
    except httpx.TransportError:
        errors.append(0)
        return
    if response.status_code != 200:
        errors.append(response.status_code)


async def _open_loop(
    base: str, keys: int, rate: float, total: int, seed: int, connections: int = 16
) -> dict[str, Any]:
    """``total`` requests arriving at ``rate``/s (Poisson), however slow the answers, served
    by ``connections`` keep-alive connections. Each latency runs from the request's
    scheduled arrival, so time spent waiting for a free connection counts (no coordinated
    omission)."""
    rng = random.Random(seed)
    start = time.perf_counter() + 0.1
    schedule: list[tuple[float, dict[str, str]]] = []
    due = start
    for _ in range(total):
        due += rng.expovariate(rate)
        schedule.append((due, _params(rng, keys)))
    schedule.reverse()  # pop() takes the earliest
    latencies: list[float] = []
    errors: list[int] = []

    async def connection() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while schedule:
                due, params = schedule.pop()
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _call(client, params, errors)
                latencies.append((time.perf_counter() - due) * 1000.0)

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rate_per_s": rate,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        **_summary(latencies),
    }


async def _closed_loop(base: str, keys: int, clients: int, total: int, seed: int) -> dict[str, Any]:
    """``clients`` clients each sending the next request as soon as the last one answered."""
    latencies: list[float] = []
    errors: list[int] = []

    async def client_loop(n: int, rng: random.Random) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(n):
                started = time.perf_counter()
                await _call(client, _params(rng, keys), errors)
                latencies.append((time.perf_counter() - started) * 1000.0)

    started = time.perf_counter()
    await asyncio.gather(
        *(client_loop(total // clients, random.Random(seed + i)) for i in range(clients))
    )
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": round(len(latencies) / elapsed, 1),
        **_summary(latencies),
    }


async def _full_pages(base: str, n: int = 20) -> dict[str, float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            params = {"window": "5m", "limit": "1000", "offset": str(i * 37)}
            response = await client.get("/v1/metrics/network", params=params)
            _ = response.content
            latencies.append((time.perf_counter() - started) * 1000.0)
    return _summary(latencies)


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/v1/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start")


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 keys, 1,500 requests")
    parser.add_argument("--keys", type=int)
    parser.add_argument("--rate", type=float, help="open-loop arrival rate, requests/s")
    parser.add_argument("--requests", type=int, help="open-loop requests")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--seed", type=int, default=20241129)
    parser.add_argument(
        "--server-gc",
        choices=("on", "freeze", "off"),
        default="on",
        help="server's cyclic GC: on (as the worker), freeze after loading, off (diagnostic)",
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    keys = args.keys or (1_000 if args.quick else 1_600)
    if args.serve:
        serve(args.serve, keys, args.seed, gc_mode=args.server_gc)
        return
    if keys < 1_000:
        parser.error("--keys must be >= 1000")
    rate = args.rate or 50.0
    total = args.requests or (1_500 if args.quick else 6_000)
    saturation = 1_000 if args.quick else 4_000
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--serve", str(port), "--keys", str(keys)]
    cmd += ["--seed", str(args.seed), "--server-gc", args.server_gc]
    proc = subprocess.Popen(cmd)  # noqa: S603 - this script
    try:
        _wait_up(base, proc)
        asyncio.run(_closed_loop(base, keys, 4, 400, args.seed + 1000))  # warm the caches
        cpu0 = _cpu_s(proc.pid)
        figures = asyncio.run(_open_loop(base, keys, rate, total, args.seed))
        cpu_ms = (_cpu_s(proc.pid) - cpu0) * 1000.0 / max(1, figures["requests"])
        closed = asyncio.run(_closed_loop(base, keys, args.clients, saturation, args.seed + 1))
        full = asyncio.run(_full_pages(base))
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "bench": "api_latency",
        "mode": "quick" if args.quick else "full",
        "keys": keys,
        "cells": keys * BUCKETS,
        **figures,
        "server_cpu_ms_per_request": round(cpu_ms, 2),
        "saturation_clients": args.clients,
        "saturation_rps": closed["rps"],
        "saturation_p50_ms": closed["p50_ms"],
        "saturation_p95_ms": closed["p95_ms"],
        "full_page_p50_ms": full["p50_ms"],
        "full_page_p95_ms": full["p95_ms"],
        "server_gc": args.server_gc,
        "load_avg_1m": round(load_before, 2),
        "target_p95_ms": TARGET_P95_MS,
        "met": figures["p95_ms"] < TARGET_P95_MS and figures["errors"] == 0,
        "elapsed_s": round(time.perf_counter() - began, 1),
    }
    print(
        f"open loop {rate:g} req/s, {result['requests']} requests over {keys} keys: "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms "
        f"(server CPU {result['server_cpu_ms_per_request']} ms/request); "
        f"saturation with {args.clients} clients: {closed['rps']} req/s, "
        f"p95 {closed['p95_ms']} ms; full page (1,000 keys) p50 {full['p50_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
