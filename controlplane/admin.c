/* controlplane/admin.c: the admin API server (see admin.h): the unix and
 * TCP listeners, and the connections: the TLS handshake (admin_tls.c does
 * the OpenSSL part), reading, parsing and framing requests (keep-alive,
 * pipelining, 100-continue, size limits), writing answers, idle timeouts.
 * What a request means is admin_routes.c's. */
#include "admin_int.h"

#include "lb_err.h"
#include "lb_log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const struct http1_limits limits = {
    .max_request_line = 8192,
    .max_header_bytes = ADMIN_HEAD_MAX,
    .max_headers = ADMIN_MAX_HEADERS,
};

/* ---- connections ------------------------------------------------------------------ */

static void conn_close(struct conn *c)
{
    struct admin *a = c->a;
    admin__tls_close(c, false);
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->idle);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->n_conns--;
    free(c->in);
    free(c->out);
    free(c);
}

/* Answers a request refused before routing (bad head, too large). */
static void refuse(struct conn *c, unsigned status, const char *code, const char *msg)
{
    struct http1_msg dummy = {0};
    struct req r = {.c = c, .msg = &dummy, .method = "OTHER"};
    c->close_after = true;
    admin__respond_error(&r, status, code, "%s", msg);
    c->in_len = 0;
}

static bool ensure_in(struct conn *c, size_t need)
{
    if (c->in_cap >= need)
        return true;
    size_t cap = c->in_cap ? c->in_cap : 4096;
    while (cap < need)
        cap *= 2;
    char *n = realloc(c->in, cap);
    if (n == NULL)
        return false;
    c->in = n;
    c->in_cap = cap;
    return true;
}

/* Handles every complete request in <in>; stops at an incomplete one, or
 * when the connection is to close. */
static void conn_process(struct conn *c)
{
    while (!c->close_after && c->in_len > 0) {
        struct http1_header hdrs[ADMIN_MAX_HEADERS];
        struct http1_msg msg = {.headers = hdrs, .cap_headers = ADMIN_MAX_HEADERS};
        int n = http1_parse_request(&c->parser, c->in, c->in_len, &limits, &msg);
        if (n == HTTP1_INCOMPLETE)
            return;
        if (n == HTTP1_INVALID) {
            refuse(c, msg.error ? msg.error : 400, "invalid_request",
                   msg.error_reason ? msg.error_reason : "malformed request");
            return;
        }
        if (msg.framing == HTTP1_BODY_CHUNKED) {
            refuse(c, 411, "invalid_request",
                   "chunked request bodies are not supported; send Content-Length");
            return;
        }
        uint64_t cl = msg.framing == HTTP1_BODY_LENGTH ? msg.content_length : 0;
        if (cl > ADMIN_BODY_MAX) {
            refuse(c, 413, "too_large", "the body is over 4 MiB");
            return;
        }
        size_t total = (size_t)n + (size_t)cl;
        if (c->in_len < total) {
            if ((msg.flags & HTTP1_MF_EXPECT_CONTINUE) && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                char *o = realloc(c->out, c->out_len + sizeof(cont) - 1);
                if (o == NULL) {
                    refuse(c, 500, "internal", "out of memory");
                    return;
                }
                c->out = o;
                memcpy(c->out + c->out_len, cont, sizeof(cont) - 1);
                c->out_len += sizeof(cont) - 1;
                c->continue_sent = true;
            }
            if (!ensure_in(c, total))
                refuse(c, 500, "internal", "out of memory");
            return;
        }
        /* The head is parsed again here: a buffer grown since its first parse
         * would leave the slices pointing at freed memory. */
        http1_parser_init(&c->parser);
        msg = (struct http1_msg){.headers = hdrs, .cap_headers = ADMIN_MAX_HEADERS};
        if (http1_parse_request(&c->parser, c->in, c->in_len, &limits, &msg) != n) {
            refuse(c, 500, "internal", "request head changed");
            return;
        }
        if (!(msg.flags & HTTP1_MF_KEEP_ALIVE))
            c->close_after = true;
        struct req r = {.c = c,
                        .msg = &msg,
                        .body = c->in + n,
                        .body_len = (size_t)cl,
                        .method = admin__method_name(msg.meth)};
        if (admin__authorise(&r))
            admin__route(&r);
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        http1_parser_init(&c->parser);
        c->continue_sent = false;
    }
}

