/* controlplane/admin_rollouts.c: /api/v1/rollouts: start a rolling backend
 * update, list them, show one (step k of n, each gate's figure against its
 * limit, time to the next step), pause, resume, abort (roll back) and undo
 * (roll back after success). */
#include "admin_int.h"

#include "lb_err.h"
#include "rollout_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_ROLLOUTS_LIST_MAX 50

static json_t *ids_json(const char (*ids)[ROLLOUT_ID_MAX], size_t first, size_t n)
{
    json_t *a = json_array();
    for (size_t i = first; a != NULL && i < first + n; i++)
        json_array_append_new(a, json_string(ids[i]));
    return a;
}

static json_t *gates_json(const struct rollout_view *v)
{
    const struct rollout_spec *s = &v->spec;
    const struct rollout_state *st = &v->state;
    json_t *health = json_pack("{s:s,s:f}", "gate", "health", "limitSeconds",
                               (double)s->health_timeout_ms / 1000.0);
    json_t *rate = json_pack("{s:s,s:f}", "gate", "error_rate", "maxErrorRate", s->max_error_rate);
    if (rate != NULL && v->fig.valid) {
        json_object_set_new(rate, "backend", json_string(v->fig.backend));
        json_object_set_new(rate, "figure", json_real(v->fig.new_rate));
        json_object_set_new(rate, "limit", json_real(v->fig.limit));
        json_object_set_new(rate, "requests", json_integer((json_int_t)v->fig.new_requests));
        json_object_set_new(rate, "oldRate", json_real(v->fig.old_rate));
        json_object_set_new(rate, "oldRequests", json_integer((json_int_t)v->fig.old_requests));
    }
    json_t *cap = json_pack("{s:s,s:I}", "gate", "capacity", "minHealthy",
                            (json_int_t)(s->n_remove > s->batch ? s->n_remove - s->batch : 0));
    /* the gate that failed carries its figure */
    json_t *failed = st->gate == ROLLOUT_GATE_HEALTH       ? health
                     : st->gate == ROLLOUT_GATE_ERROR_RATE ? rate
                     : st->gate == ROLLOUT_GATE_CAPACITY   ? cap
                                                           : NULL;
    if (failed != NULL) {
        json_object_set_new(failed, "failed", json_true());
        json_object_set_new(failed, "figure", json_real(st->figure));
        json_object_set_new(failed, "limit", json_real(st->limit));
        json_object_set_new(failed, "backend", json_string(st->backend));
    }
    return json_pack("[o,o,o]", health, rate, cap);
}

static json_t *view_json(const struct rollout_view *v)
{
    const struct rollout_spec *s = &v->spec;
    const struct rollout_state *st = &v->state;
    json_t *urls = json_array();
    for (size_t i = 0; urls != NULL && i < s->n_add; i++)
        json_array_append_new(urls,
                              json_pack("{s:s,s:s}", "id", s->add_id[i], "url", s->add_url[i]));
    size_t af = 0, an = 0, rf = 0, rn = 0;
    if (st->phase != ROLLOUT_END) {
        rollout_batch(s, st->step, true, &af, &an);
        rollout_batch(s, st->step, false, &rf, &rn);
    }
    json_t *j = json_pack(
        "{s:I,s:s,s:s,s:I,s:I,s:I,s:o,s:o,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:o}",
        "id", (json_int_t)s->id, "status", rollout_status_name(st->status), "phase",
        rollout_phase_name(st->phase), "step",
        (json_int_t)(st->step < v->n_steps ? st->step + 1 : v->n_steps), "steps",
        (json_int_t)v->n_steps, "stepsDone", (json_int_t)st->steps_done, "add", urls, "remove",
        ids_json(s->remove_id, 0, s->n_remove), "batchSize", (json_int_t)s->batch, "intervalMs",
        (json_int_t)s->interval_ms, "bakeMs", (json_int_t)s->bake_ms, "healthTimeoutMs",
        (json_int_t)s->health_timeout_ms, "maxErrorRate", s->max_error_rate, "preVersion",
        (json_int_t)s->pre_version, "lastVersion", (json_int_t)v->last_version, "author", s->author,
        "comment", s->comment, "startedMs", (json_int_t)st->started_ms, "endedMs",
        (json_int_t)st->ended_ms, "nextInMs", (json_int_t)v->next_in_ms, "gates", gates_json(v));
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "stepAdds", ids_json(s->add_id, af, an));
    json_object_set_new(j, "stepRemoves", ids_json(s->remove_id, rf, rn));
    json_object_set_new(j, "reason", json_string(st->reason));
    if (st->gate != ROLLOUT_GATE_NONE) {
        json_object_set_new(j, "failedGate", json_string(rollout_gate_name(st->gate)));
        json_object_set_new(j, "failedBackend", json_string(st->backend));
        json_object_set_new(j, "figure", json_real(st->figure));
        json_object_set_new(j, "limit", json_real(st->limit));
    }
    if (st->final_version != 0)
        json_object_set_new(j, "rollbackVersion", json_integer((json_int_t)st->final_version));
    return j;
}

