"""``egresswatch campaign run``: a profile in, a judged and signed report folder out.

:func:`run_campaign` makes the run folder, writes the plan and the run's metadata, hands the
live part to :mod:`pipeline.campaign.session` (bring the stack up, load, incidents,
collection, evidence, stack down), then judges the raw data and writes the report whatever
happened: a run stopped by Ctrl-C or by a failing component still gets a report, marked
incomplete, and can never pass. :func:`render` re-renders a folder from its raw data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from rich.console import Console

from pipeline.campaign import provenance, report, signing, verdicts
from pipeline.campaign.profile import Plan, find_profile, load_plan
from pipeline.campaign.raw import RunMeta, read_json, write_json
from pipeline.campaign.stack import REPO, StackSettings

__all__ = ["RULES_PATH", "RunOptions", "RunOutcome", "default_out", "render", "run_campaign"]

RULES_PATH = REPO / "tables" / "defaults" / "slo-rules.toml"


@dataclass(frozen=True)
class RunOptions:
    profile: str
    quick: bool = False
    out: Path | None = None
    sign_key: Path | None = None
    stack: StackSettings = StackSettings()


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    overall: str
    complete: bool
    stop_reason: str | None


def default_out(plan: Plan, now: float | None = None) -> Path:
    stamp = datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("reports") / f"{plan.name}{'-quick' if plan.quick else ''}-{stamp}"


def run_campaign(options: RunOptions, console: Console) -> RunOutcome:
    """Run a whole campaign; the report is written even when the run stops early."""
    from pipeline.campaign.session import Session

    path = find_profile(options.profile)
    plan = load_plan(path, quick=options.quick)
    run_dir = options.out or default_out(plan)
    raw_dir = run_dir / "raw"
    if raw_dir.exists() and any(raw_dir.iterdir()):
        raise FileExistsError(f"{run_dir} already holds a run: give another --out")
    raw_dir.mkdir(parents=True, exist_ok=True)
    write_json(raw_dir / "plan.json", plan)
    (raw_dir / "profile.toml").write_text(plan.source)
    meta = RunMeta(
        profile=plan.name,
        profile_path=str(path),
        profile_sha256=plan.sha256,
        quick=plan.quick,
        seed=plan.seed,
        t0=0.0,
        started_at=time.time(),
    )
    write_json(raw_dir / "meta.json", meta)
    console.print(f"campaign {plan.name}{' (quick)' if plan.quick else ''}: writing {run_dir}")

    session = Session(plan, run_dir, options.stack, console)
    stop_reason: str | None = None
    try:
        session.run()
        stop_reason = session.stop_reason
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    except Exception as exc:  # noqa: BLE001 - any failure still gets its report
        stop_reason = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]campaign stopped: {stop_reason}[/red]")
    meta.t0 = session.t0 or 0.0
    meta.ended_at = time.time()
    meta.complete = stop_reason is None
    meta.stop_reason = stop_reason
    meta.provenance = provenance.collect(REPO, path, session.component_versions())
    write_json(raw_dir / "meta.json", meta)

    try:
        overall = render(run_dir, sign_key=options.sign_key)
    except Exception as exc:  # noqa: BLE001 - the raw data are kept: say how to judge them again
        console.print(
            f"[red]judging failed: {type(exc).__name__}: {exc}[/red]\n"
            f"the run's raw data are in {raw_dir}; fix the cause and run "
            f"`egresswatch campaign report {run_dir}`"
        )
        overall = "unknown"
    return RunOutcome(run_dir, overall, meta.complete, stop_reason)


def render(run_dir: Path, *, sign_key: Path | None = None) -> str:
    """Judge ``run_dir/raw`` and (re)write the report, its digest and signature; the verdict."""
    raw_dir = run_dir / "raw"
    meta = read_json(raw_dir / "meta.json", RunMeta)
    judgement = verdicts.judge(raw_dir, RULES_PATH)
    report.write_report(run_dir, judgement, meta.provenance)
    signing.write_digest(run_dir)
    if sign_key is not None:
        signing.sign(run_dir, sign_key)
    return str(judgement["overall"])


def plan_of(run_dir: Path) -> Plan:
    return msgspec.json.decode((run_dir / "raw" / "plan.json").read_bytes(), type=Plan)
