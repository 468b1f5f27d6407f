/* tests/e2e/test_rollout.c: rolling backend updates through the control
 * plane, under client load (lb-faultload's keep-alive clients and a client
 * opening a connection per request):
 *   - 4 old backends -> 4 new, batch 1, through two data planes (the gates
 *     sum what both report): no request fails, every step is in the history
 *     (add, activate, remove), old backends get nothing after their removal;
 * and through one data plane:
 *   - a new backend answering 500 (its health endpoint fine): the error-rate
 *     gate trips, the config rolls back by itself, the failures clients saw
 *     are bounded and none come after the rollback;
 *   - a new backend that never becomes healthy: the step times out and rolls
 *     back, nothing old was removed, no request fails;
 *   - the control plane killed (SIGKILL) in several phases and restarted:
 *     the rollout ends in success, no version is lost, no request fails.
 * Figures go to stderr ("rollout: ..."). */
#include "e2e.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define BACKEND LB_BUILD_DIR "/lb-backend"

/* ---- the world -------------------------------------------------------------- */

/* b0..b3 in the config, b4..b7 running for the rollouts to add, <dps>
 * data planes sharing the frontend port; health checks every 100 ms so that
 * a step takes about a second. */
static struct e2e_cp *world_n(unsigned dps)
{
    struct e2e_cp_opts o = {
        .backends = 8, .configured = 4, .dataplanes = dps, .no_metrics = dps > 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    char path[256];
    e2e_cp_path(w, "config.yaml", path, sizeof(path));
    FILE *f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("healthcheck:\n  interval: \"100ms\"\n  timeout: \"100ms\"\n  rise: 2\n  fall: 2\n", f);
    ck_assert_int_eq(fclose(f), 0);
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "config", "apply", path, NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, dps, NULL), 0);
    return w;
}

/* `lbctl --json rollout status <id>` into <out> (caller frees); NULL when
 * lbctl failed (the control plane is restarting). */
static char *status_json(struct e2e_cp *w, const char *id)
{
    struct e2e_cmd r;
    int rc = e2e_cp_lbctl(w, &r, "--json", "rollout", "status", id, NULL);
    char *out = rc == 0 ? strdup(r.out) : NULL;
    e2e_cmd_free(&r);
    return out;
}

/* Polls rollout <id> until its status is <status> (and, when <phase> is not
 * NULL, its phase <phase> at step <step>), at most <ms>. Returns its last
 * JSON (caller frees), NULL when it never got there. */
static char *wait_rollout(struct e2e_cp *w, const char *id, const char *status, const char *phase,
                          long step, uint64_t ms)
{
    uint64_t end = e2e_now_ms() + ms;
    char *last = NULL;
    do {
        free(last);
        last = status_json(w, id);
        char st[32], ph[32];
        long k = 0;
        e2e_json_str(last, "status", st, sizeof(st));
        e2e_json_str(last, "phase", ph, sizeof(ph));
        e2e_json_long(last ? last : "", "step", &k);
        if (strcmp(st, status) == 0 && (phase == NULL || (strcmp(ph, phase) == 0 && k == step)))
            return last;
        if (strcmp(st, "running") != 0 && strcmp(st, "paused") != 0 && last != NULL &&
            strcmp(st, status) != 0) {
            fprintf(stderr, "rollout: ended %s, not %s: %s\n", st, status, last);
            break;
        }
        e2e_poll_pause(20);
    } while (e2e_now_ms() < end);
    free(last);
    return NULL;
}

/* `lbctl --json config history` (caller frees). */
static char *history(struct e2e_cp *w)
{
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "--json", "config", "history", NULL) == 0, "%s", r.err);
    char *out = strdup(r.out);
    e2e_cmd_free(&r);
    return out;
}

