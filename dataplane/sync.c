/* dataplane/sync.c */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bshared.h"
#include "dp.h"
#include "lb.pb-c.h"
#include "lb_endpoints.h"
#include "lb_err.h"
#include "lb_log.h"
#include "metrics.h"
#include "seal.h"
#include "snapshot.h"
#include "worker.h"

#define REPORT_SECONDS 1.0
#define RESYNC_SECONDS 15.0 /* no feed for this long: ask again */
#define MAX_MESSAGE    (64 << 20)
#define CACHE_NAME     "snapshot.bin"

struct sync {
    struct ev_loop *loop;
    struct dp *dp;
    sync_apply_fn apply;
    void *ctx;
    char *node_id;
    char *state_dir;
    char pub[LB_ENDPOINT_MAX];
    char rep[LB_ENDPOINT_MAX];
    char pull[LB_ENDPOINT_MAX];
    int sub;
    int req;
    int push;
    ev_io sub_io;
    ev_io req_io;
    ev_timer report;
    bool req_pending;
    double last_feed; /* ev_now of the last snapshot message */
    uint64_t applied_version;
    uint64_t applied_generation;
    uint64_t rejected_generation;
    char rejection[200];
    int64_t started_ms;
    const struct seal_keyring *keys; /* NULL: the feed is not sealed */
    bool insecure;
    struct seal_counts feed; /* refused messages by reason */
    uint64_t boot_id;        /* random per process; reports carry it ... */
    uint64_t seq;            /* ... and this, one more per report */
    uint64_t skipped[2];     /* generations meant for other nodes (staged rollout) */
    char host[256];          /* this machine's name, for reports */
    unsigned next_skip;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sync_save_cached(const char *state_dir, const uint8_t *buf, size_t len, struct lb_err *err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", state_dir, CACHE_NAME);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    /* the snapshot holds TLS private keys: the service user's alone */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "cannot write %s", tmp);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return lb_err_set(err, LB_ESYS, e, "cannot write %s", tmp);
        }
        off += (size_t)n;
    }
    if (fsync(fd) == -1 || close(fd) == -1) {
        int e = errno;
        unlink(tmp);
        return lb_err_set(err, LB_ESYS, e, "cannot sync %s", tmp);
    }
    if (rename(tmp, path) == -1) {
        int e = errno;
        unlink(tmp);
        return lb_err_set(err, LB_ESYS, e, "cannot rename %s to %s", tmp, path);
    }
    return LB_OK;
}

int sync_load_cached(const char *state_dir, struct snap **out, struct lb_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", state_dir, CACHE_NAME);
    if (access(path, F_OK) == -1 && errno == ENOENT)
        return LB_ENOTFOUND;
    return snapshot_load_file(path, out, err);
}

static void sync_send_report(struct sync *s);

/* Counts a refused message and logs it unless this reason was logged lately. */
static void feed_refuse(struct sync *s, enum seal_status why, const char *from, const char *detail)
{
    uint64_t more = 0;
    if (seal_counts_add(&s->feed, why, now_ms(), &more))
        lb_log(LB_LOG_WARN, "feed_rejected",
               "message from %s refused: %s%s; generation %llu keeps serving (%llu refused for "
               "this reason, %llu not logged since the last line)",
               from, seal_status_name(why), detail, (unsigned long long)s->applied_generation,
               (unsigned long long)s->feed.n[why], (unsigned long long)more);
}

/* Opens a sealed message in place; unsealed feeds pass it through. False
 * when refused (counted and logged). */
static bool feed_open(struct sync *s, enum seal_kind kind, uint8_t *msg, size_t n,
                      const uint8_t **body, size_t *len, const char *from)
{
    *body = msg;
    *len = n;
    if (s->keys == NULL)
        return true;
    enum seal_status st = seal_open(s->keys, kind, msg, n, body, len, NULL);
    if (st == SEAL_OK)
        return true;
    feed_refuse(s, st, from, "");
    return false;
}

/* Sends <buf>[0..len) as <kind> on <sock>, sealed when the feed is. */
static int feed_send(struct sync *s, int sock, enum seal_kind kind, const uint8_t *buf, size_t len)
{
    if (s->keys == NULL)
        return nn_send(sock, buf, len, NN_DONTWAIT);
    uint8_t *sealed = malloc(len + SEAL_OVERHEAD);
    struct lb_err err = {0};
    if (sealed == NULL || seal_seal(s->keys, kind, buf, len, sealed, &err) != LB_OK) {
        free(sealed);
        lb_log(LB_LOG_WARN, "feed_seal_failed", "%s", sealed ? err.msg : "out of memory");
        return -1;
    }
    int rc = nn_send(sock, sealed, len + SEAL_OVERHEAD, NN_DONTWAIT);
    free(sealed);
    return rc;
}

