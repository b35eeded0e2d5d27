/* tinyops int8 kernels, written for tinyops; see tinyops_kernels.h and docs/compiler.md.
 *
 * Each kernel computes what TFLM's reference int8 kernel computes, integer for integer:
 * the same accumulation order is not needed (int32 addition is associative while it does
 * not overflow, and an int8 x int8 product sum over a filter cannot overflow int32 for any
 * filter below 2^16 elements), but the same rounding steps are. Signed overflow is
 * undefined in C, so the few places where TFLite relies on two's-complement wrap-around
 * compute through uint32_t instead.
 */
#include "tinyops_kernels.h"

#include <string.h>

/* Hot loops and requantization blocks are kept out of line: inlined into a kernel's loop
 * nest, GCC runs out of registers and spills the loop's pointers and the clamp bounds to
 * the stack (measured: 23 instead of 15 instructions per 8 multiply-accumulates, and 41
 * instead of about 25 per requantized value, on Cortex-M4). */
#if defined(__GNUC__)
#define TINYOPS_NOINLINE __attribute__((noinline))
#else
#define TINYOPS_NOINLINE
#endif

/* ---- fixed-point helpers (gemmlowp / TFLite semantics) ---- */

static int32_t wrap_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

static int32_t wrap_sub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

static int32_t shift_left(int32_t x, int n) { return (int32_t)((uint32_t)x << n); }

/* round(a * b / 2^31), halves away from zero; saturates the one overflow case. */
static int32_t srdhm(int32_t a, int32_t b) {
  int64_t ab;
  int64_t nudge;
  if (a == b && a == INT32_MIN) return INT32_MAX;
  ab = (int64_t)a * (int64_t)b;
  nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  /* C99 division truncates toward zero, as TFLite's does. */
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^exponent rounded to nearest, halves away from zero (gemmlowp RoundingDivideByPOT). */
static int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  /* >> of a negative value is arithmetic on every compiler tinyops targets. */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* srdhm for a multiplier b >= 0 (every requantization multiplier is): the saturating
 * case a == b == INT32_MIN cannot occur, and the rounding collapses to one add. With
 * ab = a * b, srdhm is trunc((ab + nudge) / 2^31), nudge = 2^30 for ab >= 0 and 1 - 2^30
 * below. For ab >= 0 that is floor((ab + 2^30) / 2^31). For ab < 0, ab + 1 - 2^30 is
 * negative and truncation is floor((ab + 1 - 2^30 + 2^31 - 1) / 2^31), the same
 * floor((ab + 2^30) / 2^31). So both are one arithmetic shift: 5 instructions on
 * Cortex-M4 instead of about 15 (measured), and the same integers. */
static inline int32_t srdhm_nonneg(int32_t a, int32_t b) {
  return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* Multipliers above one (shift > 0) are rare; out of line so that GCC -O2 does not
 * if-convert both paths into every requantization (measured: 8 instructions more each). */
static TINYOPS_NOINLINE int32_t mul_by_quantized_multiplier_above_one(int32_t x,
                                                                      int32_t multiplier,
                                                                      int shift) {
  return srdhm_nonneg(shift_left(x, shift), multiplier);
}

/* Inlined into every kernel: requantization runs once per output value. */
static inline int32_t mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  if (shift > 0) return mul_by_quantized_multiplier_above_one(x, multiplier, shift);
  return rounding_divide_by_pot(srdhm_nonneg(x, multiplier), -shift);
}

int32_t tinyops_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(srdhm(shift_left(x, left), multiplier), right);
}

static int8_t clamp_to_int8(int32_t v, int32_t lo, int32_t hi) {
  if (v < lo) v = lo;
  if (v > hi) v = hi;
  return (int8_t)v;
}

static inline int8_t requantize(int32_t acc, int32_t mult, int shift, int32_t out_offset,
                                int32_t lo, int32_t hi) {
  return clamp_to_int8(mul_by_quantized_multiplier(acc, mult, shift) + out_offset, lo, hi);
}


/* Requantizes the 4 accumulators of consecutive output channels ch .. ch + 3 (out of
 * line, see TINYOPS_NOINLINE). Written out for 4 values, not as a loop: GCC -O2 keeps a
 * loop's clamp bounds and offset on the stack (3 loads per value) and does not unroll it;
 * straight-line code keeps them in registers (measured on Cortex-M4 -O2: KWS 9.41 M ->
 * 8.97 M instructions; -O3 did this by itself). */
static TINYOPS_NOINLINE void requantize_block(const tinyops_conv_params *p,
                                              const int32_t *acc, int32_t ch, int8_t *dst) {
  const int32_t out_offset = p->out_offset, lo = p->act_min, hi = p->act_max;
  const int32_t *mult = p->mult + ch;
  const int8_t *shift = p->shift + ch;
  const int8_t d0 = requantize(acc[0], mult[0], shift[0], out_offset, lo, hi);
  const int8_t d1 = requantize(acc[1], mult[1], shift[1], out_offset, lo, hi);
  const int8_t d2 = requantize(acc[2], mult[2], shift[2], out_offset, lo, hi);
  const int8_t d3 = requantize(acc[3], mult[3], shift[3], out_offset, lo, hi);
  dst[0] = d0;
  dst[1] = d1;
  dst[2] = d2;
  dst[3] = d3;
}

/* ---- multiply-accumulate: a plain path and the Cortex-M DSP (SIMD32) path ----
 *
 * With the Armv7E-M DSP extension (Cortex-M4/M7: __ARM_FEATURE_DSP) four int8 values are
 * loaded as one word and split into two pairs of int16 lanes (SXTB16: bytes 0 and 2;
 * SXTB16 ROR 8: bytes 1 and 3), the input's offset added in the same instruction
 * (SXTAB16); SMLAD then adds both lane products to the accumulator. Each lane product is
 * (x + offset) * w exactly as the plain path computes it ((x + offset) is in [-255, 255],
 * no 16-bit wrap), and int32 sums do not depend on their order, so both paths give the
 * same integers. Define TINYOPS_NO_DSP to force the plain path (the tests build both). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(TINYOPS_NO_DSP)
#define TINYOPS_DSP 1

static inline uint32_t load32(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4); /* LDR: Armv7-M allows unaligned word loads */
  return v;
}

