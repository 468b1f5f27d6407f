/* controlplane/publisher.c */
#include "publisher.h"

#include "lb_endpoints.h"
#include "lb_err.h"
#include "lb_log.h"
#include "mem.h"
#include "seal.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A busy socket gives the loop back after this many messages; its fd stays
 * readable, so libev calls again on the next iteration. */
#define BATCH_MAX 64

/* SyncReply field 1 (snapshot), wire type 2 (length-delimited). */
#define SYNC_REPLY_SNAPSHOT_TAG 0x0a
#define VARINT_MAX              10

enum {
    EP_PUB,
    EP_REP,
    EP_PULL,
    EP_COUNT
};

static const char *const ep_role[EP_COUNT] = {"snapshot (PUB)", "sync (REP)", "report (PULL)"};

/* Processes of one node remembered for replay checks (sealed feeds only).
 * More than one: during a restart or an upgrade an old process may still
 * report next to its successor. */
#define NODE_BOOTS 4

struct node_seen {
    char *node_id;
    struct {
        uint64_t boot_id;   /* random per data-plane process */
        uint64_t seq;       /* its newest report accepted */
        int64_t started_ms; /* its start time, as it reports it */
    } boots[NODE_BOOTS];
    size_t n_boots;
    int64_t forgotten_started_ms; /* newest start of a process dropped from <boots>; 0 none */
};

struct bound_file {
    bool made; /* we bound an ipc socket file here and may remove it */
    dev_t dev; /* identity of that file, so that free never removes a successor's */
    ino_t ino;
};

/* The fields of a snapshot being served (struct publisher's and a held one);
 * slot_swap() exchanges them so that one code path serves both. */
struct held {
    uint8_t *reply;
    size_t reply_len;
    size_t snap_off;
    uint64_t generation; /* 0: nothing held */
    uint8_t *sealed_pub;
    size_t sealed_pub_len;
    uint8_t *sealed_reply;
    size_t sealed_reply_len;
    char **canaries; /* the nodes that get the current snapshot instead */
    size_t n_canaries;
};

struct publisher {
    struct ev_loop *loop;
    int sock[EP_COUNT];                 /* nanomsg sockets; -1 when not open */
    char ep[EP_COUNT][LB_ENDPOINT_MAX]; /* endpoints bound */
    struct bound_file file[EP_COUNT];   /* ipc socket files we created */
    ev_io rep_in;                       /* REP readable: a request waits */
    ev_io rep_out;                      /* REP writable: runs only while a reply is pending */
    ev_io pull_in;                      /* PULL readable: a report waits */
    ev_timer republish;                 /* re-sends the current snapshot */
    publisher_report_fn on_report;
    void *ctx;

    /* The current snapshot, stored as a complete encoded SyncReply: the tag and
     * length in front of the snapshot bytes. A sync is answered with the whole
     * buffer and PUB sends it from <snap_off>, so neither re-encodes anything. */
    uint8_t *reply;
    size_t reply_len;
    size_t snap_off;
    uint64_t generation; /* 0: no snapshot yet */

    /* Sealed feed: <keys> (borrowed) seals; <sealed_pub> and <sealed_reply>
     * are the current snapshot and its sync reply sealed once, sent as they
     * are until the snapshot or the keys change. */
    const struct seal_keyring *keys;
    bool insecure;
    uint8_t *sealed_pub;
    size_t sealed_pub_len;
    uint8_t *sealed_reply;
    size_t sealed_reply_len;
    struct seal_counts feed; /* refusals by reason */
    struct held held;        /* staged rollout: what the other data planes keep */
    bool pending_held;       /* the pending reply is the held snapshot */
    char **allowed;          /* node ids taken (publisher_config.nodes); NULL = any */
    size_t n_allowed;
    struct node_seen *nodes; /* newest report per node, <n_nodes> of them */
    size_t n_nodes;

    bool pending;          /* a reply could not be sent yet (REP said EAGAIN) */
    bool pending_bad;      /* ... it answers an undecodable request */
    uint64_t pending_have; /* ... it answers a request with this have_generation */

    uint64_t publishes;
    uint64_t sync_requests;
    uint64_t reports;
    uint64_t malformed;
};

#define SWAP(T, a, b)                                                                              \
    do {                                                                                           \
        T t_ = (a);                                                                                \
        (a) = (b);                                                                                 \
        (b) = t_;                                                                                  \
    } while (0)

