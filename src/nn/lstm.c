/* lstm.c — the CPU LSTM(P) layer of lstm.h: forward, backward through time.
 *
 * Forward, per chunk:
 *   G[T*N][4H] = X[T*N][F] . W_x^T + b         one sgemm for all frames (rows split over threads)
 *   then each thread runs the whole recurrence for ITS sequences (below), per step s
 *   (frame t = s, or lengths[n]-1-s when reverse), on its running ones:
 *     Z[n][4H] = r_prev[n][R] . W_h^T           one sgemm
 *     fused gate loop                            G row := (i, f, g, o), C row := c_t, h
 *     (LSTMP) r[n][P] = h[n][H] . W_p^T          one sgemm
 * Backward, steps in reverse order, with dr/dc the gradients of the carried states:
 *   (LSTMP) dh = (dy + dr) . W_p, else dh = dy + dr
 *   fused gate loop: dz (pre-activation gradients) overwrite G in place, dc updated
 *   dr = dz . W_h
 * then whole-chunk products, each thread a slice of the output rows: dW_x = dZ^T X,
 * dW_h = dZ^T R_prev, dW_p = dR^T Hs, dx = dZ W_x, and the bias and peephole sums.
 * R_prev is not stored: row (t, n) of r_prev is y's row of the previous frame (t-1, or
 * t+1 when reverse) for every frame but the first, whose term dZ_first^T h0 is added apart.
 * This relies on y's padding rows being zero: the frame after a sequence's last in the
 * reverse direction pairs with a padding row, which must contribute nothing.
 *
 * Threads split the BATCH for the recurrence: sequences sorted by decreasing length are
 * dealt round-robin to the threads (balanced work for mixed lengths), so each thread's
 * running sequences are a prefix of its rows and no barrier is needed inside the time
 * loop. Measured against splitting the cells over the threads (the first version: one or
 * two barriers per frame), lstmbench 2x256 b32 T100 with 2 threads, median ms per step,
 * alternating runs on this shared 2-core machine: 145 vs 172 when it was nearly idle,
 * 260-590 vs 1000-3300 with 6-8 other busy processes, where every barrier waits for a
 * preempted thread. Single-threaded both take ~200 ms. The price: a batch smaller than
 * the thread count leaves threads idle in the recurrence.
 *
 * Invariants: padding rows of G and dR are zeroed before the chunk sgemms (the workspace
 * may hold anything, NaN included, on entry); Hs padding rows are zeroed by forward. All
 * saved activations are in (t, n) order, so forward and backward may run on different
 * thread counts.
 *
 * Nonlinearities: vectorisable float exp (Cephes expf: round-to-nearest range reduction,
 * degree-6 polynomial, 2^n by exponent bits) giving sigmoid and tanh (Cephes tanhf's
 * polynomial for |x| < 0.625): all within 2.5 u (u = 2^-24) of the true values (checked
 * over [-100, 100]), and vectorised where libm's expf/tanhf are not (without -ffast-math),
 * which matters: 5 transcendental functions per cell per frame would otherwise cost as
 * much as the GEMMs.
 */
#include "nn/lstm.h"

#include "core/qt.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- nonlinearities ---- */

typedef union {
    float f;
    int32_t i;
} lstm_bits;

/* x is clamped to [-87, 88] so that 2^n stays a normal float: below -87 the sigmoid
 * returns ~1e-38 rather than a subnormal, which no gradient can tell apart. */
static inline float lstm_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest (|t| < 2^22) */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    lstm_bits b;
    b.i = ((int32_t)n + 127) << 23;
    return p * b.f;
}

static inline float lstm_sigmoid(float x) { return 1.0f / (1.0f + lstm_exp(-x)); }

static inline float lstm_tanh(float x)
{
    const float a = fabsf(x), z = x * x;
    const float big = 1.0f - 2.0f / (lstm_exp(2.0f * a) + 1.0f);
    const float small =
        x + x * z * ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                      1.33314422036e-1f) * z - 3.33332819422e-1f);
    return a < 0.625f ? small : copysignf(big, x);
}

