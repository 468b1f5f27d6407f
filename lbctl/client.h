/* lbctl/client.h: one HTTP exchange with the admin API, over the control
 * plane's unix socket or over TCP (HTTPS, or loopback HTTP) with a bearer
 * token or a client certificate (libcurl). */
#ifndef LBCTL_CLIENT_H
#define LBCTL_CLIENT_H

#include <stddef.h>

struct lb_err;
struct client;

/* Where and how to reach the admin API. Strings are borrowed for the call to
 * client_new() only. */
struct client_opts {
    const char *socket_path; /* unix socket; used when <url> is NULL */
    const char *url;         /* "http://127.0.0.1:9180" (no trailing path), or NULL */
    const char *token;       /* bearer token sent with every request, or NULL */
    const char *ca_file;     /* https: PEM CAs that verify the server, or NULL (the
                              * system's) */
    const char *cert_file;   /* https: PEM client certificate, or NULL */
    const char *key_file;    /* its PEM private key; required with <cert_file> */
    long timeout_ms;         /* whole-exchange timeout; > 0 */
};

/* One request. Every field but <method> and <path> may be NULL. */
struct client_req {
    const char *method;       /* "GET", "POST", "PUT", "DELETE" */
    const char *path;         /* "/api/v1/backends", already percent-encoded */
    const char *body;         /* request body of <body_len> bytes, or NULL */
    size_t body_len;          /* bytes in <body> */
    const char *content_type; /* Content-Type of <body> */
    const char *accept;       /* Accept header; NULL = application/json */
    const char *if_match;     /* If-Match value (a version), or NULL */
    const char *comment;      /* X-Lb-Comment value (no CR/LF), or NULL */
};

/* An answer. <body> is NUL-terminated (may hold NULs before <body_len>). */
struct client_resp {
    long status;        /* HTTP status, 100..599 */
    char *body;         /* owned; release with client_resp_deinit() */
    size_t body_len;    /* bytes in <body> */
    char *content_type; /* owned, or NULL when the server sent none */
};

/* Creates a client for <o>. Returns NULL and fills <err> (LB_ENOMEM) when
 * libcurl cannot be set up. Caller owns the result; release with
 * client_free(). Single-threaded. */
struct client *client_new(const struct client_opts *o, struct lb_err *err);

/* Releases <c>; NULL is a no-op. */
void client_free(struct client *c);

/* "/run/lb/admin.sock" or the URL: where <c> sends its requests, for
 * messages. Owned by <c>. */
const char *client_target(const struct client *c);

/* Percent-encodes <s> for use as one path segment or query value.
 * Returns a malloc'd string (caller frees) or NULL when out of memory. */
char *client_escape(struct client *c, const char *s);

/* Sends <r> and reads the whole answer into <resp>, whatever its status.
 * Returns LB_OK, LB_ESYS when the control plane could not be reached, the
 * TLS handshake failed (a server certificate the CA did not issue, a client
 * certificate the server refused) or it did not answer in time (<err> holds the reason, without the
 * target), or LB_ENOMEM. On failure <resp> holds nothing to release. */
int client_do(struct client *c, const struct client_req *r, struct client_resp *resp,
              struct lb_err *err);

/* Releases what client_do() put in <resp>; safe on a zeroed <resp>. */
void client_resp_deinit(struct client_resp *resp);

#endif