static inline uint32_t sxtb16(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
  return r;
}

static inline uint32_t sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

static inline uint32_t sxtab16(uint32_t a, uint32_t x) {
  uint32_t r;
  __asm__("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
  return r;
}

static inline uint32_t sxtab16_ror8(uint32_t a, uint32_t x) {
  uint32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
  return r;
}

static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

static inline int32_t smlabb(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

static inline int32_t smlatt(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

static inline uint32_t offset_pair(int32_t off) {
  return ((uint32_t)(uint16_t)off << 16) | (uint16_t)off;
}
#else
#define TINYOPS_DSP 0
#endif

/* acc + sum over i < n of (x[i] + off) * w[i] */
static TINYOPS_NOINLINE int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t off,
                             int32_t acc) {
#if TINYOPS_DSP
  const uint32_t off2 = offset_pair(off);
  for (; n >= 4; n -= 4, x += 4, w += 4) {
    const uint32_t xv = load32(x);
    const uint32_t wv = load32(w);
    acc = smlad(sxtab16(off2, xv), sxtb16(wv), acc);
    acc = smlad(sxtab16_ror8(off2, xv), sxtb16_ror8(wv), acc);
  }
#else
  for (; n >= 4; n -= 4, x += 4, w += 4) {
    acc += ((int32_t)x[0] + off) * w[0] + ((int32_t)x[1] + off) * w[1] +
           ((int32_t)x[2] + off) * w[2] + ((int32_t)x[3] + off) * w[3];
  }
#endif
  for (; n > 0; --n) acc += ((int32_t)*x++ + off) * *w++;
  return acc;
}

/* Two dot products sharing x (two output channels): x is loaded and widened once. */
static TINYOPS_NOINLINE void dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n,
                           int32_t off, int32_t *acc0, int32_t *acc1) {
  int32_t a0 = *acc0, a1 = *acc1;
#if TINYOPS_DSP
  const uint32_t off2 = offset_pair(off);
  for (; n >= 4; n -= 4, x += 4, w0 += 4, w1 += 4) {
    const uint32_t xv = load32(x);
    const uint32_t xe = sxtab16(off2, xv);
    const uint32_t xo = sxtab16_ror8(off2, xv);
    const uint32_t v0 = load32(w0);
    const uint32_t v1 = load32(w1);
    a0 = smlad(xe, sxtb16(v0), a0);
    a0 = smlad(xo, sxtb16_ror8(v0), a0);
    a1 = smlad(xe, sxtb16(v1), a1);
    a1 = smlad(xo, sxtb16_ror8(v1), a1);
  }
#endif
  for (; n > 0; --n) {
    const int32_t v = (int32_t)*x++ + off;
    a0 += v * *w0++;
    a1 += v * *w1++;
  }
  *acc0 = a0;
  *acc1 = a1;
}

/* The 4 accumulators of output channels oc .. oc + 3 start at their bias (0 without one):
 * written out because GCC -O2 neither unrolls the 4-step loop nor hoists the NULL test
 * (measured: about 8 instructions per block of 4 on Cortex-M4). */
static inline void load_bias4(const int32_t *bias, int32_t oc, int32_t a[4]) {
  if (bias != NULL) {
    a[0] = bias[oc];
    a[1] = bias[oc + 1];
    a[2] = bias[oc + 2];
    a[3] = bias[oc + 3];
  } else {
    a[0] = a[1] = a[2] = a[3] = 0;
  }
}

/* Four dot products sharing x, for a 1x1 convolution whose filter lower.py stored
 * interleaved (`interleaved`): for each block of four output channels, for each group of
 * four input channels, the 4 x 4 weights row by row. One pointer walks all four filter
 * rows, and with the input offset folded into the bias the loop's live values fit the
 * core's registers: x is loaded and widened once per four output channels.
 * n is a multiple of 4. */
static TINYOPS_NOINLINE void dot4_interleaved(const int8_t *x, const int8_t *w, int32_t n,
                                              int32_t acc[4]) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  int32_t i;
  for (i = n >> 2; i > 0; --i, x += 4, w += 16) {
#if TINYOPS_DSP
    const uint32_t xv = load32(x);
    const uint32_t xe = sxtb16(xv);
    const uint32_t xo = sxtb16_ror8(xv);
    uint32_t v = load32(w);
    a0 = smlad(xo, sxtb16_ror8(v), smlad(xe, sxtb16(v), a0));
    v = load32(w + 4);
    a1 = smlad(xo, sxtb16_ror8(v), smlad(xe, sxtb16(v), a1));
    v = load32(w + 8);
    a2 = smlad(xo, sxtb16_ror8(v), smlad(xe, sxtb16(v), a2));
    v = load32(w + 12);
    a3 = smlad(xo, sxtb16_ror8(v), smlad(xe, sxtb16(v), a3));
#else
    const int32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    a0 += x0 * w[0] + x1 * w[1] + x2 * w[2] + x3 * w[3];
    a1 += x0 * w[4] + x1 * w[5] + x2 * w[6] + x3 * w[7];
    a2 += x0 * w[8] + x1 * w[9] + x2 * w[10] + x3 * w[11];
    a3 += x0 * w[12] + x1 * w[13] + x2 * w[14] + x3 * w[15];
#endif
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}

/* ---- CONV_2D ----
 * Per output pixel, the valid filter taps of one filter row are one contiguous run of
 * (kx, ic) in both the input and the filter when dilation_w is 1, so each row is one dot
 * product of (kx1 - kx0) * in_c values; two output channels are computed together. Taps
 * outside the input are skipped, as TFLM's reference kernel skips them. */

/* 1x1, stride 1, no padding: a [pixels x in_c] by [in_c x out_c] matrix product. The
 * parameters live in locals: a store through int8_t * may alias anything, so reading them
 * through `p` would reload them after every output byte. */
static TINYOPS_NOINLINE void conv_1x1_pixel(const tinyops_conv_params *p, const int8_t *x,
                                             int8_t *dst) {
  const int32_t in_c = p->in_c, out_c = p->out_c, in_offset = p->in_offset;
  const int32_t out_offset = p->out_offset, lo = p->act_min, hi = p->act_max;
  const int32_t *bias = p->bias, *mult = p->mult;
  const int8_t *shift = p->shift;
  const int8_t *w = p->filter;
  int32_t oc = 0;
  if (p->interleaved) {
    for (; oc < out_c; oc += 4, w += 4 * in_c) {
      int32_t a[4];
      load_bias4(bias, oc, a);
      dot4_interleaved(x, w, in_c, a);
      requantize_block(p, a, oc, dst + oc);
    }
  }
  for (; oc + 1 < out_c; oc += 2, w += 2 * in_c) {
    int32_t a0 = bias ? bias[oc] : 0;
    int32_t a1 = bias ? bias[oc + 1] : 0;
    dot2_s8(x, w, w + in_c, in_c, in_offset, &a0, &a1);
    dst[oc] = requantize(a0, mult[oc], shift[oc], out_offset, lo, hi);
    dst[oc + 1] = requantize(a1, mult[oc + 1], shift[oc + 1], out_offset, lo, hi);
  }
  if (oc < out_c) {
    const int32_t a = dot_s8(x, w, in_c, in_offset, bias ? bias[oc] : 0);
    dst[oc] = requantize(a, mult[oc], shift[oc], out_offset, lo, hi);
  }
}

static void conv_1x1(const tinyops_conv_params *p, const int8_t *in, int8_t *out) {
  const int32_t pixels = p->batches * p->in_h * p->in_w;
  int32_t px;
  for (px = 0; px < pixels; ++px) {
    conv_1x1_pixel(p, in + (size_t)px * p->in_c, out + (size_t)px * p->out_c);
  }
}

/* In place: pixel by pixel into `scratch` (out_c bytes), then over the buffer. Output
 * pixel px lands on bytes [px * out_c, (px + 1) * out_c). When out_c <= in_c those bytes
 * belong to input pixels <= px, all read already, so pixels go first to last; when the
 * convolution widens (out_c > in_c) they belong to input pixels >= px, so pixels go last
 * to first. Each pixel's input is read whole before its output is copied. */
void tinyops_conv_2d_1x1_inplace(const tinyops_conv_params *p, int8_t *buf, int8_t *scratch) {
  const int32_t pixels = p->batches * p->in_h * p->in_w;
  const size_t in_c = (size_t)p->in_c, out_c = (size_t)p->out_c;
  int32_t px;
  if (out_c <= in_c) {
    for (px = 0; px < pixels; ++px) {
      conv_1x1_pixel(p, buf + (size_t)px * in_c, scratch);
      memcpy(buf + (size_t)px * out_c, scratch, out_c);
    }
  } else {
    for (px = pixels - 1; px >= 0; --px) {
      conv_1x1_pixel(p, buf + (size_t)px * in_c, scratch);
      memcpy(buf + (size_t)px * out_c, scratch, out_c);
    }
  }
}

/* Any other convolution: the input patch under the filter is gathered into a contiguous
 * buffer (im2col, one output pixel at a time), taps outside the input filled with the
 * input zero point, whose (x + in_offset) is exactly 0: the same sum as TFLM's skipping
 * of those taps. Each output channel is then one dot product of k_h * k_w * in_c values.
 * Patches above TINYOPS_IM2COL_MAX bytes (stack) fall back to per-tap dot products. */
/* lower.py's IM2COL_MAX mirrors this: it folds the input offset of convolutions that take
 * the im2col path, so the limit is not a build option. */
#define TINYOPS_IM2COL_MAX 1024

/* Input row iy of the current batch: from the ring of saved rows (in-place runs) when
 * iy <= ring_top, else from the input. */
typedef struct {
  const int8_t *in_b;
  size_t row_bytes;
  const int8_t *ring;
  int32_t ring_rows, ring_top;
} tinyops_rows;

static const int8_t *input_row(const tinyops_rows *r, int32_t iy) {
  if (r->ring != NULL && iy <= r->ring_top) {
    return r->ring + (size_t)(iy % r->ring_rows) * r->row_bytes;
  }
  return r->in_b + (size_t)iy * r->row_bytes;
}

/* One output row oy of the im2col convolution, written to dst. */
static void conv_im2col_row(const tinyops_conv_params *p, const tinyops_rows *rows, int32_t oy,
                            int8_t *dst) {
  int8_t patch[TINYOPS_IM2COL_MAX];
  const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, k_h = p->k_h, k_w = p->k_w;
  const int32_t out_c = p->out_c, in_offset = p->in_offset, out_offset = p->out_offset;
  const int32_t lo = p->act_min, hi = p->act_max;
  const int32_t size = k_h * k_w * in_c;
  const int8_t pad_value = (int8_t)p->pad_value;
  const int8_t *filter = p->filter;
  const int32_t *bias = p->bias, *mult = p->mult;
  const int8_t *shift = p->shift;
  const int32_t y0 = oy * p->stride_h - p->pad_h;
  int32_t ox, oc, ky, kx, i;
  for (ox = 0; ox < p->out_w; ++ox) {
    const int32_t x0 = ox * p->stride_w - p->pad_w;
    int8_t *q = patch;
    const int8_t *w = filter;
    for (ky = 0; ky < k_h; ++ky) {
      const int32_t iy = y0 + p->dil_h * ky;
      const int8_t *row = iy < 0 || iy >= in_h ? NULL : input_row(rows, iy);
      for (kx = 0; kx < k_w; ++kx, q += in_c) {
        const int32_t ix = x0 + p->dil_w * kx;
        if (row == NULL || ix < 0 || ix >= in_w) {
          for (i = 0; i < in_c; ++i) q[i] = pad_value;
        } else {
          memcpy(q, row + (size_t)ix * in_c, (size_t)in_c);
        }
      }
    }
    /* The whole patch is copied before any output of this pixel is written, so an
     * in-place caller may overwrite input bytes this pixel read. */
    oc = 0;
    if (p->interleaved) {
      for (; oc < out_c; oc += 4, w += 4 * size) {
        int32_t a[4];
        load_bias4(bias, oc, a);
        dot4_interleaved(patch, w, size, a);
        requantize_block(p, a, oc, dst + oc);
      }
    }
    for (; oc + 1 < out_c; oc += 2, w += 2 * size) {
      int32_t a0 = bias ? bias[oc] : 0;
      int32_t a1 = bias ? bias[oc + 1] : 0;
      dot2_s8(patch, w, w + size, size, in_offset, &a0, &a1);
      dst[oc] = requantize(a0, mult[oc], shift[oc], out_offset, lo, hi);
      dst[oc + 1] = requantize(a1, mult[oc + 1], shift[oc + 1], out_offset, lo, hi);
    }
    if (oc < out_c) {
      const int32_t a = dot_s8(patch, w, size, in_offset, bias ? bias[oc] : 0);
      dst[oc] = requantize(a, mult[oc], shift[oc], out_offset, lo, hi);
    }
    dst += out_c;
  }
}

static void conv_im2col(const tinyops_conv_params *p, const int8_t *in, int8_t *out) {
  const size_t in_size = (size_t)p->in_h * p->in_w * p->in_c;
  const size_t out_row = (size_t)p->out_w * p->out_c;
  int32_t b, oy;
  for (b = 0; b < p->batches; ++b) {
    tinyops_rows rows;
    rows.in_b = in + (size_t)b * in_size;
    rows.row_bytes = (size_t)p->in_w * p->in_c;
    rows.ring = NULL;
    rows.ring_rows = 0;
    rows.ring_top = -1;
    for (oy = 0; oy < p->out_h; ++oy) {
      conv_im2col_row(p, &rows, oy, out + ((size_t)b * p->out_h + oy) * out_row);
    }
  }
}

/* In place, the output the input's size and depth (stride 1, dilation 1, SAME): output row
 * oy is written over input row oy, which rows oy + 1 .. oy + pad_h still read; so input row
 * oy is saved in a ring of pad_h + 1 rows (`scratch`) first, and rows at or above oy are
 * read from the ring, rows below from the buffer (not overwritten yet), as the in-place
 * depthwise kernel does. Only for convolutions on the im2col path. */
void tinyops_conv_2d_inplace(const tinyops_conv_params *p, int8_t *buf, int8_t *scratch) {
  const size_t row_bytes = (size_t)p->in_w * p->in_c;
  int32_t b, oy;
  for (b = 0; b < p->batches; ++b) {
    tinyops_rows rows;
    int8_t *buf_b = buf + (size_t)b * p->in_h * row_bytes;
    rows.in_b = buf_b;
    rows.row_bytes = row_bytes;
    rows.ring = scratch;
    rows.ring_rows = p->pad_h + 1;
    for (oy = 0; oy < p->out_h; ++oy) {
      memcpy(scratch + (size_t)(oy % rows.ring_rows) * row_bytes, buf_b + (size_t)oy * row_bytes,
             row_bytes);
      rows.ring_top = oy;
      conv_im2col_row(p, &rows, oy, buf_b + (size_t)oy * row_bytes);
    }
  }
}

void tinyops_conv_2d(const tinyops_conv_params *p, const int8_t *in, int8_t *out) {
  const int32_t filter_size = p->k_h * p->k_w * p->in_c;
  int32_t b, oy, ox, oc, ky, kx;
  if (p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
      p->pad_w == 0) {
    conv_1x1(p, in, out);
    return;
  }
  if (filter_size <= TINYOPS_IM2COL_MAX) {
    conv_im2col(p, in, out);
    return;
  }
  for (b = 0; b < p->batches; ++b) {
    const int8_t *in_b = in + (size_t)b * p->in_h * p->in_w * p->in_c;
    int8_t *dst = out + (size_t)b * p->out_h * p->out_w * p->out_c;
    for (oy = 0; oy < p->out_h; ++oy) {
      const int32_t y0 = oy * p->stride_h - p->pad_h;
      for (ox = 0; ox < p->out_w; ++ox) {
        const int32_t x0 = ox * p->stride_w - p->pad_w;
        int32_t kx0 = 0, kx1 = p->k_w;
        if (p->dil_w == 1) {
          if (x0 < 0) kx0 = -x0;
          if (x0 + kx1 > p->in_w) kx1 = p->in_w - x0;
        }
        for (oc = 0; oc < p->out_c; oc += 2) {
          const int pair = oc + 1 < p->out_c;
          const int8_t *f0 = p->filter + (size_t)oc * filter_size;
          const int8_t *f1 = pair ? f0 + filter_size : f0;
          int32_t acc0 = p->bias ? p->bias[oc] : 0;
          int32_t acc1 = p->bias && pair ? p->bias[oc + 1] : 0;
          for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = y0 + p->dil_h * ky;
            const int8_t *row;
            size_t frow;
            if (iy < 0 || iy >= p->in_h) continue;
            row = in_b + (size_t)iy * p->in_w * p->in_c;
            frow = (size_t)ky * p->k_w * p->in_c;
            if (p->dil_w == 1) {
              if (kx1 > kx0) {
                const size_t at = (size_t)kx0 * p->in_c;
                dot2_s8(row + (size_t)(x0 + kx0) * p->in_c, f0 + frow + at, f1 + frow + at,
                        (kx1 - kx0) * p->in_c, p->in_offset, &acc0, &acc1);
              }
              continue;
            }
            for (kx = 0; kx < p->k_w; ++kx) {
              const int32_t ix = x0 + p->dil_w * kx;
              const size_t at = frow + (size_t)kx * p->in_c;
              if (ix < 0 || ix >= p->in_w) continue;
              dot2_s8(row + (size_t)ix * p->in_c, f0 + at, f1 + at, p->in_c, p->in_offset,
                      &acc0, &acc1);
            }
          }
          dst[oc] = requantize(acc0, p->mult[oc], p->shift[oc], p->out_offset, p->act_min,
                               p->act_max);
          if (pair) {
            dst[oc + 1] = requantize(acc1, p->mult[oc + 1], p->shift[oc + 1], p->out_offset,
                                     p->act_min, p->act_max);
          }
        }
        dst += p->out_c;
      }
    }
  }
}

