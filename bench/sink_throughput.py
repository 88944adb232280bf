"""Sink throughput: critical events/s and MB/s through ``SinkWriter`` into a real Ceph RGW,
side by side with a raw s3fs PUT loop of the same bytes.

Per round (docs/benchmarks.md, "sink_throughput"):

1. **sink**: a real :class:`~sinks.SinkWriter` over a real ``S3Store`` (Content-MD5, ETag
   check) on a fresh bucket, with a real :class:`~sinks.Spool` in a temporary folder and the
   default :class:`~sinks.SinkConfig` (``min_severity="critical"``, batches of 10,000
   records or 8 MiB). A consumer task calls ``add_events`` once per record of 500 events,
   with the bytes each event arrived as (``IngestResult.lines``, as the worker passes
   them), yielding to the loop between records as the ingest agent does; a timer task calls
   ``tick()`` back to back (5 ms apart when idle) instead of once a second, so the timer's
   cadence does not cap the figure; then ``flush_all()``. Timed from the first add until a
   :class:`~sinks.FlushResult` covers every offset of every partition.
2. **raw**: the objects the writer stored are read back (untimed; every event checked there
   exactly once, by ``request_id``), the sink's bucket is deleted, and the same bytes under
   the same keys, in the writer's upload order, are PUT into another fresh bucket with plain
   ``await fs._pipe_file(path, data)``, as many at a time as the writer had in flight at
   most (counted around ``store.put``). Today's writer uploads one object at a time (its
   flush awaits each PUT in turn), so the raw loop is sequential too.

``ratio_vs_raw`` is raw wall time / sink wall time for the same bytes; the round with the
median ratio is reported. Then one more round with ``compress=True`` (gzip) and a breakdown
of the writer's CPU per MB, stage by stage, in-process.

Run ``.venv/bin/python bench/sink_throughput.py [--quick]``. It starts the local RGW
(``scripts/rgw-local up``, idempotent) and leaves it running; it deletes the buckets it
creates. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import psutil
from _sink_profile import sink_stages
from _sink_workload import (
    ROOT,
    Endpoint,
    Record,
    delete_bucket,
    fetch_objects,
    make_events,
    make_records,
    open_fs,
    request_id_of,
    rgw_up,
)

from sinks import SinkConfig, SinkWriter, Spool, store_breaker
from sinks.jsonl import decode_jsonl
from sinks.s3 import S3Store

TOPIC: Final = "egresswatch.probe-events.v1"
PARTITIONS: Final = 8
TARGET_RATIO: Final = 0.5
MB: Final = 1e6


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TimedStore(S3Store):
    """``S3Store`` that records its upload order, PUTs in flight and time spent in ``put``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.put_s = 0.0

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.perf_counter()
        try:
            await super().put(key, data, md5)
            self.order.append(key)
        finally:
            self.put_s += time.perf_counter() - started
            self.in_flight -= 1


class Meter:
    """Wall time, this process's CPU, RGW's CPU (radosgw + OSD) and CPU pressure over a span."""

    def __init__(self) -> None:
        state = Path(os.environ.get("EGRESSWATCH_RGW_DIR", ROOT / "var" / "rgw"))
        pids = [state / "cluster" / "run" / name for name in ("rgw.gw.pid", "osd.pid")]
        self._rgw = [psutil.Process(int(p.read_text())) for p in pids if p.exists()]

    def __enter__(self) -> Meter:
        self._t = (time.perf_counter(), time.process_time(), self._rgw_cpu(), _psi_us())
        return self

    def __exit__(self, *exc: object) -> None:
        t0, c0, r0, p0 = self._t
        self.wall_s = time.perf_counter() - t0
        self.cpu_s = time.process_time() - c0
        self.rgw_cpu_s = self._rgw_cpu() - r0
        self.psi = (_psi_us() - p0) / 1e6 / self.wall_s

    def _rgw_cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self._rgw)


def _psi_us() -> float:
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return 0.0
    return float(first.rpartition("total=")[2])


