/* elias.c — QSGD's Elias stream of the levels (the paper's §3.2 encoding, bucketed).
 *
 * After the scale array (fixed.c), one MSB-first bit stream per lane (quantizer.h: one
 * lane for messages below 64K elements, four above): for each element of the lane with a
 * non-zero level, in index order,
 *     omega(gap)  sign bit (1 = negative)  omega(|level|)
 * where positions count from 1 at the lane's first element and gap = position - previous
 * position (the first gap is the first position itself); then a terminating
 * omega(lane length + 1 - last position), the gap that lands one past the lane's end;
 * then zero bits to a byte. Zeros are never sent. The bucket of an element follows from
 * its position, so the stream carries no per-bucket markers (the paper's 32-bit norm per
 * vector is the scale array).
 */
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/qt.h"
#include "quant/quantizer.h"

/* Writes one non-zero level v that lies `gap` positions after the previous one. */
static void put_level_slow(qt_bitwriter *bw, uint64_t gap, int v)
{
    uint64_t gc, lc;
    int gl = qt_omega_code(gap, &gc);
    int ll = qt_omega_code((uint64_t)(v < 0 ? -v : v), &lc);
    qt_bw_put_long(bw, gc, gl);
    qt_bw_put(bw, v < 0, 1);
    qt_bw_put_long(bw, lc, ll);
}

/* Small-value tables: the code of "gap 1, sign, level" for each level in [-tab, tab]
 * (ll: its length), omega codes of gaps < 256. A code is then gap code << (ll - 1) | lc,
 * at most 14 + 15 bits. */
enum { LTAB = 255, GTAB = 256 };

void qt_elias_enc_init(qt_elias_enc *e, const qt_wire *w)
{
    const int tab = QT_MIN(w->s, (int)LTAB);
    e->tab = tab;
    e->s = w->s;
    e->last = 0;
    e->bits = 0;
    for (int v = -tab; v <= tab; v++) {
        uint64_t c = 0;
        int l = v ? qt_omega_code((uint64_t)(v < 0 ? -v : v), &c) : 0;
        e->lc[v + tab] = v ? (uint32_t)(((uint64_t)(v < 0) << l) | c) : 0;
        e->ll[v + tab] = (uint8_t)(v ? l + 2 : 1); /* "0" gap + sign + level */
        e->llz[v + tab] = v ? (uint32_t)(l + 2) : 0;
    }
    for (int g = 1; g < GTAB; g++) {
        uint64_t c;
        e->gl[g] = (uint8_t)qt_omega_code((uint64_t)g, &c);
        e->gc[g] = (uint32_t)c;
    }
    e->gl[0] = 1;
    e->gc[0] = 0;
}

/* Bit j set iff q[j] != 0, for cnt <= 64 levels. */
static inline uint64_t nonzero_mask(const int16_t *q, size_t cnt)
{
#if defined(__AVX512BW__)
    if (cnt == 64) {
        __m512i a = _mm512_loadu_si512(q), b = _mm512_loadu_si512(q + 32);
        return (uint64_t)_mm512_test_epi16_mask(a, a) |
               (uint64_t)_mm512_test_epi16_mask(b, b) << 32;
    }
#endif
    uint64_t m = 0;
    for (size_t j = 0; j < cnt; j++) m |= (uint64_t)(q[j] != 0) << j;
    return m;
}

/* Blocks with at least this many non-zeros of 64 go run by run (below). */
enum { DENSE_BLOCK = 40 };

/* The lowest run of consecutive set bits of mask (!= 0): its first bit and length. */
static inline int next_run(uint64_t mask, int *len)
{
    int st = __builtin_ctzll(mask);
    uint64_t m = ~(mask >> st);
    *len = m ? __builtin_ctzll(m) : 64 - st;
    return st;
}

static inline uint64_t clear_run(uint64_t mask, int st, int len)
{
    return st + len >= 64 ? 0 : mask & (~0ull << (st + len));
}

/* Both passes walk the non-zeros of 64-level blocks through a bit mask: zeros cost
 * nothing and no branch depends on whether a level is zero. When every level has a
 * table code (s <= 255), dense blocks go run by run: inside a run of non-zeros every gap
 * is 1, whose code ("0") the level table's codes already start with. */
