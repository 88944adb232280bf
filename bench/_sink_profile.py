"""Where sink_throughput's time goes: the writer's stages, timed alone, in milliseconds per MB.

CPU stages (``time.process_time``, in-process, no RGW) over a sample of the records:

- ``add_events``: ``SinkWriter.add_events`` per record (severity filter, the received bytes,
  the batcher), with count-closed batches queued but not flushed;
- ``render``: ``render_objects`` of the same batches, plain and gzip (the writer runs it in a
  thread, one batch at a time, before its PUTs);
- ``md5``: the MD5 ``S3Store.put`` takes of each object (the Content-MD5 header; the ETag
  must equal the same digest in hex).

Wall stages, from the measured rounds (median over rounds): the sink's wall time, the part of
it spent inside ``store.put``, the rest, and the raw PUT loop's wall time, all per MB of JSONL.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from typing import Any

from _sink_workload import Record

from sinks import LocalStore, SinkConfig, SinkWriter, Spool, event_record, store_breaker
from sinks.batcher import Batch, Batcher, render_objects

__all__ = ["sink_stages"]

_MB = 1e6


def sink_stages(records: list[Record], topic: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU ms per MB of JSONL for each writer stage, and wall ms per MB from ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="bench-sink-stages-") as tmp:
        spool = Spool(f"{tmp}/spool", max_bytes=2**20)
        writer = SinkWriter(LocalStore(f"{tmp}/store"), spool, store_breaker())
        started = time.process_time()
        for partition, offset, events, received in records:
            writer.add_events(topic, partition, offset, events, received)
        add_s = time.process_time() - started
        spool.close()
    batches = _batches(records, topic)
    prefix = SinkConfig().prefix
    mb = sum(b.nbytes for b in batches) / _MB
    started = time.process_time()
    plain = [obj.data for b in batches for obj in render_objects(b, prefix=prefix, compress=False)]
    render_s = time.process_time() - started
    started = time.process_time()
    for b in batches:
        render_objects(b, prefix=prefix, compress=True)
    gzip_s = time.process_time() - started
    started = time.process_time()
    for data in plain:
        hashlib.md5(data, usedforsecurity=False).digest()
    md5_s = time.process_time() - started

    def per_mb(key: str, side: str) -> float:
        return float(statistics.median(r[side][key] / r["jsonl_mb"] * 1e3 for r in rounds))

    sink_wall = per_mb("wall_s", "sink")
    in_put = per_mb("put_s", "sink")
    return {
        "cpu_add_events": round(add_s / mb * 1e3, 2),
        "cpu_render_plain": round(render_s / mb * 1e3, 2),
        "cpu_render_gzip": round(gzip_s / mb * 1e3, 2),
        "cpu_md5": round(md5_s / mb * 1e3, 2),
        "wall_sink": round(sink_wall, 2),
        "wall_sink_in_put": round(in_put, 2),
        "wall_sink_outside_put": round(sink_wall - in_put, 2),
        "wall_raw_put": round(per_mb("wall_s", "raw"), 2),
        "cpu_sink_process": round(per_mb("cpu_s", "sink"), 2),
        "cpu_raw_process": round(per_mb("cpu_s", "raw"), 2),
        "cpu_rgw_sink": round(per_mb("rgw_cpu_s", "sink"), 2),
        "cpu_rgw_raw": round(per_mb("rgw_cpu_s", "raw"), 2),
        "sample_mb": round(mb, 1),
    }


def _batches(records: list[Record], topic: str) -> list[Batch]:
    """The batches the writer's default limits cut from ``records`` (all closed at the end)."""
    batcher = Batcher(SinkConfig().limits)
    closed = []
    for partition, offset, events, received in records:
        sink_records = [event_record(e, raw) for e, raw in zip(events, received, strict=True)]
        batch = batcher.add(topic, partition, offset, sink_records, 0.0)
        if batch is not None:
            closed.append(batch)
    for batch in batcher.open_batches():
        closed.append(batcher.close(batch.tp) or batch)
    return closed
