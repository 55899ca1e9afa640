/* The V4 forward pass; see model.h. Follows DeepSeek's reference inference/model.py (current
 * revision, spec §4) operation by operation, with the reference's bf16 rounding points: every
 * value the reference stores as bf16 is rounded here with inf_cpu_bf16 at the same place. */
#include "model.h"
#include "accel.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/kernels.h"

#define bf16r inf_cpu_bf16

struct layer_w {
    int idx, ratio, hash;
    const float *hc_fn[2], *hc_base[2], *hc_scale[2]; /* [0] attn, [1] ffn */
    const uint16_t *attn_norm, *ffn_norm;
    const float *sink;
    struct inf_lin wq_a, wq_b, wkv, wo_a, wo_b;
    const uint16_t *q_norm, *kv_norm;
    struct inf_lin c_wkv, c_wgate;           /* compressor */
    const float *c_ape;
    const uint16_t *c_norm;
    struct inf_lin i_wq_b, i_wproj, ic_wkv, ic_wgate; /* indexer */
    const float *ic_ape;
    const uint16_t *ic_norm;
    struct inf_lin gate;
    const float *gate_bias;
    const int64_t *tid2eid;
    struct inf_lin *w1, *w2, *w3;            /* [n_routed_experts] */
    struct inf_lin sw1, sw2, sw3;
    struct inf_rope rope;
    /* MTP only */
    struct inf_lin e_proj, h_proj;
    const uint16_t *enorm, *hnorm, *norm;
    const float *hch_fn, *hch_base, *hch_scale;
};

struct inf_model {
    struct inf_config c;
    const struct inf_weights *w;
    struct inf_backend *be;
    const uint16_t *embed, *norm;
    struct inf_lin head;
    const float *hch_fn, *hch_base, *hch_scale;
    int nl; /* backbone + MTP */
    struct layer_w *L;
    struct inf_accel *accel; /* runs inf_model_forward when set (accel.h), not owned */
};

/* ---- weight binding ---- */

struct binder {
    const struct inf_weights *w;
    struct ctx_err *e;
    int rc;
};

