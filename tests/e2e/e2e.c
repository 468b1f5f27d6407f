/* tests/e2e/e2e.c: end-to-end harness, see e2e.h. */
#include "e2e.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LB_BIN      LB_BUILD_DIR "/lb-dataplane"
#define BACKEND_BIN LB_BUILD_DIR "/lb-backend"

struct e2e_conn {
    int fd;
    char *buf;  /* received, not yet consumed: buf[off..len) */
    size_t off; /* first unconsumed byte */
    size_t len; /* bytes in buf */
    size_t cap; /* allocated */
};

struct str_node {
    struct str_node *next;
    char s[];
};

struct e2e {
    char dir[64];                     /* temp dir */
    unsigned nb;                      /* backends started */
    pid_t bpid[E2E_MAX_BACKENDS];     /* -1 once stopped */
    unsigned bport[E2E_MAX_BACKENDS]; /* their ports */
    char bid[E2E_MAX_BACKENDS][16];   /* "b0".. */
    char burl[E2E_MAX_BACKENDS][40];  /* "http://127.0.0.1:P" */
    pid_t lbpid;                      /* -1 once stopped */
    int lb_status;                    /* waitpid status once reaped */
    bool lb_reaped;                   /* lb_status is valid */
    unsigned lbport, mport;           /* frontend, metrics */
    struct e2e_conn *ka;              /* e2e_get()'s connection */
    struct str_node *strings;         /* e2e_get() results */
    struct e2e *next_live;            /* registry for the atexit hook */
    Lb__V1__Snapshot snap;            /* the snapshot and its parts */
    Lb__V1__Frontend fe, *fes[1];
    Lb__V1__Backend be[E2E_MAX_BACKENDS], *bes[E2E_MAX_BACKENDS];
    Lb__V1__Timeouts timeouts;
    Lb__V1__Limits limits;
    Lb__V1__Logging logging;
    Lb__V1__Metrics metrics;
    Lb__V1__Balancing balancing;
    Lb__V1__Retries retries;
    Lb__V1__Ejection ejection;
    char *const *bargs; /* e2e_opts.backend_args */
    bool blog;          /* e2e_opts.backend_log */
};

static struct e2e *live_worlds;
static bool exit_hooked;
/* Set by e2e_run() in the runner process: every world's dir is made inside it
 * and it is removed after the run, also when a failed test's forked child
 * _exit()ed without its teardown. */
static char base_dir[48];

uint64_t e2e_timeout_ms(void)
{
    const char *v = getenv("LB_TEST_TIMEOUT_MS");
    if (v && *v) {
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (*end == '\0' && n > 0)
            return n;
    }
    return 10000;
}

uint64_t e2e_scaled_ms(uint64_t ms)
{
    uint64_t f = e2e_timeout_ms() / 10000;
    return ms * (f ? f : 1);
}

uint64_t e2e_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void e2e_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

void e2e_poll_pause(unsigned ms)
{
    e2e_sleep_ms(ms);
}

bool e2e_wait_until(bool (*cond)(void *arg), void *arg, uint64_t ms)
{
    uint64_t deadline = e2e_now_ms() + ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(5);
    }
}

unsigned e2e_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return 0;
    unsigned port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

pid_t e2e_spawn(char *const argv[], const char *log_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Child: die with the test process, even when it dies on a failed assert. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int in = open("/dev/null", O_RDONLY);
    int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in == -1 || out == -1)
        _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    close(in);
    close(out);
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv);
    _exit(127);
}

bool e2e_wait_exit(pid_t pid, uint64_t ms, int *status)
{
    uint64_t deadline = e2e_now_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (status)
                *status = st;
            return true;
        }
        if (r == -1 && errno != EINTR)
            return false;
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(5);
    }
}

int e2e_kill(pid_t pid)
{
    int st;
    if (pid <= 0)
        return -1;
    if (kill(pid, SIGTERM) == -1 && errno == ESRCH && !e2e_wait_exit(pid, 0, &st))
        return -1;
    if (e2e_wait_exit(pid, e2e_timeout_ms(), &st))
        return st;
    kill(pid, SIGKILL);
    if (e2e_wait_exit(pid, e2e_timeout_ms(), &st))
        return st;
    return -1;
}

static void world_unlink(struct e2e *t)
{
    struct e2e **pp = &live_worlds;
    while (*pp && *pp != t)
        pp = &(*pp)->next_live;
    if (*pp)
        *pp = t->next_live;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            remove_dir(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void print_log_tail(const struct e2e *t, const char *name)
{
    char path[256];
    e2e_path(t, name, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- tail of %s ----\n%s\n----\n", path, buf);
}

/* Stops everything; returns false when lb-dataplane did not exit 0. */
static bool world_release(struct e2e *t)
{
    bool ok = true;
    e2e_conn_close(t->ka);
    t->ka = NULL;
    if (t->lbpid > 0) {
        t->lb_status = e2e_kill(t->lbpid);
        t->lb_reaped = true;
        t->lbpid = -1;
    }
    if (t->lb_reaped && !(WIFEXITED(t->lb_status) && WEXITSTATUS(t->lb_status) == 0)) {
        ok = false;
        fprintf(stderr, "lb-dataplane ended with wait status %d (exit %d, signal %d)\n",
                t->lb_status, WIFEXITED(t->lb_status) ? WEXITSTATUS(t->lb_status) : -1,
                WIFSIGNALED(t->lb_status) ? WTERMSIG(t->lb_status) : 0);
        print_log_tail(t, "lb.log");
    }
    for (unsigned i = 0; i < t->nb; i++) {
        if (t->bpid[i] > 0)
            e2e_kill(t->bpid[i]);
        t->bpid[i] = -1;
    }
    const char *keep = getenv("LB_E2E_KEEP");
    if (!(keep && *keep == '1'))
        remove_dir(t->dir);
    else
        fprintf(stderr, "e2e: kept %s\n", t->dir);
    while (t->strings) {
        struct str_node *n = t->strings;
        t->strings = n->next;
        free(n);
    }
    world_unlink(t);
    free(t);
    return ok;
}

static void on_exit_stop_all(void)
{
    while (live_worlds)
        world_release(live_worlds);
}

void e2e_stop(struct e2e *t)
{
    if (!t)
        return;
    if (!world_release(t))
        ck_abort_msg("lb-dataplane did not exit 0 after SIGTERM (log tail on stderr)");
}

unsigned e2e_lb_port(const struct e2e *t)
{
    return t->lbport;
}

unsigned e2e_metrics_port(const struct e2e *t)
{
    return t->mport;
}

unsigned e2e_backend_port(const struct e2e *t, unsigned i)
{
    return i < t->nb ? t->bport[i] : 0;
}

pid_t e2e_lb_pid(const struct e2e *t)
{
    return t->lbpid;
}

bool e2e_proc_env(pid_t pid, const char *name, char *out, size_t outsz)
{
    char path[64], env[16384];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(env, 1, sizeof(env) - 1, f);
    fclose(f);
    env[n] = '\0';
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i += strlen(env + i) + 1) {
        if (strncmp(env + i, name, len) == 0 && env[i + len] == '=') {
            snprintf(out, outsz, "%s", env + i + len + 1);
            return true;
        }
    }
    return false;
}

bool e2e_proc_status(pid_t pid, const char *key, char *out, size_t outsz)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t len = strlen(key);
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, len) == 0 && line[len] == ':') {
            const char *v = line + len + 1;
            v += strspn(v, " \t");
            snprintf(out, outsz, "%.*s", (int)strcspn(v, "\n"), v);
            found = true;
        }
    }
    fclose(f);
    return found;
}

void e2e_assert_signals_by_fd(pid_t pid, const int *sigs, size_t n)
{
    char blk[32], cgt[32];
    ck_assert(e2e_proc_status(pid, "SigBlk", blk, sizeof(blk)));
    ck_assert(e2e_proc_status(pid, "SigCgt", cgt, sizeof(cgt)));
    unsigned long long blocked = strtoull(blk, NULL, 16), caught = strtoull(cgt, NULL, 16);
    for (size_t i = 0; i < n; i++) {
        unsigned long long bit = 1ULL << (sigs[i] - 1);
        ck_assert_msg((blocked & bit) && !(caught & bit), "pid %d, signal %d: SigBlk %s, SigCgt %s",
                      (int)pid, sigs[i], blk, cgt);
    }
}

