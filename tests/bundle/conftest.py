"""Fixtures for the bundle tests: a C++ compiler and signing keys.

The MLPerf Tiny models come from `mlperf_dir` in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Warnings are errors: generated code must compile cleanly in strict firmware builds.
CXX_FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]

BuildAndRun = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="session")
def gxx() -> str:
    """Path of g++; a skip without it, a failure under CI=true."""
    path = shutil.which("g++")
    if path is None:
        reason = "g++ not found on PATH: the generated C/C++ cannot be compiled"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: this must not be skipped)")
        pytest.skip(reason)
    return path


@pytest.fixture
def build_and_run(gxx: str, tmp_path: Path) -> BuildAndRun:
    """Write `files` under a temp folder, compile `sources` with g++ and run the program."""

    def run(
        files: Mapping[str, str | bytes],
        sources: Sequence[str],
        include_dirs: Sequence[str] = (".",),
    ) -> subprocess.CompletedProcess[bytes]:
        root = tmp_path / "cc"
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        program = root / "program"
        command = [
            gxx,
            *CXX_FLAGS,
            *(f"-I{root / d}" for d in include_dirs),
            *(str(root / s) for s in sources),
            "-o",
            str(program),
        ]
        built = subprocess.run(command, capture_output=True, check=False)
        assert built.returncode == 0, built.stderr.decode(errors="replace")
        return subprocess.run([str(program)], capture_output=True, check=False)

    return run


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    # Fixed seed: the deterministic tests compare bytes across runs.
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
