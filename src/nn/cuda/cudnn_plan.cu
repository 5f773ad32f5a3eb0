/* cudnn_plan.cu — every cuDNN call of qtrain: convolution forward, data gradient and
 * filter gradient through the cuDNN 9 graph ("backend") API, with the engine chosen once
 * per shape by timing and cached.
 *
 * Why the backend API: cuDNN 9 (9.19 here) marks the whole legacy convolution API
 * deprecated (cudnnConvolutionForward, cudnnFindConvolution*AlgorithmEx, the filter and
 * convolution descriptors), as well as the legacy batch-norm, pooling and activation
 * calls; the graph API is what remains. Keeping all of it in this file means the next API
 * change touches one file. Deprecated attributes are avoided too: the handle is given to
 * plans through a device-properties descriptor (CUDNN_ATTR_DEVICEPROP_HANDLE) instead of
 * CUDNN_ATTR_OPERATIONGRAPH_HANDLE / CUDNN_ATTR_EXECUTION_PLAN_HANDLE.
 *
 * Choosing a plan (the graph-API equivalent of cudnnFindConvolution*AlgorithmEx):
 *   operation graph of one convolution -> engine configs from heuristics mode A (then the
 *   fallback list if none fits) -> drop the configs the precision forbids (below) -> build
 *   execution plans for up to opts.autotune_candidates of them, skipping those that do not
 *   finalize or need more workspace than opts.workspace_limit -> time each on the caller's
 *   buffers (1 warm-up, median of 3 runs, CUDA events) -> keep the fastest.
 * Engine filter by numerical notes (each precision promises a tolerance, see
 * tests/test_cuda_util.h: fp32 ~1e-5, tf32 ~2e-3, bf16 ~1e-2 relative l2):
 *   every precision: no REDUCED_PRECISION_REDUCTION (accumulation below fp32), no
 *     DOWN_CONVERT_INPUTS (fp16 operands: less range than bf16, fewer bits than fp32), no
 *     Winograd with 6x6 or 13x13 tiles (their transforms amplify rounding errors most),
 *     no runtime-compiled engines (NVRTC at first use: seconds of start-up, one more
 *     library);
 *   fp32: also no TENSOR_CORE (TF32 for fp32 data), FFT or Winograd of any tile: fp32 is
 *     the accuracy reference;
 *   opts.deterministic: no NONDETERMINISTIC (atomics in wgrad/dgrad).
 * Invariants: a key's plan never changes once cached; the cache only grows; the variant
 * pack (the pointers) of the last call is kept and rebuilt only when a pointer changes.
 */
#include "nn/cuda/cuda_internal.h"

#include <stdlib.h>
#include <string.h>

#define QT_CONV_KEEP 8         /* descriptors an entry keeps alive: 3 tensors, conv, op, graph, cfg, plan */
#define QT_CONV_TIMED_RUNS 3

struct qt_conv_plan {
    qt_conv_key key;
    cudnnBackendDescriptor_t keep[QT_CONV_KEEP];
    int n_keep;
    cudnnBackendDescriptor_t plan, pack;
    int64_t ws_bytes, engine;
    float ms;
    void *px, *pw, *py, *pws; /* pointers the pack was built for */
};

static void destroy_descs(cudnnBackendDescriptor_t *d, int n)
{
    for (int i = n - 1; i >= 0; i--)
        if (d[i]) cudnnBackendDestroyDescriptor(d[i]);
}

void qt_cudnn_plans_destroy(qt_cuda_ctx *ctx)
{
    for (int i = 0; i < ctx->n_conv; i++) {
        qt_conv_plan *p = ctx->conv[i];
        if (p->pack) cudnnBackendDestroyDescriptor(p->pack);
        destroy_descs(p->keep, p->n_keep);
        free(p);
    }
    free(ctx->conv);
    ctx->conv = NULL;
    ctx->n_conv = ctx->cap_conv = 0;
}

/* ---- building the operation graph ---- */

enum { UID_X = 1, UID_W = 2, UID_Y = 3 };

static int make_tensor(int64_t uid, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
                       int64_t align, cudnnBackendDescriptor_t *out)
{
    cudnnBackendDescriptor_t d = NULL;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &d));
    *out = d;
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    CUDNN_CHECK(cudnnBackendFinalize(d));
    return 0;
}

