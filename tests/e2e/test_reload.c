/* tests/e2e/test_reload.c: snapshot swaps under traffic (SIGHUP re-reads
 * --snapshot FILE through the same path the control plane's feed uses). */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

/* Extras for write_snapshot_ex(). */
struct snap_extra {
    unsigned down_mask; /* backends reported down by health checks */
    uint32_t slow_start_ms;
    bool weighted;
    bool fail_closed; /* healthcheck.fail_open off */
};

static void write_snapshot_ex(struct e2e *t, uint64_t gen, const unsigned *fe_ports, unsigned n_fe,
                              unsigned mask, const struct snap_extra *x);

/* Writes a snapshot of generation <gen> with frontends on <fe_ports> (n_fe of
 * them) and the world's backends whose bit is set in <mask>. */
static void write_snapshot(struct e2e *t, uint64_t gen, const unsigned *fe_ports, unsigned n_fe,
                           unsigned mask)
{
    struct snap_extra none = {0};
    write_snapshot_ex(t, gen, fe_ports, n_fe, mask, &none);
}

static void write_snapshot_ex(struct e2e *t, uint64_t gen, const unsigned *fe_ports, unsigned n_fe,
                              unsigned mask, const struct snap_extra *x)
{
    Lb__V1__Snapshot s = LB__V1__SNAPSHOT__INIT;
    Lb__V1__Frontend fe[4];
    Lb__V1__Frontend *fep[4];
    char names[4][16];
    for (unsigned i = 0; i < n_fe; i++) {
        lb__v1__frontend__init(&fe[i]);
        snprintf(names[i], sizeof(names[i]), "fe%u", fe_ports[i]);
        fe[i].name = names[i];
        fe[i].bind_address = "127.0.0.1";
        fe[i].port = fe_ports[i];
        fep[i] = &fe[i];
    }
    Lb__V1__Backend be[8];
    Lb__V1__Backend *bep[8];
    char ids[8][8];
    size_t nb = 0;
    for (unsigned i = 0; i < 8; i++) {
        if (!(mask & (1u << i)))
            continue;
        lb__v1__backend__init(&be[nb]);
        snprintf(ids[nb], sizeof(ids[nb]), "b%u", i);
        be[nb].id = ids[nb];
        be[nb].host = "127.0.0.1";
        be[nb].port = e2e_backend_port(t, i);
        be[nb].weight = 1;
        if (x->down_mask & (1u << i))
            be[nb].health = LB__V1__HEALTH__HEALTH_DOWN;
        bep[nb] = &be[nb];
        nb++;
    }
    Lb__V1__Metrics m = LB__V1__METRICS__INIT;
    m.enabled = true;
    m.bind_address = "127.0.0.1";
    m.port = e2e_metrics_port(t);
    Lb__V1__Timeouts to = LB__V1__TIMEOUTS__INIT;
    to.drain_ms = 5000;
    Lb__V1__Balancing bal = LB__V1__BALANCING__INIT;
    bal.algorithm =
        x->weighted ? LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN : LB__V1__ALGORITHM__ROUND_ROBIN;
    bal.slow_start_ms = x->slow_start_ms;
    s.balancing = &bal;
    Lb__V1__HealthCheck hc = LB__V1__HEALTH_CHECK__INIT;
    hc.fail_open = !x->fail_closed;
    s.healthcheck = &hc;
    s.config_version = gen;
    s.generation = gen;
    s.n_frontends = n_fe;
    s.frontends = fep;
    s.n_backends = nb;
    s.backends = bep;
    s.metrics = &m;
    s.timeouts = &to;

    char path[512];
    e2e_path(t, "snapshot.pb", path, sizeof(path));
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    size_t len = lb__v1__snapshot__get_packed_size(&s);
    uint8_t *buf = malloc(len);
    lb__v1__snapshot__pack(&s, buf);
    FILE *f = fopen(tmp, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
    free(buf);
    ck_assert_int_eq(rename(tmp, path), 0);
}

static double generation(struct e2e *t)
{
    char *text = e2e_scrape(t);
    double g = text ? e2e_metric(text, "lb_snapshot_generation", NULL) : NAN;
    free(text);
    return g;
}

/* Sends SIGHUP and waits until the data plane serves generation <gen>. */
static void reload_to(struct e2e *t, uint64_t gen)
{
    ck_assert_int_eq(kill(e2e_lb_pid(t), SIGHUP), 0);
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < end) {
        if (generation(t) == (double)gen)
            return;
        e2e_poll_pause(20);
    }
    ck_abort_msg("the data plane did not reach generation %llu", (unsigned long long)gen);
}

