/* tests/unit/dataplane/test_fshared.c: the per-frontend state the workers
 * share: the registry, its rate limiters across snapshot swaps, and a swap
 * while another thread still serves from the old snapshot. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fshared.h"
#include "lb.pb-c.h"
#include "lb_err.h"
#include "limiter.h"
#include "snapshot.h"

#define THREADS 3

/* What a test snapshot says: its frontends and one ratelimit section. */
struct spec {
    const char *names[4];
    uint32_t n;
    bool rl_off;
    uint32_t rate;
    uint32_t burst;
    uint32_t max_keys;
    bool global; /* else per client */
};

static struct snap *decode(const struct spec *sp)
{
    Lb__V1__Snapshot pb;
    Lb__V1__Frontend fe[4], *fep[4];
    Lb__V1__RateLimit rl;
    lb__v1__snapshot__init(&pb);
    for (uint32_t i = 0; i < sp->n; i++) {
        lb__v1__frontend__init(&fe[i]);
        fe[i].name = (char *)sp->names[i];
        fe[i].bind_address = "127.0.0.1";
        fe[i].port = 8080 + i;
        fep[i] = &fe[i];
    }
    pb.n_frontends = sp->n;
    pb.frontends = fep;
    lb__v1__rate_limit__init(&rl);
    rl.enabled = !sp->rl_off;
    rl.rate = sp->rate;
    rl.burst = sp->burst;
    rl.per_client = !sp->global;
    rl.global = sp->global;
    rl.max_keys = sp->max_keys;
    pb.ratelimit = &rl;
    size_t len = lb__v1__snapshot__get_packed_size(&pb);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    lb__v1__snapshot__pack(&pb, buf);
    struct snap *s = NULL;
    struct lb_err err = {0};
    ck_assert_msg(snapshot_decode(buf, len, &s, &err) == LB_OK, "%s", err.msg);
    free(buf);
    return s;
}

/* A decoded snapshot of <sp>, bound to <r>. */
static struct snap *bound(struct fshared_registry *r, const struct spec *sp)
{
    struct snap *s = decode(sp);
    struct lb_err err = {0};
    ck_assert_msg(fshared_registry_bind(r, s, &err) == LB_OK, "%s", err.msg);
    return s;
}

static bool take(struct limiter *l, const char *client)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, client, &a.sin_addr);
    struct limiter_verdict v;
    return limiter_check(l, (const struct sockaddr *)&a, NULL, 0, 0, &v);
}

static struct limiter *rl_of(const struct snap *s, uint32_t fe_index)
{
    return fshared_limiter(s->fshared, fe_index);
}

/* ---- carrying limiters across swaps ----------------------------------------------- */

START_TEST(same_settings_keep_the_limiter)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec sp = {.names = {"web", "api"}, .n = 2, .rate = 1, .burst = 2, .max_keys = 100};
    struct snap *s1 = bound(r, &sp);
    ck_assert_ptr_nonnull(rl_of(s1, 0));
    ck_assert_ptr_ne(rl_of(s1, 0), rl_of(s1, 1)); /* one limiter per frontend */
    ck_assert(take(rl_of(s1, 0), "10.0.0.1"));
    ck_assert(take(rl_of(s1, 0), "10.0.0.1"));
    ck_assert(!take(rl_of(s1, 0), "10.0.0.1"));

    /* the same settings, frontends in another order: the same limiters */
    struct spec sp2 = sp;
    sp2.names[0] = "api";
    sp2.names[1] = "web";
    struct snap *s2 = bound(r, &sp2);
    ck_assert_ptr_eq(rl_of(s2, 1), rl_of(s1, 0));
    ck_assert_ptr_eq(rl_of(s2, 0), rl_of(s1, 1));
    snap_unref(s1);
    ck_assert(!take(rl_of(s2, 1), "10.0.0.1")); /* its bucket went on */
    ck_assert(take(rl_of(s2, 0), "10.0.0.1"));  /* the other frontend's is its own */
    ck_assert_uint_eq(fshared_registry_count(r), 2);
    snap_unref(s2);
    ck_assert_uint_eq(fshared_registry_count(r), 0);
    fshared_registry_free(r);
    fshared_registry_free(NULL);
}
END_TEST

