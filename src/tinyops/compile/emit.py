"""Emit a model as a standalone C99 library: no malloc, no interpreter, one static arena.

`compile_model(tflite_bytes, name)` runs the passes (read → lower → liveness → plan) and
prints four files:

    tinyops_<name>.h     the entry point and the input/output sizes and quantization
    tinyops_<name>.c     weights and per-channel multipliers as `static const` arrays (flash),
                         one `static const` parameter struct per operator, the arena as one
                         `static int8_t` array, and `tinyops_<name>_invoke`, a straight list
                         of kernel calls on arena offsets
    tinyops_kernels.h/.c the int8 kernels (package data; shared by every compiled model)

The generated code builds warning-free with `-std=c99 -Wall -Wextra -Werror` (the tests
hold it to that). Everything a reviewer needs to audit a call (operator index and kind,
tensor names, arena offsets) is in a comment beside it.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyops.compile.errors import CompileError
from tinyops.compile.ir import Graph
from tinyops.compile.lower import (
    ConstArray,
    KernelCall,
    Ref,
    block_input_first,
    fusions,
    inplace_kernels,
    lower,
    tensor_array_name,
)
from tinyops.compile.planner import (
    INPUT,
    OUTPUT,
    Liveness,
    MemoryPlan,
    buffers_of,
    plan_memory,
)
from tinyops.compile.reader import read_tflite
from tinyops.compile.schedule import schedule

KERNEL_FILES = ("tinyops_kernels.h", "tinyops_kernels.c")
VALUES_PER_LINE = 20
# Parameter structs hold int32 fields and pointers: 4 bytes each on a 32-bit MCU.
FIELD_BYTES = 4
# Code bytes of each kernel (with its private helpers), measured with arm-none-eabi-gcc 12
# -O2 -mcpu=cortex-m4 -mthumb -ffunction-sections on kernels/tinyops_kernels.c (DSP path):
# the flash estimate adds those of the kernels a model calls, the shared dot-product
# helpers, and a few instructions per call in the entry point.
KERNEL_CODE_BYTES = {
    "tinyops_conv_2d": 1140 + 1100 + 704 + 136,  # + conv_im2col_row, conv_1x1_pixel, dot4
    "tinyops_depthwise_conv_2d": 748 + 788,  # + depthwise_row
    "tinyops_fully_connected": 300,
    "tinyops_average_pool_2d": 408,
    "tinyops_max_pool_2d": 356,
    "tinyops_add": 24 + 420,  # + add_range
    "tinyops_softmax": 992 + 408,  # + exp_on_negative_values
    "tinyops_copy": 20,
    # in-place variants: their own loops; they share the kernels' helpers above
    "tinyops_conv_2d_1x1_inplace": 132 + 704 + 136,
    "tinyops_depthwise_conv_2d_inplace": 196 + 788,
    "tinyops_conv_2d_inplace": 128 + 1100,  # + conv_im2col_row
    "tinyops_conv_1x1_depthwise": 312 + 704 + 788,  # + conv_1x1_pixel, depthwise_row
    "tinyops_conv_conv_add": 280 + 1100 + 420,  # + conv_im2col_row, add_range
}
# The function that runs a fused group, by its number of operators.
FUSED_FUNCTIONS = {2: "tinyops_conv_1x1_depthwise", 3: "tinyops_conv_conv_add"}
# dot_s8, dot2_s8, requantize_block and the multiplier-above-one path, shared by the
# convolutions and FULLY_CONNECTED.
SHARED_CODE_BYTES = 128 + 184 + 416 + 24
CALL_CODE_BYTES = 12

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class CompiledModel:
    """A compiled model: the generated files and the numbers a user budgets with."""

    name: str
    graph: Graph
    calls: tuple[KernelCall, ...]
    liveness: Liveness
    plan: MemoryPlan
    files: dict[str, str]
    const_bytes: int
    # The model's operator index of each execution position (schedule.py may reorder).
    order: tuple[int, ...] = ()

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    @property
    def input_bytes(self) -> int:
        return self.graph.input.nbytes

    @property
    def output_bytes(self) -> int:
        return self.graph.output.nbytes

    @property
    def ram_bytes(self) -> int:
        """Arena plus the caller's input and output buffers: what TFLM's arena holds too."""
        return self.arena_bytes + self.input_bytes + self.output_bytes

    @property
    def code_bytes(self) -> int:
        """Estimated Cortex-M4 code bytes: the kernels used, the entry point's calls."""
        kernels, groups = self.liveness.kernels, self.liveness.fused_ops
        inner = {i + k for i, n in groups.items() for k in range(n)}
        used = {
            kernels.get(c.op_index) or c.function for c in self.calls if c.op_index not in inner
        }
        used |= {FUSED_FUNCTIONS[n] for n in groups.values()}
        return (
            SHARED_CODE_BYTES
            + sum(KERNEL_CODE_BYTES[f] for f in used)
            + CALL_CODE_BYTES * len(self.calls)
        )

    @property
    def flash_bytes(self) -> int:
        """Estimated flash: constant data (weights, parameters) plus code."""
        return self.const_bytes + self.code_bytes

    @property
    def header(self) -> str:
        return f"tinyops_{self.name}.h"

    @property
    def source(self) -> str:
        return f"tinyops_{self.name}.c"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operators": len(self.calls),
            "arena_bytes": self.arena_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "ram_bytes": self.ram_bytes,
            "const_bytes": self.const_bytes,
            "code_bytes": self.code_bytes,
            "flash_bytes": self.flash_bytes,
        }


