"""The campaign's per-second observation: one :class:`Sample` a second, and the alerts topic.

:class:`Collector` appends one :class:`~pipeline.campaign.raw.Sample` to ``RAW/samples.jsonl``
every ``interval_s``:

- ``workers``: each worker's readiness figures (``/v1/health/ready``), the time of a
  ``/v1/metrics/network?window=1m`` GET (``api_latency_ms``) and, every ``metrics_every_s``,
  of a ``/metrics`` GET (a scrape costs the worker real CPU with many series, and Prometheus
  already scrapes every second);
- ``windows``: the 1m window items of one worker every ``windows_every_s`` (bounded by the
  API's page size, 100), each tagged with the ``worker`` that answered;
- ``prometheus``: :data:`~pipeline.campaign._sources.DEFAULT_QUERIES` (or the given ones)
  and ``up:<worker>``;
- ``processes``: RSS and cumulative CPU of each named pid (:meth:`Collector.set_pid` after
  a restart);
- ``queues``: ``spool/<worker>``, ``sink_open/<worker>`` (through Prometheus), ``emitter``
  from the load generator's latest tick, and whatever ``extra_queues`` returns (the
  WebSocket clients' figures).

Every request has a timeout of at most 1 s; a failing source is absent or None and never
stops the collector. Nothing grows with the run's length: each sample goes to disk at once.

:class:`AlertsTail` reads the alerts topic from the beginning with a group-less consumer and
appends one :class:`~pipeline.campaign.raw.AlertSeen` per record to ``RAW/alerts.jsonl``; a
record that does not decode is kept as ``{"invalid": reason, "raw": text}`` so that the
checker sees it (its ids are not valid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer

from pipeline.campaign._sources import (
    DEFAULT_QUERIES,
    ProcessWatch,
    probe_worker,
    query_prometheus,
    sink_queues,
)
from pipeline.campaign.evidence import topic_partitions
from pipeline.campaign.raw import AlertSeen, LoadTick, Sample, append_jsonl
from pipeline.settings import WorkerSettings
from tables.alerting import InvalidAlert, decode_alert

__all__ = ["DEFAULT_QUERIES", "AlertsTail", "Collector"]

_log = logging.getLogger("egresswatch.campaign.collect")

QueueFigures = Mapping[str, Mapping[str, float]]


class Collector:
    def __init__(
        self,
        raw_dir: Path,
        *,
        workers: Mapping[str, str],
        prometheus_url: str | None = None,
        pids: Mapping[str, int] | None = None,
        with_children: frozenset[str] = frozenset(),
        latest_tick: Callable[[], LoadTick | None] | None = None,
        extra_queues: Callable[[], QueueFigures] | None = None,
        queries: Mapping[str, str] = DEFAULT_QUERIES,
        emitter_queue_cap: float | None = None,
        spool_cap_bytes: float | None = float(WorkerSettings().spool_max_bytes),
        interval_s: float = 1.0,
        windows_every_s: float = 5.0,
        metrics_every_s: float = 5.0,
        timeout_s: float = 1.0,
    ) -> None:
        if interval_s <= 0 or not 0 < timeout_s <= 1.0:
            raise ValueError(
                f"interval_s must be > 0 and timeout_s in (0, 1], got {interval_s}, {timeout_s}"
            )
        self.path = raw_dir / "samples.jsonl"
        self.workers = dict(workers)
        self.prometheus_url = prometheus_url
        self.processes = ProcessWatch(pids, with_children=with_children)
        self.latest_tick = latest_tick
        self.extra_queues = extra_queues
        self.queries = dict(queries)
        self.emitter_queue_cap = emitter_queue_cap
        self.spool_cap_bytes = spool_cap_bytes
        self.interval_s = interval_s
        self.windows_every_s = windows_every_s
        self.metrics_every_s = metrics_every_s
        self.samples = 0
        self.late = 0
        """Ticks skipped because a sample took longer than the interval."""
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=32)
        )
        self._task: asyncio.Task[None] | None = None
        self._windows_at = self._metrics_at = float("-inf")

    def set_pid(self, name: str, pid: int | None) -> None:
        """A process was restarted (or is gone: None)."""
        self.processes.set(name, pid)

    def set_worker(self, name: str, base_url: str) -> None:
        self.workers[name] = base_url

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _run(self) -> None:
        next_at = time.time()
        while True:
            try:
                append_jsonl(self.path, await self.sample())
                self.samples += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug in one source must not end the run
                _log.exception("sample failed")
            next_at += self.interval_s
            now = time.time()
            if now > next_at:  # fell behind: skip the ticks missed, count them
                missed = int((now - next_at) / self.interval_s) + 1
                self.late += missed
                next_at += missed * self.interval_s
            await asyncio.sleep(next_at - now)

    async def sample(self) -> Sample:
        """Read every source once (concurrently) and return the sample."""
        started = time.time()
        want_windows = started - self._windows_at >= self.windows_every_s - 1e-3
        want_metrics = started - self._metrics_at >= self.metrics_every_s - 1e-3
        names = list(self.workers)
        instances = {urlsplit(url).netloc: name for name, url in self.workers.items()}
        probes = [
            probe_worker(
                self._client,
                self.workers[name].rstrip("/"),
                want_windows=want_windows,
                want_metrics=want_metrics,
            )
            for name in names
        ]
        sources: list[Any] = list(probes)
        if self.prometheus_url:
            url = self.prometheus_url.rstrip("/")
            sources.append(query_prometheus(self._client, url, self.queries, instances))
            sources.append(sink_queues(self._client, url, instances, self.spool_cap_bytes))
        answers = await asyncio.gather(*sources)
        worker_results = answers[: len(names)]
        prom_values: dict[str, float | None] = {}
        sink: dict[str, dict[str, float]] = {}
        if self.prometheus_url:
            prom_values, sink = answers[len(names) :]
        sample = Sample(t=started, prometheus=prom_values, processes=self.processes.read())
        for name, (figures, items) in zip(names, worker_results, strict=True):
            sample.workers[name] = figures
            if items and not sample.windows:
                sample.windows = [{**item, "worker": name} for item in items]
        if want_windows:
            self._windows_at = started
        if want_metrics:
            self._metrics_at = started
        sample.queues = {**sink, **self._emitter_queue(), **self._extra_queues()}
        return sample

    def _emitter_queue(self) -> dict[str, dict[str, float]]:
        tick = self.latest_tick() if self.latest_tick is not None else None
        if tick is None or not tick.emitter:
            return {}
        counters = tick.emitter
        queue: dict[str, float] = {
            "depth": float(counters.get("queue_depth", 0)),
            "drops": float(sum(v for k, v in counters.items() if k.startswith("dropped_"))),
            "at": tick.t,
        }
        if self.emitter_queue_cap:
            queue["cap"] = float(self.emitter_queue_cap)
        return {"emitter": queue}

    def _extra_queues(self) -> dict[str, dict[str, float]]:
        if self.extra_queues is None:
            return {}
        try:
            return {name: dict(figures) for name, figures in self.extra_queues().items()}
        except Exception:  # noqa: BLE001 - an observer's bug is not the run's end
            _log.exception("extra queue figures failed")
            return {}


class AlertsTail:
    """``RAW/alerts.jsonl`` from the alerts topic, every record from the first offset on."""

    def __init__(self, bootstrap: str, topic: str, raw_dir: Path, *, poll_ms: int = 500) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.path = raw_dir / "alerts.jsonl"
        self.poll_ms = poll_ms
        self.seen = 0
        self.invalid = 0
        self.restarts = 0
        self._positions: dict[int, int] = {}
        """Next offset per partition, so a restarted consumer neither skips nor repeats."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka down is an incident: retry
                _log.warning("alerts tail restarting after %s: %s", type(exc).__name__, exc)
                self.restarts += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=5_000,
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.topic, wait_s=30)
            consumer.assign(partitions)
            for tp in partitions:
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
            fresh = [tp for tp in partitions if tp.partition not in self._positions]
            if fresh:  # with no argument it would rewind every partition
                await consumer.seek_to_beginning(*fresh)
            while True:
                batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=500)
                for tp, records in batches.items():
                    for record in records:
                        self._record(record.value or b"")
                        self._positions[tp.partition] = record.offset + 1
        finally:
            await consumer.stop()

    def _record(self, value: bytes) -> None:
        received_at = time.time()
        try:
            record: dict[str, Any] = msgspec.to_builtins(decode_alert(value))
        except InvalidAlert as exc:
            self.invalid += 1
            record = {"invalid": str(exc)[:300], "raw": value[:2000].decode("utf-8", "replace")}
        append_jsonl(self.path, AlertSeen(received_at=received_at, record=record))
        self.seen += 1
