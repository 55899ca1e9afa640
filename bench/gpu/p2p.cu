/* bench-gpu-p2p: what one exchange between two GPUs costs inside a decode step, the number that decides
 * whether a tensor- or expert-parallel decode over 2 GPUs can pay off (issue 10: "routed experts
 * expert-parallel; attention replicated or tensor-parallel: measure and choose"). A tensor-parallel
 * layer needs two all-reduces of one token's hidden vector (after the attention's output product and
 * after the MoE), an expert-parallel one a dispatch and a combine of the same size, so the per-layer
 * price is about two exchanges against the layer's decode time (~0.2 ms on one H200, bench-gpu-engine).
 *
 * The exchange is one kernel a GPU, as a decode graph would run it: each of its XB blocks stores its
 * slice of the GPU's partial (n floats) into the other's receive buffer over NVLink (peer access,
 * 16-byte stores), publishes a sequence number with a release store to its flag on the other GPU, waits
 * for the other's with acquire loads, then adds the two slices in one order on both (device 0's first:
 * the same bits on both GPUs). Receive buffers
 * alternate by sequence parity, since the faster GPU may already write the next exchange's partial
 * while the slower one still reads this one's. Rows (medians of 9 replays, each replay a CUDA graph of
 * L kernels on each GPU, both replayed at once): the exchange with 1, 2, 4 and 8 blocks of 128 threads
 * at n = 4096 floats (V4-Flash's hidden size) and 7168 (V4-Pro's), and a graph of L empty kernels (the
 * launch floor in a graph); per kernel = replay time / L. Every exchange's result is checked on the host (the sums, bit-equal on the GPUs).
 *
 * bench-gpu-p2p [--layers L] [--reps R]: L kernels a graph (default 86: two a layer of V4-Flash's 43),
 * R graph replays a row (default 9). Needs two CUDA devices with peer access (CTX_GPUS not read: devices
 * 0 and 1). */
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "bench-gpu-p2p: %s: %s (%s:%d)\n", #x, cudaGetErrorString(e_), __FILE__, __LINE__);        \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

// One GPU's side: its partial, its two receive buffers (written by the peer), its flag (written by the
// peer), its launch counter and its result.
struct side {
    int dev;
    cudaStream_t st;
    float *part, *recv, *out;
    unsigned *flag, *ctr;
};

// Block b of the grid (at most XB blocks) moves its share of the n / 4 float4s (n a multiple of 4) with
// its own flag and counter, so the blocks (and their NVLink round trips) run side by side.
#define XB 8
__global__ void k_exchange(const float *part, float *peer_recv, unsigned *peer_flag, const float *recv,
                           const unsigned *flag, unsigned *ctr, float *out, int n, int first)
{
    __shared__ unsigned seq;
    const int b = blockIdx.x, n4 = n / 4;
    if (threadIdx.x == 0)
        seq = ++ctr[b]; // both GPUs count their launches in step: the exchange's sequence number
    __syncthreads();
    const unsigned s = seq;
    const float4 *p4 = reinterpret_cast<const float4 *>(part);
    float4 *dst = reinterpret_cast<float4 *>(peer_recv + (size_t)(s & 1u) * n);
    for (int i = b * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x)
        dst[i] = p4[i]; // 16-byte stores over NVLink into the peer's memory
    __threadfence_system();
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("st.release.sys.global.u32 [%0], %1;\n" ::"l"(peer_flag + b), "r"(s) : "memory");
        unsigned v;
        do
            asm volatile("ld.acquire.sys.global.u32 %0, [%1];\n" : "=r"(v) : "l"(flag + b) : "memory");
        while (v < s); // the peer can be one exchange ahead, never behind once it has published s
    }
    __syncthreads();
    const float4 *src = reinterpret_cast<const float4 *>(recv + (size_t)(s & 1u) * n);
    float4 *o4 = reinterpret_cast<float4 *>(out);
    for (int i = b * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
        const float4 r = __ldcv(src + i), m = p4[i]; // r: written by the peer, not from a stale L1 line
        o4[i] = first ? make_float4(m.x + r.x, m.y + r.y, m.z + r.z, m.w + r.w)
                      : make_float4(r.x + m.x, r.y + m.y, r.z + m.z, r.w + m.w);
    }
}

