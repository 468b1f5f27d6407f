/* tests/unit/dataplane/test_args.c
 *
 * lb-dataplane's command line: each option's value is checked, the options
 * are checked together, and a bad command line gives one line on stderr
 * naming the option and exit status 2; --help and --version print on
 * stdout and give 0; a good one gives -1 (go on) with what it said. */
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"

static char out[4096]; /* what the last run() printed on the stream it watched */

/* args_parse() over <argv> (NULL-terminated) while <fd> (1 or 2) goes to a
 * file; what it printed there lands in <out>. */
static int run_on(struct args *a, int fd, const char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    char *copy[32];
    ck_assert_int_lt(argc, 32);
    for (int i = 0; i <= argc; i++)
        copy[i] = (char *)argv[i];
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    fflush(stdout);
    fflush(stderr);
    int saved = dup(fd);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fileno(tmp), fd), fd);
    int rc = args_parse(a, argc, copy);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, fd);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof(out) - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return rc;
}

static int run(struct args *a, const char **argv)
{
    return run_on(a, 2, argv);
}

/* A bad command line: status 2 and one line on stderr that holds <needle>. */
static void refused(const char **argv, const char *needle)
{
    struct args a;
    ck_assert_int_eq(run(&a, argv), 2);
    ck_assert_msg(strstr(out, needle) != NULL, "\"%s\" not in: %s", needle, out);
    ck_assert_msg(strncmp(out, "lb-dataplane: ", 14) == 0, "no program name: %s", out);
    char *nl = strchr(out, '\n');
    ck_assert_msg(nl != NULL && nl[1] == '\0', "not one line: %s", out);
}

static void setup(void)
{
    unsetenv("CREDENTIALS_DIRECTORY");
}

START_TEST(snapshot_alone_goes_on)
{
    struct args a;
    const char *argv[] = {"lb-dataplane", "--snapshot", "/tmp/s.bin", NULL};
    ck_assert_int_eq(run(&a, argv), -1);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(a.snapshot_path, "/tmp/s.bin");
    ck_assert_ptr_null(a.control);
    ck_assert_uint_ge(a.n_workers, 1);
    ck_assert_int_eq(a.log_level, LB_LOG_INFO);
    ck_assert(!a.log_level_forced);
    ck_assert(!a.metrics_forced);
    ck_assert_ptr_null(a.handover_path);
    ck_assert_ptr_null(a.takeover_path);
    ck_assert_str_eq(a.node_id, "");
}
END_TEST

START_TEST(every_option_lands)
{
    struct args a;
    const char *argv[] = {"lb-dataplane",
                          "--control",
                          "tcp://127.0.0.1:7001",
                          "--feed-key=/etc/lb/feed.key",
                          "--state-dir",
                          "/var/lib/lb",
                          "--node-id",
                          "edge-1",
                          "--workers",
                          "3",
                          "--log-level",
                          "debug",
                          "--metrics-listen",
                          "[::1]:9091",
                          "--takeover",
                          "/run/lb/old.sock",
                          NULL};
    ck_assert_int_eq(run(&a, argv), -1);
    ck_assert_str_eq(a.control, "tcp://127.0.0.1:7001");
    ck_assert_str_eq(a.feed_key_path, "/etc/lb/feed.key");
    ck_assert_str_eq(a.state_dir, "/var/lib/lb");
    ck_assert_str_eq(a.node_id, "edge-1");
    ck_assert_uint_eq(a.n_workers, 3);
    ck_assert_int_eq(a.log_level, LB_LOG_DEBUG);
    ck_assert(a.log_level_forced);
    ck_assert(a.metrics_forced && !a.metrics_off);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a.metrics_listen;
    ck_assert_int_eq(in6->sin6_family, AF_INET6);
    ck_assert_int_eq(ntohs(in6->sin6_port), 9091);
    ck_assert_uint_eq(a.metrics_listen_len, sizeof(*in6));
    ck_assert_str_eq(a.takeover_path, "/run/lb/old.sock");
    /* the hand-over socket defaults to the state directory's */
    ck_assert_str_eq(a.handover_path, "/var/lib/lb/handover.sock");
}
END_TEST

START_TEST(metrics_listen_forms)
{
    struct args a;
    const char *v4[] = {"lb-dataplane", "--snapshot", "s", "--metrics-listen", "127.0.0.1:1", NULL};
    ck_assert_int_eq(run(&a, v4), -1);
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a.metrics_listen;
    ck_assert_int_eq(in4->sin_family, AF_INET);
    ck_assert_int_eq(ntohs(in4->sin_port), 1);
    const char *off[] = {"lb-dataplane", "--snapshot", "s", "--metrics-listen", "off", NULL};
    ck_assert_int_eq(run(&a, off), -1);
    ck_assert(a.metrics_forced && a.metrics_off);
    const char *bad[][2] = {
        {"127.0.0.1", NULL},    {"127.0.0.1:0", NULL}, {"127.0.0.1:65536", NULL}, {"[::1:80", NULL},
        {"localhost:80", NULL}, {":80", NULL},         {"127.0.0.1:80x", NULL},   {"[]:80", NULL}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[] = {"lb-dataplane",     "--snapshot", "s",
                              "--metrics-listen", bad[i][0],    NULL};
        refused(argv, "--metrics-listen");
    }
}
END_TEST

