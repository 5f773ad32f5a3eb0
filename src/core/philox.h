/* philox.h — Philox 4x32-10 (Salmon et al., SC'11), a counter-based generator: any
 * element's random numbers are a pure function of (key, counter), so a stream can be
 * consumed in any order, by any thread, on the CPU or the GPU, with identical results.
 *
 * qtrain's keying (one convention for every user, so CPU and CUDA agree):
 *   key     = { low 32 bits of seed, high 32 bits of seed ^ purpose * 0x9E3779B9 }
 *   counter = { block index low 32, block index high 32, step, rank }
 * where block = element_index / 4 and lane = element_index % 4 picks one of the four
 * outputs. `purpose` separates independent streams drawn from one seed (weight init,
 * augmentation, codec rounding, ...): see QT_RNG_* below.
 *
 * Header-only and free of libc so the same code compiles in .cu files
 * (QT_HD expands to __host__ __device__ there).
 */
#ifndef QT_CORE_PHILOX_H
#define QT_CORE_PHILOX_H

#include <stdint.h>

#if defined(__CUDACC__)
#define QT_HD __host__ __device__ __forceinline__
#else
#define QT_HD static inline
#endif

enum {
    QT_RNG_INIT = 1,    /* parameter initialisation */
    QT_RNG_DATA = 2,    /* data order and augmentation */
    QT_RNG_CODEC = 3,   /* stochastic rounding in gradient codecs */
    QT_RNG_DROPOUT = 4, /* dropout masks */
    QT_RNG_TEST = 5     /* tests and benchmarks */
};

typedef struct {
    uint32_t k[2];
} qt_philox_key;

QT_HD qt_philox_key qt_philox_make_key(uint64_t seed, uint32_t purpose)
{
    qt_philox_key key;
    key.k[0] = (uint32_t)seed;
    key.k[1] = (uint32_t)(seed >> 32) ^ (purpose * 0x9E3779B9u);
    return key;
}

QT_HD void qt_philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* One Philox 4x32-10 block: out = philox(ctr, key). */
QT_HD void qt_philox4x32_10(const uint32_t ctr_in[4], qt_philox_key key, uint32_t out[4])
{
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key.k[0], k1 = key.k[1];
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        qt_philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
        qt_philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* The four outputs of block `block` for (step, rank). Elements 4*block .. 4*block+3. */
QT_HD void qt_philox_block(qt_philox_key key, uint64_t block, uint32_t step, uint32_t rank,
                           uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), step, rank};
    qt_philox4x32_10(ctr, key, out);
}

/* The random 32-bit word of one element (computes a whole block: prefer
 * qt_philox_block in loops). */
QT_HD uint32_t qt_philox_u32(qt_philox_key key, uint64_t index, uint32_t step, uint32_t rank)
{
    uint32_t out[4];
    qt_philox_block(key, index >> 2, step, rank, out);
    return out[index & 3];
}

/* Uniform in [0, 1) with 24 bits: exact in float, identical on CPU and GPU. */
QT_HD float qt_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

#endif
