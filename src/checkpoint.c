/* checkpoint.c — the checkpoint file format, atomic writing, validated reading and the
 * directory conventions (see checkpoint.h for the format and the invariants).
 *
 * I/O is plain read/write on a descriptor in chunks of QT_CKPT_CHUNK bytes, each chunk
 * checksummed right before it is written or right after it is read, while it is still in
 * cache. Payloads go straight from and into the caller's buffers: no copy of the arenas.
 */
#include "checkpoint.h"

#include "core/qt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SSE4_2__) && defined(__x86_64__)
#include <nmmintrin.h>
#endif

static const char ckpt_magic[8] = {'Q', 'T', 'C', 'K', 'P', 'T', '1', '\0'};
enum {
    CKPT_HEADER_BYTES = 104,
    CKPT_HEADER_CRC_AT = 100,
    CKPT_NAME_BYTES = 32,
    CKPT_ENTRY_BYTES = CKPT_NAME_BYTES + 8,
    CKPT_TRAILER_BYTES = 4,
};
#define QT_CKPT_CHUNK ((size_t)1 << 22)

/* ---- CRC-32C ---- */
#define CRC32C_POLY 0x82F63B78u

static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (CRC32C_POLY & (0u - (crc & 1u)));
    }
    return crc;
}

uint32_t qt_crc32c_portable(uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = data;
    crc = ~crc;
    if (n < 1024) return ~crc32c_bitwise(crc, p, n);
    /* Slice-by-8. The tables (8 KiB) are built per call on the stack (~5 us), which keeps
     * the module free of global state; callers checksum megabyte chunks. */
    uint32_t t[8][256];
    for (uint32_t i = 0; i < 256; i++) t[0][i] = crc32c_bitwise(0, &(uint8_t){(uint8_t)i}, 1);
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    return ~crc32c_bitwise(crc, p, n);
}

uint32_t qt_crc32c(uint32_t crc, const void *data, size_t n)
{
#if defined(__SSE4_2__) && defined(__x86_64__)
    const uint8_t *p = data;
    uint64_t c = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8); /* x86 is little-endian: the byte order the CRC consumes */
        c = _mm_crc32_u64(c, w);
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
#else
    return qt_crc32c_portable(crc, data, n);
#endif
}

/* ---- little-endian fields ---- */
static void put_u32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *b)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)b[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static size_t pad8(size_t bytes) { return (8 - bytes % 8) % 8; }

static void encode_header(uint8_t *h, const qt_ckpt_meta *m, uint32_t n_sections, uint64_t file_bytes)
{
    memset(h, 0, CKPT_HEADER_BYTES);
    memcpy(h, ckpt_magic, 8);
    put_u32(h + 8, QT_CKPT_VERSION);
    put_u32(h + 12, n_sections);
    put_u64(h + 16, file_bytes);
    put_u64(h + 24, m->config_hash);
    put_u32(h + 32, (uint32_t)m->world);
    put_u32(h + 36, (uint32_t)m->rank);
    put_u64(h + 40, (uint64_t)m->step);
    put_u64(h + 48, (uint64_t)m->epoch);
    put_u64(h + 56, (uint64_t)m->cursor);
    for (int i = 0; i < 4; i++) put_u64(h + 64 + 8 * i, m->rng[i]);
    put_u32(h + CKPT_HEADER_CRC_AT, qt_crc32c(0, h, CKPT_HEADER_CRC_AT));
}

static void decode_header(const uint8_t *h, qt_ckpt_meta *m)
{
    m->config_hash = get_u64(h + 24);
    m->world = (int32_t)get_u32(h + 32);
    m->rank = (int32_t)get_u32(h + 36);
    m->step = (int64_t)get_u64(h + 40);
    m->epoch = (int64_t)get_u64(h + 48);
    m->cursor = (int64_t)get_u64(h + 56);
    for (int i = 0; i < 4; i++) m->rng[i] = get_u64(h + 64 + 8 * i);
}

/* ---- writing ---- */
typedef struct {
    int fd;
    uint32_t crc;
    uint64_t pos;
} ckpt_writer;

/* Checksums and writes n bytes; errno is set on failure. */
static int writer_put(ckpt_writer *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        size_t len = QT_MIN(n, QT_CKPT_CHUNK);
        w->crc = qt_crc32c(w->crc, p, len);
        for (size_t done = 0; done < len;) {
            ssize_t k = write(w->fd, p + done, len - done);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                if (k == 0) errno = EIO;
                return -1;
            }
            done += (size_t)k;
        }
        p += len;
        n -= len;
        w->pos += len;
    }
    return 0;
}

