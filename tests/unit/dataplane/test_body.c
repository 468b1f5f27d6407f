/* tests/unit/dataplane/test_body.c
 *
 * Each case plays the forwarding loop a session runs: bytes arrive in the
 * read buffer in pieces, body_prepare() says how many may go, the "writer"
 * takes them (all, or a few at a time) and body_consumed() removes them.
 * After every body_prepare(), ready stays within the buffer; the bytes
 * forwarded are collected and compared with what the other side must get.
 * Chunked inputs are also cut at every byte position (every one and every
 * two cuts), and fed one byte at a time. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "buf.h"
#include "http1.h"

#define OUT_MAX 4096

/* What a run of pump() produced. */
struct run {
    char out[OUT_MAX]; /* bytes forwarded, in order */
    size_t out_len;
    size_t fed;         /* input bytes appended to the buffer */
    size_t done_at;     /* input bytes fed when done was first seen; 0: never */
    int rc;             /* 0, or -1 when body_prepare() refused the input */
    char left[OUT_MAX]; /* what the buffer held at the end */
    size_t left_len;
};

static struct buf_pool pool;

static void setup(void)
{
    memset(&pool, 0, sizeof(pool));
}

static void teardown(void)
{
    buf_pool_deinit(&pool);
}

/* Stops the test when <cond> fails. The hot loops below check with this:
 * every ck_assert() is a message to the parent process in fork mode. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);                                  \
    } while (0)

/* Forwards what <s> allows from <b>, at most <take> bytes per write (0: all
 * ready bytes). Returns -1 on malformed framing. */
static int drain(struct body *s, struct buf *b, size_t take, struct run *r)
{
    for (int guard = 0; guard < 100000; guard++) {
        if (body_prepare(s, b) < 0)
            return -1;
        REQUIRE(s->ready <= buf_len(b));
        REQUIRE(s->framing != HTTP1_BODY_LENGTH || s->ready <= s->remaining);
        REQUIRE(!s->done || s->ready == 0);
        if (s->ready == 0)
            return 0;
        uint32_t n = s->ready;
        if (take != 0 && n > take)
            n = (uint32_t)take;
        REQUIRE(r->out_len + n <= OUT_MAX);
        memcpy(r->out + r->out_len, b->data + b->start, n);
        r->out_len += n;
        body_consumed(s, b, n);
    }
    ck_abort_msg("drain does not end");
    return -1;
}

/* Feeds <in> into a fresh buffer cut at each of <cuts> (ascending offsets),
 * forwarding after every piece, until the input ends, the body is done or
 * the framing is refused. */
static void pump_cuts(struct body *s, const char *in, size_t len, const size_t *cuts, int n_cuts,
                      size_t take, struct run *r)
{
    memset(r, 0, sizeof(*r));
    struct buf *b = buf_get(&pool);
    REQUIRE(b != NULL);
    size_t at = 0;
    for (int i = 0; i <= n_cuts && at < len; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        if (end <= at)
            continue;
        buf_compact(b);
        REQUIRE(buf_append(b, in + at, end - at));
        at = end;
        r->fed = at;
        bool was_done = s->done;
        if (drain(s, b, take, r) < 0) {
            r->rc = -1;
            break;
        }
        if (s->done && !was_done)
            r->done_at = at;
        if (s->done)
            break;
    }
    r->left_len = buf_len(b);
    memcpy(r->left, b->data + b->start, r->left_len);
    buf_put(&pool, b);
}

/* One byte per piece. */
static void pump_bytes(struct body *s, const char *in, size_t len, size_t take, struct run *r)
{
    size_t cuts[OUT_MAX];
    REQUIRE(len < OUT_MAX);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    pump_cuts(s, in, len, cuts, (int)len, take, r);
}

static void pump_all(struct body *s, const char *in, size_t len, size_t take, struct run *r)
{
    pump_cuts(s, in, len, NULL, 0, take, r);
}

static void assert_out(const struct run *r, const char *want, size_t want_len)
{
    ck_assert_int_eq(r->rc, 0);
    ck_assert_uint_eq(r->out_len, want_len);
    ck_assert_mem_eq(r->out, want, want_len);
}

/* ---- Content-Length ------------------------------------------------------------------ */

