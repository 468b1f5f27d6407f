/* controlplane/config_diff.c: what changed between two configs, computed on
 * their canonical trees so that what is compared is exactly what is stored.
 * Lists whose items have an id key match items by it; a key the export left
 * out reads as its row's default. */
#include "config_int.h"

#include "lb_err.h"
#include "lb_map.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct diff_builder {
    struct config_diff *d;
    size_t cap;
    bool failed;
};

static void diff_add(struct diff_builder *b, enum config_change_kind kind, const char *path,
                     const char *subject, const char *field, const char *old_value,
                     const char *new_value)
{
    if (b->failed)
        return;
    if (b->d->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct config_change *nc = realloc(b->d->changes, cap * sizeof(*nc));
        if (nc == NULL) {
            b->failed = true;
            return;
        }
        b->d->changes = nc;
        b->cap = cap;
    }
    struct config_change *c = &b->d->changes[b->d->n++];
    *c = (struct config_change){.kind = kind};
    c->path = strdup(path);
    c->subject = subject ? strdup(subject) : NULL;
    c->field = field ? strdup(field) : NULL;
    c->old_value = old_value ? strdup(old_value) : NULL;
    c->new_value = new_value ? strdup(new_value) : NULL;
    if (c->path == NULL || (subject && !c->subject) || (field && !c->field) ||
        (old_value && !c->old_value) || (new_value && !c->new_value))
        b->failed = true;
}

