/* htk.c — HTK feature headers, SCP lists, label lists and MLFs (see htk.h).
 *
 * Every parser reads a byte range that need not be NUL-terminated (fuzz targets feed
 * raw bytes), bounds every copy, and reports the first problem as "PATH:LINE: what".
 */
#include "data/htk.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"

/* ---- lines and tokens --------------------------------------------------------------- */

typedef struct {
    const char *p, *end;
    int line;
} line_iter;

/* Next line without its "\n" / "\r\n", trimmed of surrounding blanks. */
static bool next_line(line_iter *it, const char **s, size_t *len)
{
    if (it->p >= it->end) return false;
    const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
    const char *e = nl ? nl : it->end;
    const char *b = it->p;
    it->p = nl ? nl + 1 : it->end;
    it->line++;
    while (b < e && (*b == ' ' || *b == '\t')) b++;
    while (e > b && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
    *s = b;
    *len = (size_t)(e - b);
    return true;
}

/* Splits a line copy into at most `max` blank-separated tokens; returns the count. */
static int tokenize(char *buf, char **tok, int max)
{
    int n = 0;
    for (char *p = buf; *p && n < max;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        tok[n++] = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static bool parse_i64(const char *s, int64_t *v)
{
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end) return false;
    *v = x;
    return true;
}

void qt_htk_key(const char *name, size_t len, char *out, size_t cap)
{
    const char *b = name, *e = name + len;
    for (const char *p = name; p < e; p++)
        if (*p == '/' || *p == '\\') b = p + 1;
    const char *dot = NULL;
    for (const char *p = b; p < e; p++)
        if (*p == '.') dot = p;
    if (dot && dot > b) e = dot;
    size_t n = QT_MIN((size_t)(e - b), cap - 1);
    memcpy(out, b, n);
    out[n] = '\0';
}

static char *dup_range(const char *s, size_t n)
{
    char *d = qt_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- feature headers ---------------------------------------------------------------- */

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

enum {
    HTK_WAVEFORM = 0, HTK_IREFC = 5, HTK_DISCRETE = 10, HTK_ANON = 12,
    HTK_C = 002000, HTK_K = 010000, HTK_V = 040000
};

int qt_htk_parse_header(const uint8_t *b, size_t n, uint64_t file_bytes, const char *path,
                        qt_htk_header *h, char *err, size_t err_len)
{
    if (n < QT_HTK_HEADER_BYTES) {
        snprintf(err, err_len, "%s: %zu bytes: too short for an HTK header", path, n);
        return -1;
    }
    h->n_samples = (int32_t)be32(b);
    h->samp_period = (int32_t)be32(b + 4);
    h->samp_size = (int16_t)((b[8] << 8) | b[9]);
    h->parm_kind = (b[10] << 8) | b[11];
    int base = h->parm_kind & 077;
    const char *why = NULL;
    if (h->parm_kind & HTK_C) why = "has the compressed (_C) qualifier: not supported, write uncompressed features";
    else if (h->parm_kind & HTK_K) why = "has the CRC (_K) qualifier: not supported";
    else if (h->parm_kind & HTK_V) why = "has the VQ (_V) qualifier: not supported";
    else if (base == HTK_WAVEFORM || base == HTK_IREFC || base == HTK_DISCRETE || base > HTK_ANON)
        why = "is not a float feature kind (waveform, IREFC, DISCRETE or unknown)";
    if (why) {
        snprintf(err, err_len, "%s: parameter kind 0%o %s", path, (unsigned)h->parm_kind, why);
        return -1;
    }
    if (h->n_samples <= 0 || h->samp_period <= 0 || h->samp_size <= 0 || h->samp_size % 4) {
        snprintf(err, err_len,
                 "%s: bad HTK header: %d frames, period %d, %d bytes per frame (not a positive "
                 "multiple of 4)", path, h->n_samples, h->samp_period, h->samp_size);
        return -1;
    }
    uint64_t want = QT_HTK_HEADER_BYTES + (uint64_t)h->n_samples * (uint64_t)h->samp_size;
    if (want != file_bytes) {
        snprintf(err, err_len,
                 "%s: header says %d frames x %d bytes (%llu bytes with the header) but the file "
                 "has %llu bytes", path, h->n_samples, h->samp_size, (unsigned long long)want,
                 (unsigned long long)file_bytes);
        return -1;
    }
    return 0;
}

void qt_htk_decode_floats(const uint8_t *be, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = be32(be + 4 * i);
        memcpy(&out[i], &u, 4);
    }
}

/* ---- label lists -------------------------------------------------------------------- */

static int cmp_names(const void *a, const void *b, void *arg)
{
    char **names = arg;
    return strcmp(names[*(const int *)a], names[*(const int *)b]);
}

int qt_label_list_parse(const char *text, size_t n, const char *path, qt_label_list *out,
                        char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    line_iter it = {text, text + n, 0};
    const char *s;
    size_t len;
    int cap = 0;
    while (next_line(&it, &s, &len)) {
        if (len == 0) continue;
        if (memchr(s, ' ', len) || memchr(s, '\t', len) || memchr(s, '\0', len)) {
            snprintf(err, err_len, "%s:%d: a label name must be one word", path, it.line);
            qt_label_list_free(out);
            return -1;
        }
        if (out->n == cap) {
            cap = QT_MAX(cap * 2, 64);
            char **nn = qt_malloc((size_t)cap * sizeof *nn);
            if (out->n) memcpy(nn, out->names, (size_t)out->n * sizeof *nn);
            free(out->names);
            out->names = nn;
        }
        out->names[out->n++] = dup_range(s, len);
    }
    if (out->n == 0) {
        snprintf(err, err_len, "%s: no labels", path);
        return -1;
    }
    out->sorted = qt_malloc((size_t)out->n * sizeof(int));
    for (int i = 0; i < out->n; i++) out->sorted[i] = i;
    qsort_r(out->sorted, (size_t)out->n, sizeof(int), cmp_names, out->names);
    for (int i = 1; i < out->n; i++) {
        if (strcmp(out->names[out->sorted[i]], out->names[out->sorted[i - 1]]) == 0) {
            snprintf(err, err_len, "%s: label '%s' listed twice", path, out->names[out->sorted[i]]);
            qt_label_list_free(out);
            return -1;
        }
    }
    return 0;
}

int qt_label_list_find(const qt_label_list *l, const char *name)
{
    int lo = 0, hi = l->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, l->names[l->sorted[mid]]);
        if (c == 0) return l->sorted[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

void qt_label_list_free(qt_label_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->sorted);
    memset(l, 0, sizeof *l);
}

/* ---- SCP ---------------------------------------------------------------------------- */

/* "first,last" with 0 <= first <= last. */
static int parse_range(const char *s, size_t n, int64_t *first, int64_t *last)
{
    char range[64];
    if (n == 0 || n >= sizeof range) return -1;
    memcpy(range, s, n);
    range[n] = '\0';
    char *comma = strchr(range, ',');
    if (!comma) return -1;
    *comma = '\0';
    if (!parse_i64(range, first) || !parse_i64(comma + 1, last)) return -1;
    return (*first >= 0 && *last >= *first) ? 0 : -1;
}

int qt_scp_parse(const char *text, size_t n, const char *path, qt_scp *out, char *err,
                 size_t err_len)
{
    memset(out, 0, sizeof *out);
    line_iter it = {text, text + n, 0};
    const char *s;
    size_t len;
    int64_t cap = 0;
    while (next_line(&it, &s, &len)) {
        if (len == 0) continue;
        if (memchr(s, '\0', len)) {
            snprintf(err, err_len, "%s:%d: NUL byte in the line", path, it.line);
            qt_scp_free(out);
            return -1;
        }
        const char *eq = memchr(s, '=', len);
        const char *logical = s, *phys = eq ? eq + 1 : s;
        size_t llen = eq ? (size_t)(eq - s) : len, plen = len - (size_t)(phys - s);
        int64_t first = -1, last = -1;
        if (plen > 0 && phys[plen - 1] == ']') {
            const char *open = NULL;
            for (const char *p = phys; p < phys + plen; p++)
                if (*p == '[') open = p;
            if (!open || parse_range(open + 1, (size_t)(phys + plen - 1 - open - 1), &first, &last) < 0) {
                snprintf(err, err_len, "%s:%d: bad frame range: expected file[first,last]", path, it.line);
                qt_scp_free(out);
                return -1;
            }
            plen = (size_t)(open - phys);
        }
        if (llen == 0 || plen == 0) {
            snprintf(err, err_len, "%s:%d: empty file name", path, it.line);
            qt_scp_free(out);
            return -1;
        }
        if (out->n == cap) {
            cap = QT_MAX(cap * 2, 256);
            qt_scp_entry *e = qt_malloc((size_t)cap * sizeof *e);
            if (out->n) memcpy(e, out->entries, (size_t)out->n * sizeof *e);
            free(out->entries);
            out->entries = e;
        }
        qt_scp_entry *e = &out->entries[out->n++];
        char key[1024];
        qt_htk_key(logical, llen, key, sizeof key);
        e->key = dup_range(key, strlen(key));
        e->path = dup_range(phys, plen);
        e->first = first;
        e->last = last;
    }
    if (out->n == 0) {
        snprintf(err, err_len, "%s: no feature files listed", path);
        return -1;
    }
    return 0;
}

void qt_scp_free(qt_scp *s)
{
    for (int64_t i = 0; i < s->n; i++) {
        free(s->entries[i].key);
        free(s->entries[i].path);
    }
    free(s->entries);
    memset(s, 0, sizeof *s);
}

/* ---- MLF ---------------------------------------------------------------------------- */

static int cmp_entries(const void *a, const void *b)
{
    return strcmp(((const qt_mlf_entry *)a)->key, ((const qt_mlf_entry *)b)->key);
}

static int mlf_fail(qt_mlf *m, char *err, size_t err_len, const char *path, int line, const char *what,
                    const char *arg)
{
    snprintf(err, err_len, "%s:%d: %s%s%s%s", path, line, what, arg ? " '" : "", arg ? arg : "",
             arg ? "'" : "");
    qt_mlf_free(m);
    return -1;
}

int qt_mlf_parse(const char *text, size_t n, const char *path, const qt_label_list *labels,
                 qt_mlf *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    line_iter it = {text, text + n, 0};
    const char *s;
    size_t len;
    bool header = false, inside = false;
    int64_t cap_e = 0, cap_s = 0;
    char buf[1024];
    while (next_line(&it, &s, &len)) {
        if (len == 0) continue;
        if (memchr(s, '\0', len)) return mlf_fail(out, err, err_len, path, it.line, "NUL byte in the line", NULL);
        if (!header) {
            if (len != 7 || memcmp(s, "#!MLF!#", 7) != 0)
                return mlf_fail(out, err, err_len, path, it.line, "not an MLF: the first line must be #!MLF!#", NULL);
            header = true;
            continue;
        }
        if (len >= sizeof buf) return mlf_fail(out, err, err_len, path, it.line, "line too long", NULL);
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (!inside) {
            char *close = len > 1 && buf[0] == '"' ? strchr(buf + 1, '"') : NULL;
            if (!close) return mlf_fail(out, err, err_len, path, it.line, "expected a quoted label file name, got", buf);
            char *rest = close + 1;
            rest += strspn(rest, " \t");
            if (*rest) return mlf_fail(out, err, err_len, path, it.line,
                                       "label file redirection (-> / =>) is not supported:", buf);
            if (out->n_entries == cap_e) {
                cap_e = QT_MAX(cap_e * 2, 256);
                qt_mlf_entry *e = qt_malloc((size_t)cap_e * sizeof *e);
                if (out->n_entries) memcpy(e, out->entries, (size_t)out->n_entries * sizeof *e);
                free(out->entries);
                out->entries = e;
            }
            char key[1024];
            qt_htk_key(buf + 1, (size_t)(close - buf - 1), key, sizeof key);
            qt_mlf_entry *e = &out->entries[out->n_entries++];
            e->key = dup_range(key, strlen(key));
            e->first_seg = out->n_segs;
            e->n_segs = 0;
            e->line = it.line;
            inside = true;
            continue;
        }
        if (strcmp(buf, ".") == 0) {
            inside = false;
            continue;
        }
        if (strcmp(buf, "///") == 0)
            return mlf_fail(out, err, err_len, path, it.line, "alternative transcriptions (///) are not supported", NULL);
        char *tok[4];
        int nt = tokenize(buf, tok, 4);
        int64_t a, b;
        if (nt < 3 || !parse_i64(tok[0], &a) || !parse_i64(tok[1], &b))
            return mlf_fail(out, err, err_len, path, it.line,
                            "expected 'start end label' (frame labels need times), got", s[0] ? tok[0] : "");
        /* The bound keeps the frame arithmetic far from overflow (10^15 x 100 ns = 3 years). */
        if (a < 0 || b < a || b > 1000000000000000LL)
            return mlf_fail(out, err, err_len, path, it.line, "times must satisfy 0 <= start <= end <= 10^15", NULL);
        int label = qt_label_list_find(labels, tok[2]);
        if (label < 0) return mlf_fail(out, err, err_len, path, it.line, "label not in the label list:", tok[2]);
        if (out->n_segs == cap_s) {
            cap_s = QT_MAX(cap_s * 2, 1024);
            qt_mlf_segment *g = qt_malloc((size_t)cap_s * sizeof *g);
            if (out->n_segs) memcpy(g, out->segs, (size_t)out->n_segs * sizeof *g);
            free(out->segs);
            out->segs = g;
        }
        out->segs[out->n_segs++] = (qt_mlf_segment){a, b, label};
        out->entries[out->n_entries - 1].n_segs++;
    }
    if (!header) return mlf_fail(out, err, err_len, path, it.line, "empty file: expected #!MLF!#", NULL);
    if (inside) {
        char what[96];
        snprintf(what, sizeof what, "the entry at line %d has no '.' terminator", out->entries[out->n_entries - 1].line);
        return mlf_fail(out, err, err_len, path, it.line, what, NULL);
    }
    if (out->n_entries > 1) qsort(out->entries, (size_t)out->n_entries, sizeof *out->entries, cmp_entries);
    for (int64_t i = 1; i < out->n_entries; i++)
        if (strcmp(out->entries[i].key, out->entries[i - 1].key) == 0)
            return mlf_fail(out, err, err_len, path, out->entries[i].line, "duplicate entry for", out->entries[i].key);
    return 0;
}

const qt_mlf_entry *qt_mlf_find(const qt_mlf *m, const char *key)
{
    int64_t lo = 0, hi = m->n_entries - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        int c = strcmp(key, m->entries[mid].key);
        if (c == 0) return &m->entries[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int qt_mlf_frame_labels(const qt_mlf *m, const qt_mlf_entry *e, const char *mlf_path,
                        int64_t n_frames, int32_t period, int32_t *y, char *err, size_t err_len)
{
    int64_t covered = 0;
    for (int64_t k = 0; k < e->n_segs; k++) {
        const qt_mlf_segment *g = &m->segs[e->first_seg + k];
        int64_t a = (g->start + period / 2) / period, b = (g->end + period / 2) / period;
        if (a != covered) {
            snprintf(err, err_len, "%s: entry '%s' (line %d): segment %lld %s at frame %lld, expected %lld",
                     mlf_path, e->key, e->line, (long long)k + 1, a < covered ? "overlaps: starts" : "leaves a gap: starts",
                     (long long)a, (long long)covered);
            return -1;
        }
        if (b > n_frames + 2) {
            snprintf(err, err_len, "%s: entry '%s' (line %d): segment %lld ends at frame %lld, past the %lld frames",
                     mlf_path, e->key, e->line, (long long)k + 1, (long long)b, (long long)n_frames);
            return -1;
        }
        b = QT_MIN(b, n_frames);
        for (int64_t t = a; t < b; t++) y[t] = g->label;
        covered = QT_MAX(b, covered);
    }
    if (covered != n_frames) {
        snprintf(err, err_len, "%s: entry '%s' (line %d): frames %lld..%lld have no label",
                 mlf_path, e->key, e->line, (long long)covered, (long long)n_frames - 1);
        return -1;
    }
    return 0;
}

void qt_mlf_free(qt_mlf *m)
{
    for (int64_t i = 0; i < m->n_entries; i++) free(m->entries[i].key);
    free(m->entries);
    free(m->segs);
    memset(m, 0, sizeof *m);
}
