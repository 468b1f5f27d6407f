/* tests/unit/proto/test_prom.c: Prometheus text writer (proto/lb_prom.h). */
#include "lb_prom.h"

#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct lb_prom g_p;

static void prom_setup(void)
{
    lb_prom_init(&g_p);
    ck_assert(!g_p.oom);
    ck_assert_ptr_nonnull(g_p.buf);
    ck_assert_uint_eq(g_p.len, 0);
    ck_assert_str_eq(g_p.buf, "");
}

static void prom_teardown(void)
{
    lb_prom_deinit(&g_p);
    ck_assert_ptr_null(g_p.buf);
    ck_assert_uint_eq(g_p.len, 0);
}

static void assert_text(const char *want)
{
    ck_assert(!g_p.oom);
    ck_assert_uint_eq(g_p.len, strlen(g_p.buf));
    ck_assert_str_eq(g_p.buf, want);
}

/* ---- a checker for the exposition grammar ---------------------------------- */

static bool is_name(const char **s, bool colon)
{
    const char *p = *s;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
          (colon && *p == ':')))
        return false;
    p++;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '_' || (colon && *p == ':'))
        p++;
    *s = p;
    return true;
}

static bool is_value(const char *s, size_t len)
{
    char tmp[64];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    if (strcmp(tmp, "NaN") == 0 || strcmp(tmp, "+Inf") == 0 || strcmp(tmp, "-Inf") == 0)
        return true;
    if (strchr("+-.0123456789", tmp[0]) == NULL)
        return false; /* strtod would take "inf", "nan", hex floats */
    char *end;
    strtod(tmp, &end);
    return *end == '\0' && strpbrk(tmp, "xXnNiI") == NULL;
}

/* One line without its newline: a comment or name{labels} value. */
static bool is_line(const char *s, size_t len)
{
    const char *end = s + len, *p = s;
    if (len > 0 && s[0] == '#') {
        if (strncmp(s, "# HELP ", 7) == 0) {
            p = s + 7;
            if (!is_name(&p, true) || p >= end || *p != ' ')
                return false;
            for (p++; p < end; p++)
                if (*p == '\\' && (p + 1 >= end || (p[1] != '\\' && p[1] != 'n')))
                    return false;
                else if (*p == '\\')
                    p++;
            return true;
        }
        if (strncmp(s, "# TYPE ", 7) == 0) {
            p = s + 7;
            if (!is_name(&p, true) || p >= end || *p != ' ')
                return false;
            p++;
            size_t n = (size_t)(end - p);
            return (n == 7 && memcmp(p, "counter", 7) == 0) ||
                   (n == 5 && memcmp(p, "gauge", 5) == 0) ||
                   (n == 9 && memcmp(p, "histogram", 9) == 0);
        }
        return false;
    }
    if (!is_name(&p, true))
        return false;
    if (p < end && *p == '{') {
        p++;
        for (;;) {
            if (!is_name(&p, false) || p + 2 > end || p[0] != '=' || p[1] != '"')
                return false;
            for (p += 2; p < end && *p != '"'; p++) {
                if (*p == '\n')
                    return false;
                if (*p == '\\') {
                    if (p + 1 >= end || strchr("\\\"n", p[1]) == NULL || p[1] == '\0')
                        return false;
                    p++;
                }
            }
            if (p >= end)
                return false;
            p++; /* closing quote */
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return false;
        }
    }
    if (p >= end || *p != ' ')
        return false;
    p++;
    return is_value(p, (size_t)(end - p));
}

/* Every line of <text> matches the grammar; returns the number of lines. */
static size_t check_exposition(const char *text, size_t len)
{
    ck_assert_uint_gt(len, 0);
    ck_assert_int_eq(text[len - 1], '\n');
    size_t lines = 0;
    const char *s = text, *end = text + len;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!is_line(s, (size_t)(nl - s)))
            ck_abort_msg("line %zu: %.*s", lines, (int)(nl - s), s);
        lines++;
        s = nl + 1;
    }
    return lines;
}

