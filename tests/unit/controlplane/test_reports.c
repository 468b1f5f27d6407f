/* tests/unit/controlplane/test_reports.c */
#include "lb_err.h"
#include "reports.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reports_weights_next: injected windows ------------------------------- */

static struct reports_weight_in win(uint32_t cfg, uint32_t cur, uint64_t req, uint64_t err,
                                    uint64_t lat_ms_each)
{
    return (struct reports_weight_in){
        .configured = cfg,
        .current = cur,
        .w = {.requests = req, .errors = err, .latency_sum_us = req * lat_ms_each * 1000}};
}

START_TEST(errors_lose_weight_in_bounded_steps)
{
    /* demo-a (weight 8) fails every request; demo-b is healthy. */
    struct reports_weight_in in[2] = {win(8, 8, 100, 100, 10), win(4, 4, 100, 0, 10)};
    uint32_t out[2];
    uint32_t seen[8];
    for (int step = 0; step < 8; step++) {
        reports_weights_next(in, 2, out);
        ck_assert_uint_le(in[0].current - out[0], 2); /* at most 25 % of 8 per step */
        ck_assert_uint_eq(out[1], 4);
        seen[step] = out[0];
        in[0].current = out[0];
    }
    ck_assert_uint_eq(seen[0], 6);
    ck_assert_uint_eq(seen[1], 4);
    ck_assert_uint_eq(seen[2], 2);
    ck_assert_uint_eq(seen[3], 1); /* the floor: 10 % of 8, at least 1 */
    ck_assert_uint_eq(seen[7], 1);

    /* Healthy again: back up by at most 2 per step to the configured 8. */
    in[0] = win(8, 1, 100, 0, 10);
    uint32_t expect[] = {3, 5, 7, 8, 8};
    for (int step = 0; step < 5; step++) {
        reports_weights_next(in, 2, out);
        ck_assert_uint_eq(out[0], expect[step]);
        in[0].current = out[0];
    }
}
END_TEST

START_TEST(floor_and_step_of_large_weights)
{
    struct reports_weight_in in[1] = {win(100, 100, 1000, 900, 5)};
    uint32_t out[1];
    reports_weights_next(in, 1, out);
    ck_assert_uint_eq(out[0], 75);
    in[0].current = 75;
    reports_weights_next(in, 1, out);
    ck_assert_uint_eq(out[0], 50);
    in[0].current = 20;
    reports_weights_next(in, 1, out);
    ck_assert_uint_eq(out[0], 10); /* floor 10 % */
    /* A partial error rate has a partial target: 10 % errors -> 80 % of 100. */
    in[0] = win(100, 100, 1000, 100, 5);
    reports_weights_next(in, 1, out);
    ck_assert_uint_eq(out[0], 80);
}
END_TEST

START_TEST(too_few_requests_keep_weight)
{
    struct reports_weight_in in[2] = {win(8, 5, REPORTS_MIN_REQUESTS - 1, 19, 10),
                                      win(8, 8, 0, 0, 0)};
    uint32_t out[2];
    reports_weights_next(in, 2, out);
    ck_assert_uint_eq(out[0], 5); /* even all errors: too few to judge */
    ck_assert_uint_eq(out[1], 8);
}
END_TEST

START_TEST(slow_backend_loses_weight)
{
    /* Same error rate (none), one backend 10x slower than the others. */
    struct reports_weight_in in[3] = {win(8, 8, 100, 0, 100), win(8, 8, 100, 0, 10),
                                      win(8, 8, 100, 0, 10)};
    uint32_t out[3];
    reports_weights_next(in, 3, out);
    ck_assert_uint_eq(out[0], 6);
    ck_assert_uint_eq(out[1], 8);
    ck_assert_uint_eq(out[2], 8);
    /* Alone, latency has nothing to compare with. */
    reports_weights_next(in, 1, out);
    ck_assert_uint_eq(out[0], 8);
}
END_TEST

/* ---- reports: breaker aggregation and windows ------------------------------------ */

