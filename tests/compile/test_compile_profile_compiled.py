"""`tinyops profile --compiled`: TFLM's arena, flash and latency beside the compiled C's
RAM, ELF flash and Cortex-M4 instruction-count latency, in JSON and as text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ci_env import require_fixtures
from compile_testlib import require_arm_gcc
from test_compile_cli import tinyops

from tinyops.compile import compile_model

pytestmark = pytest.mark.fixtures


def test_profile_compiled_json_side_by_side() -> None:
    require_arm_gcc()
    model = require_fixtures() / "kws_ref_model.tflite"
    result = tinyops("profile", model, "--target", "nano33ble", "--compiled", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    tflm, comp = doc["profile"], doc["compiled"]
    c = compile_model(model.read_bytes(), "kws_ref_model", str(model))
    assert tflm["arena_bytes"] == 24_272
    assert comp["ram_bytes"] == c.ram_bytes and comp["arena_bytes"] == c.arena_bytes
    assert comp["ram_bytes"] <= 0.5 * tflm["arena_bytes"]
    assert comp["flash_source"] == "ELF (cortex-m4f)"
    assert 0 < comp["flash_bytes"] < tflm["flash_bytes"]
    n = comp["instructions"]
    assert 5_000_000 < n < 10_000_000
    # nano33ble: 64 MHz, 9.9 mW; cycles taken as instructions.
    assert comp["latency_ms"] == pytest.approx(1000 * n / 64e6)
    assert comp["energy_mj"] == pytest.approx(comp["latency_ms"] * 9.9 / 1000)
    assert np.isfinite(tflm["latency_ms"])


def test_profile_compiled_text_and_a_core_without_counts() -> None:
    require_arm_gcc()
    model = require_fixtures() / "ad01_int8.tflite"
    result = tinyops("profile", model, "--target", "pico", "--compiled")
    assert result.returncode == 0, result.stderr
    assert "compiled C" in result.stdout and "of TFLM's arena" in result.stdout
    assert "ELF (cortex-m0plus)" in result.stdout
    assert "counted on Cortex-M4/M7 only" in result.stdout
