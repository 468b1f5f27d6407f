/* tests/e2e/test_health.c: active health checks end to end: lb-controlplane
 * checking lb-backend processes (and a flapping server of this test) every
 * 200 ms, lb-dataplane following its snapshots, lbctl reading the verdicts. */
#include "e2e.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LBCTL(w, r, ...) e2e_cp_lbctl((w), (r), __VA_ARGS__, NULL)
#define INTERVAL_MS      200
#define RISE             2
#define FALL             3

/* ---- helpers ------------------------------------------------------------------- */

/* Writes a config (frontend and metrics of the world, <n> backends with ids
 * ids[i] on ports[i], health checks every INTERVAL_MS) and applies it. */
static void apply_config(struct e2e_cp *w, const char *const *ids, const unsigned *ports,
                         unsigned n)
{
    char path[256];
    e2e_cp_path(w, "health.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "frontends:\n  - name: \"web\"\n    address: \"127.0.0.1\"\n    port: %u\n",
            e2e_cp_frontend_port(w));
    fprintf(f, "backends:\n");
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "  - id: \"%s\"\n    url: \"http://127.0.0.1:%u\"\n", ids[i], ports[i]);
    fprintf(f,
            "healthcheck:\n  interval: \"%ums\"\n  timeout: \"150ms\"\n  path: \"/health\"\n"
            "  rise: %u\n  fall: %u\n",
            INTERVAL_MS, RISE, FALL);
    fprintf(f, "timeouts:\n  drain: \"5s\"\n");
    fprintf(f, "logging:\n  level: \"info\"\n  accessLog: false\n");
    fprintf(f, "metrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: %u\n",
            e2e_cp_metrics_port(w));
    ck_assert_int_eq(fclose(f), 0);
    struct e2e_cmd r;
    int st = LBCTL(w, &r, "config", "apply", path, "--comment", "health checks every 200ms");
    ck_assert_msg(st == 0, "lbctl config apply: exit %d, %s", st, r.err);
    e2e_cmd_free(&r);
}

/* What `lbctl --json backends list` says of backend <id>. */
struct view {
    char health[16];
    char last_error[160]; /* "" when null */
    bool checked;         /* last_check_ms is a number */
};

static bool backend_view(struct e2e_cp *w, const char *id, struct view *v)
{
    struct e2e_cmd r;
    memset(v, 0, sizeof *v);
    if (LBCTL(w, &r, "--json", "backends", "list") != 0) {
        e2e_cmd_free(&r);
        return false;
    }
    char key[96];
    snprintf(key, sizeof key, "\"id\": \"%s\"", id);
    const char *o = strstr(r.out, key);
    bool ok = false;
    if (o != NULL) {
        const char *end = strstr(o + 1, "\"id\": ");
        const char *h = strstr(o, "\"health\": \"");
        const char *c = strstr(o, "\"last_check_ms\": ");
        const char *e = strstr(o, "\"last_error\": ");
        if (h && c && e && (end == NULL || e < end)) {
            sscanf(h + strlen("\"health\": \""), "%15[a-z]", v->health);
            v->checked = c[strlen("\"last_check_ms\": ")] != 'n';
            e += strlen("\"last_error\": ");
            if (*e == '"')
                sscanf(e + 1, "%159[^\"]", v->last_error);
            ok = true;
        }
    }
    e2e_cmd_free(&r);
    return ok;
}

/* Polls until backend <id>'s health is <want>; returns the ms it took, -1 on
 * timeout. */
static long wait_health(struct e2e_cp *w, const char *id, const char *want)
{
    uint64_t t0 = e2e_now_ms(), deadline = t0 + e2e_timeout_ms();
    struct view v;
    while (e2e_now_ms() < deadline) {
        if (backend_view(w, id, &v) && strcmp(v.health, want) == 0)
            return (long)(e2e_now_ms() - t0);
        e2e_poll_pause(25);
    }
    return -1;
}

/* One GET / on a new connection: status, body in <body>. */
static int get_root(unsigned port, char *body, size_t bodysz)
{
    struct e2e_resp r;
    if (e2e_request(port, "GET", "/", NULL, NULL, 0, &r) != 0)
        return 0;
    int status = r.status;
    snprintf(body, bodysz, "%s", r.body);
    e2e_resp_free(&r);
    return status;
}

