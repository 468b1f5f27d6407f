/* tests/unit/controlplane/test_store.c */
#include "lb_err.h"
#include "store.h"

#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];
static char dbpath[512];
static struct store *st;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-test-store-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/lb.db", dir);
    struct lb_err err = {0};
    st = store_open(dbpath, &err);
    ck_assert_msg(st != NULL, "%s", err.msg);
}

static void teardown(void)
{
    store_close(st);
    st = NULL;
    char p[600];
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", dbpath, suffixes[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void reopen(void)
{
    store_close(st);
    struct lb_err err = {0};
    st = store_open(dbpath, &err);
    ck_assert_msg(st != NULL, "%s", err.msg);
}

static uint64_t put(const char *content, const char *author)
{
    uint64_t n = 0;
    struct lb_err err = {0};
    ck_assert_msg(store_version_put(st, content, "hash-of-it", author, "c", &n, &err) == LB_OK,
                  "%s", err.msg);
    return n;
}

static uint64_t active(void)
{
    uint64_t n = 0;
    ck_assert_int_eq(store_active_version(st, &n, NULL), LB_OK);
    return n;
}

START_TEST(versions_increase)
{
    struct lb_err err = {0};
    uint64_t n;
    ck_assert_int_eq(store_active_version(st, &n, &err), LB_ENOTFOUND);
    ck_assert_uint_eq(put("one", "uid:1000"), 1);
    ck_assert_uint_eq(active(), 1);
    ck_assert_uint_eq(put("two", "token:ci"), 2);
    ck_assert_uint_eq(put("three", "uid:0"), 3);
    ck_assert_uint_eq(active(), 3);
    struct store_version *v = NULL;
    ck_assert_int_eq(store_version_get(st, 2, &v, NULL), LB_OK);
    ck_assert_str_eq(v->content, "two");
    ck_assert_str_eq(v->author, "token:ci");
    ck_assert_str_eq(v->hash, "hash-of-it");
    ck_assert_str_eq(v->comment, "c");
    ck_assert_int_gt(v->created_unix_ms, 1600000000000LL);
    store_version_free(v);
    ck_assert_int_eq(store_version_get(st, 9, &v, &err), LB_ENOTFOUND);
    ck_assert_str_eq(err.msg, "config version 9 does not exist");
    ck_assert_int_eq(store_version_put(st, "", "h", "uid:1", NULL, &n, &err), LB_EINVAL);
}
END_TEST

START_TEST(list_newest_first)
{
    put("a", "uid:1");
    put("b", "uid:1");
    put("c", "uid:1");
    struct store_version *vs = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_versions_list(st, 2, &vs, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(vs[0].number, 3);
    ck_assert_uint_eq(vs[1].number, 2);
    ck_assert_str_eq(vs[0].content, "");
    store_versions_free(vs, n);
    ck_assert_int_eq(store_versions_list(st, 0, &vs, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(vs[2].number, 1);
    store_versions_free(vs, n);
}
END_TEST

START_TEST(rollback_is_new_version)
{
    put("first", "uid:1000");
    put("second", "uid:1000");
    uint64_t n = 0;
    struct lb_err err = {0};
    ck_assert_int_eq(store_rollback(st, 1, "token:ops", "bad deploy", &n, &err), LB_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(active(), 3);
    struct store_version *v = NULL;
    ck_assert_int_eq(store_version_get(st, 3, &v, NULL), LB_OK);
    ck_assert_str_eq(v->content, "first");
    ck_assert_str_eq(v->author, "token:ops");
    store_version_free(v);
    /* History kept: version 2 is still there, unchanged. */
    ck_assert_int_eq(store_version_get(st, 2, &v, NULL), LB_OK);
    ck_assert_str_eq(v->content, "second");
    store_version_free(v);

    struct store_audit *as = NULL;
    size_t na = 0;
    ck_assert_int_eq(store_audit_list(st, 0, &as, &na, NULL), LB_OK);
    ck_assert_uint_eq(na, 3);
    ck_assert_str_eq(as[0].action, "rollback");
    ck_assert_str_eq(as[0].who, "token:ops");
    ck_assert_uint_eq(as[0].from_version, 2);
    ck_assert_uint_eq(as[0].to_version, 3);
    ck_assert_str_eq(as[0].detail, "content of version 1: bad deploy");
    ck_assert_str_eq(as[1].action, "config.put");
    ck_assert_uint_eq(as[1].from_version, 1);
    ck_assert_uint_eq(as[1].to_version, 2);
    ck_assert_uint_eq(as[2].from_version, 0);
    ck_assert_uint_eq(as[2].to_version, 1);
    store_audit_free(as, na);

    ck_assert_int_eq(store_rollback(st, 42, "uid:1", NULL, &n, &err), LB_ENOTFOUND);
    ck_assert_uint_eq(active(), 3);
}
END_TEST

START_TEST(reopen_keeps_everything)
{
    put("x", "uid:1");
    put("y", "uid:2");
    ck_assert_int_eq(store_health_set(st, "b1", STORE_HEALTH_UP, NULL, 1000, NULL), LB_OK);
    struct store_dataplane dp = {.node_id = "dp-1", .applied_version = 2};
    ck_assert_int_eq(store_dataplane_upsert(st, &dp, NULL), LB_OK);
    reopen();
    ck_assert_uint_eq(active(), 2);
    struct store_version *v = NULL;
    ck_assert_int_eq(store_version_get(st, 1, &v, NULL), LB_OK);
    ck_assert_str_eq(v->content, "x");
    store_version_free(v);
    struct store_backend_health *h = NULL;
    ck_assert_int_eq(store_health_get(st, "b1", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_UP);
    store_health_free(h);
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_dataplanes_list(st, &dps, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(dps[0].applied_version, 2);
    store_dataplanes_free(dps, n);
    struct store_audit *as = NULL;
    ck_assert_int_eq(store_audit_list(st, 0, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 2);
    store_audit_free(as, n);
    ck_assert_uint_eq(put("z", "uid:3"), 3);
}
END_TEST

START_TEST(newer_schema_refused)
{
    store_close(st);
    st = NULL;
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    /* A pristine db was migrated to the current version. */
    sqlite3_stmt *s;
    ck_assert_int_eq(
        sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &s, NULL),
        SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(s, 0), STORE_SCHEMA_VERSION);
    sqlite3_finalize(s);
    ck_assert_int_eq(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct lb_err err = {0};
    ck_assert_ptr_null(store_open(dbpath, &err));
    ck_assert_int_eq(err.code, LB_ESTORE);
    char want[64];
    snprintf(want, sizeof(want), "schema version 99, newer than this build's %d",
             STORE_SCHEMA_VERSION);
    ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
    /* Reopening at the current version works and keeps the schema. */
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    char back[96];
    snprintf(back, sizeof(back), "UPDATE meta SET value = '%d' WHERE key = 'schema_version'",
             STORE_SCHEMA_VERSION);
    sqlite3_exec(db, back, NULL, NULL, NULL);
    sqlite3_close(db);
    reopen();
}
END_TEST

START_TEST(versions_immutable)
{
    put("x", "uid:1");
    store_close(st);
    st = NULL;
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    ck_assert_int_ne(sqlite3_exec(db, "UPDATE config_versions SET content = 'y'", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_ne(sqlite3_exec(db, "DELETE FROM config_versions", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    reopen();
}
END_TEST

/* Snapshot of everything a config write touches. */
struct state {
    uint64_t active;
    size_t versions;
    size_t audits;
};

static struct state snap(void)
{
    struct state s = {0};
    store_active_version(st, &s.active, NULL);
    struct store_version *vs = NULL;
    ck_assert_int_eq(store_versions_list(st, 0, &vs, &s.versions, NULL), LB_OK);
    store_versions_free(vs, s.versions);
    struct store_audit *as = NULL;
    ck_assert_int_eq(store_audit_list(st, 0, &as, &s.audits, NULL), LB_OK);
    store_audit_free(as, s.audits);
    return s;
}

START_TEST(injected_failure_changes_nothing)
{
    put("v1", "uid:1");
    put("v2", "uid:1");
    struct state before = snap();
    /* version_put runs 5 statements: next number, active, insert version,
     * activate, audit. Failing any of them must leave everything as it was. */
    for (int i = 1; i <= 5; i++) {
        store__fail_after(st, i);
        uint64_t n = 0;
        struct lb_err err = {0};
        ck_assert_int_eq(store_version_put(st, "v3", "h", "uid:1", NULL, &n, &err), LB_ESTORE);
        ck_assert_msg(strstr(err.msg, "injected failure") != NULL, "%s", err.msg);
        struct state after = snap();
        ck_assert_uint_eq(after.active, before.active);
        ck_assert_uint_eq(after.versions, before.versions);
        ck_assert_uint_eq(after.audits, before.audits);
    }
    /* Rollback: read, next, active, insert, activate, audit. */
    for (int i = 1; i <= 6; i++) {
        store__fail_after(st, i);
        uint64_t n = 0;
        ck_assert_int_eq(store_rollback(st, 1, "uid:1", NULL, &n, NULL), LB_ESTORE);
        struct state after = snap();
        ck_assert_uint_eq(after.active, before.active);
        ck_assert_uint_eq(after.versions, before.versions);
        ck_assert_uint_eq(after.audits, before.audits);
    }
    /* The hook is one-shot and a failure beyond the last statement is a no-op. */
    store__fail_after(st, 6);
    ck_assert_uint_eq(put("v3", "uid:1"), 3);
    ck_assert_uint_eq(active(), 3);
    struct state after = snap();
    ck_assert_uint_eq(after.versions, 3);
    ck_assert_uint_eq(after.audits, 3);
}
END_TEST

START_TEST(health_upsert)
{
    struct store_backend_health *h = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(store_health_get(st, "b1", &h, &err), LB_ENOTFOUND);
    ck_assert_int_eq(store_health_set(st, "b1", STORE_HEALTH_UP, NULL, 1000, NULL), LB_OK);
    ck_assert_int_eq(store_health_set(st, "b1", STORE_HEALTH_UP, NULL, 2000, NULL), LB_OK);
    ck_assert_int_eq(store_health_get(st, "b1", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_UP);
    ck_assert_int_eq(h->last_check_unix_ms, 2000);
    ck_assert_int_eq(h->health_changed_unix_ms, 1000); /* same verdict: no change */
    ck_assert_str_eq(h->last_error, "");
    store_health_free(h);
    ck_assert_int_eq(store_health_set(st, "b1", STORE_HEALTH_DOWN, "connect refused", 3000, NULL),
                     LB_OK);
    ck_assert_int_eq(store_health_set(st, "a0", STORE_HEALTH_UNKNOWN, NULL, 3000, NULL), LB_OK);
    ck_assert_int_eq(store_health_get(st, "b1", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_DOWN);
    ck_assert_int_eq(h->health_changed_unix_ms, 3000);
    ck_assert_str_eq(h->last_error, "connect refused");
    store_health_free(h);
    struct store_backend_health *hs = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_health_list(st, &hs, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(hs[0].id, "a0");
    ck_assert_str_eq(hs[1].id, "b1");
    store_health_list_free(hs, n);
    /* A failed write leaves the row as it was. */
    store__fail_after(st, 1);
    ck_assert_int_eq(store_health_set(st, "b1", STORE_HEALTH_UP, NULL, 4000, NULL), LB_ESTORE);
    ck_assert_int_eq(store_health_get(st, "b1", &h, NULL), LB_OK);
    ck_assert_int_eq(h->health, STORE_HEALTH_DOWN);
    store_health_free(h);
}
END_TEST

START_TEST(dataplane_upsert)
{
    struct store_dataplane dp = {.node_id = "dp-b",
                                 .applied_version = 1,
                                 .applied_generation = 4,
                                 .last_report_unix_ms = 10};
    ck_assert_int_eq(store_dataplane_upsert(st, &dp, NULL), LB_OK);
    dp.node_id = "dp-a";
    ck_assert_int_eq(store_dataplane_upsert(st, &dp, NULL), LB_OK);
    dp.node_id = "dp-b";
    dp.rejected_generation = 5;
    dp.rejection_reason = "backend b1: bad port";
    dp.last_report_unix_ms = 20;
    ck_assert_int_eq(store_dataplane_upsert(st, &dp, NULL), LB_OK);
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_dataplanes_list(st, &dps, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(dps[0].node_id, "dp-a");
    ck_assert_str_eq(dps[0].rejection_reason, "");
    ck_assert_str_eq(dps[1].node_id, "dp-b");
    ck_assert_uint_eq(dps[1].applied_generation, 4);
    ck_assert_uint_eq(dps[1].rejected_generation, 5);
    ck_assert_str_eq(dps[1].rejection_reason, "backend b1: bad port");
    ck_assert_int_eq(dps[1].last_report_unix_ms, 20);
    store_dataplanes_free(dps, n);
}
END_TEST

START_TEST(audit_add_and_limit)
{
    ck_assert_int_eq(store_audit_add(st, "uid:1000", "backend.drain", "b1", 0, 0, NULL), LB_OK);
    ck_assert_int_eq(store_audit_add(st, "token:ci", "backend.enable", NULL, 0, 0, NULL), LB_OK);
    struct store_audit *as = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_audit_list(st, 1, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(as[0].action, "backend.enable");
    ck_assert_str_eq(as[0].detail, "");
    store_audit_free(as, n);
    ck_assert_int_eq(store_audit_add(st, "", "x", NULL, 0, 0, NULL), LB_EINVAL);
}
END_TEST

/* Rows at known times through store_health_changes(), whose audit rows carry
 * the check's time: 1000 "health" x, 2000 "health" y, then two by people. */
static void audit_rows(void)
{
    const struct store_health_change chg[] = {
        {.id = "x", .health = STORE_HEALTH_UP, .now_ms = 1000, .detail = "backend x up"},
        {.id = "y", .health = STORE_HEALTH_DOWN, .now_ms = 2000, .detail = "backend y down"},
    };
    ck_assert_int_eq(store_health_changes(st, chg, 2, "health", NULL), LB_OK);
    ck_assert_int_eq(store_audit_add(st, "uid:1000", "backend.drain", "b1", 4, 5, NULL), LB_OK);
    ck_assert_int_eq(store_audit_add(st, "token:ops", "tls.reload", "cert", 5, 5, NULL), LB_OK);
}

/* Runs <f> and checks the details of the rows, newest first, against <want>
 * (NULL-terminated). */
static void expect_query(const struct store_audit_filter *f, const char *const *want)
{
    struct store_audit *as = NULL;
    size_t n = 0;
    struct lb_err err = {0};
    ck_assert_msg(store_audit_query(st, f, &as, &n, &err) == LB_OK, "%s", err.msg);
    size_t k = 0;
    while (want[k] != NULL)
        k++;
    ck_assert_uint_eq(n, k);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(as[i].detail, want[i]);
        if (i > 0)
            ck_assert_int_lt(as[i].id, as[i - 1].id);
    }
    store_audit_free(as, n);
}

START_TEST(audit_query_filters)
{
    audit_rows();
    const char *const all[] = {"cert", "b1", "backend y down", "backend x up", NULL};
    expect_query(NULL, all);
    struct store_audit_filter f = {0};
    expect_query(&f, all);

    /* since: inclusive */
    f = (struct store_audit_filter){.since_unix_ms = 2000};
    expect_query(&f, (const char *const[]){"cert", "b1", "backend y down", NULL});
    f.since_unix_ms = 2001;
    expect_query(&f, (const char *const[]){"cert", "b1", NULL});

    /* who, action: exact, and together */
    f = (struct store_audit_filter){.who = "health"};
    expect_query(&f, (const char *const[]){"backend y down", "backend x up", NULL});
    f = (struct store_audit_filter){.action = "tls.reload"};
    expect_query(&f, (const char *const[]){"cert", NULL});
    f = (struct store_audit_filter){.who = "", .action = ""};
    expect_query(&f, all);
    f = (struct store_audit_filter){.who = "uid:1000", .action = "tls.reload"};
    expect_query(&f, (const char *const[]){NULL});
    f = (struct store_audit_filter){.who = "health", .since_unix_ms = 1500};
    expect_query(&f, (const char *const[]){"backend y down", NULL});

    /* limit keeps the newest */
    f = (struct store_audit_filter){.limit = 3};
    expect_query(&f, (const char *const[]){"cert", "b1", "backend y down", NULL});
    f = (struct store_audit_filter){.who = "health", .limit = 1};
    expect_query(&f, (const char *const[]){"backend y down", NULL});

    /* no pattern matching, no SQL from the values */
    f = (struct store_audit_filter){.who = "%"};
    expect_query(&f, (const char *const[]){NULL});
    f = (struct store_audit_filter){.who = "uid:%"};
    expect_query(&f, (const char *const[]){NULL});
    f = (struct store_audit_filter){.action = "x' OR '1'='1"};
    expect_query(&f, (const char *const[]){NULL});

    /* the row's fields */
    struct store_audit *as = NULL;
    size_t n = 0;
    f = (struct store_audit_filter){.action = "backend.drain"};
    ck_assert_int_eq(store_audit_query(st, &f, &as, &n, NULL), LB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(as[0].who, "uid:1000");
    ck_assert_uint_eq(as[0].from_version, 4);
    ck_assert_uint_eq(as[0].to_version, 5);
    ck_assert_int_gt(as[0].time_unix_ms, 2000);
    store_audit_free(as, n);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("versions");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, versions_increase);
    tcase_add_test(tc, list_newest_first);
    tcase_add_test(tc, rollback_is_new_version);
    tcase_add_test(tc, versions_immutable);
    suite_add_tcase(s, tc);
    tc = tcase_create("durability");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reopen_keeps_everything);
    tcase_add_test(tc, newer_schema_refused);
    tcase_add_test(tc, injected_failure_changes_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("runtime");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, health_upsert);
    tcase_add_test(tc, dataplane_upsert);
    tcase_add_test(tc, audit_add_and_limit);
    tcase_add_test(tc, audit_query_filters);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
