/* fuzz_image — libFuzzer target for the image decode path: content sniffing, the PNG
 * (libpng) and JPEG (TurboJPEG, DCT scaling) decoders and the resampler, on arbitrary
 * bytes. Built and run by scripts/fuzz.sh (`make fuzz`). The first byte picks the JPEG
 * scale (1/8 .. 1) and whether to flip; the rest is the file. */
#include <stddef.h>
#include <stdint.h>

#include "data/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    data++, size--;
    qt_data_scratch s = {0};
    char err[512];
    int w = 0, h = 0;
    if (qt_image_probe(data, size, &w, &h, &s, err, sizeof err) == 0) {
        qt_image im;
        double scale = ((ctl & 7) + 1) / 8.0;
        if (qt_image_decode(data, size, scale, &s, 1, &im, err, sizeof err) == 0) {
            static float out[3 * 16 * 16];
            const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.25f, 0.25f, 0.25f};
            qt_image_resample(im.rgb, im.w, im.h, 0, 0, im.w, im.h, 16, 16, ctl & 8, mean, std,
                              &s, 3, out);
        }
    }
    qt_scratch_free(&s);
    return 0;
}
