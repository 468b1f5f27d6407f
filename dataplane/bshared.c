/* dataplane/bshared.c */
#include "bshared.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lb_err.h"

struct entry {
    struct bshared pub;
    /* registry fields, under the registry lock */
    char *id;
    uint32_t refs;
    uint64_t hash;
    struct entry *next;
};

struct bshared_registry {
    pthread_mutex_t lock;
    struct entry **buckets;
    uint32_t cap; /* power of two */
    uint32_t n;
    _Atomic int32_t ejected;
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void entry_free(struct entry *e)
{
    breaker_free(e->pub.breaker);
    connq_deinit(&e->pub.q);
    free(e->id);
    free(e);
}

struct bshared_registry *bshared_registry_new(struct lb_err *err)
{
    struct bshared_registry *r = calloc(1, sizeof(*r));
    if (r != NULL) {
        r->cap = 64;
        r->buckets = calloc(r->cap, sizeof(*r->buckets));
    }
    if (r == NULL || r->buckets == NULL) {
        free(r);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory creating the backend registry");
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->ejected, 0);
    return r;
}

void bshared_registry_free(struct bshared_registry *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->cap; i++) {
        struct entry *e = r->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    free(r->buckets);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Under lock. */
static struct entry *reg_lookup(struct bshared_registry *r, const char *id, uint64_t h)
{
    for (struct entry *e = r->buckets[h & (r->cap - 1)]; e != NULL; e = e->next) {
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

/* Under lock. Doubles the table when it is more than 3/4 full; on no memory
 * it keeps the old one (longer chains, still correct). */
static void reg_grow(struct bshared_registry *r)
{
    if (r->n < r->cap / 4 * 3 || r->cap > UINT32_MAX / 2)
        return;
    uint32_t cap = r->cap * 2;
    struct entry **nb = calloc(cap, sizeof(*nb));
    if (nb == NULL)
        return;
    for (uint32_t i = 0; i < r->cap; i++) {
        struct entry *e = r->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            e->next = nb[e->hash & (cap - 1)];
            nb[e->hash & (cap - 1)] = e;
            e = next;
        }
    }
    free(r->buckets);
    r->buckets = nb;
    r->cap = cap;
}

static struct entry *entry_new(const char *id, uint64_t h)
{
    struct entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->id = strdup(id);
    e->pub.breaker = breaker_new(NULL);
    if (e->id == NULL || e->pub.breaker == NULL) {
        breaker_free(e->pub.breaker);
        free(e->id);
        free(e);
        return NULL;
    }
    e->pub.id = e->id;
    connq_init(&e->pub.q);
    e->hash = h;
    return e;
}

struct bshared *bshared_registry_get(struct bshared_registry *r, const char *id, struct lb_err *err)
{
    if (id == NULL || id[0] == '\0') {
        lb_err_set(err, LB_EINVAL, 0, "backend registry: empty backend id");
        return NULL;
    }
    uint64_t h = hash_id(id);
    pthread_mutex_lock(&r->lock);
    struct entry *e = reg_lookup(r, id, h);
    if (e == NULL) {
        e = entry_new(id, h);
        if (e == NULL) {
            pthread_mutex_unlock(&r->lock);
            lb_err_set(err, LB_ENOMEM, 0, "out of memory creating the shared state of %s", id);
            return NULL;
        }
        reg_grow(r);
        e->next = r->buckets[h & (r->cap - 1)];
        r->buckets[h & (r->cap - 1)] = e;
        r->n++;
    }
    e->refs++;
    pthread_mutex_unlock(&r->lock);
    return &e->pub;
}

struct bshared *bshared_registry_find(struct bshared_registry *r, const char *id)
{
    if (id == NULL)
        return NULL;
    uint64_t h = hash_id(id);
    pthread_mutex_lock(&r->lock);
    struct entry *e = reg_lookup(r, id, h);
    if (e != NULL)
        e->refs++;
    pthread_mutex_unlock(&r->lock);
    return e != NULL ? &e->pub : NULL;
}

void bshared_registry_release(struct bshared_registry *r, struct bshared *b)
{
    if (b == NULL)
        return;
    struct entry *e = (struct entry *)b; /* pub is the first member */
    pthread_mutex_lock(&r->lock);
    if (--e->refs > 0) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    struct entry **pp = &r->buckets[e->hash & (r->cap - 1)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->next;
    if (*pp == e) {
        *pp = e->next;
        r->n--;
    }
    if (eject_is_out(&e->pub.eject))
        atomic_fetch_sub(&r->ejected, 1);
    pthread_mutex_unlock(&r->lock);
    entry_free(e);
}

uint32_t bshared_registry_count(struct bshared_registry *r)
{
    pthread_mutex_lock(&r->lock);
    uint32_t n = r->n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

uint32_t bshared_registry_ejected(struct bshared_registry *r)
{
    int32_t n = atomic_load_explicit(&r->ejected, memory_order_relaxed);
    return n > 0 ? (uint32_t)n : 0;
}

void bshared_registry_note_ejected(struct bshared_registry *r, int delta)
{
    atomic_fetch_add(&r->ejected, delta);
}
