/* controlplane/cp_health.c: the core's side of the health checker: its
 * targets follow each new snapshot, and verdict changes found in one loop
 * turn are stored with their audit rows in one transaction and published as
 * one new generation (see cp_int.h). */
#include "cp_int.h"

#include "health.h"
#include "lb_err.h"
#include "lb_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Points the checker at the backends of the active config, at the addresses
 * <snap> resolved (backends in the config's order), so that no check ever
 * calls the resolver. A failure keeps the previous targets and is logged. */
void cp__health_resync(struct cp *cp, const Lb__V1__Snapshot *snap)
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
                .send_proxy = (uint8_t)b->send_proxy,
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

/* Stores the pending changes with their audit rows in one transaction. */
void cp__health_flush(struct cp *cp)
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

void cp__on_health_pub(struct ev_loop *loop, ev_timer *w, int revents)
{
    cp__health_flush(w->data);
    cp__publish_runtime(w->data);
}

/* Checker callback: a change is persisted, audited, logged and published. */
void cp__on_health(void *ctx, const struct health_result *r)
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
