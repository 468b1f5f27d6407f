/* controlplane/cp_tls.c: the TLS files of the active config (the ssl
 * section when a frontend has TLS, the caFile of every https:// backend):
 * read and validated as a bundle, adopted into each new snapshot (keeping
 * the bytes served so far for a refused file), watched, and reloaded into a
 * new generation when they change (see cp.h, "TLS certificates"). */
#include "cp_int.h"

#include "certwatch.h"
#include "lb_err.h"
#include "lb_log.h"
#include "tlscheck.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
bool cp__has_tls_files(const struct config *cfg)
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
    if (!cp__has_tls_files(cfg))
        return LB_OK;
    struct tlscheck_bundle *b = NULL;
    struct lb_err e = {0};
    int rc = tlscheck_bundle_load(has_tls(cfg) ? &cfg->ssl : NULL, base_dir, cp__now_ms(), &b, &e);
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
int cp__tls_adopt(struct cp *cp, const struct config *cfg, const char *base_dir,
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
void cp__tls_install(struct cp *cp, struct tlscheck_bundle *b, const char *base_dir)
{
    tlscheck_bundle_free(cp->tls);
    cp->tls = b;
    free(cp->tls_base);
    cp->tls_base = strdup(base_dir ? base_dir : "");
    for (size_t i = 0; b != NULL && i < b->n_certs; i++)
        if (tlscheck_status_at(&b->certs[i].info, cp__now_ms()) == TLSCHECK_EXPIRING)
            lb_log(LB_LOG_WARN, "tls_cert_expiring", "%s expires in %lld days",
                   b->certs[i].cert->path,
                   (long long)((b->certs[i].info.not_after_ms - cp__now_ms()) / 86400000));
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

void cp__tls_reloaded(struct cp *cp, uint64_t gen, const char *what)
{
    cp->tls_st.reloads++;
    cp->tls_st.last_reload_ms = cp__now_ms();
    cp->tls_st.last_reload_generation = gen;
    snprintf(cp->tls_st.last_reload, sizeof(cp->tls_st.last_reload), "%s", what);
    cp->tls_st.last_error[0] = '\0';
}

int cp__tls_reload_served(struct cp *cp, const char *who, bool *reloaded, struct lb_err *err)
{
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
    size_t len = 0;
    Lb__V1__Snapshot *snap = NULL;
    if ((rc = cp__served_decode(cp, &snap, err)) == LB_OK) {
        if ((rc = tlscheck_bundle_patch(b, snap, err)) != LB_OK)
            lb__v1__snapshot__free_unpacked(snap, NULL);
        else
            rc = cp__repack(cp, snap, &buf, &len, &gen, err);
    }
    if (rc != LB_OK) {
        tlscheck_bundle_free(b);
        return rc;
    }
    char what[256];
    describe_reload(cp->tls, b, what, sizeof(what));
    char detail[300];
    snprintf(detail, sizeof(detail), "tls reload: %s", what);
    struct lb_err ae = {0};
    if (store_audit_add(cp->store, who, "tls.reload", detail, cp->version, cp->version, &ae) !=
        LB_OK)
        lb_log(LB_LOG_ERROR, "audit_failed", "%s: %s", detail, ae.msg);
    lb_log(LB_LOG_INFO, "tls_reload", "%s (generation %llu)", detail, (unsigned long long)gen);
    cp__serve(cp, gen, buf, len);
    tlscheck_bundle_free(cp->tls);
    cp->tls = b;
    cp__tls_reloaded(cp, gen, what);
    *reloaded = true;
    return LB_OK;
}
