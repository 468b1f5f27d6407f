/* tests/unit/proto/test_seal.c: the sealed feed (proto/seal.h). */
#include "seal.h"

#include "lb_err.h"
#include "lb_prom.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_A "1 " HEX_A "\n"
#define HEX_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX_B "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f"

static const uint8_t msg_text[] = "-----BEGIN PRIVATE KEY----- backend 10.0.0.1:8080";

static struct seal_keyring *ring(const char *text)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    ck_assert_msg(seal_keyring_parse(text, strlen(text), "t", &kr, &err) == LB_OK, "%s", err.msg);
    return kr;
}

static size_t seal_into(const struct seal_keyring *kr, enum seal_kind kind, const uint8_t *p,
                        size_t n, uint8_t *out)
{
    ck_assert_int_eq(seal_seal(kr, kind, p, n, out, NULL), LB_OK);
    return n + SEAL_OVERHEAD;
}

/* ---- seal and open ---------------------------------------------------------------- */

START_TEST(round_trip)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
    size_t n = seal_into(kr, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), buf);
    ck_assert(memmem(buf, n, "PRIVATE KEY", 11) == NULL);
    ck_assert(memmem(buf, n, "10.0.0.1", 8) == NULL);
    const uint8_t *plain = NULL;
    size_t plen = 0;
    uint32_t id = 0;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, &id), SEAL_OK);
    ck_assert_uint_eq(plen, sizeof(msg_text));
    ck_assert_mem_eq(plain, msg_text, plen);
    ck_assert_uint_eq(id, 1);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(empty_message_round_trips)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t buf[SEAL_OVERHEAD];
    size_t n = seal_into(kr, SEAL_KIND_SYNC_REPLY, NULL, 0, buf);
    const uint8_t *plain = NULL;
    size_t plen = 1;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SYNC_REPLY, buf, n, &plain, &plen, NULL), SEAL_OK);
    ck_assert_uint_eq(plen, 0);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(fresh_nonce_per_seal)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t a[sizeof(msg_text) + SEAL_OVERHEAD], b[sizeof(a)];
    seal_into(kr, SEAL_KIND_REPORT, msg_text, sizeof(msg_text), a);
    seal_into(kr, SEAL_KIND_REPORT, msg_text, sizeof(msg_text), b);
    ck_assert(memcmp(a + 10, b + 10, SEAL_NONCE_LEN) != 0);
    ck_assert(memcmp(a + SEAL_HEADER, b + SEAL_HEADER, sizeof(msg_text)) != 0);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(wrong_key_same_id)
{
    struct seal_keyring *a = ring(KEY_A), *b = ring("1 " HEX_B);
    uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
    size_t n = seal_into(a, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), buf);
    const uint8_t *plain = NULL;
    size_t plen = 0;
    ck_assert_int_eq(seal_open(b, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL),
                     SEAL_AUTH_FAILED);
    ck_assert_ptr_null(plain);
    /* nothing of the (wrongly decrypted) body stays behind */
    for (size_t i = SEAL_HEADER; i < n - SEAL_TAG_LEN; i++)
        ck_assert_uint_eq(buf[i], 0);
    seal_keyring_free(a);
    seal_keyring_free(b);
}
END_TEST

START_TEST(unknown_key_id)
{
    struct seal_keyring *a = ring(KEY_A), *b = ring("2 " HEX_A);
    uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
    size_t n = seal_into(a, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), buf);
    const uint8_t *plain = NULL;
    size_t plen = 0;
    ck_assert_int_eq(seal_open(b, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL),
                     SEAL_UNKNOWN_KEY);
    seal_keyring_free(a);
    seal_keyring_free(b);
}
END_TEST