/* dims [a][b][h][w] with strides for "channels second" (NCHW/KCRS) or "channels last". */
static void dims_strides(int64_t a, int64_t b, int64_t h, int64_t w, bool last, int64_t dims[4],
                         int64_t strides[4])
{
    dims[0] = a, dims[1] = b, dims[2] = h, dims[3] = w;
    if (last) {
        strides[0] = h * w * b, strides[1] = 1, strides[2] = w * b, strides[3] = b;
    } else {
        strides[0] = b * h * w, strides[1] = h * w, strides[2] = w, strides[3] = 1;
    }
}

static int make_conv_desc(const qt_conv_key *k, cudnnBackendDescriptor_t *out)
{
    cudnnBackendDescriptor_t d = NULL;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT; /* fp32 accumulation in every precision */
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t spatial = 2, pad[2] = {k->pad, k->pad}, stride[2] = {k->stride, k->stride}, dil[2] = {1, 1};
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &d));
    *out = d;
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil));
    CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride));
    CUDNN_CHECK(cudnnBackendFinalize(d));
    return 0;
}

/* The attribute names of x, w, y and of alpha, beta, conv for each operation. */
typedef struct {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t x, w, y, alpha, beta, conv;
} op_attrs;

static op_attrs attrs_of(int op)
{
    op_attrs a;
    switch (op) {
    case QT_CONV_DGRAD:
        a.type = CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR;
        a.x = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX;
        a.w = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W;
        a.y = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY;
        a.alpha = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA;
        a.beta = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA;
        a.conv = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC;
        break;
    case QT_CONV_WGRAD:
        a.type = CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR;
        a.x = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X;
        a.w = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW;
        a.y = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY;
        a.alpha = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA;
        a.beta = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA;
        a.conv = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC;
        break;
    default:
        a.type = CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR;
        a.x = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X;
        a.w = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W;
        a.y = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y;
        a.alpha = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA;
        a.beta = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA;
        a.conv = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC;
        break;
    }
    return a;
}

/* Tensors, convolution, operation and graph of `k`, appended to e->keep. */
static int build_graph(const qt_conv_key *k, qt_conv_plan *e, cudnnBackendDescriptor_t *graph)
{
    const cudnnDataType_t dt = k->dtype == QT_CUDA_DT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    int64_t dims[4], strides[4];
    cudnnBackendDescriptor_t x, w, y, conv, op, g;
    dims_strides(k->n, k->c_in, k->h, k->w, k->nhwc, dims, strides);
    if (make_tensor(UID_X, dt, dims, strides, k->align_x, &e->keep[e->n_keep++])) return -1;
    x = e->keep[e->n_keep - 1];
    dims_strides(k->c_out, k->c_in, k->kh, k->kw, k->krsc, dims, strides);
    if (make_tensor(UID_W, dt, dims, strides, k->align_w, &e->keep[e->n_keep++])) return -1;
    w = e->keep[e->n_keep - 1];
    dims_strides(k->n, k->c_out, k->oh, k->ow, k->nhwc, dims, strides);
    if (make_tensor(UID_Y, dt, dims, strides, k->align_y, &e->keep[e->n_keep++])) return -1;
    y = e->keep[e->n_keep - 1];
    if (make_conv_desc(k, &e->keep[e->n_keep++])) return -1;
    conv = e->keep[e->n_keep - 1];

    const op_attrs a = attrs_of(k->op);
    const float alpha = 1.0f, beta = 0.0f;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(a.type, &e->keep[e->n_keep++]));
    op = e->keep[e->n_keep - 1];
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.x, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.w, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w));
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.alpha, CUDNN_TYPE_FLOAT, 1, &alpha));
    CUDNN_CHECK(cudnnBackendSetAttribute(op, a.beta, CUDNN_TYPE_FLOAT, 1, &beta));
    CUDNN_CHECK(cudnnBackendFinalize(op));

    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &e->keep[e->n_keep++]));
    g = e->keep[e->n_keep - 1];
    CUDNN_CHECK(cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
    CUDNN_CHECK(cudnnBackendFinalize(g));
    *graph = g;
    return 0;
}

/* ---- candidates ---- */

/* Engine configs the heuristic `mode` proposes for `graph`; *cfgs is malloc'd (caller
 * destroys each and frees the array). A mode that proposes nothing gives *n = 0. */
