/* tests/unit/dataplane/test_endpoint.c
 *
 * An endpoint over one end of a non-blocking AF_UNIX stream socketpair with
 * the plain transport; the test plays the peer on the other end. The loop is
 * only ever run with EVRUN_NOWAIT, a bounded number of times: the sockets'
 * state is set up before, so nothing waits. The TLS waits (a read that needs
 * writability, a write that needs readability) come from a scripted
 * transport. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "endpoint.h"
#include "transport.h"

#define RW (EV_READ | EV_WRITE)

static struct ev_loop *loop;
static struct buf_pool pool;
static struct endpoint ep;
static int peer = -1;
static int owner; /* what io.data points to */

/* What the watcher's callback saw. */
static int n_calls;
static int last_revents;

static void on_io(struct ev_loop *l, ev_io *io, int revents)
{
    ck_assert_ptr_eq(io->data, &owner);
    n_calls++;
    last_revents = revents;
    endpoint_on_events(&ep, revents);
}

static void setup(void)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    memset(&pool, 0, sizeof(pool));
    memset(&ep, 0, sizeof(ep));
    transport_plain_init(&ep.tr, sv[0]);
    endpoint_init(&ep, on_io, &owner);
    peer = sv[1];
    n_calls = 0;
    last_revents = 0;
}

static void teardown(void)
{
    endpoint_close(loop, &ep, &pool);
    if (peer >= 0)
        close(peer);
    peer = -1;
    ev_loop_destroy(loop);
    buf_pool_deinit(&pool);
}

static void peer_send(const void *p, size_t n)
{
    ck_assert_int_eq(write(peer, p, n), (ssize_t)n);
}

static void peer_close(void)
{
    close(peer);
    peer = -1;
}

/* Runs the loop without blocking until the callback was called or <tries>
 * runs went by; returns the calls seen. */
static int run_nowait(int tries)
{
    int before = n_calls;
    for (int i = 0; i < tries && n_calls == before; i++)
        ev_run(loop, EVRUN_NOWAIT);
    return n_calls - before;
}

/* ep.events, whether the watcher runs and what it waits for agree (a stopped
 * watcher keeps its last events). */
static void assert_watching(int want)
{
    ck_assert_int_eq(ep.events, want);
    ck_assert_int_eq(ev_is_active(&ep.io) != 0, want != 0);
    if (want != 0)
        ck_assert_int_eq(ep.io.events & RW, want);
}

/* ---- read ------------------------------------------------------------------------------ */

/* A read that brings nothing leaves no buffer behind: an idle connection
 * holds none (endpoint.h: "NULL while there are none"). */
START_TEST(idle_read_holds_no_buffer)
{
    ep.readable = true; /* as a fresh connection: nothing sent yet */
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_AGAIN);
    ck_assert_ptr_null(ep.in);
    ck_assert_uint_eq(pool.n_free, 1);
}
END_TEST

START_TEST(read_appends_to_a_buffer_from_the_pool)
{
    struct buf *pooled = buf_get(&pool);
    buf_put(&pool, pooled);
    ck_assert_ptr_null(ep.in);

    peer_send("hello", 5);
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), 5);
    ck_assert_ptr_eq(ep.in, pooled);
    ck_assert_uint_eq(pool.n_free, 0);
    ck_assert_uint_eq(buf_len(ep.in), 5);
    ck_assert_mem_eq(ep.in->data + ep.in->start, "hello", 5);
    ck_assert(!ep.readable); /* short read: drained */
    ck_assert(!ep.eof);

    /* the next bytes go after the ones not consumed, in the same buffer */
    ep.in->start = 2;
    peer_send(" world", 6);
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), 6);
    ck_assert_ptr_eq(ep.in, pooled);
    ck_assert_uint_eq(buf_len(ep.in), 9);
    ck_assert_mem_eq(ep.in->data + ep.in->start, "llo world", 9);
}
END_TEST

