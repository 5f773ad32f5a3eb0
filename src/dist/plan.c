/* plan.c — cuts the grad arena into buckets, segments and chunks (exchange_internal.h).
 *
 * Deterministic: a pure function of the spans and the options, so every rank builds the
 * same plan (exchange.c verifies it with qt_world_check_same before any collective).
 *
 * Steps: (1) classify each span: coded (through the codec) or fp32 (count < min_size or
 * ndim <= 1; everything when the collective is a plain fp32 allreduce); (2) pick each
 * coded tensor's codec bucket d' (row alignment, see exchange.h) and cut tensors longer
 * than a bucket into pieces of whole codec buckets, so a large layer is pipelined as
 * several collectives; (3) fill buckets per class in arena order, closing one when it
 * reaches bucket_kb; (4) sort buckets by their end (the order backward makes them ready);
 * (5) rsag: split each coded bucket into `size` chunks of about equal length, cutting
 * only on codec-bucket boundaries.
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t offset, count;
    int codec, unit; /* codec-bucket length the cuts must respect (1: any) */
    bool coded;
    int bucket;      /* bucket in creation order, then in sorted order */
} piece;

/* realloc that treats out of memory like qt_malloc does. */
static void *grow(void *p, size_t bytes)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) qt_panic(__FILE__, __LINE__, "out of memory allocating %zu bytes", bytes);
    return q;
}

static bool method_has_buckets(qt_codec_method m)
{
    return m == QT_CODEC_QSGD || m == QT_CODEC_ECQ || m == QT_CODEC_ONEBIT ||
           m == QT_CODEC_TERNGRAD;
}

/* The codec bucket for a tensor whose rows have `row` elements: the largest length <= d
 * made of whole rows, or a whole row split into equal parts of at most d. Rows that have
 * no divisor near d keep flat buckets of d (then a row may straddle two). */
static int aligned_bucket(const qt_codec_params *p, size_t row)
{
    int d = p->bucket;
    if (row == 0 || d <= 0 || !method_has_buckets(p->method)) return d;
    if (row <= (size_t)d) return (int)(((size_t)d / row) * row);
    size_t min_parts = (row + (size_t)d - 1) / (size_t)d;
    for (size_t parts = min_parts; parts <= 2 * min_parts; parts++)
        if (row % parts == 0) return (int)(row / parts);
    return d;
}

static int codec_index(qt_exchange *ex, int bucket)
{
    for (int i = 0; i < ex->n_codecs; i++)
        if (ex->codecs[i].bucket == bucket) return i;
    qt_codec_params p = ex->opts.codec;
    p.bucket = bucket;
    if (bucket != ex->opts.codec.bucket && qt_codec_params_check(&p) != 0)
        return codec_index(ex, ex->opts.codec.bucket); /* the codec refuses d': keep d */
    ex->codecs = grow(ex->codecs, sizeof *ex->codecs * (size_t)(ex->n_codecs + 1));
    ex->codecs[ex->n_codecs] = p;
    return ex->n_codecs++;
}

static int check_spans(const qt_span *spans, int n_spans, size_t n_total)
{
    size_t prev_end = 0;
    for (int i = 0; i < n_spans; i++) {
        const qt_span *s = &spans[i];
        if (s->count == 0 || s->offset + s->count > n_total || s->offset + s->count < s->offset)
            return qt_fail("exchange: span %d (offset %zu, count %zu) is empty or outside the "
                           "arena of %zu elements", i, s->offset, s->count, n_total);
        if (s->offset < prev_end)
            return qt_fail("exchange: span %d (offset %zu) overlaps or precedes span %d: spans "
                           "must be disjoint and in arena order", i, s->offset, i - 1);
        prev_end = s->offset + s->count;
    }
    return 0;
}

/* Pieces in arena order: spans classified, large coded tensors cut into whole codec
 * buckets, large fp32 spans cut anywhere. */
static piece *make_pieces(qt_exchange *ex, const qt_span *spans, int n_spans, size_t target,
                          int *n_out)
{
    const qt_dist_opts *o = &ex->opts;
    bool all_fp32 = o->collective == QT_COLL_ALLREDUCE && !o->fp16_allreduce;
    size_t cap = 16, n = 0;
    piece *ps = qt_malloc(sizeof *ps * cap);
    for (int i = 0; i < n_spans; i++) {
        const qt_span *s = &spans[i];
        bool coded = !all_fp32 && s->ndim > 1 && s->count >= (size_t)QT_MAX(o->min_size, 0);
        int codec = 0, unit = 1;
        if (coded) {
            codec = codec_index(ex, aligned_bucket(&o->codec, s->row));
            if (method_has_buckets(o->codec.method)) unit = QT_MAX(ex->codecs[codec].bucket, 1);
        }
        size_t len = target >= (size_t)unit ? target / (size_t)unit * (size_t)unit : (size_t)unit;
        for (size_t off = 0; off < s->count; off += len) {
            if (n == cap) ps = grow(ps, sizeof *ps * (cap *= 2));
            ps[n++] = (piece){.offset = s->offset + off, .count = QT_MIN(len, s->count - off),
                              .codec = codec, .unit = unit, .coded = coded, .bucket = -1};
        }
    }
    *n_out = (int)n;
    return ps;
}

