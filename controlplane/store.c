/* controlplane/store.c: SQLite store. Each public write runs inside one
 * BEGIN IMMEDIATE ... COMMIT and rolls back on the first failing statement;
 * statements run through step() so that the test hook can fail any of them. */
#include "store.h"

#include "lb_err.h"
#include "mem.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct store {
    sqlite3 *db;
    bool in_write;  /* inside a write transaction: statements are counted */
    int stmt_count; /* statements run in the current write transaction */
    int fail_after; /* test hook: fail statement number <fail_after>; 0 = off */
    bool injected;  /* the last failure came from the hook */
    const struct store_rollout_row *attached;      /* written with the next version, then cleared */
    const char *meta_key, *meta_value, *meta_path; /* the same for a meta row (store_meta_attach) */
};

/* Migration N (1-based) brings the schema from version N-1 to N. Append only;
 * never edit a step that has shipped. */
static const char *const migrations[] = {
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO meta (key, value) VALUES ('schema_version', '0');"
    "CREATE TABLE config_versions ("
    "  number INTEGER PRIMARY KEY,"
    "  created_unix_ms INTEGER NOT NULL,"
    "  author TEXT NOT NULL,"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  hash TEXT NOT NULL,"
    "  content TEXT NOT NULL);"
    "CREATE TRIGGER config_versions_no_update BEFORE UPDATE ON config_versions"
    "  BEGIN SELECT RAISE(ABORT, 'config versions are immutable'); END;"
    "CREATE TRIGGER config_versions_no_delete BEFORE DELETE ON config_versions"
    "  BEGIN SELECT RAISE(ABORT, 'config versions are immutable'); END;"
    "CREATE TABLE active_version ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  number INTEGER NOT NULL REFERENCES config_versions(number),"
    "  activated_unix_ms INTEGER NOT NULL);"
    "CREATE TABLE backend_state ("
    "  id TEXT PRIMARY KEY,"
    "  health TEXT NOT NULL CHECK (health IN ('unknown', 'up', 'down')),"
    "  last_check_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  health_changed_unix_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE dataplanes ("
    "  node_id TEXT PRIMARY KEY,"
    "  applied_version INTEGER NOT NULL DEFAULT 0,"
    "  applied_generation INTEGER NOT NULL DEFAULT 0,"
    "  last_report_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  rejected_generation INTEGER NOT NULL DEFAULT 0,"
    "  rejection_reason TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  time_unix_ms INTEGER NOT NULL,"
    "  who TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  detail TEXT NOT NULL DEFAULT '',"
    "  from_version INTEGER,"
    "  to_version INTEGER);"
    "CREATE INDEX audit_time ON audit (time_unix_ms);",
    /* 2: rollouts (rollout.h); spec and state are rollout.c's JSON */
    "CREATE TABLE rollouts ("
    "  id INTEGER PRIMARY KEY,"
    "  created_unix_ms INTEGER NOT NULL,"
    "  updated_unix_ms INTEGER NOT NULL,"
    "  status TEXT NOT NULL,"
    "  last_version INTEGER NOT NULL DEFAULT 0,"
    "  spec TEXT NOT NULL,"
    "  state TEXT NOT NULL);",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "one migration per schema version");

static const char *const health_names[] = {"unknown", "up", "down"};

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int db_fail(struct store *st, struct lb_err *err, const char *what)
{
    if (st->injected)
        return lb_err_set(err, LB_ESTORE, 0, "store: %s: injected failure", what);
    return lb_err_set(err, LB_ESTORE, 0, "store: %s: %s", what, sqlite3_errmsg(st->db));
}

static int prepare(struct store *st, const char *sql, sqlite3_stmt **s, struct lb_err *err)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, s, NULL) != SQLITE_OK) {
        *s = NULL;
        return db_fail(st, err, "prepare");
    }
    return LB_OK;
}

/* sqlite3_step() that counts statements of a write and lets the hook fail one. */
static int step(struct store *st, sqlite3_stmt *s)
{
    st->injected = false;
    if (st->in_write && sqlite3_stmt_busy(s) == 0) {
        st->stmt_count++;
        if (st->fail_after > 0 && st->stmt_count == st->fail_after) {
            st->injected = true;
            return SQLITE_ERROR;
        }
    }
    return sqlite3_step(s);
}

/* Runs a statement that returns no rows (or whose rows are ignored). */
static int run(struct store *st, sqlite3_stmt *s, const char *what, struct lb_err *err)
{
    int rc = step(st, s);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(s);
    int out = rc == SQLITE_DONE ? LB_OK : db_fail(st, err, what);
    sqlite3_finalize(s);
    return out;
}

static int exec_plain(struct store *st, const char *sql, const char *what, struct lb_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lb_err_set(err, LB_ESTORE, 0, "store: %s: %s", what, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return LB_ESTORE;
    }
    return LB_OK;
}

static int tx_begin(struct store *st, struct lb_err *err)
{
    int rc = exec_plain(st, "BEGIN IMMEDIATE", "begin", err);
    if (rc == LB_OK) {
        st->in_write = true;
        st->stmt_count = 0;
    }
    return rc;
}

