/* tests/unit/proto/test_cred.c: systemd credentials (proto/base/lb_cred.h):
 * a credential stands for a flag only when it is there and not blank. */
#include "lb_cred.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-cred-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
}

static void teardown(void)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    unsetenv("CREDENTIALS_DIRECTORY");
}

static void put(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(present_credential_names_its_path)
{
    put("feed.key", "1 00ff\n");
    char path[128], want[128];
    ck_assert(lb_credential("feed.key", path, sizeof(path)));
    snprintf(want, sizeof(want), "%s/feed.key", dir);
    ck_assert_str_eq(path, want);
}
END_TEST

START_TEST(blank_or_missing_is_none)
{
    char path[128];
    put("empty", "");
    put("blank", "\n");
    put("spaces", " \t\n\n");
    ck_assert(!lb_credential("empty", path, sizeof(path)));
    ck_assert(!lb_credential("blank", path, sizeof(path)));
    ck_assert(!lb_credential("spaces", path, sizeof(path)));
    ck_assert(!lb_credential("missing", path, sizeof(path)));
    /* white space before the secret is still a secret */
    put("late", "\n\n# key\n1 00ff\n");
    ck_assert(lb_credential("late", path, sizeof(path)));
}
END_TEST

START_TEST(no_directory_or_bad_name_is_none)
{
    char path[128];
    put("feed.key", "1 00ff\n");
    ck_assert(!lb_credential("../feed.key", path, sizeof(path)));
    ck_assert(!lb_credential("", path, sizeof(path)));
    char tiny[8];
    ck_assert(!lb_credential("feed.key", tiny, sizeof(tiny)));
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/adir", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert(!lb_credential("adir", path, sizeof(path)));
    unsetenv("CREDENTIALS_DIRECTORY");
    ck_assert(!lb_credential("feed.key", path, sizeof(path)));
    ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
    ck_assert(!lb_credential("feed.key", path, sizeof(path)));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cred");
    TCase *tc = tcase_create("cred");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, present_credential_names_its_path);
    tcase_add_test(tc, blank_or_missing_is_none);
    tcase_add_test(tc, no_directory_or_bad_name_is_none);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
