/* tests/unit/controlplane/test_rollout.c: the rollout state machine with
 * injected time and counters, the gate arithmetic, the stored form, and the
 * engine on a real core (temp SQLite file) with the store's failure hook. */
#include "cp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_prom.h"
#include "rollout.h"
#include "rollout_run.h"
#include "store.h"

#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the state machine ------------------------------------------------------- */

static struct rollout_spec spec4;

static void spec_setup(void)
{
    memset(&spec4, 0, sizeof(spec4));
    spec4.id = 7;
    spec4.n_add = 4;
    spec4.n_remove = 4;
    for (int i = 0; i < 4; i++) {
        snprintf(spec4.add_url[i], ROLLOUT_URL_MAX, "http://127.0.0.1:%d", 9100 + i);
        snprintf(spec4.add_id[i], ROLLOUT_ID_MAX, "n%d", i);
        snprintf(spec4.remove_id[i], ROLLOUT_ID_MAX, "o%d", i);
    }
    spec4.batch = 1;
    spec4.interval_ms = 1000;
    spec4.bake_ms = 2000;
    spec4.health_timeout_ms = 5000;
    spec4.max_error_rate = 0.05;
    spec4.pre_version = 3;
    snprintf(spec4.author, sizeof(spec4.author), "uid:0");
}

/* One rollout_next() at <now> with the step's one new backend <h> and
 * window <w>, old window <ow>, <healthy> left after removal. */
static enum rollout_action next1(struct rollout_state *st, int64_t now, enum rollout_health h,
                                 struct rollout_counts w, struct rollout_counts ow,
                                 uint32_t healthy)
{
    struct rollout_input in = {.now_ms = now,
                               .health = &h,
                               .window = &w,
                               .old_window = ow,
                               .healthy_after_remove = healthy,
                               .reported_ms = now};
    struct rollout_state next;
    enum rollout_action a = rollout_next(&spec4, st, &in, &next, NULL);
    *st = next;
    return a;
}

static const struct rollout_counts none = {0, 0};

START_TEST(four_for_four_in_four_steps)
{
    ck_assert_int_eq(rollout_steps(&spec4), 4);
    struct rollout_state st;
    rollout_state_init(&st, 0);
    int64_t t = 0;
    struct rollout_counts good = {100, 1};
    for (uint32_t step = 0; step < 4; step++) {
        ck_assert_int_eq(st.step, step);
        ck_assert_int_eq(next1(&st, t, ROLLOUT_HEALTH_UNKNOWN, none, none, 3), ROLLOUT_ACT_ADD);
        ck_assert_int_eq(st.phase, ROLLOUT_WAIT_HEALTHY);
        /* not healthy yet: nothing */
        ck_assert_int_eq(next1(&st, t + 100, ROLLOUT_HEALTH_UNKNOWN, none, none, 3),
                         ROLLOUT_ACT_NONE);
        ck_assert_int_eq(next1(&st, t + 200, ROLLOUT_HEALTH_UP, none, none, 4),
                         ROLLOUT_ACT_ACTIVATE);
        ck_assert_int_eq(st.phase, ROLLOUT_BAKE);
        /* the bake is not over: no verdict, even with errors */
        struct rollout_counts bad = {100, 90};
        ck_assert_int_eq(next1(&st, t + 1000, ROLLOUT_HEALTH_UP, bad, none, 4), ROLLOUT_ACT_NONE);
        ck_assert_int_eq(next1(&st, t + 2200, ROLLOUT_HEALTH_UP, good, good, 4), ROLLOUT_ACT_STATE);
        ck_assert_int_eq(st.phase, ROLLOUT_REMOVE);
        ck_assert_int_eq(next1(&st, t + 2300, ROLLOUT_HEALTH_UP, good, good, 4),
                         ROLLOUT_ACT_REMOVE);
        ck_assert_int_eq(st.steps_done, step + 1);
        if (step < 3) {
            ck_assert_int_eq(st.phase, ROLLOUT_INTERVAL);
            ck_assert_int_eq(next1(&st, t + 2400, ROLLOUT_HEALTH_UP, none, none, 4),
                             ROLLOUT_ACT_NONE);
            ck_assert_int_eq(next1(&st, t + 3300, ROLLOUT_HEALTH_UP, none, none, 4),
                             ROLLOUT_ACT_STATE);
            ck_assert_int_eq(st.phase, ROLLOUT_ADD);
        }
        t += 4000;
    }
    ck_assert_int_eq(st.status, ROLLOUT_SUCCEEDED);
    ck_assert_int_eq(st.phase, ROLLOUT_END);
    /* an ended rollout never moves */
    ck_assert_int_eq(next1(&st, t, ROLLOUT_HEALTH_UP, none, none, 4), ROLLOUT_ACT_NONE);
}
END_TEST

