/* test_checkpoint.c — the checkpoint container: bit-exact round trips, refusal of every
 * truncation and of a flipped bit at every position (with the exact one-line message),
 * wrong magic / version / section size, atomic writing under failures (the old file stays,
 * no temp file remains), the directory conventions (latest, list, prune) and CRC-32C. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "core/philox.h"
#include "core/qt.h"

/* ---- helpers ---- */
typedef struct {
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = qt_calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/qt_ckpt_test_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    chmod(path, 0755);
    return remove(path);
}

static int teardown(void **state)
{
    fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Redirects stderr into a temp file between begin and end; end returns what was printed. */
typedef struct {
    int saved;
    FILE *f;
} capture;

static void capture_begin(capture *c)
{
    fflush(stderr);
    c->f = tmpfile();
    assert_non_null(c->f);
    c->saved = dup(2);
    dup2(fileno(c->f), 2);
}

static void capture_end(capture *c, char *out, size_t cap)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    rewind(c->f);
    size_t k = fread(out, 1, cap - 1, c->f);
    out[k] = '\0';
    fclose(c->f);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void fill(float *x, size_t n, uint32_t salt)
{
    qt_philox_key key = qt_philox_make_key(42 + salt, QT_RNG_TEST);
    for (size_t i = 0; i < n; i += 4) {
        uint32_t r[4];
        qt_philox_block(key, i / 4, 0, 0, r);
        for (size_t k = 0; k < 4 && i + k < n; k++) x[i + k] = (float)r[k] / 4294967296.0f - 0.5f;
    }
}

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = qt_malloc(*size);
    assert_int_equal(fread(b, 1, *size, f), *size);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
}

static bool has_temp_file(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    bool found = false;
    for (struct dirent *e; (e = readdir(d));) found |= strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}

/* The small checkpoint most tests use: 37 params (148 bytes + 4 padding), 6 buffers, 37
 * optimizer floats. File size 104 + 3*40 + 152 + 24 + 152 + 4 = 556 bytes. */
enum { NP = 37, NB = 6, SMALL_BYTES = 556 };
typedef struct {
    float params[NP], buffers[NB], optim[NP];
    qt_ckpt_meta meta;
} small_ckpt;

static void small_make(small_ckpt *c)
{
    fill(c->params, NP, 1);
    fill(c->buffers, NB, 2);
    fill(c->optim, NP, 3);
    c->meta = (qt_ckpt_meta){.config_hash = 0x0123456789abcdefULL, .world = 4, .rank = 0,
                             .step = 1234567890123LL, .epoch = 17, .cursor = 390,
                             .rng = {1, 0xffffffffffffffffULL, 3, 0x8000000000000000ULL}};
}

static void small_sections(small_ckpt *c, qt_ckpt_section s[3])
{
    s[0] = (qt_ckpt_section){"params", c->params, sizeof c->params};
    s[1] = (qt_ckpt_section){"buffers", c->buffers, sizeof c->buffers};
    s[2] = (qt_ckpt_section){"optim", c->optim, sizeof c->optim};
}

/* Reads path into a fresh small_ckpt with stderr captured. */
static int small_read(const char *path, small_ckpt *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    qt_ckpt_section s[3];
    small_sections(out, s);
    capture c;
    capture_begin(&c);
    int rc = qt_ckpt_read(path, &out->meta, s, 3);
    capture_end(&c, err, cap);
    return rc;
}

