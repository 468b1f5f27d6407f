/* controlplane/rollout_canary.h: the staged config rollout's engine, owned
 * by the rollouts (rollout_run.c, which exposes it in rollout_run.h). One
 * canary at a time: the new version is served to the canary data planes,
 * the others keep the snapshot they had (cp_canary_hold()); every tick the
 * data planes' reports say whether the canaries applied it (ACK) or refused
 * it (NACK: fails at once) and, once all applied, rollout_canary_eval()
 * compares their error rate over the bake with the rest of the fleet. A
 * pass promotes the version to every data plane; a failure rolls the config
 * back to the pre-rollout version as a new version (cp_rollback()).
 *
 * Single-threaded: the cp's loop. */
#ifndef LB_ROLLOUT_CANARY_H
#define LB_ROLLOUT_CANARY_H

#include "rollout_run.h"

struct canary;

/* The engine of <cp>; the stored canary (the store's meta row "canary")
 * is loaded, and resumes when it was baking. NULL on no memory. */
struct canary *canary_new(struct cp *cp, int64_t now_ms);
void canary_free(struct canary *c);

/* True when a canary is baking and the write in progress is not its own. */
bool canary_blocks(const struct canary *c, struct lb_err *err);

void canary_tick(struct canary *c, int64_t now_ms);

/* The bodies of rollout_run.h's rollouts_canary_*(). */
int canary__start(struct canary *c, const struct canary_request *rq, uint64_t *version,
                  int64_t now_ms, struct lb_err *err);
int canary__abort(struct canary *c, const char *who, int64_t now_ms, struct lb_err *err);
const char *const *canary__nodes(const struct canary *c, size_t *n);
void canary__view(const struct canary *c, struct canary_view *v);
const char *canary__role(const struct canary *c, const char *node, char *buf, size_t size);
void canary__counts(const struct canary *c, uint64_t *promoted, uint64_t *failed, uint64_t *nacks);

#endif
