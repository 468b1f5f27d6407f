/* tests/e2e/test_twohosts.c: one control plane and two data planes as if on
 * three hosts: the control plane's feed on 127.0.0.2 (tcp://), the data
 * planes' frontends and metrics on 127.0.0.3 and 127.0.0.4 (--bind-address
 * on a config that says 0.0.0.0, as a fleet-wide config would).
 *
 * Two such worlds run side by side, one with a sealed feed and one with
 * --feed-insecure, and take the same config changes in turn, so the time a
 * change takes to be served by both data planes is compared sealed against
 * unsealed in one run (printed: p50 and p99 of each). */
#include "e2e.h"

#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CP_HOST  "127.0.0.2"
#define CHANGES  16 /* per world (p99 of 16 is their maximum) */
#define KEY_TEXT "1 8a1f0c3e5d7b9a2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5\n"

static const char *const hosts[2] = {"127.0.0.3", "127.0.0.4"};

struct world {
    struct e2e_cp *cp;
    char base[64];
    char metrics[2][32]; /* HOST:PORT of each data plane's /metrics */
    char *dp_each[2][5]; /* --bind-address HOST --metrics-listen HOST:PORT */
    char *args[3];       /* --feed-key FILE or --feed-insecure */
    unsigned mport;
    double took_ms[CHANGES];
};

static char keydir[64];

static void key_make(void)
{
    snprintf(keydir, sizeof(keydir), "/tmp/lb-twohosts-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(keydir));
    char path[128];
    snprintf(path, sizeof(path), "%s/feed.key", keydir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, KEY_TEXT, strlen(KEY_TEXT)), (ssize_t)strlen(KEY_TEXT));
    close(fd);
}

static void key_remove(void)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", keydir);
    ck_assert_int_eq(system(cmd), 0);
}

static void world_start(struct world *wd, bool sealed)
{
    static char key[128];
    snprintf(key, sizeof(key), "%s/feed.key", keydir);
    e2e_feed_base(CP_HOST, wd->base, sizeof(wd->base));
    wd->mport = e2e_free_port();
    ck_assert_uint_ne(wd->mport, 0);
    wd->args[0] = sealed ? "--feed-key" : "--feed-insecure";
    wd->args[1] = sealed ? key : NULL;
    wd->args[2] = NULL;
    struct e2e_cp_opts o = {.backends = 2,
                            .dataplanes = 2,
                            .control = wd->base,
                            .frontend_address = "0.0.0.0",
                            .cp_args = wd->args,
                            .dp_args = wd->args};
    for (unsigned i = 0; i < 2; i++) {
        snprintf(wd->metrics[i], sizeof(wd->metrics[i]), "%s:%u", hosts[i], wd->mport);
        wd->dp_each[i][0] = "--bind-address";
        wd->dp_each[i][1] = (char *)hosts[i];
        wd->dp_each[i][2] = "--metrics-listen";
        wd->dp_each[i][3] = wd->metrics[i];
        wd->dp_each[i][4] = NULL;
        o.dp_args_each[i] = wd->dp_each[i];
    }
    wd->cp = e2e_cp_start(&o);
    ck_assert_int_ge(e2e_cp_wait_in_sync(wd->cp, 2, NULL), 1);
}

static double dp_metric(const struct world *wd, unsigned i, const char *name)
{
    char *m = e2e_scrape_host(hosts[i], wd->mport);
    double v = m != NULL ? e2e_metric(m, name, NULL) : NAN;
    free(m);
    return v;
}

/* A request through data plane <i>'s own address answers 200 from a
 * backend; the same port on 127.0.0.1 is not served. */
static void serves_on_its_host(const struct world *wd, unsigned i)
{
    unsigned port = e2e_cp_frontend_port(wd->cp);
    struct e2e_resp r;
    ck_assert_msg(e2e_request_host(hosts[i], port, "GET", "/", NULL, NULL, 0, &r) == 0,
                  "no answer on %s:%u", hosts[i], port);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    struct e2e_conn *c = e2e_connect_host("127.0.0.1", port);
    ck_assert_msg(c == NULL, "127.0.0.1:%u is served: --bind-address was not applied", port);
}

/* Each data plane reports where it listens: its own address, the port of
 * the config's frontend (lbctl --json dataplanes, polled). */
static void reports_its_address(const struct world *wd)
{
    char want[2][48];
    for (unsigned i = 0; i < 2; i++)
        snprintf(want[i], sizeof(want[i]), "\"%s:%u\"", hosts[i], e2e_cp_frontend_port(wd->cp));
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        struct e2e_cmd r;
        ck_assert_int_eq(e2e_cp_lbctl(wd->cp, &r, "--json", "dataplanes", NULL), 0);
        bool both = strstr(r.out, want[0]) != NULL && strstr(r.out, want[1]) != NULL;
        if (both || e2e_now_ms() >= deadline) {
            ck_assert_msg(both, "dataplanes do not name %s and %s: %s", want[0], want[1], r.out);
            e2e_cmd_free(&r);
            return;
        }
        e2e_cmd_free(&r);
        e2e_poll_pause(100);
    }
}

