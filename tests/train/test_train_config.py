"""Model/training configuration: per-template parameter validation, defaults, errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from tinyops.train.config import ModelConfig, TrainingConfig
from tinyops.train.models import MlpParams, validate_template_params


def test_params_are_normalized_with_template_defaults() -> None:
    cfg = ModelConfig(template="cnn2d", params={"filters": [4]})
    assert cfg.params == {
        "filters": [4],
        "kernel_size": 3,
        "pool_size": 2,
        "dense_units": 32,
        "dropout": 0.0,
    }
    assert cfg.task == "classification"


def test_autoencoder_is_the_anomaly_task() -> None:
    assert ModelConfig(template="autoencoder").task == "anomaly"


def test_unknown_param_is_named_by_its_full_key_path() -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig(template="mlp", params={"hidden_units": [8], "filterz": 3})
    message = str(info.value)
    assert "model.params.filterz" in message
    assert "template 'mlp'" in message
    # The allowed keys are listed so the user can fix the typo.
    assert "dropout, hidden_units" in message


def test_wrong_param_type_is_named_by_its_full_key_path() -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig(template="ds_cnn2d", params={"blocks": -1})
    assert "model.params.blocks" in str(info.value)


def test_wrong_list_element_names_its_index() -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig(template="mlp", params={"hidden_units": [8, 0]})
    assert "model.params.hidden_units.1" in str(info.value)


def test_unknown_template_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ModelConfig(template="resnet", params={})
    assert "template" in str(info.value)


def test_template_params_returns_the_typed_model() -> None:
    params = ModelConfig(template="mlp", params={"hidden_units": [8]}).template_params()
    assert isinstance(params, MlpParams)
    assert params.hidden_units == [8]


def test_validate_template_params_directly_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"model\.params\.units"):
        validate_template_params("autoencoder", {"units": 3})
    assert isinstance(validate_template_params("autoencoder", {}), BaseModel)


def test_training_defaults() -> None:
    cfg = TrainingConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.seed) == (20, 32, 1e-3, 42)
    assert cfg.early_stopping_patience is None
    assert cfg.deterministic is True


def test_training_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        TrainingConfig(epoch=3)
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainingConfig(learning_rate=0)
