"""SLO alert rules: the versioned TOML rules file, validated into frozen dataclasses.

The format is documented in ``docs/alerts.md``; ``tables/defaults/slo-rules.toml`` is the
shipped default, package data read through :mod:`importlib.resources` (so an installed wheel
finds it as a source checkout does). Parsing is strict: a missing or unknown key, a wrong type
or an out-of-range number raises :class:`SloConfigError` with a message naming the file, the
rule and the field::

    rules.toml: rule 'checkout-p99': threshold_ms must be > 0

Errors::

    SloError (ValueError)
      ├── SloConfigError    the rules file (or a rule in it) is invalid
      └── InvalidAlert      an alert record failed to decode (tables/alerting.py)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pipeline.schema import Method
from tables.windows import VIEWS as WINDOW_VIEWS

__all__ = [
    "DEFAULT_RULES_FILE",
    "KINDS",
    "RULES_VERSION",
    "SEVERITIES",
    "VIEWS",
    "VIEW_SECONDS",
    "BurnWindow",
    "Kind",
    "SloConfigError",
    "Severity",
    "SloError",
    "SloRule",
    "View",
    "budget",
    "decimal_clean",
    "load_rules",
    "parse_rules",
    "rules_from_mapping",
]

RULES_VERSION: Final = 1
# Package data (pyproject's package-data ships it in the wheel); a real file on disk for every
# ordinary install, but read only through the Traversable API.
DEFAULT_RULES_FILE: Final[Traversable] = files("tables").joinpath("defaults", "slo-rules.toml")

Kind = Literal["latency_p99", "error_rate", "timeout_rate"]
KINDS: Final[tuple[str, ...]] = ("latency_p99", "error_rate", "timeout_rate")
Severity = Literal["page", "ticket"]
SEVERITIES: Final[tuple[str, ...]] = ("page", "ticket")
View = Literal["10s", "1m", "5m"]
VIEW_SECONDS: Final[Mapping[str, int]] = WINDOW_VIEWS  # the views tables.windows serves
VIEWS: Final[tuple[str, ...]] = tuple(VIEW_SECONDS)
# A rule names a real method; OTHER (extension methods folded by the probe) is not one.
_METHODS: Final = frozenset(get_args(Method)) - {"OTHER"}
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RULE_KEYS: Final = frozenset(
    {
        "name",
        "service",
        "route",
        "method",
        "kind",
        "threshold_ms",
        "objective",
        "windows",
        "min_requests",
        "severity",
        "for_s",
        "resolve_after_s",
        "resolve_ratio",
    }
)
_WINDOW_KEYS: Final = frozenset({"long", "short", "burn_rate"})


class SloError(ValueError):
    """Root of the SLO alerting errors."""


class SloConfigError(SloError):
    """The rules file is invalid. The message names the file, the rule and the field."""


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One multi-window condition: both views must be over the threshold at once."""

    long: View
    """The slower view; it proves the breach is significant."""
    short: View
    """The faster view; it proves the breach is still happening (and resets the alert fast)."""
    burn_rate: float | None = None
    """Rate kinds: the budget burn factor (rate > burn_rate x budget). None for latency."""


@dataclass(frozen=True, slots=True)
class SloRule:
    """One validated rule. Thresholds live in the unit of the kind (ms, or a rate 0..1)."""

    name: str
    service: str
    """A service name, or ``*`` for every service."""
    kind: Kind
    severity: Severity
    windows: tuple[BurnWindow, ...]
    """The rule breaches when any window pair breaches (first in order is reported)."""
    route: str | None = None
    """None: the per-service rollup; ``*``: every route separately; else one route template."""
    method: str | None = None
    """With a route only: one method, ``*`` (the route's rollup over methods), None (each)."""
    threshold_ms: float | None = None
    """latency_p99 only: p99 must stay <= this."""
    objective: float | None = None
    """Rate kinds only: the success objective, e.g. 0.99 (error budget 0.01)."""
    min_requests: int = 20
    """A view with fewer requests is no evidence: it never breaches."""
    for_s: float = 0.0
    """The breach must hold this long before the alert fires."""
    resolve_after_s: float = 0.0
    """The condition must be clear continuously this long before the alert resolves."""
    resolve_ratio: float = 1.0
    """While firing, the alert holds until the views drop to or below ratio x threshold."""
    thresholds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    """Derived: the firing threshold of each window pair, in the kind's unit."""
    reads: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Derived: the views the rule reads, shortest first."""

    def __post_init__(self) -> None:
        views = {view for window in self.windows for view in (window.long, window.short)}
        object.__setattr__(self, "reads", tuple(sorted(views, key=VIEW_SECONDS.__getitem__)))
        object.__setattr__(self, "thresholds", tuple(map(self.threshold, self.windows)))

    @property
    def budget(self) -> float | None:
        """The error budget ``1 - objective`` (rate kinds), else None."""
        return None if self.objective is None else budget(self.objective)

    def threshold(self, window: BurnWindow) -> float:
        """The firing threshold of one window pair, in the kind's unit."""
        if self.threshold_ms is not None:
            return self.threshold_ms
        assert window.burn_rate is not None and self.objective is not None
        return decimal_clean(window.burn_rate * budget(self.objective))


