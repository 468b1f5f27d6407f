/* controlplane/cp.c: the control plane's core (see cp.h): start and stop,
 * reads, and the one path by which a config version becomes active and
 * served (commit, publish). The snapshot, its TLS files, the checker's
 * verdicts and the data planes' reports have their parts (cp_int.h). */
#include "cp_int.h"

#include "certwatch.h"
#include "cp_guard.h"
#include "health.h"
#include "history.h"
#include "lb_err.h"
#include "lb_log.h"
#include "mem.h"
#include "publisher.h"
#include "reports.h"
#include "snapbuild.h"
#include "tlscheck.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

/* ---- building and committing ------------------------------------------- */

/* Longest list of changes in an audit detail; the comment comes on top. */
#define CP_AUDIT_CHANGES_MAX 1024

/* A snapshot of a config ready to go live: built, its TLS files adopted,
 * the room for its encoding reserved. */
struct staged {
    Lb__V1__Snapshot *snap;
    uint8_t *buf;
    struct tlscheck_bundle *tls;
};

static void staged_free(struct staged *s)
{
    snapbuild_free(s->snap);
    free(s->buf);
    tlscheck_bundle_free(s->tls);
}

/* Stages <cfg> (TLS paths relative to <base_dir>); on failure nothing is
 * left to free. */
static int stage(struct cp *cp, const struct config *cfg, const char *base_dir, struct staged *s,
                 struct lb_err *err)
{
    *s = (struct staged){0};
    int rc;
    if ((rc = cp__build_snapshot(cp, cfg, base_dir, &s->snap, err)) != LB_OK ||
        (rc = cp__tls_adopt(cp, cfg, base_dir, s->snap, &s->tls, err)) != LB_OK ||
        (rc = cp__reserve_encoding(s->snap, &s->buf, err)) != LB_OK) {
        staged_free(s);
        return rc;
    }
    return LB_OK;
}

/* Serves <s> (taken) as generation <gen> of the active config, with its TLS
 * files and health targets. Cannot fail. */
static void go_live(struct cp *cp, struct staged *s, uint64_t gen, const char *base_dir)
{
    s->snap->config_version = cp->version;
    s->snap->generation = gen;
    size_t len = lb__v1__snapshot__pack(s->snap, s->buf);
    cp__serve(cp, gen, s->buf, len);
    cp__tls_install(cp, s->tls, base_dir);
    cp__health_resync(cp, s->snap);
    snapbuild_free(s->snap);
}

/* Makes (<cfg>, <hash>, <version>) the active config. Takes <cfg>. */
static void set_active(struct cp *cp, struct config *cfg, const char *hash, uint64_t version)
{
    config_free(cp->cfg);
    cp->cfg = cfg;
    snprintf(cp->hash, sizeof(cp->hash), "%s", hash);
    cp->version = version;
}

/* Builds the snapshot of the active config (cp->cfg, cp->version) and
 * serves it as a new generation, with its TLS files and health targets.
 * On failure nothing changes. */
static int publish_active(struct cp *cp, struct lb_err *err)
{
    struct staged s;
    uint64_t gen = 0;
    int rc = stage(cp, cp->cfg, cp->config_dir, &s, err);
    if (rc != LB_OK)
        return rc;
    if ((rc = store_generation_bump(cp->store, &gen, err)) != LB_OK) {
        staged_free(&s);
        return rc;
    }
    go_live(cp, &s, gen, cp->config_dir);
    return LB_OK;
}

/* The active config has no snapshot: its files were broken when the control
 * plane started. Tries again, so that fixing the files is enough. */
static int publish_pending(struct cp *cp, const char *who, bool *reloaded, struct lb_err *err)
{
    struct lb_err e = {0};
    int rc = publish_active(cp, &e);
    if (rc != LB_OK) {
        cp->tls_st.reload_errors++;
        snprintf(cp->tls_st.last_error, sizeof(cp->tls_st.last_error), "%s", e.msg);
        lb_log(LB_LOG_ERROR, "snapshot_failed", "active version %llu still not published: %s",
               (unsigned long long)cp->version, e.msg);
        if (err != NULL)
            *err = e;
        return rc;
    }
    char what[sizeof(cp->tls_st.last_reload)];
    snprintf(what, sizeof(what), "files fixed: version %llu published",
             (unsigned long long)cp->version);
    cp__tls_reloaded(cp, cp->generation, what);
    char detail[sizeof(what) + 16];
    snprintf(detail, sizeof(detail), "tls reload: %s", what);
    struct lb_err ae = {0};
    if (store_audit_add(cp->store, who, "tls.reload", detail, cp->version, cp->version, &ae) !=
        LB_OK)
        lb_log(LB_LOG_ERROR, "audit_failed", "%s: %s", detail, ae.msg);
    *reloaded = true;
    return LB_OK;
}

