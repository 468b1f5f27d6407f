/* tests/unit/controlplane/test_health.c: the rise/fall state machine, real
 * checks against tiny servers on 127.0.0.1 (200, 500, silent, refused) and
 * the core publishing health changes as new generations. */
#include "config.h"
#include "cp.h"
#include "health.h"
#include "lb.pb-c.h"
#include "lb_err.h"
#include "lb_log.h"
#include "store.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the state machine ------------------------------------------------------ */

START_TEST(fsm_one_fail_never_flips)
{
    struct health_fsm f;
    health_fsm_init(&f);
    ck_assert(!health_fsm_feed(&f, true, 2, 3));
    ck_assert(health_fsm_feed(&f, true, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert(!health_fsm_feed(&f, true, 2, 3));
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
}
END_TEST

START_TEST(fsm_fall_fails_go_down)
{
    struct health_fsm f;
    health_fsm_init(&f);
    ck_assert_int_eq(f.state, STORE_HEALTH_UNKNOWN);
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UNKNOWN);
    ck_assert(health_fsm_feed(&f, false, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_DOWN);
    ck_assert(!health_fsm_feed(&f, false, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_DOWN);
}
END_TEST

START_TEST(fsm_rise_passes_go_up)
{
    struct health_fsm f;
    health_fsm_init(&f);
    for (int i = 0; i < 3; i++)
        health_fsm_feed(&f, false, 2, 3);
    ck_assert_int_eq(f.state, STORE_HEALTH_DOWN);
    ck_assert(!health_fsm_feed(&f, true, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_DOWN);
    ck_assert(health_fsm_feed(&f, true, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
    /* rise 0 counts as 1 */
    health_fsm_init(&f);
    ck_assert(health_fsm_feed(&f, true, 0, 0));
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
}
END_TEST

START_TEST(fsm_flapping_never_flips)
{
    struct health_fsm f;
    health_fsm_init(&f);
    for (int i = 0; i < 100; i++)
        ck_assert(!health_fsm_feed(&f, i % 2 == 0, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UNKNOWN);
    health_fsm_feed(&f, true, 2, 3);
    health_fsm_feed(&f, true, 2, 3);
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
    for (int i = 0; i < 100; i++)
        ck_assert(!health_fsm_feed(&f, i % 2 == 1, 2, 3));
    ck_assert_int_eq(f.state, STORE_HEALTH_UP);
}
END_TEST

/* ---- tiny servers ---------------------------------------------------------------- */

enum srv_mode {
    SRV_200 = 0,
    SRV_500,
    SRV_SILENT, /* accepts, reads, never answers */
    SRV_FLAP,   /* 200, 500, 200, ... per connection */
    SRV_204,    /* 204 No Content */
};

struct srv {
    int lfd;
    unsigned port;
    enum srv_mode mode;
    pthread_t thread;
    atomic_bool stop;
    atomic_int accepted;
    int held[64]; /* silent connections kept open */
    int n_held;
    char first_req[512]; /* the first request received */
    char first_raw[512]; /* ... its bytes, NULs included */
    size_t first_len;
};

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int n = atomic_fetch_add(&s->accepted, 1);
        char req[512];
        size_t len = 0;
        /* Read the request head, at most 1 s. */
        for (int i = 0; i < 50 && len < sizeof(req) - 1; i++) {
            struct pollfd q = {.fd = fd, .events = POLLIN};
            if (poll(&q, 1, 20) <= 0)
                continue;
            ssize_t r = read(fd, req + len, sizeof(req) - 1 - len);
            if (r <= 0)
                break;
            len += (size_t)r;
            req[len] = '\0';
            if (strstr(req, "\r\n\r\n") != NULL)
                break;
        }
        req[len] = '\0';
        if (n == 0) {
            snprintf(s->first_req, sizeof(s->first_req), "%s", req);
            memcpy(s->first_raw, req, len);
            s->first_len = len;
        }
        bool ok = s->mode == SRV_200 || (s->mode == SRV_FLAP && n % 2 == 0);
        if (s->mode == SRV_SILENT && s->n_held < 64) {
            s->held[s->n_held++] = fd;
            continue;
        }
        const char *resp = ok ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                              : "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        if (s->mode == SRV_204)
            resp = "HTTP/1.1 204 No Content\r\n\r\n";
        ssize_t wr = write(fd, resp, strlen(resp)); /* a short write shows as a failed check */
        (void)wr;
        close(fd);
    }
    return NULL;
}

static int listen_any(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static struct srv *srv_start(enum srv_mode mode)
{
    struct srv *s = calloc(1, sizeof(*s));
    ck_assert_ptr_nonnull(s);
    s->mode = mode;
    s->lfd = listen_any(&s->port);
    ck_assert_int_eq(listen(s->lfd, 64), 0);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->n_held; i++)
        close(s->held[i]);
    close(s->lfd);
    free(s);
}

/* A port nothing listens on: bound (so nobody else takes it) but not listening. */
static int refused_port(unsigned *port)
{
    return listen_any(port);
}

/* ---- the checker against them ----------------------------------------------------- */

#define MAX_IDS 8

struct rec {
    const char *ids[MAX_IDS];
    int n_ids;
    int results[MAX_IDS];
    int changes[MAX_IDS];
    bool last_pass[MAX_IDS];
    char last_error[MAX_IDS][HEALTH_ERROR_MAX];
    enum store_health state[MAX_IDS];
    int64_t last_ms[MAX_IDS];
    int64_t max_gap_ms[MAX_IDS]; /* longest time between two results */
};

static void on_result(void *ctx, const struct health_result *r)
{
    struct rec *rec = ctx;
    for (int i = 0; i < rec->n_ids; i++) {
        if (strcmp(rec->ids[i], r->id) != 0)
            continue;
        if (rec->last_ms[i] && r->now_unix_ms - rec->last_ms[i] > rec->max_gap_ms[i])
            rec->max_gap_ms[i] = r->now_unix_ms - rec->last_ms[i];
        rec->last_ms[i] = r->now_unix_ms;
        rec->results[i]++;
        rec->changes[i] += r->changed;
        rec->last_pass[i] = r->pass;
        snprintf(rec->last_error[i], sizeof(rec->last_error[i]), "%s", r->error);
        rec->state[i] = r->state;
        ck_assert_int_eq(r->changed, r->old_state != r->state);
        return;
    }
    ck_abort_msg("result for unknown id %s", r->id);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* Runs <loop> until every recorded id has at least <n> results or <ms> pass. */
static void run_until(struct ev_loop *loop, struct rec *rec, int n, unsigned ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        bool all = true;
        for (int i = 0; i < rec->n_ids; i++)
            all = all && rec->results[i] >= n;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (all || el >= (long)ms)
            return;
        ev_timer dl;
        ev_timer_init(&dl, on_deadline, 0.05, 0.0);
        ev_timer_start(loop, &dl);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &dl);
    }
}

static struct health_settings fast = {
    .interval_ms = 200,
    .timeout_ms = 150,
    .rise = 2,
    .fall = 2,
    .type = CONFIG_HC_HTTP,
    .expected_status = 200,
    .path = "/healthz",
};

static struct ev_loop *loop;

static void loop_setup(void)
{
    lb_log_setup("test_health", open("/dev/null", O_WRONLY | O_CLOEXEC), LB_LOG_ERROR);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void loop_teardown(void)
{
    ev_loop_destroy(loop);
}

START_TEST(http_results_and_errors)
{
    struct srv *ok = srv_start(SRV_200), *bad = srv_start(SRV_500), *mute = srv_start(SRV_SILENT);
    unsigned rport = 0;
    int rfd = refused_port(&rport);
    struct rec rec = {.ids = {"ok", "bad", "mute", "refused"}, .n_ids = 4};
    struct health_target t[4] = {
        {.id = "ok", .addr = "127.0.0.1", .port = ok->port, .host_header = "svc.example:80"},
        {.id = "bad", .addr = "127.0.0.1", .port = bad->port, .host_header = "b:1"},
        {.id = "mute", .addr = "127.0.0.1", .port = mute->port, .host_header = "m:1"},
        {.id = "refused", .addr = "127.0.0.1", .port = rport, .host_header = "r:1"},
    };
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(health_sync(h, &fast, t, 4, NULL), LB_OK);
    ck_assert_int_eq(health_state(h, "ok"), STORE_HEALTH_UNKNOWN);
    run_until(loop, &rec, 3, 5000);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(rec.results[i] >= 3, "%s: %d results", rec.ids[i], rec.results[i]);

    ck_assert(rec.last_pass[0]);
    ck_assert_str_eq(rec.last_error[0], "");
    ck_assert_int_eq(rec.state[0], STORE_HEALTH_UP);
    ck_assert_int_eq(rec.changes[0], 1);
    ck_assert_str_eq(ok->first_req, "GET /healthz HTTP/1.1\r\nHost: svc.example:80\r\n"
                                    "User-Agent: lb-health\r\nConnection: close\r\n\r\n");

    ck_assert(!rec.last_pass[1]);
    ck_assert_str_eq(rec.last_error[1], "status 500");
    ck_assert_int_eq(rec.state[1], STORE_HEALTH_DOWN);

    ck_assert(!rec.last_pass[2]);
    ck_assert_str_eq(rec.last_error[2], "timeout after 150 ms");
    ck_assert_int_eq(rec.state[2], STORE_HEALTH_DOWN);
    /* Timeouts are bounded: checks keep coming every interval (+10 %),
     * the timeout never adds up. */
    ck_assert_int_le(rec.max_gap_ms[2], 200 * 11 / 10 + 100);

    ck_assert(!rec.last_pass[3]);
    ck_assert_str_eq(rec.last_error[3], "connect refused");
    ck_assert_int_eq(rec.state[3], STORE_HEALTH_DOWN);

    struct health_status st;
    ck_assert_int_eq(health_status_get(h, "refused", &st), LB_OK);
    ck_assert_int_eq(st.state, STORE_HEALTH_DOWN);
    ck_assert_str_eq(st.last_error, "connect refused");
    ck_assert_int_gt(st.last_check_unix_ms, 0);
    ck_assert_int_eq(health_status_get(h, "nope", &st), LB_ENOTFOUND);

    struct health_counts c;
    health_counts_get(h, &c);
    ck_assert_uint_eq(c.up, 1);
    ck_assert_uint_eq(c.down, 3);
    ck_assert_uint_eq(c.unknown, 0);
    ck_assert_uint_ge(c.passes, 3);
    ck_assert_uint_ge(c.fails, 9);
    ck_assert(!health_pool_all_down(h));

    /* Freed with checks in flight (the silent one): sockets closed, no leak. */
    health_free(h);
    srv_stop(ok);
    srv_stop(bad);
    srv_stop(mute);
    close(rfd);
}
END_TEST

/* A backend that wants PROXY headers gets one naming no client before each
 * HTTP check (v1 UNKNOWN, v2 LOCAL). */
START_TEST(proxy_header_first)
{
    struct srv *v1 = srv_start(SRV_200), *v2 = srv_start(SRV_200);
    struct rec rec = {.ids = {"v1", "v2"}, .n_ids = 2};
    struct health_target t[2] = {
        {.id = "v1", .addr = "127.0.0.1", .port = v1->port, .host_header = "a:1", .send_proxy = 1},
        {.id = "v2", .addr = "127.0.0.1", .port = v2->port, .host_header = "b:1", .send_proxy = 2},
    };
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(health_sync(h, &fast, t, 2, NULL), LB_OK);
    run_until(loop, &rec, 2, 5000);
    ck_assert(rec.last_pass[0] && rec.last_pass[1]);
    ck_assert_str_eq(v1->first_req, "PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\nHost: a:1\r\n"
                                    "User-Agent: lb-health\r\nConnection: close\r\n\r\n");
    static const char local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                                   0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};
    ck_assert_uint_gt(v2->first_len, 16);
    ck_assert(memcmp(v2->first_raw, local, 16) == 0);
    ck_assert(strncmp(v2->first_raw + 16, "GET /healthz HTTP/1.1\r\n", 23) == 0);
    health_free(h);
    srv_stop(v1);
    srv_stop(v2);
}
END_TEST

/* The lowest descriptor number this process does not use. */
static int lowest_free_fd(void)
{
    int fd = 0;
    while (fcntl(fd, F_GETFD) != -1)
        fd++;
    return fd;
}

/* Out of descriptors here: the checks are skipped, not failed, so a healthy
 * backend is not taken down; they resume when descriptors come back. */
START_TEST(local_shortage_skips_checks)
{
    struct srv *ok = srv_start(SRV_200);
    struct rec rec = {.ids = {"ok"}, .n_ids = 1};
    struct health_target t = {
        .id = "ok", .addr = "127.0.0.1", .port = ok->port, .host_header = "svc:80"};
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &fast, &t, 1, NULL), LB_OK);
    run_until(loop, &rec, 2, 5000);
    ck_assert_int_eq(rec.state[0], STORE_HEALTH_UP);

    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    struct rlimit none = {.rlim_cur = (rlim_t)lowest_free_fd(), .rlim_max = rl.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
    int before = rec.results[0];
    run_until(loop, &rec, before + 1, 1000); /* five intervals */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_int_eq(rec.results[0], before);
    ck_assert_int_eq(rec.state[0], STORE_HEALTH_UP);
    struct health_counts hc;
    health_counts_get(h, &hc);
    ck_assert_uint_ge(hc.skips, 2);
    ck_assert_uint_eq(hc.fails, 0);

    run_until(loop, &rec, before + 1, 5000);
    ck_assert_int_eq(rec.results[0], before + 1);
    ck_assert(rec.last_pass[0]);
    health_free(h);
    srv_stop(ok);
}
END_TEST

START_TEST(tcp_and_exact_status)
{
    struct srv *bad = srv_start(SRV_500), *mute = srv_start(SRV_SILENT);
    struct rec rec = {.ids = {"bad", "mute"}, .n_ids = 2};
    struct health_target t[2] = {
        {.id = "bad", .addr = "127.0.0.1", .port = bad->port, .host_header = "b:1"},
        /* an https backend gets a TCP check: connecting is enough */
        {.id = "mute",
         .addr = "127.0.0.1",
         .port = mute->port,
         .host_header = "m:1",
         .tcp_only = true},
    };
    struct health_settings s = fast;
    s.expected_status = 500;
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &s, t, 2, NULL), LB_OK);
    run_until(loop, &rec, 2, 5000);
    ck_assert(rec.last_pass[0]);
    ck_assert(rec.last_pass[1]);
    ck_assert_int_eq(rec.state[0], STORE_HEALTH_UP);
    ck_assert_int_eq(rec.state[1], STORE_HEALTH_UP);

    /* type tcp for every target */
    s.type = CONFIG_HC_TCP;
    s.expected_status = 200;
    t[1].tcp_only = false;
    ck_assert_int_eq(health_sync(h, &s, t, 2, NULL), LB_OK);
    int before = rec.results[0];
    run_until(loop, &rec, before + 2, 5000);
    ck_assert(rec.last_pass[0]); /* 500 does not matter to a TCP check */
    ck_assert(rec.last_pass[1]);
    health_free(h);
    srv_stop(bad);
    srv_stop(mute);
}
END_TEST

/* expectedStatus 0 (the default) passes any 2xx or 3xx; an explicit 200 is
 * an exact match, so a 204 fails it. */
START_TEST(default_status_any_2xx_explicit_exact)
{
    struct srv *s204 = srv_start(SRV_204);
    struct rec rec = {.ids = {"a"}, .n_ids = 1};
    struct health_target t = {
        .id = "a", .addr = "127.0.0.1", .port = s204->port, .host_header = "a:1"};
    struct health_settings s = fast;
    s.expected_status = 0;
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &s, &t, 1, NULL), LB_OK);
    run_until(loop, &rec, 2, 5000);
    ck_assert(rec.last_pass[0]);
    ck_assert_int_eq(rec.state[0], STORE_HEALTH_UP);

    s.expected_status = 200;
    ck_assert_int_eq(health_sync(h, &s, &t, 1, NULL), LB_OK);
    int before = rec.results[0];
    run_until(loop, &rec, before + 2, 5000);
    ck_assert(!rec.last_pass[0]);
    ck_assert_str_eq(rec.last_error[0], "status 204");
    health_free(h);
    srv_stop(s204);
}
END_TEST

