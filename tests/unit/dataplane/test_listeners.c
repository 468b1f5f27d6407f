/* tests/unit/dataplane/test_listeners.c
 *
 * The process's listening sockets: a TLS frontend's one socket is shared by
 * every worker (one accept queue serves them all), a plain frontend has one
 * per worker; a takeover's sockets are all adopted (shared for TLS, dealt
 * round robin for plain, a worker left without one binds its own); a
 * hand-over exports one descriptor per socket; a socket closes with the last
 * worker's. */
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

static void frontend(struct snap_frontend *fe, uint16_t port, bool tls)
{
    memset(fe, 0, sizeof(*fe));
    struct sockaddr_in *a = (struct sockaddr_in *)&fe->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fe->addrlen = sizeof(*a);
    fe->port = port;
    fe->name = "web";
    fe->tls = tls;
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

static void dp_setup(struct dp *dp, unsigned workers)
{
    memset(dp, 0, sizeof(*dp));
    dp->n_planned = workers;
    pthread_mutex_init(&dp->lock, NULL);
}

static void dp_teardown(struct dp *dp)
{
    ck_assert_uint_eq(dp->n_listeners, 0);
    free(dp->listeners);
    pthread_mutex_destroy(&dp->lock);
}

START_TEST(tls_workers_share_one_socket)
{
    struct dp dp;
    dp_setup(&dp, 2);
    struct snap_frontend fe;
    frontend(&fe, free_port(), true);
    int a[4], as[4], b[4], bs[4];
    struct lb_err err = {0};
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 1, a, as, 4, &err), 1);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 0, b, bs, 4, &err), 1);
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
/* <n> listening sockets bound to <fe> (as one per worker of an older data
 * plane), with 32 connections queued over them, in <inherit>. */
static void old_sockets(const struct snap_frontend *fe, int n, struct handover_state *inherit,
                        int *c)
{
    struct lb_err err = {0};
    int old[4];
    for (int i = 0; i < n; i++) {
        old[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(old[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        ck_assert_int_eq(bind(old[i], (const struct sockaddr *)&fe->addr, fe->addrlen), 0);
        ck_assert_int_eq(listen(old[i], 64), 0);
    }
    /* connections spread over the queues by the kernel's hash */
    for (int i = 0; i < 32; i++)
        ck_assert_int_ge(c[i] = dial(fe->port), 0);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(handover_state_add_fd(inherit, old[i], fe->key, &err), LB_OK);
        close(old[i]); /* the state holds a duplicate */
    }
}

START_TEST(takeover_of_per_worker_sockets_keeps_every_queue)
{
    struct dp dp;
    dp_setup(&dp, 2);
    struct snap_frontend fe;
    frontend(&fe, free_port(), true);
    struct handover_state inherit = {0};
    struct lb_err err = {0};
    int c[32];
    old_sockets(&fe, 2, &inherit, c);
    dp.inherit = &inherit;
    int a[4], as[4], b[4], bs[4];
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 0, a, as, 4, &err), 2);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 1, b, bs, 4, &err), 2);
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

/* A plain frontend: a socket per worker, none woken for another's
 * connection; after a takeover of two sockets by three workers, the first
 * two take one each and the third binds its own. */
