/* conv.c — 2-D convolution on the CPU (fp32, NCHW) as im2col + OpenBLAS sgemm.
 *
 * Threads: OpenMP threads take chunks of G images each and call a SINGLE-THREADED sgemm
 * on their own scratch slot (qt_nn_set_threads puts OpenBLAS in that mode). Measured on
 * ResNet-20 b128 with 2 threads: 2x faster than one im2col of a chunk followed by
 * OpenBLAS's own 2-thread sgemm, because each thread's columns stay in its L2 and the
 * thread hand-off costs more than these small (16..64-row) products gain. If OpenBLAS
 * runs several threads anyway, the chunks run one after another.
 *
 * Per chunk, with K = c_in*kh*kw, P = oh*ow, col[K][G*P] = im2col(x) (column (g,oy,ox))
 * and dyT[G*P][c_out] = dY transposed:
 *   forward                 y[c_out][G*P]   = W[c_out][K] . col
 *   weight grad             dWt[K][c_out]  += col . dyT   (per thread; summed in thread
 *                                                          order and transposed at the end)
 *   input grad, stride 1:   dX[c_in][G*h*w] = Wt[c_in][c_out*kh*kw] . im2col(dY, kh-1-pad)
 *                           (a full convolution with the flipped kernel: no col2im scatter)
 *   input grad, otherwise:  dcol[K][G*P] = W^T . dY, then col2im into dx.
 * Every product is NoTrans x NoTrans: measured, dWt = col . dyT runs 1.9x faster for 16
 * output channels than dW = dY . col^T, which pays for transposing dY.
 *
 * Small layers (c_out*K*64 <= 1e6: all ResNet-20 convs but the 3x3 ones with 64
 * outputs): OpenBLAS 0.3.21 runs products with M*N*K <= 1e6 through its unpacked
 * small-matrix kernel, 1.3-1.9x faster on these shapes (116 vs 62 GF/s for 16x144
 * weights). Such layers take one image per chunk and issue their products in column
 * blocks of NB <= 256 that stay under that size; the blocks write NCHW directly. Larger
 * layers take chunks of G images (~256 columns, so col stays in L2: 5% faster than 1024
 * for 64 channels at 8x8) and one product each; G > 1 results are reordered to NCHW.
 * (An OpenBLAS without that kernel runs the blocks through its packed path: correct,
 * a little slower.)
 *
 * Workspace: the flipped weights, then one slot per thread, sized for
 * omp_get_max_threads() when qt_conv_workspace_floats is called (see layers.h).
 * Invariants: dw/db/dx are overwritten and every output element is written. Chunks go to
 * threads by a static schedule, so results are bit-reproducible for a fixed thread count.
 */
#include "nn/layers.h"

#include "core/qt.h"

#include <cblas.h>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <string.h>

#define QT_CONV_COLS 256 /* columns per chunk for large layers (keeps col in L2) */
#define QT_CONV_SMALL_MNK 1000000.0 /* OpenBLAS's small-matrix limit on M*N*K */

void qt_nn_set_threads(int n)
{
    omp_set_num_threads(n > 0 ? n : 1);
    openblas_set_num_threads(1);
}

void qt_conv_out_hw(const qt_conv *c, int h, int w, int *oh, int *ow)
{
    *oh = (h + 2 * c->pad - c->kh) / c->stride + 1;
    *ow = (w + 2 * c->pad - c->kw) / c->stride + 1;
}

static bool conv_full_backward(const qt_conv *c)
{
    return c->stride == 1 && c->pad <= c->kh - 1 && c->pad <= c->kw - 1;
}

static bool conv_is_pointwise(const qt_conv *c)
{
    return c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0;
}

static size_t conv_round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* How a batch is split and where a thread's slot keeps what. */
typedef struct {
    int gmax, chunks, threads;
    int nb; /* column block for small layers, 0 = one product per chunk */
    int h, w, oh, ow;
    size_t p, hw, k, kk;      /* output pixels, input pixels, c_in*kh*kw, kh*kw */
    size_t col, cgp, dyt, data, dwt, slot; /* slot parts, floats */
} conv_plan;

typedef struct {
    float *col, *cgp, *dyt, *data, *dwt;
} conv_slot;

/* Threads that run chunks: all OpenMP threads, unless OpenBLAS runs its own threads (a
 * caller that did not use qt_nn_set_threads); then chunks run one after another. */
static int conv_threads(void) { return openblas_get_num_threads() > 1 ? 1 : omp_get_max_threads(); }

