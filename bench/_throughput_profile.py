"""pipeline_throughput's profile: where a worker's CPU goes per event, measured in-process.

Two views over the same batch records the worker read:

- **stages** (CPU us per event, no profiler): what the ingest agent does per record and
  what the changelog follower does per cell write, each timed on its own:
  ``decode_validate`` (``decode_batch``), ``aggregate_and_metrics`` (the rest of
  ``IngestProcessor.process``), ``table_merge`` (fresh cells into the stored ones),
  ``changelog_encode`` (Faust's JSON codec on each written cell), ``follower_decode_upsert``
  (``WindowAggregate.from_data`` + ``SummaryView.upsert`` of each changelog value).
- **profile_top**: cProfile's functions of ``IngestProcessor.process`` by own time. cProfile
  charges a Python call more than a C call: read the shares as an order, and the stages as
  the amounts.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
from _throughput_workload import Record

from agents.ingest import IngestProcessor
from pipeline.envelope import decode_batch
from tables.aggregate import WindowAggregate
from tables.metrics import EgressMetrics
from tables.query import SummaryView

__all__ = ["WORKER_STAGES", "profile_hot_path"]

WORKER_STAGES: Final = (
    "decode_validate",
    "aggregate_and_metrics",
    "table_merge",
    "changelog_encode",
    "follower_decode_upsert",
)


def profile_hot_path(records: list[Record], top: int) -> dict[str, Any]:
    """CPU per stage of the worker's per-record work (no profiler), then cProfile of process."""
    from faust.serializers import codecs

    values = [(p, v) for p, _, v in records]
    n = sum(len(decode_batch(v).valid) for _, v in values)
    stages: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str) -> Iterator[None]:
        t0 = time.process_time()
        yield
        stages[name] = (time.process_time() - t0) / n * 1e6

    with timed("decode_validate"):
        for _, v in values:
            decode_batch(v)
    processor = IngestProcessor(metrics=EgressMetrics())
    with timed("process"):
        results = [processor.process(v, topic="t", partition=p, offset=0) for p, v in values]
    stages["aggregate_and_metrics"] = stages["process"] - stages["decode_validate"]
    table: dict[tuple[str, int], WindowAggregate] = {}
    written: list[list[WindowAggregate]] = []
    with timed("table_merge"):
        for result in results:
            cells = []
            for cell_id, fresh in result.cells.items():
                current = table.get(cell_id)
                if current is None:
                    current = table[cell_id] = fresh
                else:
                    current.merge(fresh)
                cells.append(current)
            written.append(cells)
    blobs: list[bytes] = []
    with timed("changelog_encode"):
        for cells in written:
            blobs.extend(codecs.dumps("json", cell) for cell in cells)
    view = SummaryView()
    with timed("follower_decode_upsert"):
        for blob in blobs:
            view.upsert(WindowAggregate.from_data(msgspec.json.decode(blob)))
    profiler = cProfile.Profile()
    processor = IngestProcessor(metrics=EgressMetrics())
    profiler.enable()
    for p, v in values:
        processor.process(v, topic="t", partition=p, offset=0)
    profiler.disable()
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "events": n,
        "records": len(values),
        "cells_per_record": len(blobs) / len(values),
        "changelog_value_bytes": sum(map(len, blobs)) / len(blobs),
        "stages_cpu_us_per_event": {k: round(v, 2) for k, v in stages.items()},
        "profile_top": [
            {
                "function": _func_name(func),
                "share": round(row[2] / total, 3),
                "calls_per_event": round(row[1] / n, 2),
            }
            for func, row in rows
        ],
    }


def _func_name(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            return f"{'/'.join(parts[parts.index(anchor) + 1 :])}:{line}({name})"
    return f"{path.name}:{line}({name})"
