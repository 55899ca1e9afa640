// Small pieces every kernel file of kernels/ needs (internal to kernels/, included by the .cu files
// only): the runtime-error plumbing of the launch functions and the inline PTX wrappers of the Hopper
// instructions they share (mma.sync shapes, cp.async, bf16x2 conversion, e8m0 scales). One copy here,
// so that every kernel issues these instructions exactly the same way.
#ifndef KERNELS_CUDA_COMMON_CUH
#define KERNELS_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

#include <atomic>

extern "C" {
#include "err.h"
// The process-wide Programmatic Dependent Launch switch (gemm.cu; declared for C callers in gemm.h).
int cuda_pdl_enabled(void);
void cuda_pdl_set(int on);
void cuda_pdl_plain_next(void);
int cuda_pdl_take_plain(void);
}

namespace {

// A default-on switch of a kernel path: env `name`=0 turns it off (read once per process); set(1 on,
// 0 off) overrides it for the calls after, set(< 0) returns to the environment's (test and benchmark
// entries). A captured decode graph keeps the kernels it captured unless decode_graph checks the switch.
struct env_switch {
    const char *name;
    std::atomic<int> mode{-1}, env{-1};
    int on()
    {
        int v = env.load();
        if (v < 0) { // a race reads the same environment twice: harmless
            const char *s = getenv(name);
            v = !(s && s[0] == '0' && s[1] == 0);
            env.store(v);
        }
        int m = mode.load();
        return m < 0 ? v : m;
    }
    void set(int v) { mode.store(v < 0 ? -1 : v != 0); }
};

// The inclusive prefix sum of v over the warp's lanes (lane 0 first); integers, so exact.
template <typename T> __device__ __forceinline__ T warp_incl_scan(T v, int lane)
{
    for (int o = 1; o < 32; o <<= 1) {
        const T t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o)
            v += t;
    }
    return v;
}

// A CUDA runtime error as CTX_EIO naming what failed.
inline int cuda_fail(struct ctx_err *e, cudaError_t rc, const char *what)
{
    return ctx_err_set(e, CTX_EIO, "%s: %s", what, cudaGetErrorString(rc));
}

// After a launch: a configuration error (bad grid, too much shared memory) as CTX_EIO.
inline int launch_check(struct ctx_err *e, const char *what)
{
    cudaError_t rc = cudaGetLastError();
    return rc == cudaSuccess ? 0 : cuda_fail(e, rc, what);
}

__device__ __forceinline__ float e8m0_to_float(uint32_t b)
{
    // 2^(b-127); b = 0 is the subnormal 2^-127, 255 is NaN (never a valid scale).
    return b == 0 ? __uint_as_float(0x00400000u) : b == 255 ? __uint_as_float(0x7fc00000u)
                                                            : __uint_as_float(b << 23);
}

// d += A (16x32 e4m3, row) * B (32x8 e4m3, col), fp32 accumulators.
__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulators; also with A as an array.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_bf16_16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to bf16 (nearest even), lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// 16 bytes from shared memory (a 32-bit shared address).
__device__ __forceinline__ uint4 lds128(uint32_t addr)
{
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    return v;
}

// Asynchronous global -> shared copies (zero-filled when !valid) and their groups.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// Named barriers 1..15 (0 is __syncthreads): `count` threads (a multiple of 32) take part;
// bar.arrive signals without waiting (a producer), bar.sync waits for the count (a consumer); both
// order the threads' earlier memory accesses before the waiters' later ones.
__device__ __forceinline__ void named_bar_sync(int id, int count)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int count)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// ---- Programmatic Dependent Launch (Hopper; kernels/README.md "PDL") ----
//
// A kernel launched through launch_pdl may start while the previous kernel of its stream is still
// running (a programmatic edge when captured in a graph). So every such kernel calls pdl_wait()
// before its first read of anything an earlier kernel wrote and before its first global write, with
// no return before it: only immutable data (weights, scales, tables, parameters) may be read first.
// pdl_wait() returns once the previous grid has completed and its writes are visible, and that grid
// waited for its own predecessor the same way, so every earlier kernel has completed too. pdl_trigger()
// lets the next kernel be scheduled before this one ends; each kernel calls it right after its wait,
// so at most one kernel runs ahead (its blocks then hold only the resources this grid left free).
// Both are no-ops in a kernel launched plainly, so the kernels stay correct on <<<>>> launches.
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The wait, then the trigger: the first statement of every kernel launched with launch_pdl (or the
// first after its prefetch of immutable data).
__device__ __forceinline__ void pdl_begin()
{
    pdl_wait();
    pdl_trigger();
}

// kernel<<<grid, block, smem, st>>>(args...) with the programmatic-serialization attribute when the
// switch is on (cuda_pdl_enabled: env CTX_CUDA_PDL=0 turns it off, cuda_pdl_set changes it), a plain
// launch otherwise. The arguments are converted to the kernel's parameter types as <<<>>> does.
// Returns the launch's error, which cudaGetLastError (launch_check, LAUNCHED) also reports. Should
// the runtime refuse the attribute where a plain launch works (a device without PDL), the launch is
// made plainly and the switch turned off for the process, so cuda_pdl_enabled() says what ran.
template <typename... Params, typename... Args>
inline cudaError_t launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                              const Args &...args)
{
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    const int plain = cuda_pdl_take_plain(); // cuda_pdl_plain_next: this one launch plain
    cfg.numAttrs = cuda_pdl_enabled() && !plain ? 1 : 0;
    cudaError_t rc = cudaLaunchKernelEx(&cfg, kernel, args...);
    if (rc != cudaSuccess && cfg.numAttrs) {
        cudaGetLastError(); // the refused launch's error: not this call's result if the plain one works
        cfg.numAttrs = 0;
        rc = cudaLaunchKernelEx(&cfg, kernel, args...);
        if (rc == cudaSuccess)
            cuda_pdl_set(0);
    }
    return rc;
}

} // namespace

#endif
