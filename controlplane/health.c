/* controlplane/health.c: active health checks (see health.h). */
#include "health.h"

#include "lb_err.h"
#include "lb_log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_INTERVAL_MS 10000u
#define DEFAULT_RISE        2u
#define DEFAULT_FALL        3u
#define DEFAULT_PATH        "/health"
#define STATUS_BUF          256 /* a status line longer than this is judged on its start */

enum hc_phase {
    HC_IDLE = 0,
    HC_CONNECTING,
    HC_SENDING,
    HC_READING,
};

/* One backend. Heap-allocated so that the watchers' <data> stays valid while
 * the array of targets is rebuilt. */
struct hc {
    struct health *h;           /* owner */
    char *id;                   /* backend id (owned) */
    struct sockaddr_storage sa; /* where to connect */
    socklen_t salen;
    char *host_header; /* "host:port" as configured (owned) */
    char *req;         /* the HTTP request sent (owned); built per sync */
    size_t req_len;
    bool tcp_only;
    bool disabled;
    bool ejected; /* down because a data plane ejected it, until it is up again */
    struct health_fsm fsm;
    int64_t last_check_ms;
    char last_error[HEALTH_ERROR_MAX];
    ev_timer tick;  /* next check */
    ev_timer limit; /* bounds the check in flight */
    ev_io io;       /* the check's socket */
    int fd;         /* -1 when no check is in flight */
    enum hc_phase phase;
    size_t sent;               /* request bytes written */
    char rbuf[STATUS_BUF + 1]; /* response start */
    size_t rlen;
};

struct health {
    struct ev_loop *loop;
    health_result_fn on_result; /* may be NULL */
    void *ctx;
    struct health_settings s; /* defaults applied; path and host point below */
    char *path;               /* owned */
    char *host;               /* owned; "" = per target */
    struct hc **v;            /* targets sorted by id */
    size_t n;
    uint64_t passes, fails, skips;
    size_t n_up, n_down, n_unknown, n_disabled;
    bool all_down; /* as last logged */
    uint64_t rng;  /* xorshift64 state for the jitter */
};

/* ---- state machine --------------------------------------------------------- */

void health_fsm_init(struct health_fsm *f)
{
    f->state = STORE_HEALTH_UNKNOWN;
    f->passes = 0;
    f->fails = 0;
}

bool health_fsm_feed(struct health_fsm *f, bool pass, uint32_t rise, uint32_t fall)
{
    enum store_health old = f->state;
    if (pass) {
        f->fails = 0;
        if (f->passes < UINT32_MAX)
            f->passes++;
        if (f->passes >= (rise ? rise : 1))
            f->state = STORE_HEALTH_UP;
    } else {
        f->passes = 0;
        if (f->fails < UINT32_MAX)
            f->fails++;
        if (f->fails >= (fall ? fall : 1))
            f->state = STORE_HEALTH_DOWN;
    }
    return f->state != old;
}

bool health_fsm_force_down(struct health_fsm *f, uint32_t fall)
{
    if (f->state == STORE_HEALTH_DOWN)
        return false;
    f->state = STORE_HEALTH_DOWN;
    f->passes = 0;
    f->fails = fall ? fall : 1;
    return true;
}

/* ---- helpers ------------------------------------------------------------------ */

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double rand_unit(struct health *h)
{
    h->rng ^= h->rng << 13;
    h->rng ^= h->rng >> 7;
    h->rng ^= h->rng << 17;
    return (double)(h->rng >> 11) / (double)(1ull << 53);
}

static void recount(struct health *h)
{
    h->n_up = h->n_down = h->n_unknown = h->n_disabled = 0;
    for (size_t i = 0; i < h->n; i++) {
        const struct hc *c = h->v[i];
        if (c->disabled)
            h->n_disabled++;
        else if (c->fsm.state == STORE_HEALTH_UP)
            h->n_up++;
        else if (c->fsm.state == STORE_HEALTH_DOWN)
            h->n_down++;
        else
            h->n_unknown++;
    }
}