static unsigned count(const char *hay, const char *needle)
{
    unsigned n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* `lbctl --json backends list` (caller frees). */
static char *backends(struct e2e_cp *w)
{
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "--json", "backends", "list", NULL) == 0, "%s", r.err);
    char *out = strdup(r.out);
    e2e_cmd_free(&r);
    return out;
}

/* Backends of the active config that are active and up. */
static unsigned healthy_active(struct e2e_cp *w)
{
    char *b = backends(w);
    unsigned n = 0;
    /* each backend object starts with its "id" */
    for (char *p = strstr(b, "\"id\":"); p != NULL;) {
        char *next = strstr(p + 5, "\"id\":");
        if (next != NULL)
            *next = '\0';
        n += strstr(p, "\"state\": \"active\"") != NULL && strstr(p, "\"health\": \"up\"") != NULL;
        if (next != NULL)
            *next = '"';
        p = next;
    }
    free(b);
    return n;
}

/* world_n() once every configured backend has passed its health checks: a
 * rollout that starts before then sees old backends "unknown", and the
 * capacity the tests check is counted from healthy ones. */
static struct e2e_cp *world_up(unsigned dps)
{
    struct e2e_cp *w = world_n(dps);
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(10000);
    unsigned up = 0;
    while ((up = healthy_active(w)) < 4 && e2e_now_ms() < end)
        e2e_poll_pause(20);
    ck_assert_msg(up == 4, "%u of 4 configured backends up", up);
    return w;
}

/* Starts a rollout with lbctl; returns its id (as text, static). */
static const char *start(struct e2e_cp *w, const char *const *args)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = "--json";
    argv[n++] = "rollout";
    argv[n++] = "start";
    for (size_t i = 0; args[i] != NULL && n < 30; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    struct e2e_cmd r;
    /* e2e_cp_lbctl() is variadic: pass the array's elements */
    int rc = e2e_cp_lbctl(w, &r, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                          argv[7], argv[8], argv[9], argv[10], argv[11], argv[12], argv[13],
                          argv[14], argv[15], argv[16], argv[17], argv[18], argv[19], NULL);
    ck_assert_msg(rc == 0, "rollout start: %s%s", r.out, r.err);
    long id = 0;
    ck_assert(e2e_json_long(r.out, "id", &id));
    e2e_cmd_free(&r);
    static char buf[24];
    snprintf(buf, sizeof(buf), "%ld", id);
    return buf;
}

/* ---- load ----------------------------------------------------------------------- */

/* One GET / on a new connection; its status, 0 when none came. */
static int get_new_conn(unsigned port)
{
    struct e2e_resp resp;
    if (e2e_request(port, "GET", "/", "Connection: close\r\n", NULL, 0, &resp) != 0)
        return 0;
    int st = resp.status;
    e2e_resp_free(&resp);
    return st;
}

/* Waits for the load; fills the counts. */
static void load_end(struct e2e_cp *w, struct e2e_load *l, long *ka_total, long *ka_failed,
                     long *pr_ok, long *pr_failed)
{
    struct e2e_load_counts n;
    e2e_cp_load_end(w, l, &n);
    *ka_total = n.ka_total;
    *ka_failed = n.ka_failed;
    *pr_ok = n.pr_ok;
    *pr_failed = n.pr_failed;
}

/* ---- tests ------------------------------------------------------------------------ */

