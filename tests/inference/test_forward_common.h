/* Shared helpers of the forward-pass fixture tests (test_forward.c, test_forward_state.c): the
 * v4-tiny-a model and its expected.safetensors, comparisons, and teacher-forced case runs. */
#ifndef TEST_FORWARD_COMMON_H
#define TEST_FORWARD_COMMON_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "pool.h"
#include "quant.h"
#include "safetensors.h"
#include "state.h"
#include "weights.h"

static struct inf_weights *W;
static struct inf_model *M;
static struct inf_st_file *X;
static const struct inf_config *C;

static inline int setup(void **st)
{
    (void)st;
    char path[1024];
    struct ctx_err e = {0};
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root ? root : ".");
    if (inf_weights_open(path, &W, &e)) {
        fprintf(stderr, "weights: %s\n", e.msg);
        return -1;
    }
    if (inf_model_new(W, NULL, 0, &M, &e)) {
        fprintf(stderr, "model: %s\n", e.msg);
        return -1;
    }
    C = inf_model_config(M);
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a/expected.safetensors", root ? root : ".");
    if (inf_st_open(path, &X, &e)) {
        fprintf(stderr, "expected: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* dst becomes a copy of src (the same config): src serialised and read back, its layers swapped into
 * dst (the accelerator doubles' downloads). */
static inline int state_assign(struct inf_state *dst, const struct inf_state *src, struct ctx_err *e)
{
    uint8_t *b;
    size_t n;
    int rc = inf_state_serialize(src, &b, &n, e);
    if (rc)
        return rc;
    struct inf_state *s;
    rc = inf_state_deserialize(&dst->cfg, b, n, &s, e);
    free(b);
    if (rc)
        return rc;
    struct inf_layer_state *tl = dst->layers;
    dst->layers = s->layers;
    s->layers = tl;
    dst->pos = s->pos;
    dst->mtp_pos = s->mtp_pos;
    inf_state_free(s);
    return 0;
}

static inline int teardown(void **st)
{
    (void)st;
    inf_st_close(X);
    inf_model_free(M);
    inf_weights_free(W);
    return 0;
}

static const struct inf_tensor *tget(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const struct inf_tensor *tget(const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const struct inf_tensor *t = inf_st_find(X, name);
    if (!t)
        fail_msg("expected.safetensors lacks %s", name);
    return t;
}
static inline const float *fget(const char *name) { return tget("%s", name)->data; }

static inline int *case_tokens(int k, int *n, int *P)
{
    const struct inf_tensor *t = tget("case%d.tokens", k);
    *n = (int)t->shape[0];
    *P = ((const int32_t *)tget("case%d.prefill_len", k)->data)[0];
    int *out = malloc(sizeof(int) * (size_t)*n);
    for (int i = 0; i < *n; i++)
        out[i] = ((const int32_t *)t->data)[i];
    return out;
}

/* rms(a-b)/rms(b) and max|a-b|/max|b| */
static inline void cmp(const float *a, const float *b, size_t n, double *rms, double *mx)
{
    double d2 = 0, r2 = 0, dm = 0, rm = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        d2 += d * d;
        r2 += (double)b[i] * b[i];
        if (fabs(d) > dm) dm = fabs(d);
        if (fabs(b[i]) > rm) rm = fabs(b[i]);
    }
    *rms = sqrt(d2 / (r2 > 0 ? r2 : 1));
    *mx = dm / (rm > 0 ? rm : 1);
}

static inline double sigma_of(const float *r, int n)
{
    double m = 0, v = 0;
    for (int i = 0; i < n; i++)
        m += r[i];
    m /= n;
    for (int i = 0; i < n; i++)
        v += (r[i] - m) * (r[i] - m);
    return sqrt(v / n);
}

static inline int argmax(const float *r, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (r[i] > r[b])
            b = i;
    return b;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- end to end, teacher forced ---- */

/* Logits rows of case k: prefill in chunks of `chunk` (0: one chunk), then one decode step per
 * forced token. rows [1+T][V]. */
static inline void run_case(int k, int chunk, float *rows, int *T_out)
{
    struct ctx_err e = {0};
    int n, P, V = C->vocab_size;
    int *tok = case_tokens(k, &n, &P);
    struct inf_state *s;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    int step = chunk > 0 ? chunk : P;
    for (int p = 0; p < P; p += step) {
        int S = P - p < step ? P - p : step;
        struct inf_forward_opts o = {.logits = p + S == P ? rows : NULL};
        int rc = inf_model_forward(M, s, tok + p, S, &o, &e);
        if (rc)
            fail_msg("forward: %s", e.msg);
    }
    for (int j = 0; P + j < n; j++) {
        struct inf_forward_opts o = {.logits = rows + (size_t)(1 + j) * V};
        assert_int_equal(inf_model_forward(M, s, tok + P + j, 1, &o, &e), 0);
    }
    *T_out = n - P;
    inf_state_free(s);
    free(tok);
}

#endif
