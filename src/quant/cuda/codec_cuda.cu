/* codec_cuda.cu — the GPU codec object (codec_cuda.h): argument checks as in codec.c,
 * scratch and status words, dispatch to the kernel files (levels_cuda.cu, simple_cuda.cu,
 * decode_cuda.cu) or to the host path, and the emulated variant that runs the same
 * kernels on the host (codec_cuda_internal.h).
 *
 * Invariants: a stream's size and every error that depends only on sizes are decided on
 * the host before a launch, with codec.c's functions (qt_wire_resolve, max_bytes), so the
 * GPU and CPU agree on them by construction; scratch only grows, and is freed after the
 * device is idle.
 */
#include "quant/cuda/codec_cuda_internal.h"

#include "nn/cuda/cuda_ctx.h"

struct qt_cuda_codec {
    qt_codec_params p;
    bool emu; /* host pointers, kernels emulated */
    bool gpu; /* kernel path (else the host path) */
    void *scratch;
    size_t scratch_bytes;
    void *status; /* status words of calls that wait */
    size_t status_bytes;
    void *host; /* pinned staging of the host path */
    size_t host_bytes;
};

int qtc_memset(const qtc_exec &ex, void *p, int v, size_t bytes)
{
    if (bytes == 0) return 0;
    if (ex.emu) {
        memset(p, v, bytes);
        return 0;
    }
    CUDA_CHECK(cudaMemsetAsync(p, v, bytes, ex.stream));
    return 0;
}

static bool kernel_path(const qt_codec_params *p)
{
    switch (p->method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16:
    case QT_CODEC_ONEBIT: return true;
    case QT_CODEC_QSGD:
    case QT_CODEC_ECQ:
    case QT_CODEC_TERNGRAD: return p->encoding == QT_ENC_FIXED;
    case QT_CODEC_TOPK: return true; /* the index coding on the host, see topk_cuda.cu */
    default: return false;
    }
}

static int create(const qt_codec_params *p, bool emu, qt_cuda_codec **out)
{
    *out = NULL;
    if (qt_codec_params_check(p) != QT_CODEC_OK) return QT_CODEC_EINVAL;
    qt_cuda_codec *c = (qt_cuda_codec *)qt_calloc(1, sizeof *c);
    c->p = *p;
    c->emu = emu;
    c->gpu = kernel_path(p);
    *out = c;
    return 0;
}

extern "C" int qt_cuda_codec_create(const qt_codec_params *p, qt_cuda_codec **out)
{
    return create(p, false, out);
}

extern "C" int qt_cuda_codec_create_emulated(const qt_codec_params *p, qt_cuda_codec **out)
{
    return create(p, true, out);
}

static void free_mem(const qt_cuda_codec *c, void *p)
{
    if (!p) return;
    if (c->emu)
        free(p);
    else
        qt_cuda_free(p);
}

extern "C" void qt_cuda_codec_destroy(qt_cuda_codec *c)
{
    if (!c) return;
    if (!c->emu) (void)cudaDeviceSynchronize();
    free_mem(c, c->scratch);
    free_mem(c, c->status);
    if (c->host) {
        if (c->emu)
            free(c->host);
        else
            (void)cudaFreeHost(c->host);
    }
    free(c);
}

extern "C" const qt_codec_params *qt_cuda_codec_params(const qt_cuda_codec *c) { return &c->p; }
extern "C" bool qt_cuda_codec_on_gpu(const qt_cuda_codec *c) { return c->gpu; }

/* Grows a device (host, when emulated) buffer to `bytes`, waiting for the device first:
 * in-flight kernels may still use the old one. */
static int grow(qt_cuda_codec *c, void **buf, size_t *have, size_t bytes, const char *what)
{
    if (bytes <= *have) return 0;
    if (c->emu) {
        free(*buf);
        *buf = qt_malloc(bytes);
    } else {
        CUDA_CHECK(cudaDeviceSynchronize());
        qt_cuda_free(*buf);
        *buf = NULL;
        *have = 0;
        if (qt_cuda_malloc(buf, bytes, what)) return -1;
    }
    *have = bytes;
    return 0;
}

static size_t scratch_need(const qt_cuda_codec *c, const qt_wire *w)
{
    if (!c->gpu) return 0;
    if (w->method == QT_CODEC_ONEBIT) return qtc_onebit_scratch_bytes(w);
    if (w->method == QT_CODEC_TOPK) return qtc_topk_scratch_bytes(w);
    if (w->method == QT_CODEC_QSGD || w->method == QT_CODEC_ECQ || w->method == QT_CODEC_TERNGRAD)
        return qtc_levels_scratch_bytes(w, &c->p);
    return 0;
}

extern "C" int qt_cuda_codec_reserve(qt_cuda_codec *c, size_t n)
{
    qt_wire w;
    if (qt_wire_resolve(&c->p, n, &w) != QT_CODEC_OK) return QT_CODEC_EINVAL;
    return grow(c, &c->scratch, &c->scratch_bytes, scratch_need(c, &w), "codec scratch");
}