/* Exchanges the current snapshot with the held one. */
static void slot_swap(struct publisher *p)
{
    SWAP(uint8_t *, p->reply, p->held.reply);
    SWAP(size_t, p->reply_len, p->held.reply_len);
    SWAP(size_t, p->snap_off, p->held.snap_off);
    SWAP(uint64_t, p->generation, p->held.generation);
    SWAP(uint8_t *, p->sealed_pub, p->held.sealed_pub);
    SWAP(size_t, p->sealed_pub_len, p->held.sealed_pub_len);
    SWAP(uint8_t *, p->sealed_reply, p->held.sealed_reply);
    SWAP(size_t, p->sealed_reply_len, p->held.sealed_reply_len);
}

static int nn_fail(struct lb_err *err, int e, const char *what, const char *ep)
{
    /* nanomsg's own codes lie above NN_HAUSNUMERO, beyond strerror(). */
    if (e >= NN_HAUSNUMERO)
        return lb_err_set(err, LB_ESYS, 0, "%s %s: %s", what, ep, nn_strerror(e));
    return lb_err_set(err, LB_ESYS, e, "%s %s", what, ep);
}

static int set_int_opt(int s, int level, int opt, int value, const char *name, const char *ep,
                       struct lb_err *err)
{
    if (nn_setsockopt(s, level, opt, &value, sizeof(value)) == -1)
        return nn_fail(err, nn_errno(), name, ep);
    return LB_OK;
}

static int get_fd(int s, int opt, int *fd, const char *ep, struct lb_err *err)
{
    size_t sz = sizeof(*fd);
    if (nn_getsockopt(s, NN_SOL_SOCKET, opt, fd, &sz) == -1)
        return nn_fail(err, nn_errno(), "no pollable fd for", ep);
    return LB_OK;
}

/* nanomsg 1.1.5 leaks its endpoint when an ipc bind fails, so the usual
 * failures (no directory, no permission) are caught before nn_bind(). */
static int check_ipc_dir(const char *path, const char *ep, struct lb_err *err)
{
    char dir[LB_ENDPOINT_MAX];
    const char *slash = strrchr(path, '/');
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    snprintf(dir, sizeof(dir), "%.*s", (int)len, path);
    struct stat st;
    if (stat(dir, &st) == -1)
        return lb_err_set(err, LB_ESYS, errno, "bind %s: directory %s", ep, dir);
    if (!S_ISDIR(st.st_mode))
        return lb_err_set(err, LB_ESYS, ENOTDIR, "bind %s: %s", ep, dir);
    if (access(dir, W_OK | X_OK) == -1)
        return lb_err_set(err, LB_ESYS, errno, "bind %s: directory %s", ep, dir);
    return LB_OK;
}

/* Removes a socket file nobody accepts on any more (a crashed predecessor's);
 * refuses a live one and anything that is not a socket. */
