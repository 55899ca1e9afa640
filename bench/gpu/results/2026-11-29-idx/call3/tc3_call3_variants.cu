// Indexer scores of prefill chunks on Hopper's warpgroup MMA (k_idx_score_tc3; 128 dims and 33..64
// heads, V4-Flash/Pro's indexer; other shapes keep k_idx_score_tc2). Nsight Compute on tc2 at S = 2048
// over 125K entries: issue slots 55%, tensor pipe 38%, 128 registers with local-memory spills, 2 blocks
// of 8 warps an SM: latency/issue-bound on mma.sync and its fragment loads, each n8 tile's epilogue
// waiting for its two mma chains, and the head sums behind a block barrier. Here:
// - a block is NWG = 2 warpgroups, each taking IDX_TC3_QW = 2 queries: a warpgroup's M = 64 rows = the
//   64 heads of one query (rows past Hi and queries past S are zeros), held as wgmma A fragments in
//   registers for the whole run (mma.sync's m16n8k16 A fragment per warp); N = the tile's 64 entries,
//   converted to bf16 once per block (from the fp32 staging that cp.async filled a tile ahead, as tc2)
//   into shared memory in wgmma's canonical no-swizzle K-major layout (idx3_off), double-buffered;
// - the same dot products and roundings as k_idx_score_tc, so its bits on every entry: each 32-dim
//   block is two chained wgmma m64n64k16 from zero (scale-d 0 on the first; the tensor core's k16 sums
//   are mma.sync's, as moe_gemm V5 found on the H200), the blocks' partials added in fp32 in block order
//   (run = P0, run += P1 ..), the bf16 epilogue idx_term_bf16x2, the terms (bf16) staged in shared
//   memory and one thread per (query, entry) adding its heads in head order;
// - pipelining: a warpgroup's 4 QW groups (query, block) of a tile alternate between two accumulators,
//   group k + 2 issued right after group k's fp32 adds and before its epilogue, so the tensor cores
//   work while the warps round and stage terms; the terms are double-buffered by tile, and the head
//   sums of the last tile (every thread one chain) run 8 heads between consecutive MMA groups of this
//   one, hidden behind them; one block barrier a tile.
// Grid (ceil(S / queries per block), runs), the groups fastest (tc2's L2 reuse), tpb tiles a run;
// 256 threads, one block an SM (223 registers; idx_tc3_smem: 136 KB).
#define IDX_TC3_QW 2
#define IDX_TC3_WG 2 // warpgroups a block
#define IDX_TC3_TST 72 // the terms' row stride (bf16): conflict-free u32 stores of the accumulator fragment
// The byte offset of (row, k) in a 64-row x 128-dim bf16 operand, canonical no-swizzle K-major: core
// matrices of 8 rows x 16 bytes stored as 128 contiguous bytes; the two core matrices of a k16 step 128
// bytes apart (leading byte offset), 8-row groups 256 bytes apart (stride byte offset), k16 steps 2 KB.
__device__ __forceinline__ uint32_t idx3_off(int row, int k)
{
    return (uint32_t)((k >> 4) * 2048 + (row >> 3) * 256 + ((k >> 3) & 1) * 128 + (row & 7) * 16 + (k & 7) * 2);
}
// Shared-memory matrix descriptor (no swizzle): start >> 4, leading byte offset 128 >> 4 at bit 16,
// stride byte offset 256 >> 4 at bit 32.
__device__ __forceinline__ uint64_t idx3_desc(uint32_t saddr)
{
    return (uint64_t)((saddr & 0x3ffffu) >> 4) | ((uint64_t)(128 >> 4) << 16) | ((uint64_t)(256 >> 4) << 32);
}
__device__ __forceinline__ void idx3_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void idx3_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void idx3_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins the accumulator's registers at this point (reads after a wait stay after it).
__device__ __forceinline__ void idx3_pin(float (&d)[32])
{
#pragma unroll
    for (int i = 0; i < 32; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}
// d (m64n64 f32 fragment) = A (registers: the m64k16 fragment, mma.sync m16n8k16's per warp) * B (db:
// 64 x 16 bf16, K-major)^T + (acc ? d : 0)
__device__ __forceinline__ void idx3_wgmma(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int acc)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %37, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, "
                 "%11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, "
                 "%31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n\t}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
                   "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
                   "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
#else
    (void)d;
    (void)a;
    (void)db;
    (void)acc;
    __trap(); // wgmma needs sm_90a (the build's default -gencode)
#endif
}
// d (m64n64 f32 fragment) = A (da: 64 x 16 bf16 in shared memory, K-major) * B (db)^T + (acc ? d : 0)
__device__ __forceinline__ void idx3_wgmma_ss(float (&d)[32], uint64_t da, uint64_t db, int acc)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %34, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, "
                 "%11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, "
                 "%31}, %32, %33, p, 1, 1, 0, 0;\n\t}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
                   "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
                   "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(acc));
