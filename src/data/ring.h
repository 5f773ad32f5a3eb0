/* ring.h — the prefetch ring shared by the image loader and the sequence loader (private
 * to src/data).
 *
 * Work is numbered by a sequence s = 0, 1, 2, ... (the loaders map s to (epoch, step)).
 * Payload s lives in slot s % n_slots. Worker threads claim the lowest unclaimed s whose
 * slot is free and that is fewer than n_slots ahead of the consumer, call fill(s) without
 * holding the lock, and mark it ready; the consumer takes payloads strictly in order.
 * fill must make payload s a pure function of s, so worker count and timing never change
 * what the consumer sees.
 *
 * Slot life cycle: FREE -> FILLING (a worker) -> READY -> HELD (the consumer) -> FREE
 * (qt_ring_release). Invariant: every s in [consume_seq, claim_seq) is FILLING or READY.
 */
#ifndef QT_DATA_RING_H
#define QT_DATA_RING_H

#include <stdint.h>

#include "data/dataset_impl.h"

/* Fills payload for sequence number seq; returns the number of items it decoded (>= 0)
 * or negative with a one-line reason in err (printed by qt_ring_next when the consumer
 * reaches that payload, so messages come in order and only for batches used). Called
 * concurrently from workers, each with its own scratch; a payload is touched by one
 * worker at a time. */
typedef int64_t (*qt_ring_fill_fn)(void *ctx, void *payload, int64_t seq, qt_data_scratch *scratch,
                                   char *err, size_t err_len);

typedef struct qt_ring qt_ring;

/* Starts n_workers threads over payloads[0..n_slots-1] (owned by the caller). Workers
 * start claiming on the first qt_ring_seek or qt_ring_next. Returns 0 or negative. */
int qt_ring_create(int n_slots, int n_workers, qt_ring_fill_fn fill, void *ctx, void **payloads,
                   qt_ring **out);
/* Next payload handed out will be `seq`. All payloads must have been released. */
void qt_ring_seek(qt_ring *r, int64_t seq);
/* Waits for the next payload in order; returns its fill status (negative = failed, and
 * the reason printed as one error line). */
int qt_ring_next(qt_ring *r, void **payload);
void qt_ring_release(qt_ring *r, void *payload);
/* What both loaders' seek and next do over an epoch of `steps` batches: seek checks
 * (epoch, step) and positions the ring at epoch * steps + step; next refuses a rank
 * without batches. `who` names the loader in the one-line error. */
int qt_ring_seek_step(qt_ring *r, int64_t steps, int64_t epoch, int64_t step, const char *who);
int qt_ring_next_step(qt_ring *r, int64_t steps, int rank, const char *who, void **payload);
double qt_ring_wait_seconds(const qt_ring *r);
double qt_ring_items_per_second(const qt_ring *r);
double qt_ring_capacity_items_per_second(const qt_ring *r);
void qt_ring_destroy(qt_ring *r);

/* Fisher-Yates permutation of 0..n-1 for `epoch`, draw i from Philox counter
 * {i, epoch, 0} (data.h's sub-stream 0). Pure function of (key, epoch, n). */
void qt_data_permutation(qt_philox_key key, int64_t epoch, int64_t n, int64_t *p);
/* The same from Philox sub-stream `stream` ({i, epoch, stream}); augmentation owns the
 * small stream numbers 1.., so other orders use streams from 0xFFFFFF00 up. */
void qt_data_permutation_stream(qt_philox_key key, int64_t epoch, uint32_t stream, int64_t n,
                                int64_t *p);

#endif