static void sync_reject(struct sync *s, uint64_t gen, const char *from, const char *why)
{
    s->rejected_generation = gen;
    snprintf(s->rejection, sizeof(s->rejection), "%s", why);
    lb_log(LB_LOG_ERROR, "snapshot_rejected",
           "generation %llu from %s refused: %s; generation %llu keeps serving",
           (unsigned long long)gen, from, why, (unsigned long long)s->applied_generation);
    sync_send_report(s);
}

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t byte = *(*p)++;
        r |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* The generation (Snapshot field 2) of the encoded snapshot <buf>, read off
 * its top-level fields without decoding anything: a re-publication or a
 * replay is then dropped before any allocation. False when the bytes do
 * not walk as protobuf or carry no generation (the full decode judges). */
static bool peek_generation(const uint8_t *buf, size_t len, uint64_t *gen)
{
    const uint8_t *p = buf, *end = buf + len;
    bool found = false;
    while (p < end) {
        uint64_t key, v;
        if (!get_varint(&p, end, &key))
            return false;
        switch (key & 7) {
        case 0: /* varint; the last occurrence wins, as in a decode */
            if (!get_varint(&p, end, &v))
                return false;
            if (key >> 3 == 2) {
                *gen = v;
                found = true;
            }
            break;
        case 1: /* 64-bit */
            if (end - p < 8)
                return false;
            p += 8;
            break;
        case 2: /* length-delimited */
            if (!get_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            p += v;
            break;
        case 5: /* 32-bit */
            if (end - p < 4)
                return false;
            p += 4;
            break;
        default:
            return false;
        }
    }
    return found;
}

static void sync_refuse_older(struct sync *s, uint64_t gen, const char *from)
{
    /* an old message replayed, or a control plane that went back in time */
    char detail[96];
    snprintf(detail, sizeof(detail), ": generation %llu is older than the one serving",
             (unsigned long long)gen);
    feed_refuse(s, SEAL_REPLAY, from, detail);
}

static bool node_listed(char **ids, size_t n, const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], node) == 0)
            return true;
    return false;
}

/* True when <buf> is a snapshot meant for other data planes during a staged
 * rollout (only_nodes without us, or except_nodes with us): it is neither
 * applied nor refused, and its generation is remembered so that its
 * re-publications cost nothing. The lists are inside the sealed message, so
 * nobody without the key can retarget one. */
static bool sync_not_for_me(struct sync *s, const uint8_t *buf, size_t len, uint64_t peeked)
{
    if (peeked != 0 && (peeked == s->skipped[0] || peeked == s->skipped[1]))
        return true;
    Lb__V1__Snapshot *pb = lb__v1__snapshot__unpack(NULL, len, buf);
    if (pb == NULL)
        return false; /* the full decode judges */
    bool skip =
        (pb->n_only_nodes > 0 && !node_listed(pb->only_nodes, pb->n_only_nodes, s->node_id)) ||
        node_listed(pb->except_nodes, pb->n_except_nodes, s->node_id);
    if (skip && pb->generation != 0) {
        s->skipped[s->next_skip++ % 2] = pb->generation;
        lb_log(LB_LOG_DEBUG, "snapshot_not_for_node",
               "generation %llu is staged for other data planes; generation %llu keeps serving",
               (unsigned long long)pb->generation, (unsigned long long)s->applied_generation);
    }
    lb__v1__snapshot__free_unpacked(pb, NULL);
    return skip;
}

