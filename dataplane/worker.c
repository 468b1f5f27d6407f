/* dataplane/worker.c */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"
#include "exchange.h"
#include "h1session.h"
#include "h2session.h"
#include "handover.h"
#include "lb_err.h"
#include "lb_log.h"
#include "probe.h"
#include "upstream.h"
#include "view.h"

#define MAX_FREE_SESSIONS 256
/* Connections taken per wake-up of a listener. A TLS frontend's socket is
 * shared by the workers, so a worker busy with a batch leaves the rest of
 * the queue to the others; a TLS connection's handshake runs at once (its
 * ClientHello usually came with it), so it takes two at a time and the
 * answers other connections wait for are not held up behind a row of
 * handshakes. A plain listener is this worker's alone. */
#define ACCEPT_BATCH       64
#define ACCEPT_BATCH_TLS   2
#define ACCEPT_PAUSE_MIN_S 0.1
#define ACCEPT_PAUSE_MAX_S 1.0
#define ACCEPT_SLACK       2     /* connections a worker may hold over the least loaded one */
#define ACCEPT_DEFER_S     0.001 /* ... before it leaves the shared queue to that one, */
#define ACCEPT_DEFER_MAX_S 0.02  /* ... for at most this long, */
#define ACCEPT_BUSY_MS     2     /* ... when that one waits or woke less than this ago; */
#define ACCEPT_BUSY_EXTRA  8     /* ... one awake longer counts as holding this many more */
#define LOGBUF_SIZE        (64u * 1024u)
#define TICK_SECONDS       0.1
#define TRIM_TICKS         20 /* every 2 s: buffers a burst left idle go back */
#define TRIM_MALLOC_MIN    4  /* ... and when this many did, the heap gives memory back */
#define TRIM_CALMER        16 /* ... as when the worker's connections fell by this many */
#define FREE_SESSIONS_CALM 16 /* closed sessions kept for reuse once a burst has passed */

/* ---- listeners -------------------------------------------------------------------- */

static void listener_on_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct listener *l = t->data;
    if (!l->w->draining)
        ev_io_start(loop, &l->io);
}

/* accept() failed for want of descriptors or memory: the connection stays
 * in the kernel's queue and the socket stays readable, so asking again at
 * once would spin. Stop for a while, doubling up to a second. */
static void listener_pause(struct listener *l, int err)
{
    struct worker *w = l->w;
    l->pause_s = l->pause_s > 0 ? l->pause_s * 2 : ACCEPT_PAUSE_MIN_S;
    if (l->pause_s > ACCEPT_PAUSE_MAX_S)
        l->pause_s = ACCEPT_PAUSE_MAX_S;
    ev_io_stop(w->loop, &l->io);
    ev_timer_set(&l->pause, l->pause_s, 0.);
    ev_timer_start(w->loop, &l->pause);
    METRIC_ADD(w->metrics.fe[w->view->fe_stat[l->fe_index]].accept_pauses, 1);
    lb_log(LB_LOG_WARN, "accept_paused",
           "worker %u on %s: %s; accepting again in %.0f ms (new connections wait in the "
           "listen queue)",
           w->id, l->key, strerror(err), l->pause_s * 1000);
}

/* Whether <l>, a socket every worker accepts on, is better left to another
 * worker holding fewer connections that waits for events or has just woken
 * (woken by the same connection, it takes it at once). Then <l> is not
 * watched for ACCEPT_DEFER_S, so that the queue does not wake this loop over
 * and over. The first to wake on a shared socket takes what is queued, and
 * that is often the same worker: 62 of h2load's 64 connections went to one
 * of two workers before. A worker deep in a long turn is waited for only
 * once this one holds ACCEPT_BUSY_EXTRA more (the connection would wait
 * while this one may be free), but then it is: a worker merely kept off the
 * processor on a loaded machine looks the same, and the other one took 23
 * of a burst of 24 while it was. No worker is waited for longer than
 * ACCEPT_DEFER_MAX_S. */
