/* tests/e2e/test_failures.c: dead, silent and departing backends, and the
 * data plane's own graceful shutdown. */
#include "e2e.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(killed_backend_traffic_moves)
{
    struct e2e *t = e2e_start(3);
    for (int i = 0; i < 30; i++)
        ck_assert_ptr_nonnull(e2e_get(t, "/"));
    e2e_kill_backend(t, 1);
    /* Nothing was in flight when b1 died: every later request succeeds on
     * b0 or b2, on the kept-alive client connection and on new ones. */
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (int i = 0; i < 30; i++) {
        const char *body = e2e_get(t, "/");
        ck_assert_msg(body != NULL, "request %d after the kill failed", i);
        ck_assert_msg(strcmp(body, "b0") == 0 || strcmp(body, "b2") == 0, "answered by %s", body);
    }
    for (int i = 0; i < 30; i++) {
        struct e2e_resp r;
        ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/", NULL, NULL, 0, &r), 0);
        ck_assert_msg(r.status == 200, "new connection %d got %d", i, r.status);
        ck_assert_msg(strcmp(r.body, "b0") == 0 || strcmp(r.body, "b2") == 0, "answered by %s",
                      r.body);
        e2e_resp_free(&r);
    }
    ck_assert_msg(e2e_now_ms() < deadline, "requests after the kill were slow");
    e2e_stop(t);
}
END_TEST

START_TEST(all_backends_down_fails_fast)
{
    struct e2e *t = e2e_start(2);
    ck_assert_ptr_nonnull(e2e_get(t, "/"));
    e2e_kill_backend(t, 0);
    e2e_kill_backend(t, 1);
    for (int i = 0; i < 5; i++) {
        struct e2e_resp r;
        uint64_t start = e2e_now_ms();
        ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/", NULL, NULL, 0, &r), 0);
        uint64_t took = e2e_now_ms() - start;
        ck_assert_msg(r.status == 502 || r.status == 503, "got %d", r.status);
        ck_assert_msg(took < e2e_timeout_ms() / 3, "answer took %llu ms", (unsigned long long)took);
        e2e_resp_free(&r);
    }
    e2e_stop(t);
}
END_TEST

static void short_upstream_timeout(Lb__V1__Snapshot *snap, void *arg)
{
    snap->timeouts->upstream_header_ms = 500;
}

START_TEST(silent_backend_gets_504)
{
    struct e2e_opts o = {.backends = 1,
                         .algorithm = LB__V1__ALGORITHM__ROUND_ROBIN,
                         .tweak = short_upstream_timeout};
    struct e2e *t = e2e_start_opts(&o);
    struct e2e_resp r;
    uint64_t start = e2e_now_ms();
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/slow/60000", NULL, NULL, 0, &r), 0);
    uint64_t took = e2e_now_ms() - start;
    ck_assert_int_eq(r.status, 504);
    ck_assert_msg(took >= 450, "504 after only %llu ms", (unsigned long long)took);
    e2e_resp_free(&r);
    /* The data plane still serves afterwards. */
    ck_assert_str_eq(e2e_get(t, "/"), "b0");
    e2e_stop(t);
}
END_TEST

