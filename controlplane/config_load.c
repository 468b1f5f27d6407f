/* controlplane/config_load.c: YAML or JSON text -> node tree -> struct config.
 * Decoding walks the schema (types, ranges, choices, unknown and required
 * keys); config_validate.c then checks the rules between keys. */
#include "config_int.h"

#include "lb_err.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 32
#define MAX_NODES 100000

/* ---- tree -> config, walking the schema ------------------------------------------ */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return SIZE_MAX;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost =
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The key of <prefix> closest to <key>, or NULL when <key> is one of them. */
static const char *unknown_key(const char *prefix, const char *key, const char **best)
{
    size_t best_dist = SIZE_MAX;
    *best = NULL;
    CONFIG_EACH_CHILD(k, prefix)
    {
        if (k->flags & CFG_HIDDEN)
            continue;
        const char *name = config__key_name(k);
        if (strcmp(name, key) == 0)
            return NULL;
        size_t dist = edit_distance(key, name);
        if (dist < best_dist) {
            best_dist = dist;
            *best = name;
        }
    }
    size_t limit = strlen(key) / 3 > 2 ? strlen(key) / 3 : 2;
    if (best_dist > limit)
        *best = NULL;
    return key;
}

/* Checks that <n> is a mapping whose keys are rows under <prefix>, unique. */
static int check_map(const struct cfg_check *v, const struct cnode *n, const char *path,
                     const char *prefix)
{
    if (n->kind != CN_MAP)
        return config__err_at(v, n, path, "expected a mapping, got %s", config__describe(n));
    for (size_t i = 0; i < config__cn_map_len(n); i++) {
        const struct cnode *k = config__cn_key(n, i);
        if (k->kind != CN_SCALAR)
            return config__err_at(v, k, path, "keys must be plain names, not %s",
                                  config__describe(k));
        for (size_t j = 0; j < i; j++)
            if (strcmp(config__cn_key(n, j)->s, k->s) == 0)
                return config__err_at(v, k, path, "key \"%s\" appears twice", k->s);
        const char *best;
        if (unknown_key(prefix, k->s, &best) == NULL)
            continue;
        if (best != NULL)
            return config__err_at(v, k, path, "unknown key \"%s\" (did you mean \"%s\"?)", k->s,
                                  best);
        return config__err_at(v, k, path, "unknown key \"%s\"", k->s);
    }
    return LB_OK;
}

static bool parse_int_text(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        v = s[0] == '-' ? LLONG_MIN : LLONG_MAX;
    *out = v;
    return true;
}

static int decode_uint(const struct cfg_check *v, const struct cfg_key *k, const struct cnode *n,
                       const char *path, uint32_t *out)
{
    long long x;
    if (n->kind != CN_SCALAR || !(n->type == CT_PLAIN || n->type == CT_INT) ||
        !parse_int_text(n->s, &x))
        return config__err_at(v, n, path, "expected a whole number, got %s", config__describe(n));
    if (x < (long long)k->min || x > (long long)k->max)
        return config__err_at(v, n, path, "%s is out of range (%u..%u)", n->s, k->min, k->max);
    *out = (uint32_t)x;
    return LB_OK;
}

static int decode_bool(const struct cfg_check *v, const struct cnode *n, const char *path,
                       bool *out)
{
    if (n->kind == CN_SCALAR && (n->type == CT_PLAIN || n->type == CT_BOOL)) {
        if (strcmp(n->s, "true") == 0 || strcmp(n->s, "True") == 0 || strcmp(n->s, "TRUE") == 0) {
            *out = true;
            return LB_OK;
        }
        if (strcmp(n->s, "false") == 0 || strcmp(n->s, "False") == 0 ||
            strcmp(n->s, "FALSE") == 0) {
            *out = false;
            return LB_OK;
        }
    }
    return config__err_at(v, n, path, "expected true or false, got %s", config__describe(n));
}

static int decode_duration(const struct cfg_check *v, const struct cfg_key *k,
                           const struct cnode *n, const char *path, uint32_t *out)
{
    if (n->kind != CN_SCALAR || !(n->type == CT_STRING || n->type == CT_PLAIN || n->type == CT_INT))
        return config__err_at(v, n, path, "expected a duration such as \"10s\", got %s",
                              config__describe(n));
    struct lb_err e;
    uint32_t ms;
    char buf[32];
    if (config_duration_parse(n->s, &ms, &e) != LB_OK)
        return config__err_at(v, n, path, "%s", e.msg);
    if (ms < k->min)
        return config__err_at(v, n, path, "%s is too short (at least %s)", n->s,
                              config_duration_format(k->min, buf, sizeof(buf)));
    if (k->max != 0 && ms > k->max)
        return config__err_at(v, n, path, "%s is too long (at most %s)", n->s,
                              config_duration_format(k->max, buf, sizeof(buf)));
    *out = ms;
    return LB_OK;
}

