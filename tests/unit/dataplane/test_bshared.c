/* tests/unit/dataplane/test_bshared.c: the per-backend state the workers
 * share: the registry, passive ejection, the connection limit and its queue. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bshared.h"
#include "connq.h"
#include "eject.h"
#include "lb_err.h"

#define THREADS 4

static const struct breaker_config bcfg = {.enabled = true, .threshold = 1, .timeout_ms = 1000};

/* ---- registry ---------------------------------------------------------------------- */

START_TEST(registry_shares_state_by_id)
{
    struct bshared_registry *r = bshared_registry_new(NULL);
    struct bshared *w1 = bshared_registry_get(r, "api-1", NULL);
    struct bshared *w2 = bshared_registry_get(r, "api-1", NULL);
    struct bshared *other = bshared_registry_get(r, "api-2", NULL);
    ck_assert_ptr_nonnull(w1);
    ck_assert_ptr_eq(w1, w2);
    ck_assert_ptr_ne(w1, other);
    ck_assert_str_eq(w1->id, "api-1");
    ck_assert_uint_eq(bshared_registry_count(r), 2);
    breaker_allow(w1->breaker, &bcfg, 0);
    breaker_done(w1->breaker, &bcfg, BREAKER_PASS, false, 0);
    ck_assert_int_eq(breaker_allow(w2->breaker, &bcfg, 1), BREAKER_REJECT);
    ck_assert_int_eq(breaker_allow(other->breaker, &bcfg, 1), BREAKER_PASS);
    /* a new view takes its reference before the old one lets go: state kept */
    struct bshared *w3 = bshared_registry_get(r, "api-1", NULL);
    bshared_registry_release(r, w1);
    bshared_registry_release(r, w2);
    ck_assert_int_eq(breaker_state(w3->breaker, 1), BREAKER_STATE_OPEN);
    struct bshared *f = bshared_registry_find(r, "api-1");
    ck_assert_ptr_eq(f, w3);
    bshared_registry_release(r, f);
    bshared_registry_release(r, w3);
    /* the last reference gone: the entry is freed, a new one starts fresh */
    ck_assert_uint_eq(bshared_registry_count(r), 1);
    ck_assert_ptr_null(bshared_registry_find(r, "api-1"));
    struct bshared *again = bshared_registry_get(r, "api-1", NULL);
    ck_assert_int_eq(breaker_state(again->breaker, 1), BREAKER_STATE_CLOSED);
    ck_assert(!eject_is_out(&again->eject));
    bshared_registry_release(r, again);
    bshared_registry_release(r, NULL);
    bshared_registry_release(r, other);
    ck_assert_uint_eq(bshared_registry_count(r), 0);
    bshared_registry_free(r);
    bshared_registry_free(NULL);
}
END_TEST

START_TEST(registry_rejects_empty_id)
{
    struct bshared_registry *r = bshared_registry_new(NULL);
    struct lb_err err = {0};
    ck_assert_ptr_null(bshared_registry_get(r, "", &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_ptr_null(bshared_registry_get(r, NULL, NULL));
    ck_assert_ptr_null(bshared_registry_find(r, NULL));
    bshared_registry_free(r);
}
END_TEST

START_TEST(registry_grows_and_frees_leftovers)
{
    struct bshared_registry *r = bshared_registry_new(NULL);
    struct bshared *b[500];
    char id[32];
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof(id), "backend-%d", i);
        b[i] = bshared_registry_get(r, id, NULL);
        ck_assert_ptr_nonnull(b[i]);
    }
    ck_assert_uint_eq(bshared_registry_count(r), 500);
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof(id), "backend-%d", i);
        struct bshared *f = bshared_registry_find(r, id);
        ck_assert_ptr_eq(f, b[i]);
        ck_assert_str_eq(f->id, id);
        bshared_registry_release(r, f);
    }
    for (int i = 0; i < 250; i++)
        bshared_registry_release(r, b[i]);
    ck_assert_uint_eq(bshared_registry_count(r), 250);
    /* the other 250 are freed with the registry (ASan checks) */
    bshared_registry_free(r);
}
END_TEST

struct reg_hammer {
    struct bshared_registry *r;
    struct bshared *first;
    atomic_int mismatch;
};

