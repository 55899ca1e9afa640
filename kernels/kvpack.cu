// Packed cache entries unpacked on the device (cuda_kvpack.h): one thread per output value, the
// decoding of inference/kvpack.c's inf_kvunpack_entry / _ikey by the same exact arithmetic (an e4m3
// code by its bits with the block's power of two added to the exponent, subnormal codes as m x 2^-9
// x s; e2m1 codes from their 16 values), so the floats are the host's bit for bit.
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_common.cuh"
#include "cuda_kvpack.h"
extern "C" { // C headers without C++ guards
#include "kvpack.h"
}

__global__ void k_unpack_entries(const uint8_t *packed, long long n, int hd, int nope, int scpad, int eb, float *out)
{
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= n * hd)
        return;
    long long i = t / hd;
    int d = (int)(t - i * hd);
    const uint8_t *p = packed + i * eb;
    uint32_t bits;
    if (d < nope) {
        uint32_t q = p[d], e8 = p[nope + d / 64], em = q & 0x7fu;
        if (em >= 8) {
            bits = ((q & 0x80u) << 24) | ((em << 20) + ((120u + e8 - 127u) << 23));
        } else {
            float s = __uint_as_float(e8 << 23); // e8m0 2^(e8-127): e8 >= 7 (kvpack.h)
            float v = __fmul_rn((float)(int)em * 0x1p-9f, s);
            bits = __float_as_uint((q & 0x80u) ? -v : v);
        }
    } else {
        int r = d - nope;
        bits = (uint32_t)p[nope + scpad + 2 * r] << 16 | (uint32_t)p[nope + scpad + 2 * r + 1] << 24;
    }
    out[t] = __uint_as_float(bits);
}

__constant__ float c_e2m1[16] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f, -0.f, -.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};

__global__ void k_unpack_ikeys(const uint8_t *packed, long long n, int di, int eb, float *out)
{
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= n * di)
        return;
    long long i = t / di;
    int d = (int)(t - i * di);
    const uint8_t *p = packed + i * eb;
    uint32_t code = (p[d / 2] >> ((d & 1) ? 4 : 0)) & 15u, e8 = p[di / 2 + d / 32];
    // 2^(e8-127) as a float: e8 = 0 is 2^-127, a subnormal
    float s = e8 ? __uint_as_float(e8 << 23) : 0x1p-127f;
    out[t] = __fmul_rn(c_e2m1[code], s);
}


extern "C" int cuda_kvunpack_entries(const struct inf_config *c, const void *d_packed, long long n, float *d_out,
                                     void *stream, struct ctx_err *e)
{
    int hd = c->head_dim, nope = c->head_dim - c->qk_rope_head_dim;
    if (nope < 0 || nope % 64)
        return ctx_err_set(e, CTX_EINVAL, "cuda kvunpack: %d nope dims are not whole 64-wide blocks", nope);
    if (n <= 0)
        return 0;
    long long total = n * hd;
    int eb = (int)inf_kvpack_entry_bytes(c), scpad = (nope / 64 + 7) / 8 * 8;
    k_unpack_entries<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)d_packed, n, hd, nope, scpad, eb, d_out);
    return launch_check(e, "k_unpack_entries");
}

extern "C" int cuda_kvunpack_ikeys(const struct inf_config *c, const void *d_packed, long long n, float *d_out,
                                   void *stream, struct ctx_err *e)
{
    int di = c->index_head_dim;
    if (di % 32)
        return ctx_err_set(e, CTX_EINVAL, "cuda kvunpack: %d indexer dims are not whole 32-wide blocks", di);
    if (n <= 0)
        return 0;
    long long total = n * di;
    k_unpack_ikeys<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)d_packed, n, di, (int)inf_kvpack_ikey_bytes(c), d_out);
    return launch_check(e, "k_unpack_ikeys");
}