/* A string, or with choices one of them (its index in *<index>). */
static int decode_str(const struct cfg_check *v, const struct cfg_key *k, const struct cnode *n,
                      const char *path, unsigned *index)
{
    if (n->kind != CN_SCALAR || !(n->type == CT_STRING || n->type == CT_PLAIN) ||
        config__is_null(n))
        return config__err_at(v, n, path, "expected a string, got %s", config__describe(n));
    if (k->choices == NULL)
        return LB_OK;
    for (unsigned i = 0; k->choices[i]; i++) {
        if (strcmp(k->choices[i], n->s) == 0) {
            *index = i;
            return LB_OK;
        }
    }
    char list[120];
    config__choice_list(k->choices, list, sizeof(list));
    return config__err_at(v, n, path, "unknown %s \"%s\" (expected %s)",
                          k->what ? k->what : config__key_name(k), n->s, list);
}

static int decode_strlist(const struct cfg_check *v, const struct cfg_key *k, const struct cnode *n,
                          const char *path, void *base)
{
    char ***out = config__field(base, k);
    size_t *count = (size_t *)((char *)base + k->n_at);
    if (n->kind != CN_SEQ)
        return config__err_at(v, n, path, "expected a list, got %s", config__describe(n));
    if (n->n == 0)
        return LB_OK;
    if ((*out = calloc(n->n, sizeof(**out))) == NULL)
        return config__nomem(v);
    for (size_t i = 0; i < n->n; i++) {
        const struct cnode *it = n->items[i];
        char p[192];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (it->kind != CN_SCALAR || !(it->type == CT_STRING || it->type == CT_PLAIN) ||
            config__is_null(it) || ((k->flags & CFG_NONEMPTY) && it->s[0] == '\0'))
            return config__err_at(v, it, p, "expected %s, got %s", k->what,
                                  (k->flags & CFG_NONEMPTY) && it->kind == CN_SCALAR &&
                                          it->s[0] == '\0'
                                      ? "\"\""
                                      : config__describe(it));
        if (((*out)[i] = strdup(it->s)) == NULL)
            return config__nomem(v);
        *count = i + 1;
    }
    return LB_OK;
}

static int decode_map(const struct cfg_check *v, const struct cnode *n, const char *prefix,
                      const char *path, void *base);

static int decode_list(const struct cfg_check *v, const struct cfg_key *k, const struct cnode *n,
                       const char *path, void *base)
{
    char **items = config__field(base, k);
    size_t *count = (size_t *)((char *)base + k->n_at);
    if (n->kind != CN_SEQ)
        return config__err_at(v, n, path, "expected a list, got %s", config__describe(n));
    if (n->n == 0 && (k->flags & CFG_REQUIRED))
        return config__err_at(v, n, path, "the list is empty; at least one %s is needed", k->what);
    if (n->n == 0)
        return LB_OK;
    if ((*items = calloc(n->n, k->size)) == NULL)
        return config__nomem(v);
    char prefix[128], p[192];
    config__child_prefix(k, prefix, sizeof(prefix));
    for (size_t i = 0; i < n->n; i++) {
        void *item = *items + i * k->size;
        *count = i + 1;
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (config__set_defaults(item, prefix) != 0)
            return config__nomem(v);
        int rc = decode_map(v, n->items[i], prefix, p, item);
        if (rc != LB_OK)
            return rc;
    }
    return LB_OK;
}

static int decode_value(const struct cfg_check *v, const struct cfg_key *k, const struct cnode *n,
                        const char *path, void *base)
{
    void *f = config__field(base, k);
    unsigned index = UINT_MAX;
    int rc;
    switch (k->type) {
    case CFG_SECTION:
        if (k->flags & CFG_MARK)
            *(bool *)f = true;
        return decode_map(v, n, k->path, path, base);
    case CFG_LIST:
        return decode_list(v, k, n, path, base);
    case CFG_STRLIST:
        return decode_strlist(v, k, n, path, base);
    case CFG_UINT:
        return decode_uint(v, k, n, path, f);
    case CFG_BOOL:
        return decode_bool(v, n, path, f);
    case CFG_DURATION:
        return decode_duration(v, k, n, path, f);
    case CFG_ENUM:
        if ((rc = decode_str(v, k, n, path, &index)) == LB_OK)
            *(uint32_t *)f = index;
        return rc;
    case CFG_STR:
        if ((rc = decode_str(v, k, n, path, &index)) != LB_OK)
            return rc;
        char *s = strdup(index == UINT_MAX ? n->s : k->choices[index]);
        if (s == NULL)
            return config__nomem(v);
        free(*(char **)f);
        *(char **)f = s;
        return LB_OK;
    }
    return LB_OK;
}

