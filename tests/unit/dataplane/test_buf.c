/* tests/unit/dataplane/test_buf.c
 *
 * The pool and the inline helpers. Every case ends with buf_pool_deinit()
 * (the fixture) and runs in its own process: under ASan a buffer that was
 * neither pooled nor freed is reported as a leak and fails that case. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static struct buf_pool pool;

static void setup(void)
{
    memset(&pool, 0, sizeof(pool));
}

static void teardown(void)
{
    buf_pool_deinit(&pool);
    ck_assert_ptr_null(pool.free);
    ck_assert_uint_eq(pool.n_free, 0);
}

static uint32_t free_list_len(const struct buf_pool *p)
{
    uint32_t n = 0;
    for (const struct buf *b = p->free; b != NULL && n <= BUF_POOL_MAX + 1; b = b->next)
        n++;
    return n;
}

/* Fills [start, end) of <b> with a pattern that tells positions apart. */
static void fill(struct buf *b, uint32_t start, uint32_t end)
{
    for (uint32_t i = start; i < end; i++)
        b->data[i] = (char)(i * 7 + 3);
    b->start = start;
    b->end = end;
}

/* <b> holds the pattern fill() wrote at [from, from + len), at its start. */
static void assert_pattern(const struct buf *b, uint32_t from, uint32_t len)
{
    ck_assert_uint_eq(buf_len(b), len);
    for (uint32_t i = 0; i < len; i++)
        if (b->data[b->start + i] != (char)((from + i) * 7 + 3))
            ck_abort_msg("byte %u differs", i);
}

/* ---- pool ---------------------------------------------------------------------------- */

START_TEST(get_from_an_empty_pool_allocates)
{
    struct buf *b = buf_get(&pool);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cap, BUF_SIZE);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, 0);
    ck_assert_ptr_null(b->next);
    ck_assert_uint_eq(pool.n_free, 0);
    /* the whole capacity is usable (ASan checks the last byte) */
    b->data[BUF_SIZE - 1] = 'x';
    buf_put(&pool, b);
    ck_assert_uint_eq(pool.n_free, 1);
}
END_TEST

START_TEST(put_buffer_comes_back_empty)
{
    struct buf *b = buf_get(&pool);
    fill(b, 100, 900);
    buf_put(&pool, b);
    ck_assert_uint_eq(pool.n_free, 1);
    ck_assert_ptr_eq(pool.free, b);

    struct buf *again = buf_get(&pool);
    ck_assert_ptr_eq(again, b);
    ck_assert_uint_eq(pool.n_free, 0);
    ck_assert_ptr_null(pool.free);
    ck_assert_uint_eq(again->start, 0);
    ck_assert_uint_eq(again->end, 0);
    ck_assert_uint_eq(again->cap, BUF_SIZE);
    ck_assert_ptr_null(again->next);
    buf_put(&pool, again);
}
END_TEST

START_TEST(several_buffers_are_recycled)
{
    struct buf *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = buf_get(&pool);
    for (int i = 0; i < 4; i++)
        buf_put(&pool, b[i]);
    ck_assert_uint_eq(pool.n_free, 4);
    ck_assert_uint_eq(free_list_len(&pool), 4);
    /* the next four gets allocate nothing: each is one of those */
    for (int i = 0; i < 4; i++) {
        struct buf *g = buf_get(&pool);
        ck_assert(g == b[0] || g == b[1] || g == b[2] || g == b[3]);
        ck_assert_uint_eq(buf_len(g), 0);
    }
    ck_assert_uint_eq(pool.n_free, 0);
    for (int i = 0; i < 4; i++)
        buf_put(&pool, b[i]);
}
END_TEST

START_TEST(put_null_is_a_no_op)
{
    buf_put(&pool, NULL);
    ck_assert_uint_eq(pool.n_free, 0);
    ck_assert_ptr_null(pool.free);
}
END_TEST

START_TEST(pool_keeps_at_most_max)
{
    enum {
        N = BUF_POOL_MAX + 5
    };
    static struct buf *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = buf_get(&pool);
        ck_assert_ptr_nonnull(b[i]);
    }
    for (int i = 0; i < N; i++) {
        buf_put(&pool, b[i]);
        ck_assert_uint_le(pool.n_free, BUF_POOL_MAX);
    }
    /* the five over the limit were freed (a leak otherwise) */
    ck_assert_uint_eq(pool.n_free, BUF_POOL_MAX);
    ck_assert_uint_eq(free_list_len(&pool), BUF_POOL_MAX);
}
END_TEST