static int write_body(ckpt_writer *w, const qt_ckpt_meta *m, const qt_ckpt_section *s, int n,
                      uint64_t file_bytes)
{
    static const uint8_t zeros[8] = {0};
    uint8_t h[CKPT_HEADER_BYTES];
    encode_header(h, m, (uint32_t)n, file_bytes);
    if (writer_put(w, h, sizeof h) < 0) return -1;
    for (int i = 0; i < n; i++) {
        uint8_t e[CKPT_ENTRY_BYTES] = {0};
        memcpy(e, s[i].name, strlen(s[i].name));
        put_u64(e + CKPT_NAME_BYTES, s[i].bytes);
        if (writer_put(w, e, sizeof e) < 0 || writer_put(w, s[i].data, s[i].bytes) < 0 ||
            writer_put(w, zeros, pad8(s[i].bytes)) < 0)
            return -1;
    }
    uint8_t t[CKPT_TRAILER_BYTES];
    put_u32(t, w->crc);
    return writer_put(w, t, sizeof t);
}

/* fsync of the directory holding path, so the rename itself is durable. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    QT_ASSERT(dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    /* Some file systems cannot sync a directory (EINVAL): nothing more can be done there. */
    int rc = (fsync(fd) < 0 && errno != EINVAL) ? -1 : 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int qt_ckpt_write(const char *path, const qt_ckpt_meta *meta, const qt_ckpt_section *sections, int n)
{
    QT_ASSERT(n >= 0);
    uint64_t file_bytes = CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES;
    for (int i = 0; i < n; i++) {
        size_t len = sections[i].name ? strlen(sections[i].name) : 0;
        QT_ASSERT(len >= 1 && len <= QT_CKPT_NAME_MAX);
        QT_ASSERT(sections[i].data || sections[i].bytes == 0);
        for (int j = 0; j < i; j++) QT_ASSERT(strcmp(sections[i].name, sections[j].name) != 0);
        file_bytes += CKPT_ENTRY_BYTES + sections[i].bytes + pad8(sections[i].bytes);
    }
    size_t tmp_cap = strlen(path) + 32;
    char *tmp = qt_malloc(tmp_cap);
    snprintf(tmp, tmp_cap, "%s.tmp.%ld", path, (long)getpid());
    const char *stage = "create";
    int fd;
    /* A temp file of ours can only be left over from a dead process with our pid. */
    unlink(tmp);
    ckpt_writer w = {.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), .crc = 0, .pos = 0};
    if (w.fd < 0) goto fail;
    stage = "write";
    if (write_body(&w, meta, sections, n, file_bytes) < 0) goto fail;
    QT_ASSERT(w.pos == file_bytes);
    stage = "fsync";
    if (fsync(w.fd) < 0) goto fail;
    stage = "close";
    fd = w.fd;
    w.fd = -1; /* closed even when close() reports an error */
    if (close(fd) < 0) goto fail;
    stage = "rename";
    if (rename(tmp, path) < 0) goto fail;
    free(tmp);
    if (sync_parent_dir(path) < 0)
        return qt_fail("%s: cannot write checkpoint: fsync of its directory: %s", path, strerror(errno));
    return 0;
fail:;
    int err = errno;
    if (w.fd >= 0) close(w.fd);
    unlink(tmp);
    free(tmp);
    return qt_fail("%s: cannot write checkpoint: %s: %s", path, stage, strerror(err));
}

/* ---- reading ---- */
typedef struct {
    const char *path;
    int fd;
    uint64_t file_bytes;
    uint32_t crc;
    uint8_t *scratch; /* min(QT_CKPT_CHUNK, file_bytes) bytes for skipped sections */
} ckpt_reader;

/* Reads exactly n bytes at the current offset (0), or fails (-1, one line). The size was
 * checked against the header, so a short read means the file changed under us. */