/* The control plane's /metrics over the admin TCP listener. */
static char *cp_metrics(struct e2e_cp *w)
{
    char path[256], token[64] = "", hdr[128];
    e2e_cp_path(w, "rw.token", path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%63s", token), 1);
    fclose(f);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(e2e_cp_admin_port(w), "GET", "/metrics", hdr, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    char *text = strdup(r.body);
    e2e_resp_free(&r);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* ---- a killed backend goes down, traffic avoids it, it comes back ------------- */

START_TEST(killed_backend_down_then_up)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    unsigned vport = 0;
    pid_t victim = e2e_cp_backend_spawn(w, "victim", 0, "victim.log", &vport);
    const char *ids[] = {"b0", "victim"};
    unsigned ports[] = {e2e_cp_backend_port(w, 0), vport};
    apply_config(w, ids, ports, 2);
    ck_assert_int_ge(wait_health(w, "b0", "up"), 0);
    ck_assert_int_ge(wait_health(w, "victim", "up"), 0);
    struct view v;
    ck_assert(backend_view(w, "victim", &v));
    ck_assert(v.checked);
    ck_assert_str_eq(v.last_error, "");
    long version = 0;
    long gen_up = e2e_cp_wait_in_sync(w, 1, &version);
    ck_assert_int_gt(gen_up, 0);

    /* Both serve while up. */
    unsigned fe = e2e_cp_frontend_port(w);
    bool seen_victim = false;
    char body[64];
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(get_root(fe, body, sizeof body), 200);
        seen_victim = seen_victim || strcmp(body, "victim") == 0;
    }
    ck_assert(seen_victim);

    /* Killed: down after <fall> failed checks, not sooner than fall-1
     * intervals, and the error says why. */
    kill(victim, SIGKILL);
    ck_assert(e2e_wait_exit(victim, e2e_timeout_ms(), NULL));
    long took = wait_health(w, "victim", "down");
    ck_assert_msg(took >= 0, "victim never marked down");
    ck_assert_msg(took >= (FALL - 1) * INTERVAL_MS * 9 / 10 - 50, "down after %ld ms", took);
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_str_eq(v.last_error, "connect refused");
    ck_assert(v.checked);

    /* The verdict is a new generation of the same config version; once the
     * data plane has it, no client sees a 5xx and nobody reaches the victim. */
    long version2 = 0;
    long gen_down = e2e_cp_wait_in_sync(w, 1, &version2);
    ck_assert_int_gt(gen_down, gen_up);
    ck_assert_int_eq(version2, version);
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(get_root(fe, body, sizeof body), 200);
        ck_assert_str_eq(body, "b0");
    }
    char *m = cp_metrics(w);
    ck_assert(e2e_metric(m, "lb_cp_backends_down", NULL) == 1.0);
    ck_assert(e2e_metric(m, "lb_cp_backends_up", NULL) == 1.0);
    ck_assert(e2e_metric(m, "lb_cp_pool_all_down", NULL) == 0.0);
    ck_assert(e2e_metric(m, "lb_cp_health_checks_total", "result=\"fail\"") >= FALL);
    ck_assert(e2e_metric(m, "lb_cp_health_checks_total", "result=\"pass\"") >= 2 * RISE);
    free(m);

    /* Restarted on the same port: up again after <rise> passes, traffic back. */
    unsigned again = 0;
    victim = e2e_cp_backend_spawn(w, "victim", vport, "victim2.log", &again);
    ck_assert_uint_eq(again, vport);
    ck_assert_int_ge(wait_health(w, "victim", "up"), 0);
    ck_assert(backend_view(w, "victim", &v));
    ck_assert_str_eq(v.last_error, "");
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), gen_down);
    /* back under slow start (30 s by default): a tenth of its weight at
     * first, so a few requests may all go to b0 */
    seen_victim = false;
    for (int i = 0; i < 200 && !seen_victim; i++) {
        ck_assert_int_eq(get_root(fe, body, sizeof body), 200);
        seen_victim = strcmp(body, "victim") == 0;
    }
    ck_assert_msg(seen_victim, "200 requests after the recovery, none reached the victim");
    ck_assert_int_ge(e2e_kill(victim), 0);
    e2e_cp_stop(w);
}
END_TEST

/* ---- the pool all down ------------------------------------------------------------- */

