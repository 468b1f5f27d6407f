/* dataplane/dp.c: the process's newest snapshot, handed to its threads. */
#include "dp.h"

#include <stdio.h>
#include <stdlib.h>

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

int dp_listener_add(struct dp *dp, int fd, const char *key, struct lb_err *err)
{
    pthread_mutex_lock(&dp->lock);
    if (dp->n_listeners == dp->cap_listeners) {
        size_t cap = dp->cap_listeners ? dp->cap_listeners * 2 : 16;
        struct dp_listener *a = realloc(dp->listeners, cap * sizeof(*a));
        if (a == NULL) {
            pthread_mutex_unlock(&dp->lock);
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory recording the listener %s", key);
        }
        dp->listeners = a;
        dp->cap_listeners = cap;
    }
    struct dp_listener *l = &dp->listeners[dp->n_listeners++];
    l->fd = fd;
    snprintf(l->key, sizeof(l->key), "%s", key);
    pthread_mutex_unlock(&dp->lock);
    return LB_OK;
}

void dp_listener_remove(struct dp *dp, int fd)
{
    pthread_mutex_lock(&dp->lock);
    for (size_t i = 0; i < dp->n_listeners; i++) {
        if (dp->listeners[i].fd == fd) {
            dp->listeners[i] = dp->listeners[--dp->n_listeners];
            break;
        }
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