/* ---- tests ---- */
static void test_round_trip(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/a.qtc", f->dir);
    small_ckpt c, back;
    small_make(&c);
    qt_ckpt_section s[4];
    small_sections(&c, s);
    s[3] = (qt_ckpt_section){"residuals", NULL, 0}; /* empty sections are allowed */
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 4), 0);
    size_t size;
    free(slurp(path, &size));
    assert_int_equal(size, SMALL_BYTES + 40);

    /* all sections, listed in another order than written */
    memset(&back, 0, sizeof back);
    qt_ckpt_section r[4] = {{"optim", back.optim, sizeof back.optim},
                            {"residuals", NULL, 0},
                            {"params", back.params, sizeof back.params},
                            {"buffers", back.buffers, sizeof back.buffers}};
    assert_int_equal(qt_ckpt_read(path, &back.meta, r, 4), 0);
    assert_memory_equal(&back.meta, &c.meta, sizeof c.meta);
    assert_memory_equal(back.params, c.params, sizeof c.params);
    assert_memory_equal(back.buffers, c.buffers, sizeof c.buffers);
    assert_memory_equal(back.optim, c.optim, sizeof c.optim);

    /* a subset: params alone (the others are checksummed and skipped) */
    float only[NP] = {0};
    qt_ckpt_meta m;
    qt_ckpt_section one = {"params", only, sizeof only};
    assert_int_equal(qt_ckpt_read(path, &m, &one, 1), 0);
    assert_memory_equal(only, c.params, sizeof only);

    /* overwriting an existing checkpoint replaces it */
    c.params[5] = 99.0f;
    c.meta.step = 7;
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 3), 0);
    char err[512];
    assert_int_equal(small_read(path, &back, err, sizeof err), 0);
    assert_true(back.params[5] == 99.0f && back.meta.step == 7);
    assert_false(has_temp_file(f->dir));
}

/* Sections larger than the 4 MiB I/O chunk, read back bit-exactly. */
static void test_round_trip_large(void **state)
{
    fixture *f = *state;
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/x/y", f->dir);
    assert_int_equal(qt_ckpt_mkdir(dir), 0);
    assert_int_equal(qt_ckpt_mkdir(dir), 0); /* exists: fine */
    assert_int_equal(qt_ckpt_path(path, sizeof path, dir, 5, -1), 0);
    const size_t n = (9u << 20) / 4 + 3; /* 9 MiB + 12 bytes */
    float *a = qt_malloc(n * 4), *b = qt_malloc(n * 4), *skip = qt_malloc(n * 4);
    fill(a, n, 7);
    fill(skip, n, 8);
    qt_ckpt_meta m = {.step = 5}, back;
    qt_ckpt_section s[2] = {{"skipped", skip, n * 4}, {"params", a, n * 4}};
    assert_int_equal(qt_ckpt_write(path, &m, s, 2), 0);
    qt_ckpt_section r = {"params", b, n * 4};
    assert_int_equal(qt_ckpt_read(path, &back, &r, 1), 0);
    assert_memory_equal(a, b, n * 4);
    assert_int_equal(back.step, 5);
    free(a), free(b), free(skip);
}

static void test_every_truncation_refused(void **state)
{
    fixture *f = *state;
    char path[128], cut[128], err[512], want[256];
    snprintf(path, sizeof path, "%s/full.qtc", f->dir);
    snprintf(cut, sizeof cut, "%s/cut.qtc", f->dir);
    small_ckpt c, back;
    small_make(&c);
    qt_ckpt_section s[3];
    small_sections(&c, s);
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 3), 0);
    size_t size;
    uint8_t *bytes = slurp(path, &size);
    assert_int_equal(size, SMALL_BYTES);
    for (size_t len = 0; len < size; len++) {
        spit(cut, bytes, len);
        assert_int_equal(small_read(cut, &back, err, sizeof err), -1);
        if (len < 104)
            snprintf(want, sizeof want, "error: %s: truncated (%zu of at least 108 bytes)\n", cut, len);
        else
            snprintf(want, sizeof want, "error: %s: truncated (%zu of %zu bytes)\n", cut, len, size);
        assert_string_equal(err, want);
    }
    /* and a byte too many */
    uint8_t *longer = qt_malloc(size + 1);
    memcpy(longer, bytes, size);
    longer[size] = 0;
    spit(cut, longer, size + 1);
    assert_int_equal(small_read(cut, &back, err, sizeof err), -1);
    assert_non_null(strstr(err, "(trailing data)"));
    free(longer);
    free(bytes);
}

