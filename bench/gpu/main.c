/* bench/gpu: the FP8/FP4 products of kernels/gemm.h at V4 shapes on one GPU, against the floors
 * measured in the same run: device-to-device copy bandwidth (bytes read + written per second) for
 * the bandwidth-bound decode kernels, and a dense cuBLASLt FP8 product (per-tensor scales, fast
 * accumulation) for the prefill GEMMs.
 *
 * Two times per row:
 * - "alone": median of ITERS launches, each between its own pair of events, queued behind a spin
 *   kernel so that they run back to back rather than at the CPU's issue rate. Includes each
 *   launch's start-up and drain, as a lone launch pays them.
 * - "graph": ITERS launches captured in one CUDA graph, median replay time / ITERS: the cost inside
 *   a decode step that runs as a graph (the engine's plan). GB/s and the floor ratio use this one.
 * Decode weights rotate over enough copies (>= 512 MB) that no launch finds its weights in the
 * 60 MB L2; routed experts are 6 random distinct ones of all 256 (384) per launch. GB/s counts the
 * bytes a launch must move: weights + scales + activations read, output written. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "floors.h"
#include "gemm.h"
#include "moe_gemm.h"

#define ITERS 200
#define ROTATE_BYTES ((size_t)512 << 20)

static struct ctx_err err;
static double copy_gbps, fp8_peak;

static void must(int rc)
{
    if (rc) {
        fprintf(stderr, "bench-gpu: %s\n", err.msg);
        exit(1);
    }
}
static void *dalloc(size_t bytes)
{
    void *p;
    must(cuda_malloc(&p, bytes, &err));
    return p;
}

/* Median per-launch time with events ("alone"), in ms. */
static double time_alone(void (*launch)(void *, int), void *ud, int iters)
{
    bench_spin(5.0);
    struct bench_events *ev = bench_events_new(iters);
    for (int i = 0; i < iters; i++) {
        bench_events_record(ev, i);
        launch(ud, i);
    }
    bench_events_record(ev, iters);
    double ms = bench_events_median(ev, NULL);
    bench_events_free(ev);
    must(cuda_sync(&err));
    return ms;
}

/* ---- activation quantisation ---- */
struct quant_job {
    const uint16_t *x;
    int m, k, scale_t;
    uint8_t *q;
    float *sa;
};
static void quant_launch(void *ud, int i)
{
    struct quant_job *j = ud;
    (void)i;
    must(cuda_act_quant(j->x, j->m, j->k, j->q, j->sa, j->scale_t, bench_stream(), &err));
}

/* ---- FP8 decode GEMV ---- */
struct gemv_job {
    const uint8_t *q, *w, *ws;
    const float *sa;
    int m, n, k, copies;
    size_t wbytes, sbytes;
    uint16_t *y;
};
static void gemv_launch(void *ud, int i)
{
    struct gemv_job *j = ud;
    int c = i % j->copies;
    must(cuda_fp8_gemv(j->q, j->sa, j->m, j->w + j->wbytes * c, j->ws + j->sbytes * c, j->n, j->k, j->y,
                       bench_stream(), &err));
}

static void bench_fp8_gemv(const char *name, int n, int k, int m)
{
    struct gemv_job j = {.m = m, .n = n, .k = k};
    j.wbytes = (size_t)n * k, j.sbytes = (size_t)((n + 127) / 128) * (k / 128);
    j.copies = (int)((ROTATE_BYTES + j.wbytes - 1) / j.wbytes);
    if (j.copies < 2)
        j.copies = 2;
    uint8_t *w = dalloc(j.wbytes * j.copies), *ws = dalloc(j.sbytes * j.copies), *q = dalloc((size_t)m * k);
    uint16_t *x = dalloc((size_t)m * k * 2);
    float *sa = dalloc(sizeof(float) * (size_t)m * (k / 128));
    j.w = w, j.ws = ws, j.q = q, j.sa = sa, j.y = dalloc((size_t)m * n * 2);
    bench_fill(w, j.wbytes * j.copies, 11, BENCH_E4M3);
    bench_fill(ws, j.sbytes * j.copies, 12, BENCH_E8M0_W);
    bench_fill(x, (size_t)m * k * 2, 13, BENCH_BF16);
    struct quant_job qj = {x, m, k, 0, q, sa};
    quant_launch(&qj, 0);
    for (int i = 0; i < j.copies; i++)
        gemv_launch(&j, i);
    double alone = time_alone(gemv_launch, &j, ITERS);
    double graph = bench_graph_ms(gemv_launch, &j, ITERS, 10);
    double qgraph = bench_graph_ms(quant_launch, &qj, ITERS, 10);
    must(cuda_sync(&err));
    double bytes = (double)j.wbytes + (double)j.sbytes + (double)m * k + 4.0 * m * (k / 128) + 2.0 * m * n;
    double gbs = bytes / (graph * 1e-3) / 1e9, tf = 2.0 * m * (double)n * k / (graph * 1e-3) / 1e12;
    printf("| fp8_gemv | %-17s | %d | %5d x %5d | %6.2f | %6.2f | %5.0f | %5.2f | %5.1f%% | %5.2f |\n", name, m, n, k,
           alone * 1e3, graph * 1e3, gbs, tf, 100.0 * gbs / copy_gbps, qgraph * 1e3);
    cuda_free(w), cuda_free(ws), cuda_free(q), cuda_free(x), cuda_free(j.y), cuda_free(sa);
}

/* ---- the fused decode GEMV: fp32 input quantised inside, fp32 out (cuda_fp8_gemv_f32) ---- */
struct gemv_f32_job {
    struct gemv_job g;
    struct quant_job qj;
    const float *xf;
    float *yf;
};
static void gemv_f32_launch(void *ud, int i)
{
    struct gemv_f32_job *j = ud;
    int c = i % j->g.copies;
    must(cuda_fp8_gemv_f32(j->xf, j->g.w + j->g.wbytes * c, j->g.ws + j->g.sbytes * c, j->g.n, j->g.k, j->yf, j->g.n,
                           NULL, bench_stream(), &err));
}
/* What it replaces (less the bf16 -> fp32 conversion launch): cuda_act_quant, then cuda_fp8_gemv. */
static void gemv_pair_launch(void *ud, int i)
{
    struct gemv_f32_job *j = ud;
    quant_launch(&j->qj, i);
    gemv_launch(&j->g, i);
}

