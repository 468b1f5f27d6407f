/* lbctl/common.c: option parsing and the admin API call shared by the verbs. */
#include "lbctl.h"

#include "client.h"
#include "lb_err.h"
#include "output.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMENT_MAX 500

int lbctl_usage(const char *verb, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (verb[0] != '\0')
        fprintf(stderr, "lbctl: %s: %s (see 'lbctl %s --help')\n", verb, msg, verb);
    else
        fprintf(stderr, "lbctl: %s (see 'lbctl --help')\n", msg);
    return LBCTL_EXIT_USAGE;
}

int lbctl_fail(int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line, whatever the server put in its message. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    fprintf(stderr, "lbctl: %s\n", msg);
    return status;
}

int lbctl_parse(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
                struct lbctl_opt *opts, size_t nopts, char **pos, size_t maxpos, size_t *npos)
{
    bool help_seen = false;
    bool opts_done = false;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*npos == maxpos)
                return lbctl_usage(verb, "unexpected argument '%s'", a);
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help_seen = true;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            ctx->json = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            return lbctl_usage(verb, "unknown option '%s'", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        struct lbctl_opt *o = NULL;
        for (size_t k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0)
                o = &opts[k];
        if (o == NULL)
            return lbctl_usage(verb, "unknown option '%.*s'", (int)(nlen + 2), a);
        if (o->set)
            return lbctl_usage(verb, "option '--%s' given twice", o->name);
        o->set = true;
        if (!o->has_arg) {
            if (eq != NULL)
                return lbctl_usage(verb, "option '--%s' takes no value", o->name);
            continue;
        }
        if (eq != NULL) {
            o->value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return lbctl_usage(verb, "option '--%s' needs a value", o->name);
            o->value = argv[++i];
        }
    }
    if (help_seen) {
        fputs(help, stdout);
        return -1;
    }
    return LBCTL_EXIT_OK;
}

int lbctl_parse_one(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
                    struct lbctl_opt *opts, size_t nopts, char **operand, const char *missing)
{
    size_t npos;
    int rc = lbctl_parse(ctx, verb, help, argc, argv, opts, nopts, operand, 1, &npos);
    if (rc == LBCTL_EXIT_OK && npos != 1)
        return lbctl_usage(verb, "%s", missing);
    return rc;
}

int lbctl_check_if_match(const char *verb, const char *v)
{
    if (v == NULL)
        return LBCTL_EXIT_OK;
    const char *p = v;
    size_t n = strlen(v);
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    if (n == 0 || n > 19 || strspn(p, "0123456789") < n)
        return lbctl_usage(verb, "--if-match wants a config version number, not '%s'", v);
    return LBCTL_EXIT_OK;
}

int lbctl_check_comment(const char *verb, const char *v)
{
    if (v == NULL)
        return LBCTL_EXIT_OK;
    if (strlen(v) > COMMENT_MAX)
        return lbctl_usage(verb, "--comment is longer than %d bytes", COMMENT_MAX);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return lbctl_usage(verb, "--comment must be one line without control characters");
    return LBCTL_EXIT_OK;
}

int lbctl_parse_int(const char *verb, const char *what, const char *s, long long min, long long max,
                    long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return lbctl_usage(verb, "%s wants a whole number from %lld to %lld, not '%s'", what, min,
                           max, s);
    *out = v;
    return LBCTL_EXIT_OK;
}

int lbctl_set_str(const char *verb, json_t *obj, const char *key, const char *value)
{
    json_t *v = json_string(value);
    if (v == NULL)
        return lbctl_usage(verb, "the %s '%s' is not valid UTF-8", key, value);
    if (json_object_set_new(obj, key, v) != 0)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    return LBCTL_EXIT_OK;
}

char *lbctl_escape(struct lbctl *ctx, const char *s)
{
    return client_escape(ctx->client, s);
}

/* The server's {"error": {"code", "message"}} as one line, or a description
 * of whatever else it sent. */
