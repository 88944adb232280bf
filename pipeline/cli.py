"""The ``egresswatch`` command line. Subcommands are added by the parts that own them."""

from __future__ import annotations

import sys

import click

from pipeline.schema import InvalidEvent, decode_event


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egresswatch")
def main() -> None:
    """egresswatch: observe every outbound HTTP call of a fleet of services."""


@main.command("validate")
@click.argument("path", type=click.File("rb"))
def validate(path: click.utils.LazyFile) -> None:
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


if __name__ == "__main__":
    main()
