"""TensorFlow Lite for Microcontrollers (TFLM), run on the host through its Python wheel.

The `tflite-micro` wheel compiles the TFLM C++ interpreter and its reference kernels for the
host. Running a model through it is the closest thing to the device short of flashing one:
the same FlatBuffer parsing, the same int8 reference kernels (the ones CMSIS-NN and ESP-NN
are tested against) and the same arena planner, so the arena size it reports is the one a
firmware must reserve.

The arena is the one block of RAM TFLM works in. `RecordingMicroAllocator` splits it into a
*head* (the planned, reused activation buffers: the peak of simultaneously-live tensors) and a
*tail* (persistent data: tensor structs, quantization params, kernel op-data, node list).
`print_allocations()` prints these from C++ straight to a file descriptor (stderr in the
pinned wheel, stdout in some builds), so they are captured by redirecting both fds 1 and 2 at
the OS level around the call.

The host build is 64-bit, so pointer-holding structs in the tail are somewhat larger than on a
32-bit MCU: for the device, the measured arena is a slight over-estimate.

Loading a model goes through `ops.load_model` first: it checks every index the C++ runtime
would follow and that constant buffers match their shapes (the runtime verifies neither),
and names operators TFLM lacks (`UnsupportedOperator`) before the runtime would fail with a
bare "failed to allocate tensors". No structural check can rule out every corruption that
makes the C++ code divide by zero or read out of bounds, which kills the whole process
(fuzzing the KWS fixture produced SIGFPEs before the buffer check existed). So the first
load of a model happens in a short-lived child process, and only a model that loads and runs
there is loaded in-process (`isolate=False` skips this for bytes already vetted).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import DataError, ModelError, UnsupportedOperator
from tinyops.optimize.quant import dequantize, quantize
from tinyops.targets.ops import (
    TENSOR_TYPE_BYTES,
    OpInfo,
    builtin_operator_names,
    load_model,
    ops_of_model,
    tflm_op_set,
    unsupported_in,
)

T = TypeVar("T")

# Host arena sizing (bytes). The arena handed to the runtime on the host is scratch memory
# (allocated, mostly never touched); only what the model *uses* of it is measured. It must
# never be too small: when TFLM runs out of arena while loading, the pinned wheel crashes
# (SIGSEGV) instead of raising. So it is sized from safe upper bounds: activations without
# any reuse, times 4 for kernel scratch buffers (int32 accumulators of an int8 output), plus
# the model size (bounds per-channel quantization and op data) plus 1 MiB of structs.
_ARENA_ACTIVATION_FACTOR = 4
_ARENA_BASE_BYTES = 1024 * 1024
# TFLM aligns arena allocations to 16 bytes (MicroArenaBufferAlignment); 64 covers any build.
_ARENA_ALIGNMENT = 64

_ALLOC_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class ArenaUsage:
    """TFLM tensor arena use, in bytes: total = head (activations) + tail (persistent)."""

    total: int
    head: int
    tail: int


@dataclass(frozen=True)
class TensorDetails:
    """An input or output tensor: shape, numpy dtype name and affine quantization.

    `scale` is 0.0 and `zero_point` 0 for a tensor that is not quantized (float32).
    """

    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale > 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def _runtime() -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def tflm_version() -> str:
    """Version string of the installed `tflite-micro` wheel (date and git hash)."""
    from tflite_micro.python.tflite_micro import _version

    return str(_version.__version__)


@contextlib.contextmanager
def _native_output() -> Iterator[list[str]]:
    """Capture what C/C++ code writes to fds 1 and 2 inside the block.

    Yields a list that holds the captured text once the block exits. C stdio buffers are
    flushed on both sides of the redirection so no byte lands on the wrong side. The
    redirection is process-wide: output of other threads inside the block is captured too.
    """
    libc = ctypes.CDLL(None)
    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    libc.fflush(None)
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _call_capturing(fn: Callable[[], T]) -> tuple[T | None, BaseException | None, str]:
    """Run `fn`, returning (result, exception, native output) instead of raising."""
    result: T | None = None
    error: BaseException | None = None
    with _native_output() as out:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    return result, error, out[0] if out else ""


def parse_allocations(text: str) -> ArenaUsage:
    """Read total/head/tail bytes from `print_allocations()` output."""
    found = {kind: int(n) for kind, n in _ALLOC_RE.findall(text)}
    missing = {"total", "head", "tail"} - found.keys()
    if missing:
        raise ModelError(
            "TFLM print_allocations() output lacks the arena "
            f"{', '.join(sorted(missing))} line(s); got: {text.strip()[:300]!r}"
        )
    return ArenaUsage(total=found["total"], head=found["head"], tail=found["tail"])


def _details(raw: dict[str, Any]) -> TensorDetails:
    q = raw.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), dtype=np.float64).ravel()
    zero_points = np.asarray(q.get("zero_points", []), dtype=np.int64).ravel()
    return TensorDetails(
        shape=tuple(int(d) for d in np.asarray(raw["shape"]).ravel()),
        dtype=np.dtype(raw["dtype"]).name,
        scale=float(scales[0]) if scales.size else 0.0,
        zero_point=int(zero_points[0]) if zero_points.size else 0,
    )


def _activation_bytes(model: Any) -> int:
    """Sum of all non-constant tensor sizes (bytes): an arena size that needs no reuse."""
    buffers = model.buffers or []
    total = 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            buf = buffers[t.buffer] if t.buffer < len(buffers) else None
            constant = buf is not None and (
                (buf.data is not None and len(buf.data) > 0) or buf.size > 0
            )
            if not constant:
                n = 1
                for d in [] if t.shape is None else t.shape:
                    n *= max(int(d), 1)
                total += n * TENSOR_TYPE_BYTES.get(int(t.type), 8)
    return total


def host_arena_bytes(model: Any, model_size: int) -> int:
    """Arena (bytes) to give the host runtime: an upper bound of what the model can use.

    Rounded up to a multiple of the arena alignment: TFLM carves the tail down from the
    arena's end, and an unaligned end would add padding bytes to the measured total.
    """
    need = _ARENA_ACTIVATION_FACTOR * _activation_bytes(model) + model_size + _ARENA_BASE_BYTES
    return -(-need // _ARENA_ALIGNMENT) * _ARENA_ALIGNMENT


# The child process used by `isolate=True`: loads the model from stdin, runs one inference
# on zero-point inputs and exits 0. A crash shows up as a negative return code (signal).
_ISOLATED_LOAD = """
import sys
from tinyops.targets.tflm import TflmModel
TflmModel(sys.stdin.buffer.read(), source=sys.argv[1], isolate=False)
"""


def _load_in_child(tflite_bytes: bytes, source: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED_LOAD, source],
        input=tflite_bytes,
        capture_output=True,
        check=False,
    )
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        said = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
        raise ModelError(
            f"{source}: the TFLM runtime crashed ({name}) while loading and running the model "
            "once: the .tflite file is malformed (corrupt shapes or operator options)"
            + (f"; TFLM said: {said}" if said else "")
        )
    # Errors the child raised as exceptions are raised again, with the same message, by the
    # in-process load that follows; nothing more to do here.


class TflmModel:
    """A .tflite model loaded in the TFLM runtime, with its measured arena.

    On construction the model is parsed and checked, operators TFLM lacks are reported,
    the interpreter is built, one inference is run on inputs equal to each input's zero
    point (real value 0.0) and the arena use is read from the allocator's report.
    """

    def __init__(
        self,
        tflite_bytes: bytes,
        source: str = "<tflite bytes>",
        *,
        isolate: bool = True,
    ) -> None:
        self.source = source
        self.model_bytes = bytes(tflite_bytes)
        model = load_model(self.model_bytes, source)
        self.ops: list[OpInfo] = ops_of_model(model)
        missing = unsupported_in(self.ops)
        if missing:
            raise UnsupportedOperator(
                f"{source}: the TFLM runtime (tflite-micro {tflm_op_set().runtime_version}) "
                f"has no kernel for operator(s) {', '.join(missing)}; "
                "replace them in the model or convert without them"
            )
        if isolate:
            _load_in_child(self.model_bytes, source)
        self._n_inputs = len(model.subgraphs[0].inputs)
        self._n_outputs = len(model.subgraphs[0].outputs)
        self._stateful = _runtime().count_resource_variables(model) > 0
        self._interpreter = self._build(host_arena_bytes(model, len(self.model_bytes)))
        self.input_details: list[TensorDetails] = [
            _details(self._interpreter.get_input_details(i)) for i in range(self._n_inputs)
        ]
        self.output_details: list[TensorDetails] = [
            _details(self._interpreter.get_output_details(i)) for i in range(self._n_outputs)
        ]
        self.arena = self._measure_arena()

    @classmethod
    def from_file(cls, path: Path, *, isolate: bool = True) -> TflmModel:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the .tflite file ({exc.strerror})") from exc
        return cls(data, source=str(path), isolate=isolate)

    def _build(self, arena: int) -> Any:
        """A TFLM interpreter for the model with a host arena of `arena` bytes."""
        runtime = _runtime()
        interp, error, text = _call_capturing(
            functools.partial(runtime.Interpreter.from_bytes, self.model_bytes, arena_size=arena)
        )
        if error is None:
            return interp
        detail = " ".join(text.split())[:400] or str(error)
        raise ModelError(f"{self.source}: the TFLM runtime cannot load the model: {detail}")

    def _invoke(self) -> None:
        _, error, text = _call_capturing(self._interpreter.invoke)
        if error is not None:
            detail = " ".join(text.split())[:400] or str(error)
            raise ModelError(f"{self.source}: TFLM inference failed: {detail}")

    def _measure_arena(self) -> ArenaUsage:
        for i, d in enumerate(self.input_details):
            neutral = np.full(d.shape, d.zero_point if d.quantized else 0, dtype=d.dtype)
            self._interpreter.set_input(neutral, i)
        self._invoke()
        _, error, text = _call_capturing(self._interpreter.print_allocations)
        if error is not None:
            raise ModelError(f"{self.source}: TFLM print_allocations() failed: {error}")
        usage = parse_allocations(text)
        self._interpreter.reset()
        return usage

    def invoke_raw(self, inputs: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
        """One inference on tensors already in the model's input dtypes; raw outputs."""
        if len(inputs) != self._n_inputs:
            raise DataError(
                f"{self.source}: the model takes {self._n_inputs} input(s), got {len(inputs)}"
            )
        for i, (x, d) in enumerate(zip(inputs, self.input_details, strict=True)):
            arr = np.asarray(x)
            if arr.dtype != np.dtype(d.dtype) or tuple(arr.shape) != d.shape:
                raise DataError(
                    f"{self.source}: input {i} must be {d.dtype} of shape {list(d.shape)}, "
                    f"got {arr.dtype} of shape {list(arr.shape)}"
                )
            self._interpreter.set_input(np.ascontiguousarray(arr), i)
        self._invoke()
        return [np.array(self._interpreter.get_output(i)) for i in range(self._n_outputs)]

    def run(self, x_float_batch: NDArray[Any], output_index: int = 0) -> NDArray[np.float32]:
        """Run every sample of a float batch through TFLM, one at a time; float outputs.

        Each sample is quantized with the input tensor's (scale, zero_point) exactly as
        `tinyops.optimize.quant.quantize` does, invoked alone (TFLM models have batch 1),
        and the chosen output is dequantized. Samples are independent: a stateful model
        (resource variables) is reset before each one. Returns shape (n, *output[1:]).
        """
        if self._n_inputs != 1:
            raise DataError(
                f"{self.source}: run() feeds single-input models; this one has "
                f"{self._n_inputs} inputs (use invoke_raw)"
            )
        if not 0 <= output_index < self._n_outputs:
            raise DataError(
                f"{self.source}: output_index {output_index} is out of range "
                f"(the model has {self._n_outputs} output(s))"
            )
        d_in = self.input_details[0]
        d_out = self.output_details[output_index]
        x = np.asarray(x_float_batch)
        sample_shape = d_in.shape[1:]
        per_sample = int(np.prod(sample_shape)) if sample_shape else 1
        if x.ndim == 0 or int(np.prod(x.shape[1:])) != per_sample:
            raise DataError(
                f"{self.source}: each input sample must have shape {list(sample_shape)} "
                f"({per_sample} values); got a batch of shape {list(x.shape)}"
            )
        out = np.empty((x.shape[0], *d_out.shape[1:]), dtype=np.float32)
        for n, sample in enumerate(x.reshape((x.shape[0], *d_in.shape))):
            if d_in.quantized:
                if d_in.dtype != "int8":
                    raise ModelError(
                        f"{self.source}: input quantized as {d_in.dtype}; "
                        "tinyops feeds int8-quantized or float32 inputs"
                    )
                tensor: NDArray[Any] = quantize(sample, d_in.scale, d_in.zero_point)
            else:
                tensor = sample.astype(d_in.dtype)
            if self._stateful:
                self._interpreter.reset()
            raw = self.invoke_raw([tensor])[output_index]
            if d_out.quantized:
                result = dequantize(raw, d_out.scale, d_out.zero_point)
            else:
                result = raw.astype(np.float32)
            out[n] = result.reshape(d_out.shape[1:])
        return out


