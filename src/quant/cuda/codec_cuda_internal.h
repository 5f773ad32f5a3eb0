/* codec_cuda_internal.h — what the .cu files of src/quant/cuda share (C++, nvcc only):
 * the block-phase kernel runner and its host emulation, exact float arithmetic, byte
 * access at any alignment, the quantizer's per-element rule, and the launchers each
 * codec file provides to codec_cuda.cu.
 *
 * Kernels are written as a struct K (the launch arguments, passed by value) with
 *   enum { PHASES = p };  struct Shared {...};  phase(ph, shared, thread) const
 * where consecutive phases are separated by a block barrier. On the GPU qtc_kernel<K> runs
 * the phases with __syncthreads() between them; qtc_emulate<K> runs the SAME code on the
 * host, block by block, each phase for thread 0..QTC_THREADS-1 in turn. That is a valid
 * schedule of the kernel whenever its threads communicate only through shared memory
 * across a barrier and through atomics whose results are read after a barrier (or by a
 * later kernel), and no block reads what another block of the same launch writes: every
 * kernel here obeys that (keep it so when adding one). So the emulated
 * codec (qt_cuda_codec_create_emulated) checks the kernels' indexing, packing and
 * arithmetic against the CPU codecs on machines without a GPU. Warp intrinsics appear
 * only as #ifdef __CUDA_ARCH__ shortcuts that compute what the plain code computes
 * (a max, which does not depend on order).
 *
 * Float rule (src/quant/wire.h): every float/double operation of the quantizers is one
 * IEEE round-to-nearest operation in the CPU's order. On the device the qf_ and qd_
 * helpers call __fadd_rn/__fmul_rn/__fdiv_rn/__dadd_rn/..., which nvcc never contracts
 * into an FMA (whatever -fmad says) and which round correctly whatever -prec-div and
 * -prec-sqrt say. Subnormals must not be flushed: no -ftz=true, hence no -use_fast_math
 * (the Makefile's NVCCFLAGS use neither). On the host (emulation) the helpers are the
 * plain operators, which g++ in ISO C++ mode (-std=c++17) does not contract either.
 */
#ifndef QT_QUANT_CUDA_CODEC_CUDA_INTERNAL_H
#define QT_QUANT_CUDA_CODEC_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/qt.h"
#include "quant/codec.h"
#include "quant/wire.h"
}
#include "nn/cuda/cuda_check.h"
#include "nn/cuda/fastdiv.h"
#include "quant/cuda/codec_cuda.h"

#define QTC_HD __host__ __device__ __forceinline__
/* unroll hint for __host__ __device__ code (g++ rejects the pragma in the host pass) */
#ifdef __CUDA_ARCH__
#define QTC_UNROLL _Pragma("unroll")
#else
#define QTC_UNROLL
#endif

enum {
    QTC_THREADS = 256,     /* threads per block, every kernel */
    QTC_TILE = 2048,       /* elements per block (8 per thread: one packed group) */
    QTC_LANES = 16,        /* the binary64 lane sums of quantizer.h */
    QTC_MAX_STREAMS = 32   /* received streams per decode launch */
};

/* Shared tiles of floats are stored padded, element j at QTC_PAD(j): thread t's group
 * [8t, 8t + 8) then starts in bank (8t + t/4) % 32, so the 32 threads of a warp reading
 * element jj of their groups hit 32 different banks (unpadded: 8-way conflicts), and a
 * warp reading 32 consecutive elements still hits 32 banks. */
#define QTC_PAD(j) ((j) + ((j) >> 5))
enum { QTC_TILE_PAD = QTC_TILE + QTC_TILE / 32 };

/* ---- the phase runner ---- */

typedef struct {
    unsigned tid, block;
} qtc_thr;

/* __grid_constant__: the phases are member functions, so they take the parameter's
 * address; without it nvcc copies the whole argument struct to local memory per thread. */
template <class K>
__global__ void __launch_bounds__(QTC_THREADS) qtc_kernel(const __grid_constant__ K k)
{
    __shared__ typename K::Shared sh;
    const qtc_thr t = {threadIdx.x, blockIdx.x};
#pragma unroll 1
    for (int ph = 0; ph < K::PHASES; ph++) {
        if (ph) __syncthreads();
        k.phase(ph, sh, t);
    }
}