/* Logs the moments the whole pool goes down and comes back. */
static void note_pool(struct health *h)
{
    bool all = health_pool_all_down(h);
    if (all == h->all_down)
        return;
    h->all_down = all;
    if (all)
        lb_log(LB_LOG_WARN, "pool_all_down",
               "every checked backend (%zu) is down; data planes follow healthcheck.failOpen",
               h->n_down);
    else
        lb_log(LB_LOG_WARN, "pool_recovered", "%zu of %zu checked backends are up again", h->n_up,
               h->n_up + h->n_down + h->n_unknown);
}

/* Closes the check in flight, if any. */
static void cancel_check(struct hc *c)
{
    ev_io_stop(c->h->loop, &c->io);
    ev_timer_stop(c->h->loop, &c->limit);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->phase = HC_IDLE;
    c->sent = 0;
    c->rlen = 0;
}

static void hc_free(struct hc *c)
{
    if (c == NULL)
        return;
    cancel_check(c);
    ev_timer_stop(c->h->loop, &c->tick);
    free(c->id);
    free(c->host_header);
    free(c->req);
    free(c);
}

/* ---- one check ---------------------------------------------------------------- */

/* Incremental, so that a switch taking 10,000 backends down costs no scan per
 * verdict. Only enabled targets change state. */
static void count_change(struct health *h, enum store_health from_state, enum store_health to_state)
{
    size_t *from = from_state == STORE_HEALTH_UP     ? &h->n_up
                   : from_state == STORE_HEALTH_DOWN ? &h->n_down
                                                     : &h->n_unknown;
    size_t *to = to_state == STORE_HEALTH_UP     ? &h->n_up
                 : to_state == STORE_HEALTH_DOWN ? &h->n_down
                                                 : &h->n_unknown;
    (*from)--;
    (*to)++;
    note_pool(h);
}

static void finish(struct hc *c, bool pass, const char *error)
{
    struct health *h = c->h;
    cancel_check(c);
    struct health_result r = {
        .id = c->id,
        .pass = pass,
        .error = pass ? "" : error,
        .old_state = c->fsm.state,
        .now_unix_ms = now_unix_ms(),
    };
    r.changed = health_fsm_feed(&c->fsm, pass, h->s.rise, h->s.fall);
    r.state = c->fsm.state;
    if (r.state == STORE_HEALTH_UP)
        c->ejected = false;
    c->last_check_ms = r.now_unix_ms;
    snprintf(c->last_error, sizeof(c->last_error), "%s", r.error);
    if (pass)
        h->passes++;
    else
        h->fails++;
    if (r.changed)
        count_change(h, r.old_state, r.state);
    if (h->on_result != NULL)
        h->on_result(h->ctx, &r);
}

static void fail_errno(struct hc *c, const char *what, int e)
{
    char msg[HEALTH_ERROR_MAX];
    if (e == ECONNREFUSED)
        snprintf(msg, sizeof(msg), "%s refused", what);
    else
        snprintf(msg, sizeof(msg), "%s failed: %s", what, strerror(e));
    finish(c, false, msg);
}

static bool status_passes(const struct health *h, int status)
{
    if (h->s.expected_status == 0)
        return status >= 200 && status <= 399;
    return (uint32_t)status == h->s.expected_status;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Judges the status line in rbuf; <eof>: nothing more will come. Returns
 * false when more bytes are needed. */
static bool judge(struct hc *c, bool eof)
{
    const char *b = c->rbuf;
    bool line_end = memchr(b, '\n', c->rlen) != NULL;
    if (!eof && !line_end && c->rlen < STATUS_BUF)
        return false;
    if (c->rlen == 0) {
        finish(c, false, "closed before a status line");
        return true;
    }
    if (c->rlen < 12 || memcmp(b, "HTTP/1.", 7) != 0 || !is_digit(b[7]) || b[8] != ' ' ||
        !is_digit(b[9]) || !is_digit(b[10]) || !is_digit(b[11]) ||
        (c->rlen > 12 && b[12] != ' ' && b[12] != '\r')) {
        finish(c, false, "malformed status line");
        return true;
    }
    int status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    if (status_passes(c->h, status)) {
        finish(c, true, "");
    } else {
        char msg[32];
        snprintf(msg, sizeof(msg), "status %d", status);
        finish(c, false, msg);
    }
    return true;
}

static void watch(struct hc *c, int events)
{
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->h->loop, &c->io);
}

