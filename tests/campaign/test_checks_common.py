"""Properties of the checker's pieces: folding verdicts, id validity, RSS slope, and that no
kind of empty input is ever judged a pass."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.campaign._checks_common import quantile, valid_request_id, valid_trace_id, worst
from pipeline.campaign._checks_resources import rss_slope_mib_per_min
from pipeline.campaign.raw import RunMeta, write_json
from pipeline.campaign.verdicts import judge, overall
from tests.campaign.runs import RULES, T0, plan
from tests.campaign.test_verdicts import _all_verdicts

RAW_FILES = (
    "calls.jsonl",
    "load.jsonl",
    "load_summary.json",
    "incidents.jsonl",
    "samples.jsonl",
    "kafka_events.jsonl",
    "kafka_summary.json",
    "rgw_listing.jsonl",
    "rgw_objects.jsonl",
    "rgw_replay.jsonl",
    "ws.jsonl",
    "ws_clients.jsonl",
    "alerts.jsonl",
    "latency/ab-probed.hdr",
    "latency/ab-baseline.hdr",
)
VERDICTS = st.sampled_from(["pass", "fail", "unknown"])


@given(st.lists(VERDICTS))
def test_worst_is_pass_only_for_a_non_empty_all_pass_list(verdicts: list[str]) -> None:
    folded = worst(verdicts)
    if "fail" in verdicts:
        assert folded == "fail"
    elif verdicts and set(verdicts) == {"pass"}:
        assert folded == "pass"
    else:
        assert folded == "unknown"


@given(st.lists(VERDICTS))
def test_an_incomplete_run_is_never_pass(verdicts: list[str]) -> None:
    assert overall(verdicts, complete=False) != "pass"


def test_id_validity() -> None:
    assert valid_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
    assert not valid_trace_id("0" * 32)
    assert not valid_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736")
    assert not valid_trace_id("4bf92f3577b34da6a3ce929d0e0e473")
    assert not valid_trace_id(None)
    assert valid_request_id("00f067aa0ba902b7")
    assert not valid_request_id("0" * 16)
    assert not valid_request_id("00f067aa0ba902b7\n")


@given(st.text(max_size=40))
def test_any_text_that_is_not_32_lowercase_hex_is_no_trace_id(text: str) -> None:
    ok = len(text) == 32 and set(text) <= set("0123456789abcdef") and set(text) != {"0"}
    assert valid_trace_id(text) == ok


@given(
    st.floats(-500, 500, allow_nan=False),
    st.floats(1e6, 1e9),
    st.integers(2, 200),
)
def test_rss_slope_of_a_line_is_its_slope(mib_per_min: float, base: float, n: int) -> None:
    points = [(T0 + i, base + mib_per_min * 1024 * 1024 * i / 60) for i in range(n)]
    slope = rss_slope_mib_per_min(points)
    assert slope is not None
    assert abs(slope - mib_per_min) < 1e-6 * max(1.0, abs(mib_per_min)) + 1e-3


def test_quantile_is_nearest_rank() -> None:
    assert quantile([], 0.99) is None
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([float(i) for i in range(1, 101)], 0.99) == 99.0


@settings(max_examples=60, deadline=None)
@given(
    present=st.sets(st.sampled_from(RAW_FILES)),
    with_meta=st.booleans(),
    with_plan=st.booleans(),
    complete=st.booleans(),
    t0=st.sampled_from([0.0, T0]),
)
def test_empty_inputs_of_any_kind_never_pass(
    present: set[str], with_meta: bool, with_plan: bool, complete: bool, t0: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for name in present:  # there, but holding nothing
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            (raw / name).write_bytes(b"")
        if with_meta:
            meta = RunMeta(
                profile="synthetic",
                profile_path="x.toml",
                profile_sha256="0" * 64,
                quick=False,
                seed=1,
                t0=t0,
                started_at=T0,
                ended_at=T0 + 200,
                complete=complete,
            )
            write_json(raw / "meta.json", meta)
        if with_plan:
            write_json(raw / "plan.json", plan())
        result = judge(raw, RULES)
    assert "pass" not in _all_verdicts(result)
    assert result["overall"] == "unknown"
