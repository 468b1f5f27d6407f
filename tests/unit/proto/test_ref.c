/* tests/unit/proto/test_ref.c: reference counts (proto/base/lb_ref.h), also
 * from several threads at once (this suite runs under TSan too). */
#include "lb_ref.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct obj {
    struct lb_ref ref;
    int payload;
};

static atomic_int freed;

static void obj_unref(struct obj *o)
{
    if (lb_ref_put(&o->ref)) {
        /* the freeing thread sees the payload every holder wrote */
        ck_assert_int_eq(o->payload, 42);
        atomic_fetch_add(&freed, 1);
        free(o);
    }
}

START_TEST(last_put_frees)
{
    atomic_store(&freed, 0);
    struct obj *o = malloc(sizeof(*o));
    lb_ref_init(&o->ref);
    o->payload = 42;
    ck_assert_uint_eq(lb_ref_count(&o->ref), 1);
    lb_ref_get(&o->ref);
    lb_ref_get(&o->ref);
    ck_assert_uint_eq(lb_ref_count(&o->ref), 3);
    obj_unref(o);
    obj_unref(o);
    ck_assert_int_eq(atomic_load(&freed), 0);
    obj_unref(o);
    ck_assert_int_eq(atomic_load(&freed), 1);
}
END_TEST

#define THREADS 4
#define ROUNDS  20000

static void *holder(void *arg)
{
    struct obj *o = arg; /* one reference, taken for us by the creator */
    for (int i = 0; i < ROUNDS; i++) {
        lb_ref_get(&o->ref);
        obj_unref(o);
    }
    obj_unref(o);
    return NULL;
}

START_TEST(threads_free_exactly_once)
{
    atomic_store(&freed, 0);
    struct obj *o = malloc(sizeof(*o));
    lb_ref_init(&o->ref);
    o->payload = 42;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        lb_ref_get(&o->ref);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, holder, o), 0);
    obj_unref(o); /* the creator's: a holder frees it */
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&freed), 1);
}
END_TEST

static Suite *ref_suite(void)
{
    Suite *s = suite_create("lb_ref");
    TCase *tc = tcase_create("counting");
    tcase_add_test(tc, last_put_frees);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_add_test(tc, threads_free_exactly_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ref_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
