"""Latency and energy of one inference, estimated from the model's operators and the board.

    cycles     = Σ_ops ( macs · cycles_per_mac[core][kind] · dtype_factor
                       + elements · cycles_per_element[core] · dtype_factor
                       + op_overhead_cycles[core] )
    latency_ms = cycles / clock_hz · 1000
    energy_mJ  = active_power_mW · latency_ms / 1000

`kind` is conv (CONV_2D, TRANSPOSE_CONV), depthwise (DEPTHWISE_CONV_2D) or fc
(FULLY_CONNECTED, BATCH_MATMUL); `elements` is the element-wise work `ops.py` counts (values
written; pooling: values read). `dtype_factor` is 1 for int8 (the case the constants are
for) and `float32_factor[core]` for float32 operators.

Calibration (Cortex-M4F). The MLPerf Tiny v0.5 reference submission ran TFLM on the
NUCLEO-L4R5ZI at 120 MHz: KWS 181.9 ms, VWW 600.6 ms, IC 704 ms. On the same models (the
fixtures in ../shared/fixtures/mlperf-tiny, MACs from `ops.py`: KWS 2.66 M, VWW 7.49 M,
IC 12.50 M) that is 6.8 to 9.6 cycles per MAC end to end, about 3-5x the ≈2 cycles/MAC
inner-loop rate of CMSIS-NN's SMLAD kernels: weights stream from flash with 5 wait states at
120 MHz (the ART cache favours code), im2col copies, per-output requantization, and the
depthwise kernels' poor data reuse. With the constants below the estimates are

    KWS 193.1 ms (+6.1 %)    VWW 543.4 ms (-9.5 %)    IC 739.4 ms (+5.0 %)

These errors are in-sample: conv and depthwise cycles/MAC were chosen (rounded) to minimise
the worst of the three. tests/targets/test_cost.py asserts each stays within ±15 %.
VWW is the one under-estimated: its thin layers (8-32 channels, a 3-channel first conv) run
CMSIS-NN's less efficient paths, which a per-MAC model cannot see. Expect ±35 % on other
int8 models for the M4F, and treat the other cores' estimates (ratios from their
micro-architecture, one published data point for the LX7) as ±50 % guides, not measurements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tinyops.targets.catalog import Board
from tinyops.targets.ops import OpInfo

CONV_OPS = frozenset({"CONV_2D", "TRANSPOSE_CONV"})
DEPTHWISE_OPS = frozenset({"DEPTHWISE_CONV_2D"})
FC_OPS = frozenset({"FULLY_CONNECTED", "BATCH_MATMUL"})


@dataclass(frozen=True)
class CoreCost:
    """Cycle costs of TFLM int8 kernels on one core (cycles per MAC / element / operator)."""

    conv_cycles_per_mac: float
    depthwise_cycles_per_mac: float
    fc_cycles_per_mac: float
    cycles_per_element: float
    op_overhead_cycles: float
    float32_factor: float
    basis: str


CORE_COSTS: dict[str, CoreCost] = {
    # Calibrated on the MLPerf Tiny TFLM reference latencies (module docstring).
    # fc: no weight reuse, so every MAC reads a weight byte from flash. Not in the three
    # calibration models in any amount; 8 follows from X-CUBE-AI running AD (all FC) and KWS
    # at the same 3.4 cycles/MAC on this board while TFLM needs 2.4x X-CUBE-AI's cycles on
    # KWS. element: bias + fixed-point requantization (SMULL, shifts, clamp) ≈ 10 cycles.
    # overhead: TFLM's invoke loop and per-op dispatch, ≈ 2000 cycles (17 µs at 120 MHz);
    # with 13-31 operators per model it is under 0.5 % of these latencies.
    # float32: reference float kernels with the FPv4 VMLA, 4-byte weights from flash ≈ 2x.
    "cortex-m4f": CoreCost(
        conv_cycles_per_mac=7.0,
        depthwise_cycles_per_mac=20.0,
        fc_cycles_per_mac=8.0,
        cycles_per_element=10.0,
        op_overhead_cycles=2000.0,
        float32_factor=2.0,
        basis="calibrated: MLPerf Tiny v0.5 TFLM reference, NUCLEO-L4R5ZI",
    ),
    # Same DSP instructions as the M4 but a dual-issue 6-stage pipeline, a 64-bit AXI flash
    # path with ART and L1 D-cache holding reused weights. Taken as 0.6x the M4's cycles per
    # MAC and per element: an assumption from those pipeline differences, not a measurement.
    "cortex-m7": CoreCost(
        conv_cycles_per_mac=4.2,
        depthwise_cycles_per_mac=12.0,
        fc_cycles_per_mac=5.0,
        cycles_per_element=6.0,
        op_overhead_cycles=1200.0,
        float32_factor=2.0,
        basis="M4 calibration x 0.6 (dual issue, caches); not calibrated",
    ),
    # Armv6-M: no SMLAD/SIMD, 2-cycle loads, sign extension per operand; the RP2040's
    # single-cycle 32x32 multiplier helps. ≈9-10 cycles/MAC in the inner loop alone (vs ≈1-2
    # with SMLAD) plus XIP flash cache misses: ≈3x the M4's end-to-end cycles per MAC.
    # Requantization needs a 64-bit product the core lacks: ≈30 cycles per element.
    # float32 runs in software (≈60-100 cycles per multiply-add): ≈5x.
    "cortex-m0plus": CoreCost(
        conv_cycles_per_mac=21.0,
        depthwise_cycles_per_mac=40.0,
        fc_cycles_per_mac=24.0,
        cycles_per_element=30.0,
        op_overhead_cycles=3000.0,
        float32_factor=5.0,
        basis="M4 calibration x 3 (no SIMD MAC); not calibrated",
    ),
    # ESP-NN's PIE 128-bit vector kernels. Anchored on esp-tflite-micro's published person
    # detection latency on the ESP32-S3 at 240 MHz with ESP-NN: 54 ms = 12.96 M cycles for
    # MobileNetV1-0.25 96x96x1 (the VWW fixture's MACs with a 1-channel first conv: 6.36 M
    # conv + 0.80 M depthwise); these constants give 51.8 ms (-4 %). float32 gets no ESP-NN
    # kernel and falls back to reference code: ≈6x.
    "xtensa-lx7": CoreCost(
        conv_cycles_per_mac=1.5,
        depthwise_cycles_per_mac=3.0,
        fc_cycles_per_mac=2.0,
        cycles_per_element=2.0,
        op_overhead_cycles=1000.0,
        float32_factor=6.0,
        basis="anchored: esp-tflite-micro person detection 54 ms on ESP32-S3 (ESP-NN)",
    ),
    # LiteRT + XNNPACK on one A72 core: NEON int8 GEMM through widening multiply-accumulate
    # (SMLAL, 8 lanes, two NEON pipes; the A72 has no SDOT) peaks near 16 MACs/cycle;
    # ≈4 MACs/cycle is sustained on small layers. Higher per-op overhead (interpreter,
    # XNNPACK dispatch), irrelevant at 1.5 GHz. float32 NEON kernels ≈1.5x. Not calibrated.
    "cortex-a72": CoreCost(
        conv_cycles_per_mac=0.25,
        depthwise_cycles_per_mac=0.5,
        fc_cycles_per_mac=0.3,
        cycles_per_element=0.5,
        op_overhead_cycles=5000.0,
        float32_factor=1.5,
        basis="NEON throughput estimate, one thread; not calibrated",
    ),
}

# Published MLPerf Tiny v0.5 TFLM reference latencies on the NUCLEO-L4R5ZI (ms), by the
# fixture file of the model they were measured on: the calibration targets above.
MLPERF_TINY_L4R5ZI_TFLM_MS: dict[str, float] = {
    "kws_ref_model.tflite": 181.9,
    "vww_96_int8.tflite": 600.6,
    "pretrainedResnet_quant.tflite": 704.0,
}


@dataclass(frozen=True)
class CostEstimate:
    """Estimated work of one inference on a board: cycles, ms and mJ, plus cycles per op."""

    cycles: float
    latency_ms: float
    energy_mj: float
    op_cycles: tuple[float, ...]


def core_cost(core: str) -> CoreCost:
    try:
        return CORE_COSTS[core]
    except KeyError:
        raise KeyError(
            f"no cost constants for core {core!r}; expected one of {', '.join(CORE_COSTS)}"
        ) from None


def op_cycles(op: OpInfo, cost: CoreCost) -> float:
    """Estimated CPU cycles of one operator."""
    if op.name in CONV_OPS:
        per_mac = cost.conv_cycles_per_mac
    elif op.name in DEPTHWISE_OPS:
        per_mac = cost.depthwise_cycles_per_mac
    else:
        per_mac = cost.fc_cycles_per_mac
    factor = cost.float32_factor if op.dtype == "float32" else 1.0
    work = op.macs * per_mac + op.elements * cost.cycles_per_element
    return work * factor + cost.op_overhead_cycles


def latency_ms(cycles: float, clock_hz: int) -> float:
    return cycles / clock_hz * 1000.0


def energy_mj(active_power_mw: float, latency: float) -> float:
    """Energy (mJ) of `latency` ms at `active_power_mw` mW."""
    return active_power_mw * latency / 1000.0


def estimate_cost(ops: Iterable[OpInfo], board: Board) -> CostEstimate:
    """Cycles, latency (ms) and energy (mJ) of one inference of `ops` on `board`."""
    cost = core_cost(board.core)
    per_op: Sequence[float] = tuple(op_cycles(op, cost) for op in ops)
    cycles = float(sum(per_op))
    ms = latency_ms(cycles, board.clock_hz)
    return CostEstimate(
        cycles=cycles,
        latency_ms=ms,
        energy_mj=energy_mj(board.active_power_mw, ms),
        op_cycles=tuple(per_op),
    )