/* ---- DEPTHWISE_CONV_2D: output channel ic * depth_multiplier + m reads input ic ----
 * With depth multiplier 1, four neighbouring channels are accumulated together in
 * registers: one word load of the input and one of the filter per tap feed four
 * multiply-accumulates. */

/* One output row: rows[ky] is the input row under filter row ky (NULL outside the
 * input), so the same code runs on the input tensor and, in place, on saved rows. */
static void depthwise_row(const tinyops_conv_params *p, const int8_t *const *rows,
                          int8_t *dst) {
  const int32_t c = p->out_c, in_w = p->in_w, k_w = p->k_w;
  const int32_t dil_w = p->dil_w, in_offset = p->in_offset;
  const int8_t *filter = p->filter;
  const int32_t *bias = p->bias, *mult = p->mult;
  const int8_t *shift = p->shift;
  const int32_t out_offset = p->out_offset, lo = p->act_min, hi = p->act_max;
  int32_t ox, ch, ky, kx;
#if TINYOPS_DSP
  const uint32_t off2 = offset_pair(in_offset);
#endif
  for (ox = 0; ox < p->out_w; ++ox) {
    const int32_t x0 = ox * p->stride_w - p->pad_w;
    int32_t kx0 = 0, kx1 = k_w;
    while (kx0 < kx1 && x0 + dil_w * kx0 < 0) ++kx0;
    while (kx1 > kx0 && x0 + dil_w * (kx1 - 1) >= in_w) --kx1;
    for (ch = 0; ch + 4 <= c; ch += 4) {
      int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (ky = 0; ky < p->k_h; ++ky) {
        const int8_t *px;
        const int8_t *f;
        if (rows[ky] == NULL) continue;
        px = rows[ky] + (size_t)(x0 + dil_w * kx0) * c + ch;
        f = filter + ((size_t)ky * k_w + kx0) * c + ch;
        for (kx = kx0; kx < kx1; ++kx, px += dil_w * c, f += c) {
#if TINYOPS_DSP
          const uint32_t xv = load32(px);
          const uint32_t wv = load32(f);
          const uint32_t xe = sxtab16(off2, xv), xo = sxtab16_ror8(off2, xv);
          const uint32_t we = sxtb16(wv), wo = sxtb16_ror8(wv);
          a0 = smlabb(xe, we, a0);
          a2 = smlatt(xe, we, a2);
          a1 = smlabb(xo, wo, a1);
          a3 = smlatt(xo, wo, a3);
#else
          a0 += ((int32_t)px[0] + in_offset) * f[0];
          a1 += ((int32_t)px[1] + in_offset) * f[1];
          a2 += ((int32_t)px[2] + in_offset) * f[2];
          a3 += ((int32_t)px[3] + in_offset) * f[3];
#endif
        }
      }
      {
        int32_t acc[4];
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
        if (bias) {
          acc[0] += bias[ch];
          acc[1] += bias[ch + 1];
          acc[2] += bias[ch + 2];
          acc[3] += bias[ch + 3];
        }
        requantize_block(p, acc, ch, dst + ch);
      }
    }
    for (; ch < c; ++ch) {
      int32_t acc = bias ? bias[ch] : 0;
      for (ky = 0; ky < p->k_h; ++ky) {
        if (rows[ky] == NULL) continue;
        for (kx = kx0; kx < kx1; ++kx) {
          acc += ((int32_t)rows[ky][(size_t)(x0 + dil_w * kx) * c + ch] + in_offset) *
                 filter[((size_t)ky * k_w + kx) * c + ch];
        }
      }
      dst[ch] = requantize(acc, mult[ch], shift[ch], out_offset, lo, hi);
    }
    dst += c;
  }
}

