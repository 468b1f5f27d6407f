/* controlplane/admin_status.c: the read-outs of the control plane's state:
 * /health, /metrics (Prometheus text), /api/v1/dataplanes and /api/v1/tls
 * (with its reload). */
#include "admin_int.h"

#include "cp.h"
#include "health.h"
#include "lb_err.h"
#include "lb_prom.h"
#include "publisher.h"
#include "reports.h"
#include "rollout_run.h"
#include "seal.h"
#include "store.h"
#include "tlscheck.h"

#include <stdio.h>

void admin__health(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    admin__respond_json(r, 200,
                        json_pack("{s:s,s:I,s:I}", "status", "ok", "active_version",
                                  (json_int_t)cp_active_version(cp), "generation",
                                  (json_int_t)cp_generation(cp)));
}

/* A family of one sample without labels. */
static void prom_one(struct lb_prom *p, const char *name, const char *type, const char *help,
                     uint64_t v)
{
    lb_prom_family(p, name, type, help);
    lb_prom_u64(p, name, NULL, 0, v);
}

/* Versions, generations, publications and the data planes' lag. */
static void metrics_core(struct lb_prom *p, struct cp *cp, uint64_t total,
                         const struct store_dataplane *dps, size_t n)
{
    struct publisher *pub = cp_publisher(cp);
    prom_one(p, "lb_cp_config_version", "gauge", "Active config version (0 = none).",
             cp_active_version(cp));
    prom_one(p, "lb_cp_snapshot_generation", "gauge",
             "Generation of the snapshot being published (0 = none).", cp_generation(cp));
    prom_one(p, "lb_cp_config_versions_total", "counter", "Config versions ever stored.", total);
    prom_one(p, "lb_cp_publishes_total", "counter", "Snapshot publications, republishes included.",
             pub ? publisher_publishes(pub) : 0);
    prom_one(p, "lb_cp_dataplanes", "gauge", "Data planes that ever reported.", n);
    if (pub != NULL)
        seal_prom(p, publisher_feed_counts(pub), publisher_is_sealed(pub),
                  publisher_is_insecure(pub));
    lb_prom_family(p, "lb_cp_dataplane_lag_generations", "gauge",
                   "Generations the data plane is behind the published one.");
    uint64_t gen = cp_generation(cp);
    for (size_t i = 0; i < n; i++) {
        struct lb_prom_label l = {"node", dps[i].node_id};
        lb_prom_u64(p, "lb_cp_dataplane_lag_generations", &l, 1,
                    gen > dps[i].applied_generation ? gen - dps[i].applied_generation : 0);
    }
    lb_prom_family(p, "lb_cp_dataplane_rejected_generation", "gauge",
                   "Generation of the newest snapshot the data plane rejected (0 = it applied "
                   "the newest it was sent).");
    for (size_t i = 0; i < n; i++) {
        struct lb_prom_label l = {"node", dps[i].node_id};
        lb_prom_u64(p, "lb_cp_dataplane_rejected_generation", &l, 1, dps[i].rejected_generation);
    }
    lb_prom_family(p, "lb_cp_dataplane_last_seen_seconds", "gauge",
                   "Unix time of the data plane's last report, in seconds.");
    for (size_t i = 0; i < n; i++) {
        struct lb_prom_label l = {"node", dps[i].node_id};
        lb_prom_f64(p, "lb_cp_dataplane_last_seen_seconds", &l, 1,
                    (double)dps[i].last_report_unix_ms / 1000.0);
    }
}

