"""Invariants I1 (completeness), I2 (correlation) and I4 (no critical event lost), counted.

Each check is a pure function of a :class:`~._checks_common.RawRun` giving one JSON-able
verdict: ``verdict``, ``title``, ``evidence`` (one sentence), ``counts`` and the first few ids
of what was lost, unexpected or duplicated, counted set by set like Jepsen's set checker.
Definitions and what gives ``unknown``: docs/invariants.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from pipeline.campaign._checks_common import (
    FAIL,
    FIRST,
    PASS,
    UNKNOWN,
    RawRun,
    valid_request_id,
    valid_trace_id,
    worst,
)
from pipeline.campaign.raw import StoredEvent

__all__ = ["check_i1", "check_i2", "check_i4", "emitter_dropped"]


def emitter_dropped(counters: dict[str, int]) -> int:
    """Events the emitters counted as dropped (their ``dropped_total``, else the sum)."""
    if "dropped_total" in counters:
        return counters["dropped_total"]
    return sum(v for k, v in counters.items() if k.startswith("dropped_"))


def check_i1(run: RawRun) -> dict[str, Any]:
    """Every probed logical request is in Kafka with one event per attempt."""
    title = "I1 completeness: one terminal event per attempt of every probed request"
    probed = sorted((c for c in run.calls if c.probed), key=lambda c: c.intended_at)
    unprobed = {c.trace_id for c in run.calls if not c.probed}
    by_trace: dict[str, set[str]] = defaultdict(set)
    deliveries = Counter(e.request_id for e in run.kafka_events)
    for event in run.kafka_events:
        by_trace[event.trace_id].add(event.request_id)
    expected = {c.trace_id: c.attempts for c in probed}
    lost = [c.trace_id for c in probed if len(by_trace.get(c.trace_id, ())) < c.attempts]
    extra = [c.trace_id for c in probed if len(by_trace.get(c.trace_id, ())) > c.attempts]
    unexpected = sorted(t for t in by_trace if t not in expected)
    duplicated = sorted(r for r, n in deliveries.items() if n > 1)
    lost_attempts = sum(max(0, c.attempts - len(by_trace.get(c.trace_id, ()))) for c in probed)
    summary = run.load_summary
    dropped = emitter_dropped(summary.emitter) if summary is not None else None
    counts: dict[str, Any] = {
        "attempted": len(probed),
        "attempts": sum(expected.values()),
        "acknowledged": summary.emitter.get("sent_events") if summary is not None else None,
        "found": sum(1 for c in probed if c.trace_id in by_trace),
        "complete": len(probed) - len(lost) - len(extra),
        "lost": len(lost),
        "lost_attempts": lost_attempts,
        "extra_attempt_events": len(extra),
        "duplicated": len(duplicated),
        "unexpected": len(unexpected),
        "unexpected_from_unprobed_calls": sum(1 for t in unexpected if t in unprobed),
        "events": len(run.kafka_events),
        "emitter_dropped": dropped,
    }
    result: dict[str, Any] = {
        "title": title,
        "counts": counts,
        "first_lost": lost[:FIRST],
        "first_unexpected": unexpected[:FIRST],
        "first_duplicated": duplicated[:FIRST],
        "first_extra": extra[:FIRST],
    }
    if not run.has("calls.jsonl") or not probed:
        return result | _say(UNKNOWN, "no ground truth: no probed call was recorded")
    if not run.has("kafka_events.jsonl"):
        return result | _say(UNKNOWN, "the probe topic was not read back (no kafka_events)")
    dup = f"; {len(duplicated)} request_ids delivered more than once (at-least-once)"
    dup = dup if duplicated else ""
    if lost or extra or unexpected:
        said = f" ({dropped} counted as dropped by the emitters)" if dropped else ""
        return result | _say(
            FAIL,
            f"{len(lost)} of {len(probed)} probed requests lost {lost_attempts} attempt "
            f"events{said}, {len(extra)} had more events than attempts, "
            f"{len(unexpected)} traces in Kafka were never made{dup}",
        )
    return result | _say(
        PASS,
        f"all {len(probed)} probed requests found with one event per attempt "
        f"({counts['attempts']} attempts){dup}",
    )


def check_i2(run: RawRun) -> dict[str, Any]:
    """Valid trace_id and request_id on every event, alert, WS message and RGW record seen."""
    title = "I2 correlation: valid trace_id and request_id on everything seen"
    sources: dict[str, list[tuple[object, object, str]]] = {
        "kafka": [(e.trace_id, e.request_id, e.request_id) for e in run.kafka_events],
        "alerts": [_alert_ids(a.record) for a in run.alerts],
        "websocket": [
            (m.trace_id, m.request_id, f"{m.client}@{m.received_at}")
            for m in run.ws
            if m.type in ("event", "alert")
        ],
        "rgw_listing": [(s.trace_id, s.request_id, s.key or s.request_id) for s in run.rgw_listing],
        "rgw_replay": [(s.trace_id, s.request_id, s.request_id) for s in run.rgw_replay],
    }
    counts: dict[str, Any] = {}
    first_invalid: list[str] = []
    for name, records in sources.items():
        invalid = [
            f"{name}:{where} trace_id={trace!r} request_id={request!r}"
            for trace, request, where in records
            if not (valid_trace_id(trace) and valid_request_id(request))
        ]
        counts[name] = {"records": len(records), "invalid": len(invalid)}
        first_invalid.extend(invalid[: FIRST - len(first_invalid)])
    total = sum(c["records"] for c in counts.values())
    bad = sum(c["invalid"] for c in counts.values())
    empty = [name for name, c in counts.items() if not c["records"]]
    result: dict[str, Any] = {"title": title, "counts": counts, "first_invalid": first_invalid}
    if bad:
        return result | _say(FAIL, f"{bad} of {total} records carry an invalid or missing id")
    if not total:
        return result | _say(UNKNOWN, "no event, alert, WebSocket message or RGW record was seen")
    none = f" (no records from {', '.join(empty)})" if empty else ""
    return result | _say(PASS, f"all {total} records carry valid ids{none}")


def check_i4(run: RawRun) -> dict[str, Any]:
    """Each critical event in Kafka is in RGW exactly once, by replay and by listing."""
    title = "I4 no critical event lost: every critical event in RGW exactly once"
    critical = sorted({e.request_id for e in run.kafka_events if e.severity == "critical"})
    readings = {
        "replay": _reading(critical, run.rgw_replay, run.has("rgw_replay.jsonl")),
        "listing": _reading(critical, run.rgw_listing, run.has("rgw_listing.jsonl")),
    }
    bad_sums = [o.key for o in run.rgw_objects if o.checksum_ok is False]
    counts: dict[str, Any] = {
        "expected": len(critical),
        "objects": len(run.rgw_objects),
        "checksum_failed": len(bad_sums),
        "checksum_unverified": sum(1 for o in run.rgw_objects if o.checksum_ok is None),
    }
    result: dict[str, Any] = {
        "title": title,
        "counts": counts,
        "readings": readings,
        "first_lost": _first(r["first_lost"] for r in readings.values()),
        "first_duplicated": _first(r["first_duplicated"] for r in readings.values()),
        "first_unexpected": _first(r["first_unexpected"] for r in readings.values()),
        "first_checksum_failed": bad_sums[:FIRST],
    }
    if not run.has("kafka_events.jsonl"):
        return result | _say(UNKNOWN, "the probe topic was not read back: no expected set")
    verdict = worst(r["verdict"] for r in readings.values())
    if bad_sums:
        verdict = FAIL
    elif run.rgw_listing and not run.has("rgw_objects.jsonl"):
        verdict = worst([verdict, UNKNOWN])
    parts = [f"{name}: {r['detail']}" for name, r in readings.items()]
    if bad_sums:
        parts.append(f"{len(bad_sums)} objects failed their checksum")
    if not critical:
        return result | _say(UNKNOWN, "no critical event in Kafka: nothing to find in RGW")
    return result | _say(verdict, f"{len(critical)} critical events; " + "; ".join(parts))


def _reading(critical: list[str], stored: list[StoredEvent], present: bool) -> dict[str, Any]:
    """One read-back of RGW against the expected set: Jepsen's set-checker counts."""
    expected = set(critical)
    seen = Counter(s.request_id for s in stored)
    found = [r for r in critical if r in seen]
    lost = [r for r in critical if r not in seen]
    duplicated = sorted(r for r, n in seen.items() if n > 1)
    unexpected = sorted(
        {s.request_id for s in stored if s.severity == "critical" and s.request_id not in expected}
    )
    counts = {
        "expected": len(critical),
        "found": len(found),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unexpected": len(unexpected),
        "records": len(stored),
    }
    if not present:
        verdict, detail = UNKNOWN, "not read (no file)"
    elif not critical:
        verdict, detail = UNKNOWN, "nothing expected"
    elif lost or duplicated or unexpected:
        verdict = FAIL
        detail = (
            f"{len(found)} of {len(critical)} found, {len(lost)} lost, "
            f"{len(duplicated)} stored more than once, {len(unexpected)} unexpected"
        )
    else:
        verdict, detail = PASS, f"all {len(critical)} found exactly once"
    return {
        "verdict": verdict,
        "detail": detail,
        **counts,
        "first_lost": lost[:FIRST],
        "first_duplicated": duplicated[:FIRST],
        "first_unexpected": unexpected[:FIRST],
    }


def _alert_ids(record: dict[str, Any]) -> tuple[object, object, str]:
    trace, request = record.get("trace_id"), record.get("request_id")
    examples = record.get("example_trace_ids") or []
    if isinstance(examples, list) and not all(valid_trace_id(t) for t in examples):
        trace = f"example_trace_ids={examples!r}"  # an invalid example makes the record invalid
    return trace, request, str(record.get("alert_id", request))


def _first(lists: Iterable[list[str]]) -> list[str]:
    merged: list[str] = []
    for ids in lists:
        merged.extend(i for i in ids if i not in merged)
    return merged[:FIRST]


def _say(verdict: str, evidence: str) -> dict[str, Any]:
    return {"verdict": verdict, "evidence": evidence}
