"""Ingest, without Faust: what one record yields for the tables, the dead letters and the sink."""

from __future__ import annotations

import json

from agents.deadletter import decode_dead_letter
from agents.ingest import IngestProcessor
from pipeline.envelope import encode_batch
from pipeline.schema import decode_event, encode_event
from tables.metrics import EgressMetrics
from tables.windows import RETENTION_S
from tests.eventgen import make_event

T0 = 1_764_000_000.0
BAD = b'{"schema_version": 1, "service": 42}'


def _foreign(line: bytes) -> bytes:
    """The same event as another producer may format it: keys reversed, spaces."""
    fields = json.loads(line)
    return json.dumps(dict(reversed(fields.items()))).encode()


def test_events_come_with_the_bytes_they_arrived_as() -> None:
    events = [make_event(started_at=T0 + i, elapsed_ms=5.0 + i) for i in range(3)]
    raws = [
        encode_event(events[0]),
        BAD,
        _foreign(encode_event(events[1])),
        encode_event(events[2]),
    ]
    processor = IngestProcessor(metrics=EgressMetrics(), clock=lambda: T0)

    result = processor.process(encode_batch("p", 0, T0, raws), topic="t", partition=0, offset=7)

    assert result.events == events
    assert result.lines == [raws[0], raws[2], raws[3]]  # index for index, as they came
    assert [decode_event(line) for line in result.lines] == events
    [(reason, letter)] = result.dead_letters
    assert reason == b"invalid_field:service"
    assert decode_dead_letter(letter)[1] == BAD


def test_an_event_beyond_retention_is_dead_lettered_as_received_at_its_envelope_index() -> None:
    processor = IngestProcessor(metrics=EgressMetrics(), clock=lambda: T0)
    now = make_event(started_at=T0, elapsed_ms=5.0)
    processor.process(
        encode_batch("p", 0, T0, [encode_event(now)]), topic="t", partition=0, offset=0
    )
    old = _foreign(encode_event(make_event(started_at=T0 - RETENTION_S - 60, elapsed_ms=5.0)))

    result = processor.process(
        encode_batch("p", 1, T0, [BAD, old]), topic="t", partition=0, offset=1
    )

    assert result.events == [] and result.lines == [] and result.late == 1
    late = [
        decode_dead_letter(letter)
        for reason, letter in result.dead_letters
        if reason == b"late_beyond_retention"
    ]
    [(record, original)] = late
    assert original == old  # the bytes as received, not encoded again
    assert record.index == 1  # its place in the envelope, after the invalid one
