/* gen_args.h — the command line the data generators share (gen_cifar_like,
 * gen_speech_like): one OUTDIR and "--flag value" pairs, -h/--help, one-line errors
 * that name the tool, exit status 2 for a bad command line.
 */
#ifndef QT_TOOLS_GEN_ARGS_H
#define QT_TOOLS_GEN_ARGS_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"

/* An integer value of flag; 0, or -1 after printing why not. */
static inline int gen_arg_i64(const char *tool, const char *flag, const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || end == s)
        return qt_fail("%s: %s '%s': not an integer", tool, flag, s);
    *out = v;
    return 0;
}

/* The options every generator has (--train N, --test M, --seed S): 0, -1 after printing
 * a bad value, 1 if flag is none of them. */
static inline int gen_arg_common(const char *tool, const char *flag, const char *s,
                                 int64_t *n_train, int64_t *n_test, uint64_t *seed)
{
    if (!strcmp(flag, "--train")) return gen_arg_i64(tool, flag, s, n_train);
    if (!strcmp(flag, "--test")) return gen_arg_i64(tool, flag, s, n_test);
    if (strcmp(flag, "--seed")) return 1;
    int64_t n = 0;
    int rc = gen_arg_i64(tool, flag, s, &n);
    *seed = (uint64_t)n;
    return rc;
}

/* The tool's option: 0, -1 after printing a bad value, 1 for an option it does not know. */
typedef int (*gen_arg_fn)(const char *flag, const char *value, void *ctx);

/* Walks argv: OUTDIR into *dir, each "--flag value" to opt. Returns -1 to go on, or the
 * exit status (0 after --help). */
static inline int gen_args(int argc, char **argv, const char *tool, void (*usage)(FILE *),
                           gen_arg_fn opt, void *ctx, const char **dir)
{
    *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (*dir) {
                usage(stderr);
                return 2;
            }
            *dir = a;
            continue;
        }
        if (i + 1 >= argc) {
            qt_fail("%s: %s needs a value", tool, a);
            return 2;
        }
        int rc = opt(a, argv[++i], ctx);
        if (rc > 0) {
            qt_fail("%s: unknown option %s", tool, a);
            usage(stderr);
            return 2;
        }
        if (rc < 0) return 2;
    }
    if (!*dir) {
        usage(stderr);
        return 2;
    }
    return -1;
}

#endif