/* ---- shapes, workspace ---- */

size_t qt_lstm_param_count(int in, int hidden, int proj, bool peephole)
{
    const size_t h = (size_t)hidden, r = (size_t)(proj > 0 ? proj : hidden);
    return 4 * h * ((size_t)in + r + 1) + (peephole ? 3 * h : 0) + (size_t)(proj > 0 ? proj : 0) * h;
}

int qt_lstm_out(const qt_lstm *l) { return l->proj > 0 ? l->proj : l->hidden; }

void qt_lstm_bind(qt_lstm *l, float *params, float *grads)
{
    const size_t h = (size_t)l->hidden, r = (size_t)qt_lstm_out(l);
    const size_t off_h = 4 * h * (size_t)l->in, off_b = off_h + 4 * h * r, off_p = off_b + 4 * h,
                 off_proj = off_p + (l->peephole ? 3 * h : 0);
    l->w_x = params;
    l->w_h = params + off_h;
    l->b = params + off_b;
    l->w_peep = l->peephole ? params + off_p : NULL;
    l->w_proj = l->proj > 0 ? params + off_proj : NULL;
    l->dw_x = grads;
    l->dw_h = grads ? grads + off_h : NULL;
    l->db = grads ? grads + off_b : NULL;
    l->dw_peep = grads && l->peephole ? grads + off_p : NULL;
    l->dw_proj = grads && l->proj > 0 ? grads + off_proj : NULL;
}

/* The workspace, carved in this order; every part starts on a 64-byte boundary. */
typedef struct {
    float *g;      /* [T*N][4H] gate activations (forward), dz (backward) */
    float *c;      /* [T*N][H] c_t */
    float *hs;     /* [T*N][H] h_t before the projection (LSTMP only) */
    float *dr;     /* [T*N][P] total gradient of r_t (LSTMP only) */
    float *h0;     /* [N][R] copy of the initial states (zeros when not given) */
    float *c0;     /* [N][H] */
    float *z;      /* [N][4H] one step's recurrent pre-activations / dz; rows per thread */
    float *st;     /* [N][R] carried r (forward), dr (backward) */
    float *cs;     /* [N][H] carried c (forward), dc (backward) */
    float *hb;     /* [N][H] h (forward, LSTMP only), dh (backward) */
    float *drt;    /* [N][P] one step's total dr, LSTMP only */
    float *peep;   /* [3][H] zero peephole weights when there are none (a branch-free loop) */
    int32_t *order; /* [N] sequences by decreasing length */
} lstm_ws;

static size_t lstm_round(size_t n) { return (n + 15) & ~(size_t)15; }

#define LSTM_PARTS 13
/* Offsets (in floats) of the parts; returns the total. */
static size_t lstm_offsets(const qt_lstm *l, int t, int n, size_t off[LSTM_PARTS])
{
    const size_t h = (size_t)l->hidden, r = (size_t)qt_lstm_out(l), tn = (size_t)t * (size_t)n,
                 nn = (size_t)n, p = (size_t)(l->proj > 0 ? l->proj : 0);
    const size_t sizes[LSTM_PARTS] = {tn * 4 * h, tn * h, p ? tn * h : 0, tn * p, nn * r, nn * h, nn * 4 * h,
                                      nn * r, nn * h, nn * h, nn * p, l->peephole ? 0 : 3 * h,
                                      nn /* int32 */};
    size_t total = 0;
    for (int i = 0; i < LSTM_PARTS; i++) {
        off[i] = total;
        total += lstm_round(sizes[i]);
    }
    return total;
}

size_t qt_lstm_workspace_floats(const qt_lstm *l, int t, int n)
{
    size_t off[LSTM_PARTS];
    return lstm_offsets(l, t, n, off);
}

