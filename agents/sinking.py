"""Hold Kafka acks until the sink says the records are durable (invariant I4).

The ingest agent consumes with ``stream.noack()``; after each record it hands the record's
critical events to the :class:`~sinks.SinkWriter` and parks the Faust event here. Each tick,
the writer's :class:`~sinks.config.FlushResult` names, per partition, the highest offset
whose records are all in the object store or the durable spool; the parked events up to it
are acked, and Faust commits the run of acked offsets. Nothing is acked past what is
durable, so a crash at any point makes Kafka deliver the rest again, and the sink's
deterministic object names make the rewrite an overwrite.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.logs import log_fields
from pipeline.settings import WorkerSettings
from sinks import SinkConfig, SinkWriter, Spool, store_breaker
from sinks.batcher import BatchLimits, TopicPartition
from sinks.stores import LocalStore, ObjectStore

__all__ = [
    "AckLedger",
    "DeferredS3Store",
    "build_sink_writer",
    "ensure_bucket_forever",
    "sink_state",
]

_log = logging.getLogger("egresswatch.sinking")


class AckLedger:
    """Faust events waiting for durability, per partition, in offset order."""

    def __init__(self) -> None:
        self._held: dict[TopicPartition, deque[tuple[int, Any, Any]]] = {}
        self.acked = 0

    def hold(self, stream: Any, event: Any) -> None:
        """Park a Faust event of ``stream`` (consumed with ``noack()``) until it is durable."""
        message = event.message
        queue = self._held.setdefault((message.topic, message.partition), deque())
        queue.append((message.offset, event, stream))

    def held(self) -> int:
        return sum(len(q) for q in self._held.values())

    async def release(self, durable_offsets: dict[TopicPartition, int]) -> int:
        """Ack every held event at or below its partition's durable offset."""
        released = 0
        for tp, durable in durable_offsets.items():
            queue = self._held.get(tp)
            while queue and queue[0][0] <= durable:
                _, event, stream = queue.popleft()
                await stream.ack(event)
                released += 1
        self.acked += released
        return released

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their unacked records go to the new owner again."""
        for tp in tps:
            self._held.pop(tp, None)


def build_sink_writer(settings: WorkerSettings) -> SinkWriter:
    """The writer over RGW when an S3 endpoint is configured, else over a local folder."""
    store: ObjectStore
    if settings.s3_endpoint:
        store = DeferredS3Store(settings)
    else:
        store = LocalStore(settings.sink_local_root)
    spool_dir = settings.spool_dir or Path(settings.data_dir) / "spool"
    config = SinkConfig(
        min_severity=settings.sink_min_severity,  # type: ignore[arg-type]
        prefix=settings.sink_prefix,
        compress=settings.sink_compress,
        limits=BatchLimits(idle_s=settings.sink_idle_s, max_age_s=settings.sink_max_age_s),
    )
    return SinkWriter(
        store, Spool(spool_dir, max_bytes=settings.spool_max_bytes), store_breaker(), config=config
    )


class DeferredS3Store:
    """The S3 store, opened on first use (s3fs loads only then): a worker starts even while
    RGW is down, and its PUTs fail over to the spool until RGW answers."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._store: ObjectStore | None = None
        self._lock = asyncio.Lock()

    async def store(self) -> ObjectStore:
        async with self._lock:
            if self._store is None:
                from sinks.s3 import S3Store

                s = self._settings
                self._store = await S3Store.open(
                    s.s3_endpoint or "",
                    s.s3_access_key,
                    s.s3_secret_key,
                    s.s3_bucket,
                    create_bucket=False,
                )
            return self._store

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None:
        await (await self.store()).put(key, data, md5)

    async def get(self, key: str) -> bytes:
        return await (await self.store()).get(key)

    async def list_keys(self, prefix: str = "") -> list[str]:
        return await (await self.store()).list_keys(prefix)


async def ensure_bucket_forever(writer: SinkWriter, *, interval_s: float = 2.0) -> None:
    """Create the bucket once RGW answers (until then PUTs fail over to the spool)."""
    store = writer.store
    if not isinstance(store, DeferredS3Store):
        return
    while True:
        try:
            s3 = await store.store()
            await s3.ensure_bucket()  # type: ignore[attr-defined]
            return
        except Exception as exc:  # noqa: BLE001 - RGW down at start is expected; retry
            _log.warning(
                "bucket not ready", extra=log_fields(event="sink_bucket_wait", error=repr(exc))
            )
            await asyncio.sleep(interval_s)


def sink_state(writer: SinkWriter) -> dict[str, Any]:
    """The sink's own protections, for ``/v1/resilience/state``."""
    stats = writer.stats()
    return {
        "store": "s3" if isinstance(writer.store, DeferredS3Store) else "local",
        "breaker_state": stats.breaker_state,
        "backpressure": stats.backpressure,
        "spool_bytes": stats.spool_bytes,
        "spool_fill_ratio": stats.spool_fill_ratio,
        "spool_pending_batches": stats.spool_pending_batches,
        "quarantined_segments": stats.quarantined_segments,
        "upload_lag_s": stats.upload_lag_s,
        "flushed_objects": stats.flushed_objects,
        "put_failures": stats.put_failures,
        "checksum_mismatches": stats.checksum_mismatches,
    }