/* Validates and applies the snapshot in <buf>; records the outcome. */
static void sync_consider(struct sync *s, const uint8_t *buf, size_t len, const char *from)
{
    struct snap *snap = NULL;
    struct lb_err err = {0};
    uint64_t peeked = 0;
    if (peek_generation(buf, len, &peeked) && peeked != 0 &&
        (peeked == s->applied_generation || peeked == s->rejected_generation))
        return; /* the periodic re-publish */
    if (sync_not_for_me(s, buf, len, peeked))
        return;
    if (peeked != 0) {
        if (peeked < s->applied_generation) {
            sync_refuse_older(s, peeked, from);
            return;
        }
        if (peeked == s->applied_generation || peeked == s->rejected_generation)
            return; /* the periodic re-publish */
    }
    if (snapshot_decode(buf, len, &snap, &err) != LB_OK) {
        /* the generation is what the control plane shows next to the reason */
        Lb__V1__Snapshot *pb = lb__v1__snapshot__unpack(NULL, len, buf);
        uint64_t gen = pb ? pb->generation : 0;
        if (pb)
            lb__v1__snapshot__free_unpacked(pb, NULL);
        if (gen != 0 && gen == s->rejected_generation)
            return; /* the periodic re-publish of one we refused already */
        sync_reject(s, gen, from, err.msg);
        return;
    }
    uint64_t gen = snap->generation;
    if (gen < s->applied_generation) {
        sync_refuse_older(s, gen, from);
        snap_unref(snap);
        return;
    }
    if (gen == s->applied_generation || gen == s->rejected_generation) {
        snap_unref(snap); /* the periodic re-publish */
        return;
    }
    if (s->apply(s->ctx, snap, &err) != LB_OK) {
        sync_reject(s, gen, from, err.msg);
        return;
    }
    if (s->state_dir != NULL && sync_save_cached(s->state_dir, buf, len, &err) != LB_OK)
        lb_log(LB_LOG_WARN, "snapshot_cache_failed", "%s", err.msg);
    s->rejected_generation = 0;
    s->rejection[0] = '\0';
}

static void sync_on_sub(struct ev_loop *loop, ev_io *io, int revents)
{
    struct sync *s = io->data;
    for (int i = 0; i < 16; i++) {
        void *msg = NULL;
        int n = nn_recv(s->sub, &msg, NN_MSG, NN_DONTWAIT);
        if (n < 0)
            return;
        const uint8_t *body;
        size_t len;
        if (feed_open(s, SEAL_KIND_SNAPSHOT, msg, (size_t)n, &body, &len, "the feed")) {
            s->last_feed = ev_now(loop);
            sync_consider(s, body, len, "the feed");
        }
        nn_freemsg(msg);
    }
}

void sync_request(struct sync *s)
{
    Lb__V1__SyncRequest rq = LB__V1__SYNC_REQUEST__INIT;
    rq.node_id = s->node_id;
    rq.have_generation = s->applied_generation;
    size_t len = lb__v1__sync_request__get_packed_size(&rq);
    uint8_t buf[512];
    if (len > sizeof(buf))
        return;
    lb__v1__sync_request__pack(&rq, buf);
    /* a REQ socket drops the old request when a new one is sent */
    if (feed_send(s, s->req, SEAL_KIND_SYNC_REQUEST, buf, len) < 0) {
        lb_log(LB_LOG_WARN, "sync_request_failed", "%s: %s", s->rep, nn_strerror(nn_errno()));
        return;
    }
    s->req_pending = true;
}

static void sync_on_req(struct ev_loop *loop, ev_io *io, int revents)
{
    struct sync *s = io->data;
    void *msg = NULL;
    int n = nn_recv(s->req, &msg, NN_MSG, NN_DONTWAIT);
    if (n < 0)
        return;
    s->req_pending = false;
    const uint8_t *body;
    size_t len;
    if (!feed_open(s, SEAL_KIND_SYNC_REPLY, msg, (size_t)n, &body, &len, "the start-up sync")) {
        nn_freemsg(msg);
        return;
    }
    s->last_feed = ev_now(loop);
    Lb__V1__SyncReply *rp = lb__v1__sync_reply__unpack(NULL, len, body);
    if (rp == NULL) {
        lb_log(LB_LOG_WARN, "sync_reply_invalid", "%d bytes from %s are not a SyncReply", n,
               s->rep);
    } else if (rp->error != NULL && rp->error[0] != '\0') {
        lb_log(LB_LOG_WARN, "sync_refused", "the control plane has no snapshot: %s", rp->error);
    } else if (rp->snapshot != NULL) {
        size_t snap_len = lb__v1__snapshot__get_packed_size(rp->snapshot);
        uint8_t *buf = malloc(snap_len ? snap_len : 1);
        if (buf != NULL) {
            lb__v1__snapshot__pack(rp->snapshot, buf);
            sync_consider(s, buf, snap_len, "the start-up sync");
            free(buf);
        }
    }
    if (rp != NULL)
        lb__v1__sync_reply__free_unpacked(rp, NULL);
    nn_freemsg(msg);
}