/* The host schedule of the same kernel. Shared memory starts as garbage for every block
 * (as on the GPU), so a kernel that reads it before writing fails its test. */
template <class K> void qtc_emulate(const K &k, unsigned grid)
{
    typename K::Shared *sh = (typename K::Shared *)qt_malloc(sizeof(typename K::Shared));
    for (unsigned b = 0; b < grid; b++) {
        memset((void *)sh, 0xA5, sizeof *sh);
        for (int ph = 0; ph < K::PHASES; ph++)
            for (unsigned tid = 0; tid < QTC_THREADS; tid++) k.phase(ph, *sh, qtc_thr{tid, b});
    }
    free(sh);
}

/* Where a codec call runs: a stream of the current device, or the host (emulation). */
typedef struct {
    cudaStream_t stream;
    bool emu;
} qtc_exec;

template <class K> int qtc_launch(const qtc_exec &ex, const K &k, uint64_t grid)
{
    if (grid == 0) return 0;
    QT_ASSERT(grid <= 0x7fffffffu);
    if (ex.emu) {
        qtc_emulate(k, (unsigned)grid);
        return 0;
    }
    qtc_kernel<K><<<(unsigned)grid, QTC_THREADS, 0, ex.stream>>>(k);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

int qtc_memset(const qtc_exec &ex, void *p, int v, size_t bytes);

/* ---- exact arithmetic ---- */
#ifdef __CUDA_ARCH__
QTC_HD float qf_add(float a, float b) { return __fadd_rn(a, b); }
QTC_HD float qf_sub(float a, float b) { return __fsub_rn(a, b); }
QTC_HD float qf_mul(float a, float b) { return __fmul_rn(a, b); }
QTC_HD float qf_div(float a, float b) { return __fdiv_rn(a, b); }
QTC_HD double qd_add(double a, double b) { return __dadd_rn(a, b); }
QTC_HD double qd_sub(double a, double b) { return __dsub_rn(a, b); }
QTC_HD double qd_mul(double a, double b) { return __dmul_rn(a, b); }
QTC_HD double qd_div(double a, double b) { return __ddiv_rn(a, b); }
QTC_HD double qd_sqrt(double a) { return __dsqrt_rn(a); }
QTC_HD float qd_to_f(double a) { return __double2float_rn(a); }
#else
QTC_HD float qf_add(float a, float b) { return a + b; }
QTC_HD float qf_sub(float a, float b) { return a - b; }
QTC_HD float qf_mul(float a, float b) { return a * b; }
QTC_HD float qf_div(float a, float b) { return a / b; }
QTC_HD double qd_add(double a, double b) { return a + b; }
QTC_HD double qd_sub(double a, double b) { return a - b; }
QTC_HD double qd_mul(double a, double b) { return a * b; }
QTC_HD double qd_div(double a, double b) { return a / b; }
QTC_HD double qd_sqrt(double a) { return sqrt(a); }
QTC_HD float qd_to_f(double a) { return (float)a; }
#endif

QTC_HD uint32_t qtc_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}
QTC_HD float qtc_float(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

/* x86 NaN results, for values the CPU codecs write into a stream (onebit means, topk
 * values) or feed back through a residual into one. On x86-64 an SSE/AVX operation with a
 * NaN operand returns the first NaN operand, quieted; an invalid operation (inf - inf)
 * returns the default NaN 0xffc00000. A GPU returns 0x7fffffff in every such case. r is
 * the GPU's result of (a op b); this returns what an x86 CPU returns. It equals the CPU
 * codec's bytes whenever at most one operand is NaN (then the compiled operand order
 * does not matter); in the emulation it is the identity. */
QTC_HD float qtc_x86_nan(float r, float a, float b)
{
    if (!(r != r)) return r;
    const uint32_t ua = qtc_bits(a), ub = qtc_bits(b);
    if ((ua & 0x7fffffffu) > 0x7f800000u) return qtc_float(ua | 0x00400000u);
    if ((ub & 0x7fffffffu) > 0x7f800000u) return qtc_float(ub | 0x00400000u);
    return qtc_float(0xffc00000u);
}
QTC_HD float qf_add_x86(float a, float b) { return qtc_x86_nan(qf_add(a, b), a, b); }
QTC_HD float qf_sub_x86(float a, float b) { return qtc_x86_nan(qf_sub(a, b), a, b); }
QTC_HD bool qtc_isnan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

/* ---- atomics (plain operations in the emulation, which runs one thread at a time) ---- */
QTC_HD void qtc_atomic_max(uint32_t *p, uint32_t v)
{
#ifdef __CUDA_ARCH__
    atomicMax((unsigned *)p, (unsigned)v);
#else
    if (v > *p) *p = v;
#endif
}
QTC_HD void qtc_atomic_add(uint32_t *p, uint32_t v)
{
#ifdef __CUDA_ARCH__
    atomicAdd((unsigned *)p, (unsigned)v);
#else
    *p += v;
#endif
}
/* Records err in *status unless an error is already there (the first one stays). */
QTC_HD void qtc_set_error(int *status, int err)
{
#ifdef __CUDA_ARCH__
    atomicCAS(status, 0, err);
#else
    if (*status == 0) *status = err;
#endif
}

/* ---- bytes at any alignment (streams sit at any offset of a caller's buffer). Device:
 * one wide access when aligned, else bytes; host: memcpy (no aliasing questions). ---- */
QTC_HD uint32_t qtc_ld_u32(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    if (((uintptr_t)p & 3) == 0) return *(const uint32_t *)p;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#else
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#endif
}
QTC_HD uint16_t qtc_ld_u16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    if (((uintptr_t)p & 1) == 0) return *(const uint16_t *)p;
    return (uint16_t)(p[0] | p[1] << 8);
#else
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
#endif
}
QTC_HD float qtc_ld_f32(const uint8_t *p) { return qtc_float(qtc_ld_u32(p)); }
QTC_HD void qtc_st_u32(uint8_t *p, uint32_t v)
{
#ifdef __CUDA_ARCH__
    if (((uintptr_t)p & 3) == 0) {
        *(uint32_t *)p = v;
        return;
    }
    for (int j = 0; j < 4; j++) p[j] = (uint8_t)(v >> (8 * j));
#else
    memcpy(p, &v, 4);
#endif
}
QTC_HD void qtc_st_u16(uint8_t *p, uint16_t v)
{
#ifdef __CUDA_ARCH__
    if (((uintptr_t)p & 1) == 0) {
        *(uint16_t *)p = v;
        return;
    }
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
#else
    memcpy(p, &v, 2);
#endif
}
/* The low nbytes (<= 16) bytes of the little-endian 128-bit value hi:lo. */
QTC_HD void qtc_st_bytes(uint8_t *p, uint64_t lo, uint64_t hi, int nbytes)
{
#ifdef __CUDA_ARCH__
    const uintptr_t a = (uintptr_t)p;
    if (nbytes == 2 && (a & 1) == 0) {
        *(uint16_t *)p = (uint16_t)lo;
        return;
    }
    if (nbytes == 4 && (a & 3) == 0) {
        *(uint32_t *)p = (uint32_t)lo;
        return;
    }
    if (nbytes == 8 && (a & 7) == 0) {
        *(uint64_t *)p = lo;
        return;
    }
#endif
    for (int j = 0; j < nbytes; j++) p[j] = (uint8_t)(j < 8 ? lo >> (8 * j) : hi >> (8 * (j - 8)));
}

