/* store/kv.c: the resident KV cache on disk — keys, checkpoints, forks, corruption, eviction, and
 * kill -9 during writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv.h"

#define NS 3

struct env {
    char dir[64];
    struct store_kv *kv;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/ctx-kv-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    struct ctx_err err = {0};
    if (store_kv_open(e->dir, &e->kv, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    store_kv_close(e->kv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    int rc = system(cmd);
    free(e);
    return rc;
}

/* Deterministic content: byte i of stream k of "run" r. */
static uint8_t byte_at(int r, int k, uint64_t i)
{
    uint64_t x = (uint64_t)r * 0x9E3779B97F4A7C15ull + (uint64_t)k * 0xBF58476D1CE4E5B9ull + i * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (uint8_t)(x * 0xD6E8FEB86659FD93ull >> 56);
}

static uint8_t *make(int r, int k, uint64_t len)
{
    uint8_t *p = malloc(len + 1);
    for (uint64_t i = 0; i < len; i++)
        p[i] = byte_at(r, k, i);
    return p;
}

/* Stream k at position pos holds pos/128 * (k+1) * 100 bytes; boundary holds 64 + pos/128 bytes. */
static uint64_t slen(int k, uint64_t pos)
{
    return pos / 128 * (uint64_t)(k + 1) * 100;
}

/* store_kv_stream.fill over run r's bytes (ud: a struct gen): byte_at, computed on demand. */
struct gen {
    int r, k;
    uint64_t fail_at; /* 0: never; else the producer fails at a chunk holding this byte */
};
static int gen_fill(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e)
{
    const struct gen *g = ud;
    if (g->fail_at && off <= g->fail_at && g->fail_at < off + n)
        return ctx_err_set(e, CTX_EFORMAT, "generator refuses byte %llu", (unsigned long long)g->fail_at);
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)dst)[i] = byte_at(g->r, g->k, off + i);
    return 0;
}

/* Stream 1 is produced through fill, the others given as bytes: both paths in every test. */
static void put(struct store_kv *kv, int64_t lin, int r, uint64_t pos, const struct store_kv_hash *h)
{
    uint8_t *s[NS];
    struct store_kv_stream st[NS] = {0};
    struct gen g = {r, 1, 0};
    for (int k = 0; k < NS; k++) {
        s[k] = make(r, k, slen(k, pos));
        st[k].data = s[k];
        st[k].len = slen(k, pos);
    }
    st[1].data = NULL;
    st[1].fill = gen_fill;
    st[1].ud = &g;
    uint8_t *b = make(r + 1000, (int)pos, 64 + pos / 128);
    struct ctx_err err = {0};
    int rc = store_kv_put(kv, lin, pos, h, b, 64 + pos / 128, st, NS, &err);
    if (rc)
        fail_msg("put: %s", err.msg);
    for (int k = 0; k < NS; k++)
        free(s[k]);
    free(b);
}

/* Check a checkpoint's data: the first `split` bytes of each stream from run r0, the rest from r1. */
static int verify(struct store_kv *kv, const struct store_kv_ckpt *c, int r0, int r1, uint64_t split_pos,
                  int rb, struct ctx_err *err)
{
    uint8_t *buf = malloc(c->boundary_len + 1);
    int rc = store_kv_read_boundary(kv, c, buf, err);
    if (rc) {
        free(buf);
        return rc;
    }
    uint8_t *want = make(rb + 1000, (int)c->pos, c->boundary_len);
    assert_memory_equal(buf, want, c->boundary_len);
    free(want);
    free(buf);
    for (int k = 0; k < c->n_streams; k++) {
        assert_int_equal(c->stream_len[k], slen(k, c->pos));
        buf = malloc(c->stream_len[k] + 1);
        rc = store_kv_read_stream(kv, c, k, buf, err);
        if (rc) {
            free(buf);
            return rc;
        }
        uint64_t split = slen(k, split_pos);
        for (uint64_t i = 0; i < c->stream_len[k]; i++)
            if (buf[i] != byte_at(i < split ? r0 : r1, k, i))
                fail_msg("stream %d byte %llu differs", k, (unsigned long long)i);
        free(buf);
    }
    return 0;
}

