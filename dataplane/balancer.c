/* dataplane/balancer.c */
#include "balancer.h"

#include <stddef.h>

#include "snapshot.h"

static int pick_rr(struct balancer *b, balancer_ok_fn ok, void *ctx)
{
    for (uint32_t k = 0; k < b->n; k++) {
        uint32_t i = (b->rr_next + k) % b->n;
        if (ok == NULL || ok(ctx, i)) {
            b->rr_next = (i + 1) % b->n;
            return (int)i;
        }
    }
    return -1;
}

static int pick_swrr(struct balancer *b, balancer_ok_fn ok, void *ctx)
{
    int64_t total = 0;
    int best = -1;
    for (uint32_t i = 0; i < b->n; i++) {
        if (ok != NULL && !ok(ctx, i))
            continue;
        struct balancer_slot *s = b->slots[i];
        s->current += s->weight;
        total += s->weight;
        if (best < 0 || s->current > b->slots[best]->current)
            best = (int)i;
    }
    if (best >= 0)
        b->slots[best]->current -= total;
    return best;
}

int balancer_pick(struct balancer *b, balancer_ok_fn ok, void *ctx)
{
    if (b->n == 0)
        return -1;
    if (b->algorithm == SNAP_ALGO_WEIGHTED)
        return pick_swrr(b, ok, ctx);
    return pick_rr(b, ok, ctx);
}
