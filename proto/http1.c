/* proto/http1.c: strict, zero-copy HTTP/1.1 parser (RFC 9112). */
#include "http1.h"

#include <limits.h>
#include <string.h>

/* Byte classes, one bit each. */
#define C_TCHAR  0x01u /* token character (RFC 9110 §5.6.2) */
#define C_VALUE  0x02u /* field value: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 0x04u /* request-target byte: VCHAR (0x21..0x7E) but '#' */
#define C_HOST   0x08u /* reg-name: unreserved, sub-delims, '%' */
#define C_HEX    0x10u /* HEXDIG */

static const uint8_t cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  2,  15, 6,  3,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 6,  14, 6,  14, 6,  6,  6,  31, 31, 31, 31, 31, 31, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  6,  6,  7,  15,
    7,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 6,  7,  6,  15, 0,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};

#define CHUNK_LINE_MAX 4096u  /* size line with extensions */
#define TRAILER_MAX    32768u /* whole trailer section */
#define CL_MAX         (UINT64_C(1) << 53)

/* Per-parse scratch state; lives on the stack of one parse call. */
struct ctx {
    struct http1_msg *msg;
    bool resp;          /* parsing a response: every refusal is a 502 */
    bool have_cl;       /* a Content-Length header was seen */
    bool have_te;       /* a Transfer-Encoding header was seen */
    bool te_last_chunk; /* the last transfer coding so far is "chunked" */
    bool te_chunked;    /* "chunked" appeared in the codings */
    bool te_other;      /* a coding other than "chunked" appeared */
    bool ka_token;      /* a Connection header lists keep-alive */
    bool have_conn;     /* a Connection header lists at least one token */
    bool expect_bad;    /* an Expect value other than 100-continue (HTTP/1.1) */
    uint64_t cl;        /* the Content-Length value once have_cl */
    uint32_t cl_elems;  /* Content-Length values seen, over all its fields */
};

