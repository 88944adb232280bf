"""SLO alert engine: one clock-injected state machine per (rule, target), emitting records.

The Faust worker calls :meth:`AlertEngine.evaluate` periodically (say every 10 s) with the
latest :class:`~tables.slo.WindowStatsLike` of every key and view it holds, and publishes the
returned :class:`AlertRecord` list to the alerts topic. The engine is pure logic: no I/O, the
time comes from the injected ``clock``. Formulas and the record format: ``docs/alerts.md``.

State machine per (rule, target)::

    inactive ──breach──► pending ──breach held for_s──► firing ──► emits one FIRING record
       ▲                   │                             │  ▲
       │     breach gone   │         no longer holds     │  │ holds again: nothing emitted
       ├───────────────────┘                             ▼  │
       └─── clear for resolve_after_s: one RESOLVED ─── resolving

Guarantees: per (rule, target), records alternate strictly FIRING, RESOLVED, FIRING, ...
(optional ``still_firing`` reminders in between, off by default); both records of an episode
share ``alert_id`` and ``trace_id``; every record has a valid ``trace_id`` and a fresh
``request_id`` (invariant I2). No data, or data under ``min_requests``, counts as clear.

Bounds (invariant I3): inactive states are not kept. At most ``max_active`` pending, firing
or resolving states are tracked; a new breach beyond that is not tracked and is counted in
``overflow_total``. Firing and resolving states are never evicted (that would lose their
RESOLVED record).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from tables.slo import (
    ROLLUP,
    Assessment,
    Target,
    WindowStatsLike,
    assess,
    burn_rate,
    index_stats,
    watches,
)
from tables.slo_rules import Kind, Severity, SloConfigError, SloError, SloRule, budget

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "AlertEngine",
    "AlertRecord",
    "AlertStatus",
    "InvalidAlert",
    "Observed",
    "alert_id",
    "decode_alert",
    "encode_alert",
]

ALERT_SCHEMA_VERSION: Final = 1
AlertStatus = Literal["firing", "resolved", "still_firing"]
_Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
_Hex16 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
_Epoch = Annotated[float, msgspec.Meta(ge=0.0)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class InvalidAlert(SloError):
    """An alert record failed to decode; the message names the field."""


class Observed(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the engine saw, in the kind's unit (ms, or a rate 0..1)."""

    value: float | None
    """The long view of the record's window pair; None without data."""
    by_view: dict[str, float]
    """Every view the rule reads that had requests and a value."""


class AlertRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One alert notification (schema v1). Every field is always written."""

    schema_version: Literal[1] = 1
    alert_id: _Hex32
    status: AlertStatus
    rule: _Name
    kind: Kind
    severity: Severity
    service: _Name
    route: _Name
    method: _Name
    observed: Observed
    threshold: float
    """The firing threshold of ``views``: ms for latency_p99, a rate for the others."""
    objective: float | None
    """Rate kinds: the success objective (budget = 1 - objective)."""
    burn_rate: float | None
    """Rate kinds: observed.value / budget."""
    views: tuple[str, str]
    """(long, short): the window pair that fired."""
    started_at: _Epoch
    """When the breach was first seen (start of the episode)."""
    fired_at: _Epoch
    resolved_at: _Epoch | None
    evaluated_at: _Epoch
    """When this record was produced."""
    example_trace_ids: tuple[_Hex32, ...]
    trace_id: _Hex32
    """The episode's trace: the first example trace id, else a fresh one."""
    request_id: _Hex16
    """Fresh for every record."""
    message: str


def alert_id(rule: str, target: tuple[str, str, str], started_at: float) -> str:
    """Deterministic id of one episode: a hash of rule name, target and episode start."""
    key = "\x1f".join((rule, *target, repr(float(started_at))))
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertRecord)


def encode_alert(record: AlertRecord) -> bytes:
    """Compact JSON, every field written."""
    return _encoder.encode(record)