static int report_error(const struct client_resp *resp)
{
    json_error_t jerr;
    json_t *root = json_loadb(resp->body, resp->body_len, 0, &jerr);
    json_t *e = json_object_get(root, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    int rc;
    if (msg != NULL)
        rc = lbctl_fail(LBCTL_EXIT_API, "%s (%s)", msg, code ? code : "unknown");
    else
        rc = lbctl_fail(LBCTL_EXIT_API,
                        "the control plane answered HTTP %ld without a JSON error (%s)",
                        resp->status, resp->content_type ? resp->content_type : "no content type");
    json_decref(root);
    return rc;
}

int lbctl_call(struct lbctl *ctx, const struct lbctl_req *r, json_t **out, char **text)
{
    struct client_req req = {
        .method = r->method,
        .path = r->path,
        .body = r->body,
        .body_len = r->body_len,
        .content_type = r->content_type,
        .accept = r->accept,
        .if_match = r->if_match,
        .comment = r->comment,
    };
    char *dumped = NULL;
    if (out != NULL)
        *out = NULL;
    if (text != NULL)
        *text = NULL;
    if (r->json != NULL) {
        dumped = json_dumps(r->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (dumped == NULL)
            return lbctl_fail(LBCTL_EXIT_API, "out of memory");
        req.body = dumped;
        req.body_len = strlen(dumped);
        req.content_type = "application/json";
    }
    struct client_resp resp;
    struct lb_err err;
    lb_err_clear(&err);
    int rc = client_do(ctx->client, &req, &resp, &err);
    free(dumped);
    if (rc == LB_ESYS)
        return lbctl_fail(LBCTL_EXIT_UNREACHABLE, "cannot reach the control plane at %s: %s",
                          client_target(ctx->client), err.msg);
    if (rc != LB_OK)
        return lbctl_fail(LBCTL_EXIT_API, "%s", err.msg);
    if (resp.status < 200 || resp.status > 299) {
        rc = report_error(&resp);
        client_resp_deinit(&resp);
        return rc;
    }
    if (r->accept != NULL && text != NULL) {
        *text = resp.body;
        resp.body = NULL;
        client_resp_deinit(&resp);
        return LBCTL_EXIT_OK;
    }
    json_error_t jerr;
    json_t *root = json_loadb(resp.body, resp.body_len, 0, &jerr);
    if (root == NULL) {
        rc = lbctl_fail(LBCTL_EXIT_API,
                        "the control plane answered HTTP %ld with something that is not JSON "
                        "(%s): %s",
                        resp.status, resp.content_type ? resp.content_type : "no content type",
                        jerr.text);
        client_resp_deinit(&resp);
        return rc;
    }
    client_resp_deinit(&resp);
    *out = root;
    return LBCTL_EXIT_OK;
}

int lbctl_emit_json(json_t *root)
{
    int rc = output_json(root, stdout) == 0 ? LBCTL_EXIT_OK
                                            : lbctl_fail(LBCTL_EXIT_API, "out of memory");
    json_decref(root);
    return rc;
}

int lbctl_fetch(struct lbctl *ctx, const struct lbctl_req *r, json_t **out)
{
    json_t *root;
    *out = NULL;
    int rc = lbctl_call(ctx, r, &root, NULL);
    if (rc != LBCTL_EXIT_OK)
        return rc;
    if (ctx->json)
        return lbctl_emit_json(root);
    *out = root;
    return LBCTL_EXIT_OK;
}

int lbctl_get(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
              const char *method, const char *path, json_t **out)
{
    size_t npos;
    *out = NULL;
    int rc = lbctl_parse(ctx, verb, help, argc, argv, NULL, 0, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    struct lbctl_req r = {.method = method, .path = path};
    return lbctl_fetch(ctx, &r, out);
}

int lbctl_print_table(size_t ncols, const char *const *headers, const json_t *items,
                      lbctl_row_fn row)
{
    struct table *t = table_new(ncols, headers);
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        if (t != NULL && row(t, item) != 0) {
            table_free(t);
            t = NULL;
        }
    }
    if (t == NULL)
        return lbctl_fail(LBCTL_EXIT_API, "out of memory");
    table_print(t, stdout);
    table_free(t);
    return LBCTL_EXIT_OK;
}

int lbctl_check_write(const char *verb, const struct lbctl_opt *w)
{
    int rc = lbctl_check_comment(verb, w[0].value);
    return rc != LBCTL_EXIT_OK ? rc : lbctl_check_if_match(verb, w[1].value);
}

int lbctl_parse_duration(const char *verb, const char *opt, const char *s, long long *ms)
{
    char *end = NULL;
    double v = s ? strtod(s, &end) : -1;
    double scale = 1000;
    if (end != NULL && end != s) {
        if (strcmp(end, "ms") == 0)
            scale = 1;
        else if (strcmp(end, "s") == 0 || *end == '\0')
            scale = 1000;
        else if (strcmp(end, "m") == 0)
            scale = 60000;
        else if (strcmp(end, "h") == 0)
            scale = 3600000;
        else
            end = NULL;
    }
    if (end == NULL || end == s || !(v >= 0) || v * scale > 7.0 * 24 * 3600 * 1000)
        return lbctl_usage(verb,
                           "--%s wants a duration such as 500ms, 10s or 2m (at most a week), "
                           "not '%s'",
                           opt, s ? s : "");
    *ms = (long long)(v * scale + 0.5);
    return LBCTL_EXIT_OK;
}

int lbctl_parse_rate(const char *verb, const char *s, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end != s && strcmp(end, "%") == 0)
        v /= 100;
    else if (end == s || *end != '\0')
        end = NULL;
    if (end == NULL || !(v >= 0 && v <= 1))
        return lbctl_usage(verb, "--max-error-rate wants 0..100%% or 0..1, not '%s'", s);
    *out = v;
    return LBCTL_EXIT_OK;
}

int lbctl_canary_query(const char *verb, const struct lbctl_opt *o, char *q, size_t size)
{
    q[0] = '\0';
    if (!o[0].set) {
        if (o[1].set || o[2].set)
            return lbctl_usage(verb, "--bake and --max-error-rate go with --canary");
        return LBCTL_EXIT_OK;
    }
    const char *v = o[0].value;
    if (v == NULL || v[0] == '\0' || strlen(v) > 256)
        return lbctl_usage(verb, "--canary wants NODE[,NODE...] or a percentage such as 10%%");
    size_t n = (size_t)snprintf(q, size, "nodes=");
    for (const char *c = v; *c != '\0' && n + 4 < size; c++) {
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~,", *c))
            q[n++] = *c;
        else
            n += (size_t)snprintf(q + n, size - n, "%%%02X", (unsigned char)*c);
    }
    q[n] = '\0';
    int rc;
    if (o[1].set) {
        long long ms;
        if ((rc = lbctl_parse_duration(verb, "bake", o[1].value, &ms)) != LBCTL_EXIT_OK)
            return rc;
        n += (size_t)snprintf(q + n, size - n, "&bake_ms=%lld", ms);
    }
    if (o[2].set) {
        double r;
        if ((rc = lbctl_parse_rate(verb, o[2].value, &r)) != LBCTL_EXIT_OK)
            return rc;
        snprintf(q + n, size - n, "&max_error_rate=%.6f", r);
    }
    return LBCTL_EXIT_OK;
}
