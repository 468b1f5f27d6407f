/* tests/e2e/test_restart.c: restarting or upgrading lb-dataplane by handing
 * its listening sockets to a successor (issue 15), with real processes.
 *
 * The world's data plane listens for successors on a hand-over socket; a
 * successor is the same binary started with --takeover (what SIGUSR2 does
 * with the binary installed at the old one's path). Under load — lb-faultload's
 * keep-alive clients, a client opening a connection per request, and
 * lb-tlsload's TLS clients resuming their sessions — the data plane is
 * handed over HANDOVERS times: no request may fail, every old process must
 * exit 0, and TLS sessions must resume across the swaps (the ticket keys go
 * along). A 5 s request in flight finishes on the old process; hand-overs
 * that fail (a successor that cannot start, one that refuses, one that
 * dies) leave the old one serving; SIGUSR2 starts a successor by itself.
 * Figures go to stderr ("restart: ...").
 * The long run: LB_RESTART_LOAD_S=60 LB_RESTART_HANDOVERS=10 (the
 * defaults, 11 s and 3, keep CI short). */
#include "e2e.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LB_DP     LB_BUILD_DIR "/lb-dataplane"
#define FAULTLOAD LB_BUILD_DIR "/lb-faultload"
#define TLSLOAD   LB_BUILD_DIR "/lb-tlsload"

#define HANDOVERS 3    /* LB_RESTART_HANDOVERS overrides */
#define STEP_MS   1200 /* load between two hand-overs; scaled */
#define LOAD_S    11   /* every load runs this long; scaled; LB_RESTART_LOAD_S overrides */

/* An unsigned knob from the environment in 1..<max>, else <def>. */
static unsigned knob(const char *name, unsigned def, unsigned max)
{
    const char *v = getenv(name);
    char *end;
    unsigned long n = v ? strtoul(v, &end, 10) : 0;
    return v && *end == '\0' && n >= 1 && n <= max ? (unsigned)n : def;
}
#define KA_CLIENTS "8"
#define TLS_CONNS  4

/* ---- the world ----------------------------------------------------------------- */

struct rworld {
    struct e2e *t;
    char dir[64]; /* holds the hand-over socket */
    char ho[128]; /* the hand-over socket */
    char *dp_args[3];
    struct e2e_tls1 tls;
    Lb__V1__Frontend tfe;
    Lb__V1__Frontend *fes[2];
    unsigned tls_port;
    pid_t cur;  /* the successor serving now; 0: the world's own data plane */
    unsigned n; /* successors started, s1.log ... */
    bool carry; /* with a global rate limit and a circuit breaker (runtime_state_*) */
    Lb__V1__RateLimit rl;
    Lb__V1__CircuitBreaker cb;
};

/* A second frontend, "tls", on its own port with a certificate. */
static void tweak(Lb__V1__Snapshot *snap, void *arg)
{
    struct rworld *r = arg;
    r->tfe = *snap->frontends[0];
    r->tfe.name = "tls";
    r->tfe.port = r->tls_port;
    r->tfe.tls = &r->tls.tls;
    r->fes[0] = snap->frontends[0];
    r->fes[1] = &r->tfe;
    snap->frontends = r->fes;
    snap->n_frontends = 2;
    if (!r->carry)
        return;
    /* 20 requests at once, then one a second, over the whole frontend */
    lb__v1__rate_limit__init(&r->rl);
    r->rl.enabled = true;
    r->rl.rate = 1;
    r->rl.burst = 20;
    r->rl.global = true;
    snap->ratelimit = &r->rl;
    /* one failed connect opens a breaker for a minute */
    lb__v1__circuit_breaker__init(&r->cb);
    r->cb.enabled = true;
    r->cb.threshold = 1;
    r->cb.timeout_ms = 60000;
    snap->circuit_breaker = &r->cb;
}

