/* controlplane/rollout.c: the rollout state machine (see rollout.h). */
#include "rollout.h"

#include "lb_err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {"running", "paused",  "succeeded",
                                           "failed",  "aborted", "undone"};
static const char *const phase_names[] = {"add",    "wait_healthy", "bake",
                                          "remove", "interval",     "end"};
static const char *const gate_names[] = {"none", "health", "error_rate", "capacity"};

const char *rollout_status_name(enum rollout_status s)
{
    return (unsigned)s < 6 ? status_names[s] : "unknown";
}

const char *rollout_phase_name(enum rollout_phase p)
{
    return (unsigned)p < 6 ? phase_names[p] : "unknown";
}

const char *rollout_gate_name(enum rollout_gate g)
{
    return (unsigned)g < 4 ? gate_names[g] : "unknown";
}

bool rollout_is_active(enum rollout_status s)
{
    return s == ROLLOUT_RUNNING || s == ROLLOUT_PAUSED;
}

int rollout_spec_check(const struct rollout_spec *s, struct lb_err *err)
{
    if (s->n_add == 0 && s->n_remove == 0)
        return lb_err_set(err, LB_EINVAL, 0, "a rollout needs backends to add or remove");
    if (s->n_add > ROLLOUT_MAX_BACKENDS || s->n_remove > ROLLOUT_MAX_BACKENDS)
        return lb_err_set(err, LB_EINVAL, 0, "a rollout adds and removes at most %d backends each",
                          ROLLOUT_MAX_BACKENDS);
    if (s->batch == 0)
        return lb_err_set(err, LB_EINVAL, 0, "batchSize must be at least 1");
    if (s->interval_ms < 0 || s->bake_ms < 0)
        return lb_err_set(err, LB_EINVAL, 0, "interval and bake must not be negative");
    if (s->health_timeout_ms <= 0)
        return lb_err_set(err, LB_EINVAL, 0, "healthTimeout must be positive");
    if (!(s->max_error_rate >= 0 && s->max_error_rate <= 1))
        return lb_err_set(err, LB_EINVAL, 0, "maxErrorRate must be between 0 and 1");
    for (size_t i = 0; i < s->n_add; i++) {
        if (s->add_url[i][0] == '\0')
            return lb_err_set(err, LB_EINVAL, 0, "add[%zu]: a backend needs a url", i);
        for (size_t j = 0; j < s->n_remove; j++)
            if (s->add_id[i][0] && strcmp(s->add_id[i], s->remove_id[j]) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "backend %s is both added and removed",
                                  s->add_id[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->add_url[i], s->add_url[j]) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "url %s is added twice", s->add_url[i]);
    }
    for (size_t i = 0; i < s->n_remove; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->remove_id[i], s->remove_id[j]) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "backend %s is removed twice",
                                  s->remove_id[i]);
    return LB_OK;
}

static uint32_t ceil_div(size_t n, uint32_t b)
{
    return (uint32_t)((n + b - 1) / b);
}

uint32_t rollout_steps(const struct rollout_spec *s)
{
    uint32_t a = ceil_div(s->n_add, s->batch), r = ceil_div(s->n_remove, s->batch);
    return a > r ? a : r;
}

void rollout_batch(const struct rollout_spec *s, uint32_t step, bool add, size_t *first, size_t *n)
{
    size_t total = add ? s->n_add : s->n_remove;
    size_t at = (size_t)step * s->batch;
    *first = at < total ? at : total;
    size_t left = total - *first;
    *n = left < s->batch ? left : s->batch;
}

void rollout_state_init(struct rollout_state *st, int64_t now_ms)
{
    memset(st, 0, sizeof(*st));
    st->status = ROLLOUT_RUNNING;
    st->phase = ROLLOUT_ADD;
    st->phase_since_ms = now_ms;
    st->started_ms = now_ms;
}

/* ---- gate arithmetic ------------------------------------------------------ */