static int clear_stale_ipc(const char *path, const char *ep, struct lb_err *err)
{
    struct stat st;
    int rc = check_ipc_dir(path, ep, err);
    if (rc != LB_OK)
        return rc;
    if (lstat(path, &st) == -1) {
        if (errno == ENOENT)
            return LB_OK;
        return lb_err_set(err, LB_ESYS, errno, "bind %s", ep);
    }
    if (!S_ISSOCK(st.st_mode))
        return lb_err_set(err, LB_EINVAL, 0, "bind %s: %s exists and is not a socket", ep, path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "bind %s: socket", ep);
    rc = connect(fd, (const struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return lb_err_set(err, LB_ESYS, EADDRINUSE, "bind %s: another process listens there", ep);
    if (e == ECONNREFUSED && unlink(path) == -1 && errno != ENOENT)
        return lb_err_set(err, LB_ESYS, errno, "bind %s: removing the stale socket", ep);
    return LB_OK;
}

static int open_socket(struct publisher *p, int i, int protocol, struct lb_err *err)
{
    const char *ep = p->ep[i];
    p->sock[i] = nn_socket(AF_SP, protocol);
    if (p->sock[i] == -1)
        return nn_fail(err, nn_errno(), "socket for", ep);
    int s = p->sock[i];
    int rc = set_int_opt(s, NN_SOL_SOCKET, NN_SNDBUF, PUBLISHER_SOCK_BUF, "NN_SNDBUF", ep, err);
    if (rc == LB_OK)
        rc = set_int_opt(s, NN_SOL_SOCKET, NN_RCVBUF, PUBLISHER_SOCK_BUF, "NN_RCVBUF", ep, err);
    if (rc == LB_OK)
        rc = set_int_opt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, PUBLISHER_MAX_MSG, "NN_RCVMAXSIZE", ep,
                         err);
    if (rc != LB_OK)
        return rc;
    const char *path = lb_endpoints_ipc_path(ep);
    if (path != NULL && (rc = clear_stale_ipc(path, ep, err)) != LB_OK)
        return rc;
    if (nn_bind(s, ep) < 0)
        return nn_fail(err, nn_errno(), "bind", ep);
    struct stat st;
    if (path != NULL && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        p->file[i] = (struct bound_file){.made = true, .dev = st.st_dev, .ino = st.st_ino};
    lb_log(LB_LOG_INFO, "publisher_bound", "%s on %s", ep_role[i], ep);
    return LB_OK;
}

static void publish_one(struct publisher *p)
{
    if (p->generation == 0)
        return;
    size_t len = p->reply_len - p->snap_off;
    const uint8_t *msg = p->reply + p->snap_off;
    if (p->keys != NULL) {
        msg = p->sealed_pub;
        len = p->sealed_pub_len;
    }
    if (nn_send(p->sock[EP_PUB], msg, len, NN_DONTWAIT) < 0) {
        int e = nn_errno();
        lb_log(LB_LOG_WARN, "publish_failed", "generation %llu (%zu bytes) on %s: %s",
               (unsigned long long)p->generation, len, p->ep[EP_PUB], nn_strerror(e));
        return;
    }
    p->publishes++;
}

/* Sends the current snapshot and the held one, if any. */
static void publish_now(struct publisher *p)
{
    publish_one(p);
    if (p->held.generation != 0) {
        slot_swap(p);
        publish_one(p);
        slot_swap(p);
    }
}

static void publisher_on_republish(struct ev_loop *loop, ev_timer *w, int revents)
{
    publish_now(w->data);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts a refused message and logs it unless this reason was logged lately. */
static void feed_refuse(struct publisher *p, enum seal_status why, int i, const char *detail)
{
    uint64_t more = 0;
    if (seal_counts_add(&p->feed, why, wall_ms(), &more))
        lb_log(LB_LOG_WARN, "feed_rejected",
               "%s refused on %s: %s%s (%llu refused for this reason, %llu not logged since the "
               "last line)",
               ep_role[i], p->ep[i], seal_status_name(why), detail,
               (unsigned long long)p->feed.n[why], (unsigned long long)more);
}

/* True when <node> may sync and report; refuses (counted, logged) otherwise. */
static bool node_allowed(struct publisher *p, const char *node, int i)
{
    if (p->allowed == NULL)
        return true;
    for (size_t k = 0; k < p->n_allowed; k++)
        if (node != NULL && strcmp(p->allowed[k], node) == 0)
            return true;
    char detail[96];
    snprintf(detail, sizeof(detail), ": node \"%.48s\" is not in --feed-nodes",
             node != NULL ? node : "");
    feed_refuse(p, SEAL_UNKNOWN_NODE, i, detail);
    return false;
}

/* Sends a small reply on REP, sealed when the feed is. */
static int send_small_reply(struct publisher *p, const uint8_t *msg, size_t n)
{
    uint8_t sealed[256 + SEAL_OVERHEAD];
    if (p->keys == NULL)
        return nn_send(p->sock[EP_REP], msg, n, NN_DONTWAIT);
    struct lb_err err = {0};
    if (n > 256 || seal_seal(p->keys, SEAL_KIND_SYNC_REPLY, msg, n, sealed, &err) != LB_OK) {
        lb_log(LB_LOG_WARN, "sync_reply_failed", "cannot seal a reply: %s", err.msg);
        return 0; /* dropped; the requester asks again */
    }
    return nn_send(p->sock[EP_REP], sealed, n + SEAL_OVERHEAD, NN_DONTWAIT);
}

static int send_error_reply(struct publisher *p, const char *msg)
{
    Lb__V1__SyncReply r = LB__V1__SYNC_REPLY__INIT;
    r.error = (char *)msg;
    uint8_t buf[256];
    size_t n = lb__v1__sync_reply__get_packed_size(&r);
    if (n > sizeof(buf))
        n = 0; /* cannot happen with the fixed messages below; an empty reply is still valid */
    else
        lb__v1__sync_reply__pack(&r, buf);
    return send_small_reply(p, buf, n);
}

/* Sends the reply the pending fields describe, from the current state.
 * Returns 0 when sent or dropped, -1 when REP is not writable yet. */
static int send_reply_one(struct publisher *p)
{
    int rc;
    if (p->pending_bad)
        rc = send_error_reply(p, "malformed SyncRequest");
    else if (p->generation == 0)
        rc = send_error_reply(p, "the control plane has no snapshot yet");
    else if (p->pending_have == p->generation)
        rc = send_small_reply(p, (const uint8_t *)"", 0); /* empty SyncReply: up to date */
    else if (p->keys != NULL)
        rc = nn_send(p->sock[EP_REP], p->sealed_reply, p->sealed_reply_len, NN_DONTWAIT);
    else
        rc = nn_send(p->sock[EP_REP], p->reply, p->reply_len, NN_DONTWAIT);
    if (rc >= 0)
        return 0;
    int e = nn_errno();
    if (e == EAGAIN)
        return -1;
    /* The requester's REQ socket resends on its own; nothing to keep. */
    lb_log(LB_LOG_WARN, "sync_reply_failed", "on %s: %s", p->ep[EP_REP], nn_strerror(e));
    return 0;
}

static int send_reply(struct publisher *p)
{
    if (!p->pending_held || p->held.generation == 0)
        return send_reply_one(p);
    slot_swap(p);
    int rc = send_reply_one(p);
    slot_swap(p);
    return rc;
}

static bool is_canary(const struct publisher *p, const char *node)
{
    for (size_t i = 0; i < p->held.n_canaries; i++)
        if (strcmp(p->held.canaries[i], node) == 0)
            return true;
    return false;
}

static void publisher_on_rep_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct publisher *p = w->data;
    if (send_reply(p) != 0)
        return;
    p->pending = false;
    ev_io_stop(loop, &p->rep_out);
    ev_io_start(loop, &p->rep_in);
}

static void publisher_on_rep_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct publisher *p = w->data;
    for (int i = 0; i < BATCH_MAX && !p->pending; i++) {
        void *msg = NULL;
        int n = nn_recv(p->sock[EP_REP], &msg, NN_MSG, NN_DONTWAIT);
        if (n < 0) {
            int e = nn_errno();
            if (e != EAGAIN && e != EINTR)
                lb_log(LB_LOG_WARN, "sync_recv_failed", "on %s: %s", p->ep[EP_REP], nn_strerror(e));
            return;
        }
        const uint8_t *body = msg;
        size_t len = (size_t)n;
        if (p->keys != NULL) {
            enum seal_status st =
                seal_open(p->keys, SEAL_KIND_SYNC_REQUEST, msg, (size_t)n, &body, &len, NULL);
            if (st != SEAL_OK) {
                /* No reply at all: the requester learns nothing, not even an error. */
                nn_freemsg(msg);
                feed_refuse(p, st, EP_REP, "");
                continue;
            }
        }
        Lb__V1__SyncRequest *req = lb__v1__sync_request__unpack(NULL, len, body);
        nn_freemsg(msg);
        if (req != NULL && !node_allowed(p, req->node_id, EP_REP)) {
            lb__v1__sync_request__free_unpacked(req, NULL);
            continue; /* no reply, as for a request that does not open */
        }
        p->pending_bad = req == NULL;
        p->pending_have = 0;
        p->pending_held = req != NULL && p->held.generation != 0 && !is_canary(p, req->node_id);
        if (req == NULL) {
            p->malformed++;
            seal_counts_add(&p->feed, SEAL_MALFORMED, wall_ms(), NULL);
            lb_log(LB_LOG_WARN, "sync_request_malformed",
                   "%d bytes on %s do not decode as SyncRequest (%llu malformed so far)", n,
                   p->ep[EP_REP], (unsigned long long)p->malformed);
        } else {
            p->sync_requests++;
            p->pending_have = req->have_generation;
            lb_log(LB_LOG_DEBUG, "sync_request", "node %s has generation %llu, current %llu",
                   req->node_id, (unsigned long long)req->have_generation,
                   (unsigned long long)p->generation);
            lb__v1__sync_request__free_unpacked(req, NULL);
        }
        if (send_reply(p) != 0) {
            /* REP takes no new request before this one is answered. */
            p->pending = true;
            ev_io_stop(loop, &p->rep_in);
            ev_io_start(loop, &p->rep_out);
        }
    }
}

/* Records report <r> of node <n> if it is newer than what its process sent
 * so far; a new process replaces the oldest one remembered when the table is
 * full. Returns false for a report that is not newer (a replay). */
static bool node_boot_seen(struct node_seen *n, const Lb__V1__Report *r)
{
    size_t i = 0;
    while (i < n->n_boots && n->boots[i].boot_id != r->boot_id)
        i++;
    if (i < n->n_boots) {
        if (r->seq <= n->boots[i].seq)
            return false;
        n->boots[i].seq = r->seq;
        return true;
    }
    /* an unknown process: new, unless it started before one already forgotten */
    if (n->forgotten_started_ms != 0 && r->started_unix_ms <= n->forgotten_started_ms)
        return false;
    if (n->n_boots == NODE_BOOTS) {
        size_t oldest = 0;
        for (size_t k = 1; k < NODE_BOOTS; k++)
            if (n->boots[k].started_ms < n->boots[oldest].started_ms)
                oldest = k;
        /* older than every process remembered: never evict one of them for it */
        if (r->started_unix_ms <= n->boots[oldest].started_ms)
            return false;
        if (n->boots[oldest].started_ms > n->forgotten_started_ms)
            n->forgotten_started_ms = n->boots[oldest].started_ms;
        n->boots[oldest] = n->boots[--n->n_boots];
    }
    i = n->n_boots++;
    n->boots[i].boot_id = r->boot_id;
    n->boots[i].seq = r->seq;
    n->boots[i].started_ms = r->started_unix_ms;
    return true;
}

/* A sealed report must be newer than the last one accepted from its process
 * (boot_id, seq), come from a process not older than those forgotten, and be
 * sent within the window around now, which also covers what a restarted
 * control plane forgot. Refuses (counted, logged) or records. */
static bool report_is_fresh(struct publisher *p, const Lb__V1__Report *r)
{
    int64_t now = wall_ms();
    int64_t age = now - r->sent_unix_ms;
    if (r->boot_id == 0 || r->node_id == NULL || r->node_id[0] == '\0') {
        feed_refuse(p, SEAL_MALFORMED, EP_PULL, ": a sealed report needs node_id and boot_id");
        return false;
    }
    if (age > PUBLISHER_REPORT_WINDOW_MS || age < -PUBLISHER_REPORT_WINDOW_MS) {
        feed_refuse(p, SEAL_REPLAY, EP_PULL, ": sent too long ago or in the future");
        return false;
    }
    struct node_seen *n = NULL;
    for (size_t i = 0; i < p->n_nodes && n == NULL; i++)
        if (strcmp(p->nodes[i].node_id, r->node_id) == 0)
            n = &p->nodes[i];
    if (n == NULL) {
        char *id = strdup(r->node_id);
        struct node_seen *grown = realloc(p->nodes, (p->n_nodes + 1) * sizeof(*grown));
        if (id == NULL || grown == NULL) {
            free(id);
            if (grown != NULL)
                p->nodes = grown;
            lb_log(LB_LOG_WARN, "report_dropped", "out of memory recording node %.64s", r->node_id);
            return false;
        }
        p->nodes = grown;
        n = &p->nodes[p->n_nodes++];
        *n = (struct node_seen){.node_id = id};
    }
    if (!node_boot_seen(n, r)) {
        feed_refuse(p, SEAL_REPLAY, EP_PULL, ": not newer than the last report of its process");
        return false;
    }
    return true;
}

static void publisher_on_pull_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct publisher *p = w->data;
    for (int i = 0; i < BATCH_MAX; i++) {
        void *msg = NULL;
        int n = nn_recv(p->sock[EP_PULL], &msg, NN_MSG, NN_DONTWAIT);
        if (n < 0) {
            int e = nn_errno();
            if (e != EAGAIN && e != EINTR)
                lb_log(LB_LOG_WARN, "report_recv_failed", "on %s: %s", p->ep[EP_PULL],
                       nn_strerror(e));
            return;
        }
        const uint8_t *body = msg;
        size_t len = (size_t)n;
        if (p->keys != NULL) {
            enum seal_status st =
                seal_open(p->keys, SEAL_KIND_REPORT, msg, (size_t)n, &body, &len, NULL);
            if (st != SEAL_OK) {
                nn_freemsg(msg);
                feed_refuse(p, st, EP_PULL, "");
                continue;
            }
        }
        Lb__V1__Report *r = lb__v1__report__unpack(NULL, len, body);
        nn_freemsg(msg);
        if (r == NULL) {
            p->malformed++;
            seal_counts_add(&p->feed, SEAL_MALFORMED, wall_ms(), NULL);
            lb_log(LB_LOG_WARN, "report_malformed",
                   "%d bytes on %s do not decode as Report (%llu malformed so far)", n,
                   p->ep[EP_PULL], (unsigned long long)p->malformed);
            continue;
        }
        if (!node_allowed(p, r->node_id, EP_PULL) || (p->keys != NULL && !report_is_fresh(p, r))) {
            lb__v1__report__free_unpacked(r, NULL);
            continue;
        }
        p->reports++;
        if (p->on_report != NULL)
            p->on_report(p->ctx, r);
        lb__v1__report__free_unpacked(r, NULL);
    }
}