/* One flipped bit at every byte (two different bits) must be refused, as corruption. */
static void test_every_flipped_byte_refused(void **state)
{
    fixture *f = *state;
    char path[128], bad[128], err[512], want[256];
    snprintf(path, sizeof path, "%s/full.qtc", f->dir);
    snprintf(bad, sizeof bad, "%s/bad.qtc", f->dir);
    small_ckpt c, back;
    small_make(&c);
    qt_ckpt_section s[3];
    small_sections(&c, s);
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 3), 0);
    size_t size;
    uint8_t *bytes = slurp(path, &size);
    for (size_t i = 0; i < size; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            bytes[i] ^= (uint8_t)(1u << bit);
            spit(bad, bytes, size);
            bytes[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(small_read(bad, &back, err, sizeof err), -1);
            const char *what = i < 8     ? "not a qtrain checkpoint"
                               : i < 104 ? "header checksum mismatch (file corrupted)"
                                         : "checksum mismatch (file corrupted)";
            snprintf(want, sizeof want, "error: %s: %s\n", bad, what);
            if (strcmp(err, want) != 0) fprintf(stderr, "byte %zu bit %d\n", i, bit);
            assert_string_equal(err, want);
        }
    }
    free(bytes);
}

/* Rewrites a header field and both checksums, so that only the field itself is wrong. */
static void forge(uint8_t *b, size_t size, size_t at, uint32_t value)
{
    for (int i = 0; i < 4; i++) b[at + (size_t)i] = (uint8_t)(value >> (8 * i));
    uint32_t h = qt_crc32c(0, b, 100);
    for (int i = 0; i < 4; i++) b[100 + i] = (uint8_t)(h >> (8 * i));
    uint32_t t = qt_crc32c(0, b, size - 4);
    for (int i = 0; i < 4; i++) b[size - 4 + (size_t)i] = (uint8_t)(t >> (8 * i));
}

static void test_wrong_magic_version_size(void **state)
{
    fixture *f = *state;
    char path[128], other[128], err[512], want[256];
    snprintf(path, sizeof path, "%s/full.qtc", f->dir);
    snprintf(other, sizeof other, "%s/other.qtc", f->dir);
    small_ckpt c, back;
    small_make(&c);
    qt_ckpt_section s[3];
    small_sections(&c, s);
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 3), 0);
    size_t size;
    uint8_t *bytes = slurp(path, &size);

    char text[600];
    memset(text, 'x', sizeof text);
    spit(other, text, sizeof text);
    assert_int_equal(small_read(other, &back, err, sizeof err), -1);
    snprintf(want, sizeof want, "error: %s: not a qtrain checkpoint\n", other);
    assert_string_equal(err, want);

    forge(bytes, size, 8, 2); /* version 2, checksums valid */
    spit(other, bytes, size);
    assert_int_equal(small_read(other, &back, err, sizeof err), -1);
    snprintf(want, sizeof want, "error: %s: checkpoint format version 2, this qtrain reads version 1\n", other);
    assert_string_equal(err, want);
    forge(bytes, size, 8, 1);
    spit(other, bytes, size);
    assert_int_equal(small_read(other, &back, err, sizeof err), 0); /* the forge itself is sound */

    /* the model needs 4 bytes less than the file's section holds */
    float params[NP];
    qt_ckpt_meta m;
    qt_ckpt_section want_small = {"params", params, sizeof params - 4};
    capture cap;
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_read(path, &m, &want_small, 1), -1);
    capture_end(&cap, err, sizeof err);
    snprintf(want, sizeof want, "error: %s: section 'params' holds 148 bytes, the model needs 144\n", path);
    assert_string_equal(err, want);

    qt_ckpt_section missing = {"residuals", params, 4};
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_read(path, &m, &missing, 1), -1);
    capture_end(&cap, err, sizeof err);
    snprintf(want, sizeof want, "error: %s: no section 'residuals' (the run needs it)\n", path);
    assert_string_equal(err, want);

    /* not a file, not there */
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_read(f->dir, &m, NULL, 0), -1);
    snprintf(other, sizeof other, "%s/none.qtc", f->dir);
    assert_int_equal(qt_ckpt_read(other, &m, NULL, 0), -1);
    capture_end(&cap, err, sizeof err);
    assert_int_equal(count_lines(err), 2);
    assert_non_null(strstr(err, "not a regular file"));
    assert_non_null(strstr(err, "none.qtc: cannot open checkpoint: No such file or directory"));
    free(bytes);
}