/* Filter heights up to this many rows take the row-pointer path (all real models). */
#define TINYOPS_DW_MAX_KH 16

static void depthwise_multiplier_1(const tinyops_conv_params *p, const int8_t *in_b,
                                   int8_t *dst) {
  const int8_t *rows[TINYOPS_DW_MAX_KH];
  const size_t row_bytes = (size_t)p->in_w * p->in_c;
  int32_t oy, ky;
  for (oy = 0; oy < p->out_h; ++oy) {
    const int32_t y0 = oy * p->stride_h - p->pad_h;
    for (ky = 0; ky < p->k_h; ++ky) {
      const int32_t iy = y0 + p->dil_h * ky;
      rows[ky] = iy < 0 || iy >= p->in_h ? NULL : in_b + (size_t)iy * row_bytes;
    }
    depthwise_row(p, rows, dst + (size_t)oy * p->out_w * p->out_c);
  }
}

/* In place (stride 1, dilation 1, depth multiplier 1, output the input's size): output
 * row oy is written over input row oy, which rows oy + 1 .. oy + pad_h still read. So
 * before row oy is computed, the original input row oy is saved in a ring of pad_h + 1
 * rows in `scratch`; filter rows at or above oy read the ring, rows below read the
 * buffer, which is not overwritten yet. */