static conv_plan conv_make_plan(const qt_conv *c, int n, int h, int w, int threads)
{
    conv_plan q;
    q.h = h;
    q.w = w;
    qt_conv_out_hw(c, h, w, &q.oh, &q.ow);
    q.p = (size_t)q.oh * q.ow;
    q.hw = (size_t)h * w;
    q.kk = (size_t)c->kh * c->kw;
    q.k = (size_t)c->c_in * q.kk;
    q.threads = threads;
    const double weights = (double)c->c_out * (double)q.k;
    q.nb = 0;
    if (weights * 64 <= QT_CONV_SMALL_MNK) {
        q.nb = 256;
        while (weights * q.nb > QT_CONV_SMALL_MNK) q.nb /= 2;
    }
    size_t g = 1;
    if (!q.nb) {
        size_t per_thread = ((size_t)n + q.threads - 1) / q.threads; /* keep every thread busy */
        g = QT_MAX(QT_MIN(QT_CONV_COLS / (q.p ? q.p : 1), per_thread), (size_t)1);
    }
    q.gmax = (int)g;
    q.chunks = (n + q.gmax - 1) / q.gmax;
    q.col = conv_round16(q.k * g * q.p);
    q.cgp = conv_round16(g > 1 ? (size_t)c->c_out * g * q.p : 0);
    q.dyt = conv_round16(g * q.p * (size_t)c->c_out);
    if (conv_full_backward(c)) /* im2col(dY) + dX in [c_in][g*hw] */
        q.data = conv_round16((size_t)c->c_out * q.kk * g * q.hw + (g > 1 ? (size_t)c->c_in * g * q.hw : 0));
    else /* dcol */
        q.data = conv_round16(q.k * g * q.p);
    q.dwt = conv_round16(q.k * c->c_out);
    q.slot = q.col + q.cgp + q.dyt + q.data + q.dwt;
    return q;
}

static conv_slot conv_slot_at(const conv_plan *q, float *slots, int thread)
{
    conv_slot s;
    s.col = slots + (size_t)thread * q->slot;
    s.cgp = s.col + q->col;
    s.dyt = s.cgp + q->cgp;
    s.data = s.dyt + q->dyt;
    s.dwt = s.data + q->data;
    return s;
}

/* Enough for either threading mode, so that the OpenBLAS thread count may change between
 * sizing and use; the OpenMP thread count may not grow. */
size_t qt_conv_workspace_floats(const qt_conv *c, int n, int h, int w)
{
    const int t = omp_get_max_threads();
    const conv_plan a = conv_make_plan(c, n, h, w, t), b = conv_make_plan(c, n, h, w, 1);
    const size_t slots = QT_MAX((size_t)t * a.slot, b.slot);
    return conv_round16((size_t)c->c_in * c->c_out * a.kk) + slots;
}

/* ---- products ---- */

/* C[m][cols] = op(A)[m][k] . B[k][cols], in column blocks of nb (0 = one product). */
static void conv_gemm_cols(bool trans_a, int m, int cols, int k, const float *a, int lda,
                           const float *b, int ldb, float *c, int ldc, int nb)
{
    const int step = nb ? nb : cols;
    for (int j = 0; j < cols; j += step)
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, m,
                    QT_MIN(step, cols - j), k, 1.0f, a, lda, b + j, ldb, 0.0f, c + j, ldc);
}

/* C[m][n] (+)= A[m][len] . B[len][n], the reduction split in blocks of nb (0 = one). */
static void conv_gemm_reduce(int m, int n, int len, const float *a, int lda, const float *b,
                             int ldb, bool accumulate, float *c, int ldc, int nb)
{
    const int step = nb ? nb : len;
    for (int j = 0; j < len; j += step)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, QT_MIN(step, len - j), 1.0f,
                    a + j, lda, b + (size_t)j * ldb, ldb, accumulate || j ? 1.0f : 0.0f, c, ldc);
}

/* ---- data movement ---- */

/* Geometry of one im2col: g images of c channels, h x w, a kh x kw window with stride s
 * and paddings ph, pw, giving oh x ow per image. */
typedef struct {
    int g, c, h, w, kh, kw, s, ph, pw, oh, ow;
} conv_geom;

