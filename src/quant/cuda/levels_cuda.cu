/* levels_cuda.cu — GPU encoder of the level codecs (qsgd, ecq, terngrad) with fixed
 * packing: the bytes of src/quant/fixed.c + quantizer.c, bit for bit (quantizer.h has the
 * rule, wire.h the float evaluation rule; codec_cuda_internal.h how kernels are written).
 *
 * One block encodes a tile of consecutive elements; thread t owns the aligned group of 8
 * elements [e0 + 8t, e0 + 8t + 8) whose b-bit codes fill exactly b bytes (fixed.c), so no
 * two threads write the same byte. Phases of lv_enc:
 *   0 header (block 0); bucket scales of the tile: zeroed (fused) or loaded (two-pass)
 *   1 g (and the ecq residual h) read coalesced into shared memory; fused: each bucket's
 *     max |x| as a max of bit patterns (order-free, so a warp max then one shared atomic)
 *   2 scales finished (a NaN/Inf bucket gets NaN) and written for buckets starting here
 *   3 each thread: 8 Philox words, 8 levels, one packed store; new residual into shared
 *   4 residual written back coalesced.
 * Fused (the default path: max norm, one read of g and h): when no bucket crosses a tile,
 * i.e. the tile is a multiple of d and of 8 (tile = largest multiple of lcm(d, 8) up to
 * 2048; every d <= 256 and every power of two up to 2048 qualifies). Otherwise a first
 * kernel computes every bucket's scale into scratch (lv_max: a max over tiles with global
 * atomics; lv_lanes: l2 norms and terngrad clipping, whose binary64 lane sums must follow
 * quantizer.h's order: 16 threads per bucket, each summing its lane sequentially, then
 * the 8-4-2-1 tree) and lv_enc loads them. A block never reads a residual element another
 * block writes, so the in-place update is race-free.
 * Cost of the lane order: 16-way parallel per bucket only; a whole-message l2 bucket of
 * 60M elements is a sequential 3.75M-term sum per lane (tens of ms). Accepted: the
 * defaults use the max norm, and bucketed l2 (d <= 4096) has millions of lanes.
 */
#include "quant/cuda/codec_cuda_internal.h"

enum { LV_FUSED = 0, LV_LOAD = 1, LV_LOAD_MAXBITS = 2 };

/* Max of a (bits of |x|) into m[k] for the valid lanes. On the GPU a warp whose valid lanes
 * share one bucket (d >= 32: nearly always) reduces first and issues one atomic. */
QTC_HD void lv_max_into(uint32_t *m, uint32_t k, uint32_t a, bool valid)
{
#ifdef __CUDA_ARCH__
    const unsigned full = 0xffffffffu;
    const uint32_t k0 = __shfl_sync(full, k, 0);
    if (__all_sync(full, !valid || k == k0)) {
        const uint32_t mx = __reduce_max_sync(full, valid ? a : 0u);
        if ((threadIdx.x & 31) == 0 && valid) atomicMax((unsigned *)&m[k0], (unsigned)mx);
        return;
    }
#endif
    if (valid) qtc_atomic_max(&m[k], a);
}

/* The quantizer's input: ecq x = g + alpha*h, else g. */
QTC_HD float lv_x(bool ecq_h, float alpha, float g, float h)
{
    return ecq_h ? qf_add(g, qf_mul(alpha, h)) : g;
}