void qt_elias_count(qt_elias_enc *e, const int16_t *q, size_t i0, size_t len)
{
    const int tab = e->tab;
    uint64_t last = e->last, bits = 0;
    for (size_t base = 0; base < len; base += 64) {
        uint64_t mask = nonzero_mask(q + base, QT_MIN((size_t)64, len - base));
        if (tab == e->s && len - base >= 64 && __builtin_popcountll(mask) >= DENSE_BLOCK) {
            /* every non-zero as if its gap were 1 (a vectorized sum over the block),
             * then each run's first non-zero's longer gap code */
            const int16_t *qb = q + base;
            uint32_t rb = 0;
            for (int k = 0; k < 64; k++) rb += e->llz[qb[k] + tab];
            bits += rb;
            while (mask) {
                int r, st = next_run(mask, &r);
                mask = clear_run(mask, st, r);
                uint64_t pos = i0 + base + (size_t)st + 1, gap = pos - last;
                bits += (uint64_t)(gap < GTAB ? e->gl[gap] : qt_omega_len(gap)) - 1;
                last = pos + (uint64_t)r - 1;
            }
            continue;
        }
        while (mask) {
            size_t j = base + (size_t)__builtin_ctzll(mask);
            mask &= mask - 1;
            int v = q[j];
            uint64_t pos = i0 + j + 1, gap = pos - last;
            last = pos;
            if (gap < GTAB && v <= tab && v >= -tab)
                bits += (uint64_t)e->gl[gap] + e->ll[v + tab] - 1;
            else
                bits += (uint64_t)qt_omega_len(gap) + 1 +
                        (uint64_t)qt_omega_len((uint64_t)(v < 0 ? -v : v));
        }
    }
    e->last = last;
    e->bits += bits;
}

void qt_elias_lane_begin(qt_elias_enc *e, size_t i0)
{
    e->last = i0;
    e->bits = 0;
}

uint64_t qt_elias_lane_bits(const qt_elias_enc *e, size_t i1)
{
    return e->bits + (uint64_t)qt_omega_len((uint64_t)i1 + 1 - e->last);
}

/* Writes non-zero level v, gap positions after the previous one, to the local writer b
 * (bw: the caller's, for the slow path, which takes the writer by pointer). fast: every
 * level is a table level and 8 bytes fit (no end check). */
static inline __attribute__((always_inline)) void
put_level(const qt_elias_enc *e, qt_bitwriter *b, qt_bitwriter *bw, uint64_t gap, int v,
          bool fast)
{
    const int tab = e->tab;
    if (__builtin_expect(gap >= GTAB || (!fast && (v > tab || v < -tab)), 0)) {
        *bw = *b;
        put_level_slow(bw, gap, v);
        *b = *bw;
        return;
    }
    const int l1 = e->ll[v + tab];
    const uint64_t code = ((uint64_t)e->gc[gap] << (l1 - 1)) | e->lc[v + tab];
    if (fast)
        qt_bw_put_fast(b, code, e->gl[gap] + l1 - 1);
    else
        qt_bw_put(b, code, e->gl[gap] + l1 - 1);
}

/* The non-zeros of one 64-level block at q[base..], one by one; returns the last position. */
static inline __attribute__((always_inline)) uint64_t
put_block(const qt_elias_enc *e, qt_bitwriter *b, qt_bitwriter *bw, const int16_t *q,
          size_t i0, size_t base, uint64_t mask, uint64_t last, bool fast)
{
    while (mask) {
        size_t j = base + (size_t)__builtin_ctzll(mask);
        mask &= mask - 1;
        uint64_t pos = i0 + j + 1;
        put_level(e, b, bw, pos - last, q[j], fast);
        last = pos;
    }
    return last;
}

void qt_elias_write(qt_elias_enc *e, qt_bitwriter *bw, const int16_t *q, size_t i0, size_t len)
{
    /* The writer as a local: its byte stores could alias *bw, which would keep the bit
     * accumulator in memory (a store and reload per code on the critical path). */
    qt_bitwriter b = *bw;
    const int tab = e->tab;
    /* every level is a table level when s <= LTAB; a block of 64 table codes (gap < 256
     * and |level| <= 255: at most 14 + 1 + 14 bits each) then takes <= 232 bytes, and a
     * longer gap's code (put_level_slow, which checks for itself) comes at most once */
    const bool all_tab = tab == e->s;
    uint64_t last = e->last;
    for (size_t base = 0; base < len; base += 64) {
        uint64_t mask = nonzero_mask(q + base, QT_MIN((size_t)64, len - base));
        const bool fast = all_tab && b.end - b.p >= 240;
        if (fast && __builtin_popcountll(mask) >= DENSE_BLOCK) {
            while (mask) {
                int r, st = next_run(mask, &r);
                mask = clear_run(mask, st, r);
                const int16_t *qq = q + base + (size_t)st;
                uint64_t pos = i0 + base + (size_t)st + 1;
                put_level(e, &b, bw, pos - last, qq[0], true);
                /* gap 1: two codes (<= 16 bits each) per put */
                int k = 1;
                for (; k + 1 < r; k += 2) {
                    int a0 = qq[k] + tab, a1 = qq[k + 1] + tab, l1 = e->ll[a1];
                    qt_bw_put_fast(&b, (uint64_t)e->lc[a0] << l1 | e->lc[a1], e->ll[a0] + l1);
                }
                if (k < r) qt_bw_put_fast(&b, e->lc[qq[k] + tab], e->ll[qq[k] + tab]);
                last = pos + (uint64_t)r - 1;
            }
        } else if (fast) {
            last = put_block(e, &b, bw, q, i0, base, mask, last, true);
        } else {
            last = put_block(e, &b, bw, q, i0, base, mask, last, false);
        }
    }
    *bw = b;
    e->last = last;
}