void e2e_path(const struct e2e *t, const char *name, char *out, size_t outsz)
{
    int n = snprintf(out, outsz, "%s/%s", t->dir, name);
    ck_assert_msg(n > 0 && (size_t)n < outsz, "path %s/%s is too long", t->dir, name);
}

void e2e_kill_backend(struct e2e *t, unsigned i)
{
    if (i >= t->nb || t->bpid[i] <= 0)
        return;
    kill(t->bpid[i], SIGKILL);
    e2e_wait_exit(t->bpid[i], e2e_timeout_ms(), NULL);
    t->bpid[i] = -1;
}

bool e2e_lb_term(struct e2e *t, uint64_t ms, int *status)
{
    if (t->lbpid <= 0)
        return false;
    kill(t->lbpid, SIGTERM);
    return e2e_lb_wait_exit(t, ms, status);
}

bool e2e_lb_wait_exit(struct e2e *t, uint64_t ms, int *status)
{
    if (t->lbpid <= 0)
        return false;
    int st;
    if (!e2e_wait_exit(t->lbpid, ms, &st))
        return false;
    t->lbpid = -1;
    t->lb_status = st;
    t->lb_reaped = true;
    if (status)
        *status = st;
    return true;
}

/* Polls the log of a just-started backend for its listening line. */
static unsigned wait_backend_port(struct e2e *t, unsigned i)
{
    char path[256], buf[512];
    snprintf(buf, sizeof buf, "%s.log", t->bid[i]);
    e2e_path(t, buf, path, sizeof path);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < deadline) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            const char *p = strstr(buf, "\"port\":");
            if (p && strchr(p, '}'))
                return (unsigned)strtoul(p + 7, NULL, 10);
        }
        if (e2e_wait_exit(t->bpid[i], 0, NULL)) {
            t->bpid[i] = -1;
            return 0;
        }
        e2e_poll_pause(5);
    }
    return 0;
}

static bool port_accepts(unsigned port)
{
    struct e2e_conn *c = e2e_connect(port);
    e2e_conn_close(c);
    return c != NULL;
}

#define BACKEND_ARGS_MAX 24

/* Spawns lb-backend <i> on <port> ("0": any) with the world's extra
 * arguments, logging to b<i>.log; fails the test when fork fails. */
static pid_t backend_spawn(struct e2e *t, unsigned i, const char *port)
{
    char log[256], reqlog[256], name[40];
    char *argv[BACKEND_ARGS_MAX + 1];
    size_t n = 0;
    snprintf(name, sizeof name, "%s.log", t->bid[i]);
    e2e_path(t, name, log, sizeof log);
    argv[n++] = BACKEND_BIN;
    argv[n++] = "--port";
    argv[n++] = (char *)port;
    argv[n++] = "--name";
    argv[n++] = t->bid[i];
    if (t->blog) {
        snprintf(name, sizeof name, "%s.requests", t->bid[i]);
        e2e_path(t, name, reqlog, sizeof reqlog);
        argv[n++] = "--log";
        argv[n++] = reqlog;
    }
    for (size_t k = 0; t->bargs && t->bargs[k]; k++) {
        ck_assert_msg(n < BACKEND_ARGS_MAX, "too many backend arguments");
        argv[n++] = t->bargs[k];
    }
    argv[n] = NULL;
    pid_t pid = e2e_spawn(argv, log);
    ck_assert_msg(pid > 0, "fork failed");
    return pid;
}

pid_t e2e_backend_pid(const struct e2e *t, unsigned i)
{
    return i < t->nb ? t->bpid[i] : -1;
}

void e2e_restart_backend(struct e2e *t, unsigned i)
{
    ck_assert_msg(i < t->nb, "no backend %u", i);
    e2e_kill_backend(t, i);
    char log[256], old[256], name[40], port[16];
    snprintf(name, sizeof name, "%s.log", t->bid[i]);
    e2e_path(t, name, log, sizeof log);
    snprintf(name, sizeof name, "%s.log.old", t->bid[i]);
    e2e_path(t, name, old, sizeof old);
    rename(log, old); /* wait_backend_port() reads the new process's line */
    snprintf(port, sizeof port, "%u", t->bport[i]);
    t->bpid[i] = backend_spawn(t, i, port);
    ck_assert_msg(wait_backend_port(t, i) == t->bport[i], "backend %s did not start again on %u",
                  t->bid[i], t->bport[i]);
}

static void build_snapshot(struct e2e *t, const struct e2e_opts *o)
{
    Lb__V1__Snapshot snap = LB__V1__SNAPSHOT__INIT;
    Lb__V1__Frontend fe = LB__V1__FRONTEND__INIT;
    Lb__V1__Timeouts to = LB__V1__TIMEOUTS__INIT;
    Lb__V1__Limits li = LB__V1__LIMITS__INIT;
    Lb__V1__Logging lo = LB__V1__LOGGING__INIT;
    Lb__V1__Metrics me = LB__V1__METRICS__INIT;
    Lb__V1__Balancing ba = LB__V1__BALANCING__INIT;
    Lb__V1__Retries re = LB__V1__RETRIES__INIT;
    Lb__V1__Ejection ej = LB__V1__EJECTION__INIT;
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    t->snap = snap;
    t->fe = fe;
    t->timeouts = to;
    t->limits = li;
    t->logging = lo;
    t->metrics = me;
    t->balancing = ba;
    t->retries = re;
    t->ejection = ej;
    t->snap.config_version = 1;
    t->snap.generation = 1;
    t->snap.created_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    t->fe.name = "web";
    t->fe.bind_address = "127.0.0.1";
    t->fe.port = t->lbport;
    t->fes[0] = &t->fe;
    t->snap.n_frontends = 1;
    t->snap.frontends = t->fes;
    for (unsigned i = 0; i < t->nb; i++) {
        Lb__V1__Backend be = LB__V1__BACKEND__INIT;
        t->be[i] = be;
        t->be[i].id = t->bid[i];
        t->be[i].host = "127.0.0.1";
        t->be[i].port = t->bport[i];
        t->be[i].weight = o->weights ? o->weights[i] : 1;
        t->be[i].url = t->burl[i];
        t->bes[i] = &t->be[i];
    }
    t->snap.n_backends = t->nb;
    t->snap.backends = t->bes;
    t->timeouts.drain_ms = 5000; /* the default 30 s would outlast the test's waits */
    t->snap.timeouts = &t->timeouts;
    t->snap.limits = &t->limits;
    t->snap.logging = &t->logging;
    t->metrics.enabled = 1;
    t->metrics.bind_address = "127.0.0.1";
    t->metrics.port = t->mport;
    t->snap.metrics = &t->metrics;
    t->balancing.algorithm = o->algorithm;
    t->snap.balancing = &t->balancing;
    t->snap.retries = &t->retries;
    t->snap.ejection = &t->ejection;
    if (o->tweak)
        o->tweak(&t->snap, o->tweak_arg);
}

static void write_snapshot(struct e2e *t, const char *path)
{
    size_t n = lb__v1__snapshot__get_packed_size(&t->snap);
    uint8_t *buf = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(buf);
    lb__v1__snapshot__pack(&t->snap, buf);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
    free(buf);
}

struct e2e *e2e_start_opts(const struct e2e_opts *o)
{
    ck_assert_msg(o->backends >= 1 && o->backends <= E2E_MAX_BACKENDS, "bad backend count");
    ck_assert_msg(access(BACKEND_BIN, X_OK) == 0, "%s is not built", BACKEND_BIN);
    ck_assert_msg(access(LB_BIN, X_OK) == 0, "%s is not built", LB_BIN);
    struct e2e *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    t->lbpid = -1;
    if (base_dir[0])
        snprintf(t->dir, sizeof t->dir, "%s/world-XXXXXX", base_dir);
    else
        snprintf(t->dir, sizeof t->dir, "/tmp/lb-e2e-XXXXXX");
    ck_assert_msg(mkdtemp(t->dir) != NULL, "mkdtemp failed");
    if (!exit_hooked) {
        atexit(on_exit_stop_all);
        exit_hooked = true;
    }
    t->next_live = live_worlds;
    live_worlds = t;