struct lv_enc {
    enum { PHASES = 5 };
    struct Shared {
        float g[QTC_TILE_PAD], h[QTC_TILE_PAD]; /* element j at QTC_PAD(j) */
        uint32_t m[QTC_TILE + 2]; /* scale bits of the tile's buckets (fused: max |x| first) */
    };
    const float *g;
    float *h; /* ecq residual, NULL otherwise */
    uint8_t *out;
    const uint32_t *scales; /* two-pass: one per bucket (LV_LOAD_MAXBITS: max |x| bits) */
    uint32_t n, d, nb, tile;
    qt_fastdiv fd;
    int mode, s, b;
    float sf, alpha, beta;
    bool ecq, tern;
    qt_philox_key key;
    uint32_t step, rank;
    uint64_t off;
    qtc_header hdr;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const qtc_tile tl = qtc_tile_of(t.block, tile, n, d, fd);
        switch (ph) {
        case 0: init(sh, t, tl); break;
        case 1: load(sh, t, tl); break;
        case 2: finish_scales(sh, t, tl); break;
        case 3: quantize(sh, t, tl); break;
        default:
            if (h)
                for (uint32_t j = t.tid; j < tl.len; j += QTC_THREADS) h[tl.e0 + j] = sh.h[QTC_PAD(j)];
            break;
        }
    }

    QTC_HD void init(Shared &sh, qtc_thr t, const qtc_tile &tl) const
    {
        if (t.block == 0 && t.tid < QT_CODEC_HEADER_BYTES) out[t.tid] = hdr.b[t.tid];
        for (uint32_t j = t.tid; j < tl.nbk; j += QTC_THREADS) {
            uint32_t u = mode == LV_FUSED ? 0u : scales[tl.kf + j];
            if (mode == LV_LOAD_MAXBITS && u >= 0x7f800000u) u = 0x7fc00000u;
            sh.m[j] = u;
        }
    }

    QTC_HD void load(Shared &sh, qtc_thr t, const qtc_tile &tl) const
    {
        /* the trip count depends on the block only: whole warps reach lv_max_into */
        for (uint32_t base = 0; base < tl.len; base += QTC_THREADS) {
            const uint32_t j = base + t.tid;
            const bool valid = j < tl.len;
            float gv = 0.0f, hv = 0.0f;
            if (valid) {
                gv = g[tl.e0 + j];
                sh.g[QTC_PAD(j)] = gv;
                if (h) {
                    hv = h[tl.e0 + j];
                    sh.h[QTC_PAD(j)] = hv;
                }
            }
            if (mode == LV_FUSED) {
                const uint32_t a = qtc_bits(lv_x(ecq && h, alpha, gv, hv)) & 0x7fffffffu;
                lv_max_into(sh.m, valid ? qtc_local_bucket(tl, j) : 0u, a, valid);
            }
        }
    }

    QTC_HD void finish_scales(Shared &sh, qtc_thr t, const qtc_tile &tl) const
    {
        uint8_t *sc = out + QT_CODEC_HEADER_BYTES;
        for (uint32_t j = t.tid; j < tl.nbk; j += QTC_THREADS) {
            uint32_t u = sh.m[j];
            if (mode == LV_FUSED && u >= 0x7f800000u) u = 0x7fc00000u; /* NaN or Inf inside */
            sh.m[j] = u;
            if (j > 0 || tl.r0 == 0) qtc_st_u32(sc + 4 * (uint64_t)(tl.kf + j), u); /* starts here */
        }
    }

    QTC_HD void quantize(Shared &sh, qtc_thr t, const qtc_tile &tl) const
    {
        const uint32_t l0 = 8 * t.tid;
        if (l0 >= tl.len) return;
        const int cnt = (int)(tl.len - l0 < 8 ? tl.len - l0 : 8);
        const uint32_t i0 = tl.e0 + l0;
        uint32_t r[8];
        qtc_philox8(key, off + i0, cnt, step, rank, r);
        uint64_t lo = 0, hi = 0;
        QTC_UNROLL
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= cnt) continue; /* not break: keeps the loop unrolled, r[] in registers */
            const uint32_t l = l0 + (uint32_t)jj, lp = QTC_PAD(l);
            const float gv = sh.g[lp], hv = h ? sh.h[lp] : 0.0f;
            float x = lv_x(ecq && h, alpha, gv, hv);
            const float m = qtc_float(sh.m[qtc_local_bucket(tl, l)]);
            int q = 0;
            if (m != 0.0f) {
                if (tern) { /* clip |g| to m: min(|g|, c) as quantizer.h explains */
                    const float a = fabsf(x);
                    x = copysignf(a < m ? a : m, x);
                }
                q = qtc_level(x, m, sf, r[jj]);
            }
            qtc_pack(&lo, &hi, jj, b, (uint32_t)(q + s));
            if (ecq && h) {
                const float unit = qf_div(m, sf);
                const float v = qf_mul((float)q, unit);
                sh.h[lp] = qf_add(qf_mul(beta, hv), qf_sub(gv, v));
            }
        }
        uint8_t *codes = out + QT_CODEC_HEADER_BYTES + 4 * (uint64_t)nb;
        qtc_st_bytes(codes + (uint64_t)(i0 / 8) * (uint64_t)b, lo, hi, (cnt * b + 7) / 8);
    }
};

