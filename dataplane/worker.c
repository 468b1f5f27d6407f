/* dataplane/worker.c */
#include "worker.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "dp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "upstream.h"

#define MAX_FREE_BUFS      256
#define MAX_FREE_CONNS     256
#define ACCEPT_BATCH       64
#define ACCEPT_PAUSE_MIN_S 0.1
#define ACCEPT_PAUSE_MAX_S 1.0
#define LISTEN_BACKLOG     4096
#define LOGBUF_SIZE        (64u * 1024u)
#define TICK_SECONDS       0.1

/* ---- the process context ---------------------------------------------------- */

struct snap *dp_snapshot(struct dp *dp)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *s = snap_ref(dp->snap);
    pthread_mutex_unlock(&dp->lock);
    return s;
}

void dp_publish(struct dp *dp, struct snap *s)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *old = dp->snap;
    dp->snap = s;
    pthread_mutex_unlock(&dp->lock);
    snap_unref(old);
    for (unsigned i = 0; i < dp->n_workers; i++)
        worker_notify(&dp->workers[i]);
}

/* ---- buffers ------------------------------------------------------------------ */

struct buf *worker_buf_get(struct worker *w)
{
    struct buf *b = w->free_bufs;
    if (b != NULL) {
        w->free_bufs = b->next;
        w->n_free_bufs--;
    } else {
        b = malloc(sizeof(*b) + WORKER_BUF_SIZE);
        if (b == NULL)
            return NULL;
        b->cap = WORKER_BUF_SIZE;
    }
    b->next = NULL;
    b->start = b->end = 0;
    return b;
}

struct buf *worker_buf_grow(struct worker *w, struct buf *b, uint32_t cap)
{
    if (cap <= b->cap)
        return b;
    struct buf *nb = malloc(sizeof(*nb) + cap);
    if (nb == NULL)
        return NULL;
    nb->next = NULL;
    nb->cap = cap;
    nb->start = 0;
    nb->end = b->end - b->start;
    memcpy(nb->data, b->data + b->start, nb->end);
    worker_buf_put(w, b);
    return nb;
}

void worker_buf_put(struct worker *w, struct buf *b)
{
    if (b == NULL)
        return;
    if (b->cap != WORKER_BUF_SIZE || w->n_free_bufs >= MAX_FREE_BUFS) {
        free(b);
        return;
    }
    b->next = w->free_bufs;
    w->free_bufs = b;
    w->n_free_bufs++;
}

void worker_set_events(struct ev_loop *loop, ev_io *io, int *cur, int want)
{
    if (*cur == want)
        return;
    if (*cur != 0)
        ev_io_stop(loop, io);
    if (want != 0) {
        ev_io_modify(io, want);
        ev_io_start(loop, io);
    }
    *cur = want;
}

/* ---- backend runtime state, by id ---------------------------------------------- */

static struct backend_rt *be_find(struct worker *w, const char *id)
{
    return lb_map_get(&w->be_map, id);
}

static struct backend_rt *be_get(struct worker *w, const char *id)
{
    struct backend_rt *b = be_find(w, id);
    if (b != NULL)
        return b;
    if (!lb_map_reserve(&w->be_map, lb_map_count(&w->be_map) + 1))
        return NULL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->id = strdup(id);
    int slot = metrics_be_slot(&w->metrics, id);
    if (b->id == NULL || slot < 0) {
        free(b->id);
        free(b);
        return NULL;
    }
    b->stat_slot = (uint32_t)slot;
    b->sh = w->dp->backends ? bshared_registry_get(w->dp->backends, id, NULL) : NULL;
    b->breaker = b->sh ? b->sh->breaker : NULL;
    b->health = SNAP_HEALTH_UNKNOWN;
    /* a backend added to a running worker ramps up (slow start) */
    if (w->view != NULL)
        b->bal.start_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    lb_map_add(&w->be_map, b->id, b, NULL); /* room was reserved above */
    return b;
}