/* Mapping <n> holding the keys under <prefix> into <base>; <path> names it in
 * messages ("" at the top, "backends[2]", "ssl.verify"). */
static int decode_map(const struct cfg_check *v, const struct cnode *n, const char *prefix,
                      const char *path, void *base)
{
    int rc = check_map(v, n, path, prefix);
    for (const struct cfg_key *k = config__next_child(prefix, NULL); k && rc == LB_OK;
         k = config__next_child(prefix, k)) {
        if (k->flags & CFG_HIDDEN)
            continue;
        const char *name = config__key_name(k);
        const struct cnode *val = config__cn_get(n, name);
        if (val != NULL && (k->flags & CFG_NULL_ABSENT) && config__is_null(val))
            val = NULL;
        if (val == NULL && (k->flags & CFG_REQUIRED))
            return config__err_at(v, n, path, "%s is required%s", name, k->help ? k->help : "");
        if (val == NULL)
            continue;
        char p[160];
        snprintf(p, sizeof(p), "%s%s%s", path, path[0] ? "." : "", name);
        rc = decode_value(v, k, val, p, base);
    }
    return rc;
}

int config__decode(const struct cfg_check *v, const struct cnode *root, struct config **out)
{
    struct config *cfg = config_new_default();
    if (cfg == NULL)
        return config__nomem(v);
    int rc = decode_map(v, root, "", "", cfg);
    if (rc != LB_OK) {
        config_free(cfg);
        return rc;
    }
    *out = cfg;
    return LB_OK;
}

/* Decodes <tree> (taken) and checks its rules. */
static int parse_tree(const struct cfg_check *v, struct cnode *tree, struct config **out)
{
    struct config *cfg = NULL;
    struct cfg_check c = *v;
    c.root = tree;
    int rc = config__decode(&c, tree, &cfg);
    if (rc == LB_OK && (rc = config__check(&c, cfg)) != LB_OK) {
        config_free(cfg);
        cfg = NULL;
    }
    config__cn_free(tree);
    if (rc == LB_OK)
        *out = cfg;
    return rc;
}

/* ---- YAML -> tree ----------------------------------------------------------- */

struct yconv {
    yaml_document_t *doc;
    size_t count;
};

static struct cnode *from_yaml(struct yconv *y, yaml_node_t *yn, int depth, const char **why)
{
    if (depth > MAX_DEPTH) {
        *why = "the document is nested too deeply";
        return NULL;
    }
    if (++y->count > MAX_NODES) {
        *why = "the document has too many nodes";
        return NULL;
    }
    struct cnode *n = NULL;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n = config__cn_new(CN_SCALAR);
        if (n == NULL)
            break;
        n->type = yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? CT_PLAIN : CT_STRING;
        n->s = strndup((const char *)yn->data.scalar.value, yn->data.scalar.length);
        if (n->s == NULL || strlen(n->s) != yn->data.scalar.length) {
            if (n->s != NULL)
                *why = "a value contains a NUL character";
            config__cn_free(n);
            n = NULL;
        }
        break;
    case YAML_SEQUENCE_NODE:
        n = config__cn_new(CN_SEQ);
        for (yaml_node_item_t *it = yn->data.sequence.items.start;
             n != NULL && it < yn->data.sequence.items.top; it++) {
            struct cnode *c = from_yaml(y, yaml_document_get_node(y->doc, *it), depth + 1, why);
            if (config__cn_push(n, c) != 0) {
                config__cn_free(n);
                n = NULL;
            }
        }
        break;
    case YAML_MAPPING_NODE:
        n = config__cn_new(CN_MAP);
        for (yaml_node_pair_t *pr = yn->data.mapping.pairs.start;
             n != NULL && pr < yn->data.mapping.pairs.top; pr++) {
            struct cnode *k = from_yaml(y, yaml_document_get_node(y->doc, pr->key), depth + 1, why);
            if (config__cn_push(n, k) != 0) {
                config__cn_free(n);
                n = NULL;
                break;
            }
            struct cnode *v =
                from_yaml(y, yaml_document_get_node(y->doc, pr->value), depth + 1, why);
            if (config__cn_push(n, v) != 0) {
                config__cn_free(n);
                n = NULL;
            }
        }
        break;
    case YAML_NO_NODE:
        *why = "the document has an empty node";
        break;
    }
    if (n != NULL) {
        n->line = (int)yn->start_mark.line + 1;
        n->col = (int)yn->start_mark.column + 1;
    }
    return n;
}

