/* tests/e2e/test_feed_seal.c: the sealed feed over tcp:// on 127.0.0.2.
 *
 * A control plane and a data plane sharing a key: traffic flows and a TLS
 * config propagates while a rogue SUB sees only ciphertext, rogue reports
 * (unsealed, tampered, replayed) and rogue sync requests are refused and
 * counted by the control plane. A data plane fed by the test's own
 * publisher refuses unsealed, wrong-key, unknown-key, wrong-kind and
 * replayed older snapshots and keeps serving. tcp:// without a key does not
 * start; --feed-insecure does, with the gauge; a systemd credential stands
 * for --feed-key. Keys rotate in three SIGHUP steps under keep-alive load
 * with no request failed and nothing refused. */
#include "e2e.h"
#include "lb_err.h"
#include "seal.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FEED_HOST "127.0.0.2"
#define HEX_A     "8a1f0c3e5d7b9a2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"
#define HEX_B     "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
#define KEY_A     "1 " HEX_A "\n"
#define KEY_B     "2 " HEX_B "\n"
#define RW_TOKEN  "Authorization: Bearer rw-7f3a9c1e5b\r\n"

static char dir[64]; /* this test's files: keys, certificates, fake data plane log */

static void dir_make(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-feed-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void dir_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* Writes <text> to <name> in the test dir with <mode>, atomically. */
static void write_file(const char *name, const char *text, mode_t mode)
{
    char path[128], tmp[140];
    in_dir(path, sizeof(path), name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    ck_assert_int_eq(fchmod(fd, mode), 0);
    close(fd);
    ck_assert_int_eq(rename(tmp, path), 0);
}

static struct seal_keyring *ring(const char *text)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    ck_assert_msg(seal_keyring_parse(text, strlen(text), "test", &kr, &err) == LB_OK, "%s",
                  err.msg);
    return kr;
}

/* A feed base tcp://127.0.0.2:P whose P, P+1 and P+2 are free. */
static void feed_base(char *out, size_t n, unsigned *port)
{
    *port = e2e_feed_base(FEED_HOST, out, n);
}

static void endpoint(char *out, size_t n, unsigned port)
{
    snprintf(out, n, "tcp://" FEED_HOST ":%u", port);
}

/* The control plane's /metrics over its admin TCP listener; caller frees. */
static char *cp_metrics(struct e2e_cp *w)
{
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(e2e_cp_admin_port(w), "GET", "/metrics", RW_TOKEN, NULL, 0, &r),
                     0);
    ck_assert_int_eq(r.status, 200);
    char *body = strdup(r.body);
    e2e_resp_free(&r);
    return body;
}

static double rejected(const char *text, const char *reason)
{
    char l[64];
    snprintf(l, sizeof(l), "reason=\"%s\"", reason);
    double v = e2e_metric(text, "lb_feed_rejected_total", l);
    return isnan(v) ? -1 : v;
}

/* Polls the control plane's refusals for <reason> until at least <min>. */
static double cp_wait_rejected(struct e2e_cp *w, const char *reason, double min)
{
    double v = -1;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < deadline) {
        char *m = cp_metrics(w);
        v = rejected(m, reason);
        free(m);
        if (v >= min)
            break;
        e2e_poll_pause(50);
    }
    return v;
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static bool wait_file_has(const char *path, const char *needle)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (!file_has(path, needle)) {
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(20);
    }
    return true;
}

static int nn_open(int proto, const char *ep, bool bind_it)
{
    int s = nn_socket(AF_SP, proto);
    ck_assert_int_ge(s, 0);
    int max = -1, ms = 300;
    nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof(max));
    nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof(ms));
    int sms = (int)e2e_timeout_ms();
    nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &sms, sizeof(sms));
    if (proto == NN_SUB)
        nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, "", 0);
    int rc = bind_it ? nn_bind(s, ep) : nn_connect(s, ep);
    ck_assert_msg(rc >= 0, "%s %s: %s", bind_it ? "bind" : "connect", ep, nn_strerror(nn_errno()));
    return s;
}

