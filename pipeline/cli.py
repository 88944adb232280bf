"""The ``egresswatch`` command line. Subcommands are added by the parts that own them."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

from pipeline.campaign.cli import campaign
from pipeline.schema import InvalidEvent, decode_event
from pipeline.startup_errors import OneLineErrorsCommand


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


@main.command("worker", cls=OneLineErrorsCommand)
@click.option("--bootstrap", help="Kafka bootstrap host:port [env EGRESSWATCH_KAFKA_BOOTSTRAP].")
@click.option("--partitions", type=int, help="Partitions of the probe topic.")
@click.option("--http-host", help="Address of the HTTP API (default 127.0.0.1).")
@click.option("--http-port", type=int, help="Port of the HTTP API (default 8080).")
@click.option("--data-dir", type=click.Path(), help="Local state folder of this worker.")
@click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False),
    help="SLO rules file [env EGRESSWATCH_SLO_RULES_PATH; default: the shipped rules].",
)
@click.option("--app-id", help="Consumer group / app id; workers sharing it share the work.")
@click.option(
    "--allow-rgw-down",
    is_flag=True,
    help="Start even if RGW does not answer; critical events spool until it does.",
)
@click.option("--debug", is_flag=True, help="Print tracebacks with start-up errors.")
def worker(
    bootstrap: str | None,
    partitions: int | None,
    http_host: str | None,
    http_port: int | None,
    data_dir: str | None,
    rules: str | None,
    app_id: str | None,
    allow_rgw_down: bool,
    debug: bool,
) -> None:
    """Run a worker: validate events, keep windowed tables, alert, serve the HTTP API.

    Before starting, it checks the rules, the data folder, the HTTP port, Kafka and RGW; a
    problem ends it with one line naming the cause and the setting to change (exit 2).
    """
    from pathlib import Path

    from pipeline.logs import configure_json_logging
    from pipeline.preflight import preflight
    from pipeline.settings import WorkerSettings
    from pipeline.startup_errors import exit_on_startup_error

    with exit_on_startup_error(debug=debug):
        settings = WorkerSettings.from_env(
            kafka_bootstrap=bootstrap,
            probe_partitions=partitions,
            http_host=http_host,
            http_port=http_port,
            data_dir=Path(data_dir) if data_dir else None,
            slo_rules_path=Path(rules) if rules else None,
            app_id=app_id,
        )
        for warning in preflight(settings, allow_rgw_down=allow_rgw_down):
            click.echo(f"egresswatch worker: {warning}", err=True)
    from pipeline.worker import run_worker

    configure_json_logging()
    run_worker(settings)


# --------------------------------------------------------------------------------- replay

REPLAY_EXIT_CODES = {
    0: "done (also when the range holds no event)",
    1: "the output file could not be written",
    2: "usage: a bad or missing option, a time that does not parse, since >= until",
    3: "no such service under the prefix (the message lists known ones)",
    4: "the source cannot be read: endpoint unreachable or timing out, credentials refused, "
    "no such bucket or folder",
    5: "a stored object of the range is damaged (bad JSON or gzip, a field missing)",
}
REPLAY_KINDS = ("events", "alerts")


class _ReplayFailed(click.ClickException):
    """A replay that could not be done; ``exit_code`` says why (:data:`REPLAY_EXIT_CODES`)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Instant(click.ParamType):
    """ISO 8601 (UTC when it has no offset) or epoch seconds, as an aware datetime."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        from sinks.replay import InvalidRange, parse_instant

        try:
            return parse_instant(str(value))
        except InvalidRange as exc:
            self.fail(str(exc), param, ctx)


@main.command("replay")
@click.option(
    "--kind",
    type=click.Choice(REPLAY_KINDS),
    default="events",
    show_default=True,
    help="events: critical probe events; alerts: SLO alert records (firing and resolved).",
)
@click.option(
    "--service",
    help="The service whose records to read back (required for events; alerts: all if omitted).",
)
@click.option(
    "--since",
    required=True,
    type=_Instant(),
    help="Start, inclusive: 2026-11-29T10:00:00Z (UTC without offset) or epoch seconds.",
)
@click.option("--until", required=True, type=_Instant(), help="End, exclusive (same forms).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one event per line as stored; parquet needs --out.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file, written whole or not at all [default: stdout, jsonl only].",
)
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local sink folder [env EGRESSWATCH_SINK_LOCAL_ROOT; var/sink if no endpoint].",
)
@click.option("--endpoint", help="S3 / RGW endpoint URL [env EGRESSWATCH_S3_ENDPOINT].")
@click.option("--access-key", help="[env EGRESSWATCH_S3_ACCESS_KEY]")
@click.option("--secret-key", help="[env EGRESSWATCH_S3_SECRET_KEY]")
@click.option("--bucket", help="[env EGRESSWATCH_S3_BUCKET; egresswatch]")
@click.option("--prefix", help="Key prefix [env EGRESSWATCH_SINK_PREFIX; egresswatch].")
def replay_command(
    kind: str,
    service: str | None,
    since: datetime,
    until: datetime,
    fmt: str,
    out: Path | None,
    source: Path | None,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    bucket: str | None,
    prefix: str | None,
) -> None:
    """Read back the stored events (or alerts) of a service and time range (docs/replay.md).

    One record per request_id, sorted by started_at (alerts: evaluated_at). A summary goes
    to stderr. Exit codes: 0 done, 1 output not written, 2 usage, 3 unknown service,
    4 source unreadable, 5 damaged object.
    """
    from pipeline.settings import SettingsError, WorkerSettings
    from sinks.errors import InvalidKey, SinkError
    from sinks.replay import DamagedObject, InvalidRange, ReplaySource, UnknownService, replay

    if source is not None and endpoint is not None:
        raise click.UsageError("give --source (a folder) or --endpoint (S3), not both")
    if kind == "events" and service is None:
        raise click.UsageError("--kind events needs --service S")
    if kind == "alerts" and fmt == "parquet":
        raise click.UsageError("--kind alerts is written as jsonl only")
    if fmt == "parquet" and out is None:
        raise click.UsageError("--format parquet needs --out FILE")
    if since >= until:
        raise click.UsageError(f"since must be before until: {since} >= {until}")
    try:
        settings = WorkerSettings.from_env(
            s3_endpoint=endpoint,
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            s3_bucket=bucket,
            sink_prefix=prefix,
            sink_local_root=source,
        )
        if source is None and settings.s3_endpoint:
            where = ReplaySource.s3(
                settings.s3_endpoint,
                settings.s3_access_key,
                settings.s3_secret_key,
                settings.s3_bucket,
                prefix=settings.sink_prefix,
            )
        elif settings.sink_local_root.is_dir():
            where = ReplaySource.local(settings.sink_local_root, prefix=settings.sink_prefix)
        else:
            folder = settings.sink_local_root
            raise click.UsageError(f"no sink folder {folder}: give --source DIR or --endpoint")
    except (SettingsError, InvalidKey) as exc:
        raise click.UsageError(str(exc)) from exc

    if kind == "alerts":
        _replay_alerts(where, service, since, until, out)
        return
    assert service is not None
    try:
        result = replay(where, service=service, since=since, until=until)
        _write_replay(result.table, fmt, out)
    except (InvalidRange, InvalidKey) as exc:
        raise click.UsageError(str(exc)) from exc
    except UnknownService as exc:
        raise _ReplayFailed(str(exc), 3) from exc
    except (DamagedObject, InvalidEvent) as exc:
        raise _ReplayFailed(str(exc), 5) from exc
    except SinkError as exc:
        raise _ReplayFailed(f"cannot read {exc}", 4) from exc
    click.echo(
        f"replayed {len(result)} events ({result.duplicates} duplicates dropped) "
        f"from {len(result.objects)} objects",
        err=True,
    )


def _replay_alerts(
    where: Any, service: str | None, since: datetime, until: datetime, out: Path | None
) -> None:
    """``replay --kind alerts``: the same exit codes; one alert record per line."""
    from sinks.alert_replay import replay_alerts, write_alerts_jsonl
    from sinks.errors import InvalidKey, SinkError
    from sinks.replay import DamagedObject, InvalidRange, UnknownService

    try:
        result = replay_alerts(where, service=service, since=since, until=until)
        if out is None:
            write_alerts_jsonl(result.records, click.get_binary_stream("stdout"))
        else:
            _write_whole(out, lambda file: write_alerts_jsonl(result.records, file))
    except (InvalidRange, InvalidKey) as exc:
        raise click.UsageError(str(exc)) from exc
    except UnknownService as exc:
        raise _ReplayFailed(str(exc), 3) from exc
    except DamagedObject as exc:
        raise _ReplayFailed(str(exc), 5) from exc
    except SinkError as exc:
        raise _ReplayFailed(f"cannot read {exc}", 4) from exc
    click.echo(
        f"replayed {len(result)} alerts ({result.duplicates} duplicates dropped) "
        f"from {len(result.objects)} objects",
        err=True,
    )


def _write_whole(out: Path, write: Any) -> None:
    """``write(file)`` under a temporary name, renamed into place: whole or not at all."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        with open(partial, "wb") as file:
            write(file)
        os.replace(partial, out)
    except OSError as exc:
        raise _ReplayFailed(f"cannot write {out}: {exc}", 1) from exc
    finally:
        partial.unlink(missing_ok=True)


def _write_replay(table: Any, fmt: str, out: Path | None) -> None:
    """JSONL to stdout; or the whole file under a temporary name, renamed into place."""
    from sinks.replay import write_jsonl, write_parquet

    if out is None:
        write_jsonl(table, click.get_binary_stream("stdout"))
        return
    partial = out.with_name(f".{out.name}.partial")
    try:
        with open(partial, "wb") as file:
            if fmt == "parquet":
                write_parquet(table, file)
            else:
                write_jsonl(table, file)
        os.replace(partial, out)
    except OSError as exc:
        raise _ReplayFailed(f"cannot write {out}: {exc}", 1) from exc
    finally:
        partial.unlink(missing_ok=True)


main.add_command(campaign)

if __name__ == "__main__":
    main()