/* Scalars print as their text; lists and mappings as compact JSON. */
static char *render(const struct cnode *n)
{
    if (n->kind == CN_SCALAR)
        return strdup(n->s[0] ? n->s : "\"\"");
    json_t *j = config__tree_to_json(n);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

/* The text of key <key> under <prefix> when the export left it out (an
 * empty list for lists). */
static const char *default_text(const char *prefix, const char *key)
{
    char path[160];
    snprintf(path, sizeof(path), "%s.%s", prefix, key);
    const struct cfg_key *k = config__key(path);
    if (k != NULL && (k->type == CFG_STRLIST || k->type == CFG_LIST))
        return "[]";
    return k && k->def ? k->def : "";
}

/* <prefix> is the schema prefix of the keys of <a> and <c>. */
static void diff_maps(struct diff_builder *b, const struct cnode *a, const struct cnode *c,
                      const char *prefix, const char *path, const char *subject)
{
    size_t na = config__cn_map_len(a), nc = config__cn_map_len(c);
    for (size_t i = 0; i < na + nc; i++) {
        bool left = i < na;
        const char *key = left ? config__cn_key(a, i)->s : config__cn_key(c, i - na)->s;
        if (!left && config__cn_get(a, key) != NULL)
            continue;
        const struct cnode *va = config__cn_get(a, key), *vc = config__cn_get(c, key);
        char p[256], field[256];
        snprintf(p, sizeof(p), "%s.%s", path, key);
        snprintf(field, sizeof(field), "%s", subject ? key : p);
        struct cnode none = {
            .kind = CN_SCALAR, .type = CT_STRING, .s = (char *)default_text(prefix, key)};
        char *ra = render(va ? va : &none), *rc = render(vc ? vc : &none);
        if (ra == NULL || rc == NULL)
            b->failed = true;
        else if (strcmp(ra, rc) != 0)
            diff_add(b, CONFIG_CHANGE_CHANGED, p, subject, field, ra, rc);
        free(ra);
        free(rc);
    }
}

/* The items of a list by their <key> value: two 10,000-backend configs
 * compared pairwise took most of an apply. With duplicates the first wins. */
struct item_index {
    struct lb_map by_name; /* value of <key> -> item (const struct cnode) */
};

static int item_index_init(struct item_index *x, const struct cnode *seq, const char *key)
{
    lb_map_init(&x->by_name, NULL, NULL);
    if (seq->n > UINT32_MAX / 2 || !lb_map_reserve(&x->by_name, (uint32_t)seq->n))
        return -1;
    for (size_t i = 0; i < seq->n; i++)
        lb_map_add(&x->by_name, config__cn_get(seq->items[i], key)->s, (void *)seq->items[i], NULL);
    return 0;
}

static const struct cnode *find_item(const struct item_index *x, const char *val)
{
    return lb_map_get(&x->by_name, val);
}

/* What an added or removed item line says about it. */
static void item_summary(const struct cnode *it, const char *list, char *buf, size_t size)
{
    if (strcmp(list, "backends") == 0)
        snprintf(buf, size, "%s, weight %s", config__cn_get(it, "url")->s,
                 config__cn_get(it, "weight")->s);
    else
        snprintf(buf, size, "%s:%s%s", config__cn_get(it, "address")->s,
                 config__cn_get(it, "port")->s,
                 strcmp(config__cn_get(it, "tls")->s, "true") == 0 ? ", tls" : "");
}

/* The id row of list <k>, or NULL when its items are compared as values. */
static const struct cfg_key *id_key(const struct cfg_key *k)
{
    char prefix[128];
    if (k->type != CFG_LIST)
        return NULL;
    config__child_prefix(k, prefix, sizeof(prefix));
    CONFIG_EACH_CHILD(c, prefix)
    {
        if (c->flags & CFG_ID)
            return c;
    }
    return NULL;
}

static void diff_lists(struct diff_builder *b, const struct cnode *a, const struct cnode *c,
                       const struct cfg_key *list)
{
    char prefix[128], path[256], subject[256], summary[600];
    const char *key = config__key_name(id_key(list));
    struct item_index xa, xc;
    config__child_prefix(list, prefix, sizeof(prefix));
    if (item_index_init(&xa, a, key) != 0) {
        b->failed = true;
        return;
    }
    if (item_index_init(&xc, c, key) != 0) {
        lb_map_deinit(&xa.by_name);
        b->failed = true;
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        const char *id = config__cn_get(a->items[i], key)->s;
        const struct cnode *other = find_item(&xc, id);
        snprintf(path, sizeof(path), "%s[%s]", list->path, id);
        snprintf(subject, sizeof(subject), "%s %s", list->what, id);
        if (other == NULL) {
            item_summary(a->items[i], list->path, summary, sizeof(summary));
            diff_add(b, CONFIG_CHANGE_REMOVED, path, subject, NULL, summary, NULL);
        } else {
            diff_maps(b, a->items[i], other, prefix, path, subject);
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const char *id = config__cn_get(c->items[i], key)->s;
        if (find_item(&xa, id) != NULL)
            continue;
        snprintf(path, sizeof(path), "%s[%s]", list->path, id);
        snprintf(subject, sizeof(subject), "%s %s", list->what, id);
        item_summary(c->items[i], list->path, summary, sizeof(summary));
        diff_add(b, CONFIG_CHANGE_ADDED, path, subject, NULL, NULL, summary);
    }
    lb_map_deinit(&xa.by_name);
    lb_map_deinit(&xc.by_name);
}

/* Items without their id cannot be matched; canonical trees of parsed
 * configs always have them. */
static bool ids_present(const struct cnode *t)
{
    CONFIG_EACH_CHILD(k, "")
    {
        const struct cfg_key *id = id_key(k);
        const struct cnode *seq = config__cn_get(t, k->path);
        for (size_t i = 0; id && seq && i < seq->n; i++)
            if (config__cn_get(seq->items[i], config__key_name(id)) == NULL)
                return false;
    }
    return true;
}

/* The top-level keys: lists with ids item by item, the rest key by key. A
 * section one side left out compares against its defaults when the export
 * omits it for holding them (ejection), else it was added or removed. */
static void diff_top(struct diff_builder *bd, const struct cnode *ta, const struct cnode *tb)
{
    static const struct cnode empty = {.kind = CN_MAP};
    CONFIG_EACH_CHILD(k, "")
    {
        if (id_key(k) != NULL)
            diff_lists(bd, config__cn_get(ta, k->path), config__cn_get(tb, k->path), k);
    }
    for (size_t i = 0; i < config__cn_map_len(ta); i++) {
        const char *key = config__cn_key(ta, i)->s;
        const struct cfg_key *k = config__key(key);
        const struct cnode *sb = config__cn_get(tb, key);
        if (id_key(k) != NULL)
            continue;
        if (sb == NULL && (k->flags & CFG_OMIT_DEFAULT))
            diff_maps(bd, config__cn_val(ta, i), &empty, key, key, NULL);
        else if (sb == NULL)
            diff_add(bd, CONFIG_CHANGE_REMOVED, key, key, NULL, NULL, NULL);
        else
            diff_maps(bd, config__cn_val(ta, i), sb, key, key, NULL);
    }
    for (size_t i = 0; i < config__cn_map_len(tb); i++) {
        const char *key = config__cn_key(tb, i)->s;
        const struct cfg_key *k = config__key(key);
        if (config__cn_get(ta, key) != NULL)
            continue;
        if (k->flags & CFG_OMIT_DEFAULT)
            diff_maps(bd, &empty, config__cn_val(tb, i), key, key, NULL);
        else
            diff_add(bd, CONFIG_CHANGE_ADDED, key, key, NULL, NULL, NULL);
    }
}

struct config_diff *config_diff_new(const struct config *a, const struct config *b,
                                    struct lb_err *err)
{
    struct diff_builder bd = {.d = calloc(1, sizeof(struct config_diff))};
    struct cnode *ta = config__canonical(a), *tb = config__canonical(b);
    if (bd.d == NULL || ta == NULL || tb == NULL) {
        bd.failed = true;
    } else if (!ids_present(ta) || !ids_present(tb)) {
        lb_err_set(err, LB_EINVAL, 0, "every frontend needs a name and every backend an id");
        config_diff_free(bd.d);
        config__cn_free(ta);
        config__cn_free(tb);
        return NULL;
    } else {
        diff_top(&bd, ta, tb);
    }
    config__cn_free(ta);
    config__cn_free(tb);
    if (bd.failed) {
        config_diff_free(bd.d);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while comparing configs");
        return NULL;
    }
    return bd.d;
}

void config_diff_free(struct config_diff *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->changes[i].path);
        free(d->changes[i].subject);
        free(d->changes[i].field);
        free(d->changes[i].old_value);
        free(d->changes[i].new_value);
    }
    free(d->changes);
    free(d);
}

