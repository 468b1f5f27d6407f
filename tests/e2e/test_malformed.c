/* tests/e2e/test_malformed.c: requests that could be read two ways, or break
 * limits, get their 4xx and a closed connection at once, and never reach a
 * backend. */
#include "e2e.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bad_case {
    const char *name;
    const char *req; /* NULL: built by build_big() */
    size_t len;      /* 0: strlen(req) */
    int status;
};

#define REQ(s) s, sizeof(s) - 1

static const struct bad_case cases[] = {
    {"cl_and_te",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\n"),
     400},
    {"two_content_lengths",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
     400},
    {"bad_chunk_size",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
         "chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
     400},
    {"unknown_transfer_coding",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501},
    {"obs_fold", REQ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n"), 400},
    {"space_before_colon", REQ("GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n"), 400},
    {"bare_cr", REQ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"), 400},
    {"nul_in_header", REQ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"), 400},
    {"missing_host", REQ("GET / HTTP/1.1\r\nX-A: a\r\n\r\n"), 400},
    {"two_hosts", REQ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400},
    {"http_2_0", REQ("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505},
    /* HTTP/0.9: nothing more to wait for once its only line ends */
    {"http_0_9_line", REQ("GET /\r\n"), 400},
    {"http_0_9_line_and_empty_line", REQ("GET /index.html\r\n\r\n"), 400},
    {"fragment", REQ("GET /a?b#c HTTP/1.1\r\nHost: x\r\n\r\n"), 400},
    {"absolute_form_userinfo", REQ("GET http://u:p@x/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400},
    {"absolute_form_empty_host", REQ("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"), 400},
    /* framing names a CGI backend reads as the real ones */
    {"content_length_underscore",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\nhello"), 400},
    {"transfer_encoding_underscore",
     REQ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ntransfer_encoding: chunked\r\n"
         "\r\n0\r\n\r\n"),
     400},
    {"request_line_over_8k", NULL, 0, 414},
    {"over_100_headers", NULL, 0, 431},
    {"header_block_over_32k", NULL, 0, 431},
};

/* The three oversize requests; caller frees. */
static char *build_big(const char *name, size_t *len)
{
    size_t cap = 64 * 1024, n = 0;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    if (strcmp(name, "request_line_over_8k") == 0) {
        n += (size_t)snprintf(b, cap, "GET /");
        memset(b + n, 'a', 9000);
        n += 9000;
        n += (size_t)snprintf(b + n, cap - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    } else if (strcmp(name, "over_100_headers") == 0) {
        n += (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 101; i++)
            n += (size_t)snprintf(b + n, cap - n, "X-H%d: v\r\n", i);
        n += (size_t)snprintf(b + n, cap - n, "\r\n");
    } else {
        /* 40 fields of ~1000 bytes: under the count limit, over 32 KiB. */
        n += (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 40; i++) {
            n += (size_t)snprintf(b + n, cap - n, "X-H%d: ", i);
            memset(b + n, 'v', 1000);
            n += 1000;
            n += (size_t)snprintf(b + n, cap - n, "\r\n");
        }
        n += (size_t)snprintf(b + n, cap - n, "\r\n");
    }
    *len = n;
    return b;
}

START_TEST(rejected_and_closed)
{
    const struct bad_case *bc = &cases[_i];
    struct e2e *t = e2e_start(1);
    long before = e2e_backend_stat(t, 0, "requests");
    char *big = NULL;
    size_t len = bc->len;
    const char *req = bc->req;
    if (!req) {
        big = build_big(bc->name, &len);
        req = big;
    }
    size_t out_len;
    bool closed;
    uint64_t t0 = e2e_now_ms();
    char *out = e2e_raw(e2e_lb_port(t), req, len, e2e_timeout_ms(), &out_len, &closed);
    uint64_t took = e2e_now_ms() - t0;
    ck_assert_ptr_nonnull(out);
    char want[16];
    snprintf(want, sizeof want, "HTTP/1.1 %d ", bc->status);
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "%s: expected %d, got \"%.80s\"", bc->name,
                  bc->status, out);
    ck_assert_msg(closed, "%s: connection not closed", bc->name);
    /* at once, not at the client head timeout (10 s) */
    ck_assert_msg(took < e2e_scaled_ms(3000), "%s: answered after %llu ms", bc->name,
                  (unsigned long long)took);
    long after = e2e_backend_stat(t, 0, "requests");
    ck_assert_int_ge(before, 1);
    ck_assert_msg(after == before + 1, "%s: the backend saw %ld request(s)", bc->name,
                  after - before - 1);
    free(out);
    free(big);
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_malformed");
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_loop_test(tc, rejected_and_closed, i, i + 1);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