static int heuristic_configs(const qt_cuda_ctx *ctx, cudnnBackendDescriptor_t graph,
                             cudnnBackendHeurMode_t mode, cudnnBackendDescriptor_t **cfgs, int *n)
{
    cudnnBackendDescriptor_t heur = NULL;
    int64_t count = 0, got = 0;
    *cfgs = NULL;
    *n = 0;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph), fail);
    CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode),
                     fail);
    if (ctx->devprop)
        CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP,
                                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ctx->devprop), fail);
    CUDNN_CHECK_GOTO(cudnnBackendFinalize(heur), fail);
    CUDNN_CHECK_GOTO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              0, &count, NULL), fail);
    if (count > 0) {
        /* The library fills descriptors the caller created. */
        *cfgs = (cudnnBackendDescriptor_t *)qt_calloc((size_t)count, sizeof **cfgs);
        for (int64_t i = 0; i < count; i++)
            CUDNN_CHECK_GOTO(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &(*cfgs)[i]), fail_cfgs);
        CUDNN_CHECK_GOTO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                  count, &got, *cfgs), fail_cfgs);
        for (int64_t i = got; i < count; i++) cudnnBackendDestroyDescriptor((*cfgs)[i]);
        *n = (int)got;
    }
    cudnnBackendDestroyDescriptor(heur);
    return 0;
fail_cfgs:
    destroy_descs(*cfgs, (int)count);
    free(*cfgs);
    *cfgs = NULL;
fail:
    cudnnBackendDestroyDescriptor(heur);
    return -1;
}

static bool has_note(const cudnnBackendNumericalNote_t *notes, int64_t n, cudnnBackendNumericalNote_t want)
{
    for (int64_t i = 0; i < n; i++)
        if (notes[i] == want) return true;
    return false;
}

/* Why candidates were dropped, for the message when none is left. */
typedef struct {
    int configs, filtered, unbuildable, too_big, failed_run;
} plan_tally;

/* Whether the precision and options allow the engine behind `cfg`; *engine = its global
 * index (for reports). An engine whose numerical notes cannot be read is refused in fp32
 * and deterministic mode (neither promise could be kept) and allowed otherwise. */
static bool engine_allowed(const qt_cuda_ctx *ctx, cudnnBackendDescriptor_t cfg, int64_t *engine)
{
    cudnnBackendDescriptor_t eng = NULL;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t behavior[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t n_notes = 0, n_behavior = 0, got = 0;
    bool ok = false, known;
    *engine = -1;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS) return false;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng) !=
        CUDNN_STATUS_SUCCESS)
        goto done;
    (void)cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, engine);
    known = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n_notes, notes) == CUDNN_STATUS_SUCCESS;
    if (!known) n_notes = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n_behavior, behavior) != CUDNN_STATUS_SUCCESS)
        n_behavior = 0;
    if (!known && (ctx->prec == QT_CUDA_FP32 || ctx->opts.deterministic)) goto done;
    for (int64_t i = 0; i < n_behavior; i++)
        if (behavior[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) goto done;
    if (has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) ||
        has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) ||
        has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6) ||
        has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13))
        goto done;
    if (ctx->opts.deterministic && has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC)) goto done;
    if (ctx->prec == QT_CUDA_FP32 &&
        (has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_TENSOR_CORE) || has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_FFT) ||
         has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_WINOGRAD) ||
         has_note(notes, n_notes, CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4)))
        goto done;
    ok = true;
done:
    cudnnBackendDestroyDescriptor(eng);
    return ok;
}

/* An execution plan for `cfg`, or NULL (not an error) when the engine refuses the shape
 * (counted as unbuildable) or needs more workspace than allowed (too_big). */
static cudnnBackendDescriptor_t try_plan(const qt_cuda_ctx *ctx, cudnnBackendDescriptor_t cfg, int64_t *ws,
                                         plan_tally *t)
{
    cudnnBackendDescriptor_t plan = NULL;
    int64_t got = 0;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS) {
        t->unbuildable++;
        return NULL;
    }
    if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &cfg) != CUDNN_STATUS_SUCCESS ||
        (ctx->devprop && cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP,
                                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ctx->devprop) !=
                             CUDNN_STATUS_SUCCESS) ||
        cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, ws) !=
            CUDNN_STATUS_SUCCESS ||
        *ws < 0) {
        t->unbuildable++;
        cudnnBackendDestroyDescriptor(plan);
        return NULL;
    }
    if ((size_t)*ws > ctx->opts.workspace_limit) {
        t->too_big++;
        cudnnBackendDestroyDescriptor(plan);
        return NULL;
    }
    return plan;
}

static int make_pack(void *x, void *w, void *y, void *ws, cudnnBackendDescriptor_t *out)
{
    int64_t uids[3] = {UID_X, UID_W, UID_Y};
    void *ptrs[3] = {x, w, y};
    cudnnBackendDescriptor_t p = NULL;
    *out = NULL;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &p));
    CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(p, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids), fail);
    CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(p, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs),
                     fail);
    CUDNN_CHECK_GOTO(cudnnBackendSetAttribute(p, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws), fail);
    CUDNN_CHECK_GOTO(cudnnBackendFinalize(p), fail);
    *out = p;
    return 0;