/* Packs <r> into a fresh buffer (caller frees) of *len bytes. */
static uint8_t *pack_report(const Lb__V1__Report *r, size_t *len)
{
    *len = lb__v1__report__get_packed_size(r);
    uint8_t *buf = malloc(*len + SEAL_OVERHEAD);
    ck_assert_ptr_nonnull(buf);
    lb__v1__report__pack(r, buf);
    return buf;
}

static uint8_t *sealed(const struct seal_keyring *kr, enum seal_kind kind, const uint8_t *plain,
                       size_t len)
{
    uint8_t *out = malloc(len + SEAL_OVERHEAD);
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(seal_seal(kr, kind, plain, len, out, NULL), LB_OK);
    return out;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void get_ok(struct e2e_cp *w)
{
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(e2e_cp_frontend_port(w), "GET", "/", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
}

static void make_cert(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem "
             "-days 30 -subj /CN=web.test >/dev/null 2>&1",
             dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A config with the world's plain frontend and a TLS one (its private key
 * goes into the snapshot), applied through lbctl. */
static void apply_tls_config(struct e2e_cp *w)
{
    char path[128];
    in_dir(path, sizeof(path), "tls.yaml");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "frontends:\n"
            "  - {name: web, address: 127.0.0.1, port: %u}\n"
            "  - {name: web-tls, address: 127.0.0.1, port: %u, tls: true}\n"
            "backends:\n"
            "  - {id: b0, url: \"%s\"}\n"
            "ssl:\n  certFile: %s/cert.pem\n  keyFile: %s/key.pem\n"
            "balancing: {algorithm: weighted_round_robin, slowStart: \"0s\"}\n"
            "timeouts: {drain: \"5s\"}\n"
            "logging: {level: info, accessLog: false}\n"
            "metrics: {enabled: true, address: 127.0.0.1, port: %u}\n",
            e2e_cp_frontend_port(w), e2e_free_port(), e2e_cp_backend_url(w, 0), dir, dir,
            e2e_cp_metrics_port(w));
    ck_assert_int_eq(fclose(f), 0);
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "config", "apply", path, NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
}

static double dp_metric(struct e2e_cp *w, const char *name, const char *labels)
{
    char *m = e2e_cp_scrape(w);
    ck_assert_ptr_nonnull(m);
    double v = e2e_metric(m, name, labels);
    free(m);
    return v;
}

/* ---- a sealed world and its rogues -------------------------------------------- */

START_TEST(sealed_feed_refuses_rogues)
{
    dir_make();
    write_file("feed.key", "# test key\n" KEY_A, 0600);
    make_cert();
    static char base[64], key[128];
    unsigned port;
    feed_base(base, sizeof(base), &port);
    in_dir(key, sizeof(key), "feed.key");
    static char *args[] = {"--feed-key", key, NULL};
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true, .control = base};
    o.cp_args = args;
    o.dp_args = args;
    struct e2e_cp *w = e2e_cp_start(&o);
    get_ok(w);
    ck_assert(dp_metric(w, "lb_feed_sealed", NULL) == 1);

    /* A rogue subscriber, connected before the TLS config is applied. */
    char ep[64];
    endpoint(ep, sizeof(ep), port);
    int sub = nn_open(NN_SUB, ep, false);
    apply_tls_config(w);
    long gen = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen, 0);
    get_ok(w);

    struct seal_keyring *kr = ring(KEY_A);
    bool saw_key = false;
    unsigned seen = 0;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (!saw_key && e2e_now_ms() < deadline) {
        void *msg = NULL;
        int n = nn_recv(sub, &msg, NN_MSG, 0);
        if (n < 0)
            continue;
        seen++;
        ck_assert(memmem(msg, (size_t)n, "PRIVATE KEY", 11) == NULL);
        ck_assert(memmem(msg, (size_t)n, "BEGIN", 5) == NULL);
        ck_assert(memmem(msg, (size_t)n, "127.0.0.1", 9) == NULL);
        ck_assert(memmem(msg, (size_t)n, "web-tls", 7) == NULL);
        ck_assert_mem_eq(msg, "LBFS", 4);
        /* with the key it does open, and it does carry the private key */
        const uint8_t *plain;
        size_t plen;
        ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, msg, (size_t)n, &plain, &plen, NULL),
                         SEAL_OK);
        saw_key = memmem(plain, plen, "PRIVATE KEY", 11) != NULL;
        nn_freemsg(msg);
    }
    ck_assert_msg(saw_key, "the rogue SUB saw %u messages, none the TLS snapshot", seen);
    nn_close(sub);

    /* Rogue reports: unsealed, tampered, replayed, stale. */
    endpoint(ep, sizeof(ep), port + 2);
    int push = nn_open(NN_PUSH, ep, false);
    Lb__V1__Report rep = LB__V1__REPORT__INIT;
    rep.node_id = "dp0";
    rep.applied_generation = 999999;
    rep.applied_version = 999;
    rep.sent_unix_ms = wall_ms();
    rep.started_unix_ms = wall_ms();
    rep.boot_id = 42;
    rep.seq = 1;
    size_t len;
    uint8_t *plain = pack_report(&rep, &len);
    ck_assert_int_eq(nn_send(push, plain, len, 0), (int)len);
    ck_assert(cp_wait_rejected(w, "unsealed", 1) >= 1);
    uint8_t *msg = sealed(kr, SEAL_KIND_REPORT, plain, len);
    msg[SEAL_HEADER + len / 2] ^= 0x01;
    ck_assert_int_eq(nn_send(push, msg, len + SEAL_OVERHEAD, 0), (int)(len + SEAL_OVERHEAD));
    ck_assert(cp_wait_rejected(w, "auth_failed", 1) >= 1);
    free(msg);
    free(plain);
    /* A genuine report of a node of its own, then the same bytes again. */
    rep.node_id = "intruder";
    plain = pack_report(&rep, &len);
    msg = sealed(kr, SEAL_KIND_REPORT, plain, len);
    ck_assert_int_eq(nn_send(push, msg, len + SEAL_OVERHEAD, 0), (int)(len + SEAL_OVERHEAD));
    ck_assert_int_eq(nn_send(push, msg, len + SEAL_OVERHEAD, 0), (int)(len + SEAL_OVERHEAD));
    ck_assert(cp_wait_rejected(w, "replay", 1) >= 1);
    free(msg);
    free(plain);
    rep.seq = 2;
    rep.sent_unix_ms = wall_ms() - 10 * 60 * 1000; /* outside the window */
    plain = pack_report(&rep, &len);
    msg = sealed(kr, SEAL_KIND_REPORT, plain, len);
    ck_assert_int_eq(nn_send(push, msg, len + SEAL_OVERHEAD, 0), (int)(len + SEAL_OVERHEAD));
    ck_assert(cp_wait_rejected(w, "replay", 2) >= 2);
    free(msg);
    free(plain);
    /* a report as a snapshot: sealed right, but of the wrong kind */
    msg = sealed(kr, SEAL_KIND_SNAPSHOT, (const uint8_t *)"x", 1);
    ck_assert_int_eq(nn_send(push, msg, 1 + SEAL_OVERHEAD, 0), (int)(1 + SEAL_OVERHEAD));
    ck_assert(cp_wait_rejected(w, "wrong_kind", 1) >= 1);
    free(msg);
    nn_close(push);

    /* The forged generation never showed up as dp0's. */
    struct e2e_dp_status st[4];
    int n = e2e_cp_dataplanes(w, st, 4, NULL, NULL);
    ck_assert_int_ge(n, 1);
    for (int i = 0; i < n; i++)
        if (strcmp(st[i].node_id, "dp0") == 0)
            ck_assert_int_eq(st[i].applied_generation, gen);

    /* A rogue REQ gets no answer at all, sealed with a wrong key or not. */
    endpoint(ep, sizeof(ep), port + 1);
    int req = nn_open(NN_REQ, ep, false);
    Lb__V1__SyncRequest sr = LB__V1__SYNC_REQUEST__INIT;
    sr.node_id = "intruder";
    uint8_t rq[64];
    size_t rql = lb__v1__sync_request__pack(&sr, rq);
    double before = cp_wait_rejected(w, "unsealed", 0);
    ck_assert_int_eq(nn_send(req, rq, rql, 0), (int)rql);
    ck_assert(cp_wait_rejected(w, "unsealed", before + 1) >= before + 1);
    void *answer = NULL;
    ck_assert_int_lt(nn_recv(req, &answer, NN_MSG, 0), 0);
    struct seal_keyring *wrong = ring("1 " HEX_B);
    msg = sealed(wrong, SEAL_KIND_SYNC_REQUEST, rq, rql);
    ck_assert_int_eq(nn_send(req, msg, rql + SEAL_OVERHEAD, 0), (int)(rql + SEAL_OVERHEAD));
    ck_assert(cp_wait_rejected(w, "auth_failed", 2) >= 2);
    ck_assert_int_lt(nn_recv(req, &answer, NN_MSG, 0), 0);
    free(msg);
    nn_close(req);
    seal_keyring_free(wrong);

    /* The legitimate data plane refused nothing and still serves. */
    char *m = e2e_cp_scrape(w);
    ck_assert_ptr_nonnull(m);
    ck_assert_msg(e2e_metric(m, "lb_feed_rejected_total", NULL) == 0, "%s", m);
    ck_assert(e2e_metric(m, "lb_snapshot_generation", NULL) == (double)gen);
    free(m);
    get_ok(w);
    seal_keyring_free(kr);
    e2e_cp_stop(w);
    dir_remove();
}
END_TEST