/* Commits when <rc> is LB_OK, else rolls back; the hook is one-shot. */
static int tx_end(struct store *st, int rc, struct lb_err *err)
{
    st->in_write = false;
    st->fail_after = 0;
    if (rc == LB_OK && exec_plain(st, "COMMIT", "commit", err) == LB_OK)
        return LB_OK;
    exec_plain(st, "ROLLBACK", "rollback", NULL);
    return rc == LB_OK ? LB_ESTORE : rc;
}

static char *col_dup(sqlite3_stmt *s, int i, bool *ok)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    char *d = strdup(t ? (const char *)t : "");
    if (d == NULL)
        *ok = false;
    return d;
}

/* A parameter of a statement; they are bound in order from ?1. */
struct param {
    enum {
        PARAM_INT,
        PARAM_TEXT,     /* NULL binds "" */
        PARAM_INT_NULL, /* an integer; 0 binds NULL */
    } type;
    sqlite3_int64 i;
    const char *text;
};

#define P_INT(v)                                                                                   \
    {                                                                                              \
        PARAM_INT, (sqlite3_int64)(v), NULL                                                        \
    }
#define P_TEXT(t)                                                                                  \
    {                                                                                              \
        PARAM_TEXT, 0, (t)                                                                         \
    }
#define P_INT_NULL(v)                                                                              \
    {                                                                                              \
        PARAM_INT_NULL, (sqlite3_int64)(v), NULL                                                   \
    }
#define N_PARAMS(p) (sizeof(p) / sizeof((p)[0]))

/* Prepares <sql> and binds the <n> parameters <p>. */
static int prepare_bound(struct store *st, const char *sql, const struct param *p, size_t n,
                         sqlite3_stmt **s, struct lb_err *err)
{
    int rc = prepare(st, sql, s, err);
    for (size_t i = 0; rc == LB_OK && i < n; i++) {
        int at = (int)i + 1;
        if (p[i].type == PARAM_TEXT)
            sqlite3_bind_text(*s, at, p[i].text ? p[i].text : "", -1, SQLITE_STATIC);
        else if (p[i].type == PARAM_INT || p[i].i != 0)
            sqlite3_bind_int64(*s, at, p[i].i);
    }
    return rc;
}

/* Runs <sql> with the <n> parameters <p>; its rows are ignored. */
static int exec_bound(struct store *st, const char *sql, const struct param *p, size_t n,
                      const char *what, struct lb_err *err)
{
    sqlite3_stmt *s;
    int rc = prepare_bound(st, sql, p, n, &s, err);
    return rc != LB_OK ? rc : run(st, s, what, err);
}

/* Clears each of the <n> <size>-byte items of <arr> with <clear>, then
 * frees <arr>; NULL is a no-op. */
static void free_rows(void *arr, size_t n, size_t size, void (*clear)(void *))
{
    for (size_t i = 0; arr != NULL && i < n; i++)
        clear((char *)arr + i * size);
    free(arr);
}

/* ---- open, migrations -------------------------------------------------- */

static int schema_version(struct store *st, int *version, struct lb_err *err)
{
    sqlite3_stmt *s;
    int rc = prepare(
        st, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", &s, err);
    if (rc != LB_OK)
        return rc;
    bool has_meta = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 1;
    sqlite3_finalize(s);
    *version = 0;
    if (!has_meta)
        return LB_OK;
    if ((rc = prepare(st, "SELECT value FROM meta WHERE key = 'schema_version'", &s, err)) != LB_OK)
        return rc;
    if (sqlite3_step(s) == SQLITE_ROW)
        *version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return LB_OK;
}

static int migrate(struct store *st, const char *path, struct lb_err *err)
{
    int version;
    int rc = schema_version(st, &version, err);
    if (rc != LB_OK)
        return rc;
    if (version > STORE_SCHEMA_VERSION)
        return lb_err_set(err, LB_ESTORE, 0,
                          "store: %s has schema version %d, newer than this build's %d; "
                          "use a newer lb-controlplane",
                          path, version, STORE_SCHEMA_VERSION);
    for (int v = version + 1; v <= STORE_SCHEMA_VERSION; v++) {
        char what[48];
        snprintf(what, sizeof(what), "migration %d", v);
        if ((rc = exec_plain(st, "BEGIN IMMEDIATE", what, err)) != LB_OK)
            return rc;
        char bump[96];
        snprintf(bump, sizeof(bump), "UPDATE meta SET value = '%d' WHERE key = 'schema_version'",
                 v);
        if ((rc = exec_plain(st, migrations[v - 1], what, err)) != LB_OK ||
            (rc = exec_plain(st, bump, what, err)) != LB_OK ||
            (rc = exec_plain(st, "COMMIT", what, err)) != LB_OK) {
            exec_plain(st, "ROLLBACK", "rollback", NULL);
            return rc;
        }
    }
    return LB_OK;
}

struct store *store_open(const char *path, struct lb_err *err)
{
    struct store *st = mem_zalloc(sizeof(*st), "store", err);
    if (st == NULL)
        return NULL;
    int rc = sqlite3_open_v2(
        path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        lb_err_set(err, LB_ESTORE, 0, "store: cannot open %s: %s", path,
                   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        store_close(st);
        return NULL;
    }
    sqlite3_busy_timeout(st->db, 5000);
    if (exec_plain(st, "PRAGMA journal_mode = WAL", "journal_mode", err) != LB_OK ||
        exec_plain(st, "PRAGMA foreign_keys = ON", "foreign_keys", err) != LB_OK ||
        exec_plain(st, "PRAGMA synchronous = NORMAL", "synchronous", err) != LB_OK ||
        migrate(st, path, err) != LB_OK) {
        store_close(st);
        return NULL;
    }
    return st;
}

void store_close(struct store *st)
{
    if (st == NULL)
        return;
    sqlite3_close(st->db);
    free(st);
}

void store__fail_after(struct store *st, int n)
{
    st->fail_after = n;
}

/* ---- versions ------------------------------------------------------------- */

static int query_u64(struct store *st, const char *sql, uint64_t *out, const char *what,
                     struct lb_err *err)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, err);
    if (rc != LB_OK)
        return rc;
    int r = step(st, s);
    if (r == SQLITE_ROW) {
        *out = (uint64_t)sqlite3_column_int64(s, 0);
        rc = LB_OK;
    } else if (r == SQLITE_DONE) {
        rc = LB_ENOTFOUND;
    } else {
        rc = db_fail(st, err, what);
    }
    sqlite3_finalize(s);
    return rc;
}

