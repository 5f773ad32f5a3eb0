/* rsag.c — reduce-scatter of encoded chunks, re-encoding by the owner, all-gather
 * (CNTK's 1-bit SGD aggregator and CGX's SRA, papers.md §1.4 and §4.3).
 *
 * The bucket is split into N chunks on codec-bucket boundaries (plan.c). Each rank
 * encodes the whole bucket with its error-feedback residual, chunk by chunk, and sends
 * chunk j to rank j (MPI_Ialltoallv). Rank j decodes the N versions of its chunk into
 * their average, re-encodes that average with a second residual owned by the engine
 * (CNTK keeps one per stripe) and sends it to every rank (MPI_Iallgatherv). Every rank,
 * the owner included, decodes the re-encoded chunks, so all ranks hold the same bits.
 * Traffic per rank: (N-1)/N of the encoded bucket in each phase, 2(N-1)/N in all.
 * The re-encode keys its random rounding with rank id N + rank, a stream the first
 * encode never uses.
 *
 * Phases: [0: sizes, MPI_Ialltoall] 1: chunks, MPI_Ialltoallv; then the owner's work;
 * [2: sizes, MPI_Iallgather] 3: re-encoded chunks, MPI_Iallgatherv. The size phases run
 * only for variable-length codecs; otherwise every message of chunk j has the length
 * this rank's own encoding of chunk j has.
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

#include <string.h>

static void post_chunks(qt_exchange *ex, qt_bucket *b)
{
    const qt_chunk *own = &ex->chunks[b->first_chunk + ex->rank];
    for (int r = 0; r < ex->size; r++) b->rdispl[r] = (int)((size_t)r * own->max_frame / 8);
    MPI_CHECK(MPI_Ialltoallv(b->sbuf, b->scount, b->sdispl, ex->unit8, b->rbuf, b->rcount,
                             b->rdispl, ex->unit8, b->comm, &b->req));
    b->phase = 1;
    qt_bucket_posted(ex, b, true);
}

static void post_gather(qt_exchange *ex, qt_bucket *b)
{
    size_t at = 0;
    for (int j = 0; j < ex->size; j++) {
        b->rdispl[j] = (int)(at / 8);
        at += ex->chunks[b->first_chunk + j].max_frame;
    }
    MPI_CHECK(MPI_Iallgatherv(b->sbuf, (int)(b->own_len / 8), ex->unit8, b->rbuf, b->rcount,
                              b->rdispl, ex->unit8, b->comm, &b->req));
    b->phase = 3;
    qt_bucket_posted(ex, b, true);
}

int qt_rsag_start(qt_exchange *ex, qt_bucket *b)
{
    double t0 = qt_now();
    const qt_chunk *ch = &ex->chunks[b->first_chunk];
    qt_chunk whole = {b->first_seg, b->n_segs, b->count, 0};
    bool finite = qt_chunk_finite(ex, &whole);
    if (!finite) {
        b->nonfinite = true;
        ex->local_bad = 1;
    }
    if (ex->has_residual) qt_chunk_backup(ex, &whole, ex->res, ex->res_backup, false);
    size_t at = 0, total = 0;
    for (int j = 0; j < ex->size; j++) {
        size_t len = 0;
        if (qt_frame_encode(ex, &ch[j], ex->grads, ex->res, false, !finite, (uint32_t)ex->rank,
                            b->sbuf + at, ch[j].max_frame, &len) < 0)
            return -1;
        b->scount[j] = (int)(len / 8);
        b->sdispl[j] = (int)(at / 8);
        at += ch[j].max_frame;
        total += len;
        if (j != ex->rank) ex->st.bytes_sent += len;
    }
    qt_chunk_zero(ex, &whole);
    ex->st.bytes_payload += total;
    ex->st.bytes_fp32 += b->count * sizeof(float);
    ex->st.t_encode += qt_now() - t0;
    if (ex->var_size) {
        MPI_CHECK(MPI_Ialltoall(b->scount, 1, MPI_INT, b->sizes_in, 1, MPI_INT, b->comm, &b->req));
        b->phase = 0;
        qt_bucket_posted(ex, b, false);
        return 0;
    }
    for (int r = 0; r < ex->size; r++) b->rcount[r] = b->scount[ex->rank];
    post_chunks(ex, b);
    return 0;
}

/* Phase 1 done: average the N versions of this rank's chunk, re-encode it. */
static int reduce_own_chunk(qt_exchange *ex, qt_bucket *b)
{
    double t0 = qt_now();
    const qt_chunk *own = &ex->chunks[b->first_chunk + ex->rank];
    float *sum = b->fbuf;
    if (own->count) memset(sum, 0, own->count * sizeof(float));
    float scale = 1.0f / (float)ex->size;
    for (int r = 0; r < ex->size; r++) {
        const uint8_t *msg = b->rbuf + (size_t)b->rdispl[r] * 8;
        if (qt_frame_decode_add(ex, own, msg, (size_t)b->rcount[r] * 8, scale, sum, true) < 0)
            return qt_fail("exchange: bad chunk from rank %d (rsag reduce-scatter)", r);
    }
    double t1 = qt_now();
    ex->st.t_decode += t1 - t0;
    bool finite = own->count == 0 || qt_all_finite(sum, own->count);
    if (!finite) { /* an overflowing sum: treated like a local NaN */
        b->nonfinite = true;
        ex->local_bad = 1;
    }
    float *r2 = ex->has_residual ? ex->res2 + b->res2_offset : NULL;
    if (r2 && own->count)
        memcpy(ex->res2_backup + b->res2_offset, r2, own->count * sizeof(float));
    size_t len = 0;
    if (qt_frame_encode(ex, own, sum, r2, true, !finite, (uint32_t)(ex->size + ex->rank),
                        b->sbuf, own->max_frame, &len) < 0)
        return -1;
    b->own_len = len;
    ex->st.bytes_sent += (uint64_t)(ex->size - 1) * len;
    ex->st.t_encode += qt_now() - t1;
    return 0;
}

int qt_rsag_advance(qt_exchange *ex, qt_bucket *b)
{
    switch (b->phase) {
    case 0:
        for (int r = 0; r < ex->size; r++) b->rcount[r] = b->sizes_in[r];
        post_chunks(ex, b);
        return 0;
    case 1:
        if (reduce_own_chunk(ex, b) < 0) return -1;
        if (ex->var_size) {
            b->sizes_out[0] = (int)(b->own_len / 8);
            MPI_CHECK(MPI_Iallgather(b->sizes_out, 1, MPI_INT, b->sizes_in, 1, MPI_INT, b->comm,
                                     &b->req));
            b->phase = 2;
            qt_bucket_posted(ex, b, false);
            return 0;
        }
        /* Re-encoding chunk j has the length of this rank's phase-1 encoding of it. */
        for (int j = 0; j < ex->size; j++) b->rcount[j] = b->scount[j];
        post_gather(ex, b);
        return 0;
    case 2:
        for (int j = 0; j < ex->size; j++) b->rcount[j] = b->sizes_in[j];
        post_gather(ex, b);
        return 0;
    default: break;
    }
    double t0 = qt_now();
    for (int j = 0; j < ex->size; j++) {
        const uint8_t *msg = b->rbuf + (size_t)b->rdispl[j] * 8;
        if (qt_frame_decode_add(ex, &ex->chunks[b->first_chunk + j], msg,
                                (size_t)b->rcount[j] * 8, 1.0f, ex->grads, false) < 0)
            return qt_fail("exchange: bad chunk from rank %d (rsag all-gather)", j);
    }
    ex->st.t_decode += qt_now() - t0;
    b->done = true;
    return 0;
}
