/* Plain C reference for kernels/gemm.h; see ref.h for the numerics. */
#include "ref.h"

#include <math.h>
#include <string.h>

float cuda_ref_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t cuda_ref_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

double cuda_ref_e4m3(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, mant = b & 7;
    double v;
    if (e == 15 && mant == 7)
        return NAN;
    if (e == 0)
        v = ldexp(mant, -9); /* subnormal: mant * 2^-6 / 8 */
    else
        v = ldexp(8 + mant, e - 10); /* (1 + mant/8) * 2^(e-7) */
    return s ? -v : v;
}

double cuda_ref_e2m1(uint8_t nibble)
{
    static const double mag[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
    double v = mag[nibble & 7];
    return (nibble & 8) ? -v : v;
}

float cuda_ref_e8m0(uint8_t b)
{
    if (b == 255)
        return NAN;
    return ldexpf(1.0f, (int)b - 127); /* b = 0 gives the subnormal 2^-127 */
}

uint8_t cuda_ref_e4m3_encode(float x)
{
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (a < 0.015625f) { /* subnormal range: multiples of 2^-9, ties to even */
        float r = rintf(a * 512.0f);
        return (uint8_t)(sign | (uint8_t)r); /* r = 8 is the smallest normal, 0x08 */
    }
    int e;
    float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
    /* 4 significant bits: mantissa units of 2^(e-4); rintf rounds ties to even */
    float units = rintf(fr * 16.0f);
    if (units >= 16.0f) {
        units = 8.0f;
        e++;
    }
    int exp_field = e - 1 + 7;
    if (exp_field > 15 || (exp_field == 15 && units - 8.0f > 6.0f))
        return (uint8_t)(sign | 0x7e); /* saturate to 448; inputs are clamped, so unreachable */
    return (uint8_t)(sign | (exp_field << 3) | ((int)units - 8));
}

void cuda_ref_act_quant(const uint16_t *x, int m, int k, uint8_t *q, float *sa)
{
    int kb_n = k / 128;
    for (int i = 0; i < m; i++) {
        for (int b = 0; b < kb_n; b++) {
            const uint16_t *xb = x + (size_t)i * k + (size_t)b * 128;
            float amax = 0.0f;
            for (int j = 0; j < 128; j++)
                amax = fmaxf(amax, fabsf(cuda_ref_bf16_to_f32(xb[j])));
            if (amax < 1e-4f)
                amax = 1e-4f;
            /* 2^ceil(log2(amax * fp32(1/448))) from the exponent bits */
            float r = amax * (1.0f / 448.0f);
            uint32_t u;
            memcpy(&u, &r, 4);
            int code = (int)((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
            float s = ldexpf(1.0f, code - 127);
            sa[(size_t)i * kb_n + b] = s;
            for (int j = 0; j < 128; j++) {
                float v = cuda_ref_bf16_to_f32(xb[j]) / s;
                v = v > 448.0f ? 448.0f : v < -448.0f ? -448.0f : v;
                q[(size_t)i * k + (size_t)b * 128 + j] = cuda_ref_e4m3_encode(v);
            }
        }
    }
}

/* Decoded e4m3 values, so that the product loops below cost a table load per operand. */
static double e4m3_tab[256];
static void tables_init(void)
{
    if (e4m3_tab[0x38] == 1.0)
        return;
    for (int i = 0; i < 256; i++)
        e4m3_tab[i] = cuda_ref_e4m3((uint8_t)i);
}

void cuda_ref_fp8_gemm(const uint8_t *q, const float *sa, int m, const uint8_t *w, const uint8_t *ws, int n, int k,
                       float *y, double *mag)
{
    int kb_n = k / 128;
    tables_init();
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            const uint8_t *wr = w + (size_t)j * k, *xr = q + (size_t)i * k;
            float acc = 0.0f;
            double am = 0.0;
            for (int b = 0; b < kb_n; b++) {
                double part = 0.0, pabs = 0.0;
                for (int t = b * 128; t < b * 128 + 128; t++) {
                    double p = e4m3_tab[wr[t]] * e4m3_tab[xr[t]];
                    part += p;
                    pabs += fabs(p);
                }
                float as = sa[(size_t)i * kb_n + b], wsc = cuda_ref_e8m0(ws[(size_t)(j / 128) * kb_n + b]);
                acc += ((float)part * as) * wsc;
                am += pabs * as * wsc;
            }
            y[(size_t)i * n + j] = acc;
            mag[(size_t)i * n + j] = am;
        }
    }
}

void cuda_ref_fp4_gemv_grouped(const uint8_t *q, const float *sa, int x_group, int npairs, const int *ids,
                               const uint8_t *const *wtab, const uint8_t *const *stab, int n, int k, float *y,
                               double *mag)
{
    int kb_n = k / 128, k32 = k / 32;
    tables_init();
    for (int p = 0; p < npairs; p++) {
        const uint8_t *w = wtab[ids[p]], *sc = stab[ids[p]];
        const uint8_t *xr = q + (size_t)(p / x_group) * k;
        const float *xs = sa + (size_t)(p / x_group) * kb_n;
        for (int j = 0; j < n; j++) {
            const uint8_t *wr = w + (size_t)j * (k / 2);
            float acc = 0.0f;
            double am = 0.0;
            for (int b = 0; b < k32; b++) {
                double part = 0.0, pabs = 0.0;
                for (int t = b * 32; t < b * 32 + 32; t++) {
                    uint8_t byte = wr[t / 2];
                    double p2 = cuda_ref_e2m1((t & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 15)) *
                                e4m3_tab[xr[t]];
                    part += p2;
                    pabs += fabs(p2);
                }
                float as = xs[b / 4], wsc = cuda_ref_e8m0(sc[(size_t)j * k32 + b]);
                acc += ((float)part * as) * wsc;
                am += pabs * as * wsc;
            }
            y[(size_t)p * n + j] = acc;
            mag[(size_t)p * n + j] = am;
        }
    }
}
