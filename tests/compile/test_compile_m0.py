"""The compiled models on an emulated Cortex-M0: QEMU's microbit (nRF51822, 256 KB flash,
16 KB RAM as on the real part), bit-exact with TFLM.

The M0 (ARMv6-M) has no DSP extension and no 32x32→64 multiply, so this runs the plain C
path of every kernel, and the requantization's 64-bit product through libgcc. The models
that fit the board run 100 seeded random inputs each in one QEMU process; the ones that do
not fit fail to link with the linker's own message, which the tests pin (the reasons are in
docs/compiler.md). Skips without qemu-system-arm / arm-none-eabi-gcc, fails under CI=true.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from ci_env import require_fixtures
from compile_testlib import random_inputs
from test_compile_emulated import _tflm_outputs, require_qemu

from tinyops.compile import CompileError, compile_model, write_library
from tinyops.compile.emulate import build_firmware, run_qemu

pytestmark = pytest.mark.fixtures

INPUTS = 100


def _run_on_microbit(tflite: bytes, name: str, source: str, workdir: Path, seed: int) -> None:
    compiled = compile_model(tflite, name, source)
    lib = workdir / "lib"
    write_library(compiled, lib)
    elf = build_firmware(lib, name, workdir, machine="microbit")
    dis = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    # Thumb-1 only: no DSP multiply-accumulate, no long multiply (the M0 has neither).
    assert not any(op in dis for op in ("\tsmlad", "\tsmull", "\tsmlal", "\tsxtb16"))
    zp = compiled.graph.input.quant.zero_point if compiled.graph.input.quant else 0
    x = random_inputs((compiled.graph.input.elements,), zp, INPUTS, seed)
    ours = run_qemu(elf, x, compiled.graph.output.elements, machine="microbit")
    theirs = _tflm_outputs(tflite, source, x)
    assert int(np.count_nonzero(ours != theirs)) == 0
    assert len({row.tobytes() for row in ours}) > 1  # outputs depend on the input


@pytest.mark.parametrize("stem", ["kws_ref_model", "str_ww_ref_model"])
def test_models_that_fit_run_bit_exact_on_the_emulated_m0(stem: str, tmp_path: Path) -> None:
    require_qemu()
    path = require_fixtures() / f"{stem}.tflite"
    _run_on_microbit(path.read_bytes(), stem, str(path), tmp_path, seed=5)


@pytest.mark.slow
def test_digits_example_on_the_emulated_m0(tmp_path: Path) -> None:
    from test_compile_digits import _digits_model

    require_qemu()
    tflite, _ = _digits_model()
    _run_on_microbit(tflite, "digits", "digits.tflite", tmp_path, seed=13)


@pytest.mark.parametrize(
    ("stem", "name", "region"),
    [
        ("ad01_int8", "ad01_int8", "FLASH"),  # 264 KB of weights for 256 KB of flash
        ("pretrainedResnet_quant", "ic", "RAM"),  # a 49 KB arena for 16 KB of RAM
        ("vww_96_int8", "vww", "RAM"),  # the 27 KB input image alone
    ],
)
def test_models_that_do_not_fit_the_m0_fail_to_link(
    stem: str, name: str, region: str, tmp_path: Path
) -> None:
    require_qemu()
    path = require_fixtures() / f"{stem}.tflite"
    compiled = compile_model(path.read_bytes(), name, str(path))
    write_library(compiled, tmp_path / "lib")
    with pytest.raises(CompileError, match=f"region `{region}' overflowed|{region} overflowed"):
        build_firmware(tmp_path / "lib", name, tmp_path, machine="microbit")


def test_the_m0_has_no_hil_firmware(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="microbit: no 'hil' firmware"):
        build_firmware(tmp_path, "x", tmp_path, app="hil", machine="microbit")