static const struct inf_tensor *get(struct binder *b, enum inf_dtype dt, long long numel, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const struct inf_tensor *get(struct binder *b, enum inf_dtype dt, long long numel, const char *fmt, ...)
{
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (b->rc)
        return NULL;
    const struct inf_tensor *t = inf_weights_get(b->w, name);
    if (!t) {
        b->rc = ctx_err_set(b->e, CTX_EFORMAT, "model: tensor %s is missing", name);
        return NULL;
    }
    if (t->dtype != dt || (numel >= 0 && inf_tensor_numel(t) != numel)) {
        b->rc = ctx_err_set(b->e, CTX_EFORMAT, "model: tensor %s has dtype %s and %lld elements, expected %s and %lld",
                            name, inf_dtype_name(t->dtype), inf_tensor_numel(t), inf_dtype_name(dt), numel);
        return NULL;
    }
    return t;
}
#define DATA(t) ((t) ? (t)->data : NULL)

/* An FP8 matrix "<p>.weight" + "<p>.scale". */
static void bind_fp8(struct binder *b, struct inf_lin *l, int n, int k, enum inf_lin_kind kind, const char *p)
{
    const struct inf_tensor *w = get(b, INF_DT_F8_E4M3, (long long)n * k, "%s.weight", p);
    const struct inf_tensor *s = get(b, INF_DT_F8_E8M0, (long long)((n + 127) / 128) * ((k + 127) / 128), "%s.scale", p);
    *l = (struct inf_lin){kind, n, k, DATA(w), s ? s->data : NULL};
}
static void bind_fp4(struct binder *b, struct inf_lin *l, int n, int k, const char *p)
{
    const struct inf_tensor *w = get(b, INF_DT_I8, (long long)n * k / 2, "%s.weight", p);
    const struct inf_tensor *s = get(b, INF_DT_F8_E8M0, (long long)n * (k / 32), "%s.scale", p);
    *l = (struct inf_lin){INF_LIN_FP4, n, k, DATA(w), s ? s->data : NULL};
}
static void bind_bf16(struct binder *b, struct inf_lin *l, int n, int k, const char *p)
{
    const struct inf_tensor *w = get(b, INF_DT_BF16, (long long)n * k, "%s.weight", p);
    *l = (struct inf_lin){INF_LIN_BF16, n, k, DATA(w), NULL};
}
static void bind_expert(struct binder *b, const struct inf_config *c, struct inf_lin *l, int n, int k, const char *p)
{
    if (c->expert_dtype == INF_EXPERT_FP4)
        bind_fp4(b, l, n, k, p);
    else
        bind_fp8(b, l, n, k, INF_LIN_FP8, p);
}

static void bind_layer(struct binder *b, const struct inf_config *c, struct layer_w *L, int i)
{
    char p[64], q[128];
    int D = c->hidden_size, hc = c->hc_mult, mix = (2 + hc) * hc, d = c->head_dim;
    int mtp = i >= c->num_hidden_layers;
    if (mtp)
        snprintf(p, sizeof p, "mtp.%d", i - c->num_hidden_layers);
    else
        snprintf(p, sizeof p, "layers.%d", i);
    L->idx = i;
    L->ratio = c->compress_ratios[i];
    L->hash = inf_config_is_hash_layer(c, i);
    static const char *site[2] = {"attn", "ffn"};
    for (int s = 0; s < 2; s++) {
        L->hc_fn[s] = DATA(get(b, INF_DT_F32, (long long)mix * hc * D, "%s.hc_%s_fn", p, site[s]));
        L->hc_base[s] = DATA(get(b, INF_DT_F32, mix, "%s.hc_%s_base", p, site[s]));
        L->hc_scale[s] = DATA(get(b, INF_DT_F32, 3, "%s.hc_%s_scale", p, site[s]));
    }
    L->attn_norm = DATA(get(b, INF_DT_BF16, D, "%s.attn_norm.weight", p));
    L->ffn_norm = DATA(get(b, INF_DT_BF16, D, "%s.ffn_norm.weight", p));
    L->sink = DATA(get(b, INF_DT_F32, c->num_attention_heads, "%s.attn.attn_sink", p));
    snprintf(q, sizeof q, "%s.attn.wq_a", p);
    bind_fp8(b, &L->wq_a, c->q_lora_rank, D, INF_LIN_FP8, q);
    snprintf(q, sizeof q, "%s.attn.wq_b", p);
    bind_fp8(b, &L->wq_b, c->num_attention_heads * d, c->q_lora_rank, INF_LIN_FP8, q);
    snprintf(q, sizeof q, "%s.attn.wkv", p);
    bind_fp8(b, &L->wkv, d, D, INF_LIN_FP8, q);
    snprintf(q, sizeof q, "%s.attn.wo_a", p);
    bind_fp8(b, &L->wo_a, c->o_groups * c->o_lora_rank, c->num_attention_heads * d / c->o_groups, INF_LIN_FP8_DQ, q);
    snprintf(q, sizeof q, "%s.attn.wo_b", p);
    bind_fp8(b, &L->wo_b, D, c->o_groups * c->o_lora_rank, INF_LIN_FP8, q);
    L->q_norm = DATA(get(b, INF_DT_BF16, c->q_lora_rank, "%s.attn.q_norm.weight", p));
    L->kv_norm = DATA(get(b, INF_DT_BF16, d, "%s.attn.kv_norm.weight", p));
    if (L->ratio) {
        int coff = L->ratio == 4 ? 2 : 1;
        snprintf(q, sizeof q, "%s.attn.compressor.wkv", p);
        bind_bf16(b, &L->c_wkv, coff * d, D, q);
        snprintf(q, sizeof q, "%s.attn.compressor.wgate", p);
        bind_bf16(b, &L->c_wgate, coff * d, D, q);
        L->c_ape = DATA(get(b, INF_DT_F32, (long long)L->ratio * coff * d, "%s.attn.compressor.ape", p));
        L->c_norm = DATA(get(b, INF_DT_BF16, d, "%s.attn.compressor.norm.weight", p));
        if (L->ratio == 4) {
            int di = c->index_head_dim, hi = c->index_n_heads;
            snprintf(q, sizeof q, "%s.attn.indexer.wq_b", p);
            bind_fp8(b, &L->i_wq_b, hi * di, c->q_lora_rank, INF_LIN_FP8, q);
            snprintf(q, sizeof q, "%s.attn.indexer.weights_proj", p);
            bind_bf16(b, &L->i_wproj, hi, D, q);
            snprintf(q, sizeof q, "%s.attn.indexer.compressor.wkv", p);
            bind_bf16(b, &L->ic_wkv, 2 * di, D, q);
            snprintf(q, sizeof q, "%s.attn.indexer.compressor.wgate", p);
            bind_bf16(b, &L->ic_wgate, 2 * di, D, q);
            L->ic_ape = DATA(get(b, INF_DT_F32, 4LL * 2 * di, "%s.attn.indexer.compressor.ape", p));
            L->ic_norm = DATA(get(b, INF_DT_BF16, di, "%s.attn.indexer.compressor.norm.weight", p));
        }
    }
    int E = c->n_routed_experts, I = c->moe_intermediate_size;
    snprintf(q, sizeof q, "%s.ffn.gate", p);
    bind_bf16(b, &L->gate, E, D, q);
    if (L->hash)
        L->tid2eid = DATA(get(b, INF_DT_I64, (long long)c->vocab_size * c->num_experts_per_tok, "%s.ffn.gate.tid2eid", p));
    else
        L->gate_bias = DATA(get(b, INF_DT_F32, E, "%s.ffn.gate.bias", p));
    L->w1 = calloc((size_t)E, sizeof *L->w1);
    L->w2 = calloc((size_t)E, sizeof *L->w2);
    L->w3 = calloc((size_t)E, sizeof *L->w3);
    if (!L->w1 || !L->w2 || !L->w3) {
        if (!b->rc)
            b->rc = ctx_err_set(b->e, CTX_ENOMEM, "model: out of memory");
        return;
    }
    for (int x = 0; x < E; x++) {
        snprintf(q, sizeof q, "%s.ffn.experts.%d.w1", p, x);
        bind_expert(b, c, &L->w1[x], I, D, q);
        snprintf(q, sizeof q, "%s.ffn.experts.%d.w2", p, x);
        bind_expert(b, c, &L->w2[x], D, I, q);
        snprintf(q, sizeof q, "%s.ffn.experts.%d.w3", p, x);
        bind_expert(b, c, &L->w3[x], I, D, q);
    }
    int SI = I * c->n_shared_experts;
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w1", p);
    bind_fp8(b, &L->sw1, SI, D, INF_LIN_FP8, q);
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w2", p);
    bind_fp8(b, &L->sw2, D, SI, INF_LIN_FP8, q);
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w3", p);
    bind_fp8(b, &L->sw3, SI, D, INF_LIN_FP8, q);
    if (L->ratio)
        inf_cpu_rope_init(&L->rope, c->qk_rope_head_dim, c->compress_rope_theta, 1, c->rope_factor,
                          c->original_max_position_embeddings, c->beta_fast, c->beta_slow);
    else
        inf_cpu_rope_init(&L->rope, c->qk_rope_head_dim, c->rope_theta, 0, 1, 0, 0, 0);
    if (mtp) {
        snprintf(q, sizeof q, "%s.e_proj", p);
        bind_fp8(b, &L->e_proj, D, D, INF_LIN_FP8, q);
        snprintf(q, sizeof q, "%s.h_proj", p);
        bind_fp8(b, &L->h_proj, D, D, INF_LIN_FP8, q);
        L->enorm = DATA(get(b, INF_DT_BF16, D, "%s.enorm.weight", p));
        L->hnorm = DATA(get(b, INF_DT_BF16, D, "%s.hnorm.weight", p));
        L->norm = DATA(get(b, INF_DT_BF16, D, "%s.norm.weight", p));
        L->hch_fn = DATA(get(b, INF_DT_F32, (long long)hc * hc * D, "%s.hc_head_fn", p));
        L->hch_base = DATA(get(b, INF_DT_F32, hc, "%s.hc_head_base", p));
        L->hch_scale = DATA(get(b, INF_DT_F32, 1, "%s.hc_head_scale", p));
    }
}

int inf_model_new(const struct inf_weights *w, struct inf_backend *backend, int nthreads, struct inf_model **out,
                  struct ctx_err *e)
{
    *out = NULL;
    struct inf_model *m = calloc(1, sizeof *m);
    if (!m)
        return ctx_err_set(e, CTX_ENOMEM, "model: out of memory");
    m->c = *inf_weights_config(w);
    m->w = w;
    const struct inf_config *c = &m->c;
    if (c->head_dim > 1024 || c->o_groups > 64 || c->o_groups < 1 || c->qk_rope_head_dim > 128 || c->index_head_dim > 1024 || c->hc_mult > 16 ||
        c->head_dim % 64 || (c->index_head_dim & (c->index_head_dim - 1)) || c->index_head_dim % 32 ||
        c->hidden_size % 128 || c->q_lora_rank % 128 || c->moe_intermediate_size % 128) {
        free(m);
        return ctx_err_set(e, CTX_EUNSUPPORTED, "model: config shape outside what the forward pass supports");
    }
    m->nl = c->num_hidden_layers + inf_weights_mtp_layers(w); /* MTP tensors are optional */
    m->L = calloc((size_t)m->nl, sizeof *m->L);
    struct binder b = {w, e, m->L ? 0 : ctx_err_set(e, CTX_ENOMEM, "model: out of memory")};
    int D = c->hidden_size, hc = c->hc_mult;
    m->embed = DATA(get(&b, INF_DT_BF16, (long long)c->vocab_size * D, "embed.weight"));
    m->norm = DATA(get(&b, INF_DT_BF16, D, "norm.weight"));
    bind_bf16(&b, &m->head, c->vocab_size, D, "head");
    m->hch_fn = DATA(get(&b, INF_DT_F32, (long long)hc * hc * D, "hc_head_fn"));
    m->hch_base = DATA(get(&b, INF_DT_F32, hc, "hc_head_base"));
    m->hch_scale = DATA(get(&b, INF_DT_F32, 1, "hc_head_scale"));
    for (int i = 0; i < m->nl && !b.rc; i++)
        bind_layer(&b, c, &m->L[i], i);
    if (!b.rc) {
        m->be = backend ? backend : inf_cpu_backend_new(nthreads);
        if (!m->be)
            b.rc = ctx_err_set(e, CTX_ENOMEM, "model: cannot start the CPU backend");
    }
    if (b.rc) {
        if (backend)
            m->be = NULL; /* not ours to destroy on failure */
        inf_model_free(m);
        return b.rc;
    }
    *out = m;
    return 0;
}

void inf_model_free(struct inf_model *m)
{
    if (!m)
        return;
    for (int i = 0; m->L && i < m->nl; i++) {
        free(m->L[i].w1);
        free(m->L[i].w2);
        free(m->L[i].w3);
    }
    free(m->L);
    if (m->be)
        m->be->destroy(m->be);
    free(m);
}

const struct inf_config *inf_model_config(const struct inf_model *m) { return &m->c; }
struct inf_backend *inf_model_backend(struct inf_model *m) { return m->be; }

static void lin(struct inf_model *m, const struct inf_lin *w, const float *x, int S, float *y, enum inf_lin_out o)
{
    m->be->linear(m->be, w, x, S, y, o);
}

/* Optional wall-time accounting by stage (CTX_ENGINE_PROFILE set), for bench/engine. */
static double prof_t[INF_PROF_N];
static int prof_on = -1;
static double pnow(void)
{
    if (prof_on < 0)
        prof_on = getenv("CTX_ENGINE_PROFILE") != NULL;
    if (!prof_on)
        return 0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
void inf_model_prof_get(double out[INF_PROF_N], int reset)
{
    memcpy(out, prof_t, sizeof prof_t);
    if (reset)
        memset(prof_t, 0, sizeof prof_t);
}

static void lin_batch(struct inf_model *m, const struct inf_lin_call *c, int n)
{
    m->be->linear_batch(m->be, c, n);
}

/* ---- compressors (spec §4.5, §4.6) ---- */

/* Feed one token's projections (kv, score without ape) at position p into a compressor with carry
 * rows ckv/csc; when its block completes, write the pooled, normalised, rotated and quantised
 * entry into entry[width] and return 1. */
static int compress_token(const struct layer_w *L, int ratio, int width, const float *kv, const float *sc,
                          const float *ape, const uint16_t *normw, float eps, int indexer, float *ckv, float *csc,
                          long long p, float *entry)
{
    int overlap = ratio == 4, coff = overlap ? 2 : 1, rw = coff * width;
    int slot = (overlap ? ratio : 0) + (int)(p % ratio);
    const float *ap = ape + (size_t)(p % ratio) * rw;
    for (int i = 0; i < rw; i++) {
        ckv[(size_t)slot * rw + i] = kv[i];
        csc[(size_t)slot * rw + i] = sc[i] + ap[i];
    }
    if ((p + 1) % ratio)
        return 0;
    int ns = coff * ratio;
    for (int ch = 0; ch < width; ch++) {
        /* slots 0..ratio-1: the previous block's first halves (overlap) or the block itself;
         * slots ratio..2*ratio-1 (overlap): the current block's second halves */
        float mx = -INFINITY, sum = 0.f, acc = 0.f;
        for (int s = 0; s < ns; s++) {
            int off = overlap && s >= ratio ? width : 0;
            mx = fmaxf(mx, csc[(size_t)s * rw + off + ch]);
        }
        float wts[256];
        for (int s = 0; s < ns; s++) {
            int off = overlap && s >= ratio ? width : 0;
            wts[s] = expf(csc[(size_t)s * rw + off + ch] - mx);
            sum += wts[s];
        }
        for (int s = 0; s < ns; s++) {
            int off = overlap && s >= ratio ? width : 0;
            acc += ckv[(size_t)s * rw + off + ch] * (wts[s] / sum);
        }
        entry[ch] = bf16r(acc);
    }
    if (overlap) { /* the current block becomes the overlap carry */
        memcpy(ckv, ckv + (size_t)ratio * rw, sizeof(float) * (size_t)ratio * rw);
        memcpy(csc, csc + (size_t)ratio * rw, sizeof(float) * (size_t)ratio * rw);
    }
    inf_cpu_rmsnorm(entry, normw, width, eps, entry);
    int rd = L->rope.rd;
    inf_cpu_rope(&L->rope, entry + width - rd, p + 1 - ratio, 0);
    if (indexer) {
        inf_cpu_hadamard(entry, width);
        inf_cpu_fp4_qdq(entry, width, 32);
    } else {
        inf_cpu_fp8_qdq(entry, width - rd, 64);
    }
    return 1;
}

/* ---- attention (spec §4.4) ---- */

struct attn_job {
    struct inf_model *m;
    const struct layer_w *L;
    struct inf_layer_state *ls;
    int S, H, d, W;
    long long pos0;
    const float *Q, *kv;     /* [S][H][d], [S][d] */
    const int *sel;          /* CSA: [S][K] selected entries (-1 = none) */
    int K;
    float *O;                /* [S][H][d] */
    const float **lists;     /* per thread: cap entries */
    size_t cap;
    const float *cs;         /* [S][rd] RoPE (cos, sin) of each position */
};

/* The entry list of query s in the reference's decode layout: the window (chronological, padded
 * to W columns), then the compressed entries (CSA: indexer order; HCA: ascending). */
static int attn_list(struct attn_job *j, int s, const float **list)
{
    long long p = j->pos0 + s;
    int n = 0, W = j->W, d = j->d;
    long long first = p - W + 1 < 0 ? 0 : p - W + 1;
    for (long long q = first; q <= p; q++)
        list[n++] = q >= j->pos0 ? j->kv + (size_t)(q - j->pos0) * d : j->ls->ring + (size_t)(q % W) * d;
    while (n < W)
        list[n++] = NULL;
    if (j->L->ratio == 4) {
        for (int i = 0; i < j->K; i++) {
            int e = j->sel[(size_t)s * j->K + i];
            list[n++] = e >= 0 ? j->ls->cache + (size_t)e * d : NULL;
        }
    } else if (j->L->ratio) {
        long long nv = (p + 1) / j->L->ratio;
        for (long long e = 0; e < nv; e++)
            list[n++] = j->ls->cache + (size_t)e * d;
    }
    return n;
}

static void attn_task(void *ud, size_t t, int tid)
{
    struct attn_job *j = ud;
    int s = (int)(t / (size_t)j->H), h = (int)(t % (size_t)j->H);
    long long p = j->pos0 + s;
    const float **list = j->lists + (size_t)tid * j->cap;
    int n = attn_list(j, s, list);
    float *o = j->O + ((size_t)s * j->H + h) * j->d;
    j->m->be->sparse_attn(j->m->be, j->Q + ((size_t)s * j->H + h) * j->d, 1, j->d, list, n, j->L->sink + h,
                          1.0f / sqrtf((float)j->d), o);
    inf_cpu_rope_apply(j->cs + (size_t)s * j->L->rope.rd, j->L->rope.rd, o + j->d - j->L->rope.rd, 1);
    (void)p;
}

struct idx_job {
    const struct inf_config *c;
    const float *qI, *wts;   /* [S][Hi][di], [S][Hi] */
    const float *keys;       /* [n][di] */
    long long pos0;
    int S, K;
    int *sel;                /* [S][K] */
    float *scores;           /* per thread: cap entries */
    size_t cap;
};

static void idx_task(void *ud, size_t t, int tid)
{
    struct idx_job *j = ud;
    int s = (int)t, Hi = j->c->index_n_heads, di = j->c->index_head_dim;
    long long p = j->pos0 + s, nv = (p + 1) / 4;
    int k = nv < j->K ? (int)nv : j->K;
    float *score = j->scores + (size_t)tid * j->cap;
    const float *q = j->qI + (size_t)s * Hi * di, *w = j->wts + (size_t)s * Hi;
    for (long long e = 0; e < nv; e++) {
        const float *key = j->keys + (size_t)e * di;
        float sum = 0.f;
        for (int h = 0; h < Hi; h++) {
            float dot = bf16r(inf_cpu_dot(q + (size_t)h * di, key, di));
            if (dot < 0.f)
                dot = 0.f;
            sum += bf16r(dot * w[h]);
        }
        score[e] = bf16r(sum);
    }
    int *out = j->sel + (size_t)s * j->K;
    inf_cpu_topk(score, (int)nv, k, out);
    for (int i = k; i < j->K; i++)
        out[i] = -1;
}

int inf_model_attention(struct inf_model *m, struct inf_state *st, int layer, const float *a, int S,
                        long long pos0, float *out, struct ctx_err *e)
{
    const struct inf_config *c = &m->c;
    const struct layer_w *L = &m->L[layer];
    struct inf_layer_state *ls = &st->layers[layer];
    int H = c->num_attention_heads, d = c->head_dim, rd = c->qk_rope_head_dim, Lq = c->q_lora_rank;
    int W = c->sliding_window, G = c->o_groups, R = c->o_lora_rank, D = c->hidden_size;
    float eps = (float)c->rms_norm_eps;
    int rc = 0;
    float *cq = malloc(sizeof(float) * (size_t)S * Lq);
    float *Q = malloc(sizeof(float) * (size_t)S * H * d);
    float *kv = malloc(sizeof(float) * (size_t)S * d);
    float *O = malloc(sizeof(float) * (size_t)S * H * d);
    float *Z = malloc(sizeof(float) * (size_t)S * G * R);
    float *tmp = NULL, *tmp2 = NULL, *qI = NULL, *wts = NULL;
    int *sel = NULL;
    float *cs = malloc(sizeof(float) * (size_t)S * rd);
    if (!cq || !Q || !kv || !O || !Z || !cs) {
        rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
        goto done;
    }
    for (int s = 0; s < S; s++) /* one RoPE table per position, shared by every head */
        inf_cpu_rope_table(&L->rope, pos0 + s, cs + (size_t)s * rd);
    /* every product of the normalised input at once: queries, window kv, compressor projections
     * (fp32), indexer head weights */
    int coff = L->ratio == 4 ? 2 : 1, Hi = c->index_n_heads, di = c->index_head_dim;
    float *ctmp = NULL, *ctmp2 = NULL, *itmp = NULL, *itmp2 = NULL;
    if (L->ratio) {
        ctmp = malloc(sizeof(float) * (size_t)S * coff * d);
        ctmp2 = malloc(sizeof(float) * (size_t)S * coff * d);
        if (L->ratio == 4) {
            itmp = malloc(sizeof(float) * (size_t)S * 2 * di);
            itmp2 = malloc(sizeof(float) * (size_t)S * 2 * di);
            wts = malloc(sizeof(float) * (size_t)S * Hi);
        }
        if (!ctmp || !ctmp2 || (L->ratio == 4 && (!itmp || !itmp2 || !wts))) {
            free(ctmp);
            free(ctmp2);
            free(itmp);
            free(itmp2);
            rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
            goto done;
        }
    }
    {
        struct inf_lin_call calls[7] = {{&L->wq_a, a, S, cq, INF_OUT_BF16}, {&L->wkv, a, S, kv, INF_OUT_BF16}};
        int nc = 2;
        if (L->ratio) {
            calls[nc++] = (struct inf_lin_call){&L->c_wkv, a, S, ctmp, INF_OUT_F32};
            calls[nc++] = (struct inf_lin_call){&L->c_wgate, a, S, ctmp2, INF_OUT_F32};
        }
        if (L->ratio == 4) {
            calls[nc++] = (struct inf_lin_call){&L->ic_wkv, a, S, itmp, INF_OUT_F32};
            calls[nc++] = (struct inf_lin_call){&L->ic_wgate, a, S, itmp2, INF_OUT_F32};
            calls[nc++] = (struct inf_lin_call){&L->i_wproj, a, S, wts, INF_OUT_BF16};
        }
        lin_batch(m, calls, nc);
    }
    tmp = ctmp;
    tmp2 = ctmp2;
    for (int s = 0; s < S; s++)
        inf_cpu_rmsnorm(cq + (size_t)s * Lq, L->q_norm, Lq, eps, cq + (size_t)s * Lq);
    if (L->ratio == 4) {
        qI = malloc(sizeof(float) * (size_t)S * Hi * di);
        if (!qI) {
            free(itmp);
            free(itmp2);
            rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
            goto done;
        }
        struct inf_lin_call calls[2] = {{&L->wq_b, cq, S, Q, INF_OUT_BF16}, {&L->i_wq_b, cq, S, qI, INF_OUT_BF16}};
        lin_batch(m, calls, 2);
    } else {
        lin(m, &L->wq_b, cq, S, Q, INF_OUT_BF16);
    }
    for (int s = 0; s < S; s++)
        for (int h = 0; h < H; h++) {
            float *qh = Q + ((size_t)s * H + h) * d, sum = 0.f;
            /* q * rsqrt(mean(q^2) + eps) evaluated in bf16 arithmetic, as the reference does */
            for (int i = 0; i < d; i++)
                sum += bf16r(qh[i] * qh[i]);
            float ms = bf16r(sum / (float)d);
            float r = bf16r(1.0f / sqrtf(bf16r(ms + eps)));
            for (int i = 0; i < d; i++)
                qh[i] = bf16r(qh[i] * r);
            inf_cpu_rope_apply(cs + (size_t)s * rd, rd, qh + d - rd, 0);
        }
    /* the window kv of each token */
    for (int s = 0; s < S; s++) {
        float *k = kv + (size_t)s * d;
        inf_cpu_rmsnorm(k, L->kv_norm, d, eps, k);
        inf_cpu_rope_apply(cs + (size_t)s * rd, rd, k + d - rd, 0);
        inf_cpu_fp8_qdq(k, d - rd, 64);
    }
    int K = 0;
    if (L->ratio) {
        long long ncomp = (pos0 + S) / L->ratio - pos0 / L->ratio;
        if ((rc = inf_state_reserve(st, layer, ncomp, e))) {
            free(itmp);
            free(itmp2);
            goto done;
        }
        /* the compressors pool the fp32 projections block by block */
        for (int s = 0; s < S; s++)
            if (compress_token(L, L->ratio, d, tmp + (size_t)s * coff * d, tmp2 + (size_t)s * coff * d, L->c_ape,
                               L->c_norm, eps, 0, ls->c_kv, ls->c_sc, pos0 + s, ls->cache + (size_t)ls->n_cache * d))
                ls->n_cache++;
        if (L->ratio == 4) {
            long long nidx = ls->n_cache - ncomp; /* indexer keys trail the main entries by this chunk */
            for (int s = 0; s < S; s++)
                if (compress_token(L, 4, di, itmp + (size_t)s * 2 * di, itmp2 + (size_t)s * 2 * di, L->ic_ape,
                                   L->ic_norm, eps, 1, ls->ic_kv, ls->ic_sc, pos0 + s,
                                   ls->icache + (size_t)nidx * di))
                    nidx++;
            free(itmp);
            free(itmp2);
            itmp = itmp2 = NULL;
            /* indexer queries and head weights */
            K = c->index_topk;
            sel = malloc(sizeof(int) * (size_t)S * K);
            if (!sel) {
                rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
                goto done;
            }
            for (int s = 0; s < S; s++)
                for (int h = 0; h < Hi; h++) {
                    float *qh = qI + ((size_t)s * Hi + h) * di;
                    inf_cpu_rope_apply(cs + (size_t)s * rd, rd, qh + di - rd, 0);
                    inf_cpu_hadamard(qh, di);
                    inf_cpu_fp4_qdq(qh, di, 32);
                }
            float wscale = (float)(pow((double)di, -0.5) * pow((double)Hi, -0.5));
            for (size_t i = 0; i < (size_t)S * Hi; i++)
                wts[i] = bf16r(wts[i] * wscale);
            size_t icap = (size_t)((pos0 + S) / 4) + 1;
            struct idx_job ij = {c, qI, wts, ls->icache, pos0, S, K, sel,
                                 malloc(sizeof(float) * icap * (size_t)m->be->nthreads), icap};
            if (!ij.scores) {
                rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
                goto done;
            }
            m->be->parallel_for(m->be, (size_t)S, idx_task, &ij);
            free(ij.scores);
        }
    }
    /* core attention, then the inverse rotation of the output's rope slice */
    size_t acap = (size_t)W + (size_t)(L->ratio == 4 ? K : L->ratio ? (pos0 + S) / L->ratio : 0) + 1;
    struct attn_job aj = {m, L, ls, S, H, d, W, pos0, Q, kv, sel, K, O,
                          malloc(sizeof(float *) * acap * (size_t)m->be->nthreads), acap, cs};
    if (!aj.lists) {
        rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
        goto done;
    }
    m->be->parallel_for(m->be, (size_t)S * H, attn_task, &aj);
    free(aj.lists);
    /* the window ring keeps the last W kv entries */
    for (int s = S - W < 0 ? 0 : S - W; s < S; s++)
        memcpy(ls->ring + (size_t)((pos0 + s) % W) * d, kv + (size_t)s * d, sizeof(float) * (size_t)d);
    /* grouped output projection: wo_a per group in bf16 (fp32 sums), then wo_b in FP8 */
    {
        int gd = H * d / G;
        float *og = malloc(sizeof(float) * (size_t)S * H * d), *zg = malloc(sizeof(float) * (size_t)S * G * R);
        if (!og || !zg) {
            free(og);
            free(zg);
            rc = ctx_err_set(e, CTX_ENOMEM, "attention: out of memory");
            goto done;
        }
        struct inf_lin wg[64];
        struct inf_lin_call calls[64];
        for (int g = 0; g < G; g++) {
            wg[g] = L->wo_a;
            wg[g].n = R;
            wg[g].w = (const uint8_t *)L->wo_a.w + (size_t)g * R * gd;
            wg[g].scale = L->wo_a.scale + (size_t)(g * R / 128) * ((gd + 127) / 128);
            for (int s = 0; s < S; s++)
                memcpy(og + ((size_t)g * S + s) * gd, O + (size_t)s * H * d + (size_t)g * gd, sizeof(float) * (size_t)gd);
            calls[g] = (struct inf_lin_call){&wg[g], og + (size_t)g * S * gd, S, zg + (size_t)g * S * R, INF_OUT_BF16};
        }
        lin_batch(m, calls, G);
        for (int g = 0; g < G; g++)
            for (int s = 0; s < S; s++)
                memcpy(Z + (size_t)s * G * R + (size_t)g * R, zg + ((size_t)g * S + s) * R, sizeof(float) * (size_t)R);
        free(og);
        free(zg);
        lin(m, &L->wo_b, Z, S, out, INF_OUT_BF16);
        (void)D;
    }
done:
    free(cs);
    free(cq);
    free(Q);
    free(kv);
    free(O);
    free(Z);
    free(tmp);
    free(tmp2);
    free(qI);
    free(wts);
    free(sel);
    return rc;
}

/* ---- MoE (spec §4.7) ---- */

static float softplusf_(float x) { return x > 20.f ? x : log1pf(expf(x)); }

/* The clamped SwiGLU between w1/w3 and w2: g = bf16(weight * silu(min(g, lim)) * clamp(u, +-lim)). */
static void swiglu(float *g, const float *u, int rows, int I, const float *weights, float lim)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i++) {
            float gv = g[(size_t)r * I + i], uv = u[(size_t)r * I + i];
            if (lim > 0) {
                uv = uv < -lim ? -lim : uv > lim ? lim : uv;
                gv = gv > lim ? lim : gv;
            }
            float v = gv / (1.0f + expf(-gv)) * uv;
            if (weights)
                v = weights[r] * v;
            g[(size_t)r * I + i] = bf16r(v);
        }
}

