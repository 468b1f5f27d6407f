/* tests/unit/dataplane/test_breaker.c */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "lb_err.h"

static const struct breaker_config cfg = {
    .enabled = true,
    .threshold = 3,
    .timeout_ms = 1000,
    .max_half_open = 2,
    .max_timeout_ms = 5000,
};

static void fail_n(struct breaker *b, const struct breaker_config *c, unsigned n, uint64_t now)
{
    for (unsigned i = 0; i < n; i++) {
        enum breaker_decision d = breaker_allow(b, c, now);
        ck_assert_int_eq(d, BREAKER_PASS);
        breaker_done(b, c, d, false, now);
    }
}

/* Opens <b> at <now> from closed. */
static void open_at(struct breaker *b, uint64_t now)
{
    fail_n(b, &cfg, cfg.threshold, now);
    ck_assert_int_eq(breaker_state(b, now), BREAKER_STATE_OPEN);
}

START_TEST(closed_opens_after_consecutive_failures)
{
    struct breaker *b = breaker_new(NULL);
    ck_assert_int_eq(breaker_state(b, 0), BREAKER_STATE_CLOSED);
    fail_n(b, &cfg, 2, 10);
    ck_assert_int_eq(breaker_state(b, 10), BREAKER_STATE_CLOSED);
    /* a success resets the run of failures */
    ck_assert_int_eq(breaker_allow(b, &cfg, 10), BREAKER_PASS);
    breaker_done(b, &cfg, BREAKER_PASS, true, 10);
    fail_n(b, &cfg, 2, 20);
    ck_assert_int_eq(breaker_state(b, 20), BREAKER_STATE_CLOSED);
    fail_n(b, &cfg, 1, 30);
    ck_assert_int_eq(breaker_state(b, 30), BREAKER_STATE_OPEN);
    ck_assert_uint_eq(breaker_open_time_ms(b), 1000);
    ck_assert_int_eq(breaker_allow(b, &cfg, 30), BREAKER_REJECT);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1029), BREAKER_REJECT);
    ck_assert(!breaker_is_available(b, &cfg, 1029));
    ck_assert_int_eq(breaker_state(b, 1029), BREAKER_STATE_OPEN);
    struct breaker_counters k;
    breaker_counters_read(b, &k);
    ck_assert_uint_eq(k.opened, 1);
    ck_assert_uint_eq(k.rejected, 2);
    ck_assert_uint_eq(k.half_opened, 0);
    ck_assert_uint_eq(k.closed, 0);
    breaker_free(b);
}
END_TEST

START_TEST(half_open_admits_limited_trials_then_closes)
{
    struct breaker *b = breaker_new(NULL);
    open_at(b, 0);
    /* time is up: available without taking a slot, reported half-open */
    ck_assert(breaker_is_available(b, &cfg, 1000));
    ck_assert(breaker_is_available(b, &cfg, 1000));
    ck_assert_int_eq(breaker_state(b, 1000), BREAKER_STATE_HALF_OPEN);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1000), BREAKER_TRIAL);
    ck_assert(breaker_is_available(b, &cfg, 1000));
    ck_assert_int_eq(breaker_allow(b, &cfg, 1001), BREAKER_TRIAL);
    ck_assert(!breaker_is_available(b, &cfg, 1001));
    ck_assert_int_eq(breaker_allow(b, &cfg, 1002), BREAKER_REJECT);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 1010);
    ck_assert_int_eq(breaker_state(b, 1010), BREAKER_STATE_HALF_OPEN);
    /* the freed slot goes to a new trial, the next one waits */
    ck_assert_int_eq(breaker_allow(b, &cfg, 1011), BREAKER_TRIAL);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1011), BREAKER_REJECT);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 1020);
    ck_assert_int_eq(breaker_state(b, 1020), BREAKER_STATE_CLOSED);
    ck_assert_uint_eq(breaker_open_time_ms(b), 0);
    /* the trial still in flight ends after closing: no effect */
    breaker_done(b, &cfg, BREAKER_TRIAL, false, 1021);
    ck_assert_int_eq(breaker_state(b, 1021), BREAKER_STATE_CLOSED);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1022), BREAKER_PASS);
    struct breaker_counters k;
    breaker_counters_read(b, &k);
    ck_assert_uint_eq(k.opened, 1);
    ck_assert_uint_eq(k.half_opened, 1);
    ck_assert_uint_eq(k.closed, 1);
    ck_assert_uint_eq(k.rejected, 2);
    breaker_free(b);
}
END_TEST