/* Frees the runtime state of backends no view names and nothing uses. */
static void be_sweep(struct worker *w, bool all)
{
    uint32_t *gone = NULL;
    uint32_t n_gone = 0, cap_gone = 0;
    uint32_t pos = 0;
    struct backend_rt *b;
    while ((b = lb_map_next(&w->be_map, &pos, NULL)) != NULL) {
        if (!all && (b->in_view || b->active > 0))
            continue;
        upstream_pool_free(w, b->idle);
        lb_map_del(&w->be_map, b->id);
        if (b->sh != NULL)
            bshared_registry_release(w->dp->backends, b->sh);
        if (n_gone == cap_gone) {
            cap_gone = cap_gone ? cap_gone * 2 : 64;
            uint32_t *g = realloc(gone, cap_gone * sizeof(*g));
            if (g != NULL)
                gone = g;
            else
                cap_gone = n_gone;
        }
        if (n_gone < cap_gone)
            gone[n_gone++] = b->stat_slot;
        free(b->id);
        free(b);
    }
    if (!all)
        metrics_be_release(&w->metrics, gone, n_gone);
    free(gone);
}

/* ---- views ------------------------------------------------------------------------ */

static void view_free(struct wview *v)
{
    if (v == NULL)
        return;
    snap_unref(v->snap);
    free(v->be);
    free(v->cand);
    free(v->slots);
    free(v->fe_stat);
    free(v);
}

void worker_view_unref(struct worker *w, struct wview *v)
{
    if (v == NULL || --v->refs > 0)
        return;
    struct wview **pp = &w->retired;
    while (*pp != NULL && *pp != v)
        pp = &(*pp)->next;
    if (*pp == v)
        *pp = v->next;
    view_free(v);
    if (w->retired == NULL && w->view != NULL)
        be_sweep(w, false);
}

static struct wview *view_build(struct worker *w, struct snap *s, struct lb_err *err)
{
    struct wview *v = calloc(1, sizeof(*v));
    if (v == NULL)
        goto nomem;
    v->snap = snap_ref(s);
    v->refs = 1;
    v->be = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->be));
    v->slots = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->slots));
    v->cand = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->cand));
    v->fe_stat = calloc(s->n_frontends, sizeof(*v->fe_stat));
    if (v->be == NULL || v->slots == NULL || v->cand == NULL || v->fe_stat == NULL)
        goto nomem;
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        int slot = metrics_fe_slot(&w->metrics, s->frontends[i].name);
        if (slot < 0) {
            view_free(v);
            lb_err_set(err, LB_EINVAL, 0, "frontends: more than %d distinct frontend names",
                       METRICS_MAX_FE);
            return NULL;
        }
        v->fe_stat[i] = (uint16_t)slot;
    }
    /* Only active backends get runtime state made for them: a draining or
     * disabled one keeps what it has (requests finishing, a pool to close)
     * and nothing more, so 10,000 configured but disabled backends cost a
     * worker nothing at a swap. */
    for (uint32_t i = 0; i < s->n_backends; i++) {
        bool active = s->backends[i].admin == SNAP_ADMIN_ACTIVE;
        struct backend_rt *b =
            active ? be_get(w, s->backends[i].id) : be_find(w, s->backends[i].id);
        if (b == NULL && active)
            goto nomem;
        v->be[i] = b;
    }
    /* draining and disabled backends never take a new request: a pick does
     * not even look at them (10,000 configured, a few active, stays cheap) */
    uint32_t n_cand = 0;
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (s->backends[i].admin != SNAP_ADMIN_ACTIVE)
            continue;
        v->cand[n_cand] = i;
        v->slots[n_cand++] = &v->be[i]->bal;
    }
    v->bal.algorithm = s->algorithm;
    v->bal.n = n_cand;
    v->bal.slots = v->slots;
    v->bal.slow_start_ms = s->slow_start_ms;
    balancer_seed(&v->bal, w->rng ^ (uint64_t)(uintptr_t)v);
    /* every active backend known down: fail open (health ignored) or 503 */
    bool any_active = false, any_up = false;
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (s->backends[i].admin != SNAP_ADMIN_ACTIVE)
            continue;
        any_active = true;
        any_up = any_up || s->backends[i].health != SNAP_HEALTH_DOWN;
    }
    v->panic = s->fail_open && any_active && !any_up;
    return v;
nomem:
    view_free(v);
    lb_err_set(err, LB_ENOMEM, 0, "out of memory building the worker view");
    return NULL;
}

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

static void listener_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct listener *l = io->data;
    struct worker *w = l->w;
    for (int i = 0; i < ACCEPT_BATCH && !w->draining; i++) {
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
        conn_accept(w, fd, &peer, l->fe_index);
    }
}