static int audit_insert(struct store *st, int64_t now, const char *who, const char *action,
                        const char *detail, uint64_t from, uint64_t to, struct lb_err *err)
{
    const struct param p[] = {P_INT(now),     P_TEXT(who),      P_TEXT(action),
                              P_TEXT(detail), P_INT_NULL(from), P_INT_NULL(to)};
    return exec_bound(st,
                      "INSERT INTO audit (time_unix_ms, who, action, detail, from_version, "
                      "to_version) VALUES (?, ?, ?, ?, ?, ?)",
                      p, N_PARAMS(p), "audit insert", err);
}

/* Inside a transaction: new version with <content>, activated. Fills <prev>
 * with the previously active version (0 if none). */
static int insert_version(struct store *st, int64_t now, const char *content, const char *hash,
                          const char *author, const char *comment, uint64_t *prev, uint64_t *number,
                          struct lb_err *err)
{
    int rc = query_u64(st, "SELECT COALESCE(MAX(number), 0) + 1 FROM config_versions", number,
                       "next version", err);
    if (rc != LB_OK)
        return rc;
    rc = query_u64(st, "SELECT number FROM active_version WHERE id = 1", prev, "active version",
                   err);
    if (rc == LB_ENOTFOUND) {
        *prev = 0;
        lb_err_clear(err);
    } else if (rc != LB_OK) {
        return rc;
    }
    const struct param v[] = {P_INT(*number),  P_INT(now),   P_TEXT(author),
                              P_TEXT(comment), P_TEXT(hash), P_TEXT(content)};
    if ((rc = exec_bound(st,
                         "INSERT INTO config_versions (number, created_unix_ms, author, comment, "
                         "hash, content) VALUES (?, ?, ?, ?, ?, ?)",
                         v, N_PARAMS(v), "version insert", err)) != LB_OK)
        return rc;
    const struct param a[] = {P_INT(*number), P_INT(now)};
    return exec_bound(st,
                      "INSERT INTO active_version (id, number, activated_unix_ms) VALUES (1, ?, ?) "
                      "ON CONFLICT (id) DO UPDATE SET number = excluded.number, "
                      "activated_unix_ms = excluded.activated_unix_ms",
                      a, N_PARAMS(a), "activate version", err);
}

