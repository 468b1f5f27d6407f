/* tests/unit/dataplane/test_balancer.c */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "snapshot.h"

struct fixture {
    struct balancer_slot slot[8];
    struct balancer_slot *ptr[8];
    struct balancer b;
};

static void setup(struct fixture *f, uint8_t algo, const uint32_t *weights, uint32_t n)
{
    memset(f, 0, sizeof(*f));
    for (uint32_t i = 0; i < n; i++) {
        f->slot[i].weight = weights[i];
        f->ptr[i] = &f->slot[i];
    }
    f->b.algorithm = algo;
    f->b.n = n;
    f->b.slots = f->ptr;
}

static bool skip_one(void *ctx, uint32_t i)
{
    return i != *(uint32_t *)ctx;
}

static bool none(void *ctx, uint32_t i)
{
    return false;
}

START_TEST(rr_cycles_in_order)
{
    struct fixture f;
    uint32_t w[3] = {1, 1, 1};
    setup(&f, SNAP_ALGO_ROUND_ROBIN, w, 3);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(balancer_pick(&f.b, NULL, NULL), i % 3);
}
END_TEST

START_TEST(rr_skips_ineligible)
{
    struct fixture f;
    uint32_t w[3] = {1, 1, 1};
    setup(&f, SNAP_ALGO_ROUND_ROBIN, w, 3);
    uint32_t down = 1;
    int counts[3] = {0};
    for (int i = 0; i < 100; i++)
        counts[balancer_pick(&f.b, skip_one, &down)]++;
    ck_assert_int_eq(counts[0], 50);
    ck_assert_int_eq(counts[1], 0);
    ck_assert_int_eq(counts[2], 50);
}
END_TEST

START_TEST(none_eligible_gives_minus_one)
{
    struct fixture f;
    uint32_t w[2] = {3, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    ck_assert_int_eq(balancer_pick(&f.b, none, NULL), -1);
    f.b.algorithm = SNAP_ALGO_ROUND_ROBIN;
    ck_assert_int_eq(balancer_pick(&f.b, none, NULL), -1);
    f.b.n = 0;
    ck_assert_int_eq(balancer_pick(&f.b, NULL, NULL), -1);
}
END_TEST

START_TEST(swrr_exact_shares_over_a_cycle)
{
    struct fixture f;
    uint32_t w[3] = {5, 3, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 3);
    for (int cycle = 0; cycle < 10; cycle++) {
        int counts[3] = {0};
        for (int i = 0; i < 9; i++)
            counts[balancer_pick(&f.b, NULL, NULL)]++;
        ck_assert_int_eq(counts[0], 5);
        ck_assert_int_eq(counts[1], 3);
        ck_assert_int_eq(counts[2], 1);
    }
}
END_TEST

START_TEST(swrr_interleaves_smoothly)
{
    struct fixture f;
    uint32_t w[3] = {5, 1, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 3);
    /* nginx's smooth weighted round robin: a a b a c a a */
    const int want[7] = {0, 0, 1, 0, 2, 0, 0};
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(balancer_pick(&f.b, NULL, NULL), want[i]);
}
END_TEST

START_TEST(swrr_never_bursts)
{
    /* with weights 10:1 the heavy backend never gets more than 10 in a row
     * and the light one comes once per cycle of 11 */
    struct fixture f;
    uint32_t w[2] = {10, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    int run = 0, max_run = 0, light = 0;
    for (int i = 0; i < 1100; i++) {
        int p = balancer_pick(&f.b, NULL, NULL);
        if (p == 0) {
            run++;
            if (run > max_run)
                max_run = run;
        } else {
            run = 0;
            light++;
        }
    }
    ck_assert_int_le(max_run, 10);
    ck_assert_int_eq(light, 100);
}
END_TEST

START_TEST(swrr_skips_and_keeps_shares_of_the_rest)
{
    struct fixture f;
    uint32_t w[3] = {2, 5, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 3);
    uint32_t down = 1;
    int counts[3] = {0};
    for (int i = 0; i < 300; i++)
        counts[balancer_pick(&f.b, skip_one, &down)]++;
    ck_assert_int_eq(counts[0], 200);
    ck_assert_int_eq(counts[1], 0);
    ck_assert_int_eq(counts[2], 100);
}
END_TEST

Suite *balancer_suite(void);
Suite *balancer_suite(void)
{
    Suite *s = suite_create("balancer");
    TCase *rr = tcase_create("round_robin");
    tcase_add_test(rr, rr_cycles_in_order);
    tcase_add_test(rr, rr_skips_ineligible);
    tcase_add_test(rr, none_eligible_gives_minus_one);
    suite_add_tcase(s, rr);
    TCase *sw = tcase_create("smooth_weighted");
    tcase_add_test(sw, swrr_exact_shares_over_a_cycle);
    tcase_add_test(sw, swrr_interleaves_smoothly);
    tcase_add_test(sw, swrr_never_bursts);
    tcase_add_test(sw, swrr_skips_and_keeps_shares_of_the_rest);
    suite_add_tcase(s, sw);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(balancer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
