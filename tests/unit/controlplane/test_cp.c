/* tests/unit/controlplane/test_cp.c: the control plane core against a temp
 * SQLite file and a real publisher on an ipc:// base in a temp dir. */
#include "config.h"
#include "cp.h"
#include "health.h"
#include "lb.pb-c.h"
#include "lb_endpoints.h"
#include "lb_err.h"
#include "lb_log.h"
#include "store.h"
#include "tlscheck.h"

#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/reqrep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];
static char db[320];
static char base[320];
static char boot[320];
static struct ev_loop *loop;

static const char *const boot_yaml = "frontends:\n"
                                     "  - {name: web, address: 127.0.0.1, port: 8080}\n"
                                     "backends:\n"
                                     "  - {id: a, url: \"http://127.0.0.1:9001\", weight: 5}\n"
                                     "  - {id: b, url: \"http://127.0.0.1:9002\", weight: 3}\n";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    lb_log_setup("test_cp", open("/dev/null", O_WRONLY | O_CLOEXEC), LB_LOG_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-cp-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(db, sizeof(db), "%s/lb.db", tmpdir);
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    snprintf(boot, sizeof(boot), "%s/config.yaml", tmpdir);
    FILE *f = fopen(boot, "w");
    ck_assert_ptr_nonnull(f);
    fputs(boot_yaml, f);
    fclose(f);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void teardown(void)
{
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static struct cp *open_cp(const char *bootstrap)
{
    struct cp_config cfg = {.db_path = db, .bootstrap = bootstrap, .control_base = base};
    struct lb_err err = {0};
    struct cp *cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new: %s", err.msg);
    return cp;
}

static Lb__V1__Snapshot *snapshot_of(struct cp *cp)
{
    const uint8_t *buf;
    size_t len;
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    Lb__V1__Snapshot *s = lb__v1__snapshot__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(s);
    return s;
}

static uint32_t snap_weight(const Lb__V1__Snapshot *s, const char *id)
{
    for (size_t i = 0; i < s->n_backends; i++)
        if (strcmp(s->backends[i]->id, id) == 0)
            return s->backends[i]->weight;
    return 0;
}

static uint64_t versions_total(struct cp *cp)
{
    uint64_t n = 0;
    ck_assert_int_eq(cp_versions_total(cp, &n, NULL), LB_OK);
    return n;
}

static const struct cp_write writer = {.author = "uid:1000", .comment = "test"};

START_TEST(bootstrap_imports_version_one)
{
    struct cp *cp = open_cp(boot);
    ck_assert_uint_eq(cp_active_version(cp), 1);
    ck_assert_uint_eq(cp_generation(cp), 1);
    ck_assert_uint_eq(strlen(cp_config_hash(cp)), 64);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(s->config_version, 1);
    ck_assert_uint_eq(s->generation, 1);
    ck_assert_uint_eq(s->n_backends, 2);
    ck_assert_uint_eq(snap_weight(s, "a"), 5);
    lb__v1__snapshot__free_unpacked(s, NULL);
    struct store_version *v = NULL;
    ck_assert_int_eq(cp_version_get(cp, 1, &v, NULL), LB_OK);
    ck_assert_str_eq(v->author, "bootstrap");
    ck_assert_str_eq(v->hash, cp_config_hash(cp));
    ck_assert_ptr_nonnull(strstr(v->content, "\"http://127.0.0.1:9001\""));
    store_version_free(v);
    cp_free(cp);
}
END_TEST

START_TEST(no_bootstrap_starts_empty)
{
    struct cp *cp = open_cp(NULL);
    const uint8_t *buf;
    size_t len;
    ck_assert_uint_eq(cp_active_version(cp), 0);
    ck_assert_ptr_null(cp_config(cp));
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_ENOTFOUND);
    struct lb_err err = {0};
    struct cp_backend_change chg = {.url = "http://127.0.0.1:9005"};
    ck_assert_int_eq(cp_backend_add(cp, &chg, &writer, NULL, NULL, &err), LB_EINVAL);
    uint64_t version = 0;
    bool unchanged = true;
    struct config_diff *d = NULL;
    ck_assert_int_eq(cp_apply(cp, boot_yaml, strlen(boot_yaml), CP_FORMAT_YAML, &writer, &version,
                              &unchanged, &d, &err),
                     LB_OK);
    ck_assert(!unchanged);
    ck_assert_uint_eq(version, 1);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_gt(d->n, 0);
    config_diff_free(d);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    cp_free(cp);
}
END_TEST

/* Each write: one more version, one more generation, published snapshot. */
static void expect_step(struct cp *cp, uint64_t version, uint64_t v_before, uint64_t g_before)
{
    ck_assert_uint_eq(version, v_before + 1);
    ck_assert_uint_eq(cp_active_version(cp), version);
    ck_assert_uint_eq(cp_generation(cp), g_before + 1);
    ck_assert_uint_eq(versions_total(cp), version);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(s->config_version, version);
    ck_assert_uint_eq(s->generation, g_before + 1);
    lb__v1__snapshot__free_unpacked(s, NULL);
}

/* The newest audit row is <action> by <who>, from <from> to <to>, and its
 * detail is <detail>. */
static void expect_audit(struct cp *cp, const char *action, const char *who, uint64_t from,
                         uint64_t to, const char *detail)
{
    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 1, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(as[0].action, action);
    ck_assert_str_eq(as[0].who, who);
    ck_assert_uint_eq(as[0].from_version, from);
    ck_assert_uint_eq(as[0].to_version, to);
    ck_assert_str_eq(as[0].detail, detail);
    store_audit_free(as, n);
}

START_TEST(each_mutation_makes_one_version)
{
    struct cp *cp = open_cp(boot);
    struct lb_err err = {0};
    uint64_t v = 0, v0, g0;
    int idx = -1;

    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    struct cp_backend_change add = {
        .url = "http://127.0.0.1:9003", .has_weight = true, .weight = 7};
    ck_assert_msg(cp_backend_add(cp, &add, &writer, &v, &idx, &err) == LB_OK, "%s", err.msg);
    expect_step(cp, v, v0, g0);
    ck_assert_int_eq(idx, 2);
    ck_assert_str_eq(cp_config(cp)->backends[2].id, "127.0.0.1-9003");
    ck_assert_uint_eq(cp_config(cp)->backends[2].port, 9003);
    expect_audit(cp, "backend.add", "uid:1000", v0, v,
                 "backend 127.0.0.1-9003 added (http://127.0.0.1:9003, weight 7) (test)");

    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    struct cp_backend_change upd = {.has_weight = true, .weight = 9};
    ck_assert_int_eq(cp_backend_update(cp, "a", &upd, &writer, &v, &err), LB_OK);
    expect_step(cp, v, v0, g0);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(snap_weight(s, "a"), 9);
    lb__v1__snapshot__free_unpacked(s, NULL);
    expect_audit(cp, "backend.update", "uid:1000", v0, v, "backend a: weight 5 -> 9 (test)");

    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    ck_assert_int_eq(cp_backend_drain(cp, "b", &writer, &v, &err), LB_OK);
    expect_step(cp, v, v0, g0);
    ck_assert_int_eq(cp_config(cp)->backends[cp_backend_find(cp, "b")].state,
                     CONFIG_BACKEND_DRAINING);
    expect_audit(cp, "backend.drain", "uid:1000", v0, v,
                 "backend b: state active -> draining (test)");

    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    ck_assert_int_eq(cp_backend_remove(cp, "127.0.0.1-9003", &writer, &v, &err), LB_OK);
    expect_step(cp, v, v0, g0);
    ck_assert_int_eq(cp_backend_find(cp, "127.0.0.1-9003"), -1);
    expect_audit(cp, "backend.remove", "uid:1000", v0, v, "backend 127.0.0.1-9003 removed (test)");

    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    bool unchanged = true;
    struct config_diff *d = NULL;
    ck_assert_int_eq(cp_apply(cp, boot_yaml, strlen(boot_yaml), CP_FORMAT_YAML, &writer, &v,
                              &unchanged, &d, &err),
                     LB_OK);
    expect_step(cp, v, v0, g0);
    ck_assert(!unchanged);
    char *text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "backend a: weight 9 -> 5"));
    free(text);
    config_diff_free(d);
    expect_audit(cp, "config.put", "uid:1000", v0, v,
                 "backend a: weight 9 -> 5; backend b: state draining -> active (test)");

    /* The same config again creates nothing. */
    v0 = cp_active_version(cp), g0 = cp_generation(cp);
    const char *json = "{\"frontends\": [{\"name\": \"web\", \"address\": \"127.0.0.1\", "
                       "\"port\": 8080}], \"backends\": [{\"id\": \"a\", \"url\": "
                       "\"http://127.0.0.1:9001\", \"weight\": 5}, {\"id\": \"b\", \"url\": "
                       "\"http://127.0.0.1:9002\", \"weight\": 3}]}";
    ck_assert_int_eq(
        cp_apply(cp, json, strlen(json), CP_FORMAT_JSON, &writer, &v, &unchanged, NULL, &err),
        LB_OK);
    ck_assert(unchanged);
    ck_assert_uint_eq(v, v0);
    ck_assert_uint_eq(cp_generation(cp), g0);
    ck_assert_uint_eq(versions_total(cp), v0);
    cp_free(cp);
}
END_TEST