static void bench_fp8_gemv_f32(const char *name, int n, int k)
{
    struct gemv_f32_job j = {.g = {.m = 1, .n = n, .k = k}};
    j.g.wbytes = (size_t)n * k, j.g.sbytes = (size_t)((n + 127) / 128) * (k / 128);
    j.g.copies = (int)((ROTATE_BYTES + j.g.wbytes - 1) / j.g.wbytes);
    if (j.g.copies < 2)
        j.g.copies = 2;
    uint8_t *w = dalloc(j.g.wbytes * j.g.copies), *ws = dalloc(j.g.sbytes * j.g.copies), *q = dalloc((size_t)k);
    uint16_t *x = dalloc((size_t)k * 2);
    float *sa = dalloc(sizeof(float) * (size_t)(k / 128)), *xf = dalloc(sizeof(float) * (size_t)k);
    j.g.w = w, j.g.ws = ws, j.g.q = q, j.g.sa = sa, j.g.y = dalloc((size_t)n * 2);
    j.xf = xf, j.yf = dalloc(sizeof(float) * (size_t)n);
    bench_fill(w, j.g.wbytes * j.g.copies, 11, BENCH_E4M3);
    bench_fill(ws, j.g.sbytes * j.g.copies, 12, BENCH_E8M0_W);
    float *hx = malloc(sizeof(float) * (size_t)k);
    for (int i = 0; i < k; i++)
        hx[i] = (float)((i * 2654435761u) % 2001u) / 1000.0f - 1.0f;
    must(cuda_h2d(xf, hx, sizeof(float) * (size_t)k, &err));
    free(hx);
    j.qj = (struct quant_job){x, 1, k, 0, q, sa};
    bench_fill(x, (size_t)k * 2, 13, BENCH_BF16);
    for (int i = 0; i < j.g.copies; i++)
        gemv_f32_launch(&j, i);
    double alone = time_alone(gemv_f32_launch, &j, ITERS);
    double graph = bench_graph_ms(gemv_f32_launch, &j, ITERS, 10);
    double pair = bench_graph_ms(gemv_pair_launch, &j, ITERS, 10);
    must(cuda_sync(&err));
    double bytes = (double)j.g.wbytes + (double)j.g.sbytes + 4.0 * k + 4.0 * n;
    double gbs = bytes / (graph * 1e-3) / 1e9;
    printf("| fp8_gemv_f32 | %-17s | 1 | %5d x %5d | %6.2f | %6.2f | %5.0f | %5.1f%% | %6.2f |\n", name, n, k,
           alone * 1e3, graph * 1e3, gbs, 100.0 * gbs / copy_gbps, pair * 1e3);
    cuda_free(w), cuda_free(ws), cuda_free(q), cuda_free(x), cuda_free(j.g.y), cuda_free(sa), cuda_free(xf);
    cuda_free(j.yf);
}

/* ---- FP4 routed experts, decode ----
 *
 * Each row times both kernels of cuda_fp4_gemv_grouped_variant on the same inputs and id lists (V1
 * the first, V2 the default; gemm.h), and says whether their outputs are byte-equal (they need not be:
 * V1 is within the bound, V2 is bf16 of the reference exactly). */
struct fp4_job {
    const uint8_t *q;
    const float *sa;
    int xg, npairs, n, k, variant;
    const int *ids;
    const uint8_t *const *wt, *const *st;
    uint16_t *y;
};
static void fp4_launch(void *ud, int i)
{
    struct fp4_job *j = ud;
    must(cuda_fp4_gemv_grouped_variant(j->q, j->sa, j->xg, j->npairs, j->ids + j->npairs * (i % ITERS), j->wt, j->st,
                                       j->n, j->k, j->y, j->variant, bench_stream(), &err));
}

/* npairs pairs of experts picked from `experts` (distinct within each group of xg pairs, which share
 * one activation row: the engine's w1|w3 call is 12 pairs with xg = 6 on two rows; w2 is xg = 1).
 * Variants 0 .. nvar - 1 (2: V1 and V2; CUDA_FP4_GEMV_NVARIANTS: also each fixed V2 configuration). */
static void bench_fp4(const char *name, int n, int k, int experts, int npairs, int xg, int nvar)
{
    size_t wbytes = (size_t)n * k / 2, sbytes = (size_t)n * k / 32;
    uint8_t *w = dalloc(wbytes * experts), *s = dalloc(sbytes * experts);
    bench_fill(w, wbytes * experts, 21, BENCH_BYTES);
    bench_fill(s, sbytes * experts, 22, BENCH_E8M0_FP4);
    const uint8_t **wt = malloc(sizeof *wt * experts), **st = malloc(sizeof *st * experts);
    for (int i = 0; i < experts; i++)
        wt[i] = w + wbytes * i, st[i] = s + sbytes * i;
    void *dwt = dalloc(sizeof *wt * experts), *dst = dalloc(sizeof *st * experts);
    must(cuda_h2d(dwt, wt, sizeof *wt * experts, &err));
    must(cuda_h2d(dst, st, sizeof *st * experts, &err));
    int *ids = malloc(sizeof *ids * npairs * ITERS);
    uint64_t r = 88172645463325252ull;
    for (int i = 0; i < ITERS; i++)
        for (int jj = 0; jj < npairs; jj++) {
            int id, dup;
            do {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                id = (int)(r % (uint64_t)experts);
                dup = 0;
                for (int u = jj - jj % xg; u < jj; u++)
                    dup |= ids[i * npairs + u] == id;
            } while (dup);
            ids[i * npairs + jj] = id;
        }
    int *dids = dalloc(sizeof *ids * npairs * ITERS);
    must(cuda_h2d(dids, ids, sizeof *ids * npairs * ITERS, &err));
    int rows = (npairs + xg - 1) / xg;
    uint16_t *x = dalloc((size_t)rows * k * 2);
    struct fp4_job j = {.xg = xg, .npairs = npairs, .n = n, .k = k, .ids = dids};
    j.wt = dwt, j.st = dst;
    j.y = dalloc((size_t)npairs * n * 2);
    uint8_t *q = dalloc((size_t)rows * k);
    float *sa = dalloc(sizeof(float) * (size_t)rows * (k / 128));
    j.q = q, j.sa = sa;
    bench_fill(x, (size_t)rows * k * 2, 23, BENCH_BF16);
    struct quant_job qj = {x, rows, k, 0, q, sa};
    quant_launch(&qj, 0);
    double bytes = (double)npairs * (wbytes + sbytes) + (double)rows * k + 4.0 * rows * (k / 128) + 2.0 * npairs * n;
    double t_graph[CUDA_FP4_GEMV_NVARIANTS];
    uint16_t *out[CUDA_FP4_GEMV_NVARIANTS];
    for (int v = 0; v < nvar; v++) {
        j.variant = v;
        for (int i = 0; i < 4; i++)
            fp4_launch(&j, i);
        double alone = time_alone(fp4_launch, &j, ITERS);
        double graph = bench_graph_ms(fp4_launch, &j, ITERS, 10);
        fp4_launch(&j, 0); /* the same ids for the comparison */
        must(cuda_sync(&err));
        out[v] = malloc((size_t)npairs * n * 2);
        must(cuda_d2h(out[v], j.y, (size_t)npairs * n * 2, &err));
        t_graph[v] = graph;
        double gbs = bytes / (graph * 1e-3) / 1e9, tf = 2.0 * npairs * (double)n * k / (graph * 1e-3) / 1e12;
        printf("| fp4 %-20s | %-22s | %4d | %d | %5d x %5d | %6.2f | %6.2f | %5.0f | %5.2f | %5.1f%% | %5.2f | %s |\n",
               cuda_fp4_gemv_variant_name(v), name, npairs, xg, n, k, alone * 1e3, graph * 1e3, gbs, tf,
               100.0 * gbs / copy_gbps, t_graph[0] / graph,
               v == 0 ? "-" : memcmp(out[0], out[v], (size_t)npairs * n * 2) ? "no" : "yes");
    }
    for (int v = 0; v < nvar; v++)
        free(out[v]);
    cuda_free(w), cuda_free(s), cuda_free(dwt), cuda_free(dst), cuda_free(dids), cuda_free(x), cuda_free(j.y);
    cuda_free(q), cuda_free(sa);
    free(wt), free(st), free(ids);
}