START_TEST(handover_socket_forms)
{
    struct args a;
    const char *off[] = {"lb-dataplane", "--snapshot",        "s",   "--state-dir",
                         "/var/lib/lb",  "--handover-socket", "off", NULL};
    ck_assert_int_eq(run(&a, off), -1);
    ck_assert(a.handover_off);
    ck_assert_ptr_null(a.handover_path);
    const char *given[] = {"lb-dataplane",      "--snapshot",  "s",
                           "--handover-socket", "/run/h.sock", NULL};
    ck_assert_int_eq(run(&a, given), -1);
    ck_assert_str_eq(a.handover_path, "/run/h.sock");
    char longer[200];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[0] = '/';
    longer[sizeof(longer) - 1] = '\0';
    const char *too_long[] = {"lb-dataplane", "--snapshot", "s", "--handover-socket", longer, NULL};
    refused(too_long, "is longer than 107 bytes");
    /* a state directory whose socket path would not fit: the same check */
    const char *long_dir[] = {"lb-dataplane", "--snapshot", "s", "--state-dir", longer, NULL};
    refused(long_dir, "/handover.sock\" is longer than 107 bytes");
}
END_TEST

START_TEST(bad_values_refused)
{
    const char *workers0[] = {"lb-dataplane", "--snapshot", "s", "--workers", "0", NULL};
    refused(workers0, "--workers: \"0\" is not a number in 1..256");
    const char *workers_big[] = {"lb-dataplane", "--snapshot", "s", "--workers", "257", NULL};
    refused(workers_big, "--workers");
    const char *workers_word[] = {"lb-dataplane", "--snapshot", "s", "--workers", "2x", NULL};
    refused(workers_word, "--workers");
    const char *node_empty[] = {"lb-dataplane", "--snapshot", "s", "--node-id", "", NULL};
    refused(node_empty, "--node-id: must be 1..255 characters");
    char node_long[300];
    memset(node_long, 'n', sizeof(node_long) - 1);
    node_long[sizeof(node_long) - 1] = '\0';
    const char *node_big[] = {"lb-dataplane", "--snapshot", "s", "--node-id", node_long, NULL};
    refused(node_big, "--node-id");
    const char *level[] = {"lb-dataplane", "--snapshot", "s", "--log-level", "loud", NULL};
    refused(level, "--log-level: \"loud\" is not debug, info, warn or error");
    const char *bind[] = {"lb-dataplane", "--snapshot", "s", "--bind-address", "nowhere", NULL};
    refused(bind, "--bind-address: \"nowhere\" is not an IP address");
}
END_TEST

START_TEST(bad_flags_refused)
{
    const char *unknown[] = {"lb-dataplane", "--snapshot", "s", "--frobnicate", NULL};
    refused(unknown, "unknown option or missing value: --frobnicate (see --help)");
    const char *missing[] = {"lb-dataplane", "--snapshot", "s", "--workers", NULL};
    refused(missing, "unknown option or missing value: --workers");
    const char *short_opt[] = {"lb-dataplane", "--snapshot", "s", "-x", NULL};
    refused(short_opt, "unknown option or missing value: -x");
    const char *operand[] = {"lb-dataplane", "--snapshot", "s", "extra", NULL};
    refused(operand, "unexpected argument \"extra\"");
}
END_TEST

START_TEST(options_checked_together)
{
    const char *none[] = {"lb-dataplane", NULL};
    refused(none, "give exactly one of --control BASE and --snapshot FILE");
    const char *both[] = {"lb-dataplane", "--snapshot", "s", "--control", "ipc:///run/lb", NULL};
    refused(both, "give exactly one of");
    const char *key[] = {"lb-dataplane", "--snapshot", "s", "--feed-key", "k", NULL};
    refused(key, "--feed-key and --feed-insecure go with --control");
    const char *insecure[] = {"lb-dataplane", "--snapshot", "s", "--feed-insecure", NULL};
    refused(insecure, "go with --control");
}
END_TEST

START_TEST(help_and_version)
{
    struct args a;
    const char *help[] = {"lb-dataplane", "--help", NULL};
    ck_assert_int_eq(run_on(&a, 1, help), 0);
    const char *head = "usage: lb-dataplane (--control BASE | --snapshot FILE) [options]\n";
    ck_assert_msg(strncmp(out, head, strlen(head)) == 0, "not the usage: %.80s", out);
    ck_assert_ptr_nonnull(strstr(out, "--takeover P"));
    const char *version[] = {"lb-dataplane", "--version", NULL};
    ck_assert_int_eq(run_on(&a, 1, version), 0);
    ck_assert_str_eq(out, "lb-dataplane " LB_VERSION "\n");
}
END_TEST

/* Under systemd the credential feed.key stands for a missing --feed-key. */
START_TEST(feed_key_credential)
{
    char dir[] = "/tmp/lb-args-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/feed.key", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
    fclose(f);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    struct args a;
    const char *control[] = {"lb-dataplane", "--control", "ipc:///run/lb", NULL};
    ck_assert_int_eq(run(&a, control), -1);
    ck_assert_str_eq(a.feed_key_path, path);
    const char *given[] = {"lb-dataplane", "--control", "ipc:///run/lb",
                           "--feed-key",   "mine",      NULL};
    ck_assert_int_eq(run(&a, given), -1);
    ck_assert_str_eq(a.feed_key_path, "mine");
    const char *insecure[] = {"lb-dataplane", "--control", "tcp://127.0.0.1:1", "--feed-insecure",
                              NULL};
    ck_assert_int_eq(run(&a, insecure), -1);
    ck_assert_ptr_null(a.feed_key_path);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *args_suite(void)
{
    Suite *s = suite_create("args");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"good", snapshot_alone_goes_on},         {"good_all", every_option_lands},
        {"metrics_listen", metrics_listen_forms}, {"handover_socket", handover_socket_forms},
        {"bad_values", bad_values_refused},       {"bad_flags", bad_flags_refused},
        {"together", options_checked_together},   {"help", help_and_version},
        {"credential", feed_key_credential},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, NULL);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(args_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