/* through two data planes: the gates sum what both report */
START_TEST(four_old_for_four_new)
{
    struct e2e_cp *w = world_up(2);
    char add[4][160];
    for (unsigned i = 0; i < 4; i++)
        snprintf(add[i], sizeof(add[i]), "b%u=%s", 4 + i, e2e_cp_backend_url(w, 4 + i));
    struct e2e_load l = e2e_cp_load_start(w, 4, (unsigned)(e2e_scaled_ms(16000) / 1000));
    uint64_t t0 = e2e_now_ms();
    const char *args[] = {"--add",  add[0],  "--add",     add[1],          "--add",
                          add[2],   "--add", add[3],      "--interval",    "300ms",
                          "--bake", "800ms", "--comment", "four for four", NULL};
    const char *id = start(w, args);
    /* someone else's change meanwhile: refused, naming the rollout */
    struct e2e_cmd r;
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "backends", "drain", "b3", NULL), 1);
    char want409[64];
    snprintf(want409, sizeof(want409), "rollout %s is running", id);
    ck_assert_msg(strstr(r.err, want409) != NULL && strstr(r.err, "conflict") != NULL, "%s", r.err);
    e2e_cmd_free(&r);
    /* capacity: at least 4 - 1 active healthy backends at every look */
    unsigned min_healthy = 99, looks = 0;
    char *done = NULL;
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(14000);
    while (done == NULL && e2e_now_ms() < end) {
        unsigned h = healthy_active(w);
        min_healthy = h < min_healthy ? h : min_healthy;
        looks++;
        char *st = status_json(w, id), buf[32];
        if (st != NULL && strcmp(e2e_json_str(st, "status", buf, sizeof(buf)), "succeeded") == 0)
            done = st;
        else
            free(st);
    }
    ck_assert_msg(done != NULL, "the rollout did not succeed");
    ck_assert_msg(min_healthy >= 3, "%u healthy active backends at one of %u looks", min_healthy,
                  looks);
    uint64_t took = e2e_now_ms() - t0;
    ck_assert_msg(took < l.ms, "the rollout outlasted the load: raise the load's seconds");
    long old_req = 0, new_req = 0;
    ck_assert(e2e_json_long(done, "oldRequests", &old_req));
    ck_assert(e2e_json_long(done, "requests", &new_req));
    free(done);
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, NULL), 0);
    /* the old backends get nothing once removed */
    long before[4];
    for (unsigned i = 0; i < 4; i++)
        before[i] = e2e_cp_backend_stat(w, i, "others");
    long ka_total, ka_failed, pr_ok, pr_failed;
    load_end(w, &l, &ka_total, &ka_failed, &pr_ok, &pr_failed);
    for (unsigned i = 0; i < 4; i++) /* + 1: the /stats request itself */
        ck_assert_int_eq(e2e_cp_backend_stat(w, i, "others"), before[i] + 1);
    long newer = 0;
    for (unsigned i = 4; i < 8; i++)
        newer += e2e_cp_backend_stat(w, i, "others");
    /* one version per transition of each step, named */
    char *h = history(w);
    for (unsigned k = 1; k <= 4; k++) {
        char want[96];
        snprintf(want, sizeof(want), "rollout %s step %u/4: add b%u (standby", id, k, 3 + k);
        ck_assert_msg(count(h, want) == 1, "no \"%s\" in %s", want, h);
        snprintf(want, sizeof(want), "rollout %s step %u/4: activate b%u\"", id, k, 3 + k);
        ck_assert_msg(count(h, want) == 1, "no \"%s\"", want);
        snprintf(want, sizeof(want), "rollout %s step %u/4: remove b%u\"", id, k, k - 1);
        ck_assert_msg(count(h, want) == 1, "no \"%s\"", want);
    }
    free(h);
    char *b = backends(w);
    for (unsigned i = 0; i < 8; i++) {
        char want[32];
        snprintf(want, sizeof(want), "\"id\": \"b%u\"", i);
        ck_assert_msg(count(b, want) == (i >= 4), "%s in %s", want, b);
    }
    free(b);
    fprintf(stderr,
            "rollout: 4 -> 4 in %llu ms; keep-alive %ld requests, %ld failed; per-request %ld "
            "ok, %ld failed; new backends served %ld; last gate: %ld requests to the new "
            "backend, %ld to the old ones; at least %u healthy active backends in %u looks\n",
            (unsigned long long)took, ka_total, ka_failed, pr_ok, pr_failed, newer, new_req,
            old_req, min_healthy, looks);
    ck_assert_int_eq(ka_failed, 0);
    ck_assert_int_eq(pr_failed, 0);
    ck_assert_int_gt(ka_total, 0);
    ck_assert_int_gt(pr_ok, 0);
    e2e_cp_stop(w);
}
END_TEST

