/* lbctl/cmd_config.c: "lbctl config get|apply|history|diff" and "lbctl rollback". */
#include "lbctl.h"
#include "output.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX  (4u * 1024 * 1024) /* the server refuses larger bodies */
#define HISTORY_MAX 100000

static const char config_help[] =
    "Usage: lbctl config get|apply|history|diff ...\n"
    "\n"
    "  get [--version N]      the active config (or version N) as YAML\n"
    "  apply FILE             make FILE (YAML or JSON; - for stdin) the new config\n"
    "  history [--limit N]    the config versions, newest first\n"
    "  diff A B               what changed from version A to version B\n"
    "\n"
    "'lbctl config COMMAND --help' for more; 'lbctl rollback N' reactivates version N.\n";

static const char get_help[] =
    "Usage: lbctl config get [--version N] [--yaml | --json]\n"
    "\n"
    "Prints the active config as canonical YAML (GET /api/v1/config), or the\n"
    "content of version N (GET /api/v1/config/versions/N). --yaml is the default;\n"
    "--json prints the server's JSON answer instead.\n";

static const char apply_help[] =
    "Usage: lbctl config apply FILE [--comment TEXT] [--if-match VERSION] [--json]\n"
    "                         [--canary NODE[,NODE...]|PERCENT% [--bake D] [--max-error-rate R]]\n"
    "\n"
    "Sends FILE (- reads stdin) as the new config (POST /api/v1/config): JSON when it\n"
    "starts with '{', YAML otherwise. A valid config that differs from the active one\n"
    "becomes a new config version; prints its number and the changes. An identical\n"
    "config creates nothing.\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n"
    "  --canary NODES|P%   staged rollout (POST /api/v1/config/canary): the new version\n"
    "                      goes to these data planes (or P% of those reporting) only;\n"
    "                      the others keep the version they serve. Once the canaries\n"
    "                      applied it and served it for --bake (default 30s) with an\n"
    "                      error rate within --max-error-rate (default 5%) of the rest\n"
    "                      of the fleet, every data plane gets it; a canary refusing\n"
    "                      the snapshot, or a worse rate, rolls the config back as a\n"
    "                      new version. lbctl config canary [abort] follows it.\n";

static const char history_help[] =
    "Usage: lbctl config history [--limit N] [--json]\n"
    "\n"
    "Lists the config versions, newest first: number, whether it is active, when\n"
    "and by whom it was made, its hash and comment (GET /api/v1/config/versions).\n"
    "  --limit N           at most N versions (default 50)\n";

static const char diff_help[] = "Usage: lbctl config diff A B [--json]\n"
                                "\n"
                                "Shows what changed from config version A to config version B\n"
                                "(GET /api/v1/config/diff?from=A&to=B).\n";

static const char rollback_help[] =
    "Usage: lbctl rollback N [--comment TEXT] [--if-match VERSION] [--json]\n"
    "                      [--canary NODE[,NODE...]|PERCENT% [--bake D] [--max-error-rate R]]\n"
    "\n"
    "Makes the content of config version N active again, recorded as a new config\n"
    "version (POST /api/v1/config/rollback). History is never deleted.\n"
    "  --comment TEXT      recorded with the new config version\n"
    "  --if-match VERSION  fail unless VERSION is the active config version\n"
    "  --canary ...        staged, as lbctl config apply --canary: version N's content\n"
    "                      goes to the canaries first (not with --if-match)\n";

/* Prints <s> and ends it with a newline if it has none. */
static void print_text(const char *s)
{
    size_t n = strlen(s);
    fputs(s, stdout);
    if (n > 0 && s[n - 1] != '\n')
        fputc('\n', stdout);
}