/* [*lo, *hi): output positions o whose input o*s - pad + k lies in [0, n). */
static void conv_valid_range(int n, int out, int s, int pad, int k, int *lo, int *hi)
{
    int a = pad - k, b = n - 1 + pad - k; /* need a <= o*s <= b */
    int l = a > 0 ? (a + s - 1) / s : 0;
    int u = b >= 0 ? b / s + 1 : 0;
    u = QT_MIN(u, out);
    l = QT_MIN(l, out);
    *lo = l;
    *hi = QT_MAX(u, l);
}

/* im2col for stride 1 when the output is as wide as the input (3x3 pad 1, and the full
 * convolution of backward): row (ci,a,b) is the input plane shifted by a fixed offset,
 * so its valid part is ONE contiguous copy; the columns that wrapped around a row end
 * are then zeroed. 2x faster than copying row by row at 16 and 32 pixels a row. */
static void conv_im2col_shift(const conv_geom *q, const float *x, float *col)
{
    const int kk = q->kh * q->kw, rows = q->c * kk, ow = q->ow;
    const size_t p = (size_t)q->oh * ow, ld = (size_t)q->g * p, plane = (size_t)q->h * q->w;
    for (int r = 0; r < rows; r++) {
        const int ci = r / kk, a = (r / q->kw) % q->kh, b = r % q->kw;
        int x0, x1, y0, y1;
        conv_valid_range(q->w, ow, 1, q->pw, b, &x0, &x1);
        conv_valid_range(q->h, q->oh, 1, q->ph, a, &y0, &y1);
        const ptrdiff_t shift = (ptrdiff_t)(a - q->ph) * q->w + (b - q->pw);
        for (int gi = 0; gi < q->g; gi++) {
            const float *src = x + ((size_t)gi * q->c + ci) * plane;
            float *dst = col + (size_t)r * ld + (size_t)gi * p;
            if (y1 <= y0 || x1 <= x0) {
                memset(dst, 0, sizeof(float) * p);
                continue;
            }
            const size_t start = (size_t)y0 * ow + x0, end = (size_t)(y1 - 1) * ow + x1;
            memset(dst, 0, sizeof(float) * start);
            memcpy(dst + start, src + (ptrdiff_t)start + shift, sizeof(float) * (end - start));
            memset(dst + end, 0, sizeof(float) * (p - end));
            /* column by column: row by row, gcc turns these 1-float loops into memset calls */
            for (int ox = 0; ox < x0; ox++)
                for (int oy = y0; oy < y1; oy++) dst[(size_t)oy * ow + ox] = 0.0f;
            for (int ox = x1; ox < ow; ox++)
                for (int oy = y0; oy < y1; oy++) dst[(size_t)oy * ow + ox] = 0.0f;
        }
    }
}

/* col[(ci,a,b)][(gi,oy,ox)] = x[gi][ci][oy*s-ph+a][ox*s-pw+b], 0 outside the image.
 * Rows are short (8..32 floats in ResNet-20): plain loops, not memcpy calls; stride 2
 * has its own loop so that the compiler vectorises it with a constant stride. */
static void conv_im2col(const conv_geom *q, const float *x, float *col)
{
    if (q->s == 1 && q->ow == q->w) {
        conv_im2col_shift(q, x, col);
        return;
    }
    const int kk = q->kh * q->kw, rows = q->c * kk, ow = q->ow, s = q->s;
    const size_t p = (size_t)q->oh * ow, ld = (size_t)q->g * p, plane = (size_t)q->h * q->w;
    for (int r = 0; r < rows; r++) {
        const int ci = r / kk, a = (r / q->kw) % q->kh, b = r % q->kw;
        int x0, x1, y0, y1;
        conv_valid_range(q->w, ow, s, q->pw, b, &x0, &x1);
        conv_valid_range(q->h, q->oh, s, q->ph, a, &y0, &y1);
        for (int gi = 0; gi < q->g; gi++) {
            const float *src = x + ((size_t)gi * q->c + ci) * plane;
            float *restrict dst = col + (size_t)r * ld + (size_t)gi * p;
            memset(dst, 0, sizeof(float) * (size_t)y0 * ow);
            memset(dst + (size_t)y1 * ow, 0, sizeof(float) * (size_t)(q->oh - y1) * ow);
            for (int oy = y0; oy < y1; oy++) {
                const float *restrict row = src + (ptrdiff_t)(oy * s - q->ph + a) * q->w - q->pw + b;
                float *restrict d = dst + (size_t)oy * ow;
                if (s == 2)
                    for (int ox = x0; ox < x1; ox++) d[ox] = row[2 * ox];
                else
                    for (int ox = x0; ox < x1; ox++) d[ox] = row[ox * s];
            }
            /* border columns one column at a time (gcc would call memset per row) */
            for (int ox = 0; ox < x0; ox++)
                for (int oy = y0; oy < y1; oy++) dst[(size_t)oy * ow + ox] = 0.0f;
            for (int ox = x1; ox < ow; ox++)
                for (int oy = y0; oy < y1; oy++) dst[(size_t)oy * ow + ox] = 0.0f;
        }
    }
}