static struct rworld *rworld_start_opts(bool carry)
{
    struct rworld *r = calloc(1, sizeof(*r));
    ck_assert_ptr_nonnull(r);
    r->carry = carry;
    snprintf(r->dir, sizeof(r->dir), "/tmp/lb-restart-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
    snprintf(r->ho, sizeof(r->ho), "%s/handover.sock", r->dir);
    r->dp_args[0] = "--handover-socket";
    r->dp_args[1] = r->ho;
    e2e_tls1_init(&r->tls, "srv-rsa");
    r->tls_port = e2e_free_port();
    struct e2e_opts o = {
        .backends = 2, .workers = 2, .tweak = tweak, .tweak_arg = r, .dp_args = r->dp_args};
    r->t = e2e_start_opts(&o);
    ck_assert_msg(e2e_wait_log(r->t, "lb.log", "handover_listening", 1),
                  "the data plane does not listen for successors");
    return r;
}

static struct rworld *rworld_start(void)
{
    return rworld_start_opts(false);
}

static void rworld_stop(struct rworld *r)
{
    if (r->cur > 0) {
        int st = e2e_kill(r->cur);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "the last successor did not exit 0 after SIGTERM (status %d)", st);
    }
    e2e_stop(r->t);
    e2e_tls1_free(&r->tls);
    unlink(r->ho);
    rmdir(r->dir);
    free(r);
}

/* The log of the process serving now. */
static void cur_log(const struct rworld *r, char *out, size_t size)
{
    if (r->cur > 0)
        snprintf(out, size, "s%u.log", r->n);
    else
        snprintf(out, size, "lb.log");
}

/* Starts successor n+1 (log s<n+1>.log) with <extra> arguments (NULL-ended,
 * may be NULL) after the usual ones. */
static pid_t successor_spawn(struct rworld *r, char *const *extra)
{
    char snap[512], log[512], name[32];
    e2e_path(r->t, "snapshot.pb", snap, sizeof(snap));
    snprintf(name, sizeof(name), "s%u.log", r->n + 1);
    e2e_path(r->t, name, log, sizeof(log));
    /* other worker counts than the old process: the sockets are dealt
     * round robin, a worker may accept on several of a frontend */
    static char *const workers[] = {"3", "1", "2"};
    char *argv[24] = {LB_DP,       "--snapshot",      snap,
                      "--workers", workers[r->n % 3], "--handover-socket",
                      r->ho,       "--takeover",      r->ho};
    size_t n = 9;
    for (size_t k = 0; extra != NULL && extra[k] != NULL && n < 23; k++)
        argv[n++] = extra[k];
    pid_t pid = e2e_spawn(argv, log);
    ck_assert_msg(pid > 0, "fork failed");
    r->n++;
    return pid;
}

/* Waits for the process serving before a hand-over (<old>: 0 for the
 * world's own) to exit; returns its wait status. */
static int old_wait_exit(struct rworld *r, pid_t old)
{
    int st = -1;
    bool gone = old > 0 ? e2e_wait_exit(old, e2e_timeout_ms(), &st)
                        : e2e_lb_wait_exit(r->t, e2e_timeout_ms(), &st);
    ck_assert_msg(gone, "the old data plane did not exit after the hand-over");
    return st;
}

/* Hands the data plane over to a new successor; returns the old one's pid
 * (0: the world's own), still running or draining. */
static pid_t hand_over_begin(struct rworld *r)
{
    pid_t old = r->cur;
    pid_t pid = successor_spawn(r, NULL);
    char name[32];
    snprintf(name, sizeof(name), "s%u.log", r->n);
    ck_assert_msg(e2e_wait_log(r->t, name, "takeover_done", 1), "successor %u did not take over",
                  r->n);
    r->cur = pid;
    return old;
}

static void hand_over(struct rworld *r)
{
    pid_t old = hand_over_begin(r);
    int st = old_wait_exit(r, old);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the old data plane ended with status %d after the hand-over", st);
}

static int get_status(unsigned port, const char *path)
{
    struct e2e_resp resp;
    if (e2e_request(port, "GET", path, NULL, NULL, 0, &resp) != 0)
        return -1;
    int s = resp.status;
    e2e_resp_free(&resp);
    return s;
}

/* ---- loads ---------------------------------------------------------------------- */

static pid_t load_spawn(struct rworld *r, char *const argv[], const char *log)
{
    char path[512];
    e2e_path(r->t, log, path, sizeof(path));
    pid_t pid = e2e_spawn(argv, path);
    ck_assert_msg(pid > 0, "fork failed");
    return pid;
}