static void tokens_of(int seed, int32_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        t[i] = (int32_t)((seed * 7919 + (int)i * 31) % 128000);
}

static void chain_is_a_prefix_hash(void **state)
{
    (void)state;
    int32_t t[1000];
    tokens_of(1, t, 1000);
    struct store_kv_hash a[7], b[3], c[7];
    store_kv_chain("m", t, 1000, a);      /* 7 complete blocks */
    store_kv_chain("m", t, 400, b);       /* 3 */
    assert_memory_equal(a, b, sizeof b);
    store_kv_chain("other model", t, 1000, c);
    for (int i = 0; i < 7; i++)
        assert_memory_not_equal(a[i].b, c[i].b, 16);
    t[300] ^= 1; /* a change in block 2 changes blocks 2.. only */
    store_kv_chain("m", t, 1000, c);
    assert_memory_equal(a, c, 2 * sizeof a[0]);
    for (int i = 2; i < 7; i++)
        assert_memory_not_equal(a[i].b, c[i].b, 16);
}

static void checkpoints_round_trip_and_lookup(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int32_t t[1024];
    tokens_of(2, t, 1024);
    struct store_kv_hash h[8];
    store_kv_chain("model-a", t, 1024, h);
    int64_t lin;
    assert_int_equal(store_kv_lineage_new(e->kv, "model-a", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 128, &h[0]);
    put(e->kv, lin, 1, 384, &h[2]);
    put(e->kv, lin, 1, 512, &h[3]);

    struct store_kv_ckpt c;
    int found;
    /* a longer prompt finds the last checkpoint */
    assert_int_equal(store_kv_lookup(e->kv, "model-a", h, 8, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.pos, 512);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), 0);
    store_kv_ckpt_clear(&c);
    /* a prompt that diverges in block 3 finds the checkpoint at 384 */
    int32_t u[1024];
    memcpy(u, t, sizeof u);
    u[400] = 5;
    struct store_kv_hash hu[8];
    store_kv_chain("model-a", u, 1024, hu);
    assert_int_equal(store_kv_lookup(e->kv, "model-a", hu, 8, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.pos, 384);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), 0);
    store_kv_ckpt_clear(&c);
    /* another model or a prompt shorter than the first checkpoint misses */
    assert_int_equal(store_kv_lookup(e->kv, "model-b", h, 8, &c, &found, &err), 0);
    assert_false(found);
    assert_int_equal(store_kv_lookup(e->kv, "model-a", h, 0, &c, &found, &err), 0);
    assert_false(found);

    struct store_kv_stats st;
    assert_int_equal(store_kv_stats(e->kv, &st, &err), 0);
    assert_int_equal(st.lineages, 1);
    assert_int_equal(st.checkpoints, 3);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    uint64_t want = 0;
    for (int k = 0; k < NS; k++)
        want += slen(k, 512);
    want += (64 + 1) + (64 + 3) + (64 + 4);
    assert_int_equal(st.bytes, want);

    /* the data survives closing and reopening */
    store_kv_close(e->kv);
    assert_int_equal(store_kv_open(e->dir, &e->kv, &err), 0);
    assert_int_equal(store_kv_get(e->kv, lin, 128, &c, &err), 0);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), 0);
    store_kv_ckpt_clear(&c);
    assert_int_equal(store_kv_get(e->kv, lin, 256, &c, &err), CTX_ENOTFOUND);
}

