/* exchange.h — the gradient exchange engine (DESIGN.md `exchange`, issue 4).
 *
 * The grad arena is laid out in backward order, so during backward the final gradients
 * are always a prefix [0, watermark). The engine cuts the arena into buckets, and as soon
 * as the watermark passes a bucket's last element its communication thread encodes the
 * bucket and posts its nonblocking collective, while backward goes on with the layers
 * below. finish() waits for the rest and leaves the average over ranks in the arena.
 *
 * One step, from the trainer (compute) thread:
 *     qt_exchange_begin_step(ex, step);
 *     backward ... after each layer: qt_exchange_ready(ex, watermark);
 *     int rc = qt_exchange_finish(ex, &stats);   // 1: skip this step (NaN/Inf somewhere)
 *     if (rc == 0) optimizer step
 * The grad arena belongs to the engine between begin_step and finish for the part at or
 * below the watermark: backward may write only above it.
 *
 * Policy (identical on every rank, a pure function of the spans and the options):
 * - a span with count < min_size or ndim <= 1 (biases, BatchNorm) is sent in fp32, in
 *   buckets of such spans only, through an fp32 MPI_Iallreduce;
 * - every other span goes through the configured codec and collective (the allreduce
 *   collective: fp32, or fp16 with fp16_allreduce / method fp16); during the first
 *   warmup_steps steps those buckets are sent through an fp32 allreduce too;
 * - buckets fill up to bucket_kb in arena order, one class at a time; a tensor larger
 *   than a bucket is cut into bucket-sized pieces of whole codec buckets, so its encode
 *   and transfer are pipelined;
 * - rsag cuts each bucket into N chunks of about equal length on codec-bucket
 *   boundaries; the residual of the owner's re-encode is the engine's own
 *   (qt_exchange_residual2);
 * - codec buckets (the codec's `bucket` elements sharing one scale) never straddle two
 *   tensors: each tensor is encoded by its own codec call. When the span says how long
 *   a row (receptive field: Cin*kh*kw of a conv filter, in_features of a linear) is, the
 *   codec bucket for that tensor is rounded so that no row is split across two codec
 *   buckets: d' = d rounded down to whole rows when row <= d, else row split into equal
 *   parts of at most d (QSGD §4: "reshape matrices ... so that no receptive field is
 *   split across two buckets").
 */
#ifndef QT_DIST_EXCHANGE_H
#define QT_DIST_EXCHANGE_H

#include "dist/world.h"
#include "quant/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One parameter tensor of the arena, in arena (= backward) order. */
typedef struct {
    size_t offset, count; /* in arena elements */
    int ndim;             /* 1 = bias / BatchNorm: always fp32 */
    size_t row;           /* elements per receptive field (0 = unknown: flat codec buckets) */
} qt_span;

typedef enum { QT_COLL_ALLREDUCE = 0, QT_COLL_ALLGATHER, QT_COLL_RSAG } qt_collective;

/* [dist] and [quant] settings the engine needs. */
typedef struct {
    int bucket_kb;            /* target bucket size in KiB of fp32 gradient, >= 1 */
    bool overlap;             /* false: nothing is encoded or posted before finish() */
    qt_collective collective; /* for the codec's buckets */
    qt_codec_params codec;    /* allreduce needs method none (or fp16_allreduce) */
    int min_size;             /* spans with fewer elements are sent in fp32 */
    int warmup_steps;         /* steps < warmup_steps send everything in fp32 */
    bool fp16_allreduce;      /* allreduce collective: fp16 on the wire (sum in fp16) */
    double debug_delay_ms;    /* test knob: each collective occupies a simulated link for
                                 this long (serialised across buckets), 0 = off */
    double timeout_s;         /* finish() waiting longer than this takes the abort path (a
                                 peer that is stuck rather than dead), 0 = wait forever */
} qt_dist_opts;

/* Per-step accounting, filled by finish(). Wire bytes are modelled per algorithm
 * (bandwidth-optimal ring/pairwise schedules), since Open MPI picks its own. */
typedef struct {
    uint64_t bytes_sent;      /* wire bytes this rank sent */
    uint64_t bytes_payload;   /* bytes this rank's encoder produced (fp32 buckets: 4/elem) */
    uint64_t bytes_fp32;      /* 4 x elements exchanged */
    double compression_ratio; /* bytes_fp32 / bytes_payload (1 for fp32) */
    double t_encode;          /* seconds the comm thread spent encoding (and packing) */
    double t_decode;          /* seconds spent decoding / unpacking / averaging */
    double t_comm_exposed;    /* seconds finish() waited: communication not hidden */
    double t_step_comm;       /* seconds from begin_step to the end of the exchange */
    int n_buckets;            /* buckets exchanged */
    int n_buckets_coded;      /* of which went through the codec */
    bool warmup;              /* this step sent everything in fp32 (warm-up) */
    bool skipped;             /* NaN/Inf on some rank: the step must be skipped */
    int n_nonfinite_ranks;    /* ranks that saw NaN/Inf this step */
} qt_exchange_stats;

typedef struct qt_exchange qt_exchange;

/* Collective over w. Plans the buckets (identical on every rank: verified with
 * qt_world_check_same), allocates the buffers and starts the communication thread.
 * spans: n_spans tensors in arena order, disjoint, within [0, n_total). grads: the
 * arena (n_total floats); residuals: the error-feedback arena with the same layout, or
 * NULL if the codec keeps none (required if it does). The engine keeps both pointers
 * and copies spans. Returns 0 or a negative error (one line printed). */
int qt_exchange_create(qt_world *w, const qt_dist_opts *o, const qt_span *spans, int n_spans,
                       float *grads, float *residuals, size_t n_total, qt_exchange **out);

/* Starts a step (keys the codecs' random rounding and decides warm-up). The previous
 * step must have finished. */
void qt_exchange_begin_step(qt_exchange *ex, uint32_t step);

/* Compute thread, during backward: gradients [0, watermark) are final. Cheap and
 * non-blocking (an atomic store and a condition signal); a smaller watermark than
 * before is ignored. */
void qt_exchange_ready(qt_exchange *ex, size_t watermark);

/* Marks the whole arena ready, waits for every bucket and fills *st (may be NULL).
 * Returns 0: grads hold the average over ranks; 1: the step must be skipped (a NaN/Inf
 * on some rank; every rank returns 1, residuals are as they were before the step and
 * grads are unspecified); < 0: error. Faults inside the exchange (MPI errors, corrupt
 * messages, waiting past opts.timeout_s) take the abort path instead, so no rank is left
 * waiting. */
int qt_exchange_finish(qt_exchange *ex, qt_exchange_stats *st);

/* Stops the thread and frees everything the engine owns. NULL is a no-op. Not collective,
 * but every rank must call it between steps. */
void qt_exchange_destroy(qt_exchange *ex);

/* The engine's own error-feedback state (rsag: the owner's second residual for the chunks
 * this rank re-encodes), for checkpoints: *n floats, NULL/0 if none. */
float *qt_exchange_residual2(qt_exchange *ex, size_t *n);

/* Steps skipped so far (NaN/Inf), for the end-of-run summary. */
int qt_exchange_skipped_steps(const qt_exchange *ex);

/* Default options: bucket 1024 KiB, overlap on, allreduce, method none, min_size 10000,
 * timeout 600 s. */
void qt_dist_opts_default(qt_dist_opts *o);

const char *qt_collective_name(qt_collective c);

#endif