START_TEST(length_across_partial_buffers)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_LENGTH, 10, false);
    ck_assert(!s.done);

    buf_appends(b, "0123");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 4);
    body_consumed(&s, b, 4);
    ck_assert_uint_eq(s.remaining, 6);
    ck_assert(!s.done);

    /* nothing new: nothing ready, not done */
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(!s.done);

    /* the rest of the body and the next request's first bytes */
    buf_appends(b, "456");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 3);
    body_consumed(&s, b, 2); /* a short write */
    ck_assert(!s.done);
    buf_appends(b, "789GET /");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 4); /* "6789", never the next request */
    ck_assert_mem_eq(b->data + b->start, "6789", 4);
    body_consumed(&s, b, 4);
    ck_assert(s.done);
    ck_assert_uint_eq(s.remaining, 0);
    ck_assert_uint_eq(buf_len(b), 5);
    ck_assert_mem_eq(b->data + b->start, "GET /", 5);

    /* done: the next request's bytes are never ready */
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(s.done);
    buf_put(&pool, b);
}
END_TEST

START_TEST(length_done_exactly_at_the_end)
{
    static const char in[] = "abcdefghijklmnopqrstuvwxyz0123456789NEXT";
    const size_t body_len = 36;
    for (size_t take = 0; take <= 3; take++) {
        struct run r;
        struct body s;
        body_init(&s, HTTP1_BODY_LENGTH, body_len, false);
        pump_bytes(&s, in, sizeof(in) - 1, take, &r);
        assert_out(&r, in, body_len);
        ck_assert_uint_eq(r.done_at, body_len);

        body_init(&s, HTTP1_BODY_LENGTH, body_len, false);
        pump_all(&s, in, sizeof(in) - 1, take, &r);
        assert_out(&r, in, body_len);
        ck_assert(s.done);
        ck_assert_uint_eq(r.left_len, 4);
        ck_assert_mem_eq(r.left, "NEXT", 4);
    }
}
END_TEST

START_TEST(length_over_4gib_is_not_truncated)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_LENGTH, (1ull << 32) + 3, false);
    buf_appends(b, "abc");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 3);
    body_consumed(&s, b, 3);
    ck_assert_uint_eq(s.remaining, 1ull << 32);
    ck_assert(!s.done);
    b->end = b->cap; /* a full buffer */
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, buf_len(b));
    buf_put(&pool, b);
}
END_TEST

START_TEST(length_zero_is_done_at_once)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_LENGTH, 0, false);
    ck_assert(s.done);
    buf_appends(b, "GET / HTTP/1.1\r\n");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(s.done);
    ck_assert_uint_eq(buf_len(b), 16);
    buf_put(&pool, b);
}
END_TEST

/* ---- no body, until close ------------------------------------------------------------ */

START_TEST(none_is_done_and_forwards_nothing)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_NONE, 123, false); /* the length is ignored */
    ck_assert(s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    buf_appends(b, "HTTP/1.1 200 OK\r\n");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(s.done);
    ck_assert_uint_eq(buf_len(b), 17);
    buf_put(&pool, b);
}
END_TEST

START_TEST(close_forwards_everything_and_is_never_done)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_CLOSE, 0, false);
    ck_assert(!s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(!s.done);

    buf_appends(b, "0\r\n\r\nnot chunked, not a length");
    uint32_t n = buf_len(b);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, n);
    body_consumed(&s, b, 5);
    ck_assert(!s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, n - 5);
    body_consumed(&s, b, n - 5);
    ck_assert_uint_eq(buf_len(b), 0);
    ck_assert(!s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(!s.done);

    /* a full buffer goes whole */
    b->start = 0;
    b->end = b->cap;
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, b->cap);
    body_consumed(&s, b, b->cap);
    ck_assert(!s.done);
    buf_put(&pool, b);
}
END_TEST

START_TEST(close_byte_by_byte)
{
    static const char in[] = "HTTP/1.0 body bytes\r\n0\r\n\r\n";
    struct run r;
    struct body s;
    body_init(&s, HTTP1_BODY_CLOSE, 0, false);
    pump_bytes(&s, in, sizeof(in) - 1, 0, &r);
    assert_out(&r, in, sizeof(in) - 1);
    ck_assert_uint_eq(r.done_at, 0);
    ck_assert(!s.done);
}
END_TEST

