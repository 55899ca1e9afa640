// ---- grouped GEMM, sixth kernel (CUDA_MOE_GEMM_V6): V5 with the stage's wgmma overlapping the next
// stage's conversion ----
//
// Why: in V5 a CTA's warps convert stage kb, wait at a barrier, run its 8 wgmma and wait for them, so
// within a CTA the tensor cores and the conversion take turns; the other CTA of the SM fills some of
// the gaps. V6 double-buffers the f16 tiles (and the row scales) and issues stage kb's wgmma group
// before converting stage kb + 1 into the other buffer, waiting for the group only then: the
// conversion runs while the tensor cores work. The two buffers (96 KB) + the 3-stage raw ring leave
// room for one CTA an SM (151 KB), with up to 255 registers a thread (the stage partial stays live
// across the conversion).
// - Order in iteration kb: (a) stage kb: issue its wgmma group on buffer kb % 2 (or, if its guard
//   tripped, run V1's arithmetic from its raw ring slot); (b) wait for raw stage kb + 1, barrier (every
//   warp is past (a), so ring slot kb % 3 is free); (c) cp.async raw stage kb + 3 into that slot;
//   (d) convert stage kb + 1 into buffer (kb + 1) % 2 (last read by stage kb - 1's group, which
//   every thread waited for before the previous iteration's barrier), with the stage's activation
//   scales copied next to it (slot kb % 3 is being refilled by then); (e) wait for stage kb's group,
//   add its partial (V5's fma); (f) fence.proxy.async, barrier-or of stage kb + 1's guard.
// - Everything else (tile, conversions, layouts, guard, scales, fallback arithmetic, per-output
//   arithmetic) is V5's, so V6 gives V5's bytes.
constexpr int M6_RING = 3;
constexpr int M6_F = M4_W + M4_X + M4_RS + M_BS; // one f16 tile pair + its row scales + the pairs' scales
constexpr int M6_SMEM = M6_RING * M_STAGE + 2 * M6_F + M4_LUT;
static_assert(M6_RING * M_STAGE % 128 == 0 && M6_F % 128 == 0, "f16 tiles 128-byte aligned");
static_assert(M6_SMEM + M_BM * 4 + 1024 <= 228 * 1024, "one CTA per SM");
__device__ unsigned long long g_moe_v6_fallbacks;

