/* controlplane/cp_snap.c: the snapshot the core serves: built from a config
 * with the checker's health and the dynamic weights, encoded with room for
 * any version and generation, published; and the served one patched with
 * runtime state as a new generation (see cp_int.h). */
#include "cp_int.h"

#include "config.h"
#include "cp_guard.h"
#include "health.h"
#include "lb_err.h"
#include "lb_log.h"
#include "publisher.h"
#include "snapbuild.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t cp__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static Lb__V1__Health proto_health(enum store_health h)
{
    return h == STORE_HEALTH_UP     ? LB__V1__HEALTH__HEALTH_UP
           : h == STORE_HEALTH_DOWN ? LB__V1__HEALTH__HEALTH_DOWN
                                    : LB__V1__HEALTH__HEALTH_UNKNOWN;
}

int cp__dyn_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cp_dyn *)a)->id, ((const struct cp_dyn *)b)->id);
}

uint32_t cp__weight_of(const struct cp *cp, const struct config *cfg,
                       const struct config_backend *b)
{
    if (cfg->balancing.weights != CONFIG_WEIGHTS_DYNAMIC || cp->n_dyn == 0)
        return b->weight;
    struct cp_dyn key = {.id = b->id};
    const struct cp_dyn *d = bsearch(&key, cp->dyn, cp->n_dyn, sizeof(*cp->dyn), cp__dyn_cmp);
    return d != NULL && d->configured == b->weight ? d->weight : b->weight;
}

const char *const *cp__only_nodes(const struct cp *cp, size_t *n)
{
    *n = 0;
    return cp->guard != NULL ? cp->guard->only_nodes(cp->guard_ctx, n) : NULL;
}

/* A staged rollout running: <*ids> gets copies of its canaries (the snapshot
 * of its version is theirs alone). */
