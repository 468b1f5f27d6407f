/* tests/e2e/test_controlplane.c: the whole system: lb-controlplane with a
 * temp SQLite db, lb-dataplane processes following it, lb-backend origins,
 * changes made with the real lbctl and traffic sent as raw HTTP. */
#include "e2e.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LBCTL(w, r, ...) e2e_cp_lbctl((w), (r), __VA_ARGS__, NULL)
#define CP_BIN_PATH      LB_BUILD_DIR "/lb-controlplane"
#define DP_BIN_PATH      LB_BUILD_DIR "/lb-dataplane"
#define MAX_COUNTED      16

/* Runs lbctl and fails the test unless it exits 0; returns its stdout in <r>. */
static void lbctl_ok(struct e2e_cp *w, struct e2e_cmd *r, const char *what, int status)
{
    ck_assert_msg(status == 0, "lbctl %s: exit %d, stderr: %s", what, status, r->err);
}

/* One GET of <path> on <*c> (a keep-alive connection to <port>, reopened when
 * the server closed it). Returns the status (0 on failure) and the body in
 * <body> (may be NULL). */
static int get_on(struct e2e_conn **c, unsigned port, const char *path, char *body, size_t bodysz)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", path, port);
    if (!*c)
        *c = e2e_connect(port);
    if (!*c)
        return 0;
    struct e2e_resp r;
    if (e2e_conn_send(*c, req, (size_t)n) != 0 || e2e_conn_read(*c, &r, false) != 0) {
        e2e_conn_close(*c);
        *c = NULL;
        return 0;
    }
    int status = r.status;
    if (body)
        snprintf(body, bodysz, "%s", r.body);
    if (r.closed) {
        e2e_conn_close(*c);
        *c = NULL;
    }
    e2e_resp_free(&r);
    return status;
}

/* Sends <n> GET / on one new keep-alive connection and counts the answers per
 * backend name "b<i>" into counts[0..MAX_COUNTED). Fails the test on any
 * error or unknown answer. */
static void count_shares(struct e2e_cp *w, unsigned n, unsigned counts[MAX_COUNTED])
{
    struct e2e_conn *c = NULL;
    memset(counts, 0, sizeof(unsigned) * MAX_COUNTED);
    for (unsigned k = 0; k < n; k++) {
        char body[64];
        int status = get_on(&c, e2e_cp_frontend_port(w), "/", body, sizeof body);
        ck_assert_msg(status == 200, "request %u: status %d", k, status);
        ck_assert_msg(body[0] == 'b', "unexpected answer '%s'", body);
        unsigned i = (unsigned)strtoul(body + 1, NULL, 10);
        ck_assert_uint_lt(i, MAX_COUNTED);
        counts[i]++;
    }
    e2e_conn_close(c);
}

/* Reads the generation the data plane serves from its /metrics. */
static long dp_generation(struct e2e_cp *w)
{
    char *m = e2e_cp_scrape(w);
    ck_assert_ptr_nonnull(m);
    double g = e2e_metric(m, "lb_snapshot_generation", NULL);
    free(m);
    return g == g ? (long)g : -1;
}

/* ---- 1. add ---------------------------------------------------------------- */

START_TEST(added_backend_gets_traffic)
{
    struct e2e_cp_opts o = {.backends = 3, .configured = 2, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long gen0 = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen0, 0);
    ck_assert_int_eq(e2e_cp_backend_stat(w, 2, "requests"), 1);

    struct e2e_cmd r;
    int st = LBCTL(w, &r, "backends", "add", e2e_cp_backend_url(w, 2), "--weight", "2", "--id",
                   "b2", "--comment", "e2e add");
    lbctl_ok(w, &r, "backends add", st);
    ck_assert_msg(strstr(r.out, "b2") != NULL, "lbctl output: %s", r.out);
    e2e_cmd_free(&r);

    /* In the audit, by this uid, saying what changed. */
    char who[32];
    snprintf(who, sizeof who, "uid:%ld", (long)getuid());
    st = LBCTL(w, &r, "audit", "--who", who, "--action", "backend.add", "--since", "1h");
    lbctl_ok(w, &r, "audit", st);
    ck_assert_msg(strstr(r.out, "backend b2 added") != NULL && strstr(r.out, "(e2e add)") != NULL,
                  "lbctl audit: %s", r.out);
    unsigned lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    ck_assert_msg(lines == 2, "one entry under the header: %s", r.out);
    e2e_cmd_free(&r);

    long gen1 = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen1, gen0);
    ck_assert_int_eq(dp_generation(w), gen1);
    /* Weights 1/1/2: b2 answers half of every cycle of 4, as the backend
     * itself counts too: apart from the health checks, which may come at
     * any moment, and the /stats requests (each counts itself) */
    long others = e2e_cp_backend_stat(w, 2, "others");
    unsigned counts[MAX_COUNTED];
    count_shares(w, 40, counts);
    ck_assert_uint_eq(counts[2], 20);
    ck_assert_uint_eq(counts[0] + counts[1], 20);
    ck_assert_int_eq(e2e_cp_backend_stat(w, 2, "others"), others + 20 + 1);

    st = LBCTL(w, &r, "backends", "list");
    lbctl_ok(w, &r, "backends list", st);
    const char *line = strstr(r.out, "\nb2 ");
    ck_assert_msg(line != NULL, "b2 missing from: %s", r.out);
    ck_assert_msg(strstr(line, e2e_cp_backend_url(w, 2)) != NULL, "url missing: %s", r.out);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 2. drain and remove ---------------------------------------------------- */

