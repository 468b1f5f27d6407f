/* dataplane/dp.c: the process's newest snapshot, handed to its threads. */
#include "dp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handover.h"
#include "lb_err.h"
#include "snapshot.h"

struct snap *dp_snapshot(struct dp *dp)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *s = snap_ref(dp->snap);
    pthread_mutex_unlock(&dp->lock);
    return s;
}

void dp_swap(struct dp *dp, struct snap *s)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *old = dp->snap;
    dp->snap = s;
    pthread_mutex_unlock(&dp->lock);
    snap_unref(old);
}

uint32_t dp_load_least(struct dp *dp, unsigned self, uint32_t now_ms, uint32_t busy_ms,
                       uint32_t busy_extra)
{
    uint32_t least = UINT32_MAX;
    for (unsigned i = 0; dp->load != NULL && i < dp->n_planned; i++) {
        uint64_t v = atomic_load_explicit(&dp->load[i], memory_order_relaxed);
        uint32_t since = (uint32_t)v;
        uint64_t n = v >> 32;
        if (i == self || v == DP_LOAD_OUT)
            continue;
        /* a clock read on another thread may be a little ahead of <now_ms>:
         * the difference wraps, and that worker counts as busy */
        if (since != 0 && now_ms - since > busy_ms)
            n += busy_extra;
        if (n < least)
            least = (uint32_t)n;
    }
    return least;
}

#define LISTEN_BACKLOG 4096

int dp_socket_bound(const struct snap_frontend *fe, struct lb_err *err)
{
    int fd = socket(fe->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        lb_err_set(err, LB_ESYS, errno, "socket for %s", fe->key);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* the snapshot check binds a probe socket beside it; a second process
     * (a manual start during a hand-over) may join the address too */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
        lb_err_set(err, LB_ESYS, errno, "SO_REUSEPORT on %s", fe->key);
        close(fd);
        return -1;
    }
    if (fe->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* Linux hands TCP_NODELAY on to every accepted socket: no system call
     * per connection for it */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&fe->addr, fe->addrlen) == -1) {
        lb_err_set(err, LB_ESYS, errno, "cannot bind %s (frontend %s)", fe->key, fe->name);
        close(fd);
        return -1;
    }
    return fd;
}

/* A socket bound and listening for <fe>; -1 with <err> set. */
static int listener_open(const struct snap_frontend *fe, struct lb_err *err)
{
    int fd = dp_socket_bound(fe, err);
    if (fd >= 0 && listen(fd, LISTEN_BACKLOG) == -1) {
        lb_err_set(err, LB_ESYS, errno, "listen %s", fe->key);
        close(fd);
        return -1;
    }
    return fd;
}

/* Under the lock: records <fd> (taken over) as a socket of <key>, held by
 * worker <holder> alone, or -1 (shared, or a takeover's not yet dealt). */
static int listener_record(struct dp *dp, int fd, const char *key, int holder, struct lb_err *err)
{
    if (dp->n_listeners == dp->cap_listeners) {
        size_t cap = dp->cap_listeners ? dp->cap_listeners * 2 : 16;
        struct dp_listener *a = realloc(dp->listeners, cap * sizeof(*a));
        if (a == NULL) {
            close(fd);
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory recording the listener %s", key);
        }
        dp->listeners = a;
        dp->cap_listeners = cap;
    }
    struct dp_listener *l = &dp->listeners[dp->n_listeners++];
    l->fd = fd;
    l->refs = 0;
    l->holder = holder;
    snprintf(l->key, sizeof(l->key), "%s", key);
    return LB_OK;
}

/* Under the lock: the first worker to look for <fe> adopts every socket a
 * takeover brought for it. */
static int listeners_adopt(struct dp *dp, const struct snap_frontend *fe, struct lb_err *err)
{
    for (size_t i = 0; i < dp->n_listeners; i++)
        if (strcmp(dp->listeners[i].key, fe->key) == 0)
            return LB_OK;
    for (size_t j = 0; dp->inherit != NULL && j < dp->inherit->n_fds; j++) {
        struct handover_fd *f = &dp->inherit->fds[j];
        if (f->fd < 0 || strcmp(f->key, fe->key) != 0)
            continue;
        int fd = f->fd;
        f->fd = -1;
        /* the descriptor's flags came from the old process: non-blocking */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (listener_record(dp, fd, fe->key, -1, err) != LB_OK)
            return LB_ENOMEM;
    }
    return LB_OK;
}