def model_name_from(stem: str) -> str:
    """A C-safe model name from a file stem: lower case, [a-z0-9_], starting with a letter."""
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "m_" + name
    return name[:40]


def check_model_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise CompileError(
            f"model name {name!r} must be a lower-case C identifier: a letter, then up to 40 "
            "letters, digits or '_'"
        )
    return name


def kernel_sources() -> dict[str, str]:
    """The kernel library's files, from package data."""
    folder = importlib.resources.files("tinyops.compile").joinpath("kernels")
    return {f: folder.joinpath(f).read_text(encoding="utf-8") for f in KERNEL_FILES}


def compile_model(tflite_bytes: bytes, name: str, source: str = "<tflite bytes>") -> CompiledModel:
    """Compile an int8 .tflite model to C; `CompileError` naming `source` if it cannot."""
    check_model_name(name)
    graph = read_tflite(tflite_bytes, source)
    calls = tuple(lower(graph))
    try:
        graph, calls, order = schedule(graph, calls)
    except AssertionError as exc:
        raise CompileError(f"{source}: memory plan invariant broken: {exc}") from exc
    liveness = buffers_of(graph, inplace_kernels(calls), fusions(graph, calls))
    try:
        plan = plan_memory(liveness.buffers)
    except AssertionError as exc:  # an invariant broke: a compiler bug, reported, not hidden
        raise CompileError(f"{source}: memory plan invariant broken: {exc}") from exc
    arrays = _unique_arrays(calls)
    const_bytes = sum(a.nbytes for a in arrays) + sum(
        FIELD_BYTES * len(c.fields) for c in calls if c.params_type
    )
    files = {
        f"tinyops_{name}.h": _header(name, graph, plan),
        f"tinyops_{name}.c": _source(name, graph, calls, arrays, liveness, plan, order),
        **kernel_sources(),
    }
    return CompiledModel(name, graph, calls, liveness, plan, files, const_bytes, order)


def _unique_arrays(calls: tuple[KernelCall, ...]) -> list[ConstArray]:
    seen: dict[str, ConstArray] = {}
    for c in calls:
        for a in c.arrays:
            seen.setdefault(a.name, a)
    return list(seen.values())


def _c_comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


def _affine(scale: float, zero_point: int) -> str:
    return f"real = {scale!r} * (q - {zero_point})"


def _header(name: str, graph: Graph, plan: MemoryPlan) -> str:
    upper = name.upper()
    x, y = graph.input, graph.output
    assert x.quant is not None and y.quant is not None
    return "\n".join(
        [
            f"/* Generated by tinyops from {_c_comment(graph.source)}. Do not edit. */",
            f"#ifndef TINYOPS_{upper}_H_",
            f"#define TINYOPS_{upper}_H_",
            "",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"/* Input: int8 {list(x.shape)}, {_affine(x.quant.scale, x.quant.zero_point)} */",
            f"#define TINYOPS_{upper}_INPUT_SIZE {x.elements}",
            f"#define TINYOPS_{upper}_INPUT_SCALE {x.quant.scale!r}",
            f"#define TINYOPS_{upper}_INPUT_ZERO_POINT {x.quant.zero_point}",
            f"/* Output: int8 {list(y.shape)}, {_affine(y.quant.scale, y.quant.zero_point)} */",
            f"#define TINYOPS_{upper}_OUTPUT_SIZE {y.elements}",
            f"#define TINYOPS_{upper}_OUTPUT_SCALE {y.quant.scale!r}",
            f"#define TINYOPS_{upper}_OUTPUT_ZERO_POINT {y.quant.zero_point}",
            "/* Bytes of the static activation arena (inside the library). */",
            f"#define TINYOPS_{upper}_ARENA_SIZE {plan.arena_bytes}",
            "",
            "/* One inference: reads INPUT_SIZE int8 values from `in`, writes OUTPUT_SIZE to",
            " * `out`. `out` is also used as scratch for the last operators; `in` is only read.",
            " * Not re-entrant (one static arena). Returns 0, or -1 if a pointer is NULL. */",
            f"int tinyops_{name}_invoke(const int8_t *in, int8_t *out);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* TINYOPS_{upper}_H_ */",
            "",
        ]
    )


