/* tests/unit/controlplane/test_publisher.c */
#include "lb_endpoints.h"
#include "lb_err.h"
#include "publisher.h"
#include "seal.h"

#include <check.h>
#include <errno.h>
#include <ev.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define WAIT_S 3.0 /* bound of every wait for a message */

static char tmpdir[64];
static char base[192];
static struct ev_loop *loop;
static ev_timer tick;

/* What the report callback saw. */
static int n_seen;
static char seen_node[64];
static uint64_t seen_applied_version;
static uint64_t seen_applied_generation;
static size_t seen_n_backends;
static char seen_last_backend[128];
static uint64_t seen_last_requests;

static void on_report(void *ctx, const Lb__V1__Report *r)
{
    ck_assert_ptr_eq(ctx, &n_seen);
    n_seen++;
    snprintf(seen_node, sizeof(seen_node), "%s", r->node_id);
    seen_applied_version = r->applied_version;
    seen_applied_generation = r->applied_generation;
    seen_n_backends = r->n_backends;
    if (r->n_backends > 0) {
        const Lb__V1__BackendReport *b = r->backends[r->n_backends - 1];
        snprintf(seen_last_backend, sizeof(seen_last_backend), "%s", b->id);
        seen_last_requests = b->requests;
    }
}

/* The tick only has to exist: a due timer ends each EVRUN_ONCE iteration. */
static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    ev_break(l, EVBREAK_ONE);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-pub-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    /* Keeps EVRUN_ONCE from sleeping for long, so that every wait below is bounded. */
    ev_timer_init(&tick, on_tick, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    n_seen = 0;
    seen_n_backends = 0;
}

static void teardown(void)
{
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    const char *names[] = {"snapshot.sock", "sync.sock", "report.sock", "file"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

static void step(void)
{
    ev_run(loop, EVRUN_ONCE);
}

static void run_for(double seconds)
{
    double end = ev_time() + seconds;
    while (ev_time() < end)
        step();
}

static struct publisher *start(const char *b, double republish_s)
{
    struct lb_err err = {0};
    struct publisher_config cfg = {.base = b, .republish_s = republish_s};
    struct publisher *p = publisher_new(loop, &cfg, on_report, &n_seen, &err);
    ck_assert_msg(p != NULL, "publisher_new: %s", err.msg);
    return p;
}

static int client(int protocol, const char *ep)
{
    int s = nn_socket(AF_SP, protocol);
    ck_assert_int_ge(s, 0);
    int unlimited = -1;
    ck_assert_int_eq(nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &unlimited, sizeof(int)), 0);
    if (protocol == NN_SUB)
        ck_assert_int_eq(nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, "", 0), 0);
    ck_assert_int_ge(nn_connect(s, ep), 0);
    return s;
}

static void wait_connected(int s)
{
    double end = ev_time() + WAIT_S;
    while (nn_get_statistic(s, NN_STAT_CURRENT_CONNECTIONS) < 1 && ev_time() < end)
        step();
    ck_assert_uint_ge(nn_get_statistic(s, NN_STAT_CURRENT_CONNECTIONS), 1);
    run_for(0.05); /* the server side attaches the pipe a moment later */
}

/* Runs the loop until <s> has a message; returns its length (message in *msg,
 * nn_freemsg() it) or -1 after <timeout> seconds. */
static int recv_within(int s, void **msg, double timeout)
{
    double end = ev_time() + timeout;
    for (;;) {
        int n = nn_recv(s, msg, NN_MSG, NN_DONTWAIT);
        if (n >= 0)
            return n;
        ck_assert_int_eq(nn_errno(), EAGAIN);
        if (ev_time() >= end)
            return -1;
        step();
    }
}

static void send_within(int s, const void *buf, size_t len)
{
    double end = ev_time() + WAIT_S;
    while (nn_send(s, buf, len, NN_DONTWAIT) < 0) {
        ck_assert_int_eq(nn_errno(), EAGAIN);
        ck_assert_msg(ev_time() < end, "send timed out");
        step();
    }
}

/* An encoded snapshot of <generation> with <n> backends; free() the result. */
static uint8_t *make_snapshot(uint64_t generation, size_t n, size_t *len)
{
    Lb__V1__Snapshot s = LB__V1__SNAPSHOT__INIT;
    s.generation = generation;
    s.config_version = 3;
    s.n_backends = n;
    s.backends = calloc(n, sizeof(*s.backends));
    Lb__V1__Backend *bs = calloc(n, sizeof(*bs));
    char(*ids)[32] = calloc(n, sizeof(*ids));
    char(*hosts)[32] = calloc(n, sizeof(*hosts));
    char(*urls)[128] = calloc(n, sizeof(*urls));
    ck_assert(n == 0 || (s.backends && bs && ids && hosts && urls));
    for (size_t i = 0; i < n; i++) {
        lb__v1__backend__init(&bs[i]);
        snprintf(ids[i], sizeof(ids[i]), "b%05zu", i);
        snprintf(hosts[i], sizeof(hosts[i]), "10.%u.%u.%u", (unsigned)(i >> 16) & 255,
                 (unsigned)(i >> 8) & 255, (unsigned)i & 255);
        /* Long URLs push a 10,000-backend snapshot past nanomsg's 1 MiB default. */
        snprintf(urls[i], sizeof(urls[i]),
                 "http://backend-%05zu.pool.example.internal:8080/some/longer/prefix/for/its/size",
                 i);
        bs[i].id = ids[i];
        bs[i].host = hosts[i];
        bs[i].url = urls[i];
        bs[i].port = 8080;
        bs[i].weight = (uint32_t)(i % 1000) + 1;
        s.backends[i] = &bs[i];
    }
    *len = lb__v1__snapshot__get_packed_size(&s);
    uint8_t *buf = malloc(*len);
    ck_assert_ptr_nonnull(buf);
    lb__v1__snapshot__pack(&s, buf);
    free(urls);
    free(hosts);
    free(ids);
    free(bs);
    free(s.backends);
    return buf;
}