/* Starts lb-backend --fail-status 500 on a free port: its URL into <url>. */
static pid_t failing_backend(struct e2e_cp *w, char *url, size_t size)
{
    unsigned port = e2e_free_port();
    ck_assert_uint_gt(port, 0);
    char ports[16], path[512];
    snprintf(ports, sizeof(ports), "%u", port);
    e2e_cp_path(w, "bad.log", path, sizeof(path));
    char *argv[] = {BACKEND, "--port", ports, "--name", "bad", "--fail-status", "500", NULL};
    pid_t pid = e2e_spawn(argv, path);
    ck_assert_int_gt(pid, 0);
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    struct e2e_conn *c = NULL;
    while ((c = e2e_connect(port)) == NULL && e2e_now_ms() < end)
        e2e_poll_pause(10);
    ck_assert_msg(c != NULL, "the failing backend did not start");
    e2e_conn_close(c);
    snprintf(url, size, "bad=http://127.0.0.1:%u", port);
    return pid;
}

START_TEST(failing_backend_rolls_back)
{
    struct e2e_cp *w = world_up(1);
    char bad[96];
    pid_t bp = failing_backend(w, bad, sizeof(bad));
    struct e2e_load l = e2e_cp_load_start(w, 4, (unsigned)(e2e_scaled_ms(6000) / 1000));
    const char *args[] = {"--add", bad, "--remove", "b0", "--bake", "1s", "--max-error-rate",
                          "5%",    NULL};
    const char *id = start(w, args);
    /* from the start of its bake to the rollback: the bake, one report
     * interval (1 s), and the polls of this test */
    char *baking = wait_rollout(w, id, "running", "bake", 1, e2e_scaled_ms(8000));
    ck_assert_msg(baking != NULL, "the new backend never baked");
    free(baking);
    uint64_t t_bake = e2e_now_ms();
    char *out = wait_rollout(w, id, "failed", NULL, 0, e2e_scaled_ms(8000));
    ck_assert_msg(out != NULL, "the rollout did not fail");
    uint64_t tripped = e2e_now_ms() - t_bake;
    ck_assert_msg(tripped < e2e_scaled_ms(3500), "the gate tripped %llu ms into the bake",
                  (unsigned long long)tripped);
    char gate[32], be[32];
    long rb = 0, pre = 0;
    ck_assert_str_eq(e2e_json_str(out, "failedGate", gate, sizeof(gate)), "error_rate");
    ck_assert_str_eq(e2e_json_str(out, "failedBackend", be, sizeof(be)), "bad");
    ck_assert(e2e_json_long(out, "rollbackVersion", &rb));
    ck_assert(e2e_json_long(out, "preVersion", &pre));
    fprintf(stderr, "rollout: 500 backend: %s\n", out);
    free(out);
    long version = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 1, &version), 0);
    ck_assert_int_eq(version, rb);
    char *b = backends(w);
    ck_assert_uint_eq(count(b, "\"id\": \"bad\""), 0);
    ck_assert_uint_eq(count(b, "\"id\": \"b0\""), 1);
    free(b);
    long ka_total, ka_failed, pr_ok, pr_failed;
    load_end(w, &l, &ka_total, &ka_failed, &pr_ok, &pr_failed);
    /* after the rollback: nothing fails */
    unsigned port = e2e_cp_frontend_port(w);
    int after_failed = 0;
    for (int i = 0; i < 50; i++)
        after_failed += get_new_conn(port) != 200;
    struct e2e_cmd m;
    ck_assert_int_eq(e2e_cp_lbctl(w, &m, "audit", "--action", "rollback", NULL), 0);
    ck_assert_msg(strstr(m.out, "rollout") != NULL, "%s", m.out);
    e2e_cmd_free(&m);
    fprintf(stderr,
            "rollout: 500 backend: rolled back %llu ms after its bake began (bake 1 s); "
            "keep-alive %ld requests, %ld failed; per-request %ld ok, %ld failed; after the "
            "rollback %d of 50 failed\n",
            (unsigned long long)tripped, ka_total, ka_failed, pr_ok, pr_failed, after_failed);
    ck_assert_int_eq(after_failed, 0);
    /* logged as a JSON line */
    char cplog[512];
    e2e_cp_path(w, "cp.log", cplog, sizeof(cplog));
    FILE *lf = fopen(cplog, "r");
    ck_assert_ptr_nonnull(lf);
    char line[2048];
    bool logged = false;
    while (!logged && fgets(line, sizeof(line), lf) != NULL)
        logged = strstr(line, "\"event\":\"rollout_rolled_back\"") != NULL &&
                 strstr(line, "backend bad error rate") != NULL;
    fclose(lf);
    ck_assert_msg(logged, "no rollout_rolled_back line in cp.log");
    /* bounded: only what reached it during its bake */
    ck_assert_int_lt(ka_failed + pr_failed, (ka_total + pr_ok + pr_failed) / 2);
    e2e_kill(bp);
    e2e_cp_stop(w);
}
END_TEST