    char path[256], log[256];
    t->bargs = o->backend_args;
    t->blog = o->backend_log;
    for (unsigned i = 0; i < o->backends; i++) {
        snprintf(t->bid[i], sizeof t->bid[i], "b%u", i);
        t->bpid[i] = backend_spawn(t, i, "0");
        t->nb = i + 1;
    }
    for (unsigned i = 0; i < t->nb; i++) {
        t->bport[i] = wait_backend_port(t, i);
        ck_assert_msg(t->bport[i] != 0, "backend %s did not start", t->bid[i]);
        snprintf(t->burl[i], sizeof t->burl[i], "http://127.0.0.1:%u", t->bport[i]);
    }

    t->lbport = e2e_free_port();
    t->mport = e2e_free_port();
    ck_assert_msg(t->lbport && t->mport && t->lbport != t->mport, "no free port");
    build_snapshot(t, o);
    e2e_path(t, "snapshot.pb", path, sizeof path);
    write_snapshot(t, path);

    char workers[16];
    snprintf(workers, sizeof workers, "%u", o->workers ? o->workers : 2);
    e2e_path(t, "lb.log", log, sizeof log);
    char *argv[24] = {LB_BIN, "--snapshot", path, "--workers", workers};
    size_t n = 5;
    for (size_t k = 0; o->dp_args != NULL && o->dp_args[k] != NULL; k++) {
        ck_assert_msg(n < sizeof argv / sizeof argv[0] - 1, "too many dp_args");
        argv[n++] = o->dp_args[k];
    }
    t->lbpid = e2e_spawn(argv, log);
    ck_assert_msg(t->lbpid > 0, "fork failed");
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    bool up = false;
    while (!up && e2e_now_ms() < deadline) {
        int st;
        if (e2e_wait_exit(t->lbpid, 0, &st)) {
            t->lbpid = -1;
            print_log_tail(t, "lb.log");
            ck_abort_msg("lb-dataplane exited at start-up (status %d)", st);
        }
        up = port_accepts(t->lbport);
        if (!up)
            e2e_poll_pause(10);
    }
    if (!up)
        print_log_tail(t, "lb.log");
    ck_assert_msg(up, "lb-dataplane frontend on port %u did not come up", t->lbport);
    return t;
}

struct e2e *e2e_start(unsigned backends)
{
    struct e2e_opts o = {.backends = backends, .algorithm = LB__V1__ALGORITHM__ROUND_ROBIN};
    return e2e_start_opts(&o);
}

/* ---- clients ---------------------------------------------------------------- */

struct e2e_conn *e2e_connect(unsigned port)
{
    return e2e_connect_host("127.0.0.1", port);
}

struct e2e_conn *e2e_connect_host(const char *ip, unsigned port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        if (errno != EINPROGRESS) {
            close(fd);
            return NULL;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t elen = sizeof err;
        if (poll(&p, 1, (int)e2e_timeout_ms()) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 || err != 0) {
            close(fd);
            return NULL;
        }
    }
    struct e2e_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    return c;
}

void e2e_conn_close(struct e2e_conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = e2e_now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r > 0)
            return 0;
        if (r == -1 && errno != EINTR)
            return -1;
    }
}

int e2e_conn_send(struct e2e_conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(c->fd, POLLOUT, deadline) == -1)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* Reads more bytes into c->buf. Returns >0 bytes read, 0 on EOF or reset,
 * -1 on timeout or error. */
static ssize_t conn_fill(struct e2e_conn *c, uint64_t deadline)
{
    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        char *nb = realloc(c->buf, cap + 1);
        if (!nb)
            return -1;
        c->buf = nb;
        c->cap = cap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            return n;
        }
        if (n == 0 || (n == -1 && errno == ECONNRESET))
            return 0;
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(c->fd, POLLIN, deadline) == -1)
                return -1;
            continue;
        }
        return -1;
    }
}

/* Ensures <n> unconsumed bytes are buffered. */
static bool conn_need(struct e2e_conn *c, size_t n, uint64_t deadline)
{
    while (c->len - c->off < n)
        if (conn_fill(c, deadline) <= 0)
            return false;
    return true;
}

/* Finds CRLF from c->off; returns the line length (without CRLF) or -1. */
static long conn_line(struct e2e_conn *c, uint64_t deadline)
{
    size_t scanned = 0;
    for (;;) {
        char *start = c->buf ? c->buf + c->off : NULL;
        size_t avail = c->len - c->off;
        char *e = avail >= 2 ? memmem(start + scanned, avail - scanned, "\r\n", 2) : NULL;
        if (e)
            return e - start;
        scanned = avail > 0 ? avail - 1 : 0;
        if (conn_fill(c, deadline) <= 0)
            return -1;
    }
}

static bool header_value(const char *head, size_t head_len, const char *name, char *out,
                         size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', head_len);
    const char *end = head + head_len;
    while (p && p + 1 < end) {
        const char *l = p + 1;
        const char *le = memchr(l, '\n', (size_t)(end - l));
        if (!le)
            le = end;
        if ((size_t)(le - l) > nl && strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            const char *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = le < end ? le : NULL;
    }
    return false;
}

bool e2e_resp_header(const struct e2e_resp *r, const char *name, char *out, size_t outsz)
{
    return header_value(r->head, r->head_len, name, out, outsz);
}

void e2e_resp_free(struct e2e_resp *r)
{
    free(r->head);
    free(r->body);
    r->head = r->body = NULL;
}

static bool body_append(struct e2e_resp *r, size_t *cap, const char *p, size_t n)
{
    if (r->body_len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < r->body_len + n + 1)
            nc *= 2;
        char *nb = realloc(r->body, nc);
        if (!nb)
            return false;
        r->body = nb;
        *cap = nc;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return true;
}

static int read_chunked(struct e2e_conn *c, struct e2e_resp *r, size_t *cap, uint64_t deadline)
{
    for (;;) {
        long ll = conn_line(c, deadline);
        if (ll < 0)
            return -1;
        char *end;
        unsigned long long size = strtoull(c->buf + c->off, &end, 16);
        if (end == c->buf + c->off)
            return -1;
        c->off += (size_t)ll + 2;
        if (size == 0)
            break;
        if (!conn_need(c, (size_t)size + 2, deadline))
            return -1;
        if (!body_append(r, cap, c->buf + c->off, (size_t)size))
            return -1;
        if (memcmp(c->buf + c->off + size, "\r\n", 2) != 0)
            return -1;
        c->off += (size_t)size + 2;
    }
    for (;;) { /* trailers up to the empty line */
        long ll = conn_line(c, deadline);
        if (ll < 0)
            return -1;
        c->off += (size_t)ll + 2;
        if (ll == 0)
            return 0;
    }
}

int e2e_conn_read(struct e2e_conn *c, struct e2e_resp *r, bool head_req)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    size_t cap = 0;
    memset(r, 0, sizeof *r);
    char *e = NULL;
    size_t scanned = 0;
    for (;;) {
        size_t avail = c->len - c->off;
        if (avail >= 4)
            e = memmem(c->buf + c->off + scanned, avail - scanned, "\r\n\r\n", 4);
        if (e)
            break;
        scanned = avail > 3 ? avail - 3 : 0;
        if (conn_fill(c, deadline) <= 0)
            return -1;
    }
    size_t hlen = (size_t)(e - (c->buf + c->off)) + 4;
    r->head = malloc(hlen + 1);
    if (!r->head)
        return -1;
    memcpy(r->head, c->buf + c->off, hlen);
    r->head[hlen] = '\0';
    r->head_len = hlen;
    c->off += hlen;
    if (hlen < 12 || strncmp(r->head, "HTTP/1.", 7) != 0) {
        e2e_resp_free(r);
        return -1;
    }
    r->status = atoi(r->head + 9);
    char v[64];
    bool chunked =
        header_value(r->head, hlen, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked");
    bool have_cl = header_value(r->head, hlen, "Content-Length", v, sizeof v);
    unsigned long long cl = have_cl ? strtoull(v, NULL, 10) : 0;
    if (header_value(r->head, hlen, "Connection", v, sizeof v) && strcasestr(v, "close"))
        r->closed = true;
    body_append(r, &cap, "", 0);
    int rc = 0;
    if (head_req || r->status < 200 || r->status == 204 || r->status == 304) {
        rc = 0;
    } else if (chunked) {
        rc = read_chunked(c, r, &cap, deadline);
    } else if (have_cl) {
        if (!conn_need(c, (size_t)cl, deadline) ||
            !body_append(r, &cap, c->buf + c->off, (size_t)cl))
            rc = -1;
        else
            c->off += (size_t)cl;
    } else {
        for (;;) {
            ssize_t n = conn_fill(c, deadline);
            if (n == 0)
                break;
            if (n < 0) {
                rc = -1;
                break;
            }
        }
        if (rc == 0 && !body_append(r, &cap, c->buf + c->off, c->len - c->off))
            rc = -1;
        c->off = c->len;
        r->closed = true;
    }
    if (rc != 0)
        e2e_resp_free(r);
    return rc;
}

char *e2e_conn_read_all(struct e2e_conn *c, uint64_t ms, size_t *len, bool *closed)
{
    uint64_t deadline = e2e_now_ms() + ms;
    bool eof = false;
    for (;;) {
        ssize_t n = conn_fill(c, deadline);
        if (n == 0)
            eof = true;
        if (n <= 0)
            break;
    }
    size_t n = c->len - c->off;
    char *out = malloc(n + 1);
    if (out) {
        if (n)
            memcpy(out, c->buf + c->off, n);
        out[n] = '\0';
    }
    c->off = c->len;
    if (len)
        *len = n;
    if (closed)
        *closed = eof;
    return out;
}

bool e2e_conn_is_closed(struct e2e_conn *c, uint64_t ms)
{
    if (c->len > c->off)
        return false;
    ssize_t n = conn_fill(c, e2e_now_ms() + ms);
    return n == 0;
}

static char *world_keep(struct e2e *t, const char *s, size_t n)
{
    struct str_node *node = malloc(sizeof *node + n + 1);
    if (!node)
        return NULL;
    memcpy(node->s, s, n);
    node->s[n] = '\0';
    node->next = t->strings;
    t->strings = node;
    return node->s;
}

const char *e2e_get(struct e2e *t, const char *path)
{
    char req[1024];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", path, t->lbport);
    if (n <= 0 || (size_t)n >= sizeof req)
        return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = false;
        if (!t->ka) {
            t->ka = e2e_connect(t->lbport);
            fresh = true;
        }
        if (!t->ka)
            return NULL;
        struct e2e_resp r;
        if (e2e_conn_send(t->ka, req, (size_t)n) == 0 && e2e_conn_read(t->ka, &r, false) == 0) {
            const char *out = NULL;
            if (r.status >= 200 && r.status < 300)
                out = world_keep(t, r.body, r.body_len);
            if (r.closed) {
                e2e_conn_close(t->ka);
                t->ka = NULL;
            }
            e2e_resp_free(&r);
            return out;
        }
        e2e_conn_close(t->ka);
        t->ka = NULL;
        if (fresh)
            return NULL; /* a reused connection may have been closed idle: retry once */
    }
    return NULL;
}