int cp_tls_reload(struct cp *cp, bool *reloaded, struct lb_err *err)
{
    return cp_tls_reload_by(cp, "certwatch", reloaded, err);
}

int cp_tls_reload_by(struct cp *cp, const char *who, bool *reloaded, struct lb_err *err)
{
    *reloaded = false;
    if (who == NULL || who[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "a reload needs a who");
    if (cp->cfg == NULL || !cp__has_tls_files(cp->cfg))
        return LB_OK;
    if (cp->snap == NULL)
        return publish_pending(cp, who, reloaded, err);
    return cp__tls_reload_served(cp, who, reloaded, err);
}

static void cp_on_certs(void *ctx, const char *const *paths, size_t n)
{
    bool reloaded;
    lb_log(LB_LOG_INFO, "tls_files_changed", "%s%s", paths[0], n > 1 ? " and others" : "");
    cp_tls_reload(ctx, &reloaded, NULL);
}

static int check_if_match(const struct cp *cp, const struct cp_write *w, struct lb_err *err)
{
    if (w->author == NULL || w->author[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "a write needs an author");
    /* a rollout running owns the backends: others' writes get a 409 naming it */
    int rc = cp->guard != NULL ? cp->guard->write_check(cp->guard_ctx, err) : LB_OK;
    if (rc != LB_OK)
        return rc;
    if (w->expected_version != 0 && w->expected_version != cp->version)
        return lb_err_set(err, LB_ECONFLICT, 0, "active version is %llu, not %llu",
                          (unsigned long long)cp->version, (unsigned long long)w->expected_version);
    return LB_OK;
}

/* What the audit row of a new version says. */
struct audit_note {
    const char *action;             /* "config.put", "backend.update", ... */
    const char *backend;            /* the one backend a backend.* write changes, else NULL */
    const struct config_diff *diff; /* the changes when the caller has them, else NULL */
};

/* <cfg> seen with at most its backend <id>: the same settings, that backend
 * alone (none when <cfg> has no <id>). Shares <cfg>'s memory; read only. */
static struct config one_backend_view(const struct config *cfg, const char *id)
{
    struct config v = *cfg;
    v.backends = NULL;
    v.n_backends = 0;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        if (strcmp(cfg->backends[i].id, id) == 0) {
            v.backends = &cfg->backends[i];
            v.n_backends = 1;
        }
    }
    return v;
}

/* The changes of making <cfg> active as one line: "backend c: weight 2 ->
 * 9; backend c: state active -> disabled", cut after CP_AUDIT_CHANGES_MAX
 * bytes, then the comment in parentheses. A backend write compares that
 * backend alone, so that a large config costs no more than a small one.
 * NULL (the comment alone is audited) without an active config or memory. */
static char *audit_detail(const struct cp *cp, const struct config *cfg,
                          const struct audit_note *note, const char *comment)
{
    struct config_diff *own = NULL;
    const struct config_diff *d = note->diff;
    if (d == NULL && cp->cfg != NULL && note->backend != NULL) {
        struct config a = one_backend_view(cp->cfg, note->backend);
        struct config b = one_backend_view(cfg, note->backend);
        d = own = config_diff_new(&a, &b, NULL);
    } else if (d == NULL && cp->cfg != NULL) {
        d = own = config_diff_new(cp->cfg, cfg, NULL);
    }
    char *text = d ? config_diff_text(d) : NULL;
    size_t n_changes = d ? d->n : 0;
    config_diff_free(own);
    if (text == NULL)
        return NULL;
    size_t clen = comment ? strlen(comment) : 0;
    size_t size = CP_AUDIT_CHANGES_MAX + clen + 64;
    char *out = malloc(size);
    size_t off = 0;
    for (const char *line = text; out != NULL && *line != '\0';) {
        size_t len = strcspn(line, "\n");
        if (off + len + 2 > CP_AUDIT_CHANGES_MAX) {
            off += (size_t)snprintf(out + off, size - off, "%s... (%zu changes in all)",
                                    off ? "; " : "", n_changes);
            break;
        }
        off += (size_t)snprintf(out + off, size - off, "%s%.*s", off ? "; " : "", (int)len, line);
        line += len + (line[len] == '\n');
    }
    free(text);
    if (out != NULL && off == 0)
        off += (size_t)snprintf(out, size, "no change");
    if (out != NULL && clen > 0)
        snprintf(out + off, size - off, " (%s)", comment);
    return out;
}

/* The one path of every mutation. Takes <cfg> (validated). <rollback_to> 0
 * stores <cfg>'s canonical export as a new version audited as <note> says
 * (audit_detail()), else copies version <rollback_to> (whose content <cfg>
 * was parsed from), audited "rollback". */
static int commit(struct cp *cp, struct config *cfg, const struct cp_write *w, const char *base_dir,
                  uint64_t rollback_to, const struct audit_note *note, uint64_t *version,
                  struct lb_err *err)
{
    struct staged s;
    char *yaml = NULL;
    char hash[65];
    uint64_t number = 0, gen = 0;
    int rc = stage(cp, cfg, base_dir, &s, err);
    if (rc != LB_OK) {
        config_free(cfg);
        return rc;
    }
    size_t ylen = 0;
    yaml = config_export_yaml(cfg, &ylen, err);
    rc = yaml == NULL ? LB_ENOMEM : config_hash_yaml(yaml, ylen, hash, err);
    if (rc == LB_OK && rollback_to == 0) {
        char *detail = audit_detail(cp, cfg, note, w->comment);
        const struct store_put p = {.content = yaml,
                                    .hash = hash,
                                    .author = w->author,
                                    .comment = w->comment,
                                    .action = note->action,
                                    .detail = detail};
        rc = store_version_put_audited(cp->store, &p, &number, &gen, err);
        free(detail);
    } else if (rc == LB_OK) {
        rc = store_rollback_gen(cp->store, rollback_to, w->author, w->comment, &number, &gen, err);
    }
    free(yaml);
    if (rc != LB_OK) {
        staged_free(&s);
        config_free(cfg);
        return rc;
    }
    set_active(cp, cfg, hash, number);
    go_live(cp, &s, gen, base_dir);
    if (version != NULL)
        *version = number;
    return LB_OK;
}

/* Completes an edited copy (derived fields: host, port, default id) and
 * checks every rule on it directly; messages name the path. Takes <edited>. */
static int normalise(struct cp *cp, struct config *edited, struct config **out, struct lb_err *err)
{
    int rc = config_normalize(edited, cp->config_dir, err);
    if (rc != LB_OK) {
        config_free(edited);
        return rc;
    }
    *out = edited;
    return LB_OK;
}

/* A backend write staged on canaries: the edited config, as JSON, goes to
 * the guard's stage() (a staged rollout as `config apply --canary` starts). */
static int commit_canary(struct cp *cp, struct config *cfg, const struct cp_write *w,
                         uint64_t *version, struct lb_err *err)
{
    if (cp->guard == NULL) {
        config_free(cfg);
        return lb_err_set(err, LB_EINVAL, 0, "this control plane stages no write on canaries");
    }
    char *json = config_export_json(cfg, err);
    config_free(cfg);
    if (json == NULL)
        return err->code ? err->code : LB_ENOMEM;
    int rc = cp->guard->stage(cp->guard_ctx, json, strlen(json), w->canary, w, version, err);
    free(json);
    return rc;
}

/* Commits <edited> (taken: an edited copy of the active config) once
 * normalised, audited as <note> says; staged when <w> says so. */
static int commit_edit(struct cp *cp, struct config *edited, const struct cp_write *w,
                       const struct audit_note *note, uint64_t *version, struct lb_err *err)
{
    struct config *cfg = NULL;
    int rc = normalise(cp, edited, &cfg, err);
    if (rc != LB_OK)
        return rc;
    if (w->canary != NULL)
        return commit_canary(cp, cfg, w, version, err);
    return commit(cp, cfg, w, cp->config_dir, 0, note, version, err);
}

/* The start of a write to backend <id>: If-Match, then its index in
 * cp_config() in *<index>. */
static int find_for_write(const struct cp *cp, const char *id, const struct cp_write *w, int *index,
                          struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK)
        return rc;
    if ((*index = cp_backend_find(cp, id)) < 0)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no backend has id \"%s\"", id ? id : "");
    return LB_OK;
}