async def sink_pass(
    endpoint: Endpoint, bucket: str, records: list[Record], *, compress: bool, spool_dir: Path
) -> tuple[dict[str, Any], TimedStore]:
    """Feed every record through a fresh SinkWriter until all offsets are durable; timed."""
    store = await TimedStore.open(endpoint.url, endpoint.access_key, endpoint.secret_key, bucket)
    assert isinstance(store, TimedStore)  # open() builds cls
    spool = Spool(spool_dir, max_bytes=512 * 2**20)
    writer = SinkWriter(store, spool, store_breaker(), config=SinkConfig(compress=compress))
    last = {(TOPIC, p): offset for p, offset, *_ in records}
    fed = asyncio.Event()

    async def consume() -> None:
        for partition, offset, events, received in records:
            writer.add_events(TOPIC, partition, offset, events, received)
            await asyncio.sleep(0)
        fed.set()

    async def timer() -> None:
        while not fed.is_set():
            result = await writer.tick()
            if not (result.objects or result.spooled):
                await asyncio.sleep(0.005)

    try:
        with Meter() as meter:
            await asyncio.gather(consume(), timer())
            result = await writer.flush_all()
            if result.durable != last:
                raise RuntimeError(f"not all durable: {result.durable} != {last}")
        stats = writer.stats()
    finally:
        spool.close()
        await store.close()
    if stats.put_failures or stats.spooled_batches or stats.flushed_records != stats.received:
        raise RuntimeError(f"the sink did not store everything directly: {stats}")
    return {
        **_span(meter),
        "objects": stats.flushed_objects,
        "put_s": store.put_s,
        "max_puts_in_flight": store.max_in_flight,
    }, store


async def raw_pass(
    fs: Any, bucket: str, objects: list[tuple[str, bytes]], concurrency: int
) -> dict[str, Any]:
    """PUT ``objects`` in order with plain s3fs into a fresh bucket, ``concurrency`` at a
    time (1: one after the other); timed."""
    await fs._call_s3("create_bucket", Bucket=bucket)
    todo = iter(objects)

    async def put_next() -> None:
        for key, data in todo:  # one iterator: each PUT takes the next object
            await fs._pipe_file(f"{bucket}/{key}", data)

    with Meter() as meter:
        await asyncio.gather(*(put_next() for _ in range(concurrency)))
    return _span(meter)


def _span(meter: Meter) -> dict[str, Any]:
    return {
        "wall_s": meter.wall_s,
        "cpu_s": meter.cpu_s,
        "rgw_cpu_s": meter.rgw_cpu_s,
        "psi": meter.psi,
    }


async def one_round(
    endpoint: Endpoint, fs: Any, records: list[Record], ids: set[bytes], *, compress: bool, tag: str
) -> dict[str, Any]:
    """A sink pass, the check of what it stored, then the raw pass of the same bytes."""
    sink_bucket, raw_bucket = f"{tag}-sink", f"{tag}-raw"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
            sink, store = await sink_pass(
                endpoint, sink_bucket, records, compress=compress, spool_dir=Path(tmp)
            )
        stored = await fetch_objects(fs, sink_bucket)
        seen: list[bytes] = []
        jsonl_bytes = 0
        for data in stored.values():
            lines = decode_jsonl(data)
            seen.extend(request_id_of(line) for line in lines)
            jsonl_bytes += sum(map(len, lines)) + len(lines)
        if len(seen) != len(ids) or set(seen) != ids:
            raise RuntimeError(f"{len(seen)} lines stored for {len(ids)} events, or ids differ")
        await delete_bucket(fs, sink_bucket)  # memstore: keep one copy in RGW at a time
        objects = [(key, stored[key]) for key in store.order]
        raw = await raw_pass(fs, raw_bucket, objects, store.max_in_flight)
        if len(await fs._find(raw_bucket)) != len(objects):
            raise RuntimeError("the raw pass stored a different number of objects")
    finally:
        await delete_bucket(fs, sink_bucket)
        await delete_bucket(fs, raw_bucket)
    stored_bytes = sum(len(data) for _, data in objects)
    return figures(len(ids), jsonl_bytes, stored_bytes, sink, raw)


def figures(
    events: int, jsonl_bytes: int, stored_bytes: int, sink: dict[str, Any], raw: dict[str, Any]
) -> dict[str, Any]:
    wall, raw_wall = sink["wall_s"], raw["wall_s"]
    return {
        "events_per_s": round(events / wall),
        "mb_per_s": round(jsonl_bytes / MB / wall, 1),
        "stored_mb_per_s": round(stored_bytes / MB / wall, 1),
        "raw_put_mb_per_s": round(stored_bytes / MB / raw_wall, 1),
        "ratio_vs_raw": round(raw_wall / wall, 3),
        "objects_per_min": round(sink["objects"] / wall * 60),
        "objects": sink["objects"],
        "jsonl_mb": round(jsonl_bytes / MB, 1),
        "stored_mb": round(stored_bytes / MB, 1),
        "mean_object_kb": round(stored_bytes / sink["objects"] / 1e3, 1),
        "max_puts_in_flight": sink["max_puts_in_flight"],
        "sink": {k: round(v, 3) if isinstance(v, float) else v for k, v in sink.items()},
        "raw": {k: round(v, 3) for k, v in raw.items()},
    }


