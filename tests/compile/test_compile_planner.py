"""The memory planner: invariants on random lifetimes (Hypothesis) and hand-made cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyops.compile.planner import (
    ALIGNMENT,
    Buffer,
    MemoryPlan,
    check_plan,
    peak_live_bytes,
    plan_memory,
)


@st.composite
def lifetimes(draw: st.DrawFn) -> list[Buffer]:
    n = draw(st.integers(min_value=0, max_value=25))
    steps = draw(st.integers(min_value=1, max_value=30))
    buffers = []
    for i in range(n):
        first = draw(st.integers(min_value=0, max_value=steps - 1))
        last = draw(st.integers(min_value=first, max_value=steps - 1))
        size = draw(st.integers(min_value=1, max_value=5000))
        buffers.append(Buffer(i, size, first, last))
    return buffers


@settings(max_examples=300, deadline=None)
@given(lifetimes())
def test_plan_invariants_hold_on_random_lifetimes(buffers: list[Buffer]) -> None:
    plan = plan_memory(buffers)
    check_plan(plan)  # placed once, aligned, inside the arena, live-overlapping disjoint
    assert plan.arena_bytes % ALIGNMENT == 0
    live = peak_live_bytes(buffers)
    assert live <= plan.arena_bytes
    # Buffers that never live at the same time may share bytes: the plan is never larger
    # than placing everything side by side.
    assert plan.arena_bytes <= sum(-(-b.size // ALIGNMENT) * ALIGNMENT for b in buffers)


@settings(max_examples=100, deadline=None)
@given(lifetimes())
def test_disjoint_lifetimes_reuse_memory(buffers: list[Buffer]) -> None:
    # Make every lifetime a single, distinct step: nothing overlaps, so the arena is
    # exactly the largest buffer (rounded up to the alignment).
    serial = [Buffer(b.id, b.size, i, i) for i, b in enumerate(buffers)]
    plan = plan_memory(serial)
    assert plan.arena_bytes == -(-max((b.size for b in serial), default=0) // ALIGNMENT) * ALIGNMENT
    assert set(plan.offsets.values()) <= {0}


def test_a_chain_needs_two_buffers_at_a_time() -> None:
    # conv → conv → conv: each buffer lives from its producer to its consumer.
    chain = [Buffer(0, 100, 0, 1), Buffer(1, 60, 1, 2), Buffer(2, 100, 2, 3)]
    plan = plan_memory(chain)
    assert plan.offsets[0] == plan.offsets[2] == 0
    assert plan.offsets[1] == 112  # after buffer 0, aligned to 16
    assert plan.arena_bytes == 176


def test_check_plan_catches_overlap() -> None:
    a, b = Buffer(0, 32, 0, 2), Buffer(1, 32, 1, 3)
    bad = MemoryPlan((a, b), {0: 0, 1: 16}, 64)
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(bad)


def test_check_plan_catches_out_of_arena_and_misalignment() -> None:
    a = Buffer(0, 32, 0, 0)
    with pytest.raises(AssertionError, match="outside"):
        check_plan(MemoryPlan((a,), {0: 16}, 32))
    with pytest.raises(AssertionError, match="misaligned"):
        check_plan(MemoryPlan((a,), {0: 8}, 64))
    with pytest.raises(AssertionError, match="places buffers"):
        check_plan(MemoryPlan((a,), {}, 64))
