"""Feature blocks: the exact arithmetic a device repeats before it runs the model.

Every block maps a batch `(N, ...)` to a float32 batch `(N, ...)`, each sample on its own.
`standardize` and `minmax` also take parameters fitted on the train split
(`fit_standardize`, `fit_minmax`). Each docstring states the formula, its constants and
the array layout, so that a C implementation on a device can produce the same numbers.

Conventions shared by all blocks:

- Dtypes. Any real input dtype is converted to float64, the arithmetic is float64, and the
  result is rounded to float32 once, at the block's output. A float32 implementation on a
  device agrees to a few float32 ulps for the element-wise blocks and to about 1e-5
  (relative to the largest value of a frame) for the FFT-based ones.
- Hann window, periodic (as `tf.signal.hann_window(periodic=True)`), for a frame of L samples:
  `w[n] = 0.5 - 0.5·cos(2πn / L)`, n = 0 .. L-1.
- Real FFT, unscaled: `X[k] = Σ_{n=0}^{L-1} x[n]·exp(-2πi·k·n / L)`, k = 0 .. L//2,
  bin k at frequency `k·sample_rate / L` Hz.
- Framing: frame j holds samples `[j·step, j·step + length)`; a series of T samples gives
  `1 + (T - length) // step` frames; trailing samples that fill no frame are dropped.
- Blocks are deterministic: the same input gives the same bytes, run after run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError

Float32Array = NDArray[np.float32]
Float64Array = NDArray[np.float64]
StatAxis = Literal["last", "sample", "all"]

LOG_POWER_FLOOR = 1e-10
"""Added to band power before log10 in `fft_band_power` (power units), so silence is finite."""

LOG_MEL_FLOOR = 1e-6
"""Added to mel energies before the natural log in `log_mel` and `mfcc` (power units)."""

BT601_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G and B (they sum to 1)."""

# Upper bound, in bytes, of the float64/complex128 temporaries the FFT blocks hold at once;
# larger batches are processed in slices of whole samples so memory stays flat.
_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- helpers


def _as_float64(x: ArrayLike) -> Float64Array:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise DataError("expected a batch (N, ...) with the sample axis first, got a scalar")
    return arr.astype(np.float64, copy=False)


def _shape_error(expected: str, arr: NDArray[Any]) -> DataError:
    return DataError(f"expected a batch of shape {expected}, got shape {tuple(arr.shape)}")


