/* tests/e2e/test_canary.c: staged config rollout (lbctl config apply
 * --canary) through two data planes sharing the frontend port, under client
 * load (lb-faultload's keep-alive clients and a client opening a connection
 * per request), on a sealed feed (--feed-key):
 *   - a config the control plane accepts but the canary refuses (a frontend
 *     on a port the test holds): the rollout fails at once on the NACK, the
 *     other data plane never leaves the old version, the config is rolled
 *     back as a new version and both data planes serve it;
 *   - a good config (one more backend) on dp0: dp0 serves it, dp1 keeps the
 *     old version until the bake passed, then both serve it;
 *   - the control plane killed (SIGKILL) mid-bake and restarted: the
 *     staged rollout resumes from the store, dp1 keeps the old version
 *     until it is promoted;
 *   - lbctl rollback N --canary 50%: staged the same way, promoted; other
 *     writes meanwhile get 409 naming it; bad canary requests refused;
 *   - no request fails throughout;
 *   - then, without load: data planes restarted mid-bake come back on
 *     their own version (state-dir cache, start-up sync); an abort rolls
 *     back.
 * Figures go to stderr ("canary: ..."). */
#include "e2e.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

/* Writes the world's config.yaml with <insert> after the line <after> as
 * the world's file <name>. */
static void write_variant(struct e2e_cp *w, const char *name, const char *after, const char *insert)
{
    char *cfg = e2e_cp_read(w, "config.yaml");
    char *at = strstr(cfg, after);
    ck_assert_ptr_nonnull(at);
    at += strlen(after);
    char path[512];
    e2e_cp_path(w, name, path, sizeof(path));
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, insert, at);
    ck_assert_int_eq(fclose(f), 0);
    free(cfg);
}

/* `lbctl --json config canary` (caller frees); its status into <status>. */
static char *canary_json(struct e2e_cp *w, char *status, size_t size)
{
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "--json", "config", "canary", NULL) == 0, "%s", r.err);
    char *out = strdup(r.out);
    e2e_cmd_free(&r);
    e2e_json_str(out, "status", status, size);
    return out;
}

/* Applies <file> staged on dp0 with <bake>; returns the canary's version. */
static long apply_canary(struct e2e_cp *w, const char *file, const char *bake)
{
    char path[512];
    e2e_cp_path(w, file, path, sizeof(path));
    struct e2e_cmd r;
    int rc = e2e_cp_lbctl(w, &r, "--json", "config", "apply", path, "--canary", "dp0", "--bake",
                          bake, "--max-error-rate", "5%", NULL);
    ck_assert_msg(rc == 0, "config apply --canary: %s%s", r.out, r.err);
    long v = 0;
    ck_assert_msg(e2e_json_long(r.out, "version", &v), "%s", r.out);
    e2e_cmd_free(&r);
    return v;
}

/* applied_version of dp0 and dp1 into v[0], v[1]; false when lbctl failed. */
static bool versions(struct e2e_cp *w, long v[2])
{
    struct e2e_dp_status dp[4];
    int n = e2e_cp_dataplanes(w, dp, 4, NULL, NULL);
    v[0] = v[1] = -1;
    for (int i = 0; i < n; i++)
        v[strcmp(dp[i].node_id, "dp1") == 0] = dp[i].applied_version;
    return n == 2;
}

/* ---- load ----------------------------------------------------------------------- */

/* Waits for the load; every request of it succeeded. */
static void load_end(struct e2e_cp *w, struct e2e_load *l)
{
    struct e2e_load_counts n;
    e2e_cp_load_end(w, l, &n);
    fprintf(stderr,
            "canary: load: keep-alive %ld requests, %ld failed; new-connection %ld ok, %ld "
            "failed\n",
            n.ka_total, n.ka_failed, n.pr_ok, n.pr_failed);
    ck_assert_int_gt(n.ka_total, 0);
    ck_assert_int_gt(n.pr_ok, 0);
    ck_assert_int_eq(n.ka_failed, 0);
    ck_assert_int_eq(n.pr_failed, 0);
}

/* ---- the test ------------------------------------------------------------------- */

