"""The golden-vector self-test a release must pass on the device before it is committed.

A bundle carries K int8 input tensors and the int8 outputs the validated model produced for
them on the host (`tinyops.bundle.golden`). The device runs each input through its own
TFLite runtime and compares every output element with the recorded one: a difference of
more than `tolerance` int8 steps in any element fails that vector, and one failed vector
fails the test. This catches a model the device's runtime does not execute as the host did
(missing or different kernels, a corrupted file) before it replaces a working release.

Two runtimes, same verdict format:

    LiteRtSelfTest   ai_edge_litert's Interpreter with the builtin op resolver and no
                     default delegates (XNNPACK off), i.e. the reference int8 kernels
    TflmSelfTest     the TFLite Micro runtime (`tinyops.targets.tflm.TflmModel`), the
                     interpreter microcontrollers run

Results are cached by the bundle's sha256 (identical bytes, identical result), and loaded
models are kept for the latency probe the telemetry uses: a simulated fleet runs the same
bundle on thousands of devices and pays for one run.
"""

from __future__ import annotations

import abc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from tinyops.bundle.golden import GoldenVectors
from tinyops.errors import BundleError, DataError, ModelError

MODEL_FILE: Final = "model.tflite"
# Results and loaded models kept per runtime (distinct bundles; a device needs 2).
DEFAULT_CACHE_ENTRIES: Final = 16

Invoke = Callable[[NDArray[np.int8]], NDArray[Any]]