static bool listener_defer(struct listener *l)
{
    struct worker *w = l->w;
    double now = ev_now(w->loop);
    uint32_t least = l->balanced ? dp_load_least(w->dp, w->id, worker_clock_ms(now), ACCEPT_BUSY_MS,
                                                 ACCEPT_BUSY_EXTRA)
                                 : UINT32_MAX;
    if (least == UINT32_MAX || w->n_sessions < (uint64_t)least + ACCEPT_SLACK ||
        (l->defer_since != 0 && now - l->defer_since >= ACCEPT_DEFER_MAX_S)) {
        l->defer_since = 0;
        return false;
    }
    if (l->defer_since == 0)
        l->defer_since = now;
    ev_io_stop(w->loop, &l->io);
    ev_timer_set(&l->pause, ACCEPT_DEFER_S, 0.);
    ev_timer_start(w->loop, &l->pause);
    return true;
}

static void listener_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct listener *l = io->data;
    struct worker *w = l->w;
    if (listener_defer(l))
        return;
    for (unsigned i = 0; i < l->batch && !w->draining; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (lb_errno_shortage(errno))
                listener_pause(l, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                lb_log(LB_LOG_WARN, "accept_failed", "worker %u on %s: %s", w->id, l->key,
                       strerror(errno));
            return;
        }
        l->pause_s = 0;
        h1session_accept(w, fd, &peer, l->fe_index);
    }
}

/* Makes <fd> (a duplicate of the process's socket <shared>; taken over:
 * closed and given back on failure) a listener of <w> for frontend <index>. */
static int listener_add(struct worker *w, int fd, int shared, const struct snap_frontend *fe,
                        uint32_t index, struct lb_err *err)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        dp_listener_release(w->dp, shared);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory opening %s", fe->key);
    }
    l->w = w;
    l->fd = fd;
    l->shared = shared;
    l->fe_index = index;
    l->batch = fe->tls ? ACCEPT_BATCH_TLS : ACCEPT_BATCH;
    l->balanced = fe->tls; /* see dp_listeners_acquire */
    snprintf(l->key, sizeof(l->key), "%s", fe->key);
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->pause, listener_on_resume, 0., 0.);
    l->pause.data = l;
    if (!w->draining)
        ev_io_start(w->loop, &l->io);
    l->seen = true;
    l->next = w->listeners;
    w->listeners = l;
    return LB_OK;
}

/* Listeners of <w> for frontend <index> on each of the process's sockets
 * for its address (see dp_listeners_acquire). */
static int listeners_open(struct worker *w, const struct snap_frontend *fe, uint32_t index,
                          struct lb_err *err)
{
    int fds[16], shared[16];
    int n = dp_listeners_acquire(w->dp, fe, w->id, fds, shared, 16, err);
    if (n < 0)
        return err ? err->code : LB_ESYS;
    int rc = LB_OK;
    for (int i = 0; i < n; i++) {
        if (rc == LB_OK) {
            rc = listener_add(w, fds[i], shared[i], fe, index, err);
        } else {
            close(fds[i]);
            dp_listener_release(w->dp, shared[i]);
        }
    }
    return rc;
}

static void listener_close(struct worker *w, struct listener *l)
{
    ev_io_stop(w->loop, &l->io);
    ev_timer_stop(w->loop, &l->pause);
    close(l->fd);
    dp_listener_release(w->dp, l->shared);
    free(l);
}

static void listeners_close_all(struct worker *w)
{
    while (w->listeners != NULL) {
        struct listener *l = w->listeners;
        w->listeners = l->next;
        listener_close(w, l);
    }
}

/* Opens listeners for new frontends and closes those of removed ones; the
 * others keep their sockets (and their accept queues). */
static int listeners_sync(struct worker *w, const struct snap *s, struct lb_err *err)
{
    for (struct listener *l = w->listeners; l != NULL; l = l->next)
        l->seen = false;
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        bool found = false;
        for (struct listener *l = w->listeners; l != NULL; l = l->next) {
            if (strcmp(l->key, s->frontends[i].key) == 0) {
                l->seen = true;
                l->fe_index = i;
                l->batch = s->frontends[i].tls ? ACCEPT_BATCH_TLS : ACCEPT_BATCH;
                l->balanced = s->frontends[i].tls;
                found = true;
            }
        }
        if (found)
            continue;
        int rc = listeners_open(w, &s->frontends[i], i, err);
        if (rc != LB_OK)
            return rc;
    }
    struct listener **pp = &w->listeners;
    while (*pp != NULL) {
        struct listener *l = *pp;
        if (l->seen) {
            pp = &l->next;
            continue;
        }
        *pp = l->next;
        lb_log(LB_LOG_INFO, "listener_closed", "worker %u closed %s", w->id, l->key);
        listener_close(w, l);
    }
    return LB_OK;
}

