/* tests/bench/lb-faultload.c: HTTP/1.1 load with a fault landed mid-load,
 * for the dead-backend e2e tests and tests/bench/deadbackend.sh.
 *
 * lb-faultload --port P --clients N [--seconds S] [--path /] [--post]
 *              [--burst] [--timeout-ms MS] [--ids FILE] [--id-prefix STR]
 *              [--kill-pid PID --kill-signal SIG --kill-at-ms MS]
 *
 * Keep-alive mode (default): N client connections to 127.0.0.1:P, each
 * sending the next request as soon as the previous answer is complete, for S
 * seconds (default 3); a connection the server closes is opened again (a
 * failed connect is retried after 10 ms). GET PATH, or with --post a POST of
 * a small body carrying a header X-Test-Id unique to the request
 * (<id-prefix><client>-<seq>). --burst: N connections opened at once, one GET
 * each with "Connection: close", then the program ends.
 * --kill-pid: at MS milliseconds after the start, the program sends SIG
 * (a number, or KILL, TERM, USR1) to PID itself, so the fault lands at a
 * known point of the load.
 *
 * A request counts once it finished: ok (a 2xx answer) or failed (any other
 * status, a connect error, the connection closed or reset before a complete
 * answer, or no answer within --timeout-ms, default 5000). After S seconds no
 * request is started; the ones in flight run to their end or their timeout,
 * so the program ends within S s + MS ms (+ one connect). SIGINT ends the
 * load early the same way: nothing new starts, the results are printed.
 *
 * Prints one JSON line on stdout:
 *   {"mode","clients","elapsed_ms","total","ok","failed","conn_errors",
 *    "timeouts","status":{"502":n,...},"fault_at_ms","failed_after_fault",
 *    "p50_ms","p99_ms","max_ms","failed_ids":[...at most 1000]}
 * failed_after_fault counts failures that finished at or after the fault;
 * fault_at_ms is -1 without --kill-pid. With --ids, every finished request
 * also writes "ID STATUS START_MS END_MS" to FILE, one line each: STATUS 0
 * when no answer came, the times in milliseconds since the start (the
 * request started when its connect or its first byte was issued).
 * Exit status: 0, or 2 on bad arguments or a failure to start. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ_MAX        512
#define HEAD_MAX       8192
#define HIST_STEP_US   100
#define HIST_BUCKETS   600000 /* 100 us steps up to 60 s; slower ones go to the last */
#define FAILED_IDS_MAX 1000
#define RECONNECT_US   10000
#define STATUS_MAX     600

enum cstate {
    C_IDLE,       /* no connection; (re)connect at <wake_us> */
    C_CONNECTING, /* connect() in progress, request queued */
    C_WRITING,    /* sending the request */
    C_READING,    /* reading the answer */
    C_DONE        /* --burst: finished */
};

struct client {
    int fd;              /* -1 when closed */
    unsigned idx;        /* position in clients[] */
    enum cstate state;   /* see enum cstate */
    bool reused;         /* the connection carried an earlier request */
    bool in_request;     /* a request is counted as started */
    uint64_t wake_us;    /* C_IDLE: when to connect again */
    uint64_t start_us;   /* when the current request started */
    uint64_t seq;        /* requests started by this client */
    char req[REQ_MAX];   /* the current request */
    size_t req_len;      /* bytes in req */
    size_t sent;         /* bytes of req written */
    char id[64];         /* X-Test-Id of the current request */
    char head[HEAD_MAX]; /* answer head so far */
    size_t head_len;     /* bytes in head */
    bool head_done;      /* head complete; body_left is valid */
    bool close_after;    /* the answer says Connection: close (or HTTP/1.0) */
    bool until_eof;      /* body delimited by the close */
    uint64_t body_left;  /* Content-Length bytes still to read */
    int status;          /* status of the answer being read */
};

/* Totals over all clients. */
struct totals {
    uint64_t total, ok, failed, conn_errors, timeouts, failed_after_fault;
    uint64_t status[STATUS_MAX];
    uint32_t *hist; /* latency buckets of HIST_STEP_US */
    uint64_t max_us;
    char *failed_ids[FAILED_IDS_MAX];
    unsigned nfailed_ids;
};

