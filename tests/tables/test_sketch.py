"""LatencySketch: accuracy on controlled data sets, merge, codec, bounded memory.

Quantile definition: DDSketch answers the sorted value of rank ``floor(q * (n - 1))``,
which is numpy's ``method="lower"``; the sketch's answer is within 1% (relative) of it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ddsketch import LogCollapsingLowestDenseDDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.sketch import (
    BIN_LIMIT,
    RELATIVE_ACCURACY,
    LatencySketch,
    merge_all,
    quantiles_of,
    slide,
)

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
ALPHA = RELATIVE_ACCURACY * (1 + 1e-9)  # float rounding of gamma**k on the bound itself

latencies = st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False)
adversarial = st.one_of(
    st.floats(1e-6, 1e9, allow_nan=False), st.just(0.0), st.sampled_from([1e-6, 1e9])
)


def sketch_of(values: list[float] | np.ndarray) -> LatencySketch:
    sketch = LatencySketch()
    for v in values:
        sketch.add(float(v))
    return sketch


ZERO_BELOW = LatencySketch()._dd._mapping.min_possible  # ~2.2e-308 ms: counted as zero


def assert_within(actual: float | None, exact: float) -> None:
    assert actual is not None
    if exact <= ZERO_BELOW:
        assert actual == 0.0
    else:
        assert abs(actual - exact) <= ALPHA * exact, (actual, exact)


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20241129)
    n = 20_000
    bimodal = np.concatenate(
        [rng.lognormal(np.log(8), 0.3, n * 9 // 10), rng.lognormal(np.log(400), 0.2, n // 10)]
    )
    tiny = rng.uniform(0.0, 0.05, n)
    tiny[: n // 5] = 0.0
    return {
        "uniform": rng.uniform(0.0, 1_000.0, n),
        "lognormal": rng.lognormal(np.log(50), 1.0, n),
        "bimodal": bimodal,
        "heavy_tail": (rng.pareto(1.2, n) + 1.0) * 5.0,
        "constant": np.full(1_000, 42.0),
        "single": np.array([7.25]),
        "tiny_and_zeros": tiny,
        "hundredths": np.full(500, 0.01),
        "zeros": np.zeros(300),
    }


@pytest.mark.parametrize(("name", "values"), sorted(_datasets().items()))
def test_quantiles_within_one_percent_of_numpy_lower(name: str, values: np.ndarray) -> None:
    sketch = sketch_of(values)
    assert sketch.count == len(values)
    assert sketch.sum == pytest.approx(float(np.sum(values)), rel=1e-9, abs=1e-9)
    for q, got in zip(QS, sketch.quantiles(QS), strict=True):
        assert_within(got, float(np.quantile(values, q, method="lower")))


@pytest.mark.parametrize(("name", "values"), sorted(_datasets().items()))
def test_quantiles_equal_ddsketch_own_answers(name: str, values: np.ndarray) -> None:
    ours = sketch_of(values)
    reference = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)
    for v in values:
        reference.add(float(v))
    for q in QS:
        expected = reference.get_quantile_value(q)
        assert expected is not None
        assert ours.quantile(q) == float(expected)


def test_empty_sketch() -> None:
    sketch = LatencySketch()
    assert sketch.quantile(0.5) is None
    assert sketch.quantiles((0.5, 0.99)) == [None, None]
    assert (sketch.count, sketch.sum, sketch.min, sketch.max) == (0, 0.0, None, None)
    assert LatencySketch.from_data(sketch.to_data()).to_data() == sketch.to_data()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_add_rejects_invalid_latencies(bad: float) -> None:
    with pytest.raises(ValueError, match="latency"):
        LatencySketch().add(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_quantile_rejects_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        sketch_of([1.0]).quantile(bad)


@given(st.lists(latencies, max_size=200), st.lists(latencies, max_size=200))
def test_merge_equals_sketch_of_concatenation(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    whole = sketch_of(a + b)
    got, want = merged.to_data(), whole.to_data()
    assert got.pop("sum") == pytest.approx(want.pop("sum"), rel=1e-12, abs=1e-9)
    assert got == want  # identical bins, counts, min, max
    assert merged.quantiles(QS) == whole.quantiles(QS)
    if (a or b) and not merged.collapsed:  # collapsing trades the lowest bins' accuracy
        exact = sorted(a + b)
        for q, v in zip(QS, merged.quantiles(QS), strict=True):
            assert_within(v, exact[math.floor(q * (len(exact) - 1))])


@given(st.lists(st.lists(latencies, max_size=50), max_size=8))
def test_merge_all_and_union_quantiles_match_ddsketch_sequential_merge(
    groups: list[list[float]],
) -> None:
    parts = [sketch_of(g) for g in groups]
    reference = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)
    for p in parts:
        reference.merge(p._dd)
    merged = merge_all(parts)
    assert merged.count == reference.count
    assert merged.sum == reference.sum  # same order of additions
    for q in QS:
        expected = reference.get_quantile_value(q)
        assert merged.quantile(q) == (None if expected is None else float(expected))
    assert quantiles_of(parts, QS) == merged.quantiles(QS)
    assert [p.to_data() for p in parts] == [sketch_of(g).to_data() for g in groups]  # untouched


@given(st.lists(latencies, max_size=300))
def test_round_trip_is_exact(values: list[float]) -> None:
    sketch = sketch_of(values)
    data = sketch.to_data()
    restored = LatencySketch.from_data(json.loads(json.dumps(data)))
    assert restored.to_data() == data
    assert restored.quantiles(QS) == sketch.quantiles(QS)
    assert (restored.count, restored.sum, restored.min, restored.max) == (
        sketch.count,
        sketch.sum,
        sketch.min,
        sketch.max,
    )
    # the restored sketch keeps working like the original
    restored.add(3.0)
    sketch.add(3.0)
    assert restored.to_data() == sketch.to_data()


def test_to_data_is_compact_and_deterministic() -> None:
    a = sketch_of([10.0, 10.1, 12.0, 0.0])
    b = sketch_of([12.0, 0.0, 10.1, 10.0])
    assert json.dumps(a.to_data()) == json.dumps(b.to_data())
    data = a.to_data()
    assert data["zero"] == 1
    assert data["bins"][0] > 0 and data["bins"][-1] > 0
    assert sum(data["bins"]) == 3


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"n": 99},
        {"bins": [-1, 2]},
        {"bins": [1] * (BIN_LIMIT + 1)},
        {"zero": -1},
        {"bins": "x"},
    ],
)
def test_from_data_rejects_malformed(change: dict[str, object]) -> None:
    data = sketch_of([1.0, 2.0]).to_data() | change
    with pytest.raises(ValueError):
        LatencySketch.from_data(data)


def test_from_data_rejects_missing_field() -> None:
    data = sketch_of([1.0]).to_data()
    del data["bins"]
    with pytest.raises(ValueError, match="malformed"):
        LatencySketch.from_data(data)


@settings(max_examples=50)
@given(st.lists(adversarial, min_size=1, max_size=400))
def test_bins_bounded_for_latencies_from_a_nanosecond_to_11_days(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert sketch.bin_count() <= BIN_LIMIT
    assert not sketch.collapsed  # 1e-6..1e9 ms needs ~1,727 bins: no accuracy lost
    exact = sorted(values)
    for q, v in zip(QS, sketch.quantiles(QS), strict=True):
        assert_within(v, exact[math.floor(q * (len(exact) - 1))])


def test_spread_beyond_the_limit_collapses_lowest_bins_only() -> None:
    # 1,000 ordinary latencies plus 20 absurd ones spread over 600 decades (>> 2048 bins)
    values = [10.0 + i * 0.5 for i in range(1_000)] + [10.0**e for e in range(-300, 0, 15)]
    sketch = sketch_of(values)
    assert sketch.collapsed
    assert sketch.bin_count() <= BIN_LIMIT
    assert len(sketch._store.bins) <= BIN_LIMIT
    assert sketch.nbytes_estimate() < 100_000
    exact = sorted(values)
    for q in (0.05, 0.5, 0.9, 0.99, 1.0):  # all but the lowest 2% keep their accuracy
        assert_within(sketch.quantile(q), exact[math.floor(q * (len(exact) - 1))])
    restored = LatencySketch.from_data(sketch.to_data())
    assert restored.to_data() == sketch.to_data()
    assert restored.collapsed


@settings(max_examples=50)
@given(
    st.lists(st.floats(1e-300, 1e300, allow_nan=False), max_size=60),
    st.lists(st.floats(1e-300, 1e300, allow_nan=False), max_size=60),
)
def test_collapsed_merge_is_bounded_and_keeps_the_top(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    assert merged.bin_count() <= BIN_LIMIT
    assert len(merged._store.bins) <= BIN_LIMIT
    assert merged.count == len(a) + len(b)
    if a or b:
        assert_within(merged.quantile(1.0), max(a + b))


def test_copy_is_independent() -> None:
    a = sketch_of([1.0, 2.0])
    b = a.copy()
    b.add(100.0)
    assert a.count == 2 and b.count == 3
    assert a.quantile(1.0) == pytest.approx(2.0, rel=0.01)


def test_merge_into_empty_does_not_alias() -> None:
    a = LatencySketch()
    b = sketch_of([5.0])
    a.merge(b)
    a.add(50.0)
    assert b.count == 1 and a.count == 2


def test_add_cost_is_small() -> None:
    """Guard against accidental slow paths (the bench reports the real figure)."""
    import time

    sketch = LatencySketch()
    values = [float(i % 977) + 0.5 for i in range(20_000)]
    start = time.process_time()
    for v in values:
        sketch.add(v)
    per_add = (time.process_time() - start) / len(values)
    assert per_add < 20e-6


@given(st.lists(st.lists(latencies, max_size=40), min_size=2, max_size=8))
def test_slide_equals_merging_the_remaining_parts(groups: list[list[float]]) -> None:
    parts = [sketch_of(g) for g in groups]
    base = merge_all(parts[:-1])
    members = parts[1:]
    slid = slide(base, parts[0], parts[-1], members)
    fresh = merge_all(members)
    if slid is None:  # only when collapsing is involved
        assert (
            any(p.collapsed for p in [base, *parts])
            or fresh.collapsed
            or (merge_all(parts).bin_count() >= BIN_LIMIT)
        )
        return
    got, want = slid.to_data(), fresh.to_data()
    assert got.pop("sum") == pytest.approx(want.pop("sum"), rel=1e-9, abs=1e-6)
    assert got == want
    assert slid.quantiles(QS) == fresh.quantiles(QS)


def test_slide_refuses_inconsistent_inputs() -> None:
    a, b = sketch_of([1.0, 2.0]), sketch_of([500.0])
    assert slide(a, b, None, [a]) is None  # b was never part of a