int inf_model_moe(struct inf_model *m, int layer, const float *a, const int *tokens, int S, float *out,
                  struct ctx_err *e)
{
    const struct inf_config *c = &m->c;
    const struct layer_w *L = &m->L[layer];
    int E = c->n_routed_experts, k = c->num_experts_per_tok, D = c->hidden_size, I = c->moe_intermediate_size;
    int SI = I * c->n_shared_experts, rc = 0;
    size_t R = (size_t)S * k; /* routed rows */
    float lim = (float)c->swiglu_limit;
    float *logit = malloc(sizeof(float) * (size_t)(S + 1) * E), *rw = malloc(sizeof(float) * R);
    int *ri = malloc(sizeof(int) * R), *rows = malloc(sizeof(int) * R), *off = malloc(sizeof(int) * (size_t)(E + 1));
    float *acc = calloc((size_t)S * D, sizeof(float)), *xs = malloc(sizeof(float) * R * D);
    float *ys = malloc(sizeof(float) * R * D), *ws = malloc(sizeof(float) * R);
    float *g = malloc(sizeof(float) * R * I), *u = malloc(sizeof(float) * R * I);
    float *sg = malloc(sizeof(float) * (size_t)S * SI), *su = malloc(sizeof(float) * (size_t)S * SI);
    float *sy = malloc(sizeof(float) * (size_t)S * D);
    struct inf_lin_call *calls = malloc(sizeof *calls * (size_t)(2 * E + 2));
    if (!logit || !rw || !ri || !rows || !off || !acc || !xs || !ys || !ws || !g || !u || !sg || !su || !sy || !calls) {
        rc = ctx_err_set(e, CTX_ENOMEM, "moe: out of memory");
        goto done;
    }
    lin(m, &L->gate, a, S, logit, INF_OUT_F32);
    for (int s = 0; s < S; s++) {
        float *sc = logit + (size_t)s * E;
        for (int x = 0; x < E; x++) {
            float v = sc[x];
            sc[x] = c->scoring_func == INF_SCORE_SOFTMAX ? v
                  : c->scoring_func == INF_SCORE_SIGMOID ? 1.0f / (1.0f + expf(-v))
                                                         : sqrtf(softplusf_(v));
        }
        if (c->scoring_func == INF_SCORE_SOFTMAX) {
            float mx = -INFINITY, sum = 0.f;
            for (int x = 0; x < E; x++)
                mx = fmaxf(mx, sc[x]);
            for (int x = 0; x < E; x++)
                sum += (sc[x] = expf(sc[x] - mx));
            for (int x = 0; x < E; x++)
                sc[x] /= sum;
        }
        int *sel = ri + (size_t)s * k;
        if (L->hash) {
            if (tokens[s] < 0 || tokens[s] >= c->vocab_size) {
                rc = ctx_err_set(e, CTX_EINVAL, "moe: token id %d outside the vocabulary", tokens[s]);
                goto done;
            }
            for (int i = 0; i < k; i++) {
                int64_t x = L->tid2eid[(size_t)tokens[s] * k + i];
                if (x < 0 || x >= E) {
                    rc = ctx_err_set(e, CTX_EFORMAT, "moe: layer %d tid2eid[%d] names expert %lld", layer, tokens[s],
                                     (long long)x);
                    goto done;
                }
                sel[i] = (int)x;
            }
        } else {
            float *bs = logit + (size_t)S * E; /* one spare row for the biased scores */
            for (int x = 0; x < E; x++)
                bs[x] = sc[x] + (L->gate_bias ? L->gate_bias[x] : 0.f);
            inf_cpu_topk(bs, E, k, sel);
        }
        float *w = rw + (size_t)s * k, sum = 0.f;
        for (int i = 0; i < k; i++)
            sum += (w[i] = sc[sel[i]]);
        for (int i = 0; i < k; i++) {
            if (c->scoring_func != INF_SCORE_SOFTMAX)
                w[i] /= sum;
            w[i] *= (float)c->routed_scaling_factor;
        }
    }
    /* group the routed rows by expert (ascending id), then run every expert's w1/w3 and the shared
     * expert's in one batch, and every w2 in a second */
    int n = 0, nc = 0;
    for (int x = 0; x < E; x++) {
        off[x] = n;
        for (int s = 0; s < S; s++)
            for (int i = 0; i < k; i++)
                if (ri[(size_t)s * k + i] == x) {
                    rows[n] = s;
                    ws[n] = rw[(size_t)s * k + i];
                    memcpy(xs + (size_t)n * D, a + (size_t)s * D, sizeof(float) * (size_t)D);
                    n++;
                }
    }
    off[E] = n;
    for (int x = 0; x < E; x++) {
        int cnt = off[x + 1] - off[x];
        if (!cnt)
            continue;
        /* an expert with one row reads it in place, so experts of the same token share its quantisation */
        const float *xin = cnt == 1 ? a + (size_t)rows[off[x]] * D : xs + (size_t)off[x] * D;
        calls[nc++] = (struct inf_lin_call){&L->w1[x], xin, cnt, g + (size_t)off[x] * I, INF_OUT_BF16};
        calls[nc++] = (struct inf_lin_call){&L->w3[x], xin, cnt, u + (size_t)off[x] * I, INF_OUT_BF16};
    }
    calls[nc++] = (struct inf_lin_call){&L->sw1, a, S, sg, INF_OUT_BF16};
    calls[nc++] = (struct inf_lin_call){&L->sw3, a, S, su, INF_OUT_BF16};
    lin_batch(m, calls, nc);
    swiglu(g, u, n, I, ws, lim);
    swiglu(sg, su, S, SI, NULL, lim);
    nc = 0;
    for (int x = 0; x < E; x++) {
        int cnt = off[x + 1] - off[x];
        if (cnt)
            calls[nc++] = (struct inf_lin_call){&L->w2[x], g + (size_t)off[x] * I, cnt, ys + (size_t)off[x] * D,
                                                INF_OUT_BF16};
    }
    calls[nc++] = (struct inf_lin_call){&L->sw2, sg, S, sy, INF_OUT_BF16};
    lin_batch(m, calls, nc);
    /* routed outputs summed in fp32 in ascending expert order, then the shared expert, then bf16 */
    for (int r = 0; r < n; r++)
        for (int i = 0; i < D; i++)
            acc[(size_t)rows[r] * D + i] += ys[(size_t)r * D + i];
    for (size_t i = 0; i < (size_t)S * D; i++)
        out[i] = bf16r(acc[i] + sy[i]);
done:
    free(logit);
    free(rw);
    free(ri);
    free(rows);
    free(off);
    free(acc);
    free(xs);
    free(ys);
    free(ws);
    free(g);
    free(u);
    free(sg);
    free(su);
    free(sy);
    free(calls);
    return rc;
}