/* A port held without SO_REUSEPORT: a data plane cannot bind it. */
static int hold_port(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ne(fd, -1);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* The refused one: NACK fails the rollout at once; dp1 never moves. */
static void refused(struct e2e_cp *w, long v1)
{
    unsigned held;
    int fd = hold_port(&held);
    char extra[160];
    snprintf(extra, sizeof(extra),
             "  - name: \"extra\"\n    address: \"127.0.0.1\"\n    port: %u\n", held);
    write_variant(w, "bad.yaml", "frontends:\n", extra);
    uint64_t t0 = e2e_now_ms();
    long vbad = apply_canary(w, "bad.yaml", "30s");
    ck_assert_int_gt(vbad, v1);
    char st[32] = "", *last = NULL;
    long v[2];
    uint64_t end = t0 + e2e_scaled_ms(15000);
    while (e2e_now_ms() < end) {
        /* dp1 keeps v1 until the rollback's version, never the refused one */
        ck_assert(versions(w, v));
        free(last);
        last = canary_json(w, st, sizeof(st));
        ck_assert_msg(v[1] == v1 || (strcmp(st, "failed") == 0 && v[1] > vbad),
                      "dp1 on %ld (old %ld)", v[1], v1);
        if (strcmp(st, "failed") == 0)
            break;
        e2e_poll_pause(50);
    }
    uint64_t took = e2e_now_ms() - t0;
    fprintf(stderr,
            "canary: refused snapshot: the rollout failed %llu ms after the apply (bake "
            "30 s)\n",
            (unsigned long long)took);
    ck_assert_msg(strcmp(st, "failed") == 0, "not failed: %s", last);
    ck_assert_msg(strstr(last, "refused the snapshot") && strstr(last, "cannot bind"), "%s", last);
    ck_assert_msg(took < e2e_scaled_ms(10000), "a NACK must fail at once, took %llu ms",
                  (unsigned long long)took);
    long vback = 0;
    ck_assert(e2e_json_long(last, "final_version", &vback));
    ck_assert_int_gt(vback, vbad);
    free(last);
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_eq(ver, vback);
    ck_assert(versions(w, v) && v[0] == vback && v[1] == vback);
    /* the history says so */
    struct e2e_cmd r;
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "config", "history", NULL), 0);
    ck_assert_msg(strstr(r.out, "staged rollout of version") && strstr(r.out, "failed"), "%s",
                  r.out);
    e2e_cmd_free(&r);
    close(fd);
}

/* The good one: dp0 first, dp1 after the bake. */
static void promoted(struct e2e_cp *w, long v1)
{
    char extra[200];
    snprintf(extra, sizeof(extra), "  - id: \"b2\"\n    url: \"%s\"\n    weight: 1\n",
             e2e_cp_backend_url(w, 2));
    write_variant(w, "good.yaml", "backends:\n", extra);
    uint64_t t0 = e2e_now_ms();
    long vgood = apply_canary(w, "good.yaml", "2s");
    ck_assert_int_gt(vgood, v1);
    char st[32] = "", *last = NULL;
    long v[2];
    bool staged = false; /* seen dp0 on the new version, dp1 on the old one */
    uint64_t end = t0 + e2e_scaled_ms(20000);
    while (e2e_now_ms() < end) {
        /* versions first: when the status read after them is not promoted,
         * they were read before the promotion */
        ck_assert(versions(w, v));
        free(last);
        last = canary_json(w, st, sizeof(st));
        if (strcmp(st, "promoted") == 0)
            break;
        ck_assert_msg(strcmp(st, "waiting_ack") == 0 || strcmp(st, "baking") == 0, "%s", last);
        ck_assert_msg(v[1] == v1, "dp1 on %ld before the promotion", v[1]);
        if (v[0] == vgood && !staged) {
            staged = true;
            struct e2e_cmd r;
            ck_assert_int_eq(e2e_cp_lbctl(w, &r, "dataplanes", NULL), 0);
            char want[64];
            snprintf(want, sizeof(want), "canary of version %ld", vgood);
            if (!strstr(r.out, want) || !strstr(r.out, "stable")) {
                /* only when the bake ended meanwhile */
                char now[32];
                free(canary_json(w, now, sizeof(now)));
                ck_assert_msg(strcmp(now, "promoted") == 0, "%s: %s", now, r.out);
            }
            e2e_cmd_free(&r);
        }
        e2e_poll_pause(50);
    }
    fprintf(stderr, "canary: good version promoted %llu ms after the apply (bake 2 s): %s\n",
            (unsigned long long)(e2e_now_ms() - t0), last);
    ck_assert_msg(strcmp(st, "promoted") == 0, "not promoted: %s", last);
    ck_assert_msg(staged, "never saw dp0 on the canary version while dp1 kept the old one");
    long reqs = 0;
    ck_assert(e2e_json_long(last, "canary_requests", &reqs));
    ck_assert_int_gt(reqs, 0);
    free(last);
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_eq(ver, vgood);
    ck_assert(versions(w, v) && v[0] == vgood && v[1] == vgood);
    ck_assert_int_gt(e2e_cp_backend_stat(w, 2, "others"), 0); /* the new backend serves */
}