struct rollout_counts rollout_window_delta(const struct rollout_sample *base, size_t n_base,
                                           const struct rollout_sample *cur, size_t n_cur)
{
    struct rollout_counts out = {0};
    for (size_t i = 0; i < n_cur; i++) {
        const struct rollout_sample *c = &cur[i], *b = NULL;
        for (size_t j = 0; j < n_base && b == NULL; j++)
            if (strcmp(base[j].node_id, c->node_id) == 0)
                b = &base[j];
        bool same = b != NULL && b->started_unix_ms == c->started_unix_ms &&
                    b->boot_id == c->boot_id && c->requests >= b->requests &&
                    c->errors >= b->errors;
        out.requests += same ? c->requests - b->requests : c->requests;
        out.errors += same ? c->errors - b->errors : c->errors;
    }
    /* a data plane that lost requests it had counted as errors cannot make
     * a rate above 1 */
    if (out.errors > out.requests)
        out.errors = out.requests;
    return out;
}

double rollout_rate(struct rollout_counts c)
{
    return c.requests ? (double)c.errors / (double)c.requests : 0.0;
}

enum rollout_verdict rollout_gate_eval(struct rollout_counts nw, struct rollout_counts ow,
                                       double max_rate, int64_t covered_ms, int64_t waited_ms,
                                       int64_t bake_ms, double *limit)
{
    double old_rate = rollout_rate(ow);
    double lim = old_rate + max_rate > max_rate ? old_rate + max_rate : max_rate;
    if (limit != NULL)
        *limit = lim;
    if (waited_ms < bake_ms)
        return ROLLOUT_WAIT;
    bool stretched = waited_ms >= bake_ms * ROLLOUT_BAKE_STRETCH;
    if (!stretched && (covered_ms < bake_ms || nw.requests < ROLLOUT_MIN_REQUESTS))
        return ROLLOUT_WAIT;
    return rollout_rate(nw) > lim ? ROLLOUT_FAIL : ROLLOUT_PASS;
}

/* ---- transitions ------------------------------------------------------------ */

static void to_phase(struct rollout_state *st, enum rollout_phase p, int64_t now_ms)
{
    st->phase = p;
    st->phase_since_ms = now_ms;
}

static void to_end(struct rollout_state *st, enum rollout_status s, int64_t now_ms)
{
    st->status = s;
    to_phase(st, ROLLOUT_END, now_ms);
    st->ended_ms = now_ms;
}

/* A gate failed: roll back, naming it. */
static enum rollout_action fail(const struct rollout_spec *s, struct rollout_state *st,
                                int64_t now_ms, enum rollout_gate g, double figure, double limit,
                                const char *backend)
{
    st->gate = g;
    st->figure = figure;
    st->limit = limit;
    snprintf(st->backend, sizeof(st->backend), "%s", backend ? backend : "");
    uint32_t n = rollout_steps(s);
    if (g == ROLLOUT_GATE_HEALTH)
        snprintf(st->reason, sizeof(st->reason),
                 "step %u/%u: backend %s not healthy after %.1f s (bound %.1f s)", st->step + 1, n,
                 st->backend, figure, limit);
    else if (g == ROLLOUT_GATE_ERROR_RATE)
        snprintf(st->reason, sizeof(st->reason),
                 "step %u/%u: backend %s error rate %.2f%% above the limit %.2f%%", st->step + 1, n,
                 st->backend, figure * 100, limit * 100);
    else
        snprintf(st->reason, sizeof(st->reason),
                 "step %u/%u: %.0f healthy backends would be left, fewer than %.0f", st->step + 1,
                 n, figure, limit);
    to_end(st, ROLLOUT_FAILED, now_ms);
    return ROLLOUT_ACT_ROLLBACK;
}

/* WAIT_HEALTHY: every new backend of the step up -> BAKE; one not up within
 * the bound fails the step. */