/* The whole output of a load that ended (its log file). Caller frees. */
static char *load_result(struct rworld *r, pid_t pid, const char *log)
{
    int st;
    ck_assert_msg(e2e_wait_exit(pid, e2e_scaled_ms(LOAD_S * 1000) + e2e_timeout_ms(), &st),
                  "%s did not end", log);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s ended with status %d", log, st);
    char path[512];
    e2e_path(r->t, log, path, sizeof(path));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* A client that opens a connection per request, in a child process: writes
 * "ok N failed N" to <log> after <ms>. */
static pid_t per_request_spawn(struct rworld *r, unsigned port, uint64_t ms, const char *log)
{
    char path[512];
    e2e_path(r->t, log, path, sizeof(path));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    long ok = 0, failed = 0;
    uint64_t end = e2e_now_ms() + ms;
    while (e2e_now_ms() < end) {
        if (get_status(port, "/") == 200)
            ok++;
        else
            failed++;
    }
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "{\"ok\":%ld,\"failed\":%ld}\n", ok, failed);
        fclose(f);
    }
    _exit(0);
}

/* ---- tests ---------------------------------------------------------------------- */

START_TEST(load_across_handovers)
{
    struct rworld *r = rworld_start();
    unsigned port = e2e_lb_port(r->t);
    char ports[16], tports[16], seconds[24], conns[16];
    snprintf(ports, sizeof(ports), "%u", port);
    snprintf(tports, sizeof(tports), "%u", r->tls_port);
    unsigned handovers = knob("LB_RESTART_HANDOVERS", HANDOVERS, 100);
    uint64_t load_ms = e2e_scaled_ms(knob("LB_RESTART_LOAD_S", LOAD_S, 3600) * 1000ull);
    /* the load between hand-overs: what is left once each took its ~2 s */
    uint64_t step_ms = e2e_scaled_ms(STEP_MS);
    if (load_ms > handovers * 2000ull + (handovers + 1) * step_ms)
        step_ms = (load_ms - handovers * 2000ull) / (handovers + 1);
    snprintf(seconds, sizeof(seconds), "%llu", (unsigned long long)(load_ms / 1000));
    snprintf(conns, sizeof(conns), "%d", TLS_CONNS);
    /* the keep-alive clients go on 2 s past the others (whole seconds,
     * rounded up), so that they are still there to move to the last process
     * however slow its hand-over was (TSan) */
    char ka_seconds[24];
    snprintf(ka_seconds, sizeof(ka_seconds), "%llu",
             (unsigned long long)((load_ms + 999) / 1000 + 2));
    char *ka_argv[] = {FAULTLOAD,   "--port",   ports,          "--clients", KA_CLIENTS,
                       "--seconds", ka_seconds, "--timeout-ms", "5000",      NULL};
    char *tls_argv[] = {TLSLOAD, "--port",   tports,         "--conns",       conns, "--seconds",
                        seconds, "--resume", "--servername", "a.example.com", NULL};
    pid_t ka = load_spawn(r, ka_argv, "ka.out");
    pid_t tl = load_spawn(r, tls_argv, "tls.out");
    pid_t pr = per_request_spawn(r, port, load_ms, "pr.out");
    uint64_t t0 = e2e_now_ms();
    for (unsigned i = 0; i < handovers; i++) {
        e2e_sleep_ms((unsigned)step_ms); /* load on one process */
        uint64_t h0 = e2e_now_ms();
        hand_over(r);
        fprintf(stderr, "restart: hand-over %u at %llu ms, old exited %llu ms later\n", i + 1,
                (unsigned long long)(h0 - t0), (unsigned long long)(e2e_now_ms() - h0));
    }
    ck_assert_msg(e2e_now_ms() - t0 + e2e_scaled_ms(500) < load_ms,
                  "the hand-overs outlasted the load: raise LOAD_S");

    /* the last successor, counted by itself: it served keep-alive clients
     * and resumed TLS sessions whose tickets its predecessors issued */
    double accepted = 0, full = 0, resumed = 0;
    for (uint64_t end = e2e_now_ms() + e2e_scaled_ms(2000);;) {
        char *metrics = e2e_scrape(r->t);
        ck_assert_ptr_nonnull(metrics);
        accepted = e2e_metric(metrics, "lb_connections_accepted_total", "frontend=\"web\"");
        full = e2e_metric(metrics, "lb_tls_sessions_total", "frontend=\"tls\",kind=\"full\"");
        resumed = e2e_metric(metrics, "lb_tls_sessions_total", "frontend=\"tls\",kind=\"resumed\"");
        free(metrics);
        if (accepted >= 8 || e2e_now_ms() >= end)
            break;
        e2e_poll_pause(50);
    }

    char *kout = load_result(r, ka, "ka.out");
    char *tout = load_result(r, tl, "tls.out");
    char *pout = load_result(r, pr, "pr.out");
    long k_total = -1, k_ok = -1, k_failed = -1, p_ok = -1, p_failed = -1;
    ck_assert(e2e_json_long(kout, "total", &k_total));
    ck_assert(e2e_json_long(kout, "ok", &k_ok));
    ck_assert(e2e_json_long(kout, "failed", &k_failed));
    ck_assert(e2e_json_long(pout, "ok", &p_ok));
    ck_assert(e2e_json_long(pout, "failed", &p_failed));
    unsigned long long t_full = 0, t_resumed = 0, t_errors = 0;
    const char *tl_line = strstr(tout, "full ");
    ck_assert_msg(tl_line != NULL && sscanf(tl_line, "full %llu resumed %llu errors %llu", &t_full,
                                            &t_resumed, &t_errors) == 3,
                  "lb-tlsload printed: %s", tout);
    double ratio = t_full + t_resumed ? (double)t_resumed / (double)(t_full + t_resumed) : 0;
    fprintf(stderr,
            "restart: %u hand-overs in %llu s; keep-alive %ld requests, %ld failed; per-request "
            "%ld ok, "
            "%ld failed; TLS %llu full, %llu resumed (%.1f %%), %llu errors; the last process: "
            "%.0f connections accepted on web, TLS %.0f full, %.0f resumed\n",
            handovers, (unsigned long long)(load_ms / 1000), k_total, k_failed, p_ok, p_failed,
            t_full, t_resumed, ratio * 100, t_errors, accepted, full, resumed);
    ck_assert_int_eq(k_failed, 0);
    ck_assert_int_gt(k_ok, 0);
    ck_assert_int_eq(p_failed, 0);
    ck_assert_int_gt(p_ok, 0);
    ck_assert_uint_eq(t_errors, 0);
    ck_assert_msg(ratio > 0.9, "TLS resumption %.1f %%", ratio * 100);
    /* a full handshake for each client's first connection, none after */
    ck_assert_uint_le(t_full, TLS_CONNS);
    /* every keep-alive client reconnected to the last process */
    ck_assert(accepted >= 8);
    ck_assert(full == 0);
    ck_assert(resumed > 0);
    free(kout);
    free(tout);
    free(pout);
    rworld_stop(r);
}
END_TEST