static int parse_yaml(const char *yaml, size_t len, const char *name, struct cfg_check *v,
                      struct config **out, struct lb_err *err)
{
    if (name == NULL)
        name = "config";
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = lb_err_set(err, LB_EINVAL, 0, "%s:%zu:%zu: YAML syntax error: %s%s%s", name,
                            parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                            parser.problem ? parser.problem : "unreadable input",
                            parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_parser_delete(&parser);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        yaml_document_delete(&doc);
        return lb_err_set(err, LB_EINVAL, 0, "%s:1:1: the config is empty", name);
    }
    struct yconv y = {.doc = &doc};
    const char *why = NULL;
    struct cnode *tree = from_yaml(&y, root, 0, &why);
    yaml_document_delete(&doc);
    if (tree == NULL) {
        if (why != NULL)
            return lb_err_set(err, LB_EINVAL, 0, "%s: %s", name, why);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    }
    v->name = name;
    return parse_tree(v, tree, out);
}

int config_parse_yaml(const char *yaml, size_t len, const char *name, const char *base_dir,
                      struct config **out, struct lb_err *err)
{
    struct cfg_check v = {.base_dir = base_dir, .err = err};
    return parse_yaml(yaml, len, name, &v, out, err);
}

int config_load_yaml(const char *path, const char *base_dir, struct config **out,
                     struct lb_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return lb_err_set(err, LB_ESYS, errno, "cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            char *nb = cap <= (64u << 20) ? realloc(buf, cap) : NULL;
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return lb_err_set(err, LB_EINVAL, 0, "%s is too large for memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr != 0) {
        free(buf);
        return lb_err_set(err, LB_ESYS, rerr, "cannot read %s", path);
    }
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    char dir[4096];
    if (base_dir == NULL && slash != NULL) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        base_dir = slash == path ? "/" : dir;
    }
    int rc = config_parse_yaml(buf, len, name, base_dir, out, err);
    free(buf);
    return rc;
}

/* ---- JSON -> tree ---------------------------------------------------------- */

static struct cnode *from_json(json_t *j, int depth, size_t *count)
{
    if (depth > MAX_DEPTH || ++*count > MAX_NODES)
        return NULL;
    struct cnode *n = NULL;
    char buf[64];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        n = config__cn_new(CN_MAP);
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            if (n == NULL)
                break;
            if (config__cn_push(n, config__cn_scalar(CT_STRING, key)) != 0 ||
                config__cn_push(n, from_json(v, depth + 1, count)) != 0) {
                config__cn_free(n);
                n = NULL;
            }
        }
        break;
    }
    case JSON_ARRAY: {
        n = config__cn_new(CN_SEQ);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (n == NULL)
                break;
            if (config__cn_push(n, from_json(v, depth + 1, count)) != 0) {
                config__cn_free(n);
                n = NULL;
            }
        }
        break;
    }
    case JSON_STRING:
        n = config__cn_new(CN_SCALAR);
        if (n != NULL) {
            n->type = CT_STRING;
            n->s = strndup(json_string_value(j), json_string_length(j));
            if (n->s == NULL || strlen(n->s) != json_string_length(j)) {
                config__cn_free(n);
                n = NULL;
            }
        }
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        n = config__cn_scalar(CT_INT, buf);
        break;
    case JSON_REAL:
        snprintf(buf, sizeof(buf), "%g", json_real_value(j));
        n = config__cn_scalar(CT_REAL, buf);
        break;
    case JSON_TRUE:
        n = config__cn_scalar(CT_BOOL, "true");
        break;
    case JSON_FALSE:
        n = config__cn_scalar(CT_BOOL, "false");
        break;
    case JSON_NULL:
        n = config__cn_scalar(CT_NULL, "null");
        break;
    }
    return n;
}

static int parse_json(const char *json, size_t len, struct cfg_check *v, struct config **out,
                      struct lb_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "JSON syntax error at %d:%d: %s", je.line, je.column,
                          je.text);
    size_t count = 0;
    struct cnode *tree = from_json(j, 0, &count);
    json_decref(j);
    if (tree == NULL) {
        if (count > MAX_NODES || count == 0)
            return lb_err_set(err, LB_EINVAL, 0, "the JSON config is too large or too deep");
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    }
    return parse_tree(v, tree, out);
}

int config_parse_json(const char *json, size_t len, const char *base_dir, struct config **out,
                      struct lb_err *err)
{
    struct cfg_check v = {.base_dir = base_dir, .err = err};
    return parse_json(json, len, &v, out, err);
}

int config_parse_checked(const char *text, size_t len, bool json, const char *name,
                         const char *base_dir, int64_t now_ms, struct config **out,
                         struct lb_err *err)
{
    struct cfg_check v = {.base_dir = base_dir, .err = err, .check_tls = true, .now_ms = now_ms};
    if (json)
        return parse_json(text, len, &v, out, err);
    return parse_yaml(text, len, name ? name : "config", &v, out, err);
}