/* ---- stream header (wire.h) ---- */
typedef struct {
    uint8_t b[QT_CODEC_HEADER_BYTES];
} qtc_header;

/* qt_wire_check_header on device bytes: 0, QT_CODEC_ETRUNC or QT_CODEC_ECORRUPT. Reads
 * nothing when len < 16. */
QTC_HD int qtc_check_header(const uint8_t *in, uint64_t len, const qtc_header &want,
                            bool fallback_ok, unsigned *extra)
{
    if (len < QT_CODEC_HEADER_BYTES) return QT_CODEC_ETRUNC;
    const unsigned ex = in[4] & QT_WIRE_FLAG_FALLBACK;
    if (ex && !fallback_ok) return QT_CODEC_ECORRUPT;
    if (in[4] != (want.b[4] | ex)) return QT_CODEC_ECORRUPT;
    for (int j = 0; j < QT_CODEC_HEADER_BYTES; j++)
        if (j != 4 && in[j] != want.b[j]) return QT_CODEC_ECORRUPT;
    *extra = ex;
    return QT_CODEC_OK;
}

/* ---- tile geometry: block `blk` covers elements [e0, e0 + len) of n, tile elements per
 * block; buckets kf .. kf + nbk - 1 intersect it; r0 = e0 - kf*d (0 when d divides the
 * tile). Local bucket of tile element j: div(r0 + j), through fastdiv while r0 + tile
 * stays below 2^31 (its contract), else a plain division. ---- */
