/* linear_cuda.cu — fully connected layer through cuBLASLt, y[n][out] = x[n][in] . W^T + b.
 *
 * Row-major [r][c] data is the column-major c x r matrix, so with the column-major
 * products cuBLASLt computes (m x n result, op(A) m x k, op(B) k x n):
 *   forward  y^T  (out x n)  = W^T' . x^T      A = W  (in x out, ld in), op T; B = x  (in x n, ld in)
 *   dW^T      (in x out)     = x^T . dy        A = x  (in x n, ld in);   B = dy (out x n, ld out), op T
 *   dx^T      (in x n)       = W^T . dy^T      A = W  (in x out, ld in); B = dy (out x n, ld out)
 * Compute type by precision: fp32 CUBLAS_COMPUTE_32F (no TF32), tf32 _FAST_TF32, bf16
 * _FAST_16BF (inputs rounded to bf16 inside the product, fp32 accumulation and output).
 * One plan (descriptors + the heuristic's first algorithm) per shape and pointer
 * alignment, cached in the context; the workspace is the context's library arena.
 * Bias add and bias gradient are our kernels: db sums each column in double in row order,
 * as the CPU, so it does not depend on the algorithm cuBLASLt picks.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t m, n, k, ta, tb, lda, ldb, ldd, align_a, align_b, align_d;
} qt_mm_key;

struct qt_mm_plan {
    qt_mm_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
};

static void mm_plan_free(qt_mm_plan *p)
{
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    free(p);
}

void qt_lt_plans_destroy(qt_cuda_ctx *ctx)
{
    for (int i = 0; i < ctx->n_mm; i++) mm_plan_free(ctx->mm[i]);
    free(ctx->mm);
    ctx->mm = NULL;
    ctx->n_mm = ctx->cap_mm = 0;
}

static cublasComputeType_t compute_type(qt_cuda_precision p)
{
    return p == QT_CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
           : p == QT_CUDA_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                               : CUBLAS_COMPUTE_32F;
}

static int mm_build(qt_cuda_ctx *ctx, const qt_mm_key *k, qt_mm_plan **out)
{
    qt_mm_plan *p = (qt_mm_plan *)qt_calloc(1, sizeof *p);
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    const cublasOperation_t ta = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint64_t ws_max = ctx->opts.workspace_limit;
    const uint32_t al_a = (uint32_t)k->align_a, al_b = (uint32_t)k->align_b, al_d = (uint32_t)k->align_d;
    p->key = *k;
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescCreate(&p->desc, compute_type(ctx->prec), CUDA_R_32F), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_32F, k->ta ? k->k : k->m, k->ta ? k->m : k->k, k->lda),
                      fail);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_32F, k->tb ? k->n : k->k, k->tb ? k->k : k->n, k->ldb),
                      fail);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, k->m, k->n, k->ldd), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceCreate(&pref), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_max,
                                                           sizeof ws_max), fail);
    /* The heuristic assumes 256-byte aligned pointers unless told otherwise; arena views
     * are only float-aligned in general. */
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                           sizeof al_a), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                           sizeof al_b), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                           sizeof al_d), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                           sizeof al_d), fail);
    CUBLAS_CHECK_GOTO(cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res, &found),
                      fail);
    if (found < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
        qt_fail("cuda: matmul m%d n%d k%d (%s): cuBLASLt has no algorithm for it", k->m, k->n, k->k,
                qt_cuda_precision_name(ctx->prec));
        goto fail;
    }
    p->algo = res.algo;
    p->ws = res.workspaceSize;
    cublasLtMatmulPreferenceDestroy(pref);
    *out = p;
    return 0;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    mm_plan_free(p);
    return -1;
}

/* D (m x n, column-major, ld ldd) = op(A) . op(B), overwriting D. */
static int lt_matmul(qt_cuda_ctx *ctx, bool ta, bool tb, int m, int n, int k, const float *a, int lda,
                     const float *b, int ldb, float *d, int ldd)
{
    qt_mm_key key;
    memset(&key, 0, sizeof key);
    key.m = m, key.n = n, key.k = k, key.ta = ta, key.tb = tb, key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.align_a = qt_cuda_align_of(a, 256);
    key.align_b = qt_cuda_align_of(b, 256);
    key.align_d = qt_cuda_align_of(d, 256);
    qt_mm_plan *p = NULL;
    for (int i = 0; i < ctx->n_mm && !p; i++)
        if (memcmp(&ctx->mm[i]->key, &key, sizeof key) == 0) p = ctx->mm[i];
    if (!p) {
        bool capturing;
        if (qt_cuda_capturing(ctx, &capturing)) return -1;
        if (capturing)
            return qt_fail("cuda: matmul m%d n%d k%d: no plan for this shape during CUDA graph capture: run one "
                           "step without capture first", m, n, k);
        if (mm_build(ctx, &key, &p)) return -1;
        if (ctx->n_mm == ctx->cap_mm) {
            int cap = ctx->cap_mm ? 2 * ctx->cap_mm : 16;
            qt_mm_plan **grown = (qt_mm_plan **)qt_malloc((size_t)cap * sizeof *grown);
            if (ctx->n_mm) memcpy(grown, ctx->mm, (size_t)ctx->n_mm * sizeof *grown);
            free(ctx->mm);
            ctx->mm = grown;
            ctx->cap_mm = cap;
        }
        ctx->mm[ctx->n_mm++] = p;
    }
    void *ws = NULL;
    if (qt_cuda_workspace(ctx, p->ws, &ws)) return -1;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(ctx->lt, p->desc, &one, a, p->a, b, p->b, &zero, d, p->d, d, p->d, &p->algo, ws,
                                p->ws, ctx->stream));
    return 0;
}

/* y[i][o] += b[o]. */
__global__ void bias_rows(float *y, const float *b, uint32_t total, qt_fastdiv fd_out)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x)
        y[idx] += b[qt_fastdiv_mod(fd_out, idx, qt_fastdiv_div(fd_out, idx))];
}

/* db[o] = sum over rows of dy[i][o], in double, rows in order. */
__global__ void bias_grad_rows(const float *dy, float *db, int n, int out)
{
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < out; o += gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
        db[o] = (float)s;
    }
}

extern "C" int qt_cuda_linear_forward(qt_cuda_ctx *ctx, const qt_linear *l, const float *x, float *y, int n)
{
    QT_ASSERT(n > 0 && (size_t)n * l->out <= QT_CUDA_MAX_ELEMS);
    if (lt_matmul(ctx, true, false, l->out, n, l->in, l->w, l->in, x, l->in, y, l->out)) return -1;
    if (!l->b) return 0;
    const uint32_t total = (uint32_t)((size_t)n * l->out);
    bias_rows<<<qt_cuda_blocks(ctx, total, 256), 256, 0, ctx->stream>>>(y, l->b, total, qt_fastdiv_make(l->out));
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_linear_backward(qt_cuda_ctx *ctx, const qt_linear *l, const float *x, const float *dy,
                                       float *dx, int n)
{
    QT_ASSERT(n > 0);
    if (lt_matmul(ctx, false, true, l->in, l->out, n, x, l->in, dy, l->out, l->dw, l->in)) return -1;
    if (l->db) {
        bias_grad_rows<<<(unsigned)((l->out + 127) / 128), 128, 0, ctx->stream>>>(dy, l->db, n, l->out);
        QT_CUDA_LAUNCH_CHECK();
    }
    if (dx && lt_matmul(ctx, false, false, l->in, n, l->out, l->w, l->in, dy, l->out, dx, l->in)) return -1;
    return 0;
}