static Lb__V1__BackendReport br[4];
static Lb__V1__BackendReport *brp[4];

static Lb__V1__Report report(const char *node, int64_t started, size_t n)
{
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = (char *)node;
    r.started_unix_ms = started;
    r.backends = brp;
    r.n_backends = n;
    return r;
}

static void set_br(size_t i, const char *id, uint64_t req, uint64_t err, uint64_t lat_us,
                   Lb__V1__BreakerState st)
{
    lb__v1__backend_report__init(&br[i]);
    br[i].id = (char *)id;
    br[i].requests = req;
    br[i].errors = err;
    br[i].latency_sum_us = lat_us;
    br[i].breaker = st;
    brp[i] = &br[i];
}

START_TEST(breaker_worst_over_fresh_dataplanes)
{
    struct reports *r = reports_new();
    struct reports_backend b;
    reports_backend_get(r, "a", 1000, &b);
    ck_assert_int_eq(b.breaker, LB__V1__BREAKER_STATE__BREAKER_CLOSED);

    set_br(0, "b", 5, 0, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    set_br(1, "a", 10, 2, 0, LB__V1__BREAKER_STATE__BREAKER_HALF_OPEN);
    Lb__V1__Report r1 = report("dp1", 1, 2);
    ck_assert_int_eq(reports_add(r, &r1, 1000, NULL), LB_OK);
    set_br(0, "a", 30, 7, 0, LB__V1__BREAKER_STATE__BREAKER_OPEN);
    Lb__V1__Report r2 = report("dp2", 1, 1);
    ck_assert_int_eq(reports_add(r, &r2, 5000, NULL), LB_OK);

    reports_backend_get(r, "a", 6000, &b);
    ck_assert_int_eq(b.breaker, LB__V1__BREAKER_STATE__BREAKER_OPEN);
    ck_assert_uint_eq(b.open, 1);
    ck_assert_uint_eq(b.requests, 40);
    ck_assert_uint_eq(b.errors, 9);
    reports_backend_get(r, "b", 6000, &b);
    ck_assert_int_eq(b.breaker, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    ck_assert_uint_eq(b.requests, 5);

    /* dp1 is stale 10 s after its report; dp2 still counts. */
    reports_backend_get(r, "a", 1000 + REPORTS_FRESH_MS + 1, &b);
    ck_assert_uint_eq(b.requests, 30);
    /* both stale: closed, nothing */
    reports_backend_get(r, "a", 5000 + REPORTS_FRESH_MS + 1, &b);
    ck_assert_int_eq(b.breaker, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    ck_assert_uint_eq(b.requests, 0);

    /* dp2 reports it closed again */
    set_br(0, "a", 31, 7, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    r2 = report("dp2", 1, 1);
    ck_assert_int_eq(reports_add(r, &r2, 7000, NULL), LB_OK);
    reports_backend_get(r, "a", 7000, &b);
    ck_assert_int_eq(b.breaker, LB__V1__BREAKER_STATE__BREAKER_HALF_OPEN); /* dp1 still */
    ck_assert_uint_eq(b.open, 0);
    reports_free(r);
}
END_TEST

START_TEST(windows_are_deltas_since_mark)
{
    struct reports *r = reports_new();
    set_br(0, "a", 100, 10, 1000, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    Lb__V1__Report r1 = report("dp1", 1, 1);
    reports_add(r, &r1, 1000, NULL);
    struct reports_window w;
    reports_window_get(r, "a", 1000, &w);
    ck_assert_uint_eq(w.requests, 100); /* no mark yet: everything */
    reports_mark(r);
    reports_window_get(r, "a", 1000, &w);
    ck_assert_uint_eq(w.requests, 0);

    set_br(0, "a", 150, 40, 3000, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    br[0].connect_failures = 5;
    br[0].timeouts = 1;
    reports_add(r, &r1, 2000, NULL);
    reports_window_get(r, "a", 2000, &w);
    ck_assert_uint_eq(w.requests, 50);
    ck_assert_uint_eq(w.errors, 36); /* 5xx + connect failures + timeouts */
    ck_assert_uint_eq(w.latency_sum_us, 2000);
    reports_mark(r);

    /* The data plane restarted: its counters start again from zero. */
    set_br(0, "a", 20, 0, 400, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    Lb__V1__Report again = report("dp1", 2, 1);
    reports_add(r, &again, 3000, NULL);
    reports_window_get(r, "a", 3000, &w);
    ck_assert_uint_eq(w.requests, 20);
    ck_assert_uint_eq(w.errors, 0);
    reports_free(r);
}
END_TEST

START_TEST(silent_dataplanes_forgotten)
{
    struct reports *r = reports_new();
    set_br(0, "a", 1, 0, 0, LB__V1__BREAKER_STATE__BREAKER_OPEN);
    Lb__V1__Report r1 = report("old", 1, 1);
    reports_add(r, &r1, 0, NULL);
    Lb__V1__Report r2 = report("new", 1, 1);
    reports_add(r, &r2, REPORTS_FORGET_MS + 1, NULL);
    /* Within its freshness dp "old" would be gone anyway; the table holds
     * one data plane: a backend seen only through "new". */
    struct reports_backend b;
    reports_backend_get(r, "a", REPORTS_FORGET_MS + 1, &b);
    ck_assert_uint_eq(b.open, 1);
    ck_assert_uint_eq(b.requests, 1);
    /* A report without node id is ignored. */
    Lb__V1__Report anon = report("", 1, 1);
    ck_assert_int_eq(reports_add(r, &anon, 0, NULL), LB_OK);
    reports_free(r);
}
END_TEST

struct seen {
    char ids[8][16];
    char nodes[8][16];
    size_t n;
};

static void on_ejected(void *ctx, const char *id, const char *node_id)
{
    struct seen *s = ctx;
    ck_assert_uint_lt(s->n, 8);
    snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", id);
    snprintf(s->nodes[s->n], sizeof(s->nodes[0]), "%s", node_id);
    s->n++;
}

static size_t ejected_now(struct reports *r, const char *node, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    reports_ejected_each(r, node, on_ejected, s);
    return s->n;
}

START_TEST(ejection_fields_summed)
{
    struct reports *r = reports_new();
    set_br(0, "a", 10, 0, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    br[0].ejected = true;
    br[0].ejections = 2;
    br[0].connections = 5;
    br[0].queued = 3;
    br[0].queue_timeouts = 7;
    Lb__V1__Report r1 = report("dp1", 1, 1);
    ck_assert_int_eq(reports_add(r, &r1, 1000, NULL), LB_OK);
    set_br(0, "a", 10, 0, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    br[0].ejections = 1;
    br[0].connections = 4;
    br[0].queue_timeouts = 1;
    Lb__V1__Report r2 = report("dp2", 1, 1);
    ck_assert_int_eq(reports_add(r, &r2, 2000, NULL), LB_OK);
    struct reports_backend b;
    reports_backend_get(r, "a", 2000, &b);
    ck_assert(b.ejected);
    ck_assert_uint_eq(b.ejected_by, 1);
    ck_assert_uint_eq(b.ejections, 3);
    ck_assert_uint_eq(b.connections, 9);
    ck_assert_uint_eq(b.queued, 3);
    ck_assert_uint_eq(b.queue_timeouts, 8);
    /* Only fresh data planes count: dp1 (ejected) went stale first. */
    reports_backend_get(r, "a", 1000 + REPORTS_FRESH_MS + 1, &b);
    ck_assert(!b.ejected);
    ck_assert_uint_eq(b.ejections, 1);
    reports_free(r);
}
END_TEST

START_TEST(ejection_news_per_report)
{
    struct reports *r = reports_new();
    struct seen s;
    /* First report of dp1: a counter alone says nothing new (when was it?),
     * the flag does. */
    set_br(0, "a", 0, 0, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    br[0].ejections = 4;
    set_br(1, "b", 0, 0, 0, LB__V1__BREAKER_STATE__BREAKER_CLOSED);
    br[1].ejected = true;
    br[1].ejections = 1;
    Lb__V1__Report r1 = report("dp1", 1, 2);
    reports_add(r, &r1, 1000, NULL);
    ck_assert_uint_eq(ejected_now(r, "dp1", &s), 1);
    ck_assert_str_eq(s.ids[0], "b");
    ck_assert_str_eq(s.nodes[0], "dp1");
    ck_assert_uint_eq(ejected_now(r, "dp2", &s), 0); /* unknown node */

    /* Next report: a's counter rose (ejected and back between two reports),
     * b still ejected; both are news to hand over. */
    br[0].ejections = 5;
    reports_add(r, &r1, 2000, NULL);
    ck_assert_uint_eq(ejected_now(r, "dp1", &s), 2);
    ck_assert_str_eq(s.ids[0], "a");
    ck_assert_str_eq(s.ids[1], "b");

    /* Nothing changed and nothing ejected: no news. */
    br[1].ejected = false;
    reports_add(r, &r1, 3000, NULL);
    ck_assert_uint_eq(ejected_now(r, "dp1", &s), 0);

    /* Restarted: its counters start from zero, so any ejection is news. */
    br[0].ejections = 1;
    br[1].ejections = 0;
    Lb__V1__Report again = report("dp1", 2, 2);
    reports_add(r, &again, 4000, NULL);
    ck_assert_uint_eq(ejected_now(r, "dp1", &s), 1);
    ck_assert_str_eq(s.ids[0], "a");
    reports_free(r);
}
END_TEST

/* The process behind a node: its latest report's pid, start and version; a
 * successor (hand-over) replaces them. */
START_TEST(node_process_follows_the_latest_report)
{
    struct reports *r = reports_new();
    ck_assert_ptr_nonnull(r);
    struct reports_node pn;
    ck_assert(!reports_node_get(r, "dp1", &pn));
    ck_assert_uint_eq(pn.pid, 0);
    Lb__V1__Report r1 = report("dp1", 1000, 0);
    r1.pid = 41;
    r1.binary_version = "0.1.0";
    ck_assert_int_eq(reports_add(r, &r1, 2000, NULL), LB_OK);
    ck_assert(reports_node_get(r, "dp1", &pn));
    ck_assert_uint_eq(pn.pid, 41);
    ck_assert_int_eq(pn.started_unix_ms, 1000);
    ck_assert_str_eq(pn.binary_version, "0.1.0");
    ck_assert(!reports_node_get(r, "dp2", &pn));
    ck_assert(!reports_node_get(r, NULL, &pn));

    Lb__V1__Report r2 = report("dp1", 5000, 0); /* the successor; an old binary sends no version */
    r2.pid = 57;
    ck_assert_int_eq(reports_add(r, &r2, 6000, NULL), LB_OK);
    ck_assert(reports_node_get(r, "dp1", &pn));
    ck_assert_uint_eq(pn.pid, 57);
    ck_assert_int_eq(pn.started_unix_ms, 5000);
    ck_assert_str_eq(pn.binary_version, "");
    reports_free(r);
}
END_TEST

static Suite *reports_suite(void)
{
    Suite *s = suite_create("reports");
    TCase *tc = tcase_create("weights");
    tcase_add_test(tc, errors_lose_weight_in_bounded_steps);
    tcase_add_test(tc, floor_and_step_of_large_weights);
    tcase_add_test(tc, too_few_requests_keep_weight);
    tcase_add_test(tc, slow_backend_loses_weight);
    suite_add_tcase(s, tc);
    tc = tcase_create("table");
    tcase_add_test(tc, breaker_worst_over_fresh_dataplanes);
    tcase_add_test(tc, windows_are_deltas_since_mark);
    tcase_add_test(tc, silent_dataplanes_forgotten);
    tcase_add_test(tc, ejection_fields_summed);
    tcase_add_test(tc, ejection_news_per_report);
    tcase_add_test(tc, node_process_follows_the_latest_report);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(reports_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
