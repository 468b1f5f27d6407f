/* tests/unit/proto/test_sdnotify.c: the service manager's notifications
 * (proto/base/lb_sdnotify.h) arrive on a datagram socket bound where
 * $NOTIFY_SOCKET says, a path or an abstract name; the watchdog interval is
 * read only for the process $WATCHDOG_PID names. */
#include "lb_sdnotify.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static char dir[64];
static char path[128];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-sdnotify-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/notify", dir);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

/* A datagram socket bound at <addr> (a leading '@': abstract), reads time
 * out after 2 s. */
static int listen_at(const char *addr)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(addr);
    ck_assert_uint_lt(len, sizeof(sa.sun_path));
    memcpy(sa.sun_path, addr, len);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (addr[0] == '@')
        sa.sun_path[0] = '\0';
    else
        sl++;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sl), 0);
    struct timeval tv = {.tv_sec = 2};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    return fd;
}

static void expect(int fd, const char *want)
{
    char got[2048];
    ssize_t n = recv(fd, got, sizeof(got) - 1, 0);
    ck_assert_int_ge(n, 0);
    got[n] = '\0';
    ck_assert_str_eq(got, want);
}

START_TEST(path_socket_gets_the_message)
{
    int fd = listen_at(path);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    ck_assert_int_eq(lb_sd_notify("READY=1\nSTATUS=serving"), 1);
    expect(fd, "READY=1\nSTATUS=serving");
    ck_assert_int_eq(lb_sd_notifyf("MAINPID=%d\nREADY=1", 42), 1);
    expect(fd, "MAINPID=42\nREADY=1");
    close(fd);
}
END_TEST

START_TEST(abstract_socket_gets_the_message)
{
    char name[64];
    snprintf(name, sizeof(name), "@lb-sdnotify-test-%d", (int)getpid());
    int fd = listen_at(name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
    ck_assert_int_eq(lb_sd_notify("STOPPING=1"), 1);
    expect(fd, "STOPPING=1");
    close(fd);
}
END_TEST

START_TEST(no_or_unusable_socket_is_quiet)
{
    ck_assert_int_eq(lb_sd_notify("READY=1"), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
    ck_assert_int_eq(lb_sd_notify("READY=1"), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "relative/path", 1), 0);
    ck_assert_int_eq(lb_sd_notify("READY=1"), 0);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
    ck_assert_int_eq(lb_sd_notify("READY=1"), 0);
    /* nobody listens there: the error is the caller's to ignore */
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    ck_assert_int_lt(lb_sd_notify("READY=1"), 0);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ck_assert_int_eq(lb_sd_notifyf("STATUS=%s", big), -EMSGSIZE);
}
END_TEST

START_TEST(watchdog_is_read_for_this_process_only)
{
    uint64_t usec = 7;
    ck_assert(!lb_sd_watchdog_usec(&usec));
    ck_assert_int_eq(setenv("WATCHDOG_USEC", "30000000", 1), 0);
    ck_assert(lb_sd_watchdog_usec(&usec));
    ck_assert_uint_eq(usec, 30000000);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    ck_assert_int_eq(setenv("WATCHDOG_PID", pid, 1), 0);
    usec = 0;
    ck_assert(lb_sd_watchdog_usec(&usec));
    ck_assert_uint_eq(usec, 30000000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    ck_assert_int_eq(setenv("WATCHDOG_PID", pid, 1), 0);
    ck_assert(!lb_sd_watchdog_usec(&usec));
    ck_assert_int_eq(setenv("WATCHDOG_PID", "12x", 1), 0);
    ck_assert(!lb_sd_watchdog_usec(&usec));
    unsetenv("WATCHDOG_PID");
    ck_assert_int_eq(setenv("WATCHDOG_USEC", "0", 1), 0);
    ck_assert(!lb_sd_watchdog_usec(&usec));
    ck_assert_int_eq(setenv("WATCHDOG_USEC", "-5", 1), 0);
    ck_assert(!lb_sd_watchdog_usec(&usec));
    ck_assert_int_eq(setenv("WATCHDOG_USEC", "5s", 1), 0);
    ck_assert(!lb_sd_watchdog_usec(&usec));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *tc = tcase_create("sdnotify");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, path_socket_gets_the_message);
    tcase_add_test(tc, abstract_socket_gets_the_message);
    tcase_add_test(tc, no_or_unusable_socket_is_quiet);
    tcase_add_test(tc, watchdog_is_read_for_this_process_only);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
