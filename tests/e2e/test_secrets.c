/* tests/e2e/test_secrets.c: a TLS private key goes to the data plane and
 * nowhere else. A world serving a TLS frontend is driven through every read
 * the operator has (each lbctl command, table and JSON; the admin API's
 * resources in JSON and YAML; both daemons' /metrics) and through the error
 * paths that name key files (a key that does not match its certificate, a
 * corrupt key file on reload); then every byte any of them printed, and every
 * log file of the run, is searched for the PEM marker and for a line of the
 * key's own base64. */
#include "e2e.h"

#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Everything the run printed, appended. */
static char *seen;
static size_t seen_len;

static void keep(const char *what, const char *text)
{
    size_t n = strlen(what) + strlen(text) + 2;
    seen = realloc(seen, seen_len + n + 1);
    ck_assert_ptr_nonnull(seen);
    seen_len += (size_t)snprintf(seen + seen_len, n + 1, "%s\n%s\n", what, text);
}

/* Where a leak is, with what comes before it. */
static const char *context(const char *leak)
{
    if (leak == NULL)
        return "";
    return leak - seen > 100 ? leak - 100 : seen;
}

static void sh(struct e2e_cp *w, const char *cmd)
{
    char dir[512], full[2700];
    e2e_cp_path(w, "", dir, sizeof(dir));
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
    ck_assert_msg(system(full) == 0, "failed: %s", cmd);
}

/* Runs lbctl with the NULL-terminated arguments; keeps both outputs. */
static int lbctl(struct e2e_cp *w, ...)
{
    char *argv[16];
    int n = 0;
    va_list ap;
    va_start(ap, w);
    for (char *a; n < 15 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    struct e2e_cmd r;
    int st;
    switch (n) {
    case 1:
        st = e2e_cp_lbctl(w, &r, argv[0], NULL);
        break;
    case 2:
        st = e2e_cp_lbctl(w, &r, argv[0], argv[1], NULL);
        break;
    case 3:
        st = e2e_cp_lbctl(w, &r, argv[0], argv[1], argv[2], NULL);
        break;
    default:
        st = e2e_cp_lbctl(w, &r, argv[0], argv[1], argv[2], argv[3], NULL);
        break;
    }
    char what[128];
    snprintf(what, sizeof(what), "lbctl %s %s (%d)", argv[0], n > 1 ? argv[1] : "", st);
    keep(what, r.out);
    keep(what, r.err);
    e2e_cmd_free(&r);
    return st;
}

/* GET <target> on the admin unix socket with <accept> (may be NULL); keeps
 * the whole answer. */
static void api_get(struct e2e_cp *w, const char *target, const char *accept)
{
    char sock[512];
    e2e_cp_path(w, "run/admin.sock", sock, sizeof(sock));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock), sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", sock,
                  strerror(errno));
    uint64_t ms = e2e_timeout_ms();
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char req[512];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n%s%s%sConnection: close\r\n\r\n",
                 target, accept ? "Accept: " : "", accept ? accept : "", accept ? "\r\n" : "");
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    ssize_t k;
    while (len < cap && (k = read(fd, buf + len, cap - len)) > 0)
        len += (size_t)k;
    buf[len] = '\0';
    close(fd);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "GET %s: %.200s", target, buf);
    keep(target, buf);
    free(buf);
}