fail:
    cudnnBackendDestroyDescriptor(p);
    return -1;
}

/* Milliseconds per run of `plan` (1 warm-up, median of QT_CONV_TIMED_RUNS), or a negative
 * value when the plan fails to run (it is then skipped, not reported). */
static float time_plan(qt_cuda_ctx *ctx, cudnnBackendDescriptor_t plan, void *x, void *w, void *y, void *ws)
{
    cudnnBackendDescriptor_t pack = NULL;
    float t[QT_CONV_TIMED_RUNS];
    if (make_pack(x, w, y, ws, &pack)) return -1.0f;
    float ms = -1.0f;
    if (cudnnBackendExecute(ctx->cudnn, plan, pack) != CUDNN_STATUS_SUCCESS) goto done;
    for (int r = 0; r < QT_CONV_TIMED_RUNS; r++) {
        if (cudaEventRecord(ctx->ev_start, ctx->stream) != cudaSuccess ||
            cudnnBackendExecute(ctx->cudnn, plan, pack) != CUDNN_STATUS_SUCCESS ||
            cudaEventRecord(ctx->ev_stop, ctx->stream) != cudaSuccess ||
            cudaEventSynchronize(ctx->ev_stop) != cudaSuccess ||
            cudaEventElapsedTime(&t[r], ctx->ev_start, ctx->ev_stop) != cudaSuccess)
            goto done;
    }
    for (int i = 1; i < QT_CONV_TIMED_RUNS; i++) /* insertion sort of 3 */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            float s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    ms = t[QT_CONV_TIMED_RUNS / 2];
done:
    cudnnBackendDestroyDescriptor(pack);
    /* A refused launch leaves a (non-sticky) error in the runtime; clear it so the next
     * CUDA_CHECK does not report this candidate's problem as its own. */
    if (ms < 0.0f) (void)cudaGetLastError();
    return ms;
}

static const char *op_name(int op) { return op == QT_CONV_FWD ? "fwd" : op == QT_CONV_DGRAD ? "dgrad" : "wgrad"; }

/* Builds, times and returns the best plan of `cfgs` (NULL if none); the chosen config is
 * removed from cfgs (set to NULL) so the caller keeps it alive with the plan. */
static int choose(qt_cuda_ctx *ctx, qt_conv_plan *e, cudnnBackendDescriptor_t *cfgs, int n_cfgs, void *x,
                  void *w, void *y, int *chosen, plan_tally *t)
{
    const int limit = ctx->opts.autotune_candidates;
    int tried = 0;
    *chosen = -1;
    t->configs += n_cfgs;
    for (int i = 0; i < n_cfgs && tried < limit; i++) {
        int64_t engine, ws_bytes = 0;
        if (!engine_allowed(ctx, cfgs[i], &engine)) {
            t->filtered++;
            continue;
        }
        cudnnBackendDescriptor_t plan = try_plan(ctx, cfgs[i], &ws_bytes, t);
        if (!plan) continue;
        tried++;
        ctx->conv_candidates++;
        float ms = 0.0f;
        if (limit > 1) {
            void *ws = NULL;
            if (qt_cuda_workspace(ctx, (size_t)ws_bytes, &ws)) {
                cudnnBackendDestroyDescriptor(plan);
                return -1;
            }
            ms = time_plan(ctx, plan, x, w, y, ws);
            if (ms < 0.0f) {
                t->failed_run++;
                cudnnBackendDestroyDescriptor(plan);
                continue;
            }
        }
        if (*chosen < 0 || ms < e->ms) {
            if (e->plan) cudnnBackendDestroyDescriptor(e->plan);
            e->plan = plan;
            e->ms = ms;
            e->ws_bytes = ws_bytes;
            e->engine = engine;
            *chosen = i;
        } else {
            cudnnBackendDestroyDescriptor(plan);
        }
    }
    return 0;
}