/* Under the lock: marks the sockets of <fe> that worker <w> (of <n>)
 * accepts on; binds one when there is none for it. A TLS frontend's
 * sockets are every worker's; a plain one's are dealt round robin (the
 * k-th to worker k mod n, each queue then has one worker) and a worker left
 * without one binds its own. */
static int listeners_pick(struct dp *dp, const struct snap_frontend *fe, unsigned w, unsigned n,
                          bool *pick, struct lb_err *err)
{
    size_t k = 0, mine = 0;
    for (size_t i = 0; i < dp->n_listeners; i++) {
        struct dp_listener *l = &dp->listeners[i];
        pick[i] = false;
        if (strcmp(l->key, fe->key) != 0)
            continue;
        if (fe->tls)
            pick[i] = true;
        else if (l->holder == (int)w || (l->holder < 0 && n > 0 && k % n == w))
            pick[i] = true;
        k++;
        if (pick[i] && !fe->tls)
            l->holder = (int)w;
        mine += pick[i];
    }
    if (mine > 0)
        return LB_OK;
    int fd = listener_open(fe, err);
    if (fd < 0 || listener_record(dp, fd, fe->key, fe->tls ? -1 : (int)w, err) != LB_OK)
        return err ? err->code : LB_ESYS;
    pick[dp->n_listeners - 1] = true;
    return LB_OK;
}

int dp_listeners_acquire(struct dp *dp, const struct snap_frontend *fe, unsigned worker, int *fds,
                         int *shared, size_t max, struct lb_err *err)
{
    pthread_mutex_lock(&dp->lock);
    int got = 0;
    int rc = listeners_adopt(dp, fe, err);
    /* after the adoption (it records sockets), one more slot: listeners_pick
     * may record one */
    bool *pick = rc == LB_OK ? calloc(dp->n_listeners + 1, sizeof(*pick)) : NULL;
    if (rc == LB_OK && pick == NULL)
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory opening %s", fe->key);
    if (rc == LB_OK)
        rc = listeners_pick(dp, fe, worker, dp->n_planned, pick, err);
    for (size_t i = 0; rc == LB_OK && i < dp->n_listeners && (size_t)got < max; i++) {
        struct dp_listener *l = &dp->listeners[i];
        if (!pick[i])
            continue;
        int fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
        if (fd == -1) {
            rc = lb_err_set(err, LB_ESYS, errno, "duplicating the listening socket %s", fe->key);
            break;
        }
        l->refs++;
        fds[got] = fd;
        shared[got++] = l->fd;
    }
    free(pick);
    pthread_mutex_unlock(&dp->lock);
    if (rc != LB_OK) {
        for (int k = 0; k < got; k++) {
            close(fds[k]);
            dp_listener_release(dp, shared[k]);
        }
        return -1;
    }
    return got;
}

void dp_listener_release(struct dp *dp, int shared)
{
    pthread_mutex_lock(&dp->lock);
    for (size_t i = 0; i < dp->n_listeners; i++) {
        struct dp_listener *l = &dp->listeners[i];
        if (l->fd != shared)
            continue;
        if (l->refs > 0 && --l->refs == 0) {
            /* after a hand-over the successor holds the same socket: its
             * accept queue lives on there */
            close(l->fd);
            /* in order: a plain frontend's sockets are dealt by position */
            memmove(l, l + 1, (dp->n_listeners - i - 1) * sizeof(*l));
            dp->n_listeners--;
        }
        break;
    }
    pthread_mutex_unlock(&dp->lock);
}

int dp_listeners_export(struct dp *dp, struct handover_state *st, struct lb_err *err)
{
    int rc = LB_OK;
    /* under the lock: a worker cannot close a socket between its lookup and
     * its dup */
    pthread_mutex_lock(&dp->lock);
    for (size_t i = 0; i < dp->n_listeners && rc == LB_OK; i++)
        rc = handover_state_add_fd(st, dp->listeners[i].fd, dp->listeners[i].key, err);
    pthread_mutex_unlock(&dp->lock);
    return rc;
}
