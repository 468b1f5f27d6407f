/* controlplane/rollout_canary.c: the staged config rollout (see
 * rollout_canary.h): ACK/NACK from the data planes' reports, the error-rate
 * gate from report deltas (rollout_window_delta(), rollout_canary_eval()),
 * promotion or rollback. */
#include "rollout_canary.h"

#include "rollout_sample.h"

#include "config.h"
#include "cp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "reports.h"
#include "store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CANARY_TICK_MS 250      /* how often the store's data plane table is read */
#define CANARY_META    "canary" /* the store's meta row holding the newest one */

enum canary_status {
    CANARY_NONE = 0,
    CANARY_WAIT_ACK,
    CANARY_BAKING,
    CANARY_PROMOTED,
    CANARY_FAILED,
    CANARY_ABORTED,
};

static const char *const status_names[] = {"none",     "waiting_ack", "baking",
                                           "promoted", "failed",      "aborted"};

/* One data plane's counters for one backend when the bake began. */
struct canary {
    struct cp *cp;
    enum canary_status status;
    bool own_write;
    uint64_t version, pre_version, final_version;
    uint64_t gen; /* the canary generation: applied_generation >= it is an ACK */
    char nodes[ROLLOUT_CANARY_MAX][ROLLOUT_NODE_MAX];
    const char *node_ptr[ROLLOUT_CANARY_MAX];
    size_t n_nodes;
    int64_t bake_ms, started_ms, acked_ms, ended_ms, last_tick_ms;
    double max_rate, figure, limit;
    char reason[300];
    char (*ids)[ROLLOUT_ID_MAX]; /* backends of the old and the new config */
    size_t n_ids;
    struct rollout_base_entry *base;
    size_t n_base, cap_base;
    struct rollout_counts win_canary, win_rest;
    uint64_t promoted, failed, nacks;
    bool resumed; /* loaded baking after a restart: the others' snapshot is to be held again */
};

static void load(struct canary *c, int64_t now_ms);

struct canary *canary_new(struct cp *cp, int64_t now_ms)
{
    struct canary *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->cp = cp;
        load(c, now_ms);
    }
    return c;
}

void canary_free(struct canary *c)
{
    if (c == NULL)
        return;
    free(c->ids);
    free(c->base);
    free(c);
}

static bool baking(const struct canary *c)
{
    return c->status == CANARY_WAIT_ACK || c->status == CANARY_BAKING;
}

bool canary_blocks(const struct canary *c, struct lb_err *err)
{
    if (c == NULL || c->own_write || !baking(c))
        return false;
    lb_err_set(err, LB_ECONFLICT, 0,
               "the staged rollout of version %llu is baking on %zu canaries: it owns the config "
               "until it is promoted or rolled back (`lbctl config canary abort`)",
               (unsigned long long)c->version, c->n_nodes);
    return true;
}

static bool is_canary(const struct canary *c, const char *node)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (strcmp(c->nodes[i], node) == 0)
            return true;
    return false;
}

/* Adds the backends of <cfg> to <ids> (no duplicates). */
static int ids_add(struct canary *c, const struct config *cfg)
{
    if (cfg == NULL)
        return LB_OK;
    void *p = realloc(c->ids, (c->n_ids + cfg->n_backends + 1) * sizeof(*c->ids));
    if (p == NULL)
        return LB_ENOMEM;
    c->ids = p;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        bool have = false;
        for (size_t k = 0; k < c->n_ids && !have; k++)
            have = strcmp(c->ids[k], cfg->backends[i].id) == 0;
        if (!have)
            snprintf(c->ids[c->n_ids++], ROLLOUT_ID_MAX, "%s", cfg->backends[i].id);
    }
    return LB_OK;
}

/* Adds the backends of the active config to <ids>. */
static int ids_take(struct canary *c)
{
    return ids_add(c, cp_config(c->cp));
}

/* cp_canary_hold_version()'s callback: the held version's config. */
static void on_held(void *ctx, const struct config *cfg)
{
    ids_add(ctx, cfg);
}

/* ---- windows ------------------------------------------------------------------ */

/* The bake begins: every data plane's counters of every backend. */
static void base_reset(struct canary *c, int64_t now_ms)
{
    c->n_base = 0;
    for (size_t i = 0; i < c->n_ids; i++)
        rollout_base_take(&c->base, &c->n_base, &c->cap_base, cp_reports(c->cp), c->ids[i], now_ms);
}

