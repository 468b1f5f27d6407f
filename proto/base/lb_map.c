/* proto/base/lb_map.c */
#include "lb_map.h"

#include <stdlib.h>
#include <string.h>

#include "lb_assert.h"
#include "lb_hash.h"

const char lb_map__gone[] = "";

#define MIN_CAP 16

static uint64_t str_hash(const void *key)
{
    return lb_hash_fnv1a_str(key);
}

static bool str_eq(const void *a, const void *b)
{
    return strcmp(a, b) == 0;
}

void lb_map_init(struct lb_map *m, lb_map_hash_fn *hash, lb_map_eq_fn *eq)
{
    LB_ASSERT((hash == NULL) == (eq == NULL));
    *m = (struct lb_map){.hash = hash ? hash : str_hash, .eq = eq ? eq : str_eq};
}

void lb_map_deinit(struct lb_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = m->used = 0;
}

/* The slot holding <key>, or NULL. */
static struct lb_map_slot *find(const struct lb_map *m, const void *key, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    uint32_t mask = m->cap - 1;
    /* the table always keeps a never-used slot (used < cap), so this ends */
    for (uint32_t at = (uint32_t)h & mask;; at = (at + 1) & mask) {
        struct lb_map_slot *s = &m->slots[at];
        if (s->key == NULL)
            return NULL;
        if (s->key != lb_map__gone && s->hash == h && m->eq(s->key, key))
            return s;
    }
}

/* Rebuilds the table at a size fitting <n> keys at most half full, dropping
 * removal marks. */
static bool rehash(struct lb_map *m, uint32_t n)
{
    uint32_t cap = MIN_CAP;
    while (cap / 2 < n) {
        if (cap > UINT32_MAX / 2)
            return false;
        cap *= 2;
    }
    struct lb_map_slot *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (uint32_t i = 0; i < m->cap; i++) {
        const struct lb_map_slot *s = &m->slots[i];
        if (s->key == NULL || s->key == lb_map__gone)
            continue;
        uint32_t at = (uint32_t)s->hash & (cap - 1);
        while (slots[at].key != NULL)
            at = (at + 1) & (cap - 1);
        slots[at] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->n;
    return true;
}

bool lb_map_reserve(struct lb_map *m, uint32_t n)
{
    if (n < m->n)
        n = m->n;
    /* lb_map_add() grows once used would pass 3/4 of cap */
    if (m->cap != 0 && (uint64_t)(m->used + (n - m->n)) * 4 <= (uint64_t)m->cap * 3)
        return true;
    return rehash(m, n);
}

void *lb_map_get(const struct lb_map *m, const void *key)
{
    const struct lb_map_slot *s = find(m, key, m->hash(key));
    return s != NULL ? s->value : NULL;
}

enum lb_map_add lb_map_add(struct lb_map *m, const void *key, void *value, void **existing)
{
    LB_ASSERT(key != NULL && value != NULL);
    uint64_t h = m->hash(key);
    struct lb_map_slot *s = find(m, key, h);
    if (s != NULL) {
        if (existing != NULL)
            *existing = s->value;
        return LB_MAP_EXISTS;
    }
    if ((uint64_t)(m->used + 1) * 4 > (uint64_t)m->cap * 3 && !rehash(m, m->n + 1))
        return LB_MAP_NOMEM;
    uint32_t mask = m->cap - 1;
    uint32_t at = (uint32_t)h & mask;
    while (m->slots[at].key != NULL && m->slots[at].key != lb_map__gone)
        at = (at + 1) & mask;
    if (m->slots[at].key == NULL)
        m->used++;
    m->slots[at] = (struct lb_map_slot){key, value, h};
    m->n++;
    return LB_MAP_ADDED;
}

void *lb_map_del(struct lb_map *m, const void *key)
{
    struct lb_map_slot *s = find(m, key, m->hash(key));
    if (s == NULL)
        return NULL;
    void *value = s->value;
    /* a probe for another key may run through this slot: mark, don't empty */
    s->key = lb_map__gone;
    s->value = NULL;
    m->n--;
    return value;
}

uint32_t lb_map_count(const struct lb_map *m)
{
    return m->n;
}

void *lb_map_next(const struct lb_map *m, uint32_t *pos, const void **key)
{
    for (; *pos < m->cap; (*pos)++) {
        const struct lb_map_slot *s = &m->slots[*pos];
        if (s->key != NULL && s->key != lb_map__gone) {
            (*pos)++;
            if (key != NULL)
                *key = s->key;
            return s->value;
        }
    }
    return NULL;
}
