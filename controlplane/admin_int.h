/* controlplane/admin_int.h: the admin API server's state and what its parts
 * share: admin.c (listeners, connections), admin_auth.c (tokens, identity),
 * admin_tls.c (the TLS context, handshakes, encrypted reads and writes,
 * client certificate identities), admin_routes.c (path and method ->
 * handler), the handlers per resource
 * (admin_backends.c, admin_config.c, admin_status.c, admin_audit.c) and
 * admin_http.c (the responses and the request readers every handler uses).
 * Not for other modules: they use admin.h.
 *
 * The parts depend one way: admin.c -> admin_tls.c, admin_auth.c, admin_routes.c ->
 * handlers -> admin_http.c. Single-threaded, as admin.h. */
#ifndef LB_ADMIN_INT_H
#define LB_ADMIN_INT_H

#include "admin.h"
#include "cp.h"
#include "http1.h"

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct lb_err;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

/* One line of the tokens file: a bearer token, or a client certificate name. */
struct token {
    char *name;   /* the token's name, or the certificate name after "cert:" */
    char *secret; /* the bearer token; NULL for a certificate line */
    bool rw;
    bool cert; /* a "cert:<name> - rw|ro" line */
};

/* One (method, status) pair of lb_cp_api_requests_total. */
struct api_count {
    const char *method;
    unsigned status;
    uint64_t n;
};

#define API_COUNT_MAX  96
#define ADMIN_LINGER_S 2.0 /* bound on discarding input after a final answer */

struct conn {
    struct admin *a;
    struct conn *prev, *next;
    int fd;
    bool tcp;      /* came through the TCP listener: needs a token */
    long uid;      /* peer uid on the unix socket, -1 on TCP */
    char peer[48]; /* TCP: the client's address, for the failed-authentication limit */
    ev_io rio;     /* readable */
    ev_io wio;     /* writable while output is pending */
    ev_timer idle; /* ADMIN_TIMEOUT_S without progress closes */
    char *in;      /* received bytes not consumed yet */
    size_t in_len, in_cap;
    char *out; /* response bytes */
    size_t out_len, out_off;
    bool close_after;   /* close once <out> is written */
    bool continue_sent; /* "100 Continue" sent for the current request */
    bool lingering;     /* answered and shut down for writing: discard input until EOF */
    struct http1_parser parser;
    SSL *ssl;                      /* TLS on the TCP listener, else NULL */
    bool handshaking;              /* <ssl>'s handshake is not done: <idle> bounds it */
    bool write_wants_read;         /* SSL_write needs input first: readable means flush */
    const struct token *cert_role; /* the tokens-file line the client certificate maps to */
    char cert_subject[80];         /* the verified client certificate's name, "" = none */
};

#define ADMIN_AUTH_SOURCES 256 /* sources whose failed authentications are remembered */

/* Failed authentications of one TCP source. */
struct auth_fails {
    char peer[48]; /* "" = free */
    uint32_t count;
    double since; /* start of the window (ev_now) */
};

struct admin {
    struct ev_loop *loop;
    struct cp *cp;         /* borrowed */
    int unix_fd, tcp_fd;   /* -1 = none */
    ev_io unix_io, tcp_io; /* accept watchers */
    ev_timer accept_pause; /* accepting again after running out of descriptors */
    char *unix_path;       /* the socket file we created */
    dev_t unix_dev;        /* identity of that file, so admin_free removes only ours */
    ino_t unix_ino;
    uint16_t tcp_port;
    struct token *tokens;
    size_t n_tokens;
    char *tokens_file;  /* --admin-tokens, re-read by admin_tokens_reload() */
    struct conn *conns; /* open connections */
    size_t n_conns;
    struct api_count counts[API_COUNT_MAX];
    size_t n_counts;
    struct auth_fails fails[ADMIN_AUTH_SOURCES];
    uint64_t auth_failures; /* 401s on TCP, for /metrics */
    uint64_t auth_limited;  /* 429s to sources over the limit */
    SSL_CTX *ssl_ctx;       /* the TCP listener speaks TLS; NULL = plain HTTP (or no TCP) */
    char *tls_cert, *tls_key, *tls_ca; /* its files, for admin_tls_reload(); tls_ca may be NULL */
    bool client_ca;                    /* client certificates are asked for and verified */
    double handshake_s;                /* bound on a TLS handshake */
    uint64_t tls_handshakes;           /* completed, for /metrics */
    uint64_t tls_handshake_failures;   /* refused by TLS (plain HTTP, bad certificate) or
                                        * not done in time */
    double hs_log_since;               /* start of the handshake-failure log window */
    uint32_t hs_logged;                /* lines logged in it */
    uint32_t hs_unlogged;              /* failures past the limit, not logged */
};

