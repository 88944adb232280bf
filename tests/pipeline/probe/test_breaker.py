"""Circuit breaker: every transition with a fake clock, the registry bound, a random-walk
state machine (Hypothesis) and a thread hammer."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pipeline.probe.breaker import (
    OVERFLOW_BREAKER_NAME,
    BreakerConfig,
    BreakerRegistry,
    BreakerStateName,
    CircuitBreaker,
)
from pipeline.schema import BreakerState


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CONFIG = BreakerConfig(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.5,
    slow_call_duration_s=1.0,
    sliding_window_size=10,
    minimum_number_of_calls=4,
    wait_duration_in_open_s=5.0,
    permitted_calls_in_half_open=3,
    max_wait_in_half_open_s=10.0,
)


def make(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("api.example:443", config, clock=clock), clock


def call(breaker: CircuitBreaker, *, ok: bool, duration: float = 0.1) -> None:
    assert breaker.try_acquire()
    if ok:
        breaker.on_success(duration)
    else:
        breaker.on_failure(duration)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(CONFIG.minimum_number_of_calls):
        call(breaker, ok=False)
    assert breaker.state == "open"


def to_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(CONFIG.wait_duration_in_open_s)
    assert breaker.state == "half_open"


# -- CLOSED -> OPEN --------------------------------------------------------------------


def test_state_names_match_the_event_schema() -> None:
    assert set(get_args(BreakerStateName)) == set(get_args(BreakerState))


def test_starts_closed_and_admits_every_call() -> None:
    breaker, _ = make()
    assert breaker.state == "closed"
    assert all(breaker.try_acquire() for _ in range(100))
    snap = breaker.snapshot()
    assert snap.transitions == ()
    assert snap.last_transition_at == 1000.0
    assert snap.short_circuited_total == 0


def test_minimum_number_of_calls_is_respected() -> None:
    breaker, _ = make()
    for _ in range(CONFIG.minimum_number_of_calls - 1):
        call(breaker, ok=False)
    snap = breaker.snapshot()
    assert (snap.state, snap.failure_rate, snap.calls_in_window) == ("closed", 1.0, 3)
    call(breaker, ok=False)
    assert breaker.state == "open"


def test_opens_on_failure_rate_at_threshold() -> None:
    breaker, clock = make()
    for ok in (True, False, True):
        call(breaker, ok=ok)
    clock.advance(1.5)
    call(breaker, ok=False)  # 2 failures of 4 = 0.5 >= 0.5
    snap = breaker.snapshot()
    assert snap.state == "open"
    assert snap.failure_rate == 0.5
    assert snap.transitions == (("closed", "open", 1001.5),)
    assert snap.last_transition_at == 1001.5


def test_stays_closed_below_failure_threshold() -> None:
    breaker, _ = make()
    for ok in [True] * 6 + [False] * 4:
        call(breaker, ok=ok)
    snap = breaker.snapshot()
    assert (snap.state, snap.failure_rate, snap.calls_in_window) == ("closed", 0.4, 10)


def test_window_is_count_based_and_slides() -> None:
    breaker, _ = make()
    for ok in [False] * 1 + [True] * 10:  # the failure slides out of the 10-call window
        call(breaker, ok=ok)
    snap = breaker.snapshot()
    assert (snap.failure_rate, snap.calls_in_window) == (0.0, 10)
    for ok in [False] * 4 + [True]:
        call(breaker, ok=ok)
    assert breaker.snapshot().failure_rate == 0.4
    call(breaker, ok=False)  # window: 5 successes, 5 failures
    assert breaker.state == "open"


def test_opens_on_slow_call_rate_even_when_calls_succeed() -> None:
    breaker, _ = make()
    call(breaker, ok=True, duration=0.999)
    call(breaker, ok=True, duration=0.2)
    call(breaker, ok=True, duration=1.0)  # duration >= slow_call_duration_s is slow
    assert breaker.state == "closed"
    call(breaker, ok=True, duration=5.0)
    snap = breaker.snapshot()
    assert (snap.state, snap.failure_rate, snap.slow_call_rate) == ("open", 0.0, 0.5)


def test_slow_failures_count_as_slow_too() -> None:
    config = BreakerConfig(
        failure_rate_threshold=1.0, slow_call_rate_threshold=0.5, minimum_number_of_calls=2
    )
    breaker, _ = make(config)
    call(breaker, ok=True)
    call(breaker, ok=False, duration=config.slow_call_duration_s)
    assert breaker.snapshot().slow_call_rate == 0.5
    assert breaker.state == "open"


def test_slow_call_threshold_one_is_off() -> None:
    breaker, _ = make(BreakerConfig(minimum_number_of_calls=2, sliding_window_size=4))
    for _ in range(10):
        call(breaker, ok=True, duration=60.0)
    snap = breaker.snapshot()
    assert (snap.state, snap.slow_call_rate) == ("closed", 1.0)


def test_minimum_calls_above_window_is_clamped_to_window() -> None:
    breaker, _ = make(BreakerConfig(sliding_window_size=3, minimum_number_of_calls=50))
    for _ in range(3):
        call(breaker, ok=False)
    assert breaker.state == "open"


# -- OPEN -> HALF_OPEN -----------------------------------------------------------------


def test_open_short_circuits_and_counts() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(CONFIG.wait_duration_in_open_s - 0.001)
    assert [breaker.try_acquire() for _ in range(3)] == [False] * 3
    assert breaker.snapshot().short_circuited_total == 3


def test_open_goes_half_open_after_wait_on_state_read() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(CONFIG.wait_duration_in_open_s)
    assert breaker.state == "half_open"
    snap = breaker.snapshot()
    assert snap.transitions[-1] == ("open", "half_open", clock.now)
    assert snap.calls_in_window == 0


def test_open_goes_half_open_lazily_on_try_acquire() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(60.0)
    assert breaker.try_acquire()
    assert breaker.snapshot().last_transition_at == clock.now


def test_outcomes_arriving_while_open_are_ignored() -> None:
    breaker, _ = make()
    assert breaker.try_acquire()  # admitted while closed, finishes after the trip
    trip(breaker)
    before = breaker.snapshot()
    breaker.on_success(0.1)
    breaker.release()
    assert breaker.snapshot() == before


# -- HALF_OPEN -> CLOSED / OPEN --------------------------------------------------------


def test_half_open_permits_exactly_n_calls() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    grants = [breaker.try_acquire() for _ in range(CONFIG.permitted_calls_in_half_open + 2)]
    assert grants == [True, True, True, False, False]
    assert breaker.snapshot().short_circuited_total == 2


def test_half_open_closes_when_trial_is_healthy_and_resets_window() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    for ok in (True, False, True):  # 1 of 3 failed: 0.33 < 0.5
        call(breaker, ok=ok)
    snap = breaker.snapshot()
    assert snap.state == "closed"
    assert snap.calls_in_window == 0  # the window that tripped it is gone
    assert [t[:2] for t in snap.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_half_open_decides_only_after_n_outcomes() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    call(breaker, ok=False)
    call(breaker, ok=False)
    snap = breaker.snapshot()
    assert (snap.state, snap.failure_rate, snap.calls_in_window) == ("half_open", 1.0, 2)


def test_half_open_reopens_on_failure_rate() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    for ok in (False, True, False):
        call(breaker, ok=ok)
    assert breaker.state == "open"
    assert breaker.try_acquire() is False


def test_half_open_reopens_on_slow_calls() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    for duration in (3.0, 3.0, 0.1):
        call(breaker, ok=True, duration=duration)
    assert breaker.state == "open"


def test_reopened_breaker_waits_again_before_the_next_trial() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    for _ in range(3):
        call(breaker, ok=False)
    clock.advance(CONFIG.wait_duration_in_open_s - 0.5)
    assert breaker.state == "open"
    clock.advance(0.5)
    assert breaker.snapshot().state == "half_open"  # a fresh read: time moved on


# -- the stuck half-open guard and release() -------------------------------------------


def test_stuck_half_open_goes_back_to_open_and_counts() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    entered = clock.now
    for _ in range(3):
        assert breaker.try_acquire()  # the trial calls hang: no outcome ever comes back
    clock.advance(CONFIG.max_wait_in_half_open_s - 0.001)
    assert breaker.state == "half_open"
    clock.advance(0.001)
    snap = breaker.snapshot()
    assert snap.state == "open"
    assert snap.stuck_half_open_recoveries == 1
    assert snap.transitions[-1] == ("half_open", "open", entered + CONFIG.max_wait_in_half_open_s)
    clock.advance(CONFIG.wait_duration_in_open_s)
    assert breaker.try_acquire()  # new probes get permits again


def test_stuck_guard_uses_the_due_time_so_a_late_look_goes_straight_to_half_open() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    entered = clock.now
    assert breaker.try_acquire()
    clock.advance(CONFIG.max_wait_in_half_open_s + CONFIG.wait_duration_in_open_s + 1.0)
    assert breaker.try_acquire()
    snap = breaker.snapshot()
    assert snap.state == "half_open"
    assert snap.transitions[-2:] == (
        ("half_open", "open", entered + CONFIG.max_wait_in_half_open_s),
        ("open", "half_open", clock.now),
    )


def test_late_outcome_of_a_lost_trial_call_is_ignored() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    assert breaker.try_acquire()
    clock.advance(CONFIG.max_wait_in_half_open_s)
    breaker.on_success(CONFIG.max_wait_in_half_open_s)  # arrives after the guard fired
    snap = breaker.snapshot()
    assert (snap.state, snap.stuck_half_open_recoveries) == ("open", 1)
    clock.advance(CONFIG.wait_duration_in_open_s)
    breaker.on_failure(0.1)  # a still later one, in the next trial with no permit out
    assert breaker.snapshot().calls_in_window == 0


def test_idle_half_open_is_not_stuck() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    call(breaker, ok=True)  # one outcome back, nothing outstanding
    clock.advance(CONFIG.max_wait_in_half_open_s * 5)
    snap = breaker.snapshot()
    assert (snap.state, snap.stuck_half_open_recoveries) == ("half_open", 0)
    assert breaker.try_acquire()


def test_release_returns_a_half_open_permit_without_an_outcome() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    assert all(breaker.try_acquire() for _ in range(3))
    assert not breaker.try_acquire()
    breaker.release()  # one trial call was cancelled
    snap = breaker.snapshot()
    assert (snap.state, snap.calls_in_window) == ("half_open", 0)
    assert breaker.try_acquire()


def test_release_does_not_free_a_permit_that_already_reported() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    call(breaker, ok=True)
    breaker.release()  # a double report: nothing is outstanding, so nothing to give back
    assert [breaker.try_acquire() for _ in range(3)] == [True, True, False]


def test_release_keeps_the_stuck_guard_quiet() -> None:
    breaker, clock = make()
    to_half_open(breaker, clock)
    assert breaker.try_acquire()
    breaker.release()
    clock.advance(CONFIG.max_wait_in_half_open_s + 1)
    assert breaker.state == "half_open"


def test_release_while_closed_changes_nothing() -> None:
    breaker, _ = make()
    assert breaker.try_acquire()
    breaker.release()
    snap = breaker.snapshot()
    assert (snap.state, snap.calls_in_window) == ("closed", 0)


def test_transitions_keep_the_last_ten() -> None:
    breaker, clock = make()
    for _ in range(4):  # 3 transitions per cycle
        to_half_open(breaker, clock)
        for _ in range(3):
            call(breaker, ok=True)
    transitions = breaker.snapshot().transitions
    assert len(transitions) == 10
    assert transitions[-1][:2] == ("half_open", "closed")
    assert all(a[1] == b[0] for a, b in zip(transitions, transitions[1:], strict=False))


@pytest.mark.parametrize(
    "field, value",
    [
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 1.5),
        ("slow_call_rate_threshold", 0.0),
        ("slow_call_duration_s", 0.0),
        ("sliding_window_size", 0),
        ("minimum_number_of_calls", 0),
        ("wait_duration_in_open_s", -1.0),
        ("permitted_calls_in_half_open", 0),
        ("max_wait_in_half_open_s", 0.0),
    ],
)
def test_config_rejects_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})  # type: ignore[arg-type]


# -- registry and threads ---------------------------------------------------------------


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Make the interpreter switch threads every few bytecodes, so races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_registry_gives_one_breaker_per_upstream() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(CONFIG, clock=clock)
    a = registry.get("a.example:443")
    assert registry.get("a.example:443") is a
    assert registry.get("b.example:443") is not a
    assert a.config is CONFIG
    assert a.snapshot().last_transition_at == clock.now  # the registry's clock is passed on
    assert [s.name for s in registry.snapshots()] == ["a.example:443", "b.example:443"]


def test_registry_is_bounded_and_overflows_to_one_shared_breaker() -> None:
    registry = BreakerRegistry(CONFIG, max_breakers=2, clock=FakeClock())
    registry.get("a:1")
    registry.get("b:2")
    overflow = registry.get("c:3")
    assert overflow.name == OVERFLOW_BREAKER_NAME
    assert registry.get("d:4") is overflow
    assert registry.get("a:1").name == "a:1"  # known upstreams keep their own
    assert registry.overflow_total == 2
    assert [s.name for s in registry.snapshots()] == ["a:1", "b:2", OVERFLOW_BREAKER_NAME]


@pytest.mark.usefixtures("switch_often")
def test_registry_creates_each_breaker_once_under_contention() -> None:
    registry = BreakerRegistry(CONFIG, max_breakers=8)
    seen: list[CircuitBreaker] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        got = [registry.get(f"u{i}:80") for i in range(16)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in seen}) == 9  # 8 upstream breakers + the overflow one
    assert registry.overflow_total == 8 * 8


@pytest.mark.usefixtures("switch_often")
def test_many_threads_hammering_one_breaker_keep_counts_consistent() -> None:
    threads_n, calls_n = 8, 10_000
    total = threads_n * calls_n
    config = BreakerConfig(
        failure_rate_threshold=1.0,  # every second call fails: never trips
        sliding_window_size=total,
        minimum_number_of_calls=total,
    )
    breaker = CircuitBreaker("hammer:1", config)
    barrier = threading.Barrier(threads_n)

    def worker() -> None:
        barrier.wait()
        for i in range(calls_n):
            assert breaker.try_acquire()
            if i % 2:
                breaker.on_failure(0.0)
            else:
                breaker.on_success(3.0)
            breaker.snapshot()

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = breaker.snapshot()
    assert (snap.state, snap.calls_in_window) == ("closed", total)
    assert snap.failure_rate == 0.5
    assert snap.slow_call_rate == 0.5


@pytest.mark.usefixtures("switch_often")
def test_many_threads_through_open_and_half_open_never_over_permit() -> None:
    clock = FakeClock()
    config = BreakerConfig(
        minimum_number_of_calls=2,
        sliding_window_size=4,
        wait_duration_in_open_s=0.0,  # every read may start a new trial
        permitted_calls_in_half_open=2,
    )
    breaker = CircuitBreaker("hammer:2", config, clock=clock)
    refused = [0] * 8
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(1_000):
            if not breaker.try_acquire():
                refused[index] += 1
            elif (i + index) % 3:
                breaker.on_failure(0.0)
            else:
                breaker.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = breaker.snapshot()
    assert snap.short_circuited_total == sum(refused)
    assert all(a[1] == b[0] for a, b in zip(snap.transitions, snap.transitions[1:], strict=False))
    assert snap.calls_in_window <= config.sliding_window_size
    assert {t[:2] for t in snap.transitions} <= _LEGAL


# -- random walks ----------------------------------------------------------------------

_LEGAL = {("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")}

_configs = st.builds(
    BreakerConfig,
    failure_rate_threshold=st.sampled_from([0.2, 0.5, 1.0]),
    slow_call_rate_threshold=st.sampled_from([0.3, 0.5, 1.0]),
    slow_call_duration_s=st.just(1.0),
    sliding_window_size=st.integers(1, 6),
    minimum_number_of_calls=st.integers(1, 8),
    wait_duration_in_open_s=st.sampled_from([0.0, 0.5, 2.0, 5.0]),
    permitted_calls_in_half_open=st.integers(1, 4),
    max_wait_in_half_open_s=st.sampled_from([0.5, 3.0, 10.0]),
)


class BreakerWalk(RuleBasedStateMachine):
    """Random acquire / success / failure / release / time steps against one breaker."""

    @initialize(config=_configs)
    def setup(self, config: BreakerConfig) -> None:
        self.config = config
        self.clock = FakeClock()
        self.breaker = CircuitBreaker("walk:1", config, clock=self.clock)
        self.in_flight = 0  # permits this walk holds and has not reported yet
        self.refused = 0
        self.refusing_since: float | None = None
        self.last_state: BreakerStateName = "closed"

    @rule()
    def acquire(self) -> None:
        self._acquire()

    @rule(duration=st.sampled_from([0.0, 0.999, 1.0, 4.0]), ok=st.booleans())
    def quick_call(self, duration: float, ok: bool) -> None:
        """The common case: acquire and report at once, so trials do complete."""
        if self._acquire():
            self.report(duration, ok)

    def _acquire(self) -> bool:
        snap = self.breaker.snapshot()
        stale_half_open = (
            snap.state == "half_open"
            and self.clock.now - snap.last_transition_at > self.config.max_wait_in_half_open_s
        )
        if self.breaker.try_acquire():
            self.in_flight += 1
            self.refusing_since = None
            return True
        # A half-open older than max_wait has nothing outstanding, so it always has a permit.
        assert not stale_half_open
        self.refused += 1
        # The breaker stopped refusing whenever it entered closed or half-open (a fresh trial
        # has all its permits), even if nobody asked then: a refusal stretch restarts there.
        free_at = max((at for _, to, at in snap.transitions if to != "open"), default=-1.0)
        if self.refusing_since is None or self.refusing_since <= free_at:
            self.refusing_since = self.clock.now
        # Never stuck: no caller is refused for wait + max_wait in a row.
        bound = self.config.wait_duration_in_open_s + self.config.max_wait_in_half_open_s
        assert self.clock.now - self.refusing_since < bound
        return False

    @precondition(lambda self: self.in_flight > 0)
    @rule(duration=st.sampled_from([0.0, 0.999, 1.0, 4.0]), ok=st.booleans())
    def report(self, duration: float, ok: bool) -> None:
        self.in_flight -= 1
        if ok:
            self.breaker.on_success(duration)
        else:
            self.breaker.on_failure(duration)

    @precondition(lambda self: self.in_flight > 0)
    @rule()
    def release(self) -> None:
        self.in_flight -= 1
        self.breaker.release()

    @rule(seconds=st.one_of(st.sampled_from([0.5, 2.0, 3.0, 5.0, 10.0]), st.floats(0.0, 20.0)))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def state_is_legal_and_counts_are_sane(self) -> None:
        snap = self.breaker.snapshot()
        assert snap.state in ("closed", "open", "half_open")
        assert snap.state == self.breaker.state
        assert 0.0 <= snap.failure_rate <= 1.0
        assert 0.0 <= snap.slow_call_rate <= 1.0
        limit = (
            self.config.permitted_calls_in_half_open
            if snap.state == "half_open"
            else self.config.sliding_window_size
        )
        assert 0 <= snap.calls_in_window <= limit
        assert snap.short_circuited_total == self.refused
        assert snap.last_transition_at <= self.clock.now
        for before, after in zip(snap.transitions, snap.transitions[1:], strict=False):
            assert before[1] == after[0]
            assert before[2] <= after[2]
        assert all((t[0], t[1]) in _LEGAL for t in snap.transitions)
        if snap.transitions:
            assert snap.transitions[-1][1] == snap.state
            assert snap.transitions[-1][2] == snap.last_transition_at
        if snap.state != self.last_state:
            assert snap.transitions and snap.transitions[-1][0] in (self.last_state, "open")
        self.last_state = snap.state


TestBreakerWalk = BreakerWalk.TestCase
TestBreakerWalk.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the lock-free paths decide exactly as the lock ----------------------------------------


class _LockedBreaker(CircuitBreaker):
    """The breaker without its lock-free paths: every call takes the lock, and every success
    is written into the window. The oracle for the test below."""

    @property
    def state(self) -> BreakerStateName:
        with self._lock:
            self._advance()
            return self._state

    def acquire(self) -> BreakerStateName | None:
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
        self._record(duration_s, failed=False)


_call = st.tuples(st.just("call"), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.booleans())
_walk = st.lists(
    st.one_of(
        _call,
        _call,
        _call,
        st.tuples(st.just("acquire"), st.just(0.0), st.just(True)),
        st.tuples(st.just("report"), st.sampled_from([0.0, 1.0]), st.booleans()),
        st.tuples(st.just("release"), st.just(0.0), st.just(True)),
        st.tuples(st.just("tick"), st.sampled_from([0.1, 0.5, 2.0, 5.0, 11.0]), st.just(True)),
    ),
    min_size=40,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(config=_configs, ops=_walk)
def test_lock_free_paths_decide_as_the_lock_would(
    config: BreakerConfig, ops: list[tuple[str, float, bool]]
) -> None:
    """CLOSED answers without the lock, and a full window of fast successes absorbs another
    without writing it: same answers, same states, same snapshots as taking the lock."""
    clock = FakeClock()
    fast = CircuitBreaker("walk:1", config, clock=clock)
    locked = _LockedBreaker("walk:1", config, clock=clock)
    held = 0
    for op, value, ok in ops:
        if op == "tick":
            clock.advance(value)
        elif op in ("call", "acquire"):
            state = fast.acquire()
            assert state == locked.acquire()
            if state is not None:
                assert state in ("closed", "half_open")
                if op == "acquire":
                    held += 1
                elif ok:
                    fast.on_success(value)
                    locked.on_success(value)
                else:
                    fast.on_failure(value)
                    locked.on_failure(value)
        elif held and op == "report":
            held -= 1
            (fast.on_success if ok else fast.on_failure)(value)
            (locked.on_success if ok else locked.on_failure)(value)
        elif held and op == "release":
            held -= 1
            fast.release()
            locked.release()
        assert fast.state == locked.state
        assert fast.snapshot() == locked.snapshot()
