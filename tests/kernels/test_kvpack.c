/* The GPU's unpacking of packed cache entries (kernels/cuda_kvpack.h) against the host's
 * (inference/kvpack.h): values from the CPU engine's own QDQ functions at V4-Flash's shapes and the
 * fixture's, every block kind the QDQ leaves (random magnitudes over many binades, zeros, -0, blocks
 * below the FP8 scale floor, subnormal codes, the top of the range) packed on the host, unpacked on
 * the device, compared bit for bit with the host's floats. Plain TAP; "1..0 # SKIP" without a device. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cpu/kernels.h"
#include "cuda_kvpack.h"
#include "gemm.h"
#include "kvpack.h"
#include "quant.h"
#include "tap.h"


static unsigned rnd(unsigned *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x >> 8;
}

/* n QDQ'd values of width w (nope dims FP8-QDQ'd, then bf16 rope dims; or FP4 for keys). */
static void values(float *v, long long n, int w, int rd, int ikey, unsigned seed)
{
    unsigned x = seed;
    for (long long i = 0; i < n; i++) {
        float *e = v + i * w;
        int kind = (int)(i % 7);
        for (int d = 0; d < w; d++) {
            float m = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % (ikey ? 12 : 30)) - (ikey ? 6 : 20));
            e[d] = (rnd(&x) & 1) ? -m : m;
            if (kind == 1)
                e[d] = 0.f;
            if (kind == 2)
                e[d] = (d & 1) ? -0.f : 0.f;
            if (kind == 3)
                e[d] *= ikey ? 0x1p-130f : 1e-7f;
            if (kind == 4 && !ikey)
                e[d] = (d % 64 == 7) ? -448.f : (float)(rnd(&x) % 448);
            if (kind == 5 && !ikey)
                e[d] = ldexpf((float)(rnd(&x) % 8), -30);
        }
        if (ikey) {
            inf_cpu_fp4_qdq(e, w, 32);
        } else {
            inf_cpu_fp8_qdq(e, w - rd, 64);
            for (int d = w - rd; d < w; d++)
                e[d] = inf_bf16_round(e[d]);
        }
    }
}

static void run(const struct inf_config *c, const char *name, int ikey, long long n)
{
    struct ctx_err e = {0};
    int w = ikey ? c->index_head_dim : c->head_dim;
    size_t eb = ikey ? inf_kvpack_ikey_bytes(c) : inf_kvpack_entry_bytes(c);
    float *v = malloc(sizeof(float) * (size_t)(n * w)), *back = malloc(sizeof(float) * (size_t)(n * w));
    uint8_t *pk = malloc(eb * (size_t)n);
    values(v, n, w, c->qk_rope_head_dim, ikey, 7u + (unsigned)ikey);
    int bad = -1;
    for (long long i = 0; i < n && bad < 0; i++)
        bad = ikey ? inf_kvpack_ikey(c, v + i * w, pk + i * eb) : inf_kvpack_entry(c, v + i * w, pk + i * eb);
    void *dp = NULL, *dv = NULL;
    int rc = bad >= 0 ? -1 : 0;
    if (!rc)
        rc = cuda_malloc(&dp, eb * (size_t)n, &e);
    if (!rc)
        rc = cuda_malloc(&dv, sizeof(float) * (size_t)(n * w), &e);
    if (!rc)
        rc = cuda_h2d(dp, pk, eb * (size_t)n, &e);
    if (!rc)
        rc = ikey ? cuda_kvunpack_ikeys(c, dp, n, dv, NULL, &e) : cuda_kvunpack_entries(c, dp, n, dv, NULL, &e);
    if (!rc)
        rc = cuda_d2h(back, dv, sizeof(float) * (size_t)(n * w), &e);
    long long diff = 0, first = -1;
    for (long long i = 0; !rc && i < n * w; i++)
        if (memcmp(&v[i], &back[i], 4)) {
            if (first < 0)
                first = i;
            diff++;
        }
    tap(!rc && diff == 0, "%s %s: %lld x %d values (%zu bytes each packed) unpacked on the GPU bit for bit as packed "
        "(%lld differ, first at %lld; %s)", name, ikey ? "indexer keys" : "entries", n, w, eb, diff, first,
        rc ? (bad >= 0 ? "host packing refused a value" : e.msg) : "ok");
    cuda_free(dp);
    cuda_free(dv);
    free(v);
    free(back);
    free(pk);
}

int main(void)
{
    if (cuda_device_count() == 0) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    struct inf_config flash, tiny;
    struct ctx_err e = {0};
    if (inf_config_builtin("flash", &flash, &e) || inf_config_builtin("tiny", &tiny, &e)) {
        printf("1..0 # SKIP config: %s\n", e.msg);
        return 1;
    }
    run(&flash, "flash", 0, 20011);
    run(&flash, "flash", 1, 20011);
    run(&tiny, "tiny", 0, 3001);
    run(&tiny, "tiny", 1, 3001);
    struct ctx_err bad = {0};
    struct inf_config odd = flash;
    odd.qk_rope_head_dim = 60; /* 452 nope dims: not 64-wide blocks */
    tap(cuda_kvunpack_entries(&odd, NULL, 1, NULL, NULL, &bad) == CTX_EINVAL && strstr(bad.msg, "452 nope dims"),
        "an entry shape without whole 64-wide blocks is refused: %s", bad.msg);
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
