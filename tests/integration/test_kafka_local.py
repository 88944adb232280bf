"""The local Kafka that scripts/kafka-local runs is a real broker that does what the pipeline needs.

Round trips with aiokafka (idempotent producer with acks=all, consumer groups that resume after
committed offsets, transactions), ``ensure_topics`` against the broker, and the script's own
contract (one ``KAFKA_BOOTSTRAP`` line, idempotent ``up``, ``status`` exit codes).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.topics import DAY_MS, HOUR_MS, TopicMismatch, TopicSpec, ensure_topics
from tests.conftest import MakeTopic, kafka_local, parse_bootstrap
from tests.ports import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 60  # inner bound for every wait on the broker; pytest-timeout (120 s) is the outer


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


async def consume(consumer: AIOKafkaConsumer, count: int) -> list[tuple[int, int, bytes, bytes]]:
    """Read exactly ``count`` records: (partition, offset, key, value), in arrival order."""
    got: list[tuple[int, int, bytes, bytes]] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend((r.partition, r.offset, r.key, r.value) for r in records)
    assert len(got) == count, got
    return got


async def test_produce_consume_round_trip(kafka_bootstrap: str, kafka_topic: MakeTopic) -> None:
    topic = await kafka_topic(partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        async with asyncio.timeout(DEADLINE_S):
            futures = [
                await producer.send(topic, f"v{i}".encode(), key=f"k{i % 7}".encode())
                for i in range(200)
            ]
            sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got = await consume(consumer, 200)
    finally:
        await consumer.stop()

    assert sorted(value for _, _, _, value in got) == sorted(f"v{i}".encode() for i in range(200))
    # Where the broker said each record went is where the consumer found it.
    placed = {(md.partition, md.offset) for md in sent}
    assert {(partition, offset) for partition, offset, _, _ in got} == placed
    # One key, one partition; per partition, send order is kept and offsets have no gaps.
    partitions_of_key: defaultdict[bytes, set[int]] = defaultdict(set)
    per_partition: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for partition, offset, key, value in got:
        partitions_of_key[key].add(partition)
        per_partition[partition].append((offset, int(value[1:])))
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert len(per_partition) > 1  # 7 keys over 3 partitions
    for records in per_partition.values():
        offsets = [offset for offset, _ in records]
        assert offsets == list(range(len(records)))
        sequence = [i for _, i in records]
        assert sequence == sorted(sequence)


async def test_consumer_group_resumes_after_committed_offsets(
    kafka_bootstrap: str, kafka_topic: MakeTopic
) -> None:
    topic = await kafka_topic(partitions=2)
    group = unique("test-group")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"{i}".encode(), key=f"k{i}".encode())

        first = member()
        await first.start()
        try:
            got = await consume(first, 10)
            await first.commit()
            committed = {
                partition: await first.committed(TopicPartition(topic, partition))
                for partition in (0, 1)
            }
        finally:
            await first.stop()  # leaves the group: the next member gets the partitions at once
        assert sorted(int(v) for _, _, _, v in got) == list(range(10))
        assert sum(committed.values()) == 10

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            stored = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert {tp.partition: om.offset for tp, om in stored.items()} == committed

        for i in range(10, 15):
            await producer.send_and_wait(topic, f"{i}".encode(), key=f"k{i}".encode())

        second = member()
        await second.start()
        try:
            resumed = await consume(second, 5)
            # Nothing before the committed offsets comes back, nothing else is pending.
            extra = await second.getmany(timeout_ms=1000)
        finally:
            await second.stop()
    finally:
        await producer.stop()

    assert sorted(int(v) for _, _, _, v in resumed) == list(range(10, 15))
    assert all(offset >= committed[partition] for partition, offset, _, _ in resumed)
    assert not any(extra.values())


async def test_transactions_hide_aborted_records(
    kafka_bootstrap: str, kafka_topic: MakeTopic
) -> None:
    """The transaction state log (replication factor 1) works: read_committed skips aborts."""
    topic = await kafka_topic(partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique("test-tx"), acks="all"
    )
    await producer.start()
    try:
        async with asyncio.timeout(DEADLINE_S):
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-1")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        got = await consume(consumer, 2)
    finally:
        await consumer.stop()
    assert [value for _, _, _, value in got] == [b"committed-1", b"committed-2"]


async def describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (partition count, topic configs) as the broker reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        metadata = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names if name in metadata]
        )
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for _error, _message, _type, name, entries in response.resources:
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return {name: (metadata[name], configs[name]) for name in names if name in metadata}


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if doomed := [name for name in names if name in existing]:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def test_ensure_topics_is_idempotent_and_detects_mismatch(kafka_bootstrap: str) -> None:
    base = unique("test.ensure")
    a, b, c = f"{base}.a", f"{base}.b", f"{base}.c"
    specs = [
        TopicSpec(a, partitions=4, retention_ms=DAY_MS),
        TopicSpec(b, partitions=1, retention_ms=HOUR_MS, config={"cleanup.policy": "compact"}),
    ]
    try:
        await ensure_topics(kafka_bootstrap, specs)
        await ensure_topics(kafka_bootstrap, specs)  # again: nothing to do, no error
        await asyncio.gather(*(ensure_topics(kafka_bootstrap, specs) for _ in range(3)))

        topics = await describe(kafka_bootstrap, [a, b])
        assert topics[a][0] == 4
        assert topics[a][1]["retention.ms"] == str(DAY_MS)
        assert topics[b][0] == 1
        assert topics[b][1]["retention.ms"] == str(HOUR_MS)
        assert topics[b][1]["cleanup.policy"] == "compact"

        # A spec that disagrees with the broker fails loudly, and the call creates nothing.
        with pytest.raises(TopicMismatch) as mismatch:
            await ensure_topics(
                kafka_bootstrap,
                [
                    TopicSpec(a, partitions=2, retention_ms=DAY_MS),
                    TopicSpec(c, partitions=1, retention_ms=DAY_MS),
                ],
            )
        assert mismatch.value.mismatches == {a: (2, 4)}
        assert f"{a} has 4 partitions, spec declares 2" in str(mismatch.value)
        assert c not in await describe(kafka_bootstrap, [c])
        assert (await describe(kafka_bootstrap, [a]))[a][0] == 4
    finally:
        await delete_topics(kafka_bootstrap, [a, b, c])


async def test_ensure_topics_concurrent_creators(kafka_bootstrap: str) -> None:
    """Racing creators of one new topic all succeed; a racer with another count is refused."""
    same, racy = unique("test.race-same"), unique("test.race-diff")
    try:
        spec = TopicSpec(same, partitions=3, retention_ms=DAY_MS)
        await asyncio.gather(*(ensure_topics(kafka_bootstrap, [spec]) for _ in range(4)))
        assert (await describe(kafka_bootstrap, [same]))[same][0] == 3

        results = await asyncio.gather(
            ensure_topics(kafka_bootstrap, [TopicSpec(racy, partitions=2, retention_ms=DAY_MS)]),
            ensure_topics(kafka_bootstrap, [TopicSpec(racy, partitions=5, retention_ms=DAY_MS)]),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], TopicMismatch), results
    finally:
        await delete_topics(kafka_bootstrap, [same, racy])


async def test_script_up_is_idempotent_and_status_reports(tmp_path: Path) -> None:
    """A broker of its own (own dir, own ports): up, up again, status, auto-create off, down."""
    state = tmp_path / "kafka"
    env = {
        "EGRESSWATCH_KAFKA_DIR": str(state),
        "EGRESSWATCH_KAFKA_PORT": str(free_port()),
        "EGRESSWATCH_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    try:
        first = await asyncio.to_thread(kafka_local, "up", env=env)
        assert first.returncode == 0, first.stderr
        bootstrap = parse_bootstrap(first.stdout)
        assert bootstrap == f"127.0.0.1:{env['EGRESSWATCH_KAFKA_PORT']}"
        assert (state / "data" / "meta.properties").exists()
        pid = (state / "kafka.pid").read_text().strip()

        second = await asyncio.to_thread(kafka_local, "up", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout  # exactly the same single line
        assert (state / "kafka.pid").read_text().strip() == pid  # the same broker

        status = await asyncio.to_thread(kafka_local, "status", env=env)
        assert status.returncode == 0
        assert status.stdout.startswith(f"running pid={pid} KAFKA_BOOTSTRAP={bootstrap}")

        # auto.create.topics.enable=false: a Metadata request naming an unknown topic (aiokafka
        # sends allow_auto_topic_creation=true) must not create it.
        ghost = unique("test.ghost")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [answer] = await admin.describe_topics([ghost])
            listed = await admin.list_topics()
        finally:
            await admin.close()
        assert answer["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
        assert ghost not in listed
    finally:
        down = await asyncio.to_thread(kafka_local, "down", "--purge", env=env)
    assert down.returncode == 0, down.stderr
    stopped = await asyncio.to_thread(kafka_local, "status", env=env)
    assert stopped.returncode == 1
    assert stopped.stdout.startswith("stopped")
    assert not (state / "data").exists()
    assert not os.path.exists(f"/proc/{pid}")