/* ---- start and stop ------------------------------------------------------ */

static int load_active(struct cp *cp, struct lb_err *err)
{
    uint64_t active = 0;
    int rc = store_active_version(cp->store, &active, err);
    if (rc != LB_OK)
        return rc;
    struct store_version *v = NULL;
    if ((rc = store_version_get(cp->store, active, &v, err)) != LB_OK)
        return rc;
    char name[48];
    snprintf(name, sizeof(name), "version %llu", (unsigned long long)active);
    struct config *cfg = NULL;
    rc = config_parse_yaml(v->content, strlen(v->content), name, cp->config_dir, &cfg, err);
    store_version_free(v);
    if (rc != LB_OK)
        return rc;
    char hash[65];
    if ((rc = config_hash(cfg, hash, err)) != LB_OK) {
        config_free(cfg);
        return rc;
    }
    /* A snapshot that cannot be built now (a name that stopped resolving, a
     * missing certificate) must not keep the admin API down: start without
     * one so that the next write, or fixing the files, repairs it. */
    set_active(cp, cfg, hash, active);
    struct lb_err e = {0};
    if (publish_active(cp, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "snapshot_failed",
               "active version %llu loaded but not published: %s; fix it through the admin API",
               (unsigned long long)active, e.msg);
        cp__tls_install(cp, NULL, cp->config_dir);
    }
    return LB_OK;
}

