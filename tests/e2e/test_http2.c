/* tests/e2e/test_http2.c: HTTP/2 clients through a real lb-dataplane.
 *
 * The cases themselves are tests/h2/h2check.py, run with Debian's
 * /usr/bin/python3 (python3-h2, hyperframe, hpack): a well-behaved client
 * for the conformance cases, hand-made frames for the smuggling and attack
 * cases. This suite starts the worlds (prior-knowledge h2c on a plain
 * frontend, ALPN h2 on a TLS one), runs the cases, and checks what the data
 * plane counted and logged. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

static void h2c_on(Lb__V1__Snapshot *snap, void *arg)
{
    snap->frontends[0]->http2_cleartext = true;
}

static void tls_h2_on(Lb__V1__Snapshot *snap, void *arg)
{
    struct e2e_tls1 *tls = arg;
    snap->frontends[0]->tls = &tls->tls;
    snap->frontends[0]->http2 = true;
}

/* Runs h2check.py <which> against <port>; fails the test with its output
 * when the case fails. <more>: NULL or extra arguments, NULL-terminated. */
static void h2check(unsigned port, bool tls, const char *which, const char *const *more)
{
    char script[512], portbuf[16];
    snprintf(script, sizeof(script), "%s/tests/h2/h2check.py", LB_SOURCE_DIR);
    snprintf(portbuf, sizeof(portbuf), "%u", port);
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%.1f", (double)e2e_timeout_ms() / 1000.0);
    char *argv[16] = {"/usr/bin/python3", script, "--port", portbuf, "--timeout", timeout};
    int n = 6;
    if (tls)
        argv[n++] = "--tls";
    for (; more != NULL && *more != NULL && n < 14; more++)
        argv[n++] = (char *)*more;
    argv[n++] = (char *)which;
    argv[n] = NULL;
    struct e2e_cmd r;
    int st = e2e_cmd_run(argv, NULL, &r);
    ck_assert_msg(st == 0, "h2check %s: exit %d\n%s%s", which, st, r.out, r.err);
    e2e_cmd_free(&r);
}

static struct e2e *start_h2c(unsigned workers)
{
    struct e2e_opts o = {.backends = 2, .tweak = h2c_on, .workers = workers};
    return e2e_start_opts(&o);
}

START_TEST(h2c_requests_and_bodies)
{
    struct e2e *t = start_h2c(0);
    unsigned port = e2e_lb_port(t);
    h2check(port, false, "get", NULL);
    h2check(port, false, "post", NULL);
    h2check(port, false, "concurrent", NULL);
    h2check(port, false, "slow_stream", NULL);
    h2check(port, false, "extras", NULL);
    h2check(port, false, "acks", NULL);
    char *m = e2e_scrape(t);
    ck_assert_ptr_nonnull(m);
    ck_assert(e2e_metric(m, "lb_http2_streams_total", NULL) >= 200);
    ck_assert(e2e_metric(m, "lb_http2_connections_total", NULL) >= 4);
    free(m);
    ck_assert(e2e_wait_log(t, "lb.log", "\"protocol\":\"HTTP/2.0\"", 200));
    e2e_stop(t);
}
END_TEST

START_TEST(h2c_refuses_smuggling)
{
    struct e2e *t = start_h2c(0);
    h2check(e2e_lb_port(t), false, "smuggle", NULL);
    /* no refused request reached a backend */
    long got = e2e_backend_stat(t, 0, "requests") + e2e_backend_stat(t, 1, "requests");
    ck_assert_msg(got <= 4, "backends saw %ld requests", got);
    /* a body found at odds with its content-length once a backend has
     * answered the head: reset, the response never completes */
    h2check(e2e_lb_port(t), false, "smuggle_late", NULL);
    e2e_stop(t);
}
END_TEST

/* Each attack class: the connection is calmed (GOAWAY ENHANCE_YOUR_CALM)
 * and counted, while a good client on the same worker is served. */