void tinyops_depthwise_conv_2d_inplace(const tinyops_conv_params *p, int8_t *buf,
                                       int8_t *scratch) {
  const int8_t *rows[TINYOPS_DW_MAX_KH];
  const size_t row_bytes = (size_t)p->in_w * p->in_c;
  const int32_t ring = p->pad_h + 1;
  int32_t b, oy, ky;
  for (b = 0; b < p->batches; ++b) {
    int8_t *buf_b = buf + (size_t)b * p->in_h * row_bytes;
    for (oy = 0; oy < p->out_h; ++oy) {
      memcpy(scratch + (size_t)(oy % ring) * row_bytes, buf_b + (size_t)oy * row_bytes,
             row_bytes);
      for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = oy - p->pad_h + ky;
        if (iy < 0 || iy >= p->in_h) {
          rows[ky] = NULL;
        } else if (iy <= oy) {
          rows[ky] = scratch + (size_t)(iy % ring) * row_bytes;
        } else {
          rows[ky] = buf_b + (size_t)iy * row_bytes;
        }
      }
      depthwise_row(p, rows, buf_b + (size_t)oy * row_bytes);
    }
  }
}

/* A 1x1 convolution (stride 1, no padding) and the depthwise convolution (multiplier 1)
 * that is the only reader of its output, in row bands: the 1x1's output rows are computed
 * when the depthwise window first needs them, into a ring of (k_h - 1) * dil_h + 1 rows
 * (`ring`), so the intermediate tensor is never whole. `in` and `out` may be the same
 * buffer when every output row lands on input rows the 1x1 has already consumed (the
 * compiler checks this row by row before it emits such a call). Batch 1. */
