/* controlplane/admin_auth.c: who is asking and what they may do: the peer
 * uid on the unix socket (full access), on TCP a bearer token from the
 * tokens file or a verified client certificate that file maps to a role
 * ("ro" may only GET), no credential for GET /health. */
#include "admin_int.h"

#include "lb_err.h"
#include "lb_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static void tokens_free(struct token *tokens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(tokens[i].name);
        free(tokens[i].secret);
    }
    free(tokens);
}

/* Reads the tokens file <path> into *<out> (<n> lines). */
static int load_tokens(const char *path, struct token **out, size_t *n, struct lb_err *err)
{
    struct token *tokens = NULL;
    size_t count = 0;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return lb_err_set(err, LB_ESYS, errno, "admin tokens file %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO))) {
        unsigned mode = (unsigned)(st.st_mode & 0777);
        fclose(f);
        return lb_err_set(err, LB_EINVAL, 0,
                          "admin tokens file %s has mode %04o: its group or others may read it; "
                          "chmod 600 it",
                          path, mode);
    }
    char line[1024];
    int lineno = 0, rc = LB_OK;
    while (rc == LB_OK && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char name[128], secret[512], mode[8], extra[2];
        int k = sscanf(line, "%127s %511s %7s %1s", name, secret, mode, extra);
        if (k <= 0)
            continue;
        if (k != 3 || (strcmp(mode, "rw") != 0 && strcmp(mode, "ro") != 0)) {
            rc = lb_err_set(err, LB_EINVAL, 0,
                            "admin tokens file %s:%d: want \"<name> <token> rw|ro\" or "
                            "\"cert:<name> - rw|ro\"",
                            path, lineno);
            break;
        }
        bool cert = strncmp(name, "cert:", 5) == 0;
        if (cert && (name[5] == '\0' || strcmp(secret, "-") != 0)) {
            rc =
                lb_err_set(err, LB_EINVAL, 0,
                           "admin tokens file %s:%d: a certificate line is \"cert:<name> - rw|ro\"",
                           path, lineno);
            break;
        }
        struct token *nt = realloc(tokens, (count + 1) * sizeof(*nt));
        if (nt == NULL) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
            break;
        }
        tokens = nt;
        struct token *t = &nt[count];
        t->name = strdup(cert ? name + 5 : name);
        t->secret = cert ? NULL : strdup(secret);
        t->rw = strcmp(mode, "rw") == 0;
        t->cert = cert;
        count++;
        if (t->name == NULL || (!cert && t->secret == NULL))
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    fclose(f);
    if (rc == LB_OK && count == 0)
        rc = lb_err_set(err, LB_EINVAL, 0, "admin tokens file %s holds no token", path);
    if (rc != LB_OK) {
        tokens_free(tokens, count);
        return rc;
    }
    *out = tokens;
    *n = count;
    return LB_OK;
}

int admin__load_tokens(struct admin *a, const char *path, struct lb_err *err)
{
    return load_tokens(path, &a->tokens, &a->n_tokens, err);
}

int admin_tokens_reload(struct admin *a, size_t *count, struct lb_err *err)
{
    if (a->tokens_file == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "the admin API has no tokens file");
    struct token *tokens = NULL;
    size_t n = 0;
    int rc = load_tokens(a->tokens_file, &tokens, &n, err);
    if (rc != LB_OK)
        return rc;
    /* open connections keep the role of their certificate's name, if the
     * new file still gives it one */
    for (struct conn *c = a->conns; c != NULL; c = c->next) {
        if (c->cert_role == NULL)
            continue;
        const char *name = c->cert_role->name;
        c->cert_role = NULL;
        for (size_t i = 0; i < n && c->cert_role == NULL; i++)
            if (tokens[i].cert && strcmp(tokens[i].name, name) == 0)
                c->cert_role = &tokens[i];
    }
    tokens_free(a->tokens, a->n_tokens);
    a->tokens = tokens;
    a->n_tokens = n;
    *count = n;
    return LB_OK;
}

static const struct token *find_token(const struct admin *a, struct http1_slice secret)
{
    const struct token *found = NULL;
    for (size_t i = 0; i < a->n_tokens; i++) {
        const struct token *t = &a->tokens[i];
        if (t->cert)
            continue;
        /* Constant-time over the secret so that timing reveals no prefix. */
        if (strlen(t->secret) == secret.len && CRYPTO_memcmp(t->secret, secret.p, secret.len) == 0)
            found = t;
    }
    return found;
}