/* ---- adopting a snapshot ---------------------------------------------------------- */

static int worker_adopt(struct worker *w, struct snap *s, struct lb_err *err)
{
    if (w->scratch_cap < s->limits.max_headers + 1) {
        struct http1_header *h = realloc(w->scratch_hdrs, (s->limits.max_headers + 1) * sizeof(*h));
        if (h == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the header table");
        w->scratch_hdrs = h;
        w->scratch_cap = s->limits.max_headers + 1;
    }
    struct wview *v = view_build(w, s, err);
    if (v == NULL)
        return err ? err->code : LB_ENOMEM;
    int rc = listeners_sync(w, s, err);
    if (rc != LB_OK) {
        view_free(v);
        return rc;
    }
    struct wview *old = w->view;
    if (old != NULL) {
        for (uint32_t i = 0; i < old->snap->n_backends; i++) {
            if (old->be[i] != NULL)
                old->be[i]->in_view = false;
        }
    }
    if (w->id == 0 && v->panic != (old != NULL && old->panic))
        lb_log(v->panic ? LB_LOG_WARN : LB_LOG_INFO, v->panic ? "pool_panic" : "pool_recovered",
               v->panic ? "every backend is down: failing open, traffic goes to all of them"
                        : "a backend is up again: health decides again");
    /* limits change; the counts of requests and retries in flight carry on */
    if (w->id == 0)
        retry_budget_configure(&w->dp->budget, s->retry_budget_min, s->retry_budget_percent);
    uint64_t now_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    /* New weights, or a new set of candidates, start a fresh smooth cycle:
     * running weights earned under the old ones would skew the first turns. A
     * swap that changed neither (a health or unrelated change) keeps them. */
    bool reshuffle = old == NULL || old->bal.n != v->bal.n;
    for (uint32_t k = 0; k < v->bal.n && !reshuffle; k++)
        reshuffle = v->cand[k] != old->cand[k] ||
                    strcmp(s->backends[v->cand[k]].id, old->snap->backends[old->cand[k]].id) != 0 ||
                    v->slots[k]->weight != s->backends[v->cand[k]].weight;
    if (reshuffle)
        balancer_restart(&v->bal);
    for (uint32_t i = 0; i < s->n_backends; i++) {
        struct backend_rt *b = v->be[i];
        const struct snap_backend *sb = &s->backends[i];
        if (b == NULL)
            continue;
        b->in_view = true;
        balancer_slot_set_weight(&b->bal, sb->weight);
        if (b->health == SNAP_HEALTH_DOWN && sb->health != SNAP_HEALTH_DOWN)
            b->bal.start_ms = now_ms; /* back from down: slow start */
        b->health = sb->health;
        b->max_conns = sb->max_connections;
        b->max_queue = sb->max_queue;
        if (b->sh != NULL) {
            if (sb->health == SNAP_HEALTH_DOWN &&
                eject_hand_over(&b->sh->eject, s->generation, now_ms)) {
                bshared_registry_note_ejected(w->dp->backends, -1);
                lb_log(LB_LOG_INFO, "backend_ejection_handed_over",
                       "backend %s (%s): marked down by the health checks, which decide its "
                       "return",
                       b->id, sb->host_port);
            }
            connq_kick(&b->sh->q, sb->max_connections, now_ms);
            if (sb->admin != SNAP_ADMIN_ACTIVE || (sb->health == SNAP_HEALTH_DOWN && !v->panic))
                connq_flush(&b->sh->q, now_ms);
        }
        if (b->addrlen != sb->addrlen || memcmp(&b->addr, &sb->addr, sb->addrlen) != 0) {
            /* a new address: pooled connections go to the old one */
            upstream_pool_free(w, b);
            b->addr = sb->addr;
            b->addrlen = sb->addrlen;
        }
        const void *tls = s->be_tls ? (const void *)s->be_tls[i] : NULL;
        if (tls != b->tls_ctx || strcmp(b->tls_name, sb->verify_name) != 0) {
            /* pooled connections were verified against other settings */
            upstream_pool_free(w, b);
            b->tls_ctx = tls;
            snprintf(b->tls_name, sizeof(b->tls_name), "%s", sb->verify_name);
        }
        if (b->send_proxy != sb->send_proxy) {
            /* pooled connections began with another PROXY header, or none */
            upstream_pool_free(w, b);
            b->send_proxy = sb->send_proxy;
        }
        snprintf(b->host_port, sizeof(b->host_port), "%s", sb->host_port);
        if (sb->admin != SNAP_ADMIN_ACTIVE && !lb_list_empty(&b->idle))
            upstream_pool_free(w, b);
    }
    if (old != NULL) {
        old->next = w->retired;
        w->retired = old;
        view_unref(w, old);
    }
    w->view = v;
    atomic_store(&w->served_generation, s->generation);
    atomic_store(&w->served_version, s->version);
    h1session_views_refresh(w);
    /* backend state named only by retired views goes once they are gone */
    if (w->retired == NULL)
        view_sweep(w, false);
    return LB_OK;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void worker_stop_loop(struct worker *w)
{
    ev_break(w->loop, EVBREAK_ALL);
}

static void worker_begin_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    if (w->load != NULL)
        atomic_store_explicit(w->load, DP_LOAD_OUT, memory_order_relaxed);
    if (atomic_load(&w->dp->handed_over)) {
        w->drain_idle_s = DP_HANDOVER_IDLE_S;
        /* The successor accepts on the same sockets. Closing ours now would
         * leave their registrations in this loop's epoll set (epoll forgets
         * a socket only when its last descriptor anywhere closes), firing
         * under descriptor numbers that other threads may reuse meanwhile:
         * stop watching, close in worker_join(). */
        for (struct listener *l = w->listeners; l != NULL; l = l->next) {
            ev_io_stop(w->loop, &l->io);
            ev_timer_stop(w->loop, &l->pause);
        }
    } else {
        listeners_close_all(w);
    }
    h1session_drain_all(w);
    h2session_drain_all(w);
    upstream_pool_expire(w, INFINITY);
    if (w->n_sessions == 0)
        worker_stop_loop(w);
}

static void worker_on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct dp *dp = w->dp;
    if (atomic_load(&dp->stopping)) {
        h1session_close_all(w);
        h2session_close_all(w);
        worker_stop_loop(w);
        return;
    }
    if (atomic_load(&dp->draining)) {
        worker_begin_drain(w);
        return;
    }
    struct snap *s = dp_snapshot(dp);
    if (s != NULL && (w->view == NULL || s != w->view->snap)) {
        struct lb_err err = {0};
        if (worker_adopt(w, s, &err) != LB_OK)
            lb_log(LB_LOG_ERROR, "snapshot_apply_failed", "worker %u keeps generation %llu: %s",
                   w->id, (unsigned long long)(w->view ? w->view->snap->generation : 0), err.msg);
    }
    snap_unref(s);
}

