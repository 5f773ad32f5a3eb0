/* test_data_image.c — PNG decode exactness for every colour type and depth, JPEG decode
 * within a stated error (full size and DCT-scaled), content sniffing, corrupt and
 * truncated files, the resampler's geometry (identity, flip, 2x with hand-computed
 * weights), normalisation, and random-resized-crop's parameter ranges. Fixtures are
 * written by libpng and TurboJPEG in memory. */
#include "test_data_imgutil.h"

#include "data/augment.h"
#include "data/image.h"

enum { W = 23, H = 17 }; /* odd sizes: catches row-stride and rounding slips */

static qt_image decode_ok(const membuf *m, double min_scale, qt_data_scratch *s)
{
    qt_image im;
    char err[512] = "";
    if (qt_image_decode(m->data, m->n, min_scale, s, 1, &im, err, sizeof err) != 0)
        fail_msg("decode failed: %s", err);
    return im;
}

static void expect_rgb(const qt_image *im, const uint8_t *want)
{
    assert_int_equal(im->w, W);
    assert_int_equal(im->h, H);
    for (int i = 0; i < W * H * 3; i++)
        if (im->rgb[i] != want[i])
            fail_msg("pixel %d channel %d: got %d want %d", i / 3, i % 3, im->rgb[i], want[i]);
}

static void test_png_rgb_rgba_interlaced(void **state)
{
    (void)state;
    qt_data_scratch s = {0};
    uint8_t rgb[W * H * 3], rgba[W * H * 4];
    for (int i = 0; i < W * H; i++) {
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = (uint8_t)(i * 7 + c * 91);
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)(i * 13); /* alpha must be dropped, not applied */
    }
    for (int il = 0; il <= 1; il++) {
        membuf m = png_encode(W, H, 8, PNG_COLOR_TYPE_RGB, rgb, W * 3, NULL, 0, NULL, 0, il);
        assert_int_equal(qt_image_sniff(m.data, m.n), QT_IMAGE_PNG);
        qt_image im = decode_ok(&m, 0.1, &s); /* PNG ignores min_scale */
        expect_rgb(&im, rgb);
        free(m.data);
        m = png_encode(W, H, 8, PNG_COLOR_TYPE_RGBA, rgba, W * 4, NULL, 0, NULL, 0, il);
        im = decode_ok(&m, 1, &s);
        expect_rgb(&im, rgb);
        free(m.data);
    }
    qt_scratch_free(&s);
}

static void test_png_gray_depths_and_alpha(void **state)
{
    (void)state;
    qt_data_scratch s = {0};
    uint8_t want[W * H * 3];
    for (int depth = 1; depth <= 8; depth *= 2) {
        int maxv = (1 << depth) - 1, per_byte = 8 / depth;
        size_t rowbytes = (size_t)(W + per_byte - 1) / per_byte;
        uint8_t packed[H * W] = {0};
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int v = (x + 3 * y) % (maxv + 1);
                int shift = 8 - depth * (x % per_byte + 1); /* PNG packs MSB first */
                packed[y * rowbytes + x / per_byte] |= (uint8_t)(v << shift);
                uint8_t g = (uint8_t)(v * 255 / maxv); /* exact: 255 divisible by maxv */
                want[(y * W + x) * 3] = want[(y * W + x) * 3 + 1] = want[(y * W + x) * 3 + 2] = g;
            }
        membuf m = png_encode(W, H, depth, PNG_COLOR_TYPE_GRAY, packed, rowbytes, NULL, 0, NULL, 0, false);
        qt_image im = decode_ok(&m, 1, &s);
        expect_rgb(&im, want);
        free(m.data);
    }
    uint8_t ga[W * H * 2];
    for (int i = 0; i < W * H; i++) {
        ga[2 * i] = (uint8_t)(i * 5);
        ga[2 * i + 1] = (uint8_t)(255 - i);
        want[3 * i] = want[3 * i + 1] = want[3 * i + 2] = (uint8_t)(i * 5);
    }
    membuf m = png_encode(W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, ga, W * 2, NULL, 0, NULL, 0, false);
    qt_image im = decode_ok(&m, 1, &s);
    expect_rgb(&im, want);
    free(m.data);
    qt_scratch_free(&s);
}