static void sync_send_report(struct sync *s)
{
    struct dp *dp = s->dp;
    struct snap *snap = dp_snapshot(dp);
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = s->node_id;
    r.applied_version = s->applied_version;
    r.applied_generation = s->applied_generation;
    r.rejected_generation = s->rejected_generation;
    r.rejection_reason = s->rejection;
    r.sent_unix_ms = now_ms();
    r.pid = (uint32_t)getpid();
    r.started_unix_ms = s->started_ms;
    r.boot_id = s->boot_id;
    r.seq = ++s->seq;
    r.binary_version = (char *)LB_VERSION;
    r.host = s->host;
    uint32_t nf = snap != NULL ? snap->n_frontends : 0;
    char **listeners = calloc(nf ? nf : 1, sizeof(*listeners));
    for (uint32_t i = 0; listeners != NULL && i < nf; i++)
        listeners[r.n_listeners++] = snap->frontends[i].key;
    r.listeners = listeners;
    uint32_t nb = snap && dp->n_workers ? snap->n_backends : 0;
    Lb__V1__BackendReport *brs = calloc(nb ? nb : 1, sizeof(*brs));
    Lb__V1__BackendReport **brp = calloc(nb ? nb : 1, sizeof(*brp));
    const char **ids = calloc(nb ? nb : 1, sizeof(*ids));
    struct metrics_be_totals *tot = calloc(nb ? nb : 1, sizeof(*tot));
    struct metrics_worker **ws = calloc(dp->n_workers ? dp->n_workers : 1, sizeof(*ws));
    if (brs && brp && ids && tot && ws) {
        for (unsigned i = 0; i < dp->n_workers; i++)
            ws[i] = &dp->workers[i].metrics;
        for (uint32_t i = 0; i < nb; i++)
            ids[i] = snap->backends[i].id;
        metrics_backend_totals(ws, dp->n_workers, ids, nb, tot);
        for (uint32_t i = 0; i < nb; i++) {
            lb__v1__backend_report__init(&brs[i]);
            brs[i].id = (char *)ids[i];
            brs[i].requests = tot[i].requests;
            brs[i].errors = tot[i].errors;
            brs[i].connect_failures = tot[i].connect_failures;
            brs[i].timeouts = tot[i].timeouts;
            brs[i].effective_weight = snap->backends[i].weight;
            brs[i].latency_sum_us = tot[i].duration_us;
            brs[i].active = (uint32_t)tot[i].active;
            brs[i].n_latency_buckets = METRICS_NBUCKETS + 1;
            brs[i].latency_buckets = tot[i].hist;
            struct bshared *sh = dp->backends ? bshared_registry_find(dp->backends, ids[i]) : NULL;
            if (sh != NULL) {
                if (snap->breaker.enabled)
                    brs[i].breaker =
                        (Lb__V1__BreakerState)breaker_state(sh->breaker, (uint64_t)now_ms());
                brs[i].ejected = eject_is_out(&sh->eject);
                brs[i].ejections = eject_count(&sh->eject);
                brs[i].connections = atomic_load(&sh->q.conns);
                brs[i].queued = atomic_load(&sh->q.queued);
                brs[i].queue_timeouts = atomic_load(&sh->q.timeouts);
                bshared_registry_release(dp->backends, sh);
            }
            brp[i] = &brs[i];
        }
        r.n_backends = nb;
        r.backends = brp;
        size_t len = lb__v1__report__get_packed_size(&r);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf != NULL) {
            lb__v1__report__pack(&r, buf);
            /* PUSH with no peer would queue; a report is only worth its moment */
            feed_send(s, s->push, SEAL_KIND_REPORT, buf, len);
            free(buf);
        }
    }
    free(brs);
    free(brp);
    free(ids);
    free(tot);
    free(ws);
    free(listeners);
    snap_unref(snap);
}

static void sync_on_report(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct sync *s = t->data;
    sync_send_report(s);
    /* the feed re-publishes every few seconds: silence means we missed it
     * (or the control plane is down); asking again costs one message */
    if (ev_now(loop) - s->last_feed > RESYNC_SECONDS && !s->req_pending)
        sync_request(s);
}

void sync_set_keys(struct sync *s, const struct seal_keyring *keys)
{
    s->keys = keys;
}

void sync_prom(const struct sync *s, struct lb_prom *p)
{
    seal_prom(p, &s->feed, s->keys != NULL, s->insecure);
}

void sync_set_applied(struct sync *s, uint64_t version, uint64_t generation)
{
    s->applied_version = version;
    s->applied_generation = generation;
    sync_send_report(s);
}