void qt_elias_lane_finish(qt_elias_enc *e, qt_bitwriter *bw, size_t i1)
{
    uint64_t tc;
    int tl = qt_omega_code((uint64_t)i1 + 1 - e->last, &tc);
    qt_bw_put_long(bw, tc, tl);
}

/* Decoding tables over the next DTB bits: every "gap, sign, level" triple whose codes
 * fit in DTB bits (gaps up to gmax), built by enumerating the triples; 0 = decode slowly.
 * Levels above 31 and gaps above 31 never fit in 13 bits. 16 KB of 16-bit entries: 13
 * bits cover 8-bit levels up to 31 (the bulk of them under l2 scales, where Elias pays),
 * and the table stays in L1 beside the four lanes' streams. Two layouts:
 * - the interleaved loop's (win false): length | sign << 4 | level << 5 | gap << 10 (the
 *   length in the low four bits: the bit buffer's shift, on the critical path, takes the
 *   entry masked; bits 4..9 index the signed level's float in elev);
 * - the window loop's (win true, gaps up to 15): length | code << 6 | gap << 12 with
 *   code = sign | level << 1 (the length in the low six bits is the lane's shift count as
 *   it is, without a mask). */
enum { DTB = 13 };

/* Out of line: inlined into qt_elias_decode_levels, it made the window loop 14% slower
 * (measured; the enclosing function's register allocation). */
static __attribute__((noinline)) void triple_table_init(uint16_t *lut, int s, bool win)
{
    memset(lut, 0, sizeof(uint16_t) << DTB);
    for (uint64_t g = 1; qt_omega_len(g) <= DTB - 2 && (!win || g < 16); g++) {
        uint64_t gc;
        int gl = qt_omega_code(g, &gc);
        for (uint64_t a = 1; a <= (uint64_t)s && gl + 1 + qt_omega_len(a) <= DTB; a++) {
            uint64_t lc;
            int ll = qt_omega_code(a, &lc);
            int total = gl + 1 + ll;
            for (uint64_t sign = 0; sign < 2; sign++) {
                uint64_t code = (gc << (1 + ll)) | (sign << ll) | lc;
                uint32_t lo = (uint32_t)(code << (DTB - total)), span = 1u << (DTB - total);
                uint32_t e = win ? (uint32_t)total | (uint32_t)(sign | a << 1) << 6 | (uint32_t)g << 12
                                 : (uint32_t)total | (uint32_t)sign << 4 | (uint32_t)a << 5 |
                                       (uint32_t)g << 10;
                for (uint32_t j = 0; j < span; j++) lut[lo + j] = (uint16_t)e;
            }
        }
    }
}
_Static_assert(DTB <= 15 && 4 * DTB <= 56, "table entries and lookups per refill");

/* Omega table over the next OTB bits: omega(v) for v <= 255 as v | length << 9 (0 = not
 * in the table). Replaces the omega loop's mispredicted branches for long gaps (sparse
 * levels) and wide levels (8-bit); built only for messages large enough to repay its
 * 16K entries. */
enum { OTB = 14, OTAB_MIN_N = 1 << 15 };

static void omega_table_init(uint16_t *lut)
{
    memset(lut, 0, sizeof(uint16_t) << OTB);
    for (uint64_t v = 1; v <= 255; v++) {
        uint64_t c;
        int l = qt_omega_code(v, &c);
        uint32_t lo = (uint32_t)(c << (OTB - l)), span = 1u << (OTB - l);
        for (uint32_t j = 0; j < span; j++) lut[lo + j] = (uint16_t)(v | (uint64_t)l << 9);
    }
}

/* One omega code through the table when it is there and covers the code. Needs
 * OTB buffered bits (the slow path refills for itself). */