/* Inside a transaction: generation + 1, persisted in meta; fills <gen>. */
static int generation_bump(struct store *st, uint64_t *gen, struct lb_err *err)
{
    int rc = exec_bound(st,
                        "INSERT INTO meta (key, value) VALUES ('generation', '1') "
                        "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                        NULL, 0, "generation bump", err);
    if (rc != LB_OK)
        return rc;
    rc = query_u64(st, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'", gen,
                   "generation read", err);
    if (rc == LB_ENOTFOUND)
        rc = lb_err_set(err, LB_ESTORE, 0, "store: generation row vanished");
    return rc;
}

/* Ends the transaction that made version <number> active (after <prev>):
 * its audit row (<action>, <detail>), the generation bump when <generation>
 * is wanted, commit (or rollback when <rc> or any of them failed). Fills
 * the outputs on success. */
static int rollout_upsert(struct store *st, const struct store_rollout_row *row, int64_t now,
                          uint64_t version, struct lb_err *err);

static int meta_upsert(struct store *st, const char *key, const char *value, const char *path,
                       uint64_t version, struct lb_err *err);

static int version_finish(struct store *st, int rc, int64_t now, const char *author,
                          const char *action, const char *detail, uint64_t prev, uint64_t number,
                          uint64_t *new_number, uint64_t *generation, struct lb_err *err)
{
    uint64_t gen = 0;
    const struct store_rollout_row *row = st->attached;
    st->attached = NULL;
    if (rc == LB_OK)
        rc = audit_insert(st, now, author, action, detail, prev, number, err);
    if (rc == LB_OK && row != NULL)
        rc = rollout_upsert(st, row, now, number, err);
    if (rc == LB_OK && st->meta_key != NULL)
        rc = meta_upsert(st, st->meta_key, st->meta_value, st->meta_path, number, err);
    st->meta_key = st->meta_value = st->meta_path = NULL;
    if (rc == LB_OK && generation != NULL)
        rc = generation_bump(st, &gen, err);
    rc = tx_end(st, rc, err);
    if (rc == LB_OK && new_number != NULL)
        *new_number = number;
    if (rc == LB_OK && generation != NULL)
        *generation = gen;
    return rc;
}

static int version_put(struct store *st, const struct store_put *p, uint64_t *new_number,
                       uint64_t *generation, struct lb_err *err)
{
    if (p->content == NULL || p->content[0] == '\0' || p->author == NULL || p->author[0] == '\0' ||
        p->hash == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "store: a version needs content, hash and author");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    int64_t now = now_unix_ms();
    uint64_t prev = 0, number = 0;
    rc = insert_version(st, now, p->content, p->hash, p->author, p->comment, &prev, &number, err);
    return version_finish(st, rc, now, p->author, p->action ? p->action : "config.put",
                          p->detail ? p->detail : p->comment, prev, number, new_number, generation,
                          err);
}

int store_version_put(struct store *st, const char *content, const char *hash, const char *author,
                      const char *comment, uint64_t *new_number, struct lb_err *err)
{
    const struct store_put p = {
        .content = content, .hash = hash, .author = author, .comment = comment};
    return version_put(st, &p, new_number, NULL, err);
}

int store_version_put_gen(struct store *st, const char *content, const char *hash,
                          const char *author, const char *comment, uint64_t *new_number,
                          uint64_t *generation, struct lb_err *err)
{
    const struct store_put p = {
        .content = content, .hash = hash, .author = author, .comment = comment};
    return store_version_put_audited(st, &p, new_number, generation, err);
}

int store_version_put_audited(struct store *st, const struct store_put *p, uint64_t *new_number,
                              uint64_t *generation, struct lb_err *err)
{
    if (generation == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "store: generation output missing");
    return version_put(st, p, new_number, generation, err);
}

int store_generation(struct store *st, uint64_t *generation, struct lb_err *err)
{
    int rc = query_u64(st, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'",
                       generation, "generation read", err);
    if (rc == LB_ENOTFOUND) {
        *generation = 0;
        return LB_OK;
    }
    return rc;
}

int store_generation_bump(struct store *st, uint64_t *generation, struct lb_err *err)
{
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    uint64_t gen = 0;
    rc = tx_end(st, generation_bump(st, &gen, err), err);
    if (rc == LB_OK)
        *generation = gen;
    return rc;
}

static int read_version(sqlite3_stmt *s, struct store_version *v, bool with_content)
{
    bool ok = true;
    v->number = (uint64_t)sqlite3_column_int64(s, 0);
    v->created_unix_ms = sqlite3_column_int64(s, 1);
    v->author = col_dup(s, 2, &ok);
    v->comment = col_dup(s, 3, &ok);
    v->hash = col_dup(s, 4, &ok);
    v->content = with_content ? col_dup(s, 5, &ok) : strdup("");
    return ok && v->content != NULL ? LB_OK : LB_ENOMEM;
}

static void clear_version(void *item)
{
    struct store_version *v = item;
    free(v->author);
    free(v->comment);
    free(v->hash);
    free(v->content);
}

void store_version_free(struct store_version *v)
{
    free_rows(v, 1, sizeof(*v), clear_version);
}

void store_versions_free(struct store_version *vs, size_t n)
{
    free_rows(vs, n, sizeof(*vs), clear_version);
}

/* Runs <sql> with the <np> parameters <p> and collects its rows into a
 * growing array of <size>-byte items via <read>: *<out> (caller frees) of
 * *<n> items. */
static int list(struct store *st, const char *sql, const struct param *p, size_t np, size_t size,
                int (*read)(sqlite3_stmt *, void *), void (*clear)(void *), void **out, size_t *n,
                const char *what, struct lb_err *err)
{
    sqlite3_stmt *s;
    int rc = prepare_bound(st, sql, p, np, &s, err);
    if (rc != LB_OK)
        return rc;
    char *arr = NULL;
    size_t count = 0, cap = 0;
    int r;
    while ((r = step(st, s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char *na = realloc(arr, cap * size);
            if (na == NULL) {
                rc = LB_ENOMEM;
                break;
            }
            arr = na;
        }
        memset(arr + count * size, 0, size);
        rc = read(s, arr + count * size);
        count++;
        if (rc != LB_OK)
            break;
    }
    if (rc == LB_OK && r != SQLITE_DONE)
        rc = db_fail(st, err, what);
    else if (rc == LB_ENOMEM)
        lb_err_set(err, LB_ENOMEM, 0, "store: out of memory");
    sqlite3_finalize(s);
    if (rc != LB_OK) {
        for (size_t i = 0; i < count; i++)
            clear(arr + i * size);
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return LB_OK;
}

static int read_version_row(sqlite3_stmt *s, void *item)
{
    return read_version(s, item, false);
}

static int read_version_content(sqlite3_stmt *s, void *item)
{
    return read_version(s, item, true);
}

int store_version_get(struct store *st, uint64_t number, struct store_version **out,
                      struct lb_err *err)
{
    const struct param p[] = {P_INT(number)};
    void *arr = NULL;
    size_t n = 0;
    int rc = list(st,
                  "SELECT number, created_unix_ms, author, comment, hash, content "
                  "FROM config_versions WHERE number = ?",
                  p, N_PARAMS(p), sizeof(struct store_version), read_version_content, clear_version,
                  &arr, &n, "version get", err);
    if (rc != LB_OK)
        return rc;
    if (n == 0) {
        free(arr);
        return lb_err_set(err, LB_ENOTFOUND, 0, "config version %llu does not exist",
                          (unsigned long long)number);
    }
    *out = arr;
    return LB_OK;
}

int store_versions_list(struct store *st, size_t limit, struct store_version **out, size_t *n,
                        struct lb_err *err)
{
    const struct param p[] = {P_INT(limit ? (sqlite3_int64)limit : -1)};
    void *arr = NULL;
    int rc = list(st,
                  "SELECT number, created_unix_ms, author, comment, hash FROM config_versions "
                  "ORDER BY number DESC LIMIT ?",
                  p, N_PARAMS(p), sizeof(struct store_version), read_version_row, clear_version,
                  &arr, n, "version list", err);
    if (rc == LB_OK)
        *out = arr;
    return rc;
}

int store_active_version(struct store *st, uint64_t *number, struct lb_err *err)
{
    int rc = query_u64(st, "SELECT number FROM active_version WHERE id = 1", number,
                       "active version", err);
    if (rc == LB_ENOTFOUND)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no config version is active yet");
    return rc;
}

static int rollback(struct store *st, uint64_t target, const char *author, const char *comment,
                    uint64_t *new_number, uint64_t *generation, struct lb_err *err)
{
    if (author == NULL || author[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "store: a rollback needs an author");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    int64_t now = now_unix_ms();
    uint64_t prev = 0, number = 0;
    sqlite3_stmt *s = NULL;
    char *content = NULL, *hash = NULL;
    const struct param p[] = {P_INT(target)};
    rc = prepare_bound(st, "SELECT content, hash FROM config_versions WHERE number = ?", p,
                       N_PARAMS(p), &s, err);
    if (rc == LB_OK) {
        int r = step(st, s);
        if (r == SQLITE_ROW) {
            bool ok = true;
            content = col_dup(s, 0, &ok);
            hash = col_dup(s, 1, &ok);
            if (!ok)
                rc = lb_err_set(err, LB_ENOMEM, 0, "store: out of memory");
        } else if (r == SQLITE_DONE) {
            rc = lb_err_set(err, LB_ENOTFOUND, 0, "config version %llu does not exist",
                            (unsigned long long)target);
        } else {
            rc = db_fail(st, err, "rollback read");
        }
        sqlite3_finalize(s);
    }
    char detail[512];
    snprintf(detail, sizeof(detail), "content of version %llu%s%s", (unsigned long long)target,
             comment && comment[0] ? ": " : "", comment ? comment : "");
    if (rc == LB_OK)
        rc = insert_version(st, now, content, hash, author,
                            comment && comment[0] ? comment : detail, &prev, &number, err);
    free(content);
    free(hash);
    return version_finish(st, rc, now, author, "rollback", detail, prev, number, new_number,
                          generation, err);
}

int store_rollback(struct store *st, uint64_t target, const char *author, const char *comment,
                   uint64_t *new_number, struct lb_err *err)
{
    return rollback(st, target, author, comment, new_number, NULL, err);
}

int store_rollback_gen(struct store *st, uint64_t target, const char *author, const char *comment,
                       uint64_t *new_number, uint64_t *generation, struct lb_err *err)
{
    if (generation == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "store: generation output missing");
    return rollback(st, target, author, comment, new_number, generation, err);
}

/* ---- backend health --------------------------------------------------------- */

static int health_upsert(struct store *st, const char *id, enum store_health health,
                         const char *last_error, int64_t now_ms, struct lb_err *err)
{
    const struct param p[] = {P_TEXT(id), P_TEXT(health_names[health]), P_INT(now_ms),
                              P_TEXT(last_error)};
    return exec_bound(st,
                      "INSERT INTO backend_state (id, health, last_check_unix_ms, last_error, "
                      "health_changed_unix_ms) VALUES (?1, ?2, ?3, ?4, ?3) "
                      "ON CONFLICT (id) DO UPDATE SET "
                      "health_changed_unix_ms = CASE WHEN health = excluded.health "
                      "THEN health_changed_unix_ms ELSE excluded.last_check_unix_ms END, "
                      "health = excluded.health, last_check_unix_ms = excluded.last_check_unix_ms, "
                      "last_error = excluded.last_error",
                      p, N_PARAMS(p), "health set", err);
}

int store_health_set(struct store *st, const char *id, enum store_health health,
                     const char *last_error, int64_t now_ms, struct lb_err *err)
{
    if (id == NULL || id[0] == '\0' || (unsigned)health > STORE_HEALTH_DOWN)
        return lb_err_set(err, LB_EINVAL, 0, "store: health needs a backend id and a verdict");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    rc = health_upsert(st, id, health, last_error, now_ms, err);
    return tx_end(st, rc, err);
}

int store_health_changes(struct store *st, const struct store_health_change *chg, size_t n,
                         const char *who, struct lb_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (chg[i].id == NULL || chg[i].id[0] == '\0' ||
            (unsigned)chg[i].health > STORE_HEALTH_DOWN)
            return lb_err_set(err, LB_EINVAL, 0, "store: health needs a backend id and a verdict");
    if (who == NULL || who[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "store: an audit row needs who and action");
    int rc = tx_begin(st, err);
    for (size_t i = 0; rc == LB_OK && i < n; i++) {
        rc = health_upsert(st, chg[i].id, chg[i].health, chg[i].last_error, chg[i].now_ms, err);
        if (rc == LB_OK)
            rc = audit_insert(st, chg[i].now_ms, who, "health", chg[i].detail, 0, 0, err);
    }
    if (rc != LB_OK && !st->in_write)
        return rc;
    return tx_end(st, rc, err);
}

static int read_health(sqlite3_stmt *s, void *item)
{
    struct store_backend_health *h = item;
    bool ok = true;
    h->id = col_dup(s, 0, &ok);
    const char *name = (const char *)sqlite3_column_text(s, 1);
    h->health = STORE_HEALTH_UNKNOWN;
    for (int i = 0; name && i < 3; i++)
        if (strcmp(name, health_names[i]) == 0)
            h->health = (enum store_health)i;
    h->last_check_unix_ms = sqlite3_column_int64(s, 2);
    h->last_error = col_dup(s, 3, &ok);
    h->health_changed_unix_ms = sqlite3_column_int64(s, 4);
    return ok ? LB_OK : LB_ENOMEM;
}

static void clear_health(void *item)
{
    struct store_backend_health *h = item;
    free(h->id);
    free(h->last_error);
}

void store_health_free(struct store_backend_health *h)
{
    free_rows(h, 1, sizeof(*h), clear_health);
}

void store_health_list_free(struct store_backend_health *hs, size_t n)
{
    free_rows(hs, n, sizeof(*hs), clear_health);
}

#define HEALTH_COLS "id, health, last_check_unix_ms, last_error, health_changed_unix_ms"

int store_health_get(struct store *st, const char *id, struct store_backend_health **out,
                     struct lb_err *err)
{
    const struct param p[] = {P_TEXT(id)};
    void *arr = NULL;
    size_t n = 0;
    int rc = list(st, "SELECT " HEALTH_COLS " FROM backend_state WHERE id = ?", p, N_PARAMS(p),
                  sizeof(struct store_backend_health), read_health, clear_health, &arr, &n,
                  "health get", err);
    if (rc != LB_OK)
        return rc;
    if (n == 0) {
        free(arr);
        return lb_err_set(err, LB_ENOTFOUND, 0, "no health recorded for backend %s", id);
    }
    *out = arr;
    return LB_OK;
}

int store_health_list(struct store *st, struct store_backend_health **out, size_t *n,
                      struct lb_err *err)
{
    void *arr = NULL;
    int rc = list(st, "SELECT " HEALTH_COLS " FROM backend_state ORDER BY id", NULL, 0,
                  sizeof(struct store_backend_health), read_health, clear_health, &arr, n,
                  "health list", err);
    if (rc == LB_OK)
        *out = arr;
    return rc;
}

/* ---- data planes ---------------------------------------------------------------- */

int store_dataplane_upsert(struct store *st, const struct store_dataplane *dp, struct lb_err *err)
{
    if (dp->node_id == NULL || dp->node_id[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "store: a data plane needs a node id");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    const struct param p[] = {P_TEXT(dp->node_id),
                              P_INT(dp->applied_version),
                              P_INT(dp->applied_generation),
                              P_INT(dp->last_report_unix_ms),
                              P_INT(dp->rejected_generation),
                              P_TEXT(dp->rejection_reason)};
    rc = exec_bound(st,
                    "INSERT INTO dataplanes (node_id, applied_version, applied_generation, "
                    "last_report_unix_ms, rejected_generation, rejection_reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                    "applied_version = excluded.applied_version, "
                    "applied_generation = excluded.applied_generation, "
                    "last_report_unix_ms = excluded.last_report_unix_ms, "
                    "rejected_generation = excluded.rejected_generation, "
                    "rejection_reason = excluded.rejection_reason",
                    p, N_PARAMS(p), "data plane upsert", err);
    return tx_end(st, rc, err);
}

static int read_dataplane(sqlite3_stmt *s, void *item)
{
    struct store_dataplane *d = item;
    bool ok = true;
    d->node_id = col_dup(s, 0, &ok);
    d->applied_version = (uint64_t)sqlite3_column_int64(s, 1);
    d->applied_generation = (uint64_t)sqlite3_column_int64(s, 2);
    d->last_report_unix_ms = sqlite3_column_int64(s, 3);
    d->rejected_generation = (uint64_t)sqlite3_column_int64(s, 4);
    d->rejection_reason = col_dup(s, 5, &ok);
    return ok ? LB_OK : LB_ENOMEM;
}

static void clear_dataplane(void *item)
{
    struct store_dataplane *d = item;
    free(d->node_id);
    free(d->rejection_reason);
}

void store_dataplanes_free(struct store_dataplane *dps, size_t n)
{
    free_rows(dps, n, sizeof(*dps), clear_dataplane);
}

int store_dataplanes_list(struct store *st, struct store_dataplane **out, size_t *n,
                          struct lb_err *err)
{
    void *arr = NULL;
    int rc = list(st,
                  "SELECT node_id, applied_version, applied_generation, last_report_unix_ms, "
                  "rejected_generation, rejection_reason FROM dataplanes ORDER BY node_id",
                  NULL, 0, sizeof(struct store_dataplane), read_dataplane, clear_dataplane, &arr, n,
                  "data plane list", err);
    if (rc == LB_OK)
        *out = arr;
    return rc;
}

/* ---- audit -------------------------------------------------------------------------- */

int store_audit_add(struct store *st, const char *who, const char *action, const char *detail,
                    uint64_t from_version, uint64_t to_version, struct lb_err *err)
{
    if (who == NULL || who[0] == '\0' || action == NULL || action[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "store: an audit row needs who and action");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    rc = audit_insert(st, now_unix_ms(), who, action, detail, from_version, to_version, err);
    return tx_end(st, rc, err);
}

static int read_audit(sqlite3_stmt *s, void *item)
{
    struct store_audit *a = item;
    bool ok = true;
    a->id = sqlite3_column_int64(s, 0);
    a->time_unix_ms = sqlite3_column_int64(s, 1);
    a->who = col_dup(s, 2, &ok);
    a->action = col_dup(s, 3, &ok);
    a->detail = col_dup(s, 4, &ok);
    a->from_version = (uint64_t)sqlite3_column_int64(s, 5);
    a->to_version = (uint64_t)sqlite3_column_int64(s, 6);
    return ok ? LB_OK : LB_ENOMEM;
}

static void clear_audit(void *item)
{
    struct store_audit *a = item;
    free(a->who);
    free(a->action);
    free(a->detail);
}

void store_audit_free(struct store_audit *as, size_t n)
{
    free_rows(as, n, sizeof(*as), clear_audit);
}

int store_audit_list(struct store *st, size_t limit, struct store_audit **out, size_t *n,
                     struct lb_err *err)
{
    const struct store_audit_filter f = {.limit = limit};
    return store_audit_query(st, &f, out, n, err);
}

int store_audit_query(struct store *st, const struct store_audit_filter *f,
                      struct store_audit **out, size_t *n, struct lb_err *err)
{
    const struct store_audit_filter all = {0};
    if (f == NULL)
        f = &all;
    /* One statement for every combination: an empty who or action matches
     * all rows, so no SQL is ever assembled from the filter. */
    const struct param p[] = {P_INT(f->since_unix_ms), P_TEXT(f->who), P_TEXT(f->action),
                              P_INT(f->limit ? (sqlite3_int64)f->limit : -1)};
    void *arr = NULL;
    int rc = list(st,
                  "SELECT id, time_unix_ms, who, action, detail, from_version, to_version "
                  "FROM audit WHERE time_unix_ms >= ?1 AND (?2 = '' OR who = ?2) "
                  "AND (?3 = '' OR action = ?3) ORDER BY id DESC LIMIT ?4",
                  p, N_PARAMS(p), sizeof(struct store_audit), read_audit, clear_audit, &arr, n,
                  "audit query", err);
    if (rc == LB_OK)
        *out = arr;
    return rc;
}

/* ---- rollouts ------------------------------------------------------------- */

/* Inside a transaction: row <row> as it is at <now>; <version> (0 = keep)
 * becomes its last version. */
static int rollout_upsert(struct store *st, const struct store_rollout_row *row, int64_t now,
                          uint64_t version, struct lb_err *err)
{
    if (row->id == 0 || row->status == NULL || row->spec == NULL || row->state == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "store: a rollout row needs id, status, spec, state");
    const struct param p[] = {P_INT(row->id), P_INT(now),        P_TEXT(row->status),
                              P_INT(version), P_TEXT(row->spec), P_TEXT(row->state)};
    return exec_bound(st,
                      "INSERT INTO rollouts (id, created_unix_ms, updated_unix_ms, status, "
                      "last_version, spec, state) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6) "
                      "ON CONFLICT (id) DO UPDATE SET updated_unix_ms = excluded.updated_unix_ms, "
                      "status = excluded.status, spec = excluded.spec, state = excluded.state, "
                      "last_version = CASE WHEN excluded.last_version = 0 THEN last_version "
                      "ELSE excluded.last_version END",
                      p, N_PARAMS(p), "rollout write", err);
}

void store_rollout_attach(struct store *st, const struct store_rollout_row *row)
{
    st->attached = row;
}

int store_rollout_put(struct store *st, const struct store_rollout_row *row, struct lb_err *err)
{
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    return tx_end(st, rollout_upsert(st, row, now_unix_ms(), 0, err), err);
}

int store_rollout_next_id(struct store *st, uint64_t *id, struct lb_err *err)
{
    return query_u64(st, "SELECT COALESCE(MAX(id), 0) + 1 FROM rollouts", id, "rollout id", err);
}

static int read_rollout(sqlite3_stmt *s, void *item)
{
    struct store_rollout *r = item;
    bool ok = true;
    r->id = (uint64_t)sqlite3_column_int64(s, 0);
    r->created_unix_ms = sqlite3_column_int64(s, 1);
    r->updated_unix_ms = sqlite3_column_int64(s, 2);
    r->status = col_dup(s, 3, &ok);
    r->last_version = (uint64_t)sqlite3_column_int64(s, 4);
    r->spec = col_dup(s, 5, &ok);
    r->state = col_dup(s, 6, &ok);
    return ok ? LB_OK : LB_ENOMEM;
}

static void clear_rollout(void *item)
{
    struct store_rollout *r = item;
    free(r->status);
    free(r->spec);
    free(r->state);
}

void store_rollouts_free(struct store_rollout *rs, size_t n)
{
    free_rows(rs, n, sizeof(*rs), clear_rollout);
}

int store_rollouts_list(struct store *st, uint64_t id, size_t limit, struct store_rollout **out,
                        size_t *n, struct lb_err *err)
{
    const struct param p[] = {P_INT(id), P_INT(limit ? (sqlite3_int64)limit : -1)};
    void *arr = NULL;
    int rc = list(st,
                  "SELECT id, created_unix_ms, updated_unix_ms, status, last_version, spec, state "
                  "FROM rollouts WHERE ?1 = 0 OR id = ?1 ORDER BY id DESC LIMIT ?2",
                  p, N_PARAMS(p), sizeof(struct store_rollout), read_rollout, clear_rollout, &arr,
                  n, "rollout list", err);
    if (rc == LB_OK)
        *out = arr;
    return rc;
}

/* ---- meta rows of other modules (the staged rollout's state) -------------- */

/* Inside a transaction: meta <key> = <value>, with <version> set at JSON
 * path <path> of it when <path> is not NULL. */
static int meta_upsert(struct store *st, const char *key, const char *value, const char *path,
                       uint64_t version, struct lb_err *err)
{
    const struct param p[] = {P_TEXT(key), P_TEXT(value), P_TEXT(path ? path : "$.unused"),
                              P_INT(version), P_INT(path != NULL)};
    return exec_bound(st,
                      "INSERT INTO meta (key, value) VALUES (?1, CASE WHEN ?5 THEN "
                      "json_set(?2, ?3, ?4) ELSE ?2 END) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                      p, N_PARAMS(p), "meta write", err);
}

void store_meta_attach(struct store *st, const char *key, const char *value, const char *path)
{
    st->meta_key = key;
    st->meta_value = value;
    st->meta_path = path;
}

int store_meta_put(struct store *st, const char *key, const char *value, struct lb_err *err)
{
    if (key == NULL || value == NULL || strcmp(key, "schema_version") == 0 ||
        strcmp(key, "generation") == 0)
        return lb_err_set(err, LB_EINVAL, 0, "store: meta key %s is not for this", key ? key : "");
    int rc = tx_begin(st, err);
    if (rc != LB_OK)
        return rc;
    return tx_end(st, meta_upsert(st, key, value, NULL, 0, err), err);
}

int store_meta_get(struct store *st, const char *key, char **value, struct lb_err *err)
{
    *value = NULL;
    sqlite3_stmt *s;
    const struct param p[] = {P_TEXT(key)};
    int rc = prepare_bound(st, "SELECT value FROM meta WHERE key = ?1", p, N_PARAMS(p), &s, err);
    if (rc != LB_OK)
        return rc;
    int r = step(st, s);
    if (r == SQLITE_ROW) {
        bool ok = true;
        *value = col_dup(s, 0, &ok);
        rc = ok ? LB_OK : lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    } else if (r == SQLITE_DONE) {
        rc = LB_ENOTFOUND;
    } else {
        rc = db_fail(st, err, "meta read");
    }
    sqlite3_finalize(s);
    return rc;
}
