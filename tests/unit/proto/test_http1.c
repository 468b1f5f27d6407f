/* tests/unit/proto/test_http1.c: the strict HTTP/1.1 parser. Every case is
 * parsed whole, byte by byte against a PROT_NONE guard page, and split in two
 * at every position; all must agree. */
#include "http1.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_HDRS 16
#define NONE_M   255 /* "not a response": parse as a request */

static const struct http1_limits default_limits = {1024, 4096, MAX_HDRS};

struct exp_hdr {
    const char *name;
    const char *value;
    uint8_t id;
    uint8_t flags;
};

struct ok_case {
    const char *name;
    const char *in;
    uint8_t req_meth; /* NONE_M: request; else a response to this method */
    int head_len;     /* expected return; 0: the whole input */
    const char *method;
    const char *target;
    uint8_t meth;
    uint16_t status;
    const char *reason;
    uint8_t minor;
    int32_t host;
    uint8_t framing;
    uint64_t content_length;
    uint32_t flags;
    struct exp_hdr h[10];
};

struct bad_case {
    const char *name;
    const char *in;
    uint8_t req_meth;
    uint16_t status;
    size_t len; /* 0: strlen(in); for inputs holding NUL */
};

/* Parses <in>[0..len) with the parser state <p>; a request when req_meth is NONE_M. */
static int parse(struct http1_parser *p, const char *in, size_t len, const struct http1_limits *lim,
                 uint8_t req_meth, struct http1_msg *m)
{
    if (req_meth == NONE_M)
        return http1_parse_request(p, in, len, lim, m);
    return http1_parse_response(p, in, len, lim, req_meth, m);
}

static void put_slice(char **o, size_t *left, const char *tag, struct http1_slice s,
                      const char *base)
{
    int n = snprintf(*o, *left, "%s=%ld+%u ", tag, s.p ? (long)(s.p - base) : -1L, s.len);
    if (n > 0 && (size_t)n < *left) {
        *o += n;
        *left -= (size_t)n;
    }
}

/* Every field of the outcome, with slices as offsets from <base>. */
static void summarize(char *out, size_t cap, int rc, const struct http1_msg *m, const char *base)
{
    char *o = out;
    size_t left = cap;
    int n = snprintf(o, left, "rc=%d err=%u why=%s ", rc, m->error,
                     m->error_reason ? m->error_reason : "-");
    o += n;
    left -= (size_t)n;
    if (rc < 0)
        return;
    put_slice(&o, &left, "meth", m->method, base);
    put_slice(&o, &left, "tgt", m->target, base);
    put_slice(&o, &left, "auth", m->authority, base);
    put_slice(&o, &left, "rsn", m->reason, base);
    n = snprintf(o, left, "m=%u st=%u mi=%u nh=%u host=%d fr=%u cl=%llu fl=%x ", m->meth, m->status,
                 m->minor, m->n_headers, m->host, m->framing, (unsigned long long)m->content_length,
                 m->flags);
    o += n;
    left -= (size_t)n;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        put_slice(&o, &left, "n", m->headers[i].name, base);
        put_slice(&o, &left, "v", m->headers[i].value, base);
        n = snprintf(o, left, "id=%u f=%u ", m->headers[i].id, m->headers[i].flags);
        if (n > 0 && (size_t)n < left) {
            o += n;
            left -= (size_t)n;
        }
    }
}

static void msg_init(struct http1_msg *m, struct http1_header *h)
{
    memset(m, 0, sizeof(*m));
    m->headers = h;
    m->cap_headers = MAX_HDRS;
}

/* Whole-buffer outcome summary, from an exact-size heap copy (ASan catches
 * any read past the end). */
static int outcome_whole(const char *in, size_t len, const struct http1_limits *lim,
                         uint8_t req_meth, char *sum, size_t cap)
{
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    char *buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, in, len);
    msg_init(&m, h);
    http1_parser_init(&p);
    int rc = parse(&p, buf, len, lim, req_meth, &m);
    ck_assert_int_le(rc, (int)len);
    summarize(sum, cap, rc, &m, buf);
    free(buf);
    return rc;
}

/* Byte by byte, same parser state, each prefix ending right before a PROT_NONE page. */
static void outcome_guarded(const char *in, size_t len, const struct http1_limits *lim,
                            uint8_t req_meth, char *sum, size_t cap)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t span = ((len / (size_t)pg) + 2) * (size_t)pg;
    char *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(map != MAP_FAILED);
    char *guard = map + span - (size_t)pg;
    ck_assert_int_eq(mprotect(guard, (size_t)pg, PROT_NONE), 0);
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    msg_init(&m, h);
    http1_parser_init(&p);
    int rc = HTTP1_INCOMPLETE;
    size_t k = 0;
    for (k = 1; k <= len && rc == HTTP1_INCOMPLETE; k++) {
        memcpy(guard - k, in, k);
        rc = parse(&p, guard - k, k, lim, req_meth, &m);
    }
    summarize(sum, cap, rc, &m, guard - (k - 1));
    ck_assert_int_eq(munmap(map, span), 0);
}

/* Split in two at <at>: the first call sees <at> bytes, the second all. */
static void outcome_split(const char *in, size_t len, size_t at, const struct http1_limits *lim,
                          uint8_t req_meth, char *sum, size_t cap)
{
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    char *buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, in, len);
    msg_init(&m, h);
    http1_parser_init(&p);
    int rc = parse(&p, buf, at, lim, req_meth, &m);
    if (rc == HTTP1_INCOMPLETE)
        rc = parse(&p, buf, len, lim, req_meth, &m);
    summarize(sum, cap, rc, &m, buf);
    free(buf);
}

/* Asserts every way of feeding <in> gives the same outcome; returns the rc. */
static int check_all_feeds(const char *name, const char *in, size_t len,
                           const struct http1_limits *lim, uint8_t req_meth)
{
    static char whole[4096], other[4096];
    int rc = outcome_whole(in, len, lim, req_meth, whole, sizeof(whole));
    outcome_guarded(in, len, lim, req_meth, other, sizeof(other));
    ck_assert_msg(strcmp(whole, other) == 0, "%s: byte by byte differs:\n%s\n%s", name, whole,
                  other);
    for (size_t at = 0; at <= len; at++) {
        outcome_split(in, len, at, lim, req_meth, other, sizeof(other));
        ck_assert_msg(strcmp(whole, other) == 0, "%s: split at %zu differs:\n%s\n%s", name, at,
                      whole, other);
    }
    return rc;
}

static void check_slice(const char *name, const char *what, struct http1_slice s, const char *exp)
{
    if (!exp)
        return;
    ck_assert_msg(s.len == strlen(exp) && memcmp(s.p, exp, s.len) == 0,
                  "%s: %s is '%.*s', expected '%s'", name, what, (int)s.len, s.p ? s.p : "", exp);
}