START_TEST(sigterm_drains_in_flight)
{
    enum {
        N = 20
    };
    struct e2e *t = e2e_start(1);
    struct e2e_conn *c[N];
    const char *req = "GET /slow/500 HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++) {
        c[i] = e2e_connect(e2e_lb_port(t));
        ck_assert_ptr_nonnull(c[i]);
        ck_assert_int_eq(e2e_conn_send(c[i], req, strlen(req)), 0);
    }
    /* Wait until the backend holds all N (each /stats poll counts itself). */
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    long polls = 0, seen = 0;
    while (e2e_now_ms() < deadline) {
        long r = e2e_backend_stat(t, 0, "requests");
        polls++;
        seen = r - polls;
        if (seen >= N)
            break;
        e2e_poll_pause(10);
    }
    ck_assert_int_eq(seen, N);
    int st;
    uint64_t start = e2e_now_ms();
    /* drain_ms is 5000 in the harness' snapshot. */
    ck_assert_msg(e2e_lb_term(t, 5000 + e2e_timeout_ms() / 2, &st),
                  "lb-dataplane did not exit after SIGTERM");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    ck_assert_msg(e2e_now_ms() - start < 5000 + 1000, "drain took too long");
    for (int i = 0; i < N; i++) {
        struct e2e_resp r;
        ck_assert_msg(e2e_conn_read(c[i], &r, false) == 0, "request %d lost in shutdown", i);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "b0");
        e2e_resp_free(&r);
        e2e_conn_close(c[i]);
    }
    e2e_stop(t);
}
END_TEST

/* Signals ignored when lb-dataplane starts (nohup ignores SIGHUP, a shell's
 * background job SIGINT) still reach its loop, which reads them from a
 * signalfd (blocked signals are queued, not dropped): SIGTERM drains and
 * exits 0. */
START_TEST(signals_ignored_at_start_still_stop)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_IGN);
    struct e2e *t = e2e_start(1);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    ck_assert_ptr_nonnull(e2e_get(t, "/"));
    e2e_assert_signals_by_fd(e2e_lb_pid(t), sigs, sizeof(sigs) / sizeof(sigs[0]));
    int st;
    uint64_t start = e2e_now_ms();
    ck_assert_msg(e2e_lb_term(t, e2e_timeout_ms(), &st), "lb-dataplane did not exit after SIGTERM");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    ck_assert_msg(e2e_now_ms() - start < 3000, "the drain took %llu ms",
                  (unsigned long long)(e2e_now_ms() - start));
    e2e_stop(t);
}
END_TEST

/* The lowest descriptor number <pid> does not use: with RLIMIT_NOFILE at
 * this plus n, it can open exactly n more. */
static int lowest_free_fd(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    bool used[4096] = {false};
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd >= 0 && fd < 4096)
            used[fd] = true;
    }
    closedir(d);
    int fd = 0;
    while (fd < 4096 && used[fd])
        fd++;
    return fd;
}

/* user + system CPU of <pid>, in clock ticks */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    ck_assert_ptr_nonnull(p);
    long ut = 0, st = 0;
    /* after the name: state and 10 more fields, then utime and stime */
    ck_assert_int_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st),
                     2);
    return ut + st;
}

/* Out of file descriptors: a request that needs a new upstream connection
 * gets 503 without blaming the backend; accepting pauses (no spinning on a
 * listener that stays readable, no log flood) and resumes once connections
 * close. */
static void short_pool(Lb__V1__Snapshot *snap, void *arg)
{
    snap->timeouts->pool_idle_ms = 50;
}

/* True when lb holds no client, upstream or metrics connection: it counts
 * none open, and closed the metrics connection this asked on. */
static bool lb_holds_no_connection(void *arg)
{
    struct e2e *t = arg;
    struct e2e_conn *c = e2e_connect(e2e_metrics_port(t));
    if (c == NULL)
        return false;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct e2e_resp r = {0};
    bool idle = e2e_conn_send(c, req, sizeof req - 1) == 0 && e2e_conn_read(c, &r, false) == 0 &&
                r.status == 200 && e2e_metric(r.body, "lb_connections_open", NULL) == 0 &&
                !(e2e_metric(r.body, "lb_backend_connections", NULL) > 0) &&
                e2e_conn_is_closed(c, e2e_timeout_ms());
    e2e_resp_free(&r);
    e2e_conn_close(c);
    return idle;
}

