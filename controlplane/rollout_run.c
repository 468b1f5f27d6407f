/* controlplane/rollout_run.c: the rollout engine (see rollout_run.h): feeds
 * rollout_next() with the checker's verdicts and the reports' counters and
 * makes the writes it asks for, each with its state in one transaction. */
#include "rollout_run.h"

#include "rollout_canary.h"
#include "rollout_sample.h"

#include "config.h"
#include "cp.h"
#include "cp_guard.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_prom.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One data plane's counters for one backend at the start of the bake. */
struct rollouts {
    struct cp *cp;
    struct ev_loop *loop;
    ev_timer tick;
    bool have; /* <spec>/<state> hold the newest rollout */
    struct rollout_spec spec;
    struct rollout_state state;
    uint64_t last_version;      /* of the newest rollout */
    struct rollout_figures fig; /* the last gate check */
    bool own_write;             /* the engine is writing: the write check lets it through */
    bool based;                 /* <base> holds the bake window's start */
    struct rollout_base_entry *base;
    size_t n_base, cap_base;
    uint64_t rollbacks[3]; /* gate, abort, undo */
    uint64_t transitions;  /* stored transitions */
    uint64_t write_errors; /* transitions that failed to store (tried again) */
    struct canary *canary; /* the staged config rollout (rollout_canary.h) */
};

/* ---- samples ------------------------------------------------------------------ */

/* Adds backend <id>'s current samples to the base. */
static void base_take(struct rollouts *ro, const char *id, int64_t now_ms)
{
    rollout_base_take(&ro->base, &ro->n_base, &ro->cap_base, cp_reports(ro->cp), id, now_ms);
}

/* The bake window starts now: the new backends of the step and the old ones
 * still in the config. */
static void base_reset(struct rollouts *ro, int64_t now_ms)
{
    ro->n_base = 0;
    size_t first, n;
    rollout_batch(&ro->spec, ro->state.step, true, &first, &n);
    for (size_t i = 0; i < n; i++)
        base_take(ro, ro->spec.add_id[first + i], now_ms);
    for (size_t i = 0; i < ro->spec.n_remove; i++)
        if (cp_backend_find(ro->cp, ro->spec.remove_id[i]) >= 0)
            base_take(ro, ro->spec.remove_id[i], now_ms);
    ro->based = true;
}

/* Backend <id>'s counters since the base; *<reported_ms> (may be NULL)
 * gets the oldest of the latest reports counted. */
static struct rollout_counts window_of(const struct rollouts *ro, const char *id, int64_t now_ms,
                                       int64_t *reported_ms)
{
    struct rollout_sample *s = NULL;
    size_t ns = 0;
    rollout_samples_read(cp_reports(ro->cp), id, now_ms, &s, &ns);
    if (reported_ms != NULL)
        *reported_ms = 0;
    for (size_t i = 0; reported_ms != NULL && i < ns; i++)
        if (*reported_ms == 0 || s[i].received_ms < *reported_ms)
            *reported_ms = s[i].received_ms;
    struct rollout_sample *bs = calloc(ro->n_base ? ro->n_base : 1, sizeof(*bs));
    size_t nb = 0;
    for (size_t i = 0; bs != NULL && i < ro->n_base; i++)
        if (strcmp(ro->base[i].id, id) == 0)
            bs[nb++] = ro->base[i].s;
    struct rollout_counts c = rollout_window_delta(bs, nb, s, ns);
    free(bs);
    free(s);
    return c;
}

/* ---- input --------------------------------------------------------------------- */

static enum rollout_health health_of(struct rollouts *ro, const char *id)
{
    struct store_backend_health *h = NULL;
    if (cp_health_get(ro->cp, id, &h, NULL) != LB_OK)
        return ROLLOUT_HEALTH_UNKNOWN;
    enum rollout_health out = h->health == STORE_HEALTH_UP     ? ROLLOUT_HEALTH_UP
                              : h->health == STORE_HEALTH_DOWN ? ROLLOUT_HEALTH_DOWN
                                                               : ROLLOUT_HEALTH_UNKNOWN;
    store_health_free(h);
    return out;
}