START_TEST(flapping_server_keeps_state)
{
    struct srv *flap = srv_start(SRV_FLAP);
    struct rec rec = {.ids = {"flap"}, .n_ids = 1};
    struct health_target t = {
        .id = "flap", .addr = "127.0.0.1", .port = flap->port, .host_header = "f:1"};
    struct health_settings s = fast;
    s.interval_ms = 50;
    s.timeout_ms = 40;
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &s, &t, 1, NULL), LB_OK);
    run_until(loop, &rec, 10, 5000);
    ck_assert_int_ge(rec.results[0], 10);
    ck_assert_int_eq(rec.changes[0], 0);
    ck_assert_int_eq(health_state(h, "flap"), STORE_HEALTH_UNKNOWN);
    health_free(h);
    srv_stop(flap);
}
END_TEST

START_TEST(sync_adds_removes_disables)
{
    struct srv *ok = srv_start(SRV_200), *mute = srv_start(SRV_SILENT);
    struct rec rec = {.ids = {"ok", "mute"}, .n_ids = 2};
    struct health_target t[2] = {
        {.id = "mute", .addr = "127.0.0.1", .port = mute->port, .host_header = "m:1"},
        {.id = "ok", .addr = "127.0.0.1", .port = ok->port, .host_header = "o:1", .disabled = true},
    };
    struct health_settings s = fast;
    s.timeout_ms = 200;
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &s, t, 2, NULL), LB_OK);
    /* Wait until the silent server holds a check in flight, then drop it. */
    for (int i = 0; i < 100 && atomic_load(&mute->accepted) == 0; i++)
        run_until(loop, &rec, 1000, 20);
    ck_assert_int_ge(atomic_load(&mute->accepted), 1);
    ck_assert_int_eq(rec.results[1], 0);
    ck_assert_int_eq(atomic_load(&ok->accepted), 0); /* disabled: never checked */
    struct health_status st;
    ck_assert_int_eq(health_status_get(h, "ok", &st), LB_OK);
    ck_assert(st.disabled);

    /* "mute" removed with its check in flight; "ok" enabled. */
    t[1].disabled = false;
    ck_assert_int_eq(health_sync(h, &s, &t[1], 1, NULL), LB_OK);
    ck_assert_int_eq(health_status_get(h, "mute", &st), LB_ENOTFOUND);
    run_until(loop, &rec, 1000, 1000);
    ck_assert_int_eq(rec.results[1], 0); /* the cancelled check never reported */
    ck_assert_int_ge(rec.results[0], 2);
    ck_assert_int_eq(health_state(h, "ok"), STORE_HEALTH_UP);

    /* Invalid input changes nothing. */
    struct health_target badt = {.id = "x", .addr = "localhost", .port = 1, .host_header = "x:1"};
    struct lb_err e = {0};
    ck_assert_int_eq(health_sync(h, &s, &badt, 1, &e), LB_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "not an IP literal"));
    struct health_target dup[2] = {t[1], t[1]};
    ck_assert_int_eq(health_sync(h, &s, dup, 2, &e), LB_EINVAL);
    ck_assert_int_eq(health_state(h, "ok"), STORE_HEALTH_UP);

    /* A changed interval takes effect: 50 ms gives many results quickly. */
    int before = rec.results[0];
    s.interval_ms = 50;
    s.timeout_ms = 40;
    ck_assert_int_eq(health_sync(h, &s, &t[1], 1, NULL), LB_OK);
    ck_assert_int_eq(health_state(h, "ok"), STORE_HEALTH_UP); /* state kept */
    run_until(loop, &rec, before + 8, 1000);
    ck_assert_int_ge(rec.results[0], before + 8);
    health_free(h);
    srv_stop(ok);
    srv_stop(mute);
}
END_TEST