static enum rollout_action wait_healthy(const struct rollout_spec *s, struct rollout_state *st,
                                        const struct rollout_input *in)
{
    size_t first, n;
    rollout_batch(s, st->step, true, &first, &n);
    const char *late = NULL;
    for (size_t i = 0; i < n && late == NULL; i++)
        if (in->health[i] != ROLLOUT_HEALTH_UP)
            late = s->add_id[first + i];
    if (late == NULL) {
        to_phase(st, ROLLOUT_BAKE, in->now_ms);
        st->down_since_ms = 0;
        return ROLLOUT_ACT_ACTIVATE;
    }
    int64_t waited = in->now_ms - st->phase_since_ms;
    if (waited >= s->health_timeout_ms)
        return fail(s, st, in->now_ms, ROLLOUT_GATE_HEALTH, (double)waited / 1000.0,
                    (double)s->health_timeout_ms / 1000.0, late);
    return ROLLOUT_ACT_NONE;
}

/* BAKE: a new backend not up stops the bake (the data planes send it
 * nothing meanwhile) and fails the step when it stays so longer than the
 * health bound; once it is back the bake starts again. Once the bake is over
 * every new backend's gate decides. */
static enum rollout_action bake(const struct rollout_spec *s, struct rollout_state *st,
                                const struct rollout_input *in, struct rollout_figures *fig)
{
    size_t first, n;
    rollout_batch(s, st->step, true, &first, &n);
    const char *down = NULL;
    for (size_t i = 0; i < n && down == NULL; i++)
        if (in->health[i] != ROLLOUT_HEALTH_UP)
            down = s->add_id[first + i];
    if (down != NULL && st->down_since_ms == 0) {
        st->down_since_ms = in->now_ms;
        return ROLLOUT_ACT_STATE;
    }
    if (down != NULL) {
        int64_t waited = in->now_ms - st->down_since_ms;
        if (waited < s->health_timeout_ms)
            return ROLLOUT_ACT_NONE;
        return fail(s, st, in->now_ms, ROLLOUT_GATE_HEALTH, (double)waited / 1000.0,
                    (double)s->health_timeout_ms / 1000.0, down);
    }
    if (st->down_since_ms != 0) {
        st->down_since_ms = 0;
        to_phase(st, ROLLOUT_BAKE, in->now_ms); /* a fresh bake window */
        return ROLLOUT_ACT_STATE;
    }
    int64_t elapsed = in->now_ms - st->phase_since_ms;
    int64_t covered = in->reported_ms > 0 ? in->reported_ms - st->phase_since_ms : 0;
    bool waiting = false;
    if (fig != NULL)
        *fig = (struct rollout_figures){.valid = n > 0,
                                        .old_rate = rollout_rate(in->old_window),
                                        .old_requests = in->old_window.requests};
    for (size_t i = 0; i < n; i++) {
        double limit = 0;
        enum rollout_verdict v = rollout_gate_eval(in->window[i], in->old_window, s->max_error_rate,
                                                   covered, elapsed, s->bake_ms, &limit);
        double rate = rollout_rate(in->window[i]);
        if (fig != NULL && (i == 0 || rate > fig->new_rate)) {
            fig->new_rate = rate;
            fig->limit = limit;
            fig->new_requests = in->window[i].requests;
            snprintf(fig->backend, sizeof(fig->backend), "%s", s->add_id[first + i]);
        }
        if (v == ROLLOUT_FAIL)
            return fail(s, st, in->now_ms, ROLLOUT_GATE_ERROR_RATE, rate, limit,
                        s->add_id[first + i]);
        waiting |= v == ROLLOUT_WAIT;
    }
    if (waiting && n > 0)
        return ROLLOUT_ACT_NONE;
    to_phase(st, ROLLOUT_REMOVE, in->now_ms);
    return ROLLOUT_ACT_STATE;
}

/* REMOVE: the step's old backends go when enough healthy ones stay. */
static enum rollout_action remove_old(const struct rollout_spec *s, struct rollout_state *st,
                                      const struct rollout_input *in)
{
    size_t first, n;
    rollout_batch(s, st->step, false, &first, &n);
    uint32_t last = rollout_steps(s) - 1;
    if (n > 0) {
        size_t min_healthy = s->n_remove > s->batch ? s->n_remove - s->batch : 0;
        /* the old backends not removed yet still count as capacity */
        if (in->healthy_after_remove < min_healthy) {
            if (in->now_ms - st->phase_since_ms < s->health_timeout_ms)
                return ROLLOUT_ACT_NONE;
            return fail(s, st, in->now_ms, ROLLOUT_GATE_CAPACITY, (double)in->healthy_after_remove,
                        (double)min_healthy, NULL);
        }
    }
    st->steps_done = st->step + 1;
    if (st->step == last) {
        st->step++;
        to_end(st, ROLLOUT_SUCCEEDED, in->now_ms);
    } else {
        to_phase(st, ROLLOUT_INTERVAL, in->now_ms);
    }
    return n > 0 ? ROLLOUT_ACT_REMOVE : ROLLOUT_ACT_STATE;
}