static void *reg_run(void *arg)
{
    struct reg_hammer *h = arg;
    for (int i = 0; i < 2000; i++) {
        struct bshared *b = bshared_registry_get(h->r, "shared", NULL);
        if (b != h->first)
            atomic_fetch_add(&h->mismatch, 1);
        (void)breaker_allow(b->breaker, &bcfg, (uint64_t)i);
        bshared_registry_release(h->r, b);
        char id[32];
        snprintf(id, sizeof(id), "tmp-%d", i % 7);
        b = bshared_registry_get(h->r, id, NULL);
        bshared_registry_release(h->r, b);
    }
    return NULL;
}

START_TEST(registry_is_thread_safe)
{
    struct reg_hammer h = {.r = bshared_registry_new(NULL)};
    h.first = bshared_registry_get(h.r, "shared", NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, reg_run, &h), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&h.mismatch), 0);
    ck_assert_uint_eq(bshared_registry_count(h.r), 1);
    bshared_registry_release(h.r, h.first);
    ck_assert_uint_eq(bshared_registry_count(h.r), 0);
    bshared_registry_free(h.r);
}
END_TEST

/* ---- ejection -------------------------------------------------------------------- */

static const struct eject_config ecfg = {
    .enabled = true, .probe_base_ms = 1000, .probe_max_ms = 8000};

START_TEST(first_failure_ejects_once)
{
    struct eject e = {0};
    ck_assert(!eject_is_out(&e));
    ck_assert(eject_on_connect_failure(&e, &ecfg, 100));
    ck_assert(eject_is_out(&e));
    /* the other workers' failures in the same moment change nothing */
    ck_assert(!eject_on_connect_failure(&e, &ecfg, 101));
    ck_assert_uint_eq(eject_count(&e), 1);
    ck_assert_uint_eq(eject_backoff_ms(&e), 1000);
}
END_TEST

START_TEST(disabled_never_ejects)
{
    struct eject e = {0};
    struct eject_config off = ecfg;
    off.enabled = false;
    ck_assert(!eject_on_connect_failure(&e, &off, 100));
    ck_assert(!eject_is_out(&e));
    ck_assert_uint_eq(eject_count(&e), 0);
}
END_TEST

START_TEST(probe_backs_off_doubling_to_the_cap)
{
    struct eject e = {0};
    eject_on_connect_failure(&e, &ecfg, 0);
    ck_assert(!eject_probe_claim(&e, 999)); /* not due yet */
    ck_assert(eject_probe_claim(&e, 1000));
    ck_assert(!eject_probe_claim(&e, 1000)); /* one probe at a time */
    ck_assert(!eject_probe_done(&e, &ecfg, false, 1000));
    ck_assert_uint_eq(eject_backoff_ms(&e), 2000);
    ck_assert(!eject_probe_claim(&e, 2999));
    ck_assert(eject_probe_claim(&e, 3000));
    eject_probe_done(&e, &ecfg, false, 3000);
    ck_assert_uint_eq(eject_backoff_ms(&e), 4000);
    ck_assert(eject_probe_claim(&e, 7000));
    eject_probe_done(&e, &ecfg, false, 7000);
    ck_assert_uint_eq(eject_backoff_ms(&e), 8000);
    ck_assert(eject_probe_claim(&e, 15000));
    eject_probe_done(&e, &ecfg, false, 15000);
    ck_assert_uint_eq(eject_backoff_ms(&e), 8000); /* capped */
    ck_assert(eject_probe_claim(&e, 23000));
    ck_assert(eject_probe_done(&e, &ecfg, true, 23000));
    ck_assert(!eject_is_out(&e));
    ck_assert_uint_eq(atomic_load(&e.probed_back), 1);
    ck_assert(!eject_probe_claim(&e, 99999)); /* in rotation: nothing to probe */
}
END_TEST

START_TEST(flapping_backend_is_probed_less_often)
{
    struct eject e = {0};
    eject_on_connect_failure(&e, &ecfg, 0);
    ck_assert(eject_probe_claim(&e, 1000));
    ck_assert(eject_probe_done(&e, &ecfg, true, 1000));
    /* out again soon after coming back: twice the last back-off */
    ck_assert(eject_on_connect_failure(&e, &ecfg, 1500));
    ck_assert_uint_eq(eject_backoff_ms(&e), 2000);
    ck_assert(!eject_probe_claim(&e, 3499));
    ck_assert(eject_probe_claim(&e, 3500));
    ck_assert(eject_probe_done(&e, &ecfg, true, 3500));
    /* out again after a long good spell: from the base again */
    ck_assert(eject_on_connect_failure(&e, &ecfg, 3500 + 8000));
    ck_assert_uint_eq(eject_backoff_ms(&e), 1000);
    ck_assert_uint_eq(eject_count(&e), 3);
}
END_TEST