static void test_png_palette(void **state)
{
    (void)state;
    qt_data_scratch s = {0};
    png_color pal[40];
    uint8_t trns[40], idx[W * H], want[W * H * 3];
    for (int k = 0; k < 40; k++) {
        pal[k] = (png_color){(png_byte)(k * 6), (png_byte)(250 - k * 5), (png_byte)(k * k % 256)};
        trns[k] = (uint8_t)(k * 3); /* transparency must be ignored */
    }
    for (int i = 0; i < W * H; i++) {
        idx[i] = (uint8_t)(i % 40);
        want[3 * i] = pal[idx[i]].red;
        want[3 * i + 1] = pal[idx[i]].green;
        want[3 * i + 2] = pal[idx[i]].blue;
    }
    membuf m = png_encode(W, H, 8, PNG_COLOR_TYPE_PALETTE, idx, W, pal, 40, trns, 40, false);
    qt_image im = decode_ok(&m, 1, &s);
    expect_rgb(&im, want);
    free(m.data);
    qt_scratch_free(&s);
}

/* 16-bit samples: the 8-bit result is round(v / 257) (libpng's png_set_scale_16). */
static void test_png_16bit(void **state)
{
    (void)state;
    qt_data_scratch s = {0};
    static uint8_t be[W * H * 6], gray[W * H * 2], want[W * H * 3], wantg[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) {
        unsigned v = (unsigned)(i * 997 + 12345) % 65536;
        be[2 * i] = (uint8_t)(v >> 8);
        be[2 * i + 1] = (uint8_t)v;
        want[i] = (uint8_t)floor(v / 257.0 + 0.5);
    }
    for (int i = 0; i < W * H; i++) {
        unsigned v = (unsigned)(i * 40503u) % 65536;
        gray[2 * i] = (uint8_t)(v >> 8);
        gray[2 * i + 1] = (uint8_t)v;
        wantg[3 * i] = wantg[3 * i + 1] = wantg[3 * i + 2] = (uint8_t)floor(v / 257.0 + 0.5);
    }
    membuf m = png_encode(W, H, 16, PNG_COLOR_TYPE_RGB, be, W * 6, NULL, 0, NULL, 0, false);
    qt_image im = decode_ok(&m, 1, &s);
    expect_rgb(&im, want);
    free(m.data);
    m = png_encode(W, H, 16, PNG_COLOR_TYPE_GRAY, gray, W * 2, NULL, 0, NULL, 0, true);
    im = decode_ok(&m, 1, &s);
    expect_rgb(&im, wantg);
    free(m.data);
    qt_scratch_free(&s);
}

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n, int *max_diff)
{
    double sum = 0;
    *max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        if (d > *max_diff) *max_diff = d;
    }
    return sum / (double)n;
}

/* Quality 95, 4:4:4, a smooth image: the decoded pixels are within mean |e| <= 1.5 and
 * max |e| <= 10 of the source, and the 1/2 DCT-scaled decode within the same of the 2x2
 * box average (JPEG is lossy; measured: 0.61 / 4 full size, 0.63 / 3 at 1/2). */
static void test_jpeg_decode_error_bound_and_dct_scaling(void **state)
{
    (void)state;
    enum { JW = 96, JH = 64 };
    qt_data_scratch s = {0};
    static uint8_t rgb[JW * JH * 3], half[JW / 2 * JH / 2 * 3], gray[JW * JH], grgb[JW * JH * 3];
    smooth_rgb(JW, JH, rgb);
    membuf m = jpeg_encode(JW, JH, 3, rgb, 95);
    assert_int_equal(qt_image_sniff(m.data, m.n), QT_IMAGE_JPEG);
    qt_image im = decode_ok(&m, 1.0, &s);
    assert_true(im.w == JW && im.h == JH && im.full_w == JW && im.full_h == JH);
    int mx;
    double mad = mean_abs_diff(im.rgb, rgb, sizeof rgb, &mx);
    assert_true(mad <= 1.5);
    assert_true(mx <= 10);
    /* min_scale 0.4 -> the smallest factor >= 0.4 is 1/2 (factors are k/8: 3/8 < 0.4). */
    im = decode_ok(&m, 0.4, &s);
    assert_true(im.w == JW / 2 && im.h == JH / 2 && im.full_w == JW);
    for (int y = 0; y < JH / 2; y++)
        for (int x = 0; x < JW / 2; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) sum += rgb[((2 * y + dy) * JW + 2 * x + dx) * 3 + c];
                half[(y * (JW / 2) + x) * 3 + c] = (uint8_t)((sum + 2) / 4);
            }
    mad = mean_abs_diff(im.rgb, half, sizeof half, &mx);
    assert_true(mad <= 1.5);
    assert_true(mx <= 10);
    im = decode_ok(&m, 0.1, &s); /* 1/8 is the smallest factor */
    assert_true(im.w == JW / 8 && im.h == JH / 8);
    free(m.data);
    /* Gray JPEG -> three equal channels. */
    for (int i = 0; i < JW * JH; i++) {
        gray[i] = rgb[3 * i + 1];
        grgb[3 * i] = grgb[3 * i + 1] = grgb[3 * i + 2] = gray[i];
    }
    m = jpeg_encode(JW, JH, 1, gray, 95);
    im = decode_ok(&m, 1.0, &s);
    for (int i = 0; i < JW * JH; i++) assert_true(im.rgb[3 * i] == im.rgb[3 * i + 2]);
    mad = mean_abs_diff(im.rgb, grgb, sizeof grgb, &mx);
    assert_true(mad <= 1.5 && mx <= 10);
    free(m.data);
    qt_scratch_free(&s);
}