enum rollout_action rollout_next(const struct rollout_spec *s, const struct rollout_state *cur,
                                 const struct rollout_input *in, struct rollout_state *next,
                                 struct rollout_figures *fig)
{
    *next = *cur;
    if (fig != NULL)
        fig->valid = false;
    if (cur->status != ROLLOUT_RUNNING)
        return ROLLOUT_ACT_NONE;
    size_t first, n;
    switch (cur->phase) {
    case ROLLOUT_ADD:
        rollout_batch(s, cur->step, true, &first, &n);
        to_phase(next, n > 0 ? ROLLOUT_WAIT_HEALTHY : ROLLOUT_REMOVE, in->now_ms);
        return n > 0 ? ROLLOUT_ACT_ADD : ROLLOUT_ACT_STATE;
    case ROLLOUT_WAIT_HEALTHY:
        return wait_healthy(s, next, in);
    case ROLLOUT_BAKE:
        return bake(s, next, in, fig);
    case ROLLOUT_REMOVE:
        return remove_old(s, next, in);
    case ROLLOUT_INTERVAL:
        if (in->now_ms - cur->phase_since_ms < s->interval_ms)
            return ROLLOUT_ACT_NONE;
        next->step++;
        to_phase(next, ROLLOUT_ADD, in->now_ms);
        return ROLLOUT_ACT_STATE;
    case ROLLOUT_END:
        break;
    }
    return ROLLOUT_ACT_NONE;
}

/* ---- operator requests ------------------------------------------------------- */

enum rollout_action rollout_pause(const struct rollout_state *cur, int64_t now_ms,
                                  struct rollout_state *next, struct lb_err *err)
{
    *next = *cur;
    if (cur->status != ROLLOUT_RUNNING) {
        lb_err_set(err, LB_ECONFLICT, 0, "the rollout is %s, not running",
                   rollout_status_name(cur->status));
        return ROLLOUT_ACT_NONE;
    }
    next->status = ROLLOUT_PAUSED;
    return ROLLOUT_ACT_STATE;
}

bool rollout_resume_after_restart(struct rollout_state *st, int64_t now_ms)
{
    if (!rollout_is_active(st->status))
        return false;
    if (st->phase == ROLLOUT_WAIT_HEALTHY || st->phase == ROLLOUT_BAKE ||
        st->phase == ROLLOUT_INTERVAL || st->phase == ROLLOUT_REMOVE) {
        st->phase_since_ms = now_ms;
        st->down_since_ms = st->down_since_ms ? now_ms : 0;
        return true;
    }
    return false;
}

enum rollout_action rollout_resume(const struct rollout_state *cur, int64_t now_ms,
                                   struct rollout_state *next, struct lb_err *err)
{
    *next = *cur;
    if (cur->status != ROLLOUT_PAUSED) {
        lb_err_set(err, LB_ECONFLICT, 0, "the rollout is %s, not paused",
                   rollout_status_name(cur->status));
        return ROLLOUT_ACT_NONE;
    }
    next->status = ROLLOUT_RUNNING;
    rollout_resume_after_restart(next, now_ms);
    return ROLLOUT_ACT_STATE;
}

enum rollout_action rollout_abort(const struct rollout_state *cur, int64_t now_ms,
                                  struct rollout_state *next, struct lb_err *err)
{
    *next = *cur;
    if (!rollout_is_active(cur->status)) {
        lb_err_set(err, LB_ECONFLICT, 0, "the rollout is %s already",
                   rollout_status_name(cur->status));
        return ROLLOUT_ACT_NONE;
    }
    snprintf(next->reason, sizeof(next->reason), "aborted at step %u", cur->step + 1);
    to_end(next, ROLLOUT_ABORTED, now_ms);
    return ROLLOUT_ACT_ROLLBACK;
}