/* all: every V2 configuration too (`bench-gpu fp4`); else V1 and V2 only. */
static void bench_fp4_rows(int all)
{
    const int nv = all ? CUDA_FP4_GEMV_NVARIANTS : 2;
    printf("Decode, routed experts: FP4 e2m1 + e8m0 per 32, random experts per launch (distinct within each "
           "activation row's group of x_group pairs); us alone / in graph, GB/s and the floor ratio from the graph "
           "time; vs v1 = V1's graph time / this one; bytes equal to V1's\n\n");
    printf("| kernel | call | pairs | x_group | n x k | us alone | us graph | GB/s | TFLOP/s | of copy floor | vs v1 | "
           "bytes = v1 |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    bench_fp4("Flash w1/w3, top-6", 2048, 4096, 256, 6, 6, nv);
    bench_fp4("Flash w1|w3, engine S=1", 2048, 4096, 512, 12, 6, nv);
    bench_fp4("Flash w2, engine S=1", 4096, 2048, 256, 6, 1, nv);
    bench_fp4("Flash w1|w3, engine S=2", 2048, 4096, 512, 24, 6, nv);
    bench_fp4("Flash w2, engine S=2", 4096, 2048, 256, 12, 1, nv);
    bench_fp4("Pro w1|w3, engine S=1", 3072, 7168, 768, 12, 6, nv);
    bench_fp4("Pro w2, engine S=1", 7168, 3072, 384, 6, 1, nv);
    bench_fp4("Flash w1|w3, 64 tokens", 2048, 4096, 512, 768, 6, nv);
}

/* ---- FP8 prefill GEMM: own mma.sync kernels (V1, V2 and V2's tiles) and cuBLASLt block-scaled ----
 *
 * Per shape: every variant of cuda_fp8_gemm_variant on the same inputs, its time, the ratios to V1 and
 * to V2 (the default) and whether its output is byte-equal to V1's (it must be), then cuBLASLt (other
 * numerics, see gemm.h). */
struct gemm_job {
    const uint8_t *q, *w, *ws;
    const float *sa, *ws32;
    int m, n, k, variant;
    uint16_t *y;
    struct cuda_lt_plan *plan;
};
static void gemm_launch(void *ud, int i)
{
    struct gemm_job *j = ud;
    (void)i;
    must(cuda_fp8_gemm_variant(j->q, j->sa, j->m, j->w, j->ws, j->n, j->k, j->y, j->variant, bench_stream(), &err));
}
static void lt_launch(void *ud, int i)
{
    struct gemm_job *j = ud;
    (void)i;
    must(cuda_lt_run(j->plan, j->q, j->sa, j->w, j->ws32, j->y, bench_stream(), &err));
}

static void bench_gemm(const char *name, int n, int k, int m)
{
    size_t wbytes = (size_t)n * k, ybytes = (size_t)m * n * 2;
    int nb = (n + 127) / 128, kb = k / 128, ld = (kb + 3) / 4 * 4;
    uint8_t *w = dalloc(wbytes), *ws = dalloc((size_t)nb * kb), *q = dalloc((size_t)m * k);
    uint16_t *x = dalloc((size_t)m * k * 2);
    float *sa = dalloc(sizeof(float) * (size_t)m * kb), *ws32 = dalloc(sizeof(float) * (size_t)(nb + 4) * (ld + 4));
    struct gemm_job j = {.q = q, .w = w, .ws = ws, .sa = sa, .ws32 = ws32, .m = m, .n = n, .k = k};
    j.y = dalloc(ybytes);
    uint16_t *y1 = malloc(ybytes), *yv = malloc(ybytes);
    if (!y1 || !yv) {
        fprintf(stderr, "bench-gpu: out of memory\n");
        exit(1);
    }
    bench_fill(w, wbytes, 31, BENCH_E4M3);
    bench_fill(ws, (size_t)nb * kb, 32, BENCH_E8M0_W);
    bench_fill(x, (size_t)m * k * 2, 33, BENCH_BF16);
    struct quant_job qj = {x, m, k, 0, q, sa};
    quant_launch(&qj, 0);
    const int iters = 20;
    double flop = 2.0 * m * (double)n * k, ms_v1 = 0, ms_v2 = 0;
    double qms = time_alone(quant_launch, &qj, iters);
    for (int v = CUDA_FP8_GEMM_V1; v < CUDA_FP8_GEMM_NVARIANTS; v++) {
        j.variant = v;
        /* bench_stream() does not wait for the legacy stream's copies: synchronise around the launch */
        must(cuda_memset(j.y, 0xff, ybytes, &err));
        must(cuda_sync(&err));
        gemm_launch(&j, 0);
        must(cuda_sync(&err));
        must(cuda_d2h(v == CUDA_FP8_GEMM_V1 ? y1 : yv, j.y, ybytes, &err));
        double ms = time_alone(gemm_launch, &j, iters);
        if (v == CUDA_FP8_GEMM_V1)
            ms_v1 = ms;
        if (v == CUDA_FP8_GEMM_V2)
            ms_v2 = ms;
        int eq = v == CUDA_FP8_GEMM_V1 || memcmp(y1, yv, ybytes) == 0;
        printf("| fp8_gemm %-25s | %-10s | %5d | %5d x %5d | %8.1f | %6.1f | %5.1f%% | %5.2f | %5.2f | %s | %5.1f |\n",
               cuda_fp8_gemm_variant_name(v), name, m, n, k, ms * 1e3, flop / (ms * 1e-3) / 1e12,
               100.0 * flop / (ms * 1e-3) / 1e12 / fp8_peak, ms_v1 / ms, v >= CUDA_FP8_GEMM_V2 ? ms_v2 / ms : 0.0,
               eq ? "yes" : "NO", qms * 1e3);
    }
    int layout = cuda_lt_layout();
    if (m % 4 == 0 && cuda_lt_plan_new(&j.plan, m, n, k, layout, &err) == 0) {
        must(cuda_e8m0_to_f32(ws, nb, kb, ld, (layout & CUDA_LT_W_T) != 0, ws32, NULL, &err));
        qj.scale_t = layout & CUDA_LT_ACT_T;
        quant_launch(&qj, 0);
        lt_launch(&j, 0);
        double ms = time_alone(lt_launch, &j, iters);
        printf("| fp8_gemm %-25s | %-10s | %5d | %5d x %5d | %8.1f | %6.1f | %5.1f%% | %5.2f | %5.2f | other numerics | |\n",
               "cuBLASLt", name, m, n, k, ms * 1e3, flop / (ms * 1e-3) / 1e12,
               100.0 * flop / (ms * 1e-3) / 1e12 / fp8_peak, ms_v1 / ms, ms_v2 / ms);
        cuda_lt_plan_free(j.plan);
    } else {
        printf("| fp8_gemm %-25s | %-10s | %5d | %5d x %5d | n/a: %s | | | | | | |\n", "cuBLASLt", name, m, n, k, err.msg);
    }
    must(cuda_sync(&err));
    free(y1), free(yv);
    cuda_free(w), cuda_free(ws), cuda_free(q), cuda_free(x), cuda_free(j.y), cuda_free(sa), cuda_free(ws32);
}

/* The prefill GEMM table: V4-Flash's dense FP8 products at chunk sizes m (only_m > 0: that m only). */
static void bench_gemm_rows(int only_m)
{
    printf("\nPrefill GEMM, FP8 block-scaled, m tokens (us alone, median of 20); vs v1 / vs v2 = V1's / V2's "
           "time / this time (V2: the default; V1 has no vs v2); bit-equal = output bytes equal to V1's; "
           "act_quant = the input's quantisation\n\n");
    printf("| kernel | weight | m | n x k | us | TFLOP/s | of FP8 peak | vs v1 | vs v2 | bit-equal v1 | act_quant us |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const struct { const char *name; int n, k; } shapes[] = {
        {"attn.wq_a", 1024, 4096}, {"attn.wkv", 512, 4096},     {"attn.wq_b", 32768, 1024}, {"attn.wo_b", 4096, 8192},
        {"shared w1", 2048, 4096}, {"shared w2", 4096, 2048},   {"idx.wq_b", 8192, 1024},   {"4096^2", 4096, 4096},
    };
    static const int ms[] = {256, 512, 2048, 4096, 16384};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
            if (only_m <= 0 || ms[i] == only_m)
                bench_gemm(shapes[s].name, shapes[s].n, shapes[s].k, ms[i]);
}

/* ---- routed experts of one V4-Flash layer for a prefill chunk: grouped GEMM vs grouped GEMV ----
 *
 * The engine's layout (kernels/engine.cu moe()): w1|w3 as one product over 2*S*k pairs with a table of
 * 2E entries (ids + E on a copy of the inputs for w3), then w2 over S*k pairs. The GEMM path adds its
 * two bucketings; both paths are timed in the same run on the same ids and inputs, and the GEMM's w1|w3
 * output is compared with the GEMV's (share bit-equal: both add the same tensor-core partials, in
 * different orders). The GEMV takes at most 65535 pairs a launch: larger chunks run in pieces. */
#define MOE_E 256
#define MOE_K 6
#define MOE_D 4096
#define MOE_I 2048

struct moe_job {
    int S;
    const uint8_t *const *tab;
    const int *ids; /* [2*S*k] */
    const uint8_t *q13, *q2;
    const float *sa13, *sa2;
    uint16_t *y13, *y2;
    struct cuda_moe_buckets b13, b2;
    int variant; /* CUDA_MOE_GEMM_V1 .. _V6 */
};
static void moe_gemm_launch(void *ud, int i)
{
    struct moe_job *j = ud;
    const uint8_t *const *t = j->tab;
    (void)i;
    must(cuda_moe_bucket(&j->b13, j->ids, bench_stream(), &err));
    must(cuda_moe_gemm_variant(&j->b13, j->q13, j->sa13, MOE_K, t, t + 2 * MOE_E, MOE_I, MOE_D, j->y13, j->variant,
                               bench_stream(), &err));
    must(cuda_moe_bucket(&j->b2, j->ids, bench_stream(), &err));
    must(cuda_moe_gemm_variant(&j->b2, j->q2, j->sa2, 1, t + 4 * MOE_E, t + 5 * MOE_E, MOE_D, MOE_I, j->y2, j->variant,
                               bench_stream(), &err));
}
static void moe_bucket_launch(void *ud, int i)
{
    struct moe_job *j = ud;
    (void)i;
    must(cuda_moe_bucket(&j->b13, j->ids, bench_stream(), &err));
    must(cuda_moe_bucket(&j->b2, j->ids, bench_stream(), &err));
}
static void moe_gemv_part(const uint8_t *q, const float *sa, int xg, int npairs, const int *ids,
                          const uint8_t *const *wt, const uint8_t *const *st, int n, int k, uint16_t *y)
{
    const int piece = 8192 * MOE_K; /* a multiple of the group: pieces start on an input row */
    for (int off = 0; off < npairs; off += piece) {
        int np = npairs - off < piece ? npairs - off : piece;
        must(cuda_fp4_gemv_grouped(q + (size_t)(off / xg) * k, sa + (size_t)(off / xg) * (k / 128), xg, np, ids + off,
                                   wt, st, n, k, y + (size_t)off * n, bench_stream(), &err));
    }
}
static void moe_gemv_launch(void *ud, int i)
{
    struct moe_job *j = ud;
    const uint8_t *const *t = j->tab;
    (void)i;
    moe_gemv_part(j->q13, j->sa13, MOE_K, 2 * j->S * MOE_K, j->ids, t, t + 2 * MOE_E, MOE_I, MOE_D, j->y13);
    moe_gemv_part(j->q2, j->sa2, 1, j->S * MOE_K, j->ids, t + 4 * MOE_E, t + 5 * MOE_E, MOE_D, MOE_I, j->y2);
}

/* bf16 bits -> an integer that counts representable values: +x -> its magnitude bits, -x -> minus
 * them, so that -0 and +0 are both 0 and consecutive finite bf16 values are 1 apart across zero. */
static long moe_bf16_ordered(uint16_t v)
{
    return v & 0x8000 ? -(long)(v & 0x7fff) : (long)v;
}

/* How many bf16 values apart a and b are (the ordered-integer distance: 0 for -0 and +0, and across
 * a sign change the sum of both magnitudes' counts from zero); NaN or inf on either side: 1e9. The
 * earlier column divided |a - b| by b's own spacing, which for b = 0 or tiny gave 1e35-sized values. */
static double moe_ulps_apart(uint16_t a, uint16_t b)
{
    if ((a & 0x7f80) == 0x7f80 || (b & 0x7f80) == 0x7f80)
        return a == b ? 0.0 : 1e9;
    return (double)labs(moe_bf16_ordered(a) - moe_bf16_ordered(b));
}

static uint8_t *moe_w, *moe_s;
static const uint8_t **moe_dtab;

/* The 3 x 256 experts of one layer (3 GB + scales) and the engine's table of 6E pointers, once. */
static void moe_weights(void)
{
    if (moe_dtab)
        return;
    const size_t wb = (size_t)MOE_I * MOE_D / 2, sb = (size_t)MOE_I * MOE_D / 32; /* each of w1, w3, w2 */
    moe_w = dalloc(wb * 3 * MOE_E), moe_s = dalloc(sb * 3 * MOE_E);
    bench_fill(moe_w, wb * 3 * MOE_E, 41, BENCH_BYTES);
    bench_fill(moe_s, sb * 3 * MOE_E, 42, BENCH_E8M0_FP4);
    const uint8_t *tab[6 * MOE_E];
    for (int x = 0; x < MOE_E; x++)
        for (int m = 0; m < 3; m++) { /* w1 -> slots 0 (scales 2), w3 -> 1 (3), w2 -> 4 (5) */
            static const int wslot[3] = {0, 1, 4}, sslot[3] = {2, 3, 5};
            tab[wslot[m] * MOE_E + x] = moe_w + wb * ((size_t)m * MOE_E + x);
            tab[sslot[m] * MOE_E + x] = moe_s + sb * ((size_t)m * MOE_E + x);
        }
    moe_dtab = dalloc(sizeof tab);
    must(cuda_h2d(moe_dtab, tab, sizeof tab, &err));
}

/* One run of kernel `variant` over the job's pairs (outputs poisoned first) into o13 / o2, the
 * (CTA, stage) fallbacks it counted (`fallbacks`: the variant's counter), and its outputs against r13 /
 * r2: how many are equal, the largest distance in bf16 values (moe_ulps_apart) and how many are more
 * than one apart. */
struct moe_cmp {
    size_t eq, far;
    double ulps;
    unsigned long long fb;
};
static struct moe_cmp moe_run_compare(struct moe_job *j, int variant,
                                      int (*fallbacks)(unsigned long long *, int, struct ctx_err *), uint16_t *o13,
                                      uint16_t *o2, const uint16_t *r13, const uint16_t *r2, size_t y13b, size_t y2b)
{
    struct moe_cmp c = {0, 0, 0.0, 0};
    j->variant = variant;
    must(cuda_memset(j->y13, 0xff, y13b, &err));
    must(cuda_memset(j->y2, 0xff, y2b, &err));
    must(fallbacks(&c.fb, 1, &err));
    moe_gemm_launch(j, 0);
    must(cuda_sync(&err));
    must(fallbacks(&c.fb, 1, &err));
    must(cuda_d2h(o13, j->y13, y13b, &err));
    must(cuda_d2h(o2, j->y2, y2b, &err));
    for (size_t i = 0; i < y13b / 2 + y2b / 2; i++) {
        const uint16_t a = i < y13b / 2 ? o13[i] : o2[i - y13b / 2], b = i < y13b / 2 ? r13[i] : r2[i - y13b / 2];
        const double d = moe_ulps_apart(a, b);
        c.ulps = d > c.ulps ? d : c.ulps;
        c.eq += a == b;
        c.far += d > 1.0;
    }
    return c;
}

static void bench_moe_prefill(int S)
{
    moe_weights();
    const int np13 = 2 * S * MOE_K, np2 = S * MOE_K;
    int *ids = malloc(sizeof *ids * np13);
    uint64_t r = 0x9e3779b97f4a7c15ull ^ (uint64_t)S;
    for (int t = 0; t < S; t++)
        for (int j = 0; j < MOE_K; j++) {
            int id, dup;
            do {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                id = (int)(r % MOE_E);
                dup = 0;
                for (int i = 0; i < j; i++)
                    dup |= ids[t * MOE_K + i] == id;
            } while (dup);
            ids[t * MOE_K + j] = id;
            ids[S * MOE_K + t * MOE_K + j] = id + MOE_E;
        }
    struct moe_job j = {.S = S, .tab = moe_dtab, .variant = CUDA_MOE_GEMM_V2};
    int *dids = dalloc(sizeof *ids * np13);
    must(cuda_h2d(dids, ids, sizeof *ids * np13, &err));
    j.ids = dids;
    uint16_t *x13 = dalloc((size_t)S * MOE_D * 2), *x2 = dalloc((size_t)np2 * MOE_I * 2);
    uint8_t *q13 = dalloc((size_t)2 * S * MOE_D), *q2 = dalloc((size_t)np2 * MOE_I);
    float *sa13 = dalloc(sizeof(float) * 2 * S * (MOE_D / 128)), *sa2 = dalloc(sizeof(float) * np2 * (MOE_I / 128));
    bench_fill(x13, (size_t)S * MOE_D * 2, 43, BENCH_BF16);
    bench_fill(x2, (size_t)np2 * MOE_I * 2, 44, BENCH_BF16);
    struct quant_job qa = {x13, S, MOE_D, 0, q13, sa13}, qb = {x2, np2, MOE_I, 0, q2, sa2};
    quant_launch(&qa, 0);
    quant_launch(&qb, 0);
    /* rows [S, 2S): the copy w3 reads, as the engine quantises it */
    struct quant_job qc = {x13, S, MOE_D, 0, q13 + (size_t)S * MOE_D, sa13 + (size_t)S * (MOE_D / 128)};
    quant_launch(&qc, 0);
    j.q13 = q13, j.q2 = q2, j.sa13 = sa13, j.sa2 = sa2;
    size_t y13b = (size_t)np13 * MOE_I * 2, y2b = (size_t)np2 * MOE_D * 2;
    j.y13 = dalloc(y13b), j.y2 = dalloc(y2b);
    size_t sb13 = cuda_moe_scratch_bytes(2 * MOE_E, np13), sb2 = cuda_moe_scratch_bytes(MOE_E, np2);
    void *s13 = dalloc(sb13), *s2 = dalloc(sb2);
    must(cuda_moe_buckets_init(&j.b13, s13, sb13, 2 * MOE_E, np13, &err));
    must(cuda_moe_buckets_init(&j.b2, s2, sb2, MOE_E, np2, &err));

    /* both paths once, outputs compared (w1|w3 and w2) */
    uint16_t *h13 = malloc(y13b), *g13 = malloc(y13b), *h2 = malloc(y2b), *g2 = malloc(y2b);
    moe_gemv_launch(&j, 0);
    must(cuda_sync(&err));
    must(cuda_d2h(h13, j.y13, y13b, &err));
    must(cuda_d2h(h2, j.y2, y2b, &err));
    must(cuda_memset(j.y13, 0xff, y13b, &err));
    must(cuda_memset(j.y2, 0xff, y2b, &err));
    moe_gemm_launch(&j, 0);
    must(cuda_sync(&err));
    must(cuda_d2h(g13, j.y13, y13b, &err));
    must(cuda_d2h(g2, j.y2, y2b, &err));
    size_t eq = 0, tot = y13b / 2 + y2b / 2;
    for (size_t i = 0; i < y13b / 2; i++)
        eq += h13[i] == g13[i];
    for (size_t i = 0; i < y2b / 2; i++)
        eq += h2[i] == g2[i];
    /* the first kernel (V1) on the same pairs: the default must give its bytes */
    j.variant = CUDA_MOE_GEMM_V1;
    must(cuda_memset(j.y13, 0xff, y13b, &err));
    must(cuda_memset(j.y2, 0xff, y2b, &err));
    moe_gemm_launch(&j, 0);
    must(cuda_sync(&err));
    must(cuda_d2h(h13, j.y13, y13b, &err));
    must(cuda_d2h(h2, j.y2, y2b, &err));
    size_t eq1 = 0;
    for (size_t i = 0; i < y13b / 2; i++)
        eq1 += h13[i] == g13[i];
    for (size_t i = 0; i < y2b / 2; i++)
        eq1 += h2[i] == g2[i];
    /* V3 on the same pairs: its largest distance from V2 in bf16 values (moe_ulps_apart), its fallbacks */
    const struct moe_cmp c3 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V3, cuda_moe_v3_fallback_stages, h13, h2, g13, g2, y13b, y2b);
    const double ulps3 = c3.ulps;
    const size_t eq3 = c3.eq, far3 = c3.far;
    const unsigned long long fb = c3.fb;
    /* V4 on the same pairs: against V2 (as V3) and against V3 (same bound; bit-equal share), its fallbacks */
    uint16_t *k13 = malloc(y13b), *k2 = malloc(y2b);
    const struct moe_cmp c4 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V4, cuda_moe_v4_fallback_stages, k13, k2, g13, g2, y13b, y2b);
    const double ulps4 = c4.ulps;
    const size_t far4 = c4.far;
    const unsigned long long fb4 = c4.fb;
    size_t eq4_3 = 0;
    for (size_t i = 0; i < y13b / 2; i++)
        eq4_3 += k13[i] == h13[i];
    for (size_t i = 0; i < y2b / 2; i++)
        eq4_3 += k2[i] == h2[i];
    /* V5 (V4 on wgmma) on the same pairs: against V4 (bit-equal share, largest distance), its fallbacks */
    uint16_t *m13 = malloc(y13b), *m2 = malloc(y2b);
    const struct moe_cmp c5 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V5, cuda_moe_v5_fallback_stages, m13, m2, k13, k2, y13b, y2b);
    /* V6 (weights in registers) on the same pairs: against V5 */
    uint16_t *o13 = malloc(y13b), *o2 = malloc(y2b);
    const struct moe_cmp c6 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V6, cuda_moe_v6_fallback_stages, o13, o2, m13, m2, y13b, y2b);
    /* V7 (FP8 wgmma) on the same pairs: against V6 */
    uint16_t *v13 = malloc(y13b), *v2b = malloc(y2b);
    const struct moe_cmp c7 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V7, cuda_moe_v7_fallback_stages, v13, v2b, o13, o2, y13b, y2b);
    /* V8 (V7 over 128-pair CTAs) on the same pairs: against V7 (the same bytes expected) */
    uint16_t *u13 = malloc(y13b), *u2b = malloc(y2b);
    const struct moe_cmp c8 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V8, cuda_moe_v8_fallback_stages, u13, u2b, v13, v2b, y13b, y2b);
    /* V9 (V8 with a producer warpgroup) on the same pairs: against V7 (the same bytes expected) */
    const struct moe_cmp c9 =
        moe_run_compare(&j, CUDA_MOE_GEMM_V9, cuda_moe_v9_fallback_stages, u13, u2b, v13, v2b, y13b, y2b);
    free(u13), free(u2b);
    free(v13), free(v2b);
    free(o13), free(o2);
    free(m13), free(m2);
    free(k13), free(k2);

    const int iters_gemm = 10, iters_gemv = S >= 4096 ? 3 : 5;
    j.variant = CUDA_MOE_GEMM_V1;
    double ms_v1 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V3;
    double ms_v3 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V4;
    double ms_v4 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V5;
    double ms_v5 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V6;
    double ms_v6 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V7;
    double ms_v7 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V8;
    double ms_v8 = time_alone(moe_gemm_launch, &j, iters_gemm);
    j.variant = CUDA_MOE_GEMM_V9;
    double ms_v9 = time_alone(moe_gemm_launch, &j, iters_gemm);

    j.variant = CUDA_MOE_GEMM_V2;
    double ms_gemm = time_alone(moe_gemm_launch, &j, iters_gemm);
    double ms_bucket = time_alone(moe_bucket_launch, &j, iters_gemm);
    double ms_gemv = time_alone(moe_gemv_launch, &j, iters_gemv);
    double flop = 6.0 * np2 * (double)MOE_I * MOE_D; /* 2 flops x (2 S k I D for w1|w3 + S k D I for w2) */
    double tf_gemm = flop / (ms_gemm * 1e-3) / 1e12, tf_gemv = flop / (ms_gemv * 1e-3) / 1e12;
    double tf_v3 = flop / (ms_v3 * 1e-3) / 1e12, tf_v4 = flop / (ms_v4 * 1e-3) / 1e12;
    printf("| %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx | %5.2fx | %5.0f | %.4f%% | %6.2f%% | %llu | "
           "%8.3f | %6.1f | %5.1f%% | %5.2fx | %5.0f | %.4f%% | %6.2f%% | %llu | %8.3f | %7.3f | %6.1f | "
           "%5.1f%% | %8.3f | %5.2fx | %7.3f%% | %9.3f | %6.1f | %6.1fx | %6.2f%% |\n",
           S, np2, ms_v4, tf_v4, 100.0 * tf_v4 / fp8_peak, ms_v3 / ms_v4, ms_gemm / ms_v4, ulps4,
           100.0 * (double)far4 / (double)tot, 100.0 * (double)eq4_3 / (double)tot, fb4, ms_v3, tf_v3, 100.0 * tf_v3 / fp8_peak, ms_gemm / ms_v3, ulps3, 100.0 * (double)far3 / (double)tot,
           100.0 * (double)eq3 / (double)tot, fb,
           ms_gemm, ms_bucket, tf_gemm, 100.0 * tf_gemm / fp8_peak, ms_v1, ms_v1 / ms_gemm,
           100.0 * (double)eq1 / (double)tot, ms_gemv, tf_gemv, ms_gemv / ms_gemm, 100.0 * (double)eq / (double)tot);
    printf("| V5 (wgmma) | %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx | %7.3f%% | %5.0f | %.4f%% | %llu |\n", S, np2,
           ms_v5, flop / (ms_v5 * 1e-3) / 1e12, 100.0 * flop / (ms_v5 * 1e-3) / 1e12 / fp8_peak, ms_v4 / ms_v5,
           100.0 * (double)c5.eq / (double)tot, c5.ulps, 100.0 * (double)c5.far / (double)tot, c5.fb);
    printf("| V6 (A in registers) | %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx (V5 / V6 %.2fx) | %7.3f%% of V5 | %5.0f | "
           "%.4f%% | %llu |\n", S, np2, ms_v6, flop / (ms_v6 * 1e-3) / 1e12,
           100.0 * flop / (ms_v6 * 1e-3) / 1e12 / fp8_peak, ms_v4 / ms_v6, ms_v5 / ms_v6,
           100.0 * (double)c6.eq / (double)tot, c6.ulps, 100.0 * (double)c6.far / (double)tot, c6.fb);
    printf("| V7 (FP8 wgmma) | %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx (V6 / V7 %.2fx) | "
           "%7.3f%% of V6 | %5.0f | %.4f%% | %llu |\n", S, np2, ms_v7, flop / (ms_v7 * 1e-3) / 1e12,
           100.0 * flop / (ms_v7 * 1e-3) / 1e12 / fp8_peak, ms_v4 / ms_v7, ms_v6 / ms_v7,
           100.0 * (double)c7.eq / (double)tot, c7.ulps, 100.0 * (double)c7.far / (double)tot, c7.fb);
    printf("| V8 (V7, 128-pair CTAs) | %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx (V7 / V8 %.2fx) | "
           "%7.3f%% of V7 | %5.0f | %.4f%% | %llu |\n", S, np2, ms_v8, flop / (ms_v8 * 1e-3) / 1e12,
           100.0 * flop / (ms_v8 * 1e-3) / 1e12 / fp8_peak, ms_v4 / ms_v8, ms_v7 / ms_v8,
           100.0 * (double)c8.eq / (double)tot, c8.ulps, 100.0 * (double)c8.far / (double)tot, c8.fb);
    printf("| V9 (V8, producer warpgroup) | %5d | %6d | %8.3f | %6.1f | %5.1f%% | %5.2fx (V8 / V9 %.2fx) | "
           "%7.3f%% of V7 | %5.0f | %.4f%% | %llu |\n", S, np2, ms_v9, flop / (ms_v9 * 1e-3) / 1e12,
           100.0 * flop / (ms_v9 * 1e-3) / 1e12 / fp8_peak, ms_v4 / ms_v9, ms_v8 / ms_v9,
           100.0 * (double)c9.eq / (double)tot, c9.ulps, 100.0 * (double)c9.far / (double)tot, c9.fb);
    free(ids), free(h13), free(g13), free(h2), free(g2);
    cuda_free(dids), cuda_free(x13), cuda_free(x2), cuda_free(q13), cuda_free(q2), cuda_free(sa13), cuda_free(sa2);
    cuda_free(j.y13), cuda_free(j.y2), cuda_free(s13), cuda_free(s2);
}

