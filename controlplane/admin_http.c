/* controlplane/admin_http.c: the admin API's HTTP vocabulary shared by every
 * handler: complete responses (counted per method and status for
 * lb_cp_api_requests_total), JSON bodies, errors as {"error": {"code",
 * "message"}}, and the readers of a request (headers, If-Match, the
 * comment, a JSON body, query parameters). */
#include "admin_int.h"

#include "lb_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void count_request(struct admin *a, const char *method, unsigned status)
{
    for (size_t i = 0; i < a->n_counts; i++) {
        if (a->counts[i].status == status && strcmp(a->counts[i].method, method) == 0) {
            a->counts[i].n++;
            return;
        }
    }
    if (a->n_counts < API_COUNT_MAX)
        a->counts[a->n_counts++] = (struct api_count){method, status, 1};
}

/* Queues one complete response; <extra> holds more header lines ("X: y\r\n"). */
void admin__respond(struct req *r, unsigned status, const char *ctype, const char *body, size_t len,
                    const char *extra)
{
    admin__respond_cache(r, status, ctype, body, len, extra, "no-store");
}

void admin__respond_cache(struct req *r, unsigned status, const char *ctype, const char *body,
                          size_t len, const char *extra, const char *cache)
{
    struct conn *c = r->c;
    count_request(c->a, r->method, status);
    char head[1024], clen[48] = "";
    /* a 304 has no body and must not claim a length other than the file's */
    if (status != 304)
        snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", len);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %u %s\r\nContent-Type: %s\r\n%s"
                     "Cache-Control: %s\r\nX-Content-Type-Options: nosniff\r\n%s%s\r\n",
                     status, http1_reason(status), ctype, clen, cache, extra ? extra : "",
                     c->close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        c->close_after = true;
        return;
    }
    if (r->msg != NULL && r->msg->meth == HTTP1_M_HEAD)
        len = 0; /* the same head as GET's, Content-Length included */
    size_t need = c->out_len + (size_t)n + len;
    char *o = realloc(c->out, need ? need : 1);
    if (o == NULL) {
        c->close_after = true;
        return;
    }
    c->out = o;
    memcpy(c->out + c->out_len, head, (size_t)n);
    if (len)
        memcpy(c->out + c->out_len + (size_t)n, body, len);
    c->out_len = need;
}

/* Serialises <j> (taken) as the body, with <extra> header lines; when that
 * fails, answers 500 with <oom> instead. */
static void respond_dumped(struct req *r, unsigned status, json_t *j, const char *extra,
                           const char *oom)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        admin__respond(r, 500, "application/json", oom, strlen(oom), NULL);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    admin__respond(r, status, "application/json", text, len + 1, extra);
    free(text);
}

void admin__respond_json(struct req *r, unsigned status, json_t *j)
{
    respond_dumped(r, status, j, NULL,
                   "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
}

void admin__respond_error_x(struct req *r, unsigned status, const char *code, const char *extra,
                            const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_dumped(r, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg),
                   extra, "{}");
}

/* Maps a core error to the API's status and code. */
void admin__respond_lb_err(struct req *r, const struct lb_err *e)
{
    switch (e->code) {
    case LB_EINVAL:
    case LB_ESYS: /* an unreadable TLS file named by the config */
        admin__respond_error(r, 400, "invalid_config", "%s", e->msg);
        break;
    case LB_ECONFLICT:
        admin__respond_error(r, 409, "conflict", "%s", e->msg);
        break;
    case LB_ENOTFOUND:
        admin__respond_error(r, 404, "not_found", "%s", e->msg);
        break;
    case LB_ESTORE:
        admin__respond_error(r, 500, "store_failed", "%s", e->msg);
        break;
    default:
        admin__respond_error(r, 500, "internal", "%s", e->msg[0] ? e->msg : "internal error");
        break;
    }
}

/* ---- request helpers ----------------------------------------------------------- */

const struct http1_header *admin__find_header(const struct http1_msg *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_headers; i++)
        if (http1_slice_eq(m->headers[i].name, name))
            return &m->headers[i];
    return NULL;
}

bool admin__slice_prefix(struct http1_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && strncasecmp(s.p, lit, n) == 0;
}

