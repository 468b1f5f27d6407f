/* lbctl/cmd_backends.c: "lbctl backends list|add|update|remove|drain". */
#include "lbctl.h"
#include "output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHT_MAX 1000000
/* Bounds lbctl checks itself; the server checks the config's ranges. */
#define LIMIT_MAX 100000000

/* A backend write staged on canaries, as lbctl config apply --canary. */
#define STAGED_USAGE "[--canary NODE[,NODE...]|P% [--bake D] [--max-error-rate R]]\n"
#define STAGED_HELP                                                                                \
    "  --canary NODES|P%   staged (README, \"Staged config rollout\"): the new version\n"          \
    "                      goes to these data planes first, to every one after\n"                  \
    "                      --bake D (default 30s) if their error rate passes\n"                    \
    "                      --max-error-rate R; else the config goes back\n"

static const char backends_help[] =
    "Usage: lbctl backends list|add|update|remove|drain ...\n"
    "\n"
    "  list                 the backends with their state and health\n"
    "  add URL              add a backend (--weight N --id ID --state S --ca-file FILE\n"
    "                       --sni NAME --max-connections N --max-queue N --send-proxy V\n"
    "                       --comment TEXT)\n"
    "  update ID            change --weight N, --state S, --url URL, --ca-file FILE,\n"
    "                       --sni NAME, --max-connections N, --max-queue N,\n"
    "                       --send-proxy V (--comment TEXT)\n"
    "  remove ID            remove a backend (--comment TEXT)\n"
    "  drain ID             stop sending new requests to a backend (--comment TEXT)\n"
    "\n"
    "Every change creates a new config version; --if-match VERSION makes it fail\n"
    "unless VERSION is the active one. 'lbctl backends COMMAND --help' for more.\n";

static const char list_help[] =
    "Usage: lbctl backends list [--json]\n"
    "\n"
    "Lists the backends of the active config: id, URL, weight, state (active,\n"
    "draining, disabled), health (up, down, unknown; \"(ejected)\" when a data plane\n"
    "took it out of rotation after failed connects), circuit breaker (closed, open,\n"
    "half_open: the worst the data planes report), connections (open/maxConnections\n"
    "and requests queued, summed over the data planes; \"-\" without a limit), the\n"
    "last check and its error (GET /api/v1/backends). --json adds requests, errors,\n"
    "effective_weight, maxConnections, maxQueue, ejected, ejectedBy, ejections,\n"
    "connections, queued and queueTimeouts.\n";

#define MAX_HELP                                                                                   \
    "  --max-connections N upstream connections to it per data plane, 0..1000000\n"                \
    "                      (0 = unlimited, the default); requests beyond wait in its queue\n"      \
    "  --max-queue N       requests waiting for a connection per data plane, 1..100000\n"          \
    "                      (default 1024); a full queue or a wait over timeouts.queue\n"           \
    "                      answers 503\n"                                                          \
    "  --send-proxy V      off, v1 or v2: a PROXY protocol header naming the client first\n"       \
    "                      on each new connection to it (default off)\n"

static const char add_help[] =
    "Usage: lbctl backends add URL [--weight N] [--id ID] [--state S] [--ca-file FILE]\n"
    "                              [--sni NAME] [--max-connections N] [--max-queue N]\n"
    "                              [--send-proxy V] [--comment TEXT] [--if-match VERSION]\n"
    "                              [--json] " STAGED_USAGE "\n"
    "Adds the backend at URL (e.g. http://10.0.0.5:8080, or https://... to speak TLS to\n"
    "it) to the active config as a new config version (POST /api/v1/backends).\n"
    "  --weight N          share of the traffic (default: the server's, 1)\n"
    "  --id ID             its name (default: chosen by the server)\n"
    "  --state S           active, draining or disabled (default active)\n"
    "  --ca-file FILE      https only: CA bundle (PEM) that verifies the backend\n"
    "                      (default: the system store). FILE is read by the control\n"
    "                      plane, and a relative FILE is taken from its config\n"
    "                      directory, not from here: give an absolute path\n"
    "  --sni NAME          https only: server name sent and verified (default: the\n"
    "                      URL's host when it is a name)\n" MAX_HELP
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n" STAGED_HELP;

