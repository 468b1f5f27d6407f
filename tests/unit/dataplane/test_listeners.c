/* tests/unit/dataplane/test_listeners.c
 *
 * The process's listening sockets, shared by its workers: every worker gets
 * a duplicate of the same socket, so one accept queue serves them all; a
 * takeover's sockets are adopted, all of them when an older data plane
 * passed one per worker (each queue is accepted on); a hand-over exports one
 * descriptor per socket; the socket closes with the last worker's. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dp.h"
#include "handover.h"
#include "lb_err.h"
#include "snapshot.h"

/* A free loopback port. */
static uint16_t free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void frontend(struct snap_frontend *fe, uint16_t port)
{
    memset(fe, 0, sizeof(*fe));
    struct sockaddr_in *a = (struct sockaddr_in *)&fe->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fe->addrlen = sizeof(*a);
    fe->port = port;
    fe->name = "web";
    snprintf(fe->key, sizeof(fe->key), "127.0.0.1:%u", port);
}

/* A connection to <port>; -1 when refused. */
static int dial(uint16_t port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(s);
        return -1;
    }
    return s;
}

/* Connections accepted on <fds> (blocking sockets, queued already). */
static unsigned accept_all(const int *fds, int n)
{
    unsigned got = 0;
    for (int i = 0; i < n; i++) {
        for (;;) {
            int c = accept4(fds[i], NULL, NULL, SOCK_NONBLOCK);
            if (c < 0)
                break;
            close(c);
            got++;
        }
    }
    return got;
}

static void dp_setup(struct dp *dp)
{
    memset(dp, 0, sizeof(*dp));
    pthread_mutex_init(&dp->lock, NULL);
}

static void dp_teardown(struct dp *dp)
{
    ck_assert_uint_eq(dp->n_listeners, 0);
    free(dp->listeners);
    pthread_mutex_destroy(&dp->lock);
}

START_TEST(workers_share_one_socket)
{
    struct dp dp;
    dp_setup(&dp);
    struct snap_frontend fe;
    frontend(&fe, free_port());
    int a[4], as[4], b[4], bs[4];
    struct lb_err err = {0};
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, a, as, 4, &err), 1);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, b, bs, 4, &err), 1);
    ck_assert_int_eq(as[0], bs[0]);
    ck_assert_int_ne(a[0], b[0]);
    ck_assert_uint_eq(dp.n_listeners, 1);
    /* one queue: connections queued before either worker looks are all
     * there for the first that accepts */
    int c[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_ge(c[i] = dial(fe.port), 0);
    ck_assert_uint_eq(accept_all(b, 1), 8);
    ck_assert_uint_eq(accept_all(a, 1), 0);
    /* a hand-over passes the socket once */
    struct handover_state st = {0};
    ck_assert_int_eq(dp_listeners_export(&dp, &st, &err), LB_OK);
    ck_assert_uint_eq(st.n_fds, 1);
    ck_assert_str_eq(st.fds[0].key, fe.key);
    handover_state_deinit(&st);
    /* the socket outlives the first worker's close, not the last's */
    close(a[0]);
    dp_listener_release(&dp, as[0]);
    int d = dial(fe.port);
    ck_assert_int_ge(d, 0);
    ck_assert_uint_eq(accept_all(b, 1), 1);
    close(b[0]);
    dp_listener_release(&dp, bs[0]);
    ck_assert_int_eq(dial(fe.port), -1);
    for (int i = 0; i < 8; i++)
        close(c[i]);
    close(d);
    dp_teardown(&dp);
}
END_TEST

/* A takeover from a data plane that had one socket per worker (before they
 * were shared): every one is adopted, each worker accepts on all of them,
 * and the connections queued in each are served. */
START_TEST(takeover_of_per_worker_sockets_keeps_every_queue)
{
    struct dp dp;
    dp_setup(&dp);
    struct snap_frontend fe;
    frontend(&fe, free_port());
    struct handover_state inherit = {0};
    struct lb_err err = {0};
    int old[2];
    for (int i = 0; i < 2; i++) {
        old[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(old[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        ck_assert_int_eq(bind(old[i], (const struct sockaddr *)&fe.addr, fe.addrlen), 0);
        ck_assert_int_eq(listen(old[i], 64), 0);
    }
    /* connections spread over both queues by the kernel's hash */
    int c[32];
    for (int i = 0; i < 32; i++)
        ck_assert_int_ge(c[i] = dial(fe.port), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(handover_state_add_fd(&inherit, old[i], fe.key, &err), LB_OK);
        close(old[i]); /* the state holds a duplicate */
    }
    dp.inherit = &inherit;
    int a[4], as[4], b[4], bs[4];
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, a, as, 4, &err), 2);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, b, bs, 4, &err), 2);
    dp.inherit = NULL;
    ck_assert_uint_eq(dp.n_listeners, 2);
    ck_assert_int_eq(inherit.fds[0].fd, -1);
    ck_assert_int_eq(inherit.fds[1].fd, -1);
    /* one worker alone reaches both queues */
    ck_assert_uint_eq(accept_all(a, 2), 32);
    struct handover_state st = {0};
    ck_assert_int_eq(dp_listeners_export(&dp, &st, &err), LB_OK);
    ck_assert_uint_eq(st.n_fds, 2);
    handover_state_deinit(&st);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        dp_listener_release(&dp, as[i]);
        close(b[i]);
        dp_listener_release(&dp, bs[i]);
    }
    for (int i = 0; i < 32; i++)
        close(c[i]);
    handover_state_deinit(&inherit);
    dp_teardown(&dp);
}
END_TEST

START_TEST(a_taken_address_is_a_clear_error)
{
    struct dp dp;
    dp_setup(&dp);
    struct snap_frontend fe;
    frontend(&fe, free_port());
    int busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(busy, (const struct sockaddr *)&fe.addr, fe.addrlen), 0);
    ck_assert_int_eq(listen(busy, 4), 0);
    int a[1], as[1];
    struct lb_err err = {0};
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, a, as, 1, &err), -1);
    ck_assert_int_eq(err.code, LB_ESYS);
    ck_assert_msg(strstr(err.msg, "bind 127.0.0.1:") != NULL && strstr(err.msg, "web") != NULL,
                  "%s", err.msg);
    ck_assert_uint_eq(dp.n_listeners, 0);
    close(busy);
    dp_teardown(&dp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("listeners");
    TCase *tc = tcase_create("shared");
    tcase_add_test(tc, workers_share_one_socket);
    tcase_add_test(tc, takeover_of_per_worker_sockets_keeps_every_queue);
    tcase_add_test(tc, a_taken_address_is_a_clear_error);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
