/* tests/e2e/test_proxy.c: what lb-dataplane does to requests and responses on
 * the way through: connection reuse, bodies, header rewriting, framing. */
#include "e2e.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BIG (8u * 1024 * 1024)

/* A deterministic, non-repeating-looking 8 MiB body. Caller frees. */
static char *make_body(size_t n)
{
    char *b = malloc(n);
    uint32_t x = 2463534242u;
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (char)(x & 0xff);
    }
    return b;
}

/* Number of header lines called <name> in a /headers dump. */
static unsigned count_header(const char *dump, const char *name)
{
    size_t nl = strlen(name);
    unsigned n = 0;
    for (const char *l = strchr(dump, '\n'); l; l = strchr(l, '\n')) {
        l++;
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':')
            n++;
    }
    return n;
}

/* Value of the first header <name> in a /headers dump, into <out>. */
static bool dump_header(const char *dump, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    for (const char *l = strchr(dump, '\n'); l; l = strchr(l, '\n')) {
        l++;
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

static void check_pattern(const struct e2e_resp *r, size_t n)
{
    ck_assert_int_eq(r->status, 200);
    ck_assert_uint_eq(r->body_len, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r->body[i] != e2e_pattern_byte(i))
            ck_abort_msg("body differs at byte %zu", i);
}

START_TEST(keepalive_reuses_upstream_connections)
{
    struct e2e *t = e2e_start(1);
    for (int i = 0; i < 100; i++)
        ck_assert_str_eq(e2e_get(t, "/"), "b0");
    long conns = e2e_backend_stat(t, 0, "connections");
    /* One client connection sits on one worker; at most one upstream
     * connection per worker, plus this /stats connection. */
    ck_assert_int_ge(conns, 2);
    ck_assert_int_le(conns - 1, 2);
    e2e_stop(t);
}
END_TEST

START_TEST(upload_8mib_content_length)
{
    struct e2e *t = e2e_start(1);
    char *body = make_body(BIG);
    char want[17];
    struct e2e_resp r;
    e2e_fnv1a_hex(body, BIG, want);
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "POST", "/hash", NULL, body, BIG, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, want);
    e2e_resp_free(&r);
    free(body);
    e2e_stop(t);
}
END_TEST

START_TEST(upload_8mib_chunked)
{
    struct e2e *t = e2e_start(1);
    char *body = make_body(BIG);
    char want[17], line[32];
    struct e2e_resp r;
    e2e_fnv1a_hex(body, BIG, want);
    struct e2e_conn *c = e2e_connect(e2e_lb_port(t));
    ck_assert_ptr_nonnull(c);
    const char *head =
        "POST /hash HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, head, strlen(head)), 0);
    /* Uneven chunk sizes so that chunk and buffer boundaries never align. */
    size_t off = 0, step = 1;
    while (off < BIG) {
        size_t n = step < BIG - off ? step : BIG - off;
        int k = snprintf(line, sizeof line, "%zx\r\n", n);
        ck_assert_int_eq(e2e_conn_send(c, line, (size_t)k), 0);
        ck_assert_int_eq(e2e_conn_send(c, body + off, n), 0);
        ck_assert_int_eq(e2e_conn_send(c, "\r\n", 2), 0);
        off += n;
        step = step * 3 + 7 > 300000 ? 1 : step * 3 + 7;
    }
    ck_assert_int_eq(e2e_conn_send(c, "0\r\n\r\n", 5), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, want);
    e2e_resp_free(&r);
    e2e_conn_close(c);
    free(body);
    e2e_stop(t);
}
END_TEST

START_TEST(download_8mib_content_length)
{
    struct e2e *t = e2e_start(1);
    struct e2e_resp r;
    char v[32];
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/bytes/8388608", NULL, NULL, 0, &r), 0);
    ck_assert(e2e_resp_header(&r, "Content-Length", v, sizeof v));
    ck_assert_str_eq(v, "8388608");
    check_pattern(&r, BIG);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

START_TEST(download_8mib_chunked)
{
    struct e2e *t = e2e_start(1);
    struct e2e_resp r;
    ck_assert_int_eq(
        e2e_request(e2e_lb_port(t), "GET", "/bytes/8388608?chunked=1", NULL, NULL, 0, &r), 0);
    check_pattern(&r, BIG);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

START_TEST(forwarded_headers_added_hop_by_hop_removed)
{
    struct e2e *t = e2e_start(1);
    struct e2e_resp r;
    char v[256], host[64];
    const char *extra = "Connection: keep-alive, Foo\r\n"
                        "Foo: bar\r\n"
                        "Keep-Alive: timeout=5\r\n"
                        "TE: trailers\r\n"
                        "Upgrade: websocket\r\n"
                        "Proxy-Connection: keep-alive\r\n"
                        "X-Custom: stays\r\n";
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/headers", extra, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(dump_header(r.body, "X-Forwarded-For", v, sizeof v), "no XFF in:\n%s", r.body);
    ck_assert_str_eq(v, "127.0.0.1");
    ck_assert(dump_header(r.body, "X-Forwarded-Proto", v, sizeof v));
    ck_assert_str_eq(v, "http");
    ck_assert(dump_header(r.body, "X-Forwarded-Host", v, sizeof v));
    snprintf(host, sizeof host, "127.0.0.1:%u", e2e_lb_port(t));
    ck_assert_str_eq(v, host);
    ck_assert(dump_header(r.body, "X-Custom", v, sizeof v));
    ck_assert_str_eq(v, "stays");
    ck_assert_msg(count_header(r.body, "Foo") == 0, "Foo forwarded:\n%s", r.body);
    ck_assert_msg(count_header(r.body, "Keep-Alive") == 0, "Keep-Alive forwarded");
    ck_assert_msg(count_header(r.body, "TE") == 0, "TE forwarded");
    ck_assert_msg(count_header(r.body, "Upgrade") == 0, "Upgrade forwarded");
    ck_assert_msg(count_header(r.body, "Proxy-Connection") == 0, "Proxy-Connection forwarded");
    if (dump_header(r.body, "Connection", v, sizeof v))
        ck_assert_msg(strcasestr(v, "foo") == NULL, "Connection: %s forwarded", v);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

START_TEST(request_id_added_or_kept)
{
    struct e2e *t = e2e_start(1);
    struct e2e_resp r;
    char v[256];
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/headers", NULL, NULL, 0, &r), 0);
    ck_assert_msg(dump_header(r.body, "X-Request-Id", v, sizeof v), "no id in:\n%s", r.body);
    ck_assert_uint_ge(strlen(v), 8);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/headers",
                                 "X-Request-Id: client-chosen-42\r\n", NULL, 0, &r),
                     0);
    ck_assert_uint_eq(count_header(r.body, "X-Request-Id"), 1);
    ck_assert(dump_header(r.body, "X-Request-Id", v, sizeof v));
    ck_assert_str_eq(v, "client-chosen-42");
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

START_TEST(head_204_304_framing)
{
    struct e2e *t = e2e_start(1);
    struct e2e_conn *c = e2e_connect(e2e_lb_port(t));
    struct e2e_resp r;
    char v[32];
    ck_assert_ptr_nonnull(c);
    const char *head = "HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, head, strlen(head)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, true), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert(e2e_resp_header(&r, "Content-Length", v, sizeof v));
    ck_assert_str_eq(v, "1000");
    e2e_resp_free(&r);
    const char *s204 = "GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, s204, strlen(s204)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 204);
    e2e_resp_free(&r);
    const char *s304 = "GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, s304, strlen(s304)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 304);
    e2e_resp_free(&r);
    /* Had any of them carried a body, this response would be misread. */
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, get, strlen(get)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "b0");
    e2e_resp_free(&r);
    e2e_conn_close(c);
    e2e_stop(t);
}
END_TEST

/* Number of header lines called <name> in a response head. */
static unsigned head_count(const struct e2e_resp *r, const char *name)
{
    return count_header(r->head, name);
}

/* Responses a backend should not send: repaired on the way, or a 502 while
 * the client has seen nothing of the response. */
START_TEST(off_spec_responses_repaired_or_refused)
{
    struct e2e *t = e2e_start(1);
    unsigned port = e2e_lb_port(t);
    struct e2e_resp r;
    char v[32];

    struct e2e_conn *c = e2e_connect(port);
    ck_assert_ptr_nonnull(c);
    const char *bad_chunk = "GET /bad/bad-chunk HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, bad_chunk, strlen(bad_chunk)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 502);
    ck_assert(r.closed);
    e2e_resp_free(&r);
    e2e_conn_close(c);

    c = e2e_connect(port);
    ck_assert_ptr_nonnull(c);
    const char *no_content = "GET /bad/length-204 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, no_content, strlen(no_content)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 204);
    ck_assert_uint_eq(head_count(&r, "Content-Length"), 0);
    e2e_resp_free(&r);
    /* the stray body bytes were not taken for the next response */
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, get, strlen(get)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "b0");
    e2e_resp_free(&r);

    const char *paths[] = {"/bad/length-list", "/bad/length-twice"};
    for (int i = 0; i < 2; i++) {
        char req[128];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
        ck_assert_int_eq(e2e_conn_send(c, req, (size_t)n), 0);
        ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_uint_eq(head_count(&r, "Content-Length"), 1);
        ck_assert(e2e_resp_header(&r, "Content-Length", v, sizeof v));
        ck_assert_str_eq(v, "3");
        ck_assert_str_eq(r.body, "abc");
        e2e_resp_free(&r);
    }
    e2e_conn_close(c);
    e2e_stop(t);
}
END_TEST

START_TEST(pipelined_answered_in_order)
{
    struct e2e *t = e2e_start(1);
    struct e2e_conn *c = e2e_connect(e2e_lb_port(t));
    struct e2e_resp r;
    ck_assert_ptr_nonnull(c);
    const char *reqs = "GET /slow/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                       "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    char want[17];
    e2e_fnv1a_hex("abc", 3, want);
    ck_assert_int_eq(e2e_conn_send(c, reqs, strlen(reqs)), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_str_eq(r.body, "b0");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_str_eq(r.body, "ok");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_uint_eq(r.body_len, 10);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_str_eq(r.body, want);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_str_eq(r.body, "b0");
    e2e_resp_free(&r);
    e2e_conn_close(c);
    e2e_stop(t);
}
END_TEST

START_TEST(expect_100_continue)
{
    struct e2e *t = e2e_start(1);
    struct e2e_conn *c = e2e_connect(e2e_lb_port(t));
    struct e2e_resp r;
    char want[17];
    ck_assert_ptr_nonnull(c);
    const char *head = "POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       "Expect: 100-continue\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, head, strlen(head)), 0);
    /* The body is held back until the interim response arrives. */
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 100);
    ck_assert(strncmp(r.head, "HTTP/1.1 100 Continue\r\n", 23) == 0);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_send(c, "hello", 5), 0);
    ck_assert_int_eq(e2e_conn_read(c, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    e2e_fnv1a_hex("hello", 5, want);
    ck_assert_str_eq(r.body, want);
    e2e_resp_free(&r);
    e2e_conn_close(c);
    e2e_stop(t);
}
END_TEST

START_TEST(http10_without_keepalive_closes)
{
    struct e2e *t = e2e_start(1);
    size_t len;
    bool closed;
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    char *out = e2e_raw(e2e_lb_port(t), req, strlen(req), e2e_timeout_ms(), &len, &closed);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strncmp(out, "HTTP/1.", 7) == 0 && strncmp(out + 9, "200", 3) == 0, "got %s",
                  out);
    ck_assert_msg(len >= 2 && strcmp(out + len - 2, "b0") == 0, "body is not b0: %s", out);
    ck_assert_msg(closed, "connection left open after an HTTP/1.0 response");
    free(out);
    e2e_stop(t);
}
END_TEST