void tinyops_conv_1x1_depthwise(const tinyops_conv_params *pw, const tinyops_conv_params *dw,
                                const int8_t *in, int8_t *out, int8_t *ring) {
  const int8_t *rows[TINYOPS_DW_MAX_KH];
  const size_t ring_row = (size_t)dw->in_w * dw->in_c, in_row = (size_t)pw->in_w * pw->in_c;
  const size_t out_row = (size_t)dw->out_w * dw->out_c;
  const int32_t ring_rows = (dw->k_h - 1) * dw->dil_h + 1;
  int32_t next = 0, oy, ky, x;
  for (oy = 0; oy < dw->out_h; ++oy) {
    const int32_t y0 = oy * dw->stride_h - dw->pad_h;
    int32_t need = y0 + (dw->k_h - 1) * dw->dil_h;
    if (need >= dw->in_h) need = dw->in_h - 1;
    for (; next <= need; ++next) {
      const int8_t *src = in + (size_t)next * in_row;
      int8_t *dst = ring + (size_t)(next % ring_rows) * ring_row;
      for (x = 0; x < pw->in_w; ++x) {
        conv_1x1_pixel(pw, src + (size_t)x * pw->in_c, dst + (size_t)x * pw->out_c);
      }
    }
    for (ky = 0; ky < dw->k_h; ++ky) {
      const int32_t iy = y0 + dw->dil_h * ky;
      rows[ky] = iy < 0 || iy >= dw->in_h ? NULL : ring + (size_t)(iy % ring_rows) * ring_row;
    }
    depthwise_row(dw, rows, out + (size_t)oy * out_row);
  }
}

void tinyops_depthwise_conv_2d(const tinyops_conv_params *p, const int8_t *in, int8_t *out) {
  int32_t b, oy, ox, ic, m, ky, kx;
  for (b = 0; b < p->batches; ++b) {
    const int8_t *in_b = in + (size_t)b * p->in_h * p->in_w * p->in_c;
    if (p->depth_multiplier == 1 && p->k_h <= TINYOPS_DW_MAX_KH) {
      depthwise_multiplier_1(p, in_b, out + (size_t)b * p->out_h * p->out_w * p->out_c);
      continue;
    }
    for (oy = 0; oy < p->out_h; ++oy) {
      const int32_t y0 = oy * p->stride_h - p->pad_h;
      for (ox = 0; ox < p->out_w; ++ox) {
        const int32_t x0 = ox * p->stride_w - p->pad_w;
        for (ic = 0; ic < p->in_c; ++ic) {
          for (m = 0; m < p->depth_multiplier; ++m) {
            const int32_t oc = ic * p->depth_multiplier + m;
            int32_t acc = 0;
            for (ky = 0; ky < p->k_h; ++ky) {
              const int32_t iy = y0 + p->dil_h * ky;
              if (iy < 0 || iy >= p->in_h) continue;
              for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = x0 + p->dil_w * kx;
                if (ix < 0 || ix >= p->in_w) continue;
                acc += (int32_t)p->filter[((size_t)ky * p->k_w + kx) * p->out_c + oc] *
                       ((int32_t)in_b[((size_t)iy * p->in_w + ix) * p->in_c + ic] + p->in_offset);
              }
            }
            if (p->bias) acc += p->bias[oc];
            out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                requantize(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min,
                           p->act_max);
          }
        }
      }
    }
  }
}

/* ---- FULLY_CONNECTED ---- */

void tinyops_fully_connected(const tinyops_fc_params *p, const int8_t *in, int8_t *out) {
  int32_t b, o, d;
  for (b = 0; b < p->batches; ++b) {
    const int8_t *x = in + (size_t)b * p->in_depth;
    for (o = 0; o < p->out_depth; ++o) {
      const int8_t *w = p->filter + (size_t)o * p->in_depth;
      int32_t acc = 0;
      if (p->filter_offset == 0) {
        acc = dot_s8(x, w, p->in_depth, p->in_offset, 0);
      } else {
        for (d = 0; d < p->in_depth; ++d) {
          acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)x[d] + p->in_offset);
        }
      }
      if (p->bias) acc += p->bias[o];
      acc = p->mults ? mul_by_quantized_multiplier(acc, p->mults[o], p->shifts[o])
                     : mul_by_quantized_multiplier(acc, p->mult, p->shift);
      acc += p->out_offset;
      out[(size_t)b * p->out_depth + o] = clamp_to_int8(acc, p->act_min, p->act_max);
    }
  }
}