/* ---- a data plane fed by a rogue publisher ---------------------------------------- */

struct fake {
    int pub, rep, pull;
    unsigned fe_port, m_port;
};

static uint8_t *snapshot_bytes(const struct fake *f, uint64_t gen, size_t *len)
{
    Lb__V1__Snapshot s = LB__V1__SNAPSHOT__INIT;
    Lb__V1__Frontend fe = LB__V1__FRONTEND__INIT;
    Lb__V1__Backend be = LB__V1__BACKEND__INIT;
    Lb__V1__Timeouts to = LB__V1__TIMEOUTS__INIT;
    Lb__V1__Frontend *fes[] = {&fe};
    Lb__V1__Backend *bes[] = {&be};
    s.config_version = gen;
    s.generation = gen;
    s.created_unix_ms = wall_ms();
    fe.name = "web";
    fe.bind_address = "127.0.0.1";
    fe.port = f->fe_port;
    s.n_frontends = 1;
    s.frontends = fes;
    be.id = "b0";
    be.host = "127.0.0.1";
    be.port = 1;
    be.weight = 1;
    be.url = "http://127.0.0.1:1";
    s.n_backends = 1;
    s.backends = bes;
    to.drain_ms = 2000;
    s.timeouts = &to;
    *len = lb__v1__snapshot__get_packed_size(&s);
    uint8_t *buf = malloc(*len);
    ck_assert_ptr_nonnull(buf);
    lb__v1__snapshot__pack(&s, buf);
    return buf;
}