static int bootstrap(struct cp *cp, const char *path, struct lb_err *err)
{
    char *dir = dir_of(path);
    if (dir == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    struct config *cfg = NULL;
    int rc = config_load_yaml(path, dir, &cfg, err);
    if (rc == LB_OK) {
        char comment[PATH_MAX + 32];
        snprintf(comment, sizeof(comment), "bootstrap from %s", path);
        struct cp_write w = {.author = "bootstrap", .comment = comment};
        const struct audit_note note = {.action = "config.put"};
        rc = commit(cp, cfg, &w, dir, 0, &note, NULL, err);
    }
    free(dir);
    if (rc == LB_OK)
        lb_log(LB_LOG_INFO, "bootstrap", "imported %s as version %llu", path,
               (unsigned long long)cp->version);
    return rc;
}

struct cp *cp_new(struct ev_loop *loop, const struct cp_config *cfg, struct lb_err *err)
{
    if (cfg == NULL || cfg->db_path == NULL || cfg->control_base == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "cp: db path and control base are required");
        return NULL;
    }
    struct cp *cp = mem_zalloc(sizeof(*cp), NULL, err);
    if (cp == NULL)
        return NULL;
    cp->loop = loop;
    if (cfg->config_dir != NULL)
        cp->config_dir = strdup(cfg->config_dir);
    else if (cfg->bootstrap != NULL)
        cp->config_dir = dir_of(cfg->bootstrap);
    else
        cp->config_dir = getcwd(NULL, 0);
    if (cp->config_dir == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto fail;
    }
    ev_init(&cp->health_pub, cp__on_health_pub);
    cp->health_pub.data = cp;
    ev_timer_init(&cp->weights_timer, cp__on_weights_timer, CP_WEIGHTS_STEP_S, CP_WEIGHTS_STEP_S);
    cp->weights_timer.data = cp;
    if ((cp->reports = reports_new()) == NULL || (cp->history = history_new()) == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto fail;
    }
    if ((cp->health = health_new(loop, cp__on_health, cp, err)) == NULL)
        goto fail;
    if ((cp->certwatch = certwatch_new(loop, 0, 0, cp_on_certs, cp, err)) == NULL)
        goto fail;
    if ((cp->store = store_open(cfg->db_path, err)) == NULL)
        goto fail;
    struct publisher_config pc = {.base = cfg->control_base,
                                  .republish_s = cfg->republish_s,
                                  .keys = cfg->feed_keys,
                                  .insecure = cfg->feed_insecure,
                                  .nodes = cfg->feed_nodes};
    if ((cp->pub = publisher_new(loop, &pc, cp_on_report, cp, err)) == NULL)
        goto fail;
    /* before the active config is served: a staged rollout the store holds
     * (the guard) names its canaries in that snapshot */
    if (cfg->attach != NULL && cfg->attach(cp, loop, err) != LB_OK)
        goto fail;
    struct lb_err e = {0};
    int rc = load_active(cp, &e);
    if (rc == LB_ENOTFOUND && cfg->bootstrap != NULL) {
        if (bootstrap(cp, cfg->bootstrap, err) != LB_OK)
            goto fail;
    } else if (rc == LB_ENOTFOUND) {
        lb_log(LB_LOG_WARN, "no_config",
               "the store %s holds no config version and no --bootstrap was given: data planes "
               "get no snapshot until a config is applied (lbctl apply)",
               cfg->db_path);
    } else if (rc != LB_OK) {
        *err = e;
        goto fail;
    }
    ev_timer_start(loop, &cp->weights_timer);
    return cp;
fail:
    cp_free(cp);
    return NULL;
}

void cp_free(struct cp *cp)
{
    if (cp == NULL)
        return;
    if (cp->guard != NULL)
        cp->guard->free(cp->guard_ctx);
    ev_timer_stop(cp->loop, &cp->health_pub);
    ev_timer_stop(cp->loop, &cp->weights_timer);
    reports_free(cp->reports);
    history_free(cp->history);
    cp__dyn_clear(cp);
    if (cp->store != NULL)
        cp__health_flush(cp);
    free(cp->pending);
    health_free(cp->health);
    certwatch_free(cp->certwatch);
    tlscheck_bundle_free(cp->tls);
    free(cp->tls_base);
    publisher_free(cp->pub);
    store_close(cp->store);
    config_free(cp->cfg);
    free(cp->snap);
    free(cp->config_dir);
    free(cp);
}

/* ---- reads ------------------------------------------------------------------ */

uint64_t cp_active_version(const struct cp *cp)
{
    return cp->version;
}

