"""Campaign profiles: a versioned TOML file -> a deterministic :class:`Plan`.

A profile (``campaigns/<name>.toml``, format in docs/campaigns.md) names the load (rate tiers
over time, the simulated services and their route mix, the upstream's normal behaviour), the
incidents (kind, start, end, parameters, the alerts they should raise) and the seed. The plan
is a pure function of the file's text and ``quick``: the same profile gives the same
schedule, the same arrivals (seeded) and the same verdict thresholds.

Times in a profile are seconds from the start of the *load* phase. ``--quick`` scales them by
``quick.duration_s / duration_s`` (an incident keeps at least ``quick.min_incident_s``); the
plan's times are seconds from the start of the run (``t0``): warm-up, then the A/B phase
(probed and unprobed calls interleaved, for invariant I5), then the load with its incidents,
then a drain where no new call starts and the pipeline settles.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pipeline.campaign._toml import ProfileError, TomlReader

__all__ = [
    "HTTP_FAULTS",
    "INCIDENT_KINDS",
    "INFRA_FAULTS",
    "NETWORK_FAULTS",
    "TCP_FAULTS",
    "ClientPlan",
    "IncidentPlan",
    "Judge",
    "Plan",
    "ProfileError",
    "RateTier",
    "RoutePlan",
    "UpstreamPlan",
    "find_profile",
    "load_plan",
    "parse_plan",
]

# Faults the project's own upstream injects (pipeline/campaign/upstream.py).
HTTP_FAULTS: Final = frozenset(
    {
        "http_latency",
        "http_hang",
        "http_5xx",
        "http_429",
        "http_reset",
        "http_truncated_body",
        "http_slow_body",
    }
)
# Faults of Toxiproxy between the callers and the upstream (TCP only).
TCP_FAULTS: Final = frozenset(
    {"tcp_latency", "tcp_bandwidth", "tcp_reset_peer", "tcp_timeout", "tcp_slicer"}
)
# Real packet loss: nftables in the upstream's network namespace (root only).
NETWORK_FAULTS: Final = frozenset({"packet_loss"})
INFRA_FAULTS: Final = frozenset(
    {
        "rgw_down",
        "kafka_down",
        "worker_kill",
        "slow_ws_clients",
        "cardinality_burst",
        "garbage_records",
    }
)
INCIDENT_KINDS: Final = HTTP_FAULTS | TCP_FAULTS | NETWORK_FAULTS | INFRA_FAULTS

PROFILE_VERSION: Final = 1
REPO: Final = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RoutePlan:
    """One route of the simulated services: its template and its share of the calls."""

    template: str
    weight: float


@dataclass(frozen=True)
class ClientPlan:
    """The probed httpx client of every simulated service."""

    connect_timeout_s: float = 1.0
    read_timeout_s: float = 0.5
    max_attempts: int = 3
    backoff_base_s: float = 0.02
    max_connections: int = 100


@dataclass(frozen=True)
class UpstreamPlan:
    """How the upstream behaves when no incident is active."""

    median_ms: float = 5.0
    sigma: float = 0.5
    body_bytes: int = 512


@dataclass(frozen=True)
class RateTier:
    """From ``at_s`` (run time) on, arrivals come at ``rate`` per second (until the next)."""

    at_s: float
    rate: float


@dataclass(frozen=True)
class IncidentPlan:
    """One scheduled incident, times in seconds from the start of the run."""

    id: str
    kind: str
    start_s: float
    end_s: float
    params: Mapping[str, Any] = field(default_factory=dict)
    route: str | None = None
    """HTTP faults only: the route template it hits (None: every route)."""
    expect_alerts: tuple[str, ...] = ()
    """Names of SLO rules (tables/defaults/slo-rules.toml) this incident must make fire."""


@dataclass(frozen=True)
class Judge:
    """Thresholds of the verdicts that are not in the SLO rules file."""

    probe_median_overhead_max: float = 0.05
    kafka_down_p99_ratio_max: float = 2.0
    rgw_down_p99_ratio_max: float = 1.5
    rss_slope_max_mb_per_min: float = 30.0
    ws_delay_p99_max_s: float = 2.0
    api_p95_max_ms: float = 100.0
    alert_grace_s: float = 15.0


@dataclass(frozen=True)
class Plan:
    """Everything a run does, when, with which seed: a pure function of the profile."""

    name: str
    description: str
    source: str
    """The profile file's text, as read (for provenance and re-rendering)."""
    sha256: str
    quick: bool
    seed: int
    workers: int
    partitions: int
    services: tuple[str, ...]
    routes: tuple[RoutePlan, ...]
    client: ClientPlan
    upstream: UpstreamPlan
    warmup_s: float
    ab_s: float
    ab_rate: float
    load_s: float
    drain_s: float
    max_in_flight: int
    tiers: tuple[RateTier, ...]
    incidents: tuple[IncidentPlan, ...]
    judge: Judge

    @property
    def ab_start_s(self) -> float:
        return self.warmup_s

    @property
    def load_start_s(self) -> float:
        return self.warmup_s + self.ab_s

    @property
    def load_end_s(self) -> float:
        return self.load_start_s + self.load_s

    @property
    def total_s(self) -> float:
        """Run time from t0 to the end of the drain."""
        return self.load_end_s + self.drain_s

    def phase_at(self, t: float) -> str:
        """``warmup``, ``ab``, ``load``, ``drain`` or ``done`` at run time ``t``."""
        if t < self.ab_start_s:
            return "warmup"
        if t < self.load_start_s:
            return "ab"
        if t < self.load_end_s:
            return "load"
        return "drain" if t < self.total_s else "done"

    def rate_at(self, t: float) -> float:
        """Target arrivals per second at run time ``t`` (0 in the drain)."""
        if t < self.ab_start_s:
            return self.tiers[0].rate if self.tiers else 0.0
        if t < self.load_start_s:
            return self.ab_rate
        if t >= self.load_end_s:
            return 0.0
        rate = 0.0
        for tier in self.tiers:
            if tier.at_s <= t:
                rate = tier.rate
        return rate

    def active_incidents(self, t: float) -> list[IncidentPlan]:
        return [i for i in self.incidents if i.start_s <= t < i.end_s]


