/* tests/unit/dataplane/test_snapshot.c */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb.pb-c.h"
#include "lb_err.h"
#include "snapshot.h"

/* A valid two-frontend, three-backend snapshot that a test then breaks. */
struct sfix {
    Lb__V1__Snapshot snap;
    Lb__V1__Frontend fe[2];
    Lb__V1__Frontend *fep[2];
    Lb__V1__Backend be[3];
    Lb__V1__Backend *bep[3];
    Lb__V1__Limits limits;
    Lb__V1__Metrics metrics;
    Lb__V1__Balancing balancing;
    Lb__V1__Timeouts timeouts;
    Lb__V1__Tls tls;
};

static void sfix_init(struct sfix *f)
{
    memset(f, 0, sizeof(*f));
    lb__v1__snapshot__init(&f->snap);
    f->snap.config_version = 7;
    f->snap.generation = 42;
    static char *names[2] = {"web", "api"};
    static char *binds[2] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        lb__v1__frontend__init(&f->fe[i]);
        f->fe[i].name = names[i];
        f->fe[i].bind_address = binds[i];
        f->fe[i].port = 8080 + (uint32_t)i;
        f->fep[i] = &f->fe[i];
    }
    f->snap.n_frontends = 2;
    f->snap.frontends = f->fep;
    static char *ids[3] = {"a", "b", "c"};
    static char *hosts[3] = {"127.0.0.1", "127.0.0.2", "::1"};
    for (int i = 0; i < 3; i++) {
        lb__v1__backend__init(&f->be[i]);
        f->be[i].id = ids[i];
        f->be[i].host = hosts[i];
        f->be[i].port = 9001 + (uint32_t)i;
        f->be[i].weight = (uint32_t)(5 - i);
        f->bep[i] = &f->be[i];
    }
    f->snap.n_backends = 3;
    f->snap.backends = f->bep;
    lb__v1__limits__init(&f->limits);
    lb__v1__metrics__init(&f->metrics);
    f->metrics.enabled = true;
    f->metrics.port = 9090;
    f->snap.metrics = &f->metrics;
    lb__v1__balancing__init(&f->balancing);
    f->balancing.algorithm = LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN;
    f->snap.balancing = &f->balancing;
    lb__v1__timeouts__init(&f->timeouts);
    lb__v1__tls__init(&f->tls);
}

static int sfix_decode(struct sfix *f, struct snap **out, struct lb_err *err)
{
    size_t len = lb__v1__snapshot__get_packed_size(&f->snap);
    uint8_t *buf = malloc(len ? len : 1);
    lb__v1__snapshot__pack(&f->snap, buf);
    int rc = snapshot_decode(buf, len, out, err);
    free(buf);
    return rc;
}

START_TEST(valid_snapshot_has_defaults)
{
    struct sfix f;
    sfix_init(&f);
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(sfix_decode(&f, &s, &err), LB_OK);
    ck_assert_uint_eq(s->version, 7);
    ck_assert_uint_eq(s->generation, 42);
    ck_assert_uint_eq(s->n_frontends, 2);
    ck_assert_uint_eq(s->n_backends, 3);
    ck_assert_str_eq(s->frontends[0].key, "127.0.0.1:8080");
    ck_assert_str_eq(s->frontends[1].key, "[::1]:8081");
    ck_assert_str_eq(s->backends[2].host_port, "[::1]:9003");
    ck_assert_uint_eq(s->backends[0].weight, 5);
    ck_assert_uint_eq(s->timeouts.client_header, 10000);
    ck_assert_uint_eq(s->timeouts.upstream_connect, 3000);
    ck_assert_uint_eq(s->limits.max_request_line, 8192);
    ck_assert_uint_eq(s->limits.max_header_bytes, 32768);
    ck_assert_uint_eq(s->limits.max_headers, 100);
    ck_assert_uint_eq(s->algorithm, SNAP_ALGO_WEIGHTED);
    ck_assert(s->metrics_enabled);
    ck_assert(s->access_log);
    ck_assert(s->fail_open);
    ck_assert(!s->breaker.enabled);
    ck_assert_uint_eq(s->breaker.threshold, 5);
    ck_assert_uint_eq(s->breaker.timeout_ms, 30000);
    ck_assert_uint_eq(s->breaker.max_half_open, 3);
    ck_assert_uint_eq(s->max_retries, 2);
    ck_assert(s->retry_5xx);
    ck_assert_uint_eq(s->retry_budget_percent, 20);
    ck_assert_uint_eq(s->retry_budget_min, 3);
    ck_assert_uint_eq(s->backoff_base_ms, 25);
    ck_assert_int_eq(snap_backend_find(s, "b"), 1);
    ck_assert_int_eq(snap_backend_find(s, "zz"), -1);
    ck_assert(snap_backend_is_eligible(&s->backends[0]));
    ck_assert_uint_eq(s->frontends[0].n_proxy_from, 0);
    ck_assert_uint_eq(s->backends[0].send_proxy, 0);
    struct snap *r = snap_ref(s);
    snap_unref(s);
    snap_unref(r);
}
END_TEST