uint64_t cp_generation(const struct cp *cp)
{
    return cp->generation;
}

const struct config *cp_config(const struct cp *cp)
{
    return cp->cfg;
}

const char *cp_config_hash(const struct cp *cp)
{
    return cp->hash;
}

int cp_snapshot(const struct cp *cp, const uint8_t **buf, size_t *len)
{
    if (cp->snap == NULL)
        return LB_ENOTFOUND;
    *buf = cp->snap;
    *len = cp->snap_len;
    return LB_OK;
}

struct publisher *cp_publisher(const struct cp *cp)
{
    return cp->pub;
}

struct store *cp__store(struct cp *cp)
{
    return cp->store;
}

int cp_backend_find(const struct cp *cp, const char *id)
{
    for (size_t i = 0; cp->cfg != NULL && id != NULL && i < cp->cfg->n_backends; i++)
        if (strcmp(cp->cfg->backends[i].id, id) == 0)
            return (int)i;
    return -1;
}

int cp_versions_total(struct cp *cp, uint64_t *n, struct lb_err *err)
{
    struct store_version *vs = NULL;
    size_t count = 0;
    /* Numbers start at 1 and are never reused: the newest is the count. */
    int rc = store_versions_list(cp->store, 1, &vs, &count, err);
    if (rc == LB_OK)
        *n = count ? vs[0].number : 0;
    store_versions_free(vs, count);
    return rc;
}

int cp_versions_list(struct cp *cp, size_t limit, struct store_version **out, size_t *n,
                     struct lb_err *err)
{
    return store_versions_list(cp->store, limit, out, n, err);
}

int cp_version_get(struct cp *cp, uint64_t number, struct store_version **out, struct lb_err *err)
{
    return store_version_get(cp->store, number, out, err);
}

int cp_dataplanes(struct cp *cp, struct store_dataplane **out, size_t *n, struct lb_err *err)
{
    return store_dataplanes_list(cp->store, out, n, err);
}

int cp_audit_query(struct cp *cp, const struct store_audit_filter *f, struct store_audit **out,
                   size_t *n, struct lb_err *err)
{
    return store_audit_query(cp->store, f, out, n, err);
}

void cp_audit_note(struct cp *cp, const char *who, const char *action, const char *detail)
{
    struct lb_err err = {0};
    if (store_audit_add(cp->store, who, action, detail, cp->version, cp->version, &err) != LB_OK)
        lb_log(LB_LOG_ERROR, "audit_failed", "%s: %s", detail, err.msg);
}

int cp_health_get(struct cp *cp, const char *id, struct store_backend_health **out,
                  struct lb_err *err)
{
    struct health_status st;
    if (health_status_get(cp->health, id, &st) != LB_OK)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no backend has id \"%s\"", id ? id : "");
    struct store_backend_health *h = calloc(1, sizeof(*h));
    if (h != NULL) {
        h->id = strdup(id);
        h->last_error = strdup(st.last_error);
    }
    if (h == NULL || h->id == NULL || h->last_error == NULL) {
        store_health_free(h);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    h->health = st.state;
    h->last_check_unix_ms = st.last_check_unix_ms;
    *out = h;
    return LB_OK;
}

struct health *cp_health(const struct cp *cp)
{
    return cp->health;
}

struct history *cp_history(const struct cp *cp)
{
    return cp->history;
}

static int parse_version(struct cp *cp, uint64_t number, struct config **out, struct lb_err *err)
{
    struct store_version *v = NULL;
    int rc = store_version_get(cp->store, number, &v, err);
    if (rc != LB_OK)
        return rc;
    char name[48];
    snprintf(name, sizeof(name), "version %llu", (unsigned long long)number);
    rc = config_parse_yaml(v->content, strlen(v->content), name, cp->config_dir, out, err);
    store_version_free(v);
    return rc;
}

int cp_diff(struct cp *cp, uint64_t from, uint64_t to, struct config_diff **out, struct lb_err *err)
{
    struct config *a = NULL, *b = NULL;
    int rc = parse_version(cp, from, &a, err);
    if (rc == LB_OK)
        rc = parse_version(cp, to, &b, err);
    if (rc == LB_OK && (*out = config_diff_new(a, b, err)) == NULL)
        rc = LB_ENOMEM;
    config_free(a);
    config_free(b);
    return rc;
}

/* ---- mutations ------------------------------------------------------------- */