/* ---- queue grants ---------------------------------------------------------------------- */

static void worker_wake_grants(void *arg)
{
    struct worker *w = arg;
    ev_async_send(w->loop, &w->grants);
}

static void worker_on_grants(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct connq_waiter *cw;
    while ((cw = connq_inbox_pop(&w->inbox)) != NULL)
        exchange_on_grant(cw);
}

static void worker_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    lb_logbuf_flush(w->log);
    upstream_pool_expire(w, ev_now(loop));
    upstream_pool_yield(w);
    h1session_free_list_trim(w, MAX_FREE_SESSIONS);
    h2session_free_list_trim(w);
    probes_run(w);
    if (w->n_sessions > w->sessions_high)
        w->sessions_high = w->n_sessions;
    if (++w->trim_ticks >= TRIM_TICKS) {
        w->trim_ticks = 0;
        /* far fewer connections than at the height of these 2 s: a burst
         * has passed, and what it left in free lists is not needed */
        bool calmer = w->sessions_high >= w->n_sessions + TRIM_CALMER;
        w->sessions_high = w->n_sessions;
        if (calmer)
            h1session_free_list_trim(w, FREE_SESSIONS_CALM);
        /* glibc keeps freed memory in the thread's arena: without a trim the
         * peak of a burst (buffers, TLS connections) stays resident */
        if (buf_pool_trim(&w->bufs) >= TRIM_MALLOC_MIN || calmer)
            malloc_trim(0);
    }
}

