/* huffman.c — canonical Huffman code of the levels, one code per message.
 *
 * Symbols: groups of g consecutive levels, symbol = sum_j (q[g*t + j] + s) * A^j with
 * A = 2s + 1 and g the largest with A^g <= 256 (s=1: g=5, s=2: 3, s=3..7: 2, s=8..127: 1).
 * One level per symbol would cost at least 1 bit per element, capping the ratio near 32x;
 * grouping lets mostly-zero levels (ECQ-SGD's regime) cost well under a bit. The last
 * group is padded with zero levels.
 * Streams (MSB-first, after the scale array; one lane below 64K elements, four above, as
 * quantizer.h lays them out): lane 0 starts with the table, for each symbol 0..A^g-1 a
 * "0" (unused) or "1" + 4 bits (code length - 1); each lane then holds the codes of the
 * groups of its elements, then zero bits to a byte.
 * Code lengths (qt_huffman_lengths, deterministic so a CUDA encoder that counts on the
 * GPU and builds the table with this function emits the same bytes): sort the used
 * symbols by (count, symbol); merge with two queues, taking the leaf queue on ties;
 * if a length exceeds 16, replace every count c by c/2 + 1 and rebuild. Codes are
 * canonical: by (length, symbol), consecutive values, as in DEFLATE.
 */
#include <stdlib.h>

#include "core/qt.h"
#include "quant/bitio.h"
#include "quant/quantizer.h"

/* HUF_TB: lookup bits of the decoder (an 8 KB table: larger ones measured slower, L1
 * being shared with the streams); multi-symbol entries for messages of at least
 * HUF_BIG_GROUPS symbols, which repay the second pass over the table. */
enum { HUF_MAXLEN = 16, HUF_MAXSYM = 256 };
enum { HUF_TB = 11, HUF_BIG_GROUPS = 1 << 16 };
/* The decoder's fast loops: four lookups per refill (>= 56 bits), and after a slow code
 * (which refills, then takes <= 16 bits) three more; the interleaved loop five per load
 * (56 bits). */
_Static_assert(4 * HUF_TB <= 56 && 3 * HUF_TB <= 56 - HUF_MAXLEN && 5 * HUF_TB <= 56,
               "lookup bits");

int qt_huffman_group(int s, int *alphabet)
{
    int a = 2 * s + 1, m = a, g = 1;
    while (m * a <= HUF_MAXSYM) {
        m *= a;
        g++;
    }
    *alphabet = m;
    return g;
}

typedef struct {
    uint64_t c;
    int sym;
} huf_leaf;

static int leaf_cmp(const void *pa, const void *pb)
{
    const huf_leaf *a = pa, *b = pb;
    if (a->c != b->c) return a->c < b->c ? -1 : 1;
    return a->sym - b->sym;
}

/* Unlimited Huffman lengths of the used symbols; returns the longest. */
static int build_lengths(const uint64_t *count, int m, uint8_t *len)
{
    huf_leaf leaf[HUF_MAXSYM];
    int u = 0;
    for (int i = 0; i < m; i++) {
        len[i] = 0;
        if (count[i]) leaf[u++] = (huf_leaf){count[i], i};
    }
    if (u == 0) return 0;
    if (u == 1) {
        len[leaf[0].sym] = 1;
        return 1;
    }
    qsort(leaf, (size_t)u, sizeof leaf[0], leaf_cmp);
    /* Nodes 0..u-1 are the sorted leaves, u.. the internal nodes in creation order
     * (non-decreasing weight), so every parent has a larger index than its children. */
    uint64_t wt[2 * HUF_MAXSYM];
    int parent[2 * HUF_MAXSYM], depth[2 * HUF_MAXSYM];
    for (int i = 0; i < u; i++) wt[i] = leaf[i].c;
    int lq = 0, iq = u, next = u;
    while (next < 2 * u - 1) {
        int pick[2];
        for (int t = 0; t < 2; t++) {
            if (lq < u && (iq >= next || wt[lq] <= wt[iq]))
                pick[t] = lq++;
            else
                pick[t] = iq++;
        }
        wt[next] = wt[pick[0]] + wt[pick[1]];
        parent[pick[0]] = parent[pick[1]] = next;
        next++;
    }
    depth[2 * u - 2] = 0;
    int maxlen = 0;
    for (int i = 2 * u - 3; i >= 0; i--) {
        depth[i] = depth[parent[i]] + 1;
        if (i < u) {
            len[leaf[i].sym] = (uint8_t)depth[i];
            if (depth[i] > maxlen) maxlen = depth[i];
        }
    }
    return maxlen;
}

void qt_huffman_lengths(const uint64_t *count, int m, uint8_t *len)
{
    uint64_t c[HUF_MAXSYM];
    memcpy(c, count, (size_t)m * sizeof c[0]);
    while (build_lengths(c, m, len) > HUF_MAXLEN)
        for (int i = 0; i < m; i++)
            if (c[i]) c[i] = c[i] / 2 + 1;
}