def _array_lines(a: ConstArray) -> list[str]:
    values = np.asarray(a.values).reshape(-1).tolist()
    body = [
        "  " + ", ".join(str(v) for v in values[i : i + VALUES_PER_LINE]) + ","
        for i in range(0, len(values), VALUES_PER_LINE)
    ]
    return [f"static const {a.ctype} {a.name}[{len(values)}] = {{", *body, "};"]


def _pointer(graph: Graph, liveness: Liveness, plan: MemoryPlan, tensor: int) -> str:
    if graph.tensor(tensor).constant:
        return tensor_array_name(tensor)
    buf = liveness.buffer_of[tensor]
    if buf == INPUT:
        return "in"
    if buf == OUTPUT:
        return "out"
    return f"(arena + {plan.offsets[buf]})"


def _field(value: int | Ref) -> str:
    if isinstance(value, Ref):
        return value.name if value.name is not None else "NULL"
    return str(int(value))


def _source(
    name: str,
    graph: Graph,
    calls: tuple[KernelCall, ...],
    arrays: list[ConstArray],
    liveness: Liveness,
    plan: MemoryPlan,
    order: tuple[int, ...],
) -> str:
    lines = [
        f"/* Generated by tinyops from {_c_comment(graph.source)}. Do not edit.",
        f" * {len(calls)} operators, arena {plan.arena_bytes} bytes. */",
        f'#include "tinyops_{name}.h"',
        "",
        "#include <stddef.h>",
        "",
        '#include "tinyops_kernels.h"',
        "",
    ]
    for a in arrays:
        lines.extend(_array_lines(a))
    lines.append("")
    for c in calls:
        if not c.params_type:
            continue
        lines.append(
            f"/* operator {c.op_index}: {c.kind} -> tensor {c.output} "
            f"({_c_comment(graph.tensor(c.output).name)}) */"
        )
        lines.append(f"static const {c.params_type} op{c.op_index} = {{")
        lines.extend(f"    .{k} = {_field(v)}," for k, v in c.fields)
        lines.append("};")
    lines.append("")
    if plan.arena_bytes:
        lines += [
            "#if defined(__GNUC__) || defined(__clang__)",
            "#define TINYOPS_ARENA_ALIGN __attribute__((aligned(16)))",
            "#else",
            "#define TINYOPS_ARENA_ALIGN",
            "#endif",
            f"static int8_t arena[{plan.arena_bytes}] TINYOPS_ARENA_ALIGN;",
            "",
        ]
    lines += [
        f"int tinyops_{name}_invoke(const int8_t *in, int8_t *out) {{",
        "  if (in == NULL || out == NULL) return -1;",
    ]
    by_index = {c.op_index: c for c in calls}
    group_of = {i + k: i for i, n in liveness.fused_ops.items() for k in range(n)}
    for c in calls:
        moved = (
            f" (operator {order[c.op_index]} in the model)"
            if order[c.op_index] != c.op_index
            else ""
        )
        lines.append(f"  /* {c.op_index}: {c.kind}{moved} */")
        head = group_of.get(c.op_index)
        if head is not None:
            n = liveness.fused_ops[head]
            if c.op_index < head + n - 1:
                lines.append(f"  /* runs in row bands inside operator {head + n - 1} */")
                continue
            first = by_index[head]
            src = _pointer(graph, liveness, plan, first.operands[0])
            dst = _pointer(graph, liveness, plan, c.output)
            ring = plan.offsets[liveness.fused[head]]
            where = "in place, " if head in liveness.fused_inplace else ""
            members = ", ".join(f"&op{head + k}" for k in range(n))
            extra = f", {int(block_input_first(first, c))}" if n == 3 else ""
            lines.append(f"  /* fused with {head}; {where}ring at arena + {ring} */")
            lines.append(
                f"  {FUSED_FUNCTIONS[n]}({members}, {src}, {dst}, (arena + {ring}){extra});"
            )
            continue
        ptrs = [_pointer(graph, liveness, plan, t) for t in c.operands]
        dst = _pointer(graph, liveness, plan, c.output)
        if not c.params_type:
            if ptrs[0] == dst:
                lines.append("  /* aliased: the output is the input's bytes */")
            else:
                lines.append(f"  {c.function}({_field(c.fields[0][1])}, {ptrs[0]}, {dst});")
            continue
        if liveness.kernels.get(c.op_index):
            # The output overwrites the dying input: one buffer, plus the op's scratch.
            if ptrs[0] != dst:
                raise CompileError(f"operator {c.op_index}: in-place output is not its input")
            scratch = liveness.scratch[c.op_index]
            lines.append(f"  /* in place; scratch at arena + {plan.offsets[scratch]} */")
            fn = liveness.kernels[c.op_index]
            lines.append(f"  {fn}(&op{c.op_index}, {dst}, (arena + {plan.offsets[scratch]}));")
            continue
        if c.op_index in liveness.inplace:
            lines.append("  /* in place: the output overwrites a dying input */")
        lines.append(f"  {c.function}(&op{c.op_index}, {', '.join(ptrs)}, {dst});")
    lines += ["  return 0;", "}", ""]
    return "\n".join(lines)
