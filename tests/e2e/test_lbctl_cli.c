/* tests/e2e/test_lbctl_cli.c: the real lbctl binary against a fake admin
 * server (a thread answering canned JSON per route on a unix socket and on a
 * free 127.0.0.1 port, recording every request): tables, --json, methods,
 * paths, bodies and headers, exit statuses and their one-line messages. */
#include "e2e.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LBCTL    LB_BUILD_DIR "/lbctl"
#define MAX_REQS 32
#define MAX_ARGS 32
#define HANG     0 /* route status: read the request, never answer */

struct route {
    const char *method;
    const char *path;   /* with the query string */
    const char *accept; /* NULL: any Accept */
    int status;
    const char *ctype;
    const char *body;
};

struct fake_req {
    char method[16];
    char path[512];
    char head[4096]; /* header lines as received */
    char body[16384];
    size_t body_len;
};

struct fake {
    char dir[64];  /* temp dir holding the socket and token files */
    char sock[96]; /* unix socket path */
    unsigned port; /* 127.0.0.1 listener */
    int ufd, tfd;  /* listening sockets */
    int stop[2];   /* pipe: the test asks the thread to finish */
    pthread_t thr;
    pthread_mutex_t mu;
    const struct route *routes; /* under mu */
    size_t nroutes;
    struct fake_req reqs[MAX_REQS]; /* under mu */
    size_t nreqs;
};

static struct fake *g_fake;

#define BACKENDS_JSON                                                                              \
    "{\"version\":3,\"backends\":[{\"id\":\"demo-a\",\"url\":\"http://127.0.0.1:9001\","           \
    "\"weight\":5,\"state\":\"active\",\"health\":\"up\",\"last_check_ms\":1764300000000,"         \
    "\"last_error\":null,\"breaker\":\"open\",\"requests\":7,\"errors\":5,"                        \
    "\"effective_weight\":4},{\"id\":\"b\",\"url\":\"http://10.1.2.3:18080\",\"weight\":10,"       \
    "\"state\":\"draining\",\"health\":\"down\",\"last_check_ms\":null,\"last_error\":"            \
    "\"connect: connection refused\",\"maxConnections\":50,\"maxQueue\":1024,"                     \
    "\"ejected\":true,\"ejections\":2,\"connections\":12,\"queued\":3,\"queueTimeouts\":0}]}"

#define DATAPLANES_JSON                                                                            \
    "{\"version\":8,\"generation\":14,\"dataplanes\":[{\"node_id\":\"host-a:1234\","               \
    "\"applied_version\":8,\"applied_generation\":14,\"last_seen_ms\":1764300001000,"              \
    "\"rejected_generation\":0,\"rejection_reason\":null,\"in_sync\":true,\"pid\":4242,"           \
    "\"started_unix_ms\":1764299000000,\"binary_version\":\"0.2.0\"},"                             \
    "{\"node_id\":\"host-bb:77\",\"applied_version\":7,\"applied_generation\":13,"                 \
    "\"last_seen_ms\":1764300002000,\"rejected_generation\":14,\"rejection_reason\":"              \
    "\"bad cert\",\"in_sync\":false}]}"

#define BACKEND_C                                                                                  \
    "{\"id\":\"demo-c\",\"url\":\"http://10.0.0.9:80\",\"weight\":3,\"state\":\"disabled\","       \
    "\"health\":\"unknown\",\"last_check_ms\":null,\"last_error\":null}"

#define AUDIT_JSON                                                                                 \
    "{\"entries\":[{\"id\":42,\"time\":\"2025-11-28T03:20:01.000Z\",\"time_ms\":1764300001000,"    \
    "\"who\":\"certwatch\",\"action\":\"tls.reload\",\"detail\":\"tls reload: cert.pem changed\"," \
    "\"from_version\":8,\"to_version\":8},{\"id\":41,\"time\":\"2025-11-28T03:20:00.000Z\","       \
    "\"time_ms\":1764300000000,\"who\":\"token:ops\",\"action\":\"backend.update\",\"detail\":"    \
    "\"backend demo-a: weight 5 -> 3\",\"from_version\":7,\"to_version\":8},{\"id\":3,"            \
    "\"time\":\"2025-11-28T00:33:20.000Z\",\"time_ms\":1764290000000,\"who\":\"health\","          \
    "\"action\":\"health\",\"detail\":\"backend b down: connect refused\",\"from_version\":null,"  \
    "\"to_version\":null},{\"id\":1,\"time\":\"2025-11-28T00:33:20.000Z\",\"time_ms\":"            \
    "1764290000000,\"who\":\"bootstrap\",\"action\":\"config.put\",\"detail\":\"bootstrap\","      \
    "\"from_version\":null,\"to_version\":1}],\"more\":false}"

#define YAML_CFG "frontends:\n  - name: web\n    listen: 0.0.0.0:8080\n"

