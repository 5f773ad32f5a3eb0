/* test_mpi_world.c — src/dist/world.c under mpirun (tests/mpi_exchange.sh): the
 * cross-rank consistency check, broadcast, sum, the hash, and the fp16 conversions of the
 * fp16 allreduce (exhaustive over all 65536 halves).
 */
#include "test_mpi_common.h"

#include "dist/exchange_internal.h"

static void test_check_same_equal(void **state)
{
    qt_world *w = *state;
    char cfg[] = "[optim] lr = 0.1\n[data] batch = 32\n";
    assert_int_equal(qt_world_check_same(w, cfg, sizeof cfg, "config"), 0);
    assert_int_equal(qt_world_check_same(w, NULL, 0, "empty"), 0);
}

/* The last rank differs (one byte, then only in length): -1 on every rank. */
static void test_check_same_differs(void **state)
{
    qt_world *w = *state;
    if (w->size == 1) skip();
    char cfg[] = "[optim] lr = 0.1\n[data] batch = 32\n";
    if (w->rank == 0) fprintf(stderr, "test_check_same_differs: the error lines below are expected\n");
    if (w->rank == w->size - 1) cfg[12] = '2';
    assert_int_equal(qt_world_check_same(w, cfg, sizeof cfg, "config"), -1);
    char cfg2[] = "abcdef";
    size_t len = w->rank == w->size - 1 ? 5 : 6;
    assert_int_equal(qt_world_check_same(w, cfg2, len, "layout"), -1);
}

static void test_bcast_floats(void **state)
{
    qt_world *w = *state;
    size_t n = 1000003;
    float *x = qt_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = w->rank == 0 ? (float)i * 0.5f : -1.0f;
    assert_int_equal(qt_world_bcast_floats(w, x, n), 0);
    bool ok = true;
    for (size_t i = 0; i < n; i++) ok &= x[i] == (float)i * 0.5f;
    TM_ASSERT_ALL(w, ok);
    free(x);
}

static void test_allreduce_sum(void **state)
{
    qt_world *w = *state;
    double v[3] = {1.0, (double)w->rank, 0.25};
    assert_int_equal(qt_world_allreduce_sum(w, v, 3), 0);
    int n = w->size;
    TM_ASSERT_ALL(w, v[0] == n && v[1] == n * (n - 1) / 2.0 && v[2] == 0.25 * n);
}

/* Any single flipped bit changes the hash; a prefix hashes differently from the whole. */
static void test_hash(void **state)
{
    (void)state;
    unsigned char buf[67];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 37 + 1);
    unsigned long long h0 = qt_world_hash(buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (unsigned char)(1u << b);
            assert_true(qt_world_hash(buf, sizeof buf) != h0);
            buf[i] ^= (unsigned char)(1u << b);
        }
    for (size_t len = 0; len < sizeof buf; len++) assert_true(qt_world_hash(buf, len) != h0);
    assert_true(qt_world_hash(buf, sizeof buf) == h0);
}

/* Every half converts to the float it denotes and back to itself (NaNs stay NaN); ties
 * round to even; the largest finite half is 65504 and 65520 rounds to Inf. */
static void test_half_conversion(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_half_to_float((uint16_t)h);
        uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
        if (exp == 31 && man) {
            assert_true(isnan(f));
            assert_true((qt_half_from_float(f) & 0x7c00) == 0x7c00 && (qt_half_from_float(f) & 0x3ff));
            continue;
        }
        double want = exp == 0 ? ldexp(man, -24)
                               : (exp == 31 ? INFINITY : ldexp(1024 + man, (int)exp - 25));
        if (h & 0x8000) want = -want;
        assert_true((double)f == want);
        assert_int_equal(qt_half_from_float(f), h);
    }
    assert_int_equal(qt_half_from_float(1.0f + 0x1p-11f), 0x3c00);     /* tie: to even */
    assert_int_equal(qt_half_from_float(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie: to even */
    assert_int_equal(qt_half_from_float(65519.0f), 0x7bff);
    assert_int_equal(qt_half_from_float(65520.0f), 0x7c00);
    assert_int_equal(qt_half_from_float(0x1p-25f), 0x0000);            /* tie below min */
    assert_int_equal(qt_half_from_float(0x1.8p-25f), 0x0001);
}

int main(int argc, char **argv)
{
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_check_same_equal, w),
        cmocka_unit_test_prestate(test_check_same_differs, w),
        cmocka_unit_test_prestate(test_bcast_floats, w),
        cmocka_unit_test_prestate(test_allreduce_sum, w),
        cmocka_unit_test_prestate(test_hash, w),
        cmocka_unit_test_prestate(test_half_conversion, w),
    };
    int failed = cmocka_run_group_tests_name("mpi_world", tests, NULL, NULL);
    qt_world_destroy(w);
    return failed ? 1 : 0;
}
