"""Optimization config: defaults and validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tinyops.optimize.config import OptimizeConfig, PruningConfig


def test_defaults() -> None:
    cfg = OptimizeConfig()
    assert cfg.variants == ["float32", "float16", "dynamic", "int8"]
    assert cfg.representative_samples == 200
    assert cfg.pruning is None
    pruning = PruningConfig()
    assert pruning.fine_tune_epochs == 3
    assert pruning.schedule == "polynomial"


def test_pruning_from_mapping() -> None:
    cfg = OptimizeConfig.model_validate(
        {"variants": ["int8"], "pruning": {"target_sparsity": 0.8, "schedule": "constant"}}
    )
    assert cfg.pruning == PruningConfig(target_sparsity=0.8, schedule="constant")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"variants": ["int4"]}, "variants"),
        ({"variants": []}, "variants"),
        ({"variants": ["int8", "int8"]}, "int8 more than once"),
        ({"pruning": {"target_sparsity": 0.96}}, "target_sparsity"),
        ({"pruning": {"target_sparsity": -0.1}}, "target_sparsity"),
        ({"pruning": {"schedule": "cubic"}}, "schedule"),
        ({"representative_samples": 0}, "representative_samples"),
        ({"quantize": True}, "quantize"),
    ],
)
def test_invalid_values_name_the_field(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        OptimizeConfig.model_validate(data)
