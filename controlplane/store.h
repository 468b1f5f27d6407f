/* controlplane/store.h: the control plane's SQLite store. Config versions
 * (immutable), the active version, backend health, data planes seen and the
 * audit log. Every write is one transaction: when any statement fails,
 * nothing changes and the error (LB_ESTORE) carries sqlite3_errmsg().
 *
 * A store handle is used by one thread at a time (the control plane's loop);
 * several processes may open the same file (WAL, busy timeout 5 s). */
#ifndef LB_STORE_H
#define LB_STORE_H

#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct store;

/* The schema version this build writes (migrations 1..STORE_SCHEMA_VERSION). */
#define STORE_SCHEMA_VERSION 2

enum store_health {
    STORE_HEALTH_UNKNOWN = 0,
    STORE_HEALTH_UP,
    STORE_HEALTH_DOWN,
};

/* One config version. Strings are owned by the struct. */
struct store_version {
    uint64_t number;         /* 1, 2, 3...; never reused */
    int64_t created_unix_ms; /* when it was stored */
    char *author;            /* "uid:1000" or "token:name" */
    char *comment;           /* free text, may be "" */
    char *hash;              /* content hash (config_hash()) */
    char *content;           /* canonical config; "" in lists (see below) */
};

struct store_backend_health {
    char *id;                       /* backend id */
    enum store_health health;       /* last verdict */
    int64_t last_check_unix_ms;     /* last check, 0 = never */
    char *last_error;               /* "" when the last check passed */
    int64_t health_changed_unix_ms; /* when <health> last changed */
};

struct store_dataplane {
    char *node_id;
    uint64_t applied_version;
    uint64_t applied_generation;
    int64_t last_report_unix_ms;
    uint64_t rejected_generation; /* 0 if the newest snapshot was applied */
    char *rejection_reason;       /* "" if none */
};

struct store_audit {
    int64_t id; /* increasing */
    int64_t time_unix_ms;
    char *who;             /* "uid:1000", "token:name", or "bootstrap", "health", ... */
    char *action;          /* "config.put", "backend.update", "rollback", "health", ... */
    char *detail;          /* free text */
    uint64_t from_version; /* 0 = none */
    uint64_t to_version;   /* 0 = none */
};

/* Opens (creating if needed) the database at <path>, sets WAL,
 * foreign_keys=ON and a busy timeout, and applies pending migrations, each in
 * one transaction. Refuses a database whose schema is newer than this build
 * (LB_ESTORE, "... schema version N is newer than this build's M ...").
 * Returns NULL and fills <err> on failure. Release with store_close(). */
struct store *store_open(const char *path, struct lb_err *err);

/* Closes <st>; NULL is a no-op. */
void store_close(struct store *st);

/* Stores <content> (canonical config text) with <hash> as a new version,
 * makes it active and writes an audit row ("config.put", from the previous
 * active version to the new one) -- one transaction. <comment> may be NULL.
 * Fills <new_number>. LB_OK or LB_ESTORE / LB_EINVAL (empty author/content). */
int store_version_put(struct store *st, const char *content, const char *hash, const char *author,
                      const char *comment, uint64_t *new_number, struct lb_err *err);

/* As store_version_put(), and in the same transaction bumps the persisted
 * snapshot generation (see store_generation()) and fills <generation> (not
 * NULL) with the new value: a version is never stored without its generation. */
int store_version_put_gen(struct store *st, const char *content, const char *hash,
                          const char *author, const char *comment, uint64_t *new_number,
                          uint64_t *generation, struct lb_err *err);

/* What store_version_put_audited() stores. */
struct store_put {
    const char *content; /* canonical config text; required */
    const char *hash;    /* its hash; required */
    const char *author;  /* required; also the audit row's who */
    const char *comment; /* NULL = "" */
    const char *action;  /* the audit row's action; NULL = "config.put" */
    const char *detail;  /* the audit row's detail; NULL = <comment> */
};

/* As store_version_put_gen() with the audit row said by <p>: a backend
 * change is a new version whose row names the change ("backend.update",
 * "backend b1: weight 5 -> 3"). */
