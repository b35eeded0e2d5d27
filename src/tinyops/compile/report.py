"""What the compiled C costs on a board, beside TFLM's figures (`tinyops profile --compiled`).

`compiled_profile(tflite_bytes, board)` compiles the model in memory and reports:

- RAM: the static arena plus the caller's input and output buffers (`CompiledModel`),
  against the board's SRAM;
- flash: .text + .rodata + .data of the library cross-compiled for the board's core when
  arm-none-eabi-gcc is installed (`toolchain.cross_build`), else the compiler's estimate
  (`CompiledModel.flash_bytes`); `flash_source` says which;
- Cortex-M4 instructions per inference: the model linked into the AN386 firmware and its
  invoke run once under Unicorn (`icount`) on an input of zero points, and the latency and
  energy they imply at the board's clock and active power (cycles ≈ instructions, a lower
  bound: see icount.py). Only for Cortex-M4/M7 boards (the count is the M4 DSP build);
  `instructions` is None, with `instructions_note` saying why, otherwise or when the
  cross toolchain is missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyops.compile.emit import compile_model, model_name_from
from tinyops.compile.errors import CompileError
from tinyops.compile.toolchain import CORTEX_M_CPU, cross_build, cross_compiler, write_library

if TYPE_CHECKING:
    from tinyops.targets.catalog import Board

COUNTED_CORES = ("cortex-m4f", "cortex-m7")


def compiled_profile(tflite_bytes: bytes, board: Board, source: str) -> dict[str, Any]:
    """The compiled model's RAM, flash and instruction-count latency on `board`."""
    from tinyops.compile.emulate import build_firmware
    from tinyops.compile.icount import count_instructions, estimate_for_board

    name = model_name_from(Path(source).stem)
    compiled = compile_model(tflite_bytes, name, source)
    result: dict[str, Any] = {
        "arena_bytes": compiled.arena_bytes,
        "ram_bytes": compiled.ram_bytes,
        "flash_bytes": compiled.flash_bytes,
        "flash_source": "estimate",
        "instructions": None,
        "instructions_note": "",
        "latency_ms": None,
        "energy_mj": None,
    }
    if cross_compiler() is None:
        result["instructions_note"] = "arm-none-eabi-gcc not installed"
        return result
    with tempfile.TemporaryDirectory(prefix="tinyops-profile-") as tmp:
        lib = Path(tmp) / "lib"
        write_library(compiled, lib)
        if board.core in CORTEX_M_CPU:
            result["flash_bytes"] = cross_build(lib, name, Path(tmp), board.core).flash_bytes
            result["flash_source"] = f"ELF ({board.core})"
        if board.core not in COUNTED_CORES:
            result["instructions_note"] = (
                f"counted on Cortex-M4/M7 only, {board.id} is {board.core}"
            )
            return result
        elf = build_firmware(lib, name, Path(tmp))
        zp = compiled.graph.input.quant.zero_point if compiled.graph.input.quant else 0
        x = np.full((1, compiled.graph.input.elements), zp, dtype=np.int8)
        try:
            run = count_instructions(elf, name, x, compiled.graph.output.elements)
        except CompileError as exc:
            result["instructions_note"] = str(exc)
            return result
    est = estimate_for_board(run.instructions[0], board.id)
    result.update(
        instructions=run.instructions[0],
        instructions_note="Cortex-M4 DSP build, -O2; cycles ≈ instructions (lower bound)",
        latency_ms=est.latency_ms,
        energy_mj=est.energy_uj / 1000.0,
    )
    return result