/* RFC 9112 §3.2.2: an absolute-form target's authority is the Host the
 * backend gets (and X-Forwarded-Host); the target goes in origin-form. */
START_TEST(absolute_form_host_from_authority)
{
    struct e2e *t = e2e_start(1);
    size_t len;
    bool closed;
    const char *req = "GET http://auth.example:8080/headers?x=1 HTTP/1.1\r\n"
                      "Host: other.example\r\nConnection: close\r\n\r\n";
    char *out = e2e_raw(e2e_lb_port(t), req, strlen(req), e2e_timeout_ms(), &len, &closed);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 ", 13) == 0, "got %s", out);
    const char *dump = strstr(out, "\r\n\r\n");
    ck_assert_ptr_nonnull(dump);
    dump += 4;
    char v[128];
    ck_assert_msg(strncmp(dump, "GET /headers?x=1 HTTP/1.1\r\n", 27) == 0, "backend got:\n%s",
                  dump);
    ck_assert_uint_eq(count_header(dump, "Host"), 1);
    ck_assert(dump_header(dump, "Host", v, sizeof v));
    ck_assert_str_eq(v, "auth.example:8080");
    ck_assert(dump_header(dump, "X-Forwarded-Host", v, sizeof v));
    ck_assert_str_eq(v, "auth.example:8080");
    ck_assert_msg(strstr(dump, "other.example") == NULL, "the client's Host went on:\n%s", dump);
    free(out);
    e2e_stop(t);
}
END_TEST