/* ---- AVERAGE_POOL_2D / MAX_POOL_2D: windows clipped to the input, padding not counted ---- */

void tinyops_average_pool_2d(const tinyops_pool_params *p, const int8_t *in, int8_t *out) {
  int32_t b, oy, ox, c, y, x;
  for (b = 0; b < p->batches; ++b) {
    for (oy = 0; oy < p->out_h; ++oy) {
      const int32_t y0 = oy * p->stride_h - p->pad_h;
      const int32_t fy0 = y0 < 0 ? -y0 : 0;
      const int32_t fy1 = p->f_h < p->in_h - y0 ? p->f_h : p->in_h - y0;
      for (ox = 0; ox < p->out_w; ++ox) {
        const int32_t x0 = ox * p->stride_w - p->pad_w;
        const int32_t fx0 = x0 < 0 ? -x0 : 0;
        const int32_t fx1 = p->f_w < p->in_w - x0 ? p->f_w : p->in_w - x0;
        for (c = 0; c < p->c; ++c) {
          int32_t acc = 0;
          int32_t count = 0;
          for (y = fy0; y < fy1; ++y) {
            for (x = fx0; x < fx1; ++x) {
              acc += in[(((size_t)b * p->in_h + y0 + y) * p->in_w + x0 + x) * p->c + c];
              ++count;
            }
          }
          if (count > 0) {
            /* Round half away from zero, as TFLite's reference average pool does. */
            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
          }
          out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->c + c] =
              clamp_to_int8(acc, p->act_min, p->act_max);
        }
      }
    }
  }
}

void tinyops_max_pool_2d(const tinyops_pool_params *p, const int8_t *in, int8_t *out) {
  int32_t b, oy, ox, c, y, x;
  for (b = 0; b < p->batches; ++b) {
    for (oy = 0; oy < p->out_h; ++oy) {
      const int32_t y0 = oy * p->stride_h - p->pad_h;
      const int32_t fy0 = y0 < 0 ? -y0 : 0;
      const int32_t fy1 = p->f_h < p->in_h - y0 ? p->f_h : p->in_h - y0;
      for (ox = 0; ox < p->out_w; ++ox) {
        const int32_t x0 = ox * p->stride_w - p->pad_w;
        const int32_t fx0 = x0 < 0 ? -x0 : 0;
        const int32_t fx1 = p->f_w < p->in_w - x0 ? p->f_w : p->in_w - x0;
        for (c = 0; c < p->c; ++c) {
          int32_t best = INT8_MIN;
          for (y = fy0; y < fy1; ++y) {
            for (x = fx0; x < fx1; ++x) {
              const int32_t v = in[(((size_t)b * p->in_h + y0 + y) * p->in_w + x0 + x) * p->c + c];
              if (v > best) best = v;
            }
          }
          out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->c + c] =
              clamp_to_int8(best, p->act_min, p->act_max);
        }
      }
    }
  }
}

/* ---- ADD: both inputs rescaled to twice the larger input scale with 20 bits of headroom ---- */

/* n elements; out may be in1 or in2 (each element is written after both are read). */
static void add_range(const tinyops_add_params *p, const int8_t *in1, const int8_t *in2,
                      int8_t *out, int32_t n) {
  int32_t i;
  for (i = 0; i < n; ++i) {
    const int32_t a = shift_left(p->in1_offset + in1[i], p->left_shift);
    const int32_t b = shift_left(p->in2_offset + in2[i], p->left_shift);
    const int32_t sa = rounding_divide_by_pot(srdhm(a, p->in1_mult), -p->in1_shift);
    const int32_t sb = rounding_divide_by_pot(srdhm(b, p->in2_mult), -p->in2_shift);
    const int32_t sum = wrap_add(sa, sb);
    const int32_t raw =
        rounding_divide_by_pot(srdhm(sum, p->out_mult), -p->out_shift) + p->out_offset;
    out[i] = clamp_to_int8(raw, p->act_min, p->act_max);
  }
}

void tinyops_add(const tinyops_add_params *p, const int8_t *in1, const int8_t *in2,
                 int8_t *out) {
  add_range(p, in1, in2, out, p->size);
}

/* A residual block, conv -> conv -> ADD(block input, second conv's output), in row bands:
 * output row oy of the second convolution needs rows up to need(oy) of the first's, which
 * are computed then into a ring of (k_h - 1) * dil_h + 1 rows (the second's window), and
 * the second's row goes into one row of scratch, which the ADD combines with row oy of
 * the block input. Neither intermediate tensor is ever whole: scratch holds the ring,
 * then the row. `in` and `out` may be the same buffer when no row of the first
 * convolution computed after output row oy reads input rows <= oy (the compiler checks
 * this row by row: 3x3 SAME stride-1 convolutions qualify). `input_first`: the block
 * input is the ADD's first operand (else its second). Both convolutions take the im2col
 * path. Batch 1. */
