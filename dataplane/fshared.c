/* dataplane/fshared.c */
#include "fshared.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lb_assert.h"
#include "lb_err.h"
#include "lb_map.h"
#include "lb_ref.h"
#include "limiter.h"
#include "snapshot.h"

/* A limiter shared by the bindings whose settings for a frontend are the
 * same, and by its entry while those are the newest settings. */
struct rl {
    struct lb_ref ref;
    struct limiter *l;
};

struct entry {
    char *name;
    struct lb_ref ref; /* bindings naming it; the last release unlinks under the lock */
    /* written by the binding thread under the registry lock: */
    struct rl *cur;  /* the newest bound snapshot's limiter (a reference), or NULL */
    uint64_t synced; /* the registry's <binds> when a snapshot last named it */
};

struct slot {
    struct entry *fe; /* a reference */
    struct rl *rl;    /* a reference, or NULL: rate limiting off */
};

struct fshared_binding {
    struct fshared_registry *r;
    uint32_t n;
    struct slot slot[]; /* per snapshot frontend */
};

struct fshared_registry {
    pthread_mutex_t lock;
    struct lb_map by_name; /* name -> struct entry, under <lock> */
    uint64_t binds;        /* snapshots bound so far, under <lock> */
};

static void rl_unref(struct rl *rl)
{
    if (rl != NULL && lb_ref_put(&rl->ref)) {
        limiter_free(rl->l);
        free(rl);
    }
}

static struct rl *rl_new(const struct limiter_config *cfg, struct lb_err *err)
{
    struct rl *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for the rate limiters");
        return NULL;
    }
    rl->l = limiter_new(cfg, err);
    if (rl->l == NULL) {
        free(rl);
        return NULL;
    }
    lb_ref_init(&rl->ref);
    return rl;
}

/* Settings under which a limiter may keep serving as it is. */
static bool rl_same(const struct limiter_config *a, const struct limiter_config *b)
{
    return limiter_config_same_limits(a, b) && a->max_keys == b->max_keys &&
           a->headers_on_allowed == b->headers_on_allowed && a->n_trusted == b->n_trusted &&
           memcmp(a->trusted, b->trusted, a->n_trusted * sizeof(a->trusted[0])) == 0;
}

static void entry_free(struct entry *e)
{
    rl_unref(e->cur);
    free(e->name);
    free(e);
}

struct fshared_registry *fshared_registry_new(struct lb_err *err)
{
    struct fshared_registry *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory creating the frontend registry");
        return NULL;
    }
    lb_map_init(&r->by_name, NULL, NULL);
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