START_TEST(read_from_an_empty_pool_allocates)
{
    peer_send("x", 1);
    ck_assert_int_eq(endpoint_read(&ep, &pool), 1);
    ck_assert_ptr_nonnull(ep.in);
    ck_assert_uint_eq(ep.in->cap, BUF_SIZE);
}
END_TEST

START_TEST(full_read_keeps_readable_then_full)
{
    static char big[BUF_SIZE + 100];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i % 251);
    peer_send(big, sizeof(big));
    ep.readable = true;

    /* the buffer filled up: the socket may hold more */
    ck_assert_int_eq(endpoint_read(&ep, &pool), BUF_SIZE);
    ck_assert(ep.readable);
    ck_assert_mem_eq(ep.in->data, big, BUF_SIZE);

    /* no room: nothing read, nothing changed */
    ck_assert_int_eq(endpoint_read(&ep, &pool), ENDPOINT_FULL);
    ck_assert(ep.readable);
    ck_assert(!ep.eof);
    ck_assert_uint_eq(buf_len(ep.in), BUF_SIZE);

    /* consuming makes room: the bytes move to the start, the rest comes */
    ep.in->start = 150;
    ck_assert_int_eq(endpoint_read(&ep, &pool), 100);
    ck_assert(!ep.readable);
    ck_assert_uint_eq(ep.in->start, 0);
    ck_assert_uint_eq(buf_len(ep.in), BUF_SIZE - 50);
    ck_assert_mem_eq(ep.in->data, big + 150, BUF_SIZE - 50);
}
END_TEST

START_TEST(full_buffer_leaves_the_socket_alone)
{
    ep.in = buf_get(&pool);
    ep.in->start = 0;
    ep.in->end = ep.in->cap;
    peer_send("abc", 3);
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), ENDPOINT_FULL);
    ck_assert(ep.readable);
    ep.in->start = ep.in->end; /* all consumed */
    ck_assert_int_eq(endpoint_read(&ep, &pool), 3);
    ck_assert_mem_eq(ep.in->data, "abc", 3);
}
END_TEST

START_TEST(read_nothing_is_again)
{
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_AGAIN);
    ck_assert(!ep.readable);
    ck_assert(!ep.eof);
    ck_assert(!ep.rd_on_write);
    ck_assert_uint_eq(buf_len(ep.in), 0);
}
END_TEST

START_TEST(read_after_peer_close_is_zero_and_eof)
{
    peer_send("bye", 3);
    peer_close();
    ep.readable = true;
    /* the bytes sent before the close come first */
    ck_assert_int_eq(endpoint_read(&ep, &pool), 3);
    ck_assert(!ep.eof);
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), 0);
    ck_assert(ep.eof);
    ck_assert(!ep.readable);
    ck_assert_mem_eq(ep.in->data + ep.in->start, "bye", 3);
}
END_TEST

START_TEST(read_error_sets_eof)
{
    /* the peer closes with our bytes unread: Linux resets our end */
    struct iovec iov = {.iov_base = "unread", .iov_len = 6};
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), 6);
    peer_close();
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_ERROR);
    ck_assert_int_eq(ep.tr.err, ECONNRESET);
    ck_assert(ep.eof);
    ck_assert(!ep.readable);
}
END_TEST

/* ---- write ----------------------------------------------------------------------------- */

START_TEST(writev_writes_every_part)
{
    struct iovec iov[3] = {
        {.iov_base = "GET / ", .iov_len = 6},
        {.iov_base = "", .iov_len = 0},
        {.iov_base = "HTTP/1.1\r\n", .iov_len = 10},
    };
    ck_assert_int_eq(endpoint_writev(&ep, iov, 3), 16);
    ck_assert(!ep.wr_on_read);
    char got[32];
    ck_assert_int_eq(read(peer, got, sizeof(got)), 16);
    ck_assert_mem_eq(got, "GET / HTTP/1.1\r\n", 16);
}
END_TEST