/* Sends bytes of <buf>: plain or through TLS. */
static enum admin_io conn_send(struct conn *c, const char *buf, size_t len, size_t *n)
{
    if (c->ssl != NULL)
        return admin__tls_write(c, buf, len, n);
    for (;;) {
        ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (w > 0) {
            *n = (size_t)w;
            return ADMIN_IO_DONE;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return ADMIN_IO_WANT_WRITE;
        return ADMIN_IO_FAILED;
    }
}

/* Receives into <buf>: plain or through TLS. */
static enum admin_io conn_recv(struct conn *c, char *buf, size_t len, size_t *n)
{
    if (c->ssl != NULL)
        return admin__tls_read(c, buf, len, n);
    ssize_t r = recv(c->fd, buf, len, 0);
    if (r > 0) {
        *n = (size_t)r;
        return ADMIN_IO_DONE;
    }
    if (r == 0)
        return ADMIN_IO_EOF;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return ADMIN_IO_WANT_READ;
    return ADMIN_IO_FAILED;
}

static void conn_flush(struct conn *c)
{
    struct ev_loop *loop = c->a->loop;
    while (c->out_off < c->out_len) {
        size_t w = 0;
        enum admin_io io = conn_send(c, c->out + c->out_off, c->out_len - c->out_off, &w);
        if (io == ADMIN_IO_WANT_WRITE) {
            ev_io_stop(loop, &c->rio);
            ev_io_start(loop, &c->wio);
            return;
        }
        if (io == ADMIN_IO_WANT_READ) {
            /* TLS needs the peer's bytes before it can write more */
            c->write_wants_read = true;
            ev_io_stop(loop, &c->wio);
            ev_io_start(loop, &c->rio);
            return;
        }
        if (io != ADMIN_IO_DONE) {
            conn_close(c);
            return;
        }
        c->out_off += w;
        ev_timer_again(loop, &c->idle);
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    ev_io_stop(loop, &c->wio);
    if (c->close_after) {
        /* Closing with unread input would reset the connection and could
         * destroy the answer before the client reads it (413 while the body
         * is still arriving): shut down writing, then discard until EOF. */
        if (c->ssl != NULL) {
            ERR_clear_error();
            SSL_shutdown(c->ssl); /* close_notify first, best effort */
        }
        if (shutdown(c->fd, SHUT_WR) != 0) {
            conn_close(c);
            return;
        }
        c->lingering = true;
        c->in_len = 0;
        c->idle.repeat = ADMIN_LINGER_S;
        ev_timer_again(loop, &c->idle);
    }
    ev_io_start(loop, &c->rio);
}

/* Runs the requests buffered, then writes what they produced. */
static void conn_step(struct conn *c)
{
    conn_process(c);
    if (c->out_len > 0 || c->close_after)
        conn_flush(c);
}

/* Reads what the peer already sent (bounded) so that closing sends FIN, not
 * a reset that could destroy the TLS alert before the client reads it. */
static void conn_drain(struct conn *c)
{
    char sink[4096];
    for (int i = 0; i < 16 && recv(c->fd, sink, sizeof(sink), 0) > 0; i++)
        ;
}

/* Advances the TLS handshake; once done, the connection reads requests. */
static void conn_handshake(struct conn *c)
{
    struct ev_loop *loop = c->a->loop;
    switch (admin__tls_handshake(c)) {
    case ADMIN_IO_DONE:
        c->idle.repeat = ADMIN_TIMEOUT_S;
        ev_timer_again(loop, &c->idle);
        ev_io_stop(loop, &c->wio);
        ev_io_start(loop, &c->rio);
        /* the request may have come with the client's last handshake flight */
        ev_feed_event(loop, &c->rio, EV_READ);
        return;
    case ADMIN_IO_WANT_READ:
        ev_io_stop(loop, &c->wio);
        ev_io_start(loop, &c->rio);
        return;
    case ADMIN_IO_WANT_WRITE:
        ev_io_stop(loop, &c->rio);
        ev_io_start(loop, &c->wio);
        return;
    default:
        conn_drain(c);
        conn_close(c);
        return;
    }
}

/* Free room to read into: a whole TLS record (16 KiB), so that OpenSSL holds
 * no decrypted bytes back once the socket has none. */
#define CONN_READ_ROOM (16 * 1024 + 256)

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    if (c->write_wants_read) {
        c->write_wants_read = false;
        conn_flush(c);
        return;
    }
    size_t n = 0;
    enum admin_io io;
    if (c->lingering) {
        char sink[4096];
        io = conn_recv(c, sink, sizeof(sink), &n);
        if (io == ADMIN_IO_EOF || io == ADMIN_IO_FAILED)
            conn_close(c);
        return;
    }
    size_t want = c->in_len + (c->ssl != NULL ? CONN_READ_ROOM : 4096);
    if (want < c->in_cap)
        want = c->in_cap;
    /* Bounded: a head is at most ADMIN_HEAD_MAX, a body ADMIN_BODY_MAX. */
    if (!ensure_in(c, want)) {
        conn_close(c);
        return;
    }
    io = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len, &n);
    /* WANT_WRITE: TLS answering a key update into a full send buffer; the
     * next readable event (the client's next record) retries it */
    if (io == ADMIN_IO_WANT_READ || io == ADMIN_IO_WANT_WRITE)
        return;
    if (io != ADMIN_IO_DONE) {
        conn_close(c);
        return;
    }
    c->in_len += n;
    ev_timer_again(loop, &c->idle);
    conn_step(c);
}

