/* tests/unit/controlplane/test_canary.c: the staged config rollout's pure
 * parts: which data planes are canaries (by name, by percentage), and the
 * gate (NACK fails at once, ACK timeout, canaries' error rate against the
 * rest of the fleet, waiting for the bake and for enough requests). */
#include "lb_err.h"
#include "rollout.h"
#include "store.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const known4[] = {"dp3", "dp1", "dp0", "dp2"};

START_TEST(pick_by_name)
{
    char out[ROLLOUT_CANARY_MAX][ROLLOUT_NODE_MAX];
    size_t n = 0;
    struct lb_err e = {0};
    ck_assert_int_eq(rollout_canary_pick("dp2,dp0", known4, 4, out, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(out[0], "dp2");
    ck_assert_str_eq(out[1], "dp0");
    ck_assert_int_eq(rollout_canary_pick("dp9", known4, 4, out, &n, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "dp9") && strstr(e.msg, "not reported"), "%s", e.msg);
    ck_assert_int_eq(rollout_canary_pick("dp1,dp1", known4, 4, out, &n, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "twice"), "%s", e.msg);
    ck_assert_int_eq(rollout_canary_pick("dp1,", known4, 4, out, &n, &e), LB_EINVAL);
    ck_assert_int_eq(rollout_canary_pick("", known4, 4, out, &n, &e), LB_EINVAL);
    ck_assert_int_eq(rollout_canary_pick(NULL, known4, 4, out, &n, &e), LB_EINVAL);
    ck_assert_int_eq(rollout_canary_pick("dp1", known4, 0, out, &n, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "no data plane"), "%s", e.msg);
    /* a prefix of a known id is not that id */
    ck_assert_int_eq(rollout_canary_pick("dp", known4, 4, out, &n, &e), LB_EINVAL);
}
END_TEST

START_TEST(pick_by_percent)
{
    char out[ROLLOUT_CANARY_MAX][ROLLOUT_NODE_MAX];
    size_t n = 0;
    struct lb_err e = {0};
    ck_assert_int_eq(rollout_canary_pick("25%", known4, 4, out, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(out[0], "dp0"); /* sorted: the same nodes every time */
    ck_assert_int_eq(rollout_canary_pick("26%", known4, 4, out, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 2); /* rounded up */
    ck_assert_str_eq(out[1], "dp1");
    ck_assert_int_eq(rollout_canary_pick("1%", known4, 4, out, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 1); /* at least one */
    ck_assert_int_eq(rollout_canary_pick("100%", known4, 4, out, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 4);
    const char *bad[] = {"0%", "101%", "%", "5%%", "x%", "-5%", "5 %"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        ck_assert_msg(rollout_canary_pick(bad[i], known4, 4, out, &n, &e) == LB_EINVAL, "%s",
                      bad[i]);
}
END_TEST

/* Two canaries; the caller sets acked/rejected/counters. */
static struct rollout_canary_input input(bool *acked, const char **rejected)
{
    static const char *const nodes[] = {"dp0", "dp1"};
    return (struct rollout_canary_input){
        .now_ms = 10000,
        .started_ms = 5000,
        .bake_ms = 2000,
        .ack_timeout_ms = ROLLOUT_CANARY_ACK_MS,
        .max_rate = 0.05,
        .n = 2,
        .nodes = nodes,
        .acked = acked,
        .rejected = rejected,
    };
}

START_TEST(nack_fails_at_once)
{
    bool acked[2] = {true, false};
    const char *rejected[2] = {NULL, "frontend extra: cannot bind 127.0.0.1:80"};
    struct rollout_canary_input in = input(acked, rejected);
    in.now_ms = in.started_ms + 1; /* no wait at all */
    char why[300];
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), NULL, NULL), ROLLOUT_FAIL);
    ck_assert_msg(strstr(why, "dp1 refused the snapshot: frontend extra"), "%s", why);
    /* even with good figures and the bake over */
    in.acked_ms = in.started_ms;
    in.now_ms = in.started_ms + 100000;
    in.canary = (struct rollout_counts){.requests = 1000};
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), NULL, NULL), ROLLOUT_FAIL);
}
END_TEST

START_TEST(ack_wait_and_timeout)
{
    bool acked[2] = {true, false};
    const char *rejected[2] = {NULL, NULL};
    struct rollout_canary_input in = input(acked, rejected);
    char why[300] = "";
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), NULL, NULL), ROLLOUT_WAIT);
    in.now_ms = in.started_ms + ROLLOUT_CANARY_ACK_MS;
    double fig = 0, lim = 0;
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_FAIL);
    ck_assert_msg(strstr(why, "dp1 did not apply"), "%s", why);
    ck_assert(fig >= lim);
}
END_TEST

