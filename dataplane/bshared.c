/* dataplane/bshared.c */
#include "bshared.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lb_assert.h"
#include "lb_err.h"
#include "lb_map.h"
#include "lb_ref.h"

struct entry {
    struct bshared pub;
    /* registry fields, under the registry lock */
    char *id;
    struct lb_ref ref; /* views naming the id; the last release unlinks under the lock */
};

struct bshared_registry {
    pthread_mutex_t lock;
    struct lb_map by_id; /* id -> struct entry, under <lock> */
    _Atomic int32_t ejected;
};

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
        lb_map_init(&r->by_id, NULL, NULL);
        if (!lb_map_reserve(&r->by_id, 48)) {
            free(r);
            r = NULL;
        }
    }
    if (r == NULL) {
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
    uint32_t pos = 0;
    struct entry *e;
    while ((e = lb_map_next(&r->by_id, &pos, NULL)) != NULL)
        entry_free(e);
    lb_map_deinit(&r->by_id);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static struct entry *entry_new(const char *id)
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
    lb_ref_init(&e->ref);
    return e;
}

struct bshared *bshared_registry_get(struct bshared_registry *r, const char *id, struct lb_err *err)
{
    if (id == NULL || id[0] == '\0') {
        lb_err_set(err, LB_EINVAL, 0, "backend registry: empty backend id");
        return NULL;
    }
    pthread_mutex_lock(&r->lock);
    struct entry *e = lb_map_get(&r->by_id, id);
    if (e != NULL) {
        lb_ref_get(&e->ref);
    } else if ((e = entry_new(id)) != NULL &&
               lb_map_add(&r->by_id, e->id, e, NULL) != LB_MAP_ADDED) {
        entry_free(e);
        e = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    if (e == NULL)
        lb_err_set(err, LB_ENOMEM, 0, "out of memory creating the shared state of %s", id);
    return e != NULL ? &e->pub : NULL;
}

struct bshared *bshared_registry_find(struct bshared_registry *r, const char *id)
{
    if (id == NULL)
        return NULL;
    pthread_mutex_lock(&r->lock);
    struct entry *e = lb_map_get(&r->by_id, id);
    if (e != NULL)
        lb_ref_get(&e->ref);
    pthread_mutex_unlock(&r->lock);
    return e != NULL ? &e->pub : NULL;
}

void bshared_registry_release(struct bshared_registry *r, struct bshared *b)
{
    if (b == NULL)
        return;
    struct entry *e = (struct entry *)b; /* pub is the first member */
    pthread_mutex_lock(&r->lock);
    if (!lb_ref_put(&e->ref)) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    struct entry *was = lb_map_del(&r->by_id, e->id);
    LB_ASSERT(was == e);
    (void)was;
    if (eject_is_out(&e->pub.eject))
        atomic_fetch_sub(&r->ejected, 1);
    pthread_mutex_unlock(&r->lock);
    entry_free(e);
}

uint32_t bshared_registry_count(struct bshared_registry *r)
{
    pthread_mutex_lock(&r->lock);
    uint32_t n = lb_map_count(&r->by_id);
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