enum rollout_action rollout_undo(const struct rollout_state *cur, int64_t now_ms,
                                 struct rollout_state *next, struct lb_err *err)
{
    *next = *cur;
    if (cur->status != ROLLOUT_SUCCEEDED) {
        lb_err_set(err, LB_ECONFLICT, 0, "only a succeeded rollout can be undone; this one is %s",
                   rollout_status_name(cur->status));
        return ROLLOUT_ACT_NONE;
    }
    snprintf(next->reason, sizeof(next->reason), "undone");
    to_end(next, ROLLOUT_UNDONE, now_ms);
    return ROLLOUT_ACT_ROLLBACK;
}

/* ---- the stored form ---------------------------------------------------------- */

static char *dump(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return text;
}

static json_t *str_array(const char (*items)[ROLLOUT_ID_MAX], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

char *rollout_spec_encode(const struct rollout_spec *s)
{
    json_t *urls = json_array();
    for (size_t i = 0; urls != NULL && i < s->n_add; i++)
        json_array_append_new(urls, json_string(s->add_url[i]));
    return dump(
        json_pack("{s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:f,s:I,s:s,s:s}", "id", (json_int_t)s->id,
                  "addUrls", urls, "addIds", str_array(s->add_id, s->n_add), "removeIds",
                  str_array(s->remove_id, s->n_remove), "batch", (json_int_t)s->batch, "intervalMs",
                  (json_int_t)s->interval_ms, "bakeMs", (json_int_t)s->bake_ms, "healthTimeoutMs",
                  (json_int_t)s->health_timeout_ms, "maxErrorRate", s->max_error_rate, "preVersion",
                  (json_int_t)s->pre_version, "author", s->author, "comment", s->comment));
}

char *rollout_state_encode(const struct rollout_state *st)
{
    return dump(
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:f,s:f,s:s,s:s,s:I}", "status",
                  rollout_status_name(st->status), "phase", rollout_phase_name(st->phase), "step",
                  (json_int_t)st->step, "phaseSinceMs", (json_int_t)st->phase_since_ms, "startedMs",
                  (json_int_t)st->started_ms, "endedMs", (json_int_t)st->ended_ms, "lastVersion",
                  (json_int_t)st->last_version, "finalVersion", (json_int_t)st->final_version,
                  "stepsDone", (json_int_t)st->steps_done, "gate", rollout_gate_name(st->gate),
                  "figure", st->figure, "limit", st->limit, "backend", st->backend, "reason",
                  st->reason, "downSinceMs", (json_int_t)st->down_since_ms));
}

static int name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

/* Copies the <n> strings of array <a> into <dst> rows of <size>; false on a
 * member that is not a string or too long. */
static bool copy_strings(json_t *a, char *dst, size_t size, size_t *n)
{
    if (!json_is_array(a) || json_array_size(a) > ROLLOUT_MAX_BACKENDS)
        return false;
    *n = json_array_size(a);
    for (size_t i = 0; i < *n; i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v == NULL || strlen(v) >= size)
            return false;
        memcpy(dst + i * size, v, strlen(v) + 1);
    }
    return true;
}