typedef struct {
    uint32_t e0, len, kf, r0, nbk;
    qt_fastdiv fd;
    bool slow;
} qtc_tile;

QTC_HD qtc_tile qtc_tile_of(uint32_t blk, uint32_t tile, uint32_t n, uint32_t d, qt_fastdiv fd)
{
    qtc_tile t;
    const uint64_t e0 = (uint64_t)blk * tile;
    t.e0 = (uint32_t)(e0 < n ? e0 : n);
    t.len = e0 < n ? (uint32_t)((n - e0) < tile ? n - e0 : tile) : 0;
    t.kf = t.e0 / d;
    t.r0 = t.e0 - t.kf * d;
    t.fd = fd;
    t.slow = (uint64_t)t.r0 + tile >= 0x80000000u;
    t.nbk = 0;
    if (t.len) t.nbk = (t.slow ? (t.r0 + t.len - 1) / d : qt_fastdiv_div(fd, t.r0 + t.len - 1)) + 1;
    return t;
}
QTC_HD uint32_t qtc_local_bucket(const qtc_tile &t, uint32_t j)
{
    return t.slow ? (t.r0 + j) / t.fd.d : qt_fastdiv_div(t.fd, t.r0 + j);
}

/* ---- the quantizer's rule (quantizer.h), one element ---- */

/* Signed level of x in a bucket of scale m (m != 0), r the element's Philox word. */
QTC_HD int qtc_level(float x, float m, float sf, uint32_t r)
{
    float a = qf_div(fabsf(x), m);
    float t = qf_mul(a, sf);
    t = t < sf ? t : sf; /* also catches NaN */
    const int l = (int)t;
    const float p = qf_sub(t, (float)l);
    const float u = qt_u32_to_unit(r); /* exact: a 24-bit integer times 2^-24 */
    const int lev = l + (u < p);
    return x < 0.0f ? -lev : lev;
}

/* The eight Philox words of arena indices e .. e+7 (fewer used at the message end):
 * the two or three blocks that hold them, the words picked with constant indices so they
 * stay in registers. */
QTC_HD void qtc_philox8(qt_philox_key key, uint64_t e, int cnt, uint32_t step, uint32_t rank,
                        uint32_t r[8])
{
    uint32_t w[12];
    const uint64_t b0 = e >> 2;
    const unsigned o = (unsigned)(e & 3);
    qt_philox_block(key, b0, step, rank, w);
    qt_philox_block(key, b0 + 1, step, rank, w + 4);
    if (o + (unsigned)cnt > 8)
        qt_philox_block(key, b0 + 2, step, rank, w + 8);
    else
        w[8] = w[9] = w[10] = w[11] = 0;
    QTC_UNROLL
    for (int j = 0; j < 8; j++)
        r[j] = o == 0 ? w[j] : o == 1 ? w[j + 1] : o == 2 ? w[j + 2] : w[j + 3];
}

/* Code c (b bits) into position j of a group of eight: bits [j*b, j*b + b) of hi:lo. */
QTC_HD void qtc_pack(uint64_t *lo, uint64_t *hi, int j, int b, uint32_t c)
{
    const int p = j * b;
    if (p < 64) {
        *lo |= (uint64_t)c << p;
        if (p + b > 64) *hi |= (uint64_t)c >> (64 - p);
    } else {
        *hi |= (uint64_t)c << (p - 64);
    }
}

/* Code of element i (b bits, LSB first) from the packed codes: reads only the bytes that
 * hold its bits, as fixed.c's get_code. */
