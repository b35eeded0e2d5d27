from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.targets.device_validate import classes, validate_on_device, validate_outputs


def test_scores_by_hand() -> None:
    device = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    labels = np.array([1, 0, 0])
    reference = np.array([[0.2, 0.8], [0.6, 0.4], [0.6, 0.4]], np.float32)
    result = validate_outputs(device, labels, reference)
    # classes: device [1, 0, 1], labels [1, 0, 0] → 2/3; reference [1, 0, 0] → 2/3.
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.agreement == pytest.approx(2 / 3)
    # largest |difference|: sample 3, |0.3 - 0.6| = |0.7 - 0.4| = 0.3
    assert result.max_abs_output_diff == pytest.approx(0.3)
    assert result.n == 3


def test_one_hot_labels_and_sigmoid_outputs() -> None:
    assert classes(np.array([[0.2], [0.51], [0.5]])).tolist() == [0, 1, 0]
    one_hot = np.array([[0, 1], [1, 0]])
    result = validate_outputs(np.array([[0.3, 0.7], [0.4, 0.6]]), one_hot, None)
    assert (result.accuracy, result.agreement, result.max_abs_output_diff) == (0.5, None, None)


def test_mismatched_lengths_are_data_errors() -> None:
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        validate_outputs(np.zeros((3, 2)), np.array([0, 1]), None)
    with pytest.raises(DataError, match=r"reference outputs have shape \[2, 2\]"):
        validate_outputs(np.zeros((3, 2)), None, np.zeros((2, 2)))


def test_every_sample_runs_through_tflm(fc_model_bytes: bytes) -> None:
    x = np.array([[1, 2, 3, 4], [0.5, -1, 2, -3], [4, 0, 0, 0]], np.float32)
    # TFLM outputs by hand (see test_tflm_runtime): [1, 6], [1, 0], [4, 3]
    # → classes 1, 0, 0.
    labels = np.array([1, 0, 1])
    reference = np.array([[1, 6], [0.5, 0.25], [4, 3]], np.float32)  # exact float y = Wx + b
    result = validate_on_device(fc_model_bytes, x, labels, reference, source="fc.tflite")
    assert result.n == 3
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.agreement == 1.0
    assert result.max_abs_output_diff == pytest.approx(0.5)  # 1 vs 0.5 from output rounding


@pytest.mark.fixtures
def test_kws_tflm_matches_litert_reference(mlperf_bytes: Callable[[str], bytes]) -> None:
    """Float reference from LiteRT on the same model: TFLM agrees, within one output step."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tinyops.optimize.quant import dequantize, quantize

    data = mlperf_bytes("kws_ref_model.tflite")
    litert = Interpreter(
        model_content=data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    litert.allocate_tensors()
    inp, out = litert.get_input_details()[0], litert.get_output_details()[0]
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    x = np.random.default_rng(3).normal(0, 20, size=(6, 49, 10, 1)).astype(np.float32)
    reference = []
    for sample in x:
        litert.set_tensor(inp["index"], quantize(sample[None], in_scale, in_zp))
        litert.invoke()
        reference.append(dequantize(litert.get_tensor(out["index"])[0], out_scale, out_zp))
    ref = np.stack(reference)
    result = validate_on_device(data, x, classes(ref), ref)
    assert result.n == 6
    assert result.accuracy == 1.0 and result.agreement == 1.0
    assert result.max_abs_output_diff <= out_scale + 1e-7
