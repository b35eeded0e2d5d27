"""The compiled C library as bundle members (compiled/: sources, CMake, Arduino layout),
built the three ways a user would, and carried by the pipeline's bundle."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ci_env import in_ci
from compile_testlib import fc_model, require_gcc

from tinyops.compile import compile_model
from tinyops.compile.layout import arduino_library_name, bundle_members, library_files

STARTER = Path(__file__).resolve().parents[2] / "src/tinyops/project/templates/tinyops.yaml"

MAIN = """#include <stdio.h>
#include "tinyops_tiny_fc.h"
int main(void) {
  const int8_t in[TINYOPS_TINY_FC_INPUT_SIZE] = {2, 0, 0, 0};
  int8_t out[TINYOPS_TINY_FC_OUTPUT_SIZE];
  if (tinyops_tiny_fc_invoke(in, out) != 0) return 1;
  printf("%d %d\\n", out[0], out[1]);
  return 0;
}
"""


def _write(files: dict[str, bytes], root: Path) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def _tiny() -> dict[str, bytes]:
    return library_files(compile_model(fc_model(), "tiny_fc", "tiny_fc.tflite"), "1.2.3")


def test_members_are_the_compilers_files_in_three_layouts() -> None:
    c = compile_model(fc_model(), "tiny_fc", "tiny_fc.tflite")
    files = library_files(c, "1.2.3")
    lib = f"compiled/arduino/{arduino_library_name('tiny_fc')}"
    assert lib == "compiled/arduino/TinyFcCompiled"
    assert sorted(files) == sorted(
        [
            "compiled/CMakeLists.txt",
            "compiled/README.md",
            "compiled/include/tinyops_kernels.h",
            "compiled/include/tinyops_tiny_fc.h",
            "compiled/src/tinyops_kernels.c",
            "compiled/src/tinyops_tiny_fc.c",
            f"{lib}/library.properties",
            *(f"{lib}/src/{f}" for f in c.files),
        ]
    )
    for fname, text in c.files.items():
        assert files[f"{lib}/src/{fname}"] == text.encode()
    props = dict(
        line.split("=", 1) for line in files[f"{lib}/library.properties"].decode().splitlines()
    )
    assert props["name"] == "TinyFcCompiled" and props["version"] == "1.2.3"
    assert props["includes"] == "tinyops_tiny_fc.h"


def test_the_cmake_layout_builds_and_runs(tmp_path: Path) -> None:
    require_gcc()
    if shutil.which("cmake") is None:
        msg = "cmake not installed (apt-get install cmake)"
        if in_ci():
            pytest.fail(msg + " (CI=true: cmake is required)")
        pytest.skip(msg)
    _write(_tiny(), tmp_path)
    (tmp_path / "main.c").write_text(MAIN)
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C)\nadd_subdirectory(compiled)\n"
        "add_executable(app main.c)\ntarget_link_libraries(app tinyops_tiny_fc)\n"
    )
    build = tmp_path / "build"
    for cmd in (
        ["cmake", "-S", str(tmp_path), "-B", str(build), "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror"],
        ["cmake", "--build", str(build)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    run = subprocess.run([str(build / "app")], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["1", "2"]  # as test_compile_digits' plain-folder build


def test_the_arduino_layout_compiles_on_its_own(tmp_path: Path) -> None:
    cc = require_gcc()
    _write(_tiny(), tmp_path)
    src = tmp_path / "compiled/arduino/TinyFcCompiled/src"
    (tmp_path / "main.c").write_text(MAIN)
    exe = tmp_path / "app"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{src}", "-o", str(exe)]
    subprocess.run([*cmd, str(tmp_path / "main.c"), *map(str, src.glob("*.c"))], check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout.split() == ["1", "2"]


def test_a_model_the_compiler_refuses_still_bundles_without_it() -> None:
    members, record = bundle_members(fc_model("float32"), "float.tflite", "float-model", "1.0.0")
    assert members == {}
    assert "float.tflite" in record["skipped"] and "float" in record["skipped"]


@pytest.mark.slow
def test_the_pipeline_bundle_carries_a_library_that_reproduces_its_golden_vectors(
    tmp_path: Path,
) -> None:
    from tinyops.pipeline.runner import run_project

    cc = require_gcc()
    cfg: dict[str, Any] = yaml.safe_load(STARTER.read_text().replace("__NAME__", "digits"))
    cfg["training"]["epochs"] = 2
    cfg["optimize"]["pruning"]["fine_tune_epochs"] = 1
    cfg["gates"]["min_accuracy"] = 0.0
    cfg["gates"]["max_accuracy_drop"] = 1.0
    (tmp_path / "tinyops.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    record = run_project(tmp_path)
    by_name = {s["name"]: s for s in record["stages"]}
    stage = by_name["bundle"]
    compiled = stage["output"]["compiled"]
    assert "skipped" not in compiled and compiled["ram_bytes"] > 0
    # The compile stage made the library; the bundle carries exactly its files.
    compile_out = by_name["compile"]["output"]
    assert {k: v for k, v in compile_out.items() if k not in ("path", "files")} == compiled
    assert all((tmp_path / compile_out["path"] / f).is_file() for f in compile_out["files"])
    bundle = tmp_path / stage["output"]["bundle"]
    out = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(out)
    name = compiled["name"]
    lib = out / "compiled"
    assert (lib / "CMakeLists.txt").is_file()
    vectors = yaml.safe_load((out / "golden/vectors.json").read_text())
    inputs = np.frombuffer((out / "golden/inputs.bin").read_bytes(), dtype=np.int8)
    outputs = np.frombuffer((out / "golden/outputs.bin").read_bytes(), dtype=np.int8)
    from tinyops.compile import run_host
    from tinyops.compile.toolchain import build_host_runner

    flat = tmp_path / "flat"
    flat.mkdir()
    for f in [*(lib / "include").iterdir(), *(lib / "src").iterdir()]:
        shutil.copy(f, flat / f.name)
    assert cc
    exe = build_host_runner(flat, name, tmp_path)
    n = int(vectors["count"])
    ours = run_host(exe, inputs.reshape(n, -1), outputs.size // n)
    assert np.array_equal(ours, outputs.reshape(n, -1))
    # The bundle carries the fitted feature pipeline as C: rebuilt from the manifest's
    # feature_params, the Python pipeline and the bundled C quantize the raw digits into the
    # same int8 model input.
    from sklearn.datasets import load_digits

    from tinyops.compile.features import build_host_feature_runner, run_features
    from tinyops.features import FeaturePipeline, FittedPipeline
    from tinyops.optimize.quant import quantize

    assert compiled["features"]["blocks"] == ["scale"]
    manifest = yaml.safe_load((out / "manifest.json").read_text())
    fitted = FittedPipeline.from_params(
        FeaturePipeline(cfg["features"]["blocks"]), manifest["feature_params"]
    )
    raw = load_digits().images.astype(np.float32)[:200, :, :, None]
    features_exe = build_host_feature_runner(flat, name, tmp_path)
    ours_q = run_features(features_exe, raw, 64, quantized=True)
    spec = manifest["model"]["input"]
    theirs_q = quantize(fitted.transform(raw).reshape(200, -1), spec["scale"], spec["zero_point"])
    assert np.array_equal(ours_q, theirs_q)
    # `tinyops export --format compiled` writes exactly the verified bundle's compiled/ files.
    from tinyops.pipeline.runner import export_bundle

    written = export_bundle(tmp_path, None, "compiled", tmp_path / "export")
    assert written and all(p.is_relative_to(tmp_path / "export" / "compiled") for p in written)
    for p in written:
        assert p.read_bytes() == (out / p.relative_to(tmp_path / "export")).read_bytes()
    assert len(written) == sum(1 for f in (out / "compiled").rglob("*") if f.is_file())
