/* proto/base/lb_ref.h: reference counts for objects shared across threads.
 *
 * Embed a struct lb_ref in the object, lb_ref_init() it to one reference (the
 * creator's), lb_ref_get() for each further holder, and free the object when
 * lb_ref_put() says the last reference went:
 *
 *     struct snap *snap_ref(struct snap *s) { lb_ref_get(&s->ref); return s; }
 *     void snap_unref(struct snap *s)
 *     {
 *         if (s != NULL && lb_ref_put(&s->ref))
 *             snap_free(s);
 *     }
 *
 * Atomic, so any thread may get and put. Taking a reference is relaxed (the
 * taker already holds one, or the object is reachable under a lock); dropping
 * one is acquire-release, so the thread that frees sees every write made
 * while others held it. Header-only: these sit on per-connection paths and
 * must inline. */
#ifndef LB_REF_H
#define LB_REF_H

#include <stdatomic.h>
#include <stdbool.h>

#include "lb_assert.h"

struct lb_ref {
    atomic_uint n; /* holders; 0 only once the object is being freed */
};

/* Starts <r> at one reference, the caller's. */
static inline void lb_ref_init(struct lb_ref *r)
{
    atomic_init(&r->n, 1);
}

/* Takes one more reference. The caller must already hold one (or reach the
 * object under a lock that keeps it alive). */
static inline void lb_ref_get(struct lb_ref *r)
{
    unsigned old = atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);
    LB_ASSERT(old > 0);
    (void)old;
}

/* Drops one reference; true when it was the last, and the caller now frees
 * the object. */
static inline bool lb_ref_put(struct lb_ref *r)
{
    unsigned old = atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel);
    LB_ASSERT(old > 0);
    return old == 1;
}

/* The current count: for assertions and tests, stale as soon as it returns
 * when other threads hold references. */
static inline unsigned lb_ref_count(const struct lb_ref *r)
{
    return atomic_load_explicit(&r->n, memory_order_relaxed);
}

#endif
