/* tests/e2e/test_resilience.c: circuit breaker, retries and their budget,
 * against real lb-dataplane processes and a misbehaving backend run here. */
#include <check.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e.h"

/* ---- a backend that does what the test says -------------------------------- */

enum bad_mode {
    BAD_500 = 0, /* answers 500 */
    BAD_200,     /* answers 200 "bad" */
    BAD_CLOSE,   /* reads the request, closes without a word */
};

struct bad_backend {
    int fd;
    unsigned port;
    pthread_t thread;
    atomic_int mode;
    atomic_int requests; /* requests read */
    atomic_bool stop;
};

static bool read_head(int fd)
{
    char buf[8192];
    size_t len = 0;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        if (memmem(buf, len, "\r\n\r\n", 4) != NULL)
            return true;
    }
    return false;
}

static void *bad_main(void *arg)
{
    struct bad_backend *b = arg;
    while (!atomic_load(&b->stop)) {
        int c = accept(b->fd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (read_head(c)) {
            atomic_fetch_add(&b->requests, 1);
            const char *r = NULL;
            switch (atomic_load(&b->mode)) {
            case BAD_500:
                r = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n"
                    "Connection: close\r\n\r\nfail";
                break;
            case BAD_200:
                r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";
                break;
            default:
                break;
            }
            if (r != NULL && write(c, r, strlen(r)) < 0)
                r = NULL;
        }
        close(c);
    }
    return NULL;
}

static void bad_start(struct bad_backend *b, enum bad_mode mode)
{
    memset(b, 0, sizeof(*b));
    b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(b->fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(b->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(b->fd, (struct sockaddr *)&sa, &sl);
    b->port = ntohs(sa.sin_port);
    ck_assert_int_eq(listen(b->fd, 64), 0);
    struct timeval tv = {.tv_usec = 200000}; /* accept wakes up to see <stop> */
    setsockopt(b->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    atomic_store(&b->mode, mode);
    ck_assert_int_eq(pthread_create(&b->thread, NULL, bad_main, b), 0);
}

static void bad_stop(struct bad_backend *b)
{
    atomic_store(&b->stop, true);
    pthread_join(b->thread, NULL);
    close(b->fd);
}

/* ---- worlds ------------------------------------------------------------------ */

struct setup {
    unsigned bad_port; /* backend b0 is redirected here */
    bool breaker;      /* circuit breaker on, threshold 3, open 400 ms */
    bool no_retries;
    Lb__V1__CircuitBreaker cb;
};

static void tweak(Lb__V1__Snapshot *snap, void *arg)
{
    struct setup *s = arg;
    if (s->bad_port != 0)
        snap->backends[0]->port = s->bad_port;
    if (s->breaker) {
        lb__v1__circuit_breaker__init(&s->cb);
        s->cb.enabled = true;
        s->cb.threshold = 3;
        s->cb.timeout_ms = 400;
        s->cb.max_half_open = 1;
        s->cb.max_timeout_ms = 800;
        snap->circuit_breaker = &s->cb;
    }
    snap->retries->disabled = s->no_retries;
}

static double metric(struct e2e *t, const char *name, const char *labels)
{
    char *text = e2e_scrape(t);
    double v = text ? e2e_metric(text, name, labels) : NAN;
    free(text);
    return v;
}

static int get_status(struct e2e *t, const char *method, const char *path, char *body,
                      size_t bodysz)
{
    struct e2e_resp r;
    const char *payload = strcmp(method, "POST") == 0 ? "data" : NULL;
    int rc = e2e_request(e2e_lb_port(t), method, path, NULL, payload, payload ? 4 : 0, &r);
    if (rc != 0)
        return -1;
    int status = r.status;
    if (body != NULL)
        snprintf(body, bodysz, "%s", r.body ? r.body : "");
    e2e_resp_free(&r);
    return status;
}

/* lb's clock and ours tick apart: a lower bound on a duration it measured,
 * seen from here, may come out this much short. */
#define CLOCK_SLACK_MS 20

/* Waits until the breaker of b0 reports <state> (2: half-open). */
static void wait_breaker(struct e2e *t, double state)
{
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < end) {
        if (metric(t, "lb_breaker_state", "backend=\"b0\"") == state)
            return;
        e2e_poll_pause(20);
    }
    ck_abort_msg("breaker of b0 never reached state %.0f", state);
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(breaker_opens_half_opens_and_recovers)
{
    struct bad_backend bad;
    bad_start(&bad, BAD_500);
    struct setup s = {.bad_port = bad.port, .breaker = true};
    struct e2e_opts o = {.backends = 2, .workers = 1, .tweak = tweak, .tweak_arg = &s};
    struct e2e *t = e2e_start_opts(&o);

    /* round robin: every other request meets the failing backend until its
     * breaker opens after 3 consecutive 500s */
    int failures = 0;
    uint64_t opening = e2e_now_ms();
    for (int i = 0; i < 12; i++)
        failures += get_status(t, "GET", "/", NULL, 0) == 500;
    ck_assert_int_eq(failures, 3);
    ck_assert(metric(t, "lb_breaker_state", "backend=\"b0\"") == 1);
    ck_assert(metric(t, "lb_breaker_transitions_total", "backend=\"b0\",to=\"open\"") == 1);
    int seen = atomic_load(&bad.requests);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 200);
    ck_assert_int_eq(atomic_load(&bad.requests), seen); /* skipped while open */

    /* half-open after 400 ms: one trial, which fails: open again, longer */
    wait_breaker(t, 2);
    ck_assert_uint_ge(e2e_now_ms() - opening, 400 - CLOCK_SLACK_MS);
    failures = 0;
    uint64_t reopening = e2e_now_ms();
    for (int i = 0; i < 6; i++)
        failures += get_status(t, "GET", "/", NULL, 0) == 500;
    ck_assert_int_eq(failures, 1);
    ck_assert(metric(t, "lb_breaker_state", "backend=\"b0\"") == 1);
    ck_assert(metric(t, "lb_breaker_transitions_total", "backend=\"b0\",to=\"open\"") == 2);

    /* the backend heals: the next trial closes the breaker */
    atomic_store(&bad.mode, BAD_200);
    wait_breaker(t, 2);
    ck_assert_uint_ge(e2e_now_ms() - reopening, 800 - CLOCK_SLACK_MS);
    char body[64];
    int from_bad = 0;
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(get_status(t, "GET", "/", body, sizeof(body)), 200);
        from_bad += strcmp(body, "bad") == 0;
    }
    wait_breaker(t, 0);
    ck_assert_int_ge(from_bad, 4);
    ck_assert(metric(t, "lb_breaker_transitions_total", "backend=\"b0\",to=\"closed\"") == 1);
    e2e_stop(t);
    bad_stop(&bad);
}
END_TEST

START_TEST(all_breakers_open_answers_503_at_once)
{
    struct bad_backend bad;
    bad_start(&bad, BAD_500);
    struct setup s = {.bad_port = bad.port, .breaker = true};
    struct e2e_opts o = {.backends = 1, .workers = 1, .tweak = tweak, .tweak_arg = &s};
    struct e2e *t = e2e_start_opts(&o);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 500);
    int seen = atomic_load(&bad.requests);
    ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 503);
    ck_assert_int_eq(atomic_load(&bad.requests), seen);
    ck_assert(metric(t, "lb_requests_rejected_total", "reason=\"no_backend\"") >= 1);
    e2e_stop(t);
    bad_stop(&bad);
}
END_TEST