/* Canonical codes from lengths; first[l] = first code of length l, cnt[l] = how many. */
static void canonical(const uint8_t *len, int m, uint32_t *code, uint32_t *first, uint32_t *cnt)
{
    memset(cnt, 0, (HUF_MAXLEN + 1) * sizeof cnt[0]);
    for (int i = 0; i < m; i++) cnt[len[i]]++;
    cnt[0] = 0;
    uint32_t c = 0;
    for (int l = 1; l <= HUF_MAXLEN; l++) {
        c = (c + cnt[l - 1]) << 1;
        first[l] = c;
    }
    uint32_t next[HUF_MAXLEN + 1];
    memcpy(next, first, sizeof next);
    for (int i = 0; i < m; i++)
        if (len[i]) code[i] = next[len[i]]++;
}

void qt_huffman_enc_init(qt_huffman_enc *h, const qt_wire *w)
{
    memset(h, 0, sizeof *h);
    h->s = w->s;
    h->a = 2 * w->s + 1;
    h->g = qt_huffman_group(w->s, &h->m);
}

/* Symbol of the group at q (g levels; fewer at the end: padded with zero levels). */
static inline int group_symbol(const qt_huffman_enc *h, const int16_t *q, int have)
{
    int v = 0;
    for (int j = h->g - 1; j >= 0; j--) v = v * h->a + (j < have ? q[j] + h->s : h->s);
    return v;
}

/* Symbols of the full groups of q[0..len) for a compile-time group size G (inlined per
 * G so the loop vectorizes); returns how many. */
static inline __attribute__((always_inline)) size_t
symbols_g(const int16_t *q, size_t len, int G, int a, int s, uint8_t *sym)
{
    size_t t = 0;
    for (; (t + 1) * (size_t)G <= len; t++) {
        int v = 0;
        for (int j = G - 1; j >= 0; j--) v = v * a + (q[t * (size_t)G + (size_t)j] + s);
        sym[t] = (uint8_t)v;
    }
    return t;
}

/* Symbols of all groups of a chunk (len <= 3840): the full ones, then a padded last. */
static size_t chunk_symbols(const qt_huffman_enc *h, const int16_t *q, size_t len, uint8_t *sym)
{
    size_t t;
    switch (h->g) {
    case 1: t = symbols_g(q, len, 1, h->a, h->s, sym); break;
    case 2: t = symbols_g(q, len, 2, h->a, h->s, sym); break;
    case 3: t = symbols_g(q, len, 3, h->a, h->s, sym); break;
    default: t = symbols_g(q, len, 5, h->a, h->s, sym); break;
    }
    size_t done = t * (size_t)h->g;
    if (done < len) sym[t++] = (uint8_t)group_symbol(h, q + done, (int)(len - done));
    return t;
}

void qt_huffman_count(qt_huffman_enc *h, int lane, const int16_t *q, size_t len)
{
    uint8_t sym[3840];
    size_t t = chunk_symbols(h, q, len, sym);
    /* four sub-histograms: consecutive equal symbols would otherwise serialize on one
     * counter's store and reload */
    uint32_t c4[4][HUF_MAXSYM];
    memset(c4, 0, sizeof c4);
    size_t i = 0;
    for (; i + 4 <= t; i += 4) {
        c4[0][sym[i]]++;
        c4[1][sym[i + 1]]++;
        c4[2][sym[i + 2]]++;
        c4[3][sym[i + 3]]++;
    }
    for (; i < t; i++) c4[0][sym[i]]++;
    for (int v = 0; v < h->m; v++) {
        uint32_t c = c4[0][v] + c4[1][v] + c4[2][v] + c4[3][v];
        h->count[v] += c;
        h->lane_count[lane][v] += c;
    }
}

uint64_t qt_huffman_build(qt_huffman_enc *h)
{
    uint32_t first[HUF_MAXLEN + 1], cnt[HUF_MAXLEN + 1];
    qt_huffman_lengths(h->count, h->m, h->len);
    canonical(h->len, h->m, h->code, first, cnt);
    uint64_t table = 0;
    for (int i = 0; i < h->m; i++) table += h->len[i] ? 5u : 1u;
    return table;
}

uint64_t qt_huffman_lane_bits(const qt_huffman_enc *h, int lane)
{
    uint64_t bits = 0;
    for (int i = 0; i < h->m; i++) bits += (uint64_t)h->lane_count[lane][i] * h->len[i];
    return bits;
}

void qt_huffman_write_table(const qt_huffman_enc *h, qt_bitwriter *bw)
{
    for (int i = 0; i < h->m; i++) {
        if (h->len[i])
            qt_bw_put(bw, 0x10u | (uint32_t)(h->len[i] - 1), 5);
        else
            qt_bw_put(bw, 0, 1);
    }
}

