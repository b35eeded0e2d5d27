"""The rules that bring ResNet (IC) under half of TFLM's arena: freed tails of shrinking
in-place buffers, residual blocks (conv → conv → ADD) in row bands, and the execution
order search that runs a block's shortcut before its second convolution.

Hand-made graphs pin each planner rule; Keras-built residual blocks (slow) are compared
with TFLM byte for byte; IC itself is compared with TFLM in test_compile_mlperf.py (host)
and test_compile_emulated.py (QEMU Cortex-M4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ci_env import require_fixtures
from compile_testlib import bit_exact_run, sized_graph
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyops.compile import compile_model
from tinyops.compile.lower import _block_writes_behind, lower
from tinyops.compile.planner import (
    RING_BASE,
    Buffer,
    Fusion,
    InPlace,
    MemoryPlan,
    buffers_of,
    check_plan,
    peak_live_bytes,
    plan_memory,
)
from tinyops.compile.reader import read_tflite
from tinyops.compile.schedule import plan_cost

# --- freed tails ---------------------------------------------------------------------


def test_a_shrinking_in_place_buffer_frees_its_tail() -> None:
    # in -> A (64, op0) -> B (32, op1, in place over A) -> C (32, op2) -> ADD(B, C) -> out
    g = sized_graph(
        [("CONV_2D", (0,), 1), ("CONV_2D", (1,), 2), ("CONV_2D", (2,), 3), ("ADD", (2, 3), 4)],
        [8, 64, 32, 32, 8],
    )
    live = buffers_of(g, {1: InPlace((0,), 0, "")})
    merged = next(b for b in live.buffers if b.id == live.buffer_of[1])
    assert live.buffer_of[2] == merged.id
    # 64 bytes while A lives (ops 0, 1), then only B's 32.
    assert merged.steps == ((0, 64), (2, 32))
    assert merged.pieces() == [(64, 0, 1), (32, 2, 3)]
    assert merged.size_at(1) == 64 and merged.size_at(2) == 32
    plan = plan_memory(live.buffers)
    check_plan(plan)
    c = live.buffer_of[3]
    assert plan.offsets[merged.id] == 0 and plan.offsets[c] == 32  # C in A's freed tail
    assert plan.arena_bytes == 64 == peak_live_bytes(live.buffers)


def test_check_plan_allows_the_freed_tail_and_catches_the_live_head() -> None:
    shrinking = Buffer(0, 64, 0, 3, steps=((0, 64), (2, 32)))
    later = Buffer(1, 32, 2, 3)
    check_plan(MemoryPlan((shrinking, later), {0: 0, 1: 32}, 64))
    with pytest.raises(AssertionError, match="overlap"):  # over the 32 bytes still live
        check_plan(MemoryPlan((shrinking, later), {0: 0, 1: 16}, 64))
    early = Buffer(2, 32, 1, 2)  # lives while all 64 bytes are
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(MemoryPlan((shrinking, early), {0: 0, 2: 32}, 64))


@st.composite
def stepped_lifetimes(draw: st.DrawFn) -> list[Buffer]:
    n = draw(st.integers(min_value=0, max_value=20))
    horizon = draw(st.integers(min_value=1, max_value=25))
    buffers = []
    for i in range(n):
        first = draw(st.integers(min_value=0, max_value=horizon - 1))
        last = draw(st.integers(min_value=first, max_value=horizon - 1))
        cuts = (
            sorted(set(draw(st.lists(st.integers(first + 1, last), max_size=3))))
            if last > first
            else []
        )
        sizes = [draw(st.integers(min_value=1, max_value=4000)) for _ in range(len(cuts) + 1)]
        steps = tuple(zip([first, *cuts], sizes, strict=True)) if cuts else ()
        buffers.append(Buffer(i, max(sizes), first, last, steps))
    return buffers


@settings(max_examples=300, deadline=None)
@given(stepped_lifetimes())
def test_plan_invariants_hold_with_size_steps(buffers: list[Buffer]) -> None:
    plan = plan_memory(buffers)
    check_plan(plan)  # pieces live at once never share a byte
    assert peak_live_bytes(buffers) <= plan.arena_bytes
    assert plan.arena_bytes <= sum(-(-b.size // 16) * 16 for b in buffers)


# --- residual blocks in row bands ----------------------------------------------------

BLOCK = [
    ("CONV_2D", (0,), 1),  # X
    ("CONV_2D", (1,), 2),  # Y = conv(X)
    ("CONV_2D", (2,), 3),  # Z = conv(Y)
    ("ADD", (1, 3), 4),  # W = X + Z
    ("CONV_2D", (4,), 5),
]


def test_a_residual_block_has_one_ring_for_both_intermediates_and_writes_over_x() -> None:
    g = sized_graph(BLOCK, [8, 64, 64, 64, 64, 4])
    live = buffers_of(
        g, {2: InPlace((0,), 16, "k"), 3: InPlace((0, 1), 0, "")}, {1: Fusion(1, 40, True, ops=3)}
    )
    assert live.fused_ops == {1: 3} and live.fused_inplace == {1}
    assert live.buffer_of[2] == live.buffer_of[3] == RING_BASE + 1  # Y and Z: the ring only
    ring = next(b for b in live.buffers if b.id == RING_BASE + 1)
    assert (ring.size, ring.first, ring.last) == (40, 1, 3)
    assert live.buffer_of[4] == live.buffer_of[1]  # W over X
    # The inner operators' own in-place rules do not apply inside the group.
    assert live.inplace == frozenset() and live.scratch == {}
    plan = plan_memory(live.buffers)
    assert plan.arena_bytes == 64 + 48  # X/W and the ring (aligned), not X + Y + Z


def test_a_residual_block_whose_input_is_read_later_keeps_it() -> None:
    ops = [*BLOCK[:4], ("ADD", (1, 4), 5)]  # X read again after the block
    g = sized_graph(ops, [8, 64, 64, 64, 64, 64])
    live = buffers_of(g, {}, {1: Fusion(1, 40, True, ops=3)})
    assert live.fused_inplace == frozenset()
    x = next(b for b in live.buffers if b.id == live.buffer_of[1])
    w = next(b for b in live.buffers if b.id == live.buffer_of[4])
    assert x.id != w.id and x.last == 4 and w.first == 3
    check_plan(plan_memory(live.buffers))


def _conv_fields(**kw: int) -> dict[str, Any]:
    f = dict(
        batches=1, in_h=8, in_w=6, in_c=4, out_h=8, out_w=6, out_c=4, k_h=3, k_w=3,
        stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_h=1, pad_w=1,
    )  # fmt: skip
    f.update(kw)
    return f


def test_block_in_place_rule_row_by_row() -> None:
    same = _conv_fields()
    assert _block_writes_behind(same, same)  # 3x3 SAME: row oy of the output after the
    # first convolution's row oy + 1, which read input rows up to oy + 2
    five = _conv_fields(k_h=5, k_w=5, pad_h=2, pad_w=2)
    assert _block_writes_behind(five, five)
    # A dilated first convolution reads 2 rows above: its row oy + 2 still needs row oy.
    assert not _block_writes_behind(_conv_fields(dil_h=2, dil_w=2, pad_h=2, pad_w=2), same)
    # Rows of different sizes (the block's output is not the input's shape) never fuse.
    assert not _block_writes_behind(same, _conv_fields(out_c=8))


# --- the schedule on ResNet and the other reference models ----------------------------


@pytest.mark.fixtures
def test_resnet_runs_its_shortcuts_before_the_second_convolution() -> None:
    path = require_fixtures() / "pretrainedResnet_quant.tflite"
    c = compile_model(path.read_bytes(), "ic", str(path))
    # Blocks 2 and 3: the 1x1 stride-2 shortcut (model operators 6, 10) runs first; the
    # strided 3x3 convolution is then the block input's last reader and writes over it
    # (behind its reads), freeing its tail.
    assert c.order == (0, 1, 2, 3, 6, 4, 5, 7, 10, 8, 9, 11, 12, 13, 14, 15)
    assert c.graph.operators[4].kind == "CONV_2D" and 5 in c.liveness.inplace
    assert "/* 4: CONV_2D (operator 6 in the model) */" in c.files[c.source]
    assert c.liveness.fused_ops == {1: 3}
    assert "tinyops_conv_conv_add(&op1, &op2, &op3, (arena + 0), (arena + 0), " in c.files[c.source]
    # The peak: block 2's 16 KB input beside its 8 KB first convolution.
    assert c.arena_bytes == 16_384 + 8_192
    assert c.ram_bytes <= 0.50 * 55_984
    g = read_tflite(path.read_bytes(), "ic")
    assert plan_cost(g, tuple(lower(g)))[0] > c.arena_bytes  # the model's own order: more


@pytest.mark.fixtures
@pytest.mark.parametrize("stem", ["kws_ref_model", "vww_96_int8", "ad01_int8", "str_ww_ref_model"])
def test_models_without_a_better_order_keep_theirs(stem: str) -> None:
    path = require_fixtures() / f"{stem}.tflite"
    c = compile_model(path.read_bytes(), "m", str(path))
    assert c.order == tuple(range(len(c.graph.operators)))


# --- Keras-built residual blocks against TFLM (slow) ---------------------------------


def _identity_block(layers: Any, x: Any, input_first: bool) -> Any:
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(6, 3, padding="same")(y)
    s = layers.Add()([x, y] if input_first else [y, x])
    return layers.Dense(5)(layers.Flatten()(layers.ReLU()(s)))


def _downsample_block(layers: Any, x: Any) -> Any:
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(12, 3, strides=2, padding="same", activation="relu")(x)
    y = layers.Conv2D(12, 3, padding="same")(y)
    s = layers.Conv2D(12, 1, strides=2)(x)
    return layers.Dense(4)(layers.Flatten()(layers.ReLU()(layers.Add()([y, s]))))


def _int8_model(shape: tuple[int, ...], body: Any) -> bytes:
    import keras

    from tinyops.optimize.convert import convert

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, body(keras.layers, inputs))
    samples = np.random.default_rng(2).normal(0.0, 1.0, size=(64, *shape)).astype(np.float32)
    return convert(model, "int8", samples)


@pytest.mark.slow
@pytest.mark.parametrize("input_first", [True, False])
def test_a_keras_residual_block_in_row_bands_is_bit_exact(
    input_first: bool, tmp_path: Path
) -> None:
    tflite = _int8_model((9, 7, 3), lambda layers, x: _identity_block(layers, x, input_first))
    run = bit_exact_run(tflite, "block", tmp_path, seed=5)
    assert 3 in run.compiled.liveness.fused_ops.values()
    assert "tinyops_conv_conv_add(" in run.compiled.files[run.compiled.source]
    assert run.mismatches() == 0, f"{run.mismatches()} of {run.ours.size} output bytes differ"
    assert len({row.tobytes() for row in run.ours}) > 1


@pytest.mark.slow
def test_a_keras_downsample_block_is_bit_exact_in_the_planned_order(tmp_path: Path) -> None:
    tflite = _int8_model((12, 10, 3), _downsample_block)
    run = bit_exact_run(tflite, "down", tmp_path, seed=6)
    g = read_tflite(tflite, "down")
    assert plan_cost(g, tuple(lower(g)))[0] >= run.compiled.arena_bytes
    assert run.mismatches() == 0, f"{run.mismatches()} of {run.ours.size} output bytes differ"
    assert len({row.tobytes() for row in run.ours}) > 1