static bool is_cls(unsigned char c, unsigned bit)
{
    return (cls[c] & bit) != 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static unsigned char to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive equality of <n> bytes at <a> with the lowercase <lit>. */
static bool mem_ieq(const char *a, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (to_lower((unsigned char)a[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

/* Case-insensitive equality of two runs of <n> bytes. */
static bool mem_ieq2(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i]))
            return false;
    return true;
}

static bool slice_is(const char *p, size_t n, const char *lit, size_t lit_len)
{
    return n == lit_len && mem_ieq(p, lit, n);
}

#define SLICE_IS(p, n, lit) slice_is((p), (n), (lit), sizeof(lit) - 1)

static struct http1_slice mk_slice(const char *p, size_t n)
{
    struct http1_slice s = {p, (uint32_t)n};
    return s;
}

static int refuse(struct ctx *x, uint16_t status, const char *reason)
{
    x->msg->error = x->resp ? 502 : status;
    x->msg->error_reason = reason;
    return HTTP1_INVALID;
}

/* Refuses a malformed line, naming a bare CR or NUL in it when there is one:
 * those are the usual reasons a line does not parse, and worth logging. */
static int refuse_line(struct ctx *x, uint16_t status, const char *reason, const char *p, size_t n)
{
    if (memchr(p, '\r', n))
        return refuse(x, 400, "bare CR in head");
    if (memchr(p, '\0', n))
        return refuse(x, 400, "NUL byte in head");
    return refuse(x, status, reason);
}

bool http1_slice_eq(struct http1_slice s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (to_lower((unsigned char)s.p[i]) != to_lower((unsigned char)lit[i]))
            return false;
    return true;
}

void http1_parser_init(struct http1_parser *p)
{
    memset(p, 0, sizeof(*p));
}

void http1_chunked_init(struct http1_chunked *c)
{
    memset(c, 0, sizeof(*c));
}

static void msg_reset(struct http1_msg *m)
{
    struct http1_slice none = {NULL, 0};
    m->method = none;
    m->target = none;
    m->authority = none;
    m->meth = HTTP1_M_OTHER;
    m->status = 0;
    m->reason = none;
    m->minor = 0;
    m->n_headers = 0;
    m->host = -1;
    m->framing = HTTP1_BODY_NONE;
    m->content_length = 0;
    m->flags = 0;
    m->error = 0;
    m->error_reason = NULL;
}

static int parse_start_line(struct ctx *x, const char *buf, size_t s, size_t e);

/* Finds the end of the head, scanning only bytes not scanned by an earlier
 * call, and parses the first line as soon as it ends: a request line that
 * can never start a valid head ("GET /" of HTTP/0.9) is refused then, not
 * once a head end that may never come arrives. Only the first
 * max_header_bytes bytes are ever looked at, so the outcome depends on the
 * bytes alone, never on how they were split across calls. Returns the head
 * length, HTTP1_INCOMPLETE or HTTP1_INVALID. */
static int scan_head(struct http1_parser *p, const char *buf, size_t len,
                     const struct http1_limits *lim, struct ctx *x)
{
    size_t win = len < lim->max_header_bytes ? len : lim->max_header_bytes;
    if (win > INT_MAX)
        win = INT_MAX;
    size_t i = p->scanned;
    while (i < win) {
        const char *lf = memchr(buf + i, '\n', win - i);
        if (!lf) {
            i = win;
            break;
        }
        size_t at = (size_t)(lf - buf);
        i = at + 1;
        if (p->line_end == 0) {
            size_t n = at - p->start;
            if (n > 0 && buf[at - 1] == '\r')
                n--;
            if (n == 0) { /* an empty line before the first line (RFC 9112 §2.2) */
                p->start = (uint32_t)i;
                continue;
            }
            if (n > lim->max_request_line)
                return refuse(x, 414, "request line too long");
            p->line_end = (uint32_t)i;
            int rc = parse_start_line(x, buf, p->start, p->start + n);
            if (rc != 0)
                return rc;
            continue;
        }
        /* at >= line_end >= 1, and a CR at at-1 lies past the first LF */
        if (buf[at - 1] == '\n' || (buf[at - 1] == '\r' && buf[at - 2] == '\n'))
            return (int)i;
    }
    p->scanned = (uint32_t)i;
    if (p->line_end == 0) {
        size_t n = win - p->start;
        if (n > 0 && buf[win - 1] == '\r')
            n--; /* may be the CR of a CRLF still to come */
        if (n > lim->max_request_line)
            return refuse(x, 414, "request line too long");
    }
    if (len > lim->max_header_bytes)
        return refuse(x, 431, "request header section too large");
    return HTTP1_INCOMPLETE;
}

/* Bounds of a line: <s> its start, returns the end of its content (CR of a
 * CRLF excluded) and sets *next to the byte after its LF. */
static size_t line_bounds(const char *buf, size_t s, size_t hend, size_t *next)
{
    const char *lf = memchr(buf + s, '\n', hend - s);
    size_t e = (size_t)(lf - buf);
    *next = e + 1;
    if (e > s && buf[e - 1] == '\r')
        e--;
    return e;
}

static const struct {
    const char *name; /* lowercase */
    uint8_t len;
    uint8_t id;
} known_hdrs[] = {
    {"host", 4, HTTP1_H_HOST},
    {"content-length", 14, HTTP1_H_CONTENT_LENGTH},
    {"transfer-encoding", 17, HTTP1_H_TRANSFER_ENCODING},
    {"connection", 10, HTTP1_H_CONNECTION},
    {"keep-alive", 10, HTTP1_H_KEEP_ALIVE},
    {"proxy-connection", 16, HTTP1_H_PROXY_CONNECTION},
    {"te", 2, HTTP1_H_TE},
    {"upgrade", 7, HTTP1_H_UPGRADE},
    {"trailer", 7, HTTP1_H_TRAILER},
    {"expect", 6, HTTP1_H_EXPECT},
    {"x-forwarded-for", 15, HTTP1_H_X_FORWARDED_FOR},
    {"x-forwarded-proto", 17, HTTP1_H_X_FORWARDED_PROTO},
    {"x-forwarded-host", 16, HTTP1_H_X_FORWARDED_HOST},
    {"x-request-id", 12, HTTP1_H_X_REQUEST_ID},
};

static uint8_t header_id(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof(known_hdrs) / sizeof(known_hdrs[0]); i++)
        if (known_hdrs[i].len == n && mem_ieq(p, known_hdrs[i].name, n))
            return known_hdrs[i].id;
    return HTTP1_H_OTHER;
}

/* Case-insensitive equality of <n> bytes at <a> with the lowercase <lit>,
 * '_' in <a> standing for '-': CGI maps both to the same variable. */
static bool mem_ieq_cgi(const char *a, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = to_lower((unsigned char)a[i]);
        if ((ch == '_' ? '-' : ch) != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* A name that is no framing field but reads as one to a CGI-style backend:
 * Content_Length, transfer_encoding, Transfer-encoding with a '_' (for an
 * OTHER name, at least one '_' stands for a '-'). */
static bool is_framing_alias(const char *p, size_t n)
{
    return (n == 14 && mem_ieq_cgi(p, "content-length", 14)) ||
           (n == 17 && mem_ieq_cgi(p, "transfer-encoding", 17));
}

/* Iterates the elements of a comma-separated list, OWS-trimmed. */
struct list_it {
    const char *p;
    size_t n;
    size_t i;
    bool end;
};

static bool list_next(struct list_it *it, const char **ep, size_t *en)
{
    if (it->end)
        return false;
    size_t a = it->i;
    const char *comma = memchr(it->p + a, ',', it->n - a);
    size_t b = comma ? (size_t)(comma - it->p) : it->n;
    if (comma)
        it->i = b + 1;
    else
        it->end = true;
    while (a < b && is_ows(it->p[a]))
        a++;
    while (b > a && is_ows(it->p[b - 1]))
        b--;
    *ep = it->p + a;
    *en = b - a;
    return true;
}

static bool is_token(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_cls((unsigned char)p[i], C_TCHAR))
            return false;
    return true;
}

static int on_content_length(struct ctx *x, struct http1_slice v)
{
    struct list_it it = {v.p, v.len, 0, false};
    const char *e;
    size_t n;
    while (list_next(&it, &e, &n)) {
        if (n == 0)
            return refuse(x, 400, "empty Content-Length");
        uint64_t val = 0;
        for (size_t i = 0; i < n; i++) {
            if (!is_digit(e[i]))
                return refuse(x, 400, "invalid Content-Length");
            val = val * 10 + (uint64_t)(e[i] - '0');
            if (val > CL_MAX) /* val <= 2^53 before, so val * 10 did not wrap */
                return refuse(x, 400, "Content-Length too large");
        }
        if (x->have_cl && val != x->cl)
            return refuse(x, 400, "conflicting Content-Length values");
        x->have_cl = true;
        x->cl = val;
        x->cl_elems++;
    }
    return 0;
}

static int on_transfer_encoding(struct ctx *x, struct http1_slice v)
{
    struct list_it it = {v.p, v.len, 0, false};
    const char *e;
    size_t n;
    x->have_te = true;
    while (list_next(&it, &e, &n)) {
        if (n == 0)
            return refuse(x, 400, "empty transfer coding");
        if (!is_token(e, n))
            return refuse(x, 400, "invalid transfer coding");
        x->te_last_chunk = SLICE_IS(e, n, "chunked");
        x->te_other = x->te_other || !x->te_last_chunk;
        if (x->te_last_chunk) {
            if (x->te_chunked)
                return refuse(x, 400, "chunked applied more than once");
            x->te_chunked = true;
        }
    }
    return 0;
}

static int on_connection(struct ctx *x, struct http1_slice v)
{
    struct list_it it = {v.p, v.len, 0, false};
    const char *e;
    size_t n;
    while (list_next(&it, &e, &n)) {
        if (n == 0)
            continue;
        if (!is_token(e, n))
            return refuse(x, 400, "invalid Connection option");
        x->have_conn = true;
        if (SLICE_IS(e, n, "close"))
            x->msg->flags |= HTTP1_MF_CONN_CLOSE;
        else if (SLICE_IS(e, n, "keep-alive"))
            x->ka_token = true;
        else if (SLICE_IS(e, n, "upgrade"))
            x->msg->flags |= HTTP1_MF_CONN_UPGRADE;
    }
    return 0;
}

/* Host = uri-host [ ":" port ]: reg-name, IPv4 or an IP literal in brackets. */
static bool host_is_valid(const char *p, size_t n)
{
    size_t i = 0;
    if (n == 0)
        return true;
    if (p[0] == '[') {
        i = 1;
        while (i < n && (is_cls((unsigned char)p[i], C_HEX) || p[i] == ':' || p[i] == '.'))
            i++;
        if (i == 1 || i == n || p[i] != ']')
            return false;
        i++;
    } else {
        while (i < n && is_cls((unsigned char)p[i], C_HOST)) {
            if (p[i] == '%' && (i + 2 >= n || !is_cls((unsigned char)p[i + 1], C_HEX) ||
                                !is_cls((unsigned char)p[i + 2], C_HEX)))
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (p[i] != ':' || ++i == n)
        return false;
    for (size_t d = 0; i < n; i++, d++)
        if (!is_digit(p[i]) || d == 5)
            return false;
    return true;
}

/* Parses the field line [s, e) into a new header and applies its meaning. */
static int parse_field(struct ctx *x, const char *buf, size_t s, size_t e,
                       const struct http1_limits *lim)
{
    struct http1_msg *m = x->msg;
    if (is_ows(buf[s]))
        return refuse(x, 400, "obs-fold (line starting with whitespace)");
    size_t i = s;
    while (i < e && is_cls((unsigned char)buf[i], C_TCHAR))
        i++;
    if (i == e)
        return refuse_line(x, 400, "header line without colon", buf + s, e - s);
    if (buf[i] != ':') {
        if (is_ows(buf[i]))
            return refuse(x, 400, "whitespace between header name and colon");
        return refuse_line(x, 400, "invalid byte in header name", buf + s, e - s);
    }
    if (i == s)
        return refuse(x, 400, "empty header name");
    size_t vs = i + 1, ve = e;
    while (vs < ve && is_ows(buf[vs]))
        vs++;
    while (ve > vs && is_ows(buf[ve - 1]))
        ve--;
    for (size_t j = vs; j < ve; j++)
        if (!is_cls((unsigned char)buf[j], C_VALUE))
            return refuse_line(x, 400, "invalid byte in header value", buf + vs, ve - vs);

    uint32_t cap = m->headers ? m->cap_headers : 0;
    if (m->n_headers >= cap || m->n_headers >= lim->max_headers)
        return refuse(x, 431, "too many header fields");
    struct http1_header *h = &m->headers[m->n_headers];
    h->name = mk_slice(buf + s, i - s);
    h->value = mk_slice(buf + vs, ve - vs);
    h->id = header_id(h->name.p, h->name.len);
    h->flags = 0;
    m->n_headers++;
    if (h->id == HTTP1_H_OTHER && !x->resp && is_framing_alias(h->name.p, h->name.len))
        return refuse(x, 400, "framing header name with '_' for '-'");

    switch (h->id) {
    case HTTP1_H_HOST:
        if (x->resp)
            break;
        if (m->host >= 0)
            return refuse(x, 400, "more than one Host header");
        if (!host_is_valid(h->value.p, h->value.len))
            return refuse(x, 400, "invalid Host");
        m->host = (int32_t)(m->n_headers - 1);
        break;
    case HTTP1_H_CONTENT_LENGTH:
        return on_content_length(x, h->value);
    case HTTP1_H_TRANSFER_ENCODING:
        return on_transfer_encoding(x, h->value);
    case HTTP1_H_CONNECTION:
        h->flags |= HTTP1_HF_HOP;
        return on_connection(x, h->value);
    case HTTP1_H_UPGRADE:
        m->flags |= HTTP1_MF_UPGRADE;
        h->flags |= HTTP1_HF_HOP;
        break;
    case HTTP1_H_KEEP_ALIVE:
    case HTTP1_H_PROXY_CONNECTION:
    case HTTP1_H_TE:
    case HTTP1_H_TRAILER:
        h->flags |= HTTP1_HF_HOP;
        break;
    case HTTP1_H_EXPECT:
        if (x->resp)
            break;
        h->flags |= HTTP1_HF_HOP;
        if (m->minor == 1) {
            if (SLICE_IS(h->value.p, h->value.len, "100-continue"))
                m->flags |= HTTP1_MF_EXPECT_CONTINUE;
            else
                x->expect_bad = true;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Parses the field lines from <s> up to the final empty line ending at <hend>. */
static int parse_fields(struct ctx *x, const char *buf, size_t s, size_t hend,
                        const struct http1_limits *lim)
{
    for (;;) {
        size_t next;
        size_t e = line_bounds(buf, s, hend, &next);
        if (e == s)
            break;
        int rc = parse_field(x, buf, s, e, lim);
        if (rc != 0)
            return rc;
        s = next;
    }
    return 0;
}

/* Marks every header named by a Connection option as hop-by-hop (RFC 9110
 * §7.6.1), except those that frame or route the message. */
static void mark_connection_options(struct ctx *x)
{
    struct http1_msg *m = x->msg;
    if (!x->have_conn)
        return;
    for (uint32_t c = 0; c < m->n_headers; c++) {
        if (m->headers[c].id != HTTP1_H_CONNECTION)
            continue;
        struct list_it it = {m->headers[c].value.p, m->headers[c].value.len, 0, false};
        const char *e;
        size_t n;
        while (list_next(&it, &e, &n)) {
            for (uint32_t k = 0; n > 0 && k < m->n_headers; k++) {
                struct http1_header *h = &m->headers[k];
                if (h->id == HTTP1_H_HOST || h->id == HTTP1_H_CONTENT_LENGTH ||
                    h->id == HTTP1_H_TRANSFER_ENCODING || h->name.len != n)
                    continue;
                if (mem_ieq2(h->name.p, e, n))
                    h->flags |= HTTP1_HF_HOP;
            }
        }
    }
}

static const struct {
    const char *name;
    uint8_t len;
    uint8_t id;
} known_methods[] = {
    {"GET", 3, HTTP1_M_GET},     {"HEAD", 4, HTTP1_M_HEAD},     {"POST", 4, HTTP1_M_POST},
    {"PUT", 3, HTTP1_M_PUT},     {"DELETE", 6, HTTP1_M_DELETE}, {"OPTIONS", 7, HTTP1_M_OPTIONS},
    {"PATCH", 5, HTTP1_M_PATCH}, {"TRACE", 5, HTTP1_M_TRACE},   {"CONNECT", 7, HTTP1_M_CONNECT},
};

static uint8_t method_id(const char *p, size_t n)
{
    /* methods are case-sensitive (RFC 9110 §9.1) */
    for (size_t i = 0; i < sizeof(known_methods) / sizeof(known_methods[0]); i++)
        if (known_methods[i].len == n && memcmp(p, known_methods[i].name, n) == 0)
            return known_methods[i].id;
    return HTTP1_M_OTHER;
}

/* "HTTP/" DIGIT "." DIGIT at <v>: 1 if well formed, 0 if not. */
static bool version_is_wellformed(const char *v)
{
    return memcmp(v, "HTTP/", 5) == 0 && is_digit(v[5]) && v[6] == '.' && is_digit(v[7]);
}

static int parse_request_line(struct ctx *x, const char *buf, size_t s, size_t e)
{
    struct http1_msg *m = x->msg;
    size_t i = s;
    while (i < e && is_cls((unsigned char)buf[i], C_TCHAR))
        i++;
    if (i == s)
        return refuse_line(x, 400, "invalid method", buf + s, e - s);
    if (i == e || buf[i] != ' ')
        return refuse_line(x, 400, "malformed request line", buf + s, e - s);
    m->method = mk_slice(buf + s, i - s);
    size_t t = ++i;
    while (i < e && is_cls((unsigned char)buf[i], C_TARGET))
        i++;
    if (i < e && buf[i] == '#')
        return refuse(x, 400, "fragment in request-target");
    if (i == e)
        return refuse_line(x, 400, "missing HTTP version (HTTP/0.9 request line)", buf + s, e - s);
    if (buf[i] != ' ')
        return refuse_line(x, 400, "invalid byte in request-target", buf + s, e - s);
    if (i == t)
        return refuse(x, 400, "empty request-target");
    m->target = mk_slice(buf + t, i - t);
    i++;
    if (e - i != 8 || !version_is_wellformed(buf + i))
        return refuse_line(x, 400, "malformed HTTP version", buf + s, e - s);
    if (buf[i + 5] != '1')
        return refuse(x, 505, "HTTP version not supported");
    m->minor = buf[i + 7] == '0' ? 0 : 1;
    m->meth = method_id(m->method.p, m->method.len);
    if (m->meth == HTTP1_M_CONNECT)
        return refuse(x, 501, "CONNECT is not supported");

    const char *tp = m->target.p;
    size_t tn = m->target.len;
    if (tp[0] == '/')
        return 0;
    if (tn == 1 && tp[0] == '*')
        return m->meth == HTTP1_M_OPTIONS ? 0 : refuse(x, 400, "asterisk-form without OPTIONS");
    size_t a = 0;
    if (tn > 7 && mem_ieq(tp, "http://", 7))
        a = 7;
    else if (tn > 8 && mem_ieq(tp, "https://", 8))
        a = 8;
    else
        return refuse(x, 400, "invalid request-target form");
    /* RFC 9112 §3.2.2: the authority stands for Host; RFC 9110 §4.2.4: no
     * userinfo in an http(s) URI, §4.2.1: no empty host */
    size_t b = a;
    while (b < tn && tp[b] != '/' && tp[b] != '?')
        b++;
    if (memchr(tp + a, '@', b - a))
        return refuse(x, 400, "userinfo in request-target");
    if (b == a || !host_is_valid(tp + a, b - a))
        return refuse(x, 400, "invalid authority in request-target");
    m->authority = mk_slice(tp + a, b - a);
    return 0;
}

static int parse_status_line(struct ctx *x, const char *buf, size_t s, size_t e)
{
    struct http1_msg *m = x->msg;
    const char *l = buf + s;
    size_t n = e - s;
    if (n < 12 || !version_is_wellformed(l) || l[8] != ' ' || !is_digit(l[9]) || !is_digit(l[10]) ||
        !is_digit(l[11]) || (n > 12 && l[12] != ' '))
        return refuse(x, 502, "malformed status line");
    if (l[5] != '1')
        return refuse(x, 502, "response HTTP version not supported");
    m->minor = l[7] == '0' ? 0 : 1;
    m->status = (uint16_t)((l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0'));
    if (m->status < 100 || m->status > 599)
        return refuse(x, 502, "status code out of range");
    size_t r = n > 12 ? 13 : 12;
    for (size_t i = r; i < n; i++)
        if (!is_cls((unsigned char)l[i], C_VALUE))
            return refuse(x, 502, "invalid byte in reason phrase");
    m->reason = mk_slice(l + r, n - r);
    return 0;
}

static int parse_start_line(struct ctx *x, const char *buf, size_t s, size_t e)
{
    return x->resp ? parse_status_line(x, buf, s, e) : parse_request_line(x, buf, s, e);
}

static void set_keep_alive(struct ctx *x)
{
    struct http1_msg *m = x->msg;
    bool close = (m->flags & HTTP1_MF_CONN_CLOSE) != 0;
    if (m->minor == 1 ? !close : (x->ka_token && !close))
        m->flags |= HTTP1_MF_KEEP_ALIVE;
}

/* Finds the end of the head and parses its start line (a status line when
 * x->resp) and fields into x->msg. Returns the head length,
 * HTTP1_INCOMPLETE or HTTP1_INVALID. Once per message, off the byte loops:
 * scan_head() parses the start line when it ends, and it is parsed again here
 * only when that was in an earlier call (whose msg this one may not be). */
static int parse_head(struct http1_parser *p, const char *buf, size_t len,
                      const struct http1_limits *lim, struct ctx *x)
{
    msg_reset(x->msg);
    bool line_seen = p->line_end != 0; /* parsed by an earlier call, into its msg */
    int hend = scan_head(p, buf, len, lim, x);
    if (hend < 0)
        return hend;
    size_t next;
    size_t e = line_bounds(buf, p->start, (size_t)hend, &next);
    int rc = line_seen ? parse_start_line(x, buf, p->start, e) : 0;
    if (rc == 0)
        rc = parse_fields(x, buf, next, (size_t)hend, lim);
    return rc != 0 ? rc : hend;
}

int http1_parse_request(struct http1_parser *p, const char *buf, size_t len,
                        const struct http1_limits *lim, struct http1_msg *msg)
{
    struct ctx x = {.msg = msg};
    int hend = parse_head(p, buf, len, lim, &x);
    if (hend < 0)
        return hend;

    if (msg->minor == 1 && msg->host < 0)
        return refuse(&x, 400, "HTTP/1.1 request without Host");
    if (x.have_te) {
        if (x.have_cl)
            return refuse(&x, 400, "Content-Length with Transfer-Encoding");
        if (msg->minor == 0)
            return refuse(&x, 400, "Transfer-Encoding in HTTP/1.0");
        if (!x.te_last_chunk)
            return refuse(&x, 400, "final transfer coding is not chunked");
        /* RFC 9112 §6.1: a coding the server does not understand gets 501;
         * the origin behind us may not understand it either */
        if (x.te_other)
            return refuse(&x, 501, "transfer coding other than chunked");
        msg->framing = HTTP1_BODY_CHUNKED;
    } else if (x.have_cl) {
        msg->framing = HTTP1_BODY_LENGTH;
        msg->content_length = x.cl;
    }
    if (x.expect_bad)
        return refuse(&x, 417, "unsupported Expect");
    set_keep_alive(&x);
    mark_connection_options(&x);
    return hend;
}

int http1_parse_response(struct http1_parser *p, const char *buf, size_t len,
                         const struct http1_limits *lim, uint8_t request_meth,
                         struct http1_msg *msg)
{
    struct ctx x = {.msg = msg, .resp = true};
    int hend = parse_head(p, buf, len, lim, &x);
    if (hend < 0)
        return hend;

    unsigned st = msg->status;
    if (request_meth == HTTP1_M_CONNECT && st / 100 == 2)
        return refuse(&x, 502, "2xx response to CONNECT");
    if (x.have_te && msg->minor == 0)
        return refuse(&x, 502, "Transfer-Encoding in HTTP/1.0 response");
    set_keep_alive(&x);
    mark_connection_options(&x);
    /* RFC 9110 §8.6: no Content-Length on 1xx and 204; a non-zero one means
     * the server may send bytes nobody will read, so its connection ends.
     * Repeated equal values are sent on as one. */
    bool cl_204 = x.have_cl && (st < 200 || st == 204);
    if (cl_204 || x.cl_elems > 1) {
        for (uint32_t i = 0; i < msg->n_headers; i++)
            if (msg->headers[i].id == HTTP1_H_CONTENT_LENGTH)
                msg->headers[i].flags |= HTTP1_HF_HOP;
        if (cl_204 && x.cl > 0)
            msg->flags &= ~HTTP1_MF_KEEP_ALIVE;
        if (!cl_204)
            msg->flags |= HTTP1_MF_CL_CANONICAL;
    }
    if (st < 200 || st == 204 || st == 304 || request_meth == HTTP1_M_HEAD) {
        msg->framing = HTTP1_BODY_NONE;
    } else if (x.have_te && x.te_last_chunk) {
        msg->framing = HTTP1_BODY_CHUNKED;
        if (x.have_cl) {
            /* RFC 9112 §6.3: chunked wins; never forward the stale length */
            for (uint32_t i = 0; i < msg->n_headers; i++)
                if (msg->headers[i].id == HTTP1_H_CONTENT_LENGTH)
                    msg->headers[i].flags |= HTTP1_HF_HOP;
            msg->flags &= ~HTTP1_MF_KEEP_ALIVE;
        }
    } else if (x.have_te || !x.have_cl) {
        msg->framing = HTTP1_BODY_CLOSE;
        msg->flags &= ~HTTP1_MF_KEEP_ALIVE;
    } else {
        msg->framing = HTTP1_BODY_LENGTH;
        msg->content_length = x.cl;
    }
    return hend;
}

const char *http1_reason(unsigned status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

/* Fields a trailer section may not carry (RFC 9110 §6.5.1), lowercase;
 * every one shorter than HTTP1_TRAILER_NAME_DECIDES. */
static const struct {
    const char *name;
    uint8_t len;
} trailer_refused[] = {
    /* framing and routing */
    {"content-length", 14},
    {"transfer-encoding", 17},
    {"trailer", 7},
    {"host", 4},
    /* connection options */
    {"connection", 10},
    {"keep-alive", 10},
    {"proxy-connection", 16},
    {"te", 2},
    {"upgrade", 7},
    /* request modifiers */
    {"expect", 6},
    {"max-forwards", 12},
    {"range", 5},
    {"if-match", 8},
    {"if-none-match", 13},
    {"if-modified-since", 17},
    {"if-unmodified-since", 19},
    {"if-range", 8},
    /* authentication and state */
    {"authorization", 13},
    {"proxy-authorization", 19},
    {"www-authenticate", 16},
    {"proxy-authenticate", 18},
    {"cookie", 6},
    {"set-cookie", 10},
    /* response controls */
    {"cache-control", 13},
    {"pragma", 6},
    {"age", 3},
    {"expires", 7},
    {"vary", 4},
    {"location", 8},
    {"retry-after", 11},
    /* content format */
    {"content-encoding", 16},
    {"content-type", 12},
    {"content-range", 13},
    /* only lb says these (and X-Client-Cert-*, by prefix) */
    {"x-forwarded-for", 15},
    {"x-forwarded-proto", 17},
    {"x-forwarded-host", 16},
};

bool http1_trailer_is_allowed(const char *name, size_t len)
{
    if (len >= 14 && mem_ieq_cgi(name, "x-client-cert-", 14))
        return false;
    for (size_t i = 0; i < sizeof(trailer_refused) / sizeof(trailer_refused[0]); i++)
        if (trailer_refused[i].len == len && mem_ieq_cgi(name, trailer_refused[i].name, len))
            return false;
    return true;
}

enum chunk_state {
    CK_SIZE = 0, /* hex digits of a chunk size */
    CK_EXT,      /* chunk extensions, up to CR */
    CK_SIZE_LF,  /* LF ending the size line */
    CK_DATA,     /* chunk payload */
    CK_DATA_CR,  /* CR after the payload */
    CK_DATA_LF,  /* LF after the payload */
    CK_TR_START, /* start of a trailer field line, or the final CR */
    CK_TR_NAME,  /* trailer field name */
    CK_TR_VALUE, /* trailer field value, up to CR */
    CK_TR_LF,    /* LF ending a trailer field line */
    CK_FINAL_LF, /* LF ending the message */
};

static unsigned hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return to_lower(c) - 'a' + 10u;
}

int http1_chunked_feed(struct http1_chunked *c, const char *buf, size_t len, const char **data,
                       size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    if (c->done || len == 0)
        return 0;
    if (len > INT_MAX)
        len = INT_MAX;
    if (c->state == CK_DATA) {
        size_t n = len < c->remaining ? len : (size_t)c->remaining;
        c->remaining -= n;
        if (c->remaining == 0)
            c->state = CK_DATA_CR;
        c->run = HTTP1_RUN_DATA;
        *data = buf;
        *data_len = n;
        return (int)n;
    }
    c->run = c->state == CK_TR_NAME                            ? HTTP1_RUN_NAME
             : c->state == CK_TR_VALUE || c->state == CK_TR_LF ? HTTP1_RUN_FIELD
                                                               : HTTP1_RUN_FRAMING;
    size_t i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)buf[i];
        if (c->state >= CK_TR_START) {
            /* a trailer field line starts a run of its own, its colon another */
            if (i > 0 &&
                ((c->state == CK_TR_START && ch != '\r') || (c->state == CK_TR_NAME && ch == ':')))
                return (int)i;
            if (++c->trailer_bytes > TRAILER_MAX)
                return HTTP1_INVALID;
        }
        i++;
        switch (c->state) {
        case CK_SIZE:
            if (++c->line_len > CHUNK_LINE_MAX)
                return HTTP1_INVALID;
            if (is_cls(ch, C_HEX)) {
                if (c->remaining >> 56) /* a 16th significant digit: over 2^60 */
                    return HTTP1_INVALID;
                c->remaining = c->remaining << 4 | hex_value(ch);
            } else if (c->line_len == 1) {
                return HTTP1_INVALID;
            } else if (ch == ';') {
                c->state = CK_EXT;
            } else if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else {
                return HTTP1_INVALID;
            }
            break;
        case CK_EXT:
            if (++c->line_len > CHUNK_LINE_MAX)
                return HTTP1_INVALID;
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (!is_cls(ch, C_VALUE))
                return HTTP1_INVALID;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                return HTTP1_INVALID;
            c->line_len = 0;
            if (c->remaining == 0) {
                c->state = CK_TR_START;
                break;
            }
            c->state = CK_DATA;
            return (int)i;
        case CK_DATA_CR:
            if (ch != '\r')
                return HTTP1_INVALID;
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                return HTTP1_INVALID;
            c->state = CK_SIZE;
            break;
        case CK_TR_START:
            if (ch == '\r') {
                c->state = CK_FINAL_LF;
            } else if (is_cls(ch, C_TCHAR)) {
                c->state = CK_TR_NAME;
                c->run = HTTP1_RUN_NAME;
            } else {
                return HTTP1_INVALID;
            }
            break;
        case CK_TR_NAME:
            if (ch == ':') {
                c->state = CK_TR_VALUE;
                c->run = HTTP1_RUN_FIELD;
            } else if (!is_cls(ch, C_TCHAR)) {
                return HTTP1_INVALID;
            }
            break;
        case CK_TR_VALUE:
            if (ch == '\r')
                c->state = CK_TR_LF;
            else if (!is_cls(ch, C_VALUE))
                return HTTP1_INVALID;
            break;
        case CK_TR_LF:
            if (ch != '\n')
                return HTTP1_INVALID;
            c->state = CK_TR_START;
            return (int)i;
        case CK_FINAL_LF:
            if (ch != '\n')
                return HTTP1_INVALID;
            c->done = true;
            return (int)i;
        default:
            return HTTP1_INVALID;
        }
    }
    return (int)i;
}