START_TEST(plain_workers_have_a_socket_each)
{
    struct dp dp;
    dp_setup(&dp, 2);
    struct snap_frontend fe;
    frontend(&fe, free_port(), false);
    int a[4], as[4], b[4], bs[4];
    struct lb_err err = {0};
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 1, b, bs, 4, &err), 1);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 0, a, as, 4, &err), 1);
    ck_assert_int_ne(as[0], bs[0]);
    struct handover_state st = {0};
    ck_assert_int_eq(dp_listeners_export(&dp, &st, &err), LB_OK);
    ck_assert_uint_eq(st.n_fds, 2);
    handover_state_deinit(&st);
    close(a[0]);
    dp_listener_release(&dp, as[0]);
    close(b[0]);
    dp_listener_release(&dp, bs[0]);
    dp_teardown(&dp);

    /* the takeover */
    dp_setup(&dp, 3);
    struct handover_state inherit = {0};
    int c[32], x[4], xs[4];
    old_sockets(&fe, 2, &inherit, c);
    dp.inherit = &inherit;
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 2, x, xs, 4, &err), 1);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 1, b, bs, 4, &err), 1);
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 0, a, as, 4, &err), 1);
    dp.inherit = NULL;
    ck_assert_uint_eq(dp.n_listeners, 3);
    ck_assert_int_ne(as[0], bs[0]);
    ck_assert_int_ne(xs[0], as[0]);
    ck_assert_int_ne(xs[0], bs[0]);
    /* the two old queues are the first two workers': every connection */
    ck_assert_uint_eq(accept_all(a, 1) + accept_all(b, 1), 32);
    int *each[3] = {a, b, x}, *shared[3] = {as, bs, xs};
    for (int i = 0; i < 3; i++) {
        close(each[i][0]);
        dp_listener_release(&dp, shared[i][0]);
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
    dp_setup(&dp, 1);
    struct snap_frontend fe;
    frontend(&fe, free_port(), false);
    int busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(busy, (const struct sockaddr *)&fe.addr, fe.addrlen), 0);
    ck_assert_int_eq(listen(busy, 4), 0);
    int a[1], as[1];
    struct lb_err err = {0};
    ck_assert_int_eq(dp_listeners_acquire(&dp, &fe, 0, a, as, 1, &err), -1);
    ck_assert_int_eq(err.code, LB_ESYS);
    ck_assert_msg(strstr(err.msg, "bind 127.0.0.1:") != NULL && strstr(err.msg, "web") != NULL,
                  "%s", err.msg);
    ck_assert_uint_eq(dp.n_listeners, 0);
    close(busy);
    dp_teardown(&dp);
}
END_TEST

/* The accept balance's view of the other workers: a worker out of the
 * balance or the asking one itself does not count; one busy for longer than
 * the bound counts with the extra, even across the 32-bit clock's wrap and
 * when its clock is a little ahead; one waiting for events or just woken
 * counts as it is. */
START_TEST(least_load_weighs_busy_workers)
{
    struct dp dp;
    dp_setup(&dp, 4);
    _Atomic uint64_t load[4];
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), UINT32_MAX); /* no dp.load */
    dp.load = load;
    for (int i = 0; i < 4; i++)
        atomic_init(&load[i], DP_LOAD_OUT);
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), UINT32_MAX);
    atomic_store(&load[0], dp_load_pack(0, 0));    /* the asking worker */
    atomic_store(&load[1], dp_load_pack(12, 0));   /* waits for events */
    atomic_store(&load[2], dp_load_pack(3, 995));  /* busy for 5 ms */
    atomic_store(&load[3], dp_load_pack(13, 999)); /* woke 1 ms ago */
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), 11);
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 10), 12);
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 5, 8), 3);
    ck_assert_uint_eq(dp_load_least(&dp, 3, 1000, 2, 8), 0);
    atomic_store(&load[1], DP_LOAD_OUT);
    atomic_store(&load[3], DP_LOAD_OUT);
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), 11);
    /* a count near the top does not wrap when the extra is added */
    atomic_store(&load[2], dp_load_pack(UINT32_MAX - 1, 995));
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), UINT32_MAX);
    /* woke just before the clock wrapped */
    atomic_store(&load[2], dp_load_pack(2, UINT32_MAX));
    ck_assert_uint_eq(dp_load_least(&dp, 0, 0, 2, 8), 2);
    ck_assert_uint_eq(dp_load_least(&dp, 0, 10, 2, 8), 10);
    /* another thread's clock a little ahead: busy */
    atomic_store(&load[2], dp_load_pack(2, 1003));
    ck_assert_uint_eq(dp_load_least(&dp, 0, 1000, 2, 8), 10);
    dp.load = NULL;
    dp_teardown(&dp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("listeners");
    TCase *tc = tcase_create("shared");
    tcase_add_test(tc, tls_workers_share_one_socket);
    tcase_add_test(tc, plain_workers_have_a_socket_each);
    tcase_add_test(tc, takeover_of_per_worker_sockets_keeps_every_queue);
    tcase_add_test(tc, a_taken_address_is_a_clear_error);
    tcase_add_test(tc, least_load_weighs_busy_workers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
