/* tests/unit/dataplane/test_limiter.c */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lb_err.h"
#include "limiter.h"

/* Addresses ------------------------------------------------------------------------------- */

struct addr {
    struct sockaddr_storage ss;
};

static const struct sockaddr *ip(struct addr *a, const char *s)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, s, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
    }
    return (const struct sockaddr *)&a->ss;
}

/* Limiters -------------------------------------------------------------------------------- */

struct opts {
    Lb__V1__RateLimitAlgorithm algorithm;
    uint32_t rate, burst;
    bool per_client, global, headers_on_allowed;
    uint32_t ipv4_prefix, ipv6_prefix, max_keys;
    const char *trusted[4];
};

static void make_config(const struct opts *o, struct limiter_config *cfg)
{
    Lb__V1__RateLimit pb = LB__V1__RATE_LIMIT__INIT;
    char *trusted[4];
    pb.enabled = true;
    pb.algorithm = o->algorithm;
    pb.rate = o->rate;
    pb.burst = o->burst;
    pb.per_client = o->per_client;
    pb.global = o->global;
    pb.headers_on_allowed = o->headers_on_allowed;
    pb.ipv4_prefix = o->ipv4_prefix;
    pb.ipv6_prefix = o->ipv6_prefix;
    pb.max_keys = o->max_keys;
    while (pb.n_trusted_proxies < 4 && o->trusted[pb.n_trusted_proxies] != NULL) {
        trusted[pb.n_trusted_proxies] = (char *)o->trusted[pb.n_trusted_proxies];
        pb.n_trusted_proxies++;
    }
    pb.trusted_proxies = trusted;
    struct lb_err err = {0};
    ck_assert_msg(limiter_config_from_pb(cfg, &pb, &err) == LB_OK, "%s", err.msg);
}

static struct limiter *make(const struct opts *o)
{
    struct limiter_config cfg;
    make_config(o, &cfg);
    struct lb_err err = {0};
    struct limiter *l = limiter_new(&cfg, &err);
    ck_assert_msg(l != NULL, "%s", err.msg);
    return l;
}

static struct limiter *tb(uint32_t rate, uint32_t burst)
{
    return make(&(struct opts){.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET,
                               .rate = rate,
                               .burst = burst,
                               .per_client = true});
}

static struct limiter *sw(uint32_t rate)
{
    return make(&(struct opts){.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW,
                               .rate = rate,
                               .per_client = true});
}

static bool take(struct limiter *l, const char *client, uint64_t now, struct limiter_verdict *v)
{
    struct addr a;
    struct limiter_verdict tmp;
    return limiter_check(l, ip(&a, client), NULL, 0, now, v ? v : &tmp);
}

static int take_n(struct limiter *l, const char *client, uint64_t now, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += take(l, client, now, NULL);
    return ok;
}

/* Token bucket ---------------------------------------------------------------------------- */

START_TEST(tb_burst_then_refuse)
{
    struct limiter *l = tb(10, 5);
    struct limiter_verdict v;
    for (uint32_t i = 0; i < 5; i++) {
        ck_assert(take(l, "10.0.0.1", 1000, &v));
        ck_assert_uint_eq(v.remaining, 4 - i);
        ck_assert_uint_eq(v.scope, LIMITER_SCOPE_CLIENT);
        ck_assert_uint_eq(v.retry_after_s, 0);
    }
    ck_assert(!take(l, "10.0.0.1", 1000, &v));
    ck_assert(!v.allowed);
    ck_assert(v.send_headers);
    ck_assert_uint_eq(v.scope, LIMITER_SCOPE_CLIENT);
    ck_assert_uint_eq(v.remaining, 0);
    limiter_free(l);
}
END_TEST

START_TEST(tb_refills_over_time)
{
    struct limiter *l = tb(10, 5);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 10), 5);
    ck_assert(!take(l, "10.0.0.1", 99, NULL)); /* 0.99 token */
    ck_assert(take(l, "10.0.0.1", 100, NULL)); /* one token per 100 ms */
    ck_assert(!take(l, "10.0.0.1", 100, NULL));
    ck_assert_int_eq(take_n(l, "10.0.0.1", 350, 10), 2);   /* 2.5 tokens back */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 400, 10), 1);   /* the half token plus 0.5 */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 10400, 10), 5); /* capped at burst */
    limiter_free(l);
}
END_TEST

START_TEST(tb_clock_not_moving)
{
    struct limiter *l = tb(100, 50);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 5000, 1000), 50);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 4000, 100), 0); /* an older clock adds nothing */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 5010, 100), 1);
    limiter_free(l);
}
END_TEST

