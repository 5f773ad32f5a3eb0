/* allgather.c — QSGD's exchange (papers.md §1.4, Algorithm 1): every rank encodes its
 * whole bucket and the encoded messages go to all ranks; each rank decodes the N
 * messages in rank order and averages them, so all ranks end with the same bits.
 *
 * Phases: [0: MPI_Iallgather of the message sizes, only for variable-length codecs]
 * 1: MPI_Iallgatherv of the messages (8-byte units; rank r's lands at r * max_frame).
 * Wire bytes are counted as (N-1) x this rank's message (each peer needs it once).
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

static void post_messages(qt_exchange *ex, qt_bucket *b)
{
    const qt_chunk *c = &ex->chunks[b->first_chunk];
    for (int r = 0; r < ex->size; r++) b->rdispl[r] = (int)((size_t)r * c->max_frame / 8);
    MPI_CHECK(MPI_Iallgatherv(b->sbuf, (int)(b->own_len / 8), ex->unit8, b->rbuf, b->rcount,
                              b->rdispl, ex->unit8, b->comm, &b->req));
    b->phase = 1;
    qt_bucket_posted(ex, b, true);
}

int qt_allgather_start(qt_exchange *ex, qt_bucket *b)
{
    double t0 = qt_now();
    const qt_chunk *c = &ex->chunks[b->first_chunk];
    bool finite = qt_chunk_finite(ex, c);
    if (!finite) {
        b->nonfinite = true;
        ex->local_bad = 1;
    }
    if (ex->has_residual) qt_chunk_backup(ex, c, ex->res, ex->res_backup, false);
    size_t len = 0;
    if (qt_frame_encode(ex, c, ex->grads, ex->res, false, !finite, (uint32_t)ex->rank, b->sbuf,
                        c->max_frame, &len) < 0)
        return -1;
    qt_chunk_zero(ex, c); /* decode_add accumulates the average here */
    b->own_len = len;
    ex->st.bytes_payload += len;
    ex->st.bytes_fp32 += b->count * sizeof(float);
    ex->st.bytes_sent += (uint64_t)(ex->size - 1) * len;
    ex->st.t_encode += qt_now() - t0;
    if (ex->var_size) {
        b->sizes_out[0] = (int)(len / 8);
        MPI_CHECK(MPI_Iallgather(b->sizes_out, 1, MPI_INT, b->sizes_in, 1, MPI_INT, b->comm,
                                 &b->req));
        b->phase = 0;
        qt_bucket_posted(ex, b, false);
        return 0;
    }
    /* Same elements, same codec settings: every rank's message has this length. */
    for (int r = 0; r < ex->size; r++) b->rcount[r] = (int)(len / 8);
    post_messages(ex, b);
    return 0;
}

int qt_allgather_advance(qt_exchange *ex, qt_bucket *b)
{
    if (b->phase == 0) {
        for (int r = 0; r < ex->size; r++) b->rcount[r] = b->sizes_in[r];
        post_messages(ex, b);
        return 0;
    }
    double t0 = qt_now();
    const qt_chunk *c = &ex->chunks[b->first_chunk];
    float scale = 1.0f / (float)ex->size;
    for (int r = 0; r < ex->size; r++) {
        const uint8_t *msg = b->rbuf + (size_t)b->rdispl[r] * 8;
        if (qt_frame_decode_add(ex, c, msg, (size_t)b->rcount[r] * 8, scale, ex->grads, false) < 0)
            return qt_fail("exchange: bad message from rank %d (allgather)", r);
    }
    ex->st.t_decode += qt_now() - t0;
    b->done = true;
    return 0;
}
