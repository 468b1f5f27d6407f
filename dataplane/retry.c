/* dataplane/retry.c */
#include "retry.h"

#include "http1.h"

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s != 0 ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

uint32_t retry_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t cap_ms, uint64_t *rng)
{
    uint32_t shift = attempt > 0 ? attempt - 1 : 0;
    uint64_t ceiling = cap_ms;
    /* base * 2^shift, without overflow: past 32 doublings it is above any cap */
    if (shift < 32 && ((uint64_t)base_ms << shift) < ceiling)
        ceiling = (uint64_t)base_ms << shift;
    uint64_t r = xorshift64(rng) >> 11;
    return (uint32_t)(r % (ceiling + 1));
}

#define RELAXED memory_order_relaxed

void retry_budget_init(struct retry_budget *b, uint32_t min, uint32_t percent, uint32_t n_slots)
{
    atomic_init(&b->min, 0);
    atomic_init(&b->percent, 0);
    atomic_init(&b->retries, 0);
    atomic_init(&b->exhausted, 0);
    b->exclusive = n_slots <= RETRY_BUDGET_SLOTS;
    b->n_slots = n_slots == 0 ? 1 : n_slots > RETRY_BUDGET_SLOTS ? RETRY_BUDGET_SLOTS : n_slots;
    for (uint32_t i = 0; i < RETRY_BUDGET_SLOTS; i++)
        atomic_init(&b->slot[i].active, 0);
    retry_budget_configure(b, min, percent);
}

void retry_budget_configure(struct retry_budget *b, uint32_t min, uint32_t percent)
{
    atomic_store_explicit(&b->min, min ? min : RETRY_BUDGET_MIN, RELAXED);
    atomic_store_explicit(&b->percent, percent ? percent : RETRY_BUDGET_PERCENT, RELAXED);
}

void retry_budget_request_started(struct retry_budget *b, uint32_t slot)
{
    _Atomic uint32_t *a = &b->slot[slot % b->n_slots].active;
    if (b->exclusive)
        atomic_store_explicit(a, atomic_load_explicit(a, RELAXED) + 1, RELAXED);
    else
        atomic_fetch_add_explicit(a, 1, RELAXED);
}

void retry_budget_request_finished(struct retry_budget *b, uint32_t slot)
{
    _Atomic uint32_t *a = &b->slot[slot % b->n_slots].active;
    uint32_t v = atomic_load_explicit(a, RELAXED);
    if (b->exclusive) {
        if (v > 0)
            atomic_store_explicit(a, v - 1, RELAXED);
        return;
    }
    while (v > 0 && !atomic_compare_exchange_weak_explicit(a, &v, v - 1, RELAXED, RELAXED))
        ;
}

uint32_t retry_budget_limit(struct retry_budget *b)
{
    uint64_t active = 0;
    for (uint32_t i = 0; i < b->n_slots; i++)
        active += atomic_load_explicit(&b->slot[i].active, RELAXED);
    uint32_t min = atomic_load_explicit(&b->min, RELAXED);
    uint64_t share = active * atomic_load_explicit(&b->percent, RELAXED) / 100;
    return share > min ? (uint32_t)share : min;
}

bool retry_budget_is_spent(struct retry_budget *b)
{
    return atomic_load_explicit(&b->retries, RELAXED) >= retry_budget_limit(b);
}

bool retry_budget_try(struct retry_budget *b)
{
    uint32_t limit = retry_budget_limit(b);
    uint32_t v = atomic_load_explicit(&b->retries, RELAXED);
    while (v < limit) {
        if (atomic_compare_exchange_weak_explicit(&b->retries, &v, v + 1, RELAXED, RELAXED))
            return true;
    }
    atomic_fetch_add_explicit(&b->exhausted, 1, RELAXED);
    return false;
}

void retry_budget_done(struct retry_budget *b)
{
    uint32_t v = atomic_load_explicit(&b->retries, RELAXED);
    while (v > 0 &&
           !atomic_compare_exchange_weak_explicit(&b->retries, &v, v - 1, RELAXED, RELAXED))
        ;
}

uint64_t retry_budget_exhausted(struct retry_budget *b)
{
    return atomic_load_explicit(&b->exhausted, RELAXED);
}

enum retry_action retry_decide(enum retry_failure f, const struct retry_state *st)
{
    bool resendable = st->head_kept && !st->body_sent && !st->answer_started;
    if (f == RETRY_FAIL_POOLED) {
        if (resendable)
            return RETRY_REPLAY; /* the same attempt goes on */
        f = RETRY_FAIL_RESET;
    }
    if (st->tries >= RETRY_MAX_TRIES || st->draining || !resendable)
        return RETRY_NONE;
    switch (f) {
    case RETRY_FAIL_CONNECT:
        return RETRY_NOW;
    case RETRY_FAIL_LOCAL:
        return st->tries <= st->max_retries ? RETRY_BACKOFF : RETRY_NONE;
    default:
        if (!st->seen_retries || !retry_is_idempotent(st->method) || !st->body_complete ||
            st->tries > st->max_retries)
            return RETRY_NONE;
        return RETRY_BACKOFF;
    }
}

bool retry_is_idempotent(uint8_t method)
{
    switch (method) {
    case HTTP1_M_GET:
    case HTTP1_M_HEAD:
    case HTTP1_M_OPTIONS:
    case HTTP1_M_TRACE:
    case HTTP1_M_PUT:
    case HTTP1_M_DELETE:
        return true;
    default:
        return false;
    }
}
