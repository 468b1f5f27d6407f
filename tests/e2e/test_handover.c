/* tests/e2e/test_handover.c: the hand-over from a data plane's passive
 * ejection to the control plane's health checks (issue 18), with real
 * processes: lb-controlplane checking every INTERVAL_MS with rise RISE and
 * fall FALL, lb-dataplane(s) following it, lb-faultload's keep-alive GETs
 * through the frontend, and a backend "victim" of this test killed
 * (SIGKILL) mid-load, then started again on the same port.
 *
 * The checks alone would need FALL failures, at least (FALL - 1) *
 * INTERVAL_MS after the kill; the hand-over must mark the victim down well
 * before that (DOWN_BOUND_MS), and the control plane's backend_health line
 * must give the data plane's ejection as the reason. Every test prints its
 * figures on stderr ("handover: ..."), measured from the log lines' own
 * timestamps against the wall-clock time of the kill. */
#include "e2e.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LBCTL(w, r, ...) e2e_cp_lbctl((w), (r), __VA_ARGS__, NULL)
#define FAULTLOAD_PATH   LB_BUILD_DIR "/lb-faultload"

#define INTERVAL_MS   1000 /* health checks; scaled */
#define RISE          2
#define FALL          3
#define DOWN_BOUND_MS 1500 /* kill -> down in the control plane; scaled */
#define LOAD_MS       5000 /* load around the kill; scaled */
#define BACK_LOAD_MS  1500 /* load once the victim is up again; scaled */
#define CLIENTS       "8"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- processes ---------------------------------------------------------------- */

/* lb-faultload running in the background, its output in the world's file
 * <log>. */
struct load {
    pid_t pid;
    char log[256];
    long total, ok, failed;
    char *json; /* its result line; freed by load_wait() */
};

static void load_start(struct load *l, struct e2e_cp *w, const char *log, uint64_t ms)
{
    char port[16], seconds[24], timeout[24];
    memset(l, 0, sizeof *l);
    e2e_cp_path(w, log, l->log, sizeof l->log);
    snprintf(port, sizeof port, "%u", e2e_cp_frontend_port(w));
    snprintf(seconds, sizeof seconds, "%llu", (unsigned long long)((ms + 999) / 1000));
    snprintf(timeout, sizeof timeout, "%llu", (unsigned long long)e2e_scaled_ms(3000));
    char *argv[] = {FAULTLOAD_PATH, "--port", port, "--clients",    CLIENTS, "--seconds",
                    seconds,        "--path", "/",  "--timeout-ms", timeout, NULL};
    l->pid = e2e_spawn(argv, l->log);
    ck_assert_int_gt(l->pid, 0);
}

/* Waits for lb-faultload to end and reads its JSON line; fails the test
 * when it does not end 0 with one. */
static void load_wait(struct load *l)
{
    int st = -1;
    bool ended = e2e_wait_exit(l->pid, e2e_timeout_ms() * 2, &st);
    if (!ended)
        e2e_kill(l->pid);
    ck_assert_msg(ended && WIFEXITED(st) && WEXITSTATUS(st) == 0, "lb-faultload: status %d", st);
    FILE *f = fopen(l->log, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "{\"mode\"", 7) == 0)
            l->json = strdup(line);
    fclose(f);
    ck_assert_msg(l->json != NULL, "lb-faultload printed no result, see %s", l->log);
    ck_assert(e2e_json_long(l->json, "total", &l->total) && e2e_json_long(l->json, "ok", &l->ok) &&
              e2e_json_long(l->json, "failed", &l->failed));
    ck_assert_msg(l->total > 0 && l->failed == 0, "%ld of %ld requests failed: %s", l->failed,
                  l->total, l->json);
    free(l->json);
    l->json = NULL;
}

/* ---- config ------------------------------------------------------------------------ */

/* Applies a config with the world's frontend, backends b0, b1 and the
 * victim on <vport>, and health checks every INTERVAL_MS (scaled). */
