"""One-line start-up errors of ``egresswatch worker``: the cause, then the setting to change.

Contract: every way the worker can fail to start because of its configuration or its
surroundings (a bad flag, a broker or RGW it cannot use, a busy port, a bad rules file) ends
as exactly one line on stderr and exit status 2::

    egresswatch worker: cannot reach Kafka at 127.0.0.1:1 (connection refused): check \
--bootstrap / EGRESSWATCH_KAFKA_BOOTSTRAP

No traceback, unless ``--debug`` asks for one (then the traceback, then the same line).

- :class:`StartupError`: raised by the checks (``pipeline.preflight``) with a cause and a hint.
- :func:`settings_hint`: the flag and variable that set a :class:`WorkerSettings` field.
- :func:`from_settings_error`: a :class:`~pipeline.settings.SettingsError` as a StartupError.
- :class:`OneLineErrorsCommand`: a click command whose usage errors are one line too.
- :func:`exit_on_startup_error`: the context the command runs its start-up in.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Iterator
from typing import Any, Final

import click

from pipeline.settings import SettingsError

__all__ = [
    "EXIT_STARTUP",
    "PROG",
    "OneLineErrorsCommand",
    "StartupError",
    "exit_on_startup_error",
    "from_settings_error",
    "settings_hint",
]

EXIT_STARTUP: Final = 2
PROG: Final = "egresswatch worker"
# WorkerSettings fields that the worker command also takes as a flag.
_FLAGS: Final = {
    "kafka_bootstrap": "--bootstrap",
    "probe_partitions": "--partitions",
    "http_host": "--http-host",
    "http_port": "--http-port",
    "data_dir": "--data-dir",
    "slo_rules_path": "--rules",
    "app_id": "--app-id",
}
_FIELDS_BY_FLAG: Final = {flag: field for field, flag in _FLAGS.items()}
_FIELD_RE: Final = re.compile(r"^([a-z][a-z0-9_]*) must\b")
_ENV_RE: Final = re.compile(r"^(EGRESSWATCH_[A-Z0-9_]+)=")


class StartupError(Exception):
    """The worker cannot start: ``cause`` says why, ``hint`` what to change. ``unreachable``:
    a service did not answer (it may be down for a while), rather than refused our settings."""

    def __init__(self, cause: str, hint: str, *, unreachable: bool = False) -> None:
        super().__init__(f"{cause}: {hint}")
        self.cause = cause
        self.hint = hint
        self.unreachable = unreachable

    def line(self) -> str:
        """The one line printed on stderr."""
        return f"{PROG}: {self.cause}: {self.hint}"


def settings_hint(field: str) -> str:
    """``check --http-port / EGRESSWATCH_HTTP_PORT`` (no flag: the variable alone)."""
    env = f"EGRESSWATCH_{field.upper()}"
    flag = _FLAGS.get(field)
    return f"check {flag} / {env}" if flag else f"check {env}"


def from_settings_error(exc: SettingsError) -> StartupError:
    """Name the setting a :class:`SettingsError` message is about (it starts with the field's
    name, or with the ``EGRESSWATCH_*`` variable that failed to parse)."""
    message = str(exc)
    if field := _FIELD_RE.match(message):
        return StartupError(message, settings_hint(field.group(1)))
    if env := _ENV_RE.match(message):
        field_name = env.group(1).removeprefix("EGRESSWATCH_").lower()
        return StartupError(message, settings_hint(field_name))
    return StartupError(message, "check the EGRESSWATCH_* variables and the flags")


class OneLineErrorsCommand(click.Command):
    """A click command whose usage errors (a bad flag value, an unknown option) print one
    line and exit 2, like the other start-up errors; ``--help`` is unchanged."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            # click may wrap its message onto lines and end it with a full stop.
            cause = " ".join(exc.format_message().split()).rstrip(".")
            click.echo(StartupError(cause, _usage_hint(exc)).line(), err=True)
            raise click.exceptions.Exit(EXIT_STARTUP) from exc


def _usage_hint(exc: click.UsageError) -> str:
    param = exc.param if isinstance(exc, click.BadParameter) else None
    if param is None or not param.opts:
        return f"see {PROG} --help"
    flag = param.opts[0]
    field = _FIELDS_BY_FLAG.get(flag)
    return settings_hint(field) if field else f"check {flag}"


@contextlib.contextmanager
def exit_on_startup_error(*, debug: bool) -> Iterator[None]:
    """Turn a :class:`StartupError` (or a SettingsError) into its line on stderr and exit 2;
    with ``debug``, print the traceback first."""
    try:
        yield
    except (StartupError, SettingsError) as exc:
        error = exc if isinstance(exc, StartupError) else from_settings_error(exc)
        if debug:
            traceback.print_exc()
        click.echo(error.line(), err=True)
        sys.exit(EXIT_STARTUP)