static int config_get(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "config get";
    struct lbctl_opt o[] = {
        {"version", true, NULL, false},
        {"yaml", false, NULL, false},
    };
    size_t npos;
    int rc = lbctl_parse(ctx, verb, get_help, argc, argv, o, 2, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if (o[1].set && ctx->json)
        return lbctl_usage(verb, "give either --yaml or --json, not both");
    long long version = 0;
    if (o[0].set &&
        (rc = lbctl_parse_int(verb, "--version", o[0].value, 1, INT64_MAX, &version)) != 0)
        return rc;

    if (!o[0].set && !ctx->json) {
        char *yaml;
        struct lbctl_req r = {
            .method = "GET",
            .path = "/api/v1/config",
            .accept = "application/yaml",
        };
        if ((rc = lbctl_call(ctx, &r, NULL, &yaml)) != LBCTL_EXIT_OK)
            return rc;
        print_text(yaml);
        free(yaml);
        return LBCTL_EXIT_OK;
    }
    char path[64] = "/api/v1/config";
    if (o[0].set)
        snprintf(path, sizeof(path), "/api/v1/config/versions/%lld", version);
    json_t *root;
    struct lbctl_req r = {.method = "GET", .path = path};
    if ((rc = lbctl_fetch(ctx, &r, &root)) != LBCTL_EXIT_OK || root == NULL)
        return rc;
    const char *content = json_string_value(json_object_get(root, "content"));
    if (content == NULL)
        rc = lbctl_fail(LBCTL_EXIT_API, "the answer for version %lld has no content", version);
    else
        print_text(content);
    json_decref(root);
    return rc;
}

/* Reads all of <path> ("-" = stdin) into <*out> (caller frees). */
static int read_file(const char *verb, const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return lbctl_usage(verb, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    int rc = LBCTL_EXIT_OK;
    while (buf != NULL) {
        if (n == cap) {
            if (cap > CONFIG_MAX) {
                rc = lbctl_usage(verb, "%s is larger than %u bytes", path, CONFIG_MAX);
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (p == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = lbctl_usage(verb, "cannot read %s", path);
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    if (buf == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    if (rc != LBCTL_EXIT_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return LBCTL_EXIT_OK;
}

static const char *const change_headers[] = {"CHANGE", "SUBJECT", "FIELD", "OLD", "NEW"};

/* A row of a diff's changes. */
static int add_change_row(struct table *t, const json_t *c)
{
    char kind[32], subject[256], field[256], old[512], new[512];
    const json_t *subj = json_object_get(c, "subject");
    const char *row[] = {
        output_cell(json_object_get(c, "kind"), kind, sizeof(kind)),
        output_cell(subj ? subj : json_object_get(c, "path"), subject, sizeof(subject)),
        output_cell(json_object_get(c, "field"), field, sizeof(field)),
        output_cell(json_object_get(c, "old"), old, sizeof(old)),
        output_cell(json_object_get(c, "new"), new, sizeof(new)),
    };
    return table_add(t, row);
}

/* The diff entries of <changes> as a table. */
static int print_changes(const json_t *changes)
{
    return lbctl_print_table(5, change_headers, changes, add_change_row);
}

/* The path of a staged apply from --canary, --bake, --max-error-rate
 * (<o>[0..3)); "" without --canary. */
static int canary_path(const char *verb, const struct lbctl_opt *o, char *path, size_t size)
{
    char q[1300];
    path[0] = '\0';
    int rc = lbctl_canary_query(verb, o, q, sizeof(q));
    if (rc == LBCTL_EXIT_OK && q[0] != '\0')
        snprintf(path, size, "/api/v1/config/canary?%s", q);
    return rc;
}

/* The staged rollout <c> (GET /api/v1/config/canary's "canary") in words. */
static int print_canary(const json_t *c)
{
    if (!json_is_object(c)) {
        printf("no staged rollout since the control plane started\n");
        return LBCTL_EXIT_OK;
    }
    char ver[32], pre[32], st[32], nodes[512] = "", why[400];
    size_t i, n = 0;
    const json_t *node;
    json_array_foreach(json_object_get(c, "nodes"), i, node)
    {
        if (n < sizeof(nodes))
            n += (size_t)snprintf(nodes + n, sizeof(nodes) - n, "%s%s", i ? "," : "",
                                  json_string_value(node));
    }
    output_cell(json_object_get(c, "version"), ver, sizeof(ver));
    output_cell(json_object_get(c, "pre_version"), pre, sizeof(pre));
    output_cell(json_object_get(c, "status"), st, sizeof(st));
    printf("staged rollout of version %s (from version %s): %s\n", ver, pre, st);
    printf("canaries        %s\n", nodes);
    printf("bake            %lld ms, max error rate %.4f\n",
           (long long)json_integer_value(json_object_get(c, "bake_ms")),
           json_real_value(json_object_get(c, "max_error_rate")));
    printf("canaries' rate  %.4f (%lld errors of %lld requests), limit %.4f\n",
           json_real_value(json_object_get(c, "error_rate")),
           (long long)json_integer_value(json_object_get(c, "canary_errors")),
           (long long)json_integer_value(json_object_get(c, "canary_requests")),
           json_real_value(json_object_get(c, "limit")));
    printf("rest of fleet   %lld errors of %lld requests\n",
           (long long)json_integer_value(json_object_get(c, "rest_errors")),
           (long long)json_integer_value(json_object_get(c, "rest_requests")));
    if (json_integer_value(json_object_get(c, "final_version")) > 0)
        printf("ended with      version %lld\n",
               (long long)json_integer_value(json_object_get(c, "final_version")));
    if (json_is_string(json_object_get(c, "reason")))
        printf("reason          %s\n", output_cell(json_object_get(c, "reason"), why, sizeof(why)));
    return LBCTL_EXIT_OK;
}

static const char canary_help[] =
    "Usage: lbctl config canary [abort] [--json]\n"
    "\n"
    "Shows the staged rollout (config apply --canary): its canaries, status, the\n"
    "error rates over the bake, how it ended (GET /api/v1/config/canary). abort\n"
    "rolls it back now as a new version (POST /api/v1/config/canary/abort).\n";

static int config_canary(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "config canary";
    char *pos[1] = {NULL};
    size_t npos = 0;
    int rc = lbctl_parse(ctx, verb, canary_help, argc, argv, NULL, 0, pos, 1, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    bool abort_it = npos == 1 && strcmp(pos[0], "abort") == 0;
    if (npos == 1 && !abort_it)
        return lbctl_usage(verb, "unknown command '%s' (abort?)", pos[0]);
    struct lbctl_req r = {.method = abort_it ? "POST" : "GET",
                          .path =
                              abort_it ? "/api/v1/config/canary/abort" : "/api/v1/config/canary"};
    json_t *root;
    if ((rc = lbctl_fetch(ctx, &r, &root)) != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = print_canary(json_object_get(root, "canary"));
    json_decref(root);
    return rc;
}

static int config_apply(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "config apply";
    struct lbctl_opt o[] = {LBCTL_WRITE_OPTS,
                            {"canary", true, NULL, false},
                            {"bake", true, NULL, false},
                            {"max-error-rate", true, NULL, false}};
    char *pos[1];
    int rc = lbctl_parse_one(ctx, verb, apply_help, argc, argv, o, 5, pos,
                             "missing the config FILE (- for stdin)");
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if ((rc = lbctl_check_write(verb, o)) != LBCTL_EXIT_OK)
        return rc;
    char path[1400];
    if ((rc = canary_path(verb, o + 2, path, sizeof(path))) != LBCTL_EXIT_OK)
        return rc;
    char *body = NULL;
    size_t len = 0;
    if ((rc = read_file(verb, pos[0], &body, &len)) != LBCTL_EXIT_OK)
        return rc;
    size_t lead = 0;
    while (lead < len && strchr(" \t\r\n", body[lead]) != NULL)
        lead++;
    if (lead == len) {
        free(body);
        return lbctl_usage(verb, "%s is empty", pos[0]);
    }
    struct lbctl_req r = {
        .method = "POST",
        .path = path[0] ? path : "/api/v1/config",
        .body = body,
        .body_len = len,
        .content_type = body[lead] == '{' ? "application/json" : "application/yaml",
        .comment = o[0].value,
        .if_match = o[1].value,
    };
    json_t *root;
    rc = lbctl_fetch(ctx, &r, &root);
    free(body);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    if (path[0]) {
        rc = print_canary(json_object_get(root, "canary"));
        json_decref(root);
        return rc;
    }
    char version[32];
    output_cell(json_object_get(root, "version"), version, sizeof(version));
    const json_t *changes = json_object_get(root, "changes");
    if (json_is_true(json_object_get(root, "unchanged")) || json_array_size(changes) == 0) {
        printf("config unchanged: version %s is already active, no version created\n", version);
    } else {
        /* The server lists at most 1,000 changes and then gives the total. */
        const json_t *total = json_object_get(root, "changes_total");
        size_t n =
            json_is_integer(total) ? (size_t)json_integer_value(total) : json_array_size(changes);
        printf("config version %s created and active, %zu change%s", version, n, n == 1 ? "" : "s");
        if (n > json_array_size(changes))
            printf(" (the first %zu below; lbctl config diff lists them all)",
                   json_array_size(changes));
        printf(":\n");
        rc = print_changes(changes);
    }
    json_decref(root);
    return rc;
}

static const char *const history_headers[] = {"VERSION", "ACTIVE", "CREATED",
                                              "AUTHOR",  "HASH",   "COMMENT"};

static int add_version_row(struct table *t, const json_t *v)
{
    char version[32], active[8], created[32], author[128], hash[16], comment[512];
    output_cell(json_object_get(v, "hash"), hash, sizeof(hash));
    hash[12] = '\0'; /* enough to tell versions apart, as git does */
    const char *row[] = {
        output_cell(json_object_get(v, "version"), version, sizeof(version)),
        output_cell(json_object_get(v, "active"), active, sizeof(active)),
        output_time(json_object_get(v, "created_ms"), created, sizeof(created)),
        output_cell(json_object_get(v, "author"), author, sizeof(author)),
        hash,
        output_cell(json_object_get(v, "comment"), comment, sizeof(comment)),
    };
    return table_add(t, row);
}

static int config_history(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "config history";
    struct lbctl_opt o[] = {{"limit", true, NULL, false}};
    size_t npos;
    int rc = lbctl_parse(ctx, verb, history_help, argc, argv, o, 1, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    long long limit = 50;
    if (o[0].set &&
        (rc = lbctl_parse_int(verb, "--limit", o[0].value, 1, HISTORY_MAX, &limit)) != 0)
        return rc;
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/config/versions?limit=%lld", limit);
    struct lbctl_req r = {.method = "GET", .path = path};
    json_t *root;
    if ((rc = lbctl_fetch(ctx, &r, &root)) != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = lbctl_print_table(6, history_headers, json_object_get(root, "versions"), add_version_row);
    json_decref(root);
    return rc;
}

static int config_diff(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "config diff";
    char *pos[2];
    size_t npos;
    int rc = lbctl_parse(ctx, verb, diff_help, argc, argv, NULL, 0, pos, 2, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    if (npos != 2)
        return lbctl_usage(verb, "wants two config versions, A and B");
    long long a, b;
    if ((rc = lbctl_parse_int(verb, "version A", pos[0], 1, INT64_MAX, &a)) ||
        (rc = lbctl_parse_int(verb, "version B", pos[1], 1, INT64_MAX, &b)))
        return rc;
    char path[96];
    snprintf(path, sizeof(path), "/api/v1/config/diff?from=%lld&to=%lld", a, b);
    struct lbctl_req r = {.method = "GET", .path = path};
    json_t *root;
    if ((rc = lbctl_fetch(ctx, &r, &root)) != LBCTL_EXIT_OK || root == NULL)
        return rc;
    const json_t *changes = json_object_get(root, "changes");
    const char *text = json_string_value(json_object_get(root, "text"));
    if (json_array_size(changes) == 0 && (text == NULL || text[0] == '\0'))
        printf("no changes from version %lld to version %lld\n", a, b);
    else if (text != NULL && text[0] != '\0')
        print_text(text);
    else
        rc = print_changes(changes);
    json_decref(root);
    return rc;
}

int cmd_config(struct lbctl *ctx, int argc, char **argv)
{
    if (argc < 2)
        return lbctl_usage("config", "missing a command: get, apply, history or diff");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(config_help, stdout);
        return LBCTL_EXIT_OK;
    }
    if (strcmp(sub, "get") == 0)
        return config_get(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "apply") == 0)
        return config_apply(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "history") == 0)
        return config_history(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "diff") == 0)
        return config_diff(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "canary") == 0)
        return config_canary(ctx, argc - 1, argv + 1);
    return lbctl_usage("config", "unknown command '%s'", sub);
}

/* rollback --canary: version <n>'s content staged like config apply --canary. */
static int rollback_canary(struct lbctl *ctx, const char *verb, long long n, const char *comment,
                           const char *path)
{
    char vpath[64];
    snprintf(vpath, sizeof(vpath), "/api/v1/config/versions/%lld", n);
    struct lbctl_req g = {.method = "GET", .path = vpath};
    json_t *v;
    int rc = lbctl_call(ctx, &g, &v, NULL);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    const char *content = json_string_value(json_object_get(v, "content"));
    if (content == NULL) {
        json_decref(v);
        return lbctl_fail(LBCTL_EXIT_API, "%s: version %lld has no content", verb, n);
    }
    char why[96];
    snprintf(why, sizeof(why), "staged rollback to version %lld", n);
    struct lbctl_req r = {
        .method = "POST",
        .path = path,
        .body = content,
        .body_len = strlen(content),
        .content_type = "application/yaml",
        .comment = comment ? comment : why,
    };
    json_t *root;
    rc = lbctl_fetch(ctx, &r, &root);
    json_decref(v);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    rc = print_canary(json_object_get(root, "canary"));
    json_decref(root);
    return rc;
}

int cmd_rollback(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "rollback";
    struct lbctl_opt o[] = {LBCTL_WRITE_OPTS,
                            {"canary", true, NULL, false},
                            {"bake", true, NULL, false},
                            {"max-error-rate", true, NULL, false}};
    char *pos[1];
    int rc = lbctl_parse_one(ctx, verb, rollback_help, argc, argv, o, 5, pos,
                             "missing the config version N to roll back to");
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    long long n;
    char path[1400];
    if ((rc = lbctl_parse_int(verb, "version N", pos[0], 1, INT64_MAX, &n)) ||
        (rc = lbctl_check_write(verb, o)) || (rc = canary_path(verb, o + 2, path, sizeof(path))))
        return rc;
    if (path[0] && o[1].set)
        return lbctl_usage(verb, "--if-match does not go with --canary");
    if (path[0])
        return rollback_canary(ctx, verb, n, o[0].value, path);
    json_t *body = json_pack("{sI}", "version", (json_int_t)n);
    if (body == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    if (o[0].set && (rc = lbctl_set_str(verb, body, "comment", o[0].value)) != LBCTL_EXIT_OK) {
        json_decref(body);
        return rc;
    }
    struct lbctl_req r = {
        .method = "POST",
        .path = "/api/v1/config/rollback",
        .json = body,
        .if_match = o[1].value,
    };
    json_t *root;
    rc = lbctl_fetch(ctx, &r, &root);
    json_decref(body);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    char version[32];
    printf("rolled back to version %lld as config version %s\n", n,
           output_cell(json_object_get(root, "version"), version, sizeof(version)));
    json_decref(root);
    return LBCTL_EXIT_OK;
}