START_TEST(controlled_waits_for_the_hand_over)
{
    struct eject e = {0};
    struct eject_config cc = ecfg;
    cc.controlled = true;
    eject_on_connect_failure(&e, &cc, 0);
    ck_assert(!eject_probe_claim(&e, 1000)); /* the health checks should come first */
    ck_assert(!eject_probe_claim(&e, 7999));
    ck_assert(eject_hand_over(&e, 7, 1200));
    ck_assert(!eject_is_out(&e));
    /* a worker still on generation 6 (up there) keeps it out; 7 on, health decides */
    ck_assert(eject_blocks(&e, 6));
    ck_assert(!eject_blocks(&e, 7));
    ck_assert(!eject_hand_over(&e, 7, 1300)); /* once */
    ck_assert_uint_eq(atomic_load(&e.handed_over), 1);
    /* and when the control plane is unreachable, the probe after the cap */
    eject_on_connect_failure(&e, &cc, 20000);
    ck_assert(eject_probe_claim(&e, 28000));
    ck_assert(eject_probe_done(&e, &cc, true, 28000));
}
END_TEST

struct eject_hammer {
    struct eject e;
    atomic_int won;
};

static void *eject_run(void *arg)
{
    struct eject_hammer *h = arg;
    for (int i = 0; i < 1000; i++) {
        if (eject_on_connect_failure(&h->e, &ecfg, (uint64_t)i))
            atomic_fetch_add(&h->won, 1);
        if (eject_probe_claim(&h->e, (uint64_t)i + 5000))
            eject_probe_done(&h->e, &ecfg, i % 2 == 0, (uint64_t)i + 5000);
    }
    return NULL;
}

START_TEST(ejections_counted_once_across_threads)
{
    static struct eject_hammer h;
    memset(&h, 0, sizeof(h));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, eject_run, &h), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* each ejection was won by exactly one thread */
    ck_assert_uint_eq(eject_count(&h.e), (uint64_t)atomic_load(&h.won));
    ck_assert(!atomic_load(&h.e.probing));
}
END_TEST

/* ---- connection limit and queue ------------------------------------------------------- */

