"""Shared test fixtures: the MLPerf Tiny models in ../shared/fixtures and CI strictness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_fixtures() -> Path:
    """The fixture folder, or a skip (a failure under CI=true) when it is absent."""
    if not FIXTURES.is_dir():
        msg = f"MLPerf Tiny fixtures not found at {FIXTURES}"
        if in_ci():
            pytest.fail(msg + " (CI=true: fixtures are required)")
        pytest.skip(msg)
    return FIXTURES


@pytest.fixture
def mlperf_dir() -> Path:
    return require_fixtures()
