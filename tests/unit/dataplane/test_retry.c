/* tests/unit/dataplane/test_retry.c */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "http1.h"
#include "retry.h"

START_TEST(backoff_stays_within_growing_ceiling)
{
    uint64_t rng = 42;
    const uint32_t ceiling[] = {25, 25, 50, 100, 200, 250, 250, 250};
    for (uint32_t attempt = 0; attempt < 8; attempt++) {
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint32_t d =
                retry_backoff_ms(attempt, RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_CAP_MS, &rng);
            ck_assert_uint_le(d, ceiling[attempt]);
            if (d < lo)
                lo = d;
            if (d > hi)
                hi = d;
        }
        /* full jitter: the whole range is used */
        ck_assert_uint_le(lo, ceiling[attempt] / 10);
        ck_assert_uint_ge(hi, ceiling[attempt] * 9 / 10);
    }
}
END_TEST

START_TEST(backoff_huge_attempts_and_edges)
{
    uint64_t rng = 0; /* seeded on first use */
    for (int i = 0; i < 1000; i++) {
        ck_assert_uint_le(retry_backoff_ms(40, 25, 250, &rng), 250);
        ck_assert_uint_le(retry_backoff_ms(UINT32_MAX, 25, 250, &rng), 250);
        ck_assert_uint_le(retry_backoff_ms(3, UINT32_MAX, 250, &rng), 250);
        ck_assert_uint_eq(retry_backoff_ms(5, 25, 0, &rng), 0);
        ck_assert_uint_eq(retry_backoff_ms(5, 0, 250, &rng), 0);
    }
    ck_assert_uint_ne(rng, 0);
    /* the mean is about half the ceiling */
    uint64_t sum = 0;
    for (int i = 0; i < 10000; i++)
        sum += retry_backoff_ms(9, 25, 250, &rng);
    ck_assert_uint_ge(sum / 10000, 110);
    ck_assert_uint_le(sum / 10000, 140);
}
END_TEST

