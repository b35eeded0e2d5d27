"""Fixtures of the targets tests (helpers live in targets_testlib.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from targets_testlib import MLPERF_DIR, TinyModel, fc_int8_model


@pytest.fixture(scope="session")
def mlperf_dir() -> Path:
    """The MLPerf Tiny fixture folder; skipped when absent, a failure when CI=true."""
    if not MLPERF_DIR.is_dir():
        reason = f"MLPerf Tiny fixtures not found at {MLPERF_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true requires them)")
        pytest.skip(reason)
    return MLPERF_DIR


@pytest.fixture(scope="session")
def mlperf_bytes(mlperf_dir: Path) -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        if name not in cache:
            cache[name] = (mlperf_dir / name).read_bytes()
        return cache[name]

    return read


@pytest.fixture
def tiny_model() -> type[TinyModel]:
    return TinyModel


@pytest.fixture
def fc_model_bytes() -> bytes:
    return fc_int8_model()


@pytest.fixture
def flex_model_bytes() -> bytes:
    """A float model whose only operator is the Flex (TF Select) op FlexRFFT2D."""
    m = TinyModel()
    x = m.tensor([1, 8, 8], "float32")
    y = m.tensor([1, 8, 5], "float32")
    m.op("CUSTOM", [x], [y], custom_code="FlexRFFT2D")
    return m.to_bytes([x], [y])


@pytest.fixture(scope="session")
def rfft2d_model_bytes() -> bytes:
    """A real converter output: |rfft2d(x)|, which lowers to the builtins RFFT2D, COMPLEX_ABS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8], tf.float32)])
    def spectrum(x: Any) -> Any:
        return tf.abs(tf.signal.rfft2d(x))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [spectrum.get_concrete_function()], spectrum
    )
    return bytes(converter.convert())