static void bench_moe_rows(int only_s)
{
    printf("\nPrefill, routed experts of one V4-Flash layer (256 experts, top-6, w1|w3 2048x4096 and w2 4096x2048, "
           "FP4; synthetic e8m0 scales 2^-10..2^2, so every row's 128-K block is within V3's exact range of 2^14 "
           "and V4's of 2^26): grouped GEMM (moe_gemm.h, incl. its two bucketings) with kernel V4 (native f16 "
           "mma; the default from 8192 pairs a call on), V3 (the default below), V2 and V1, vs grouped "
           "GEMV (today's moe()), same ids and inputs, median ms alone; TFLOP/s counts 6 S k I D; V3's distance "
           "from V2 in bf16 ulps = how many bf16 values apart the two outputs are (ordered-integer distance of the "
           "bit patterns: -0 and +0 are 0 apart, a sign change counts both magnitudes' ulps from zero; both are "
           "within a few fp32 ulps of sum |w x| of the exact sum, so outputs that cancel to far below sum |w x| "
           "can be many bf16 ulps apart: the max and the share > 1 ulp), "
           "the same for V4, and V4's share bit-equal to V3; fallbacks: (CTA, stage)s that took the exactness "
           "guard\n\n");
    int occ[CUDA_MOE_GEMM_NVARIANTS] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int v = 0; v < CUDA_MOE_GEMM_NVARIANTS; v++)
        must(cuda_moe_gemm_ctas_per_sm(v, &occ[v], &err));
    printf("(CTAs per SM: V9 %d, V8 %d, V7 %d, V6 %d, V5 %d, V4 %d, V3 %d, V2 %d, V1 %d)\n\n", occ[8], occ[7], occ[6], occ[5], occ[4], occ[3],
           occ[2], occ[1], occ[0]);
    printf("Each S's row is followed by V5's, V6's, V7's, V8's and V9's (V5: V4 on wgmma; V6: V5 with the weights in registers; V7: FP8 wgmma, the engine's fast prefill path, compared with V6; V8: V7 over 128-pair CTAs, the engine's where experts average more than 64 pairs, compared with V7; V9: V8 with a producer warpgroup converting into shared memory, compared with V7; "
           "columns: kernel | S | pairs | ms | TFLOP/s | of FP8 peak | V4 / it | bit-equal to V4 (V6: to V5) | max "
           "ulps vs V4 (V6: V5) | > 1 ulp from it | fallbacks)\n\n");
    printf("| S | pairs | V4 ms | V4 TFLOP/s | of FP8 peak | V3 / V4 | V2 / V4 | V4 max ulps vs V2 | V4 > 1 ulp from V2 "
           "| V4 bit-equal to V3 | V4 fallbacks | V3 ms | V3 TFLOP/s | of FP8 peak | V2 / V3 | V3 max ulps vs V2 | V3 > 1 ulp from V2 | "
           "V3 bit-equal to V2 | "
           "V3 fallbacks | V2 ms | of it bucketing ms | V2 TFLOP/s | of FP8 peak | V1 ms | V1 / V2 | V2 bit-equal "
           "to V1 | GEMV ms | GEMV TFLOP/s | V2 speed-up vs GEMV | V2 bit-equal to GEMV |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
           "---|---|---|---|---|\n");
    static const int sizes[] = {512, 2048, 4096, 8192};
    for (int i = 0; i < 4; i++)
        if (!only_s || only_s == sizes[i])
            bench_moe_prefill(sizes[i]);
}