START_TEST(wrong_kind)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
    size_t n = seal_into(kr, SEAL_KIND_REPORT, msg_text, sizeof(msg_text), buf);
    const uint8_t *plain = NULL;
    size_t plen = 0;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL),
                     SEAL_WRONG_KIND);
    /* relabelling the kind breaks the tag: the header is authenticated */
    buf[5] = SEAL_KIND_SNAPSHOT;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL),
                     SEAL_AUTH_FAILED);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(unsealed_refused)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
    memset(buf, 0, sizeof(buf));
    memcpy(buf, msg_text, sizeof(msg_text));
    const uint8_t *plain = NULL;
    size_t plen = 0;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, sizeof(buf), &plain, &plen, NULL),
                     SEAL_UNSEALED);
    size_t n = seal_into(kr, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), buf);
    buf[4] = 2; /* a format version we do not speak */
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL), SEAL_UNSEALED);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(truncated_at_every_length)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t good[sizeof(msg_text) + SEAL_OVERHEAD], buf[sizeof(good)];
    size_t n = seal_into(kr, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), good);
    for (size_t len = 0; len < n; len++) {
        /* at the end of an exact-size heap block, so ASan sees any over-read */
        uint8_t *m = malloc(len ? len : 1);
        memcpy(m, good, len);
        const uint8_t *plain = NULL;
        size_t plen = 0;
        enum seal_status st = seal_open(kr, SEAL_KIND_SNAPSHOT, m, len, &plain, &plen, NULL);
        ck_assert_msg(st != SEAL_OK, "truncated to %zu bytes opened", len);
        free(m);
    }
    memcpy(buf, good, n);
    const uint8_t *plain = NULL;
    size_t plen = 0;
    ck_assert_int_eq(seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL), SEAL_OK);
    seal_keyring_free(kr);
}
END_TEST

START_TEST(every_bit_flipped)
{
    struct seal_keyring *kr = ring(KEY_A);
    uint8_t good[sizeof(msg_text) + SEAL_OVERHEAD], buf[sizeof(good)];
    size_t n = seal_into(kr, SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), good);
    for (size_t bit = 0; bit < n * 8; bit++) {
        memcpy(buf, good, n);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        const uint8_t *plain = NULL;
        size_t plen = 0;
        enum seal_status st = seal_open(kr, SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL);
        ck_assert_msg(st != SEAL_OK, "bit %zu flipped still opens", bit);
        ck_assert_ptr_null(plain);
    }
    seal_keyring_free(kr);
}
END_TEST

START_TEST(rotation_two_keys)
{
    struct seal_keyring *old = ring(KEY_A);
    struct seal_keyring *both = ring(KEY_A "2 " HEX_B "\n");       /* step 1: added second */
    struct seal_keyring *moved = ring("2 " HEX_B "\n" KEY_A);      /* step 2: new one first */
    struct seal_keyring *fresh = ring("# rotated\n2 " HEX_B "\n"); /* step 3: old dropped */
    ck_assert_uint_eq(seal_keyring_count(both), 2);
    ck_assert_uint_eq(seal_keyring_seal_id(both), 1);
    ck_assert_uint_eq(seal_keyring_seal_id(moved), 2);
    struct seal_keyring *rings[] = {old, both, moved, fresh};
    /* who can open what each ring seals: every ring of a neighbouring step */
    static const bool opens[4][4] = {
        /* sealer old:   */ {true, true, true, false},
        /* sealer both:  */ {true, true, true, false},
        /* sealer moved: */ {false, true, true, true},
        /* sealer fresh: */ {false, true, true, true},
    };
    for (int s = 0; s < 4; s++)
        for (int o = 0; o < 4; o++) {
            uint8_t buf[sizeof(msg_text) + SEAL_OVERHEAD];
            size_t n = seal_into(rings[s], SEAL_KIND_SNAPSHOT, msg_text, sizeof(msg_text), buf);
            const uint8_t *plain = NULL;
            size_t plen = 0;
            enum seal_status st =
                seal_open(rings[o], SEAL_KIND_SNAPSHOT, buf, n, &plain, &plen, NULL);
            ck_assert_msg((st == SEAL_OK) == opens[s][o], "sealer %d opener %d: %s", s, o,
                          seal_status_name(st));
        }
    for (int i = 0; i < 4; i++)
        seal_keyring_free(rings[i]);
}
END_TEST

/* ---- key files ------------------------------------------------------------------- */

