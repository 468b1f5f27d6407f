/* tests/unit/controlplane/test_certwatch.c: files replaced by rename, written
 * in place, deleted and recreated, touched; each change is reported once
 * after the debounce. Every wait is a bounded run of the loop. */
#include "certwatch.h"
#include "lb_err.h"

#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEBOUNCE_S 0.1

static char dir[256];
static char cert[300], key[300];
static struct ev_loop *loop;
static struct certwatch *cw;
static int calls;
static char seen[4][300];
static size_t n_seen;

static void on_change(void *ctx, const char *const *paths, size_t n)
{
    calls++;
    n_seen = n < 4 ? n : 4;
    for (size_t i = 0; i < n_seen; i++)
        snprintf(seen[i], sizeof(seen[i]), "%s", paths[i]);
}

static void put(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(content, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void on_stop(struct ev_loop *l, ev_timer *t, int revents)
{
    ev_break(l, EVBREAK_ALL);
}

/* Runs the loop for <ms> milliseconds. */
static void run_for(unsigned ms)
{
    ev_timer t;
    ev_timer_init(&t, on_stop, ms / 1000.0, 0.0);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-test-certwatch-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    put(cert, "cert v1\n");
    put(key, "key v1\n");
    loop = ev_loop_new(EVFLAG_AUTO);
    calls = 0;
    n_seen = 0;
    struct lb_err e = {0};
    cw = certwatch_new(loop, DEBOUNCE_S, 60.0, on_change, NULL, &e);
    ck_assert_ptr_nonnull(cw);
    const char *paths[] = {cert, key, cert};
    ck_assert_int_eq(certwatch_set(cw, paths, 3, &e), LB_OK);
}

static void teardown(void)
{
    certwatch_free(cw);
    ev_loop_destroy(loop);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

START_TEST(replaced_by_rename_once)
{
    char tmp[320];
    snprintf(tmp, sizeof(tmp), "%s/.cert.pem.tmp", dir);
    put(tmp, "cert v2\n");
    ck_assert_int_eq(rename(tmp, cert), 0);
    run_for(30);
    ck_assert_int_eq(calls, 0); /* still inside the debounce */
    run_for(400);
    ck_assert_int_eq(calls, 1);
    ck_assert_uint_eq(n_seen, 1);
    ck_assert_str_eq(seen[0], cert);
    run_for(300);
    ck_assert_int_eq(calls, 1);
}
END_TEST

START_TEST(written_in_place_in_bursts_once)
{
    int fd = open(key, O_WRONLY | O_TRUNC);
    ck_assert_int_ne(fd, -1);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(write(fd, "part ", 5), 5);
        run_for(30); /* shorter than the debounce: one burst */
    }
    close(fd);
    run_for(400);
    ck_assert_int_eq(calls, 1);
    ck_assert_str_eq(seen[0], key);
    run_for(300);
    ck_assert_int_eq(calls, 1);
}
END_TEST

START_TEST(deleted_and_recreated_once)
{
    ck_assert_int_eq(unlink(cert), 0);
    run_for(20);
    put(cert, "cert v3\n");
    run_for(400);
    ck_assert_int_eq(calls, 1);
    ck_assert_str_eq(seen[0], cert);
    /* Deleted and left deleted: a change as well. */
    ck_assert_int_eq(unlink(cert), 0);
    run_for(400);
    ck_assert_int_eq(calls, 2);
    put(cert, "cert v4\n");
    run_for(400);
    ck_assert_int_eq(calls, 3);
}
END_TEST

START_TEST(same_content_or_other_files_are_quiet)
{
    char tmp[320], other[320];
    snprintf(tmp, sizeof(tmp), "%s/new", dir);
    snprintf(other, sizeof(other), "%s/other.pem", dir);
    put(tmp, "cert v1\n");
    ck_assert_int_eq(rename(tmp, cert), 0); /* same bytes, new inode */
    put(other, "x");
    put(key, "key v1\n"); /* rewritten, same bytes */
    run_for(400);
    ck_assert_int_eq(calls, 0);
}
END_TEST

START_TEST(both_files_in_one_report)
{
    put(cert, "cert v5\n");
    put(key, "key v5\n");
    run_for(400);
    ck_assert_int_eq(calls, 1);
    ck_assert_uint_eq(n_seen, 2);
}
END_TEST

START_TEST(poll_notices_without_events)
{
    /* A second watcher whose debounce never fires in time: the poll sees it. */
    certwatch_free(cw);
    struct lb_err e = {0};
    cw = certwatch_new(loop, 30.0, 0.1, on_change, NULL, &e);
    ck_assert_ptr_nonnull(cw);
    const char *paths[] = {cert};
    ck_assert_int_eq(certwatch_set(cw, paths, 1, &e), LB_OK);
    put(cert, "cert v6\n");
    run_for(500);
    ck_assert_int_eq(calls, 1);
    ck_assert_uint_eq(certwatch_check(cw), 0);
}
END_TEST

START_TEST(set_takes_a_new_baseline)
{
    put(cert, "cert v7\n");
    const char *paths[] = {cert};
    struct lb_err e = {0};
    ck_assert_int_eq(certwatch_set(cw, paths, 1, &e), LB_OK);
    run_for(400);
    ck_assert_int_eq(calls, 0);
    put(key, "key v7\n"); /* no longer watched */
    run_for(400);
    ck_assert_int_eq(calls, 0);
}
END_TEST

static Suite *certwatch_suite(void)
{
    Suite *s = suite_create("certwatch");
    TCase *tc = tcase_create("changes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, replaced_by_rename_once);
    tcase_add_test(tc, written_in_place_in_bursts_once);
    tcase_add_test(tc, deleted_and_recreated_once);
    tcase_add_test(tc, same_content_or_other_files_are_quiet);
    tcase_add_test(tc, both_files_in_one_report);
    tcase_add_test(tc, poll_notices_without_events);
    tcase_add_test(tc, set_takes_a_new_baseline);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(certwatch_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
