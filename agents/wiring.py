"""Wire the streams of the Faust app to the tables: the ingest agent and the worker's tick.

The agents hold no state of their own; everything they touch lives in :class:`Runtime`,
built once per worker from the settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.registry import CollectorRegistry

from agents.cellwriter import CellWriter
from agents.follower import ChangelogFollower
from agents.housekeeping import Housekeeper
from agents.ingest import IngestProcessor, split_cell_key
from agents.sinking import AckLedger, build_sink_writer, ensure_bucket_forever, sink_state
from pipeline.app import EgressApp
from pipeline.validation import EventValidator
from sinks import SinkWriter
from sinks.metrics import SinkCollector
from tables.alerting import AlertEngine, InvalidAlert, decode_alert, encode_alert
from tables.metrics import EgressMetrics
from tables.query import SummaryView
from tables.resilience import resilience_state
from tables.slo_rules import DEFAULT_RULES_FILE, load_rules
from tables.windows import Watermark

__all__ = ["Runtime", "build_runtime", "register"]

_log = logging.getLogger("egresswatch.agents")


@dataclass
class Runtime:
    """Everything a worker's agents share (one per worker process)."""

    ctx: EgressApp
    metrics: EgressMetrics
    processor: IngestProcessor
    view: SummaryView
    follower: ChangelogFollower
    housekeeper: Housekeeper
    engine: AlertEngine
    sink: SinkWriter
    ledger: AckLedger
    cell_writer: CellWriter
    started_at: float = field(default_factory=time.time)
    alerts_sent: int = 0
    alerts_evaluated_at: float = 0.0
    stopping: bool = False

    async def drain(self) -> None:
        """Before the consumer stops: make everything merged durable, ack it, commit it.

        After this the agent merges nothing more, so no record is both in the changelog
        and uncommitted: a restart neither loses nor double-counts an event.
        """
        self.stopping = True
        self.cell_writer.flush()
        await self.sink.flush_all()
        await self.release_durable()
        app: Any = self.ctx.app
        await app.commit(app.consumer.assignment())

    tombstones_sent: int = 0

    async def release_durable(self) -> None:
        """Ack every held record whose cells are written and whose critical events are durable."""
        await self.ledger.release(self.cell_writer.ackable(self.sink.durable_offsets()))

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def readiness(self) -> list[str]:
        reasons = []
        app: Any = self.ctx.app
        if app.rebalancing or app.rebalancing_count < 1:
            reasons.append("Kafka: partition assignment in progress")
        elif not app.tables.recovery.completed.is_set():
            reasons.append("tables: recovering the cells table from its changelog")
        if self.sink.backpressure:
            reasons.append("sink: spool above its high-water mark, consumption paused")
        if not self.follower.caught_up.is_set():
            reasons.append("tables: window view not recovered from the changelog yet")
        return reasons

    def resilience_state(self, service: str | None = None) -> dict[str, Any]:
        return {
            "upstreams": resilience_state(self.view, service=service),  # sorted
            "pipeline": {"view": self.view.counters(), "sink": sink_state(self.sink)},
        }

    def pipeline_stats(self) -> dict[str, int]:
        """Pipeline figures for health and tests: what this worker holds and has done."""
        return {
            "records": self.processor.records,
            "dead_letters": self.processor.dead_letters,
            "cells_local": len(self.ctx.cells.data),
            "cells_view": len(self.view),
            "changelog_records": self.follower.records,
            "tombstones_sent": self.tombstones_sent,
            "changelog_writes": self.cell_writer.changelog_writes,
            "held_acks": self.ledger.held(),
            "alerts_sent": self.alerts_sent,
            "owned_partitions": len(self.owned_partitions()),
        }

    def owned_partitions(self) -> set[int]:
        """Probe-topic partitions actively assigned to this worker right now."""
        topic = self.ctx.settings.probe_topic
        assignor = self.ctx.app.assignor
        return {tp.partition for tp in assignor.assigned_actives() if tp.topic == topic}