/* The control plane killed (SIGKILL) mid-bake and restarted: the rollout
 * resumes from the store, dp1 keeps the old version until the promotion. */
static void killed_mid_bake(struct e2e_cp *w, long v1)
{
    /* b2 heavier: one more version */
    char *cfg = e2e_cp_read(w, "good.yaml");
    char *b2 = strstr(cfg, "  - id: \"b2\"");
    ck_assert_ptr_nonnull(b2);
    char *wt = strstr(b2, "weight: 1");
    ck_assert_ptr_nonnull(wt);
    wt[8] = '3';
    char path[512];
    e2e_cp_path(w, "heavier.yaml", path, sizeof(path));
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(cfg, f);
    ck_assert_int_eq(fclose(f), 0);
    free(cfg);
    uint64_t t0 = e2e_now_ms();
    long vnew = apply_canary(w, "heavier.yaml", "3s");
    long v[2] = {-1, -1};
    uint64_t end = t0 + e2e_scaled_ms(10000);
    while (e2e_now_ms() < end && !(versions(w, v) && v[0] == vnew))
        e2e_poll_pause(50);
    ck_assert_msg(v[0] == vnew && v[1] == v1, "dp0 %ld dp1 %ld, want %ld and %ld", v[0], v[1], vnew,
                  v1);
    uint64_t t_kill = e2e_now_ms();
    ck_assert_int_ge(e2e_cp_controlplane_kill(w, SIGKILL), 0);
    e2e_cp_controlplane_start(w);
    uint64_t t_up = e2e_now_ms();
    char st[32] = "", *last = NULL, seen[32] = "";
    end = e2e_now_ms() + e2e_scaled_ms(20000);
    while (e2e_now_ms() < end) {
        ck_assert(versions(w, v));
        free(last);
        last = canary_json(w, st, sizeof(st));
        if (strcmp(st, seen) != 0)
            fprintf(stderr, "canary: %llu ms after the restart: %s\n",
                    (unsigned long long)(e2e_now_ms() - t_up), st);
        snprintf(seen, sizeof(seen), "%s", st);
        if (strcmp(st, "promoted") == 0)
            break;
        ck_assert_msg(strcmp(st, "waiting_ack") == 0 || strcmp(st, "baking") == 0, "%s", last);
        ck_assert_msg(v[1] == v1, "dp1 on %ld before the promotion", v[1]);
        e2e_poll_pause(50);
    }
    fprintf(stderr, "canary: the control plane restarted in %llu ms\n",
            (unsigned long long)(t_up - t_kill));
    fprintf(stderr, "canary: SIGKILL mid-bake: promoted %llu ms after the apply (bake 3 s)\n",
            (unsigned long long)(e2e_now_ms() - t0));
    ck_assert_msg(strcmp(st, "promoted") == 0, "not promoted after the restart: %s", last);
    /* the gate saw the canary's traffic after the restart, not an empty window */
    long reqs = 0;
    ck_assert(e2e_json_long(last, "canary_requests", &reqs));
    ck_assert_msg(reqs >= 10, "%s", last);
    free(last);
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_eq(ver, vnew);
}

/* lbctl rollback N --canary 50%: version N's content staged on dp0 (the
 * first half of the sorted node ids), promoted; bad requests refused. */
