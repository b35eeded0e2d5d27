"""In-place execution: which operators the planner lets write over their input, their
scratch buffers, the plan's invariants, and the RAM it saves on the MLPerf Tiny models.

Bit-exactness of the in-place kernels is held by the whole-model tests: KWS and STR-WW
(1x1 convolutions, out_c <= in_c, stride-1 depthwise convolutions, VALID depthwise
convolutions that write behind their reads), VWW (1x1 convolutions that widen, run last
pixel first; the fused 1x1 → stride-2 depthwise pair in row bands; stride-2 depthwise
convolutions over their input) and ResNet (ADD; 3x3 convolutions with a ring of rows;
strided convolutions over their input) are compared with TFLM on the host
(tests/compile/test_compile_mlperf.py), on the emulated Cortex-M4 with the DSP kernels
(tests/compile/test_compile_emulated.py) and on the emulated Cortex-M0 (plain C).
"""

from __future__ import annotations

import pytest
from ci_env import require_fixtures
from compile_testlib import sized_graph

from tinyops.compile import compile_model
from tinyops.compile.lower import fusions, inplace_kernels
from tinyops.compile.planner import (
    RING_BASE,
    SCRATCH_BASE,
    Fusion,
    InPlace,
    buffers_of,
    check_plan,
    plan_memory,
)


def test_a_dying_input_is_overwritten_and_gets_scratch() -> None:
    # in -> A (op0) -> B (op1, in place) -> out (op2)
    g = sized_graph(
        [("CONV_2D", (0,), 1), ("CONV_2D", (1,), 2), ("CONV_2D", (2,), 3)], [8, 64, 48, 4]
    )
    live = buffers_of(g, {1: InPlace((0,), scratch=16)})
    assert live.inplace == {1}
    assert live.buffer_of[1] == live.buffer_of[2]
    merged = next(b for b in live.buffers if b.id == live.buffer_of[1])
    assert (merged.size, merged.first, merged.last) == (64, 0, 2)  # max size, union of lives
    scratch = next(b for b in live.buffers if b.id == live.scratch[1])
    assert scratch.id == SCRATCH_BASE + 1 and (scratch.size, scratch.first, scratch.last) == (
        16,
        1,
        1,
    )
    plan = plan_memory(live.buffers)
    check_plan(plan)
    assert plan.arena_bytes == 64 + 16  # the two never share bytes while op 1 runs


def test_an_input_read_later_is_not_overwritten() -> None:
    # A feeds op1 and the ADD at op2: op1 must not write over A.
    g = sized_graph(
        [("CONV_2D", (0,), 1), ("CONV_2D", (1,), 2), ("ADD", (1, 2), 3), ("CONV_2D", (3,), 4)],
        [8, 32, 32, 32, 4],
    )
    live = buffers_of(g, {1: InPlace((0,), 8), 2: InPlace((0, 1), 0)})
    assert 1 not in live.inplace and 1 not in live.scratch
    assert live.buffer_of[1] != live.buffer_of[2]
    # The ADD may overwrite either dying input: it takes the first (A).
    assert 2 in live.inplace and live.buffer_of[3] == live.buffer_of[1]
    check_plan(plan_memory(live.buffers))


def test_the_callers_buffers_are_never_overwritten() -> None:
    # op0 reads the caller's input (read-only); op1 writes the caller's output.
    g = sized_graph([("CONV_2D", (0,), 1), ("CONV_2D", (1,), 2)], [16, 16, 16])
    live = buffers_of(g, {0: InPlace((0,), 4), 1: InPlace((0,), 4)})
    assert live.inplace == frozenset() and live.scratch == {}


def test_without_inplace_kernels_nothing_changes() -> None:
    g = sized_graph(
        [("CONV_2D", (0,), 1), ("CONV_2D", (1,), 2), ("CONV_2D", (2,), 3)], [8, 64, 48, 4]
    )
    live = buffers_of(g)
    assert live.inplace == frozenset()
    assert live.buffer_of[1] != live.buffer_of[2]


PAIR_CHAIN = [
    ("CONV_2D", (0,), 1),
    ("CONV_2D", (1,), 2),
    ("DEPTHWISE_CONV_2D", (2,), 3),
    ("CONV_2D", (3,), 4),
]


def test_a_fused_pair_has_a_ring_and_writes_over_its_input() -> None:
    # in -> X (op0) -> [Y (op1, 1x1) -> Z (op2, depthwise)] -> out (op3)
    g = sized_graph(
        PAIR_CHAIN,
        [8, 64, 128, 32, 4],
    )
    live = buffers_of(g, {}, {1: Fusion(1, ring=24, inplace=True)})
    assert live.fused == {1: RING_BASE + 1} and live.fused_inplace == {1}
    ring = next(b for b in live.buffers if b.id == RING_BASE + 1)
    assert (ring.size, ring.first, ring.last) == (24, 1, 2)  # never the 128-byte Y
    assert live.buffer_of[3] == live.buffer_of[1]  # Z over X
    merged = next(b for b in live.buffers if b.id == live.buffer_of[1])
    assert (merged.size, merged.first, merged.last) == (64, 0, 3)
    plan = plan_memory(live.buffers)
    assert plan.arena_bytes == 64 + 32  # X/Z and the ring (aligned), not X + Y