START_TEST(failed_trial_reopens_with_doubling_capped_time)
{
    struct breaker *b = breaker_new(NULL);
    open_at(b, 0);
    uint64_t now = 1000;
    const uint32_t want[] = {2000, 4000, 5000, 5000};
    for (unsigned i = 0; i < 4; i++) {
        ck_assert_int_eq(breaker_allow(b, &cfg, now), BREAKER_TRIAL);
        breaker_done(b, &cfg, BREAKER_TRIAL, false, now);
        ck_assert_int_eq(breaker_state(b, now), BREAKER_STATE_OPEN);
        ck_assert_uint_eq(breaker_open_time_ms(b), want[i]);
        ck_assert_int_eq(breaker_allow(b, &cfg, now + want[i] - 1), BREAKER_REJECT);
        ck_assert_int_eq(breaker_state(b, now + want[i] - 1), BREAKER_STATE_OPEN);
        now += want[i];
    }
    struct breaker_counters k;
    breaker_counters_read(b, &k);
    ck_assert_uint_eq(k.opened, 5);
    ck_assert_uint_eq(k.half_opened, 4);
    breaker_free(b);
}
END_TEST

START_TEST(open_time_resets_after_closing)
{
    struct breaker *b = breaker_new(NULL);
    open_at(b, 0);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1000), BREAKER_TRIAL);
    breaker_done(b, &cfg, BREAKER_TRIAL, false, 1000); /* open for 2000 */
    ck_assert_uint_eq(breaker_open_time_ms(b), 2000);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(breaker_allow(b, &cfg, 3000), BREAKER_TRIAL);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 3000);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 3000);
    ck_assert_int_eq(breaker_state(b, 3000), BREAKER_STATE_CLOSED);
    open_at(b, 4000);
    ck_assert_uint_eq(breaker_open_time_ms(b), 1000);
    ck_assert_int_eq(breaker_allow(b, &cfg, 4999), BREAKER_REJECT);
    ck_assert_int_eq(breaker_allow(b, &cfg, 5000), BREAKER_TRIAL);
    breaker_free(b);
}
END_TEST

START_TEST(trials_in_flight_keep_their_slot_across_reopening)
{
    struct breaker *b = breaker_new(NULL);
    open_at(b, 0);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1000), BREAKER_TRIAL);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1000), BREAKER_TRIAL);
    breaker_done(b, &cfg, BREAKER_TRIAL, false, 1000); /* open until 3000 */
    ck_assert_int_eq(breaker_allow(b, &cfg, 3000), BREAKER_TRIAL);
    /* the second trial of the first round still holds a slot */
    ck_assert(!breaker_is_available(b, &cfg, 3000));
    ck_assert_int_eq(breaker_allow(b, &cfg, 3000), BREAKER_REJECT);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 3001);
    ck_assert(breaker_is_available(b, &cfg, 3001));
    breaker_free(b);
}
END_TEST

START_TEST(pass_ending_after_opening_changes_nothing)
{
    struct breaker *b = breaker_new(NULL);
    enum breaker_decision early = breaker_allow(b, &cfg, 0);
    ck_assert_int_eq(early, BREAKER_PASS);
    open_at(b, 0);
    breaker_done(b, &cfg, early, true, 10);
    ck_assert_int_eq(breaker_state(b, 10), BREAKER_STATE_OPEN);
    breaker_done(b, &cfg, BREAKER_PASS, false, 20);
    ck_assert_uint_eq(breaker_open_time_ms(b), 1000);
    ck_assert_int_eq(breaker_allow(b, &cfg, 999), BREAKER_REJECT);
    /* a rejection needs no done; calling it anyway is harmless */
    breaker_done(b, &cfg, BREAKER_REJECT, false, 999);
    ck_assert_int_eq(breaker_allow(b, &cfg, 1000), BREAKER_TRIAL);
    breaker_free(b);
}
END_TEST