START_TEST(never_healthy_backend_times_out)
{
    struct e2e_cp *w = world_up(1);
    unsigned dead = e2e_free_port(); /* nothing listens there */
    char add[64];
    snprintf(add, sizeof(add), "dead=http://127.0.0.1:%u", dead);
    struct e2e_load l = e2e_cp_load_start(w, 4, (unsigned)(e2e_scaled_ms(4000) / 1000));
    const char *args[] = {"--add", add, "--health-timeout", "1500ms", NULL};
    const char *id = start(w, args);
    char *out = wait_rollout(w, id, "failed", NULL, 0, e2e_scaled_ms(8000));
    ck_assert_msg(out != NULL, "the rollout did not fail");
    char gate[32], be[32];
    ck_assert_str_eq(e2e_json_str(out, "failedGate", gate, sizeof(gate)), "health");
    ck_assert_str_eq(e2e_json_str(out, "failedBackend", be, sizeof(be)), "dead");
    long done = -1;
    ck_assert(e2e_json_long(out, "stepsDone", &done));
    ck_assert_int_eq(done, 0);
    free(out);
    char *h = history(w);
    char want[64];
    snprintf(want, sizeof(want), "rollout %s step 1/4: remove", id);
    ck_assert_uint_eq(count(h, want), 0); /* nothing old was removed */
    snprintf(want, sizeof(want), "rollout %s failed", id);
    ck_assert_uint_eq(count(h, want), 1);
    free(h);
    char *b = backends(w);
    ck_assert_uint_eq(count(b, "\"id\": \"dead\""), 0);
    for (unsigned i = 0; i < 4; i++) {
        snprintf(want, sizeof(want), "\"id\": \"b%u\"", i);
        ck_assert_uint_eq(count(b, want), 1);
    }
    free(b);
    long ka_total, ka_failed, pr_ok, pr_failed;
    load_end(w, &l, &ka_total, &ka_failed, &pr_ok, &pr_failed);
    fprintf(stderr,
            "rollout: never healthy: keep-alive %ld requests, %ld failed; per-request %ld ok, "
            "%ld failed\n",
            ka_total, ka_failed, pr_ok, pr_failed);
    ck_assert_int_eq(ka_failed, 0);
    ck_assert_int_eq(pr_failed, 0);
    e2e_cp_stop(w);
}
END_TEST

