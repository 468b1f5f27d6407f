/* dataplane/proxyproto.h: the PROXY protocol (HAProxy's, versions 1 and 2),
 * the header an L4 proxy puts before a connection's first byte to say whose
 * connection it is.
 *
 * Pure: no I/O, no allocation; any thread. A frontend that accepts the
 * protocol reads the header before anything else (before a TLS handshake);
 * a backend that wants it gets one written before the first byte of each new
 * connection. */
#ifndef LB_PROXYPROTO_H
#define LB_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_INCOMPLETE 0    /* proxy_parse: more bytes needed */
#define PROXY_INVALID    (-1) /* proxy_parse: not a header we accept */
#define PROXY_V1_MAX     107  /* a version 1 line, CRLF included */
#define PROXY_V2_MAX     1024 /* the longest version 2 header accepted (TLVs included) */
#define PROXY_WRITE_MAX  108  /* proxy_write needs at most this much room */

/* What a header says. */
struct proxy_hdr {
    uint8_t version;             /* 1 or 2 */
    bool local;                  /* no client address to take: v2 LOCAL, v1 UNKNOWN, or a v2
                                  * address family other than TCP over IPv4/IPv6 */
    struct sockaddr_storage src; /* the client (when !local) */
    struct sockaddr_storage dst; /* the address it connected to (when !local) */
};

/* Parses the header at the start of <buf>[0..len). Returns its length (> 0;
 * the connection's own bytes start there), PROXY_INCOMPLETE when the bytes
 * so far may still become a valid header, or PROXY_INVALID with <*why> set
 * to a static reason. Version 2 TLVs are skipped; a version 2 header longer
 * than PROXY_V2_MAX is refused. */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_hdr *out, const char **why);

/* Writes a header of <version> (1 or 2) saying that <src> connected to
 * <dst> (both IPv4 or both IPv6; IPv4-mapped IPv6 addresses are written as
 * IPv4) into <out>, which has room for PROXY_WRITE_MAX bytes. Other
 * addresses give v1 "UNKNOWN" / a v2 LOCAL header. Returns its length. */
size_t proxy_write(int version, const struct sockaddr_storage *src,
                   const struct sockaddr_storage *dst, uint8_t *out);

#endif
