"""Invariant I5 (non-interference): the probe's overhead, Kafka down and RGW down vs the caller.

Parts, folded with :func:`worst`:

- ``ab``: the A/B phase's HDR histograms ``ab-probed`` vs ``ab-baseline`` (same arrival rate,
  same run): ``p50(probed) / p50(baseline) - 1 <= judge.probe_median_overhead_max``; p95 and
  p99 ratios are reported. Fewer than :data:`MIN_AB_COUNT` values in either: unknown.
- ``kafka_down`` / ``rgw_down``: for each such incident, the p99 latency of the probed calls
  scheduled (``intended_at``) inside it vs that of the unprobed control calls interleaved
  with them (the load generator alternates both around each outage), at most
  ``judge.<kind>_p99_ratio_max``: on one machine the outage itself (a broker stopping and
  starting on the same cores) slows every caller, so the probe's share is what the control
  group isolates. The p99 of the probed calls just before is reported beside it. Calls inside
  a caller-affecting fault (HTTP, TCP, packet loss) and cardinality-attack calls are left
  out. No such incident, one that did not run, or fewer than :data:`MIN_WINDOW_CALLS` calls
  in a group: unknown.
- ``probe_errors``: the probe's ``internal_errors`` counter is 0 (no call failed because of
  the probe); no load summary: unknown.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from hdrh.codec import HdrCookieException, HdrHistogramSettingsException, HdrLengthException
from hdrh.histogram import HdrHistogram

from pipeline.campaign._checks_common import (
    CALLER_FAULTS,
    FAIL,
    PASS,
    UNKNOWN,
    Band,
    RawRun,
    RunFolderError,
    incident_bands,
    quantile,
    worst,
)

__all__ = ["MIN_AB_COUNT", "MIN_WINDOW_CALLS", "check_i5", "read_histogram"]

MIN_AB_COUNT: Final = 100
MIN_WINDOW_CALLS: Final = 20


def _histogram_path(run: RawRun, names: Mapping[str, str], name: str) -> Path:
    """``LoadSummary.histograms`` names files relative to ``raw/`` (``latency/<name>.hdr``)."""
    return run.raw_dir / names.get(name, f"latency/{name}.hdr")


def read_histogram(path: Path) -> HdrHistogram | None:
    """An HDR histogram file (base64 of ``encode()``); None if missing or empty.

    Raises :class:`RunFolderError` naming the file when it holds something else.
    """
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read it: {exc}") from exc
    if not text:
        return None
    try:
        base64.b64decode(text, validate=True)
        return HdrHistogram.decode(text)
    except (
        ValueError,
        binascii.Error,
        zlib.error,
        HdrCookieException,
        HdrLengthException,
        HdrHistogramSettingsException,
    ) as exc:
        raise RunFolderError(f"{path}: not an encoded HDR histogram: {exc}") from exc


def check_i5(run: RawRun) -> dict[str, Any]:
    title = "I5 non-interference: the probe never slows or fails the call"
    parts: dict[str, Any] = {"ab": _ab(run)}
    bands = incident_bands(run)
    for kind in ("kafka_down", "rgw_down"):
        parts[kind] = _outage(run, bands, kind)
    parts["probe_errors"] = _probe_errors(run)
    verdict = worst(p["verdict"] for p in parts.values())
    evidence = "; ".join(f"{name}: {p['detail']}" for name, p in parts.items())
    counts = {
        "ab_probed": parts["ab"].get("probed_count"),
        "ab_baseline": parts["ab"].get("baseline_count"),
        "internal_errors": parts["probe_errors"].get("internal_errors"),
    }
    return {"title": title, "verdict": verdict, "evidence": evidence, "counts": counts, **parts}


def _ab(run: RawRun) -> dict[str, Any]:
    if run.plan is None:
        return {"verdict": UNKNOWN, "detail": "no plan: no bound"}
    bound = run.plan.judge.probe_median_overhead_max
    names = run.load_summary.histograms if run.load_summary is not None else {}
    probed = read_histogram(_histogram_path(run, names, "ab-probed"))
    base = read_histogram(_histogram_path(run, names, "ab-baseline"))
    out: dict[str, Any] = {
        "bound": bound,
        "probed_count": probed.get_total_count() if probed is not None else 0,
        "baseline_count": base.get_total_count() if base is not None else 0,
    }
    if probed is None or base is None:
        return out | {"verdict": UNKNOWN, "detail": "no A/B histograms"}
    if min(out["probed_count"], out["baseline_count"]) < MIN_AB_COUNT:
        return out | {
            "verdict": UNKNOWN,
            "detail": f"fewer than {MIN_AB_COUNT} calls in an A/B arm "
            f"({out['probed_count']} probed, {out['baseline_count']} baseline)",
        }
    for q in (50, 95, 99):
        p, b = probed.get_value_at_percentile(q), base.get_value_at_percentile(q)
        out[f"p{q}_probed"], out[f"p{q}_baseline"] = p, b
        out[f"p{q}_ratio"] = round(p / b, 4) if b > 0 else None
    ratio = out["p50_ratio"]
    if ratio is None:
        return out | {"verdict": UNKNOWN, "detail": "baseline median is 0"}
    overhead = ratio - 1.0
    out["median_overhead"] = round(overhead, 4)
    verdict = PASS if overhead <= bound else FAIL
    detail = (
        f"median overhead {overhead:+.1%} (bound {bound:.0%}), "
        f"p95 x{out['p95_ratio']}, p99 x{out['p99_ratio']}"
    )
    return out | {"verdict": verdict, "detail": detail}


def _outage(run: RawRun, bands: list[Band], kind: str) -> dict[str, Any]:
    if run.plan is None:
        return {"verdict": UNKNOWN, "detail": "no plan", "incidents": []}
    limit: float = getattr(run.plan.judge, f"{kind}_p99_ratio_max")
    ours = [b for b in bands if b.kind == kind]
    if not ours:
        return {
            "verdict": UNKNOWN,
            "detail": f"the profile has no {kind} incident",
            "incidents": [],
        }
    noisy = [b for b in bands if b.kind in CALLER_FAULTS]
    calls = [
        c
        for c in run.calls
        if not c.cardinality_attack and not any(b.start <= c.intended_at < b.end for b in noisy)
    ]
    judged: list[dict[str, Any]] = []
    for band in ours:
        row: dict[str, Any] = {"id": band.id, "limit": limit}
        if not band.ran:
            judged.append(row | {"verdict": UNKNOWN, "detail": f"{band.id} did not run"})
            continue
        length = band.end - band.start
        inside = [c for c in calls if band.start <= c.intended_at < band.end]
        during = [c.latency_ms for c in inside if c.probed]
        control = [c.latency_ms for c in inside if not c.probed]
        before = [
            c.latency_ms
            for c in calls
            if c.probed and band.start - length <= c.intended_at < band.start
        ]
        p_during, p_control, p_before = (quantile(v, 0.99) for v in (during, control, before))
        row |= {
            "calls_during": len(during),
            "control_calls_during": len(control),
            "calls_before": len(before),
            "p99_during_ms": p_during,
            "p99_control_during_ms": p_control,
            "p99_before_ms": p_before,
        }
        if p_during is not None and p_before:
            row["ratio_to_before"] = round(p_during / p_before, 3)
        if min(len(during), len(control)) < MIN_WINDOW_CALLS or not p_control:
            detail = f"{band.id}: fewer than {MIN_WINDOW_CALLS} probed or control calls during it"
            judged.append(row | {"verdict": UNKNOWN, "detail": detail})
            continue
        assert p_during is not None
        ratio = p_during / p_control
        verdict = PASS if ratio <= limit else FAIL
        detail = (
            f"{band.id}: probed p99 {p_during:.1f} ms vs unprobed control {p_control:.1f} ms "
            f"during it (x{ratio:.2f}, bound x{limit}); "
            f"{p_before or 0:.1f} ms before it"
        )
        judged.append(row | {"ratio": round(ratio, 3), "verdict": verdict, "detail": detail})
    verdict = worst(r["verdict"] for r in judged)
    return {
        "verdict": verdict,
        "detail": "; ".join(r["detail"] for r in judged),
        "incidents": judged,
    }


def _probe_errors(run: RawRun) -> dict[str, Any]:
    if run.load_summary is None:
        return {"verdict": UNKNOWN, "detail": "no load summary", "internal_errors": None}
    errors = run.load_summary.probe.get("internal_errors")
    if errors is None:
        return {"verdict": UNKNOWN, "detail": "no internal_errors counter", "internal_errors": None}
    verdict = PASS if errors == 0 else FAIL
    detail = f"{errors} calls failed inside the probe" if errors else "no probe internal error"
    return {"verdict": verdict, "detail": detail, "internal_errors": errors}
