/* controlplane/cp.c: the control plane's core (see cp.h). */
#include "cp.h"

#include "certwatch.h"
#include "health.h"
#include "lb_err.h"
#include "lb_log.h"
#include "publisher.h"
#include "reports.h"
#include "snapbuild.h"
#include "tlscheck.h"

#include <arpa/inet.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct cp {
    struct ev_loop *loop;  /* the control plane's loop */
    struct store *store;   /* owned */
    struct publisher *pub; /* owned */
    char *config_dir;      /* base of relative TLS paths for applies and stored versions */
    uint64_t version;      /* active version, 0 = none */
    uint64_t generation;   /* generation of <snap>, 0 = none */
    struct config *cfg;    /* parsed active version, NULL = none */
    char hash[65];         /* config_hash(cfg), "" = none */
    uint8_t *snap;         /* encoded snapshot being served, NULL = none */
    size_t snap_len;
    struct health *health; /* owned: active checks of cfg's backends */
    ev_timer health_pub;   /* armed by a health change: one new generation per loop turn */
    struct cp_health_change *pending; /* changes not yet stored, <n_pending> of <cap_pending> */
    size_t n_pending, cap_pending;
    struct certwatch *certwatch; /* owned: the files of cfg's ssl section */
    struct tlscheck_bundle *tls; /* validated files being served, NULL = none */
    char *tls_base;              /* base directory of cfg's relative ssl paths */
    struct cp_tls_status tls_st; /* counters and last outcomes for the API */
    struct reports *reports;     /* owned: the data planes' latest reports */
    ev_timer weights_timer;      /* every CP_WEIGHTS_STEP_S: one dynamic weights step */
    struct cp_dyn *dyn;          /* dynamic weights differing from the configured ones, */
    size_t n_dyn;                /* sorted by id; empty unless balancing.weights: dynamic */
};

/* A backend's dynamic weight, valid while its configured weight is <configured>. */
struct cp_dyn {
    char *id;
    uint32_t configured;
    uint32_t weight;
};

#define CP_WEIGHTS_STEP_S 10.0

static void cp_on_weights_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* A verdict change waiting for the store (strings owned). */
struct cp_health_change {
    char *id;
    enum store_health health;
    char *error;
    int64_t now_ms;
    char *detail;
};

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

static Lb__V1__Health proto_health(enum store_health h)
{
    return h == STORE_HEALTH_UP     ? LB__V1__HEALTH__HEALTH_UP
           : h == STORE_HEALTH_DOWN ? LB__V1__HEALTH__HEALTH_DOWN
                                    : LB__V1__HEALTH__HEALTH_UNKNOWN;
}

static int dyn_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cp_dyn *)a)->id, ((const struct cp_dyn *)b)->id);
}

/* The weight to publish for <b> under <cfg>: its dynamic weight while
 * balancing.weights is dynamic and its configured weight has not changed
 * since, else the configured weight. */
static uint32_t weight_of(const struct cp *cp, const struct config *cfg,
                          const struct config_backend *b)
{
    if (cfg->balancing.weights != CONFIG_WEIGHTS_DYNAMIC || cp->n_dyn == 0)
        return b->weight;
    struct cp_dyn key = {.id = b->id};
    const struct cp_dyn *d = bsearch(&key, cp->dyn, cp->n_dyn, sizeof(*cp->dyn), dyn_cmp);
    return d != NULL && d->configured == b->weight ? d->weight : b->weight;
}

static void dyn_clear(struct cp *cp)
{
    for (size_t i = 0; i < cp->n_dyn; i++)
        free(cp->dyn[i].id);
    free(cp->dyn);
    cp->dyn = NULL;
    cp->n_dyn = 0;
}

/* Snapshot of <cfg> with the checker's current health (a backend it does not
 * know yet is UNKNOWN) and the dynamic weights; version and generation are
 * set once the store has handed them out. */
static int build_snapshot(struct cp *cp, const struct config *cfg, const char *base_dir,
                          Lb__V1__Snapshot **out, struct lb_err *err)
{
    size_t n = cfg->n_backends;
    struct snapbuild_health *sh = n ? calloc(n, sizeof(*sh)) : NULL;
    if (n && sh == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        sh[i].id = cfg->backends[i].id;
        sh[i].health = proto_health(health_state(cp->health, cfg->backends[i].id));
    }
    struct snapbuild_input in = {
        .cfg = cfg,
        .now_unix_ms = now_unix_ms(),
        .health = sh,
        .n_health = n,
        .base_dir = base_dir,
    };
    int rc = snapbuild_build(&in, out, err);
    free(sh);
    for (size_t i = 0; rc == LB_OK && i < n && i < (*out)->n_backends; i++)
        (*out)->backends[i]->weight = weight_of(cp, cfg, &cfg->backends[i]);
    return rc;
}

/* Reserves a buffer large enough for <snap> with any version and generation,
 * so that nothing can fail between the store write and the publish. */