/* The generation data plane <i> serves (-1 when it does not answer). */
static double served(const struct world *wd, unsigned i)
{
    double g = dp_metric(wd, i, "lb_snapshot_generation");
    return isnan(g) ? -1 : g;
}

/* One config change (backend b0's weight to <weight>) and the milliseconds
 * from the command to the moment both data planes serve it. */
static double change(struct world *wd, unsigned weight)
{
    char w[16];
    snprintf(w, sizeof(w), "%u", weight);
    double before[2] = {served(wd, 0), served(wd, 1)};
    struct e2e_cmd r;
    uint64_t t0 = e2e_now_ms(), deadline = t0 + e2e_timeout_ms();
    ck_assert_msg(e2e_cp_lbctl(wd->cp, &r, "backends", "update", "b0", "--weight", w, NULL) == 0,
                  "%s", r.err);
    e2e_cmd_free(&r);
    for (unsigned i = 0; i < 2; i++)
        while (served(wd, i) <= before[i]) {
            ck_assert_msg(e2e_now_ms() < deadline, "%s never served the change", hosts[i]);
            e2e_poll_pause(1);
        }
    double took = (double)(e2e_now_ms() - t0);
    /* what they serve is the control plane's generation of the change, or a
     * newer one (a health check under load may have made one since) */
    long gen = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(wd->cp, NULL, 0, NULL, &gen), 0);
    for (unsigned i = 0; i < 2; i++)
        while (served(wd, i) < (double)gen) {
            ck_assert_msg(e2e_now_ms() < deadline, "%s never served generation %ld", hosts[i], gen);
            e2e_poll_pause(1);
        }
    return took;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_figures(const char *what, double *ms)
{
    qsort(ms, CHANGES, sizeof(ms[0]), cmp_double);
    size_t p99 = (CHANGES * 99 + 99) / 100 - 1;
    fprintf(stderr, "twohosts: %s feed, %d changes to 2 data planes: p50 %.0f ms, p99 %.0f ms\n",
            what, CHANGES, ms[CHANGES / 2], ms[p99]);
}

START_TEST(sealed_and_unsealed_fleets)
{
    key_make();
    struct world sealed = {0}, open = {0};
    world_start(&sealed, true);
    world_start(&open, false);
    for (unsigned i = 0; i < 2; i++) {
        serves_on_its_host(&sealed, i);
        serves_on_its_host(&open, i);
        ck_assert(dp_metric(&sealed, i, "lb_feed_sealed") == 1);
        ck_assert(dp_metric(&open, i, "lb_feed_insecure") == 1);
    }
    reports_its_address(&sealed);
    /* the same changes, in turn, so both see the same machine */
    for (unsigned k = 0; k < CHANGES; k++) {
        sealed.took_ms[k] = change(&sealed, 2 + k);
        open.took_ms[k] = change(&open, 2 + k);
    }
    for (unsigned i = 0; i < 2; i++) {
        serves_on_its_host(&sealed, i);
        ck_assert(dp_metric(&sealed, i, "lb_feed_rejected_total") == 0);
    }
    /* and both data planes say so to the control plane, sealed reports included */
    ck_assert_int_ge(e2e_cp_wait_in_sync(sealed.cp, 2, NULL), CHANGES);
    ck_assert_int_ge(e2e_cp_wait_in_sync(open.cp, 2, NULL), CHANGES);
    print_figures("sealed tcp://", sealed.took_ms);
    print_figures("unsealed tcp://", open.took_ms);
    e2e_cp_stop(sealed.cp);
    e2e_cp_stop(open.cp);
    key_remove();
}
END_TEST

START_TEST(bind_address_is_checked)
{
    struct e2e_cmd r;
    char *dp[] = {LB_BUILD_DIR "/lb-dataplane",
                  "--bind-address",
                  "127.0.0.300",
                  "--snapshot",
                  "/nonexistent",
                  NULL};
    ck_assert_int_eq(e2e_cmd_run(dp, NULL, &r), 2);
    ck_assert_msg(strstr(r.err, "--bind-address: \"127.0.0.300\" is not an IP address"), "%s",
                  r.err);
    e2e_cmd_free(&r);
}
END_TEST

static Suite *twohosts_suite(void)
{
    Suite *s = suite_create("twohosts");
    TCase *tc = e2e_tcase("twohosts");
    tcase_add_test(tc, sealed_and_unsealed_fleets);
    tcase_add_test(tc, bind_address_is_checked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(twohosts_suite());
}