/* A preamble goes out before the transport's first byte, whether a write or
 * a read comes first, and only once. */
START_TEST(preamble_goes_first)
{
    ck_assert(endpoint_preamble(&ep, (const uint8_t *)"PROXY UNKNOWN\r\n", 15));
    struct iovec iov = {.iov_base = "GET", .iov_len = 3};
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), 3);
    ck_assert_ptr_null(ep.pre);
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), 3);
    char got[64] = {0};
    ck_assert_int_eq(read(peer, got, sizeof(got) - 1), 21);
    ck_assert_str_eq(got, "PROXY UNKNOWN\r\nGETGET");
}
END_TEST

START_TEST(preamble_before_a_read)
{
    ck_assert(endpoint_preamble(&ep, (const uint8_t *)"HDR", 3));
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_AGAIN);
    char got[8] = {0};
    ck_assert_int_eq(read(peer, got, sizeof(got) - 1), 3);
    ck_assert_str_eq(got, "HDR");
    peer_send("ok", 2);
    ep.readable = true;
    ck_assert_int_eq(endpoint_read(&ep, &pool), 2);
}
END_TEST

START_TEST(preamble_to_a_full_socket_waits)
{
    static char chunk[65536];
    memset(chunk, 'w', sizeof(chunk));
    struct iovec iov = {.iov_base = chunk, .iov_len = sizeof(chunk)};
    for (int i = 0; i < 10000 && endpoint_writev(&ep, &iov, 1) > 0; i++) {
    }
    ck_assert(endpoint_preamble(&ep, (const uint8_t *)"HDR", 3));
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_WANT_WRITE);
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_WANT_WRITE);
    ck_assert(ep.rd_on_write);
    ck_assert_ptr_nonnull(ep.pre); /* still to go; endpoint_close() frees it */
}
END_TEST

START_TEST(writev_full_socket_wants_write)
{
    static char chunk[65536];
    memset(chunk, 'w', sizeof(chunk));
    struct iovec iov = {.iov_base = chunk, .iov_len = sizeof(chunk)};
    ssize_t n = 0;
    size_t total = 0;
    int i;
    for (i = 0; i < 10000; i++) {
        n = endpoint_writev(&ep, &iov, 1);
        if (n < 0)
            break;
        ck_assert_int_gt(n, 0);
        total += (size_t)n;
    }
    ck_assert_int_eq(n, TRANSPORT_WANT_WRITE);
    ck_assert_uint_gt(total, 0);
    ck_assert(!ep.wr_on_read);
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_WANT_WRITE);

    /* the loop does not call a full socket writable */
    endpoint_arm(loop, &ep, EV_WRITE);
    ck_assert_int_eq(run_nowait(3), 0);

    /* the peer takes everything: writable again, writes go */
    char sink[65536];
    size_t drained = 0;
    for (int j = 0; j < 10000 && drained < total; j++) {
        ssize_t r = read(peer, sink, sizeof(sink));
        ck_assert_int_gt(r, 0);
        drained += (size_t)r;
    }
    ck_assert_uint_eq(drained, total);
    ck_assert_int_eq(run_nowait(10), 1);
    ck_assert(last_revents & EV_WRITE);
    ck_assert(ep.writable);
    ck_assert_int_gt(endpoint_writev(&ep, &iov, 1), 0);
}
END_TEST

START_TEST(writev_to_a_closed_peer_is_an_error)
{
    signal(SIGPIPE, SIG_IGN); /* as the worker does; this process only */
    peer_close();
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_ERROR);
    ck_assert_int_eq(ep.tr.err, EPIPE);
}
END_TEST

/* ---- events ---------------------------------------------------------------------------- */

START_TEST(on_events_read)
{
    ep.wr_on_read = true;
    endpoint_on_events(&ep, EV_READ);
    ck_assert(ep.readable);
    ck_assert(!ep.wr_on_read);
    ck_assert(!ep.writable);
}
END_TEST

