#include "kv_state.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* ---- packed entries (spec §5.3) ------------------------------------------------------------
 * A compressed entry's nope dims went through FP8 QDQ in 64-wide blocks with power-of-two scales and
 * its rope dims are bf16; an indexer key went through FP4 QDQ in 32-wide blocks. So each block is
 * (codes x one power of two), recovered here from the stored values: the QDQ rule's scale for the
 * block's largest magnitude, or half of it (when the largest code landed on half the range), checked
 * value by value (bits, so -0 too) — a value that no scale reproduces is refused, never rounded. */

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
        /* fp8 scales within 2^+-120, where store_kv_unpack_entry's exponent arithmetic holds (the
         * QDQ's scales are >= 2^-22) */
        if (ok && ex - 1 + 127 >= (fp4 ? 0 : 7) && ex - 1 + 127 <= (fp4 ? 254 : 246)) {
            *e8 = (uint8_t)(ex - 1 + 127);
            return 0;
        }
    }
    return -1;
}

size_t store_kv_entry_bytes(const struct inf_config *c)
{
    int nope = c->head_dim - c->qk_rope_head_dim;
    return (size_t)nope + (size_t)(nope / 64 + 7) / 8 * 8 + (size_t)c->qk_rope_head_dim * 2;
}

size_t store_kv_ikey_bytes(const struct inf_config *c)
{
    return (size_t)c->index_head_dim / 2 + (size_t)c->index_head_dim / 32;
}

int store_kv_pack_entry(const struct inf_config *c, const float *v, uint8_t *out)
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

void store_kv_unpack_entry(const struct inf_config *c, const uint8_t *in, float *v)
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

int store_kv_pack_ikey(const struct inf_config *c, const float *v, uint8_t *out)
{
    int di = c->index_head_dim;
    for (int b = 0; b < di / 32; b++)
        if (pack_block(v + 32 * b, 32, 1, out + 16 * b, &out[di / 2 + b]))
            return 32 * b;
    return -1;
}

void store_kv_unpack_ikey(const struct inf_config *c, const uint8_t *in, float *v)
{
    int di = c->index_head_dim;
    for (int b = 0; b < di / 32; b++) {
        float s = inf_e8m0_table[in[di / 2 + b]];
        for (int i = 0; i < 32; i++)
            v[32 * b + i] = inf_e2m1_table[(in[16 * b + i / 2] >> (i & 1 ? 4 : 0)) & 15] * s;
    }
}

/* Bytes [off, off + n) of a packed stream (store_kv_stream.fill): the entries they cover packed,
 * the first and last possibly in part. */
static int fill_packed(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e)
{
    const struct store_kv_state_src *src = ud;
    const struct inf_config *c = &src->st->cfg;
    const struct inf_layer_state *l = &src->st->layers[src->layer];
    int ikey = src->ikey;
    size_t eb = ikey ? store_kv_ikey_bytes(c) : store_kv_entry_bytes(c);
    size_t width = (size_t)(ikey ? c->index_head_dim : c->head_dim);
    const float *base = ikey ? l->icache : l->cache;
    uint8_t tmp[4096];
    uint8_t *d = dst;
    for (uint64_t at = off; at < off + n;) {
        uint64_t ent = at / eb, in = at - ent * eb;
        const float *v = base + ent * width;
        int bad = ikey ? store_kv_pack_ikey(c, v, tmp) : store_kv_pack_entry(c, v, tmp);
        if (bad >= 0)
            return ctx_err_set(e, CTX_EFORMAT,
                               "kv cache: layer %d %s %llu, dims from %d, is not %s: the state cannot be stored "
                               "losslessly", src->layer, ikey ? "indexer key" : "compressed entry",
                               (unsigned long long)ent, bad,
                               ikey ? "FP4 blocks (spec 5.3)" : "FP8 blocks + bf16 rope dims (spec 5.3)");
        size_t take = eb - (size_t)in;
        if (take > off + n - at)
            take = (size_t)(off + n - at);
        memcpy(d + (at - off), tmp + in, take);
        at += take;
    }
    return 0;
}