static lstm_ws lstm_carve(const qt_lstm *l, int t, int n, float *base)
{
    size_t o[LSTM_PARTS];
    lstm_offsets(l, t, n, o);
    lstm_ws w = {base + o[0], base + o[1], base + o[2], base + o[3],  base + o[4],  base + o[5],
                 base + o[6], base + o[7], base + o[8], base + o[9], base + o[10], base + o[11],
                 (int32_t *)(void *)(base + o[12])};
    return w;
}

/* [lo, hi) of part k of nt over `total` items: boundaries on multiples of 16 floats (one
 * AVX-512 vector, and a cache line) when each part still gets at least 16 items. */
static void lstm_split(int total, int k, int nt, int *lo, int *hi)
{
    if (total >= 16 * nt) {
        const long blocks = (total + 15) / 16;
        *lo = (int)QT_MIN((long)total, 16 * (blocks * k / nt));
        *hi = (int)QT_MIN((long)total, 16 * (blocks * (k + 1) / nt));
    } else {
        *lo = (int)((long)total * k / nt);
        *hi = (int)((long)total * (k + 1) / nt);
    }
}

static int lstm_frame(const qt_lstm *l, const int32_t *len, int n, int s)
{
    return l->reverse ? len[n] - 1 - s : s;
}

/* Checks the lengths and writes order[] = sequences by decreasing length, ties by index. */
static void lstm_prepare(const qt_lstm_data *d, int32_t *order)
{
    QT_ASSERT(d->t >= 1 && d->n >= 1 && d->lengths && d->ws);
    for (int i = 0; i < d->n; i++) {
        QT_ASSERT(d->lengths[i] >= 0 && d->lengths[i] <= d->t);
        order[i] = i;
    }
    /* insertion sort: batches are small, and it is stable without a global comparator context */
    for (int i = 1; i < d->n; i++) {
        const int32_t v = order[i];
        int j = i - 1;
        while (j >= 0 && d->lengths[order[j]] < d->lengths[v]) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = v;
    }
}

static void lstm_copy_or_zero(float *dst, const float *src, size_t count)
{
    if (src) memcpy(dst, src, count * sizeof(float));
    else memset(dst, 0, count * sizeof(float));
}

/* What one thread does, fixed for the whole call. */
typedef struct {
    int k, nt;   /* this thread, threads */
    int nk, base; /* its sequences order[k + i*nt], i < nk, on rows base + i of the [N][*] buffers */
    int m0, m1;  /* rows of T*N (input products, padding, dx) */
    int q0, q1;  /* rows of 4H (dW_x, dW_h, db) */
    int j0, j1;  /* cells (peephole gradients) */
    int p0, p1;  /* projection rows (dW_p) */
} lstm_part;

static lstm_part lstm_part_of(const qt_lstm *l, int t, int n)
{
    lstm_part pt;
    pt.k = omp_get_thread_num();
    pt.nt = omp_get_num_threads();
    pt.base = 0;
    for (int k = 0; k < pt.k; k++) pt.base += (n - k + pt.nt - 1) / pt.nt;
    pt.nk = (n - pt.k + pt.nt - 1) / pt.nt;
    lstm_split(t * n, pt.k, pt.nt, &pt.m0, &pt.m1);
    lstm_split(4 * l->hidden, pt.k, pt.nt, &pt.q0, &pt.q1);
    lstm_split(l->hidden, pt.k, pt.nt, &pt.j0, &pt.j1);
    lstm_split(l->proj, pt.k, pt.nt, &pt.p0, &pt.p1);
    return pt;
}

static inline int lstm_seq(const lstm_ws *w, const lstm_part *pt, int i) { return w->order[pt->k + i * pt->nt]; }

/* ---- forward ---- */

