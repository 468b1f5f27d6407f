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

void retry_budget_init(struct retry_budget *b, uint32_t min, uint32_t percent)
{
    b->min = min ? min : RETRY_BUDGET_MIN;
    b->percent = percent ? percent : RETRY_BUDGET_PERCENT;
    b->active = 0;
    b->retries = 0;
    atomic_init(&b->exhausted, 0);
}

void retry_budget_request_started(struct retry_budget *b)
{
    b->active++;
}

void retry_budget_request_finished(struct retry_budget *b)
{
    if (b->active > 0)
        b->active--;
}

uint32_t retry_budget_limit(const struct retry_budget *b)
{
    uint64_t share = (uint64_t)b->active * b->percent / 100;
    return share > b->min ? (uint32_t)share : b->min;
}

bool retry_budget_try(struct retry_budget *b)
{
    if (b->retries < retry_budget_limit(b)) {
        b->retries++;
        return true;
    }
    /* one writer: a relaxed load and store, as the metrics counters */
    atomic_store_explicit(&b->exhausted,
                          atomic_load_explicit(&b->exhausted, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return false;
}

void retry_budget_done(struct retry_budget *b)
{
    if (b->retries > 0)
        b->retries--;
}

uint64_t retry_budget_exhausted(struct retry_budget *b)
{
    return atomic_load_explicit(&b->exhausted, memory_order_relaxed);
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
