from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pydantic
import pytest
from rich.console import Console

from tinyops.errors import BudgetExceeded, GateFailed, UnsupportedOperator
from tinyops.targets.budget import Budgets, check_budgets, require_within
from tinyops.targets.catalog import load_board
from tinyops.targets.cost import estimate_cost
from tinyops.targets.profile import Profile, profile_tflite


@pytest.fixture(scope="module")
def kws_nano(mlperf_bytes: Callable[[str], bytes]) -> Profile:
    return profile_tflite(mlperf_bytes("kws_ref_model.tflite"), load_board("nano33ble"), "kws")


@pytest.mark.fixtures
def test_kws_profile_on_nano33ble(kws_nano: Profile) -> None:
    p = kws_nano
    assert (p.model_bytes, p.arena_bytes, p.arena_head_bytes, p.arena_tail_bytes) == (
        53_936,
        24_272,
        16_000,
        8_272,
    )
    # Runtime code: 16 KiB core + CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED at 3 x 2 KiB
    # + AVERAGE_POOL_2D, RESHAPE, SOFTMAX at 2 KiB = 16,384 + 18,432 + 6,144.
    assert p.runtime_flash_bytes == 40_960
    assert p.flash_bytes == 53_936 + 40_960
    assert p.runtime_ram_bytes == 4_096
    assert p.ram_bytes == 24_272 + 4_096
    assert p.macs == 2_656_768
    assert p.ops == {
        "AVERAGE_POOL_2D": 1,
        "CONV_2D": 5,
        "DEPTHWISE_CONV_2D": 4,
        "FULLY_CONNECTED": 1,
        "RESHAPE": 1,
        "SOFTMAX": 1,
    }
    assert p.unsupported_ops == ()
    assert p.input_details[0].shape == (1, 49, 10, 1)
    # Same M4F cost model as the calibration board, at 64 MHz instead of 120 MHz.
    assert p.latency_ms == pytest.approx(193.075 * 120 / 64, rel=1e-4)
    assert p.energy_mj == pytest.approx(9.9 * p.latency_ms / 1000)
    assert json.loads(json.dumps(p.to_dict()))["input_details"][0]["zero_point"] == 83


@pytest.mark.fixtures
def test_linux_board_uses_litert_runtime_figures(mlperf_bytes: Callable[[str], bytes]) -> None:
    data = mlperf_bytes("kws_ref_model.tflite")
    p = profile_tflite(data, load_board("rpi4"))
    assert p.arena_bytes == 24_272  # still the TFLM arena, for comparison with the MCUs
    assert p.runtime_flash_bytes == 4 * 1024 * 1024
    assert p.ram_bytes == 24_272 + 8 * 1024 * 1024 + len(data)


def test_profile_refuses_ops_tflm_lacks(flex_model_bytes: bytes) -> None:
    with pytest.raises(UnsupportedOperator, match="FlexRFFT2D"):
        profile_tflite(flex_model_bytes, load_board("pico"), "flex.tflite")


@pytest.mark.slow
def test_profile_refuses_a_converted_rfft2d_model(rfft2d_model_bytes: bytes) -> None:
    with pytest.raises(UnsupportedOperator, match=r"rfft\.tflite: .*COMPLEX_ABS, RFFT2D"):
        profile_tflite(rfft2d_model_bytes, load_board("nano33ble"), "rfft.tflite")


@pytest.mark.fixtures
def test_no_budget_still_checks_the_board_capacity(kws_nano: Profile) -> None:
    board = load_board("nano33ble")
    report = check_budgets(kws_nano, Budgets(), board)
    assert [(r.metric, r.limit, r.unit, r.basis, r.within) for r in report.rows] == [
        ("ram", 262_144, "bytes", "board SRAM", True),
        ("flash", 1_048_576, "bytes", "board flash", True),
    ]
    assert report.passed
    require_within(report)  # does not raise
    too_big = dataclasses.replace(kws_nano, ram_bytes=300_000)
    with pytest.raises(BudgetExceeded, match=r"ram 300,000 bytes > 262,144 bytes \(board SRAM\)"):
        require_within(check_budgets(too_big, Budgets(), board))


@pytest.mark.fixtures
def test_fraction_budget_over_names_metric_and_excess(kws_nano: Profile) -> None:
    report = check_budgets(kws_nano, Budgets(ram_fraction=0.05), load_board("nano33ble"))
    # 5 % of 262,144 bytes = 13,107.2 bytes; the model needs 28,368: 15,260.8 over (+116.4 %).
    (ram, flash) = report.rows
    assert (ram.within, ram.limit, ram.basis) == (
        False,
        pytest.approx(13_107.2),
        "ram_fraction 0.05 of SRAM",
    )
    assert flash.within
    with pytest.raises(BudgetExceeded) as info:
        require_within(report)
    assert str(info.value) == (
        "model over budget on nano33ble: ram 28,368 bytes > 13,107 bytes "
        "(ram_fraction 0.05 of SRAM): over by 15,261 bytes (+116.4%)"
    )
    assert isinstance(info.value, GateFailed)
    assert info.value.report is report


@pytest.mark.fixtures
def test_tightest_limit_applies_and_latency_energy_rows(kws_nano: Profile) -> None:
    budgets = Budgets(ram_bytes=20_000, ram_fraction=0.5, latency_ms=100.0, energy_mj=10.0)
    report = check_budgets(kws_nano, budgets, load_board("nano33ble"))
    rows = {r.metric: r for r in report.rows}
    assert list(rows) == ["ram", "flash", "latency", "energy"]
    assert (rows["ram"].limit, rows["ram"].basis, rows["ram"].within) == (
        20_000,
        "ram_bytes budget",
        False,
    )
    assert (rows["latency"].unit, rows["latency"].within) == ("ms", False)
    assert (rows["energy"].unit, rows["energy"].within) == ("mJ", True)  # ≈ 3.6 mJ
    with pytest.raises(BudgetExceeded) as info:
        require_within(report)
    message = str(info.value)
    assert "ram 28,368 bytes > 20,000 bytes" in message
    assert "latency 362 ms > 100 ms" in message
    assert "energy" not in message and "flash" not in message
    assert json.loads(json.dumps(report.to_dict()))["passed"] is False


@pytest.mark.fixtures
def test_render_marks_rows_over(kws_nano: Profile) -> None:
    report = check_budgets(kws_nano, Budgets(latency_ms=100.0), load_board("nano33ble"))
    console = Console(record=True, width=160)
    console.print(report.render())
    text = console.export_text()
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert "OVER" in lines["latency"]
    assert "yes" in lines["ram"] and "28,368 bytes" in lines["ram"]


@pytest.mark.parametrize(
    "bad",
    [{"ram_fraction": 1.5}, {"ram_fraction": 0}, {"latency_ms": -1.0}, {"ram": 1000}],
)
def test_budget_validation(bad: dict[str, float]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Budgets.model_validate(bad)


@pytest.mark.fixtures
def test_profile_latency_is_the_cost_model(
    kws_nano: Profile, mlperf_bytes: Callable[[str], bytes]
) -> None:
    from tinyops.targets.ops import model_ops

    estimate = estimate_cost(
        model_ops(mlperf_bytes("kws_ref_model.tflite")), load_board("nano33ble")
    )
    assert kws_nano.latency_ms == estimate.latency_ms