static const char *get_on(struct e2e_conn *c, struct e2e_resp *r, const char *path)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    ck_assert_int_eq(e2e_conn_send(c, req, (size_t)n), 0);
    ck_assert_int_eq(e2e_conn_read(c, r, false), 0);
    ck_assert_int_eq(r->status, 200);
    return r->body;
}

START_TEST(swap_moves_new_requests_and_finishes_old_ones)
{
    struct e2e *t = e2e_start(3);
    unsigned port = e2e_lb_port(t);

    /* an idle keep-alive connection, and a request in flight on b0..b2 */
    struct e2e_conn *idle = e2e_connect(port);
    ck_assert_ptr_nonnull(idle);
    struct e2e_resp r;
    get_on(idle, &r, "/");
    e2e_resp_free(&r);
    long before[3];
    for (unsigned i = 0; i < 3; i++)
        before[i] = e2e_backend_stat(t, i, "requests");
    struct e2e_conn *slow = e2e_connect(port);
    ck_assert_ptr_nonnull(slow);
    const char *slow_req = "GET /slow/1500 HTTP/1.1\r\nHost: t\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(slow, slow_req, strlen(slow_req)), 0);
    /* wait until a backend holds it (each /stats poll counts itself) */
    int holder = -1;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (holder < 0 && e2e_now_ms() < deadline) {
        for (unsigned i = 0; i < 3 && holder < 0; i++)
            if (e2e_backend_stat(t, i, "requests") > ++before[i])
                holder = (int)i;
        if (holder < 0)
            e2e_poll_pause(10);
    }
    ck_assert_msg(holder >= 0, "the slow request reached no backend");

    /* only b2 remains */
    write_snapshot(t, 2, &port, 1, 1u << 2);
    reload_to(t, 2);

    for (int i = 0; i < 6; i++) {
        ck_assert_str_eq(get_on(idle, &r, "/"), "b2");
        e2e_resp_free(&r);
    }
    for (int i = 0; i < 6; i++)
        ck_assert_str_eq(e2e_get(t, "/"), "b2");

    /* the request that started on the old snapshot finishes on it, on the
     * backend that held it */
    ck_assert_int_eq(e2e_conn_read(slow, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    char held[8];
    snprintf(held, sizeof(held), "b%d", holder);
    ck_assert_str_eq(r.body, held);
    e2e_resp_free(&r);

    /* and back: b0 returns with fresh runtime state */
    write_snapshot(t, 3, &port, 1, 1u << 0 | 1u << 2);
    reload_to(t, 3);
    int seen[3] = {0};
    for (int i = 0; i < 10; i++) {
        const char *b = get_on(idle, &r, "/");
        ck_assert(b[0] == 'b' && b[1] >= '0' && b[1] <= '2');
        seen[b[1] - '0']++;
        e2e_resp_free(&r);
    }
    ck_assert_int_eq(seen[0], 5);
    ck_assert_int_eq(seen[1], 0);
    ck_assert_int_eq(seen[2], 5);
    e2e_conn_close(idle);
    e2e_conn_close(slow);
    e2e_stop(t);
}
END_TEST

START_TEST(invalid_snapshot_keeps_the_old_one)
{
    struct e2e *t = e2e_start(2);
    char path[512];
    e2e_path(t, "snapshot.pb", path, sizeof(path));
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("\xff\xff\xff\xff garbage", f);
    fclose(f);
    unsigned rejected = e2e_log_count(t, "lb.log", "\"snapshot_rejected\"");
    ck_assert_int_eq(kill(e2e_lb_pid(t), SIGHUP), 0);
    ck_assert_msg(e2e_wait_log(t, "lb.log", "\"snapshot_rejected\"", rejected + 1),
                  "the data plane did not refuse the snapshot");
    ck_assert(generation(t) == 1.0);
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_nonnull(e2e_get(t, "/"));

    /* a valid one after the refused one applies */
    unsigned port[1] = {e2e_lb_port(t)};
    write_snapshot(t, 2, port, 1, 0x3);
    reload_to(t, 2);
    e2e_stop(t);
}
END_TEST

START_TEST(frontends_open_and_close_without_touching_the_others)
{
    struct e2e *t = e2e_start(2);
    unsigned p1 = e2e_lb_port(t);
    unsigned p2 = e2e_free_port();
    ck_assert_uint_ne(p2, 0);

    struct e2e_conn *on_p1 = e2e_connect(p1);
    struct e2e_resp r;
    get_on(on_p1, &r, "/");
    e2e_resp_free(&r);

    unsigned both[2] = {p1, p2};
    write_snapshot(t, 2, both, 2, 0x3);
    reload_to(t, 2);
    ck_assert_int_eq(e2e_request(p2, "GET", "/", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* the existing connection on p1 was not disturbed */
    get_on(on_p1, &r, "/");
    e2e_resp_free(&r);

    unsigned only_p2[1] = {p2};
    write_snapshot(t, 3, only_p2, 1, 0x3);
    reload_to(t, 3);
    /* p1's idle keep-alive connection is closed, and p1 takes no new ones */
    ck_assert(e2e_conn_is_closed(on_p1, e2e_timeout_ms()));
    e2e_conn_close(on_p1);
    struct e2e_conn *again = e2e_connect(p1);
    bool refused = again == NULL || e2e_conn_is_closed(again, 1000);
    e2e_conn_close(again);
    ck_assert(refused);
    ck_assert_int_eq(e2e_request(p2, "GET", "/", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

/* b1 comes back from down: its share ramps over the slow-start time. */
START_TEST(slow_start_ramps_a_returning_backend)
{
    struct e2e *t = e2e_start(2);
    unsigned port = e2e_lb_port(t);
    struct snap_extra x = {.down_mask = 1u << 1, .slow_start_ms = 3000, .weighted = true};
    write_snapshot_ex(t, 2, &port, 1, 0x3, &x);
    reload_to(t, 2);
    struct e2e_conn *c = e2e_connect(port);
    struct e2e_resp r;
    for (int i = 0; i < 10; i++) {
        ck_assert_str_eq(get_on(c, &r, "/"), "b0");
        e2e_resp_free(&r);
    }
    x.down_mask = 0;
    write_snapshot_ex(t, 3, &port, 1, 0x3, &x);
    reload_to(t, 3);
    int early = 0;
    for (int i = 0; i < 40; i++) {
        early += strcmp(get_on(c, &r, "/"), "b1") == 0;
        e2e_resp_free(&r);
    }
    e2e_sleep_ms(3100); /* under test: the ramp takes slow_start_ms (3000) */
    int late = 0;
    for (int i = 0; i < 40; i++) {
        late += strcmp(get_on(c, &r, "/"), "b1") == 0;
        e2e_resp_free(&r);
    }
    /* about 10 % of full weight at first, half the traffic once ramped */
    ck_assert_msg(early >= 1 && early <= 12, "b1 took %d of the first 40", early);
    ck_assert_msg(late == 20, "b1 took %d of 40 after the ramp", late);
    e2e_conn_close(c);
    e2e_stop(t);
}
END_TEST

/* Every backend down: the pool fails open by default. */
START_TEST(all_down_fails_open)
{
    struct e2e *t = e2e_start(2);
    unsigned port = e2e_lb_port(t);
    struct snap_extra x = {.down_mask = 0x3};
    write_snapshot_ex(t, 2, &port, 1, 0x3, &x);
    reload_to(t, 2);
    for (int i = 0; i < 6; i++)
        ck_assert_ptr_nonnull(e2e_get(t, "/"));
    char *text = e2e_scrape(t);
    ck_assert(e2e_metric(text, "lb_pool_all_down", NULL) == 1);
    ck_assert(e2e_metric(text, "lb_pool_fail_open", NULL) == 1);
    free(text);

    x.fail_closed = true;
    write_snapshot_ex(t, 3, &port, 1, 0x3, &x);
    reload_to(t, 3);
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(port, "GET", "/", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 503);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_reload");
    TCase *tc = e2e_tcase("swap");
    tcase_add_test(tc, swap_moves_new_requests_and_finishes_old_ones);
    tcase_add_test(tc, invalid_snapshot_keeps_the_old_one);
    tcase_add_test(tc, frontends_open_and_close_without_touching_the_others);
    tcase_add_test(tc, slow_start_ramps_a_returning_backend);
    tcase_add_test(tc, all_down_fails_open);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