static const struct route good_routes[] = {
    {"GET", "/health", NULL, 200, "application/json",
     "{\"status\":\"ok\",\"active_version\":3,\"generation\":12}"},
    {"GET", "/api/v1/dataplanes", NULL, 200, "application/json", DATAPLANES_JSON},
    {"GET", "/api/v1/backends", NULL, 200, "application/json", BACKENDS_JSON},
    {"POST", "/api/v1/backends", NULL, 201, "application/json",
     "{\"version\":4,\"backend\":" BACKEND_C "}"},
    {"PUT", "/api/v1/backends/demo-c", NULL, 200, "application/json",
     "{\"version\":5,\"backend\":" BACKEND_C "}"},
    {"PUT", "/api/v1/backends/ghost", NULL, 404, "application/json",
     "{\"error\":{\"code\":\"not_found\",\"message\":\"no backend ghost\"}}"},
    {"DELETE", "/api/v1/backends/b", NULL, 200, "application/json", "{\"version\":6}"},
    {"DELETE", "/api/v1/backends/demo-a", NULL, 409, "application/json",
     "{\"error\":{\"code\":\"conflict\",\"message\":\"active version is 7, not 5\"}}"},
    {"POST", "/api/v1/backends/demo-a/drain", NULL, 200, "application/json",
     "{\"version\":7,\"backend\":{\"id\":\"demo-a\",\"state\":\"draining\"}}"},
    {"GET", "/api/v1/config", "application/yaml", 200, "application/yaml", YAML_CFG},
    {"GET", "/api/v1/config", NULL, 200, "application/json",
     "{\"version\":7,\"hash\":\"ab\",\"config\":{\"backends\":[]}}"},
    {"POST", "/api/v1/config", NULL, 201, "application/json",
     "{\"version\":8,\"changes\":[{\"kind\":\"changed\",\"path\":\"backends[0].weight\","
     "\"subject\":\"backend demo-a\",\"field\":\"weight\",\"old\":\"5\",\"new\":\"3\"},"
     "{\"kind\":\"added\",\"path\":\"backends[2]\",\"subject\":\"backend demo-c\","
     "\"field\":null,\"old\":null,\"new\":\"http://10.0.0.9:80\"}]}"},
    {"GET", "/api/v1/config/versions?limit=2", NULL, 200, "application/json",
     "{\"active\":8,\"versions\":[{\"version\":8,\"created_ms\":1764300000000,\"author\":"
     "\"uid:0\",\"comment\":\"more weight\",\"hash\":"
     "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"active\":true},"
     "{\"version\":10,\"created_ms\":1764290000000,\"author\":\"token:ci-bot\",\"comment\":null,"
     "\"hash\":\"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\","
     "\"active\":false}]}"},
    {"GET", "/api/v1/config/versions/5", NULL, 200, "application/json",
     "{\"version\":5,\"created_ms\":1,\"author\":\"uid:0\",\"comment\":null,\"hash\":\"aa\","
     "\"active\":false,\"content\":\"backends: []\\n\"}"},
    {"GET", "/api/v1/config/diff?from=5&to=7", NULL, 200, "application/json",
     "{\"from\":5,\"to\":7,\"changes\":[{\"kind\":\"changed\"}],"
     "\"text\":\"backend demo-a: weight 5 -> 3\\n\"}"},
    {"POST", "/api/v1/config/rollback", NULL, 201, "application/json",
     "{\"version\":9,\"rolled_back_to\":5}"},
    {"GET", "/api/v1/audit?limit=100", NULL, 200, "application/json", AUDIT_JSON},
    {"GET",
     "/api/v1/audit?limit=1&since=2025-11-28T03%3A00%3A00%2B01%3A00&who=token%3Aops&action=backend"
     ".update",
     NULL, 200, "application/json",
     "{\"entries\":[{\"id\":41,\"time\":\"2025-11-28T03:20:00.000Z\",\"time_ms\":"
     "1764300000000,\"who\":\"token:ops\",\"action\":\"backend.update\",\"detail\":"
     "\"backend demo-a: weight 5 -> 3\",\"from_version\":7,\"to_version\":8}],\"more\":true}"},
    {"GET", "/api/v1/audit?limit=100&action=nothing", NULL, 200, "application/json",
     "{\"entries\":[],\"more\":false}"},
    {"GET", "/api/v1/audit?limit=100&since=yesterday", NULL, 400, "application/json",
     "{\"error\":{\"code\":\"invalid_request\",\"message\":\"since must be an RFC 3339 "
     "time (2026-12-06T19:30:00Z) or unix milliseconds, not \\\"yesterday\\\"\"}}"},
};

static const struct route broken_routes[] = {
    {"GET", "/api/v1/dataplanes", NULL, 200, "text/html", "<html>oops</html>"},
    {"GET", "/api/v1/backends", NULL, 502, "text/html", "<html>bad gateway</html>"},
    {"GET", "/health", NULL, HANG, NULL, NULL},
};

/* ---- the fake admin server -------------------------------------------- */