int e2e_request(unsigned port, const char *method, const char *path, const char *extra,
                const void *body, size_t body_len, struct e2e_resp *r)
{
    return e2e_request_host("127.0.0.1", port, method, path, extra, body, body_len, r);
}

int e2e_request_host(const char *ip, unsigned port, const char *method, const char *path,
                     const char *extra, const void *body, size_t body_len, struct e2e_resp *r)
{
    char head[8192];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s:%u\r\n%s", method, path, ip,
                     port, extra ? extra : "");
    if (n <= 0 || (size_t)n >= sizeof head - 64)
        return -1;
    if (body_len > 0)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    struct e2e_conn *c = e2e_connect_host(ip, port);
    if (!c)
        return -1;
    int rc = e2e_conn_send(c, head, (size_t)n);
    if (rc == 0 && body_len > 0)
        rc = e2e_conn_send(c, body, body_len);
    if (rc == 0)
        rc = e2e_conn_read(c, r, strcmp(method, "HEAD") == 0);
    e2e_conn_close(c);
    return rc;
}

char *e2e_raw(unsigned port, const void *req, size_t req_len, uint64_t ms, size_t *len,
              bool *closed)
{
    struct e2e_conn *c = e2e_connect(port);
    if (!c)
        return NULL;
    char *out = NULL;
    /* The server may answer and close before all of <req> is sent: read anyway. */
    e2e_conn_send(c, req, req_len);
    out = e2e_conn_read_all(c, ms, len, closed);
    e2e_conn_close(c);
    return out;
}

/* ---- backends and metrics ---------------------------------------------------- */

/* The field <key> of the /stats answer of the lb-backend on <port>, or -1. */
static long stat_at(unsigned port, const char *key)
{
    struct e2e_resp r;
    if (e2e_request(port, "GET", "/stats", "Connection: close\r\n", NULL, 0, &r) != 0)
        return -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(r.body, pat);
    long v = p ? strtol(p + strlen(pat), NULL, 10) : -1;
    e2e_resp_free(&r);
    return v;
}

/* The /metrics text served on <port> (caller frees), or NULL. */
static char *scrape_at(unsigned port)
{
    return e2e_scrape_host("127.0.0.1", port);
}

char *e2e_scrape_host(const char *ip, unsigned port)
{
    struct e2e_resp r;
    if (e2e_request_host(ip, port, "GET", "/metrics", "Connection: close\r\n", NULL, 0, &r) != 0)
        return NULL;
    char *out = NULL;
    if (r.status == 200) {
        out = r.body;
        r.body = NULL;
    }
    e2e_resp_free(&r);
    return out;
}

long e2e_backend_stat(struct e2e *t, unsigned i, const char *key)
{
    return i < t->nb ? stat_at(t->bport[i], key) : -1;
}

char *e2e_scrape(struct e2e *t)
{
    return scrape_at(t->mport);
}

char *e2e_scrape_port(unsigned port)
{
    return scrape_at(port);
}

double e2e_wait_metric(struct e2e *t, const char *name, const char *labels, double min)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        char *text = e2e_scrape(t);
        double v = text ? e2e_metric(text, name, labels) : NAN;
        free(text);
        if (v >= min || e2e_now_ms() >= deadline)
            return v;
        e2e_poll_pause(10);
    }
}

unsigned e2e_log_count(const struct e2e *t, const char *name, const char *needle)
{
    char path[512];
    e2e_path(t, name, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

bool e2e_wait_log(const struct e2e *t, const char *name, const char *needle, unsigned n)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        if (e2e_log_count(t, name, needle) >= n)
            return true;
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(10);
    }
}