START_TEST(tb_huge_gaps)
{
    struct limiter *l = tb(10, 5);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 10), 5);
    uint64_t hours = 5ULL * 3600 * 1000;
    ck_assert_int_eq(take_n(l, "10.0.0.1", hours, 10), 5);
    ck_assert_int_eq(take_n(l, "10.0.0.1", UINT64_MAX / 2, 10), 5);
    ck_assert_int_eq(take_n(l, "10.0.0.1", UINT64_MAX - 1, 10), 5);
    limiter_free(l);

    l = tb(4000000000u, 4000000000u);
    struct limiter_verdict v;
    ck_assert(take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.remaining, 3999999999u);
    ck_assert(take(l, "10.0.0.1", hours, &v));
    ck_assert_uint_eq(v.remaining, 3999999999u);
    limiter_free(l);
}
END_TEST

START_TEST(tb_header_values)
{
    struct limiter *l = tb(100, 50);
    struct limiter_verdict v;
    ck_assert(take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.limit, 100);
    ck_assert_uint_eq(v.remaining, 49);
    ck_assert_uint_eq(v.reset_s, 1); /* 10 ms to full, rounded up */
    limiter_free(l);

    l = tb(1, 3);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 3), 3);
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.limit, 1);
    ck_assert_uint_eq(v.remaining, 0);
    ck_assert_uint_eq(v.reset_s, 3);
    ck_assert_uint_eq(v.retry_after_s, 1);
    ck_assert(!take(l, "10.0.0.1", 999, &v));
    ck_assert_uint_eq(v.retry_after_s, 1); /* 1 ms left still says 1 s */
    ck_assert_uint_eq(v.reset_s, 3);       /* 2.001 s rounded up */
    ck_assert(take(l, "10.0.0.1", 1000, &v));
    ck_assert_uint_eq(v.reset_s, 3);
    limiter_free(l);

    l = tb(1, 1);
    ck_assert(take(l, "10.0.0.1", 0, NULL));
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.retry_after_s, 1);
    limiter_free(l);

    /* Two tokens a second, burst 1: half a second to wait, reported as 1 s. */
    l = tb(2, 1);
    ck_assert(take(l, "10.0.0.1", 0, NULL));
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.retry_after_s, 1);
    ck_assert(take(l, "10.0.0.1", 500, NULL));
    limiter_free(l);
}
END_TEST

/* Sliding window -------------------------------------------------------------------------- */

START_TEST(sw_window_edges)
{
    struct limiter *l = sw(10);
    struct limiter_verdict v;
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 20), 10);
    ck_assert(!take(l, "10.0.0.1", 999, NULL));
    /* At the edge the previous window still weighs fully. */
    ck_assert(!take(l, "10.0.0.1", 1000, &v));
    ck_assert_uint_eq(v.retry_after_s, 1); /* 100 ms until 10 * 0.9 + 1 <= 10 */
    ck_assert(!take(l, "10.0.0.1", 1099, NULL));
    ck_assert_int_eq(take_n(l, "10.0.0.1", 1100, 5), 1);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 1500, 10), 4); /* 10 * 0.5 + 1 = 6 <= 10 ... 10 */
    /* Window 2 starts with prev = 5: 5 + cur + 1 <= 10. */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 2000, 10), 5);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 2999, 10), 4); /* 5 * 0.001 + 5 + 1 ... */
    /* Two windows later both counts are gone. */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 5000, 20), 10);
    limiter_free(l);
}
END_TEST

START_TEST(sw_clock_not_moving)
{
    struct limiter *l = sw(10);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 1500, 1000), 10);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 1200, 100), 0);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 500, 100), 0); /* an older window adds nothing */
    limiter_free(l);
}
END_TEST

START_TEST(sw_huge_gaps)
{
    struct limiter *l = sw(10);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 20), 10);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 5ULL * 3600 * 1000, 20), 10);
    ck_assert_int_eq(take_n(l, "10.0.0.1", UINT64_MAX - 1, 20), 10);
    limiter_free(l);

    l = sw(4000000000u);
    struct limiter_verdict v;
    ck_assert(take(l, "10.0.0.1", 1000, &v));
    ck_assert_uint_eq(v.remaining, 3999999999u);
    ck_assert(take(l, "10.0.0.1", 2000, &v));
    ck_assert_uint_eq(v.remaining, 3999999998u); /* prev = 1 at full weight, cur = 1 */
    limiter_free(l);
}
END_TEST

