"""Targets: the boards a model is built for, and what the model costs on them.

    catalog          boards (clock, SRAM, flash, core, power) from datasheets
    ops              operators of a .tflite, their MACs, and which ones TFLM lacks
    tflm             the TFLM runtime on the host: measured arena, int8 inference
    cost             latency and energy estimate per core, calibrated on MLPerf Tiny
    profile          flash / RAM / MACs / latency / energy of a model on a board
    budget           limits per board and the report that checks them
    device_validate  accuracy and agreement of the model run through TFLM

The names below are loaded on first use, so importing `tinyops.targets.budget` from a project
schema does not load numpy or the profiler; TFLM and LiteRT load only inside functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyops.targets.budget import (
        BudgetReport,
        BudgetRow,
        Budgets,
        check_budgets,
        require_within,
    )
    from tinyops.targets.catalog import Board, board_ids, list_boards, load_board
    from tinyops.targets.cost import CostEstimate, estimate_cost
    from tinyops.targets.device_validate import DeviceValidation, validate_on_device
    from tinyops.targets.ops import OpInfo, model_ops, unsupported_ops
    from tinyops.targets.profile import Profile, profile_model, profile_tflite
    from tinyops.targets.tflm import ArenaUsage, TensorDetails, TflmModel

_EXPORTS = {
    "ArenaUsage": "tflm",
    "Board": "catalog",
    "BudgetReport": "budget",
    "BudgetRow": "budget",
    "Budgets": "budget",
    "CostEstimate": "cost",
    "DeviceValidation": "device_validate",
    "OpInfo": "ops",
    "Profile": "profile",
    "TensorDetails": "tflm",
    "TflmModel": "tflm",
    "board_ids": "catalog",
    "check_budgets": "budget",
    "estimate_cost": "cost",
    "list_boards": "catalog",
    "load_board": "catalog",
    "model_ops": "ops",
    "profile_model": "profile",
    "profile_tflite": "profile",
    "require_within": "budget",
    "unsupported_ops": "ops",
    "validate_on_device": "device_validate",
}

__all__ = [
    "ArenaUsage",
    "Board",
    "BudgetReport",
    "BudgetRow",
    "Budgets",
    "CostEstimate",
    "DeviceValidation",
    "OpInfo",
    "Profile",
    "TensorDetails",
    "TflmModel",
    "board_ids",
    "check_budgets",
    "estimate_cost",
    "list_boards",
    "load_board",
    "model_ops",
    "profile_model",
    "profile_tflite",
    "require_within",
    "unsupported_ops",
    "validate_on_device",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinyops.targets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tinyops.targets.{module}"), name)