static int read_exact(ckpt_reader *r, void *data, size_t n)
{
    uint8_t *p = data;
    for (size_t done = 0; done < n;) {
        ssize_t k = read(r->fd, p + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return qt_fail("%s: read error: %s", r->path, strerror(errno));
        if (k == 0) return qt_fail("%s: truncated while reading (the file shrank)", r->path);
        done += (size_t)k;
    }
    return 0;
}

/* Reads and checksums n bytes into data (or into scratch when data is NULL). */
static int reader_get(ckpt_reader *r, void *data, size_t n)
{
    uint8_t *p = data;
    while (n > 0) {
        size_t len = QT_MIN(n, QT_CKPT_CHUNK);
        uint8_t *dst = p ? p : r->scratch;
        if (read_exact(r, dst, len) < 0) return -1;
        r->crc = qt_crc32c(r->crc, dst, len);
        if (p) p += len;
        n -= len;
    }
    return 0;
}

/* Whether the whole file's checksum holds, computed from scratch (used before blaming a
 * structural problem on the writer rather than on corruption). */
static bool file_checksum_ok(ckpt_reader *r)
{
    if (lseek(r->fd, 0, SEEK_SET) != 0) return false;
    r->crc = 0;
    if (reader_get(r, NULL, r->file_bytes - CKPT_TRAILER_BYTES) < 0) return false;
    uint8_t t[CKPT_TRAILER_BYTES];
    return read_exact(r, t, sizeof t) == 0 && get_u32(t) == r->crc;
}

static int checksum_fail(const ckpt_reader *r)
{
    return qt_fail("%s: checksum mismatch (file corrupted)", r->path);
}

/* Reads the section table and payloads after the header; `seen` marks listed sections. */
static int read_sections(ckpt_reader *r, uint32_t n_file, const qt_ckpt_section *s, int n, bool *seen)
{
    uint64_t pos = CKPT_HEADER_BYTES, end = r->file_bytes - CKPT_TRAILER_BYTES;
    for (uint32_t k = 0; k < n_file; k++) {
        uint8_t e[CKPT_ENTRY_BYTES];
        if (end - pos < CKPT_ENTRY_BYTES) {
            if (!file_checksum_ok(r)) return checksum_fail(r);
            return qt_fail("%s: section table runs past the end of the file", r->path);
        }
        if (reader_get(r, e, sizeof e) < 0) return -1;
        pos += CKPT_ENTRY_BYTES;
        char name[CKPT_NAME_BYTES];
        memcpy(name, e, sizeof name);
        uint64_t bytes = get_u64(e + CKPT_NAME_BYTES);
        size_t name_len = strnlen(name, sizeof name);
        if (name_len == 0 || name_len > QT_CKPT_NAME_MAX || bytes > end - pos ||
            pad8(bytes) > end - pos - bytes) {
            if (!file_checksum_ok(r)) return checksum_fail(r);
            return qt_fail("%s: section %u has a bad name or length", r->path, k);
        }
        int idx = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(s[i].name, name) == 0) idx = i;
        if (idx >= 0 && (seen[idx] || s[idx].bytes != bytes)) {
            if (!file_checksum_ok(r)) return checksum_fail(r);
            if (seen[idx]) return qt_fail("%s: section '%s' appears twice", r->path, name);
            return qt_fail("%s: section '%s' holds %" PRIu64 " bytes, the model needs %zu", r->path,
                           name, bytes, s[idx].bytes);
        }
        if (reader_get(r, idx >= 0 ? s[idx].data : NULL, bytes) < 0 ||
            reader_get(r, NULL, pad8(bytes)) < 0)
            return -1;
        if (idx >= 0) seen[idx] = true;
        pos += bytes + pad8(bytes);
    }
    if (pos != end) {
        if (!file_checksum_ok(r)) return checksum_fail(r);
        return qt_fail("%s: %" PRIu64 " bytes after the last section", r->path, end - pos);
    }
    uint8_t t[CKPT_TRAILER_BYTES];
    if (read_exact(r, t, sizeof t) < 0) return -1;
    if (get_u32(t) != r->crc) return checksum_fail(r);
    return 0;
}