static void expect_decode_error(const uint8_t *buf, size_t n, const char *needle)
{
    qt_data_scratch s = {0};
    qt_image im;
    char err[512] = "";
    assert_true(qt_image_decode(buf, n, 1.0, &s, 1, &im, err, sizeof err) < 0);
    if (!strstr(err, needle)) fail_msg("'%s' not in '%s'", needle, err);
    qt_scratch_free(&s);
}

static void test_corrupt_and_truncated(void **state)
{
    (void)state;
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 31);
    membuf p = png_encode(W, H, 8, PNG_COLOR_TYPE_RGB, rgb, W * 3, NULL, 0, NULL, 0, false);
    expect_decode_error(p.data, p.n / 2, "corrupt PNG");
    expect_decode_error(p.data, 20, "corrupt PNG");
    p.data[40] ^= 0x55; /* inside IHDR or IDAT: CRC mismatch */
    expect_decode_error(p.data, p.n, "corrupt PNG");
    free(p.data);
    static uint8_t big[64 * 64 * 3];
    smooth_rgb(64, 64, big);
    membuf j = jpeg_encode(64, 64, 3, big, 90);
    expect_decode_error(j.data, j.n * 2 / 3, "corrupt JPEG");
    expect_decode_error(j.data, 4, "corrupt JPEG");
    free(j.data);
    const uint8_t text[] = "P6\n2 2\n255\n............";
    expect_decode_error(text, sizeof text, "not a PNG or JPEG file");
    expect_decode_error(text, 0, "not a PNG or JPEG file");
}

/* Box = the whole image at its own size: an exact copy (then normalised); a flip mirrors;
 * a 2x downscale uses the triangle filter of radius 2: taps 1/8, 3/8, 3/8, 1/8 inside,
 * renormalised at the borders. */
static void test_resample_geometry(void **state)
{
    (void)state;
    enum { RW = 8, RH = 6 };
    qt_data_scratch s = {0};
    uint8_t rgb[RW * RH * 3];
    for (int i = 0; i < RW * RH * 3; i++) rgb[i] = (uint8_t)((i * 37) % 256);
    const float mean[3] = {0.5f, 0.25f, 0.0f}, std[3] = {0.5f, 0.25f, 1.0f};
    float out[3 * RW * RH], flipped[3 * RW * RH];
    qt_image_resample(rgb, RW, RH, 0, 0, RW, RH, RW, RH, false, mean, std, &s, 3, out);
    qt_image_resample(rgb, RW, RH, 0, 0, RW, RH, RW, RH, true, mean, std, &s, 3, flipped);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < RH; y++)
            for (int x = 0; x < RW; x++) {
                double v = rgb[(y * RW + x) * 3 + c], ref = (v / 255.0 - mean[c]) / std[c];
                assert_float_equal(out[(c * RH + y) * RW + x], ref, 1e-5);
                assert_float_equal(flipped[(c * RH + y) * RW + (RW - 1 - x)], ref, 1e-5);
            }
    /* Sub-box at integer offsets, scale 1: a shifted copy. */
    float sub[3 * 3 * 2];
    qt_image_resample(rgb, RW, RH, 4, 2, 3, 2, 3, 2, false, mean, std, &s, 3, sub);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++) {
                double v = rgb[((y + 2) * RW + x + 4) * 3 + c];
                assert_float_equal(sub[(c * 2 + y) * 3 + x], (v / 255.0 - mean[c]) / std[c], 1e-5);
            }
    /* 2x: output o covers source 2o-1 .. 2o+2 with weights 1,3,3,1 (/8); at the left
     * border tap -1 is dropped: 3,3,1 (/7); at the right border tap 8: 1,3,3 (/7). */
    const float one[3] = {0, 0, 0}, unit[3] = {1.0f / 255, 1.0f / 255, 1.0f / 255};
    float half[3 * 4 * 3];
    qt_image_resample(rgb, RW, RH, 0, 0, RW, RH, 4, 3, false, one, unit, &s, 3, half);
    for (int c = 0; c < 3; c++)
        for (int oy = 0; oy < 3; oy++)
            for (int ox = 0; ox < 4; ox++) {
                double acc = 0, wsum_y = 0;
                const double tw[4] = {1, 3, 3, 1};
                for (int ky = 0; ky < 4; ky++) {
                    int sy = 2 * oy - 1 + ky;
                    if (sy < 0 || sy >= RH) continue;
                    double row = 0, wsum_x = 0;
                    for (int kx = 0; kx < 4; kx++) {
                        int sx = 2 * ox - 1 + kx;
                        if (sx < 0 || sx >= RW) continue;
                        row += tw[kx] * rgb[(sy * RW + sx) * 3 + c];
                        wsum_x += tw[kx];
                    }
                    acc += tw[ky] * row / wsum_x;
                    wsum_y += tw[ky];
                }
                assert_float_equal(half[(c * 3 + oy) * 4 + ox], acc / wsum_y, 1e-3);
            }
    qt_scratch_free(&s);
}

