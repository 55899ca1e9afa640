/* Plain C reference of the kernels in gemm.h (llm.c style: one loop nest per operation, no tricks),
 * the yardstick tests/kernels compares the CUDA results against. Same numerics as inference/cpu:
 * each block's partial sum is exact (computed in double: a product of two e4m3/e2m1 values has at
 * most 8 significant bits and a 128-term block sum stays far below 2^53 units of its smallest
 * product), rounded once to fp32, multiplied by act_scale then weight_scale, and added in K order
 * in fp32. Everything here runs on the host. */
#ifndef CUDA_REF_H
#define CUDA_REF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

float cuda_ref_bf16_to_f32(uint16_t b);
uint16_t cuda_ref_f32_to_bf16(float f); /* round to nearest even */
double cuda_ref_e4m3(uint8_t b);
double cuda_ref_e2m1(uint8_t nibble);
float cuda_ref_e8m0(uint8_t b);
/* Nearest e4m3 code (ties to even) of x, |x| <= 448. */
uint8_t cuda_ref_e4m3_encode(float x);

/* x bf16 [m][k] -> q e4m3 [m][k], sa [m][k/128]. */
void cuda_ref_act_quant(const uint16_t *x, int m, int k, uint8_t *q, float *sa);

/* y[i][j] (fp32 before the bf16 rounding, [m][n]) = FP8 product; mag[i][j] = sum over K of
 * |w x| * act_scale * weight_scale (double), the scale of the accumulation error. */
void cuda_ref_fp8_gemm(const uint8_t *q, const float *sa, int m, const uint8_t *w, const uint8_t *ws, int n, int k,
                       float *y, double *mag);

/* One FP4 row product per pair (see cuda_fp4_gemv_grouped): y [npairs][n], mag likewise. */
void cuda_ref_fp4_gemv_grouped(const uint8_t *q, const float *sa, int x_group, int npairs, const int *ids,
                               const uint8_t *const *wtab, const uint8_t *const *stab, int n, int k, float *y,
                               double *mag);

#ifdef __cplusplus
}
#endif

#endif