START_TEST(batches_of_unequal_lists)
{
    spec4.n_add = 3;
    spec4.n_remove = 1;
    spec4.batch = 2;
    ck_assert_int_eq(rollout_steps(&spec4), 2);
    size_t first, n;
    rollout_batch(&spec4, 1, true, &first, &n);
    ck_assert_uint_eq(first, 2);
    ck_assert_uint_eq(n, 1);
    rollout_batch(&spec4, 1, false, &first, &n);
    ck_assert_uint_eq(n, 0);
    /* a step with nothing to add goes to its removal at once */
    spec4.n_add = 0;
    spec4.n_remove = 2;
    spec4.batch = 1;
    struct rollout_state st;
    rollout_state_init(&st, 0);
    ck_assert_int_eq(next1(&st, 0, ROLLOUT_HEALTH_UP, none, none, 1), ROLLOUT_ACT_STATE);
    ck_assert_int_eq(st.phase, ROLLOUT_REMOVE);
    ck_assert_int_eq(next1(&st, 0, ROLLOUT_HEALTH_UP, none, none, 1), ROLLOUT_ACT_REMOVE);
}
END_TEST

START_TEST(never_healthy_times_out)
{
    struct rollout_state st;
    rollout_state_init(&st, 0);
    ck_assert_int_eq(next1(&st, 0, ROLLOUT_HEALTH_UNKNOWN, none, none, 3), ROLLOUT_ACT_ADD);
    ck_assert_int_eq(next1(&st, 4999, ROLLOUT_HEALTH_DOWN, none, none, 3), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(next1(&st, 5000, ROLLOUT_HEALTH_DOWN, none, none, 3), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(st.status, ROLLOUT_FAILED);
    ck_assert_int_eq(st.gate, ROLLOUT_GATE_HEALTH);
    ck_assert_str_eq(st.backend, "n0");
    ck_assert(st.figure >= 5.0 && st.limit == 5.0);
    ck_assert_int_eq(st.steps_done, 0);
    ck_assert_ptr_nonnull(strstr(st.reason, "n0 not healthy"));
}
END_TEST

START_TEST(down_during_bake_waits_again)
{
    struct rollout_state st;
    rollout_state_init(&st, 0);
    next1(&st, 0, ROLLOUT_HEALTH_UNKNOWN, none, none, 3);
    ck_assert_int_eq(next1(&st, 100, ROLLOUT_HEALTH_UP, none, none, 3), ROLLOUT_ACT_ACTIVATE);
    ck_assert_int_eq(st.phase, ROLLOUT_BAKE);
    /* down: the bake stops ... */
    ck_assert_int_eq(next1(&st, 500, ROLLOUT_HEALTH_DOWN, none, none, 3), ROLLOUT_ACT_STATE);
    ck_assert_int_eq(st.down_since_ms, 500);
    struct rollout_counts good = {100, 0};
    ck_assert_int_eq(next1(&st, 3000, ROLLOUT_HEALTH_DOWN, good, good, 3), ROLLOUT_ACT_NONE);
    /* ... and starts again once it is back */
    ck_assert_int_eq(next1(&st, 3100, ROLLOUT_HEALTH_UP, good, good, 3), ROLLOUT_ACT_STATE);
    ck_assert_int_eq(st.phase, ROLLOUT_BAKE);
    ck_assert_int_eq(st.phase_since_ms, 3100);
    ck_assert_int_eq(st.down_since_ms, 0);
    ck_assert_int_eq(next1(&st, 5000, ROLLOUT_HEALTH_UP, good, good, 3), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(next1(&st, 5100, ROLLOUT_HEALTH_UP, good, good, 3), ROLLOUT_ACT_STATE);
    ck_assert_int_eq(st.phase, ROLLOUT_REMOVE);
    /* down for longer than the health bound fails the step */
    rollout_state_init(&st, 0);
    next1(&st, 0, ROLLOUT_HEALTH_UNKNOWN, none, none, 3);
    next1(&st, 100, ROLLOUT_HEALTH_UP, none, none, 3);
    next1(&st, 200, ROLLOUT_HEALTH_DOWN, none, none, 3);
    ck_assert_int_eq(next1(&st, 5199, ROLLOUT_HEALTH_DOWN, none, none, 3), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(next1(&st, 5200, ROLLOUT_HEALTH_DOWN, none, none, 3), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(st.gate, ROLLOUT_GATE_HEALTH);
}
END_TEST

START_TEST(error_rate_trips_the_gate)
{
    struct rollout_state st;
    rollout_state_init(&st, 0);
    next1(&st, 0, ROLLOUT_HEALTH_UNKNOWN, none, none, 3);
    next1(&st, 100, ROLLOUT_HEALTH_UP, none, none, 3);
    struct rollout_counts bad = {40, 20}, old = {400, 4};
    struct rollout_input in = {
        .now_ms = 2100, .old_window = old, .healthy_after_remove = 4, .reported_ms = 2100};
    enum rollout_health h = ROLLOUT_HEALTH_UP;
    in.health = &h;
    in.window = &bad;
    struct rollout_state next;
    struct rollout_figures fig;
    ck_assert_int_eq(rollout_next(&spec4, &st, &in, &next, &fig), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(next.status, ROLLOUT_FAILED);
    ck_assert_int_eq(next.gate, ROLLOUT_GATE_ERROR_RATE);
    ck_assert_double_eq_tol(next.figure, 0.5, 1e-9);
    ck_assert_double_eq_tol(next.limit, 0.06, 1e-9); /* old 1 % + 5 % */
    ck_assert_str_eq(next.backend, "n0");
    ck_assert(fig.valid);
    ck_assert_double_eq_tol(fig.old_rate, 0.01, 1e-9);
    ck_assert_uint_eq(fig.new_requests, 40);
}
END_TEST

START_TEST(capacity_is_kept)
{
    struct rollout_state st;
    rollout_state_init(&st, 0);
    next1(&st, 0, ROLLOUT_HEALTH_UNKNOWN, none, none, 3);
    next1(&st, 100, ROLLOUT_HEALTH_UP, none, none, 3);
    struct rollout_counts good = {100, 0};
    next1(&st, 2100, ROLLOUT_HEALTH_UP, good, good, 3);
    ck_assert_int_eq(st.phase, ROLLOUT_REMOVE);
    /* 4 old, batch 1: at least 3 healthy must stay; 2 would be left */
    ck_assert_int_eq(next1(&st, 2200, ROLLOUT_HEALTH_UP, good, good, 2), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(next1(&st, 3000, ROLLOUT_HEALTH_UP, good, good, 3), ROLLOUT_ACT_REMOVE);
    /* and when it never comes back, the step fails */
    rollout_state_init(&st, 0);
    st.phase = ROLLOUT_REMOVE;
    ck_assert_int_eq(next1(&st, 4999, ROLLOUT_HEALTH_UP, good, good, 1), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(next1(&st, 5000, ROLLOUT_HEALTH_UP, good, good, 1), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(st.gate, ROLLOUT_GATE_CAPACITY);
}
END_TEST

START_TEST(operator_requests)
{
    struct rollout_state st, next;
    struct lb_err e = {0};
    rollout_state_init(&st, 0);
    ck_assert_int_eq(rollout_resume(&st, 0, &next, &e), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(e.code, LB_ECONFLICT);
    ck_assert_int_eq(rollout_undo(&st, 0, &next, &e), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(rollout_pause(&st, 0, &next, &e), ROLLOUT_ACT_STATE);
    st = next;
    st.phase = ROLLOUT_BAKE;
    /* paused: nothing moves, whatever the time */
    ck_assert_int_eq(next1(&st, 999999, ROLLOUT_HEALTH_DOWN, none, none, 0), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(rollout_pause(&st, 0, &next, &e), ROLLOUT_ACT_NONE);
    ck_assert_int_eq(rollout_resume(&st, 7000, &next, &e), ROLLOUT_ACT_STATE);
    ck_assert_int_eq(next.status, ROLLOUT_RUNNING);
    ck_assert_int_eq(next.phase_since_ms, 7000); /* a fresh bake window */
    ck_assert_int_eq(rollout_abort(&next, 8000, &st, &e), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(st.status, ROLLOUT_ABORTED);
    ck_assert_int_eq(rollout_abort(&st, 8000, &next, &e), ROLLOUT_ACT_NONE);
    st.status = ROLLOUT_SUCCEEDED;
    ck_assert_int_eq(rollout_undo(&st, 9000, &next, &e), ROLLOUT_ACT_ROLLBACK);
    ck_assert_int_eq(next.status, ROLLOUT_UNDONE);
}
END_TEST

START_TEST(spec_checks)
{
    struct lb_err e = {0};
    ck_assert_int_eq(rollout_spec_check(&spec4, &e), LB_OK);
    struct rollout_spec s = spec4;
    s.batch = 0;
    ck_assert_int_eq(rollout_spec_check(&s, &e), LB_EINVAL);
    s = spec4;
    s.max_error_rate = 1.5;
    ck_assert_int_eq(rollout_spec_check(&s, &e), LB_EINVAL);
    s = spec4;
    snprintf(s.add_id[1], ROLLOUT_ID_MAX, "o2");
    ck_assert_int_eq(rollout_spec_check(&s, &e), LB_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "o2"));
    s = spec4;
    s.n_add = s.n_remove = 0;
    ck_assert_int_eq(rollout_spec_check(&s, &e), LB_EINVAL);
}
END_TEST

START_TEST(stored_form_round_trips)
{
    struct rollout_state st;
    rollout_state_init(&st, 123);
    st.step = 2;
    st.phase = ROLLOUT_BAKE;
    st.gate = ROLLOUT_GATE_ERROR_RATE;
    st.figure = 0.25;
    st.down_since_ms = 456;
    snprintf(st.backend, sizeof(st.backend), "n2");
    char *a = rollout_spec_encode(&spec4), *b = rollout_state_encode(&st);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    struct rollout_spec s2;
    struct rollout_state st2;
    ck_assert_int_eq(rollout_spec_decode(a, &s2, NULL), LB_OK);
    ck_assert_int_eq(rollout_state_decode(b, &st2, NULL), LB_OK);
    ck_assert_int_eq(memcmp(&s2, &spec4, sizeof(s2)), 0);
    ck_assert_int_eq(st2.step, 2);
    ck_assert_int_eq(st2.phase, ROLLOUT_BAKE);
    ck_assert_int_eq(st2.gate, ROLLOUT_GATE_ERROR_RATE);
    ck_assert_str_eq(st2.backend, "n2");
    ck_assert_int_eq(st2.started_ms, 123);
    ck_assert_int_eq(st2.down_since_ms, 456);
    free(a);
    free(b);
    struct lb_err e = {0};
    ck_assert_int_eq(rollout_state_decode("{\"status\":\"bogus\"}", &st2, &e), LB_EINVAL);
    ck_assert_int_eq(rollout_spec_decode("not json", &s2, &e), LB_EINVAL);
}
END_TEST

/* ---- gate arithmetic ---------------------------------------------------------- */

static struct rollout_sample sample(const char *node, int64_t started, uint64_t boot, uint64_t req,
                                    uint64_t err)
{
    struct rollout_sample s = {
        .started_unix_ms = started, .boot_id = boot, .requests = req, .errors = err};
    snprintf(s.node_id, sizeof(s.node_id), "%s", node);
    return s;
}

START_TEST(window_sums_data_planes)
{
    struct rollout_sample base[] = {sample("a", 1, 11, 100, 5), sample("b", 1, 22, 50, 0)};
    struct rollout_sample cur[] = {sample("a", 1, 11, 150, 7), sample("b", 1, 22, 80, 3)};
    struct rollout_counts c = rollout_window_delta(base, 2, cur, 2);
    ck_assert_uint_eq(c.requests, 80);
    ck_assert_uint_eq(c.errors, 5);
}
END_TEST

START_TEST(window_counter_resets)
{
    /* a restarted (new started time), a re-booted (new boot id), one first
     * seen after the window began, one whose counter went backwards */
    struct rollout_sample base[] = {sample("a", 1, 11, 100, 5), sample("b", 1, 22, 100, 5),
                                    sample("d", 1, 44, 100, 5)};
    struct rollout_sample cur[] = {sample("a", 2, 11, 10, 1), sample("b", 1, 23, 20, 2),
                                   sample("c", 1, 33, 30, 3), sample("d", 1, 44, 40, 4)};
    struct rollout_counts c = rollout_window_delta(base, 3, cur, 4);
    ck_assert_uint_eq(c.requests, 100);
    ck_assert_uint_eq(c.errors, 10);
    /* no data plane at all */
    c = rollout_window_delta(base, 3, NULL, 0);
    ck_assert_uint_eq(c.requests, 0);
    ck_assert_double_eq(rollout_rate(c), 0.0);
}
END_TEST

START_TEST(gate_zero_traffic_and_tiny_windows)
{
    struct rollout_counts zero = {0, 0}, tiny_bad = {3, 3}, tiny_ok = {3, 0};
    double limit = 0;
    /* before the end of the bake: always wait */
    ck_assert_int_eq(rollout_gate_eval(tiny_bad, zero, 0.05, 999, 999, 1000, &limit), ROLLOUT_WAIT);
    /* too few requests: wait up to three bakes ... */
    ck_assert_int_eq(rollout_gate_eval(zero, zero, 0.05, 1000, 1000, 1000, NULL), ROLLOUT_WAIT);
    ck_assert_int_eq(rollout_gate_eval(tiny_bad, zero, 0.05, 2999, 2999, 1000, NULL), ROLLOUT_WAIT);
    /* ... then decide on what there is */
    ck_assert_int_eq(rollout_gate_eval(zero, zero, 0.05, 3000, 3000, 1000, NULL), ROLLOUT_PASS);
    ck_assert_int_eq(rollout_gate_eval(tiny_bad, zero, 0.05, 3000, 3000, 1000, NULL), ROLLOUT_FAIL);
    ck_assert_int_eq(rollout_gate_eval(tiny_ok, zero, 0.05, 3000, 3000, 1000, NULL), ROLLOUT_PASS);
    /* the bake is over but the reports do not cover it yet: wait for them */
    ck_assert_int_eq(rollout_gate_eval(tiny_bad, zero, 0.05, 500, 1200, 1000, NULL), ROLLOUT_WAIT);
    ck_assert_int_eq(rollout_gate_eval(tiny_bad, zero, 0.05, 500, 3000, 1000, NULL), ROLLOUT_FAIL);
    /* a bake of 0 still asks for ROLLOUT_MIN_REQUESTS when it can wait: it cannot */
    ck_assert_int_eq(rollout_gate_eval(zero, zero, 0.05, 0, 0, 0, NULL), ROLLOUT_PASS);
}
END_TEST

START_TEST(gate_limits)
{
    struct rollout_counts old_clean = {1000, 0}, old_bad = {1000, 200};
    double limit = 0;
    /* exactly at the limit passes, above fails */
    ck_assert_int_eq(rollout_gate_eval((struct rollout_counts){100, 5}, old_clean, 0.05, 1000, 1000,
                                       1000, &limit),
                     ROLLOUT_PASS);
    ck_assert_double_eq_tol(limit, 0.05, 1e-12);
    ck_assert_int_eq(
        rollout_gate_eval((struct rollout_counts){100, 6}, old_clean, 0.05, 1000, 1000, 1000, NULL),
        ROLLOUT_FAIL);
    /* errors every backend has (old at 20 %) do not fail a step: limit 25 % */
    ck_assert_int_eq(rollout_gate_eval((struct rollout_counts){100, 24}, old_bad, 0.05, 1000, 1000,
                                       1000, &limit),
                     ROLLOUT_PASS);
    ck_assert_double_eq_tol(limit, 0.25, 1e-12);
    ck_assert_int_eq(
        rollout_gate_eval((struct rollout_counts){100, 26}, old_bad, 0.05, 1000, 1000, 1000, NULL),
        ROLLOUT_FAIL);
    /* max rate 0: any error fails */
    ck_assert_int_eq(
        rollout_gate_eval((struct rollout_counts){100, 1}, old_clean, 0.0, 1000, 1000, 1000, NULL),
        ROLLOUT_FAIL);
}
END_TEST

/* ---- the store ------------------------------------------------------------------ */

static char tmpdir[256];
static char dbpath[320];
static char base[320];
static char boot[320];
static struct ev_loop *loop;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void store_setup(void)
{
    lb_log_setup("test_rollout", open("/dev/null", O_WRONLY | O_CLOEXEC), LB_LOG_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-rollout-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof(dbpath), "%s/lb.db", tmpdir);
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    snprintf(boot, sizeof(boot), "%s/config.yaml", tmpdir);
    FILE *f = fopen(boot, "w");
    ck_assert_ptr_nonnull(f);
    fputs("frontends:\n"
          "  - {name: web, address: 127.0.0.1, port: 8080}\n"
          "backends:\n"
          "  - {id: a, url: \"http://127.0.0.1:9001\"}\n"
          "  - {id: b, url: \"http://127.0.0.1:9002\"}\n",
          f);
    fclose(f);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void store_teardown(void)
{
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static uint64_t versions_of(struct store *st)
{
    uint64_t n = 0;
    ck_assert_int_eq(store_active_version(st, &n, NULL), LB_OK);
    return n;
}

START_TEST(store_transitions_are_atomic)
{
    struct lb_err e = {0};
    struct store *st = store_open(dbpath, &e);
    ck_assert_msg(st != NULL, "%s", e.msg);
    uint64_t v = 0, gen = 0;
    ck_assert_int_eq(store_version_put_gen(st, "x: 1\n", "h1", "uid:0", NULL, &v, &gen, &e), LB_OK);
    const struct store_rollout_row r1 = {
        .id = 1, .status = "running", .spec = "{}", .state = "{\"s\":1}"};
    /* every statement of the row alone fails once: nothing is written */
    for (int n = 1; n <= 3; n++) {
        store__fail_after(st, n);
        int rc = store_rollout_put(st, &r1, &e);
        struct store_rollout *rows = NULL;
        size_t cnt = 0;
        ck_assert_int_eq(store_rollouts_list(st, 0, 0, &rows, &cnt, NULL), LB_OK);
        store_rollouts_free(rows, cnt);
        if (rc == LB_OK) {
            ck_assert_uint_eq(cnt, 1);
            break;
        }
        ck_assert_int_eq(rc, LB_ESTORE);
        ck_assert_uint_eq(cnt, 0);
    }
    /* a version with its row: each failing statement leaves both as they were */
    const struct store_rollout_row r2 = {
        .id = 1, .status = "failed", .spec = "{}", .state = "{\"s\":2}"};
    for (int n = 1; n <= 12; n++) {
        store_rollout_attach(st, &r2);
        store__fail_after(st, n);
        const struct store_put p = {.content = "x: 2\n",
                                    .hash = "h2",
                                    .author = "uid:0",
                                    .comment = "rollout 1 step 1/1: add c",
                                    .action = "rollout.add"};
        int rc = store_version_put_audited(st, &p, &v, &gen, &e);
        struct store_rollout *rows = NULL;
        size_t cnt = 0;
        ck_assert_int_eq(store_rollouts_list(st, 1, 0, &rows, &cnt, NULL), LB_OK);
        ck_assert_uint_eq(cnt, 1);
        if (rc == LB_OK) {
            ck_assert_str_eq(rows[0].status, "failed");
            ck_assert_str_eq(rows[0].state, "{\"s\":2}");
            ck_assert_uint_eq(rows[0].last_version, 2);
            ck_assert_uint_eq(versions_of(st), 2);
            store_rollouts_free(rows, cnt);
            break;
        }
        ck_assert_str_eq(rows[0].status, "running");
        ck_assert_uint_eq(rows[0].last_version, 0);
        ck_assert_uint_eq(versions_of(st), 1);
        store_rollouts_free(rows, cnt);
    }
    /* the attachment is used once: the next version leaves the row alone */
    ck_assert_int_eq(store_version_put_gen(st, "x: 3\n", "h3", "uid:0", NULL, &v, &gen, &e), LB_OK);
    struct store_rollout *rows = NULL;
    size_t cnt = 0;
    ck_assert_int_eq(store_rollouts_list(st, 1, 0, &rows, &cnt, NULL), LB_OK);
    ck_assert_uint_eq(rows[0].last_version, 2);
    store_rollouts_free(rows, cnt);
    uint64_t next = 0;
    ck_assert_int_eq(store_rollout_next_id(st, &next, NULL), LB_OK);
    ck_assert_uint_eq(next, 2);
    store_close(st);
}
END_TEST

/* ---- the engine on a real core ------------------------------------------------------ */

static struct cp *open_cp(void)
{
    struct cp_config cfg = {
        .db_path = dbpath, .bootstrap = boot, .control_base = base, .attach = rollouts_attach};
    struct lb_err err = {0};
    struct cp *cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new: %s", err.msg);
    return cp;
}

static int64_t now_ms(void)
{
    return (int64_t)(ev_now(loop) * 1000.0);
}

static uint64_t start(struct cp *cp, const char *url)
{
    const char *urls[] = {url};
    const char *rm[] = {"a"};
    struct rollout_request rq = {.add_urls = urls,
                                 .n_add = 1,
                                 .remove = rm,
                                 .n_remove = 1,
                                 .batch = 1,
                                 .interval_ms = 0,
                                 .bake_ms = 0,
                                 .health_timeout_ms = 1000,
                                 .max_error_rate = -1,
                                 .author = "uid:0"};
    uint64_t id = 0;
    struct lb_err e = {0};
    ck_assert_msg(rollouts_start(rollouts_of(cp), &rq, &id, &e) == LB_OK, "%s", e.msg);
    return id;
}

START_TEST(engine_rolls_back_a_never_healthy_backend)
{
    struct cp *cp = open_cp();
    ck_assert_uint_eq(cp_active_version(cp), 1);
    uint64_t id = start(cp, "http://127.0.0.1:9003");
    ck_assert_uint_eq(id, 1);
    struct lb_err e = {0};
    /* a second one is refused while the first runs */
    const char *urls[] = {"http://127.0.0.1:9004"};
    struct rollout_request rq = {.add_urls = urls,
                                 .n_add = 1,
                                 .author = "uid:0",
                                 .interval_ms = -1,
                                 .bake_ms = -1,
                                 .max_error_rate = -1};
    uint64_t id2 = 0;
    ck_assert_int_eq(rollouts_start(rollouts_of(cp), &rq, &id2, &e), LB_ECONFLICT);
    int64_t t = now_ms();
    rollouts_tick(rollouts_of(cp), t);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    ck_assert_int_ge(cp_backend_find(cp, "127.0.0.1-9003"), 0);
    struct store_version *v = NULL;
    ck_assert_int_eq(cp_version_get(cp, 2, &v, NULL), LB_OK);
    ck_assert_str_eq(v->comment, "rollout 1 step 1/1: add 127.0.0.1-9003 (standby until healthy)");
    store_version_free(v);
    /* someone else's write: 409 naming the rollout */
    struct cp_write w = {.author = "uid:0"};
    uint64_t ver = 0;
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_ECONFLICT);
    ck_assert_ptr_nonnull(strstr(e.msg, "rollout 1"));
    /* a failing store write changes nothing, then the timeout rolls back */
    store__fail_after(cp__store(cp), 2);
    rollouts_tick(rollouts_of(cp), t + 1500);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    struct rollout_view *rv = malloc(sizeof(*rv));
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, t, rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_RUNNING);
    rollouts_tick(rollouts_of(cp), t + 1500);
    ck_assert_uint_eq(cp_active_version(cp), 3);
    ck_assert_int_lt(cp_backend_find(cp, "127.0.0.1-9003"), 0);
    ck_assert_int_ge(cp_backend_find(cp, "a"), 0);
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, t, rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_FAILED);
    ck_assert_int_eq(rv->state.gate, ROLLOUT_GATE_HEALTH);
    ck_assert_uint_eq(rv->last_version, 3);
    ck_assert_str_eq(rv->state.backend, "127.0.0.1-9003");
    struct lb_prom p;
    lb_prom_init(&p);
    rollouts_metrics(rollouts_of(cp), &p);
    ck_assert_ptr_nonnull(strstr(p.buf, "lb_cp_rollout_rollbacks_total{reason=\"gate\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(p.buf, "lb_cp_rollout_state{state=\"failed\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(p.buf, "lb_cp_rollout_write_errors_total 1\n"));
    lb_prom_deinit(&p);
    /* writes are open again */
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_OK);
    cp_free(cp);
    /* after a restart the ended rollout is still there */
    cp = open_cp();
    ck_assert_uint_eq(rollouts_current(rollouts_of(cp)), 1);
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, t, rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_FAILED);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 1, ROLLOUTS_UNDO, "uid:0", &e),
                     LB_ECONFLICT);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 9, ROLLOUTS_ABORT, "uid:0", &e),
                     LB_ENOTFOUND);
    free(rv);
    cp_free(cp);
}
END_TEST

START_TEST(engine_resumes_after_restart_and_aborts)
{
    struct cp *cp = open_cp();
    start(cp, "http://127.0.0.1:9005");
    rollouts_tick(rollouts_of(cp), now_ms());
    ck_assert_uint_eq(cp_active_version(cp), 2);
    cp_free(cp); /* as if killed: the state is what was stored */
    cp = open_cp();
    ck_assert_uint_eq(cp_active_version(cp), 2);
    struct rollout_view *rv = malloc(sizeof(*rv));
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, now_ms(), rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_RUNNING);
    ck_assert_int_eq(rv->state.phase, ROLLOUT_WAIT_HEALTHY);
    struct lb_err e = {0};
    struct cp_write w = {.author = "uid:0"};
    uint64_t ver = 0;
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_ECONFLICT);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 1, ROLLOUTS_PAUSE, "uid:0", &e), LB_OK);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 1, ROLLOUTS_PAUSE, "uid:0", &e),
                     LB_ECONFLICT);
    /* an abort whose store write fails changes nothing */
    store__fail_after(cp__store(cp), 1);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 1, ROLLOUTS_ABORT, "uid:0", &e), LB_ESTORE);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), 1, ROLLOUTS_ABORT, "uid:0", &e), LB_OK);
    ck_assert_uint_eq(cp_active_version(cp), 3);
    ck_assert_int_lt(cp_backend_find(cp, "127.0.0.1-9005"), 0);
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, now_ms(), rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_ABORTED);
    free(rv);
    cp_free(cp);
}
END_TEST

