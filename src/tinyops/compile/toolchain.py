"""Toolchains: write a compiled model's library to disk, build it on the host, run it.

- `write_library(model, dest)`: the generated files into `dest`, atomically: they are
  written into a temporary folder beside `dest` that is renamed into place only when
  complete, so a failure leaves nothing half-written (and an existing `dest` is replaced
  only by a complete new one).
- `build_host_runner(lib_dir, name, workdir)`: the library plus a small batch runner
  (`main`), compiled with the host C compiler under the flags the generated code must
  pass: `-std=c99 -Wall -Wextra -Werror -O2`. The runner reads N input vectors from a
  file, runs one inference per vector in the same process and writes N output vectors,
  so hundreds of inferences cost one process start.
- `run_host(exe, inputs)`: the runner on an int8 array of shape (N, input size).
- `cross_build(lib_dir, name, workdir, core)`: the library alone, cross-compiled with
  `arm-none-eabi-gcc` for a Cortex-M core and linked with unused sections dropped and the
  entry point as the ELF's entry, so the ELF holds exactly what a firmware would link in.
  Its section sizes (`arm-none-eabi-size -A`) give flash (.text + .rodata + .data) and
  static RAM (.data + .bss); the stack is not in the ELF and is not counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tinyops.compile.emit import CompiledModel
from tinyops.compile.errors import CompileError

HOST_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")

_RUNNER = """/* Batch runner (tests, benchmarks): argv[1] inputs, argv[2] outputs, raw int8. */
#include <stdio.h>
#include <stdlib.h>

#include "tinyops_{name}.h"

int main(int argc, char **argv) {{
  static int8_t in[TINYOPS_{upper}_INPUT_SIZE];
  static int8_t out[TINYOPS_{upper}_OUTPUT_SIZE];
  FILE *fin, *fout;
  long n = 0;
  if (argc != 3) {{
    fprintf(stderr, "usage: %s INPUTS OUTPUTS\\n", argv[0]);
    return 2;
  }}
  fin = fopen(argv[1], "rb");
  fout = fopen(argv[2], "wb");
  if (fin == NULL || fout == NULL) {{
    fprintf(stderr, "cannot open %s or %s\\n", argv[1], argv[2]);
    return 2;
  }}
  while (fread(in, 1, sizeof in, fin) == sizeof in) {{
    if (tinyops_{name}_invoke(in, out) != 0) return 3;
    if (fwrite(out, 1, sizeof out, fout) != sizeof out) return 4;
    ++n;
  }}
  fclose(fin);
  if (fclose(fout) != 0) return 4;
  fprintf(stderr, "%ld inferences\\n", n);
  return 0;
}}
"""


def write_library(model: CompiledModel, dest: Path) -> list[Path]:
    """Write the generated C library into folder `dest`, atomically; returns the files."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise CompileError(f"{dest}: exists and is not a folder")
    parent = dest.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise CompileError(f"{dest}: cannot create the output folder ({exc.strerror})") from exc
    old: Path | None = None
    try:
        for fname, text in sorted(model.files.items()):
            (tmp / fname).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)
        if dest.exists():
            # Two renames: a crash between them leaves the old library under a dot-name
            # and never a mix of old and new files.
            old = parent / f".{dest.name}.old-{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            os.replace(old, dest)
        raise CompileError(f"{dest}: cannot write the C library ({exc.strerror})") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [dest / f for f in sorted(model.files)]