START_TEST(grammar_checker_refuses_bad_lines)
{
    static const char *bad[] = {
        "1abc 1",
        "a{b=\"c} 1",
        "a{b=\"c\"} x",
        "a{b=\"c\\q\"} 1",
        "a 1 2",
        "a{b=\"c\",} 1",
        "a{=\"c\"} 1",
        "# TYPE a summary",
        "# HELP a",
        "a  1",
        "a{b:c=\"d\"} 1",
        "# comment",
        "a inf",
        "a 0x10",
        "a",
        "a{b=\"c\"\"} 1",
        "# HELP a x\\y",
        "a{b=\"c\"}1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!is_line(bad[i], strlen(bad[i])), "accepted: %s", bad[i]);
    static const char *good[] = {
        "a 1",
        "a:b_c{d=\"e\"} 0.5",
        "a{b=\"\\\\\\\"\\n\",c=\"\"} NaN",
        "a -Inf",
        "# TYPE a gauge",
        "# HELP a x\\ny",
        "a{le=\"+Inf\"} 1e-06",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(is_line(good[i], strlen(good[i])), "refused: %s", good[i]);
}
END_TEST

/* ---- text ---------------------------------------------------------------------- */

START_TEST(family_with_escaped_labels)
{
    const struct lb_prom_label l[] = {
        {"frontend", "we\"b\\1\nx"},
        {"code", "200"},
    };
    lb_prom_family(&g_p, "lb_requests_total", "counter", "Requests seen.\nBy \\ frontend \"x\".");
    lb_prom_u64(&g_p, "lb_requests_total", l, 2, 42);
    lb_prom_u64(&g_p, "lb_requests_total", l + 1, 1, 0);
    lb_prom_u64(&g_p, "lb_up", NULL, 0, UINT64_MAX);
    assert_text("# HELP lb_requests_total Requests seen.\\nBy \\\\ frontend \"x\".\n"
                "# TYPE lb_requests_total counter\n"
                "lb_requests_total{frontend=\"we\\\"b\\\\1\\nx\",code=\"200\"} 42\n"
                "lb_requests_total{code=\"200\"} 0\n"
                "lb_up 18446744073709551615\n");
    ck_assert_uint_eq(check_exposition(g_p.buf, g_p.len), 5);
}
END_TEST

START_TEST(f64_shortest_forms)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {1, "1"},
        {0.5, "0.5"},
        {1e-06, "1e-06"},
        {0.1, "0.1"},
        {-0.25, "-0.25"},
        {0, "0"},
        {1.0 / 3, "0.3333333333333333"},
        {123456789012.0, "123456789012"},
        {1e21, "1e+21"},
        {10, "10"},
        {1500, "1500"},
        {2.5, "2.5"},
        {1e15, "1000000000000000"},
        {1e16, "1e+16"},
        {0.0001, "0.0001"},
        {0.00012, "0.00012"},
        {-123.456, "-123.456"},
        {2.5e-5, "2.5e-05"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {5e-324, "5e-324"},
    };
    char want[4096] = "";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lb_prom_f64(&g_p, "g", NULL, 0, cases[i].v);
        strcat(want, "g ");
        strcat(want, cases[i].text);
        strcat(want, "\n");
        ck_assert_double_eq(strtod(cases[i].text, NULL), cases[i].v);
    }
    const struct lb_prom_label l[] = {{"k", "v"}};
    lb_prom_f64(&g_p, "g", l, 1, NAN);
    lb_prom_f64(&g_p, "g", l, 1, INFINITY);
    lb_prom_f64(&g_p, "g", l, 1, -INFINITY);
    strcat(want, "g{k=\"v\"} NaN\ng{k=\"v\"} +Inf\ng{k=\"v\"} -Inf\n");
    assert_text(want);
    check_exposition(g_p.buf, g_p.len);
}
END_TEST

START_TEST(f64_round_trips)
{
    /* whatever the value, the text reads back as the same double */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 2000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof(v));
        if (!isfinite(v))
            continue;
        size_t start = g_p.len;
        lb_prom_f64(&g_p, "r", NULL, 0, v);
        double back = strtod(g_p.buf + start + 2, NULL);
        if (back != v)
            ck_abort_msg("%.17g written as %s", v, g_p.buf + start);
    }
    check_exposition(g_p.buf, g_p.len);
}
END_TEST

