"""The compiled models on an emulated Cortex-M4: QEMU (mps2-an386) bit-exact with TFLM,
instruction counts with Unicorn, and the HIL runner against the emulated board's UART.

Each model is compiled, written and linked into AN386 firmware once per session
(`m4_builds`); the batch firmware runs all 100 inputs in ONE QEMU process and its outputs
are compared byte for byte with the TFLM runtime's. The Cortex-M4 build uses the DSP
(SMLAD) path; a second build of KWS with -DTINYOPS_NO_DSP holds the plain path to the
same bytes. Skips without qemu-system-arm / arm-none-eabi-gcc, fails under CI=true.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ci_env import in_ci, require_fixtures
from compile_testlib import random_inputs, require_arm_gcc
from numpy.typing import NDArray

from tinyops.compile import CompiledModel, CompileError, compile_model, write_library
from tinyops.compile.emulate import build_firmware, qemu_command, run_qemu
from tinyops.compile.hil import HilRunner, encode_frame
from tinyops.compile.icount import count_instructions, estimate_for_board

pytestmark = pytest.mark.fixtures

MODELS = [
    "kws_ref_model",
    "vww_96_int8",
    "pretrainedResnet_quant",
    "ad01_int8",
    "str_ww_ref_model",
]
INPUTS = 100
# Cortex-M4 instructions per KWS inference, DSP path: the goal is 9.0 M. Measured
# 8.79 M with -O2 (the default build) and 8.78 M with -O3: both must meet it.
KWS_GOAL = 9_000_000


def require_qemu() -> None:
    require_arm_gcc()
    if shutil.which("qemu-system-arm") is None:
        msg = "qemu-system-arm not installed (apt-get install qemu-system-arm)"
        if in_ci():
            pytest.fail(msg + " (CI=true: the emulator is required)")
        pytest.skip(msg)


@dataclass
class M4Build:
    compiled: CompiledModel
    lib: Path
    elf: Path
    inputs: NDArray[np.int8]
    tflm: NDArray[np.int8]


def _tflm_outputs(tflite: bytes, source: str, x: NDArray[np.int8]) -> NDArray[np.int8]:
    from tinyops.targets.tflm import TflmModel

    tflm = TflmModel(tflite, source=source)
    shape = tflm.input_details[0].shape
    out = np.stack([tflm.invoke_raw([xi.reshape(shape)])[0].reshape(-1) for xi in x])
    return out.astype(np.int8)


def _build(tflite: bytes, name: str, source: str, workdir: Path, seed: int) -> M4Build:
    compiled = compile_model(tflite, name, source)
    lib = workdir / "lib"
    write_library(compiled, lib)
    elf = build_firmware(lib, name, workdir)
    x_zp = compiled.graph.input.quant.zero_point if compiled.graph.input.quant else 0
    x = random_inputs((compiled.graph.input.elements,), x_zp, INPUTS, seed)
    return M4Build(compiled, lib, elf, x, _tflm_outputs(tflite, source, x))


@pytest.fixture(scope="session")
def m4_builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], M4Build]:
    cache: dict[str, M4Build] = {}

    def get(stem: str) -> M4Build:
        require_qemu()
        if stem not in cache:
            path = require_fixtures() / f"{stem}.tflite"
            workdir = tmp_path_factory.mktemp(f"m4_{stem}")
            cache[stem] = _build(path.read_bytes(), stem.lower(), str(path), workdir, seed=7)
        return cache[stem]

    return get


@pytest.mark.parametrize("stem", MODELS)
def test_emulated_m4_bit_exact_with_tflm(stem: str, m4_builds: Callable[[str], M4Build]) -> None:
    b = m4_builds(stem)
    ours = run_qemu(b.elf, b.inputs, b.compiled.graph.output.elements)
    assert ours.shape == b.tflm.shape == (INPUTS, b.compiled.graph.output.elements)
    mismatches = int(np.count_nonzero(ours != b.tflm))
    assert mismatches == 0, f"{mismatches} of {ours.size} output bytes differ from TFLM"
    assert len({row.tobytes() for row in ours}) > 1  # outputs depend on the input


def test_plain_path_equals_the_dsp_path(
    m4_builds: Callable[[str], M4Build], tmp_path: Path
) -> None:
    b = m4_builds("kws_ref_model")
    plain = build_firmware(b.lib, b.compiled.name, tmp_path, extra_flags=["-DTINYOPS_NO_DSP"])
    dis = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(plain)], capture_output=True, text=True, check=True
    ).stdout
    dsp = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(b.elf)], capture_output=True, text=True, check=True
    ).stdout
    assert "smlad" not in dis and "smlad" in dsp  # two different code paths...
    ours = run_qemu(plain, b.inputs, b.compiled.graph.output.elements)
    assert np.array_equal(ours, b.tflm)  # ...the same bytes


@pytest.mark.slow
def test_digits_example_on_emulated_m4(tmp_path: Path) -> None:
    from test_compile_digits import _digits_model

    require_qemu()
    tflite, _ = _digits_model()
    b = _build(tflite, "digits", "digits.tflite", tmp_path, seed=11)
    ours = run_qemu(b.elf, b.inputs, b.compiled.graph.output.elements)
    assert np.array_equal(ours, b.tflm)


def test_block_counting_is_exact(m4_builds: Callable[[str], M4Build]) -> None:
    b = m4_builds("ad01_int8")
    out_size = b.compiled.graph.output.elements
    fast = count_instructions(b.elf, b.compiled.name, b.inputs[:1], out_size)
    slow = count_instructions(b.elf, b.compiled.name, b.inputs[:1], out_size, per_instruction=True)
    assert fast.instructions == slow.instructions
    assert fast.instructions[0] > 100_000
    assert np.array_equal(fast.outputs, b.tflm[:1])


def test_kws_instructions_per_inference(
    m4_builds: Callable[[str], M4Build], tmp_path: Path
) -> None:
    b = m4_builds("kws_ref_model")
    out_size = b.compiled.graph.output.elements
    run = count_instructions(b.elf, b.compiled.name, b.inputs[:3], out_size)
    again = count_instructions(b.elf, b.compiled.name, b.inputs[:1], out_size)
    # The counted run computed the same bytes as QEMU and TFLM; counting is deterministic.
    assert np.array_equal(run.outputs, b.tflm[:3])
    assert again.instructions[0] == run.instructions[0]
    assert all(5_000_000 < n <= KWS_GOAL for n in run.instructions), run.instructions
    o3 = build_firmware(b.lib, b.compiled.name, tmp_path, extra_flags=["-O3"])
    fast = count_instructions(o3, b.compiled.name, b.inputs[:3], out_size)
    assert np.array_equal(fast.outputs, b.tflm[:3])
    assert all(n <= KWS_GOAL for n in fast.instructions), fast.instructions
    est = estimate_for_board(run.instructions[0], "nano33ble")
    assert est.latency_ms == pytest.approx(1000 * run.instructions[0] / 64_000_000)
    assert est.energy_uj == pytest.approx(est.latency_ms * 9.9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _connect(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 30.0) -> HilRunner:
    # QEMU opens its listening socket a moment after starting: poll until it accepts.
    end = time.monotonic() + deadline_s
    while True:
        try:
            return HilRunner(url, timeout_s=60.0)
        except CompileError:
            if proc.poll() is not None or time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_hil_runner_drives_the_emulated_uart(
    m4_builds: Callable[[str], M4Build], tmp_path: Path
) -> None:
    b = m4_builds("ad01_int8")
    elf = build_firmware(b.lib, b.compiled.name, tmp_path, app="hil")
    port = _free_port()
    proc = subprocess.Popen(
        qemu_command(elf, f"tcp:127.0.0.1:{port},server=on,wait=on"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with _connect(f"socket://127.0.0.1:{port}", proc) as runner:
            info = runner.info()
            assert (info.input_size, info.output_size) == (640, 640)
            assert info.arena_bytes == b.compiled.arena_bytes
            for i in range(3):
                result = runner.run(b.inputs[i])
                assert result.status == 0 and result.cycles == 0  # QEMU has no DWT counter
                assert np.array_equal(result.output, b.tflm[i])
            # A corrupted frame is refused, and the link still works afterwards.
            frame = bytearray(encode_frame(b"R", b.inputs[0].tobytes()))
            frame[-1] ^= 0xFF
            with pytest.raises(CompileError, match="bad CRC"):
                runner.transact(bytes(frame))
            with pytest.raises(CompileError, match="bad length"):
                runner.exchange(b"R", b"\x00\x01")
            assert np.array_equal(runner.run(b.inputs[5]).output, b.tflm[5])
            runner.quit()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