void qt_huffman_write(const qt_huffman_enc *h, qt_bitwriter *bw, const int16_t *q, size_t len)
{
    uint8_t sym[3840];
    size_t t = chunk_symbols(h, q, len, sym);
    /* the writer as a local (as in qt_elias_write); the code table too, since the
     * writer's byte stores could alias it */
    qt_bitwriter b = *bw;
    uint32_t code[HUF_MAXSYM];
    uint8_t clen[HUF_MAXSYM];
    memcpy(code, h->code, sizeof code);
    memcpy(clen, h->len, sizeof clen);
    size_t i = 0;
    if ((size_t)(b.end - b.p) >= 2 * t + 8) /* t codes of <= 16 bits fit: no end checks */
        for (; i + 2 <= t; i += 2) {        /* two codes (<= 32 bits) per write */
            const int l1 = clen[sym[i + 1]];
            qt_bw_put_fast(&b, (uint64_t)code[sym[i]] << l1 | code[sym[i + 1]],
                           clen[sym[i]] + l1);
        }
    for (; i < t; i++) qt_bw_put(&b, code[sym[i]], clen[sym[i]]);
    *bw = b;
}

/* Decoder state that the slow path needs: canonical first/cnt per length, the symbols
 * sorted by (length, symbol) and where each length starts among them; limit[l] = one past
 * the last code of length l, as a 16-bit left-justified value (non-decreasing in l). */
typedef struct {
    uint32_t first[HUF_MAXLEN + 1], cnt[HUF_MAXLEN + 1], offs[HUF_MAXLEN + 2];
    uint32_t limit[HUF_MAXLEN + 1];
    uint8_t sorted[HUF_MAXSYM];
    int tb;
} huf_dec;

/* One symbol whose code is longer than tb bits (the table had no entry); -1 if no code
 * matches. Refills for itself. Canonical codes of a longer length are larger numbers
 * when left-justified, so the length is tb + 1 plus the count of longer lengths whose
 * codes all lie below the next 16 bits (no branch per length). */
static inline __attribute__((always_inline)) int huf_slow(qt_bitreader *br, const huf_dec *d)
{
    qt_br_refill(br);
    uint32_t p16 = (uint32_t)qt_br_peek(br, HUF_MAXLEN);
    int l = d->tb + 1;
    for (int k = d->tb + 1; k <= HUF_MAXLEN; k++) l += p16 >= d->limit[k];
    if (l > HUF_MAXLEN) return -1;
    uint32_t c = (p16 >> (HUF_MAXLEN - l)) - d->first[l];
    if (c >= d->cnt[l]) return -1;
    qt_br_skip(br, l);
    return d->sorted[d->offs[l] + c];
}

/* Adds the levels of `k` symbols of group size G (expanded through `digits`, 8 slots per
 * symbol so one fixed-size copy serves each G) to out[i0..]: `cnt_el` elements; the
 * padding levels past them must be zero. 0 or QT_CODEC_ECORRUPT. */
static inline __attribute__((always_inline)) int
huf_add_g(const qt_wire *w, const uint8_t *scales, const int16_t *digits, const uint8_t *sym,
          size_t k, int G, size_t i0, size_t cnt_el, float f, float *out, int16_t *lv)
{
    int16_t *cq = lv;
    for (size_t j = 0; j < k; j++) {
        /* copy a power of two >= G; the buffer has room for the overhang */
        memcpy(cq, digits + 8 * sym[j], (G == 1 ? 1 : G == 2 ? 2 : G == 3 ? 4 : 8) * sizeof *cq);
        cq += G;
    }
    for (size_t j = cnt_el; j < k * (size_t)G; j++)
        if (lv[j] != 0) return QT_CODEC_ECORRUPT;
    qt_levels_add(w, scales, lv, i0, cnt_el, f, out);
    return 0;
}

/* g == 1: the level is sym - s; scale-and-add straight from the symbols (the same
 * float expression as qt_levels_add, so the same values). */
static void huf_add_1(const qt_wire *w, const uint8_t *scales, const uint8_t *sym, size_t i0,
                      size_t len, float f, float *out)
{
    const float sf = (float)w->s;
    const int s = w->s;
    const size_t end = i0 + len;
    for (size_t i = i0; i < end;) {
        size_t k = i / w->d;
        size_t bend = QT_MIN((k + 1) * w->d, end);
        const float unit = qt_load_f32(scales + 4 * k) / sf;
        const uint8_t *qq = sym + (i - i0);
        float *o = out + i;
        for (size_t j = 0; j < bend - i; j++) o[j] += f * ((float)((int)qq[j] - s) * unit);
        i = bend;
    }
}

/* One table lookup: one to three symbols to *spp (four bytes always, one store: no branch
 * on the count, which varies unpredictably; the buffers have room for the spare ones), or one
 * slow code. Needs tb buffered bits unless slow; false if no code matches. */
static inline __attribute__((always_inline)) bool huf_look(qt_bitreader *br, uint8_t **spp,
                                                          const uint32_t *lut, const huf_dec *d)
{
    uint32_t e = lut[qt_br_peek(br, d->tb)];
    uint8_t *sp = *spp;
    if (__builtin_expect(!e, 0)) {
        int v = huf_slow(br, d);
        if (v < 0) return false;
        *sp = (uint8_t)v;
        *spp = sp + 1;
        return true;
    }
    uint32_t syms = e >> 8; /* little-endian: sym1 is the first byte */
    memcpy(sp, &syms, 4);
    *spp = sp + ((e >> 6) & 3);
    qt_br_skip(br, (int)(e & 63));
    return true;
}

