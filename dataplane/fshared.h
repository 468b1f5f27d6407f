/* dataplane/fshared.h: what the workers share about one frontend.
 *
 * One entry per frontend name in a process-wide registry, so the state
 * survives snapshot swaps while some published snapshot names the frontend:
 * today its rate limiter; later per-frontend runtime state (tunnel counts,
 * connection counts) belongs in the entry too. It is the frontend side of
 * what bshared.h is for backends.
 *
 * A snapshot is immutable once published and holds no runtime object. What it
 * keeps instead is a binding: an array, indexed like snap.frontends, of the
 * entries its frontends resolve to and of the limiter each was given, built
 * once by fshared_registry_bind() before the snapshot is published and never
 * changed after. The binding is referenced from the snapshot (snap.fshared)
 * and lives exactly as long as it: whoever holds the snapshot (a worker's
 * view, a request through that view, the metrics scrape) can use its binding,
 * and the last snap_unref() releases it. A request finds its limiter with
 * fshared_limiter(snap->fshared, fe_index): an array index, no hashing, no
 * lock.
 *
 * Lifetime rule: a binding holds one reference to each entry it names and one
 * to each limiter it uses. An entry leaves the registry when the last binding
 * naming it is released, i.e. once no snapshot a worker may still serve from
 * names the frontend. A limiter is freed when neither a binding nor its
 * entry (as the newest settings of that frontend) refers to it. */
#ifndef LB_FSHARED_H
#define LB_FSHARED_H

#include <stdint.h>

struct lb_err;
struct limiter;
struct snap;
struct fshared_binding;
struct fshared_registry;

/* Creates an empty registry. Returns NULL and fills <err> on no memory.
 * Caller owns it; release with fshared_registry_free(). */
struct fshared_registry *fshared_registry_new(struct lb_err *err);

/* Frees <r> and every entry still in it (NULL: no-op). Call it once every
 * snapshot bound to <r> is freed: a binding released later would use <r>. */
void fshared_registry_free(struct fshared_registry *r);

/* Syncs <r> to <s> and gives <s> its binding (s->fshared, which must be
 * unset). Each frontend of <s> gets the entry of its name (a new one when
 * there is none) and, when <s> enables rate limiting, a limiter: the entry's
 * current one when the settings are the same (so its buckets go on), else a
 * new one that keeps the buckets of keys whose limits did not change
 * (limiter_carry). The entries then take the limiters of <s> as their
 * current ones; an entry <s> does not name (or, with rate limiting off, every
 * entry) drops its limiter, so a frontend that comes back starts afresh.
 * All or nothing: returns LB_OK, or LB_ENOMEM (or LB_EINVAL on settings
 * limiter_new() refuses) leaving <r> as it was and <s> unbound.
 * One thread at a time: the main thread, which publishes. Call it last
 * before publishing <s>, after everything that may still refuse <s>, since
 * what <s> binds becomes what the next snapshot is compared with. Workers
 * releasing old snapshots meanwhile are fine: they may wait for the registry
 * lock while entries are looked up or updated, never while limiters are
 * built or carried. */
int fshared_registry_bind(struct fshared_registry *r, struct snap *s, struct lb_err *err);

/* Number of entries in <r>. Any thread. */
uint32_t fshared_registry_count(struct fshared_registry *r);

/* Releases <b> and the references it holds (NULL: no-op). snap_unref() calls
 * it when the snapshot goes; any thread. */
void fshared_binding_release(struct fshared_binding *b);

/* The rate limiter of frontend <fe_index> in the snapshot bound to <b>, or
 * NULL when rate limiting is off or <b> is NULL (a snapshot never bound).
 * Valid while the snapshot is held. Hot path: an array read; any thread. */
struct limiter *fshared_limiter(const struct fshared_binding *b, uint32_t fe_index);

#endif