START_TEST(disabled_always_passes)
{
    struct breaker_config off = cfg;
    off.enabled = false;
    struct breaker *b = breaker_new(NULL);
    fail_n(b, &off, 100, 0);
    ck_assert_int_eq(breaker_state(b, 0), BREAKER_STATE_CLOSED);
    ck_assert(breaker_is_available(b, &off, 0));
    /* an open breaker whose policy is switched off lets everything through */
    open_at(b, 0);
    ck_assert_int_eq(breaker_allow(b, &off, 1), BREAKER_PASS);
    ck_assert(breaker_is_available(b, &off, 1));
    ck_assert(!breaker_is_available(b, &cfg, 1));
    breaker_free(b);
}
END_TEST

START_TEST(zero_fields_take_defaults)
{
    struct breaker_config z = {.enabled = true};
    struct breaker *b = breaker_new(NULL);
    fail_n(b, &z, BREAKER_DEFAULT_THRESHOLD - 1, 0);
    ck_assert_int_eq(breaker_state(b, 0), BREAKER_STATE_CLOSED);
    fail_n(b, &z, 1, 0);
    ck_assert_int_eq(breaker_state(b, 0), BREAKER_STATE_OPEN);
    ck_assert_uint_eq(breaker_open_time_ms(b), BREAKER_DEFAULT_TIMEOUT_MS);
    uint64_t t = BREAKER_DEFAULT_TIMEOUT_MS;
    for (int i = 0; i < BREAKER_DEFAULT_MAX_HALF_OPEN; i++)
        ck_assert_int_eq(breaker_allow(b, &z, t), BREAKER_TRIAL);
    ck_assert_int_eq(breaker_allow(b, &z, t), BREAKER_REJECT);
    breaker_done(b, &z, BREAKER_TRIAL, false, t);
    ck_assert_uint_eq(breaker_open_time_ms(b), 2 * BREAKER_DEFAULT_TIMEOUT_MS);
    breaker_free(b);
    /* a cap below the open time is raised to it */
    struct breaker_config low = cfg;
    low.max_timeout_ms = 10;
    b = breaker_new(NULL);
    fail_n(b, &low, low.threshold, 0);
    ck_assert_int_eq(breaker_allow(b, &low, 1000), BREAKER_TRIAL);
    breaker_done(b, &low, BREAKER_TRIAL, false, 1000);
    ck_assert_uint_eq(breaker_open_time_ms(b), 1000);
    breaker_free(b);
    breaker_free(NULL);
}
END_TEST

/* ---- concurrency ------------------------------------------------------------------- */

#define THREADS 4
#define ITERS   20000

/* short open times so that the run goes round the states many times */
static const struct breaker_config hcfg = {
    .enabled = true,
    .threshold = 3,
    .timeout_ms = 5,
    .max_half_open = 2,
    .max_timeout_ms = 40,
};

struct hammer {
    struct breaker *b;
    _Atomic uint64_t now;
    atomic_int in_trial;
    atomic_int max_seen;
    atomic_int over;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    uint64_t rng = (uint64_t)(uintptr_t)&rng | 1;
    for (int i = 0; i < ITERS; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        uint64_t now = atomic_fetch_add(&h->now, 1) / THREADS;
        enum breaker_decision d = breaker_allow(h->b, &hcfg, now);
        if (d == BREAKER_TRIAL) {
            int v = atomic_fetch_add(&h->in_trial, 1) + 1;
            int m = atomic_load(&h->max_seen);
            while (v > m && !atomic_compare_exchange_weak(&h->max_seen, &m, v))
                ;
            if (v > (int)hcfg.max_half_open)
                atomic_fetch_add(&h->over, 1);
            if (rng % 4 == 0)
                sched_yield();
            atomic_fetch_sub(&h->in_trial, 1);
        }
        if (d != BREAKER_REJECT)
            breaker_done(h->b, &hcfg, d, rng % 8 >= 3, now); /* 3 in 8 fail */
        (void)breaker_is_available(h->b, &hcfg, now);
        (void)breaker_state(h->b, now);
    }
    return NULL;
}

