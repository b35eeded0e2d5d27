"""CI strictness and the shared fixtures, importable from any test folder as `ci_env`.

Under CI=true a missing service, toolchain or fixture folder is a failure; on a user's
machine it is a skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`, or fail under CI=true (where every service must be present)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped)")
    pytest.skip(reason)


def require_fixtures() -> Path:
    """The fixture folder, or a skip (a failure under CI=true) when it is absent."""
    if not FIXTURES.is_dir():
        skip_or_fail(f"MLPerf Tiny fixtures not found at {FIXTURES}")
    return FIXTURES