// Keeps the compiler from moving reads or writes of an accumulator across a wgmma issue or wait (the
// registers are written asynchronously between the two).
template <int M>
__device__ __forceinline__ void m6_fence_regs(float (&d)[M])
{
#pragma unroll
    for (int i = 0; i < M; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
__device__ __forceinline__ void m6_issue(float (&p)[32], uint32_t sWh, uint32_t sXh, int wg)
{
    float(&q)[N / 2] = *reinterpret_cast<float(*)[N / 2]>(p);
    const uint64_t da = m5_desc(sWh + wg * 2048), db = m5_desc(sXh);
    m6_fence_regs(q);
    m5_fence();
#pragma unroll
    for (int s = 0; s < 8; s++)
        m5_wgmma<N>(q, da + (uint64_t)(s * (M_BN * 32 / 16)), db + (uint64_t)(s * (M_BM * 32 / 16)), s);
    m5_commit();
    m6_fence_regs(q);
}
template <int N>
__device__ __forceinline__ void m6_finish(float (&acc)[8][4], float (&p)[32], const float *sBS, uint32_t sRS, int wg,
                                          int w4, int g, int t)
{
    float(&q)[N / 2] = *reinterpret_cast<float(*)[N / 2]>(p);
    m5_wait0();
    m6_fence_regs(q);
    const uint32_t r0 = wg * 64 + w4 * 16 + g;
    const float w0 = __uint_as_float(lds32(sRS + r0 * 4)), w1 = __uint_as_float(lds32(sRS + (r0 + 8) * 4));
#pragma unroll
    for (int j = 0; j < N / 8; j++) {
        const float2 a2 = *reinterpret_cast<const float2 *>(sBS + j * 8 + 2 * t);
        float(&o)[4] = acc[j];
        o[0] = __fmaf_rn(__fmul_rn(q[4 * j + 0], a2.x), w0, o[0]);
        o[1] = __fmaf_rn(__fmul_rn(q[4 * j + 1], a2.y), w0, o[1]);
        o[2] = __fmaf_rn(__fmul_rn(q[4 * j + 2], a2.x), w1, o[2]);
        o[3] = __fmaf_rn(__fmul_rn(q[4 * j + 3], a2.y), w1, o[3]);
    }
}

__global__ void __launch_bounds__(256, 1) moe_gemm6_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, w4 = warp & 3;
    const int x = __ldg(tiles + 2 * tile), start = __ldg(tiles + 2 * tile + 1);
    const int rows = min(M_BM, __ldg(offsets + x + 1) - start);
    const int nbv = (rows + 7) >> 3;
    const int nN = nbv <= 2 ? 16 : nbv <= 4 ? 32 : nbv <= 6 ? 48 : 64; // CTA-uniform
    const int row0 = blockIdx.x * M_BN;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    const uint8_t *w = wtab[x], *ws = stab[x];
    if (tid < M_BM)
        sP[tid] = tid < rows ? __ldg(perm + start + tid) : -1;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sF = sbase + M6_RING * M_STAGE, sLUT = sF + 2 * M6_F;
    if (tid <= CUDA_MOE4_SPREAD) {
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++)
            l[c >> 2] |= cuda_moe4_lut_byte(c, tid) << (8 * (c & 3));
        asm volatile("st.shared.v2.u32 [%0], {%1,%2};\n" ::"r"(sLUT + tid * 8), "r"(l[0]), "r"(l[1]));
    }
    __syncthreads();

    const uint8_t *asrc[2], *bsrc[2];
    bool aval[2], bval[2];
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256;
        const int ra = i >> 2, ca = i & 3;
        aval[j] = row0 + ra < n;
        asrc[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
        const int rb = i >> 3, cb = i & 7;
        const int pr = sP[rb];
        bval[j] = pr >= 0;
        bsrc[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
    }
    const bool as_val = tid < M_BN && row0 + tid < n;
    const uint8_t *as_src = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < M_BM ? sP[tid] : -1;
    const float *bs_src = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;

    auto load_stage = [&](int kb) {
        const uint32_t s0 = sbase + (kb % M6_RING) * M_STAGE;
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256, ra = i >> 2, ca = i & 3, rb = i >> 3, cb = i & 7;
            cp_async16(s0 + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4), asrc[j] + (size_t)kb * 64, aval[j]);
            cp_async16(s0 + M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4), bsrc[j] + (size_t)kb * 128, bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, as_src + kb * 4, as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, bs_src + kb, pb >= 0);
    };
    // Stage kb's raw slot -> f16 buffer kb % 2 (V5's conversion); returns whether the guard trips here.
    auto convert = [&](int kb) -> int {
        const uint32_t sA = sbase + (kb % M6_RING) * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const uint32_t sWh = sF + (kb & 1) * M6_F, sXh = sWh + M4_W, sRS = sXh + M4_X;
        if (tid < M_BM) // the pairs' activation scales of this stage, for (e) after the slot is refilled
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRS + M4_RS + tid * 4),
                         "f"(__uint_as_float(lds32(sB + M_B + tid * 4))));
        int off_e = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int ra, ca;
            cuda_moe4_wpiece(tid + j * 256, &ra, &ca);
            const uint4 raw = m3_lds128(sA + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4));
            const uint32_t codes = lds32(sAS + ra * 4);
            const uint32_t mx = max(max(codes & 0xffu, (codes >> 8) & 0xffu), max((codes >> 16) & 0xffu, codes >> 24));
            const uint32_t sh = mx - ((codes >> (8 * ca)) & 0xffu);
            const bool at_e = sh <= (uint32_t)CUDA_MOE4_SPREAD && mx != 255u;
            off_e |= !at_e;
            const uint2 l = lds64(sLUT + (at_e ? CUDA_MOE4_SPREAD - sh : 0u) * 8);
            const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                uint32_t o[4];
                cuda_moe4_convert(wv[c], l.x, l.y, o);
                m3_sts128(sWh + cuda_moe5_off(ra, 32 * ca + 8 * c, M_BN), o[0], o[1], o[2], o[3]);
            }
            if (ca == 0) {
                const float rs = e8m0_to_float(mx) * 0x1p-13f;
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRS + ra * 4), "f"(rs));
            }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256;
            if ((i >> 6) >= nbv)
                continue;
            int rb, cb;
            cuda_moe4_xpiece(i, &rb, &cb);
            const uint4 raw = m3_lds128(sB + rb * 128 + ((cb ^ (rb & 7)) << 4));
            m3_sts128(sXh + cuda_moe5_off(rb, 16 * cb, M_BM), m4_e4m3x2_to_f16x2(raw.x), m4_e4m3x2_to_f16x2(raw.x >> 16),
                      m4_e4m3x2_to_f16x2(raw.y), m4_e4m3x2_to_f16x2(raw.y >> 16));
            m3_sts128(sXh + cuda_moe5_off(rb, 16 * cb + 8, M_BM), m4_e4m3x2_to_f16x2(raw.z),
                      m4_e4m3x2_to_f16x2(raw.z >> 16), m4_e4m3x2_to_f16x2(raw.w), m4_e4m3x2_to_f16x2(raw.w >> 16));
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        return off_e;
    };

    float acc[8][4], p[32];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;
