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

#define LISTEN_BACKLOG 4096

/* A socket bound and listening for <fe>; -1 with <err> set. */
static int listener_open(const struct snap_frontend *fe, struct lb_err *err)
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
        lb_err_set(err, LB_ESYS, errno, "bind %s (frontend %s)", fe->key, fe->name);
        close(fd);
        return -1;
    }
    if (listen(fd, LISTEN_BACKLOG) == -1) {
        lb_err_set(err, LB_ESYS, errno, "listen %s", fe->key);
        close(fd);
        return -1;
    }
    return fd;
}

/* Under the lock: records <fd> (taken over) as a socket of <key>. */
static int listener_record(struct dp *dp, int fd, const char *key, struct lb_err *err)
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
    snprintf(l->key, sizeof(l->key), "%s", key);
    return LB_OK;
}

/* Under the lock: the process's sockets of <fe>, adopting a takeover's or
 * binding one if it has none. Returns how many, or -1. */
static int listeners_find_or_open(struct dp *dp, const struct snap_frontend *fe, struct lb_err *err)
{
    int n = 0;
    for (size_t i = 0; i < dp->n_listeners; i++)
        n += strcmp(dp->listeners[i].key, fe->key) == 0;
    for (size_t j = 0; n == 0 && dp->inherit != NULL && j < dp->inherit->n_fds; j++) {
        struct handover_fd *f = &dp->inherit->fds[j];
        if (f->fd < 0 || strcmp(f->key, fe->key) != 0)
            continue;
        int fd = f->fd;
        f->fd = -1;
        /* the descriptor's flags came from the old process: non-blocking */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (listener_record(dp, fd, fe->key, err) != LB_OK)
            return -1;
    }
    for (size_t i = 0; n == 0 && i < dp->n_listeners; i++)
        n += strcmp(dp->listeners[i].key, fe->key) == 0;
    if (n > 0)
        return n;
    int fd = listener_open(fe, err);
    if (fd < 0 || listener_record(dp, fd, fe->key, err) != LB_OK)
        return -1;
    return 1;
}

int dp_listeners_acquire(struct dp *dp, const struct snap_frontend *fe, int *fds, int *shared,
                         size_t max, struct lb_err *err)
{
    pthread_mutex_lock(&dp->lock);
    int n = listeners_find_or_open(dp, fe, err), got = 0;
    for (size_t i = 0; n > 0 && i < dp->n_listeners && (size_t)got < max; i++) {
        struct dp_listener *l = &dp->listeners[i];
        if (strcmp(l->key, fe->key) != 0)
            continue;
        int fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
        if (fd == -1) {
            lb_err_set(err, LB_ESYS, errno, "duplicating the listening socket %s", fe->key);
            for (int k = 0; k < got; k++) {
                close(fds[k]);
                for (size_t m = 0; m < dp->n_listeners; m++)
                    dp->listeners[m].refs -= dp->listeners[m].fd == shared[k];
            }
            got = -1;
            break;
        }
        l->refs++;
        fds[got] = fd;
        shared[got++] = l->fd;
    }
    pthread_mutex_unlock(&dp->lock);
    return n < 0 ? -1 : got;
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
            *l = dp->listeners[--dp->n_listeners];
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