START_TEST(drain_and_remove_spare_requests_in_flight)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    /* requests other than the control plane's health checks, which may
     * come at any moment */
    long before[2];
    for (unsigned i = 0; i < 2; i++)
        before[i] = e2e_cp_backend_stat(w, i, "others");

    /* A slow request in flight; find out which backend holds it. */
    uint64_t started = e2e_now_ms();
    struct e2e_conn *slow = e2e_connect(e2e_cp_frontend_port(w));
    ck_assert_ptr_nonnull(slow);
    static const char slow_req[] = "GET /slow/5000 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(slow, slow_req, sizeof slow_req - 1), 0);
    int victim = -1;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (victim < 0 && e2e_now_ms() < deadline) {
        for (unsigned i = 0; i < 2 && victim < 0; i++) {
            long now = e2e_cp_backend_stat(w, i, "others");
            before[i]++; /* this /stats request */
            if (now > before[i])
                victim = (int)i;
        }
        if (victim < 0)
            e2e_poll_pause(20);
    }
    ck_assert_msg(victim >= 0, "the slow request reached no backend");
    char id[8];
    snprintf(id, sizeof id, "b%d", victim);

    struct e2e_cmd r;
    int st = LBCTL(w, &r, "backends", "drain", id);
    lbctl_ok(w, &r, "backends drain", st);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    long held = e2e_cp_backend_stat(w, (unsigned)victim, "others");
    unsigned counts[MAX_COUNTED];
    count_shares(w, 20, counts);
    ck_assert_uint_eq(counts[victim], 0);
    ck_assert_uint_eq(counts[1 - victim], 20);
    /* Only our own /stats request added to it. */
    ck_assert_int_eq(e2e_cp_backend_stat(w, (unsigned)victim, "others"), held + 1);

    st = LBCTL(w, &r, "backends", "remove", id);
    lbctl_ok(w, &r, "backends remove", st);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    count_shares(w, 20, counts);
    ck_assert_uint_eq(counts[victim], 0);
    ck_assert_int_eq(e2e_cp_backend_stat(w, (unsigned)victim, "others"), held + 2);
    /* Drain and removal were both applied while the request was in flight. */
    ck_assert_msg(e2e_now_ms() - started < 5000, "too slow to prove anything: %llu ms",
                  (unsigned long long)(e2e_now_ms() - started));

    struct e2e_resp resp;
    ck_assert_int_eq(e2e_conn_read(slow, &resp, false), 0);
    ck_assert_int_eq(resp.status, 200);
    ck_assert_str_eq(resp.body, id);
    e2e_resp_free(&resp);
    e2e_conn_close(slow);

    st = LBCTL(w, &r, "backends", "list");
    lbctl_ok(w, &r, "backends list", st);
    char line[16];
    snprintf(line, sizeof line, "\n%s ", id);
    ck_assert_msg(strstr(r.out, line) == NULL, "removed backend still listed: %s", r.out);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 3. invalid config -------------------------------------------------------- */

