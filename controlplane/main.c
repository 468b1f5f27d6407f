/* controlplane/main.c: lb-controlplane — flags, store, publisher, admin API,
 * signals, sd_notify. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "admin.h"
#include "cp.h"
#include "lb_cred.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_sdnotify.h"
#include "publisher.h"
#include "rollout_run.h"
#include "seal.h"

struct main_ctx {
    struct ev_loop *loop;
    struct cp *cp;                  /* the core: store, publisher */
    struct admin *admin;            /* the admin API */
    const char *feed_key_path;      /* --feed-key; NULL: the feed is not sealed */
    struct seal_keyring *feed_keys; /* read from it at start and on SIGHUP */
    ev_signal sigterm;
    ev_signal sigint;
    ev_signal sighup;
    ev_timer watchdog;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lb-controlplane [options]\n"
            "\n"
            "Keeps the versioned config in SQLite, publishes snapshots to the data planes\n"
            "and serves the admin API (lbctl).\n"
            "\n"
            "  --db PATH              SQLite store (default ./lb.db)\n"
            "  --bootstrap FILE       import this config.yaml as version 1 into an empty store\n"
            "  --runtime-dir DIR      sockets live here (default /run/lb; created 0750)\n"
            "  --control BASE         snapshot feed base (default ipc://<runtime-dir>)\n"
            "  --admin-socket PATH    admin API unix socket (default <runtime-dir>/admin.sock)\n"
            "  --admin-listen A:P     also serve the admin API on TCP, over HTTPS (needs\n"
            "                         --admin-tokens and --admin-cert/--admin-key)\n"
            "  --admin-tokens FILE    who may use it: \"<name> <token> rw|ro\" (bearer tokens)\n"
            "                         and \"cert:<name> - rw|ro\" (client certificates) per line\n"
            "  --admin-cert FILE      PEM certificate (chain) of the HTTPS admin listener;\n"
            "                         SIGHUP re-reads it, the key and the client CA\n"
            "  --admin-key FILE       its PEM private key\n"
            "  --admin-client-ca FILE verify client certificates against these CAs (mTLS);\n"
            "                         clients without one still use bearer tokens\n"
            "  --admin-insecure-http  plain HTTP on --admin-listen instead (loopback only)\n"
            "  --config-dir DIR       base of relative TLS paths in applied configs\n"
            "                         (default: the bootstrap file's directory, else the cwd)\n"
            "  --feed-key FILE        seal the feed with these keys (\"ID HEX64\" lines,\n"
            "                         mode 0600); SIGHUP re-reads it\n"
            "  --feed-insecure        allow an unsealed tcp:// feed (snapshots in clear)\n"
            "  --feed-nodes A,B       only these data-plane node ids may sync and report\n"
            "  --log-level LEVEL      debug, info, warn or error (default info)\n"
            "  --help                 this text\n"
            "\n"
            "Under systemd, the credentials feed.key, admin.tokens and admin.key\n"
            "(LoadCredential=) stand for --feed-key, --admin-tokens and --admin-key when\n"
            "those are not given; a blank credential is none.\n"
            "  --version              the version\n");
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    lb_log(LB_LOG_INFO, "stopping", "signal %d: shutting down", s->signum);
    lb_sd_notify("STOPPING=1");
    ev_break(loop, EVBREAK_ALL);
}

#define HUP_WHO "signal:SIGHUP"

/* Re-reads the feed key file; on any error the keys in use stay. */
static void reload_feed_keys(struct main_ctx *m)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    if (seal_keyring_load(m->feed_key_path, &kr, &err) != LB_OK ||
        publisher_set_keys(cp_publisher(m->cp), kr, &err) != LB_OK) {
        seal_keyring_free(kr);
        lb_log(LB_LOG_ERROR, "feed_key_reload_failed", "%s; the keys in use stay", err.msg);
        return;
    }
    seal_keyring_free(m->feed_keys);
    m->feed_keys = kr;
    char what[600];
    snprintf(what, sizeof(what), "%s: %zu keys, sealing with key id %u", m->feed_key_path,
             seal_keyring_count(kr), (unsigned)seal_keyring_seal_id(kr));
    lb_log(LB_LOG_INFO, "feed_key_reloaded", "%s", what);
    cp_audit_note(m->cp, HUP_WHO, "feed.key_reload", what);
}

/* Re-reads the admin listener's certificate, key and client CA; on any
 * error the ones in use stay. */
