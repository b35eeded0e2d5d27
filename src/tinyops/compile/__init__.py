"""The tinyops compiler: int8 .tflite → standalone C99 with a static memory plan.

    read_tflite      .tflite bytes → ir.Graph (reader.py)
    lower            ir.Graph → one kernel call per operator (lower.py, quant.py)
    schedule         an execution order with a smaller plan (schedule.py)
    buffers_of       liveness of activation buffers, RESHAPE aliases (planner.py)
    plan_memory      greedy-by-size arena offsets, invariants checked (planner.py)
    compile_model    all of the above, printed as C (emit.py)
    write_library    the C files into a folder, atomically (toolchain.py)
    emit_features    a fitted feature pipeline as C, quantizing into the model input
                     (features.py)

On emulated and real hardware (imported on demand, they need the cross toolchain, QEMU,
Unicorn or pyserial):

    emulate          AN386 (Cortex-M4) and micro:bit (Cortex-M0) firmware (firmware/) and
                     batch runs under QEMU
    icount           Cortex-M4 instructions per inference with Unicorn; latency, energy
    hil              the framed serial protocol to a board running the hil firmware
    layout, report   the library as bundle members; `tinyops profile --compiled`

See docs/compiler.md for the design, the bit-exactness argument and the limits.
"""

from tinyops.compile.emit import CompiledModel, compile_model, model_name_from
from tinyops.compile.errors import CompileError
from tinyops.compile.planner import Buffer, MemoryPlan, buffers_of, check_plan, plan_memory
from tinyops.compile.reader import SUPPORTED_OPERATORS, read_tflite
from tinyops.compile.toolchain import build_host_runner, run_host, write_library

__all__ = [
    "SUPPORTED_OPERATORS",
    "Buffer",
    "CompileError",
    "CompiledModel",
    "MemoryPlan",
    "buffers_of",
    "build_host_runner",
    "check_plan",
    "compile_model",
    "model_name_from",
    "plan_memory",
    "read_tflite",
    "run_host",
    "write_library",
]
