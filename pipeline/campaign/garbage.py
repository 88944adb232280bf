"""Garbage on the probe topic: records a worker must dead-letter without losing anything else.

Four shapes, in turn: bytes that are not JSON, JSON that is not an envelope, an envelope of
an unsupported version, and a valid envelope whose single event is invalid (a field
missing). Each is one record; each gives exactly one dead letter (docs/event-schema.md), so
the checker compares the count injected with the dead letters read back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from pipeline.envelope import encode_batch

__all__ = ["GARBAGE_SHAPES", "garbage_record", "produce_garbage"]

GARBAGE_SHAPES: Final = ("not_json", "not_an_envelope", "bad_version", "invalid_event")


def garbage_record(index: int) -> bytes:
    """The ``index``-th garbage record (shapes cycle in :data:`GARBAGE_SHAPES` order)."""
    shape = GARBAGE_SHAPES[index % len(GARBAGE_SHAPES)]
    if shape == "not_json":
        return b"\xff\xfenot json at all " + str(index).encode()
    if shape == "not_an_envelope":
        return msgspec.json.encode(["a", "list", index])
    if shape == "bad_version":
        return msgspec.json.encode(
            {
                "envelope_version": 99,
                "producer": "garbage",
                "seq": index,
                "sent_at": time.time(),
                "events": [],
            }
        )
    event = msgspec.json.encode({"schema_version": 1, "service": "garbage", "seq": index})
    return encode_batch("garbage@campaign", index, time.time(), [event])


async def produce_garbage(
    bootstrap: str, topic: str, records: int, *, connect_within_s: float = 60.0
) -> int:
    """Send ``records`` garbage records (acks=all); how many the broker acknowledged.

    The broker may be coming back from an outage incident: connecting is retried for up to
    ``connect_within_s`` seconds.
    """
    deadline = time.monotonic() + connect_within_s
    while True:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            await producer.start()
            break
        except KafkaConnectionError:
            await producer.stop()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    sent = 0
    try:
        for index in range(records):
            await producer.send_and_wait(topic, garbage_record(index), key=b"garbage")
            sent += 1
    finally:
        await producer.stop()
    return sent
