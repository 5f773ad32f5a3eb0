/* float16.c — the uncompressed baselines: none (fp32 as is), fp16 (IEEE binary16) and
 * bf16, each rounded to nearest even. Payload: n little-endian values, 4 or 2 bytes each.
 * Every NaN becomes the positive quiet NaN (fp16 0x7e00, bf16 0x7fc0) so the bytes do not
 * depend on NaN payloads (the CUDA twin must do the same); overflow gives +-Inf as IEEE
 * rounding says; fp16 subnormals are rounded exactly. Pure integer code, branch-free
 * selects, so GCC vectorizes the loops.
 */
#include "core/qt.h"
#include "quant/wire.h"

uint16_t qt_f32_to_bf16(float x)
{
    uint32_t u = qt_f32_bits(x);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}

float qt_bf16_to_f32(uint16_t h) { return qt_bits_f32((uint32_t)h << 16); }

uint16_t qt_f32_to_f16(float x)
{
    uint32_t u = qt_f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    /* normal results: rebias, round the 13 dropped bits to nearest even */
    uint32_t normal = (a - ((127u - 15u) << 23) + 0x0fffu + ((a >> 13) & 1u)) >> 13;
    /* subnormal results (|x| < 2^-14): adding 0.5 aligns the fraction so the FPU's own
     * round-to-nearest-even drops exactly the right bits */
    float sub_f = qt_bits_f32(a) + 0.5f;
    uint32_t sub = qt_f32_bits(sub_f) - 0x3f000000u;
    uint32_t h = a < 0x38800000u ? sub : normal;
    h = a >= 0x477ff000u ? 0x7c00u : h; /* rounds to >= 65520: Inf */
    h = a > 0x7f800000u ? 0x7e00u : h | sign;
    return (uint16_t)h;
}

float qt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t normal = ((e + 112u) << 23) | (m << 13);
    uint32_t special = 0x7f800000u | (m << 13);
    uint32_t sub = qt_f32_bits((float)m * 0x1p-24f);
    uint32_t u = e == 0 ? sub : (e == 31 ? special : normal);
    return qt_bits_f32(u | sign);
}

size_t qt_float_payload_bytes(const qt_wire *w)
{
    return w->n * (w->method == QT_CODEC_NONE ? 4u : 2u);
}

void qt_float_encode(const qt_wire *w, const float *g, uint8_t *payload)
{
    const size_t n = w->n;
    if (w->method == QT_CODEC_NONE) {
        if (n) memcpy(payload, g, 4 * n);
        return;
    }
    uint16_t tmp[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t cnt = QT_MIN((size_t)256, n - i);
        if (w->method == QT_CODEC_FP16)
            for (size_t j = 0; j < cnt; j++) tmp[j] = qt_f32_to_f16(g[i + j]);
        else
            for (size_t j = 0; j < cnt; j++) tmp[j] = qt_f32_to_bf16(g[i + j]);
        memcpy(payload + 2 * i, tmp, 2 * cnt);
    }
}

void qt_float_decode(const qt_wire *w, const uint8_t *payload, float f, float *out)
{
    const size_t n = w->n;
    if (w->method == QT_CODEC_NONE) {
        float tmp[256];
        for (size_t i = 0; i < n; i += 256) {
            size_t cnt = QT_MIN((size_t)256, n - i);
            memcpy(tmp, payload + 4 * i, 4 * cnt);
            for (size_t j = 0; j < cnt; j++) out[i + j] += f * tmp[j];
        }
        return;
    }
    uint16_t tmp[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t cnt = QT_MIN((size_t)256, n - i);
        memcpy(tmp, payload + 2 * i, 2 * cnt);
        if (w->method == QT_CODEC_FP16)
            for (size_t j = 0; j < cnt; j++) out[i + j] += f * qt_f16_to_f32(tmp[j]);
        else
            for (size_t j = 0; j < cnt; j++) out[i + j] += f * qt_bf16_to_f32(tmp[j]);
    }
}
