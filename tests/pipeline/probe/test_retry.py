"""Retry policy: full-jitter backoff, the retryable table, Retry-After, and the budget."""

from __future__ import annotations

import math
import random
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.probe.retry import (
    RetryBudget,
    RetryConfig,
    backoff_delay,
    is_retryable,
    parse_retry_after,
    retry_after_delay,
)
from pipeline.schema import ERROR_CLASSES, OUTCOMES


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TopOfRange(random.Random):
    """An rng whose uniform(a, b) is b: exposes the cap that full jitter draws under."""

    def uniform(self, a: float, b: float) -> float:
        return b


CONFIG = RetryConfig()


def cap(attempt: int, config: RetryConfig = CONFIG) -> float:
    return backoff_delay(attempt, config, rng=TopOfRange())


# -- backoff ---------------------------------------------------------------------------


def test_backoff_cap_doubles_from_base_up_to_max() -> None:
    assert [cap(a) for a in range(1, 9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_backoff_is_full_jitter_from_zero() -> None:
    delays = [backoff_delay(3, CONFIG, rng=random.Random(seed)) for seed in range(200)]
    assert min(delays) < 0.02  # spread from 0 ...
    assert max(delays) > 0.18  # ... to the cap 0.2
    assert all(0.0 <= d <= 0.2 for d in delays)


def test_backoff_without_rng_uses_the_module_generator() -> None:
    assert 0.0 <= backoff_delay(2, CONFIG) <= 0.1


def test_backoff_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(0, CONFIG)


_backoff_configs = st.builds(
    RetryConfig,
    backoff_base_s=st.floats(0.0, 10.0),
    backoff_max_s=st.floats(0.0, 60.0),
)


@given(config=_backoff_configs, attempt=st.integers(1, 5_000), seed=st.integers(0, 2**32))
def test_backoff_always_within_zero_and_max(config: RetryConfig, attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, config, rng=random.Random(seed))
    assert 0.0 <= delay <= config.backoff_max_s


@given(config=_backoff_configs, attempt=st.integers(1, 3_000))
def test_backoff_cap_grows_exponentially_until_max(config: RetryConfig, attempt: int) -> None:
    here, there = cap(attempt, config), cap(attempt + 1, config)
    assert there == min(config.backoff_max_s, 2 * here) or here == config.backoff_max_s
    exact = min(
        Fraction(config.backoff_max_s), Fraction(config.backoff_base_s) * 2 ** (attempt - 1)
    )
    assert here == float(exact)


# -- is_retryable ----------------------------------------------------------------------

_Y, _N = True, False

RETRYABLE_TABLE = [
    # method, outcome, error_class, status, expected
    ("GET", "timeout", "read_timeout", None, _Y),
    ("GET", "timeout", "pool_timeout", None, _Y),
    ("GET", "connect_error", "connection_refused", None, _Y),
    ("GET", "connect_error", "tls_error", None, _Y),
    ("GET", "transport_error", "read_error", None, _Y),
    ("GET", "protocol_error", "remote_protocol_error", None, _N),
    ("GET", "http_error", "http_5xx", 502, _Y),
    ("GET", "http_error", "http_5xx", 503, _Y),
    ("GET", "http_error", "http_5xx", 504, _Y),
    ("GET", "http_error", "http_5xx", 500, _N),
    ("GET", "http_error", "http_4xx", 429, _N),  # opt-in via retry_on_status
    ("GET", "http_error", "http_4xx", 404, _N),
    ("GET", "http_error", None, None, _N),
    ("GET", "ok", None, 200, _N),
    ("GET", "ok", None, 503, _N),  # never on ok, whatever the status
    ("GET", "cancelled", "cancelled", None, _N),
    ("GET", "breaker_open", "breaker_open", None, _N),
    ("GET", "budget_exhausted", None, None, _N),
    ("GET", "no_such_outcome", None, None, _N),
    ("get", "timeout", "read_timeout", None, _Y),  # method case does not matter
    ("HEAD", "transport_error", "write_error", None, _Y),
    ("OPTIONS", "http_error", "http_5xx", 503, _Y),
    ("PUT", "timeout", "write_timeout", None, _Y),
    ("DELETE", "http_error", "http_5xx", 504, _Y),
    ("TRACE", "connect_error", "dns_failure", None, _Y),
    ("PUT", "cancelled", "cancelled", None, _N),
    # non-idempotent: only when nothing was sent
    ("POST", "connect_error", "connection_refused", None, _Y),
    ("POST", "connect_error", "dns_failure", None, _Y),
    ("POST", "connect_error", "connect_failed", None, _Y),
    ("POST", "timeout", "connect_timeout", None, _Y),
    ("PATCH", "connect_error", "connection_refused", None, _Y),
    ("POST", "connect_error", "tls_error", None, _N),
    ("POST", "timeout", "pool_timeout", None, _N),
    ("POST", "timeout", "read_timeout", None, _N),
    ("POST", "timeout", "write_timeout", None, _N),
    ("POST", "transport_error", "read_error", None, _N),
    ("POST", "http_error", "http_5xx", 503, _N),
    ("PATCH", "http_error", "http_5xx", 502, _N),
    ("POST", "ok", None, 200, _N),
    ("POST", "breaker_open", "connect_failed", None, _N),
    ("POST", "cancelled", "connect_failed", None, _N),
    ("CONNECT", "connect_error", "connection_refused", None, _Y),
    ("CONNECT", "transport_error", "read_error", None, _N),
]


@pytest.mark.parametrize("method, outcome, error_class, status, expected", RETRYABLE_TABLE)
def test_is_retryable(
    method: str, outcome: str, error_class: str | None, status: int | None, expected: bool
) -> None:
    got = is_retryable(
        method=method, outcome=outcome, error_class=error_class, status_code=status, config=CONFIG
    )
    assert got is expected


def test_table_uses_only_schema_names() -> None:
    for _, outcome, error_class, _, _ in RETRYABLE_TABLE:
        assert outcome in OUTCOMES or outcome == "no_such_outcome"
        assert error_class is None or error_class in ERROR_CLASSES


def test_non_idempotent_connect_retry_can_be_switched_off() -> None:
    config = RetryConfig(retry_non_idempotent_on_connect_error=False)

    def retryable(method: str) -> bool:
        return is_retryable(
            method=method,
            outcome="connect_error",
            error_class="connection_refused",
            status_code=None,
            config=config,
        )

    assert not retryable("POST")
    assert retryable("GET")


def test_429_retries_once_opted_in() -> None:
    config = RetryConfig(retry_on_status=frozenset({429, 503}))
    assert is_retryable(
        method="GET", outcome="http_error", error_class="http_4xx", status_code=429, config=config
    )


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
    error_class=st.none() | st.sampled_from(sorted(ERROR_CLASSES)),
    status=st.none() | st.integers(100, 599),
)
def test_never_retries_ok_cancelled_or_breaker_open(
    method: str, error_class: str | None, status: int | None
) -> None:
    for outcome in ("ok", "cancelled", "breaker_open", "budget_exhausted"):
        assert not is_retryable(
            method=method,
            outcome=outcome,
            error_class=error_class,
            status_code=status,
            config=CONFIG,
        )


# -- Retry-After -----------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0", 0.0),
        (" 120 ", 120.0),
        (format_datetime(datetime(2026, 11, 29, 12, 0, 3, tzinfo=UTC), usegmt=True), 3.0),
        ("Sun, 29 Nov 2026 12:00:07 -0000", 7.0),  # naive date: read as GMT
        (format_datetime(datetime(2026, 11, 29, 11, 0, 0, tzinfo=UTC), usegmt=True), 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
        ("9" * 5_000, None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "backoff, retry_after, expected",
    [
        (0.3, None, 0.3),
        (0.3, 1.0, 1.0),
        (0.3, 0.1, 0.3),
        (0.3, 2.0, 2.0),
        (0.3, 2.5, None),  # the server asks for longer than backoff_max_s: give up
    ],
)
def test_retry_after_delay(
    backoff: float, retry_after: float | None, expected: float | None
) -> None:
    assert retry_after_delay(backoff, retry_after, CONFIG) == expected


# -- retry budget ----------------------------------------------------------------------


def budget(**overrides: float) -> tuple[RetryBudget, FakeClock]:
    clock = FakeClock()
    return RetryBudget(RetryConfig(**overrides), clock=clock), clock  # type: ignore[arg-type]


def test_budget_floor_allows_min_per_second_times_window_without_requests() -> None:
    b, _ = budget(budget_min_retries_per_s=3.0, budget_window_s=10.0)
    grants = [b.try_acquire_retry() for _ in range(31)]
    assert grants == [True] * 30 + [False]
    snap = b.snapshot()
    assert (snap.granted_total, snap.refused_total, snap.retries_in_window) == (30, 1, 30)
    assert snap.budget_used_ratio == 1.0


def test_budget_ratio_of_requests_above_the_floor() -> None:
    b, _ = budget(budget_ratio=0.2, budget_min_retries_per_s=0.5, budget_window_s=10.0)
    for _ in range(100):
        b.record_request()
    grants = sum(b.try_acquire_retry() for _ in range(50))
    assert grants == 20
    snap = b.snapshot()
    assert (snap.requests_in_window, snap.retries_in_window) == (100, 20)
    assert snap.refused_total == 30


def test_budget_window_slides_per_bucket() -> None:
    b, clock = budget(budget_ratio=0.0, budget_min_retries_per_s=1.0, budget_window_s=4.0)
    assert sum(b.try_acquire_retry() for _ in range(10)) == 4
    clock.advance(3.999)
    assert not b.try_acquire_retry()  # still inside the 4 s window
    clock.advance(0.001)
    assert b.snapshot().retries_in_window == 0  # the bucket they were in has left
    assert b.try_acquire_retry()


def test_budget_snapshot_ratio() -> None:
    b, _ = budget(budget_ratio=0.5, budget_min_retries_per_s=0.0, budget_window_s=1.0)
    assert b.snapshot().budget_used_ratio == 1.0  # nothing allowed yet
    for _ in range(8):
        b.record_request()
    b.try_acquire_retry()
    assert b.snapshot().budget_used_ratio == 0.25


def test_budget_memory_is_a_fixed_ring() -> None:
    b, clock = budget(budget_window_s=10.0)
    for _ in range(10_000):
        b.record_request()
        b.try_acquire_retry()
        clock.advance(0.37)
    assert len(b._requests) == len(b._retries) == 10


@pytest.mark.parametrize("field", ["max_attempts", "budget_window_s"])
def test_retry_config_rejects_nonsense(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryConfig(**{field: 0})  # type: ignore[arg-type]


# Times are multiples of 1/8 s and every window below has an exact bucket width, so the
# float arithmetic of the check is exact.
_budget_ops = st.lists(
    st.one_of(
        st.just(("request", 0)),
        st.just(("retry", 0)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    ),
    max_size=400,
)


@given(
    ops=_budget_ops,
    window=st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0, 10.0]),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_s=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
)
def test_budget_never_exceeds_its_formula_in_any_window(
    ops: list[tuple[str, int]], window: float, ratio: float, min_per_s: float
) -> None:
    clock = FakeClock(now=0.0)
    b = RetryBudget(
        RetryConfig(budget_ratio=ratio, budget_min_retries_per_s=min_per_s, budget_window_s=window),
        clock=clock,
    )
    width = window / max(1, -(-window // 1))  # the bucket width: window / ceil(window)
    requests: list[float] = []
    grants: list[float] = []
    for op, eighths in ops:
        if op == "tick":
            clock.advance(eighths / 8)
        elif op == "request":
            b.record_request()
            requests.append(clock.now)
        elif b.try_acquire_retry():
            grants.append(clock.now)
            t = clock.now
            # The budget's window holds (t - window + width, t] and lies inside (t - window, t].
            granted = sum(1 for g in grants if t - window + width < g <= t)
            seen = sum(1 for r in requests if t - window < r <= t)
            assert granted <= max(ratio * seen, min_per_s * window)
    snap = b.snapshot()
    assert snap.granted_total == len(grants)
    assert snap.granted_total + snap.refused_total == sum(op == "retry" for op, _ in ops)


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Make the interpreter switch threads every few bytecodes, so races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("switch_often")
def test_budget_counts_stay_consistent_under_threads() -> None:
    b = RetryBudget(RetryConfig(budget_ratio=0.5, budget_min_retries_per_s=0.0))
    barrier = threading.Barrier(8)
    granted = [0] * 8

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(2_000):
            b.record_request()
            granted[index] += b.try_acquire_retry()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = b.snapshot()
    assert snap.granted_total == sum(granted)
    assert snap.granted_total + snap.refused_total == 16_000
    assert snap.requests_in_window == 16_000  # the test runs well inside one 10 s window
    assert snap.retries_in_window == snap.granted_total <= 0.5 * 16_000


class _LockedBudget:
    """The budget as it was before its lock-free request count: every call takes the lock
    and files the request in its bucket at once. The oracle for the test below."""

    def __init__(self, config: RetryConfig, clock: FakeClock) -> None:
        self.config = config
        self._clock = clock
        self._n = max(1, math.ceil(config.budget_window_s))
        self._width = config.budget_window_s / self._n
        self._floor = config.budget_min_retries_per_s * config.budget_window_s
        self._bucket = [-(2**63)] * self._n
        self._requests = [0] * self._n
        self._retries = [0] * self._n
        self._granted = 0
        self._refused = 0

    def record_request(self) -> None:
        self._requests[self._slot(self._clock())] += 1

    def try_acquire_retry(self) -> bool:
        now = self._clock()
        requests, retries = self._totals(now)
        if retries + 1 <= max(self.config.budget_ratio * requests, self._floor):
            self._retries[self._slot(now)] += 1
            self._granted += 1
            return True
        self._refused += 1
        return False

    def totals(self) -> tuple[int, int, int, int]:
        return (*self._totals(self._clock()), self._granted, self._refused)

    def _slot(self, now: float) -> int:
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


# Clock steps: bucket edges of odd widths (2.5 s over 3 buckets), float dust, big jumps.
_steps = st.one_of(
    st.sampled_from([0.0, 1e-9, 0.125, 0.5, 0.833_333_333_333_333_4, 1.0, 2.5, 11.0, 40.0]),
    st.floats(0.0, 3.0),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.just(("request", 0.0)), st.just(("retry", 0.0)), st.tuples(st.just("tick"), _steps)
        ),
        min_size=20,
        max_size=300,
    ),
    window=st.sampled_from([0.7, 1.0, 2.5, 3.0, 10.0]),
    ratio=st.sampled_from([0.0, 0.2, 1.0]),
    min_per_s=st.sampled_from([0.0, 0.5, 3.0]),
    start=st.sampled_from([0.0, 1e6 + 0.3, 123_456.789]),
)
def test_budget_decides_exactly_as_the_locked_budget(
    ops: list[tuple[str, float]], window: float, ratio: float, min_per_s: float, start: float
) -> None:
    config = RetryConfig(
        budget_ratio=ratio, budget_min_retries_per_s=min_per_s, budget_window_s=window
    )
    clock = FakeClock(now=start)
    fast = RetryBudget(config, clock=clock)
    locked = _LockedBudget(config, clock)
    for op, step in ops:
        if op == "tick":
            clock.advance(step)
        elif op == "request":
            fast.record_request()
            locked.record_request()
        else:
            assert fast.try_acquire_retry() == locked.try_acquire_retry()
        snap = fast.snapshot()
        assert (
            snap.requests_in_window,
            snap.retries_in_window,
            snap.granted_total,
            snap.refused_total,
        ) == locked.totals()


@pytest.mark.parametrize("window", [0.7, 2.5])
def test_budget_files_requests_at_float_edges_like_the_locked_budget(window: float) -> None:
    """``bucket * width`` is a float or two off the bucket's true edge for these widths
    (3 * 0.7 = 2.0999999999999996, which divides back into bucket 2): a request a float away
    from an edge must land in the bucket ``floor(t / width)`` says, as before."""
    config = RetryConfig(budget_ratio=1.0, budget_min_retries_per_s=0.0, budget_window_s=window)
    clock = FakeClock(now=0.0)
    fast, locked = RetryBudget(config, clock=clock), _LockedBudget(config, clock)
    width = window / math.ceil(window)
    for bucket in range(1, 80):
        edge = bucket * width
        for t in (math.nextafter(edge, -math.inf), edge, math.nextafter(edge, math.inf)):
            clock.now = t
            fast.record_request()
            locked.record_request()
            snap = fast.snapshot()
            assert (snap.requests_in_window, snap.retries_in_window) == locked.totals()[:2]