START_TEST(sw_header_values)
{
    struct limiter *l = sw(10);
    struct limiter_verdict v;
    ck_assert(take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.limit, 10);
    ck_assert_uint_eq(v.remaining, 9);
    ck_assert_uint_eq(v.reset_s, 2); /* the count ages out at the end of the next window */
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 9), 9);
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.remaining, 0);
    ck_assert_uint_eq(v.retry_after_s, 2); /* 1.1 s: next window at 10 % weight gone */
    ck_assert(!take(l, "10.0.0.1", 1099, &v));
    ck_assert_uint_eq(v.retry_after_s, 1);
    ck_assert_uint_eq(v.reset_s, 1); /* 901 ms until prev weighs nothing */
    limiter_free(l);

    l = sw(1);
    ck_assert(take(l, "10.0.0.1", 0, NULL));
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.retry_after_s, 2); /* passes again only once prev is gone */
    ck_assert(!take(l, "10.0.0.1", 1999, NULL));
    ck_assert(take(l, "10.0.0.1", 2000, NULL));
    limiter_free(l);
}
END_TEST

/* Headers --------------------------------------------------------------------------------- */

START_TEST(headers_format)
{
    struct limiter *l = tb(1, 3);
    struct limiter_verdict v;
    char buf[LIMITER_HEADERS_MAX];
    ck_assert(take(l, "10.0.0.1", 0, &v));
    ck_assert(!v.send_headers); /* headers_on_allowed is off */
    ck_assert_uint_eq(limiter_headers(&v, buf, sizeof(buf)), 0);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 2), 2);
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    const char *want = "RateLimit-Limit: 1\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: "
                       "3\r\nRetry-After: 1\r\n";
    size_t n = limiter_headers(&v, buf, sizeof(buf));
    ck_assert_uint_eq(n, strlen(want));
    ck_assert(memcmp(buf, want, n) == 0);
    ck_assert_uint_eq(limiter_headers(&v, buf, strlen(want) - 1), 0);
    ck_assert_uint_eq(limiter_headers(&v, buf, strlen(want)), strlen(want));
    limiter_free(l);

    l = make(
        &(struct opts){.rate = 100, .burst = 50, .per_client = true, .headers_on_allowed = true});
    ck_assert(take(l, "10.0.0.1", 0, &v));
    ck_assert(v.send_headers);
    want = "RateLimit-Limit: 100\r\nRateLimit-Remaining: 49\r\nRateLimit-Reset: 1\r\n";
    n = limiter_headers(&v, buf, sizeof(buf));
    ck_assert_uint_eq(n, strlen(want));
    ck_assert(memcmp(buf, want, n) == 0);
    limiter_free(l);

    struct limiter_verdict big = {.send_headers = true,
                                  .scope = LIMITER_SCOPE_GLOBAL,
                                  .limit = UINT32_MAX,
                                  .remaining = UINT32_MAX,
                                  .reset_s = UINT32_MAX,
                                  .retry_after_s = UINT32_MAX};
    ck_assert_uint_gt(limiter_headers(&big, buf, sizeof(buf)), 100);
}
END_TEST

/* Scopes ---------------------------------------------------------------------------------- */

START_TEST(clients_limited_separately)
{
    struct limiter *l = tb(1, 2);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "10.0.0.2", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "2001:db8::1", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "2001:db8::2", 0, 5), 2);
    struct limiter_stats st;
    limiter_stats(l, &st);
    ck_assert_uint_eq(st.allowed_client, 8);
    ck_assert_uint_eq(st.limited_client, 12);
    ck_assert_uint_eq(st.keys, 4);
    ck_assert_uint_eq(st.allowed_global + st.limited_global, 0);
    limiter_free(l);
}
END_TEST

START_TEST(ipv4_prefix_groups)
{
    struct limiter *l =
        make(&(struct opts){.rate = 1, .burst = 2, .per_client = true, .ipv4_prefix = 24});
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 1), 1);
    ck_assert_int_eq(take_n(l, "10.0.0.2", 0, 5), 1); /* same /24 */
    ck_assert_int_eq(take_n(l, "10.0.1.1", 0, 5), 2);
    limiter_free(l);
}
END_TEST

START_TEST(ipv6_prefix_groups)
{
    struct limiter *l =
        make(&(struct opts){.rate = 1, .burst = 2, .per_client = true, .ipv6_prefix = 64});
    ck_assert_int_eq(take_n(l, "2001:db8::1", 0, 1), 1);
    ck_assert_int_eq(take_n(l, "2001:db8::ffff:ffff:1", 0, 5), 1); /* same /64 */
    ck_assert_int_eq(take_n(l, "2001:db8:0:1::1", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 5), 2); /* IPv4 keeps its /32 */
    ck_assert_int_eq(take_n(l, "10.0.0.2", 0, 5), 2);
    limiter_free(l);

    l = tb(1, 2); /* /128 by default */
    ck_assert_int_eq(take_n(l, "2001:db8::1", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "2001:db8::2", 0, 5), 2);
    limiter_free(l);
}
END_TEST