static void worker_on_awake(struct ev_loop *loop, ev_check *c, int revents)
{
    struct worker *w = c->data;
    w->awake_ms = worker_clock_ms(ev_now(loop)) | 1;
    worker_publish(w);
}

static void worker_on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct worker *w = p->data;
    h2session_run_pending(w);
    /* closed connections may be referenced only inside their callbacks */
    h1session_free_list_trim(w, MAX_FREE_SESSIONS);
    h2session_free_list_trim(w);
    /* the last connection of a drain closed during this turn */
    if (w->draining && w->n_sessions == 0)
        worker_stop_loop(w);
    w->awake_ms = 0; /* the loop waits for events next */
    worker_publish(w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "lb-worker-%u", w->id);
    pthread_setname_np(pthread_self(), name);
    worker_publish(w);
    ev_run(w->loop, 0);
    if (w->load != NULL)
        atomic_store_explicit(w->load, DP_LOAD_OUT, memory_order_relaxed);
    h1session_close_all(w);
    h2session_close_all(w);
    h1session_free_list_trim(w, 0);
    h2session_free_list_trim(w);
    lb_logbuf_flush(w->log);
    atomic_store(&w->stopped, true);
    return NULL;
}

int worker_start(struct worker *w, struct dp *dp, unsigned id, struct snap *snap,
                 struct lb_err *err)
{
    memset(w, 0, sizeof(*w));
    w->dp = dp;
    w->id = id;
    w->load = dp->load != NULL ? &dp->load[id] : NULL;
    w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 16) ^ id ^ (uint64_t)time(NULL);
    if (metrics_worker_init(&w->metrics) != 0)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for worker metrics");
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        metrics_worker_deinit(&w->metrics);
        return lb_err_set(err, LB_ESYS, errno, "cannot create the event loop of worker %u", id);
    }
    connq_inbox_init(&w->inbox, worker_wake_grants, w);
    lb_map_init(&w->be_map, NULL, NULL);
    lb_list_init(&w->pool);
    lb_list_init(&w->sessions);
    lb_list_init(&w->h2conns);
    lb_list_init(&w->h2_pending);
    w->log = lb_logbuf_new(LOGBUF_SIZE);
    int rc = w->log ? worker_adopt(w, snap, err)
                    : lb_err_set(err, LB_ENOMEM, 0, "out of memory for the log buffer");
    if (rc != LB_OK) {
        listeners_close_all(w);
        worker_join(w);
        return rc;
    }
    ev_async_init(&w->wake, worker_on_wake);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    ev_async_init(&w->grants, worker_on_grants);
    w->grants.data = w;
    ev_async_start(w->loop, &w->grants);
    ev_timer_init(&w->tick, worker_on_tick, TICK_SECONDS, TICK_SECONDS);
    w->tick.data = w;
    ev_timer_start(w->loop, &w->tick);
    ev_prepare_init(&w->prep, worker_on_prepare);
    w->prep.data = w;
    ev_prepare_start(w->loop, &w->prep);
    ev_check_init(&w->awake, worker_on_awake);
    w->awake.data = w;
    ev_check_start(w->loop, &w->awake);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        listeners_close_all(w);
        worker_join(w);
        return lb_err_set(err, LB_ESYS, errno, "cannot start worker thread %u", id);
    }
    return LB_OK;
}

void worker_notify(struct worker *w)
{
    ev_async_send(w->loop, &w->wake);
}

void worker_join(struct worker *w)
{
    if (w->thread)
        pthread_join(w->thread, NULL);
    w->thread = 0;
    listeners_close_all(w);
    if (w->loop != NULL)
        probes_free(w);
    if (w->view != NULL) {
        for (uint32_t i = 0; i < w->view->snap->n_backends; i++)
            if (w->view->be[i] != NULL)
                w->view->be[i]->in_view = false;
        view_free(w->view);
        w->view = NULL;
    }
    while (w->retired != NULL) {
        struct wview *v = w->retired;
        w->retired = v->next;
        view_free(v);
    }
    view_sweep(w, true);
    lb_map_deinit(&w->be_map);
    buf_pool_deinit(&w->bufs);
    free(w->scratch_hdrs);
    lb_logbuf_free(w->log);
    w->log = NULL;
    if (w->loop)
        ev_loop_destroy(w->loop);
    w->loop = NULL;
    metrics_worker_deinit(&w->metrics);
    connq_inbox_deinit(&w->inbox);
}
