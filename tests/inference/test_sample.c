/* inference/sample.c: greedy, temperature, top-k, top-p, determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

static void argmax_rules(void **state)
{
    (void)state;
    float v[5] = {1, 3, NAN, 3, -2};
    assert_int_equal(inf_argmax(v, 5), 1);
    float w[3] = {NAN, NAN, -5};
    assert_int_equal(inf_argmax(w, 3), 2);
}

/* The one-pass rule inf_argmax must equal: the first non-NaN value strictly above all before it. */
static int32_t argmax_ref(const float *v, int n)
{
    int32_t best = 0;
    float bv = -INFINITY;
    int found = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i]) && (!found || v[i] > bv)) {
            best = i;
            bv = v[i];
            found = 1;
        }
    return best;
}

/* Random vectors of every length 0..40 and a long one, drawn from a few values (ties), NaN, +-inf
 * and +-0: inf_argmax equals the one-pass rule. */
static void argmax_matches_rule(void **state)
{
    (void)state;
    const float pool[] = {0.f, -0.f, 1.f, -1.f, 2.5f, NAN, INFINITY, -INFINITY, 2.5f, 1e-30f};
    unsigned long long x = 12345;
    float v[1000];
    for (int round = 0; round < 4000; round++) {
        int n = round < 3000 ? round % 41 : 1000;
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            int k = (int)((x >> 33) % (round % 3 == 0 ? 10 : round % 3 == 1 ? 6 : 3));
            v[i] = round % 5 == 4 ? (float)((x >> 40) % 1000) * 0.01f : pool[k];
        }
        assert_int_equal(inf_argmax(v, n), argmax_ref(v, n));
    }
}

static int draw(struct inf_sampler *s, const float *l, int n, int *counts)
{
    memset(counts, 0, sizeof(int) * 8);
    for (int i = 0; i < n; i++)
        counts[inf_sample(s, l)]++;
    return 0;
}

static void temperature_follows_softmax(void **state)
{
    (void)state;
    float l[8] = {0, 1, 2, 0.5f, -1, -3, 1.5f, 0};
    struct inf_sampler *s;
    struct ctx_err e = {0};
    struct inf_sampler_opts o = {.temperature = 1.0f, .seed = 42};
    assert_int_equal(inf_sampler_new(&o, 8, &s, &e), 0);
    int c[8];
    int n = 40000;
    draw(s, l, n, c);
    double z = 0;
    for (int i = 0; i < 8; i++)
        z += exp(l[i]);
    for (int i = 0; i < 8; i++) {
        double p = exp(l[i]) / z, f = (double)c[i] / n;
        /* 5 standard deviations */
        assert_true(fabs(f - p) <= 5 * sqrt(p * (1 - p) / n) + 1e-4);
    }
    inf_sampler_free(s);

    /* the same seed gives the same sequence; another seed another */
    struct inf_sampler *a, *b, *d;
    struct inf_sampler_opts o2 = {.temperature = 0.8f, .seed = 7};
    inf_sampler_new(&o2, 8, &a, &e);
    inf_sampler_new(&o2, 8, &b, &e);
    o2.seed = 8;
    inf_sampler_new(&o2, 8, &d, &e);
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = inf_sample(a, l), y = inf_sample(b, l), z2 = inf_sample(d, l);
        same &= x == y;
        diff |= x != z2;
    }
    assert_true(same);
    assert_true(diff);
    inf_sampler_free(a);
    inf_sampler_free(b);
    inf_sampler_free(d);
}

static void truncation(void **state)
{
    (void)state;
    float l[8] = {0, 1, 2, 0.5f, -1, -3, 1.5f, 0};
    struct ctx_err e = {0};
    struct inf_sampler *s;
    int c[8];
    /* greedy */
    struct inf_sampler_opts g = {.temperature = 0};
    inf_sampler_new(&g, 8, &s, &e);
    draw(s, l, 100, c);
    assert_int_equal(c[2], 100);
    inf_sampler_free(s);
    /* top-k 2: only ids 2 and 6 */
    struct inf_sampler_opts k2 = {.temperature = 1, .top_k = 2, .seed = 1};
    inf_sampler_new(&k2, 8, &s, &e);
    draw(s, l, 5000, c);
    assert_int_equal(c[2] + c[6], 5000);
    assert_true(c[2] > c[6]);
    inf_sampler_free(s);
    /* top-p: p(2) = 0.37..., p(6) = 0.22..., p(1) = 0.14...: 0.5 keeps {2, 6} */
    struct inf_sampler_opts p5 = {.temperature = 1, .top_p = 0.5f, .seed = 2};
    inf_sampler_new(&p5, 8, &s, &e);
    draw(s, l, 5000, c);
    assert_int_equal(c[2] + c[6], 5000);
    inf_sampler_free(s);
    /* a tiny top-p keeps only the best */
    struct inf_sampler_opts p0 = {.temperature = 1, .top_p = 0.01f, .seed = 3};
    inf_sampler_new(&p0, 8, &s, &e);
    draw(s, l, 500, c);
    assert_int_equal(c[2], 500);
    inf_sampler_free(s);
    /* bad options */
    struct inf_sampler_opts bad = {.temperature = -1};
    assert_int_equal(inf_sampler_new(&bad, 8, &s, &e), CTX_EINVAL);
    struct inf_sampler_opts badp = {.temperature = 1, .top_p = 1.5f};
    assert_int_equal(inf_sampler_new(&badp, 8, &s, &e), CTX_EINVAL);
    assert_int_equal(inf_sampler_new(&g, 0, &s, &e), CTX_EINVAL);
}

