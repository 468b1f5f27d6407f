/* tests/unit/controlplane/test_admin.c: the admin API over a unix socket and
 * TCP 127.0.0.1 (free port, bearer tokens, plain HTTP with insecure_http),
 * driven with raw HTTP. The core, the publisher and the server run on a
 * libev loop in a second thread; the test talks to them through blocking
 * sockets with timeouts. */
#include "admin.h"
#include "cp.h"
#include "lb_endpoints.h"
#include "lb_err.h"
#include "lb_log.h"

#include <arpa/inet.h>
#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RW_TOKEN "rw-secret-0123456789"
#define RO_TOKEN "ro-secret-9876543210"

static char tmpdir[64];
static char sock_path[100];
static char tokens_path[320];
static char db[320];
static char base[320];
static char boot[320];

static struct ev_loop *loop;
static struct cp *core;
static struct admin *adm;
static ev_async stop_async;
static pthread_t loop_thread;
static uint16_t tcp_port;

static const char *const boot_yaml = "frontends:\n"
                                     "  - {name: web, address: 127.0.0.1, port: 8080}\n"
                                     "backends:\n"
                                     "  - {id: a, url: \"http://127.0.0.1:9001\", weight: 5}\n"
                                     "  - {id: b, url: \"http://127.0.0.1:9002\", weight: 3}\n";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(content, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static void on_stop(struct ev_loop *l, ev_async *w, int revents)
{
    ev_break(l, EVBREAK_ALL);
}

static void *run_loop(void *arg)
{
    ev_run(loop, 0);
    return NULL;
}

static void paths(void)
{
    lb_log_setup("test_admin", open("/dev/null", O_WRONLY | O_CLOEXEC), LB_LOG_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-admin-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(sock_path, sizeof(sock_path), "%s/admin.sock", tmpdir);
    snprintf(tokens_path, sizeof(tokens_path), "%s/tokens", tmpdir);
    snprintf(db, sizeof(db), "%s/lb.db", tmpdir);
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    snprintf(boot, sizeof(boot), "%s/config.yaml", tmpdir);
    write_file(boot, boot_yaml, 0600);
    write_file(tokens_path,
               "# name token mode\n"
               "ops " RW_TOKEN " rw\n"
               "\n"
               "viewer " RO_TOKEN " ro   # read only\n",
               0600);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    struct cp_config cc = {.db_path = db, .bootstrap = boot, .control_base = base};
    struct lb_err err = {0};
    core = cp_new(loop, &cc, &err);
    ck_assert_msg(core != NULL, "cp_new: %s", err.msg);
}

static void setup(void)
{
    paths();
    struct admin_config ac = {
        .unix_path = sock_path,
        .tcp_listen = "127.0.0.1:0",
        .tokens_file = tokens_path,
        .insecure_http = true, /* plain HTTP on loopback; TLS is test_admin_tls.c's */
    };
    struct lb_err err = {0};
    adm = admin_new(loop, core, &ac, &err);
    ck_assert_msg(adm != NULL, "admin_new: %s", err.msg);
    tcp_port = admin_tcp_port(adm);
    ck_assert_uint_gt(tcp_port, 0);
    ev_async_init(&stop_async, on_stop);
    ev_async_start(loop, &stop_async);
    ck_assert_int_eq(pthread_create(&loop_thread, NULL, run_loop, NULL), 0);
}

static void teardown(void)
{
    ev_async_send(loop, &stop_async);
    pthread_join(loop_thread, NULL);
    admin_free(adm);
    cp_free(core);
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Setup without starting a server: for admin_new() refusals. */
static void bare_setup(void)
{
    paths();
}

static void bare_teardown(void)
{
    cp_free(core);
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void set_timeouts(int fd)
{
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int connect_unix(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    set_timeouts(fd);
    return fd;
}

static int connect_tcp(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(tcp_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    set_timeouts(fd);
    return fd;
}

static void send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        ck_assert_int_gt(n, 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until EOF (bounded by the socket timeouts and 1 MiB). */
static char *read_all(int fd, size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    for (int i = 0; i < 10000 && n < cap; i++) {
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

struct resp {
    int status;
    char *raw;        /* whole response */
    const char *body; /* into raw */
    json_t *json;     /* parsed body, or NULL */
};

static void resp_free(struct resp *r)
{
    free(r->raw);
    json_decref(r->json);
}

/* One request on a fresh connection ("Connection: close"). <via_tcp> with
 * <token> (NULL = no Authorization). <headers> are extra lines. */
static struct resp request(bool via_tcp, const char *token, const char *method, const char *path,
                           const char *headers, const char *body)
{
    int fd = via_tcp ? connect_tcp() : connect_unix();
    size_t blen = body ? strlen(body) : 0;
    char *head = NULL;
    char auth[128] = "";
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    ck_assert_int_gt(asprintf(&head,
                              "%s %s HTTP/1.1\r\nHost: lb\r\n%s%sContent-Length: %zu\r\n"
                              "Connection: close\r\n\r\n",
                              method, path, auth, headers ? headers : "", blen),
                     0);
    send_all(fd, head, strlen(head));
    if (blen)
        send_all(fd, body, blen);
    free(head);
    struct resp r = {0};
    size_t len;
    r.raw = read_all(fd, &len);
    close(fd);
    ck_assert_msg(sscanf(r.raw, "HTTP/1.1 %d", &r.status) == 1, "no status in \"%s\"", r.raw);
    const char *sep = strstr(r.raw, "\r\n\r\n");
    ck_assert_ptr_nonnull(sep);
    r.body = sep + 4;
    const char *cl = strcasestr(r.raw, "Content-Length: ");
    ck_assert_msg(cl != NULL && cl < sep, "no Content-Length");
    ck_assert_uint_eq(strtoul(cl + 16, NULL, 10), strlen(r.body));
    r.json = json_loads(r.body, 0, NULL);
    return r;
}

static struct resp req_unix(const char *method, const char *path, const char *headers,
                            const char *body)
{
    return request(false, NULL, method, path, headers, body);
}

static json_int_t jint(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static const char *jstr(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

static void expect_error(struct resp *r, int status, const char *code)
{
    ck_assert_msg(r->status == status, "status %d, want %d: %s", r->status, status, r->body);
    ck_assert_ptr_nonnull(r->json);
    json_t *e = json_object_get(r->json, "error");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(jstr(e, "code"), code);
    ck_assert_uint_gt(strlen(jstr(e, "message")), 0);
}

START_TEST(health_and_metrics)
{
    struct resp r = req_unix("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "status"), "ok");
    ck_assert_int_eq(jint(r.json, "active_version"), 1);
    ck_assert_int_eq(jint(r.json, "generation"), 1);
    resp_free(&r);

    r = req_unix("GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.raw, "Content-Type: text/plain; version=0.0.4"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nlb_cp_config_version 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nlb_cp_snapshot_generation 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "\nlb_cp_config_versions_total 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "lb_cp_publishes_total "));
    ck_assert_ptr_nonnull(strstr(r.body, "\nlb_cp_dataplanes 0\n"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "lb_cp_api_requests_total{method=\"GET\",code=\"200\"} 1"));
    resp_free(&r);
}
END_TEST

START_TEST(backend_routes)
{
    struct resp r = req_unix("GET", "/api/v1/backends", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 1);
    json_t *list = json_object_get(r.json, "backends");
    ck_assert_uint_eq(json_array_size(list), 2);
    json_t *a = json_array_get(list, 0);
    ck_assert_str_eq(jstr(a, "id"), "a");
    ck_assert_str_eq(jstr(a, "url"), "http://127.0.0.1:9001");
    ck_assert_int_eq(jint(a, "weight"), 5);
    ck_assert_str_eq(jstr(a, "state"), "active");
    ck_assert_str_eq(jstr(a, "health"), "unknown");
    ck_assert(json_is_null(json_object_get(a, "last_check_ms")));
    ck_assert(json_is_null(json_object_get(a, "last_error")));
    resp_free(&r);

    r = req_unix("POST", "/api/v1/backends", "Content-Type: application/json\r\n",
                 "{\"url\": \"http://127.0.0.1:9003\", \"weight\": 2, \"id\": \"c\", "
                 "\"comment\": \"more capacity\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "id"), "c");
    ck_assert_int_eq(jint(json_object_get(r.json, "backend"), "weight"), 2);
    resp_free(&r);

    r = req_unix("GET", "/api/v1/backends/c", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "url"), "http://127.0.0.1:9003");
    resp_free(&r);

    r = req_unix("PUT", "/api/v1/backends/c", "If-Match: \"2\"\r\n",
                 "{\"weight\": 9, \"state\": \"disabled\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 3);
    ck_assert_int_eq(jint(json_object_get(r.json, "backend"), "weight"), 9);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "state"), "disabled");
    resp_free(&r);

    r = req_unix("POST", "/api/v1/backends/a/drain", "X-Lb-Comment: maintenance\r\n", NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "state"), "draining");
    resp_free(&r);

    r = req_unix("DELETE", "/api/v1/backends/c", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 5);
    resp_free(&r);

    r = req_unix("GET", "/api/v1/config/versions?limit=2", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "active"), 5);
    json_t *vs = json_object_get(r.json, "versions");
    ck_assert_uint_eq(json_array_size(vs), 2);
    json_t *v5 = json_array_get(vs, 0);
    ck_assert_int_eq(jint(v5, "version"), 5);
    ck_assert(json_is_true(json_object_get(v5, "active")));
    char author[32];
    snprintf(author, sizeof(author), "uid:%ld", (long)getuid());
    ck_assert_str_eq(jstr(v5, "author"), author);
    ck_assert_str_eq(jstr(json_array_get(vs, 1), "comment"), "maintenance");
    ck_assert(json_is_false(json_object_get(json_array_get(vs, 1), "active")));
    resp_free(&r);

    r = req_unix("GET", "/api/v1/config/versions/2", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "comment"), "more capacity");
    ck_assert_uint_eq(strlen(jstr(r.json, "hash")), 64);
    ck_assert_ptr_nonnull(strstr(jstr(r.json, "content"), "http://127.0.0.1:9003"));
    resp_free(&r);
}
END_TEST

/* A self-signed CA certificate at <tmpdir>/ca.pem, made with the openssl CLI. */
static void make_ca(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout ca.key -out ca.pem -days 30 -subj /CN=Test-CA >/dev/null 2>&1",
             tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static json_int_t active_version(void)
{
    struct resp r = req_unix("GET", "/health", NULL, NULL);
    json_int_t v = jint(r.json, "active_version");
    resp_free(&r);
    return v;
}

/* Expects a 400 invalid_config whose message holds <part>. */
static void expect_config_error(struct resp *r, const char *part)
{
    expect_error(r, 400, "invalid_config");
    const char *msg = jstr(json_object_get(r->json, "error"), "message");
    ck_assert_msg(strstr(msg, part) != NULL, "\"%s\" not in \"%s\"", part, msg);
}

START_TEST(backend_tls_fields)
{
    make_ca();
    /* caFile is relative to the config's directory (the bootstrap file's). */
    struct resp r = req_unix("POST", "/api/v1/backends", NULL,
                             "{\"url\": \"https://127.0.0.1:9443\", \"id\": \"s\", "
                             "\"caFile\": \"ca.pem\", \"sni\": \"backend.test\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    json_t *b = json_object_get(r.json, "backend");
    ck_assert_str_eq(jstr(b, "caFile"), "ca.pem");
    ck_assert_str_eq(jstr(b, "sni"), "backend.test");
    resp_free(&r);
    /* its CA's expiry is a metric */
    r = req_unix("GET", "/metrics", NULL, NULL);
    ck_assert_msg(
        strstr(r.body, "lb_cp_tls_backend_ca_not_after_seconds{backend=\"s\",file=\"ca.pem\"} ") !=
            NULL,
        "%s", r.body);
    resp_free(&r);

    /* http:// backends show neither key; https:// ones show both, "" = default. */
    r = req_unix("POST", "/api/v1/backends", NULL, "{\"url\": \"https://localhost:9444\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "caFile"), "");
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "sni"), "");
    resp_free(&r);
    r = req_unix("GET", "/api/v1/backends/a", NULL, NULL);
    ck_assert_ptr_null(json_object_get(json_object_get(r.json, "backend"), "caFile"));
    ck_assert_ptr_null(json_object_get(json_object_get(r.json, "backend"), "sni"));
    resp_free(&r);

    /* Refusals name the field and change nothing. */
    ck_assert_int_eq(active_version(), 3);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"http://127.0.0.1:9010\", \"sni\": \"x.test\"}");
    expect_config_error(&r, "sni applies only to https:// backends");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"https://127.0.0.1:9011\", \"caFile\": \"/nonexistent/ca.pem\"}");
    expect_config_error(&r, "].caFile: cannot read /nonexistent/ca.pem: ");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"https://127.0.0.1:9012\", \"sni\": \"bad name\"}");
    expect_config_error(&r, "sni: \"bad name\" is not a server name");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"https://127.0.0.1:9013\", \"caFile\": 5}");
    expect_error(&r, 400, "invalid_request");
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "message"), "caFile must be a string");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/s", NULL, "{\"sni\": null}");
    expect_error(&r, 400, "invalid_request");
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "message"), "sni must be a string");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"caFile\": \"ca.pem\"}");
    expect_config_error(&r, "caFile applies only to https:// backends");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/s", NULL, "{\"url\": \"http://127.0.0.1:9443\"}");
    expect_config_error(&r, "caFile applies only to https:// backends");
    resp_free(&r);
    ck_assert_int_eq(active_version(), 3);

    /* sni alone; caFile stays. */
    r = req_unix("PUT", "/api/v1/backends/s", NULL, "{\"sni\": \"other.test\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    b = json_object_get(r.json, "backend");
    ck_assert_str_eq(jstr(b, "sni"), "other.test");
    ck_assert_str_eq(jstr(b, "caFile"), "ca.pem");
    resp_free(&r);

    /* "" clears. */
    r = req_unix("PUT", "/api/v1/backends/s", NULL, "{\"caFile\": \"\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    b = json_object_get(r.json, "backend");
    ck_assert_str_eq(jstr(b, "caFile"), "");
    ck_assert_str_eq(jstr(b, "sni"), "other.test");
    resp_free(&r);

    /* To http:// in one request that also clears them. */
    r = req_unix("PUT", "/api/v1/backends/s", NULL,
                 "{\"url\": \"http://127.0.0.1:9443\", \"sni\": \"\", \"caFile\": \"\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 6);
    b = json_object_get(r.json, "backend");
    ck_assert_str_eq(jstr(b, "url"), "http://127.0.0.1:9443");
    ck_assert_ptr_null(json_object_get(b, "caFile"));
    ck_assert_ptr_null(json_object_get(b, "sni"));
    resp_free(&r);
}
END_TEST

START_TEST(config_routes)
{
    struct resp r = req_unix("GET", "/api/v1/config", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 1);
    ck_assert_uint_eq(strlen(jstr(r.json, "hash")), 64);
    json_t *cfg = json_object_get(r.json, "config");
    ck_assert_uint_eq(json_array_size(json_object_get(cfg, "backends")), 2);
    resp_free(&r);

    r = req_unix("GET", "/api/v1/config", "Accept: application/yaml\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.raw, "Content-Type: application/yaml"));
    ck_assert_ptr_nonnull(strstr(r.body, "backends:"));
    char *yaml = strdup(r.body);
    resp_free(&r);

    /* The canonical export applied again changes nothing. */
    r = req_unix("POST", "/api/v1/config", "Content-Type: application/yaml\r\n", yaml);
    free(yaml);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 1);
    ck_assert(json_is_true(json_object_get(r.json, "unchanged")));
    ck_assert_uint_eq(json_array_size(json_object_get(r.json, "changes")), 0);
    resp_free(&r);

    char *changed = strdup(boot_yaml);
    *strstr(changed, "weight: 5") = '\0';
    char *body = NULL;
    ck_assert_int_gt(asprintf(&body, "%sweight: 4%s", changed,
                              strstr(boot_yaml, "weight: 5") + strlen("weight: 5")),
                     0);
    free(changed);
    r = req_unix("POST", "/api/v1/config", "Content-Type: text/yaml\r\nX-Lb-Comment: lighter a\r\n",
                 body);
    free(body);
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    json_t *ch = json_object_get(r.json, "changes");
    ck_assert_uint_eq(json_array_size(ch), 1);
    ck_assert_str_eq(jstr(json_array_get(ch, 0), "kind"), "changed");
    ck_assert_str_eq(jstr(json_array_get(ch, 0), "old"), "5");
    ck_assert_str_eq(jstr(json_array_get(ch, 0), "new"), "4");
    resp_free(&r);

    r = req_unix("GET", "/api/v1/config/diff?from=1&to=2", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "from"), 1);
    ck_assert_int_eq(jint(r.json, "to"), 2);
    ck_assert_str_eq(jstr(r.json, "text"), "backend a: weight 5 -> 4\n");
    resp_free(&r);

    r = req_unix("POST", "/api/v1/config/rollback", NULL,
                 "{\"version\": 1, \"comment\": \"undo\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 3);
    ck_assert_int_eq(jint(r.json, "rolled_back_to"), 1);
    resp_free(&r);

    r = req_unix("GET", "/api/v1/backends/a", NULL, NULL);
    ck_assert_int_eq(jint(json_object_get(r.json, "backend"), "weight"), 5);
    resp_free(&r);

    /* JSON apply. */
    r = req_unix("POST", "/api/v1/config", "Content-Type: application/json\r\n",
                 "{\"frontends\": [{\"port\": 8081}], \"backends\": [{\"id\": \"z\", "
                 "\"url\": \"http://127.0.0.1:9100\"}]}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    resp_free(&r);

    r = req_unix("GET", "/api/v1/dataplanes", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    ck_assert_int_eq(jint(r.json, "generation"), 4);
    ck_assert_uint_eq(json_array_size(json_object_get(r.json, "dataplanes")), 0);
    resp_free(&r);
}
END_TEST

/* LB_TEST_TIMEOUT_MS from the environment, or 10000: the bound of every wait. */
static uint64_t timeout_ms(void)
{
    const char *v = getenv("LB_TEST_TIMEOUT_MS");
    unsigned long long n = v != NULL ? strtoull(v, NULL, 10) : 0;
    return n > 0 ? n : 10000;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The pause between two polls of the API, whose loop runs in another thread:
 * it spaces the polls, it is not a wait by itself. */
static void poll_pause(void)
{
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

START_TEST(dataplanes_listed)
{
    char pub[LB_ENDPOINT_MAX], rep_ep[LB_ENDPOINT_MAX], pull[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split(base, pub, rep_ep, pull, NULL), LB_OK);
    int sock = nn_socket(AF_SP, NN_PUSH);
    ck_assert_int_ge(sock, 0);
    ck_assert_int_ge(nn_connect(sock, pull), 0);
    int timeout = 2000;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof(timeout));
    Lb__V1__Report rep = LB__V1__REPORT__INIT;
    rep.node_id = "host-a:1234";
    rep.applied_version = 1;
    rep.applied_generation = 1;
    rep.rejection_reason = "";
    uint8_t buf[128];
    size_t blen = lb__v1__report__pack(&rep, buf);
    ck_assert_int_eq(nn_send(sock, buf, blen, 0), (int)blen);
    struct resp r = {0};
    json_t *d = NULL;
    /* until the report was recorded */
    for (uint64_t end = now_ms() + timeout_ms(); d == NULL && now_ms() < end;) {
        resp_free(&r);
        r = req_unix("GET", "/api/v1/dataplanes", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        d = json_array_get(json_object_get(r.json, "dataplanes"), 0);
        if (d == NULL)
            poll_pause();
    }
    nn_close(sock);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(jstr(d, "node_id"), "host-a:1234");
    ck_assert_int_eq(jint(d, "applied_generation"), 1);
    ck_assert(json_is_true(json_object_get(d, "in_sync")));
    ck_assert(json_is_null(json_object_get(d, "rejection_reason")));
    resp_free(&r);
    r = req_unix("GET", "/metrics", NULL, NULL);
    ck_assert_ptr_nonnull(
        strstr(r.body, "lb_cp_dataplane_lag_generations{node=\"host-a:1234\"} 0"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "lb_cp_dataplane_last_seen_seconds{node=\"host-a:1234\"}"));
    resp_free(&r);
}
END_TEST

/* sendProxy through the API: shown, set on add and update, checked, and
 * in the config's export. */
START_TEST(backend_send_proxy)
{
    struct resp r = req_unix("GET", "/api/v1/backends/a", NULL, NULL);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "sendProxy"), "off");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"sendProxy\": \"v2\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "sendProxy"), "v2");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"http://127.0.0.1:9004\", \"id\": \"d\", \"sendProxy\": \"v1\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    ck_assert_str_eq(jstr(json_object_get(r.json, "backend"), "sendProxy"), "v1");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"sendProxy\": \"v3\"}");
    expect_error(&r, 400, "invalid_config");
    ck_assert_ptr_nonnull(strstr(r.body, "sendProxy must be"));
    resp_free(&r);
    r = req_unix("GET", "/api/v1/config", "Accept: application/yaml\r\n", NULL);
    ck_assert_msg(strstr(r.body, "sendProxy: \"v2\"") != NULL, "%s", r.body);
    resp_free(&r);
}
END_TEST

/* The report fields reach the backend JSON and /metrics; the limits are
 * set through the API with the config's ranges. */
START_TEST(backend_limits_and_ejection)
{
    struct resp r =
        req_unix("PUT", "/api/v1/backends/a", NULL, "{\"maxConnections\": 50, \"maxQueue\": 20}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    json_t *b = json_object_get(r.json, "backend");
    ck_assert_int_eq(jint(b, "maxConnections"), 50);
    ck_assert_int_eq(jint(b, "maxQueue"), 20);
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"http://127.0.0.1:9003\", \"id\": \"c\", \"maxConnections\": 7}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    b = json_object_get(r.json, "backend");
    ck_assert_int_eq(jint(b, "maxConnections"), 7);
    ck_assert_int_eq(jint(b, "maxQueue"), 1024);
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"maxQueue\": 0}");
    expect_error(&r, 400, "invalid_config");
    ck_assert_ptr_nonnull(strstr(r.body, "maxQueue: 0 is out of range (1..100000)"));
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"maxConnections\": 1000001}");
    expect_error(&r, 400, "invalid_config");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"maxConnections\": \"5\"}");
    expect_error(&r, 400, "invalid_request");
    resp_free(&r);

    char pub[LB_ENDPOINT_MAX], rep_ep[LB_ENDPOINT_MAX], pull[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split(base, pub, rep_ep, pull, NULL), LB_OK);
    int sock = nn_socket(AF_SP, NN_PUSH);
    ck_assert_int_ge(sock, 0);
    ck_assert_int_ge(nn_connect(sock, pull), 0);
    int timeout = 2000;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof(timeout));
    Lb__V1__BackendReport ba = LB__V1__BACKEND_REPORT__INIT;
    Lb__V1__BackendReport *brs[1] = {&ba};
    ba.id = "a";
    ba.ejected = true;
    ba.ejections = 2;
    ba.connections = 50;
    ba.queued = 4;
    ba.queue_timeouts = 3;
    Lb__V1__Report rep = LB__V1__REPORT__INIT;
    rep.node_id = "host-a:1234";
    rep.applied_version = 1;
    rep.applied_generation = 1;
    rep.rejection_reason = "";
    rep.backends = brs;
    rep.n_backends = 1;
    uint8_t buf[256];
    size_t blen = lb__v1__report__pack(&rep, buf);
    ck_assert_int_eq(nn_send(sock, buf, blen, 0), (int)blen);
    b = NULL;
    r = (struct resp){0};
    /* until the report was recorded and handed the backend over */
    for (uint64_t end = now_ms() + timeout_ms(); now_ms() < end;) {
        resp_free(&r);
        r = req_unix("GET", "/api/v1/backends/a", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        b = json_object_get(r.json, "backend");
        if (json_is_true(json_object_get(b, "ejected")) && strcmp(jstr(b, "health"), "down") == 0)
            break;
        poll_pause();
    }
    nn_close(sock);
    ck_assert(json_is_true(json_object_get(b, "ejected")));
    ck_assert_str_eq(jstr(b, "health"), "down"); /* handed to the health checks */
    ck_assert_str_eq(jstr(b, "last_error"), "ejected by data plane host-a:1234");
    ck_assert_int_eq(jint(b, "ejections"), 2);
    ck_assert_int_eq(jint(b, "connections"), 50);
    ck_assert_int_eq(jint(b, "queued"), 4);
    ck_assert_int_eq(jint(b, "queueTimeouts"), 3);
    resp_free(&r);
    r = req_unix("GET", "/api/v1/backends/c", NULL, NULL);
    b = json_object_get(r.json, "backend");
    ck_assert(json_is_false(json_object_get(b, "ejected")));
    ck_assert_int_eq(jint(b, "ejections"), 0);
    resp_free(&r);
    r = req_unix("GET", "/metrics", NULL, NULL);
    ck_assert_ptr_nonnull(strstr(r.body, "lb_cp_backend_ejected{backend=\"a\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "lb_cp_backend_ejected{backend=\"b\"} 0\n"));
    resp_free(&r);
}
END_TEST

START_TEST(tcp_tokens)
{
    /* liveness needs no token; everything else does */
    struct resp r = request(true, NULL, "GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "status"), "ok");
    resp_free(&r);
    r = request(true, NULL, "POST", "/health", NULL, "{}");
    expect_error(&r, 401, "unauthorized");
    resp_free(&r);
    r = request(true, NULL, "GET", "/metrics", NULL, NULL);
    expect_error(&r, 401, "unauthorized");
    resp_free(&r);
    r = request(true, "not-a-token", "GET", "/api/v1/backends", NULL, NULL);
    expect_error(&r, 401, "unauthorized");
    resp_free(&r);
    r = request(true, RO_TOKEN, "GET", "/api/v1/backends", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    r = request(true, RO_TOKEN, "PUT", "/api/v1/backends/a", NULL, "{\"weight\": 2}");
    expect_error(&r, 403, "forbidden");
    resp_free(&r);
    r = request(true, RW_TOKEN, "PUT", "/api/v1/backends/a", NULL, "{\"weight\": 2}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    r = request(true, RW_TOKEN, "GET", "/api/v1/config/versions", NULL, NULL);
    ck_assert_str_eq(jstr(json_array_get(json_object_get(r.json, "versions"), 0), "author"),
                     "token:ops");
    resp_free(&r);
    /* HEAD is GET's head without its body: a read, for ro tokens and probes too */
    static const char *const heads[][2] = {{"/api/v1/backends", RO_TOKEN}, {"/health", NULL}};
    for (size_t i = 0; i < 2; i++) {
        int fd = connect_tcp();
        char req[256], auth[96] = "";
        if (heads[i][1] != NULL)
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", heads[i][1]);
        snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: lb\r\n%sConnection: close\r\n\r\n",
                 heads[i][0], auth);
        send_all(fd, req, strlen(req));
        size_t len;
        char *raw = read_all(fd, &len);
        close(fd);
        ck_assert_msg(strncmp(raw, "HTTP/1.1 200 ", 13) == 0, "%s", raw);
        const char *sep = strstr(raw, "\r\n\r\n");
        const char *cl = strcasestr(raw, "Content-Length: ");
        ck_assert_msg(sep != NULL && sep[4] == '\0', "a body after HEAD: %s", raw);
        ck_assert_msg(cl != NULL && strtoul(cl + 16, NULL, 10) > 0, "%s", raw);
        free(raw);
    }
}
END_TEST

/* Wrong tokens from one source: each logged and counted; after
 * ADMIN_AUTH_FAILS of them in the window, that source gets 429 even with a
 * good token, while the unix socket is not affected. */
START_TEST(failed_authentications_are_limited)
{
    for (int i = 0; i < ADMIN_AUTH_FAILS; i++) {
        struct resp r = request(true, "wrong", "GET", "/api/v1/backends", NULL, NULL);
        expect_error(&r, 401, "unauthorized");
        resp_free(&r);
    }
    struct resp r = request(true, RW_TOKEN, "GET", "/api/v1/backends", NULL, NULL);
    expect_error(&r, 429, "too_many_failures");
    ck_assert_ptr_nonnull(strstr(r.raw, "Retry-After: "));
    resp_free(&r);
    r = req_unix("GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "lb_cp_api_auth_failures_total 10\n") != NULL, "%s", r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "lb_cp_api_auth_limited_total 1\n"));
    resp_free(&r);
}
END_TEST

START_TEST(errors)
{
    struct resp r = req_unix("POST", "/api/v1/backends", NULL, "{\"url\": ");
    expect_error(&r, 400, "invalid_json");
    resp_free(&r);

    r = req_unix("POST", "/api/v1/config", "Content-Type: application/yaml\r\n",
                 "frontends:\n  - {port: 8080}\nbackends:\n  - {url: \"http://a:1\", weight: 0}\n");
    expect_error(&r, 400, "invalid_config");
    const char *msg = jstr(json_object_get(r.json, "error"), "message");
    ck_assert_msg(strncmp(msg, "config.yaml:4:", 14) == 0, "%s", msg);
    resp_free(&r);

    r = req_unix("POST", "/api/v1/backends", NULL, "{\"url\": \"http://127.0.0.1:9001\"}");
    expect_error(&r, 409, "conflict");
    resp_free(&r);

    r = req_unix("POST", "/api/v1/backends", NULL, "{\"url\": \"http://x:1\", \"weight\": 0}");
    expect_error(&r, 400, "invalid_config");
    resp_free(&r);

    r = req_unix("GET", "/api/v1/backends/nope", NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    r = req_unix("PUT", "/api/v1/backends/nope", NULL, "{\"weight\": 2}");
    expect_error(&r, 404, "not_found");
    resp_free(&r);

    r = req_unix("PUT", "/api/v1/backends/a", "If-Match: 7\r\n", "{\"weight\": 2}");
    expect_error(&r, 409, "conflict");
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "message"),
                     "active version is 1, not 7");
    resp_free(&r);

    r = req_unix("GET", "/api/v1/nothing", NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    r = req_unix("DELETE", "/api/v1/config", NULL, NULL);
    expect_error(&r, 405, "method_not_allowed");
    ck_assert_ptr_nonnull(strstr(r.raw, "Allow: GET, POST\r\n"));
    resp_free(&r);

    r = req_unix("GET", "/api/v1/config/versions/99", NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    r = req_unix("GET", "/api/v1/config/diff?from=1&to=99", NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    r = req_unix("GET", "/api/v1/config/diff?from=1", NULL, NULL);
    expect_error(&r, 400, "invalid_request");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/config/rollback", NULL, "{\"version\": 42}");
    expect_error(&r, 404, "not_found");
    resp_free(&r);

    /* Nothing above created a version. */
    r = req_unix("GET", "/health", NULL, NULL);
    ck_assert_int_eq(jint(r.json, "active_version"), 1);
    ck_assert_int_eq(jint(r.json, "generation"), 1);
    resp_free(&r);
}
END_TEST

START_TEST(body_limits)
{
    int fd = connect_unix();
    const char *head = "POST /api/v1/config HTTP/1.1\r\nHost: lb\r\nContent-Type: "
                       "application/yaml\r\nContent-Length: 5000000\r\n\r\n";
    send_all(fd, head, strlen(head));
    send_all(fd, "frontends:\n", 11);
    size_t len;
    char *raw = read_all(fd, &len);
    close(fd);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 413 ", 13) == 0, "%s", raw);
    ck_assert_ptr_nonnull(strstr(raw, "\"too_large\""));
    free(raw);

    fd = connect_unix();
    head = "POST /api/v1/config HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_all(fd, head, strlen(head));
    raw = read_all(fd, &len);
    close(fd);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 411 ", 13) == 0, "%s", raw);
    free(raw);

    /* A head over 16 KiB. */
    fd = connect_unix();
    char *big = malloc(20000);
    int n = snprintf(big, 20000, "GET /health HTTP/1.1\r\nHost: lb\r\nX-Big: ");
    memset(big + n, 'x', 18000);
    memcpy(big + n + 18000, "\r\n\r\n", 4);
    send_all(fd, big, (size_t)n + 18004);
    free(big);
    raw = read_all(fd, &len);
    close(fd);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 431 ", 13) == 0, "%s", raw);
    free(raw);
}
END_TEST

START_TEST(keep_alive_pipelined)
{
    int fd = connect_unix();
    const char *two = "GET /health HTTP/1.1\r\nHost: lb\r\n\r\n"
                      "PUT /api/v1/backends/b HTTP/1.1\r\nHost: lb\r\nContent-Length: 13\r\n\r\n"
                      "{\"weight\": 7}"
                      "GET /api/v1/backends/b HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    send_all(fd, two, strlen(two));
    size_t len;
    char *raw = read_all(fd, &len);
    close(fd);
    char *second = strstr(raw + 1, "HTTP/1.1 200 ");
    ck_assert_ptr_nonnull(second);
    char *third = strstr(second + 1, "HTTP/1.1 200 ");
    ck_assert_ptr_nonnull(third);
    ck_assert_ptr_nonnull(strstr(third, "\"weight\":7"));
    ck_assert_ptr_null(strstr(raw, "Connection: close\r\n\r\n{\"status\""));
    free(raw);
}
END_TEST

START_TEST(expect_continue)
{
    int fd = connect_unix();
    const char *head = "PUT /api/v1/backends/b HTTP/1.1\r\nHost: lb\r\nContent-Length: 13\r\n"
                       "Expect: 100-continue\r\nConnection: close\r\n\r\n";
    send_all(fd, head, strlen(head));
    char buf[64];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_str_eq(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_all(fd, "{\"weight\": 6}", 13);
    size_t len;
    char *raw = read_all(fd, &len);
    close(fd);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 200 ", 13) == 0, "%s", raw);
    free(raw);
}
END_TEST

START_TEST(socket_mode)
{
    struct stat st;
    ck_assert_int_eq(stat(sock_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0660);
}
END_TEST

START_TEST(refusals_at_start)
{
    struct lb_err err = {0};
    struct admin_config ac = {
        .unix_path = sock_path, .tcp_listen = "127.0.0.1:0", .insecure_http = true};
    ck_assert_ptr_null(admin_new(loop, core, &ac, &err));
    ck_assert_int_eq(err.code, LB_EINVAL);

    ck_assert_int_eq(chmod(tokens_path, 0644), 0);
    ac.tokens_file = tokens_path;
    ck_assert_ptr_null(admin_new(loop, core, &ac, &err));
    ck_assert_msg(strstr(err.msg, "has mode 0644: its group or others may read it") != NULL, "%s",
                  err.msg);
    ck_assert_int_eq(chmod(tokens_path, 0640), 0); /* the group too */
    ck_assert_ptr_null(admin_new(loop, core, &ac, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "has mode 0640"));

    ac.tokens_file = "/nonexistent/tokens";
    ck_assert_ptr_null(admin_new(loop, core, &ac, &err));
    ck_assert_int_eq(err.code, LB_ESYS);

    write_file(tokens_path, "ops secret-token-xyz admin\n", 0600);
    ac.tokens_file = tokens_path;
    ck_assert_ptr_null(admin_new(loop, core, &ac, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, ":1:"));

    /* A stale socket file (nobody listening) is replaced; a live one is not. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    struct admin_config plain = {.unix_path = sock_path};
    struct admin *a = admin_new(loop, core, &plain, &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    ck_assert_ptr_null(admin_new(loop, core, &plain, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "in use"));
    admin_free(a);
    ck_assert_int_ne(access(sock_path, F_OK), 0);

    write_file(sock_path, "not a socket", 0600);
    ck_assert_ptr_null(admin_new(loop, core, &plain, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "not a socket"));
}
END_TEST

/* GET /api/v1/audit (unix socket) -> its entries, checked to be newest first. */
static json_t *audit_get(const char *query, struct resp *r)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/audit%s%s", query[0] ? "?" : "", query);
    *r = req_unix("GET", path, NULL, NULL);
    ck_assert_msg(r->status == 200, "%s: %d %s", path, r->status, r->body);
    json_t *es = json_object_get(r->json, "entries");
    ck_assert(json_is_array(es));
    for (size_t i = 1; i < json_array_size(es); i++)
        ck_assert_int_lt(jint(json_array_get(es, i), "id"), jint(json_array_get(es, i - 1), "id"));
    return es;
}

/* How many entries GET /api/v1/audit?<query> answers. */
static size_t audit_count(const char *query)
{
    struct resp r;
    size_t n = json_array_size(audit_get(query, &r));
    resp_free(&r);
    return n;
}

static void expect_audit_refused(const char *query, const char *part)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/audit?%s", query);
    struct resp r = req_unix("GET", path, NULL, NULL);
    expect_error(&r, 400, "invalid_request");
    const char *msg = jstr(json_object_get(r.json, "error"), "message");
    ck_assert_msg(strstr(msg, part) != NULL, "%s: \"%s\" not in \"%s\"", query, part, msg);
    resp_free(&r);
}

START_TEST(audit_route)
{
    /* The bootstrap import is the first entry. */
    struct resp r;
    json_t *es = audit_get("", &r);
    ck_assert_uint_eq(json_array_size(es), 1);
    json_t *e = json_array_get(es, 0);
    ck_assert_int_gt(jint(e, "id"), 0);
    ck_assert_str_eq(jstr(e, "who"), "bootstrap");
    ck_assert_str_eq(jstr(e, "action"), "config.put");
    ck_assert(json_is_null(json_object_get(e, "from_version")));
    ck_assert_int_eq(jint(e, "to_version"), 1);
    ck_assert_ptr_nonnull(strstr(jstr(e, "detail"), "bootstrap from "));
    json_int_t t0 = jint(e, "time_ms");
    const char *when = jstr(e, "time");
    ck_assert_uint_eq(strlen(when), 24); /* 2026-12-06T19:30:00.123Z */
    ck_assert_int_eq(when[10], 'T');
    ck_assert_int_eq(when[23], 'Z');
    ck_assert(json_is_false(json_object_get(r.json, "more")));
    resp_free(&r);

    /* Three writes: two by the unix peer, one by the "ops" token. */
    r = req_unix("PUT", "/api/v1/backends/a", NULL, "{\"weight\": 2}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends/b/drain", NULL, NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    r = request(true, RW_TOKEN, "PUT", "/api/v1/backends/a", NULL, "{\"weight\": 3}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    ck_assert_uint_eq(audit_count(""), 4);

    /* Readable with a read-only token, and only with a token. */
    r = request(true, RO_TOKEN, "GET", "/api/v1/audit?limit=1", NULL, NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    e = json_array_get(json_object_get(r.json, "entries"), 0);
    ck_assert_str_eq(jstr(e, "who"), "token:ops");
    ck_assert_str_eq(jstr(e, "action"), "backend.update");
    ck_assert_str_eq(jstr(e, "detail"), "backend a: weight 2 -> 3");
    ck_assert_int_eq(jint(e, "from_version"), 3);
    ck_assert_int_eq(jint(e, "to_version"), 4);
    ck_assert(json_is_true(json_object_get(r.json, "more")));
    resp_free(&r);
    r = request(true, NULL, "GET", "/api/v1/audit", NULL, NULL);
    expect_error(&r, 401, "unauthorized");
    resp_free(&r);
    r = request(true, RO_TOKEN, "POST", "/api/v1/audit", NULL, "{}");
    expect_error(&r, 403, "forbidden");
    resp_free(&r);
    r = req_unix("DELETE", "/api/v1/audit", NULL, NULL);
    expect_error(&r, 405, "method_not_allowed");
    resp_free(&r);

    /* who and action: exact, percent-decoded, together */
    char q[256], me[32];
    snprintf(me, sizeof(me), "uid:%ld", (long)getuid());
    snprintf(q, sizeof(q), "who=%s", me);
    ck_assert_uint_eq(audit_count(q), 2);
    ck_assert_uint_eq(audit_count("who=token%3Aops"), 1);
    ck_assert_uint_eq(audit_count("who=token:ops"), 1);
    ck_assert_uint_eq(audit_count("who=token"), 0);
    ck_assert_uint_eq(audit_count("action=backend.drain"), 1);
    ck_assert_uint_eq(audit_count("action=backend.update"), 2);
    snprintf(q, sizeof(q), "who=%s&action=backend.update", me);
    ck_assert_uint_eq(audit_count(q), 1);
    ck_assert_uint_eq(audit_count("action=backend.%25"), 0);

    /* since: unix ms or RFC 3339, inclusive */
    snprintf(q, sizeof(q), "since=%lld", (long long)t0);
    ck_assert_uint_eq(audit_count(q), 4);
    ck_assert_uint_eq(audit_count("since=0"), 4);
    ck_assert_uint_eq(audit_count("since=1970-01-01T00:00:00Z"), 4);
    ck_assert_uint_eq(audit_count("since=2999-01-01T00:00:00Z"), 0);
    ck_assert_uint_eq(audit_count("since=32503680000000"), 0); /* 3000-01-01 */
    ck_assert_uint_eq(audit_count("since=2999-01-01T00:00:00.5%2B01:00"), 0);
    ck_assert_uint_eq(audit_count("since=2020-02-29t23:59:60.999999z"), 4);
    ck_assert_uint_eq(audit_count("since=2020-01-01T00:00:00-05:00&action=backend.drain"), 1);
    /* the time of an entry read back as since finds it */
    es = audit_get("limit=1", &r);
    e = json_array_get(es, 0);
    json_int_t newest = jint(e, "id");
    snprintf(q, sizeof(q), "since=%s", jstr(e, "time"));
    resp_free(&r);
    es = audit_get(q, &r);
    ck_assert_uint_ge(json_array_size(es), 1);
    ck_assert_int_eq(jint(json_array_get(es, 0), "id"), newest);
    resp_free(&r);

    /* limit: default 100, 1..1000 */
    ck_assert_uint_eq(audit_count("limit=2"), 2);
    ck_assert_uint_eq(audit_count("limit=1000"), 4);
    ck_assert_uint_eq(audit_count("limit=4"), 4);
    es = audit_get("limit=4", &r);
    ck_assert(json_is_false(json_object_get(r.json, "more")));
    resp_free(&r);

    /* Refusals say what is wrong. */
    expect_audit_refused("limit=0", "limit must be a number in 1..1000");
    expect_audit_refused("limit=1001", "limit must be a number in 1..1000");
    expect_audit_refused("limit=-1", "limit must be a number");
    expect_audit_refused("limit=ten", "limit must be a number");
    expect_audit_refused("limit=", "limit must be a number");
    expect_audit_refused("since=yesterday", "since must be an RFC 3339 time");
    expect_audit_refused("since=", "since must be an RFC 3339 time");
    expect_audit_refused("since=2026-13-01T00:00:00Z", "since must be");
    expect_audit_refused("since=2026-02-29T00:00:00Z", "since must be"); /* not a leap year */
    expect_audit_refused("since=2026-12-06T24:00:00Z", "since must be");
    expect_audit_refused("since=2026-12-06T19:30:00", "since must be"); /* no offset */
    expect_audit_refused("since=2026-12-06", "since must be");
    expect_audit_refused("since=2026-12-06T19:30:00.Z", "since must be");
    expect_audit_refused("since=2026-12-06T19:30:00Z%20", "since must be");
    expect_audit_refused("since=99999999999999999999", "since must be");
    expect_audit_refused("who=", "who must not be empty");
    expect_audit_refused("action=", "action must not be empty");
    expect_audit_refused("who=a%zz", "who must be at most 128 bytes of UTF-8 text");
    expect_audit_refused("who=a%0a", "who must be at most 128 bytes of UTF-8 text");
    expect_audit_refused("who=a%", "who must be at most");
    expect_audit_refused("since=%ff", "since must be at most 128 bytes of UTF-8 text");
    ck_assert_uint_eq(audit_count("who=caf%C3%A9"), 0);
    char longq[200] = "action=";
    memset(longq + 7, 'x', 129);
    longq[136] = '\0';
    expect_audit_refused(longq, "action must be at most 128 bytes");
    expect_audit_refused("user=ops", "unknown query parameter \"user\"");
    expect_audit_refused("limit=1&limit=2", "limit is given twice");
}
END_TEST

/* The newest entry of GET /api/v1/audit?action=<action> (on the unix
 * socket) is by <who> and holds <part> in its detail. */
static void expect_audited(const char *action, const char *who, const char *part)
{
    char q[128];
    snprintf(q, sizeof(q), "action=%s&limit=1", action);
    struct resp r;
    json_t *es = audit_get(q, &r);
    ck_assert_msg(json_array_size(es) == 1, "no %s entry", action);
    json_t *e = json_array_get(es, 0);
    ck_assert_str_eq(jstr(e, "who"), who);
    ck_assert_msg(strstr(jstr(e, "detail"), part) != NULL, "%s: \"%s\" not in \"%s\"", action, part,
                  jstr(e, "detail"));
    resp_free(&r);
}

/* Every write through the API lands in the audit with the caller as who. */
START_TEST(writes_audited)
{
    char me[32];
    snprintf(me, sizeof(me), "uid:%ld", (long)getuid());

    /* config apply, by token then by the unix peer */
    struct resp r = request(true, RW_TOKEN, "POST", "/api/v1/config",
                            "Content-Type: application/yaml\r\nX-Lb-Comment: more b\r\n",
                            "frontends:\n"
                            "  - {name: web, address: 127.0.0.1, port: 8080}\n"
                            "backends:\n"
                            "  - {id: a, url: \"http://127.0.0.1:9001\", weight: 5}\n"
                            "  - {id: b, url: \"http://127.0.0.1:9002\", weight: 4}\n");
    ck_assert_msg(r.status == 201, "%s", r.body);
    resp_free(&r);
    expect_audited("config.put", "token:ops", "backend b: weight 3 -> 4 (more b)");

    /* backend add, weight, state, other fields, drain, remove */
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"http://127.0.0.1:9003\", \"id\": \"c\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.add", me, "backend c added");
    r = request(true, RW_TOKEN, "PUT", "/api/v1/backends/c", NULL, "{\"weight\": 7}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.update", "token:ops", "backend c: weight 1 -> 7");
    r = req_unix("PUT", "/api/v1/backends/c", NULL,
                 "{\"state\": \"disabled\", \"comment\": \"maintenance\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.update", me, "backend c: state active -> disabled (maintenance)");
    r = request(true, RW_TOKEN, "PUT", "/api/v1/backends/c", NULL, "{\"maxConnections\": 10}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.update", "token:ops", "maxConnections 0 -> 10");
    r = request(true, RW_TOKEN, "POST", "/api/v1/backends/a/drain", NULL, NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.drain", "token:ops", "backend a: state active -> draining");
    r = req_unix("DELETE", "/api/v1/backends/c", NULL, NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.remove", me, "backend c removed");

    /* rollback */
    r = request(true, RW_TOKEN, "POST", "/api/v1/config/rollback", NULL,
                "{\"version\": 1, \"comment\": \"back\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    resp_free(&r);
    expect_audited("rollback", "token:ops", "content of version 1: back");

    /* A TLS reload asked through the API is by the caller. certwatch may
     * notice the new file first (it reloads as "certwatch" after 0.2 s): then
     * the API finds nothing to reload, and the test changes it again. */
    make_ca();
    r = req_unix("POST", "/api/v1/backends", NULL,
                 "{\"url\": \"https://127.0.0.1:9443\", \"id\": \"s\", \"caFile\": \"ca.pem\"}");
    ck_assert_msg(r.status == 201, "%s", r.body);
    resp_free(&r);
    bool reloaded = false;
    for (int i = 0; i < 5 && !reloaded; i++) {
        make_ca();
        r = request(true, RW_TOKEN, "POST", "/api/v1/tls/reload", NULL, NULL);
        ck_assert_msg(r.status == 200, "%s", r.body);
        reloaded = json_is_true(json_object_get(r.json, "reloaded"));
        resp_free(&r);
    }
    ck_assert(reloaded);
    expect_audited("tls.reload", "token:ops", "ca.pem of backend s changed");

    /* A comment that could not go out in JSON is refused at the door. */
    r = req_unix("POST", "/api/v1/backends/a/drain", "X-Lb-Comment: caf\xe9\r\n", NULL);
    expect_error(&r, 400, "invalid_request");
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "message"),
                     "X-Lb-Comment must be UTF-8 text");
    resp_free(&r);
    r = req_unix("POST", "/api/v1/backends/a/drain", "X-Lb-Comment: caf\xc3\xa9\r\n", NULL);
    ck_assert_msg(r.status == 200, "%s", r.body);
    resp_free(&r);
    expect_audited("backend.drain", me, "backend a: state active -> draining (caf\xc3\xa9)");

    /* Every one is there, each by the right caller. */
    char q[64];
    snprintf(q, sizeof(q), "who=%s", me);
    ck_assert_uint_eq(audit_count(q), 5);
    ck_assert_uint_ge(audit_count("who=token:ops"), 6);
}
END_TEST

static Suite *admin_suite(void)
{
    Suite *s = suite_create("admin");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"health_metrics", health_and_metrics},
        {"backends", backend_routes},
        {"backend_tls", backend_tls_fields},
        {"config", config_routes},
        {"dataplanes", dataplanes_listed},
        {"backend_limits", backend_limits_and_ejection},
        {"tcp_tokens", tcp_tokens},
        {"auth_limit", failed_authentications_are_limited},
        {"send_proxy", backend_send_proxy},
        {"errors", errors},
        {"limits", body_limits},
        {"keep_alive", keep_alive_pipelined},
        {"expect", expect_continue},
        {"socket_mode", socket_mode},
        {"audit", audit_route},
        {"audit_writes", writes_audited},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, bare_setup, bare_teardown);
    tcase_add_test(tc, refusals_at_start);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(admin_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
