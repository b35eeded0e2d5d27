"""The golden-vector self-test through real runtimes (LiteRT and TFLite Micro)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_agent_support import GOLDEN_INPUTS, GOLDEN_OUTPUTS, golden_for, tiny_fc_model

from tinyops.bundle.golden import GoldenVectors
from tinyops.fleet.agent.selftest import (
    LiteRtSelfTest,
    SelfTestResult,
    TflmSelfTest,
    compare_outputs,
    judge,
)
from tinyops.store.atomic import sha256_bytes

RUNTIMES = [LiteRtSelfTest, TflmSelfTest]


def files_for(golden: GoldenVectors, model: bytes | None = None) -> dict[str, bytes]:
    return {"model.tflite": model if model is not None else tiny_fc_model(), **golden.to_files()}


def run(selftest: LiteRtSelfTest | TflmSelfTest, files: dict[str, bytes]) -> SelfTestResult:
    key = sha256_bytes(b"".join(files[k] for k in sorted(files)))
    return asyncio.run(selftest.run(key, files))


def test_compare_outputs_counts_vectors_beyond_tolerance() -> None:
    expected = np.array([[[0, 10]], [[-128, 127]], [[5, 5]]], np.int8)
    actual = np.array([[[1, 10]], [[127, 127]], [[5, 7]]], np.int8)
    # Differences per vector: 1, 255 (no int8 wrap-around), 2.
    assert compare_outputs(expected, actual, tolerance=1) == (2, 255)
    assert compare_outputs(expected, actual, tolerance=2) == (1, 255)
    assert compare_outputs(expected, expected, tolerance=0) == (0, 0)


def test_judge_reason_names_the_count_and_the_tolerance() -> None:
    golden = GoldenVectors(GOLDEN_INPUTS, GOLDEN_OUTPUTS, (0.5, 0), (1.0, 0), tolerance=1)
    off = GOLDEN_OUTPUTS.copy()
    off[1, 0, 0] += 3
    result = judge(golden, off, "litert")
    assert not result.passed
    assert (result.vectors, result.failed, result.max_error) == (3, 1, 3)
    assert result.reason == (
        "self-test failed: 1/3 golden vectors off by more than 1 "
        "(largest difference 3 int8 steps, litert)"
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_good_golden_vectors_pass(runtime: type[LiteRtSelfTest]) -> None:
    golden = GoldenVectors(GOLDEN_INPUTS, GOLDEN_OUTPUTS, (0.5, 0), (1.0, 0), tolerance=0)
    result = run(runtime(), files_for(golden))
    assert result.passed, result.reason
    assert (result.vectors, result.failed, result.max_error) == (3, 0, 0)
    assert result.runtime == runtime.runtime


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_altered_golden_vectors_fail(runtime: type[LiteRtSelfTest]) -> None:
    outputs = GOLDEN_OUTPUTS.copy()
    outputs[0, 0, 1] += 2
    outputs[2, 0, 0] -= 5
    golden = GoldenVectors(GOLDEN_INPUTS, outputs, (0.5, 0), (1.0, 0), tolerance=1)
    result = run(runtime(), files_for(golden))
    assert not result.passed
    assert (result.failed, result.max_error) == (2, 5)
    assert result.reason is not None
    assert result.reason.startswith("self-test failed: 2/3 golden vectors off by more than 1")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_model_that_cannot_run_fails_the_test(runtime: type[LiteRtSelfTest]) -> None:
    golden = golden_for(tiny_fc_model(), GOLDEN_INPUTS)
    result = run(runtime(), files_for(golden, model=b"TFL3 this is not a model" * 8))
    assert not result.passed
    assert result.reason is not None
    assert f"the {runtime.runtime} runtime cannot run the model" in result.reason


def test_golden_shape_that_does_not_fit_the_model_fails() -> None:
    inputs = np.zeros((2, 1, 5), np.int8)
    golden = GoldenVectors(inputs, np.zeros((2, 1, 2), np.int8), (0.5, 0), (1.0, 0), 1)
    result = run(LiteRtSelfTest(), files_for(golden))
    assert not result.passed
    assert result.reason is not None and "of shape [1, 5]" in result.reason


def test_results_are_cached_by_sha256() -> None:
    selftest = LiteRtSelfTest(max_entries=2)
    golden = GoldenVectors(GOLDEN_INPUTS, GOLDEN_OUTPUTS, (0.5, 0), (1.0, 0), tolerance=0)
    first = asyncio.run(selftest.run("1" * 64, files_for(golden)))
    # Same sha256: the cached verdict, even if the files given now differ.
    bad = dataclasses.replace(golden, outputs=GOLDEN_OUTPUTS + np.int8(9))
    again = asyncio.run(selftest.run("1" * 64, files_for(bad)))
    assert again is first and again.passed
    assert not asyncio.run(selftest.run("2" * 64, files_for(bad))).passed


def test_latency_is_measured_on_a_golden_input() -> None:
    golden = GoldenVectors(GOLDEN_INPUTS, GOLDEN_OUTPUTS, (0.5, 0), (1.0, 0), tolerance=0)
    latency = asyncio.run(LiteRtSelfTest().latency_ms("3" * 64, files_for(golden)))
    assert latency is not None and 0.0 < latency < 1000.0
    broken = asyncio.run(LiteRtSelfTest().latency_ms("4" * 64, {"model.tflite": b"x"}))
    assert broken is None


@pytest.mark.fixtures
def test_kws_model_passes_on_both_runtimes(mlperf_dir: Path) -> None:
    """MLPerf Tiny KWS: goldens from LiteRT, replayed by LiteRT and TFLM within 1 step."""
    model = (mlperf_dir / "kws_ref_model.tflite").read_bytes()
    inputs = np.random.default_rng(3).integers(-128, 128, size=(4, 1, 49, 10, 1), dtype=np.int8)
    from test_agent_support import litert_outputs

    golden = GoldenVectors(
        inputs, litert_outputs(model, inputs), (0.5847029089927673, 83), (0.00390625, -128), 1
    )
    files = files_for(golden, model=model)
    for runtime in RUNTIMES:
        result = run(runtime(), files)
        assert result.passed, result.reason
        assert result.vectors == 4
