"""Feature blocks as C (compile/features.py) against the Python blocks they repeat.

Each block is emitted from a fitted one-block pipeline, built with gcc under the strict
flags (plus -pedantic and -Wdouble-promotion for the float build), run on seeded random
inputs, and compared with `FittedPipeline.transform`: the default float build within the
block's documented tolerance (`TOLERANCES`), the double build bit for bit for the
element-wise blocks and copies. Then whole pipelines on real inputs: the digits example's
pipeline on the scikit-learn images, and an MFCC + standardize pipeline on a synthetic
spoken-like clip (voiced harmonics under a moving formant, with noise), quantized straight
into an int8 model input.
"""

from __future__ import annotations

import math
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from compile_testlib import fc_model, require_arm_gcc, require_gcc
from numpy.typing import NDArray

from tinyops.compile import CompileError, compile_model
from tinyops.compile.features import (
    FeatureCode,
    build_host_feature_runner,
    emit_features,
    run_features,
    tolerance_for,
)
from tinyops.compile.layout import bundle_members, library_files
from tinyops.compile.toolchain import write_library
from tinyops.features import FeaturePipeline, FittedPipeline
from tinyops.optimize.quant import quantize

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits" / "tinyops.yaml"
Gen = Callable[[np.random.Generator, int], NDArray[Any]]


def _normal(shape: tuple[int, ...], scale: float = 1.0, loc: float = 0.0) -> Gen:
    return lambda r, n: (r.standard_normal((n, *shape)) * scale + loc).astype(np.float32)


def _pixels(shape: tuple[int, ...], top: int = 256) -> Gen:
    return lambda r, n: r.integers(0, top, (n, *shape)).astype(np.float32)


# (id, blocks, sample rate, raw sample generator)
BLOCKS: list[tuple[str, list[dict[str, Any]], int | None, Gen]] = [
    ("scale", [{"block": "scale", "mul": 0.0625, "add": -0.5}], None, _pixels((8, 8, 1), 17)),
    ("standardize_last", [{"block": "standardize"}], None, _normal((10, 4), 5.0, 3.0)),
    ("standardize_sample", [{"block": "standardize", "axis": "sample"}], None, _normal((6,))),
    (
        "minmax_all_clip",
        [{"block": "minmax", "axis": "all", "clip": True}],
        None,
        _normal((5, 3), 2.0),
    ),
    ("window", [{"block": "window", "length": 64, "stride": 32}], None, _normal((300, 2))),
    ("band_power_fft", [{"block": "fft_band_power", "bands": 8}], None, _normal((4, 128), 3.0)),
    (
        "band_power_dft_log",
        [
            {
                "block": "fft_band_power",
                "edges_hz": [0, 50, 120, 300, 500],
                "log": True,
                "channels_last": True,
            }
        ],
        1000,
        _normal((100, 3)),
    ),
    (
        "log_mel_dft",
        [{"block": "log_mel", "frame_length": 400, "frame_step": 160, "fft_length": 480}],
        16000,
        _normal((4000,), 0.3),
    ),
    ("mfcc_fft", [{"block": "mfcc", "num_coefficients": 13}], 16000, _normal((16000,), 3000.0)),
    ("image_resize", [{"block": "image_resize", "size": [16, 12]}], None, _pixels((30, 40, 3))),
    ("grayscale", [{"block": "grayscale", "keep_channel_axis": False}], None, _pixels((7, 9, 3))),
    (
        "image_normalize",
        [{"block": "image_normalize", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}],
        None,
        _pixels((6, 5, 3)),
    ),
    (
        "reshape_cast",
        [{"block": "reshape", "shape": [-1]}, {"block": "cast_float"}],
        None,
        _pixels((4, 3)),
    ),
]
FFT_BLOCKS = {"fft_band_power", "log_mel", "mfcc"}


def _library(fitted: FittedPipeline, name: str, workdir: Path, q: tuple[float, int] | None) -> Path:
    code = emit_features(fitted, name, q)
    lib = workdir / f"lib_{name}"
    lib.mkdir()
    for fname, text in code.files.items():
        (lib / fname).write_text(text)
    return lib