async def bench(args: argparse.Namespace, events: int) -> dict[str, Any]:
    endpoint = await asyncio.to_thread(rgw_up)
    log(f"rgw {endpoint.url}; building {events:,} critical events")
    evs = make_events(events)
    records = make_records(evs, PARTITIONS, args.events_per_record)
    ids = {e.request_id.encode() for e in evs}
    # The workload lives all run long; a worker's decoded events die with their record.
    # Out of the collector's sight, it does not make the writer's garbage collections dearer.
    gc.collect()
    gc.freeze()
    fs = await open_fs(endpoint)
    tag = f"bench-sink-{int(time.time())}x{os.getpid()}"
    rounds = []
    try:
        for i in range(args.rounds):
            log(f"round {i + 1}/{args.rounds}: sink, then raw PUTs of the same bytes")
            row = await one_round(endpoint, fs, records, ids, compress=False, tag=f"{tag}-{i}")
            _print_row(f"round {i + 1}, plain", row)
            rounds.append(row)
        log("gzip round (compress=True)")
        gz = await one_round(endpoint, fs, records, ids, compress=True, tag=f"{tag}-gz")
        _print_row("gzip (extra line)", gz)
    finally:
        client = await fs.set_session()  # the client s3fs already holds
        await client.close()
    log("stages, in-process, CPU per MB of JSONL")
    stages = sink_stages(records[: max(1, len(records) // 4)], TOPIC, rounds)
    _print_stages(stages)
    ratios = [r["ratio_vs_raw"] for r in rounds]
    best = sorted(rounds, key=lambda r: r["ratio_vs_raw"])[len(rounds) // 2]
    return {
        "bench": "sink_throughput",
        "mode": "quick" if args.quick else "full",
        **{k: best[k] for k in ("events_per_s", "mb_per_s", "raw_put_mb_per_s")},
        "ratio_vs_raw": best["ratio_vs_raw"],
        "objects_per_min": best["objects_per_min"],
        "target_ratio": TARGET_RATIO,
        "target_met": best["ratio_vs_raw"] >= TARGET_RATIO,
        "ratios_all_rounds": ratios,
        "ratio_median": statistics.median(ratios),
        "events": events,
        "events_per_record": args.events_per_record,
        "records": len(records),
        "partitions": PARTITIONS,
        "event_bytes_avg": round(best["jsonl_mb"] * MB / events),
        "upload_concurrency": best["max_puts_in_flight"],
        "median_round": best,
        "gzip": gz,
        "stages_ms_per_mb": stages,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _print_row(name: str, row: dict[str, Any]) -> None:
    print(
        f"{name:<20} {row['events_per_s']:>8,} events/s  {row['mb_per_s']:>6.1f} MB/s JSONL"
        f"  ({row['stored_mb_per_s']:.1f} MB/s stored)  raw PUT {row['raw_put_mb_per_s']:>6.1f}"
        f" MB/s  ratio {row['ratio_vs_raw']:.2f}  {row['objects_per_min']:,} objects/min"
        f"  ({row['objects']} objects, {row['mean_object_kb']:.0f} kB each; CPU s sink"
        f" {row['sink']['cpu_s']:.2f} raw {row['raw']['cpu_s']:.2f}; RGW CPU s sink"
        f" {row['sink']['rgw_cpu_s']:.2f} raw {row['raw']['rgw_cpu_s']:.2f}; PSI"
        f" {row['sink']['psi']:.2f}/{row['raw']['psi']:.2f})",
        flush=True,
    )


def _print_stages(st: dict[str, Any]) -> None:
    print(
        f"ms per MB of JSONL (median round): sink wall {st['wall_sink']:.1f} = in store.put"
        f" {st['wall_sink_in_put']:.1f} + outside {st['wall_sink_outside_put']:.1f}; raw PUT"
        f" wall {st['wall_raw_put']:.1f}. CPU: sink process {st['cpu_sink_process']:.1f}, raw"
        f" {st['cpu_raw_process']:.1f}; RGW {st['cpu_rgw_sink']:.1f} / {st['cpu_rgw_raw']:.1f}."
        f" Writer stages alone (CPU): add_events {st['cpu_add_events']:.1f}, render_objects"
        f" {st['cpu_render_plain']:.1f} (gzip {st['cpu_render_gzip']:.1f}), MD5"
        f" {st['cpu_md5']:.1f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200k events (under 2 minutes)")
    parser.add_argument("--events", type=int, help="critical events (default 200k quick, 1M full)")
    parser.add_argument("--rounds", type=int, default=3, help="plain rounds (median reported)")
    parser.add_argument("--events-per-record", type=int, default=500)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    events = args.events or (200_000 if args.quick else 1_000_000)
    summary = asyncio.run(bench(args, events))
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