START_TEST(out_of_descriptors_pauses_accepting)
{
    struct e2e_opts o = {.backends = 1, .workers = 1, .tweak = short_pool};
    struct e2e *t = e2e_start_opts(&o);
    pid_t pid = e2e_lb_pid(t);
    unsigned port = e2e_lb_port(t);
    struct rlimit rl;
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, NULL, &rl), 0);

    /* Room for one client and nothing else, no pooled upstream connection
     * left: its request gets 503 after its retries, and the backend is not
     * blamed for it. The descriptors counted must be lb's own: wait until it
     * holds no client connection (e2e_start's probe), no upstream one and no
     * metrics one. */
    /* A descriptor lb was just closing when the free ones were counted (a
     * gauge falls to 0 a moment before its close) leaves room for the
     * upstream connection too: then the count is taken again, 3 times at
     * most. */
    struct rlimit low = {.rlim_max = rl.rlim_max};
    int status = 0;
    for (int attempt = 0; attempt < 3 && status != 503; attempt++) {
        ck_assert_msg(e2e_wait_until(lb_holds_no_connection, t, e2e_timeout_ms()),
                      "lb still holds connections");
        low.rlim_cur = (rlim_t)lowest_free_fd(pid) + 1;
        ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &low, NULL), 0);
        struct e2e_conn *a = e2e_connect(port);
        ck_assert_ptr_nonnull(a);
        const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        ck_assert_int_eq(e2e_conn_send(a, get, strlen(get)), 0);
        struct e2e_resp ra;
        ck_assert_int_eq(e2e_conn_read(a, &ra, false), 0);
        status = ra.status;
        e2e_resp_free(&ra);
        e2e_conn_close(a);
        ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &rl, NULL), 0);
    }
    ck_assert_int_eq(status, 503);
    char *text = e2e_scrape(t);
    ck_assert(e2e_metric(text, "lb_backend_connect_failures_total", "backend=\"b0\"") == 0);
    free(text);

    unsigned paused = e2e_log_count(t, "lb.log", "\"accept_paused\"");
    low.rlim_cur = (rlim_t)lowest_free_fd(pid) + 4;
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &low, NULL), 0);

    enum {
        N = 32
    };
    int fds[N];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
    }
    /* accepting paused (its descriptors are gone), then a second of it */
    ck_assert_msg(e2e_wait_log(t, "lb.log", "\"accept_paused\"", paused + 1),
                  "lb did not pause accepting");
    long before = cpu_ticks(pid);
    e2e_sleep_ms(1000); /* under test: what lb does with a second of it */
    long used = cpu_ticks(pid) - before;
    long hz = sysconf(_SC_CLK_TCK);
    ck_assert_msg(used * 4 < hz, "lb used %ld of %ld ticks in a second with its descriptors gone",
                  used, hz);

    for (int i = 0; i < N; i++)
        close(fds[i]);
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &rl, NULL), 0);
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    bool served = false;
    while (!served && e2e_now_ms() < end) {
        struct e2e_resp r;
        if (e2e_request(port, "GET", "/", NULL, NULL, 0, &r) == 0) {
            served = r.status == 200;
            e2e_resp_free(&r);
        }
        if (!served)
            e2e_poll_pause(100); /* accepting resumes within a second */
    }
    ck_assert_msg(served, "no request served after the descriptors came back");
    text = e2e_scrape(t);
    ck_assert(e2e_metric(text, "lb_accept_pauses_total", "frontend=\"web\"") >= 1);
    free(text);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_failures");
    TCase *tc = e2e_tcase("backend_killed");
    tcase_add_test(tc, killed_backend_traffic_moves);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("all_down");
    tcase_add_test(tc, all_backends_down_fails_fast);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("upstream_timeout");
    tcase_add_test(tc, silent_backend_gets_504);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("graceful_shutdown");
    tcase_add_test(tc, sigterm_drains_in_flight);
    tcase_add_test(tc, signals_ignored_at_start_still_stop);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("out_of_descriptors");
    tcase_add_test(tc, out_of_descriptors_pauses_accepting);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
