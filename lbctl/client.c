/* lbctl/client.c: libcurl easy handle per client, one request at a time. */
#include "client.h"

#include "lb_err.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct client {
    CURL *curl;      /* reused for every request (keeps the connection) */
    char *base;      /* "http://localhost" for the socket, else the URL */
    char *socket;    /* unix socket path, or NULL */
    char *auth;      /* "Authorization: Bearer ..." header line, or NULL */
    char *target;    /* socket path or URL, for messages */
    long timeout_ms; /* whole-exchange timeout */
    char *ca;        /* CURLOPT_CAINFO, or NULL */
    char *cert;      /* CURLOPT_SSLCERT, or NULL */
    char *key;       /* CURLOPT_SSLKEY, or NULL */
};

struct buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->oom = true;
            return 0; /* makes curl stop with CURLE_WRITE_ERROR */
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

struct client *client_new(const struct client_opts *o, struct lb_err *err)
{
    static bool global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            lb_err_set(err, LB_ENOMEM, 0, "cannot initialise libcurl");
            return NULL;
        }
        global_done = true;
    }
    struct client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto oom;
    c->timeout_ms = o->timeout_ms;
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        goto oom;
    if (o->url != NULL) {
        size_t n = strlen(o->url);
        while (n > 0 && o->url[n - 1] == '/')
            n--;
        c->base = strndup(o->url, n);
        c->target = strdup(o->url);
    } else {
        c->base = strdup("http://localhost");
        c->socket = strdup(o->socket_path);
        c->target = strdup(o->socket_path);
        if (c->socket == NULL)
            goto oom;
    }
    if (c->base == NULL || c->target == NULL)
        goto oom;
    if ((o->ca_file != NULL && (c->ca = strdup(o->ca_file)) == NULL) ||
        (o->cert_file != NULL && (c->cert = strdup(o->cert_file)) == NULL) ||
        (o->key_file != NULL && (c->key = strdup(o->key_file)) == NULL))
        goto oom;
    if (o->token != NULL && asprintf(&c->auth, "Bearer %s", o->token) == -1) {
        c->auth = NULL;
        goto oom;
    }
    return c;
oom:
    client_free(c);
    lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    return NULL;
}

void client_free(struct client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    free(c->base);
    free(c->socket);
    free(c->auth);
    free(c->target);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c);
}

const char *client_target(const struct client *c)
{
    return c->target;
}

char *client_escape(struct client *c, const char *s)
{
    char *e = curl_easy_escape(c->curl, s, 0);
    if (e == NULL)
        return NULL;
    /* curl's memory must go back through curl_free(); callers use free(). */
    char *copy = strdup(e);
    curl_free(e);
    return copy;
}

void client_resp_deinit(struct client_resp *resp)
{
    free(resp->body);
    free(resp->content_type);
    resp->body = NULL;
    resp->content_type = NULL;
    resp->body_len = 0;
}

/* Appends "<name>: <value>", or "<name>:" (curl then sends no such header)
 * when <value> is NULL. */
static struct curl_slist *add_header(struct curl_slist *list, bool *oom, const char *name,
                                     const char *value)
{
    char *line;
    if (asprintf(&line, "%s:%s%s", name, value ? " " : "", value ? value : "") == -1) {
        *oom = true;
        return list;
    }
    struct curl_slist *l = curl_slist_append(list, line);
    free(line);
    if (l == NULL) {
        *oom = true;
        return list;
    }
    return l;
}

int client_do(struct client *c, const struct client_req *r, struct client_resp *resp,
              struct lb_err *err)
{
    memset(resp, 0, sizeof(*resp));
    CURL *h = c->curl;
    struct buf body = {0};
    struct curl_slist *hdrs = NULL;
    bool oom = false;
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url = NULL;
    int rc = LB_OK;

    if (asprintf(&url, "%s%s", c->base, r->path) == -1) {
        url = NULL;
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }
    hdrs = add_header(hdrs, &oom, "Accept", r->accept ? r->accept : "application/json");
    /* A body larger than 1 KiB would otherwise wait a second for "100 Continue". */
    hdrs = add_header(hdrs, &oom, "Expect", NULL);
    if (r->body != NULL)
        hdrs = add_header(hdrs, &oom, "Content-Type",
                          r->content_type ? r->content_type : "application/json");
    if (r->if_match != NULL)
        hdrs = add_header(hdrs, &oom, "If-Match", r->if_match);
    if (r->comment != NULL)
        hdrs = add_header(hdrs, &oom, "X-Lb-Comment", r->comment);
    if (c->auth != NULL)
        hdrs = add_header(hdrs, &oom, "Authorization", c->auth);
    if (oom) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (c->socket != NULL)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (c->ca != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    if (c->cert != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
    } else if (strcmp(r->method, "GET") != 0) {
        /* An explicit empty body, so that POST and PUT carry Content-Length: 0. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }

    CURLcode cc = curl_easy_perform(h);
    if (body.oom) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }
    if (cc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        if (cc == CURLE_OPERATION_TIMEDOUT)
            rc = lb_err_set(err, LB_ESYS, 0, "no answer within %ld ms", c->timeout_ms);
        else if (cc == CURLE_PEER_FAILED_VERIFICATION)
            rc = lb_err_set(err, LB_ESYS, 0, "TLS: the server's certificate is not trusted (%s)",
                            errbuf[0] ? errbuf : curl_easy_strerror(cc));
        else if (cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_CACERT_BADFILE)
            rc =
                lb_err_set(err, LB_ESYS, 0, "TLS: %s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        else if (cc == CURLE_GOT_NOTHING && strncmp(c->base, "http://", 7) == 0 &&
                 c->socket == NULL)
            rc = lb_err_set(err, LB_ESYS, 0,
                            "it closed without answering (an HTTPS listener? use https://)");
        else if (cc == CURLE_SSL_CONNECT_ERROR || (c->cert != NULL && cc == CURLE_RECV_ERROR))
            rc = lb_err_set(err, LB_ESYS, 0, "TLS handshake failed: %s",
                            errbuf[0] ? errbuf : curl_easy_strerror(cc));
        else if (os_errno == ECONNREFUSED || (os_errno == ENOENT && c->socket != NULL))
            /* the usual case of a stopped or restarting control plane: its
             * socket file is gone or nobody accepts on it */
            rc = lb_err_set(err, LB_ESYS, 0, "it is not running or is restarting (%s)",
                            strerror((int)os_errno));
        else if (os_errno != 0)
            rc = lb_err_set(err, LB_ESYS, 0, "%s", strerror((int)os_errno));
        else
            rc = lb_err_set(err, LB_ESYS, 0, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    if (ct != NULL && (resp->content_type = strdup(ct)) == NULL) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }
    if (body.data == NULL && (body.data = calloc(1, 1)) == NULL) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        goto out;
    }
    resp->body = body.data;
    resp->body_len = body.len;
    body.data = NULL;
out:
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    free(body.data);
    free(url);
    if (rc != LB_OK)
        client_resp_deinit(resp);
    return rc;
}
