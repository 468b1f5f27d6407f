/* controlplane/cp_runtime.c: what the data planes report, turned into the
 * core's runtime state: the data plane table, each backend's breaker and
 * ejection view, the hand-over from a passive ejection to the health
 * checks, and the dynamic weights step (see cp.h). */
#include "cp_int.h"

#include "health.h"
#include "history.h"
#include "lb_err.h"
#include "lb_log.h"
#include "reports.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cp__dyn_clear(struct cp *cp)
{
    for (size_t i = 0; i < cp->n_dyn; i++)
        free(cp->dyn[i].id);
    free(cp->dyn);
    cp->dyn = NULL;
    cp->n_dyn = 0;
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
        .last_report_unix_ms = cp__now_ms(),
        .rejected_generation = report->rejected_generation,
        .rejection_reason = report->rejection_reason,
    };
    struct lb_err e = {0};
    if (store_dataplane_upsert(cp->store, &dp, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "report_store_failed", "data plane %s: %s", report->node_id, e.msg);
    if (history_add(cp->history, report, dp.last_report_unix_ms, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "history_failed", "%s", e.msg);
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
    out->effective_weight = cp__weight_of(cp, cp->cfg, b);
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
        cp__dyn_clear(cp);
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
        in[i].current = cp__weight_of(cp, cfg, &cfg->backends[i]);
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
    qsort(dyn, n_dyn, sizeof(*dyn), cp__dyn_cmp);
    cp__dyn_clear(cp);
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
    cp__publish_runtime(cp);
    return LB_OK;
}

void cp__on_weights_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lb_err e = {0};
    if (cp_weights_step(w->data, cp__now_ms(), NULL, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "dynamic_weights_failed", "%s", e.msg);
}