static int reserve_encoding(Lb__V1__Snapshot *snap, uint8_t **buf, struct lb_err *err)
{
    snap->config_version = UINT64_MAX;
    snap->generation = UINT64_MAX;
    size_t max = lb__v1__snapshot__get_packed_size(snap);
    if (max > PUBLISHER_MAX_MSG - 64)
        return lb_err_set(err, LB_EINVAL, 0, "the snapshot would be %zu bytes, over the limit",
                          max);
    *buf = malloc(max ? max : 1);
    if (*buf == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    return LB_OK;
}

/* Makes <buf> (generation <generation>) the snapshot served and publishes
 * it. Takes <buf>; NULL leaves no snapshot. */
static void serve(struct cp *cp, uint64_t generation, uint8_t *buf, size_t len)
{
    uint64_t version = cp->version;
    free(cp->snap);
    cp->snap = buf;
    cp->snap_len = len;
    if (buf == NULL)
        return;
    cp->generation = generation;
    struct lb_err e = {0};
    if (publisher_set_snapshot(cp->pub, buf, len, generation, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "publish_failed", "version %llu generation %llu: %s",
               (unsigned long long)version, (unsigned long long)generation, e.msg);
    else
        lb_log(LB_LOG_INFO, "published", "version %llu generation %llu (%zu bytes)",
               (unsigned long long)version, (unsigned long long)generation, len);
}

/* Makes (<cfg>, <version>, <generation>, <buf>) current and publishes it.
 * Takes <cfg> and <buf>. */
static void install(struct cp *cp, struct config *cfg, const char *hash, uint64_t version,
                    uint64_t generation, uint8_t *buf, size_t len)
{
    config_free(cp->cfg);
    cp->cfg = cfg;
    snprintf(cp->hash, sizeof(cp->hash), "%s", hash);
    cp->version = version;
    serve(cp, generation, buf, len);
}

/* Points the checker at the backends of the active config, at the addresses
 * <snap> resolved (backends in the config's order), so that no check ever
 * calls the resolver. A failure keeps the previous targets and is logged. */
static void health_resync(struct cp *cp, const Lb__V1__Snapshot *snap)
{
    const struct config *cfg = cp->cfg;
    size_t n = cfg->n_backends;
    struct health_target *t = calloc(n ? n : 1, sizeof(*t));
    char(*hosts)[300] = calloc(n ? n : 1, sizeof(*hosts));
    struct lb_err e = {0};
    if (t == NULL || hosts == NULL || snap->n_backends != n) {
        lb_err_set(&e, LB_ENOMEM, 0, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            const struct config_backend *b = &cfg->backends[i];
            bool v6 = strchr(b->host, ':') != NULL;
            snprintf(hosts[i], sizeof(hosts[i]), "%s%s%s:%u", v6 ? "[" : "", b->host, v6 ? "]" : "",
                     b->port);
            t[i] = (struct health_target){
                .id = b->id,
                .addr = snap->backends[i]->host,
                .port = (uint16_t)b->port,
                .host_header = hosts[i],
                .tcp_only = b->https,
                .disabled = b->state == CONFIG_BACKEND_DISABLED,
            };
        }
        const struct config_healthcheck *hc = &cfg->healthcheck;
        struct health_settings s = {
            .interval_ms = hc->interval_ms,
            .timeout_ms = hc->timeout_ms,
            .rise = hc->rise,
            .fall = hc->fall,
            .type = hc->type,
            .expected_status = hc->expected_status,
            .path = hc->path,
            .host = hc->host,
        };
        health_sync(cp->health, &s, t, n, &e);
    }
    if (e.code != LB_OK)
        lb_log(LB_LOG_ERROR, "health_sync_failed", "version %llu: %s",
               (unsigned long long)cp->version, e.msg);
    free(t);
    free(hosts);
}

/* A health change: the served snapshot with every backend's current health,
 * as a new generation of the same config version (health is runtime state).
 * Patching the encoded snapshot avoids resolving names and reading TLS files
 * again. */
static void health_publish(struct cp *cp)
{
    if (cp->snap == NULL)
        return;
    struct lb_err e = {0};
    uint64_t gen = 0;
    uint8_t *buf = NULL;
    Lb__V1__Snapshot *snap = lb__v1__snapshot__unpack(NULL, cp->snap_len, cp->snap);
    if (snap == NULL) {
        lb_log(LB_LOG_ERROR, "health_publish_failed", "cannot decode the served snapshot");
        return;
    }
    for (size_t i = 0; i < snap->n_backends; i++)
        snap->backends[i]->health = proto_health(health_state(cp->health, snap->backends[i]->id));
    /* The served snapshot lists the config's backends in order. */
    for (size_t i = 0; cp->cfg != NULL && i < snap->n_backends && i < cp->cfg->n_backends; i++)
        snap->backends[i]->weight = weight_of(cp, cp->cfg, &cp->cfg->backends[i]);
    snap->created_unix_ms = now_unix_ms();
    if (reserve_encoding(snap, &buf, &e) != LB_OK ||
        store_generation_bump(cp->store, &gen, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "health_publish_failed", "%s", e.msg);
        free(buf);
        lb__v1__snapshot__free_unpacked(snap, NULL);
        return;
    }
    snap->config_version = cp->version;
    snap->generation = gen;
    size_t len = lb__v1__snapshot__pack(snap, buf);
    lb__v1__snapshot__free_unpacked(snap, NULL);
    serve(cp, gen, buf, len);
}

/* Stores the pending changes with their audit rows in one transaction. */
static void health_flush(struct cp *cp)
{
    if (cp->n_pending == 0)
        return;
    struct store_health_change *c = calloc(cp->n_pending, sizeof(*c));
    struct lb_err e = {0};
    if (c == NULL) {
        lb_err_set(&e, LB_ENOMEM, 0, "out of memory");
    } else {
        for (size_t i = 0; i < cp->n_pending; i++)
            c[i] = (struct store_health_change){
                .id = cp->pending[i].id,
                .health = cp->pending[i].health,
                .last_error = cp->pending[i].error,
                .now_ms = cp->pending[i].now_ms,
                .detail = cp->pending[i].detail,
            };
        store_health_changes(cp->store, c, cp->n_pending, "health", &e);
    }
    if (e.code != LB_OK)
        lb_log(LB_LOG_ERROR, "health_store_failed", "%zu health changes not stored: %s",
               cp->n_pending, e.msg);
    free(c);
    for (size_t i = 0; i < cp->n_pending; i++) {
        free(cp->pending[i].id);
        free(cp->pending[i].error);
        free(cp->pending[i].detail);
    }
    cp->n_pending = 0;
}

static void cp_on_health_pub(struct ev_loop *loop, ev_timer *w, int revents)
{
    health_flush(w->data);
    health_publish(w->data);
}

/* Checker callback: a change is persisted, audited, logged and published. */
static void cp_on_health(void *ctx, const struct health_result *r)
{
    struct cp *cp = ctx;
    if (!r->changed)
        return;
    const char *name = r->state == STORE_HEALTH_UP     ? "up"
                       : r->state == STORE_HEALTH_DOWN ? "down"
                                                       : "unknown";
    char detail[256];
    if (r->error[0])
        snprintf(detail, sizeof(detail), "backend %s %s: %s", r->id, name, r->error);
    else
        snprintf(detail, sizeof(detail), "backend %s %s", r->id, name);
    lb_log(r->state == STORE_HEALTH_DOWN ? LB_LOG_WARN : LB_LOG_INFO, "backend_health", "%s",
           detail);
    if (cp->n_pending == cp->cap_pending) {
        size_t cap = cp->cap_pending ? cp->cap_pending * 2 : 16;
        struct cp_health_change *p = realloc(cp->pending, cap * sizeof(*p));
        if (p != NULL) {
            cp->pending = p;
            cp->cap_pending = cap;
        }
    }
    struct cp_health_change *c =
        cp->n_pending < cp->cap_pending ? &cp->pending[cp->n_pending] : NULL;
    if (c != NULL) {
        c->id = strdup(r->id);
        c->error = strdup(r->error);
        c->detail = strdup(detail);
        c->health = r->state;
        c->now_ms = r->now_unix_ms;
    }
    if (c == NULL || c->id == NULL || c->error == NULL || c->detail == NULL) {
        if (c != NULL) {
            free(c->id);
            free(c->error);
            free(c->detail);
        }
        lb_log(LB_LOG_ERROR, "health_store_failed", "%s: out of memory", detail);
    } else {
        cp->n_pending++;
    }
    /* Changes found in the same loop turn (a switch taking many backends
     * down) share one transaction and one generation. */
    if (!ev_is_active(&cp->health_pub)) {
        ev_timer_set(&cp->health_pub, 0.0, 0.0);
        ev_timer_start(cp->loop, &cp->health_pub);
    }
}

/* ---- TLS files ------------------------------------------------------------ */

static bool has_tls(const struct config *cfg)
{
    for (size_t i = 0; cfg->ssl.present && i < cfg->n_frontends; i++)
        if (cfg->frontends[i].tls)
            return true;
    return false;
}

static bool has_ca_file(const struct config_backend *b)
{
    return b->https && b->ca_file != NULL && b->ca_file[0] != '\0';
}

/* True when <cfg> has TLS files to read: a TLS frontend's ssl section or
 * the caFile of an https:// backend. */
static bool has_tls_files(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (has_ca_file(&cfg->backends[i]))
            return true;
    return has_tls(cfg);
}

/* True when the served bundle was read under <base_dir>. */
static bool same_base(const struct cp *cp, const char *base_dir)
{
    return cp->tls != NULL && cp->tls_base != NULL &&
           strcmp(cp->tls_base, base_dir ? base_dir : "") == 0;
}

/* True when the served bundle holds the files of <cfg>'s ssl section. */
static bool same_ssl(const struct cp *cp, const struct config *cfg, const char *base_dir)
{
    bool same = same_base(cp, base_dir) && cp->cfg != NULL && has_tls(cp->cfg) &&
                strcmp(cp->cfg->ssl.cert_file, cfg->ssl.cert_file) == 0 &&
                strcmp(cp->cfg->ssl.key_file, cfg->ssl.key_file) == 0 &&
                strcmp(cp->cfg->ssl.ca_file, cfg->ssl.ca_file) == 0 &&
                strcmp(cp->cfg->ssl.crl_file, cfg->ssl.crl_file) == 0 &&
                cp->cfg->ssl.n_certificates == cfg->ssl.n_certificates;
    for (size_t i = 0; same && i < cfg->ssl.n_certificates; i++)
        same =
            strcmp(cp->cfg->ssl.certificates[i].cert_file, cfg->ssl.certificates[i].cert_file) ==
                0 &&
            strcmp(cp->cfg->ssl.certificates[i].key_file, cfg->ssl.certificates[i].key_file) == 0;
    return same;
}

static void tls_refused(struct cp *cp, const struct lb_err *e)
{
    lb_log(LB_LOG_ERROR, "tls_files_refused", "%s; the previously validated files keep serving",
           e->msg);
    snprintf(cp->tls_st.last_error, sizeof(cp->tls_st.last_error), "%s", e->msg);
}

/* Reads and validates every TLS file of <cfg> (paths relative to
 * <base_dir>): the ssl section when a frontend has TLS, the caFile of every
 * https:// backend. *<out> receives the bundle (caller owns; NULL when <cfg>
 * has no TLS file). With <keep_served>, a refused file that the served
 * bundle holds under the same name (the same ssl section; the same backend
 * with the same caFile) leaves its served bytes in the bundle, and the
 * refusal is logged and kept for the API; otherwise the first refusal fails
 * with <err> naming the file (and the backend). */
static int tls_load(struct cp *cp, const struct config *cfg, const char *base_dir, bool keep_served,
                    struct tlscheck_bundle **out, struct lb_err *err)
{
    *out = NULL;
    if (!has_tls_files(cfg))
        return LB_OK;
    struct tlscheck_bundle *b = NULL;
    struct lb_err e = {0};
    int rc = tlscheck_bundle_load(has_tls(cfg) ? &cfg->ssl : NULL, base_dir, now_unix_ms(), &b, &e);
    if (rc != LB_OK && keep_served && same_ssl(cp, cfg, base_dir)) {
        tls_refused(cp, &e);
        rc = tlscheck_bundle_copy_ssl(cp->tls, &b, &e);
    }
    for (size_t i = 0; rc == LB_OK && i < cfg->n_backends; i++) {
        const struct config_backend *cb = &cfg->backends[i];
        if (!has_ca_file(cb))
            continue;
        rc = tlscheck_bundle_add_backend_ca(b, cb->id, cb->ca_file, base_dir, &e);
        const struct tlscheck_backend_ca *old = keep_served && same_base(cp, base_dir)
                                                    ? tlscheck_bundle_backend_ca(cp->tls, cb->id)
                                                    : NULL;
        if (rc != LB_OK && old != NULL && strcmp(old->file.name, cb->ca_file) == 0) {
            tls_refused(cp, &e);
            rc = tlscheck_bundle_copy_backend_ca(b, old, &e);
        }
    }
    if (rc != LB_OK) {
        tlscheck_bundle_free(b);
        if (err != NULL)
            *err = e;
        return rc;
    }
    *out = b;
    return LB_OK;
}

/* Makes <snap> (built from <cfg> by reading the files) carry validated bytes:
 * the files as they are when they pass the checks, else the bytes served so
 * far for the same files (tls_load()). *<out> receives the bundle to serve
 * (caller owns; NULL without TLS files). Fails only when nothing valid
 * exists. */
static int tls_adopt(struct cp *cp, const struct config *cfg, const char *base_dir,
                     Lb__V1__Snapshot *snap, struct tlscheck_bundle **out, struct lb_err *err)
{
    int rc = tls_load(cp, cfg, base_dir, true, out, err);
    if (rc != LB_OK || *out == NULL)
        return rc;
    if ((rc = tlscheck_bundle_patch(*out, snap, err)) != LB_OK) {
        tlscheck_bundle_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Appends <name> resolved against <base> to <paths> (room for it). */
static void watch_add(char **paths, size_t *n, const char *base, const char *name)
{
    if (name == NULL || name[0] == '\0')
        return;
    char path[PATH_MAX];
    tlscheck_resolve(base, name, path, sizeof(path));
    paths[*n] = strdup(path);
    if (paths[*n] != NULL)
        (*n)++;
}

/* Every TLS file path of <cfg> (ssl section, backend caFiles), resolved
 * against <base>. */
static void tls_watch(struct cp *cp, const struct config *cfg, const char *base)
{
    const struct config_ssl *ssl = &cfg->ssl;
    size_t n = 0, cap = 4 + 2 * ssl->n_certificates + cfg->n_backends;
    char **paths = calloc(cap, sizeof(*paths));
    if (paths != NULL && has_tls(cfg)) {
        watch_add(paths, &n, base, ssl->cert_file);
        watch_add(paths, &n, base, ssl->key_file);
        watch_add(paths, &n, base, ssl->ca_file);
        watch_add(paths, &n, base, ssl->crl_file);
        for (size_t i = 0; i < ssl->n_certificates; i++) {
            watch_add(paths, &n, base, ssl->certificates[i].cert_file);
            watch_add(paths, &n, base, ssl->certificates[i].key_file);
        }
    }
    for (size_t i = 0; paths != NULL && i < cfg->n_backends; i++)
        if (has_ca_file(&cfg->backends[i]))
            watch_add(paths, &n, base, cfg->backends[i].ca_file);
    struct lb_err e = {0};
    if (paths == NULL || certwatch_set(cp->certwatch, (const char *const *)paths, n, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "certwatch_failed", "certificate files are not watched: %s",
               paths == NULL ? "out of memory" : e.msg);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

/* After <cfg> became active: serve <b> (taken) and watch its files. */
static void tls_install(struct cp *cp, struct tlscheck_bundle *b, const char *base_dir)
{
    tlscheck_bundle_free(cp->tls);
    cp->tls = b;
    free(cp->tls_base);
    cp->tls_base = strdup(base_dir ? base_dir : "");
    for (size_t i = 0; b != NULL && i < b->n_certs; i++)
        if (tlscheck_status_at(&b->certs[i].info, now_unix_ms()) == TLSCHECK_EXPIRING)
            lb_log(LB_LOG_WARN, "tls_cert_expiring", "%s expires in %lld days",
                   b->certs[i].cert->path,
                   (long long)((b->certs[i].info.not_after_ms - now_unix_ms()) / 86400000));
    tls_watch(cp, cp->cfg, cp->tls_base);
}

void cp_tls_status(const struct cp *cp, struct cp_tls_status *out)
{
    *out = cp->tls_st;
    out->bundle = cp->tls;
}

static const char *base_name(const char *name)
{
    return strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
}

/* "cert.pem changed, fingerprint ab.. -> cd..; key.pem changed; ca-api.pem
 * of backend api changed, fingerprint 12.. -> 34.." */
static void describe_reload(const struct tlscheck_bundle *old, const struct tlscheck_bundle *b,
                            char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < b->n_files && off < size; i++) {
        const struct tlscheck_file *f = &b->files[i];
        const struct tlscheck_file *o = tlscheck_bundle_file(old, f->name);
        if (o != NULL && memcmp(o->sha256, f->sha256, 32) == 0)
            continue;
        off += (size_t)snprintf(buf + off, size - off, "%s%s changed", off ? "; " : "",
                                base_name(f->name));
        for (size_t c = 0; c < b->n_certs && off < size; c++)
            if (b->certs[c].cert == f && old != NULL && c < old->n_certs)
                off +=
                    (size_t)snprintf(buf + off, size - off, ", fingerprint %.16s -> %.16s",
                                     old->certs[c].info.fingerprint, b->certs[c].info.fingerprint);
    }
    for (size_t i = 0; i < b->n_backend_cas && off < size; i++) {
        const struct tlscheck_backend_ca *ca = &b->backend_cas[i];
        const struct tlscheck_backend_ca *o = tlscheck_bundle_backend_ca(old, ca->backend);
        if (o != NULL && strcmp(o->file.name, ca->file.name) == 0 &&
            memcmp(o->file.sha256, ca->file.sha256, 32) == 0)
            continue;
        off += (size_t)snprintf(buf + off, size - off, "%s%s of backend %s changed",
                                off ? "; " : "", base_name(ca->file.name), ca->backend);
        if (o != NULL && off < size)
            off += (size_t)snprintf(buf + off, size - off, ", fingerprint %.16s -> %.16s",
                                    o->info.fingerprint, ca->info.fingerprint);
    }
}

/* Builds the snapshot of the active config (cp->cfg, cp->version) and
 * serves it as a new generation, with its TLS files and health targets.
 * On failure nothing changes. */
static int publish_active(struct cp *cp, struct lb_err *err)
{
    Lb__V1__Snapshot *snap = NULL;
    uint8_t *buf = NULL;
    uint64_t gen = 0;
    struct tlscheck_bundle *tls = NULL;
    int rc;
    if ((rc = build_snapshot(cp, cp->cfg, cp->config_dir, &snap, err)) != LB_OK ||
        (rc = tls_adopt(cp, cp->cfg, cp->config_dir, snap, &tls, err)) != LB_OK ||
        (rc = reserve_encoding(snap, &buf, err)) != LB_OK ||
        (rc = store_generation_bump(cp->store, &gen, err)) != LB_OK) {
        snapbuild_free(snap);
        free(buf);
        tlscheck_bundle_free(tls);
        return rc;
    }
    snap->config_version = cp->version;
    snap->generation = gen;
    size_t len = lb__v1__snapshot__pack(snap, buf);
    serve(cp, gen, buf, len);
    tls_install(cp, tls, cp->config_dir);
    health_resync(cp, snap);
    snapbuild_free(snap);
    return LB_OK;
}

/* The active config has no snapshot: its files were broken when the control
 * plane started. Tries again, so that fixing the files is enough. */
static int publish_pending(struct cp *cp, bool *reloaded, struct lb_err *err)
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
    cp->tls_st.reloads++;
    cp->tls_st.last_reload_ms = now_unix_ms();
    cp->tls_st.last_reload_generation = cp->generation;
    snprintf(cp->tls_st.last_reload, sizeof(cp->tls_st.last_reload),
             "files fixed: version %llu published", (unsigned long long)cp->version);
    cp->tls_st.last_error[0] = '\0';
    *reloaded = true;
    return LB_OK;
}

int cp_tls_reload(struct cp *cp, bool *reloaded, struct lb_err *err)
{
    *reloaded = false;
    if (cp->cfg == NULL || !has_tls_files(cp->cfg))
        return LB_OK;
    if (cp->snap == NULL)
        return publish_pending(cp, reloaded, err);
    struct tlscheck_bundle *b = NULL;
    struct lb_err e = {0};
    int rc = tls_load(cp, cp->cfg, cp->tls_base, false, &b, &e);
    if (rc != LB_OK) {
        cp->tls_st.reload_errors++;
        snprintf(cp->tls_st.last_error, sizeof(cp->tls_st.last_error), "%s", e.msg);
        lb_log(LB_LOG_ERROR, "tls_reload_refused",
               "%s; the previously validated files keep serving", e.msg);
        if (err != NULL)
            *err = e;
        return rc;
    }
    if (tlscheck_bundle_same(cp->tls, b)) {
        tlscheck_bundle_free(b);
        cp->tls_st.last_error[0] = '\0';
        return LB_OK;
    }
    uint64_t gen = 0;
    uint8_t *buf = NULL;
    Lb__V1__Snapshot *snap = lb__v1__snapshot__unpack(NULL, cp->snap_len, cp->snap);
    if (snap == NULL)
        rc = lb_err_set(err, LB_ENOMEM, 0, "cannot decode the served snapshot");
    else if ((rc = tlscheck_bundle_patch(b, snap, err)) == LB_OK &&
             (rc = reserve_encoding(snap, &buf, err)) == LB_OK)
        rc = store_generation_bump(cp->store, &gen, err);
    if (rc != LB_OK) {
        free(buf);
        if (snap != NULL)
            lb__v1__snapshot__free_unpacked(snap, NULL);
        tlscheck_bundle_free(b);
        return rc;
    }
    snap->config_version = cp->version;
    snap->generation = gen;
    snap->created_unix_ms = now_unix_ms();
    size_t len = lb__v1__snapshot__pack(snap, buf);
    lb__v1__snapshot__free_unpacked(snap, NULL);
    char what[256];
    describe_reload(cp->tls, b, what, sizeof(what));
    char detail[300];
    snprintf(detail, sizeof(detail), "tls reload: %s", what);
    struct lb_err ae = {0};
    if (store_audit_add(cp->store, "certwatch", "tls.reload", detail, cp->version, cp->version,
                        &ae) != LB_OK)
        lb_log(LB_LOG_ERROR, "audit_failed", "%s: %s", detail, ae.msg);
    lb_log(LB_LOG_INFO, "tls_reload", "%s (generation %llu)", detail, (unsigned long long)gen);
    serve(cp, gen, buf, len);
    tlscheck_bundle_free(cp->tls);
    cp->tls = b;
    cp->tls_st.reloads++;
    cp->tls_st.last_reload_ms = now_unix_ms();
    cp->tls_st.last_reload_generation = gen;
    snprintf(cp->tls_st.last_reload, sizeof(cp->tls_st.last_reload), "%s", what);
    cp->tls_st.last_error[0] = '\0';
    *reloaded = true;
    return LB_OK;
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
    if (w->expected_version != 0 && w->expected_version != cp->version)
        return lb_err_set(err, LB_ECONFLICT, 0, "active version is %llu, not %llu",
                          (unsigned long long)cp->version, (unsigned long long)w->expected_version);
    return LB_OK;
}

/* The one path of every mutation. Takes <cfg> (validated). <rollback_to> 0
 * stores <cfg>'s canonical export as a new version, else copies version
 * <rollback_to> (whose content <cfg> was parsed from). */
static int commit(struct cp *cp, struct config *cfg, const struct cp_write *w, const char *base_dir,
                  uint64_t rollback_to, uint64_t *version, struct lb_err *err)
{
    Lb__V1__Snapshot *snap = NULL;
    uint8_t *buf = NULL;
    char *yaml = NULL;
    char hash[65];
    uint64_t number = 0, gen = 0;
    struct tlscheck_bundle *tls = NULL;
    int rc = build_snapshot(cp, cfg, base_dir, &snap, err);
    if (rc == LB_OK)
        rc = tls_adopt(cp, cfg, base_dir, snap, &tls, err);
    if (rc == LB_OK)
        rc = reserve_encoding(snap, &buf, err);
    if (rc == LB_OK) {
        size_t ylen = 0;
        yaml = config_export_yaml(cfg, &ylen, err);
        rc = yaml == NULL ? LB_ENOMEM : config_hash_yaml(yaml, ylen, hash, err);
    }
    if (rc == LB_OK) {
        if (rollback_to == 0)
            rc = store_version_put_gen(cp->store, yaml, hash, w->author, w->comment, &number, &gen,
                                       err);
        else
            rc = store_rollback_gen(cp->store, rollback_to, w->author, w->comment, &number, &gen,
                                    err);
    }
    free(yaml);
    if (rc != LB_OK) {
        snapbuild_free(snap);
        free(buf);
        config_free(cfg);
        tlscheck_bundle_free(tls);
        return rc;
    }
    snap->config_version = number;
    snap->generation = gen;
    size_t len = lb__v1__snapshot__pack(snap, buf);
    install(cp, cfg, hash, number, gen, buf, len);
    tls_install(cp, tls, base_dir);
    health_resync(cp, snap);
    snapbuild_free(snap);
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
    install(cp, cfg, hash, active, 0, NULL, 0);
    struct lb_err e = {0};
    if (publish_active(cp, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "snapshot_failed",
               "active version %llu loaded but not published: %s; fix it through the admin API",
               (unsigned long long)active, e.msg);
        tls_install(cp, NULL, cp->config_dir);
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
        rc = commit(cp, cfg, &w, dir, 0, NULL, err);
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
    struct cp *cp = calloc(1, sizeof(*cp));
    if (cp == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
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
    ev_init(&cp->health_pub, cp_on_health_pub);
    cp->health_pub.data = cp;
    ev_timer_init(&cp->weights_timer, cp_on_weights_timer, CP_WEIGHTS_STEP_S, CP_WEIGHTS_STEP_S);
    cp->weights_timer.data = cp;
    if ((cp->reports = reports_new()) == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto fail;
    }
    if ((cp->health = health_new(loop, cp_on_health, cp, err)) == NULL)
        goto fail;
    if ((cp->certwatch = certwatch_new(loop, 0, 0, cp_on_certs, cp, err)) == NULL)
        goto fail;
    if ((cp->store = store_open(cfg->db_path, err)) == NULL)
        goto fail;
    struct publisher_config pc = {.base = cfg->control_base, .republish_s = cfg->republish_s};
    if ((cp->pub = publisher_new(loop, &pc, cp_on_report, cp, err)) == NULL)
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
    ev_timer_stop(cp->loop, &cp->health_pub);
    ev_timer_stop(cp->loop, &cp->weights_timer);
    reports_free(cp->reports);
    dyn_clear(cp);
    if (cp->store != NULL)
        health_flush(cp);
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
                              now_unix_ms(), &cfg, err);
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
    rc = commit(cp, cfg, w, cp->config_dir, 0, version, err);
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
    if ((rc = commit(cp, cfg, w, cp->config_dir, 0, version, err)) != LB_OK)
        return rc;
    if (index != NULL)
        *index = (int)n - 1;
    return LB_OK;
}

int cp_backend_update(struct cp *cp, const char *id, const struct cp_backend_change *chg,
                      const struct cp_write *w, uint64_t *version, struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK)
        return rc;
    int i = cp_backend_find(cp, id);
    if (i < 0)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no backend has id \"%s\"", id ? id : "");
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
    if ((chg->url != NULL && set_str(&b->url, chg->url, err) != LB_OK) ||
        (chg->ca_file != NULL && set_str(&b->ca_file, chg->ca_file, err) != LB_OK) ||
        (chg->sni != NULL && set_str(&b->sni, chg->sni, err) != LB_OK)) {
        config_free(ed);
        return LB_ENOMEM;
    }
    struct config *cfg = NULL;
    if ((rc = normalise(cp, ed, &cfg, err)) != LB_OK)
        return rc;
    return commit(cp, cfg, w, cp->config_dir, 0, version, err);
}

int cp_backend_remove(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                      struct lb_err *err)
{
    int rc = check_if_match(cp, w, err);
    if (rc != LB_OK)
        return rc;
    int i = cp_backend_find(cp, id);
    if (i < 0)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no backend has id \"%s\"", id ? id : "");
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
    struct config *cfg = NULL;
    if ((rc = normalise(cp, ed, &cfg, err)) != LB_OK)
        return rc;
    return commit(cp, cfg, w, cp->config_dir, 0, version, err);
}

int cp_backend_drain(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                     struct lb_err *err)
{
    struct cp_backend_change chg = {.has_state = true, .state = CONFIG_BACKEND_DRAINING};
    return cp_backend_update(cp, id, &chg, w, version, err);
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
    return commit(cp, cfg, w, cp->config_dir, target, version, err);
}

/* The hand-over from a data plane's passive ejection to the health checks:
 * the snapshot saying DOWN ends the ejection there, and `rise` passing checks
 * bring the backend back. While it is DOWN, reports still saying ejected
 * (sent before the data plane saw that snapshot) change nothing. */
static void cp_on_ejected(void *ctx, const char *id, const char *node_id)
{
    struct cp *cp = ctx;
    struct health_status st;
    if (health_status_get(cp->health, id, &st) != LB_OK || st.disabled ||
        st.state == STORE_HEALTH_DOWN)
        return;
    char reason[HEALTH_ERROR_MAX];
    snprintf(reason, sizeof(reason), "ejected by data plane %.80s", node_id);
    lb_log(LB_LOG_WARN, "backend_ejected",
           "backend %s ejected by data plane %s: down until %u health checks pass", id, node_id,
           cp->cfg && cp->cfg->healthcheck.rise ? cp->cfg->healthcheck.rise : 1);
    health_mark_down(cp->health, id, reason);
}

void cp_on_report(void *ctx, const Lb__V1__Report *report)
{
    struct cp *cp = ctx;
    if (report->node_id == NULL || report->node_id[0] == '\0')
        return;
    struct store_dataplane dp = {
        .node_id = report->node_id,
        .applied_version = report->applied_version,
        .applied_generation = report->applied_generation,
        .last_report_unix_ms = now_unix_ms(),
        .rejected_generation = report->rejected_generation,
        .rejection_reason = report->rejection_reason,
    };
    struct lb_err e = {0};
    if (store_dataplane_upsert(cp->store, &dp, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "report_store_failed", "data plane %s: %s", report->node_id, e.msg);
    if (reports_add(cp->reports, report, dp.last_report_unix_ms, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "report_failed", "%s", e.msg);
    else
        reports_ejected_each(cp->reports, report->node_id, cp_on_ejected, cp);
    if (report->rejected_generation != 0)
        lb_log(LB_LOG_WARN, "snapshot_rejected", "data plane %s rejected generation %llu: %s",
               report->node_id, (unsigned long long)report->rejected_generation,
               report->rejection_reason ? report->rejection_reason : "");
}

/* ---- breaker state and dynamic weights -------------------------------------- */

void cp_backend_runtime(const struct cp *cp, size_t index, int64_t now_ms,
                        struct cp_backend_runtime *out)
{
    *out = (struct cp_backend_runtime){.breaker = "closed"};
    if (cp->cfg == NULL || index >= cp->cfg->n_backends)
        return;
    const struct config_backend *b = &cp->cfg->backends[index];
    struct reports_backend rb;
    reports_backend_get(cp->reports, b->id, now_ms, &rb);
    out->breaker = rb.breaker == LB__V1__BREAKER_STATE__BREAKER_OPEN        ? "open"
                   : rb.breaker == LB__V1__BREAKER_STATE__BREAKER_HALF_OPEN ? "half_open"
                                                                            : "closed";
    out->breaker_open = rb.open;
    out->requests = rb.requests;
    out->errors = rb.errors;
    out->effective_weight = weight_of(cp, cp->cfg, b);
    /* ejected while a data plane says so, and after the hand-over for as long
     * as the health checks keep the backend down */
    struct health_status st;
    out->ejected = rb.ejected || (cp->health != NULL &&
                                  health_status_get(cp->health, b->id, &st) == LB_OK && st.ejected);
    out->ejected_by = rb.ejected_by;
    out->ejections = rb.ejections;
    out->connections = rb.connections;
    out->queued = rb.queued;
    out->queue_timeouts = rb.queue_timeouts;
}

/* Appends "; <text>" pieces to an audit detail of bounded size. */
static void detail_add(char *buf, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void detail_add(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
    if (*off >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, size - *off, fmt, ap);
    va_end(ap);
    *off = n < 0 ? size : *off + (size_t)n;
}

int cp_weights_step(struct cp *cp, int64_t now_ms, size_t *changed, struct lb_err *err)
{
    if (changed != NULL)
        *changed = 0;
    const struct config *cfg = cp->cfg;
    if (cfg == NULL || cfg->balancing.weights != CONFIG_WEIGHTS_DYNAMIC) {
        dyn_clear(cp);
        reports_mark(cp->reports);
        return LB_OK;
    }
    size_t n = cfg->n_backends;
    struct reports_weight_in *in = calloc(n ? n : 1, sizeof(*in));
    uint32_t *out = calloc(n ? n : 1, sizeof(*out));
    struct cp_dyn *dyn = calloc(n ? n : 1, sizeof(*dyn));
    size_t n_dyn = 0, n_changed = 0;
    if (in == NULL || out == NULL || dyn == NULL) {
        free(in);
        free(out);
        free(dyn);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for dynamic weights");
    }
    for (size_t i = 0; i < n; i++) {
        in[i].configured = cfg->backends[i].weight;
        in[i].current = weight_of(cp, cfg, &cfg->backends[i]);
        reports_window_get(cp->reports, cfg->backends[i].id, now_ms, &in[i].w);
    }
    reports_mark(cp->reports);
    reports_weights_next(in, n, out);
    char detail[2048];
    size_t off = 0;
    detail_add(detail, sizeof(detail), &off, "dynamic weights:");
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != in[i].current) {
            const struct reports_window *w = &in[i].w;
            double lat_ms = w->requests ? (double)w->latency_sum_us / (double)w->requests / 1e3 : 0;
            double err_pct = w->requests ? 100.0 * (double)w->errors / (double)w->requests : 0;
            detail_add(detail, sizeof(detail), &off, "%s %s %u -> %u (p=%.1fms, err=%.1f%%)",
                       n_changed ? ";" : "", cfg->backends[i].id, in[i].current, out[i], lat_ms,
                       err_pct);
            n_changed++;
        }
        if (out[i] != in[i].configured) {
            dyn[n_dyn] = (struct cp_dyn){.configured = in[i].configured, .weight = out[i]};
            if ((dyn[n_dyn].id = strdup(cfg->backends[i].id)) == NULL)
                ok = false;
            n_dyn++;
        }
    }
    free(in);
    free(out);
    if (!ok) {
        for (size_t i = 0; i < n_dyn; i++)
            free(dyn[i].id);
        free(dyn);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for dynamic weights");
    }
    qsort(dyn, n_dyn, sizeof(*dyn), dyn_cmp);
    dyn_clear(cp);
    cp->dyn = dyn;
    cp->n_dyn = n_dyn;
    if (changed != NULL)
        *changed = n_changed;
    if (n_changed == 0)
        return LB_OK;
    if (off >= sizeof(detail))
        snprintf(detail + sizeof(detail) - 5, 5, "...");
    lb_log(LB_LOG_INFO, "dynamic_weights", "%s", detail);
    struct lb_err e = {0};
    if (store_audit_add(cp->store, "dynamic-weights", "weights", detail, cp->version, cp->version,
                        &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "weights_audit_failed", "%s", e.msg);
    health_publish(cp);
    return LB_OK;
}

static void cp_on_weights_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lb_err e = {0};
    if (cp_weights_step(w->data, now_unix_ms(), NULL, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "dynamic_weights_failed", "%s", e.msg);
}