static int set_nodes(char ***ids, size_t *n, const struct cp *cp, struct lb_err *err)
{
    size_t k = 0;
    const char *const *nodes = cp__only_nodes(cp, &k);
    if (k == 0)
        return LB_OK;
    if ((*ids = calloc(k, sizeof(**ids))) == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < k; i++) {
        if (((*ids)[i] = strdup(nodes[i])) == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        (*n)++;
    }
    return LB_OK;
}

int cp__build_snapshot(struct cp *cp, const struct config *cfg, const char *base_dir,
                       Lb__V1__Snapshot **out, struct lb_err *err)
{
    size_t n = cfg->n_backends;
    struct snapbuild_health *sh = n ? calloc(n, sizeof(*sh)) : NULL;
    if (n && sh == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        sh[i].id = cfg->backends[i].id;
        sh[i].health = proto_health(health_state(cp->health, cfg->backends[i].id));
    }
    struct snapbuild_input in = {
        .cfg = cfg,
        .now_unix_ms = cp__now_ms(),
        .health = sh,
        .n_health = n,
        .base_dir = base_dir,
    };
    int rc = snapbuild_build(&in, out, err);
    free(sh);
    if (rc == LB_OK)
        rc = set_nodes(&(*out)->only_nodes, &(*out)->n_only_nodes, cp, err);
    for (size_t i = 0; rc == LB_OK && i < n && i < (*out)->n_backends; i++)
        (*out)->backends[i]->weight = cp__weight_of(cp, cfg, &cfg->backends[i]);
    return rc;
}

int cp__reserve_encoding(Lb__V1__Snapshot *snap, uint8_t **buf, struct lb_err *err)
{
    snap->config_version = UINT64_MAX;
    snap->generation = UINT64_MAX;
    size_t max = lb__v1__snapshot__get_packed_size(snap);
    if (max > PUBLISHER_MAX_MSG - 64)
        return lb_err_set(err, LB_EINVAL, 0, "the snapshot would be %zu bytes, over the limit",
                          max);
    *buf = malloc(max ? max : 1);
    if (*buf == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    return LB_OK;
}

void cp__serve(struct cp *cp, uint64_t generation, uint8_t *buf, size_t len)
{
    uint64_t version = cp->version;
    free(cp->snap);
    cp->snap = buf;
    cp->snap_len = len;
    if (buf == NULL)
        return;
    cp->generation = generation;
    struct lb_err e = {0};
    if (publisher_set_snapshot(cp->pub, buf, len, generation, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "publish_failed", "version %llu generation %llu: %s",
               (unsigned long long)version, (unsigned long long)generation, e.msg);
    else
        lb_log(LB_LOG_INFO, "published", "version %llu generation %llu (%zu bytes)",
               (unsigned long long)version, (unsigned long long)generation, len);
}

int cp__served_decode(const struct cp *cp, Lb__V1__Snapshot **out, struct lb_err *err)
{
    *out = lb__v1__snapshot__unpack(NULL, cp->snap_len, cp->snap);
    if (*out == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "cannot decode the served snapshot");
    return LB_OK;
}

int cp__repack(struct cp *cp, Lb__V1__Snapshot *snap, uint8_t **buf, size_t *len, uint64_t *gen,
               struct lb_err *err)
{
    *buf = NULL;
    snap->created_unix_ms = cp__now_ms();
    int rc = cp__reserve_encoding(snap, buf, err);
    if (rc == LB_OK)
        rc = store_generation_bump(cp->store, gen, err);
    if (rc != LB_OK) {
        free(*buf);
        *buf = NULL;
        lb__v1__snapshot__free_unpacked(snap, NULL);
        return rc;
    }
    snap->config_version = cp->version;
    snap->generation = *gen;
    *len = lb__v1__snapshot__pack(snap, *buf);
    lb__v1__snapshot__free_unpacked(snap, NULL);
    return LB_OK;
}

/* A staged rollout baking: the held snapshot (the others' version) again,
 * with the backends' current health, as a new generation. Its weights stay
 * (dynamic weights follow the active config). A failure is logged. */
static void republish_held(struct cp *cp)
{
    size_t len = 0, n = 0;
    const uint8_t *held = publisher_held(cp->pub, &len);
    const char *const *nodes = cp__only_nodes(cp, &n);
    if (held == NULL || n == 0)
        return;
    Lb__V1__Snapshot *snap = lb__v1__snapshot__unpack(NULL, len, held);
    if (snap == NULL) {
        lb_log(LB_LOG_ERROR, "health_publish_failed", "the held snapshot does not decode");
        return;
    }
    for (size_t i = 0; i < snap->n_backends; i++)
        snap->backends[i]->health = proto_health(health_state(cp->health, snap->backends[i]->id));
    struct lb_err e = {0};
    if (cp__hold(cp, snap, snap->config_version, nodes, n, &e) != LB_OK)
        lb_log(LB_LOG_ERROR, "health_publish_failed", "held snapshot: %s", e.msg);
}

void cp__publish_runtime(struct cp *cp)
{
    if (cp->snap == NULL)
        return;
    struct lb_err e = {0};
    uint64_t gen = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    Lb__V1__Snapshot *snap = NULL;
    if (cp__served_decode(cp, &snap, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "health_publish_failed", "%s", e.msg);
        return;
    }
    for (size_t i = 0; i < snap->n_backends; i++)
        snap->backends[i]->health = proto_health(health_state(cp->health, snap->backends[i]->id));
    /* The served snapshot lists the config's backends in order. */
    for (size_t i = 0; cp->cfg != NULL && i < snap->n_backends && i < cp->cfg->n_backends; i++)
        snap->backends[i]->weight = cp__weight_of(cp, cp->cfg, &cp->cfg->backends[i]);
    if (cp__repack(cp, snap, &buf, &len, &gen, &e) != LB_OK) {
        lb_log(LB_LOG_ERROR, "health_publish_failed", "%s", e.msg);
        return;
    }
    cp__serve(cp, gen, buf, len);
    republish_held(cp);
}

/* ---- staged rollout (the guard, cp_guard.h) ------------------------------------ */

static void clear_list(char ***l, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*l)[i]);
    free(*l);
    *l = NULL;
    *n = 0;
}

int cp__hold(struct cp *cp, Lb__V1__Snapshot *snap, uint64_t version, const char *const *nodes,
             size_t n, struct lb_err *err)
{
    int rc;
    clear_list(&snap->only_nodes, &snap->n_only_nodes);
    clear_list(&snap->except_nodes, &snap->n_except_nodes);
    snap->except_nodes = calloc(n, sizeof(*snap->except_nodes));
    for (size_t i = 0; snap->except_nodes != NULL && i < n; i++) {
        if ((snap->except_nodes[i] = strdup(nodes[i])) == NULL)
            break;
        snap->n_except_nodes++;
    }
    if (snap->n_except_nodes != n) {
        lb__v1__snapshot__free_unpacked(snap, NULL);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t gen = 0, cur = cp->version;
    cp->version = version; /* cp__repack() stamps the active version */
    rc = cp__repack(cp, snap, &buf, &len, &gen, err);
    cp->version = cur;
    if (rc != LB_OK)
        return rc;
    rc = publisher_set_held(cp->pub, buf, len, gen, nodes, n, err);
    free(buf);
    if (rc == LB_OK)
        lb_log(LB_LOG_INFO, "canary_hold",
               "the data planes but %zu canaries keep their version as generation %llu", n,
               (unsigned long long)gen);
    return rc;
}

int cp_canary_hold(struct cp *cp, const char *const *nodes, size_t n, struct lb_err *err)
{
    if (cp->snap == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "no snapshot is served yet: nothing to hold");
    Lb__V1__Snapshot *snap = NULL;
    int rc = cp__served_decode(cp, &snap, err);
    if (rc != LB_OK)
        return rc;
    return cp__hold(cp, snap, cp->version, nodes, n, err);
}

int cp_canary_promote(struct cp *cp, struct lb_err *err)
{
    if (cp->snap == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "no snapshot is served");
    Lb__V1__Snapshot *snap = NULL;
    int rc = cp__served_decode(cp, &snap, err);
    if (rc != LB_OK)
        return rc;
    clear_list(&snap->only_nodes, &snap->n_only_nodes);
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t gen = 0;
    if ((rc = cp__repack(cp, snap, &buf, &len, &gen, err)) != LB_OK)
        return rc;
    cp__serve(cp, gen, buf, len);
    publisher_clear_held(cp->pub);
    return LB_OK;
}

void cp_canary_release(struct cp *cp)
{
    publisher_clear_held(cp->pub);
}