/* ---- chunked --------------------------------------------------------------------------- */

/* Chunks, an extension, upper- and lower-case hex, trailers, then the next
 * message's first bytes. */
static const char CH_MSG[] = "5\r\nhello\r\n"
                             "1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                             "0001\r\n!\r\n"
                             "c\r\n 0\r\n\r\n1\r\n2\r\n\r\n"
                             "0\r\nX-Trailer: v\r\nX-Other:w\r\n\r\n";
static const char CH_PAYLOAD[] = "hello"
                                 "abcdefghijklmnopqrstuvwxyz"
                                 "!"
                                 " 0\r\n\r\n1\r\n2\r\n";
static const char NEXT[] = "GET /next HTTP/1.1\r\n";

#define CH_LEN      (sizeof(CH_MSG) - 1)
#define PAYLOAD_LEN (sizeof(CH_PAYLOAD) - 1)

/* CH_MSG followed by NEXT. */
static size_t ch_input(char *in)
{
    memcpy(in, CH_MSG, CH_LEN);
    memcpy(in + CH_LEN, NEXT, sizeof(NEXT) - 1);
    return CH_LEN + sizeof(NEXT) - 1;
}

static void check_chunked(bool dechunk, const size_t *cuts, int n_cuts, size_t take)
{
    char in[256];
    size_t len = ch_input(in);
    struct run r;
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
    REQUIRE(!s.done);
    pump_cuts(&s, in, len, cuts, n_cuts, take, &r);
    REQUIRE(r.rc == 0);
    if (dechunk)
        REQUIRE(r.out_len == PAYLOAD_LEN && memcmp(r.out, CH_PAYLOAD, PAYLOAD_LEN) == 0);
    else
        REQUIRE(r.out_len == CH_LEN && memcmp(r.out, CH_MSG, CH_LEN) == 0);
    REQUIRE(s.done);
    /* done once the last byte of the trailers is in, not before */
    size_t want_at = len;
    for (int i = n_cuts - 1; i >= 0 && cuts[i] >= CH_LEN; i--)
        want_at = cuts[i];
    REQUIRE(r.done_at == want_at);
    /* the next message stays in the buffer, whole */
    REQUIRE(r.fed - CH_LEN == r.left_len);
    REQUIRE(memcmp(r.left, NEXT, r.left_len) == 0);
}

START_TEST(chunked_passthrough_whole)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, false);
    char in[256];
    size_t len = ch_input(in);
    ck_assert(buf_append(b, in, len));
    ck_assert_int_eq(body_prepare(&s, b), 0);
    /* framing bytes are ready too, the next message is not */
    ck_assert_uint_eq(s.ready, CH_LEN);
    ck_assert(!s.done);
    body_consumed(&s, b, 7);
    ck_assert(!s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, CH_LEN - 7);
    body_consumed(&s, b, CH_LEN - 7);
    ck_assert(s.done);
    ck_assert_uint_eq(buf_len(b), sizeof(NEXT) - 1);
    buf_put(&pool, b);
}
END_TEST

START_TEST(chunked_passthrough_ready_grows_before_a_write)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, false);
    buf_appends(b, "5\r\nhel");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 6);
    /* nothing written yet; more comes: counted once */
    buf_appends(b, "lo\r\n0\r");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 12);
    ck_assert(!s.done);
    buf_appends(b, "\n\r\n");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 15);
    ck_assert(!s.done); /* the decoder is done, the bytes are not written */
    body_consumed(&s, b, 15);
    ck_assert(s.done);
    ck_assert_uint_eq(buf_len(b), 0);
    buf_put(&pool, b);
}
END_TEST

START_TEST(chunked_passthrough_byte_by_byte)
{
    size_t cuts[256];
    for (size_t i = 0; i < CH_LEN + 5; i++)
        cuts[i] = i + 1;
    for (size_t take = 0; take <= 2; take++)
        check_chunked(false, cuts, (int)(CH_LEN + 5), take);
}
END_TEST

START_TEST(chunked_passthrough_every_split)
{
    for (size_t i = 1; i < CH_LEN + 3; i++) {
        size_t one[1] = {i};
        check_chunked(false, one, 1, 0);
        for (size_t j = i + 1; j < CH_LEN + 3; j++) {
            size_t two[2] = {i, j};
            check_chunked(false, two, 2, 0);
        }
    }
}
END_TEST