START_TEST(invalid_config_changes_nothing)
{
    uint32_t weights[] = {2, 1};
    struct e2e_cp_opts o = {.backends = 2, .weights = weights, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long ver0 = 0;
    long gen0 = e2e_cp_wait_in_sync(w, 1, &ver0);
    ck_assert_int_gt(gen0, 0);

    /* The active config with b1's weight made 5000, on a line we know. */
    struct e2e_cmd r;
    int st = LBCTL(w, &r, "config", "get");
    lbctl_ok(w, &r, "config get", st);
    char *yaml = r.out;
    char *b1 = strstr(yaml, "\"b1\"");
    ck_assert_ptr_nonnull(b1);
    char *wl = strstr(b1, "weight: 1\n");
    ck_assert_ptr_nonnull(wl);
    unsigned line = 1;
    for (const char *p = yaml; p < wl; p++)
        line += *p == '\n';
    char path[256];
    e2e_cp_path(w, "bad.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*sweight: 5000\n%s", (int)(wl - yaml), yaml, wl + strlen("weight: 1\n"));
    ck_assert_int_eq(fclose(f), 0);
    e2e_cmd_free(&r);

    st = LBCTL(w, &r, "config", "apply", path);
    ck_assert_msg(st == 1, "exit %d, stderr %s", st, r.err);
    char where[32];
    snprintf(where, sizeof where, "config.yaml:%u:", line);
    ck_assert_msg(strstr(r.err, where) != NULL, "no %s in: %s", where, r.err);
    ck_assert_msg(strstr(r.err, "5000") != NULL, "stderr: %s", r.err);
    ck_assert_msg(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    e2e_cmd_free(&r);

    st = LBCTL(w, &r, "--json", "config", "history");
    lbctl_ok(w, &r, "config history", st);
    long active = 0;
    ck_assert(e2e_json_long(r.out, "active", &active));
    ck_assert_int_eq(active, ver0);
    e2e_cmd_free(&r);
    long ver1 = 0;
    ck_assert_int_eq(e2e_cp_wait_in_sync(w, 1, &ver1), gen0);
    ck_assert_int_eq(ver1, ver0);
    unsigned counts[MAX_COUNTED];
    count_shares(w, 30, counts);
    ck_assert_uint_eq(counts[0], 20);
    ck_assert_uint_eq(counts[1], 10);
    e2e_cp_stop(w);
}
END_TEST

/* ---- backend connection limits through lbctl -------------------------------- */

/* The value of "<key>": in <json> after the first occurrence of <after>. */
static long json_long_after(const char *json, const char *after, const char *key)
{
    const char *at = strstr(json, after);
    ck_assert_msg(at != NULL, "no %s in %s", after, json);
    long v = -1;
    ck_assert_msg(e2e_json_long(at, key, &v), "no %s after %s in %s", key, after, json);
    return v;
}

START_TEST(backend_limits_through_lbctl)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long ver0 = 0;
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, &ver0), 0);

    /* The active config with maxConnections set on b1, applied as a file. */
    struct e2e_cmd r;
    int st = LBCTL(w, &r, "config", "get");
    lbctl_ok(w, &r, "config get", st);
    char *yaml = r.out;
    char *b1 = strstr(yaml, "\"b1\"");
    ck_assert_ptr_nonnull(b1);
    char *wl = strstr(b1, "weight: 1\n");
    ck_assert_ptr_nonnull(wl);
    const char *bol = wl;
    while (bol > yaml && bol[-1] != '\n')
        bol--;
    char path[256];
    e2e_cp_path(w, "limits.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*sweight: 1\n%.*smaxConnections: 7\n%s", (int)(wl - yaml), yaml, (int)(wl - bol),
            bol, wl + strlen("weight: 1\n"));
    ck_assert_int_eq(fclose(f), 0);
    e2e_cmd_free(&r);
    st = LBCTL(w, &r, "config", "apply", path);
    lbctl_ok(w, &r, "config apply", st);
    e2e_cmd_free(&r);

    st = LBCTL(w, &r, "--json", "backends", "list");
    lbctl_ok(w, &r, "backends list", st);
    ck_assert_int_eq(json_long_after(r.out, "\"b1\"", "maxConnections"), 7);
    ck_assert_int_eq(json_long_after(r.out, "\"b1\"", "maxQueue"), 1024);
    ck_assert_int_eq(json_long_after(r.out, "\"b0\"", "maxConnections"), 0);
    ck_assert_msg(strstr(r.out, "\"ejected\": false") != NULL, "%s", r.out);
    e2e_cmd_free(&r);

    st = LBCTL(w, &r, "backends", "update", "b0", "--max-connections", "3", "--max-queue", "9");
    lbctl_ok(w, &r, "backends update", st);
    e2e_cmd_free(&r);
    st = LBCTL(w, &r, "--json", "backends", "list");
    lbctl_ok(w, &r, "backends list", st);
    ck_assert_int_eq(json_long_after(r.out, "\"b0\"", "maxConnections"), 3);
    ck_assert_int_eq(json_long_after(r.out, "\"b0\"", "maxQueue"), 9);
    e2e_cmd_free(&r);
    /* The table shows connections against the limit. */
    st = LBCTL(w, &r, "backends", "list");
    lbctl_ok(w, &r, "backends list", st);
    ck_assert_msg(strstr(r.out, "CONNS") != NULL && strstr(r.out, "/3") != NULL, "%s", r.out);
    e2e_cmd_free(&r);
    /* Out of range: the server's message, exit 1, nothing changed. */
    st = LBCTL(w, &r, "backends", "update", "b0", "--max-queue", "0");
    ck_assert_msg(st == 1, "exit %d, stderr %s", st, r.err);
    ck_assert_msg(strstr(r.err, "maxQueue") != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);
    char from[32], to[32];
    snprintf(from, sizeof from, "%ld", ver0);
    snprintf(to, sizeof to, "%ld", ver0 + 2);
    st = LBCTL(w, &r, "config", "diff", from, to);
    lbctl_ok(w, &r, "config diff", st);
    ck_assert_msg(strstr(r.out, "backend b1: maxConnections 0 -> 7") != NULL, "%s", r.out);
    ck_assert_msg(strstr(r.out, "backend b0: maxQueue 1024 -> 9") != NULL, "%s", r.out);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 4. rollback ----------------------------------------------------------------- */

