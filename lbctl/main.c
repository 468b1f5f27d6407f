/* lbctl/main.c: global options, where the control plane is, and the verbs. */
#include "client.h"
#include "cmd_tls.h"
#include "lb_err.h"
#include "lbctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SOCKET  "/run/lb/admin.sock"
#define DEFAULT_TIMEOUT 10.0
#define TOKEN_MAX       4096

static const char help_text[] =
    "Usage: lbctl [--socket PATH | --url URL [--ca FILE] [--token-file FILE |\n"
    "             --cert FILE --key FILE]] [--json] [--timeout SECONDS] COMMAND ...\n"
    "\n"
    "The command-line client of the lb control plane's admin API.\n"
    "\n"
    "Commands:\n"
    "  status                     control plane health, active version, data planes in sync\n"
    "  backends list              the backends with their state and health\n"
    "  backends add URL           add a backend\n"
    "  backends update ID         change a backend's weight, state, URL, CA file or SNI\n"
    "  backends remove ID         remove a backend\n"
    "  backends drain ID          stop sending new requests to a backend\n"
    "  config get                 the active (or an earlier) config as YAML\n"
    "  config apply FILE          make FILE (YAML or JSON, - for stdin) the new config\n"
    "  config history             the config versions, newest first\n"
    "  config diff A B            what changed from version A to version B\n"
    "  rollback N                 make version N the active config again\n"
    "  dataplanes                 the data planes and the version each applied\n"
    "  tls list                   the served certificates, their fingerprints and expiry\n"
    "  tls reload                 re-read the certificate files now and publish them\n"
    "  audit                      who changed what: the audit log, newest first\n"
    "                             [--since T] [--who W] [--action A] [--limit N]\n"
    "  rollout start --add URL... replace backends step by step, rolling back by itself\n"
    "  rollout status|list        a rollout's step, gates and next move; all rollouts\n"
    "  rollout pause|resume|abort|undo ID\n"
    "\n"
    "Options:\n"
    "  --socket PATH       the admin unix socket (default $LB_ADMIN_SOCKET, else\n"
    "                      " DEFAULT_SOCKET ")\n"
    "  --url URL           the admin TCP listener, e.g. https://lb1.example.org:9180\n"
    "                      (or $LB_ADMIN_URL)\n"
    "  --token-file FILE   bearer token on FILE's first line, for --url (or $LB_TOKEN_FILE)\n"
    "  --ca FILE           PEM CAs that verify an https:// server (or $LB_CA_FILE;\n"
    "                      default: the system's)\n"
    "  --cert FILE         PEM client certificate for an https:// URL (or $LB_CERT_FILE)\n"
    "  --key FILE          its PEM private key (or $LB_KEY_FILE)\n"
    "  --json              print the server's JSON instead of tables\n"
    "  --timeout SECONDS   give up after SECONDS (default 10)\n"
    "  --help              this text; 'lbctl COMMAND --help' describes a command\n"
    "  --version           print lbctl's version\n"
    "\n"
    "Writes accept --if-match VERSION: they fail unless VERSION is the active config version.\n"
    "Exit status: 0 success, 1 the API refused, 2 bad usage, 3 control plane unreachable.\n";

struct verb {
    const char *name;
    lbctl_cmd_fn fn;
};

static const struct verb verbs[] = {
    {"status", cmd_status},     {"backends", cmd_backends},     {"config", cmd_config},
    {"rollback", cmd_rollback}, {"dataplanes", cmd_dataplanes}, {"tls", cmd_tls},
    {"audit", cmd_audit},       {"rollout", cmd_rollout},
};

