"""Retry policy: which attempts may be retried, how long to wait, and a retry budget.

Pure and thread-safe, no I/O, no httpx. The probe transport owns the loop::

    budget.record_request()                         # once per logical request
    for attempt in range(1, config.max_attempts + 1):
        outcome = <attempt>
        if attempt == config.max_attempts or not is_retryable(...):
            break
        if not budget.try_acquire_retry():          # refused: outcome "budget_exhausted"
            break
        delay = retry_after_delay(backoff_delay(attempt, config), retry_after_s, config)
        if delay is None:                           # the server asked for longer than we wait
            break
        <sleep delay>

429 is not retried by default: it means "slow down", and a retry within one request's
latency budget rarely helps. Add it to ``retry_on_status`` to opt in; then, as for any
status, a ``Retry-After`` the response carries is honoured by :func:`retry_after_delay`.
"""

from __future__ import annotations

import email.utils
import itertools
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Final

__all__ = [
    "IDEMPOTENT_METHODS",
    "NOTHING_SENT_ERROR_CLASSES",
    "RetryBudget",
    "RetryBudgetSnapshot",
    "RetryConfig",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
    "retry_after_delay",
]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Error classes raised before any request byte left: retrying them cannot duplicate a write.
# tls_error and pool_timeout are left out on purpose: the first rarely heals on retry, the
# second is local overload that a retry would only deepen.
NOTHING_SENT_ERROR_CLASSES: Final = frozenset(
    {"connect_timeout", "connection_refused", "dns_failure", "connect_failed"}
)
_IDEMPOTENT_RETRY_OUTCOMES: Final = frozenset({"timeout", "connect_error", "transport_error"})
_NOTHING_SENT_OUTCOMES: Final = frozenset({"timeout", "connect_error"})


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"invalid retry config: need {what}")


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 3  # total attempts including the first; 1 = no retry
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    retry_on_status: frozenset[int] = frozenset({502, 503, 504})
    retry_non_idempotent_on_connect_error: bool = True  # a connect error means nothing was sent
    budget_ratio: float = 0.2  # retries <= 20% of the logical requests in the window...
    budget_min_retries_per_s: float = 3.0  # ...but always at least this many per second
    budget_window_s: float = 10.0

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "max_attempts >= 1")
        _require(self.backoff_base_s >= 0.0, "backoff_base_s >= 0")
        _require(self.backoff_max_s >= 0.0, "backoff_max_s >= 0")
        _require(self.budget_ratio >= 0.0, "budget_ratio >= 0")
        _require(self.budget_min_retries_per_s >= 0.0, "budget_min_retries_per_s >= 0")
        _require(self.budget_window_s > 0.0, "budget_window_s > 0")


def backoff_delay(attempt: int, config: RetryConfig, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: AWS "full jitter".

    ``uniform(0, min(backoff_max_s, backoff_base_s * 2 ** (attempt - 1)))``: spreading
    retries over the whole interval de-synchronises clients better than a jittered fixed
    delay does. ``attempt`` is the 1-based number of the attempt that just failed.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    try:
        grown = math.ldexp(config.backoff_base_s, attempt - 1)  # base * 2**(attempt-1), exact
    except OverflowError:  # past float range: any cap is backoff_max_s by then
        grown = math.inf
    cap = min(config.backoff_max_s, grown)
    # Jitter, not a secret: the shared module generator is fine (and thread-safe).
    uniform = rng.uniform if rng is not None else random.uniform  # noqa: S311
    return uniform(0.0, cap)


def is_retryable(
    *,
    method: str,
    outcome: str,
    error_class: str | None,
    status_code: int | None,
    config: RetryConfig,
) -> bool:
    """Whether a failed attempt may be tried again (the budget is asked separately).

    Idempotent methods retry on timeout, connect_error, transport_error and an http_error
    whose status is in ``retry_on_status``. Other methods (POST, PATCH, ...) retry only when
    nothing was sent (``NOTHING_SENT_ERROR_CLASSES``) and the config allows it. Never on
    ok, cancelled, breaker_open, budget_exhausted or an unknown outcome.
    """
    if method.upper() in IDEMPOTENT_METHODS:
        if outcome in _IDEMPOTENT_RETRY_OUTCOMES:
            return True
        return outcome == "http_error" and status_code in config.retry_on_status
    return (
        config.retry_non_idempotent_on_connect_error
        and outcome in _NOTHING_SENT_OUTCOMES
        and error_class in NOTHING_SENT_ERROR_CLASSES
    )


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date).

    ``now`` is wall-clock Unix time (``time.time()``), needed for the date form. A date in
    the past gives 0.0; anything unparseable gives None (ignore the header).
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        try:
            return float(int(value))
        except ValueError:  # more digits than int() accepts: no sane server sends that
            return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_delay(
    backoff_s: float, retry_after_s: float | None, config: RetryConfig
) -> float | None:
    """The delay honouring a server's ``Retry-After``, or None: do not retry.

    A retry never waits longer than ``backoff_max_s``; a server asking for more is telling
    us the retry would fail, so the attempt's failure is returned to the caller instead.
    """
    if retry_after_s is None:
        return backoff_s
    if retry_after_s > config.backoff_max_s:
        return None
    return max(backoff_s, retry_after_s)