START_TEST(changed_settings_carry_buckets)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec sp = {.names = {"web"}, .n = 1, .rate = 1, .burst = 2, .max_keys = 100};
    struct snap *s1 = bound(r, &sp);
    ck_assert(take(rl_of(s1, 0), "10.0.0.1"));
    ck_assert(take(rl_of(s1, 0), "10.0.0.1"));
    ck_assert(!take(rl_of(s1, 0), "10.0.0.1"));

    /* more keys, the same limits: a new limiter with the old buckets */
    sp.max_keys = 200;
    struct snap *s2 = bound(r, &sp);
    ck_assert_ptr_ne(rl_of(s2, 0), rl_of(s1, 0));
    ck_assert_uint_eq(limiter_config(rl_of(s2, 0))->max_keys, 200);
    ck_assert_uint_eq(limiter_config(rl_of(s1, 0))->max_keys, 100); /* s1 keeps its own */
    ck_assert(!take(rl_of(s2, 0), "10.0.0.1"));
    ck_assert(take(rl_of(s2, 0), "10.0.0.2"));
    struct limiter_stats st;
    limiter_stats(rl_of(s2, 0), &st);
    ck_assert_uint_eq(st.limited_client, 2); /* counters carried too */

    /* other limits: new buckets */
    sp.rate = 5;
    sp.burst = 5;
    struct snap *s3 = bound(r, &sp);
    ck_assert_ptr_ne(rl_of(s3, 0), rl_of(s2, 0));
    ck_assert(take(rl_of(s3, 0), "10.0.0.1"));
    snap_unref(s1);
    snap_unref(s2);
    snap_unref(s3);
    ck_assert_uint_eq(fshared_registry_count(r), 0);
    fshared_registry_free(r);
}
END_TEST

START_TEST(compares_with_the_newest_binding)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec a = {.names = {"web"}, .n = 1, .rate = 1, .burst = 1, .max_keys = 100};
    struct spec b = a;
    b.max_keys = 200;
    struct snap *s1 = bound(r, &a);
    struct snap *s2 = bound(r, &b);
    struct snap *s3 = bound(r, &a); /* back to s1's settings: compared with s2's */
    ck_assert_ptr_ne(rl_of(s3, 0), rl_of(s1, 0));
    ck_assert_ptr_ne(rl_of(s3, 0), rl_of(s2, 0));
    struct snap *s4 = bound(r, &a);
    ck_assert_ptr_eq(rl_of(s4, 0), rl_of(s3, 0));
    snap_unref(s1);
    snap_unref(s2);
    snap_unref(s3);
    snap_unref(s4);
    fshared_registry_free(r);
}
END_TEST

/* ---- entries ------------------------------------------------------------------------ */

START_TEST(removed_frontend_released)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec both = {.names = {"web", "api"}, .n = 2, .rate = 1, .burst = 1, .max_keys = 100};
    struct spec web = both;
    web.n = 1;
    struct snap *s1 = bound(r, &both);
    ck_assert(take(rl_of(s1, 1), "10.0.0.1"));
    ck_assert(!take(rl_of(s1, 1), "10.0.0.1"));
    struct snap *s2 = bound(r, &web);
    ck_assert_ptr_eq(rl_of(s2, 0), rl_of(s1, 0));
    /* s1 may still serve requests on "api": its entry and limiter stay */
    ck_assert_uint_eq(fshared_registry_count(r), 2);
    ck_assert(!take(rl_of(s1, 1), "10.0.0.1"));

    /* "api" back while s1 still holds the old entry: a fresh limiter, as
     * if it were new, since the snapshot it replaces had none */
    struct snap *s3 = bound(r, &both);
    ck_assert_ptr_ne(rl_of(s3, 1), rl_of(s1, 1));
    ck_assert(take(rl_of(s3, 1), "10.0.0.1"));
    ck_assert_uint_eq(fshared_registry_count(r), 2);
    snap_unref(s3);
    snap_unref(s1);
    /* no snapshot names "api" any more: its entry is gone */
    ck_assert_uint_eq(fshared_registry_count(r), 1);
    snap_unref(s2);
    ck_assert_uint_eq(fshared_registry_count(r), 0);
    fshared_registry_free(r);
}
END_TEST

START_TEST(rate_limit_off_binds_no_limiter)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec on = {.names = {"web"}, .n = 1, .rate = 1, .burst = 1, .max_keys = 100};
    struct spec off = on;
    off.rl_off = true;
    struct snap *s1 = bound(r, &on);
    ck_assert(take(rl_of(s1, 0), "10.0.0.1"));
    struct snap *s2 = bound(r, &off);
    ck_assert_ptr_null(rl_of(s2, 0));
    ck_assert_uint_eq(fshared_registry_count(r), 1); /* the entry stays all the same */
    struct snap *s3 = bound(r, &on);                 /* on again: afresh */
    ck_assert_ptr_ne(rl_of(s3, 0), rl_of(s1, 0));
    ck_assert(take(rl_of(s3, 0), "10.0.0.1"));
    snap_unref(s1);
    snap_unref(s2);
    snap_unref(s3);
    fshared_registry_free(r);
}
END_TEST

