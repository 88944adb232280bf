"""End-of-run evidence, read once after the drain: the probe topic, the dead letters, RGW.

- :func:`wait_sink_settled`: poll the workers until every sink has nothing left to upload
  (spool empty, no open or stalled batch, no record waiting for its ack, ``records`` steady),
  or the timeout; returns what it saw. Call it before :func:`read_rgw`.
- :func:`read_probe_topic`: every record of the probe topic from the beginning to the end
  offsets taken at the start (group-less consumer, all partitions): one
  :class:`~pipeline.campaign.raw.KafkaEvent` per valid event to ``kafka_events.jsonl``
  (streamed), and a :class:`~pipeline.campaign.raw.KafkaSummary` (records, events, invalid
  events and records, dead letters by reason from the dead-letter topic) to
  ``kafka_summary.json``.
- :func:`read_rgw`: the independent listing (``rgw_objects.jsonl``, ``rgw_listing.jsonl``)
  and ``egresswatch replay`` per service (``rgw_replay.jsonl``); see
  :mod:`pipeline.campaign._rgw_evidence`. Also writes what it did to ``rgw_read.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents.deadletter import decode_dead_letter
from pipeline.campaign._jsonl_out import JsonlOut
from pipeline.campaign._rgw_evidence import read_listing, read_replay
from pipeline.campaign._sources import metric_values
from pipeline.campaign.raw import KafkaEvent, KafkaSummary, write_json
from pipeline.envelope import InvalidEnvelope, decode_batch

__all__ = [
    "EvidenceError",
    "read_probe_topic",
    "read_rgw",
    "topic_partitions",
    "wait_sink_settled",
]

_SINK_GAUGES = frozenset(
    {
        "egresswatch_sink_spool_batches",
        "egresswatch_sink_spool_bytes",
        "egresswatch_sink_open_records",
        "egresswatch_sink_stalled_batches",
        "egresswatch_sink_upload_lag_seconds",
    }
)


class EvidenceError(RuntimeError):
    """Evidence could not be read whole (a topic missing, its end never reached)."""


# ------------------------------------------------------------------------------ settling


async def _sink_figures(client: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    try:
        ready = await client.get(f"{base_url}/v1/health/ready")
        metrics = await client.get(f"{base_url}/metrics")
    except (httpx.HTTPError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    figures: dict[str, Any] = {}
    try:
        pipeline = ready.json().get("pipeline", {})
        figures["records"] = pipeline.get("records")
        figures["held_acks"] = pipeline.get("held_acks")
    except (ValueError, AttributeError):
        figures["error"] = f"/v1/health/ready answered {ready.status_code}"
    values = metric_values(metrics.content, _SINK_GAUGES)
    figures.update({k.removeprefix("egresswatch_sink_"): v for k, v in values.items()})
    return figures


def _settled(figures: dict[str, Any]) -> bool:
    pending = ("spool_batches", "spool_bytes", "open_records", "stalled_batches", "held_acks")
    return "error" not in figures and all(figures.get(k) == 0 for k in pending)


async def wait_sink_settled(
    workers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the polling ends in a result, not a cancellation
    *,
    poll_s: float = 1.0,
    steady_polls: int = 3,
) -> dict[str, Any]:
    """Wait until every worker's sink is idle for ``steady_polls`` polls in a row.

    Returns ``{"settled", "waited_s", "polls", "workers": {name: figures}}``; a worker that
    does not answer is not settled (so a dead worker makes this wait the whole timeout).
    """
    started = time.monotonic()
    steady = polls = 0
    last: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            polls += 1
            names = list(workers)
            seen = await asyncio.gather(
                *(_sink_figures(client, workers[n].rstrip("/")) for n in names)
            )
            now = dict(zip(names, seen, strict=True))
            same_records = all(
                last.get(n, {}).get("records") == f.get("records") for n, f in now.items()
            )
            idle = all(_settled(f) for f in now.values())
            steady = steady + 1 if idle and same_records else 0
            last = now
            waited = time.monotonic() - started
            if steady >= steady_polls or waited >= timeout:
                return {
                    "settled": steady >= steady_polls,
                    "waited_s": round(waited, 3),
                    "polls": polls,
                    "workers": now,
                }
            await asyncio.sleep(poll_s)


# ---------------------------------------------------------------------------------- Kafka


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, *, wait_s: float = 10.0
) -> list[TopicPartition]:
    """Every partition of ``topic``; raises :class:`EvidenceError` if it has none."""
    deadline = time.monotonic() + wait_s
    while True:
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            return [TopicPartition(topic, p) for p in sorted(numbers)]
        if time.monotonic() > deadline:
            raise EvidenceError(f"topic {topic!r} does not exist (no partitions in {wait_s} s)")
        # A group-less consumer only learns topics from a full metadata refresh (as the
        # live feed does it).
        await consumer._client.force_metadata_update()  # noqa: SLF001
        await asyncio.sleep(0.2)


async def _records(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its beginning to the end offsets taken now."""
    tps = await topic_partitions(consumer, topic)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    deadline = time.monotonic() + timeout_s
    remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
    while remaining:
        if time.monotonic() > deadline:
            raise EvidenceError(f"{topic}: end offsets not reached in {timeout_s} s")
        batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=2000)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        # Positions, not the last offsets seen: gaps (control records) are skipped too.
        remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}