int store_version_put_audited(struct store *st, const struct store_put *p, uint64_t *new_number,
                              uint64_t *generation, struct lb_err *err);

/* The snapshot generation last handed out by a *_gen() call or
 * store_generation_bump() in *<generation>; 0 when none ever was. Generations
 * only grow, across restarts too. LB_OK or LB_ESTORE. */
int store_generation(struct store *st, uint64_t *generation, struct lb_err *err);

/* Bumps the persisted generation by one in its own transaction (for changes
 * that publish without a new version: start-up, runtime state) and fills
 * <generation>. LB_OK or LB_ESTORE. */
int store_generation_bump(struct store *st, uint64_t *generation, struct lb_err *err);

/* Reads version <number> with its content. LB_ENOTFOUND if there is no such
 * version. On LB_OK the caller owns *<out> (store_version_free()). */
int store_version_get(struct store *st, uint64_t number, struct store_version **out,
                      struct lb_err *err);

void store_version_free(struct store_version *v);

/* Lists at most <limit> versions (0 = all), newest first, without content
 * (content is ""). The caller owns the array: store_versions_free(*out, *n). */
int store_versions_list(struct store *st, size_t limit, struct store_version **out, size_t *n,
                        struct lb_err *err);

void store_versions_free(struct store_version *vs, size_t n);

/* The active version number in *<number>; LB_ENOTFOUND when none was ever put. */
int store_active_version(struct store *st, uint64_t *number, struct lb_err *err);

/* Copies version <target>'s content into a new version, activates it and
 * audits "rollback" from the previously active version to <target> with the
 * new number in the detail -- one transaction. History is never rewritten.
 * LB_ENOTFOUND if <target> does not exist. */
int store_rollback(struct store *st, uint64_t target, const char *author, const char *comment,
                   uint64_t *new_number, struct lb_err *err);

/* As store_rollback(), bumping the generation in the same transaction like
 * store_version_put_gen(). */
int store_rollback_gen(struct store *st, uint64_t target, const char *author, const char *comment,
                       uint64_t *new_number, uint64_t *generation, struct lb_err *err);

/* Records a health verdict for backend <id> at <now_ms> (upsert).
 * <last_error> may be NULL. health_changed_unix_ms moves only when the
 * verdict differs from the stored one (or on first sight). */
int store_health_set(struct store *st, const char *id, enum store_health health,
                     const char *last_error, int64_t now_ms, struct lb_err *err);

/* One health verdict change for store_health_changes(). */
struct store_health_change {
    const char *id;
    enum store_health health;
    const char *last_error; /* may be NULL */
    int64_t now_ms;         /* when the check ended */
    const char *detail;     /* audit detail: "backend a down: connect refused" */
};

/* Records <n> verdict changes as store_health_set() does, each with an audit
 * row (<who>, action "health", <detail>), in one transaction: a burst of
 * changes costs one commit. LB_OK, LB_EINVAL (empty id or who) or LB_ESTORE
 * with nothing written. */
int store_health_changes(struct store *st, const struct store_health_change *chg, size_t n,
                         const char *who, struct lb_err *err);

/* Reads backend <id>'s health; LB_ENOTFOUND if never recorded. The caller
 * owns *<out> (store_health_free()). */
int store_health_get(struct store *st, const char *id, struct store_backend_health **out,
                     struct lb_err *err);

void store_health_free(struct store_backend_health *h);

/* All recorded backends ordered by id; free with store_health_list_free(). */
int store_health_list(struct store *st, struct store_backend_health **out, size_t *n,
                      struct lb_err *err);

void store_health_list_free(struct store_backend_health *hs, size_t n);

/* Inserts or replaces what is known of data plane <dp->node_id>. NULL
 * rejection_reason counts as "". */
int store_dataplane_upsert(struct store *st, const struct store_dataplane *dp, struct lb_err *err);

/* All data planes ordered by node id; free with store_dataplanes_free(). */
int store_dataplanes_list(struct store *st, struct store_dataplane **out, size_t *n,
                          struct lb_err *err);