/* The raw bytes after the response head in <out>. */
static const char *after_head(const char *out)
{
    const char *p = strstr(out, "\r\n\r\n");
    ck_assert_ptr_nonnull(p);
    return p + 4;
}

/* RFC 9110 §6.5.1: framing, routing, authentication, response control and
 * content fields never travel in a trailer section, either way. The backend
 * answers with the request trailers it got as its body, and trailers of its
 * own (see lb-backend's /trailers). */
START_TEST(refused_trailer_fields_dropped)
{
    struct e2e *t = e2e_start(1);
    size_t len;
    bool closed;
    const char *req = "POST /trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      "Connection: close\r\n\r\n"
                      "3\r\nabc\r\n0\r\n"
                      "X-Sum: 1\r\nContent-Length: 5\r\nHost: evil.example\r\n"
                      "Authorization: Basic eA==\r\nX-Late: 2\r\ncontent_length: 7\r\n"
                      "X-Forwarded-For: 192.0.2.1\r\n\r\n";
    char *out = e2e_raw(e2e_lb_port(t), req, strlen(req), e2e_timeout_ms(), &len, &closed);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 ", 13) == 0, "got %s", out);
    const char *body = after_head(out);
    /* the request's trailers as the backend got them: one chunk */
    const char *got = "15\r\nX-Sum: 1\r\nX-Late: 2\r\n\r\n";
    ck_assert_msg(strncmp(body, got, strlen(got)) == 0, "backend got trailers, and answered:\n%s",
                  body);
    /* the response's trailers as the client gets them */
    ck_assert_msg(strcmp(body + strlen(got), "0\r\nX-Sum: 42\r\nX-Late: yes\r\n\r\n") == 0,
                  "client got trailers:\n%s", body + strlen(got));
    free(out);

    /* an HTTP/1.0 client gets the body dechunked, with no trailer at all */
    req = "POST /trailers HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    out = e2e_raw(e2e_lb_port(t), req, strlen(req), e2e_timeout_ms(), &len, &closed);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 ", 13) == 0, "got %s", out);
    ck_assert_msg(closed, "HTTP/1.0 dechunked response not closed");
    ck_assert_msg(strcmp(after_head(out), "") == 0, "HTTP/1.0 client got:\n%s", out);
    ck_assert_msg(strstr(out, "X-Sum") == NULL && strstr(out, "Transfer-Encoding") == NULL,
                  "HTTP/1.0 client got:\n%s", out);
    free(out);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_proxy");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"keepalive", keepalive_reuses_upstream_connections},
        {"upload_cl", upload_8mib_content_length},
        {"upload_chunked", upload_8mib_chunked},
        {"download_cl", download_8mib_content_length},
        {"download_chunked", download_8mib_chunked},
        {"forwarded_headers", forwarded_headers_added_hop_by_hop_removed},
        {"request_id", request_id_added_or_kept},
        {"bodiless_framing", head_204_304_framing},
        {"off_spec_responses", off_spec_responses_repaired_or_refused},
        {"pipelining", pipelined_answered_in_order},
        {"expect_continue", expect_100_continue},
        {"http10", http10_without_keepalive_closes},
        {"absolute_form_host", absolute_form_host_from_authority},
        {"trailer_fields", refused_trailer_fields_dropped},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