static inline int read_omega(qt_bitreader *br, const uint16_t *olut, uint64_t *v)
{
    if (!(br->buf >> 63)) {
        qt_br_skip(br, 1);
        *v = 1;
        return 0;
    }
    uint32_t e = olut ? olut[qt_br_peek(br, OTB)] : 0;
    if (e) {
        qt_br_skip(br, (int)(e >> 9));
        *v = e & 511;
        return 0;
    }
    return qt_br_omega(br, v);
}

/* What every lane's decoder reads. */
typedef struct {
    const qt_wire *w;
    const uint8_t *scales;
    const uint16_t *lut, *olut;
    const float *elev; /* elev[sign | level << 1]: the signed level (no sign branch) */
    float f, sf;
    uint64_t s;
    float *out;
} el_ctx;

/* One lane's decoder: its reader, the 1-based position of its last non-zero (the lane's
 * first element - 1 before any) and of its last element, its current bucket. */
typedef struct {
    qt_bitreader br;
    size_t len;
    uint64_t last, lend;
    size_t bend;
    float unit;
} el_lane;

/* Element i starts a new bucket: its scale. (Positions only grow within a lane.) */
static inline void el_bucket(el_lane *L, const el_ctx *c, size_t i)
{
    size_t k = i / c->w->d;
    L->bend = (k + 1) * c->w->d;
    L->unit = qt_load_f32(c->scales + 4 * k) / c->sf;
}

/* One table triple (needs DTB buffered bits); false where the next code is not in the
 * table or lands past the lane (the terminator), which el_slow then decodes. */
static inline __attribute__((always_inline)) bool el_fast(el_lane *L, const el_ctx *c)
{
    uint32_t e = c->lut[qt_br_peek(&L->br, DTB)];
    uint64_t pos = L->last + (e >> 10);
    if (__builtin_expect(!e | (pos > L->lend), 0)) return false;
    qt_br_skip(&L->br, (int)(e & 15));
    size_t i = (size_t)(pos - 1);
    if (__builtin_expect(i >= L->bend, 0)) el_bucket(L, c, i);
    c->out[i] += c->f * (c->elev[(e >> 4) & 63] * L->unit);
    L->last = pos;
    return true;
}

/* One code that el_fast left: a triple with a long gap or a wide level, or the
 * terminator. 0 (a triple added), 1 (the lane ended) or a QT_CODEC error. */
static inline __attribute__((always_inline)) int el_slow(el_lane *L, const el_ctx *c)
{
    uint64_t gap, a;
    qt_br_refill(&L->br); /* one refill serves gap, sign and level from the tables */
    if (read_omega(&L->br, c->olut, &gap) != 0) return QT_CODEC_ECORRUPT;
    uint64_t pos = L->last + gap;
    if (pos == L->lend + 1) return 1;
    if (pos > L->lend) return QT_CODEC_ECORRUPT;
    if (L->br.cnt < OTB + 1) qt_br_refill(&L->br);
    unsigned sign = (unsigned)qt_br_peek(&L->br, 1);
    qt_br_skip(&L->br, 1);
    if (read_omega(&L->br, c->olut, &a) != 0 || a > c->s) return QT_CODEC_ECORRUPT;
    /* Past the end of the bytes the reader feeds zeros: stop at the first element. */
    if (L->br.phantom && qt_br_used(&L->br) > 8 * (uint64_t)L->len) return QT_CODEC_ETRUNC;
    size_t i = (size_t)(pos - 1);
    if (i >= L->bend) el_bucket(L, c, i);
    float qv = qt_bits_f32(qt_f32_bits((float)a) ^ (uint32_t)sign << 31);
    c->out[i] += c->f * (qv * L->unit);
    L->last = pos;
    return 0;
}

/* Decodes one lane to its end; 0 or a QT_CODEC error. Zeros fed past the end of the
 * bytes decode as triples too, but only at positions inside the lane (el_fast checks),
 * each a position further: the loop ends, and the final check reports the truncation. */
static int el_lane_run(el_lane *L, const el_ctx *c)
{
    for (;;) {
        qt_br_refill(&L->br);
        if (el_fast(L, c) && el_fast(L, c) && el_fast(L, c) && el_fast(L, c)) continue;
        int rc = el_slow(L, c);
        if (rc < 0) return rc;
        if (rc == 1) return qt_br_finish(&L->br, L->len);
    }
}

/* The interleaved loop's view of a lane: its absolute bit position bp in the payload
 * (from the first lane's first byte: every lane's reader is then one shift and load
 * from the same base), the bits loaded at bp, its last position and bucket. Few fields,
 * so that four lanes' worth stays mostly in registers. */
typedef struct {
    uint64_t bp, buf, last;
    size_t bend;
    float unit;
} el_fl;