START_TEST(pool_all_down)
{
    unsigned p1 = 0, p2 = 0;
    int f1 = refused_port(&p1), f2 = refused_port(&p2);
    struct rec rec = {.ids = {"a", "b"}, .n_ids = 2};
    struct health_target t[2] = {
        {.id = "a", .addr = "127.0.0.1", .port = p1, .host_header = "a:1"},
        {.id = "b", .addr = "127.0.0.1", .port = p2, .host_header = "b:1"},
    };
    struct health *h = health_new(loop, on_result, &rec, NULL);
    ck_assert_int_eq(health_sync(h, &fast, t, 2, NULL), LB_OK);
    ck_assert(!health_pool_all_down(h));
    run_until(loop, &rec, 2, 5000);
    ck_assert(health_pool_all_down(h));
    struct health_counts c;
    health_counts_get(h, &c);
    ck_assert_uint_eq(c.down, 2);
    health_free(h);
    close(f1);
    close(f2);
}
END_TEST

/* ---- the core: changes persisted and published ------------------------------------ */

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static Lb__V1__Health snap_health(struct cp *cp, const char *id, uint64_t *version,
                                  uint64_t *generation)
{
    const uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    Lb__V1__Snapshot *s = lb__v1__snapshot__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(s);
    Lb__V1__Health h = LB__V1__HEALTH__HEALTH_UNKNOWN;
    bool found = false;
    for (size_t i = 0; i < s->n_backends; i++)
        if (strcmp(s->backends[i]->id, id) == 0) {
            h = s->backends[i]->health;
            found = true;
        }
    *version = s->config_version;
    *generation = s->generation;
    lb__v1__snapshot__free_unpacked(s, NULL);
    ck_assert_msg(found, "backend %s is not in the snapshot", id);
    return h;
}

