/* tests/unit/dataplane/test_metrics.c: per-worker counters summed at scrape. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb_prom.h"
#include "metrics.h"

/* The value of the sample whose line starts with <prefix> (name and labels). */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

START_TEST(workers_are_summed_by_name)
{
    struct metrics_worker a, b;
    ck_assert_int_eq(metrics_worker_init(&a), 0);
    ck_assert_int_eq(metrics_worker_init(&b), 0);
    /* the two workers number their frontends and backends differently */
    int fa = metrics_fe_slot(&a, "web");
    int fb_api = metrics_fe_slot(&b, "api");
    int fb = metrics_fe_slot(&b, "web");
    ck_assert_int_eq(fa, 0);
    ck_assert_int_eq(fb_api, 0);
    ck_assert_int_eq(fb, 1);
    int ba = metrics_be_slot(&a, "b1");
    int bb0 = metrics_be_slot(&b, "b0");
    int bb = metrics_be_slot(&b, "b1");
    ck_assert_int_eq(metrics_be_slot(&b, "b1"), bb);

    for (int i = 0; i < 7; i++)
        metrics_request(&a, (uint16_t)fa, (uint32_t)ba, METRICS_HTTP1, 200, 1000);
    for (int i = 0; i < 5; i++)
        metrics_request(&b, (uint16_t)fb, (uint32_t)bb, i < 2 ? METRICS_H2 : METRICS_HTTP1, 204,
                        2000000);
    metrics_request(&b, (uint16_t)fb, (uint32_t)bb0, METRICS_HTTP1, 502, 10);
    metrics_request(&b, (uint16_t)fb_api, UINT32_MAX, METRICS_H2, 400, 10);
    METRIC_ADD(a.fe[fa].accepted, 3);
    METRIC_ADD(b.fe[fb].accepted, 2);
    METRIC_ADD(a.fe[fa].closed, 1);
    METRIC_ADD(b.fe[fb].rejected[REJECT_NO_BACKEND], 4);

    struct metrics_worker *ws[2] = {&a, &b};
    struct metrics_backend_state bs[2] = {{"b0", false}, {"b1", true}};
    struct lb_prom p;
    lb_prom_init(&p);
    metrics_render(&p, ws, 2, bs, 2, 7, 42);
    ck_assert(!p.oom);
    const char *t = p.buf;
    ck_assert(sample(t, "lb_config_version") == 7);
    ck_assert(sample(t, "lb_snapshot_generation") == 42);
    /* merged over the workers, apart by the protocol the client spoke */
    ck_assert(sample(t, "lb_http_requests_total{frontend=\"web\",backend=\"b1\",protocol=\"http/"
                        "1.1\",code=\"2xx\"}") == 10);
    ck_assert(sample(t, "lb_http_requests_total{frontend=\"web\",backend=\"b1\",protocol=\"h2\","
                        "code=\"2xx\"}") == 2);
    ck_assert(sample(t, "lb_http_requests_total{frontend=\"web\",backend=\"b0\",protocol=\"http/"
                        "1.1\",code=\"5xx\"}") == 1);
    ck_assert(isnan(sample(t, "lb_http_requests_total{frontend=\"web\",backend=\"b0\",protocol="
                              "\"h2\",code=\"5xx\"}")));
    ck_assert(sample(t, "lb_http_requests_total{frontend=\"api\",backend=\"\",protocol=\"h2\","
                        "code=\"4xx\"}") == 1);
    ck_assert(sample(t, "lb_connections_accepted_total{frontend=\"web\"}") == 5);
    ck_assert(sample(t, "lb_connections_open{frontend=\"web\"}") == 4);
    ck_assert(sample(t, "lb_requests_rejected_total{frontend=\"web\",reason=\"no_backend\"}") == 4);
    ck_assert(sample(t, "lb_backend_up{backend=\"b0\"}") == 0);
    ck_assert(sample(t, "lb_backend_up{backend=\"b1\"}") == 1);
    /* 7 fast (1 ms) and 5 slow (2 s) requests on "web" */
    ck_assert(sample(t, "lb_http_request_duration_seconds_count{frontend=\"web\"}") == 13);
    ck_assert(sample(t, "lb_http_request_duration_seconds_bucket{frontend=\"web\",le=\"+Inf\"}") ==
              13);
    ck_assert(sample(t, "lb_http_request_duration_seconds_bucket{frontend=\"web\",le=\"1\"}") == 8);
    double sum = sample(t, "lb_http_request_duration_seconds_sum{frontend=\"web\"}");
    ck_assert(fabs(sum - (7 * 0.001 + 5 * 2.0 + 0.00001)) < 1e-6);
    /* every family is announced once */
    ck_assert_ptr_nonnull(strstr(t, "# TYPE lb_http_requests_total counter\n"));
    ck_assert_ptr_null(
        strstr(strstr(t, "# TYPE lb_http_requests_total") + 1, "# TYPE lb_http_requests_total"));

    const char *ids[3] = {"b1", "b0", "gone"};
    struct metrics_be_totals tot[3];
    metrics_backend_totals(ws, 2, ids, 3, tot);
    ck_assert_uint_eq(tot[0].requests, 12);
    ck_assert_uint_eq(tot[1].requests, 1);
    ck_assert_uint_eq(tot[1].errors, 1);
    ck_assert_uint_eq(tot[2].requests, 0);

    lb_prom_deinit(&p);
    metrics_worker_deinit(&a);
    metrics_worker_deinit(&b);
}
END_TEST

START_TEST(many_pairs_grow_the_table)
{
    struct metrics_worker m;
    ck_assert_int_eq(metrics_worker_init(&m), 0);
    int fe = metrics_fe_slot(&m, "web");
    for (int i = 0; i < 500; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%d", i);
        int be = metrics_be_slot(&m, id);
        ck_assert_int_eq(be, i);
        metrics_request(&m, (uint16_t)fe, (uint32_t)be, METRICS_HTTP1, 200 + (i % 3) * 100, 5);
    }
    ck_assert_uint_eq(m.n_pairs, 500);
    struct metrics_worker *ws[1] = {&m};
    struct lb_prom p;
    lb_prom_init(&p);
    metrics_render(&p, ws, 1, NULL, 0, 1, 1);
    ck_assert(sample(p.buf,
                     "lb_http_requests_total{frontend=\"web\",backend=\"b497\",protocol=\"http/"
                     "1.1\",code=\"4xx\"}") == 1);
    lb_prom_deinit(&p);
    metrics_worker_deinit(&m);
}
END_TEST

START_TEST(status_classes)
{
    ck_assert_uint_eq(metrics_class(100), 0);
    ck_assert_uint_eq(metrics_class(299), 1);
    ck_assert_uint_eq(metrics_class(404), 3);
    ck_assert_uint_eq(metrics_class(599), 4);
    ck_assert_uint_eq(metrics_class(0), 5);
    ck_assert_uint_eq(metrics_class(700), 5);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, workers_are_summed_by_name);
    tcase_add_test(tc, many_pairs_grow_the_table);
    tcase_add_test(tc, status_classes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
