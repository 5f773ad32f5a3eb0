/* codec_cuda.h — the GPU twins of src/quant's codecs (quant/codec.h): encode a device
 * float slice into a device byte stream, and decode-and-add (or average) received streams
 * into a device float slice.
 *
 * Contract: for the same params, g, residual, n, step, rank and elem_offset, encode writes
 * the bytes qt_codec_encode writes and leaves the residual qt_codec_encode leaves, bit for
 * bit; decode_add adds exactly what qt_codec_decode_add adds (same float operations in
 * the same order), and decode_sum of N streams equals N decode_adds in stream order.
 *
 * Where the work runs:
 *   GPU kernels: none, fp16, bf16, onebit, and qsgd/ecq/terngrad with fixed packing
 *                (the defaults), encode and decode, one fused pass where the bucket
 *                layout allows (src/quant/cuda/levels_cuda.cu says when).
 *   topk:        selection, values, residual and the decode scatter on the GPU; the k
 *                indices (k = ratio * n) are coded and parsed on the host, since their
 *                varint / Elias stream is sequential. These calls synchronise the stream.
 *   host:        the elias and huffman encodings of qsgd/ecq/terngrad: MSB-first bit
 *                streams with no per-bucket offsets (at most four lanes per message, which
 *                a CPU core interleaves; far too few for GPU threads). The codec copies the slice to
 *                pinned host memory, runs the CPU codec and copies the result back,
 *                synchronising the stream. qt_cuda_codec_on_gpu() is false for these.
 *
 * Pointers: g, residual, out, in[] and the decode target are device pointers (host
 * pointers for an emulated codec); float arrays 4-byte aligned, byte streams at any
 * address. Every call is asynchronous on `stream` except where noted. A codec object
 * owns scratch that its calls reuse in stream order: issue one object's calls to one
 * stream (or order them), and use one object per concurrent stream. The first call that
 * needs more scratch allocates it (cudaMalloc: not allowed while capturing a CUDA graph);
 * qt_cuda_codec_reserve() sizes it up front. Calls return 0, a negative QT_CODEC_* code
 * for what the CPU codec rejects the same way, or -1 after printing a CUDA error line.
 *
 * Float arithmetic: the rule of src/quant/wire.h (no FMA contraction, IEEE division and
 * square root): the kernels use __fadd_rn/__fmul_rn/__fdiv_rn/__dadd_rn/__dsqrt_rn...;
 * they must not be compiled with -use_fast_math or -ftz=true (fp16 subnormals and tiny
 * gradients must not flush to zero).
 */
#ifndef QT_QUANT_CUDA_CODEC_CUDA_H
#define QT_QUANT_CUDA_CODEC_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/codec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qt_cuda_codec qt_cuda_codec;

/* A codec for params p on the current device; QT_CODEC_EINVAL if p is unusable. */
int qt_cuda_codec_create(const qt_codec_params *p, qt_cuda_codec **out);
/* The same codec running its kernels' code on the host, block by block, thread by thread
 * (host pointers everywhere; calls are synchronous). For tests on machines without a GPU:
 * it checks the kernels' indexing and arithmetic, not the GPU. */
int qt_cuda_codec_create_emulated(const qt_codec_params *p, qt_cuda_codec **out);
/* Frees the scratch (after waiting for the device); NULL is a no-op. */
void qt_cuda_codec_destroy(qt_cuda_codec *c);

const qt_codec_params *qt_cuda_codec_params(const qt_cuda_codec *c);
/* False for the host path above (elias, huffman): the slice itself travels to the host. */
bool qt_cuda_codec_on_gpu(const qt_cuda_codec *c);
/* Allocates the scratch that calls on slices of up to n elements need (0 or -1). */
int qt_cuda_codec_reserve(qt_cuda_codec *c, size_t n);

/* qt_codec_encode on the GPU (arguments as there). *out_bytes is the exact size: known
 * without waiting for the GPU for the fixed layouts; topk and the host path synchronise
 * the stream. Errors found from the sizes alone (EINVAL, ENOSPC of the fixed layouts)
 * return before anything is launched, the residual untouched; topk's ENOSPC (index codes
 * longer than cap) comes after its residual update, which the CPU also allows. */
int qt_cuda_codec_encode(qt_cuda_codec *c, cudaStream_t stream, const float *g, float *residual,
                         size_t n, uint32_t step, uint32_t rank, uint64_t elem_offset,
                         uint8_t *out, size_t cap, size_t *out_bytes);

/* qt_codec_decode_add on the GPU: out[i] += scale * v[i] for the stream in[0..len).
 * status: a device int the call sets to 0, or to the stream's error code (the code
 * qt_codec_decode_add returns) when the kernels find one; the call itself then returns 0
 * without waiting. status == NULL: the call waits for the stream and returns that code.
 * On an error out may hold a partial sum (discard it), as on the CPU; a header or length
 * error leaves out untouched. */
int qt_cuda_codec_decode_add(qt_cuda_codec *c, cudaStream_t stream, const uint8_t *in, size_t len,
                             size_t n, float scale, float *out, int *status);

/* N streams of n elements each (in[r], len[r]: host arrays of device pointers and
 * lengths): out[i] = (zero_first ? 0 : out[i]) + scale*v_0[i] + ... + scale*v_{N-1}[i],
 * added in stream order: bitwise what zeroing out (if zero_first) and then N CPU
 * decode_adds produce. status: device array of N ints (stream r's code), or NULL to wait
 * and return the first stream's error in stream order. Reads out once and writes it once
 * per 32 streams on the kernel path. */
int qt_cuda_codec_decode_sum(qt_cuda_codec *c, cudaStream_t stream, int count,
                             const uint8_t *const *in, const size_t *len, size_t n, float scale,
                             bool zero_first, float *out, int *status);

/* The average of N streams: decode_sum with zero_first and scale = 1.0f / (float)N, which
 * is exactly what src/dist computes on the CPU (zero the slice, decode_add each rank's
 * stream with scale 1/N in rank order). */
int qt_cuda_codec_decode_average(qt_cuda_codec *c, cudaStream_t stream, int count,
                                 const uint8_t *const *in, const size_t *len, size_t n,
                                 float *out, int *status);

#ifdef __cplusplus
}
#endif

#endif