/* Parses a plain decimal uint64 (1..) from [p, p+len). */
bool admin__parse_u64(const char *p, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* Reads If-Match into <expected>; false (and an answer queued) when malformed. */
static bool read_if_match(struct req *r, uint64_t *expected)
{
    *expected = 0;
    const struct http1_header *h = admin__find_header(r->msg, "If-Match");
    if (h == NULL)
        return true;
    const char *p = h->value.p;
    size_t len = h->value.len;
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        p++;
        len -= 2;
    }
    if (!admin__parse_u64(p, len, expected) || *expected == 0) {
        admin__respond_error(r, 400, "invalid_request", "If-Match must be a config version number");
        return false;
    }
    return true;
}

/* The comment of a write: <json_comment> when the body is JSON (may be
 * NULL), else X-Lb-Comment. Copied into <buf>. False (answered) when too long. */
static bool read_comment(struct req *r, const json_t *body, char *buf, size_t size)
{
    buf[0] = '\0';
    if (body != NULL) {
        const json_t *cm = json_object_get(body, "comment");
        if (cm == NULL || json_is_null(cm))
            return true;
        if (!json_is_string(cm)) {
            admin__respond_error(r, 400, "invalid_request", "comment must be a string");
            return false;
        }
        if (json_string_length(cm) > ADMIN_COMMENT_MAX) {
            admin__respond_error(r, 400, "invalid_request", "comment is longer than %d bytes",
                                 ADMIN_COMMENT_MAX);
            return false;
        }
        snprintf(buf, size, "%s", json_string_value(cm));
        return true;
    }
    const struct http1_header *h = admin__find_header(r->msg, "X-Lb-Comment");
    if (h == NULL)
        return true;
    if (h->value.len > ADMIN_COMMENT_MAX) {
        admin__respond_error(r, 400, "invalid_request", "X-Lb-Comment is longer than %d bytes",
                             ADMIN_COMMENT_MAX);
        return false;
    }
    /* Stored comments go out in JSON (history, audit): UTF-8 only. */
    json_t *valid = json_stringn(h->value.p, h->value.len);
    json_decref(valid);
    if (valid == NULL) {
        admin__respond_error(r, 400, "invalid_request", "X-Lb-Comment must be UTF-8 text");
        return false;
    }
    snprintf(buf, size, "%.*s", (int)h->value.len, h->value.p);
    return true;
}

/* Parses the body as a JSON object; NULL (answered) when it is not one. */
static json_t *read_json_body(struct req *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        admin__respond_error(r, 400, "invalid_json", "%d:%d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        admin__respond_error(r, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Refuses members other than <allowed> (NULL-terminated); true when fine. */
bool admin__only_keys(struct req *r, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok) {
            admin__respond_error(r, 400, "invalid_request", "unknown field \"%s\"", key);
            return false;
        }
    }
    return true;
}

/* Value of query parameter <key> in <query> (not decoded), length in <len>. */
const char *admin__query_get(const char *query, size_t qlen, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *p = query, *end = query + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            *len = (size_t)(stop - p - (ptrdiff_t)klen - 1);
            return p + klen + 1;
        }
        p = stop + 1;
    }
    return NULL;
}

int64_t admin__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* JSON text made by config.c, parsed back to embed it. */
json_t *admin__embed(char *text)
{
    if (text == NULL)
        return NULL;
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

const char *admin__method_name(uint8_t meth)
{
    switch (meth) {
    case HTTP1_M_GET:
        return "GET";
    case HTTP1_M_POST:
        return "POST";
    case HTTP1_M_PUT:
        return "PUT";
    case HTTP1_M_DELETE:
        return "DELETE";
    case HTTP1_M_HEAD:
        return "HEAD";
    default:
        return "OTHER";
    }
}

bool admin__write_start(struct req *r, bool json_body, struct admin_write *wr)
{
    wr->body = NULL;
    wr->w = (struct cp_write){0};
    if (!read_if_match(r, &wr->w.expected_version))
        return false;
    if (json_body && (wr->body = read_json_body(r)) == NULL)
        return false;
    if (!read_comment(r, wr->body, wr->comment, sizeof(wr->comment))) {
        json_decref(wr->body);
        wr->body = NULL;
        return false;
    }
    wr->w.author = r->author;
    wr->w.comment = wr->comment;
    return true;
}

void admin__write_end(struct admin_write *wr)
{
    json_decref(wr->body);
}
