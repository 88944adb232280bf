"""Boundary validation: one JSON log line per rejection, counted by reason."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given

from pipeline.logs import JsonFormatter
from pipeline.schema import ProbeEvent, encode_event
from pipeline.validation import EventValidator
from tests.strategies import probe_events


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.validation")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, stream


def test_rejection_logs_one_json_line_and_counts() -> None:
    logger, stream = _capture()
    validator = EventValidator("test", logger=logger)
    assert validator.validate(b'{"schema_version": 1, "service": 42}') is None
    assert validator.validate(b"{") is None
    assert validator.validate(b"{") is None
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["event"] == "event_rejected"
    assert first["reason"] == "invalid_field:service"
    assert first["source"] == "test"
    assert validator.rejected_by_reason() == {"invalid_field:service": 1, "malformed_json": 2}


@given(probe_events())
def test_valid_event_accepted_silently(event: ProbeEvent) -> None:
    logger, stream = _capture()
    validator = EventValidator("test", logger=logger)
    assert validator.validate(encode_event(event)) == event
    assert validator.accepted == 1
    assert stream.getvalue() == ""


def test_huge_field_makes_a_bounded_log_line() -> None:
    logger, stream = _capture()
    validator = EventValidator("test", logger=logger)
    validator.validate(b'{"service": "' + b"x" * 1_000_000 + b'"}')
    assert len(stream.getvalue()) < 2_000