static bool slow_arrived(void *arg)
{
    return e2e_backend_stat(arg, 0, "requests") + e2e_backend_stat(arg, 1, "requests") >= 3;
}

START_TEST(slow_request_finishes_on_the_old_process)
{
    struct rworld *r = rworld_start();
    unsigned port = e2e_lb_port(r->t);
    struct e2e_conn *c = e2e_connect(port);
    ck_assert_ptr_nonnull(c);
    const char req[] = "GET /slow/5000 HTTP/1.1\r\nHost: lb\r\n\r\n";
    uint64_t t0 = e2e_now_ms();
    ck_assert_int_eq(e2e_conn_send(c, req, sizeof(req) - 1), 0);
    /* each /stats counts itself: two of them and the slow request */
    ck_assert(e2e_wait_until(slow_arrived, r->t, e2e_timeout_ms()));
    pid_t old = hand_over_begin(r);
    ck_assert_int_eq(old, 0);
    int st;
    ck_assert_msg(!e2e_lb_wait_exit(r->t, 0, &st), "the old process exited mid-request");
    ck_assert_int_eq(get_status(port, "/"), 200); /* the successor serves meanwhile */
    struct e2e_resp resp;
    ck_assert_int_eq(e2e_conn_read(c, &resp, false), 0);
    uint64_t took = e2e_now_ms() - t0;
    char conn[32] = "";
    ck_assert_int_eq(resp.status, 200);
    ck_assert(e2e_resp_header(&resp, "Connection", conn, sizeof(conn)));
    ck_assert_str_eq(conn, "close");
    e2e_resp_free(&resp);
    e2e_conn_close(c);
    st = old_wait_exit(r, old);
    fprintf(stderr, "restart: the slow request took %llu ms across the hand-over\n",
            (unsigned long long)took);
    ck_assert(took >= 4900);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rworld_stop(r);
}
END_TEST