/* Publishes <msg> every 100 ms until the data plane's refusals for <reason>
 * reach <min> (or, for NULL, until it serves generation <min>). */
static void publish_until(struct fake *f, const uint8_t *msg, size_t len, const char *reason,
                          double min)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    double v = NAN;
    while (e2e_now_ms() < deadline) {
        ck_assert_int_eq(nn_send(f->pub, msg, len, 0), (int)len);
        char *m = e2e_scrape_port(f->m_port);
        if (m != NULL) {
            v = reason ? rejected(m, reason) : e2e_metric(m, "lb_snapshot_generation", NULL);
            free(m);
            if (v >= min)
                return;
        }
        e2e_poll_pause(100);
    }
    ck_abort_msg("%s stayed at %g, wanted %g", reason ? reason : "generation", v, min);
}

START_TEST(dataplane_refuses_rogue_publisher)
{
    dir_make();
    write_file("feed.key", KEY_A, 0600);
    char base[64], ep[64], key[128], log[128], mlisten[32];
    unsigned port;
    feed_base(base, sizeof(base), &port);
    struct fake f = {.fe_port = e2e_free_port(), .m_port = e2e_free_port()};
    endpoint(ep, sizeof(ep), port);
    f.pub = nn_open(NN_PUB, ep, true);
    endpoint(ep, sizeof(ep), port + 1);
    f.rep = nn_open(NN_REP, ep, true);
    endpoint(ep, sizeof(ep), port + 2);
    f.pull = nn_open(NN_PULL, ep, true);
    in_dir(key, sizeof(key), "feed.key");
    in_dir(log, sizeof(log), "dp.log");
    snprintf(mlisten, sizeof(mlisten), "127.0.0.1:%u", f.m_port);
    char *argv[] = {LB_BUILD_DIR "/lb-dataplane",
                    "--control",
                    base,
                    "--feed-key",
                    key,
                    "--node-id",
                    "fed",
                    "--workers",
                    "1",
                    "--metrics-listen",
                    mlisten,
                    NULL};
    pid_t dp = e2e_spawn(argv, log);
    ck_assert_int_gt(dp, 0);

    struct seal_keyring *kr = ring(KEY_A);
    /* Its start-up sync request is sealed. */
    void *m = NULL;
    int n = -1;
    for (uint64_t end = e2e_now_ms() + e2e_timeout_ms(); n < 0 && e2e_now_ms() < end;)
        n = nn_recv(f.rep, &m, NN_MSG, 0);
    ck_assert_int_gt(n, 0);
    const uint8_t *plain;
    size_t plen;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SYNC_REQUEST, m, (size_t)n, &plain, &plen, NULL),
                     SEAL_OK);
    Lb__V1__SyncRequest *sr = lb__v1__sync_request__unpack(NULL, plen, plain);
    ck_assert_ptr_nonnull(sr);
    ck_assert_str_eq(sr->node_id, "fed");
    lb__v1__sync_request__free_unpacked(sr, NULL);
    nn_freemsg(m);

    size_t len;
    uint8_t *snap5 = snapshot_bytes(&f, 5, &len);
    uint8_t *msg = sealed(kr, SEAL_KIND_SNAPSHOT, snap5, len);
    publish_until(&f, msg, len + SEAL_OVERHEAD, NULL, 5);
    free(msg);

    /* Its reports are sealed, carry a boot id and a growing seq. */
    uint64_t boot = 0, seq = 0;
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    for (int got = 0; got < 2;) {
        ck_assert_msg(e2e_now_ms() < end, "%d sealed reports in time, wanted 2", got);
        n = nn_recv(f.pull, &m, NN_MSG, 0);
        if (n < 0)
            continue;
        ck_assert_int_eq(seal_open(kr, SEAL_KIND_REPORT, m, (size_t)n, &plain, &plen, NULL),
                         SEAL_OK);
        Lb__V1__Report *r = lb__v1__report__unpack(NULL, plen, plain);
        ck_assert_ptr_nonnull(r);
        ck_assert_uint_ne(r->boot_id, 0);
        ck_assert(boot == 0 || r->boot_id == boot);
        ck_assert_uint_gt(r->seq, seq);
        boot = r->boot_id;
        seq = r->seq;
        lb__v1__report__free_unpacked(r, NULL);
        nn_freemsg(m);
        got++;
    }

    /* Unsealed, wrong key, unknown key id, wrong kind, replayed older. */
    uint8_t *snap6 = snapshot_bytes(&f, 6, &len);
    publish_until(&f, snap6, len, "unsealed", 1);
    struct seal_keyring *wrong = ring("1 " HEX_B), *other = ring(KEY_B);
    msg = sealed(wrong, SEAL_KIND_SNAPSHOT, snap6, len);
    publish_until(&f, msg, len + SEAL_OVERHEAD, "auth_failed", 1);
    free(msg);
    msg = sealed(other, SEAL_KIND_SNAPSHOT, snap6, len);
    publish_until(&f, msg, len + SEAL_OVERHEAD, "unknown_key", 1);
    free(msg);
    msg = sealed(kr, SEAL_KIND_SYNC_REPLY, snap6, len);
    publish_until(&f, msg, len + SEAL_OVERHEAD, "wrong_kind", 1);
    free(msg);
    size_t len3;
    uint8_t *snap3 = snapshot_bytes(&f, 3, &len3);
    msg = sealed(kr, SEAL_KIND_SNAPSHOT, snap3, len3);
    publish_until(&f, msg, len3 + SEAL_OVERHEAD, "replay", 1);
    free(msg);
    free(snap3);
    char *text = e2e_scrape_port(f.m_port);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(e2e_metric(text, "lb_snapshot_generation", NULL) == 5, "%s", text);
    free(text);
    ck_assert(file_has(log, "feed_rejected"));
    ck_assert(!file_has(log, HEX_A) && !file_has(log, HEX_B));

    /* Sealed right, it still moves on. */
    msg = sealed(kr, SEAL_KIND_SNAPSHOT, snap6, len);
    publish_until(&f, msg, len + SEAL_OVERHEAD, NULL, 6);
    free(msg);

    int status = e2e_kill(dp);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(snap5);
    free(snap6);
    seal_keyring_free(kr);
    seal_keyring_free(wrong);
    seal_keyring_free(other);
    nn_close(f.pub);
    nn_close(f.rep);
    nn_close(f.pull);
    dir_remove();
}
END_TEST