/* The file's text, or NULL when absent; caller frees. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

START_TEST(private_keys_stay_in_the_data_plane)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    sh(w, "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 30 "
          "-subj /CN=web.test -addext subjectAltName=DNS:web.test && "
          "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key");
    /* a line of the key's base64: what a leak would show even without the
     * marker */
    char path[600];
    e2e_cp_path(w, "key.pem", path, sizeof(path));
    char *key = slurp(path);
    ck_assert_ptr_nonnull(key);
    char needle[65];
    const char *line2 = strchr(key, '\n');
    ck_assert_ptr_nonnull(line2);
    snprintf(needle, sizeof(needle), "%.64s", line2 + 1);
    ck_assert_uint_eq(strlen(needle), 64);
    free(key);

    char metrics[64];
    snprintf(metrics, sizeof(metrics), "metrics: {enabled: true, port: %u}\n",
             e2e_cp_metrics_port(w));
    e2e_cp_write_tls_config(w, "tls.yaml", "key.pem", metrics);
    e2e_cp_path(w, "tls.yaml", path, sizeof(path));
    ck_assert_int_eq(lbctl(w, "config", "apply", path, NULL), 0);
    long gen = 0;
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    struct e2e_dp_status dp;
    while (e2e_now_ms() < end) {
        if (e2e_cp_dataplanes(w, &dp, 1, NULL, &gen) == 1 && dp.in_sync && dp.applied_version >= 2)
            break;
        e2e_poll_pause(20);
    }
    ck_assert_msg(dp.in_sync && dp.applied_version >= 2, "the data plane did not apply the TLS "
                                                         "config");

    /* every read an operator has */
    ck_assert_int_eq(lbctl(w, "status", NULL), 0);
    ck_assert_int_eq(lbctl(w, "backends", "list", NULL), 0);
    ck_assert_int_eq(lbctl(w, "--json", "backends", "list", NULL), 0);
    ck_assert_int_eq(lbctl(w, "config", "get", NULL), 0);
    ck_assert_int_eq(lbctl(w, "--json", "config", "get", NULL), 0);
    ck_assert_int_eq(lbctl(w, "config", "history", NULL), 0);
    ck_assert_int_eq(lbctl(w, "config", "diff", "1", "2", NULL), 0);
    ck_assert_int_eq(lbctl(w, "dataplanes", NULL), 0);
    ck_assert_int_eq(lbctl(w, "tls", "list", NULL), 0);
    ck_assert_int_eq(lbctl(w, "--json", "tls", "list", NULL), 0);
    ck_assert_int_eq(lbctl(w, "audit", NULL), 0);
    ck_assert_int_eq(lbctl(w, "--json", "audit", NULL), 0);
    api_get(w, "/api/v1/config", NULL);
    api_get(w, "/api/v1/config", "application/yaml");
    api_get(w, "/api/v1/config/versions", NULL);
    api_get(w, "/api/v1/tls", NULL);
    api_get(w, "/api/v1/dataplanes", NULL);
    api_get(w, "/api/v1/backends", NULL);
    api_get(w, "/metrics", NULL);
    char *m = e2e_cp_scrape(w);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(strstr(m, "lb_tls_"));
    keep("data plane /metrics", m);
    free(m);

    /* errors that name key files */
    e2e_cp_write_tls_config(w, "bad.yaml", "other.key", metrics);
    e2e_cp_path(w, "bad.yaml", path, sizeof(path));
    ck_assert_int_eq(lbctl(w, "config", "apply", path, NULL), 1);
    sh(w, "cp key.pem key.good && head -c 200 key.good > key.pem");
    ck_assert_int_eq(lbctl(w, "tls", "reload", NULL), 1);
    sh(w, "cp key.good key.pem");

    /* the logs of the whole run, each process's */
    static const char *const logs[] = {"cp.log", "dp0.log", "b0.log"};
    for (size_t i = 0; i < sizeof(logs) / sizeof(logs[0]); i++) {
        e2e_cp_path(w, logs[i], path, sizeof(path));
        char *text = slurp(path);
        ck_assert_msg(text != NULL, "no %s", path);
        keep(logs[i], text);
        free(text);
    }
    ck_assert_msg(strstr(seen, "web.test") != NULL, "the outputs do not even name the certificate");
    const char *leak = strstr(seen, "PRIVATE KEY");
    ck_assert_msg(leak == NULL, "a PEM marker was printed: ...%.300s", context(leak));
    leak = strstr(seen, needle);
    ck_assert_msg(leak == NULL, "the key's base64 was printed: ...%.300s", context(leak));
    free(seen);
    seen = NULL;
    seen_len = 0;
    e2e_cp_stop(w);
}
END_TEST

int main(void)
{
    unsetenv("LB_ADMIN_SOCKET");
    unsetenv("LB_ADMIN_URL");
    unsetenv("LB_TOKEN_FILE");
    Suite *s = suite_create("e2e_secrets");
    TCase *tc = e2e_tcase("private_keys");
    tcase_add_test(tc, private_keys_stay_in_the_data_plane);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