/* Refused TLS handshakes are logged at most this many times a window (all
 * are counted in /metrics); a flood from a scanner does not flood the log. */
#define ADMIN_HS_LOG_MAX      20
#define ADMIN_HS_LOG_WINDOW_S 60.0

/* What one request is about, for the handlers. */
struct req {
    struct conn *c;
    const struct http1_msg *msg;
    const char *body;
    size_t body_len;
    char author[80];
    const char *method; /* "GET", ... or "OTHER" */
    bool rw;            /* admin__authorise(): the identity may write */
    const char *query;  /* after the '?' of the target, <qlen> bytes ("" if none) */
    size_t qlen;
};

/* ---- admin_http.c: responses -------------------------------------------------- */

/* Queues one complete response on the request's connection and counts it;
 * <extra> holds more header lines ("X: y\r\n") or is NULL. Out of memory
 * closes the connection once what is queued is written. */
void admin__respond(struct req *r, unsigned status, const char *ctype, const char *body, size_t len,
                    const char *extra);

/* admin__respond() with Cache-Control: <cache> instead of no-store. */
void admin__respond_cache(struct req *r, unsigned status, const char *ctype, const char *body,
                          size_t len, const char *extra, const char *cache);

/* Serialises <j> (taken; NULL answers 500) as the body. */
void admin__respond_json(struct req *r, unsigned status, json_t *j);

/* {"error": {"code": <code>, "message": <fmt...>}} with <extra> header lines. */
__attribute__((format(printf, 5, 6))) void admin__respond_error_x(struct req *r, unsigned status,
                                                                  const char *code,
                                                                  const char *extra,
                                                                  const char *fmt, ...);
#define admin__respond_error(r, status, code, ...)                                                 \
    admin__respond_error_x(r, status, code, NULL, __VA_ARGS__)

/* Maps a core error to the API's status and code. */
void admin__respond_lb_err(struct req *r, const struct lb_err *e);

/* ---- admin_http.c: reading a request ------------------------------------------- */

/* The first header <name> of <m>, or NULL. */
const struct http1_header *admin__find_header(const struct http1_msg *m, const char *name);

/* Whether <s> starts with <lit>, ignoring case. */
bool admin__slice_prefix(struct http1_slice s, const char *lit);

/* Parses a plain decimal uint64 from [p, p+len): digits only, at most 19. */
bool admin__parse_u64(const char *p, size_t len, uint64_t *out);

/* Value of query parameter <key> in <query> (not decoded), length in <len>;
 * NULL when absent. */
const char *admin__query_get(const char *query, size_t qlen, const char *key, size_t *len);

/* Refuses members of <obj> other than <allowed> (NULL-terminated); false
 * when answered. */
bool admin__only_keys(struct req *r, json_t *obj, const char *const *allowed);

/* "GET", "POST", "PUT", "DELETE", "HEAD", else "OTHER". */
const char *admin__method_name(uint8_t meth);

/* Wall-clock time in ms since the epoch. */
int64_t admin__now_ms(void);

/* JSON text made by config.c (taken), parsed back to embed it; NULL when
 * <text> is NULL. */
json_t *admin__embed(char *text);

/* A write being read: If-Match, the optional JSON body, the comment (the
 * body's "comment", else X-Lb-Comment), the author. */
struct admin_write {
    json_t *body;      /* the JSON object when asked for, else NULL; owned */
    struct cp_write w; /* for the core: points into <comment> and the request */
    char comment[ADMIN_COMMENT_MAX + 1];
    struct cp_canary canary; /* admin__write_canary(): w.canary points here */
    char nodes[1024];
};

/* Reads <wr> from <r>, with a JSON object body when <json_body>; false when
 * answered (400). Release with admin__write_end() when it returned true. */
bool admin__write_start(struct req *r, bool json_body, struct admin_write *wr);
void admin__write_end(struct admin_write *wr);

/* A staged write: reads ?nodes=a,b|P%25[&bake_ms=N][&max_error_rate=R] of
 * <r> into <nodes> (<size> bytes), <bake_ms> and <rate> (-1 when absent).
 * Returns 1 when the query names canaries, 0 when it does not, -1 when
 * answered (400). */
int admin__canary_query(struct req *r, char *nodes, size_t size, int64_t *bake_ms, double *rate);

/* admin__canary_query() into <wr> (w.canary set when it names canaries);
 * false when answered (400). */
bool admin__write_canary(struct req *r, struct admin_write *wr);

/* ---- the handlers (admin_backends.c, admin_config.c, admin_status.c, admin_audit.c) */

void admin__backends_list(struct req *r);
void admin__backends_add(struct req *r);
void admin__backend_get(struct req *r, const char *id);
void admin__backend_update(struct req *r, const char *id);
void admin__backend_delete(struct req *r, const char *id);
void admin__backend_drain(struct req *r, const char *id);