START_TEST(rollback_restores_weights)
{
    uint32_t weights[] = {5, 3, 1};
    struct e2e_cp_opts o = {.backends = 3, .weights = weights, .dataplanes = 1, .workers = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long v1 = 0;
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, &v1), 0);
    unsigned counts[MAX_COUNTED];
    count_shares(w, 90, counts);
    ck_assert_uint_eq(counts[0], 50);
    ck_assert_uint_eq(counts[1], 30);
    ck_assert_uint_eq(counts[2], 10);

    struct e2e_cmd r;
    int st = LBCTL(w, &r, "backends", "update", "b2", "--weight", "5");
    lbctl_ok(w, &r, "backends update", st);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    count_shares(w, 130, counts); /* weights 5/3/5: 10 cycles of 13 */
    ck_assert_uint_eq(counts[0], 50);
    ck_assert_uint_eq(counts[1], 30);
    ck_assert_uint_eq(counts[2], 50);

    char v1s[16];
    snprintf(v1s, sizeof v1s, "%ld", v1);
    st = LBCTL(w, &r, "rollback", v1s);
    lbctl_ok(w, &r, "rollback", st);
    e2e_cmd_free(&r);
    long v3 = 0;
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, &v3), 0);
    ck_assert_int_gt(v3, v1);
    count_shares(w, 90, counts);
    ck_assert_uint_eq(counts[0], 50);
    ck_assert_uint_eq(counts[1], 30);
    ck_assert_uint_eq(counts[2], 10);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 5. control plane killed under traffic --------------------------------------- */