static int listener_open(struct worker *w, const struct snap_frontend *fe, uint32_t index,
                         struct lb_err *err)
{
    int fd = socket(fe->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "socket for %s", fe->key);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
        int e = errno;
        close(fd);
        return lb_err_set(err, LB_ESYS, e, "SO_REUSEPORT on %s", fe->key);
    }
    if (fe->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* Linux hands TCP_NODELAY on to every accepted socket: no system call
     * per connection for it */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&fe->addr, fe->addrlen) == -1) {
        int e = errno;
        close(fd);
        return lb_err_set(err, LB_ESYS, e, "bind %s (frontend %s)", fe->key, fe->name);
    }
    if (listen(fd, LISTEN_BACKLOG) == -1) {
        int e = errno;
        close(fd);
        return lb_err_set(err, LB_ESYS, e, "listen %s", fe->key);
    }
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory opening %s", fe->key);
    }
    l->w = w;
    l->fd = fd;
    l->fe_index = index;
    snprintf(l->key, sizeof(l->key), "%s", fe->key);
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->pause, listener_on_resume, 0., 0.);
    l->pause.data = l;
    if (!w->draining)
        ev_io_start(w->loop, &l->io);
    l->next = w->listeners;
    w->listeners = l;
    return LB_OK;
}

static void listener_close(struct worker *w, struct listener *l)
{
    ev_io_stop(w->loop, &l->io);
    ev_timer_stop(w->loop, &l->pause);
    close(l->fd);
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

/* Opens listeners for new frontends and closes those of removed ones;
 * the others keep their sockets (and their accept queues). */
static int listeners_sync(struct worker *w, const struct snap *s, struct lb_err *err)
{
    for (struct listener *l = w->listeners; l != NULL; l = l->next)
        l->seen = false;
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        struct listener *l = w->listeners;
        while (l != NULL && strcmp(l->key, s->frontends[i].key) != 0)
            l = l->next;
        if (l != NULL) {
            l->seen = true;
            l->fe_index = i;
            continue;
        }
        int rc = listener_open(w, &s->frontends[i], i, err);
        if (rc != LB_OK)
            return rc;
        w->listeners->seen = true;
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
            upstream_pool_free(w, b->idle);
            b->addr = sb->addr;
            b->addrlen = sb->addrlen;
        }
        const void *tls = s->be_tls ? (const void *)s->be_tls[i] : NULL;
        if (tls != b->tls_ctx || strcmp(b->tls_name, sb->verify_name) != 0) {
            /* pooled connections were verified against other settings */
            upstream_pool_free(w, b->idle);
            b->tls_ctx = tls;
            snprintf(b->tls_name, sizeof(b->tls_name), "%s", sb->verify_name);
        }
        snprintf(b->host_port, sizeof(b->host_port), "%s", sb->host_port);
        if (sb->admin != SNAP_ADMIN_ACTIVE && b->idle != NULL)
            upstream_pool_free(w, b->idle);
    }
    if (old != NULL) {
        old->next = w->retired;
        w->retired = old;
        worker_view_unref(w, old);
    }
    w->view = v;
    conn_views_refresh(w);
    /* backend state named only by retired views goes once they are gone */
    if (w->retired == NULL)
        be_sweep(w, false);
    return LB_OK;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void worker_stop_loop(struct worker *w)
{
    ev_break(w->loop, EVBREAK_ALL);
}

void worker_conn_closed(struct worker *w)
{
    if (w->draining && w->n_conns == 0)
        worker_stop_loop(w);
}

static void worker_begin_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    listeners_close_all(w);
    conn_drain_all(w);
    upstream_pool_expire(w, INFINITY);
    if (w->n_conns == 0)
        worker_stop_loop(w);
}