def _errors(ours: NDArray[Any], ref: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Absolute error per value, and the scale of its sample (largest |reference|)."""
    err = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    scale = np.abs(ref.astype(np.float64)).max(axis=1, keepdims=True)
    return err, np.broadcast_to(scale, err.shape)


@pytest.mark.parametrize(("case", "blocks", "rate", "gen"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_block_matches_python(
    case: str, blocks: list[dict[str, Any]], rate: int | None, gen: Gen, tmp_path: Path
) -> None:
    require_gcc()
    rng = np.random.default_rng(zlib.crc32(case.encode()))  # stable across runs
    fitted = FeaturePipeline(blocks, sample_rate=rate).fit(gen(rng, 64))
    x = gen(rng, 24)
    ref = fitted.transform(x).reshape(len(x), -1)
    lib = _library(fitted, "feat", tmp_path, None)
    ours = run_features(build_host_feature_runner(lib, "feat", tmp_path), x, ref.shape[1])
    exact = run_features(
        build_host_feature_runner(lib, "feat", tmp_path, double=True), x, ref.shape[1]
    )
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    cfg = fitted.pipeline.blocks[-1]
    tol = tolerance_for(cfg)
    err, scale = _errors(ours, ref)
    bound = tol.abs + tol.rel * scale
    assert (err <= bound).all(), f"{case}: max error {err.max():.3g}, bound {bound.max():.3g}"
    if cfg.block in FFT_BLOCKS:
        # The double build differs from NumPy's FFT only in summation order.
        derr, dscale = _errors(exact, ref)
        assert (derr <= 2**-20 * dscale + 1e-12).all(), f"{case}: double {derr.max():.3g}"
    else:
        assert np.array_equal(exact, ref), f"{case}: the double build is not bit-exact"


def test_digits_example_features_quantize_into_the_model_input(tmp_path: Path) -> None:
    """The example project's pipeline on the real digits: the int8 model input, byte for
    byte, as the bundle's golden vectors are made (quantize(transform(x)))."""
    from sklearn.datasets import load_digits

    require_gcc()
    project = yaml.safe_load(EXAMPLE.read_text())
    images = load_digits().images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), 0..16
    fitted = FeaturePipeline(project["features"]["blocks"]).fit(images[:1200])
    q = (1 / 255, -128)  # what the int8 converter picks for inputs in [0, 1]
    lib = _library(fitted, "digits", tmp_path, q)
    exe = build_host_feature_runner(lib, "digits", tmp_path)
    ours = run_features(exe, images, 64, quantized=True)
    theirs = quantize(fitted.transform(images).reshape(len(images), -1), *q)
    # Pixel 8 → 0.5 → 127.5 / scale is a .5 tie: the double quantize step rounds it as Python.
    assert (fitted.transform(images) == 0.5).any()
    assert np.array_equal(ours, theirs)
    assert len(np.unique(ours)) == 17  # every pixel level 0..16 reaches its own code


