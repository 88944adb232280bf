"""EgressMetrics: values against hand-computed ones, determinism, caps, exemplars, speed."""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pipeline.schema import UNSENT_OUTCOMES, ProbeEvent, derive_severity
from tables.labels import METHOD_LABELS, OVERFLOW, CappedFamily
from tables.metrics import DURATION_BUCKETS, EgressMetrics
from tests.strategies import probe_events

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
H = "egresswatch_outbound_request_duration_seconds"
T0 = 1_700_000_000.0  # a fixed event time: no wall clock anywhere in these tests
_ids = iter(range(1, 10**9))


def event(**fields: Any) -> ProbeEvent:
    """A valid probe event: GET checkout /users/{id} 200 in 10 ms unless overridden."""
    n = next(_ids)
    base: dict[str, Any] = {
        "service": "checkout",
        "started_at": T0,
        "elapsed_ms": 10.0,
        "method": "GET",
        "route": "/users/{id}",
        "upstream": "users:8080",
        "outcome": "ok",
        "status_code": 200,
        "trace_id": f"{n:032x}",
        "request_id": f"{n:016x}",
        "logical_request_id": f"{n:016x}",
    }
    base.update(fields)
    base.setdefault(
        "severity",
        derive_severity(
            outcome=base["outcome"],
            status_code=base["status_code"],
            elapsed_ms=base["elapsed_ms"],
            attempt=base.get("attempt", 1),
        ),
    )
    return ProbeEvent(**base)