static void worker_on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct dp *dp = w->dp;
    if (atomic_load(&dp->stopping)) {
        conn_close_all(w);
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

/* ---- probes of ejected backends ----------------------------------------------------- */

/* A TCP connect to an ejected backend whose probe is due. */
struct probe {
    struct worker *w;
    struct bshared *sh; /* a registry reference */
    ev_io io;
    ev_timer timer;
    int fd;
    char host_port[72];
    struct probe *next;
};

static void probe_end(struct probe *p, bool ok)
{
    struct worker *w = p->w;
    const struct snap *s = w->view->snap;
    struct eject_config ec = s->eject;
    ec.controlled = w->dp->controlled;
    uint64_t now_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    if (eject_probe_done(&p->sh->eject, &ec, ok, now_ms)) {
        bshared_registry_note_ejected(w->dp->backends, -1);
        lb_log(LB_LOG_INFO, "backend_returned",
               "backend %s (%s): a probe connected; back in "
               "rotation",
               p->sh->id, p->host_port);
    } else if (!ok && lb_log_enabled(LB_LOG_DEBUG)) {
        lb_log(LB_LOG_DEBUG, "backend_probe_failed", "backend %s (%s): next probe in %u ms",
               p->sh->id, p->host_port, eject_backoff_ms(&p->sh->eject));
    }
    ev_io_stop(w->loop, &p->io);
    ev_timer_stop(w->loop, &p->timer);
    if (p->fd >= 0)
        close(p->fd);
    struct probe **pp = &w->probes;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    bshared_registry_release(w->dp->backends, p->sh);
    free(p);
}

static void probe_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct probe *p = io->data;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
        soerr = errno;
    probe_end(p, soerr == 0);
}

static void probe_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    probe_end(t->data, false);
}

static void probe_start(struct worker *w, struct backend_rt *be)
{
    struct probe *p = calloc(1, sizeof(*p));
    struct bshared *sh = bshared_registry_find(w->dp->backends, be->id);
    if (p == NULL || sh == NULL) {
        free(p);
        bshared_registry_release(w->dp->backends, sh);
        return;
    }
    p->w = w;
    p->sh = sh;
    p->fd = -1;
    snprintf(p->host_port, sizeof(p->host_port), "%s", be->host_port);
    p->next = w->probes;
    w->probes = p;
    ev_io_init(&p->io, probe_on_io, 0, EV_WRITE);
    p->io.data = p;
    ev_timer_init(&p->timer, probe_on_timeout, w->view->snap->timeouts.upstream_connect / 1000.0,
                  0.);
    p->timer.data = p;
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        probe_end(p, false);
        return;
    }
    p->fd = fd;
    if (connect(fd, (const struct sockaddr *)&be->addr, be->addrlen) == 0) {
        probe_end(p, true);
        return;
    }
    if (errno != EINPROGRESS) {
        probe_end(p, false);
        return;
    }
    ev_io_set(&p->io, fd, EV_WRITE);
    ev_io_start(w->loop, &p->io);
    ev_timer_start(w->loop, &p->timer);
}

/* Worker 0, each tick: probes the ejected backends whose probe is due. */
static void probes_run(struct worker *w)
{
    if (w->id != 0 || w->view == NULL || w->draining ||
        bshared_registry_ejected(w->dp->backends) == 0)
        return;
    uint64_t now_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    const struct wview *v = w->view;
    for (uint32_t k = 0; k < v->bal.n; k++) {
        struct backend_rt *be = v->be[v->cand[k]];
        if (be->sh != NULL && eject_probe_claim(&be->sh->eject, now_ms))
            probe_start(w, be);
    }
}

static void probes_free(struct worker *w)
{
    while (w->probes != NULL) {
        struct probe *p = w->probes;
        w->probes = p->next;
        ev_io_stop(w->loop, &p->io);
        ev_timer_stop(w->loop, &p->timer);
        if (p->fd >= 0)
            close(p->fd);
        bshared_registry_release(w->dp->backends, p->sh);
        free(p);
    }
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
        conn_on_grant(cw);
}

static void worker_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    lb_logbuf_flush(w->log);
    upstream_pool_expire(w, ev_now(loop));
    upstream_pool_yield(w);
    conn_free_list_trim(w, MAX_FREE_CONNS);
    probes_run(w);
}

static void worker_on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct worker *w = p->data;
    /* closed connections may be referenced only inside their callbacks */
    conn_free_list_trim(w, MAX_FREE_CONNS);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "lb-worker-%u", w->id);
    pthread_setname_np(pthread_self(), name);
    ev_run(w->loop, 0);
    conn_close_all(w);
    conn_free_list_trim(w, 0);
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
    be_sweep(w, true);
    lb_map_deinit(&w->be_map);
    while (w->free_bufs != NULL) {
        struct buf *b = w->free_bufs;
        w->free_bufs = b->next;
        free(b);
    }
    free(w->scratch_hdrs);
    lb_logbuf_free(w->log);
    w->log = NULL;
    if (w->loop)
        ev_loop_destroy(w->loop);
    w->loop = NULL;
    metrics_worker_deinit(&w->metrics);
    connq_inbox_deinit(&w->inbox);
}