static void count_wake(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

START_TEST(no_limit_counts_only)
{
    struct connq q;
    connq_init(&q);
    struct connq_waiter w[3];
    struct connq_inbox in;
    atomic_int wakes = 0;
    connq_inbox_init(&in, count_wake, &wakes);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(connq_acquire(&q, 0, 0, &w[i], &in, 0), CONNQ_OK);
    ck_assert_uint_eq(atomic_load(&q.conns), 3);
    for (int i = 0; i < 3; i++)
        connq_release(&q, 0, 0);
    ck_assert_uint_eq(atomic_load(&q.conns), 0);
    ck_assert_int_eq(atomic_load(&wakes), 0);
    connq_inbox_deinit(&in);
    connq_deinit(&q);
}
END_TEST

START_TEST(queue_is_fifo_across_inboxes)
{
    struct connq q;
    connq_init(&q);
    struct connq_inbox a, b;
    atomic_int wa = 0, wb = 0;
    connq_inbox_init(&a, count_wake, &wa);
    connq_inbox_init(&b, count_wake, &wb);
    struct connq_waiter w[5];
    memset(w, 0, sizeof(w));
    ck_assert_int_eq(connq_acquire(&q, 2, 2, &w[0], &a, 0), CONNQ_OK);
    ck_assert_int_eq(connq_acquire(&q, 2, 2, &w[1], &b, 0), CONNQ_OK);
    ck_assert_int_eq(connq_acquire(&q, 2, 2, &w[2], &b, 10), CONNQ_QUEUED);
    ck_assert_int_eq(connq_acquire(&q, 2, 2, &w[3], &a, 20), CONNQ_QUEUED);
    ck_assert_int_eq(connq_acquire(&q, 2, 2, &w[4], &a, 30), CONNQ_FULL);
    ck_assert_uint_eq(atomic_load(&q.queued), 2);
    ck_assert_uint_eq(atomic_load(&q.full), 1);
    /* a slot frees: the oldest waiter (in b) gets it, the count stays */
    connq_release(&q, 2, 50);
    ck_assert_uint_eq(atomic_load(&q.conns), 2);
    ck_assert_int_eq(atomic_load(&wb), 1);
    ck_assert_ptr_null(connq_inbox_pop(&a));
    struct connq_waiter *g = connq_inbox_pop(&b);
    ck_assert_ptr_eq(g, &w[2]);
    ck_assert_int_eq(g->grant, CONNQ_SLOT);
    ck_assert(!connq_waiter_is_pending(g));
    ck_assert_uint_eq(atomic_load(&q.waited), 1);
    ck_assert_uint_eq(atomic_load(&q.wait_us), 40000);
    /* a newcomer cannot overtake the one still waiting */
    connq_release(&q, 2, 60);
    ck_assert_ptr_eq(connq_inbox_pop(&a), &w[3]);
    ck_assert_uint_eq(atomic_load(&q.conns), 2);
    connq_release(&q, 2, 70);
    connq_release(&q, 2, 70);
    ck_assert_uint_eq(atomic_load(&q.conns), 0);
    connq_inbox_deinit(&a);
    connq_inbox_deinit(&b);
    connq_deinit(&q);
}
END_TEST

START_TEST(cancel_takes_back_a_grant)
{
    struct connq q;
    connq_init(&q);
    struct connq_inbox in;
    atomic_int wakes = 0;
    connq_inbox_init(&in, count_wake, &wakes);
    struct connq_waiter w[3];
    memset(w, 0, sizeof(w));
    ck_assert_int_eq(connq_acquire(&q, 1, 10, &w[0], &in, 0), CONNQ_OK);
    ck_assert_int_eq(connq_acquire(&q, 1, 10, &w[1], &in, 0), CONNQ_QUEUED);
    ck_assert_int_eq(connq_acquire(&q, 1, 10, &w[2], &in, 0), CONNQ_QUEUED);
    /* timed out while still queued: nothing to give back */
    ck_assert_int_eq(connq_cancel(&w[2], true), CONNQ_NONE);
    ck_assert_uint_eq(atomic_load(&q.timeouts), 1);
    ck_assert_uint_eq(atomic_load(&q.queued), 1);
    /* granted, then the client left before the grant was read: the slot
     * comes back to the caller, who releases it */
    connq_release(&q, 1, 5);
    ck_assert_int_eq(connq_cancel(&w[1], false), CONNQ_SLOT);
    ck_assert_ptr_null(connq_inbox_pop(&in));
    connq_release(&q, 1, 6);
    ck_assert_uint_eq(atomic_load(&q.conns), 0);
    ck_assert_int_eq(connq_cancel(&w[1], false), CONNQ_NONE); /* twice: harmless */
    connq_inbox_deinit(&in);
    connq_deinit(&q);
}
END_TEST

START_TEST(flush_sends_waiters_elsewhere_and_kick_admits)
{
    struct connq q;
    connq_init(&q);
    struct connq_inbox in;
    atomic_int wakes = 0;
    connq_inbox_init(&in, count_wake, &wakes);
    struct connq_waiter w[4];
    memset(w, 0, sizeof(w));
    ck_assert_int_eq(connq_acquire(&q, 1, 10, &w[0], &in, 0), CONNQ_OK);
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(connq_acquire(&q, 1, 10, &w[i], &in, 0), CONNQ_QUEUED);
    /* the limit goes up to 3: two waiters get slots at once */
    connq_kick(&q, 3, 1);
    ck_assert_uint_eq(atomic_load(&q.conns), 3);
    ck_assert_ptr_eq(connq_inbox_pop(&in), &w[1]);
    ck_assert_ptr_eq(connq_inbox_pop(&in), &w[2]);
    ck_assert_ptr_null(connq_inbox_pop(&in));
    /* ejected: the last waiter goes elsewhere, with no slot */
    ck_assert_uint_eq(connq_flush(&q, 2), 1);
    struct connq_waiter *g = connq_inbox_pop(&in);
    ck_assert_ptr_eq(g, &w[3]);
    ck_assert_int_eq(g->grant, CONNQ_ELSEWHERE);
    ck_assert_uint_eq(atomic_load(&q.conns), 3);
    ck_assert_uint_eq(atomic_load(&q.queued), 0);
    for (int i = 0; i < 3; i++)
        connq_release(&q, 3, 3);
    ck_assert_uint_eq(atomic_load(&q.conns), 0);
    connq_inbox_deinit(&in);
    connq_deinit(&q);
}
END_TEST

/* Threads acquire and release with a limit; a waiter's own thread pops its
 * grant. The count never passes the limit and ends at zero. */
struct q_hammer {
    struct connq q;
    atomic_uint peak;
    atomic_int served;
};

struct q_thread {
    struct q_hammer *h;
    struct connq_inbox in;
    atomic_int wakes;
};

static void *q_run(void *arg)
{
    struct q_thread *t = arg;
    struct q_hammer *h = t->h;
    struct connq_waiter w;
    for (int i = 0; i < 3000; i++) {
        memset(&w, 0, sizeof(w));
        enum connq_result r = connq_acquire(&h->q, 3, 1000, &w, &t->in, 0);
        if (r == CONNQ_QUEUED) {
            struct connq_waiter *g;
            while ((g = connq_inbox_pop(&t->in)) == NULL)
                sched_yield();
            if (g != &w || g->grant != CONNQ_SLOT)
                continue;
        } else if (r != CONNQ_OK) {
            continue;
        }
        unsigned n = atomic_load(&h->q.conns);
        unsigned p = atomic_load(&h->peak);
        while (n > p && !atomic_compare_exchange_weak(&h->peak, &p, n))
            ;
        atomic_fetch_add(&h->served, 1);
        connq_release(&h->q, 3, 0);
    }
    return NULL;
}

START_TEST(limit_holds_under_concurrency)
{
    static struct q_hammer h;
    static struct q_thread t[THREADS];
    memset(&h, 0, sizeof(h));
    connq_init(&h.q);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        t[i].h = &h;
        atomic_init(&t[i].wakes, 0);
        connq_inbox_init(&t[i].in, count_wake, &t[i].wakes);
        ck_assert_int_eq(pthread_create(&th[i], NULL, q_run, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_le(atomic_load(&h.peak), 3);
    ck_assert_int_eq(atomic_load(&h.served), THREADS * 3000);
    ck_assert_uint_eq(atomic_load(&h.q.conns), 0);
    ck_assert_uint_eq(atomic_load(&h.q.queued), 0);
    for (int i = 0; i < THREADS; i++)
        connq_inbox_deinit(&t[i].in);
    connq_deinit(&h.q);
}
END_TEST

Suite *bshared_suite(void);
Suite *bshared_suite(void)
{
    Suite *s = suite_create("bshared");
    TCase *rg = tcase_create("registry");
    tcase_add_test(rg, registry_shares_state_by_id);
    tcase_add_test(rg, registry_rejects_empty_id);
    tcase_add_test(rg, registry_grows_and_frees_leftovers);
    suite_add_tcase(s, rg);
    TCase *ej = tcase_create("ejection");
    tcase_add_test(ej, first_failure_ejects_once);
    tcase_add_test(ej, disabled_never_ejects);
    tcase_add_test(ej, probe_backs_off_doubling_to_the_cap);
    tcase_add_test(ej, flapping_backend_is_probed_less_often);
    tcase_add_test(ej, controlled_waits_for_the_hand_over);
    suite_add_tcase(s, ej);
    TCase *cq = tcase_create("queue");
    tcase_add_test(cq, no_limit_counts_only);
    tcase_add_test(cq, queue_is_fifo_across_inboxes);
    tcase_add_test(cq, cancel_takes_back_a_grant);
    tcase_add_test(cq, flush_sends_waiters_elsewhere_and_kick_admits);
    suite_add_tcase(s, cq);
    TCase *cc = tcase_create("concurrency");
    tcase_set_timeout(cc, 120);
    tcase_add_test(cc, registry_is_thread_safe);
    tcase_add_test(cc, ejections_counted_once_across_threads);
    tcase_add_test(cc, limit_holds_under_concurrency);
    suite_add_tcase(s, cc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bshared_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