def fresh(**kwargs: Any) -> tuple[EgressMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return EgressMetrics(registry, **kwargs), registry


def series_by_family(registry: CollectorRegistry) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Distinct label sets per family (the histogram's ``le`` and suffixes folded away)."""
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in registry.collect():
        labels = out.setdefault(family.name, set())
        for sample in family.samples:
            labels.add(tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le")))
    return out


def total(registry: CollectorRegistry, sample_name: str) -> float:
    return sum(s.value for f in registry.collect() for s in f.samples if s.name == sample_name)


def test_values_match_hand_computed_ones() -> None:
    metrics, reg = fresh()
    a = {"service": "a", "route": "/users/{id}", "method": "GET"}
    metrics.observe_many(
        [
            event(
                **a,
                elapsed_ms=12,
                bytes_sent=10,
                bytes_received=100,
                breaker_state="closed",
                pool_wait_ms=2.0,
            ),
            event(
                **a,
                elapsed_ms=120,
                outcome="http_error",
                status_code=503,
                error_class="http_5xx",
                attempt=2,
                bytes_sent=5,
                breaker_state="open",
                pool_wait_ms=50.0,
            ),
            event(
                **a,
                elapsed_ms=3000,
                outcome="timeout",
                status_code=None,
                error_class="read_timeout",
                attempt=3,
                breaker_state="half_open",
                pool_wait_ms=10.0,
            ),
        ]
    )
    metrics.observe(
        event(service="b", route="/orders", method="POST", elapsed_ms=0.5, status_code=201)
    )
    get = reg.get_sample_value
    cumulative = {"0.001": 0, "0.01": 0, "0.025": 1, "0.1": 1, "0.15": 2, "2.5": 2, "5.0": 3}
    for le, want in cumulative.items():
        assert get(f"{H}_bucket", {**a, "le": le}) == want, le
    assert get(f"{H}_bucket", {**a, "le": "+Inf"}) == 3
    assert get(f"{H}_count", a) == 3
    assert get(f"{H}_sum", a) == pytest.approx(0.012 + 0.12 + 3.0)
    b = {"service": "b", "route": "/orders", "method": "POST"}
    assert get(f"{H}_bucket", {**b, "le": "0.001"}) == 1
    assert get(f"{H}_sum", b) == pytest.approx(0.0005)

    req = "egresswatch_outbound_requests_total"
    assert get(req, {**a, "status_class": "2xx"}) == 1
    assert get(req, {**a, "status_class": "5xx"}) == 1
    assert get(req, {**a, "status_class": "none"}) == 1
    assert get(req, {**b, "status_class": "2xx"}) == 1
    sr = {"service": "a", "route": "/users/{id}"}
    assert get("egresswatch_outbound_errors_total", {**sr, "error_class": "http_5xx"}) == 1
    assert get("egresswatch_outbound_errors_total", {**sr, "error_class": "read_timeout"}) == 1
    assert get("egresswatch_outbound_timeouts_total", {**sr, "error_class": "read_timeout"}) == 1
    assert get("egresswatch_outbound_timeouts_total", {**sr, "error_class": "http_5xx"}) is None
    assert get("egresswatch_outbound_retries_total", sr) == 2
    assert get("egresswatch_outbound_retries_total", {"service": "b", "route": "/orders"}) is None
    assert get("egresswatch_outbound_bytes_sent_total", {"service": "a"}) == 15
    assert get("egresswatch_outbound_bytes_received_total", {"service": "a"}) == 100
    assert get("egresswatch_outbound_bytes_sent_total", {"service": "b"}) == 0
    up = {"service": "a", "upstream": "users:8080"}
    assert get("egresswatch_breaker_state", up) == 1  # half_open, the last one seen
    assert get("egresswatch_outbound_pool_wait_seconds_max", up) == pytest.approx(0.05)
    assert get("egresswatch_breaker_state", {"service": "b", "upstream": "users:8080"}) is None
    series = "egresswatch_metric_series"
    assert get(series, {"metric": H}) == 2
    assert get(series, {"metric": "egresswatch_outbound_requests_total"}) == 4
    assert get(series, {"metric": "egresswatch_breaker_state"}) == 1
    assert get("egresswatch_label_overflow_total", {"metric": H}) == 0


def test_bucket_bounds_are_inclusive() -> None:
    metrics, reg = fresh()
    metrics.observe_many([event(elapsed_ms=100.0), event(elapsed_ms=100.0001)])
    labels = {"service": "checkout", "route": "/users/{id}", "method": "GET"}
    assert reg.get_sample_value(f"{H}_bucket", {**labels, "le": "0.1"}) == 1
    assert reg.get_sample_value(f"{H}_bucket", {**labels, "le": "0.15"}) == 2


def _mixed_events(seed: int, n: int) -> list[ProbeEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.random()
        fields: dict[str, Any] = {
            "service": rng.choice(["checkout", "billing", "search"]),
            "route": rng.choice(["/users/{id}", "/orders", "/orders/{id}/items"]),
            "method": rng.choice(["GET", "POST", "DELETE"]),
            "upstream": rng.choice(["users:8080", "orders:443"]),
            "started_at": T0 + i * 0.01,
            "elapsed_ms": rng.lognormvariate(3.5, 1.2),
            "attempt": rng.choice([1, 1, 1, 2]),
            "bytes_sent": rng.randrange(10_000),
            "bytes_received": rng.randrange(100_000),
            "breaker_state": rng.choice([None, "closed", "open"]),
            "pool_wait_ms": rng.choice([None, rng.random() * 20]),
        }
        if kind < 0.1:
            fields.update(outcome="timeout", status_code=None, error_class="read_timeout")
        elif kind < 0.2:
            fields.update(outcome="http_error", status_code=503, error_class="http_5xx")
        out.append(event(**fields))
    return out


def test_identical_runs_give_byte_identical_expositions() -> None:
    events = _mixed_events(seed=7, n=5_000)
    first, second = fresh(), fresh()
    first[0].observe_many(events)
    for e in events:
        second[0].observe(e)
    assert generate_latest(first[1]) == generate_latest(second[1])
    assert generate_openmetrics(first[1]) == generate_openmetrics(second[1])
    assert generate_latest(first[1]) == generate_latest(first[1])  # a scrape changes nothing


def test_cardinality_attack_is_capped_and_conserves_counts() -> None:
    rng = random.Random(1)
    n = 100_000
    metrics, reg = fresh()  # default cap: 2,000 series per family
    metrics.observe_many(
        event(
            route=f"/users/{rng.getrandbits(64):x}",
            outcome="http_error",
            status_code=500,
            error_class="http_5xx",
            attempt=2,
        )
        for _ in range(n)
    )
    families = series_by_family(reg)
    for name, label_sets in families.items():
        assert len(label_sets) <= 2_000, name
    overflow = {"service": OVERFLOW, "route": OVERFLOW, "method": "GET"}
    # Room is kept for one possible overflow series per method label (+1 for "_other").
    admitted = 2_000 - (len(METHOD_LABELS) + 1)
    assert reg.get_sample_value(f"{H}_count", overflow) == n - admitted
    assert total(reg, f"{H}_count") == n
    assert total(reg, "egresswatch_outbound_requests_total") == n
    assert total(reg, "egresswatch_outbound_errors_total") == n
    assert total(reg, "egresswatch_outbound_retries_total") == n
    get = reg.get_sample_value
    assert get("egresswatch_label_overflow_total", {"metric": H}) == n - admitted
    assert get("egresswatch_metric_series", {"metric": H}) == admitted + 1
    # Internal state is bounded too: not one cached slot per raw route.
    assert len(metrics._slots) <= 2 * 2_000


def test_small_cap_applies_to_every_family() -> None:
    metrics, reg = fresh(max_series=100)
    events = [
        event(
            service=f"svc{i}",
            route=f"/r{i}",
            upstream=f"up{i}:80",
            breaker_state="open",
            pool_wait_ms=1.0,
            outcome="timeout",
            status_code=None,
            error_class="pool_timeout",
        )
        for i in range(1_000)
    ]
    metrics.observe_many(events)
    for name, label_sets in series_by_family(reg).items():
        assert len(label_sets) <= 100, name
    assert total(reg, "egresswatch_outbound_timeouts_total") == 1_000
    get = reg.get_sample_value
    over = {"service": OVERFLOW, "upstream": OVERFLOW}
    assert get("egresswatch_breaker_state", over) == 2
    assert get("egresswatch_label_overflow_total", {"metric": "egresswatch_breaker_state"}) == 901
    with pytest.raises(ValueError, match="overflow reserve"):
        EgressMetrics(CollectorRegistry(), max_series=50)


def test_exemplars_carry_the_latest_trace_id_per_bucket() -> None:
    metrics, reg = fresh()
    metrics.observe_many(
        [
            event(elapsed_ms=20, trace_id="a" * 32, started_at=T0 + 1),
            event(elapsed_ms=22, trace_id="b" * 32, started_at=T0 + 2),
            event(elapsed_ms=400, trace_id="c" * 32, started_at=T0 + 3),
        ]
    )
    text = generate_openmetrics(reg).decode()
    exemplars = dict(
        re.findall(r'_bucket\{le="([^"]+)",.*\} \d+\.0 # \{trace_id="([0-9a-f]{32})"\}', text)
    )
    assert exemplars == {"0.025": "b" * 32, "0.5": "c" * 32}
    assert '# {trace_id="cccccccccccccccccccccccccccccccc"} 0.4 1700000003.0' in text
    assert "trace_id" not in generate_latest(reg).decode()  # classic text: no exemplars
    parsed = {f.name: f for f in text_string_to_metric_families(text)}  # strict OM parser
    bucket = next(s for s in parsed[H].samples if s.labels.get("le") == "0.5")
    assert bucket.exemplar is not None
    assert bucket.exemplar.labels == {"trace_id": "c" * 32}


def test_service_allow_list_folds_others() -> None:
    metrics, reg = fresh(services=["checkout"])
    metrics.observe_many([event(), event(service="intruder")])
    metrics.inc_late("intruder", 2)
    get = reg.get_sample_value
    assert get(f"{H}_count", {"service": "checkout", "route": "/users/{id}", "method": "GET"}) == 1
    assert get(f"{H}_count", {"service": "_other", "route": "/users/{id}", "method": "GET"}) == 1
    assert get("egresswatch_late_events_total", {"service": "_other"}) == 2
    assert "intruder" not in generate_latest(reg).decode()


def test_values_outside_the_schema_sets_are_folded() -> None:
    # The constructor does not validate (decoding does): a hand-made event can carry anything.
    metrics, reg = fresh()
    metrics.observe_many(
        [
            event(method="BREW"),
            event(outcome="protocol_error", status_code=999, error_class="kaboom"),
        ]
    )
    get = reg.get_sample_value
    labels = {"service": "checkout", "route": "/users/{id}"}
    assert get(f"{H}_count", {**labels, "method": "_other"}) == 1
    assert (
        get(
            "egresswatch_outbound_requests_total",
            {**labels, "method": "GET", "status_class": "none"},
        )
        == 1
    )
    assert get("egresswatch_outbound_errors_total", {**labels, "error_class": "unexpected"}) == 1


def test_pipeline_counters() -> None:
    metrics, reg = fresh(pipeline_max_series=10)
    metrics.inc_dead_letter("malformed_json")
    metrics.inc_dead_letter("invalid_field:status_code", 3)
    metrics.inc_late("checkout")
    metrics.inc_dropped("websocket", "slow_client", 5)
    metrics.inc_dropped("websocket", "slow_client", 0)
    for i in range(50):
        metrics.inc_dropped(f"stage{i}", "full")
    get = reg.get_sample_value
    assert get("egresswatch_dead_letters_total", {"reason": "malformed_json"}) == 1
    assert get("egresswatch_dead_letters_total", {"reason": "invalid_field:status_code"}) == 3
    assert get("egresswatch_late_events_total", {"service": "checkout"}) == 1
    dropped = "egresswatch_dropped_events_total"
    assert get(dropped, {"stage": "websocket", "reason": "slow_client"}) == 5
    assert len(series_by_family(reg)[dropped.removesuffix("_total")]) <= 10
    assert total(reg, dropped) == 55
    # 9 regular series fit (cap 10, one kept for overflow): websocket and 8 of the 50 stages.
    assert get(dropped, {"stage": OVERFLOW, "reason": OVERFLOW}) == 42
    with pytest.raises(ValueError, match="cannot decrease"):
        metrics.inc_dropped("websocket", "slow_client", -1)


def test_pool_wait_max_follows_event_time_windows() -> None:
    metrics, reg = fresh()
    t = 60.0 * (int(T0) // 60)  # the start of a 60 s window

    def wait_max_after(started_at: float, wait_ms: float) -> float | None:
        metrics.observe(event(started_at=started_at, pool_wait_ms=wait_ms))
        return reg.get_sample_value(
            "egresswatch_outbound_pool_wait_seconds_max",
            {"service": "checkout", "upstream": "users:8080"},
        )

    assert wait_max_after(t + 1, 100) == pytest.approx(0.1)
    assert wait_max_after(t + 2, 300) == pytest.approx(0.3)
    assert wait_max_after(t + 61, 50) == pytest.approx(0.3)  # the previous window still counts
    assert wait_max_after(t + 121, 20) == pytest.approx(0.05)  # window w dropped out
    assert wait_max_after(t + 301, 10) == pytest.approx(0.01)  # a gap resets both
    assert wait_max_after(t + 250, 200) == pytest.approx(0.2)  # late, previous window
    assert wait_max_after(t + 5, 900) == pytest.approx(0.2)  # too late: ignored


def test_scrape_during_observation_is_safe() -> None:
    metrics, reg = fresh()
    events = _mixed_events(seed=3, n=2_000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_openmetrics(reg)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for _ in range(10):
            for e in events:
                metrics.observe(e)
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert total(reg, f"{H}_count") == 20_000


@settings(max_examples=50, deadline=None)
@given(st.lists(probe_events(), max_size=40))
def test_counts_are_conserved(events: list[ProbeEvent]) -> None:
    metrics, reg = fresh()
    metrics.observe_many(events)
    sent = [e for e in events if e.outcome not in UNSENT_OUTCOMES]
    assert total(reg, f"{H}_count") == len(sent)  # refused attempts have no latency
    assert total(reg, "egresswatch_outbound_requests_total") == len(events)
    assert total(reg, "egresswatch_outbound_errors_total") == sum(
        e.error_class is not None for e in events
    )
    assert total(reg, "egresswatch_outbound_timeouts_total") == sum(
        e.outcome == "timeout" for e in events
    )
    assert total(reg, "egresswatch_outbound_retries_total") == sum(e.attempt > 1 for e in events)
    assert total(reg, "egresswatch_outbound_bytes_sent_total") == sum(e.bytes_sent for e in events)
    assert total(reg, f"{H}_sum") == pytest.approx(sum(e.elapsed_ms / 1000 for e in sent))


def test_registration() -> None:
    reg = CollectorRegistry()
    EgressMetrics(reg)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        EgressMetrics(reg)
    assert isinstance(EgressMetrics().registry, CollectorRegistry)  # its own by default


def test_capped_family_keeps_room_for_overflow() -> None:
    fam: CappedFamily[list[int]] = CappedFamily("f", 5, 2, (0,), lambda: [0])
    for i in range(10):
        for closed in ("x", "y"):
            fam.cell((f"open{i}", closed))[0] += 1
    assert len(fam) == 5
    assert fam.series[(OVERFLOW, "x")][0] + fam.series[(OVERFLOW, "y")][0] == 17


def test_docs_list_every_family_and_the_buckets() -> None:
    docs = DOCS.read_text()
    metrics, reg = fresh()
    for family in reg.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in docs, name
    assert ", ".join(repr(b) for b in DURATION_BUCKETS) in docs