static const char update_help[] =
    "Usage: lbctl backends update ID [--weight N] [--state S] [--url URL] [--ca-file FILE]\n"
    "                                [--sni NAME] [--max-connections N] [--max-queue N]\n"
    "                                [--send-proxy V] [--comment TEXT] [--if-match VERSION]\n"
    "                                [--json] " STAGED_USAGE "\n"
    "Changes backend ID as a new config version (PUT /api/v1/backends/ID).\n"
    "At least one of --weight, --state, --url, --ca-file, --sni, --max-connections,\n"
    "--max-queue and --send-proxy is needed.\n"
    "  --weight N          share of the traffic\n"
    "  --state S           active, draining or disabled\n"
    "  --url URL           where the backend listens\n"
    "  --ca-file FILE      https only: CA bundle (PEM) that verifies the backend;\n"
    "                      '' = the system store. FILE is read by the control plane,\n"
    "                      and a relative FILE is taken from its config directory,\n"
    "                      not from here: give an absolute path\n"
    "  --sni NAME          https only: server name sent and verified; '' = the URL's\n"
    "                      host when it is a name\n" MAX_HELP
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n" STAGED_HELP
    "Turning an https:// URL into http:// needs --ca-file '' and --sni '' when they\n"
    "are set.\n";

static const char remove_help[] =
    "Usage: lbctl backends remove ID [--comment TEXT] [--if-match VERSION] [--json]\n"
    "                             " STAGED_USAGE "\n"
    "Removes backend ID as a new config version (DELETE /api/v1/backends/ID).\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n" STAGED_HELP;

static const char drain_help[] =
    "Usage: lbctl backends drain ID [--comment TEXT] [--if-match VERSION] [--json]\n"
    "                            " STAGED_USAGE "\n"
    "Puts backend ID in the draining state: requests in flight finish, new ones go\n"
    "elsewhere (POST /api/v1/backends/ID/drain).\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n" STAGED_HELP;

static const char *const backend_headers[] = {
    "ID", "URL", "WEIGHT", "STATE", "HEALTH", "BREAKER", "CONNS", "LAST CHECK", "LAST ERROR"};

