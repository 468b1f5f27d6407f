/* controlplane/admin_auth.c: who is asking and what they may do: the peer
 * uid on the unix socket (full access), a bearer token from the tokens file
 * on TCP ("ro" tokens may only GET), no token for GET /health. */
#include "admin_int.h"

#include "lb_err.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int admin__load_tokens(struct admin *a, const char *path, struct lb_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return lb_err_set(err, LB_ESYS, errno, "admin tokens file %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & (S_IROTH | S_IWOTH))) {
        fclose(f);
        return lb_err_set(err, LB_EINVAL, 0,
                          "admin tokens file %s is world-readable or -writable; chmod o-rwx it",
                          path);
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
                            "admin tokens file %s:%d: want \"<name> <token> rw|ro\"", path, lineno);
            break;
        }
        struct token *nt = realloc(a->tokens, (a->n_tokens + 1) * sizeof(*nt));
        if (nt == NULL) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
            break;
        }
        a->tokens = nt;
        struct token *t = &nt[a->n_tokens];
        t->name = strdup(name);
        t->secret = strdup(secret);
        t->rw = strcmp(mode, "rw") == 0;
        a->n_tokens++;
        if (t->name == NULL || t->secret == NULL)
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    fclose(f);
    if (rc == LB_OK && a->n_tokens == 0)
        rc = lb_err_set(err, LB_EINVAL, 0, "admin tokens file %s holds no token", path);
    return rc;
}

static const struct token *find_token(const struct admin *a, struct http1_slice secret)
{
    const struct token *found = NULL;
    for (size_t i = 0; i < a->n_tokens; i++) {
        const struct token *t = &a->tokens[i];
        /* Constant-time over the secret so that timing reveals no prefix. */
        if (strlen(t->secret) == secret.len && CRYPTO_memcmp(t->secret, secret.p, secret.len) == 0)
            found = t;
    }
    return found;
}

/* Identity and permission; false when answered (401/403). */
bool admin__authorise(struct req *r)
{
    struct conn *c = r->c;
    if (!c->tcp) {
        snprintf(r->author, sizeof(r->author), "uid:%ld", c->uid);
        return true;
    }
    /* liveness probes (orchestrators, load balancers) carry no token */
    const struct http1_slice *target = &r->msg->target;
    if (r->msg->meth == HTTP1_M_GET && target->len == 7 && memcmp(target->p, "/health", 7) == 0) {
        snprintf(r->author, sizeof(r->author), "anonymous");
        return true;
    }
    const struct http1_header *h = admin__find_header(r->msg, "Authorization");
    const struct token *t = NULL;
    if (h != NULL && h->value.len > 7 && strncasecmp(h->value.p, "Bearer ", 7) == 0) {
        struct http1_slice s = {h->value.p + 7, h->value.len - 7};
        while (s.len > 0 && s.p[0] == ' ') {
            s.p++;
            s.len--;
        }
        t = find_token(c->a, s);
    }
    if (t == NULL) {
        admin__respond_error_x(r, 401, "unauthorized", "WWW-Authenticate: Bearer\r\n",
                               "a valid bearer token is required");
        return false;
    }
    if (!t->rw && r->msg->meth != HTTP1_M_GET) {
        admin__respond_error(r, 403, "forbidden", "token \"%s\" is read-only", t->name);
        return false;
    }
    snprintf(r->author, sizeof(r->author), "token:%s", t->name);
    return true;
}

void admin__tokens_free(struct admin *a)
{
    for (size_t i = 0; i < a->n_tokens; i++) {
        free(a->tokens[i].name);
        free(a->tokens[i].secret);
    }
    free(a->tokens);
}