static void metrics_health(struct lb_prom *p, struct cp *cp)
{
    struct health_counts hc;
    health_counts_get(cp_health(cp), &hc);
    prom_one(p, "lb_cp_backends_up", "gauge", "Checked backends whose health is up.", hc.up);
    prom_one(p, "lb_cp_backends_down", "gauge", "Checked backends whose health is down.", hc.down);
    lb_prom_family(p, "lb_cp_health_checks_total", "counter",
                   "Active health checks: finished (pass, fail), or skipped because the "
                   "control plane ran out of descriptors, memory or ports.");
    struct lb_prom_label pass = {"result", "pass"}, fail = {"result", "fail"},
                         skip = {"result", "skipped"};
    lb_prom_u64(p, "lb_cp_health_checks_total", &pass, 1, hc.passes);
    lb_prom_u64(p, "lb_cp_health_checks_total", &fail, 1, hc.fails);
    lb_prom_u64(p, "lb_cp_health_checks_total", &skip, 1, hc.skips);
    prom_one(p, "lb_cp_pool_all_down", "gauge", "1 when every checked backend is down, else 0.",
             health_pool_all_down(cp_health(cp)) ? 1 : 0);
    /* per backend, for alerts on one backend down */
    const struct config *cfg = cp_config(cp);
    lb_prom_family(p, "lb_cp_backend_down", "gauge",
                   "1 when the active health checks have the backend down, else 0.");
    for (size_t i = 0; cfg != NULL && i < cfg->n_backends; i++) {
        struct lb_prom_label l = {"backend", cfg->backends[i].id};
        lb_prom_u64(p, "lb_cp_backend_down", &l, 1,
                    health_state(cp_health(cp), cfg->backends[i].id) == STORE_HEALTH_DOWN);
    }
}

static uint64_t breaker_open_of(const struct cp_backend_runtime *rt)
{
    return rt->breaker_open;
}

static uint64_t ejected_of(const struct cp_backend_runtime *rt)
{
    return rt->ejected ? 1 : 0;
}

/* A gauge per backend of the active config, from its runtime view at <now>. */
static void backend_gauge(struct lb_prom *p, struct cp *cp, int64_t now, const char *name,
                          const char *help, uint64_t (*value)(const struct cp_backend_runtime *))
{
    const struct config *cfg = cp_config(cp);
    lb_prom_family(p, name, "gauge", help);
    for (size_t i = 0; cfg != NULL && i < cfg->n_backends; i++) {
        struct cp_backend_runtime rt;
        cp_backend_runtime(cp, i, now, &rt);
        struct lb_prom_label l = {"backend", cfg->backends[i].id};
        lb_prom_u64(p, name, &l, 1, value(&rt));
    }
}

static void metrics_tls(struct lb_prom *p, struct cp *cp)
{
    struct cp_tls_status tls;
    cp_tls_status(cp, &tls);
    lb_prom_family(p, "lb_cp_tls_cert_not_after_seconds", "gauge",
                   "Unix time at which each served certificate expires.");
    for (size_t i = 0; tls.bundle != NULL && i < tls.bundle->n_certs; i++) {
        struct lb_prom_label l = {"cert", tls.bundle->certs[i].cert->name};
        lb_prom_f64(p, "lb_cp_tls_cert_not_after_seconds", &l, 1,
                    (double)tls.bundle->certs[i].info.not_after_ms / 1000.0);
    }
    lb_prom_family(p, "lb_cp_tls_backend_ca_not_after_seconds", "gauge",
                   "Unix time at which the first certificate of each backend's caFile expires.");
    for (size_t i = 0; tls.bundle != NULL && i < tls.bundle->n_backend_cas; i++) {
        const struct tlscheck_backend_ca *ca = &tls.bundle->backend_cas[i];
        struct lb_prom_label l[2] = {{"backend", ca->backend}, {"file", ca->file.name}};
        lb_prom_f64(p, "lb_cp_tls_backend_ca_not_after_seconds", l, 2,
                    (double)ca->info.not_after_ms / 1000.0);
    }
    prom_one(p, "lb_cp_tls_reloads_total", "counter",
             "Certificate file changes published as a new generation.", tls.reloads);
    prom_one(p, "lb_cp_tls_reload_errors_total", "counter",
             "Changed certificate files refused by validation.", tls.reload_errors);
}