static void do_send(struct hc *c)
{
    while (c->sent < c->req_len) {
        ssize_t n = send(c->fd, c->req + c->sent, c->req_len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch(c, EV_WRITE);
            return;
        }
        if (n < 0) {
            fail_errno(c, "send", errno);
            return;
        }
        c->sent += (size_t)n;
    }
    c->phase = HC_READING;
    watch(c, EV_READ);
}

static void do_read(struct hc *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, STATUS_BUF - c->rlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            fail_errno(c, "read", errno);
            return;
        }
        c->rlen += (size_t)n;
        if (judge(c, n == 0))
            return;
    }
}

static void on_connected(struct hc *c)
{
    if (c->tcp_only || c->h->s.type == CONFIG_HC_TCP) {
        finish(c, true, "");
        return;
    }
    c->phase = HC_SENDING;
    do_send(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct hc *c = w->data;
    if (c->phase == HC_CONNECTING) {
        int e = 0;
        socklen_t len = sizeof(e);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) == -1)
            e = errno;
        if (e == EINPROGRESS || e == EINTR)
            return;
        if (e != 0) {
            fail_errno(c, "connect", e);
            return;
        }
        on_connected(c);
    } else if (c->phase == HC_SENDING) {
        do_send(c);
    } else if (c->phase == HC_READING) {
        do_read(c);
    }
}

static void on_limit(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct hc *c = w->data;
    char msg[64];
    snprintf(msg, sizeof(msg), "%s after %u ms",
             c->phase == HC_CONNECTING ? "connect timeout" : "timeout", c->h->s.timeout_ms);
    finish(c, false, msg);
}

/* Descriptors, memory or local ports ran out here: the check did not run,
 * and saying the backend failed it would take a healthy backend down. */
static void skip_check(struct hc *c, const char *what, int e)
{
    cancel_check(c);
    c->h->skips++;
    lb_log(LB_LOG_WARN, "health_check_skipped", "backend %s: %s: %s; its state stays as it was",
           c->id, what, strerror(e));
}

static void start_check(struct hc *c)
{
    struct health *h = c->h;
    c->fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        if (lb_errno_shortage(errno))
            skip_check(c, "socket", errno);
        else
            fail_errno(c, "socket", errno);
        return;
    }
    ev_timer_set(&c->limit, (double)h->s.timeout_ms / 1000.0, 0.0);
    ev_timer_start(h->loop, &c->limit);
    c->phase = HC_CONNECTING;
    c->sent = 0;
    c->rlen = 0;
    if (connect(c->fd, (const struct sockaddr *)&c->sa, c->salen) == 0) {
        on_connected(c);
        return;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        if (lb_errno_shortage(errno))
            skip_check(c, "connect", errno);
        else
            fail_errno(c, "connect", errno);
        return;
    }
    watch(c, EV_WRITE);
}

static void schedule(struct hc *c, bool first)
{
    struct health *h = c->h;
    double interval = (double)h->s.interval_ms / 1000.0;
    /* The first check is spread over a whole interval so that a config with
     * many backends does not probe them all at once; later ones jitter by
     * +-10 % so that they stay spread. */
    double delay = first ? interval * rand_unit(h) : interval * (0.9 + 0.2 * rand_unit(h));
    ev_timer_stop(h->loop, &c->tick);
    ev_timer_set(&c->tick, delay, 0.0);
    ev_timer_start(h->loop, &c->tick);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct hc *c = w->data;
    schedule(c, false);
    if (c->fd < 0)
        start_check(c);
}

