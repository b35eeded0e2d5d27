"""TinyML model templates, built with Keras 3 from layers the microcontroller runtime has.

Every template uses only layers that convert to TFLite Micro builtin kernels once the batch
is fixed to 1: Conv2D, DepthwiseConv2D, Dense (FULLY_CONNECTED), Max/AveragePooling2D,
Reshape/Flatten (RESHAPE), ReLU, Softmax, and BatchNormalization, which the converter folds
into the preceding convolution or dense layer. Nothing has a dynamic shape.

- `mlp`: dense classifier over the flattened input, any input rank.
- `cnn2d`: small convolutional classifier for (H, W, C) inputs (images, spectrograms).
- `ds_cnn2d`: the MLPerf Tiny keyword-spotting DS-CNN for (T, F, 1) feature maps: a strided
  convolution, N depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN +
  ReLU), average pooling over the whole map, dense, softmax.
- `ds_cnn1d`: the same network for (T, C) time series; the series is reshaped to (T, 1, C)
  and processed with (k, 1) two-dimensional kernels, so the converter emits CONV_2D and
  DEPTHWISE_CONV_2D, which TFLM has, instead of Conv1D's EXPAND_DIMS/SQUEEZE wrapping.
- `autoencoder`: the MLPerf Tiny anomaly-detection autoencoder (dense + BN + ReLU encoder, a
  narrow bottleneck, mirrored decoder, linear output the size of the input), trained with
  mean squared error on normal data only.

Classifiers end in a Softmax layer, so the converted model outputs class probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from tinyops.errors import ModelError

if TYPE_CHECKING:
    import keras

    from tinyops.train.config import ModelConfig

TemplateName = Literal["mlp", "cnn2d", "ds_cnn1d", "ds_cnn2d", "autoencoder"]

# Momentum of BatchNormalization's moving mean/variance (Keras' default is 0.99). TinyML
# datasets are small: with 0.99 the moving variance still carries ~0.99^steps of its
# initial 1.0 after a few hundred steps, which swamps activation variances of ~0.01 and
# leaves the inference-mode model at chance accuracy. 0.9 converges within ~50 steps.
BN_MOMENTUM = 0.9


class MlpParams(BaseModel):
    """Parameters of the `mlp` template."""

    model_config = ConfigDict(extra="forbid")

    hidden_units: list[PositiveInt] = Field(
        default=[64, 32], description="Units of each hidden Dense + ReLU layer, in order."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer."
    )


class Cnn2dParams(BaseModel):
    """Parameters of the `cnn2d` template."""

    model_config = ConfigDict(extra="forbid")

    filters: list[PositiveInt] = Field(
        default=[8, 16],
        min_length=1,
        description="Filters of each Conv2D + ReLU + MaxPooling2D stage, in order.",
    )
    kernel_size: PositiveInt = Field(default=3, description="Square convolution kernel side.")
    pool_size: PositiveInt = Field(
        default=2,
        description="Square max-pooling window after each convolution; skipped once the "
        "feature map is smaller than the window.",
    )
    dense_units: NonNegativeInt = Field(
        default=32, description="Units of the Dense + ReLU layer before the classifier; 0: none."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout rate before the classifier."
    )


class DsCnn2dParams(BaseModel):
    """Parameters of the `ds_cnn2d` template (MLPerf Tiny KWS DS-CNN defaults)."""

    model_config = ConfigDict(extra="forbid")

    filters: PositiveInt = Field(
        default=64, description="Channels of the first convolution and of every block."
    )
    first_kernel: tuple[PositiveInt, PositiveInt] = Field(
        default=(10, 4), description="(time, frequency) kernel of the first convolution."
    )
    first_strides: tuple[PositiveInt, PositiveInt] = Field(
        default=(2, 2), description="(time, frequency) strides of the first convolution."
    )
    blocks: NonNegativeInt = Field(default=4, description="Depthwise-separable blocks.")
    kernel_size: tuple[PositiveInt, PositiveInt] = Field(
        default=(3, 3), description="Depthwise kernel of every block."
    )
    dropout: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Dropout rate after the first convolution and before pooling.",
    )


class DsCnn1dParams(BaseModel):
    """Parameters of the `ds_cnn1d` template (DS-CNN over a (T, C) series)."""

    model_config = ConfigDict(extra="forbid")

    filters: PositiveInt = Field(
        default=32, description="Channels of the first convolution and of every block."
    )
    first_kernel: PositiveInt = Field(default=5, description="Time steps of the first kernel.")
    first_stride: PositiveInt = Field(default=2, description="Time stride of the first conv.")
    blocks: NonNegativeInt = Field(default=3, description="Depthwise-separable blocks.")
    kernel_size: PositiveInt = Field(default=3, description="Time steps of depthwise kernels.")
    dropout: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Dropout rate after the first convolution and before pooling.",
    )


class AutoencoderParams(BaseModel):
    """Parameters of the `autoencoder` template (MLPerf Tiny anomaly-detection defaults)."""

    model_config = ConfigDict(extra="forbid")

    hidden_units: list[PositiveInt] = Field(
        default=[128, 128, 128, 128],
        min_length=1,
        description="Units of the encoder's Dense layers; the decoder mirrors them.",
    )
    bottleneck: PositiveInt = Field(default=8, description="Units of the code layer.")
    batch_norm: bool = Field(
        default=True,
        description="BatchNormalization after each hidden Dense (folded by the converter).",
    )


TEMPLATE_PARAMS: dict[str, type[BaseModel]] = {
    "mlp": MlpParams,
    "cnn2d": Cnn2dParams,
    "ds_cnn1d": DsCnn1dParams,
    "ds_cnn2d": DsCnn2dParams,
    "autoencoder": AutoencoderParams,
}


def validate_template_params(template: str, params: Mapping[str, Any]) -> BaseModel:
    """Validate `params` against `template`'s parameter model.

    Raises a `ValueError` (a pydantic custom error, so it reads well inside a project
    validation report) naming every offending key as `model.params.<key>`.
    """
    model_cls = TEMPLATE_PARAMS[template]
    allowed = sorted(model_cls.model_fields)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise PydanticCustomError(
            "unknown_model_param",
            "{keys}: unknown parameter for template '{template}'; expected keys: {allowed}",
            {
                "keys": ", ".join(f"model.params.{key}" for key in unknown),
                "template": template,
                "allowed": ", ".join(allowed),
            },
        )
    try:
        return model_cls.model_validate(dict(params))
    except ValidationError as exc:
        problems = "; ".join(
            "model.params." + ".".join(str(part) for part in err["loc"]) + ": " + err["msg"]
            for err in exc.errors()
        )
        raise PydanticCustomError(
            "invalid_model_param",
            "{problems} (template '{template}')",
            {"problems": problems, "template": template},
        ) from None


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Build the (uncompiled) Keras model of `cfg.template` for one sample of `input_shape`.

    `input_shape` excludes the batch axis. `num_classes` is ignored by the autoencoder.
    Weights are initialized from Keras' global seed: call `keras.utils.set_random_seed`
    first for a reproducible model.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ModelError(f"model input shape must be non-empty and positive, got {shape}")
    if cfg.task == "classification" and num_classes < 2:
        raise ModelError(
            f"template '{cfg.template}' is a classifier and needs at least 2 classes, "
            f"got num_classes={num_classes}"
        )
    params = cfg.template_params()
    if isinstance(params, MlpParams):
        return _mlp(params, shape, num_classes)
    if isinstance(params, Cnn2dParams):
        _require_rank(cfg.template, shape, 3, "(height, width, channels)")
        return _cnn2d(params, shape, num_classes)
    if isinstance(params, DsCnn2dParams):
        _require_rank(cfg.template, shape, 3, "(time, features, channels)")
        return _ds_cnn2d(params, shape, num_classes)
    if isinstance(params, DsCnn1dParams):
        _require_rank(cfg.template, shape, 2, "(time, channels)")
        return _ds_cnn1d(params, shape, num_classes)
    if isinstance(params, AutoencoderParams):
        return _autoencoder(params, shape)
    raise ModelError(f"model.template: no builder for template '{cfg.template}'")


def _require_rank(template: str, shape: tuple[int, ...], rank: int, meaning: str) -> None:
    if len(shape) != rank:
        raise ModelError(
            f"template '{template}' needs input samples of shape {meaning}, got {shape}; "
            "check the feature pipeline's output shape"
        )


def _classifier_head(x: Any, num_classes: int) -> Any:
    import keras

    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Softmax(name="probabilities")(x)


def _mlp(p: MlpParams, shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    inputs = keras.Input(shape=shape, name="input")
    x = keras.layers.Flatten()(inputs) if len(shape) > 1 else inputs
    for units in p.hidden_units:
        x = keras.layers.Dense(units, activation="relu")(x)
        if p.dropout > 0:
            x = keras.layers.Dropout(p.dropout)(x)
    return keras.Model(inputs, _classifier_head(x, num_classes), name="mlp")


def _cnn2d(p: Cnn2dParams, shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    inputs = keras.Input(shape=shape, name="input")
    x = inputs
    height, width = shape[0], shape[1]
    for filters in p.filters:
        x = keras.layers.Conv2D(filters, p.kernel_size, padding="same", activation="relu")(x)
        if height >= p.pool_size and width >= p.pool_size and p.pool_size > 1:
            x = keras.layers.MaxPooling2D(p.pool_size)(x)
            height, width = height // p.pool_size, width // p.pool_size
    x = keras.layers.Flatten()(x)
    if p.dense_units > 0:
        x = keras.layers.Dense(p.dense_units, activation="relu")(x)
    if p.dropout > 0:
        x = keras.layers.Dropout(p.dropout)(x)
    return keras.Model(inputs, _classifier_head(x, num_classes), name="cnn2d")


def _ds_cnn_body(
    x: Any,
    filters: int,
    first_kernel: tuple[int, int],
    first_strides: tuple[int, int],
    blocks: int,
    kernel_size: tuple[int, int],
    dropout: float,
) -> Any:
    """Strided conv + BN + ReLU, then `blocks` depthwise-separable blocks, then avg-pool."""
    import keras

    layers = keras.layers
    # use_bias=False: the following BatchNormalization's beta is the bias, and the converter
    # folds both into the convolution.
    x = layers.Conv2D(filters, first_kernel, strides=first_strides, padding="same", use_bias=False)(
        x
    )
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    for _ in range(blocks):
        x = layers.DepthwiseConv2D(kernel_size, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, (1, 1), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    # Average over the whole remaining map: AVERAGE_POOL_2D with a static window, the
    # global pooling of the MLPerf Tiny reference, which TFLM runs in int8.
    x = layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
    return layers.Flatten()(x)


def _ds_cnn2d(p: DsCnn2dParams, shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    inputs = keras.Input(shape=shape, name="input")
    x = _ds_cnn_body(
        inputs, p.filters, p.first_kernel, p.first_strides, p.blocks, p.kernel_size, p.dropout
    )
    return keras.Model(inputs, _classifier_head(x, num_classes), name="ds_cnn2d")


def _ds_cnn1d(p: DsCnn1dParams, shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    steps, channels = shape
    inputs = keras.Input(shape=shape, name="input")
    x = keras.layers.Reshape((steps, 1, channels))(inputs)
    x = _ds_cnn_body(
        x,
        p.filters,
        (p.first_kernel, 1),
        (p.first_stride, 1),
        p.blocks,
        (p.kernel_size, 1),
        p.dropout,
    )
    return keras.Model(inputs, _classifier_head(x, num_classes), name="ds_cnn1d")


def _autoencoder(p: AutoencoderParams, shape: tuple[int, ...]) -> keras.Model:
    import keras

    layers = keras.layers
    size = 1
    for d in shape:
        size *= d
    inputs = keras.Input(shape=shape, name="input")
    x = layers.Flatten()(inputs) if len(shape) > 1 else inputs

    def dense_block(x: Any, units: int) -> Any:
        x = layers.Dense(units)(x)
        if p.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return layers.ReLU()(x)

    for units in p.hidden_units:
        x = dense_block(x, units)
    x = dense_block(x, p.bottleneck)
    for units in reversed(p.hidden_units):
        x = dense_block(x, units)
    # Linear output: the reconstruction is compared to the input with mean squared error.
    x = layers.Dense(size, name="reconstruction")(x)
    if len(shape) > 1:
        x = layers.Reshape(shape)(x)
    return keras.Model(inputs, x, name="autoencoder")
