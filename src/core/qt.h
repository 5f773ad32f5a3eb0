/* qt.h — the small base every qtrain module may include: error reporting, logging,
 * checked allocation, always-on invariant checks, a monotonic clock.
 *
 * Error convention: a function that can fail returns int (0 = ok, negative = error).
 * The place that detects the error prints ONE line through qt_fail() naming the file or
 * object and the problem; callers above just propagate the negative value. Only main()
 * exits, always non-zero. User input is never checked with QT_ASSERT (that is for our
 * own invariants and aborts).
 */
#ifndef QT_CORE_QT_H
#define QT_CORE_QT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#if defined(__GNUC__)
#define QT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define QT_PRINTF(a, b)
#endif

/* Sets the rank shown in every log line ("[rank 3] error: ..."); -1 = not distributed.
 * Part of the process-wide context: set once at start-up. */
void qt_log_set_rank(int rank);
int qt_log_rank(void);

/* Prints "error: <msg>" (with the rank when distributed) to stderr; returns -1 so a
 * caller can write `return qt_fail("%s: truncated", path);`. */
int qt_fail(const char *fmt, ...) QT_PRINTF(1, 2);
void qt_warn(const char *fmt, ...) QT_PRINTF(1, 2);
/* Informational line on stderr (rank 0 only when distributed). */
void qt_info(const char *fmt, ...) QT_PRINTF(1, 2);

/* Aborts with file:line and the message: only for our own invariants. */
void qt_panic(const char *file, int line, const char *fmt, ...) QT_PRINTF(3, 4);
#define QT_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) qt_panic(__FILE__, __LINE__, "assertion failed: %s", #cond); \
    } while (0)

/* Checked allocation: on failure prints the size and the call site, then aborts
 * (out of memory is not recoverable in a trainer). Memory is zeroed for qt_calloc. */
void *qt_malloc_at(size_t bytes, const char *file, int line);
void *qt_calloc_at(size_t n, size_t size, const char *file, int line);
/* 64-byte aligned, zeroed; free with qt_free_aligned(). */
void *qt_aligned_alloc_at(size_t bytes, const char *file, int line);
#define qt_malloc(b) qt_malloc_at((b), __FILE__, __LINE__)
#define qt_calloc(n, s) qt_calloc_at((n), (s), __FILE__, __LINE__)
#define qt_aligned_alloc(b) qt_aligned_alloc_at((b), __FILE__, __LINE__)
void qt_free_aligned(void *p);

/* Seconds from a monotonic clock. */
double qt_now(void);

#define QT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QT_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
