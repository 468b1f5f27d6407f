/* lbctl/cmd_audit.c: "lbctl audit": who changed what, newest first. */
#include "lbctl.h"
#include "output.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUDIT_LIMIT_MAX 1000 /* the server's bound */

static const char audit_help[] =
    "Usage: lbctl audit [--since T] [--who W] [--action A] [--limit N] [--json]\n"
    "\n"
    "Lists the audit log, newest first (GET /api/v1/audit): every config version,\n"
    "backend change, rollback, TLS reload, health verdict and dynamic weight\n"
    "change, with when, who (uid:N on the unix socket, token:NAME over TCP, or\n"
    "bootstrap, health, certwatch, dynamic-weights), the action, the config\n"
    "version before and after, and what changed.\n"
    "  --since T     entries written at or after T: an RFC 3339 time\n"
    "                (2026-12-06T19:30:00Z, 2026-12-06T20:30:00+01:00), unix\n"
    "                milliseconds, or an age ago: 90s, 15m, 2h, 7d\n"
    "  --who W       only entries by W, exactly (uid:1000, token:ops, health)\n"
    "  --action A    only entries of action A, exactly: config.put, rollback,\n"
    "                backend.add, backend.update, backend.drain, backend.remove,\n"
    "                tls.reload, health, weights\n"
    "  --limit N     at most N entries, 1..1000 (default 100)\n";

/* "15m" -> unix ms 15 minutes ago into <buf>; false when <s> is not an age. */
static bool age_to_ms(const char *s, char *buf, size_t size)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 9 || s[n] == '\0' || s[n + 1] != '\0')
        return false;
    static const struct {
        char unit;
        long long ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (s[n] != units[i].unit)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        long long ago = now - strtoll(s, NULL, 10) * units[i].ms;
        snprintf(buf, size, "%lld", ago > 0 ? ago : 0);
        return true;
    }
    return false;
}

/* Appends "&<key>=<escaped value>" to the query in <q>. */
static int add_param(struct lbctl *ctx, char *q, size_t size, const char *key, const char *value)
{
    char *e = lbctl_escape(ctx, value);
    if (e == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    size_t len = strlen(q);
    int n = snprintf(q + len, size - len, "&%s=%s", key, e);
    free(e);
    if (n < 0 || (size_t)n >= size - len)
        return lbctl_usage("audit", "the --%s value is too long", key);
    return LBCTL_EXIT_OK;
}

static const char *const audit_headers[] = {"TIME", "WHO", "ACTION", "VERSION", "DETAIL"};

/* "3 -> 4", "- -> 1", "4" when a change kept the version, "-" with none. */
static const char *versions(const json_t *e, char *buf, size_t size)
{
    const json_t *from = json_object_get(e, "from_version");
    const json_t *to = json_object_get(e, "to_version");
    char a[32], b[32];
    output_cell(from, a, sizeof(a));
    output_cell(to, b, sizeof(b));
    if (!json_is_integer(from) && !json_is_integer(to))
        snprintf(buf, size, "-");
    else if (json_is_integer(from) && json_is_integer(to) &&
             json_integer_value(from) == json_integer_value(to))
        snprintf(buf, size, "%s", b);
    else
        snprintf(buf, size, "%s -> %s", a, b);
    return buf;
}

static int add_audit_row(struct table *t, const json_t *e)
{
    char when[32], who[128], action[64], ver[72], detail[1600];
    const char *row[] = {
        output_time(json_object_get(e, "time_ms"), when, sizeof(when)),
        output_cell(json_object_get(e, "who"), who, sizeof(who)),
        output_cell(json_object_get(e, "action"), action, sizeof(action)),
        versions(e, ver, sizeof(ver)),
        output_cell(json_object_get(e, "detail"), detail, sizeof(detail)),
    };
    return table_add(t, row);
}

int cmd_audit(struct lbctl *ctx, int argc, char **argv)
{
    const char *verb = "audit";
    struct lbctl_opt o[] = {
        {"since", true, NULL, false},
        {"who", true, NULL, false},
        {"action", true, NULL, false},
        {"limit", true, NULL, false},
    };
    size_t npos;
    int rc = lbctl_parse(ctx, verb, audit_help, argc, argv, o, 4, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    long long limit = 100;
    if (o[3].set &&
        (rc = lbctl_parse_int(verb, "--limit", o[3].value, 1, AUDIT_LIMIT_MAX, &limit)) != 0)
        return rc;
    for (int i = 0; i < 3; i++)
        if (o[i].set && o[i].value[0] == '\0')
            return lbctl_usage(verb, "--%s wants a value", o[i].name);
    char since[32];
    const char *since_v = o[0].value;
    if (o[0].set && age_to_ms(o[0].value, since, sizeof(since)))
        since_v = since;

    char path[1024];
    snprintf(path, sizeof(path), "/api/v1/audit?limit=%lld", limit);
    if ((o[0].set && (rc = add_param(ctx, path, sizeof(path), "since", since_v)) != 0) ||
        (o[1].set && (rc = add_param(ctx, path, sizeof(path), "who", o[1].value)) != 0) ||
        (o[2].set && (rc = add_param(ctx, path, sizeof(path), "action", o[2].value)) != 0))
        return rc;
    struct lbctl_req r = {.method = "GET", .path = path};
    json_t *root;
    if ((rc = lbctl_fetch(ctx, &r, &root)) != LBCTL_EXIT_OK || root == NULL)
        return rc;
    const json_t *entries = json_object_get(root, "entries");
    if (json_array_size(entries) == 0)
        printf("no audit entries%s\n", o[0].set || o[1].set || o[2].set ? " match" : "");
    else
        rc = lbctl_print_table(5, audit_headers, entries, add_audit_row);
    if (rc == LBCTL_EXIT_OK && json_is_true(json_object_get(root, "more")))
        printf("(older entries not shown: raise --limit, at most %d, or narrow with --since, "
               "--who, --action)\n",
               AUDIT_LIMIT_MAX);
    json_decref(root);
    return rc;
}