void store_dataplanes_free(struct store_dataplane *dps, size_t n);

/* Appends an audit row for actions outside config versions (drain, ...).
 * <detail> may be NULL; versions 0 = none. */
int store_audit_add(struct store *st, const char *who, const char *action, const char *detail,
                    uint64_t from_version, uint64_t to_version, struct lb_err *err);

/* At most <limit> audit rows (0 = all), newest first; free with
 * store_audit_free(). */
int store_audit_list(struct store *st, size_t limit, struct store_audit **out, size_t *n,
                     struct lb_err *err);

/* Which rows store_audit_query() returns; a zero field matches every row. */
struct store_audit_filter {
    int64_t since_unix_ms; /* rows written at or after this time; 0 = any */
    const char *who;       /* exactly this who; NULL or "" = any */
    const char *action;    /* exactly this action; NULL or "" = any */
    size_t limit;          /* at most this many rows; 0 = all */
};

/* The audit rows matching <f> (borrowed; NULL matches all), newest first
 * (by id). The filter runs in SQL with bound parameters. LB_OK with *<out>
 * owned by the caller (store_audit_free(*out, *n)), LB_ESTORE or LB_ENOMEM. */
int store_audit_query(struct store *st, const struct store_audit_filter *f,
                      struct store_audit **out, size_t *n, struct lb_err *err);

void store_audit_free(struct store_audit *as, size_t n);

/* ---- rollouts (controlplane/rollout.h) ------------------------------------ */

/* A rollout row to write; the strings are borrowed. */
struct store_rollout_row {
    uint64_t id;        /* >= 1 */
    const char *status; /* rollout_status_name() */
    const char *spec;   /* rollout_spec_encode() */
    const char *state;  /* rollout_state_encode() */
};

/* A stored rollout; strings owned (store_rollouts_free()). */
struct store_rollout {
    uint64_t id;
    int64_t created_unix_ms, updated_unix_ms;
    char *status, *spec, *state;
    uint64_t last_version; /* the newest config version one of its transitions made, 0 = none */
};

/* Makes the next config version write (store_version_put*(),
 * store_rollback*()) also write <row> (borrowed until then) in its
 * transaction, with that version as the row's last_version: the
 * transition and its version commit or fail together. The attachment is
 * used by that one write whatever its outcome; NULL clears it. */
void store_rollout_attach(struct store *st, const struct store_rollout_row *row);

/* Writes <row> alone (a transition without a version) in one transaction.
 * LB_OK, LB_EINVAL (missing member) or LB_ESTORE with nothing written. */
int store_rollout_put(struct store *st, const struct store_rollout_row *row, struct lb_err *err);

/* The id the next rollout gets, in *<id>. */
int store_rollout_next_id(struct store *st, uint64_t *id, struct lb_err *err);

/* Rollout <id> (0 = every one), newest first, at most <limit> (0 = all);
 * free with store_rollouts_free(). */
int store_rollouts_list(struct store *st, uint64_t id, size_t limit, struct store_rollout **out,
                        size_t *n, struct lb_err *err);

void store_rollouts_free(struct store_rollout *rs, size_t n);

/* Test hook: the <n>th statement (1-based) executed inside the next write
 * transaction fails with "injected failure", which rolls it back. 0 disarms. */
void store__fail_after(struct store *st, int n);

/* ---- meta rows of other modules (the staged rollout's state) ------------ */

/* Makes the next config version write also set meta <key> to <value> (all
 * borrowed until then) in its transaction, with that version's number put
 * at JSON path <path> of the value (NULL: the value as it is). Used by that
 * one write whatever its outcome. */
void store_meta_attach(struct store *st, const char *key, const char *value, const char *path);

/* Sets meta <key> to <value> in one transaction (the store's own keys
 * refused: LB_EINVAL). LB_OK or LB_ESTORE. */
int store_meta_put(struct store *st, const char *key, const char *value, struct lb_err *err);

/* Meta <key>'s value into *<value> (caller frees); LB_ENOTFOUND, LB_ESTORE. */
int store_meta_get(struct store *st, const char *key, char **value, struct lb_err *err);

#endif
