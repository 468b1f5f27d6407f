/* tests/unit/controlplane/test_mem.c */
#include "lb_err.h"
#include "mem.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Under AddressSanitizer an impossible allocation must return NULL, as it
 * does in production, rather than abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

START_TEST(zeroed_block)
{
    struct lb_err e = {0};
    unsigned char *p = mem_zalloc(64, NULL, &e);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < 64; i++)
        ck_assert_uint_eq(p[i], 0);
    ck_assert_int_eq(e.code, LB_OK);
    free(p);
}
END_TEST

START_TEST(failure_is_enomem)
{
    struct lb_err e = {0};
    /* not a constant: link-time optimisation would see calloc(SIZE_MAX) */
    volatile size_t huge = SIZE_MAX;
    ck_assert_ptr_null(mem_zalloc(huge, NULL, &e));
    ck_assert_int_eq(e.code, LB_ENOMEM);
    ck_assert_str_eq(e.msg, "out of memory");
    ck_assert_ptr_null(mem_zalloc(huge, "publisher", &e));
    ck_assert_str_eq(e.msg, "publisher: out of memory");
    ck_assert_ptr_null(mem_zalloc(huge, NULL, NULL)); /* no err: still NULL */
}
END_TEST

static Suite *mem_suite(void)
{
    Suite *s = suite_create("mem");
    TCase *tc = tcase_create("zalloc");
    tcase_add_test(tc, zeroed_block);
    tcase_add_test(tc, failure_is_enomem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mem_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