static void staged_rollback(struct e2e_cp *w, long target)
{
    struct e2e_cmd r;
    char path[512];
    e2e_cp_path(w, "good.yaml", path, sizeof(path));
    ck_assert_int_ne(e2e_cp_lbctl(w, &r, "config", "apply", path, "--canary", "dp9", NULL), 0);
    ck_assert_msg(strstr(r.err, "dp9 has not reported"), "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_ne(e2e_cp_lbctl(w, &r, "config", "apply", path, "--bake", "1s", NULL), 0);
    ck_assert_msg(strstr(r.err, "go with --canary"), "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_ne(e2e_cp_lbctl(w, &r, "config", "apply", path, "--canary", "0%", NULL), 0);
    ck_assert_msg(strstr(r.err, "1% to 100%"), "%s", r.err);
    e2e_cmd_free(&r);
    char n[24];
    snprintf(n, sizeof(n), "%ld", target);
    uint64_t t0 = e2e_now_ms();
    int rc = e2e_cp_lbctl(w, &r, "--json", "rollback", n, "--canary", "50%", "--bake", "1s", NULL);
    ck_assert_msg(rc == 0, "%s%s", r.out, r.err);
    long staged = 0;
    ck_assert(e2e_json_long(r.out, "version", &staged));
    ck_assert_msg(strstr(r.out, "\"dp0\"") && !strstr(r.out, "\"dp1\""), "%s", r.out);
    e2e_cmd_free(&r);
    /* someone else's write meanwhile: 409 naming it */
    ck_assert_int_ne(e2e_cp_lbctl(w, &r, "backends", "drain", "b1", NULL), 0);
    char want[64];
    snprintf(want, sizeof(want), "staged rollout of version %ld", staged);
    ck_assert_msg(strstr(r.err, want), "%s", r.err);
    e2e_cmd_free(&r);
    char st[32] = "", *last = NULL;
    uint64_t end = t0 + e2e_scaled_ms(15000);
    while (e2e_now_ms() < end) {
        free(last);
        last = canary_json(w, st, sizeof(st));
        if (strcmp(st, "promoted") == 0)
            break;
        e2e_poll_pause(50);
    }
    fprintf(stderr, "canary: staged rollback promoted %llu ms after the request (bake 1 s)\n",
            (unsigned long long)(e2e_now_ms() - t0));
    ck_assert_msg(strcmp(st, "promoted") == 0, "%s", last);
    free(last);
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_eq(ver, staged);
}

/* Lines of data plane <i>'s log holding <needle>. */
static unsigned log_count(struct e2e_cp *w, unsigned i, const char *needle)
{
    char path[512], name[32];
    snprintf(name, sizeof(name), "dp%u.log", i);
    e2e_cp_path(w, name, path, sizeof(path));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char *line = NULL;
    size_t cap = 0;
    unsigned n = 0;
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return n;
}

/* Restarts data plane <i> mid-bake; it must come back on version <want>
 * (its state-dir cache, then the start-up sync) and stay there. */
static void restart_dataplane(struct e2e_cp *w, unsigned i, long want)
{
    char serving[96];
    snprintf(serving, sizeof(serving), "serving version %ld ", want);
    unsigned before = log_count(w, i, serving);
    ck_assert_int_ge(e2e_cp_dataplane_stop(w, i), 0);
    e2e_cp_dataplane_start(w, i);
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    while (log_count(w, i, serving) == before && e2e_now_ms() < end)
        e2e_poll_pause(20);
    ck_assert_msg(log_count(w, i, serving) > before, "dp%u did not start from its cache on %ld", i,
                  want);
    /* its reports (the new process) say <want>, for a while */
    long v[2];
    end = e2e_now_ms() + e2e_scaled_ms(2500);
    while (e2e_now_ms() < end) {
        ck_assert(versions(w, v));
        ck_assert_msg(v[i] == want, "dp%u on %ld after its restart, not %ld", i, v[i], want);
        e2e_poll_pause(100);
    }
}

/* Data planes restarting mid-bake get their own version back; an abort
 * then rolls back. */
static void dataplanes_restart_mid_bake(struct e2e_cp *w, long v_old)
{
    long vnew = apply_canary(w, "heavier.yaml", "60s");
    long v[2] = {-1, -1};
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(10000);
    while (e2e_now_ms() < end && !(versions(w, v) && v[0] == vnew))
        e2e_poll_pause(50);
    ck_assert_int_eq(v[0], vnew);
    restart_dataplane(w, 1, v_old);
    restart_dataplane(w, 0, vnew);
    struct e2e_cmd r;
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "config", "canary", "abort", NULL), 0);
    ck_assert_msg(strstr(r.out, "aborted") && strstr(r.out, "ended with"), "%s", r.out);
    e2e_cmd_free(&r);
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_gt(ver, vnew);
    ck_assert(versions(w, v) && v[0] == ver && v[1] == ver);
}

/* Waits until `config canary` says <want>; its JSON (caller frees). */
static char *wait_canary_status(struct e2e_cp *w, const char *want)
{
    char st[32] = "", *last = NULL;
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(15000);
    while (e2e_now_ms() < end) {
        free(last);
        last = canary_json(w, st, sizeof(st));
        if (strcmp(st, want) == 0)
            return last;
        e2e_poll_pause(50);
    }
    ck_abort_msg("the canary never became %s: %s", want, last);
    return NULL;
}

