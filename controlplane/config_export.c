/* controlplane/config_export.c: struct config -> canonical tree (walking the
 * schema) -> YAML or JSON text, and the hash and equality built on it. */
#include "config_int.h"

#include "lb_err.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static struct cnode *map_tree(const void *base, const char *prefix);

static struct cnode *strlist_tree(char *const *v, size_t n)
{
    struct cnode *seq = config__cn_new(CN_SEQ);
    for (size_t i = 0; seq && i < n; i++)
        if (config__cn_push(seq, config__cn_scalar(CT_STRING, v[i] ? v[i] : "")) != 0) {
            config__cn_free(seq);
            seq = NULL;
        }
    return seq;
}

static struct cnode *list_tree(const void *base, const struct cfg_key *k)
{
    char prefix[128];
    config__child_prefix(k, prefix, sizeof(prefix));
    const char *items = *(char *const *)config__cfield(base, k);
    size_t n = *(const size_t *)((const char *)base + k->n_at);
    struct cnode *seq = config__cn_new(CN_SEQ);
    for (size_t i = 0; seq && i < n; i++)
        if (config__cn_push(seq, map_tree(items + i * k->size, prefix)) != 0) {
            config__cn_free(seq);
            seq = NULL;
        }
    return seq;
}

/* Whether the export leaves <k> out: a section not present or holding only
 * defaults where that is its rule, an optional key at its default, a derived
 * key not set. */
static bool omitted(const void *base, const struct cfg_key *k)
{
    if (k->flags & CFG_HIDDEN)
        return true;
    if ((k->flags & CFG_OMIT_UNMARKED) && !*(const bool *)config__cfield(base, k))
        return true;
    if (k->flags & CFG_OMIT_DEFAULT)
        return config__field_is_default(base, k);
    if (k->flags & CFG_DERIVED) {
        const char *s = *(char *const *)config__cfield(base, k);
        return s == NULL || s[0] == '\0';
    }
    return false;
}

static struct cnode *value_tree(const void *base, const struct cfg_key *k)
{
    char buf[32];
    const char *text;
    switch (k->type) {
    case CFG_SECTION:
        return map_tree(base, k->path);
    case CFG_LIST:
        return list_tree(base, k);
    case CFG_STRLIST:
        return strlist_tree(*(char **const *)config__cfield(base, k),
                            *(const size_t *)((const char *)base + k->n_at));
    case CFG_UINT:
        return config__cn_scalar(CT_INT, config__scalar_text(base, k, buf, sizeof(buf)));
    case CFG_BOOL:
        return config__cn_scalar(CT_BOOL, config__scalar_text(base, k, buf, sizeof(buf)));
    case CFG_STR:
        text = config__scalar_text(base, k, buf, sizeof(buf));
        if (text[0] == '\0' && (k->flags & CFG_EMPTY_DEFAULT))
            text = k->def;
        return config__cn_scalar(CT_STRING, text);
    case CFG_DURATION:
    case CFG_ENUM:
        return config__cn_scalar(CT_STRING, config__scalar_text(base, k, buf, sizeof(buf)));
    }
    return NULL;
}

/* The mapping of the keys under <prefix> in <base>. */
static struct cnode *map_tree(const void *base, const char *prefix)
{
    struct cnode *m = config__cn_new(CN_MAP);
    for (const struct cfg_key *k = config__next_child(prefix, NULL); m && k;
         k = config__next_child(prefix, k))
        if (!omitted(base, k))
            config__put(m, config__key_name(k), value_tree(base, k));
    return m;
}

struct cnode *config__canonical(const struct config *c)
{
    struct cnode *t = map_tree(c, "");
    if (t != NULL && !config__tree_complete(t)) {
        config__cn_free(t);
        t = NULL;
    }
    return t;
}

/* ---- tree -> YAML / JSON ------------------------------------------------------ */

struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static int outbuf_write(void *data, unsigned char *buffer, size_t size)
{
    struct outbuf *o = data;
    if (o->len + size + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + size + 1)
            cap *= 2;
        char *np = realloc(o->p, cap);
        if (np == NULL) {
            o->failed = true;
            return 0;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, buffer, size);
    o->len += size;
    o->p[o->len] = '\0';
    return 1;
}

static int emit_node(yaml_emitter_t *em, const struct cnode *n)
{
    yaml_event_t ev;
    switch (n->kind) {
    case CN_SCALAR: {
        bool quoted = n->type == CT_STRING;
        if (!yaml_scalar_event_initialize(
                &ev, NULL, NULL, (yaml_char_t *)n->s, (int)strlen(n->s), !quoted, quoted,
                quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    case CN_MAP:
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        for (size_t i = 0; i < config__cn_map_len(n); i++) {
            const struct cnode *k = config__cn_key(n, i);
            if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)k->s,
                                              (int)strlen(k->s), 1, 0, YAML_PLAIN_SCALAR_STYLE) ||
                !yaml_emitter_emit(em, &ev) || emit_node(em, config__cn_val(n, i)) != 0)
                return -1;
        }
        if (!yaml_mapping_end_event_initialize(&ev))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    case CN_SEQ:
        if (!yaml_sequence_start_event_initialize(
                &ev, NULL, NULL, 1, n->n ? YAML_BLOCK_SEQUENCE_STYLE : YAML_FLOW_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        for (size_t i = 0; i < n->n; i++)
            if (emit_node(em, n->items[i]) != 0)
                return -1;
        if (!yaml_sequence_end_event_initialize(&ev))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    return -1;
}

static char *tree_to_yaml(const struct cnode *t, size_t *len)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    struct outbuf o = {0};
    if (!yaml_emitter_initialize(&em))
        return NULL;
    yaml_emitter_set_output(&em, outbuf_write, &o);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    bool ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
              yaml_emitter_emit(&em, &ev) &&
              yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
              yaml_emitter_emit(&em, &ev) && emit_node(&em, t) == 0 &&
              yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
              yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
              yaml_emitter_flush(&em);
    yaml_emitter_delete(&em);
    if (!ok || o.failed || o.p == NULL) {
        free(o.p);
        return NULL;
    }
    if (len != NULL)
        *len = o.len;
    return o.p;
}

char *config_export_yaml(const struct config *cfg, size_t *len, struct lb_err *err)
{
    struct cnode *t = config__canonical(cfg);
    char *s = t ? tree_to_yaml(t, len) : NULL;
    config__cn_free(t);
    if (s == NULL)
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while exporting the config");
    return s;
}

char *config_export_json(const struct config *cfg, struct lb_err *err)
{
    struct cnode *t = config__canonical(cfg);
    json_t *j = t ? config__tree_to_json(t) : NULL;
    config__cn_free(t);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (s == NULL)
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while exporting the config");
    return s;
}

int config_hash_yaml(const char *yaml, size_t len, char hex[65], struct lb_err *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(yaml, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return lb_err_set(err, LB_ENOMEM, 0, "SHA-256 of the config failed");
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return LB_OK;
}

int config_hash(const struct config *cfg, char hex[65], struct lb_err *err)
{
    size_t len;
    char *y = config_export_yaml(cfg, &len, err);
    if (y == NULL)
        return LB_ENOMEM;
    int rc = config_hash_yaml(y, len, hex, err);
    free(y);
    return rc;
}

bool config_equal(const struct config *a, const struct config *b)
{
    char *ya = config_export_yaml(a, NULL, NULL);
    char *yb = config_export_yaml(b, NULL, NULL);
    bool eq = ya != NULL && yb != NULL && strcmp(ya, yb) == 0;
    free(ya);
    free(yb);
    return eq;
}
