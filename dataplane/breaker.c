/* dataplane/breaker.c */
#include "breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lb_err.h"

struct breaker {
    pthread_mutex_t lock;        /* transitions, trial accounting */
    _Atomic uint8_t state;       /* enum breaker_state; written under lock */
    _Atomic uint64_t open_until; /* while open: when half-open starts; written under lock */
    _Atomic uint32_t failures;   /* consecutive failures while closed */
    _Atomic uint32_t trials;     /* trial requests in flight; written under lock */
    _Atomic uint32_t open_ms;    /* current open time, 0 while closed; written under lock */
    uint32_t successes;          /* successful trials in this half-open round; under lock */
    _Atomic uint64_t n_opened;   /* counters: any thread adds */
    _Atomic uint64_t n_half_opened;
    _Atomic uint64_t n_closed;
    _Atomic uint64_t n_rejected;
};

struct limits {
    uint32_t threshold;
    uint32_t timeout_ms;
    uint32_t max_half_open;
    uint32_t max_timeout_ms;
};

static struct limits limits_of(const struct breaker_config *c)
{
    struct limits l = {
        .threshold = c->threshold ? c->threshold : BREAKER_DEFAULT_THRESHOLD,
        .timeout_ms = c->timeout_ms ? c->timeout_ms : BREAKER_DEFAULT_TIMEOUT_MS,
        .max_half_open = c->max_half_open ? c->max_half_open : BREAKER_DEFAULT_MAX_HALF_OPEN,
        .max_timeout_ms = c->max_timeout_ms ? c->max_timeout_ms : BREAKER_DEFAULT_MAX_TIMEOUT_MS,
    };
    if (l.max_timeout_ms < l.timeout_ms)
        l.max_timeout_ms = l.timeout_ms;
    return l;
}

#define LOAD(f)     atomic_load_explicit(&(f), memory_order_relaxed)
#define STORE(f, v) atomic_store_explicit(&(f), (v), memory_order_relaxed)
#define BUMP(f)     atomic_fetch_add_explicit(&(f), 1, memory_order_relaxed)

static void breaker_init(struct breaker *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    atomic_init(&b->state, BREAKER_STATE_CLOSED);
}

struct breaker *breaker_new(struct lb_err *err)
{
    struct breaker *b = malloc(sizeof(*b));
    if (b == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory creating a circuit breaker");
        return NULL;
    }
    breaker_init(b);
    return b;
}

