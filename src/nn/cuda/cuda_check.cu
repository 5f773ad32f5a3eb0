/* cuda_check.cu — the reporting behind CUDA_CHECK / CUDNN_CHECK / CUBLAS_CHECK
 * (see cuda_check.h). */
#include "nn/cuda/cuda_check.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/qt.h"
}

static bool sync_debug_from_env(void)
{
    const char *v = getenv("QT_SYNC_DEBUG");
    return v && strcmp(v, "0") != 0 && v[0] != '\0';
}

extern "C" bool qt_cuda_sync_debug(void)
{
    /* A const initialised once (thread-safe in C++): configuration, not mutable state. */
    static const bool on = sync_debug_from_env();
    return on;
}

static int report(qt_cuda_lib lib, int status, const char *call, const char *file, int line)
{
    switch (lib) {
    case QT_LIB_CUDA: {
        cudaError_t e = (cudaError_t)status;
        return qt_fail("%s:%d: %s: CUDA %s (%s)", file, line, call, cudaGetErrorName(e),
                       cudaGetErrorString(e));
    }
    case QT_LIB_CUDNN: {
        char detail[512];
        detail[0] = '\0';
        cudnnGetLastErrorString(detail, sizeof detail);
        for (char *p = detail; *p; p++) /* keep the report on one line */
            if (*p == '\n' || *p == '\r') *p = ' ';
        return qt_fail("%s:%d: %s: cuDNN %s%s%s", file, line, call,
                       cudnnGetErrorString((cudnnStatus_t)status), detail[0] ? ": " : "", detail);
    }
    case QT_LIB_CUBLAS:
        return qt_fail("%s:%d: %s: cuBLAS %s", file, line, call,
                       cublasLtGetStatusString((cublasStatus_t)status));
    }
    return qt_fail("%s:%d: %s: status %d", file, line, call, status);
}

extern "C" int qt_cuda_check_at(qt_cuda_lib lib, int status, const char *call, const char *file,
                                int line)
{
    const int ok = lib == QT_LIB_CUDA    ? (int)cudaSuccess
                   : lib == QT_LIB_CUDNN ? (int)CUDNN_STATUS_SUCCESS
                                         : (int)CUBLAS_STATUS_SUCCESS;
    if (status != ok) return report(lib, status, call, file, line);
    if (!qt_cuda_sync_debug()) return 0;
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess)
        return qt_fail("%s:%d: %s: CUDA %s (%s) (found by QT_SYNC_DEBUG after this call)", file,
                       line, call, cudaGetErrorName(e), cudaGetErrorString(e));
    return 0;
}
