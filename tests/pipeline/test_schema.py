"""Schema v1: round trips, specific rejection reasons, severity rules, documented fields."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema import (
    InvalidEvent,
    ProbeEvent,
    decode_event,
    derive_severity,
    encode_event,
    event_from_dict,
)
from tests.strategies import probe_events

ROOT = Path(__file__).resolve().parents[2]


def _valid() -> dict[str, object]:
    return {
        "schema_version": 1,
        "service": "checkout",
        "started_at": 1_764_000_000.25,
        "elapsed_ms": 12.5,
        "method": "GET",
        "route": "/users/{id}",
        "upstream": "api.local:8080",
        "outcome": "ok",
        "severity": "info",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "request_id": "00f067aa0ba902b7",
        "logical_request_id": "00f067aa0ba902b8",
        "status_code": 200,
    }


@given(probe_events())
def test_encode_decode_round_trip(event: ProbeEvent) -> None:
    assert decode_event(encode_event(event)) == event


@given(probe_events())
def test_round_trip_through_plain_dict(event: ProbeEvent) -> None:
    as_dict = json.loads(encode_event(event))
    assert event_from_dict(as_dict) == event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status_code": "200"}, "invalid_field:status_code"),
        ({"schema_version": 2}, "unsupported_schema_version"),
        ({"trace_id": "XYZ"}, "invalid_field:trace_id"),
        ({"trace_id": "0" * 32}, "invalid_trace_context"),
        ({"elapsed_ms": -1.0}, "invalid_field:elapsed_ms"),
        ({"started_at": 1_764_000_000_250.0}, "invalid_field:started_at"),  # ms, not s
        ({"route": "users"}, "invalid_field:route"),
        ({"route": "/" + "a" * 300}, "invalid_field:route"),
        ({"upstream": "user:pw@host:80"}, "invalid_field:upstream"),
        ({"method": "BREW"}, "invalid_field:method"),
        ({"outcome": "exploded"}, "invalid_field:outcome"),
        ({"severity": "critical"}, "severity_mismatch"),
        ({"status_code": 503}, "outcome_mismatch"),
        ({"status_code": None}, "missing_status"),
        (
            {"outcome": "timeout", "status_code": None, "severity": "critical"},
            "missing_error_class",
        ),
        ({"surprise": 1}, "unknown_field"),
    ],
)
def test_invalid_events_name_their_reason(change: dict[str, object], reason: str) -> None:
    fields = {**_valid(), **change}
    with pytest.raises(InvalidEvent) as caught:
        decode_event(json.dumps(fields))
    assert caught.value.reason == reason


@pytest.mark.parametrize("field", ["service", "route", "trace_id", "started_at"])
def test_missing_required_field(field: str) -> None:
    fields = _valid()
    del fields[field]
    with pytest.raises(InvalidEvent) as caught:
        decode_event(json.dumps(fields))
    assert caught.value.reason == f"missing_field:{field}"


@pytest.mark.parametrize("raw", [b"", b"{", b"null", b"[1,2]", b'"x"', b"\xff\xfe", b"{" * 10_000])
def test_garbage_is_rejected_not_raised_otherwise(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_only_ever_raise_invalid_event(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidEvent:
        pass


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"outcome": "ok", "status_code": 200, "elapsed_ms": 5}, "info"),
        ({"outcome": "ok", "status_code": 200, "elapsed_ms": 1500}, "warning"),
        ({"outcome": "ok", "status_code": 200, "elapsed_ms": 6000}, "critical"),
        ({"outcome": "ok", "status_code": 200, "elapsed_ms": 5, "attempt": 2}, "warning"),
        ({"outcome": "ok", "status_code": 200, "elapsed_ms": 5, "body_complete": False}, "warning"),
        ({"outcome": "http_error", "status_code": 404, "elapsed_ms": 5}, "warning"),
        ({"outcome": "http_error", "status_code": 429, "elapsed_ms": 5}, "error"),
        ({"outcome": "http_error", "status_code": 503, "elapsed_ms": 5}, "critical"),
        ({"outcome": "timeout", "status_code": None, "elapsed_ms": 5}, "critical"),
        ({"outcome": "connect_error", "status_code": None, "elapsed_ms": 1}, "critical"),
        ({"outcome": "breaker_open", "status_code": None, "elapsed_ms": 0}, "critical"),
        ({"outcome": "cancelled", "status_code": None, "elapsed_ms": 5}, "warning"),
    ],
)
def test_severity_rules(kwargs: dict[str, object], expected: str) -> None:
    assert derive_severity(**kwargs) == expected  # type: ignore[arg-type]


def test_every_field_is_documented() -> None:
    doc = (ROOT / "docs" / "event-schema.md").read_text()
    for field in msgspec.structs.fields(ProbeEvent):
        assert f"`{field.name}`" in doc, field.name
