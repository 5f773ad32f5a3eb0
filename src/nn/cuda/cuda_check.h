/* cuda_check.h — checked calls into the CUDA runtime, cuDNN and cuBLAS(Lt).
 *
 * Each macro evaluates its argument exactly once. On failure it prints ONE line through
 * qt_fail (so it carries the rank: "[rank 3] error: ...") naming file:line, the call's
 * text and the library's error name and string (for cuDNN also cudnnGetLastErrorString,
 * which says which attribute or shape was refused), then leaves the enclosing function:
 *   CUDA_CHECK(call), CUDNN_CHECK(call), CUBLAS_CHECK(call)   `return -1;`
 *   CUDA_CHECK_GOTO(call, label), CUDNN_CHECK_GOTO, CUBLAS_CHECK_GOTO   `goto label;`
 * so they belong in functions that return int (0 = ok, negative = error, as core/qt.h).
 * QT_CUDA_LAUNCH_CHECK() follows each kernel launch (it checks cudaGetLastError()).
 *
 * QT_SYNC_DEBUG=1 in the environment makes every successful checked call also
 * synchronise the device and check the sticky error, so an asynchronous fault is
 * reported at the call that caused it rather than at some later call. It is read once
 * per process. Device synchronisation is illegal while a stream is being captured into
 * a CUDA graph: a trainer must not capture when qt_cuda_sync_debug() is true.
 *
 * C and C++ (nvcc) both include this header.
 */
#ifndef QT_NN_CUDA_CHECK_H
#define QT_NN_CUDA_CHECK_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QT_LIB_CUDA = 0, QT_LIB_CUDNN = 1, QT_LIB_CUBLAS = 2 } qt_cuda_lib;

/* Returns 0 when `status` is the library's success code (and, under QT_SYNC_DEBUG, the
 * device synchronised cleanly); otherwise prints the error line and returns -1. */
int qt_cuda_check_at(qt_cuda_lib lib, int status, const char *call, const char *file, int line);

/* True when QT_SYNC_DEBUG=1 (read once). */
bool qt_cuda_sync_debug(void);

#ifdef __cplusplus
}
#endif

#define QT_CUDA_CHECKED_(lib, call) qt_cuda_check_at((lib), (int)(call), #call, __FILE__, __LINE__)

#define CUDA_CHECK(call)                                                   \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUDA, call)) return -1;                \
    } while (0)
#define CUDNN_CHECK(call)                                                  \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUDNN, call)) return -1;               \
    } while (0)
#define CUBLAS_CHECK(call)                                                 \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUBLAS, call)) return -1;              \
    } while (0)
#define CUDA_CHECK_GOTO(call, label)                                       \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUDA, call)) goto label;               \
    } while (0)
#define CUDNN_CHECK_GOTO(call, label)                                      \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUDNN, call)) goto label;              \
    } while (0)
#define CUBLAS_CHECK_GOTO(call, label)                                     \
    do {                                                                   \
        if (QT_CUDA_CHECKED_(QT_LIB_CUBLAS, call)) goto label;             \
    } while (0)

/* After a <<<...>>> launch: a bad configuration shows up in cudaGetLastError(). */
#define QT_CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#endif