/* Validates the header against the file size; fills meta and *n_file. */
static int read_header(ckpt_reader *r, uint64_t size, qt_ckpt_meta *meta, uint32_t *n_file)
{
    uint8_t h[CKPT_HEADER_BYTES];
    size_t got = (size_t)QT_MIN(size, (uint64_t)CKPT_HEADER_BYTES);
    if (read_exact(r, h, got) < 0) return -1;
    if (memcmp(h, ckpt_magic, QT_MIN(got, sizeof ckpt_magic)) != 0)
        return qt_fail("%s: not a qtrain checkpoint", r->path);
    if (got < CKPT_HEADER_BYTES)
        return qt_fail("%s: truncated (%" PRIu64 " of at least %d bytes)", r->path, size,
                       CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES);
    if (get_u32(h + CKPT_HEADER_CRC_AT) != qt_crc32c(0, h, CKPT_HEADER_CRC_AT))
        return qt_fail("%s: header checksum mismatch (file corrupted)", r->path);
    uint32_t version = get_u32(h + 8);
    if (version != QT_CKPT_VERSION)
        return qt_fail("%s: checkpoint format version %u, this qtrain reads version %d", r->path,
                       version, QT_CKPT_VERSION);
    r->file_bytes = get_u64(h + 16);
    if (r->file_bytes < CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES)
        return qt_fail("%s: header gives an impossible size (%" PRIu64 " bytes)", r->path, r->file_bytes);
    if (size < r->file_bytes)
        return qt_fail("%s: truncated (%" PRIu64 " of %" PRIu64 " bytes)", r->path, size, r->file_bytes);
    if (size > r->file_bytes)
        return qt_fail("%s: %" PRIu64 " bytes, but the checkpoint ends at %" PRIu64
                       " (trailing data)", r->path, size, r->file_bytes);
    *n_file = get_u32(h + 12);
    decode_header(h, meta);
    r->crc = qt_crc32c(0, h, sizeof h);
    return 0;
}

int qt_ckpt_read(const char *path, qt_ckpt_meta *meta, const qt_ckpt_section *sections, int n)
{
    QT_ASSERT(n >= 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) QT_ASSERT(strcmp(sections[i].name, sections[j].name) != 0);
    ckpt_reader r = {.path = path, .fd = open(path, O_RDONLY | O_CLOEXEC)};
    if (r.fd < 0) return qt_fail("%s: cannot open checkpoint: %s", path, strerror(errno));
    struct stat st;
    int rc = -1;
    bool *seen = qt_calloc((size_t)n, sizeof *seen);
    uint32_t n_file = 0;
    if (fstat(r.fd, &st) < 0) {
        qt_fail("%s: cannot stat checkpoint: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        qt_fail("%s: not a regular file", path);
        goto out;
    }
    if (read_header(&r, (uint64_t)st.st_size, meta, &n_file) < 0) goto out;
    r.scratch = qt_malloc((size_t)QT_MIN((uint64_t)QT_CKPT_CHUNK, r.file_bytes));
    if (read_sections(&r, n_file, sections, n, seen) < 0) goto out;
    for (int i = 0; i < n; i++) {
        if (!seen[i]) {
            qt_fail("%s: no section '%s' (the run needs it)", path, sections[i].name);
            goto out;
        }
    }
    rc = 0;
out:
    free(r.scratch);
    free(seen);
    close(r.fd);
    return rc;
}

/* ---- directory conventions ---- */
int qt_ckpt_path(char *buf, size_t cap, const char *dir, int64_t step, int rank)
{
    int k = rank < 0 ? snprintf(buf, cap, "%s/ckpt-%08" PRId64 ".qtc", dir, step)
                     : snprintf(buf, cap, "%s/ckpt-%08" PRId64 "-r%d.qtc", dir, step, rank);
    if (k < 0 || (size_t)k >= cap) return qt_fail("%s: checkpoint path too long", dir);
    return 0;
}

int qt_ckpt_mkdir(const char *dir)
{
    if (!dir[0]) return qt_fail("checkpoint directory: empty path");
    char *p = strdup(dir);
    QT_ASSERT(p);
    int rc = 0;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        struct stat st;
        if (mkdir(p, 0755) < 0 && !(errno == EEXIST && stat(p, &st) == 0 && S_ISDIR(st.st_mode))) {
            rc = qt_fail("%s: cannot create checkpoint directory: %s: %s", dir, p, strerror(errno));
            break;
        }
        *c = saved;
        if (saved == '\0') break;
    }
    free(p);
    return rc;
}

