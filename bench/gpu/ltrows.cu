// bench-gpu-ltrows: does cuBLASLt on this GPU run a block-scaled FP8 product with the roles swapped, the
// weights as A (128x128 tile scales, BLK128x128_32F) and the activations as B (1x128 scales, VEC128_32F),
// so that D = W x^T comes out as y [m][n] in rows instead of y^T (the engine's form, which k_lt_out then
// transposes)? For each shape and each candidate layout of the activation scales it prints whether the
// heuristic offers an algorithm, the largest error against the exact sums (in units of 2^-9 sum |w x|,
// test_gemm's EPS_LT), whether every output equals the transposed form's, and both forms' times (the
// transposed form with a plain transpose kernel, as k_lt_out moves the same bytes). Issue 10, 2026-12-01.
//
//   bench-gpu-ltrows [m]   (default 4096)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        cudaError_t c_ = (x);                                                                                          \
        if (c_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(c_));                                                   \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float bf16f(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

__global__ void k_tr(const uint16_t *in, int rows, int cols, int ld, uint16_t *out) // in[r + c ld] -> out[r][c]
{
    __shared__ uint16_t t[32][33];
    const int r0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8)
        if (r0 + threadIdx.x < rows && c0 + j < cols)
            t[j][threadIdx.x] = in[r0 + threadIdx.x + (size_t)(c0 + j) * ld];
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8)
        if (r0 + j < rows && c0 + threadIdx.x < cols)
            out[(size_t)(r0 + j) * cols + c0 + threadIdx.x] = t[threadIdx.x][j];
}

struct form {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulAlgo_t algo;
    int ok = 0, status = 0;
    void release()
    {
        cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
        cublasLtMatmulDescDestroy(desc);
    }
};

// swap 0: A = x (VEC128), B = W (BLK128x128), D = y^T [n cols of m]; swap 1: A = W (BLK128x128), B = x (VEC128),
// D = y [m][n].
static form make(cublasLtHandle_t h, int swap, int m, int n, int k, void *ws, size_t wsb)
{
    form f;
    cublasLtMatmulDescCreate(&f.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, swap ? &blk : &vec, sizeof vec);
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, swap ? &vec : &blk, sizeof vec);
    const void *dummy = ws;
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy);
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy);
    const int ra = swap ? n : m, rb = swap ? m : n;
    cublasLtMatrixLayoutCreate(&f.la, CUDA_R_8F_E4M3, k, ra, k);
    cublasLtMatrixLayoutCreate(&f.lb, CUDA_R_8F_E4M3, k, rb, k);
    cublasLtMatrixLayoutCreate(&f.ld, CUDA_R_16BF, ra, rb, ra);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    f.status = (int)cublasLtMatmulAlgoGetHeuristic(h, f.desc, f.la, f.lb, f.ld, f.ld, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    f.ok = f.status == 0 && found > 0;
    if (f.ok)
        f.algo = res.algo;
    return f;
}

static int run(cublasLtHandle_t h, form &f, const void *a, const float *as, const void *b, const float *bs, uint16_t *d,
               void *ws, size_t wsb)
{
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as);
    cublasLtMatmulDescSetAttribute(f.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bs, sizeof bs);
    const float one = 1.f, zero = 0.f;
    return (int)cublasLtMatmul(h, f.desc, &one, a, f.la, b, f.lb, &zero, d, f.ld, d, f.ld, &f.algo, ws, wsb, 0);
}

static float time_ms(cudaEvent_t e0, cudaEvent_t e1, int reps) // after the caller's loop
{
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    return ms / reps;
}

