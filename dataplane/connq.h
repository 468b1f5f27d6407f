/* dataplane/connq.h: a backend's connection limit and its queue.
 *
 * One per backend id, shared by every worker (in the backend's bshared
 * entry). It counts the upstream connections open or being set up to the
 * backend in the whole data plane. With a limit, a request that needs a new
 * connection while the count is at the limit waits in one FIFO queue shared
 * by the workers (fair across them), bounded in length. When a connection
 * closes, its slot goes straight to the oldest waiter instead of back to the
 * count, so a newcomer cannot overtake the queue.
 *
 * A waiter hears its fate through its worker's inbox: the thread that frees a
 * slot (any worker) appends the waiter to the inbox of the waiter's worker and
 * calls that inbox's wake function (ev_async_send); the worker then takes the
 * waiters out one by one with connq_inbox_pop(). Grants are:
 *   CONNQ_SLOT  a connection slot, now the waiter's (release it when done);
 *   CONNQ_ELSEWHERE  the backend was ejected or left rotation: pick another.
 *
 * Locking: each queue and each inbox has its own mutex; a queue's lock may be
 * held while an inbox's is taken, never the other way round. Counts for
 * metrics are atomics readable from any thread. Nothing here allocates or
 * logs. */
#ifndef LB_CONNQ_H
#define LB_CONNQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CONNQ_DEFAULT_MAX_QUEUE  1024
#define CONNQ_DEFAULT_TIMEOUT_MS 5000

enum connq_grant {
    CONNQ_NONE = 0,
    CONNQ_SLOT = 1,
    CONNQ_ELSEWHERE = 2,
};

enum connq_result {
    CONNQ_OK = 0,     /* a slot is the caller's: connect */
    CONNQ_QUEUED = 1, /* the waiter waits; its grant comes through its inbox */
    CONNQ_FULL = 2,   /* at the limit and the queue is full: answer 503 */
};

/* Where a worker's grants arrive. Initialise with connq_inbox_init(). */
struct connq_inbox {
    pthread_mutex_t lock;
    struct connq_waiter *head; /* granted waiters, oldest first */
    struct connq_waiter *tail;
    void (*wake)(void *arg); /* any thread: tell the worker (ev_async_send) */
    void *wake_arg;
};

/* The caller's memory for one waiting request; fields are the module's but
 * <owner> (the caller's), <grant> once popped and <since_ms>. */
struct connq_waiter {
    void *owner;
    struct connq_waiter *next;
    struct connq_waiter *prev;
    struct connq_inbox *inbox;
    struct connq *q;
    uint64_t since_ms; /* when it started waiting */
    uint8_t where;     /* internal: nowhere, in the queue, in the inbox */
    uint8_t grant;     /* enum connq_grant, once granted */
};

struct connq {
    pthread_mutex_t lock;
    _Atomic uint32_t conns;    /* open or being set up, all workers */
    _Atomic uint32_t queued;   /* waiters in the queue */
    struct connq_waiter *head; /* under lock */
    struct connq_waiter *tail;
    _Atomic uint64_t timeouts; /* waiters that gave up after the queue timeout */
    _Atomic uint64_t full;     /* requests refused: queue full */
    _Atomic uint64_t waited;   /* waiters that got a grant ... */
    _Atomic uint64_t wait_us;  /* ... and their total wait */
};

/* In the caller's memory; connq_deinit() once nothing uses it. */
void connq_init(struct connq *q);
void connq_deinit(struct connq *q);
void connq_inbox_init(struct connq_inbox *in, void (*wake)(void *arg), void *wake_arg);
void connq_inbox_deinit(struct connq_inbox *in);

/* A new connection to the backend is wanted, with at most <max> open
 * (0: no limit; always CONNQ_OK) and <max_queue> waiting. On CONNQ_QUEUED
 * <w> (caller's memory, owned by the queue until it is granted or
 * cancelled) waits, reporting to <inbox>. Any thread. */
enum connq_result connq_acquire(struct connq *q, uint32_t max, uint32_t max_queue,
                                struct connq_waiter *w, struct connq_inbox *inbox, uint64_t now_ms);

/* A connection (or a slot granted but not used) is gone: its slot goes to the
 * oldest waiter while the count is within <max>, else back to the count. Any
 * thread. */
void connq_release(struct connq *q, uint32_t max, uint64_t now_ms);

/* The limit went up to <max> (0: none): waiters that now fit get slots. */
void connq_kick(struct connq *q, uint32_t max, uint64_t now_ms);

/* The backend was ejected or left rotation: every waiter is told to go
 * elsewhere. Returns how many were. Any thread. */
uint32_t connq_flush(struct connq *q, uint64_t now_ms);

/* The waiter gives up (its timeout, or its client left). Returns the grant it
 * had already received but not yet popped (CONNQ_SLOT: the caller must
 * connq_release() it), else CONNQ_NONE. <timed_out> counts it as a queue
 * timeout. The waiter's worker thread only. */
enum connq_grant connq_cancel(struct connq_waiter *w, bool timed_out);

/* The next granted waiter of this inbox, or NULL. Its <grant> says what it
 * got. The inbox's worker thread. */
struct connq_waiter *connq_inbox_pop(struct connq_inbox *in);

/* True when the waiter is in a queue or an inbox. */
bool connq_waiter_is_pending(const struct connq_waiter *w);

#endif