static void apply_config(struct e2e_cp *w, unsigned vport, bool metrics)
{
    char path[256];
    e2e_cp_path(w, "handover.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "frontends:\n  - name: \"web\"\n    address: \"127.0.0.1\"\n    port: %u\n",
            e2e_cp_frontend_port(w));
    fprintf(f, "backends:\n");
    for (unsigned i = 0; i < 2; i++)
        fprintf(f, "  - id: \"b%u\"\n    url: \"%s\"\n", i, e2e_cp_backend_url(w, i));
    fprintf(f, "  - id: \"victim\"\n    url: \"http://127.0.0.1:%u\"\n", vport);
    fprintf(f,
            "healthcheck:\n  interval: \"%llums\"\n  timeout: \"%llums\"\n  path: \"/health\"\n"
            "  rise: %u\n  fall: %u\n",
            (unsigned long long)e2e_scaled_ms(INTERVAL_MS), (unsigned long long)e2e_scaled_ms(500),
            RISE, FALL);
    fprintf(f, "balancing:\n  algorithm: \"round_robin\"\n  slowStart: \"0s\"\n");
    fprintf(f, "timeouts:\n  drain: \"5s\"\n");
    fprintf(f, "logging:\n  level: \"info\"\n  accessLog: false\n");
    if (metrics)
        fprintf(f, "metrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: %u\n",
                e2e_cp_metrics_port(w));
    else
        fprintf(f, "metrics:\n  enabled: false\n");
    ck_assert_int_eq(fclose(f), 0);
    struct e2e_cmd r;
    int st = LBCTL(w, &r, "config", "apply", path, "--comment", "hand-over test");
    ck_assert_msg(st == 0, "lbctl config apply: exit %d, %s", st, r.err);
    e2e_cmd_free(&r);
}

/* ---- what the control plane says ------------------------------------------------- */

/* `lbctl --json backends list` of one backend. */
struct view {
    char health[16];
    char last_error[160]; /* "" when null */
    bool ejected;
    long ejected_by, ejections;
};

static bool backend_view(struct e2e_cp *w, const char *id, struct view *v)
{
    struct e2e_cmd r;
    memset(v, 0, sizeof *v);
    if (LBCTL(w, &r, "--json", "backends", "list") != 0) {
        e2e_cmd_free(&r);
        return false;
    }
    char key[96];
    snprintf(key, sizeof key, "\"id\": \"%s\"", id);
    const char *o = strstr(r.out, key);
    bool ok = false;
    if (o != NULL) {
        const char *end = strstr(o + 1, "\"id\": ");
        char *obj = strndup(o, end ? (size_t)(end - o) : strlen(o));
        ck_assert_ptr_nonnull(obj);
        const char *h = strstr(obj, "\"health\": \"");
        const char *e = strstr(obj, "\"last_error\": ");
        const char *j = strstr(obj, "\"ejected\": ");
        if (h && e && j && e2e_json_long(obj, "ejections", &v->ejections) &&
            e2e_json_long(obj, "ejectedBy", &v->ejected_by)) {
            sscanf(h + strlen("\"health\": \""), "%15[a-z]", v->health);
            e += strlen("\"last_error\": ");
            if (*e == '"')
                sscanf(e + 1, "%159[^\"]", v->last_error);
            v->ejected = strncmp(j + strlen("\"ejected\": "), "true", 4) == 0;
            ok = true;
        }
        free(obj);
    }
    e2e_cmd_free(&r);
    return ok;
}

/* The admin API's view of backend <id> (GET /api/v1/backends/<id> over the
 * admin TCP listener): health and ejected only. Cheaper than running lbctl,
 * so it can poll for the short time "ejected" shows. */
static bool api_view(struct e2e_cp *w, const char *id, struct view *v)
{
    char path[256], token[64] = "", hdr[128], url[128];
    memset(v, 0, sizeof *v);
    e2e_cp_path(w, "ro.token", path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%63s", token), 1);
    fclose(f);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    snprintf(url, sizeof url, "/api/v1/backends/%s", id);
    struct e2e_resp r;
    if (e2e_request(e2e_cp_admin_port(w), "GET", url, hdr, NULL, 0, &r) != 0)
        return false;
    const char *h = r.status == 200 ? strstr(r.body, "\"health\"") : NULL;
    const char *j = r.status == 200 ? strstr(r.body, "\"ejected\"") : NULL;
    bool ok = h && j;
    if (ok) {
        h += strlen("\"health\"");
        h += strspn(h, ": ");
        sscanf(h, "\"%15[a-z]", v->health);
        j += strlen("\"ejected\"");
        j += strspn(j, ": ");
        v->ejected = strncmp(j, "true", 4) == 0;
    }
    e2e_resp_free(&r);
    return ok;
}

/* The line of <id> in `lbctl backends list` (the table) into <out>. */
static bool backend_row(struct e2e_cp *w, const char *id, char *out, size_t outsz)
{
    struct e2e_cmd r;
    bool ok = false;
    if (LBCTL(w, &r, "backends", "list") == 0) {
        size_t idlen = strlen(id);
        for (const char *p = r.out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, id, idlen) == 0 && (p[idlen] == ' ' || p[idlen] == '\t')) {
                snprintf(out, outsz, "%.*s", (int)strcspn(p, "\n"), p);
                ok = true;
                break;
            }
        }
    }
    e2e_cmd_free(&r);
    return ok;
}

