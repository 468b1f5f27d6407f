/* dataplane/h2req.h: an HTTP/2 request's header list as the HTTP/1.1 head
 * the exchange takes (RFC 9113 §8.3 and §8.2.2).
 *
 * Pure: no I/O, no allocation. The result is then parsed by the strict
 * HTTP/1 parser (http1_parse_request()) like any client's head, so what a
 * backend reads is framed exactly as lb read it: every field name and value
 * that could change the framing of an HTTP/1.1 head (CR, LF, NUL, other
 * controls, uppercase or non-token names, connection-specific fields) is
 * refused here first, never escaped. */
#ifndef LB_H2REQ_H
#define LB_H2REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One field as HPACK decoded it (pseudo-headers included). */
struct h2req_field {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
};

enum h2req_result {
    H2REQ_OK = 0,
    H2REQ_MALFORMED = -1, /* RFC 9113 §8.1.1: a stream error PROTOCOL_ERROR */
    H2REQ_NOSPACE = -2,   /* the head does not fit in <cap> bytes */
    H2REQ_CONNECT = -3,   /* CONNECT (tunnels over HTTP/2 are not offered) */
};

/* Renders the request of fields <f>[0..n) into <out> (<cap> bytes):
 * "METHOD path HTTP/1.1", "host" from :authority (or the host field, which
 * must then agree with it), every other field but the pseudo-headers, cookie
 * fields joined with "; " into one, and when the request has a body
 * (<end_stream> false) but no content-length, "transfer-encoding: chunked"
 * (*chunked set: the caller frames the DATA it forwards in chunks). Returns
 * the head's length (> 0), or an enum h2req_result with *why saying what is
 * wrong (a static string). */
int h2req_render(const struct h2req_field *f, size_t n, bool end_stream, char *out, size_t cap,
                 bool *chunked, const char **why);

/* Whether <v>[0..len) may be an HTTP/2 field value forwarded in an HTTP/1.1
 * head: no NUL, CR, LF or other control but HTAB, no leading or trailing
 * space or HTAB. */
bool h2req_value_ok(const uint8_t *v, size_t len);

/* Whether <name>[0..len) is a lowercase token (a regular field name). */
bool h2req_name_ok(const uint8_t *name, size_t len);

#endif