static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    if (c->handshaking)
        conn_handshake(c);
    else
        conn_flush(c);
}

static void conn_on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;
    if (c->handshaking)
        admin__tls_timed_out(c);
    conn_close(c);
}

static void on_accept_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;
    ev_io_start(loop, &a->unix_io);
    if (a->tcp_fd >= 0)
        ev_io_start(loop, &a->tcp_io);
}

static void accept_one(struct admin *a, int lfd, bool tcp)
{
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        /* out of descriptors or memory: the listener stays readable, so
         * pause instead of spinning */
        if (lb_errno_shortage(errno)) {
            lb_log(LB_LOG_WARN, "admin_accept_paused", "accept: %s; accepting again in 500 ms",
                   strerror(errno));
            ev_io_stop(a->loop, &a->unix_io);
            if (a->tcp_fd >= 0)
                ev_io_stop(a->loop, &a->tcp_io);
            ev_timer_set(&a->accept_pause, 0.5, 0.);
            ev_timer_start(a->loop, &a->accept_pause);
        }
        return;
    }
    if (a->n_conns >= ADMIN_MAX_CONNS) {
        lb_log(LB_LOG_WARN, "admin_busy", "%d admin connections open; refusing one",
               ADMIN_MAX_CONNS);
        close(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->a = a;
    c->fd = fd;
    c->tcp = tcp;
    c->uid = -1;
    if (tcp)
        admin__peer_name(&peer, c->peer, sizeof(c->peer));
    if (!tcp) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            c->uid = (long)cred.uid;
    }
    if (tcp && a->ssl_ctx != NULL && !admin__tls_accept(c)) {
        close(fd);
        free(c);
        return;
    }
    http1_parser_init(&c->parser);
    ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
    ev_init(&c->idle, conn_on_idle);
    /* the handshake has a bound of its own; progress does not extend it */
    c->idle.repeat = c->handshaking ? a->handshake_s : ADMIN_TIMEOUT_S;
    c->rio.data = c->wio.data = c->idle.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    ev_io_start(a->loop, &c->rio);
    ev_timer_again(a->loop, &c->idle);
}