static void exact_prompt_checkpoints(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int32_t t[400];
    tokens_of(9, t, 400);
    struct store_kv_hash chain[3], h256, h300;
    store_kv_chain("m", t, 400, chain);
    store_kv_prefix_hash("m", t, 256, &h256);
    assert_memory_equal(h256.b, chain[1].b, 16); /* aligned: the chain's entry */
    store_kv_prefix_hash("m", t, 300, &h300);
    int64_t lin;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 256, &chain[1]);
    /* the end of a 300-token prompt: stream lengths as at 384 (any growth is fine) */
    put(e->kv, lin, 1, 384, &h300); /* pos 384 recorded under the hash of 300 tokens: not found as 300 */
    struct store_kv_ckpt c;
    int found;
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", t, 300, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.pos, 256); /* the hash must come with its own position */
    store_kv_ckpt_clear(&c);
    int64_t lin2;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin2, &err), 0);
    put(e->kv, lin2, 2, 128, &chain[0]);
    struct store_kv_hash h200;
    store_kv_prefix_hash("m", t, 200, &h200);
    uint8_t *s0 = make(2, 0, slen(0, 256)), *s1 = make(2, 1, slen(1, 256)), *s2 = make(2, 2, slen(2, 256));
    struct store_kv_stream st[NS] = {{s0, slen(0, 256)}, {s1, slen(1, 256)}, {s2, slen(2, 256)}};
    uint8_t b[80] = {0};
    assert_int_equal(store_kv_put(e->kv, lin2, 200, &h200, b, sizeof b, st, NS, &err), 0);
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", t, 200, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.pos, 200);
    assert_int_equal(c.lineage, lin2);
    store_kv_ckpt_clear(&c);
    /* a longer prompt does not match the exact 200 checkpoint; it finds a block */
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", t, 399, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.pos, 256);
    store_kv_ckpt_clear(&c);
    free(s0);
    free(s1);
    free(s2);
}

static void bad_puts_are_refused(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    struct store_kv_hash h = {{0}};
    int64_t lin;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 256, &h);
    uint8_t data[1000] = {0};
    struct store_kv_stream st[NS] = {{data, 10}, {data, 10}, {data, 10}};
    assert_int_equal(store_kv_put(e->kv, lin, 384, &h, data, 4, st, NS, &err), CTX_EINVAL);
    assert_non_null(strstr(err.msg, "shrank"));
    assert_int_equal(store_kv_put(e->kv, lin, 200, &h, data, 4, st, NS, &err), CTX_EINVAL);
    assert_non_null(strstr(err.msg, "not past"));
    assert_int_equal(store_kv_put(e->kv, lin, 0, &h, data, 4, st, NS, &err), CTX_EINVAL);
    assert_non_null(strstr(err.msg, "position 0"));
    assert_int_equal(store_kv_put(e->kv, lin, 128, &h, data, 4, st, NS, &err), CTX_EINVAL);
    assert_non_null(strstr(err.msg, "not past"));
    assert_int_equal(store_kv_put(e->kv, lin, 512, &h, data, 4, st, 2, &err), CTX_EINVAL);
    assert_int_equal(store_kv_put(e->kv, 999, 512, &h, data, 4, st, NS, &err), CTX_ENOTFOUND);
    assert_int_equal(store_kv_lineage_new(e->kv, "m", STORE_KV_MAX_STREAMS + 1, &lin, &err), CTX_EINVAL);
}

/* A produced stream of several fill chunks (4 MiB each) reads back byte for byte; a producer that
 * fails fails the put with its error and records nothing, and the lineage goes on afterwards. */
