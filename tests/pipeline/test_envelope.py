"""Batch envelope: valid events survive their invalid neighbours; whole-bad records are named."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.envelope import InvalidEnvelope, decode_batch, encode_batch, encode_batch_of
from pipeline.schema import ProbeEvent, encode_event
from tests.eventgen import make_event
from tests.strategies import probe_events


def _one_event() -> ProbeEvent:
    return make_event(started_at=1_764_000_000.0, elapsed_ms=12.5)


@given(st.lists(probe_events(), max_size=20))
def test_round_trip(events: list[ProbeEvent]) -> None:
    data = encode_batch("svc@host:1", 7, 1_764_000_000.0, [encode_event(e) for e in events])
    decoded = decode_batch(data)
    assert decoded.valid == events
    assert decoded.invalid == []
    assert (decoded.producer, decoded.seq) == ("svc@host:1", 7)


@given(st.lists(probe_events(), max_size=20), st.integers(0, 2**40), st.floats(0, 2e9))
def test_encoding_structs_in_one_call_gives_the_same_bytes(
    events: list[ProbeEvent], seq: int, sent_at: float
) -> None:
    raws = [encode_event(e) for e in events]
    assert encode_batch_of("p@h:1", seq, sent_at, events) == encode_batch(
        "p@h:1", seq, sent_at, raws
    )


@given(st.lists(probe_events(), min_size=1, max_size=10), st.data())
def test_invalid_events_are_isolated(events: list[ProbeEvent], data: st.DataObject) -> None:
    raws = [encode_event(e) for e in events]
    bad_index = data.draw(st.integers(0, len(raws)))
    raws.insert(bad_index, b'{"schema_version": 1, "service": 42}')
    decoded = decode_batch(encode_batch("p", 0, 1_764_000_000.0, raws))
    assert decoded.valid == events
    assert decoded.valid_raw == [encode_event(e) for e in events]  # index for index
    [(index, original, error)] = decoded.invalid
    assert index == bad_index
    assert original == b'{"schema_version": 1, "service": 42}'
    assert error.reason == "invalid_field:service"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            b'{"envelope_version": 1, "producer": "p", "seq": 0, "sent_at": 1.0, "events": [',
            "malformed_record",
        ),
        (b"not json", "malformed_record"),
        (
            b'{"envelope_version": 2, "producer": "p", "seq": 0, "sent_at": 1.0, "events": []}',
            "unsupported_envelope_version",
        ),
        (b'{"producer": "p", "seq": -1, "sent_at": 1.0, "events": []}', "invalid_envelope"),
        (b'{"producer": "p", "seq": 0, "sent_at": 1.0, "events": {}}', "invalid_envelope"),
        (b"[]", "invalid_envelope"),
    ],
)
def test_whole_bad_records(record: bytes, reason: str) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        decode_batch(record)
    assert caught.value.reason == reason


@given(st.binary(max_size=1_000))
def test_arbitrary_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    try:
        decode_batch(raw)
    except InvalidEnvelope:
        pass


def test_valid_raw_keeps_a_foreign_producers_formatting() -> None:
    """The bytes of each valid event are kept as they came, spaces and key order included."""
    [event] = decode_batch(encode_batch("p", 0, 1.0, [encode_event(_one_event())])).valid
    fields = json.loads(encode_event(event))
    foreign = json.dumps(dict(reversed(fields.items())), indent=None, separators=(", ", ": "))
    record = b'{"envelope_version": 1, "producer": "p", "seq": 0, "sent_at": 1.0, "events": [ '
    decoded = decode_batch(record + foreign.encode() + b" ]}")
    assert decoded.valid == [event]
    assert decoded.valid_raw == [foreign.encode()]