char *config_diff_text(const struct config_diff *d)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (o == NULL)
        return NULL;
    bool failed = false;
    for (size_t i = 0; i < d->n && !failed; i++) {
        const struct config_change *c = &d->changes[i];
        int n;
        if (c->kind == CONFIG_CHANGE_CHANGED && c->subject)
            n = fprintf(o, "%s: %s %s -> %s\n", c->subject, c->field, c->old_value, c->new_value);
        else if (c->kind == CONFIG_CHANGE_CHANGED)
            n = fprintf(o, "%s: %s -> %s\n", c->field, c->old_value, c->new_value);
        else if (c->kind == CONFIG_CHANGE_ADDED && c->new_value)
            n = fprintf(o, "%s added (%s)\n", c->subject, c->new_value);
        else
            n = fprintf(o, "%s %s\n", c->subject,
                        c->kind == CONFIG_CHANGE_ADDED ? "added" : "removed");
        failed = n < 0;
    }
    if (fclose(o) != 0 || failed) {
        free(text);
        return NULL;
    }
    return text;
}

static json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *config_diff_json(const struct config_diff *d)
{
    static const char *const kinds[] = {"added", "removed", "changed"};
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < d->n; i++) {
        const struct config_change *c = &d->changes[i];
        json_t *o =
            json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "kind", kinds[c->kind], "path", c->path,
                      "subject", json_str_or_null(c->subject), "field", json_str_or_null(c->field),
                      "old", json_str_or_null(c->old_value), "new", json_str_or_null(c->new_value));
        if (json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    char *s = arr ? json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(arr);
    return s;
}
