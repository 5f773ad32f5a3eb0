/* topk_index.h — internal to src/quant: the index stream of the topk payload (topk.c has
 * the layout: LEB128 varint gaps, or Elias omega gaps), written and read one index at a
 * time. topk.c and the host part of its CUDA twin (cuda/topk_cuda.cu) both use these, so
 * they emit and accept exactly the same bytes with the same checks in the same order.
 * Plain C that also compiles as C++ (nvcc). */
#ifndef QT_QUANT_TOPK_INDEX_H
#define QT_QUANT_TOPK_INDEX_H

#include "quant/bitio.h"
#include "quant/wire.h"

typedef struct {
    bool elias;
    qt_bitwriter bw; /* elias */
    uint8_t *buf;    /* varint */
    size_t cap, ib;
    uint64_t last;   /* elias: 1-based position of the previous index; varint: the next index */
} qt_topk_iw;

static inline void qt_topk_iw_init(qt_topk_iw *w, const qt_wire *wire, uint8_t *buf, size_t cap)
{
    w->elias = wire->enc == QT_ENC_ELIAS;
    qt_bw_init(&w->bw, buf, cap);
    w->buf = buf;
    w->cap = cap;
    w->ib = 0;
    w->last = 0;
}

/* Appends index i (above the previous one); 0, or QT_CODEC_ENOSPC for a varint that does
 * not fit (an Elias stream that does not fit is reported by qt_topk_iw_finish). */
static inline int qt_topk_iw_put(qt_topk_iw *w, uint64_t i)
{
    if (w->elias) {
        uint64_t c;
        int l = qt_omega_code(i + 1 - w->last, &c);
        qt_bw_put_long(&w->bw, c, l);
    } else {
        uint8_t tmp[10];
        size_t vb = 0;
        uint64_t v = i - w->last;
        while (v >= 0x80) {
            tmp[vb++] = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        tmp[vb++] = (uint8_t)v;
        if (w->cap - w->ib < vb) return QT_CODEC_ENOSPC;
        memcpy(w->buf + w->ib, tmp, vb);
        w->ib += vb;
    }
    w->last = i + 1;
    return 0;
}

/* The stream's bytes into *bytes: 0, or QT_CODEC_ENOSPC. */
static inline int qt_topk_iw_finish(qt_topk_iw *w, size_t *bytes)
{
    if (w->elias) {
        w->ib = qt_bw_finish(&w->bw);
        if (w->bw.over) return QT_CODEC_ENOSPC;
    }
    *bytes = w->ib;
    return 0;
}

typedef struct {
    bool elias;
    qt_bitreader br;  /* elias */
    const uint8_t *p; /* varint */
    size_t len, at;
    uint64_t n, last; /* last: as in qt_topk_iw */
} qt_topk_ir;

static inline void qt_topk_ir_init(qt_topk_ir *r, const qt_wire *wire, const uint8_t *idx,
                                   size_t len)
{
    r->elias = wire->enc == QT_ENC_ELIAS;
    qt_br_init(&r->br, idx, len);
    r->p = idx;
    r->len = len;
    r->at = 0;
    r->n = wire->n;
    r->last = 0;
}

/* The next index into *i (< n, above the previous one); 0, QT_CODEC_ETRUNC or
 * QT_CODEC_ECORRUPT. */
static inline int qt_topk_ir_next(qt_topk_ir *r, uint64_t *i)
{
    if (r->elias) {
        uint64_t gap;
        if (qt_br_omega(&r->br, &gap) != 0) return QT_CODEC_ECORRUPT;
        if (r->br.phantom && qt_br_used(&r->br) > 8 * (uint64_t)r->len) return QT_CODEC_ETRUNC;
        uint64_t pos = r->last + gap;
        if (pos > r->n) return QT_CODEC_ECORRUPT;
        *i = pos - 1;
        r->last = pos;
        return 0;
    }
    uint64_t v = 0;
    int sh = 0;
    for (;;) {
        if (r->at >= r->len) return QT_CODEC_ETRUNC;
        uint8_t byte = r->p[r->at++];
        if (sh == 35 || (sh == 28 && byte > 0x0f)) return QT_CODEC_ECORRUPT;
        v |= (uint64_t)(byte & 0x7f) << sh;
        sh += 7;
        if (!(byte & 0x80)) {
            if (byte == 0 && sh > 7) return QT_CODEC_ECORRUPT; /* overlong */
            break;
        }
    }
    uint64_t x = r->last + v;
    if (x >= r->n) return QT_CODEC_ECORRUPT;
    *i = x;
    r->last = x + 1;
    return 0;
}

/* After the last index: the stream ends exactly at its last byte (zero padding for
 * Elias). 0, QT_CODEC_ETRUNC or QT_CODEC_ECORRUPT. */
static inline int qt_topk_ir_finish(qt_topk_ir *r)
{
    if (r->elias) return qt_br_finish(&r->br, r->len);
    return r->at == r->len ? QT_CODEC_OK : QT_CODEC_ECORRUPT;
}

#endif