int cp_apply(struct cp *cp, const char *text, size_t len, enum cp_format fmt,
             const struct cp_write *w, uint64_t *version, bool *unchanged,
             struct config_diff **diff, struct lb_err *err)
{
    *unchanged = false;
    if (diff != NULL)
        *diff = NULL;
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK)
        return rc;
    struct config *cfg = NULL;
    /* The ssl files are checked here so that a bad one is refused with the
     * line of its key; stored versions are parsed without these checks. */
    rc = config_parse_checked(text, len, fmt == CP_FORMAT_JSON, "config.yaml", cp->config_dir,
                              cp__now_ms(), &cfg, err);
    if (rc != LB_OK)
        return rc;
    char hash[65];
    if (cp->cfg != NULL && (rc = config_hash(cfg, hash, err)) != LB_OK) {
        config_free(cfg);
        return rc;
    }
    if (cp->cfg != NULL && strcmp(hash, cp->hash) == 0) {
        config_free(cfg);
        *unchanged = true;
        *version = cp->version;
        return LB_OK;
    }
    struct config_diff *d = NULL;
    if (diff != NULL && cp->cfg != NULL && (d = config_diff_new(cp->cfg, cfg, err)) == NULL) {
        config_free(cfg);
        return LB_ENOMEM;
    }
    if (diff != NULL && cp->cfg == NULL) {
        struct config *empty = config_new_default();
        if (empty == NULL || (d = config_diff_new(empty, cfg, err)) == NULL) {
            config_free(empty);
            config_free(cfg);
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        }
        config_free(empty);
    }
    /* The changes the caller asked for are the audit's too. */
    const struct audit_note note = {.action = "config.put", .diff = d};
    rc = commit(cp, cfg, w, cp->config_dir, 0, &note, version, err);
    if (rc != LB_OK) {
        config_diff_free(d);
        return rc;
    }
    if (diff != NULL)
        *diff = d;
    return LB_OK;
}

static int need_config(const struct cp *cp, struct lb_err *err)
{
    if (cp->cfg == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "no config is active yet; apply one first");
    return LB_OK;
}