def find_profile(name_or_path: str, *, search: tuple[Path, ...] = ()) -> Path:
    """A path as given, else ``<dir>/<name>.toml`` in ``search``, ./campaigns, the repo's."""
    given = Path(name_or_path)
    if given.suffix == ".toml" or given.parent != Path("."):
        if given.is_file():
            return given
        raise ProfileError(f"{name_or_path}: no such profile file")
    folders = (*search, Path.cwd() / "campaigns", REPO / "campaigns")
    for folder in folders:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.toml")})
    raise ProfileError(
        f"no profile named {name_or_path!r} (known: {', '.join(known) or 'none'}; "
        "or give a path to a .toml file)"
    )


def load_plan(path: Path, *, quick: bool = False) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_plan(text, quick=quick, where=str(path))


def parse_plan(text: str, *, quick: bool = False, where: str = "<profile>") -> Plan:
    """Validate a profile's text and expand it into a plan; :class:`ProfileError` if wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: not valid TOML: {exc}") from exc
    r = TomlReader(doc, where)
    if r.integer("version", PROFILE_VERSION) != PROFILE_VERSION:
        raise ProfileError(f"{where}: version must be {PROFILE_VERSION}")
    duration = r.number("duration_s", minimum=1)
    load = r.table("load")
    quick_t = r.table("quick")
    scale = 1.0
    warmup = load.number("warmup_s", 20, minimum=0)
    ab_s = load.number("ab_phase_s", 30, minimum=0)
    drain = load.number("drain_s", 20, minimum=0)
    min_incident = 0.0
    if quick:
        scale = quick_t.number("duration_s", minimum=1) / duration
        warmup = quick_t.number("warmup_s", warmup, minimum=0)
        ab_s = quick_t.number("ab_phase_s", ab_s, minimum=0)
        drain = quick_t.number("drain_s", drain, minimum=0)
        min_incident = quick_t.number("min_incident_s", 5, minimum=0)
    load_start = warmup + ab_s
    load_s = duration * scale

    tiers = tuple(
        RateTier(load_start + t.number("at", 0, minimum=0) * scale, t.number("rate", minimum=0))
        for t in load.tables("tiers")
    )
    if not tiers:
        raise ProfileError(f"{where}: load.tiers needs at least one {{at, rate}}")
    if any(b.at_s < a.at_s for a, b in zip(tiers, tiers[1:], strict=False)):
        raise ProfileError(f"{where}: load.tiers must be sorted by `at`")

    services_t = r.table("services")
    count = services_t.integer("count", 4, minimum=1)
    prefix = services_t.string("prefix", "svc")
    services = tuple(f"{prefix}-{i:02d}" for i in range(count))
    routes = tuple(
        RoutePlan(t.string("template"), t.number("weight", 1, minimum=0))
        for t in services_t.tables("routes")
    )
    if not routes or not any(route.weight > 0 for route in routes):
        raise ProfileError(f"{where}: services.routes needs a route with weight > 0")
    for route in routes:
        if not route.template.startswith("/"):
            raise ProfileError(f"{where}: route {route.template!r} must start with /")
    client = ClientPlan(
        connect_timeout_s=services_t.number("connect_timeout_s", 1.0, minimum=0.001),
        read_timeout_s=services_t.number("read_timeout_s", 0.5, minimum=0.001),
        max_attempts=services_t.integer("max_attempts", 3, minimum=1),
        backoff_base_s=services_t.number("backoff_base_s", 0.02, minimum=0),
        max_connections=services_t.integer("max_connections", 100, minimum=1),
    )
    up = r.table("upstream")
    upstream = UpstreamPlan(
        median_ms=up.number("median_ms", 5.0, minimum=0),
        sigma=up.number("sigma", 0.5, minimum=0),
        body_bytes=up.integer("body_bytes", 512, minimum=0),
    )
    jt = r.table("judge")
    defaults = Judge()
    judge = Judge(
        **{
            name: jt.number(name, getattr(defaults, name), minimum=0)
            for name in Judge.__dataclass_fields__
        }
    )

    incidents: list[IncidentPlan] = []
    route_names = {route.template for route in routes}
    for index, t in enumerate(r.tables("incident")):
        kind = t.string("kind")
        if kind not in INCIDENT_KINDS:
            raise ProfileError(
                f"{where}: incident {index + 1}: unknown kind {kind!r} "
                f"(one of {', '.join(sorted(INCIDENT_KINDS))})"
            )
        start = t.number("start", minimum=0)
        end = t.number("end", minimum=0)
        if end <= start:
            raise ProfileError(f"{where}: incident {index + 1} ({kind}): end must be after start")
        if end > duration:
            raise ProfileError(
                f"{where}: incident {index + 1} ({kind}): end {end} is past duration_s {duration}"
            )
        start_s = load_start + start * scale
        # A quick incident lasts at least min_incident_s, inside the load phase.
        end_s = min(max(load_start + end * scale, start_s + min_incident), load_start + load_s)
        start_s = max(load_start, min(start_s, end_s - min_incident))
        target = t.optional_string("route")
        if target is not None and target not in route_names:
            raise ProfileError(f"{where}: incident {index + 1}: route {target!r} is not in routes")
        if target is not None and kind not in HTTP_FAULTS:
            raise ProfileError(f"{where}: incident {index + 1}: only HTTP faults take a route")
        incidents.append(
            IncidentPlan(
                id=f"{index + 1:02d}-{kind}",
                kind=kind,
                start_s=round(start_s, 3),
                end_s=round(end_s, 3),
                params=dict(t.table("params").raw),
                route=target,
                expect_alerts=tuple(t.strings("expect_alerts")),
            )
        )
    plan = Plan(
        name=r.string("name"),
        description=r.string("description", ""),
        source=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        quick=quick,
        seed=r.integer("seed"),
        workers=r.integer("workers", 1, minimum=1),
        partitions=r.integer("partitions", 8, minimum=1),
        services=services,
        routes=routes,
        client=client,
        upstream=upstream,
        warmup_s=warmup,
        ab_s=ab_s,
        ab_rate=load.number("ab_rate", tiers[0].rate, minimum=0),
        load_s=load_s,
        drain_s=drain,
        max_in_flight=load.integer("max_in_flight", 1000, minimum=1),
        tiers=tiers,
        incidents=tuple(incidents),
        judge=judge,
    )
    for incident in plan.incidents:
        if incident.end_s > plan.load_end_s + 1e-6:
            raise ProfileError(f"{where}: incident {incident.id} ends after the load phase")
    return plan