/* Two-pass max norm: bucket max |x| bits into scales[] (zeroed) with global atomics. */
struct lv_max {
    enum { PHASES = 3 };
    struct Shared {
        uint32_t m[QTC_TILE + 2];
    };
    const float *g, *h;
    uint32_t *scales;
    uint32_t n, d;
    qt_fastdiv fd;
    float alpha;
    bool ecq;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const qtc_tile tl = qtc_tile_of(t.block, QTC_TILE, n, d, fd);
        if (ph == 0) {
            for (uint32_t j = t.tid; j < tl.nbk; j += QTC_THREADS) sh.m[j] = 0;
        } else if (ph == 1) {
            for (uint32_t base = 0; base < tl.len; base += QTC_THREADS) {
                const uint32_t j = base + t.tid;
                const bool valid = j < tl.len;
                float gv = 0.0f, hv = 0.0f;
                if (valid) {
                    gv = g[tl.e0 + j];
                    if (h) hv = h[tl.e0 + j];
                }
                const uint32_t a = qtc_bits(lv_x(ecq && h, alpha, gv, hv)) & 0x7fffffffu;
                lv_max_into(sh.m, valid ? qtc_local_bucket(tl, j) : 0u, a, valid);
            }
        } else {
            for (uint32_t j = t.tid; j < tl.nbk; j += QTC_THREADS)
                if (sh.m[j]) qtc_atomic_max(&scales[tl.kf + j], sh.m[j]);
        }
    }
};

/* Scales that need quantizer.h's binary64 lane sums (l2 norm, terngrad clipping): bucket
 * k = 16*block + tid/16, lane tid%16 sums elements lane, lane+16, ... in index order. */
struct lv_lanes {
    enum { PHASES = 2 };
    struct Shared {
        uint32_t mx[QTC_THREADS];
        double sq[QTC_THREADS], sum[QTC_THREADS];
    };
    const float *g, *h;
    uint32_t *scales;
    uint32_t n, d, nb;
    float alpha, clip;
    bool ecq, l2;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const uint32_t k = t.block * (QTC_THREADS / QTC_LANES) + t.tid / QTC_LANES;
        const uint32_t lane = t.tid % QTC_LANES;
        if (k >= nb) return;
        const uint64_t b0 = (uint64_t)k * d;
        const uint32_t blen = (uint32_t)(n - b0 < d ? n - b0 : d);
        if (ph == 0) {
            uint32_t mx = 0;
            double sq = 0.0, sum = 0.0;
            for (uint32_t j = lane; j < blen; j += QTC_LANES) {
                const float x = lv_x(ecq && h, alpha, g[b0 + j], h ? h[b0 + j] : 0.0f);
                const uint32_t a = qtc_bits(x) & 0x7fffffffu;
                mx = a > mx ? a : mx;
                if (l2 || clip > 0.0f) sq = qd_add(sq, qd_mul((double)x, (double)x));
                if (clip > 0.0f) sum = qd_add(sum, (double)x);
            }
            sh.mx[t.tid] = mx;
            sh.sq[t.tid] = sq;
            sh.sum[t.tid] = sum;
            return;
        }
        if (lane != 0) return;
        uint32_t mx = 0;
        double sq[QTC_LANES], sum[QTC_LANES];
        for (int l = 0; l < QTC_LANES; l++) {
            mx = sh.mx[t.tid + l] > mx ? sh.mx[t.tid + l] : mx;
            sq[l] = sh.sq[t.tid + l];
            sum[l] = sh.sum[t.tid + l];
        }
        /* the CPU's lane_total: lane[l] += lane[l + w] for w = 8, 4, 2, 1 */
        for (int w = QTC_LANES / 2; w >= 1; w /= 2)
            for (int l = 0; l < w; l++) {
                sq[l] = qd_add(sq[l], sq[l + w]);
                sum[l] = qd_add(sum[l], sum[l + w]);
            }
        float m;
        if (mx >= 0x7f800000u)
            m = qtc_float(0x7fc00000u);
        else if (l2)
            m = qd_to_f(qd_sqrt(sq[0]));
        else
            m = qtc_float(mx);
        if (clip > 0.0f && blen > 0) {
            const double mean = qd_div(sum[0], (double)blen);
            const double var = qd_sub(qd_div(sq[0], (double)blen), qd_mul(mean, mean));
            const double sigma = qd_sqrt(var > 0.0 ? var : 0.0);
            const float c = sigma > 0.0 ? qd_to_f(qd_mul((double)clip, sigma)) : INFINITY;
            if (c < m) m = c; /* a NaN m stays NaN */
        }
        scales[k] = qtc_bits(m);
    }
};

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static bool lv_max_norm(const qt_wire *w, const qt_codec_params *p)
{
    return w->norm == QT_NORM_MAX && !(w->method == QT_CODEC_TERNGRAD && p->clip_sigma > 0.0f);
}