/* After a burst the pool gives back what stayed idle, down to
 * BUF_POOL_KEEP; what a steady load uses between two trims stays. */
START_TEST(trim_frees_what_stayed_idle)
{
    enum {
        N = 100
    };
    static struct buf *b[N];
    for (int i = 0; i < N; i++)
        b[i] = buf_get(&pool);
    for (int i = 0; i < N; i++)
        buf_put(&pool, b[i]);
    ck_assert_uint_eq(pool.n_free, N);
    /* the burst's low-water mark was 0: nothing is known idle yet */
    ck_assert_uint_eq(buf_pool_trim(&pool), 0);
    ck_assert_uint_eq(pool.n_free, N);
    /* a steady load takes and returns 30 at a time: those stay */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 30; i++)
            b[i] = buf_get(&pool);
        for (int i = 0; i < 30; i++)
            buf_put(&pool, b[i]);
    }
    ck_assert_uint_eq(buf_pool_trim(&pool), N - 30 - BUF_POOL_KEEP);
    ck_assert_uint_eq(pool.n_free, 30 + BUF_POOL_KEEP);
    ck_assert_uint_eq(free_list_len(&pool), 30 + BUF_POOL_KEEP);
    /* idle since: down to the floor, and no further */
    ck_assert_uint_eq(buf_pool_trim(&pool), 30);
    ck_assert_uint_eq(pool.n_free, BUF_POOL_KEEP);
    ck_assert_uint_eq(buf_pool_trim(&pool), 0);
    ck_assert_uint_eq(pool.n_free, BUF_POOL_KEEP);
}
END_TEST

START_TEST(pool_deinit_frees_everything)
{
    struct buf *b[10];
    for (int i = 0; i < 10; i++)
        b[i] = buf_get(&pool);
    for (int i = 0; i < 10; i++)
        buf_put(&pool, b[i]);
    ck_assert_uint_eq(pool.n_free, 10);
    buf_pool_deinit(&pool);
    ck_assert_ptr_null(pool.free);
    ck_assert_uint_eq(pool.n_free, 0);
    /* a pool can be used again after deinit, and deinit twice is harmless */
    buf_pool_deinit(&pool);
    struct buf *g = buf_get(&pool);
    ck_assert_ptr_nonnull(g);
    buf_put(&pool, g);
    ck_assert_uint_eq(pool.n_free, 1);
}
END_TEST

/* ---- grow ---------------------------------------------------------------------------- */

START_TEST(grow_keeps_the_bytes_moved_to_start)
{
    struct buf *b = buf_get(&pool);
    fill(b, 1000, 5000);
    struct buf *g = buf_grow(&pool, b, 4 * BUF_SIZE);
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_ne(g, b);
    ck_assert_uint_ge(g->cap, 4 * BUF_SIZE);
    ck_assert_uint_eq(g->start, 0);
    ck_assert_uint_eq(g->end, 4000);
    ck_assert_ptr_null(g->next);
    assert_pattern(g, 1000, 4000);
    /* the old one went back to the pool */
    ck_assert_uint_eq(pool.n_free, 1);
    ck_assert_ptr_eq(pool.free, b);
    /* the whole new capacity is usable */
    g->data[g->cap - 1] = 'x';
    buf_put(&pool, g);
}
END_TEST

START_TEST(grow_a_full_buffer)
{
    struct buf *b = buf_get(&pool);
    fill(b, 0, BUF_SIZE);
    struct buf *g = buf_grow(&pool, b, BUF_SIZE + 1);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_ge(g->cap, BUF_SIZE + 1);
    assert_pattern(g, 0, BUF_SIZE);
    ck_assert(buf_append(g, "z", 1));
    ck_assert_uint_eq(buf_len(g), BUF_SIZE + 1);
    buf_put(&pool, g);
}
END_TEST

START_TEST(grow_an_empty_buffer)
{
    struct buf *b = buf_get(&pool);
    b->start = b->end = 300;
    struct buf *g = buf_grow(&pool, b, 2 * BUF_SIZE);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(g->start, 0);
    ck_assert_uint_eq(g->end, 0);
    buf_put(&pool, g);
}
END_TEST