def decode_alert(data: bytes | str) -> AlertRecord:
    """Decode and validate one record. Raises :class:`InvalidAlert`."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise InvalidAlert(str(exc)) from exc


_Phase = Literal["pending", "firing", "resolving"]


@dataclass(slots=True)
class _Episode:
    phase: _Phase
    started_at: float
    since: float
    """Start of the current phase (the clear streak, when resolving)."""
    fired: AlertRecord | None = None
    reminded_at: float = 0.0


class AlertEngine:
    """Evaluates SLO rules on window stats; see the module docstring for the contract."""

    def __init__(
        self,
        rules: Iterable[SloRule],
        *,
        clock: Callable[[], float] = time.time,
        max_active: int = 10_000,
        remind_every_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._rules = tuple(rules)
        names = [rule.name for rule in self._rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SloConfigError(f"duplicate rule names: {', '.join(duplicates)}")
        if max_active < 1:
            raise ValueError("max_active must be >= 1")
        if remind_every_s is not None and remind_every_s <= 0:
            raise ValueError("remind_every_s must be > 0 (or None: no reminders)")
        self._clock = clock
        self._max_active = max_active
        self._remind_every_s = remind_every_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (ids, not secrets)
        self._states: dict[str, dict[Target, _Episode]] = {rule.name: {} for rule in self._rules}
        self._tracked = 0
        self.overflow_total = 0
        """Breaches not tracked because ``max_active`` states were already tracked."""

    @property
    def rules(self) -> tuple[SloRule, ...]:
        return self._rules

    @property
    def tracked(self) -> int:
        """Pending, firing and resolving states held now (<= ``max_active``)."""
        return self._tracked

    def firing(self) -> list[AlertRecord]:
        """The FIRING records of every episode not yet resolved (firing or resolving)."""
        return [
            episode.fired
            for states in self._states.values()
            for episode in states.values()
            if episode.fired is not None
        ]

    def evaluate(self, stats: Iterable[WindowStatsLike]) -> list[AlertRecord]:
        """Advance every (rule, target) to ``clock()`` and return the records to publish.

        ``stats``: the latest window stats of every (service, route, method, view) the caller
        has (for a repeated key, the latest ``end`` wins). Targets that are tracked but absent
        from ``stats`` are evaluated as "no data" (clear), so their alerts resolve.
        Records come in rule order, then target order.
        """
        now = self._clock()
        index = index_stats(stats)
        records: list[AlertRecord] = []
        for rule in self._rules:
            states = self._states[rule.name]
            targets = {target for target in index if watches(rule, target)}
            for target in sorted(targets.union(states)):
                record = self._step(rule, target, index.get(target, {}), now)
                if record is not None:
                    records.append(record)
        return records

    def _step(
        self, rule: SloRule, target: Target, views: dict[str, WindowStatsLike], now: float
    ) -> AlertRecord | None:
        states = self._states[rule.name]
        episode = states.get(target)
        if episode is None or episode.phase == "pending":
            verdict = assess(rule, views, holding=False)
            if not verdict.breached:
                if episode is not None:
                    self._forget(states, target)
                return None
            if episode is None:
                if self._tracked >= self._max_active:
                    self.overflow_total += 1
                    return None
                episode = states[target] = _Episode("pending", started_at=now, since=now)
                self._tracked += 1
            if now - episode.started_at < rule.for_s:
                return None
            episode.phase, episode.since, episode.reminded_at = "firing", now, now
            episode.fired = self._fire(rule, target, episode, verdict, now)
            return episode.fired
        assert episode.fired is not None
        verdict = assess(rule, views, holding=True)
        if verdict.breached:
            episode.phase = "firing"
            return self._remind(rule, target, episode, verdict, now)
        if episode.phase == "firing":
            episode.phase, episode.since = "resolving", now
        if now - episode.since < rule.resolve_after_s:
            return None
        self._forget(states, target)
        return self._follow_up("resolved", rule, target, episode.fired, verdict, now)

    def _forget(self, states: dict[Target, _Episode], target: Target) -> None:
        del states[target]
        self._tracked -= 1

    def _remind(
        self, rule: SloRule, target: Target, episode: _Episode, verdict: Assessment, now: float
    ) -> AlertRecord | None:
        every = self._remind_every_s
        if every is None or now - episode.reminded_at < every or episode.fired is None:
            return None
        episode.reminded_at = now
        return self._follow_up("still_firing", rule, target, episode.fired, verdict, now)

    def _fire(
        self, rule: SloRule, target: Target, episode: _Episode, verdict: Assessment, now: float
    ) -> AlertRecord:
        examples = verdict.example_trace_ids
        views = (verdict.window.long, verdict.window.short)
        return AlertRecord(
            alert_id=alert_id(rule.name, target, episode.started_at),
            status="firing",
            rule=rule.name,
            kind=rule.kind,
            severity=rule.severity,
            service=target.service,
            route=target.route,
            method=target.method,
            observed=Observed(value=verdict.value, by_view=verdict.by_view),
            threshold=verdict.threshold,
            objective=rule.objective,
            burn_rate=verdict.burn_rate,
            views=views,
            started_at=episode.started_at,
            fired_at=now,
            resolved_at=None,
            evaluated_at=now,
            example_trace_ids=examples,
            trace_id=examples[0] if examples else self._hex(128),
            request_id=self._hex(64),
            message=_message("firing", rule, target, verdict.value, verdict.threshold, views),
        )

    def _follow_up(
        self,
        status: AlertStatus,
        rule: SloRule,
        target: Target,
        fired: AlertRecord,
        verdict: Assessment,
        now: float,
    ) -> AlertRecord:
        """A RESOLVED or still_firing record: the episode's ids, the current values."""
        value = verdict.by_view.get(fired.views[0])
        burn = None if value is None or rule.objective is None else burn_rate(value, rule.objective)
        message = _message(status, rule, target, value, fired.threshold, fired.views)
        if status == "resolved":
            message += f" after {_duration(now - fired.fired_at)}"
        return msgspec.structs.replace(
            fired,
            status=status,
            observed=Observed(value=value, by_view=verdict.by_view),
            burn_rate=burn,
            resolved_at=now if status == "resolved" else None,
            evaluated_at=now,
            request_id=self._hex(64),
            message=message,
        )

    def _hex(self, bits: int) -> str:
        """A random non-zero id of ``bits`` bits as lowercase hex (trace or span id)."""
        while True:
            value = self._rng.getrandbits(bits)
            if value:
                return f"{value:0{bits // 4}x}"


