"""Periodic work of a worker: expire old cells, evaluate SLO rules, publish alerts.

Expiry runs on *stream time* (the newest event time seen, from the changelog view and the
local watermarks), never on the wall clock, and it covers cells restored from the
changelog too: the two Faust windowed-table defects this design exists to avoid. The
owner of a cell's partition deletes it from its table and writes the tombstone, so the
changelog (and every worker's view) forgets it as well.

Alert ownership: a per-route target is evaluated by the worker that owns its partition; a
per-service rollup by the worker owning ``partition_for_key(service)``. Every target is
thus evaluated by exactly one worker, whichever partition its events live on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set

from agents.follower import ChangelogFollower
from agents.ingest import split_cell_key
from pipeline.logs import log_fields
from pipeline.partitioning import partition_for_key
from tables.alerting import AlertEngine, AlertRecord
from tables.query import SummaryView, WindowStats
from tables.windows import VIEWS, Watermark, is_expired

__all__ = ["Housekeeper"]

_log = logging.getLogger("egresswatch.housekeeping")


class Housekeeper:
    """Stateless about Kafka: the caller passes owned partitions and applies tombstones."""

    def __init__(
        self,
        *,
        view: SummaryView,
        follower: ChangelogFollower,
        watermark: Watermark,
        engine: AlertEngine | None,
        num_partitions: int,
    ) -> None:
        self._view = view
        self._follower = follower
        self._watermark = watermark
        self._engine = engine
        self._partitions = num_partitions

    def stream_time(self) -> float | None:
        candidates = [t for t in (self._watermark.stream_time(), self._view.stream_time) if t]
        return max(candidates) if candidates else None

    def expired_local_cells(
        self, local_keys: Iterable[str], owned: Set[int]
    ) -> list[tuple[str, int]]:
        """Cells of the local table to delete (cell key, changelog partition)."""
        now = self.stream_time()
        if now is None:
            return []
        doomed = []
        for cell in local_keys:
            key, bucket = split_cell_key(cell)
            if not is_expired(bucket, now):
                continue
            partition = self._owner_of(key)
            if partition in owned:
                doomed.append((cell, partition))
        return doomed

    def expire_view(self) -> int:
        now = self.stream_time()
        if now is None:
            return 0
        removed = self._view.expire(now)
        if removed:
            live = set(self._view.keys())
            for key in [k for k in self._follower.partition_of if k not in live]:
                del self._follower.partition_of[key]
        return removed

    def evaluate_alerts(self, owned: Set[int]) -> list[AlertRecord]:
        if self._engine is None:
            return []
        now = self.stream_time()
        if now is None:
            return []
        stats: list[WindowStats] = []
        services: set[str] = set()
        for key in self._view.keys():
            service = key.split("|", 1)[0]
            services.add(service)
            if self._owner_of(key) not in owned:
                continue
            stats.extend(self._views_of(key, now))
        for service in services:
            if partition_for_key(service, self._partitions) not in owned:
                continue
            for view in VIEWS:
                rollup = self._view.rollup(service, view, end=now)
                if rollup is not None:
                    stats.append(rollup)
        records = self._engine.evaluate(stats)
        for record in records:
            _log.info(
                "alert",
                extra=log_fields(
                    event="alert",
                    status=record.status,
                    rule=record.rule,
                    service=record.service,
                    route=record.route,
                    trace_id=record.trace_id,
                ),
            )
        return records

    def _owner_of(self, key: str) -> int:
        # A key's partition is where its events were consumed (the changelog says which);
        # the emitter's partitioning rule is the fallback for a key not seen there yet.
        partition = self._follower.partition_of.get(key)
        return partition if partition is not None else partition_for_key(key, self._partitions)

    def _views_of(self, key: str, now: float) -> Iterable[WindowStats]:
        for view in VIEWS:
            found = self._view.stats(key, view, end=now)
            if found is not None:
                yield found
