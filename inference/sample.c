#include "sample.h"

#include <math.h>
#include <stdlib.h>

struct inf_sampler {
    struct inf_sampler_opts o;
    int vocab;
    uint64_t s[4];      /* xoshiro256** */
    float *prob;        /* [vocab] scratch */
    int32_t *idx;       /* [vocab] scratch */
    int32_t *tmp;       /* [vocab] merge-sort scratch */
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(struct inf_sampler *s)
{
    uint64_t r = rotl(s->s[1] * 5, 7) * 9, t = s->s[1] << 17;
    s->s[2] ^= s->s[0];
    s->s[3] ^= s->s[1];
    s->s[1] ^= s->s[2];
    s->s[0] ^= s->s[3];
    s->s[2] ^= t;
    s->s[3] = rotl(s->s[3], 45);
    return r;
}

static double uniform(struct inf_sampler *s)
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

int inf_sampler_new(const struct inf_sampler_opts *o, int vocab, struct inf_sampler **out,
                    struct ctx_err *e)
{
    *out = NULL;
    if (vocab <= 0)
        return ctx_err_set(e, CTX_EINVAL, "sampler: vocabulary size %d", vocab);
    if (!(o->temperature >= 0) || !(o->top_p >= 0 && o->top_p <= 1) || o->top_k < 0)
        return ctx_err_set(e, CTX_EINVAL, "sampler: temperature must be >= 0, top_p in [0, 1], top_k >= 0");
    struct inf_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->prob = malloc(sizeof(float) * (size_t)vocab)) ||
        !(s->idx = malloc(sizeof(int32_t) * (size_t)vocab)) ||
        !(s->tmp = malloc(sizeof(int32_t) * (size_t)vocab))) {
        inf_sampler_free(s);
        return ctx_err_set(e, CTX_ENOMEM, "sampler: out of memory");
    }
    s->o = *o;
    s->vocab = vocab;
    uint64_t x = o->seed;
    for (int i = 0; i < 4; i++)
        s->s[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void inf_sampler_free(struct inf_sampler *s)
{
    if (!s)
        return;
    free(s->prob);
    free(s->idx);
    free(s->tmp);
    free(s);
}

/* Two passes: the largest non-NaN value (eight running maxima, so the loop is not one dependency
 * chain: ~4x faster over V4's 129280 logits, which the host scans for every token it chooses), then
 * its first index. A NaN never compares greater; with no value above -inf the first -inf (or 0 when
 * every value is NaN). Equal to the one-pass rule "strictly greater replaces" on every input, the
 * zeros included (-0 == +0). */
int32_t inf_argmax(const float *v, int n)
{
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            m[j] = v[i + j] > m[j] ? v[i + j] : m[j];
    float mx = -INFINITY;
    for (int j = 0; j < 8; j++)
        mx = m[j] > mx ? m[j] : mx;
    for (; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    for (i = 0; i < n; i++)
        if (v[i] == mx)
            return i;
    return 0;
}

/* Descending by probability, then ascending id: a total order, so the result is unique. */
static int before(const float *p, int32_t x, int32_t y)
{
    return p[x] != p[y] ? p[x] > p[y] : x < y;
}

/* Bottom-up merge sort of idx[0, m) (qsort has no context argument in C17). */
static void sort_desc(const float *p, int32_t *idx, int32_t *tmp, int m)
{
    for (int w = 1; w < m; w *= 2) {
        for (int lo = 0; lo < m; lo += 2 * w) {
            int mid = lo + w < m ? lo + w : m, hi = lo + 2 * w < m ? lo + 2 * w : m;
            int a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = before(p, idx[b], idx[a]) ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[o++] = idx[a++];
            while (b < hi)
                tmp[o++] = idx[b++];
        }
        for (int i = 0; i < m; i++)
            idx[i] = tmp[i];
    }
}

/* The sampler's distribution before the draw: weights s->prob[id] (exp((logit - max) / T)), over the
 * kept ids s->idx[0..*k) when a top-k / top-p cut applies (*cut = 1: sorted, most likely first), else
 * over every id (*cut = 0); *ksum the kept weights' sum. Returns the argmax. */
static int32_t weights(struct inf_sampler *s, const float *logits, int *cut, int *k, double *ksum)
{
    int n = s->vocab;
    int32_t top = inf_argmax(logits, n);
    float mx = logits[top];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float p = isnan(logits[i]) ? 0.f : expf((logits[i] - mx) / s->o.temperature);
        s->prob[i] = p;
        sum += p;
    }
    *k = n;
    *ksum = sum;
    *cut = (s->o.top_k > 0 && s->o.top_k < n) || (s->o.top_p > 0 && s->o.top_p < 1);
    if (!*cut)
        return top;
    /* Only the candidates are sorted: keep those within 1e-9 of the top first. */
    int m = 0;
    for (int i = 0; i < n; i++)
        if (s->prob[i] > 1e-9f)
            s->idx[m++] = i;
    sort_desc(s->prob, s->idx, s->tmp, m);
    int kk = m;
    if (s->o.top_k > 0 && s->o.top_k < kk)
        kk = s->o.top_k;
    if (s->o.top_p > 0 && s->o.top_p < 1) {
        double acc = 0;
        for (int j = 0; j < kk; j++) {
            acc += s->prob[s->idx[j]] / sum;
            if (acc >= s->o.top_p) {
                kk = j + 1;
                break;
            }
        }
    }
    double q = 0;
    for (int j = 0; j < kk; j++)
        q += s->prob[s->idx[j]];
    *k = kk;
    *ksum = q;
    return top;
}

/* A draw from the weights, skipping id `skip` (-1: none) whose weight is left out of r's range. */
static int32_t draw(struct inf_sampler *s, int cut, int k, double r, int32_t top, int32_t skip)
{
    int32_t last = -1;
    for (int j = 0; j < k; j++) {
        int32_t id = cut ? s->idx[j] : j;
        if (id == skip)
            continue;
        last = id;
        r -= s->prob[id];
        if (r < 0)
            return id;
    }
    return cut ? (last >= 0 ? last : s->idx[k - 1]) : (last >= 0 && skip >= 0 ? last : top);
}

int32_t inf_sample(struct inf_sampler *s, const float *logits)
{
    if (s->o.temperature == 0 || s->o.top_k == 1)
        return inf_argmax(logits, s->vocab);
    int cut, k;
    double ksum;
    int32_t top = weights(s, logits, &cut, &k, &ksum);
    return draw(s, cut, k, uniform(s) * ksum, top, -1);
}

int32_t inf_sample_draft(struct inf_sampler *s, const float *logits, int32_t draft, int *accepted)
{
    int acc = 0;
    int32_t t;
    if (s->o.temperature == 0 || s->o.top_k == 1 || draft < 0 || draft >= s->vocab) {
        t = inf_sample(s, logits);
        acc = draft >= 0 && t == draft;
    } else {
        int cut, k;
        double ksum;
        int32_t top = weights(s, logits, &cut, &k, &ksum);
        double pd = 0; /* the draft's kept weight */
        if (!cut)
            pd = s->prob[draft];
        else
            for (int j = 0; j < k; j++)
                if (s->idx[j] == draft) {
                    pd = s->prob[draft];
                    break;
                }
        if (uniform(s) * ksum < pd) { /* with probability p(draft) */
            t = draft;
            acc = 1;
        } else if (ksum - pd > 0) { /* the rest of the distribution, renormalised without the draft */
            t = draw(s, cut, k, uniform(s) * (ksum - pd), top, draft);
        } else {
            t = draft;
            acc = 1;
        }
    }
    if (accepted)
        *accepted = acc;
    return t;
}
