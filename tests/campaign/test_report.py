"""The report writer on a synthetic run folder written with raw.py's own writers.

The folder holds a small real plan (parsed from a profile with two incidents), a minute of
load ticks and samples, WebSocket messages and the incidents' records; the judgement is a
literal in the checker's shape. The end-to-end test seals the report with the real
provenance, sha256sum and ssh-keygen, and re-renders it byte for byte.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pipeline.campaign import provenance, report, signing
from pipeline.campaign.profile import REPO, parse_plan
from pipeline.campaign.raw import (
    IncidentRun,
    LoadSummary,
    LoadTick,
    PhaseLoad,
    RunMeta,
    Sample,
    WsMessage,
    write_json,
    write_jsonl,
)
from pipeline.campaign.report import ReportError, render_from_dir, write_report

PROFILE = """
version = 1
name = "tiny"
description = "Two incidents | one minute"
seed = 7
duration_s = 40
[load]
warmup_s = 5
ab_phase_s = 10
drain_s = 5
tiers = [{ at = 0, rate = 20 }]
[services]
routes = [{ template = "/users/{id}", weight = 1 }]
[[incident]]
kind = "http_5xx"
start = 5
end = 15
route = "/users/{id}"
expect_alerts = ["error-rate-fast-burn"]
[[incident]]
kind = "packet_loss"
start = 20
end = 30
"""
T0 = 1_765_000_000.0
PLOTS = 7


def make_run(
    run_dir: Path, *, seconds: int = 60, complete: bool = True, ws_per_second: int = 5
) -> Path:
    """A run folder as the runner, load generator and collector would leave it."""
    plan = parse_plan(PROFILE, where="tiny.toml")
    raw = run_dir / "raw"
    write_json(raw / "plan.json", plan)
    write_json(
        raw / "meta.json",
        RunMeta(
            profile="tiny",
            profile_path="campaigns/tiny.toml",
            profile_sha256=plan.sha256,
            quick=False,
            seed=plan.seed,
            t0=T0,
            started_at=T0 - 3,
            ended_at=T0 + seconds,
            complete=complete,
            stop_reason=None if complete else "interrupted",
            provenance={"commit": "abc123", "dirty": False, "machine": {"cores": 2}},
        ),
    )
    ticks = []
    for s in range(seconds):
        phase = plan.phase_at(s)
        in_fault = 20 <= s < 30
        ticks.append(
            LoadTick(
                t=T0 + s + 1,
                phase=phase,
                target_rate=plan.rate_at(s),
                started=20,
                completed=19 + (s % 2),
                dropped=int(s % 7 == 0),
                in_flight=3,
                ok=15,
                errors=5 if in_fault else 0,
                timeouts=s % 3,
                retries=2 if in_fault else 0,
                p50_ms=5.0 + s % 4,
                p95_ms=9.0 + s % 5,
                p99_ms=None if s == 10 else 40.0 + s,
                breakers={"up-a": "open" if in_fault else "closed", "up-b": "half_open"},
                rss_bytes=100 << 20,
            )
        )
    write_jsonl(raw / "load.jsonl", ticks)
    write_json(
        raw / "load_summary.json",
        LoadSummary(
            phases={
                "ab": PhaseLoad(scheduled=200, started=200, dropped_iterations=0),
                "load": PhaseLoad(
                    scheduled=800, started=795, dropped_iterations=5, first_dropped_at=[T0 + 21]
                ),
            },
            emitter={"dropped_full": 0},
            probe={"internal_errors": 0},
            histograms={"load": "load.hdr"},
        ),
    )
    write_jsonl(
        raw / "samples.jsonl",
        [
            Sample(
                t=T0 + s,
                processes={
                    "worker-1": {"rss_bytes": (80 + s) * 2**20, "cpu_s": s * 0.1},
                    "kafka": {"rss_bytes": 400 * 2**20, "cpu_s": s * 0.2},
                },
                queues={"emitter": {"depth": s % 10, "cap": 100, "drops": 0}},
            )
            for s in range(seconds)
        ],
    )
    write_jsonl(
        raw / "ws.jsonl",
        [
            WsMessage(
                client=f"c{k % 2}",
                type="event",
                received_at=T0 + s + k / ws_per_second,
                trace_id="a" * 32,
                ended_at=T0 + s + k / ws_per_second - 0.05 * (1 + k),
            )
            for s in range(seconds)
            for k in range(ws_per_second)
        ]
        + [WsMessage(client="c0", type="dropped", received_at=T0 + 5, count=3)],
    )
    write_jsonl(
        raw / "incidents.jsonl",
        [
            IncidentRun(
                id="01-http_5xx",
                kind="http_5xx",
                planned_start_s=20.0,
                planned_end_s=30.0,
                ran=True,
                started_at=T0 + 20.2,
                ended_at=T0 + 30.1,
                route="/users/{id}",
                expect_alerts=["error-rate-fast-burn"],
            ),
            IncidentRun(
                id="02-packet_loss",
                kind="packet_loss",
                planned_start_s=35.0,
                planned_end_s=45.0,
                ran=False,
                reason="needs root for a network namespace",
            ),
        ],
    )
    return run_dir


def judgement(**changes: Any) -> dict[str, Any]:
    inv = {
        name: {"verdict": "pass", "title": title, "evidence": f"{name} held", "counts": {"n": 1}}
        for name, title in (
            ("I1", "Completeness"),
            ("I2", "Correlation"),
            ("I3", "Bounded resources"),
            ("I5", "Non-interference"),
        )
    }
    inv["I4"] = {
        "verdict": "fail",
        "title": "No critical event lost",
        "evidence": "one critical event is not in RGW",
        "counts": {"attempted": 120, "found": 119, "lost": 1, "duplicated": 0},
        "first_lost": ["req-0042"],
        "first_unexpected": [],
        "first_duplicated": [],
    }
    doc: dict[str, Any] = {
        "overall": "fail",
        "invariants": inv,
        "slos": [
            {"name": "ws-delay", "verdict": "pass", "source": "seed", "detail": "p99 0.3 s"},
            {"name": "api-p95", "verdict": "unknown", "source": "seed", "detail": "no samples"},
        ],
        "incidents": [
            {
                "id": "01-http_5xx",
                "kind": "http_5xx",
                "ran": True,
                "reason": None,
                "start": 20.2,
                "end": 30.1,
                "expect_alerts": ["error-rate-fast-burn"],
                "alerts_raised": [{"rule": "error-rate-fast-burn", "fired_at": T0 + 25}],
                "alert_verdict": "pass",
                "resolve_verdict": "unknown",
                "alert_detail": "fired 4.8 s after the start, not resolved yet",
            },
            {
                "id": "02-packet_loss",
                "kind": "packet_loss",
                "ran": False,
                "reason": "needs root for a network namespace",
                "expect_alerts": [],
                "alerts_raised": [],
                "alert_verdict": None,
                "resolve_verdict": None,
            },
        ],
        "alerts": {
            "total": 2,
            "unexplained_count": 1,
            "unexplained": [{"rule": "latency-p99", "at": 3.0}],
            "by_status": {"firing": 1, "resolved": 1},
            "verdict": "fail",
            "detail": "1 alerts fired with no incident around them",
        },
        "load": {
            "calls": 1000,
            "dropped_iterations": 5,
            "achieved_rate": 19.9,
            "phases": {"load": {"seconds": 40}},
        },
    }
    doc.update(changes)
    return doc


def read(files: report.ReportFiles) -> tuple[dict[str, Any], str, str]:
    return json.loads(files.json.read_text()), files.markdown.read_text(), files.html.read_text()


def test_report_json_has_the_required_keys_and_verdicts(tmp_path: Path) -> None:
    files = write_report(make_run(tmp_path), judgement(), {"commit": "abc123", "dirty": False})
    doc, _, _ = read(files)
    assert doc["format_version"] == 1 and doc["profile"] == "tiny"
    assert doc["overall"] == "fail" and doc["complete"] is True and doc["quick"] is False
    assert sorted(doc["invariants"]) == ["I1", "I2", "I3", "I4", "I5"]
    assert doc["invariants"]["I4"]["verdict"] == "fail"
    assert doc["invariants"]["I4"]["first_lost"] == ["req-0042"]
    assert [(s["name"], s["verdict"]) for s in doc["slos"]] == [
        ("ws-delay", "pass"),
        ("api-p95", "unknown"),
    ]
    by_id = {i["id"]: i for i in doc["incidents"]}
    assert by_id["01-http_5xx"]["ran"] is True and by_id["01-http_5xx"]["alert_verdict"] == "pass"
    assert by_id["01-http_5xx"]["start_s"] == pytest.approx(20.2)
    assert by_id["02-packet_loss"] == by_id["02-packet_loss"] | {
        "kind": "packet_loss",
        "ran": False,
        "reason": "needs root for a network namespace",
    }
    prov = doc["provenance"]
    assert prov["commit"] == "abc123" and prov["seed"] == 7
    assert prov["profile_sha256"] == parse_plan(PROFILE).sha256
    assert doc["generated_at"] == "2025-12-06T05:47:40+00:00"
    assert [p["name"] for p in doc["phases"]] == ["warmup", "ab", "load", "drain"]
    load_phase = doc["phases"][2]
    assert load_phase["dropped_iterations"] == 5 and load_phase["target_rate_mean"] == 20
    assert doc["load"]["calls"] == 1000 and doc["load"]["ticks"] == 60


def test_a_planned_incident_with_no_record_did_not_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_jsonl(run / "raw" / "incidents.jsonl", [])
    doc, md, _ = read(write_report(run, judgement(incidents=[]), {}))
    assert [(i["kind"], i["ran"]) for i in doc["incidents"]] == [
        ("http_5xx", False),
        ("packet_loss", False),
    ]
    assert "the run ended before it" in doc["incidents"][0]["reason"]
    assert "NOT RUN" in md


def test_rendering_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    first = [p.read_bytes() for p in read_paths(write_report(run, judgement(), {"x": 1}))]
    second = [p.read_bytes() for p in read_paths(write_report(run, judgement(), {"x": 1}))]
    assert first == second


def read_paths(files: report.ReportFiles) -> list[Path]:
    return [files.json, files.markdown, files.html]


def test_html_is_self_contained_with_one_svg_per_plot(tmp_path: Path) -> None:
    _, _, html = read(write_report(make_run(tmp_path), judgement(), {}))
    assert "http://" not in html and "https://" not in html
    lowered = html.lower()
    for reference in ("<script", "<link", "@import", "src=", "<iframe", "<img"):
        assert reference not in lowered, reference
    assert re.findall(r"url\((?!#)", html) == []
    assert re.findall(r'href="(?!#)', html) == []
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.DOTALL)
    assert len(svgs) == PLOTS
    for svg in svgs:
        ET.fromstring(svg)  # well-formed: the page's parser will not mangle it
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids repeat across plots"
    for title in ("Caller latency", "Circuit breakers", "Resident memory", "Throughput"):
        assert title in html
    assert "01-http_5xx" in svgs[0], "incident band label"
    assert "no data" not in html


def test_plots_with_no_data_say_so(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for name in ("load.jsonl", "samples.jsonl", "ws.jsonl"):
        (run / "raw" / name).unlink()
    _, _, html = read(write_report(run, judgement(), {}))
    assert html.count("<svg") == PLOTS
    assert html.count(">no data<") == PLOTS


def test_incomplete_run_gets_a_banner(tmp_path: Path) -> None:
    _, md, html = read(write_report(make_run(tmp_path, complete=False), judgement(), {}))
    assert "INCOMPLETE RUN" in md and "interrupted" in md
    assert "INCOMPLETE RUN" in html
    complete = tmp_path / "complete"
    _, md_ok, _ = read(write_report(make_run(complete), judgement(), {}))
    assert "INCOMPLETE" not in md_ok


def test_the_checker_can_find_a_run_incomplete(tmp_path: Path) -> None:
    judged = judgement(complete=False, incomplete_reason="the load generator stopped early")
    doc, md, _ = read(write_report(make_run(tmp_path), judged, {}))
    assert doc["complete"] is False
    assert doc["stop_reason"] == "the load generator stopped early"
    assert "INCOMPLETE RUN" in md and "load generator stopped early" in md


def test_markdown_holds_each_section(tmp_path: Path) -> None:
    _, md, _ = read(write_report(make_run(tmp_path), judgement(), {"commit": "abc123"}))
    assert md.startswith("# Conformance report: tiny\n")
    assert "**Overall verdict: FAIL**" in md
    assert "### I4 No critical event lost: FAIL" in md
    assert "| first_lost | req-0042 |" in md
    assert "| lost | 1 |" in md
    assert "| api-p95 | UNKNOWN | seed | no samples |" in md
    assert (
        "| 01-http_5xx | http_5xx | 20.2-30.1 | ran | error-rate-fast-burn | "
        "error-rate-fast-burn | PASS | UNKNOWN | fired 4.8 s after the start" in md
    )
    assert (
        "| 02-packet_loss | packet_loss | 35.0-45.0 | NOT RUN | none | none |  |  | needs root"
        in md
    )
    assert "### Alerts FAIL" in md
    assert "fired with no incident to explain them: 1." in md
    assert "| by_status | firing=1; resolved=1 |" in md
    assert "| phases |" not in md
    assert "| load | 15 | 55 | 20 | 20 | 800 | 795 | 5 |" in md
    assert "git checkout abc123" in md
    assert "egresswatch campaign run campaigns/tiny.toml --out DIR" in md
    assert "Two incidents \\| one minute" in md  # a | in the data cannot break a table


def test_checker_titles_and_nested_figures_read_well(tmp_path: Path) -> None:
    judged = judgement()
    judged["invariants"]["I3"] = {
        "verdict": "fail",
        "title": "I3 bounded resources: flat memory, queues under their caps",
        "evidence": "RSS grows",
        "counts": {"samples": 60},
        "memory": {"verdict": "fail", "processes": {"worker-1": {"slope_mib_per_min": 60.0}}},
        "first_invalid": ["x"] * 12,
    }
    _, md, html = read(write_report(make_run(tmp_path), judged, {}))
    assert "### I3 bounded resources: flat memory, queues under their caps: FAIL" in md
    assert "I3 I3" not in md and "I3 I3" not in html
    assert "| memory.processes.worker-1.slope_mib_per_min | 60 |" in md
    assert "| first_invalid | x, x, x, x, x, x, x, x, x, x (+2 more) |" in md


def test_text_from_the_data_is_escaped(tmp_path: Path) -> None:
    bad = judgement()
    bad["invariants"]["I2"]["evidence"] = "<script>alert(1)</script> a|b\nc"
    bad["slos"][0]["detail"] = '<img src="http://x">'
    _, md, html = read(write_report(make_run(tmp_path), bad, {}))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;img src=&quot;http://x&quot;&gt;" in html
    assert "<script>" not in md and "a\\|b c" in md


def test_a_missing_invariant_is_unknown_never_pass(tmp_path: Path) -> None:
    partial = judgement(overall="unknown")
    del partial["invariants"]["I3"]
    doc, _, _ = read(write_report(make_run(tmp_path), partial, {}))
    assert doc["invariants"]["I3"]["verdict"] == "unknown"
    assert "no verdict for I3" in doc["invariants"]["I3"]["evidence"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"overall": "ok"}, "overall must be one of"),
        ({"invariants": []}, "invariants must be an object"),
        ({"invariants": {"I1": {"verdict": "green"}}}, r"invariants\.I1\.verdict"),
        ({"slos": [{"verdict": "pass"}]}, r"slos\[0\] has no 'name'"),
        ({"slos": [{"name": "x", "verdict": "meh"}]}, r"slos\[0\] \(x\)"),
        ({"incidents": [{"id": "zz"}]}, "incident 'zz': no 'kind'"),
        ({"alerts": [1]}, "alerts must be an object"),
    ],
)
def test_a_bad_judgement_is_named(tmp_path: Path, change: dict[str, Any], message: str):
    with pytest.raises(ReportError, match=message):
        write_report(make_run(tmp_path), judgement(**change), {})


def test_a_folder_that_is_not_a_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"raw/meta\.json: missing"):
        write_report(tmp_path, judgement(), {})
    make_run(tmp_path)
    (tmp_path / "raw" / "plan.json").write_text("{}")
    with pytest.raises(ReportError, match=r"plan\.json: cannot read it as Plan"):
        write_report(tmp_path, judgement(), {})


def test_a_run_with_only_its_metadata_still_reports(tmp_path: Path) -> None:
    run = make_run(tmp_path, complete=False)
    for path in (run / "raw").iterdir():
        if path.name != "meta.json":
            path.unlink()
    doc, md, _ = read(write_report(run, judgement(incidents=[], load={}), {}))
    assert doc["incidents"] == [] and doc["phases"] == []
    assert "No incident was scheduled." in md


def test_thirty_minutes_of_data_render_fast(tmp_path: Path) -> None:
    run = make_run(tmp_path, seconds=1800, ws_per_second=100)
    started = time.perf_counter()
    files = write_report(run, judgement(), {})
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"render took {elapsed:.1f} s"
    assert files.html.stat().st_size < 5_000_000


def test_sealed_report_rerenders_to_the_same_digest(tmp_path: Path) -> None:
    """Real provenance, sha256sum and ssh-keygen on a written report, then a re-render."""
    run = make_run(tmp_path / "run")
    facts = provenance.collect(REPO, REPO / "campaigns" / "nominal.toml", {"kafka": "3.9.2"})
    write_report(run, judgement(), facts)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signing.write_digest(run)
    signing.sign(run, key)
    assert subprocess.run(["sha256sum", "-c", "report.json.sha256"], cwd=run).returncode == 0

    doc = json.loads((run / "report.json").read_text())
    assert doc["provenance"]["commit"] == facts["commit"]
    assert doc["provenance"]["machine"]["cores"] >= 1
    assert doc["provenance"]["packages"]["msgspec"] == facts["packages"]["msgspec"]
    # The run's own profile hash wins; the file read later is kept beside it.
    assert doc["provenance"]["profile_sha256"] == parse_plan(PROFILE).sha256
    assert doc["provenance"]["profile_file_sha256_now"] == facts["profile_sha256"]

    render_from_dir(run, judgement(), facts)
    assert signing.verify(run).ok
    # Without a provenance argument, the one the run recorded in meta.json.
    render_from_dir(run, judgement())
    doc = json.loads((run / "report.json").read_text())
    assert doc["provenance"]["machine"] == {"cores": 2}
    assert not signing.verify(run).digest_ok