static void respond_one(struct req *r, unsigned status, uint64_t id)
{
    struct rollout_view *v = malloc(sizeof(*v));
    struct lb_err e = {0};
    if (v == NULL) {
        admin__respond_error(r, 500, "internal", "out of memory");
        return;
    }
    if (rollouts_get(rollouts_of(r->c->a->cp), id, admin__now_ms(), v, &e) != LB_OK)
        admin__respond_lb_err(r, &e);
    else
        admin__respond_json(r, status, json_pack("{s:o}", "rollout", view_json(v)));
    free(v);
}

void admin__rollouts_list(struct req *r)
{
    struct rollouts *ro = rollouts_of(r->c->a->cp);
    uint64_t ids[ADMIN_ROLLOUTS_LIST_MAX];
    size_t n = 0;
    struct lb_err e = {0};
    struct rollout_view *v = malloc(sizeof(*v));
    if (v == NULL) {
        admin__respond_error(r, 500, "internal", "out of memory");
        return;
    }
    json_t *arr = json_array();
    int rc = rollouts_ids(ro, ids, ADMIN_ROLLOUTS_LIST_MAX, &n, &e);
    for (size_t i = 0; rc == LB_OK && i < n; i++)
        if ((rc = rollouts_get(ro, ids[i], admin__now_ms(), v, &e)) == LB_OK)
            json_array_append_new(arr, view_json(v));
    free(v);
    if (rc != LB_OK) {
        json_decref(arr);
        admin__respond_lb_err(r, &e);
        return;
    }
    admin__respond_json(r, 200, json_pack("{s:o}", "rollouts", arr));
}

/* A list of strings (or, for "add", of {"url", "id"} objects) of <body>
 * member <key> into <out> (borrowed from <body>), at most <max>; false when
 * answered. */
static bool read_list(struct req *r, json_t *body, const char *key, const char **out,
                      const char **ids, size_t max, size_t *n)
{
    json_t *a = json_object_get(body, key);
    *n = 0;
    if (a == NULL)
        return true;
    if (!json_is_array(a) || json_array_size(a) > max) {
        admin__respond_error(r, 400, "invalid_request", "%s must be an array of at most %zu items",
                             key, max);
        return false;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *it = json_array_get(a, i);
        if (ids != NULL)
            ids[i] = NULL;
        if (json_is_string(it)) {
            out[i] = json_string_value(it);
        } else if (ids != NULL && json_is_object(it) &&
                   json_is_string(json_object_get(it, "url"))) {
            out[i] = json_string_value(json_object_get(it, "url"));
            json_t *id = json_object_get(it, "id");
            ids[i] = json_is_string(id) ? json_string_value(id) : NULL;
        } else {
            admin__respond_error(r, 400, "invalid_request", "%s[%zu] must be a string%s", key, i,
                                 ids ? " or {\"url\", \"id\"}" : "");
            return false;
        }
    }
    *n = json_array_size(a);
    return true;
}