START_TEST(engine_undoes_a_success)
{
    struct cp *cp = open_cp();
    /* remove-only: no health to wait for */
    const char *rm[] = {"a"};
    struct rollout_request rq = {.remove = rm,
                                 .n_remove = 1,
                                 .interval_ms = 0,
                                 .bake_ms = 0,
                                 .max_error_rate = -1,
                                 .author = "uid:0"};
    uint64_t id = 0;
    struct lb_err e = {0};
    ck_assert_msg(rollouts_start(rollouts_of(cp), &rq, &id, &e) == LB_OK, "%s", e.msg);
    int64_t t = now_ms();
    for (int i = 0; i < 4; i++)
        rollouts_tick(rollouts_of(cp), t + i);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    ck_assert_int_lt(cp_backend_find(cp, "a"), 0);
    struct rollout_view *rv = malloc(sizeof(*rv));
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), id, t, rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_SUCCEEDED);
    ck_assert_uint_eq(rv->state.steps_done, 1);
    /* writes are open again; undo goes back to version 1's content */
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), id, ROLLOUTS_ABORT, "uid:0", &e),
                     LB_ECONFLICT);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), id, ROLLOUTS_UNDO, "uid:0", &e), LB_OK);
    ck_assert_uint_eq(cp_active_version(cp), 3);
    ck_assert_int_ge(cp_backend_find(cp, "a"), 0);
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), id, t, rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_UNDONE);
    ck_assert_uint_eq(rv->state.final_version, 3);
    ck_assert_int_eq(rollouts_control(rollouts_of(cp), id, ROLLOUTS_UNDO, "uid:0", &e),
                     LB_ECONFLICT);
    struct store_version *v = NULL;
    ck_assert_int_eq(cp_version_get(cp, 2, &v, NULL), LB_OK);
    ck_assert_str_eq(v->comment, "rollout 1 step 1/1: remove a");
    store_version_free(v);
    free(rv);
    cp_free(cp);
    /* a stored row that does not decode: logged, and the control plane starts */
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "UPDATE rollouts SET state = 'garbage'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    cp = open_cp();
    ck_assert_uint_eq(rollouts_current(rollouts_of(cp)), 0);
    cp_free(cp);
}
END_TEST