#pragma unroll
    for (int i = 0; i < 32; i++)
        p[i] = 0.f;

    for (int s = 0; s < M6_RING; s++) {
        if (s < kb_n)
            load_stage(s);
        cp_async_commit();
    }
    cp_async_wait<M6_RING - 1>();
    __syncthreads(); // raw stage 0 landed
    int fallback = __syncthreads_or(convert(0));
    for (int kb = 0; kb < kb_n; kb++) {
        const uint32_t sWh = sF + (kb & 1) * M6_F, sXh = sWh + M4_W, sRS = sXh + M4_X;
        const float *sBS = reinterpret_cast<const float *>(smem + (kb % M6_RING) * M_STAGE + M_A + M_AS + M_B);
        const float *sXS = reinterpret_cast<const float *>(smem + M6_RING * M_STAGE + (kb & 1) * M6_F + M4_W + M4_X +
                                                           M4_RS); // (e)'s copy of sBS
        // (a)
        if (fallback) {
            if (tid == 0)
                atomicAdd(&g_moe_v6_fallbacks, 1ull); // (cuda_moe_v6_fallback_stages)
            const uint32_t sA = sbase + (kb % M6_RING) * M_STAGE;
            m5_fallback(acc, sA, sA + M_A, sA + M_A + M_AS, sBS, wg * 64 + w4 * 16, g, t, nbv);
        } else if (nN == 16)
            m6_issue<16>(p, sWh, sXh, wg);
        else if (nN == 32)
            m6_issue<32>(p, sWh, sXh, wg);
        else if (nN == 48)
            m6_issue<48>(p, sWh, sXh, wg);
        else
            m6_issue<64>(p, sWh, sXh, wg);
        // (b) raw stage kb + 1 landed (kb + 2 may be in flight); every warp is past (a)
        cp_async_wait<M6_RING - 2>();
        __syncthreads();
        // (c)
        if (kb + M6_RING < kb_n)
            load_stage(kb + M6_RING);
        cp_async_commit();
        // (d)
        const int off_next = kb + 1 < kb_n ? convert(kb + 1) : 0;
        // (e)
        if (!fallback) {
            if (nN == 16)
                m6_finish<16>(acc, p, sXS, sRS, wg, w4, g, t);
            else if (nN == 32)
                m6_finish<32>(acc, p, sXS, sRS, wg, w4, g, t);
            else if (nN == 48)
                m6_finish<48>(acc, p, sXS, sRS, wg, w4, g, t);
            else
                m6_finish<64>(acc, p, sXS, sRS, wg, w4, g, t);
        }
        // (f) buffer (kb + 1) % 2 complete and visible to the async proxy; stage kb's reads done
        fallback = __syncthreads_or(off_next);
    }
    cp_async_wait<0>();
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (j >= nbv)
            break;
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const int rr = row0 + wg * 64 + w4 * 16 + g + (v >> 1) * 8, cc = j * 8 + 2 * t + (v & 1);
            if (rr < n && cc < rows)
                y[(size_t)sP[cc] * n + rr] = __float2bfloat16_rn(acc[j][v]);
        }
    }
}

