"""The five MLPerf Tiny int8 models: compiled C bit-exact with TFLM, RAM and flash figures.

Each model is compiled and built once per session (`builds`), run on 128 seeded random
inputs in one process of the generated program, and every output byte is compared with
the TFLM runtime's on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ci_env import require_fixtures
from compile_testlib import BitExactRun, bit_exact_run

from tinyops.compile import buffers_of
from tinyops.compile.planner import peak_live_bytes

pytestmark = pytest.mark.fixtures

MODELS = {
    "kws_ref_model": 24_272,
    "vww_96_int8": 103_680,
    "pretrainedResnet_quant": 55_984,
    "ad01_int8": 3_984,
    "str_ww_ref_model": 16_640,
}


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], BitExactRun]:
    cache: dict[str, BitExactRun] = {}

    def get(stem: str) -> BitExactRun:
        if stem not in cache:
            path = require_fixtures() / f"{stem}.tflite"
            name = stem.lower()
            cache[stem] = bit_exact_run(
                path.read_bytes(), name, tmp_path_factory.mktemp(name), source=str(path)
            )
        return cache[stem]

    return get


@pytest.mark.parametrize("stem", sorted(MODELS))
def test_bit_exact_with_tflm(stem: str, builds: Callable[[str], BitExactRun]) -> None:
    run = builds(stem)
    assert run.ours.shape == run.tflm.shape and run.ours.shape[0] >= 100
    assert run.mismatches() == 0, f"{run.mismatches()} of {run.ours.size} output bytes differ"
    # The comparison is not vacuous: outputs vary with the input.
    assert len({row.tobytes() for row in run.ours}) > 1


@pytest.mark.parametrize("stem", sorted(MODELS))
def test_peak_ram_below_the_tflm_arena(stem: str, builds: Callable[[str], BitExactRun]) -> None:
    run = builds(stem)
    c = run.compiled
    assert run.tflm_arena == MODELS[stem]  # the fixture README's figure, measured again
    # Arena + the caller's input and output buffers: TFLM's arena holds all three too.
    assert c.ram_bytes == c.arena_bytes + c.input_bytes + c.output_bytes
    assert c.ram_bytes < run.tflm_arena
    # No plan can beat the most bytes live at one time; greedy must not waste 2x that.
    live = peak_live_bytes(c.liveness.buffers)
    assert live <= c.arena_bytes <= 2 * live


@pytest.mark.parametrize("stem", sorted(MODELS))
def test_flash_within_model_size_plus_8k(stem: str, builds: Callable[[str], BitExactRun]) -> None:
    c = builds(stem).compiled
    model_bytes = (require_fixtures() / f"{stem}.tflite").stat().st_size
    assert c.const_bytes > 0.8 * sum(t.nbytes for t in c.graph.tensors if t.constant)
    assert c.flash_bytes <= model_bytes + 8 * 1024


def test_reshape_aliases_its_input(builds: Callable[[str], BitExactRun]) -> None:
    c = builds("kws_ref_model").compiled
    reshapes = [op for op in c.graph.operators if op.kind == "RESHAPE"]
    assert reshapes
    liveness = buffers_of(c.graph)
    for op in reshapes:
        assert liveness.buffer_of[op.inputs[0]] == liveness.buffer_of[op.outputs[0]]
    source = c.files[c.source]
    assert "aliased: the output is the input's bytes" in source
    assert "tinyops_copy(" not in source


def test_generated_library_files(builds: Callable[[str], BitExactRun], tmp_path: Path) -> None:
    c = builds("ad01_int8").compiled
    assert sorted(c.files) == [
        "tinyops_ad01_int8.c",
        "tinyops_ad01_int8.h",
        "tinyops_kernels.c",
        "tinyops_kernels.h",
    ]
    header = c.files["tinyops_ad01_int8.h"]
    assert "int tinyops_ad01_int8_invoke(const int8_t *in, int8_t *out);" in header
    assert "#define TINYOPS_AD01_INT8_INPUT_SIZE 640" in header
    source = c.files["tinyops_ad01_int8.c"]
    assert "malloc" not in source and f"static int8_t arena[{c.arena_bytes}]" in source
