"""Golden tests of the feature blocks: tiny inputs whose outputs are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.features import blocks


def cosine(bin_index: int, length: int = 8) -> np.ndarray:
    """One frame of cos(2π·bin·n/L): all its energy sits in FFT bin `bin_index`."""
    n = np.arange(length)
    return np.cos(2 * np.pi * bin_index * n / length)


# --------------------------------------------------------------------------- scaling


def test_scale_maps_digit_pixels_to_unit_range() -> None:
    out = blocks.scale(np.array([[0, 8, 16]], dtype=np.int64), mul=1 / 16, add=0.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(blocks.scale(np.array([2.0]), 3.0, -1.0), [5.0])


def test_cast_float_and_reshape() -> None:
    out = blocks.reshape(np.arange(2 * 64).reshape(2, 64), [8, 8, 1])
    assert out.shape == (2, 8, 8, 1) and out.dtype == np.float32
    assert out[1, 0, 1, 0] == 65.0  # row-major: sample 1, element 1
    assert blocks.reshape(np.zeros((3, 2, 6)), [-1, 4]).shape == (3, 3, 4)
    assert blocks.cast_float(np.array([1, 2], dtype=np.uint8)).dtype == np.float32
    with pytest.raises(DataError, match=r"cannot reshape samples of shape \(64,\) \(64 values\)"):
        blocks.reshape(np.zeros((2, 64)), [8, 9])
    with pytest.raises(DataError, match="sizes differ"):
        blocks.reshape(np.zeros((2, 10)), [-1, 3])


# --------------------------------------------------------------------------- fitted blocks


def test_standardize_per_feature() -> None:
    train = np.array([[1.0, 10.0], [3.0, 30.0]])
    params = blocks.fit_standardize(train)
    np.testing.assert_array_equal(params.mean, [2.0, 20.0])
    np.testing.assert_array_equal(params.std, [1.0, 10.0])  # population std (ddof = 0)
    out = blocks.standardize(np.array([[2.0, 40.0], [0.0, 0.0]]), params, eps=1e-6)
    np.testing.assert_array_equal(out, [[0.0, 2.0], [-2.0, -2.0]])


def test_standardize_constant_feature_divides_by_eps() -> None:
    params = blocks.fit_standardize(np.array([[5.0], [5.0]]))
    assert params.std[0] == 0.0
    out = blocks.standardize(np.array([[5.5]]), params, eps=0.25)
    np.testing.assert_array_equal(out, [[2.0]])  # (5.5 - 5) / max(0, 0.25)


def test_standardize_axes() -> None:
    # Two samples of a 2x2 image with channels on the last axis.
    train = np.array([[[0.0, 10.0], [2.0, 10.0]], [[4.0, 30.0], [6.0, 30.0]]])
    last = blocks.fit_standardize(train, "last")
    np.testing.assert_array_equal(last.mean, [3.0, 20.0])  # channel 0: mean of 0, 2, 4, 6
    np.testing.assert_allclose(last.std, [math.sqrt(5.0), 10.0], rtol=1e-7)
    sample = blocks.fit_standardize(train, "sample")
    np.testing.assert_array_equal(sample.mean, [[2.0, 20.0], [4.0, 20.0]])
    np.testing.assert_array_equal(sample.std, [[2.0, 10.0], [2.0, 10.0]])
    whole = blocks.fit_standardize(train, "all")
    assert whole.mean.shape == () and whole.mean == 11.5


def test_standardize_rejects_samples_of_another_shape() -> None:
    params = blocks.fit_standardize(np.zeros((4, 3, 2)), "sample")
    with pytest.raises(DataError, match=r"trailing axes are \(3, 2\).*shape \(3, 3\)"):
        blocks.standardize(np.zeros((1, 3, 3)), params, 1e-6)


def test_fit_refuses_empty_or_non_finite_train() -> None:
    with pytest.raises(DataError, match="empty train split"):
        blocks.fit_standardize(np.zeros((0, 3)))
    with pytest.raises(DataError, match="NaN or infinite"):
        blocks.fit_minmax(np.array([[1.0], [np.nan]]))


def test_minmax_with_and_without_clip() -> None:
    params = blocks.fit_minmax(np.array([[0.0, -1.0], [4.0, 1.0]]))
    np.testing.assert_array_equal(params.minimum, [0.0, -1.0])
    np.testing.assert_array_equal(params.maximum, [4.0, 1.0])
    x = np.array([[2.0, 0.0], [8.0, -3.0]])
    np.testing.assert_array_equal(
        blocks.minmax(x, params, 1e-6, clip=False), [[0.5, 0.5], [2.0, -1.0]]
    )
    np.testing.assert_array_equal(blocks.minmax(x, params, 1e-6, clip=True), [[0.5, 0.5], [1, 0]])
    flat = blocks.fit_minmax(np.array([[3.0], [3.0]]))
    np.testing.assert_array_equal(blocks.minmax(np.array([[3.5]]), flat, 0.5, False), [[1.0]])


# --------------------------------------------------------------------------- time series


def test_window_frames_a_series() -> None:
    x = np.arange(10).reshape(1, 10)
    out = blocks.window(x, length=4, stride=3)  # 1 + (10 - 4) // 3 = 3 frames, sample 9 drops
    np.testing.assert_array_equal(out, [[[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]])
    assert out.dtype == np.float32


def test_window_keeps_channels_last() -> None:
    x = np.array([[[0, 100], [1, 101], [2, 102], [3, 103], [4, 104]]])  # (1, T=5, C=2)
    out = blocks.window(x, length=2, stride=2)
    assert out.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(out[0, 1], [[2, 102], [3, 103]])  # frame 1: samples 2, 3


def test_window_errors_name_the_expected_shape() -> None:
    with pytest.raises(DataError, match=r"at least 4 samples, got T=3"):
        blocks.window(np.zeros((2, 3)), length=4, stride=1)
    with pytest.raises(DataError, match=r"\(N, T\) or \(N, T, C\), got shape \(2, 3, 4, 5\)"):
        blocks.window(np.zeros((2, 3, 4, 5)), length=2, stride=1)


def test_hann_window_is_periodic() -> None:
    np.testing.assert_allclose(blocks.hann_window(4), [0.0, 0.5, 1.0, 0.5], atol=1e-15)


def test_band_power_of_a_cosine_golden() -> None:
    # x = cos(2π n/8): X = 4 at bins ±1. Hann mixes neighbours: Xw[k] = X[k]/2 - X[k±1]/4,
    # so the rfft bins 0..4 are [-2, 2, -1, 0, 0] and P = |Xw|²/8 = [.5, .5, .125, 0, 0].
    x = cosine(1)[None]
    np.testing.assert_allclose(
        blocks.fft_band_power(x, bands=5), [[0.5, 0.5, 0.125, 0.0, 0.0]], atol=1e-7
    )
    # Two equal bands of 0..Nyquist: bins {0, 1} and {2, 3, 4}.
    np.testing.assert_allclose(blocks.fft_band_power(x, bands=2), [[1.0, 0.125]], atol=1e-7)
    np.testing.assert_allclose(
        blocks.fft_band_power(x, bands=2, log=True), [[0.0, math.log10(0.125)]], atol=1e-6
    )


def test_band_power_of_a_constant_golden() -> None:
    # A constant 1: Xw[0] = Σw = 4, Xw[1] = -2, so P = [16/8, 4/8, 0, 0, 0].
    np.testing.assert_allclose(
        blocks.fft_band_power(np.ones((1, 8)), bands=4), [[2.0, 0.5, 0.0, 0.0]], atol=1e-7
    )


def test_band_power_with_edges_in_hz() -> None:
    # fs = 8 Hz, L = 8: bins at 0, 1, 2, 3, 4 Hz. Edges [0.5, 2.5, 4]: DC is in no band,
    # bins 1-2 in band 0, bins 3-4 in band 1 (the top edge is inclusive).
    table = blocks.band_of_bin(8, edges_hz=[0.5, 2.5, 4.0], sample_rate=8)
    np.testing.assert_array_equal(table, [-1, 0, 0, 1, 1])
    # cos(2π·3n/8): Hann gives Xw = -1, 2, -2 at bins 2, 3, 4 → P = .125, .5, .5.
    out = blocks.fft_band_power(cosine(3)[None], edges_hz=[0.5, 2.5, 4.0], sample_rate=8)
    np.testing.assert_allclose(out, [[0.125, 1.0]], atol=1e-7)


def test_equal_bands_agree_with_equal_edges() -> None:
    for length, bands in [(8, 2), (9, 3), (64, 8), (100, 7)]:
        equal = blocks.band_of_bin(length, bands=bands)
        edges = np.linspace(0, 50, bands + 1)  # fs = 100 Hz, Nyquist = 50 Hz
        np.testing.assert_array_equal(
            equal, blocks.band_of_bin(length, edges_hz=list(edges), sample_rate=100)
        )


def test_band_power_layouts() -> None:
    # Channels last (N, T, C): channel 0 a cosine at bin 1, channel 1 a constant.
    x = np.stack([cosine(1), np.ones(8)], axis=-1)[None]
    out = blocks.fft_band_power(x, bands=2, channels_last=True)
    assert out.shape == (1, 2, 2)  # (N, bands, C)
    np.testing.assert_allclose(out[0], [[1.0, 2.5], [0.125, 0.0]], atol=1e-7)
    # Framed (N, F, L): one result per frame.
    framed = np.stack([cosine(1), np.ones(8)])[None]
    np.testing.assert_allclose(
        blocks.fft_band_power(framed, bands=2)[0], [[1.0, 0.125], [2.5, 0.0]], atol=1e-7
    )


def test_band_power_too_few_bins_hints_at_channels() -> None:
    with pytest.raises(DataError, match=r"hold no FFT bin.*channels_last: true"):
        blocks.fft_band_power(np.zeros((2, 3)), bands=8)


# --------------------------------------------------------------------------- audio


def test_mel_scale_golden() -> None:
    # 2595·log10(1 + f/700): f = 700 → 2595·log10 2; f = 1000 → 2595·log10(17/7).
    np.testing.assert_allclose(
        blocks.hz_to_mel([0.0, 700.0, 1000.0, 4000.0]),
        [0.0, 781.1728387480312, 999.9855371396244, 2146.06452750619],
        rtol=1e-12,
    )
    np.testing.assert_allclose(blocks.mel_to_hz(blocks.hz_to_mel([20.0, 8000.0])), [20, 8000])


def test_mel_filterbank_golden() -> None:
    # upper_hz = 4900 = 700·(2³ - 1): in units of u = log2(1 + f/700) the 4 edges of two
    # filters sit at u = 0, 1, 2, 3 (0, 700, 2100, 4900 Hz) and the weights are plain
    # differences of u. fs = 11200 Hz, fft_length = 32: bins every 350 Hz.
    fb = blocks.mel_filterbank(2, 32, 11200, 0.0, 4900.0)
    assert fb.shape == (17, 2)
    u = np.log2(1 + np.arange(17) * 350 / 700)
    # bin 1 at 350 Hz: u = log2 1.5 = 0.585 (rising); bin 3 at 1050 Hz: u = log2 2.5 = 1.322.
    expected_0 = [0, 0.5849625, 1, 0.6780719, 0.4150375, 0.1926451] + [0] * 11
    expected_1 = [0, 0, 0, 0.3219281, 0.5849625, 0.8073549, 1, 0.8300750, 0.6780719]
    expected_1 += [0.5405683, 0.4150375, 0.2995603, 0.1926451, 0.0931094, 0, 0, 0]
    np.testing.assert_allclose(fb[:, 0], expected_0, atol=1e-7)
    np.testing.assert_allclose(fb[:, 1], expected_1, atol=1e-7)
    np.testing.assert_allclose(fb[4, 1], u[4] - 1, atol=1e-12)  # rising side of filter 1


def test_mel_filterbank_rejects_upper_above_nyquist() -> None:
    with pytest.raises(ValueError, match="upper_hz <= sample_rate/2"):
        blocks.mel_filterbank(10, 512, 8000, 0.0, 4001.0)


def test_log_mel_of_a_constant_frame_golden() -> None:
    # One 32-sample frame of 1.0: Xw[0] = 16, Xw[1] = -8, so P = 256 at bin 0 (0 Hz, weight 0
    # in both filters) and 64 at bin 1 (350 Hz, weight log2 1.5 in filter 0).
    out = blocks.log_mel(
        np.ones((1, 32)),
        sample_rate=11200,
        frame_length=32,
        frame_step=32,
        fft_length=32,
        num_mel_bins=2,
        lower_hz=0.0,
        upper_hz=4900.0,
    )
    assert out.shape == (1, 1, 2) and out.dtype == np.float32
    expected = [math.log(64 * math.log2(1.5) + 1e-6), math.log(1e-6)]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_log_mel_frames_and_errors() -> None:
    # 1 + (16000 - 640) // 320 = 49 frames of 40 filters for one second at 16 kHz.
    assert blocks.log_mel(np.zeros((2, 16000)), sample_rate=16000).shape == (2, 49, 40)
    with pytest.raises(DataError, match="at least 640 samples, got S=100"):
        blocks.log_mel(np.zeros((1, 100)), sample_rate=16000)
    with pytest.raises(DataError, match=r"\(N, S\) of mono audio samples, got shape \(1, 2, 3\)"):
        blocks.log_mel(np.zeros((1, 2, 3)), sample_rate=16000)


def test_log_mel_agrees_with_tensorflow_signal() -> None:
    tf = pytest.importorskip("tensorflow")
    audio = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    stft = tf.signal.stft(audio, 640, 320, 1024, window_fn=tf.signal.hann_window)
    weights = tf.signal.linear_to_mel_weight_matrix(40, 513, 16000, 20.0, 4000.0)
    expected = tf.math.log(tf.tensordot(tf.abs(stft) ** 2, weights, 1) + 1e-6).numpy()
    ours = blocks.log_mel(audio, sample_rate=16000)
    # TensorFlow works in float32; ours rounds once at the end.
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_dct_ii_ortho_golden() -> None:
    # M = 2: c0 = (x0 + x1)/√2, c1 = (x0 - x1)/√2 (cos(π/4) = -cos(3π/4) = 1/√2, s1 = 1).
    d = blocks.dct_ii_ortho(2, 2)
    np.testing.assert_allclose(np.array([3.0, 1.0]) @ d, [4 / math.sqrt(2), 2 / math.sqrt(2)])
    square = blocks.dct_ii_ortho(8, 8)
    np.testing.assert_allclose(square.T @ square, np.eye(8), atol=1e-12)


def test_mfcc_is_the_orthonormal_dct_of_log_mel() -> None:
    from scipy.fft import dct

    audio = np.random.default_rng(1).standard_normal((3, 3000))
    settings = {"sample_rate": 8000, "frame_length": 256, "frame_step": 128, "fft_length": 256}
    settings.update(num_mel_bins=20, lower_hz=50.0, upper_hz=3800.0)
    out = blocks.mfcc(audio, num_coefficients=13, **settings)
    expected = dct(blocks.log_mel(audio, **settings), type=2, norm="ortho", axis=-1)[..., :13]
    assert out.shape == (3, 22, 13)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-5)


def test_fft_blocks_are_deterministic_and_chunking_does_not_change_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audio = np.random.default_rng(2).standard_normal((4, 2000))
    first = blocks.mfcc(audio, sample_rate=16000)
    assert first.tobytes() == blocks.mfcc(audio, sample_rate=16000).tobytes()
    series = np.random.default_rng(3).standard_normal((5, 64, 3))
    band = blocks.fft_band_power(series, bands=4, channels_last=True, log=True)
    # Force one sample per slice: the batched path and the sliced path must agree.
    monkeypatch.setattr(blocks, "_CHUNK_BYTES", 1)
    np.testing.assert_array_equal(blocks.mfcc(audio, sample_rate=16000), first)
    np.testing.assert_array_equal(
        blocks.fft_band_power(series, bands=4, channels_last=True, log=True), band
    )


# --------------------------------------------------------------------------- images


def test_image_resize_2x2_to_4x4_golden() -> None:
    # Half-pixel centres: output d samples s = (d + .5)/2 - .5 = -.25, .25, .75, 1.25,
    # clamped to [0, 1]: weights t = 0, .25, .75, 1 toward the second pixel on each axis.
    image = np.array([[[0.0, 4.0], [8.0, 12.0]]])
    expected = [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    np.testing.assert_array_equal(blocks.image_resize(image, (4, 4)), [expected])


def test_image_resize_halving_averages_2x2_blocks() -> None:
    # s = (d + .5)·2 - .5 = .5, 2.5: each output pixel is the mean of a 2x2 block.
    image = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    out = blocks.image_resize(image, (2, 2))
    np.testing.assert_array_equal(out[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(blocks.image_resize(image, (4, 4)), image)  # identity


def test_image_resize_matches_opencv_inter_linear() -> None:
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(4).random((7, 9, 3)).astype(np.float32)
    for height, width in [(4, 5), (13, 20)]:
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        ours = blocks.image_resize(image[None], (height, width))[0]
        np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_grayscale_bt601_golden() -> None:
    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]])
    out = blocks.grayscale(pixels)
    assert out.shape == (1, 1, 4, 1)
    np.testing.assert_allclose(out[0, 0, :, 0], [76.245, 149.685, 29.07, 255.0], rtol=1e-6)
    assert blocks.grayscale(pixels, keep_channel_axis=False).shape == (1, 1, 4)
    with pytest.raises(DataError, match=r"\(N, H, W, 3\) of RGB pixels, got shape \(1, 2, 2, 4\)"):
        blocks.grayscale(np.zeros((1, 2, 2, 4)))


def test_image_normalize_golden() -> None:
    pixels = np.array([[[[255.0, 0.0, 51.0]]]])
    np.testing.assert_allclose(blocks.image_normalize(pixels), [[[[1.0, 0.0, 0.2]]]], rtol=1e-7)
    out = blocks.image_normalize(pixels, mean=[0.5, 0.5, 0.0], std=[0.5, 0.25, 0.1])
    np.testing.assert_allclose(out, [[[[1.0, -2.0, 2.0]]]], rtol=1e-6)
    with pytest.raises(DataError, match="mean has 2 values but the images have 3 channels"):
        blocks.image_normalize(pixels, mean=[0.5, 0.5])