static void produced_streams(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    struct store_kv_hash h = {{1}};
    int64_t lin;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    uint64_t big = ((uint64_t)9 << 20) + 6;
    struct gen g[NS] = {{7, 0, 0}, {7, 1, 0}, {7, 2, 0}};
    struct store_kv_stream st[NS];
    for (int k = 0; k < NS; k++)
        st[k] = (struct store_kv_stream){.len = k == 1 ? big : 100, .fill = gen_fill, .ud = &g[k]};
    g[1].fail_at = big - 3; /* in the third chunk */
    uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(store_kv_put(e->kv, lin, 128, &h, b, sizeof b, st, NS, &err), CTX_EFORMAT);
    assert_non_null(strstr(err.msg, "generator refuses byte"));
    struct store_kv_ckpt c;
    int found = 1;
    assert_int_equal(store_kv_lookup(e->kv, "m", &h, 1, &c, &found, &err), 0);
    assert_false(found);
    g[1].fail_at = 0;
    assert_int_equal(store_kv_put(e->kv, lin, 128, &h, b, sizeof b, st, NS, &err), 0);
    assert_int_equal(store_kv_lookup(e->kv, "m", &h, 1, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.stream_len[1], big);
    uint8_t *buf = malloc(big);
    assert_int_equal(store_kv_read_stream(e->kv, &c, 1, buf, &err), 0);
    for (uint64_t i = 0; i < big; i++)
        if (buf[i] != byte_at(7, 1, i))
            fail_msg("produced stream byte %llu differs", (unsigned long long)i);
    assert_int_equal(store_kv_read_stream(e->kv, &c, 2, buf, &err), 0);
    for (uint64_t i = 0; i < 100; i++)
        assert_int_equal(buf[i], byte_at(7, 2, i));
    free(buf);
    store_kv_ckpt_clear(&c);
}

static void forks_share_their_prefix(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int32_t t[512];
    tokens_of(3, t, 512);
    struct store_kv_hash h[4];
    store_kv_chain("m", t, 512, h);
    int64_t base;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &base, &err), 0);
    put(e->kv, base, 1, 128, &h[0]);
    put(e->kv, base, 1, 256, &h[1]);
    struct store_kv_ckpt c;
    assert_int_equal(store_kv_get(e->kv, base, 128, &c, &err), 0);
    int64_t fork;
    assert_int_equal(store_kv_fork(e->kv, &c, &fork, &err), 0);
    store_kv_ckpt_clear(&c);
    /* the fork continues with other content after 128 */
    int32_t u[512];
    memcpy(u, t, sizeof u);
    u[200] = 1;
    struct store_kv_hash hu[4];
    store_kv_chain("m", u, 512, hu);
    put(e->kv, fork, 2, 256, &hu[1]);
    put(e->kv, fork, 2, 384, &hu[2]);
    /* fork data: [0, len@128) from run 1, the rest from run 2 — read through the parent */
    int found;
    assert_int_equal(store_kv_lookup(e->kv, "m", hu, 4, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(c.lineage, fork);
    assert_int_equal(c.pos, 384);
    assert_int_equal(verify(e->kv, &c, 1, 2, 128, 2, &err), 0);
    store_kv_ckpt_clear(&c);
    /* the parent is unchanged */
    assert_int_equal(store_kv_lookup(e->kv, "m", h, 4, &c, &found, &err), 0);
    assert_int_equal(c.lineage, base);
    assert_int_equal(c.pos, 256);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), 0);
    store_kv_ckpt_clear(&c);
    /* the fork stored only its own bytes */
    char p[256];
    snprintf(p, sizeof p, "%s/L%lld/s2.bin", e->dir, (long long)fork);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, (long long)(slen(2, 384) - slen(2, 128)));
    /* dropping the parent drops the fork */
    assert_int_equal(store_kv_drop(e->kv, base, &err), 0);
    assert_int_equal(store_kv_lookup(e->kv, "m", hu, 4, &c, &found, &err), 0);
    assert_false(found);
    assert_int_equal(access(p, F_OK), -1);
}

/* store_kv_read_streams: every stream at once on several threads, the bytes of separate reads;
 * a segment longer than a read piece (16 MiB) split and put back together; the first failing
 * segment in stream order is the one reported, with the byte a short file stops at. */