static void set_snapshot(struct publisher *p, uint64_t generation, size_t n)
{
    size_t len;
    uint8_t *buf = make_snapshot(generation, n, &len);
    struct lb_err err = {0};
    ck_assert_msg(publisher_set_snapshot(p, buf, len, generation, &err) == LB_OK, "%s", err.msg);
    free(buf);
}

/* Receives one PUB message and checks it is a snapshot of <generation> with <n> backends. */
static void expect_published(int sub, uint64_t generation, size_t n, double timeout)
{
    void *msg;
    int len = recv_within(sub, &msg, timeout);
    ck_assert_msg(len >= 0, "no snapshot within %.1f s", timeout);
    Lb__V1__Snapshot *s = lb__v1__snapshot__unpack(NULL, (size_t)len, msg);
    nn_freemsg(msg);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->generation, generation);
    ck_assert_uint_eq(s->config_version, 3);
    ck_assert_uint_eq(s->n_backends, n);
    if (n > 0) {
        char want[32];
        snprintf(want, sizeof(want), "b%05zu", n - 1);
        ck_assert_str_eq(s->backends[n - 1]->id, want);
        ck_assert_uint_eq(s->backends[n - 1]->weight, (n - 1) % 1000 + 1);
    }
    lb__v1__snapshot__free_unpacked(s, NULL);
}

/* One REQ round trip; the caller frees the reply with lb__v1__sync_reply__free_unpacked(). */
static Lb__V1__SyncReply *sync_req(int req, uint64_t have)
{
    Lb__V1__SyncRequest r = LB__V1__SYNC_REQUEST__INIT;
    r.node_id = "dp-1";
    r.have_generation = have;
    uint8_t buf[64];
    size_t len = lb__v1__sync_request__pack(&r, buf);
    send_within(req, buf, len);
    void *msg;
    int n = recv_within(req, &msg, WAIT_S);
    ck_assert_msg(n >= 0, "no sync reply");
    Lb__V1__SyncReply *reply = lb__v1__sync_reply__unpack(NULL, (size_t)n, msg);
    nn_freemsg(msg);
    ck_assert_ptr_nonnull(reply);
    return reply;
}

static void push_report(int push, const char *node, size_t n_backends, size_t id_len)
{
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = (char *)node;
    r.applied_version = 12;
    r.applied_generation = 34;
    r.pid = 4242;
    r.n_backends = n_backends;
    r.backends = calloc(n_backends, sizeof(*r.backends));
    Lb__V1__BackendReport *bs = calloc(n_backends, sizeof(*bs));
    char *ids = calloc(n_backends, id_len + 1);
    ck_assert(n_backends == 0 || (r.backends && bs && ids));
    for (size_t i = 0; i < n_backends; i++) {
        lb__v1__backend_report__init(&bs[i]);
        char *id = ids + i * (id_len + 1);
        memset(id, 'x', id_len);
        snprintf(id, id_len + 1, "%06zu", i);
        id[strlen(id)] = 'x';
        id[id_len] = '\0';
        bs[i].id = id;
        bs[i].requests = 1000 + i;
        r.backends[i] = &bs[i];
    }
    size_t len = lb__v1__report__get_packed_size(&r);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    lb__v1__report__pack(&r, buf);
    send_within(push, buf, len);
    free(buf);
    free(ids);
    free(bs);
    free(r.backends);
}

static void wait_reports(int n)
{
    double end = ev_time() + WAIT_S;
    while (n_seen < n && ev_time() < end)
        step();
    ck_assert_int_eq(n_seen, n);
}

static void endpoint(const char *name, char out[LB_ENDPOINT_MAX])
{
    char pub[LB_ENDPOINT_MAX], rep[LB_ENDPOINT_MAX], pull[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split(base, pub, rep, pull, NULL), LB_OK);
    const char *src = strcmp(name, "pub") == 0 ? pub : strcmp(name, "rep") == 0 ? rep : pull;
    snprintf(out, LB_ENDPOINT_MAX, "%s", src);
}

/* --- endpoints ----------------------------------------------------------- */

