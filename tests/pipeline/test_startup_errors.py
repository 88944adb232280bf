"""One-line start-up errors: settings messages name their flag and variable; click usage
errors of the worker command become one line and exit 2; ``--debug`` adds the traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pipeline.settings import SettingsError, WorkerSettings
from pipeline.startup_errors import (
    OneLineErrorsCommand,
    StartupError,
    exit_on_startup_error,
    from_settings_error,
    settings_hint,
)


def test_hints_name_the_flag_and_the_variable() -> None:
    assert settings_hint("http_port") == "check --http-port / EGRESSWATCH_HTTP_PORT"
    assert settings_hint("kafka_bootstrap") == "check --bootstrap / EGRESSWATCH_KAFKA_BOOTSTRAP"
    assert settings_hint("s3_bucket") == "check EGRESSWATCH_S3_BUCKET"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            {"http_port": 0},
            "egresswatch worker: http_port must be in 1..65535, got 0: "
            "check --http-port / EGRESSWATCH_HTTP_PORT",
        ),
        (
            {"probe_partitions": 0},
            "egresswatch worker: probe_partitions must be >= 1, got 0: "
            "check --partitions / EGRESSWATCH_PROBE_PARTITIONS",
        ),
        (
            {"kafka_bootstrap": "kafka"},
            "egresswatch worker: kafka_bootstrap must be host:port, got 'kafka': "
            "check --bootstrap / EGRESSWATCH_KAFKA_BOOTSTRAP",
        ),
    ],
)
def test_settings_errors_become_one_line(overrides: dict[str, object], line: str) -> None:
    with pytest.raises(SettingsError) as caught:
        WorkerSettings(**overrides)  # type: ignore[arg-type]
    assert from_settings_error(caught.value).line() == line


def test_a_variable_that_does_not_parse_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        WorkerSettings.from_env({"EGRESSWATCH_SINK_IDLE_S": "soon"})
    error = from_settings_error(caught.value)
    assert error.cause.startswith("EGRESSWATCH_SINK_IDLE_S='soon'")
    assert error.hint == "check EGRESSWATCH_SINK_IDLE_S"


@given(st.text())
def test_any_settings_message_gives_one_line(message: str) -> None:
    line = from_settings_error(SettingsError(message)).line()
    assert line.startswith("egresswatch worker: ")
    assert ": check " in line


def _command() -> click.Command:
    @click.command("worker", cls=OneLineErrorsCommand)
    @click.option("--http-port", type=int)
    @click.option("--debug", is_flag=True)
    @click.option("--fail", is_flag=True)
    def worker(http_port: int | None, debug: bool, fail: bool) -> None:
        with exit_on_startup_error(debug=debug):
            if fail:
                try:
                    raise ConnectionRefusedError("refused")
                except ConnectionRefusedError as exc:
                    raise StartupError("cannot reach Kafka at x:1", "check --bootstrap") from exc
            click.echo(f"port {http_port}")

    return worker


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--http-port", "abc"],
            "egresswatch worker: Invalid value for '--http-port': 'abc' is not a valid integer: "
            "check --http-port / EGRESSWATCH_HTTP_PORT",
        ),
        (
            ["--bootsrap", "x"],
            "egresswatch worker: No such option: --bootsrap: see egresswatch worker --help",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], line: str) -> None:
    result = CliRunner().invoke(_command(), args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


def test_help_and_good_flags_are_untouched() -> None:
    assert "--http-port" in CliRunner().invoke(_command(), ["--help"]).stdout
    assert CliRunner().invoke(_command(), ["--http-port", "8"]).stdout == "port 8\n"


def test_startup_error_is_one_line_and_debug_adds_the_traceback() -> None:
    plain = CliRunner().invoke(_command(), ["--fail"])
    assert plain.exit_code == 2
    assert plain.stderr.splitlines() == [
        "egresswatch worker: cannot reach Kafka at x:1: check --bootstrap"
    ]
    debug = CliRunner().invoke(_command(), ["--fail", "--debug"])
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr and "ConnectionRefusedError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.splitlines()[0]