/* One lane's decoder: its reader, its symbol buffer for this round (sp .. send), the
 * groups it has left and its next element. */
enum { HUF_CHUNK = 2048 };
typedef struct {
    qt_bitreader br;
    size_t len, left, i0, i1;
    uint8_t *sp, *send;
    uint8_t sbuf[HUF_CHUNK + 4];
} huf_lane;

/* The fast loop of one lane: four lookups per refill (each <= tb bits of >= 56; a slow
 * code refills before it reads, leaving >= 40 bits for the remaining three) writing up to
 * 12 symbols, while that many fit; then the rest one by one. False on a bad code. */
static bool huf_lane_fill(huf_lane *L, const uint32_t *lut, const uint16_t *one,
                          const huf_dec *d)
{
    /* reader and output pointer as locals: the symbol stores could alias *L, which
     * would keep the bit buffer in memory on the lookup chain */
    qt_bitreader br = L->br;
    uint8_t *sp = L->sp, *const send = L->send;
    bool ok = true;
    while (ok && send - sp >= 12) {
        qt_br_refill(&br);
        for (int r = 0; r < 4 && ok; r++) ok = huf_look(&br, &sp, lut, d);
    }
    while (ok && sp < send) {
        qt_br_refill(&br);
        uint32_t e = one[qt_br_peek(&br, d->tb)];
        int v;
        if (e) {
            v = (int)(e & 255);
            qt_br_skip(&br, (int)(e >> 8));
        } else if ((v = huf_slow(&br, d)) < 0) {
            ok = false;
            break;
        }
        *sp++ = (uint8_t)v;
    }
    L->br = br;
    L->sp = sp;
    return ok;
}

/* A lane's reader as an absolute bit position from the first lane's first byte (lanes
 * are consecutive in the payload), and back: the interleaved loop keeps only that and
 * the 64 bits loaded there per lane, so four lanes' state stays in registers. */
static inline uint64_t huf_bp(const qt_bitreader *br, const uint8_t *base)
{
    return 8 * (uint64_t)(br->start - base) + qt_br_used(br);
}

static inline void huf_set_bp(qt_bitreader *br, uint64_t bp, const uint8_t *base)
{
    uint64_t rel = bp - 8 * (uint64_t)(br->start - base);
    if (rel == qt_br_used(br)) return; /* untouched (a reader past its end stays so) */
    const uint8_t *start = br->start;
    qt_br_init(br, start, (size_t)(br->end - start));
    br->p = start + rel / 8;
    if (rel % 8) {
        qt_br_refill(br);
        qt_br_skip(br, (int)(rel % 8));
    }
}

/* 56 stream bits at bp, then a marker bit (bit 7, zeros below) that each lookup's shift
 * moves up: after the lookups, the bits they took are its position - 7 (huf_taken), so
 * no bit counter is updated per lookup. */
static inline __attribute__((always_inline)) uint64_t huf_load(const uint8_t *base, uint64_t bp)
{
    uint64_t v;
    memcpy(&v, base + bp / 8, 8);
    return ((__builtin_bswap64(v) << (bp % 8)) & ~(uint64_t)0xff) | 0x80;
}

static inline uint64_t huf_taken(uint64_t buf) { return (uint64_t)__builtin_ctzll(buf) - 7; }

/* Four lanes' lookups of up to three symbols (lut) interleaved (four independent
 * chains), five per lane and load (5 * tb = 55 of the 56 bits loaded), while every lane
 * has 8 bytes to load from and room for one iteration's symbols (up to 15). A code
 * longer than tb bits leaves the loop (each lookup is whole, so every lane is
 * consistent), is decoded on its lane's reader, and the loop resumes. False on a bad
 * code. */
