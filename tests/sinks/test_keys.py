"""The object key convention: documented examples, round trips, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.errors import InvalidKey
from sinks.keys import (
    KINDS,
    ObjectKey,
    escape_service,
    hour_folder,
    hour_of,
    parse_key,
    unescape_service,
)

T0 = 1_764_000_000  # 2025-11-24T16:00:00Z


def test_documented_example() -> None:
    key = ObjectKey(
        kind="events",
        service="checkout",
        hour=hour_of(T0 + 59 * 60 + 59.9),
        topic="egresswatch.probe-events.v1",
        partition=3,
        first_offset=1200,
        gzip=True,
        prefix="egresswatch",
    )
    text = key.render()
    assert text == (
        "egresswatch/events/service=checkout/date=2025-11-24/hour=16/"
        "egresswatch.probe-events.v1+3+1200.jsonl.gz"
    )
    assert str(key) == text
    assert parse_key(text) == key


def test_no_prefix_and_alerts() -> None:
    key = ObjectKey("alerts", "a b/c", T0, "egresswatch.alerts.v1", 0, 57)
    assert key.render() == (
        "alerts/service=a%20b%2Fc/date=2025-11-24/hour=16/egresswatch.alerts.v1+0+57.jsonl"
    )
    assert parse_key(key.render()) == key


def test_hour_folder_is_the_listing_prefix_of_its_keys() -> None:
    folder = hour_folder("p/q", "events", "svc", T0)
    assert folder == "p/q/events/service=svc/date=2025-11-24/hour=16/"
    key = ObjectKey("events", "svc", T0, "t", 0, 0, prefix="p/q").render()
    assert key.startswith(folder)


def test_hour_of() -> None:
    assert hour_of(T0) == T0
    assert hour_of(T0 + 3599.999) == T0
    assert hour_of(T0 - 0.001) == T0 - 3600


services = st.text(min_size=1, max_size=80)
topics = st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True)
prefixes = st.lists(
    st.from_regex(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,10}", fullmatch=True), max_size=3
).map("/".join)


@given(
    kind=st.sampled_from(KINDS),
    service=services,
    at=st.floats(min_value=0, max_value=7_258_118_400, allow_nan=False),
    topic=topics,
    partition=st.integers(0, 10_000),
    offset=st.integers(0, 2**63 - 1),
    gzip=st.booleans(),
    prefix=prefixes,
)
def test_render_parse_round_trip(kind, service, at, topic, partition, offset, gzip, prefix):
    key = ObjectKey(kind, service, hour_of(at), topic, partition, offset, gzip, prefix)
    text = key.render()
    assert parse_key(text) == key
    assert text.startswith(hour_folder(prefix, kind, service, hour_of(at)))
    segments = text.split("/")
    assert all(segments) and ".." not in segments  # one safe path per key


@given(services)
def test_escape_round_trip_and_alphabet(service: str) -> None:
    escaped = escape_service(service)
    assert unescape_service(escaped) == service
    assert set(escaped) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "events/service=a/date=2025-11-24/hour=16",
        "logs/service=a/date=2025-11-24/hour=16/t+0+0.jsonl",
        "events/svc=a/date=2025-11-24/hour=16/t+0+0.jsonl",
        "events/service=a/date=2025-13-24/hour=16/t+0+0.jsonl",
        "events/service=a/date=2025-11-24/hour=24/t+0+0.jsonl",
        "events/service=a/date=2025-11-24/hour=16/t+0+00.jsonl",
        "events/service=a/date=2025-11-24/hour=16/t+01+0.jsonl",
        "events/service=a/date=2025-11-24/hour=16/t+0+0.json",
        "events/service=a/date=2025-11-24/hour=16/t+0+0.jsonl.zst",
        "events/service=a/date=2025-11-24/hour=16/t+x+0.jsonl",
        "events/service=a%2f/date=2025-11-24/hour=16/t+0+0.jsonl",
        "events/service=%41/date=2025-11-24/hour=16/t+0+0.jsonl",
        "events/service=%FF/date=2025-11-24/hour=16/t+0+0.jsonl",
        "events/service=/date=2025-11-24/hour=16/t+0+0.jsonl",
        "../events/service=a/date=2025-11-24/hour=16/t+0+0.jsonl",
        "a//events/service=a/date=2025-11-24/hour=16/t+0+0.jsonl",
    ],
)
def test_parse_refuses_what_render_never_writes(key: str) -> None:
    with pytest.raises(InvalidKey):
        parse_key(key)


def test_render_refuses_bad_parts() -> None:
    with pytest.raises(InvalidKey):
        ObjectKey("events", "a", T0, "bad+topic", 0, 0).render()
    with pytest.raises(InvalidKey):
        ObjectKey("events", "a", T0, "t", -1, 0).render()
    with pytest.raises(InvalidKey):
        ObjectKey("events", "a", T0 + 1, "t", 0, 0).render()
    with pytest.raises(InvalidKey):
        ObjectKey("events", "", T0, "t", 0, 0).render()
    with pytest.raises(InvalidKey):
        ObjectKey("events", "a", T0, "t", 0, 0, prefix="/abs").render()
    with pytest.raises(InvalidKey):
        ObjectKey("nope", "a", T0, "t", 0, 0).render()  # type: ignore[arg-type]
    assert issubclass(InvalidKey, ValueError)
