#include "kv_state.h"

#include <stdint.h>
#include <stdlib.h>

/* KV streams of a state: per layer, its compressed entries and (CSA) its indexer keys. */
int store_kv_state_n_streams(const struct inf_state *st)
{
    return 2 * st->n_layers;
}

void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv)
{
    for (int i = 0; i < st->n_layers; i++) {
        const struct inf_layer_state *l = &st->layers[i];
        sv[2 * i].data = l->cache;
        sv[2 * i].len = (uint64_t)l->n_cache * (uint64_t)st->cfg.head_dim * sizeof(float);
        sv[2 * i + 1].data = l->icache;
        sv[2 * i + 1].len = l->ratio == 4 ? (uint64_t)l->n_cache * (uint64_t)st->cfg.index_head_dim * sizeof(float) : 0;
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
        uint64_t row = (uint64_t)st->cfg.head_dim * sizeof(float);
        uint64_t len = c->stream_len[2 * i], ilen = c->stream_len[2 * i + 1];
        if (len % row)
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint stream %d is not a whole number of entries", 2 * i);
        long long n = (long long)(len / row);
        if ((!l->ratio && n) ||
            (l->ratio == 4 && ilen != (uint64_t)n * (uint64_t)st->cfg.index_head_dim * sizeof(float)) ||
            (l->ratio != 4 && ilen))
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint streams of layer %d do not fit the model", i);
        l->n_cache = 0;
        int rc = n ? inf_state_reserve(st, i, n, e) : 0;
        if (!rc && len)
            rc = store_kv_read_stream(kv, c, 2 * i, l->cache, e);
        if (!rc && ilen)
            rc = store_kv_read_stream(kv, c, 2 * i + 1, l->icache, e);
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
