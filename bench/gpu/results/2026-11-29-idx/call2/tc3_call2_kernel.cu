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
// Group k of a warpgroup's tile: query k >> 2, 32-dim block k & 3: two chained k16 steps from zero.
template <int QW>
__device__ __forceinline__ void idx3_group(float (&p)[32], const uint32_t (&a)[QW][8][4], uint64_t db, int k)
{
    const uint64_t b = db + (uint64_t)(((k & 3) * 4096) >> 4);
    idx3_fence();
    idx3_wgmma(p, a[k >> 2][2 * (k & 3)], b, 0);
    idx3_wgmma(p, a[k >> 2][2 * (k & 3) + 1], b + (2048 >> 4), 1);
    idx3_commit();
}
template <int NWG>
__global__ void __launch_bounds__(NWG * 128, 1) k_idx_score_tc3(const float *qI, const float *wts, const float *keys,
                                                                int Hi, int S, const long long *ppos, float *score,
                                                                size_t ld, int tpb)
{
    constexpr int DI = 128, ET = IDX_TC_ET, QW = IDX_TC3_QW, QB = NWG * QW, NT = NWG * 128, TST = IDX_TC3_TST;
    constexpr int NP = ET * DI / 4, NCH = NP / NT; // 16-byte pieces of a tile, a thread's
    static_assert(ET == 64 && NP % NT == 0 && QW == 2 && NWG % 2 == 0, "the tile, pieces and head-sum warps");
    extern __shared__ __align__(16) unsigned char idx_smem[];
    unsigned char *sB = idx_smem;                 // [2][64 entries x 128 dims] bf16, canonical
    uint16_t *ts = (uint16_t *)(sB + 2 * 16384);  // [QB][64 heads][TST] the heads' terms (bf16)
    const int tid = threadIdx.x, wg = tid >> 7, w4 = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
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
    const uint32_t sBa = (uint32_t)__cvta_generic_to_shared(sB);
    // piece i (16 bytes) of a tile: each warp's 32 pieces are 8 rows x 4 consecutive 16-byte columns, so
    // that the bf16 stores (8 bytes, canonical layout) cover 256 distinct bytes
    auto prow = [](int i) { return (((i >> 8) & 7) << 3) | (i & 7); };
    auto pc4 = [](int i) { return (((i >> 5) & 7) << 2) | ((i >> 3) & 3); };
    // the tile at entry t0 into registers (zeros past eend), then into keys buffer b as bf16
    float4 kv[NCH];
    auto load = [&](long long t0) {
#pragma unroll
        for (int j = 0; j < NCH; j++) {
            int i = tid + j * NT, r = prow(i);
            kv[j] = t0 + r < eend ? __ldg(reinterpret_cast<const float4 *>(keys + (size_t)(t0 + r) * DI) + pc4(i))
                                  : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    auto store = [&](int b) {
#pragma unroll
        for (int j = 0; j < NCH; j++) {
            int i = tid + j * NT;
            uint2 p;
            p.x = pack_bf16x2(kv[j].x, kv[j].y);
            p.y = pack_bf16x2(kv[j].z, kv[j].w);
            *reinterpret_cast<uint2 *>(sB + b * 16384 + idx3_off(prow(i), 4 * pc4(i))) = p;
        }
        // generic-proxy stores become visible to wgmma (the async proxy) after this fence and a barrier
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    };
    load(e0);
    // this warpgroup's queries' heads as A fragments (rows 16 w4 + g (+ 8) of the m64k16 steps; rows past
    // Hi and queries past S are zeros) and the rows' head weights as bf16 pairs
    uint32_t a[QW][8][4], wv2[QW][2];
#pragma unroll
    for (int j = 0; j < QW; j++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int qq = wg * QW + j, h = 16 * w4 + g + 8 * r;
            bool ok = qq < nq && h < Hi;
            float w = ok ? wts[(size_t)(sb + qq) * Hi + h] : 0.f;
            wv2[j][r] = pack_bf16x2(w, w);
            const float *qr = qI + ((size_t)(sb + (ok ? qq : 0)) * Hi + (ok ? h : 0)) * DI;
#pragma unroll
            for (int kk = 0; kk < 8; kk++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float2 v = ok ? *reinterpret_cast<const float2 *>(qr + kk * 16 + 2 * t + 8 * c) : make_float2(0.f, 0.f);
                    a[j][kk][r + 2 * c] = pack_bf16x2(v.x, v.y);
                }
        }
    store(0);
    uint16_t *tw = ts + (size_t)wg * QW * 64 * TST; // this warpgroup's queries' terms
    for (int buf = 0; e0 < eend; e0 += ET, buf ^= 1) {
        // keys buffer buf is in (stored and fenced before this barrier); buf ^ 1 was last read by the last
        // tile's MMAs, which every warpgroup waited for before this barrier; every thread is done with the
        // last tile's sums
        __syncthreads();
        bool more = e0 + ET < eend;
        if (more)
            load(e0 + ET); // in flight during this tile's MMAs
        const uint64_t db = idx3_desc(sBa + (uint32_t)(buf * 16384));
        float p0[32], p1[32], run[32];
        idx3_group<QW>(p0, a, db, 0);
        idx3_group<QW>(p1, a, db, 1);
#pragma unroll
        for (int k = 0; k < 4 * QW; k++) {
            float(&p)[32] = (k & 1) ? p1 : p0;
            if (k + 1 < 4 * QW)
                idx3_wait<1>(); // group k is done, k + 1 may run
            else
                idx3_wait<0>();
            idx3_pin(p);
#pragma unroll
            for (int i = 0; i < 32; i++)
                run[i] = (k & 3) ? run[i] + p[i] : p[i];
            if (k + 2 < 4 * QW)
                idx3_group<QW>(p, a, db, k + 2); // the tensor cores go on while this group is rounded and staged
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
        if (more)
            store(buf ^ 1); // the next tile's keys, read after the next barrier
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory"); // the warpgroup's terms are in
        // the head sums: warps 2 (wg & 1) and + 1 of the warpgroup (so that the two warpgroups of a pair
        // use different SM sub-partitions), warp j taking query j, a lane two entries (32-bit loads: a
        // warp reads 128 contiguous bytes of a head row), two fp32 chains in head order
        int jw = w4 - 2 * (wg & 1);
        if (jw == 0 || jw == 1) {
            int qq = wg * QW + jw, s2 = sb + qq;
            long long e = e0 + 2 * lane, nv = (pos0 + s2 + 1) / 4;
            if (qq < nq && e < nv) {
                const uint32_t *tq = reinterpret_cast<const uint32_t *>(tw + (size_t)jw * 64 * TST) + lane;
                float sum0 = 0.f, sum1 = 0.f;
#pragma unroll 16
                for (int h = 0; h < Hi; h++) {
                    uint32_t u = tq[(size_t)h * (TST / 2)];
                    sum0 += __uint_as_float(u << 16);
                    sum1 += __uint_as_float(u & 0xffff0000u);
                }
                score[(size_t)s2 * ld + e] = bf16r(sum0);
                if (e + 1 < nv)
                    score[(size_t)s2 * ld + e + 1] = bf16r(sum1);
            }
        }
        // the next tile's term stores come after the next block barrier
    }
}
