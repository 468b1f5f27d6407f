/* dataplane/balancer.h: round robin and smooth weighted round robin.
 *
 * A balancer belongs to one worker thread. Its per-backend state lives in
 * caller-owned slots (kept per backend id across snapshots), so a config change
 * does not reset the rotation of the backends it does not touch. */
#ifndef LB_BALANCER_H
#define LB_BALANCER_H

#include <stdbool.h>
#include <stdint.h>

struct balancer_slot {
    uint32_t weight; /* configured weight, >= 1 */
    int64_t current; /* smooth WRR running weight */
};

/* Tells whether backend <i> may take this request. */
typedef bool (*balancer_ok_fn)(void *ctx, uint32_t i);

struct balancer {
    uint8_t algorithm;            /* enum snap_algorithm */
    uint32_t n;                   /* number of slots */
    uint32_t rr_next;             /* round robin cursor */
    struct balancer_slot **slots; /* n pointers, caller-owned */
};

/* Picks a backend among those for which <ok> is true (NULL: all).
 * Round robin: the next eligible index after the previous pick.
 * Smooth weighted round robin (as nginx): every eligible slot gains its weight,
 * the largest wins and loses the eligible total, which spreads each backend's
 * turns evenly over a cycle (weights 5,1,1 give a a b a c a a).
 * Returns the index, or -1 when none is eligible. Never allocates. */
int balancer_pick(struct balancer *b, balancer_ok_fn ok, void *ctx);

#endif
