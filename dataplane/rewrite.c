/* dataplane/rewrite.c */
#include "rewrite.h"

#include <limits.h>
#include <string.h>

/* The output: bytes past <cap> are never written; <full> says one did not fit. */
struct out {
    char *p;
    size_t len;
    size_t cap;
    bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_slice(struct out *o, struct http1_slice s)
{
    put(o, s.p, s.len);
}

static void put_field(struct out *o, const struct http1_header *h)
{
    put_slice(o, h->name);
    PUT_LIT(o, ": ");
    put_slice(o, h->value);
    PUT_LIT(o, "\r\n");
}

/* "Name: value\r\n" with every control byte of <value> replaced, so that
 * nothing a certificate says can end a header line. */
static void put_clean_field(struct out *o, const char *name, size_t name_len, const char *value)
{
    put(o, name, name_len);
    PUT_LIT(o, ": ");
    size_t n = strlen(value);
    if (n > o->cap - o->len) {
        o->full = true;
        return;
    }
    char *d = o->p + o->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)value[i];
        d[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    o->len += n;
    PUT_LIT(o, "\r\n");
}

#define PUT_CLEAN_FIELD(o, lit, value) put_clean_field((o), (lit), sizeof(lit) - 1, (value))

static void put_u64(struct out *o, uint64_t v)
{
    char d[20];
    size_t i = sizeof(d);
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, d + i, sizeof(d) - i);
}

static void hex(char *d, uint64_t v, unsigned digits)
{
    static const char xd[] = "0123456789abcdef";
    while (digits-- > 0) {
        d[digits] = xd[v & 0xf];
        v >>= 4;
    }
}

/* X-Client-Cert-* in any case, and with '_' for '-': CGI-style backends read
 * X_Client_Cert_Verified as the same header. */
static bool is_identity_name(struct http1_slice name)
{
    static const char prefix[] = "x-client-cert-";
    for (size_t i = 1; i < sizeof(prefix) - 1; i++) {
        unsigned char ch = (unsigned char)name.p[i];
        if (ch == '_')
            ch = '-';
        else if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        if (ch != (unsigned char)prefix[i])
            return false;
    }
    return true;
}

/* The host the request is for: an absolute-form target's authority (RFC 9112
 * §3.2.2: it replaces Host), else the Host value; empty when neither. */
static struct http1_slice target_host(const struct http1_msg *m)
{
    if (m->authority.p != NULL)
        return m->authority;
    if (m->host >= 0)
        return m->headers[m->host].value;
    return (struct http1_slice){NULL, 0};
}

/* The request-target to send: an absolute-form one in origin-form (RFC 9112
 * §3.2.1: what a client sends to an origin server), its path and query with
 * "/" for an empty path ("*" for an OPTIONS without path or query); every
 * other form as received. */
static void put_target(struct out *o, const struct http1_msg *m)
{
    if (m->authority.p == NULL) {
        put_slice(o, m->target);
        return;
    }
    const char *rest = m->authority.p + m->authority.len;
    size_t n = (size_t)(m->target.p + m->target.len - rest);
    if (n == 0 && m->meth == HTTP1_M_OPTIONS) {
        PUT_LIT(o, "*");
        return;
    }
    if (n == 0 || rest[0] == '?')
        PUT_LIT(o, "/");
    put(o, rest, n);
}

/* Whether field <h> goes upstream as received (X-Forwarded-For is joined).
 * Inline: it runs for every field of every request. */
static inline bool is_passed(const struct http1_msg *m, const struct http1_header *h)
{
    if (h->flags & HTTP1_HF_HOP)
        return false;
    switch (h->id) {
    case HTTP1_H_HOST:
        return m->authority.p == NULL; /* else replaced by the target's authority */
    case HTTP1_H_CONTENT_LENGTH:
    case HTTP1_H_X_FORWARDED_PROTO:
    case HTTP1_H_X_FORWARDED_HOST:
        return false; /* re-emitted by lb */
    case HTTP1_H_OTHER:
        /* identity headers are ours alone */
        return h->name.len < 14 || (h->name.p[0] | 0x20) != 'x' || !is_identity_name(h->name);
    default:
        return true;
    }
}

/* The client's X-Forwarded-For lines from the first one, <first>, as one line
 * with the client's address appended (RFC 9110 §5.3: lines join with ", "). */
static void put_forwarded_for(struct out *o, const struct http1_msg *m, uint32_t first,
                              const char *client_ip)
{
    put_slice(o, m->headers[first].name);
    PUT_LIT(o, ": ");
    put_slice(o, m->headers[first].value);
    for (uint32_t i = first + 1; i < m->n_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->id == HTTP1_H_X_FORWARDED_FOR && is_passed(m, h)) {
            PUT_LIT(o, ", ");
            put_slice(o, h->value);
        }
    }
    PUT_LIT(o, ", ");
    put(o, client_ip, strlen(client_ip));
    PUT_LIT(o, "\r\n");
}

/* xorshift64*: unique enough for tracing, never a security token. */
static void put_new_request_id(struct out *o, const struct rewrite_request *rq)
{
    uint64_t x = *rq->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rq->rng = x;
    char id[REWRITE_ID_LEN];
    hex(id, x * 0x2545F4914F6CDD1Dull, 16);
    hex(id + 16, (uint32_t)rq->now_ms, 8);
    put(o, id, sizeof(id));
}

