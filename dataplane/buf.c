/* dataplane/buf.c: the buffer pool. */
#include "buf.h"

#include <stdlib.h>

struct buf *buf_get(struct buf_pool *p)
{
    struct buf *b = p->free;
    if (b != NULL) {
        p->free = b->next;
        p->n_free--;
        if (p->n_free < p->low)
            p->low = p->n_free;
    } else {
        b = malloc(sizeof(*b) + BUF_SIZE);
        if (b == NULL)
            return NULL;
        b->cap = BUF_SIZE;
    }
    b->next = NULL;
    b->start = b->end = 0;
    return b;
}

/* A buffer of <cap> bytes (from the heap) holding <b>'s bytes at its start;
 * NULL on no memory. */
static struct buf *buf_moved(const struct buf *b, uint32_t cap)
{
    struct buf *nb = malloc(sizeof(*nb) + cap);
    if (nb == NULL)
        return NULL;
    nb->next = NULL;
    nb->cap = cap;
    nb->start = 0;
    nb->end = buf_len(b);
    memcpy(nb->data, b->data + b->start, nb->end);
    return nb;
}

struct buf *buf_grow(struct buf_pool *p, struct buf *b, uint32_t cap)
{
    if (cap <= b->cap)
        return b;
    struct buf *nb = buf_moved(b, cap);
    if (nb != NULL)
        buf_put(p, b);
    return nb;
}

struct buf *buf_fit(struct buf_pool *p, struct buf *b)
{
    if (b->cap != BUF_SIZE || buf_len(b) > BUF_FIT_MAX)
        return b;
    struct buf *nb = buf_moved(b, buf_len(b));
    if (nb == NULL)
        return b;
    buf_put(p, b);
    return nb;
}

void buf_put(struct buf_pool *p, struct buf *b)
{
    if (b == NULL)
        return;
    if (b->cap != BUF_SIZE || p->n_free >= BUF_POOL_MAX) {
        free(b);
        return;
    }
    b->next = p->free;
    p->free = b;
    p->n_free++;
}

uint32_t buf_pool_trim(struct buf_pool *p)
{
    uint32_t idle = p->low < p->n_free ? p->low : p->n_free;
    uint32_t n = idle > BUF_POOL_KEEP ? idle - BUF_POOL_KEEP : 0;
    for (uint32_t i = 0; i < n; i++) {
        struct buf *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->n_free -= n;
    p->low = p->n_free;
    return n;
}

void buf_pool_deinit(struct buf_pool *p)
{
    while (p->free != NULL) {
        struct buf *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->n_free = 0;
}
