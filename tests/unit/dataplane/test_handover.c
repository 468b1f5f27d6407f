/* tests/unit/dataplane/test_handover.c
 *
 * The hand-over messages over a real unix socket: listening descriptors
 * arrive as the same socket objects (a connection queued before the
 * hand-over is accepted after it), the snapshot and ticket bytes arrive
 * whole, a peer that stops early or lies about counts is refused, and the
 * answer reads as ready, failed with its reason, or gone. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "handover.h"
#include "lb_err.h"

static char dir[64];
static char path[96];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-handover-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/handover.sock", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

/* A TCP listener on a free loopback port; its port in *port. */
static int tcp_listener(unsigned short *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int tcp_connect(unsigned short port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* The old side's listening socket and the new side's connection to it,
 * with the old side's accepted end in *old_conn. */
static int connect_pair(int *lsn, int *old_conn)
{
    struct lb_err err = {0};
    ck_assert_int_eq(handover_listen(path, lsn, &err), LB_OK);
    int s = -1;
    ck_assert_int_eq(handover_connect(path, 2000, &s, &err), LB_OK);
    *old_conn = accept4(*lsn, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(*old_conn, 0);
    return s;
}

START_TEST(listen_is_private_and_replaces_a_stale_file)
{
    struct lb_err err = {0};
    /* a stale socket file: bound, never listened on, closed */
    int stale = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    ck_assert_int_eq(bind(stale, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(stale);
    int lsn = -1;
    ck_assert_int_eq(handover_listen(path, &lsn, &err), LB_OK);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    int s = -1;
    ck_assert_int_eq(handover_connect(path, 1000, &s, &err), LB_OK);
    close(s);
    close(lsn);
    char long_path[200];
    memset(long_path, 'x', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    ck_assert_int_eq(handover_listen(long_path, &lsn, &err), LB_EINVAL);
    ck_assert_int_eq(handover_connect(path, 1000, &s, &err), LB_ESYS); /* nobody listens */
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot reach the running data plane"));
}
END_TEST

START_TEST(sockets_snapshot_and_tickets_arrive)
{
    int lsn, old_conn;
    int s = connect_pair(&lsn, &old_conn);
    struct lb_err err = {0};
    struct handover_state out = {0};
    unsigned short ports[3];
    int tcp[3];
    for (int i = 0; i < 3; i++) {
        tcp[i] = tcp_listener(&ports[i]);
        char key[32];
        snprintf(key, sizeof(key), "127.0.0.1:%u", ports[i]);
        ck_assert_int_eq(handover_state_add_fd(&out, tcp[i], key, &err), LB_OK);
    }
    ck_assert_int_eq(handover_state_add_fd(&out, tcp[0], HANDOVER_METRICS_KEY, &err), LB_OK);
    /* a client queued on listener 1 before the hand-over */
    int queued = tcp_connect(ports[1]);
    /* three chunks and a bit */
    out.snapshot_len = 3 * 16384 + 7;
    out.snapshot = malloc(out.snapshot_len);
    for (size_t i = 0; i < out.snapshot_len; i++)
        out.snapshot[i] = (uint8_t)(i * 7 + 3);
    out.tickets_len = 187;
    out.tickets = malloc(out.tickets_len);
    memset(out.tickets, 0xa5, out.tickets_len);
    out.runtime_len = 16384 + 9; /* two chunks */
    out.runtime = malloc(out.runtime_len);
    for (size_t i = 0; i < out.runtime_len; i++)
        out.runtime[i] = (uint8_t)(i * 5 + 1);
    ck_assert_int_eq(handover_send(old_conn, &out, 2000, &err), LB_OK);

    struct handover_state in;
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_OK);
    ck_assert_uint_eq(in.n_fds, 4);
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof(key), "127.0.0.1:%u", ports[i]);
        ck_assert_str_eq(in.fds[i].key, key);
        ck_assert_int_ne(fcntl(in.fds[i].fd, F_GETFD) & FD_CLOEXEC, 0);
    }
    ck_assert_str_eq(in.fds[3].key, HANDOVER_METRICS_KEY);
    ck_assert_uint_eq(in.snapshot_len, out.snapshot_len);
    ck_assert_mem_eq(in.snapshot, out.snapshot, out.snapshot_len);
    ck_assert_uint_eq(in.tickets_len, 187);
    ck_assert_mem_eq(in.tickets, out.tickets, 187);
    ck_assert_uint_eq(in.runtime_len, out.runtime_len);
    ck_assert_mem_eq(in.runtime, out.runtime, out.runtime_len);

    /* the sender lets go of everything; the queued client is still there */
    handover_state_deinit(&out);
    for (int i = 0; i < 3; i++)
        close(tcp[i]);
    int c = accept4(in.fds[1].fd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(write(queued, "x", 1), 1);
    char b;
    ck_assert_int_eq(read(c, &b, 1), 1);
    ck_assert_int_eq(b, 'x');
    close(c);
    close(queued);

    /* the answers */
    ck_assert_int_eq(fcntl(old_conn, F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(handover_read_answer(old_conn, &err), LB_ENOTFOUND);
    ck_assert_int_eq(handover_answer(s, "bad snapshot", &err), LB_OK);
    ck_assert_int_eq(handover_read_answer(old_conn, &err), LB_EPROTO);
    ck_assert_str_eq(err.msg, "failed: bad snapshot");
    ck_assert_int_eq(handover_answer(s, NULL, &err), LB_OK);
    ck_assert_int_eq(handover_read_answer(old_conn, &err), LB_OK);
    close(s);
    ck_assert_int_eq(handover_read_answer(old_conn, &err), LB_ESYS);
    ck_assert_ptr_nonnull(strstr(err.msg, "went away"));
    handover_state_deinit(&in);
    ck_assert_uint_eq(in.n_fds, 0);
    close(old_conn);
    close(lsn);
}
END_TEST

START_TEST(empty_state_arrives)
{
    int lsn, old_conn;
    int s = connect_pair(&lsn, &old_conn);
    struct lb_err err = {0};
    struct handover_state out = {0}, in;
    ck_assert_int_eq(handover_send(old_conn, &out, 1000, &err), LB_OK);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_OK);
    ck_assert_uint_eq(in.n_fds, 0);
    ck_assert_uint_eq(in.snapshot_len, 0);
    ck_assert_ptr_null(in.tickets);
    handover_state_deinit(&in);
    close(s);
    close(old_conn);
    close(lsn);
}
END_TEST

/* Raw messages as a broken or lying peer would send them. */
static void send_raw(int sock, const void *buf, size_t len, int fd)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.b;
        mh.msg_controllen = sizeof(ctl.b);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ck_assert_int_eq(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

START_TEST(broken_peers_are_refused)
{
    struct lb_err err = {0};
    struct handover_state in;
    int lsn, old_conn, s;

    /* closes after one listener: no end message */
    s = connect_pair(&lsn, &old_conn);
    unsigned short port;
    int tcp = tcp_listener(&port);
    send_raw(old_conn, "L127.0.0.1:1", 12, tcp);
    close(old_conn);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_ESYS);
    ck_assert_ptr_nonnull(strstr(err.msg, "closed"));
    ck_assert_uint_eq(in.n_fds, 1);
    handover_state_deinit(&in); /* closes the received descriptor */
    close(s);
    close(lsn);

    /* counts that do not match */
    s = connect_pair(&lsn, &old_conn);
    uint8_t end[17] = {'E'};
    uint64_t counts[2] = {2, 0};
    memcpy(end + 1, counts, sizeof(counts));
    send_raw(old_conn, end, sizeof(end), -1);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_EPROTO);
    handover_state_deinit(&in);
    close(s);
    close(old_conn);
    close(lsn);

    /* a listener without its descriptor, an unknown type */
    s = connect_pair(&lsn, &old_conn);
    send_raw(old_conn, "L127.0.0.1:1", 12, -1);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_EPROTO);
    handover_state_deinit(&in);
    send_raw(old_conn, "Z", 1, tcp);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_EPROTO);
    handover_state_deinit(&in);
    close(s);
    close(old_conn);
    close(lsn);
    close(tcp);

    /* a peer that says nothing: the receive times out */
    ck_assert_int_eq(handover_listen(path, &lsn, &err), LB_OK);
    ck_assert_int_eq(handover_connect(path, 100, &s, &err), LB_OK);
    ck_assert_int_eq(handover_recv(s, &in, &err), LB_ESYS);
    handover_state_deinit(&in);
    close(s);
    close(lsn);
}
END_TEST

static Suite *handover_suite(void)
{
    Suite *s = suite_create("handover");
    TCase *c = tcase_create("socket");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, listen_is_private_and_replaces_a_stale_file);
    suite_add_tcase(s, c);
    c = tcase_create("messages");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, sockets_snapshot_and_tickets_arrive);
    tcase_add_test(c, empty_state_arrives);
    tcase_add_test(c, broken_peers_are_refused);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(handover_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