static inline el_fl el_to_fl(const el_lane *L, const uint8_t *base)
{
    return (el_fl){8 * (uint64_t)(L->br.start - base) + qt_br_used(&L->br), 0, L->last, L->bend,
                   L->unit};
}

static inline void el_from_fl(el_lane *L, const el_fl *F, const uint8_t *base)
{
    uint64_t rel = F->bp - 8 * (uint64_t)(L->br.start - base);
    if (rel == qt_br_used(&L->br)) return; /* untouched (a reader past its end stays so) */
    const uint8_t *start = L->br.start;
    qt_br_init(&L->br, start, L->len);
    L->br.p = start + rel / 8;
    if (rel % 8) {
        qt_br_refill(&L->br);
        qt_br_skip(&L->br, (int)(rel % 8));
    }
    L->last = F->last, L->bend = F->bend, L->unit = F->unit;
}

/* el_fast on the lean view: no check against the lane's end (the loop's entry condition
 * keeps every table triple inside the lane). */
static inline __attribute__((always_inline)) bool el_fast_fl(el_fl *F, const el_ctx *c)
{
    uint32_t e = c->lut[F->buf >> (64 - DTB)];
    if (__builtin_expect(!e, 0)) return false;
    F->buf <<= e & 15;
    F->bp += e & 15;
    uint64_t pos = F->last + (e >> 10);
    size_t i = (size_t)(pos - 1);
    if (__builtin_expect(i >= F->bend, 0)) {
        size_t k = i / c->w->d;
        F->bend = (k + 1) * c->w->d;
        F->unit = qt_load_f32(c->scales + 4 * k) / c->sf;
    }
    c->out[i] += c->f * (c->elev[(e >> 4) & 63] * F->unit);
    F->last = pos;
    return true;
}

static inline __attribute__((always_inline)) uint64_t el_load_fl(const uint8_t *base, uint64_t bp)
{
    uint64_t v;
    memcpy(&v, base + bp / 8, 8);
    return __builtin_bswap64(v) << (bp % 8);
}

/* Four lanes interleaved while each has 8 more bytes to load from and is more than four
 * table gaps (4 * 31 positions) from its end, so that no table triple can be its
 * terminator: one refill and four table triples per lane and iteration (4 * 13 bits of
 * the >= 57 loaded). A lane's slow code leaves the loop (every step is whole, so all
 * lanes are consistent), is decoded on its reader, and the loop resumes. Returns the
 * lane that ended (its finish checked), QT_LANES when a lane came near its end (the
 * caller finishes all lanes one by one), or a QT_CODEC error. */
static int el_lanes4(el_lane *ln, const el_ctx *c)
{
    const uint8_t *base = ln[0].br.start;
    /* each lane's end as a byte offset from base, and as a position (compared with
     * additions: a lane may be shorter than the margins) */
    uint64_t endoff[QT_LANES], lend[QT_LANES];
    for (int j = 0; j < QT_LANES; j++) {
        endoff[j] = (uint64_t)(ln[j].br.end - base);
        lend[j] = ln[j].lend;
    }
    for (;;) {
        el_fl A = el_to_fl(&ln[0], base), B = el_to_fl(&ln[1], base);
        el_fl C = el_to_fl(&ln[2], base), D = el_to_fl(&ln[3], base);
        int which = -1;
#define EL_OK(X, J) ((X).bp / 8 + 8 <= endoff[J] && (X).last + 4 * 31 <= lend[J])
#define EL_STEP(X, J) if (!el_fast_fl(&X, c)) { which = J; break; }
        while (EL_OK(A, 0) && EL_OK(B, 1) && EL_OK(C, 2) && EL_OK(D, 3)) {
            A.buf = el_load_fl(base, A.bp);
            B.buf = el_load_fl(base, B.bp);
            C.buf = el_load_fl(base, C.bp);
            D.buf = el_load_fl(base, D.bp);
            EL_STEP(A, 0) EL_STEP(B, 1) EL_STEP(C, 2) EL_STEP(D, 3)
            EL_STEP(A, 0) EL_STEP(B, 1) EL_STEP(C, 2) EL_STEP(D, 3)
            EL_STEP(A, 0) EL_STEP(B, 1) EL_STEP(C, 2) EL_STEP(D, 3)
            EL_STEP(A, 0) EL_STEP(B, 1) EL_STEP(C, 2) EL_STEP(D, 3)
        }
#undef EL_OK
#undef EL_STEP
        el_from_fl(&ln[0], &A, base), el_from_fl(&ln[1], &B, base);
        el_from_fl(&ln[2], &C, base), el_from_fl(&ln[3], &D, base);
        if (which < 0) return QT_LANES;
        int rc = el_slow(&ln[which], c);
        if (rc < 0) return rc;
        if (rc == 1) {
            rc = qt_br_finish(&ln[which].br, ln[which].len);
            return rc < 0 ? rc : which;
        }
    }
}