START_TEST(ipv4_mapped_is_ipv4)
{
    struct limiter *l = make(&(struct opts){
        .rate = 1, .burst = 2, .per_client = true, .ipv4_prefix = 24, .ipv6_prefix = 64});
    ck_assert_int_eq(take_n(l, "::ffff:10.0.0.1", 0, 1), 1);
    ck_assert_int_eq(take_n(l, "10.0.0.9", 0, 5), 1); /* IPv4 /24, not IPv6 /64 */
    ck_assert_int_eq(take_n(l, "::ffff:10.0.1.1", 0, 5), 2);
    uint8_t k1[16], k2[16];
    struct addr a;
    limiter_client_key(l, ip(&a, "::ffff:192.0.2.77"), NULL, 0, k1);
    limiter_client_key(l, ip(&a, "192.0.2.1"), NULL, 0, k2);
    ck_assert(memcmp(k1, k2, 16) == 0);
    limiter_free(l);
}
END_TEST

static void key_of(const char *s, uint8_t out[16])
{
    struct in_addr a4;
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, &a4) == 1) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, s, out), 1);
    }
}

static void assert_client(struct limiter *l, const char *peer, const char *xff, const char *want)
{
    struct addr a;
    uint8_t got[16], exp[16];
    limiter_client_key(l, ip(&a, peer), xff, xff ? strlen(xff) : 0, got);
    key_of(want, exp);
    ck_assert_msg(memcmp(got, exp, 16) == 0, "peer %s xff \"%s\": not %s", peer, xff, want);
}

START_TEST(trusted_proxy_xff)
{
    struct limiter *l = make(&(struct opts){.rate = 1,
                                            .burst = 1,
                                            .per_client = true,
                                            .trusted = {"10.0.0.0/8", "2001:db8:ffff::/48"}});
    assert_client(l, "10.0.0.5", "1.2.3.4", "1.2.3.4");
    assert_client(l, "10.0.0.5", "9.9.9.9, 1.2.3.4, 10.0.0.9", "1.2.3.4");
    assert_client(l, "10.0.0.5", "1.2.3.4,\t10.0.0.9 ,10.1.1.1", "1.2.3.4");
    assert_client(l, "10.0.0.5", "1.2.3.4, garbage, 10.0.0.0/8, ", "1.2.3.4");
    assert_client(l, "10.0.0.5", "1.2.3.4, 5.6.7.8:8080", "5.6.7.8");
    assert_client(l, "10.0.0.5", "1.2.3.4, [2001:db8::7]:443", "2001:db8::7");
    assert_client(l, "10.0.0.5", "1.2.3.4, [2001:db8::8]", "2001:db8::8");
    assert_client(l, "10.0.0.5", "2001:db8::9", "2001:db8::9");
    assert_client(l, "10.0.0.5", "1.2.3.4, 5.6.7.8:x, [::1, 1.2.3.4.5", "1.2.3.4");
    assert_client(l, "::ffff:10.0.0.5", "1.2.3.4", "1.2.3.4"); /* mapped peer is trusted */
    assert_client(l, "2001:db8:ffff::1", "1.2.3.4, 2001:db8:ffff::2", "1.2.3.4");
    /* Nothing usable: the peer itself. */
    assert_client(l, "10.0.0.5", "10.0.0.7, 10.0.0.8", "10.0.0.5");
    assert_client(l, "10.0.0.5", " , ,", "10.0.0.5");
    assert_client(l, "10.0.0.5", "", "10.0.0.5");
    assert_client(l, "10.0.0.5", NULL, "10.0.0.5");
    /* An untrusted peer's header is ignored. */
    assert_client(l, "192.168.1.1", "1.2.3.4", "192.168.1.1");
    assert_client(l, "11.0.0.1", "1.2.3.4", "11.0.0.1");

    /* And the limit follows the client behind the proxy. */
    struct addr a;
    struct limiter_verdict v;
    const struct sockaddr *proxy = ip(&a, "10.0.0.5");
    ck_assert(limiter_check(l, proxy, "1.2.3.4", 7, 0, &v));
    ck_assert(!limiter_check(l, proxy, "1.2.3.4", 7, 0, &v));
    ck_assert(limiter_check(l, proxy, "1.2.3.5", 7, 0, &v));
    ck_assert(limiter_check(l, proxy, NULL, 0, 0, &v));
    ck_assert(!limiter_check(l, proxy, "10.9.9.9", 8, 0, &v)); /* falls back to the proxy */
    limiter_free(l);
}
END_TEST

