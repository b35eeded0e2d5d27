"""The compiler (issue 5) on the five MLPerf Tiny int8 models: RAM, flash, bit-exactness.

For each model in ../shared/fixtures/mlperf-tiny:

- the TFLM arena, measured by the TFLM runtime (`TflmModel`, print_allocations total);
- the compiled model's peak RAM: its static arena plus the caller's input and output
  buffers (TFLM's arena holds those too), and its share of the TFLM arena (goal ≤ 50%);
- flash: the cross-compiled library's ELF (arm-none-eabi-gcc -O2 -mcpu=cortex-m4 -mthumb,
  unused sections dropped), .text + .rodata + .data, against the .tflite size (goal:
  ≤ model + 8 KB);
- bit-exactness: INFERENCES seeded random inputs through the host build (gcc -O2) and the
  TFLM runtime, every output byte compared;
- compile time (read, lower, plan, emit) and host run time per inference (x86, -O2: for
  orientation only);
- emulated Cortex-M4 (when qemu-system-arm and arm-none-eabi-gcc are installed): the same
  inputs through the AN386 firmware under QEMU, every output byte compared with TFLM;
- Cortex-M4 instructions per inference, counted with Unicorn on the firmware's invoke
  (DSP path, -O2 and -O3; goal for KWS ≤ 9.0 M), and the latency and energy they imply on
  the nano33ble (64 MHz, 9.9 mW; cycles ≈ instructions, a lower bound);
- emulated Cortex-M0 (QEMU microbit: nRF51822, 256 KB flash, 16 KB RAM): the models that
  link for it run the same inputs (plain C path) against TFLM; the others give the
  linker's reason;
- feature blocks as C (compile/features.py): per block, the largest error of the default
  float build against the Python block on seeded random inputs (absolute, and relative to
  the largest |value| of the sample), whether the double build is bit-exact, and the
  tables (flash) and static buffers (RAM) of the float build.

    python benchmarks/bench_compile.py [--inferences 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"
MODELS = [
    "kws_ref_model",
    "vww_96_int8",
    "pretrainedResnet_quant",
    "ad01_int8",
    "str_ww_ref_model",
]


def bench_model(stem: str, inferences: int, workdir: Path) -> dict[str, Any]:
    from tinyops.compile import build_host_runner, compile_model, run_host, write_library
    from tinyops.compile.toolchain import cross_build, cross_compiler
    from tinyops.targets.tflm import TflmModel

    path = FIXTURES / f"{stem}.tflite"
    data = path.read_bytes()
    name = stem.lower()
    t0 = time.perf_counter()
    compiled = compile_model(data, name, str(path))
    compile_s = time.perf_counter() - t0
    lib = workdir / name
    write_library(compiled, lib)
    tflm = TflmModel(data, str(path))
    exe = build_host_runner(lib, name, workdir)
    d = tflm.input_details[0]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(inferences, *d.shape[1:]), dtype=np.int8)
    t0 = time.perf_counter()
    ours = run_host(exe, x.reshape(inferences, -1), compiled.graph.output.elements)
    host_ms = 1000 * (time.perf_counter() - t0) / inferences
    theirs = np.stack([tflm.invoke_raw([xi.reshape(d.shape)])[0].reshape(-1) for xi in x])
    elf = cross_build(lib, name, workdir, "cortex-m4f") if cross_compiler() else None
    m4 = _emulated_m4(lib, name, workdir, x.reshape(inferences, -1), theirs, compiled)
    m0 = _emulated_m0(lib, name, workdir, x.reshape(inferences, -1), theirs, compiled)
    return {
        **m4,
        **m0,
        "model": path.name,
        "tflite_bytes": len(data),
        "tflm_arena_bytes": tflm.arena.total,
        "arena_bytes": compiled.arena_bytes,
        "ram_bytes": compiled.ram_bytes,
        "ram_vs_tflm": compiled.ram_bytes / tflm.arena.total,
        "flash_estimate_bytes": compiled.flash_bytes,
        "elf_flash_bytes": elf.flash_bytes if elf else None,
        "elf_bss_bytes": elf.bss if elf else None,
        "inferences": inferences,
        "mismatched_bytes": int(np.count_nonzero(ours != theirs)),
        "compile_s": compile_s,
        "host_ms_per_inference": host_ms,
    }


def _emulated_m4(
    lib: Path,
    name: str,
    workdir: Path,
    x: Any,
    theirs: Any,
    compiled: Any,
) -> dict[str, Any]:
    from tinyops.compile.emulate import build_firmware, qemu_binary, run_qemu
    from tinyops.compile.icount import count_instructions, estimate_for_board
    from tinyops.compile.toolchain import cross_compiler

    if not (cross_compiler() and qemu_binary()):
        return {"qemu_mismatched_bytes": None, "m4_instructions_o2": None}
    out_size = compiled.graph.output.elements
    elf = build_firmware(lib, name, workdir / "o2")
    elf3 = build_firmware(lib, name, workdir / "o3", extra_flags=["-O3"])
    t0 = time.perf_counter()
    ours = run_qemu(elf, x, out_size)
    qemu_s = time.perf_counter() - t0
    o2 = count_instructions(elf, name, x[:1], out_size)
    o3 = count_instructions(elf3, name, x[:1], out_size)
    est = estimate_for_board(o2.instructions[0], "nano33ble")
    est3 = estimate_for_board(o3.instructions[0], "nano33ble")
    return {
        "qemu_mismatched_bytes": int(np.count_nonzero(ours != theirs)),
        "qemu_s": qemu_s,
        "m4_instructions_o2": o2.instructions[0],
        "m4_instructions_o3": o3.instructions[0],
        "unicorn_output_matches": bool(
            np.array_equal(o2.outputs[0], theirs[0]) and np.array_equal(o3.outputs[0], theirs[0])
        ),
        "nano33ble_ms_o2": est.latency_ms,
        "nano33ble_uj_o2": est.energy_uj,
        "nano33ble_ms_o3": est3.latency_ms,
        "nano33ble_uj_o3": est3.energy_uj,
    }


def _emulated_m0(
    lib: Path, name: str, workdir: Path, x: Any, theirs: Any, compiled: Any
) -> dict[str, Any]:
    from tinyops.compile import CompileError
    from tinyops.compile.emulate import build_firmware, qemu_binary, run_qemu
    from tinyops.compile.toolchain import cross_compiler

    if not (cross_compiler() and qemu_binary()):
        return {"m0": None}
    try:
        elf = build_firmware(lib, name, workdir / "m0", machine="microbit")
    except CompileError as exc:
        reason = next((ln for ln in str(exc).splitlines() if "overflowed" in ln), str(exc))
        return {"m0": {"fits": False, "reason": reason.split(": ", 1)[-1].strip()}}
    t0 = time.perf_counter()
    ours = run_qemu(elf, x, compiled.graph.output.elements, machine="microbit")
    return {
        "m0": {
            "fits": True,
            "mismatched_bytes": int(np.count_nonzero(ours != theirs)),
            "qemu_s": time.perf_counter() - t0,
        }
    }


# One fitted block per case: (name, blocks, sample rate, raw sample shape, kind of data).
FEATURE_CASES: list[tuple[str, list[dict[str, Any]], int | None, tuple[int, ...], str]] = [
    ("scale", [{"block": "scale", "mul": 0.0625, "add": -0.5}], None, (8, 8, 1), "pixels16"),
    ("standardize", [{"block": "standardize"}], None, (10, 4), "normal"),
    ("minmax", [{"block": "minmax", "axis": "all", "clip": True}], None, (5, 3), "normal"),
    ("window", [{"block": "window", "length": 64, "stride": 32}], None, (300, 2), "normal"),
    ("fft_band_power (FFT)", [{"block": "fft_band_power", "bands": 8}], None, (4, 128), "normal"),
    (
        "fft_band_power log (DFT)",
        [
            {
                "block": "fft_band_power",
                "edges_hz": [0, 50, 120, 300, 500],
                "log": True,
                "channels_last": True,
            }
        ],
        1000,
        (100, 3),
        "normal",
    ),
    (
        "log_mel (DFT, 480)",
        [{"block": "log_mel", "frame_length": 400, "frame_step": 160, "fft_length": 480}],
        16000,
        (4000,),
        "audio",
    ),
    ("log_mel (FFT, 1024)", [{"block": "log_mel"}], 16000, (16000,), "audio"),
    ("mfcc (FFT, 1024)", [{"block": "mfcc", "num_coefficients": 13}], 16000, (16000,), "audio"),
    ("image_resize", [{"block": "image_resize", "size": [16, 12]}], None, (30, 40, 3), "pixels"),
    ("grayscale", [{"block": "grayscale"}], None, (7, 9, 3), "pixels"),
    (
        "image_normalize",
        [{"block": "image_normalize", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}],
        None,
        (6, 5, 3),
        "pixels",
    ),
]


def _raw(kind: str, shape: tuple[int, ...], n: int, rng: np.random.Generator) -> Any:
    if kind == "pixels16":
        return rng.integers(0, 17, (n, *shape)).astype(np.float32)
    if kind == "pixels":
        return rng.integers(0, 256, (n, *shape)).astype(np.float32)
    if kind == "audio":  # int16-range noise bursts: a wide dynamic range per frame
        env = np.abs(np.sin(np.linspace(0, 3 * np.pi, shape[0])))
        return (rng.standard_normal((n, *shape)) * 3000 * env).astype(np.float32)
    return (rng.standard_normal((n, *shape)) * 5 + 3).astype(np.float32)


def bench_features(workdir: Path, samples: int = 32) -> list[dict[str, Any]]:
    from tinyops.compile.features import build_host_feature_runner, emit_features, run_features
    from tinyops.features import FeaturePipeline

    rows = []
    for i, (label, blocks, rate, shape, kind) in enumerate(FEATURE_CASES):
        rng = np.random.default_rng(i)
        fitted = FeaturePipeline(blocks, sample_rate=rate).fit(_raw(kind, shape, 64, rng))
        x = _raw(kind, shape, samples, rng)
        ref = fitted.transform(x).reshape(samples, -1).astype(np.float64)
        code = emit_features(fitted, "bench")
        lib = workdir / f"features_{i}"
        lib.mkdir()
        for fname, text in code.files.items():
            (lib / fname).write_text(text)
        ours = run_features(build_host_feature_runner(lib, "bench", lib), x, ref.shape[1])
        exact = run_features(
            build_host_feature_runner(lib, "bench", lib, double=True), x, ref.shape[1]
        )
        err = np.abs(ours.astype(np.float64) - ref)
        scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-30)
        rows.append(
            {
                "block": label,
                "max_abs_error": float(err.max()),
                "max_rel_error": float((err / scale).max()),
                "double_bit_exact": bool(np.array_equal(exact, ref.astype(np.float32))),
                "const_bytes": code.const_bytes,
                "buffer_bytes": code.buffer_bytes,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inferences", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        raise SystemExit(f"MLPerf Tiny fixtures not found at {FIXTURES}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        for stem in MODELS:
            rows.append(bench_model(stem, args.inferences, Path(tmp)))
    print(
        "| model | TFLM arena | compiled RAM (arena + I/O) | vs TFLM | flash (M4 ELF) "
        "| .tflite | bit-exact | compile | host/inference |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        flash = f"{r['elf_flash_bytes']:,}" if r["elf_flash_bytes"] is not None else "n/a"
        exact = "yes" if r["mismatched_bytes"] == 0 else f"NO ({r['mismatched_bytes']} B)"
        print(
            f"| {r['model']} | {r['tflm_arena_bytes']:,} | {r['ram_bytes']:,} "
            f"({r['arena_bytes']:,} + {r['ram_bytes'] - r['arena_bytes']:,}) "
            f"| {100 * r['ram_vs_tflm']:.1f}% | {flash} | {r['tflite_bytes']:,} "
            f"| {exact}, {r['inferences']} inputs | {r['compile_s']:.2f} s "
            f"| {r['host_ms_per_inference']:.2f} ms |"
        )
    print()
    print(
        "| model | emulated M4 (QEMU) | M4 instructions -O2 | -O3 | nano33ble -O2 | nano33ble -O3 |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["m4_instructions_o2"] is None:
            print(f"| {r['model']} | n/a (no qemu-system-arm) | | | | |")
            continue
        q = r["qemu_mismatched_bytes"]
        exact = "bit-exact" if q == 0 and r["unicorn_output_matches"] else f"NO ({q} B)"
        print(
            f"| {r['model']} | {exact}, {r['inferences']} inputs, {r['qemu_s']:.1f} s "
            f"| {r['m4_instructions_o2'] / 1e6:.2f} M | {r['m4_instructions_o3'] / 1e6:.2f} M "
            f"| {r['nano33ble_ms_o2']:.1f} ms, {r['nano33ble_uj_o2']:.0f} µJ "
            f"| {r['nano33ble_ms_o3']:.1f} ms, {r['nano33ble_uj_o3']:.0f} µJ |"
        )
    print()
    print("| model | emulated Cortex-M0 (QEMU microbit, 256 KB flash, 16 KB RAM) |")
    print("| --- | --- |")
    for r in rows:
        m0 = r["m0"]
        if m0 is None:
            text = "n/a (no qemu-system-arm)"
        elif m0["fits"]:
            ok = m0["mismatched_bytes"] == 0
            text = f"{'bit-exact' if ok else 'NO'}, {r['inferences']} inputs, {m0['qemu_s']:.1f} s"
        else:
            text = f"does not fit: {m0['reason']}"
        print(f"| {r['model']} | {text} |")
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        features = bench_features(Path(tmp))
    print()
    print(
        "| feature block | float: max abs error | max error / sample max | double build "
        "| tables | buffers |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for f in features:
        print(
            f"| {f['block']} | {f['max_abs_error']:.2g} | {f['max_rel_error']:.2g} "
            f"| {'bit-exact' if f['double_bit_exact'] else 'not bit-exact'} "
            f"| {f['const_bytes']:,} B | {f['buffer_bytes']:,} B |"
        )
    if args.json:
        args.json.write_text(json.dumps({"models": rows, "features": features}, indent=2) + "\n")
    if any(r["mismatched_bytes"] or r["qemu_mismatched_bytes"] for r in rows):
        sys.exit(1)
    if any(r["m0"] and r["m0"]["fits"] and r["m0"]["mismatched_bytes"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
