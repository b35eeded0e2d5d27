"""`tinyops compile`: one .tflite file → a C library folder, checked against a board.

The order is the contract "one clear error, nothing half-written": read the file,
compile it in memory, check the plan against the board's RAM and flash, and only then
write the library (atomically, `toolchain.write_library`). The TFLM arena is measured with
the TFLM runtime so the user sees both numbers side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyops.compile.emit import compile_model, model_name_from
from tinyops.compile.errors import CompileError
from tinyops.compile.toolchain import write_library
from tinyops.errors import ModelError


def compile_for_board(
    model_path: Path, board_id: str, dest: Path, name: str | None = None
) -> dict[str, Any]:
    """Compile `model_path` for board `board_id` into folder `dest`; returns the figures."""
    from tinyops.targets.catalog import load_board
    from tinyops.targets.tflm import TflmModel

    board = load_board(board_id)
    try:
        data = Path(model_path).read_bytes()
    except OSError as exc:
        raise CompileError(f"{model_path}: cannot read the .tflite file ({exc.strerror})") from exc
    compiled = compile_model(data, name or model_name_from(Path(model_path).stem), str(model_path))
    if compiled.ram_bytes > board.sram_bytes:
        raise CompileError(
            f"{model_path}: the compiled model needs {compiled.ram_bytes:,} bytes of RAM "
            f"(arena {compiled.arena_bytes:,} + input {compiled.input_bytes:,} + output "
            f"{compiled.output_bytes:,}); {board.id} has {board.sram_bytes:,}"
        )
    if compiled.flash_bytes > board.flash_bytes:
        raise CompileError(
            f"{model_path}: the compiled model needs about {compiled.flash_bytes:,} bytes of "
            f"flash; {board.id} has {board.flash_bytes:,}"
        )
    tflm_arena: int | None
    try:
        tflm_arena = TflmModel(data, source=str(model_path)).arena.total
    except ModelError:
        tflm_arena = None  # the compiled C does not depend on TFLM; only the comparison is lost
    files = write_library(compiled, dest)
    return {
        **compiled.summary(),
        "board": board.id,
        "board_sram_bytes": board.sram_bytes,
        "board_flash_bytes": board.flash_bytes,
        "model_bytes": len(data),
        "tflm_arena_bytes": tflm_arena,
        "files": [str(f) for f in files],
    }