def host_compiler() -> str | None:
    """The host C compiler (CC, else gcc, else cc), or None if there is none."""
    for candidate in (os.environ.get("CC"), "gcc", "cc"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def build_host_runner(
    lib_dir: Path,
    name: str,
    workdir: Path,
    extra_flags: Sequence[str] = (),
) -> Path:
    """Compile the library in `lib_dir` with a batch runner; returns the executable."""
    cc = host_compiler()
    if cc is None:
        raise CompileError("no host C compiler found (set CC, or install gcc)")
    main = Path(workdir) / f"run_{name}.c"
    main.write_text(_RUNNER.format(name=name, upper=name.upper()), encoding="utf-8")
    exe = Path(workdir) / f"run_{name}"
    cmd = [
        cc,
        *HOST_CFLAGS,
        *extra_flags,
        f"-I{lib_dir}",
        "-o",
        str(exe),
        str(main),
        str(Path(lib_dir) / f"tinyops_{name}.c"),
        str(Path(lib_dir) / "tinyops_kernels.c"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(
            f"{lib_dir}: the host compiler failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}"
        )
    return exe


def run_host(exe: Path, inputs: NDArray[np.int8], output_size: int) -> NDArray[np.int8]:
    """Run the batch runner on inputs of shape (N, input size); outputs (N, output size)."""
    batch = np.ascontiguousarray(inputs, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="tinyops-run-") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        fin.write_bytes(batch.tobytes())
        proc = subprocess.run(
            [str(exe), str(fin), str(fout)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise CompileError(f"{exe}: exited with {proc.returncode}: {proc.stderr[-2000:]}")
        raw = np.frombuffer(fout.read_bytes(), dtype=np.int8)
    return raw.reshape(batch.shape[0], output_size)


# -mcpu per catalog core (tinyops.targets.catalog.Core) that arm-none-eabi-gcc builds for.
CORTEX_M_CPU = {
    "cortex-m0plus": "cortex-m0plus",
    "cortex-m4f": "cortex-m4",
    "cortex-m7": "cortex-m7",
}
CROSS_CFLAGS = (*HOST_CFLAGS, "-mthumb", "-ffunction-sections", "-fdata-sections")


@dataclass(frozen=True)
class ElfSize:
    """Section sizes (bytes) of a cross-compiled library's ELF."""

    text: int
    rodata: int
    data: int
    bss: int

    @property
    def flash_bytes(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram_bytes(self) -> int:
        return self.data + self.bss


def cross_compiler() -> str | None:
    return shutil.which("arm-none-eabi-gcc")


def cross_build(lib_dir: Path, name: str, workdir: Path, core: str = "cortex-m4f") -> ElfSize:
    """Cross-compile the library for a Cortex-M `core`; the ELF's section sizes."""
    cc = cross_compiler()
    if cc is None:
        raise CompileError(
            "arm-none-eabi-gcc not found: install gcc-arm-none-eabi and libnewlib-arm-none-eabi"
        )
    if core not in CORTEX_M_CPU:
        raise CompileError(
            f"core {core!r} has no cross toolchain; expected one of {', '.join(CORTEX_M_CPU)}"
        )
    elf = Path(workdir) / f"tinyops_{name}_{core}.elf"
    cmd = [
        cc,
        *CROSS_CFLAGS,
        f"-mcpu={CORTEX_M_CPU[core]}",
        "-nostartfiles",
        "--specs=nosys.specs",
        "-Wl,--gc-sections",
        f"-Wl,-e,tinyops_{name}_invoke",
        f"-I{lib_dir}",
        "-o",
        str(elf),
        str(Path(lib_dir) / f"tinyops_{name}.c"),
        str(Path(lib_dir) / "tinyops_kernels.c"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(f"{lib_dir}: arm-none-eabi-gcc failed:\n{proc.stderr[-4000:]}")
    return elf_size(elf)


def elf_size(elf: Path) -> ElfSize:
    """Allocated section sizes of an ELF, read with arm-none-eabi-size -A."""
    size = shutil.which("arm-none-eabi-size") or "size"
    proc = subprocess.run([size, "-A", str(elf)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(f"{elf}: {size} failed: {proc.stderr.strip()}")
    sections: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])

    def total(*prefixes: str) -> int:
        return sum(v for k, v in sections.items() if k.startswith(prefixes))

    return ElfSize(
        text=total(".text", ".init", ".fini", ".ARM.exidx"),
        rodata=total(".rodata"),
        data=total(".data"),
        bss=total(".bss", ".noinit", ".persistent"),
    )