START_TEST(proxy_protocol_settings)
{
    struct sfix f;
    sfix_init(&f);
    static char *from[] = {"10.0.0.0/8", "::1", "192.0.2.1"};
    f.fe[0].n_proxy_from = 3;
    f.fe[0].proxy_from = from;
    f.be[1].send_proxy = 1;
    f.be[2].send_proxy = 2;
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_msg(sfix_decode(&f, &s, &err) == LB_OK, "%s", err.msg);
    const struct snap_frontend *fe = &s->frontends[0];
    ck_assert_uint_eq(fe->n_proxy_from, 3);
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.20.30.40", &in.sin_addr);
    ck_assert(limiter_cidr_match(fe->proxy_from, fe->n_proxy_from, (struct sockaddr *)&in));
    inet_pton(AF_INET, "192.0.2.2", &in.sin_addr);
    ck_assert(!limiter_cidr_match(fe->proxy_from, fe->n_proxy_from, (struct sockaddr *)&in));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    ck_assert(limiter_cidr_match(fe->proxy_from, fe->n_proxy_from, (struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:192.0.2.1", &in6.sin6_addr); /* a mapped IPv4 peer */
    ck_assert(limiter_cidr_match(fe->proxy_from, fe->n_proxy_from, (struct sockaddr *)&in6));
    ck_assert_uint_eq(s->backends[0].send_proxy, 0);
    ck_assert_uint_eq(s->backends[1].send_proxy, 1);
    ck_assert_uint_eq(s->backends[2].send_proxy, 2);
    snap_unref(s);
}
END_TEST

START_TEST(http2_settings)
{
    struct sfix f;
    sfix_init(&f);
    f.fe[0].http2 = true; /* a plain frontend: ALPN does not apply */
    f.fe[1].http2_cleartext = true;
    f.fe[1].http2_max_streams = 7;
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_msg(sfix_decode(&f, &s, &err) == LB_OK, "%s", err.msg);
    ck_assert(!s->frontends[0].http2);
    ck_assert(!s->frontends[0].http2_cleartext);
    ck_assert_uint_eq(s->frontends[0].h2_max_streams, 100);
    ck_assert_uint_eq(s->frontends[0].h2_window, 65535);
    ck_assert_uint_eq(s->frontends[0].h2_max_header_list, 32768);
    ck_assert(s->frontends[1].http2_cleartext);
    ck_assert_uint_eq(s->frontends[1].h2_max_streams, 7);
    snap_unref(s);
    sfix_init(&f);
    f.fe[1].http2_window = 100;
    s = (struct snap *)0x1;
    ck_assert_int_eq(sfix_decode(&f, &s, &err), LB_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, "frontends[1].http2_window: 100 is out of range") != NULL, "%s",
                  err.msg);
}
END_TEST

START_TEST(zero_weight_means_one)
{
    struct sfix f;
    sfix_init(&f);
    f.be[1].weight = 0;
    struct snap *s = NULL;
    ck_assert_int_eq(sfix_decode(&f, &s, NULL), LB_OK);
    ck_assert_uint_eq(s->backends[1].weight, 1);
    snap_unref(s);
}
END_TEST

START_TEST(draining_and_down_are_not_eligible)
{
    struct sfix f;
    sfix_init(&f);
    f.be[0].admin_state = LB__V1__ADMIN_STATE__ADMIN_DRAINING;
    f.be[1].health = LB__V1__HEALTH__HEALTH_DOWN;
    f.be[2].admin_state = LB__V1__ADMIN_STATE__ADMIN_DISABLED;
    struct snap *s = NULL;
    ck_assert_int_eq(sfix_decode(&f, &s, NULL), LB_OK);
    for (int i = 0; i < 3; i++)
        ck_assert(!snap_backend_is_eligible(&s->backends[i]));
    snap_unref(s);
}
END_TEST

/* Each breaks one field; the message must name it. */
static const struct bad_case {
    const char *name;
    const char *expect;
} bad_cases[] = {
    {"no frontends", "frontends: at least one"},
    {"frontend port 0", "frontends[0].port: 0 is out of range"},
    {"frontend port 70000", "frontends[1].port: 70000 is out of range"},
    {"frontend bad address", "frontends[0].bind_address: \"example.com\" is not an IP"},
    {"frontend duplicate name", "frontends[1].name: \"web\" is used twice"},
    {"frontend duplicate bind", "frontends[1]: 127.0.0.1:8080 is bound twice"},
    {"frontend empty name", "frontends[0].name: must be"},
    {"metrics bad address", "metrics.bind_address: \"nope\" is not an IP address"},
    {"backend weight 1001", "backends[2].weight: 1001 is out of range (1..1000)"},
    {"backend port 0", "backends[1].port: 0 is out of range"},
    {"backend host name", "backends[0].host: \"backend1\" is not an IP address"},
    {"backend duplicate id", "backends[2].id: \"a\" is used twice"},
    {"backend id with space", "backends[0].id: must be"},
    {"backend admin state", "backends[1].admin_state: unknown value 9"},
    {"metrics port clash", "metrics.port: 8080 is also frontends[0].port"},
    {"max_header_bytes below line", "limits.max_header_bytes: 100 must be between"},
    {"max_request_line tiny", "limits.max_request_line: 10 is out of range"},
    {"slow start too long", "balancing.slow_start_ms: 4000000 is out of range"},
    {"proxy_from not a CIDR", "frontends[1].proxy_from[1]: \"10.0.0.0/33\" is not a CIDR"},
    {"send_proxy 3", "backends[0].send_proxy: 3 is not 0 (none), 1 or 2"},
};

static void break_case(struct sfix *f, int i)
{
    static char *web = "web";
    static char *empty = "";
    static char *name = "example.com";
    static char *backend1 = "backend1";
    static char *a = "a";
    static char *spaced = "a b";
    static char *v4 = "127.0.0.1";
    switch (i) {
    case 0:
        f->snap.n_frontends = 0;
        break;
    case 1:
        f->fe[0].port = 0;
        break;
    case 2:
        f->fe[1].port = 70000;
        break;
    case 3:
        f->fe[0].bind_address = name;
        break;
    case 4:
        f->fe[1].name = web;
        break;
    case 5:
        f->fe[1].bind_address = v4;
        f->fe[1].port = 8080;
        break;
    case 6:
        f->fe[0].name = empty;
        break;
    case 7:
        f->metrics.bind_address = "nope";
        break;
    case 8:
        f->be[2].weight = 1001;
        break;
    case 9:
        f->be[1].port = 0;
        break;
    case 10:
        f->be[0].host = backend1;
        break;
    case 11:
        f->be[2].id = a;
        break;
    case 12:
        f->be[0].id = spaced;
        break;
    case 13:
        f->be[1].admin_state = (Lb__V1__AdminState)9;
        break;
    case 14:
        f->metrics.port = 8080;
        break;
    case 15:
        f->snap.limits = &f->limits;
        f->limits.max_header_bytes = 100;
        break;
    case 16:
        f->snap.limits = &f->limits;
        f->limits.max_request_line = 10;
        break;
    case 17:
        f->balancing.slow_start_ms = 4000000;
        break;
    case 18: {
        static char *from[] = {"10.0.0.0/8", "10.0.0.0/33"};
        f->fe[1].n_proxy_from = 2;
        f->fe[1].proxy_from = from;
        break;
    }
    case 19:
        f->be[0].send_proxy = 3;
        break;
    default:
        ck_abort_msg("no such case");
    }
}

START_TEST(invalid_snapshot_names_the_field)
{
    struct sfix f;
    sfix_init(&f);
    break_case(&f, _i);
    struct snap *s = (struct snap *)0x1;
    struct lb_err err = {0};
    int rc = sfix_decode(&f, &s, &err);
    ck_assert_msg(rc == LB_EINVAL, "%s: rc %d", bad_cases[_i].name, rc);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, bad_cases[_i].expect) != NULL, "%s: got \"%s\", want \"%s\"",
                  bad_cases[_i].name, err.msg, bad_cases[_i].expect);
}
END_TEST