int rollout_spec_decode(const char *text, struct rollout_spec *s, struct lb_err *err)
{
    memset(s, 0, sizeof(*s));
    json_t *j = json_loads(text, 0, NULL);
    json_int_t id = 0, batch = 0, interval = 0, bake_ms = 0, ht = 0, pre = 0;
    const char *author = "", *comment = "";
    json_t *urls = NULL, *ids = NULL, *rm = NULL;
    size_t n_ids = 0;
    bool ok = j != NULL &&
              json_unpack(j, "{s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:F,s:I,s:s,s:s}", "id", &id,
                          "addUrls", &urls, "addIds", &ids, "removeIds", &rm, "batch", &batch,
                          "intervalMs", &interval, "bakeMs", &bake_ms, "healthTimeoutMs", &ht,
                          "maxErrorRate", &s->max_error_rate, "preVersion", &pre, "author", &author,
                          "comment", &comment) == 0 &&
              copy_strings(urls, &s->add_url[0][0], ROLLOUT_URL_MAX, &s->n_add) &&
              copy_strings(ids, &s->add_id[0][0], ROLLOUT_ID_MAX, &n_ids) && n_ids == s->n_add &&
              copy_strings(rm, &s->remove_id[0][0], ROLLOUT_ID_MAX, &s->n_remove) && batch > 0 &&
              batch <= UINT32_MAX;
    if (ok) {
        s->id = (uint64_t)id;
        s->batch = (uint32_t)batch;
        s->interval_ms = interval;
        s->bake_ms = bake_ms;
        s->health_timeout_ms = ht;
        s->pre_version = (uint64_t)pre;
        snprintf(s->author, sizeof(s->author), "%s", author);
        snprintf(s->comment, sizeof(s->comment), "%s", comment);
    }
    json_decref(j);
    return ok ? LB_OK : lb_err_set(err, LB_EINVAL, 0, "stored rollout spec is not valid");
}

int rollout_state_decode(const char *text, struct rollout_state *st, struct lb_err *err)
{
    memset(st, 0, sizeof(*st));
    json_t *j = json_loads(text, 0, NULL);
    const char *status = NULL, *phase = NULL, *gate = NULL, *backend = "", *reason = "";
    json_int_t step = 0, since = 0, started = 0, ended = 0, last = 0, fin = 0, done = 0, down = 0;
    bool ok =
        j != NULL &&
        json_unpack(j, "{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:F,s:F,s:s,s:s,s?I}", "status",
                    &status, "phase", &phase, "step", &step, "phaseSinceMs", &since, "startedMs",
                    &started, "endedMs", &ended, "lastVersion", &last, "finalVersion", &fin,
                    "stepsDone", &done, "gate", &gate, "figure", &st->figure, "limit", &st->limit,
                    "backend", &backend, "reason", &reason, "downSinceMs", &down) == 0;
    int si = ok ? name_index(status_names, 6, status) : -1;
    int pi = ok ? name_index(phase_names, 6, phase) : -1;
    int gi = ok ? name_index(gate_names, 4, gate) : -1;
    ok = ok && si >= 0 && pi >= 0 && gi >= 0 && step >= 0 && done >= 0;
    if (ok) {
        st->status = (enum rollout_status)si;
        st->phase = (enum rollout_phase)pi;
        st->gate = (enum rollout_gate)gi;
        st->step = (uint32_t)step;
        st->phase_since_ms = since;
        st->started_ms = started;
        st->ended_ms = ended;
        st->last_version = (uint64_t)last;
        st->final_version = (uint64_t)fin;
        st->steps_done = (uint32_t)done;
        st->down_since_ms = down;
        snprintf(st->backend, sizeof(st->backend), "%s", backend);
        snprintf(st->reason, sizeof(st->reason), "%s", reason);
    }
    json_decref(j);
    return ok ? LB_OK : lb_err_set(err, LB_EINVAL, 0, "stored rollout state is not valid");
}