@dataclass(frozen=True)
class SelfTestResult:
    """The verdict of one self-test."""

    passed: bool
    vectors: int
    """Golden vectors run (0 if the model could not be run at all)."""
    failed: int
    """Vectors with at least one output element off by more than `tolerance`."""
    max_error: int
    """Largest |device - golden| over all output elements, in int8 steps."""
    tolerance: int
    """Largest accepted difference per element, in int8 steps."""
    runtime: str
    """litert or tflm."""
    reason: str | None = None
    """Why it failed, as reported to the server; None when it passed."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_outputs(
    expected: NDArray[np.int8], actual: NDArray[Any], tolerance: int
) -> tuple[int, int]:
    """(vectors off by more than `tolerance` in any element, largest difference in int8 steps).

    Both arrays are (K, *output_shape); differences are taken in int32 so that -128 - 127
    does not wrap around.
    """
    if expected.shape != actual.shape:
        raise ValueError(f"expected outputs {expected.shape} but got {actual.shape}")
    diff = np.abs(expected.astype(np.int32) - actual.astype(np.int32)).reshape(len(expected), -1)
    per_vector = diff.max(axis=1)
    return int(np.count_nonzero(per_vector > tolerance)), int(per_vector.max())


def judge(golden: GoldenVectors, actual: NDArray[Any], runtime: str) -> SelfTestResult:
    """The verdict for outputs `actual` (K, *output_shape) against the golden outputs."""
    failed, max_error = compare_outputs(golden.outputs, actual, golden.tolerance)
    reason = None
    if failed:
        reason = (
            f"self-test failed: {failed}/{golden.count} golden vectors off by more than "
            f"{golden.tolerance} (largest difference {max_error} int8 steps, {runtime})"
        )
    return SelfTestResult(
        passed=failed == 0,
        vectors=golden.count,
        failed=failed,
        max_error=max_error,
        tolerance=golden.tolerance,
        runtime=runtime,
        reason=reason,
    )


class SelfTest(Protocol):
    """Runs a verified bundle's golden vectors; the agent's only contact with a runtime."""

    async def run(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        """The self-test verdict for the bundle with this sha256 and these files."""
        ...

    async def latency_ms(self, sha256: str, files: Mapping[str, bytes]) -> float | None:
        """Milliseconds of one inference on the first golden input; None if it cannot run."""
        ...


class _RuntimeSelfTest(abc.ABC):
    """Caching and verdicts shared by the runtimes; subclasses only load a model."""

    runtime = ""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._results: OrderedDict[str, SelfTestResult] = OrderedDict()
        self._models: OrderedDict[str, Invoke] = OrderedDict()
        # Interpreters are not thread-safe; one agent thread at a time uses them.
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _load(self, tflite: bytes, source: str) -> Invoke:
        """Load the model in this runtime; the result runs one int8 input tensor."""

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _model(self, sha256: str, files: Mapping[str, bytes]) -> Invoke:
        found = self._models.get(sha256)
        if found is not None:
            self._models.move_to_end(sha256)
            return found
        if MODEL_FILE not in files:
            raise BundleError(f"bundle {sha256[:16]} has no {MODEL_FILE}")
        loaded = self._load(files[MODEL_FILE], f"bundle {sha256[:16]}: {MODEL_FILE}")
        self._remember(self._models, sha256, loaded)
        return loaded

    def _failure(self, reason: str, vectors: int = 0, tolerance: int = 0) -> SelfTestResult:
        return SelfTestResult(
            passed=False,
            vectors=vectors,
            failed=vectors,
            max_error=0,
            tolerance=tolerance,
            runtime=self.runtime,
            reason=f"self-test failed: {reason}",
        )

    def run_sync(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        """The verdict, computed in the calling thread (cached by sha256)."""
        with self._lock:
            cached = self._results.get(sha256)
            if cached is not None:
                return cached
            try:
                golden = GoldenVectors.from_files(files)
            except BundleError as exc:
                return self._failure(f"golden vectors unreadable: {exc}")
            try:
                invoke = self._model(sha256, files)
                outputs = np.stack([np.asarray(invoke(x)) for x in golden.inputs])
            except (BundleError, ModelError, DataError, ValueError, RuntimeError) as exc:
                result = self._failure(
                    f"the {self.runtime} runtime cannot run the model: {exc}",
                    golden.count,
                    golden.tolerance,
                )
            else:
                if outputs.shape != golden.outputs.shape:
                    result = self._failure(
                        f"the model gives outputs of shape {list(outputs.shape[1:])}, the golden "
                        f"vectors have {list(golden.output_shape)}",
                        golden.count,
                        golden.tolerance,
                    )
                else:
                    result = judge(golden, outputs, self.runtime)
            self._remember(self._results, sha256, result)
            return result

    async def run(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        # Run inline: a few golden vectors of a microcontroller-sized model take
        # milliseconds, and the result is cached for every later call with this sha256.
        return self.run_sync(sha256, files)

    async def latency_ms(self, sha256: str, files: Mapping[str, bytes]) -> float | None:
        with self._lock:
            try:
                golden = GoldenVectors.from_files(files)
                invoke = self._model(sha256, files)
                start = time.perf_counter()
                invoke(golden.inputs[0])
                elapsed_s = time.perf_counter() - start
            except (BundleError, ModelError, DataError, ValueError, RuntimeError):
                return None
        return elapsed_s * 1000.0


class LiteRtSelfTest(_RuntimeSelfTest):
    """Golden vectors through ai_edge_litert's reference kernels (no delegates, 1 thread)."""

    runtime = "litert"

    def _load(self, tflite: bytes, source: str) -> Invoke:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            interpreter = Interpreter(
                model_content=bytes(tflite),
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                num_threads=1,
            )
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{source}: LiteRT cannot load the model: {exc}") from exc
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{source}: expected one input and one output tensor, got {len(inputs)} and "
                f"{len(outputs)}"
            )
        in_index, out_index = inputs[0]["index"], outputs[0]["index"]
        in_shape = tuple(int(d) for d in inputs[0]["shape"])
        in_dtype = np.dtype(inputs[0]["dtype"])

        def invoke(x: NDArray[np.int8]) -> NDArray[Any]:
            if tuple(x.shape) != in_shape or x.dtype != in_dtype:
                raise DataError(
                    f"{source}: golden input is {x.dtype} of shape {list(x.shape)}, the model "
                    f"takes {in_dtype} of shape {list(in_shape)}"
                )
            interpreter.set_tensor(in_index, np.ascontiguousarray(x))
            interpreter.invoke()
            return np.array(interpreter.get_tensor(out_index))

        return invoke


class TflmSelfTest(_RuntimeSelfTest):
    """Golden vectors through the TFLite Micro runtime, as a microcontroller runs them."""

    runtime = "tflm"

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES, *, isolate: bool = False) -> None:
        super().__init__(max_entries)
        # isolate=True first loads the model in a child process, so a malformed model that
        # crashes TFLM kills the child, not the agent. Off by default: the bundle is signed
        # and verified, and a crash would be caught by the trial's crash-loop revert anyway.
        self.isolate = isolate

    def _load(self, tflite: bytes, source: str) -> Invoke:
        from tinyops.targets.tflm import TflmModel

        model = TflmModel(tflite, source=source, isolate=self.isolate)
        if len(model.input_details) != 1 or len(model.output_details) != 1:
            raise ModelError(
                f"{source}: expected one input and one output tensor, got "
                f"{len(model.input_details)} and {len(model.output_details)}"
            )

        def invoke(x: NDArray[np.int8]) -> NDArray[Any]:
            (out,) = model.invoke_raw([x])
            return out

        return invoke


__all__ = [
    "MODEL_FILE",
    "LiteRtSelfTest",
    "SelfTest",
    "SelfTestResult",
    "TflmSelfTest",
    "compare_outputs",
    "judge",
]