static bool huf_lanes4_fill(huf_lane *ln, const uint32_t *lut, const huf_dec *d, float *out,
                            int g)
{
    const uint8_t *base = ln[0].br.start;
    /* Each iteration also asks for the lines of out that each lane's adds will need:
     * out is seldom in cache, and the lookups leave the memory system idle (measured:
     * 15-45% faster decodes of 8M elements). Prefetches past the round's elements are
     * harmless: they never fault. */
    uintptr_t pf[QT_LANES]; /* addresses, not pointers: they may run past the array */
    for (int j = 0; j < QT_LANES; j++)
        pf[j] = (uintptr_t)(out + ln[j].i0) + 4 * (uintptr_t)(ln[j].sp - ln[j].sbuf) * (uintptr_t)g;
    /* per iteration and lane: up to 15 symbols, one or two lines (the second for g > 1) */
    const uintptr_t pstep = 64 * (uintptr_t)QT_MIN(g, 2);
    uintptr_t pfa = pf[0], pfb = pf[1], pfc = pf[2], pfd = pf[3];
    uint64_t endoff[QT_LANES]; /* each lane's end, as a byte offset from base */
    for (int j = 0; j < QT_LANES; j++) endoff[j] = (uint64_t)(ln[j].br.end - base);
    for (;;) {
        uint64_t bpa = huf_bp(&ln[0].br, base), bpb = huf_bp(&ln[1].br, base);
        uint64_t bpc = huf_bp(&ln[2].br, base), bpd = huf_bp(&ln[3].br, base);
        uint8_t *pa = ln[0].sp, *pb = ln[1].sp, *pc = ln[2].sp, *pd = ln[3].sp;
        const ptrdiff_t room = 15; /* symbols one iteration may write */
        uint8_t *const ea = ln[0].send, *const eb = ln[1].send;
        uint8_t *const ec = ln[2].send, *const ed = ln[3].send;
        int which = -1;
#define HUF_LOOK(BUF, BP, SP, J)                                                         \
    {                                                                                    \
        uint32_t e_ = lut[(BUF) >> (64 - HUF_TB)];                                       \
        if (__builtin_expect(!e_, 0)) {                                                  \
            which = J;                                                                   \
            break;                                                                       \
        }                                                                                \
        uint32_t s_ = e_ >> 8; /* little-endian: the first symbol, first byte */       \
        memcpy(SP, &s_, 4);                                                              \
        SP += (e_ >> 6) & 3;                                                             \
        BUF <<= e_ & 63;                                                                 \
    }
        while (bpa / 8 + 8 <= endoff[0] && bpb / 8 + 8 <= endoff[1] && bpc / 8 + 8 <= endoff[2] &&
               bpd / 8 + 8 <= endoff[3] && ea - pa >= room && eb - pb >= room &&
               ec - pc >= room && ed - pd >= room) {
            uint64_t a = huf_load(base, bpa), b = huf_load(base, bpb);
            uint64_t c = huf_load(base, bpc), dd = huf_load(base, bpd);
            __builtin_prefetch((const void *)pfa, 1, 3);
            __builtin_prefetch((const void *)pfb, 1, 3);
            __builtin_prefetch((const void *)pfc, 1, 3);
            __builtin_prefetch((const void *)pfd, 1, 3);
            if (g > 1) {
                __builtin_prefetch((const void *)(pfa + 64), 1, 3);
                __builtin_prefetch((const void *)(pfb + 64), 1, 3);
                __builtin_prefetch((const void *)(pfc + 64), 1, 3);
                __builtin_prefetch((const void *)(pfd + 64), 1, 3);
            }
            pfa += pstep, pfb += pstep, pfc += pstep, pfd += pstep;
            for (int r = 0; r < 5; r++) {
                HUF_LOOK(a, bpa, pa, 0)
                HUF_LOOK(b, bpb, pb, 1)
                HUF_LOOK(c, bpc, pc, 2)
                HUF_LOOK(dd, bpd, pd, 3)
            }
            bpa += huf_taken(a), bpb += huf_taken(b), bpc += huf_taken(c), bpd += huf_taken(dd);
            if (which >= 0) break;
        }
#undef HUF_LOOK
        huf_set_bp(&ln[0].br, bpa, base), huf_set_bp(&ln[1].br, bpb, base);
        huf_set_bp(&ln[2].br, bpc, base), huf_set_bp(&ln[3].br, bpd, base);
        ln[0].sp = pa, ln[1].sp = pb, ln[2].sp = pc, ln[3].sp = pd;
        if (which < 0) return true;
        int v = huf_slow(&ln[which].br, d);
        if (v < 0) return false;
        *ln[which].sp++ = (uint8_t)v;
    }
}

/* The one-symbol loop (8-bit levels under max scales: codes of 7.4 bits on average, so
 * that lut's entries would hold one symbol anyway). Each lane is three registers, as in
 * elias.c's window loop: the byte its bits were loaded from, the bits with a marker bit
 * below the valid ones (the bits consumed since the load are the marker's shift: no
 * position update per lookup), and its symbol pointer. onex[] entries are length |
 * symbol << 8 (the length in the low bits: the shift, on the lookup chain, takes the
 * entry as it is). A code longer than HUF_TB bits (about 1% of the symbols there) is
 * decoded in the loop through its prefix's subtable of sub[] (onex: HUF_LONG | prefix
 * number << 8; the next HUF_SUB bits index the subtable, whose entries are symbol |
 * length << 8), from a fresh load at the code, and the lane loads again after it;
 * HUF_BAD, or a zero in sub[], is a prefix no code has. */
#define HUF_LONG 0x80000000u
#define HUF_BAD 0xffffffffu
enum { HUF_SUB = HUF_MAXLEN - HUF_TB, HUF_SUBMASK = (1 << HUF_SUB) - 1 };