def test_a_fused_pair_not_in_place_keeps_its_input_through_the_pair() -> None:
    # The 1x1 runs inside the depthwise operator: X is read at op 2, so Z (written at
    # op 2) must not be placed over it.
    g = sized_graph(
        PAIR_CHAIN,
        [8, 64, 128, 32, 4],
    )
    live = buffers_of(g, {}, {1: Fusion(1, ring=24, inplace=False)})
    x = next(b for b in live.buffers if b.id == live.buffer_of[1])
    z = next(b for b in live.buffers if b.id == live.buffer_of[3])
    assert x.last == 2 and z.first == 2 and x.id != z.id
    plan = plan_memory(live.buffers)
    assert plan.arena_bytes >= 64 + 32 + 24


@pytest.mark.fixtures
def test_the_reference_models_use_the_new_in_place_rules() -> None:
    from tinyops.compile.lower import lower
    from tinyops.compile.reader import read_tflite

    folder = require_fixtures()
    vww = read_tflite((folder / "vww_96_int8.tflite").read_bytes(), "vww")
    calls = lower(vww)
    # MobileNet's first expand (48x48x8 → 48x48x16) and stride-2 depthwise run in bands,
    # the 48x48x16 tensor never whole: a ring of 3 rows of 48 x 16.
    assert fusions(vww, calls) == {2: Fusion(2, 3 * 48 * 16, True)}
    kernels = inplace_kernels(calls)
    assert all(kernels[i].kernel == "" for i in (7, 11, 23))  # stride-2 depthwise, out == in
    ic = read_tflite((folder / "pretrainedResnet_quant.tflite").read_bytes(), "ic")
    ic_calls = lower(ic)
    # The first residual block (conv 1 → conv 2 → ADD 3) runs in row bands: a ring of 3
    # rows of 32 x 16 and one output row, instead of two 16 KB tensors. Blocks 2 and 3
    # start with a strided convolution, so their ADD reads the shortcut, not the input.
    assert fusions(ic, ic_calls) == {1: Fusion(1, 3 * 32 * 16 + 32 * 16, True, ops=3)}
    ic_kernels = inplace_kernels(ic_calls)
    assert all(ic_kernels[i].kernel == "tinyops_conv_2d_inplace" for i in (2, 5, 9))
    assert ic_kernels[2].scratch == 2 * 32 * 16  # a ring of pad_h + 1 rows
    assert all(ic_kernels[i].kernel == "" for i in (6, 10))  # 1x1 stride 2: behind its reads
    # 3x3 stride 2 (SAME, top padding 0) reads rows 2·oy .. 2·oy + 2: behind its reads too,
    # but its input is still read by the shortcut at op 6, so the planner keeps it apart.
    assert ic_kernels[4].kernel == ""
    sww = read_tflite((folder / "str_ww_ref_model.tflite").read_bytes(), "sww")
    # Its 1x1 → depthwise pairs widen 40 → 128 channels: the output rows would overrun the
    # unread input rows, so they are not fused.
    assert fusions(sww, lower(sww)) == {}


# Peak RAM (arena + the caller's input and output) as a share of TFLM's arena, with the
# in-place kernels, fused groups, freed tails and the reordered shortcuts
# (docs/compiler.md).
RAM_SHARE = {
    "kws_ref_model": 0.38,
    "ad01_int8": 0.39,
    "str_ww_ref_model": 0.30,
    "vww_96_int8": 0.47,
    "pretrainedResnet_quant": 0.50,
}
TFLM_ARENA = {
    "kws_ref_model": 24_272,
    "vww_96_int8": 103_680,
    "pretrainedResnet_quant": 55_984,
    "ad01_int8": 3_984,
    "str_ww_ref_model": 16_640,
}


@pytest.mark.fixtures
@pytest.mark.parametrize("stem", sorted(RAM_SHARE))
def test_peak_ram_share_of_tflm(stem: str) -> None:
    path = require_fixtures() / f"{stem}.tflite"
    c = compile_model(path.read_bytes(), stem.lower(), str(path))
    assert c.ram_bytes <= RAM_SHARE[stem] * TFLM_ARENA[stem]
    check_plan(c.plan)
    source = c.files[c.source]
    for i in c.liveness.scratch:
        assert f"_inplace(&op{i}, " in source
    for i, n in c.liveness.fused_ops.items():
        fn = {2: "tinyops_conv_1x1_depthwise", 3: "tinyops_conv_conv_add"}[n]
        assert f"{fn}(" + ", ".join(f"&op{i + k}" for k in range(n)) + ", " in source
