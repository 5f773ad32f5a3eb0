/* checkpoint.h — the checkpoint container: one self-checking file per save, written
 * atomically, plus the directory conventions (naming, latest, pruning).
 *
 * File format, version 1 (integers little-endian; payloads are the caller's bytes as they
 * are in memory, i.e. native little-endian floats on every host qtrain supports):
 *   header, 104 bytes:
 *     0 magic "QTCKPT1\0"   8 u32 version    12 u32 n_sections   16 u64 file_bytes
 *    24 u64 config_hash    32 i32 world      36 i32 rank         40 i64 step
 *    48 i64 epoch          56 i64 cursor     64 u64 rng[4]       96 u32 reserved (0)
 *   100 u32 CRC-32C of bytes 0..99 (the header checks itself, so its lengths can be
 *       trusted before the rest of the file is read)
 *   n_sections times: char name[32] (NUL-padded, 1..31 chars), u64 bytes, payload, zero
 *       padding to a multiple of 8 (payloads stay 8-byte aligned in the file)
 *   trailer: u32 CRC-32C of every byte before it
 *
 * Invariants:
 * - A file at a checkpoint path is always complete: qt_ckpt_write writes PATH.tmp.<pid>,
 *   fsyncs it, renames it over PATH and fsyncs the directory, so a crash at any point
 *   leaves the old file or the new one, never a mix; on failure the temp file is removed.
 * - The reader never allocates from a length it read: lengths are checked against the
 *   file size, payloads land in the caller's buffers of the caller's sizes.
 * - Every refusal is one line naming the path and the problem.
 *
 * Directory layout (DIR = [train] checkpoint):
 *   DIR/ckpt-<step>.qtc        the main file (params, buffers, optimizer state, meta), rank 0
 *   DIR/ckpt-<step>-r<R>.qtc   per-rank state (error-feedback residuals) of rank R
 * (<step> zero-padded to 8 digits so `ls` sorts them; other spellings are not ours.)
 * The main file is the commit record: every rank writes its -r file first, then (after a
 * barrier) rank 0 writes the main file. A step counts as saved only once its main file
 * exists, so qt_ckpt_latest looks at main files only and pruning never touches files newer
 * than the oldest kept main file (another rank may be writing them).
 */
#ifndef QT_CHECKPOINT_H
#define QT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define QT_CKPT_VERSION 1
#define QT_CKPT_NAME_MAX 31 /* longest section name */

/* What a checkpoint says about the run it came from. */
typedef struct {
    uint64_t config_hash; /* hash of the settings that must match on resume */
    int32_t world, rank;  /* world size and the writer's rank */
    int64_t step;         /* optimizer steps completed */
    int64_t epoch;        /* current epoch (0-based) */
    int64_t cursor;       /* steps already taken within that epoch (the data position) */
    uint64_t rng[4];      /* RNG state block (seeds, counters: the caller's layout) */
} qt_ckpt_meta;

/* A named byte range. Writing reads data[0..bytes); reading fills it and requires the
 * file's section to hold exactly `bytes` bytes. */
typedef struct {
    const char *name; /* 1..QT_CKPT_NAME_MAX chars, unique within a file */
    void *data;
    size_t bytes;
} qt_ckpt_section;

/* Writes meta and the n sections (in this order) to `path` atomically (see above). The
 * section names are the caller's constants: empty, too long or duplicate names are an
 * internal error. Returns 0, or -1 after one line "PATH: cannot write checkpoint: ..."
 * (then the previous file at PATH, if any, is untouched and no temp file remains). */
int qt_ckpt_write(const char *path, const qt_ckpt_meta *meta, const qt_ckpt_section *sections,
                  int n);

/* Reads `path`: fills *meta and every listed section (in any order; sections of the file
 * not listed are checked and skipped, so an evaluation can load "params" alone). Refuses,
 * with one line and -1, a file that is not a qtrain checkpoint, has another version, is
 * truncated or corrupted (checksum), lacks a listed section or holds a different size for
 * one ("PATH: section 'params' holds N bytes, the model needs M"). A corrupted length
 * field is reported as corruption, not as a size mismatch. On failure the contents of the
 * sections' buffers and of *meta are unspecified. Comparing the meta (config hash, world
 * size) with the current run is the caller's job. */
int qt_ckpt_read(const char *path, qt_ckpt_meta *meta, const qt_ckpt_section *sections, int n);

/* Writes "DIR/ckpt-<step>.qtc" (rank < 0) or "DIR/ckpt-<step>-r<rank>.qtc" into buf.
 * Returns 0, or -1 with "DIR: checkpoint path too long" when it does not fit in cap. */
int qt_ckpt_path(char *buf, size_t cap, const char *dir, int64_t step, int rank);

/* Creates dir and its missing parents (mkdir -p). 0, or -1 with one line. */
int qt_ckpt_mkdir(const char *dir);

/* The newest main checkpoint in dir (by step, from the file names): writes its path and
 * step. Returns 0 when found, 1 when there is none (or dir does not exist), -1 on error
 * (one line). Temp files, per-rank files and other names are ignored. */
int qt_ckpt_latest(const char *dir, char *path, size_t cap, int64_t *step);

/* Steps of the main checkpoints in dir, ascending: writes the newest min(cap, count) of
 * them and returns how many it wrote (0 for a missing dir), or -1 on error. Lets a caller
 * fall back to an older checkpoint when the newest is refused. */
int qt_ckpt_list(const char *dir, int64_t *steps, int cap);

/* Keeps the newest `keep` main checkpoints (keep <= 0: keeps everything): removes older
 * main files, the per-rank files and leftover temp files of steps older than the oldest
 * kept one. Files of newer steps are never touched. Returns the number of files removed,
 * or -1 on error (one line). */
int qt_ckpt_prune(const char *dir, int keep);

/* CRC-32C (Castagnoli, reflected 0x82F63B78, init and final xor ~0): qt_crc32c(0, d, n) is
 * the standard value (0xE3069283 for "123456789"); qt_crc32c(qt_crc32c(0, a, na), b, nb)
 * continues over a then b. Uses the SSE4.2 instruction when compiled for it. */
uint32_t qt_crc32c(uint32_t crc, const void *data, size_t n);
/* The same function without special instructions (slice-by-8 tables), for any host. */
uint32_t qt_crc32c_portable(uint32_t crc, const void *data, size_t n);

#endif
