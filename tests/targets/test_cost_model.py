from __future__ import annotations

from collections.abc import Callable

import pytest

from tinyops.targets.catalog import board_ids, load_board
from tinyops.targets.cost import (
    CORE_COSTS,
    MLPERF_TINY_L4R5ZI_TFLM_MS,
    energy_mj,
    estimate_cost,
    latency_ms,
    op_cycles,
)
from tinyops.targets.ops import OpInfo, model_ops


def _op(name: str, macs: int, elements: int, dtype: str = "int8") -> OpInfo:
    return OpInfo(0, name, (), (), macs, elements, dtype)


def test_op_cycles_by_hand_on_cortex_m4() -> None:
    m4 = CORE_COSTS["cortex-m4f"]
    # 1000 MACs x 7 + 10 elements x 10 + 2000 overhead
    assert op_cycles(_op("CONV_2D", 1000, 10), m4) == 9_100
    # depthwise: 1000 x 20 + 10 x 10 + 2000
    assert op_cycles(_op("DEPTHWISE_CONV_2D", 1000, 10), m4) == 22_100
    # fully connected: 1000 x 8 + 10 x 10 + 2000
    assert op_cycles(_op("FULLY_CONNECTED", 1000, 10), m4) == 10_100
    # element-wise only: 500 x 10 + 2000
    assert op_cycles(_op("SOFTMAX", 0, 500), m4) == 7_000
    # float32 doubles the work, not the dispatch overhead: (7000 + 100) x 2 + 2000
    assert op_cycles(_op("CONV_2D", 1000, 10, "float32"), m4) == 16_200


def test_latency_and_energy_by_hand() -> None:
    assert latency_ms(12_000_000, 120_000_000) == pytest.approx(100.0)
    # 39.6 mW for 100 ms = 3.96 mJ
    assert energy_mj(39.6, 100.0) == pytest.approx(3.96)


def test_estimate_sums_operators_on_a_board() -> None:
    board = load_board("nucleo-l4r5zi")
    ops = [_op("CONV_2D", 1000, 10), _op("SOFTMAX", 0, 500)]
    estimate = estimate_cost(ops, board)
    assert estimate.op_cycles == (9_100, 7_000)
    assert estimate.cycles == 16_100
    assert estimate.latency_ms == pytest.approx(16_100 / 120_000_000 * 1000)
    assert estimate.energy_mj == pytest.approx(39.6 * estimate.latency_ms / 1000)


@pytest.mark.fixtures
@pytest.mark.parametrize(
    ("name", "documented_error"),
    [
        ("kws_ref_model.tflite", +0.061),
        ("vww_96_int8.tflite", -0.095),
        ("pretrainedResnet_quant.tflite", +0.050),
    ],
)
def test_calibration_against_mlperf_tiny(
    name: str, documented_error: float, mlperf_bytes: Callable[[str], bytes]
) -> None:
    """Estimates vs the published TFLM reference on the NUCLEO-L4R5ZI (cost.py docstring)."""
    published = MLPERF_TINY_L4R5ZI_TFLM_MS[name]
    estimate = estimate_cost(model_ops(mlperf_bytes(name)), load_board("nucleo-l4r5zi"))
    error = estimate.latency_ms / published - 1
    assert abs(error) <= 0.15
    assert error == pytest.approx(documented_error, abs=0.001)


@pytest.mark.fixtures
def test_esp32_s3_anchor_person_detection(mlperf_bytes: Callable[[str], bytes]) -> None:
    """LX7 constants vs esp-tflite-micro's 54 ms person detection (grayscale 96x96 input).

    The VWW fixture is the same MobileNetV1-0.25 on RGB; with one input channel its first
    conv has a third of the MACs (48·48·8·3·3·1 instead of ·3).
    """
    ops = model_ops(mlperf_bytes("vww_96_int8.tflite"))
    first = ops[0]
    assert (first.name, first.macs) == ("CONV_2D", 48 * 48 * 8 * 3 * 3 * 3)
    grey = [OpInfo(0, "CONV_2D", (), (), first.macs // 3, first.elements, "int8"), *ops[1:]]
    estimate = estimate_cost(grey, load_board("esp32-s3"))
    assert estimate.latency_ms == pytest.approx(54.0, rel=0.10)


@pytest.mark.fixtures
def test_faster_cores_estimate_less_time(mlperf_bytes: Callable[[str], bytes]) -> None:
    ops = model_ops(mlperf_bytes("kws_ref_model.tflite"))
    ms = {b: estimate_cost(ops, load_board(b)).latency_ms for b in board_ids()}
    # Same M4F core at 64 vs 120 MHz: latency scales with the clock exactly.
    assert ms["nano33ble"] == pytest.approx(ms["nucleo-l4r5zi"] * 120 / 64)
    assert ms["rpi4"] < ms["esp32-s3"] < ms["stm32f746-disco"] < ms["nucleo-l4r5zi"]
    assert ms["nucleo-l4r5zi"] < ms["nano33ble"] < ms["pico"]