void tinyops_conv_conv_add(const tinyops_conv_params *c1, const tinyops_conv_params *c2,
                           const tinyops_add_params *add, const int8_t *in, int8_t *out,
                           int8_t *scratch, int32_t input_first) {
  const size_t ring_row = (size_t)c1->out_w * c1->out_c;
  const size_t out_row = (size_t)c2->out_w * c2->out_c;
  const int32_t ring_rows = (c2->k_h - 1) * c2->dil_h + 1;
  int8_t *row = scratch + (size_t)ring_rows * ring_row;
  tinyops_rows x, mid;
  int32_t next = 0, oy;
  x.in_b = in;
  x.row_bytes = (size_t)c1->in_w * c1->in_c;
  x.ring = NULL;
  x.ring_rows = 0;
  x.ring_top = -1;
  mid.in_b = scratch; /* every row the second convolution reads is in the ring */
  mid.row_bytes = ring_row;
  mid.ring = scratch;
  mid.ring_rows = ring_rows;
  for (oy = 0; oy < c2->out_h; ++oy) {
    int32_t need = oy * c2->stride_h - c2->pad_h + (c2->k_h - 1) * c2->dil_h;
    const int8_t *skip = in + (size_t)oy * out_row;
    if (need >= c2->in_h) need = c2->in_h - 1;
    for (; next <= need; ++next) {
      conv_im2col_row(c1, &x, next, scratch + (size_t)(next % ring_rows) * ring_row);
    }
    mid.ring_top = next - 1;
    conv_im2col_row(c2, &mid, oy, row);
    if (input_first) {
      add_range(add, skip, row, out + (size_t)oy * out_row, (int32_t)out_row);
    } else {
      add_range(add, row, skip, out + (size_t)oy * out_row, (int32_t)out_row);
    }
  }
}

/* ---- SOFTMAX: gemmlowp fixed-point exp and reciprocal, as TFLite's reference int8 softmax ---- */

/* gemmlowp SaturatingRoundingMultiplyByPOT for exponent > 0: a saturating left shift. */
static int32_t saturating_shift_left(int32_t x, int exponent) {
  const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return shift_left(x, exponent);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
  const int32_t constant_term = 1895147668;     /* exp(-1/8) in Q0.31 */
  const int32_t constant_1_over_3 = 715827883; /* 1/3 in Q0.31 */
  const int32_t x = wrap_add(a, (int32_t)1 << 28);
  const int32_t x2 = srdhm(x, x);
  const int32_t x3 = srdhm(x2, x);
  const int32_t x4 = srdhm(x2, x2);
  const int32_t x4_over_4 = rounding_divide_by_pot(x4, 2);
  const int32_t poly = rounding_divide_by_pot(
      wrap_add(srdhm(wrap_add(x4_over_4, x3), constant_1_over_3), x2), 1);
  return wrap_add(constant_term, srdhm(constant_term, wrap_add(x, poly)));
}

/* exp(a) for a <= 0: a in Q5.26, result in Q0.31. */
static int32_t exp_on_negative_values(int32_t a) {
  static const int32_t multipliers[7] = {
      1672461947, /* exp(-1/4) */
      1302514674, /* exp(-1/2) */
      790015084,  /* exp(-1) */
      290630308,  /* exp(-2) */
      39332535,   /* exp(-4) */
      720401,     /* exp(-8) */
      242,        /* exp(-16) */
  };
  const int32_t one_quarter = (int32_t)1 << 24;
  const int32_t a_mod_quarter_minus_one_quarter = wrap_sub(a & (one_quarter - 1), one_quarter);
  const int32_t remainder = wrap_sub(a_mod_quarter_minus_one_quarter, a);
  int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
      saturating_shift_left(a_mod_quarter_minus_one_quarter, 5));
  int k;
  for (k = 0; k < 7; ++k) {
    if (remainder & ((int32_t)1 << (24 + k))) result = srdhm(result, multipliers[k]);
  }
  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1), Q0.31: three Newton-Raphson steps in Q2.29. */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a) {
  const int64_t sum = (int64_t)a + INT32_MAX;
  const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = wrap_add(1515870810, srdhm(half_denominator, -1010580540)); /* 48/17 - 32/17 d */
  int i;
  for (i = 0; i < 3; ++i) {
    const int32_t half_denominator_times_x = srdhm(half_denominator, x);
    const int32_t one_minus = wrap_sub((int32_t)1 << 29, half_denominator_times_x);
    x = wrap_add(x, saturating_shift_left(srdhm(x, one_minus), 2));
  }
  return saturating_shift_left(x, 1);
}

static int count_leading_zeros(uint32_t x) {
  int n = 0;
  if (x == 0) return 32;
  while (!(x & 0x80000000u)) {
    x <<= 1;
    ++n;
  }
  return n;
}

void tinyops_softmax(const tinyops_softmax_params *p, const int8_t *in, int8_t *out) {
  int32_t i, c;
  for (i = 0; i < p->outer; ++i) {
    const int8_t *row = in + (size_t)i * p->depth;
    int8_t *dst = out + (size_t)i * p->depth;
    int32_t max_in_row = INT8_MIN;
    int32_t sum_of_exps = 0; /* Q12.19 */
    int headroom_plus_one, num_bits_over_unit;
    int32_t shifted_scale;
    for (c = 0; c < p->depth; ++c) {
      if (row[c] > max_in_row) max_in_row = row[c];
    }
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = row[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t scaled =
            srdhm(shift_left(diff, p->input_left_shift), p->input_multiplier);
        sum_of_exps = wrap_add(sum_of_exps, rounding_divide_by_pot(exp_on_negative_values(scaled), 12));
      }
    }
    headroom_plus_one = count_leading_zeros((uint32_t)sum_of_exps);
    num_bits_over_unit = 12 - headroom_plus_one;
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(
        (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - ((uint32_t)1 << 31)));
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = row[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t scaled =
            srdhm(shift_left(diff, p->input_left_shift), p->input_multiplier);
        const int32_t exp_in_0 = exp_on_negative_values(scaled);
        const int32_t unsat = rounding_divide_by_pot(srdhm(shifted_scale, exp_in_0),
                                                     num_bits_over_unit + 31 - 8);
        dst[c] = clamp_to_int8(unsat + INT8_MIN, INT8_MIN, INT8_MAX);
      } else {
        dst[c] = INT8_MIN;
      }
    }
  }
}

/* ---- RESHAPE, when it cannot alias (caller's input straight to the caller's output) ---- */

void tinyops_copy(int32_t size, const int8_t *in, int8_t *out) {
  if (size > 0 && in != out) memcpy(out, in, (size_t)size);
}