/* Polls until backend <id>'s health is <want>; returns the ms it took, -1 on
 * timeout. */
static long wait_health(struct e2e_cp *w, const char *id, const char *want)
{
    uint64_t t0 = e2e_now_ms(), deadline = t0 + e2e_timeout_ms();
    struct view v;
    while (e2e_now_ms() < deadline) {
        if (backend_view(w, id, &v) && strcmp(v.health, want) == 0)
            return (long)(e2e_now_ms() - t0);
        e2e_poll_pause(25);
    }
    return -1;
}

/* The control plane's /metrics over the admin TCP listener; caller frees. */
static char *cp_metrics(struct e2e_cp *w)
{
    char path[256], token[64] = "", hdr[128];
    e2e_cp_path(w, "rw.token", path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%63s", token), 1);
    fclose(f);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(e2e_cp_admin_port(w), "GET", "/metrics", hdr, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    char *text = strdup(r.body);
    e2e_resp_free(&r);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* ---- logs ------------------------------------------------------------------------------ */

/* In the world's log <name>, the lines holding "event":"<event>" and
 * <needle>: how many, and the wall-clock ms of the first into <first_ms> (may
 * be NULL; -1 when none). */
static int log_count(struct e2e_cp *w, const char *name, const char *event, const char *needle,
                     int64_t *first_ms)
{
    char path[256], ev[96], line[4096];
    e2e_cp_path(w, name, path, sizeof path);
    snprintf(ev, sizeof ev, "\"event\":\"%s\"", event);
    if (first_ms)
        *first_ms = -1;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, ev) == NULL || strstr(line, needle) == NULL)
            continue;
        struct tm tm = {0};
        unsigned ms = 0;
        if (n++ == 0 && first_ms &&
            sscanf(line, "{\"ts\":\"%d-%d-%dT%d:%d:%d.%3uZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) == 7) {
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            *first_ms = (int64_t)timegm(&tm) * 1000 + ms;
        }
    }
    fclose(f);
    return n;
}

/* Polls log_count() until it is at least 1; returns the first line's time, -1
 * when none came within e2e_timeout_ms(). */
static int64_t log_wait(struct e2e_cp *w, const char *name, const char *event, const char *needle)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    int64_t at = -1;
    while (log_count(w, name, event, needle, &at) == 0 && e2e_now_ms() < deadline)
        e2e_poll_pause(10);
    return at;
}

/* ---- the data plane's metrics ---------------------------------------------------- */

/* Metric <name> of backend "victim" on the data plane's metrics port; NAN when
 * absent or the scrape failed. */
static double dp_victim(struct e2e_cp *w, const char *name)
{
    char *m = e2e_cp_scrape(w);
    double v = m ? e2e_metric(m, name, "backend=\"victim\"") : NAN;
    free(m);
    return v;
}

/* Answers of the victim as counted by the data plane (0 when none yet). */
static double dp_victim_answers(struct e2e_cp *w)
{
    double v = dp_victim(w, "lb_http_requests_total");
    return isnan(v) ? 0 : v;
}

/* Waits until the data plane counted at least <n> answers of the victim. */
static bool wait_victim_answers(struct e2e_cp *w, double n)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (dp_victim_answers(w) < n) {
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(10);
    }
    return true;
}

/* ---- one data plane: ejected, handed over, back through the checks ------------------ */