/* ---- start-up policy ------------------------------------------------------------------ */

START_TEST(tcp_needs_key_or_insecure)
{
    dir_make();
    char base[64], db[128], run[128], key[128];
    unsigned port;
    feed_base(base, sizeof(base), &port);
    in_dir(db, sizeof(db), "lb.db");
    in_dir(run, sizeof(run), "run");
    in_dir(key, sizeof(key), "open.key");
    struct e2e_cmd r;
    char *cp[] = {LB_BUILD_DIR "/lb-controlplane",
                  "--db",
                  db,
                  "--runtime-dir",
                  run,
                  "--control",
                  base,
                  NULL,
                  NULL,
                  NULL};
    ck_assert_int_eq(e2e_cmd_run(cp, NULL, &r), 1);
    ck_assert_msg(strstr(r.err, "--feed-key") && strstr(r.err, "--feed-insecure"), "%s", r.err);
    e2e_cmd_free(&r);
    char *dp[] = {LB_BUILD_DIR "/lb-dataplane", "--control", base, NULL, NULL, NULL};
    ck_assert_int_eq(e2e_cmd_run(dp, NULL, &r), 1);
    ck_assert_msg(strstr(r.err, "--feed-key") && strstr(r.err, "--feed-insecure"), "%s", r.err);
    e2e_cmd_free(&r);
    /* a key file others may read is refused, by name */
    write_file("open.key", KEY_A, 0640);
    cp[7] = "--feed-key";
    cp[8] = key;
    ck_assert_int_eq(e2e_cmd_run(cp, NULL, &r), 1);
    ck_assert_msg(strstr(r.err, key) && strstr(r.err, "0640") && !strstr(r.err, HEX_A), "%s",
                  r.err);
    e2e_cmd_free(&r);
    dp[3] = "--feed-key";
    dp[4] = key;
    ck_assert_int_eq(e2e_cmd_run(dp, NULL, &r), 1);
    ck_assert_msg(strstr(r.err, key) && strstr(r.err, "chmod 600"), "%s", r.err);
    e2e_cmd_free(&r);

    static char *insecure[] = {"--feed-insecure", NULL};
    static char base2[64];
    feed_base(base2, sizeof(base2), &port);
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true, .control = base2};
    o.cp_args = insecure;
    o.dp_args = insecure;
    struct e2e_cp *w = e2e_cp_start(&o);
    get_ok(w);
    ck_assert(dp_metric(w, "lb_feed_insecure", NULL) == 1);
    ck_assert(dp_metric(w, "lb_feed_sealed", NULL) == 0);
    char *m = cp_metrics(w);
    ck_assert_msg(e2e_metric(m, "lb_feed_insecure", NULL) == 1, "%s", m);
    free(m);
    ck_assert(e2e_cp_dataplane_log_has(w, 0, "\"feed_insecure\"", e2e_timeout_ms()));
    char cplog[256];
    e2e_cp_path(w, "cp.log", cplog, sizeof(cplog));
    ck_assert(file_has(cplog, "\"feed_insecure\""));
    e2e_cp_stop(w);
    dir_remove();
}
END_TEST