static void reload_admin_tls(struct main_ctx *m)
{
    struct lb_err err = {0};
    if (admin_tls_reload(m->admin, &err) != LB_OK) {
        lb_log(LB_LOG_ERROR, "admin_tls_reload_failed", "%s; the certificate in use stays",
               err.msg);
        return;
    }
    lb_log(LB_LOG_INFO, "admin_tls_reloaded",
           "admin certificate, key and client CA re-read; new connections use them");
    cp_audit_note(m->cp, HUP_WHO, "admin.tls_reload", "admin certificate, key and client CA");
}

/* Re-reads the admin tokens file; on any error the tokens in use stay. */
static void reload_admin_tokens(struct main_ctx *m)
{
    struct lb_err err = {0};
    size_t n = 0;
    if (admin_tokens_reload(m->admin, &n, &err) != LB_OK) {
        lb_log(LB_LOG_ERROR, "admin_tokens_reload_failed", "%s; the tokens in use stay", err.msg);
        return;
    }
    char what[64];
    snprintf(what, sizeof(what), "%zu lines", n);
    lb_log(LB_LOG_INFO, "admin_tokens_reloaded", "admin tokens file re-read: %s", what);
    cp_audit_note(m->cp, HUP_WHO, "admin.tokens_reload", what);
}

static void on_hup(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    if (m->feed_key_path != NULL)
        reload_feed_keys(m);
    if (admin_has_tokens(m->admin))
        reload_admin_tokens(m);
    if (admin_has_tls(m->admin))
        reload_admin_tls(m);
    if (m->feed_key_path != NULL || admin_has_tokens(m->admin))
        return;
    lb_log(LB_LOG_INFO, "sighup",
           "SIGHUP ignored: config changes go through the admin API (lbctl apply)");
}

static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    lb_sd_notify("WATCHDOG=1");
}

