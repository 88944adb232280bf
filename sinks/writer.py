"""The sink's orchestrator: batches in, objects to the store or the spool, durable offsets out.

Contract (``docs/sinks.md``, "The worker's side"):

- :meth:`SinkWriter.add` (or :meth:`~SinkWriter.add_events`, :meth:`~SinkWriter.add_alerts`)
  is called once per Kafka record, in offset order per partition, *also when the record
  yields nothing to store*: the offset must still become ackable. It never does I/O. An
  offset at or below one already added (or already durable) is a redelivery: skipped and
  counted, it stays covered by the batch that holds it.
- :meth:`~SinkWriter.flush_due` (on a timer, say every second) closes the batches that are
  due (count and bytes close in ``add``; age and idleness here), writes each to the store or,
  if the breaker is open or the store keeps failing, to the spool, and returns a
  :class:`FlushResult` whose ``durable`` maps each partition to the highest offset such that
  every record up to it is in the store or the spool. Ack (commit) up to there, never past.
- A batch the spool refuses (full, disk error) stays queued and is retried first on the next
  call; batches of one partition become durable strictly in order. :attr:`backpressure`
  says stop consuming: the spool is above its high-water mark or refused a batch.
- :meth:`~SinkWriter.drain_spool` uploads spooled batches, oldest first, while the breaker
  lets calls through (a half-open breaker lets one probe through), and pops each once all
  its objects are in. :meth:`~SinkWriter.tick` is ``flush_due`` then a bounded drain.

Counted: received, filtered, flushed, spooled, drained, retries, checksum mismatches,
failures, redeliveries (:meth:`SinkWriter.stats`). Nothing is ever dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.logs import log_fields
from pipeline.probe.breaker import CircuitBreaker
from pipeline.schema import ProbeEvent
from sinks.batcher import Batch, Batcher, RenderedObject, TopicPartition, render_objects
from sinks.config import FlushResult, SinkConfig, SinkStats
from sinks.errors import ChecksumMismatch, SinkError, SpoolError
from sinks.records import AlertLike, SinkRecord, alert_record, event_record, keeps
from sinks.spool import Spool, SpoolEntry
from sinks.stores import ObjectStore

__all__ = ["SinkWriter"]

_log = logging.getLogger("egresswatch.sinks")


@dataclass(eq=False)
class _Pending:
    """A closed batch on its way: its objects, and those already in the store."""

    batch: Batch
    rendering: asyncio.Future[list[RenderedObject]] | None = None
    """Its objects, rendered in a thread (gzip of megabytes is CPU), started while the batch
    before it is being uploaded so that the two overlap."""
    stored: set[str] = field(default_factory=set)


class SinkWriter:
    """See the module docstring. One per worker; all methods run on one event loop."""

    def __init__(
        self,
        store: ObjectStore,
        spool: Spool,
        breaker: CircuitBreaker,
        *,
        config: SinkConfig | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.spool = spool
        self.breaker = breaker
        self.config = config or SinkConfig()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._batcher = Batcher(self.config.limits)
        self._queues: dict[TopicPartition, deque[_Pending]] = {}
        # What survived a restart in the spool is durable: its offsets are not taken again.
        self._durable: dict[TopicPartition, int] = spool.durable_offsets()
        self._added: dict[TopicPartition, int] = dict(self._durable)
        self._stalled: set[TopicPartition] = set()
        self._backpressure = False
        self._drain_stored: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._drain_lock = asyncio.Lock()
        self._n = SinkStats()

    # -- adding ----------------------------------------------------------------------------

    def add(self, topic: str, partition: int, offset: int, records: Sequence[SinkRecord]) -> None:
        """Take the sink records of one Kafka record (see the module docstring)."""
        tp = (topic, partition)
        if offset <= self._added.get(tp, -1):
            self._n.redelivered_skipped += 1
            return
        self._added[tp] = offset
        self._n.received += len(records)
        if not records and tp not in self._queues and self._batcher.get(tp) is None:
            self._durable[tp] = offset  # nothing of this partition is on its way
            return
        closed = self._batcher.add(topic, partition, offset, records, self._clock())
        if closed is not None:
            self._enqueue(closed)

    def add_events(
        self,
        topic: str,
        partition: int,
        offset: int,
        events: Sequence[ProbeEvent],
        received: Sequence[bytes] | None = None,
    ) -> int:
        """:meth:`add` the events at or above ``config.min_severity``; returns how many.

        ``received``, index for index with ``events``, are the bytes each event was decoded
        from: stored as they are (:func:`~sinks.records.event_record`).
        """
        floor = self.config.min_severity
        if received is None:
            kept = [event_record(e) for e in events if keeps(e, floor)]
        else:
            pairs = zip(events, received, strict=True)  # ValueError on a length mismatch
            kept = [event_record(e, raw) for e, raw in pairs if keeps(e, floor)]
        self._n.filtered += len(events) - len(kept)
        self.add(topic, partition, offset, kept)
        return len(kept)

    def add_alerts(
        self, topic: str, partition: int, offset: int, alerts: Sequence[AlertLike]
    ) -> None:
        """:meth:`add` alert records: every one is kept."""
        self.add(topic, partition, offset, [alert_record(alert) for alert in alerts])

    # -- flushing --------------------------------------------------------------------------

    async def flush_due(self, now: float | None = None) -> FlushResult:
        """Flush the batches due by ``now`` and any queued before; see the module docstring."""
        async with self._flush_lock:
            for batch in self._batcher.due(self._clock() if now is None else now):
                self._enqueue(batch)
            return await self._flush_queues()

    async def flush_all(self) -> FlushResult:
        """Close every open batch and flush it (before shutdown)."""
        return await self.flush_partitions(batch.tp for batch in self._batcher.open_batches())

    async def flush_partitions(self, tps: Iterable[TopicPartition]) -> FlushResult:
        """Close the open batches of ``tps`` and flush (on partitions revoked, before commit)."""
        async with self._flush_lock:
            for tp in list(tps):
                batch = self._batcher.close(tp)
                if batch is not None:
                    self._enqueue(batch)
            return await self._flush_queues()

    def discard(self, tps: Iterable[TopicPartition]) -> None:
        """Forget what is not yet durable of ``tps`` (partitions lost): Kafka redelivers it."""
        for tp in tps:
            self._batcher.discard(tp)
            self._queues.pop(tp, None)
            self._stalled.discard(tp)
            self._added.pop(tp, None)
            self._durable.pop(tp, None)

    def durable_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the highest offset up to which every record is durable."""
        return dict(self._durable)

    async def drain_spool(self, limit: int | None = None) -> int:
        """Upload spooled batches oldest first while the breaker allows; returns how many."""
        drained = 0
        async with self._drain_lock:
            while limit is None or drained < limit:
                head = await asyncio.to_thread(self._spool_head)
                if head is None:
                    break
                if not await self._upload_entry(*head):
                    break
                await asyncio.to_thread(self.spool.pop)
                self._drain_stored.clear()
                self._n.drained_batches += 1
                drained += 1
        return drained

    async def tick(self) -> FlushResult:
        """What a worker's timer calls: :meth:`flush_due`, then a bounded :meth:`drain_spool`."""
        result = await self.flush_due()
        await self.drain_spool(self.config.drain_limit)
        return result

    async def wait_writable(self, poll_s: float = 0.2) -> None:
        """Return once :attr:`backpressure` is off, ticking meanwhile (the agent awaits this)."""
        while self.backpressure:
            await self.tick()
            if self.backpressure:
                await self._sleep(poll_s)

    @property
    def backpressure(self) -> bool:
        """Stop consuming: the spool passed its high-water mark or refused a batch."""
        fill = self.spool.fill_ratio
        if self._backpressure:
            self._backpressure = bool(self._stalled) or fill > self.config.spool_low_water
        else:
            self._backpressure = bool(self._stalled) or fill >= self.config.spool_high_water
        return self._backpressure

    def stats(self) -> SinkStats:
        """A copy of the counters, with the gauges filled in as of now."""
        now = self._clock()
        pending = [p.batch for queue in self._queues.values() for p in queue]
        starts = [b.opened_at for b in (*pending, *self._batcher.open_batches()) if b.records]
        spooled_at = self.spool.oldest_received_at()
        if spooled_at is not None:
            starts.append(spooled_at)
        return self._n.snapshot(
            spool_bytes=self.spool.used_bytes,
            spool_fill_ratio=self.spool.fill_ratio,
            spool_pending_batches=self.spool.pending_entries,
            quarantined_segments=self.spool.quarantined_segments,
            lost_spool_frames=self.spool.lost_frames,
            upload_lag_s=max(0.0, now - min(starts)) if starts else 0.0,
            breaker_state=self.breaker.state,
            backpressure=self.backpressure,
            stalled_batches=sum(len(self._queues.get(tp, ())) for tp in self._stalled),
            open_records=sum(len(b.records) for b in self._batcher.open_batches()),
        )

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, batch: Batch) -> None:
        self._queues.setdefault(batch.tp, deque()).append(_Pending(batch))

    def _render_soon(self, pending: _Pending) -> asyncio.Future[list[RenderedObject]]:
        """Start rendering ``pending`` in a thread, once; the future of its objects."""
        if pending.rendering is None or pending.rendering.cancelled():
            pending.rendering = asyncio.ensure_future(
                asyncio.to_thread(
                    render_objects,
                    pending.batch,
                    prefix=self.config.prefix,
                    compress=self.config.compress,
                )
            )
        return pending.rendering

    async def _flush_queues(self) -> FlushResult:
        result = FlushResult(durable={})
        # Each batch renders while the one before it uploads: one batch ahead, no more.
        order = [pending for queue in self._queues.values() for pending in queue]
        following = {id(a): b for a, b in zip(order, order[1:], strict=False)}
        for tp in list(self._queues):
            queue = self._queues.get(tp)
            while queue:
                pending = queue[0]
                upcoming = following.get(id(pending))
                if upcoming is not None:
                    self._render_soon(upcoming)
                durable = await self._make_durable(pending, result)
                if self._queues.get(tp) is not queue:
                    break  # discarded meanwhile (partition revoked)
                if not durable:
                    self._stalled.add(tp)
                    result.stalled += len(queue)
                    break
                queue.popleft()
                self._durable[tp] = max(self._durable.get(tp, -1), pending.batch.last_offset)
            if queue is not None and not queue and self._queues.get(tp) is queue:
                self._stalled.discard(tp)
                del self._queues[tp]
        result.durable = dict(self._durable)
        return result

    async def _make_durable(self, pending: _Pending, result: FlushResult) -> bool:
        # Shielded: a flush cancelled meanwhile (shutdown) leaves the render running for the
        # next flush, which awaits the same future.
        objects = await asyncio.shield(self._render_soon(pending))
        for obj in objects:
            if obj.key in pending.stored:
                continue
            if not await self._put(obj.key, obj.data, obj.md5):
                break
            pending.stored.add(obj.key)
            result.objects += 1
            result.records += obj.records
            self._n.flushed_objects += 1
            self._n.flushed_records += obj.records
        remaining = [obj for obj in objects if obj.key not in pending.stored]
        if not remaining:
            return True
        batch = pending.batch
        entry = SpoolEntry(
            batch.topic,
            batch.partition,
            batch.first_offset,
            batch.last_offset,
            batch.opened_at,
            tuple((obj.key, obj.data) for obj in remaining),
        )
        try:
            await asyncio.to_thread(self.spool.append, entry)
        except SpoolError as exc:
            self._n.spool_refusals += 1
            _log.warning("spool refused a batch", extra=log_fields(tp=batch.tp, error=str(exc)))
            return False
        pending.stored.update(obj.key for obj in remaining)
        self._n.spooled_batches += 1
        self._n.spooled_records += sum(obj.records for obj in remaining)
        result.spooled += 1
        return True

    def _spool_head(self) -> tuple[SpoolEntry, list[bytes]] | None:
        """The oldest spooled batch and its objects' MD5s, both taken off the event loop."""
        entry = self.spool.head()
        if entry is None:
            return None
        return entry, [
            hashlib.md5(data, usedforsecurity=False).digest() for _, data in entry.objects
        ]

    async def _upload_entry(self, entry: SpoolEntry, md5s: list[bytes]) -> bool:
        for (key, data), md5 in zip(entry.objects, md5s, strict=True):
            if key in self._drain_stored:
                continue
            if not await self._put(key, data, md5):
                return False
            self._drain_stored.add(key)
            self._n.drained_objects += 1
        return True

    async def _put(self, key: str, data: bytes, md5: bytes | None = None) -> bool:
        """One object into the store: True once verified there. Retries bounded, breaker fed."""
        if not self.breaker.try_acquire():
            return False
        started = self._monotonic()
        reported = False
        try:
            error: SinkError | None = None
            for attempt in range(self.config.put_attempts):
                if attempt:
                    self._n.put_retries += 1
                    await self._sleep(self.config.retry_backoff_s * 2 ** (attempt - 1))
                try:
                    await self.store.put(key, data, md5)
                except ChecksumMismatch as exc:
                    self._n.checksum_mismatches += 1
                    error = exc
                except SinkError as exc:
                    error = exc
                    if not exc.retriable:
                        break
                else:
                    self.breaker.on_success(self._monotonic() - started)
                    reported = True
                    return True
            self.breaker.on_failure(self._monotonic() - started)
            reported = True
            self._n.put_failures += 1
            _log.warning(
                "object not stored; it goes to the spool",
                extra=log_fields(key=key, error=type(error).__name__, detail=str(error)),
            )
            return False
        finally:
            if not reported:  # cancelled, or a bug: give the permit back
                self.breaker.release()