/* ---- staged config rollout (canary) ---------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int canary_percent(const char *spec, const char *const *known, size_t n_known,
                          char (*out)[ROLLOUT_NODE_MAX], size_t *n_out, struct lb_err *err)
{
    char *end = NULL;
    long pct = strtol(spec, &end, 10);
    if (end == spec || strcmp(end, "%") != 0 || pct < 1 || pct > 100)
        return lb_err_set(err, LB_EINVAL, 0, "canary %.40s: a percentage is 1%% to 100%%", spec);
    size_t n = ((size_t)pct * n_known + 99) / 100;
    if (n == 0)
        n = 1;
    if (n > ROLLOUT_CANARY_MAX)
        return lb_err_set(err, LB_EINVAL, 0, "canary %s: %zu data planes, over the %d limit", spec,
                          n, ROLLOUT_CANARY_MAX);
    const char **sorted = malloc(n_known * sizeof(*sorted));
    if (sorted == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    memcpy(sorted, known, n_known * sizeof(*sorted));
    qsort(sorted, n_known, sizeof(*sorted), cmp_str);
    for (size_t i = 0; i < n; i++)
        snprintf(out[i], ROLLOUT_NODE_MAX, "%s", sorted[i]);
    free(sorted);
    *n_out = n;
    return LB_OK;
}

static bool listed(const char *const *ids, size_t n, const char *id, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(ids[i]) == len && strncmp(ids[i], id, len) == 0)
            return true;
    return false;
}

int rollout_canary_pick(const char *spec, const char *const *known, size_t n_known,
                        char (*out)[ROLLOUT_NODE_MAX], size_t *n_out, struct lb_err *err)
{
    *n_out = 0;
    if (spec == NULL || spec[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "canary: name data planes (a,b) or a percentage");
    if (n_known == 0)
        return lb_err_set(err, LB_EINVAL, 0,
                          "canary: no data plane has reported lately, none to stage on");
    if (strchr(spec, '%') != NULL)
        return canary_percent(spec, known, n_known, out, n_out, err);
    const char *p = spec;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= ROLLOUT_NODE_MAX)
            return lb_err_set(err, LB_EINVAL, 0, "canary %.100s: an empty or too long node id",
                              spec);
        if (!listed(known, n_known, p, len))
            return lb_err_set(err, LB_EINVAL, 0,
                              "canary: data plane %.*s has not reported lately (see lbctl "
                              "dataplanes)",
                              (int)len, p);
        for (size_t i = 0; i < *n_out; i++)
            if (strlen(out[i]) == len && strncmp(out[i], p, len) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "canary: data plane %.*s named twice",
                                  (int)len, p);
        if (*n_out == ROLLOUT_CANARY_MAX)
            return lb_err_set(err, LB_EINVAL, 0, "canary: more than %d data planes",
                              ROLLOUT_CANARY_MAX);
        snprintf(out[(*n_out)++], ROLLOUT_NODE_MAX, "%.*s", (int)len, p);
        if (comma == NULL)
            return LB_OK;
        p = comma + 1;
    }
}

enum rollout_verdict rollout_canary_eval(const struct rollout_canary_input *in, char *why,
                                         size_t why_len, double *figure, double *limit)
{
    double f = 0, l = 0;
    enum rollout_verdict v = ROLLOUT_WAIT;
    bool all = true;
    for (size_t i = 0; i < in->n && v == ROLLOUT_WAIT; i++) {
        if (in->rejected != NULL && in->rejected[i] != NULL) {
            snprintf(why, why_len, "canary %s refused the snapshot: %s", in->nodes[i],
                     in->rejected[i]);
            v = ROLLOUT_FAIL;
        } else if (!in->acked[i]) {
            all = false;
            if (in->now_ms - in->started_ms >= in->ack_timeout_ms) {
                snprintf(why, why_len, "canary %s did not apply the version within %lld ms",
                         in->nodes[i], (long long)in->ack_timeout_ms);
                f = (double)(in->now_ms - in->started_ms) / 1000.0;
                l = (double)in->ack_timeout_ms / 1000.0;
                v = ROLLOUT_FAIL;
            }
        }
    }
    if (v == ROLLOUT_WAIT && all && in->acked_ms != 0) {
        int64_t covered = in->reported_ms > in->acked_ms ? in->reported_ms - in->acked_ms : 0;
        v = rollout_gate_eval(in->canary, in->rest, in->max_rate, covered,
                              in->now_ms - in->acked_ms, in->bake_ms, &l);
        f = rollout_rate(in->canary);
        if (v == ROLLOUT_FAIL)
            snprintf(why, why_len,
                     "error rate of the canaries %.4f (%llu of %llu) over the limit %.4f "
                     "(rest of the fleet %.4f)",
                     f, (unsigned long long)in->canary.errors,
                     (unsigned long long)in->canary.requests, l, rollout_rate(in->rest));
    }
    if (figure != NULL)
        *figure = f;
    if (limit != NULL)
        *limit = l;
    return v;
}