static void parse_fails(const char *text, const char *want)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(seal_keyring_parse(text, strlen(text), "f.key", &kr, &err), LB_EINVAL);
    ck_assert_ptr_null(kr);
    ck_assert_msg(strstr(err.msg, want) != NULL, "\"%s\" lacks \"%s\"", err.msg, want);
    /* errors never echo key material */
    ck_assert(strstr(err.msg, "0102030405") == NULL);
    ck_assert(strstr(err.msg, "f0e1d2c3") == NULL);
}

START_TEST(key_file_errors)
{
    parse_fails("", "holds no key");
    parse_fails("# nothing\n\n   \n", "holds no key");
    parse_fails("1 " HEX_A "00\n", "f.key:1: want"); /* too long */
    parse_fails("1 0102030405\n", "f.key:1: want");  /* too short */
    parse_fails("\n1 " HEX_A "zz\n", "f.key:2: want");
    parse_fails("1 f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1eXY\n", ":1: want");
    parse_fails("0 " HEX_A "\n", ":1: want");          /* id 0 */
    parse_fails("4294967296 " HEX_A "\n", ":1: want"); /* id too large */
    parse_fails("x " HEX_A "\n", ":1: want");
    parse_fails(HEX_A "\n", ":1: want");     /* no id */
    parse_fails("1" HEX_A "\n", ":1: want"); /* no space */
    parse_fails("1 " HEX_A " extra\n", ":1: want");
    parse_fails(KEY_A "1 " HEX_B "\n", "f.key:2: key id 1 appears twice");
    char many[4096] = "";
    for (int i = 1; i <= SEAL_MAX_KEYS + 1; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%d %s\n", i, HEX_A);
    parse_fails(many, "more than 16 keys");
}
END_TEST

START_TEST(key_file_accepts_comments_and_blanks)
{
    struct seal_keyring *kr =
        ring("# feed key\n\n  7\t" HEX_A "  # current\r\n4294967295 " HEX_B); /* no final NL */
    ck_assert_uint_eq(seal_keyring_count(kr), 2);
    ck_assert_uint_eq(seal_keyring_seal_id(kr), 7);
    seal_keyring_free(kr);
}
END_TEST

static char tmpdir[64];

static void dir_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-seal-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void dir_teardown(void)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/k", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

static const char *write_key(const char *text, mode_t mode)
{
    static char p[128];
    snprintf(p, sizeof(p), "%s/k", tmpdir);
    unlink(p);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(p, mode), 0);
    return p;
}

START_TEST(key_file_permissions)
{
    static const mode_t bad[] = {0640, 0604, 0660, 0644, 0610, 0601, 0700 | 0040, 0602};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = write_key(KEY_A, bad[i]);
        struct seal_keyring *kr = NULL;
        struct lb_err err = {0};
        ck_assert_int_eq(seal_keyring_load(p, &kr, &err), LB_EINVAL);
        ck_assert_ptr_null(kr);
        ck_assert_msg(strstr(err.msg, p) != NULL && strstr(err.msg, "chmod 600") != NULL, "%s",
                      err.msg);
    }
    static const mode_t good[] = {0600, 0400};
    for (size_t i = 0; i < 2; i++) {
        struct seal_keyring *kr = NULL;
        struct lb_err err = {0};
        ck_assert_msg(seal_keyring_load(write_key(KEY_A, good[i]), &kr, &err) == LB_OK, "%s",
                      err.msg);
        ck_assert_uint_eq(seal_keyring_seal_id(kr), 1);
        seal_keyring_free(kr);
    }
}
END_TEST

START_TEST(key_file_missing_or_not_regular)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    char p[128];
    snprintf(p, sizeof(p), "%s/none", tmpdir);
    ck_assert_int_eq(seal_keyring_load(p, &kr, &err), LB_ESYS);
    ck_assert(strstr(err.msg, p) != NULL);
    ck_assert_int_eq(seal_keyring_load(tmpdir, &kr, &err), LB_EINVAL);
    ck_assert(strstr(err.msg, "not a regular file") != NULL);
    ck_assert_ptr_null(kr);
    const char *bad = write_key("1 " HEX_A "0\n", 0600);
    ck_assert_int_eq(seal_keyring_load(bad, &kr, &err), LB_EINVAL);
    ck_assert(strstr(err.msg, ":1: want") != NULL);
}
END_TEST

