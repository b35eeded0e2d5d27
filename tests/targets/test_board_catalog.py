from __future__ import annotations

import pydantic
import pytest

from tinyops.errors import ProjectError
from tinyops.targets.catalog import Board, board_ids, list_boards, load_board
from tinyops.targets.cost import CORE_COSTS

EXPECTED = {
    # id: (core, clock_hz, sram_bytes, flash_bytes, runtime)
    "nano33ble": ("cortex-m4f", 64_000_000, 262_144, 1_048_576, "tflm"),
    "nucleo-l4r5zi": ("cortex-m4f", 120_000_000, 655_360, 2_097_152, "tflm"),
    "stm32f746-disco": ("cortex-m7", 216_000_000, 327_680, 1_048_576, "tflm"),
    "esp32-s3": ("xtensa-lx7", 240_000_000, 524_288, 8_388_608, "tflm"),
    "pico": ("cortex-m0plus", 133_000_000, 270_336, 2_097_152, "tflm"),
    "rpi4": ("cortex-a72", 1_500_000_000, 4 * 1024**3, 32 * 1024**3, "litert"),
}


def test_catalog_lists_exactly_the_six_boards() -> None:
    assert board_ids() == sorted(EXPECTED)
    assert [board.id for board in list_boards()] == sorted(EXPECTED)


@pytest.mark.parametrize("board_id", sorted(EXPECTED))
def test_board_datasheet_figures(board_id: str) -> None:
    board = load_board(board_id)
    core, clock, sram, flash, runtime = EXPECTED[board_id]
    assert (board.core, board.clock_hz, board.sram_bytes, board.flash_bytes, board.runtime) == (
        core,
        clock,
        sram,
        flash,
        runtime,
    )
    assert board.id == board_id
    assert all(src.startswith("https://") for src in board.sources)
    # The stated basis is the figure the power was computed from: "<I> mA x <V> V".
    assert " mA x " in board.active_power_basis
    assert board.core in CORE_COSTS


def test_power_figures_are_current_times_voltage() -> None:
    # Hand-computed from each file's stated basis (mA × V = mW).
    assert load_board("nano33ble").active_power_mw == pytest.approx(3.3 * 3.0)
    assert load_board("nucleo-l4r5zi").active_power_mw == pytest.approx(0.110 * 120 * 3.0)
    assert load_board("rpi4").active_power_mw == pytest.approx(600 * 5.1)


def test_microcontrollers_have_less_sram_than_flash_and_only_m0plus_lacks_fpu() -> None:
    for board in list_boards():
        assert board.sram_bytes < board.flash_bytes
        assert board.fpu == (board.core != "cortex-m0plus")
        assert board.dsp_simd == (board.core != "cortex-m0plus")


def test_unknown_board_lists_valid_ids() -> None:
    with pytest.raises(ProjectError) as info:
        load_board("arduino-uno")
    message = str(info.value)
    assert "'arduino-uno'" in message
    for board_id in EXPECTED:
        assert board_id in message


def test_board_is_frozen_and_rejects_unknown_fields() -> None:
    board = load_board("pico")
    with pytest.raises(pydantic.ValidationError):
        board.clock_hz = 1  # type: ignore[misc]
    data = board.model_dump()
    data["overclock_hz"] = 250_000_000
    with pytest.raises(pydantic.ValidationError):
        Board.model_validate(data)


def _modules_after(statement: str) -> set[str]:
    import subprocess
    import sys

    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_importing_targets_loads_no_heavy_library() -> None:
    heavy = {"tensorflow", "keras", "tflite_micro", "ai_edge_litert", "mlflow", "flatbuffers"}
    every_module = (
        "import tinyops.targets.budget, tinyops.targets.catalog, tinyops.targets.cost, "
        "tinyops.targets.device_validate, tinyops.targets.ops, tinyops.targets.profile, "
        "tinyops.targets.tflm"
    )
    assert not heavy & _modules_after(every_module)
    # A project schema imports Budgets: that must not even load numpy.
    assert "numpy" not in _modules_after("from tinyops.targets.budget import Budgets")


def test_package_exports_resolve() -> None:
    import tinyops.targets as targets

    for name in targets.__all__:
        assert getattr(targets, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Boards'"):
        _ = targets.Boards  # type: ignore[attr-defined]