static void parallel_reads_match_and_report_in_order(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int32_t t[512];
    tokens_of(6, t, 512);
    struct store_kv_hash h[4];
    store_kv_chain("m", t, 512, h);
    int64_t lin, fork;
    struct store_kv_ckpt c;
    void *bufs[NS + 1] = {0};
    /* many segments and a fork: a plan over two lineages */
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 128, &h[0]);
    put(e->kv, lin, 1, 256, &h[1]);
    assert_int_equal(store_kv_get(e->kv, lin, 256, &c, &err), 0);
    assert_int_equal(store_kv_fork(e->kv, &c, &fork, &err), 0);
    store_kv_ckpt_clear(&c);
    put(e->kv, fork, 1, 384, &h[2]);
    put(e->kv, fork, 1, 512, &h[3]);
    assert_int_equal(store_kv_get(e->kv, fork, 512, &c, &err), 0);
    for (int k = 0; k < NS; k++)
        bufs[k] = malloc(c.stream_len[k] + 1);
    assert_int_equal(store_kv_read_streams(e->kv, &c, bufs, &err), 0);
    for (int k = 0; k < NS; k++) {
        for (uint64_t i = 0; i < c.stream_len[k]; i++)
            if (((uint8_t *)bufs[k])[i] != byte_at(1, k, i))
                fail_msg("stream %d byte %llu differs", k, (unsigned long long)i);
        free(bufs[k]);
        bufs[k] = NULL;
    }
    /* a NULL buffer skips its stream */
    bufs[1] = malloc(c.stream_len[1] + 1);
    assert_int_equal(store_kv_read_streams(e->kv, &c, bufs, &err), 0);
    assert_int_equal(((uint8_t *)bufs[1])[c.stream_len[1] - 1], byte_at(1, 1, c.stream_len[1] - 1));
    free(bufs[1]);
    bufs[1] = NULL;
    store_kv_ckpt_clear(&c);

    /* one checkpoint whose stream 2 is one 18 MB segment (two read pieces) */
    const uint64_t big = 128 * 60000; /* streams of 6, 12 and 18 MB */
    int32_t *tb = malloc(big * sizeof *tb);
    tokens_of(7, tb, big);
    struct store_kv_hash hb;
    store_kv_prefix_hash("m", tb, big, &hb);
    free(tb);
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, big, &hb);
    assert_int_equal(store_kv_get(e->kv, lin, big, &c, &err), 0);
    assert_true(c.stream_len[2] > ((uint64_t)16 << 20));
    for (int k = 0; k < NS; k++)
        bufs[k] = malloc(c.stream_len[k] + 1);
    assert_int_equal(store_kv_read_streams(e->kv, &c, bufs, &err), 0);
    for (int k = 0; k < NS; k++)
        for (uint64_t i = 0; i < c.stream_len[k]; i++)
            if (((uint8_t *)bufs[k])[i] != byte_at(1, k, i))
                fail_msg("big stream %d byte %llu differs", k, (unsigned long long)i);
    /* a short stream 2 (cut in its second piece) and a flipped byte in stream 0: stream 0 is named */
    char p[256];
    snprintf(p, sizeof p, "%s/L%lld/s2.bin", e->dir, (long long)lin);
    assert_int_equal(truncate(p, (off_t)17 << 20), 0);
    assert_int_equal(store_kv_read_stream(e->kv, &c, 2, bufs[2], &err), CTX_EFORMAT);
    char want[64];
    snprintf(want, sizeof want, "truncated at byte %llu", (unsigned long long)17 << 20);
    assert_non_null(strstr(err.msg, want));
    store_kv_ckpt_clear(&c);
    /* that dropped the lineage: write it again, then corrupt streams 0 and 2 */
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, big, &hb);
    assert_int_equal(store_kv_get(e->kv, lin, big, &c, &err), 0);
    snprintf(p, sizeof p, "%s/L%lld/s2.bin", e->dir, (long long)lin);
    assert_int_equal(truncate(p, (off_t)17 << 20), 0);
    snprintf(p, sizeof p, "%s/L%lld/s0.bin", e->dir, (long long)lin);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, 4000000, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 4000000, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    assert_int_equal(store_kv_read_streams(e->kv, &c, bufs, &err), CTX_EFORMAT);
    assert_non_null(strstr(err.msg, "s0.bin bytes [0, "));
    assert_non_null(strstr(err.msg, "fail their checksum"));
    assert_non_null(strstr(err.msg, "dropped lineage"));
    for (int k = 0; k < NS; k++)
        free(bufs[k]);
    store_kv_ckpt_clear(&c);
}