START_TEST(grow_returns_the_same_buffer_when_big_enough)
{
    struct buf *b = buf_get(&pool);
    fill(b, 10, 20);
    ck_assert_ptr_eq(buf_grow(&pool, b, BUF_SIZE), b);
    ck_assert_ptr_eq(buf_grow(&pool, b, 1), b);
    ck_assert_ptr_eq(buf_grow(&pool, b, 0), b);
    ck_assert_uint_eq(b->cap, BUF_SIZE);
    assert_pattern(b, 10, 10);
    ck_assert_uint_eq(pool.n_free, 0);

    /* and a grown one too */
    struct buf *g = buf_grow(&pool, b, 3 * BUF_SIZE);
    ck_assert_ptr_eq(buf_grow(&pool, g, 3 * BUF_SIZE), g);
    ck_assert_ptr_eq(buf_grow(&pool, g, 2 * BUF_SIZE), g);
    assert_pattern(g, 10, 10);
    buf_put(&pool, g);
}
END_TEST

START_TEST(grown_buffer_is_freed_not_pooled)
{
    struct buf *b = buf_get(&pool);
    fill(b, 0, 100);
    struct buf *g = buf_grow(&pool, b, 2 * BUF_SIZE);
    ck_assert_uint_eq(pool.n_free, 1);
    buf_put(&pool, g);
    ck_assert_uint_eq(pool.n_free, 1);
    ck_assert_ptr_eq(pool.free, b);
    /* only BUF_SIZE buffers come out of the pool */
    struct buf *n = buf_get(&pool);
    ck_assert_ptr_eq(n, b);
    ck_assert_uint_eq(n->cap, BUF_SIZE);
    buf_put(&pool, n);
}
END_TEST

START_TEST(growing_a_grown_buffer_frees_the_old_one)
{
    struct buf *b = buf_get(&pool);
    fill(b, 50, 150);
    struct buf *g1 = buf_grow(&pool, b, 2 * BUF_SIZE);
    ck_assert_uint_eq(pool.n_free, 1);
    g1->start = 20; /* consumed some */
    struct buf *g2 = buf_grow(&pool, g1, 4 * BUF_SIZE);
    ck_assert_ptr_nonnull(g2);
    ck_assert_uint_eq(pool.n_free, 1); /* g1 freed, not pooled */
    ck_assert_uint_eq(g2->start, 0);
    assert_pattern(g2, 70, 80);
    buf_put(&pool, g2);
    ck_assert_uint_eq(pool.n_free, 1);
}
END_TEST

/* ---- compact, append ------------------------------------------------------------------ */

START_TEST(fit_copies_a_short_content_and_pools_the_buffer)
{
    struct buf *b = buf_get(&pool);
    fill(b, 10, 310);
    struct buf *f = buf_fit(&pool, b);
    ck_assert_ptr_ne(f, b);
    ck_assert_uint_eq(f->cap, 300);
    assert_pattern(f, 10, 300);
    ck_assert_uint_eq(free_list_len(&pool), 1);
    /* a fitted buffer is freed when put back, never pooled */
    buf_put(&pool, f);
    ck_assert_uint_eq(free_list_len(&pool), 1);
}
END_TEST

START_TEST(fit_keeps_long_or_unpooled_buffers)
{
    struct buf *b = buf_get(&pool);
    fill(b, 0, BUF_FIT_MAX + 1);
    ck_assert_ptr_eq(buf_fit(&pool, b), b);
    struct buf *e = buf_get(&pool);
    struct buf *f = buf_fit(&pool, e);
    ck_assert_ptr_ne(f, e);
    ck_assert_uint_eq(buf_len(f), 0);
    /* a fitted buffer is not fitted again */
    ck_assert_ptr_eq(buf_fit(&pool, f), f);
    buf_put(&pool, f);
    buf_put(&pool, b);
    ck_assert_uint_eq(free_list_len(&pool), 2);
}
END_TEST

START_TEST(compact_empty_starts_over)
{
    struct buf *b = buf_get(&pool);
    b->start = b->end = 500;
    buf_compact(b);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, 0);

    b->start = b->end = b->cap; /* everything read and consumed */
    buf_compact(b);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, 0);

    buf_compact(b); /* already at the start */
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, 0);
    buf_put(&pool, b);
}
END_TEST

START_TEST(compact_full_moves_bytes_to_start)
{
    struct buf *b = buf_get(&pool);
    fill(b, 4000, BUF_SIZE);
    buf_compact(b);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, BUF_SIZE - 4000);
    assert_pattern(b, 4000, BUF_SIZE - 4000);

    /* one byte left, at the very end */
    fill(b, BUF_SIZE - 1, BUF_SIZE);
    buf_compact(b);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, 1);
    assert_pattern(b, BUF_SIZE - 1, 1);
    buf_put(&pool, b);
}
END_TEST