/* Command line and run state. */
struct run {
    struct sockaddr_in target;
    unsigned clients;
    uint64_t seconds;
    const char *path;
    bool post;
    bool burst;
    uint64_t timeout_us;
    const char *id_prefix;
    FILE *ids;
    pid_t kill_pid;
    int kill_signal;
    int64_t kill_at_ms;
    int64_t fault_at_us; /* -1 until the signal is sent */
    uint64_t t0_us;      /* start */
    bool stopping;       /* past --seconds: start nothing new */
    int ep;              /* epoll instance */
    struct totals tot;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void client_close(struct run *r, struct client *c)
{
    if (c->fd != -1) {
        epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->reused = false;
}

static void client_want(struct run *r, struct client *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Counts the end of the current request: <status> 0 means no answer. */
static void request_end(struct run *r, struct client *c, int status, bool timed_out)
{
    struct totals *t = &r->tot;
    uint64_t now = now_us();
    uint64_t lat = now - c->start_us;
    c->in_request = false;
    t->total++;
    if (status >= 200 && status < 300) {
        t->ok++;
    } else {
        t->failed++;
        if (status == 0 && !timed_out)
            t->conn_errors++;
        if (timed_out)
            t->timeouts++;
        if (r->fault_at_us >= 0 && now >= (uint64_t)r->fault_at_us)
            t->failed_after_fault++;
        if (c->id[0] && t->nfailed_ids < FAILED_IDS_MAX)
            t->failed_ids[t->nfailed_ids++] = strdup(c->id);
    }
    if (status > 0 && status < STATUS_MAX)
        t->status[status]++;
    uint64_t b = lat / HIST_STEP_US;
    t->hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
    if (lat > t->max_us)
        t->max_us = lat;
    if (r->ids && c->id[0])
        fprintf(r->ids, "%s %d %llu %llu\n", c->id, status,
                (unsigned long long)(c->start_us - r->t0_us) / 1000,
                (unsigned long long)(now - r->t0_us) / 1000);
}

/* Builds the next request of <c> into c->req. */
static void request_build(struct run *r, struct client *c)
{
    int n;
    c->seq++;
    c->id[0] = '\0';
    if (r->post) {
        snprintf(c->id, sizeof c->id, "%s%u-%llu", r->id_prefix, c->idx,
                 (unsigned long long)c->seq);
        char body[96];
        int bl = snprintf(body, sizeof body, "id=%s", c->id);
        n = snprintf(c->req, sizeof c->req,
                     "POST %s HTTP/1.1\r\nHost: lb\r\nX-Test-Id: %s\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     r->path, c->id, bl, body);
    } else {
        n = snprintf(c->req, sizeof c->req, "GET %s HTTP/1.1\r\nHost: lb\r\n%s\r\n", r->path,
                     r->burst ? "Connection: close\r\n" : "");
    }
    c->req_len = (size_t)n;
    c->sent = 0;
    c->head_len = 0;
    c->head_done = false;
    c->close_after = false;
    c->until_eof = false;
    c->body_left = 0;
    c->status = 0;
}

/* Opens a connection and queues a new request. False when connect failed at
 * once (counted; the client waits RECONNECT_US). */
static bool client_start(struct run *r, struct client *c)
{
    request_build(r, c);
    c->start_us = now_us();
    c->in_request = true;
    c->reused = false;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
        request_end(r, c, 0, false);
        c->state = r->burst ? C_DONE : C_IDLE;
        c->wake_us = now_us() + RECONNECT_US;
        return false;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&r->target, sizeof r->target) == -1 &&
        errno != EINPROGRESS) {
        client_close(r, c);
        request_end(r, c, 0, false);
        c->state = r->burst ? C_DONE : C_IDLE;
        c->wake_us = now_us() + RECONNECT_US;
        return false;
    }
    c->state = C_CONNECTING;
    return true;
}

/* After an answer or a failure: the next request, on this connection when it
 * is still open. */
static void client_next(struct run *r, struct client *c)
{
    if (r->burst) {
        client_close(r, c);
        c->state = C_DONE;
        return;
    }
    if (r->stopping) {
        client_close(r, c);
        c->state = C_IDLE;
        return;
    }
    if (c->fd == -1) {
        client_start(r, c);
        return;
    }
    request_build(r, c);
    c->start_us = now_us();
    c->in_request = true;
    c->reused = true;
    c->state = C_WRITING;
    client_want(r, c, EPOLLOUT);
}

static void client_fail(struct run *r, struct client *c, bool timed_out)
{
    client_close(r, c);
    request_end(r, c, 0, timed_out);
    if (r->burst) {
        c->state = C_DONE;
        return;
    }
    c->state = C_IDLE;
    c->wake_us = now_us() + RECONNECT_US;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return false;
    const char *v = line + nl + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

/* Parses c->head[0..hlen) (ends with CRLFCRLF). False when malformed. */
static bool head_parse(struct client *c, size_t hlen)
{
    const char *h = c->head;
    if (hlen < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return false;
    c->status = atoi(h + 9);
    if (c->status < 100 || c->status > 599)
        return false;
    c->close_after = h[7] == '0';
    bool have_cl = false;
    const char *p = memchr(h, '\n', hlen) + 1;
    const char *end = h + hlen;
    while (p < end) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        size_t ll = (size_t)(le - p);
        if (ll > 0 && p[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        const char *v;
        size_t vl;
        if (header_is(p, ll, "content-length", &v, &vl)) {
            c->body_left = strtoull(v, NULL, 10);
            have_cl = true;
        } else if (header_is(p, ll, "connection", &v, &vl)) {
            if (vl >= 5 && strncasecmp(v, "close", 5) == 0)
                c->close_after = true;
        } else if (header_is(p, ll, "transfer-encoding", &v, &vl)) {
            return false; /* the endpoints used here answer with a length */
        }
        p = le + 1;
    }
    bool no_body = c->status == 204 || c->status == 304 || c->status < 200;
    if (no_body)
        c->body_left = 0;
    else if (!have_cl)
        c->until_eof = c->close_after = true;
    return true;
}

static void client_on_readable(struct run *r, struct client *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (c->head_done && c->until_eof) {
                client_close(r, c);
                request_end(r, c, c->status, false);
                client_next(r, c);
            } else {
                client_fail(r, c, false);
            }
            return;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            if (!c->head_done) {
                size_t take = (size_t)n - off;
                if (take > HEAD_MAX - c->head_len)
                    take = HEAD_MAX - c->head_len;
                memcpy(c->head + c->head_len, buf + off, take);
                size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
                c->head_len += take;
                const char *e = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
                if (!e) {
                    if (c->head_len == HEAD_MAX) {
                        client_fail(r, c, false);
                        return;
                    }
                    off += take;
                    continue;
                }
                size_t hlen = (size_t)(e - c->head) + 4;
                off += take - (c->head_len - hlen);
                if (!head_parse(c, hlen)) {
                    client_fail(r, c, false);
                    return;
                }
                if (c->status < 200) { /* 1xx: the final answer follows */
                    c->head_len = 0;
                    continue;
                }
                c->head_done = true;
            }
            size_t avail = (size_t)n - off;
            if (c->until_eof) {
                off = (size_t)n;
                continue;
            }
            size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
            c->body_left -= take;
            off += take;
            if (c->body_left == 0) {
                if (off != (size_t)n) { /* nothing was pipelined: a broken answer */
                    client_fail(r, c, false);
                    return;
                }
                if (c->close_after)
                    client_close(r, c);
                request_end(r, c, c->status, false);
                client_next(r, c);
                return;
            }
        }
    }
}

static void client_on_writable(struct run *r, struct client *c)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            client_fail(r, c, false);
            return;
        }
        c->state = C_WRITING;
    }
    while (c->sent < c->req_len) {
        ssize_t n = write(c->fd, c->req + c->sent, c->req_len - c->sent);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        client_fail(r, c, false);
        return;
    }
    c->state = C_READING;
    client_want(r, c, EPOLLIN | EPOLLRDHUP);
}