/* The scrape being answered is counted once answered, in the next one. */
static void metrics_api(struct lb_prom *p, const struct admin *a)
{
    lb_prom_family(p, "lb_cp_api_requests_total", "counter", "Admin API requests answered.");
    for (size_t i = 0; i < a->n_counts; i++) {
        char code[8];
        snprintf(code, sizeof(code), "%u", a->counts[i].status);
        struct lb_prom_label l[2] = {{"method", a->counts[i].method}, {"code", code}};
        lb_prom_u64(p, "lb_cp_api_requests_total", l, 2, a->counts[i].n);
    }
    prom_one(p, "lb_cp_api_auth_failures_total", "counter",
             "TCP admin requests without a valid bearer token (401).", a->auth_failures);
    prom_one(p, "lb_cp_api_auth_limited_total", "counter",
             "TCP admin requests refused (429) because their source failed to authenticate too "
             "often.",
             a->auth_limited);
    prom_one(p, "lb_cp_api_tls_handshakes_total", "counter",
             "TLS handshakes completed on the admin TCP listener.", a->tls_handshakes);
    prom_one(p, "lb_cp_api_tls_handshake_failures_total", "counter",
             "TLS handshakes on the admin TCP listener refused (plain HTTP, a client certificate "
             "the client CA did not issue, no common version or cipher) or not done in time.",
             a->tls_handshake_failures);
}

void admin__metrics(struct req *r)
{
    struct admin *a = r->c->a;
    struct cp *cp = a->cp;
    uint64_t total = 0;
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_versions_total(cp, &total, &e) != LB_OK || cp_dataplanes(cp, &dps, &n, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    struct lb_prom p;
    lb_prom_init(&p);
    metrics_core(&p, cp, total, dps, n);
    store_dataplanes_free(dps, n);
    metrics_health(&p, cp);
    int64_t now = admin__now_ms();
    backend_gauge(&p, cp, now, "lb_cp_backend_breaker_open",
                  "Data planes reporting the backend's circuit breaker open (last 10 s).",
                  breaker_open_of);
    backend_gauge(&p, cp, now, "lb_cp_backend_ejected",
                  "1 when a data plane that reported in the last 10 s has the backend "
                  "ejected after failed connects, else 0.",
                  ejected_of);
    metrics_tls(&p, cp);
    metrics_api(&p, a);
    rollouts_metrics(rollouts_of(cp), &p);
    if (p.oom) {
        lb_prom_deinit(&p);
        admin__respond_error(r, 500, "internal", "out of memory");
        return;
    }
    admin__respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", p.buf, p.len, NULL);
    lb_prom_deinit(&p);
}

/* GET /api/v1/tls -> {"certificates": [{"name", "frontend", "subject", "sans",
 * "fingerprint_sha256", "not_before", "not_after" (ms), "expires_in_days",
 * "status": "ok|expiring|expired"}] (each served certificate for each TLS
 * frontend), "backend_cas": [{"backend", "file", "subject", "not_before",
 * "not_after" (ms), "expires_in_days", "fingerprint_sha256", "status"}] (the
 * caFile of each https:// backend naming one, described by its first
 * certificate), "reloads", "reload_errors", "last_reload": null | {"at_ms",
 * "generation", "detail"}, "last_error": null | "..."} */
void admin__tls_get(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    struct cp_tls_status st;
    cp_tls_status(cp, &st);
    int64_t now = admin__now_ms();
    json_t *certs = json_array();
    for (size_t f = 0; cfg != NULL && st.bundle != NULL && f < cfg->n_frontends; f++) {
        if (!cfg->frontends[f].tls)
            continue;
        for (size_t i = 0; i < st.bundle->n_certs; i++) {
            const struct tlscheck_bundle_cert *c = &st.bundle->certs[i];
            json_t *sans = json_array();
            for (size_t k = 0; k < c->info.n_sans; k++)
                json_array_append_new(sans, json_string(c->info.sans[k]));
            int64_t left = c->info.not_after_ms - now;
            json_array_append_new(
                certs, json_pack("{s:s,s:s,s:s,s:o,s:s,s:I,s:I,s:I,s:s}", "name", c->cert->name,
                                 "frontend", cfg->frontends[f].name, "subject", c->info.subject,
                                 "sans", sans, "fingerprint_sha256", c->info.fingerprint,
                                 "not_before", (json_int_t)c->info.not_before_ms, "not_after",
                                 (json_int_t)c->info.not_after_ms, "expires_in_days",
                                 (json_int_t)(left > 0 ? left / 86400000 : 0), "status",
                                 tlscheck_status_name(tlscheck_status_at(&c->info, now))));
        }
    }
    json_t *cas = json_array();
    for (size_t i = 0; st.bundle != NULL && i < st.bundle->n_backend_cas; i++) {
        const struct tlscheck_backend_ca *ca = &st.bundle->backend_cas[i];
        int64_t left = ca->info.not_after_ms - now;
        json_array_append_new(
            cas, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "backend", ca->backend, "file",
                           ca->file.name, "subject", ca->info.subject, "not_before",
                           (json_int_t)ca->info.not_before_ms, "not_after",
                           (json_int_t)ca->info.not_after_ms, "expires_in_days",
                           (json_int_t)(left > 0 ? left / 86400000 : 0), "fingerprint_sha256",
                           ca->info.fingerprint, "status",
                           tlscheck_status_name(tlscheck_status_at(&ca->info, now))));
    }
    json_t *last =
        st.last_reload_ms == 0
            ? json_null()
            : json_pack("{s:I,s:I,s:s}", "at_ms", (json_int_t)st.last_reload_ms, "generation",
                        (json_int_t)st.last_reload_generation, "detail", st.last_reload);
    admin__respond_json(r, 200,
                        json_pack("{s:o,s:o,s:I,s:I,s:o,s:o}", "certificates", certs, "backend_cas",
                                  cas, "reloads", (json_int_t)st.reloads, "reload_errors",
                                  (json_int_t)st.reload_errors, "last_reload", last, "last_error",
                                  st.last_error[0] ? json_string(st.last_error) : json_null()));
}

