/* controlplane/admin_backends.c: /api/v1/backends: the list with each
 * backend's health and runtime view, one backend, add, update, delete and
 * drain (each write a new config version through the core). */
#include "admin_int.h"

#include "config.h"
#include "cp.h"
#include "health.h"
#include "lb_err.h"

#include <string.h>

static json_t *backend_json(struct cp *cp, const struct config_backend *b)
{
    struct store_backend_health *h = NULL;
    const char *health = "unknown";
    json_t *last_check = json_null(), *last_error = json_null();
    if (cp_health_get(cp, b->id, &h, NULL) == LB_OK) {
        health = h->health == STORE_HEALTH_UP     ? "up"
                 : h->health == STORE_HEALTH_DOWN ? "down"
                                                  : "unknown";
        if (h->last_check_unix_ms > 0)
            last_check = json_integer(h->last_check_unix_ms);
        if (h->last_error[0])
            last_error = json_string(h->last_error);
        store_health_free(h);
    }
    /* <b> is an element of cp_config()'s backends; the reports are keyed by its index. */
    struct cp_backend_runtime rt;
    cp_backend_runtime(cp, (size_t)(b - cp_config(cp)->backends), admin__now_ms(), &rt);
    json_t *j =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:s,s:I,s:I,s:I}", "id", b->id, "url", b->url,
                  "weight", (json_int_t)b->weight, "state", config_backend_state_name(b->state),
                  "health", health, "last_check_ms", last_check, "last_error", last_error,
                  "breaker", rt.breaker, "requests", (json_int_t)rt.requests, "errors",
                  (json_int_t)rt.errors, "effective_weight", (json_int_t)rt.effective_weight);
    /* The limits as configured, the rest from the data planes that reported
     * in the last 10 s: ejected by any of them, the others summed. */
    if (j != NULL &&
        (json_object_set_new(j, "maxConnections", json_integer(b->max_connections)) != 0 ||
         json_object_set_new(
             j, "maxQueue", json_integer(b->max_queue ? b->max_queue : CONFIG_DEFAULT_MAX_QUEUE)) !=
             0 ||
         json_object_set_new(j, "ejected", json_boolean(rt.ejected)) != 0 ||
         json_object_set_new(j, "ejectedBy", json_integer(rt.ejected_by)) != 0 ||
         json_object_set_new(j, "ejections", json_integer((json_int_t)rt.ejections)) != 0 ||
         json_object_set_new(j, "connections", json_integer((json_int_t)rt.connections)) != 0 ||
         json_object_set_new(j, "queued", json_integer((json_int_t)rt.queued)) != 0 ||
         json_object_set_new(j, "queueTimeouts", json_integer((json_int_t)rt.queue_timeouts)) !=
             0 ||
         json_object_set_new(j, "sendProxy", json_string(config_send_proxy_name(b->send_proxy))) !=
             0)) {
        json_decref(j);
        j = NULL;
    }
    /* rise/fall progress for the dashboard: the current runs against the thresholds */
    const struct config *cfg = cp_config(cp);
    struct health_status hs;
    if (j != NULL && health_status_get(cp_health(cp), b->id, &hs) == LB_OK &&
        (json_object_set_new(j, "checks_passes", json_integer(hs.passes)) != 0 ||
         json_object_set_new(j, "checks_fails", json_integer(hs.fails)) != 0 ||
         json_object_set_new(j, "checks_rise",
                             json_integer(cfg->healthcheck.rise ? cfg->healthcheck.rise : 1)) !=
             0 ||
         json_object_set_new(j, "checks_fall",
                             json_integer(cfg->healthcheck.fall ? cfg->healthcheck.fall : 1)) !=
             0)) {
        json_decref(j);
        j = NULL;
    }
    /* As written in the config ("" = the system store, the URL's host); an
     * http:// backend has neither. */
    if (j != NULL && b->https &&
        (json_object_set_new(j, "caFile", json_string(b->ca_file ? b->ca_file : "")) != 0 ||
         json_object_set_new(j, "sni", json_string(b->sni ? b->sni : "")) != 0)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

void admin__backends_list(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    json_t *arr = json_array();
    for (size_t i = 0; cfg != NULL && arr != NULL && i < cfg->n_backends; i++)
        json_array_append_new(arr, backend_json(cp, &cfg->backends[i]));
    admin__respond_json(
        r, 200,
        json_pack("{s:I,s:o}", "version", (json_int_t)cp_active_version(cp), "backends", arr));
}

static void respond_backend(struct req *r, unsigned status, const char *id)
{
    struct cp *cp = r->c->a->cp;
    int i = cp_backend_find(cp, id);
    if (i < 0) {
        admin__respond_error(r, 404, "not_found", "no backend has id \"%s\"", id);
        return;
    }
    admin__respond_json(r, status,
                        json_pack("{s:I,s:o}", "version", (json_int_t)cp_active_version(cp),
                                  "backend", backend_json(cp, &cp_config(cp)->backends[i])));
}

/* String member <key> of <body> into <*out> (borrowed from <body>; left
 * alone when absent); false when answered. */
static bool read_str_field(struct req *r, json_t *body, const char *key, const char **out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return true;
    if (!json_is_string(v)) {
        admin__respond_error(r, 400, "invalid_request", "%s must be a string", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* sendProxy of <body> into <chg>; false when answered. */
static bool read_send_proxy(struct req *r, json_t *body, struct cp_backend_change *chg)
{
    json_t *v = json_object_get(body, "sendProxy");
    if (v == NULL)
        return true;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    static const enum config_send_proxy values[] = {CONFIG_SEND_PROXY_OFF, CONFIG_SEND_PROXY_V1,
                                                    CONFIG_SEND_PROXY_V2};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, config_send_proxy_name(values[i])) == 0) {
            chg->has_send_proxy = true;
            chg->send_proxy = values[i];
            return true;
        }
    }
    admin__respond_error(r, 400, "invalid_config", "sendProxy must be \"off\", \"v1\" or \"v2\"");
    return false;
}

/* Integer member <key> of <body> in <min>..<max> into <*out>, <*has> set;
 * left alone when absent; false when answered (the config's message). */
static bool read_uint_field(struct req *r, json_t *body, const char *key, uint32_t min,
                            uint32_t max, bool *has, uint32_t *out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return true;
    if (!json_is_integer(v)) {
        admin__respond_error(r, 400, "invalid_request", "%s must be an integer", key);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max) {
        admin__respond_error(r, 400, "invalid_config", "%s: %lld is out of range (%u..%u)", key,
                             (long long)n, min, max);
        return false;
    }
    *has = true;
    *out = (uint32_t)n;
    return true;
}

/* Reads weight/state/url/caFile/sni/maxConnections/maxQueue/sendProxy of a backend
 * body into <chg>; false when answered. caFile and sni are checked by the core with the config's
 * rules (https only, a server name, a readable file). */
static bool read_backend_fields(struct req *r, json_t *body, struct cp_backend_change *chg)
{
    json_t *v;
    if (!read_str_field(r, body, "url", &chg->url) ||
        !read_str_field(r, body, "caFile", &chg->ca_file) ||
        !read_str_field(r, body, "sni", &chg->sni) ||
        !read_uint_field(r, body, "maxConnections", 0, 1000000, &chg->has_max_connections,
                         &chg->max_connections) ||
        !read_uint_field(r, body, "maxQueue", 1, 100000, &chg->has_max_queue, &chg->max_queue) ||
        !read_uint_field(r, body, "weight", 1, 1000, &chg->has_weight, &chg->weight) ||
        !read_send_proxy(r, body, chg))
        return false;
    if ((v = json_object_get(body, "state")) != NULL) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        static const enum config_backend_state states[] = {
            CONFIG_BACKEND_ACTIVE, CONFIG_BACKEND_DRAINING, CONFIG_BACKEND_DISABLED};
        bool found = false;
        for (size_t i = 0; i < 3 && !found; i++) {
            if (strcmp(s, config_backend_state_name(states[i])) == 0) {
                chg->has_state = true;
                chg->state = states[i];
                found = true;
            }
        }
        if (!found) {
            admin__respond_error(r, 400, "invalid_config",
                                 "state must be \"active\", \"draining\" or \"disabled\"");
            return false;
        }
    }
    return true;
}