START_TEST(on_events_write)
{
    endpoint_on_events(&ep, EV_WRITE);
    ck_assert(ep.writable);
    ck_assert(!ep.readable); /* a plain write wait says nothing of reading */

    ep.readable = false;
    ep.writable = false;
    ep.rd_on_write = true;
    endpoint_on_events(&ep, EV_WRITE);
    ck_assert(ep.writable);
    ck_assert(ep.readable); /* the read that waited may go */
    ck_assert(!ep.rd_on_write);
}
END_TEST

START_TEST(on_events_both_and_none)
{
    ep.rd_on_write = true;
    ep.wr_on_read = true;
    endpoint_on_events(&ep, 0);
    ck_assert(!ep.readable && !ep.writable);
    ck_assert(ep.rd_on_write && ep.wr_on_read);

    endpoint_on_events(&ep, EV_READ | EV_WRITE);
    ck_assert(ep.readable && ep.writable);
    ck_assert(!ep.rd_on_write && !ep.wr_on_read);

    /* EV_TIMER and the like are ignored */
    ep.readable = ep.writable = false;
    endpoint_on_events(&ep, EV_TIMER);
    ck_assert(!ep.readable && !ep.writable);
}
END_TEST

START_TEST(loop_reports_readability)
{
    endpoint_arm(loop, &ep, EV_READ);
    assert_watching(EV_READ);
    ck_assert_int_eq(run_nowait(3), 0); /* nothing there yet */
    ck_assert(!ep.readable);

    peer_send("ping", 4);
    ck_assert_int_eq(run_nowait(10), 1);
    ck_assert_int_eq(last_revents & RW, EV_READ);
    ck_assert(ep.readable);
    ck_assert_int_eq(endpoint_read(&ep, &pool), 4);

    /* level-triggered: bytes still there are reported again */
    peer_send("pong", 4);
    ep.readable = false;
    ck_assert_int_eq(run_nowait(10), 1);
    ck_assert(ep.readable);
    /* known readable: the next arming disarms, and the loop is quiet */
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
    ck_assert_int_eq(run_nowait(3), 0);
}
END_TEST

/* ---- arm ------------------------------------------------------------------------------- */

START_TEST(arm_starts_and_stops)
{
    assert_watching(0);
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(EV_WRITE);
    endpoint_arm(loop, &ep, RW);
    assert_watching(RW);
    endpoint_arm(loop, &ep, EV_READ);
    assert_watching(EV_READ);
    ep.readable = true;
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
}
END_TEST

START_TEST(arm_keeps_read_while_not_known_readable)
{
    endpoint_arm(loop, &ep, EV_READ);
    assert_watching(EV_READ);
    endpoint_arm(loop, &ep, 0);
    assert_watching(EV_READ); /* saves two epoll_ctl calls */
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(RW);
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(RW);
    endpoint_arm(loop, &ep, 0);
    assert_watching(EV_READ);
}
END_TEST

START_TEST(arm_does_not_start_reading_by_itself)
{
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(EV_WRITE);
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
}
END_TEST

START_TEST(arm_drops_read_once_readable_or_eof)
{
    endpoint_arm(loop, &ep, EV_READ);
    ep.readable = true;
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);

    ep.readable = false;
    endpoint_arm(loop, &ep, RW);
    ep.readable = true;
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(EV_WRITE);

    ep.readable = false;
    endpoint_arm(loop, &ep, EV_READ);
    ep.eof = true;
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
}
END_TEST

START_TEST(arm_read_waiting_for_write)
{
    ep.rd_on_write = true;
    endpoint_arm(loop, &ep, 0);
    assert_watching(EV_WRITE);
    endpoint_arm(loop, &ep, EV_READ);
    assert_watching(RW);
    ep.readable = true;
    endpoint_arm(loop, &ep, 0);
    assert_watching(EV_WRITE);
}
END_TEST