static int cmp_piece(const void *a, const void *b)
{
    const piece *x = a, *y = b;
    if (x->bucket != y->bucket) return x->bucket < y->bucket ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

typedef struct {
    size_t end;
    int id;
    bool coded;
} bucket_key;

static int cmp_key(const void *a, const void *b)
{
    const bucket_key *x = a, *y = b;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Snaps a bucket-local cut position to the nearest codec-bucket boundary of the piece it
 * falls in (bucket-local coordinates; starts[k] = local start of piece k). */
static size_t snap_cut(const piece *ps, const size_t *starts, int n, size_t pos, size_t total)
{
    if (pos >= total) return total;
    int k = 0;
    while (k + 1 < n && starts[k + 1] <= pos) k++;
    size_t u = (size_t)ps[k].unit, rel = pos - starts[k];
    size_t snapped = starts[k] + (rel + u / 2) / u * u;
    return QT_MIN(snapped, starts[k] + ps[k].count);
}

static void add_seg(qt_exchange *ex, size_t *cap, size_t offset, size_t count, int codec)
{
    if ((size_t)ex->n_segs == *cap) {
        *cap *= 2;
        ex->segs = grow(ex->segs, sizeof *ex->segs * *cap);
    }
    ex->segs[ex->n_segs++] = (qt_seg){offset, count, codec};
}

/* Segments and chunks of bucket b from its pieces ps[0..n). */
static void split_bucket(qt_exchange *ex, qt_bucket *b, const piece *ps, int n, size_t *seg_cap)
{
    int n_chunks = b->coded && ex->opts.collective == QT_COLL_RSAG ? ex->size : 1;
    size_t *starts = qt_malloc(sizeof *starts * (size_t)n);
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        starts[k] = total;
        total += ps[k].count;
    }
    b->first_seg = ex->n_segs;
    b->first_chunk = ex->n_chunks;
    b->n_chunks = n_chunks;
    ex->chunks = grow(ex->chunks, sizeof *ex->chunks * (size_t)(ex->n_chunks + n_chunks));
    size_t lo = 0;
    for (int j = 0; j < n_chunks; j++) {
        size_t hi = j == n_chunks - 1
                        ? total
                        : snap_cut(ps, starts, n, total * (size_t)(j + 1) / (size_t)n_chunks, total);
        hi = QT_MAX(hi, lo);
        qt_chunk *c = &ex->chunks[ex->n_chunks++];
        *c = (qt_chunk){.first_seg = ex->n_segs, .count = hi - lo};
        for (int k = 0; k < n; k++) {
            size_t a = QT_MAX(lo, starts[k]), e = QT_MIN(hi, starts[k] + ps[k].count);
            if (a < e) add_seg(ex, seg_cap, ps[k].offset + (a - starts[k]), e - a, ps[k].codec);
        }
        c->n_segs = ex->n_segs - c->first_seg;
        lo = hi;
    }
    b->n_segs = ex->n_segs - b->first_seg;
    b->count = total;
    b->contiguous = true;
    for (int k = 1; k < n; k++)
        if (ps[k].offset != ps[k - 1].offset + ps[k - 1].count) b->contiguous = false;
    free(starts);
}

static int alloc_buffers(qt_exchange *ex, qt_bucket *b)
{
    int N = ex->size;
    qt_chunk *ch = &ex->chunks[b->first_chunk];
    size_t fbuf_n = b->contiguous ? 0 : b->count;
    size_t sbuf = 0, rbuf = 0;
    if (b->coded) {
        for (int j = 0; j < b->n_chunks; j++) ch[j].max_frame = qt_frame_max(ex, &ch[j]);
        if (ex->opts.collective == QT_COLL_ALLREDUCE) { /* fp16 on the wire */
            sbuf = b->count * sizeof(uint16_t);
        } else if (ex->opts.collective == QT_COLL_ALLGATHER) {
            sbuf = ch[0].max_frame;
            rbuf = ch[0].max_frame * (size_t)N;
        } else {
            for (int j = 0; j < N; j++) sbuf += ch[j].max_frame;
            rbuf = QT_MAX(sbuf, ch[ex->rank].max_frame * (size_t)N);
            fbuf_n = QT_MAX(fbuf_n, ch[ex->rank].count);
            b->res2_offset = ex->n_res2;
            if (ex->has_residual) ex->n_res2 += ch[ex->rank].count;
        }
        if (rbuf / 8 >= INT_MAX || sbuf / 8 >= INT_MAX)
            return qt_fail("exchange: a bucket of %zu elements needs %zu-byte messages, more "
                           "than one MPI call can carry: lower dist.bucket_kb", b->count, rbuf);
    }
    if (b->count >= INT_MAX)
        return qt_fail("exchange: a bucket of %zu elements is too large for one MPI call: "
                       "lower dist.bucket_kb", b->count);
    b->sbuf = sbuf ? qt_aligned_alloc(sbuf) : NULL;
    b->rbuf = rbuf ? qt_aligned_alloc(rbuf) : NULL;
    b->fbuf = fbuf_n ? qt_aligned_alloc(fbuf_n * sizeof(float)) : NULL;
    int *ints = qt_calloc((size_t)N * 6, sizeof(int));
    b->scount = ints;
    b->sdispl = ints + N;
    b->rcount = ints + 2 * N;
    b->rdispl = ints + 3 * N;
    b->sizes_in = ints + 4 * N;
    b->sizes_out = ints + 5 * N;
    return 0;
}

int qt_plan_build(qt_exchange *ex, const qt_span *spans, int n_spans)
{
    if (check_spans(spans, n_spans, ex->n_total) < 0) return -1;
    size_t target = QT_MAX((size_t)ex->opts.bucket_kb * 1024 / sizeof(float), (size_t)1);
    int n_pieces = 0;
    piece *ps = make_pieces(ex, spans, n_spans, target, &n_pieces);

    /* Fill buckets per class in arena order. */
    int open[2] = {-1, -1}, n_b = 0;
    size_t fill[2] = {0, 0};
    for (int k = 0; k < n_pieces; k++) {
        int cls = ps[k].coded;
        if (open[cls] < 0) {
            open[cls] = n_b++;
            fill[cls] = 0;
        }
        ps[k].bucket = open[cls];
        fill[cls] += ps[k].count;
        if (fill[cls] >= target) open[cls] = -1;
    }
    /* Order buckets by their end (last piece wins: pieces come in arena order). */
    bucket_key *keys = qt_calloc((size_t)QT_MAX(n_b, 1), sizeof *keys);
    for (int i = 0; i < n_b; i++) keys[i].id = i;
    for (int k = 0; k < n_pieces; k++) {
        keys[ps[k].bucket].end = ps[k].offset + ps[k].count;
        keys[ps[k].bucket].coded = ps[k].coded;
    }
    qsort(keys, (size_t)n_b, sizeof *keys, cmp_key);
    if (n_b > QT_MAX_BUCKETS) { /* each bucket holds a communicator: keep them few */
        free(keys);
        free(ps);
        return qt_fail("[dist] bucket_kb = %d cuts the gradient into %d buckets, more than %d: "
                       "raise bucket_kb", ex->opts.bucket_kb, n_b, QT_MAX_BUCKETS);
    }
    int *rank_of = qt_malloc(sizeof *rank_of * (size_t)QT_MAX(n_b, 1));
    ex->buckets = qt_calloc((size_t)QT_MAX(n_b, 1), sizeof *ex->buckets);
    ex->n_buckets = n_b;
    for (int i = 0; i < n_b; i++) {
        ex->buckets[i].comm = MPI_COMM_NULL;
        rank_of[keys[i].id] = i;
        ex->buckets[i].end = keys[i].end;
        ex->buckets[i].coded = keys[i].coded;
    }
    for (int k = 0; k < n_pieces; k++) ps[k].bucket = rank_of[ps[k].bucket];
    free(rank_of);
    free(keys);
    qsort(ps, (size_t)n_pieces, sizeof *ps, cmp_piece);

    size_t seg_cap = 16;
    ex->segs = qt_malloc(sizeof *ex->segs * seg_cap);
    int k = 0, rc = 0;
    for (int i = 0; i < n_b; i++) {
        int k0 = k;
        while (k < n_pieces && ps[k].bucket == i) k++;
        split_bucket(ex, &ex->buckets[i], ps + k0, k - k0, &seg_cap);
        if (rc == 0) rc = alloc_buffers(ex, &ex->buckets[i]);
    }
    for (int s = 0; s < ex->n_segs; s++) ex->max_seg = QT_MAX(ex->max_seg, ex->segs[s].count);
    free(ps);
    return rc;
}

void qt_plan_free(qt_exchange *ex)
{
    for (int i = 0; i < ex->n_buckets; i++) {
        qt_bucket *b = &ex->buckets[i];
        qt_free_aligned(b->sbuf);
        qt_free_aligned(b->rbuf);
        qt_free_aligned(b->fbuf);
        free(b->scount);
    }
    free(ex->buckets);
    free(ex->segs);
    free(ex->chunks);
    free(ex->codecs);
    ex->buckets = NULL;
    ex->segs = NULL;
    ex->chunks = NULL;
    ex->codecs = NULL;
}