int main(int argc, char **argv)
{
    /* "profile": one decode GEMV and one expert product only, for a profiler (ncu) run; "decode": the
     * decode tables only (no compute floor, no prefill GEMMs) */
    int profile = argc > 1 && strcmp(argv[1], "profile") == 0;
    int decode = argc > 1 && strcmp(argv[1], "decode") == 0;
    if (cuda_device_count() == 0) {
        printf("bench-gpu: no CUDA device\n");
        return 77;
    }
    char name[256];
    int sms;
    must(cuda_device_name(name, sizeof name, &sms, &err));
    copy_gbps = bench_copy_gbps((size_t)1 << 30, 20);
    fp8_peak = profile || decode ? 1.0 : bench_fp8_dense_tflops(8192, 20);
    printf("device: %s, %d SMs\n", name, sms);
    printf("floor, bandwidth: device-to-device cudaMemcpy of 1 GiB, median of 20: %.0f GB/s (read + written)\n",
           copy_gbps);
    if (!decode)
        printf("floor, FP8 compute: dense cuBLASLt e4m3 8192^3 (per-tensor scales, fast accumulation), median of 20: "
               "%.0f TFLOP/s\n", fp8_peak);
    printf("\n");
    if (argc > 1 && strcmp(argv[1], "gemm") == 0) { /* only the prefill GEMM rows ("gemm M": one m) */
        bench_gemm_rows(argc > 2 ? atoi(argv[2]) : 0);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "moe") == 0) { /* only the routed experts' prefill rows ("moe S": one) */
        bench_moe_rows(argc > 2 ? atoi(argv[2]) : 0);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "fp4") == 0) { /* only the routed experts' decode rows */
        bench_fp4_rows(1);
        return 0;
    }
    if (profile) {
        bench_fp8_gemv("e_proj 4096^2", 4096, 4096, 1);
        bench_fp4("Flash w1|w3, engine S=1", 2048, 4096, 512, 12, 6, 2);
        return 0;
    }

    printf("Decode GEMV, FP8 e4m3 weights + 128x128 e8m0 scales, V4-Flash shapes. us alone / in graph; GB/s and "
           "the floor ratio from the graph time; act_quant = the input's quantisation, in graph\n\n");
    printf("| kernel | weight | m | n x k | us alone | us graph | GB/s | TFLOP/s | of copy floor | act_quant us |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    static const struct { const char *name; int n, k; } fp8[] = {
        {"attn.wq_a", 1024, 4096},    {"attn.wkv", 512, 4096},      {"attn.wq_b", 32768, 1024},
        {"attn.wo_b", 4096, 8192},    {"shared w1/w3", 2048, 4096}, {"shared w2", 4096, 2048},
        {"indexer.wq_b", 8192, 1024}, {"e_proj 4096^2", 4096, 4096},
    };
    for (size_t i = 0; i < sizeof fp8 / sizeof fp8[0]; i++)
        for (int m = 1; m <= 8; m *= 8)
            bench_fp8_gemv(fp8[i].name, fp8[i].n, fp8[i].k, m);
    bench_fp8_gemv("e_proj 4096^2", 4096, 4096, 4);

    printf("\nDecode GEMV fed by fp32 activations (cuda_fp8_gemv_f32: quantisation inside, fp32 out), one token; "
           "last column: cuda_act_quant + cuda_fp8_gemv in graph, the launches it replaces\n\n");
    printf("| kernel | weight | m | n x k | us alone | us graph | GB/s | of copy floor | act_quant + gemv us |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    bench_fp8_gemv_f32("attn.wq_a|wkv", 1536, 4096);
    bench_fp8_gemv_f32("attn.wq_b", 32768, 1024);
    bench_fp8_gemv_f32("attn.wo_b", 4096, 8192);
    bench_fp8_gemv_f32("indexer.wq_b", 8192, 1024);

    printf("\n");
    bench_fp4_rows(0);
    if (decode)
        return 0;

    bench_gemm_rows(0);
    bench_moe_rows(0);
    return 0;
}
