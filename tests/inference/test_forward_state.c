/* Sequence-state acceptance on the v4-tiny-a fixture: chunked prefill with many chunk sizes gives
 * logits bit-identical to one chunk (so the end-to-end bounds of test_forward hold for every chunk
 * size), and snapshot / truncate / serialize / restore are bit-identical to never having stopped. */
#include "test_forward_common.h"

int inf_fuzz_state_one(const uint8_t *data, size_t size); /* tests/fuzz/fuzz_state.c */

static float *case_rows[7];
static int case_T[7];

/* Chunked prefill gives bit-identical logits to one chunk (so the end-to-end bounds hold for every
 * chunk size too). */
static void test_chunked(void **st)
{
    (void)st;
    int V = C->vocab_size;
    static const struct { int k, chunk; } runs[] = {
        {1, 1}, {1, 2}, {2, 3}, {3, 64}, {4, 129}, {5, 17}, {6, 100}, {6, 48},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int k = runs[i].k, T;
        if (!case_rows[k]) {
            case_rows[k] = malloc(sizeof(float) * (size_t)(tget("case%d.logits", k)->shape[0]) * V);
            run_case(k, 0, case_rows[k], &case_T[k]);
        }
        float *rows = malloc(sizeof(float) * (size_t)(case_T[k] + 1) * V);
        run_case(k, runs[i].chunk, rows, &T);
        int same = memcmp(rows, case_rows[k], sizeof(float) * (size_t)(T + 1) * V) == 0;
        printf("# chunked case %d chunk %d: %s\n", k, runs[i].chunk, same ? "bit-identical" : "DIFFERENT");
        assert_true(same);
        free(rows);
    }
}

/* Snapshot / truncate / serialize / restore are bit-identical to never having stopped. */
static void test_snapshot(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int V = C->vocab_size, n, P;
    int *tok = case_tokens(6, &n, &P);
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    struct inf_state *s;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    /* 150 tokens, snapshot (mid CSA block, after the window wrapped, one HCA entry) */
    struct inf_forward_opts none = {0};
    assert_int_equal(inf_model_forward(M, s, tok, 150, &none, &e), 0);
    struct inf_snapshot *sn;
    assert_int_equal(inf_state_snapshot(s, &sn, &e), 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(inf_state_serialize(s, &buf, &len, &e), 0);
    /* reference: continue to the end */
    struct inf_forward_opts oa = {.logits = a};
    assert_int_equal(inf_model_forward(M, s, tok + 150, P - 150, &oa, &e), 0);
    for (int j = P; j < n; j++)
        assert_int_equal(inf_model_forward(M, s, tok + j, 1, &oa, &e), 0);
    /* truncate back, run a different continuation, truncate again, redo the original */
    assert_int_equal(inf_state_truncate(s, sn, &e), 0);
    assert_int_equal(s->pos, 150);
    assert_int_equal(inf_model_forward(M, s, tok + 10, 40, &none, &e), 0);
    assert_int_equal(inf_state_truncate(s, sn, &e), 0);
    struct inf_forward_opts ob = {.logits = b};
    assert_int_equal(inf_model_forward(M, s, tok + 150, P - 150, &ob, &e), 0);
    for (int j = P; j < n; j++)
        assert_int_equal(inf_model_forward(M, s, tok + j, 1, &ob, &e), 0);
    assert_memory_equal(a, b, sizeof(float) * (size_t)V);
    printf("# snapshot at 150 of case 6, truncate after other tokens: bit-identical\n");
    /* restore from bytes into a new state */
    struct inf_state *r;
    assert_int_equal(inf_state_deserialize(C, buf, len, &r, &e), 0);
    assert_int_equal(r->pos, 150);
    memset(b, 0, sizeof(float) * (size_t)V);
    assert_int_equal(inf_model_forward(M, r, tok + 150, P - 150, &ob, &e), 0);
    for (int j = P; j < n; j++)
        assert_int_equal(inf_model_forward(M, r, tok + j, 1, &ob, &e), 0);
    assert_memory_equal(a, b, sizeof(float) * (size_t)V);
    printf("# serialize (%zu bytes) / restore at 150: bit-identical\n", len);
    /* malformed bytes are errors, not crashes */
    struct inf_state *bad;
    assert_int_equal(inf_state_deserialize(C, buf, len - 1, &bad, &e), CTX_EFORMAT);
    buf[0] ^= 1;
    assert_int_equal(inf_state_deserialize(C, buf, len, &bad, &e), CTX_EFORMAT);
    /* a snapshot ahead of the state is refused */
    struct inf_state *fresh;
    assert_int_equal(inf_state_new(C, &fresh, &e), 0);
    assert_int_equal(inf_state_truncate(fresh, sn, &e), CTX_EINVAL);
    inf_state_free(fresh);
    inf_state_free(r);
    free(buf);
    inf_snapshot_free(sn);
    inf_state_free(s);
    free(a);
    free(b);
    free(tok);
}

/* The deserializer on hostile bytes (the libFuzzer entry of tests/fuzz/fuzz_state.c): every
 * truncation, a wrong magic or shape, inflated counts and random garbage are CTX_EFORMAT; a valid
 * buffer round-trips to the same bytes. */
static void test_state_hostile(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(4, &n, &P);
    struct inf_state *s;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    struct inf_forward_opts none = {0};
    assert_int_equal(inf_model_forward(M, s, tok, 133, &none, &e), 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(inf_state_serialize(s, &buf, &len, &e), 0);
    assert_int_equal(inf_fuzz_state_one(buf, len), 0);
    for (size_t cut = 0; cut < len; cut += 1 + cut / 3)
        assert_int_equal(inf_fuzz_state_one(buf, cut), CTX_EFORMAT);
    uint8_t *bad = malloc(len + 8);
    memcpy(bad, buf, len);
    bad[len] = 0;
    assert_int_equal(inf_fuzz_state_one(bad, len + 1), CTX_EFORMAT); /* trailing byte */
    size_t shape_at = 4 + 8, ns = (size_t)(C->num_hidden_layers + C->num_nextn_predict_layers + 5);
    bad[shape_at + 8 * 2] ^= 1; /* head_dim */
    assert_int_equal(inf_fuzz_state_one(bad, len), CTX_EFORMAT);
    memcpy(bad, buf, len);
    size_t layer0 = 4 + 8 + 8 * ns + 16;
    size_t layer1 = layer0 + 8 + sizeof(float) * (size_t)C->sliding_window * C->head_dim;
    int64_t huge = 1000000000;
    memcpy(bad + layer1, &huge, 8); /* layer 1 (CSA) claims 1e9 entries */
    assert_int_equal(inf_fuzz_state_one(bad, len), CTX_EFORMAT);
    int64_t neg = -1;
    memcpy(bad + layer1, &neg, 8);
    assert_int_equal(inf_fuzz_state_one(bad, len), CTX_EFORMAT);
    memcpy(bad, buf, len);
    memcpy(bad + layer0 - 16, &huge, 8); /* position far ahead of the entries is fine only if consistent */
    inf_fuzz_state_one(bad, len);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int r = 0; r < 64; r++) {
        for (size_t i = 0; i < 256; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bad[i] = (uint8_t)x;
        }
        assert_int_equal(inf_fuzz_state_one(bad, 256), CTX_EFORMAT);
    }
    printf("# state deserializer: %zu-byte state round-trips; truncations, bad shape, counts, garbage refused\n", len);
    free(bad);
    free(buf);
    inf_state_free(s);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_state_hostile),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    for (int k = 0; k < 7; k++)
        free(case_rows[k]);
    return rc;
}