/* The recurrence over the thread's sequences (rows [0, nrows) are the running ones). */
static void lstm_forward_seqs(const qt_lstm *l, const qt_lstm_data *d, const lstm_ws *w, const lstm_part *pt)
{
    const int H = l->hidden, R = qt_lstm_out(l), H4 = 4 * H, N = d->n, P = l->proj;
    const size_t ys = (size_t)(l->out_stride > 0 ? l->out_stride : R);
    const bool lstmp = P > 0;
    if (pt->nk == 0) return;
    float *z = w->z + (size_t)pt->base * H4, *st = w->st + (size_t)pt->base * R,
          *cs = w->cs + (size_t)pt->base * H, *hb = w->hb + (size_t)pt->base * H;
    for (int i = 0; i < pt->nk; i++) {
        const int n = lstm_seq(w, pt, i);
        memcpy(st + (size_t)i * R, w->h0 + (size_t)n * R, sizeof(float) * (size_t)R);
        memcpy(cs + (size_t)i * H, w->c0 + (size_t)n * H, sizeof(float) * (size_t)H);
    }
    const float *wp = l->peephole ? l->w_peep : w->peep;
    const float *restrict wci = wp, *restrict wcf = wp + H, *restrict wco = wp + 2 * H;
    const int longest = d->lengths[lstm_seq(w, pt, 0)];
    int nrows = pt->nk;
    for (int s = 0; s < longest; s++) {
        while (d->lengths[lstm_seq(w, pt, nrows - 1)] <= s) nrows--;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nrows, H4, R, 1.0f, st, R, l->w_h, R, 0.0f, z, H4);
        for (int i = 0; i < nrows; i++) {
            const int n = lstm_seq(w, pt, i);
            const size_t row = (size_t)lstm_frame(l, d->lengths, n, s) * N + n;
            float *restrict g = w->g + row * H4;
            const float *restrict zr = z + (size_t)i * H4;
            float *restrict cst = cs + (size_t)i * H, *restrict crow = w->c + row * H;
            float *restrict hout = lstmp ? hb + (size_t)i * H : st + (size_t)i * R;
            float *restrict hsave = lstmp ? w->hs + row * H : d->y + row * ys;
#pragma omp simd
            for (int j = 0; j < H; j++) {
                const float cp = cst[j];
                const float ig = lstm_sigmoid(g[j] + zr[j] + wci[j] * cp);
                const float fg = lstm_sigmoid(g[H + j] + zr[H + j] + wcf[j] * cp);
                const float gg = lstm_tanh(g[2 * H + j] + zr[2 * H + j]);
                const float c = fg * cp + ig * gg;
                const float og = lstm_sigmoid(g[3 * H + j] + zr[3 * H + j] + wco[j] * c);
                const float h = og * lstm_tanh(c);
                g[j] = ig;
                g[H + j] = fg;
                g[2 * H + j] = gg;
                g[3 * H + j] = og;
                crow[j] = c;
                cst[j] = c;
                hout[j] = h;
                hsave[j] = h;
            }
        }
        if (lstmp) { /* r = h W_p^T: the new state and the output */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nrows, P, H, 1.0f, hb, H, l->w_proj, H, 0.0f, st, P);
            for (int i = 0; i < nrows; i++) {
                const int n = lstm_seq(w, pt, i);
                memcpy(d->y + ((size_t)lstm_frame(l, d->lengths, n, s) * N + n) * ys, st + (size_t)i * P,
                       sizeof(float) * (size_t)P);
            }
        }
    }
    for (int i = 0; i < pt->nk; i++) {
        const int n = lstm_seq(w, pt, i);
        if (d->h_final) memcpy(d->h_final + (size_t)n * R, st + (size_t)i * R, sizeof(float) * (size_t)R);
        if (d->c_final) memcpy(d->c_final + (size_t)n * H, cs + (size_t)i * H, sizeof(float) * (size_t)H);
    }
}