/* dx = the adjoint of conv_im2col applied to dcol (overwrites dx). */
static void conv_col2im(const conv_geom *q, const float *dcol, float *dx)
{
    const int kk = q->kh * q->kw;
    const size_t p = (size_t)q->oh * q->ow, ld = (size_t)q->g * p, plane = (size_t)q->h * q->w;
    for (int gi = 0; gi < q->g; gi++) {
        for (int ci = 0; ci < q->c; ci++) {
            float *dst = dx + ((size_t)gi * q->c + ci) * plane;
            memset(dst, 0, sizeof(float) * plane);
            for (int a = 0; a < q->kh; a++) {
                for (int b = 0; b < q->kw; b++) {
                    const float *src = dcol + (size_t)(ci * kk + a * q->kw + b) * ld + (size_t)gi * p;
                    int x0, x1;
                    conv_valid_range(q->w, q->ow, q->s, q->pw, b, &x0, &x1);
                    for (int oy = 0; oy < q->oh; oy++) {
                        const int iy = oy * q->s - q->ph + a;
                        if (iy < 0 || iy >= q->h) continue;
                        float *row = dst + (ptrdiff_t)iy * q->w - q->pw + b;
                        const float *sr = src + (size_t)oy * q->ow;
                        for (int ox = x0; ox < x1; ox++) row[ox * q->s] += sr[ox];
                    }
                }
            }
        }
    }
}

/* cgp[c][g*p] <-> the NCHW chunk [g][c][p]. */
static void conv_to_cgp(const float *nchw, float *cgp, int g, int c, size_t p)
{
    for (int gi = 0; gi < g; gi++)
        for (int ci = 0; ci < c; ci++)
            memcpy(cgp + ((size_t)ci * g + gi) * p, nchw + ((size_t)gi * c + ci) * p, sizeof(float) * p);
}

static void conv_to_nchw(const float *cgp, float *nchw, int g, int c, size_t p)
{
    for (int gi = 0; gi < g; gi++)
        for (int ci = 0; ci < c; ci++)
            memcpy(nchw + ((size_t)gi * c + ci) * p, cgp + ((size_t)ci * g + gi) * p, sizeof(float) * p);
}

#if defined(__AVX512F__)
/* dst[j][i] = src[i][j] for one 16 x 16 tile, in registers: 4x faster than element by
 * element, which made the transpose 10% of a 16-channel backward. */
static void conv_transpose16(const float *src, size_t lds, float *dst, size_t ldd)
{
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i++) { /* t: pairs of rows interleaved per 32-bit element */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 4; q++) { /* u[4q+m], lane l: rows 4q..4q+3 at column 4l+m */
        __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 1]);
        __m512d c = _mm512_castps_pd(t[4 * q + 2]), d = _mm512_castps_pd(t[4 * q + 3]);
        u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int m = 0; m < 4; m++) { /* 4x4 transpose of 128-bit lanes */
        __m512 w0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44), w1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44), w3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
        _mm512_storeu_ps(dst + (size_t)m * ldd, _mm512_shuffle_f32x4(w0, w2, 0x88));
        _mm512_storeu_ps(dst + (size_t)(4 + m) * ldd, _mm512_shuffle_f32x4(w0, w2, 0xDD));
        _mm512_storeu_ps(dst + (size_t)(8 + m) * ldd, _mm512_shuffle_f32x4(w1, w3, 0x88));
        _mm512_storeu_ps(dst + (size_t)(12 + m) * ldd, _mm512_shuffle_f32x4(w1, w3, 0xDD));
    }
}
#endif

