/* lbctl/cmd_rollout.c: "lbctl rollout start|status|list|pause|resume|abort|undo". */
#include "lbctl.h"
#include "output.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROLLOUT_LIST_MAX 64 /* --add / --remove values */

static const char rollout_help[] =
    "Usage: lbctl rollout start|status|list|pause|resume|abort|undo ...\n"
    "\n"
    "  start --add URL...   replace backends step by step, rolling back by itself when a\n"
    "                       new backend fails its gates (see 'lbctl rollout start --help')\n"
    "  status [ID]          step k of n, each gate's figure against its limit, time to\n"
    "                       the next step (default: the newest rollout)\n"
    "  list                 the rollouts, newest first\n"
    "  pause ID             stop moving (the config stays as it is)\n"
    "  resume ID            move on; the wait of the current phase starts again\n"
    "  abort ID             stop and roll back to the config before the rollout\n"
    "  undo ID              after success: roll back to the config before the rollout\n"
    "\n"
    "While a rollout is running or paused, other config writes are refused (409)\n"
    "naming it; abort it first to change the config by hand.\n";

static const char start_help[] =
    "Usage: lbctl rollout start --add URL [--add URL...] [--remove ID...] [--batch-size N]\n"
    "                           [--interval D] [--bake D] [--max-error-rate R]\n"
    "                           [--health-timeout D] [--comment TEXT] [--json]\n"
    "\n"
    "Replaces backends in steps (POST /api/v1/rollouts). Each step adds up to N new\n"
    "backends (a config version), waits until each passes its health checks, lets them\n"
    "serve for the bake, checks the error-rate gate, removes up to N old backends (a\n"
    "config version; requests in flight finish), then waits the interval.\n"
    "  --add URL           a new backend (repeat, or separate with commas; ID=URL names\n"
    "                      it, else its id is <host>-<port>)\n"
    "  --remove ID         an old backend to remove (repeat or commas; default: every\n"
    "                      active backend of the config)\n"
    "  --batch-size N      backends added and removed per step (default 1)\n"
    "  --interval D        wait between steps (default 10s; D: 500ms, 10s, 2m, 1h)\n"
    "  --bake D            traffic a new backend serves before its gate (default 30s)\n"
    "  --max-error-rate R  highest error rate of a new backend over its bake: 5% or\n"
    "                      0.05 (default 5%); the limit is max(R, old backends' rate + R)\n"
    "  --health-timeout D  a new backend not healthy this long fails the step (default\n"
    "                      max(30s, 10 x healthcheck.interval))\n"
    "  --comment TEXT      recorded with the rollout\n";

static const char status_help[] =
    "Usage: lbctl rollout status [ID] [--json]\n"
    "\n"
    "Shows rollout ID (default: the newest): status, step k of n and its phase, the\n"
    "backends of the step, each gate's current figure against its limit, time to the\n"
    "next step, and why it failed (GET /api/v1/rollouts/ID).\n";

static const char list_help[] = "Usage: lbctl rollout list [--json]\n"
                                "\n"
                                "Lists the rollouts, newest first (GET /api/v1/rollouts).\n";

static const char op_help[] =
    "Usage: lbctl rollout pause|resume|abort|undo ID [--json]\n"
    "\n"
    "pause: stop moving; resume: move on (the current wait starts again, so the gates\n"
    "see fresh reports); abort: roll back to the config before the rollout, as a new\n"
    "version; undo: the same after a rollout that succeeded\n"
    "(POST /api/v1/rollouts/ID/pause|resume|abort|undo).\n";

/* The values of the repeated option --<name> (and --<name>=v), split at
 * commas, appended to <arr>; those arguments are taken out of argv. */