/* POST /api/v1/tls/reload -> 200 {"reloaded": bool, "generation": N, "error": null};
 * refused files -> 400 invalid_config with the reason. */
void admin__tls_reload(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    bool reloaded = false;
    struct lb_err e = {0};
    if (cp_tls_reload_by(cp, r->author, &reloaded, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    admin__respond_json(r, 200,
                        json_pack("{s:b,s:I,s:n}", "reloaded", reloaded, "generation",
                                  (json_int_t)cp_generation(cp), "error"));
}

void admin__dataplanes(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_dataplanes(cp, &dps, &n, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    uint64_t gen = cp_generation(cp);
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        const struct store_dataplane *d = &dps[i];
        json_t *o = json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:o,s:b}", "node_id", d->node_id, "applied_version",
            (json_int_t)d->applied_version, "applied_generation", (json_int_t)d->applied_generation,
            "last_seen_ms", (json_int_t)d->last_report_unix_ms, "rejected_generation",
            (json_int_t)d->rejected_generation, "rejection_reason",
            d->rejection_reason[0] ? json_string(d->rejection_reason) : json_null(), "in_sync",
            gen != 0 && d->applied_generation == gen);
        /* the process behind it, from its latest report (not stored: null
         * until it reports again after a control-plane restart) */
        struct reports_node pn;
        bool known = cp_dataplane_process(cp, d->node_id, &pn);
        if (o != NULL) {
            json_object_set_new(o, "pid", known ? json_integer(pn.pid) : json_null());
            json_object_set_new(o, "started_unix_ms",
                                known ? json_integer(pn.started_unix_ms) : json_null());
            json_object_set_new(o, "host",
                                known && pn.host[0] ? json_string(pn.host) : json_null());
            json_object_set_new(o, "listeners",
                                known && pn.listeners[0] ? json_string(pn.listeners) : json_null());
            json_object_set_new(o, "binary_version",
                                known && pn.binary_version[0] ? json_string(pn.binary_version)
                                                              : json_null());
        }
        /* staged rollout: what it should serve and why */
        char role[96];
        rollouts_canary_role(rollouts_of(cp), d->node_id, role, sizeof(role));
        uint64_t held = publisher_held_generation(cp_publisher(cp));
        if (o != NULL && held != 0 && strcmp(role, "stable") == 0)
            json_object_set_new(o, "in_sync", json_boolean(d->applied_generation == held));
        if (d->rejected_generation != 0 && d->rejection_reason[0])
            snprintf(role, sizeof(role), "rejected: %.80s", d->rejection_reason);
        if (o != NULL)
            json_object_set_new(o, "serving", json_string(role));
        json_array_append_new(arr, o);
    }
    store_dataplanes_free(dps, n);
    admin__respond_json(r, 200,
                        json_pack("{s:I,s:I,s:o}", "version", (json_int_t)cp_active_version(cp),
                                  "generation", (json_int_t)gen, "dataplanes", arr));
}