/* Integer member <key> >= 0 into <*out>, left alone when absent; false when answered. */
static bool read_ms(struct req *r, json_t *body, const char *key, int64_t *out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > 7LL * 24 * 3600 * 1000) {
        admin__respond_error(r, 400, "invalid_request",
                             "%s must be an integer number of milliseconds (0..1 week)", key);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

void admin__rollouts_start(struct req *r)
{
    static const char *const keys[] = {"add",          "remove",  "batchSize",
                                       "intervalMs",   "bakeMs",  "healthTimeoutMs",
                                       "maxErrorRate", "comment", NULL};
    struct admin_write wr;
    if (!admin__write_start(r, true, &wr))
        return;
    const char *urls[ROLLOUT_MAX_BACKENDS], *ids[ROLLOUT_MAX_BACKENDS], *rm[ROLLOUT_MAX_BACKENDS];
    struct rollout_request rq = {.interval_ms = -1,
                                 .bake_ms = -1,
                                 .max_error_rate = -1,
                                 .author = wr.w.author,
                                 .comment = wr.w.comment,
                                 .add_urls = urls,
                                 .add_ids = ids,
                                 .remove = rm};
    json_t *b = wr.body, *v;
    if (!admin__only_keys(r, b, keys) ||
        !read_list(r, b, "add", urls, ids, ROLLOUT_MAX_BACKENDS, &rq.n_add) ||
        !read_list(r, b, "remove", rm, NULL, ROLLOUT_MAX_BACKENDS, &rq.n_remove) ||
        !read_ms(r, b, "intervalMs", &rq.interval_ms) || !read_ms(r, b, "bakeMs", &rq.bake_ms) ||
        !read_ms(r, b, "healthTimeoutMs", &rq.health_timeout_ms))
        goto out;
    if ((v = json_object_get(b, "batchSize")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > ROLLOUT_MAX_BACKENDS) {
            admin__respond_error(r, 400, "invalid_request", "batchSize must be 1..%d",
                                 ROLLOUT_MAX_BACKENDS);
            goto out;
        }
        rq.batch = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(b, "maxErrorRate")) != NULL) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
            admin__respond_error(r, 400, "invalid_request",
                                 "maxErrorRate must be a number from 0 to 1 (0.05 = 5 %%)");
            goto out;
        }
        rq.max_error_rate = json_number_value(v);
    }
    uint64_t id = 0;
    struct lb_err e = {0};
    if (rollouts_start(rollouts_of(r->c->a->cp), &rq, &id, &e) != LB_OK)
        admin__respond_lb_err(r, &e);
    else
        respond_one(r, 201, id);
out:
    admin__write_end(&wr);
}

void admin__rollout_get(struct req *r, const char *seg)
{
    uint64_t id = 0;
    if (!admin__parse_u64(seg, strlen(seg), &id) || id == 0) {
        admin__respond_error(r, 404, "not_found", "no rollout has id \"%s\"", seg);
        return;
    }
    respond_one(r, 200, id);
}

void admin__rollout_op(struct req *r, const char *seg, const char *op)
{
    static const char *const names[] = {"pause", "resume", "abort", "undo"};
    uint64_t id = 0;
    if (!admin__parse_u64(seg, strlen(seg), &id) || id == 0) {
        admin__respond_error(r, 404, "not_found", "no rollout has id \"%s\"", seg);
        return;
    }
    int which = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(op, names[i]) == 0)
            which = i;
    if (which < 0) {
        admin__respond_error(r, 404, "not_found", "no such route: %s (pause, resume, abort, undo)",
                             op);
        return;
    }
    struct admin_write wr;
    if (!admin__write_start(r, r->body_len > 0, &wr))
        return;
    struct lb_err e = {0};
    if (rollouts_control(rollouts_of(r->c->a->cp), id, (enum rollouts_op)which, wr.w.author, &e) !=
        LB_OK)
        admin__respond_lb_err(r, &e);
    else
        respond_one(r, 200, id);
    admin__write_end(&wr);
}

/* ---- /api/v1/config/canary: the staged config rollout ----------------------- */

static json_t *canary_json(const struct canary_view *v)
{
    if (!v->any)
        return json_null();
    json_t *nodes = json_array();
    for (size_t i = 0; nodes != NULL && i < v->n_nodes; i++)
        json_array_append_new(nodes, json_string(v->nodes[i]));
    json_t *o = json_pack(
        "{s:I,s:I,s:s,s:b,s:o,s:I,s:I,s:I,s:f,s:f,s:f}", "version", (json_int_t)v->id,
        "pre_version", (json_int_t)v->pre_version, "status", v->status, "active", v->active,
        "nodes", nodes ? nodes : json_array(), "bake_ms", (json_int_t)v->bake_ms, "started_ms",
        (json_int_t)v->started_ms, "applied_ms", (json_int_t)v->acked_ms, "max_error_rate",
        v->max_error_rate, "error_rate", v->figure, "limit", v->limit);
    if (o == NULL)
        return json_null();
    json_object_set_new(o, "canary_requests", json_integer((json_int_t)v->canary_requests));
    json_object_set_new(o, "canary_errors", json_integer((json_int_t)v->canary_errors));
    json_object_set_new(o, "rest_requests", json_integer((json_int_t)v->rest_requests));
    json_object_set_new(o, "rest_errors", json_integer((json_int_t)v->rest_errors));
    json_object_set_new(o, "ended_ms", json_integer((json_int_t)v->ended_ms));
    json_object_set_new(o, "final_version", json_integer((json_int_t)v->final_version));
    json_object_set_new(o, "reason", v->reason[0] ? json_string(v->reason) : json_null());
    return o;
}

static void canary_respond(struct req *r, unsigned status)
{
    struct canary_view v;
    rollouts_canary_get(rollouts_of(r->c->a->cp), &v);
    admin__respond_json(r, status, json_pack("{s:o}", "canary", canary_json(&v)));
}