def build_runtime(ctx: EgressApp, *, metrics: EgressMetrics | None = None) -> Runtime:
    settings = ctx.settings
    metrics = metrics or EgressMetrics()
    watermark = Watermark()
    processor = IngestProcessor(
        metrics=metrics, validator=EventValidator("ingest"), watermark=watermark
    )
    view = SummaryView(max_cells=settings.view_max_cells)
    follower = ChangelogFollower(
        bootstrap=settings.kafka_bootstrap,
        topic=ctx.cells_changelog_topic,
        view=view,
        split_key=split_cell_key,
    )
    engine = AlertEngine(load_rules(settings.slo_rules_path or DEFAULT_RULES_FILE))
    housekeeper = Housekeeper(
        view=view,
        follower=follower,
        watermark=watermark,
        engine=engine,
        num_partitions=settings.probe_partitions,
    )
    sink = build_sink_writer(settings)
    metrics.registry.register(SinkCollector(sink))
    cell_writer = CellWriter(ctx.cells, settings.probe_topic)
    return Runtime(
        ctx, metrics, processor, view, follower, housekeeper, engine, sink, AckLedger(), cell_writer
    )


def register(runtime: Runtime) -> None:
    """Attach the ingest agent, the follower and the tick timer to the Faust app."""
    ctx = runtime.ctx
    app = ctx.app
    processor = runtime.processor

    writer = runtime.sink
    ledger = runtime.ledger
    cell_writer = runtime.cell_writer

    @app.agent(ctx.probe_topic, name="egresswatch.ingest")
    async def ingest(stream: Any) -> AsyncIterator[None]:
        # noack: a record is acked (and its offset committed) only once its critical
        # events are durable in the store or the spool (agents/sinking.py).
        async for event in stream.noack().events():
            if runtime.stopping:
                continue  # not merged, not acked: delivered again after the restart
            if writer.backpressure:
                await writer.wait_writable()  # stop consuming until the spool drains
                cell_writer.flush()
                await runtime.release_durable()
            message = event.message
            result = processor.process(
                message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            cell_writer.merge(message.topic, message.partition, message.offset, result.cells)
            for reason, letter in result.dead_letters:
                await ctx.dead_letter_topic.send(key=reason, value=letter)
            # Every record, even one with nothing critical, so its offset becomes ackable.
            writer.add_events(
                message.topic, message.partition, message.offset, result.events, result.lines
            )
            ledger.hold(stream, event)
            yield None

    @app.agent(ctx.alerts_topic, name="egresswatch.alerts-sink")
    async def alerts_sink(stream: Any) -> AsyncIterator[None]:
        async for event in stream.noack().events():
            message = event.message
            try:
                alerts = [decode_alert(message.value)]
            except (InvalidAlert, ValueError):
                alerts = []  # not ours to judge here; the offset must still move on
            writer.add_alerts(message.topic, message.partition, message.offset, alerts)
            ledger.hold(stream, event)
            yield None

    @app.timer(0.5)  # type: ignore[untyped-decorator]
    async def flush_cells() -> None:
        cell_writer.flush()

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def sink_tick() -> None:
        await writer.tick()
        await runtime.release_durable()

    @app.task  # type: ignore[untyped-decorator]
    async def create_bucket() -> None:
        await ensure_bucket_forever(writer)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        tps = [(tp.topic, tp.partition) for tp in revoked]
        # Make what we hold durable and ack it before the new owner starts from the commit.
        cell_writer.flush()
        await writer.flush_partitions(tps)
        await runtime.release_durable()
        writer.discard(tps)
        ledger.forget(tps)
        cell_writer.forget(tps)

    @app.task  # type: ignore[untyped-decorator]
    async def start_follower() -> None:
        runtime.follower.start()

    @app.timer(ctx.settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        await _tick(runtime)


async def _tick(runtime: Runtime) -> None:
    ctx = runtime.ctx
    cells = ctx.cells
    owned = runtime.owned_partitions()
    housekeeper = runtime.housekeeper
    doomed = housekeeper.expired_local_cells(list(cells.data.keys()), owned)
    for name, partition in doomed:
        runtime.cell_writer.delete(name, partition)
        runtime.tombstones_sent += 1
    housekeeper.expire_view()
    if not runtime.follower.caught_up.is_set():
        return  # alerts on a half-read view would fire and resolve spuriously
    now = time.monotonic()
    if now - runtime.alerts_evaluated_at < ctx.settings.alert_interval_s:
        return
    runtime.alerts_evaluated_at = now
    for record in housekeeper.evaluate_alerts(owned):
        await ctx.alerts_topic.send(key=record.alert_id.encode(), value=encode_alert(record))
        runtime.alerts_sent += 1
