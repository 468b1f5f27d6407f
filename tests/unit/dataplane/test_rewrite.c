/* tests/unit/dataplane/test_rewrite.c
 *
 * Each case parses real request bytes with http1_parse_request() and checks
 * the head a backend gets, byte for byte. Every rewrite also checks that
 * rewrite_head_max() bounds it and that each shorter buffer is refused
 * without a byte written past its end (each try gets a heap buffer of
 * exactly that size, so ASan sees any overrun). */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "rewrite.h"

#define CLIENT  "203.0.113.7"
#define NOW_MS  1700000000123ull
#define RNG0    0x9e3779b97f4a7c15ull
#define MAX_OUT 65536

static const struct http1_limits limits = {8192, 32768, 100};

/* The last rewrite: what the backend gets, the id used, the generator. */
static struct http1_header hdrs[100];
static struct http1_msg msg;
static char out[MAX_OUT + 1];
static int out_len;
static char req_id[128];
static uint64_t rng;

static void parse(const char *req)
{
    struct http1_parser p;
    http1_parser_init(&p);
    memset(&msg, 0, sizeof(msg));
    msg.headers = hdrs;
    msg.cap_headers = 100;
    int n = http1_parse_request(&p, req, strlen(req), &limits, &msg);
    ck_assert_msg(n > 0, "parse %d (%s) of:\n%s", n, msg.error_reason ? msg.error_reason : "", req);
}

/* Rewrites <req>; returns the head as a string. */
static const char *rewrite_ident(const char *req, bool tls, const struct rewrite_identity *ident)
{
    parse(req);
    struct rewrite_request rq = {&msg, CLIENT, tls, ident, NOW_MS, &rng, false};
    struct http1_slice id = {NULL, 0};
    rng = RNG0;
    out_len = rewrite_head(&rq, out, MAX_OUT, &id);
    ck_assert_int_gt(out_len, 0);
    out[out_len] = '\0';
    ck_assert_uint_le((size_t)out_len, rewrite_head_max(&rq));
    ck_assert_uint_lt(id.len, sizeof(req_id));
    memcpy(req_id, id.p, id.len);
    req_id[id.len] = '\0';
    uint64_t rng_after = rng;

    for (size_t cap = 0; cap < (size_t)out_len; cap++) {
        char *b = malloc(cap > 0 ? cap : 1);
        ck_assert_ptr_nonnull(b);
        struct http1_slice none = {"untouched", 9};
        rng = RNG0;
        ck_assert_int_eq(rewrite_head(&rq, b, cap, &none), REWRITE_NOSPACE);
        ck_assert_uint_eq(none.len, 9); /* the id is only reported on success */
        free(b);
    }
    rng = rng_after;
    return out;
}

static const char *rewrite(const char *req)
{
    return rewrite_ident(req, false, NULL);
}

/* The generator as conn.c had it, to check ids stay what they were. */
static const char *reference_id(uint64_t state)
{
    static char id[32];
    uint64_t x = state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    snprintf(id, sizeof(id), "%016llx%08x", (unsigned long long)(x * 0x2545F4914F6CDD1Dull),
             (unsigned)(NOW_MS & 0xffffffffu));
    return id;
}

/* What lb adds to a plain-HTTP request with Host h.example and no id. */
static char tail[256];
static const char *lb_tail(void)
{
    snprintf(tail, sizeof(tail),
             "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h.example\r\nX-Request-Id: %s\r\n\r\n",
             reference_id(RNG0));
    return tail;
}

/* How many times <needle> occurs in <s>, in any case. */
static int count_ci(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strcasestr(s, needle); p != NULL; p = strcasestr(p + 1, needle))
        n++;
    return n;
}

static char expect_buf[4096];
static const char *expect(const char *head, const char *rest)
{
    snprintf(expect_buf, sizeof(expect_buf), "%s%s", head, rest);
    return expect_buf;
}

/* ---- hop-by-hop ------------------------------------------------------------ */