START_TEST(endpoints_ipc_and_tcp)
{
    char a[LB_ENDPOINT_MAX], b[LB_ENDPOINT_MAX], c[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split("ipc:///run/lb", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(a, "ipc:///run/lb/snapshot.sock");
    ck_assert_str_eq(b, "ipc:///run/lb/sync.sock");
    ck_assert_str_eq(c, "ipc:///run/lb/report.sock");
    ck_assert_str_eq(lb_endpoints_ipc_path(b), "/run/lb/sync.sock");
    ck_assert_int_eq(lb_endpoints_split("ipc:///run/lb//", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(a, "ipc:///run/lb/snapshot.sock");
    ck_assert_int_eq(lb_endpoints_split("ipc:///", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(c, "ipc:///report.sock");
    ck_assert_int_eq(lb_endpoints_split("tcp://127.0.0.1:7000", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(a, "tcp://127.0.0.1:7000");
    ck_assert_str_eq(b, "tcp://127.0.0.1:7001");
    ck_assert_str_eq(c, "tcp://127.0.0.1:7002");
    ck_assert_ptr_null(lb_endpoints_ipc_path(a));
    ck_assert_int_eq(lb_endpoints_split("tcp://[::1]:65533", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(c, "tcp://[::1]:65535");
    ck_assert_int_eq(lb_endpoints_split("tcp://*:1", a, b, c, NULL), LB_OK);
    ck_assert_str_eq(b, "tcp://*:2");
}
END_TEST

START_TEST(endpoints_refused)
{
    char a[LB_ENDPOINT_MAX], b[LB_ENDPOINT_MAX], c[LB_ENDPOINT_MAX];
    char long_path[200];
    memset(long_path, 'd', sizeof(long_path));
    memcpy(long_path, "ipc:///", 7);
    long_path[sizeof(long_path) - 1] = '\0';
    const char *bad[] = {"ipc://run/lb",
                         "ipc://",
                         "tcp://127.0.0.1:0",
                         "tcp://127.0.0.1:65534",
                         "tcp://127.0.0.1:",
                         "tcp://127.0.0.1",
                         "tcp://:7000",
                         "tcp://h:70a0",
                         "tcp://::1:7000",
                         "tcp://[::1:7000",
                         "tcp://h:99999999999",
                         "inproc://x",
                         "ipc:///run/l b",
                         "",
                         long_path};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct lb_err err = {0};
        ck_assert_msg(lb_endpoints_split(bad[i], a, b, c, &err) == LB_EINVAL, "accepted %s",
                      bad[i]);
        ck_assert_str_eq(a, "");
        ck_assert(err.msg[0] != '\0');
    }
    ck_assert_int_eq(lb_endpoints_split(NULL, a, b, c, NULL), LB_EINVAL);
}
END_TEST

/* --- PUB ------------------------------------------------------------------- */

START_TEST(pub_sends_new_snapshot_at_once)
{
    struct publisher *p = start(base, 60);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pub", ep);
    int sub = client(NN_SUB, ep);
    wait_connected(sub);
    set_snapshot(p, 7, 3);
    expect_published(sub, 7, 3, 1.0); /* long before the 60 s republish */
    ck_assert_uint_eq(publisher_publishes(p), 1);
    ck_assert_uint_eq(publisher_generation(p), 7);
    set_snapshot(p, 8, 2);
    expect_published(sub, 8, 2, 1.0);
    ck_assert_uint_eq(publisher_publishes(p), 2);
    nn_close(sub);
    publisher_free(p);
}
END_TEST

START_TEST(pub_republishes_for_late_subscriber)
{
    struct publisher *p = start(base, 0.2);
    set_snapshot(p, 9, 1);
    run_for(0.05);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pub", ep);
    int sub = client(NN_SUB, ep);
    expect_published(sub, 9, 1, WAIT_S);
    ck_assert_uint_ge(publisher_publishes(p), 2);
    nn_close(sub);
    publisher_free(p);
}
END_TEST

START_TEST(pub_nothing_before_first_snapshot)
{
    struct publisher *p = start(base, 0.05);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pub", ep);
    int sub = client(NN_SUB, ep);
    wait_connected(sub);
    void *msg;
    ck_assert_int_eq(recv_within(sub, &msg, 0.3), -1);
    ck_assert_uint_eq(publisher_publishes(p), 0);
    struct lb_err err = {0};
    ck_assert_int_eq(publisher_set_snapshot(p, (const uint8_t *)"x", 1, 0, &err), LB_EINVAL);
    ck_assert_int_eq(publisher_set_snapshot(p, NULL, 0, 1, &err), LB_EINVAL);
    ck_assert_uint_eq(publisher_generation(p), 0);
    nn_close(sub);
    publisher_free(p);
}
END_TEST

/* --- REP ------------------------------------------------------------------- */

START_TEST(sync_replies)
{
    struct publisher *p = start(base, 60);
    char ep[LB_ENDPOINT_MAX];
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);

    Lb__V1__SyncReply *r = sync_req(req, 0);
    ck_assert_ptr_null(r->snapshot);
    ck_assert_str_eq(r->error, "the control plane has no snapshot yet");
    lb__v1__sync_reply__free_unpacked(r, NULL);

    set_snapshot(p, 5, 4);
    r = sync_req(req, 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_str_eq(r->error, "");
    ck_assert_uint_eq(r->snapshot->generation, 5);
    ck_assert_uint_eq(r->snapshot->n_backends, 4);
    ck_assert_str_eq(r->snapshot->backends[3]->id, "b00003");
    lb__v1__sync_reply__free_unpacked(r, NULL);

    r = sync_req(req, 5);
    ck_assert_ptr_null(r->snapshot);
    ck_assert_str_eq(r->error, "");
    lb__v1__sync_reply__free_unpacked(r, NULL);

    r = sync_req(req, 4);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 5);
    lb__v1__sync_reply__free_unpacked(r, NULL);

    ck_assert_uint_eq(publisher_sync_requests(p), 4);
    ck_assert_uint_eq(publisher_malformed(p), 0);
    nn_close(req);
    publisher_free(p);
}
END_TEST

/* sync_req() for node <node>. */
static Lb__V1__SyncReply *sync_req_node(int req, const char *node, uint64_t have)
{
    Lb__V1__SyncRequest r = LB__V1__SYNC_REQUEST__INIT;
    r.node_id = (char *)node;
    r.have_generation = have;
    uint8_t buf[64];
    size_t len = lb__v1__sync_request__pack(&r, buf);
    send_within(req, buf, len);
    void *msg;
    int n = recv_within(req, &msg, WAIT_S);
    ck_assert_msg(n >= 0, "no sync reply");
    Lb__V1__SyncReply *reply = lb__v1__sync_reply__unpack(NULL, (size_t)n, msg);
    nn_freemsg(msg);
    ck_assert_ptr_nonnull(reply);
    return reply;
}

/* Staged rollout: the canaries get the current snapshot, the others the
 * held one, by sync and by PUB (both sent); clearing it ends that. */
START_TEST(held_snapshot_by_node)
{
    struct publisher *p = start(base, 60);
    char ep[LB_ENDPOINT_MAX];
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);
    endpoint("pub", ep);
    int sub = client(NN_SUB, ep);
    wait_connected(sub);
    set_snapshot(p, 7, 3);
    expect_published(sub, 7, 3, 1.0);
    size_t len;
    uint8_t *buf = make_snapshot(6, 2, &len);
    struct lb_err err = {0};
    const char *canaries[] = {"dp-c"};
    ck_assert_int_eq(publisher_set_held(p, buf, len, 6, canaries, 0, &err), LB_EINVAL);
    ck_assert_int_eq(publisher_set_held(p, buf, len, 6, canaries, 1, &err), LB_OK);
    free(buf);
    ck_assert_uint_eq(publisher_held_generation(p), 6);
    expect_published(sub, 7, 3, 1.0); /* both, the current one first */
    expect_published(sub, 6, 2, 1.0);

    Lb__V1__SyncReply *r = sync_req_node(req, "dp-c", 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 7);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    r = sync_req_node(req, "dp-1", 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 6);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    r = sync_req_node(req, "dp-1", 6); /* up to date with the held one */
    ck_assert_ptr_null(r->snapshot);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    r = sync_req_node(req, "dp-c", 6); /* a canary is not */
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 7);
    lb__v1__sync_reply__free_unpacked(r, NULL);

    /* a new current snapshot keeps the held one */
    set_snapshot(p, 8, 4);
    expect_published(sub, 8, 4, 1.0);
    expect_published(sub, 6, 2, 1.0);
    publisher_clear_held(p);
    ck_assert_uint_eq(publisher_held_generation(p), 0);
    r = sync_req_node(req, "dp-1", 6);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 8);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    nn_close(sub);
    nn_close(req);
    publisher_free(p);
}
END_TEST

START_TEST(sync_survives_garbage)
{
    struct publisher *p = start(base, 60);
    set_snapshot(p, 2, 1);
    char ep[LB_ENDPOINT_MAX];
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);
    const char *garbage[] = {"\xff\xff\xff\xff", "\x0a\x05"
                                                 "ab"};
    for (size_t i = 0; i < 2; i++) {
        send_within(req, garbage[i], strlen(garbage[i]));
        void *msg;
        int n = recv_within(req, &msg, WAIT_S);
        ck_assert_int_ge(n, 0);
        Lb__V1__SyncReply *r = lb__v1__sync_reply__unpack(NULL, (size_t)n, msg);
        nn_freemsg(msg);
        ck_assert_ptr_nonnull(r);
        ck_assert_ptr_null(r->snapshot);
        ck_assert_str_eq(r->error, "malformed SyncRequest");
        lb__v1__sync_reply__free_unpacked(r, NULL);
    }
    Lb__V1__SyncReply *r = sync_req(req, 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 2);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    ck_assert_uint_eq(publisher_malformed(p), 2);
    ck_assert_uint_eq(publisher_sync_requests(p), 1);
    nn_close(req);
    publisher_free(p);
}
END_TEST

/* --- PULL ------------------------------------------------------------------ */

START_TEST(report_reaches_callback)
{
    struct publisher *p = start(base, 60);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pull", ep);
    int push = client(NN_PUSH, ep);
    push_report(push, "dp-7", 2, 8);
    wait_reports(1);
    ck_assert_str_eq(seen_node, "dp-7");
    ck_assert_uint_eq(seen_applied_version, 12);
    ck_assert_uint_eq(seen_applied_generation, 34);
    ck_assert_uint_eq(seen_n_backends, 2);
    ck_assert_str_eq(seen_last_backend, "000001xx");
    ck_assert_uint_eq(seen_last_requests, 1001);
    ck_assert_uint_eq(publisher_reports(p), 1);
    nn_close(push);
    publisher_free(p);
}
END_TEST

START_TEST(report_survives_garbage)
{
    struct publisher *p = start(base, 60);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pull", ep);
    int push = client(NN_PUSH, ep);
    send_within(push, "\xff\xff\xff", 3);
    send_within(push,
                "\x0a\x7f"
                "abc",
                5);
    push_report(push, "dp-after", 0, 0);
    wait_reports(1);
    ck_assert_str_eq(seen_node, "dp-after");
    ck_assert_uint_eq(publisher_malformed(p), 2);
    ck_assert_uint_eq(publisher_reports(p), 1);
    nn_close(push);
    publisher_free(p);
}
END_TEST

/* --- sealed feed ------------------------------------------------------------- */

#define HEX_1 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define HEX_2 "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static struct seal_keyring *ring(const char *text)
{
    struct seal_keyring *kr = NULL;
    ck_assert_int_eq(seal_keyring_parse(text, strlen(text), "t", &kr, NULL), LB_OK);
    return kr;
}

static struct publisher *start_sealed(const struct seal_keyring *kr)
{
    struct lb_err err = {0};
    struct publisher_config cfg = {.base = base, .republish_s = 60, .keys = kr};
    struct publisher *p = publisher_new(loop, &cfg, on_report, &n_seen, &err);
    ck_assert_msg(p != NULL, "publisher_new: %s", err.msg);
    return p;
}

/* Receives one message of <kind> on <s> and opens it with <kr>; returns the
 * plaintext's length (at *plain inside *msg: nn_freemsg() it) and the key id. */
static size_t recv_sealed(int s, const struct seal_keyring *kr, enum seal_kind kind, void **msg,
                          const uint8_t **plain, uint32_t *key_id)
{
    int n = recv_within(s, msg, WAIT_S);
    ck_assert_msg(n >= 0, "nothing received");
    size_t len = 0;
    ck_assert_int_eq(seal_open(kr, kind, *msg, (size_t)n, plain, &len, key_id), SEAL_OK);
    return len;
}

static void send_sealed(int s, const struct seal_keyring *kr, enum seal_kind kind,
                        const uint8_t *plain, size_t len)
{
    uint8_t *buf = malloc(len + SEAL_OVERHEAD);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(seal_seal(kr, kind, plain, len, buf, NULL), LB_OK);
    send_within(s, buf, len + SEAL_OVERHEAD);
    free(buf);
}

static uint64_t refused(const struct publisher *p, enum seal_status why)
{
    return publisher_feed_counts(p)->n[why];
}

START_TEST(sealed_pub_and_sync)
{
    struct seal_keyring *k1 = ring("1 " HEX_1), *k12 = ring("2 " HEX_2 "\n1 " HEX_1);
    struct publisher *p = start_sealed(k1);
    ck_assert(publisher_is_sealed(p));
    char ep[LB_ENDPOINT_MAX];
    endpoint("pub", ep);
    int sub = client(NN_SUB, ep);
    wait_connected(sub);
    set_snapshot(p, 7, 3);
    void *msg;
    const uint8_t *plain;
    uint32_t id = 0;
    size_t len = recv_sealed(sub, k12, SEAL_KIND_SNAPSHOT, &msg, &plain, &id);
    Lb__V1__Snapshot *snap = lb__v1__snapshot__unpack(NULL, len, plain);
    ck_assert_ptr_nonnull(snap);
    ck_assert_uint_eq(snap->generation, 7);
    ck_assert_uint_eq(id, 1);
    lb__v1__snapshot__free_unpacked(snap, NULL);
    nn_freemsg(msg);

    /* an unsealed request gets no reply at all, a sealed one a sealed reply */
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);
    Lb__V1__SyncRequest r = LB__V1__SYNC_REQUEST__INIT;
    r.node_id = "dp-1";
    uint8_t buf[64];
    size_t rl = lb__v1__sync_request__pack(&r, buf);
    send_within(req, buf, rl);
    ck_assert_int_lt(recv_within(req, &msg, 0.3), 0);
    ck_assert_uint_eq(refused(p, SEAL_UNSEALED), 1);
    send_sealed(req, k1, SEAL_KIND_SNAPSHOT, buf, rl); /* right key, wrong kind */
    ck_assert_int_lt(recv_within(req, &msg, 0.3), 0);
    ck_assert_uint_eq(refused(p, SEAL_WRONG_KIND), 1);
    send_sealed(req, k1, SEAL_KIND_SYNC_REQUEST, buf, rl);
    len = recv_sealed(req, k1, SEAL_KIND_SYNC_REPLY, &msg, &plain, NULL);
    Lb__V1__SyncReply *reply = lb__v1__sync_reply__unpack(NULL, len, plain);
    ck_assert_ptr_nonnull(reply);
    ck_assert_ptr_nonnull(reply->snapshot);
    ck_assert_uint_eq(reply->snapshot->generation, 7);
    lb__v1__sync_reply__free_unpacked(reply, NULL);
    nn_freemsg(msg);
    ck_assert_uint_eq(publisher_sync_requests(p), 1);

    /* rotation: the current snapshot is sealed again with the new first key */
    ck_assert_int_eq(publisher_set_keys(p, k12, NULL), LB_OK);
    r.have_generation = 7;
    rl = lb__v1__sync_request__pack(&r, buf);
    send_sealed(req, k1, SEAL_KIND_SYNC_REQUEST, buf, rl); /* the old key still opens */
    len = recv_sealed(req, k12, SEAL_KIND_SYNC_REPLY, &msg, &plain, &id);
    ck_assert_uint_eq(len, 0); /* up to date: an empty reply, sealed */
    ck_assert_uint_eq(id, 2);
    nn_freemsg(msg);
    r.have_generation = 0;
    rl = lb__v1__sync_request__pack(&r, buf);
    send_sealed(req, k12, SEAL_KIND_SYNC_REQUEST, buf, rl);
    len = recv_sealed(req, k12, SEAL_KIND_SYNC_REPLY, &msg, &plain, &id);
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_eq(id, 2);
    nn_freemsg(msg);
    set_snapshot(p, 8, 1);
    len = recv_sealed(sub, k12, SEAL_KIND_SNAPSHOT, &msg, &plain, &id);
    ck_assert_uint_eq(id, 2);
    nn_freemsg(msg);
    nn_close(req);
    nn_close(sub);
    publisher_free(p);
    seal_keyring_free(k1);
    seal_keyring_free(k12);
}
END_TEST

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void push_sealed_report(int push, const struct seal_keyring *kr, const char *node,
                               uint64_t boot, uint64_t seq, int64_t started, int64_t sent)
{
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = (char *)node;
    r.boot_id = boot;
    r.seq = seq;
    r.started_unix_ms = started;
    r.sent_unix_ms = sent;
    uint8_t buf[256];
    size_t len = lb__v1__report__pack(&r, buf);
    send_sealed(push, kr, SEAL_KIND_REPORT, buf, len);
}

/* Sends the report and waits until the publisher accepted or refused it. */
static bool report_accepted(struct publisher *p, int push, const struct seal_keyring *kr,
                            const char *node, uint64_t boot, uint64_t seq, int64_t started)
{
    const struct seal_counts *c = publisher_feed_counts(p);
    uint64_t before = publisher_reports(p), refusals = c->n[SEAL_REPLAY] + c->n[SEAL_MALFORMED];
    push_sealed_report(push, kr, node, boot, seq, started, now_ms());
    double end = ev_time() + WAIT_S;
    while (publisher_reports(p) == before && c->n[SEAL_REPLAY] + c->n[SEAL_MALFORMED] == refusals &&
           ev_time() < end)
        step();
    ck_assert_msg(ev_time() < end, "the report was neither accepted nor refused");
    return publisher_reports(p) > before;
}

START_TEST(sealed_reports_refuse_replays)
{
    struct seal_keyring *k1 = ring("1 " HEX_1), *k2 = ring("1 " HEX_2);
    struct publisher *p = start_sealed(k1);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pull", ep);
    int push = client(NN_PUSH, ep);
    int64_t t = now_ms() - 60000;
    ck_assert(report_accepted(p, push, k1, "dp", 11, 1, t + 100));
    ck_assert(!report_accepted(p, push, k1, "dp", 11, 1, t + 100)); /* the same again */
    ck_assert(report_accepted(p, push, k1, "dp", 11, 2, t + 100));
    ck_assert(!report_accepted(p, push, k1, "dp", 11, 1, t + 100));   /* an older one */
    ck_assert(report_accepted(p, push, k1, "other", 11, 1, t + 100)); /* per node */
    ck_assert_uint_eq(refused(p, SEAL_REPLAY), 2);
    /* a successor and its predecessor both report for a while */
    ck_assert(report_accepted(p, push, k1, "dp", 12, 1, t + 200));
    ck_assert(report_accepted(p, push, k1, "dp", 11, 3, t + 100));
    ck_assert(report_accepted(p, push, k1, "dp", 13, 1, t + 300));
    ck_assert(report_accepted(p, push, k1, "dp", 14, 1, t + 400));
    /* a fifth process pushes the oldest out; that one is then a replay */
    ck_assert(report_accepted(p, push, k1, "dp", 15, 1, t + 500));
    ck_assert(!report_accepted(p, push, k1, "dp", 11, 9, t + 100));
    ck_assert(!report_accepted(p, push, k1, "dp", 10, 1, t + 50));
    /* older than every process remembered: refused, and evicts nobody */
    ck_assert(!report_accepted(p, push, k1, "dp", 9, 1, t + 150));
    ck_assert(report_accepted(p, push, k1, "dp", 12, 2, t + 200));
    ck_assert_uint_eq(refused(p, SEAL_REPLAY), 5);
    /* outside the window, no boot id, another key */
    push_sealed_report(push, k1, "dp", 16, 1, t + 600,
                       now_ms() - PUBLISHER_REPORT_WINDOW_MS - 1000);
    for (double end = ev_time() + WAIT_S; refused(p, SEAL_REPLAY) < 6 && ev_time() < end;)
        step();
    ck_assert_uint_eq(refused(p, SEAL_REPLAY), 6);
    ck_assert(!report_accepted(p, push, k1, "dp", 0, 1, t + 600));
    ck_assert_uint_eq(refused(p, SEAL_MALFORMED), 1);
    push_sealed_report(push, k2, "dp", 16, 1, t + 600, now_ms());
    send_within(push, "\x0a\x02dp", 4); /* unsealed */
    ck_assert(report_accepted(p, push, k1, "dp", 16, 1, t + 600));
    ck_assert_uint_eq(refused(p, SEAL_AUTH_FAILED), 1);
    ck_assert_uint_eq(refused(p, SEAL_UNSEALED), 1);
    ck_assert_int_eq(n_seen, (int)publisher_reports(p));
    nn_close(push);
    publisher_free(p);
    seal_keyring_free(k1);
    seal_keyring_free(k2);
}
END_TEST

START_TEST(feed_nodes_allow_list)
{
    struct lb_err err = {0};
    struct publisher_config bad = {.base = base, .nodes = "dp-1,,dp-2"};
    ck_assert_ptr_null(publisher_new(loop, &bad, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "--feed-nodes") != NULL, "%s", err.msg);
    struct publisher_config cfg = {.base = base, .republish_s = 60, .nodes = "dp-1,dp-2"};
    struct publisher *p = publisher_new(loop, &cfg, on_report, &n_seen, &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    set_snapshot(p, 4, 1);
    char ep[LB_ENDPOINT_MAX];
    endpoint("pull", ep);
    int push = client(NN_PUSH, ep);
    push_report(push, "dp-7", 0, 0);
    push_report(push, "dp-2", 0, 0);
    wait_reports(1);
    ck_assert_str_eq(seen_node, "dp-2");
    ck_assert_uint_eq(refused(p, SEAL_UNKNOWN_NODE), 1);
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);
    Lb__V1__SyncRequest r = LB__V1__SYNC_REQUEST__INIT;
    r.node_id = "intruder";
    uint8_t buf[64];
    size_t len = lb__v1__sync_request__pack(&r, buf);
    send_within(req, buf, len);
    void *msg;
    ck_assert_int_lt(recv_within(req, &msg, 0.3), 0);
    ck_assert_uint_eq(refused(p, SEAL_UNKNOWN_NODE), 2);
    Lb__V1__SyncReply *reply = sync_req(req, 0); /* as "dp-1" */
    ck_assert_ptr_nonnull(reply->snapshot);
    lb__v1__sync_reply__free_unpacked(reply, NULL);
    nn_close(req);
    nn_close(push);
    publisher_free(p);
}
END_TEST

/* --- sizes ----------------------------------------------------------------- */

START_TEST(ten_thousand_backends)
{
    struct publisher *p = start(base, 60);
    char ep_pub[LB_ENDPOINT_MAX], ep_rep[LB_ENDPOINT_MAX], ep_pull[LB_ENDPOINT_MAX];
    endpoint("pub", ep_pub);
    endpoint("rep", ep_rep);
    endpoint("pull", ep_pull);
    int sub = client(NN_SUB, ep_pub);
    int req = client(NN_REQ, ep_rep);
    int push = client(NN_PUSH, ep_pull);
    wait_connected(sub);

    size_t len;
    uint8_t *buf = make_snapshot(11, 10000, &len);
    ck_assert_uint_gt(len, 1024 * 1024); /* beyond nanomsg's default receive limit */
    struct lb_err err = {0};
    ck_assert_int_eq(publisher_set_snapshot(p, buf, len, 11, &err), LB_OK);
    free(buf);
    expect_published(sub, 11, 10000, WAIT_S);

    Lb__V1__SyncReply *r = sync_req(req, 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 11);
    ck_assert_uint_eq(r->snapshot->n_backends, 10000);
    ck_assert_str_eq(r->snapshot->backends[9999]->host, "10.0.39.15");
    lb__v1__sync_reply__free_unpacked(r, NULL);

    /* A report above 1 MiB passes too: PULL's receive limit is raised. */
    push_report(push, "dp-big", 20000, 60);
    wait_reports(1);
    ck_assert_uint_eq(seen_n_backends, 20000);
    ck_assert_uint_eq(seen_last_requests, 1000 + 19999);
    nn_close(push);
    nn_close(req);
    nn_close(sub);
    publisher_free(p);
}
END_TEST

/* --- tcp:// ------------------------------------------------------------------ */

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* A port P with P, P+1 and P+2 free on 127.0.0.1. */
static int free_port_triple(void)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t sl = sizeof(sa);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
        close(fd);
        int port = ntohs(sa.sin_port);
        if (port <= 65533 && port_free(port) && port_free(port + 1) && port_free(port + 2))
            return port;
    }
    ck_abort_msg("no three free consecutive ports");
    return 0;
}

START_TEST(tcp_base)
{
    int port = free_port_triple();
    snprintf(base, sizeof(base), "tcp://127.0.0.1:%d", port);
    struct publisher *p = start(base, 0.2);
    char ep_pub[LB_ENDPOINT_MAX], ep_rep[LB_ENDPOINT_MAX], ep_pull[LB_ENDPOINT_MAX];
    endpoint("pub", ep_pub);
    endpoint("rep", ep_rep);
    endpoint("pull", ep_pull);
    char want[64];
    snprintf(want, sizeof(want), "tcp://127.0.0.1:%d", port + 2);
    ck_assert_str_eq(ep_pull, want);

    set_snapshot(p, 21, 2);
    int sub = client(NN_SUB, ep_pub);
    expect_published(sub, 21, 2, WAIT_S);

    int req = client(NN_REQ, ep_rep);
    Lb__V1__SyncReply *r = sync_req(req, 0);
    ck_assert_ptr_nonnull(r->snapshot);
    ck_assert_uint_eq(r->snapshot->generation, 21);
    lb__v1__sync_reply__free_unpacked(r, NULL);

    int push = client(NN_PUSH, ep_pull);
    push_report(push, "dp-tcp", 1, 6);
    wait_reports(1);
    ck_assert_str_eq(seen_node, "dp-tcp");

    nn_close(push);
    nn_close(req);
    nn_close(sub);
    publisher_free(p);
}
END_TEST

/* --- binding --------------------------------------------------------------- */

static bool exists(const char *name)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    return lstat(path, &st) == 0;
}