/* Failing writes leave the previous checkpoint byte-identical and no temp file. */
static void test_atomic_write_failures(void **state)
{
    fixture *f = *state;
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/keep.qtc", f->dir);
    small_ckpt c;
    small_make(&c);
    qt_ckpt_section s[3];
    small_sections(&c, s);
    assert_int_equal(qt_ckpt_write(path, &c.meta, s, 3), 0);
    size_t size0;
    uint8_t *before = slurp(path, &size0);

    /* 1. the write fails midway: the file size limit stops it after 64 KiB */
    const size_t n = 1 << 20;
    float *big = qt_calloc(n, sizeof *big);
    qt_ckpt_section bs = {"params", big, n * sizeof *big};
    struct rlimit old_limit, limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    limit = old_limit;
    limit.rlim_cur = 64 << 10;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
    capture cap;
    capture_begin(&cap);
    int rc = qt_ckpt_write(path, &c.meta, &bs, 1);
    capture_end(&cap, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    free(big);
    assert_int_equal(rc, -1);
    assert_int_equal(count_lines(err), 1);
    assert_non_null(strstr(err, "keep.qtc: cannot write checkpoint: write: File too large"));
    size_t size1;
    uint8_t *after = slurp(path, &size1);
    assert_int_equal(size1, size0);
    assert_memory_equal(after, before, size0);
    assert_false(has_temp_file(f->dir));
    free(after);

    /* 2. the path is a directory: rename refuses, the directory is untouched */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/adir", f->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_write(sub, &c.meta, s, 3), -1);
    capture_end(&cap, err, sizeof err);
    assert_non_null(strstr(err, "adir: cannot write checkpoint: rename: Is a directory"));
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_false(has_temp_file(f->dir));

    /* 3. the directory does not exist */
    char nowhere[160];
    snprintf(nowhere, sizeof nowhere, "%s/missing/x.qtc", f->dir);
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_write(nowhere, &c.meta, s, 3), -1);
    capture_end(&cap, err, sizeof err);
    assert_non_null(strstr(err, "x.qtc: cannot write checkpoint: create: No such file or directory"));

    /* 4. the directory is not writable (root ignores permissions: only checked as a user) */
    if (geteuid() != 0) {
        char ro[128], ro_path[160];
        snprintf(ro, sizeof ro, "%s/ro", f->dir);
        assert_int_equal(mkdir(ro, 0755), 0);
        snprintf(ro_path, sizeof ro_path, "%s/c.qtc", ro);
        assert_int_equal(qt_ckpt_write(ro_path, &c.meta, s, 3), 0);
        chmod(ro, 0555);
        capture_begin(&cap);
        assert_int_equal(qt_ckpt_write(ro_path, &c.meta, s, 3), -1);
        capture_end(&cap, err, sizeof err);
        assert_non_null(strstr(err, "create: Permission denied"));
        small_ckpt back;
        assert_int_equal(small_read(ro_path, &back, err, sizeof err), 0);
        chmod(ro, 0755);
    }
    free(before);
}

static void touch(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    spit(p, "x", 1);
}

