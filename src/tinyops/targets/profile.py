"""What a model costs on a board: flash, RAM, MACs, latency and energy of one inference.

Flash holds the model (the .tflite bytes, compiled in as a const array) and the runtime's
code; RAM holds the TFLM arena and the runtime's own state. The arena is *measured* by
running the model once in the TFLM runtime (`tflm.TflmModel`); the runtime's code and state
are *estimated* as documented below; latency and energy come from `cost.py`.

Runtime flash (TFLM boards). TensorFlow's TFLM overview (tensorflow.org/lite/microcontrollers)
says the core runtime fits in 16 KB on an Arm Cortex-M3, and an older revision adds that with
the operators of the speech keyword example it takes 22 KB in total: a 16 KiB interpreter
base, and ≈6 KB for that example's three reference kernels (DEPTHWISE_CONV_2D,
FULLY_CONNECTED, SOFTMAX), so ≈2 KiB per kernel. Optimized libraries (CMSIS-NN, ESP-NN) carry
several specialised paths for the MAC kernels (1x1, 1xN, generic, per input-depth variants):
those are counted at 3x (6 KiB). This is a floor-level estimate; today's TFLM with logging
and a vendor kernel library is larger. The linker map of the real firmware is the authority.

Runtime RAM (TFLM boards). Outside the arena TFLM keeps the MicroInterpreter and
MicroMutableOpResolver objects (≈1 KB for a resolver of ~10 kernels) and needs stack for
Invoke() (≈1-2 KB with CMSIS-NN): 4 KiB is reserved for them.

Linux boards (runtime "litert"). The arena is still TFLM's (so boards compare like with
like), the runtime is LiteRT with XNNPACK: ≈4 MiB of shared library on flash/storage, and
≈8 MiB of resident interpreter state plus a packed copy of the weights (model bytes) in RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinyops.targets.catalog import Board
from tinyops.targets.cost import estimate_cost
from tinyops.targets.ops import MAC_OPS, op_counts, total_macs
from tinyops.targets.tflm import TensorDetails, TflmModel

# Interpreter core on a Cortex-M3 (bytes): TFLM overview, "fits in 16 KB".
TFLM_BASE_FLASH_BYTES = 16 * 1024
# One reference kernel (bytes): (22 KB - 16 KB) / 3 kernels of the keyword-spotting example.
TFLM_KERNEL_FLASH_BYTES = 2 * 1024
# Optimized MAC kernels carry several specialised code paths (multiplier, dimensionless).
OPTIMIZED_MAC_KERNEL_FACTOR = 3
# Interpreter + op resolver objects and Invoke() stack outside the arena (bytes).
TFLM_RUNTIME_RAM_BYTES = 4 * 1024
# LiteRT + XNNPACK shared library on a Linux board (bytes).
LITERT_RUNTIME_FLASH_BYTES = 4 * 1024 * 1024
# Resident LiteRT interpreter state outside tensors and packed weights (bytes).
LITERT_RUNTIME_RAM_BYTES = 8 * 1024 * 1024


def runtime_flash_bytes(op_names: set[str], board: Board) -> int:
    """Estimated code size of the runtime with the kernels for `op_names` (bytes)."""
    if board.runtime == "litert":
        return LITERT_RUNTIME_FLASH_BYTES
    kernels = sum(
        TFLM_KERNEL_FLASH_BYTES * (OPTIMIZED_MAC_KERNEL_FACTOR if name in MAC_OPS else 1)
        for name in op_names
    )
    return TFLM_BASE_FLASH_BYTES + kernels


def runtime_ram_bytes(model_bytes: int, board: Board) -> int:
    """Estimated RAM the runtime needs outside the TFLM arena (bytes)."""
    if board.runtime == "litert":
        return LITERT_RUNTIME_RAM_BYTES + model_bytes
    return TFLM_RUNTIME_RAM_BYTES


@dataclass(frozen=True)
class Profile:
    """Resources and estimated cost of one model on one board. Sizes in bytes."""

    board_id: str
    model_bytes: int
    arena_bytes: int
    arena_head_bytes: int
    arena_tail_bytes: int
    runtime_flash_bytes: int
    flash_bytes: int
    runtime_ram_bytes: int
    ram_bytes: int
    macs: int
    latency_ms: float
    energy_mj: float
    ops: dict[str, int]
    input_details: tuple[TensorDetails, ...]
    output_details: tuple[TensorDetails, ...]
    # Always empty in a Profile that exists (profiling raises UnsupportedOperator
    # otherwise); serialized so a stored profile records that the check was made.
    unsupported_ops: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "board_id": self.board_id,
            "model_bytes": self.model_bytes,
            "arena_bytes": self.arena_bytes,
            "arena_head_bytes": self.arena_head_bytes,
            "arena_tail_bytes": self.arena_tail_bytes,
            "runtime_flash_bytes": self.runtime_flash_bytes,
            "flash_bytes": self.flash_bytes,
            "runtime_ram_bytes": self.runtime_ram_bytes,
            "ram_bytes": self.ram_bytes,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "ops": dict(self.ops),
            "unsupported_ops": list(self.unsupported_ops),
            "input_details": [d.to_dict() for d in self.input_details],
            "output_details": [d.to_dict() for d in self.output_details],
        }


def profile_model(model: TflmModel, board: Board) -> Profile:
    """Profile an already loaded model (its arena is measured once, at load)."""
    estimate = estimate_cost(model.ops, board)
    size = len(model.model_bytes)
    counts = op_counts(model.ops)
    runtime_flash = runtime_flash_bytes(set(counts), board)
    runtime_ram = runtime_ram_bytes(size, board)
    return Profile(
        board_id=board.id,
        model_bytes=size,
        arena_bytes=model.arena.total,
        arena_head_bytes=model.arena.head,
        arena_tail_bytes=model.arena.tail,
        runtime_flash_bytes=runtime_flash,
        flash_bytes=size + runtime_flash,
        runtime_ram_bytes=runtime_ram,
        ram_bytes=model.arena.total + runtime_ram,
        macs=total_macs(model.ops),
        latency_ms=estimate.latency_ms,
        energy_mj=estimate.energy_mj,
        ops=counts,
        input_details=tuple(model.input_details),
        output_details=tuple(model.output_details),
    )


def profile_tflite(tflite_bytes: bytes, board: Board, source: str = "<tflite bytes>") -> Profile:
    """Load `tflite_bytes` in TFLM, measure its arena, and estimate its cost on `board`.

    Raises `ModelError` for a malformed model and `UnsupportedOperator` (a `ModelError`)
    naming the operators TFLM lacks.
    """
    return profile_model(TflmModel(tflite_bytes, source=source), board)