/* Under systemd the credential feed.key ($CREDENTIALS_DIRECTORY, what the
 * shipped units' LoadCredential= hands over) stands for --feed-key; a blank
 * one (their SetCredential= fallback) is no key. */
START_TEST(credential_stands_for_feed_key)
{
    dir_make();
    char creds[128], base[64], db[128], run[128];
    in_dir(creds, sizeof(creds), "creds");
    ck_assert_int_eq(mkdir(creds, 0700), 0);
    write_file("creds/feed.key", "\n", 0400);
    ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", creds, 1), 0);
    unsigned port;
    feed_base(base, sizeof(base), &port);
    in_dir(db, sizeof(db), "lb.db");
    in_dir(run, sizeof(run), "run");
    struct e2e_cmd r;
    char *cp[] = {
        LB_BUILD_DIR "/lb-controlplane", "--db", db, "--runtime-dir", run, "--control", base, NULL};
    ck_assert_int_eq(e2e_cmd_run(cp, NULL, &r), 1);
    ck_assert_msg(strstr(r.err, "--feed-key") && strstr(r.err, "--feed-insecure"), "%s", r.err);
    e2e_cmd_free(&r);

    write_file("creds/feed.key", KEY_A, 0400);
    static char base2[64];
    feed_base(base2, sizeof(base2), &port);
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true, .control = base2};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_eq(unsetenv("CREDENTIALS_DIRECTORY"), 0);
    get_ok(w);
    ck_assert(dp_metric(w, "lb_feed_sealed", NULL) == 1);
    char *m = cp_metrics(w);
    ck_assert_msg(e2e_metric(m, "lb_feed_sealed", NULL) == 1, "%s", m);
    free(m);
    e2e_cp_stop(w);
    dir_remove();
}
END_TEST

