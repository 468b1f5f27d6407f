/* tests/e2e/test_balance.c: how lb-dataplane spreads requests over backends.
 * One keep-alive client connection lands on one worker, whose balancer state
 * is its own, so the shares below are exact. */
#include "e2e.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sends <n> GET / on the world's keep-alive connection; seq[i] is the index of
 * the backend that answered request i ("b<k>" bodies). */
static void run_requests(struct e2e *t, unsigned n, unsigned *seq, unsigned nb)
{
    for (unsigned i = 0; i < n; i++) {
        const char *body = e2e_get(t, "/");
        ck_assert_msg(body != NULL, "request %u failed", i);
        ck_assert_msg(body[0] == 'b' && body[1] >= '0' && body[1] < (char)('0' + nb) &&
                          body[2] == '\0',
                      "unexpected body \"%s\"", body);
        seq[i] = (unsigned)(body[1] - '0');
    }
}

START_TEST(round_robin_exact_shares)
{
    struct e2e *t = e2e_start(3);
    unsigned seq[300], count[3] = {0};
    run_requests(t, 300, seq, 3);
    for (unsigned i = 0; i < 300; i++)
        count[seq[i]]++;
    ck_assert_uint_eq(count[0], 100);
    ck_assert_uint_eq(count[1], 100);
    ck_assert_uint_eq(count[2], 100);
    /* Round robin cycles: every window of 3 holds each backend once. */
    for (unsigned i = 0; i + 3 <= 300; i++)
        ck_assert_msg(seq[i] != seq[i + 1] && seq[i] != seq[i + 2] && seq[i + 1] != seq[i + 2],
                      "window at %u is not a rotation", i);
    /* The data plane's own counters agree (summed over its workers). */
    char *text = e2e_scrape(t);
    ck_assert_ptr_nonnull(text);
    for (unsigned b = 0; b < 3; b++) {
        char labels[64];
        snprintf(labels, sizeof labels, "backend=\"b%u\",code=\"2xx\"", b);
        double v = e2e_metric(text, "lb_http_requests_total", labels);
        ck_assert_msg(v == 100.0, "lb_http_requests_total{%s} = %g", labels, v);
    }
    free(text);
    e2e_stop(t);
}
END_TEST

START_TEST(weighted_531_exact_and_smooth)
{
    static const uint32_t w[3] = {5, 3, 1};
    struct e2e_opts o = {
        .backends = 3, .weights = w, .algorithm = LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN};
    struct e2e *t = e2e_start_opts(&o);
    unsigned seq[900], count[3] = {0};
    run_requests(t, 900, seq, 3);
    for (unsigned i = 0; i < 900; i++)
        count[seq[i]]++;
    ck_assert_uint_eq(count[0], 500);
    ck_assert_uint_eq(count[1], 300);
    ck_assert_uint_eq(count[2], 100);
    /* Smooth WRR has period 9: every window of 9 holds exactly 5/3/1, and
     * b0 never runs more than twice in a row (plain WRR gives a run of 5). */
    for (unsigned i = 0; i + 9 <= 900; i++) {
        unsigned c[3] = {0};
        for (unsigned k = 0; k < 9; k++)
            c[seq[i + k]]++;
        ck_assert_msg(c[0] == 5 && c[1] == 3 && c[2] == 1, "window at %u has %u/%u/%u", i, c[0],
                      c[1], c[2]);
    }
    unsigned run = 1;
    for (unsigned i = 1; i < 900; i++) {
        run = seq[i] == seq[i - 1] ? run + 1 : 1;
        ck_assert_msg(run <= 2, "backend b%u picked %u times in a row at %u", seq[i], run, i);
    }
    e2e_stop(t);
}
END_TEST

START_TEST(weighted_511_nginx_sequence)
{
    static const uint32_t w[3] = {5, 1, 1};
    struct e2e_opts o = {
        .backends = 3, .weights = w, .algorithm = LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN};
    struct e2e *t = e2e_start_opts(&o);
    unsigned seq[14];
    char got[15];
    run_requests(t, 14, seq, 3);
    for (unsigned i = 0; i < 14; i++)
        got[i] = (char)('a' + seq[i]);
    got[14] = '\0';
    /* nginx's smooth weighted round robin, ties to the first listed. */
    ck_assert_str_eq(got, "aabacaaaabacaa");
    e2e_stop(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_balance");
    TCase *tc = e2e_tcase("round_robin");
    tcase_add_test(tc, round_robin_exact_shares);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("weighted_exact_and_smooth");
    tcase_add_test(tc, weighted_531_exact_and_smooth);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("weighted_nginx_sequence");
    tcase_add_test(tc, weighted_511_nginx_sequence);
    suite_add_tcase(s, tc);
    return e2e_run(s);
}
