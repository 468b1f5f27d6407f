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

/* ---- effective weights ------------------------------------------------------------- */

START_TEST(effective_weight_decays_and_recovers)
{
    struct balancer_slot s = {.weight = 8};
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 8);
    balancer_slot_on_failure(&s);
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 6);
    balancer_slot_on_failure(&s);
    balancer_slot_on_failure(&s);
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 2);
    balancer_slot_on_failure(&s);
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 1);
    balancer_slot_on_failure(&s); /* floor */
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 1);
    for (uint32_t i = 2; i <= 8; i++) {
        balancer_slot_on_success(&s);
        ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), i);
    }
    balancer_slot_on_success(&s); /* ceiling */
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 8);
    /* small weights still drop by one */
    struct balancer_slot t = {.weight = 2};
    balancer_slot_on_failure(&t);
    ck_assert_uint_eq(balancer_slot_weight(&t, 0, 0), 1);
    /* a configured weight lowered below the effective one caps it */
    s.weight = 3;
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 3);
    balancer_slot_on_failure(&s);
    ck_assert_uint_eq(balancer_slot_weight(&s, 0, 0), 2);
}
END_TEST

START_TEST(swrr_uses_effective_weights)
{
    struct fixture f;
    uint32_t w[2] = {4, 4};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    balancer_slot_on_failure(&f.slot[0]);
    balancer_slot_on_failure(&f.slot[0]); /* 4 -> 2 */
    int counts[2] = {0};
    for (int i = 0; i < 600; i++)
        counts[balancer_pick(&f.b, NULL, NULL)]++;
    ck_assert_int_eq(counts[0], 200);
    ck_assert_int_eq(counts[1], 400);
    balancer_slot_on_success(&f.slot[0]);
    balancer_slot_on_success(&f.slot[0]); /* back to 4 */
    counts[0] = counts[1] = 0;
    for (int i = 0; i < 600; i++)
        counts[balancer_pick(&f.b, NULL, NULL)]++;
    ck_assert_int_ge(counts[0], 299);
    ck_assert_int_le(counts[0], 301);
}
END_TEST

/* ---- slow start -------------------------------------------------------------------- */

/* Share of slot 1 in percent over 10,000 picks at <now>. */
static double share_at(struct fixture *f, uint64_t now)
{
    int hits = 0;
    for (int i = 0; i < 10000; i++)
        hits += balancer_pick_at(&f->b, now, NULL, NULL) == 1;
    return hits / 100.0;
}

START_TEST(slow_start_ramps_linearly)
{
    struct fixture f;
    uint32_t w[2] = {10, 10};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    f.b.slow_start_ms = 10000;
    f.slot[1].start_ms = 5000; /* slot 1 just came back */
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[1], 10000, 5000), 1);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[1], 10000, 10000), 5);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[1], 10000, 15000), 10);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[1], 10000, 4000), 1); /* clock behind */
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[0], 10000, 5000), 10);
    /* weight 1 + 0.9 * 10 * p against 10: 1/11, 5.5/15.5, 10/20 */
    double s0 = share_at(&f, 5000);
    double s50 = share_at(&f, 10000);
    double s100 = share_at(&f, 15000);
    ck_assert_double_eq_tol(s0, 100.0 / 11, 0.5);
    ck_assert_double_eq_tol(s50, 100.0 * 5.5 / 15.5, 0.5);
    ck_assert_double_eq_tol(s100, 50.0, 0.5);
    /* the weight itself grows linearly: the midpoint is the mean of the ends */
    double w0 = 10 * s0 / (100 - s0), w50 = 10 * s50 / (100 - s50);
    double w100 = 10 * s100 / (100 - s100);
    ck_assert_double_eq_tol(w50, (w0 + w100) / 2, 0.2);
    /* balancer_pick() takes every ramp as over */
    f.slot[1].start_ms = 20000;
    int hits = 0;
    for (int i = 0; i < 1000; i++)
        hits += balancer_pick(&f.b, NULL, NULL) == 1;
    ck_assert_int_ge(hits, 499);
    ck_assert_int_le(hits, 501);
}
END_TEST