/* The fused path's tile (a multiple of lcm(d, 8) up to QTC_TILE), or 0 when it does not apply. */
static uint32_t lv_fused_tile(const qt_wire *w, const qt_codec_params *p)
{
    if (!lv_max_norm(w, p)) return 0;
    const uint64_t l = w->d / gcd64(w->d, 8) * 8;
    return l <= QTC_TILE ? (uint32_t)(QTC_TILE / l * l) : 0;
}

size_t qtc_levels_scratch_bytes(const qt_wire *w, const qt_codec_params *p)
{
    return lv_fused_tile(w, p) ? 0 : 4 * w->nb;
}

int qtc_levels_encode(const qtc_exec &ex, const qt_codec_params *p, const qt_wire *w,
                      const float *g, float *residual, uint32_t step, uint32_t rank,
                      uint64_t off, uint8_t *out, void *scratch)
{
    lv_enc k;
    memset(&k, 0, sizeof k);
    k.ecq = w->method == QT_CODEC_ECQ;
    k.tern = w->method == QT_CODEC_TERNGRAD;
    k.g = g;
    k.h = k.ecq ? residual : NULL;
    k.out = out;
    k.n = (uint32_t)w->n;
    k.d = (uint32_t)w->d;
    k.nb = (uint32_t)w->nb;
    k.fd = qt_fastdiv_make(k.d);
    k.s = w->s;
    k.b = w->b;
    k.sf = (float)w->s;
    k.alpha = p->alpha;
    k.beta = p->beta;
    k.key = qt_philox_make_key(p->seed, QT_RNG_CODEC);
    k.step = step;
    k.rank = rank;
    k.off = off;
    qt_wire_put_header(w, 0, k.hdr.b);
    k.tile = lv_fused_tile(w, p);
    if (k.tile) {
        k.mode = LV_FUSED;
    } else {
        uint32_t *scales = (uint32_t *)scratch;
        k.scales = scales;
        k.tile = QTC_TILE;
        if (lv_max_norm(w, p)) {
            if (qtc_memset(ex, scales, 0, 4 * w->nb)) return -1;
            lv_max km = {g, k.h, scales, k.n, k.d, k.fd, k.alpha, k.ecq};
            if (qtc_launch(ex, km, (w->n + QTC_TILE - 1) / QTC_TILE)) return -1;
            k.mode = LV_LOAD_MAXBITS;
        } else {
            lv_lanes kl = {g,      k.h,      scales, k.n, k.d, k.nb, k.alpha,
                           k.tern ? p->clip_sigma : 0.0f, k.ecq, w->norm == QT_NORM_L2};
            const unsigned per = QTC_THREADS / QTC_LANES;
            if (qtc_launch(ex, kl, (w->nb + per - 1) / per)) return -1;
            k.mode = LV_LOAD;
        }
    }
    uint64_t grid = (w->n + k.tile - 1) / k.tile;
    return qtc_launch(ex, k, grid ? grid : 1);
}
