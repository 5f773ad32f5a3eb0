/* exchange_internal.h — what the exchange engine's files share (not a public header).
 *
 * Plan (built once by plan.c, identical on every rank):
 *   segment: a run of one tensor's elements encoded by one codec call; it starts on a
 *            codec-bucket boundary of its tensor, so codec buckets never straddle tensors
 *            or chunks.
 *   chunk:   consecutive segments of a bucket; rsag splits a bucket into `size` chunks
 *            (chunk j is reduced by rank j), every other collective uses one chunk.
 *   bucket:  the unit of readiness and of one collective; ready when the watermark
 *            reaches `end` (its last element + 1). Buckets are sorted by `end`, which is
 *            also the order every rank starts them in.
 * Wire format of a chunk message (allgather, rsag): per segment an 8-byte header
 * {u32 payload bytes, u32 element count} then the codec's payload, padded to 8 bytes, so
 * MPI counts are in 8-byte units (ex->unit8) and a 2^31-unit limit is 16 GiB.
 *
 * Threads: everything in qt_bucket's "step state" and ex->st is touched by the
 * communication thread only while a step runs; the main thread reads it after
 * finish() has seen step_done under ex->mu.
 */
#ifndef QT_DIST_EXCHANGE_INTERNAL_H
#define QT_DIST_EXCHANGE_INTERNAL_H

#include "dist/exchange.h"

#include <pthread.h>
#include <stdatomic.h>

/* Each bucket owns a communicator (MPI_Comm_dup); Open MPI's context ids are plentiful
 * but not free, so a plan with more buckets is refused. */
#define QT_MAX_BUCKETS 4096
/* Communication-thread polling while MPI requests are pending (exchange.c idle_wait):
 * this many polls back to back (with sched_yield), then one poll per sleep. */
#define QT_POLL_SPINS 200
#define QT_POLL_SLEEP_US 50

typedef struct {
    size_t offset, count; /* arena elements */
    int codec;            /* index into ex->codecs */
} qt_seg;

typedef struct {
    int first_seg, n_segs;
    size_t count;     /* elements */
    size_t max_frame; /* bytes: largest possible message (headers + padded payloads) */
} qt_chunk;

typedef enum { QT_MODE_FP32 = 0, QT_MODE_FP16, QT_MODE_ALLGATHER, QT_MODE_RSAG } qt_mode;

typedef struct {
    /* plan */
    bool coded;           /* goes through the codec and the configured collective */
    bool contiguous;      /* its segments are adjacent in the arena: in-place allreduce */
    size_t end, count;    /* ready once watermark >= end; elements */
    int first_seg, n_segs;
    int first_chunk, n_chunks; /* n_chunks = size for rsag, else 1 */
    size_t res2_offset;   /* rsag: where this rank's chunk lives in ex->res2 */
    MPI_Comm comm;        /* private: buckets may complete (and post phases) in any order */
    /* buffers, allocated at create */
    uint8_t *sbuf, *rbuf; /* coded buckets: send and receive messages */
    float *fbuf;          /* fp32 pack buffer (non-contiguous), rsag owner's sum */
    int *scount, *sdispl, *rcount, *rdispl; /* `size` each, in 8-byte units */
    int *sizes_in, *sizes_out;              /* size exchange (variable-size codecs) */
    /* step state */
    qt_mode mode;
    int phase;            /* mode-specific */
    MPI_Request req;
    bool in_flight, req_done, done, nonfinite;
    double not_before;    /* debug delay: completion not seen before this time */
    size_t own_len;       /* bytes of this rank's (first) message */
} qt_bucket;

struct qt_exchange {
    qt_world *w;
    int rank, size;
    qt_dist_opts opts;
    size_t n_total;
    float *grads, *res;   /* caller's arenas */
    bool has_residual;    /* codec keeps error feedback */
    bool var_size;        /* encoded size depends on the data: exchange sizes first */
    qt_codec_params *codecs;
    int n_codecs;
    qt_seg *segs;
    int n_segs;
    qt_chunk *chunks;
    int n_chunks;
    qt_bucket *buckets;
    int n_buckets;
    size_t max_seg;       /* largest segment: size of the zero / scratch buffers */
    float *zeros, *scratch_res;
    float *res_backup;    /* residual slices as before this step's encode (skip: restore) */
    float *res2, *res2_backup;
    size_t n_res2;
    MPI_Datatype unit8;
    MPI_Op half_sum;
    MPI_Request *poll_reqs; /* qt_exchange_poll's scratch: in-flight requests, */
    int *poll_ids, *poll_done; /* their buckets, and Testsome's completed indices */
    /* thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_size_t watermark;
    atomic_bool finish_req;
    bool step_active, step_done, quit; /* under mu */
    uint32_t step;
    bool warmup;
    double t_begin, link_free_at;
    int local_bad;
    int skipped_total;
    int spin_polls, idle_polls; /* polling policy, see QT_POLL_SPINS */
    long poll_sleep_ns;
    qt_exchange_stats st;
};

/* plan.c */
int qt_plan_build(qt_exchange *ex, const qt_span *spans, int n_spans);
void qt_plan_free(qt_exchange *ex);

/* frame.c: messages of framed codec payloads. `packed`: the chunk's elements are read
 * from / written to base[0..chunk.count) in segment order, else base[seg.offset ...]. */
size_t qt_frame_max(const qt_exchange *ex, const qt_chunk *c);
int qt_frame_encode(qt_exchange *ex, const qt_chunk *c, const float *g, float *r, bool packed,
                    bool zero, uint32_t rank_key, uint8_t *out, size_t cap, size_t *len);
int qt_frame_decode_add(qt_exchange *ex, const qt_chunk *c, const uint8_t *in, size_t len,
                        float scale, float *base, bool packed);
bool qt_all_finite(const float *x, size_t n);
bool qt_chunk_finite(const qt_exchange *ex, const qt_chunk *c);
void qt_chunk_zero(const qt_exchange *ex, const qt_chunk *c);
void qt_chunk_backup(const qt_exchange *ex, const qt_chunk *c, const float *src, float *dst,
                     bool packed);
uint16_t qt_half_from_float(float f);
float qt_half_to_float(uint16_t h);

/* exchange.c: posting and progress shared by the collectives. */
void qt_bucket_posted(qt_exchange *ex, qt_bucket *b, bool data);
void qt_exchange_poll(qt_exchange *ex);

/* One file per collective. start: encode / pack and post the first phase. advance: the
 * posted phase completed; post the next one or finish (decode into the arena, done). */
int qt_allreduce_start(qt_exchange *ex, qt_bucket *b);
int qt_allreduce_advance(qt_exchange *ex, qt_bucket *b);
int qt_allreduce_op_create(qt_exchange *ex);
void qt_allreduce_op_free(qt_exchange *ex);
int qt_allgather_start(qt_exchange *ex, qt_bucket *b);
int qt_allgather_advance(qt_exchange *ex, qt_bucket *b);
int qt_rsag_start(qt_exchange *ex, qt_bucket *b);
int qt_rsag_advance(qt_exchange *ex, qt_bucket *b);

#endif
