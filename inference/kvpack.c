#include "kvpack.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

/* The layout and why it is exact: kvpack.h. */

static float pow2_for(float amax, float range)
{
    /* 2^ceil(log2(amax / range)), as the QDQ computed it; exact for powers of two */
    int ex;
    float m = frexpf(amax / range, &ex); /* amax/range = m * 2^ex, m in [0.5, 1) */
    return ldexpf(1.0f, m == 0.5f ? ex - 1 : ex);
}

static int same_bits(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* One block of n values -> n codes (fp8: bytes; fp4: nibbles, low first) and its e8m0 exponent. */
static int pack_block(const float *v, int n, int fp4, uint8_t *codes, uint8_t *e8)
{
    float amax = 0.f;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(v[i]));
    float range = fp4 ? 6.0f : 448.0f, lo = fp4 ? 6.0f * 0x1p-126f : 1e-4f;
    float s0 = pow2_for(fmaxf(amax, lo), range);
    for (int t = 0; t < 2; t++) {
        float s = t ? s0 * 0.5f : s0;
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            float q = v[i] / s;
            uint8_t c = fp4 ? inf_f32_to_e2m1(q) : inf_f32_to_e4m3(q);
            ok = same_bits((fp4 ? inf_e2m1_table[c & 15] : inf_e4m3_table[c]) * s, v[i]);
            if (fp4)
                codes[i / 2] = (uint8_t)(i & 1 ? (codes[i / 2] & 0x0f) | (c << 4) : (c & 0x0f));
            else
                codes[i] = c;
        }
        int ex;
        frexpf(s, &ex); /* s = 0.5 * 2^ex = 2^(ex-1) */
        /* fp8 scales within 2^+-120, where inf_kvunpack_entry's exponent arithmetic holds (the
         * QDQ's scales are >= 2^-22) */
        if (ok && ex - 1 + 127 >= (fp4 ? 0 : 7) && ex - 1 + 127 <= (fp4 ? 254 : 246)) {
            *e8 = (uint8_t)(ex - 1 + 127);
            return 0;
        }
    }
    return -1;
}

size_t inf_kvpack_entry_bytes(const struct inf_config *c)
{
    int nope = c->head_dim - c->qk_rope_head_dim;
    return (size_t)nope + (size_t)(nope / 64 + 7) / 8 * 8 + (size_t)c->qk_rope_head_dim * 2;
}

size_t inf_kvpack_ikey_bytes(const struct inf_config *c)
{
    return (size_t)c->index_head_dim / 2 + (size_t)c->index_head_dim / 32;
}

int inf_kvpack_entry(const struct inf_config *c, const float *v, uint8_t *out)
{
    int nope = c->head_dim - c->qk_rope_head_dim, nb = nope / 64;
    uint8_t *sc = out + nope, *rope = sc + (nb + 7) / 8 * 8;
    memset(sc, 0, (size_t)(nb + 7) / 8 * 8);
    for (int b = 0; b < nb; b++)
        if (pack_block(v + 64 * b, 64, 0, out + 64 * b, &sc[b]))
            return 64 * b;
    for (int i = 0; i < c->qk_rope_head_dim; i++) {
        uint32_t x;
        memcpy(&x, &v[nope + i], 4);
        if (x & 0xffffu)
            return nope + i;
        rope[2 * i] = (uint8_t)(x >> 16);
        rope[2 * i + 1] = (uint8_t)(x >> 24);
    }
    return -1;
}

void inf_kvunpack_entry(const struct inf_config *c, const uint8_t *in, float *v)
{
    int nope = c->head_dim - c->qk_rope_head_dim, nb = nope / 64;
    const uint8_t *sc = in + nope, *rope = sc + (nb + 7) / 8 * 8;
    for (int b = 0; b < nb; b++) {
        float s = inf_e8m0_table[sc[b]];
        const uint8_t *q = in + 64 * b;
        float *o = v + 64 * b;
        /* e4m3 by bits rather than a table, with the block's power of two added to the exponent, so
         * that the loop vectorises (a restore unpacks ~10^9 values): a normal code rebiases its
         * exponent (+120 + log2 s); a subnormal one is m x 2^-9 x s (0 for m = 0) */
        uint32_t add = (uint32_t)(120 + (int)sc[b] - 127) << 23;
        union {
            uint32_t u[64];
            float f[64];
        } nv;
        float sub = 0x1p-9f * s, sv[64];
        for (int i = 0; i < 64; i++) {
            uint32_t em = q[i] & 0x7fu;
            nv.u[i] = ((uint32_t)(q[i] & 0x80u) << 24) | ((em << 20) + add);
            sv[i] = (float)(int)(em & 7u) * ((q[i] & 0x80u) ? -sub : sub);
        }
        for (int i = 0; i < 64; i++)
            o[i] = (q[i] & 0x78u) ? nv.f[i] : sv[i];
    }
    for (int i = 0; i < c->qk_rope_head_dim; i++) {
        uint32_t x = (uint32_t)rope[2 * i] << 16 | (uint32_t)rope[2 * i + 1] << 24;
        memcpy(&v[nope + i], &x, 4);
    }
}

int inf_kvpack_ikey(const struct inf_config *c, const float *v, uint8_t *out)
{
    int di = c->index_head_dim;
    for (int b = 0; b < di / 32; b++)
        if (pack_block(v + 32 * b, 32, 1, out + 16 * b, &out[di / 2 + b]))
            return 32 * b;
    return -1;
}

void inf_kvunpack_ikey(const struct inf_config *c, const uint8_t *in, float *v)
{
    int di = c->index_head_dim;
    for (int b = 0; b < di / 32; b++) {
        float s = inf_e8m0_table[in[di / 2 + b]];
        for (int i = 0; i < 32; i++)
            v[32 * b + i] = inf_e2m1_table[(in[16 * b + i / 2] >> (i & 1 ? 4 : 0)) & 15] * s;
    }
}