static void corruption_is_detected_and_dropped(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int32_t t[512];
    tokens_of(4, t, 512);
    struct store_kv_hash h[4];
    store_kv_chain("m", t, 512, h);
    int64_t lin;
    char p[256];
    struct store_kv_ckpt c;
    int found;
    /* 1. a flipped byte in a stream */
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 128, &h[0]);
    put(e->kv, lin, 1, 256, &h[1]);
    snprintf(p, sizeof p, "%s/L%lld/s1.bin", e->dir, (long long)lin);
    FILE *f = fopen(p, "r+b");
    fseek(f, 250, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 250, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    assert_int_equal(store_kv_lookup(e->kv, "m", h, 4, &c, &found, &err), 0);
    assert_true(found);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), CTX_EFORMAT);
    assert_non_null(strstr(err.msg, "fail their checksum"));
    assert_non_null(strstr(err.msg, "dropped lineage"));
    store_kv_ckpt_clear(&c);
    assert_int_equal(store_kv_lookup(e->kv, "m", h, 4, &c, &found, &err), 0);
    assert_false(found);
    /* 2. a truncated stream file */
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
    put(e->kv, lin, 1, 128, &h[0]);
    snprintf(p, sizeof p, "%s/L%lld/s0.bin", e->dir, (long long)lin);
    assert_int_equal(truncate(p, 50), 0);
    assert_int_equal(store_kv_get(e->kv, lin, 128, &c, &err), 0);
    assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), CTX_EFORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    store_kv_ckpt_clear(&c);
    /* 3. a missing boundary file, 4. a boundary of the wrong size */
    for (int mode = 0; mode < 2; mode++) {
        assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &lin, &err), 0);
        put(e->kv, lin, 1, 128, &h[0]);
        snprintf(p, sizeof p, "%s/L%lld/c128.bin", e->dir, (long long)lin);
        if (mode == 0)
            assert_int_equal(unlink(p), 0);
        else
            assert_int_equal(truncate(p, 3), 0);
        assert_int_equal(store_kv_get(e->kv, lin, 128, &c, &err), 0);
        assert_int_equal(verify(e->kv, &c, 1, 1, 0, 1, &err), CTX_EFORMAT);
        assert_non_null(strstr(err.msg, mode == 0 ? "is missing" : "wrong size"));
        store_kv_ckpt_clear(&c);
        assert_int_equal(store_kv_get(e->kv, lin, 128, &c, &err), CTX_ENOTFOUND);
    }
    /* 5. a garbage index is refused at open, not crashed on */
    store_kv_close(e->kv);
    e->kv = NULL;
    char db[128];
    snprintf(db, sizeof db, "%s/kv.db", e->dir);
    f = fopen(db, "wb");
    fputs("this is not a database, just some bytes that are long enough to look like a header......", f);
    fclose(f);
    unlink(strcat(strcpy(p, db), "-wal"));
    assert_int_not_equal(store_kv_open(e->dir, &e->kv, &err), 0);
    assert_non_null(strstr(err.msg, "kv.db"));
    unlink(db);
    assert_int_equal(store_kv_open(e->dir, &e->kv, &err), 0);
}

static void newer_schema_is_refused(void **state)
{
    struct env *e = *state;
    store_kv_close(e->kv);
    e->kv = NULL;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "python3 -c \"import sqlite3; c=sqlite3.connect('%s/kv.db'); c.execute('PRAGMA user_version=9'); c.commit()\"", e->dir);
    assert_int_equal(system(cmd), 0);
    struct ctx_err err = {0};
    assert_int_equal(store_kv_open(e->dir, &e->kv, &err), CTX_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer than this build"));
}

static void eviction_is_lru_and_spares_the_kept(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    struct store_kv_hash h = {{1}};
    int64_t a, b, c_;
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &a, &err), 0);
    put(e->kv, a, 1, 256, &h);
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &b, &err), 0);
    put(e->kv, b, 2, 256, &h);
    assert_int_equal(store_kv_lineage_new(e->kv, "m", NS, &c_, &err), 0);
    put(e->kv, c_, 3, 256, &h);
    struct store_kv_stats st;
    store_kv_stats(e->kv, &st, &err);
    uint64_t each = st.bytes / 3;
    /* a is the least recently used, but kept: b goes first */
    uint64_t freed;
    assert_int_equal(store_kv_evict(e->kv, 2 * each, a, &freed, &err), 0);
    assert_int_equal(freed, each);
    struct store_kv_ckpt ck;
    assert_int_equal(store_kv_get(e->kv, b, 256, &ck, &err), CTX_ENOTFOUND);
    assert_int_equal(store_kv_get(e->kv, a, 256, &ck, &err), 0);
    /* a fork of c protects c when the fork is kept */
    int64_t f;
    assert_int_equal(store_kv_fork(e->kv, &ck, &f, &err), 0);
    store_kv_ckpt_clear(&ck);
    assert_int_equal(store_kv_evict(e->kv, 0, f, &freed, &err), 0);
    assert_int_equal(freed, each); /* c went; a is f's parent */
    assert_int_equal(store_kv_get(e->kv, a, 256, &ck, &err), 0);
    store_kv_ckpt_clear(&ck);
    assert_int_equal(store_kv_clear(e->kv, &err), 0);
    store_kv_stats(e->kv, &st, &err);
    assert_int_equal(st.lineages, 0);
    assert_int_equal(st.bytes, 0);
}