START_TEST(arm_write_waiting_for_read)
{
    ep.wr_on_read = true;
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(EV_READ);
    endpoint_arm(loop, &ep, RW);
    assert_watching(EV_READ);
    ep.readable = true; /* EV_READ stays: the write needs it */
    endpoint_arm(loop, &ep, EV_WRITE);
    assert_watching(EV_READ);
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
    /* no write wanted: nothing swapped in */
    ep.readable = false;
    endpoint_arm(loop, &ep, 0);
    assert_watching(0);
}
END_TEST

START_TEST(set_events_is_exact)
{
    endpoint_set_events(loop, &ep, EV_READ);
    assert_watching(EV_READ);
    endpoint_set_events(loop, &ep, EV_READ);
    assert_watching(EV_READ);
    endpoint_set_events(loop, &ep, EV_WRITE);
    assert_watching(EV_WRITE);
    endpoint_set_events(loop, &ep, 0);
    assert_watching(0);
}
END_TEST

/* ---- close ----------------------------------------------------------------------------- */

START_TEST(close_closes_the_socket_and_returns_the_buffer)
{
    peer_send("data", 4);
    ck_assert_int_eq(endpoint_read(&ep, &pool), 4);
    endpoint_arm(loop, &ep, EV_READ);
    int fd = ep.tr.fd;
    ck_assert_uint_eq(pool.n_free, 0);

    endpoint_close(loop, &ep, &pool);
    ck_assert_int_eq(ep.tr.fd, -1);
    ck_assert_ptr_null(ep.in);
    ck_assert_uint_eq(pool.n_free, 1);
    assert_watching(0);
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    ck_assert_int_eq(errno, EBADF);
    char c;
    ck_assert_int_eq(read(peer, &c, 1), 0); /* the peer sees the end */

    /* twice is harmless */
    endpoint_close(loop, &ep, &pool);
    ck_assert_int_eq(ep.tr.fd, -1);
    ck_assert_uint_eq(pool.n_free, 1);
}
END_TEST

START_TEST(close_without_a_buffer)
{
    endpoint_close(loop, &ep, &pool);
    ck_assert_int_eq(ep.tr.fd, -1);
    ck_assert_ptr_null(ep.in);
    ck_assert_uint_eq(pool.n_free, 0);
}
END_TEST

/* ---- TLS waits (a scripted transport) ---------------------------------------------------- */

static ssize_t script_ret;
static int script_released;

static ssize_t script_read(struct transport *t, void *b, size_t len)
{
    return script_ret;
}

static ssize_t script_writev(struct transport *t, const struct iovec *iov, int cnt)
{
    return script_ret;
}

static void script_shutdown(struct transport *t)
{
}

static void script_release(struct transport *t)
{
    script_released++;
}

static const struct transport_ops script_ops = {
    .read = script_read,
    .writev = script_writev,
    .shutdown_write = script_shutdown,
    .release = script_release,
};

static void script_setup(void)
{
    setup();
    ep.tr.ops = &script_ops;
    script_released = 0;
}

START_TEST(tls_read_wanting_write)
{
    ep.readable = true;
    script_ret = TRANSPORT_WANT_WRITE;
    ck_assert_int_eq(endpoint_read(&ep, &pool), TRANSPORT_WANT_WRITE);
    ck_assert(ep.rd_on_write);
    ck_assert(!ep.readable);
    ck_assert(!ep.eof);
    endpoint_arm(loop, &ep, EV_READ);
    assert_watching(RW);
    endpoint_on_events(&ep, EV_WRITE);
    ck_assert(ep.readable);
    ck_assert(!ep.rd_on_write);
}
END_TEST