START_TEST(control_plane_killed_in_each_phase)
{
    struct e2e_cp *w = world_up(1);
    /* the first new backend starts only once the control plane was killed
     * while waiting for its health */
    unsigned late = e2e_free_port();
    char add[4][160];
    snprintf(add[0], sizeof(add[0]), "b4=http://127.0.0.1:%u", late);
    for (unsigned i = 1; i < 4; i++)
        snprintf(add[i], sizeof(add[i]), "b%u=%s", 4 + i, e2e_cp_backend_url(w, 4 + i));
    struct e2e_load l = e2e_cp_load_start(w, 4, (unsigned)(e2e_scaled_ms(22000) / 1000));
    const char *args[] = {"--add", add[0],   "--add", add[1],       "--add", add[2], "--add",
                          add[3],  "--bake", "1s",    "--interval", "1s",    NULL};
    const char *id = start(w, args);
    /* killed while it waits for health, bakes, and waits between steps */
    static const struct {
        const char *phase;
        long step;
    } kills[] = {{"wait_healthy", 1}, {"bake", 2}, {"interval", 3}};
    pid_t late_pid = -1;
    for (size_t i = 0; i < 3; i++) {
        char *at =
            wait_rollout(w, id, "running", kills[i].phase, kills[i].step, e2e_scaled_ms(15000));
        ck_assert_msg(at != NULL, "never in %s of step %ld", kills[i].phase, kills[i].step);
        free(at);
        int st = e2e_cp_controlplane_kill(w, SIGKILL);
        ck_assert(WIFSIGNALED(st));
        e2e_cp_controlplane_start(w);
        if (i == 0) {
            unsigned bound = 0;
            late_pid = e2e_cp_backend_spawn(w, "b4", late, "b4late.log", &bound);
            ck_assert_uint_eq(bound, late);
        }
    }
    char *done = wait_rollout(w, id, "succeeded", NULL, 0, e2e_scaled_ms(15000));
    ck_assert_msg(done != NULL, "the rollout did not succeed after the restarts");
    long last = 0;
    ck_assert(e2e_json_long(done, "lastVersion", &last));
    free(done);
    /* no version lost: one of each transition, numbered without a gap */
    char *h = history(w);
    for (unsigned k = 1; k <= 4; k++) {
        char want[96];
        snprintf(want, sizeof(want), "rollout %s step %u/4: add b%u (standby", id, k, 3 + k);
        ck_assert_msg(count(h, want) == 1, "%u of \"%s\"", count(h, want), want);
        snprintf(want, sizeof(want), "rollout %s step %u/4: activate b%u\"", id, k, 3 + k);
        ck_assert_msg(count(h, want) == 1, "%u of \"%s\"", count(h, want), want);
        snprintf(want, sizeof(want), "rollout %s step %u/4: remove b%u\"", id, k, k - 1);
        ck_assert_msg(count(h, want) == 1, "%u of \"%s\"", count(h, want), want);
    }
    ck_assert_uint_eq(count(h, "\"version\""), (unsigned)last);
    free(h);
    long version = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 1, &version), 0);
    ck_assert_int_eq(version, last);
    long ka_total, ka_failed, pr_ok, pr_failed;
    load_end(w, &l, &ka_total, &ka_failed, &pr_ok, &pr_failed);
    fprintf(stderr,
            "rollout: 3 SIGKILLs: keep-alive %ld requests, %ld failed; per-request %ld ok, %ld "
            "failed\n",
            ka_total, ka_failed, pr_ok, pr_failed);
    ck_assert_int_eq(ka_failed, 0);
    ck_assert_int_eq(pr_failed, 0);
    e2e_kill(late_pid);
    e2e_cp_stop(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rollout");
    TCase *tc = e2e_tcase("rolling");
    tcase_add_test(tc, four_old_for_four_new);
    tcase_add_test(tc, failing_backend_rolls_back);
    tcase_add_test(tc, never_healthy_backend_times_out);
    tcase_add_test(tc, control_plane_killed_in_each_phase);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
