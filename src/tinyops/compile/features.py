"""Feature blocks as C: the device computes the features the model was trained on.

`emit_features(fitted, name, model_input)` prints a fitted feature pipeline
(`tinyops.features.FittedPipeline`: block settings plus the means, deviations, minima and
maxima learned on the train split) as two C99 files:

    tinyops_<name>_features.h   sizes, and
                                int tinyops_<name>_features(const float *raw, float *out);
                                int tinyops_<name>_features_q(const float *raw, int8_t *out);
    tinyops_<name>_features.c   one static function per block, constant tables (Hann
                                windows, FFT twiddles, band tables, sparse mel filters, the
                                DCT, fitted parameters) as `static const` arrays, two
                                static float buffers the blocks ping-pong between

`raw` is one sample of the pipeline's input in row-major order (`input_shape` of the
fitted pipeline), `out` the features in the model's input layout. `_q` (emitted when the
model input's quantization is given) quantizes straight into the int8 model input exactly
as `tinyops.optimize.quant.quantize` does (divide by the scale, round half away from zero,
add the zero point, clamp; in double in both builds, so a feature value equal to Python's
gives the same int8 even at a .5 tie), so `tinyops_<name>_features_q(raw, in)` then
`tinyops_<name>_invoke(in, out)` is the whole device path.

Precision. The Python blocks convert their input to float64, compute in float64 and round
to float32 once, at the block's output. The C keeps the float32 hand-off between blocks
(the static buffers are `float`) and computes inside a block in `tinyops_real`: `float` by
default (a Cortex-M4F has a single-precision FPU only), `double` when the library is built
with `-DTINYOPS_FEATURES_DOUBLE`. Built that way, the element-wise blocks (scale,
standardize, minmax, image_normalize, grayscale, image_resize) repeat the Python
operations in the same order on the same float64 constants and are bit-exact, as are the
copies (window, reshape, cast_float); the FFT-based blocks differ only in summation order.
`TOLERANCES` states, per block, the bound the tests hold the default float build to
(measured numbers in docs/compiler.md). A build must not contract a·b + c into one fused
multiply-add (GCC does not under -std=c99; pass -ffp-contract=off under gnu modes) for the
double build to be bit-exact.

The tables are computed here, in float64, by the same functions the Python blocks use
(`hann_window`, `band_of_bin`, `mel_filterbank`, `dct_ii_ortho`, the resize taps), printed
with 17 significant digits: the C uses the very constants the features were trained with.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.compile.errors import CompileError
from tinyops.errors import DataError
from tinyops.features import blocks as dsp
from tinyops.features.config import (
    BlockConfig,
    CastFloatConfig,
    FftBandPowerConfig,
    GrayscaleConfig,
    ImageNormalizeConfig,
    ImageResizeConfig,
    LogMelConfig,
    MfccConfig,
    MinMaxConfig,
    ReshapeConfig,
    ScaleConfig,
    StandardizeConfig,
    WindowConfig,
)
from tinyops.features.pipeline import FittedPipeline

VALUES_PER_LINE = 6


@dataclass(frozen=True)
class Tolerance:
    """How far the default (float) C build may be from the Python block, per output value.

    |c − python| ≤ abs + rel × scale_of(frame), where the scale is the largest |python|
    value of the sample (`rel` covers float32 rounding relative to the signal's size)."""

    abs: float
    rel: float
    note: str


TOLERANCES: dict[str, Tolerance] = {
    "scale": Tolerance(0.0, 2**-22, "a float multiply-add: ≤ 2 ulp of the largest value"),
    "standardize": Tolerance(0.0, 2**-21, "subtract, divide in float"),
    "minmax": Tolerance(0.0, 2**-21, "subtract, divide in float"),
    "window": Tolerance(0.0, 0.0, "a copy: exact"),
    "reshape": Tolerance(0.0, 0.0, "no code: exact"),
    "cast_float": Tolerance(0.0, 0.0, "no code: exact"),
    "fft_band_power": Tolerance(0.0, 2e-6, "float FFT: relative to the largest band power"),
    "fft_band_power_log": Tolerance(2e-5, 0.0, "log10 of float band power (log units)"),
    "log_mel": Tolerance(5e-4, 0.0, "ln of float mel energy (log units)"),
    "mfcc": Tolerance(5e-4, 0.0, "DCT of float log-mel energies"),
    "image_resize": Tolerance(0.0, 2**-22, "two float lerps"),
    "grayscale": Tolerance(0.0, 2**-22, "a float weighted sum"),
    "image_normalize": Tolerance(0.0, 2**-21, "divide, subtract, divide in float"),
}
"""The bound each block's float build is tested against; see docs/compiler.md."""


def tolerance_for(cfg: BlockConfig) -> Tolerance:
    if isinstance(cfg, FftBandPowerConfig) and cfg.log:
        return TOLERANCES["fft_band_power_log"]
    return TOLERANCES[cfg.block]


@dataclass(frozen=True)
class FeatureCode:
    """The generated feature library of one fitted pipeline."""

    name: str
    files: dict[str, str]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    blocks: tuple[str, ...]
    quantized: bool
    const_bytes: int
    """Bytes of the constant tables in the float build (flash)."""
    buffer_bytes: int
    """Bytes of the static buffers in the float build (RAM; stack not counted)."""

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)

    @property
    def header(self) -> str:
        return f"tinyops_{self.name}_features.h"

    @property
    def source(self) -> str:
        return f"tinyops_{self.name}_features.c"

    def summary(self) -> dict[str, Any]:
        return {
            "blocks": list(self.blocks),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "quantized": self.quantized,
            "const_bytes": self.const_bytes,
            "buffer_bytes": self.buffer_bytes,
        }