/* ---- dense streams: table triples into per-lane windows of codes ----
 *
 * Where many levels are non-zero (8-bit levels under l2 scales: 93%), the interleaved
 * loop above is bound by its work per triple, not by the lookup chains: a bucket check,
 * a scale, a float add into out, and four lanes' state spilled around them. Here the
 * lookup loop does only the lookups: each table triple stores its sign|level code at its
 * position in a window of EW codes per lane (zero: no triple), and a window is then added
 * to out in one vectorized pass (el_win_flush), which also clears it. Each lane is three
 * registers: the byte its bits were loaded from, the bits with a marker bit below the
 * valid ones (the marker's shift counts the bits consumed since the load: no position
 * update per triple) and its window index. Codes outside the table go through el_win_slow
 * (the lane's reader, adding to out directly); a lane's window full, or a lane near its
 * end, leaves the loop for a moment. */
enum { EW = 2048, EL_DENSE_QBITS = 6, PEND = 22 };

/* Adds the codes win[0..cnt) of elements i0.. to out and clears them: the same
 * f * (level * unit) per element as the fixed decoder (an empty code adds zero; a
 * negative level's product is the positive one's, negated, bit for bit). The lane's next
 * window of out is fetched into L2 meanwhile: the four lanes' windows lie far apart in
 * out, too many streams for the hardware prefetcher, and the lookups that fill the next
 * window leave the memory idle. */
static void el_win_flush(const el_ctx *c, uint8_t *win, size_t i0, size_t cnt)
{
    const size_t d = c->w->d;
    const float f = c->f;
    for (size_t i = i0, end = i0 + cnt; i < end;) {
        size_t k = i / d, len = QT_MIN(end, (k + 1) * d) - i, t = 0;
        const float unit = qt_load_f32(c->scales + 4 * k) / c->sf;
        uint8_t *wn = win + (i - i0);
        float *o = c->out + i;
        /* addresses, not pointers: the last window's next one lies past out */
        const uintptr_t next = (uintptr_t)o + 4 * (uintptr_t)cnt;
        for (size_t a = 0; a < len; a += 16) __builtin_prefetch((const void *)(next + 4 * a), 0, 2);
#if defined(__AVX512F__)
        /* the 32 levels' values, looked up in two registers by level */
        _Alignas(64) float val[32];
        for (int l = 0; l < 32; l++) val[l] = f * ((float)l * unit);
        const __m512 v0 = _mm512_load_ps(val), v1 = _mm512_load_ps(val + 16);
        for (; t + 16 <= len; t += 16) {
            __m128i b = _mm_loadu_si128((const __m128i *)(wn + t));
            __m512i cd = _mm512_cvtepu8_epi32(b);
            __m512 v = _mm512_permutex2var_ps(v0, _mm512_srli_epi32(cd, 1), v1);
            __m512i sg = _mm512_slli_epi32(cd, 31);
            v = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sg));
            _mm512_storeu_ps(o + t, _mm512_add_ps(_mm512_loadu_ps(o + t), v));
            _mm_storeu_si128((__m128i *)(wn + t), _mm_setzero_si128());
        }
#endif
        for (; t < len; t++) {
            uint32_t cd = wn[t] & 63u;
            float q = (float)(int32_t)(cd >> 1);
            q = (cd & 1) ? -q : q;
            o[t] += f * (q * unit);
            wn[t] = 0;
        }
        i += len;
    }
}

/* A lane between window loops: its bit position from base, its window index of the last
 * non-zero (element = w + off). */
typedef struct {
    int64_t bp, w;
} el_wpos;

/* Adds lane j's window (win + j * EW) to out and starts it again at the element after
 * the lane's last non-zero. A code that the table left (el_win_slow) may have landed that
 * non-zero past the window's end: the window then holds every triple before it (that one
 * went to out directly, and the elements between are zeros). */
static void el_win_restart(const el_ctx *c, uint8_t *win, int j, el_wpos *P, int64_t *off)
{
    const int64_t used = P->w + 1 - (int64_t)j * EW;
    el_win_flush(c, win + (size_t)j * EW, (size_t)(j * EW + *off), (size_t)QT_MIN(used, (int64_t)EW));
    *off += used;
    P->w -= used;
}

/* The lane's reader at bit position bp from base, its last position `last`. */
static void el_win_seek(el_lane *L, const uint8_t *base, int64_t bp, uint64_t last)
{
    el_fl F = {(uint64_t)bp, 0, last, L->bend, L->unit};
    el_from_fl(L, &F, base);
    L->last = last;
}

