"""Shared test fixtures: the MLPerf Tiny models in ../shared/fixtures and CI strictness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ci_env import FIXTURES, REPO, in_ci, require_fixtures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Re-exported for older imports; tests import these from ci_env.
__all__ = ["FIXTURES", "REPO", "in_ci", "require_fixtures"]


@pytest.fixture
def mlperf_dir() -> Path:
    return require_fixtures()