/* inf_sample_draft: the output keeps the sampler's distribution whatever the draft (each id's
 * frequency against softmax, 5 standard deviations), the draft is taken with its own probability,
 * a draft outside a top-k / top-p cut is never returned, greedy keeps the argmax. */
static void draft_keeps_distribution(void **state)
{
    (void)state;
    float l[8] = {0, 1, 2, 0.5f, -1, -3, 1.5f, 0};
    struct ctx_err e = {0};
    double z = 0;
    for (int i = 0; i < 8; i++)
        z += exp(l[i]);
    const int n = 40000;
    for (int d = -1; d < 8; d++) { /* -1: no draft; 2 the likeliest id, 5 the least likely */
        struct inf_sampler *s;
        struct inf_sampler_opts o = {.temperature = 1.0f, .seed = 100 + (unsigned)d};
        assert_int_equal(inf_sampler_new(&o, 8, &s, &e), 0);
        int c[8] = {0}, acc = 0;
        for (int i = 0; i < n; i++) {
            int a = -1;
            int32_t t = inf_sample_draft(s, l, d, &a);
            assert_true(t >= 0 && t < 8);
            assert_int_equal(a, d >= 0 && t == d);
            c[t]++;
            acc += a;
        }
        for (int i = 0; i < 8; i++) {
            double p = exp(l[i]) / z, f = (double)c[i] / n;
            assert_true(fabs(f - p) <= 5 * sqrt(p * (1 - p) / n) + 1e-4);
        }
        if (d >= 0) {
            double p = exp(l[d]) / z;
            assert_true(fabs((double)acc / n - p) <= 5 * sqrt(p * (1 - p) / n) + 1e-4);
        }
        inf_sampler_free(s);
    }
    /* top-k 2 keeps {2, 6}: a draft of 1 is never taken, one of 6 keeps its share of the two */
    struct inf_sampler *s;
    struct inf_sampler_opts k2 = {.temperature = 1, .top_k = 2, .seed = 5};
    assert_int_equal(inf_sampler_new(&k2, 8, &s, &e), 0);
    int c[8] = {0};
    for (int i = 0; i < n; i++)
        c[inf_sample_draft(s, l, 1, NULL)]++;
    assert_int_equal(c[2] + c[6], n);
    for (int i = 0; i < n; i++)
        c[inf_sample_draft(s, l, 6, NULL)]++;
    assert_int_equal(c[2] + c[6], 2 * n);
    double p6 = exp(1.5) / (exp(1.5) + exp(2.0));
    assert_true(fabs((double)c[6] / (2 * n) - p6) < 0.01);
    inf_sampler_free(s);
    /* top-p 0.01 keeps only id 2: every draft but 2 goes, 2 always stays */
    struct inf_sampler_opts p0 = {.temperature = 1, .top_p = 0.01f, .seed = 6};
    assert_int_equal(inf_sampler_new(&p0, 8, &s, &e), 0);
    for (int d = 0; d < 8; d++) {
        int a = -1;
        assert_int_equal(inf_sample_draft(s, l, d, &a), 2);
        assert_int_equal(a, d == 2);
    }
    inf_sampler_free(s);
    /* greedy: the argmax, accepted only when it is the draft; a draft outside the vocabulary is none */
    struct inf_sampler_opts g = {.temperature = 0};
    assert_int_equal(inf_sampler_new(&g, 8, &s, &e), 0);
    for (int d = -1; d < 9; d++) {
        int a = -1;
        assert_int_equal(inf_sample_draft(s, l, d, &a), 2);
        assert_int_equal(a, d == 2);
    }
    inf_sampler_free(s);
    /* seeded: the same sequence again */
    struct inf_sampler *a1, *a2;
    struct inf_sampler_opts o = {.temperature = 0.7f, .top_p = 0.9f, .seed = 9};
    inf_sampler_new(&o, 8, &a1, &e);
    inf_sampler_new(&o, 8, &a2, &e);
    for (int i = 0; i < 500; i++)
        assert_int_equal(inf_sample_draft(a1, l, i % 8, NULL), inf_sample_draft(a2, l, i % 8, NULL));
    inf_sampler_free(a1);
    inf_sampler_free(a2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argmax_rules),
        cmocka_unit_test(argmax_matches_rule),
        cmocka_unit_test(temperature_follows_softmax),
        cmocka_unit_test(truncation),
        cmocka_unit_test(draft_keeps_distribution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