/* ---- mHC and blocks (spec §4.2) ---- */

/* mixes[nm] = (fn . flatten(X)) * rsqrt(mean(X^2) + eps), all fp32. */
static void hc_mixes(const float *X, int n, const float *fn, int nm, float eps, float *mixes)
{
    float ss = 0.f;
    for (int i = 0; i < n; i++)
        ss += X[i] * X[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int j = 0; j < nm; j++)
        mixes[j] = inf_cpu_dot(fn + (size_t)j * n, X, n) * r;
}

struct hc_job {
    const struct inf_model *m;
    const struct layer_w *L;
    int site;
    const float *X;
    float *u, *post, *comb;
    float *rho, *mixes;  /* [S], [S][nm] */
};

/* mixes[s][j] = (fn_j . flatten(X_s)) * rsqrt(mean(X_s^2) + eps), one task per (token, j) so that a
 * single decode token still spreads over the threads */
static void hc_mix_task(void *ud, size_t t, int tid)
{
    (void)tid;
    struct hc_job *j = ud;
    const struct inf_config *c = &j->m->c;
    int hc = c->hc_mult, D = c->hidden_size, nm = (2 + hc) * hc, n = hc * D;
    size_t s = t / (size_t)nm, r = t % (size_t)nm;
    const float *X = j->X + s * n, *f = j->L->hc_fn[j->site] + r * n;
    j->mixes[t] = inf_cpu_dot(f, X, n) * j->rho[s];
}

