/* controlplane/admin_config.c: /api/v1/config: the active config (JSON or
 * YAML), applying a new one, the versions, the diff between two, and
 * rollback. */
#include "admin_int.h"

#include "config.h"
#include "cp.h"
#include "lb_err.h"

#include <stdlib.h>
#include <string.h>

/* Most changes listed in the answer of POST /api/v1/config. */
#define ADMIN_MAX_CHANGES 1000

static json_t *version_json(const struct store_version *v, uint64_t active, bool content)
{
    json_t *j = json_pack("{s:I,s:I,s:s,s:s,s:s,s:b}", "version", (json_int_t)v->number,
                          "created_ms", (json_int_t)v->created_unix_ms, "author", v->author,
                          "comment", v->comment, "hash", v->hash, "active", v->number == active);
    if (j != NULL && content)
        json_object_set_new(j, "content", json_string(v->content));
    return j;
}

void admin__config_get(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    if (cfg == NULL) {
        admin__respond_error(r, 404, "not_found", "no config is active yet");
        return;
    }
    const struct http1_header *acc = admin__find_header(r->msg, "Accept");
    struct lb_err e = {0};
    if (acc != NULL && (admin__slice_prefix(acc->value, "application/yaml") ||
                        admin__slice_prefix(acc->value, "text/yaml") ||
                        admin__slice_prefix(acc->value, "application/x-yaml"))) {
        size_t len = 0;
        char *yaml = config_export_yaml(cfg, &len, &e);
        if (yaml == NULL) {
            admin__respond_lb_err(r, &e);
            return;
        }
        admin__respond(r, 200, "application/yaml", yaml, len, NULL);
        free(yaml);
        return;
    }
    json_t *c = admin__embed(config_export_json(cfg, &e));
    admin__respond_json(r, 200,
                        json_pack("{s:I,s:s,s:o}", "version", (json_int_t)cp_active_version(cp),
                                  "hash", cp_config_hash(cp), "config", c));
}

void admin__config_post(struct req *r)
{
    struct admin_write wr;
    if (!admin__write_start(r, false, &wr))
        return;
    const struct http1_header *ct = admin__find_header(r->msg, "Content-Type");
    enum cp_format fmt =
        ct && admin__slice_prefix(ct->value, "application/json") ? CP_FORMAT_JSON : CP_FORMAT_YAML;
    struct cp *cp = r->c->a->cp;
    uint64_t version = 0;
    bool unchanged = false;
    struct config_diff *d = NULL;
    struct lb_err e = {0};
    if (cp_apply(cp, r->body, r->body_len, fmt, &wr.w, &version, &unchanged, &d, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    if (unchanged) {
        admin__respond_json(
            r, 200,
            json_pack("{s:I,s:[],s:b}", "version", (json_int_t)version, "changes", "unchanged", 1));
        return;
    }
    /* A 10,000-backend apply would list every backend: the reply keeps the
     * first ADMIN_MAX_CHANGES and says how many there were (GET
     * /api/v1/config/diff gives them all). */
    size_t total = d->n;
    d->n = total > ADMIN_MAX_CHANGES ? ADMIN_MAX_CHANGES : total;
    json_t *changes = admin__embed(config_diff_json(d));
    d->n = total;
    config_diff_free(d);
    json_t *body = json_pack("{s:I,s:o}", "version", (json_int_t)version, "changes",
                             changes ? changes : json_array());
    if (body != NULL && total > ADMIN_MAX_CHANGES) {
        json_object_set_new(body, "changes_truncated", json_true());
        json_object_set_new(body, "changes_total", json_integer((json_int_t)total));
    }
    admin__respond_json(r, 201, body);
}

void admin__versions_list(struct req *r, const char *query, size_t qlen)
{
    uint64_t limit = 50;
    size_t len;
    const char *v = admin__query_get(query, qlen, "limit", &len);
    if (v != NULL && (!admin__parse_u64(v, len, &limit) || limit == 0 || limit > 100000)) {
        admin__respond_error(r, 400, "invalid_request", "limit must be a number in 1..100000");
        return;
    }
    struct cp *cp = r->c->a->cp;
    struct store_version *vs = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_versions_list(cp, (size_t)limit, &vs, &n, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++)
        json_array_append_new(arr, version_json(&vs[i], cp_active_version(cp), false));
    store_versions_free(vs, n);
    admin__respond_json(
        r, 200,
        json_pack("{s:I,s:o}", "active", (json_int_t)cp_active_version(cp), "versions", arr));
}

void admin__version_get(struct req *r, const char *seg)
{
    uint64_t n;
    if (!admin__parse_u64(seg, strlen(seg), &n) || n == 0) {
        admin__respond_error(r, 404, "not_found", "no config version \"%s\"", seg);
        return;
    }
    struct cp *cp = r->c->a->cp;
    struct store_version *v = NULL;
    struct lb_err e = {0};
    if (cp_version_get(cp, n, &v, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    admin__respond_json(r, 200, version_json(v, cp_active_version(cp), true));
    store_version_free(v);
}

void admin__diff(struct req *r, const char *query, size_t qlen)
{
    uint64_t from = 0, to = 0;
    size_t lf = 0, lt = 0;
    const char *f = admin__query_get(query, qlen, "from", &lf);
    const char *t = admin__query_get(query, qlen, "to", &lt);
    if (f == NULL || t == NULL || !admin__parse_u64(f, lf, &from) ||
        !admin__parse_u64(t, lt, &to) || from == 0 || to == 0) {
        admin__respond_error(r, 400, "invalid_request",
                             "from and to must be config version numbers");
        return;
    }
    struct config_diff *d = NULL;
    struct lb_err e = {0};
    if (cp_diff(r->c->a->cp, from, to, &d, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    json_t *changes = admin__embed(config_diff_json(d));
    char *text = config_diff_text(d);
    config_diff_free(d);
    admin__respond_json(r, 200,
                        json_pack("{s:I,s:I,s:o,s:s}", "from", (json_int_t)from, "to",
                                  (json_int_t)to, "changes", changes ? changes : json_array(),
                                  "text", text ? text : ""));
    free(text);
}

void admin__rollback(struct req *r)
{
    static const char *const keys[] = {"version", "comment", NULL};
    struct admin_write wr;
    if (!admin__write_start(r, true, &wr))
        return;
    json_t *v = json_object_get(wr.body, "version");
    if (!admin__only_keys(r, wr.body, keys))
        goto out;
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        admin__respond_error(r, 400, "invalid_request", "version must be a config version number");
        goto out;
    }
    uint64_t target = (uint64_t)json_integer_value(v), version = 0;
    struct lb_err e = {0};
    if (cp_rollback(r->c->a->cp, target, &wr.w, &version, &e) != LB_OK)
        admin__respond_lb_err(r, &e);
    else
        admin__respond_json(r, 201,
                            json_pack("{s:I,s:I}", "version", (json_int_t)version, "rolled_back_to",
                                      (json_int_t)target));
out:
    admin__write_end(&wr);
}