static int watch(struct publisher *p, ev_io *w, int i, int opt,
                 void (*cb)(struct ev_loop *, ev_io *, int), struct lb_err *err)
{
    int fd;
    int rc = get_fd(p->sock[i], opt, &fd, p->ep[i], err);
    if (rc != LB_OK)
        return rc;
    ev_io_init(w, cb, fd, EV_READ); /* nanomsg signals both directions as readability */
    w->data = p;
    return LB_OK;
}

/* Splits "a,b,c" into p->allowed. */
static int parse_nodes(struct publisher *p, const char *list, struct lb_err *err)
{
    size_t n = 1;
    for (const char *c = list; *c != '\0'; c++)
        n += *c == ',';
    p->allowed = calloc(n, sizeof(*p->allowed));
    if (p->allowed == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    const char *start = list;
    for (;;) {
        const char *comma = strchr(start, ',');
        size_t len = comma != NULL ? (size_t)(comma - start) : strlen(start);
        if (len == 0)
            return lb_err_set(err, LB_EINVAL, 0, "--feed-nodes %.100s: an empty node id", list);
        if ((p->allowed[p->n_allowed] = strndup(start, len)) == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        p->n_allowed++;
        if (comma == NULL)
            return LB_OK;
        start = comma + 1;
    }
}

struct publisher *publisher_new(struct ev_loop *loop, const struct publisher_config *cfg,
                                publisher_report_fn on_report, void *ctx, struct lb_err *err)
{
    if (loop == NULL || cfg == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "publisher: no loop or no config");
        return NULL;
    }
    double ivl = cfg->republish_s == 0 ? PUBLISHER_REPUBLISH_S_DEF : cfg->republish_s;
    if (!isfinite(ivl) || ivl < 0.001) {
        lb_err_set(err, LB_EINVAL, 0, "publisher: republish interval must be positive");
        return NULL;
    }
    struct publisher *p = mem_zalloc(sizeof(*p), "publisher", err);
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->keys = cfg->keys;
    p->insecure = cfg->insecure;
    if (cfg->nodes != NULL && parse_nodes(p, cfg->nodes, err) != LB_OK) {
        publisher_free(p);
        return NULL;
    }
    p->on_report = on_report;
    p->ctx = ctx;
    for (int i = 0; i < EP_COUNT; i++)
        p->sock[i] = -1;
    if (lb_endpoints_split(cfg->base, p->ep[EP_PUB], p->ep[EP_REP], p->ep[EP_PULL], err) != LB_OK ||
        open_socket(p, EP_PUB, NN_PUB, err) != LB_OK ||
        open_socket(p, EP_REP, NN_REP, err) != LB_OK ||
        open_socket(p, EP_PULL, NN_PULL, err) != LB_OK ||
        watch(p, &p->rep_in, EP_REP, NN_RCVFD, publisher_on_rep_readable, err) != LB_OK ||
        watch(p, &p->rep_out, EP_REP, NN_SNDFD, publisher_on_rep_writable, err) != LB_OK ||
        watch(p, &p->pull_in, EP_PULL, NN_RCVFD, publisher_on_pull_readable, err) != LB_OK) {
        publisher_free(p);
        return NULL;
    }
    ev_timer_init(&p->republish, publisher_on_republish, ivl, ivl);
    p->republish.data = p;
    ev_io_start(loop, &p->rep_in);
    ev_io_start(loop, &p->pull_in);
    return p;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* The current snapshot sealed for PUB and for REP. */
struct sealed {
    uint8_t *pub;
    size_t pub_len;
    uint8_t *reply;
    size_t reply_len;
};

/* Seals <reply>[0..len) (a SyncReply whose snapshot starts at <off>) both ways
 * into <s>. Returns LB_OK, or an error with nothing allocated. */
static int seal_current(const struct seal_keyring *keys, const uint8_t *reply, size_t len,
                        size_t off, struct sealed *s, struct lb_err *err)
{
    s->pub_len = len - off + SEAL_OVERHEAD;
    s->reply_len = len + SEAL_OVERHEAD;
    s->pub = malloc(s->pub_len);
    s->reply = malloc(s->reply_len);
    int rc = LB_OK;
    if (s->pub == NULL || s->reply == NULL)
        rc = lb_err_set(err, LB_ENOMEM, 0, "sealing a %zu-byte snapshot: out of memory", len);
    if (rc == LB_OK)
        rc = seal_seal(keys, SEAL_KIND_SNAPSHOT, reply + off, len - off, s->pub, err);
    if (rc == LB_OK)
        rc = seal_seal(keys, SEAL_KIND_SYNC_REPLY, reply, len, s->reply, err);
    if (rc != LB_OK) {
        free(s->pub);
        free(s->reply);
        *s = (struct sealed){0};
    }
    return rc;
}

static void sealed_install(struct publisher *p, struct sealed *s)
{
    free(p->sealed_pub);
    free(p->sealed_reply);
    p->sealed_pub = s->pub;
    p->sealed_pub_len = s->pub_len;
    p->sealed_reply = s->reply;
    p->sealed_reply_len = s->reply_len;
}

int publisher_set_keys(struct publisher *p, const struct seal_keyring *keys, struct lb_err *err)
{
    struct sealed s = {0}, h = {0};
    if (keys != NULL && p->generation != 0) {
        int rc = seal_current(keys, p->reply, p->reply_len, p->snap_off, &s, err);
        if (rc != LB_OK)
            return rc;
    }
    if (keys != NULL && p->held.generation != 0) {
        int rc = seal_current(keys, p->held.reply, p->held.reply_len, p->held.snap_off, &h, err);
        if (rc != LB_OK) {
            free(s.pub);
            free(s.reply);
            return rc;
        }
    }
    p->keys = keys;
    sealed_install(p, &s);
    slot_swap(p);
    sealed_install(p, &h);
    slot_swap(p);
    return LB_OK;
}

const struct seal_counts *publisher_feed_counts(const struct publisher *p)
{
    return &p->feed;
}

bool publisher_is_sealed(const struct publisher *p)
{
    return p->keys != NULL;
}

bool publisher_is_insecure(const struct publisher *p)
{
    return p->insecure;
}

/* Makes <buf> the current snapshot without sending it. */
static int install(struct publisher *p, const uint8_t *buf, size_t len, uint64_t generation,
                   struct lb_err *err)
{
    if (buf == NULL || len == 0 || generation == 0)
        return lb_err_set(err, LB_EINVAL, 0, "snapshot: empty buffer or generation 0");
    if (len > PUBLISHER_MAX_MSG - 1 - VARINT_MAX - SEAL_OVERHEAD)
        return lb_err_set(err, LB_EINVAL, 0, "snapshot of %zu bytes exceeds the %d-byte limit", len,
                          PUBLISHER_MAX_MSG - 1 - VARINT_MAX - SEAL_OVERHEAD);
    uint8_t hdr[1 + VARINT_MAX];
    hdr[0] = SYNC_REPLY_SNAPSHOT_TAG;
    size_t hdr_len = 1 + put_varint(hdr + 1, len);
    uint8_t *reply = malloc(hdr_len + len);
    if (reply == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "snapshot of %zu bytes: out of memory", len);
    memcpy(reply, hdr, hdr_len);
    memcpy(reply + hdr_len, buf, len);
    struct sealed s = {0};
    if (p->keys != NULL) {
        int rc = seal_current(p->keys, reply, hdr_len + len, hdr_len, &s, err);
        if (rc != LB_OK) {
            free(reply);
            return rc;
        }
    }
    free(p->reply);
    p->reply = reply;
    p->reply_len = hdr_len + len;
    p->snap_off = hdr_len;
    p->generation = generation;
    sealed_install(p, &s);
    return LB_OK;
}

int publisher_set_snapshot(struct publisher *p, const uint8_t *buf, size_t len, uint64_t generation,
                           struct lb_err *err)
{
    int rc = install(p, buf, len, generation, err);
    if (rc != LB_OK)
        return rc;
    publish_now(p);
    ev_timer_again(p->loop, &p->republish);
    return LB_OK;
}

static void held_free(struct held *h)
{
    free(h->reply);
    free(h->sealed_pub);
    free(h->sealed_reply);
    for (size_t i = 0; i < h->n_canaries; i++)
        free(h->canaries[i]);
    free(h->canaries);
    *h = (struct held){0};
}

int publisher_set_held(struct publisher *p, const uint8_t *buf, size_t len, uint64_t generation,
                       const char *const *canaries, size_t n_canaries, struct lb_err *err)
{
    if (n_canaries == 0 || canaries == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "held snapshot: no canary node");
    char **ids = calloc(n_canaries, sizeof(*ids));
    if (ids == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < n_canaries; i++) {
        if ((ids[i] = strdup(canaries[i])) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(ids[k]);
            free(ids);
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        }
    }
    slot_swap(p);
    struct held old = {
        .reply = p->reply, .sealed_pub = p->sealed_pub, .sealed_reply = p->sealed_reply};
    p->reply = NULL;
    p->sealed_pub = p->sealed_reply = NULL;
    int rc = install(p, buf, len, generation, err);
    if (rc != LB_OK) {
        p->reply = old.reply;
        p->sealed_pub = old.sealed_pub;
        p->sealed_reply = old.sealed_reply;
        old = (struct held){0};
    }
    slot_swap(p);
    held_free(&old);
    if (rc != LB_OK) {
        for (size_t i = 0; i < n_canaries; i++)
            free(ids[i]);
        free(ids);
        return rc;
    }
    for (size_t i = 0; i < p->held.n_canaries; i++)
        free(p->held.canaries[i]);
    free(p->held.canaries);
    p->held.canaries = ids;
    p->held.n_canaries = n_canaries;
    publish_now(p);
    return LB_OK;
}

void publisher_clear_held(struct publisher *p)
{
    held_free(&p->held);
}

uint64_t publisher_held_generation(const struct publisher *p)
{
    return p->held.generation;
}

const uint8_t *publisher_held(const struct publisher *p, size_t *len)
{
    *len = p->held.generation != 0 ? p->held.reply_len - p->held.snap_off : 0;
    return p->held.generation != 0 ? p->held.reply + p->held.snap_off : NULL;
}

uint64_t publisher_generation(const struct publisher *p)
{
    return p->generation;
}

uint64_t publisher_publishes(const struct publisher *p)
{
    return p->publishes;
}

uint64_t publisher_sync_requests(const struct publisher *p)
{
    return p->sync_requests;
}

uint64_t publisher_reports(const struct publisher *p)
{
    return p->reports;
}

uint64_t publisher_malformed(const struct publisher *p)
{
    return p->malformed;
}

void publisher_free(struct publisher *p)
{
    if (p == NULL)
        return;
    ev_io_stop(p->loop, &p->rep_in);
    ev_io_stop(p->loop, &p->rep_out);
    ev_io_stop(p->loop, &p->pull_in);
    ev_timer_stop(p->loop, &p->republish);
    for (int i = 0; i < EP_COUNT; i++) {
        /* nn_close() only fails with EINTR (retry) or EBADF (already gone). */
        for (int tries = 0; p->sock[i] != -1 && tries < 100; tries++)
            if (nn_close(p->sock[i]) == 0 || nn_errno() != EINTR)
                break;
        struct stat st;
        const char *path = lb_endpoints_ipc_path(p->ep[i]);
        if (p->file[i].made && path != NULL && lstat(path, &st) == 0 &&
            st.st_dev == p->file[i].dev && st.st_ino == p->file[i].ino)
            unlink(path);
    }
    free(p->reply);
    free(p->sealed_pub);
    free(p->sealed_reply);
    held_free(&p->held);
    for (size_t i = 0; i < p->n_nodes; i++)
        free(p->nodes[i].node_id);
    free(p->nodes);
    for (size_t i = 0; i < p->n_allowed; i++)
        free(p->allowed[i]);
    free(p->allowed);
    free(p);
}