static void hc_pre_task(void *ud, size_t t, int tid)
{
    (void)tid;
    struct hc_job *j = ud;
    const struct inf_config *c = &j->m->c;
    int hc = c->hc_mult, D = c->hidden_size, nm = (2 + hc) * hc;
    const float *X = j->X + t * hc * D;
    float pre[16];
    inf_cpu_hc_split_sinkhorn(j->mixes + t * nm, j->L->hc_scale[j->site], j->L->hc_base[j->site], hc,
                              c->hc_sinkhorn_iters, (float)c->hc_eps, pre, j->post + t * hc, j->comb + t * hc * hc);
    float *u = j->u + t * D;
    for (int i = 0; i < D; i++) {
        float acc = 0.f;
        for (int k = 0; k < hc; k++)
            acc += pre[k] * X[(size_t)k * D + i];
        u[i] = bf16r(acc);
    }
}

/* X'_k = post_k f + sum_j comb[j][k] X_j (the mixing applied transposed), fp32 then bf16; each
 * token's hidden dimension is split in HC_POST_SPLIT ranges so that one decode token spreads too. */
#define HC_POST_SPLIT 8
struct hc_post_job {
    int hc, D;
    float *X;
    const float *f, *post, *comb;
};
static void hc_post_task(void *ud, size_t t, int tid)
{
    (void)tid;
    struct hc_post_job *j = ud;
    int hc = j->hc, D = j->D;
    size_t s = t / HC_POST_SPLIT;
    int part = (int)(t % HC_POST_SPLIT), i0 = D * part / HC_POST_SPLIT, i1 = D * (part + 1) / HC_POST_SPLIT;
    float *Xs = j->X + s * hc * D;
    const float *cb = j->comb + s * hc * hc, *ps = j->post + s * hc, *fs = j->f + s * D;
    float nx[16];
    for (int i = i0; i < i1; i++) {
        for (int k = 0; k < hc; k++) {
            float acc = 0.f;
            for (int jj = 0; jj < hc; jj++)
                acc += cb[jj * hc + k] * Xs[(size_t)jj * D + i];
            nx[k] = bf16r(ps[k] * fs[i] + acc);
        }
        for (int k = 0; k < hc; k++)
            Xs[(size_t)k * D + i] = nx[k];
    }
}

