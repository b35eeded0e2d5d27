"""The board catalog: one YAML file per target in `tinyops/targets/boards/`.

A board is what a model is budgeted against: its clock, its on-chip SRAM (where the TFLM
arena and the runtime's state live), its flash (where the model and the runtime's code
live), its core (which selects the cost model's cycles-per-MAC constants) and its typical
active power (which turns an estimated latency into energy). Every number is a datasheet
figure; each file lists its sources and states the power figure it used (mA × V).
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyops.errors import ProjectError

Core = Literal["cortex-m4f", "cortex-m7", "cortex-m0plus", "xtensa-lx7", "cortex-a72"]
Runtime = Literal["tflm", "litert"]

_BOARDS_PACKAGE = "tinyops.targets"
_BOARDS_DIR = "boards"


class Board(BaseModel):
    """A target board and the datasheet figures tinyops budgets and estimates against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Short id used in project files, e.g. 'nano33ble'.")
    name: str = Field(description="Product name of the board.")
    mcu: str = Field(description="Vendor and part number of the microcontroller / SoC.")
    core: Core = Field(description="CPU core; selects the cost model's per-core constants.")
    clock_hz: int = Field(gt=0, description="CPU clock the estimates assume, in Hz.")
    sram_bytes: int = Field(gt=0, description="On-chip SRAM (RAM for Linux boards), bytes.")
    flash_bytes: int = Field(gt=0, description="Flash for model + code (storage), bytes.")
    fpu: bool = Field(description="Whether the core has a hardware floating-point unit.")
    dsp_simd: bool = Field(description="Whether the core has SIMD MAC instructions.")
    active_power_mw: float = Field(
        gt=0, description="Typical active power at clock_hz, in mW (datasheet mA × V)."
    )
    active_power_basis: str = Field(
        description="The datasheet figure active_power_mw was computed from (mA × V)."
    )
    runtime: Runtime = Field(description="'tflm' for microcontrollers, 'litert' for Linux.")
    os: str = Field(description="Operating system / SDK the model runs under.")
    sources: list[str] = Field(min_length=1, description="Datasheet and product page URLs.")
    notes: str = Field(default="", description="Caveats of the figures above.")


def _board_files() -> dict[str, str]:
    folder = importlib.resources.files(_BOARDS_PACKAGE).joinpath(_BOARDS_DIR)
    return {
        entry.name.removesuffix(".yaml"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def board_ids() -> list[str]:
    """Ids of every board in the catalog, sorted."""
    return sorted(_board_files())


def list_boards() -> list[Board]:
    """Every board in the catalog, sorted by id."""
    return [load_board(board_id) for board_id in board_ids()]


@functools.cache
def load_board(board_id: str) -> Board:
    """The catalog entry for `board_id`; `ProjectError` listing valid ids if unknown."""
    files = _board_files()
    if board_id not in files:
        raise ProjectError(
            f"unknown board {board_id!r}: expected one of {', '.join(sorted(files))}"
        )
    where = f"tinyops/targets/boards/{board_id}.yaml"
    try:
        data = yaml.safe_load(files[board_id])
    except yaml.YAMLError as exc:
        raise ProjectError(f"{where}: not valid YAML ({exc})") from exc
    try:
        board = Board.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ProjectError(f"{where}: invalid board entry: {problems}") from exc
    if board.id != board_id:
        raise ProjectError(f"{where}: id is {board.id!r}, expected {board_id!r} (the file name)")
    return board
