#include "kv_state.h"

#include <stdint.h>
#include <stdlib.h>

/* Bytes [off, off + n) of a stream of bf16 patterns over floats src (store_kv_stream.fill): the high
 * half of each float, which must be all there is (the low half zero). */
static int fill_bf16(const float *src, uint64_t off, size_t n, void *dst, const char *what, struct ctx_err *e)
{
    if ((off | n) & 1)
        return ctx_err_set(e, CTX_EINVAL, "%s: bf16 stream bytes [%llu, +%zu) are not whole values", what,
                           (unsigned long long)off, n);
    const uint32_t *s = (const uint32_t *)(const void *)src + off / 2;
    uint16_t *d = dst;
    for (size_t i = 0; i < n / 2; i++) {
        if (s[i] & 0xffffu)
            return ctx_err_set(e, CTX_EFORMAT, "%s value %llu (bits 0x%08x) is not bf16-exact: the state cannot be "
                               "stored losslessly", what, (unsigned long long)(off / 2 + i), (unsigned)s[i]);
        d[i] = (uint16_t)(s[i] >> 16);
    }
    return 0;
}
static int fill_cache(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e)
{
    return fill_bf16(((const struct inf_layer_state *)ud)->cache, off, n, dst, "kv cache: compressed entry", e);
}
static int fill_icache(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e)
{
    return fill_bf16(((const struct inf_layer_state *)ud)->icache, off, n, dst, "kv cache: indexer key", e);
}

/* bf16 patterns read into the first half of x [n] back to floats, in place (from the end, so that no
 * pattern is overwritten before it is read). */
static void widen_bf16(float *x, uint64_t n)
{
    const uint16_t *h = (const uint16_t *)(void *)x;
    uint32_t *w = (uint32_t *)(void *)x;
    for (uint64_t i = n; i-- > 0;)
        w[i] = (uint32_t)h[i] << 16;
}

/* KV streams of a state: per layer, its compressed entries and (CSA) its indexer keys. */
int store_kv_state_n_streams(const struct inf_state *st)
{
    return 2 * st->n_layers;
}

void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv)
{
    for (int i = 0; i < st->n_layers; i++) {
        const struct inf_layer_state *l = &st->layers[i];
        /* const dropped only for the callback's opaque pointer: fill reads, never writes */
        void *ud = (void *)(uintptr_t)l;
        sv[2 * i] = (struct store_kv_stream){.len = (uint64_t)l->n_cache * (uint64_t)st->cfg.head_dim * 2,
                                             .fill = fill_cache, .ud = ud};
        sv[2 * i + 1] = (struct store_kv_stream){
            .len = l->ratio == 4 ? (uint64_t)l->n_cache * (uint64_t)st->cfg.index_head_dim * 2 : 0,
            .fill = fill_icache, .ud = ud};
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
        uint64_t row = (uint64_t)st->cfg.head_dim * 2; /* bf16 */
        uint64_t len = c->stream_len[2 * i], ilen = c->stream_len[2 * i + 1];
        if (len % row)
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint stream %d is not a whole number of entries", 2 * i);
        long long n = (long long)(len / row);
        if ((!l->ratio && n) ||
            (l->ratio == 4 && ilen != (uint64_t)n * (uint64_t)st->cfg.index_head_dim * 2) ||
            (l->ratio != 4 && ilen))
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint streams of layer %d do not fit the model", i);
        l->n_cache = 0;
        int rc = n ? inf_state_reserve(st, i, n, e) : 0;
        if (!rc && len && !(rc = store_kv_read_stream(kv, c, 2 * i, l->cache, e)))
            widen_bf16(l->cache, (uint64_t)n * (uint64_t)st->cfg.head_dim);
        if (!rc && ilen && !(rc = store_kv_read_stream(kv, c, 2 * i + 1, l->icache, e)))
            widen_bf16(l->icache, (uint64_t)n * (uint64_t)st->cfg.index_head_dim);
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