/* A config change too long to list whole: the detail keeps the first
 * changes, says how many there were, and keeps the comment. */
START_TEST(long_audit_detail_is_cut)
{
    struct cp *cp = open_cp(boot);
    char yaml[16384];
    size_t off = (size_t)snprintf(yaml, sizeof(yaml), "%s", boot_yaml);
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(yaml + off, sizeof(yaml) - off,
                                "  - {id: extra-%d, url: \"http://127.0.0.1:%d\"}\n", i, 10000 + i);
    ck_assert_uint_lt(off, sizeof(yaml));
    uint64_t v = 0, v0 = cp_active_version(cp);
    bool unchanged = true;
    struct lb_err err = {0};
    ck_assert_msg(cp_apply(cp, yaml, off, CP_FORMAT_YAML, &writer, &v, &unchanged, NULL, &err) ==
                      LB_OK,
                  "%s", err.msg);
    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 1, &as, &n, NULL), LB_OK);
    ck_assert_str_eq(as[0].action, "config.put");
    ck_assert_uint_eq(as[0].from_version, v0);
    ck_assert_uint_eq(as[0].to_version, v);
    const char *d = as[0].detail;
    ck_assert_msg(strncmp(d, "backend extra-0 added (http://127.0.0.1:10000, weight 1); ", 58) == 0,
                  "%s", d);
    ck_assert_msg(strlen(d) <= 1024 + strlen("; ... (100 changes in all) (test)"), "%zu: %s",
                  strlen(d), d);
    const char *tail = "; ... (100 changes in all) (test)";
    ck_assert_msg(strlen(d) > strlen(tail) && strcmp(d + strlen(d) - strlen(tail), tail) == 0, "%s",
                  d);
    store_audit_free(as, n);
    cp_free(cp);
}
END_TEST

struct frozen {
    uint64_t version, generation, total;
    uint8_t *snap;
    size_t len;
};

static void freeze(struct cp *cp, struct frozen *f)
{
    const uint8_t *buf;
    f->version = cp_active_version(cp);
    f->generation = cp_generation(cp);
    f->total = versions_total(cp);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &f->len), LB_OK);
    f->snap = malloc(f->len);
    memcpy(f->snap, buf, f->len);
}

static void expect_frozen(struct cp *cp, const struct frozen *f)
{
    const uint8_t *buf;
    size_t len;
    ck_assert_uint_eq(cp_active_version(cp), f->version);
    ck_assert_uint_eq(cp_generation(cp), f->generation);
    ck_assert_uint_eq(versions_total(cp), f->total);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    ck_assert_uint_eq(len, f->len);
    ck_assert(memcmp(buf, f->snap, len) == 0);
}

START_TEST(rejected_changes_change_nothing)
{
    struct cp *cp = open_cp(boot);
    struct frozen f;
    freeze(cp, &f);
    struct lb_err err = {0};
    uint64_t v = 0;

    struct cp_backend_change bad_weight = {.has_weight = true, .weight = 0};
    ck_assert_int_eq(cp_backend_update(cp, "a", &bad_weight, &writer, &v, &err), LB_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "weight"));
    expect_frozen(cp, &f);

    struct cp_backend_change dup = {.id = "a", .url = "http://127.0.0.1:9009"};
    ck_assert_int_eq(cp_backend_add(cp, &dup, &writer, &v, NULL, &err), LB_ECONFLICT);
    expect_frozen(cp, &f);

    struct cp_backend_change dup_url = {.url = "http://127.0.0.1:9001"};
    ck_assert_int_eq(cp_backend_add(cp, &dup_url, &writer, &v, NULL, &err), LB_ECONFLICT);
    expect_frozen(cp, &f);

    struct cp_backend_change nohost = {.id = "x", .url = "http://nosuch-host.invalid:80"};
    ck_assert_int_eq(cp_backend_add(cp, &nohost, &writer, &v, NULL, &err), LB_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "x"));
    expect_frozen(cp, &f);

    struct cp_write stale = {.author = "uid:1", .expected_version = 5};
    struct cp_backend_change w2 = {.has_weight = true, .weight = 2};
    ck_assert_int_eq(cp_backend_update(cp, "a", &w2, &stale, &v, &err), LB_ECONFLICT);
    ck_assert_str_eq(err.msg, "active version is 1, not 5");
    expect_frozen(cp, &f);

    ck_assert_int_eq(cp_backend_update(cp, "nope", &w2, &writer, &v, &err), LB_ENOTFOUND);
    ck_assert_int_eq(cp_backend_remove(cp, "nope", &writer, &v, &err), LB_ENOTFOUND);
    ck_assert_int_eq(cp_rollback(cp, 42, &writer, &v, &err), LB_ENOTFOUND);
    expect_frozen(cp, &f);

    bool unchanged;
    const char *bad = "frontends:\n  - {port: 8080}\nbackends:\n  - {url: \"http://a:1\", "
                      "weight: 1001}\n";
    ck_assert_int_eq(
        cp_apply(cp, bad, strlen(bad), CP_FORMAT_YAML, &writer, &v, &unchanged, NULL, &err),
        LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:4:", 14) == 0, "%s", err.msg);
    expect_frozen(cp, &f);

    /* A matching If-Match passes. */
    struct cp_write fresh = {.author = "uid:1", .expected_version = 1};
    ck_assert_int_eq(cp_backend_update(cp, "a", &w2, &fresh, &v, &err), LB_OK);
    ck_assert_uint_eq(v, 2);
    free(f.snap);
    cp_free(cp);
}
END_TEST

