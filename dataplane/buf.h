/* dataplane/buf.h: I/O buffers and the per-worker pool they come from.
 *
 * A buffer holds bytes in [start, end) of data[cap]. Pool buffers are
 * BUF_SIZE bytes; a larger one (a head near the limits) is allocated on its
 * own and freed when put back. A pool belongs to one worker thread. */
#ifndef LB_BUF_H
#define LB_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BUF_SIZE      (16u * 1024u)
#define BUF_POOL_MAX  256            /* free buffers a pool keeps at most */
#define BUF_POOL_KEEP 4              /* ... and keeps through buf_pool_trim() */
#define BUF_FIT_MAX   (BUF_SIZE / 4) /* buf_fit() copies at most this much */

struct buf {
    struct buf *next; /* free list link */
    uint32_t start;
    uint32_t end;
    uint32_t cap;
    char data[];
};

struct buf_pool {
    struct buf *free;
    uint32_t n_free;
    uint32_t low; /* the fewest free buffers since the last buf_pool_trim() */
};

/* A BUF_SIZE buffer, empty, from <p> (or the heap); NULL on no memory. */
struct buf *buf_get(struct buf_pool *p);

/* Replaces <b> by a buffer of at least <cap> bytes holding the same bytes
 * (moved to its start) and returns it; <b> itself when it is big enough.
 * NULL on no memory, <b> left as it was. */
struct buf *buf_grow(struct buf_pool *p, struct buf *b, uint32_t cap);

/* Replaces <b>, a pool buffer holding a few bytes that stay a while (a
 * request head kept for a retry), by a buffer of just their size and gives
 * <b> back to <p>; <b> itself when it holds more than BUF_FIT_MAX bytes, is
 * not a pool buffer, or on no memory. */
struct buf *buf_fit(struct buf_pool *p, struct buf *b);

/* Gives <b> (NULL: nothing) back to <p>, or frees it. */
void buf_put(struct buf_pool *p, struct buf *b);

/* Frees the buffers that stayed unused since the previous call (the pool's
 * low-water mark), keeping at least BUF_POOL_KEEP: after a burst the pool
 * shrinks back within two calls, while a steady load keeps what it uses.
 * Returns how many it freed. */
uint32_t buf_pool_trim(struct buf_pool *p);

/* Frees every buffer <p> keeps (worker exit). */
void buf_pool_deinit(struct buf_pool *p);

/* Bytes in <b> (NULL: 0). */
static inline uint32_t buf_len(const struct buf *b)
{
    return b ? b->end - b->start : 0;
}

/* Makes room at the end of <b>: an empty buffer starts over, a full one
 * moves its bytes to the start. */
static inline void buf_compact(struct buf *b)
{
    if (b->start == b->end) {
        b->start = b->end = 0;
    } else if (b->start > 0 && b->end == b->cap) {
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
}

/* Appends <n> bytes; false (nothing appended) when they do not fit. */
static inline bool buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->cap - b->end < n)
        return false;
    memcpy(b->data + b->end, p, n);
    b->end += (uint32_t)n;
    return true;
}

static inline bool buf_appends(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

#endif