START_TEST(engine_ends_when_it_cannot_roll_back)
{
    struct cp *cp = open_cp();
    start(cp, "http://127.0.0.1:9007");
    rollouts_tick(rollouts_of(cp), now_ms());
    ck_assert_uint_eq(cp_active_version(cp), 2);
    cp_free(cp);
    /* version 1 becomes unreadable behind the store's back */
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "DROP TRIGGER config_versions_no_update; UPDATE config_versions "
                                  "SET content = 'backends: [' WHERE number = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    cp = open_cp();
    ck_assert_uint_eq(cp_active_version(cp), 2);
    rollouts_tick(rollouts_of(cp), now_ms() + 1500); /* the health bound: roll back */
    struct rollout_view *rv = malloc(sizeof(*rv));
    ck_assert_int_eq(rollouts_get(rollouts_of(cp), 1, now_ms(), rv, NULL), LB_OK);
    ck_assert_int_eq(rv->state.status, ROLLOUT_FAILED);
    ck_assert_int_eq(rv->state.gate, ROLLOUT_GATE_HEALTH);
    ck_assert_msg(strstr(rv->state.reason, "rolling back to version 1 was refused") != NULL, "%s",
                  rv->state.reason);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    free(rv);
    /* the operator can take over */
    struct lb_err e = {0};
    struct cp_write w = {.author = "uid:0"};
    uint64_t ver = 0;
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_OK);
    cp_free(cp);
}
END_TEST