/* Parses "<digits>" at s into *v; returns the first character after them, or NULL when
 * there are none or too many (more than 18 digits cannot be an int64 step). */
static const char *parse_digits(const char *s, int64_t *v)
{
    int64_t x = 0;
    int n = 0;
    for (; *s >= '0' && *s <= '9'; s++, n++) {
        if (n == 18) return NULL;
        x = x * 10 + (*s - '0');
    }
    if (n == 0) return NULL;
    *v = x;
    return s;
}

/* Recognises the names qt_ckpt_path makes, ckpt-<step>.qtc and ckpt-<step>-r<rank>.qtc,
 * and either with ".tmp.<pid>" after. The step must be spelt as qt_ckpt_path spells it
 * (8 digits, more only without a leading zero), so a name found maps back to its file. */
static bool parse_name(const char *name, int64_t *step, bool *is_main)
{
    if (strncmp(name, "ckpt-", 5) != 0) return false;
    const char *s = parse_digits(name + 5, step);
    if (!s) return false;
    ptrdiff_t digits = s - (name + 5);
    if (digits < 8 || (digits > 8 && name[5] == '0')) return false;
    int64_t rank = -1;
    if (s[0] == '-' && s[1] == 'r' && !(s = parse_digits(s + 2, &rank))) return false;
    if (strncmp(s, ".qtc", 4) != 0) return false;
    s += 4;
    int64_t pid;
    bool tmp = strncmp(s, ".tmp.", 5) == 0;
    if (tmp && !(s = parse_digits(s + 5, &pid))) return false;
    if (*s != '\0') return false;
    *is_main = rank < 0 && !tmp;
    return true;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* All main-file steps in dir, ascending, in *steps (caller frees). Returns the count, 0
 * for a missing directory, -1 on error. */
static int list_main_steps(const char *dir, int64_t **steps)
{
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return qt_fail("%s: cannot list checkpoint directory: %s", dir, strerror(errno));
    }
    int count = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t step;
        bool is_main;
        if (!parse_name(e->d_name, &step, &is_main) || !is_main) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = qt_malloc((size_t)cap * sizeof *grown);
            if (count) memcpy(grown, *steps, (size_t)count * sizeof *grown);
            free(*steps);
            *steps = grown;
        }
        (*steps)[count++] = step;
    }
    closedir(d);
    if (count) qsort(*steps, (size_t)count, sizeof **steps, compare_i64);
    return count;
}

int qt_ckpt_list(const char *dir, int64_t *steps, int cap)
{
    int64_t *all;
    int count = list_main_steps(dir, &all);
    if (count < 0) return -1;
    int k = QT_MIN(count, QT_MAX(cap, 0));
    if (k) memcpy(steps, all + (count - k), (size_t)k * sizeof *steps);
    free(all);
    return k;
}

int qt_ckpt_latest(const char *dir, char *path, size_t cap, int64_t *step)
{
    int64_t newest;
    int k = qt_ckpt_list(dir, &newest, 1);
    if (k <= 0) return k < 0 ? -1 : 1;
    if (qt_ckpt_path(path, cap, dir, newest, -1) < 0) return -1;
    *step = newest;
    return 0;
}

int qt_ckpt_prune(const char *dir, int keep)
{
    if (keep <= 0) return 0;
    int64_t *steps;
    int count = list_main_steps(dir, &steps);
    if (count <= keep) {
        free(steps);
        return count < 0 ? -1 : 0;
    }
    int64_t oldest_kept = steps[count - keep];
    free(steps);
    DIR *d = opendir(dir);
    if (!d) return qt_fail("%s: cannot list checkpoint directory: %s", dir, strerror(errno));
    int removed = 0, rc = 0;
    size_t cap = strlen(dir) + 300;
    char *path = qt_malloc(cap);
    for (struct dirent *e; (e = readdir(d));) {
        int64_t step;
        bool is_main;
        if (!parse_name(e->d_name, &step, &is_main) || step >= oldest_kept) continue;
        snprintf(path, cap, "%s/%s", dir, e->d_name);
        if (unlink(path) < 0 && errno != ENOENT) {
            rc = qt_fail("%s: cannot remove old checkpoint: %s", path, strerror(errno));
            break;
        }
        removed++;
    }
    closedir(d);
    free(path);
    return rc < 0 ? rc : removed;
}
