/* qt.c — logging, checked allocation, clock (see qt.h). */
#include "core/qt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Process-wide context: the rank for log prefixes, written once at start-up. */
static int g_log_rank = -1;

void qt_log_set_rank(int rank) { g_log_rank = rank; }
int qt_log_rank(void) { return g_log_rank; }

static void vlog(const char *tag, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (g_log_rank >= 0)
        fprintf(stderr, "[rank %d] %s%s\n", g_log_rank, tag, msg);
    else
        fprintf(stderr, "%s%s\n", tag, msg);
}

int qt_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("error: ", fmt, ap);
    va_end(ap);
    return -1;
}

void qt_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("warning: ", fmt, ap);
    va_end(ap);
}

void qt_info(const char *fmt, ...)
{
    if (g_log_rank > 0) return;
    va_list ap;
    va_start(ap, fmt);
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", msg);
}

void qt_panic(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_log_rank >= 0)
        fprintf(stderr, "[rank %d] internal error: %s:%d: %s\n", g_log_rank, file, line, msg);
    else
        fprintf(stderr, "internal error: %s:%d: %s\n", file, line, msg);
    abort();
}

void *qt_malloc_at(size_t bytes, const char *file, int line)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) qt_panic(file, line, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *qt_calloc_at(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) qt_panic(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *qt_aligned_alloc_at(size_t bytes, const char *file, int line)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0 || !p)
        qt_panic(file, line, "out of memory allocating %zu aligned bytes", bytes);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

void qt_free_aligned(void *p) { free(p); }

double qt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