START_TEST(compact_leaves_room_alone)
{
    struct buf *b = buf_get(&pool);
    /* bytes in the middle, room after them: nothing moves */
    fill(b, 100, 200);
    buf_compact(b);
    ck_assert_uint_eq(b->start, 100);
    ck_assert_uint_eq(b->end, 200);
    assert_pattern(b, 100, 100);

    /* full from the start: nothing to gain */
    fill(b, 0, BUF_SIZE);
    buf_compact(b);
    ck_assert_uint_eq(b->start, 0);
    ck_assert_uint_eq(b->end, BUF_SIZE);
    buf_put(&pool, b);
}
END_TEST

START_TEST(append_refuses_what_does_not_fit)
{
    struct buf *b = buf_get(&pool);
    static char big[BUF_SIZE + 1];
    memset(big, 'a', sizeof(big));

    ck_assert(!buf_append(b, big, BUF_SIZE + 1));
    ck_assert_uint_eq(b->end, 0);

    b->start = b->end = BUF_SIZE - 3;
    ck_assert(!buf_append(b, "wxyz", 4)); /* room at the start does not count */
    ck_assert_uint_eq(b->end, BUF_SIZE - 3);
    ck_assert(!buf_append(b, big, SIZE_MAX)); /* no wrap-around */
    ck_assert_uint_eq(b->end, BUF_SIZE - 3);

    ck_assert(buf_append(b, "xyz", 3)); /* exactly to the end */
    ck_assert_uint_eq(b->end, BUF_SIZE);
    ck_assert_mem_eq(b->data + b->start, "xyz", 3);
    ck_assert(!buf_append(b, "!", 1));
    ck_assert(buf_append(b, "", 0));
    ck_assert_uint_eq(b->end, BUF_SIZE);

    b->start = b->end = 0;
    ck_assert(buf_append(b, big, BUF_SIZE));
    ck_assert_uint_eq(buf_len(b), BUF_SIZE);
    buf_put(&pool, b);
}
END_TEST

START_TEST(appends_and_len)
{
    ck_assert_uint_eq(buf_len(NULL), 0);
    struct buf *b = buf_get(&pool);
    ck_assert(buf_appends(b, "HTTP/1.1 "));
    ck_assert(buf_appends(b, "200 OK\r\n"));
    ck_assert(buf_appends(b, ""));
    ck_assert_uint_eq(buf_len(b), 17);
    ck_assert_mem_eq(b->data, "HTTP/1.1 200 OK\r\n", 17);
    b->start = 9;
    ck_assert_uint_eq(buf_len(b), 8);
    buf_put(&pool, b);
}
END_TEST

Suite *buf_suite(void);
Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *p = tcase_create("pool");
    tcase_add_checked_fixture(p, setup, teardown);
    tcase_add_test(p, get_from_an_empty_pool_allocates);
    tcase_add_test(p, put_buffer_comes_back_empty);
    tcase_add_test(p, several_buffers_are_recycled);
    tcase_add_test(p, put_null_is_a_no_op);
    tcase_add_test(p, pool_keeps_at_most_max);
    tcase_add_test(p, pool_deinit_frees_everything);
    tcase_add_test(p, trim_frees_what_stayed_idle);
    suite_add_tcase(s, p);

    TCase *g = tcase_create("grow");
    tcase_add_checked_fixture(g, setup, teardown);
    tcase_add_test(g, grow_keeps_the_bytes_moved_to_start);
    tcase_add_test(g, grow_a_full_buffer);
    tcase_add_test(g, grow_an_empty_buffer);
    tcase_add_test(g, grow_returns_the_same_buffer_when_big_enough);
    tcase_add_test(g, grown_buffer_is_freed_not_pooled);
    tcase_add_test(g, growing_a_grown_buffer_frees_the_old_one);
    tcase_add_test(g, fit_copies_a_short_content_and_pools_the_buffer);
    tcase_add_test(g, fit_keeps_long_or_unpooled_buffers);
    suite_add_tcase(s, g);

    TCase *c = tcase_create("compact_append");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, compact_empty_starts_over);
    tcase_add_test(c, compact_full_moves_bytes_to_start);
    tcase_add_test(c, compact_leaves_room_alone);
    tcase_add_test(c, append_refuses_what_does_not_fit);
    tcase_add_test(c, appends_and_len);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