START_TEST(all_down_is_reported)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    unsigned vport = 0;
    pid_t victim = e2e_cp_backend_spawn(w, "victim", 0, "victim.log", &vport);
    const char *ids[] = {"victim"};
    apply_config(w, ids, &vport, 1);
    ck_assert_int_ge(wait_health(w, "victim", "up"), 0);
    kill(victim, SIGKILL);
    ck_assert(e2e_wait_exit(victim, e2e_timeout_ms(), NULL));
    ck_assert_int_ge(wait_health(w, "victim", "down"), 0);
    char *m = cp_metrics(w);
    ck_assert(e2e_metric(m, "lb_cp_pool_all_down", NULL) == 1.0);
    free(m);
    char log[256];
    e2e_cp_path(w, "cp.log", log, sizeof log);
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    char line[2048];
    bool warned = false;
    while (fgets(line, sizeof line, f) != NULL)
        warned = warned || strstr(line, "pool_all_down") != NULL;
    fclose(f);
    ck_assert_msg(warned, "no pool_all_down line in %s", log);
    e2e_cp_stop(w);
}
END_TEST

/* ---- a flapping backend keeps its state ------------------------------------------ */

struct flapper {
    int lfd;
    unsigned port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int served;
};

/* Answers each connection's request with 200, 500, 200, ... in turn. */
static void *flapper_main(void *arg)
{
    struct flapper *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        char req[1024];
        size_t len = 0;
        for (int i = 0; i < 50 && len < sizeof req - 1; i++) {
            struct pollfd q = {.fd = fd, .events = POLLIN};
            if (poll(&q, 1, 20) <= 0)
                continue;
            ssize_t n = read(fd, req + len, sizeof req - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            req[len] = '\0';
            if (strstr(req, "\r\n\r\n") != NULL)
                break;
        }
        int k = atomic_fetch_add(&f->served, 1);
        const char *resp = k % 2 == 0 ? "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nflap"
                                      : "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
        ssize_t wr = write(fd, resp, strlen(resp)); /* a short write shows as a failed check */
        (void)wr;
        close(fd);
    }
    return NULL;
}

static struct flapper *flapper_start(void)
{
    struct flapper *f = calloc(1, sizeof *f);
    ck_assert_ptr_nonnull(f);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&a, &alen), 0);
    ck_assert_int_eq(listen(f->lfd, 16), 0);
    f->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, flapper_main, f), 0);
    return f;
}

static void flapper_stop(struct flapper *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    free(f);
}

START_TEST(flapping_backend_keeps_state)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    struct flapper *fl = flapper_start();
    const char *ids[] = {"b0", "flap"};
    unsigned ports[] = {e2e_cp_backend_port(w, 0), fl->port};
    apply_config(w, ids, ports, 2);
    ck_assert_int_ge(wait_health(w, "b0", "up"), 0);
    long gen = e2e_cp_wait_in_sync(w, 1, NULL);
    ck_assert_int_gt(gen, 0);

    /* Ten more probes, alternating pass and fail: never RISE passes or FALL
     * failures in a row, so the verdict stays and nothing is published. */
    int start = atomic_load(&fl->served);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    struct view v;
    bool saw_error = false;
    while (atomic_load(&fl->served) < start + 10 && e2e_now_ms() < deadline) {
        ck_assert(backend_view(w, "flap", &v));
        ck_assert_str_eq(v.health, "unknown");
        saw_error = saw_error || strcmp(v.last_error, "status 500") == 0;
        e2e_poll_pause(40);
    }
    ck_assert_int_ge(atomic_load(&fl->served), start + 10);
    ck_assert(backend_view(w, "flap", &v));
    ck_assert_str_eq(v.health, "unknown");
    ck_assert(v.checked);
    ck_assert(saw_error);
    long version = 0, generation = 0;
    ck_assert_int_eq(e2e_cp_dataplanes(w, NULL, 0, &version, &generation), 1);
    ck_assert_int_eq(generation, gen);
    e2e_cp_stop(w);
    flapper_stop(fl);
}
END_TEST

int main(void)
{
    unsetenv("LB_ADMIN_SOCKET");
    unsetenv("LB_ADMIN_URL");
    unsetenv("LB_TOKEN_FILE");
    Suite *s = suite_create("e2e_health");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"killed_backend", killed_backend_down_then_up},
        {"all_down", all_down_is_reported},
        {"flapping", flapping_backend_keeps_state},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
