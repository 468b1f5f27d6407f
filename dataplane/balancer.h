/* dataplane/balancer.h: round robin, smooth weighted round robin with
 * effective weights and slow start, and least request (power of two choices).
 *
 * A balancer belongs to one worker thread. Its per-backend state lives in
 * caller-owned slots (kept per backend id across snapshots), so a config change
 * does not reset the rotation, effective weight or slow start of the backends
 * it does not touch. Everything here runs on that worker thread only. */
#ifndef LB_BALANCER_H
#define LB_BALANCER_H

#include <stdbool.h>
#include <stdint.h>

/* A zero-filled slot with <weight> set is ready: full effective weight, no
 * slow start. Fields marked "caller" are maintained by the owner of the slot,
 * the others by this module. */
struct balancer_slot {
    uint32_t weight;     /* caller: configured weight, >= 1 */
    int64_t current;     /* smooth WRR running weight (scaled internally) */
    uint32_t eff_weight; /* effective weight, 1..weight; 0 means weight. Lowered by
                          * balancer_slot_on_failure(), raised by _on_success(); a
                          * value above <weight> (weight lowered) counts as <weight> */
    uint64_t start_ms;   /* caller: when the backend was added or came back healthy;
                          * slow start ramps from here. 0: no ramp (a zero-filled
                          * slot, or backends present at process start) */
    uint32_t active;     /* caller: requests in flight to this backend on this
                          * worker or waiting in its queue (+1 when one picks it,
                          * -1 when its attempt ends); the worker's only count of
                          * them, and least request's load */
};

/* Tells whether backend <i> may take this request. It must give the same
 * answer for the same <i> during one pick and must not pick recursively. */
typedef bool (*balancer_ok_fn)(void *ctx, uint32_t i);

struct balancer {
    uint8_t algorithm;            /* caller: enum snap_algorithm */
    uint32_t n;                   /* caller: number of slots */
    uint32_t rr_next;             /* round robin cursor */
    struct balancer_slot **slots; /* caller: n pointers, caller-owned */
    uint32_t slow_start_ms;       /* caller: ramp length; 0 disables slow start */
    uint64_t rng;                 /* least request's xorshift64 state; 0 is seeded
                                   * from the balancer's address at the first use,
                                   * or set it with balancer_seed() */
};

/* Picks a backend among those for which <ok> is true (NULL: all), at
 * <now_ms> (for slow start).
 * SNAP_ALGO_ROUND_ROBIN (and unknown values): the next eligible index after
 * the previous pick; weights are ignored.
 * SNAP_ALGO_WEIGHTED: smooth weighted round robin (as nginx) on the slots'
 * weights: every eligible slot gains its weight, the largest wins and loses
 * the eligible total, which spreads each backend's turns evenly over a cycle
 * (weights 5,1,1 give a a b a c a a).
 * SNAP_ALGO_LEAST_REQUEST: two distinct eligible slots drawn at random, the
 * one with the lower (active + 1) / weight wins (ties: the first drawn); a
 * single eligible slot is taken as is.
 * The weight used by both weighted algorithms is balancer_slot_weight().
 * Returns the index, or -1 when none is eligible. Never allocates; O(n) calls
 * of <ok> at most (least request: usually a few, 2n in the worst case). */
int balancer_pick_at(struct balancer *b, uint64_t now_ms, balancer_ok_fn ok, void *ctx);

/* balancer_pick_at() with slow start ignored (every ramp taken as over). */
int balancer_pick(struct balancer *b, balancer_ok_fn ok, void *ctx);

/* Seeds the least-request random choices (0 is replaced by a constant). */
void balancer_seed(struct balancer *b, uint64_t seed);

/* Sets the slot's configured weight (>= 1). A changed weight starts whole:
 * the effective weight earned under the old one is dropped. Only the
 * balancer writes its own fields; this is how the caller changes a weight. */
void balancer_slot_set_weight(struct balancer_slot *s, uint32_t weight);

/* A fresh smooth cycle: every slot's running weight back to zero (after new
 * weights or a new set of slots, where old running weights would skew the
 * first turns). */
void balancer_restart(struct balancer *b);

/* A request to the slot's backend failed (connect error, timeout, 5xx as the
 * policy counts it): the effective weight drops by max(1, weight / 4), to 1
 * at least. */
void balancer_slot_on_failure(struct balancer_slot *s);

/* A request to the slot's backend succeeded: the effective weight rises by 1,
 * up to the configured weight. */
void balancer_slot_on_success(struct balancer_slot *s);

/* The weight the slot has in a pick at <now_ms>: its effective weight; during
 * the first <slow_start_ms> after <start_ms> that times a factor rising
 * linearly from 10 % to 100 %. Whole units, at least 1 (the picks use a finer
 * internal scale, so a weight-1 backend also ramps). For reports
 * (BackendReport.effective_weight). */
uint32_t balancer_slot_weight(const struct balancer_slot *s, uint32_t slow_start_ms,
                              uint64_t now_ms);

#endif