static void orphans_are_swept(void **state)
{
    struct env *e = *state;
    char p[128];
    snprintf(p, sizeof p, "%s/L77", e->dir);
    assert_int_equal(mkdir(p, 0700), 0);
    store_kv_close(e->kv);
    struct ctx_err err = {0};
    assert_int_equal(store_kv_open(e->dir, &e->kv, &err), 0);
    assert_int_equal(access(p, F_OK), -1);
}

/* kill -9 at random points of checkpoint writes, 100 times: every checkpoint the index lists
 * afterwards reads back intact, and writing goes on. The random delay counts from the child's first
 * stored checkpoint (it says so through a pipe), not from the fork: on a loaded machine opening the
 * store can take longer than the delay, and then no round would write anything. */
static void kill9_leaves_a_usable_store(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    store_kv_close(e->kv);
    e->kv = NULL;
    srand(12345);
    int checked = 0;
    for (int round = 0; round < 100; round++) {
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(ready[0]);
            struct store_kv *kv;
            struct ctx_err ce = {0};
            if (store_kv_open(e->dir, &kv, &ce) != 0)
                _exit(3);
            for (int r = 0;; r++) {
                int64_t lin;
                if (store_kv_lineage_new(kv, "m", NS, &lin, &ce) != 0)
                    _exit(4);
                for (uint64_t pos = 128; pos <= 1280; pos += 128) {
                    struct store_kv_hash h = {{(uint8_t)r}};
                    put(kv, lin, (int)lin, pos, &h);
                    if (r == 0 && pos == 128) { /* the first checkpoint is stored: the parent's clock starts */
                        if (write(ready[1], "k", 1) != 1)
                            _exit(5);
                        close(ready[1]);
                    }
                }
                struct store_kv_stats st;
                store_kv_stats(kv, &st, &ce);
                if (st.bytes > 200000) {
                    uint64_t freed;
                    store_kv_evict(kv, 100000, lin, &freed, &ce);
                }
            }
        }
        close(ready[1]);
        char byte;
        ssize_t got = read(ready[0], &byte, 1); /* 0: the child ended before storing anything */
        close(ready[0]);
        if (got == 1)
            usleep((useconds_t)(rand() % 30000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));
        /* reopen and verify everything listed */
        struct store_kv *kv;
        assert_int_equal(store_kv_open(e->dir, &kv, &err), 0);
        for (int64_t lin = 1; lin < 100000; lin++) {
            int any = 0;
            for (uint64_t pos = 128; pos <= 1280; pos += 128) {
                struct store_kv_ckpt c;
                if (store_kv_get(kv, lin, pos, &c, &err) != 0)
                    continue;
                any = 1;
                if (verify(kv, &c, (int)lin, (int)lin, 0, (int)lin, &err) != 0)
                    fail_msg("round %d: lineage %lld at %llu: %s", round, (long long)lin,
                             (unsigned long long)pos, err.msg);
                checked++;
                store_kv_ckpt_clear(&c);
            }
            (void)any;
            struct store_kv_stats st;
            store_kv_stats(kv, &st, &err);
            if (lin > 2000)
                break;
        }
        store_kv_close(kv);
    }
    assert_true(checked > 0);
    printf("# kill -9 rounds: 100, checkpoints verified after kills: %d\n", checked);
    assert_int_equal(store_kv_open(e->dir, &e->kv, &err), 0);
}

int main(int argc, char **argv)
{
    /* "kill9" runs the crash test alone (integration suite); otherwise everything else. */
    if (argc > 1 && strcmp(argv[1], "kill9") == 0) {
        const struct CMUnitTest crash[] = {
            cmocka_unit_test_setup_teardown(kill9_leaves_a_usable_store, setup, teardown),
        };
        return cmocka_run_group_tests(crash, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chain_is_a_prefix_hash),
        cmocka_unit_test_setup_teardown(checkpoints_round_trip_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_puts_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(exact_prompt_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(produced_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(forks_share_their_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(parallel_reads_match_and_report_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(corruption_is_detected_and_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(eviction_is_lru_and_spares_the_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(orphans_are_swept, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
