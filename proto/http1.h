/* proto/http1.h: strict, zero-copy HTTP/1.1 parser (RFC 9112).
 *
 * The parser copies nothing: a parsed message holds (pointer, length) slices of
 * the caller's buffer, valid until the caller moves or overwrites those bytes.
 * It never allocates, never logs and is safe to call from any thread on
 * distinct state. Anything that could be read two ways is refused. */
#ifndef LB_HTTP1_H
#define LB_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_INCOMPLETE (-1) /* more bytes are needed */
#define HTTP1_INVALID    (-2) /* refused; the message's <error> says how to answer */

struct http1_slice {
    const char *p;
    uint32_t len;
};

/* Headers the proxy must recognise; everything else is HTTP1_H_OTHER. */
enum http1_hdr_id {
    HTTP1_H_OTHER = 0,
    HTTP1_H_HOST,
    HTTP1_H_CONTENT_LENGTH,
    HTTP1_H_TRANSFER_ENCODING,
    HTTP1_H_CONNECTION,
    HTTP1_H_KEEP_ALIVE,
    HTTP1_H_PROXY_CONNECTION,
    HTTP1_H_TE,
    HTTP1_H_UPGRADE,
    HTTP1_H_TRAILER,
    HTTP1_H_EXPECT,
    HTTP1_H_X_FORWARDED_FOR,
    HTTP1_H_X_FORWARDED_PROTO,
    HTTP1_H_X_FORWARDED_HOST,
    HTTP1_H_X_REQUEST_ID,
};

/* http1_header.flags */
#define HTTP1_HF_HOP 0x01u /* hop-by-hop: by name, or named by a Connection header */

struct http1_header {
    struct http1_slice name;  /* as received (case preserved) */
    struct http1_slice value; /* leading and trailing OWS removed */
    uint8_t id;               /* enum http1_hdr_id */
    uint8_t flags;            /* HTTP1_HF_* */
};

enum http1_method {
    HTTP1_M_OTHER = 0,
    HTTP1_M_GET,
    HTTP1_M_HEAD,
    HTTP1_M_POST,
    HTTP1_M_PUT,
    HTTP1_M_DELETE,
    HTTP1_M_OPTIONS,
    HTTP1_M_PATCH,
    HTTP1_M_TRACE,
    HTTP1_M_CONNECT,
};

/* How the body of a message is delimited. */
enum http1_framing {
    HTTP1_BODY_NONE = 0, /* no body */
    HTTP1_BODY_LENGTH,   /* exactly content_length bytes (a Content-Length of 0 gives
                          * LENGTH with content_length 0, never NONE) */
    HTTP1_BODY_CHUNKED,  /* chunked coding; use struct http1_chunked */
    HTTP1_BODY_CLOSE,    /* responses only: until the server closes */
};

/* http1_msg.flags */
#define HTTP1_MF_KEEP_ALIVE      0x01u /* connection persists after this message */
#define HTTP1_MF_EXPECT_CONTINUE 0x02u /* request: Expect: 100-continue */
#define HTTP1_MF_CONN_CLOSE      0x04u /* a Connection header says close */
#define HTTP1_MF_UPGRADE         0x08u /* an Upgrade header was present */
/* response: Content-Length was repeated; its fields are marked HOP and the
 * value goes out once (LENGTH framing) */
#define HTTP1_MF_CL_CANONICAL 0x10u
#define HTTP1_MF_CONN_UPGRADE 0x20u /* a Connection header names "upgrade" */

struct http1_limits {
    uint32_t max_request_line; /* bytes, CRLF excluded; over it: 414 (status line: 502) */
    uint32_t max_header_bytes; /* whole head incl. request line, final empty line and any
                                * leading empty lines; over it: 431 (responses: 502) */
    uint32_t max_headers;      /* header fields; over it: 431 */
};

/* One request or response head. The caller provides <headers> with room for
 * <cap_headers> entries (at least limits->max_headers); a head with more
 * fields than either is refused with 431. Every other field is written by
 * each parse call. */
struct http1_msg {
    /* request line (requests only) */
    struct http1_slice method;
    struct http1_slice target;
    /* absolute-form target ("http://a:8080/p?q"): its authority, "a:8080",
     * a valid non-empty Host value without userinfo; the target's path and
     * query follow it up to the target's end ("/p?q", may be empty or start
     * with '?'). {NULL, 0} for every other form. */
    struct http1_slice authority;
    uint8_t meth; /* enum http1_method */
    /* status line (responses only) */
    uint16_t status;
    struct http1_slice reason;

    uint8_t minor; /* HTTP/1.<minor>: 0 or 1 */
    struct http1_header *headers;
    uint32_t n_headers;
    uint32_t cap_headers;
    int32_t host; /* index of the Host header, -1 if none (always -1 in responses) */

    uint8_t framing; /* enum http1_framing */
    uint64_t content_length;
    uint32_t flags; /* HTTP1_MF_* */

    /* When a parse returns HTTP1_INVALID: the status to answer (requests: 400,
     * 414, 417, 431, 501, 505; responses: always 502) and a static,
     * human-readable reason for logs. 0 and NULL otherwise. */
    uint16_t error;
    const char *error_reason;
};

/* Incremental scan state: lets a head that arrives in many reads be scanned
 * once, not once per read. Zero it (http1_parser_init) before each message. */
struct http1_parser {
    uint32_t scanned;  /* bytes already known to hold no end of head */
    uint32_t line_end; /* end of the first line once seen, else 0 */
    uint32_t start;    /* start of the first line, after leading empty lines */
};

void http1_parser_init(struct http1_parser *p);