/* One code that the table left, on the lane's reader: *rc = 0 (a triple, added to out),
 * 1 (the lane ended) or a QT_CODEC error; returns the lane's new position. */
static __attribute__((noinline, cold)) el_wpos el_win_slow(el_lane *L, const el_ctx *c,
                                                          const uint8_t *base, el_wpos at,
                                                          int64_t off, int *rc)
{
    el_win_seek(L, base, at.bp, (uint64_t)(at.w + off + 1));
    *rc = el_slow(L, c);
    return (el_wpos){(int64_t)el_to_fl(L, base).bp, (int64_t)L->last - 1 - off};
}

/* Four lanes through windows, like el_lanes4 (same return values); every window is added
 * to out, and each lane's reader is where the loop left it, when this returns. */
static int el_lanes4_win(el_lane *ln, const el_ctx *c)
{
    const uint8_t *base = ln[0].br.start;
    uint16_t lut[1 << DTB];
    triple_table_init(lut, (int)c->s, true);
    _Alignas(64) uint8_t win[QT_LANES * EW];
    memset(win, 0, sizeof win);
    /* per lane: the last byte a load may start from (8 bytes inside the lane), the
     * window's element offset, the largest window index that eight more triples may
     * start from (the window's room, and the margin from the lane's end that keeps the
     * terminator out of the table: see el_lanes4) */
    const uint8_t *pend[QT_LANES];
    int64_t off[QT_LANES], lim[QT_LANES];
    el_wpos P[QT_LANES];
    enum { STEPS = 8, MARGIN = STEPS * 15 };
    _Static_assert(PEND >= 2 * 7 + 8, "two loads, each at most 7 bytes on");
    for (int j = 0; j < QT_LANES; j++) {
        pend[j] = ln[j].br.end - PEND; /* the caller checked the lanes' lengths */
        P[j].bp = (int64_t)el_to_fl(&ln[j], base).bp;
        off[j] = (int64_t)ln[j].last - (int64_t)j * EW; /* the window starts at the next element */
        P[j].w = (int64_t)ln[j].last - 1 - off[j];
        lim[j] = QT_MIN((int64_t)(j + 1) * EW - 1, (int64_t)ln[j].lend - 1 - off[j]) - MARGIN;
    }
    int rc = QT_LANES, which;
    for (;;) {
        /* each lane's bits: loaded from p, consumed since then: ctz(f) (a marker only) */
        const uint8_t *pA, *pB, *pC, *pD;
        uint64_t fA = qt_mk_start(base, (uint64_t)P[0].bp, &pA);
        uint64_t fB = qt_mk_start(base, (uint64_t)P[1].bp, &pB);
        uint64_t fC = qt_mk_start(base, (uint64_t)P[2].bp, &pC);
        uint64_t fD = qt_mk_start(base, (uint64_t)P[3].bp, &pD);
        int64_t wA = P[0].w, wB = P[1].w, wC = P[2].w, wD = P[3].w;
        which = -1;
        for (;;) {
            /* the next STEPS triples of each lane (two loads, each at most 59 bits or 7
             * bytes on) read at most 2 * 7 + 8 bytes from p, and land at most MARGIN
             * positions on */
            if (__builtin_expect(pA > pend[0], 0)) break;
            if (__builtin_expect(pB > pend[1], 0)) break;
            if (__builtin_expect(pC > pend[2], 0)) break;
            if (__builtin_expect(pD > pend[3], 0)) break;
            if (__builtin_expect(wA > lim[0], 0)) break;
            if (__builtin_expect(wB > lim[1], 0)) break;
            if (__builtin_expect(wC > lim[2], 0)) break;
            if (__builtin_expect(wD > lim[3], 0)) break;
#define EW_LOAD(F, P) F = qt_mk_next(&P, F);
#define EW_STEP(F, W, J)                                                                     \
    {                                                                                        \
        uint32_t e = lut[F >> (64 - DTB)];                                                  \
        if (__builtin_expect(!e, 0)) { which = J; break; }                                  \
        F <<= e & 63;                                                                        \
        W += e >> 12;                                                                        \
        win[W] = (uint8_t)(e >> 6);                                                         \
    }
#define EW_ROUND                                                                             \
    EW_LOAD(fA, pA) EW_LOAD(fB, pB) EW_LOAD(fC, pC) EW_LOAD(fD, pD)                          \
    EW_STEP(fA, wA, 0) EW_STEP(fB, wB, 1) EW_STEP(fC, wC, 2) EW_STEP(fD, wD, 3)              \
    EW_STEP(fA, wA, 0) EW_STEP(fB, wB, 1) EW_STEP(fC, wC, 2) EW_STEP(fD, wD, 3)              \
    EW_STEP(fA, wA, 0) EW_STEP(fB, wB, 1) EW_STEP(fC, wC, 2) EW_STEP(fD, wD, 3)              \
    EW_STEP(fA, wA, 0) EW_STEP(fB, wB, 1) EW_STEP(fC, wC, 2) EW_STEP(fD, wD, 3)
            EW_ROUND
            EW_ROUND
#undef EW_ROUND
#undef EW_STEP
#undef EW_LOAD
        }
        P[0] = (el_wpos){(int64_t)qt_mk_pos(base, pA, fA), wA};
        P[1] = (el_wpos){(int64_t)qt_mk_pos(base, pB, fB), wB};
        P[2] = (el_wpos){(int64_t)qt_mk_pos(base, pC, fC), wC};
        P[3] = (el_wpos){(int64_t)qt_mk_pos(base, pD, fD), wD};
        if (which >= 0) {
            int r = 0;
            P[which] = el_win_slow(&ln[which], c, base, P[which], off[which], &r);
            if (r == 0) continue;
            rc = r < 0 ? r : qt_br_finish(&ln[which].br, ln[which].len);
            if (rc >= 0) rc = which;
            break;
        }
        /* a lane whose window is full adds it to out and goes on; one near its end (or
         * its bytes' end) leaves the loop */
        bool go = true;
        for (int j = 0; j < QT_LANES; j++) {
            if (P[j].w <= lim[j] && base + P[j].bp / 8 <= pend[j]) continue;
            int64_t wend = (int64_t)(j + 1) * EW - 1 - MARGIN;
            if (base + P[j].bp / 8 > pend[j] || lim[j] < wend) {
                go = false;
                continue;
            }
            el_win_restart(c, win, j, &P[j], &off[j]);
            lim[j] = QT_MIN(wend, (int64_t)ln[j].lend - 1 - off[j] - MARGIN);
        }
        if (!go) break;
    }
    /* the windows' codes, and the readers where the loop left them */
    for (int j = 0; j < QT_LANES; j++) {
        el_win_restart(c, win, j, &P[j], &off[j]);
        if (j != which || rc == QT_LANES)
            el_win_seek(&ln[j], base, P[j].bp, (uint64_t)(P[j].w + off[j] + 1));
    }
    return rc;
}

