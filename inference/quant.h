/* Exact scalar decoders for the storage formats (spec §3.2, §5): FP8 E4M3 (finite-only "fn"
 * variant: 0x7F/0xFF are NaN, no infinities), E8M0 (2^(b-127), 0xFF NaN), E2M1 FP4 codes, and
 * BF16 <-> F32 with round-to-nearest-even. All exact: every result is representable in float. */
#ifndef INF_QUANT_H
#define INF_QUANT_H

#include <stdint.h>

float inf_bf16_to_f32(uint16_t b);
uint16_t inf_f32_to_bf16(float f); /* RNE; NaN stays NaN (quiet) */
float inf_bf16_round(float f);     /* f rounded to the nearest bf16 value, as float */
float inf_e4m3_to_f32(uint8_t b);
float inf_e8m0_to_f32(uint8_t b);
float inf_e2m1_to_f32(uint8_t nibble); /* low 4 bits used */

/* Tables for hot loops: 256 decoded E4M3 values, 256 E8M0 values, 16 E2M1 values. */
extern const float inf_e4m3_table[256];
extern const float inf_e8m0_table[256];
extern const float inf_e2m1_table[16];

/* Encoders used by synthetic weights and tests: nearest E4M3 (RNE, saturating to ±448) and E2M1
 * (RNE, saturating to ±6) codes. */
uint8_t inf_f32_to_e4m3(float f);
uint8_t inf_f32_to_e2m1(float f);

#endif