/* ---- the set of targets ------------------------------------------------------- */

struct health *health_new(struct ev_loop *loop, health_result_fn on_result, void *ctx,
                          struct lb_err *err)
{
    struct health *h = mem_zalloc(sizeof(*h), NULL, err);
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->on_result = on_result;
    h->ctx = ctx;
    h->s.interval_ms = DEFAULT_INTERVAL_MS;
    h->s.timeout_ms = DEFAULT_INTERVAL_MS;
    h->s.rise = DEFAULT_RISE;
    h->s.fall = DEFAULT_FALL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    h->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
             (uint64_t)(uintptr_t)h;
    if (h->rng == 0)
        h->rng = 0x9e3779b97f4a7c15ull;
    return h;
}

void health_free(struct health *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++)
        hc_free(h->v[i]);
    free(h->v);
    free(h->path);
    free(h->host);
    free(h);
}

static int cmp_target(const void *a, const void *b)
{
    const struct health_target *x = *(const struct health_target *const *)a;
    const struct health_target *y = *(const struct health_target *const *)b;
    return strcmp(x->id, y->id);
}

static struct hc *find(const struct health *h, const char *id)
{
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(h->v[mid]->id, id);
        if (c == 0)
            return h->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int parse_addr(const struct health_target *t, struct sockaddr_storage *sa, socklen_t *len,
                      struct lb_err *err)
{
    memset(sa, 0, sizeof(*sa));
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    if (t->addr != NULL && inet_pton(AF_INET, t->addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(t->port);
        *len = sizeof(*v4);
    } else if (t->addr != NULL && inet_pton(AF_INET6, t->addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(t->port);
        *len = sizeof(*v6);
    } else {
        return lb_err_set(err, LB_EINVAL, 0, "health: backend %s: address %s is not an IP literal",
                          t->id, t->addr ? t->addr : "(none)");
    }
    if (t->port == 0)
        return lb_err_set(err, LB_EINVAL, 0, "health: backend %s: port 0", t->id);
    return LB_OK;
}

/* What a sync computes for one target before anything changes. */
struct prep {
    const struct health_target *t;
    struct hc *c; /* existing or freshly allocated */
    bool fresh;
    struct sockaddr_storage sa;
    socklen_t salen;
    char *host_header;
    char *req;
    size_t req_len;
};

/* The PROXY header a check sends to a backend that wants one: it speaks for
 * no client (v1 UNKNOWN, v2 LOCAL). */
static const char pp_v1_unknown[] = "PROXY UNKNOWN\r\n";
static const char pp_v2_local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                                     0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};

static char *build_request(const char *path, const char *host, uint8_t send_proxy, size_t *len)
{
    const char *pre = send_proxy == 2 ? pp_v2_local : send_proxy == 1 ? pp_v1_unknown : "";
    size_t pre_len = send_proxy == 2   ? sizeof(pp_v2_local)
                     : send_proxy == 1 ? sizeof(pp_v1_unknown) - 1
                                       : 0;
    char *req = NULL;
    int n = asprintf(&req,
                     "%*sGET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lb-health\r\n"
                     "Connection: close\r\n\r\n",
                     (int)pre_len, "", path, host);
    if (n < 0)
        return NULL;
    memcpy(req, pre, pre_len);
    *len = (size_t)n;
    return req;
}

static void prep_free(struct prep *p, size_t n)
{
    for (size_t i = 0; p != NULL && i < n; i++) {
        free(p[i].host_header);
        free(p[i].req);
        if (p[i].fresh) {
            free(p[i].c->id);
            free(p[i].c);
        }
    }
    free(p);
}

static bool settings_equal(const struct health_settings *a, const struct health_settings *b)
{
    return a->interval_ms == b->interval_ms && a->timeout_ms == b->timeout_ms &&
           a->rise == b->rise && a->fall == b->fall && a->type == b->type &&
           a->expected_status == b->expected_status && strcmp(a->path, b->path) == 0 &&
           strcmp(a->host, b->host) == 0;
}

/* health_sync(), once nothing can fail: <q>'s target takes over its checker
 * (new, or kept with its state unless what it checks changed). */
static struct hc *adopt_prep(struct health *h, struct prep *q, bool same_settings)
{
    struct hc *c = q->c;
    bool moved = true;
    if (q->fresh) {
        c->h = h;
        c->fd = -1;
        health_fsm_init(&c->fsm);
        ev_init(&c->tick, on_tick);
        ev_init(&c->limit, on_limit);
        ev_init(&c->io, on_io);
        c->tick.data = c->limit.data = c->io.data = c;
    } else {
        moved = c->salen != q->salen || memcmp(&c->sa, &q->sa, q->salen) != 0 ||
                c->tcp_only != q->t->tcp_only || strcmp(c->host_header, q->host_header) != 0;
    }
    bool changed = q->fresh || moved || !same_settings || c->disabled != q->t->disabled;
    if (changed && !q->fresh) {
        cancel_check(c);
        ev_timer_stop(h->loop, &c->tick);
        c->fsm.passes = 0;
        c->fsm.fails = 0;
    }
    c->sa = q->sa;
    c->salen = q->salen;
    free(c->host_header);
    free(c->req);
    c->host_header = q->host_header;
    c->req = q->req;
    c->req_len = q->req_len;
    q->host_header = NULL;
    q->req = NULL;
    c->tcp_only = q->t->tcp_only;
    c->disabled = q->t->disabled;
    return c;
}

/* Targets of the previous sync that are not in <v> (sorted by id): their
 * checks stop and they are freed. */
static void drop_gone(struct health *h, struct hc *const *v, size_t n)
{
    for (size_t i = 0; i < h->n; i++) {
        struct hc *old = h->v[i];
        bool kept = false;
        for (size_t lo = 0, hi = n; lo < hi && !kept;) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(v[mid]->id, old->id);
            if (c == 0)
                kept = true;
            else if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (!kept)
            hc_free(old);
    }
}

int health_sync(struct health *h, const struct health_settings *s,
                const struct health_target *targets, size_t n, struct lb_err *err)
{
    struct health_settings ns = *s;
    if (ns.interval_ms == 0)
        ns.interval_ms = DEFAULT_INTERVAL_MS;
    if (ns.timeout_ms == 0 || ns.timeout_ms > ns.interval_ms)
        ns.timeout_ms = ns.interval_ms;
    if (ns.rise == 0)
        ns.rise = DEFAULT_RISE;
    if (ns.fall == 0)
        ns.fall = DEFAULT_FALL;
    char *path = strdup(ns.path && ns.path[0] ? ns.path : DEFAULT_PATH);
    char *host = strdup(ns.host ? ns.host : "");
    const struct health_target **order = calloc(n ? n : 1, sizeof(*order));
    struct prep *p = calloc(n ? n : 1, sizeof(*p));
    int rc = LB_OK;
    size_t done = 0;
    if (path == NULL || host == NULL || order == NULL || p == NULL) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }
    ns.path = path;
    ns.host = host;
    for (size_t i = 0; i < n; i++) {
        if (targets[i].id == NULL || targets[i].id[0] == '\0') {
            rc = lb_err_set(err, LB_EINVAL, 0, "health: a target has no id");
            goto out;
        }
        order[i] = &targets[i];
    }
    qsort(order, n, sizeof(*order), cmp_target);
    for (size_t i = 0; i < n; i++) {
        const struct health_target *t = order[i];
        if (i > 0 && strcmp(order[i - 1]->id, t->id) == 0) {
            rc = lb_err_set(err, LB_EINVAL, 0, "health: backend id %s is listed twice", t->id);
            goto out;
        }
        struct prep *q = &p[done];
        q->t = t;
        if ((rc = parse_addr(t, &q->sa, &q->salen, err)) != LB_OK)
            goto out;
        q->c = find(h, t->id);
        if (q->c == NULL) {
            q->fresh = true;
            q->c = calloc(1, sizeof(*q->c));
            if (q->c != NULL && (q->c->id = strdup(t->id)) == NULL) {
                free(q->c);
                q->c = NULL;
            }
        }
        done++;
        if (q->c == NULL) {
            q->fresh = false;
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
            goto out;
        }
        q->host_header = strdup(t->host_header ? t->host_header : "");
        q->req = q->host_header ? build_request(path, host[0] ? host : q->host_header,
                                                t->send_proxy, &q->req_len)
                                : NULL;
        if (q->req == NULL) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
            goto out;
        }
    }
    struct hc **v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }

    /* Nothing can fail from here on. */
    bool same_settings = h->path != NULL && settings_equal(&h->s, &ns);
    for (size_t i = 0; i < n; i++)
        v[i] = adopt_prep(h, &p[i], same_settings);
    drop_gone(h, v, n);
    free(h->v);
    h->v = v;
    h->n = n;
    free(h->path);
    free(h->host);
    h->path = path;
    h->host = host;
    path = host = NULL;
    h->s = ns;
    for (size_t i = 0; i < n; i++) {
        struct hc *c = v[i];
        if (c->disabled) {
            cancel_check(c);
            ev_timer_stop(h->loop, &c->tick);
        } else if (!ev_is_active(&c->tick) && c->fd < 0) {
            schedule(c, true);
        }
    }
    recount(h);
    note_pool(h);
