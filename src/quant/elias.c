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
#if defined(__AVX512BW__)
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

/* Decoding table over the next DTB bits: every "gap, sign, level" triple whose codes
 * fit in DTB bits, as length | sign << 4 | level << 5 | gap << 10 (the length in the low
 * four bits: the bit buffer's shift, on the critical path, takes the entry masked; bits
 * 4..9 index the signed level's float in elev); 0 = decode slowly. Levels above 31 and
 * gaps above 31 never fit in 13 bits. A 16 KB table of 16-bit entries: 13 bits cover
 * 8-bit levels up to 31 (the bulk of them under l2 scales, where Elias pays), and the
 * table stays in L1 beside the four lanes' streams. Built by enumerating the triples. */
enum { DTB = 13 };

static void dec_table_init(uint16_t *lut, int s)
{
    memset(lut, 0, sizeof(uint16_t) << DTB);
    for (uint64_t g = 1; qt_omega_len(g) <= DTB - 2; g++) {
        uint64_t gc;
        int gl = qt_omega_code(g, &gc);
        for (uint64_t a = 1; a <= (uint64_t)s && gl + 1 + qt_omega_len(a) <= DTB; a++) {
            uint64_t lc;
            int ll = qt_omega_code(a, &lc);
            int total = gl + 1 + ll;
            for (uint64_t sign = 0; sign < 2; sign++) {
                uint64_t code = (gc << (1 + ll)) | (sign << ll) | lc;
                uint32_t lo = (uint32_t)(code << (DTB - total)), span = 1u << (DTB - total);
                uint16_t e = (uint16_t)((uint32_t)total | (uint32_t)sign << 4 |
                                        (uint32_t)a << 5 | (uint32_t)g << 10);
                for (uint32_t j = 0; j < span; j++) lut[lo + j] = e;
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

int qt_elias_decode_levels(const qt_wire *w, const uint8_t *scales, const qt_lane *lanes,
                           int nlanes, float f, float *out)
{
    uint16_t lut[1 << DTB];
    dec_table_init(lut, w->s);
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
        rc = el_lanes4(ln, &c);
        ended = rc;
        if (rc == QT_LANES) rc = 0; /* no lane ended yet */
    }
    for (int j = 0; j < nlanes && rc >= 0; j++)
        if (j != ended) rc = el_lane_run(&ln[j], &c);
    free(olut);
    return rc < 0 ? rc : QT_CODEC_OK;
}