START_TEST(budget_floor_of_three)
{
    struct retry_budget b;
    retry_budget_init(&b, 0, 0, 1);
    ck_assert_uint_eq(retry_budget_limit(&b), 3);
    retry_budget_request_started(&b, 0);
    for (int i = 0; i < 3; i++)
        ck_assert(retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
    ck_assert_uint_eq(retry_budget_exhausted(&b), 2);
    retry_budget_done(&b);
    ck_assert(retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
    ck_assert_uint_eq(retry_budget_exhausted(&b), 3);
    for (int i = 0; i < 5; i++)
        retry_budget_done(&b); /* more than taken: stays at zero */
    for (int i = 0; i < 3; i++)
        ck_assert(retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
}
END_TEST

START_TEST(budget_scales_with_active_requests)
{
    struct retry_budget b;
    retry_budget_init(&b, 0, 0, 1);
    for (int i = 0; i < 50; i++)
        retry_budget_request_started(&b, 0);
    ck_assert_uint_eq(retry_budget_limit(&b), 10);
    for (int i = 0; i < 10; i++)
        ck_assert(retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
    ck_assert_uint_eq(retry_budget_exhausted(&b), 1);
    /* requests finishing shrink the budget; retries in flight still count */
    for (int i = 0; i < 40; i++)
        retry_budget_request_finished(&b, 0);
    ck_assert_uint_eq(retry_budget_limit(&b), 3);
    for (int i = 0; i < 7; i++)
        retry_budget_done(&b);
    ck_assert(!retry_budget_try(&b));
    retry_budget_done(&b);
    ck_assert(retry_budget_try(&b));
    for (int i = 0; i < 20; i++)
        retry_budget_request_finished(&b, 0); /* more than started: stays at zero */
    ck_assert_uint_eq(retry_budget_limit(&b), 3);
    retry_budget_request_started(&b, 0);
    ck_assert_uint_eq(retry_budget_limit(&b), 3);
}
END_TEST

START_TEST(budget_is_shared_by_the_workers)
{
    struct retry_budget b;
    retry_budget_init(&b, 0, 50, 2);
    /* worker 0 carries all the load, worker 1 none: one budget for both */
    for (int i = 0; i < 10; i++)
        retry_budget_request_started(&b, 0);
    ck_assert_uint_eq(retry_budget_limit(&b), 5);
    for (int i = 0; i < 5; i++)
        ck_assert(retry_budget_try(&b));
    ck_assert(retry_budget_is_spent(&b));
    ck_assert(!retry_budget_try(&b));
    /* the idle worker's requests add room; its retries draw on the same */
    for (int i = 0; i < 4; i++)
        retry_budget_request_started(&b, 1);
    ck_assert_uint_eq(retry_budget_limit(&b), 7);
    ck_assert(retry_budget_try(&b));
    ck_assert(retry_budget_try(&b));
    ck_assert(!retry_budget_try(&b));
    /* more workers than slots share slots and still count right */
    struct retry_budget c;
    retry_budget_init(&c, 1, 100, 1000);
    for (uint32_t w = 0; w < 200; w++)
        retry_budget_request_started(&c, w);
    ck_assert_uint_eq(retry_budget_limit(&c), 200);
    for (uint32_t w = 0; w < 200; w++)
        retry_budget_request_finished(&c, w);
    ck_assert_uint_eq(retry_budget_limit(&c), 1);
}
END_TEST

struct budget_hammer {
    struct retry_budget b;
    atomic_uint peak;
    atomic_uint inflight;
};

static void *budget_run(void *arg)
{
    struct budget_hammer *h = arg;
    for (int i = 0; i < 20000; i++) {
        if (!retry_budget_try(&h->b))
            continue;
        unsigned n = atomic_fetch_add(&h->inflight, 1) + 1;
        unsigned p = atomic_load(&h->peak);
        while (n > p && !atomic_compare_exchange_weak(&h->peak, &p, n))
            ;
        atomic_fetch_sub(&h->inflight, 1);
        retry_budget_done(&h->b);
    }
    return NULL;
}

START_TEST(budget_limit_holds_across_threads)
{
    static struct budget_hammer h;
    retry_budget_init(&h.b, 2, 1, 4);
    atomic_init(&h.peak, 0);
    atomic_init(&h.inflight, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, budget_run, &h), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_uint_le(atomic_load(&h.peak), 2);
    ck_assert(!retry_budget_is_spent(&h.b));
}
END_TEST

START_TEST(budget_custom_parameters)
{
    struct retry_budget b;
    retry_budget_init(&b, 1, 50, 1);
    ck_assert_uint_eq(retry_budget_limit(&b), 1);
    for (int i = 0; i < 9; i++)
        retry_budget_request_started(&b, 0);
    ck_assert_uint_eq(retry_budget_limit(&b), 4);
}
END_TEST

/* A GET with no body, after its first attempt, with retries on. */
static struct retry_state fresh_get(void)
{
    struct retry_state st = {.method = HTTP1_M_GET,
                             .body_complete = true,
                             .head_kept = true,
                             .seen_retries = true,
                             .tries = 1,
                             .max_retries = 2};
    return st;
}

START_TEST(decide_connect_failure_goes_elsewhere_now)
{
    struct retry_state st = fresh_get();
    ck_assert_int_eq(retry_decide(RETRY_FAIL_CONNECT, &st), RETRY_NOW);
    /* any method, a body not yet read to its end, retries of seen requests
     * off, past max_retries: it never reached a backend */
    st.method = HTTP1_M_POST;
    st.body_complete = false;
    st.seen_retries = false;
    st.tries = 5;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_CONNECT, &st), RETRY_NOW);
    st.tries = RETRY_MAX_TRIES;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_CONNECT, &st), RETRY_NONE);
    st = fresh_get();
    st.draining = true;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_CONNECT, &st), RETRY_NONE);
}
END_TEST