START_TEST(slow_start_ramps_weight_one_too)
{
    struct fixture f;
    uint32_t w[2] = {1, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    f.b.slow_start_ms = 1000;
    f.slot[0].start_ms = 1;
    double s = share_at(&f, 1); /* slot 1 is old: slot 0 gets 0.1 of 1.1 */
    ck_assert_double_eq_tol(s, 100.0 / 1.1, 0.5);
    ck_assert_double_eq_tol(share_at(&f, 1001), 50.0, 0.5);
    /* start_ms 0: no ramp at all */
    f.slot[0].start_ms = 0;
    ck_assert_double_eq_tol(share_at(&f, 1), 50.0, 0.5);
}
END_TEST

/* ---- least request (power of two choices) ------------------------------------------ */

struct big {
    struct balancer_slot slot[100];
    struct balancer_slot *ptr[100];
    struct balancer b;
};

static void big_setup(struct big *g, uint32_t n)
{
    memset(g, 0, sizeof(*g));
    for (uint32_t i = 0; i < n; i++) {
        g->slot[i].weight = 1;
        g->ptr[i] = &g->slot[i];
    }
    g->b.algorithm = SNAP_ALGO_LEAST_REQUEST;
    g->b.n = n;
    g->b.slots = g->ptr;
    balancer_seed(&g->b, 12345);
}

static bool only_listed(void *ctx, uint32_t i)
{
    const uint32_t *ok = ctx; /* ok[0] entries follow */
    for (uint32_t k = 1; k <= ok[0]; k++) {
        if (ok[k] == i)
            return true;
    }
    return false;
}

START_TEST(p2c_fewer_active_wins)
{
    struct big g;
    big_setup(&g, 2);
    g.slot[0].active = 5;
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(balancer_pick(&g.b, NULL, NULL), 1);
    /* three slots, one idle: it wins whenever drawn, i.e. 2 times in 3 */
    big_setup(&g, 3);
    g.slot[1].active = 10;
    g.slot[2].active = 10;
    int counts[3] = {0};
    for (int i = 0; i < 30000; i++)
        counts[balancer_pick(&g.b, NULL, NULL)]++;
    ck_assert_int_ge(counts[0], 19400);
    ck_assert_int_le(counts[0], 20600);
    ck_assert_int_ge(counts[1], 4500);
    ck_assert_int_ge(counts[2], 4500);
}
END_TEST

START_TEST(p2c_equal_active_spreads_evenly)
{
    struct big g;
    big_setup(&g, 4);
    for (int i = 0; i < 4; i++)
        g.slot[i].active = 3;
    int counts[4] = {0};
    for (int i = 0; i < 10000; i++)
        counts[balancer_pick(&g.b, NULL, NULL)]++;
    for (int i = 0; i < 4; i++) {
        ck_assert_int_ge(counts[i], 2300);
        ck_assert_int_le(counts[i], 2700);
    }
}
END_TEST

START_TEST(p2c_counts_active_per_weight)
{
    struct big g;
    big_setup(&g, 2);
    g.slot[0].weight = 1;
    g.slot[1].weight = 3;
    g.slot[0].active = 1;
    g.slot[1].active = 4; /* 2/1 against 5/3 */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(balancer_pick(&g.b, NULL, NULL), 1);
    g.slot[1].active = 6; /* 2/1 against 7/3 */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(balancer_pick(&g.b, NULL, NULL), 0);
    /* a slot in slow start counts with its ramped weight */
    g.slot[1].active = 4;
    g.slot[1].start_ms = 1000;
    g.b.slow_start_ms = 1000;
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(balancer_pick_at(&g.b, 1000, NULL, NULL), 0);
    /* a failing slot's lowered effective weight too */
    g.slot[1].start_ms = 0;
    balancer_slot_on_failure(&g.slot[1]);
    balancer_slot_on_failure(&g.slot[1]); /* 3 -> 1 */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(balancer_pick_at(&g.b, 5000, NULL, NULL), 0);
}
END_TEST

START_TEST(p2c_never_picks_ineligible)
{
    struct big g;
    big_setup(&g, 100);
    /* most eligible: the probes find them */
    uint32_t down = 7;
    for (int i = 0; i < 10000; i++)
        ck_assert_int_ne(balancer_pick(&g.b, skip_one, &down), 7);
    /* two of a hundred: the counting fallback, both used about evenly */
    uint32_t two[3] = {2, 13, 87};
    int c13 = 0, c87 = 0;
    for (int i = 0; i < 10000; i++) {
        int p = balancer_pick(&g.b, only_listed, two);
        ck_assert(p == 13 || p == 87);
        c13 += p == 13;
        c87 += p == 87;
    }
    ck_assert_int_ge(c13, 4700);
    ck_assert_int_ge(c87, 4700);
    /* one eligible: always it; none: -1 */
    uint32_t one[2] = {1, 42};
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(balancer_pick(&g.b, only_listed, one), 42);
    ck_assert_int_eq(balancer_pick(&g.b, none, NULL), -1);
    g.b.n = 1;
    ck_assert_int_eq(balancer_pick(&g.b, NULL, NULL), 0);
    ck_assert_int_eq(balancer_pick(&g.b, none, NULL), -1);
}
END_TEST

START_TEST(p2c_three_eligible_of_many_even)
{
    struct big g;
    big_setup(&g, 100);
    g.b.rng = 0; /* seeded from the balancer's address */
    uint32_t three[4] = {3, 0, 50, 99};
    int counts[100] = {0};
    for (int i = 0; i < 9000; i++)
        counts[balancer_pick(&g.b, only_listed, three)]++;
    ck_assert_int_ge(counts[0], 2700);
    ck_assert_int_ge(counts[50], 2700);
    ck_assert_int_ge(counts[99], 2700);
    ck_assert_int_eq(counts[0] + counts[50] + counts[99], 9000);
}
END_TEST

START_TEST(set_weight_and_restart_are_the_balancers)
{
    struct fixture f;
    const uint32_t w[] = {5, 1};
    setup(&f, SNAP_ALGO_WEIGHTED, w, 2);
    /* failures took slot 0 down to 2 of 5 */
    balancer_slot_on_failure(&f.slot[0]);
    balancer_slot_on_failure(&f.slot[0]);
    balancer_slot_on_failure(&f.slot[0]);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[0], 0, 0), 2);
    /* the same weight again keeps what failures earned ... */
    balancer_slot_set_weight(&f.slot[0], 5);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[0], 0, 0), 2);
    /* ... a new one starts whole */
    balancer_slot_set_weight(&f.slot[0], 8);
    ck_assert_uint_eq(balancer_slot_weight(&f.slot[0], 0, 0), 8);
    /* a restart: the next cycle is the one a fresh balancer would run */
    for (int i = 0; i < 5; i++)
        balancer_pick(&f.b, NULL, NULL);
    balancer_restart(&f.b);
    struct fixture g;
    const uint32_t w2[] = {8, 1};
    setup(&g, SNAP_ALGO_WEIGHTED, w2, 2);
    for (int i = 0; i < 18; i++)
        ck_assert_int_eq(balancer_pick(&f.b, NULL, NULL), balancer_pick(&g.b, NULL, NULL));
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
    TCase *ew = tcase_create("effective_weight");
    tcase_add_test(ew, set_weight_and_restart_are_the_balancers);
    tcase_add_test(ew, effective_weight_decays_and_recovers);
    tcase_add_test(ew, swrr_uses_effective_weights);
    suite_add_tcase(s, ew);
    TCase *ss = tcase_create("slow_start");
    tcase_add_test(ss, slow_start_ramps_linearly);
    tcase_add_test(ss, slow_start_ramps_weight_one_too);
    suite_add_tcase(s, ss);
    TCase *lr = tcase_create("least_request");
    tcase_add_test(lr, p2c_fewer_active_wins);
    tcase_add_test(lr, p2c_equal_active_spreads_evenly);
    tcase_add_test(lr, p2c_counts_active_per_weight);
    tcase_add_test(lr, p2c_never_picks_ineligible);
    tcase_add_test(lr, p2c_three_eligible_of_many_even);
    suite_add_tcase(s, lr);
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