size_t rewrite_head_max(const struct rewrite_request *rq)
{
    const struct http1_msg *m = rq->msg;
    /* request line, then every field as received (a joined X-Forwarded-For
     * line takes ", " for the ": \r\n" of its own line) */
    /* an origin-form target is no longer than the absolute-form one it
     * comes from ("/" for at least "http://" dropped) */
    size_t n = (size_t)m->method.len + m->target.len + sizeof(" HTTP/1.1\r\n");
    if (m->authority.p != NULL)
        n += sizeof("Host: \r\n") + m->authority.len;
    for (uint32_t i = 0; i < m->n_headers; i++)
        n += (size_t)m->headers[i].name.len + m->headers[i].value.len + 4;
    n += sizeof("X-Forwarded-For: \r\n") + strlen(rq->client_ip);
    n += sizeof("Content-Length: 18446744073709551615\r\n");
    n += sizeof("X-Forwarded-Proto: https\r\n");
    const struct rewrite_identity *id = rq->identity;
    if (id != NULL)
        n += sizeof("X-Client-Cert-Verified: yes\r\n") + sizeof("X-Client-Cert-Subject: \r\n") +
             strlen(id->subject) + sizeof("X-Client-Cert-Uri: \r\n") + strlen(id->san_uri) +
             sizeof("X-Client-Cert-Sha256: \r\n") + strlen(id->fingerprint);
    n += sizeof("X-Forwarded-Host: \r\n") + target_host(m).len;
    n += sizeof("X-Request-Id: \r\n") + REWRITE_ID_LEN;
    n += sizeof("Connection: keep-alive\r\n") + sizeof("\r\n");
    return n;
}

int rewrite_head(const struct rewrite_request *rq, char *out, size_t cap,
                 struct http1_slice *req_id)
{
    const struct http1_msg *m = rq->msg;
    struct out o = {out, 0, cap < INT_MAX ? cap : INT_MAX, false};
    struct http1_slice id = {NULL, 0};
    bool have_xff = false;

    put_slice(&o, m->method);
    PUT_LIT(&o, " ");
    put_target(&o, m);
    if (m->minor == 0)
        PUT_LIT(&o, " HTTP/1.0\r\n");
    else
        PUT_LIT(&o, " HTTP/1.1\r\n");
    if (m->authority.p != NULL) {
        PUT_LIT(&o, "Host: ");
        put_slice(&o, m->authority);
        PUT_LIT(&o, "\r\n");
    }
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (!is_passed(m, h)) {
            if (rq->upgrade && h->id == HTTP1_H_UPGRADE)
                put_field(&o, h);
            continue;
        }
        if (h->id == HTTP1_H_X_FORWARDED_FOR) {
            if (!have_xff)
                put_forwarded_for(&o, m, i, rq->client_ip);
            have_xff = true;
            continue;
        }
        if (h->id == HTTP1_H_X_REQUEST_ID)
            id = h->value;
        put_field(&o, h);
    }
    if (!have_xff) {
        PUT_LIT(&o, "X-Forwarded-For: ");
        put(&o, rq->client_ip, strlen(rq->client_ip));
        PUT_LIT(&o, "\r\n");
    }
    if (m->framing == HTTP1_BODY_LENGTH) {
        PUT_LIT(&o, "Content-Length: ");
        put_u64(&o, m->content_length);
        PUT_LIT(&o, "\r\n");
    }
    if (rq->tls)
        PUT_LIT(&o, "X-Forwarded-Proto: https\r\n");
    else
        PUT_LIT(&o, "X-Forwarded-Proto: http\r\n");
    const struct rewrite_identity *ident = rq->identity;
    if (ident != NULL) {
        PUT_CLEAN_FIELD(&o, "X-Client-Cert-Verified", ident->verified ? "yes" : "no");
        PUT_CLEAN_FIELD(&o, "X-Client-Cert-Subject", ident->subject);
        if (ident->san_uri[0] != '\0')
            PUT_CLEAN_FIELD(&o, "X-Client-Cert-Uri", ident->san_uri);
        PUT_CLEAN_FIELD(&o, "X-Client-Cert-Sha256", ident->fingerprint);
    }
    struct http1_slice host = target_host(m);
    if (host.len > 0) {
        PUT_LIT(&o, "X-Forwarded-Host: ");
        put_slice(&o, host);
        PUT_LIT(&o, "\r\n");
    }
    if (id.len == 0) {
        PUT_LIT(&o, "X-Request-Id: ");
        size_t at = o.len;
        put_new_request_id(&o, rq);
        id = (struct http1_slice){out + at, REWRITE_ID_LEN};
        PUT_LIT(&o, "\r\n");
    }
    if (rq->upgrade)
        PUT_LIT(&o, "Connection: upgrade\r\n");
    else if (m->minor == 0)
        PUT_LIT(&o, "Connection: keep-alive\r\n");
    PUT_LIT(&o, "\r\n");
    if (o.full)
        return REWRITE_NOSPACE;
    *req_id = id;
    return (int)o.len;
}
