/* lbctl/cmd_backends.c: "lbctl backends list|add|update|remove|drain". */
#include "lbctl.h"
#include "output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHT_MAX 1000000
/* Bounds lbctl checks itself; the server checks the config's ranges. */
#define LIMIT_MAX 100000000

static const char backends_help[] =
    "Usage: lbctl backends list|add|update|remove|drain ...\n"
    "\n"
    "  list                 the backends with their state and health\n"
    "  add URL              add a backend (--weight N --id ID --state S --ca-file FILE\n"
    "                       --sni NAME --max-connections N --max-queue N --comment TEXT)\n"
    "  update ID            change --weight N, --state S, --url URL, --ca-file FILE,\n"
    "                       --sni NAME, --max-connections N, --max-queue N (--comment TEXT)\n"
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
    "                      answers 503\n"

static const char add_help[] =
    "Usage: lbctl backends add URL [--weight N] [--id ID] [--state S] [--ca-file FILE]\n"
    "                              [--sni NAME] [--max-connections N] [--max-queue N]\n"
    "                              [--comment TEXT] [--if-match VERSION] [--json]\n"
    "\n"
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
    "  --if-match VERSION  fail unless VERSION is the active config version\n";

static const char update_help[] =
    "Usage: lbctl backends update ID [--weight N] [--state S] [--url URL] [--ca-file FILE]\n"
    "                                [--sni NAME] [--max-connections N] [--max-queue N]\n"
    "                                [--comment TEXT] [--if-match VERSION] [--json]\n"
    "\n"
    "Changes backend ID as a new config version (PUT /api/v1/backends/ID).\n"
    "At least one of --weight, --state, --url, --ca-file, --sni, --max-connections\n"
    "and --max-queue is needed.\n"
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
    "  --if-match VERSION  fail unless VERSION is the active config version\n"
    "Turning an https:// URL into http:// needs --ca-file '' and --sni '' when they\n"
    "are set.\n";

static const char remove_help[] =
    "Usage: lbctl backends remove ID [--comment TEXT] [--if-match VERSION] [--json]\n"
    "\n"
    "Removes backend ID as a new config version (DELETE /api/v1/backends/ID).\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n";

