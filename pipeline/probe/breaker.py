"""Circuit breaker per upstream: resilience4j COUNT_BASED semantics, pure and thread-safe.

The probe transport asks :meth:`CircuitBreaker.try_acquire` before each attempt and reports
exactly one of :meth:`~CircuitBreaker.on_success`, :meth:`~CircuitBreaker.on_failure` or
:meth:`~CircuitBreaker.release` for every permit it got. No I/O, no httpx: time comes from
the injected ``clock`` and every time-based transition is evaluated lazily, on the next call.

State machine (``docs/resilience.md``)::

    CLOSED    -- failure or slow-call rate >= threshold over the last
                 sliding_window_size outcomes (once minimum_number_of_calls) -->  OPEN
    OPEN      -- wait_duration_in_open_s elapsed ------------------------------>  HALF_OPEN
    HALF_OPEN -- permitted_calls_in_half_open outcomes, rates below thresholds ->  CLOSED
    HALF_OPEN -- ... a rate at or above its threshold ------------------------->  OPEN
    HALF_OPEN -- max_wait_in_half_open_s elapsed with a permit still out ------>  OPEN
                 (the stuck guard: counted in ``stuck_half_open_recoveries``)

Outcomes that arrive while OPEN, or in HALF_OPEN with no trial permit out, belong to calls
admitted before the current period; they are ignored rather than allowed to skew a decision.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "OVERFLOW_BREAKER_NAME",
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerStateName",
    "CircuitBreaker",
    "Transition",
]

BreakerStateName = Literal["closed", "open", "half_open"]
Transition = tuple[BreakerStateName, BreakerStateName, float]  # (from, to, clock value)

OVERFLOW_BREAKER_NAME: Final = "_overflow"

_FAILED: Final = 1  # bit flags of one outcome in the window ring
_SLOW: Final = 2
_TRANSITIONS_KEPT: Final = 10


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"invalid breaker config: need {what}")


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds are shares in (0, 1]; durations are seconds of the injected clock."""

    failure_rate_threshold: float = 0.5
    # 1.0 switches the slow-call trip off (the brief's contract), so a healthy but slow
    # upstream (long polls, large downloads) is never short-circuited by default.
    slow_call_rate_threshold: float = 1.0
    slow_call_duration_s: float = 2.0
    sliding_window_size: int = 20
    # Clamped to sliding_window_size, as resilience4j does, so the breaker can always trip.
    minimum_number_of_calls: int = 10
    wait_duration_in_open_s: float = 5.0
    permitted_calls_in_half_open: int = 3
    # Should exceed the longest request timeout: a trial call still running after this is
    # treated as lost, and its late outcome is ignored.
    max_wait_in_half_open_s: float = 10.0

    def __post_init__(self) -> None:
        _require(0.0 < self.failure_rate_threshold <= 1.0, "failure_rate_threshold in (0, 1]")
        _require(0.0 < self.slow_call_rate_threshold <= 1.0, "slow_call_rate_threshold in (0, 1]")
        _require(self.slow_call_duration_s > 0.0, "slow_call_duration_s > 0")
        _require(self.sliding_window_size >= 1, "sliding_window_size >= 1")
        _require(self.minimum_number_of_calls >= 1, "minimum_number_of_calls >= 1")
        _require(self.wait_duration_in_open_s >= 0.0, "wait_duration_in_open_s >= 0")
        _require(self.permitted_calls_in_half_open >= 1, "permitted_calls_in_half_open >= 1")
        _require(self.max_wait_in_half_open_s > 0.0, "max_wait_in_half_open_s > 0")


@dataclass(frozen=True)
class BreakerSnapshot:
    """A consistent copy of one breaker's state, taken under its lock.

    ``failure_rate``, ``slow_call_rate`` and ``calls_in_window`` describe the measurement
    that drives the next decision: the sliding window when CLOSED or OPEN, the trial calls
    when HALF_OPEN. Rates are 0.0 when no call was recorded.
    """

    name: str
    state: BreakerStateName
    failure_rate: float
    slow_call_rate: float
    calls_in_window: int
    last_transition_at: float  # clock value; the construction time before any transition
    transitions: tuple[Transition, ...]  # the last 10, oldest first
    stuck_half_open_recoveries: int
    short_circuited_total: int