START_TEST(core_publishes_changes)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-health-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    struct srv *ok = srv_start(SRV_200);
    unsigned rport = 0;
    int rfd = refused_port(&rport);
    char db[320], base[320], boot[320];
    snprintf(db, sizeof(db), "%s/lb.db", tmpdir);
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    snprintf(boot, sizeof(boot), "%s/config.yaml", tmpdir);
    FILE *f = fopen(boot, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "frontends:\n"
            "  - {name: web, address: 127.0.0.1, port: 8080}\n"
            "backends:\n"
            "  - {id: a, url: \"http://127.0.0.1:%u\"}\n"
            "  - {id: b, url: \"http://127.0.0.1:%u\"}\n"
            "healthcheck: {interval: 100ms, timeout: 80ms, rise: 2, fall: 2}\n",
            ok->port, rport);
    fclose(f);
    struct cp_config cc = {.db_path = db, .bootstrap = boot, .control_base = base};
    struct lb_err e = {0};
    struct cp *cp = cp_new(loop, &cc, &e);
    ck_assert_msg(cp != NULL, "%s", e.msg);
    uint64_t v0 = cp_active_version(cp), g0 = cp_generation(cp), v, g;
    ck_assert_int_eq(snap_health(cp, "b", &v, &g), LB__V1__HEALTH__HEALTH_UNKNOWN);

    struct health *h = cp_health(cp);
    for (int i = 0; i < 200 && (health_state(h, "a") != STORE_HEALTH_UP ||
                                health_state(h, "b") != STORE_HEALTH_DOWN);
         i++) {
        ev_timer dl;
        ev_timer_init(&dl, on_deadline, 0.02, 0.0);
        ev_timer_start(loop, &dl);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &dl);
    }
    ck_assert_int_eq(health_state(h, "a"), STORE_HEALTH_UP);
    ck_assert_int_eq(health_state(h, "b"), STORE_HEALTH_DOWN);
    ev_run(loop, EVRUN_NOWAIT); /* the coalescing publish */

    /* New generation, same version, both verdicts in the snapshot. */
    ck_assert_int_eq(snap_health(cp, "b", &v, &g), LB__V1__HEALTH__HEALTH_DOWN);
    ck_assert_int_eq(snap_health(cp, "a", &v, &g), LB__V1__HEALTH__HEALTH_UP);
    ck_assert_uint_eq(v, v0);
    ck_assert_uint_eq(cp_active_version(cp), v0);
    ck_assert_uint_gt(g, g0);
    ck_assert_uint_eq(cp_generation(cp), g);

    /* Stored and audited. */
    struct store_backend_health *sh = NULL;
    ck_assert_int_eq(store_health_get(cp__store(cp), "b", &sh, NULL), LB_OK);
    ck_assert_int_eq(sh->health, STORE_HEALTH_DOWN);
    ck_assert_str_eq(sh->last_error, "connect refused");
    store_health_free(sh);
    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 0, &as, &n, NULL), LB_OK);
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(as[i].who, "health") == 0 &&
            strcmp(as[i].detail, "backend b down: connect refused") == 0)
            seen = true;
    store_audit_free(as, n);
    ck_assert(seen);

    /* The API view comes from the checker: last check and last error. */
    ck_assert_int_eq(cp_health_get(cp, "b", &sh, NULL), LB_OK);
    ck_assert_int_eq(sh->health, STORE_HEALTH_DOWN);
    ck_assert_str_eq(sh->last_error, "connect refused");
    ck_assert_int_gt(sh->last_check_unix_ms, 0);
    store_health_free(sh);

    /* A config change re-syncs: a removed backend is no longer checked, a new
     * config version keeps the verdicts of the others. */
    struct cp_write w = {.author = "test"};
    ck_assert_int_eq(cp_backend_remove(cp, "b", &w, &v, &e), LB_OK);
    ck_assert_int_eq(cp_health_get(cp, "b", &sh, NULL), LB_ENOTFOUND);
    ck_assert_int_eq(snap_health(cp, "a", &v, &g), LB__V1__HEALTH__HEALTH_UP);
    ck_assert_uint_eq(v, v0 + 1);

    cp_free(cp);
    srv_stop(ok);
    close(rfd);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}