void admin__config_get(struct req *r);
void admin__config_post(struct req *r);
void admin__versions_list(struct req *r, const char *query, size_t qlen);
void admin__version_get(struct req *r, const char *seg);
void admin__diff(struct req *r, const char *query, size_t qlen);
void admin__rollback(struct req *r);

void admin__health(struct req *r);
void admin__metrics(struct req *r);
void admin__dataplanes(struct req *r);
void admin__tls_get(struct req *r);
void admin__tls_reload(struct req *r);

void admin__audit_list(struct req *r, const char *query, size_t qlen);

void admin__rollouts_list(struct req *r);
void admin__rollouts_start(struct req *r);
void admin__rollout_get(struct req *r, const char *seg);
void admin__rollout_op(struct req *r, const char *seg, const char *op);
/* ---- admin_ui.c: the dashboard ------------------------------------------------- */

/* Whether GET <path> is a dashboard asset or redirect: served without a token. */
bool admin__ui_is_public(const char *path, size_t len);

/* GET /, /ui and /ui/<asset>: the embedded files with the security headers. */
void admin__ui(struct req *r, const char *path);

/* GET /api/v1/whoami -> {"identity": "token:name", "rw": bool}. */
void admin__whoami(struct req *r);

/* GET /api/v1/history -> the bounded traffic history (history.h). */
void admin__history(struct req *r, const char *query, size_t qlen);

/* ---- admin_tls.c ---------------------------------------------------------------- */

/* What a TLS step left to do. */
enum admin_io {
    ADMIN_IO_DONE,       /* done: the handshake is over, or bytes were moved */
    ADMIN_IO_WANT_READ,  /* call again once the socket is readable */
    ADMIN_IO_WANT_WRITE, /* call again once the socket is writable */
    ADMIN_IO_EOF,        /* the peer closed cleanly */
    ADMIN_IO_FAILED,     /* the connection is broken: close it */
};

/* Creates a->ssl_ctx from cfg->tls_cert, tls_key and tls_client_ca (their
 * paths are kept for admin_tls_reload()): TLS 1.2 or later, forward-secret
 * AEAD ciphers, no renegotiation, no session resumption; the key must match
 * the certificate. LB_EINVAL with a one-line reason otherwise. */
int admin__tls_setup(struct admin *a, const struct admin_config *cfg, struct lb_err *err);

/* Releases a->ssl_ctx and the kept paths. */
void admin__tls_free(struct admin *a);

/* Gives <c> (accepted on the TCP listener) its SSL object; false when out
 * of memory. */
bool admin__tls_accept(struct conn *c);

/* Advances <c>'s handshake. When DONE, c->cert_subject and c->cert_role
 * hold the client certificate's identity. FAILED is counted and logged
 * (plain HTTP, a certificate the client CA did not issue, ...). */
enum admin_io admin__tls_handshake(struct conn *c);

/* Reads decrypted bytes into <buf>; <n> gets the count when DONE. */
enum admin_io admin__tls_read(struct conn *c, char *buf, size_t len, size_t *n);

/* Writes from <buf> (partial writes allowed); <n> gets the count when DONE. */
enum admin_io admin__tls_write(struct conn *c, const char *buf, size_t len, size_t *n);

/* Counts and logs a handshake not done within a->handshake_s. */
void admin__tls_timed_out(struct conn *c);

/* Releases c->ssl after sending close_notify when <notify>. */
void admin__tls_close(struct conn *c, bool notify);

/* ---- admin_routes.c ------------------------------------------------------------- */

/* Answers <r>: 404 for an unknown path, 405 for a method the path does not
 * take, else what its handler says. */
void admin__route(struct req *r);

/* ---- admin_auth.c ------------------------------------------------------------- */

/* Reads the tokens file at <path> into a->tokens; a file that its group or
 * others may access is refused. */
int admin__load_tokens(struct admin *a, const char *path, struct lb_err *err);

/* Releases a->tokens. */
void admin__tokens_free(struct admin *a);

/* Fills r->author from the peer's identity and checks its permission; false
 * when answered (401, 403, or 429 to a TCP source with ADMIN_AUTH_FAILS
 * failed authentications in ADMIN_AUTH_WINDOW_S). */
bool admin__authorise(struct req *r);

/* <sa>'s address as text ("" when not IP) into <out>. */
void admin__peer_name(const struct sockaddr_storage *sa, char *out, size_t size);

/* admin_rollouts.c: the staged config rollout (/api/v1/config/canary). */
void admin__canary_get(struct req *r);
void admin__canary_post(struct req *r);
void admin__canary_abort(struct req *r);

#endif
