/* tests/unit/controlplane/test_history.c */
#include "history.h"
#include "lb_err.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T0 1800000000000LL /* a step boundary: 1800000000000 % 5000 == 0 */

/* One data plane's report of backends "a" and "b" with cumulative counters:
 * <req> requests each, <err> of them errors, all in latency bucket <bucket>. */
struct fake {
    Lb__V1__Report r;
    Lb__V1__BackendReport b[2];
    Lb__V1__BackendReport *bp[2];
    uint64_t hist[2][HISTORY_NBUCKETS];
};

static void fake_fill(struct fake *f, const char *node, int64_t started, uint64_t req, uint64_t err,
                      size_t bucket)
{
    memset(f, 0, sizeof(*f));
    lb__v1__report__init(&f->r);
    f->r.node_id = (char *)node;
    f->r.started_unix_ms = started;
    f->r.pid = 42;
    f->r.binary_version = (char *)"9.9.9";
    static char *ids[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        lb__v1__backend_report__init(&f->b[i]);
        f->b[i].id = ids[i];
        f->b[i].requests = req;
        f->b[i].errors = err;
        f->b[i].latency_sum_us = req * 1000;
        f->hist[i][bucket] = req;
        f->b[i].latency_buckets = f->hist[i];
        f->b[i].n_latency_buckets = HISTORY_NBUCKETS;
        f->b[i].breaker = i == 1 ? LB__V1__BREAKER_STATE__BREAKER_OPEN : 0;
        f->b[i].active = 2;
        f->bp[i] = &f->b[i];
    }
    f->r.backends = f->bp;
    f->r.n_backends = 2;
}

static const json_t *backend_of(const json_t *j, const char *id)
{
    size_t i;
    const json_t *b;
    json_array_foreach(json_object_get(j, "backends"), i, b)
    {
        if (strcmp(json_string_value(json_object_get(b, "id")), id) == 0)
            return b;
    }
    return NULL;
}

/* The value of array <key> of backend <id> at step <k> from the end (0 = now). */
static const json_t *at(const json_t *j, const char *id, const char *key, size_t k)
{
    const json_t *arr = json_object_get(backend_of(j, id), key);
    return json_array_get(arr, json_array_size(arr) - 1 - k);
}

START_TEST(deltas_land_in_their_step)
{
    struct history *h = history_new();
    struct fake f;
    fake_fill(&f, "dp1", 1, 1000, 0, 2); /* the first report is a base only */
    ck_assert_int_eq(history_add(h, &f.r, T0, NULL), LB_OK);
    fake_fill(&f, "dp1", 1, 1050, 5, 2);
    ck_assert_int_eq(history_add(h, &f.r, T0 + 1000, NULL), LB_OK);
    fake_fill(&f, "dp1", 1, 1100, 5, 2); /* next step */
    ck_assert_int_eq(history_add(h, &f.r, T0 + 6000, NULL), LB_OK);

    json_t *j = history_json(h, T0 + 10000 - 1, true);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "slots")), HISTORY_SLOTS);
    ck_assert_uint_eq(json_array_size(json_object_get(backend_of(j, "a"), "rps")), HISTORY_SLOTS);
    /* now: 50 requests in 5 s; the step before: 50 requests, 5 errors */
    ck_assert_double_eq_tol(json_real_value(at(j, "a", "rps", 0)), 10.0, 0.01);
    ck_assert_double_eq_tol(json_real_value(at(j, "a", "rps", 1)), 10.0, 1e-9);
    ck_assert_double_eq_tol(json_real_value(at(j, "a", "err_rate", 1)), 0.1, 1e-9);
    ck_assert_double_eq_tol(json_real_value(at(j, "a", "err_rate", 0)), 0.0, 1e-9);
    ck_assert(json_is_null(at(j, "a", "rps", 2))); /* no report then */
    /* bucket 2 is (0.001, 0.0025] s: the median is interpolated inside it */
    double p50 = json_real_value(at(j, "a", "p50_ms", 0));
    ck_assert(p50 > 1.0 && p50 <= 2.5);
    /* per data plane: the last two reports, 5 s apart, 50 requests */
    const json_t *dp = json_array_get(json_object_get(j, "dataplanes"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(dp, "node_id")), "dp1");
    ck_assert_str_eq(json_string_value(json_object_get(dp, "binary_version")), "9.9.9");
    ck_assert_int_eq(json_integer_value(json_object_get(dp, "pid")), 42);
    const json_t *b = json_array_get(json_object_get(dp, "backends"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(b, "breaker")), "open");
    ck_assert_double_eq_tol(json_real_value(json_object_get(b, "rps")), 10.0, 1e-9);
    json_decref(j);

    /* without series: no arrays, the "now" stays */
    j = history_json(h, T0 + 6000, false);
    ck_assert_ptr_null(json_object_get(backend_of(j, "a"), "rps"));
    ck_assert_ptr_nonnull(json_object_get(backend_of(j, "a"), "now"));
    json_decref(j);
    history_free(h);
}
END_TEST