void breaker_free(struct breaker *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Under lock. The state is published last (release) so that a lock-free
 * reader seeing OPEN also sees its open_until. */
static void go_open(struct breaker *b, uint32_t open_ms, uint64_t now_ms)
{
    STORE(b->open_ms, open_ms);
    STORE(b->open_until, now_ms + open_ms);
    b->successes = 0;
    atomic_store_explicit(&b->state, BREAKER_STATE_OPEN, memory_order_release);
    BUMP(b->n_opened);
}

enum breaker_decision breaker_allow(struct breaker *b, const struct breaker_config *c,
                                    uint64_t now_ms)
{
    if (!c->enabled)
        return BREAKER_PASS;
    uint8_t st = atomic_load_explicit(&b->state, memory_order_acquire);
    if (st == BREAKER_STATE_CLOSED)
        return BREAKER_PASS;
    if (st == BREAKER_STATE_OPEN && now_ms < LOAD(b->open_until)) {
        BUMP(b->n_rejected);
        return BREAKER_REJECT;
    }
    struct limits l = limits_of(c);
    enum breaker_decision d = BREAKER_REJECT;
    pthread_mutex_lock(&b->lock);
    st = LOAD(b->state);
    if (st == BREAKER_STATE_CLOSED) {
        d = BREAKER_PASS;
    } else {
        if (st == BREAKER_STATE_OPEN && now_ms >= LOAD(b->open_until)) {
            b->successes = 0;
            STORE(b->state, BREAKER_STATE_HALF_OPEN);
            BUMP(b->n_half_opened);
            st = BREAKER_STATE_HALF_OPEN;
        }
        if (st == BREAKER_STATE_HALF_OPEN && LOAD(b->trials) < l.max_half_open) {
            STORE(b->trials, LOAD(b->trials) + 1);
            d = BREAKER_TRIAL;
        }
    }
    pthread_mutex_unlock(&b->lock);
    if (d == BREAKER_REJECT)
        BUMP(b->n_rejected);
    return d;
}

void breaker_done(struct breaker *b, const struct breaker_config *c, enum breaker_decision d,
                  bool success, uint64_t now_ms)
{
    if (d == BREAKER_PASS) {
        if (!c->enabled)
            return;
        if (success) {
            /* read first: a healthy backend's requests then never write the
             * shared line */
            if (LOAD(b->failures) != 0)
                STORE(b->failures, 0);
            return;
        }
        struct limits l = limits_of(c);
        pthread_mutex_lock(&b->lock);
        if (LOAD(b->state) == BREAKER_STATE_CLOSED &&
            atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed) + 1 >= l.threshold) {
            STORE(b->failures, 0);
            go_open(b, l.timeout_ms, now_ms);
        }
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (d != BREAKER_TRIAL)
        return;
    struct limits l = limits_of(c);
    pthread_mutex_lock(&b->lock);
    uint32_t t = LOAD(b->trials);
    if (t > 0)
        STORE(b->trials, t - 1);
    if (c->enabled && LOAD(b->state) == BREAKER_STATE_HALF_OPEN) {
        if (!success) {
            uint64_t next = (uint64_t)LOAD(b->open_ms) * 2;
            if (next < l.timeout_ms)
                next = l.timeout_ms;
            if (next > l.max_timeout_ms)
                next = l.max_timeout_ms;
            go_open(b, (uint32_t)next, now_ms);
        } else if (++b->successes >= l.max_half_open) {
            b->successes = 0;
            STORE(b->failures, 0);
            STORE(b->open_ms, 0);
            atomic_store_explicit(&b->state, BREAKER_STATE_CLOSED, memory_order_release);
            BUMP(b->n_closed);
        }
    }
    pthread_mutex_unlock(&b->lock);
}

bool breaker_is_available(struct breaker *b, const struct breaker_config *c, uint64_t now_ms)
{
    if (!c->enabled)
        return true;
    uint8_t st = atomic_load_explicit(&b->state, memory_order_acquire);
    if (st == BREAKER_STATE_CLOSED)
        return true;
    uint32_t max = limits_of(c).max_half_open;
    if (st == BREAKER_STATE_OPEN)
        return now_ms >= LOAD(b->open_until) && LOAD(b->trials) < max;
    return LOAD(b->trials) < max;
}

enum breaker_state breaker_state(struct breaker *b, uint64_t now_ms)
{
    uint8_t st = atomic_load_explicit(&b->state, memory_order_acquire);
    if (st == BREAKER_STATE_OPEN && now_ms >= LOAD(b->open_until))
        return BREAKER_STATE_HALF_OPEN;
    return (enum breaker_state)st;
}

uint32_t breaker_open_time_ms(struct breaker *b)
{
    return LOAD(b->open_ms);
}

void breaker_counters_read(struct breaker *b, struct breaker_counters *out)
{
    out->opened = LOAD(b->n_opened);
    out->half_opened = LOAD(b->n_half_opened);
    out->closed = LOAD(b->n_closed);
    out->rejected = LOAD(b->n_rejected);
}

void breaker_export(struct breaker *b, uint64_t now_ms, struct breaker_carry *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&b->lock);
    uint8_t st = LOAD(b->state);
    out->failures = LOAD(b->failures);
    out->open_ms = LOAD(b->open_ms);
    if (st != BREAKER_STATE_CLOSED) {
        uint64_t until = LOAD(b->open_until);
        out->state = BREAKER_STATE_OPEN;
        out->open_left_ms =
            st == BREAKER_STATE_OPEN && until > now_ms
                ? (uint32_t)(until - now_ms > UINT32_MAX ? UINT32_MAX : until - now_ms)
                : 0;
    }
    pthread_mutex_unlock(&b->lock);
}

void breaker_import(struct breaker *b, const struct breaker_carry *in, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    b->successes = 0;
    STORE(b->failures, in->failures);
    STORE(b->open_ms, in->open_ms);
    if (in->state == BREAKER_STATE_OPEN) {
        STORE(b->open_until, now_ms + in->open_left_ms);
        atomic_store_explicit(&b->state, BREAKER_STATE_OPEN, memory_order_release);
    } else {
        atomic_store_explicit(&b->state, BREAKER_STATE_CLOSED, memory_order_release);
    }
    pthread_mutex_unlock(&b->lock);
}
