"""Pipeline throughput: probe events/s per worker process through validation and aggregation.

Three consumers read the same pre-produced probe events from a real local Kafka, one after
the other, each in its own process (docs/benchmarks.md, "pipeline_throughput"):

- (a) **egresswatch**: the real worker (``python -m pipeline.cli worker``: the Faust app,
  the ingest agent, the cells table and its changelog, the changelog follower, the alert
  tick, the HTTP API) on batch-envelope records of 500 events.
- (b) **ceiling**: a bare aiokafka ``getmany`` loop, no Faust, running the same
  ``IngestProcessor.process`` (decode, validate, aggregate into cells and sketches, metrics)
  on the same records, and merging the cells into a dict (no changelog).
- (c) **naive Faust**: a bare Faust agent over one event per record that discards each one.

Each is timed from its first counted events to its last (start-up and group join left out;
see ``_throughput_consumers``), with its CPU per event. Then the worker's per-record work is
profiled in-process over the same records (``_throughput_profile``).

Run ``.venv/bin/python bench/pipeline_throughput.py [--quick]``. It starts the local Kafka
(``scripts/kafka-local up``, idempotent) unless ``--bootstrap`` is given, creates fresh
topics, stops every process it started and deletes its topics at the end. The last stdout
line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from _services import delete_topics, kafka_up
from _throughput_consumers import ceiling_role, log, measure_worker, naive_role
from _throughput_profile import WORKER_STAGES, profile_hot_path
from _throughput_workload import (
    ROOT,
    Workload,
    build_workload,
    produce,
)

from pipeline.app import topic_specs
from pipeline.probe.emitter import resolve_compression
from pipeline.settings import WorkerSettings
from pipeline.topics import TopicSpec, ensure_topics

PARTITIONS: Final = 8
TARGETS: Final = {"events_per_s": 30_000.0, "ratio_vs_ceiling": 0.5, "speedup_vs_naive_faust": 5.0}
PROFILED_EVENTS: Final = {"quick": 100_000, "full": 200_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~200k events (under 2 minutes)")
    parser.add_argument("--events", type=int, help="events (default 200k quick, 1M full)")
    parser.add_argument("--naive-records", type=int, help="records of the naive baseline")
    parser.add_argument("--events-per-record", type=int, default=500)
    parser.add_argument("--bootstrap", help="Kafka host:port (default: scripts/kafka-local up)")
    parser.add_argument("--role", choices=("ceiling", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "ceiling":
        print(json.dumps(asyncio.run(ceiling_role(json.loads(args.config)))), flush=True)
        return 0
    if args.role == "naive":
        naive_role(json.loads(args.config))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    events = args.events or (200_000 if args.quick else 1_000_000)
    naive_n = args.naive_records or (40_000 if args.quick else 100_000)
    bootstrap = args.bootstrap or kafka_up()
    tag = f"pt{int(time.time())}x{os.getpid()}"
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap,
        app_id=f"bench-{tag}",
        probe_topic=f"bench.{tag}.probe-events",
        dead_letter_topic=f"bench.{tag}.dead-letters",
        alerts_topic=f"bench.{tag}.alerts",
        probe_partitions=PARTITIONS,
    )
    single_topic = f"bench.{tag}.one-event-per-record"
    compression = resolve_compression("auto")  # what the emitter uses by default
    log(f"kafka {bootstrap}; building {events:,} events ({args.events_per_record}/record)")
    workload = build_workload(events, naive_n, args.events_per_record, PARTITIONS)
    specs = [*topic_specs(settings), TopicSpec(single_topic, PARTITIONS, retention_ms=3_600_000)]
    try:
        asyncio.run(ensure_topics(bootstrap, specs))
        log(f"producing {len(workload.batched)} records ({compression}) + {naive_n:,} single")
        asyncio.run(produce(bootstrap, settings.probe_topic, workload.batched, compression))
        asyncio.run(produce(bootstrap, single_topic, workload.single, None))
        with tempfile.TemporaryDirectory(prefix="bench-pt-") as tmp:
            log("(a) egresswatch worker")
            worker = measure_worker(settings, events, Path(tmp))
            log(f"    {worker['events_per_s']:,.0f} events/s")
            log("(b) ceiling: bare aiokafka + IngestProcessor")
            common = {"bootstrap": bootstrap, "partitions": PARTITIONS}
            cfg = {**common, "topic": settings.probe_topic, "events": events}
            ceiling = run_role("ceiling", cfg, timeout_s=300)
            log(f"    {ceiling['events_per_s']:,.0f} events/s")
            log("(c) naive Faust: one event per record, discarded")
            cfg = {**common, "topic": single_topic, "events": len(workload.single)}
            cfg |= {"app_id": f"bench-{tag}-naive", "datadir": str(Path(tmp) / "naive")}
            naive = run_role("naive", cfg, timeout_s=300)
            log(f"    {naive['events_per_s']:,.0f} events/s")
    finally:
        deleted = asyncio.run(delete_topics(bootstrap, tag))
        log(f"deleted topics: {', '.join(sorted(deleted))}")
    # Every k-th record: all partitions, each still in event-time order.
    stride = max(1, events // PROFILED_EVENTS["quick" if args.quick else "full"])
    sample = workload.batched[::stride]
    log(f"profiling the hot path in-process over {len(sample)} records")
    profile = profile_hot_path(sample, top=12)
    summary = report(args, workload, compression, worker, ceiling, naive, profile)
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary), flush=True)
    return 0


def run_role(role: str, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run this script as ``--role ROLE CONFIG`` in a new process; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, json.dumps(config)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    # Faust's worker may write terminal control codes before the line: keep from "{" on.
    lines = [line[line.index("{") :] for line in done.stdout.splitlines() if "{" in line]
    if not lines:
        raise RuntimeError(f"{role} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def report(
    args: argparse.Namespace,
    workload: Workload,
    compression: str | None,
    worker: dict[str, Any],
    ceiling: dict[str, Any],
    naive: dict[str, Any],
    profile: dict[str, Any],
) -> dict[str, Any]:
    """Print the human summary; return the JSON summary."""
    figures = {
        "events_per_s": round(worker["events_per_s"]),
        "ceiling_events_per_s": round(ceiling["events_per_s"]),
        "naive_faust_events_per_s": round(naive["events_per_s"]),
        "ratio_vs_ceiling": round(worker["events_per_s"] / ceiling["events_per_s"], 3),
        "speedup_vs_naive_faust": round(worker["events_per_s"] / naive["events_per_s"], 2),
    }
    met = {name: figures[name] >= goal for name, goal in TARGETS.items()}
    stages = profile["stages_cpu_us_per_event"]
    # What the in-process stages do not explain: Faust, the Kafka clients, changelog I/O.
    accounted = sum(stages[k] for k in WORKER_STAGES)
    stages["rest_of_worker"] = round(worker["cpu_us_per_event"] - accounted, 2)
    print(
        f"{'consumer':<44}{'events/s':>10}{'CPU us/ev':>11}{'ev/CPU-s':>10}"
        f"{'CPU util':>10}{'no-CPU wait':>13}"
    )
    for name, row in (
        ("egresswatch worker (500 events/record)", worker),
        ("ceiling: bare aiokafka + IngestProcessor", ceiling),
        ("naive Faust agent, 1 event/record", naive),
    ):
        print(
            f"{name:<44}{row['events_per_s']:>10,.0f}{row['cpu_us_per_event']:>11.1f}"
            f"{row['events_per_cpu_s']:>10,.0f}{row['cpu_utilisation']:>10.2f}"
            f"{row['cpu_wait_share']:>13.2f}"
        )
    print(f"stages (CPU us/event): {profile['stages_cpu_us_per_event']}")
    print("top functions of IngestProcessor.process (cProfile, share of own time):")
    for entry in profile["profile_top"]:
        print(f"  {entry['share']:6.1%}  {entry['calls_per_event']:>5} /event  {entry['function']}")
    return {
        "bench": "pipeline_throughput",
        "mode": "quick" if args.quick else "full",
        **figures,
        "events_per_cpu_s": round(worker["events_per_cpu_s"]),
        "ceiling_events_per_cpu_s": round(ceiling["events_per_cpu_s"]),
        "naive_faust_events_per_cpu_s": round(naive["events_per_cpu_s"]),
        "cpu_ratio_vs_ceiling": round(ceiling["cpu_us_per_event"] / worker["cpu_us_per_event"], 3),
        "targets": {f"{name}>={goal:g}": met[name] for name, goal in TARGETS.items()},
        "targets_met": all(met.values()),
        "events": workload.events,
        "events_per_record": args.events_per_record,
        "records": len(workload.batched),
        "naive_records": len(workload.single),
        "event_bytes_avg": round(workload.event_bytes),
        "partitions": PARTITIONS,
        "compression": compression,
        "worker": _rounded(worker),
        "ceiling": _rounded(ceiling),
        "naive_faust": _rounded(naive),
        "profile": profile,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    sys.exit(main())
