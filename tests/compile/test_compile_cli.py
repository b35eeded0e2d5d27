"""`tinyops compile`: the C library written atomically, figures printed, bad input refused
with a message and a non-zero exit, nothing written. Runs `main()` in a fresh interpreter,
as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ci_env import require_fixtures
from compile_testlib import ModelBuilder, fc_model, require_gcc

from tinyops.compile import build_host_runner, run_host


def tinyops(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "tinyops.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.mark.fixtures
def test_compile_kws_prints_ram_against_tflm_and_writes_the_library(tmp_path: Path) -> None:
    model = require_fixtures() / "kws_ref_model.tflite"
    dest = tmp_path / "kws_c"
    result = tinyops("compile", model, "--target", "nucleo-l4r5zi", "-o", dest, "--name", "kws")
    assert result.returncode == 0, result.stderr
    assert "of TFLM's arena, 24,272 B" in result.stdout
    assert "peak RAM" in result.stdout and "flash (estimate)" in result.stdout
    assert sorted(p.name for p in dest.iterdir()) == [
        "tinyops_kernels.c",
        "tinyops_kernels.h",
        "tinyops_kws.c",
        "tinyops_kws.h",
    ]
    # No temporary folders are left beside the library.
    assert [p.name for p in tmp_path.iterdir()] == ["kws_c"]


def test_compile_json_and_the_written_library_runs(tmp_path: Path) -> None:
    require_gcc()
    model = tmp_path / "tiny-fc.tflite"
    model.write_bytes(fc_model())
    dest = tmp_path / "out"
    result = tinyops("compile", model, "-o", dest, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "tiny_fc" and report["board"] == "nano33ble"
    assert report["ram_bytes"] == report["arena_bytes"] + 4 + 2
    assert report["tflm_arena_bytes"] > 0
    exe = build_host_runner(dest, "tiny_fc", tmp_path)
    assert run_host(exe, np.array([[2, 0, 0, 0]], dtype=np.int8), 2).tolist() == [[1, 2]]
    # Compiling again replaces the library whole.
    (dest / "stale.txt").write_text("old")
    assert tinyops("compile", model, "-o", dest).returncode == 0
    assert not (dest / "stale.txt").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short to be a .tflite model"),
        (b"\x00" * 64, "not a TFLite model"),
        ("unsupported", "unsupported operator(s): operator 1 (TANH)"),
        ("hybrid", "hybrid model"),
    ],
)
def test_bad_models_exit_non_zero_and_write_nothing(
    tmp_path: Path, content: bytes | str, message: str
) -> None:
    named = {"unsupported": fc_model(extra_op="TANH"), "hybrid": fc_model("float32")}
    data = named[content] if isinstance(content, str) else content
    model = tmp_path / "bad.tflite"
    model.write_bytes(data)
    dest = tmp_path / "out"
    result = tinyops("compile", model, "-o", dest)
    assert result.returncode == 1
    assert "error:" in result.stderr and message in " ".join(result.stderr.split())
    assert str(model) in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


def test_missing_file_unknown_board_and_ram_overflow(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    missing = tinyops("compile", tmp_path / "nope.tflite", "-o", dest)
    assert missing.returncode == 1 and "cannot read the .tflite file" in missing.stderr
    model = tmp_path / "m.tflite"
    model.write_bytes(fc_model())
    board = tinyops("compile", model, "-o", dest, "--target", "no-such-board")
    assert board.returncode == 2 and "unknown board 'no-such-board'" in board.stderr
    # A model whose arena exceeds the board's SRAM (pico: 264 KB) is refused before writing.
    b = ModelBuilder()
    x = b.tensor([1, 1, 1, 1])
    big = [b.tensor([1, 1, 1, 200_000]) for _ in range(2)]
    w = b.tensor([200_000, 1, 1, 1], "int8", np.ones((200_000, 1, 1, 1), np.int8), scale=[0.1])
    y = b.tensor([1, 1, 1, 1])
    opts = b.s.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = 1, 1, 1
    opts.dilationHFactor = opts.dilationWFactor = 1
    b.op("CONV_2D", [x, w, -1], [big[0]], opts, "Conv2DOptions")
    pool = b.s.Pool2DOptionsT()
    pool.padding, pool.strideH, pool.strideW, pool.filterHeight, pool.filterWidth = 1, 1, 1, 1, 1
    b.op("MAX_POOL_2D", [big[0]], [big[1]], pool, "Pool2DOptions")
    wf = b.tensor([1, 200_000], "int8", np.ones((1, 200_000), np.int8), scale=[0.1])
    b.op(
        "FULLY_CONNECTED",
        [big[1], wf, -1],
        [y],
        b.s.FullyConnectedOptionsT(),
        "FullyConnectedOptions",
    )
    model.write_bytes(b.to_bytes([x], [y]))
    over = tinyops("compile", model, "-o", dest, "--target", "pico")
    text = " ".join(over.stderr.split())
    assert over.returncode == 1 and "bytes of RAM" in text and "pico has" in text
    assert not dest.exists()
