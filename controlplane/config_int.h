/* controlplane/config_int.h: the config schema and the node tree shared by
 * config_schema.c, config_tree.c, config_err.c, config_load.c,
 * config_validate.c, config_export.c and config_diff.c. Not for other
 * modules: they use config.h.
 *
 * Every key of the model is one row of config__keys[]; defaults, unknown-key
 * errors, decoding, export, copy, free and the diff walk it. Rules that tie
 * several keys together (timeout <= interval, duplicates, files) live in
 * config_validate.c. */
#ifndef LB_CONFIG_INT_H
#define LB_CONFIG_INT_H

#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;

/* ---- the schema ------------------------------------------------------------ */

enum cfg_type {
    CFG_SECTION,  /* a mapping of keys; its fields live in struct config */
    CFG_LIST,     /* a list of mappings: a pointer at <at>, a size_t count at <n_at> */
    CFG_UINT,     /* uint32_t in <min>..<max> */
    CFG_BOOL,     /* bool */
    CFG_DURATION, /* uint32_t ms, at least <min>, at most <max> (0 = no bound) */
    CFG_STR,      /* char *, owned; one of <choices> when set */
    CFG_ENUM,     /* an enum (unsigned-sized) indexing <choices> */
    CFG_STRLIST,  /* char **, owned, at <at>; size_t count at <n_at> */
};

enum cfg_flag {
    CFG_REQUIRED = 1 << 0,      /* absent (or null) is an error: "<key> is required<help>" */
    CFG_NULL_ABSENT = 1 << 1,   /* a null value reads as an absent key */
    CFG_OMIT_DEFAULT = 1 << 2,  /* export leaves it out while it holds its default, so that
                                 * versions written before the key existed keep their hash */
    CFG_ZERO_DEFAULT = 1 << 3,  /* 0 in a config built in memory means the default */
    CFG_EMPTY_DEFAULT = 1 << 4, /* "" in a config built in memory means the default */
    CFG_DERIVED = 1 << 5,       /* no default: validation derives it when absent ("" in
                                 * memory); export leaves it out when empty */
    CFG_ID = 1 << 6,            /* the key naming a list item (the diff matches by it) */
    CFG_NONEMPTY = 1 << 7,      /* CFG_STRLIST: items must not be "" */
    CFG_MARK = 1 << 8,          /* CFG_SECTION: the bool at <at> is set when it is written */
    CFG_OMIT_UNMARKED = 1 << 9, /* CFG_SECTION: exported only while its mark is set */
    CFG_HIDDEN = 1 << 10,       /* not a key: a derived string the model owns (copy, free) */
};

struct cfg_key {
    const char *path;           /* "healthcheck.interval"; list items "backends[].weight" */
    enum cfg_type type;         /* what the value is and how it is stored */
    const char *def;            /* default as canonical text; NULL = none (derived or unset) */
    uint32_t min, max;          /* CFG_UINT range; CFG_DURATION bounds in ms */
    const char *const *choices; /* CFG_ENUM names; CFG_STR: the accepted values */
    const char *what;           /* CFG_ENUM/CFG_STR noun ("TLS version"; default: the key);
                                 * CFG_STRLIST item ("a server name"); CFG_LIST item noun */
    const char *help;           /* appended to "<key> is required" */
    size_t at;                  /* offsetof the field in struct config, or in the list item */
    size_t n_at;                /* CFG_LIST/CFG_STRLIST: offsetof the count */
    size_t size;                /* CFG_LIST: size of one item */
    unsigned flags;             /* enum cfg_flag */
};

#define CFG_AT(field)            .at = offsetof(struct config, field)
#define CFG_IN(type, field)      .at = offsetof(type, field)
#define CFG_VEC(vec, n)          .at = offsetof(struct config, vec), .n_at = offsetof(struct config, n)
#define CFG_VEC_IN(type, vec, n) .at = offsetof(type, vec), .n_at = offsetof(type, n)

extern const struct cfg_key config__keys[];
extern const size_t config__n_keys;

/* The last path component of <k> ("weight" for "backends[].weight"). */
const char *config__key_name(const struct cfg_key *k);

/* The rows directly under <prefix> ("" = the top level, "backends[]" = a
 * backend, "ssl.verify"), in table order: pass NULL first, then the previous
 * result; NULL at the end. CFG_HIDDEN rows are included. */
const struct cfg_key *config__next_child(const char *prefix, const struct cfg_key *prev);

/* Walks the rows directly under <prefix> with config__next_child(), <k>
 * naming each. */
#define CONFIG_EACH_CHILD(k, prefix)                                                               \
    for (const struct cfg_key *k = config__next_child(prefix, NULL); k;                            \
         k = config__next_child(prefix, k))

/* The row at <path> exactly, or NULL. */
const struct cfg_key *config__key(const char *path);

/* The prefix of <k>'s children: its path, plus "[]" for a list. */
void config__child_prefix(const struct cfg_key *k, char *buf, size_t size);

/* The field of <k> in <base> (struct config, or a list item). */
void *config__field(void *base, const struct cfg_key *k);
const void *config__cfield(const void *base, const struct cfg_key *k);