/* dyt[(gi,j)][c] = the NCHW chunk [gi][c][j], in 16 x 16 tiles. */
static void conv_transpose_dy(const float *dy, float *dyt, int g, int c, size_t p)
{
    for (int gi = 0; gi < g; gi++) {
        const float *src = dy + (size_t)gi * c * p;
        float *dst = dyt + (size_t)gi * p * c;
        for (size_t j0 = 0; j0 < p; j0 += 16) {
            const size_t j1 = QT_MIN(j0 + 16, p);
            for (int c0 = 0; c0 < c; c0 += 16) {
                const int c1 = QT_MIN(c0 + 16, c);
#if defined(__AVX512F__)
                if (j1 - j0 == 16 && c1 - c0 == 16) {
                    conv_transpose16(src + (size_t)c0 * p + j0, p, dst + j0 * c + c0, (size_t)c);
                    continue;
                }
#endif
                for (int ci = c0; ci < c1; ci++)
                    for (size_t j = j0; j < j1; j++) dst[j * c + ci] = src[(size_t)ci * p + j];
            }
        }
    }
}

static void conv_add_bias(const float *bias, float *y, int g, int c, size_t p)
{
    for (int i = 0; i < g; i++)
        for (int ci = 0; ci < c; ci++) {
            float *row = y + ((size_t)i * c + ci) * p;
            for (size_t j = 0; j < p; j++) row[j] += bias[ci];
        }
}

/* ---- forward ---- */

/* col = im2col(x) of a chunk of g images, or x itself for a 1x1 stride-1 conv of one image. */
static const float *conv_columns(const qt_conv *c, const conv_plan *q, const float *x, int g, float *col)
{
    if (g == 1 && conv_is_pointwise(c)) return x;
    conv_geom gm = {g, c->c_in, q->h, q->w, c->kh, c->kw, c->stride, c->pad, c->pad, q->oh, q->ow};
    conv_im2col(&gm, x, col);
    return col;
}

static void conv_forward_chunk(const qt_conv *c, const conv_plan *q, const float *x, float *y, int g,
                               const conv_slot *s)
{
    const int cols = (int)(g * q->p), k = (int)q->k;
    const float *b = conv_columns(c, q, x, g, s->col);
    float *out = g == 1 ? y : s->cgp;
    conv_gemm_cols(false, c->c_out, cols, k, c->w, k, b, cols, out, cols, q->nb);
    if (g > 1) conv_to_nchw(s->cgp, y, g, c->c_out, q->p);
    if (c->b) conv_add_bias(c->b, y, g, c->c_out, q->p);
}

/* Chunks of images are independent: each thread runs whole chunks on its own slot. */
void qt_conv_forward(const qt_conv *c, const float *x, float *y, int n, int h, int w, float *ws)
{
    const conv_plan q = conv_make_plan(c, n, h, w, conv_threads());
    const size_t in_img = (size_t)c->c_in * q.hw, out_img = (size_t)c->c_out * q.p;
    float *slots = ws + conv_round16((size_t)c->c_in * c->c_out * q.kk);
#pragma omp parallel num_threads(q.threads)
    {
        const conv_slot s = conv_slot_at(&q, slots, omp_get_thread_num());
#pragma omp for schedule(static)
        for (int ch = 0; ch < q.chunks; ch++) {
            const int i0 = ch * q.gmax, g = QT_MIN(q.gmax, n - i0);
            conv_forward_chunk(c, &q, x + (size_t)i0 * in_img, y + (size_t)i0 * out_img, g, &s);
        }
    }
}

/* ---- backward ---- */

/* Wt[ci][co][a][b] = W[co][ci][kh-1-a][kw-1-b]: the kernel of the full convolution that
 * maps dY back to dX when the stride is 1. */
static void conv_flip_weights(const qt_conv *c, float *wt)
{
    const int kh = c->kh, kw = c->kw, kk = kh * kw;
    for (int co = 0; co < c->c_out; co++)
        for (int ci = 0; ci < c->c_in; ci++)
            for (int a = 0; a < kh; a++)
                for (int b = 0; b < kw; b++)
                    wt[((size_t)ci * c->c_out + co) * kk + a * kw + b] =
                        c->w[((size_t)co * c->c_in + ci) * kk + (kh - 1 - a) * kw + (kw - 1 - b)];
}