def probe_registered_ops(
    builtin_codes: Sequence[int] | None = None, custom_codes: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Ask the installed TFLM runtime which operators its op resolver registers.

    For each candidate a two-operator model is built: the candidate, then a sentinel the
    resolver lacks. TFLM looks every operator up before preparing any, and stops at the
    first it cannot find, naming it. If the error names the sentinel the candidate was
    found; if it names the candidate it was not. No kernel is ever prepared or run, so the
    dummy tensors are never read. Returns (builtin names found, custom codes found).
    """
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    runtime = _runtime()
    names = builtin_operator_names()
    op = schema.BuiltinOperator
    not_probed = {op.CUSTOM, op.DELEGATE, op.PLACEHOLDER_FOR_GREATER_OP_CODES}
    if builtin_codes is None:
        builtin_codes = sorted(c for c in names if c not in not_probed)

    def model_with(candidate: Any, sentinel: Any) -> bytes:
        m = schema.ModelT()
        m.version = 3
        m.operatorCodes = [candidate, sentinel]
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], schema.TensorType.FLOAT32, 0, "t"
        sg = schema.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs = [t], [0], [0]
        sg.operators = []
        for index in (0, 1):
            o = schema.OperatorT()
            o.opcodeIndex, o.inputs, o.outputs = index, [0], [0]
            if index == 0 and candidate.builtinCode == op.VAR_HANDLE:
                # The Python wrapper reads VAR_HANDLE's shared name before building.
                o.builtinOptionsType = schema.BuiltinOptions.VarHandleOptions
                o.builtinOptions = schema.VarHandleOptionsT()
                o.builtinOptions.sharedName = "v"
            sg.operators.append(o)
        m.subgraphs, m.buffers = [sg], [schema.BufferT()]
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def code(builtin: int, custom: str | None = None) -> Any:
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        c.customCode = custom
        return c

    def error_text(model: bytes) -> str:
        _, _, text = _call_capturing(lambda: runtime.Interpreter.from_bytes(model))
        return text

    # A custom sentinel for builtin candidates, an unregistered builtin for custom ones, so
    # the name in the error always tells which of the two was missing.
    custom_sentinel = code(op.CUSTOM, "TINYOPS_PROBE_SENTINEL")
    found_builtin: list[str] = []
    for c in builtin_codes:
        text = error_text(model_with(code(c), custom_sentinel))
        if f"builtin opcode '{names[c]}'" not in text:
            found_builtin.append(names[c])
    sentinel_name = next(n for n in ("RFFT2D", "CONV_3D") if n not in found_builtin)
    builtin_sentinel = code(getattr(op, sentinel_name))
    found_custom = [
        c
        for c in custom_codes
        if f"builtin opcode '{sentinel_name}'"
        in error_text(model_with(code(op.CUSTOM, c), builtin_sentinel))
    ]
    return found_builtin, found_custom