START_TEST(ejection_hands_over_to_health_checks)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 1, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    unsigned vport = 0;
    pid_t victim = e2e_cp_backend_spawn(w, "victim", 0, "victim.log", &vport);
    apply_config(w, vport, true);
    ck_assert_int_ge(wait_health(w, "victim", "up"), 0);
    ck_assert_int_ge(wait_health(w, "b0", "up"), 0);
    ck_assert_int_ge(wait_health(w, "b1", "up"), 0);
    long gen_up = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen_up, 0);

    /* Load, and the victim killed once it serves some of it. */
    struct load l;
    uint64_t load_t0 = e2e_now_ms();
    load_start(&l, w, "load1.log", e2e_scaled_ms(LOAD_MS));
    ck_assert(wait_victim_answers(w, 100));
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    uint64_t kill_mono = e2e_now_ms();
    int64_t kill_wall = wall_ms();
    ck_assert(e2e_wait_exit(victim, e2e_timeout_ms(), NULL));

    /* While the load runs: the control plane marks it down within
     * DOWN_BOUND_MS, then the data plane hands over. "ejected" is shown from
     * the report that made the control plane act until the backend is up
     * again. The admin API is polled for it (cheap); lbctl and the metric
     * are asked as soon as it shows. */
    long seen_down = -1, seen_handover = -1, seen_ejected = -1;
    bool seen_json = false, seen_row = false, seen_metric = false;
    char row[256] = "";
    struct view v;
    uint64_t deadline = kill_mono + e2e_timeout_ms();
    while (e2e_now_ms() < deadline && (seen_down < 0 || seen_handover < 0)) {
        struct view a;
        ck_assert(api_view(w, "victim", &a));
        long now = (long)(e2e_now_ms() - kill_mono);
        ck_assert_msg(!a.ejected || strcmp(a.health, "down") == 0, "ejected but %s", a.health);
        if (strcmp(a.health, "down") == 0 && seen_down < 0)
            seen_down = now;
        if (a.ejected && seen_ejected < 0)
            seen_ejected = now;
        if (a.ejected && !(seen_json && seen_row && seen_metric)) {
            seen_json =
                seen_json || (backend_view(w, "victim", &v) && strcmp(v.health, "down") == 0 &&
                              v.ejected && v.ejected_by == 1 && v.ejections == 1);
            seen_row = seen_row || (backend_row(w, "victim", row, sizeof row) &&
                                    strstr(row, "down (ejected)") != NULL);
            char *m = cp_metrics(w);
            seen_metric =
                seen_metric || e2e_metric(m, "lb_cp_backend_ejected", "backend=\"victim\"") == 1.0;
            free(m);
        }
        if (seen_handover < 0 &&
            log_count(w, "dp0.log", "backend_ejection_handed_over", "victim", NULL) > 0)
            seen_handover = (long)(e2e_now_ms() - kill_mono);
        e2e_poll_pause(5);
    }
    ck_assert_msg(seen_down >= 0, "the victim was never shown down");
    ck_assert_msg(seen_handover >= 0, "the data plane never handed the ejection over");
    ck_assert_msg(seen_down <= (long)e2e_scaled_ms(DOWN_BOUND_MS),
                  "down %ld ms after the kill (the checks alone: >= %llu ms)", seen_down,
                  (unsigned long long)e2e_scaled_ms((FALL - 1) * INTERVAL_MS));
    /* Once down, it shows as ejected in every view until it is up again. */
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_str_eq(v.health, "down");
    ck_assert_int_eq(v.ejections, 1);
    ck_assert(v.ejected);
    ck_assert(backend_row(w, "victim", row, sizeof row));
    ck_assert_msg(strstr(row, "down (ejected)") != NULL, "lbctl row: %s", row);
    char *cpm = cp_metrics(w);
    ck_assert(e2e_metric(cpm, "lb_cp_backend_ejected", "backend=\"victim\"") == 1.0);
    free(cpm);
    fprintf(stderr,
            "handover: control plane showed \"ejected\": %s (API at %ld ms); lbctl --json down "
            "+ ejected: %s; lbctl table \"down (ejected)\": %s; lb_cp_backend_ejected 1: %s\n",
            seen_ejected >= 0 ? "yes" : "no (window closed between polls)", seen_ejected,
            seen_json ? "yes" : "no", seen_row ? "yes" : "no", seen_metric ? "yes" : "no");

    /* The logs agree, once each, in that order, and the checks were not
     * what took it down. */
    int64_t dp_eject = -1, cp_eject = -1, cp_down = -1, dp_handover = -1;
    ck_assert_int_eq(log_count(w, "dp0.log", "backend_ejected", "victim", &dp_eject), 1);
    ck_assert_int_eq(log_count(w, "cp.log", "backend_ejected", "victim", &cp_eject), 1);
    ck_assert_int_eq(log_count(w, "cp.log", "backend_health", "victim down", &cp_down), 1);
    ck_assert_int_eq(
        log_count(w, "cp.log", "backend_health", "victim down: ejected by data plane dp0", NULL),
        1);
    ck_assert_int_eq(
        log_count(w, "dp0.log", "backend_ejection_handed_over", "victim", &dp_handover), 1);
    ck_assert(dp_eject >= 0 && cp_eject >= 0 && cp_down >= 0 && dp_handover >= 0);
    ck_assert(dp_eject <= cp_eject && cp_eject <= cp_down && cp_down <= dp_handover);
    ck_assert_msg(cp_down - kill_wall <= (int64_t)e2e_scaled_ms(DOWN_BOUND_MS),
                  "the control plane marked it down %lld ms after the kill",
                  (long long)(cp_down - kill_wall));
    fprintf(
        stderr,
        "handover: kill -> dp ejected %lld ms, -> cp backend_ejected %lld ms, -> cp down %lld "
        "ms (API showed it at %ld ms), -> dp handed over %lld ms (in its log at %ld ms); checks "
        "alone: >= %llu ms\n",
        (long long)(dp_eject - kill_wall), (long long)(cp_eject - kill_wall),
        (long long)(cp_down - kill_wall), seen_down, (long long)(dp_handover - kill_wall),
        seen_handover, (unsigned long long)e2e_scaled_ms((FALL - 1) * INTERVAL_MS));

    /* Handed over: one new generation, the data plane's ejection over, and
     * from here to the end of the load nobody connects to the victim. */
    long gen_down = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_eq(gen_down, gen_up + 1);
    ck_assert(dp_victim(w, "lb_backend_ejected") == 0.0);
    ck_assert(dp_victim(w, "lb_backend_ejections_total") == 1.0);
    double answers = dp_victim_answers(w);
    double refused = dp_victim(w, "lb_backend_connect_failures_total");
    uint64_t handed_mono = e2e_now_ms();
    ck_assert_msg(handed_mono < load_t0 + e2e_scaled_ms(LOAD_MS) - e2e_scaled_ms(500),
                  "handed over too late to see the load go on without the victim");
    load_wait(&l);
    ck_assert(dp_victim_answers(w) == answers);
    ck_assert(dp_victim(w, "lb_backend_connect_failures_total") == refused);
    ck_assert(dp_victim(w, "lb_backend_ejections_total") == 1.0);
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_str_eq(v.health, "down");
    ck_assert(v.ejected); /* down since the ejection */
    fprintf(stderr,
            "handover: load 1: %ld requests, %ld failed; %.0f connect failures to the victim, none "
            "in the %llu ms after the hand-over\n",
            l.total, l.failed, refused, (unsigned long long)(e2e_now_ms() - handed_mono));

    /* Started again on the same port: up after RISE checks, traffic back. */
    unsigned again = 0;
    uint64_t restart_mono = e2e_now_ms();
    victim = e2e_cp_backend_spawn(w, "victim", vport, "victim2.log", &again);
    ck_assert_uint_eq(again, vport);
    long up = wait_health(w, "victim", "up");
    ck_assert_int_ge(up, 0);
    up = (long)(e2e_now_ms() - restart_mono);
    ck_assert_int_eq(log_count(w, "cp.log", "backend_health", "victim up", NULL), 2);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), gen_down);
    uint64_t back_t0 = e2e_now_ms();
    load_start(&l, w, "load2.log", e2e_scaled_ms(BACK_LOAD_MS));
    ck_assert(wait_victim_answers(w, answers + 50));
    long traffic = (long)(e2e_now_ms() - back_t0);
    load_wait(&l);
    ck_assert(dp_victim(w, "lb_backend_ejections_total") == 1.0);
    ck_assert(dp_victim(w, "lb_backend_ejected") == 0.0);
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_msg(strcmp(v.health, "up") == 0 && !v.ejected, "%s, ejected %d", v.health, v.ejected);
    fprintf(stderr,
            "handover: restart -> up in the control plane %ld ms (rise %u x %llu ms), victim "
            "answers again %ld ms into load 2; load 2: %ld requests, %ld failed\n",
            up, RISE, (unsigned long long)e2e_scaled_ms(INTERVAL_MS), traffic, l.total, l.failed);
    ck_assert_int_ge(e2e_kill(victim), 0);
    e2e_cp_stop(w);
}
END_TEST