START_TEST(chunked_empty_body)
{
    static const char in[] = "0\r\n\r\nNEXT";
    struct run r;
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, false);
    pump_bytes(&s, in, sizeof(in) - 1, 0, &r);
    assert_out(&r, "0\r\n\r\n", 5);
    ck_assert_uint_eq(r.done_at, 5);

    body_init(&s, HTTP1_BODY_CHUNKED, 0, true);
    pump_all(&s, in, sizeof(in) - 1, 0, &r);
    assert_out(&r, "", 0);
    ck_assert(s.done);
    ck_assert_uint_eq(r.left_len, 4);
    ck_assert_mem_eq(r.left, "NEXT", 4);
}
END_TEST

START_TEST(dechunk_whole)
{
    struct buf *b = buf_get(&pool);
    struct body s;
    body_init(&s, HTTP1_BODY_CHUNKED, 0, true);
    buf_appends(b, "5\r\nhello\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT");
    ck_assert_int_eq(body_prepare(&s, b), 0);
    /* the size line is gone from the buffer; the payload is at its start */
    ck_assert_uint_eq(b->start, 3);
    ck_assert_uint_eq(s.ready, 5);
    ck_assert_mem_eq(b->data + b->start, "hello", 5);
    body_consumed(&s, b, 5);
    ck_assert(!s.done);
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 3);
    ck_assert_mem_eq(b->data + b->start, "abc", 3);
    body_consumed(&s, b, 3);
    ck_assert(!s.done);
    /* the last chunk and trailers are framing: consumed, nothing ready */
    ck_assert_int_eq(body_prepare(&s, b), 0);
    ck_assert_uint_eq(s.ready, 0);
    ck_assert(s.done);
    ck_assert_uint_eq(buf_len(b), 4);
    ck_assert_mem_eq(b->data + b->start, "NEXT", 4);
    buf_put(&pool, b);
}
END_TEST

START_TEST(dechunk_byte_by_byte)
{
    size_t cuts[256];
    for (size_t i = 0; i < CH_LEN + 5; i++)
        cuts[i] = i + 1;
    for (size_t take = 0; take <= 2; take++)
        check_chunked(true, cuts, (int)(CH_LEN + 5), take);
}
END_TEST

START_TEST(dechunk_every_split)
{
    for (size_t i = 1; i < CH_LEN + 3; i++) {
        size_t one[1] = {i};
        check_chunked(true, one, 1, 0);
        check_chunked(true, one, 1, 3);
        for (size_t j = i + 1; j < CH_LEN + 3; j++) {
            size_t two[2] = {i, j};
            check_chunked(true, two, 2, 0);
        }
    }
}
END_TEST

START_TEST(dechunk_trailers_are_never_forwarded)
{
    static const char in[] = "2\r\nok\r\n0\r\nA: 1\r\nB-c: two words\r\nD:\r\n\r\n";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct run r;
        struct body s;
        body_init(&s, HTTP1_BODY_CHUNKED, 0, true);
        if (bytewise)
            pump_bytes(&s, in, sizeof(in) - 1, 0, &r);
        else
            pump_all(&s, in, sizeof(in) - 1, 0, &r);
        assert_out(&r, "ok", 2);
        ck_assert(s.done);
        ck_assert_uint_eq(r.done_at, sizeof(in) - 1);
        ck_assert_uint_eq(r.left_len, 0);
    }
}
END_TEST

START_TEST(chunked_not_done_before_the_final_crlf)
{
    static const char in[] = "1\r\nx\r\n0\r\nT: v\r\n\r";
    for (int dechunk = 0; dechunk < 2; dechunk++) {
        struct run r;
        struct body s;
        body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
        pump_bytes(&s, in, sizeof(in) - 1, 0, &r);
        ck_assert_int_eq(r.rc, 0);
        ck_assert(!s.done);
        ck_assert_uint_eq(r.done_at, 0);
    }
}
END_TEST