START_TEST(histogram_cumulative)
{
    const double bounds[] = {0.1, 0.5, 1};
    const uint64_t counts[] = {1, 2, 0, 3};
    const struct lb_prom_label l[] = {{"route", "/a\"b"}};
    lb_prom_family(&g_p, "lb_latency_seconds", "histogram", "Latency.");
    lb_prom_histogram(&g_p, "lb_latency_seconds", l, 1, bounds, 3, counts, 7.25);
    const uint64_t zero[] = {0, 0, 0, 0};
    lb_prom_histogram(&g_p, "h", NULL, 0, bounds, 3, zero, 0);
    assert_text("# HELP lb_latency_seconds Latency.\n"
                "# TYPE lb_latency_seconds histogram\n"
                "lb_latency_seconds_bucket{route=\"/a\\\"b\",le=\"0.1\"} 1\n"
                "lb_latency_seconds_bucket{route=\"/a\\\"b\",le=\"0.5\"} 3\n"
                "lb_latency_seconds_bucket{route=\"/a\\\"b\",le=\"1\"} 3\n"
                "lb_latency_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 6\n"
                "lb_latency_seconds_sum{route=\"/a\\\"b\"} 7.25\n"
                "lb_latency_seconds_count{route=\"/a\\\"b\"} 6\n"
                "h_bucket{le=\"0.1\"} 0\n"
                "h_bucket{le=\"0.5\"} 0\n"
                "h_bucket{le=\"1\"} 0\n"
                "h_bucket{le=\"+Inf\"} 0\n"
                "h_sum 0\n"
                "h_count 0\n");
    check_exposition(g_p.buf, g_p.len);
}
END_TEST

START_TEST(histogram_no_bounds)
{
    const uint64_t counts[] = {5};
    lb_prom_histogram(&g_p, "h", NULL, 0, NULL, 0, counts, 1.5);
    assert_text("h_bucket{le=\"+Inf\"} 5\nh_sum 1.5\nh_count 5\n");
}
END_TEST

/* ---- buckets ------------------------------------------------------------------- */

START_TEST(bucket_edges)
{
    const double *b = lb_prom_latency_bounds;
    const size_t nb = lb_prom_latency_nbounds;
    ck_assert_uint_ge(nb, 12);
    ck_assert_uint_le(nb, 16);
    ck_assert_double_eq(b[0], 0.0005);
    ck_assert_double_eq(b[nb - 1], 10);
    for (size_t i = 1; i < nb; i++)
        ck_assert(b[i - 1] < b[i]);

    for (size_t i = 0; i < nb; i++) {
        ck_assert_uint_eq(lb_prom_bucket(b, nb, b[i]), i); /* equal goes in that bucket */
        ck_assert_uint_eq(lb_prom_bucket(b, nb, nextafter(b[i], INFINITY)), i + 1);
        ck_assert_uint_eq(lb_prom_bucket(b, nb, nextafter(b[i], 0)), i);
    }
    ck_assert_uint_eq(lb_prom_bucket(b, nb, 0), 0);
    ck_assert_uint_eq(lb_prom_bucket(b, nb, -1), 0);
    ck_assert_uint_eq(lb_prom_bucket(b, nb, -INFINITY), 0);
    ck_assert_uint_eq(lb_prom_bucket(b, nb, 1e9), nb);
    ck_assert_uint_eq(lb_prom_bucket(b, nb, INFINITY), nb);
    ck_assert_uint_eq(lb_prom_bucket(b, nb, NAN), nb);
    ck_assert_uint_eq(lb_prom_bucket(b, 0, 1), 0);
    const double one[] = {1};
    ck_assert_uint_eq(lb_prom_bucket(one, 1, 1), 0);
    ck_assert_uint_eq(lb_prom_bucket(one, 1, 2), 1);

    /* agrees with a linear scan */
    for (int k = 0; k < 5000; k++) {
        double v = (k % 1000) * 0.012 - 0.5 + k * 1e-7;
        size_t want = 0;
        while (want < nb && !(v <= b[want]))
            want++;
        if (lb_prom_bucket(b, nb, v) != want)
            ck_abort_msg("v %g: bucket %zu want %zu", v, lb_prom_bucket(b, nb, v), want);
    }
}
END_TEST

/* ---- growth and a larger output ---------------------------------------------------- */