/* Keeps the samples of <s>[0..n) whose node is (<canary>) or is not a canary. */
static size_t split(const struct canary *c, struct rollout_sample *s, size_t n, bool canary)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (is_canary(c, s[i].node_id) == canary)
            s[k++] = s[i];
    return k;
}

/* The counters since the bake began, canaries and the rest, over every
 * backend; *<reported_ms> the oldest latest report of a canary. */
static void windows(struct canary *c, int64_t now_ms, int64_t *reported_ms)
{
    c->win_canary = (struct rollout_counts){0};
    c->win_rest = (struct rollout_counts){0};
    *reported_ms = 0;
    struct rollout_sample *bs = malloc((c->n_base ? c->n_base : 1) * sizeof(*bs));
    if (bs == NULL)
        return;
    for (size_t i = 0; i < c->n_ids; i++) {
        struct rollout_sample *s = NULL;
        size_t ns = 0;
        rollout_samples_read(cp_reports(c->cp), c->ids[i], now_ms, &s, &ns);
        for (size_t k = 0; k < ns; k++)
            if (is_canary(c, s[k].node_id) &&
                (*reported_ms == 0 || s[k].received_ms < *reported_ms))
                *reported_ms = s[k].received_ms;
        for (int pass = 0; pass < 2; pass++) {
            bool canary = pass == 0;
            size_t nb = 0;
            for (size_t k = 0; k < c->n_base; k++)
                if (strcmp(c->base[k].id, c->ids[i]) == 0 &&
                    is_canary(c, c->base[k].s.node_id) == canary)
                    bs[nb++] = c->base[k].s;
            struct rollout_sample *cur = malloc((ns ? ns : 1) * sizeof(*cur));
            if (cur == NULL)
                break;
            memcpy(cur, s, ns * sizeof(*cur));
            size_t nc = split(c, cur, ns, canary);
            struct rollout_counts d = rollout_window_delta(bs, nb, cur, nc);
            free(cur);
            struct rollout_counts *w = canary ? &c->win_canary : &c->win_rest;
            w->requests += d.requests;
            w->errors += d.errors;
        }
        free(s);
    }
    free(bs);
}

/* ---- the stored form ---------------------------------------------------------------- */

