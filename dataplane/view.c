/* dataplane/view.c: worker views of snapshots and the backend runtime state
 * they index. */
#include "view.h"

#include <stdlib.h>
#include <string.h>

#include "dp.h"
#include "lb_err.h"
#include "upstream.h"

static struct backend_rt *be_find(struct worker *w, const char *id)
{
    return lb_map_get(&w->be_map, id);
}

static struct backend_rt *be_get(struct worker *w, const char *id)
{
    struct backend_rt *b = be_find(w, id);
    if (b != NULL)
        return b;
    if (!lb_map_reserve(&w->be_map, lb_map_count(&w->be_map) + 1))
        return NULL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    lb_list_init(&b->idle);
    b->id = strdup(id);
    int slot = metrics_be_slot(&w->metrics, id);
    if (b->id == NULL || slot < 0) {
        free(b->id);
        free(b);
        return NULL;
    }
    b->stat_slot = (uint32_t)slot;
    b->sh = w->dp->backends ? bshared_registry_get(w->dp->backends, id, NULL) : NULL;
    b->breaker = b->sh ? b->sh->breaker : NULL;
    b->health = SNAP_HEALTH_UNKNOWN;
    /* a backend added to a running worker ramps up (slow start) */
    if (w->view != NULL)
        b->bal.start_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    lb_map_add(&w->be_map, b->id, b, NULL); /* room was reserved above */
    return b;
}

/* Frees the runtime state of backends no view names and nothing uses. */
void view_sweep(struct worker *w, bool all)
{
    uint32_t *gone = NULL;
    uint32_t n_gone = 0, cap_gone = 0;
    uint32_t pos = 0;
    struct backend_rt *b;
    while ((b = lb_map_next(&w->be_map, &pos, NULL)) != NULL) {
        if (!all && (b->in_view || b->bal.active > 0))
            continue;
        upstream_pool_free(w, b);
        lb_map_del(&w->be_map, b->id);
        if (b->sh != NULL)
            bshared_registry_release(w->dp->backends, b->sh);
        if (n_gone == cap_gone) {
            cap_gone = cap_gone ? cap_gone * 2 : 64;
            uint32_t *g = realloc(gone, cap_gone * sizeof(*g));
            if (g != NULL)
                gone = g;
            else
                cap_gone = n_gone;
        }
        if (n_gone < cap_gone)
            gone[n_gone++] = b->stat_slot;
        free(b->id);
        free(b);
    }
    if (!all)
        metrics_be_release(&w->metrics, gone, n_gone);
    free(gone);
}

void view_free(struct wview *v)
{
    if (v == NULL)
        return;
    snap_unref(v->snap);
    free(v->be);
    free(v->cand);
    free(v->slots);
    free(v->fe_stat);
    free(v);
}

void view_unref(struct worker *w, struct wview *v)
{
    if (v == NULL || !lb_ref_put(&v->ref))
        return;
    struct wview **pp = &w->retired;
    while (*pp != NULL && *pp != v)
        pp = &(*pp)->next;
    if (*pp == v)
        *pp = v->next;
    view_free(v);
    if (w->retired == NULL && w->view != NULL)
        view_sweep(w, false);
}

struct wview *view_build(struct worker *w, struct snap *s, struct lb_err *err)
{
    struct wview *v = calloc(1, sizeof(*v));
    if (v == NULL)
        goto nomem;
    v->snap = snap_ref(s);
    lb_ref_init(&v->ref);
    v->be = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->be));
    v->slots = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->slots));
    v->cand = calloc(s->n_backends ? s->n_backends : 1, sizeof(*v->cand));
    v->fe_stat = calloc(s->n_frontends, sizeof(*v->fe_stat));
    if (v->be == NULL || v->slots == NULL || v->cand == NULL || v->fe_stat == NULL)
        goto nomem;
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        int slot = metrics_fe_slot(&w->metrics, s->frontends[i].name);
        if (slot < 0) {
            view_free(v);
            lb_err_set(err, LB_EINVAL, 0, "frontends: more than %d distinct frontend names",
                       METRICS_MAX_FE);
            return NULL;
        }
        v->fe_stat[i] = (uint16_t)slot;
    }
    /* Only active backends get runtime state made for them: a draining or
     * disabled one keeps what it has (requests finishing, a pool to close)
     * and nothing more, so 10,000 configured but disabled backends cost a
     * worker nothing at a swap. */
    for (uint32_t i = 0; i < s->n_backends; i++) {
        bool active = s->backends[i].admin == SNAP_ADMIN_ACTIVE;
        struct backend_rt *b =
            active ? be_get(w, s->backends[i].id) : be_find(w, s->backends[i].id);
        if (b == NULL && active)
            goto nomem;
        v->be[i] = b;
    }
    /* draining and disabled backends never take a new request: a pick does
     * not even look at them (10,000 configured, a few active, stays cheap) */
    uint32_t n_cand = 0;
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (s->backends[i].admin != SNAP_ADMIN_ACTIVE)
            continue;
        v->cand[n_cand] = i;
        v->slots[n_cand++] = &v->be[i]->bal;
    }
    v->bal.algorithm = s->algorithm;
    v->bal.n = n_cand;
    v->bal.slots = v->slots;
    v->bal.slow_start_ms = s->slow_start_ms;
    balancer_seed(&v->bal, w->rng ^ (uint64_t)(uintptr_t)v);
    /* every active backend known down: fail open (health ignored) or 503 */
    bool any_active = false, any_up = false;
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (s->backends[i].admin != SNAP_ADMIN_ACTIVE)
            continue;
        any_active = true;
        any_up = any_up || s->backends[i].health != SNAP_HEALTH_DOWN;
    }
    v->panic = s->fail_open && any_active && !any_up;
    return v;
nomem:
    view_free(v);
    lb_err_set(err, LB_ENOMEM, 0, "out of memory building the worker view");
    return NULL;
}