void admin__canary_get(struct req *r)
{
    canary_respond(r, 200);
}

/* A query parameter <key> as a number in *<out>; false when answered (400). */
static bool query_num(struct req *r, const char *query, size_t qlen, const char *key, double *out)
{
    size_t len = 0;
    const char *v = admin__query_get(query, qlen, key, &len);
    if (v == NULL)
        return true;
    char buf[32];
    char *end = NULL;
    if (len == 0 || len >= sizeof(buf)) {
        admin__respond_error(r, 400, "invalid", "%s: a number", key);
        return false;
    }
    memcpy(buf, v, len);
    buf[len] = '\0';
    double d = strtod(buf, &end);
    if (*end != '\0' || !(d >= 0) || d > 1e12) {
        admin__respond_error(r, 400, "invalid", "%s=%s: a number, 0 or more", key, buf);
        return false;
    }
    *out = d;
    return true;
}

int admin__canary_query(struct req *r, char *nodes, size_t size, int64_t *bake_ms, double *rate)
{
    size_t nlen = 0;
    const char *nv = admin__query_get(r->query, r->qlen, "nodes", &nlen);
    *bake_ms = -1;
    *rate = -1;
    if (nv == NULL)
        return 0;
    if (nlen == 0 || nlen >= size) {
        admin__respond_error(r, 400, "invalid", "nodes: the canaries, a,b or a percentage P%%");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < nlen; i++) { /* %XX: "50%25" is 50% */
        unsigned x;
        if (nv[i] == '%' && i + 2 < nlen && sscanf(nv + i + 1, "%2x", &x) == 1) {
            nodes[k++] = (char)x;
            i += 2;
        } else {
            nodes[k++] = nv[i];
        }
    }
    nodes[k] = '\0';
    double bake = -1;
    if (!query_num(r, r->query, r->qlen, "bake_ms", &bake) ||
        !query_num(r, r->query, r->qlen, "max_error_rate", rate))
        return -1;
    if (*rate > 1) {
        admin__respond_error(r, 400, "invalid", "max_error_rate: between 0 and 1");
        return -1;
    }
    *bake_ms = bake < 0 ? -1 : (int64_t)bake;
    return 1;
}

bool admin__write_canary(struct req *r, struct admin_write *wr)
{
    int rc = admin__canary_query(r, wr->nodes, sizeof(wr->nodes), &wr->canary.bake_ms,
                                 &wr->canary.max_error_rate);
    if (rc < 0)
        return false;
    if (rc > 0) {
        wr->canary.nodes = wr->nodes;
        wr->w.canary = &wr->canary;
    }
    return true;
}

/* POST /api/v1/config/canary?nodes=a,b|P%25&bake_ms=N&max_error_rate=R, the
 * config as the body (YAML, or JSON by Content-Type). */
void admin__canary_post(struct req *r)
{
    char nodes[1024];
    int64_t bake = -1;
    double rate = -1;
    int q = admin__canary_query(r, nodes, sizeof(nodes), &bake, &rate);
    if (q < 0)
        return;
    if (q == 0) {
        admin__respond_error(r, 400, "invalid", "nodes: the canaries, a,b or a percentage P%%");
        return;
    }
    struct admin_write wr;
    if (!admin__write_start(r, false, &wr))
        return;
    uint64_t active = cp_active_version(r->c->a->cp);
    if (wr.w.expected_version != 0 && wr.w.expected_version != active) {
        admin__write_end(&wr);
        admin__respond_error(r, 409, "conflict", "active version is %llu, not %llu",
                             (unsigned long long)active, (unsigned long long)wr.w.expected_version);
        return;
    }
    const struct http1_header *ct = admin__find_header(r->msg, "Content-Type");
    struct canary_request rq = {
        .text = r->body,
        .len = r->body_len,
        .json = ct && admin__slice_prefix(ct->value, "application/json"),
        .nodes = nodes,
        .bake_ms = bake,
        .max_error_rate = rate,
        .author = wr.w.author,
        .comment = wr.w.comment,
    };
    uint64_t version = 0;
    struct lb_err e = {0};
    int rc = rollouts_canary_start(rollouts_of(r->c->a->cp), &rq, &version, &e);
    admin__write_end(&wr);
    if (rc != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    canary_respond(r, 201);
}

void admin__canary_abort(struct req *r)
{
    struct admin_write wr;
    if (!admin__write_start(r, false, &wr))
        return;
    struct lb_err e = {0};
    int rc = rollouts_canary_abort(rollouts_of(r->c->a->cp), wr.w.author, &e);
    admin__write_end(&wr);
    if (rc != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    canary_respond(r, 200);
}