static volatile sig_atomic_t interrupted; /* SIGINT: stop as if S seconds passed */

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int signal_number(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"KILL", SIGKILL}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
                 {"USR2", SIGUSR2}, {"INT", SIGINT},   {"STOP", SIGSTOP}};
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].sig;
    char *end;
    long v = strtol(s, &end, 10);
    return *s && *end == '\0' && v > 0 && v < 65 ? (int)v : -1;
}

static double percentile_ms(const struct totals *t, double q)
{
    if (t->total == 0)
        return 0;
    uint64_t want = (uint64_t)((double)t->total * q + 0.999999);
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += t->hist[i];
        if (seen >= want && want > 0)
            return (double)(i + 1) * HIST_STEP_US / 1000.0;
    }
    return (double)t->max_us / 1000.0;
}

static void print_result(const struct run *r, uint64_t elapsed_us)
{
    const struct totals *t = &r->tot;
    printf("{\"mode\":\"%s\",\"clients\":%u,\"elapsed_ms\":%llu,\"total\":%llu,\"ok\":%llu,"
           "\"failed\":%llu,\"conn_errors\":%llu,\"timeouts\":%llu,\"status\":{",
           r->burst ? "burst" : (r->post ? "post" : "get"), r->clients,
           (unsigned long long)(elapsed_us / 1000), (unsigned long long)t->total,
           (unsigned long long)t->ok, (unsigned long long)t->failed,
           (unsigned long long)t->conn_errors, (unsigned long long)t->timeouts);
    bool first = true;
    for (unsigned i = 0; i < STATUS_MAX; i++) {
        if (!t->status[i])
            continue;
        printf("%s\"%u\":%llu", first ? "" : ",", i, (unsigned long long)t->status[i]);
        first = false;
    }
    printf("},\"fault_at_ms\":%lld,\"failed_after_fault\":%llu,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
           "\"max_ms\":%.1f,\"failed_ids\":[",
           r->fault_at_us < 0 ? -1LL : (long long)((uint64_t)r->fault_at_us - r->t0_us) / 1000,
           (unsigned long long)t->failed_after_fault, percentile_ms(t, 0.50),
           percentile_ms(t, 0.99), (double)t->max_us / 1000.0);
    for (unsigned i = 0; i < t->nfailed_ids; i++)
        printf("%s\"%s\"", i ? "," : "", t->failed_ids[i]);
    printf("]}\n");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: lb-faultload --port P --clients N [--seconds S] [--path /] [--post]\n"
            "                    [--burst] [--timeout-ms MS] [--ids FILE] [--id-prefix STR]\n"
            "                    [--kill-pid PID --kill-signal SIG --kill-at-ms MS]\n");
}