void fshared_registry_free(struct fshared_registry *r)
{
    if (r == NULL)
        return;
    uint32_t pos = 0;
    struct entry *e;
    while ((e = lb_map_next(&r->by_name, &pos, NULL)) != NULL)
        entry_free(e);
    lb_map_deinit(&r->by_name);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* The entry of <name> with one more reference, made when there is none.
 * Under the lock. */
static struct entry *entry_get(struct fshared_registry *r, const char *name)
{
    struct entry *e = lb_map_get(&r->by_name, name);
    if (e != NULL) {
        lb_ref_get(&e->ref);
        return e;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->name = strdup(name);
    if (e->name == NULL || lb_map_add(&r->by_name, e->name, e, NULL) != LB_MAP_ADDED) {
        free(e->name);
        free(e);
        return NULL;
    }
    lb_ref_init(&e->ref);
    return e;
}

/* Drops a binding's reference to <e>; the last one unlinks and frees it.
 * Takes the lock. */
static void entry_release(struct fshared_registry *r, struct entry *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    if (!lb_ref_put(&e->ref)) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    struct entry *was = lb_map_del(&r->by_name, e->name);
    LB_ASSERT(was == e);
    (void)was;
    pthread_mutex_unlock(&r->lock);
    entry_free(e);
}

void fshared_binding_release(struct fshared_binding *b)
{
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < b->n; i++) {
        rl_unref(b->slot[i].rl);
        entry_release(b->r, b->slot[i].fe);
    }
    free(b);
}

/* The limiter a frontend whose entry is <e> gets under <s>'s settings, with a
 * reference, in *<out> (NULL with rate limiting off). Reads e->cur without the
 * lock: only the binding thread writes it, and the caller's reference keeps
 * <e>. A new limiter is filled outside the lock so that a worker releasing an
 * old snapshot never waits for it. */
static int slot_limiter(const struct snap *s, struct entry *e, struct rl **out, struct lb_err *err)
{
    *out = NULL;
    if (!s->rl_cfg.enabled)
        return LB_OK;
    if (e->cur != NULL && rl_same(limiter_config(e->cur->l), &s->rl_cfg)) {
        lb_ref_get(&e->cur->ref);
        *out = e->cur;
        return LB_OK;
    }
    struct lb_err e2 = {0};
    struct rl *rl = rl_new(&s->rl_cfg, &e2);
    if (rl == NULL)
        return lb_err_set(err, e2.code ? e2.code : LB_ENOMEM, 0, "frontend %s: %s", e->name,
                          e2.msg);
    if (e->cur != NULL)
        limiter_carry(rl->l, e->cur->l);
    *out = rl;
    return LB_OK;
}

/* Under the lock: the entries of <b> take its limiters as their current
 * ones, and those <b> does not name drop theirs. Cannot fail. */
static void commit(struct fshared_registry *r, struct fshared_binding *b)
{
    r->binds++;
    for (uint32_t i = 0; i < b->n; i++) {
        struct entry *e = b->slot[i].fe;
        if (e->cur != b->slot[i].rl) {
            rl_unref(e->cur);
            e->cur = b->slot[i].rl;
            if (e->cur != NULL)
                lb_ref_get(&e->cur->ref);
        }
        e->synced = r->binds;
    }
    uint32_t pos = 0;
    struct entry *e;
    while ((e = lb_map_next(&r->by_name, &pos, NULL)) != NULL) {
        if (e->synced != r->binds && e->cur != NULL) {
            rl_unref(e->cur);
            e->cur = NULL;
        }
    }
}

int fshared_registry_bind(struct fshared_registry *r, struct snap *s, struct lb_err *err)
{
    LB_ASSERT(s->fshared == NULL);
    struct fshared_binding *b = calloc(1, sizeof(*b) + s->n_frontends * sizeof(b->slot[0]));
    if (b == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory binding the frontends");
    b->r = r;
    int rc = LB_OK;
    pthread_mutex_lock(&r->lock);
    for (uint32_t i = 0; i < s->n_frontends && rc == LB_OK; i++) {
        b->slot[i].fe = entry_get(r, s->frontends[i].name);
        if (b->slot[i].fe == NULL)
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory for the state of frontend %s",
                            s->frontends[i].name);
        else
            b->n = i + 1;
    }
    pthread_mutex_unlock(&r->lock);
    for (uint32_t i = 0; i < b->n && rc == LB_OK; i++)
        rc = slot_limiter(s, b->slot[i].fe, &b->slot[i].rl, err);
    if (rc != LB_OK) {
        fshared_binding_release(b); /* entries made just now go again */
        return rc;
    }
    pthread_mutex_lock(&r->lock);
    commit(r, b);
    pthread_mutex_unlock(&r->lock);
    s->fshared = b;
    return LB_OK;
}

uint32_t fshared_registry_count(struct fshared_registry *r)
{
    pthread_mutex_lock(&r->lock);
    uint32_t n = lb_map_count(&r->by_name);
    pthread_mutex_unlock(&r->lock);
    return n;
}

struct limiter *fshared_limiter(const struct fshared_binding *b, uint32_t fe_index)
{
    if (b == NULL)
        return NULL;
    LB_ASSERT(fe_index < b->n);
    return b->slot[fe_index].rl != NULL ? b->slot[fe_index].rl->l : NULL;
}
