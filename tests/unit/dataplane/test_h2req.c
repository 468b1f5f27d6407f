/* tests/unit/dataplane/test_h2req.c
 *
 * h2req_render(): an HTTP/2 header list becomes an HTTP/1.1 head, byte for
 * byte, and every list that could be framed differently by an HTTP/1
 * backend is refused. Every good head is also parsed by the strict HTTP/1
 * parser, and every shorter buffer is refused without a byte written past
 * its end (heap buffers of exactly that size: ASan sees an overrun). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "h2req.h"
#include "http1.h"

#define MAXF 32

static struct h2req_field fields[MAXF];
static size_t n_fields;

static void reset(void)
{
    n_fields = 0;
}

static void add(const char *name, const char *value)
{
    ck_assert(n_fields < MAXF);
    fields[n_fields++] = (struct h2req_field){(const uint8_t *)name, strlen(name),
                                              (const uint8_t *)value, strlen(value)};
}

/* The four pseudo-headers of a GET of <path>. */
static void base(const char *method, const char *path)
{
    reset();
    add(":method", method);
    add(":scheme", "https");
    add(":authority", "a.example.com");
    add(":path", path);
}

static char out[4096 + 1];

static int render(bool end_stream, bool *chunked, const char **why)
{
    memset(out, 0, sizeof(out));
    return h2req_render(fields, n_fields, end_stream, out, sizeof(out) - 1, chunked, why);
}

/* Renders, compares with <want>, parses it, and checks every shorter buffer. */
static void expect(bool end_stream, const char *want, bool want_chunked)
{
    bool chunked = !want_chunked;
    const char *why = NULL;
    int n = render(end_stream, &chunked, &why);
    ck_assert_msg(n > 0, "refused: %s", why ? why : "?");
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(chunked, want_chunked);
    struct http1_parser p;
    http1_parser_init(&p);
    struct http1_header hdrs[MAXF + 4];
    struct http1_msg m;
    memset(&m, 0, sizeof(m));
    m.headers = hdrs;
    m.cap_headers = MAXF + 4;
    static const struct http1_limits lim = {8192, 32768, 100};
    ck_assert_int_eq(http1_parse_request(&p, out, (size_t)n, &lim, &m), n);
    for (size_t cap = 0; cap < (size_t)n; cap++) {
        char *b = malloc(cap ? cap : 1);
        ck_assert_int_eq(h2req_render(fields, n_fields, end_stream, b, cap, &chunked, &why),
                         H2REQ_NOSPACE);
        free(b);
    }
}

static void refused(bool end_stream, int code)
{
    bool chunked;
    const char *why = NULL;
    ck_assert_int_eq(render(end_stream, &chunked, &why), code);
    ck_assert_ptr_nonnull(why);
}

START_TEST(get_becomes_http11)
{
    base("GET", "/a?b=c");
    add("accept", "*/*");
    expect(true, "GET /a?b=c HTTP/1.1\r\nhost: a.example.com\r\naccept: */*\r\n\r\n", false);
}
END_TEST

START_TEST(host_field_without_authority)
{
    reset();
    add(":method", "GET");
    add(":scheme", "http");
    add(":path", "/");
    add("host", "h.example");
    expect(true, "GET / HTTP/1.1\r\nhost: h.example\r\n\r\n", false);
    base("GET", "/");
    add("host", "a.example.com"); /* the same: fine, one host line */
    expect(true, "GET / HTTP/1.1\r\nhost: a.example.com\r\n\r\n", false);
}
END_TEST

START_TEST(cookies_joined)
{
    base("GET", "/");
    add("cookie", "a=1");
    add("x", "y");
    add("cookie", "b=2");
    expect(true, "GET / HTTP/1.1\r\nhost: a.example.com\r\nx: y\r\ncookie: a=1; b=2\r\n\r\n",
           false);
}
END_TEST