START_TEST(chunked_largest_size_is_accepted)
{
    /* 15 significant hex digits (2^60 - 1), after leading zeros */
    static const char in[] = "000FFFFFFFFFFFFFFF\r\nab";
    for (int dechunk = 0; dechunk < 2; dechunk++) {
        struct run r;
        struct body s;
        body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
        pump_all(&s, in, sizeof(in) - 1, 0, &r);
        if (dechunk)
            assert_out(&r, "ab", 2);
        else
            assert_out(&r, in, sizeof(in) - 1);
        ck_assert(!s.done);
    }
}
END_TEST

/* ---- malformed chunked framing ------------------------------------------------------- */

static const char *const BAD[] = {
    "zz\r\n",                               /* not hex */
    "g\r\n",                                /* not hex */
    "\r\n",                                 /* no size */
    "-5\r\n",                               /* a sign */
    "+5\r\n",                               /* a sign */
    "0x5\r\n",                              /* a prefix */
    "5 \r\nhello\r\n",                      /* a space after the size */
    "5\nhello\r\n",                         /* a bare LF */
    "5\rhello\r\n",                         /* a bare CR */
    "5\r\nhelloXY",                         /* no CRLF after the data */
    "5\r\nhello\rX",                        /* CR without LF after the data */
    "5\r\nhello\n",                         /* LF without CR after the data */
    "1000000000000000\r\n",                 /* 16 significant digits: over 2^60 */
    "FFFFFFFFFFFFFFFFFFFF\r\n",             /* overflows 64 bits */
    "0\r\nbad trailer\r\n\r\n",             /* a trailer without a colon */
    "0\r\n\r\x01",                          /* junk for the final LF */
    "3\r\nabc\r\n0\r\n:empty-name\r\n\r\n", /* an empty trailer name */
};

START_TEST(malformed_is_refused)
{
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        const char *in = BAD[i];
        size_t len = strlen(in);
        for (int dechunk = 0; dechunk < 2; dechunk++) {
            struct run r;
            struct body s;
            body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
            pump_all(&s, in, len, 0, &r);
            ck_assert_msg(r.rc == -1, "accepted whole (dechunk %d): %s", dechunk, in);
            ck_assert(!s.done);

            body_init(&s, HTTP1_BODY_CHUNKED, 0, dechunk);
            pump_bytes(&s, in, len, 0, &r);
            ck_assert_msg(r.rc == -1, "accepted byte by byte (dechunk %d): %s", dechunk, in);
            ck_assert(!s.done);
        }
    }
}
END_TEST

Suite *body_suite(void);
Suite *body_suite(void)
{
    Suite *s = suite_create("body");
    TCase *len = tcase_create("length");
    tcase_add_checked_fixture(len, setup, teardown);
    tcase_add_test(len, length_across_partial_buffers);
    tcase_add_test(len, length_done_exactly_at_the_end);
    tcase_add_test(len, length_over_4gib_is_not_truncated);
    tcase_add_test(len, length_zero_is_done_at_once);
    suite_add_tcase(s, len);

    TCase *other = tcase_create("none_and_close");
    tcase_add_checked_fixture(other, setup, teardown);
    tcase_add_test(other, none_is_done_and_forwards_nothing);
    tcase_add_test(other, close_forwards_everything_and_is_never_done);
    tcase_add_test(other, close_byte_by_byte);
    suite_add_tcase(s, other);

    TCase *ch = tcase_create("chunked_passthrough");
    tcase_add_checked_fixture(ch, setup, teardown);
    tcase_add_test(ch, chunked_passthrough_whole);
    tcase_add_test(ch, chunked_passthrough_ready_grows_before_a_write);
    tcase_add_test(ch, chunked_passthrough_byte_by_byte);
    tcase_add_test(ch, chunked_passthrough_every_split);
    tcase_add_test(ch, chunked_empty_body);
    tcase_add_test(ch, chunked_not_done_before_the_final_crlf);
    tcase_add_test(ch, chunked_largest_size_is_accepted);
    suite_add_tcase(s, ch);

    TCase *de = tcase_create("dechunk");
    tcase_add_checked_fixture(de, setup, teardown);
    tcase_add_test(de, dechunk_whole);
    tcase_add_test(de, dechunk_byte_by_byte);
    tcase_add_test(de, dechunk_every_split);
    tcase_add_test(de, dechunk_trailers_are_never_forwarded);
    suite_add_tcase(s, de);

    TCase *bad = tcase_create("malformed");
    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_add_test(bad, malformed_is_refused);
    suite_add_tcase(s, bad);
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