START_TEST(no_trusted_proxies_ignores_xff)
{
    struct limiter *l = tb(1, 1);
    assert_client(l, "10.0.0.5", "1.2.3.4", "10.0.0.5");
    uint8_t key[16], zero[16] = {0};
    limiter_client_key(l, NULL, NULL, 0, key);
    ck_assert(memcmp(key, zero, 16) == 0);
    struct limiter_verdict v;
    ck_assert(limiter_check(l, NULL, NULL, 0, 0, &v));
    ck_assert(!limiter_check(l, NULL, NULL, 0, 0, &v));
    limiter_free(l);
}
END_TEST

START_TEST(global_and_client)
{
    struct opts o = {.rate = 1, .burst = 3, .per_client = true, .global = true};
    struct limiter *l = make(&o);
    struct limiter_verdict v;
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 3), 3);
    ck_assert(!take(l, "10.0.0.1", 0, &v));
    ck_assert_uint_eq(v.scope, LIMITER_SCOPE_CLIENT);
    for (int i = 0; i < 5; i++) {
        ck_assert(!take(l, "10.0.0.2", 0, &v));
        ck_assert_uint_eq(v.scope, LIMITER_SCOPE_GLOBAL);
        ck_assert_uint_eq(v.retry_after_s, 1);
    }
    struct limiter_stats st;
    limiter_stats(l, &st);
    ck_assert_uint_eq(st.allowed_client, 3);
    ck_assert_uint_eq(st.limited_client, 1);
    ck_assert_uint_eq(st.allowed_global, 3);
    ck_assert_uint_eq(st.limited_global, 5); /* the client-refused one never reached it */

    /* 10.0.0.2 was not charged for the global refusals: copy the client state out. */
    o.global = false;
    struct limiter *c = make(&o);
    limiter_carry(c, l);
    ck_assert_int_eq(take_n(c, "10.0.0.2", 0, 5), 3);
    ck_assert_int_eq(take_n(c, "10.0.0.1", 0, 5), 0);
    limiter_free(c);

    /* Allowed with both on: the scope with fewer remaining speaks. */
    ck_assert(take(l, "10.0.0.2", 1000, &v));
    ck_assert_uint_eq(v.scope, LIMITER_SCOPE_GLOBAL);
    ck_assert_uint_eq(v.remaining, 0);
    limiter_free(l);

    l = make(&(struct opts){.rate = 1, .burst = 2, .global = true});
    ck_assert_int_eq(take_n(l, "10.0.0.1", 0, 5), 2);
    ck_assert_int_eq(take_n(l, "10.0.0.2", 0, 5), 0);
    limiter_stats(l, &st);
    ck_assert_uint_eq(st.keys, 0);
    ck_assert_uint_eq(st.allowed_global, 2);
    ck_assert_uint_eq(st.limited_global, 8);
    limiter_free(l);
}
END_TEST

START_TEST(disabled_passes_everything)
{
    struct limiter_config cfg;
    ck_assert_int_eq(limiter_config_from_pb(&cfg, NULL, NULL), LB_OK);
    ck_assert(!cfg.enabled);
    struct limiter *l = limiter_new(&cfg, NULL);
    ck_assert_ptr_nonnull(l);
    struct limiter_verdict v;
    char buf[LIMITER_HEADERS_MAX];
    for (int i = 0; i < 100; i++) {
        ck_assert(take(l, "10.0.0.1", 0, &v));
        ck_assert(!v.send_headers);
        ck_assert_uint_eq(v.scope, LIMITER_SCOPE_NONE);
        ck_assert_uint_eq(limiter_headers(&v, buf, sizeof(buf)), 0);
    }
    limiter_free(l);
    limiter_free(NULL);
}
END_TEST

/* Bounded table --------------------------------------------------------------------------- */