static int take_repeated(const char *verb, const char *name, int *argc, char **argv, json_t *arr,
                         bool add)
{
    size_t nlen = strlen(name);
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "--") == 0) {
            while (i < *argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strncmp(a, "--", 2) == 0 && strncmp(a + 2, name, nlen) == 0 && a[2 + nlen] == '=') {
            v = a + 3 + nlen;
        } else if (strncmp(a, "--", 2) == 0 && strcmp(a + 2, name) == 0) {
            if (i + 1 >= *argc)
                return lbctl_usage(verb, "option '--%s' needs a value", name);
            v = argv[++i];
        } else {
            argv[out++] = argv[i];
            continue;
        }
        char *copy = strdup(v), *save = NULL;
        if (copy == NULL)
            return lbctl_fail(LBCTL_EXIT_API, "out of memory");
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            if (json_array_size(arr) >= ROLLOUT_LIST_MAX) {
                free(copy);
                return lbctl_usage(verb, "at most %d values of --%s", ROLLOUT_LIST_MAX, name);
            }
            char *eq = add ? strchr(t, '=') : NULL;
            /* ID=URL: the id is what comes before a '=' that is before "://" */
            char *scheme = strstr(t, "://");
            json_t *item = eq != NULL && (scheme == NULL || eq < scheme)
                               ? json_pack("{s:s%,s:s}", "id", t, (size_t)(eq - t), "url", eq + 1)
                               : json_string(t);
            if (item == NULL || json_array_append_new(arr, item) != 0) {
                free(copy);
                return lbctl_fail(LBCTL_EXIT_API, "'%s' is not UTF-8 (or out of memory)", t);
            }
        }
        free(copy);
    }
    *argc = out;
    return LBCTL_EXIT_OK;
}

/* Options of "rollout start" other than --add and --remove. */
enum {
    O_BATCH,
    O_INTERVAL,
    O_BAKE,
    O_RATE,
    O_HEALTH,
    O_COMMENT,
    O_N
};

static int start_body(const char *verb, struct lbctl_opt *o, json_t *body)
{
    long long v;
    int rc;
    if (o[O_BATCH].set) {
        if ((rc = lbctl_parse_int(verb, "--batch-size", o[O_BATCH].value, 1, ROLLOUT_LIST_MAX,
                                  &v)) != LBCTL_EXIT_OK)
            return rc;
        json_object_set_new(body, "batchSize", json_integer(v));
    }
    static const struct {
        int opt;
        const char *name, *key;
    } durations[] = {{O_INTERVAL, "interval", "intervalMs"},
                     {O_BAKE, "bake", "bakeMs"},
                     {O_HEALTH, "health-timeout", "healthTimeoutMs"}};
    for (size_t i = 0; i < 3; i++) {
        if (!o[durations[i].opt].set)
            continue;
        if ((rc = lbctl_parse_duration(verb, durations[i].name, o[durations[i].opt].value, &v)) !=
            LBCTL_EXIT_OK)
            return rc;
        if (durations[i].opt == O_HEALTH && v == 0)
            return lbctl_usage(verb, "--health-timeout must be above 0");
        json_object_set_new(body, durations[i].key, json_integer(v));
    }
    if (o[O_RATE].set) {
        double r;
        if ((rc = lbctl_parse_rate(verb, o[O_RATE].value, &r)) != LBCTL_EXIT_OK)
            return rc;
        json_object_set_new(body, "maxErrorRate", json_real(r));
    }
    if (o[O_COMMENT].set &&
        ((rc = lbctl_check_comment(verb, o[O_COMMENT].value)) != LBCTL_EXIT_OK ||
         (rc = lbctl_set_str(verb, body, "comment", o[O_COMMENT].value)) != LBCTL_EXIT_OK))
        return rc;
    return LBCTL_EXIT_OK;
}

static int print_rollout(const json_t *ro);

