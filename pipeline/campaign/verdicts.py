"""The campaign checker: a run folder's raw data in, verdicts out (most of ``report.json``).

:func:`judge` reads ``raw/`` (types in :mod:`pipeline.campaign.raw`, the plan in
``plan.json``) and the SLO rules file, and returns a JSON-able dict::

    {"overall": "pass" | "fail" | "unknown", "complete": bool, "incomplete_reason": str | None,
     "invariants": {"I1": {...}, ..., "I5": {...}},   # verdict, title, evidence, counts, ids
     "slos": [{"name", "verdict", "source", "detail", ...}],
     "incidents": [{"id", "kind", "ran", "reason", "start", "end", "expect_alerts",
                    "alerts_raised", "alert_verdict", "resolve_verdict", ...}],
     "alerts": {"total", "unexplained", "verdict", ...},
     "load": {"calls", "dropped_iterations", "achieved_rate", "phases", ...}}

Contract: a verdict is ``pass``, ``fail`` or ``unknown``; no evidence is ``unknown``, never
``pass``. ``overall`` is ``fail`` if any verdict failed, else ``unknown`` if any is unknown,
else ``pass``; a run marked incomplete (``meta.json`` ``complete`` false, or the load summary
says so) is never ``pass``. Definitions of I1-I5 and what each needs: docs/invariants.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.campaign._checks_alerts import check_alerts, check_incidents, summarize_load
from pipeline.campaign._checks_common import (
    FAIL,
    UNKNOWN,
    RawRun,
    RunFolderError,
    load_raw,
    worst,
)
from pipeline.campaign._checks_interference import check_i5
from pipeline.campaign._checks_invariants import check_i1, check_i2, check_i4
from pipeline.campaign._checks_resources import check_i3
from pipeline.campaign._checks_slos import check_rule, check_seed_slos
from tables.slo_rules import load_rules

__all__ = ["RunFolderError", "judge", "overall"]


def judge(raw_dir: Path, rules_path: Path) -> dict[str, Any]:
    """Judge one run folder's ``raw/``; raises :class:`RunFolderError` on a damaged file and
    ``tables.slo_rules.SloConfigError`` on a bad rules file."""
    rules = load_rules(rules_path)
    run = load_raw(raw_dir)
    i1 = check_i1(run)
    invariants = {
        "I1": i1,
        "I2": check_i2(run),
        "I3": check_i3(run, i1["counts"]["lost_attempts"] if run.calls else None),
        "I4": check_i4(run),
        "I5": check_i5(run),
    }
    source = _display(rules_path)
    slos = [check_rule(run, rule, source) for rule in rules]
    slos.extend(check_seed_slos(run))
    by_name = {rule.name: rule for rule in rules}
    incidents = check_incidents(run, by_name)
    alerts = check_alerts(run, by_name)
    complete, reason = _completeness(run)
    verdicts = [
        *(v["verdict"] for v in invariants.values()),
        *(s["verdict"] for s in slos),
        *(
            i[key]
            for i in incidents
            for key in ("alert_verdict", "resolve_verdict", "effect_verdict")
            if i.get(key)
        ),
        alerts["verdict"],
    ]
    result: dict[str, Any] = {
        "overall": overall(verdicts, complete=complete),
        "complete": complete,
        "incomplete_reason": reason,
        "invariants": invariants,
        "slos": slos,
        "incidents": incidents,
        "alerts": alerts,
        "load": summarize_load(run),
    }
    return result


def overall(verdicts: list[str], *, complete: bool) -> str:
    """Any fail fails; else any unknown (or none at all, or an incomplete run) is unknown."""
    folded = worst(verdicts)
    if folded != FAIL and not complete:
        return UNKNOWN
    return folded


def _completeness(run: RawRun) -> tuple[bool, str | None]:
    if run.meta is None:
        return False, "no meta.json: the run's start was never recorded"
    if not run.meta.complete:
        why = run.meta.stop_reason or "the run did not record its end"
        return False, f"the run is incomplete ({why}): it cannot pass"
    if run.load_summary is not None and not run.load_summary.complete:
        return False, "the load generator did not finish its schedule: the run cannot pass"
    if run.plan is None:
        return False, "no plan.json: nothing to judge against"
    return True, None


def _display(rules_path: Path) -> str:
    """How the report names the rules file: relative to its repository when it can."""
    parts = rules_path.resolve().parts
    if len(parts) >= 2 and parts[-2] == "config":
        return f"config/{parts[-1]}"
    return str(rules_path)