static bool labels_match(const char *lb, size_t lb_len, const char *want)
{
    if (!want || !*want)
        return true;
    char pair[256];
    const char *p = want;
    while (*p) {
        const char *comma = strstr(p, "\",");
        size_t n = comma ? (size_t)(comma - p) + 1 : strlen(p);
        if (n >= sizeof pair)
            return false;
        memcpy(pair, p, n);
        pair[n] = '\0';
        if (!memmem(lb, lb_len, pair, n))
            return false;
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

double e2e_metric(const char *text, const char *name, const char *labels)
{
    size_t nl = strlen(name);
    double sum = 0;
    bool found = false;
    for (const char *l = text; l && *l;) {
        const char *le = strchr(l, '\n');
        size_t ll = le ? (size_t)(le - l) : strlen(l);
        if (ll > nl && l[0] != '#' && strncmp(l, name, nl) == 0 && (l[nl] == '{' || l[nl] == ' ')) {
            const char *v = l + nl;
            const char *lbs = "";
            size_t lbs_len = 0;
            if (*v == '{') {
                const char *close = memchr(v, '}', (size_t)(l + ll - v));
                if (!close)
                    goto next;
                lbs = v;
                lbs_len = (size_t)(close - v);
                v = close + 1;
            }
            if (labels_match(lbs, lbs_len, labels)) {
                sum += strtod(v, NULL);
                found = true;
            }
        }
    next:
        l = le ? le + 1 : NULL;
    }
    return found ? sum : NAN;
}

unsigned char e2e_pattern_byte(uint64_t i)
{
    return (unsigned char)(i % 251);
}

void e2e_fnv1a_hex(const void *buf, size_t len, char out[17])
{
    const unsigned char *p = buf;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

TCase *e2e_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, (double)e2e_timeout_ms() / 1000.0 * 6 + 30);
    return tc;
}

int e2e_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    snprintf(base_dir, sizeof base_dir, "/tmp/lb-e2e-XXXXXX");
    if (!mkdtemp(base_dir))
        base_dir[0] = '\0';
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    const char *keep = getenv("LB_E2E_KEEP");
    if (base_dir[0] && !(keep && *keep == '1'))
        remove_dir(base_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- commands ------------------------------------------------------------------ */

#define CMD_OUT_MAX (256 * 1024)
#define CMD_ERR_MAX (64 * 1024)

struct cmd_pipe {
    int fd;     /* read end, -1 once closed */
    char *buf;  /* NUL-terminated */
    size_t len; /* bytes in buf */
    size_t max; /* kept at most; the rest is read and dropped */
};

static void cmd_pipe_read(struct cmd_pipe *p)
{
    char tmp[4096];
    ssize_t n = read(p->fd, tmp, sizeof tmp);
    if (n <= 0) {
        if (n == -1 && errno == EINTR)
            return;
        close(p->fd);
        p->fd = -1;
        return;
    }
    size_t keep = (size_t)n;
    if (keep > p->max - p->len)
        keep = p->max - p->len;
    memcpy(p->buf + p->len, tmp, keep);
    p->len += keep;
    p->buf[p->len] = '\0';
}

int e2e_cmd_run(char *const argv[], const char *const *env, struct e2e_cmd *r)
{
    int po[2], pe[2];
    memset(r, 0, sizeof *r);
    r->status = -1;
    ck_assert_int_eq(pipe2(po, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(pe, O_CLOEXEC), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY);
        if (in == -1)
            _exit(127);
        dup2(in, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    struct cmd_pipe p[2] = {
        {.fd = po[0], .buf = calloc(1, CMD_OUT_MAX + 1), .max = CMD_OUT_MAX},
        {.fd = pe[0], .buf = calloc(1, CMD_ERR_MAX + 1), .max = CMD_ERR_MAX},
    };
    ck_assert(p[0].buf && p[1].buf);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while ((p[0].fd >= 0 || p[1].fd >= 0) && e2e_now_ms() < deadline) {
        struct pollfd pf[2] = {{.fd = p[0].fd, .events = POLLIN},
                               {.fd = p[1].fd, .events = POLLIN}};
        if (poll(pf, 2, 50) <= 0)
            continue;
        for (int i = 0; i < 2; i++)
            if (pf[i].revents)
                cmd_pipe_read(&p[i]);
    }
    for (int i = 0; i < 2; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    r->out = p[0].buf;
    r->err = p[1].buf;
    int st;
    if (!e2e_wait_exit(pid, e2e_timeout_ms(), &st)) {
        kill(pid, SIGKILL);
        e2e_wait_exit(pid, e2e_timeout_ms(), NULL);
        ck_abort_msg("%s did not exit in time", argv[0]);
    }
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r->status;
}

void e2e_cmd_free(struct e2e_cmd *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* Finds "<key>": in <json> and returns the first byte of its value. */
static const char *json_value(const char *json, const char *key)
{
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    for (const char *p = strstr(json, pat); p; p = strstr(p + 1, pat)) {
        const char *v = p + strlen(pat);
        while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
            v++;
        if (*v != ':')
            continue;
        v++;
        while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
            v++;
        return v;
    }
    return NULL;
}

bool e2e_json_long(const char *json, const char *key, long *out)
{
    const char *v = json_value(json, key);
    if (!v || (*v != '-' && (*v < '0' || *v > '9')))
        return false;
    *out = strtol(v, NULL, 10);
    return true;
}

/* Copies the JSON string value of <key> (escapes kept as \x pairs but for \"
 * and \\) into <out>; "" when absent or null. */
static void json_string(const char *json, const char *key, char *out, size_t outsz)
{
    const char *v = json_value(json, key);
    size_t n = 0;
    if (v && *v == '"') {
        for (v++; *v && *v != '"' && n + 1 < outsz; v++) {
            if (*v == '\\' && (v[1] == '"' || v[1] == '\\'))
                v++;
            out[n++] = *v;
        }
    }
    out[n] = '\0';
}

const char *e2e_json_str(const char *json, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    if (json != NULL)
        json_string(json, key, out, size);
    return out;
}

/* ---- control-plane worlds --------------------------------------------------------- */

#define CP_BIN    LB_BUILD_DIR "/lb-controlplane"
#define LBCTL_BIN LB_BUILD_DIR "/lbctl"

struct e2e_cp {
    char dir[64];                                  /* temp dir */
    char sock[128];                                /* admin socket */
    char control[128];                             /* ipc://<dir>/run */
    unsigned nb;                                   /* backends started */
    pid_t bpid[E2E_MAX_BACKENDS];                  /* -1 once stopped */
    unsigned bport[E2E_MAX_BACKENDS];              /* their ports */
    char burl[E2E_MAX_BACKENDS][40];               /* "http://127.0.0.1:P" */
    pid_t cppid;                                   /* -1 when not running */
    pid_t dppid[E2E_MAX_DATAPLANES];               /* -1 when not running */
    unsigned workers;                              /* --workers */
    char *const *cp_args;                          /* more control-plane arguments, or NULL */
    char *const *dp_args;                          /* more data-plane arguments, or NULL */
    char *const *dp_args_each[E2E_MAX_DATAPLANES]; /* data plane <i>'s own, or NULL */
    unsigned feport, mport, aport;                 /* frontend, metrics, admin TCP (0: none) */
    bool admin_tls;                                /* the admin TCP port speaks HTTPS (certs/) */
    bool failed;                                   /* a daemon did not exit 0 on SIGTERM */
    struct e2e_cp *next_live;                      /* registry for the atexit hook */
};

static struct e2e_cp *live_cps;
static bool cp_exit_hooked;

void e2e_cp_path(const struct e2e_cp *w, const char *name, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s/%s", w->dir, name);
}

pid_t e2e_cp_backend_spawn(struct e2e_cp *w, const char *name, unsigned port, const char *log,
                           unsigned *bound)
{
    char path[256], portstr[16];
    e2e_cp_path(w, log, path, sizeof path);
    snprintf(portstr, sizeof portstr, "%u", port);
    char *argv[] = {BACKEND_BIN, "--port", portstr, "--name", (char *)name, NULL};
    pid_t pid = e2e_spawn(argv, path);
    ck_assert_int_gt(pid, 0);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < deadline) {
        FILE *f = fopen(path, "r");
        char line[256] = "";
        unsigned p = 0;
        if (f != NULL) {
            while (fgets(line, sizeof line, f) != NULL)
                if (sscanf(line, "{\"event\":\"listening\",\"port\":%u}", &p) == 1)
                    break;
            fclose(f);
        }
        if (p != 0) {
            *bound = p;
            return pid;
        }
        ck_assert_msg(!e2e_wait_exit(pid, 0, NULL), "lb-backend %s exited at start", name);
        e2e_poll_pause(10);
    }
    ck_abort_msg("lb-backend %s did not start", name);
    return -1;
}

/* SIGTERM, reap; records a non-zero exit. */
static void cp_term(struct e2e_cp *w, pid_t *pid, const char *log)
{
    if (*pid <= 0)
        return;
    int st = e2e_kill(*pid);
    *pid = -1;
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        w->failed = true;
        char path[256];
        snprintf(path, sizeof path, "%s/%s", w->dir, log);
        fprintf(stderr, "%s ended with wait status %d\n", log, st);
        FILE *f = fopen(path, "r");
        if (f) {
            char buf[4096];
            fseek(f, 0, SEEK_END);
            long size = ftell(f);
            fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = '\0';
            fclose(f);
            fprintf(stderr, "---- tail of %s ----\n%s\n----\n", path, buf);
        }
    }
}

static bool cp_release(struct e2e_cp *w)
{
    char log[32];
    for (unsigned i = 0; i < E2E_MAX_DATAPLANES; i++) {
        snprintf(log, sizeof log, "dp%u.log", i);
        cp_term(w, &w->dppid[i], log);
    }
    cp_term(w, &w->cppid, "cp.log");
    for (unsigned i = 0; i < w->nb; i++) {
        if (w->bpid[i] > 0)
            e2e_kill(w->bpid[i]);
        w->bpid[i] = -1;
    }
    bool ok = !w->failed;
    const char *keep = getenv("LB_E2E_KEEP");
    if (!(keep && *keep == '1'))
        remove_dir(w->dir);
    else
        fprintf(stderr, "e2e: kept %s\n", w->dir);
    struct e2e_cp **pp = &live_cps;
    while (*pp && *pp != w)
        pp = &(*pp)->next_live;
    if (*pp)
        *pp = w->next_live;
    free(w);
    return ok;
}

static void on_exit_stop_cps(void)
{
    while (live_cps)
        cp_release(live_cps);
}

void e2e_cp_stop(struct e2e_cp *w)
{
    if (!w)
        return;
    if (!cp_release(w))
        ck_abort_msg("a daemon did not exit 0 after SIGTERM (log tail on stderr)");
}

/* Polls <log> for the {"event":"listening","port":P} line of a backend. */
static unsigned cp_backend_port(pid_t pid, const char *log)
{
    char buf[512];
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (e2e_now_ms() < deadline) {
        FILE *f = fopen(log, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            const char *p = strstr(buf, "\"port\":");
            if (p && strchr(p, '}'))
                return (unsigned)strtoul(p + 7, NULL, 10);
        }
        if (e2e_wait_exit(pid, 0, NULL))
            return 0;
        e2e_poll_pause(5);
    }
    return 0;
}

static void cp_write_config(struct e2e_cp *w, const struct e2e_cp_opts *o)
{
    char path[256];
    e2e_cp_path(w, "config.yaml", path, sizeof path);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fprintf(f, "frontends:\n  - name: \"web\"\n    address: \"%s\"\n    port: %u\n",
            o->frontend_address ? o->frontend_address : "127.0.0.1", w->feport);
    fprintf(f, "backends:\n");
    unsigned n = o->configured ? o->configured : o->backends;
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "  - id: \"b%u\"\n    url: \"%s\"\n    weight: %u\n", i, w->burl[i],
                o->weights ? o->weights[i] : 1);
    /* Slow start (default 30 s) would skew the shares the tests count right
     * after a backend is added. */
    fprintf(f, "balancing:\n  algorithm: \"%s\"\n  slowStart: \"0s\"\n",
            o->algorithm ? o->algorithm : "weighted_round_robin");
    /* The default 30 s drain would outlast the test's waits. */
    fprintf(f, "timeouts:\n  drain: \"5s\"\n");
    fprintf(f, "logging:\n  level: \"info\"\n  accessLog: false\n");
    if (o->no_metrics)
        fprintf(f, "metrics:\n  enabled: false\n");
    else
        fprintf(f, "metrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: %u\n", w->mport);
    ck_assert_int_eq(fclose(f), 0);
}

/* make-certs.sh into <dir>/certs, plus viewer.pem/.key (CN viewer1, DNS
 * viewer1.example.org) of the same CA. */
static void cp_make_certs(struct e2e_cp *w)
{
    char certs[256], cmd[1024];
    e2e_cp_path(w, "certs", certs, sizeof certs);
    ck_assert_msg(mkdir(certs, 0700) == 0, "mkdir %s failed", certs);
    snprintf(cmd, sizeof cmd,
             "sh %s/tests/unit/dataplane/tls/make-certs.sh %s && cd %s && "
             "openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
             "-keyout viewer.key -out viewer.csr -subj /CN=viewer1 >>log.txt 2>&1 && "
             "printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
             "subjectAltName=DNS:viewer1.example.org\n' >viewer.ext && "
             "openssl x509 -req -in viewer.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-days 30 -extfile viewer.ext -out viewer.pem >>log.txt 2>&1",
             LB_SOURCE_DIR, certs, certs);
    ck_assert_msg(system(cmd) == 0, "making certificates failed (see %s/log.txt)", certs);
}

static void cp_write_tokens(struct e2e_cp *w)
{
    static const char *const files[][2] = {
        {"tokens", "# name token access\nadmin rw-7f3a9c1e5b rw\nviewer ro-2d8e4b6a0c ro\n"
                   "cert:client1.example.org - rw\ncert:viewer1.example.org - ro\n"},
        {"rw.token", "rw-7f3a9c1e5b\n"},
        {"ro.token", "ro-2d8e4b6a0c\n"},
    };
    char path[256];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        e2e_cp_path(w, files[i][0], path, sizeof path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_msg(fd != -1, "cannot write %s", path);
        size_t len = strlen(files[i][1]);
        ck_assert_int_eq(write(fd, files[i][1], len), (ssize_t)len);
        close(fd);
    }
}

static bool unix_accepts(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path)
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

void e2e_cp_controlplane_start(struct e2e_cp *w)
{
    ck_assert_msg(w->cppid <= 0, "the control plane is already running");
    char db[256], config[256], run[256], log[256], tokens[256], listen[32];
    char cert[256], key[256], ca[256];
    e2e_cp_path(w, "lb.db", db, sizeof db);
    e2e_cp_path(w, "config.yaml", config, sizeof config);
    e2e_cp_path(w, "run", run, sizeof run);
    e2e_cp_path(w, "cp.log", log, sizeof log);
    e2e_cp_path(w, "tokens", tokens, sizeof tokens);
    snprintf(listen, sizeof listen, "127.0.0.1:%u", w->aport);
    char *argv[32] = {CP_BIN, "--db", db, "--bootstrap", config, "--runtime-dir", run};
    size_t n = 7;
    if (w->aport) {
        argv[n++] = "--admin-listen";
        argv[n++] = listen;
        argv[n++] = "--admin-tokens";
        argv[n++] = tokens;
        if (w->admin_tls) {
            e2e_cp_path(w, "certs/srv-ip.pem", cert, sizeof cert);
            e2e_cp_path(w, "certs/srv-ip.key", key, sizeof key);
            e2e_cp_path(w, "certs/ca.pem", ca, sizeof ca);
            argv[n++] = "--admin-cert";
            argv[n++] = cert;
            argv[n++] = "--admin-key";
            argv[n++] = key;
            argv[n++] = "--admin-client-ca";
            argv[n++] = ca;
        } else {
            argv[n++] = "--admin-insecure-http";
        }
    }
    if (strncmp(w->control, "ipc://", 6) != 0) {
        argv[n++] = "--control";
        argv[n++] = w->control;
    }
    for (size_t i = 0; w->cp_args != NULL && w->cp_args[i] != NULL; i++) {
        ck_assert_msg(n < sizeof argv / sizeof argv[0] - 1, "too many cp_args");
        argv[n++] = w->cp_args[i];
    }
    w->cppid = e2e_spawn(argv, log);
    ck_assert_msg(w->cppid > 0, "fork failed");
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        int st;
        if (e2e_wait_exit(w->cppid, 0, &st)) {
            w->cppid = -1;
            ck_abort_msg("lb-controlplane exited at start-up (status %d), see %s", st, log);
        }
        /* A stale socket of a killed control plane refuses connections. */
        if (unix_accepts(w->sock) && (!w->aport || port_accepts(w->aport)))
            return;
        ck_assert_msg(e2e_now_ms() < deadline, "lb-controlplane did not come up, see %s", log);
        e2e_poll_pause(10);
    }
}

int e2e_cp_controlplane_kill(struct e2e_cp *w, int sig)
{
    if (w->cppid <= 0)
        return -1;
    kill(w->cppid, sig);
    int st = -1;
    if (!e2e_wait_exit(w->cppid, e2e_timeout_ms(), &st)) {
        kill(w->cppid, SIGKILL);
        e2e_wait_exit(w->cppid, e2e_timeout_ms(), &st);
    }
    w->cppid = -1;
    return st;
}

void e2e_cp_dataplane_start(struct e2e_cp *w, unsigned i)
{
    ck_assert_msg(i < E2E_MAX_DATAPLANES && w->dppid[i] <= 0, "data plane %u is running", i);
    char state[256], log[256], name[32], node[16], workers[16];
    snprintf(name, sizeof name, "dp%u", i);
    e2e_cp_path(w, name, state, sizeof state);
    /* The data plane writes its cache into the dir but does not create it. */
    ck_assert_msg(mkdir(state, 0700) == 0 || errno == EEXIST, "mkdir %s failed", state);
    snprintf(name, sizeof name, "dp%u.log", i);
    e2e_cp_path(w, name, log, sizeof log);
    snprintf(node, sizeof node, "dp%u", i);
    snprintf(workers, sizeof workers, "%u", w->workers);
    char *argv[24] = {LB_BIN,      "--control", w->control,  "--state-dir", state,
                      "--node-id", node,        "--workers", workers};
    size_t n = 9;
    for (size_t k = 0; w->dp_args != NULL && w->dp_args[k] != NULL; k++) {
        ck_assert_msg(n < sizeof argv / sizeof argv[0] - 1, "too many dp_args");
        argv[n++] = w->dp_args[k];
    }
    for (size_t k = 0; w->dp_args_each[i] != NULL && w->dp_args_each[i][k] != NULL; k++) {
        ck_assert_msg(n < sizeof argv / sizeof argv[0] - 1, "too many dp_args_each");
        argv[n++] = w->dp_args_each[i][k];
    }
    w->dppid[i] = e2e_spawn(argv, log);
    ck_assert_msg(w->dppid[i] > 0, "fork failed");
}

pid_t e2e_cp_controlplane_pid(const struct e2e_cp *w)
{
    return w->cppid;
}

pid_t e2e_cp_dataplane_pid(const struct e2e_cp *w, unsigned i)
{
    return i < E2E_MAX_DATAPLANES ? w->dppid[i] : -1;
}

int e2e_cp_dataplane_stop(struct e2e_cp *w, unsigned i)
{
    if (i >= E2E_MAX_DATAPLANES || w->dppid[i] <= 0)
        return -1;
    int st = e2e_kill(w->dppid[i]);
    w->dppid[i] = -1;
    return st;
}

bool e2e_cp_dataplane_log_has(struct e2e_cp *w, unsigned i, const char *needle, uint64_t ms)
{
    char path[256], name[32];
    snprintf(name, sizeof name, "dp%u.log", i);
    e2e_cp_path(w, name, path, sizeof path);
    uint64_t deadline = e2e_now_ms() + ms;
    for (;;) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[4096];
            bool found = false;
            while (!found && fgets(line, sizeof line, f))
                found = strstr(line, needle) != NULL;
            fclose(f);
            if (found)
                return true;
        }
        if (i >= E2E_MAX_DATAPLANES || w->dppid[i] <= 0 || e2e_now_ms() >= deadline)
            return false;
        int st;
        if (e2e_wait_exit(w->dppid[i], 0, &st)) {
            w->dppid[i] = -1;
            return false;
        }
        e2e_poll_pause(10);
    }
}