void admin__backends_add(struct req *r)
{
    static const char *const keys[] = {"url", "weight",         "id",       "state",     "caFile",
                                       "sni", "maxConnections", "maxQueue", "sendProxy", "comment",
                                       NULL};
    struct admin_write wr;
    if (!admin__write_start(r, true, &wr))
        return;
    struct cp_backend_change chg = {0};
    json_t *id = json_object_get(wr.body, "id");
    if (!admin__write_canary(r, &wr))
        goto out;
    if (!admin__only_keys(r, wr.body, keys) || !read_backend_fields(r, wr.body, &chg))
        goto out;
    if (chg.url == NULL) {
        admin__respond_error(r, 400, "invalid_config", "url is required");
        goto out;
    }
    if (id != NULL && !json_is_string(id)) {
        admin__respond_error(r, 400, "invalid_request", "id must be a string");
        goto out;
    }
    chg.id = id ? json_string_value(id) : NULL;
    uint64_t version = 0;
    int index = -1;
    struct lb_err e = {0};
    if (cp_backend_add(r->c->a->cp, &chg, &wr.w, &version, &index, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        goto out;
    }
    respond_backend(r, 201, cp_config(r->c->a->cp)->backends[index].id);
out:
    admin__write_end(&wr);
}

void admin__backend_get(struct req *r, const char *id)
{
    respond_backend(r, 200, id);
}

void admin__backend_update(struct req *r, const char *id)
{
    static const char *const keys[] = {
        "url",      "weight",    "state",   "caFile", "sni", "maxConnections",
        "maxQueue", "sendProxy", "comment", NULL};
    struct admin_write wr;
    if (!admin__write_start(r, true, &wr))
        return;
    struct cp_backend_change chg = {0};
    if (admin__write_canary(r, &wr) && admin__only_keys(r, wr.body, keys) &&
        read_backend_fields(r, wr.body, &chg)) {
        uint64_t version = 0;
        struct lb_err e = {0};
        if (cp_backend_update(r->c->a->cp, id, &chg, &wr.w, &version, &e) != LB_OK)
            admin__respond_lb_err(r, &e);
        else
            respond_backend(r, 200, id);
    }
    admin__write_end(&wr);
}

/* DELETE and drain: <op> on backend <id>, with an optional JSON body (for
 * its comment); the answer is the backend when <with_backend>, else the
 * new version. */
static void backend_op(struct req *r, const char *id,
                       int (*op)(struct cp *, const char *, const struct cp_write *, uint64_t *,
                                 struct lb_err *),
                       bool with_backend)
{
    struct admin_write wr;
    if (!admin__write_start(r, r->body_len > 0, &wr))
        return;
    if (!admin__write_canary(r, &wr)) {
        admin__write_end(&wr);
        return;
    }
    uint64_t version = 0;
    struct lb_err e = {0};
    if (op(r->c->a->cp, id, &wr.w, &version, &e) != LB_OK)
        admin__respond_lb_err(r, &e);
    else if (with_backend)
        respond_backend(r, 200, id);
    else
        admin__respond_json(r, 200, json_pack("{s:I}", "version", (json_int_t)version));
    admin__write_end(&wr);
}

void admin__backend_delete(struct req *r, const char *id)
{
    backend_op(r, id, cp_backend_remove, false);
}

void admin__backend_drain(struct req *r, const char *id)
{
    backend_op(r, id, cp_backend_drain, true);
}
