/* lstm.h — one LSTM(P) layer on the CPU (fp32): forward over a padded, time-major batch of
 * variable-length sequences, backward through time, state carried across chunks
 * (truncated BPTT). Follows the layer contract of layers.h: a plain struct of settings
 * plus views into the param/grad arenas, caller-owned activations and workspace,
 * backward OVERWRITES every gradient it writes, functions never fail (shapes and lengths
 * are the model's invariants, checked with QT_ASSERT).
 *
 * Cell (the Graves / CNTK LSTMP formulation; sigma = logistic, * = elementwise):
 *   z_t = W_x x_t + W_h r_{t-1} + b                     four gate blocks [i f g o]
 *   i_t = sigma(z_i + w_ci * c_{t-1})    f_t = sigma(z_f + w_cf * c_{t-1})
 *   g_t = tanh(z_g)                      c_t = f_t * c_{t-1} + i_t * g_t
 *   o_t = sigma(z_o + w_co * c_t)        h_t = o_t * tanh(c_t)
 *   r_t = W_p h_t  (LSTMP, proj > 0)  or  r_t = h_t  (proj = 0);   output y_t = r_t
 * The peephole terms (w_c*) are absent when peephole = false. H = hidden, P = proj,
 * R = P ? P : H (the recurrent state and the output width), F = in.
 *
 * Parameter block (qt_lstm_bind; one contiguous slice of the arena, in this order):
 *   w_x    [4H][F]   rows i, f, g, o (PyTorch's / cuDNN's gate order)
 *   w_h    [4H][R]
 *   b      [4H]      ONE bias vector per gate (the CNTK recipe; PyTorch and cuDNN keep
 *                    two, b_ih + b_hh, whose sum is this b)
 *   w_peep [3][H]    w_ci, w_cf, w_co                    (only when peephole)
 *   w_proj [P][H]                                        (only when proj > 0)
 *   count = 4H(F + R + 1) + (peephole ? 3H : 0) + P*H
 * The AN4 stack (3 x LSTMP H=1024 P=512 with peepholes on 363 inputs, then 512 -> 132
 * linear) gives 4,115,456 + 2 x 4,725,760 + 67,716 = 13,634,692 parameters.
 *
 * Data (qt_lstm_data): x is [T][N][F] (time-major), y and dy are [T][N] rows of
 * `out_stride` floats of which this layer uses the first R (so the two directions of a
 * bidirectional layer can write the halves of one [T][N][2R] buffer). lengths[n] in
 * [0, T]: frames t >= lengths[n] are padding; their y rows are written as zeros, their dy
 * rows are never read, their dx rows are zero, and they contribute no gradient. The
 * state of sequence n after its last valid frame is returned in h_final/c_final (its
 * initial state when lengths[n] = 0), which the caller passes as h0/c0 of the next chunk
 * of the same utterance (truncated BPTT). A `reverse` layer runs each sequence from its
 * last valid frame (lengths[n]-1, where it starts from h0/c0) down to frame 0 (after
 * which h_final/c_final are taken): with the forward layer it forms a bidirectional pair.
 *
 * Threads: every call runs one OpenMP parallel region (qt_nn_set_threads, OpenBLAS
 * single-threaded): whole-chunk sgemms split by output rows, and the recurrence split by
 * SEQUENCES (each thread runs the time loop for its share of the batch, without barriers;
 * a batch of fewer sequences than threads leaves threads idle there). Results do not
 * depend on the thread count except through sgemm's own blocking.
 */
#ifndef QT_NN_LSTM_H
#define QT_NN_LSTM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int in, hidden, proj;   /* F, H, P (0 = no projection) */
    bool peephole, reverse;
    int out_stride;         /* floats between consecutive rows of y and dy; 0 = R (dense) */
    float *w_x, *dw_x;      /* [4H][F] */
    float *w_h, *dw_h;      /* [4H][R] */
    float *b, *db;          /* [4H] */
    float *w_peep, *dw_peep; /* [3][H], NULL without peepholes */
    float *w_proj, *dw_proj; /* [P][H], NULL without projection */
} qt_lstm;

/* One chunk of a batch of sequences, for forward and backward of the same layer.
 * Forward reads x, lengths, h0, c0 and writes y, h_final, c_final and the workspace;
 * backward reads x, y, lengths, dy, dh_final, dc_final and the workspace forward left,
 * and writes dx, dh0, dc0. NULL states mean zeros (inputs) or "not wanted" (outputs). */
typedef struct {
    int t, n;                 /* padded frames, sequences */
    const int32_t *lengths;   /* [N], each in [0, T] */
    const float *x;           /* [T][N][F] */
    float *y;                 /* [T][N] rows of out_stride, first R used */
    const float *h0, *c0;     /* [N][R], [N][H] */
    float *h_final, *c_final; /* [N][R], [N][H] */
    const float *dy;          /* like y */
    const float *dh_final, *dc_final; /* [N][R], [N][H] */
    float *dx;                /* [T][N][F] */
    float *dh0, *dc0;         /* [N][R], [N][H] */
    float *ws;                /* qt_lstm_workspace_floats(l, t, n) floats (64-byte aligned is fastest) */
} qt_lstm_data;

/* Number of parameters of one layer (the formula above). */
size_t qt_lstm_param_count(int in, int hidden, int proj, bool peephole);

/* Output width R of the layer (P, or H without projection). */
int qt_lstm_out(const qt_lstm *l);

/* Points l's parameter views into params[0 .. count) and its gradient views into
 * grads[0 .. count) in the order above (grads may be NULL for inference). in, hidden,
 * proj and peephole must be set. */
void qt_lstm_bind(qt_lstm *l, float *params, float *grads);

/* Floats of workspace forward and backward need for t frames of n sequences. The
 * workspace holds the saved activations (gates, cells, h0/c0 copies) from forward until
 * backward, which consumes it (run forward again before a second backward). */
size_t qt_lstm_workspace_floats(const qt_lstm *l, int t, int n);

/* Runs the layer over d->t frames of d->n sequences: writes y (padding rows zero) and,
 * unless NULL, h_final and c_final. h_final/c_final may alias h0/c0 (forward keeps its
 * own copies of the initial states for backward). */
void qt_lstm_forward(const qt_lstm *l, const qt_lstm_data *d);

/* Backward through time of the last forward on d (same x, y, lengths, workspace):
 * overwrites dw_x, dw_h, db, dw_peep, dw_proj; writes dx, dh0, dc0 unless NULL.
 * dy is read on valid frames only. dx must not alias x or y. */
void qt_lstm_backward(const qt_lstm *l, const qt_lstm_data *d);

#endif
