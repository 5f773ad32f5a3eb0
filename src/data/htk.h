/* htk.h — parsers for the HTK speech files the AN4 recipe uses (private to src/data,
 * tests and fuzz targets): feature file headers, SCP lists, label lists and master
 * label files (MLF). All work on bytes in memory and write a one-line reason
 * ("PATH:LINE: what") into err instead of printing, so they can be fuzzed and so the
 * data set decides between failing and skipping.
 */
#ifndef QT_DATA_HTK_H
#define QT_DATA_HTK_H

#include <stddef.h>
#include <stdint.h>

/* ---- feature files: 12-byte big-endian header, then big-endian float32 frames ---- */
typedef struct {
    int32_t n_samples;    /* frames */
    int32_t samp_period;  /* 100 ns units (100000 = 10 ms) */
    int32_t samp_size;    /* bytes per frame (4 * features) */
    int32_t parm_kind;    /* base kind | qualifier bits */
} qt_htk_header;

enum { QT_HTK_HEADER_BYTES = 12 };

/* Parses and validates the header of a file of `file_bytes` bytes: positive sizes,
 * samp_size a multiple of 4, a float parameter kind (not WAVEFORM, IREFC, DISCRETE),
 * no compression (_C), CRC (_K) or VQ (_V) qualifier, and file_bytes == 12 +
 * n_samples * samp_size. `path` is only used in the message. 0 or negative. */
int qt_htk_parse_header(const uint8_t *b, size_t n, uint64_t file_bytes, const char *path,
                        qt_htk_header *h, char *err, size_t err_len);

/* Big-endian float32 -> host floats (n values). */
void qt_htk_decode_floats(const uint8_t *be, int64_t n, float *out);

/* ---- label list: one name per line (blank lines skipped); line k = class k ---- */
typedef struct {
    int n;
    char **names;         /* [n] in file order */
    int *sorted;          /* [n] indices ordered by name, for lookups */
} qt_label_list;

int qt_label_list_parse(const char *text, size_t n, const char *path, qt_label_list *out,
                        char *err, size_t err_len);
int qt_label_list_find(const qt_label_list *l, const char *name); /* class or -1 */
void qt_label_list_free(qt_label_list *l);

/* ---- SCP: "file" or "logical=physical" or "logical=physical[s,e]" (frames s..e
 * inclusive of an archive file), one per line; blank lines skipped ---- */
typedef struct {
    char *key;            /* logical name's basename without extension: the MLF key */
    char *path;           /* physical file as written */
    int64_t first, last;  /* frame range, or -1, -1 for the whole file */
} qt_scp_entry;

typedef struct {
    qt_scp_entry *entries;
    int64_t n;
} qt_scp;

int qt_scp_parse(const char *text, size_t n, const char *path, qt_scp *out, char *err,
                 size_t err_len);
void qt_scp_free(qt_scp *s);

/* ---- MLF: "#!MLF!#", then entries: a quoted label-file pattern (a star, /name.lab), lines
 * "start end label [more fields]" in 100 ns units, a "." line. Entries are keyed by the
 * pattern's basename without extension. Labels are mapped through the label list. ---- */
typedef struct {
    int64_t start, end;   /* 100 ns units, start < end */
    int32_t label;
} qt_mlf_segment;

typedef struct {
    char *key;
    int64_t first_seg, n_segs;
    int line;             /* where the entry starts, for messages */
} qt_mlf_entry;

typedef struct {
    qt_mlf_entry *entries; /* sorted by key */
    int64_t n_entries;
    qt_mlf_segment *segs;
    int64_t n_segs;
} qt_mlf;

int qt_mlf_parse(const char *text, size_t n, const char *path, const qt_label_list *labels,
                 qt_mlf *out, char *err, size_t err_len);
const qt_mlf_entry *qt_mlf_find(const qt_mlf *m, const char *key);
/* Frame labels y[0..n_frames) of an entry: frame t gets the segment with
 * round(start/period) <= t < round(end/period). Segments must be in order without
 * overlap and cover every frame; one ending up to 2 frames past n_frames is clipped
 * (alignment tools round the last segment). 0 or negative (err names the MLF line). */
int qt_mlf_frame_labels(const qt_mlf *m, const qt_mlf_entry *e, const char *mlf_path,
                        int64_t n_frames, int32_t period, int32_t *y, char *err, size_t err_len);
void qt_mlf_free(qt_mlf *m);

/* Basename of `name` without directory and extension, into out. */
void qt_htk_key(const char *name, size_t len, char *out, size_t cap);

#endif
