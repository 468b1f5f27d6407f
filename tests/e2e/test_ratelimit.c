/* tests/e2e/test_ratelimit.c: rate limits held by the data plane as a whole
 * (2 workers), 429 answers and their headers, and the bounded client table. */
#include <arpa/inet.h>
#include <check.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e.h"

struct rl_setup {
    Lb__V1__RateLimitAlgorithm algorithm;
    uint32_t rate, burst, max_keys;
    bool global;
    Lb__V1__RateLimit rl;
};

static void tweak(Lb__V1__Snapshot *snap, void *arg)
{
    struct rl_setup *s = arg;
    lb__v1__rate_limit__init(&s->rl);
    s->rl.enabled = true;
    s->rl.rate = s->rate;
    s->rl.burst = s->burst;
    s->rl.algorithm = s->algorithm;
    s->rl.per_client = !s->global;
    s->rl.global = s->global;
    s->rl.max_keys = s->max_keys;
    s->rl.headers_on_allowed = true;
    snap->ratelimit = &s->rl;
    snap->logging->access_log_off = true;
}

static struct e2e *start(struct rl_setup *s)
{
    struct e2e_opts o = {.backends = 2, .workers = 2, .tweak = tweak, .tweak_arg = s};
    return e2e_start_opts(&o);
}

static double metric(struct e2e *t, const char *name, const char *labels)
{
    char *text = e2e_scrape(t);
    double v = text ? e2e_metric(text, name, labels) : NAN;
    free(text);
    return v;
}

/* ---- saturating load: threads with keep-alive connections ------------------ */

struct load {
    unsigned port;
    uint64_t until_ms;
    atomic_int ok;
    atomic_int limited;
    atomic_int other;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    struct e2e_conn *c = NULL;
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    while (e2e_now_ms() < l->until_ms) {
        if (c == NULL && (c = e2e_connect(l->port)) == NULL)
            continue;
        struct e2e_resp r;
        if (e2e_conn_send(c, req, strlen(req)) != 0 || e2e_conn_read(c, &r, false) != 0) {
            e2e_conn_close(c);
            c = NULL;
            continue;
        }
        if (r.status == 200)
            atomic_fetch_add(&l->ok, 1);
        else if (r.status == 429)
            atomic_fetch_add(&l->limited, 1);
        else
            atomic_fetch_add(&l->other, 1);
        if (r.closed) {
            e2e_conn_close(c);
            c = NULL;
        }
        e2e_resp_free(&r);
    }
    e2e_conn_close(c);
    return NULL;
}

/* 10 s of saturating load on 4 connections; returns the requests allowed. */
static int saturate(struct e2e *t, int *limited)
{
    struct load l = {.port = e2e_lb_port(t)};
    l.until_ms = e2e_now_ms() + 10000;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, load_main, &l), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&l.other), 0);
    *limited = atomic_load(&l.limited);
    return atomic_load(&l.ok);
}

START_TEST(token_bucket_holds_across_workers)
{
    struct rl_setup s = {
        .algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET, .rate = 100, .burst = 50};
    struct e2e *t = start(&s);
    int limited = 0;
    int ok = saturate(t, &limited);
    /* burst + rate * 10 s = 1,050, within 2 % */
    ck_assert_msg(ok >= 1029 && ok <= 1071, "token bucket allowed %d (limited %d)", ok, limited);
    ck_assert_int_gt(limited, 1000);
    ck_assert(metric(t, "lb_ratelimit_requests_total", "scope=\"client\",result=\"allowed\"") ==
              ok);
    e2e_stop(t);
}
END_TEST

START_TEST(sliding_window_holds_across_workers)
{
    struct rl_setup s = {.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW,
                         .rate = 100,
                         .burst = 50,
                         .global = true};
    struct e2e *t = start(&s);
    int limited = 0;
    int ok = saturate(t, &limited);
    ck_assert_msg(ok >= 980 && ok <= 1020, "sliding window allowed %d (limited %d)", ok, limited);
    ck_assert(metric(t, "lb_ratelimit_requests_total", "scope=\"global\",result=\"limited\"") ==
              limited);
    e2e_stop(t);
}
END_TEST