/* A successor written by hand: receives what the old process sends, then
 * answers "failed" with <reason>, or closes when <reason> is NULL. */
static void fake_successor(const char *path, const char *reason)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    ck_assert_int_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    unsigned fds = 0;
    for (;;) {
        char buf[16384 + 1];
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(4 * sizeof(int))];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl)};
        ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        ck_assert_int_gt(n, 0);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                close(fd);
                fds++;
            }
        }
        if (buf[0] == 'E')
            break;
    }
    /* the plain frontend: a socket per worker; the TLS one: one they share; metrics */
    ck_assert_uint_eq(fds, 2 + 1 + 1);
    if (reason != NULL) {
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "F%s", reason);
        ck_assert_int_eq(send(s, msg, (size_t)n, MSG_NOSIGNAL), n);
    }
    close(s);
}

START_TEST(failed_handovers_leave_the_old_serving)
{
    struct rworld *r = rworld_start();
    unsigned port = e2e_lb_port(r->t);
    int st;

    /* a successor that cannot start: a bad flag */
    char *bad_flag[] = {"--log-level", "loud", NULL};
    pid_t p = successor_spawn(r, bad_flag);
    ck_assert(e2e_wait_exit(p, e2e_timeout_ms(), &st));
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_int_eq(get_status(port, "/"), 200);

    /* a successor given a socket where nobody listens */
    char nobody[160];
    snprintf(nobody, sizeof(nobody), "%s/nobody.sock", r->dir);
    char *no_peer[] = {"--takeover", nobody, NULL};
    p = successor_spawn(r, no_peer);
    ck_assert(e2e_wait_exit(p, e2e_timeout_ms(), &st));
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    ck_assert_uint_eq(e2e_log_count(r->t, "s2.log", "cannot reach the running data plane"), 2);

    /* successors that got everything and then refuse or die before ready */
    fake_successor(r->ho, "cannot parse the snapshot");
    ck_assert(e2e_wait_log(r->t, "lb.log", "cannot parse the snapshot; this data plane keeps", 1));
    ck_assert_int_eq(get_status(port, "/"), 200);
    fake_successor(r->ho, NULL);
    ck_assert(e2e_wait_log(r->t, "lb.log", "went away before it was ready", 1));
    ck_assert_int_eq(get_status(port, "/"), 200);
    ck_assert_msg(!e2e_lb_wait_exit(r->t, 0, &st), "the old process exited");

    /* and a real one still takes over afterwards */
    hand_over(r);
    ck_assert_int_eq(get_status(port, "/"), 200);
    char log[32];
    cur_log(r, log, sizeof(log));
    ck_assert_uint_eq(e2e_log_count(r->t, log, "takeover_done"), 1);
    rworld_stop(r);
}
END_TEST

/* The new side's refusal, against an old process written by hand that
 * hands over a snapshot the successor cannot decode: it answers "failed"
 * with the reason and exits 1, saying why. */
