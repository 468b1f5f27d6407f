/* dataplane/h2req.c: an HTTP/2 request's header list as an HTTP/1.1 head. */
#include "h2req.h"

#include <string.h>

static bool is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool h2req_name_ok(const uint8_t *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar(name[i]))
            return false; /* uppercase too: HTTP/2 names are lowercase */
    }
    return true;
}

bool h2req_value_ok(const uint8_t *v, size_t len)
{
    if (len > 0 && (v[0] == ' ' || v[0] == '\t' || v[len - 1] == ' ' || v[len - 1] == '\t'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return false;
    }
    return true;
}

static bool name_is(const struct h2req_field *f, const char *s)
{
    size_t n = strlen(s);
    return f->name_len == n && memcmp(f->name, s, n) == 0;
}

static bool value_is(const struct h2req_field *f, const char *s)
{
    size_t n = strlen(s);
    return f->value_len == n && memcmp(f->value, s, n) == 0;
}

struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (o->full || o->cap - o->len < n) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

struct pseudo {
    const struct h2req_field *method, *scheme, *path, *authority, *host;
    bool has_length, has_cookie;
};

/* The pseudo-headers (first, once each, known names) and the checks on the
 * other fields. NULL when they are good, else why not. */
static const char *h2req_scan(const struct h2req_field *f, size_t n, struct pseudo *ps)
{
    bool regular = false;
    memset(ps, 0, sizeof(*ps));
    for (size_t i = 0; i < n; i++) {
        const struct h2req_field *h = &f[i];
        if (!h2req_value_ok(h->value, h->value_len))
            return "invalid character in a field value";
        if (h->name_len > 0 && h->name[0] == ':') {
            const struct h2req_field **slot = name_is(h, ":method")      ? &ps->method
                                              : name_is(h, ":scheme")    ? &ps->scheme
                                              : name_is(h, ":path")      ? &ps->path
                                              : name_is(h, ":authority") ? &ps->authority
                                                                         : NULL;
            if (slot == NULL)
                return "unknown pseudo-header";
            if (regular)
                return "pseudo-header after a regular field";
            if (*slot != NULL)
                return "duplicate pseudo-header";
            *slot = h;
            continue;
        }
        regular = true;
        if (!h2req_name_ok(h->name, h->name_len))
            return "invalid field name (uppercase or not a token)";
        if (name_is(h, "connection") || name_is(h, "keep-alive") ||
            name_is(h, "proxy-connection") || name_is(h, "transfer-encoding") ||
            name_is(h, "upgrade"))
            return "connection-specific field";
        if (name_is(h, "te") && !value_is(h, "trailers"))
            return "te other than \"trailers\"";
        if (name_is(h, "host")) {
            if (ps->host != NULL)
                return "duplicate host field";
            ps->host = h;
        }
        ps->has_length = ps->has_length || name_is(h, "content-length");
        ps->has_cookie = ps->has_cookie || name_is(h, "cookie");
    }
    return NULL;
}

static const char *h2req_check_pseudo(const struct pseudo *ps, int *code)
{
    *code = H2REQ_MALFORMED;
    if (ps->method == NULL || ps->method->value_len == 0)
        return "missing :method";
    for (size_t i = 0; i < ps->method->value_len; i++) {
        uint8_t c = ps->method->value[i];
        if (!is_tchar(c) && !(c >= 'A' && c <= 'Z'))
            return "invalid :method";
    }
    if (value_is(ps->method, "CONNECT")) {
        *code = H2REQ_CONNECT;
        return "CONNECT is not supported over HTTP/2";
    }
    if (ps->scheme == NULL || ps->path == NULL || ps->path->value_len == 0)
        return "missing :scheme or :path";
    if (!value_is(ps->scheme, "http") && !value_is(ps->scheme, "https"))
        return "invalid :scheme";
    const struct h2req_field *p = ps->path;
    bool star = p->value_len == 1 && p->value[0] == '*';
    if (star ? !value_is(ps->method, "OPTIONS") : p->value[0] != '/')
        return "invalid :path";
    for (size_t i = 0; i < p->value_len; i++) {
        if (p->value[i] <= 0x20 || p->value[i] >= 0x7f)
            return "invalid character in :path";
    }
    const struct h2req_field *a = ps->authority;
    if (a != NULL && ps->host != NULL &&
        (a->value_len != ps->host->value_len || memcmp(a->value, ps->host->value, a->value_len)))
        return "host differs from :authority";
    if (a == NULL && ps->host == NULL)
        return "no :authority and no host";
    if (a != NULL && (a->value_len == 0 || memchr(a->value, '@', a->value_len) != NULL ||
                      memchr(a->value, ' ', a->value_len) != NULL))
        return "invalid :authority";
    return NULL;
}

int h2req_render(const struct h2req_field *f, size_t n, bool end_stream, char *out, size_t cap,
                 bool *chunked, const char **why)
{
    struct pseudo ps;
    *chunked = false;
    if ((*why = h2req_scan(f, n, &ps)) != NULL)
        return H2REQ_MALFORMED;
    int code;
    if ((*why = h2req_check_pseudo(&ps, &code)) != NULL)
        return code;
    struct out o = {out, 0, cap, false};
    put(&o, ps.method->value, ps.method->value_len);
    puts_(&o, " ");
    put(&o, ps.path->value, ps.path->value_len);
    puts_(&o, " HTTP/1.1\r\nhost: ");
    const struct h2req_field *host = ps.authority ? ps.authority : ps.host;
    put(&o, host->value, host->value_len);
    puts_(&o, "\r\n");
    for (size_t i = 0; i < n; i++) {
        const struct h2req_field *h = &f[i];
        if (h->name[0] == ':' || name_is(h, "host") || name_is(h, "cookie"))
            continue;
        put(&o, h->name, h->name_len);
        puts_(&o, ": ");
        put(&o, h->value, h->value_len);
        puts_(&o, "\r\n");
    }
    if (ps.has_cookie) {
        /* RFC 9113 §8.2.3: crumbs joined with "; " for an HTTP/1.1 hop */
        bool first = true;
        puts_(&o, "cookie: ");
        for (size_t i = 0; i < n; i++) {
            if (!name_is(&f[i], "cookie"))
                continue;
            if (!first)
                puts_(&o, "; ");
            put(&o, f[i].value, f[i].value_len);
            first = false;
        }
        puts_(&o, "\r\n");
    }
    if (!end_stream && !ps.has_length) {
        puts_(&o, "transfer-encoding: chunked\r\n");
        *chunked = true;
    }
    puts_(&o, "\r\n");
    if (o.full) {
        *why = "request head too large";
        return H2REQ_NOSPACE;
    }
    return (int)o.len;
}