static const char drain_help[] =
    "Usage: lbctl backends drain ID [--comment TEXT] [--if-match VERSION] [--json]\n"
    "\n"
    "Puts backend ID in the draining state: requests in flight finish, new ones go\n"
    "elsewhere (POST /api/v1/backends/ID/drain).\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n";

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
    size_t npos;
    int rc = lbctl_parse(ctx, "backends list", list_help, argc, argv, NULL, 0, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    json_t *root;
    struct lbctl_req r = {.method = "GET", .path = "/api/v1/backends"};
    if ((rc = lbctl_call(ctx, &r, &root, NULL)) != LBCTL_EXIT_OK)
        return rc;
    if (ctx->json)
        return lbctl_emit_json(root);
    struct table *t = table_new(9, backend_headers);
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(root, "backends"), i, b)
    {
        if (t != NULL && add_backend_row(t, b) != 0) {
            table_free(t);
            t = NULL;
        }
    }
    json_decref(root);
    if (t == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    table_print(t, stdout);
    table_free(t);
    return LBCTL_EXIT_OK;
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

enum {
    A_WEIGHT,
    A_ID,
    A_STATE,
    A_CA_FILE,
    A_SNI,
    A_MAX_CONNS,
    A_MAX_QUEUE,
    A_COMMENT,
    A_IF_MATCH,
    A_COUNT
};
enum {
    U_WEIGHT,
    U_STATE,
    U_URL,
    U_CA_FILE,
    U_SNI,
    U_MAX_CONNS,
    U_MAX_QUEUE,
    U_COMMENT,
    U_IF_MATCH,
    U_COUNT
};

static int backends_add(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "backends add";
    struct lbctl_opt o[] = {
        [A_WEIGHT] = {"weight", true, NULL, false},
        [A_ID] = {"id", true, NULL, false},
        [A_STATE] = {"state", true, NULL, false},
        [A_CA_FILE] = {"ca-file", true, NULL, false},
        [A_SNI] = {"sni", true, NULL, false},
        [A_MAX_CONNS] = {"max-connections", true, NULL, false},
        [A_MAX_QUEUE] = {"max-queue", true, NULL, false},
        [A_COMMENT] = {"comment", true, NULL, false},
        [A_IF_MATCH] = {"if-match", true, NULL, false},
    };
    char *pos[1];
    size_t npos;
    int rc = lbctl_parse(ctx, verb, add_help, argc, argv, o, A_COUNT, pos, 1, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if (npos != 1)
        return lbctl_usage(verb, "missing the backend's URL");
    long long weight = 0, max_conns = 0, max_queue = 0;
    if ((o[A_WEIGHT].set &&
         (rc = lbctl_parse_int(verb, "--weight", o[A_WEIGHT].value, 0, WEIGHT_MAX, &weight))) ||
        (o[A_MAX_CONNS].set &&
         (rc = lbctl_parse_int(verb, "--max-connections", o[A_MAX_CONNS].value, 0, LIMIT_MAX,
                               &max_conns))) ||
        (o[A_MAX_QUEUE].set && (rc = lbctl_parse_int(verb, "--max-queue", o[A_MAX_QUEUE].value, 0,
                                                     LIMIT_MAX, &max_queue))) ||
        (rc = check_state(verb, o[A_STATE].value)) ||
        (rc = lbctl_check_comment(verb, o[A_COMMENT].value)) ||
        (rc = lbctl_check_if_match(verb, o[A_IF_MATCH].value)))
        return rc;
    if (o[A_ID].set && o[A_ID].value[0] == '\0')
        return lbctl_usage(verb, "--id is empty");

    json_t *body = json_object();
    if (body == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    if ((rc = lbctl_set_str(verb, body, "url", pos[0])) ||
        (o[A_WEIGHT].set && json_object_set_new(body, "weight", json_integer(weight)) != 0 &&
         (rc = lbctl_fail(LBCTL_EXIT_API, "out of memory"))) ||
        (o[A_ID].set && (rc = lbctl_set_str(verb, body, "id", o[A_ID].value))) ||
        (o[A_STATE].set && (rc = lbctl_set_str(verb, body, "state", o[A_STATE].value))) ||
        (o[A_CA_FILE].set && (rc = lbctl_set_str(verb, body, "caFile", o[A_CA_FILE].value))) ||
        (o[A_SNI].set && (rc = lbctl_set_str(verb, body, "sni", o[A_SNI].value))) ||
        (o[A_MAX_CONNS].set &&
         (rc = set_int(body, "maxConnections", max_conns)) != LBCTL_EXIT_OK) ||
        (o[A_MAX_QUEUE].set && (rc = set_int(body, "maxQueue", max_queue)) != LBCTL_EXIT_OK) ||
        (o[A_COMMENT].set && (rc = lbctl_set_str(verb, body, "comment", o[A_COMMENT].value)))) {
        json_decref(body);
        return rc;
    }
    struct lbctl_req r = {
        .method = "POST",
        .path = "/api/v1/backends",
        .json = body,
        .if_match = o[A_IF_MATCH].value,
    };
    json_t *root;
    rc = lbctl_call(ctx, &r, &root, NULL);
    json_decref(body);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    return report_write(ctx, root, "added", o[A_ID].set ? o[A_ID].value : pos[0]);
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

static int backends_update(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "backends update";
    struct lbctl_opt o[] = {
        [U_WEIGHT] = {"weight", true, NULL, false},
        [U_STATE] = {"state", true, NULL, false},
        [U_URL] = {"url", true, NULL, false},
        [U_CA_FILE] = {"ca-file", true, NULL, false},
        [U_SNI] = {"sni", true, NULL, false},
        [U_MAX_CONNS] = {"max-connections", true, NULL, false},
        [U_MAX_QUEUE] = {"max-queue", true, NULL, false},
        [U_COMMENT] = {"comment", true, NULL, false},
        [U_IF_MATCH] = {"if-match", true, NULL, false},
    };
    char *pos[1];
    size_t npos;
    int rc = lbctl_parse(ctx, verb, update_help, argc, argv, o, U_COUNT, pos, 1, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if (npos != 1)
        return lbctl_usage(verb, "missing the backend's ID");
    if (!o[U_WEIGHT].set && !o[U_STATE].set && !o[U_URL].set && !o[U_CA_FILE].set &&
        !o[U_SNI].set && !o[U_MAX_CONNS].set && !o[U_MAX_QUEUE].set)
        return lbctl_usage(verb, "nothing to change: give --weight, --state, --url, --ca-file, "
                                 "--sni, --max-connections or --max-queue");
    long long weight = 0, max_conns = 0, max_queue = 0;
    if ((o[U_WEIGHT].set &&
         (rc = lbctl_parse_int(verb, "--weight", o[U_WEIGHT].value, 0, WEIGHT_MAX, &weight))) ||
        (o[U_MAX_CONNS].set &&
         (rc = lbctl_parse_int(verb, "--max-connections", o[U_MAX_CONNS].value, 0, LIMIT_MAX,
                               &max_conns))) ||
        (o[U_MAX_QUEUE].set && (rc = lbctl_parse_int(verb, "--max-queue", o[U_MAX_QUEUE].value, 0,
                                                     LIMIT_MAX, &max_queue))) ||
        (rc = check_state(verb, o[U_STATE].value)) ||
        (rc = lbctl_check_comment(verb, o[U_COMMENT].value)) ||
        (rc = lbctl_check_if_match(verb, o[U_IF_MATCH].value)))
        return rc;

    json_t *body = json_object();
    char *path = backend_path(ctx, pos[0], "");
    if (body == NULL || path == NULL) {
        json_decref(body);
        free(path);
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    }
    if ((o[U_WEIGHT].set && json_object_set_new(body, "weight", json_integer(weight)) != 0 &&
         (rc = lbctl_fail(LBCTL_EXIT_API, "out of memory"))) ||
        (o[U_STATE].set && (rc = lbctl_set_str(verb, body, "state", o[U_STATE].value))) ||
        (o[U_URL].set && (rc = lbctl_set_str(verb, body, "url", o[U_URL].value))) ||
        (o[U_CA_FILE].set && (rc = lbctl_set_str(verb, body, "caFile", o[U_CA_FILE].value))) ||
        (o[U_SNI].set && (rc = lbctl_set_str(verb, body, "sni", o[U_SNI].value))) ||
        (o[U_MAX_CONNS].set &&
         (rc = set_int(body, "maxConnections", max_conns)) != LBCTL_EXIT_OK) ||
        (o[U_MAX_QUEUE].set && (rc = set_int(body, "maxQueue", max_queue)) != LBCTL_EXIT_OK) ||
        (o[U_COMMENT].set && (rc = lbctl_set_str(verb, body, "comment", o[U_COMMENT].value)))) {
        json_decref(body);
        free(path);
        return rc;
    }
    struct lbctl_req r = {
        .method = "PUT",
        .path = path,
        .json = body,
        .if_match = o[U_IF_MATCH].value,
    };
    json_t *root;
    rc = lbctl_call(ctx, &r, &root, NULL);
    json_decref(body);
    free(path);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    return report_write(ctx, root, "updated", pos[0]);
}

/* remove and drain: an ID, a comment, If-Match. */
static int backends_id_write(struct lbctl *ctx, int argc, char **argv, bool drain)
{
    const char *verb = drain ? "backends drain" : "backends remove";
    struct lbctl_opt o[] = {
        {"comment", true, NULL, false},
        {"if-match", true, NULL, false},
    };
    char *pos[1];
    size_t npos;
    int rc =
        lbctl_parse(ctx, verb, drain ? drain_help : remove_help, argc, argv, o, 2, pos, 1, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if (npos != 1)
        return lbctl_usage(verb, "missing the backend's ID");
    if ((rc = lbctl_check_comment(verb, o[0].value)) ||
        (rc = lbctl_check_if_match(verb, o[1].value)))
        return rc;
    char *path = backend_path(ctx, pos[0], drain ? "/drain" : "");
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
    json_t *root;
    rc = lbctl_call(ctx, &r, &root, NULL);
    json_decref(body);
    free(path);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    return report_write(ctx, root, drain ? "draining" : "removed", pos[0]);
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
        return backends_add(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "update") == 0)
        return backends_update(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "remove") == 0)
        return backends_id_write(ctx, argc - 1, argv + 1, false);
    if (strcmp(sub, "drain") == 0)
        return backends_id_write(ctx, argc - 1, argv + 1, true);
    return lbctl_usage("backends", "unknown command '%s'", sub);
}
