/* controlplane/admin_ui.c: the dashboard: its embedded static files under
 * /ui/ (no token: they hold no data), the redirect of / to /ui/, and the two
 * read-outs only it needs, /api/v1/whoami and /api/v1/history, which go
 * through the API's authorisation like every other data call. */
#include "admin_int.h"

#include "admin_ui.h"
#include "history.h"

#include <stdio.h>
#include <string.h>

/* What every dashboard file is served with: no script, style, image or
 * connection but our own, no inline code, no eval, no framing, no referrer. */
#define UI_HEADERS                                                                                 \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "                    \
    "frame-ancestors 'none'\r\n"                                                                   \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Cross-Origin-Opener-Policy: same-origin\r\n"                                                  \
    "Cross-Origin-Resource-Policy: same-origin\r\n"

/* The path part of <target> (up to '?'). */
static size_t path_len(const char *target, size_t len)
{
    const char *q = memchr(target, '?', len);
    return q ? (size_t)(q - target) : len;
}

bool admin__ui_is_public(const char *target, size_t len)
{
    len = path_len(target, len);
    return (len == 1 && target[0] == '/') || (len == 3 && memcmp(target, "/ui", 3) == 0) ||
           (len >= 4 && memcmp(target, "/ui/", 4) == 0);
}

static void redirect(struct req *r)
{
    static const char body[] = "the dashboard is at /ui/\n";
    admin__respond_cache(r, 308, "text/plain; charset=utf-8", body, sizeof(body) - 1,
                         UI_HEADERS "Location: /ui/\r\n", "no-store");
}

static bool etag_matches(const struct req *r, const char *etag)
{
    const struct http1_header *h = admin__find_header(r->msg, "If-None-Match");
    if (h == NULL)
        return false;
    size_t n = strlen(etag);
    for (size_t i = 0; i + n <= h->value.len; i++)
        if (memcmp(h->value.p + i, etag, n) == 0)
            return true;
    return false;
}

void admin__ui(struct req *r, const char *path)
{
    if (strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0) {
        redirect(r);
        return;
    }
    const char *name = path + 4;
    if (name[0] == '\0')
        name = "index.html";
    for (size_t i = 0; i < admin_ui_n_assets; i++) {
        const struct admin_ui_asset *a = &admin_ui_assets[i];
        if (strcmp(a->name, name) != 0)
            continue;
        char extra[sizeof(UI_HEADERS) + 64];
        snprintf(extra, sizeof(extra), "%sETag: %s\r\n", UI_HEADERS, a->etag);
        /* revalidated every time: an upgraded binary's files show at once */
        if (etag_matches(r, a->etag))
            admin__respond_cache(r, 304, a->ctype, NULL, 0, extra, "no-cache");
        else
            admin__respond_cache(r, 200, a->ctype, (const char *)a->data, a->len, extra,
                                 "no-cache");
        return;
    }
    static const char body[] = "no such file in the dashboard\n";
    admin__respond_cache(r, 404, "text/plain; charset=utf-8", body, sizeof(body) - 1, UI_HEADERS,
                         "no-store");
}

void admin__whoami(struct req *r)
{
    admin__respond_json(r, 200, json_pack("{s:s,s:b}", "identity", r->author, "rw", r->rw));
}

/* ?series=0 leaves the per-step arrays out (the Overview's poll). */
void admin__history(struct req *r, const char *query, size_t qlen)
{
    size_t len = 0;
    const char *v = admin__query_get(query, qlen, "series", &len);
    bool series = true;
    if (v != NULL) {
        if (len == 1 && (v[0] == '0' || v[0] == '1')) {
            series = v[0] == '1';
        } else {
            admin__respond_error(r, 400, "invalid_request", "series must be 0 or 1");
            return;
        }
    }
    json_t *j = history_json(cp_history(r->c->a->cp), admin__now_ms(), series);
    if (j == NULL) {
        admin__respond_error(r, 500, "internal", "out of memory");
        return;
    }
    admin__respond_json(r, 200, j);
}