static void run_ok(const struct ok_case *c)
{
    size_t len = strlen(c->in);
    int rc = check_all_feeds(c->name, c->in, len, &default_limits, c->req_meth);
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    msg_init(&m, h);
    http1_parser_init(&p);
    rc = parse(&p, c->in, len, &default_limits, c->req_meth, &m);
    ck_assert_msg(rc == (c->head_len ? c->head_len : (int)len), "%s: rc %d (error %u: %s)", c->name,
                  rc, m.error, m.error_reason ? m.error_reason : "");
    check_slice(c->name, "method", m.method, c->method);
    check_slice(c->name, "target", m.target, c->target);
    check_slice(c->name, "reason", m.reason, c->reason);
    ck_assert_msg(m.meth == c->meth, "%s: meth %u", c->name, m.meth);
    ck_assert_msg(m.status == c->status, "%s: status %u", c->name, m.status);
    ck_assert_msg(m.minor == c->minor, "%s: minor %u", c->name, m.minor);
    ck_assert_msg(m.host == c->host, "%s: host %d", c->name, m.host);
    ck_assert_msg(m.framing == c->framing, "%s: framing %u", c->name, m.framing);
    ck_assert_msg(m.content_length == c->content_length, "%s: content_length %llu", c->name,
                  (unsigned long long)m.content_length);
    ck_assert_msg(m.flags == c->flags, "%s: flags %x, expected %x", c->name, m.flags, c->flags);
    ck_assert_uint_eq(m.error, 0);
    uint32_t n = 0;
    while (n < 10 && c->h[n].name)
        n++;
    ck_assert_msg(m.n_headers == n, "%s: %u headers, expected %u", c->name, m.n_headers, n);
    for (uint32_t i = 0; i < n; i++) {
        check_slice(c->name, "header name", m.headers[i].name, c->h[i].name);
        check_slice(c->name, "header value", m.headers[i].value, c->h[i].value);
        ck_assert_msg(m.headers[i].id == c->h[i].id, "%s: header %u id %u", c->name, i,
                      m.headers[i].id);
        ck_assert_msg(m.headers[i].flags == c->h[i].flags, "%s: header %u flags %u", c->name, i,
                      m.headers[i].flags);
    }
}

static void run_bad(const struct bad_case *c)
{
    size_t len = c->len ? c->len : strlen(c->in);
    check_all_feeds(c->name, c->in, len, &default_limits, c->req_meth);
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    msg_init(&m, h);
    http1_parser_init(&p);
    int rc = parse(&p, c->in, len, &default_limits, c->req_meth, &m);
    ck_assert_msg(rc == HTTP1_INVALID, "%s: rc %d, expected HTTP1_INVALID", c->name, rc);
    ck_assert_msg(m.error == c->status, "%s: error %u (%s), expected %u", c->name, m.error,
                  m.error_reason ? m.error_reason : "", c->status);
    ck_assert_msg(m.error_reason && m.error_reason[0], "%s: no reason", c->name);
}

/* Table helpers; clang-format would lay their braced initializers out as blocks. */
/* clang-format off */
#define R             NONE_M
#define KA            HTTP1_MF_KEEP_ALIVE
#define HOP           HTTP1_HF_HOP
#define H(n, v, i, f) {n, v, i, f}
#define HOST(v)       H("Host", v, HTTP1_H_HOST, 0)
/* A valid request; its headers last, {0} for none. */
#define OKQ(name, in, head_len, method, target, meth, minor, host, framing, cl, flags, ...) \
    {name, in, R, head_len, method, target, meth, 0, NULL, minor, host, framing, cl, flags, \
     {__VA_ARGS__}}
/* A valid response to a <req_meth> request; its headers last, {0} for none. */
#define OKS(name, in, req_meth, head_len, status, reason, minor, framing, cl, flags, ...) \
    {name, in, req_meth, head_len, NULL, NULL, 0, status, reason, minor, -1, framing, cl, flags, \
     {__VA_ARGS__}}
/* An invalid message and the status it must be answered with. */
#define BAD(name, in, req_meth, status)       {name, in, req_meth, status, 0}
/* The same for an input holding NUL bytes: its length given. */
#define BADN(name, in, req_meth, status, len) {name, in, req_meth, status, len}
/* clang-format on */