START_TEST(controlplane_kill_drops_nothing)
{
    struct e2e_cp_opts o = {.backends = 3, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    unsigned port = e2e_cp_frontend_port(w);

    struct e2e_conn *ka = NULL;
    unsigned sent = 0, failed = 0;
    bool killed = false;
    uint64_t start = e2e_now_ms();
    while (e2e_now_ms() - start < 2000 && sent < 100000) {
        if (!killed && e2e_now_ms() - start >= 500) {
            ck_assert_int_ne(e2e_cp_controlplane_kill(w, SIGKILL), -1);
            killed = true;
        }
        /* Alternate: the keep-alive connection, then a new connection. */
        struct e2e_conn *fresh = NULL;
        int st = get_on(sent % 2 ? &fresh : &ka, port, "/", NULL, 0);
        e2e_conn_close(fresh);
        sent++;
        failed += st != 200;
    }
    e2e_conn_close(ka);
    ck_assert(killed);
    ck_assert_uint_gt(sent, 20);
    ck_assert_msg(failed == 0, "%u of %u requests failed", failed, sent);

    e2e_cp_controlplane_start(w);
    struct e2e_cmd r;
    int st = LBCTL(w, &r, "backends", "update", "b0", "--weight", "3");
    lbctl_ok(w, &r, "backends update", st);
    e2e_cmd_free(&r);
    long ver = 0;
    long gen = e2e_cp_wait_in_sync(w, 1, &ver);
    ck_assert_int_gt(gen, 0);
    ck_assert_int_eq(dp_generation(w), gen);
    unsigned counts[MAX_COUNTED];
    count_shares(w, 50, counts); /* weights 3/1/1 */
    ck_assert_uint_eq(counts[0], 30);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 6. cached snapshot ----------------------------------------------------------- */

START_TEST(cached_snapshot_serves_without_controlplane)
{
    struct e2e_cp_opts o = {.backends = 3, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long gen = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen, 0);
    int st = e2e_cp_dataplane_stop(w, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    st = e2e_cp_controlplane_kill(w, SIGTERM);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char path[256];
    e2e_cp_path(w, "dp0/snapshot.bin", path, sizeof path);
    ck_assert_msg(access(path, R_OK) == 0, "no cached snapshot at %s", path);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_msg((sb.st_mode & 0777) == 0600, "%s has mode %o: it holds private keys", path,
                  (unsigned)(sb.st_mode & 0777));

    e2e_cp_dataplane_start(w, 0);
    ck_assert(e2e_cp_dataplane_log_has(w, 0, "\"snapshot_cached\"", e2e_timeout_ms()));
    unsigned counts[MAX_COUNTED];
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    struct e2e_conn *c = NULL;
    while ((c = e2e_connect(e2e_cp_frontend_port(w))) == NULL && e2e_now_ms() < deadline)
        e2e_poll_pause(10);
    ck_assert_ptr_nonnull(c);
    e2e_conn_close(c);
    count_shares(w, 30, counts);
    ck_assert_uint_eq(counts[0] + counts[1] + counts[2], 30);
    ck_assert_uint_eq(counts[0], 10);
    ck_assert_int_eq(dp_generation(w), gen);

    e2e_cp_controlplane_start(w);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    e2e_cp_stop(w);
}
END_TEST

/* Signals ignored when lb-controlplane starts (nohup ignores SIGHUP, a
 * shell's background job SIGINT) still reach its loop, which reads them from
 * a signalfd (blocked signals are queued, not dropped; no handler runs
 * asynchronously, and TSan's deferred delivery of handled signals cannot
 * lose one): SIGHUP re-reads the admin tokens, SIGTERM stops it with 0. */
START_TEST(signals_ignored_at_start_still_arrive)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    enum {
        NSIGS = sizeof(sigs) / sizeof(sigs[0])
    };
    for (size_t i = 0; i < NSIGS; i++)
        signal(sigs[i], SIG_IGN);
    struct e2e_cp_opts o = {.backends = 1, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    for (size_t i = 0; i < NSIGS; i++)
        signal(sigs[i], SIG_DFL);
    pid_t pid = e2e_cp_controlplane_pid(w);
    e2e_assert_signals_by_fd(pid, sigs, NSIGS);
    ck_assert_int_eq(kill(pid, SIGHUP), 0);
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    bool reloaded = false;
    while (!reloaded && e2e_now_ms() < end) {
        char *log = e2e_cp_read(w, "cp.log");
        reloaded = strstr(log, "\"admin_tokens_reloaded\"") != NULL;
        free(log);
        if (!reloaded)
            e2e_poll_pause(20);
    }
    ck_assert_msg(reloaded, "no admin_tokens_reloaded in cp.log after SIGHUP");
    uint64_t start = e2e_now_ms();
    int st = e2e_cp_controlplane_kill(w, SIGTERM);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    ck_assert_msg(e2e_now_ms() - start < 3000, "the stop took %llu ms",
                  (unsigned long long)(e2e_now_ms() - start));
    e2e_cp_stop(w);
}
END_TEST

/* ---- 7. two data planes ----------------------------------------------------------- */

START_TEST(two_dataplanes_converge)
{
    /* One host: the frontend port is shared (SO_REUSEPORT), the metrics port
     * cannot be, so the config has no metrics. */
    struct e2e_cp_opts o = {.backends = 3, .dataplanes = 2, .no_metrics = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    long gen0 = e2e_cp_wait_in_sync(w, 2, NULL);
    ck_assert_int_gt(gen0, 0);

    struct e2e_cmd r;
    int st = LBCTL(w, &r, "backends", "update", "b1", "--weight", "4");
    lbctl_ok(w, &r, "backends update", st);
    e2e_cmd_free(&r);
    long ver = 0;
    long gen = e2e_cp_wait_in_sync(w, 2, &ver);
    ck_assert_int_gt(gen, gen0);
    struct e2e_dp_status dp[E2E_MAX_DATAPLANES];
    ck_assert_int_eq(e2e_cp_dataplanes(w, dp, E2E_MAX_DATAPLANES, NULL, NULL), 2);
    bool seen[2] = {false, false};
    for (unsigned i = 0; i < 2; i++) {
        ck_assert(dp[i].in_sync);
        ck_assert_int_eq(dp[i].applied_version, ver);
        ck_assert_int_eq(dp[i].applied_generation, gen);
        ck_assert_int_eq(dp[i].rejected_generation, 0);
        if (strcmp(dp[i].node_id, "dp0") == 0)
            seen[0] = true;
        if (strcmp(dp[i].node_id, "dp1") == 0)
            seen[1] = true;
    }
    ck_assert(seen[0] && seen[1]);
    unsigned counts[MAX_COUNTED];
    count_shares(w, 30, counts);
    ck_assert_uint_eq(counts[0] + counts[1] + counts[2], 30);

    st = LBCTL(w, &r, "status");
    lbctl_ok(w, &r, "status", st);
    ck_assert_msg(strstr(r.out, "2 of 2 in sync") != NULL, "status: %s", r.out);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 8. rejected snapshot ------------------------------------------------------------ */

START_TEST(rejected_snapshot_is_reported)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    long ver0 = 0;
    long gen0 = e2e_cp_wait_in_sync(w, 1, &ver0);
    ck_assert_int_gt(gen0, 0);

    /* Hold a port without SO_REUSEPORT. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ne(fd, -1);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    unsigned held = ntohs(sa.sin_port);

    struct e2e_cmd r;
    int st = LBCTL(w, &r, "config", "get");
    lbctl_ok(w, &r, "config get", st);
    char *be = strstr(r.out, "\nbackends:");
    ck_assert_ptr_nonnull(be);
    char path[256];
    e2e_cp_path(w, "extra.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s\n- name: \"extra\"\n  address: \"127.0.0.1\"\n  port: %u%s", (int)(be - r.out),
            r.out, held, be);
    ck_assert_int_eq(fclose(f), 0);
    e2e_cmd_free(&r);
    st = LBCTL(w, &r, "config", "apply", path);
    lbctl_ok(w, &r, "config apply", st);
    e2e_cmd_free(&r);

    struct e2e_dp_status dp[1];
    long gen = -1;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    int n;
    while ((n = e2e_cp_dataplanes(w, dp, 1, NULL, &gen)) == 1 && dp[0].rejected_generation != gen &&
           e2e_now_ms() < deadline)
        e2e_poll_pause(50);
    ck_assert_int_eq(n, 1);
    ck_assert_int_gt(gen, gen0);
    ck_assert_int_eq(dp[0].rejected_generation, gen);
    ck_assert(!dp[0].in_sync);
    ck_assert_int_eq(dp[0].applied_generation, gen0);
    ck_assert_int_eq(dp[0].applied_version, ver0);
    ck_assert_msg(strstr(dp[0].rejection_reason, "cannot bind") != NULL, "reason: %s",
                  dp[0].rejection_reason);

    st = LBCTL(w, &r, "dataplanes");
    lbctl_ok(w, &r, "dataplanes", st);
    ck_assert_msg(strstr(r.out, "cannot bind") != NULL, "table: %s", r.out);
    e2e_cmd_free(&r);
    ck_assert_int_eq(dp_generation(w), gen0);
    unsigned counts[MAX_COUNTED];
    count_shares(w, 20, counts);
    ck_assert_uint_eq(counts[0], 10);
    ck_assert_uint_eq(counts[1], 10);
    close(fd);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 9. admin API over TCP --------------------------------------------------------------- */

static int lbctl_url(struct e2e_cp *w, struct e2e_cmd *r, const char *token, const char *a1,
                     const char *a2, const char *a3, const char *a4, const char *a5)
{
    char url[64], tok[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", e2e_cp_admin_port(w));
    char *argv[16];
    size_t n = 0;
    argv[n++] = LB_BUILD_DIR "/lbctl";
    argv[n++] = "--url";
    argv[n++] = url;
    if (token) {
        e2e_cp_path(w, token, tok, sizeof tok);
        argv[n++] = "--token-file";
        argv[n++] = tok;
    }
    const char *rest[] = {a1, a2, a3, a4, a5};
    for (size_t i = 0; i < 5 && rest[i]; i++)
        argv[n++] = (char *)rest[i];
    argv[n] = NULL;
    return e2e_cmd_run(argv, NULL, r);
}

START_TEST(admin_tcp_refusals)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 0, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    struct e2e_cmd r;

    int st = lbctl_url(w, &r, NULL, "backends", "list", NULL, NULL, NULL);
    ck_assert_msg(st == 1, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.err, "unauthorized") != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);

    st = lbctl_url(w, &r, "ro.token", "backends", "list", NULL, NULL, NULL);
    ck_assert_msg(st == 0, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.out, "b1") != NULL, "stdout: %s", r.out);
    e2e_cmd_free(&r);

    st = lbctl_url(w, &r, "ro.token", "backends", "update", "b0", "--weight", "2");
    ck_assert_msg(st == 1, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.err, "forbidden") != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);

    st = lbctl_url(w, &r, "rw.token", "backends", "remove", "nope", NULL, NULL);
    ck_assert_msg(st == 1, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.err, "not_found") != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);

    st = lbctl_url(w, &r, "rw.token", "backends", "update", "b0", "--weight", "2");
    ck_assert_msg(st == 0, "exit %d %s", st, r.err);
    e2e_cmd_free(&r);
    /* Version 2 is active now: 1 is stale. */
    char *argv[] = {LB_BUILD_DIR "/lbctl",
                    "--url",
                    NULL,
                    "--token-file",
                    NULL,
                    "backends",
                    "update",
                    "b0",
                    "--weight",
                    "3",
                    "--if-match",
                    "1",
                    NULL};
    char url[64], tok[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", e2e_cp_admin_port(w));
    e2e_cp_path(w, "rw.token", tok, sizeof tok);
    argv[2] = url;
    argv[4] = tok;
    st = e2e_cmd_run(argv, NULL, &r);
    ck_assert_msg(st == 1, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.err, "conflict") != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);

    /* Raw HTTP: statuses and error bodies. */
    unsigned port = e2e_cp_admin_port(w);
    struct e2e_resp resp;
    ck_assert_int_eq(e2e_request(port, "GET", "/api/v1/backends", NULL, NULL, 0, &resp), 0);
    ck_assert_int_eq(resp.status, 401);
    e2e_resp_free(&resp);
    const char *rw = "Authorization: Bearer rw-7f3a9c1e5b\r\nContent-Type: application/json\r\n";
    const char *ro = "Authorization: Bearer ro-2d8e4b6a0c\r\nContent-Type: application/json\r\n";
    static const char bad[] = "{\"url\": \"http://127.0.0.1:1\",";
    ck_assert_int_eq(e2e_request(port, "POST", "/api/v1/backends", rw, bad, sizeof bad - 1, &resp),
                     0);
    ck_assert_int_eq(resp.status, 400);
    ck_assert_msg(strstr(resp.body, "\"invalid_json\"") != NULL, "body: %s", resp.body);
    e2e_resp_free(&resp);
    static const char good[] = "{\"weight\": 4}";
    ck_assert_int_eq(
        e2e_request(port, "PUT", "/api/v1/backends/b0", ro, good, sizeof good - 1, &resp), 0);
    ck_assert_int_eq(resp.status, 403);
    e2e_resp_free(&resp);
    ck_assert_int_eq(e2e_request(port, "GET", "/api/v1/backends/nope", rw, NULL, 0, &resp), 0);
    ck_assert_int_eq(resp.status, 404);
    ck_assert_msg(strstr(resp.body, "\"not_found\"") != NULL, "body: %s", resp.body);
    e2e_resp_free(&resp);
    char stale[512];
    snprintf(stale, sizeof stale, "%sIf-Match: 1\r\n", rw);
    ck_assert_int_eq(
        e2e_request(port, "PUT", "/api/v1/backends/b0", stale, good, sizeof good - 1, &resp), 0);
    ck_assert_int_eq(resp.status, 409);
    ck_assert_msg(strstr(resp.body, "active version is 2, not 1") != NULL, "body: %s", resp.body);
    e2e_resp_free(&resp);

    /* None of the refused writes changed anything. */
    ck_assert_int_eq(e2e_request(port, "GET", "/health", rw, NULL, 0, &resp), 0);
    long active = 0;
    ck_assert(e2e_json_long(resp.body, "active_version", &active));
    ck_assert_int_eq(active, 2);
    e2e_resp_free(&resp);
    e2e_cp_stop(w);
}
END_TEST

/* ---- 10. start-up refusals ------------------------------------------------------------------- */

static void assert_one_line(const char *s)
{
    size_t n = strlen(s);
    ck_assert_msg(n > 0 && s[n - 1] == '\n' && strchr(s, '\n') == s + n - 1, "not one line: '%s'",
                  s);
}

START_TEST(daemons_refuse_bad_start)
{
    static const char *const bad[][6] = {
        {"--control", "ipc:///tmp/lb-e2e-none", "--workers", "zero", NULL},
        {"--control", "ipc:///tmp/lb-e2e-none", "--log-level", "loud", NULL},
        {"--control", "ipc:///tmp/lb-e2e-none", "stray", NULL},
    };
    struct e2e_cmd r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[8] = {DP_BIN_PATH};
        for (size_t k = 0; bad[i][k]; k++)
            argv[k + 1] = (char *)bad[i][k];
        ck_assert_int_eq(e2e_cmd_run(argv, NULL, &r), 2);
        assert_one_line(r.err);
        ck_assert_msg(strncmp(r.err, "lb-dataplane: ", 14) == 0, "stderr: %s", r.err);
        ck_assert_str_eq(r.out, "");
        e2e_cmd_free(&r);
    }

    /* A --db under a regular file cannot be created. */
    char dir[] = "/tmp/lb-e2e-db-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char file[64], db[96], run[96];
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(db, sizeof db, "%s/lb.db", file);
    snprintf(run, sizeof run, "%s/run", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    char *argv[] = {CP_BIN_PATH, "--db", db, "--runtime-dir", run, NULL};
    int st = e2e_cmd_run(argv, NULL, &r);
    unlink(file);
    rmdir(run);
    rmdir(dir);
    ck_assert_int_eq(st, 1);
    assert_one_line(r.err);
    ck_assert_msg(strstr(r.err, db) != NULL, "stderr: %s", r.err);
    e2e_cmd_free(&r);

    /* A runtime directory or database others may access is refused, by
     * name; nothing is created or changed. */
    char dir2[] = "/tmp/lb-e2e-perm-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir2));
    snprintf(run, sizeof run, "%s/run", dir2);
    snprintf(db, sizeof db, "%s/lb.db", dir2);
    ck_assert_int_eq(mkdir(run, 0700), 0);
    ck_assert_int_eq(chmod(run, 0755), 0);
    char *argv2[] = {CP_BIN_PATH, "--db", db, "--runtime-dir", run, NULL};
    st = e2e_cmd_run(argv2, NULL, &r);
    ck_assert_int_eq(st, 1);
    assert_one_line(r.err);
    ck_assert_msg(strstr(r.err, "--runtime-dir") && strstr(r.err, "has mode 0755"), "stderr: %s",
                  r.err);
    ck_assert_int_eq(access(db, F_OK), -1);
    e2e_cmd_free(&r);
    ck_assert_int_eq(chmod(run, 0750), 0);
    f = fopen(db, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(chmod(db, 0644), 0);
    st = e2e_cmd_run(argv2, NULL, &r);
    ck_assert_int_eq(st, 1);
    ck_assert_msg(strstr(r.err, "--db") && strstr(r.err, "has mode 0644"), "stderr: %s", r.err);
    e2e_cmd_free(&r);
    unlink(db);
    rmdir(run);
    rmdir(dir2);
}
END_TEST

int main(void)
{
    /* lbctl must see only the options the tests give it. */
    unsetenv("LB_ADMIN_SOCKET");
    unsetenv("LB_ADMIN_URL");
    unsetenv("LB_TOKEN_FILE");
    Suite *s = suite_create("e2e_controlplane");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"add", added_backend_gets_traffic},
        {"drain_remove", drain_and_remove_spare_requests_in_flight},
        {"invalid_config", invalid_config_changes_nothing},
        {"backend_limits", backend_limits_through_lbctl},
        {"rollback", rollback_restores_weights},
        {"controlplane_kill", controlplane_kill_drops_nothing},
        {"cached_snapshot", cached_snapshot_serves_without_controlplane},
        {"two_dataplanes", two_dataplanes_converge},
        {"rejected_snapshot", rejected_snapshot_is_reported},
        {"admin_tcp", admin_tcp_refusals},
        {"bad_start", daemons_refuse_bad_start},
        {"signals", signals_ignored_at_start_still_arrive},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
