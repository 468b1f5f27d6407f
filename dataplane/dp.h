/* dataplane/dp.h: the data-plane process context shared by its threads, and
 * the newest snapshot they adopt. */
#ifndef LB_DP_H
#define LB_DP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "retry.h"

struct bshared_registry;
struct fshared_registry;
struct tls_tickets;
struct snap;
struct sync;
struct worker;

struct dp {
    pthread_mutex_t lock; /* guards <snap> */
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
};

/* Any thread: a new reference to the newest snapshot. */
struct snap *dp_snapshot(struct dp *dp);

/* Any thread: makes <s> (reference taken over) the newest snapshot and drops
 * the previous one's reference. The caller tells the workers (worker_notify). */
void dp_swap(struct dp *dp, struct snap *s);

#endif