static int rollout_start(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "rollout start";
    json_t *body = json_pack("{s:[],s:[]}", "add", "remove");
    if (body == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    struct lbctl_opt o[O_N] = {
        {"batch-size", true, NULL, false},     {"interval", true, NULL, false},
        {"bake", true, NULL, false},           {"max-error-rate", true, NULL, false},
        {"health-timeout", true, NULL, false}, {"comment", true, NULL, false}};
    char *pos[1];
    size_t npos = 0;
    int rc = take_repeated(verb, "add", &argc, argv, json_object_get(body, "add"), true);
    if (rc == LBCTL_EXIT_OK)
        rc = take_repeated(verb, "remove", &argc, argv, json_object_get(body, "remove"), false);
    if (rc == LBCTL_EXIT_OK)
        rc = lbctl_parse(ctx, verb, start_help, argc, argv, o, O_N, pos, 0, &npos);
    if (rc == LBCTL_EXIT_OK && json_array_size(json_object_get(body, "add")) == 0)
        rc = lbctl_usage(verb, "missing --add URL: the new backends");
    if (rc == LBCTL_EXIT_OK)
        rc = start_body(verb, o, body);
    if (rc == LBCTL_EXIT_OK && json_array_size(json_object_get(body, "remove")) == 0)
        json_object_del(body, "remove"); /* the server's default: every active backend */
    if (rc != LBCTL_EXIT_OK) {
        json_decref(body);
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    }
    struct lbctl_req r = {.method = "POST", .path = "/api/v1/rollouts", .json = body};
    json_t *root = NULL;
    rc = lbctl_fetch(ctx, &r, &root);
    json_decref(body);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    printf("started ");
    rc = print_rollout(json_object_get(root, "rollout"));
    json_decref(root);
    return rc;
}

/* "a, b, c" of a JSON array of strings (or of {"id"} objects) into <buf>. */
static const char *join(const json_t *arr, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr) && off < size; i++) {
        const json_t *it = json_array_get(arr, i);
        const char *s = json_is_string(it) ? json_string_value(it)
                                           : json_string_value(json_object_get(it, "id"));
        off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "", s ? s : "?");
    }
    return buf[0] ? buf : "-";
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static void print_gates(const json_t *gates)
{
    for (size_t i = 0; json_is_array(gates) && i < json_array_size(gates); i++) {
        const json_t *g = json_array_get(gates, i);
        const char *name = json_string_value(json_object_get(g, "gate"));
        bool failed = json_is_true(json_object_get(g, "failed"));
        const char *be = json_string_value(json_object_get(g, "backend"));
        printf("  gate %-10s ", name ? name : "?");
        if (name != NULL && strcmp(name, "health") == 0) {
            if (failed)
                printf("%s not healthy after %.1f s, limit %.1f s  FAILED\n", be ? be : "?",
                       num(g, "figure"), num(g, "limit"));
            else
                printf("new backends healthy within %.1f s\n", num(g, "limitSeconds"));
        } else if (name != NULL && strcmp(name, "error_rate") == 0) {
            if (json_object_get(g, "figure") != NULL)
                printf("%s %.2f%% (%lld requests) vs limit %.2f%%; old backends %.2f%% (%lld "
                       "requests)%s\n",
                       be ? be : "?", num(g, "figure") * 100, (long long)num(g, "requests"),
                       num(g, "limit") * 100, num(g, "oldRate") * 100,
                       (long long)num(g, "oldRequests"), failed ? "  FAILED" : "");
            else
                printf("no bake window yet; limit max(%.2f%%, old backends' rate + %.2f%%)\n",
                       num(g, "maxErrorRate") * 100, num(g, "maxErrorRate") * 100);
        } else {
            if (failed)
                printf("%.0f healthy backends would be left, at least %.0f needed  FAILED\n",
                       num(g, "figure"), num(g, "limit"));
            else
                printf("at least %.0f healthy backends at any time\n", num(g, "minHealthy"));
        }
    }
}

static int print_rollout(const json_t *ro)
{
    if (!json_is_object(ro))
        return lbctl_fail(LBCTL_EXIT_API, "the answer holds no rollout");
    const char *status = json_string_value(json_object_get(ro, "status"));
    const char *phase = json_string_value(json_object_get(ro, "phase"));
    char a[2048], b[2048];
    printf("rollout %lld: %s, step %lld of %lld", (long long)num(ro, "id"), status ? status : "?",
           (long long)num(ro, "step"), (long long)num(ro, "steps"));
    if (status != NULL && strcmp(status, "running") == 0 && phase != NULL) {
        printf(" (%s", phase);
        if (num(ro, "nextInMs") > 0)
            printf(", %.1f s to the next move", num(ro, "nextInMs") / 1000.0);
        printf(")");
    } else if (status != NULL && strcmp(status, "paused") == 0 && phase != NULL) {
        printf(" (%s)", phase);
    }
    printf("\n  add:     %s\n", join(json_object_get(ro, "add"), a, sizeof(a)));
    printf("  remove:  %s\n", join(json_object_get(ro, "remove"), b, sizeof(b)));
    if (json_array_size(json_object_get(ro, "stepAdds")) +
            json_array_size(json_object_get(ro, "stepRemoves")) >
        0)
        printf("  this step: add %s; remove %s\n",
               join(json_object_get(ro, "stepAdds"), a, sizeof(a)),
               join(json_object_get(ro, "stepRemoves"), b, sizeof(b)));
    printf("  batch %lld, interval %.1f s, bake %.1f s\n", (long long)num(ro, "batchSize"),
           num(ro, "intervalMs") / 1000.0, num(ro, "bakeMs") / 1000.0);
    print_gates(json_object_get(ro, "gates"));
    printf("  versions: before %lld, newest it made %lld", (long long)num(ro, "preVersion"),
           (long long)num(ro, "lastVersion"));
    if (json_object_get(ro, "rollbackVersion") != NULL)
        printf(", rolled back as %lld", (long long)num(ro, "rollbackVersion"));
    printf("\n");
    const char *reason = json_string_value(json_object_get(ro, "reason"));
    if (reason != NULL && reason[0] != '\0')
        printf("  reason:  %s\n", reason);
    return LBCTL_EXIT_OK;
}