START_TEST(hop_by_hop_fields_removed)
{
    const char *r = rewrite("GET /a?b=1 HTTP/1.1\r\n"
                            "Host: h.example\r\n"
                            "Connection: keep-alive, Foo\r\n"
                            "Keep-Alive: timeout=5\r\n"
                            "Foo: bar\r\n"
                            "Accept: */*\r\n"
                            "TE: trailers\r\n"
                            "Upgrade: websocket\r\n"
                            "Proxy-Connection: keep-alive\r\n"
                            "Trailer: X-Sum\r\n"
                            "user-agent: t/1\r\n"
                            "\r\n");
    ck_assert_str_eq(r, expect("GET /a?b=1 HTTP/1.1\r\n"
                               "Host: h.example\r\n"
                               "Accept: */*\r\n"
                               "user-agent: t/1\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(expect_is_not_forwarded)
{
    /* lb answers 100-continue itself */
    const char *r = rewrite("POST /u HTTP/1.1\r\nHost: h.example\r\nExpect: 100-continue\r\n"
                            "Content-Length: 2\r\n\r\n");
    ck_assert_str_eq(r, expect("POST /u HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\nContent-Length: 2\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(connection_naming_x_forwarded_for)
{
    /* the client's list is dropped as hop-by-hop; lb's entry still goes */
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n"
                            "X-Forwarded-For: 10.9.9.9\r\n"
                            "Connection: X-Forwarded-For\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(connection_naming_x_request_id)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n"
                            "X-Request-Id: client-1\r\n"
                            "Connection: x-request-id\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
    ck_assert_str_eq(req_id, reference_id(RNG0));
}
END_TEST

START_TEST(connection_cannot_remove_host_or_framing)
{
    /* the fields that route and frame the request stay whatever Connection says */
    const char *r = rewrite("POST / HTTP/1.1\r\nHost: h.example\r\n"
                            "Connection: Host, Content-Length, X-Forwarded-Host\r\n"
                            "X-Forwarded-Host: evil.example\r\n"
                            "Content-Length: 5\r\n\r\n");
    ck_assert_str_eq(r, expect("POST / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\nContent-Length: 5\r\n",
                               lb_tail()));

    r = rewrite("POST / HTTP/1.1\r\nHost: h.example\r\n"
                "Connection: transfer-encoding\r\n"
                "Transfer-Encoding: chunked\r\n\r\n");
    ck_assert_str_eq(r, expect("POST / HTTP/1.1\r\nHost: h.example\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

/* ---- X-Forwarded-* --------------------------------------------------------- */

START_TEST(xff_added_when_absent)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(xff_appended_in_place)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nx-forwarded-for: 198.51.100.1, 10.0.0.2\r\n"
                            "Host: h.example\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\n"
                               "x-forwarded-for: 198.51.100.1, 10.0.0.2, " CLIENT "\r\n"
                               "Host: h.example\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(xff_two_lines_joined)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n"
                            "X-Forwarded-For: 198.51.100.1\r\n"
                            "X-Forwarded-For: 10.0.0.2\r\n"
                            "Accept: */*\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: 198.51.100.1, 10.0.0.2, " CLIENT "\r\n"
                               "Accept: */*\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(xff_lines_apart_joined_once)
{
    /* one list, the client's address once at its end */
    const char *r = rewrite("GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1\r\n"
                            "Host: h.example\r\n"
                            "X-Forwarded-For: 10.0.0.2\r\n"
                            "Accept: */*\r\n"
                            "X-FORWARDED-FOR: 10.0.0.3\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\n"
                               "X-Forwarded-For: 198.51.100.1, 10.0.0.2, 10.0.0.3, " CLIENT "\r\n"
                               "Host: h.example\r\n"
                               "Accept: */*\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(xff_line_between_dropped_fields_joined)
{
    /* fields lb drops do not split the list */
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n"
                            "X-Forwarded-For: 198.51.100.1\r\n"
                            "Keep-Alive: 5\r\n"
                            "X-Client-Cert-Verified: yes\r\n"
                            "X-Forwarded-For: 10.0.0.2\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: 198.51.100.1, 10.0.0.2, " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(xfp_set_client_copies_dropped)
{
    const char *req = "GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: h.example\r\n"
                      "x-forwarded-proto: wss\r\n\r\n";
    const char *r = rewrite(req);
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
    r = rewrite_ident(req, true, NULL);
    ck_assert_ptr_nonnull(strstr(r, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host:"));
    ck_assert_ptr_null(strcasestr(r, "wss"));
    ck_assert_int_eq(count_ci(r, "forwarded-proto"), 1);
}
END_TEST

START_TEST(xfh_from_host_client_copies_dropped)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nX-Forwarded-Host: evil.example\r\n"
                            "Host: h.example:8080\r\nX-FORWARDED-HOST: evil2\r\n\r\n");
    char want[512];
    snprintf(want, sizeof(want),
             "GET / HTTP/1.1\r\nHost: h.example:8080\r\nX-Forwarded-For: " CLIENT "\r\n"
             "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h.example:8080\r\n"
             "X-Request-Id: %s\r\n\r\n",
             reference_id(RNG0));
    ck_assert_str_eq(r, want);
}
END_TEST

START_TEST(no_host_no_xfh)
{
    const char *r = rewrite("GET / HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n");
    char want[512];
    snprintf(want, sizeof(want),
             "GET / HTTP/1.0\r\nX-Forwarded-For: " CLIENT "\r\nX-Forwarded-Proto: http\r\n"
             "X-Request-Id: %s\r\nConnection: keep-alive\r\n\r\n",
             reference_id(RNG0));
    ck_assert_str_eq(r, want);
}
END_TEST

/* ---- absolute-form (RFC 9112 §3.2.2) ---------------------------------------- */

/* The authority is the Host, sent first and as X-Forwarded-Host; the Host
 * the client sent is not; the target goes in origin-form. */
START_TEST(absolute_form_authority_replaces_host)
{
    const char *r = rewrite("GET http://h.example:8080/a/b?c=1 HTTP/1.1\r\n"
                            "Accept: */*\r\nHost: other.example\r\nX-Forwarded-Host: evil\r\n\r\n");
    char want[512];
    snprintf(want, sizeof(want),
             "GET /a/b?c=1 HTTP/1.1\r\nHost: h.example:8080\r\nAccept: */*\r\n"
             "X-Forwarded-For: " CLIENT "\r\nX-Forwarded-Proto: http\r\n"
             "X-Forwarded-Host: h.example:8080\r\nX-Request-Id: %s\r\n\r\n",
             reference_id(RNG0));
    ck_assert_str_eq(r, want);
    ck_assert_int_eq(count_ci(r, "other.example"), 0);
}
END_TEST

/* Equal authority and Host: one Host line, not two. */
START_TEST(absolute_form_same_host_once)
{
    const char *r = rewrite("POST https://h.example/x HTTP/1.1\r\nHost: h.example\r\n"
                            "Content-Length: 0\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "POST /x HTTP/1.1\r\nHost: h.example\r\n"));
    ck_assert_int_eq(count_ci(r, "\r\nHost:"), 1);
}
END_TEST

START_TEST(absolute_form_empty_path)
{
    static const struct {
        const char *line;
        const char *sent;
    } cases[] = {
        {"GET http://h.example HTTP/1.1", "GET / HTTP/1.1\r\nHost: h.example\r\n"},
        {"GET HTTP://h.example?q=1 HTTP/1.1", "GET /?q=1 HTTP/1.1\r\nHost: h.example\r\n"},
        {"OPTIONS http://h.example HTTP/1.1", "OPTIONS * HTTP/1.1\r\nHost: h.example\r\n"},
        {"OPTIONS http://h.example/ HTTP/1.1", "OPTIONS / HTTP/1.1\r\nHost: h.example\r\n"},
        {"GET http://[::1]:80/ HTTP/1.1", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[256];
        snprintf(req, sizeof(req), "%s\r\nHost: x\r\n\r\n", cases[i].line);
        const char *r = rewrite(req);
        ck_assert_msg(strncmp(r, cases[i].sent, strlen(cases[i].sent)) == 0, "%s sent as:\n%s",
                      cases[i].line, r);
    }
}
END_TEST

/* HTTP/1.0 needs no Host: the authority gives one. */
START_TEST(absolute_form_http10_gets_host)
{
    const char *r = rewrite("GET http://h.example/p HTTP/1.0\r\n\r\n");
    char want[512];
    snprintf(want, sizeof(want),
             "GET /p HTTP/1.0\r\nHost: h.example\r\nX-Forwarded-For: " CLIENT "\r\n%s", lb_tail());
    /* lb_tail() ends the head of an HTTP/1.1 request: 1.0 adds keep-alive */
    char *end = want + strlen(want) - 2;
    snprintf(end, sizeof(want) - (size_t)(end - want), "Connection: keep-alive\r\n\r\n");
    ck_assert_str_eq(r, want);
}
END_TEST

/* ---- X-Request-Id ---------------------------------------------------------- */

START_TEST(request_id_generated_when_absent)
{
    rewrite("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n");
    ck_assert_uint_eq(strlen(req_id), REWRITE_ID_LEN);
    ck_assert_str_eq(req_id, reference_id(RNG0));
    ck_assert_ptr_nonnull(strstr(out, req_id)); /* the id is a slice of the head */
    ck_assert_uint_ne(rng, RNG0);

    /* the next request gets the next id */
    uint64_t state = rng;
    struct rewrite_request rq = {&msg, CLIENT, false, NULL, NOW_MS, &rng, false};
    struct http1_slice id;
    ck_assert_int_eq(rewrite_head(&rq, out, MAX_OUT, &id), out_len);
    ck_assert_uint_eq(id.len, REWRITE_ID_LEN);
    ck_assert(memcmp(id.p, reference_id(state), REWRITE_ID_LEN) == 0);
    ck_assert(memcmp(id.p, reference_id(RNG0), 16) != 0);
}
END_TEST

START_TEST(client_request_id_kept)
{
    const char *r =
        rewrite("GET / HTTP/1.1\r\nHost: h.example\r\nx-request-id: client-chosen-42\r\n"
                "\r\n");
    ck_assert_str_eq(r, "GET / HTTP/1.1\r\nHost: h.example\r\nx-request-id: client-chosen-42\r\n"
                        "X-Forwarded-For: " CLIENT "\r\nX-Forwarded-Proto: http\r\n"
                        "X-Forwarded-Host: h.example\r\n\r\n");
    ck_assert_str_eq(req_id, "client-chosen-42");
    ck_assert_uint_eq(rng, RNG0); /* nothing generated */
}
END_TEST

START_TEST(two_request_ids_last_is_used)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\nX-Request-Id: first\r\n"
                            "X-Request-Id: second\r\n\r\n");
    ck_assert_str_eq(r, "GET / HTTP/1.1\r\nHost: h.example\r\nX-Request-Id: first\r\n"
                        "X-Request-Id: second\r\nX-Forwarded-For: " CLIENT "\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h.example\r\n\r\n");
    ck_assert_str_eq(req_id, "second");
}
END_TEST

START_TEST(empty_request_id_gets_one)
{
    /* as before the split: an empty id counts as none (and is passed on) */
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\nX-Request-Id:\r\n\r\n");
    ck_assert_str_eq(r, expect("GET / HTTP/1.1\r\nHost: h.example\r\nX-Request-Id: \r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
    ck_assert_str_eq(req_id, reference_id(RNG0));
}
END_TEST

/* ---- framing and version --------------------------------------------------- */

START_TEST(content_length_reemitted)
{
    const char *r = rewrite("PUT /x HTTP/1.1\r\ncontent-length: 3, 3\r\nHost: h.example\r\n\r\n");
    ck_assert_str_eq(r, expect("PUT /x HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\nContent-Length: 3\r\n",
                               lb_tail()));
    r = rewrite("PUT /x HTTP/1.1\r\nContent-Length: 007\r\nHost: h.example\r\n\r\n");
    ck_assert_str_eq(r, expect("PUT /x HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\nContent-Length: 7\r\n",
                               lb_tail()));
    r = rewrite("POST /x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\n\r\n");
    ck_assert_str_eq(r, expect("POST /x HTTP/1.1\r\nHost: h.example\r\n"
                               "X-Forwarded-For: " CLIENT "\r\nContent-Length: 0\r\n",
                               lb_tail()));
    r = rewrite("POST /x HTTP/1.1\r\nHost: h.example\r\n"
                "Content-Length: 9007199254740992\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "\r\nContent-Length: 9007199254740992\r\n"));
}
END_TEST

START_TEST(chunked_keeps_transfer_encoding)
{
    const char *r = rewrite("POST /x HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n"
                            "\r\n");
    ck_assert_str_eq(r, expect("POST /x HTTP/1.1\r\nHost: h.example\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "X-Forwarded-For: " CLIENT "\r\n",
                               lb_tail()));
}
END_TEST

START_TEST(no_body_no_length)
{
    const char *r = rewrite("DELETE /x HTTP/1.1\r\nHost: h.example\r\n\r\n");
    ck_assert_ptr_null(strcasestr(r, "content-length"));
    ck_assert_ptr_null(strcasestr(r, "transfer-encoding"));
}
END_TEST

START_TEST(http10_asks_keep_alive_once)
{
    char want[512];
    const char *r = rewrite("GET /old HTTP/1.0\r\nHost: h.example\r\nConnection: Keep-Alive\r\n"
                            "Keep-Alive: timeout=3\r\n\r\n");
    snprintf(want, sizeof(want),
             "GET /old HTTP/1.0\r\nHost: h.example\r\nX-Forwarded-For: " CLIENT "\r\n"
             "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h.example\r\n"
             "X-Request-Id: %s\r\nConnection: keep-alive\r\n\r\n",
             reference_id(RNG0));
    ck_assert_str_eq(r, want);
    /* a 1.0 client that asked for close gets a reusable backend connection too */
    r = rewrite("GET /old HTTP/1.0\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    ck_assert_str_eq(r, want);
}
END_TEST

START_TEST(http11_gets_no_connection_field)
{
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    ck_assert_ptr_null(strcasestr(r, "connection"));
    ck_assert(strncmp(r, "GET / HTTP/1.1\r\n", 16) == 0);
}
END_TEST

/* ---- TLS identity ---------------------------------------------------------- */

static const struct rewrite_identity client1 = {
    true, "CN=client1,O=Example", "spiffe://example.org/ns/a/sa/b",
    "3f0c1e2d4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"};

START_TEST(identity_headers_from_certificate)
{
    const char *r = rewrite_ident("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n", true, &client1);
    char want[1024];
    snprintf(want, sizeof(want),
             "GET / HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: " CLIENT "\r\n"
             "X-Forwarded-Proto: https\r\n"
             "X-Client-Cert-Verified: yes\r\n"
             "X-Client-Cert-Subject: CN=client1,O=Example\r\n"
             "X-Client-Cert-Uri: spiffe://example.org/ns/a/sa/b\r\n"
             "X-Client-Cert-Sha256: %s\r\n"
             "X-Forwarded-Host: h.example\r\nX-Request-Id: %s\r\n\r\n",
             client1.fingerprint, reference_id(RNG0));
    ck_assert_str_eq(r, want);
}
END_TEST

START_TEST(identity_unverified_without_uri)
{
    const struct rewrite_identity unverified = {false, "CN=self", "", "00ff"};
    const char *r = rewrite_ident("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n", true, &unverified);
    ck_assert_ptr_nonnull(strstr(r, "\r\nX-Forwarded-Proto: https\r\n"
                                    "X-Client-Cert-Verified: no\r\n"
                                    "X-Client-Cert-Subject: CN=self\r\n"
                                    "X-Client-Cert-Sha256: 00ff\r\n"
                                    "X-Forwarded-Host: "));
    ck_assert_ptr_null(strstr(r, "Uri"));
}
END_TEST

START_TEST(identity_control_bytes_replaced)
{
    /* nothing a certificate says can end a line or start a field */
    const struct rewrite_identity evil = {
        true, "CN=a\r\nX-Client-Cert-Verified: yes\r\n\tx\x7f\x01\x1f\xc3\xa9", "spiffe://x/\ny",
        "ab"};
    const char *r = rewrite_ident("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n", true, &evil);
    ck_assert_ptr_nonnull(strstr(r, "\r\nX-Client-Cert-Subject: "
                                    "CN=a??X-Client-Cert-Verified: yes???x???\xc3\xa9\r\n"
                                    "X-Client-Cert-Uri: spiffe://x/?y\r\n"));
    ck_assert_int_eq(count_ci(r, "\r\nX-Client-Cert-Verified"), 1); /* lb's own line only */
}
END_TEST

START_TEST(spoofed_identity_stripped)
{
    const char *spoof = "GET / HTTP/1.1\r\nHost: h.example\r\n"
                        "x-client-cert-verified: yes\r\n"
                        "X-CLIENT-CERT-SUBJECT: CN=admin,  O=\tEvil \r\n"
                        "X-Client-Cert-Subject: CN=admin\r\n"
                        "X_Client_Cert_Uri: spiffe://evil\r\n"
                        "x-client_cert-sha256: 00\r\n"
                        "X-Client-Cert-Anything: 1\r\n"
                        "Accept: */*\r\n\r\n";
    const char *plain = "GET / HTTP/1.1\r\nHost: h.example\r\nAccept: */*\r\n";
    /* plain HTTP: no identity at all */
    char want[512];
    snprintf(want, sizeof(want), "%sX-Forwarded-For: " CLIENT "\r\n%s", plain, lb_tail());
    ck_assert_str_eq(rewrite(spoof), want);
    /* TLS without a client certificate: none either */
    const char *r = rewrite_ident(spoof, true, NULL);
    ck_assert_ptr_null(strcasestr(r, "client"));
    ck_assert_ptr_null(strcasestr(r, "evil"));
    ck_assert_ptr_null(strcasestr(r, "admin"));
    /* with one: only lb's */
    r = rewrite_ident(spoof, true, &client1);
    ck_assert_ptr_null(strcasestr(r, "evil"));
    ck_assert_ptr_null(strcasestr(r, "admin"));
    ck_assert_ptr_null(strcasestr(r, "client_"));
    ck_assert_ptr_null(strcasestr(r, "Anything"));
    ck_assert_int_eq(count_ci(r, "x-client-cert-verified"), 1);
    ck_assert_int_eq(count_ci(r, "x-client-cert-subject"), 1);
    const char *v = strstr(r, "X-Client-Cert-Verified");
    ck_assert(strncmp(v, "X-Client-Cert-Verified: yes\r\nX-Client-Cert-Subject: CN=client1", 61) ==
              0);
}
END_TEST

START_TEST(near_identity_names_pass)
{
    /* only the X-Client-Cert- family is lb's */
    const char *r = rewrite("GET / HTTP/1.1\r\nHost: h.example\r\nX-Client-Certs: 1\r\n"
                            "X-Client-Cert: 2\r\nXX-Client-Cert-Verified: 3\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "\r\nX-Client-Certs: 1\r\nX-Client-Cert: 2\r\n"
                                    "XX-Client-Cert-Verified: 3\r\n"));
}
END_TEST

/* ---- the caller's buffer --------------------------------------------------- */

START_TEST(exact_fit_and_one_byte_short)
{
    const char *req = "POST /up HTTP/1.0\r\nHost: h.example\r\nContent-Length: 10\r\n"
                      "X-Forwarded-For: 198.51.100.1\r\n\r\n";
    rewrite_ident(req, true, &client1); /* also refuses every shorter buffer */
    int want = out_len;
    char *b = malloc((size_t)want);
    ck_assert_ptr_nonnull(b);
    struct rewrite_request rq = {&msg, CLIENT, true, &client1, NOW_MS, &rng, false};
    struct http1_slice id;
    rng = RNG0;
    ck_assert_int_eq(rewrite_head(&rq, b, (size_t)want, &id), want);
    ck_assert(memcmp(b, out, (size_t)want) == 0);
    ck_assert(id.p >= b && id.p + id.len <= b + want);
    rng = RNG0;
    ck_assert_int_eq(rewrite_head(&rq, b, (size_t)want - 1, &id), REWRITE_NOSPACE);
    free(b);
}
END_TEST

START_TEST(big_head_within_bound)
{
    /* a head near the parser's limits, every field lb touches repeated */
    static char req[40000];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: h.example\r\n",
                                "long-target-long-target-long-target");
    for (int i = 0; i < 90; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "%s: v%d-%0200d\r\n",
                              i % 3 == 0   ? "X-Forwarded-For"
                              : i % 3 == 1 ? "X-Forwarded-Host"
                                           : "X-Client-Cert-Subject",
                              i, 0);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    const struct rewrite_identity big = {true, "CN=x", "", "ff"};
    struct rewrite_request rq = {&msg, CLIENT, true, &big, NOW_MS, &rng, false};
    parse(req);
    size_t max = rewrite_head_max(&rq);
    rewrite_ident(req, true, &big);
    ck_assert_uint_le((size_t)out_len, max);
    ck_assert_int_eq(strstr(out, "X-Forwarded-For") - out, strstr(req, "X-Forwarded-For") - req);
    ck_assert_ptr_null(strstr(strstr(out, "X-Forwarded-For") + 1, "X-Forwarded-For"));
}
END_TEST

/* An Upgrade the exchange forwards keeps its Upgrade field and says so in
 * "Connection: upgrade"; otherwise both stay hop-by-hop. */
START_TEST(upgrade_kept_only_when_forwarded)
{
    parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
          "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    ck_assert_uint_eq(msg.flags & (HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE),
                      HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE);
    for (int up = 0; up <= 1; up++) {
        struct rewrite_request rq = {&msg, CLIENT, false, NULL, NOW_MS, &rng, up == 1};
        struct http1_slice id;
        rng = RNG0;
        out_len = rewrite_head(&rq, out, MAX_OUT, &id);
        ck_assert_int_gt(out_len, 0);
        ck_assert_uint_le((size_t)out_len, rewrite_head_max(&rq));
        out[out_len] = '\0';
        ck_assert_ptr_nonnull(strstr(out, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        ck_assert_ptr_null(strstr(out, "keep-alive"));
        if (up) {
            ck_assert_ptr_nonnull(strstr(out, "\r\nUpgrade: websocket\r\n"));
            ck_assert_ptr_nonnull(strstr(out, "\r\nConnection: upgrade\r\n"));
        } else {
            ck_assert_ptr_null(strstr(out, "Upgrade:"));
            ck_assert_ptr_null(strstr(out, "Connection:"));
        }
    }
}
END_TEST

static Suite *rewrite_suite(void)
{
    Suite *s = suite_create("rewrite");
    TCase *hop = tcase_create("hop_by_hop");
    tcase_add_test(hop, hop_by_hop_fields_removed);
    tcase_add_test(hop, upgrade_kept_only_when_forwarded);
    tcase_add_test(hop, expect_is_not_forwarded);
    tcase_add_test(hop, connection_naming_x_forwarded_for);
    tcase_add_test(hop, connection_naming_x_request_id);
    tcase_add_test(hop, connection_cannot_remove_host_or_framing);
    suite_add_tcase(s, hop);
    TCase *fwd = tcase_create("forwarded");
    tcase_add_test(fwd, xff_added_when_absent);
    tcase_add_test(fwd, xff_appended_in_place);
    tcase_add_test(fwd, xff_two_lines_joined);
    tcase_add_test(fwd, xff_lines_apart_joined_once);
    tcase_add_test(fwd, xff_line_between_dropped_fields_joined);
    tcase_add_test(fwd, xfp_set_client_copies_dropped);
    tcase_add_test(fwd, xfh_from_host_client_copies_dropped);
    tcase_add_test(fwd, no_host_no_xfh);
    suite_add_tcase(s, fwd);
    TCase *abs = tcase_create("absolute_form");
    tcase_add_test(abs, absolute_form_authority_replaces_host);
    tcase_add_test(abs, absolute_form_same_host_once);
    tcase_add_test(abs, absolute_form_empty_path);
    tcase_add_test(abs, absolute_form_http10_gets_host);
    suite_add_tcase(s, abs);
    TCase *id = tcase_create("request_id");
    tcase_add_test(id, request_id_generated_when_absent);
    tcase_add_test(id, client_request_id_kept);
    tcase_add_test(id, two_request_ids_last_is_used);
    tcase_add_test(id, empty_request_id_gets_one);
    suite_add_tcase(s, id);
    TCase *fr = tcase_create("framing");
    tcase_add_test(fr, content_length_reemitted);
    tcase_add_test(fr, chunked_keeps_transfer_encoding);
    tcase_add_test(fr, no_body_no_length);
    tcase_add_test(fr, http10_asks_keep_alive_once);
    tcase_add_test(fr, http11_gets_no_connection_field);
    suite_add_tcase(s, fr);
    TCase *tls = tcase_create("tls_identity");
    tcase_add_test(tls, identity_headers_from_certificate);
    tcase_add_test(tls, identity_unverified_without_uri);
    tcase_add_test(tls, identity_control_bytes_replaced);
    tcase_add_test(tls, spoofed_identity_stripped);
    tcase_add_test(tls, near_identity_names_pass);
    suite_add_tcase(s, tls);
    TCase *buf = tcase_create("buffer");
    tcase_add_test(buf, exact_fit_and_one_byte_short);
    tcase_add_test(buf, big_head_within_bound);
    suite_add_tcase(s, buf);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rewrite_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
