"""The campaign checker against synthetic run folders: a good run passes, each known-bad run
fails the invariant it breaks (naming the ids), no evidence is never a pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.campaign.raw import IncidentRun, KafkaEvent, read_jsonl, write_json, write_jsonl
from pipeline.campaign.verdicts import RunFolderError, judge
from tests.campaign.runs import RULES, T0, RunSpec, plan, write_run


def _judge(tmp_path: Path, spec: RunSpec | None = None) -> dict[str, Any]:
    return judge(write_run(tmp_path, spec or RunSpec()), RULES)


def _all_verdicts(value: Any) -> list[str]:
    """Every verdict anywhere in a judgement (overall, invariants, parts, SLOs, incidents)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("verdict", "overall", "alert_verdict", "resolve_verdict", "fired"):
                if isinstance(item, str):
                    found.append(item)
            found.extend(_all_verdicts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_all_verdicts(item))
    return found


def _critical_ids(raw: Path) -> list[str]:
    events = read_jsonl(raw / "kafka_events.jsonl", KafkaEvent)
    return [e.request_id for e in events if e.severity == "critical"]


def test_a_good_run_passes_everything(tmp_path: Path) -> None:
    result = _judge(tmp_path)
    assert result["overall"] == "pass"
    assert {k: v["verdict"] for k, v in result["invariants"].items()} == dict.fromkeys(
        ("I1", "I2", "I3", "I4", "I5"), "pass"
    )
    assert [s["verdict"] for s in result["slos"]] == ["pass"] * len(result["slos"])
    names = {s["name"] for s in result["slos"]}
    assert {"latency-p99", "error-rate-fast-burn", "ws-delay-p99", "api-p95"} <= names
    fault = next(i for i in result["incidents"] if i["kind"] == "http_5xx")
    assert fault["alert_verdict"] == "pass"
    assert fault["resolve_verdict"] == "pass"
    assert [a["rule"] for a in fault["alerts_raised"]] == ["error-rate-fast-burn"]
    i1 = result["invariants"]["I1"]["counts"]
    assert i1["lost"] == i1["unexpected"] == i1["duplicated"] == 0
    assert i1["attempted"] == i1["found"] > 0
    assert result["load"]["dropped_iterations"] == 0
    assert json.loads(json.dumps(result)) == result
    assert _judge(tmp_path / "again") == result  # deterministic


def test_a_sink_that_loses_one_critical_event_fails_i4_naming_it(tmp_path: Path) -> None:
    raw = write_run(tmp_path, RunSpec(lose_critical=1))
    lost = _critical_ids(raw)[0]
    i4 = judge(raw, RULES)["invariants"]["I4"]
    assert i4["verdict"] == "fail"
    assert i4["first_lost"] == [lost]
    for reading in i4["readings"].values():
        assert reading["verdict"] == "fail"
        assert reading["lost"] == 1
        assert reading["first_lost"] == [lost]


def test_duplicates_in_rgw_fail_i4_as_duplicated(tmp_path: Path) -> None:
    raw = write_run(tmp_path, RunSpec(rgw_duplicates=2))
    i4 = judge(raw, RULES)["invariants"]["I4"]
    assert i4["verdict"] == "fail"
    assert i4["readings"]["listing"]["duplicated"] == 2
    assert i4["readings"]["listing"]["lost"] == 0
    assert i4["first_duplicated"] == _critical_ids(raw)[:2]


def test_a_probe_sink_that_drops_events_fails_i1_and_the_drop_count(tmp_path: Path) -> None:
    result = _judge(tmp_path, RunSpec(drop_kafka_events=3))
    i1 = result["invariants"]["I1"]
    assert i1["verdict"] == "fail"
    assert i1["counts"]["lost_attempts"] == 3
    assert len(i1["first_lost"]) == i1["counts"]["lost"] >= 1
    drops = result["invariants"]["I3"]["drops"]["checks"]["emitter"]
    assert (drops["counted"], drops["observed"], drops["verdict"]) == (0, 3, "fail")
    assert result["overall"] == "fail"


def test_events_the_emitter_counted_as_dropped_are_still_lost_but_said(tmp_path: Path) -> None:
    result = _judge(tmp_path, RunSpec(drop_kafka_events=2, drops_counted=True))
    i1 = result["invariants"]["I1"]
    assert i1["verdict"] == "fail"
    assert "2 counted as dropped by the emitters" in i1["evidence"]
    assert result["invariants"]["I3"]["drops"]["verdict"] == "pass"


def test_invalid_ids_fail_i2(tmp_path: Path) -> None:
    i2 = _judge(tmp_path, RunSpec(invalid_trace_ids=1))["invariants"]["I2"]
    assert i2["verdict"] == "fail"
    assert i2["counts"]["kafka"]["invalid"] == 1
    # The first event is critical: Kafka, its WebSocket message and both RGW readings.
    sources = [line.split(":")[0] for line in i2["first_invalid"]]
    assert sources == ["kafka", "websocket", "rgw_listing", "rgw_replay"]


def test_growing_rss_fails_i3(tmp_path: Path) -> None:
    i3 = _judge(tmp_path, RunSpec(rss_growth_mib_per_min=100))["invariants"]["I3"]
    assert i3["verdict"] == "fail"
    worker = i3["memory"]["processes"]["worker-0"]
    assert worker["verdict"] == "fail"
    assert worker["slope_mib_per_min"] == pytest.approx(100, rel=0.02)
    assert i3["memory"]["processes"]["load"]["verdict"] == "pass"