static bool in_list(const char (*ids)[ROLLOUT_ID_MAX], size_t first, size_t n, const char *id)
{
    for (size_t i = first; i < first + n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

static void gather(struct rollouts *ro, int64_t now_ms, struct rollout_input *in,
                   enum rollout_health *health, struct rollout_counts *win)
{
    const struct rollout_spec *s = &ro->spec;
    size_t first, n;
    rollout_batch(s, ro->state.step, true, &first, &n);
    *in = (struct rollout_input){.now_ms = now_ms, .health = health, .window = win};
    for (size_t i = 0; i < n; i++) {
        health[i] = health_of(ro, s->add_id[first + i]);
        int64_t rep = 0;
        win[i] = ro->based ? window_of(ro, s->add_id[first + i], now_ms, &rep)
                           : (struct rollout_counts){0};
        if (i == 0 || rep < in->reported_ms)
            in->reported_ms = rep;
    }
    for (size_t i = 0; ro->based && i < s->n_remove; i++) {
        if (cp_backend_find(ro->cp, s->remove_id[i]) < 0)
            continue;
        struct rollout_counts c = window_of(ro, s->remove_id[i], now_ms, NULL);
        in->old_window.requests += c.requests;
        in->old_window.errors += c.errors;
    }
    size_t rfirst, rn;
    rollout_batch(s, ro->state.step, false, &rfirst, &rn);
    const struct config *cfg = cp_config(ro->cp);
    for (size_t i = 0; cfg != NULL && i < cfg->n_backends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        if (b->state == CONFIG_BACKEND_ACTIVE && !in_list(s->remove_id, rfirst, rn, b->id) &&
            health_of(ro, b->id) == ROLLOUT_HEALTH_UP)
            in->healthy_after_remove++;
    }
}

/* ---- writes ---------------------------------------------------------------------- */

/* "a, b, c" of ids [first, first + n) into <out>. */
static void id_list(const char (*ids)[ROLLOUT_ID_MAX], size_t first, size_t n, char *out,
                    size_t size)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = first; i < first + n && off < size; i++)
        off += (size_t)snprintf(out + off, size - off, "%s%s", i > first ? ", " : "", ids[i]);
}

/* The version of an ADD, ACTIVATE or REMOVE transition. */
static int write_step(struct rollouts *ro, enum rollout_action act, uint64_t *version,
                      struct lb_err *err)
{
    const struct rollout_spec *s = &ro->spec;
    size_t first, n;
    bool rm = act == ROLLOUT_ACT_REMOVE;
    rollout_batch(s, ro->state.step, !rm, &first, &n);
    char list[ROLLOUT_MAX_BACKENDS * (ROLLOUT_ID_MAX + 2)];
    id_list(rm ? s->remove_id : s->add_id, first, n, list, sizeof(list));
    static const char *const verbs[] = {[ROLLOUT_ACT_ADD] = "add",
                                        [ROLLOUT_ACT_ACTIVATE] = "activate",
                                        [ROLLOUT_ACT_REMOVE] = "remove"};
    char comment[sizeof(list) + 160];
    snprintf(comment, sizeof(comment), "rollout %llu step %u/%u: %s %s%s",
             (unsigned long long)s->id, ro->state.step + 1, rollout_steps(s), verbs[act], list,
             act == ROLLOUT_ACT_ADD ? " (standby until healthy)" : "");
    struct cp_write w = {.author = s->author, .comment = comment};
    struct cp_backend_change chg[ROLLOUT_MAX_BACKENDS] = {{0}};
    const char *ids[ROLLOUT_MAX_BACKENDS] = {0};
    for (size_t i = 0; i < n; i++) {
        ids[i] = rm ? s->remove_id[first + i] : s->add_id[first + i];
        chg[i] = (struct cp_backend_change){.id = s->add_id[first + i],
                                            .url = s->add_url[first + i],
                                            .has_state = true,
                                            .state = CONFIG_BACKEND_DRAINING};
    }
    struct cp_replace rp = {0};
    if (act == ROLLOUT_ACT_ADD) {
        rp.add = chg;
        rp.n_add = n;
    } else if (act == ROLLOUT_ACT_ACTIVATE) {
        rp.activate = ids;
        rp.n_activate = n;
    } else {
        rp.remove = ids;
        rp.n_remove = n;
    }
    char action[32];
    snprintf(action, sizeof(action), "rollout.%s", verbs[act]);
    return cp_backends_replace(ro->cp, &rp, &w, action, version, err);
}

/* The version of a ROLLBACK transition to <next>. */
static int write_rollback(struct rollouts *ro, const struct rollout_state *next, const char *who,
                          uint64_t *version, struct lb_err *err)
{
    const struct rollout_spec *s = &ro->spec;
    char comment[400];
    snprintf(comment, sizeof(comment), "rollout %llu %s: %s; back to version %llu",
             (unsigned long long)s->id, rollout_status_name(next->status), next->reason,
             (unsigned long long)s->pre_version);
    struct cp_write w = {.author = who ? who : s->author, .comment = comment};
    return cp_rollback(ro->cp, s->pre_version, &w, version, err);
}

/* Makes the write of <act> with <next> as the rollout's state, in one
 * transaction; on success <next> becomes the state. */
