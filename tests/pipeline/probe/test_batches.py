"""pipeline/probe/_batches.py: the emitter's records, built without a thread or a producer."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.envelope import decode_batch
from pipeline.partitioning import key_bytes, partition_for_key
from pipeline.probe._batches import Item, RecordBatcher
from pipeline.probe._record import Record, materialize
from pipeline.schema import ProbeEvent, table_key
from tests.eventgen import emitter_event, emitter_record

SENT_AT = 1_790_000_000.0


def batcher(**overrides: Any) -> RecordBatcher:
    options: dict[str, Any] = {
        "producer_id": "checkout@host:1",
        "batch_max_events": 500,
        "max_record_bytes": 900_000,
    }
    options.update(overrides)
    return RecordBatcher(**options)


def event_of(item: Item) -> ProbeEvent:
    return materialize(item) if isinstance(item, Record) else item


def test_records_and_events_alike_become_their_events_in_their_partition() -> None:
    items: list[Item] = [emitter_event(i) for i in range(30)] + [
        emitter_record(i) for i in range(30)
    ]
    records, invalid = batcher().build(items, 4, SENT_AT)
    assert invalid == 0
    seen: list[ProbeEvent] = []
    for record in records:
        decoded = decode_batch(record.value)
        assert decoded.invalid == [] and decoded.sent_at == SENT_AT
        assert decoded.valid == [event_of(item) for item in record.items]
        assert {partition_for_key(table_key(e), 4) for e in decoded.valid} == {record.partition}
        assert record.key == key_bytes(table_key(decoded.valid[0]))
        seen.extend(decoded.valid)
    assert sorted(map(msgspec.json.encode, seen)) == sorted(
        msgspec.json.encode(event_of(item)) for item in items
    )


def test_seq_counts_records_per_partition_across_builds() -> None:
    builder = batcher(batch_max_events=5)
    first, _ = builder.build([emitter_event(i, routes=1) for i in range(12)], 4, SENT_AT)
    second, _ = builder.build([emitter_event(i, routes=1) for i in range(3)], 4, SENT_AT)
    assert len({r.partition for r in first + second}) == 1  # one table key
    assert [decode_batch(r.value).seq for r in first + second] == [0, 1, 2, 3]


def test_what_is_not_a_probe_event_or_cannot_be_encoded_is_counted_and_left_out() -> None:
    broken = msgspec.structs.replace(emitter_record(99), trace_id=object())
    items: list[Any] = [emitter_record(0), "not an event", broken, emitter_record(1), None]
    records, invalid = batcher().build(items, 2, SENT_AT)
    assert invalid == 3
    sent = [item for record in records for item in record.items]
    assert sorted(sent, key=id) == sorted([items[0], items[3]], key=id)


def test_an_oversized_record_is_cut_until_it_fits_or_holds_one_event() -> None:
    items = [emitter_event(i, routes=1) for i in range(40)]
    records, invalid = batcher(max_record_bytes=2_000).build(items, 1, SENT_AT)
    assert invalid == 0 and len(records) > 1
    assert all(len(r.value) <= 2_000 or len(r.items) == 1 for r in records)
    assert [item for r in records for item in r.items] == items  # one key: order kept


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(0, 10_000), max_size=120),
    partitions=st.integers(1, 8),
    batch_max=st.integers(1, 50),
    max_bytes=st.sampled_from([1_500, 5_000, 900_000]),
)
def test_every_item_in_exactly_one_record_and_each_key_in_order(
    picks: list[int], partitions: int, batch_max: int, max_bytes: int
) -> None:
    items: list[Item] = [emitter_event(i, routes=7) if i % 2 else emitter_record(i) for i in picks]
    records, invalid = batcher(batch_max_events=batch_max, max_record_bytes=max_bytes).build(
        items, partitions, SENT_AT
    )
    assert invalid == 0
    assert sorted(map(id, (i for r in records for i in r.items))) == sorted(map(id, items))
    for record in records:
        assert len(record.items) <= batch_max
        assert len(record.value) <= max_bytes or len(record.items) == 1
    by_key: dict[str, list[int]] = {}
    for record in records:
        for item in record.items:
            by_key.setdefault(table_key(event_of(item)), []).append(id(item))
    for key, ids in by_key.items():
        assert ids == [id(i) for i in items if table_key(event_of(i)) == key]