static int block_site(struct inf_model *m, struct inf_state *st, int layer, int site, float *X, const int *tokens,
                      int S, long long pos0, struct ctx_err *e)
{
    const struct inf_config *c = &m->c;
    const struct layer_w *L = &m->L[layer];
    int hc = c->hc_mult, D = c->hidden_size, rc;
    float *u = malloc(sizeof(float) * (size_t)S * D), *f = malloc(sizeof(float) * (size_t)S * D);
    float *post = malloc(sizeof(float) * (size_t)S * hc), *comb = malloc(sizeof(float) * (size_t)S * hc * hc);
    if (!u || !f || !post || !comb) {
        rc = ctx_err_set(e, CTX_ENOMEM, "block: out of memory");
        goto done;
    }
    int nm = (2 + hc) * hc;
    float *rho = malloc(sizeof(float) * (size_t)S), *mixes = malloc(sizeof(float) * (size_t)S * nm);
    if (!rho || !mixes) {
        free(rho);
        free(mixes);
        rc = ctx_err_set(e, CTX_ENOMEM, "block: out of memory");
        goto done;
    }
    for (int s = 0; s < S; s++) {
        const float *Xs = X + (size_t)s * hc * D;
        float ss = 0.f;
        for (int i = 0; i < hc * D; i++)
            ss += Xs[i] * Xs[i];
        rho[s] = 1.0f / sqrtf(ss / (float)(hc * D) + (float)c->rms_norm_eps);
    }
    double t0 = pnow();
    struct hc_job j = {m, L, site, X, u, post, comb, rho, mixes};
    m->be->parallel_for(m->be, (size_t)S * nm, hc_mix_task, &j);
    m->be->parallel_for(m->be, (size_t)S, hc_pre_task, &j);
    free(rho);
    free(mixes);
    for (int s = 0; s < S; s++)
        inf_cpu_rmsnorm(u + (size_t)s * D, site ? L->ffn_norm : L->attn_norm, D, (float)c->rms_norm_eps,
                        u + (size_t)s * D);
    double t1 = pnow();
    rc = site ? inf_model_moe(m, layer, u, tokens, S, f, e) : inf_model_attention(m, st, layer, u, S, pos0, f, e);
    if (rc)
        goto done;
    double t2 = pnow();
    struct hc_post_job pj = {hc, D, X, f, post, comb};
    m->be->parallel_for(m->be, (size_t)S * HC_POST_SPLIT, hc_post_task, &pj);
    double t3 = pnow();
    prof_t[INF_PROF_HC] += (t1 - t0) + (t3 - t2);
    prof_t[site ? INF_PROF_MOE : INF_PROF_ATTN] += t2 - t1;
done:
    free(u);
    free(f);
    free(post);
    free(comb);
    return rc;
}

