/* controlplane/cp_guard.h: the hook by which a module that owns the config
 * for a while (the rollouts, rollout_run.h) joins the core without the core
 * knowing it. The module registers a guard from the cp_config's <attach>
 * hook, which cp_new() calls once the store is open and before the active
 * config is first served; the core then asks it before every config write
 * and whenever it builds a snapshot, and frees it in cp_free() before the
 * store closes. At most one guard; without one every write goes ahead, every
 * snapshot is for every data plane and staged writes are refused.
 *
 * Single-threaded, as cp.h. */
#ifndef LB_CP_GUARD_H
#define LB_CP_GUARD_H

#include <stddef.h>
#include <stdint.h>

struct cp;
struct cp_canary;
struct cp_write;
struct lb_err;

struct cp_guard_ops {
    /* LB_OK when a config write may go ahead (nothing holds the config, or
     * the write is the guard's own), else LB_ECONFLICT with <err> naming
     * what holds it: "rollout 3 is running (step 2/4) ...". */
    int (*write_check)(const void *ctx, struct lb_err *err);
    /* The data planes a snapshot built now is for alone (a staged rollout's
     * canaries; borrowed until the next call): *<n> = 0 and NULL = every
     * one. */
    const char *const *(*only_nodes)(const void *ctx, size_t *n);
    /* A write staged as <canary> says: <json> (<len> bytes) is the edited
     * config in full; *<version> gets the version staged. */
    int (*stage)(void *ctx, const char *json, size_t len, const struct cp_canary *canary,
                 const struct cp_write *w, uint64_t *version, struct lb_err *err);
    /* cp_free(): the guard goes, <ctx> with it. */
    void (*free)(void *ctx);
};

/* Makes <ops> with <ctx> the guard of <cp>; the cp owns <ctx> from then on
 * (ops->free). LB_ECONFLICT (nothing changes) when a guard is set already. */
int cp_guard_set(struct cp *cp, const struct cp_guard_ops *ops, void *ctx, struct lb_err *err);

/* The ctx of <cp>'s guard when it was registered with <ops>, else NULL. */
void *cp_guard_ctx(const struct cp *cp, const struct cp_guard_ops *ops);

#endif