#else
    (void)d;
    (void)da;
    (void)db;
    (void)acc;
    __trap(); // wgmma needs sm_90a (the build's default -gencode)
#endif
}
// wgmma.wait_group n, n a constant after unrolling (at most 3 groups pending)
__device__ __forceinline__ void idx3_wait_n(int n)
{
    if (n <= 0)
        idx3_wait<0>();
    else if (n == 1)
        idx3_wait<1>();
    else if (n == 2)
        idx3_wait<2>();
    else
        idx3_wait<3>();
}
template <bool AREG>
constexpr size_t idx_tc3_smem_v()
{
    // (AREG false: the queries' heads, 16 KB a query) + the keys in bf16 x 2 (16 KB each) + their fp32
    // staging (32 KB) + the terms x 2 (64 heads x TST bf16 a query)
    return (AREG ? 0 : (size_t)IDX_TC3_WG * IDX_TC3_QW * 16384) + 2 * 16384 + 32768 +
           2 * (size_t)IDX_TC3_WG * IDX_TC3_QW * 64 * IDX_TC3_TST * 2;
}
// AREG: the heads as A fragments in registers (else in shared memory, canonical); D: MMA groups in flight
template <int NWG, bool AREG, int D>
__global__ void __launch_bounds__(NWG * 128, 1) k_idx_score_tc3(const float *qI, const float *wts, const float *keys,
                                                                int Hi, int S, const long long *ppos, float *score,
                                                                size_t ld, int tpb)
{
    constexpr int DI = 128, ET = IDX_TC_ET, QW = IDX_TC3_QW, QB = NWG * QW, NT = NWG * 128, TST = IDX_TC3_TST;
    constexpr int NP = ET * DI / 4, NCH = NP / NT, G = 4 * QW; // 16-byte pieces of a tile, a thread's; MMA groups
    static_assert(ET == 64 && NP % NT == 0 && QW == 2 && (D == 2 || D == 4),
                  "a tile is one m64n64 B operand; 4 QW = 8 steps of 8 heads");
    extern __shared__ __align__(16) unsigned char idx_smem[];
    unsigned char *sA = idx_smem;                             // (!AREG) [QB][64 heads x 128 dims] bf16, canonical
    unsigned char *sB = sA + (AREG ? 0 : QB * 16384);         // [2][64 entries x 128 dims] bf16, canonical
    float *stg = (float *)(sB + 2 * 16384);                   // [NP][4] the next tile's fp32 keys, in piece order
    uint16_t *ts = (uint16_t *)(stg + ET * DI);               // [2][QB][64 heads][TST] the terms (bf16), by tile parity
    const int tid = threadIdx.x, wg = tid >> 7, t128 = tid & 127, w4 = t128 >> 5, lane = tid & 31, g = lane >> 2,
              t = lane & 3;
    long long pos0 = *ppos;
    int sb = (int)blockIdx.x * QB;
    if (sb >= S)
        return;
    int nq = S - sb < QB ? S - sb : QB;
    long long nvmax = (pos0 + sb + nq) / 4; // the entries of the block's last query
    long long e0 = (long long)blockIdx.y * tpb * ET, eend = e0 + (long long)tpb * ET;
    if (eend > nvmax || blockIdx.y == gridDim.y - 1) // the last run takes every entry left (max_n too small)
        eend = nvmax;
    if (e0 >= eend)
        return;
    const uint32_t sAa = (uint32_t)__cvta_generic_to_shared(sA), sBa = (uint32_t)__cvta_generic_to_shared(sB),
                   stga = (uint32_t)__cvta_generic_to_shared(stg);
    // piece i (16 bytes) of a 64 x 128 fp32 block: each warp's 32 pieces are 8 rows x 4 consecutive 16-byte
    // columns, so that the bf16 stores (8 bytes, canonical layout) cover 256 distinct bytes
    auto prow = [](int i) { return (((i >> 8) & 7) << 3) | (i & 7); };
    auto pc4 = [](int i) { return (((i >> 5) & 7) << 2) | ((i >> 3) & 3); };
    // the tile at entry t0 into the staging buffer by cp.async (zeros past eend)
    auto load = [&](long long t0) {
#pragma unroll
        for (int j = 0; j < NCH; j++) {
            int i = tid + j * NT, r = prow(i);
            bool ok = t0 + r < eend;
            const float *src = keys + (ok ? (size_t)(t0 + r) * DI + 4 * pc4(i) : 0);
            cp_async16(stga + 16u * (uint32_t)i, src, ok);
        }
        cp_async_commit();
    };
    load(e0);
    // the queries' heads (rows past Hi and queries past S: zeros): A fragments of this warpgroup's queries
    // (rows 16 w4 + g (+ 8) of the m64k16 steps), or every query of the block in shared memory; the rows'
    // head weights as bf16 pairs
    uint32_t a[AREG ? QW : 1][8][4], wv2[QW][2];
#pragma unroll
    for (int j = 0; j < QW; j++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int qq = wg * QW + j, h = 16 * w4 + g + 8 * r;
            bool ok = qq < nq && h < Hi;
            float w = ok ? wts[(size_t)(sb + qq) * Hi + h] : 0.f;
            wv2[j][r] = pack_bf16x2(w, w);
            if (AREG) {
                const float *qr = qI + ((size_t)(sb + (ok ? qq : 0)) * Hi + (ok ? h : 0)) * DI;
#pragma unroll
                for (int kk = 0; kk < 8; kk++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        float2 v = ok ? *reinterpret_cast<const float2 *>(qr + kk * 16 + 2 * t + 8 * c)
                                      : make_float2(0.f, 0.f);
                        a[AREG ? j : 0][kk][r + 2 * c] = pack_bf16x2(v.x, v.y);
                    }
            }
        }
    if (!AREG)
        for (int i = tid; i < QB * NP; i += NT) {
            int qq = i / NP, pi = i % NP, h = prow(pi), c4 = pc4(pi);
            bool ok = qq < nq && h < Hi;
            float4 v = ok ? __ldg(reinterpret_cast<const float4 *>(qI + ((size_t)(sb + qq) * Hi + h) * DI) + c4)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
            uint2 p;
            p.x = pack_bf16x2(v.x, v.y);
            p.y = pack_bf16x2(v.z, v.w);
            *reinterpret_cast<uint2 *>(sA + qq * 16384 + idx3_off(h, 4 * c4)) = p; // fenced with the first tile
        }
    const uint64_t da = idx3_desc(sAa + (uint32_t)(wg * QW * 16384));
    // group k of a tile: query k >> 2, 32-dim block k & 3: two chained k16 steps from zero
    auto group = [&](float(&p)[32], uint64_t db, int k) {
        const uint64_t b = db + (uint64_t)(((k & 3) * 4096) >> 4);
        idx3_fence();
        if (AREG) {
            idx3_wgmma(p, a[AREG ? k >> 2 : 0][2 * (k & 3)], b, 0);
            idx3_wgmma(p, a[AREG ? k >> 2 : 0][2 * (k & 3) + 1], b + (2048 >> 4), 1);
        } else {
            const uint64_t ak = da + (uint64_t)(((k >> 2) * 16384 + (k & 3) * 4096) >> 4);
            idx3_wgmma_ss(p, ak, b, 0);
            idx3_wgmma_ss(p, ak + (2048 >> 4), b + (2048 >> 4), 1);
        }
        idx3_commit();
    };
    // the head sums: thread t128 of a warpgroup takes its query t128 >> 6, entry t128 & 63 of a tile, one
    // fp32 chain in head order, run 8 heads at a time between the next tile's MMA steps
    const int sj = t128 >> 6, ser = t128 & 63, sq = wg * QW + sj, ss = sb + sq;
    const long long snv = sq < nq ? (pos0 + ss + 1) / 4 : 0;
    const long long ebeg = e0;
    for (int buf = 0; e0 < eend; e0 += ET, buf ^= 1) {
        // this thread's staged pieces are in (asm volatile loads stay after the wait); keys buffer buf was
        // last read by the tile before the last, which every warpgroup waited for before the last barrier
        cp_async_wait<0>();
        unsigned char *kb = sB + buf * 16384;
#pragma unroll 4
        for (int j = 0; j < NCH; j++) {
            int i = tid + j * NT;
            float4 v;
            asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                         : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                         : "r"(stga + 16u * (uint32_t)i));
            uint2 p;
            p.x = pack_bf16x2(v.x, v.y);
            p.y = pack_bf16x2(v.z, v.w);
            *reinterpret_cast<uint2 *>(kb + idx3_off(prow(i), 4 * pc4(i))) = p;
        }
        // generic-proxy stores (the keys; the heads before the first tile) become visible to wgmma (the
        // async proxy) after this fence and the barrier
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        // the tile's bf16 keys are in, so are the last tile's terms; every thread is done with the sums of
        // the tile before the last (whose terms buffer this tile overwrites)
        __syncthreads();
        if (e0 + ET < eend)
            load(e0 + ET); // into the pieces this thread has just converted
        const uint64_t db = idx3_desc(sBa + (uint32_t)(buf * 16384));
        const bool prev = e0 > ebeg; // the last tile's sums to do, 8 heads a step
        const uint16_t *tp = ts + ((size_t)((buf ^ 1) * QB + sq) * 64) * TST + ser;
        uint16_t *tw = ts + ((size_t)(buf * QB + wg * QW) * 64) * TST; // this tile's terms of the warpgroup
        float sum = 0.f;
        float p[D][32], run[32];
#pragma unroll
        for (int k = 0; k < D; k++)
            group(p[k], db, k);
#pragma unroll
        for (int k = 0; k < G; k++) {
            if (prev) // while group k runs
#pragma unroll
                for (int hh = 0; hh < 8; hh++)
                    if (8 * k + hh < Hi)
                        sum += __uint_as_float((uint32_t)tp[(size_t)(8 * k + hh) * TST] << 16);
            idx3_wait_n(G - 1 - k < D - 1 ? G - 1 - k : D - 1); // group k is done, the next ones may run
            idx3_pin(p[k % D]);
#pragma unroll
            for (int i = 0; i < 32; i++)
                run[i] = (k & 3) ? run[i] + p[k % D][i] : p[k % D][i];
            if (k + D < G)
                group(p[k % D], db, k + D); // the tensor cores go on while this group is rounded and staged
            if ((k & 3) == 3) { // query k >> 2 complete: (row 16 w4 + g + 8 r, cols 8 n + 2 t, + 1) = run[4 n + 2 r], + 1
                uint16_t *tq = tw + (size_t)(k >> 2) * 64 * TST + (16 * w4 + g) * TST + 2 * t;
#pragma unroll
                for (int n = 0; n < 8; n++)
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        *reinterpret_cast<uint32_t *>(tq + 8 * r * TST + 8 * n) =
                            idx_term_bf16x2(pack_bf16x2(run[4 * n + 2 * r], run[4 * n + 2 * r + 1]), wv2[k >> 2][r]);
            }
        }
        if (prev && e0 - ET + ser < snv)
            score[(size_t)ss * ld + e0 - ET + ser] = bf16r(sum);
    }
    // the last tile's sums (its terms: buffer (tiles - 1) & 1, complete after this barrier)
    __syncthreads();
    int lb = (int)(((e0 - ebeg) / ET - 1) & 1);
    const uint16_t *tp = ts + ((size_t)(lb * QB + sq) * 64) * TST + ser;
    float sum = 0.f;
#pragma unroll 16
    for (int h = 0; h < Hi; h++)
        sum += __uint_as_float((uint32_t)tp[(size_t)h * TST] << 16);
    if (e0 - ET + ser < snv)
        score[(size_t)ss * ld + e0 - ET + ser] = bf16r(sum);
}

