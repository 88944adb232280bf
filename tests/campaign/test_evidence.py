"""End-of-run evidence against the real thing: a worker with an RGW sink on the real Kafka
and the real Ceph RGW; the probe topic, the dead letters and RGW (listing and replay) read
back must hold exactly what was produced, and a damaged object must be reported."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.campaign._rgw_evidence import checksum_ok
from pipeline.campaign._sources import metric_values
from pipeline.campaign.evidence import read_probe_topic, read_rgw, wait_sink_settled
from pipeline.campaign.garbage import produce_garbage
from pipeline.campaign.raw import (
    KafkaEvent,
    KafkaSummary,
    StoredEvent,
    StoredObject,
    read_json,
    read_jsonl,
)
from pipeline.schema import ProbeEvent
from tests.eventgen import make_event, produce
from tests.integration.test_worker import _create_topics
from tests.rgw import S3Endpoint, open_s3fs
from tests.workers import Topics, start_worker

PARTITIONS = 4
PREFIX = "campaign/evidence-test"


def _events(n: int, base: float, rng: random.Random) -> list[ProbeEvent]:
    """About a quarter critical (503s), over two services."""
    return [
        make_event(
            service=("checkout", "billing")[i % 2],
            route=f"/r{i % 5}",
            started_at=base + i * 0.01,
            elapsed_ms=rng.uniform(5, 50),
            status_code=503 if rng.random() < 0.25 else 200,
            rng=rng,
        )
        for i in range(n)
    ]


def _damaged_key(started_at: float) -> str:
    moment = datetime.fromtimestamp(started_at, UTC)
    return (
        f"{PREFIX}/events/service=damaged/date={moment:%Y-%m-%d}/hour={moment:%H}/t.probe+0+0.jsonl"
    )


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_evidence_reads_back_exactly_what_was_produced(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = time.time() - 30
    events = _events(400, base, random.Random(5))
    worker = start_worker(
        kafka_bootstrap,
        topics,
        app_id=f"{topics.prefix}-ev",
        data_dir=tmp_path / "worker",
        extra_env={
            "EGRESSWATCH_S3_ENDPOINT": s3_endpoint.url,
            "EGRESSWATCH_S3_ACCESS_KEY": s3_endpoint.access_key,
            "EGRESSWATCH_S3_SECRET_KEY": s3_endpoint.secret_key,
            "EGRESSWATCH_S3_BUCKET": s3_bucket,
            "EGRESSWATCH_SINK_PREFIX": PREFIX,
            "EGRESSWATCH_SINK_IDLE_S": "0.5",
        },
    )
    raw = tmp_path / "raw"
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS)
        await produce_garbage(kafka_bootstrap, topics.probe, 4)
        # A damaged object where the sink would put one (bad JSON on its second line).
        async with open_s3fs(s3_endpoint) as fs:
            await fs._pipe_file(
                f"{s3_bucket}/{_damaged_key(base)}",
                b'{"request_id": "x"}\n{not json\n',  # a field missing, then bad JSON
            )
        workers = {"w1": f"http://127.0.0.1:{worker.port}"}
        settled = await wait_sink_settled(workers, timeout=40, poll_s=0.5)
        assert settled["settled"], settled
        assert settled["workers"]["w1"]["records"] >= 1
    finally:
        worker.stop()

    summary = await read_probe_topic(kafka_bootstrap, topics.probe, topics.dead_letters, raw)
    assert summary == read_json(raw / "kafka_summary.json", KafkaSummary)
    kafka = list(read_jsonl(raw / "kafka_events.jsonl", KafkaEvent))
    assert Counter(e.request_id for e in kafka) == Counter(e.request_id for e in events)
    assert summary.events == len(events) and summary.invalid_events == 1  # garbage shape 4
    assert summary.invalid_records == 3  # the three whole-record garbage shapes
    assert summary.dead_letters == 4 and sum(summary.dead_letter_reasons.values()) == 4
    by_id = {e.request_id: e for e in events}
    assert all(k.trace_id == by_id[k.request_id].trace_id for k in kafka)

    critical = {e.request_id for e in events if e.severity == "critical"}
    services = ["checkout", "billing", "damaged", "nosuch"]
    result = await read_rgw(
        s3_endpoint.url,
        s3_endpoint.access_key,
        s3_endpoint.secret_key,
        s3_bucket,
        PREFIX,
        services,
        base - 60,
        time.time() + 60,
        raw,
    )
    listing = list(read_jsonl(raw / "rgw_listing.jsonl", StoredEvent))
    good = [s for s in listing if s.service != "damaged" and s.severity != "damaged"]
    assert Counter(s.request_id for s in good) == Counter(critical)
    assert all(s.key.startswith(f"{PREFIX}/events/service={s.service}/") for s in good)
    damaged = [s for s in listing if s.key == _damaged_key(base)]
    assert [(s.request_id, s.severity) for s in damaged] == [("", "damaged")] * 2
    objects = list(read_jsonl(raw / "rgw_objects.jsonl", StoredObject))
    assert objects and all(o.checksum_ok is True for o in objects)
    assert result["listing"]["damaged_lines"] == 2

    replay = list(read_jsonl(raw / "rgw_replay.jsonl", StoredEvent))
    assert Counter(s.request_id for s in replay) == Counter(critical)
    assert all(s.key == "" for s in replay)
    status = result["replay"]
    assert status["checkout"]["exit_code"] == 0 and status["billing"]["exit_code"] == 0
    assert status["nosuch"]["exit_code"] == 3 and "error" not in status["nosuch"]
    assert status["damaged"]["exit_code"] == 5 and "damaged object" in status["damaged"]["error"]


def test_checksum_ok_compares_plain_md5_etags_only() -> None:
    body = b"line\n"
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert checksum_ok(f'"{md5}"', body) is True
    assert checksum_ok(f'"{md5}"', body + b"x") is False
    assert checksum_ok(f'"{md5}-2"', body) is None  # multipart: not an MD5 of the body


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        max_size=8,
    )
)
def test_metric_values_reads_unlabelled_samples(values: dict[str, float]) -> None:
    text = "# HELP x y\n" + "".join(
        f'{name}{{a="1"}} 123\n{name} {value!r}\n' for name, value in values.items()
    )
    assert metric_values(text.encode(), frozenset(values)) == values