START_TEST(get_retried_post_not_replayed)
{
    struct bad_backend bad;
    bad_start(&bad, BAD_CLOSE);
    struct setup s = {.bad_port = bad.port};
    struct e2e_opts o = {.backends = 3, .workers = 1, .tweak = tweak, .tweak_arg = &s};
    struct e2e *t = e2e_start_opts(&o);

    /* GET: the backend that closes without answering is retried elsewhere */
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 200);
    int hits = atomic_load(&bad.requests);
    ck_assert_int_ge(hits, 5);
    ck_assert(metric(t, "lb_retries_total", "backend=\"b0\",reason=\"reset\"") == hits);

    /* POST: sent once, never replayed: the client gets the 502 */
    int before = atomic_load(&bad.requests);
    int failed = 0;
    for (int i = 0; i < 30; i++) {
        int st = get_status(t, "POST", "/echo", NULL, 0);
        ck_assert(st == 200 || st == 502);
        failed += st == 502;
    }
    ck_assert_int_ge(failed, 5);
    ck_assert_int_eq(atomic_load(&bad.requests) - before, failed);
    ck_assert(metric(t, "lb_retries_total", "backend=\"b0\",reason=\"reset\"") == hits);
    e2e_stop(t);
    bad_stop(&bad);
}
END_TEST

START_TEST(killed_backend_costs_get_clients_nothing)
{
    struct e2e_opts o = {.backends = 3, .workers = 2};
    struct e2e *t = e2e_start_opts(&o);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 200);
    e2e_kill_backend(t, 1);
    for (int i = 0; i < 60; i++)
        ck_assert_int_eq(get_status(t, "GET", "/", NULL, 0), 200);
    ck_assert(metric(t, "lb_retries_total", "backend=\"b1\",reason=\"connect\"") >= 1);
    e2e_stop(t);
}
END_TEST

START_TEST(retries_off_means_one_connect_retry_only)
{
    struct bad_backend bad;
    bad_start(&bad, BAD_CLOSE);
    struct setup s = {.bad_port = bad.port, .no_retries = true};
    struct e2e_opts o = {.backends = 2, .workers = 1, .tweak = tweak, .tweak_arg = &s};
    struct e2e *t = e2e_start_opts(&o);
    int failed = 0;
    for (int i = 0; i < 10; i++)
        failed += get_status(t, "GET", "/", NULL, 0) == 502;
    ck_assert_int_eq(failed, 5);
    e2e_stop(t);
    bad_stop(&bad);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_resilience");
    TCase *b = e2e_tcase("breaker");
    tcase_add_test(b, breaker_opens_half_opens_and_recovers);
    tcase_add_test(b, all_breakers_open_answers_503_at_once);
    suite_add_tcase(s, b);
    TCase *r = e2e_tcase("retries");
    tcase_add_test(r, get_retried_post_not_replayed);
    tcase_add_test(r, killed_backend_costs_get_clients_nothing);
    tcase_add_test(r, retries_off_means_one_connect_retry_only);
    suite_add_tcase(s, r);
    return e2e_run(s);
}