static int fail(const char *what, const struct lb_err *err)
{
    fprintf(stderr, "lb-controlplane: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    return 1;
}

/* The command line, with the defaults filled in. */
struct flags {
    const char *db;
    const char *bootstrap;
    const char *runtime_dir; /* absolute once main_paths() ran */
    const char *control;
    const char *admin_socket;
    const char *admin_listen;
    const char *admin_tokens;
    const char *admin_cert;
    const char *admin_key;
    const char *admin_client_ca;
    bool admin_insecure_http;
    const char *config_dir;
    const char *feed_key;
    const char *feed_nodes;
    bool feed_insecure;
    enum lb_log_level level;
    char runtime_abs[PATH_MAX]; /* storage of the paths main_paths() makes */
    char cred[3][512];          /* the paths of systemd credentials in use */
    char control_buf[4200];
    char socket_buf[4200];
};

/* The flags that take a path or an address, and where each goes. */
static const struct {
    const char *name;
    size_t at; /* offsetof(struct flags, the field) */
} str_flags[] = {
    {"db", offsetof(struct flags, db)},
    {"bootstrap", offsetof(struct flags, bootstrap)},
    {"runtime-dir", offsetof(struct flags, runtime_dir)},
    {"control", offsetof(struct flags, control)},
    {"admin-socket", offsetof(struct flags, admin_socket)},
    {"admin-listen", offsetof(struct flags, admin_listen)},
    {"admin-tokens", offsetof(struct flags, admin_tokens)},
    {"admin-cert", offsetof(struct flags, admin_cert)},
    {"admin-key", offsetof(struct flags, admin_key)},
    {"admin-client-ca", offsetof(struct flags, admin_client_ca)},
    {"config-dir", offsetof(struct flags, config_dir)},
    {"feed-key", offsetof(struct flags, feed_key)},
    {"feed-nodes", offsetof(struct flags, feed_nodes)},
};

#define N_STR_FLAGS (sizeof(str_flags) / sizeof(str_flags[0]))

/* getopt_long() values past the string flags (1..N_STR_FLAGS). */
enum {
    OPT_LOG_LEVEL = N_STR_FLAGS + 1,
    OPT_HELP,
    OPT_VERSION,
    OPT_FEED_INSECURE,
    OPT_ADMIN_INSECURE_HTTP,
};

/* The secrets a flag did not name, from the systemd credentials of the same
 * job (lb_cred.h): feed.key (unless --feed-insecure), and with
 * --admin-listen admin.tokens and, next to --admin-cert, admin.key. */
static void main_credentials(struct flags *f)
{
    if (f->feed_key == NULL && !f->feed_insecure &&
        lb_credential("feed.key", f->cred[0], sizeof(f->cred[0])))
        f->feed_key = f->cred[0];
    if (f->admin_listen == NULL)
        return;
    if (f->admin_key == NULL && f->admin_cert != NULL &&
        lb_credential("admin.key", f->cred[1], sizeof(f->cred[1])))
        f->admin_key = f->cred[1];
    if (f->admin_tokens == NULL && lb_credential("admin.tokens", f->cred[2], sizeof(f->cred[2])))
        f->admin_tokens = f->cred[2];
}

/* Reads argv into <f>. Returns -1 to go on, else the exit status (help,
 * version and bad flags end the process here). */
static int main_parse(int argc, char **argv, struct flags *f)
{
    struct option opts[N_STR_FLAGS + 6] = {
        [N_STR_FLAGS] = {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        [N_STR_FLAGS + 1] = {"help", no_argument, NULL, OPT_HELP},
        [N_STR_FLAGS + 2] = {"version", no_argument, NULL, OPT_VERSION},
        [N_STR_FLAGS + 3] = {"feed-insecure", no_argument, NULL, OPT_FEED_INSECURE},
        [N_STR_FLAGS + 4] = {"admin-insecure-http", no_argument, NULL, OPT_ADMIN_INSECURE_HTTP},
    };
    for (size_t i = 0; i < N_STR_FLAGS; i++)
        opts[i] = (struct option){str_flags[i].name, required_argument, NULL, (int)i + 1};
    f->db = "./lb.db";
    f->runtime_dir = "/run/lb";
    f->level = LB_LOG_INFO;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt >= 1 && opt <= (int)N_STR_FLAGS) {
            *(const char **)((char *)f + str_flags[opt - 1].at) = optarg;
            continue;
        }
        switch (opt) {
        case OPT_LOG_LEVEL:
            if (lb_log_level_parse(optarg, &f->level) != 0) {
                fprintf(stderr,
                        "lb-controlplane: --log-level %s: want debug, info, warn or "
                        "error\n",
                        optarg);
                return 1;
            }
            break;
        case OPT_FEED_INSECURE:
            f->feed_insecure = true;
            break;
        case OPT_ADMIN_INSECURE_HTTP:
            f->admin_insecure_http = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("lb-controlplane %s\n", LB_VERSION);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lb-controlplane: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    main_credentials(f);
    if (f->admin_listen != NULL && f->admin_tokens == NULL) {
        fprintf(stderr, "lb-controlplane: --admin-listen needs --admin-tokens FILE\n");
        return 1;
    }
    return -1;
}

/* Refuses <path> (a <what>) when others may access it: the runtime
 * directory holds the admin socket and the feed, the database the config
 * history and the audit. Returns 0, or 1 (message printed); a path that does
 * not exist yet passes. */
static int private_path(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if ((st.st_mode & S_IRWXO) == 0)
        return 0;
    fprintf(stderr, "lb-controlplane: %s %s has mode %04o: others may access it; chmod o-rwx %s\n",
            what, path, (unsigned)(st.st_mode & 07777), path);
    return 1;
}

/* Creates the runtime directory and derives the feed base and the admin
 * socket from it when not given. Returns 0, or 1 (message printed). */
static int main_paths(struct flags *f)
{
    /* what we create (runtime directory, database, its journal) is not
     * for others, whatever umask we were started with */
    mode_t mask = umask(0);
    umask(mask | 027);
    if (mkdir(f->runtime_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "lb-controlplane: cannot create --runtime-dir %s: %s\n", f->runtime_dir,
                strerror(errno));
        return 1;
    }
    /* ipc:// endpoints need an absolute path; a relative --runtime-dir is
     * taken from the working directory */
    if (realpath(f->runtime_dir, f->runtime_abs) == NULL) {
        fprintf(stderr, "lb-controlplane: --runtime-dir %s: %s\n", f->runtime_dir, strerror(errno));
        return 1;
    }
    f->runtime_dir = f->runtime_abs;
    if (private_path(f->runtime_dir, "--runtime-dir") != 0 || private_path(f->db, "--db") != 0)
        return 1;
    if (f->control == NULL) {
        snprintf(f->control_buf, sizeof(f->control_buf), "ipc://%s", f->runtime_dir);
        f->control = f->control_buf;
    }
    if (f->admin_socket == NULL) {
        snprintf(f->socket_buf, sizeof(f->socket_buf), "%s/admin.sock", f->runtime_dir);
        f->admin_socket = f->socket_buf;
    }
    return 0;
}

/* Starts the core, the admin API, the signal watchers and the systemd
 * watchdog on <m>. Returns 0, or 1 (message printed, nothing left running). */
static int main_start(struct main_ctx *m, const struct flags *f)
{
    struct lb_err err = {0};
    bool insecure = false;
    if (seal_feed_policy(f->control, f->feed_key != NULL, f->feed_insecure, &insecure, &err) !=
        LB_OK)
        return fail("cannot start", &err);
    m->feed_key_path = f->feed_key;
    if (f->feed_key != NULL && seal_keyring_load(f->feed_key, &m->feed_keys, &err) != LB_OK)
        return fail("cannot start", &err);
    if (insecure)
        lb_log(LB_LOG_WARN, "feed_insecure",
               "--feed-insecure: the feed on %s is NOT sealed; anyone who reaches it reads every "
               "snapshot (TLS private keys included) and can send forged reports",
               f->control);
    /* signals come through a signalfd the loop reads, blocked in every
     * thread (the feed's nanomsg threads, started in cp_new, inherit the
     * mask), rather than through a handler: nothing runs asynchronously, and
     * none is lost to TSan's deferred delivery of handled signals, which
     * dropped a SIGTERM to lb-dataplane now and then */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    m->loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_SIGNALFD);
    if (m->loop == NULL) {
        seal_keyring_free(m->feed_keys);
        return fail("cannot create the event loop", NULL);
    }
    struct cp_config cc = {.db_path = f->db,
                           .bootstrap = f->bootstrap,
                           .config_dir = f->config_dir,
                           .control_base = f->control,
                           .feed_keys = m->feed_keys,
                           .feed_insecure = insecure,
                           .feed_nodes = f->feed_nodes,
                           .attach = rollouts_attach};
    if ((m->cp = cp_new(m->loop, &cc, &err)) == NULL) {
        seal_keyring_free(m->feed_keys);
        return fail("cannot start", &err);
    }
    struct admin_config ac = {.unix_path = f->admin_socket,
                              .tcp_listen = f->admin_listen,
                              .tokens_file = f->admin_tokens,
                              .tls_cert = f->admin_cert,
                              .tls_key = f->admin_key,
                              .tls_client_ca = f->admin_client_ca,
                              .insecure_http = f->admin_insecure_http};
    if ((m->admin = admin_new(m->loop, m->cp, &ac, &err)) == NULL) {
        cp_free(m->cp);
        seal_keyring_free(m->feed_keys);
        return fail("cannot start the admin API", &err);
    }

    ev_signal_init(&m->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&m->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&m->sighup, on_hup, SIGHUP);
    m->sighup.data = m;
    ev_signal_start(m->loop, &m->sigterm);
    ev_signal_start(m->loop, &m->sigint);
    ev_signal_start(m->loop, &m->sighup);
    uint64_t wd_usec = 0;
    if (lb_sd_watchdog_usec(&wd_usec)) {
        ev_timer_init(&m->watchdog, on_watchdog, 0, (double)wd_usec / 2e6);
        m->watchdog.data = m;
        ev_timer_again(m->loop, &m->watchdog);
    }
    return 0;
}

/* Says it is ready and serves until a stop signal. */
static void main_run(struct main_ctx *m, const struct flags *f)
{
    char tcp_note[64] = "";
    if (f->admin_listen != NULL)
        snprintf(tcp_note, sizeof(tcp_note), " and tcp port %u (%s)", admin_tcp_port(m->admin),
                 f->admin_insecure_http ? "plain http" : "https");
    char seal_note[64] = " (unsealed)";
    if (m->feed_keys != NULL)
        snprintf(seal_note, sizeof(seal_note), " (sealed with key id %u)",
                 (unsigned)seal_keyring_seal_id(m->feed_keys));
    lb_log(LB_LOG_INFO, "ready", "store %s, version %llu, generation %llu, feed %s%s, admin %s%s",
           f->db, (unsigned long long)cp_active_version(m->cp),
           (unsigned long long)cp_generation(m->cp), f->control, seal_note, f->admin_socket,
           tcp_note);
    lb_sd_notify("READY=1\nSTATUS=serving");
    ev_run(m->loop, 0);
}

static void main_stop(struct main_ctx *m)
{
    ev_timer_stop(m->loop, &m->watchdog);
    ev_signal_stop(m->loop, &m->sigterm);
    ev_signal_stop(m->loop, &m->sigint);
    ev_signal_stop(m->loop, &m->sighup);
    admin_free(m->admin);
    cp_free(m->cp);
    seal_keyring_free(m->feed_keys); /* after the publisher that borrowed it */
    lb_log(LB_LOG_INFO, "stopped", "clean shutdown");
}

int main(int argc, char **argv)
{
    struct flags f = {0};
    int rc = main_parse(argc, argv, &f);
    if (rc >= 0)
        return rc;
    lb_log_setup("lb-controlplane", 1, f.level);
    signal(SIGPIPE, SIG_IGN);
    if (main_paths(&f) != 0)
        return 1;
    struct main_ctx m = {0};
    if (main_start(&m, &f) != 0)
        return 1;
    main_run(&m, &f);
    main_stop(&m);
    return 0;
}