/* The canary as JSON text (caller frees), NULL on no memory. */
static char *encode(const struct canary *c, enum canary_status st)
{
    json_t *nodes = json_array();
    for (size_t i = 0; nodes != NULL && i < c->n_nodes; i++)
        json_array_append_new(nodes, json_string(c->nodes[i]));
    json_t *o = json_pack("{s:I,s:I,s:I,s:s,s:o,s:I,s:f,s:s,s:I,s:I}", "version",
                          (json_int_t)c->version, "pre_version", (json_int_t)c->pre_version,
                          "final_version", (json_int_t)c->final_version, "status", status_names[st],
                          "nodes", nodes ? nodes : json_array(), "bake_ms", (json_int_t)c->bake_ms,
                          "max_error_rate", c->max_rate, "reason", c->reason, "started_ms",
                          (json_int_t)c->started_ms, "ended_ms", (json_int_t)c->ended_ms);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* Loads the stored canary; one that was baking resumes (its bake starts
 * again from fresh reports once the others' snapshot is held again). */
static void load(struct canary *c, int64_t now_ms)
{
    char *text = NULL;
    struct lb_err e = {0};
    if (store_meta_get(cp__store(c->cp), CANARY_META, &text, &e) != LB_OK) {
        if (e.code != LB_ENOTFOUND && e.msg[0])
            lb_log(LB_LOG_ERROR, "canary_unreadable", "%s", e.msg);
        return;
    }
    json_t *o = json_loads(text, 0, NULL), *nodes = json_object_get(o, "nodes"), *n;
    free(text);
    const char *st = json_string_value(json_object_get(o, "status"));
    size_t i;
    enum canary_status status = CANARY_NONE;
    for (size_t k = 1; st != NULL && k < sizeof(status_names) / sizeof(*status_names); k++)
        if (strcmp(st, status_names[k]) == 0)
            status = (enum canary_status)k;
    if (o == NULL || status == CANARY_NONE || !json_is_array(nodes) ||
        json_array_size(nodes) == 0 || json_array_size(nodes) > ROLLOUT_CANARY_MAX) {
        lb_log(LB_LOG_ERROR, "canary_unreadable", "the stored staged rollout does not decode");
        json_decref(o);
        return;
    }
    c->n_nodes = 0;
    json_array_foreach(nodes, i, n)
    {
        snprintf(c->nodes[i], ROLLOUT_NODE_MAX, "%s",
                 json_string_value(n) ? json_string_value(n) : "");
        c->node_ptr[i] = c->nodes[i];
        c->n_nodes++;
    }
    c->version = (uint64_t)json_integer_value(json_object_get(o, "version"));
    c->pre_version = (uint64_t)json_integer_value(json_object_get(o, "pre_version"));
    c->final_version = (uint64_t)json_integer_value(json_object_get(o, "final_version"));
    c->bake_ms = json_integer_value(json_object_get(o, "bake_ms"));
    c->max_rate = json_real_value(json_object_get(o, "max_error_rate"));
    c->started_ms = json_integer_value(json_object_get(o, "started_ms"));
    c->ended_ms = json_integer_value(json_object_get(o, "ended_ms"));
    snprintf(c->reason, sizeof(c->reason), "%s",
             json_string_value(json_object_get(o, "reason"))
                 ? json_string_value(json_object_get(o, "reason"))
                 : "");
    json_decref(o);
    c->status = status;
    if (!baking(c))
        return;
    c->status = CANARY_WAIT_ACK;
    c->resumed = true;
    c->started_ms = now_ms;
    c->acked_ms = 0;
    lb_log(LB_LOG_INFO, "canary_resumed",
           "staged rollout of version %llu on %zu canaries resumes: the bake starts again",
           (unsigned long long)c->version, c->n_nodes);
}

/* The others' snapshot held again after a restart; false to try again. */
static bool rehold(struct canary *c)
{
    struct lb_err e = {0};
    if (cp_active_version(c->cp) != c->version) {
        /* the version it staged is not the active one: nothing left to bake */
        lb_log(LB_LOG_ERROR, "canary_abandoned",
               "the staged rollout of version %llu was baking but version %llu is active",
               (unsigned long long)c->version, (unsigned long long)cp_active_version(c->cp));
        snprintf(c->reason, sizeof(c->reason), "abandoned: version %llu is active",
                 (unsigned long long)cp_active_version(c->cp));
        c->status = CANARY_FAILED;
        c->resumed = false;
        return false;
    }
    c->n_ids = 0;
    if (ids_take(c) != LB_OK || cp_canary_hold_version(c->cp, c->pre_version, c->node_ptr,
                                                       c->n_nodes, on_held, c, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "canary_hold_failed", "version %llu for the others: %s (tried again)",
               (unsigned long long)c->pre_version, e.msg);
        return false;
    }
    c->gen = cp_generation(c->cp);
    c->resumed = false;
    return true;
}

/* ---- outcomes ------------------------------------------------------------------- */

static void end(struct canary *c, enum canary_status st, int64_t now_ms)
{
    c->status = st;
    c->ended_ms = now_ms;
    cp_canary_release(c->cp);
}

static void promote(struct canary *c, int64_t now_ms)
{
    struct lb_err e = {0};
    enum canary_status was = c->status;
    c->status = CANARY_PROMOTED; /* no canary list in what is built from now on */
    if (cp_canary_promote(c->cp, &e) != LB_OK) {
        c->status = was;
        lb_log(LB_LOG_ERROR, "canary_promote_failed", "version %llu: %s (tried again)",
               (unsigned long long)c->version, e.msg);
        return;
    }
    end(c, CANARY_PROMOTED, now_ms);
    c->final_version = c->version;
    c->promoted++;
    char *text = encode(c, CANARY_PROMOTED);
    if (text == NULL || store_meta_put(cp__store(c->cp), CANARY_META, text, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "canary_store_failed", "promotion of version %llu not stored: %s",
               (unsigned long long)c->version, text ? e.msg : "out of memory");
    free(text);
    char detail[300];
    snprintf(detail, sizeof(detail),
             "version %llu promoted to every data plane after its bake on %zu canaries (error "
             "rate %.4f, limit %.4f)",
             (unsigned long long)c->version, c->n_nodes, c->figure, c->limit);
    lb_log(LB_LOG_INFO, "canary_promoted", "%s", detail);
    cp_audit_note(c->cp, "rollout", "config.canary.promote", detail);
}

/* Rolls the config back to the pre-rollout version as a new version; the
 * canaries get it like everybody (a newer generation: no replay check
 * stands in the way). A failed write is tried again on the next tick. */
static void roll_back(struct canary *c, enum canary_status st, const char *who, int64_t now_ms)
{
    char comment[400];
    snprintf(comment, sizeof(comment), "staged rollout of version %llu %s: %s",
             (unsigned long long)c->version, st == CANARY_ABORTED ? "aborted" : "failed",
             c->reason);
    struct cp_write w = {.author = who, .comment = comment};
    enum canary_status was = c->status;
    c->status = st; /* no canary list in the rollback's snapshot */
    c->own_write = true;
    uint64_t v = 0;
    struct lb_err e = {0};
    int64_t ended = c->ended_ms;
    c->ended_ms = now_ms;
    char *text = encode(c, st);
    c->ended_ms = ended;
    store_meta_attach(cp__store(c->cp), CANARY_META, text, "$.final_version");
    int rc = text ? cp_rollback(c->cp, c->pre_version, &w, &v, &e)
                  : lb_err_set(&e, LB_ENOMEM, 0, "out of memory");
    store_meta_attach(cp__store(c->cp), NULL, NULL, NULL);
    free(text);
    c->own_write = false;
    if (rc != LB_OK) {
        c->status = was;
        lb_log(LB_LOG_ERROR, "canary_rollback_failed", "version %llu back to %llu: %s",
               (unsigned long long)c->version, (unsigned long long)c->pre_version, e.msg);
        return;
    }
    end(c, st, now_ms);
    c->final_version = v;
    c->failed += st == CANARY_FAILED;
    lb_log(LB_LOG_WARN, "canary_rolled_back", "version %llu: %s; version %llu (content of %llu)",
           (unsigned long long)c->version, c->reason, (unsigned long long)v,
           (unsigned long long)c->pre_version);
}

/* ACK and NACK of each canary from the data plane table; *<lost> gets the
 * index of a canary silent for REPORTS_FRESH_MS (once the rollout is that
 * old), -1 when none. */
static void acks(struct canary *c, int64_t now_ms, bool *acked, const char **rejected,
                 char (*why)[200], int *lost)
{
    *lost = -1;
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_dataplanes(c->cp, &dps, &n, &e) != LB_OK) {
        lb_log(LB_LOG_WARN, "canary_dataplanes_unread", "%s", e.msg);
        return;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        for (size_t k = 0; k < n; k++) {
            if (strcmp(dps[k].node_id, c->nodes[i]) != 0)
                continue;
            acked[i] = dps[k].applied_generation >= c->gen;
            if (now_ms - c->started_ms > REPORTS_FRESH_MS &&
                now_ms - dps[k].last_report_unix_ms > REPORTS_FRESH_MS)
                *lost = (int)i;
            if (dps[k].rejected_generation >= c->gen) {
                snprintf(why[i], sizeof(why[i]), "%s",
                         dps[k].rejection_reason ? dps[k].rejection_reason : "");
                rejected[i] = why[i];
            }
        }
    }
    store_dataplanes_free(dps, n);
}

void canary_tick(struct canary *c, int64_t now_ms)
{
    if (c == NULL || !baking(c) || now_ms - c->last_tick_ms < CANARY_TICK_MS)
        return;
    c->last_tick_ms = now_ms;
    if (c->resumed && !rehold(c))
        return;
    bool acked[ROLLOUT_CANARY_MAX] = {0};
    const char *rejected[ROLLOUT_CANARY_MAX] = {0};
    char why[ROLLOUT_CANARY_MAX][200];
    int lost;
    acks(c, now_ms, acked, rejected, why, &lost);
    if (lost >= 0) {
        snprintf(c->reason, sizeof(c->reason), "canary %s stopped reporting for over %d s",
                 c->nodes[lost], REPORTS_FRESH_MS / 1000);
        roll_back(c, CANARY_FAILED, "rollout", now_ms);
        return;
    }
    bool all = true;
    for (size_t i = 0; i < c->n_nodes; i++)
        all = all && acked[i] && rejected[i] == NULL;
    if (all && c->status == CANARY_WAIT_ACK) {
        c->status = CANARY_BAKING;
        c->acked_ms = now_ms;
        base_reset(c, now_ms);
        lb_log(LB_LOG_INFO, "canary_applied",
               "version %llu applied by its %zu canaries: bake of %lld ms",
               (unsigned long long)c->version, c->n_nodes, (long long)c->bake_ms);
    }
    int64_t reported = 0;
    if (c->status == CANARY_BAKING)
        windows(c, now_ms, &reported);
    struct rollout_canary_input in = {
        .now_ms = now_ms,
        .started_ms = c->started_ms,
        .acked_ms = c->status == CANARY_BAKING ? c->acked_ms : 0,
        .reported_ms = reported,
        .bake_ms = c->bake_ms,
        .ack_timeout_ms = ROLLOUT_CANARY_ACK_MS,
        .max_rate = c->max_rate,
        .n = c->n_nodes,
        .nodes = c->node_ptr,
        .acked = acked,
        .rejected = rejected,
        .canary = c->win_canary,
        .rest = c->win_rest,
    };
    char reason[sizeof(c->reason)];
    enum rollout_verdict v =
        rollout_canary_eval(&in, reason, sizeof(reason), &c->figure, &c->limit);
    if (v == ROLLOUT_PASS) {
        promote(c, now_ms);
    } else if (v == ROLLOUT_FAIL) {
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
        for (size_t i = 0; i < c->n_nodes; i++)
            c->nacks += rejected[i] != NULL;
        roll_back(c, CANARY_FAILED, "rollout", now_ms);
    }
}

/* ---- start, abort, views (rollout_run.h) ------------------------------------------ */

/* The data planes that reported within REPORTS_FRESH_MS: the canary candidates. */
static int known_nodes(struct canary *c, int64_t now_ms, const char *spec, struct lb_err *err)
{
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    int rc = cp_dataplanes(c->cp, &dps, &n, err);
    if (rc != LB_OK)
        return rc;
    const char **known = calloc(n ? n : 1, sizeof(*known));
    size_t k = 0;
    for (size_t i = 0; known != NULL && i < n; i++)
        if (now_ms - dps[i].last_report_unix_ms <= REPORTS_FRESH_MS)
            known[k++] = dps[i].node_id;
    rc = known == NULL ? lb_err_set(err, LB_ENOMEM, 0, "out of memory")
                       : rollout_canary_pick(spec, known, k, c->nodes, &c->n_nodes, err);
    free(known);
    store_dataplanes_free(dps, n);
    for (size_t i = 0; i < c->n_nodes; i++)
        c->node_ptr[i] = c->nodes[i];
    return rc;
}

static int canary_start(struct canary *c, const struct canary_request *rq, uint64_t *version,
                        int64_t now_ms, struct lb_err *err)
{
    if (rq->author == NULL || rq->author[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "a write needs an author");
    if (rq->max_error_rate > 1)
        return lb_err_set(err, LB_EINVAL, 0, "max_error_rate: between 0 and 1");
    if (cp_config(c->cp) == NULL)
        return lb_err_set(err, LB_ECONFLICT, 0, "no active config: apply one first");
    int rc = known_nodes(c, now_ms, rq->nodes, err);
    if (rc != LB_OK)
        return rc;
    c->n_ids = 0;
    if (ids_take(c) != LB_OK)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    c->pre_version = cp_active_version(c->cp);
    if ((rc = cp_canary_hold(c->cp, c->node_ptr, c->n_nodes, err)) != LB_OK)
        return rc;
    char comment[400];
    snprintf(comment, sizeof(comment), "staged rollout on %s%s%s", rq->nodes,
             rq->comment && rq->comment[0] ? ": " : "", rq->comment ? rq->comment : "");
    struct cp_write w = {.author = rq->author, .comment = comment};
    bool unchanged = false;
    c->status = CANARY_WAIT_ACK; /* what is built now names the canaries */
    c->own_write = true;
    c->version = c->final_version = 0;
    c->started_ms = now_ms;
    c->ended_ms = 0;
    c->reason[0] = '\0';
    c->bake_ms = rq->bake_ms < 0 ? ROLLOUT_DEFAULT_BAKE : rq->bake_ms;
    c->max_rate = rq->max_error_rate < 0 ? ROLLOUT_DEFAULT_RATE : rq->max_error_rate;
    char *text = encode(c, CANARY_WAIT_ACK); /* stored with the version, which it names */
    store_meta_attach(cp__store(c->cp), CANARY_META, text, "$.version");
    rc = text ? cp_apply(c->cp, rq->text, rq->len, rq->json ? CP_FORMAT_JSON : CP_FORMAT_YAML, &w,
                         version, &unchanged, NULL, err)
              : lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    store_meta_attach(cp__store(c->cp), NULL, NULL, NULL);
    free(text);
    c->own_write = false;
    if (rc == LB_OK && unchanged)
        rc = lb_err_set(err, LB_ECONFLICT, 0,
                        "the config is the active version %llu: nothing to "
                        "stage",
                        (unsigned long long)*version);
    if (rc != LB_OK) {
        c->status = CANARY_NONE;
        cp_canary_release(c->cp);
        return rc;
    }
    ids_take(c); /* without the new backends the rest-of-fleet window is all there is */
    c->version = *version;
    c->gen = cp_generation(c->cp);
    c->acked_ms = 0;
    c->figure = c->limit = 0;
    c->win_canary = c->win_rest = (struct rollout_counts){0};
    lb_log(LB_LOG_INFO, "canary_started",
           "version %llu (generation %llu) staged on %s; the others keep version %llu",
           (unsigned long long)c->version, (unsigned long long)c->gen, rq->nodes,
           (unsigned long long)c->pre_version);
    return LB_OK;
}

int canary__start(struct canary *c, const struct canary_request *rq, uint64_t *version,
                  int64_t now_ms, struct lb_err *err)
{
    if (baking(c))
        return lb_err_set(err, LB_ECONFLICT, 0, "the staged rollout of version %llu is baking",
                          (unsigned long long)c->version);
    return canary_start(c, rq, version, now_ms, err);
}

int canary__abort(struct canary *c, const char *who, int64_t now_ms, struct lb_err *err)
{
    if (!baking(c))
        return lb_err_set(err, LB_ENOTFOUND, 0, "no staged rollout is baking");
    snprintf(c->reason, sizeof(c->reason), "aborted by %s", who);
    roll_back(c, CANARY_ABORTED, who, now_ms);
    if (baking(c))
        return lb_err_set(err, LB_ESTORE, 0, "the rollback could not be stored (tried again)");
    return LB_OK;
}

const char *const *canary__nodes(const struct canary *c, size_t *n)
{
    *n = c != NULL && baking(c) ? c->n_nodes : 0;
    return *n ? c->node_ptr : NULL;
}

void canary__view(const struct canary *c, struct canary_view *v)
{
    memset(v, 0, sizeof(*v));
    if (c == NULL || c->status == CANARY_NONE)
        return;
    v->any = true;
    v->active = baking(c);
    v->id = c->version;
    v->pre_version = c->pre_version;
    v->final_version = c->final_version;
    v->status = status_names[c->status];
    v->reason = c->reason;
    v->n_nodes = c->n_nodes;
    v->nodes = c->node_ptr;
    v->bake_ms = c->bake_ms;
    v->started_ms = c->started_ms;
    v->acked_ms = c->acked_ms;
    v->ended_ms = c->ended_ms;
    v->max_error_rate = c->max_rate;
    v->figure = c->figure;
    v->limit = c->limit;
    v->canary_requests = c->win_canary.requests;
    v->canary_errors = c->win_canary.errors;
    v->rest_requests = c->win_rest.requests;
    v->rest_errors = c->win_rest.errors;
}

void canary__counts(const struct canary *c, uint64_t *promoted, uint64_t *failed, uint64_t *nacks)
{
    *promoted = c ? c->promoted : 0;
    *failed = c ? c->failed : 0;
    *nacks = c ? c->nacks : 0;
}

const char *canary__role(const struct canary *c, const char *node, char *buf, size_t size)
{
    if (c != NULL && baking(c) && is_canary(c, node))
        snprintf(buf, size, "canary of version %llu", (unsigned long long)c->version);
    else
        snprintf(buf, size, "stable");
    return buf;
}