void qt_lstm_forward(const qt_lstm *l, const qt_lstm_data *d)
{
    const int T = d->t, N = d->n, F = l->in, H = l->hidden, R = qt_lstm_out(l), H4 = 4 * H;
    const size_t ys = (size_t)(l->out_stride > 0 ? l->out_stride : R);
    const lstm_ws w = lstm_carve(l, T, N, d->ws);
    lstm_prepare(d, w.order);
    lstm_copy_or_zero(w.h0, d->h0, (size_t)N * R);
    lstm_copy_or_zero(w.c0, d->c0, (size_t)N * H);
    if (!l->peephole) memset(w.peep, 0, sizeof(float) * 3 * (size_t)H);

#pragma omp parallel
    {
        const lstm_part pt = lstm_part_of(l, T, N);
        /* G = X W_x^T + b over the thread's rows; zero y (and Hs) on padding rows. */
        for (int m = pt.m0; m < pt.m1; m++) {
            memcpy(w.g + (size_t)m * H4, l->b, sizeof(float) * (size_t)H4);
            if (m / N < d->lengths[m % N]) continue;
            memset(d->y + (size_t)m * ys, 0, sizeof(float) * (size_t)R);
            if (l->proj > 0) memset(w.hs + (size_t)m * H, 0, sizeof(float) * (size_t)H);
        }
        if (pt.m1 > pt.m0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pt.m1 - pt.m0, H4, F, 1.0f,
                        d->x + (size_t)pt.m0 * F, F, l->w_x, F, 1.0f, w.g + (size_t)pt.m0 * H4, H4);
#pragma omp barrier
        lstm_forward_seqs(l, d, &w, &pt);
    }
}

/* ---- backward ---- */