async def read_probe_topic(
    bootstrap: str, topic: str, dlq_topic: str, raw_dir: Path, *, timeout_s: float = 300.0
) -> KafkaSummary:
    """Read the probe and dead-letter topics whole; write the events and the summary."""
    counts = Counter[str]()
    reasons = Counter[str]()
    end_offsets: dict[str, int] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 2**20,
    )
    await consumer.start()
    try:
        with JsonlOut(raw_dir / "kafka_events.jsonl", mode="replace") as out:
            async for record in _records(consumer, topic, timeout_s):
                counts["records"] += 1
                end_offsets[f"{topic}/{record.partition}"] = record.offset + 1
                _events_of(record, out, counts)
        consumer.unsubscribe()
        async for record in _records(consumer, dlq_topic, timeout_s):
            counts["dead_letters"] += 1
            try:
                letter, _ = decode_dead_letter(record.value or b"")
                reasons[letter.reason] += 1
            except (msgspec.DecodeError, ValueError):
                reasons["undecodable_dead_letter"] += 1
    finally:
        await consumer.stop()
    summary = KafkaSummary(
        records=counts["records"],
        events=counts["events"],
        invalid_events=counts["invalid_events"],
        invalid_records=counts["invalid_records"],
        dead_letters=counts["dead_letters"],
        dead_letter_reasons=dict(reasons),
        end_offsets=end_offsets,
    )
    write_json(raw_dir / "kafka_summary.json", summary)
    return summary


def _events_of(record: ConsumerRecord[bytes, bytes], out: JsonlOut, counts: Counter[str]) -> None:
    try:
        batch = decode_batch(record.value or b"")
    except InvalidEnvelope:
        counts["invalid_records"] += 1
        return
    counts["invalid_events"] += len(batch.invalid)
    for event in batch.valid:
        counts["events"] += 1
        out.write(
            KafkaEvent(
                request_id=event.request_id,
                trace_id=event.trace_id,
                logical_request_id=event.logical_request_id,
                attempt=event.attempt,
                service=event.service,
                route=event.route,
                severity=event.severity,
                outcome=event.outcome,
                started_at=event.started_at,
                elapsed_ms=event.elapsed_ms,
                partition=record.partition,
                offset=record.offset,
            )
        )


# ------------------------------------------------------------------------------------ RGW


async def read_rgw(
    endpoint: str,
    access_key: str,
    secret_key: str,
    bucket: str,
    prefix: str,
    services: Sequence[str],
    since: float,
    until: float,
    raw_dir: Path,
) -> dict[str, Any]:
    """Both read-backs of RGW (listing, then replay per service); returns and writes what
    each gave to ``rgw_read.json``. A listing that fails leaves its files absent (no
    evidence), never half written."""
    result: dict[str, Any] = {"since": since, "until": until, "prefix": prefix}
    try:
        result["listing"] = await read_listing(
            endpoint, access_key, secret_key, bucket, prefix, raw_dir
        )
    except Exception as exc:  # noqa: BLE001 - the replay half is still worth reading
        result["listing"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["replay"] = await read_replay(
        endpoint, access_key, secret_key, bucket, prefix, services, since, until, raw_dir
    )
    write_json(raw_dir / "rgw_read.json", result)
    return result