static bool bindable_at(const char *host, unsigned port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    socklen_t len = sizeof(sa);
    if (ok && port == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        ok = ntohs(sa.sin_port) != 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

char *e2e_cp_read(struct e2e_cp *w, const char *name)
{
    char path[512];
    e2e_cp_path(w, name, path, sizeof(path));
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no %s", name);
    char *buf = calloc(1, 65536);
    ck_assert_ptr_nonnull(buf);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The per-connection client of e2e_cp_load_start(): GET / on a new
 * connection until <end>, then {"ok":N,"failed":N} into <path>. */
static void per_connection_client(unsigned port, uint64_t end, const char *path)
{
    long ok = 0, failed = 0;
    while (e2e_now_ms() < end) {
        struct e2e_resp resp;
        if (e2e_request(port, "GET", "/", "Connection: close\r\n", NULL, 0, &resp) == 0) {
            ok += resp.status == 200;
            failed += resp.status != 200;
            e2e_resp_free(&resp);
        } else {
            failed++;
        }
    }
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "{\"ok\":%ld,\"failed\":%ld}\n", ok, failed);
        fclose(f);
    }
}

struct e2e_load e2e_cp_load_start(struct e2e_cp *w, unsigned clients, unsigned seconds)
{
    struct e2e_load l = {.ms = (uint64_t)seconds * 1000};
    unsigned port = e2e_cp_frontend_port(w);
    char ports[16], secs[16], cl[16], path[512];
    snprintf(ports, sizeof(ports), "%u", port);
    snprintf(secs, sizeof(secs), "%u", seconds);
    snprintf(cl, sizeof(cl), "%u", clients);
    char *ka[] = {LB_BUILD_DIR "/lb-faultload",
                  "--port",
                  ports,
                  "--clients",
                  cl,
                  "--seconds",
                  secs,
                  "--timeout-ms",
                  "5000",
                  NULL};
    e2e_cp_path(w, "ka.out", path, sizeof(path));
    l.ka = e2e_spawn(ka, path);
    ck_assert_int_gt(l.ka, 0);
    e2e_cp_path(w, "pr.out", path, sizeof(path));
    l.pr = fork();
    ck_assert_int_ge(l.pr, 0);
    if (l.pr == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        per_connection_client(port, e2e_now_ms() + l.ms, path);
        _exit(0);
    }
    return l;
}

void e2e_cp_load_end(struct e2e_cp *w, struct e2e_load *l, struct e2e_load_counts *out)
{
    int st;
    ck_assert_msg(e2e_wait_exit(l->ka, l->ms + e2e_timeout_ms(), &st), "lb-faultload hangs");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "lb-faultload status %d", st);
    ck_assert_msg(e2e_wait_exit(l->pr, l->ms + e2e_timeout_ms(), &st), "the client hangs");
    char *ka = e2e_cp_read(w, "ka.out"), *pr = e2e_cp_read(w, "pr.out");
    ck_assert_msg(e2e_json_long(ka, "total", &out->ka_total) &&
                      e2e_json_long(ka, "failed", &out->ka_failed),
                  "lb-faultload printed %s", ka);
    ck_assert_msg(e2e_json_long(pr, "ok", &out->pr_ok) &&
                      e2e_json_long(pr, "failed", &out->pr_failed),
                  "the client wrote %s", pr);
    free(ka);
    free(pr);
}

