/* tinyops int8 kernels: plain C99, no allocation, bit-exact with TFLM's reference kernels.
 *
 * Generated model code (tinyops_<name>.c) fills one const parameter struct per operator
 * and calls these functions in execution order on buffers of a static arena. Tensors are
 * NHWC, row-major; filters keep the .tflite layout (CONV_2D [out_c][k_h][k_w][in_c],
 * DEPTHWISE_CONV_2D [1][k_h][k_w][out_c], FULLY_CONNECTED [out][in]).
 *
 * Quantized arithmetic follows TFLite's spec: int32 accumulators of
 * (input + input_offset) * filter, plus an int32 bias, scaled by a fixed-point multiplier
 * and shift (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT: the two-step
 * rounding TFLM uses when TFLITE_SINGLE_ROUNDING is off), plus the output zero point,
 * clamped to the fused activation's range.
 */
#ifndef TINYOPS_KERNELS_H_
#define TINYOPS_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TINYOPS_KERNELS_VERSION 4

typedef struct {
  int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
  int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
  int32_t depth_multiplier; /* DEPTHWISE_CONV_2D only */
  int32_t in_offset, out_offset, act_min, act_max;
  const int8_t *filter;
  const int32_t *bias; /* NULL when the operator has none */
  const int32_t *mult; /* per output channel */
  const int8_t *shift; /* per output channel */
  /* CONV_2D only: the filter is stored in blocks of 4 output channels x 4 values of the
   * k_h * k_w * in_c patch (both multiples of 4, in_offset folded into the bias); see
   * lower.py. pad_value: the input zero point, written for taps outside the input. */
  int32_t interleaved, pad_value;
} tinyops_conv_params;

typedef struct {
  int32_t batches, in_depth, out_depth;
  int32_t in_offset, filter_offset, out_offset, act_min, act_max;
  int32_t mult, shift; /* per-tensor weights */
  const int8_t *filter;
  const int32_t *bias;
  const int32_t *mults; /* per-channel weights: one per output, else NULL */
  const int8_t *shifts;
} tinyops_fc_params;

typedef struct {
  int32_t batches, in_h, in_w, c, out_h, out_w;
  int32_t f_h, f_w, stride_h, stride_w, pad_h, pad_w;
  int32_t act_min, act_max;
} tinyops_pool_params;

typedef struct {
  int32_t size;
  int32_t in1_offset, in2_offset, left_shift;
  int32_t in1_mult, in1_shift, in2_mult, in2_shift;
  int32_t out_mult, out_shift, out_offset, act_min, act_max;
} tinyops_add_params;

typedef struct {
  int32_t outer, depth;
  int32_t input_multiplier, input_left_shift, diff_min;
} tinyops_softmax_params;

/* x * multiplier * 2^(shift - 31), rounded as TFLite's MultiplyByQuantizedMultiplier. */
int32_t tinyops_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift);

void tinyops_conv_2d(const tinyops_conv_params *p, const int8_t *in, int8_t *out);
void tinyops_depthwise_conv_2d(const tinyops_conv_params *p, const int8_t *in, int8_t *out);
/* In-place variants: the output overwrites the input in `buf` (see tinyops_kernels.c for
 * when that is legal; the memory planner only emits them then). scratch: out_c bytes for
 * the 1x1 convolution, (pad_h + 1) * in_w * in_c for the depthwise one. */
void tinyops_conv_2d_1x1_inplace(const tinyops_conv_params *p, int8_t *buf, int8_t *scratch);
void tinyops_depthwise_conv_2d_inplace(const tinyops_conv_params *p, int8_t *buf,
                                       int8_t *scratch);
/* A CONV_2D on the im2col path with the output the input's size and depth (stride 1,
 * dilation 1, SAME), in place: scratch holds (pad_h + 1) * in_w * in_c bytes. (A strided
 * im2col convolution runs in place through tinyops_conv_2d itself, in == out, when no
 * output pixel lands on input bytes a later pixel reads: each pixel's patch is copied
 * before its outputs are written.) */
void tinyops_conv_2d_inplace(const tinyops_conv_params *p, int8_t *buf, int8_t *scratch);
/* A 1x1 CONV_2D fused with the DEPTHWISE_CONV_2D that reads its output, in row bands:
 * ring holds ((k_h - 1) * dil_h + 1) rows of the 1x1's output; in == out is allowed when
 * the compiler found it legal. */
void tinyops_conv_1x1_depthwise(const tinyops_conv_params *pw, const tinyops_conv_params *dw,
                                const int8_t *in, int8_t *out, int8_t *ring);
/* A residual block, CONV_2D -> CONV_2D -> ADD with the block input, in row bands (see
 * tinyops_kernels.c): scratch holds (c2->k_h - 1) * c2->dil_h + 1 rows of the first
 * convolution's output and one row of the second's; in == out is allowed when the
 * compiler found it legal; input_first: the block input is the ADD's first operand. */
void tinyops_conv_conv_add(const tinyops_conv_params *c1, const tinyops_conv_params *c2,
                           const tinyops_add_params *add, const int8_t *in, int8_t *out,
                           int8_t *scratch, int32_t input_first);
void tinyops_fully_connected(const tinyops_fc_params *p, const int8_t *in, int8_t *out);
void tinyops_average_pool_2d(const tinyops_pool_params *p, const int8_t *in, int8_t *out);
void tinyops_max_pool_2d(const tinyops_pool_params *p, const int8_t *in, int8_t *out);
void tinyops_add(const tinyops_add_params *p, const int8_t *in1, const int8_t *in2,
                 int8_t *out);
void tinyops_softmax(const tinyops_softmax_params *p, const int8_t *in, int8_t *out);
void tinyops_copy(int32_t size, const int8_t *in, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* TINYOPS_KERNELS_H_ */