/* The core knows the engine only as its guard (cp_guard.h): without one
 * every write goes ahead and none is staged, and the engine's calls take
 * the missing engine for one with no rollout; a second guard is refused. */
START_TEST(core_without_the_engine)
{
    struct cp_config cfg = {.db_path = dbpath, .bootstrap = boot, .control_base = base};
    struct lb_err e = {0};
    struct cp *cp = cp_new(loop, &cfg, &e);
    ck_assert_msg(cp != NULL, "cp_new: %s", e.msg);
    ck_assert_ptr_null(rollouts_of(cp));
    struct rollout_view *rv = malloc(sizeof(*rv));
    ck_assert_int_eq(rollouts_get(NULL, 1, now_ms(), rv, &e), LB_ENOTFOUND);
    free(rv);
    uint64_t ids[4], id = 0;
    size_t n = 9;
    ck_assert_int_eq(rollouts_ids(NULL, ids, 4, &n, &e), LB_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(rollouts_current(NULL), 0);
    rollouts_tick(NULL, now_ms());
    const char *rm[] = {"a"};
    struct rollout_request rq = {.remove = rm, .n_remove = 1, .author = "uid:0"};
    ck_assert_int_eq(rollouts_start(NULL, &rq, &id, &e), LB_ENOTFOUND);
    ck_assert_int_eq(rollouts_control(NULL, 1, ROLLOUTS_ABORT, "uid:0", &e), LB_ENOTFOUND);
    ck_assert_int_eq(rollouts_canary_abort(NULL, "uid:0", &e), LB_ENOTFOUND);
    struct lb_prom p;
    lb_prom_init(&p);
    rollouts_metrics(NULL, &p);
    ck_assert_ptr_nonnull(strstr(p.buf, "lb_cp_rollout_steps 0\n"));
    ck_assert_ptr_nonnull(strstr(p.buf, "lb_cp_canary_active 0\n"));
    lb_prom_deinit(&p);
    /* a backend write staged on canaries needs the engine; a plain one goes */
    struct cp_canary cn = {.nodes = "dp0", .bake_ms = -1, .max_error_rate = -1};
    struct cp_write w = {.author = "uid:0", .canary = &cn};
    uint64_t ver = 0;
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_EINVAL);
    ck_assert_uint_eq(cp_active_version(cp), 1);
    w.canary = NULL;
    ck_assert_int_eq(cp_backend_drain(cp, "b", &w, &ver, &e), LB_OK);
    ck_assert_uint_eq(cp_active_version(cp), 2);
    /* the engine joins once: a second one is refused (and freed) */
    ck_assert_int_eq(rollouts_attach(cp, loop, &e), LB_OK);
    ck_assert_ptr_nonnull(rollouts_of(cp));
    ck_assert_int_eq(rollouts_attach(cp, loop, &e), LB_ECONFLICT);
    cp_free(cp);
}
END_TEST

