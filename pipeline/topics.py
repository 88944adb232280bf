"""Kafka topics of the pipeline, and creating them on purpose.

Topics are declared here and created by :func:`ensure_topics` before anything produces to or
consumes from them. They are never left to broker auto-creation: an auto-created topic gets the
broker's ``num.partitions`` and a Faust agent whose source topic has another partition count
than it declares crashes with ``PartitionsMismatch``. The local broker (``scripts/kafka-local``)
therefore runs with ``auto.create.topics.enable=false``.

``ensure_topics`` creates what is missing and checks what exists: a topic that exists with a
different partition count raises :class:`TopicMismatch` (partitions can only be added, and
adding them re-routes keys, so that is a decision for a person, not for a startup hook). The
configs of an existing topic are not compared or altered.

Run ``python -m pipeline.topics [BOOTSTRAP]`` to create :data:`DEFAULT_TOPICS`.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

__all__ = [
    "ALERTS_SPEC",
    "ALERTS_TOPIC",
    "DEAD_LETTER_SPEC",
    "DEAD_LETTER_TOPIC",
    "DEFAULT_TOPICS",
    "PROBE_EVENTS_SPEC",
    "PROBE_EVENTS_TOPIC",
    "TopicMismatch",
    "TopicSpec",
    "ensure_topics",
]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

_LEGAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TOPIC_ALREADY_EXISTS: Final = 36


@dataclass(frozen=True)
class TopicSpec:
    """What a topic must look like. ``retention_ms=-1`` keeps records forever.

    ``config`` holds any other topic-level settings (``cleanup.policy``, ``max.message.bytes``
    ...) as strings; retention goes in ``retention_ms``, not in ``config``.
    """

    name: str
    partitions: int
    retention_ms: int
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _LEGAL_NAME.fullmatch(self.name) or self.name in {".", ".."}:
            raise ValueError(f"illegal Kafka topic name: {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be >= 1, got {self.partitions}")
        if self.retention_ms < 1 and self.retention_ms != -1:
            raise ValueError(
                f"{self.name}: retention_ms must be > 0 or -1, got {self.retention_ms}"
            )
        if "retention.ms" in self.config:
            raise ValueError(f"{self.name}: set retention with retention_ms, not config")
        # Freeze the mapping too: a frozen spec must not change under a caller that kept a ref.
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def __hash__(self) -> int:
        return hash((self.name, self.partitions, self.retention_ms, frozenset(self.config.items())))

    def topic_config(self) -> dict[str, str]:
        """The topic-level configs to create the topic with."""
        return {"retention.ms": str(self.retention_ms), **self.config}


PROBE_EVENTS_TOPIC: Final = "egresswatch.probe-events.v1"
DEAD_LETTER_TOPIC: Final = "egresswatch.dead-letters.v1"
ALERTS_TOPIC: Final = "egresswatch.alerts.v1"

# A batch envelope record is up to 512 KiB by default (KafkaEmitter.max_record_bytes); the
# topic takes up to 8 MiB so that a larger setting is not refused by the broker.
PROBE_EVENTS_SPEC: Final = TopicSpec(
    PROBE_EVENTS_TOPIC,
    partitions=8,
    retention_ms=24 * HOUR_MS,
    config={"max.message.bytes": str(8 * 1024 * 1024)},
)
DEAD_LETTER_SPEC: Final = TopicSpec(DEAD_LETTER_TOPIC, partitions=1, retention_ms=7 * DAY_MS)
ALERTS_SPEC: Final = TopicSpec(ALERTS_TOPIC, partitions=1, retention_ms=7 * DAY_MS)

DEFAULT_TOPICS: Final[tuple[TopicSpec, ...]] = (PROBE_EVENTS_SPEC, DEAD_LETTER_SPEC, ALERTS_SPEC)


class TopicMismatch(Exception):
    """Topics exist with another partition count than their specs declare."""

    def __init__(self, mismatches: Mapping[str, tuple[int, int]]) -> None:
        self.mismatches: dict[str, tuple[int, int]] = dict(mismatches)
        details = ", ".join(
            f"{name} has {actual} partitions, spec declares {expected}"
            for name, (expected, actual) in sorted(self.mismatches.items())
        )
        super().__init__(
            f"topic partition count mismatch: {details} (partitions are never changed "
            "automatically: delete and recreate the topic, or fix the spec)"
        )


def _partition_counts(metadata: Sequence[Any], *, ready_only: bool) -> dict[str, int]:
    """Topic name -> partition count from a Metadata answer. With ``ready_only``, a topic counts
    only once every partition has a leader (right after creation leaders may still be missing).
    """
    counts: dict[str, int] = {}
    for topic in metadata:
        if topic["error_code"] != 0:
            continue
        partitions = topic["partitions"]
        if ready_only and any(p["leader"] < 0 or p["error_code"] != 0 for p in partitions):
            continue
        counts[topic["topic"]] = len(partitions)
    return counts


def _check(specs: Sequence[TopicSpec], counts: Mapping[str, int]) -> None:
    mismatches = {
        spec.name: (spec.partitions, counts[spec.name])
        for spec in specs
        if spec.name in counts and counts[spec.name] != spec.partitions
    }
    if mismatches:
        raise TopicMismatch(mismatches)


async def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create the topics of ``specs`` that are missing; check the partitions of those that exist.

    Returns once every topic exists with the declared partition count and every partition has
    a leader, so a producer or consumer can use them at once. Idempotent, and safe to run
    concurrently from several processes. Raises :class:`TopicMismatch` (before creating anything)
    if a topic exists with another partition count, ``TimeoutError`` after ``timeout_s``, and
    an ``aiokafka.errors.KafkaError`` if the broker refuses a creation.

    Metadata is always read for *all* topics: a Metadata request that names a topic may make a
    broker with auto-creation on create it, with the wrong partition count.
    """
    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        if by_name.setdefault(spec.name, spec) != spec:
            raise ValueError(f"two different specs for topic {spec.name}")
    wanted = list(by_name.values())
    if not wanted:
        return

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="egresswatch-ensure-topics",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            counts = _partition_counts(await admin.describe_topics(), ready_only=False)
            _check(wanted, counts)
            missing = [spec for spec in wanted if spec.name not in counts]
            if missing:
                await _create(admin, missing, replication_factor, timeout_s)
            # Wait until every topic is visible with leaders, and re-check: a concurrent creator
            # may have won the race with another partition count.
            while True:
                ready = _partition_counts(await admin.describe_topics(), ready_only=True)
                _check(wanted, ready)
                if all(spec.name in ready for spec in wanted):
                    return
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient,
    specs: Sequence[TopicSpec],
    replication_factor: int,
    timeout_s: float,
) -> None:
    new_topics = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication_factor,
            topic_configs=spec.topic_config(),
        )
        for spec in specs
    ]
    response = await admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
    for result in response.topic_errors:
        # v0: (topic, error_code); v1+: (topic, error_code, error_message)
        topic, code = result[0], result[1]
        message = result[2] if len(result) > 2 else None
        if code in (0, _TOPIC_ALREADY_EXISTS):  # already exists: a concurrent creator won
            continue
        raise for_code(code)(f"creating topic {topic}: {message or 'refused'}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.topics [BOOTSTRAP]``: create the default topics."""
    args = list(sys.argv[1:] if argv is None else argv)
    bootstrap = args[0] if args else "127.0.0.1:19092"
    try:
        asyncio.run(ensure_topics(bootstrap, DEFAULT_TOPICS))
    except TopicMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for spec in DEFAULT_TOPICS:
        print(f"{spec.name}: {spec.partitions} partitions, retention.ms={spec.retention_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
