/* test_quant_philox.c — Philox 4x32-10 known answers (Random123's kat_vectors) and the
 * codecs' vectorized 16-block window against the scalar generator of core/philox.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/philox.h"
#include "quant/quantizer.h"

static void check_kat(const uint32_t ctr[4], uint32_t k0, uint32_t k1, const uint32_t want[4])
{
    qt_philox_key key = {{k0, k1}};
    uint32_t out[4];
    qt_philox4x32_10(ctr, key, out);
    for (int i = 0; i < 4; i++) assert_int_equal(out[i], want[i]);
}

static void test_known_answers(void **state)
{
    (void)state;
    const uint32_t zero[4] = {0, 0, 0, 0}, ones[4] = {~0u, ~0u, ~0u, ~0u};
    const uint32_t pi[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
    const uint32_t w0[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    const uint32_t w1[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
    const uint32_t w2[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
    check_kat(zero, 0, 0, w0);
    check_kat(ones, ~0u, ~0u, w1);
    check_kat(pi, 0xa4093822u, 0x299f31d0u, w2);
}

/* The counter layout of philox.h: block index low/high, step, rank. */
static void test_keying(void **state)
{
    (void)state;
    qt_philox_key key = qt_philox_make_key(0x0123456789abcdefull, QT_RNG_CODEC);
    assert_int_equal(key.k[0], 0x89abcdefu);
    assert_int_equal(key.k[1], 0x01234567u ^ (3u * 0x9E3779B9u));
    uint32_t out[4], direct[4];
    uint64_t block = 0x100000002ull;
    qt_philox_block(key, block, 5, 9, out);
    const uint32_t ctr[4] = {2, 1, 5, 9};
    qt_philox4x32_10(ctr, key, direct);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i], direct[i]);
        assert_int_equal(qt_philox_u32(key, block * 4 + (uint64_t)i, 5, 9), direct[i]);
    }
}

/* Every lane of the window equals the scalar block, including block indices that carry
 * into the high counter word. */
static void test_window_matches_scalar(void **state)
{
    (void)state;
    const uint64_t starts[] = {0, 1, 12345, 0xfffffff8ull, 0x7ffffffffff0ull};
    const uint32_t steps[] = {0, 1, 0xffffffffu};
    for (size_t a = 0; a < sizeof starts / sizeof starts[0]; a++)
        for (size_t b = 0; b < 3; b++) {
            qt_philox_key key = qt_philox_make_key(42 + a, QT_RNG_CODEC);
            uint32_t win[64];
            qt_philox_window(key, starts[a], steps[b], (uint32_t)a, win);
            for (int j = 0; j < 16; j++) {
                uint32_t ref[4];
                qt_philox_block(key, starts[a] + (uint64_t)j, steps[b], (uint32_t)a, ref);
                for (int l = 0; l < 4; l++) assert_int_equal(win[4 * j + l], ref[l]);
            }
        }
}

/* u32 -> [0, 1): 24 bits, exact. */
static void test_unit(void **state)
{
    (void)state;
    assert_true(qt_u32_to_unit(0) == 0.0f);
    assert_true(qt_u32_to_unit(0xffffffffu) == 1.0f - 0x1p-24f);
    assert_true(qt_u32_to_unit(0x80000000u) == 0.5f);
    assert_true(qt_u32_to_unit(0x000000ffu) == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_keying),
        cmocka_unit_test(test_window_matches_scalar),
        cmocka_unit_test(test_unit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
