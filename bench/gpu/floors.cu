// CUDA side of bench/gpu: events, random fill, and the floors (see floors.h).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <cublasLt.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "floors.h"

extern "C" void *bench_stream(void)
{
    static cudaStream_t s = nullptr;
    if (!s)
        cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    return s;
}

struct bench_events {
    std::vector<cudaEvent_t> ev;
};

extern "C" struct bench_events *bench_events_new(int n)
{
    bench_events *e = new bench_events();
    e->ev.resize(n + 1);
    for (auto &x : e->ev)
        cudaEventCreate(&x);
    return e;
}

extern "C" void bench_events_record(struct bench_events *ev, int i) { cudaEventRecord(ev->ev[i], (cudaStream_t)bench_stream()); }

extern "C" double bench_events_median(struct bench_events *ev, double *ms)
{
    cudaEventSynchronize(ev->ev.back());
    std::vector<double> d;
    for (size_t i = 0; i + 1 < ev->ev.size(); i++) {
        float t = 0;
        cudaEventElapsedTime(&t, ev->ev[i], ev->ev[i + 1]);
        d.push_back(t);
        if (ms)
            ms[i] = t;
    }
    std::sort(d.begin(), d.end());
    return d.empty() ? 0 : d[d.size() / 2];
}

extern "C" void bench_events_free(struct bench_events *ev)
{
    for (auto &x : ev->ev)
        cudaEventDestroy(x);
    delete ev;
}

__global__ void spin_kernel(long long ns)
{
    long long t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    for (;;) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 >= ns)
            break;
    }
}

extern "C" void bench_spin(double ms) { spin_kernel<<<1, 1, 0, (cudaStream_t)bench_stream()>>>((long long)(ms * 1e6)); }

extern "C" double bench_graph_ms(void (*launch)(void *ud, int i), void *ud, int n, int reps)
{
    cudaStream_t s = (cudaStream_t)bench_stream();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        return -1;
    for (int i = 0; i < n; i++)
        launch(ud, i);
    if (cudaStreamEndCapture(s, &graph) != cudaSuccess)
        return -1;
    if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        cudaGraphDestroy(graph);
        return -1;
    }
    cudaGraphLaunch(exec, s); // warm
    bench_spin(2.0);
    bench_events *ev = bench_events_new(reps);
    for (int r = 0; r < reps; r++) {
        bench_events_record(ev, r);
        cudaGraphLaunch(exec, s);
    }
    bench_events_record(ev, reps);
    double ms = bench_events_median(ev, nullptr);
    bench_events_free(ev);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return ms / n;
}

__device__ uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

__global__ void fill_kernel(uint8_t *d, size_t bytes, uint64_t seed, int kind)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = mix(i * 0x9e3779b97f4a7c15ull + seed);
        uint8_t b = (uint8_t)h;
        switch (kind) {
        case BENCH_E4M3:
            if ((b & 0x7f) == 0x7f)
                b ^= 1; // no NaN
            break;
        case BENCH_E8M0_W:
            b = (uint8_t)(127 - 12 + (h % 13));
            break;
        case BENCH_E8M0_FP4:
            b = (uint8_t)(127 - 10 + (h % 13));
            break;
        case BENCH_BF16:
            // bf16 pairs: high byte a sign + exponent near 2^-4..2^3, low byte any mantissa
            if (i & 1)
                b = (uint8_t)((h & 0x80) | (0x3d + (h >> 8) % 4));
            break;
        default:
            break;
        }
        d[i] = b;
    }
}

extern "C" int bench_fill(void *d, size_t bytes, uint64_t seed, enum bench_fill kind)
{
    fill_kernel<<<1024, 256>>>((uint8_t *)d, bytes, seed, (int)kind);
    return cudaDeviceSynchronize() == cudaSuccess ? 0 : -1;
}

extern "C" double bench_copy_gbps(size_t bytes, int iters)
{
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        cudaFree(a);
        return 0;
    }
    cudaMemset(a, 1, bytes);
    cudaMemset(b, 2, bytes);
    bench_events *ev = bench_events_new(iters);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); // warm
    for (int i = 0; i < iters; i++) {
        bench_events_record(ev, i);
        cudaMemcpyAsync((i & 1) ? a : b, (i & 1) ? b : a, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)bench_stream());
    }
    bench_events_record(ev, iters);
    double ms = bench_events_median(ev, nullptr);
    bench_events_free(ev);
    cudaFree(a);
    cudaFree(b);
    return ms > 0 ? 2.0 * (double)bytes / (ms * 1e-3) / 1e9 : 0;
}

extern "C" double bench_fp8_dense_tflops(int n, int iters)
{
    cublasLtHandle_t h;
    if (cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS)
        return 0;
    void *a, *b, *d, *ws;
    float *one;
    size_t wsb = 32u << 20;
    cudaMalloc(&a, (size_t)n * n);
    cudaMalloc(&b, (size_t)n * n);
    cudaMalloc(&d, (size_t)n * n * 2);
    cudaMalloc(&ws, wsb);
    cudaMalloc(&one, sizeof(float));
    float onef = 1.0f;
    cudaMemcpy(one, &onef, sizeof onef, cudaMemcpyHostToDevice);
    bench_fill(a, (size_t)n * n, 1, BENCH_E4M3);
    bench_fill(b, (size_t)n * n, 2, BENCH_E4M3);
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    int8_t fast = 1;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &one, sizeof one);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &one, sizeof one);
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, n, n, n);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, n, n, n);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, n, n, n);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    double tflops = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS &&
        found) {
        const float alpha = 1, beta = 0;
        for (int i = 0; i < 3; i++)
            cublasLtMatmul(h, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &res.algo, ws, wsb,
                           (cudaStream_t)bench_stream());
        bench_events *ev = bench_events_new(iters);
        for (int i = 0; i < iters; i++) {
            bench_events_record(ev, i);
            cublasLtMatmul(h, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &res.algo, ws, wsb,
                           (cudaStream_t)bench_stream());
        }
        bench_events_record(ev, iters);
        double ms = bench_events_median(ev, nullptr);
        bench_events_free(ev);
        if (ms > 0)
            tflops = 2.0 * n * (double)n * n / (ms * 1e-3) / 1e12;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(h);
    cudaFree(a), cudaFree(b), cudaFree(d), cudaFree(ws), cudaFree(one);
    return tflops;
}

extern "C" void bench_profiler(int on)
{
    cudaDeviceSynchronize();
    if (on)
        cudaProfilerStart();
    else
        cudaProfilerStop();
}
