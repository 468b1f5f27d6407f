/* dataplane/dp.h: the data-plane process context shared by its threads, and
 * the newest snapshot they adopt. */
#ifndef LB_DP_H
#define LB_DP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "retry.h"

struct bshared_registry;
struct handover_state;
struct lb_err;
struct fshared_registry;
struct tls_tickets;
struct snap;
struct sync;
struct worker;

/* One listening socket of one worker, as the process's hand-over sees it. */
struct dp_listener {
    int fd;
    char key[80]; /* the frontend's "address:port" */
};

struct dp {
    pthread_mutex_t lock; /* guards <snap> and <listeners> */
    struct snap *snap;    /* newest valid snapshot; workers adopt it */
    atomic_bool draining; /* graceful shutdown requested */
    atomic_bool stopping; /* drain time is up: close everything */
    unsigned n_workers;
    struct worker *workers;
    struct bshared_registry *backends;  /* per backend id, shared by the workers */
    struct fshared_registry *frontends; /* per frontend name; bound into each snapshot */
    struct retry_budget budget;         /* retries in flight, all workers */
    bool controlled;                    /* fed by a control plane (--control) */
    struct tls_tickets *tickets;        /* session-ticket keys, shared by TLS frontends */
    struct sync *sync;                  /* main thread only: the feed (for /metrics), or NULL */
    struct dp_listener *listeners;      /* every worker's listening sockets (under <lock>) */
    size_t n_listeners, cap_listeners;
    atomic_bool handed_over;        /* the drain follows a hand-over: idle keep-alive
                                     * connections get a last request (DP_HANDOVER_IDLE_S) */
    struct handover_state *inherit; /* main thread, while the workers start: the sockets
                                     * a takeover brought; NULL otherwise */
};

/* How long, in a drain after a hand-over, an idle keep-alive connection
 * stays open for one more request (answered with Connection: close) before
 * it is closed: a client that sent its next request just as the drain began
 * gets an answer instead of a reset. */
#define DP_HANDOVER_IDLE_S 1.0

/* Any thread: a new reference to the newest snapshot. */
struct snap *dp_snapshot(struct dp *dp);

/* Any thread: makes <s> (reference taken over) the newest snapshot and drops
 * the previous one's reference. The caller tells the workers (worker_notify). */
void dp_swap(struct dp *dp, struct snap *s);

/* Any thread: records the listening socket <fd> of frontend <key> (for a
 * hand-over). Returns LB_OK or LB_ENOMEM. */
int dp_listener_add(struct dp *dp, int fd, const char *key, struct lb_err *err);

/* Any thread: forgets <fd>; call before closing it. */
void dp_listener_remove(struct dp *dp, int fd);

/* Main thread: appends a duplicate of every recorded listening socket to
 * <st> (the duplicates stay valid whatever the workers close meanwhile).
 * Returns LB_OK, LB_ESYS or LB_ENOMEM. */
int dp_listeners_export(struct dp *dp, struct handover_state *st, struct lb_err *err);

#endif