START_TEST(tls_write_wanting_read)
{
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    script_ret = TRANSPORT_AGAIN;
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_AGAIN);
    ck_assert(ep.wr_on_read);
    /* still waiting on the socket: the wait stays */
    script_ret = TRANSPORT_WANT_WRITE;
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_WANT_WRITE);
    ck_assert(ep.wr_on_read);
    /* a write that goes ends it */
    script_ret = 1;
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), 1);
    ck_assert(!ep.wr_on_read);
    /* and so does a failure */
    script_ret = TRANSPORT_AGAIN;
    endpoint_writev(&ep, &iov, 1);
    script_ret = TRANSPORT_ERROR;
    ck_assert_int_eq(endpoint_writev(&ep, &iov, 1), TRANSPORT_ERROR);
    ck_assert(!ep.wr_on_read);
}
END_TEST

START_TEST(close_releases_the_transport)
{
    endpoint_close(loop, &ep, &pool);
    ck_assert_int_eq(script_released, 1);
    endpoint_close(loop, &ep, &pool);
    ck_assert_int_eq(script_released, 1);
}
END_TEST

Suite *endpoint_suite(void);
Suite *endpoint_suite(void)
{
    Suite *s = suite_create("endpoint");
    TCase *rd = tcase_create("read");
    tcase_add_checked_fixture(rd, setup, teardown);
    tcase_add_test(rd, read_appends_to_a_buffer_from_the_pool);
    tcase_add_test(rd, idle_read_holds_no_buffer);
    tcase_add_test(rd, read_from_an_empty_pool_allocates);
    tcase_add_test(rd, full_read_keeps_readable_then_full);
    tcase_add_test(rd, full_buffer_leaves_the_socket_alone);
    tcase_add_test(rd, read_nothing_is_again);
    tcase_add_test(rd, read_after_peer_close_is_zero_and_eof);
    tcase_add_test(rd, read_error_sets_eof);
    suite_add_tcase(s, rd);

    TCase *wr = tcase_create("write");
    tcase_add_checked_fixture(wr, setup, teardown);
    tcase_add_test(wr, writev_writes_every_part);
    tcase_add_test(wr, writev_full_socket_wants_write);
    tcase_add_test(wr, writev_to_a_closed_peer_is_an_error);
    tcase_add_test(wr, preamble_goes_first);
    tcase_add_test(wr, preamble_before_a_read);
    tcase_add_test(wr, preamble_to_a_full_socket_waits);
    suite_add_tcase(s, wr);

    TCase *ev = tcase_create("events");
    tcase_add_checked_fixture(ev, setup, teardown);
    tcase_add_test(ev, on_events_read);
    tcase_add_test(ev, on_events_write);
    tcase_add_test(ev, on_events_both_and_none);
    tcase_add_test(ev, loop_reports_readability);
    suite_add_tcase(s, ev);

    TCase *arm = tcase_create("arm");
    tcase_add_checked_fixture(arm, setup, teardown);
    tcase_add_test(arm, arm_starts_and_stops);
    tcase_add_test(arm, arm_keeps_read_while_not_known_readable);
    tcase_add_test(arm, arm_does_not_start_reading_by_itself);
    tcase_add_test(arm, arm_drops_read_once_readable_or_eof);
    tcase_add_test(arm, arm_read_waiting_for_write);
    tcase_add_test(arm, arm_write_waiting_for_read);
    tcase_add_test(arm, set_events_is_exact);
    suite_add_tcase(s, arm);

    TCase *cl = tcase_create("close");
    tcase_add_checked_fixture(cl, setup, teardown);
    tcase_add_test(cl, close_closes_the_socket_and_returns_the_buffer);
    tcase_add_test(cl, close_without_a_buffer);
    suite_add_tcase(s, cl);

    TCase *tls = tcase_create("tls_waits");
    tcase_add_checked_fixture(tls, script_setup, teardown);
    tcase_add_test(tls, tls_read_wanting_write);
    tcase_add_test(tls, tls_write_wanting_read);
    tcase_add_test(tls, close_releases_the_transport);
    suite_add_tcase(s, tls);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(endpoint_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