END_TEST

START_TEST(store_changes_in_one_transaction)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-health-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    char db[320];
    snprintf(db, sizeof(db), "%s/lb.db", tmpdir);
    struct store *st = store_open(db, NULL);
    ck_assert_ptr_nonnull(st);
    struct store_health_change c[2] = {
        {.id = "a",
         .health = STORE_HEALTH_DOWN,
         .last_error = "connect refused",
         .now_ms = 5,
         .detail = "backend a down: connect refused"},
        {.id = "b", .health = STORE_HEALTH_UP, .now_ms = 6, .detail = "backend b up"},
    };
    /* An injected failure on the last statement rolls the whole batch back. */
    store__fail_after(st, 4);
    ck_assert_int_eq(store_health_changes(st, c, 2, "health", NULL), LB_ESTORE);
    struct store_backend_health *h = NULL;
    ck_assert_int_eq(store_health_get(st, "a", &h, NULL), LB_ENOTFOUND);
    ck_assert_int_eq(store_health_changes(st, c, 2, "health", NULL), LB_OK);
    ck_assert_int_eq(store_health_get(st, "a", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_DOWN);
    ck_assert_str_eq(h->last_error, "connect refused");
    store_health_free(h);
    ck_assert_int_eq(store_health_get(st, "b", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_UP);
    ck_assert_str_eq(h->last_error, "");
    store_health_free(h);
    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(st, 0, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(as[0].who, "health");
    ck_assert_str_eq(as[0].action, "health");
    ck_assert_str_eq(as[0].detail, "backend b up");
    ck_assert_str_eq(as[1].detail, "backend a down: connect refused");
    store_audit_free(as, n);
    c[1].id = "";
    ck_assert_int_eq(store_health_changes(st, c, 2, "health", NULL), LB_EINVAL);
    store_close(st);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *fsm = tcase_create("fsm");
    tcase_add_test(fsm, fsm_one_fail_never_flips);
    tcase_add_test(fsm, fsm_fall_fails_go_down);
    tcase_add_test(fsm, fsm_rise_passes_go_up);
    tcase_add_test(fsm, fsm_flapping_never_flips);
    suite_add_tcase(s, fsm);
    TCase *checks = tcase_create("checks");
    tcase_add_checked_fixture(checks, loop_setup, loop_teardown);
    tcase_set_timeout(checks, 30);
    tcase_add_test(checks, http_results_and_errors);
    tcase_add_test(checks, proxy_header_first);
    tcase_add_test(checks, tcp_and_exact_status);
    tcase_add_test(checks, local_shortage_skips_checks);
    tcase_add_test(checks, default_status_any_2xx_explicit_exact);
    tcase_add_test(checks, flapping_server_keeps_state);
    tcase_add_test(checks, sync_adds_removes_disables);
    tcase_add_test(checks, pool_all_down);
    suite_add_tcase(s, checks);
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, loop_setup, loop_teardown);
    tcase_set_timeout(core, 30);
    tcase_add_test(core, core_publishes_changes);
    tcase_add_test(core, store_changes_in_one_transaction);
    suite_add_tcase(s, core);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(health_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
