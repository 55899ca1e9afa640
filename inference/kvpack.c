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

/* The block scale the QDQ used, from the block's largest magnitude (pack_block tries it, then
 * half). */
static float block_scale(const float *v, int n, int fp4)
{
    float amax = 0.f;
    for (int i = 0; i < n; i++) { /* fmaxf's answer (NaNs skipped), without its libm call */
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    float range = fp4 ? 6.0f : 448.0f, lo = fp4 ? 6.0f * 0x1p-126f : 1e-4f;
    return pow2_for(fmaxf(amax, lo), range);
}

/* The e8m0 byte of the scale s (a power of two), or -1 where inf_kvunpack_* would not give it back:
 * fp8 scales within 2^+-120, where inf_kvunpack_entry's exponent arithmetic holds (the QDQ's scales
 * are >= 2^-22). */
static int scale_byte(float s, int fp4)
{
    int ex;
    frexpf(s, &ex); /* s = 0.5 * 2^ex = 2^(ex-1) */
    int b = ex - 1 + 127;
    return b >= (fp4 ? 0 : 7) && b <= (fp4 ? 254 : 246) ? b : -1;
}

/* The plain form: one block of n values -> n codes (fp8: bytes; fp4: nibbles, low first) and its
 * e8m0 exponent, each value rounded to a code by quant.c and checked by multiplying back. */
static int pack_block_ref(const float *v, int n, int fp4, uint8_t *codes, uint8_t *e8)
{
    float s0 = block_scale(v, n, fp4);
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
        int b = scale_byte(s, fp4);
        if (ok && b >= 0) {
            *e8 = (uint8_t)b;
            return 0;
        }
    }
    return -1;
}

/* The code of q read off its bits, for a q that is a code exactly (any other q: some code, which
 * the caller's check by multiplying back refuses). e4m3: 2^e (1 + m/8) for e in -6..8 is ((e + 7)
 * << 3) | m, m/8 2^-6 below is m; e2m1: 0.5 is 1, 2^e (1 + m/2) for e in 0..2 is 2 + 2e + m. */
static inline uint8_t code_of(float q, int fp4)
{
    uint32_t b;
    memcpy(&b, &q, 4);
    uint32_t a = b & 0x7fffffffu, sign = b >> 31;
    int e = (int)(a >> 23) - 127;
    uint8_t c;
    if (fp4) {
        c = a == 0             ? 0
            : e == -1          ? 1
            : e >= 0 && e <= 2 ? (uint8_t)(2 + 2 * e + ((a >> 22) & 1))
                               : 0;
        return (uint8_t)(c | sign << 3);
    }
    if (a == 0)
        c = 0;
    else if (e >= -6 && e <= 8)
        c = (uint8_t)(((e + 7) << 3) | ((a >> 20) & 7));
    else if (e >= -9 && e <= -7)
        c = (uint8_t)(((a >> (14 - e)) & ((1u << (9 + e)) - 1)) |
                      (1u << (9 + e))); /* m = 2^(9+e) (1 + frac) */
    else
        c = 0;
    return (uint8_t)(c | sign << 7);
}

/* pack_block_ref's result, faster: the QDQ's blocks are codes at the first scale it tries, so each
 * value's code comes from its bits (q = v / s is exact: s is a power of two) and is checked by
 * multiplying back, as the plain form checks; a block where any value fails (the scale is the
 * half one, or nothing fits) goes to the plain form, which decides. Where the fast form accepts,
 * the plain form accepts the same codes (a value has one code: +-0 are different bits), so the
 * bytes are pack_block_ref's (tests/store/test_kv_state.c compares them). ~10x faster: a checkpoint
 * packs ~10^9 values (bench/store). */
static int pack_block(const float *v, int n, int fp4, uint8_t *codes, uint8_t *e8)
{
    float s = block_scale(v, n, fp4), inv = 1.0f / s; /* 1 / 2^k: exact, so v * inv == v / s */
    int b = scale_byte(s, fp4);
    uint32_t bad = b < 0;
    if (fp4) {
        for (int i = 0; i < n; i += 2) {
            uint8_t c0 = code_of(v[i] * inv, 1), c1 = code_of(v[i + 1] * inv, 1);
            bad |= !same_bits(inf_e2m1_table[c0] * s, v[i]) |
                   !same_bits(inf_e2m1_table[c1] * s, v[i + 1]);
            codes[i / 2] = (uint8_t)(c0 | c1 << 4);
        }
    } else {
        for (int i = 0; i < n; i++) {
            uint8_t c = code_of(v[i] * inv, 0);
            bad |= !same_bits(inf_e4m3_table[c] * s, v[i]);
            codes[i] = c;
        }
    }
    if (bad)
        return pack_block_ref(v, n, fp4, codes, e8);
    *e8 = (uint8_t)b;
    return 0;
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

typedef int (*block_fn)(const float *v, int n, int fp4, uint8_t *codes, uint8_t *e8);

static int pack_entry(const struct inf_config *c, const float *v, uint8_t *out, block_fn pack)
{
    int nope = c->head_dim - c->qk_rope_head_dim, nb = nope / 64;
    uint8_t *sc = out + nope, *rope = sc + (nb + 7) / 8 * 8;
    memset(sc, 0, (size_t)(nb + 7) / 8 * 8);
    for (int b = 0; b < nb; b++)
        if (pack(v + 64 * b, 64, 0, out + 64 * b, &sc[b]))
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

int inf_kvpack_entry(const struct inf_config *c, const float *v, uint8_t *out)
{
    return pack_entry(c, v, out, pack_block);
}

int inf_kvpack_entry_ref(const struct inf_config *c, const float *v, uint8_t *out)
{
    return pack_entry(c, v, out, pack_block_ref);
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

static int pack_ikey(const struct inf_config *c, const float *v, uint8_t *out, block_fn pack)
{
    int di = c->index_head_dim;
    for (int b = 0; b < di / 32; b++)
        if (pack(v + 32 * b, 32, 1, out + 16 * b, &out[di / 2 + b]))
            return 32 * b;
    return -1;
}

int inf_kvpack_ikey(const struct inf_config *c, const float *v, uint8_t *out)
{
    return pack_ikey(c, v, out, pack_block);
}

int inf_kvpack_ikey_ref(const struct inf_config *c, const float *v, uint8_t *out)
{
    return pack_ikey(c, v, out, pack_block_ref);
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