unsigned e2e_feed_base(const char *host, char *out, size_t n)
{
    for (int tries = 0; tries < 100; tries++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        inet_pton(AF_INET, host, &sa.sin_addr);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "cannot bind %s: %s", host,
                      strerror(errno));
        socklen_t len = sizeof(sa);
        getsockname(fd, (struct sockaddr *)&sa, &len);
        close(fd);
        unsigned p = ntohs(sa.sin_port);
        if (p < 65533 && bindable_at(host, p) && bindable_at(host, p + 1) &&
            bindable_at(host, p + 2)) {
            snprintf(out, n, "tcp://%s:%u", host, p);
            return p;
        }
    }
    ck_abort_msg("no three free ports on %s", host);
    return 0;
}

struct e2e_cp *e2e_cp_start(const struct e2e_cp_opts *o)
{
    ck_assert_msg(o->backends >= 1 && o->backends <= E2E_MAX_BACKENDS, "bad backend count");
    ck_assert_msg(o->configured <= o->backends, "bad configured count");
    ck_assert_msg(o->dataplanes <= E2E_MAX_DATAPLANES, "bad data plane count");
    ck_assert_msg(access(CP_BIN, X_OK) == 0, "%s is not built", CP_BIN);
    ck_assert_msg(access(LB_BIN, X_OK) == 0, "%s is not built", LB_BIN);
    ck_assert_msg(access(LBCTL_BIN, X_OK) == 0, "%s is not built", LBCTL_BIN);
    struct e2e_cp *w = calloc(1, sizeof *w);
    ck_assert_ptr_nonnull(w);
    w->cppid = -1;
    for (unsigned i = 0; i < E2E_MAX_DATAPLANES; i++)
        w->dppid[i] = -1;
    w->workers = o->workers ? o->workers : 2;
    if (base_dir[0])
        snprintf(w->dir, sizeof w->dir, "%s/cp-XXXXXX", base_dir);
    else
        snprintf(w->dir, sizeof w->dir, "/tmp/lb-e2e-XXXXXX");
    ck_assert_msg(mkdtemp(w->dir) != NULL, "mkdtemp failed");
    if (!cp_exit_hooked) {
        atexit(on_exit_stop_cps);
        cp_exit_hooked = true;
    }
    w->next_live = live_cps;
    live_cps = w;
    e2e_cp_path(w, "run/admin.sock", w->sock, sizeof w->sock);
    if (o->control != NULL)
        snprintf(w->control, sizeof w->control, "%s", o->control);
    else
        snprintf(w->control, sizeof w->control, "ipc://%s/run", w->dir);
    w->cp_args = o->cp_args;
    w->dp_args = o->dp_args;
    memcpy(w->dp_args_each, o->dp_args_each, sizeof w->dp_args_each);

