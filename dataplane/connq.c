/* dataplane/connq.c */
#include "connq.h"

#include <stddef.h>

#include "lb_assert.h"

enum where {
    W_NOWHERE = 0,
    W_QUEUE = 1,
    W_INBOX = 2,
};

#define RELAXED memory_order_relaxed

void connq_init(struct connq *q)
{
    pthread_mutex_init(&q->lock, NULL);
    atomic_init(&q->conns, 0);
    atomic_init(&q->queued, 0);
    q->head = q->tail = NULL;
    atomic_init(&q->timeouts, 0);
    atomic_init(&q->full, 0);
    atomic_init(&q->waited, 0);
    atomic_init(&q->wait_us, 0);
}

void connq_deinit(struct connq *q)
{
    LB_ASSERT(q->head == NULL);
    pthread_mutex_destroy(&q->lock);
}

void connq_inbox_init(struct connq_inbox *in, void (*wake)(void *arg), void *wake_arg)
{
    pthread_mutex_init(&in->lock, NULL);
    in->head = in->tail = NULL;
    in->wake = wake;
    in->wake_arg = wake_arg;
}

void connq_inbox_deinit(struct connq_inbox *in)
{
    pthread_mutex_destroy(&in->lock);
}

static void list_unlink(struct connq_waiter **head, struct connq_waiter **tail,
                        struct connq_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        *tail = w->prev;
    w->next = w->prev = NULL;
}

static void list_append(struct connq_waiter **head, struct connq_waiter **tail,
                        struct connq_waiter *w)
{
    w->next = NULL;
    w->prev = *tail;
    if (*tail)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
}

/* Under q->lock: takes the oldest waiter out of the queue and hands it
 * <grant> through its inbox. */
static void grant_head(struct connq *q, uint8_t grant, uint64_t now_ms)
{
    struct connq_waiter *w = q->head;
    list_unlink(&q->head, &q->tail, w);
    atomic_fetch_sub_explicit(&q->queued, 1, RELAXED);
    if (grant == CONNQ_SLOT) {
        atomic_fetch_add_explicit(&q->waited, 1, RELAXED);
        uint64_t us = now_ms > w->since_ms ? (now_ms - w->since_ms) * 1000 : 0;
        atomic_fetch_add_explicit(&q->wait_us, us, RELAXED);
    }
    struct connq_inbox *in = w->inbox;
    pthread_mutex_lock(&in->lock);
    w->grant = grant;
    w->where = W_INBOX;
    list_append(&in->head, &in->tail, w);
    pthread_mutex_unlock(&in->lock);
    in->wake(in->wake_arg);
}

enum connq_result connq_acquire(struct connq *q, uint32_t max, uint32_t max_queue,
                                struct connq_waiter *w, struct connq_inbox *inbox, uint64_t now_ms)
{
    if (max == 0) {
        atomic_fetch_add_explicit(&q->conns, 1, RELAXED);
        return CONNQ_OK;
    }
    if (max_queue == 0)
        max_queue = CONNQ_DEFAULT_MAX_QUEUE;
    enum connq_result r;
    pthread_mutex_lock(&q->lock);
    if (q->head == NULL && atomic_load_explicit(&q->conns, RELAXED) < max) {
        atomic_fetch_add_explicit(&q->conns, 1, RELAXED);
        r = CONNQ_OK;
    } else if (atomic_load_explicit(&q->queued, RELAXED) >= max_queue) {
        atomic_fetch_add_explicit(&q->full, 1, RELAXED);
        r = CONNQ_FULL;
    } else {
        w->q = q;
        w->inbox = inbox;
        w->since_ms = now_ms;
        w->grant = CONNQ_NONE;
        w->where = W_QUEUE;
        list_append(&q->head, &q->tail, w);
        atomic_fetch_add_explicit(&q->queued, 1, RELAXED);
        r = CONNQ_QUEUED;
    }
    pthread_mutex_unlock(&q->lock);
    return r;
}

void connq_release(struct connq *q, uint32_t max, uint64_t now_ms)
{
    /* no limit and nobody waiting (a limit removed has granted them all):
     * a plain decrement, the common case */
    if (max == 0 && atomic_load_explicit(&q->queued, RELAXED) == 0) {
        atomic_fetch_sub_explicit(&q->conns, 1, RELAXED);
        return;
    }
    pthread_mutex_lock(&q->lock);
    LB_ASSERT(atomic_load_explicit(&q->conns, RELAXED) > 0);
    if (q->head != NULL && (max == 0 || atomic_load_explicit(&q->conns, RELAXED) <= max))
        grant_head(q, CONNQ_SLOT, now_ms); /* the slot changes hands; the count stays */
    else
        atomic_fetch_sub_explicit(&q->conns, 1, RELAXED);
    pthread_mutex_unlock(&q->lock);
}

void connq_kick(struct connq *q, uint32_t max, uint64_t now_ms)
{
    if (atomic_load_explicit(&q->queued, RELAXED) == 0)
        return;
    pthread_mutex_lock(&q->lock);
    while (q->head != NULL && (max == 0 || atomic_load_explicit(&q->conns, RELAXED) < max)) {
        atomic_fetch_add_explicit(&q->conns, 1, RELAXED);
        grant_head(q, CONNQ_SLOT, now_ms);
    }
    pthread_mutex_unlock(&q->lock);
}

uint32_t connq_flush(struct connq *q, uint64_t now_ms)
{
    if (atomic_load_explicit(&q->queued, RELAXED) == 0)
        return 0;
    uint32_t n = 0;
    pthread_mutex_lock(&q->lock);
    while (q->head != NULL) {
        grant_head(q, CONNQ_ELSEWHERE, now_ms);
        n++;
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

enum connq_grant connq_cancel(struct connq_waiter *w, bool timed_out)
{
    struct connq *q = w->q;
    enum connq_grant g = CONNQ_NONE;
    if (q == NULL)
        return g;
    pthread_mutex_lock(&q->lock);
    if (w->where == W_QUEUE) {
        list_unlink(&q->head, &q->tail, w);
        atomic_fetch_sub_explicit(&q->queued, 1, RELAXED);
        w->where = W_NOWHERE;
    }
    pthread_mutex_unlock(&q->lock);
    if (w->where == W_INBOX) {
        /* granted while it gave up: the grant is taken back out of the inbox
         * (only this thread pops it, so it is still there) */
        struct connq_inbox *in = w->inbox;
        pthread_mutex_lock(&in->lock);
        list_unlink(&in->head, &in->tail, w);
        pthread_mutex_unlock(&in->lock);
        w->where = W_NOWHERE;
        g = (enum connq_grant)w->grant;
    }
    if (timed_out)
        atomic_fetch_add_explicit(&q->timeouts, 1, RELAXED);
    w->q = NULL;
    return g;
}

struct connq_waiter *connq_inbox_pop(struct connq_inbox *in)
{
    pthread_mutex_lock(&in->lock);
    struct connq_waiter *w = in->head;
    if (w != NULL) {
        list_unlink(&in->head, &in->tail, w);
        w->where = W_NOWHERE;
        w->q = NULL;
    }
    pthread_mutex_unlock(&in->lock);
    return w;
}

bool connq_waiter_is_pending(const struct connq_waiter *w)
{
    return w->q != NULL;
}
