/* tests/unit/proto/test_map.c: the id-keyed hash map (proto/base/lb_map.h). */
#include "lb_map.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 5000

struct item {
    char id[16];
    uint32_t n;
};

static struct item items[N];
static struct lb_map m;

static void setup(void)
{
    for (uint32_t i = 0; i < N; i++) {
        snprintf(items[i].id, sizeof(items[i].id), "be-%u", i);
        items[i].n = i;
    }
    lb_map_init(&m, NULL, NULL);
}

static void teardown(void)
{
    lb_map_deinit(&m);
}

START_TEST(empty_map_finds_nothing)
{
    ck_assert_ptr_null(lb_map_get(&m, "x"));
    ck_assert_ptr_null(lb_map_del(&m, "x"));
    uint32_t pos = 0;
    ck_assert_ptr_null(lb_map_next(&m, &pos, NULL));
    ck_assert_uint_eq(lb_map_count(&m), 0);
}
END_TEST

START_TEST(add_get_many)
{
    for (uint32_t i = 0; i < N; i++)
        ck_assert_int_eq(lb_map_add(&m, items[i].id, &items[i], NULL), LB_MAP_ADDED);
    ck_assert_uint_eq(lb_map_count(&m), N);
    for (uint32_t i = 0; i < N; i++) {
        char key[16]; /* an equal string at another address */
        snprintf(key, sizeof(key), "be-%u", i);
        ck_assert_ptr_eq(lb_map_get(&m, key), &items[i]);
    }
    ck_assert_ptr_null(lb_map_get(&m, "be-"));
    ck_assert_ptr_null(lb_map_get(&m, "be-5000"));
}
END_TEST

START_TEST(add_twice_keeps_first)
{
    struct item other = {"be-1", 99};
    void *was = NULL;
    ck_assert_int_eq(lb_map_add(&m, items[1].id, &items[1], NULL), LB_MAP_ADDED);
    ck_assert_int_eq(lb_map_add(&m, other.id, &other, &was), LB_MAP_EXISTS);
    ck_assert_ptr_eq(was, &items[1]);
    ck_assert_int_eq(lb_map_add(&m, other.id, &other, NULL), LB_MAP_EXISTS);
    ck_assert_ptr_eq(lb_map_get(&m, "be-1"), &items[1]);
    ck_assert_uint_eq(lb_map_count(&m), 1);
}
END_TEST

START_TEST(del_keeps_others_reachable)
{
    for (uint32_t i = 0; i < N; i++)
        lb_map_add(&m, items[i].id, &items[i], NULL);
    for (uint32_t i = 0; i < N; i += 2)
        ck_assert_ptr_eq(lb_map_del(&m, items[i].id), &items[i]);
    ck_assert_uint_eq(lb_map_count(&m), N / 2);
    for (uint32_t i = 0; i < N; i++)
        ck_assert_ptr_eq(lb_map_get(&m, items[i].id), i % 2 ? &items[i] : NULL);
    ck_assert_ptr_null(lb_map_del(&m, items[0].id));
    /* removed keys come back */
    ck_assert_int_eq(lb_map_add(&m, items[0].id, &items[0], NULL), LB_MAP_ADDED);
    ck_assert_ptr_eq(lb_map_get(&m, "be-0"), &items[0]);
}
END_TEST

START_TEST(churn_reuses_the_table)
{
    /* add and remove far more keys than the map ever holds: removal marks are
     * dropped when the table is rebuilt, so it does not grow without end */
    for (uint32_t round = 0; round < 50; round++) {
        for (uint32_t i = 0; i < 100; i++)
            ck_assert_int_eq(lb_map_add(&m, items[round * 100 + i].id, &items[0], NULL),
                             LB_MAP_ADDED);
        for (uint32_t i = 0; i < 100; i++)
            ck_assert_ptr_nonnull(lb_map_del(&m, items[round * 100 + i].id));
    }
    ck_assert_uint_eq(lb_map_count(&m), 0);
    ck_assert_uint_le(m.cap, 512);
}
END_TEST

START_TEST(next_visits_each_once)
{
    for (uint32_t i = 0; i < 1000; i++)
        lb_map_add(&m, items[i].id, &items[i], NULL);
    static unsigned seen[1000];
    memset(seen, 0, sizeof(seen));
    uint32_t pos = 0, n = 0;
    const void *key;
    struct item *it;
    while ((it = lb_map_next(&m, &pos, &key)) != NULL) {
        ck_assert_ptr_eq(key, it->id);
        seen[it->n]++;
        n++;
        if (it->n % 3 == 0)
            lb_map_del(&m, key); /* allowed during the walk */
    }
    ck_assert_uint_eq(n, 1000);
    for (uint32_t i = 0; i < 1000; i++)
        ck_assert_uint_eq(seen[i], 1);
    ck_assert_uint_eq(lb_map_count(&m), 1000 - 334);
}
END_TEST

START_TEST(reserve_then_add_never_grows)
{
    ck_assert(lb_map_reserve(&m, 1000));
    struct lb_map_slot *table = m.slots;
    for (uint32_t i = 0; i < 1000; i++)
        ck_assert_int_eq(lb_map_add(&m, items[i].id, &items[i], NULL), LB_MAP_ADDED);
    ck_assert_ptr_eq(m.slots, table);
}
END_TEST

/* A key that is not a string: a (port, host) pair, as the config's index of
 * backends by server uses. */
struct server {
    unsigned port;
    const char *host;
};

static uint64_t server_hash(const void *k)
{
    const struct server *s = k;
    return s->port * 0x9e3779b97f4a7c15ull ^ (uint64_t)strlen(s->host);
}

static bool server_eq(const void *a, const void *b)
{
    const struct server *x = a, *y = b;
    return x->port == y->port && strcmp(x->host, y->host) == 0;
}

START_TEST(custom_key)
{
    lb_map_deinit(&m);
    lb_map_init(&m, server_hash, server_eq);
    struct server a = {80, "a"}, b = {80, "b"}, a2 = {80, "a"};
    ck_assert_int_eq(lb_map_add(&m, &a, &a, NULL), LB_MAP_ADDED);
    ck_assert_int_eq(lb_map_add(&m, &b, &b, NULL), LB_MAP_ADDED); /* same hash, other key */
    ck_assert_int_eq(lb_map_add(&m, &a2, &a2, NULL), LB_MAP_EXISTS);
    ck_assert_ptr_eq(lb_map_get(&m, &a2), &a);
}
END_TEST

static Suite *map_suite(void)
{
    Suite *s = suite_create("lb_map");
    TCase *tc = tcase_create("lookup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, empty_map_finds_nothing);
    tcase_add_test(tc, add_get_many);
    tcase_add_test(tc, add_twice_keeps_first);
    tcase_add_test(tc, custom_key);
    suite_add_tcase(s, tc);
    tc = tcase_create("removal");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, del_keeps_others_reachable);
    tcase_add_test(tc, churn_reuses_the_table);
    tcase_add_test(tc, next_visits_each_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("capacity");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reserve_then_add_never_grows);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(map_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