def spoken_like(n: int, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> NDArray[Any]:
    """Synthetic voiced clips: harmonics of a gliding pitch, shaped by a moving formant,
    an amplitude envelope and background noise, as int16-range float samples."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for _ in range(n):
        f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        formant = rng.uniform(500, 900) * (1 + 0.5 * t)
        voice = sum(
            np.exp(-(((h * f0 - formant) / 400) ** 2)) * np.sin(h * phase) / h for h in range(1, 25)
        )
        envelope = np.clip(np.sin(np.pi * t / seconds) * 1.5, 0, 1)
        noise = rng.standard_normal(t.size) * 0.01
        clips.append((voice * envelope + noise) * 8000)
    return np.asarray(clips, dtype=np.float32)


def test_audio_mfcc_pipeline_on_spoken_like_clips(tmp_path: Path) -> None:
    require_gcc()
    fitted = FeaturePipeline(
        [{"block": "mfcc", "num_coefficients": 10}, {"block": "standardize"}], sample_rate=16000
    ).fit(spoken_like(12, seed=1))
    clips = np.concatenate(
        [spoken_like(6, seed=2), _normal((16000,), 2000.0)(np.random.default_rng(3), 2)]
    )
    ref = fitted.transform(clips).reshape(len(clips), -1)
    assert ref.shape == (8, 49 * 10)
    q = (0.05, 3)
    lib = _library(fitted, "kws", tmp_path, q)
    exe = build_host_feature_runner(lib, "kws", tmp_path)
    ours = run_features(exe, clips, ref.shape[1])
    # MFCC's float error (TOLERANCES["mfcc"]) divided by the fitted std of each coefficient.
    std = np.maximum(fitted.block_params[1].std.astype(np.float64), 1e-6)  # type: ignore[union-attr]
    bound = tolerance_for(fitted.pipeline.blocks[0]).abs / np.tile(std, 49)
    assert (np.abs(ours - ref) <= bound).all()
    ours_q = run_features(exe, clips, ref.shape[1], quantized=True)
    diff = np.abs(ours_q.astype(int) - quantize(ref, *q).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # only values at a rounding edge move
    exact = build_host_feature_runner(lib, "kws", tmp_path, double=True)
    assert np.array_equal(
        run_features(exact, clips, ref.shape[1], quantized=True), quantize(ref, *q)
    )


def test_features_in_the_bundle_layout_build_with_the_model(tmp_path: Path) -> None:
    cc = require_gcc()
    fitted = FeaturePipeline([{"block": "scale", "mul": 2.0}]).fit(np.ones((4, 4), np.float32))
    members, record = bundle_members(fc_model(), "tiny_fc.tflite", "tiny_fc", "1.0.0", fitted)
    assert record["features"]["output_shape"] == [4] and record["features"]["quantized"]
    lib = "compiled/arduino/TinyFcCompiled"
    for path in (
        "compiled/include/tinyops_tiny_fc_features.h",
        "compiled/src/tinyops_tiny_fc_features.c",
        f"{lib}/src/tinyops_tiny_fc_features.c",
    ):
        assert path in members
    assert b"tinyops_tiny_fc_features.c" in members["compiled/CMakeLists.txt"]
    for path, data in members.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include "tinyops_tiny_fc.h"\n#include "tinyops_tiny_fc_features.h"\n'
        "int main(void) {\n  const float raw[4] = {0.5f, 0.0f, 0.0f, 0.0f};\n"
        "  int8_t in[TINYOPS_TINY_FC_INPUT_SIZE], out[TINYOPS_TINY_FC_OUTPUT_SIZE];\n"
        "  if (tinyops_tiny_fc_features_q(raw, in) != 0) return 1;\n"
        "  if (tinyops_tiny_fc_invoke(in, out) != 0) return 1;\n"
        '  printf("%d %d %d\\n", in[0], out[0], out[1]);\n  return 0;\n}\n'
    )
    src = tmp_path / lib / "src"
    exe = tmp_path / "app"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{src}", "-o", str(exe), str(main)]
    subprocess.run([*cmd, *map(str, src.glob("*.c")), "-lm"], check=True)
    # raw 0.5 → feature 1.0 → q = 1 / 0.5 (the input scale) = 2: the same input, and so the
    # same outputs, as test_compile_bundle_layout's hand-quantized {2, 0, 0, 0}.
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout.split() == [
        "2",
        "1",
        "2",
    ]


def test_features_that_do_not_fill_the_model_input_are_refused() -> None:
    fitted = FeaturePipeline([{"block": "scale"}]).fit(np.ones((4, 5), np.float32))
    members, record = bundle_members(fc_model(), "tiny_fc.tflite", "tiny_fc", "1.0.0", fitted)
    assert members == {}
    assert "5 values" in record["skipped"] and "input 4" in record["skipped"]


def test_feature_code_cross_compiles_for_cortex_m4f_without_double_math(tmp_path: Path) -> None:
    """The float build for a Cortex-M4F under -Werror -Wdouble-promotion: no value widens to
    double by accident; the only double arithmetic is the quantize step's division, which
    calls the soft-float routines (__aeabi_ddiv) on purpose."""
    require_arm_gcc()
    fitted = FeaturePipeline([{"block": "mfcc"}, {"block": "standardize"}], sample_rate=16000).fit(
        spoken_like(3, seed=4)
    )
    code: FeatureCode = emit_features(fitted, "kws", (0.05, 3))
    lib = tmp_path / "lib"
    lib.mkdir()
    for fname, text in code.files.items():
        (lib / fname).write_text(text)
    obj = tmp_path / "f.o"
    subprocess.run(
        [
            "arm-none-eabi-gcc",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wdouble-promotion",
            "-O2",
            "-mcpu=cortex-m4",
            "-mthumb",
            "-mfloat-abi=hard",
            "-mfpu=fpv4-sp-d16",
            "-c",
            str(lib / code.source),
            "-o",
            str(obj),
        ],
        check=True,
    )
    symbols = subprocess.run(
        ["arm-none-eabi-nm", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    assert "tinyops_kws_features_q" in symbols
    assert "__aeabi_ddiv" in symbols and "__aeabi_dmul" not in symbols


def test_emit_features_refuses_a_bad_name_and_keeps_model_lib_apart(tmp_path: Path) -> None:
    fitted = FeaturePipeline([{"block": "scale"}]).fit(np.ones((2, 3), np.float32))
    with pytest.raises(CompileError, match="lower-case C identifier"):
        emit_features(fitted, "Bad-Name")
    # The model's own library (tinyops compile) is unchanged by the feature code.
    c = compile_model(fc_model(), "tiny_fc", "tiny_fc.tflite")
    assert set(write_library(c, tmp_path / "lib")) == {tmp_path / "lib" / f for f in c.files}
    assert not any("features" in f for f in library_files(c, "1.0.0"))
    assert math.prod(emit_features(fitted, "ok").output_shape) == 3
