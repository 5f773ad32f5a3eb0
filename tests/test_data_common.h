/* test_data_common.h — helpers shared by the tests/test_data_*.c files: temporary
 * folders, capturing the one-line error messages on stderr, small file edits. */
#ifndef QT_TEST_DATA_COMMON_H
#define QT_TEST_DATA_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>
#include <cmocka.h>

static inline char *tdir_create(void)
{
    char *t = strdup("/tmp/qt_test_data_XXXXXX");
    assert_non_null(mkdtemp(t));
    return t;
}

static int tdir_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void tdir_remove(char *t)
{
    if (!t) return;
    nftw(t, tdir_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
}

/* Redirects stderr into a temporary file until capture_end(), which returns what was
 * written (caller frees). Lets tests check the exact one-line error messages. */
typedef struct {
    int saved_fd;
    FILE *tmp;
} stderr_capture;

static inline stderr_capture capture_begin(void)
{
    stderr_capture c;
    fflush(stderr);
    c.saved_fd = dup(2);
    c.tmp = tmpfile();
    assert_non_null(c.tmp);
    dup2(fileno(c.tmp), 2);
    return c;
}

static inline char *capture_end(stderr_capture c)
{
    fflush(stderr);
    dup2(c.saved_fd, 2);
    close(c.saved_fd);
    long n = ftell(c.tmp);
    char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(c.tmp);
    if (n > 0) assert_int_equal(fread(s, 1, (size_t)n, c.tmp), (size_t)n);
    fclose(c.tmp);
    return s;
}

/* Asserts that `text` is exactly one line and contains every NULL-terminated needle. */
static inline void assert_one_line_with(const char *text, ...)
{
    const char *nl = strchr(text, '\n');
    if (!nl || nl[1] != '\0') fail_msg("expected exactly one line on stderr, got: '%s'", text);
    va_list ap;
    va_start(ap, text);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(text, needle)) fail_msg("'%s' not found in: %s", needle, text);
    va_end(ap);
}

static inline void text_save(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static inline void file_truncate_by(const char *path, long bytes)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, n - bytes), 0);
}

static inline void file_poke(const char *path, long offset, uint8_t value)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, offset, SEEK_SET), 0);
    assert_int_equal(fputc(value, f), value);
    fclose(f);
}

static inline long file_read_at(const char *path, long offset, void *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, offset, SEEK_SET), 0);
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return (long)got;
}

#endif