START_TEST(refused_requests_get_429_and_headers)
{
    struct rl_setup s = {
        .algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET, .rate = 1, .burst = 1};
    struct e2e *t = start(&s);
    long before = e2e_backend_stat(t, 0, "requests") + e2e_backend_stat(t, 1, "requests");
    struct e2e_conn *c = e2e_connect(e2e_lb_port(t));
    ck_assert_ptr_nonnull(c);
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    struct e2e_resp r;
    char v[64];

    ck_assert_int_eq(e2e_conn_send(c, req, strlen(req)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert(e2e_resp_header(&r, "RateLimit-Limit", v, sizeof(v)));
    ck_assert_str_eq(v, "1");
    ck_assert(e2e_resp_header(&r, "RateLimit-Remaining", v, sizeof(v)));
    ck_assert_str_eq(v, "0");
    ck_assert(!e2e_resp_header(&r, "Retry-After", v, sizeof(v)));
    e2e_resp_free(&r);

    /* refused on the same connection, which stays open */
    ck_assert_int_eq(e2e_conn_send(c, req, strlen(req)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 429);
    ck_assert(!r.closed);
    ck_assert(e2e_resp_header(&r, "Retry-After", v, sizeof(v)));
    ck_assert_int_ge(atoi(v), 1);
    ck_assert(e2e_resp_header(&r, "RateLimit-Limit", v, sizeof(v)));
    ck_assert_str_eq(v, "1");
    ck_assert(e2e_resp_header(&r, "RateLimit-Remaining", v, sizeof(v)));
    ck_assert_str_eq(v, "0");
    ck_assert(e2e_resp_header(&r, "RateLimit-Reset", v, sizeof(v)));
    ck_assert_int_ge(atoi(v), 1);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_send(c, req, strlen(req)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 429);
    e2e_resp_free(&r);
    e2e_conn_close(c);

    /* a refused request never reached a backend (the two /stats add 2) */
    long after = e2e_backend_stat(t, 0, "requests") + e2e_backend_stat(t, 1, "requests");
    ck_assert_int_eq(after - before, 1 + 2);
    ck_assert(metric(t, "lb_requests_rejected_total", "reason=\"rate_limited\"") == 2);
    e2e_stop(t);
}
END_TEST

/* One GET from 127.<i> source addresses, each its own client key. */
static int get_from(unsigned port, uint32_t src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(src)};
    struct sockaddr_in da = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int status = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        connect(fd, (struct sockaddr *)&da, sizeof(da)) == 0) {
        const char *req = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        char buf[512];
        if (write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            if (n > 12) {
                buf[n] = '\0';
                status = atoi(buf + 9);
            }
        }
    }
    close(fd);
    return status;
}

START_TEST(client_table_stays_within_its_bound)
{
    struct rl_setup s = {.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET,
                         .rate = 10,
                         .burst = 10,
                         .max_keys = 1000};
    struct e2e *t = start(&s);
    unsigned port = e2e_lb_port(t);
    for (uint32_t i = 0; i < 10000; i++) {
        uint32_t src = (127u << 24) | (1u << 16) | (i + 1); /* 127.1.x.y */
        ck_assert_int_eq(get_from(port, src), 200);
        if (i % 2000 == 1999) {
            double keys = metric(t, "lb_ratelimit_keys", NULL);
            ck_assert_msg(keys <= 1000, "%.0f keys after %u clients", keys, i + 1);
        }
    }
    ck_assert(metric(t, "lb_ratelimit_keys", NULL) <= 1000);
    ck_assert(metric(t, "lb_ratelimit_evictions_total", NULL) >= 9000);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_ratelimit");
    TCase *acc = e2e_tcase("accuracy");
    tcase_set_timeout(acc, 120);
    tcase_add_test(acc, token_bucket_holds_across_workers);
    tcase_add_test(acc, sliding_window_holds_across_workers);
    suite_add_tcase(s, acc);
    TCase *ans = e2e_tcase("answers");
    tcase_set_timeout(ans, 300);
    tcase_add_test(ans, refused_requests_get_429_and_headers);
    tcase_add_test(ans, client_table_stays_within_its_bound);
    suite_add_tcase(s, ans);
    return e2e_run(s);
}
