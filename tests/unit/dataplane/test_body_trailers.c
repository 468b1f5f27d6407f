/* tests/unit/dataplane/test_body_trailers.c: chunked bodies on the way through.
 *
 * A body arrives into a buffer <in> bytes at a time and is written <out>
 * bytes at a time, as the exchange does: body_prepare(), write at most the
 * ready bytes, body_consumed(). Every case runs for many arrival and write
 * sizes, which must not change what is forwarded. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"

/* Forwards <src> through a body with <dechunk>, <in> bytes arriving and at
 * most <out> bytes written per step, into <dst> (NUL-terminated). Returns 0
 * when the body completed, -1 when it was refused. */
static int forward(const char *src, bool dechunk, size_t in, size_t out, char *dst, size_t cap)
{
    size_t len = strlen(src), arrived = 0, o = 0;
    struct buf *b = malloc(sizeof(*b) + len + 1);
    ck_assert_ptr_nonnull(b);
    b->start = b->end = 0;
    b->cap = (uint32_t)len + 1;
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
    int rc = 0;
    for (size_t steps = 0; !s.done; steps++) {
        ck_assert_uint_lt(steps, 4 * len + 16);
        if (arrived < len) {
            size_t n = len - arrived < in ? len - arrived : in;
            memcpy(b->data + b->end, src + arrived, n);
            b->end += (uint32_t)n;
            arrived += n;
        }
        if (body_prepare(&s, b) < 0) {
            rc = -1;
            break;
        }
        ck_assert_uint_le(b->start + s.ready + s.held, b->end);
        if (s.field != BODY_FIELD_DROP)
            ck_assert_uint_lt(s.held, HTTP1_TRAILER_NAME_DECIDES);
        uint32_t n = s.ready < out ? s.ready : (uint32_t)out;
        /* with every byte in, a prepared body is done or has bytes to write */
        ck_assert_msg(n > 0 || arrived < len || s.done, "stalled: %u bytes left, %u held",
                      b->end - b->start, s.held);
        ck_assert_uint_lt(o + n, cap);
        memcpy(dst + o, b->data + b->start, n);
        o += n;
        if (n > 0)
            body_consumed(&s, b, n);
    }
    dst[o] = '\0';
    free(b);
    return rc;
}

/* Every arrival and write size from 1 to 9, and all at once. */
static void check_forwarded(const char *src, bool dechunk, const char *want)
{
    static const size_t sizes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 4096};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
            char got[1024];
            ck_assert_int_eq(forward(src, dechunk, sizes[i], sizes[j], got, sizeof(got)), 0);
            ck_assert_msg(strcmp(got, want) == 0, "in %zu out %zu: got\n%s\nwant\n%s", sizes[i],
                          sizes[j], got, want);
        }
    }
}

START_TEST(passed_through_as_is)
{
    static const char in[] =
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\nDigest: a:b\r\n\r\n";
    check_forwarded(in, false, in);
}
END_TEST

START_TEST(refused_trailers_cut)
{
    check_forwarded("3\r\nabc\r\n0\r\n"
                    "X-Sum: 1\r\n"
                    "Content-Length: 5\r\n"
                    "Transfer-Encoding: chunked\r\n"
                    "Host: evil\r\n"
                    "Set-Cookie: a=b\r\n"
                    "X-Late: 2\r\n"
                    "Authorization: Basic eA==\r\n"
                    "content_type: text/evil\r\n"
                    "X-Client-Cert-Verified-And-More: yes\r\n"
                    "A-Very-Long-Trailer-Name-Kept: 3\r\n"
                    "Cache-Control: no-store\r\n"
                    "\r\n",
                    false,
                    "3\r\nabc\r\n0\r\n"
                    "X-Sum: 1\r\n"
                    "X-Late: 2\r\n"
                    "A-Very-Long-Trailer-Name-Kept: 3\r\n"
                    "\r\n");
}
END_TEST

START_TEST(only_refused_trailers)
{
    check_forwarded("0\r\nTE: trailers\r\nTrailer: x\r\n\r\n", false, "0\r\n\r\n");
}
END_TEST

/* An HTTP/1.0 client gets the payload alone: no trailer at all. */
START_TEST(dechunked_drops_every_trailer)
{
    check_forwarded("3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 1\r\nContent-Length: 5\r\n\r\n", true,
                    "abcde");
}
END_TEST

START_TEST(malformed_trailer_refused)
{
    char got[256];
    ck_assert_int_eq(forward("0\r\nX-Sum : 1\r\n\r\n", false, 2, 3, got, sizeof(got)), -1);
    ck_assert_int_eq(forward("0\r\nHost: a\r\n\x01: b\r\n\r\n", false, 1, 1, got, sizeof(got)), -1);
}
END_TEST

static Suite *body_suite(void)
{
    Suite *s = suite_create("body_trailers");
    TCase *tc = tcase_create("chunked");
    tcase_add_test(tc, passed_through_as_is);
    tcase_add_test(tc, refused_trailers_cut);
    tcase_add_test(tc, only_refused_trailers);
    tcase_add_test(tc, dechunked_drops_every_trailer);
    tcase_add_test(tc, malformed_trailer_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(body_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