static int set_str(char **dst, const char *src, struct lb_err *err)
{
    char *d = strdup(src);
    if (d == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    free(*dst);
    *dst = d;
    return LB_OK;
}

int cp_backend_add(struct cp *cp, const struct cp_backend_change *chg, const struct cp_write *w,
                   uint64_t *version, int *index, struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK || (rc = need_config(cp, err)) != LB_OK)
        return rc;
    if (chg->url == NULL || chg->url[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "a backend needs a url");
    for (size_t i = 0; i < cp->cfg->n_backends; i++) {
        const struct config_backend *b = &cp->cfg->backends[i];
        if (chg->id != NULL && strcmp(b->id, chg->id) == 0)
            return lb_err_set(err, LB_ECONFLICT, 0, "backend id \"%s\" is already used", chg->id);
        if (strcmp(b->url, chg->url) == 0)
            return lb_err_set(err, LB_ECONFLICT, 0, "backend %s already has url %s", b->id,
                              chg->url);
    }
    struct config *ed = config_dup(cp->cfg);
    struct config_backend *nb =
        ed ? realloc(ed->backends, (ed->n_backends + 1) * sizeof(*nb)) : NULL;
    if (nb == NULL) {
        config_free(ed);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    ed->backends = nb;
    struct config_backend *b = &nb[ed->n_backends];
    memset(b, 0, sizeof(*b));
    ed->n_backends++;
    b->weight = chg->has_weight ? chg->weight : 1;
    b->state = chg->has_state ? chg->state : CONFIG_BACKEND_ACTIVE;
    b->max_connections = chg->has_max_connections ? chg->max_connections : 0;
    b->max_queue = chg->has_max_queue ? chg->max_queue : CONFIG_DEFAULT_MAX_QUEUE;
    b->send_proxy = chg->has_send_proxy ? chg->send_proxy : CONFIG_SEND_PROXY_OFF;
    if (set_str(&b->url, chg->url, err) != LB_OK || set_str(&b->host, "", err) != LB_OK ||
        set_str(&b->id, chg->id ? chg->id : "", err) != LB_OK ||
        set_str(&b->ca_file, chg->ca_file ? chg->ca_file : "", err) != LB_OK ||
        set_str(&b->sni, chg->sni ? chg->sni : "", err) != LB_OK) {
        config_free(ed);
        return LB_ENOMEM;
    }
    struct config *cfg = NULL;
    if ((rc = normalise(cp, ed, &cfg, err)) != LB_OK)
        return rc;
    const char *new_id = cfg->backends[cfg->n_backends - 1].id;
    if (cp_backend_find(cp, new_id) >= 0) {
        lb_err_set(err, LB_ECONFLICT, 0, "backend id \"%s\" is already used", new_id);
        config_free(cfg);
        return LB_ECONFLICT;
    }
    size_t n = cfg->n_backends;
    const struct audit_note note = {.action = "backend.add", .backend = new_id};
    if (w->canary != NULL)
        rc = commit_canary(cp, cfg, w, version, err);
    else
        rc = commit(cp, cfg, w, cp->config_dir, 0, &note, version, err);
    if (rc != LB_OK)
        return rc;
    if (index != NULL)
        *index = (int)n - 1;
    return LB_OK;
}

/* cp_backend_update(), audited as <action>. */
static int backend_update(struct cp *cp, const char *id, const struct cp_backend_change *chg,
                          const struct cp_write *w, const char *action, uint64_t *version,
                          struct lb_err *err)
{
    int i;
    int rc = find_for_write(cp, id, w, &i, err);
    if (rc != LB_OK)
        return rc;
    if (chg->url != NULL) {
        for (size_t j = 0; j < cp->cfg->n_backends; j++)
            if ((int)j != i && strcmp(cp->cfg->backends[j].url, chg->url) == 0)
                return lb_err_set(err, LB_ECONFLICT, 0, "backend %s already has url %s",
                                  cp->cfg->backends[j].id, chg->url);
    }
    struct config *ed = config_dup(cp->cfg);
    if (ed == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    struct config_backend *b = &ed->backends[i];
    if (chg->has_weight)
        b->weight = chg->weight;
    if (chg->has_state)
        b->state = chg->state;
    if (chg->has_max_connections)
        b->max_connections = chg->max_connections;
    if (chg->has_max_queue)
        b->max_queue = chg->max_queue;
    if (chg->has_send_proxy)
        b->send_proxy = chg->send_proxy;
    if ((chg->url != NULL && set_str(&b->url, chg->url, err) != LB_OK) ||
        (chg->ca_file != NULL && set_str(&b->ca_file, chg->ca_file, err) != LB_OK) ||
        (chg->sni != NULL && set_str(&b->sni, chg->sni, err) != LB_OK)) {
        config_free(ed);
        return LB_ENOMEM;
    }
    const struct audit_note note = {.action = action, .backend = id};
    return commit_edit(cp, ed, w, &note, version, err);
}

int cp_backend_update(struct cp *cp, const char *id, const struct cp_backend_change *chg,
                      const struct cp_write *w, uint64_t *version, struct lb_err *err)
{
    return backend_update(cp, id, chg, w, "backend.update", version, err);
}

int cp_backend_remove(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                      struct lb_err *err)
{
    int i;
    int rc = find_for_write(cp, id, w, &i, err);
    if (rc != LB_OK)
        return rc;
    if (cp->cfg->n_backends == 1)
        return lb_err_set(err, LB_EINVAL, 0,
                          "backend %s is the last one; a config needs at least one backend", id);
    struct config *ed = config_dup(cp->cfg);
    if (ed == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    struct config_backend gone = ed->backends[i];
    memmove(&ed->backends[i], &ed->backends[i + 1],
            (ed->n_backends - (size_t)i - 1) * sizeof(gone));
    ed->n_backends--;
    free(gone.id);
    free(gone.url);
    free(gone.host);
    free(gone.ca_file);
    free(gone.sni);
    const struct audit_note note = {.action = "backend.remove", .backend = id};
    return commit_edit(cp, ed, w, &note, version, err);
}

int cp_backend_drain(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                     struct lb_err *err)
{
    struct cp_backend_change chg = {.has_state = true, .state = CONFIG_BACKEND_DRAINING};
    return backend_update(cp, id, &chg, w, "backend.drain", version, err);
}

int cp_rollback(struct cp *cp, uint64_t target, const struct cp_write *w, uint64_t *version,
                struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK)
        return rc;
    struct config *cfg = NULL;
    if ((rc = parse_version(cp, target, &cfg, err)) != LB_OK)
        return rc;
    const struct audit_note note = {.action = "rollback"};
    return commit(cp, cfg, w, cp->config_dir, target, &note, version, err);
}

/* ---- the guard (cp_guard.h) and what it drives ---------------------------------- */

int cp_guard_set(struct cp *cp, const struct cp_guard_ops *ops, void *ctx, struct lb_err *err)
{
    if (cp->guard != NULL)
        return lb_err_set(err, LB_ECONFLICT, 0, "the control plane has a guard already");
    cp->guard = ops;
    cp->guard_ctx = ctx;
    return LB_OK;
}

void *cp_guard_ctx(const struct cp *cp, const struct cp_guard_ops *ops)
{
    return cp->guard != NULL && cp->guard == ops ? cp->guard_ctx : NULL;
}

int cp_canary_hold_version(struct cp *cp, uint64_t version, const char *const *nodes, size_t n,
                           void (*on_config)(void *ctx, const struct config *cfg), void *ctx,
                           struct lb_err *err)
{
    struct config *cfg = NULL;
    int rc = parse_version(cp, version, &cfg, err);
    if (rc != LB_OK)
        return rc;
    if (on_config != NULL)
        on_config(ctx, cfg);
    struct staged s;
    rc = stage(cp, cfg, cp->config_dir, &s, err);
    config_free(cfg);
    if (rc != LB_OK)
        return rc;
    /* re-encoded to the protobuf-c allocator's form cp__hold() frees */
    size_t len = lb__v1__snapshot__pack(s.snap, s.buf);
    Lb__V1__Snapshot *copy = lb__v1__snapshot__unpack(NULL, len, s.buf);
    staged_free(&s);
    if (copy == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "cannot re-read the held snapshot");
    return cp__hold(cp, copy, version, nodes, n, err);
}

const struct reports *cp_reports(const struct cp *cp)
{
    return cp->reports;
}

static void backend_clear(struct config_backend *b)
{
    free(b->id);
    free(b->url);
    free(b->host);
    free(b->ca_file);
    free(b->sni);
}

/* Appends <chg> (id required) to <ed>'s backends as cp_backend_add() does. */
static int append_backend(struct config *ed, const struct cp_backend_change *chg,
                          struct lb_err *err)
{
    struct config_backend *nb = realloc(ed->backends, (ed->n_backends + 1) * sizeof(*nb));
    if (nb == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    ed->backends = nb;
    struct config_backend *b = &nb[ed->n_backends++];
    memset(b, 0, sizeof(*b));
    b->weight = chg->has_weight ? chg->weight : 1;
    b->state = chg->has_state ? chg->state : CONFIG_BACKEND_ACTIVE;
    b->max_connections = chg->has_max_connections ? chg->max_connections : 0;
    b->max_queue = chg->has_max_queue ? chg->max_queue : CONFIG_DEFAULT_MAX_QUEUE;
    b->send_proxy = chg->has_send_proxy ? chg->send_proxy : CONFIG_SEND_PROXY_OFF;
    if (set_str(&b->url, chg->url ? chg->url : "", err) != LB_OK ||
        set_str(&b->host, "", err) != LB_OK ||
        set_str(&b->id, chg->id ? chg->id : "", err) != LB_OK ||
        set_str(&b->ca_file, chg->ca_file ? chg->ca_file : "", err) != LB_OK ||
        set_str(&b->sni, chg->sni ? chg->sni : "", err) != LB_OK)
        return LB_ENOMEM;
    return LB_OK;
}

int cp_backends_replace(struct cp *cp, const struct cp_replace *rp, const struct cp_write *w,
                        const char *action, uint64_t *version, struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK || (rc = need_config(cp, err)) != LB_OK)
        return rc;
    for (size_t i = 0; i < rp->n_remove + rp->n_activate; i++) {
        const char *id = i < rp->n_remove ? rp->remove[i] : rp->activate[i - rp->n_remove];
        if (cp_backend_find(cp, id) < 0)
            return lb_err_set(err, LB_ENOTFOUND, 0, "no backend has id \"%s\"", id ? id : "");
    }
    for (size_t i = 0; i < rp->n_add; i++) {
        const struct cp_backend_change *a = &rp->add[i];
        if (a->url == NULL || a->url[0] == '\0')
            return lb_err_set(err, LB_EINVAL, 0, "a backend needs a url");
        for (size_t j = 0; j < cp->cfg->n_backends; j++) {
            const struct config_backend *b = &cp->cfg->backends[j];
            if ((a->id != NULL && strcmp(b->id, a->id) == 0) || strcmp(b->url, a->url) == 0)
                return lb_err_set(err, LB_ECONFLICT, 0, "backend %s already has id %s or url %s",
                                  b->id, a->id ? a->id : "", a->url);
        }
    }
    if (cp->cfg->n_backends + rp->n_add <= rp->n_remove)
        return lb_err_set(err, LB_EINVAL, 0, "a config needs at least one backend");
    struct config *ed = config_dup(cp->cfg);
    if (ed == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    for (size_t j = 0; j < ed->n_backends; j++) {
        for (size_t i = 0; i < rp->n_activate; i++)
            if (strcmp(ed->backends[j].id, rp->activate[i]) == 0)
                ed->backends[j].state = CONFIG_BACKEND_ACTIVE;
    }
    for (size_t i = 0; i < rp->n_remove; i++) {
        for (size_t j = 0; j < ed->n_backends; j++) {
            if (strcmp(ed->backends[j].id, rp->remove[i]) != 0)
                continue;
            backend_clear(&ed->backends[j]);
            memmove(&ed->backends[j], &ed->backends[j + 1],
                    (ed->n_backends - j - 1) * sizeof(ed->backends[j]));
            ed->n_backends--;
            break;
        }
    }
    for (size_t i = 0; i < rp->n_add; i++) {
        if ((rc = append_backend(ed, &rp->add[i], err)) != LB_OK) {
            config_free(ed);
            return rc;
        }
    }
    const struct audit_note note = {.action = action ? action : "config.put"};
    return commit_edit(cp, ed, w, &note, version, err);
}