static bool arg_u64(const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    if (!v || !*v || *v == '-')
        return false;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || n > max)
        return false;
    *out = n;
    return true;
}

static int parse_args(struct run *r, int argc, char **argv)
{
    uint64_t port = 0, clients = 0, timeout_ms = 5000, v;
    r->seconds = 3;
    r->path = "/";
    r->id_prefix = "";
    r->kill_pid = -1;
    r->kill_signal = -1;
    r->kill_at_ms = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--post") == 0) {
            r->post = true;
            continue;
        }
        if (strcmp(a, "--burst") == 0) {
            r->burst = true;
            continue;
        }
        bool ok = false;
        if (!val)
            ok = false;
        else if (strcmp(a, "--port") == 0)
            ok = arg_u64(val, 65535, &port) && port > 0;
        else if (strcmp(a, "--clients") == 0)
            ok = arg_u64(val, 1000000, &clients) && clients > 0;
        else if (strcmp(a, "--seconds") == 0)
            ok = arg_u64(val, 3600, &r->seconds);
        else if (strcmp(a, "--timeout-ms") == 0)
            ok = arg_u64(val, 3600000, &timeout_ms) && timeout_ms > 0;
        else if (strcmp(a, "--path") == 0)
            ok = val[0] == '/' && strlen(val) < 256 && !strpbrk(val, " \r\n");
        else if (strcmp(a, "--id-prefix") == 0)
            ok = strlen(val) < 24 && !strpbrk(val, " \r\n");
        else if (strcmp(a, "--ids") == 0)
            ok = (r->ids = fopen(val, "w")) != NULL;
        else if (strcmp(a, "--kill-pid") == 0)
            ok = arg_u64(val, 1u << 30, &v) && v > 1 && (r->kill_pid = (pid_t)v, true);
        else if (strcmp(a, "--kill-signal") == 0)
            ok = (r->kill_signal = signal_number(val)) > 0;
        else if (strcmp(a, "--kill-at-ms") == 0)
            ok = arg_u64(val, 3600000, &v) && (r->kill_at_ms = (int64_t)v, true);
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "lb-faultload: bad or missing value for %s\n", a);
            usage();
            return -1;
        }
        if (strcmp(a, "--path") == 0)
            r->path = val;
        else if (strcmp(a, "--id-prefix") == 0)
            r->id_prefix = val;
        i++;
    }
    bool kill_any = r->kill_pid > 0 || r->kill_signal > 0 || r->kill_at_ms >= 0;
    bool kill_all = r->kill_pid > 0 && r->kill_signal > 0 && r->kill_at_ms >= 0;
    if (!port || !clients || (kill_any && !kill_all) || (r->burst && r->post)) {
        usage();
        return -1;
    }
    r->clients = (unsigned)clients;
    r->timeout_us = timeout_ms * 1000;
    r->target.sin_family = AF_INET;
    r->target.sin_port = htons((uint16_t)port);
    r->target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return 0;
}