/* ---- rotation ------------------------------------------------------------------------- */

static void hup_and_wait(pid_t pid, const char *log, const char *needle)
{
    ck_assert_int_eq(kill(pid, SIGHUP), 0);
    ck_assert_msg(wait_file_has(log, needle), "%s never logged %s", log, needle);
}

/* Changes the config through lbctl and waits until the data plane serves it
 * (the milliseconds that took are returned) and reports so. */
static uint64_t change_and_wait(struct e2e_cp *w, const char *weight)
{
    struct e2e_cmd r;
    uint64_t t0 = e2e_now_ms();
    ck_assert_msg(e2e_cp_lbctl(w, &r, "backends", "update", "b0", "--weight", weight, NULL) == 0,
                  "%s", r.err);
    e2e_cmd_free(&r);
    long version = 0, gen = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, &version, &gen), 0);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (dp_metric(w, "lb_snapshot_generation", NULL) < (double)gen) {
        ck_assert_msg(e2e_now_ms() < deadline, "generation %ld never served", gen);
        e2e_poll_pause(2);
    }
    uint64_t took = e2e_now_ms() - t0;
    /* and its reports, sealed as they are now, reach the control plane */
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 1, NULL), gen);
    return took;
}

/* Keep-alive clients on the world's frontend until load_stop(). */
static pid_t load_start(struct e2e_cp *w)
{
    char port[16], out[256];
    snprintf(port, sizeof(port), "%u", e2e_cp_frontend_port(w));
    e2e_cp_path(w, "load.out", out, sizeof(out));
    char *argv[] = {
        LB_BUILD_DIR "/lb-faultload", "--port", port, "--clients", "4", "--seconds", "600", NULL};
    pid_t pid = e2e_spawn(argv, out);
    ck_assert_int_gt(pid, 0);
    return pid;
}

/* Stops the clients (SIGINT: they finish what is in flight) and asserts
 * that every request they made succeeded. */
static void load_stop(struct e2e_cp *w, pid_t pid)
{
    int st;
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    ck_assert_msg(e2e_wait_exit(pid, e2e_timeout_ms(), &st), "lb-faultload hangs");
    char path[256], text[4096] = "";
    e2e_cp_path(w, "load.out", path, sizeof(path));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    long total = 0, failed = -1;
    ck_assert_msg(e2e_json_long(text, "total", &total) && e2e_json_long(text, "failed", &failed),
                  "%s", text);
    fprintf(stderr, "feed_seal: rotation under load: %ld requests, %ld failed\n", total, failed);
    ck_assert_msg(total > 0 && failed == 0, "%s", text);
}