/* Parses a request head from <buf>[0..len). Returns the head's length in bytes
 * (the body, if any, starts there; leading empty lines are included) when the
 * head is complete and valid,
 * HTTP1_INCOMPLETE when more bytes are needed (limits are enforced on partial
 * heads too: an over-long request line or head is refused before it ends, and
 * a request line is judged as soon as it ends, so that an HTTP/0.9 one, "GET
 * /" with no version, is refused at once), or
 * HTTP1_INVALID with msg->error and msg->error_reason set. Call again with the
 * same <p> and a longer buffer (same bytes first) after HTTP1_INCOMPLETE.
 * Beyond the grammar, 400 for: a request-target with a fragment ('#'); an
 * absolute-form target whose authority is empty, not a valid Host or holds
 * userinfo ('@'); a field named Content-Length or Transfer-Encoding with '_'
 * for any '-' ("Content_Length", "transfer_encoding"), which CGI-style
 * backends read as the framing field itself.
 * Hot path: no allocation, no logging. */
int http1_parse_request(struct http1_parser *p, const char *buf, size_t len,
                        const struct http1_limits *lim, struct http1_msg *msg);

/* Same for a response head (its status line, too, is judged as soon as it
 * ends; the '_' rule is for requests only); every refusal has error 502.
 * <request_meth> is the method of the request it answers (a response to HEAD,
 * and 1xx/204/304 responses, have no body: framing NONE). 2xx responses to
 * CONNECT are refused. Transfer-Encoding with final "chunked" gives CHUNKED
 * (any Content-Length header is then marked HTTP1_HF_HOP and KEEP_ALIVE
 * cleared); other Transfer-Encoding, or no length at all, gives CLOSE
 * (KEEP_ALIVE cleared). Transfer-Encoding in an HTTP/1.0 response is refused.
 * Content-Length on a 1xx or 204 response is marked HTTP1_HF_HOP (KEEP_ALIVE
 * cleared when not 0); repeated equal values ("3, 3", or two fields) are
 * marked HOP with HTTP1_MF_CL_CANONICAL set. */
int http1_parse_response(struct http1_parser *p, const char *buf, size_t len,
                         const struct http1_limits *lim, uint8_t request_meth,
                         struct http1_msg *msg);

/* What the bytes consumed by one http1_chunked_feed() call were. */
enum http1_chunk_run {
    HTTP1_RUN_FRAMING = 0, /* chunk-size lines, CRLFs after data, the final CRLF */
    HTTP1_RUN_DATA,        /* chunk payload */
    HTTP1_RUN_NAME,        /* the name of a trailer field, or a part of it */
    HTTP1_RUN_FIELD,       /* the rest of a trailer field line: ':', value, CRLF, or a part */
};

/* Chunked body decoder. Zero it (http1_chunked_init) per body. */
struct http1_chunked {
    uint8_t state;
    uint8_t run;        /* enum http1_chunk_run of the last call's bytes */
    bool done;          /* the last chunk and trailer section were read */
    uint64_t remaining; /* payload bytes left in the current chunk */
    uint32_t line_len;  /* bytes of the current size/trailer line so far */
    uint32_t trailer_bytes;
};

void http1_chunked_init(struct http1_chunked *c);

/* Decodes from <buf>[0..len). <data> and <data_len> may not be NULL.
 * Each call consumes one run of bytes of the same kind, given in c->run:
 * either payload (then *data = buf and *data_len = the returned count) or
 * framing (chunk-size lines, CRLFs, trailer fields; then *data_len = 0).
 * Trailer fields come as runs of their own so that a forwarder can cut them
 * out: each field line is one or more NAME runs (its name, never empty, up to
 * its colon), then one or more FIELD runs (from its colon through its LF; the
 * last one ends the line). A NAME run that follows anything but a NAME run
 * starts a new field.
 * Returns the number of bytes consumed (0 only when len is 0 or c->done),
 * or HTTP1_INVALID on a malformed size line (sign, "0x", overflow, junk,
 * bare CR or LF, more than 15 significant hex digits, a size line with its
 * extensions over 4 KiB), a missing CRLF after data, a malformed trailer field
 * or trailers over 32 KiB. Chunk extensions are accepted and ignored. */
int http1_chunked_feed(struct http1_chunked *c, const char *buf, size_t len, const char **data,
                       size_t *data_len);

/* A trailer field name at least this long is judged by its first
 * HTTP1_TRAILER_NAME_DECIDES bytes alone (see http1_trailer_is_allowed). */
#define HTTP1_TRAILER_NAME_DECIDES 20u

/* Whether a field named <name> may be forwarded in a trailer section. Refused
 * (RFC 9110 §6.5.1): framing (Content-Length, Transfer-Encoding, Trailer),
 * routing (Host), connection options (Connection, Keep-Alive,
 * Proxy-Connection, TE, Upgrade), request modifiers (Expect, Max-Forwards,
 * Range, If-*), authentication (Authorization, Proxy-Authorization,
 * WWW-Authenticate, Proxy-Authenticate, Cookie, Set-Cookie), response
 * controls (Cache-Control, Pragma, Age, Expires, Vary, Location, Retry-After),
 * content format (Content-Encoding, Content-Type, Content-Range), and the
 * fields only lb writes (X-Forwarded-For, -Proto, -Host, X-Client-Cert-*).
 * Names compare in any case and with '_' for '-'. <len> is the name's length,
 * or HTTP1_TRAILER_NAME_DECIDES for a name at least that long (of which the
 * first HTTP1_TRAILER_NAME_DECIDES bytes are given). Pure; any thread. */
bool http1_trailer_is_allowed(const char *name, size_t len);

/* Case-insensitive comparison of a slice with a NUL-terminated string. */
bool http1_slice_eq(struct http1_slice s, const char *lit);

/* The standard reason phrase of <status> ("OK", "Bad Request", ...), or "" */
const char *http1_reason(unsigned status);

#endif
