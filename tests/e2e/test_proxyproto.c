/* tests/e2e/test_proxyproto.c: the PROXY protocol (v1 text, v2 binary) on
 * both sides, with real processes.
 *
 * In: a frontend that lists 127.0.0.1 in proxy_from takes the client a
 * header names for X-Forwarded-For, the rate limiter's key and the access
 * log, over plain and TLS connections (the header comes before the
 * handshake); a header that is malformed, truncated or missing closes the
 * connection; a frontend that does not list the source closes a connection
 * that starts with a header (a forgery) and serves one that does not.
 * Out: a backend with send_proxy gets a header naming the client first on
 * each new connection (lb-backend --proxy parses it with its own code and
 * answers /proxy with what it said), and its pooled connections serve
 * only the client they were made for.
 *
 * The headers sent here are built by this file, not by the data plane's
 * proxyproto module, so that both sides are checked against the spec. */
#include "e2e.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* ---- worlds -------------------------------------------------------------------------- */

struct cfg {
    const char *from;       /* proxy_from's one entry; NULL: none */
    uint32_t send_proxy;    /* backends' send_proxy */
    uint32_t client_header; /* timeouts.client_header_ms; 0: default */
    uint32_t rate;          /* per-client rate limit (burst 1); 0: none */
    Lb__V1__Tls *tls;       /* NULL: plain */
    char *from_list[1];     /* storage for <from> */
    Lb__V1__RateLimit rl;   /* storage for <rate> */
};

static void tweak(Lb__V1__Snapshot *snap, void *arg)
{
    struct cfg *c = arg;
    if (c->from != NULL) {
        c->from_list[0] = (char *)c->from;
        snap->frontends[0]->n_proxy_from = 1;
        snap->frontends[0]->proxy_from = c->from_list;
    }
    for (size_t i = 0; i < snap->n_backends; i++)
        snap->backends[i]->send_proxy = c->send_proxy;
    if (c->client_header)
        snap->timeouts->client_header_ms = c->client_header;
    if (c->rate) {
        lb__v1__rate_limit__init(&c->rl);
        c->rl.enabled = true;
        c->rl.rate = c->rate;
        c->rl.burst = 1;
        c->rl.per_client = true;
        snap->ratelimit = &c->rl;
    }
    if (c->tls)
        snap->frontends[0]->tls = c->tls;
}

static char *const proxy_backend_args[] = {"--proxy", NULL};

static struct e2e *start(struct cfg *c)
{
    struct e2e_opts o = {.backends = 1,
                         .algorithm = LB__V1__ALGORITHM__ROUND_ROBIN,
                         .workers = 2,
                         .tweak = tweak,
                         .tweak_arg = c,
                         .backend_args = c->send_proxy ? proxy_backend_args : NULL};
    return e2e_start_opts(&o);
}

static double pp_metric(struct e2e *t, const char *result)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "frontend=\"web\",result=\"%s\"", result);
    char *text = e2e_scrape(t);
    double v = text ? e2e_metric(text, "lb_proxy_protocol_total", labels) : NAN;
    free(text);
    return v;
}

/* Polls lb_proxy_protocol_total{result} until it is <want>. */
static bool pp_metric_becomes(struct e2e *t, const char *result, double want)
{
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    while (pp_metric(t, result) != want) {
        if (e2e_now_ms() >= end)
            return false;
        e2e_poll_pause(20);
    }
    return true;
}

/* ---- a blocking client that can send a header first ----------------------------------- */

struct client {
    int fd;
    SSL_CTX *ctx; /* NULL: plain */
    SSL *ssl;
    char buf[65536];
    size_t len;
};

static void client_connect(struct client *c, unsigned port)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->fd, 0);
    uint64_t ms = e2e_timeout_ms();
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
                  strerror(errno));
}

/* The client's own port. */
static unsigned client_port(const struct client *c)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(getsockname(c->fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

static void client_send_raw(struct client *c, const void *p, size_t n)
{
    ck_assert_msg(send(c->fd, p, n, MSG_NOSIGNAL) == (ssize_t)n, "send: %s", strerror(errno));
}

static void client_tls(struct client *c)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(c->ctx);
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "a.example.com");
    ck_assert_msg(SSL_connect(c->ssl) == 1, "TLS handshake with lb failed");
}

