/* dataplane/bshared.h: what the workers share about one backend.
 *
 * One entry per backend id in a process-wide registry, so the state survives
 * snapshot swaps while some view names the id: the circuit breaker, the
 * passive ejection record, the connection count with its queue. Workers take
 * a reference when their view first names the id and drop it when no view
 * does. Each part documents its own thread rules; the registry takes its
 * lock only to get, find and release. */
#ifndef LB_BSHARED_H
#define LB_BSHARED_H

#include <stdint.h>

#include "breaker.h"
#include "connq.h"
#include "eject.h"

struct lb_err;
struct bshared_registry;

struct bshared {
    const char *id;          /* the backend id; valid while a reference is held */
    struct breaker *breaker; /* always set */
    struct eject eject;
    struct connq q;
};

/* Creates an empty registry. Returns NULL and fills <err> on no memory.
 * Caller owns it; release with bshared_registry_free(). */
struct bshared_registry *bshared_registry_new(struct lb_err *err);

/* Frees <r> and every entry still in it (NULL: no-op). Call it once no thread
 * uses <r> or any of its entries (after the workers stopped). */
void bshared_registry_free(struct bshared_registry *r);

/* Returns the entry of backend <id> with one more reference, creating a fresh
 * one (breaker closed, in rotation, no connections) when <id> has none.
 * Returns NULL and fills <err> on no memory or an empty <id>. <id> is copied.
 * Any thread; for building a worker's view, not per request. */
struct bshared *bshared_registry_get(struct bshared_registry *r, const char *id,
                                     struct lb_err *err);

/* Like bshared_registry_get() but never creates: NULL when <id> has none. A
 * non-NULL result holds a reference. Any thread. */
struct bshared *bshared_registry_find(struct bshared_registry *r, const char *id);

/* Drops one reference taken by _get or _find (NULL: no-op). The last one
 * frees the entry, so a backend removed from the config loses its state once
 * no view names it; take the new view's references before releasing the old
 * view's to carry the state across a swap. Any thread. */
void bshared_registry_release(struct bshared_registry *r, struct bshared *b);

/* Number of entries in <r>. Any thread. */
uint32_t bshared_registry_count(struct bshared_registry *r);

/* Backends out of rotation by ejection right now, all ids together: lets the
 * probe sweep skip its scan in the common case of none. Any thread. */
uint32_t bshared_registry_ejected(struct bshared_registry *r);

/* The number above moves by <delta> (+1 on an ejection, -1 on a return). */
void bshared_registry_note_ejected(struct bshared_registry *r, int delta);

#endif
