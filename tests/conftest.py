"""Shared test fixtures: the MLPerf Tiny models in ../shared/fixtures and CI strictness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ci_env import require_fixtures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Helpers tests import live in ci_env.py (tests/ is on sys.path): `from conftest import`
# would pick whichever of the several conftest.py files Python imported first.


@pytest.fixture
def mlperf_dir() -> Path:
    return require_fixtures()