START_TEST(bind_errors_name_the_endpoint)
{
    struct lb_err err = {0};
    char missing[256];
    snprintf(missing, sizeof(missing), "ipc://%s/nope", tmpdir);
    struct publisher_config cfg = {.base = missing};
    ck_assert_ptr_null(publisher_new(loop, &cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_ESYS);
    ck_assert_msg(strstr(err.msg, "/nope/snapshot.sock") != NULL, "%s", err.msg);

    cfg.base = "ipc://relative";
    ck_assert_ptr_null(publisher_new(loop, &cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);

    cfg.base = base;
    cfg.republish_s = -1;
    ck_assert_ptr_null(publisher_new(loop, &cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);

    /* A second publisher on a live base is refused, naming the endpoint. */
    struct publisher *p = start(base, 0);
    cfg.republish_s = 0;
    ck_assert_ptr_null(publisher_new(loop, &cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_ESYS);
    ck_assert_msg(strstr(err.msg, "snapshot.sock") != NULL, "%s", err.msg);
    ck_assert(exists("snapshot.sock")); /* the failed one removed nothing of the live one */
    publisher_free(p);
    ck_assert(!exists("snapshot.sock"));
    ck_assert(!exists("sync.sock"));
    ck_assert(!exists("report.sock"));
}
END_TEST

START_TEST(stale_socket_replaced_other_file_refused)
{
    /* A socket file left by a process that is gone. */
    char path[256];
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/sync.sock", tmpdir);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    ck_assert(exists("sync.sock"));
    struct publisher *p = start(base, 0);
    set_snapshot(p, 3, 1);
    char ep[LB_ENDPOINT_MAX];
    endpoint("rep", ep);
    int req = client(NN_REQ, ep);
    Lb__V1__SyncReply *r = sync_req(req, 0);
    ck_assert_ptr_nonnull(r->snapshot);
    lb__v1__sync_reply__free_unpacked(r, NULL);
    nn_close(req);
    publisher_free(p);

    /* A regular file where a socket belongs is left alone. */
    snprintf(path, sizeof(path), "%s/report.sock", tmpdir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    struct lb_err err = {0};
    struct publisher_config cfg = {.base = base};
    ck_assert_ptr_null(publisher_new(loop, &cfg, NULL, NULL, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "not a socket") != NULL, "%s", err.msg);
    ck_assert(exists("report.sock"));
    ck_assert(!exists("snapshot.sock"));
}
END_TEST

static Suite *publisher_suite(void)
{
    Suite *s = suite_create("publisher");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"endpoints", endpoints_ipc_and_tcp},
        {"endpoints_refused", endpoints_refused},
        {"pub_at_once", pub_sends_new_snapshot_at_once},
        {"pub_republish", pub_republishes_for_late_subscriber},
        {"pub_none_yet", pub_nothing_before_first_snapshot},
        {"sync", sync_replies},
        {"sync_garbage", sync_survives_garbage},
        {"held", held_snapshot_by_node},
        {"report", report_reaches_callback},
        {"report_garbage", report_survives_garbage},
        {"sealed_pub_sync", sealed_pub_and_sync},
        {"sealed_reports", sealed_reports_refuse_replays},
        {"feed_nodes", feed_nodes_allow_list},
        {"big", ten_thousand_backends},
        {"tcp", tcp_base},
        {"bind_errors", bind_errors_name_the_endpoint},
        {"stale_socket", stale_socket_replaced_other_file_refused},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(publisher_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