START_TEST(h2c_attacks_are_calmed)
{
    struct e2e *t = start_h2c(1); /* the good client shares the attacker's worker */
    unsigned port = e2e_lb_port(t);
    static const char *const kinds[] = {"rapid_reset",  "settings",      "ping",
                                        "priority",     "window_update", "empty_data",
                                        "continuation", "header_list",   "hpack_bomb"};
    static const char *const metric_kind[] = {"rapid_reset",  "settings",      "ping",
                                              "priority",     "window_update", "empty_data",
                                              "continuation", "header_list",   "header_list"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const char *more[] = {"--only", kinds[i], NULL};
        h2check(port, false, "attacks", more);
        char labels[64];
        snprintf(labels, sizeof(labels), "kind=\"%s\"", metric_kind[i]);
        ck_assert_msg(e2e_wait_metric(t, "lb_http2_abuse_total", labels, 1) >= 1, "%s not counted",
                      kinds[i]);
    }
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)e2e_lb_pid(t));
    const char *more[] = {"--pid", pid, NULL};
    h2check(port, false, "slow_reader", more);
    e2e_stop(t);
}
END_TEST

static Lb__V1__RateLimit rl;

static void h2c_ratelimited(Lb__V1__Snapshot *snap, void *arg)
{
    h2c_on(snap, NULL);
    lb__v1__rate_limit__init(&rl);
    rl.enabled = true;
    rl.rate = 1;
    rl.burst = 2;
    rl.per_client = true;
    rl.headers_on_allowed = true;
    snap->ratelimit = &rl;
}

/* Rate limits count streams (each is a request): the third stream of a
 * burst of 2 is answered 429 with its RateLimit fields, on the same
 * connection. */
START_TEST(h2c_rate_limit_per_stream)
{
    struct e2e_opts o = {.backends = 1, .tweak = h2c_ratelimited};
    struct e2e *t = e2e_start_opts(&o);
    h2check(e2e_lb_port(t), false, "ratelimited", NULL);
    char *m = e2e_scrape(t);
    ck_assert_ptr_nonnull(m);
    ck_assert(e2e_metric(m, "lb_requests_rejected_total", "reason=\"rate_limited\"") >= 1);
    free(m);
    e2e_stop(t);
}
END_TEST

START_TEST(tls_alpn_h2_beside_http1)
{
    struct e2e_tls1 tls;
    e2e_tls1_init(&tls, "srv-rsa");
    struct e2e_opts o = {.backends = 1, .tweak = tls_h2_on, .tweak_arg = &tls};
    struct e2e *t = e2e_start_opts(&o);
    unsigned port = e2e_lb_port(t);
    h2check(port, true, "get", NULL);
    h2check(port, true, "mixed", NULL);
    h2check(port, true, "post", NULL);
    h2check(port, true, "download", NULL);
    char *m = e2e_scrape(t);
    ck_assert_ptr_nonnull(m);
    ck_assert(e2e_metric(m, "lb_http2_connections_total", NULL) >= 4);
    free(m);
    e2e_stop(t);
    e2e_tls1_free(&tls);
}
END_TEST

/* Without http2Cleartext a plain frontend speaks HTTP/1 only: the preface
 * is a malformed HTTP/1 request. */
START_TEST(h2c_off_by_default)
{
    struct e2e *t = e2e_start(1);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t len = 0;
    char *got = e2e_raw(e2e_lb_port(t), preface, sizeof(preface) - 1, e2e_timeout_ms(), &len, NULL);
    ck_assert_ptr_nonnull(got);
    ck_assert_msg(strncmp(got, "HTTP/1.1 4", 10) == 0 || strncmp(got, "HTTP/1.1 505", 12) == 0,
                  "got %s", got);
    free(got);
    e2e_stop(t);
}
END_TEST

/* SIGTERM: GOAWAY with the last stream id, the stream in flight completes,
 * the process exits 0. */
START_TEST(h2c_drain_on_sigterm)
{
    struct e2e *t = start_h2c(0);
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)e2e_lb_pid(t));
    const char *more[] = {"--pid", pid, NULL};
    h2check(e2e_lb_port(t), false, "drain", more);
    int status = -1;
    ck_assert(e2e_lb_wait_exit(t, e2e_timeout_ms(), &status));
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    e2e_stop(t);
}
END_TEST

/* SIGUSR2 started it: ours to stop if a check fails before the test does */
static pid_t usr2_successor;

static void usr2_successor_kill(void)
{
    if (usr2_successor > 0)
        kill(usr2_successor, SIGKILL);
}