def test_probe_overhead_over_the_bound_fails_i5(tmp_path: Path) -> None:
    i5 = _judge(tmp_path, RunSpec(ab_overhead=0.3))["invariants"]["I5"]
    assert i5["verdict"] == "fail"
    assert i5["ab"]["verdict"] == "fail"
    assert i5["ab"]["median_overhead"] == pytest.approx(0.3, abs=0.03)


def test_an_expected_alert_that_never_fired_fails(tmp_path: Path) -> None:
    result = _judge(tmp_path, RunSpec(alert_fires=False))
    fault = next(i for i in result["incidents"] if i["kind"] == "http_5xx")
    assert fault["alert_verdict"] == "fail"
    assert "error-rate-fast-burn: no alert" in fault["alert_detail"]
    assert result["overall"] == "fail"


def test_an_incomplete_run_never_passes(tmp_path: Path) -> None:
    result = _judge(tmp_path, RunSpec(complete=False))
    assert result["invariants"]["I1"]["verdict"] == "pass"
    assert result["overall"] == "unknown"
    assert result["complete"] is False
    assert "interrupted" in result["incomplete_reason"]


def test_a_sustained_error_burst_outside_incidents_fails_its_slo(tmp_path: Path) -> None:
    result = _judge(tmp_path, RunSpec(error_burst=(112.0, 142.0)))
    slo = next(s for s in result["slos"] if s["name"] == "error-rate-fast-burn")
    assert slo["verdict"] == "fail"
    first = slo["breaches"][0]
    assert first["route"] == "/users/{id}"
    assert T0 + 112 <= first["start"] <= T0 + 142
    assert next(s for s in result["slos"] if s["name"] == "latency-p99")["verdict"] == "pass"


def test_an_incident_that_did_not_run_makes_its_part_unknown(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    runs = list(read_jsonl(raw / "incidents.jsonl", IncidentRun))
    for record in runs:
        if record.kind == "kafka_down":
            record.ran, record.reason = False, "kafka could not be stopped"
    write_jsonl(raw / "incidents.jsonl", runs)
    result = judge(raw, RULES)
    i5 = result["invariants"]["I5"]
    assert i5["kafka_down"]["verdict"] == "unknown"
    assert i5["rgw_down"]["verdict"] == "pass"
    assert i5["verdict"] == "unknown"
    kafka = next(i for i in result["incidents"] if i["kind"] == "kafka_down")
    assert (kafka["ran"], kafka["reason"]) == (False, "kafka could not be stopped")


def test_an_alert_the_run_ended_too_soon_to_see_resolve_is_unknown(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    lines = (raw / "alerts.jsonl").read_text().splitlines()
    (raw / "alerts.jsonl").write_text(lines[0] + "\n")  # the FIRING record only
    fault = next(i for i in judge(raw, RULES)["incidents"] if i["kind"] == "http_5xx")
    assert fault["alert_verdict"] == "pass"
    assert fault["resolve_verdict"] == "unknown"
    assert "the run ended" in fault["alert_detail"]


def test_an_alert_with_no_incident_around_it_is_unexplained(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    record = {
        "status": "firing",
        "rule": "latency-p99",
        "alert_id": "ab" * 16,
        "service": "svc-00",
        "route": "/users/{id}",
        "fired_at": T0 + 5,
        "trace_id": "cd" * 16,
        "request_id": "ef" * 8,
    }
    with (raw / "alerts.jsonl").open("a") as out:
        out.write(json.dumps({"received_at": T0 + 5, "record": record}) + "\n")
    alerts = judge(raw, RULES)["alerts"]
    assert alerts["verdict"] == "fail"
    assert [a["alert_id"] for a in alerts["unexplained"]] == ["ab" * 16]


@pytest.mark.parametrize("keep", [(), ("meta.json",), ("meta.json", "plan.json")])
def test_an_empty_run_is_unknown_everywhere(tmp_path: Path, keep: tuple[str, ...]) -> None:
    full = write_run(tmp_path / "full")
    raw = tmp_path / "empty" / "raw"
    raw.mkdir(parents=True)
    for name in keep:
        (raw / name).write_bytes((full / name).read_bytes())
    result = judge(raw, RULES)
    assert "pass" not in _all_verdicts(result)
    assert result["overall"] == "unknown"
    assert {v["verdict"] for v in result["invariants"].values()} == {"unknown"}


def test_a_damaged_file_is_named(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    (raw / "calls.jsonl").write_text('{"trace_id": 1}\n')
    with pytest.raises(RunFolderError, match=r"calls\.jsonl: cannot read it as CallRecord"):
        judge(raw, RULES)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    with (raw / "ws.jsonl").open("a") as out:
        out.write('["ws-0","ev')
    assert judge(raw, RULES)["overall"] == "pass"


def test_a_plan_round_trips_through_plan_json(tmp_path: Path) -> None:
    write_json(tmp_path / "plan.json", plan())
    raw = write_run(tmp_path / "run")
    assert (raw / "plan.json").read_bytes() == (tmp_path / "plan.json").read_bytes()


def test_a_damaged_histogram_is_named(tmp_path: Path) -> None:
    raw = write_run(tmp_path)
    (raw / "latency" / "ab-probed.hdr").write_text("not a histogram")
    with pytest.raises(RunFolderError, match=r"ab-probed\.hdr: not an encoded HDR histogram"):
        judge(raw, RULES)