/* Entries packed in the last bytes of x (count n, eb bytes each) back to floats of `width`, in place:
 * forward, each entry through a local copy, so that an entry's output never reaches a packed entry not
 * yet read (entry i's output ends at width*4*(i+1) <= where entry i+1's bytes start). */
static void unpack_in_place(const struct inf_config *c, float *x, uint64_t n, size_t eb, size_t width, int ikey)
{
    uint8_t *packed = (uint8_t *)(void *)x + n * (width * 4 - eb);
    uint8_t tmp[4096];
    for (uint64_t i = 0; i < n; i++) {
        memcpy(tmp, packed + i * eb, eb);
        if (ikey)
            store_kv_unpack_ikey(c, tmp, x + i * width);
        else
            store_kv_unpack_entry(c, tmp, x + i * width);
    }
}

/* KV streams of a state: per layer, its compressed entries and (CSA) its indexer keys. */
int store_kv_state_n_streams(const struct inf_state *st)
{
    return 2 * st->n_layers;
}

void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv, struct store_kv_state_src *src)
{
    for (int i = 0; i < st->n_layers; i++) {
        const struct inf_layer_state *l = &st->layers[i];
        src[2 * i] = (struct store_kv_state_src){st, i, 0};
        src[2 * i + 1] = (struct store_kv_state_src){st, i, 1};
        sv[2 * i] = (struct store_kv_stream){.len = (uint64_t)l->n_cache * store_kv_entry_bytes(&st->cfg),
                                             .fill = fill_packed, .ud = &src[2 * i]};
        sv[2 * i + 1] = (struct store_kv_stream){
            .len = l->ratio == 4 ? (uint64_t)l->n_cache * store_kv_ikey_bytes(&st->cfg) : 0,
            .fill = fill_packed, .ud = &src[2 * i + 1]};
    }
}

/* Bring st to the checkpoint c: its caches from the streams, then its boundary. */
int store_kv_state_restore(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, struct ctx_err *e)
{
    if (c->n_streams != store_kv_state_n_streams(st))
        return ctx_err_set(e, CTX_EFORMAT, "checkpoint has %d streams, the model needs %d", c->n_streams,
                           store_kv_state_n_streams(st));
    for (int i = 0; i < st->n_layers; i++) {
        struct inf_layer_state *l = &st->layers[i];
        uint64_t row = store_kv_entry_bytes(&st->cfg), irow = store_kv_ikey_bytes(&st->cfg);
        uint64_t len = c->stream_len[2 * i], ilen = c->stream_len[2 * i + 1];
        if (len % row)
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint stream %d is not a whole number of entries", 2 * i);
        long long n = (long long)(len / row);
        if ((!l->ratio && n) ||
            (l->ratio == 4 && ilen != (uint64_t)n * irow) ||
            (l->ratio != 4 && ilen))
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint streams of layer %d do not fit the model", i);
        l->n_cache = 0;
        int rc = n ? inf_state_reserve(st, i, n, e) : 0;
        /* each stream read into the end of its float buffer, then unpacked forward in place */
        size_t hd = (size_t)st->cfg.head_dim, di = (size_t)st->cfg.index_head_dim;
        if (!rc && len &&
            !(rc = store_kv_read_stream(kv, c, 2 * i, (uint8_t *)l->cache + (uint64_t)n * (hd * 4 - row), e)))
            unpack_in_place(&st->cfg, l->cache, (uint64_t)n, row, hd, 0);
        if (!rc && ilen &&
            !(rc = store_kv_read_stream(kv, c, 2 * i + 1, (uint8_t *)l->icache + (uint64_t)n * (di * 4 - irow), e)))
            unpack_in_place(&st->cfg, l->icache, (uint64_t)n, irow, di, 1);
        if (rc)
            return rc;
        l->n_cache = n;
    }
    uint8_t *b = malloc(c->boundary_len + 1);
    if (!b)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = store_kv_read_boundary(kv, c, b, e);
    if (!rc)
        rc = inf_state_restore_boundary(st, b, c->boundary_len, e);
    free(b);
    if (!rc && (uint64_t)st->pos != c->pos)
        rc = ctx_err_set(e, CTX_EFORMAT, "checkpoint at %llu restored a state at %lld", (unsigned long long)c->pos,
                         st->pos);
    return rc;
}
