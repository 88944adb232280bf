"""The fault upstream's rules: which HTTP fault hits which request, decided by a seeded RNG.

A fault is ``{"kind": ..., "route": template | null, "params": {...}}`` under an id (the
incident's). :func:`parse_fault` validates it and fills in the defaults; a problem raises
:class:`FaultError` whose message names the field. Kinds and params (defaults in brackets):

=====================  ===========================================================================
kind                   params
=====================  ===========================================================================
http_latency           rate [1.0], median_ms [200], sigma [0.5]: lognormal delay instead of normal
http_hang              rate [1.0], hang_s [5.0]: sleep that long before answering
http_5xx               rate [1.0], status [503] (500-599)
http_429               rate [1.0], retry_after_s [1]: 429 with ``Retry-After``
http_reset             rate [1.0]: TCP reset instead of a response
http_truncated_body    rate [1.0], fraction [0.5]: Content-Length N, then N*fraction bytes, close
http_slow_body         rate [1.0], chunks [4], chunk_delay_s [0.05]: body in chunks, a delay each
=====================  ===========================================================================

:meth:`FaultTable.decide` runs synchronously when a request has been read, so the draws happen
in request order: the same seed, faults and request order give the same decisions. Every
fault whose route matches draws once (in id order), hit or not, so one fault's outcome does
not shift another's draws. At most one *action* fault (every kind but ``http_latency``) acts
on a request, the first hit in id order; a latency hit adds its delay to it.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.campaign.profile import HTTP_FAULTS

__all__ = [
    "MAX_FAULTS",
    "Decision",
    "FaultError",
    "FaultSpec",
    "FaultTable",
    "compile_route",
    "parse_fault",
    "valid_fault_id",
]

MAX_FAULTS: Final = 64
"""Active faults at once; one more is refused (a runaway caller must not grow the table)."""
_MAX_DELAY_S: Final = 120.0
"""Lognormal tails are cut here: a delay past any client timeout changes nothing more."""
_FAULT_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PARAM: Final = re.compile(r"\{[^{}/]*\}")


class FaultError(ValueError):
    """A fault definition that cannot be used; the message names the field."""


# kind -> param -> (default, minimum, maximum, integer?)
_SPECS: Final[dict[str, dict[str, tuple[float, float, float, bool]]]] = {
    "http_latency": {"median_ms": (200.0, 0.0, 60_000.0, False), "sigma": (0.5, 0.0, 5.0, False)},
    "http_hang": {"hang_s": (5.0, 0.0, 600.0, False)},
    "http_5xx": {"status": (503, 500, 599, True)},
    "http_429": {"retry_after_s": (1, 0, 3600, True)},
    "http_reset": {},
    "http_truncated_body": {"fraction": (0.5, 0.0, 0.99, False)},
    "http_slow_body": {"chunks": (4, 1, 1000, True), "chunk_delay_s": (0.05, 0.0, 60.0, False)},
}
_RATE: Final = (1.0, 0.0, 1.0, False)
assert set(_SPECS) == HTTP_FAULTS, "every HTTP fault kind of the profile needs its params here"


def valid_fault_id(fault_id: str) -> bool:
    return _FAULT_ID.fullmatch(fault_id) is not None


def compile_route(template: str) -> re.Pattern[str]:
    """``/users/{id}`` -> a pattern that fully matches ``/users/123`` (one non-empty segment
    per ``{name}``, literals verbatim). :class:`FaultError` for a template that is not one."""
    if not template.startswith("/"):
        raise FaultError(f"route {template!r} must start with /")
    literals = _PARAM.split(template)
    if any("{" in part or "}" in part for part in literals):
        raise FaultError(f"route {template!r}: braces must enclose a parameter name, no '/'")
    return re.compile("[^/]+".join(re.escape(part) for part in literals))


@dataclass(frozen=True)
class FaultSpec:
    """One validated fault: params hold every param of its kind, defaults filled in."""

    id: str
    kind: str
    route: str | None
    params: Mapping[str, float]
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def rate(self) -> float:
        return self.params["rate"]

    def matches(self, path: str) -> bool:
        return self.pattern is None or self.pattern.fullmatch(path) is not None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "route": self.route, "params": dict(self.params)}


def parse_fault(fault_id: str, doc: object) -> FaultSpec:
    """The body of ``PUT /_faults/{id}`` -> a :class:`FaultSpec`; :class:`FaultError` if wrong."""
    if not valid_fault_id(fault_id):
        raise FaultError(f"fault id {fault_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ -")
    if not isinstance(doc, dict):
        raise FaultError("the body must be a JSON object {kind, route, params}")
    unknown = sorted(set(doc) - {"kind", "route", "params"})
    if unknown:
        raise FaultError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    kind = doc.get("kind")
    if kind not in _SPECS:
        raise FaultError(f"unknown kind {kind!r} (one of {', '.join(sorted(_SPECS))})")
    route = doc.get("route")
    if route is not None and not isinstance(route, str):
        raise FaultError(f"route must be a string or null, got {route!r}")
    pattern = compile_route(route) if route is not None else None
    raw = doc.get("params", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FaultError(f"params must be an object, got {raw!r}")
    specs = {"rate": _RATE, **_SPECS[kind]}
    extra = sorted(set(raw) - set(specs))
    if extra:
        raise FaultError(
            f"{kind}: unknown param(s) {', '.join(map(repr, extra))} "
            f"(known: {', '.join(sorted(specs))})"
        )
    params: dict[str, float] = {}
    for name, (default, low, high, integer) in specs.items():
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise FaultError(f"{kind}: param {name!r} must be a number, got {value!r}")
        if integer and value != int(value):
            raise FaultError(f"{kind}: param {name!r} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise FaultError(f"{kind}: param {name!r} must be in [{low:g}, {high:g}], got {value}")
        params[name] = int(value) if integer else float(value)
    return FaultSpec(fault_id, kind, route, params, pattern)


@dataclass
class Decision:
    """What to do with one request: wait ``delay_s``, then ``action`` (None: answer normally)."""

    delay_s: float
    action: FaultSpec | None = None
    hits: list[str] = field(default_factory=list)
    """Ids of the faults that acted on this request (latency and action)."""


def lognormal_s(rng: random.Random, median_ms: float, sigma: float) -> float:
    """A delay in seconds, lognormal with that median (0 median: no delay), capped."""
    if median_ms <= 0:
        return 0.0
    drawn = rng.lognormvariate(math.log(median_ms), sigma) if sigma > 0 else median_ms
    return min(drawn / 1000.0, _MAX_DELAY_S)


class FaultTable:
    """The active faults and the seeded draws that apply them to requests."""

    def __init__(self, seed: int, median_ms: float, sigma: float) -> None:
        self.median_ms = median_ms
        self.sigma = sigma
        # Two streams: adding a latency fault must not reshuffle which requests fail.
        self._choice = random.Random(f"{seed}:faults")  # noqa: S311 - reproducible, not secret
        self._delay = random.Random(f"{seed}:delays")  # noqa: S311
        self._faults: dict[str, FaultSpec] = {}
        self._ordered: tuple[FaultSpec, ...] = ()

    def put(self, fault: FaultSpec) -> None:
        if fault.id not in self._faults and len(self._faults) >= MAX_FAULTS:
            raise FaultError(f"too many active faults ({MAX_FAULTS}); delete some first")
        self._faults[fault.id] = fault
        self._ordered = tuple(self._faults[k] for k in sorted(self._faults))

    def delete(self, fault_id: str) -> bool:
        found = self._faults.pop(fault_id, None) is not None
        self._ordered = tuple(self._faults[k] for k in sorted(self._faults))
        return found

    def faults(self) -> tuple[FaultSpec, ...]:
        return self._ordered

    def decide(self, path: str) -> Decision:
        latency: FaultSpec | None = None
        action: FaultSpec | None = None
        for fault in self._ordered:
            if not fault.matches(path):
                continue
            hit = self._choice.random() < fault.rate
            if not hit:
                continue
            if fault.kind == "http_latency":
                latency = latency or fault
            elif action is None:
                action = fault
        if latency is not None:
            delay = lognormal_s(self._delay, latency.params["median_ms"], latency.params["sigma"])
        else:
            delay = lognormal_s(self._delay, self.median_ms, self.sigma)
        hits = [f.id for f in (latency, action) if f is not None]
        return Decision(delay, action, hits)
