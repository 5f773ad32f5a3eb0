/* elementwise_cuda.cu — ReLU (forward, backward) and the residual add (forward, in place)
 * over activations of the context's element type.
 *
 * Memory-bound: each thread moves 16 bytes per access (4 fp32 or 8 bf16) when every
 * pointer is 16-byte aligned, in a grid-stride loop; the tail (count not a multiple of the
 * vector) and unaligned calls take the scalar loop. Arithmetic is done in fp32 and rounded
 * once to the storage type, so in bf16 relu is exact and add rounds once (as PyTorch).
 * In place (y == x, dx == dy, y == a or b) is safe: every element is read and written by
 * the same thread, read first.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

enum { EW_RELU = 0, EW_RELU_BWD = 1, EW_ADD = 2 };

template <int OP>
__device__ __forceinline__ float ew_op(float a, float b)
{
    if (OP == EW_RELU) return a > 0.0f ? a : 0.0f;      /* NaN -> 0, as the CPU */
    if (OP == EW_RELU_BWD) return a > 0.0f ? b : 0.0f; /* a = forward output y, b = dy */
    return a + b;
}

/* 16 bytes <-> 4 floats or 8 bf16 (element 0 in the low half of word 0, little endian). */
__device__ __forceinline__ void vec_unpack(uint4 v, float *f, const float *)
{
    f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y), f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ uint4 vec_pack(const float *f, const float *)
{
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}
__device__ __forceinline__ void vec_unpack(uint4 v, float *f, const __nv_bfloat16 *)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ uint4 vec_pack(const float *f, const __nv_bfloat16 *)
{
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        w[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i])) |
               ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1])) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

/* y[i] = op(a[i], b[i]) (b unused for EW_RELU); `vec`: all pointers 16-byte aligned. */
template <int OP, typename T>
__global__ void ew_kernel(const T *a, const T *b, T *y, size_t count, bool vec)
{
    constexpr int V = 16 / sizeof(T);
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t done = 0;
    if (vec) {
        const size_t nv = count / V;
        for (size_t i = tid; i < nv; i += stride) {
            float fa[V], fb[V], fy[V];
            vec_unpack(reinterpret_cast<const uint4 *>(a)[i], fa, a);
            if (OP != EW_RELU) vec_unpack(reinterpret_cast<const uint4 *>(b)[i], fb, b);
#pragma unroll
            for (int j = 0; j < V; j++) fy[j] = ew_op<OP>(fa[j], OP != EW_RELU ? fb[j] : 0.0f);
            reinterpret_cast<uint4 *>(y)[i] = vec_pack(fy, y);
        }
        done = nv * V;
    }
    for (size_t i = done + tid; i < count; i += stride)
        qt_st(y, i, ew_op<OP>(qt_ld(a, i), OP != EW_RELU ? qt_ld(b, i) : 0.0f));
}

template <int OP>
static int ew_launch(qt_cuda_ctx *ctx, const void *a, const void *b, void *y, size_t count)
{
    if (count == 0) return 0;
    const bool vec = qt_cuda_align_of(a, 16) == 16 && qt_cuda_align_of(y, 16) == 16 &&
                     (OP == EW_RELU || qt_cuda_align_of(b, 16) == 16);
    const int per_thread = vec ? (int)(16 / qt_cuda_dtype_bytes(ctx->dtype)) : 1;
    const unsigned blocks = qt_cuda_blocks(ctx, (count + per_thread - 1) / per_thread, 256);
    if (ctx->dtype == QT_CUDA_DT_BF16)
        ew_kernel<OP, __nv_bfloat16><<<blocks, 256, 0, ctx->stream>>>(
            (const __nv_bfloat16 *)a, (const __nv_bfloat16 *)b, (__nv_bfloat16 *)y, count, vec);
    else
        ew_kernel<OP, float><<<blocks, 256, 0, ctx->stream>>>((const float *)a, (const float *)b, (float *)y, count, vec);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_relu_forward(qt_cuda_ctx *ctx, const void *x, void *y, size_t count)
{
    return ew_launch<EW_RELU>(ctx, x, NULL, y, count);
}

extern "C" int qt_cuda_relu_backward(qt_cuda_ctx *ctx, const void *y, const void *dy, void *dx, size_t count)
{
    return ew_launch<EW_RELU_BWD>(ctx, y, dy, dx, count);
}

extern "C" int qt_cuda_add_forward(qt_cuda_ctx *ctx, const void *a, const void *b, void *y, size_t count)
{
    return ew_launch<EW_ADD>(ctx, a, b, y, count);
}

extern "C" int qt_cuda_add_inplace(qt_cuda_ctx *ctx, void *dst, const void *src, size_t count)
{
    return ew_launch<EW_ADD>(ctx, dst, src, dst, count);
}
