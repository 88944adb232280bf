"""W3C traceparent: strict parsing, formatting round-trip, ambient context, id generation."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.probe import tracecontext
from pipeline.probe.tracecontext import (
    SPAN_IDS_PER_REFILL,
    TraceParent,
    current_trace,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    refill_span_ids,
    span_id_pool,
    take_span_id,
    trace_context,
)

pytestmark = pytest.mark.timeout(30)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_spec_example() -> None:
    assert parse_traceparent(VALID) == TraceParent(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1, 0
    )
    assert parse_traceparent(VALID.encode()) is not None
    assert parse_traceparent(f" {VALID}\t") is not None  # optional whitespace


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        VALID[:-1],
        VALID + "-",  # version 00 has exactly four fields
        VALID + "x",
        VALID.upper(),  # lowercase hex only
        "ff" + VALID[2:],  # version ff is invalid
        "0g" + VALID[2:],
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, " + VALID,  # two headers
        b"\xff" * 55,
    ],
)
def test_invalid(value) -> None:
    assert parse_traceparent(value) is None


def test_future_versions_parse_forward_compatibly() -> None:
    assert parse_traceparent("01" + VALID[2:]) == TraceParent(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1, 1
    )
    assert parse_traceparent("01" + VALID[2:] + "-what-comes-next") is not None
    assert parse_traceparent("01" + VALID[2:] + "x") is None


def test_ids() -> None:
    trace_ids = {new_trace_id() for _ in range(1000)}
    span_ids = {new_span_id() for _ in range(1000)}
    assert len(trace_ids) == 1000 and len(span_ids) == 1000
    assert all(len(t) == 32 and int(t, 16) for t in trace_ids)
    assert all(len(s) == 16 and int(s, 16) for s in span_ids)


def test_ids_differ_after_fork() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_trace_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 32 and child != new_trace_id()


_hex32 = st.binary(min_size=16, max_size=16).filter(any).map(bytes.hex)
_hex16 = st.binary(min_size=8, max_size=8).filter(any).map(bytes.hex)


@given(_hex32, _hex16, st.integers(min_value=0, max_value=255))
def test_round_trip(trace_id: str, span_id: str, flags: int) -> None:
    header = format_traceparent(trace_id, span_id, flags)
    assert len(header) == 55
    assert parse_traceparent(header) == TraceParent(trace_id, span_id, flags, 0)
    assert format_traceparent(trace_id, span_id, flags) == header


@given(st.text(max_size=80))
def test_parse_never_raises(text: str) -> None:
    parsed = parse_traceparent(text)
    if parsed is not None:
        assert parse_traceparent(format_traceparent(*parsed[:3])) is not None


def test_trace_context_nesting_and_reset() -> None:
    assert current_trace() is None
    with trace_context(traceparent=VALID) as outer:
        assert current_trace() == outer and outer.trace_id == VALID[3:35]
        with trace_context(trace_id="A" * 32, sampled=False) as inner:
            assert inner.trace_id == "a" * 32 and inner.flags == 0
            assert current_trace() == inner
        assert current_trace() == outer
    assert current_trace() is None


def test_trace_context_invalid_input_starts_a_new_trace() -> None:
    with trace_context(trace_id="0" * 32) as ctx:
        assert ctx.trace_id != "0" * 32 and len(ctx.trace_id) == 32
    with trace_context(traceparent="garbage", trace_id="zz") as ctx:
        assert parse_traceparent(format_traceparent(ctx.trace_id, ctx.parent_id)) is not None


async def test_trace_context_follows_tasks() -> None:
    async def child() -> str | None:
        await asyncio.sleep(0)
        found = current_trace()
        return found.trace_id if found else None

    with trace_context(trace_id="b" * 32):
        task = asyncio.create_task(child())
    assert await asyncio.wait_for(task, 5) == "b" * 32
    assert await asyncio.wait_for(asyncio.create_task(child()), 5) is None


def test_pooled_span_ids_are_valid_distinct_and_refilled() -> None:
    span_id_pool.clear()
    taken = [take_span_id() for _ in range(3 * SPAN_IDS_PER_REFILL + 7)]  # several refills
    assert all(len(span) == 16 and set(span) <= set("0123456789abcdef") for span in taken)
    assert "0" * 16 not in taken
    assert len(set(taken)) == len(taken)


def test_an_all_zero_span_id_is_never_pooled(monkeypatch: pytest.MonkeyPatch) -> None:
    bits = 64 * SPAN_IDS_PER_REFILL
    # Every id 1111...1 but the third, which is all zeros (never a valid span id).
    value = int("11" * 8 * 2 + "00" * 8 + "11" * 8 * (SPAN_IDS_PER_REFILL - 3), 16)
    monkeypatch.setattr(tracecontext, "_getrandbits", lambda n: value if n == bits else 0)
    span_id_pool.clear()
    refill_span_ids()
    assert span_id_pool == ["1" * 16] * (SPAN_IDS_PER_REFILL - 1)
    span_id_pool.clear()


def test_a_forked_child_gets_no_pooled_id_of_its_parent() -> None:
    refill_span_ids()
    assert span_id_pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its pool holds, then leave at once
        os.write(write, str(len(span_id_pool)).encode())
        os._exit(0)
    os.close(write)
    assert os.read(read, 64) == b"0"
    os.waitpid(pid, 0)
    os.close(read)