static qt_conv_plan *build_entry(qt_cuda_ctx *ctx, const qt_conv_key *k, void *x, void *w, void *y)
{
    qt_conv_plan *e = (qt_conv_plan *)qt_calloc(1, sizeof *e);
    e->key = *k;
    cudnnBackendDescriptor_t graph = NULL;
    plan_tally t = {0, 0, 0, 0, 0};
    if (build_graph(k, e, &graph)) goto fail;
    {
        const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
        for (int m = 0; m < 2 && !e->plan; m++) {
            cudnnBackendDescriptor_t *cfgs = NULL;
            int n_cfgs = 0, chosen = -1;
            if (heuristic_configs(ctx, graph, modes[m], &cfgs, &n_cfgs)) goto fail;
            int rc = choose(ctx, e, cfgs, n_cfgs, x, w, y, &chosen, &t);
            if (chosen >= 0) {
                e->keep[e->n_keep++] = cfgs[chosen];
                cfgs[chosen] = NULL;
            }
            destroy_descs(cfgs, n_cfgs);
            free(cfgs);
            if (rc) goto fail;
        }
    }
    if (!e->plan) {
        qt_fail("cuda: conv %s n%d c%d->%d %dx%d k%dx%d s%d p%d (%s, %s): no usable cuDNN engine under precision "
                "%s%s: %d configs proposed, %d refused by their numerical notes, %d did not build, %d need more "
                "than %zu bytes of workspace, %d failed to run", op_name(k->op), k->n, k->c_in, k->c_out, k->h, k->w,
                k->kh, k->kw, k->stride, k->pad, k->dtype == QT_CUDA_DT_BF16 ? "bf16" : "fp32",
                k->nhwc ? "NHWC" : "NCHW", qt_cuda_precision_name(ctx->prec),
                ctx->opts.deterministic ? " (deterministic)" : "", t.configs, t.filtered, t.unbuildable, t.too_big,
                ctx->opts.workspace_limit, t.failed_run);
        goto fail;
    }
    e->keep[e->n_keep++] = e->plan;
    if (ctx->opts.verbose)
        qt_info("cuda: conv %s n%d c%d->%d %dx%d k%d s%d p%d %s: engine %lld, %.3f ms, workspace %lld bytes",
                op_name(k->op), k->n, k->c_in, k->c_out, k->h, k->w, k->kh, k->stride, k->pad,
                k->nhwc ? "NHWC" : "NCHW", (long long)e->engine, (double)e->ms, (long long)e->ws_bytes);
    return e;
fail:
    if (e->plan && (e->n_keep == 0 || e->keep[e->n_keep - 1] != e->plan)) cudnnBackendDestroyDescriptor(e->plan);
    destroy_descs(e->keep, e->n_keep);
    free(e);
    return NULL;
}

static qt_conv_plan *lookup(qt_cuda_ctx *ctx, const qt_conv_key *k)
{
    /* Linear search: a ResNet-152 has ~150 distinct (op, shape) keys, compared in well
     * under a microsecond each. */
    for (int i = 0; i < ctx->n_conv; i++)
        if (memcmp(&ctx->conv[i]->key, k, sizeof *k) == 0) return ctx->conv[i];
    return NULL;
}

int qt_cudnn_conv(qt_cuda_ctx *ctx, const qt_conv_key *key, void *x, void *w, void *y)
{
    qt_conv_plan *e = lookup(ctx, key);
    if (!e) {
        bool capturing;
        if (qt_cuda_capturing(ctx, &capturing)) return -1;
        if (capturing)
            return qt_fail("cuda: conv %s n%d c%d->%d %dx%d: no plan for this shape during CUDA graph capture: "
                           "run one step without capture first", op_name(key->op), key->n, key->c_in, key->c_out,
                           key->h, key->w);
        e = build_entry(ctx, key, x, w, y);
        if (!e) return -1;
        if (ctx->n_conv == ctx->cap_conv) {
            int cap = ctx->cap_conv ? 2 * ctx->cap_conv : 32;
            qt_conv_plan **grown = (qt_conv_plan **)qt_malloc((size_t)cap * sizeof *grown);
            if (ctx->n_conv) memcpy(grown, ctx->conv, (size_t)ctx->n_conv * sizeof *grown);
            free(ctx->conv);
            ctx->conv = grown;
            ctx->cap_conv = cap;
        }
        ctx->conv[ctx->n_conv++] = e;
    }
    void *ws = NULL;
    if (qt_cuda_workspace(ctx, (size_t)e->ws_bytes, &ws)) return -1;
    if (!e->pack || e->px != x || e->pw != w || e->py != y || e->pws != ws) {
        if (e->pack) cudnnBackendDestroyDescriptor(e->pack);
        e->pack = NULL;
        if (make_pack(x, w, y, ws, &e->pack)) return -1;
        e->px = x, e->pw = w, e->py = y, e->pws = ws;
    }
    CUDNN_CHECK(cudnnBackendExecute(ctx->cudnn, e->plan, e->pack));
    return 0;
}
