"""The ``egresswatch`` command line. Subcommands are added by the parts that own them."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from pipeline.schema import InvalidEvent, decode_event


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egresswatch")
def main() -> None:
    """egresswatch: observe every outbound HTTP call of a fleet of services."""


@main.command("validate")
@click.argument("path", type=click.File("rb"))
def validate(path: BinaryIO) -> None:
    """Validate a JSONL file of probe events (one event per line); exit 1 if any is invalid."""
    bad = 0
    total = 0
    for number, line in enumerate(path, start=1):
        if not line.strip():
            continue
        total += 1
        try:
            decode_event(line)
        except InvalidEvent as exc:
            bad += 1
            click.echo(f"line {number}: {exc.reason}: {exc.detail}", err=True)
    click.echo(f"{total - bad} valid, {bad} invalid")
    sys.exit(1 if bad else 0)


@main.command("worker")
@click.option("--bootstrap", help="Kafka bootstrap host:port [env EGRESSWATCH_KAFKA_BOOTSTRAP].")
@click.option("--partitions", type=int, help="Partitions of the probe topic.")
@click.option("--http-host", help="Address of the HTTP API (default 127.0.0.1).")
@click.option("--http-port", type=int, help="Port of the HTTP API (default 8080).")
@click.option("--data-dir", type=click.Path(), help="Local state folder of this worker.")
@click.option("--rules", type=click.Path(exists=True, dir_okay=False), help="SLO rules file.")
@click.option("--app-id", help="Consumer group / app id; workers sharing it share the work.")
def worker(
    bootstrap: str | None,
    partitions: int | None,
    http_host: str | None,
    http_port: int | None,
    data_dir: str | None,
    rules: str | None,
    app_id: str | None,
) -> None:
    """Run a worker: validate events, keep windowed tables, alert, serve the HTTP API."""
    from pathlib import Path

    from pipeline.logs import configure_json_logging
    from pipeline.settings import SettingsError, WorkerSettings
    from pipeline.worker import run_worker

    try:
        settings = WorkerSettings.from_env(
            kafka_bootstrap=bootstrap,
            probe_partitions=partitions,
            http_host=http_host,
            http_port=http_port,
            data_dir=Path(data_dir) if data_dir else None,
            slo_rules_path=Path(rules) if rules else None,
            app_id=app_id,
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_json_logging()
    run_worker(settings)


if __name__ == "__main__":
    main()