__global__ void k_empty(unsigned *ctr)
{
    if (threadIdx.x == 0 && ctr[XB] == 0xffffffffu) // never true: keeps the launch from being elided
        ctr[0] = 0;
}

static double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// A graph of L launches of kernel kind (0: exchange, 1: empty) on each side, replayed R times with both
// sides at once; returns the median replay time in us (host wall, both streams synchronised).
static double run(side (&sd)[2], int kind, int n, int nb, int L, int R)
{
    cudaGraphExec_t ex[2];
    for (int d = 0; d < 2; d++) {
        side &a = sd[d], &b = sd[1 - d];
        CK(cudaSetDevice(a.dev));
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(a.st, cudaStreamCaptureModeThreadLocal));
        for (int l = 0; l < L; l++) {
            if (kind == 0)
                k_exchange<<<nb, 128, 0, a.st>>>(a.part, b.recv, b.flag, a.recv, a.flag, a.ctr, a.out, n, d == 0);
            else
                k_empty<<<1, 32, 0, a.st>>>(a.ctr);
        }
        CK(cudaStreamEndCapture(a.st, &g));
        CK(cudaGraphInstantiate(&ex[d], g, 0));
        CK(cudaGraphDestroy(g));
    }
    std::vector<double> t;
    for (int r = 0; r < R + 1; r++) { // the first replay warms up
        auto t0 = std::chrono::steady_clock::now();
        for (int d = 0; d < 2; d++) {
            CK(cudaSetDevice(sd[d].dev));
            CK(cudaGraphLaunch(ex[d], sd[d].st));
        }
        for (int d = 0; d < 2; d++) {
            CK(cudaSetDevice(sd[d].dev));
            CK(cudaStreamSynchronize(sd[d].st));
        }
        auto t1 = std::chrono::steady_clock::now();
        if (r)
            t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    for (int d = 0; d < 2; d++) {
        CK(cudaSetDevice(sd[d].dev));
        CK(cudaGraphExecDestroy(ex[d]));
    }
    return median(t);
}

