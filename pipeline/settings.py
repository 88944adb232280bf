"""Worker settings: one frozen object, read once at start-up and passed down.

Every field can come from an ``EGRESSWATCH_*`` environment variable (see
:meth:`WorkerSettings.from_env`); CLI flags override the environment. Nothing else in the
code reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SettingsError", "WorkerSettings"]


class SettingsError(ValueError):
    """A setting has a value the worker cannot use; the message names it."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Everything a worker needs to know, fixed for its lifetime."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    app_id: str = "egresswatch"
    probe_topic: str = "egresswatch.probe-events.v1"
    dead_letter_topic: str = "egresswatch.dead-letters.v1"
    alerts_topic: str = "egresswatch.alerts.v1"
    probe_partitions: int = 8
    # Where Faust keeps its local table state (RocksDB is not used: memory store + changelog).
    data_dir: Path = Path("var/worker")
    # The HTTP API (REST, /metrics, WebSocket, dashboard), bound to loopback by default.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    slo_rules_path: Path | None = None
    # Faust's default session timeout (60 s) makes every group join wait ~30 s.
    broker_session_timeout_s: float = 10.0
    # How often windows are expired, alerts evaluated and gauges refreshed.
    tick_interval_s: float = 1.0
    # How often SLO rules are evaluated: each evaluation merges the 10s/1m/5m views of every
    # owned key, so it is kept off the per-second tick (burn-rate windows are minutes long).
    alert_interval_s: float = 5.0
    api_token: str | None = None
    # The sink (docs/sinks.md): RGW when s3_endpoint is set, else a local folder.
    s3_endpoint: str | None = None
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "egresswatch"
    sink_prefix: str = "egresswatch"
    sink_local_root: Path = Path("var/sink")
    sink_min_severity: str = "critical"
    sink_compress: bool = False
    sink_idle_s: float = 5.0
    sink_max_age_s: float = 60.0
    spool_dir: Path | None = None  # default: <data_dir>/spool
    spool_max_bytes: int = 256 * 2**20
    # Cells every worker keeps in its query view (~5 KB each): keys x 90 buckets fits.
    view_max_cells: int = 50_000
    # API protections (see docs/api.md): token bucket per client (0 turns it off), the table
    # of client buckets is bounded; proxies whose X-Forwarded-For is trusted (comma-separated
    # addresses; none by default); server-side timeout of a request.
    api_rate_per_s: float = 50.0
    api_burst: int = 100
    api_max_clients: int = 10_000
    api_trusted_proxies: str | None = None
    api_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.probe_partitions < 1:
            raise SettingsError(f"probe_partitions must be >= 1, got {self.probe_partitions}")
        if not 0 < self.http_port < 65536:
            raise SettingsError(f"http_port must be in 1..65535, got {self.http_port}")
        if self.sink_min_severity not in ("info", "warning", "error", "critical"):
            raise SettingsError(
                f"sink_min_severity must be info, warning, error or critical, "
                f"got {self.sink_min_severity!r}"
            )
        if ":" not in self.kafka_bootstrap:
            raise SettingsError(f"kafka_bootstrap must be host:port, got {self.kafka_bootstrap!r}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> WorkerSettings:
        """Build from ``EGRESSWATCH_<FIELD>`` variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            raw = env.get(f"EGRESSWATCH_{spec.name.upper()}")
            if raw is None:
                continue
            values[spec.name] = _parse(spec.name, str(spec.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("expected true or false")
            return raw.lower() in ("1", "true", "yes")
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        if "Path" in type_name:
            return Path(raw) if raw else None
    except ValueError as exc:
        raise SettingsError(f"EGRESSWATCH_{name.upper()}={raw!r}: {exc}") from exc
    return raw or None if "None" in type_name else raw
