"""The Faust app: one factory, settings passed in, no module-level state.

What Faust is used for here, and what it is deliberately *not* used for (see
docs/architecture.md and the measured findings in infra notes):

* used: the consumer group over the probe topic (partition assignment, rebalances,
  offset commits), one plain (non-windowed) changelog-backed table of window *cells*
  keyed ``"<service>|<method>|<route>@<bucket_start>"``, its recovery after restart or
  rebalance, and its producer for dead letters and alerts.
* not used: Faust windowed tables. Their expiry runs on wall clock, forgets windows
  restored from the changelog, and ``on_window_close`` fires for one partition only.
  Windows here are plain keys whose bucket is computed from event time
  (``tables.windows``), and expiry is ours (``agents.housekeeping``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import faust

from pipeline.settings import WorkerSettings
from pipeline.topics import ALERTS_SPEC, DEAD_LETTER_SPEC, PROBE_EVENTS_SPEC, TopicSpec

__all__ = ["CELLS_TABLE", "EgressApp", "changelog_topic", "create_app", "topic_specs"]

CELLS_TABLE = "window-cells"


@dataclass(frozen=True)
class EgressApp:
    """The Faust app and the handles the agents need."""

    settings: WorkerSettings
    app: faust.App
    probe_topic: Any  # faust.TopicT, raw bytes in
    dead_letter_topic: Any
    alerts_topic: Any
    cells: Any  # faust.Table[str, WindowAggregate]

    @property
    def cells_changelog_topic(self) -> str:
        return changelog_topic(self.settings)


def topic_specs(settings: WorkerSettings) -> list[TopicSpec]:
    """Source and output topics, created up front (auto-creation is off on purpose): the
    default specs of :mod:`pipeline.topics` under this worker's names and partition count."""
    return [
        replace(PROBE_EVENTS_SPEC, name=settings.probe_topic, partitions=settings.probe_partitions),
        replace(DEAD_LETTER_SPEC, name=settings.dead_letter_topic),
        replace(ALERTS_SPEC, name=settings.alerts_topic),
        # Created here rather than by Faust: workers starting together otherwise race on
        # its metadata and one crashes with "changelog topic has 0 partitions".
        TopicSpec(
            name=changelog_topic(settings),
            partitions=settings.probe_partitions,
            retention_ms=-1,
            config={"cleanup.policy": "compact"},
        ),
    ]


def changelog_topic(settings: WorkerSettings) -> str:
    """Faust's name for the cells table's changelog."""
    return f"{settings.app_id}-{CELLS_TABLE}-changelog"


def create_app(settings: WorkerSettings) -> EgressApp:
    """Build the app. Agents are attached by :func:`agents.register` (the worker does it)."""
    from tables.aggregate import WindowAggregate

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir),
        # Faust's own aiohttp server stays off: the Starlette app is the only HTTP surface.
        web_enabled=False,
        topic_partitions=settings.probe_partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        producer_acks=-1,
        producer_compression_type=None,
        stream_wait_empty=False,  # a crashed agent must not hang shutdown
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=3600.0,  # Faust's wall-clock window expiry is not used
        logging_config=None,
    )
    probe_topic = app.topic(
        settings.probe_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.probe_partitions,
        internal=False,
    )
    dead_letter_topic = app.topic(
        settings.dead_letter_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    alerts_topic = app.topic(
        settings.alerts_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    cells = app.Table(
        CELLS_TABLE,
        default=None,
        key_type=str,
        value_type=WindowAggregate,
        partitions=settings.probe_partitions,
    )
    return EgressApp(settings, app, probe_topic, dead_letter_topic, alerts_topic, cells)
