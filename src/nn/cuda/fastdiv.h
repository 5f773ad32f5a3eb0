/* fastdiv.h — division of 32-bit indices by a run-time divisor with a multiply-high and a
 * shift (Granlund & Montgomery; the form CUTLASS's FastDivmod uses).
 *
 * Why: the layer kernels turn a flat element index into (image, channel, pixel) for any
 * layout. A hardware-less 32-bit `/` costs ~20 integer instructions on the GPU; at H100
 * bandwidth (~0.8e12 fp32 elements/s) two of them per element would cost more time than
 * the memory traffic they index.
 *
 * Contract: valid for divisors d >= 1 and dividends x < 2^31 (the kernels assert their
 * tensors have fewer than 2^31 elements). With l = ceil(log2 d) and p = 31 + l,
 * mul = ceil(2^p / d) fits in 32 bits and floor(x * mul / 2^p) == floor(x / d) for every
 * x < 2^31. d == 1 is special-cased (mul would need 33 bits).
 * Header-only, C and CUDA (tests/test_cuda_layers.c checks it on the host).
 */
#ifndef QT_NN_CUDA_FASTDIV_H
#define QT_NN_CUDA_FASTDIV_H

#include <stdint.h>

#if defined(__CUDACC__)
#define QT_FD_HD __host__ __device__ __forceinline__
#else
#define QT_FD_HD static inline
#endif

typedef struct {
    uint32_t d, mul, shr;
} qt_fastdiv;

QT_FD_HD qt_fastdiv qt_fastdiv_make(uint32_t d)
{
    qt_fastdiv f;
    f.d = d;
    if (d <= 1) {
        f.mul = 0;
        f.shr = 0;
        return f;
    }
    uint32_t l = 0;
    while (l < 32 && ((uint64_t)1 << l) < d) l++; /* ceil(log2 d) */
    const uint32_t p = 31 + l;
    f.mul = (uint32_t)((((uint64_t)1 << p) + d - 1) / d);
    f.shr = p - 32;
    return f;
}

QT_FD_HD uint32_t qt_fastdiv_div(qt_fastdiv f, uint32_t x)
{
    if (f.d == 1) return x;
#if defined(__CUDA_ARCH__)
    return __umulhi(x, f.mul) >> f.shr;
#else
    return (uint32_t)(((uint64_t)x * f.mul) >> 32) >> f.shr;
#endif
}

/* x mod d, given q = x / d. */
QT_FD_HD uint32_t qt_fastdiv_mod(qt_fastdiv f, uint32_t x, uint32_t q) { return x - q * f.d; }

#endif