/* Sets every field under <prefix> in <base> to its default (lists and string
 * lists empty, derived strings NULL). The fields must own nothing. */
int config__set_defaults(void *base, const char *prefix);

/* Frees what the fields under <prefix> own and clears them. */
void config__free_fields(void *base, const char *prefix);

/* Whether every field under <prefix> holds its default. */
bool config__is_default(const void *base, const char *prefix);

/* Whether the field of <k> holds its default (or, with CFG_ZERO_DEFAULT, 0). */
bool config__field_is_default(const void *base, const struct cfg_key *k);

/* Canonical text of the value of scalar <k> in <base>; "?" for an enum out
 * of range. Strings are returned as they are (NULL as ""). */
const char *config__scalar_text(const void *base, const struct cfg_key *k, char *buf, size_t size);

/* "a, b or c" from <choices>. */
void config__choice_list(const char *const *choices, char *buf, size_t size);

/* ---- node tree --------------------------------------------------------------- */

enum cn_kind {
    CN_SCALAR,
    CN_MAP,
    CN_SEQ,
};

/* Scalar types: YAML plain scalars stay untyped (CT_PLAIN) until a field
 * decides what it needs; quoted YAML and JSON strings are CT_STRING. */
enum cn_type {
    CT_PLAIN,
    CT_STRING,
    CT_INT,
    CT_REAL,
    CT_BOOL,
    CT_NULL,
};

struct cnode {
    enum cn_kind kind;
    enum cn_type type;
    char *s;              /* scalar text */
    int line, col;        /* 1-based; 0 when the node has no source position */
    struct cnode **items; /* sequence items, or key, value, key, value... */
    size_t n, cap;        /* n counts entries in items[] */
    bool broken;          /* a put() into this mapping failed (no memory) */
};

void config__cn_free(struct cnode *n);
struct cnode *config__cn_new(enum cn_kind kind);
struct cnode *config__cn_scalar(enum cn_type type, const char *s);
/* Appends <child> (taken, even on failure); 0 or -1 on no memory. */
int config__cn_push(struct cnode *n, struct cnode *child);
size_t config__cn_map_len(const struct cnode *n);
const struct cnode *config__cn_key(const struct cnode *n, size_t i);
const struct cnode *config__cn_val(const struct cnode *n, size_t i);
/* The value at <key> in mapping <map>; NULL if absent or <map> is no mapping. */
const struct cnode *config__cn_get(const struct cnode *map, const char *key);
/* Adds <key>: <val> (taken) to <map>; a NULL map or val marks the failure so
 * that a chain of calls needs one check (config__tree_complete) at the end. */
int config__put(struct cnode *map, const char *key, struct cnode *val);
/* Whether no put() into the tree failed. */
bool config__tree_complete(const struct cnode *n);
/* YAML's null: a plain "", "~", "null"... or JSON null. */
bool config__is_null(const struct cnode *n);
/* "a mapping", "a list", "a string"... for messages. */
const char *config__describe(const struct cnode *n);

/* The canonical tree of <cfg> (config_export.c); NULL on no memory. */
struct cnode *config__canonical(const struct config *cfg);

/* Compact JSON of <n> (jansson's json_t *), for export and the diff. */
struct json_t;
struct json_t *config__tree_to_json(const struct cnode *n);

/* ---- decoding and validation ---------------------------------------------------- */

/* How errors are reported: "<name>:<line>:<col>: <path>: <reason>" when the
 * node at <path> (or its nearest parent) in <root> has a position,
 * "<name>: <path>: <reason>" with only a name, else "<path>: <reason>". */
struct cfg_check {
    const char *name;         /* file name for messages, or NULL (JSON, in memory) */
    const char *base_dir;     /* for relative ssl paths; NULL = cwd */
    const struct cnode *root; /* the decoded tree, or NULL for a config built in memory */
    bool check_tls;           /* read the ssl files and check them as tlscheck does */
    int64_t now_ms;           /* for the certificate dates when check_tls */
    struct lb_err *err;
};

/* Fills <err> with <reason> at <n> (may be NULL) for key <path>; LB_EINVAL
 * (config_err.c). */
__attribute__((format(printf, 4, 5))) int config__err_at(const struct cfg_check *v,
                                                         const struct cnode *n, const char *path,
                                                         const char *fmt, ...);
int config__verr_at(const struct cfg_check *v, const struct cnode *n, const char *path,
                    const char *fmt, va_list ap);
/* LB_ENOMEM with the config reader's message. */
int config__nomem(const struct cfg_check *v);

/* Decodes <root> into a new config (table-driven: types, ranges, choices,
 * unknown keys, required keys). No cross-field rule. */
int config__decode(const struct cfg_check *v, const struct cnode *root, struct config **out);

/* Checks every rule of <cfg> and fills its derived fields (default names
 * and ids, host, port, https). With v->root NULL it first checks each value
 * against its row (a config built in memory). LB_OK, LB_EINVAL, LB_ENOMEM. */
int config__check(const struct cfg_check *v, struct config *cfg);

#endif