static const Lb__V1__Backend *snap_backend(const Lb__V1__Snapshot *s, const char *id)
{
    for (size_t i = 0; i < s->n_backends; i++)
        if (strcmp(s->backends[i]->id, id) == 0)
            return s->backends[i];
    ck_abort_msg("no backend %s in the snapshot", id);
    return NULL;
}

/* A self-signed CA certificate at <tmpdir>/ca.pem; its size in bytes. */
static size_t make_ca(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout ca.key -out ca.pem -days 30 -subj /CN=Test-CA >/dev/null 2>&1",
             tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    char path[400];
    snprintf(path, sizeof(path), "%s/ca.pem", tmpdir);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (size_t)st.st_size;
}

START_TEST(backend_tls_fields)
{
    size_t ca_size = make_ca();
    struct cp *cp = open_cp(boot);
    struct lb_err err = {0};
    uint64_t v = 0;
    int idx = -1;

    /* caFile relative to the config's directory (the bootstrap file's). */
    struct cp_backend_change add = {
        .id = "s", .url = "https://127.0.0.1:9443", .ca_file = "ca.pem", .sni = "backend.test"};
    ck_assert_msg(cp_backend_add(cp, &add, &writer, &v, &idx, &err) == LB_OK, "%s", err.msg);
    ck_assert_uint_eq(v, 2);
    const struct config_backend *b = &cp_config(cp)->backends[idx];
    ck_assert(b->https);
    ck_assert_str_eq(b->ca_file, "ca.pem");
    ck_assert_str_eq(b->sni, "backend.test");
    Lb__V1__Snapshot *s = snapshot_of(cp);
    const Lb__V1__Backend *sb = snap_backend(s, "s");
    ck_assert(sb->tls);
    ck_assert_str_eq(sb->sni, "backend.test");
    ck_assert_uint_eq(sb->ca_pem.len, ca_size);
    ck_assert(memcmp(sb->ca_pem.data, "-----BEGIN CERTIFICATE-----", 27) == 0);
    lb__v1__snapshot__free_unpacked(s, NULL);
    struct store_version *sv = NULL;
    ck_assert_int_eq(cp_version_get(cp, v, &sv, NULL), LB_OK);
    ck_assert_ptr_nonnull(strstr(sv->content, "caFile: \"ca.pem\""));
    store_version_free(sv);

    /* Defaults: no caFile (the system store), sni from the URL's host. */
    struct cp_backend_change plain = {.id = "t", .url = "https://localhost:9444"};
    ck_assert_msg(cp_backend_add(cp, &plain, &writer, &v, &idx, &err) == LB_OK, "%s", err.msg);
    ck_assert_str_eq(cp_config(cp)->backends[idx].ca_file, "");
    ck_assert_str_eq(cp_config(cp)->backends[idx].sni, "");
    s = snapshot_of(cp);
    ck_assert_str_eq(snap_backend(s, "t")->sni, "localhost");
    ck_assert_uint_eq(snap_backend(s, "t")->ca_pem.len, 0);
    lb__v1__snapshot__free_unpacked(s, NULL);

    struct frozen f;
    freeze(cp, &f);
    struct cp_backend_change http_sni = {.url = "http://127.0.0.1:9010", .sni = "x.test"};
    ck_assert_int_eq(cp_backend_add(cp, &http_sni, &writer, &v, NULL, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "sni applies only to https:// backends") != NULL, "%s", err.msg);
    expect_frozen(cp, &f);

    struct cp_backend_change no_ca = {.url = "https://127.0.0.1:9011",
                                      .ca_file = "/nonexistent/ca.pem"};
    ck_assert_int_eq(cp_backend_add(cp, &no_ca, &writer, &v, NULL, &err), LB_ESYS);
    ck_assert_msg(strstr(err.msg, "].caFile: cannot read /nonexistent/ca.pem: ") != NULL, "%s",
                  err.msg);
    expect_frozen(cp, &f);

    /* Readable, but no certificate in it: refused before anything is stored. */
    char junk[512];
    snprintf(junk, sizeof(junk), "%s/junk.pem", tmpdir);
    FILE *jf = fopen(junk, "w");
    ck_assert_ptr_nonnull(jf);
    fputs("not a certificate\n", jf);
    fclose(jf);
    struct cp_backend_change junk_ca = {.url = "https://127.0.0.1:9012", .ca_file = "junk.pem"};
    ck_assert_int_eq(cp_backend_add(cp, &junk_ca, &writer, &v, NULL, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "backend 127.0.0.1-9012 caFile: ") != NULL &&
                      strstr(err.msg, "junk.pem holds no PEM certificate") != NULL,
                  "%s", err.msg);
    expect_frozen(cp, &f);
    /* a changed caFile is checked even where the old one stays valid */
    struct cp_backend_change junk_update = {.ca_file = "junk.pem"};
    ck_assert_int_eq(cp_backend_update(cp, "s", &junk_update, &writer, &v, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "backend s caFile: ") != NULL, "%s", err.msg);
    expect_frozen(cp, &f);

    struct cp_backend_change bad_sni = {.sni = "not a name"};
    ck_assert_int_eq(cp_backend_update(cp, "s", &bad_sni, &writer, &v, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "sni: \"not a name\" is not a server name") != NULL, "%s",
                  err.msg);
    expect_frozen(cp, &f);

    struct cp_backend_change ip_sni = {.sni = "127.0.0.1"};
    ck_assert_int_eq(cp_backend_update(cp, "s", &ip_sni, &writer, &v, &err), LB_EINVAL);
    expect_frozen(cp, &f);

    struct cp_backend_change to_http = {.url = "http://127.0.0.1:9443"};
    ck_assert_int_eq(cp_backend_update(cp, "s", &to_http, &writer, &v, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "caFile applies only to https:// backends") != NULL, "%s",
                  err.msg);
    expect_frozen(cp, &f);

    struct cp_backend_change http_a = {.ca_file = "ca.pem"};
    ck_assert_int_eq(cp_backend_update(cp, "a", &http_a, &writer, &v, &err), LB_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "caFile"));
    expect_frozen(cp, &f);
    free(f.snap);

    /* sni alone; caFile stays. */
    struct cp_backend_change sni_only = {.sni = "other.test"};
    ck_assert_msg(cp_backend_update(cp, "s", &sni_only, &writer, &v, &err) == LB_OK, "%s", err.msg);
    b = &cp_config(cp)->backends[cp_backend_find(cp, "s")];
    ck_assert_str_eq(b->sni, "other.test");
    ck_assert_str_eq(b->ca_file, "ca.pem");

    /* "" clears caFile; the snapshot then carries no CA. */
    struct cp_backend_change clear_ca = {.ca_file = ""};
    ck_assert_msg(cp_backend_update(cp, "s", &clear_ca, &writer, &v, &err) == LB_OK, "%s", err.msg);
    b = &cp_config(cp)->backends[cp_backend_find(cp, "s")];
    ck_assert_str_eq(b->ca_file, "");
    ck_assert_str_eq(b->sni, "other.test");
    s = snapshot_of(cp);
    ck_assert_uint_eq(snap_backend(s, "s")->ca_pem.len, 0);
    ck_assert_str_eq(snap_backend(s, "s")->sni, "other.test");
    lb__v1__snapshot__free_unpacked(s, NULL);

    /* To http:// while sni is set: refused, unless the same change clears it. */
    ck_assert_int_eq(cp_backend_update(cp, "s", &to_http, &writer, &v, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "sni applies only to https:// backends") != NULL, "%s", err.msg);
    struct cp_backend_change to_http_clear = {
        .url = "http://127.0.0.1:9443", .ca_file = "", .sni = ""};
    ck_assert_msg(cp_backend_update(cp, "s", &to_http_clear, &writer, &v, &err) == LB_OK, "%s",
                  err.msg);
    b = &cp_config(cp)->backends[cp_backend_find(cp, "s")];
    ck_assert(!b->https);
    ck_assert_str_eq(b->sni, "");
    s = snapshot_of(cp);
    ck_assert(!snap_backend(s, "s")->tls);
    lb__v1__snapshot__free_unpacked(s, NULL);
    cp_free(cp);
}
END_TEST