static Suite *rollout_suite(void)
{
    Suite *s = suite_create("rollout");
    TCase *tc = tcase_create("machine");
    tcase_add_checked_fixture(tc, spec_setup, NULL);
    tcase_add_test(tc, four_for_four_in_four_steps);
    tcase_add_test(tc, batches_of_unequal_lists);
    tcase_add_test(tc, never_healthy_times_out);
    tcase_add_test(tc, down_during_bake_waits_again);
    tcase_add_test(tc, error_rate_trips_the_gate);
    tcase_add_test(tc, capacity_is_kept);
    tcase_add_test(tc, operator_requests);
    tcase_add_test(tc, spec_checks);
    tcase_add_test(tc, stored_form_round_trips);
    suite_add_tcase(s, tc);
    tc = tcase_create("gates");
    tcase_add_test(tc, window_sums_data_planes);
    tcase_add_test(tc, window_counter_resets);
    tcase_add_test(tc, gate_zero_traffic_and_tiny_windows);
    tcase_add_test(tc, gate_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_add_checked_fixture(tc, store_setup, store_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, store_transitions_are_atomic);
    tcase_add_test(tc, engine_rolls_back_a_never_healthy_backend);
    tcase_add_test(tc, engine_resumes_after_restart_and_aborts);
    tcase_add_test(tc, engine_undoes_a_success);
    tcase_add_test(tc, engine_ends_when_it_cannot_roll_back);
    tcase_add_test(tc, core_without_the_engine);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rollout_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
