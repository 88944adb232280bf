"""AlertLog: one entry per episode, idempotent, firing first, bounded with counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.alert_log import AlertLog
from tests.api.alert_records import T0, firing, follow_up


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_firing_then_resolved_is_one_episode_whose_state_follows() -> None:
    log = AlertLog(clock=Clock(T0 + 100))
    fired = firing(1)
    assert log.record(fired)
    (entry,) = log.query()
    assert entry.state == "firing" and entry.record == fired
    resolved = follow_up(fired, "resolved", T0 + 90)
    assert log.record(resolved)
    (entry,) = log.query()
    assert entry.state == "resolved" and entry.record.resolved_at == T0 + 90
    assert entry.as_dict()["state"] == "resolved"
    assert entry.as_dict()["alert_id"] == fired.alert_id


def test_still_firing_keeps_the_state_and_updates_the_values() -> None:
    log = AlertLog(clock=Clock(T0 + 100))
    fired = firing(1)
    log.record(fired)
    reminder = follow_up(fired, "still_firing", T0 + 30)
    assert log.record(reminder)
    (entry,) = log.query()
    assert entry.state == "firing" and entry.record.status == "still_firing"


def test_duplicates_and_stale_records_change_nothing() -> None:
    log = AlertLog(clock=Clock(T0 + 100))
    fired = firing(1)
    resolved = follow_up(fired, "resolved", T0 + 50)
    assert log.record(fired)
    assert not log.record(fired)  # the same record again (Kafka at least once)
    assert log.record(resolved)
    assert not log.record(follow_up(fired, "still_firing", T0 + 60))  # resolved already
    assert not log.record(resolved)
    (entry,) = log.query()
    assert entry.state == "resolved"
    stats = log.stats()
    assert stats["duplicates_total"] == 2 and stats["stale_total"] == 1
    assert stats["records_total"] == 5


def test_an_older_record_does_not_replace_a_newer_one() -> None:
    log = AlertLog(clock=Clock(T0 + 100))
    fired = firing(1)
    later = follow_up(fired, "still_firing", T0 + 40)
    log.record(later)
    assert not log.record(fired)
    assert log.query()[0].record == later


def test_a_resolved_record_without_its_firing_one_is_kept() -> None:
    log = AlertLog(clock=Clock(T0 + 100))
    log.record(follow_up(firing(1), "resolved", T0 + 10))
    assert [e.state for e in log.query()] == ["resolved"]


def test_firing_first_then_most_recently_fired_first() -> None:
    log = AlertLog(clock=Clock(T0 + 1000))
    old, new, gone = firing(1, at=T0), firing(2, at=T0 + 100), firing(3, at=T0 + 200)
    for record in (old, new, gone):
        log.record(record)
    log.record(follow_up(gone, "resolved", T0 + 300))
    assert [e.record.alert_id for e in log.query()] == [
        new.alert_id,
        old.alert_id,
        gone.alert_id,
    ]


def test_filters() -> None:
    log = AlertLog(clock=Clock(T0 + 1000))
    a = firing(1, service="checkout", route="/pay", rule="r1", at=T0)
    b = firing(2, service="search", route="/q", rule="r2", at=T0 + 100)
    c = firing(3, service="checkout", route="*", method="*", rule="r1", at=T0 + 200)
    for record in (a, b, c):
        log.record(record)
    log.record(follow_up(a, "resolved", T0 + 50))

    def ids(**kw: object) -> list[int]:
        return sorted(int(e.record.alert_id, 16) for e in log.query(**kw))  # type: ignore[arg-type]

    assert ids(service="checkout") == [1, 3]
    assert ids(route="*") == [3]
    assert ids(rule="r1") == [1, 3]
    assert ids(state="firing") == [2, 3]
    assert ids(state="resolved") == [1]
    assert ids(service="nope") == []
    # Active at some time of [since, until): a ran T0..T0+50, b from T0+100, c from T0+200.
    assert ids(since=T0 + 60) == [2, 3]
    assert ids(since=T0 + 50) == [1, 2, 3]
    assert ids(until=T0 + 100) == [1]
    assert ids(since=T0 + 60, until=T0 + 150) == [2]
    assert ids(since=T0 + 150, until=T0 + 150) == []


def test_resolved_episodes_expire_after_the_retention() -> None:
    clock = Clock(T0 + 10)
    log = AlertLog(retention_s=3600, clock=clock)
    fired, lasting = firing(1), firing(2)
    log.record(fired)
    log.record(lasting)
    log.record(follow_up(fired, "resolved", T0 + 10))
    clock.now = T0 + 10 + 3601
    assert [e.record.alert_id for e in log.query()] == [lasting.alert_id]  # firing stays
    assert log.stats()["expired_total"] == 1
    assert not log.record(follow_up(firing(3), "resolved", T0))  # too old to matter
    assert log.stats()["expired_total"] == 2


def test_full_log_drops_the_least_recently_updated_resolved_episode_first() -> None:
    log = AlertLog(capacity=3, clock=Clock(T0 + 1000))
    one, two, three = firing(1), firing(2), firing(3)
    for record in (one, two, three):
        log.record(record)
    log.record(follow_up(two, "resolved", T0 + 10))
    log.record(firing(4))
    held = {int(e.record.alert_id, 16) for e in log.query()}
    assert held == {1, 3, 4}
    log.record(firing(5))  # none resolved: the least recently updated firing one goes
    assert {int(e.record.alert_id, 16) for e in log.query()} == {3, 4, 5}
    assert log.stats()["dropped_total"] == 2 and len(log) == 3


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AlertLog(capacity=0)
    with pytest.raises(ValueError, match="retention_s"):
        AlertLog(retention_s=0)


_step = st.tuples(st.integers(1, 12), st.sampled_from(["firing", "still_firing", "resolved"]))


@given(st.lists(_step, max_size=60), st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_bounded_and_counted_under_any_sequence(steps: list[tuple[int, str]], cap: int) -> None:
    """Whatever arrives: never more than ``capacity`` episodes, every record accounted for,
    and an episode shown resolved never shows firing again."""
    log = AlertLog(capacity=cap, clock=Clock(T0 + 10_000))
    firsts = {n: firing(n) for n in range(1, 13)}
    was_resolved: set[str] = set()
    for i, (n, status) in enumerate(steps):
        record = firsts[n] if status == "firing" else follow_up(firsts[n], status, T0 + i)
        log.record(record)
        assert len(log) <= cap
        entries = log.query()
        for entry in entries:  # held all along as resolved: still resolved
            if entry.record.alert_id in was_resolved:
                assert entry.state == "resolved"
        was_resolved = {e.record.alert_id for e in entries if e.state == "resolved"}
        states = [e.state for e in entries]
        assert states == sorted(states, key=lambda s: s != "firing")
    stats = log.stats()
    assert stats["held"] == len(log) <= cap
    assert stats["firing"] + stats["resolved"] == stats["held"]
    assert stats["records_total"] == len(steps)