int qt_elias_decode_levels(const qt_wire *w, const uint8_t *scales, const qt_lane *lanes,
                           int nlanes, float f, float *out)
{
    uint16_t lut[1 << DTB];
    triple_table_init(lut, w->s, false);
    uint16_t *olut = NULL;
    if (w->n >= OTAB_MIN_N) {
        olut = qt_malloc(sizeof(uint16_t) << OTB);
        omega_table_init(olut);
    }
    float elev[512];
    for (int v = 0; v < 256; v++) {
        elev[2 * v] = (float)v;
        elev[2 * v + 1] = -(float)v;
    }
    const el_ctx c = {w, scales, lut, olut, elev, f, (float)w->s, (uint64_t)w->s, out};
    el_lane ln[QT_LANES];
    for (int j = 0; j < nlanes; j++) {
        qt_br_init(&ln[j].br, lanes[j].bytes, lanes[j].len);
        ln[j].len = lanes[j].len;
        ln[j].last = lanes[j].i0;
        ln[j].lend = lanes[j].i1;
        ln[j].bend = lanes[j].i0; /* the first element loads its bucket's scale */
        ln[j].unit = 0.0f;
    }
    int rc = 0, ended = -1;
    if (nlanes == QT_LANES) {
        /* lanes of EL_DENSE_QBITS / 4 bits per element or more through the windows
         * (measured, 8M elements: 2-bit levels under max scales, 1.61 bits per element,
         * decode 16% faster there; 4-bit levels under l2 scales, 1.48, 6% slower) */
        size_t bytes = 0, shortest = SIZE_MAX;
        for (int j = 0; j < nlanes; j++) {
            bytes += lanes[j].len;
            shortest = QT_MIN(shortest, lanes[j].len);
        }
        bool dense = 32 * (uint64_t)bytes >= EL_DENSE_QBITS * (uint64_t)w->n && shortest >= PEND;
        rc = dense ? el_lanes4_win(ln, &c) : el_lanes4(ln, &c);
        ended = rc;
        if (rc == QT_LANES) rc = 0; /* no lane ended yet */
    }
    for (int j = 0; j < nlanes && rc >= 0; j++)
        if (j != ended) rc = el_lane_run(&ln[j], &c);
    free(olut);
    return rc < 0 ? rc : QT_CODEC_OK;
}