static bool huf_lanes4_one(huf_lane *ln, const uint32_t *onex, const uint16_t *sub, float *out,
                           int g)
{
    /* Bytes a lane needs past a check, for the two rounds of lookups after it: the first
     * load at most 7 bytes on (the marker: <= 7 + 5 * 11 bits taken); a round's codes
     * before a long one at most 4 * 16 bits, so the long code's 8-byte read (at its byte)
     * and the load after it (at most 2 bytes further) end within 18 bytes of the round's
     * start; the second round starts at most 7 + 10 bytes on. */
    enum { PEND = 7 + 10 + 18 };
    _Static_assert(5 * HUF_TB + 7 <= 62, "five lookups a load, the marker kept");
    const uint8_t *base = ln[0].br.start, *pend[QT_LANES];
    uint8_t *slast[QT_LANES]; /* the last place two rounds' symbols may start at */
    for (int j = 0; j < QT_LANES; j++) {
        if (ln[j].br.end - ln[j].br.start < PEND || ln[j].send - ln[j].sp < 10)
            return true; /* the lanes finish alone */
        pend[j] = ln[j].br.end - PEND;
        slast[j] = ln[j].send - 10;
    }
    /* the lines of out that each lane's adds will need (see huf_lanes4_fill) */
    const uintptr_t G = (uintptr_t)g;
    uintptr_t pfa = (uintptr_t)(out + ln[0].i0) + 4 * (uintptr_t)(ln[0].sp - ln[0].sbuf) * G;
    uintptr_t pfb = (uintptr_t)(out + ln[1].i0) + 4 * (uintptr_t)(ln[1].sp - ln[1].sbuf) * G;
    uintptr_t pfc = (uintptr_t)(out + ln[2].i0) + 4 * (uintptr_t)(ln[2].sp - ln[2].sbuf) * G;
    uintptr_t pfd = (uintptr_t)(out + ln[3].i0) + 4 * (uintptr_t)(ln[3].sp - ln[3].sbuf) * G;
    uint64_t bp[QT_LANES];
    for (int j = 0; j < QT_LANES; j++) bp[j] = huf_bp(&ln[j].br, base);
    const uint8_t *pA, *pB, *pC, *pD;
    uint64_t fA = qt_mk_start(base, bp[0], &pA), fB = qt_mk_start(base, bp[1], &pB);
    uint64_t fC = qt_mk_start(base, bp[2], &pC), fD = qt_mk_start(base, bp[3], &pD);
    uint8_t *sA = ln[0].sp, *sB = ln[1].sp, *sC = ln[2].sp, *sD = ln[3].sp;
    bool bad = false;
    for (;;) {
        if (__builtin_expect(pA > pend[0], 0)) break;
        if (__builtin_expect(pB > pend[1], 0)) break;
        if (__builtin_expect(pC > pend[2], 0)) break;
        if (__builtin_expect(pD > pend[3], 0)) break;
        if (__builtin_expect(sA > slast[0], 0)) break;
        if (__builtin_expect(sB > slast[1], 0)) break;
        if (__builtin_expect(sC > slast[2], 0)) break;
        if (__builtin_expect(sD > slast[3], 0)) break;
        __builtin_prefetch((const void *)pfa, 1, 3);
        __builtin_prefetch((const void *)pfb, 1, 3);
        __builtin_prefetch((const void *)pfc, 1, 3);
        __builtin_prefetch((const void *)pfd, 1, 3);
        pfa += 40 * G, pfb += 40 * G, pfc += 40 * G, pfd += 40 * G; /* 10 symbols */
#define HO_NEXT(F, P) F = qt_mk_next(&P, F);
/* A long code: its 16 bits from a load at the code (the marker may be among them in F),
 * its subtable entry, then the lane's bits after it; the entry becomes the symbol with
 * no length, so that the shift below keeps the fresh bits. */
#define HO_LOOK(F, P, S, K)                                                                  \
    {                                                                                        \
        uint32_t e_ = onex[F >> (64 - HUF_TB)];                                              \
        if (__builtin_expect(e_ >> 31, 0)) {                                                 \
            const uint64_t at_ = 8 * (uint64_t)(P - base) + (uint64_t)__builtin_ctzll(F);    \
            uint64_t x_;                                                                     \
            memcpy(&x_, base + at_ / 8, 8);                                                  \
            x_ = (__builtin_bswap64(x_) << (at_ % 8)) >> (64 - HUF_MAXLEN);                  \
            e_ = e_ == HUF_BAD ? 0 : sub[((e_ >> 8 & 0x7fff) << HUF_SUB) + (x_ & HUF_SUBMASK)]; \
            if (!e_) {                                                                       \
                bad = true;                                                                  \
                break;                                                                       \
            }                                                                                \
            F = qt_mk_at(base, at_ + (e_ >> 8), &P);                                         \
            e_ = (e_ & 0xff) << 8;                                                           \
        }                                                                                    \
        S[K] = (uint8_t)(e_ >> 8);                                                           \
        F <<= e_ & 63; /* the length: the shift takes the entry as it is */                 \
    }
#define HO_ROUND                                                                             \
    HO_NEXT(fA, pA) HO_NEXT(fB, pB) HO_NEXT(fC, pC) HO_NEXT(fD, pD)                          \
    HO_LOOK(fA, pA, sA, 0) HO_LOOK(fB, pB, sB, 0) HO_LOOK(fC, pC, sC, 0) HO_LOOK(fD, pD, sD, 0) \
    HO_LOOK(fA, pA, sA, 1) HO_LOOK(fB, pB, sB, 1) HO_LOOK(fC, pC, sC, 1) HO_LOOK(fD, pD, sD, 1) \
    HO_LOOK(fA, pA, sA, 2) HO_LOOK(fB, pB, sB, 2) HO_LOOK(fC, pC, sC, 2) HO_LOOK(fD, pD, sD, 2) \
    HO_LOOK(fA, pA, sA, 3) HO_LOOK(fB, pB, sB, 3) HO_LOOK(fC, pC, sC, 3) HO_LOOK(fD, pD, sD, 3) \
    HO_LOOK(fA, pA, sA, 4) HO_LOOK(fB, pB, sB, 4) HO_LOOK(fC, pC, sC, 4) HO_LOOK(fD, pD, sD, 4) \
    sA += 5, sB += 5, sC += 5, sD += 5;
        HO_ROUND
        HO_ROUND
#undef HO_ROUND
#undef HO_LOOK
#undef HO_NEXT
    }
    if (bad) return false; /* a prefix no code has: the rest is of no use */
    huf_set_bp(&ln[0].br, qt_mk_pos(base, pA, fA), base);
    huf_set_bp(&ln[1].br, qt_mk_pos(base, pB, fB), base);
    huf_set_bp(&ln[2].br, qt_mk_pos(base, pC, fC), base);
    huf_set_bp(&ln[3].br, qt_mk_pos(base, pD, fD), base);
    ln[0].sp = sA, ln[1].sp = sB, ln[2].sp = sC, ln[3].sp = sD;
    return true;
}