START_TEST(unbound_snapshot_has_no_limiter)
{
    struct spec sp = {.names = {"web"}, .n = 1, .rate = 1, .burst = 1};
    struct snap *s = decode(&sp);
    ck_assert_ptr_null(s->fshared);
    ck_assert_ptr_null(fshared_limiter(s->fshared, 0));
    snap_unref(s); /* releases no binding */
    fshared_binding_release(NULL);
}
END_TEST

START_TEST(every_frontend_gets_an_entry)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    struct spec sp = {.names = {"a", "b", "c", "d"}, .n = 4, .rate = 1, .burst = 1};
    struct snap *s = bound(r, &sp);
    ck_assert_uint_eq(fshared_registry_count(r), 4);
    snap_unref(s);
    ck_assert_uint_eq(fshared_registry_count(r), 0);
    fshared_registry_free(r);
}
END_TEST

/* ---- a swap under load ----------------------------------------------------------------- */

/* The published snapshot, as dp_snapshot()/dp_swap() keep it. */
struct published {
    pthread_mutex_t lock;
    struct snap *snap;
    atomic_bool stop;
    atomic_uint_fast64_t checks;
};

static struct snap *published_get(struct published *p)
{
    pthread_mutex_lock(&p->lock);
    struct snap *s = snap_ref(p->snap);
    pthread_mutex_unlock(&p->lock);
    return s;
}

static void published_set(struct published *p, struct snap *s)
{
    pthread_mutex_lock(&p->lock);
    struct snap *old = p->snap;
    p->snap = s;
    pthread_mutex_unlock(&p->lock);
    snap_unref(old);
}

/* A worker: adopts the newest snapshot now and then and checks requests
 * against the limiter its snapshot bound, dropping the old snapshot last (so
 * bindings, entries and limiters are often released on this thread). */
static void *serve(void *arg)
{
    struct published *p = arg;
    struct snap *s = published_get(p);
    char client[32];
    for (unsigned i = 0; !atomic_load(&p->stop); i++) {
        if (i % 64 == 0) {
            struct snap *n = published_get(p);
            snap_unref(s);
            s = n;
        }
        for (uint32_t fe = 0; fe < s->n_frontends; fe++) {
            struct limiter *l = fshared_limiter(s->fshared, fe);
            snprintf(client, sizeof(client), "10.0.%u.%u", (i >> 8) & 255, i & 255);
            if (l != NULL)
                take(l, client);
        }
        atomic_fetch_add(&p->checks, 1);
    }
    snap_unref(s);
    return NULL;
}

START_TEST(swap_while_another_thread_uses_the_old_binding)
{
    struct fshared_registry *r = fshared_registry_new(NULL);
    static struct published p;
    memset(&p, 0, sizeof(p));
    pthread_mutex_init(&p.lock, NULL);
    struct spec sp = {.names = {"web", "api"}, .n = 2, .rate = 50, .burst = 10, .max_keys = 64};
    p.snap = bound(r, &sp);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, serve, &p), 0);
    for (unsigned round = 0; round < 300; round++) {
        /* same settings, then more keys (carry), other limits, a frontend
         * gone and back, rate limiting off and on */
        struct spec n = sp;
        switch (round % 5) {
        case 1:
            n.max_keys = 128;
            break;
        case 2:
            n.rate = 60;
            break;
        case 3:
            n.n = 1;
            break;
        case 4:
            n.rl_off = true;
            break;
        default:
            break;
        }
        published_set(&p, bound(r, &n));
        while (atomic_load(&p.checks) < (round + 1) * 8)
            sched_yield();
    }
    atomic_store(&p.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_eq(fshared_registry_count(r), 2);
    published_set(&p, NULL);
    ck_assert_uint_eq(fshared_registry_count(r), 0);
    pthread_mutex_destroy(&p.lock);
    fshared_registry_free(r);
}
END_TEST

Suite *fshared_suite(void);
Suite *fshared_suite(void)
{
    Suite *s = suite_create("fshared");
    TCase *sw = tcase_create("swaps");
    tcase_add_test(sw, same_settings_keep_the_limiter);
    tcase_add_test(sw, changed_settings_carry_buckets);
    tcase_add_test(sw, compares_with_the_newest_binding);
    suite_add_tcase(s, sw);
    TCase *rg = tcase_create("registry");
    tcase_add_test(rg, removed_frontend_released);
    tcase_add_test(rg, rate_limit_off_binds_no_limiter);
    tcase_add_test(rg, unbound_snapshot_has_no_limiter);
    tcase_add_test(rg, every_frontend_gets_an_entry);
    suite_add_tcase(s, rg);
    TCase *cc = tcase_create("concurrency");
    tcase_set_timeout(cc, 120);
    tcase_add_test(cc, swap_while_another_thread_uses_the_old_binding);
    suite_add_tcase(s, cc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fshared_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