def budget(objective: float) -> float:
    """The error budget of an objective: ``1 - objective`` (0.99 -> 0.01, exactly)."""
    return decimal_clean(1.0 - objective)


def decimal_clean(value: float) -> float:
    """Drop binary noise from a product of decimal settings (1 - 0.99 is 0.010000000000000009).

    Thresholds then are the decimals the rules file means (14.4 x 0.01 = 0.144), so a rate
    of exactly 0.144 does not breach "> 14.4%".
    """
    return float(f"{value:.12g}")


def load_rules(
    path: str | os.PathLike[str] | Traversable = DEFAULT_RULES_FILE,
) -> tuple[SloRule, ...]:
    """Read and validate a rules file (the shipped defaults by default).

    Raises :class:`SloConfigError`.
    """
    target = Path(path) if isinstance(path, str | os.PathLike) else path
    source = str(target)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SloConfigError(f"{source}: cannot read rules file: {exc}") from exc
    return parse_rules(text, source=source)


def parse_rules(text: str, *, source: str = "<string>") -> tuple[SloRule, ...]:
    """Validate rules from TOML text; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SloConfigError(f"{source}: invalid TOML: {exc}") from exc
    return rules_from_mapping(data, source=source)


def rules_from_mapping(data: Mapping[str, Any], *, source: str) -> tuple[SloRule, ...]:
    """Validate an already-parsed document (``version`` and ``rule`` tables)."""
    unknown = sorted(set(data) - {"version", "rule"})
    if unknown:
        raise SloConfigError(f"{source}: unknown top-level key {unknown[0]!r}")
    version = data.get("version")
    if version is None:
        raise SloConfigError(f"{source}: missing top-level 'version' (expected {RULES_VERSION})")
    if type(version) is not int or version != RULES_VERSION:
        raise SloConfigError(
            f"{source}: unsupported version {version!r} (expected {RULES_VERSION})"
        )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise SloConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    rules: list[SloRule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules, start=1):
        rule = _Reader(raw, source, index).rule()
        if rule.name in seen:
            raise SloConfigError(f"{source}: rule {rule.name!r}: duplicate rule name")
        seen.add(rule.name)
        rules.append(rule)
    return tuple(rules)


class _Reader:
    """Reads one ``[[rule]]`` table; every error names the rule and the field."""

    def __init__(self, raw: object, source: str, index: int) -> None:
        if not isinstance(raw, dict):
            raise SloConfigError(f"{source}: rule #{index}: must be a table")
        self._raw: dict[str, Any] = raw
        name = raw.get("name")
        label = repr(name) if isinstance(name, str) and name else f"#{index}"
        self._where = f"{source}: rule {label}"

    def fail(self, message: str) -> SloConfigError:
        return SloConfigError(f"{self._where}: {message}")

    def rule(self) -> SloRule:
        unknown = sorted(set(self._raw) - _RULE_KEYS)
        if unknown:
            raise self.fail(f"unknown field {unknown[0]!r}")
        name = self.text("name", pattern=_NAME_RE)
        service = self.text("service")
        if service != "*" and not _NAME_RE.match(service):
            raise self.fail(f"service must be '*' or a service name, got {service!r}")
        kind = self.choice("kind", KINDS)
        route = self.optional_text("route")
        if route is not None and route != "*" and not route.startswith("/"):
            raise self.fail(f"route must be '*' or start with '/', got {route!r}")
        method = self.optional_text("method")
        if method is not None:
            if route is None:
                raise self.fail("method needs a route (the rollup has no method)")
            if method != "*" and method not in _METHODS:
                raise self.fail(f"method must be '*' or an HTTP method, got {method!r}")
        latency = kind == "latency_p99"
        threshold_ms = objective = None
        if latency:
            self.forbid("objective", "latency_p99 uses threshold_ms, not objective")
            threshold_ms = self.number("threshold_ms", minimum=0.0)
        else:
            self.forbid("threshold_ms", f"{kind} uses objective, not threshold_ms")
            objective = self.number("objective", minimum=0.0, maximum=1.0)
        return SloRule(
            name=name,
            service=service,
            kind=kind,  # type: ignore[arg-type]
            severity=self.choice("severity", SEVERITIES),  # type: ignore[arg-type]
            windows=self.windows(latency=latency, objective=objective),
            route=route,
            method=method,
            threshold_ms=threshold_ms,
            objective=objective,
            min_requests=self.integer("min_requests", default=20, minimum=1),
            for_s=self.number("for_s", default=0.0, minimum=0.0, inclusive=True),
            resolve_after_s=self.number(
                "resolve_after_s", default=0.0, minimum=0.0, inclusive=True
            ),
            resolve_ratio=self.number(
                "resolve_ratio", default=1.0, minimum=0.0, maximum=1.0, inclusive_max=True
            ),
        )

    def windows(self, *, latency: bool, objective: float | None) -> tuple[BurnWindow, ...]:
        raw = self._raw.get("windows")
        if raw is None:
            raise self.fail("missing field 'windows'")
        if not isinstance(raw, list) or not raw:
            raise self.fail("windows must be a non-empty array of {long, short} tables")
        pairs: list[BurnWindow] = []
        for index, item in enumerate(raw):
            field = f"windows[{index}]"
            if not isinstance(item, dict):
                raise self.fail(f"{field} must be a table like {{ long = '5m', short = '1m' }}")
            unknown = sorted(set(item) - _WINDOW_KEYS)
            if unknown:
                raise self.fail(f"{field}: unknown field {unknown[0]!r}")
            long, short = (self._view(item, field, key) for key in ("long", "short"))
            if VIEW_SECONDS[long] <= VIEW_SECONDS[short]:
                raise self.fail(f"{field}: long view {long!r} must be longer than short {short!r}")
            factor = item.get("burn_rate")
            if latency:
                if factor is not None:
                    raise self.fail(f"{field}.burn_rate: latency_p99 uses threshold_ms")
            else:
                if factor is None:
                    raise self.fail(f"{field}: missing field 'burn_rate'")
                if not _is_number(factor) or not math.isfinite(factor) or factor <= 0:
                    raise self.fail(f"{field}.burn_rate must be a number > 0, got {factor!r}")
                assert objective is not None
                if factor * budget(objective) >= 1.0:
                    raise self.fail(
                        f"{field}.burn_rate x budget must be < 1 (a rate cannot exceed 1), "
                        f"got {factor} x {budget(objective):g}"
                    )
                factor = float(factor)
            pairs.append(BurnWindow(long=long, short=short, burn_rate=factor))  # type: ignore[arg-type]
        return tuple(pairs)

    def _view(self, item: dict[str, Any], field: str, key: str) -> str:
        if key not in item:
            raise self.fail(f"{field}: missing field {key!r}")
        value = item[key]
        if value not in VIEW_SECONDS:
            raise self.fail(f"{field}.{key} must be one of {', '.join(VIEWS)}, got {value!r}")
        return str(value)

    def text(self, key: str, *, pattern: re.Pattern[str] | None = None) -> str:
        if key not in self._raw:
            raise self.fail(f"missing field {key!r}")
        value = self.optional_text(key)
        assert value is not None
        if pattern is not None and not pattern.match(value):
            raise self.fail(f"{key} must match {pattern.pattern}, got {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(f"{key} must be a non-empty string, got {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise self.fail(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def forbid(self, key: str, why: str) -> None:
        if key in self._raw:
            raise self.fail(f"{key} is not allowed: {why}")

    def number(
        self,
        key: str,
        *,
        default: float | None = None,
        minimum: float,
        maximum: float | None = None,
        inclusive: bool = False,
        inclusive_max: bool = False,
    ) -> float:
        if key not in self._raw:
            if default is None:
                raise self.fail(f"missing field {key!r}")
            return default
        value = self._raw[key]
        if not _is_number(value) or not math.isfinite(value):
            raise self.fail(f"{key} must be a number, got {value!r}")
        low_ok = value >= minimum if inclusive else value > minimum
        if not low_ok:
            raise self.fail(f"{key} must be {'>=' if inclusive else '>'} {minimum:g}")
        if maximum is not None and not (value <= maximum if inclusive_max else value < maximum):
            raise self.fail(f"{key} must be {'<=' if inclusive_max else '<'} {maximum:g}")
        return float(value)

    def integer(self, key: str, *, default: int, minimum: int) -> int:
        value = self._raw.get(key, default)
        if type(value) is not int:
            raise self.fail(f"{key} must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(f"{key} must be >= {minimum}")
        return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