@dataclass(frozen=True)
class RetryBudgetSnapshot:
    requests_in_window: int
    retries_in_window: int
    budget_used_ratio: float  # retries_in_window / retries allowed now; 1.0 if none allowed
    refused_total: int
    granted_total: int


_DEFAULT_CONFIG: Final = RetryConfig()
_NO_BUCKET: Final = -(2**63)


class RetryBudget:
    """Envoy-style retry budget, by rate rather than concurrency.

    A retry is granted while ``retries_in_window + 1 <= max(budget_ratio * requests_in_window,
    budget_min_retries_per_s * budget_window_s)``, so retries can never multiply load during
    an outage. The window is a ring of ``ceil(budget_window_s)`` buckets of about one second
    each: memory is fixed, and the window slides one bucket at a time.
    """

    def __init__(
        self,
        config: RetryConfig = _DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._n = max(1, math.ceil(config.budget_window_s))
        self._width = config.budget_window_s / self._n
        self._floor = config.budget_min_retries_per_s * config.budget_window_s
        self._bucket = [_NO_BUCKET] * self._n  # which bucket number each slot holds
        self._requests = [0] * self._n
        self._retries = [0] * self._n
        self._granted = 0
        self._refused = 0
        # Requests of the current bucket are counted without the lock, by an itertools.count
        # (next() is one C call: atomic under the GIL), and folded into _requests under the
        # lock when a request falls outside [_count_from, _count_until) or totals are read.
        self._count = itertools.count()
        self._count_slot = 0
        self._count_bucket = _NO_BUCKET
        self._count_from = math.inf
        self._count_until = -math.inf

    def record_request(self) -> None:
        """Count one logical request (not its retries)."""
        now = self._clock()
        if not self._count_from <= now < self._count_until:
            self._count_bucket_of(now)
        next(self._count)

    def try_acquire_retry(self) -> bool:
        """True and the retry is counted if within budget; False and a refusal is counted."""
        with self._lock:
            self._fold()
            now = self._clock()
            requests, retries = self._totals(now)
            if retries + 1 <= self._allowed(requests):
                self._retries[self._slot(now)] += 1
                self._granted += 1
                return True
            self._refused += 1
            return False

    def snapshot(self) -> RetryBudgetSnapshot:
        with self._lock:
            self._fold()
            requests, retries = self._totals(self._clock())
            allowed = self._allowed(requests)
            return RetryBudgetSnapshot(
                requests_in_window=requests,
                retries_in_window=retries,
                budget_used_ratio=retries / allowed if allowed > 0 else 1.0,
                refused_total=self._refused,
                granted_total=self._granted,
            )

    def _count_bucket_of(self, now: float) -> None:
        """Count from now on in the bucket holding ``now`` (its slot emptied if stale)."""
        with self._lock:
            if self._count_from <= now < self._count_until:
                return  # another thread moved the counter there first
            self._fold()
            self._count_slot = slot = self._slot(now)
            self._count_bucket = bucket = self._bucket[slot]
            self._count_from, self._count_until = self._times_of(bucket)

    # -- internals: called with self._lock held -----------------------------------------

    def _fold(self) -> None:
        """Add the lock-free counter's requests to its bucket's slot, and restart it.

        Every locked path folds before it reads or empties a slot; if the slot moved on to a
        newer bucket anyway (the counted one left the window), the count is stale and dropped.
        ``repr`` is how an ``itertools.count`` tells its value without counting one more
        (``count(12)``).
        """
        counter, self._count = self._count, itertools.count()
        counted = int(repr(counter)[6:-1])
        if counted and self._bucket[self._count_slot] == self._count_bucket:
            self._requests[self._count_slot] += counted

    def _times_of(self, bucket: int) -> tuple[float, float]:
        """``[start, end)``: exactly the clock values ``t`` with ``floor(t / width) == bucket``.

        ``bucket * width`` can be a float or two off the true edge; dividing by a positive
        width is monotonic, so nudging each edge to the last float that still divides into
        the right bucket gives the exact range.
        """
        width = self._width
        up, down = math.inf, -math.inf
        start = bucket * width
        while math.floor(start / width) < bucket:
            start = math.nextafter(start, up)
        while math.floor(math.nextafter(start, down) / width) >= bucket:
            start = math.nextafter(start, down)
        end = (bucket + 1) * width
        while math.floor(end / width) <= bucket:
            end = math.nextafter(end, up)
        while math.floor(math.nextafter(end, down) / width) > bucket:
            end = math.nextafter(end, down)
        return start, end

    def _allowed(self, requests: int) -> float:
        return max(self.config.budget_ratio * requests, self._floor)

    def _slot(self, now: float) -> int:
        """The slot of the bucket holding ``now``, emptied first if it held an older bucket."""
        bucket = math.floor(now / self._width)
        slot = bucket % self._n
        if self._bucket[slot] != bucket:
            self._bucket[slot] = bucket
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def _totals(self, now: float) -> tuple[int, int]:
        current = math.floor(now / self._width)
        requests = retries = 0
        for slot in range(self._n):
            if current - self._n < self._bucket[slot] <= current:
                requests += self._requests[slot]
                retries += self._retries[slot]
        return requests, retries