START_TEST(grows_past_initial_capacity)
{
    size_t cap0 = g_p.cap;
    char want[128], label[32];
    size_t want_len = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(label, sizeof(label), "b%d", i);
        const struct lb_prom_label l[] = {{"backend", label}};
        lb_prom_u64(&g_p, "lb_backend_requests_total", l, 1, (uint64_t)i * 3);
        want_len += (size_t)snprintf(want, sizeof(want),
                                     "lb_backend_requests_total{backend=\"b%d\"} %d\n", i, i * 3);
    }
    ck_assert(!g_p.oom);
    ck_assert_uint_gt(g_p.cap, cap0);
    ck_assert_uint_eq(g_p.len, want_len);
    ck_assert_uint_eq(strlen(g_p.buf), g_p.len);
    ck_assert_uint_lt(g_p.len, g_p.cap);
    ck_assert_str_eq(g_p.buf + g_p.len - strlen(want), want);
    const char *first = "lb_backend_requests_total{backend=\"b0\"} 0\n";
    ck_assert_int_eq(strncmp(g_p.buf, first, strlen(first)), 0);
    ck_assert_uint_eq(check_exposition(g_p.buf, g_p.len), 20000);
}
END_TEST

START_TEST(large_output_matches_grammar)
{
    static const char *const odd[] = {"plain", "q\"uote", "back\\slash", "new\nline", "", "ü€"};
    lb_prom_family(&g_p, "lb_requests_total", "counter", "Requests.\nMulti-line \\ help.");
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 6; j++) {
            const struct lb_prom_label l[] = {{"frontend", odd[i]}, {"backend", odd[j]}};
            lb_prom_u64(&g_p, "lb_requests_total", l, 2, i * 6 + j);
        }
    lb_prom_family(&g_p, "lb_inflight", "gauge", "In flight.");
    const double vals[] = {0, -1, 1e300, 1e-300, NAN, INFINITY, -INFINITY, 0.1, 123.456};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        const struct lb_prom_label l[] = {{"worker", odd[i % 6]}};
        lb_prom_f64(&g_p, "lb_inflight", l, 1, vals[i]);
    }
    lb_prom_family(&g_p, "lb_request_duration_seconds", "histogram", "Duration.");
    uint64_t counts[32];
    for (size_t i = 0; i <= lb_prom_latency_nbounds; i++)
        counts[i] = i;
    for (size_t i = 0; i < 6; i++) {
        const struct lb_prom_label l[] = {{"frontend", odd[i]}, {"code", "2xx"}};
        lb_prom_histogram(&g_p, "lb_request_duration_seconds", l, 2, lb_prom_latency_bounds,
                          lb_prom_latency_nbounds, counts, 12.5 * (double)i);
    }
    ck_assert(!g_p.oom);
    size_t lines = check_exposition(g_p.buf, g_p.len);
    ck_assert_uint_eq(lines, 6 + 36 + 9 + 6 * (lb_prom_latency_nbounds + 3));
    ck_assert_ptr_nonnull(strstr(g_p.buf, "backend=\"new\\nline\""));
    ck_assert_ptr_nonnull(strstr(g_p.buf, "le=\"0.0005\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(g_p.buf, "le=\"0.0025\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(g_p.buf, "le=\"10\"} 91\n"));
    ck_assert_ptr_nonnull(strstr(g_p.buf, "le=\"+Inf\"} 105\n"));
}
END_TEST

START_TEST(deinit_then_reuse)
{
    lb_prom_u64(&g_p, "a", NULL, 0, 1);
    lb_prom_deinit(&g_p);
    ck_assert_ptr_null(g_p.buf);
    lb_prom_init(&g_p);
    lb_prom_family(&g_p, "b", "gauge", NULL);
    lb_prom_u64(&g_p, "b", NULL, 0, 2);
    assert_text("# HELP b \n# TYPE b gauge\nb 2\n");
}
END_TEST

static Suite *prom_suite(void)
{
    Suite *s = suite_create("lb_prom");
    TCase *tc = tcase_create("text");
    tcase_add_checked_fixture(tc, prom_setup, prom_teardown);
    tcase_add_test(tc, grammar_checker_refuses_bad_lines);
    tcase_add_test(tc, family_with_escaped_labels);
    tcase_add_test(tc, f64_shortest_forms);
    tcase_add_test(tc, f64_round_trips);
    tcase_add_test(tc, histogram_cumulative);
    tcase_add_test(tc, histogram_no_bounds);
    tcase_add_test(tc, deinit_then_reuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("buckets");
    tcase_add_test(tc, bucket_edges);
    suite_add_tcase(s, tc);

    tc = tcase_create("growth");
    tcase_add_checked_fixture(tc, prom_setup, prom_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, grows_past_initial_capacity);
    tcase_add_test(tc, large_output_matches_grammar);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(prom_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