/* Input gradient of one chunk from its dY (NCHW). */
static void conv_backward_data(const qt_conv *c, const conv_plan *q, const float *dy, float *dx,
                               int g, const float *wt, const conv_slot *s)
{
    if (conv_full_backward(c)) {
        /* dX[c_in][g*h*w] = Wt . im2col(dY padded by kh-1-pad): h x w from oh x ow. */
        const int k2 = (int)(c->c_out * q->kk), cols = (int)(g * q->hw);
        float *col2 = s->data, *dxr = s->data + (size_t)k2 * q->gmax * q->hw;
        const float *b = dy;
        if (!(g == 1 && conv_is_pointwise(c))) {
            conv_geom gm = {g, c->c_out, q->oh, q->ow, c->kh, c->kw, 1, c->kh - 1 - c->pad,
                            c->kw - 1 - c->pad, q->h, q->w};
            conv_im2col(&gm, dy, col2);
            b = col2;
        }
        float *out = g == 1 ? dx : dxr;
        conv_gemm_cols(false, c->c_in, cols, k2, wt, k2, b, cols, out, cols, q->nb);
        if (g > 1) conv_to_nchw(dxr, dx, g, c->c_in, q->hw);
    } else {
        /* dcol[k][g*p] = W^T . dY, then scatter back. */
        const int k = (int)q->k, cols = (int)(g * q->p);
        const float *dyr = dy;
        if (g > 1) {
            conv_to_cgp(dy, s->cgp, g, c->c_out, q->p);
            dyr = s->cgp;
        }
        conv_gemm_cols(true, k, cols, c->c_out, c->w, k, dyr, cols, s->data, cols, q->nb);
        conv_geom gm = {g, c->c_in, q->h, q->w, c->kh, c->kw, c->stride, c->pad, c->pad, q->oh, q->ow};
        conv_col2im(&gm, s->data, dx);
    }
}

/* One chunk: weight gradient into the thread's dWt[k][c_out] (`first`: overwrite), and the
 * input gradient unless dx is NULL. */
static void conv_backward_chunk(const qt_conv *c, const conv_plan *q, const float *x, const float *dy,
                                float *dx, int g, bool first, const float *wt, const conv_slot *s)
{
    const int cols = (int)(g * q->p), k = (int)q->k;
    conv_transpose_dy(dy, s->dyt, g, c->c_out, q->p);
    const float *b = conv_columns(c, q, x, g, s->col);
    conv_gemm_reduce(k, c->c_out, cols, b, cols, s->dyt, c->c_out, !first, s->dwt, c->c_out, q->nb);
    if (dx) conv_backward_data(c, q, dy, dx, g, wt, s);
}

/* db[co] = sum of dy over images and pixels, one owner thread per channel. */
static void conv_bias_grad(const float *dy, float *db, int n, int c, size_t p)
{
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < c; ci++) {
        double acc = 0.0;
        for (int i = 0; i < n; i++) {
            const float *row = dy + ((size_t)i * c + ci) * p;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (size_t j = 0; j < p; j++) sum += row[j];
            acc += sum;
        }
        db[ci] = (float)acc;
    }
}

/* Each thread accumulates the weight gradient of its chunks in its own dWt; dW is their
 * sum in thread order, transposed back to [c_out][k]. */
void qt_conv_backward(const qt_conv *c, const float *x, const float *dy, float *dx, int n, int h,
                      int w, float *ws)
{
    const conv_plan q = conv_make_plan(c, n, h, w, conv_threads());
    const size_t in_img = (size_t)c->c_in * q.hw, out_img = (size_t)c->c_out * q.p;
    float *wt = ws, *slots = ws + conv_round16((size_t)c->c_in * c->c_out * q.kk);
    if (dx && conv_full_backward(c)) conv_flip_weights(c, wt);
#pragma omp parallel num_threads(q.threads)
    {
        const conv_slot s = conv_slot_at(&q, slots, omp_get_thread_num());
        bool first = true;
#pragma omp for schedule(static) nowait
        for (int ch = 0; ch < q.chunks; ch++) {
            const int i0 = ch * q.gmax, g = QT_MIN(q.gmax, n - i0);
            conv_backward_chunk(c, &q, x + (size_t)i0 * in_img, dy + (size_t)i0 * out_img,
                                dx ? dx + (size_t)i0 * in_img : NULL, g, first, wt, &s);
            first = false;
        }
        if (first) memset(s.dwt, 0, sizeof(float) * q.k * c->c_out); /* a thread with no chunk */
#pragma omp barrier
        const int nt = omp_get_num_threads();
#pragma omp for schedule(static)
        for (size_t kk = 0; kk < q.k; kk++) {
            for (int co = 0; co < c->c_out; co++) {
                float sum = 0.0f;
                for (int u = 0; u < nt; u++) sum += conv_slot_at(&q, slots, u).dwt[kk * c->c_out + co];
                c->dw[(size_t)co * q.k + kk] = sum;
            }
        }
    }
    if (c->db) conv_bias_grad(dy, c->db, n, c->c_out, q.p);
}