/* RandomResizedCrop: the box lies inside the image, its area fraction is within
 * [0.08, 1] and its aspect ratio within [3/4, 4/3] (up to whole-pixel rounding); draws
 * repeat for the same (item, epoch) and vary across items; an extreme image falls back
 * to the clamped centre crop. */
static void test_random_resized_crop(void **state)
{
    (void)state;
    qt_philox_key key = qt_philox_make_key(99, QT_RNG_DATA);
    const int w = 300, h = 200;
    double min_frac = 1, max_frac = 0;
    int distinct_x = 0, last_x = -1, flips = 0;
    for (int64_t item = 0; item < 2000; item++) {
        int bx, by, bw, bh, bx2, by2, bw2, bh2;
        qt_aug_random_resized_crop(key, item, 3, w, h, 0.08, 1.0, 0.75, 4.0 / 3, &bx, &by, &bw, &bh);
        qt_aug_random_resized_crop(key, item, 3, w, h, 0.08, 1.0, 0.75, 4.0 / 3, &bx2, &by2, &bw2, &bh2);
        assert_true(bx == bx2 && by == by2 && bw == bw2 && bh == bh2);
        assert_true(bx >= 0 && by >= 0 && bw >= 1 && bh >= 1 && bx + bw <= w && by + bh <= h);
        double frac = (double)bw * bh / (w * h), ratio = (double)bw / bh;
        /* Rounding each side by <= 0.5 px moves the area and ratio by a bounded amount. */
        double slack_a = 0.5 * (bw + bh + 0.5) / (w * h);
        assert_true(frac >= 0.08 - slack_a && frac <= 1.0 + slack_a);
        assert_true(ratio >= 0.75 * (bw - 0.5) / (bw + 0.0) * bh / (bh + 0.5) - 1e-9);
        assert_true(ratio <= 4.0 / 3 * (bw + 0.5) / bw * bh / (bh - 0.5) + 1e-9);
        if (frac < min_frac) min_frac = frac;
        if (frac > max_frac) max_frac = frac;
        distinct_x += bx != last_x;
        last_x = bx;
        flips += qt_aug_draw_flip(key, item, 3);
    }
    /* 300x200 with ratio <= 4/3: the largest box is 267x200, 0.89 of the area. */
    assert_true(min_frac < 0.1 && max_frac > 0.8);
    assert_true(distinct_x > 1500);
    assert_in_range(flips, 900, 1100); /* binomial(2000, 1/2): sd 22 */
    /* 1000 x 10: no attempt fits (h = sqrt(area*frac/ratio) >= 24 > 10): the fallback is
     * the full height with ratio 4/3: w = round(10 * 4/3) = 13, centred. */
    int bx, by, bw, bh;
    qt_aug_random_resized_crop(key, 0, 0, 1000, 10, 0.08, 1.0, 0.75, 4.0 / 3, &bx, &by, &bw, &bh);
    assert_true(bw == 13 && bh == 10 && bx == (1000 - 13) / 2 && by == 0);
    /* Eval box: shorter side 200 -> 256 means a 224 crop is 175 source pixels, centred. */
    double cx, cy, cw, ch;
    qt_aug_center_box(300, 200, 256, 224, &cx, &cy, &cw, &ch);
    assert_float_equal(cw, 175.0, 1e-9);
    assert_float_equal(ch, 175.0, 1e-9);
    assert_float_equal(cx, 62.5, 1e-9);
    assert_float_equal(cy, 12.5, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_rgb_rgba_interlaced),
        cmocka_unit_test(test_png_gray_depths_and_alpha),
        cmocka_unit_test(test_png_palette),
        cmocka_unit_test(test_png_16bit),
        cmocka_unit_test(test_jpeg_decode_error_bound_and_dct_scaling),
        cmocka_unit_test(test_corrupt_and_truncated),
        cmocka_unit_test(test_resample_geometry),
        cmocka_unit_test(test_random_resized_crop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