START_TEST(body_framing)
{
    base("POST", "/up");
    add("content-length", "5");
    expect(false, "POST /up HTTP/1.1\r\nhost: a.example.com\r\ncontent-length: 5\r\n\r\n", false);
    base("POST", "/up");
    expect(false, "POST /up HTTP/1.1\r\nhost: a.example.com\r\ntransfer-encoding: chunked\r\n\r\n",
           true);
    base("POST", "/up"); /* END_STREAM on HEADERS: no body at all */
    expect(true, "POST /up HTTP/1.1\r\nhost: a.example.com\r\n\r\n", false);
    base("OPTIONS", "*");
    add("te", "trailers");
    expect(true, "OPTIONS * HTTP/1.1\r\nhost: a.example.com\r\nte: trailers\r\n\r\n", false);
}
END_TEST

START_TEST(connection_specific_refused)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        base("GET", "/");
        add(names[i], "x");
        refused(true, H2REQ_MALFORMED);
    }
    base("GET", "/");
    add("te", "gzip");
    refused(true, H2REQ_MALFORMED);
}
END_TEST

START_TEST(invalid_characters_refused)
{
    static const char *const values[] = {
        "a\r\nx-injected: 1", "a\nb", "a\rb", " a", "a\t", "a\x01", "a\x7f"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        base("GET", "/");
        add("x-a", values[i]);
        refused(true, H2REQ_MALFORMED);
    }
    base("GET", "/");
    fields[n_fields++] =
        (struct h2req_field){(const uint8_t *)"x-a", 3, (const uint8_t *)"a\0b", 3};
    refused(true, H2REQ_MALFORMED);
    static const char *const names[] = {"X-Upper", "x a", "x:a", "x\r\ny", "", "x\"a"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        base("GET", "/");
        add(names[i], "1");
        refused(true, H2REQ_MALFORMED);
    }
    base("GET", "/a b");
    refused(true, H2REQ_MALFORMED);
    base("GET / HTTP/1.1\r\nX", "/");
    refused(true, H2REQ_MALFORMED);
    reset();
    add(":method", "GET");
    add(":scheme", "http");
    add(":authority", "a\r\nx: y");
    add(":path", "/");
    refused(true, H2REQ_MALFORMED);
}
END_TEST

START_TEST(pseudo_headers_checked)
{
    base("GET", "/");
    add(":path", "/again");
    refused(true, H2REQ_MALFORMED); /* duplicate */
    base("GET", "/");
    add(":foo", "x");
    refused(true, H2REQ_MALFORMED); /* unknown */
    base("GET", "/");
    add(":status", "200");
    refused(true, H2REQ_MALFORMED); /* a response's */
    reset();
    add(":method", "GET");
    add("x", "1");
    add(":scheme", "http");
    add(":path", "/");
    add(":authority", "a");
    refused(true, H2REQ_MALFORMED); /* after a regular field */
    reset();
    add(":scheme", "http");
    add(":path", "/");
    add(":authority", "a");
    refused(true, H2REQ_MALFORMED); /* no :method */
    reset();
    add(":method", "GET");
    add(":scheme", "http");
    add(":authority", "a");
    refused(true, H2REQ_MALFORMED); /* no :path */
    base("GET", "relative");
    refused(true, H2REQ_MALFORMED);
    base("GET", "*");
    refused(true, H2REQ_MALFORMED); /* "*" is for OPTIONS */
    base("GET", "/");
    add("host", "other.example");
    refused(true, H2REQ_MALFORMED); /* host disagrees with :authority */
    reset();
    add(":method", "GET");
    add(":scheme", "http");
    add(":path", "/");
    refused(true, H2REQ_MALFORMED); /* no authority at all */
    reset();
    add(":method", "CONNECT");
    add(":authority", "a:443");
    refused(false, H2REQ_CONNECT);
}
END_TEST

static Suite *h2req_suite(void)
{
    Suite *s = suite_create("h2req");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, get_becomes_http11);
    tcase_add_test(tc, host_field_without_authority);
    tcase_add_test(tc, cookies_joined);
    tcase_add_test(tc, body_framing);
    suite_add_tcase(s, tc);
    tc = tcase_create("refuse");
    tcase_add_test(tc, connection_specific_refused);
    tcase_add_test(tc, invalid_characters_refused);
    tcase_add_test(tc, pseudo_headers_checked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(h2req_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
