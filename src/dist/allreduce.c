/* allreduce.c — the uncompressed collective: MPI_Iallreduce of fp32 (or fp16) values.
 *
 * Used for the fp32 policy buckets (small and 1-D tensors), for every bucket during
 * warm-up, and for the allreduce baseline. fp32: a contiguous bucket is reduced in place
 * in the grad arena, a scattered one (policy buckets skip the tensors between theirs) is
 * packed first; the sum is scaled by 1/N afterwards. fp16: values are scaled by 1/N
 * before rounding to fp16 (no overflow from the sum of N gradients) and summed by a
 * user-defined op that adds in fp32 and rounds each partial sum to fp16, as an fp16
 * allreduce on the wire does.
 * Open MPI's allreduce gives every rank the same bits (ring / reduce+bcast schedules, and
 * a commutative op evaluates a+b and b+a alike), which tests/test_mpi_exchange.c checks.
 * Wire bytes are counted as a bandwidth-optimal ring: 2(N-1)/N of the buffer.
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

#include <string.h>

/* fp32 -> fp16, round to nearest even, overflow to Inf, NaN kept (F. Giesen's method). */
uint16_t qt_half_from_float(float value)
{
    const uint32_t f16max = (uint32_t)(127 + 16) << 23, f32inf = 255u << 23;
    const uint32_t denorm_magic = (uint32_t)((127 - 15) + (23 - 10) + 1) << 23;
    uint32_t f;
    memcpy(&f, &value, sizeof f);
    uint32_t sign = f & 0x80000000u;
    f ^= sign;
    uint16_t o;
    if (f >= f16max) {
        o = f > f32inf ? 0x7e00 : 0x7c00;
    } else if (f < (uint32_t)113 << 23) { /* result is subnormal or zero */
        float x, magic;
        memcpy(&x, &f, sizeof x);
        memcpy(&magic, &denorm_magic, sizeof magic);
        x += magic; /* the FPU rounds the mantissa into place */
        memcpy(&f, &x, sizeof f);
        o = (uint16_t)(f - denorm_magic);
    } else {
        uint32_t mant_odd = (f >> 13) & 1;
        f -= (uint32_t)(127 - 15) << 23;
        f += 0xfff + mant_odd;
        o = (uint16_t)(f >> 13);
    }
    return (uint16_t)(o | (sign >> 16));
}

float qt_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, f;
    if (exp == 0) {
        float v = (float)man * 0x1p-24f; /* subnormal (or zero): exact in fp32 */
        memcpy(&f, &v, sizeof f);
        f |= sign;
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (man << 13);
    } else {
        f = sign | ((exp + 112) << 23) | (man << 13);
    }
    float out;
    memcpy(&out, &f, sizeof out);
    return out;
}

static void half_sum(void *in, void *inout, int *len, MPI_Datatype *type)
{
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = qt_half_from_float(qt_half_to_float(a[i]) + qt_half_to_float(b[i]));
}

int qt_allreduce_op_create(qt_exchange *ex)
{
    if (!ex->opts.fp16_allreduce) return 0;
    MPI_CHECK(MPI_Op_create(half_sum, 1, &ex->half_sum));
    return 0;
}

void qt_allreduce_op_free(qt_exchange *ex)
{
    if (ex->half_sum != MPI_OP_NULL) MPI_Op_free(&ex->half_sum);
}

int qt_allreduce_start(qt_exchange *ex, qt_bucket *b)
{
    double t0 = qt_now();
    const qt_seg *segs = &ex->segs[b->first_seg];
    qt_chunk whole = {b->first_seg, b->n_segs, b->count, 0};
    if (!qt_chunk_finite(ex, &whole)) {
        b->nonfinite = true; /* sent anyway: the step is skipped on every rank */
        ex->local_bad = 1;
    }
    size_t bytes;
    if (b->mode == QT_MODE_FP16) {
        uint16_t *h = (uint16_t *)b->sbuf;
        float scale = 1.0f / (float)ex->size;
        size_t k = 0;
        for (int s = 0; s < b->n_segs; s++) {
            const float *g = ex->grads + segs[s].offset;
            for (size_t i = 0; i < segs[s].count; i++) h[k++] = qt_half_from_float(g[i] * scale);
        }
        bytes = b->count * sizeof(uint16_t);
        ex->st.t_encode += qt_now() - t0;
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, h, (int)b->count, MPI_UINT16_T, ex->half_sum,
                                 b->comm, &b->req));
    } else {
        float *buf = ex->grads + segs[0].offset;
        if (!b->contiguous) {
            buf = b->fbuf;
            size_t k = 0;
            for (int s = 0; s < b->n_segs; s++) {
                memcpy(buf + k, ex->grads + segs[s].offset, segs[s].count * sizeof(float));
                k += segs[s].count;
            }
        }
        bytes = b->count * sizeof(float);
        ex->st.t_encode += qt_now() - t0;
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)b->count, MPI_FLOAT, MPI_SUM, b->comm,
                                 &b->req));
    }
    qt_bucket_posted(ex, b, true);
    b->own_len = bytes;
    ex->st.bytes_payload += bytes;
    ex->st.bytes_fp32 += b->count * sizeof(float);
    ex->st.bytes_sent += (uint64_t)(2.0 * (ex->size - 1) / ex->size * (double)bytes);
    return 0;
}

int qt_allreduce_advance(qt_exchange *ex, qt_bucket *b)
{
    double t0 = qt_now();
    const qt_seg *segs = &ex->segs[b->first_seg];
    if (b->mode == QT_MODE_FP16) {
        const uint16_t *h = (const uint16_t *)b->sbuf;
        size_t k = 0;
        for (int s = 0; s < b->n_segs; s++) {
            float *g = ex->grads + segs[s].offset;
            for (size_t i = 0; i < segs[s].count; i++) g[i] = qt_half_to_float(h[k++]);
        }
    } else {
        float inv = 1.0f / (float)ex->size;
        size_t k = 0;
        for (int s = 0; s < b->n_segs; s++) {
            float *g = ex->grads + segs[s].offset;
            const float *src = b->contiguous ? g : b->fbuf + k;
            for (size_t i = 0; i < segs[s].count; i++) g[i] = src[i] * inv;
            k += segs[s].count;
        }
    }
    ex->st.t_decode += qt_now() - t0;
    b->done = true;
    return 0;
}