QTC_HD uint32_t qtc_get_code(const uint8_t *codes, uint64_t i, int b)
{
    const uint64_t bit = i * (uint64_t)b;
    const uint8_t *p = codes + bit / 8;
    const int nbytes = (int)((bit % 8 + (uint64_t)b + 7) / 8);
    uint32_t v = 0;
    for (int j = 0; j < nbytes; j++) v |= (uint32_t)p[j] << (8 * j);
    return (v >> (bit % 8)) & ((1u << b) - 1);
}

/* ---- fp16 / bf16 (float16.c, integer code, same NaN canonicalisation) ---- */
QTC_HD uint16_t qtc_f32_to_bf16(float x)
{
    const uint32_t u = qtc_bits(x);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}
QTC_HD float qtc_bf16_to_f32(uint16_t h) { return qtc_float((uint32_t)h << 16); }
QTC_HD uint16_t qtc_f32_to_f16(float x)
{
    const uint32_t u = qtc_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    const uint32_t normal = (a - ((127u - 15u) << 23) + 0x0fffu + ((a >> 13) & 1u)) >> 13;
    /* subnormal results: the float add rounds the dropped bits (needs no FTZ: the codec
     * files must not be built with -ftz=true or -use_fast_math) */
    const uint32_t sub = qtc_bits(qf_add(qtc_float(a), 0.5f)) - 0x3f000000u;
    uint32_t h = a < 0x38800000u ? sub : normal;
    h = a >= 0x477ff000u ? 0x7c00u : h;
    h = a > 0x7f800000u ? 0x7e00u : h | sign;
    return (uint16_t)h;
}
QTC_HD float qtc_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    const uint32_t normal = ((e + 112u) << 23) | (m << 13);
    const uint32_t special = 0x7f800000u | (m << 13);
    const uint32_t sub = qtc_bits(qf_mul((float)m, 0x1p-24f));
    const uint32_t u = e == 0 ? sub : (e == 31 ? special : normal);
    return qtc_float(u | sign);
}

/* ---- per-codec launchers (all asynchronous on ex.stream; pointers are device pointers,
 * or host pointers when ex.emu) ---- */

/* Scratch a codec call needs on the device, in bytes (0: none). */
size_t qtc_levels_scratch_bytes(const qt_wire *w, const qt_codec_params *p);
size_t qtc_onebit_scratch_bytes(const qt_wire *w);

/* qsgd / ecq / terngrad with fixed packing: header, scales, codes, ecq residual. */
int qtc_levels_encode(const qtc_exec &ex, const qt_codec_params *p, const qt_wire *w,
                      const float *g, float *residual, uint32_t step, uint32_t rank,
                      uint64_t off, uint8_t *out, void *scratch);
/* none / fp16 / bf16. */
int qtc_float_encode(const qtc_exec &ex, const qt_wire *w, const float *g, uint8_t *out);
/* onebit. */
int qtc_onebit_encode(const qtc_exec &ex, const qt_wire *w, const float *g, float *residual,
                      uint8_t *out, void *scratch);

/* topk: scratch on the device and pinned staging on the host, in bytes. */
size_t qtc_topk_scratch_bytes(const qt_wire *w);
size_t qtc_topk_host_bytes(const qt_wire *w);
size_t qtc_topk_decode_host_bytes(const qt_wire *w, const size_t *len, int count);
/* topk encode (cap >= 16): synchronises ex.stream; ENOSPC when the stream exceeds cap. */
int qtc_topk_encode(const qtc_exec &ex, const qt_wire *w, const float *g, float *residual,
                    uint8_t *out, size_t cap, void *scratch, void *host, size_t *out_bytes);
/* topk decode of count streams in order; hstatus: host status words (0s), the first
 * failing stream's code stops it. Synchronises ex.stream. */
int qtc_topk_decode(const qtc_exec &ex, const qt_wire *w, int count, const uint8_t *const *in,
                    const size_t *len, float f, bool zero_first, float *out, int *hstatus,
                    void *scratch, void *host);

/* Decode of `count` (<= QTC_MAX_STREAMS) fixed-layout streams of n elements each:
 * out[i] = (zero_first ? 0 : out[i]) + f*v_0[i] + f*v_1[i] + ..., added in stream order;
 * status[r] receives stream r's first error (status must hold 0s). */
int qtc_fixed_decode(const qtc_exec &ex, const qt_wire *w, int count, const uint8_t *const *in,
                     const size_t *len, float f, bool zero_first, float *out, int *status);

#endif