/* Backend writes staged like config apply: a weight on dp0 first (dp1
 * keeps the old version until the promotion), a drain on 50 %. */
static void staged_backend_writes(struct e2e_cp *w)
{
    struct e2e_cmd r;
    ck_assert_int_ne(
        e2e_cp_lbctl(w, &r, "backends", "update", "b0", "--weight", "9", "--bake", "1s", NULL), 0);
    ck_assert_msg(strstr(r.err, "go with --canary"), "%s", r.err);
    e2e_cmd_free(&r);
    long before[2];
    ck_assert(versions(w, before));
    int rc = e2e_cp_lbctl(w, &r, "backends", "update", "b0", "--weight", "9", "--canary", "dp0",
                          "--bake", "3s", NULL);
    ck_assert_msg(rc == 0, "%s%s", r.out, r.err);
    e2e_cmd_free(&r);
    char st[32];
    char *c = canary_json(w, st, sizeof(st));
    long staged = 0;
    ck_assert_msg(e2e_json_long(c, "version", &staged) && staged > before[0], "%s", c);
    ck_assert_msg(strcmp(st, "baking") == 0 || strcmp(st, "waiting_ack") == 0, "%s", c);
    free(c);
    long v[2] = {-1, -1};
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(10000);
    while (versions(w, v) && v[0] != staged && e2e_now_ms() < end)
        e2e_poll_pause(50);
    ck_assert_int_eq(v[0], staged);
    ck_assert_msg(v[1] < staged, "dp1 serves %ld before the promotion", v[1]);
    free(wait_canary_status(w, "promoted"));
    long ver = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &ver), 0);
    ck_assert_int_eq(ver, staged);
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "--json", "backends", "list", NULL), 0);
    ck_assert_msg(strstr(r.out, "\"weight\": 9") || strstr(r.out, "\"weight\":9"), "%s", r.out);
    e2e_cmd_free(&r);

    rc = e2e_cp_lbctl(w, &r, "backends", "drain", "b1", "--canary", "50%", "--bake", "500ms", NULL);
    ck_assert_msg(rc == 0, "%s%s", r.out, r.err);
    e2e_cmd_free(&r);
    free(wait_canary_status(w, "promoted"));
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, NULL), 0);
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "--json", "backends", "list", NULL), 0);
    ck_assert_msg(strstr(r.out, "draining"), "%s", r.out);
    e2e_cmd_free(&r);
}

START_TEST(staged_apply_two_dataplanes)
{
    /* a sealed feed: the held and the canary snapshots are sealed too */
    char kdir[64] = "/tmp/lb-canary-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(kdir));
    static char key[128];
    snprintf(key, sizeof(key), "%s/feed.key", kdir);
    FILE *kf = fopen(key, "w");
    ck_assert_ptr_nonnull(kf);
    fputs("1 8a1f0c3e5d7b9a2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5\n", kf);
    ck_assert_int_eq(fclose(kf), 0);
    ck_assert_int_eq(chmod(key, 0600), 0);
    static char *args[] = {"--feed-key", key, NULL};
    struct e2e_cp_opts o = {.backends = 3,
                            .configured = 2,
                            .dataplanes = 2,
                            .no_metrics = true,
                            .cp_args = args,
                            .dp_args = args};
    struct e2e_cp *w = e2e_cp_start(&o);
    long v1 = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &v1), 0);
    struct e2e_load l = e2e_cp_load_start(w, 4, (unsigned)(e2e_scaled_ms(26000) / 1000));
    refused(w, v1);
    long v2 = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &v2), 0);
    promoted(w, v2);
    long v3 = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &v3), 0);
    killed_mid_bake(w, v3);
    staged_rollback(w, v3);
    load_end(w, &l);
    long v4 = 0;
    ck_assert_int_ge(e2e_cp_wait_in_sync(w, 2, &v4), 0);
    dataplanes_restart_mid_bake(w, v4);
    struct e2e_cmd r;
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "config", "canary", NULL), 0);
    ck_assert_msg(strstr(r.out, "aborted"), "%s", r.out);
    e2e_cmd_free(&r);
    staged_backend_writes(w);
    e2e_cp_stop(w);
    ck_assert_int_eq(unlink(key), 0);
    ck_assert_int_eq(rmdir(kdir), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("canary");
    TCase *tc = e2e_tcase("staged");
    tcase_add_test(tc, staged_apply_two_dataplanes);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