static int socket_fd(int sock, int option)
{
    int fd = -1;
    size_t sz = sizeof(fd);
    if (nn_getsockopt(sock, NN_SOL_SOCKET, option, &fd, &sz) < 0)
        return -1;
    return fd;
}

static int open_socket(int protocol, const char *endpoint, struct lb_err *err)
{
    int sock = nn_socket(AF_SP, protocol);
    if (sock < 0)
        return -lb_err_set(err, LB_ESYS, nn_errno(), "nanomsg socket for %s", endpoint);
    int max = MAX_MESSAGE;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof(max));
    int ivl = 1000;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_RECONNECT_IVL, &ivl, sizeof(ivl));
    int ivl_max = 5000;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max));
    if (nn_connect(sock, endpoint) < 0) {
        int e = nn_errno();
        nn_close(sock);
        return -lb_err_set(err, LB_EINVAL, 0, "cannot connect to %s: %s", endpoint, nn_strerror(e));
    }
    return sock;
}

struct sync *sync_new(struct ev_loop *loop, const struct sync_config *cfg, struct dp *dp,
                      sync_apply_fn apply, void *ctx, struct lb_err *err)
{
    struct sync *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->dp = dp;
    s->apply = apply;
    s->ctx = ctx;
    s->sub = s->req = s->push = -1;
    s->started_ms = now_ms();
    if (gethostname(s->host, sizeof(s->host) - 1) != 0)
        s->host[0] = '\0';
    s->keys = cfg->keys;
    s->insecure = cfg->insecure;
    /* zero means "no boot id" to the control plane */
    while (s->boot_id == 0)
        if (RAND_bytes((unsigned char *)&s->boot_id, sizeof(s->boot_id)) != 1) {
            lb_err_set(err, LB_ESYS, 0, "no randomness for the report boot id");
            free(s);
            return NULL;
        }
    s->node_id = strdup(cfg->node_id);
    s->state_dir = cfg->state_dir ? strdup(cfg->state_dir) : NULL;
    if (s->node_id == NULL || (cfg->state_dir && s->state_dir == NULL)) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        sync_free(s);
        return NULL;
    }
    if (lb_endpoints_split(cfg->base, s->pub, s->rep, s->pull, err) != LB_OK) {
        sync_free(s);
        return NULL;
    }
    s->sub = open_socket(NN_SUB, s->pub, err);
    if (s->sub >= 0)
        s->req = open_socket(NN_REQ, s->rep, err);
    if (s->req >= 0)
        s->push = open_socket(NN_PUSH, s->pull, err);
    if (s->sub < 0 || s->req < 0 || s->push < 0) {
        sync_free(s);
        return NULL;
    }
    nn_setsockopt(s->sub, NN_SUB, NN_SUB_SUBSCRIBE, "", 0);
    int resend = 2000;
    nn_setsockopt(s->req, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof(resend));
    int linger = 0;
    nn_setsockopt(s->push, NN_SOL_SOCKET, NN_LINGER, &linger, sizeof(linger));
    int sub_fd = socket_fd(s->sub, NN_RCVFD);
    int req_fd = socket_fd(s->req, NN_RCVFD);
    if (sub_fd < 0 || req_fd < 0) {
        lb_err_set(err, LB_ESYS, nn_errno(), "nanomsg receive descriptors");
        sync_free(s);
        return NULL;
    }
    ev_io_init(&s->sub_io, sync_on_sub, sub_fd, EV_READ);
    s->sub_io.data = s;
    ev_io_start(loop, &s->sub_io);
    ev_io_init(&s->req_io, sync_on_req, req_fd, EV_READ);
    s->req_io.data = s;
    ev_io_start(loop, &s->req_io);
    ev_timer_init(&s->report, sync_on_report, REPORT_SECONDS, REPORT_SECONDS);
    s->report.data = s;
    ev_timer_start(loop, &s->report);
    s->last_feed = ev_now(loop);
    sync_request(s);
    return s;
}

void sync_free(struct sync *s)
{
    if (s == NULL)
        return;
    if (s->loop != NULL) {
        ev_io_stop(s->loop, &s->sub_io);
        ev_io_stop(s->loop, &s->req_io);
        ev_timer_stop(s->loop, &s->report);
    }
    if (s->sub >= 0)
        nn_close(s->sub);
    if (s->req >= 0)
        nn_close(s->req);
    if (s->push >= 0)
        nn_close(s->push);
    free(s->node_id);
    free(s->state_dir);
    free(s);
}