def _message(
    status: AlertStatus,
    rule: SloRule,
    target: Target,
    value: float | None,
    threshold: float,
    views: tuple[str, str],
) -> str:
    """A human one-liner, e.g. ``FIRING [page] error-rate-fast-burn: checkout POST /pay ...``."""
    where = (
        f"{target.service} (all routes)"
        if target.route == ROLLUP and target.method == ROLLUP
        else f"{target.service} {target.method} {target.route}"
    )
    head = f"{status.upper()} [{rule.severity}] {rule.name}: {where}"
    long, short = views
    if rule.kind == "latency_p99":
        seen = "p99: no data" if value is None else f"p99 {value:.0f} ms"
        return f"{head}: {seen} on {long} (threshold {threshold:g} ms on {long} and {short})"
    label = "error rate" if rule.kind == "error_rate" else "timeout rate"
    assert rule.objective is not None
    allowed = budget(rule.objective)
    if value is None:
        seen = f"{label}: no data"
    else:
        seen = f"{label} {_pct(value)} (burn {burn_rate(value, rule.objective):.3g}x)"
    return (
        f"{head}: {seen} on {long} (threshold {_pct(threshold)} ="
        f" {threshold / allowed:.3g}x the {_pct(allowed)} budget on {long} and {short})"
    )


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