static int transition(struct rollouts *ro, enum rollout_action act, const struct rollout_state *nx,
                      const char *who, struct lb_err *err)
{
    struct rollout_state next = *nx;
    char *spec = rollout_spec_encode(&ro->spec);
    char *state = rollout_state_encode(&next);
    if (spec == NULL || state == NULL) {
        free(spec);
        free(state);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    const struct store_rollout_row row = {.id = ro->spec.id,
                                          .status = rollout_status_name(next.status),
                                          .spec = spec,
                                          .state = state};
    struct store *st = cp__store(ro->cp);
    uint64_t version = 0;
    int rc;
    if (act == ROLLOUT_ACT_STATE) {
        rc = store_rollout_put(st, &row, err);
    } else {
        store_rollout_attach(st, &row);
        ro->own_write = true;
        rc = act == ROLLOUT_ACT_ROLLBACK ? write_rollback(ro, &next, who, &version, err)
                                         : write_step(ro, act, &version, err);
        ro->own_write = false;
        store_rollout_attach(st, NULL);
    }
    free(spec);
    free(state);
    if (rc != LB_OK)
        return rc;
    if (version != 0) {
        next.last_version = version;
        ro->last_version = version;
    }
    if (act == ROLLOUT_ACT_ROLLBACK)
        next.final_version = version;
    bool entering_bake =
        next.phase == ROLLOUT_BAKE &&
        (ro->state.phase != ROLLOUT_BAKE || ro->state.phase_since_ms != next.phase_since_ms);
    ro->state = next;
    ro->transitions++;
    if (entering_bake)
        base_reset(ro, next.phase_since_ms);
    return LB_OK;
}

static void log_transition(const struct rollouts *ro, enum rollout_action act)
{
    const struct rollout_state *st = &ro->state;
    if (act == ROLLOUT_ACT_ROLLBACK) {
        lb_log(LB_LOG_WARN, "rollout_rolled_back",
               "rollout %llu %s: %s; version %llu is version %llu's content",
               (unsigned long long)ro->spec.id, rollout_status_name(st->status), st->reason,
               (unsigned long long)st->final_version, (unsigned long long)ro->spec.pre_version);
        return;
    }
    lb_log(LB_LOG_INFO, "rollout_step", "rollout %llu step %u/%u: %s %s (version %llu)",
           (unsigned long long)ro->spec.id, st->step + (st->phase == ROLLOUT_END ? 0 : 1),
           rollout_steps(&ro->spec), rollout_status_name(st->status), rollout_phase_name(st->phase),
           (unsigned long long)ro->last_version);
}

/* The rollback itself is refused (the pre-rollout config cannot be served
 * any more: a TLS file gone, a name that stopped resolving): the rollout
 * ends failed without it, saying so, so that the operator can take over. */
static void fail_without_rollback(struct rollouts *ro, struct rollout_state *next,
                                  const struct lb_err *e)
{
    size_t len = strlen(next->reason);
    snprintf(next->reason + len, sizeof(next->reason) - len,
             "; rolling back to version %llu was refused: %s",
             (unsigned long long)ro->spec.pre_version, e->msg);
    struct lb_err e2 = {0};
    if (transition(ro, ROLLOUT_ACT_STATE, next, NULL, &e2) != LB_OK) {
        ro->write_errors++;
        lb_log(LB_LOG_ERROR, "rollout_write_failed", "rollout %llu: %s (tried again)",
               (unsigned long long)ro->spec.id, e2.msg);
        return;
    }
    lb_log(LB_LOG_ERROR, "rollout_rollback_refused",
           "rollout %llu failed: %s; version %llu stays active", (unsigned long long)ro->spec.id,
           ro->state.reason, (unsigned long long)cp_active_version(ro->cp));
}

/* A write refused for a reason a retry cannot fix. A step's write (a URL
 * that does not resolve, an id taken meanwhile): the rollout fails and
 * rolls back. The rollback <wanted> itself: see fail_without_rollback(). */
static void fail_on_write(struct rollouts *ro, int64_t now_ms, const struct lb_err *e,
                          enum rollout_action act, const struct rollout_state *wanted)
{
    struct rollout_state next = *wanted;
    if (act == ROLLOUT_ACT_ROLLBACK) {
        fail_without_rollback(ro, &next, e);
        return;
    }
    next = ro->state;
    snprintf(next.reason, sizeof(next.reason), "step %u/%u: %s", ro->state.step + 1,
             rollout_steps(&ro->spec), e->msg);
    next.status = ROLLOUT_FAILED;
    next.phase = ROLLOUT_END;
    next.phase_since_ms = now_ms;
    next.ended_ms = now_ms;
    bool changed = cp_active_version(ro->cp) != ro->spec.pre_version;
    struct lb_err e2 = {0};
    int rc = transition(ro, changed ? ROLLOUT_ACT_ROLLBACK : ROLLOUT_ACT_STATE, &next, NULL, &e2);
    if (rc == LB_OK) {
        ro->rollbacks[0] += changed;
        log_transition(ro, ROLLOUT_ACT_ROLLBACK);
    } else if (rc == LB_ESTORE || rc == LB_ENOMEM || !changed) {
        ro->write_errors++;
        lb_log(LB_LOG_ERROR, "rollout_write_failed", "rollout %llu: %s (tried again)",
               (unsigned long long)ro->spec.id, e2.msg);
    } else {
        fail_without_rollback(ro, &next, &e2);
    }
}

void rollouts_tick(struct rollouts *ro, int64_t now_ms)
{
    if (ro == NULL)
        return;
    canary_tick(ro->canary, now_ms);
    if (!ro->have || ro->state.status != ROLLOUT_RUNNING)
        return;
    if (ro->state.phase == ROLLOUT_BAKE && !ro->based) {
        ro->state.phase_since_ms = now_ms; /* after a restart: a fresh window */
        base_reset(ro, now_ms);
    }
    enum rollout_health health[ROLLOUT_MAX_BACKENDS];
    struct rollout_counts win[ROLLOUT_MAX_BACKENDS];
    struct rollout_input in;
    gather(ro, now_ms, &in, health, win);
    struct rollout_state next;
    struct rollout_figures fig;
    enum rollout_action act = rollout_next(&ro->spec, &ro->state, &in, &next, &fig);
    if (fig.valid)
        ro->fig = fig;
    if (act == ROLLOUT_ACT_NONE)
        return;
    struct lb_err e = {0};
    int rc = transition(ro, act, &next, NULL, &e);
    if (rc == LB_OK) {
        ro->rollbacks[0] += act == ROLLOUT_ACT_ROLLBACK;
        log_transition(ro, act);
    } else if (rc == LB_ESTORE || rc == LB_ENOMEM) {
        ro->write_errors++;
        lb_log(LB_LOG_ERROR, "rollout_write_failed", "rollout %llu: %s (tried again)",
               (unsigned long long)ro->spec.id, e.msg);
    } else {
        fail_on_write(ro, now_ms, &e, act, &next);
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rollouts *ro = w->data;
    rollouts_tick(ro, (int64_t)(ev_now(loop) * 1000.0));
}

/* ---- start, load ------------------------------------------------------------------- */

/* Loads the stored row into *<spec>, *<state> and *<last>. */
static int load_row(const struct store_rollout *row, struct rollout_spec *spec,
                    struct rollout_state *state, struct lb_err *err)
{
    int rc = rollout_spec_decode(row->spec, spec, err);
    if (rc == LB_OK)
        rc = rollout_state_decode(row->state, state, err);
    if (rc == LB_OK) {
        state->last_version = row->last_version;
        if (state->status == ROLLOUT_FAILED || state->status == ROLLOUT_ABORTED ||
            state->status == ROLLOUT_UNDONE)
            state->final_version = row->last_version;
    }
    return rc;
}

static void rollouts_free(struct rollouts *ro);

/* The engine of <cp>; the newest rollout resumes if it is active. NULL with
 * <err> filled on a store error or no memory. */
static struct rollouts *rollouts_new(struct cp *cp, struct ev_loop *loop, struct lb_err *err)
{
    struct rollouts *ro = calloc(1, sizeof(*ro));
    if (ro == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
    ro->cp = cp;
    ro->loop = loop;
    if ((ro->canary = canary_new(cp, (int64_t)(ev_now(loop) * 1000.0))) == NULL) {
        free(ro);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
    ev_timer_init(&ro->tick, on_tick, ROLLOUTS_TICK_S, ROLLOUTS_TICK_S);
    ro->tick.data = ro;
    struct store_rollout *rows = NULL;
    size_t n = 0;
    if (store_rollouts_list(cp__store(cp), 0, 1, &rows, &n, err) != LB_OK) {
        canary_free(ro->canary);
        free(ro);
        return NULL;
    }
    struct lb_err le = {0};
    if (n == 1 && load_row(&rows[0], &ro->spec, &ro->state, &le) != LB_OK) {
        /* the admin API stays up to repair things; the row stays as it is */
        lb_log(LB_LOG_ERROR, "rollout_unreadable", "rollout %llu not resumed: %s",
               (unsigned long long)rows[0].id, le.msg);
    } else if (n == 1) {
        ro->have = true;
        ro->last_version = rows[0].last_version;
        int64_t now = (int64_t)(ev_now(loop) * 1000.0);
        if (rollout_resume_after_restart(&ro->state, now))
            lb_log(LB_LOG_INFO, "rollout_resumed", "rollout %llu %s at step %u/%u, phase %s",
                   (unsigned long long)ro->spec.id, rollout_status_name(ro->state.status),
                   ro->state.step + 1, rollout_steps(&ro->spec),
                   rollout_phase_name(ro->state.phase));
    }
    store_rollouts_free(rows, n);
    ev_timer_start(loop, &ro->tick);
    return ro;
}

static void rollouts_free(struct rollouts *ro)
{
    if (ro == NULL)
        return;
    ev_timer_stop(ro->loop, &ro->tick);
    canary_free(ro->canary);
    free(ro->base);
    free(ro);
}

/* LB_OK when a config write by someone else may go ahead (no active
 * rollout or canary, or the write is the engine's own), else LB_ECONFLICT
 * naming what holds the config. */
static int write_check(const struct rollouts *ro, struct lb_err *err)
{
    if (ro == NULL || ro->own_write)
        return LB_OK;
    if (canary_blocks(ro->canary, err))
        return LB_ECONFLICT;
    if (!ro->have || !rollout_is_active(ro->state.status))
        return LB_OK;
    return lb_err_set(err, LB_ECONFLICT, 0,
                      "rollout %llu is %s (step %u/%u): it owns the backends until it ends; "
                      "`lbctl rollout abort %llu` rolls it back",
                      (unsigned long long)ro->spec.id, rollout_status_name(ro->state.status),
                      ro->state.step + 1, rollout_steps(&ro->spec),
                      (unsigned long long)ro->spec.id);
}

uint64_t rollouts_current(const struct rollouts *ro)
{
    return ro != NULL && ro->have ? ro->spec.id : 0;
}

/* ---- the core's guard (cp_guard.h) ------------------------------------------------- */

static int guard_write_check(const void *ctx, struct lb_err *err)
{
    return write_check(ctx, err);
}

static const char *const *guard_only_nodes(const void *ctx, size_t *n)
{
    const struct rollouts *ro = ctx;
    return canary__nodes(ro->canary, n);
}

/* A backend write staged on canaries: the staged rollout of <json>. */
static int guard_stage(void *ctx, const char *json, size_t len, const struct cp_canary *canary,
                       const struct cp_write *w, uint64_t *version, struct lb_err *err)
{
    const struct canary_request rq = {.text = json,
                                      .len = len,
                                      .json = true,
                                      .nodes = canary->nodes,
                                      .bake_ms = canary->bake_ms,
                                      .max_error_rate = canary->max_error_rate,
                                      .author = w->author,
                                      .comment = w->comment};
    return rollouts_canary_start(ctx, &rq, version, err);
}

static void guard_free(void *ctx)
{
    rollouts_free(ctx);
}

static const struct cp_guard_ops guard = {
    .write_check = guard_write_check,
    .only_nodes = guard_only_nodes,
    .stage = guard_stage,
    .free = guard_free,
};

int rollouts_attach(struct cp *cp, struct ev_loop *loop, struct lb_err *err)
{
    struct rollouts *ro = rollouts_new(cp, loop, err);
    if (ro == NULL)
        return err != NULL && err->code ? err->code : LB_ENOMEM;
    int rc = cp_guard_set(cp, &guard, ro, err);
    if (rc != LB_OK)
        rollouts_free(ro);
    return rc;
}

struct rollouts *rollouts_of(const struct cp *cp)
{
    return cp_guard_ctx(cp, &guard);
}

/* What the operator's requests get without an engine. */
static int no_engine(struct lb_err *err)
{
    return lb_err_set(err, LB_ENOTFOUND, 0, "this control plane runs no rollout engine");
}

/* "<host>-<port>" of <url> as the config derives an id; false when <url>
 * is not http(s)://host[:port][/...]. */
static bool derive_id(const char *url, char *out, size_t size)
{
    const char *p;
    unsigned port;
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
        port = 80;
    } else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        port = 443;
    } else {
        return false;
    }
    size_t alen = strcspn(p, "/?#");
    const char *host = p, *colon = NULL;
    size_t hlen = alen;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', alen);
        if (close == NULL)
            return false;
        host = p + 1;
        hlen = (size_t)(close - p - 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else if ((colon = memchr(p, ':', alen)) != NULL) {
        hlen = (size_t)(colon - p);
    }
    if (colon != NULL) {
        char *end;
        unsigned long v = strtoul(colon + 1, &end, 10);
        if (end != p + alen || v == 0 || v > 65535)
            return false;
        port = (unsigned)v;
    }
    if (hlen == 0)
        return false;
    int w = snprintf(out, size, "%.*s-%u", (int)hlen, host, port);
    return w > 0 && (size_t)w < size;
}

/* Fills <s> from <rq> against the active config. */
static int spec_build(struct rollouts *ro, const struct rollout_request *rq, struct rollout_spec *s,
                      struct lb_err *err)
{
    const struct config *cfg = cp_config(ro->cp);
    if (cfg == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "no config is active yet; apply one first");
    if (rq->n_add > ROLLOUT_MAX_BACKENDS || rq->n_remove > ROLLOUT_MAX_BACKENDS)
        return lb_err_set(err, LB_EINVAL, 0, "a rollout adds and removes at most %d backends each",
                          ROLLOUT_MAX_BACKENDS);
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < rq->n_add; i++) {
        const char *url = rq->add_urls[i], *id = rq->add_ids ? rq->add_ids[i] : NULL;
        if (url == NULL || strlen(url) >= ROLLOUT_URL_MAX)
            return lb_err_set(err, LB_EINVAL, 0, "add[%zu]: a url of at most %d bytes is needed", i,
                              ROLLOUT_URL_MAX - 1);
        snprintf(s->add_url[i], ROLLOUT_URL_MAX, "%s", url);
        if (id != NULL && id[0] != '\0') {
            if (strlen(id) >= ROLLOUT_ID_MAX)
                return lb_err_set(err, LB_EINVAL, 0, "add[%zu]: id too long", i);
            snprintf(s->add_id[i], ROLLOUT_ID_MAX, "%s", id);
        } else if (!derive_id(url, s->add_id[i], ROLLOUT_ID_MAX)) {
            return lb_err_set(err, LB_EINVAL, 0, "add[%zu]: \"%s\" is not an http(s):// URL", i,
                              url);
        }
        for (size_t j = 0; j < cfg->n_backends; j++)
            if (strcmp(cfg->backends[j].id, s->add_id[i]) == 0 ||
                strcmp(cfg->backends[j].url, url) == 0)
                return lb_err_set(err, LB_EINVAL, 0,
                                  "add[%zu]: backend %s already has id %s or url %s", i,
                                  cfg->backends[j].id, s->add_id[i], url);
    }
    s->n_add = rq->n_add;
    for (size_t i = 0; i < rq->n_remove; i++) {
        if (rq->remove[i] == NULL || cp_backend_find(ro->cp, rq->remove[i]) < 0)
            return lb_err_set(err, LB_EINVAL, 0, "remove: no backend has id \"%s\"",
                              rq->remove[i] ? rq->remove[i] : "");
        snprintf(s->remove_id[i], ROLLOUT_ID_MAX, "%s", rq->remove[i]);
    }
    s->n_remove = rq->n_remove;
    for (size_t j = 0; rq->n_remove == 0 && j < cfg->n_backends; j++) {
        if (cfg->backends[j].state != CONFIG_BACKEND_ACTIVE)
            continue;
        if (s->n_remove == ROLLOUT_MAX_BACKENDS)
            return lb_err_set(err, LB_EINVAL, 0, "more than %d active backends: name them",
                              ROLLOUT_MAX_BACKENDS);
        snprintf(s->remove_id[s->n_remove++], ROLLOUT_ID_MAX, "%s", cfg->backends[j].id);
    }
    s->batch = rq->batch ? rq->batch : 1;
    s->interval_ms = rq->interval_ms < 0 ? ROLLOUT_DEFAULT_INTVL : rq->interval_ms;
    s->bake_ms = rq->bake_ms < 0 ? ROLLOUT_DEFAULT_BAKE : rq->bake_ms;
    int64_t hb = 10 * (int64_t)cfg->healthcheck.interval_ms;
    s->health_timeout_ms = rq->health_timeout_ms > 0 ? rq->health_timeout_ms
                           : hb > 30000              ? hb
                                                     : 30000;
    s->max_error_rate = rq->max_error_rate < 0 ? ROLLOUT_DEFAULT_RATE : rq->max_error_rate;
    s->pre_version = cp_active_version(ro->cp);
    snprintf(s->author, sizeof(s->author), "%s", rq->author ? rq->author : "");
    snprintf(s->comment, sizeof(s->comment), "%s", rq->comment ? rq->comment : "");
    if (s->author[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "a rollout needs an author");
    return rollout_spec_check(s, err);
}

int rollouts_start(struct rollouts *ro, const struct rollout_request *rq, uint64_t *id,
                   struct lb_err *err)
{
    if (ro == NULL)
        return no_engine(err);
    int rc = write_check(ro, err);
    if (rc != LB_OK)
        return rc;
    struct rollout_spec *s = malloc(sizeof(*s));
    if (s == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    struct rollout_state st;
    int64_t now = (int64_t)(ev_now(ro->loop) * 1000.0);
    rollout_state_init(&st, now);
    rc = spec_build(ro, rq, s, err);
    if (rc == LB_OK)
        rc = store_rollout_next_id(cp__store(ro->cp), &s->id, err);
    char *spec = rc == LB_OK ? rollout_spec_encode(s) : NULL;
    char *state = rc == LB_OK ? rollout_state_encode(&st) : NULL;
    if (rc == LB_OK && (spec == NULL || state == NULL))
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    if (rc == LB_OK) {
        const struct store_rollout_row row = {
            .id = s->id, .status = "running", .spec = spec, .state = state};
        rc = store_rollout_put(cp__store(ro->cp), &row, err);
    }
    if (rc == LB_OK) {
        char detail[400];
        snprintf(detail, sizeof(detail),
                 "rollout %llu: add %zu, remove %zu, batch %u, %u steps%s%s",
                 (unsigned long long)s->id, s->n_add, s->n_remove, s->batch, rollout_steps(s),
                 s->comment[0] ? " -- " : "", s->comment);
        store_audit_add(cp__store(ro->cp), s->author, "rollout.start", detail, s->pre_version, 0,
                        NULL);
        lb_log(LB_LOG_INFO, "rollout_started", "%s", detail);
        ro->spec = *s;
        ro->state = st;
        ro->have = true;
        ro->based = false;
        ro->last_version = 0;
        ro->fig = (struct rollout_figures){0};
        *id = s->id;
    }
    free(spec);
    free(state);
    free(s);
    return rc;
}

/* ---- operator requests, reads -------------------------------------------------------- */

int rollouts_control(struct rollouts *ro, uint64_t id, enum rollouts_op op, const char *who,
                     struct lb_err *err)
{
    if (ro == NULL)
        return no_engine(err);
    if (!ro->have || ro->spec.id != id) {
        struct store_rollout *rows = NULL;
        size_t n = 0;
        int rc = store_rollouts_list(cp__store(ro->cp), id, 1, &rows, &n, err);
        store_rollouts_free(rows, n);
        if (rc != LB_OK)
            return rc;
        if (n == 0)
            return lb_err_set(err, LB_ENOTFOUND, 0, "no rollout has id %llu",
                              (unsigned long long)id);
        /* only the newest rollout can be active or be undone: a later one
         * changed the backends after it */
        return lb_err_set(err, LB_ECONFLICT, 0,
                          "rollout %llu is not the newest one (%llu); only that one can be "
                          "paused, resumed, aborted or undone",
                          (unsigned long long)id, (unsigned long long)rollouts_current(ro));
    }
    int64_t now = (int64_t)(ev_now(ro->loop) * 1000.0);
    struct rollout_state next;
    enum rollout_action act = op == ROLLOUTS_PAUSE    ? rollout_pause(&ro->state, now, &next, err)
                              : op == ROLLOUTS_RESUME ? rollout_resume(&ro->state, now, &next, err)
                              : op == ROLLOUTS_ABORT  ? rollout_abort(&ro->state, now, &next, err)
                                                      : rollout_undo(&ro->state, now, &next, err);
    if (act == ROLLOUT_ACT_NONE)
        return LB_ECONFLICT;
    if (op == ROLLOUTS_RESUME)
        ro->based = false; /* fresh reports only */
    int rc = transition(ro, act, &next, who, err);
    if (rc != LB_OK)
        return rc;
    if (op == ROLLOUTS_ABORT || op == ROLLOUTS_UNDO)
        ro->rollbacks[op == ROLLOUTS_ABORT ? 1 : 2]++;
    static const char *const names[] = {"pause", "resume", "abort", "undo"};
    char detail[240];
    snprintf(detail, sizeof(detail), "rollout %llu: %s at step %u/%u", (unsigned long long)id,
             names[op], ro->state.step + (op == ROLLOUTS_UNDO ? 0 : 1), rollout_steps(&ro->spec));
    char action[32];
    snprintf(action, sizeof(action), "rollout.%s", names[op]);
    store_audit_add(cp__store(ro->cp), who, action, detail, 0, ro->state.final_version, NULL);
    log_transition(ro, act);
    return LB_OK;
}

static int64_t next_in(const struct rollout_spec *s, const struct rollout_state *st, int64_t now)
{
    if (st->status != ROLLOUT_RUNNING)
        return -1;
    int64_t wait = st->phase == ROLLOUT_WAIT_HEALTHY ? s->health_timeout_ms
                   : st->phase == ROLLOUT_BAKE       ? s->bake_ms
                   : st->phase == ROLLOUT_INTERVAL   ? s->interval_ms
                                                     : 0;
    int64_t left = st->phase_since_ms + wait - now;
    return left > 0 ? left : 0;
}

int rollouts_get(struct rollouts *ro, uint64_t id, int64_t now_ms, struct rollout_view *v,
                 struct lb_err *err)
{
    memset(v, 0, sizeof(*v));
    if (ro == NULL)
        return lb_err_set(err, LB_ENOTFOUND, 0, "no rollout has id %llu", (unsigned long long)id);
    struct store_rollout *rows = NULL;
    size_t n = 0;
    int rc = store_rollouts_list(cp__store(ro->cp), id, 1, &rows, &n, err);
    if (rc == LB_OK && n == 0)
        rc = lb_err_set(err, LB_ENOTFOUND, 0, "no rollout has id %llu", (unsigned long long)id);
    if (rc == LB_OK)
        rc = load_row(&rows[0], &v->spec, &v->state, err);
    if (rc == LB_OK) {
        v->last_version = rows[0].last_version;
        v->updated_unix_ms = rows[0].updated_unix_ms;
        if (ro->have && ro->spec.id == id) {
            v->state = ro->state; /* the phase's wait as running now */
            v->fig = ro->fig;
        }
        v->n_steps = rollout_steps(&v->spec);
        v->next_in_ms = next_in(&v->spec, &v->state, now_ms);
    }
    store_rollouts_free(rows, n);
    return rc;
}

int rollouts_ids(struct rollouts *ro, uint64_t *ids, size_t max, size_t *n, struct lb_err *err)
{
    *n = 0;
    if (ro == NULL)
        return LB_OK;
    struct store_rollout *rows = NULL;
    size_t count = 0;
    int rc = store_rollouts_list(cp__store(ro->cp), 0, max, &rows, &count, err);
    for (size_t i = 0; rc == LB_OK && i < count; i++)
        ids[i] = rows[i].id;
    *n = rc == LB_OK ? count : 0;
    store_rollouts_free(rows, count);
    return rc;
}

void rollouts_metrics(const struct rollouts *ro, struct lb_prom *p)
{
    static const struct rollouts none; /* no engine: no rollout */
    if (ro == NULL)
        ro = &none;
    static const enum rollout_status all[] = {ROLLOUT_RUNNING, ROLLOUT_PAUSED,  ROLLOUT_SUCCEEDED,
                                              ROLLOUT_FAILED,  ROLLOUT_ABORTED, ROLLOUT_UNDONE};
    lb_prom_family(p, "lb_cp_rollout_state", "gauge",
                   "1 for the status of the newest rollout, 0 for the others.");
    for (size_t i = 0; i < 6; i++) {
        struct lb_prom_label l = {"state", rollout_status_name(all[i])};
        lb_prom_u64(p, "lb_cp_rollout_state", &l, 1, ro->have && ro->state.status == all[i]);
    }
    lb_prom_family(p, "lb_cp_rollout_steps_done", "gauge",
                   "Steps of the newest rollout whose old backends are removed.");
    lb_prom_u64(p, "lb_cp_rollout_steps_done", NULL, 0, ro->have ? ro->state.steps_done : 0);
    lb_prom_family(p, "lb_cp_rollout_steps", "gauge", "Steps of the newest rollout.");
    lb_prom_u64(p, "lb_cp_rollout_steps", NULL, 0, ro->have ? rollout_steps(&ro->spec) : 0);
    lb_prom_family(p, "lb_cp_rollout_gate_error_ratio", "gauge",
                   "Last error-rate gate check: the worst new backend of the step (new), the "
                   "old backends together (old) and the limit.");
    static const char *const which[] = {"new", "old", "limit"};
    double v[] = {ro->fig.new_rate, ro->fig.old_rate, ro->fig.limit};
    for (size_t i = 0; i < 3; i++) {
        struct lb_prom_label l = {"backends", which[i]};
        lb_prom_f64(p, "lb_cp_rollout_gate_error_ratio", &l, 1, v[i]);
    }
    lb_prom_family(p, "lb_cp_rollout_rollbacks_total", "counter",
                   "Rollouts rolled back since start, by why: a failed gate, abort, undo.");
    static const char *const why[] = {"gate", "abort", "undo"};
    for (size_t i = 0; i < 3; i++) {
        struct lb_prom_label l = {"reason", why[i]};
        lb_prom_u64(p, "lb_cp_rollout_rollbacks_total", &l, 1, ro->rollbacks[i]);
    }
    lb_prom_family(p, "lb_cp_rollout_write_errors_total", "counter",
                   "Rollout transitions whose store write failed (tried again).");
    lb_prom_u64(p, "lb_cp_rollout_write_errors_total", NULL, 0, ro->write_errors);
    struct canary_view cv;
    canary__view(ro->canary, &cv);
    uint64_t promoted, failed, nacks;
    canary__counts(ro->canary, &promoted, &failed, &nacks);
    lb_prom_family(p, "lb_cp_canary_active", "gauge",
                   "1 while a staged config rollout bakes on its canaries.");
    lb_prom_u64(p, "lb_cp_canary_active", NULL, 0, cv.active);
    lb_prom_family(p, "lb_cp_canary_error_ratio", "gauge",
                   "The staged rollout's gate: the canaries' error rate over the bake (canary), "
                   "the limit.");
    struct lb_prom_label cl = {"which", "canary"}, ll = {"which", "limit"};
    lb_prom_f64(p, "lb_cp_canary_error_ratio", &cl, 1, cv.figure);
    lb_prom_f64(p, "lb_cp_canary_error_ratio", &ll, 1, cv.limit);
    lb_prom_family(p, "lb_cp_canary_outcomes_total", "counter",
                   "Staged rollouts ended since start: promoted, or rolled back by a failed gate "
                   "(failed).");
    struct lb_prom_label pl = {"outcome", "promoted"}, fl = {"outcome", "failed"};
    lb_prom_u64(p, "lb_cp_canary_outcomes_total", &pl, 1, promoted);
    lb_prom_u64(p, "lb_cp_canary_outcomes_total", &fl, 1, failed);
    lb_prom_family(p, "lb_cp_canary_nacks_total", "counter",
                   "Canaries that refused a staged version's snapshot.");
    lb_prom_u64(p, "lb_cp_canary_nacks_total", NULL, 0, nacks);
}

/* ---- staged config rollout ------------------------------------------------------- */

int rollouts_canary_start(struct rollouts *ro, const struct canary_request *rq, uint64_t *version,
                          struct lb_err *err)
{
    if (ro == NULL)
        return no_engine(err);
    int rc = write_check(ro, err);
    if (rc != LB_OK)
        return rc;
    return canary__start(ro->canary, rq, version, (int64_t)(ev_now(ro->loop) * 1000.0), err);
}

int rollouts_canary_abort(struct rollouts *ro, const char *who, struct lb_err *err)
{
    if (ro == NULL)
        return no_engine(err);
    return canary__abort(ro->canary, who, (int64_t)(ev_now(ro->loop) * 1000.0), err);
}

void rollouts_canary_get(const struct rollouts *ro, struct canary_view *v)
{
    canary__view(ro != NULL ? ro->canary : NULL, v);
}

const char *rollouts_canary_role(const struct rollouts *ro, const char *node, char *buf,
                                 size_t size)
{
    return canary__role(ro != NULL ? ro->canary : NULL, node, buf, size);
}