/* The first line of <path>, trimmed, into <*out> (caller frees). */
static int read_token(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return lbctl_fail(LBCTL_EXIT_USAGE, "cannot read the token file %s: %s", path,
                          strerror(errno));
    char line[TOKEN_MAX];
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    size_t n = ok ? strcspn(line, "\r\n") : 0;
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    size_t start = strspn(line, " \t");
    if (!ok || start >= n)
        return lbctl_fail(LBCTL_EXIT_USAGE, "the token file %s has no token on its first line",
                          path);
    *out = strndup(line + start, n - start);
    if (*out == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    return LBCTL_EXIT_OK;
}

/* $<name> when set and not empty, else NULL. */
static const char *env_file(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static int parse_timeout(const char *s, long *ms)
{
    char *end;
    errno = 0;
    double secs = strtod(s, &end);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || !(secs > 0) || secs > 86400)
        return lbctl_usage("", "--timeout wants a number of seconds above 0, not '%s'", s);
    *ms = (long)(secs * 1000.0);
    if (*ms == 0)
        *ms = 1;
    return LBCTL_EXIT_OK;
}

/* Global option <name> at argv[*i]: "--name VALUE" or "--name=VALUE". */
static int global_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        lbctl_usage("", "option '%s' needs a value", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int main(int argc, char **argv)
{
    struct lbctl ctx = {0};
    const char *socket_path = NULL, *url = NULL, *token_file = NULL, *timeout = NULL;
    const char *ca = NULL, *cert = NULL, *key = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        int m;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help_text, stdout);
            return LBCTL_EXIT_OK;
        }
        if (strcmp(a, "--version") == 0) {
            printf("lbctl %s\n", LB_VERSION);
            return LBCTL_EXIT_OK;
        }
        if (strcmp(a, "--json") == 0) {
            ctx.json = true;
            continue;
        }
        if ((m = global_value(argc, argv, &i, "--socket", &socket_path)) == 0 &&
            (m = global_value(argc, argv, &i, "--url", &url)) == 0 &&
            (m = global_value(argc, argv, &i, "--token-file", &token_file)) == 0 &&
            (m = global_value(argc, argv, &i, "--ca", &ca)) == 0 &&
            (m = global_value(argc, argv, &i, "--cert", &cert)) == 0 &&
            (m = global_value(argc, argv, &i, "--key", &key)) == 0 &&
            (m = global_value(argc, argv, &i, "--timeout", &timeout)) == 0)
            return lbctl_usage("", "unknown option '%s'", a);
        if (m < 0)
            return LBCTL_EXIT_USAGE;
    }
    if (i >= argc)
        return lbctl_usage("", "no command given");
    const struct verb *v = NULL;
    for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++)
        if (strcmp(argv[i], verbs[k].name) == 0)
            v = &verbs[k];
    if (v == NULL)
        return lbctl_usage("", "unknown command '%s'", argv[i]);

    if (socket_path != NULL && url != NULL)
        return lbctl_usage("", "give either --socket or --url, not both");
    if (socket_path == NULL && url == NULL)
        url = getenv("LB_ADMIN_URL");
    if (url != NULL && url[0] == '\0')
        url = NULL;
    if (token_file == NULL && url != NULL)
        token_file = getenv("LB_TOKEN_FILE");
    if (token_file != NULL && url == NULL)
        return lbctl_usage("", "--token-file goes with --url");
    bool https = url != NULL && strncmp(url, "https://", 8) == 0;
    if (https) {
        ca = ca ? ca : env_file("LB_CA_FILE");
        cert = cert ? cert : env_file("LB_CERT_FILE");
        key = key ? key : env_file("LB_KEY_FILE");
    }
    if ((ca != NULL || cert != NULL || key != NULL) && !https)
        return lbctl_usage("", "--ca, --cert and --key go with an https:// --url");
    if ((cert == NULL) != (key == NULL))
        return lbctl_usage("", "--cert and --key go together");
    if (socket_path == NULL && url == NULL) {
        socket_path = getenv("LB_ADMIN_SOCKET");
        if (socket_path == NULL || socket_path[0] == '\0')
            socket_path = DEFAULT_SOCKET;
    }
    if (url != NULL && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return lbctl_usage("", "--url wants an http:// or https:// URL, not '%s'", url);
    long timeout_ms = (long)(DEFAULT_TIMEOUT * 1000);
    int rc;
    if (timeout != NULL && (rc = parse_timeout(timeout, &timeout_ms)) != LBCTL_EXIT_OK)
        return rc;
    char *token = NULL;
    if (token_file != NULL && (rc = read_token(token_file, &token)) != LBCTL_EXIT_OK)
        return rc;

    struct client_opts o = {
        .socket_path = socket_path,
        .url = url,
        .token = token,
        .ca_file = ca,
        .cert_file = cert,
        .key_file = key,
        .timeout_ms = timeout_ms,
    };
    struct lb_err err;
    ctx.client = client_new(&o, &err);
    free(token);
    if (ctx.client == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "%s", err.msg);
    rc = v->fn(&ctx, argc - i, argv + i);
    client_free(ctx.client);
    fflush(stdout);
    if (ferror(stdout))
        return lbctl_fail(LBCTL_EXIT_API, "cannot write the output");
    return rc;
}