static bool exists(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void test_latest_list_prune(void **state)
{
    fixture *f = *state;
    char path[256], want[256];
    int64_t step = -1, steps[8];
    assert_int_equal(qt_ckpt_latest(f->dir, path, sizeof path, &step), 1); /* empty */
    snprintf(want, sizeof want, "%s/nope", f->dir);
    assert_int_equal(qt_ckpt_latest(want, path, sizeof path, &step), 1); /* missing dir */

    /* steps 100, 200, 3000 with rank files, an in-progress step 4000 with rank files only,
     * a dead writer's temp files, strangers (ckpt-5000.qtc is not how we spell step 5000) */
    const char *names[] = {"ckpt-00000100.qtc", "ckpt-00000100-r0.qtc", "ckpt-00000100-r1.qtc",
                           "ckpt-00000200.qtc", "ckpt-00000200-r0.qtc", "ckpt-00000200-r1.qtc",
                           "ckpt-00003000.qtc", "ckpt-00003000-r0.qtc", "ckpt-00003000-r1.qtc",
                           "ckpt-00004000-r0.qtc", "ckpt-00004000-r1.qtc",
                           "ckpt-00000050.qtc.tmp.123", "ckpt-00000050-r1.qtc.tmp.9",
                           "ckpt-00009999.qtc.tmp.77", "notes.txt", "ckpt-abc.qtc",
                           "ckpt-00000010.qtcx", "ckpt-.qtc", "ckpt-00000020-r.qtc",
                           "ckpt-5000.qtc", "ckpt-000000010.qtc"};
    const int n_names = (int)(sizeof names / sizeof names[0]);
    for (int i = 0; i < n_names; i++) touch(f->dir, names[i]);

    assert_int_equal(qt_ckpt_latest(f->dir, path, sizeof path, &step), 0);
    assert_int_equal(step, 3000);
    snprintf(want, sizeof want, "%s/ckpt-00003000.qtc", f->dir);
    assert_string_equal(path, want);
    assert_int_equal(qt_ckpt_list(f->dir, steps, 8), 3);
    assert_true(steps[0] == 100 && steps[1] == 200 && steps[2] == 3000);
    assert_int_equal(qt_ckpt_list(f->dir, steps, 2), 2); /* the newest two */
    assert_true(steps[0] == 200 && steps[1] == 3000);

    assert_int_equal(qt_ckpt_prune(f->dir, 0), 0);  /* keep everything */
    assert_int_equal(qt_ckpt_prune(f->dir, 3), 0);  /* nothing beyond 3 */
    assert_int_equal(qt_ckpt_prune(f->dir, 2), 5);  /* step 100 (3 files) + two temp files of 50 */
    for (int i = 0; i < n_names; i++) {
        bool gone = i < 3 || i == 11 || i == 12;
        if (exists(f->dir, names[i]) == gone) fprintf(stderr, "%s\n", names[i]);
        assert_true(exists(f->dir, names[i]) != gone);
    }
    assert_int_equal(qt_ckpt_prune(f->dir, 1), 3); /* step 200 */
    assert_int_equal(qt_ckpt_list(f->dir, steps, 8), 1);
    assert_true(exists(f->dir, "ckpt-00004000-r1.qtc") && exists(f->dir, "ckpt-00009999.qtc.tmp.77"));

    /* a file where the directory should be */
    capture cap;
    char err[512];
    snprintf(want, sizeof want, "%s/notes.txt", f->dir);
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_latest(want, path, sizeof path, &step), -1);
    capture_end(&cap, err, sizeof err);
    assert_int_equal(count_lines(err), 1);
    assert_non_null(strstr(err, "notes.txt: cannot list checkpoint directory: Not a directory"));
    char tiny[8];
    capture_begin(&cap);
    assert_int_equal(qt_ckpt_path(tiny, sizeof tiny, f->dir, 1, 0), -1);
    capture_end(&cap, err, sizeof err);
    assert_non_null(strstr(err, "checkpoint path too long"));
}

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(qt_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(qt_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(qt_crc32c(0, "", 0), 0);
    /* 32 zero bytes: a published CRC-32C test vector (RFC 3720, B.4) */
    uint8_t zeros[32] = {0};
    assert_int_equal(qt_crc32c(0, zeros, 32), 0x8A9136AAu);
    enum { N = 5000 };
    float buf[N / 4 + 1];
    fill(buf, N / 4 + 1, 9);
    const uint8_t *b = (const uint8_t *)buf;
    const size_t lens[] = {0, 1, 7, 8, 9, 63, 1023, 1024, 1025, 3000, N - 8};
    for (size_t off = 0; off < 8; off++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            uint32_t whole = qt_crc32c(0, b + off, lens[k]);
            assert_int_equal(qt_crc32c_portable(0, b + off, lens[k]), whole);
            size_t half = lens[k] / 3;
            assert_int_equal(qt_crc32c(qt_crc32c(0, b + off, half), b + off + half, lens[k] - half), whole);
            assert_int_equal(qt_crc32c_portable(qt_crc32c_portable(0, b + off, half), b + off + half,
                                                lens[k] - half), whole);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_truncation_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_flipped_byte_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_magic_version_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latest_list_prune, setup, teardown),
        cmocka_unit_test(test_crc32c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