_DEFAULT_CONFIG: Final = BreakerConfig()


class CircuitBreaker:
    """One breaker. All methods are thread-safe; each costs one uncontended lock."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig = _DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._min_calls = min(config.minimum_number_of_calls, config.sliding_window_size)
        self._slow_trips = config.slow_call_rate_threshold < 1.0
        self._slow_s = config.slow_call_duration_s
        # True only while CLOSED with a full window of fast successes (on_success's fast path).
        self._clean = False
        self._state: BreakerStateName = "closed"
        self._since = clock()
        # Count-based window: a ring of per-call flags plus running totals, so recording
        # an outcome is O(1) whatever the window size.
        self._ring = [0] * config.sliding_window_size
        self._next = 0
        self._calls = 0
        self._failures = 0
        self._slow = 0
        # Half-open trial. Invariant: 0 <= _trial_calls <= _permits_out <= permitted.
        self._permits_out = 0
        self._trial_calls = 0
        self._trial_failures = 0
        self._trial_slow = 0
        self._transitions: deque[Transition] = deque(maxlen=_TRANSITIONS_KEPT)
        self._stuck_recoveries = 0
        self._short_circuited = 0

    # The hot paths below read CLOSED without the lock: CLOSED has no time-based transition,
    # and reading one attribute is atomic, so the answer is the one the lock would have given
    # just before (or after) a concurrent transition.

    @property
    def state(self) -> BreakerStateName:
        state = self._state
        if state == "closed":
            return state
        with self._lock:
            self._advance()
            return self._state

    def try_acquire(self) -> bool:
        """True: make the call and report its outcome. False: short-circuit it (counted)."""
        return self.acquire() is not None

    def acquire(self) -> BreakerStateName | None:
        """:meth:`try_acquire` and :attr:`state` in one step: the state the call was let
        through in (``"closed"`` or ``"half_open"``), or None: short-circuit it (counted)."""
        state = self._state
        if state == "closed":
            return state
        with self._lock:
            self._advance()
            if self._state == "closed":
                return "closed"
            if (
                self._state == "half_open"
                and self._permits_out < self.config.permitted_calls_in_half_open
            ):
                self._permits_out += 1
                return "half_open"
            self._short_circuited += 1
            return None

    def on_success(self, duration_s: float) -> None:
        # A full CLOSED window of fast successes absorbs one more unchanged: the ring holds
        # only zeros, so recording would move the ring's cursor and nothing else (no count,
        # no rate, no transition). ``_clean`` says so in one atomic read; it is cleared under
        # the lock before anything else changes (see _record and _transition).
        if self._clean and duration_s < self._slow_s:
            return
        self._record(duration_s, failed=False)

    def on_failure(self, duration_s: float) -> None:
        self._record(duration_s, failed=True)

    def release(self) -> None:
        """Give back a permit whose call was cancelled; no outcome is recorded."""
        with self._lock:
            self._advance()
            if self._state == "half_open" and self._permits_out > self._trial_calls:
                self._permits_out -= 1

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            self._advance()
            if self._state == "half_open":
                calls, failures, slow = self._trial_calls, self._trial_failures, self._trial_slow
            else:
                calls, failures, slow = self._calls, self._failures, self._slow
            return BreakerSnapshot(
                name=self.name,
                state=self._state,
                failure_rate=failures / calls if calls else 0.0,
                slow_call_rate=slow / calls if calls else 0.0,
                calls_in_window=calls,
                last_transition_at=self._since,
                transitions=tuple(self._transitions),
                stuck_half_open_recoveries=self._stuck_recoveries,
                short_circuited_total=self._short_circuited,
            )

    # -- internals: _record takes the lock, the others run with it held ----------------

    def _record(self, duration_s: float, *, failed: bool) -> None:
        flags = (_FAILED if failed else 0) | (_SLOW if duration_s >= self._slow_s else 0)
        with self._lock:
            if flags:
                self._clean = False
            self._advance()
            if self._state == "closed":
                self._record_in_window(flags)
                if self._calls >= self._min_calls and self._tripped(
                    self._failures, self._slow, self._calls
                ):
                    self._transition("open", self._clock())
                else:
                    self._clean = (
                        self._calls == len(self._ring) and self._failures == 0 and self._slow == 0
                    )
            elif self._state == "half_open" and self._trial_calls < self._permits_out:
                self._trial_calls += 1
                self._trial_failures += flags & _FAILED
                self._trial_slow += (flags & _SLOW) >> 1
                if self._trial_calls == self.config.permitted_calls_in_half_open:
                    tripped = self._tripped(
                        self._trial_failures, self._trial_slow, self._trial_calls
                    )
                    self._transition("open" if tripped else "closed", self._clock())

    def _record_in_window(self, flags: int) -> None:
        if self._calls == len(self._ring):  # full: the oldest outcome leaves the window
            old = self._ring[self._next]
            self._failures -= old & _FAILED
            self._slow -= (old & _SLOW) >> 1
        else:
            self._calls += 1
        self._ring[self._next] = flags
        self._failures += flags & _FAILED
        self._slow += (flags & _SLOW) >> 1
        self._next = (self._next + 1) % len(self._ring)

    def _tripped(self, failures: int, slow: int, calls: int) -> bool:
        if failures / calls >= self.config.failure_rate_threshold:
            return True
        return self._slow_trips and slow / calls >= self.config.slow_call_rate_threshold

    def _advance(self) -> None:
        """Apply the time-based transitions that are due; CLOSED has none (and no clock read)."""
        if self._state == "closed":
            return
        now = self._clock()
        if self._state == "half_open":
            max_wait = self.config.max_wait_in_half_open_s
            if self._permits_out > self._trial_calls and now - self._since >= max_wait:
                # Back to OPEN as of the moment the guard became due, not of when we happened
                # to look, so the next trial starts no later than max_wait + wait after this one.
                self._stuck_recoveries += 1
                self._transition("open", self._since + max_wait)
        if self._state == "open" and now - self._since >= self.config.wait_duration_in_open_s:
            self._transition("half_open", now)

    def _transition(self, to: BreakerStateName, at: float) -> None:
        self._clean = False
        self._transitions.append((self._state, to, at))
        self._state = to
        self._since = at
        if to == "closed":
            self._ring = [0] * len(self._ring)
            self._next = self._calls = self._failures = self._slow = 0
        elif to == "half_open":
            self._permits_out = self._trial_calls = self._trial_failures = self._trial_slow = 0


class BreakerRegistry:
    """One breaker per upstream ``host:port``, at most ``max_breakers`` of them.

    Past the bound every new upstream shares one breaker named ``_overflow`` (and each such
    lookup is counted in :attr:`overflow_total`): a cardinality explosion, e.g. per-tenant
    host names, must not grow memory without limit. Shared, it can short-circuit healthy
    upstreams for a sick one, so size the bound above the real number of upstreams.
    """

    def __init__(
        self,
        config: BreakerConfig = _DEFAULT_CONFIG,
        *,
        max_breakers: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require(max_breakers >= 0, "max_breakers >= 0")
        self._config = config
        self._max = max_breakers
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._overflow: CircuitBreaker | None = None
        self._overflow_total = 0

    def get(self, upstream: str) -> CircuitBreaker:
        # A dict read is atomic in CPython; the hot path (a known upstream) takes no lock.
        breaker = self._breakers.get(upstream)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(upstream)
            if breaker is not None:
                return breaker
            if len(self._breakers) < self._max:
                breaker = CircuitBreaker(upstream, self._config, clock=self._clock)
                self._breakers[upstream] = breaker
                return breaker
            self._overflow_total += 1
            if self._overflow is None:
                self._overflow = CircuitBreaker(
                    OVERFLOW_BREAKER_NAME, self._config, clock=self._clock
                )
            return self._overflow

    @property
    def overflow_total(self) -> int:
        """Lookups of an upstream past ``max_breakers``, answered by the overflow breaker."""
        with self._lock:
            return self._overflow_total

    def snapshots(self) -> list[BreakerSnapshot]:
        """Every breaker's snapshot, the overflow breaker last (if it exists)."""
        with self._lock:
            breakers = list(self._breakers.values())
            if self._overflow is not None:
                breakers.append(self._overflow)
        return [breaker.snapshot() for breaker in breakers]