/* Backward through time over the thread's sequences (rows [0, nrows) are those running). */
static void lstm_backward_seqs(const qt_lstm *l, const qt_lstm_data *d, const lstm_ws *w, const lstm_part *pt)
{
    const int H = l->hidden, R = qt_lstm_out(l), H4 = 4 * H, N = d->n, P = l->proj;
    const size_t ys = (size_t)(l->out_stride > 0 ? l->out_stride : R);
    if (pt->nk == 0) return;
    float *z = w->z + (size_t)pt->base * H4, *dr = w->st + (size_t)pt->base * R,
          *dcs = w->cs + (size_t)pt->base * H, *dh = w->hb + (size_t)pt->base * H,
          *drt = w->drt + (size_t)pt->base * (P > 0 ? P : 0);
    for (int i = 0; i < pt->nk; i++) {
        const int n = lstm_seq(w, pt, i);
        lstm_copy_or_zero(dr + (size_t)i * R, d->dh_final ? d->dh_final + (size_t)n * R : NULL, (size_t)R);
        lstm_copy_or_zero(dcs + (size_t)i * H, d->dc_final ? d->dc_final + (size_t)n * H : NULL, (size_t)H);
    }
    const float *wp = l->peephole ? l->w_peep : w->peep;
    const float *restrict wci = wp, *restrict wcf = wp + H, *restrict wco = wp + 2 * H;
    const int longest = d->lengths[lstm_seq(w, pt, 0)];
    int nrows = 0;
    for (int s = longest - 1; s >= 0; s--) {
        while (nrows < pt->nk && d->lengths[lstm_seq(w, pt, nrows)] > s) nrows++;
        /* dh = (dy + dr) W_p with LSTMP (dy + dr saved in dR for dW_p), else dy + dr */
        for (int i = 0; i < nrows; i++) {
            const int n = lstm_seq(w, pt, i);
            const size_t row = (size_t)lstm_frame(l, d->lengths, n, s) * N + n;
            const float *restrict dy = d->dy + row * ys, *restrict dri = dr + (size_t)i * R;
            float *restrict dst = P > 0 ? drt + (size_t)i * P : dh + (size_t)i * H;
            for (int k = 0; k < R; k++) dst[k] = dy[k] + dri[k];
            if (P > 0) memcpy(w->dr + row * P, dst, sizeof(float) * (size_t)P);
        }
        if (P > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nrows, H, P, 1.0f, drt, P, l->w_proj, H, 0.0f, dh, H);
        for (int i = 0; i < nrows; i++) {
            const int n = lstm_seq(w, pt, i);
            const int t = lstm_frame(l, d->lengths, n, s);
            const size_t row = (size_t)t * N + n;
            const size_t prev = (size_t)(l->reverse ? t + 1 : t - 1) * N + n; /* used when s > 0 */
            float *restrict g = w->g + row * H4, *restrict zr = z + (size_t)i * H4;
            const float *restrict crow = w->c + row * H, *restrict dhi = dh + (size_t)i * H;
            const float *restrict cp = s == 0 ? w->c0 + (size_t)n * H : w->c + prev * H;
            float *restrict dc = dcs + (size_t)i * H;
#pragma omp simd
            for (int j = 0; j < H; j++) {
                const float ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
                const float tc = lstm_tanh(crow[j]), dhj = dhi[j];
                const float dao = dhj * tc * og * (1.0f - og);
                const float dcj = dc[j] + dhj * og * (1.0f - tc * tc) + dao * wco[j];
                const float dai = dcj * gg * ig * (1.0f - ig);
                const float daf = dcj * cp[j] * fg * (1.0f - fg);
                const float dag = dcj * ig * (1.0f - gg * gg);
                dc[j] = dcj * fg + dai * wci[j] + daf * wcf[j];
                g[j] = zr[j] = dai;
                g[H + j] = zr[H + j] = daf;
                g[2 * H + j] = zr[2 * H + j] = dag;
                g[3 * H + j] = zr[3 * H + j] = dao;
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nrows, R, H4, 1.0f, z, H4, l->w_h, R, 0.0f, dr, R);
    }
    for (int i = 0; i < pt->nk; i++) {
        const int n = lstm_seq(w, pt, i);
        if (d->dh0) memcpy(d->dh0 + (size_t)n * R, dr + (size_t)i * R, sizeof(float) * (size_t)R);
        if (d->dc0) memcpy(d->dc0 + (size_t)n * H, dcs + (size_t)i * H, sizeof(float) * (size_t)H);
    }
}

/* Column sums over the valid frames, in double: db (the thread's rows of 4H) and the
 * peephole gradients (its cells): dw_ci = sum dz_i c_prev, dw_cf = sum dz_f c_prev,
 * dw_co = sum dz_o c. Padding rows of dZ are zero, so db sums all T*N rows. */
static void lstm_backward_sums(const qt_lstm *l, const qt_lstm_data *d, const lstm_ws *w, const lstm_part *pt)
{
    const int H = l->hidden, H4 = 4 * H, N = d->n, TN = d->t * N;
    for (int c0 = pt->q0; c0 < pt->q1; c0 += 64) {
        const int cn = QT_MIN(64, pt->q1 - c0);
        double acc[64] = {0};
        for (int m = 0; m < TN; m++) {
            const float *gr = w->g + (size_t)m * H4 + c0;
            for (int c = 0; c < cn; c++) acc[c] += gr[c];
        }
        for (int c = 0; c < cn; c++) l->db[c0 + c] = (float)acc[c];
    }
    if (!l->peephole) return;
    for (int c0 = pt->j0; c0 < pt->j1; c0 += 64) {
        const int cn = QT_MIN(64, pt->j1 - c0);
        double ai[64] = {0}, af[64] = {0}, ao[64] = {0};
        for (int n = 0; n < N; n++)
            for (int t = 0; t < d->lengths[n]; t++) {
                const bool first = l->reverse ? t == d->lengths[n] - 1 : t == 0;
                const size_t row = (size_t)t * N + n, prev = (size_t)(l->reverse ? t + 1 : t - 1) * N + n;
                const float *g = w->g + row * H4 + c0, *c = w->c + row * H + c0;
                const float *cp = (first ? w->c0 + (size_t)n * H : w->c + prev * H) + c0;
                for (int j = 0; j < cn; j++) {
                    ai[j] += (double)g[j] * cp[j];
                    af[j] += (double)g[H + j] * cp[j];
                    ao[j] += (double)g[3 * H + j] * c[j];
                }
            }
        for (int j = 0; j < cn; j++) {
            l->dw_peep[c0 + j] = (float)ai[j];
            l->dw_peep[H + c0 + j] = (float)af[j];
            l->dw_peep[2 * H + c0 + j] = (float)ao[j];
        }
    }
}

/* Whole-chunk weight gradients (the thread's rows of each) and dx (its rows of T*N). */
static void lstm_backward_weights(const qt_lstm *l, const qt_lstm_data *d, const lstm_ws *w, const lstm_part *pt)
{
    const int T = d->t, N = d->n, F = l->in, H = l->hidden, R = qt_lstm_out(l), H4 = 4 * H;
    const int TN = T * N, q0 = pt->q0, qc = pt->q1 - pt->q0;
    const size_t ys = (size_t)(l->out_stride > 0 ? l->out_stride : R);
    if (qc > 0) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qc, F, TN, 1.0f, w->g + q0, H4, d->x, F,
                    0.0f, l->dw_x + (size_t)q0 * F, F);
        /* dW_h = sum over frames of dz_t^T r_prev: y's previous-frame rows, then the first
         * frames' dz against h0 (gathered into z, the thread's columns only). */
        memset(l->dw_h + (size_t)q0 * R, 0, sizeof(float) * (size_t)qc * R);
        if (T > 1) {
            const float *a = w->g + (l->reverse ? 0 : (size_t)N * H4) + q0;
            const float *b = d->y + (l->reverse ? (size_t)N * ys : 0);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qc, R, (T - 1) * N, 1.0f, a, H4, b,
                        (int)ys, 1.0f, l->dw_h + (size_t)q0 * R, R);
        }
        for (int n = 0; n < N; n++) {
            float *zr = w->z + (size_t)n * H4 + q0;
            if (d->lengths[n] == 0) memset(zr, 0, sizeof(float) * (size_t)qc);
            else memcpy(zr, w->g + ((size_t)lstm_frame(l, d->lengths, n, 0) * N + n) * H4 + q0,
                        sizeof(float) * (size_t)qc);
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qc, R, N, 1.0f, w->z + q0, H4, w->h0, R,
                    1.0f, l->dw_h + (size_t)q0 * R, R);
    }
    if (l->proj > 0 && pt->p1 > pt->p0) /* dW_p = dR^T Hs */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, pt->p1 - pt->p0, H, TN, 1.0f, w->dr + pt->p0,
                    l->proj, w->hs, H, 0.0f, l->dw_proj + (size_t)pt->p0 * H, H);
    if (d->dx && pt->m1 > pt->m0) /* dx = dZ W_x (zero on padding rows, whose dz is zero) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, pt->m1 - pt->m0, F, H4, 1.0f,
                    w->g + (size_t)pt->m0 * H4, H4, l->w_x, F, 0.0f, d->dx + (size_t)pt->m0 * F, F);
    lstm_backward_sums(l, d, w, pt);
}

void qt_lstm_backward(const qt_lstm *l, const qt_lstm_data *d)
{
    const int T = d->t, N = d->n, H4 = 4 * l->hidden, P = l->proj;
    const lstm_ws w = lstm_carve(l, T, N, d->ws);
    lstm_prepare(d, w.order);

#pragma omp parallel
    {
        const lstm_part pt = lstm_part_of(l, T, N);
        /* Padding rows contribute nothing: zero their dz (and dr) rows. */
        for (int m = pt.m0; m < pt.m1; m++) {
            if (m / N < d->lengths[m % N]) continue;
            memset(w.g + (size_t)m * H4, 0, sizeof(float) * (size_t)H4);
            if (P > 0) memset(w.dr + (size_t)m * P, 0, sizeof(float) * (size_t)P);
        }
        /* (no barrier: the recurrence writes only valid rows) */
        lstm_backward_seqs(l, d, &w, &pt);
#pragma omp barrier
        lstm_backward_weights(l, d, &w, &pt);
    }
}