START_TEST(gate_canary_vs_rest)
{
    bool acked[2] = {true, true};
    const char *rejected[2] = {NULL, NULL};
    struct rollout_canary_input in = input(acked, rejected);
    in.acked_ms = 6000;
    in.reported_ms = 9000; /* the reports cover 3 s of the 2 s bake */
    char why[300] = "";
    double fig, lim;
    /* too few requests yet: wait (until 3 bakes) */
    in.canary = (struct rollout_counts){.requests = 3, .errors = 0};
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_WAIT);
    /* the bake not over: wait */
    in.canary = (struct rollout_counts){.requests = 100, .errors = 0};
    in.now_ms = 7000;
    in.reported_ms = 7000;
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_WAIT);
    /* over: a clean canary passes */
    in.now_ms = 10000;
    in.reported_ms = 9000;
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_PASS);
    ck_assert(fig == 0.0 && lim == 0.05);
    /* 10 % errors on the canaries, none elsewhere: fails, saying the figures */
    in.canary = (struct rollout_counts){.requests = 100, .errors = 10};
    in.rest = (struct rollout_counts){.requests = 1000, .errors = 0};
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_FAIL);
    ck_assert(fig == 0.1);
    ck_assert_msg(strstr(why, "0.1000 (10 of 100)") && strstr(why, "0.0500"), "%s", why);
    /* the same errors everywhere (the backends, not the version): passes */
    in.rest = (struct rollout_counts){.requests = 1000, .errors = 100};
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_PASS);
    ck_assert(lim > 0.1);
    /* no traffic at all for 3 bakes: decided on what there is (passes) */
    in.canary = (struct rollout_counts){0};
    in.rest = (struct rollout_counts){0};
    in.now_ms = in.acked_ms + 3 * in.bake_ms;
    ck_assert_int_eq(rollout_canary_eval(&in, why, sizeof(why), &fig, &lim), ROLLOUT_PASS);
}
END_TEST

/* The stored form: a meta row written with a version, naming it. */
START_TEST(store_meta_with_version)
{
    char dir[] = "/tmp/lb-canary-unit-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/lb.db", dir);
    struct lb_err e = {0};
    struct store *st = store_open(path, &e);
    ck_assert_msg(st != NULL, "%s", e.msg);
    char *v = NULL;
    ck_assert_int_eq(store_meta_get(st, "canary", &v, &e), LB_ENOTFOUND);
    ck_assert_int_eq(store_meta_put(st, "generation", "1", &e), LB_EINVAL);
    ck_assert_int_eq(store_meta_put(st, "canary", "{\"status\":\"promoted\"}", &e), LB_OK);
    ck_assert_int_eq(store_meta_get(st, "canary", &v, &e), LB_OK);
    ck_assert_str_eq(v, "{\"status\":\"promoted\"}");
    free(v);
    /* attached: written with the version, its number at the path */
    uint64_t n = 0;
    store_meta_attach(st, "canary", "{\"status\":\"baking\",\"version\":0}", "$.version");
    ck_assert_int_eq(store_version_put(st, "x: 1\n", "h1", "test", NULL, &n, &e), LB_OK);
    ck_assert_int_eq(store_meta_get(st, "canary", &v, &e), LB_OK);
    char want[64];
    snprintf(want, sizeof(want), "{\"status\":\"baking\",\"version\":%llu}", (unsigned long long)n);
    ck_assert_str_eq(v, want);
    free(v);
    /* used once: the next write leaves it alone */
    ck_assert_int_eq(store_version_put(st, "x: 2\n", "h2", "test", NULL, &n, &e), LB_OK);
    ck_assert_int_eq(store_meta_get(st, "canary", &v, &e), LB_OK);
    ck_assert_str_eq(v, want);
    free(v);
    store_close(st);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("canary");
    TCase *tc = tcase_create("pure");
    tcase_add_test(tc, pick_by_name);
    tcase_add_test(tc, pick_by_percent);
    tcase_add_test(tc, nack_fails_at_once);
    tcase_add_test(tc, ack_wait_and_timeout);
    tcase_add_test(tc, gate_canary_vs_rest);
    tcase_add_test(tc, store_meta_with_version);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