START_TEST(rotation_with_traffic)
{
    dir_make();
    write_file("cp.key", KEY_A, 0600);
    write_file("dp.key", KEY_A, 0600);
    static char base[64], cpkey[128], dpkey[128];
    unsigned port;
    feed_base(base, sizeof(base), &port);
    in_dir(cpkey, sizeof(cpkey), "cp.key");
    in_dir(dpkey, sizeof(dpkey), "dp.key");
    static char *cp_args[] = {"--feed-key", cpkey, NULL};
    static char *dp_args[] = {"--feed-key", dpkey, NULL};
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true, .control = base};
    o.cp_args = cp_args;
    o.dp_args = dp_args;
    struct e2e_cp *w = e2e_cp_start(&o);
    char cplog[256], dplog[256];
    e2e_cp_path(w, "cp.log", cplog, sizeof(cplog));
    e2e_cp_path(w, "dp0.log", dplog, sizeof(dplog));
    pid_t cp = e2e_cp_controlplane_pid(w), dp = e2e_cp_dataplane_pid(w, 0);
    get_ok(w);
    fprintf(stderr, "feed_seal: sealed tcp:// propagation %llu ms\n",
            (unsigned long long)change_and_wait(w, "2"));
    pid_t load = load_start(w);

    /* 1: the new key everywhere as a second line */
    write_file("dp.key", KEY_A KEY_B, 0600);
    hup_and_wait(dp, dplog, "2 keys, sealing with key id 1");
    get_ok(w);
    write_file("cp.key", KEY_A KEY_B, 0600);
    hup_and_wait(cp, cplog, "2 keys, sealing with key id 1");
    get_ok(w);
    change_and_wait(w, "3");
    /* 2: the new key first, on the control plane (it seals snapshots with
     * it), then on the data plane (its requests and reports) */
    write_file("cp.key", KEY_B KEY_A, 0600);
    hup_and_wait(cp, cplog, "2 keys, sealing with key id 2");
    get_ok(w);
    change_and_wait(w, "4");
    write_file("dp.key", KEY_B KEY_A, 0600);
    hup_and_wait(dp, dplog, "2 keys, sealing with key id 2");
    get_ok(w);
    /* 3: the old key dropped everywhere, the control plane first */
    write_file("cp.key", KEY_B, 0600);
    hup_and_wait(cp, cplog, "1 keys, sealing with key id 2");
    get_ok(w);
    write_file("dp.key", KEY_B, 0600);
    hup_and_wait(dp, dplog, "1 keys, sealing with key id 2");
    change_and_wait(w, "5");
    get_ok(w);
    /* a bad key file on reload keeps the keys in use */
    write_file("dp.key", KEY_B, 0644);
    hup_and_wait(dp, dplog, "feed_key_reload_failed");
    change_and_wait(w, "6");
    get_ok(w);

    load_stop(w, load);
    /* Nothing was refused on either side, reports included. */
    ck_assert(dp_metric(w, "lb_feed_rejected_total", NULL) == 0);
    char *m = cp_metrics(w);
    ck_assert_msg(e2e_metric(m, "lb_feed_rejected_total", NULL) == 0, "%s", m);
    free(m);
    e2e_cp_stop(w);
    dir_remove();
}
END_TEST

START_TEST(unsealed_ipc_latency)
{
    /* today's feed, for the propagation time the sealed one is compared to */
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    fprintf(stderr, "feed_seal: unsealed ipc:// propagation %llu ms\n",
            (unsigned long long)change_and_wait(w, "2"));
    ck_assert(dp_metric(w, "lb_feed_sealed", NULL) == 0);
    ck_assert(dp_metric(w, "lb_feed_insecure", NULL) == 0);
    e2e_cp_stop(w);
}
END_TEST

static Suite *feed_seal_suite(void)
{
    Suite *s = suite_create("feed_seal");
    TCase *tc = e2e_tcase("sealed");
    tcase_add_test(tc, sealed_feed_refuses_rogues);
    tcase_add_test(tc, dataplane_refuses_rogue_publisher);
    tcase_add_test(tc, tcp_needs_key_or_insecure);
    tcase_add_test(tc, credential_stands_for_feed_key);
    tcase_add_test(tc, rotation_with_traffic);
    tcase_add_test(tc, unsealed_ipc_latency);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(feed_seal_suite());
}
