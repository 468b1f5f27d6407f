/* controlplane/config_tree.c: the small node tree both parsers produce and
 * the exporters and the diff read, so that one decoder holds every rule. */
#include "config_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void config__cn_free(struct cnode *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->n; i++)
        config__cn_free(n->items[i]);
    free(n->items);
    free(n->s);
    free(n);
}

struct cnode *config__cn_new(enum cn_kind kind)
{
    struct cnode *n = calloc(1, sizeof(*n));
    if (n != NULL)
        n->kind = kind;
    return n;
}

struct cnode *config__cn_scalar(enum cn_type type, const char *s)
{
    struct cnode *n = config__cn_new(CN_SCALAR);
    if (n == NULL)
        return NULL;
    n->type = type;
    n->s = strdup(s);
    if (n->s == NULL) {
        free(n);
        return NULL;
    }
    return n;
}

int config__cn_push(struct cnode *n, struct cnode *child)
{
    if (child == NULL)
        return -1;
    if (n->n == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 8;
        struct cnode **items = realloc(n->items, cap * sizeof(*items));
        if (items == NULL) {
            config__cn_free(child);
            return -1;
        }
        n->items = items;
        n->cap = cap;
    }
    n->items[n->n++] = child;
    return 0;
}

size_t config__cn_map_len(const struct cnode *n)
{
    return n->n / 2;
}

const struct cnode *config__cn_key(const struct cnode *n, size_t i)
{
    return n->items[2 * i];
}

const struct cnode *config__cn_val(const struct cnode *n, size_t i)
{
    return n->items[2 * i + 1];
}

const struct cnode *config__cn_get(const struct cnode *map, const char *key)
{
    if (map == NULL || map->kind != CN_MAP)
        return NULL;
    for (size_t i = 0; i < config__cn_map_len(map); i++) {
        const struct cnode *k = config__cn_key(map, i);
        if (k->kind == CN_SCALAR && strcmp(k->s, key) == 0)
            return config__cn_val(map, i);
    }
    return NULL;
}

int config__put(struct cnode *map, const char *key, struct cnode *val)
{
    if (map == NULL) {
        config__cn_free(val);
        return -1;
    }
    if (val == NULL || config__cn_push(map, config__cn_scalar(CT_STRING, key)) != 0) {
        config__cn_free(val);
        map->broken = true;
        return -1;
    }
    if (config__cn_push(map, val) != 0) {
        map->broken = true;
        return -1;
    }
    return 0;
}

bool config__tree_complete(const struct cnode *n)
{
    if (n->kind == CN_SCALAR)
        return n->s != NULL;
    if (n->broken || (n->kind == CN_MAP && n->n % 2 != 0))
        return false;
    for (size_t i = 0; i < n->n; i++)
        if (n->items[i] == NULL || !config__tree_complete(n->items[i]))
            return false;
    return true;
}

bool config__is_null(const struct cnode *n)
{
    if (n->kind != CN_SCALAR)
        return false;
    if (n->type == CT_NULL)
        return true;
    return n->type == CT_PLAIN &&
           (n->s[0] == '\0' || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
            strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0);
}

const char *config__describe(const struct cnode *n)
{
    if (n->kind == CN_MAP)
        return "a mapping";
    if (n->kind == CN_SEQ)
        return "a list";
    switch (n->type) {
    case CT_NULL:
        return "nothing";
    case CT_BOOL:
        return "true/false";
    case CT_INT:
    case CT_REAL:
        return "a number";
    case CT_STRING:
        return "a string";
    case CT_PLAIN:
        break;
    }
    return "a plain value";
}

json_t *config__tree_to_json(const struct cnode *n)
{
    json_t *j = NULL;
    switch (n->kind) {
    case CN_SCALAR:
        if (n->type == CT_INT)
            j = json_integer(strtoll(n->s, NULL, 10));
        else if (n->type == CT_BOOL)
            j = json_boolean(strcmp(n->s, "true") == 0);
        else
            j = json_string(n->s);
        break;
    case CN_MAP:
        j = json_object();
        for (size_t i = 0; j && i < config__cn_map_len(n); i++)
            if (json_object_set_new(j, config__cn_key(n, i)->s,
                                    config__tree_to_json(config__cn_val(n, i))) != 0) {
                json_decref(j);
                j = NULL;
            }
        break;
    case CN_SEQ:
        j = json_array();
        for (size_t i = 0; j && i < n->n; i++)
            if (json_array_append_new(j, config__tree_to_json(n->items[i])) != 0) {
                json_decref(j);
                j = NULL;
            }
        break;
    }
    return j;
}