static void client_send(struct client *c, const char *s)
{
    size_t n = strlen(s);
    if (c->ssl != NULL)
        ck_assert_int_eq(SSL_write(c->ssl, s, (int)n), (int)n);
    else
        client_send_raw(c, s, n);
}

/* Reads more bytes; 0 at a close (or a reset), -1 on a timeout. */
static ssize_t client_recv(struct client *c)
{
    size_t room = sizeof(c->buf) - 1 - c->len;
    ck_assert_msg(room > 0, "response too large");
    ssize_t n;
    if (c->ssl != NULL) {
        int k = SSL_read(c->ssl, c->buf + c->len, (int)room);
        n = k > 0 ? k : 0;
    } else {
        n = recv(c->fd, c->buf + c->len, room, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        if (n < 0)
            n = 0;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return n;
}

/* Reads one response (Content-Length framed, as lb-backend's are) and
 * returns its status; its body into <body>. */
static int client_response(struct client *c, char *body, size_t bodysz)
{
    c->len = 0;
    for (;;) {
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
            ck_assert_msg(cl != NULL && cl < end, "no Content-Length in:\n%s", c->buf);
            size_t want = strtoul(cl + 17, NULL, 10);
            size_t have = c->len - (size_t)(end + 4 - c->buf);
            if (have >= want) {
                snprintf(body, bodysz, "%.*s", (int)want, end + 4);
                return atoi(c->buf + 9);
            }
        }
        ck_assert_msg(client_recv(c) > 0, "no whole response; got:\n%s", c->buf);
    }
}

/* True when the server closes the connection without answering. */
static bool client_closed_silently(struct client *c)
{
    c->len = 0;
    c->buf[0] = '\0';
    ssize_t n;
    while ((n = client_recv(c)) > 0) {
    }
    return n == 0 && c->len == 0;
}

static void client_close(struct client *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    close(c->fd);
}

/* "GET <path>" on <c>: the status and the body. */
static int client_get(struct client *c, const char *path, char *body, size_t bodysz)
{
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    client_send(c, req);
    return client_response(c, body, bodysz);
}

/* The value of header line <name> in lb-backend's /headers answer. */
static bool header_in(const char *headers, const char *name, char *out, size_t outsz)
{
    char k[64];
    snprintf(k, sizeof(k), "\r\n%s: ", name);
    const char *p = strcasestr(headers, k);
    if (p == NULL)
        return false;
    p += strlen(k);
    size_t n = strcspn(p, "\r\n");
    snprintf(out, outsz, "%.*s", (int)n, p);
    return true;
}

/* ---- headers, built here ---------------------------------------------------------------- */

/* A v2 PROXY header for TCP over IPv4 (<cmd> 1) or LOCAL (<cmd> 0). */
static size_t v2_tcp4(uint8_t *out, int cmd, const char *src, unsigned sport, const char *dst,
                      unsigned dport)
{
    memcpy(out, v2_sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = cmd ? 0x11 : 0x00;
    out[14] = 0;
    out[15] = cmd ? 12 : 0;
    if (!cmd)
        return 16;
    ck_assert_int_eq(inet_pton(AF_INET, src, out + 16), 1);
    ck_assert_int_eq(inet_pton(AF_INET, dst, out + 20), 1);
    out[24] = (uint8_t)(sport >> 8);
    out[25] = (uint8_t)sport;
    out[26] = (uint8_t)(dport >> 8);
    out[27] = (uint8_t)dport;
    return 28;
}

/* A v2 PROXY header for TCP over IPv6 with a TLV after the addresses. */
static size_t v2_tcp6(uint8_t *out, const char *src, unsigned sport, const char *dst,
                      unsigned dport)
{
    memcpy(out, v2_sig, 12);
    out[12] = 0x21;
    out[13] = 0x21;
    out[14] = 0;
    out[15] = 36 + 9; /* addresses, then a PP2_TYPE_AUTHORITY TLV "a.b" and a NOOP */
    ck_assert_int_eq(inet_pton(AF_INET6, src, out + 16), 1);
    ck_assert_int_eq(inet_pton(AF_INET6, dst, out + 32), 1);
    out[48] = (uint8_t)(sport >> 8);
    out[49] = (uint8_t)sport;
    out[50] = (uint8_t)(dport >> 8);
    out[51] = (uint8_t)dport;
    const uint8_t tlv[9] = {0x02, 0x00, 0x03, 'a', '.', 'b', 0x04, 0x00, 0x00};
    memcpy(out + 52, tlv, sizeof(tlv));
    return 52 + sizeof(tlv);
}

/* ---- 1. accepted headers ------------------------------------------------------------------ */

START_TEST(v1_names_the_client)
{
    struct cfg c = {.from = "127.0.0.1/32"};
    struct e2e *t = start(&c);
    struct client cl;
    client_connect(&cl, e2e_lb_port(t));
    client_send(&cl, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 8080\r\n"
                     "GET /headers HTTP/1.1\r\nHost: x\r\n\r\n");
    char body[8192], v[128];
    ck_assert_int_eq(client_response(&cl, body, sizeof(body)), 200);
    ck_assert_msg(header_in(body, "X-Forwarded-For", v, sizeof(v)), "%s", body);
    ck_assert_str_eq(v, "203.0.113.7");
    /* keep-alive: the next request on the connection is the same client's */
    ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
    ck_assert(header_in(body, "X-Forwarded-For", v, sizeof(v)));
    ck_assert_str_eq(v, "203.0.113.7");
    client_close(&cl);
    ck_assert(pp_metric_becomes(t, "accepted", 1));
    ck_assert(e2e_wait_log(t, "lb.log", "\"client\":\"203.0.113.7\"", 2));
    e2e_stop(t);
}
END_TEST

START_TEST(v2_in_pieces_ipv6_with_tlvs)
{
    struct cfg c = {.from = "127.0.0.0/8"};
    struct e2e *t = start(&c);
    struct client cl;
    client_connect(&cl, e2e_lb_port(t));
    uint8_t h[128];
    size_t n = v2_tcp6(h, "2001:db8::7", 40000, "2001:db8::1", 443);
    /* the header in three writes, the request in a fourth */
    client_send_raw(&cl, h, 5);
    e2e_sleep_ms(50); /* lets the data plane see a partial header */
    client_send_raw(&cl, h + 5, 20);
    e2e_sleep_ms(50);
    client_send_raw(&cl, h + 25, n - 25);
    char body[8192], v[128];
    ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
    ck_assert_msg(header_in(body, "X-Forwarded-For", v, sizeof(v)), "%s", body);
    ck_assert_str_eq(v, "2001:db8::7");
    client_close(&cl);
    ck_assert(pp_metric_becomes(t, "accepted", 1));
    e2e_stop(t);
}
END_TEST

START_TEST(v2_local_keeps_the_peer)
{
    struct cfg c = {.from = "127.0.0.1"};
    struct e2e *t = start(&c);
    struct client cl;
    client_connect(&cl, e2e_lb_port(t));
    uint8_t h[32];
    size_t n = v2_tcp4(h, 0, NULL, 0, NULL, 0);
    client_send_raw(&cl, h, n);
    char body[8192], v[128];
    ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
    ck_assert(header_in(body, "X-Forwarded-For", v, sizeof(v)));
    ck_assert_str_eq(v, "127.0.0.1");
    client_close(&cl);
    /* v1 UNKNOWN likewise */
    client_connect(&cl, e2e_lb_port(t));
    client_send(&cl, "PROXY UNKNOWN\r\n");
    ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
    ck_assert(header_in(body, "X-Forwarded-For", v, sizeof(v)));
    ck_assert_str_eq(v, "127.0.0.1");
    client_close(&cl);
    ck_assert(pp_metric_becomes(t, "local", 2));
    e2e_stop(t);
}
END_TEST

/* ---- 2. refused ------------------------------------------------------------------------------ */

START_TEST(missing_malformed_truncated)
{
    struct cfg c = {.from = "127.0.0.1/32", .client_header = 500};
    struct e2e *t = start(&c);
    unsigned port = e2e_lb_port(t);
    struct client cl;
    /* a request with no header first */
    client_connect(&cl, port);
    client_send(&cl, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(client_closed_silently(&cl));
    client_close(&cl);
    /* a v1 header that breaks the grammar */
    client_connect(&cl, port);
    client_send(&cl, "PROXY TCP4 203.0.113.7 127.0.0.1 40000\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(client_closed_silently(&cl));
    client_close(&cl);
    /* a v2 header that stops halfway: closed once the head time is up */
    client_connect(&cl, port);
    uint8_t h[32];
    v2_tcp4(h, 1, "203.0.113.7", 40000, "127.0.0.1", 8080);
    client_send_raw(&cl, h, 20);
    uint64_t t0 = e2e_now_ms();
    ck_assert(client_closed_silently(&cl));
    ck_assert_msg(e2e_now_ms() - t0 >= 400, "closed before the header timeout");
    client_close(&cl);
    /* one that stops halfway and closes */
    client_connect(&cl, port);
    client_send_raw(&cl, h, 14);
    shutdown(cl.fd, SHUT_WR);
    ck_assert(client_closed_silently(&cl));
    client_close(&cl);
    ck_assert(pp_metric_becomes(t, "malformed", 2));
    ck_assert(pp_metric_becomes(t, "missing", 2));
    ck_assert_int_eq(e2e_backend_stat(t, 0, "requests"), 1); /* the stat request only */
    ck_assert(e2e_wait_log(t, "lb.log", "proxy_protocol_refused", 4));
    e2e_stop(t);
}
END_TEST

START_TEST(unlisted_source_cannot_spoof)
{
    struct cfg c = {.from = "192.0.2.0/24"};
    struct e2e *t = start(&c);
    unsigned port = e2e_lb_port(t);
    struct client cl;
    /* no header: a direct client, served */
    client_connect(&cl, port);
    char body[8192], v[128];
    ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
    ck_assert(header_in(body, "X-Forwarded-For", v, sizeof(v)));
    ck_assert_str_eq(v, "127.0.0.1");
    client_close(&cl);
    /* a header (v1, then v2) from a source not listed: a forgery, closed */
    client_connect(&cl, port);
    client_send(&cl,
                "PROXY TCP4 10.9.9.9 127.0.0.1 40000 8080\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(client_closed_silently(&cl));
    client_close(&cl);
    client_connect(&cl, port);
    uint8_t h[128];
    size_t n = v2_tcp4(h, 1, "10.9.9.9", 40000, "127.0.0.1", 8080);
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    memcpy(h + n, req, sizeof(req) - 1);
    client_send_raw(&cl, h, n + sizeof(req) - 1); /* one write: closed, maybe reset, after it */
    ck_assert(client_closed_silently(&cl));
    client_close(&cl);
    ck_assert(pp_metric_becomes(t, "untrusted", 2));
    ck_assert_int_eq(e2e_backend_stat(t, 0, "requests"), 2); /* /headers and the stat */
    e2e_stop(t);
}
END_TEST

/* ---- 3. the client it names counts everywhere ------------------------------------------------ */

START_TEST(rate_limit_keys_on_the_named_client)
{
    struct cfg c = {.from = "127.0.0.1/32", .rate = 1};
    struct e2e *t = start(&c);
    unsigned port = e2e_lb_port(t);
    char body[8192];
    const char *clients[] = {"198.51.100.1", "198.51.100.2", "198.51.100.1"};
    int want[] = {200, 200, 429};
    for (int i = 0; i < 3; i++) {
        struct client cl;
        client_connect(&cl, port);
        char line[128];
        snprintf(line, sizeof(line), "PROXY TCP4 %s 127.0.0.1 40000 8080\r\n", clients[i]);
        client_send(&cl, line);
        ck_assert_int_eq(client_get(&cl, "/", body, sizeof(body)), want[i]);
        client_close(&cl);
    }
    e2e_stop(t);
}
END_TEST

START_TEST(tls_after_the_header)
{
    struct e2e_tls1 tls;
    e2e_tls1_init(&tls, "srv-rsa");
    struct cfg c = {.from = "127.0.0.1/32", .tls = &tls.tls};
    struct e2e *t = start(&c);
    char body[8192], v[128];
    for (int version = 1; version <= 2; version++) {
        struct client cl;
        client_connect(&cl, e2e_lb_port(t));
        if (version == 1) {
            client_send(&cl, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n");
        } else {
            uint8_t h[32];
            size_t n = v2_tcp4(h, 1, "203.0.113.9", 40000, "127.0.0.1", 443);
            client_send_raw(&cl, h, n);
        }
        client_tls(&cl);
        ck_assert_int_eq(client_get(&cl, "/headers", body, sizeof(body)), 200);
        ck_assert(header_in(body, "X-Forwarded-For", v, sizeof(v)));
        ck_assert_str_eq(v, "203.0.113.9");
        ck_assert(header_in(body, "X-Forwarded-Proto", v, sizeof(v)));
        ck_assert_str_eq(v, "https");
        client_close(&cl);
    }
    ck_assert(pp_metric_becomes(t, "accepted", 2));
    e2e_stop(t);
    e2e_tls1_free(&tls);
}
END_TEST

/* ---- 4. sent to backends -------------------------------------------------------------------- */

/* /proxy through lb on <cl>: what the backend's header said. */
static void backend_saw(struct client *cl, char *out, size_t outsz)
{
    ck_assert_int_eq(client_get(cl, "/proxy", out, outsz), 200);
}

static void send_version(uint32_t version)
{
    struct cfg c = {.send_proxy = version};
    struct e2e *t = start(&c);
    unsigned port = e2e_lb_port(t);
    struct client a, b;
    client_connect(&a, port);
    client_connect(&b, port);
    char saw[256], want[256];
    snprintf(want, sizeof(want), "v%u TCP4 127.0.0.1 127.0.0.1 %u %u", version, client_port(&a),
             port);
    backend_saw(&a, saw, sizeof(saw));
    ck_assert_str_eq(saw, want);
    /* a's next requests take the connection made for a */
    backend_saw(&a, saw, sizeof(saw));
    ck_assert_str_eq(saw, want);
    /* b never takes a's connection, though it idles in the pool */
    snprintf(want, sizeof(want), "v%u TCP4 127.0.0.1 127.0.0.1 %u %u", version, client_port(&b),
             port);
    backend_saw(&b, saw, sizeof(saw));
    ck_assert_str_eq(saw, want);
    backend_saw(&a, saw, sizeof(saw));
    ck_assert_msg(strstr(saw, " 127.0.0.1 127.0.0.1 ") != NULL, "%s", saw);
    char ap[32];
    snprintf(ap, sizeof(ap), " %u %u", client_port(&a), port);
    ck_assert_msg(strstr(saw, ap) != NULL, "a's request went over another connection: %s", saw);
    client_close(&a);
    client_close(&b);
    /* two upstream connections, one per client, and a third for this one
     * (the backend takes nothing but PROXY connections: asked through lb) */
    struct client s;
    client_connect(&s, port);
    char stats[256];
    ck_assert_int_eq(client_get(&s, "/stats", stats, sizeof(stats)), 200);
    ck_assert_msg(strstr(stats, "\"connections\":3,") != NULL, "%s", stats);
    client_close(&s);
    e2e_stop(t);
}

START_TEST(send_v1)
{
    send_version(1);
}
END_TEST

START_TEST(send_v2)
{
    send_version(2);
}
END_TEST

START_TEST(accepted_client_is_sent_on)
{
    struct cfg c = {.from = "127.0.0.1/32", .send_proxy = 2};
    struct e2e *t = start(&c);
    struct client cl;
    client_connect(&cl, e2e_lb_port(t));
    client_send(&cl, "PROXY TCP4 198.51.100.9 192.0.2.80 51000 80\r\n");
    char saw[256];
    backend_saw(&cl, saw, sizeof(saw));
    ck_assert_str_eq(saw, "v2 TCP4 198.51.100.9 192.0.2.80 51000 80");
    client_close(&cl);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("proxyproto");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"v1", v1_names_the_client},
        {"v2_pieces_ipv6", v2_in_pieces_ipv6_with_tlvs},
        {"local", v2_local_keeps_the_peer},
        {"refused", missing_malformed_truncated},
        {"unlisted", unlisted_source_cannot_spoof},
        {"ratelimit", rate_limit_keys_on_the_named_client},
        {"tls", tls_after_the_header},
        {"send_v1", send_v1},
        {"send_v2", send_v2},
        {"chain", accepted_client_is_sent_on},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