START_TEST(bounded_lru)
{
    struct limiter *l =
        make(&(struct opts){.rate = 1, .burst = 1, .per_client = true, .max_keys = 1000});
    struct limiter_stats st;
    ck_assert(take(l, "10.0.0.1", 0, NULL)); /* kept warm below */
    ck_assert(take(l, "10.0.0.2", 0, NULL)); /* never used again */
    char s[32];
    for (int i = 1; i <= 10000; i++) {
        snprintf(s, sizeof(s), "127.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        ck_assert(take(l, s, 0, NULL)); /* a new key starts full */
        limiter_stats(l, &st);
        ck_assert_uint_le(st.keys, 1000);
        if (i % 10 == 0)
            ck_assert(!take(l, "10.0.0.1", 0, NULL)); /* still there, still empty */
    }
    ck_assert(!take(l, "10.0.0.1", 0, NULL));
    ck_assert(take(l, "10.0.0.2", 0, NULL)); /* evicted: comes back full */
    limiter_stats(l, &st);
    ck_assert_uint_eq(st.keys, 1000);
    ck_assert_uint_eq(st.evictions, 10003 - 1000);
    limiter_free(l);

    /* Fewer keys than shards still holds exactly max_keys. */
    l = make(&(struct opts){.rate = 1, .burst = 1, .per_client = true, .max_keys = 5});
    for (int i = 1; i <= 100; i++) {
        snprintf(s, sizeof(s), "127.0.0.%d", i);
        take(l, s, 0, NULL);
    }
    limiter_stats(l, &st);
    ck_assert_uint_eq(st.keys, 5);
    ck_assert_uint_eq(st.evictions, 95);
    limiter_free(l);
}
END_TEST

/* Threads --------------------------------------------------------------------------------- */

struct hammer {
    struct limiter *l;
    pthread_barrier_t *start; /* both threads begin together */
    const char *client;
    int allowed;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct addr a;
    const struct sockaddr *peer = ip(&a, h->client);
    struct limiter_verdict v;
    pthread_barrier_wait(h->start);
    for (uint64_t now = 0; now < 10000; now++) {
        for (int i = 0; i < 4; i++)
            h->allowed += limiter_check(h->l, peer, NULL, 0, now, &v);
    }
    return NULL;
}

static int hammer(const struct opts *o)
{
    struct limiter *l = make(o);
    pthread_barrier_t start;
    ck_assert_int_eq(pthread_barrier_init(&start, NULL, 2), 0);
    struct hammer h[2] = {{l, &start, "10.0.0.1", 0}, {l, &start, "10.0.0.1", 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    struct limiter_stats st;
    limiter_stats(l, &st);
    int total = h[0].allowed + h[1].allowed;
    ck_assert_uint_eq(o->per_client ? st.allowed_client : st.allowed_global, (uint64_t)total);
    limiter_free(l);
    return total;
}

START_TEST(threads_token_bucket_exact)
{
    struct opts o = {.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET,
                     .rate = 100,
                     .burst = 50,
                     .per_client = true};
    int n = hammer(&o);
    ck_assert_msg(n >= 1029 && n <= 1071, "per client: %d allowed", n);
    o.per_client = false;
    o.global = true;
    n = hammer(&o);
    ck_assert_msg(n >= 1029 && n <= 1071, "global: %d allowed", n);
}
END_TEST

START_TEST(threads_sliding_window_exact)
{
    struct opts o = {
        .algorithm = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW, .rate = 100, .per_client = true};
    int n = hammer(&o);
    ck_assert_msg(n >= 980 && n <= 1020, "per client: %d allowed", n);
    o.per_client = false;
    o.global = true;
    n = hammer(&o);
    ck_assert_msg(n >= 980 && n <= 1020, "global: %d allowed", n);
}
END_TEST

/* Carry ----------------------------------------------------------------------------------- */

START_TEST(carry_keeps_unchanged)
{
    struct opts o = {.rate = 1, .burst = 3, .per_client = true, .global = true};
    struct limiter *old = make(&o);
    ck_assert_int_eq(take_n(old, "10.0.0.1", 0, 2), 2);
    ck_assert_int_eq(take_n(old, "10.0.0.2", 0, 1), 1);

    /* Same limits, other trusted proxies and headers: state moves. */
    o.trusted[0] = "192.0.2.0/24";
    o.headers_on_allowed = true;
    struct limiter *same = make(&o);
    ck_assert(limiter_config_same_limits(limiter_config(old), limiter_config(same)));
    limiter_carry(same, old);
    struct limiter_stats st;
    limiter_stats(same, &st);
    ck_assert_uint_eq(st.allowed_client, 3);
    ck_assert_uint_eq(st.allowed_global, 3);
    ck_assert_uint_eq(st.keys, 2);
    ck_assert_int_eq(take_n(same, "10.0.0.3", 0, 5), 0); /* global carried: empty */
    o.global = false;
    struct limiter *client_only = make(&o);
    limiter_carry(client_only, old);
    ck_assert_int_eq(take_n(client_only, "10.0.0.1", 0, 5), 1);
    ck_assert_int_eq(take_n(client_only, "10.0.0.2", 0, 5), 2);
    ck_assert_int_eq(take_n(client_only, "10.0.0.3", 0, 5), 3);
    limiter_free(client_only);

    /* A changed rate resets the state but keeps the counters. */
    o.rate = 2;
    struct limiter *changed = make(&o);
    ck_assert(!limiter_config_same_limits(limiter_config(old), limiter_config(changed)));
    limiter_carry(changed, old);
    ck_assert_int_eq(take_n(changed, "10.0.0.1", 0, 5), 3);
    limiter_stats(changed, &st);
    ck_assert_uint_eq(st.allowed_client, 6);
    limiter_free(changed);

    /* A changed prefix regroups the keys: per-client state starts over. */
    o.rate = 1;
    o.ipv4_prefix = 24;
    struct limiter *regrouped = make(&o);
    limiter_carry(regrouped, old);
    ck_assert_int_eq(take_n(regrouped, "10.0.0.1", 0, 5), 3);
    limiter_free(regrouped);

    /* Fewer keys: the table stays bounded, recent keys tend to stay. */
    o.ipv4_prefix = 0;
    o.max_keys = 1;
    struct limiter *small = make(&o);
    limiter_carry(small, old);
    limiter_stats(small, &st);
    ck_assert_uint_eq(st.keys, 1);
    limiter_free(small);

    limiter_free(same);
    limiter_free(old);

    o = (struct opts){
        .algorithm = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW, .rate = 10, .per_client = true};
    old = make(&o);
    ck_assert_int_eq(take_n(old, "2001:db8::1", 500, 20), 10);
    same = make(&o);
    limiter_carry(same, old);
    ck_assert_int_eq(take_n(same, "2001:db8::1", 900, 20), 0);
    ck_assert_int_eq(take_n(same, "2001:db8::2", 900, 20), 10);
    limiter_free(same);
    limiter_free(old);
}
END_TEST

/* Config ---------------------------------------------------------------------------------- */

static void assert_refused(Lb__V1__RateLimit *pb, const char *want)
{
    struct limiter_config cfg;
    struct lb_err err = {0};
    ck_assert_int_eq(limiter_config_from_pb(&cfg, pb, &err), LB_EINVAL);
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_str_eq(err.msg, want);
}

START_TEST(config_validation)
{
    Lb__V1__RateLimit pb = LB__V1__RATE_LIMIT__INIT;
    char *proxies[] = {"10.0.0.0/8", "2001:db8::/32", "10.0.0/8"};
    pb.enabled = true;
    pb.rate = 100;
    pb.per_client = true;
    pb.trusted_proxies = proxies;
    pb.n_trusted_proxies = 3;
    assert_refused(&pb, "ratelimit.trusted_proxies[2]: \"10.0.0/8\" is not a CIDR");
    const char *bad[] = {"10.0.0.0/33", "::/129", "1.2.3.4/", "1.2.3.4/a", "1.2.3.4/8x",
                         " 1.2.3.4",    "",       "/8",       "host",      "1.2.3.4/0008"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct limiter_cidr c;
        ck_assert_msg(!limiter_cidr_parse(bad[i], &c), "%s", bad[i]);
    }
    pb.n_trusted_proxies = 2;

    pb.ipv4_prefix = 33;
    assert_refused(&pb, "ratelimit.ipv4_prefix: 33 is not in 1..32 (0 means 32)");
    pb.ipv4_prefix = 24;
    pb.ipv6_prefix = 129;
    assert_refused(&pb, "ratelimit.ipv6_prefix: 129 is not in 1..128 (0 means 128)");
    pb.ipv6_prefix = 64;
    pb.rate = 0;
    assert_refused(&pb, "ratelimit.rate: must be > 0 when enabled");
    pb.rate = 100;
    pb.per_client = false;
    assert_refused(&pb, "ratelimit: an enabled rate limit needs per_client or global");
    pb.per_client = true;
    pb.algorithm = (Lb__V1__RateLimitAlgorithm)7;
    assert_refused(&pb, "ratelimit.algorithm: unknown value 7");
    pb.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW;
    pb.max_keys = LIMITER_MAX_KEYS + 1;
    assert_refused(&pb, "ratelimit.max_keys: 100000001 is above 100000000");
    pb.max_keys = 0;

    struct limiter_config cfg;
    struct lb_err err = {0};
    ck_assert_int_eq(limiter_config_from_pb(&cfg, &pb, &err), LB_OK);
    ck_assert(cfg.enabled);
    ck_assert_uint_eq(cfg.algorithm, LIMITER_SLIDING_WINDOW);
    ck_assert_uint_eq(cfg.burst, 100); /* 0 = rate */
    ck_assert_uint_eq(cfg.max_keys, LIMITER_DEFAULT_KEYS);
    ck_assert_uint_eq(cfg.ipv4_prefix, 24);
    ck_assert_uint_eq(cfg.ipv6_prefix, 64);
    ck_assert_uint_eq(cfg.n_trusted, 2);
    ck_assert_uint_eq(cfg.trusted[0].bits, 96 + 8);
    ck_assert_uint_eq(cfg.trusted[1].bits, 32);

    /* A disabled limit is still checked, but needs no rate. */
    pb.enabled = false;
    pb.rate = 0;
    ck_assert_int_eq(limiter_config_from_pb(&cfg, &pb, &err), LB_OK);
    ck_assert(!cfg.enabled);
    pb.n_trusted_proxies = 3;
    assert_refused(&pb, "ratelimit.trusted_proxies[2]: \"10.0.0/8\" is not a CIDR");

    /* Bare addresses are one host; host bits past the prefix are dropped. */
    struct limiter_cidr c;
    ck_assert(limiter_cidr_parse("192.0.2.7", &c));
    ck_assert_uint_eq(c.bits, 128);
    ck_assert(limiter_cidr_parse("10.1.2.3/8", &c));
    ck_assert_uint_eq(c.bits, 104);
    ck_assert_uint_eq(c.addr[12], 10);
    ck_assert_uint_eq(c.addr[13], 0);
    ck_assert(limiter_cidr_parse("::/0", &c));
    ck_assert_uint_eq(c.bits, 0);
    ck_assert(limiter_cidr_parse("::ffff:10.0.0.0/104", &c));
    ck_assert_uint_eq(c.bits, 104);

    /* limiter_new refuses a config that skipped validation. */
    memset(&cfg, 0, sizeof(cfg));
    cfg.enabled = true;
    cfg.ipv4_prefix = 32;
    cfg.ipv6_prefix = 128;
    cfg.max_keys = 10;
    ck_assert_ptr_null(limiter_new(&cfg, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
}
END_TEST

/* Hand-over: the global state leaves one process at its age and arrives in
 * another whose clock reads differently; other limits start afresh. */
START_TEST(global_state_exported_and_imported)
{
    struct opts o = {.algorithm = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET,
                     .rate = 10,
                     .burst = 5,
                     .global = true};
    struct limiter *a = make(&o);
    ck_assert_int_eq(take_n(a, "10.0.0.1", 1000, 5), 5);
    struct limiter_global_carry c;
    ck_assert(limiter_global_export(a, 1050, &c));
    ck_assert_uint_eq(c.age_ms, 50);
    ck_assert_uint_eq(c.tokens_milli, 0);
    struct limiter *b = make(&o);
    ck_assert(limiter_global_import(b, &c, 7050)); /* the same moment, another clock */
    ck_assert_int_eq(take_n(b, "10.0.0.2", 7050, 5), 0);
    ck_assert_int_eq(take_n(b, "10.0.0.2", 7150, 5), 1); /* 100 ms: one token */
    /* another rate: nothing carried, a full bucket */
    struct opts o2 = o;
    o2.rate = 20;
    struct limiter *d = make(&o2);
    ck_assert(!limiter_global_import(d, &c, 7050));
    ck_assert_int_eq(take_n(d, "10.0.0.2", 7050, 5), 5);
    /* no global scope: nothing to export */
    struct limiter *e = tb(10, 5);
    ck_assert(!limiter_global_export(e, 1000, &c));
    limiter_free(a);
    limiter_free(b);
    limiter_free(d);
    limiter_free(e);
}
END_TEST

static Suite *limiter_suite(void)
{
    Suite *s = suite_create("limiter");
    TCase *tc = tcase_create("token_bucket");
    tcase_add_test(tc, tb_burst_then_refuse);
    tcase_add_test(tc, tb_refills_over_time);
    tcase_add_test(tc, tb_clock_not_moving);
    tcase_add_test(tc, tb_huge_gaps);
    tcase_add_test(tc, tb_header_values);
    tcase_add_test(tc, global_state_exported_and_imported);
    suite_add_tcase(s, tc);
    tc = tcase_create("sliding_window");
    tcase_add_test(tc, sw_window_edges);
    tcase_add_test(tc, sw_clock_not_moving);
    tcase_add_test(tc, sw_huge_gaps);
    tcase_add_test(tc, sw_header_values);
    suite_add_tcase(s, tc);
    tc = tcase_create("headers");
    tcase_add_test(tc, headers_format);
    suite_add_tcase(s, tc);
    tc = tcase_create("scopes");
    tcase_add_test(tc, clients_limited_separately);
    tcase_add_test(tc, ipv4_prefix_groups);
    tcase_add_test(tc, ipv6_prefix_groups);
    tcase_add_test(tc, ipv4_mapped_is_ipv4);
    tcase_add_test(tc, trusted_proxy_xff);
    tcase_add_test(tc, no_trusted_proxies_ignores_xff);
    tcase_add_test(tc, global_and_client);
    tcase_add_test(tc, disabled_passes_everything);
    suite_add_tcase(s, tc);
    tc = tcase_create("bound");
    tcase_add_test(tc, bounded_lru);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, threads_token_bucket_exact);
    tcase_add_test(tc, threads_sliding_window_exact);
    suite_add_tcase(s, tc);
    tc = tcase_create("carry");
    tcase_add_test(tc, carry_keeps_unchanged);
    suite_add_tcase(s, tc);
    tc = tcase_create("config");
    tcase_add_test(tc, config_validation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(limiter_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