void admin__peer_name(const struct sockaddr_storage *sa, char *out, size_t size)
{
    out[0] = '\0';
    if (sa->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

/* The failure record of <peer>: its own, a free one, or the oldest
 * (replaced). */
static struct auth_fails *fails_of(struct admin *a, const char *peer, double now)
{
    struct auth_fails *free_slot = NULL, *oldest = &a->fails[0];
    for (size_t i = 0; i < ADMIN_AUTH_SOURCES; i++) {
        struct auth_fails *f = &a->fails[i];
        if (f->peer[0] != '\0' && strcmp(f->peer, peer) == 0) {
            if (now - f->since >= ADMIN_AUTH_WINDOW_S) {
                f->count = 0;
                f->since = now;
            }
            return f;
        }
        if (f->peer[0] == '\0' && free_slot == NULL)
            free_slot = f;
        if (f->since < oldest->since)
            oldest = f;
    }
    struct auth_fails *f = free_slot ? free_slot : oldest;
    snprintf(f->peer, sizeof(f->peer), "%s", peer);
    f->count = 0;
    f->since = now;
    return f;
}

/* A source over the limit gets 429 without its token being looked at. */
static bool auth_limited(struct req *r)
{
    struct admin *a = r->c->a;
    double now = ev_now(a->loop);
    struct auth_fails *f = fails_of(a, r->c->peer, now);
    if (f->count < ADMIN_AUTH_FAILS)
        return false;
    a->auth_limited++;
    char extra[64];
    snprintf(extra, sizeof(extra), "Retry-After: %d\r\n",
             (int)(ADMIN_AUTH_WINDOW_S - (now - f->since)) + 1);
    admin__respond_error_x(r, 429, "too_many_failures", extra,
                           "too many failed authentications from %s; try again later", r->c->peer);
    return true;
}

static void auth_failed(struct req *r)
{
    struct admin *a = r->c->a;
    struct auth_fails *f = fails_of(a, r->c->peer, ev_now(a->loop));
    f->count++;
    a->auth_failures++;
    /* the first failure of a window and the one that locks are logged:
     * a flood of wrong tokens does not flood the log */
    if (f->count == 1 || f->count == ADMIN_AUTH_FAILS)
        lb_log(LB_LOG_WARN, "admin_auth_failed", "%s: no valid bearer token (%u in %d s%s)",
               r->c->peer, f->count, ADMIN_AUTH_WINDOW_S,
               f->count == ADMIN_AUTH_FAILS ? "; further requests get 429 until the window ends"
                                            : "");
    admin__respond_error_x(r, 401, "unauthorized", "WWW-Authenticate: Bearer\r\n",
                           "a valid bearer token is required");
}

/* Identity and permission; false when answered (401/403/429). */
bool admin__authorise(struct req *r)
{
    struct conn *c = r->c;
    if (!c->tcp) {
        snprintf(r->author, sizeof(r->author), "uid:%ld", c->uid);
        r->rw = true;
        return true;
    }
    /* the dashboard's static files carry no token: its data calls do */
    bool read = r->msg->meth == HTTP1_M_GET || r->msg->meth == HTTP1_M_HEAD;
    if (read && admin__ui_is_public(r->msg->target.p, r->msg->target.len)) {
        snprintf(r->author, sizeof(r->author), "anonymous");
        return true;
    }
    /* liveness probes (orchestrators, load balancers) carry no token */
    const struct http1_slice *target = &r->msg->target;
    if (read && target->len == 7 && memcmp(target->p, "/health", 7) == 0) {
        snprintf(r->author, sizeof(r->author), "anonymous");
        return true;
    }
    if (auth_limited(r))
        return false;
    /* A bearer token, when sent, decides; else the client certificate. */
    const struct http1_header *h = admin__find_header(r->msg, "Authorization");
    const struct token *t = NULL;
    if (h == NULL && c->cert_subject[0] != '\0') {
        if (c->cert_role == NULL) {
            admin__respond_error(r, 403, "forbidden",
                                 "client certificate \"%s\" maps to no role in the tokens file",
                                 c->cert_subject);
            return false;
        }
        t = c->cert_role;
    } else if (h != NULL && h->value.len > 7 && strncasecmp(h->value.p, "Bearer ", 7) == 0) {
        struct http1_slice s = {h->value.p + 7, h->value.len - 7};
        while (s.len > 0 && s.p[0] == ' ') {
            s.p++;
            s.len--;
        }
        t = find_token(c->a, s);
    }
    if (t == NULL) {
        auth_failed(r);
        return false;
    }
    const char *kind = t->cert ? "cert" : "token";
    if (!t->rw && !read) {
        admin__respond_error(r, 403, "forbidden", "%s \"%s\" is read-only",
                             t->cert ? "certificate" : "token", t->name);
        return false;
    }
    snprintf(r->author, sizeof(r->author), "%s:%s", kind, t->name);
    r->rw = t->rw;
    return true;
}

void admin__tokens_free(struct admin *a)
{
    tokens_free(a->tokens, a->n_tokens);
    a->tokens = NULL;
    a->n_tokens = 0;
}