int main(int argc, char **argv)
{
    int L = 86, R = 9;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            R = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-gpu-p2p [--layers L] [--reps R]\n");
            return 2;
        }
    }
    if (L < 1 || L > 10000 || R < 1 || R > 1000) {
        fprintf(stderr, "bench-gpu-p2p: --layers 1..10000, --reps 1..1000\n");
        return 2;
    }
    int nd = 0;
    if (cudaGetDeviceCount(&nd) != cudaSuccess || nd < 2) {
        fprintf(stderr, "bench-gpu-p2p: needs two CUDA devices (found %d)\n", nd);
        return 1;
    }
    int p01 = 0, p10 = 0;
    CK(cudaDeviceCanAccessPeer(&p01, 0, 1));
    CK(cudaDeviceCanAccessPeer(&p10, 1, 0));
    if (!p01 || !p10) {
        fprintf(stderr, "bench-gpu-p2p: devices 0 and 1 have no peer access\n");
        return 1;
    }
    const int nmax = 7168;
    side sd[2];
    for (int d = 0; d < 2; d++) {
        side &a = sd[d];
        a.dev = d;
        CK(cudaSetDevice(d));
        CK(cudaDeviceEnablePeerAccess(1 - d, 0));
        CK(cudaStreamCreateWithFlags(&a.st, cudaStreamNonBlocking));
        CK(cudaMalloc(&a.part, sizeof(float) * nmax));
        CK(cudaMalloc(&a.recv, sizeof(float) * 2 * nmax));
        CK(cudaMalloc(&a.out, sizeof(float) * nmax));
        CK(cudaMalloc(&a.flag, XB * sizeof(unsigned)));
        CK(cudaMalloc(&a.ctr, (XB + 1) * sizeof(unsigned)));
        CK(cudaMemset(a.flag, 0, XB * sizeof(unsigned)));
        CK(cudaMemset(a.ctr, 0, (XB + 1) * sizeof(unsigned)));
        std::vector<float> h(nmax);
        for (int i = 0; i < nmax; i++)
            h[i] = (float)((i * 37 + 11 * d) % 1000) * 0.001f - 0.5f + d;
        CK(cudaMemcpy(a.part, h.data(), sizeof(float) * nmax, cudaMemcpyHostToDevice));
    }
    char name[2][256];
    for (int d = 0; d < 2; d++) {
        cudaDeviceProp p;
        CK(cudaGetDeviceProperties(&p, d));
        snprintf(name[d], sizeof name[d], "%s", p.name);
    }
    printf("Two-GPU exchange inside a CUDA graph (devices 0: %s, 1: %s; peer access both ways): %d kernels a graph "
           "on each GPU, both graphs replayed at once, median of %d replays; per kernel = replay / %d\n\n",
           name[0], name[1], L, R, L);
    printf("| kernel | blocks | floats | bytes each way | replay us | per kernel us | result |\n"
           "|---|---|---|---|---|---|---|\n");
    int bad = 0;
    const double te = run(sd, 1, 0, 1, L, R);
    printf("| empty (the launch floor in a graph) | 1 | - | - | %.1f | %.2f | - |\n", te, te / L);
    for (int nb : {1, 2, 4, 8})
    for (int n : {4096, 7168}) {
        const double tx = run(sd, 0, n, nb, L, R);
        // check: both GPUs hold part0 + part1, the same bits
        std::vector<float> p0(n), p1(n), o0(n), o1(n);
        CK(cudaSetDevice(0));
        CK(cudaMemcpy(p0.data(), sd[0].part, sizeof(float) * n, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(o0.data(), sd[0].out, sizeof(float) * n, cudaMemcpyDeviceToHost));
        CK(cudaSetDevice(1));
        CK(cudaMemcpy(p1.data(), sd[1].part, sizeof(float) * n, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(o1.data(), sd[1].out, sizeof(float) * n, cudaMemcpyDeviceToHost));
        int wrong = 0;
        for (int i = 0; i < n; i++) {
            const float want = p0[i] + p1[i];
            wrong += memcmp(&o0[i], &want, 4) != 0 || memcmp(&o1[i], &want, 4) != 0;
        }
        bad += wrong;
        printf("| exchange (all-reduce of two partials) | %d | %d | %d | %.1f | %.2f | %s |\n", nb, n, 4 * n, tx, tx / L,
               wrong ? "WRONG" : "both GPUs: part0 + part1, bit-equal");
    }
    unsigned c0 = 0, c1 = 0;
    CK(cudaSetDevice(0));
    CK(cudaMemcpy(&c0, sd[0].ctr, sizeof c0, cudaMemcpyDeviceToHost));
    CK(cudaSetDevice(1));
    CK(cudaMemcpy(&c1, sd[1].ctr, sizeof c1, cudaMemcpyDeviceToHost));
    printf("\n%u exchanges by block 0 on each GPU (%s)\n", c0, c0 == c1 ? "in step" : "OUT OF STEP");
    for (int d = 0; d < 2; d++) {
        CK(cudaSetDevice(d));
        cudaFree(sd[d].part), cudaFree(sd[d].recv), cudaFree(sd[d].out), cudaFree(sd[d].flag), cudaFree(sd[d].ctr);
        cudaStreamDestroy(sd[d].st);
    }
    return bad || c0 != c1 ? 1 : 0;
}