/* Runs <cmd> in <tmpdir>, quietly. */
static void sh_tmp(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", tmpdir, cmd);
    ck_assert_msg(system(full) == 0, "failed: %s", cmd);
}

/* The contents of <tmpdir>/<name> (caller frees), its size in *<len>. */
static uint8_t *slurp(const char *name, size_t *len)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t *buf = malloc(65536);
    ck_assert_ptr_nonnull(buf);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

/* Writes <yaml> as <tmpdir>/<name>; returns its path (static buffer). */
static const char *write_tmp(const char *name, const char *yaml)
{
    static char path[400];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(yaml, f);
    fclose(f);
    return path;
}

/* Backend <id>'s ca_pem in the served snapshot equals file <name>. */
static void expect_backend_ca(struct cp *cp, const char *id, const char *name)
{
    size_t len = 0;
    uint8_t *want = slurp(name, &len);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    const Lb__V1__Backend *b = snap_backend(s, id);
    ck_assert_uint_eq(b->ca_pem.len, len);
    ck_assert(memcmp(b->ca_pem.data, want, len) == 0);
    lb__v1__snapshot__free_unpacked(s, NULL);
    free(want);
}

/* A second CA (another key, another name) at <tmpdir>/<name>. */
static void make_other_ca(const char *name, const char *cn)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout %s.key -out %s -days 30 -subj /CN=%s",
             name, name, cn);
    sh_tmp(cmd);
}

static const char *const https_yaml =
    "frontends:\n"
    "  - {name: web, address: 127.0.0.1, port: 8080}\n"
    "backends:\n"
    "  - {id: a, url: \"http://127.0.0.1:9001\"}\n"
    "  - {id: s, url: \"https://127.0.0.1:9443\", caFile: ca.pem, sni: backend.test}\n";

/* No TLS frontend, one https:// backend with a caFile (relative to the
 * config's directory): its CA file is reloaded like a frontend's files. */