START_TEST(half_open_limit_holds_under_concurrency)
{
    struct hammer h = {.b = breaker_new(NULL)};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_run, &h), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&h.over), 0);
    ck_assert_int_le(atomic_load(&h.max_seen), (int)hcfg.max_half_open);
    struct breaker_counters k;
    breaker_counters_read(h.b, &k);
    /* the run went through every state many times */
    ck_assert_uint_gt(k.opened, 10);
    ck_assert_uint_gt(k.half_opened, 10);
    ck_assert_uint_gt(k.rejected, 100);
    /* every trial was returned: a fresh round has all its slots */
    uint64_t later = atomic_load(&h.now) + 100000;
    if (breaker_state(h.b, later) != BREAKER_STATE_CLOSED) {
        ck_assert_int_eq(breaker_allow(h.b, &hcfg, later), BREAKER_TRIAL);
        ck_assert_int_eq(breaker_allow(h.b, &hcfg, later), BREAKER_TRIAL);
        ck_assert_int_eq(breaker_allow(h.b, &hcfg, later), BREAKER_REJECT);
    }
    breaker_free(h.b);
}
END_TEST

/* Hand-over: open with its time left, failures and the grown open time go
 * across; half-open goes as open with no time left. */
START_TEST(state_exported_and_imported)
{
    struct breaker *a = breaker_new(NULL);
    struct breaker *b = breaker_new(NULL);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    fail_n(a, &cfg, 3, 100); /* open until 1100 */
    struct breaker_carry c;
    breaker_export(a, 400, &c);
    ck_assert_uint_eq(c.state, BREAKER_STATE_OPEN);
    ck_assert_uint_eq(c.open_left_ms, 700);
    ck_assert_uint_eq(c.open_ms, 1000);
    breaker_import(b, &c, 50000); /* the other process's clock */
    ck_assert_int_eq(breaker_state(b, 50699), BREAKER_STATE_OPEN);
    ck_assert_int_eq(breaker_allow(b, &cfg, 50699), BREAKER_REJECT);
    ck_assert_int_eq(breaker_allow(b, &cfg, 50700), BREAKER_TRIAL);
    /* a half-open breaker arrives open with no time left */
    breaker_export(b, 50700, &c);
    ck_assert_uint_eq(c.state, BREAKER_STATE_OPEN);
    ck_assert_uint_eq(c.open_left_ms, 0);
    struct breaker *d = breaker_new(NULL);
    ck_assert_ptr_nonnull(d);
    breaker_import(d, &c, 9000);
    ck_assert_int_eq(breaker_state(d, 9000), BREAKER_STATE_HALF_OPEN);
    /* closed with two failures: one more opens it */
    struct breaker *e = breaker_new(NULL);
    ck_assert_ptr_nonnull(e);
    fail_n(e, &cfg, 2, 100);
    breaker_export(e, 200, &c);
    ck_assert_uint_eq(c.state, BREAKER_STATE_CLOSED);
    ck_assert_uint_eq(c.failures, 2);
    breaker_free(d);
    d = breaker_new(NULL);
    ck_assert_ptr_nonnull(d);
    breaker_import(d, &c, 300);
    fail_n(d, &cfg, 1, 300);
    ck_assert_int_eq(breaker_state(d, 300), BREAKER_STATE_OPEN);
    breaker_done(b, &cfg, BREAKER_TRIAL, true, 50701);
    breaker_free(a);
    breaker_free(b);
    breaker_free(d);
    breaker_free(e);
}
END_TEST

Suite *breaker_suite(void);
Suite *breaker_suite(void)
{
    Suite *s = suite_create("breaker");
    TCase *tr = tcase_create("transitions");
    tcase_add_test(tr, closed_opens_after_consecutive_failures);
    tcase_add_test(tr, half_open_admits_limited_trials_then_closes);
    tcase_add_test(tr, failed_trial_reopens_with_doubling_capped_time);
    tcase_add_test(tr, open_time_resets_after_closing);
    tcase_add_test(tr, trials_in_flight_keep_their_slot_across_reopening);
    tcase_add_test(tr, pass_ending_after_opening_changes_nothing);
    tcase_add_test(tr, disabled_always_passes);
    tcase_add_test(tr, zero_fields_take_defaults);
    tcase_add_test(tr, state_exported_and_imported);
    suite_add_tcase(s, tr);
    TCase *cc = tcase_create("concurrency");
    tcase_set_timeout(cc, 120);
    tcase_add_test(cc, half_open_limit_holds_under_concurrency);
    suite_add_tcase(s, cc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(breaker_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