static int grow_host(qt_cuda_codec *c, size_t bytes)
{
    if (bytes <= c->host_bytes) return 0;
    if (c->emu) {
        free(c->host);
        c->host = qt_malloc(bytes);
        c->host_bytes = bytes;
        return 0;
    }
    CUDA_CHECK(cudaDeviceSynchronize()); /* copies in flight may use the old staging */
    if (c->host) (void)cudaFreeHost(c->host);
    c->host = NULL;
    c->host_bytes = 0;
    CUDA_CHECK(cudaMallocHost(&c->host, bytes));
    c->host_bytes = bytes;
    return 0;
}

/* ---- the host path (topk, elias, huffman) ---- */

static int host_encode(qt_cuda_codec *c, cudaStream_t stream, const float *g, float *residual,
                       size_t n, uint32_t step, uint32_t rank, uint64_t off, uint8_t *out,
                       size_t cap, size_t *out_bytes)
{
    if (c->emu) return qt_codec_encode(&c->p, g, residual, n, step, rank, off, out, cap, out_bytes);
    const size_t max = qt_codec_max_bytes(&c->p, n), ob = cap < max ? cap : max;
    const bool res = residual && qt_codec_has_residual(&c->p);
    const size_t fb = n * sizeof(float);
    if (grow_host(c, 2 * fb + ob)) return -1;
    float *hg = (float *)c->host, *hr = res ? hg + n : NULL;
    uint8_t *ho = (uint8_t *)c->host + 2 * fb;
    if (fb) CUDA_CHECK(cudaMemcpyAsync(hg, g, fb, cudaMemcpyDeviceToHost, stream));
    if (res && fb) CUDA_CHECK(cudaMemcpyAsync(hr, residual, fb, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    int rc = qt_codec_encode(&c->p, hg, hr, n, step, rank, off, ho, ob, out_bytes);
    if (rc != QT_CODEC_OK) return rc; /* the device residual is untouched */
    CUDA_CHECK(cudaMemcpyAsync(out, ho, *out_bytes, cudaMemcpyHostToDevice, stream));
    if (res && fb) CUDA_CHECK(cudaMemcpyAsync(residual, hr, fb, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream)); /* the staging is reused by the next call */
    return 0;
}

/* N CPU decode_adds in stream order, stopping at the first error (as src/dist does);
 * st: host status words. */
static int host_decode(qt_cuda_codec *c, cudaStream_t stream, int count, const uint8_t *const *in,
                       const size_t *len, size_t n, float scale, bool zero_first, float *out,
                       int *st)
{
    if (c->emu) {
        if (zero_first && n) memset(out, 0, n * sizeof(float));
        for (int r = 0; r < count; r++)
            if ((st[r] = qt_codec_decode_add(&c->p, in[r], len[r], n, scale, out)) != 0) break;
        return 0;
    }
    size_t total = n * sizeof(float);
    for (int r = 0; r < count; r++) total += len[r];
    if (grow_host(c, total ? total : 1)) return -1;
    float *ho = (float *)c->host;
    uint8_t *hin = (uint8_t *)c->host + n * sizeof(float);
    if (!zero_first && n)
        CUDA_CHECK(cudaMemcpyAsync(ho, out, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
    size_t at = 0;
    for (int r = 0; r < count; r++) {
        if (len[r]) CUDA_CHECK(cudaMemcpyAsync(hin + at, in[r], len[r], cudaMemcpyDeviceToHost, stream));
        at += len[r];
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (zero_first && n) memset(ho, 0, n * sizeof(float));
    at = 0;
    for (int r = 0; r < count; r++) {
        st[r] = qt_codec_decode_add(&c->p, hin + at, len[r], n, scale, ho);
        if (st[r] != 0) break;
        at += len[r];
    }
    if (n) CUDA_CHECK(cudaMemcpyAsync(out, ho, n * sizeof(float), cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return 0;
}

/* ---- public calls ---- */

extern "C" int qt_cuda_codec_encode(qt_cuda_codec *c, cudaStream_t stream, const float *g,
                                    float *residual, size_t n, uint32_t step, uint32_t rank,
                                    uint64_t elem_offset, uint8_t *out, size_t cap,
                                    size_t *out_bytes)
{
    qt_wire w;
    if (!c || qt_wire_resolve(&c->p, n, &w) != QT_CODEC_OK || !out_bytes || !out || (n && !g))
        return QT_CODEC_EINVAL;
    if (!c->gpu) return host_encode(c, stream, g, residual, n, step, rank, elem_offset, out, cap, out_bytes);
    if (grow(c, &c->scratch, &c->scratch_bytes, scratch_need(c, &w), "codec scratch")) return -1;
    const qtc_exec ex = {stream, c->emu};
    if (w.method == QT_CODEC_TOPK) {
        if (cap < QT_CODEC_HEADER_BYTES) return QT_CODEC_ENOSPC;
        if (grow_host(c, qtc_topk_host_bytes(&w))) return -1;
        return qtc_topk_encode(ex, &w, g, residual, out, cap, c->scratch, c->host, out_bytes);
    }
    const size_t total = qt_codec_max_bytes(&c->p, n); /* exact for the fixed layouts */
    if (cap < total) return QT_CODEC_ENOSPC;
    int rc;
    switch (w.method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16: rc = qtc_float_encode(ex, &w, g, out); break;
    case QT_CODEC_ONEBIT: rc = qtc_onebit_encode(ex, &w, g, residual, out, c->scratch); break;
    default:
        rc = qtc_levels_encode(ex, &c->p, &w, g, residual, step, rank, elem_offset, out, c->scratch);
        break;
    }
    if (rc) return -1;
    *out_bytes = total;
    return 0;
}

extern "C" int qt_cuda_codec_decode_sum(qt_cuda_codec *c, cudaStream_t stream, int count,
                                        const uint8_t *const *in, const size_t *len, size_t n,
                                        float scale, bool zero_first, float *out, int *status)
{
    qt_wire w;
    if (!c || count < 0 || qt_wire_resolve(&c->p, n, &w) != QT_CODEC_OK || (n && !out) ||
        (count && (!in || !len)))
        return QT_CODEC_EINVAL;
    for (int r = 0; r < count; r++)
        if (len[r] && !in[r]) return QT_CODEC_EINVAL;
    const qtc_exec ex = {stream, c->emu};
    const bool wait = status == NULL;
    int *st = status;
    if (wait) {
        if (grow(c, &c->status, &c->status_bytes, (size_t)(count ? count : 1) * sizeof(int), "codec status"))
            return -1;
        st = (int *)c->status;
    }
    if (qtc_memset(ex, st, 0, (size_t)count * sizeof(int))) return -1;
    const bool topk = w.method == QT_CODEC_TOPK;
    if (!c->gpu || topk) {
        /* these paths produce host status words, then store them */
        int *hst = (int *)qt_calloc((size_t)(count ? count : 1), sizeof(int));
        int rc;
        if (topk) {
            rc = grow(c, &c->scratch, &c->scratch_bytes, scratch_need(c, &w), "codec scratch");
            if (rc == 0) rc = grow_host(c, qtc_topk_decode_host_bytes(&w, len, count));
            if (rc == 0)
                rc = qtc_topk_decode(ex, &w, count, in, len, scale, zero_first, out, c->emu ? st : hst,
                                     c->scratch, c->host);
        } else {
            rc = host_decode(c, stream, count, in, len, n, scale, zero_first, out, c->emu ? st : hst);
        }
        if (rc == 0 && !c->emu && count) {
            cudaError_t e = cudaMemcpyAsync(st, hst, (size_t)count * sizeof(int), cudaMemcpyHostToDevice, stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
            if (QT_CUDA_CHECKED_(QT_LIB_CUDA, e)) rc = -1;
        }
        free(hst);
        if (rc) return rc;
    } else {
        if (count == 0 && zero_first && n && qtc_memset(ex, out, 0, n * sizeof(float))) return -1;
        for (int base = 0; base < count; base += QTC_MAX_STREAMS) {
            const int cnt = count - base < QTC_MAX_STREAMS ? count - base : QTC_MAX_STREAMS;
            if (qtc_fixed_decode(ex, &w, cnt, in + base, len + base, scale, zero_first && base == 0,
                                 out, st + base))
                return -1;
        }
    }
    if (!wait || count == 0) return 0;
    int *hst = (int *)qt_malloc((size_t)count * sizeof(int));
    if (c->emu) {
        memcpy(hst, st, (size_t)count * sizeof(int));
    } else {
        cudaError_t e = cudaMemcpyAsync(hst, st, (size_t)count * sizeof(int), cudaMemcpyDeviceToHost, stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
        if (QT_CUDA_CHECKED_(QT_LIB_CUDA, e)) {
            free(hst);
            return -1;
        }
    }
    int rc = 0;
    for (int r = 0; r < count && rc == 0; r++) rc = hst[r];
    free(hst);
    return rc;
}

extern "C" int qt_cuda_codec_decode_add(qt_cuda_codec *c, cudaStream_t stream, const uint8_t *in,
                                        size_t len, size_t n, float scale, float *out, int *status)
{
    return qt_cuda_codec_decode_sum(c, stream, 1, &in, &len, n, scale, false, out, status);
}

extern "C" int qt_cuda_codec_decode_average(qt_cuda_codec *c, cudaStream_t stream, int count,
                                            const uint8_t *const *in, const size_t *len, size_t n,
                                            float *out, int *status)
{
    if (count < 1) return QT_CODEC_EINVAL;
    return qt_cuda_codec_decode_sum(c, stream, count, in, len, n, 1.0f / (float)count, true, out, status);
}