int inf_model_block(struct inf_model *m, struct inf_state *st, int layer, float *X, const int *tokens, int S,
                    long long pos0, struct ctx_err *e)
{
    int rc = block_site(m, st, layer, 0, X, tokens, S, pos0, e);
    return rc ? rc : block_site(m, st, layer, 1, X, tokens, S, pos0, e);
}

/* ---- head (spec §4.8) ---- */

static void hc_head(const struct inf_config *c, const float *X, const float *fn, const float *base,
                    const float *scale, const uint16_t *normw, float *hidden)
{
    int hc = c->hc_mult, D = c->hidden_size;
    float mixes[16];
    hc_mixes(X, hc * D, fn, hc, (float)c->rms_norm_eps, mixes);
    float pre[16];
    for (int k = 0; k < hc; k++)
        pre[k] = 1.0f / (1.0f + expf(-(mixes[k] * scale[0] + base[k]))) + (float)c->hc_eps;
    for (int i = 0; i < D; i++) {
        float acc = 0.f;
        for (int k = 0; k < hc; k++)
            acc += pre[k] * X[(size_t)k * D + i];
        hidden[i] = bf16r(acc);
    }
    inf_cpu_rmsnorm(hidden, normw, D, (float)c->rms_norm_eps, hidden);
}

void inf_model_final_hidden(struct inf_model *m, const float *X, float *hidden)
{
    hc_head(&m->c, X, m->hch_fn, m->hch_base, m->hch_scale, m->norm, hidden);
}