START_TEST(decide_pooled_close_replays_when_nothing_came_back)
{
    struct retry_state st = fresh_get();
    st.method = HTTP1_M_POST; /* nothing left lb but the head: safe for any method */
    ck_assert_int_eq(retry_decide(RETRY_FAIL_POOLED, &st), RETRY_REPLAY);
    st.answer_started = true; /* bytes came back: the backend saw it */
    ck_assert_int_eq(retry_decide(RETRY_FAIL_POOLED, &st), RETRY_NONE);
    st = fresh_get();
    st.answer_started = true; /* ... and an idempotent one is a reset retry */
    ck_assert_int_eq(retry_decide(RETRY_FAIL_POOLED, &st), RETRY_NONE);
    st = fresh_get();
    st.body_sent = true;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_POOLED, &st), RETRY_NONE);
}
END_TEST

START_TEST(decide_maybe_seen_only_idempotent_within_max)
{
    static const enum retry_failure seen[] = {RETRY_FAIL_RESET, RETRY_FAIL_TIMEOUT, RETRY_FAIL_5XX};
    for (unsigned k = 0; k < 3; k++) {
        struct retry_state st = fresh_get();
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_BACKOFF);
        st.tries = 2;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_BACKOFF);
        st.tries = 3; /* two retries done */
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st = fresh_get();
        st.method = HTTP1_M_POST;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st.method = HTTP1_M_PUT;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_BACKOFF);
        st.body_complete = false; /* a streamed body is not kept */
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st = fresh_get();
        st.body_sent = true;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st = fresh_get();
        st.answer_started = true;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st = fresh_get();
        st.head_kept = false;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
        st = fresh_get();
        st.seen_retries = false;
        ck_assert_int_eq(retry_decide(seen[k], &st), RETRY_NONE);
    }
}
END_TEST

START_TEST(decide_local_shortage_backs_off_any_method)
{
    struct retry_state st = fresh_get();
    st.method = HTTP1_M_POST;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_LOCAL, &st), RETRY_BACKOFF);
    st.tries = 3;
    ck_assert_int_eq(retry_decide(RETRY_FAIL_LOCAL, &st), RETRY_NONE);
}
END_TEST

START_TEST(idempotent_methods_per_rfc9110)
{
    ck_assert(retry_is_idempotent(HTTP1_M_GET));
    ck_assert(retry_is_idempotent(HTTP1_M_HEAD));
    ck_assert(retry_is_idempotent(HTTP1_M_OPTIONS));
    ck_assert(retry_is_idempotent(HTTP1_M_TRACE));
    ck_assert(retry_is_idempotent(HTTP1_M_PUT));
    ck_assert(retry_is_idempotent(HTTP1_M_DELETE));
    ck_assert(!retry_is_idempotent(HTTP1_M_POST));
    ck_assert(!retry_is_idempotent(HTTP1_M_PATCH));
    ck_assert(!retry_is_idempotent(HTTP1_M_CONNECT));
    ck_assert(!retry_is_idempotent(HTTP1_M_OTHER));
    ck_assert(!retry_is_idempotent(200));
}
END_TEST

Suite *retry_suite(void);
Suite *retry_suite(void)
{
    Suite *s = suite_create("retry");
    TCase *bo = tcase_create("backoff");
    tcase_add_test(bo, backoff_stays_within_growing_ceiling);
    tcase_add_test(bo, backoff_huge_attempts_and_edges);
    suite_add_tcase(s, bo);
    TCase *bu = tcase_create("budget");
    tcase_add_test(bu, budget_floor_of_three);
    tcase_add_test(bu, budget_scales_with_active_requests);
    tcase_add_test(bu, budget_custom_parameters);
    tcase_add_test(bu, budget_is_shared_by_the_workers);
    tcase_add_test(bu, budget_limit_holds_across_threads);
    suite_add_tcase(s, bu);
    TCase *id = tcase_create("idempotency");
    tcase_add_test(id, idempotent_methods_per_rfc9110);
    tcase_add_test(id, decide_connect_failure_goes_elsewhere_now);
    tcase_add_test(id, decide_pooled_close_replays_when_nothing_came_back);
    tcase_add_test(id, decide_maybe_seen_only_idempotent_within_max);
    tcase_add_test(id, decide_local_shortage_backs_off_any_method);
    suite_add_tcase(s, id);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(retry_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
