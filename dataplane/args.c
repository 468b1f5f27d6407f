/* dataplane/args.c: lb-dataplane's command line. */
#include "args.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "lb_cred.h"
#include "lb_err.h"
#include "snapshot.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lb-dataplane (--control BASE | --snapshot FILE) [options]\n"
            "\n"
            "Serves HTTP traffic as the newest lb.v1.Snapshot describes it.\n"
            "\n"
            "  --control BASE      follow the control plane: ipc:///run/lb or tcp://HOST:PORT\n"
            "  --snapshot FILE     serve this binary lb.v1.Snapshot (SIGHUP reloads it)\n"
            "  --state-dir DIR     keep the last good snapshot here; serve it at start\n"
            "  --feed-key FILE     the feed is sealed with these keys (\"ID HEX64\" lines,\n"
            "                      mode 0600); SIGHUP re-reads it. Under systemd the\n"
            "                      credential feed.key (LoadCredential=) stands for it;\n"
            "                      a blank one is none\n"
            "  --feed-insecure     allow an unsealed tcp:// feed (snapshots in clear)\n"
            "  --bind-address IP   frontends the config binds to 0.0.0.0 (or ::, for an\n"
            "                      IPv6 IP) listen on IP on this host instead\n"
            "  --node-id ID        this data plane's name in reports (default: host name)\n"
            "  --workers N         worker threads (default: one per CPU)\n"
            "  --metrics-listen A  serve /metrics on ADDR:PORT, not the snapshot's address\n"
            "                      (\"off\": none); one per data plane on a host\n"
            "  --log-level LEVEL   debug, info, warn or error (default: the snapshot's)\n"
            "  --handover-socket P hand the listening sockets to a successor that connects\n"
            "                      here (default: STATE-DIR/handover.sock; \"off\": none);\n"
            "                      SIGUSR2 starts this binary again with --takeover P\n"
            "  --takeover P        start by taking the sockets, ticket keys and snapshot of\n"
            "                      the data plane listening on hand-over socket P\n"
            "  --help              this text\n"
            "  --version           the version\n");
}

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* "127.0.0.1:9091" or "[::1]:9091" */
static int parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(host))
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -1;
    size_t hl = (size_t)(colon - text);
    if (text[0] == '[') {
        if (hl < 3 || text[hl - 1] != ']')
            return -1;
        memcpy(host, text + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, text, hl);
        host[hl] = '\0';
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

/* One option of the command line (<opt> as getopt_long() returned it, its
 * value in optarg). Returns -1 to go on, else the exit status (message
 * printed). */
static int parse_option(struct args *a, int opt, char **argv)
{
    switch (opt) {
    case 's':
        a->snapshot_path = optarg;
        return -1;
    case 'c':
        a->control = optarg;
        return -1;
    case 'd':
        a->state_dir = optarg;
        return -1;
    case 'k':
        a->feed_key_path = optarg;
        return -1;
    case 'i':
        a->feed_insecure = true;
        return -1;
    case 'H':
        a->handover_off = strcmp(optarg, "off") == 0;
        a->handover_path = a->handover_off ? NULL : optarg;
        return -1;
    case 'T':
        a->takeover_path = optarg;
        return -1;
    case 'B': {
        struct lb_err err = {0};
        if (snapshot_bind_address(optarg, &err) != LB_OK) {
            fprintf(stderr, "lb-dataplane: %s\n", err.msg);
            return 2;
        }
        return -1;
    }
    case 'n':
        if (optarg[0] == '\0' || strlen(optarg) >= sizeof(a->node_id)) {
            fprintf(stderr, "lb-dataplane: --node-id: must be 1..255 characters\n");
            return 2;
        }
        snprintf(a->node_id, sizeof(a->node_id), "%s", optarg);
        return -1;
    case 'w': {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > ARGS_MAX_WORKERS) {
            fprintf(stderr, "lb-dataplane: --workers: \"%s\" is not a number in 1..%d\n", optarg,
                    ARGS_MAX_WORKERS);
            return 2;
        }
        a->n_workers = (unsigned)n;
        return -1;
    }
    case 'l':
        if (lb_log_level_parse(optarg, &a->log_level) != 0) {
            fprintf(stderr, "lb-dataplane: --log-level: \"%s\" is not debug, info, warn or error\n",
                    optarg);
            return 2;
        }
        a->log_level_forced = true;
        return -1;
    case 'm':
        a->metrics_forced = true;
        if (strcmp(optarg, "off") == 0) {
            a->metrics_off = true;
        } else if (parse_listen(optarg, &a->metrics_listen, &a->metrics_listen_len) != 0) {
            fprintf(stderr,
                    "lb-dataplane: --metrics-listen: \"%s\" is not ADDR:PORT, [ADDR6]:PORT "
                    "or off\n",
                    optarg);
            return 2;
        }
        return -1;
    case 'h':
        usage(stdout);
        return 0;
    case 'V':
        printf("lb-dataplane %s\n", LB_VERSION);
        return 0;
    default:
        fprintf(stderr, "lb-dataplane: unknown option or missing value: %s (see --help)\n",
                argv[optind - 1]);
        return 2;
    }
    return -1;
}

/* What the options say together. Returns -1 when they hold, else 2 (message
 * printed). */
static int check_args(struct args *a, int argc, char **argv)
{
    if (optind < argc) {
        fprintf(stderr, "lb-dataplane: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if ((a->snapshot_path == NULL) == (a->control == NULL)) {
        fprintf(stderr, "lb-dataplane: give exactly one of --control BASE and --snapshot FILE "
                        "(see --help)\n");
        return 2;
    }
    if (a->control == NULL && (a->feed_key_path != NULL || a->feed_insecure)) {
        fprintf(stderr, "lb-dataplane: --feed-key and --feed-insecure go with --control\n");
        return 2;
    }
    if (a->control != NULL && a->feed_key_path == NULL && !a->feed_insecure &&
        lb_credential("feed.key", a->feed_key_cred, sizeof(a->feed_key_cred)))
        a->feed_key_path = a->feed_key_cred;
    if (a->handover_path == NULL && !a->handover_off && a->state_dir != NULL) {
        int n = snprintf(a->handover_default, sizeof(a->handover_default), "%s/handover.sock",
                         a->state_dir);
        if (n > 0 && (size_t)n < sizeof(a->handover_default))
            a->handover_path = a->handover_default;
    }
    struct sockaddr_un sun;
    if (a->handover_path != NULL && strlen(a->handover_path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "lb-dataplane: --handover-socket: \"%s\" is longer than %zu bytes\n",
                a->handover_path, sizeof(sun.sun_path) - 1);
        return 2;
    }
    return -1;
}

int args_parse(struct args *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"snapshot", required_argument, NULL, 's'},
        {"control", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, 'd'},
        {"node-id", required_argument, NULL, 'n'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"metrics-listen", required_argument, NULL, 'm'},
        {"feed-key", required_argument, NULL, 'k'},
        {"feed-insecure", no_argument, NULL, 'i'},
        {"handover-socket", required_argument, NULL, 'H'},
        {"takeover", required_argument, NULL, 'T'},
        {"bind-address", required_argument, NULL, 'B'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->n_workers = default_workers();
    a->log_level = LB_LOG_INFO;
    int opt;
    optind = 0; /* glibc: a scan from the start, whatever an earlier call left */
    opterr = 0; /* one line of our own instead of getopt's */
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = parse_option(a, opt, argv);
        if (rc >= 0)
            return rc;
    }
    return check_args(a, argc, argv);
}
