"""Garbage records: each shape is rejected by the pipeline's own decoder, one dead letter each."""

from __future__ import annotations

import pytest

from pipeline.campaign.garbage import GARBAGE_SHAPES, garbage_record
from pipeline.envelope import InvalidEnvelope, decode_batch


@pytest.mark.parametrize("index", range(len(GARBAGE_SHAPES)))
def test_every_garbage_record_is_rejected_whole_or_has_one_invalid_event(index: int) -> None:
    record = garbage_record(index)
    try:
        batch = decode_batch(record)
    except InvalidEnvelope as exc:
        expected = {"malformed_record", "invalid_envelope", "unsupported_envelope_version"}
        assert exc.reason in expected
        return
    assert len(batch.valid) == 0
    assert len(batch.invalid) == 1


def test_shapes_cycle() -> None:
    assert garbage_record(0)[:2] == garbage_record(len(GARBAGE_SHAPES))[:2]