/* ---- counters and policy --------------------------------------------------------------- */

START_TEST(counts_rate_limit_logs)
{
    struct seal_counts c = {0};
    uint64_t sup = 99;
    ck_assert(seal_counts_add(&c, SEAL_AUTH_FAILED, 1000, &sup));
    ck_assert_uint_eq(sup, 0);
    ck_assert(!seal_counts_add(&c, SEAL_AUTH_FAILED, 2000, &sup));
    ck_assert(!seal_counts_add(&c, SEAL_AUTH_FAILED, 10999, &sup));
    ck_assert(seal_counts_add(&c, SEAL_REPLAY, 3000, &sup)); /* per reason */
    ck_assert(seal_counts_add(&c, SEAL_AUTH_FAILED, 11000, &sup));
    ck_assert_uint_eq(sup, 2);
    ck_assert_uint_eq(c.n[SEAL_AUTH_FAILED], 4);
    ck_assert_uint_eq(c.n[SEAL_REPLAY], 1);

    struct lb_prom p;
    lb_prom_init(&p);
    seal_prom(&p, &c, true, false);
    ck_assert(strstr(p.buf, "lb_feed_rejected_total{reason=\"auth_failed\"} 4\n") != NULL);
    ck_assert(strstr(p.buf, "lb_feed_rejected_total{reason=\"replay\"} 1\n") != NULL);
    ck_assert(strstr(p.buf, "lb_feed_rejected_total{reason=\"unsealed\"} 0\n") != NULL);
    ck_assert(strstr(p.buf, "reason=\"ok\"") == NULL);
    ck_assert(strstr(p.buf, "lb_feed_rejected_total{reason=\"unknown_node\"} 0\n") != NULL);
    ck_assert(strstr(p.buf, "lb_feed_sealed 1\n") != NULL);
    ck_assert(strstr(p.buf, "lb_feed_insecure 0\n") != NULL);
    lb_prom_deinit(&p);
}
END_TEST

START_TEST(feed_policy)
{
    bool warn = true;
    struct lb_err err = {0};
    ck_assert_int_eq(seal_feed_policy("ipc:///run/lb", false, false, &warn, &err), LB_OK);
    ck_assert(!warn);
    ck_assert_int_eq(seal_feed_policy("tcp://127.0.0.1:7000", true, false, &warn, &err), LB_OK);
    ck_assert(!warn);
    ck_assert_int_eq(seal_feed_policy("tcp://127.0.0.1:7000", false, false, &warn, &err),
                     LB_EINVAL);
    ck_assert(strstr(err.msg, "--feed-key") != NULL && strstr(err.msg, "--feed-insecure") != NULL);
    ck_assert_int_eq(seal_feed_policy("tcp://127.0.0.1:7000", false, true, &warn, &err), LB_OK);
    ck_assert(warn);
    ck_assert_int_eq(seal_feed_policy("ipc:///run/lb", true, true, &warn, &err), LB_EINVAL);
}
END_TEST

static Suite *seal_suite(void)
{
    Suite *s = suite_create("seal");
    TCase *tc = tcase_create("seal_open");
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, empty_message_round_trips);
    tcase_add_test(tc, fresh_nonce_per_seal);
    tcase_add_test(tc, wrong_key_same_id);
    tcase_add_test(tc, unknown_key_id);
    tcase_add_test(tc, wrong_kind);
    tcase_add_test(tc, unsealed_refused);
    tcase_add_test(tc, truncated_at_every_length);
    tcase_add_test(tc, every_bit_flipped);
    tcase_add_test(tc, rotation_two_keys);
    suite_add_tcase(s, tc);

    tc = tcase_create("key_file");
    tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
    tcase_add_test(tc, key_file_errors);
    tcase_add_test(tc, key_file_accepts_comments_and_blanks);
    tcase_add_test(tc, key_file_permissions);
    tcase_add_test(tc, key_file_missing_or_not_regular);
    suite_add_tcase(s, tc);

    tc = tcase_create("feed");
    tcase_add_test(tc, counts_rate_limit_logs);
    tcase_add_test(tc, feed_policy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(seal_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
