/* tests/fuzz/fuzz_http1.c: libFuzzer driver for the HTTP/1.1 parser.
 * Byte 0 picks the mode (request, response to GET/HEAD/CONNECT, chunked);
 * the rest is the input. Invariants are checked with abort() so that a
 * broken one is a crash libFuzzer keeps. */
#include "http1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HDRS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct http1_limits lim = {512, 2048, MAX_HDRS};

static void fail(const char *what)
{
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static bool inside(struct http1_slice s, const char *buf, size_t len)
{
    if (s.p == NULL)
        return s.len == 0;
    return s.p >= buf && s.len <= len && (size_t)(s.p - buf) <= len - s.len;
}

static int parse(int mode, struct http1_parser *p, const char *buf, size_t len, struct http1_msg *m)
{
    static const uint8_t meths[] = {HTTP1_M_GET, HTTP1_M_HEAD, HTTP1_M_CONNECT};
    if (mode == 0)
        return http1_parse_request(p, buf, len, &lim, m);
    return http1_parse_response(p, buf, len, &lim, meths[mode - 1], m);
}

static void check_msg(int rc, const struct http1_msg *m, const char *buf, size_t len)
{
    if (rc > (int)len)
        fail("returned length beyond the input");
    if (rc == HTTP1_INVALID) {
        if (m->error < 400 || m->error > 599 || m->error_reason == NULL)
            fail("refusal without a status and reason");
        return;
    }
    if (rc == HTTP1_INCOMPLETE)
        return;
    if (rc <= 0)
        fail("unexpected return value");
    if (m->error != 0 || m->n_headers > MAX_HDRS)
        fail("success with an error or too many headers");
    if (!inside(m->method, buf, (size_t)rc) || !inside(m->target, buf, (size_t)rc) ||
        !inside(m->reason, buf, (size_t)rc))
        fail("request or status line slice outside the head");
    for (uint32_t i = 0; i < m->n_headers; i++)
        if (!inside(m->headers[i].name, buf, (size_t)rc) ||
            !inside(m->headers[i].value, buf, (size_t)rc) || m->headers[i].name.len == 0)
            fail("header slice outside the head");
    if (m->host >= (int32_t)m->n_headers || m->framing > HTTP1_BODY_CLOSE)
        fail("host index or framing out of range");
    if (m->framing != HTTP1_BODY_LENGTH && m->content_length != 0)
        fail("content_length without LENGTH framing");
}

/* Comparable outcome: offsets, not pointers. */
static bool same(int rc1, const struct http1_msg *a, const char *ba, int rc2,
                 const struct http1_msg *b, const char *bb)
{
    if (rc1 != rc2 || a->error != b->error)
        return false;
    if (rc1 < 0)
        return rc1 == HTTP1_INCOMPLETE || strcmp(a->error_reason, b->error_reason) == 0;
    if (a->meth != b->meth || a->status != b->status || a->minor != b->minor ||
        a->n_headers != b->n_headers || a->host != b->host || a->framing != b->framing ||
        a->content_length != b->content_length || a->flags != b->flags ||
        a->target.p - ba != b->target.p - bb || a->target.len != b->target.len)
        return false;
    for (uint32_t i = 0; i < a->n_headers; i++)
        if (a->headers[i].value.p - ba != b->headers[i].value.p - bb ||
            a->headers[i].value.len != b->headers[i].value.len ||
            a->headers[i].id != b->headers[i].id || a->headers[i].flags != b->headers[i].flags)
            return false;
    return true;
}

static void fuzz_head(int mode, const char *buf, size_t len, size_t split)
{
    struct http1_header h1[MAX_HDRS], h2[MAX_HDRS];
    struct http1_msg m1 = {.headers = h1, .cap_headers = MAX_HDRS};
    struct http1_msg m2 = {.headers = h2, .cap_headers = MAX_HDRS};
    struct http1_parser p1, p2;
    http1_parser_init(&p1);
    int rc1 = parse(mode, &p1, buf, len, &m1);
    check_msg(rc1, &m1, buf, len);
    if (rc1 == HTTP1_INCOMPLETE)
        return;
    http1_parser_init(&p2);
    int rc2 = parse(mode, &p2, buf, split, &m2);
    check_msg(rc2, &m2, buf, split);
    if (rc2 == HTTP1_INCOMPLETE) {
        rc2 = parse(mode, &p2, buf, len, &m2);
        check_msg(rc2, &m2, buf, len);
    }
    if (!same(rc1, &m1, buf, rc2, &m2, buf))
        fail("split parse differs from whole parse");
}

/* Decodes with at most <step> bytes per call; payload appended to <out>,
 * trailer fields to <tr> as "name|rest" with a NUL before each field.
 * Checks that runs do not mix: a NAME run is name bytes, a field's first FIELD
 * run starts at its colon, a field ends with its LF before anything else. */
static int dechunk(const char *buf, size_t len, size_t step, char *out, size_t *out_len, char *tr,
                   size_t *tr_len, size_t *used)
{
    struct http1_chunked c;
    size_t pos = 0;
    uint8_t last = HTTP1_RUN_FRAMING;
    *out_len = 0;
    *tr_len = 0;
    http1_chunked_init(&c);
    while (!c.done && pos < len) {
        size_t n = len - pos < step ? len - pos : step;
        const char *d;
        size_t dl;
        int rc = http1_chunked_feed(&c, buf + pos, n, &d, &dl);
        if (rc == HTTP1_INVALID)
            return -1;
        if (rc <= 0 || (size_t)rc > n)
            fail("chunked consumed nothing or too much");
        if (dl != 0 && (dl != (size_t)rc || d != buf + pos))
            fail("payload run does not match the consumed bytes");
        memcpy(out + *out_len, d ? d : "", dl);
        *out_len += dl;
        bool field_ended = last != HTTP1_RUN_FIELD || buf[pos - 1] == '\n';
        if (c.run == HTTP1_RUN_NAME) {
            if (memchr(buf + pos, ':', (size_t)rc) || (last != HTTP1_RUN_NAME && !field_ended))
                fail("a NAME run holds more than a name");
            if (last != HTTP1_RUN_NAME)
                tr[(*tr_len)++] = '\0';
        } else if (c.run == HTTP1_RUN_FIELD) {
            if (last == HTTP1_RUN_NAME && buf[pos] != ':')
                fail("a field's FIELD run does not start at its colon");
            if (last != HTTP1_RUN_NAME && last != HTTP1_RUN_FIELD)
                fail("a FIELD run without a name");
            if (last == HTTP1_RUN_NAME)
                tr[(*tr_len)++] = '|';
        } else if (last == HTTP1_RUN_NAME || !field_ended) {
            fail("a trailer field run ends mid field");
        }
        if (c.run == HTTP1_RUN_NAME || c.run == HTTP1_RUN_FIELD) {
            memcpy(tr + *tr_len, buf + pos, (size_t)rc);
            *tr_len += (size_t)rc;
        }
        last = c.run;
        pos += (size_t)rc;
    }
    *used = pos;
    return c.done ? 0 : 1;
}

static void fuzz_chunked(const char *buf, size_t len)
{
    /* trailers: each byte once, and two separators per field of at least one byte */
    char *a = malloc(len + 1), *b = malloc(len + 1), *ta = malloc(3 * len + 1),
         *tb = malloc(3 * len + 1);
    if (!a || !b || !ta || !tb)
        abort();
    size_t la, lb, ua, ub, tla, tlb;
    int ra = dechunk(buf, len, len, a, &la, ta, &tla, &ua);
    int rb = dechunk(buf, len, 1, b, &lb, tb, &tlb, &ub);
    if (ra != rb || (ra >= 0 && (la != lb || ua != ub || memcmp(a, b, la) != 0)))
        fail("chunked whole and byte by byte differ");
    if (ra >= 0 && (tla != tlb || memcmp(ta, tb, tla) != 0))
        fail("trailer fields whole and byte by byte differ");
    free(a);
    free(b);
    free(ta);
    free(tb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 5;
    size_t len = size - 1;
    /* an exact-size copy so ASan sees any read past the end */
    char *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    memcpy(buf, data + 1, len);
    if (mode == 4)
        fuzz_chunked(buf, len);
    else
        fuzz_head(mode, buf, len, len ? (data[0] * 131u + len) % (len + 1) : 0);
    free(buf);
    return 0;
}