static void h2c_on_and_handover(Lb__V1__Snapshot *snap, void *arg)
{
    (void)arg;
    snap->frontends[0]->http2_cleartext = true;
}

/* The pid the data plane logged for the successor SIGUSR2 started; 0: none. */
static pid_t successor_pid(struct e2e *t)
{
    char path[512], line[4096];
    pid_t pid = 0;
    e2e_path(t, "lb.log", path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    while (pid <= 0 && fgets(line, sizeof(line), f) != NULL) {
        const char *p = strstr(line, "upgrade_started");
        p = p ? strstr(p, "(pid ") : NULL;
        if (p != NULL)
            pid = (pid_t)atol(p + 5);
    }
    fclose(f);
    return pid;
}

/* The hand-over (SIGUSR2): HTTP/2 connections with streams in flight get
 * GOAWAY from the old process, their streams finish, new connections land on
 * the successor; the old process exits 0 and the successor keeps serving. */
START_TEST(h2c_streams_survive_handover)
{
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    atexit(usr2_successor_kill);
    char dir[64], ho[128];
    snprintf(dir, sizeof(dir), "/tmp/lb-h2ho-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ho, sizeof(ho), "%s/handover.sock", dir);
    char *dp_args[] = {"--handover-socket", ho, NULL};
    struct e2e_opts o = {.backends = 2, .tweak = h2c_on_and_handover, .dp_args = dp_args};
    struct e2e *t = e2e_start_opts(&o);
    ck_assert(e2e_wait_log(t, "lb.log", "handover_listening", 1));
    unsigned port = e2e_lb_port(t);
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)e2e_lb_pid(t));
    const char *more[] = {"--pid", pid, NULL};
    h2check(port, false, "handover", more);
    usr2_successor = successor_pid(t);
    ck_assert_int_gt(usr2_successor, 0);
    int status = -1;
    ck_assert(e2e_lb_wait_exit(t, e2e_timeout_ms(), &status));
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    h2check(port, false, "get", NULL); /* only the successor is left */
    kill(usr2_successor, SIGTERM);
    int st = -1;
    for (int i = 0; i < 200 && waitpid(usr2_successor, &st, WNOHANG) == 0; i++)
        usleep(50 * 1000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "successor status %d", st);
    usr2_successor = 0;
    unlink(ho);
    rmdir(dir);
    e2e_stop(t);
}
END_TEST

/* lb_http_requests_total tells the protocols apart: the four streams of
 * h2check's "get" count as h2, three HTTP/1.1 requests on the same plain
 * frontend as http/1.1, and the sum over both is what it always was. */
START_TEST(requests_counted_by_protocol)
{
    struct e2e *t = start_h2c(0);
    h2check(e2e_lb_port(t), false, "get", NULL);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(e2e_get(t, "/"));
    const char *name = "lb_http_requests_total";
    double h2 = e2e_wait_metric(t, name, "protocol=\"h2\"", 4);
    double h1 = e2e_wait_metric(t, name, "protocol=\"http/1.1\"", 3);
    ck_assert_msg(h2 == 4 && h1 == 3, "h2 %g, http/1.1 %g", h2, h1);
    char *m = e2e_scrape(t);
    ck_assert_ptr_nonnull(m);
    ck_assert(e2e_metric(m, name, "protocol=\"h2\",code=\"2xx\"") == 4);
    ck_assert(e2e_metric(m, name, "code=\"2xx\"") == 7);
    free(m);
    e2e_stop(t);
}
END_TEST

static Suite *http2_suite(void)
{
    Suite *s = suite_create("e2e_http2");
    TCase *tc = e2e_tcase("http2");
    tcase_add_test(tc, h2c_requests_and_bodies);
    tcase_add_test(tc, h2c_refuses_smuggling);
    tcase_add_test(tc, h2c_attacks_are_calmed);
    tcase_add_test(tc, h2c_rate_limit_per_stream);
    tcase_add_test(tc, tls_alpn_h2_beside_http1);
    tcase_add_test(tc, h2c_off_by_default);
    tcase_add_test(tc, h2c_drain_on_sigterm);
    tcase_add_test(tc, h2c_streams_survive_handover);
    tcase_add_test(tc, requests_counted_by_protocol);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(http2_suite());
}
