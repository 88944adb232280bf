"""JSONL lines and records: round trips, deterministic gzip, what is kept."""

from __future__ import annotations

import asyncio
import gzip
import json
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema import SEVERITIES, decode_event, encode_event
from sinks.jsonl import decode_jsonl, encode_jsonl, is_gzip, read_events
from sinks.records import alert_record, event_record, keeps, severity_rank
from tables.alerting import decode_alert, encode_alert
from tests.sinks.fakes import T0, critical_events, make_alert, ok_events
from tests.strategies import probe_events

lines = st.lists(st.text(max_size=30).map(msgspec.json.encode))  # JSON never starts with 0x1f


@given(lines, st.booleans())
def test_round_trip(items: list[bytes], compress: bool) -> None:
    data = encode_jsonl(items, compress=compress)
    assert decode_jsonl(data) == items
    assert is_gzip(data) == compress


@given(st.lists(probe_events(), max_size=20), st.booleans())
def test_events_round_trip_through_an_object(events, compress) -> None:
    data = encode_jsonl((event_record(e).line for e in events), compress=compress)
    assert read_events(data) == events


def test_gzip_is_deterministic() -> None:
    items = [encode_event(e) for e in critical_events(50)]
    first = encode_jsonl(items, compress=True)
    assert first == encode_jsonl(items, compress=True)
    assert gzip.decompress(first) == encode_jsonl(items)


def test_every_line_ends_with_a_newline() -> None:
    assert encode_jsonl([b"{}", b"[]"]) == b"{}\n[]\n"
    assert encode_jsonl([]) == b""
    assert decode_jsonl(b"") == []


def test_refuses_newlines_and_cut_objects() -> None:
    with pytest.raises(ValueError, match="newline"):
        encode_jsonl([b'{"a":\n1}'])
    with pytest.raises(ValueError, match="cut short"):
        decode_jsonl(b'{"a":1}\n{"b"')
    with pytest.raises(ValueError, match="gzip"):
        decode_jsonl(encode_jsonl([b"{}"] * 100, compress=True)[:-9])


def test_event_record_is_the_wire_event() -> None:
    event = critical_events(1, start=T0 + 5)[0]
    record = event_record(event)
    assert (record.kind, record.service, record.at) == ("events", "checkout", T0 + 5)
    assert record.line == encode_event(event)
    assert decode_event(record.line) == event


def test_alert_record_is_encode_alert() -> None:
    alert = make_alert(3, service="pay", at=T0 + 99)
    record = alert_record(alert)
    assert (record.kind, record.service, record.at) == ("alerts", "pay", T0 + 99)
    assert record.line == encode_alert(alert)
    assert decode_alert(record.line) == alert


def test_severity_rule() -> None:
    critical, ok = critical_events(1)[0], ok_events(1)[0]
    assert critical.severity == "critical" and ok.severity == "info"
    assert keeps(critical) and not keeps(ok)
    assert keeps(ok, "info") and keeps(critical, "info")
    assert [severity_rank(s) for s in SEVERITIES] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        severity_rank("fatal")


@given(probe_events(), st.sampled_from(SEVERITIES))
def test_keeps_is_a_threshold(event, minimum) -> None:
    assert keeps(event, minimum) == (SEVERITIES.index(event.severity) >= SEVERITIES.index(minimum))


def _reformatted(line: bytes, *, newlines: bool) -> bytes:
    """The same JSON object in another producer's formatting (key order, spaces, newlines)."""
    fields = msgspec.json.decode(line)
    text = json.dumps(dict(reversed(fields.items())), indent=1 if newlines else None)
    return text.encode()


@given(probe_events(), st.booleans())
def test_event_record_stores_the_received_bytes_when_on_one_line(event, newlines) -> None:
    received = _reformatted(encode_event(event), newlines=newlines)
    record = event_record(event, received)
    assert decode_event(record.line) == event
    assert b"\n" not in record.line and b"\r" not in record.line
    # On one line: byte for byte what came; across lines: encoded again, never split.
    assert record.line == (encode_event(event) if newlines else received)


def test_writer_stores_received_bytes_and_refuses_a_length_mismatch() -> None:
    from sinks import LocalStore, SinkWriter, Spool, store_breaker

    events = critical_events(3, start=T0)
    received = [_reformatted(encode_event(e), newlines=False) for e in events]
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(f"{tmp}/spool", max_bytes=2**20)
        writer = SinkWriter(LocalStore(f"{tmp}/store"), spool, store_breaker())
        with pytest.raises(ValueError, match="zip"):
            writer.add_events("t", 0, 0, events, received[:2])
        assert writer.add_events("t", 0, 1, events, received) == 3
        asyncio.run(writer.flush_all())
        [path] = [p for p in Path(tmp, "store").rglob("*.jsonl")]
        assert decode_jsonl(path.read_bytes()) == received
        spool.close()