# --------------------------------------------------------------------------- C text


def _lit(v: float) -> str:
    """A C double literal that reads back as exactly `v` (17 significant digits)."""
    f = float(v)
    if not math.isfinite(f):
        raise CompileError(f"feature constant {f} is not finite")
    text = repr(f)
    return text if any(ch in text for ch in ".e") else text + ".0"


def _r(v: float) -> str:
    """A constant in block arithmetic: a float in the float build, so nothing widens."""
    return f"(tinyops_real){_lit(v)}"


@dataclass
class _Source:
    """Tables, helpers and block functions collected while walking the pipeline."""

    prefix: str
    tables: dict[str, list[str]] = field(default_factory=dict)
    const_bytes: int = 0
    helpers: set[str] = field(default_factory=set)
    functions: list[str] = field(default_factory=list)
    # Scratch of the FFT-based blocks, in tinyops_real elements: re/im of the longest
    # transform, and per-frame vectors (band energies, mel energies, log-mel).
    fft_len: int = 0
    vec_len: int = 0

    def real_table(self, key: str, values: NDArray[Any] | Sequence[float]) -> str:
        name = f"{self.prefix}_{key}"
        if name not in self.tables:
            flat = [_lit(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
            self.tables[name] = _array("tinyops_real", name, flat)
            self.const_bytes += 4 * len(flat)
        return name

    def int_table(self, key: str, values: NDArray[Any] | Sequence[int], ctype: str) -> str:
        name = f"{self.prefix}_{key}"
        if name not in self.tables:
            flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
            self.tables[name] = _array(ctype, name, flat)
            self.const_bytes += {"int16_t": 2, "int32_t": 4}[ctype] * len(flat)
        return name

    def twiddles(self, n: int) -> tuple[str, str]:
        """cos and sin of 2πk/n: k < n/2 for the radix-2 FFT, k < n for the plain DFT."""
        count = n // 2 if _pow2(n) else n
        k = np.arange(count, dtype=np.float64)
        angle = 2.0 * math.pi * k / n
        return (
            self.real_table(f"cos{n}", np.cos(angle)),
            self.real_table(f"sin{n}", np.sin(angle)),
        )

    def spectrum_call(self, n: int) -> str:
        """C statement: re[k] = |X[k]|², k = 0 .. n/2, of the frame already in re[0 .. n)."""
        self.fft_len = max(self.fft_len, n)
        cos_t, sin_t = self.twiddles(n)
        if _pow2(n):
            self.helpers.add("fft")
            return f"tinyops_power_fft(re, im, {n}, {cos_t}, {sin_t});"
        self.helpers.add("dft")
        return f"tinyops_power_dft(re, im, {n}, {cos_t}, {sin_t});"


def _pow2(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


def _array(ctype: str, name: str, values: list[str]) -> list[str]:
    body = [
        "  " + ", ".join(values[i : i + VALUES_PER_LINE]) + ","
        for i in range(0, len(values), VALUES_PER_LINE)
    ]
    return [f"static const {ctype} {name}[{len(values)}] = {{", *body, "};"]


_HELPERS = {
    "fft": """\
/* re[k] = |X[k]|^2 for k = 0 .. n/2, X the DFT of the real frame in re[0 .. n) (im is
 * scratch): an iterative radix-2 Cooley-Tukey FFT, bit-reversed input order; twiddle k is
 * exp(-2*pi*i*k/n), from tables of cos and sin(2*pi*k/n), k < n/2. */
static void tinyops_power_fft(tinyops_real *re, tinyops_real *im, int n,
                              const tinyops_real *cos_t, const tinyops_real *sin_t) {
  int i, j = 0, len;
  for (i = 0; i < n; ++i) im[i] = 0;
  for (i = 1; i < n; ++i) {
    int bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      const tinyops_real t = re[i];
      re[i] = re[j];
      re[j] = t;
    }
  }
  for (len = 2; len <= n; len <<= 1) {
    const int half = len >> 1, step = n / len;
    for (i = 0; i < n; i += len) {
      for (j = 0; j < half; ++j) {
        const tinyops_real wr = cos_t[j * step], wi = -sin_t[j * step];
        tinyops_real *ar = re + i + j, *ai = im + i + j;
        const tinyops_real xr = ar[half] * wr - ai[half] * wi;
        const tinyops_real xi = ar[half] * wi + ai[half] * wr;
        ar[half] = ar[0] - xr;
        ai[half] = ai[0] - xi;
        ar[0] += xr;
        ai[0] += xi;
      }
    }
  }
  for (i = 0; i <= n / 2; ++i) re[i] = re[i] * re[i] + im[i] * im[i];
}
""",
    "dft": """\
/* re[k] = |X[k]|^2 for k = 0 .. n/2, X the DFT of the real frame in re[0 .. n), for a
 * length that is not a power of two: the plain sum over n samples, with exp(-2*pi*i*k*t/n)
 * read from tables of cos and sin(2*pi*m/n), m = k*t mod n. im holds a copy of the frame. */
static void tinyops_power_dft(tinyops_real *re, tinyops_real *im, int n,
                              const tinyops_real *cos_t, const tinyops_real *sin_t) {
  int k, t;
  for (t = 0; t < n; ++t) im[t] = re[t];
  for (k = 0; k <= n / 2; ++k) {
    tinyops_real sr = 0, si = 0;
    int m = 0;
    for (t = 0; t < n; ++t) {
      sr += im[t] * cos_t[m];
      si -= im[t] * sin_t[m];
      m += k;
      if (m >= n) m -= n;
    }
    re[k] = sr * sr + si * si;
  }
}
""",
}


# --------------------------------------------------------------------------- blocks


def _block_shapes(fitted: FittedPipeline) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) per block, per sample, by running each block once."""
    from tinyops.features.pipeline import _apply

    x: NDArray[Any] = np.zeros((1, *fitted.input_shape), dtype=np.float32)
    shapes = []
    for cfg, p in zip(fitted.pipeline.blocks, fitted.block_params, strict=True):
        y = _apply(cfg, x, p)
        shapes.append((tuple(int(d) for d in x.shape[1:]), tuple(int(d) for d in y.shape[1:])))
        x = y
    return shapes


def _fitted_index(arr_shape: tuple[int, ...], params_shape: tuple[int, ...]) -> str:
    """Index of the fitted parameter for flat element i: parameters cover trailing axes."""
    size = math.prod(params_shape)
    return "0" if size == 1 else f"i % {size}"


def _elementwise(src: _Source, fn: str, ishape: tuple[int, ...], body: str, comment: str) -> None:
    n = math.prod(ishape)
    src.functions.append(
        f"/* {comment} */\n"
        f"static void {fn}(const float *in, float *out) {{\n"
        f"  int i;\n"
        f"  for (i = 0; i < {n}; ++i) {{\n"
        f"    const tinyops_real x = (tinyops_real)in[i];\n"
        f"{body}"
        f"  }}\n"
        f"}}\n"
    )


def _emit_block(
    src: _Source,
    index: int,
    cfg: BlockConfig,
    params: dsp.StandardizeParams | dsp.MinMaxParams | None,
    ishape: tuple[int, ...],
    oshape: tuple[int, ...],
) -> str | None:
    """Emit block `index`; returns its C function name, or None when it needs no code."""
    fn = f"{src.prefix}_block{index}"
    what = f"block {index} ({cfg.block}): {list(ishape)} -> {list(oshape)}"
    match cfg:
        case ReshapeConfig() | CastFloatConfig():
            return None  # the same float32 values in the same row-major order
        case ScaleConfig():
            body = f"    out[i] = (float)(x * {_r(cfg.mul)} + {_r(cfg.add)});\n"
            _elementwise(src, fn, ishape, body, f"{what}: y = x * mul + add")
        case StandardizeConfig():
            assert isinstance(params, dsp.StandardizeParams)
            mean = src.real_table(f"b{index}_mean", params.mean.astype(np.float64))
            den = np.maximum(params.std.astype(np.float64), cfg.eps)
            den_t = src.real_table(f"b{index}_den", den)
            j = _fitted_index(ishape, params.mean.shape)
            body = f"    out[i] = (float)((x - {mean}[{j}]) / {den_t}[{j}]);\n"
            _elementwise(src, fn, ishape, body, f"{what}: y = (x - mean) / max(std, eps)")
        case MinMaxConfig():
            assert isinstance(params, dsp.MinMaxParams)
            lo = params.minimum.astype(np.float64)
            span = np.maximum(params.maximum.astype(np.float64) - lo, cfg.eps)
            lo_t = src.real_table(f"b{index}_lo", lo)
            span_t = src.real_table(f"b{index}_span", span)
            j = _fitted_index(ishape, params.minimum.shape)
            body = f"    tinyops_real y = (x - {lo_t}[{j}]) / {span_t}[{j}];\n"
            if cfg.clip:
                body += "    y = y < 0 ? 0 : (y > 1 ? 1 : y);\n"
            body += "    out[i] = (float)y;\n"
            _elementwise(src, fn, ishape, body, f"{what}: y = (x - min) / max(max - min, eps)")
        case WindowConfig():
            chans = ishape[1] if len(ishape) == 2 else 1
            frames, run = oshape[0], cfg.length * chans
            src.functions.append(
                f"/* {what}: frame f is samples [f*{cfg.stride}, f*{cfg.stride}"
                f" + {cfg.length}) */\n"
                f"static void {fn}(const float *in, float *out) {{\n"
                f"  int f, i;\n"
                f"  for (f = 0; f < {frames}; ++f) {{\n"
                f"    const float *s = in + f * {cfg.stride * chans};\n"
                f"    for (i = 0; i < {run}; ++i) out[f * {run} + i] = s[i];\n"
                f"  }}\n"
                f"}}\n"
            )
        case FftBandPowerConfig():
            _emit_band_power(src, fn, index, cfg, ishape, oshape, what)
        case LogMelConfig() | MfccConfig():
            _emit_mel(src, fn, index, cfg, ishape, oshape, what)
        case ImageResizeConfig():
            _emit_resize(src, fn, index, ishape, oshape, what)
        case GrayscaleConfig():
            wr, wg, wb = (_r(w) for w in dsp.BT601_WEIGHTS)
            src.functions.append(
                f"/* {what}: BT.601 luma */\n"
                f"static void {fn}(const float *in, float *out) {{\n"
                f"  int p;\n"
                f"  for (p = 0; p < {math.prod(oshape)}; ++p) {{\n"
                f"    const float *rgb = in + 3 * p;\n"
                f"    out[p] = (float)({wr} * (tinyops_real)rgb[0] + {wg} * (tinyops_real)rgb[1]"
                f" + {wb} * (tinyops_real)rgb[2]);\n"
                f"  }}\n"
                f"}}\n"
            )
        case ImageNormalizeConfig():
            chans = ishape[-1] if ishape else 1
            mean_t = src.real_table(f"b{index}_mean", cfg.mean)
            std_t = src.real_table(f"b{index}_std", cfg.std)
            jm = "0" if len(cfg.mean) == 1 else f"i % {chans}"
            js = "0" if len(cfg.std) == 1 else f"i % {chans}"
            body = (
                f"    out[i] = (float)((x / (tinyops_real)255.0 - {mean_t}[{jm}])"
                f" / {std_t}[{js}]);\n"
            )
            _elementwise(src, fn, ishape, body, f"{what}: y = (x / 255 - mean[c]) / std[c]")
        case _:
            raise CompileError(f"feature block {index} ({cfg.block}) has no C implementation")
    return fn


def _emit_band_power(
    src: _Source,
    fn: str,
    index: int,
    cfg: FftBandPowerConfig,
    ishape: tuple[int, ...],
    oshape: tuple[int, ...],
    what: str,
) -> None:
    axis = len(ishape) - 2 if cfg.channels_last else len(ishape) - 1
    length = ishape[axis]
    chans = ishape[-1] if cfg.channels_last else 1
    outer = math.prod(ishape[:axis])
    table = dsp.band_of_bin(length, cfg.bands, cfg.edges_hz, cfg.sample_rate)
    n_bands = oshape[axis]
    hann = src.real_table(f"hann{length}", dsp.hann_window(length))
    band = src.int_table(f"b{index}_band", table, "int16_t")
    call = src.spectrum_call(length)
    src.vec_len = max(src.vec_len, n_bands)
    value = f"tinyops_log10(vec[b] + {_r(dsp.LOG_POWER_FLOOR)})" if cfg.log else "vec[b]"
    src.functions.append(
        f"/* {what}: per frame, P[k] = |rfft(hann * x)[k]|^2 / {length}, summed per band"
        f"{', then log10(E + 1e-10)' if cfg.log else ''} */\n"
        f"static void {fn}(const float *in, float *out) {{\n"
        f"  int o, c, t, k, b;\n"
        f"  for (o = 0; o < {outer}; ++o) {{\n"
        f"    for (c = 0; c < {chans}; ++c) {{\n"
        f"      for (t = 0; t < {length}; ++t)\n"
        f"        re[t] = (tinyops_real)in[(o * {length} + t) * {chans} + c] * {hann}[t];\n"
        f"      {call}\n"
        f"      for (b = 0; b < {n_bands}; ++b) vec[b] = 0;\n"
        f"      for (k = 0; k <= {length // 2}; ++k)\n"
        f"        if ({band}[k] >= 0) vec[{band}[k]] += re[k] / {length};\n"
        f"      for (b = 0; b < {n_bands}; ++b)\n"
        f"        out[(o * {n_bands} + b) * {chans} + c] = (float)({value});\n"
        f"    }}\n"
        f"  }}\n"
        f"}}\n"
    )


def _emit_mel(
    src: _Source,
    fn: str,
    index: int,
    cfg: LogMelConfig | MfccConfig,
    ishape: tuple[int, ...],
    oshape: tuple[int, ...],
    what: str,
) -> None:
    assert cfg.sample_rate is not None
    frames, mels, n = oshape[0], cfg.num_mel_bins, cfg.fft_length
    hann = src.real_table(f"hann{cfg.frame_length}", dsp.hann_window(cfg.frame_length))
    bank = dsp.mel_filterbank(mels, n, cfg.sample_rate, cfg.lower_hz, cfg.upper_hz)
    # Sparse filters: filter m covers bins first[m] .. first[m] + count[m] - 1, weights
    # back to back in `weights` from offset[m] (a triangle covers a few dozen of n/2 bins).
    first: list[int] = []
    count: list[int] = []
    offset: list[int] = []
    weights: list[float] = []
    for m in range(mels):
        nz = np.flatnonzero(bank[:, m])
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        first.append(lo)
        count.append(hi - lo)
        offset.append(len(weights))
        weights.extend(bank[lo:hi, m].tolist())
    t_first = src.int_table(f"b{index}_first", first, "int32_t")
    t_count = src.int_table(f"b{index}_count", count, "int32_t")
    t_offset = src.int_table(f"b{index}_offset", offset, "int32_t")
    t_weights = src.real_table(f"b{index}_weights", weights)
    call = src.spectrum_call(n)
    log_e = f"tinyops_log(e + {_r(dsp.LOG_MEL_FLOOR)})"
    if isinstance(cfg, MfccConfig):
        k_out = cfg.num_coefficients
        src.vec_len = max(src.vec_len, mels)  # the frame's log-mel energies, for the DCT
        dct = src.real_table(f"b{index}_dct", dsp.dct_ii_ortho(mels, k_out))
        store = (
            f"      vec[m] = {log_e};\n"
            f"    }}\n"
            f"    for (q = 0; q < {k_out}; ++q) {{\n"
            f"      tinyops_real s = 0;\n"
            f"      for (m = 0; m < {mels}; ++m) s += vec[m] * {dct}[m * {k_out} + q];\n"
            f"      out[j * {k_out} + q] = (float)s;\n"
            f"    }}\n"
        )
        formula = f"log-mel energies (kept in tinyops_real) times the {mels}x{k_out} DCT-II"
    else:
        store = f"      out[j * {mels} + m] = (float)({log_e});\n    }}\n"
        formula = f"ln(E[m] + {dsp.LOG_MEL_FLOOR})"
    src.functions.append(
        f"/* {what}: frame j = samples [j*{cfg.frame_step}, j*{cfg.frame_step} +"
        f" {cfg.frame_length}) * hann, zero-padded to {n}; P = |rfft|^2; E[m] = sum P[k] W[k,m];"
        f" out = {formula} */\n"
        f"static void {fn}(const float *in, float *out) {{\n"
        f"  int j, t, m{', q' if isinstance(cfg, MfccConfig) else ''};\n"
        f"  for (j = 0; j < {frames}; ++j) {{\n"
        f"    const float *s = in + j * {cfg.frame_step};\n"
        f"    for (t = 0; t < {cfg.frame_length}; ++t) re[t] = (tinyops_real)s[t] * {hann}[t];\n"
        f"    for (; t < {n}; ++t) re[t] = 0;\n"
        f"    {call}\n"
        f"    for (m = 0; m < {mels}; ++m) {{\n"
        f"      const tinyops_real *w = {t_weights} + {t_offset}[m];\n"
        f"      const tinyops_real *p = re + {t_first}[m];\n"
        f"      tinyops_real e = 0;\n"
        f"      for (t = 0; t < {t_count}[m]; ++t) e += p[t] * w[t];\n"
        f"{store}"
        f"  }}\n"
        f"}}\n"
    )


def _taps(in_size: int, out_size: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[Any]]:
    """The resize taps along one axis, as `blocks.image_resize` computes them."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, in_size - 1), src - i0


def _emit_resize(
    src: _Source,
    fn: str,
    index: int,
    ishape: tuple[int, ...],
    oshape: tuple[int, ...],
    what: str,
) -> None:
    (in_h, in_w), (out_h, out_w) = ishape[:2], oshape[:2]
    chans = ishape[2] if len(ishape) == 3 else 1
    r0, r1, ty = _taps(in_h, out_h)
    c0, c1, tx = _taps(in_w, out_w)
    t = {
        k: src.int_table(f"b{index}_{k}", v, "int32_t")
        for k, v in (("r0", r0), ("r1", r1), ("c0", c0), ("c1", c1))
    }
    t_ty, t_tx = src.real_table(f"b{index}_ty", ty), src.real_table(f"b{index}_tx", tx)
    row = f"{in_w * chans}"
    src.functions.append(
        f"/* {what}: bilinear, half-pixel centres; rows then columns as in Python */\n"
        f"static void {fn}(const float *in, float *out) {{\n"
        f"  int y, x, c;\n"
        f"  for (y = 0; y < {out_h}; ++y) {{\n"
        f"    const tinyops_real ty = {t_ty}[y], uy = (tinyops_real)1.0 - ty;\n"
        f"    const float *a = in + {t['r0']}[y] * {row}, *b = in + {t['r1']}[y] * {row};\n"
        f"    for (x = 0; x < {out_w}; ++x) {{\n"
        f"      const tinyops_real tx = {t_tx}[x], ux = (tinyops_real)1.0 - tx;\n"
        f"      const int p0 = {t['c0']}[x] * {chans}, p1 = {t['c1']}[x] * {chans};\n"
        f"      for (c = 0; c < {chans}; ++c) {{\n"
        f"        const tinyops_real v0 ="
        f" (tinyops_real)a[p0 + c] * uy + (tinyops_real)b[p0 + c] * ty;\n"
        f"        const tinyops_real v1 ="
        f" (tinyops_real)a[p1 + c] * uy + (tinyops_real)b[p1 + c] * ty;\n"
        f"        out[(y * {out_w} + x) * {chans} + c] = (float)(v0 * ux + v1 * tx);\n"
        f"      }}\n"
        f"    }}\n"
        f"  }}\n"
        f"}}\n"
    )


# --------------------------------------------------------------------------- files

_PRELUDE = """\
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Arithmetic inside a block: float (single-precision FPUs), or double with
 * -DTINYOPS_FEATURES_DOUBLE (bit-exact with the Python element-wise blocks). */
#ifdef TINYOPS_FEATURES_DOUBLE
typedef double tinyops_real;
#define tinyops_log(x) log(x)
#define tinyops_log10(x) log10(x)
#else
typedef float tinyops_real;
#define tinyops_log(x) logf(x)
#define tinyops_log10(x) log10f(x)
#endif
"""


def emit_features(
    fitted: FittedPipeline,
    name: str,
    model_input: tuple[float, int] | None = None,
    source: str = "<feature pipeline>",
) -> FeatureCode:
    """The C library of a fitted feature pipeline; `model_input` = (scale, zero point)."""
    from tinyops.compile.emit import check_model_name

    check_model_name(name)
    upper = name.upper()
    prefix = f"tinyops_{name}_f"
    try:
        shapes = _block_shapes(fitted)
    except DataError as exc:
        raise CompileError(f"{source}: {exc}") from exc
    in_shape = tuple(fitted.input_shape)
    out_shape = shapes[-1][1] if shapes else in_shape
    in_size, out_size = math.prod(in_shape), math.prod(out_shape)
    src = _Source(prefix)
    steps: list[tuple[str, int]] = []
    names = []
    for i, (cfg, p) in enumerate(zip(fitted.pipeline.blocks, fitted.block_params, strict=True)):
        names.append(cfg.block)
        fn = _emit_block(src, i, cfg, p, *shapes[i])
        if fn is not None:
            steps.append((fn, math.prod(shapes[i][1])))
    # Two ping-pong buffers hold the hand-offs between blocks (never the raw input or the
    # last block's output, which are the caller's).
    buf_len = max([n for _, n in steps[:-1]], default=0)
    lines = [
        f"/* Generated by tinyops from {source}: feature pipeline {fitted.hash[:16]}. Do not edit.",
        f" * Blocks: {', '.join(names) or '(none)'}. */",
        f'#include "tinyops_{name}_features.h"',
        "",
        _PRELUDE,
    ]
    for table in src.tables.values():
        lines.extend(table)
    lines.append("")
    if buf_len:
        lines.append(f"static float {prefix}_buf[2][{buf_len}];")
    if src.fft_len:
        lines.append(f"static tinyops_real re[{src.fft_len}], im[{src.fft_len}];")
    if src.vec_len:
        lines.append(f"static tinyops_real vec[{src.vec_len}];")
    lines.append("")
    for helper in sorted(src.helpers):
        lines.append(_HELPERS[helper])
    lines.extend(src.functions)
    lines += [
        f"int tinyops_{name}_features(const float *raw, float *out) {{",
        "  if (raw == NULL || out == NULL) return -1;",
    ]
    if not steps:
        lines.append(f"  {{ int i; for (i = 0; i < {in_size}; ++i) out[i] = raw[i]; }}")
    for k, (fn, _) in enumerate(steps):
        a = "raw" if k == 0 else f"{prefix}_buf[{(k - 1) % 2}]"
        b = "out" if k == len(steps) - 1 else f"{prefix}_buf[{k % 2}]"
        lines.append(f"  {fn}({a}, {b});")
    lines += ["  return 0;", "}", ""]
    header_q: list[str] = []
    if model_input is not None:
        scale, zero_point = model_input
        lines += [
            f"static float {prefix}_features[{out_size}];",
            "",
            f"int tinyops_{name}_features_q(const float *raw, int8_t *out) {{",
            "  int i;",
            f"  if (out == NULL || tinyops_{name}_features(raw, {prefix}_features) != 0)"
            " return -1;",
            f"  for (i = 0; i < {out_size}; ++i) {{",
            "    /* quantize as tinyops.optimize.quant.quantize: divide in double (a value at a",
            "     * .5 tie must round as Python's does; a few hundred cycles per input value in",
            "     * software on a single-precision FPU), round half away from zero, add the",
            "     * zero point, clamp */",
            f"    const double s = (double){prefix}_features[i] / {_lit(scale)};",
            "    const double r = s < 0 ? -floor(-s + 0.5) : floor(s + 0.5);",
            f"    const double q = r + {zero_point};",
            "    out[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));",
            "  }",
            "  return 0;",
            "}",
            "",
        ]
        header_q = [
            f"/* Model input quantization: real = {scale!r} * (q - {zero_point}). */",
            f"#define TINYOPS_{upper}_FEATURES_SCALE {scale!r}",
            f"#define TINYOPS_{upper}_FEATURES_ZERO_POINT {zero_point}",
            "/* The features quantized to the model's int8 input (OUTPUT_SIZE values), as",
            " * tinyops.optimize.quant.quantize does. Returns 0, or -1 if a pointer is NULL. */",
            f"int tinyops_{name}_features_q(const float *raw, int8_t *out);",
            "",
        ]
    header = "\n".join(
        [
            f"/* Generated by tinyops: feature pipeline {fitted.hash[:16]} as C. Do not edit. */",
            f"#ifndef TINYOPS_{upper}_FEATURES_H_",
            f"#define TINYOPS_{upper}_FEATURES_H_",
            "",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"/* Raw input: float {list(in_shape)}, row-major. Features: float"
            f" {list(out_shape)}. */",
            f"#define TINYOPS_{upper}_FEATURES_INPUT_SIZE {in_size}",
            f"#define TINYOPS_{upper}_FEATURES_OUTPUT_SIZE {out_size}",
            "",
            "/* The features of one raw sample, as the Python pipeline computes them (within the",
            " * documented tolerance). Not re-entrant (static buffers). Returns 0, or -1 if a",
            " * pointer is NULL. */",
            f"int tinyops_{name}_features(const float *raw, float *out);",
            "",
            *header_q,
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* TINYOPS_{upper}_FEATURES_H_ */",
            "",
        ]
    )
    buffer_bytes = (
        4 * 2 * buf_len
        + 4 * 2 * src.fft_len
        + 4 * src.vec_len
        + (4 * out_size if model_input is not None else 0)
    )
    return FeatureCode(
        name=name,
        files={
            f"tinyops_{name}_features.h": header,
            f"tinyops_{name}_features.c": "\n".join(lines),
        },
        input_shape=in_shape,
        output_shape=out_shape,
        blocks=tuple(names),
        quantized=model_input is not None,
        const_bytes=src.const_bytes,
        buffer_bytes=buffer_bytes,
    )


# --------------------------------------------------------------------------- host runs

_RUNNER = """/* Feature runner (tests, benchmarks): argv[1] raw float32 samples, argv[2] outputs:
 * float32 features, or with argv[3] = "q" the int8 model input. */
#include <stdio.h>
#include <string.h>

#include "tinyops_{name}_features.h"

int main(int argc, char **argv) {{
  static float raw[TINYOPS_{upper}_FEATURES_INPUT_SIZE];
  static float out[TINYOPS_{upper}_FEATURES_OUTPUT_SIZE];
  FILE *fin, *fout;
  const int quantized = argc == 4 && strcmp(argv[3], "q") == 0;
  if (argc < 3) return 2;
  fin = fopen(argv[1], "rb");
  fout = fopen(argv[2], "wb");
  if (fin == NULL || fout == NULL) return 2;
  while (fread(raw, sizeof raw[0], TINYOPS_{upper}_FEATURES_INPUT_SIZE, fin) ==
         TINYOPS_{upper}_FEATURES_INPUT_SIZE) {{
    if (quantized) {{
{quantized}
    }} else {{
      if (tinyops_{name}_features(raw, out) != 0) return 3;
      if (fwrite(out, sizeof out[0], TINYOPS_{upper}_FEATURES_OUTPUT_SIZE, fout) !=
          TINYOPS_{upper}_FEATURES_OUTPUT_SIZE) return 4;
    }}
  }}
  fclose(fin);
  return fclose(fout) == 0 ? 0 : 4;
}}
"""

_RUNNER_Q = """\
      static int8_t q[TINYOPS_{upper}_FEATURES_OUTPUT_SIZE];
      if (tinyops_{name}_features_q(raw, q) != 0) return 3;
      if (fwrite(q, 1, sizeof q, fout) != sizeof q) return 4;"""


FEATURE_CFLAGS = ("-pedantic", "-Wdouble-promotion")
"""Beyond the library's strict flags: -Wdouble-promotion proves the float build does no
double arithmetic by accident (a Cortex-M4F would run it in software)."""


def build_host_feature_runner(
    lib_dir: Path, name: str, workdir: Path, double: bool = False
) -> Path:
    """Compile the feature library in `lib_dir` with a batch runner; the executable."""
    from tinyops.compile.toolchain import HOST_CFLAGS, host_compiler

    cc = host_compiler()
    if cc is None:
        raise CompileError("no host C compiler found (set CC, or install gcc)")
    suffix = "double" if double else "float"
    main = Path(workdir) / f"run_{name}_features.c"
    main.write_text(runner_source_for(lib_dir, name), encoding="utf-8")
    exe = Path(workdir) / f"run_{name}_features_{suffix}"
    flags = ["-DTINYOPS_FEATURES_DOUBLE"] if double else list(FEATURE_CFLAGS)
    cmd = [
        cc,
        *HOST_CFLAGS,
        *flags,
        f"-I{lib_dir}",
        "-o",
        str(exe),
        str(main),
        str(Path(lib_dir) / f"tinyops_{name}_features.c"),
        "-lm",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(
            f"{lib_dir}: the host compiler failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}"
        )
    return exe


def runner_source_for(lib_dir: Path, name: str) -> str:
    """The runner of the feature library in `lib_dir` (quantized mode if it has `_q`)."""
    header = (Path(lib_dir) / f"tinyops_{name}_features.h").read_text(encoding="utf-8")
    upper = name.upper()
    quantized = f"tinyops_{name}_features_q" in header
    body = _RUNNER_Q.format(name=name, upper=upper) if quantized else "      return 5;"
    return _RUNNER.format(name=name, upper=upper, quantized=body)


def run_features(
    exe: Path, raw: NDArray[Any], output_size: int, quantized: bool = False
) -> NDArray[Any]:
    """Run the feature runner on raw samples (N, ...): float32 (N, output) or int8."""
    batch = np.ascontiguousarray(raw, dtype=np.float32).reshape(len(raw), -1)
    with tempfile.TemporaryDirectory(prefix="tinyops-features-") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        fin.write_bytes(batch.tobytes())
        args = [str(exe), str(fin), str(fout), *(["q"] if quantized else [])]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CompileError(f"{exe}: exited with {proc.returncode}: {proc.stderr[-2000:]}")
        dtype = np.int8 if quantized else np.float32
        out = np.frombuffer(fout.read_bytes(), dtype=dtype)
    return out.reshape(batch.shape[0], output_size)
