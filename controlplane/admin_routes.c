/* controlplane/admin_routes.c: which handler answers a request: the path
 * picks the resource, the method the action; 404 for an unknown path, 405
 * (with Allow) for a method the path does not take. */
#include "admin_int.h"

#include <stdio.h>
#include <string.h>

enum {
    M_GET = 1,
    M_POST = 2,
    M_PUT = 4,
    M_DELETE = 8
};

static void method_not_allowed(struct req *r, unsigned allowed)
{
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE"};
    char list[64] = "";
    for (int i = 0; i < 4; i++) {
        if (allowed & (1u << i)) {
            if (list[0])
                strcat(list, ", ");
            strcat(list, names[i]);
        }
    }
    char header[96];
    snprintf(header, sizeof(header), "Allow: %s\r\n", list);
    admin__respond_error_x(r, 405, "method_not_allowed", header, "%s is not allowed here; use %s",
                           r->method, list);
}

/* Checks the method against <allowed>; answers 405 when it does not match. */
static bool allow(struct req *r, unsigned allowed, unsigned m)
{
    if (m & allowed)
        return true;
    method_not_allowed(r, allowed);
    return false;
}

void admin__route(struct req *r)
{
    const struct http1_msg *msg = r->msg;
    /* HEAD is GET without the body (admin__respond_cache() leaves it out) */
    unsigned m = msg->meth == HTTP1_M_GET || msg->meth == HTTP1_M_HEAD ? M_GET
                 : msg->meth == HTTP1_M_POST                           ? M_POST
                 : msg->meth == HTTP1_M_PUT                            ? M_PUT
                 : msg->meth == HTTP1_M_DELETE                         ? M_DELETE
                                                                       : 0;
    char path[512];
    const char *q = memchr(msg->target.p, '?', msg->target.len);
    size_t plen = q ? (size_t)(q - msg->target.p) : msg->target.len;
    const char *query = q ? q + 1 : "";
    size_t qlen = q ? msg->target.len - plen - 1 : 0;
    r->query = query;
    r->qlen = qlen;
    if (plen >= sizeof(path)) {
        admin__respond_error(r, 404, "not_found", "no such route");
        return;
    }
    memcpy(path, msg->target.p, plen);
    path[plen] = '\0';

    if (strcmp(path, "/health") == 0) {
        if (allow(r, M_GET, m))
            admin__health(r);
    } else if (strcmp(path, "/metrics") == 0) {
        if (allow(r, M_GET, m))
            admin__metrics(r);
    } else if (strcmp(path, "/api/v1/backends") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? admin__backends_list(r) : admin__backends_add(r);
    } else if (strncmp(path, "/api/v1/backends/", 17) == 0 && path[17] != '\0') {
        char *id = path + 17;
        char *slash = strchr(id, '/');
        if (slash != NULL && strcmp(slash, "/drain") == 0) {
            *slash = '\0';
            if (allow(r, M_POST, m))
                admin__backend_drain(r, id);
        } else if (slash != NULL) {
            admin__respond_error(r, 404, "not_found", "no such route");
        } else if (allow(r, M_GET | M_PUT | M_DELETE, m)) {
            if (m == M_GET)
                admin__backend_get(r, id);
            else if (m == M_PUT)
                admin__backend_update(r, id);
            else
                admin__backend_delete(r, id);
        }
    } else if (strcmp(path, "/api/v1/config") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? admin__config_get(r) : admin__config_post(r);
    } else if (strcmp(path, "/api/v1/config/versions") == 0) {
        if (allow(r, M_GET, m))
            admin__versions_list(r, query, qlen);
    } else if (strncmp(path, "/api/v1/config/versions/", 24) == 0 && path[24] != '\0' &&
               strchr(path + 24, '/') == NULL) {
        if (allow(r, M_GET, m))
            admin__version_get(r, path + 24);
    } else if (strcmp(path, "/api/v1/config/diff") == 0) {
        if (allow(r, M_GET, m))
            admin__diff(r, query, qlen);
    } else if (strcmp(path, "/api/v1/config/rollback") == 0) {
        if (allow(r, M_POST, m))
            admin__rollback(r);
    } else if (strcmp(path, "/api/v1/dataplanes") == 0) {
        if (allow(r, M_GET, m))
            admin__dataplanes(r);
    } else if (strcmp(path, "/api/v1/tls") == 0) {
        if (allow(r, M_GET, m))
            admin__tls_get(r);
    } else if (strcmp(path, "/api/v1/tls/reload") == 0) {
        if (allow(r, M_POST, m))
            admin__tls_reload(r);
    } else if (strcmp(path, "/api/v1/audit") == 0) {
        if (allow(r, M_GET, m))
            admin__audit_list(r, query, qlen);
    } else if (strcmp(path, "/api/v1/rollouts") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? admin__rollouts_list(r) : admin__rollouts_start(r);
    } else if (strncmp(path, "/api/v1/rollouts/", 17) == 0 && path[17] != '\0') {
        char *id = path + 17;
        char *slash = strchr(id, '/');
        if (slash == NULL) {
            if (allow(r, M_GET, m))
                admin__rollout_get(r, id);
        } else {
            *slash = '\0';
            if (allow(r, M_POST, m))
                admin__rollout_op(r, id, slash + 1);
        }
    } else if (strcmp(path, "/api/v1/whoami") == 0) {
        if (allow(r, M_GET, m))
            admin__whoami(r);
    } else if (strcmp(path, "/api/v1/history") == 0) {
        if (allow(r, M_GET, m))
            admin__history(r, query, qlen);
    } else if (admin__ui_is_public(path, plen)) {
        if (allow(r, M_GET, m))
            admin__ui(r, path);
    } else if (strcmp(path, "/api/v1/config/canary") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? admin__canary_get(r) : admin__canary_post(r);
    } else if (strcmp(path, "/api/v1/config/canary/abort") == 0) {
        if (allow(r, M_POST, m))
            admin__canary_abort(r);
    } else {
        admin__respond_error(r, 404, "not_found", "no such route: %s", path);
    }
}