int main(int argc, char **argv)
{
    const int m = argc > 1 ? atoi(argv[1]) : 4096;
    static const struct {
        const char *name;
        int n, k;
    } shapes[] = {{"attn.wq_b", 32768, 1024}, {"attn.wq_a", 1024, 4096}, {"attn.wo_b", 4096, 8192},
                  {"shared w1|w3", 4096, 4096}, {"shared w2", 4096, 2048}, {"indexer.wq_b", 8192, 1024}};
    cublasLtHandle_t h;
    if (cublasLtCreate(&h)) {
        fprintf(stderr, "cublasLtCreate failed\n");
        return 1;
    }
    const size_t wsb = 32u << 20;
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    printf("cuBLASLt %zu, m = %d tokens\n\n", cublasLtGetVersion(), m);
    printf("| weight | n x k | form | act scale layout | algorithm | max err / (2^-9 sum|wx|) | outputs equal to transposed | ms product | ms + transpose |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (auto &s : shapes) {
        const int n = s.n, k = s.k, kb = k / 128, nb = (n + 127) / 128, ldw = (kb + 3) / 4 * 4;
        // x: e4m3 codes of small integers' halves (exact), per (token, K block) a power-of-two scale; W the same
        // with 128x128 tile scales.
        uint8_t *hx = (uint8_t *)malloc((size_t)m * k), *hw = (uint8_t *)malloc((size_t)n * k);
        float *hxs = (float *)malloc(sizeof(float) * m * kb), *hws = (float *)malloc(sizeof(float) * nb * ldw);
        for (size_t i = 0; i < (size_t)m * k; i++)
            hx[i] = (uint8_t)(rnd() & 0x7f) | (uint8_t)(rnd() & 0x80), hx[i] = (hx[i] & 0x7f) == 0x7f ? 0 : hx[i];
        for (size_t i = 0; i < (size_t)n * k; i++)
            hw[i] = (uint8_t)(rnd() & 0x7f) | (uint8_t)(rnd() & 0x80), hw[i] = (hw[i] & 0x7f) == 0x7f ? 0 : hw[i];
        for (int i = 0; i < m * kb; i++)
            hxs[i] = ldexpf(1.f, (int)(rnd() % 7) - 10);
        for (int i = 0; i < nb * ldw; i++)
            hws[i] = ldexpf(1.f, (int)(rnd() % 5) - 4);
        // scales of x as [kb][m] (k_lt_sat's form) and as [m][kb]
        float *sat = (float *)malloc(sizeof(float) * m * kb);
        for (int t = 0; t < m; t++)
            for (int b = 0; b < kb; b++)
                sat[(size_t)b * m + t] = hxs[(size_t)t * kb + b];
        // the exact sums of 64 sampled outputs
        enum { NS = 64 };
        int si[NS], sj[NS];
        double ex[NS], mag[NS];
        for (int q = 0; q < NS; q++) {
            si[q] = (int)(rnd() % m), sj[q] = (int)(rnd() % n);
            double acc = 0, ab = 0;
            for (int l = 0; l < k; l++) {
                __nv_fp8_e4m3 a, w;
                a.__x = hx[(size_t)si[q] * k + l], w.__x = hw[(size_t)sj[q] * k + l];
                double v = (double)(float)a * hxs[(size_t)si[q] * kb + l / 128] * (double)(float)w *
                           hws[(size_t)(sj[q] / 128) * ldw + l / 128];
                acc += v, ab += fabs(v);
            }
            ex[q] = acc, mag[q] = ab;
        }
        uint8_t *dx, *dw;
        float *dsat, *dsmk, *dws;
        uint16_t *dt, *dy, *dr;
        CK(cudaMalloc(&dx, (size_t)m * k));
        CK(cudaMalloc(&dw, (size_t)n * k));
        CK(cudaMalloc(&dsat, sizeof(float) * m * kb));
        CK(cudaMalloc(&dsmk, sizeof(float) * m * kb));
        CK(cudaMalloc(&dws, sizeof(float) * nb * ldw));
        CK(cudaMalloc(&dt, sizeof(uint16_t) * m * n));
        CK(cudaMalloc(&dy, sizeof(uint16_t) * m * n));
        CK(cudaMalloc(&dr, sizeof(uint16_t) * m * n));
        CK(cudaMemcpy(dx, hx, (size_t)m * k, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dw, hw, (size_t)n * k, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dsat, sat, sizeof(float) * m * kb, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dsmk, hxs, sizeof(float) * m * kb, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dws, hws, sizeof(float) * nb * ldw, cudaMemcpyHostToDevice));
        uint16_t *hy = (uint16_t *)malloc(sizeof(uint16_t) * m * n), *hr = (uint16_t *)malloc(sizeof(uint16_t) * m * n);
        auto check = [&](const uint16_t *y) { // y [m][n] on the host
            double worst = 0;
            for (int q = 0; q < NS; q++) {
                double d = fabs((double)bf16f(y[(size_t)si[q] * n + sj[q]]) - ex[q]) / (ldexp(1.0, -9) * mag[q] + 1e-30);
                worst = d > worst ? d : worst;
            }
            return worst;
        };
        const int reps = 20;
        // the engine's form
        form f0 = make(h, 0, m, n, k, ws, wsb);
        double t0p = -1, t0t = -1;
        if (f0.ok && !run(h, f0, dx, dsat, dw, dws, dt, ws, wsb)) {
            dim3 g((m + 31) / 32, (n + 31) / 32);
            k_tr<<<g, dim3(32, 8)>>>(dt, m, n, m, dr);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(hr, dr, sizeof(uint16_t) * m * n, cudaMemcpyDeviceToHost));
            cudaEventRecord(e0);
            for (int r = 0; r < reps; r++)
                run(h, f0, dx, dsat, dw, dws, dt, ws, wsb);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            t0p = time_ms(e0, e1, reps);
            cudaEventRecord(e0);
            for (int r = 0; r < reps; r++) {
                run(h, f0, dx, dsat, dw, dws, dt, ws, wsb);
                k_tr<<<g, dim3(32, 8)>>>(dt, m, n, m, dr);
            }
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            t0t = time_ms(e0, e1, reps);
            printf("| %s | %d x %d | A = x, B = W (now) | [k/128][m] | yes | %.3f | - | %.3f | %.3f |\n", s.name, n, k,
                   check(hr), t0p, t0t);
        } else {
            printf("| %s | %d x %d | A = x, B = W (now) | [k/128][m] | none (status %d) | | | | |\n", s.name, n, k,
                   f0.status);
        }
        f0.release();
        // the swapped form, both scale layouts
        for (int lay = 0; lay < 2; lay++) {
            form f1 = make(h, 1, m, n, k, ws, wsb);
            const char *ln = lay ? "[m][k/128]" : "[k/128][m]";
            if (!f1.ok) {
                printf("| %s | %d x %d | A = W, B = x | %s | none (status %d) | | | | |\n", s.name, n, k, ln, f1.status);
                f1.release();
                continue;
            }
            CK(cudaMemset(dy, 0xff, sizeof(uint16_t) * m * n));
            int st = run(h, f1, dw, dws, dx, lay ? dsmk : dsat, dy, ws, wsb);
            cudaError_t ce = cudaDeviceSynchronize();
            if (st || ce != cudaSuccess) {
                printf("| %s | %d x %d | A = W, B = x | %s | run failed (status %d, %s) | | | | |\n", s.name, n, k, ln,
                       st, cudaGetErrorString(ce));
                f1.release();
                if (ce != cudaSuccess)
                    return 1; // a sticky error: nothing further runs
                continue;
            }
            CK(cudaMemcpy(hy, dy, sizeof(uint16_t) * m * n, cudaMemcpyDeviceToHost));
            size_t same = 0;
            for (size_t i = 0; i < (size_t)m * n; i++)
                same += hy[i] == hr[i];
            cudaEventRecord(e0);
            for (int r = 0; r < reps; r++)
                run(h, f1, dw, dws, dx, lay ? dsmk : dsat, dy, ws, wsb);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            printf("| %s | %d x %d | A = W, B = x | %s | yes | %.3f | %.4f%% | %.3f | |\n", s.name, n, k, ln, check(hy),
                   100.0 * same / ((double)m * n), time_ms(e0, e1, reps));
            f1.release();
        }
        cudaFree(dx), cudaFree(dw), cudaFree(dsat), cudaFree(dsmk), cudaFree(dws), cudaFree(dt), cudaFree(dy),
            cudaFree(dr);
        free(hx), free(hw), free(hxs), free(hws), free(sat), free(hy), free(hr);
    }
    return 0;
}