out:
    if (rc != LB_OK) {
        prep_free(p, done);
        p = NULL;
    }
    free(p);
    free(order);
    free(path);
    free(host);
    return rc;
}

bool health_mark_down(struct health *h, const char *id, const char *reason)
{
    struct hc *c = id ? find(h, id) : NULL;
    if (c == NULL || c->disabled)
        return false;
    struct health_result r = {
        .id = c->id,
        .pass = false,
        .error = reason ? reason : "",
        .old_state = c->fsm.state,
        .now_unix_ms = now_unix_ms(),
    };
    if (!health_fsm_force_down(&c->fsm, h->s.fall))
        return false;
    r.state = c->fsm.state;
    r.changed = true;
    c->ejected = true;
    c->last_check_ms = r.now_unix_ms;
    snprintf(c->last_error, sizeof(c->last_error), "%s", r.error);
    count_change(h, r.old_state, r.state);
    if (h->on_result != NULL)
        h->on_result(h->ctx, &r);
    return true;
}

int health_status_get(const struct health *h, const char *id, struct health_status *out)
{
    const struct hc *c = id ? find(h, id) : NULL;
    if (c == NULL)
        return LB_ENOTFOUND;
    out->state = c->fsm.state;
    out->ejected = c->ejected;
    out->last_check_unix_ms = c->last_check_ms;
    snprintf(out->last_error, sizeof(out->last_error), "%s", c->last_error);
    out->disabled = c->disabled;
    out->passes = c->fsm.passes;
    out->fails = c->fsm.fails;
    return LB_OK;
}

enum store_health health_state(const struct health *h, const char *id)
{
    const struct hc *c = id ? find(h, id) : NULL;
    return c ? c->fsm.state : STORE_HEALTH_UNKNOWN;
}

void health_counts_get(const struct health *h, struct health_counts *out)
{
    out->up = h->n_up;
    out->down = h->n_down;
    out->unknown = h->n_unknown;
    out->disabled = h->n_disabled;
    out->passes = h->passes;
    out->fails = h->fails;
    out->skips = h->skips;
}

bool health_pool_all_down(const struct health *h)
{
    size_t checked = h->n_up + h->n_down + h->n_unknown;
    return checked > 0 && h->n_down == checked;
}