static json_int_t int_of(const json_t *b, const char *key)
{
    const json_t *v = json_object_get(b, key);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static int add_backend_row(struct table *t, const json_t *b)
{
    char id[256], url[512], weight[32], state[32], health[48], breaker[32], conns[96], check[32],
        error[512];
    output_cell(json_object_get(b, "health"), health, sizeof(health));
    if (json_is_true(json_object_get(b, "ejected")))
        snprintf(health + strlen(health), sizeof(health) - strlen(health), " (ejected)");
    /* Connections only mean something against a limit. */
    snprintf(conns, sizeof(conns), "-");
    if (int_of(b, "maxConnections") > 0) {
        int n = snprintf(conns, sizeof(conns), "%lld/%lld", (long long)int_of(b, "connections"),
                         (long long)int_of(b, "maxConnections"));
        if (int_of(b, "queued") > 0 && n > 0 && (size_t)n < sizeof(conns))
            snprintf(conns + n, sizeof(conns) - (size_t)n, " +%lld queued",
                     (long long)int_of(b, "queued"));
    }
    const char *row[] = {
        output_cell(json_object_get(b, "id"), id, sizeof(id)),
        output_cell(json_object_get(b, "url"), url, sizeof(url)),
        output_cell(json_object_get(b, "weight"), weight, sizeof(weight)),
        output_cell(json_object_get(b, "state"), state, sizeof(state)),
        health,
        output_cell(json_object_get(b, "breaker"), breaker, sizeof(breaker)),
        conns,
        output_time(json_object_get(b, "last_check_ms"), check, sizeof(check)),
        output_cell(json_object_get(b, "last_error"), error, sizeof(error)),
    };
    return table_add(t, row);
}

static int backends_list(struct lbctl *ctx, int argc, char **argv)
{
    json_t *root;
    int rc =
        lbctl_get(ctx, "backends list", list_help, argc, argv, "GET", "/api/v1/backends", &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = lbctl_print_table(9, backend_headers, json_object_get(root, "backends"), add_backend_row);
    json_decref(root);
    return rc;
}

static int set_int(json_t *body, const char *key, long long v)
{
    if (json_object_set_new(body, key, json_integer(v)) != 0)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    return LBCTL_EXIT_OK;
}

static int check_state(const char *verb, const char *s)
{
    if (s == NULL || strcmp(s, "active") == 0 || strcmp(s, "draining") == 0 ||
        strcmp(s, "disabled") == 0)
        return LBCTL_EXIT_OK;
    return lbctl_usage(verb, "--state wants active, draining or disabled, not '%s'", s);
}

/* Prints "<done> backend <id> (config version <n>)" from a write's answer. */
static int report_write(struct lbctl *ctx, json_t *root, const char *done, const char *id)
{
    if (ctx->json)
        return lbctl_emit_json(root);
    char version[32], bid[256];
    const json_t *b = json_object_get(root, "backend");
    if (b != NULL && json_object_get(b, "id") != NULL)
        id = output_cell(json_object_get(b, "id"), bid, sizeof(bid));
    printf("%s backend %s (config version %s)\n", done, id,
           output_cell(json_object_get(root, "version"), version, sizeof(version)));
    json_decref(root);
    return LBCTL_EXIT_OK;
}

/* A field of a backend that add and update set from an option. */
struct field {
    const char *opt; /* the option, without the dashes */
    const char *key; /* the member of the request body */
    enum {
        F_STR,   /* a string */
        F_INT,   /* a whole number in 0..<max> */
        F_STATE, /* active, draining or disabled */
    } kind;
    long long max;
};

enum {
    FOR_ADD = 1,
    FOR_UPDATE = 2,
};

/* The fields each verb takes (<verbs>), in the order of the request body;
 * --comment and --if-match follow them. */
static const struct {
    struct field f;
    unsigned verbs;
} fields[] = {
    {{"weight", "weight", F_INT, WEIGHT_MAX}, FOR_ADD | FOR_UPDATE},
    {{"id", "id", F_STR, 0}, FOR_ADD},
    {{"state", "state", F_STATE, 0}, FOR_ADD | FOR_UPDATE},
    {{"url", "url", F_STR, 0}, FOR_UPDATE},
    {{"ca-file", "caFile", F_STR, 0}, FOR_ADD | FOR_UPDATE},
    {{"sni", "sni", F_STR, 0}, FOR_ADD | FOR_UPDATE},
    {{"max-connections", "maxConnections", F_INT, LIMIT_MAX}, FOR_ADD | FOR_UPDATE},
    {{"max-queue", "maxQueue", F_INT, LIMIT_MAX}, FOR_ADD | FOR_UPDATE},
    {{"send-proxy", "sendProxy", F_STR, 0}, FOR_ADD | FOR_UPDATE},
};

#define MAX_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* What add and update differ in. */
struct backend_write {
    const char *verb;
    const char *help;
    unsigned which;      /* FOR_ADD or FOR_UPDATE */
    const char *missing; /* the message when the operand is missing */
    bool add;            /* the operand is the URL, first in the body; --id must not be
                          * empty. Else (update) at least one field is needed. */
    /* filled by read_write(): the fields of this verb */
    const struct field *f[MAX_FIELDS];
    size_t n_fields;
};

/* The value of option --<name> among <w>'s fields in <o>, NULL when not
 * given. */
static const char *option_value(const struct backend_write *w, const struct lbctl_opt *o,
                                const char *name)
{
    for (size_t i = 0; i < w->n_fields; i++)
        if (strcmp(w->f[i]->opt, name) == 0 && o[i].set)
            return o[i].value;
    return NULL;
}

/* Checks the values of <o> (the options of <w>'s fields, then --comment and
 * --if-match): the numbers into <nums>, then the state, the comment,
 * If-Match. */
static int check_fields(const struct backend_write *w, const struct lbctl_opt *o, long long *nums)
{
    int rc;
    for (size_t i = 0; i < w->n_fields; i++) {
        char what[32];
        snprintf(what, sizeof(what), "--%s", w->f[i]->opt);
        if (w->f[i]->kind == F_INT && o[i].set &&
            (rc = lbctl_parse_int(w->verb, what, o[i].value, 0, w->f[i]->max, &nums[i])))
            return rc;
    }
    for (size_t i = 0; i < w->n_fields; i++)
        if (w->f[i]->kind == F_STATE && (rc = check_state(w->verb, o[i].value)))
            return rc;
    return lbctl_check_write(w->verb, &o[w->n_fields]);
}

/* Adds the fields given in <o> and the comment to <body>. */
static int fill_body(const struct backend_write *w, const struct lbctl_opt *o,
                     const long long *nums, json_t *body)
{
    int rc = LBCTL_EXIT_OK;
    for (size_t i = 0; i < w->n_fields && rc == LBCTL_EXIT_OK; i++) {
        if (!o[i].set)
            continue;
        rc = w->f[i]->kind == F_INT ? set_int(body, w->f[i]->key, nums[i])
                                    : lbctl_set_str(w->verb, body, w->f[i]->key, o[i].value);
    }
    if (rc == LBCTL_EXIT_OK && o[w->n_fields].set)
        rc = lbctl_set_str(w->verb, body, "comment", o[w->n_fields].value);
    return rc;
}

/* Parses the options of <w> into <o> (its fields, --comment, --if-match)
 * and the one operand into <operand>, checks them and fills <body> (a
 * new object, owned by the caller; add puts the URL first). Returns the
 * exit status, -1 after --help. */
static int read_write(struct lbctl *ctx, struct backend_write *w, int argc, char **argv,
                      struct lbctl_opt *o, char **operand, json_t **body)
{
    *body = NULL;
    w->n_fields = 0;
    for (size_t i = 0; i < MAX_FIELDS; i++)
        if (fields[i].verbs & w->which)
            w->f[w->n_fields++] = &fields[i].f;
    for (size_t i = 0; i < w->n_fields; i++)
        o[i] = (struct lbctl_opt){w->f[i]->opt, true, NULL, false};
    o[w->n_fields] = (struct lbctl_opt){"comment", true, NULL, false};
    o[w->n_fields + 1] = (struct lbctl_opt){"if-match", true, NULL, false};
    const struct lbctl_opt canary[] = {LBCTL_CANARY_OPTS};
    memcpy(&o[w->n_fields + 2], canary, sizeof(canary));
    int rc =
        lbctl_parse_one(ctx, w->verb, w->help, argc, argv, o, w->n_fields + 5, operand, w->missing);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    bool any = false;
    for (size_t i = 0; i < w->n_fields; i++)
        any |= o[i].set;
    if (!w->add && !any)
        return lbctl_usage(w->verb, "nothing to change: give --weight, --state, --url, --ca-file, "
                                    "--sni, --max-connections, --max-queue or --send-proxy");
    long long nums[MAX_FIELDS] = {0};
    if ((rc = check_fields(w, o, nums)) != LBCTL_EXIT_OK)
        return rc;
    const char *id = w->add ? option_value(w, o, "id") : NULL;
    if (id != NULL && id[0] == '\0')
        return lbctl_usage(w->verb, "--id is empty");
    if ((*body = json_object()) == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    if ((w->add && (rc = lbctl_set_str(w->verb, *body, "url", operand[0]))) ||
        (rc = fill_body(w, o, nums, *body))) {
        json_decref(*body);
        *body = NULL;
    }
    return rc;
}

/* Sends the write <r> (whose <body> and <path> it takes) and reports it as
 * report_write() does. */
static int send_write(struct lbctl *ctx, const struct lbctl_req *r, json_t *body, char *path,
                      const char *done, const char *id)
{
    json_t *root;
    int rc = lbctl_call(ctx, r, &root, NULL);
    json_decref(body);
    free(path);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    return report_write(ctx, root, done, id);
}

/* "/api/v1/backends/<id><suffix>" with <id> percent-encoded; caller frees. */
static char *backend_path(struct lbctl *ctx, const char *id, const char *suffix)
{
    char *e = lbctl_escape(ctx, id);
    char *p = NULL;
    if (e != NULL && asprintf(&p, "/api/v1/backends/%s%s", e, suffix) == -1)
        p = NULL;
    free(e);
    return p;
}

/* "?nodes=..." of a staged write (--canary, --bake, --max-error-rate at
 * <o>), "" without --canary; the exit status. */
static int staged_query(const char *verb, const struct lbctl_opt *o, char *q, size_t size)
{
    char s[1390];
    int rc = lbctl_canary_query(verb, o, s, sizeof(s));
    q[0] = '\0';
    if (rc == LBCTL_EXIT_OK && s[0] != '\0')
        snprintf(q, size, "?%s", s);
    return rc;
}

static char *backends_add_path(const char *query)
{
    char *p = NULL;
    return asprintf(&p, "/api/v1/backends%s", query) == -1 ? NULL : p;
}

/* add (POST /api/v1/backends) or update (PUT /api/v1/backends/ID). */
static int backends_write(struct lbctl *ctx, bool add, int argc, char **argv)
{
    struct backend_write w = {
        .verb = add ? "backends add" : "backends update",
        .help = add ? add_help : update_help,
        .which = add ? FOR_ADD : FOR_UPDATE,
        .missing = add ? "missing the backend's URL" : "missing the backend's ID",
        .add = add,
    };
    struct lbctl_opt o[MAX_FIELDS + 5];
    char *pos[1];
    json_t *body;
    int rc = read_write(ctx, &w, argc, argv, o, pos, &body);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    char query[1400];
    if ((rc = staged_query(w.verb, &o[w.n_fields + 2], query, sizeof(query))) != LBCTL_EXIT_OK) {
        json_decref(body);
        return rc;
    }
    char *path = add ? backends_add_path(query) : backend_path(ctx, pos[0], query);
    if (path == NULL) {
        json_decref(body);
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    }
    struct lbctl_req r = {
        .method = add ? "POST" : "PUT",
        .path = path,
        .json = body,
        .if_match = o[w.n_fields + 1].value,
    };
    const char *id = add ? option_value(&w, o, "id") : NULL;
    return send_write(ctx, &r, body, path, add ? "added" : "updated", id ? id : pos[0]);
}

/* remove and drain: an ID, a comment, If-Match. */
static int backends_id_write(struct lbctl *ctx, int argc, char **argv, bool drain)
{
    const char *verb = drain ? "backends drain" : "backends remove";
    struct lbctl_opt o[] = {LBCTL_WRITE_OPTS, LBCTL_CANARY_OPTS};
    char *pos[1];
    int rc = lbctl_parse_one(ctx, verb, drain ? drain_help : remove_help, argc, argv, o, 5, pos,
                             "missing the backend's ID");
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    char query[1400], suffix[1410];
    if ((rc = lbctl_check_write(verb, o)) != LBCTL_EXIT_OK ||
        (rc = staged_query(verb, o + 2, query, sizeof(query))) != LBCTL_EXIT_OK)
        return rc;
    snprintf(suffix, sizeof(suffix), "%s%s", drain ? "/drain" : "", query);
    char *path = backend_path(ctx, pos[0], suffix);
    if (path == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    json_t *body = NULL;
    if (drain && o[0].set) {
        if ((body = json_object()) == NULL) {
            free(path);
            return lbctl_fail(LBCTL_EXIT_API, "out of memory");
        }
        if ((rc = lbctl_set_str(verb, body, "comment", o[0].value)) != LBCTL_EXIT_OK) {
            json_decref(body);
            free(path);
            return rc;
        }
    }
    struct lbctl_req r = {
        .method = drain ? "POST" : "DELETE",
        .path = path,
        .json = body,
        /* DELETE has no body to carry the comment; a drain with one says it there. */
        .comment = drain ? NULL : o[0].value,
        .if_match = o[1].value,
    };
    return send_write(ctx, &r, body, path, drain ? "draining" : "removed", pos[0]);
}

int cmd_backends(struct lbctl *ctx, int argc, char **argv)
{
    if (argc < 2)
        return lbctl_usage("backends", "missing a command: list, add, update, remove or drain");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(backends_help, stdout);
        return LBCTL_EXIT_OK;
    }
    if (strcmp(sub, "list") == 0)
        return backends_list(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "add") == 0)
        return backends_write(ctx, true, argc - 1, argv + 1);
    if (strcmp(sub, "update") == 0)
        return backends_write(ctx, false, argc - 1, argv + 1);
    if (strcmp(sub, "remove") == 0)
        return backends_id_write(ctx, argc - 1, argv + 1, false);
    if (strcmp(sub, "drain") == 0)
        return backends_id_write(ctx, argc - 1, argv + 1, true);
    return lbctl_usage("backends", "unknown command '%s'", sub);
}