int main(int argc, char **argv)
{
    static struct run r;
    if (parse_args(&r, argc, argv) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    /* A burst holds one descriptor per client. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    r.tot.hist = calloc(HIST_BUCKETS, sizeof *r.tot.hist);
    struct client *cl = calloc(r.clients, sizeof *cl);
    struct epoll_event *evs = calloc(1024, sizeof *evs);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!r.tot.hist || !cl || !evs || r.ep == -1) {
        fprintf(stderr, "lb-faultload: out of memory or no epoll\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    r.fault_at_us = -1;
    r.t0_us = now_us();
    uint64_t stop_us = r.t0_us + r.seconds * 1000000;
    /* Past the last timeout nothing can be in flight; a hard bound anyway. */
    uint64_t hard_us = stop_us + r.timeout_us + 1000000;
    for (unsigned i = 0; i < r.clients; i++) {
        cl[i].fd = -1;
        cl[i].idx = i;
        client_start(&r, &cl[i]);
    }
    uint64_t last_scan = r.t0_us;
    for (;;) {
        int n = epoll_wait(r.ep, evs, 1024, 5);
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (c->fd == -1)
                continue;
            if (c->state == C_CONNECTING || c->state == C_WRITING)
                client_on_writable(&r, c);
            else if (c->state == C_READING)
                client_on_readable(&r, c);
        }
        uint64_t now = now_us();
        if (r.kill_pid > 0 && r.fault_at_us < 0 && now >= r.t0_us + (uint64_t)r.kill_at_ms * 1000) {
            if (kill(r.kill_pid, r.kill_signal) == -1)
                fprintf(stderr, "lb-faultload: kill %d: %s\n", (int)r.kill_pid, strerror(errno));
            r.fault_at_us = (int64_t)now_us();
        }
        if (!r.burst && (now >= stop_us || interrupted))
            r.stopping = true;
        if (now - last_scan < 20000 && n > 0)
            continue;
        last_scan = now;
        bool busy = false;
        for (unsigned i = 0; i < r.clients; i++) {
            struct client *c = &cl[i];
            if (c->in_request && now - c->start_us >= r.timeout_us)
                client_fail(&r, c, true);
            if (c->state == C_IDLE && !r.stopping && now >= c->wake_us)
                client_start(&r, c);
            busy |= c->in_request;
        }
        if (!busy && (r.burst || r.stopping))
            break;
        if (now >= hard_us)
            break;
    }
    print_result(&r, now_us() - r.t0_us);
    if (r.ids)
        fclose(r.ids);
    for (unsigned i = 0; i < r.clients; i++)
        client_close(&r, &cl[i]);
    for (unsigned i = 0; i < r.tot.nfailed_ids; i++)
        free(r.tot.failed_ids[i]);
    free(cl);
    free(evs);
    free(r.tot.hist);
    close(r.ep);
    return 0;
}
