/* dataplane/eject.c */
#include "eject.h"

#define LOAD(f)     atomic_load_explicit(&(f), memory_order_acquire)
#define STORE(f, v) atomic_store_explicit(&(f), (v), memory_order_release)

static uint32_t base_of(const struct eject_config *c)
{
    return c->probe_base_ms ? c->probe_base_ms : EJECT_DEFAULT_PROBE_BASE_MS;
}

static uint32_t max_of(const struct eject_config *c)
{
    uint32_t m = c->probe_max_ms ? c->probe_max_ms : EJECT_DEFAULT_PROBE_MAX_MS;
    return m < base_of(c) ? base_of(c) : m;
}

bool eject_is_out(const struct eject *e)
{
    return atomic_load_explicit(&e->out, memory_order_relaxed);
}

bool eject_blocks(const struct eject *e, uint64_t view_gen)
{
    return eject_is_out(e) || view_gen < atomic_load_explicit(&e->hold_gen, memory_order_relaxed);
}

bool eject_on_connect_failure(struct eject *e, const struct eject_config *c, uint64_t now_ms)
{
    if (!c->enabled || eject_is_out(e))
        return false;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&e->out, &expected, true))
        return false;
    uint32_t backoff = base_of(c);
    uint32_t last = LOAD(e->backoff_ms);
    uint64_t back = LOAD(e->back_at_ms);
    /* back only briefly: it is flapping, so probe it less often */
    if (last != 0 && back != 0 && now_ms - back < max_of(c))
        backoff = last >= max_of(c) / 2 ? max_of(c) : last * 2;
    STORE(e->backoff_ms, backoff);
    STORE(e->probe_at_ms, now_ms + (c->controlled ? max_of(c) : backoff));
    atomic_fetch_add(&e->ejections, 1);
    return true;
}

bool eject_probe_claim(struct eject *e, uint64_t now_ms)
{
    if (!eject_is_out(e) || now_ms < LOAD(e->probe_at_ms))
        return false;
    bool expected = false;
    return atomic_compare_exchange_strong(&e->probing, &expected, true);
}

bool eject_probe_done(struct eject *e, const struct eject_config *c, bool ok, uint64_t now_ms)
{
    bool returned = false;
    if (ok) {
        bool expected = true;
        returned = atomic_compare_exchange_strong(&e->out, &expected, false);
        if (returned) {
            STORE(e->back_at_ms, now_ms);
            atomic_fetch_add(&e->probed_back, 1);
        }
    } else {
        uint32_t b = LOAD(e->backoff_ms);
        b = b >= max_of(c) / 2 ? max_of(c) : (b ? b * 2 : base_of(c));
        STORE(e->backoff_ms, b);
        STORE(e->probe_at_ms, now_ms + b);
    }
    STORE(e->probing, false);
    return returned;
}

bool eject_hand_over(struct eject *e, uint64_t gen, uint64_t now_ms)
{
    bool expected = true;
    if (!eject_is_out(e))
        return false;
    /* first the hold, then the end: no moment where an older view sees it in */
    uint64_t held = LOAD(e->hold_gen);
    while (held < gen && !atomic_compare_exchange_weak(&e->hold_gen, &held, gen))
        ;
    if (!atomic_compare_exchange_strong(&e->out, &expected, false))
        return false;
    STORE(e->back_at_ms, now_ms);
    atomic_fetch_add(&e->handed_over, 1);
    return true;
}

uint32_t eject_backoff_ms(const struct eject *e)
{
    return LOAD(e->backoff_ms);
}

uint64_t eject_count(const struct eject *e)
{
    return LOAD(e->ejections);
}