START_TEST(successor_refuses_an_undecodable_snapshot)
{
    struct rworld *r = rworld_start();
    char fake[100];
    snprintf(fake, sizeof(fake), "%s/fake.sock", r->dir);
    int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(l, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fake);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    char *to_fake[] = {"--takeover", fake, NULL};
    pid_t p = successor_spawn(r, to_fake);
    struct timeval tv = {.tv_sec = (time_t)(e2e_timeout_ms() / 1000)};
    setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int c = accept(l, NULL, NULL);
    ck_assert_int_ge(c, 0);
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const char garbage[] = "S\xff\xff\xff\xff not a snapshot";
    ck_assert_int_eq(send(c, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL), sizeof(garbage) - 1);
    char end[17] = {'E'};
    uint64_t counts[2] = {0, sizeof(garbage) - 2};
    memcpy(end + 1, counts, sizeof(counts));
    ck_assert_int_eq(send(c, end, sizeof(end), MSG_NOSIGNAL), sizeof(end));
    char answer[600];
    ssize_t n = recv(c, answer, sizeof(answer) - 1, 0);
    ck_assert_int_gt(n, 1);
    answer[n] = '\0';
    fprintf(stderr, "restart: the successor answered \"%s\"\n", answer);
    ck_assert_int_eq(answer[0], 'F');
    ck_assert_ptr_nonnull(strstr(answer, "takeover from"));
    int st;
    ck_assert(e2e_wait_exit(p, e2e_timeout_ms(), &st));
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    ck_assert_uint_eq(e2e_log_count(r->t, "s1.log", "startup_failed"), 1);
    close(c);
    close(l);
    unlink(fake);
    ck_assert_int_eq(get_status(e2e_lb_port(r->t), "/"), 200);
    rworld_stop(r);
}
END_TEST

/* SIGUSR2 started it: ours to stop if a check fails before the test does */
static pid_t usr2_successor;

static void usr2_successor_kill(void)
{
    if (usr2_successor > 0)
        kill(usr2_successor, SIGKILL);
}

/* <pid> runs with the data plane's malloc tunables and under its own name,
 * which the exec that set them kept (ps, pgrep, pidof). */
static void assert_malloc_tuned(pid_t pid)
{
    char tun[128], name[32];
    ck_assert_msg(e2e_proc_env(pid, "GLIBC_TUNABLES", tun, sizeof(tun)), "no GLIBC_TUNABLES");
    ck_assert_str_eq(tun, "glibc.malloc.tcache_max=256");
    ck_assert(e2e_proc_status(pid, "Name", name, sizeof(name)));
    ck_assert_str_eq(name, "lb-dataplane");
}

/* SIGUSR2: the data plane starts its own binary with --takeover, which
 * takes over; the test adopts it as a subreaper, to stop it by pid. */
START_TEST(sigusr2_starts_a_successor)
{
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    atexit(usr2_successor_kill);
    struct rworld *r = rworld_start();
    unsigned port = e2e_lb_port(r->t);
    assert_malloc_tuned(e2e_lb_pid(r->t));
    ck_assert_int_eq(kill(e2e_lb_pid(r->t), SIGUSR2), 0);
    ck_assert(e2e_wait_log(r->t, "lb.log", "upgrade_started", 1));
    char path[512], line[4096];
    e2e_path(r->t, "lb.log", path, sizeof(path));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL && usr2_successor <= 0) {
        const char *p = strstr(line, "upgrade_started");
        p = p ? strstr(p, "(pid ") : NULL;
        if (p != NULL)
            usr2_successor = (pid_t)atol(p + 5);
    }
    fclose(f);
    ck_assert_int_gt(usr2_successor, 0);
    ck_assert(e2e_wait_log(r->t, "lb.log", "takeover_done", 1));
    int st = old_wait_exit(r, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_eq(kill(usr2_successor, 0), 0);
    ck_assert_int_eq(get_status(port, "/"), 200);
    /* the successor inherited the tuned environment and kept it as it was */
    assert_malloc_tuned(usr2_successor);
    st = e2e_kill(usr2_successor);
    usr2_successor = 0;
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rworld_stop(r);
}
END_TEST

/* Runtime state goes with the sockets: a circuit breaker open at the old
 * process is open at the successor, and the global rate-limit bucket the
 * old process spent stays spent (a fresh one would pass a whole burst). */