static const struct ok_case ok_requests[] = {
    OKQ("simple get", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, "GET", "/", HTTP1_M_GET, 1,
        0, HTTP1_BODY_NONE, 0, KA, HOST("example.com")),
    OKQ("leading empty lines", "\r\n\nGET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n", 0, "GET", "/a?b=c",
        HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n", 0, "GET", "/", HTTP1_M_GET, 1, 0,
        HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("mixed line ends", "GET / HTTP/1.1\r\nHost: x\n\r\n", 0, "GET", "/", HTTP1_M_GET, 1, 0,
        HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 0, "GET", "/", HTTP1_M_GET, 0, -1,
        HTTP1_BODY_NONE, 0, 0, {0}),
    OKQ("http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, "GET", "/",
        HTTP1_M_GET, 0, -1, HTTP1_BODY_NONE, 0, KA,
        H("Connection", "Keep-Alive", HTTP1_H_CONNECTION, HOP)),
    OKQ("http/1.0 keep-alive and close", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        0, "GET", "/", HTTP1_M_GET, 0, -1, HTTP1_BODY_NONE, 0, HTTP1_MF_CONN_CLOSE,
        H("Connection", "keep-alive, close", HTTP1_H_CONNECTION, HOP)),
    OKQ("http/1.1 close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0, "GET", "/",
        HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, HTTP1_MF_CONN_CLOSE, HOST("x"),
        H("Connection", "close", HTTP1_H_CONNECTION, HOP)),
    OKQ("http/1.9 is 1.1", "GET / HTTP/1.9\r\nHost: x\r\n\r\n", 0, "GET", "/", HTTP1_M_GET, 1, 0,
        HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("post with body", "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 48,
        "POST", "/f", HTTP1_M_POST, 1, 0, HTTP1_BODY_LENGTH, 5, KA, HOST("x"),
        H("Content-Length", "5", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("equal content-length list",
        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 ,5,\t5\r\ncontent-length: 5\r\n\r\n", 0,
        "PUT", "/", HTTP1_M_PUT, 1, 0, HTTP1_BODY_LENGTH, 5, KA, HOST("x"),
        H("Content-Length", "5 ,5,\t5", HTTP1_H_CONTENT_LENGTH, 0),
        H("content-length", "5", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("content-length zero", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0, "POST",
        "/", HTTP1_M_POST, 1, 0, HTTP1_BODY_LENGTH, 0, KA, HOST("x"),
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("content-length 2^53 with leading zeros",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0009007199254740992\r\n\r\n", 0, "POST", "/",
        HTTP1_M_POST, 1, 0, HTTP1_BODY_LENGTH, 9007199254740992ull, KA, HOST("x"),
        H("Content-Length", "0009007199254740992", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0, "POST",
        "/", HTTP1_M_POST, 1, 0, HTTP1_BODY_CHUNKED, 0, KA, HOST("x"),
        H("Transfer-Encoding", "chunked", HTTP1_H_TRANSFER_ENCODING, 0)),
    OKQ("chunked in any case", "POST / HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n",
        0, "POST", "/", HTTP1_M_POST, 1, 0, HTTP1_BODY_CHUNKED, 0, KA, HOST("x"),
        H("TRANSFER-ENCODING", "CHUNKED", HTTP1_H_TRANSFER_ENCODING, 0)),
    OKQ("options asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0, "OPTIONS", "*",
        HTTP1_M_OPTIONS, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("absolute form", "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, "GET",
        "http://example.com/x", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("example.com")),
    OKQ("absolute form https uppercase", "DELETE HTTPS://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 0,
        "DELETE", "HTTPS://a/b", HTTP1_M_DELETE, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("a")),
    OKQ("connection options are hop-by-hop",
        "GET / HTTP/1.1\r\nX-Foo: 1\r\nHost: x\r\nConnection: x-foo, Host,content-length, "
        "transfer-encoding\r\nContent-Length: 0\r\n\r\n",
        0, "GET", "/", HTTP1_M_GET, 1, 1, HTTP1_BODY_LENGTH, 0, KA,
        H("X-Foo", "1", HTTP1_H_OTHER, HOP), HOST("x"),
        H("Connection", "x-foo, Host,content-length, transfer-encoding", HTTP1_H_CONNECTION, HOP),
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("hop-by-hop by name",
        "GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: timeout=5\r\nProxy-Connection: "
        "keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\nX-Forwarded-For: 1.2.3.4\r\n"
        "x-forwarded-proto: https\r\nX-Forwarded-Host: a\r\nX-Request-Id: abc\r\n\r\n",
        0, "GET", "/", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x"),
        H("Keep-Alive", "timeout=5", HTTP1_H_KEEP_ALIVE, HOP),
        H("Proxy-Connection", "keep-alive", HTTP1_H_PROXY_CONNECTION, HOP),
        H("TE", "trailers", HTTP1_H_TE, HOP), H("Trailer", "X-Sum", HTTP1_H_TRAILER, HOP),
        H("X-Forwarded-For", "1.2.3.4", HTTP1_H_X_FORWARDED_FOR, 0),
        H("x-forwarded-proto", "https", HTTP1_H_X_FORWARDED_PROTO, 0),
        H("X-Forwarded-Host", "a", HTTP1_H_X_FORWARDED_HOST, 0),
        H("X-Request-Id", "abc", HTTP1_H_X_REQUEST_ID, 0)),
    OKQ("upgrade",
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0,
        "GET", "/ws", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0,
        KA | HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE, HOST("x"),
        H("Connection", "Upgrade", HTTP1_H_CONNECTION, HOP),
        H("Upgrade", "websocket", HTTP1_H_UPGRADE, HOP)),
    OKQ("expect 100-continue",
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", 0,
        "POST", "/", HTTP1_M_POST, 1, 0, HTTP1_BODY_LENGTH, 1, KA | HTTP1_MF_EXPECT_CONTINUE,
        HOST("x"), H("Expect", "100-Continue", HTTP1_H_EXPECT, HOP),
        H("Content-Length", "1", HTTP1_H_CONTENT_LENGTH, 0)),
    OKQ("expect ignored in 1.0", "GET / HTTP/1.0\r\nExpect: whatever\r\n\r\n", 0, "GET", "/",
        HTTP1_M_GET, 0, -1, HTTP1_BODY_NONE, 0, 0, H("Expect", "whatever", HTTP1_H_EXPECT, HOP)),
    OKQ("ows trimmed, empty and obs-text values",
        "GET / HTTP/1.1\r\nHost:x\r\nX-A: \t v a l \t\r\nX-E:\r\nX-O: \x80\xff\r\nX-S:   \r\n\r\n",
        0, "GET", "/", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x"),
        H("X-A", "v a l", 0, 0), H("X-E", "", 0, 0), H("X-O", "\x80\xff", 0, 0),
        H("X-S", "", 0, 0)),
    OKQ("host forms", "GET / HTTP/1.1\r\nX-1: a\r\nhOsT: [::1]:8080\r\n\r\n", 0, "GET", "/",
        HTTP1_M_GET, 1, 1, HTTP1_BODY_NONE, 0, KA, H("X-1", "a", 0, 0),
        H("hOsT", "[::1]:8080", HTTP1_H_HOST, 0)),
    OKQ("host ipv4 port", "GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", 0, "GET", "/",
        HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("127.0.0.1:80")),
    OKQ("host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, "GET", "/", HTTP1_M_GET, 1, 0,
        HTTP1_BODY_NONE, 0, KA, HOST("")),
    OKQ("host pct and sub-delims", "GET / HTTP/1.1\r\nHost: a%20b.c-d_e~!$&'()*+,;=\r\n\r\n", 0,
        "GET", "/", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("a%20b.c-d_e~!$&'()*+,;=")),
    OKQ("other method and tchar name",
        "PURGE /x HTTP/1.1\r\nHost: x\r\n!#$%&'*+-.^_`|~09aZ: y\r\n\r\n", 0, "PURGE", "/x",
        HTTP1_M_OTHER, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x"),
        H("!#$%&'*+-.^_`|~09aZ", "y", 0, 0)),
    OKQ("methods are case-sensitive", "get / HTTP/1.1\r\nHost: x\r\n\r\n", 0, "get", "/",
        HTTP1_M_OTHER, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("head patch trace", "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 0, "TRACE", "/", HTTP1_M_TRACE,
        1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("pipelined second request untouched",
        "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 28, "HEAD", "/",
        HTTP1_M_HEAD, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("absolute form without path", "GET http://a:8080?q HTTP/1.1\r\nHost: b\r\n\r\n", 0, "GET",
        "http://a:8080?q", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("b")),
    OKQ("absolute form http/1.0 without host", "GET http://[::1]:80/x HTTP/1.0\r\n\r\n", 0, "GET",
        "http://[::1]:80/x", HTTP1_M_GET, 0, -1, HTTP1_BODY_NONE, 0, 0, {0}),
    OKQ("encoded hash in target", "GET /a%23b HTTP/1.1\r\nHost: x\r\n\r\n", 0, "GET", "/a%23b",
        HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x")),
    OKQ("underscores in other names pass",
        "GET / HTTP/1.1\r\nHost: x\r\nX_Content_Length: 1\r\nContent_Type: a\r\n"
        "Content_Length_: 2\r\n\r\n",
        0, "GET", "/", HTTP1_M_GET, 1, 0, HTTP1_BODY_NONE, 0, KA, HOST("x"),
        H("X_Content_Length", "1", 0, 0), H("Content_Type", "a", 0, 0),
        H("Content_Length_", "2", 0, 0)),
    OKQ("patch with empty connection elements",
        "PATCH / HTTP/1.1\r\nHost: x\r\nConnection: ,\r\n\r\n", 0, "PATCH", "/", HTTP1_M_PATCH, 1,
        0, HTTP1_BODY_NONE, 0, KA, HOST("x"), H("Connection", ",", HTTP1_H_CONNECTION, HOP)),
};

static const struct bad_case bad_requests[] = {
    /* request smuggling classics */
    BAD("CL and TE",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", R,
        400),
    BAD("TE and CL",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", R,
        400),
    BAD("TE chunked, identity",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", R, 400),
    BAD("TE space before colon",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", R, 400),
    BAD("TE vertical tab",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0b"
        "chunked\r\n\r\n",
        R, 400),
    BAD("TE obs-fold", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", R,
        400),
    BAD("obs-fold tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", R, 400),
    BAD("obs-fold after request line", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", R, 400),
    BAD("duplicate CL 5/6",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", R, 400),
    BAD("CL list 5,6", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", R, 400),
    BAD("CL +5", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", R, 400),
    BAD("CL -1", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  -1\r\n\r\n", R, 400),
    BAD("CL 0x10", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", R, 400),
    BAD("CL empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", R, 400),
    BAD("CL trailing comma", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\n", R, 400),
    BAD("CL space inside", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\n", R, 400),
    BAD("CL 2^53+1", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9007199254740993\r\n\r\n", R,
        400),
    BAD("CL overflow",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", R, 400),
    BAD("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", R, 400),
    BAD("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", R, 400),
    BAD("two Hosts in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", R, 400),
    BAD("missing Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", R, 400),
    BAD("TE chunked twice",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
        "chunked\r\n\r\n",
        R, 400),
    BAD("TE gzip only", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", R, 400),
    BAD("TE gzip then chunked",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", R, 501),
    BAD("TE gzip then chunked over two lines",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTRANSFER-ENCODING: "
        "CHUNKED\r\n\r\n",
        R, 501),
    BAD("TE empty element",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n", R, 400),
    BAD("TE empty", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", R, 400),
    BAD("TE parameter", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", R,
        400),
    BAD("TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", R, 400),
    /* bytes */
    BAD("bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", R, 400),
    BAD("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("bare CR before leading LF", "\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("CR CR LF ends a field", "GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", R, 400),
    BADN("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", R, 400, 35),
    BAD("DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n", R, 400),
    BAD("CTL in value", "GET / HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n", R, 400),
    /* request line */
    BAD("lowercase http", "GET / http/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("space before version twice", "GET /  HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("trailing space", "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", R, 400),
    BAD("missing version", "GET /\r\nHost: x\r\n\r\n", R, 400),
    /* HTTP/0.9: refused once its only line ends, with no head end to wait for */
    BAD("http/0.9 line", "GET /\r\n", R, 400),
    BAD("http/0.9 line bare LF", "GET /index.html\n", R, 400),
    BAD("http/0.9 line and empty line", "GET /\r\n\r\n", R, 400),
    BAD("http/0.9 after empty lines", "\r\n\r\nGET /x?y\r\n", R, 400),
    BAD("method alone", "GET\r\n", R, 400),
    BAD("version junk", "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", R, 400),
    BAD("version two digits", "GET / HTTP/11.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("bad method byte", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("empty method", " / HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("http/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", R, 505),
    BAD("http/0.9", "GET / HTTP/0.9\r\nHost: x\r\n\r\n", R, 505),
    BAD("connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", R, 501),
    /* target */
    BAD("target DEL", "GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("target high byte", "GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BADN("target NUL", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", R, 400, 28),
    BAD("target tab", "GET /\t HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("target relative", "GET a HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("asterisk without OPTIONS", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("other scheme", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("scheme without authority", "GET http:// HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("fragment", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("empty fragment", "GET /a?b# HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("fragment only", "GET # HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("fragment in absolute form", "GET http://x/a#b HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("fragment in http/0.9 line", "GET /#a\r\n", R, 400),
    BAD("absolute form empty host", "GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form empty host query", "GET http://?a HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form userinfo", "GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form user and password", "GET https://u:p@x/ HTTP/1.1\r\nHost: x\r\n\r\n", R,
        400),
    BAD("absolute form empty userinfo", "GET http://@x/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form empty port", "GET http://x:/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form bad port", "GET http://x:8o/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form unclosed bracket", "GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    BAD("absolute form backslash", "GET http://x\\y/ HTTP/1.1\r\nHost: x\r\n\r\n", R, 400),
    /* framing names with '_' for '-', which CGI reads as the real ones */
    BAD("Content_Length", "POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n", R, 400),
    BAD("content_length lowercase", "POST / HTTP/1.0\r\ncontent_length: 5\r\n\r\n", R, 400),
    BAD("CONTENT_LENGTH with Content-Length",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nCONTENT_LENGTH: 5\r\n\r\n", R, 400),
    BAD("Transfer_Encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n", R,
        400),
    BAD("transfer_encoding with Content-Length",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ntransfer_encoding: chunked\r\n\r\n", R,
        400),
    /* field lines */
    BAD("empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", R, 400),
    BAD("space in name", "GET / HTTP/1.1\r\nHost: x\r\nX Y: v\r\n\r\n", R, 400),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", R, 400),
    BAD("no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", R, 400),
    BAD("non-tchar name", "GET / HTTP/1.1\r\nHost: x\r\nX@A: v\r\n\r\n", R, 400),
    BAD("connection non-token", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close x\r\n\r\n", R, 400),
    /* Host values */
    BAD("host space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", R, 400),
    BAD("host slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", R, 400),
    BAD("host at", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", R, 400),
    BAD("host question", "GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", R, 400),
    BAD("host hash", "GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", R, 400),
    BAD("host backslash", "GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", R, 400),
    BAD("host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", R, 400),
    BAD("host bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", R, 400),
    BAD("host long port", "GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", R, 400),
    BAD("host unclosed bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", R, 400),
    BAD("host only port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", R, 400),
    BAD("host bad pct", "GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", R, 400),
    /* Expect */
    BAD("expect other", "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue-x\r\n\r\n", R, 417),
    BAD("expect 400 wins over 417", "GET / HTTP/1.1\r\nExpect: foo\r\nX: \x01\r\nHost: x\r\n\r\n",
        R, 400),
};

static const struct ok_case ok_responses[] = {
    OKS("200 with length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HTTP1_M_GET, 38,
        200, "OK", 1, HTTP1_BODY_LENGTH, 5, KA,
        H("Content-Length", "5", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET, 0, 200, "", 1,
        HTTP1_BODY_LENGTH, 0, KA, H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("empty reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET, 0, 200, "", 1,
        HTTP1_BODY_LENGTH, 0, KA, H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("reason with spaces and obs-text", "HTTP/1.1 404 Not  Found \xe9\r\n\r\n", HTTP1_M_GET, 0,
        404, "Not  Found \xe9", 1, HTTP1_BODY_CLOSE, 0, 0, {0}),
    OKS("204", "HTTP/1.1 204 No Content\r\n\r\n", HTTP1_M_DELETE, 0, 204, "No Content", 1,
        HTTP1_BODY_NONE, 0, KA, {0}),
    OKS("204 with length 0", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", HTTP1_M_DELETE,
        0, 204, "No Content", 1, HTTP1_BODY_NONE, 0, KA,
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, HOP)),
    OKS("204 with a length that is not 0", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        HTTP1_M_DELETE, 0, 204, "No Content", 1, HTTP1_BODY_NONE, 0, 0,
        H("Content-Length", "3", HTTP1_H_CONTENT_LENGTH, HOP)),
    OKS("repeated length as a list", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", HTTP1_M_GET,
        0, 200, "OK", 1, HTTP1_BODY_LENGTH, 3, KA | HTTP1_MF_CL_CANONICAL,
        H("Content-Length", "3, 3", HTTP1_H_CONTENT_LENGTH, HOP)),
    OKS("repeated length fields",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", HTTP1_M_GET, 0, 200,
        "OK", 1, HTTP1_BODY_LENGTH, 3, KA | HTTP1_MF_CL_CANONICAL,
        H("Content-Length", "3", HTTP1_H_CONTENT_LENGTH, HOP),
        H("Content-Length", "3", HTTP1_H_CONTENT_LENGTH, HOP)),
    OKS("304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", HTTP1_M_GET,
        0, 304, "Not Modified", 1, HTTP1_BODY_NONE, 0, KA,
        H("Content-Length", "10", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("100 continue", "HTTP/1.1 100 Continue\r\n\r\n", HTTP1_M_POST, 0, 100, "Continue", 1,
        HTTP1_BODY_NONE, 0, KA, {0}),
    OKS("HEAD response keeps length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", HTTP1_M_HEAD,
        0, 200, "OK", 1, HTTP1_BODY_NONE, 0, KA,
        H("Content-Length", "10", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_M_GET, 0, 200,
        "OK", 1, HTTP1_BODY_CHUNKED, 0, KA,
        H("Transfer-Encoding", "chunked", HTTP1_H_TRANSFER_ENCODING, 0)),
    OKS("chunked with length",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        HTTP1_M_GET, 0, 200, "OK", 1, HTTP1_BODY_CHUNKED, 0, 0,
        H("Content-Length", "3", HTTP1_H_CONTENT_LENGTH, HOP),
        H("Transfer-Encoding", "gzip, chunked", HTTP1_H_TRANSFER_ENCODING, 0)),
    OKS("te not chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HTTP1_M_GET, 0, 200,
        "OK", 1, HTTP1_BODY_CLOSE, 0, 0,
        H("Transfer-Encoding", "gzip", HTTP1_H_TRANSFER_ENCODING, 0)),
    OKS("no length", "HTTP/1.1 200 OK\r\nServer: s\r\n\r\n", HTTP1_M_GET, 0, 200, "OK", 1,
        HTTP1_BODY_CLOSE, 0, 0, H("Server", "s", 0, 0)),
    OKS("1.0 with length", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", HTTP1_M_GET, 0, 200,
        "OK", 0, HTTP1_BODY_LENGTH, 1, 0, H("Content-Length", "1", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
        HTTP1_M_GET, 0, 200, "OK", 0, HTTP1_BODY_LENGTH, 1, KA,
        H("Connection", "keep-alive", HTTP1_H_CONNECTION, HOP),
        H("Content-Length", "1", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", HTTP1_M_GET,
        0, 200, "OK", 1, HTTP1_BODY_LENGTH, 1, HTTP1_MF_CONN_CLOSE,
        H("Connection", "close", HTTP1_H_CONNECTION, HOP),
        H("Content-Length", "1", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("no host or expect rules",
        "HTTP/1.1 200 OK\r\nHost: a b\r\nHost: c\r\nExpect: x\r\nContent-Length: 0\r\n\r\n",
        HTTP1_M_GET, 0, 200, "OK", 1, HTTP1_BODY_LENGTH, 0, KA, H("Host", "a b", HTTP1_H_HOST, 0),
        H("Host", "c", HTTP1_H_HOST, 0), H("Expect", "x", HTTP1_H_EXPECT, 0),
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("framing names with '_' pass in responses",
        "HTTP/1.1 200 OK\r\nContent_Length: 9\r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET, 0, 200,
        "OK", 1, HTTP1_BODY_LENGTH, 0, KA, H("Content_Length", "9", 0, 0),
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("407 to CONNECT", "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        HTTP1_M_CONNECT, 0, 407, "Proxy Authentication Required", 1, HTTP1_BODY_LENGTH, 0, KA,
        H("Content-Length", "0", HTTP1_H_CONTENT_LENGTH, 0)),
    OKS("101 upgrade",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        HTTP1_M_GET, 0, 101, "Switching Protocols", 1, HTTP1_BODY_NONE, 0,
        KA | HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE,
        H("Upgrade", "websocket", HTTP1_H_UPGRADE, HOP),
        H("Connection", "upgrade", HTTP1_H_CONNECTION, HOP)),
};

static const struct bad_case bad_responses[] = {
    BAD("http/2.0", "HTTP/2.0 200 OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("lowercase", "http/1.1 200 OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("status 99", "HTTP/1.1 099 X\r\n\r\n", HTTP1_M_GET, 502),
    BAD("status 600", "HTTP/1.1 600 X\r\n\r\n", HTTP1_M_GET, 502),
    BAD("two-digit status", "HTTP/1.1 20 OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("two spaces", "HTTP/1.1  200 OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("no space before reason", "HTTP/1.1 200OK\r\n\r\n", HTTP1_M_GET, 502),
    BAD("CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", HTTP1_M_GET, 502),
    BAD("missing status", "HTTP/1.1\r\n\r\n", HTTP1_M_GET, 502),
    BAD("bad status line refused before the head ends", "HTTP/1.1 2000 OK\r\n", HTTP1_M_GET, 502),
    BAD("CL conflict", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        HTTP1_M_GET, 502),
    BAD("CL sign", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", HTTP1_M_GET, 502),
    BAD("TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_M_GET, 502),
    BAD("TE chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        HTTP1_M_GET, 502),
    BAD("2xx to CONNECT", "HTTP/1.1 200 Connection Established\r\n\r\n", HTTP1_M_CONNECT, 502),
    BAD("obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HTTP1_M_GET, 502),
    BAD("bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", HTTP1_M_GET, 502),
    BAD("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", HTTP1_M_GET, 502),
};

START_TEST(valid_requests)
{
    run_ok(&ok_requests[_i]);
}
END_TEST

START_TEST(invalid_requests)
{
    run_bad(&bad_requests[_i]);
}
END_TEST

START_TEST(valid_responses)
{
    run_ok(&ok_responses[_i]);
}
END_TEST

START_TEST(invalid_responses)
{
    run_bad(&bad_responses[_i]);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A request "GET /<pad> HTTP/1.1\r\nHost: x\r\n\r\n" whose request line is <line> bytes. */
static size_t make_request(char *out, size_t cap, size_t line)
{
    size_t pad = line - strlen("GET / HTTP/1.1");
    ck_assert_uint_lt(line + 16, cap);
    memcpy(out, "GET /", 5);
    memset(out + 5, 'a', pad);
    strcpy(out + 5 + pad, " HTTP/1.1\r\nHost: x\r\n\r\n");
    return strlen(out);
}

static int parse_with(const char *in, size_t len, const struct http1_limits *lim,
                      struct http1_msg *m, struct http1_header *h, uint32_t cap)
{
    struct http1_parser p;
    msg_init(m, h);
    m->cap_headers = cap;
    http1_parser_init(&p);
    return http1_parse_request(&p, in, len, lim, m);
}

START_TEST(request_line_limit)
{
    char buf[256];
    struct http1_limits lim = {40, 4096, MAX_HDRS};
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    size_t len = make_request(buf, sizeof(buf), 40);
    ck_assert_int_eq(check_all_feeds("line at limit", buf, len, &lim, NONE_M), (int)len);
    len = make_request(buf, sizeof(buf), 41);
    ck_assert_int_eq(check_all_feeds("line over limit", buf, len, &lim, NONE_M), HTTP1_INVALID);
    ck_assert_int_eq(parse_with(buf, len, &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 414);
    /* refused as soon as 41 bytes of line are buffered, before the line ends */
    ck_assert_int_eq(parse_with(buf, 40, &lim, &m, h, MAX_HDRS), HTTP1_INCOMPLETE);
    ck_assert_int_eq(parse_with(buf, 41, &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 414);
    /* 40 bytes then the CR of the CRLF: not over yet */
    len = make_request(buf, sizeof(buf), 40);
    ck_assert_int_eq(parse_with(buf, 41, &lim, &m, h, MAX_HDRS), HTTP1_INCOMPLETE);
    /* leading empty lines are not part of the request line */
    memmove(buf + 4, buf, len + 1);
    memcpy(buf, "\r\n\r\n", 4);
    ck_assert_int_eq(parse_with(buf, len + 4, &lim, &m, h, MAX_HDRS), (int)len + 4);
}
END_TEST

START_TEST(response_status_line_limit)
{
    static const char in[] = "HTTP/1.1 200 A long reason phrase\r\n\r\n";
    struct http1_limits lim = {33, 4096, MAX_HDRS};
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    msg_init(&m, h);
    http1_parser_init(&p);
    ck_assert_int_eq(http1_parse_response(&p, in, sizeof(in) - 1, &lim, HTTP1_M_GET, &m),
                     (int)sizeof(in) - 1);
    lim.max_request_line = 32;
    ck_assert_int_eq(check_all_feeds("status line", in, sizeof(in) - 1, &lim, HTTP1_M_GET),
                     HTTP1_INVALID);
    http1_parser_init(&p);
    ck_assert_int_eq(http1_parse_response(&p, in, sizeof(in) - 1, &lim, HTTP1_M_GET, &m),
                     HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 502);
}
END_TEST

START_TEST(header_bytes_limit)
{
    static const char in[] = "\r\nGET / HTTP/1.1\r\nHost: x\r\nX-Pad: 0123456789\r\n\r\n";
    size_t len = sizeof(in) - 1;
    struct http1_limits lim = {1024, (uint32_t)len, MAX_HDRS};
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    ck_assert_int_eq(check_all_feeds("head at limit", in, len, &lim, NONE_M), (int)len);
    lim.max_header_bytes = (uint32_t)len - 1;
    ck_assert_int_eq(check_all_feeds("head over limit", in, len, &lim, NONE_M), HTTP1_INVALID);
    ck_assert_int_eq(parse_with(in, len, &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
    /* a partial head is refused as soon as it holds more than the limit */
    lim.max_header_bytes = 30;
    ck_assert_int_eq(parse_with(in, 30, &lim, &m, h, MAX_HDRS), HTTP1_INCOMPLETE);
    ck_assert_int_eq(parse_with(in, 31, &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
    /* an endless stream of empty lines is bounded too */
    char crlf[64];
    for (size_t i = 0; i < sizeof(crlf); i += 2)
        memcpy(crlf + i, "\r\n", 2);
    ck_assert_int_eq(parse_with(crlf, 30, &lim, &m, h, MAX_HDRS), HTTP1_INCOMPLETE);
    ck_assert_int_eq(parse_with(crlf, sizeof(crlf), &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
}
END_TEST

START_TEST(header_count_limit)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
    size_t len = sizeof(in) - 1;
    struct http1_limits lim = {1024, 4096, 3};
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    ck_assert_int_eq(check_all_feeds("3 fields, limit 3", in, len, &lim, NONE_M), (int)len);
    ck_assert_int_eq(parse_with(in, len, &lim, &m, h, 3), (int)len);
    ck_assert_uint_eq(m.n_headers, 3);
    lim.max_headers = 2;
    ck_assert_int_eq(check_all_feeds("3 fields, limit 2", in, len, &lim, NONE_M), HTTP1_INVALID);
    ck_assert_int_eq(parse_with(in, len, &lim, &m, h, MAX_HDRS), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
    /* the caller's array is never overrun, whatever the limits say */
    lim.max_headers = 100;
    ck_assert_int_eq(parse_with(in, len, &lim, &m, h, 2), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
    ck_assert_int_eq(parse_with(in, len, &lim, &m, NULL, 0), HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 431);
}
END_TEST

START_TEST(incomplete_heads)
{
    static const char *const partial[] = {
        "",
        "\r\n",
        "\r\n\r\n\n",
        "GET",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r",
    };
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        ck_assert_int_eq(
            parse_with(partial[i], strlen(partial[i]), &default_limits, &m, h, MAX_HDRS),
            HTTP1_INCOMPLETE);
        ck_assert_uint_eq(m.error, 0);
    }
}
END_TEST

/* An HTTP/0.9 request line has no head end to wait for: refused once it ends. */
START_TEST(http09_refused_at_once)
{
    static const char in[] = "GET /index.html\r\n";
    struct http1_header h[MAX_HDRS];
    struct http1_msg m;
    struct http1_parser p;
    msg_init(&m, h);
    http1_parser_init(&p);
    ck_assert_int_eq(http1_parse_request(&p, in, sizeof(in) - 2, &default_limits, &m),
                     HTTP1_INCOMPLETE);
    ck_assert_int_eq(http1_parse_request(&p, in, sizeof(in) - 1, &default_limits, &m),
                     HTTP1_INVALID);
    ck_assert_uint_eq(m.error, 400);
    ck_assert_ptr_nonnull(strstr(m.error_reason, "HTTP/0.9"));
    /* a request line that is fine waits for the rest of the head */
    ck_assert_int_eq(parse_with("GET / HTTP/1.1\r\n", 16, &default_limits, &m, h, MAX_HDRS),
                     HTTP1_INCOMPLETE);
    ck_assert_int_eq(
        parse_with("GET / HTTP/1.1\r\nHost: x\r\n", 25, &default_limits, &m, h, MAX_HDRS),
        HTTP1_INCOMPLETE);
}
END_TEST

/* The authority of an absolute-form target, and none for other forms. */
START_TEST(absolute_form_authority)
{
    static const struct {
        const char *in;
        const char *authority; /* NULL: none */
        const char *rest;      /* what follows it in the target */
    } cases[] = {
        {"GET http://example.com/x HTTP/1.1\r\nHost: y\r\n\r\n", "example.com", "/x"},
        {"GET HTTPS://a.b:8443?q=1 HTTP/1.1\r\nHost: y\r\n\r\n", "a.b:8443", "?q=1"},
        {"GET http://[::1]:80 HTTP/1.1\r\nHost: y\r\n\r\n", "[::1]:80", ""},
        {"GET http://a%41/p/q?r HTTP/1.1\r\nHost: y\r\n\r\n", "a%41", "/p/q?r"},
        {"GET /x HTTP/1.1\r\nHost: y\r\n\r\n", NULL, NULL},
        {"OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http1_header h[MAX_HDRS];
        struct http1_msg m;
        size_t len = strlen(cases[i].in);
        ck_assert_int_eq(check_all_feeds(cases[i].in, cases[i].in, len, &default_limits, NONE_M),
                         (int)len);
        ck_assert_int_eq(parse_with(cases[i].in, len, &default_limits, &m, h, MAX_HDRS), (int)len);
        if (cases[i].authority == NULL) {
            ck_assert_ptr_null(m.authority.p);
            ck_assert_uint_eq(m.authority.len, 0);
            continue;
        }
        check_slice(cases[i].in, "authority", m.authority, cases[i].authority);
        const char *rest = m.authority.p + m.authority.len;
        size_t rest_len = (size_t)(m.target.p + m.target.len - rest);
        ck_assert_uint_eq(rest_len, strlen(cases[i].rest));
        ck_assert(memcmp(rest, cases[i].rest, rest_len) == 0);
    }
}
END_TEST

START_TEST(reason_and_slice_eq)
{
    ck_assert_str_eq(http1_reason(200), "OK");
    ck_assert_str_eq(http1_reason(400), "Bad Request");
    ck_assert_str_eq(http1_reason(414), "URI Too Long");
    ck_assert_str_eq(http1_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(http1_reason(502), "Bad Gateway");
    ck_assert_str_eq(http1_reason(505), "HTTP Version Not Supported");
    ck_assert_str_eq(http1_reason(299), "");
    ck_assert_str_eq(http1_reason(0), "");
    struct http1_slice s = {"Content-Length", 14};
    ck_assert(http1_slice_eq(s, "content-length"));
    ck_assert(http1_slice_eq(s, "CONTENT-LENGTH"));
    ck_assert(!http1_slice_eq(s, "content-lengt"));
    ck_assert(!http1_slice_eq(s, "content-lengths"));
    struct http1_slice empty = {"", 0};
    ck_assert(http1_slice_eq(empty, ""));
}
END_TEST

/* Decodes <in> feeding at most <step> bytes per call (0: all that is left).
 * Returns 0 when done, 1 when more input is needed, -1 when refused. */
static int dechunk(const char *in, size_t len, size_t step, char *out, size_t *out_len,
                   size_t *consumed)
{
    struct http1_chunked c;
    size_t pos = 0;
    *out_len = 0;
    http1_chunked_init(&c);
    for (size_t iter = 0; iter < 2 * len + 4; iter++) {
        size_t n = len - pos;
        if (step && n > step)
            n = step;
        const char *data;
        size_t dlen;
        char *copy = malloc(n ? n : 1); /* exact size: ASan sees any over-read */
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, in + pos, n);
        int rc = http1_chunked_feed(&c, copy, n, &data, &dlen);
        if (rc >= 0) {
            ck_assert_int_le(rc, (int)n);
            ck_assert(dlen == 0 || (dlen == (size_t)rc && data == copy));
            memcpy(out + *out_len, in + pos, dlen);
        }
        free(copy);
        if (rc < 0) {
            *consumed = pos;
            return -1;
        }
        *out_len += dlen;
        pos += (size_t)rc;
        if (c.done) {
            *consumed = pos;
            return 0;
        }
        if (rc == 0) {
            ck_assert_uint_eq(n, 0);
            break;
        }
    }
    *consumed = pos;
    return 1;
}

static const struct {
    const char *in;
    const char *payload;
    size_t extra; /* bytes after the body, left unconsumed */
} chunked_ok[] = {
    {"5\r\nhello\r\n6;ext=1;x=\"q\"\r\n world\r\n0\r\n\r\n", "hello world", 0},
    {"0005\r\nhello\r\nA\r\n0123456789\r\n0000\r\n\r\n", "hello0123456789", 0},
    {"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: \t a b\x80\r\n\r\n", "abc", 0},
    {"1;\t a\xff\r\n\r\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "\r", 16},
    {"0\r\n\r\n", "", 0},
    {"f\r\n0123456789abcde\r\n0;last\r\n\r\n", "0123456789abcde", 0},
};

static const char *const chunked_bad[] = {
    "0x5\r\nhello\r\n0\r\n\r\n",
    "+5\r\nhello\r\n0\r\n\r\n",
    "-5\r\nhello\r\n0\r\n\r\n",
    " 5\r\nhello\r\n0\r\n\r\n",
    "5 \r\nhello\r\n0\r\n\r\n",
    "\r\nhello\r\n0\r\n\r\n",
    "5\nhello\r\n0\r\n\r\n",
    "5\rhello\r\n0\r\n\r\n",
    "5;a\nhello\r\n0\r\n\r\n",
    "5;\x01\r\nhello\r\n0\r\n\r\n",
    "5\r\nhelloX\r\n0\r\n\r\n",
    "5\r\nhello\n0\r\n\r\n",
    "5\r\nhello\rX0\r\n\r\n",
    "g\r\n",
    "1000000000000000\r\n",
    "ffffffffffffffffffff\r\n",
    "0\r\nX : y\r\n\r\n",
    "0\r\n y\r\n\r\n",
    "0\r\n: y\r\n\r\n",
    "0\r\nX: \x01\r\n\r\n",
    "0\r\nX: y\n\r\n",
    "0\r\n\n",
    "0\r\n\rX",
};

START_TEST(chunked_valid)
{
    for (size_t i = 0; i < sizeof(chunked_ok) / sizeof(chunked_ok[0]); i++) {
        const char *in = chunked_ok[i].in;
        size_t len = strlen(in);
        static const size_t steps[] = {0, 1, 2, 3, 7};
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            char out[256];
            size_t out_len, consumed;
            ck_assert_msg(dechunk(in, len, steps[s], out, &out_len, &consumed) == 0,
                          "case %zu step %zu refused", i, steps[s]);
            ck_assert_uint_eq(consumed, len - chunked_ok[i].extra);
            ck_assert_uint_eq(out_len, strlen(chunked_ok[i].payload));
            ck_assert(memcmp(out, chunked_ok[i].payload, out_len) == 0);
        }
    }
}
END_TEST

START_TEST(chunked_invalid)
{
    for (size_t i = 0; i < sizeof(chunked_bad) / sizeof(chunked_bad[0]); i++) {
        char out[256];
        size_t out_len, consumed;
        size_t len = strlen(chunked_bad[i]);
        ck_assert_msg(dechunk(chunked_bad[i], len, 0, out, &out_len, &consumed) == -1,
                      "case %zu accepted whole", i);
        ck_assert_msg(dechunk(chunked_bad[i], len, 1, out, &out_len, &consumed) == -1,
                      "case %zu accepted byte by byte", i);
    }
}
END_TEST

START_TEST(chunked_limits)
{
    char out[8];
    size_t out_len, consumed;
    /* 15 significant hex digits are fine (2^60 - 1), leading zeros do not count */
    static const char big[] = "000fffffffffffffff\r\n";
    struct http1_chunked c;
    const char *data;
    size_t dlen;
    http1_chunked_init(&c);
    ck_assert_int_eq(http1_chunked_feed(&c, big, sizeof(big) - 1, &data, &dlen),
                     (int)sizeof(big) - 1);
    ck_assert_uint_eq(c.remaining, (UINT64_C(1) << 60) - 1);
    ck_assert_int_eq(http1_chunked_feed(&c, "xyz", 3, &data, &dlen), 3);
    ck_assert_uint_eq(dlen, 3);
    ck_assert_uint_eq(c.remaining, (UINT64_C(1) << 60) - 4);

    /* a size line padded with zeros past 4 KiB */
    size_t n = 5000;
    char *line = malloc(n + 16);
    ck_assert_ptr_nonnull(line);
    memset(line, '0', n);
    memcpy(line + n, "1\r\nx\r\n0\r\n\r\n", 11);
    ck_assert_int_eq(dechunk(line, n + 11, 0, out, &out_len, &consumed), -1);
    free(line);

    /* trailers: just under 32 KiB pass, over refuse */
    size_t cap = 40000;
    char *tr = malloc(cap);
    ck_assert_ptr_nonnull(tr);
    for (size_t total = 32768 - 100; total <= 32768 + 100; total += 200) {
        size_t pos = 0;
        memcpy(tr, "0\r\n", 3);
        pos = 3;
        size_t body = total - 2; /* trailer bytes before the final CRLF */
        while (body > 0) {
            size_t line_len = body > 1000 ? 1000 : body;
            if (body - line_len < 8 && body > 1000)
                line_len = body - 8;
            ck_assert_uint_ge(line_len, 5);
            memcpy(tr + pos, "X:", 2);
            memset(tr + pos + 2, 'v', line_len - 4);
            memcpy(tr + pos + line_len - 2, "\r\n", 2);
            pos += line_len;
            body -= line_len;
        }
        memcpy(tr + pos, "\r\n", 2);
        pos += 2;
        int rc = dechunk(tr, pos, 0, out, &out_len, &consumed);
        ck_assert_int_eq(rc, total <= 32768 ? 0 : -1);
    }
    free(tr);
}
END_TEST

START_TEST(chunked_runs_alternate)
{
    static const char in[] = "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
    struct http1_chunked c;
    const char *data;
    size_t dlen;
    http1_chunked_init(&c);
    ck_assert_int_eq(http1_chunked_feed(&c, in, sizeof(in) - 1, &data, &dlen), 3);
    ck_assert_uint_eq(dlen, 0);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 3, sizeof(in) - 4, &data, &dlen), 4);
    ck_assert_uint_eq(dlen, 4);
    ck_assert_ptr_eq(data, in + 3);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 7, sizeof(in) - 8, &data, &dlen), 5);
    ck_assert_uint_eq(dlen, 0);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 12, sizeof(in) - 13, &data, &dlen), 5);
    ck_assert_uint_eq(dlen, 5);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 17, sizeof(in) - 18, &data, &dlen), 7);
    ck_assert_uint_eq(dlen, 0);
    ck_assert(c.done);
    ck_assert_int_eq(http1_chunked_feed(&c, in, sizeof(in) - 1, &data, &dlen), 0);
}
END_TEST

/* The trailer fields of <in> fed <step> bytes at a time (0: all at once), as
 * "<name>|<rest>" lines rebuilt from NAME and FIELD runs, into <out>. Checks
 * that runs never mix: a NAME run holds name bytes only, a field's FIELD
 * runs start at its colon and the last one ends with its LF. */
static void trailer_fields(const char *in, size_t step, char *out, size_t cap)
{
    struct http1_chunked c;
    size_t len = strlen(in), pos = 0, o = 0;
    uint8_t last = HTTP1_RUN_FRAMING;
    http1_chunked_init(&c);
    out[0] = '\0';
    while (!c.done && pos < len) {
        size_t n = step && len - pos > step ? step : len - pos;
        const char *d;
        size_t dl;
        int rc = http1_chunked_feed(&c, in + pos, n, &d, &dl);
        ck_assert_int_gt(rc, 0);
        if (c.run == HTTP1_RUN_NAME) {
            ck_assert_ptr_null(memchr(in + pos, ':', (size_t)rc));
            if (last != HTTP1_RUN_NAME) {
                ck_assert(last != HTTP1_RUN_FIELD || in[pos - 1] == '\n');
                if (o > 0)
                    out[o++] = '\n';
            }
        } else if (c.run == HTTP1_RUN_FIELD) {
            if (last == HTTP1_RUN_NAME) {
                ck_assert_int_eq(in[pos], ':');
                out[o++] = '|';
            }
        } else {
            ck_assert(last != HTTP1_RUN_NAME);
            ck_assert(last != HTTP1_RUN_FIELD || in[pos - 1] == '\n');
        }
        if (c.run == HTTP1_RUN_NAME || c.run == HTTP1_RUN_FIELD) {
            ck_assert_uint_lt(o + (size_t)rc + 2, cap);
            memcpy(out + o, in + pos, (size_t)rc);
            o += (size_t)rc;
        }
        last = c.run;
        pos += (size_t)rc;
    }
    ck_assert(c.done);
    out[o] = '\0';
}

START_TEST(chunked_trailer_runs)
{
    static const char in[] = "3\r\nabc\r\n0;x\r\nX-Sum: 1\r\nContent-Length: 5\r\nA:\r\n"
                             "Long-Trailer-Field-Name: a:b\r\n\r\n";
    static const char want[] = "X-Sum|: 1\r\n\nContent-Length|: 5\r\n\nA|:\r\n\n"
                               "Long-Trailer-Field-Name|: a:b\r\n";
    static const size_t steps[] = {0, 1, 2, 3, 5, 8};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char got[512];
        trailer_fields(in, steps[i], got, sizeof(got));
        ck_assert_msg(strcmp(got, want) == 0, "step %zu:\n%s", steps[i], got);
    }
    /* whole: framing up to the first field, then the field's name alone */
    struct http1_chunked c;
    const char *d;
    size_t dl;
    http1_chunked_init(&c);
    ck_assert_int_eq(http1_chunked_feed(&c, in, 3, &d, &dl), 3);
    ck_assert_uint_eq(c.run, HTTP1_RUN_FRAMING);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 3, sizeof(in) - 4, &d, &dl), 3);
    ck_assert_uint_eq(c.run, HTTP1_RUN_DATA);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 6, sizeof(in) - 7, &d, &dl), 7);
    ck_assert_uint_eq(c.run, HTTP1_RUN_FRAMING);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 13, sizeof(in) - 14, &d, &dl), 5);
    ck_assert_uint_eq(c.run, HTTP1_RUN_NAME);
    ck_assert_int_eq(http1_chunked_feed(&c, in + 18, sizeof(in) - 19, &d, &dl), 5);
    ck_assert_uint_eq(c.run, HTTP1_RUN_FIELD);
    ck_assert_uint_eq(dl, 0);
}
END_TEST

START_TEST(trailer_names)
{
    static const char *const refused[] = {
        "Content-Length",
        "transfer-encoding",
        "Trailer",
        "HOST",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Upgrade",
        "Expect",
        "Max-Forwards",
        "Range",
        "If-Match",
        "If-None-Match",
        "If-Modified-Since",
        "If-Unmodified-Since",
        "If-Range",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Cookie",
        "Set-Cookie",
        "Cache-Control",
        "Pragma",
        "Age",
        "Expires",
        "Vary",
        "Location",
        "Retry-After",
        "Content-Encoding",
        "Content-Type",
        "Content-Range",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "X-Forwarded-Host",
        "X-Client-Cert-Verified",
        "x_client_cert_uri",
        /* '_' for '-': CGI reads them as the same */
        "content_length",
        "Transfer_Encoding",
        "SET_COOKIE",
        "Content_Type",
    };
    static const char *const allowed[] = {
        "X-Sum",
        "Server-Timing",
        "Digest",
        "ETag",
        "Date",
        "Content-MD5",
        "Content-Lengths",
        "X-Content-Length",
        "Hos",
        "X-Client-Cert",
        "Long-Trailer-Field-Name",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        ck_assert_msg(!http1_trailer_is_allowed(refused[i], strlen(refused[i])), "%s allowed",
                      refused[i]);
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        ck_assert_msg(http1_trailer_is_allowed(allowed[i], strlen(allowed[i])), "%s refused",
                      allowed[i]);
    /* a long name is judged by its first HTTP1_TRAILER_NAME_DECIDES bytes */
    ck_assert(!http1_trailer_is_allowed("X-Client-Cert-Subject-Alt", HTTP1_TRAILER_NAME_DECIDES));
    ck_assert(http1_trailer_is_allowed("If-Unmodified-Since-X", HTTP1_TRAILER_NAME_DECIDES));
}
END_TEST

static Suite *http1_suite(void)
{
    Suite *s = suite_create("http1");
    TCase *tc = tcase_create("valid_requests");
    tcase_add_loop_test(tc, valid_requests, 0, N(ok_requests));
    suite_add_tcase(s, tc);
    tc = tcase_create("invalid_requests");
    tcase_add_loop_test(tc, invalid_requests, 0, N(bad_requests));
    suite_add_tcase(s, tc);
    tc = tcase_create("valid_responses");
    tcase_add_loop_test(tc, valid_responses, 0, N(ok_responses));
    suite_add_tcase(s, tc);
    tc = tcase_create("invalid_responses");
    tcase_add_loop_test(tc, invalid_responses, 0, N(bad_responses));
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_add_test(tc, request_line_limit);
    tcase_add_test(tc, response_status_line_limit);
    tcase_add_test(tc, header_bytes_limit);
    tcase_add_test(tc, header_count_limit);
    suite_add_tcase(s, tc);
    tc = tcase_create("incomplete");
    tcase_add_test(tc, incomplete_heads);
    tcase_add_test(tc, http09_refused_at_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("absolute_form");
    tcase_add_test(tc, absolute_form_authority);
    suite_add_tcase(s, tc);
    tc = tcase_create("helpers");
    tcase_add_test(tc, reason_and_slice_eq);
    suite_add_tcase(s, tc);
    tc = tcase_create("chunked");
    tcase_add_test(tc, chunked_valid);
    tcase_add_test(tc, chunked_invalid);
    tcase_add_test(tc, chunked_limits);
    tcase_add_test(tc, chunked_runs_alternate);
    tcase_add_test(tc, chunked_trailer_runs);
    tcase_add_test(tc, trailer_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http1_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