static int rollout_status(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "rollout status";
    char *pos[1];
    size_t npos = 0;
    int rc = lbctl_parse(ctx, verb, status_help, argc, argv, NULL, 0, pos, 1, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    long long id = 0;
    if (npos == 1 && (rc = lbctl_parse_int(verb, "ID", pos[0], 1, INT64_MAX, &id)))
        return rc;
    char path[64];
    snprintf(path, sizeof(path), id ? "/api/v1/rollouts/%lld" : "/api/v1/rollouts", id);
    json_t *root = NULL;
    struct lbctl_req r = {.method = "GET", .path = path};
    bool json = ctx->json;
    ctx->json = false; /* the list's first item is printed alone */
    rc = lbctl_fetch(ctx, &r, &root);
    ctx->json = json;
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    const json_t *ro = id ? json_object_get(root, "rollout")
                          : json_array_get(json_object_get(root, "rollouts"), 0);
    if (ro == NULL) {
        json_decref(root);
        printf("no rollout yet\n");
        return LBCTL_EXIT_OK;
    }
    if (json) {
        json_t *copy = json_deep_copy(ro);
        json_decref(root);
        return copy ? lbctl_emit_json(copy) : lbctl_fail(LBCTL_EXIT_API, "out of memory");
    }
    rc = print_rollout(ro);
    json_decref(root);
    return rc;
}

static const char *const list_headers[] = {"ID",  "STATUS", "STEP",    "PHASE",
                                           "ADD", "REMOVE", "STARTED", "REASON"};

static int add_list_row(struct table *t, const json_t *ro)
{
    char id[32], status[32], step[48], phase[32], add[512], rm[512], started[32], reason[256];
    snprintf(step, sizeof(step), "%lld/%lld", (long long)num(ro, "step"),
             (long long)num(ro, "steps"));
    const char *row[] = {output_cell(json_object_get(ro, "id"), id, sizeof(id)),
                         output_cell(json_object_get(ro, "status"), status, sizeof(status)),
                         step,
                         output_cell(json_object_get(ro, "phase"), phase, sizeof(phase)),
                         join(json_object_get(ro, "add"), add, sizeof(add)),
                         join(json_object_get(ro, "remove"), rm, sizeof(rm)),
                         output_time(json_object_get(ro, "startedMs"), started, sizeof(started)),
                         output_cell(json_object_get(ro, "reason"), reason, sizeof(reason))};
    return table_add(t, row);
}

static int rollout_list(struct lbctl *ctx, int argc, char **argv)
{
    json_t *root;
    int rc =
        lbctl_get(ctx, "rollout list", list_help, argc, argv, "GET", "/api/v1/rollouts", &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = lbctl_print_table(8, list_headers, json_object_get(root, "rollouts"), add_list_row);
    json_decref(root);
    return rc;
}

static int rollout_op(struct lbctl *ctx, const char *op, int argc, char **argv)
{
    char verb[32];
    snprintf(verb, sizeof(verb), "rollout %s", op);
    char *pos[1];
    int rc =
        lbctl_parse_one(ctx, verb, op_help, argc, argv, NULL, 0, pos, "missing the rollout ID");
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    long long id;
    if ((rc = lbctl_parse_int(verb, "ID", pos[0], 1, INT64_MAX, &id)))
        return rc;
    char path[96];
    snprintf(path, sizeof(path), "/api/v1/rollouts/%lld/%s", id, op);
    struct lbctl_req r = {.method = "POST", .path = path};
    json_t *root = NULL;
    rc = lbctl_fetch(ctx, &r, &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = print_rollout(json_object_get(root, "rollout"));
    json_decref(root);
    return rc;
}

int cmd_rollout(struct lbctl *ctx, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(rollout_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? LBCTL_EXIT_USAGE : LBCTL_EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "start") == 0)
        return rollout_start(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "status") == 0)
        return rollout_status(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return rollout_list(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "pause") == 0 || strcmp(sub, "resume") == 0 || strcmp(sub, "abort") == 0 ||
        strcmp(sub, "undo") == 0)
        return rollout_op(ctx, sub, argc - 1, argv + 1);
    return lbctl_usage("rollout", "unknown command '%s'", sub);
}