void inf_model_logits(struct inf_model *m, const float *hidden, float *logits)
{
    lin(m, &m->head, hidden, 1, logits, INF_OUT_F32);
}

/* ---- whole model ---- */

static void embed_rows(const struct inf_model *m, const int *tokens, int S, float *X)
{
    int hc = m->c.hc_mult, D = m->c.hidden_size;
    for (int s = 0; s < S; s++)
        for (int k = 0; k < hc; k++)
            for (int i = 0; i < D; i++)
                X[((size_t)s * hc + k) * D + i] = inf_cpu_bf16_load(m->embed[(size_t)tokens[s] * D + i]);
}

void inf_model_set_accel(struct inf_model *m, struct inf_accel *a) { m->accel = a; }
struct inf_accel *inf_model_accel(const struct inf_model *m) { return m->accel; }

int inf_model_forward(struct inf_model *m, struct inf_state *st, const int *tokens, int S,
                      const struct inf_forward_opts *o, struct ctx_err *e)
{
    const struct inf_config *c = &m->c;
    int hc = c->hc_mult, D = c->hidden_size, rc = 0;
    if (S <= 0)
        return ctx_err_set(e, CTX_EINVAL, "forward: empty chunk");
    for (int s = 0; s < S; s++)
        if (tokens[s] < 0 || tokens[s] >= c->vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "forward: token %d at chunk offset %d outside the vocabulary",
                               tokens[s], s);
    if (m->accel && (!o || (!o->hook && !o->streams)))
        return inf_accel_forward(m->accel, st, tokens, S, o ? o->logits : NULL, e);
    if (st->accel && (rc = inf_state_unbind(st, e))) /* the CPU continues from the host copy */
        return rc;
    float *X = malloc(sizeof(float) * (size_t)S * hc * D);
    if (!X)
        return ctx_err_set(e, CTX_ENOMEM, "forward: out of memory");
    embed_rows(m, tokens, S, X);
    for (int l = 0; l < c->num_hidden_layers && !rc; l++) {
        rc = inf_model_block(m, st, l, X, tokens, S, st->pos, e);
        if (!rc && o && o->hook)
            o->hook(o->hook_ud, l, X, S, st->pos);
    }
    if (!rc) {
        if (o && o->streams)
            memcpy(o->streams, X, sizeof(float) * (size_t)S * hc * D);
        if (o && o->logits) {
            float *hidden = malloc(sizeof(float) * (size_t)D);
            if (!hidden) {
                rc = ctx_err_set(e, CTX_ENOMEM, "forward: out of memory");
            } else {
                double t0 = pnow();
                inf_model_final_hidden(m, X + (size_t)(S - 1) * hc * D, hidden);
                inf_model_logits(m, hidden, o->logits);
                prof_t[INF_PROF_HEAD] += pnow() - t0;
                free(hidden);
            }
        }
        if (!rc)
            st->pos += S;
    }
    free(X);
    return rc;
}

int inf_model_mtp_blocks(const struct inf_model *m) { return m->nl - m->c.num_hidden_layers; }

int inf_model_mtp(struct inf_model *m, struct inf_state *st, int k, const float *Xm, const int *next_tokens, int S,
                  float *logits, struct ctx_err *e)
{
    const struct inf_config *c = &m->c;
    if (k < 0 || c->num_hidden_layers + k >= m->nl)
        return ctx_err_set(e, CTX_EINVAL, "mtp: no MTP block %d (the checkpoint has %d)", k,
                           m->nl - c->num_hidden_layers);
    if (S <= 0)
        return ctx_err_set(e, CTX_EINVAL, "mtp: empty chunk");
    for (int s = 0; s < S; s++)
        if (next_tokens[s] < 0 || next_tokens[s] >= c->vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "mtp: token %d outside the vocabulary", next_tokens[s]);
    int layer = c->num_hidden_layers + k, hc = c->hc_mult, D = c->hidden_size, rc = 0;
    const struct layer_w *L = &m->L[layer];
    float eps = (float)c->rms_norm_eps;
    float *E = malloc(sizeof(float) * (size_t)S * D), *ep = malloc(sizeof(float) * (size_t)S * D);
    float *Hs = malloc(sizeof(float) * (size_t)S * hc * D), *hp = malloc(sizeof(float) * (size_t)S * hc * D);
    if (!E || !ep || !Hs || !hp) {
        rc = ctx_err_set(e, CTX_ENOMEM, "mtp: out of memory");
        goto done;
    }
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < D; i++)
            E[(size_t)s * D + i] = inf_cpu_bf16_load(m->embed[(size_t)next_tokens[s] * D + i]);
        inf_cpu_rmsnorm(E + (size_t)s * D, L->enorm, D, eps, E + (size_t)s * D);
    }
    for (int r = 0; r < S * hc; r++)
        inf_cpu_rmsnorm(Xm + (size_t)r * D, L->hnorm, D, eps, Hs + (size_t)r * D);
    lin(m, &L->e_proj, E, S, ep, INF_OUT_BF16);
    lin(m, &L->h_proj, Hs, S * hc, hp, INF_OUT_BF16);
    for (int s = 0; s < S; s++)
        for (int j = 0; j < hc; j++)
            for (int i = 0; i < D; i++)
                hp[((size_t)s * hc + j) * D + i] = bf16r(ep[(size_t)s * D + i] + hp[((size_t)s * hc + j) * D + i]);
    if ((rc = inf_model_block(m, st, layer, hp, next_tokens, S, st->mtp_pos, e)))
        goto done;
    if (logits) {
        hc_head(c, hp + (size_t)(S - 1) * hc * D, L->hch_fn, L->hch_base, L->hch_scale, L->norm, E);
        inf_model_logits(m, E, logits);
    }
    st->mtp_pos += S;
done:
    free(E);
    free(ep);
    free(Hs);
    free(hp);
    return rc;
}