START_TEST(data_planes_sum_and_restarts_count_from_zero)
{
    struct history *h = history_new();
    struct fake f;
    fake_fill(&f, "dp1", 1, 100, 0, 0);
    history_add(h, &f.r, T0, NULL);
    fake_fill(&f, "dp2", 1, 7000, 0, 0);
    history_add(h, &f.r, T0, NULL);
    fake_fill(&f, "dp1", 1, 110, 0, 0);
    history_add(h, &f.r, T0 + 1000, NULL);
    fake_fill(&f, "dp2", 1, 7010, 0, 0);
    history_add(h, &f.r, T0 + 1000, NULL);
    /* dp1 restarted: its counters began again; its first report is a base */
    fake_fill(&f, "dp1", 2, 3, 0, 0);
    history_add(h, &f.r, T0 + 2000, NULL);
    fake_fill(&f, "dp1", 2, 8, 0, 0);
    history_add(h, &f.r, T0 + 3000, NULL);
    json_t *j = history_json(h, T0 + 4999, true);
    /* in flight now: 2 from each data plane; 10 + 10 + 5 requests in this step */
    ck_assert_int_eq(json_integer_value(
                         json_object_get(json_object_get(backend_of(j, "b"), "now"), "in_flight")),
                     4);
    ck_assert_double_eq_tol(json_real_value(at(j, "b", "rps", 0)), 25 / 5.0, 0.01);
    json_decref(j);
    history_free(h);
}
END_TEST

START_TEST(the_ring_forgets_after_15_minutes)
{
    struct history *h = history_new();
    struct fake f;
    fake_fill(&f, "dp1", 1, 0, 0, 0);
    history_add(h, &f.r, T0, NULL);
    fake_fill(&f, "dp1", 1, 50, 0, 0);
    history_add(h, &f.r, T0 + 1000, NULL);
    /* the same slot index one ring later: the old step's counts are gone */
    int64_t later = T0 + (int64_t)HISTORY_SLOTS * HISTORY_STEP_MS;
    fake_fill(&f, "dp1", 1, 50, 0, 0);
    history_add(h, &f.r, later - 1000, NULL); /* silent for long: a base again */
    fake_fill(&f, "dp1", 1, 60, 0, 0);
    history_add(h, &f.r, later, NULL);
    json_t *j = history_json(h, later + 2000, true); /* 2 s into the step: over 2 s */
    ck_assert_double_eq_tol(json_real_value(at(j, "a", "rps", 0)), 10 / 2.0, 1e-9);
    json_decref(j);
    /* no traffic for a whole ring: the series is dropped */
    int64_t much_later = later + (int64_t)HISTORY_SLOTS * HISTORY_STEP_MS + HISTORY_STEP_MS;
    fake_fill(&f, "other", 1, 0, 0, 0);
    f.r.n_backends = 0;
    history_add(h, &f.r, much_later, NULL);
    j = history_json(h, much_later, true);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "backends")), 0);
    json_decref(j);
    history_free(h);
}
END_TEST

START_TEST(quantiles)
{
    uint64_t hist[HISTORY_NBUCKETS] = {0};
    ck_assert(history_quantile_ms(hist, 0.5) < 0);
    hist[0] = 100; /* all under 0.5 ms */
    ck_assert(history_quantile_ms(hist, 0.99) <= 0.5);
    hist[HISTORY_NBUCKETS - 1] = 100; /* half over 10 s: the top bound is all that is known */
    ck_assert_double_eq_tol(history_quantile_ms(hist, 0.99), 10000.0, 1e-6);
    ck_assert(history_quantile_ms(hist, 0.25) <= 0.5);
}
END_TEST

START_TEST(junk_is_ignored)
{
    struct history *h = history_new();
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    ck_assert_int_eq(history_add(h, &r, T0, NULL), LB_OK); /* no node id */
    json_t *j = history_json(h, T0, true);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "dataplanes")), 0);
    json_decref(j);
    history_free(h);
    history_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("history");
    TCase *tc = tcase_create("history");
    tcase_add_test(tc, deltas_land_in_their_step);
    tcase_add_test(tc, data_planes_sum_and_restarts_count_from_zero);
    tcase_add_test(tc, the_ring_forgets_after_15_minutes);
    tcase_add_test(tc, quantiles);
    tcase_add_test(tc, junk_is_ignored);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