START_TEST(runtime_state_carried_over)
{
    struct rworld *r = rworld_start_opts(true);
    unsigned port = e2e_lb_port(r->t);
    /* b1 gone: its first failed connect opens its breaker */
    e2e_kill_backend(r->t, 1);
    for (int i = 0; i < 4; i++)
        get_status(port, "/");
    ck_assert(e2e_wait_metric(r->t, "lb_breaker_state", "backend=\"b1\"", 1) == 1);
    /* spend the bucket */
    int limited = 0;
    for (int i = 0; i < 60 && !limited; i++)
        limited = get_status(port, "/") == 429;
    ck_assert_msg(limited, "the global rate limit never answered 429");
    uint64_t spent_at = e2e_now_ms();
    hand_over(r);
    char *text = e2e_scrape_port(e2e_metrics_port(r->t));
    ck_assert_ptr_nonnull(text);
    double st = e2e_metric(text, "lb_breaker_state", "backend=\"b1\"");
    free(text);
    ck_assert_msg(st == 1, "b1's breaker at the successor: %g, not open (1)", st);
    int passed = 0;
    for (int i = 0; i < 20; i++)
        passed += get_status(port, "/") == 200;
    /* a token a second since the bucket ran dry, one more for the edges */
    uint64_t refilled = (e2e_now_ms() - spent_at) / 1000 + 1;
    fprintf(stderr,
            "restart: after the hand-over %d of 20 requests passed (%llu tokens refilled)\n",
            passed, (unsigned long long)refilled);
    ck_assert_msg((uint64_t)passed <= refilled && passed < 20,
                  "%d of 20 passed: the successor's bucket started full", passed);
    char log[16];
    cur_log(r, log, sizeof(log));
    ck_assert(e2e_wait_log(r->t, log, "takeover_runtime", 1));
    ck_assert_uint_eq(e2e_log_count(r->t, log, "1 circuit breakers, 2 of 2 global rate limits"), 1);
    rworld_stop(r);
}
END_TEST

/* A client that connected just before the hand-over and sends its first
 * request later than the 1 s an idle keep-alive connection gets (a slow
 * client, a stalled one) is still answered by the old process, with
 * Connection: close: it would not retry on a close, as a keep-alive client
 * does. (tests/bench/restart.sh found these as empty replies.) */
START_TEST(fresh_connection_waits_through_the_drain)
{
    struct rworld *r = rworld_start();
    unsigned port = e2e_lb_port(r->t);
    struct e2e_conn *c = e2e_connect(port);
    ck_assert_ptr_nonnull(c);
    ck_assert(e2e_wait_metric(r->t, "lb_connections_open", NULL, 1) >= 1);
    pid_t old = hand_over_begin(r);
    /* time passing is the point here: past DP_HANDOVER_IDLE_S */
    e2e_sleep_ms(1600);
    static const char req[] = "GET / HTTP/1.1\r\nHost: fresh\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(c, req, sizeof(req) - 1), 0);
    struct e2e_resp resp;
    ck_assert_msg(e2e_conn_read(c, &resp, false) == 0,
                  "the old process closed a connection that had not sent its request yet");
    ck_assert_int_eq(resp.status, 200);
    ck_assert(e2e_conn_is_closed(c, e2e_timeout_ms()));
    e2e_resp_free(&resp);
    e2e_conn_close(c);
    int st = old_wait_exit(r, old);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rworld_stop(r);
}
END_TEST

/* An operator's own glibc tunables, even none at all (empty), are the data
 * plane's: it tunes malloc only when the variable is unset. */
START_TEST(operator_malloc_tunables_left_alone)
{
    static const char *const values[] = {"glibc.malloc.tcache_count=3", ""};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        ck_assert_int_eq(setenv("GLIBC_TUNABLES", values[i], 1), 0);
        struct e2e *t = e2e_start(1);
        ck_assert_ptr_nonnull(e2e_get(t, "/"));
        char tun[128];
        ck_assert(e2e_proc_env(e2e_lb_pid(t), "GLIBC_TUNABLES", tun, sizeof(tun)));
        ck_assert_str_eq(tun, values[i]);
        e2e_stop(t);
    }
    unsetenv("GLIBC_TUNABLES");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_restart");
    TCase *tc = e2e_tcase("restart");
    tcase_add_test(tc, load_across_handovers);
    tcase_add_test(tc, slow_request_finishes_on_the_old_process);
    tcase_add_test(tc, failed_handovers_leave_the_old_serving);
    tcase_add_test(tc, successor_refuses_an_undecodable_snapshot);
    tcase_add_test(tc, sigusr2_starts_a_successor);
    tcase_add_test(tc, runtime_state_carried_over);
    tcase_add_test(tc, fresh_connection_waits_through_the_drain);
    tcase_add_test(tc, operator_malloc_tunables_left_alone);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
