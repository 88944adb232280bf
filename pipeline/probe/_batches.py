"""Probe events into Kafka records: build, group by partition, cut, wrap in envelopes.

The emitter's thread hands one cycle's drained items (events, or probe records whose events
are built here) to :meth:`RecordBatcher.build` and sends what comes back. Pure apart from
the per-partition envelope sequence numbers it keeps: no I/O, no thread, no clock.

Contract of one ``build``:

- every valid item is in exactly one record; an item that is not a probe event, or whose
  event JSON cannot hold, is in none and counted in ``invalid``;
- a record holds the events of one partition (``partition_for_key`` of each event's table
  key); the events of one table key keep their order;
- a record holds at most ``batch_max_events`` events and, unless it holds one event, at most
  ``max_record_bytes`` bytes (an oversized record is cut in halves and encoded again);
- a record's Kafka key is its first event's table key; its envelope's ``seq`` is one more
  than the last record built for that partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pipeline.envelope import encode_batch_of
from pipeline.partitioning import key_bytes, partition_for_key
from pipeline.probe._record import Record, wire_event
from pipeline.schema import ProbeEvent, table_key

__all__ = ["Item", "OutgoingRecord", "RecordBatcher"]

Item = ProbeEvent | Record
"""What the emitter's queue holds: an event, or a probe record whose event is built here."""


class OutgoingRecord(NamedTuple):
    """One Kafka record to send, and the queue items it carries (re-queued if it fails)."""

    partition: int
    key: bytes
    value: bytes
    items: list[Item]


def _encodes(body: Any) -> bool:
    try:
        encode_batch_of("", 0, 0.0, [body])
    except Exception:  # noqa: BLE001 - whatever the reason, it cannot be sent
        return False
    return True


class RecordBatcher:
    """Builds one emitter's records; owns its per-partition envelope sequence numbers."""

    def __init__(self, *, producer_id: str, batch_max_events: int, max_record_bytes: int) -> None:
        self._producer_id = producer_id
        self._batch_max_events = batch_max_events
        self._max_record_bytes = max_record_bytes
        self._seq: dict[int, int] = {}

    def build(
        self, items: Sequence[Item], num_partitions: int, sent_at: float
    ) -> tuple[list[OutgoingRecord], int]:
        """``(records, invalid)`` for ``items`` (see the module's contract).

        Each record's envelope and events are encoded in one call (the events are not
        encoded one by one first).
        """
        # Grouped by table key first (a dict lookup per event; the partition is then
        # computed once per key), then the keys of one partition joined: each key's events
        # keep their order, which is all Kafka's per-partition order is used for.
        by_key: dict[str, tuple[list[Any], list[Item]]] = {}
        invalid = 0
        for item in items:
            try:
                body: Any
                if type(item) is Record:
                    key, body = wire_event(item)
                elif isinstance(item, ProbeEvent):
                    key, body = table_key(item), item  # a ProbeEvent encodes as itself
                else:
                    raise TypeError(f"not a probe event: {type(item).__name__}")
            except Exception:  # noqa: BLE001 - not a probe event: counted, never sent
                invalid += 1
                continue
            group = by_key.get(key)
            if group is None:
                by_key[key] = ([body], [item])
            else:
                group[0].append(body)
                group[1].append(item)
        groups: dict[int, tuple[list[str], list[Any], list[Item]]] = {}
        for key, (bodies, grouped) in by_key.items():
            partition = partition_for_key(key, num_partitions)
            joined = groups.get(partition)
            if joined is None:
                groups[partition] = ([key] * len(bodies), bodies, grouped)
            else:
                joined[0].extend([key] * len(bodies))
                joined[1].extend(bodies)
                joined[2].extend(grouped)
        records: list[OutgoingRecord] = []
        step = self._batch_max_events
        for partition, (keys, bodies, grouped) in groups.items():
            for start in range(0, len(bodies), step):
                end = start + step
                invalid += self._add(
                    records,
                    partition,
                    keys[start:end],
                    bodies[start:end],
                    grouped[start:end],
                    sent_at,
                )
        return records, invalid

    def _add(
        self,
        records: list[OutgoingRecord],
        partition: int,
        keys: list[str],
        bodies: list[Any],
        items: list[Item],
        sent_at: float,
    ) -> int:
        """Append one record of ``bodies`` to ``records``, or two halves if it is too big.
        Returns how many bodies could not be encoded (left out)."""
        seq = self._seq.get(partition, 0)
        try:
            value = encode_batch_of(self._producer_id, seq, sent_at, bodies)
        except Exception:  # noqa: BLE001 - a record with a value JSON cannot hold
            good = [i for i, body in enumerate(bodies) if _encodes(body)]
            bad = len(bodies) - len(good)
            if good:
                bad += self._add(
                    records,
                    partition,
                    [keys[i] for i in good],
                    [bodies[i] for i in good],
                    [items[i] for i in good],
                    sent_at,
                )
            return bad
        if len(value) > self._max_record_bytes and len(bodies) > 1:
            half = len(bodies) // 2
            bad = 0
            for part in (slice(None, half), slice(half, None)):
                bad += self._add(records, partition, keys[part], bodies[part], items[part], sent_at)
            return bad
        self._seq[partition] = seq + 1
        records.append(OutgoingRecord(partition, key_bytes(keys[0]), value, items))
        return 0
