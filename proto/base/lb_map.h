/* proto/base/lb_map.h: the hash map from an id to a pointer.
 *
 * Open addressing with linear probing, in the caller's memory (struct lb_map
 * is embedded; its table is on the heap). Keys are borrowed, not copied: a
 * key must stay valid and unchanged while it is in the map, which is natural
 * when it is the id field of the value it maps to. Values are non-NULL
 * pointers (so that NULL means "absent").
 *
 * Keys are NUL-terminated id strings by default, hashed with FNV-1a: ids come
 * from the operator's config, not from clients. For another kind of key pass
 * its own hash and equality (a client-chosen key needs a keyed hash, see
 * lb_hash_sip13).
 *
 * Not thread-safe: one thread at a time, or the caller's lock. */
#ifndef LB_MAP_H
#define LB_MAP_H

#include <stdbool.h>
#include <stdint.h>

typedef uint64_t lb_map_hash_fn(const void *key);
typedef bool lb_map_eq_fn(const void *a, const void *b);

struct lb_map_slot {
    const void *key; /* NULL: never used; lb_map__gone: removed */
    void *value;
    uint64_t hash; /* of key, kept for growing */
};

struct lb_map {
    struct lb_map_slot *slots; /* cap slots, NULL until the first add */
    uint32_t cap;              /* 0 or a power of two */
    uint32_t n;                /* keys in the map */
    uint32_t used;             /* slots holding a key or a removal mark */
    lb_map_hash_fn *hash;
    lb_map_eq_fn *eq;
};

enum lb_map_add {
    LB_MAP_ADDED,  /* the key maps to the value now */
    LB_MAP_EXISTS, /* the key was there already; the map is unchanged */
    LB_MAP_NOMEM,  /* no memory to grow; the map is unchanged */
};

/* Initializes <m> empty, without allocating. <hash> and <eq> both NULL: keys
 * are id strings (FNV-1a, strcmp); otherwise both are given. */
void lb_map_init(struct lb_map *m, lb_map_hash_fn *hash, lb_map_eq_fn *eq);

/* Frees the table (not the keys or values); <m> may be initialized again. */
void lb_map_deinit(struct lb_map *m);

/* Makes room for <n> keys in all, so that adding up to that many never fails
 * for memory. False on no memory (the map is unchanged and still usable). */
bool lb_map_reserve(struct lb_map *m, uint32_t n);

/* The value of <key>, or NULL when it is not in the map. */
void *lb_map_get(const struct lb_map *m, const void *key);

/* Maps <key> to <value> (non-NULL; <key> is kept, see above) unless <key> is
 * in the map already: then returns LB_MAP_EXISTS and, when <existing> is not
 * NULL, sets *<existing> to its value. */
enum lb_map_add lb_map_add(struct lb_map *m, const void *key, void *value, void **existing);

/* Removes <key>; returns its value, or NULL when it was not in the map. */
void *lb_map_del(struct lb_map *m, const void *key);

/* Number of keys in the map. */
uint32_t lb_map_count(const struct lb_map *m);

/* Iterates: start with *<pos> = 0; each call returns the next value (and its
 * key in *<key> when <key> is not NULL), NULL after the last. The map must not
 * change during the walk, except by lb_map_del() of the key just returned.
 * The order is the table's, not insertion order. */
void *lb_map_next(const struct lb_map *m, uint32_t *pos, const void **key);

extern const char lb_map__gone[]; /* module-internal: the removal mark */

#endif
