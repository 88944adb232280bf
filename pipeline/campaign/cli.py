"""``egresswatch campaign run | report | verify`` (docs/campaigns.md).

Exit codes of ``run`` and ``report``: 0 every verdict passed; 1 at least one failed; 3 none
failed but some had no evidence (``unknown``), or the run was incomplete; 4 the campaign
could not start (a bad profile, an existing run folder). ``verify``: 0 digest (and signature,
when there is one) check out; 1 they do not; 4 files missing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import click

__all__ = ["EXIT_CODES", "campaign"]

EXIT_CODES = {"pass": 0, "fail": 1, "unknown": 3}


class StackDefaults:
    """Ports apart from the demo's (19092, 17480) and the test suite's (19192, 17580)."""

    kafka_port = 19392
    rgw_port = 17680


@click.group("campaign")
def campaign() -> None:
    """Load and fault campaigns that prove the invariants and SLOs (docs/campaigns.md)."""


@campaign.command("run")
@click.argument("profile")
@click.option("--quick", is_flag=True, help="The profile's short form (its [quick] table).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder [default: reports/<profile>-<utc time>/].",
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="OpenSSH private key: report.json.sig by `ssh-keygen -Y sign`.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where Kafka, Ceph and the workers keep their state [default: var/campaign].",
)
@click.option("--keep-data", is_flag=True, help="Keep Kafka's and Ceph's data after the run.")
@click.option(
    "--kafka-port",
    type=click.IntRange(1024, 65534),
    default=StackDefaults.kafka_port,
    show_default=True,
    help="The run's broker (the controller takes the next port).",
)
@click.option(
    "--rgw-port",
    type=click.IntRange(1024, 65534),
    default=StackDefaults.rgw_port,
    show_default=True,
    help="The run's radosgw (the Ceph mon takes the next port).",
)
def run_command(
    profile: str,
    quick: bool,
    out: Path | None,
    sign_key: Path | None,
    state_dir: Path | None,
    keep_data: bool,
    kafka_port: int,
    rgw_port: int,
) -> None:
    """Run PROFILE (a name in campaigns/ or a .toml path) and write its report."""
    from rich.console import Console

    from pipeline.campaign.profile import ProfileError
    from pipeline.campaign.runner import RunOptions, run_campaign
    from pipeline.campaign.stack import StackSettings

    # The runner's own Kafka clients (alerts tail, evidence) outlive broker outages on
    # purpose; their reconnect warnings would bury the live display.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stack = StackSettings(keep_data=keep_data, kafka_port=kafka_port, rgw_port=rgw_port)
    if state_dir is not None:
        stack = replace(stack, state=state_dir.resolve())
    console = Console(stderr=True)
    options = RunOptions(profile=profile, quick=quick, out=out, sign_key=sign_key, stack=stack)
    try:
        outcome = run_campaign(options, console)
    except (ProfileError, FileExistsError) as exc:
        click.echo(f"campaign: {exc}", err=True)
        sys.exit(4)
    _summary(outcome.run_dir)
    if not outcome.complete:
        click.echo(f"campaign: INCOMPLETE ({outcome.stop_reason})", err=True)
        sys.exit(3 if outcome.overall != "fail" else 1)
    sys.exit(EXIT_CODES.get(outcome.overall, 3))


@campaign.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign the re-rendered report.json with this OpenSSH key.",
)
def report_command(run_dir: Path, sign_key: Path | None) -> None:
    """Re-judge RUN_DIR's raw data and re-render its report (md, html, json, digest)."""
    from pipeline.campaign.runner import render

    if not (run_dir / "raw" / "meta.json").exists():
        click.echo(f"campaign: {run_dir} holds no raw/meta.json: not a campaign run", err=True)
        sys.exit(4)
    overall = render(run_dir, sign_key=sign_key)
    _summary(run_dir)
    sys.exit(EXIT_CODES.get(overall, 3))


@campaign.command("verify")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--allowed-signers",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ssh-keygen allowed_signers file: check the signature against trusted keys.",
)
@click.option(
    "--identity",
    help="The signer's identity in the allowed_signers file [default: found from the key].",
)
def verify_command(run_dir: Path, allowed_signers: Path | None, identity: str | None) -> None:
    """Check report.json against its sha256 digest and, if signed, its OpenSSH signature."""
    from pipeline.campaign.signing import SigningError, verify

    if identity is not None and allowed_signers is None:
        raise click.UsageError("--identity needs --allowed-signers")
    try:
        result = verify(run_dir, allowed_signers=allowed_signers, identity=identity)
    except SigningError as exc:
        click.echo(f"campaign verify: {exc}", err=True)
        sys.exit(4)
    for line in result.lines():
        click.echo(line)
    sys.exit(0 if result.ok else 1)


def _summary(run_dir: Path) -> None:
    import json

    from pipeline.campaign._report_format import check_rows

    path = run_dir / "report.json"
    if not path.exists():
        return
    body = json.loads(path.read_text())
    click.echo(f"overall: {body.get('overall')}  ({run_dir / 'report.html'})")
    for name, inv in sorted(body.get("invariants", {}).items()):
        click.echo(f"  {name} {inv.get('verdict'):<8} {inv.get('title', '')}")
    for slo in body.get("slos", []):
        click.echo(f"  SLO {slo.get('name')}: {slo.get('verdict')}")
    for check, verdict, what in check_rows(body):
        click.echo(f"  {check} {what}: {verdict}")