static bool fake_header(const struct fake_req *r, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    for (const char *l = r->head; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one request on <fd> (bounded in time), records it, answers it. */
static void fake_serve(struct fake *f, int fd)
{
    static char buf[65536];
    size_t len = 0, need = 0;
    char *head_end = NULL;
    uint64_t deadline = e2e_now_ms() + 2000;
    while (len < sizeof(buf) - 1 && e2e_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (head_end == NULL && (head_end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            need = (size_t)(head_end + 4 - buf) +
                   (cl && cl < head_end ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (head_end != NULL && len >= need)
            break;
    }
    if (head_end == NULL)
        return;
    struct fake_req r = {0};
    sscanf(buf, "%15s %511s", r.method, r.path);
    const char *h = strstr(buf, "\r\n") + 2;
    size_t hl = (size_t)(head_end + 2 - h);
    memcpy(r.head, h, hl < sizeof(r.head) - 1 ? hl : sizeof(r.head) - 1);
    r.body_len = len - (size_t)(head_end + 4 - buf);
    if (r.body_len > sizeof(r.body) - 1)
        r.body_len = sizeof(r.body) - 1;
    memcpy(r.body, head_end + 4, r.body_len);

    pthread_mutex_lock(&f->mu);
    if (f->nreqs < MAX_REQS)
        f->reqs[f->nreqs++] = r;
    const struct route *rt = NULL;
    char accept[128] = "";
    fake_header(&r, "Accept", accept, sizeof(accept));
    for (size_t i = 0; i < f->nroutes && rt == NULL; i++)
        if (strcmp(f->routes[i].method, r.method) == 0 && strcmp(f->routes[i].path, r.path) == 0 &&
            (f->routes[i].accept == NULL || strcmp(f->routes[i].accept, accept) == 0))
            rt = &f->routes[i];
    pthread_mutex_unlock(&f->mu);

    static const struct route missing = {
        NULL,
        NULL,
        NULL,
        404,
        "application/json",
        "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}"};
    if (rt == NULL)
        rt = &missing;
    if (rt->status == HANG) {
        struct pollfd p = {.fd = f->stop[0], .events = POLLIN};
        poll(&p, 1, 3000);
        return;
    }
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     rt->status, rt->ctype, strlen(rt->body));
    write_all(fd, resp, (size_t)n);
    write_all(fd, rt->body, strlen(rt->body));
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        struct pollfd p[3] = {
            {.fd = f->stop[0], .events = POLLIN},
            {.fd = f->ufd, .events = POLLIN},
            {.fd = f->tfd, .events = POLLIN},
        };
        if (poll(p, 3, 100) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents)
            return NULL;
        for (int i = 1; i < 3; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            int fd = accept(p[i].fd, NULL, NULL);
            if (fd < 0)
                continue;
            fake_serve(f, fd);
            close(fd);
        }
    }
}

static void fake_start(void)
{
    struct fake *f = calloc(1, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/lbctl-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/admin.sock", f->dir);
    f->routes = good_routes;
    f->nroutes = sizeof(good_routes) / sizeof(good_routes[0]);
    pthread_mutex_init(&f->mu, NULL);

    f->ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    snprintf(ua.sun_path, sizeof(ua.sun_path), "%s", f->sock);
    ck_assert_int_eq(bind(f->ufd, (struct sockaddr *)&ua, sizeof(ua)), 0);
    ck_assert_int_eq(listen(f->ufd, 16), 0);

    f->tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in ta = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t tl = sizeof(ta);
    ck_assert_int_eq(bind(f->tfd, (struct sockaddr *)&ta, sizeof(ta)), 0);
    ck_assert_int_eq(listen(f->tfd, 16), 0);
    ck_assert_int_eq(getsockname(f->tfd, (struct sockaddr *)&ta, &tl), 0);
    f->port = ntohs(ta.sin_port);

    ck_assert_int_eq(pipe2(f->stop, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&f->thr, NULL, fake_main, f), 0);
    g_fake = f;
}

static void fake_stop(void)
{
    struct fake *f = g_fake;
    if (f == NULL)
        return;
    g_fake = NULL;
    write_all(f->stop[1], "x", 1);
    pthread_join(f->thr, NULL);
    close(f->stop[0]);
    close(f->stop[1]);
    close(f->ufd);
    close(f->tfd);
    char path[256];
    unlink(f->sock);
    snprintf(path, sizeof(path), "%s/token", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/new.json", f->dir);
    unlink(path);
    rmdir(f->dir);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void fake_use(const struct route *routes, size_t n)
{
    pthread_mutex_lock(&g_fake->mu);
    g_fake->routes = routes;
    g_fake->nroutes = n;
    pthread_mutex_unlock(&g_fake->mu);
}

static size_t fake_nreqs(void)
{
    pthread_mutex_lock(&g_fake->mu);
    size_t n = g_fake->nreqs;
    pthread_mutex_unlock(&g_fake->mu);
    return n;
}

/* A copy of request <i>. */
static struct fake_req fake_req(size_t i)
{
    ck_assert_uint_lt(i, fake_nreqs());
    pthread_mutex_lock(&g_fake->mu);
    struct fake_req r = g_fake->reqs[i];
    pthread_mutex_unlock(&g_fake->mu);
    return r;
}

/* ---- running lbctl ------------------------------------------------------ */

struct run {
    int status; /* exit status, or -1 for a signal */
    char out[16384];
    char err[4096];
};

static void drain_fd(int *fd, char *buf, size_t cap, size_t *len)
{
    ssize_t n = read(*fd, buf + *len, cap - 1 - *len);
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    *len += (size_t)n;
    buf[*len] = '\0';
}

/* Runs lbctl with <args> (NULL-terminated), <env> ("K=V" strings,
 * NULL-terminated, may be NULL) added and <in> (may be NULL) on stdin. */
static void run_env(struct run *r, const char *const *env, const char *in, const char *const *args)
{
    char *argv[MAX_ARGS + 1];
    size_t n = 0;
    argv[n++] = (char *)LBCTL;
    for (; args[n - 1] != NULL && n < MAX_ARGS; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    int po[2], pe[2], pi[2];
    ck_assert_int_eq(pipe2(po, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(pe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(pi, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0) {
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        setenv("TZ", "UTC", 1);
        unsetenv("LB_ADMIN_SOCKET");
        unsetenv("LB_ADMIN_URL");
        unsetenv("LB_TOKEN_FILE");
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pi[0]);
    close(po[1]);
    close(pe[1]);
    if (in != NULL)
        write_all(pi[1], in, strlen(in));
    close(pi[1]);
    int ofd = po[0], efd = pe[0];
    size_t olen = 0, elen = 0;
    r->out[0] = r->err[0] = '\0';
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while ((ofd >= 0 || efd >= 0) && e2e_now_ms() < deadline) {
        struct pollfd p[2] = {{.fd = ofd, .events = POLLIN}, {.fd = efd, .events = POLLIN}};
        if (poll(p, 2, 50) <= 0)
            continue;
        if (p[0].revents)
            drain_fd(&ofd, r->out, sizeof(r->out), &olen);
        if (p[1].revents)
            drain_fd(&efd, r->err, sizeof(r->err), &elen);
    }
    if (ofd >= 0)
        close(ofd);
    if (efd >= 0)
        close(efd);
    int st;
    if (!e2e_wait_exit(pid, e2e_timeout_ms(), &st)) {
        kill(pid, SIGKILL);
        e2e_wait_exit(pid, e2e_timeout_ms(), NULL);
        ck_abort_msg("lbctl did not exit in time");
    }
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void run_sock(struct run *r, const char *in, const char *const *args)
{
    const char *full[MAX_ARGS];
    size_t n = 0;
    full[n++] = "--socket";
    full[n++] = g_fake->sock;
    for (size_t i = 0; args[i] != NULL && n < MAX_ARGS - 1; i++)
        full[n++] = args[i];
    full[n] = NULL;
    run_env(r, NULL, in, full);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* stderr holds exactly one line. */
static void assert_one_line(const char *s)
{
    size_t n = strlen(s);
    ck_assert_msg(n > 0 && s[n - 1] == '\n' && strchr(s, '\n') == s + n - 1,
                  "stderr is not one line: '%s'", s);
}

static void assert_ok(const struct run *r)
{
    ck_assert_msg(r->status == 0, "exit %d, stderr '%s'", r->status, r->err);
    ck_assert_str_eq(r->err, "");
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(backends_list_table)
{
    struct run r;
    run_sock(&r, NULL, ARGS("backends", "list"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "ID      URL                    WEIGHT  STATE     HEALTH          "
                            "BREAKER  CONNS            "
                            "LAST CHECK           LAST ERROR\n"
                            "demo-a  http://127.0.0.1:9001  5       active    up              open "
                            "    -                "
                            "2025-11-28 03:20:00  -\n"
                            "b       http://10.1.2.3:18080  10      draining  down (ejected)  -    "
                            "    12/50 +3 queued  "
                            "-                    connect: connection refused\n");
    struct fake_req q = fake_req(0);
    ck_assert_str_eq(q.method, "GET");
    ck_assert_str_eq(q.path, "/api/v1/backends");
    char v[64];
    ck_assert(fake_header(&q, "Accept", v, sizeof(v)));
    ck_assert_str_eq(v, "application/json");
    ck_assert(!fake_header(&q, "Authorization", v, sizeof(v)));
}
END_TEST

START_TEST(json_is_the_servers_pretty)
{
    struct run r;
    run_sock(&r, NULL, ARGS("--json", "dataplanes"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "{\n"
                            "  \"version\": 8,\n"
                            "  \"generation\": 14,\n"
                            "  \"dataplanes\": [\n"
                            "    {\n"
                            "      \"node_id\": \"host-a:1234\",\n"
                            "      \"applied_version\": 8,\n"
                            "      \"applied_generation\": 14,\n"
                            "      \"last_seen_ms\": 1764300001000,\n"
                            "      \"rejected_generation\": 0,\n"
                            "      \"rejection_reason\": null,\n"
                            "      \"in_sync\": true,\n"
                            "      \"pid\": 4242,\n"
                            "      \"started_unix_ms\": 1764299000000,\n"
                            "      \"binary_version\": \"0.2.0\"\n"
                            "    },\n"
                            "    {\n"
                            "      \"node_id\": \"host-bb:77\",\n"
                            "      \"applied_version\": 7,\n"
                            "      \"applied_generation\": 13,\n"
                            "      \"last_seen_ms\": 1764300002000,\n"
                            "      \"rejected_generation\": 14,\n"
                            "      \"rejection_reason\": \"bad cert\",\n"
                            "      \"in_sync\": false\n"
                            "    }\n"
                            "  ]\n"
                            "}\n");
    /* --json after the verb works too. */
    struct run r2;
    run_sock(&r2, NULL, ARGS("dataplanes", "--json"));
    assert_ok(&r2);
    ck_assert_str_eq(r2.out, r.out);
}
END_TEST

START_TEST(dataplanes_and_status)
{
    struct run r;
    run_sock(&r, NULL, ARGS("dataplanes"));
    assert_ok(&r);
    /* host-bb has not reported to this control plane since it started: no
     * process fields */
    ck_assert_str_eq(
        r.out, "NODE         VERSION  GENERATION  LAST SEEN            IN SYNC  BINARY  PID   "
               "STARTED              REJECTED\n"
               "host-a:1234  8        14          2025-11-28 03:20:01  yes      0.2.0   4242  "
               "2025-11-28 03:03:20  -\n"
               "host-bb:77   7        13          2025-11-28 03:20:02  no       -       -     "
               "-                    generation 14: bad cert\n");
    run_sock(&r, NULL, ARGS("status"));
    assert_ok(&r);
    char want[512];
    snprintf(want, sizeof(want),
             "control plane   ok (%s)\nactive version  3\ngeneration      12\n"
             "data planes     1 of 2 in sync\n",
             g_fake->sock);
    ck_assert_str_eq(r.out, want);
    ck_assert_str_eq(fake_req(1).path, "/health");
    ck_assert_str_eq(fake_req(2).path, "/api/v1/dataplanes");
}
END_TEST

START_TEST(backends_writes)
{
    struct run r;
    char v[128];
    run_sock(&r, NULL,
             ARGS("backends", "add", "http://10.0.0.9:80", "--weight", "3", "--id=demo-c",
                  "--state", "disabled", "--comment", "new box", "--if-match", "7"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "added backend demo-c (config version 4)\n");
    struct fake_req q = fake_req(0);
    ck_assert_str_eq(q.method, "POST");
    ck_assert_str_eq(q.path, "/api/v1/backends");
    ck_assert_str_eq(q.body, "{\"url\":\"http://10.0.0.9:80\",\"weight\":3,\"id\":\"demo-c\","
                             "\"state\":\"disabled\",\"comment\":\"new box\"}");
    ck_assert(fake_header(&q, "If-Match", v, sizeof(v)));
    ck_assert_str_eq(v, "7");
    ck_assert(fake_header(&q, "Content-Type", v, sizeof(v)));
    ck_assert_str_eq(v, "application/json");

    run_sock(&r, NULL,
             ARGS("backends", "update", "demo-c", "--weight", "2", "--state", "active",
                  "--max-connections", "100", "--max-queue", "10"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "updated backend demo-c (config version 5)\n");
    q = fake_req(1);
    ck_assert_str_eq(q.method, "PUT");
    ck_assert_str_eq(q.path, "/api/v1/backends/demo-c");
    ck_assert_str_eq(q.body, "{\"weight\":2,\"state\":\"active\",\"maxConnections\":100,"
                             "\"maxQueue\":10}");
    ck_assert(!fake_header(&q, "If-Match", v, sizeof(v)));

    run_sock(&r, NULL, ARGS("backends", "remove", "b", "--comment", "retired"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "removed backend b (config version 6)\n");
    q = fake_req(2);
    ck_assert_str_eq(q.method, "DELETE");
    ck_assert_str_eq(q.path, "/api/v1/backends/b");
    ck_assert_uint_eq(q.body_len, 0);
    ck_assert(fake_header(&q, "X-Lb-Comment", v, sizeof(v)));
    ck_assert_str_eq(v, "retired");

    run_sock(&r, NULL, ARGS("backends", "drain", "demo-a", "--comment", "kernel update"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "draining backend demo-a (config version 7)\n");
    q = fake_req(3);
    ck_assert_str_eq(q.method, "POST");
    ck_assert_str_eq(q.path, "/api/v1/backends/demo-a/drain");
    ck_assert_str_eq(q.body, "{\"comment\":\"kernel update\"}");

    /* An id that needs escaping goes out percent-encoded, as one segment. */
    run_sock(&r, NULL, ARGS("backends", "drain", "a/b c"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(fake_req(4).path, "/api/v1/backends/a%2Fb%20c/drain");

    /* Staged writes carry the canaries, the bake and the limit in the query. */
    run_sock(&r, NULL,
             ARGS("backends", "drain", "demo-a", "--canary", "dp1,dp2", "--bake", "2s",
                  "--max-error-rate", "2%"));
    ck_assert_str_eq(
        fake_req(5).path,
        "/api/v1/backends/demo-a/drain?nodes=dp1,dp2&bake_ms=2000&max_error_rate=0.020000");
    run_sock(&r, NULL, ARGS("backends", "update", "demo-c", "--weight", "4", "--canary", "50%"));
    ck_assert_str_eq(fake_req(6).path, "/api/v1/backends/demo-c?nodes=50%25");
    run_sock(&r, NULL, ARGS("backends", "remove", "b", "--max-error-rate", "1%"));
    ck_assert_int_eq(r.status, 2);
}
END_TEST

START_TEST(config_apply_yaml_and_json)
{
    struct run r;
    char v[128];
    run_sock(&r, YAML_CFG,
             ARGS("config", "apply", "-", "--comment", "more weight", "--if-match", "\"7\""));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "config version 8 created and active, 2 changes:\n"
                            "CHANGE   SUBJECT         FIELD   OLD  NEW\n"
                            "changed  backend demo-a  weight  5    3\n"
                            "added    backend demo-c  -       -    http://10.0.0.9:80\n");
    struct fake_req q = fake_req(0);
    ck_assert_str_eq(q.method, "POST");
    ck_assert_str_eq(q.path, "/api/v1/config");
    ck_assert_str_eq(q.body, YAML_CFG);
    ck_assert(fake_header(&q, "Content-Type", v, sizeof(v)));
    ck_assert_str_eq(v, "application/yaml");
    ck_assert(fake_header(&q, "X-Lb-Comment", v, sizeof(v)));
    ck_assert_str_eq(v, "more weight");
    ck_assert(fake_header(&q, "If-Match", v, sizeof(v)));
    ck_assert_str_eq(v, "\"7\"");

    char path[256];
    snprintf(path, sizeof(path), "%s/new.json", g_fake->dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("  {\"backends\": []}\n", f);
    fclose(f);
    run_sock(&r, NULL, ARGS("config", "apply", path));
    assert_ok(&r);
    q = fake_req(1);
    ck_assert_str_eq(q.body, "  {\"backends\": []}\n");
    ck_assert(fake_header(&q, "Content-Type", v, sizeof(v)));
    ck_assert_str_eq(v, "application/json");
    ck_assert(!fake_header(&q, "X-Lb-Comment", v, sizeof(v)));
}
END_TEST

START_TEST(config_reads_and_rollback)
{
    struct run r;
    char v[128];
    run_sock(&r, NULL, ARGS("config", "get"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, YAML_CFG);
    struct fake_req q = fake_req(0);
    ck_assert_str_eq(q.path, "/api/v1/config");
    ck_assert(fake_header(&q, "Accept", v, sizeof(v)));
    ck_assert_str_eq(v, "application/yaml");

    run_sock(&r, NULL, ARGS("config", "get", "--json"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "{\n  \"version\": 7,\n  \"hash\": \"ab\",\n  \"config\": {\n"
                            "    \"backends\": []\n  }\n}\n");

    run_sock(&r, NULL, ARGS("config", "get", "--version", "5"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "backends: []\n");
    ck_assert_str_eq(fake_req(2).path, "/api/v1/config/versions/5");

    run_sock(&r, NULL, ARGS("config", "history", "--limit", "2"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "VERSION  ACTIVE  CREATED              AUTHOR        HASH          "
                            "COMMENT\n"
                            "8        yes     2025-11-28 03:20:00  uid:0         0123456789ab  "
                            "more weight\n"
                            "10       no      2025-11-28 00:33:20  token:ci-bot  fedcba987654  "
                            "-\n");
    ck_assert_str_eq(fake_req(3).path, "/api/v1/config/versions?limit=2");

    run_sock(&r, NULL, ARGS("config", "diff", "5", "7"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "backend demo-a: weight 5 -> 3\n");
    ck_assert_str_eq(fake_req(4).path, "/api/v1/config/diff?from=5&to=7");

    run_sock(&r, NULL, ARGS("rollback", "5", "--comment", "undo", "--if-match", "8"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "rolled back to version 5 as config version 9\n");
    q = fake_req(5);
    ck_assert_str_eq(q.method, "POST");
    ck_assert_str_eq(q.path, "/api/v1/config/rollback");
    ck_assert_str_eq(q.body, "{\"version\":5,\"comment\":\"undo\"}");
    ck_assert(fake_header(&q, "If-Match", v, sizeof(v)));
    ck_assert_str_eq(v, "8");
}
END_TEST

START_TEST(audit_table)
{
    struct run r;
    run_sock(&r, NULL, ARGS("audit"));
    assert_ok(&r);
    ck_assert_str_eq(r.out,
                     "TIME                 WHO        ACTION          VERSION  DETAIL\n"
                     "2025-11-28 03:20:01  certwatch  tls.reload      8        tls reload: "
                     "cert.pem changed\n"
                     "2025-11-28 03:20:00  token:ops  backend.update  7 -> 8   backend demo-a: "
                     "weight 5 -> 3\n"
                     "2025-11-28 00:33:20  health     health          -        backend b down: "
                     "connect refused\n"
                     "2025-11-28 00:33:20  bootstrap  config.put      - -> 1   bootstrap\n");
    ck_assert_str_eq(fake_req(0).method, "GET");
    ck_assert_str_eq(fake_req(0).path, "/api/v1/audit?limit=100");

    /* Filters go in the query, percent-encoded; "more" says so. */
    run_sock(&r, NULL,
             ARGS("audit", "--since", "2025-11-28T03:00:00+01:00", "--who", "token:ops",
                  "--action=backend.update", "--limit", "1"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "TIME                 WHO        ACTION          VERSION  DETAIL\n"
                            "2025-11-28 03:20:00  token:ops  backend.update  7 -> 8   "
                            "backend demo-a: weight 5 -> 3\n"
                            "(older entries not shown: raise --limit, at most 1000, or narrow "
                            "with --since, --who, --action)\n");

    run_sock(&r, NULL, ARGS("audit", "--action", "nothing"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "no audit entries match\n");

    /* --json is the server's answer */
    run_sock(&r, NULL, ARGS("--json", "audit", "--action", "nothing"));
    assert_ok(&r);
    ck_assert_str_eq(r.out, "{\n  \"entries\": [],\n  \"more\": false\n}\n");

    /* The server judges the time; its message is the one line. */
    run_sock(&r, NULL, ARGS("audit", "--since", "yesterday"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.err, "lbctl: since must be an RFC 3339 time (2026-12-06T19:30:00Z) or unix "
                            "milliseconds, not \"yesterday\" (invalid_request)\n");

    /* An age is turned into unix ms by lbctl. */
    run_sock(&r, NULL, ARGS("audit", "--since", "15m"));
    ck_assert_int_eq(r.status, 1); /* no canned route: the fake answers 404 */
    const char *path = fake_req(fake_nreqs() - 1).path;
    ck_assert_msg(strncmp(path, "/api/v1/audit?limit=100&since=", 30) == 0, "%s", path);
    long long since = strtoll(path + 30, NULL, 10);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    ck_assert_msg(since > now - 15 * 60000 - 60000 && since <= now - 15 * 60000 + 1000,
                  "since %lld, now %lld", since, now);
}
END_TEST

START_TEST(api_errors_exit_1)
{
    struct run r;
    run_sock(&r, NULL, ARGS("backends", "update", "ghost", "--weight", "1"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.out, "");
    ck_assert_str_eq(r.err, "lbctl: no backend ghost (not_found)\n");

    run_sock(&r, NULL, ARGS("backends", "remove", "demo-a", "--if-match", "5"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.err, "lbctl: active version is 7, not 5 (conflict)\n");

    /* --json does not turn an error into output. */
    run_sock(&r, NULL, ARGS("--json", "backends", "update", "ghost", "--url", "http://x"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.out, "");
    assert_one_line(r.err);
}
END_TEST

START_TEST(not_json_exit_1)
{
    struct run r;
    fake_use(broken_routes, sizeof(broken_routes) / sizeof(broken_routes[0]));
    run_sock(&r, NULL, ARGS("dataplanes"));
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.out, "");
    assert_one_line(r.err);
    ck_assert_msg(strstr(r.err, "not JSON") && strstr(r.err, "text/html"), "%s", r.err);

    run_sock(&r, NULL, ARGS("backends", "list"));
    ck_assert_int_eq(r.status, 1);
    assert_one_line(r.err);
    ck_assert_msg(strstr(r.err, "HTTP 502"), "%s", r.err);
}
END_TEST

START_TEST(unreachable_exit_3)
{
    struct run r;
    char sock[256], want[512];
    snprintf(sock, sizeof(sock), "%s/nobody.sock", g_fake->dir);
    run_env(&r, NULL, NULL, ARGS("--socket", sock, "backends", "list"));
    ck_assert_int_eq(r.status, 3);
    ck_assert_str_eq(r.out, "");
    snprintf(want, sizeof(want),
             "lbctl: cannot reach the control plane at %s: it is not running or is restarting "
             "(No such file or directory)\n",
             sock);
    ck_assert_str_eq(r.err, want);

    unsigned port = e2e_free_port();
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    run_env(&r, NULL, NULL, ARGS("--url", url, "status"));
    ck_assert_int_eq(r.status, 3);
    snprintf(want, sizeof(want),
             "lbctl: cannot reach the control plane at %s: it is not running or is restarting "
             "(Connection refused)\n",
             url);
    ck_assert_str_eq(r.err, want);

    /* A server that accepts and never answers: the timeout, then exit 3. */
    fake_use(broken_routes, sizeof(broken_routes) / sizeof(broken_routes[0]));
    uint64_t t0 = e2e_now_ms();
    run_sock(&r, NULL, ARGS("--timeout", "0.3", "status"));
    ck_assert_int_eq(r.status, 3);
    ck_assert_uint_lt(e2e_now_ms() - t0, 2500);
    snprintf(want, sizeof(want),
             "lbctl: cannot reach the control plane at %s: no answer within 300 ms\n",
             g_fake->sock);
    ck_assert_str_eq(r.err, want);
}
END_TEST

START_TEST(tcp_with_token_and_env)
{
    struct run r;
    char tok[256], url[64], v[128];
    snprintf(tok, sizeof(tok), "%s/token", g_fake->dir);
    FILE *f = fopen(tok, "w");
    ck_assert_ptr_nonnull(f);
    fputs("s3cret-token \nsecond line\n", f);
    fclose(f);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", g_fake->port);
    run_env(&r, NULL, NULL, ARGS("--url", url, "--token-file", tok, "backends", "list"));
    assert_ok(&r);
    struct fake_req q = fake_req(0);
    ck_assert_str_eq(q.path, "/api/v1/backends");
    ck_assert(fake_header(&q, "Authorization", v, sizeof(v)));
    ck_assert_str_eq(v, "Bearer s3cret-token");

    /* $LB_ADMIN_URL and $LB_TOKEN_FILE. */
    char eu[128], et[300];
    snprintf(eu, sizeof(eu), "LB_ADMIN_URL=%s", url);
    snprintf(et, sizeof(et), "LB_TOKEN_FILE=%s", tok);
    run_env(&r, (const char *const[]){eu, et, NULL}, NULL, ARGS("config", "diff", "5", "7"));
    assert_ok(&r);
    q = fake_req(1);
    ck_assert(fake_header(&q, "Authorization", v, sizeof(v)));
    ck_assert_str_eq(v, "Bearer s3cret-token");

    /* $LB_ADMIN_SOCKET: no token over the socket. */
    char es[200];
    snprintf(es, sizeof(es), "LB_ADMIN_SOCKET=%s", g_fake->sock);
    run_env(&r, (const char *const[]){es, NULL}, NULL, ARGS("backends", "list"));
    assert_ok(&r);
    q = fake_req(2);
    ck_assert(!fake_header(&q, "Authorization", v, sizeof(v)));
}
END_TEST

static const char *const usage_cases[][8] = {
    {NULL},
    {"frobnicate", NULL},
    {"--bogus", "status", NULL},
    {"backends", NULL},
    {"backends", "explode", NULL},
    {"backends", "add", NULL},
    {"backends", "add", "http://x", "--weight", "heavy", NULL},
    {"backends", "add", "http://x", "--weight", NULL},
    {"backends", "add", "http://x", "--state", "sleepy", NULL},
    {"backends", "add", "http://x", "--color", "red", NULL},
    {"backends", "add", "http://x", "--if-match", "v7", NULL},
    {"backends", "add", "http://x", "--comment", "two\nlines", NULL},
    {"backends", "add", "http://x", "--id", "caf\xe9", NULL},
    {"backends", "update", "demo-a", NULL},
    {"backends", "update", "demo-a", "--max-connections", "many", NULL},
    {"backends", "add", "http://x", "--max-queue", "-1", NULL},
    {"backends", "drain", "demo-a", "--comment", "\xff", NULL},
    {"backends", "remove", NULL},
    {"backends", "remove", "a", "b", NULL},
    {"config", "diff", "5", NULL},
    {"config", "diff", "x", "7", NULL},
    {"config", "history", "--limit", "0", NULL},
    {"config", "apply", NULL},
    {"config", "apply", "/nonexistent/cfg.yaml", NULL},
    {"config", "get", "--yaml", "--json", NULL},
    {"rollback", NULL},
    {"rollback", "five", NULL},
    {"rollback", "5", "--comment", "\xc3", NULL},
    {"--timeout", "-1", "status", NULL},
    {"status", "extra", NULL},
    {"audit", "--limit", "0", NULL},
    {"audit", "--limit", "1001", NULL},
    {"audit", "--who", "", NULL},
    {"audit", "--since", NULL},
    {"audit", "extra", NULL},
};

START_TEST(usage_errors_exit_2)
{
    const char *const *c = usage_cases[_i];
    struct run r;
    run_sock(&r, NULL, c[0] ? c : ARGS("--json"));
    ck_assert_msg(r.status == 2, "case %d: exit %d, stderr '%s'", _i, r.status, r.err);
    ck_assert_str_eq(r.out, "");
    assert_one_line(r.err);
    ck_assert_msg(strncmp(r.err, "lbctl: ", 7) == 0 && strstr(r.err, "--help"), "case %d: %s", _i,
                  r.err);
    ck_assert_uint_eq(fake_nreqs(), 0);
}
END_TEST

static const char *const help_cases[][4] = {
    {"--help", NULL},
    {"status", "--help", NULL},
    {"dataplanes", "--help", NULL},
    {"backends", "--help", NULL},
    {"backends", "list", "--help", NULL},
    {"backends", "add", "--help", NULL},
    {"backends", "update", "--help", NULL},
    {"backends", "remove", "--help", NULL},
    {"backends", "drain", "--help", NULL},
    {"config", "--help", NULL},
    {"config", "get", "--help", NULL},
    {"config", "apply", "--help", NULL},
    {"config", "history", "--help", NULL},
    {"config", "diff", "--help", NULL},
    {"rollback", "--help", NULL},
    {"audit", "--help", NULL},
};

START_TEST(help_exits_0)
{
    struct run r;
    run_sock(&r, NULL, help_cases[_i]);
    assert_ok(&r);
    ck_assert_msg(strncmp(r.out, "Usage: lbctl", 12) == 0, "case %d: %s", _i, r.out);
    ck_assert_uint_eq(fake_nreqs(), 0);

    if (_i == 0) {
        run_env(&r, NULL, NULL, ARGS("--version"));
        assert_ok(&r);
        ck_assert_str_eq(r.out, "lbctl " LB_VERSION "\n");
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lbctl_cli");
    TCase *tc = e2e_tcase("lbctl");
    tcase_add_checked_fixture(tc, fake_start, fake_stop);
    tcase_add_test(tc, backends_list_table);
    tcase_add_test(tc, json_is_the_servers_pretty);
    tcase_add_test(tc, dataplanes_and_status);
    tcase_add_test(tc, backends_writes);
    tcase_add_test(tc, config_apply_yaml_and_json);
    tcase_add_test(tc, config_reads_and_rollback);
    tcase_add_test(tc, audit_table);
    tcase_add_test(tc, api_errors_exit_1);
    tcase_add_test(tc, not_json_exit_1);
    tcase_add_test(tc, unreachable_exit_3);
    tcase_add_test(tc, tcp_with_token_and_env);
    tcase_add_loop_test(tc, usage_errors_exit_2, 0,
                        (int)(sizeof(usage_cases) / sizeof(usage_cases[0])));
    tcase_add_loop_test(tc, help_exits_0, 0, (int)(sizeof(help_cases) / sizeof(help_cases[0])));
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
