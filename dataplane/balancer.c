/* dataplane/balancer.c */
#include "balancer.h"

#include <stddef.h>

#include "snapshot.h"

/* Weights are scaled so that slow start ramps smoothly even for weight 1.
 * Smooth WRR's order is unchanged by a common factor; 1000 * 1000 (max
 * weight) * SNAP_MAX_BACKENDS stays far within int64. */
#define SCALE 1000u

/* Random probes of least request before it falls back to counting. */
#define P2C_PROBES 8

static uint64_t eff_of(const struct balancer_slot *s)
{
    uint32_t w = s->weight ? s->weight : 1;
    if (s->eff_weight == 0 || s->eff_weight > w)
        return w;
    return s->eff_weight;
}

/* Scaled weight at <now_ms>, >= 1. */
static uint64_t weight_at(const struct balancer_slot *s, uint32_t slow_start_ms, uint64_t now_ms)
{
    uint64_t w = eff_of(s) * SCALE;
    if (slow_start_ms == 0 || s->start_ms == 0 || now_ms >= s->start_ms + slow_start_ms)
        return w;
    uint64_t elapsed = now_ms > s->start_ms ? now_ms - s->start_ms : 0;
    /* w * (0.1 + 0.9 * elapsed / T) */
    uint64_t r = w * ((uint64_t)slow_start_ms + 9 * elapsed) / (10 * (uint64_t)slow_start_ms);
    return r > 0 ? r : 1;
}

uint32_t balancer_slot_weight(const struct balancer_slot *s, uint32_t slow_start_ms,
                              uint64_t now_ms)
{
    uint64_t w = weight_at(s, slow_start_ms, now_ms) / SCALE;
    return w > 0 ? (uint32_t)w : 1;
}

void balancer_slot_set_weight(struct balancer_slot *s, uint32_t weight)
{
    if (s->weight != weight)
        s->eff_weight = 0;
    s->weight = weight;
}

void balancer_restart(struct balancer *b)
{
    for (uint32_t k = 0; k < b->n; k++)
        b->slots[k]->current = 0;
}

void balancer_slot_on_failure(struct balancer_slot *s)
{
    uint32_t w = s->weight ? s->weight : 1;
    uint32_t cur = (uint32_t)eff_of(s);
    uint32_t drop = w / 4 > 0 ? w / 4 : 1;
    s->eff_weight = cur > drop ? cur - drop : 1;
}

void balancer_slot_on_success(struct balancer_slot *s)
{
    uint32_t w = s->weight ? s->weight : 1;
    uint32_t cur = (uint32_t)eff_of(s);
    s->eff_weight = cur < w ? cur + 1 : w;
}

void balancer_seed(struct balancer *b, uint64_t seed)
{
    b->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15ull;
}

static uint64_t next_rand(struct balancer *b)
{
    if (b->rng == 0) {
        /* splitmix64 of the address: each worker's balancer differs */
        uint64_t z = (uint64_t)(uintptr_t)b + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        balancer_seed(b, z ^ (z >> 31));
    }
    uint64_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

/* Uniform enough in [0, n): Lemire's multiply-shift on the high 32 bits. */
static uint32_t rand_below(struct balancer *b, uint32_t n)
{
    return (uint32_t)(((next_rand(b) >> 32) * (uint64_t)n) >> 32);
}

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

static int pick_swrr(struct balancer *b, uint64_t now_ms, balancer_ok_fn ok, void *ctx)
{
    int64_t total = 0;
    int best = -1;
    for (uint32_t i = 0; i < b->n; i++) {
        if (ok != NULL && !ok(ctx, i))
            continue;
        struct balancer_slot *s = b->slots[i];
        int64_t w = (int64_t)weight_at(s, b->slow_start_ms, now_ms);
        s->current += w;
        total += w;
        if (best < 0 || s->current > b->slots[best]->current)
            best = (int)i;
    }
    if (best >= 0)
        b->slots[best]->current -= total;
    return best;
}

/* Two distinct eligible indexes, uniformly: random probes first (cheap when
 * most slots are eligible), else count and draw by rank. Returns how many
 * were found (0, 1 or 2). */
static int draw_two(struct balancer *b, balancer_ok_fn ok, void *ctx, uint32_t out[2])
{
    int got = 0;
    if (b->n > 1) {
        for (int k = 0; k < P2C_PROBES && got < 2; k++) {
            uint32_t i = rand_below(b, b->n);
            if ((got == 1 && i == out[0]) || (ok != NULL && !ok(ctx, i)))
                continue;
            out[got++] = i;
        }
        if (got == 2)
            return 2;
    }
    uint32_t count = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        if (ok == NULL || ok(ctx, i))
            out[count++ == 0 ? 0 : 1] = i;
    }
    if (count < 2)
        return (int)count;
    uint32_t r0 = rand_below(b, count);
    uint32_t r1 = rand_below(b, count - 1);
    if (r1 >= r0)
        r1++;
    uint32_t rank = 0;
    bool have0 = false, have1 = false;
    for (uint32_t i = 0; i < b->n && !(have0 && have1); i++) {
        if (ok != NULL && !ok(ctx, i))
            continue;
        if (rank == r0) {
            out[0] = i;
            have0 = true;
        } else if (rank == r1) {
            out[1] = i;
            have1 = true;
        }
        rank++;
    }
    /* the first pass already stored two eligible indexes; keep them if <ok>
     * changed its mind in between */
    return 2;
}

static int pick_p2c(struct balancer *b, uint64_t now_ms, balancer_ok_fn ok, void *ctx)
{
    uint32_t two[2];
    int got = draw_two(b, ok, ctx, two);
    if (got < 2)
        return got == 1 ? (int)two[0] : -1;
    const struct balancer_slot *x = b->slots[two[0]];
    const struct balancer_slot *y = b->slots[two[1]];
    /* (ax + 1) / wx <= (ay + 1) / wy, multiplied out */
    uint64_t lx = ((uint64_t)x->active + 1) * weight_at(y, b->slow_start_ms, now_ms);
    uint64_t ly = ((uint64_t)y->active + 1) * weight_at(x, b->slow_start_ms, now_ms);
    return (int)(lx <= ly ? two[0] : two[1]);
}

int balancer_pick_at(struct balancer *b, uint64_t now_ms, balancer_ok_fn ok, void *ctx)
{
    if (b->n == 0)
        return -1;
    if (b->algorithm == SNAP_ALGO_WEIGHTED)
        return pick_swrr(b, now_ms, ok, ctx);
    if (b->algorithm == SNAP_ALGO_LEAST_REQUEST)
        return pick_p2c(b, now_ms, ok, ctx);
    return pick_rr(b, ok, ctx);
}

int balancer_pick(struct balancer *b, balancer_ok_fn ok, void *ctx)
{
    return balancer_pick_at(b, UINT64_MAX, ok, ctx);
}