START_TEST(garbage_bytes_are_refused)
{
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02};
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(snapshot_decode(junk, sizeof(junk), &s, &err), LB_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a valid lb.v1.Snapshot"));
}
END_TEST

START_TEST(load_file_errors_name_the_path)
{
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(snapshot_load_file("/nonexistent/snap.bin", &s, &err), LB_ESYS);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/snap.bin"));

    char path[] = "/tmp/lb-test-snap-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(snapshot_load_file(path, &s, &err), LB_EINVAL); /* empty */

    struct sfix f;
    sfix_init(&f);
    size_t len = lb__v1__snapshot__get_packed_size(&f.snap);
    uint8_t *buf = malloc(len);
    lb__v1__snapshot__pack(&f.snap, buf);
    FILE *fp = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    free(buf);
    ck_assert_int_eq(snapshot_load_file(path, &s, &err), LB_OK);
    ck_assert_uint_eq(s->n_backends, 3);
    snap_unref(s);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("snapshot");
    TCase *ok = tcase_create("valid");
    tcase_add_test(ok, valid_snapshot_has_defaults);
    tcase_add_test(ok, zero_weight_means_one);
    tcase_add_test(ok, proxy_protocol_settings);
    tcase_add_test(ok, http2_settings);
    tcase_add_test(ok, draining_and_down_are_not_eligible);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("invalid");
    tcase_add_loop_test(bad, invalid_snapshot_names_the_field, 0,
                        (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(bad, garbage_bytes_are_refused);
    tcase_add_test(bad, load_file_errors_name_the_path);
    suite_add_tcase(s, bad);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
