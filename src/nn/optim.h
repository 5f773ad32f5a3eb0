/* optim.h — the optimizer: SGD (momentum, Nesterov, weight decay) and Adam with PyTorch's
 * update rules, learning-rate schedules with linear warm-up, and global-norm gradient
 * clipping. Pure functions over the arenas: no allocation per step, no MPI, no layers.
 *
 * Invariants:
 * - params, grads and the optimizer state are contiguous arenas indexed alike: element i
 *   of the param arena has its gradient at grads[i] and its state at state[i] (SGD's
 *   momentum buffer) or state[i] and state[n_total + i] (Adam's first and second moments).
 * - Only the spans named by the param groups are updated; a group says whether weight
 *   decay applies (false for BatchNorm and bias parameters when no_decay_bn is set).
 * - Results do not depend on the thread count: every update is elementwise and the
 *   gradient norm is summed in fixed-size blocks combined in a fixed order.
 */
#ifndef QT_NN_OPTIM_H
#define QT_NN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { QT_OPT_SGD, QT_OPT_ADAM } qt_opt_kind;
typedef enum { QT_LR_CONSTANT, QT_LR_STEP, QT_LR_MULTISTEP, QT_LR_COSINE } qt_lr_kind;

#define QT_OPTIM_MAX_MILESTONES 16

/* The [optim] config section (the config module fills it; see qt_optim_opts_default). */
typedef struct {
    qt_opt_kind kind;
    float lr, momentum, weight_decay;
    bool nesterov;      /* sgd only; needs momentum > 0 (as PyTorch) */
    bool no_decay_bn;   /* read by whoever builds the param groups (the model) */
    float beta1, beta2, eps; /* adam */
    qt_lr_kind schedule;
    float gamma;        /* step and multistep: the factor applied at each drop */
    int step_epochs;    /* step: lr *= gamma every step_epochs epochs */
    int n_milestones;   /* multistep: lr *= gamma at each of these epochs (increasing) */
    int milestones[QT_OPTIM_MAX_MILESTONES];
    float warmup_epochs; /* linear warm-up over this many (fractional) epochs; 0 = none */
    float min_lr;        /* cosine floor (PyTorch's eta_min) */
    float clip_norm;     /* > 0: clip the global gradient l2 norm to this; 0 = off */
} qt_optim_opts;

/* A span of the param arena and whether weight decay applies to it. */
typedef struct {
    size_t offset, count;
    bool decay;
} qt_param_group;

/* Defaults (the CIFAR ResNet recipe of He et al.): SGD, lr 0.1, momentum 0.9, weight decay
 * 1e-4, no Nesterov, decay on every parameter, Adam betas (0.9, 0.999) and eps 1e-8,
 * constant schedule, gamma 0.1, step_epochs 30, no milestones, no warm-up, min_lr 0,
 * no clipping. */
void qt_optim_opts_default(qt_optim_opts *o);

/* Checks the ranges and the cross-field rules a per-key range check cannot see (Nesterov
 * needs momentum, milestones increase, min_lr <= lr, ...). On a violation prints one line
 * "<where>: [optim] key = value: what is wrong" and returns -1; 0 when valid. */
int qt_optim_opts_check(const qt_optim_opts *o, const char *where);

/* Learning rate for the 0-based optimizer step `step` of a run of `epochs` epochs with
 * `steps_per_epoch` steps each (both > 0). Schedules, with e = step / steps_per_epoch:
 * - constant: lr.
 * - step:      lr * gamma^floor(e / step_epochs)        (PyTorch StepLR stepped per epoch)
 * - multistep: lr * gamma^(number of milestones <= e)   (MultiStepLR stepped per epoch)
 * - cosine:    min_lr + (lr - min_lr) * (1 + cos(pi * step / T)) / 2 with
 *              T = epochs * steps_per_epoch, per step (smooth), min_lr from step T on
 *              (CosineAnnealingLR with T_max = T stepped every optimizer step).
 * Warm-up: with W = round(warmup_epochs * steps_per_epoch) > 0, steps 0..W-1 are
 * multiplied by (step + 1) / W (Goyal et al.), so the ramp reaches the schedule at W-1. */
float qt_lr_at(const qt_optim_opts *o, int64_t step, int64_t steps_per_epoch, int epochs);

/* Floats of optimizer state for n_params parameters: SGD with momentum n, SGD without
 * momentum 0, Adam 2n (first moments, then second moments). Allocate zeroed. */
size_t qt_optim_state_floats(const qt_optim_opts *o, size_t n_params);

/* One update of every group's span, with torch.optim semantics (fp32 arithmetic):
 *   SGD:  d = g + wd*p (wd = 0 where !decay); buf = momentum*buf + d;
 *         d = nesterov ? d + momentum*buf : buf; p -= lr*d.
 *         PyTorch sets buf = d on the first step; the zeroed state gives exactly that
 *         (momentum*0 + d == d), so no first-step flag is needed.
 *   Adam: g += wd*p; m += (1-beta1)*(g - m); v = beta2*v + (1-beta2)*g*g;
 *         p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps), t = step + 1 >= 1.
 * n_total is the length of the param arena (it places Adam's second moments); every group
 * lies inside it. state holds qt_optim_state_floats(o, n_total) floats. */
void qt_optim_step(const qt_optim_opts *o, float lr, int64_t t, const qt_param_group *groups,
                   int n_groups, float *params, const float *grads, float *state, size_t n_total);

/* Global l2 norm of grads[0..n) (summed in double). When max_norm > 0, multiplies grads by
 * c = max_norm / (norm + 1e-6) if c < 1, as torch.nn.utils.clip_grad_norm_. Returns
 * the norm before clipping (possibly inf or nan: the caller decides what that means). */
float qt_clip_grad_norm(float *grads, size_t n, float max_norm);

#endif