/* ---- two data planes: the control plane acts once ------------------------------------- */

START_TEST(two_dataplanes_one_verdict)
{
    /* Two data planes share the frontend port and cannot share a metrics
     * port: the logs and lbctl tell. */
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 2, .no_metrics = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    unsigned vport = 0;
    pid_t victim = e2e_cp_backend_spawn(w, "victim", 0, "victim.log", &vport);
    apply_config(w, vport, false);
    ck_assert_int_ge(wait_health(w, "victim", "up"), 0);
    ck_assert_int_ge(wait_health(w, "b0", "up"), 0);
    ck_assert_int_ge(wait_health(w, "b1", "up"), 0);
    long gen_up = e2e_cp_wait_in_sync(w, 2, NULL);
    ck_assert_int_gt(gen_up, 0);

    struct load l;
    load_start(&l, w, "load.log", e2e_scaled_ms(LOAD_MS) * 3 / 5);
    /* The victim answered some of the load (its /stats counts ours too). */
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        struct e2e_resp r;
        long n = -1;
        if (e2e_request(vport, "GET", "/stats", "Connection: close\r\n", NULL, 0, &r) == 0) {
            e2e_json_long(r.body, "requests", &n);
            e2e_resp_free(&r);
        }
        if (n >= 100)
            break;
        ck_assert_msg(e2e_now_ms() < deadline, "the victim got no load");
        e2e_poll_pause(10);
    }
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    int64_t kill_wall = wall_ms();
    ck_assert(e2e_wait_exit(victim, e2e_timeout_ms(), NULL));

    int64_t cp_down = log_wait(w, "cp.log", "backend_health", "victim down");
    ck_assert_msg(cp_down >= 0, "the control plane never marked the victim down");
    long gen_down = e2e_cp_wait_in_sync(w, 2, NULL);
    ck_assert_int_eq(gen_down, gen_up + 1);
    /* Every data plane that ejected it hands it over; at least one did. */
    int ejected_by = 0;
    int64_t dp_eject[2], dp_handover[2];
    for (unsigned i = 0; i < 2; i++) {
        char log[16];
        snprintf(log, sizeof log, "dp%u.log", i);
        int n = log_count(w, log, "backend_ejected", "victim", &dp_eject[i]);
        ck_assert_int_le(n, 1);
        ejected_by += n;
        dp_handover[i] = -1;
        if (n == 1)
            dp_handover[i] = log_wait(w, log, "backend_ejection_handed_over", "victim");
        ck_assert_msg(n == 0 || dp_handover[i] >= 0, "dp%u ejected the victim, never handed over",
                      i);
    }
    ck_assert_int_ge(ejected_by, 1);
    load_wait(&l);

    /* One verdict: one backend_ejected and one down line in the control
     * plane, one generation, whatever the second data plane reported. */
    int64_t cp_eject = -1;
    ck_assert_int_eq(log_count(w, "cp.log", "backend_ejected", "victim", &cp_eject), 1);
    ck_assert_int_eq(log_count(w, "cp.log", "backend_health", "victim down", NULL), 1);
    ck_assert_int_eq(
        log_count(w, "cp.log", "backend_health", "victim down: ejected by data plane", NULL), 1);
    ck_assert_int_eq(e2e_cp_wait_in_sync(w, 2, NULL), gen_down);
    ck_assert_msg(cp_down - kill_wall <= (int64_t)e2e_scaled_ms(DOWN_BOUND_MS),
                  "the control plane marked it down %lld ms after the kill",
                  (long long)(cp_down - kill_wall));
    struct view v;
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_str_eq(v.health, "down");
    fprintf(stderr,
            "handover: 2 data planes: ejected by %d; kill -> cp backend_ejected %lld ms, -> cp "
            "down %lld ms; dp0 ejected %lld / handed over %lld ms, dp1 %lld / %lld ms (-1: did "
            "not eject); load: %ld requests, %ld failed; generation %ld -> %ld\n",
            ejected_by, (long long)(cp_eject - kill_wall), (long long)(cp_down - kill_wall),
            (long long)(dp_eject[0] < 0 ? -1 : dp_eject[0] - kill_wall),
            (long long)(dp_handover[0] < 0 ? -1 : dp_handover[0] - kill_wall),
            (long long)(dp_eject[1] < 0 ? -1 : dp_eject[1] - kill_wall),
            (long long)(dp_handover[1] < 0 ? -1 : dp_handover[1] - kill_wall), l.total, l.failed,
            gen_up, gen_down);
    e2e_cp_stop(w);
}
END_TEST

int main(void)
{
    unsetenv("LB_ADMIN_SOCKET");
    unsetenv("LB_ADMIN_URL");
    unsetenv("LB_TOKEN_FILE");
    Suite *s = suite_create("e2e_handover");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"one_dataplane", ejection_hands_over_to_health_checks},
        {"two_dataplanes", two_dataplanes_one_verdict},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