    char log[256], name[32];
    for (unsigned i = 0; i < o->backends; i++) {
        snprintf(name, sizeof name, "b%u", i);
        char lname[40];
        snprintf(lname, sizeof lname, "%s.log", name);
        e2e_cp_path(w, lname, log, sizeof log);
        char *argv[] = {BACKEND_BIN, "--port", "0", "--name", name, NULL};
        w->bpid[i] = e2e_spawn(argv, log);
        ck_assert_msg(w->bpid[i] > 0, "fork failed");
        w->nb = i + 1;
        w->bport[i] = cp_backend_port(w->bpid[i], log);
        ck_assert_msg(w->bport[i] != 0, "backend %s did not start", name);
        snprintf(w->burl[i], sizeof w->burl[i], "http://127.0.0.1:%u", w->bport[i]);
    }
    w->feport = e2e_free_port();
    w->mport = e2e_free_port();
    w->aport = o->admin_tcp ? e2e_free_port() : 0;
    ck_assert_msg(
        w->feport && w->mport && w->feport != w->mport &&
            (!o->admin_tcp || (w->aport && w->aport != w->feport && w->aport != w->mport)),
        "no free port");
    cp_write_config(w, o);
    if (o->admin_tcp)
        cp_write_tokens(w);
    w->admin_tls = o->admin_tcp && o->admin_tls;
    if (w->admin_tls)
        cp_make_certs(w);
    e2e_cp_controlplane_start(w);
    for (unsigned i = 0; i < o->dataplanes; i++)
        e2e_cp_dataplane_start(w, i);
    for (unsigned i = 0; i < o->dataplanes; i++)
        ck_assert_msg(e2e_cp_dataplane_log_has(w, i, "\"snapshot_applied\"", e2e_timeout_ms()),
                      "data plane dp%u applied no snapshot, see its log in %s", i, w->dir);
    return w;
}

unsigned e2e_cp_frontend_port(const struct e2e_cp *w)
{
    return w->feport;
}

unsigned e2e_cp_metrics_port(const struct e2e_cp *w)
{
    return w->mport;
}

unsigned e2e_cp_backend_port(const struct e2e_cp *w, unsigned i)
{
    return i < w->nb ? w->bport[i] : 0;
}

unsigned e2e_cp_admin_port(const struct e2e_cp *w)
{
    return w->aport;
}

const char *e2e_cp_backend_url(const struct e2e_cp *w, unsigned i)
{
    return i < w->nb ? w->burl[i] : "";
}

long e2e_cp_backend_stat(struct e2e_cp *w, unsigned i, const char *key)
{
    return i < w->nb ? stat_at(w->bport[i], key) : -1;
}

char *e2e_cp_scrape(struct e2e_cp *w)
{
    return scrape_at(w->mport);
}

#define LBCTL_MAX_ARGS 32

int e2e_cp_lbctl(struct e2e_cp *w, struct e2e_cmd *r, ...)
{
    char *argv[LBCTL_MAX_ARGS + 1];
    size_t n = 0;
    argv[n++] = LBCTL_BIN;
    argv[n++] = "--socket";
    argv[n++] = w->sock;
    va_list ap;
    va_start(ap, r);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        ck_assert_msg(n < LBCTL_MAX_ARGS, "too many lbctl arguments");
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    static const char *const env[] = {"TZ=UTC", NULL};
    return e2e_cmd_run(argv, env, r);
}

int e2e_cp_dataplanes(struct e2e_cp *w, struct e2e_dp_status *dp, unsigned max, long *version,
                      long *generation)
{
    struct e2e_cmd r;
    if (e2e_cp_lbctl(w, &r, "--json", "dataplanes", NULL) != 0) {
        e2e_cmd_free(&r);
        return -1;
    }
    const char *list = json_value(r.out, "dataplanes");
    if (version && !e2e_json_long(r.out, "version", version))
        *version = -1;
    if (generation && !e2e_json_long(r.out, "generation", generation))
        *generation = -1;
    int count = 0;
    /* Each entry is a flat object starting at its "node_id". */
    for (const char *p = list ? strstr(list, "\"node_id\"") : NULL; p;
         p = strstr(p + 1, "\"node_id\"")) {
        if ((unsigned)count < max) {
            const char *next = strstr(p + 1, "\"node_id\"");
            size_t len = next ? (size_t)(next - p) : strlen(p);
            char *obj = strndup(p, len);
            ck_assert_ptr_nonnull(obj);
            struct e2e_dp_status *d = &dp[count];
            memset(d, 0, sizeof *d);
            json_string(obj, "node_id", d->node_id, sizeof d->node_id);
            if (!e2e_json_long(obj, "applied_version", &d->applied_version))
                d->applied_version = -1;
            if (!e2e_json_long(obj, "applied_generation", &d->applied_generation))
                d->applied_generation = -1;
            if (!e2e_json_long(obj, "rejected_generation", &d->rejected_generation))
                d->rejected_generation = -1;
            json_string(obj, "rejection_reason", d->rejection_reason, sizeof d->rejection_reason);
            const char *s = json_value(obj, "in_sync");
            d->in_sync = s && strncmp(s, "true", 4) == 0;
            free(obj);
        }
        count++;
    }
    e2e_cmd_free(&r);
    return count;
}

long e2e_cp_wait_in_sync(struct e2e_cp *w, unsigned n, long *version)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    struct e2e_dp_status dp[E2E_MAX_DATAPLANES];
    for (;;) {
        long ver = -1, gen = -1;
        int count = e2e_cp_dataplanes(w, dp, E2E_MAX_DATAPLANES, &ver, &gen);
        bool ok = count == (int)n && gen > 0;
        for (int i = 0; ok && i < count && i < E2E_MAX_DATAPLANES; i++)
            ok = dp[i].in_sync && dp[i].applied_generation == gen;
        if (ok) {
            if (version)
                *version = ver;
            return gen;
        }
        if (e2e_now_ms() >= deadline)
            return -1;
        e2e_poll_pause(50);
    }
}

/* ---- certificates ------------------------------------------------------------ */

void e2e_certs_make(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/lb-e2e-certs-XXXXXX");
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh %s/tests/unit/dataplane/tls/make-certs.sh %s", LB_SOURCE_DIR,
             dir);
    ck_assert_msg(system(cmd) == 0, "%s failed (see %s/log.txt)", cmd, dir);
}

void e2e_certs_remove(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

ProtobufCBinaryData e2e_file_bytes(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    uint8_t *buf = malloc(1 << 16);
    ck_assert_ptr_nonnull(buf);
    size_t n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return (ProtobufCBinaryData){.len = n, .data = buf};
}

void e2e_tls1_init(struct e2e_tls1 *x, const char *name)
{
    char file[128];
    e2e_certs_make(x->dir, sizeof(x->dir));
    lb__v1__tls__init(&x->tls);
    lb__v1__certificate__init(&x->cert);
    x->cert.name = (char *)name;
    snprintf(file, sizeof(file), "%s.pem", name);
    x->cert.cert_pem = e2e_file_bytes(x->dir, file);
    snprintf(file, sizeof(file), "%s.key", name);
    x->cert.key_pem = e2e_file_bytes(x->dir, file);
    x->certp = &x->cert;
    x->tls.n_certificates = 1;
    x->tls.certificates = &x->certp;
}

void e2e_tls1_free(struct e2e_tls1 *x)
{
    free(x->cert.cert_pem.data);
    free(x->cert.key_pem.data);
    e2e_certs_remove(x->dir);
}

void e2e_cp_write_tls_config(struct e2e_cp *w, const char *name, const char *key, const char *extra)
{
    char dir[512], path[600];
    e2e_cp_path(w, "", dir, sizeof(dir));
    e2e_cp_path(w, name, path, sizeof(path));
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "frontends:\n"
            "  - {name: web-tls, address: 127.0.0.1, port: %u, tls: true}\n"
            "backends:\n"
            "  - {id: b0, url: \"%s\"}\n"
            "ssl:\n"
            "  certFile: %s/cert.pem\n"
            "  keyFile: %s/%s\n"
            "%s",
            e2e_free_port(), e2e_cp_backend_url(w, 0), dir, dir, key, extra ? extra : "");
    ck_assert_int_eq(fclose(f), 0);
}