static void on_accept_unix(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    accept_one(a, a->unix_fd, false);
}

static void on_accept_tcp(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    accept_one(a, a->tcp_fd, true);
}

/* ---- set-up ------------------------------------------------------------------------ */

static int bind_unix(struct admin *a, const char *path, struct lb_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return lb_err_set(err, LB_EINVAL, 0, "admin socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return lb_err_set(err, LB_EINVAL, 0, "admin socket %s exists and is not a socket",
                              path);
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return lb_err_set(err, LB_ESYS, errno, "socket");
        int live = connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(probe);
        if (live)
            return lb_err_set(err, LB_EINVAL, 0, "admin socket %s is in use by another process",
                              path);
        unlink(path);
    }
    a->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->unix_fd < 0)
        return lb_err_set(err, LB_ESYS, errno, "socket");
    if (bind(a->unix_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return lb_err_set(err, LB_ESYS, errno, "bind %s", path);
    if ((a->unix_path = strdup(path)) == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    if (chmod(path, 0660) != 0 || stat(path, &st) != 0)
        return lb_err_set(err, LB_ESYS, errno, "chmod %s", path);
    a->unix_dev = st.st_dev;
    a->unix_ino = st.st_ino;
    if (listen(a->unix_fd, 64) != 0)
        return lb_err_set(err, LB_ESYS, errno, "listen %s", path);
    return LB_OK;
}

/* 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

static int bind_tcp(struct admin *a, const char *addr, bool loopback_only, struct lb_err *err)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof(host))
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s is not ADDR:PORT", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    uint64_t port;
    if (!admin__parse_u64(colon + 1, strlen(colon + 1), &port) || port > 65535)
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s has a bad port", addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || res == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s needs an IP literal", addr);
    if (loopback_only && !is_loopback(res->ai_addr)) {
        freeaddrinfo(res);
        return lb_err_set(err, LB_EINVAL, 0,
                          "--admin-insecure-http serves plain HTTP on a loopback address only, "
                          "not %s; use --admin-cert and --admin-key",
                          addr);
    }
    int rc = LB_OK;
    a->tcp_fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (a->tcp_fd < 0)
        rc = lb_err_set(err, LB_ESYS, errno, "socket");
    else if (setsockopt(a->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
             bind(a->tcp_fd, res->ai_addr, res->ai_addrlen) != 0 || listen(a->tcp_fd, 64) != 0)
        rc = lb_err_set(err, LB_ESYS, errno, "bind %s", addr);
    freeaddrinfo(res);
    if (rc != LB_OK)
        return rc;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(a->tcp_fd, (struct sockaddr *)&ss, &len) != 0)
        return lb_err_set(err, LB_ESYS, errno, "getsockname %s", addr);
    a->tcp_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return LB_OK;
}

/* The TLS flags that make no sense together; true when refused. */
static bool tls_flags_refused(const struct admin_config *cfg, struct lb_err *err)
{
    const char *why = NULL;
    if (cfg->tcp_listen == NULL &&
        (cfg->tls_cert || cfg->tls_key || cfg->tls_client_ca || cfg->insecure_http))
        why = "--admin-cert, --admin-key, --admin-client-ca and --admin-insecure-http go with "
              "--admin-listen";
    else if (cfg->tcp_listen == NULL)
        return false;
    else if (cfg->insecure_http && (cfg->tls_cert || cfg->tls_key || cfg->tls_client_ca))
        why = "--admin-insecure-http serves plain HTTP: give it or --admin-cert/--admin-key, not "
              "both";
    else if (!cfg->insecure_http && cfg->tls_cert == NULL && cfg->tls_key == NULL)
        why = "--admin-listen serves HTTPS: give --admin-cert FILE and --admin-key FILE (plain "
              "HTTP only with --admin-insecure-http on a loopback address)";
    else if (!cfg->insecure_http && (cfg->tls_cert == NULL || cfg->tls_key == NULL))
        why = "--admin-cert and --admin-key go together";
    if (why != NULL)
        lb_err_set(err, LB_EINVAL, 0, "%s", why);
    return why != NULL;
}

struct admin *admin_new(struct ev_loop *loop, struct cp *cp, const struct admin_config *cfg,
                        struct lb_err *err)
{
    if (cfg == NULL || cfg->unix_path == NULL || cp == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "admin: a unix socket path and a core are required");
        return NULL;
    }
    if (cfg->tcp_listen != NULL && cfg->tokens_file == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "--admin-listen needs --admin-tokens FILE");
        return NULL;
    }
    if (tls_flags_refused(cfg, err))
        return NULL;
    struct admin *a = mem_zalloc(sizeof(*a), NULL, err);
    if (a == NULL)
        return NULL;
    a->loop = loop;
    a->cp = cp;
    a->unix_fd = a->tcp_fd = -1;
    a->handshake_s =
        cfg->handshake_timeout_s > 0 ? cfg->handshake_timeout_s : ADMIN_TLS_HANDSHAKE_S;
    bool tls = cfg->tcp_listen != NULL && !cfg->insecure_http;
    if (cfg->tcp_listen != NULL && (a->tokens_file = strdup(cfg->tokens_file)) == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        admin_free(a);
        return NULL;
    }
    if ((cfg->tcp_listen != NULL && admin__load_tokens(a, cfg->tokens_file, err) != LB_OK) ||
        (tls && admin__tls_setup(a, cfg, err) != LB_OK) ||
        bind_unix(a, cfg->unix_path, err) != LB_OK ||
        (cfg->tcp_listen != NULL &&
         bind_tcp(a, cfg->tcp_listen, cfg->insecure_http, err) != LB_OK)) {
        admin_free(a);
        return NULL;
    }
    bool cert_lines = false;
    for (size_t i = 0; i < a->n_tokens; i++)
        cert_lines = cert_lines || a->tokens[i].cert;
    if (cert_lines && !a->client_ca)
        lb_log(LB_LOG_WARN, "admin_cert_lines_unused",
               "%s maps client certificates (cert:...) but there is no --admin-client-ca: "
               "those lines are not used",
               cfg->tokens_file);
    if (cfg->tcp_listen != NULL && cfg->insecure_http)
        lb_log(LB_LOG_WARN, "admin_insecure_http",
               "--admin-insecure-http: the admin API on %s is plain HTTP (bearer tokens in clear)",
               cfg->tcp_listen);
    ev_timer_init(&a->accept_pause, on_accept_resume, 0., 0.);
    a->accept_pause.data = a;
    ev_io_init(&a->unix_io, on_accept_unix, a->unix_fd, EV_READ);
    a->unix_io.data = a;
    ev_io_start(loop, &a->unix_io);
    if (a->tcp_fd >= 0) {
        ev_io_init(&a->tcp_io, on_accept_tcp, a->tcp_fd, EV_READ);
        a->tcp_io.data = a;
        ev_io_start(loop, &a->tcp_io);
    }
    return a;
}

uint16_t admin_tcp_port(const struct admin *a)
{
    return a->tcp_port;
}

bool admin_has_tokens(const struct admin *a)
{
    return a->tokens_file != NULL;
}

void admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_close(a->conns);
    if (a->loop != NULL)
        ev_timer_stop(a->loop, &a->accept_pause);
    if (a->unix_fd >= 0) {
        ev_io_stop(a->loop, &a->unix_io);
        close(a->unix_fd);
    }
    if (a->tcp_fd >= 0) {
        ev_io_stop(a->loop, &a->tcp_io);
        close(a->tcp_fd);
    }
    struct stat st;
    if (a->unix_path != NULL && stat(a->unix_path, &st) == 0 && st.st_dev == a->unix_dev &&
        st.st_ino == a->unix_ino)
        unlink(a->unix_path);
    free(a->unix_path);
    admin__tokens_free(a);
    free(a->tokens_file);
    admin__tls_free(a);
    free(a);
}