int qt_huffman_decode_levels(const qt_wire *w, const uint8_t *scales, const qt_lane *lanes,
                             int nlanes, float f, float *out)
{
    const int s = w->s, a = 2 * s + 1;
    int m;
    const int g = qt_huffman_group(s, &m);
    huf_lane *ln = qt_malloc(sizeof(huf_lane) * (size_t)nlanes);
    for (int j = 0; j < nlanes; j++) {
        qt_br_init(&ln[j].br, lanes[j].bytes, lanes[j].len);
        ln[j].len = lanes[j].len;
        ln[j].i0 = lanes[j].i0;
        ln[j].i1 = lanes[j].i1;
        ln[j].left = (lanes[j].i1 - lanes[j].i0 + (size_t)g - 1) / (size_t)g;
    }
    int rc = QT_CODEC_ECORRUPT;
    qt_bitreader *br = &ln[0].br;
    uint16_t *sub = NULL;

    /* Table (lane 0): lengths, Kraft check (an over-full code is not ours), canonical codes. */
    uint8_t len[HUF_MAXSYM];
    uint32_t code[HUF_MAXSYM];
    huf_dec d;
    uint64_t kraft = 0;
    int used = 0;
    for (int i = 0; i < m; i++) {
        len[i] = 0;
        if (qt_br_get(br, 1)) {
            len[i] = (uint8_t)(qt_br_get(br, 4) + 1);
            kraft += 1u << (HUF_MAXLEN - len[i]);
            used++;
        }
    }
    if (br->phantom && qt_br_used(br) > 8 * (uint64_t)ln[0].len) {
        rc = QT_CODEC_ETRUNC;
        goto done;
    }
    if (kraft > (1u << HUF_MAXLEN) || used == 0) goto done;
    canonical(len, m, code, d.first, d.cnt);
    d.offs[1] = 0;
    for (int l = 1; l <= HUF_MAXLEN; l++) {
        d.offs[l + 1] = d.offs[l] + d.cnt[l];
        d.limit[l] = (d.first[l] + d.cnt[l]) << (HUF_MAXLEN - l);
    }
    {
        uint32_t fill[HUF_MAXLEN + 2];
        memcpy(fill, d.offs, sizeof fill);
        for (int i = 0; i < m; i++)
            if (len[i]) d.sorted[fill[len[i]]++] = (uint8_t)i;
    }

    /* one[]: the code that starts the next tb bits, as symbol | length << 8 (0: longer
     * than tb, or a prefix no code has). lut[]: up to three whole codes in the next tb
     * bits, as total length | count << 6 | sym1 << 8 | sym2 << 16 | sym3 << 24 (the
     * length in the low six bits: the shift of the bit buffer, on the decoder's critical
     * path, takes the entry as it is); zero exactly where one[] is. Multi-symbol
     * entries only for large messages. */
    const size_t groups = (w->n + (size_t)g - 1) / (size_t)g;
    const bool big = groups >= HUF_BIG_GROUPS;
    const int tb = HUF_TB;
    d.tb = tb;
    const uint32_t tmask = (1u << tb) - 1;
    uint16_t one[1 << HUF_TB];
    uint32_t lut[1 << HUF_TB];
    memset(one, 0, sizeof(uint16_t) << tb);
    for (int i = 0; i < m; i++) {
        if (!len[i] || len[i] > tb) continue;
        uint32_t lo = code[i] << (tb - len[i]), span = 1u << (tb - len[i]);
        uint16_t e = (uint16_t)(i | len[i] << 8);
        for (uint32_t j = 0; j < span; j++) one[lo + j] = e;
    }
    uint32_t multi = 0; /* symbols beyond the first, over all of lut's entries */
    for (uint32_t x = 0; x <= tmask; x++) {
        uint32_t e = one[x];
        if (!e) {
            lut[x] = 0;
            continue;
        }
        uint32_t syms = e & 255, bits = e >> 8, k = 1;
        while (big && k < 3) {
            uint32_t e2 = one[(x << bits) & tmask], l2 = e2 >> 8;
            if (!e2 || bits + l2 > (uint32_t)tb) break;
            syms |= (e2 & 255) << (8 * k);
            bits += l2;
            k++;
        }
        lut[x] = bits | k << 6 | syms << 8;
        multi += k - 1;
    }
    /* Each tb-bit prefix is about as likely as the code says (2^-tb): when lut's
     * entries hold on average under 1.25 symbols, the one-symbol lookups are faster. */
    const bool single = 4 * multi < (1u << tb);
    /* huf_lanes4_one's tables: one[] with HUF_BAD for prefixes no code has, and a
     * subtable per prefix of longer codes */
    uint32_t onex[1 << HUF_TB];
    if (single && nlanes == QT_LANES) {
        uint32_t nsub = 0;
        for (uint32_t x = 0; x <= tmask; x++)
            onex[x] = one[x] ? (one[x] >> 8) | (one[x] & 255u) << 8 : HUF_BAD;
        for (int i = 0; i < m; i++)
            if (len[i] > tb && onex[code[i] >> (len[i] - tb)] == HUF_BAD)
                onex[code[i] >> (len[i] - tb)] = HUF_LONG | nsub++ << 8;
        sub = qt_calloc((size_t)nsub << HUF_SUB, sizeof *sub);
        for (int i = 0; i < m; i++) {
            if (len[i] <= tb) continue;
            uint32_t c16 = code[i] << (HUF_MAXLEN - len[i]);
            uint32_t k = onex[c16 >> HUF_SUB] >> 8 & 0x7fff;
            uint32_t lo = c16 & ((1u << HUF_SUB) - 1), span = 1u << (HUF_MAXLEN - len[i]);
            for (uint32_t j = 0; j < span; j++)
                sub[(k << HUF_SUB) + lo + j] = (uint16_t)(i | len[i] << 8);
        }
    }
    /* The levels of each symbol, 8 slots per symbol (the copies in huf_add_g). */
    int16_t digits[HUF_MAXSYM * 8];
    memset(digits, 0, sizeof digits);
    for (int v = 0; v < m; v++) {
        int x = v;
        for (int j = 0; j < g; j++) {
            digits[v * 8 + j] = (int16_t)(x % a - s);
            x /= a;
        }
    }

    /* Rounds: every lane decodes up to HUF_CHUNK of its symbols (never more: past its
     * last symbol the bits are padding), checks that its reader has not run past its
     * end, then adds them. The lanes' fast loops run interleaved while all four have
     * room, then each finishes on its own. */
    int16_t lv[HUF_CHUNK * 5 + 8];
    for (;;) {
        bool any = false;
        for (int j = 0; j < nlanes; j++) {
            ln[j].sp = ln[j].sbuf;
            ln[j].send = ln[j].sbuf + QT_MIN(ln[j].left, (size_t)HUF_CHUNK);
            any |= ln[j].left > 0;
        }
        if (!any) break;
        if (nlanes == QT_LANES && !(single ? huf_lanes4_one(ln, onex, sub, out, g)
                                           : huf_lanes4_fill(ln, lut, &d, out, g)))
            goto done;
        for (int j = 0; j < nlanes; j++) {
            huf_lane *L = &ln[j];
            if (!huf_lane_fill(L, lut, one, &d)) goto done;
            if (L->br.phantom && qt_br_used(&L->br) > 8 * (uint64_t)L->len) {
                rc = QT_CODEC_ETRUNC;
                goto done;
            }
            const size_t want = (size_t)(L->send - L->sbuf);
            const size_t cnt_el = QT_MIN(want * (size_t)g, L->i1 - L->i0);
            int r = 0;
            switch (g) {
            case 1: huf_add_1(w, scales, L->sbuf, L->i0, cnt_el, f, out); break;
            case 2: r = huf_add_g(w, scales, digits, L->sbuf, want, 2, L->i0, cnt_el, f, out, lv); break;
            case 3: r = huf_add_g(w, scales, digits, L->sbuf, want, 3, L->i0, cnt_el, f, out, lv); break;
            default: r = huf_add_g(w, scales, digits, L->sbuf, want, 5, L->i0, cnt_el, f, out, lv); break;
            }
            if (r) goto done;
            L->left -= want;
            L->i0 += cnt_el;
        }
    }
    rc = 0;
    for (int j = 0; j < nlanes && !rc; j++) rc = qt_br_finish(&ln[j].br, ln[j].len);
done:
    free(sub);
    free(ln);
    return rc;
}