def _by_chunks(
    arr: Float64Array, bytes_per_sample: int, fn: Callable[[Float64Array], Float64Array]
) -> Float32Array:
    """Apply `fn` to slices of whole samples and concatenate the float32 results."""
    rows = max(1, _CHUNK_BYTES // max(bytes_per_sample, 1))
    if arr.shape[0] <= rows:
        return fn(arr).astype(np.float32)
    parts = [fn(arr[i : i + rows]).astype(np.float32) for i in range(0, arr.shape[0], rows)]
    return np.concatenate(parts, axis=0)


def _frames(arr: NDArray[Any], length: int, step: int) -> NDArray[Any]:
    """View (N, T[, C]) as (N, frames, length[, C]); frame j starts at sample j·step."""
    view = np.lib.stride_tricks.sliding_window_view(arr, length, axis=1)[:, ::step]
    # sliding_window_view appends the window axis last: (N, F, C, L) → (N, F, L, C).
    return np.moveaxis(view, -1, 2) if arr.ndim == 3 else view


def hann_window(length: int) -> Float64Array:
    """Periodic Hann window: w[n] = 0.5 - 0.5·cos(2πn / length), n = 0 .. length-1."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * n / length)


# --------------------------------------------------------------------------- scaling


def scale(x: ArrayLike, mul: float, add: float) -> Float32Array:
    """y = x·mul + add, element-wise, any shape."""
    return (_as_float64(x) * mul + add).astype(np.float32)


def cast_float(x: ArrayLike) -> Float32Array:
    """y = float32(x): round-to-nearest-even conversion, any shape."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def reshape(x: ArrayLike, shape: Sequence[int]) -> Float32Array:
    """Reshape every sample to `shape` in row-major (C) order; one entry may be -1."""
    arr = np.asarray(x)
    if arr.ndim < 1:
        raise DataError("expected a batch (N, ...) with the sample axis first, got a scalar")
    if any(d == 0 or d < -1 for d in shape) or list(shape).count(-1) > 1:
        raise ValueError(f"shape entries must be positive, with at most one -1, got {list(shape)}")
    size = math.prod(arr.shape[1:])
    known = math.prod(d for d in shape if d != -1)
    target = tuple(size // known if d == -1 else d for d in shape)
    if math.prod(target) != size or (-1 in shape and size % known):
        raise DataError(
            f"cannot reshape samples of shape {tuple(arr.shape[1:])} ({size} values) to"
            f" {list(shape)}: the sizes differ"
        )
    return np.ascontiguousarray(arr.reshape((arr.shape[0], *target)), dtype=np.float32)


# --------------------------------------------------------------------------- fitted blocks


@dataclass(frozen=True)
class StandardizeParams:
    """Mean and population standard deviation fitted on the train split, as float32."""

    mean: Float32Array
    std: Float32Array


@dataclass(frozen=True)
class MinMaxParams:
    """Minimum and maximum fitted on the train split, as float32."""

    minimum: Float32Array
    maximum: Float32Array


def _stat_axes(ndim: int, axis: StatAxis) -> tuple[int, ...]:
    if axis == "sample":
        return (0,)
    if axis == "all":
        return tuple(range(ndim))
    # "last": reduce everything but the last axis; a (N,) batch has one scalar feature.
    return tuple(range(max(ndim - 1, 1)))


def _fit_input(x: ArrayLike) -> Float64Array:
    arr = _as_float64(x)
    if arr.shape[0] == 0:
        raise DataError("cannot fit on an empty train split (0 samples)")
    if not np.isfinite(arr).all():
        raise DataError("cannot fit on a train split that holds NaN or infinite values")
    return arr


def _check_fitted_shape(arr: Float64Array, fitted: tuple[int, ...]) -> None:
    """Fitted parameters broadcast against the trailing axes of a sample."""
    trailing = tuple(arr.shape[arr.ndim - len(fitted) :]) if fitted else ()
    if arr.ndim <= len(fitted) or trailing != fitted:
        raise DataError(
            f"parameters were fitted for samples whose trailing axes are {fitted},"
            f" got samples of shape {tuple(arr.shape[1:])}"
        )


def fit_standardize(x: ArrayLike, axis: StatAxis = "last") -> StandardizeParams:
    """Fit mean and std (ddof = 0) over the axes that `axis` reduces, in float64.

    Both are rounded to float32, the precision a device stores them in, and `standardize`
    uses those rounded values, so host and device apply the same constants.
    """
    arr = _fit_input(x)
    axes = _stat_axes(arr.ndim, axis)
    return StandardizeParams(
        mean=np.asarray(arr.mean(axis=axes), dtype=np.float32),
        std=np.asarray(arr.std(axis=axes), dtype=np.float32),
    )


def standardize(x: ArrayLike, params: StandardizeParams, eps: float) -> Float32Array:
    """y = (x - mean) / max(std, eps), with mean and std broadcast over the trailing axes."""
    arr = _as_float64(x)
    _check_fitted_shape(arr, params.mean.shape)
    denominator = np.maximum(params.std.astype(np.float64), eps)
    return ((arr - params.mean.astype(np.float64)) / denominator).astype(np.float32)


def fit_minmax(x: ArrayLike, axis: StatAxis = "last") -> MinMaxParams:
    """Fit min and max over the axes that `axis` reduces (exact; stored as float32)."""
    arr = _fit_input(x)
    axes = _stat_axes(arr.ndim, axis)
    return MinMaxParams(
        minimum=np.asarray(arr.min(axis=axes), dtype=np.float32),
        maximum=np.asarray(arr.max(axis=axes), dtype=np.float32),
    )


def minmax(x: ArrayLike, params: MinMaxParams, eps: float, clip: bool) -> Float32Array:
    """y = (x - min) / max(max - min, eps), then clipped to [0, 1] when `clip`."""
    arr = _as_float64(x)
    _check_fitted_shape(arr, params.minimum.shape)
    lo = params.minimum.astype(np.float64)
    span = np.maximum(params.maximum.astype(np.float64) - lo, eps)
    y = (arr - lo) / span
    return (np.clip(y, 0.0, 1.0) if clip else y).astype(np.float32)


# --------------------------------------------------------------------------- time series


def window(x: ArrayLike, length: int, stride: int) -> Float32Array:
    """Frame each series: (N, T) → (N, F, length), (N, T, C) → (N, F, length, C).

    Frame j holds samples [j·stride, j·stride + length); F = 1 + (T - length) // stride.
    Values are copied unchanged (float32).
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise _shape_error("(N, T) or (N, T, C)", arr)
    if arr.shape[1] < length:
        raise DataError(
            f"a window of length {length} needs series of at least {length} samples,"
            f" got T={arr.shape[1]} (batch shape {tuple(arr.shape)})"
        )
    return np.ascontiguousarray(_frames(arr, length, stride), dtype=np.float32)


def band_of_bin(
    length: int,
    bands: int | None = None,
    edges_hz: Sequence[float] | None = None,
    sample_rate: float | None = None,
) -> NDArray[np.intp]:
    """Band index of each real-FFT bin k = 0 .. length//2 of a frame; -1 if in no band.

    Equal-width bands (`bands` given, no edges) split 0 Hz .. Nyquist into `bands` bands of
    equal width; in integers: band(k) = min(⌊2·k·bands / length⌋, bands - 1), which is the
    same as the edges b·(sample_rate/2)/bands below.

    Edges (`edges_hz`, needs `sample_rate`): bin k at f_k = k·sample_rate/length Hz (float64)
    belongs to band b when edges[b] <= f_k < edges[b+1]; the last band also takes
    f_k == edges[-1]. Bins below the first or above the last edge belong to no band.
    """
    k = np.arange(length // 2 + 1)
    if edges_hz is None:
        if bands is None:
            raise ValueError("band_of_bin needs `bands` or `edges_hz`")
        return np.minimum((2 * k * bands) // length, bands - 1)
    if sample_rate is None:
        raise ValueError("band edges in Hz need the sample rate")
    edges = np.asarray(edges_hz, dtype=np.float64)
    n_bands = len(edges) - 1
    freq = k * float(sample_rate) / length
    index = np.searchsorted(edges, freq, side="right") - 1
    index = np.where(freq == edges[-1], n_bands - 1, index)
    return np.where((index >= 0) & (index < n_bands), index, -1)


def fft_band_power(
    x: ArrayLike,
    *,
    bands: int | None = 8,
    edges_hz: Sequence[float] | None = None,
    sample_rate: float | None = None,
    log: bool = False,
    channels_last: bool = False,
) -> Float32Array:
    """Power in frequency bands of each frame, along the time axis.

    The time axis is the last axis, or the one before it when `channels_last`:
    (N, T) → (N, B); (N, F, L) → (N, F, B); with channels_last (N, T, C) → (N, B, C) and
    (N, F, L, C) → (N, F, B, C). For each frame x of L samples:

        X = rfft(w · x)                      w: periodic Hann of length L
        P[k] = |X[k]|² / L                   k = 0 .. L//2
        E[b] = Σ_{k : band(k) = b} P[k]      band(k): see `band_of_bin`
        out = E, or log10(E + 1e-10) when `log`
    """
    arr = _as_float64(x)
    min_ndim = 3 if channels_last else 2
    if arr.ndim < min_ndim:
        raise _shape_error(
            "(N, T, C) or (N, F, L, C)" if channels_last else "(N, T) or (N, F, L)", arr
        )
    axis = arr.ndim - 2 if channels_last else arr.ndim - 1
    length = arr.shape[axis]
    table = band_of_bin(length, bands, edges_hz, sample_rate)
    n_bands = len(edges_hz) - 1 if edges_hz is not None else int(bands or 0)
    counts = np.bincount(table[table >= 0], minlength=n_bands)
    if (counts == 0).any():
        empty = [int(b) for b in np.flatnonzero(counts == 0)]
        hint = (
            ""
            if channels_last or arr.ndim > 2
            else "; if the last axis holds channels set channels_last: true"
        )
        raise DataError(
            f"bands {empty} hold no FFT bin: a frame of {length} samples has {len(table)}"
            f" bins, too few for these {n_bands} bands; use fewer bands or longer frames{hint}"
        )
    onehot = (table[:, None] == np.arange(n_bands)[None, :]).astype(np.float64)
    hann = hann_window(length)

    def band_power(chunk: Float64Array) -> Float64Array:
        frames = np.moveaxis(chunk, axis, -1)
        spectrum = np.fft.rfft(frames * hann, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2) / length
        energy = power @ onehot
        if log:
            energy = np.log10(energy + LOG_POWER_FLOOR)
        return np.moveaxis(energy, -1, axis)

    per_sample = 3 * 16 * math.prod(arr.shape[1:])
    return _by_chunks(arr, per_sample, band_power)


# --------------------------------------------------------------------------- audio


def hz_to_mel(hz: ArrayLike) -> Float64Array:
    """HTK mel scale: mel(f) = 2595·log10(1 + f / 700), f in Hz."""
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0))


def mel_to_hz(mel: ArrayLike) -> Float64Array:
    """Inverse of `hz_to_mel`: f(m) = 700·(10^(m / 2595) - 1)."""
    return np.asarray(700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0))


def mel_filterbank(
    num_mel_bins: int, fft_length: int, sample_rate: float, lower_hz: float, upper_hz: float
) -> Float64Array:
    """Triangular HTK mel filters as a (fft_length//2 + 1, num_mel_bins) weight matrix.

    The M + 2 filter edges e_0 .. e_{M+1} are equally spaced in mel from mel(lower_hz) to
    mel(upper_hz). Filter m (0-based) rises from e_m to e_{m+1} and falls to e_{m+2}, with
    slopes taken in mel (as `tf.signal.linear_to_mel_weight_matrix`): for FFT bin k at
    f_k = k·sample_rate/fft_length Hz and u = mel(f_k),

        W[k, m] = max(0, min((u - e_m) / (e_{m+1} - e_m), (e_{m+2} - u) / (e_{m+2} - e_{m+1})))
    """
    if not 0 <= lower_hz < upper_hz <= sample_rate / 2:
        raise ValueError(
            f"mel filters need 0 <= lower_hz < upper_hz <= sample_rate/2, got lower_hz="
            f"{lower_hz}, upper_hz={upper_hz}, sample_rate={sample_rate}"
        )
    edges = np.linspace(hz_to_mel(lower_hz), hz_to_mel(upper_hz), num_mel_bins + 2)
    bins = np.arange(fft_length // 2 + 1, dtype=np.float64)
    u = hz_to_mel(bins * sample_rate / fft_length)[:, None]
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (u - left) / (centre - left)
    falling = (right - u) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def dct_ii_ortho(num_inputs: int, num_outputs: int) -> Float64Array:
    """Orthonormal DCT-II as a (num_inputs, num_outputs) matrix D, so that c = x @ D.

    D[m, j] = s_j·cos(π·j·(2m + 1) / (2·M)), M = num_inputs, s_0 = √(1/M), s_j = √(2/M);
    the same as scipy.fft.dct(x, type=2, norm="ortho")[:num_outputs].
    """
    m = np.arange(num_inputs, dtype=np.float64)[:, None]
    j = np.arange(num_outputs, dtype=np.float64)[None, :]
    scale_j = np.where(j == 0, math.sqrt(1.0 / num_inputs), math.sqrt(2.0 / num_inputs))
    return np.asarray(scale_j * np.cos(math.pi * j * (2.0 * m + 1.0) / (2.0 * num_inputs)))


def _audio_input(x: ArrayLike, frame_length: int) -> Float64Array:
    arr = _as_float64(x)
    if arr.ndim != 2:
        raise _shape_error("(N, S) of mono audio samples", arr)
    if arr.shape[1] < frame_length:
        raise DataError(
            f"a frame of {frame_length} samples needs clips of at least {frame_length}"
            f" samples, got S={arr.shape[1]}"
        )
    return arr


def _log_mel64(
    audio: Float64Array, frame_length: int, frame_step: int, fft_length: int, fbank: Float64Array
) -> Float64Array:
    frames = _frames(audio, frame_length, frame_step) * hann_window(frame_length)
    spectrum = np.fft.rfft(frames, n=fft_length, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    return np.asarray(np.log(power @ fbank + LOG_MEL_FLOOR))


def log_mel(
    x: ArrayLike,
    *,
    sample_rate: float,
    frame_length: int = 640,
    frame_step: int = 320,
    fft_length: int = 1024,
    num_mel_bins: int = 40,
    lower_hz: float = 20.0,
    upper_hz: float = 4000.0,
) -> Float32Array:
    """Log-mel spectrogram of mono audio: (N, S) → (N, F, num_mel_bins).

    For each frame x_j (see framing above; F = 1 + (S - frame_length) // frame_step):

        X = rfft(w · x_j, n=fft_length)      w: periodic Hann of frame_length, zero-padded
        P[k] = |X[k]|²                       unscaled power, k = 0 .. fft_length//2
        E[m] = Σ_k P[k]·W[k, m]              W: `mel_filterbank`
        out[j, m] = ln(E[m] + 1e-6)
    """
    audio = _audio_input(x, frame_length)
    fbank = mel_filterbank(num_mel_bins, fft_length, sample_rate, lower_hz, upper_hz)
    n_frames = 1 + (audio.shape[1] - frame_length) // frame_step
    per_sample = 3 * 16 * n_frames * (fft_length // 2 + 1)
    return _by_chunks(
        audio, per_sample, lambda a: _log_mel64(a, frame_length, frame_step, fft_length, fbank)
    )


def mfcc(
    x: ArrayLike,
    *,
    sample_rate: float,
    frame_length: int = 640,
    frame_step: int = 320,
    fft_length: int = 1024,
    num_mel_bins: int = 40,
    lower_hz: float = 20.0,
    upper_hz: float = 4000.0,
    num_coefficients: int = 10,
) -> Float32Array:
    """MFCCs of mono audio: (N, S) → (N, F, num_coefficients).

    out[j, :] = L[j, :] @ D, with L the float64 log-mel energies of `log_mel` (not rounded
    to float32 in between) and D = `dct_ii_ortho(num_mel_bins, num_coefficients)`.
    """
    audio = _audio_input(x, frame_length)
    fbank = mel_filterbank(num_mel_bins, fft_length, sample_rate, lower_hz, upper_hz)
    dct = dct_ii_ortho(num_mel_bins, num_coefficients)
    n_frames = 1 + (audio.shape[1] - frame_length) // frame_step
    per_sample = 3 * 16 * n_frames * (fft_length // 2 + 1)
    return _by_chunks(
        audio,
        per_sample,
        lambda a: _log_mel64(a, frame_length, frame_step, fft_length, fbank) @ dct,
    )


# --------------------------------------------------------------------------- images


def _linear_taps(
    in_size: int, out_size: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], Float64Array]:
    """Source indices i0, i1 and weight t of each output pixel along one axis."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def image_resize(x: ArrayLike, size: Sequence[int]) -> Float32Array:
    """Bilinear resize with half-pixel centres: (N, H, W[, C]) → (N, h, w[, C]).

    Along each axis (input n pixels, output m pixels), output pixel d samples the input at

        s = clamp((d + 0.5)·(n / m) - 0.5, 0, n - 1),  i0 = ⌊s⌋,  i1 = min(i0 + 1, n - 1),
        t = s - i0,  value = a[i0]·(1 - t) + a[i1]·t

    applied to rows first (height), then to columns (width), in float64. This is the
    convention of OpenCV INTER_LINEAR and TensorFlow's half_pixel_centers=True, without
    antialiasing when shrinking.
    """
    arr = _as_float64(x)
    if arr.ndim not in (3, 4):
        raise _shape_error("(N, H, W) or (N, H, W, C)", arr)
    out_h, out_w = int(size[0]), int(size[1])
    trailing = (1,) * (arr.ndim - 2)
    r0, r1, ty = _linear_taps(arr.shape[1], out_h)
    ty = ty.reshape((1, out_h, *trailing))
    rows = arr[:, r0] * (1.0 - ty) + arr[:, r1] * ty
    c0, c1, tx = _linear_taps(arr.shape[2], out_w)
    tx = tx.reshape((1, 1, out_w, *trailing[1:]))
    return (rows[:, :, c0] * (1.0 - tx) + rows[:, :, c1] * tx).astype(np.float32)


def grayscale(x: ArrayLike, keep_channel_axis: bool = True) -> Float32Array:
    """BT.601 luma: y = 0.299·R + 0.587·G + 0.114·B of (N, H, W, 3) → (N, H, W[, 1])."""
    arr = _as_float64(x)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise _shape_error("(N, H, W, 3) of RGB pixels", arr)
    wr, wg, wb = BT601_WEIGHTS
    luma = wr * arr[..., 0] + wg * arr[..., 1] + wb * arr[..., 2]
    return (luma[..., None] if keep_channel_axis else luma).astype(np.float32)


def image_normalize(
    x: ArrayLike, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)
) -> Float32Array:
    """y = (x / 255 - mean[c]) / std[c], c the index of the last (channel) axis.

    A single mean or std applies to every channel; the defaults give y = x / 255.
    """
    arr = _as_float64(x)
    channels = arr.shape[-1] if arr.ndim >= 2 else 1
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels) or (len(values) > 1 and arr.ndim < 2):
            raise DataError(
                f"{name} has {len(values)} values but the images have {channels} channels"
                f" on their last axis (batch shape {tuple(arr.shape)})"
            )
    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(std, dtype=np.float64)
    return ((arr / 255.0 - mu) / sigma).astype(np.float32)