START_TEST(backend_ca_reloads)
{
    make_ca();
    make_other_ca("ca2.pem", "Test-CA-2");
    struct cp *cp = open_cp(write_tmp("https.yaml", https_yaml));
    expect_backend_ca(cp, "s", "ca.pem");
    struct cp_tls_status st;
    cp_tls_status(cp, &st);
    ck_assert_ptr_nonnull(st.bundle);
    ck_assert_uint_eq(st.bundle->n_certs, 0);
    ck_assert_uint_eq(st.bundle->n_backend_cas, 1);
    ck_assert_str_eq(st.bundle->backend_cas[0].backend, "s");
    ck_assert_str_eq(st.bundle->backend_cas[0].file.name, "ca.pem");
    ck_assert_str_eq(st.bundle->backend_cas[0].info.subject, "CN=Test-CA");

    /* Nothing changed: nothing published. */
    bool reloaded = true;
    struct lb_err err = {0};
    uint64_t v0 = cp_active_version(cp), g0 = cp_generation(cp);
    ck_assert_msg(cp_tls_reload(cp, &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(!reloaded);
    ck_assert_uint_eq(cp_generation(cp), g0);

    /* Another valid CA, renamed over the file: a new generation of the same
     * version carries its bytes. */
    sh_tmp("cp ca2.pem ca.new && mv ca.new ca.pem");
    ck_assert_msg(cp_tls_reload(cp, &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(reloaded);
    ck_assert_uint_eq(cp_active_version(cp), v0);
    ck_assert_uint_eq(cp_generation(cp), g0 + 1);
    expect_backend_ca(cp, "s", "ca2.pem");
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(s->generation, g0 + 1);
    ck_assert_uint_eq(s->config_version, v0);
    lb__v1__snapshot__free_unpacked(s, NULL);
    cp_tls_status(cp, &st);
    ck_assert_uint_eq(st.reloads, 1);
    ck_assert_uint_eq(st.last_reload_generation, g0 + 1);
    ck_assert_msg(strstr(st.last_reload, "ca.pem of backend s changed") != NULL, "%s",
                  st.last_reload);
    ck_assert_str_eq(st.bundle->backend_cas[0].info.subject, "CN=Test-CA-2");
    struct store_audit *au = NULL;
    size_t n_au = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 1, &au, &n_au, NULL), LB_OK);
    ck_assert_uint_eq(n_au, 1);
    ck_assert_str_eq(au[0].action, "tls.reload");
    ck_assert_str_eq(au[0].who, "certwatch");
    ck_assert_msg(strstr(au[0].detail, "ca.pem of backend s changed") != NULL, "%s", au[0].detail);
    store_audit_free(au, n_au);

    /* Garbage: refused, naming the file and the backend; nothing changes. */
    struct frozen f;
    freeze(cp, &f);
    write_tmp("ca.pem", "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n");
    ck_assert_int_eq(cp_tls_reload(cp, &reloaded, &err), LB_EINVAL);
    ck_assert(!reloaded);
    char want[512];
    snprintf(want, sizeof(want),
             "backend s caFile: %s/ca.pem holds a PEM block that is not a valid certificate",
             tmpdir);
    ck_assert_str_eq(err.msg, want);
    expect_frozen(cp, &f);
    free(f.snap);
    cp_tls_status(cp, &st);
    ck_assert_uint_eq(st.reload_errors, 1);
    ck_assert_str_eq(st.last_error, want);
    ck_assert_str_eq(st.bundle->backend_cas[0].info.subject, "CN=Test-CA-2");
    /* A missing file is refused the same way. */
    sh_tmp("rm ca.pem");
    ck_assert_int_eq(cp_tls_reload(cp, &reloaded, &err), LB_ESYS);
    ck_assert_msg(strncmp(err.msg, "backend s caFile: cannot read ", 30) == 0, "%s", err.msg);

    /* A write while the file is broken keeps the validated bytes. */
    write_tmp("ca.pem", "not a certificate\n");
    uint64_t v = 0;
    struct cp_backend_change upd = {.has_weight = true, .weight = 4};
    ck_assert_msg(cp_backend_update(cp, "a", &upd, &writer, &v, &err) == LB_OK, "%s", err.msg);
    ck_assert_uint_eq(v, v0 + 1);
    expect_backend_ca(cp, "s", "ca2.pem");
    cp_tls_status(cp, &st);
    ck_assert_msg(strstr(st.last_error, "backend s caFile: ") != NULL, "%s", st.last_error);

    /* Fixed: the next reload publishes it and clears the error. */
    sh_tmp("cp ca2.pem ca.pem");
    g0 = cp_generation(cp);
    ck_assert_msg(cp_tls_reload(cp, &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(!reloaded); /* the bytes served are these */
    cp_tls_status(cp, &st);
    ck_assert_str_eq(st.last_error, "");
    make_other_ca("ca3.pem", "Test-CA-3");
    sh_tmp("cp ca3.pem ca.pem");
    ck_assert_msg(cp_tls_reload(cp, &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(reloaded);
    ck_assert_uint_eq(cp_generation(cp), g0 + 1);
    expect_backend_ca(cp, "s", "ca3.pem");
    cp_free(cp);
}
END_TEST

/* A stored config whose backend CA turned to garbage still starts (the
 * admin API must come up to repair it), without publishing those bytes. */
START_TEST(backend_ca_broken_at_start)
{
    make_ca();
    struct cp *cp = open_cp(write_tmp("https.yaml", https_yaml));
    uint64_t v = cp_active_version(cp);
    cp_free(cp);
    write_tmp("ca.pem", "not a certificate\n");
    struct cp_config cfg = {.db_path = db, .config_dir = tmpdir, .control_base = base};
    struct lb_err err = {0};
    cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new: %s", err.msg);
    ck_assert_uint_eq(cp_active_version(cp), v);
    const uint8_t *buf;
    size_t len;
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_ENOTFOUND);
    /* still broken: a reload says why and publishes nothing */
    bool reloaded = true;
    ck_assert_int_ne(cp_tls_reload(cp, &reloaded, &err), LB_OK);
    ck_assert(!reloaded);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_ENOTFOUND);
    /* fixing the file is enough: the reload publishes the active version */
    make_ca();
    ck_assert_int_eq(cp_tls_reload_by(cp, "", &reloaded, &err), LB_EINVAL);
    ck_assert_msg(cp_tls_reload_by(cp, "token:ops", &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(reloaded);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    ck_assert_uint_eq(cp_active_version(cp), v);
    char fixed[64];
    snprintf(fixed, sizeof(fixed), "tls reload: files fixed: version %llu published",
             (unsigned long long)v);
    expect_audit(cp, "tls.reload", "token:ops", v, v, fixed);
    cp_free(cp);
    write_tmp("ca.pem", "not a certificate\n");
    cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new: %s", err.msg);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_ENOTFOUND);
    /* A write repairs it: the backend without its caFile is published. */
    struct cp_backend_change clear = {.ca_file = ""};
    ck_assert_msg(cp_backend_update(cp, "s", &clear, &writer, &v, &err) == LB_OK, "%s", err.msg);
    ck_assert_int_eq(cp_snapshot(cp, &buf, &len), LB_OK);
    cp_free(cp);

    /* A file gone missing does not stop a start either. */
    struct cp_backend_change back = {.ca_file = "ca.pem"};
    make_ca();
    cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new: %s", err.msg);
    ck_assert_msg(cp_backend_update(cp, "s", &back, &writer, &v, &err) == LB_OK, "%s", err.msg);
    cp_free(cp);
    char path[600];
    snprintf(path, sizeof(path), "%s/ca.pem", tmpdir);
    ck_assert_int_eq(unlink(path), 0);
    cp = cp_new(loop, &cfg, &err);
    ck_assert_msg(cp != NULL, "cp_new with the CA file gone: %s", err.msg);
    ck_assert_uint_eq(cp_active_version(cp), v);
    cp_free(cp);
}
END_TEST

/* A TLS frontend and an https:// backend: each part reloads on its own
 * change, and a write while the frontend's certificate is broken keeps the
 * served certificate next to the backend's new CA. */
START_TEST(frontend_and_backend_tls_files)
{
    make_ca();
    make_other_ca("ca2.pem", "Test-CA-2");
    sh_tmp("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
           "-out cert.pem -days 90 -subj /CN=web.test -addext subjectAltName=DNS:web.test");
    struct cp *cp = open_cp(
        write_tmp("tls.yaml", "frontends:\n"
                              "  - {name: web, address: 127.0.0.1, port: 8443, tls: true}\n"
                              "backends:\n"
                              "  - {id: a, url: \"http://127.0.0.1:9001\"}\n"
                              "  - {id: s, url: \"https://127.0.0.1:9443\", caFile: ca.pem}\n"
                              "ssl: {certFile: cert.pem, keyFile: key.pem}\n"));
    struct cp_tls_status st;
    cp_tls_status(cp, &st);
    ck_assert_uint_eq(st.bundle->n_certs, 1);
    ck_assert_uint_eq(st.bundle->n_backend_cas, 1);
    size_t cert_len = 0;
    uint8_t *cert = slurp("cert.pem", &cert_len);

    sh_tmp("cp ca2.pem ca.pem");
    bool reloaded = false;
    struct lb_err err = {0};
    ck_assert_msg(cp_tls_reload(cp, &reloaded, &err) == LB_OK, "%s", err.msg);
    ck_assert(reloaded);
    expect_backend_ca(cp, "s", "ca2.pem");
    cp_tls_status(cp, &st);
    ck_assert_msg(strstr(st.last_reload, "cert.pem") == NULL, "%s", st.last_reload);

    /* Broken certificate: a reload is refused as a whole. */
    write_tmp("cert.pem", "garbage\n");
    make_other_ca("ca3.pem", "Test-CA-3");
    sh_tmp("cp ca3.pem ca.pem");
    ck_assert_int_eq(cp_tls_reload(cp, &reloaded, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "cert.pem holds no PEM certificate") != NULL, "%s", err.msg);
    expect_backend_ca(cp, "s", "ca2.pem");

    /* A write: the served certificate stays, the valid new CA is taken. */
    uint64_t v = 0;
    struct cp_backend_change upd = {.has_weight = true, .weight = 2};
    ck_assert_msg(cp_backend_update(cp, "a", &upd, &writer, &v, &err) == LB_OK, "%s", err.msg);
    expect_backend_ca(cp, "s", "ca3.pem");
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(s->frontends[0]->tls->n_certificates, 1);
    const ProtobufCBinaryData *served = &s->frontends[0]->tls->certificates[0]->cert_pem;
    ck_assert_uint_eq(served->len, cert_len);
    ck_assert(memcmp(served->data, cert, cert_len) == 0);
    lb__v1__snapshot__free_unpacked(s, NULL);
    cp_tls_status(cp, &st);
    ck_assert_uint_eq(st.bundle->n_certs, 1);
    ck_assert_str_eq(st.bundle->certs[0].info.subject, "CN=web.test");
    ck_assert_str_eq(st.bundle->backend_cas[0].info.subject, "CN=Test-CA-3");
    free(cert);
    cp_free(cp);
}
END_TEST

START_TEST(store_failure_changes_nothing)
{
    struct cp *cp = open_cp(boot);
    struct frozen f;
    freeze(cp, &f);
    struct lb_err err = {0};
    uint64_t v = 0;
    struct cp_backend_change w2 = {.has_weight = true, .weight = 2};
    for (int n = 1; n <= 6; n++) {
        store__fail_after(cp__store(cp), n);
        ck_assert_int_eq(cp_backend_update(cp, "a", &w2, &writer, &v, &err), LB_ESTORE);
        ck_assert_ptr_nonnull(strstr(err.msg, "injected failure"));
        expect_frozen(cp, &f);
    }
    /* An author is required: an empty one is refused before anything. */
    struct cp_write anon = {.author = ""};
    ck_assert_int_eq(cp_backend_update(cp, "a", &w2, &anon, &v, &err), LB_EINVAL);
    expect_frozen(cp, &f);
    ck_assert_int_eq(cp_backend_update(cp, "a", &w2, &writer, &v, &err), LB_OK);
    ck_assert_uint_eq(v, 2);
    free(f.snap);
    cp_free(cp);
}
END_TEST

START_TEST(rollback_restores_weights)
{
    struct cp *cp = open_cp(boot);
    struct lb_err err = {0};
    uint64_t v = 0;
    struct cp_backend_change upd = {.has_weight = true, .weight = 1};
    ck_assert_int_eq(cp_backend_update(cp, "a", &upd, &writer, &v, &err), LB_OK);
    ck_assert_int_eq(cp_backend_update(cp, "b", &upd, &writer, &v, &err), LB_OK);
    ck_assert_uint_eq(v, 3);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(snap_weight(s, "a"), 1);
    lb__v1__snapshot__free_unpacked(s, NULL);

    uint64_t g0 = cp_generation(cp);
    ck_assert_int_eq(cp_rollback(cp, 1, &writer, &v, &err), LB_OK);
    ck_assert_uint_eq(v, 4);
    ck_assert_uint_eq(cp_generation(cp), g0 + 1);
    s = snapshot_of(cp);
    ck_assert_uint_eq(s->config_version, 4);
    ck_assert_uint_eq(snap_weight(s, "a"), 5);
    ck_assert_uint_eq(snap_weight(s, "b"), 3);
    lb__v1__snapshot__free_unpacked(s, NULL);

    struct config_diff *d = NULL;
    ck_assert_int_eq(cp_diff(cp, 3, 4, &d, &err), LB_OK);
    char *text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "backend a: weight 1 -> 5"));
    free(text);
    config_diff_free(d);
    ck_assert_int_eq(cp_diff(cp, 3, 99, &d, &err), LB_ENOTFOUND);
    cp_free(cp);
}
END_TEST

START_TEST(restart_keeps_version_and_raises_generation)
{
    struct cp *cp = open_cp(boot);
    uint64_t v = 0;
    struct cp_backend_change upd = {.has_weight = true, .weight = 8};
    ck_assert_int_eq(cp_backend_update(cp, "b", &upd, &writer, &v, NULL), LB_OK);
    uint64_t gen = cp_generation(cp);
    char hash[65];
    snprintf(hash, sizeof(hash), "%s", cp_config_hash(cp));
    cp_free(cp);

    cp = open_cp(NULL);
    ck_assert_uint_eq(cp_active_version(cp), v);
    ck_assert_uint_gt(cp_generation(cp), gen);
    ck_assert_str_eq(cp_config_hash(cp), hash);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(s->config_version, v);
    ck_assert_uint_eq(s->generation, cp_generation(cp));
    ck_assert_uint_eq(snap_weight(s, "b"), 8);
    lb__v1__snapshot__free_unpacked(s, NULL);
    uint64_t gen2 = cp_generation(cp);
    cp_free(cp);

    /* A bootstrap file is ignored once the store holds a version. */
    cp = open_cp(boot);
    ck_assert_uint_eq(cp_active_version(cp), v);
    ck_assert_uint_gt(cp_generation(cp), gen2);
    cp_free(cp);
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

/* Runs <turns> turns of the loop without blocking, pausing 10 ms after each
 * so that a message on its way (nanomsg delivers on its own threads) can
 * arrive. In a wait the pause only spaces the polls; where a test proves
 * that nothing happens, the turns are the thing under test. */
static void spin(int turns)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < turns; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        nanosleep(&ts, NULL);
    }
}

/* Loop turns a test that proves that nothing is published gives the loop; a
 * health change publishes on the next turn (a 0 s timer). */
#define QUIET_TURNS 5

START_TEST(reports_are_recorded)
{
    struct cp *cp = open_cp(boot);
    char pub[LB_ENDPOINT_MAX], rep[LB_ENDPOINT_MAX], pull[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split(base, pub, rep, pull, NULL), LB_OK);
    int sock = nn_socket(AF_SP, NN_PUSH);
    ck_assert_int_ge(sock, 0);
    ck_assert_int_ge(nn_connect(sock, pull), 0);
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = "host-a:77";
    r.applied_version = 1;
    r.applied_generation = 1;
    r.rejected_generation = 0;
    r.rejection_reason = "";
    uint8_t buf[256];
    size_t len = lb__v1__report__pack(&r, buf);
    int timeout = 2000;
    nn_setsockopt(sock, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof(timeout));
    ck_assert_int_eq(nn_send(sock, buf, len, 0), (int)len);

    struct store_dataplane *dps = NULL;
    size_t n = 0;
    for (uint64_t end = now_ms() + timeout_ms(); n == 0 && now_ms() < end;) {
        spin(1);
        store_dataplanes_free(dps, n);
        dps = NULL;
        n = 0;
        ck_assert_int_eq(cp_dataplanes(cp, &dps, &n, NULL), LB_OK);
    }
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(dps[0].node_id, "host-a:77");
    ck_assert_uint_eq(dps[0].applied_generation, 1);
    ck_assert_int_gt(dps[0].last_report_unix_ms, 0);
    store_dataplanes_free(dps, n);

    /* Straight through the callback: a rejection is kept. */
    r.rejected_generation = 2;
    r.rejection_reason = "bad cert";
    cp_on_report(cp, &r);
    ck_assert_int_eq(cp_dataplanes(cp, &dps, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(dps[0].rejected_generation, 2);
    ck_assert_str_eq(dps[0].rejection_reason, "bad cert");
    store_dataplanes_free(dps, n);
    nn_close(sock);
    cp_free(cp);
}
END_TEST

static Lb__V1__Health snap_health(struct cp *cp, const char *id)
{
    Lb__V1__Snapshot *s = snapshot_of(cp);
    Lb__V1__Health h = LB__V1__HEALTH__HEALTH_UNKNOWN;
    for (size_t i = 0; i < s->n_backends; i++)
        if (strcmp(s->backends[i]->id, id) == 0)
            h = s->backends[i]->health;
    lb__v1__snapshot__free_unpacked(s, NULL);
    return h;
}

static void report_ejected(struct cp *cp, const char *node, bool ejected, uint64_t ejections)
{
    Lb__V1__BackendReport a = LB__V1__BACKEND_REPORT__INIT, b = LB__V1__BACKEND_REPORT__INIT;
    Lb__V1__BackendReport *brs[2] = {&a, &b};
    a.id = "a";
    a.ejected = ejected;
    a.ejections = ejections;
    a.connections = 3;
    b.id = "b";
    Lb__V1__Report r = LB__V1__REPORT__INIT;
    r.node_id = (char *)node;
    r.started_unix_ms = 1;
    r.backends = brs;
    r.n_backends = 2;
    r.rejection_reason = "";
    cp_on_report(cp, &r);
}

static size_t audits_with(struct cp *cp, const char *text)
{
    struct store_audit *as = NULL;
    size_t n = 0, found = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 0, &as, &n, NULL), LB_OK);
    for (size_t i = 0; i < n; i++)
        found += strstr(as[i].detail, text) != NULL;
    store_audit_free(as, n);
    return found;
}

/* A data plane's ejection hands the backend to the health checks: DOWN at
 * once (stored, audited, published once), and later reports still saying
 * ejected change nothing while it is DOWN. */
START_TEST(ejection_marks_down_once)
{
    /* Checks an hour apart: no check runs during the test. */
    FILE *f = fopen(boot, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%shealthcheck: {interval: 1h, timeout: 1s, rise: 2, fall: 3}\n", boot_yaml);
    fclose(f);
    struct cp *cp = open_cp(boot);
    uint64_t g0 = cp_generation(cp);
    ck_assert_int_eq(health_state(cp_health(cp), "a"), STORE_HEALTH_UNKNOWN);

    /* Nothing ejected: nothing happens. */
    report_ejected(cp, "dp1", false, 0);
    spin(QUIET_TURNS);
    ck_assert_uint_eq(cp_generation(cp), g0);

    report_ejected(cp, "dp1", true, 1);
    ck_assert_int_eq(health_state(cp_health(cp), "a"), STORE_HEALTH_DOWN);
    ck_assert_int_eq(health_state(cp_health(cp), "b"), STORE_HEALTH_UNKNOWN);
    struct health_status st;
    ck_assert_int_eq(health_status_get(cp_health(cp), "a", &st), LB_OK);
    ck_assert_str_eq(st.last_error, "ejected by data plane dp1");
    /* Published, within the turns the quiet checks give the loop: they
     * would have seen a publication. */
    int turns = 0;
    for (uint64_t end = now_ms() + timeout_ms(); cp_generation(cp) == g0 && now_ms() < end;) {
        spin(1);
        turns++;
    }
    ck_assert_uint_eq(cp_generation(cp), g0 + 1);
    ck_assert_int_le(turns, QUIET_TURNS);
    ck_assert_int_eq(snap_health(cp, "a"), LB__V1__HEALTH__HEALTH_DOWN);
    struct store_backend_health *h = NULL;
    ck_assert_int_eq(store_health_get(cp__store(cp), "a", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_DOWN);
    store_health_free(h);
    ck_assert_uint_eq(audits_with(cp, "backend a down: ejected by data plane dp1"), 1);

    /* The runtime view sums the report fields. */
    struct cp_backend_runtime rt;
    cp_backend_runtime(cp, 0, time(NULL) * 1000LL, &rt);
    ck_assert(rt.ejected);
    ck_assert_uint_eq(rt.ejected_by, 1);
    ck_assert_uint_eq(rt.ejections, 1);
    ck_assert_uint_eq(rt.connections, 3);

    /* The data plane has not seen the new snapshot yet: still ejected, from
     * it and from another one, a counter rising too. Nothing changes. */
    report_ejected(cp, "dp1", true, 1);
    report_ejected(cp, "dp2", true, 4);
    report_ejected(cp, "dp1", true, 2);
    spin(QUIET_TURNS);
    ck_assert_uint_eq(cp_generation(cp), g0 + 1);
    ck_assert_uint_eq(audits_with(cp, "ejected by data plane"), 1);

    /* A pass is not enough to be up again (rise 2): the passes restarted. */
    struct health_fsm fsm = {.state = STORE_HEALTH_UP, .passes = 9};
    ck_assert(health_fsm_force_down(&fsm, 3));
    ck_assert(!health_fsm_feed(&fsm, true, 2, 3));
    ck_assert(health_fsm_feed(&fsm, true, 2, 3));
    ck_assert_int_eq(fsm.state, STORE_HEALTH_UP);
    cp_free(cp);
}
END_TEST

/* The publisher answers a sync request with the snapshot the core set. */
START_TEST(sync_serves_current_snapshot)
{
    struct cp *cp = open_cp(boot);
    char pub[LB_ENDPOINT_MAX], rep[LB_ENDPOINT_MAX], pull[LB_ENDPOINT_MAX];
    ck_assert_int_eq(lb_endpoints_split(base, pub, rep, pull, NULL), LB_OK);
    int sock = nn_socket(AF_SP, NN_REQ);
    ck_assert_int_ge(sock, 0);
    ck_assert_int_ge(nn_connect(sock, rep), 0);
    Lb__V1__SyncRequest rq = LB__V1__SYNC_REQUEST__INIT;
    rq.node_id = "n1";
    uint8_t buf[64];
    size_t len = lb__v1__sync_request__pack(&rq, buf);
    ck_assert_int_eq(nn_send(sock, buf, len, 0), (int)len);
    void *msg = NULL;
    int got = -1;
    for (uint64_t end = now_ms() + timeout_ms(); got < 0 && now_ms() < end;) {
        spin(1);
        got = nn_recv(sock, &msg, NN_MSG, NN_DONTWAIT);
    }
    ck_assert_int_gt(got, 0);
    Lb__V1__SyncReply *reply = lb__v1__sync_reply__unpack(NULL, (size_t)got, msg);
    ck_assert_ptr_nonnull(reply);
    ck_assert_ptr_nonnull(reply->snapshot);
    ck_assert_uint_eq(reply->snapshot->generation, cp_generation(cp));
    ck_assert_uint_eq(reply->snapshot->config_version, 1);
    lb__v1__sync_reply__free_unpacked(reply, NULL);
    nn_freemsg(msg);
    nn_close(sock);
    cp_free(cp);
}
END_TEST

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A data plane reports backend a failing every request and b healthy; with
 * balancing.weights dynamic one step lowers a's published weight by a
 * quarter of its configured weight, as a new generation of the same version
 * with an audit row; the config keeps weight 5. */
START_TEST(dynamic_weights_follow_errors)
{
    struct cp *cp = open_cp(boot);
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%sbalancing: {weights: dynamic}\n", boot_yaml);
    uint64_t v = 0;
    bool unchanged = false;
    struct lb_err err = {0};
    ck_assert_msg(cp_apply(cp, yaml, strlen(yaml), CP_FORMAT_YAML, &writer, &v, &unchanged, NULL,
                           &err) == LB_OK,
                  "%s", err.msg);
    uint64_t gen0 = cp_generation(cp);

    Lb__V1__BackendReport ra = LB__V1__BACKEND_REPORT__INIT, rb = LB__V1__BACKEND_REPORT__INIT;
    ra.id = "a";
    ra.requests = 100;
    ra.errors = 60;
    ra.connect_failures = 40;
    ra.latency_sum_us = 100 * 2000;
    ra.breaker = LB__V1__BREAKER_STATE__BREAKER_OPEN;
    rb.id = "b";
    rb.requests = 100;
    rb.latency_sum_us = 100 * 2000;
    Lb__V1__BackendReport *list[] = {&ra, &rb};
    Lb__V1__Report rep = LB__V1__REPORT__INIT;
    rep.node_id = "dp1";
    rep.applied_version = v;
    rep.applied_generation = gen0;
    rep.backends = list;
    rep.n_backends = 2;
    cp_on_report(cp, &rep);

    struct cp_backend_runtime rt;
    cp_backend_runtime(cp, 0, wall_ms(), &rt);
    ck_assert_str_eq(rt.breaker, "open");
    ck_assert_uint_eq(rt.breaker_open, 1);
    ck_assert_uint_eq(rt.requests, 100);
    ck_assert_uint_eq(rt.errors, 100);
    ck_assert_uint_eq(rt.effective_weight, 5);

    size_t changed = 0;
    ck_assert_int_eq(cp_weights_step(cp, wall_ms(), &changed, NULL), LB_OK);
    ck_assert_uint_eq(changed, 1);
    ck_assert_uint_eq(cp_active_version(cp), v);
    ck_assert_uint_gt(cp_generation(cp), gen0);
    Lb__V1__Snapshot *s = snapshot_of(cp);
    ck_assert_uint_eq(snap_weight(s, "a"), 4);
    ck_assert_uint_eq(snap_weight(s, "b"), 3);
    ck_assert_uint_eq(s->config_version, v);
    lb__v1__snapshot__free_unpacked(s, NULL);
    ck_assert_uint_eq(cp_config(cp)->backends[0].weight, 5);
    cp_backend_runtime(cp, 0, wall_ms(), &rt);
    ck_assert_uint_eq(rt.effective_weight, 4);

    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(cp__store(cp), 1, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(as[0].action, "weights");
    ck_assert_msg(strncmp(as[0].detail, "dynamic weights: a 5 -> 4 (p=2.0ms, err=100.0%)", 47) == 0,
                  "%s", as[0].detail);
    store_audit_free(as, n);

    /* No new requests since the step: too few to judge, nothing changes. */
    uint64_t gen1 = cp_generation(cp);
    ck_assert_int_eq(cp_weights_step(cp, wall_ms(), &changed, NULL), LB_OK);
    ck_assert_uint_eq(changed, 0);
    ck_assert_uint_eq(cp_generation(cp), gen1);

    /* A config change (a new version) keeps a's dynamic weight... */
    struct cp_backend_change chg = {.has_weight = true, .weight = 4};
    ck_assert_int_eq(cp_backend_update(cp, "b", &chg, &writer, &v, NULL), LB_OK);
    s = snapshot_of(cp);
    ck_assert_uint_eq(snap_weight(s, "a"), 4);
    ck_assert_uint_eq(snap_weight(s, "b"), 4);
    lb__v1__snapshot__free_unpacked(s, NULL);
    /* ...until weights go back to static. */
    ck_assert_int_eq(cp_apply(cp, boot_yaml, strlen(boot_yaml), CP_FORMAT_YAML, &writer, &v,
                              &unchanged, NULL, NULL),
                     LB_OK);
    s = snapshot_of(cp);
    ck_assert_uint_eq(snap_weight(s, "a"), 5);
    lb__v1__snapshot__free_unpacked(s, NULL);
    cp_free(cp);
}
END_TEST

static Suite *cp_suite(void)
{
    Suite *s = suite_create("cp");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"bootstrap", bootstrap_imports_version_one},
        {"empty", no_bootstrap_starts_empty},
        {"mutations", each_mutation_makes_one_version},
        {"long_detail", long_audit_detail_is_cut},
        {"rejected", rejected_changes_change_nothing},
        {"backend_tls", backend_tls_fields},
        {"backend_ca_reload", backend_ca_reloads},
        {"backend_ca_start", backend_ca_broken_at_start},
        {"tls_files", frontend_and_backend_tls_files},
        {"store_failure", store_failure_changes_nothing},
        {"rollback", rollback_restores_weights},
        {"restart", restart_keeps_version_and_raises_generation},
        {"reports", reports_are_recorded},
        {"ejection", ejection_marks_down_once},
        {"sync", sync_serves_current_snapshot},
        {"dynamic_weights", dynamic_weights_follow_errors},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
