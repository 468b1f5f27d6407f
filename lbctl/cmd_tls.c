/* lbctl/cmd_tls.c: "lbctl tls list" (GET /api/v1/tls) and "lbctl tls reload"
 * (POST /api/v1/tls/reload). */
#include "cmd_tls.h"

#include "lbctl.h"
#include "output.h"

#include <stdio.h>
#include <string.h>

static const char tls_help[] =
    "Usage: lbctl tls list|reload [--json]\n"
    "\n"
    "  list     the certificates and backend CAs the data planes use\n"
    "  reload   check the certificate and CA files now and publish them\n"
    "\n"
    "'lbctl tls COMMAND --help' describes a command.\n";

static const char list_help[] =
    "Usage: lbctl tls list [--json]\n"
    "\n"
    "Lists the certificates served by each TLS frontend (GET /api/v1/tls): file,\n"
    "frontend, subject, SANs, SHA-256 fingerprint (first 16 hex digits), expiry\n"
    "date (local time) and status (ok, expiring within 30 days, expired). A second\n"
    "table lists the CA file of each https:// backend that names one: backend,\n"
    "file, and the subject, fingerprint, expiry and status of its first\n"
    "certificate. The last reload and the last refused reload follow the tables.\n"
    "With --json prints the server's JSON.\n";

static const char reload_help[] =
    "Usage: lbctl tls reload [--json]\n"
    "\n"
    "Makes the control plane re-read and validate every file of the ssl section\n"
    "and the CA file of every https:// backend now (POST /api/v1/tls/reload).\n"
    "Changed valid files are published as a new generation; unchanged files\n"
    "change nothing. When the new files are refused (key does not match, expired,\n"
    "not a certificate, unreadable...) the reason is printed, naming the file\n"
    "(and the backend), the old files keep serving and the exit status is 1.\n";

static const char *const headers[] = {"NAME",        "FRONTEND", "SUBJECT", "SANS",
                                      "FINGERPRINT", "EXPIRES",  "STATUS"};

static const char *const ca_headers[] = {"BACKEND",     "FILE",    "SUBJECT",
                                         "FINGERPRINT", "EXPIRES", "STATUS"};

/* A row of the "certificates" of GET /api/v1/tls. */
static int add_cert_row(struct table *t, const json_t *c)
{
    char name[256], fe[128], subject[256], fp[20], expires[32], status[16], sans[512] = "";
    size_t k, off = 0;
    json_t *san;
    json_array_foreach(json_object_get(c, "sans"), k, san)
    {
        if (off < sizeof(sans))
            off += (size_t)snprintf(sans + off, sizeof(sans) - off, "%s%s", k ? "," : "",
                                    json_string_value(san) ? json_string_value(san) : "");
    }
    output_cell(json_object_get(c, "fingerprint_sha256"), fp, sizeof(fp));
    fp[16] = '\0';
    const char *row[] = {
        output_cell(json_object_get(c, "name"), name, sizeof(name)),
        output_cell(json_object_get(c, "frontend"), fe, sizeof(fe)),
        output_cell(json_object_get(c, "subject"), subject, sizeof(subject)),
        off ? sans : "-",
        fp,
        output_time(json_object_get(c, "not_after"), expires, sizeof(expires)),
        output_cell(json_object_get(c, "status"), status, sizeof(status)),
    };
    return table_add(t, row);
}

/* A row of the "backend_cas" of GET /api/v1/tls. */
static int add_ca_row(struct table *t, const json_t *c)
{
    char backend[128], file[256], subject[256], fp[20], expires[32], status[16];
    output_cell(json_object_get(c, "fingerprint_sha256"), fp, sizeof(fp));
    fp[16] = '\0';
    const char *row[] = {
        output_cell(json_object_get(c, "backend"), backend, sizeof(backend)),
        output_cell(json_object_get(c, "file"), file, sizeof(file)),
        output_cell(json_object_get(c, "subject"), subject, sizeof(subject)),
        fp,
        output_time(json_object_get(c, "not_after"), expires, sizeof(expires)),
        output_cell(json_object_get(c, "status"), status, sizeof(status)),
    };
    return table_add(t, row);
}

/* The last reload and the last refused one, after the tables. */
static void print_reloads(const json_t *root)
{
    json_t *last = json_object_get(root, "last_reload");
    if (json_is_object(last)) {
        char at[32];
        printf("last reload: %s (generation %lld, %s)\n",
               output_time(json_object_get(last, "at_ms"), at, sizeof(at)),
               (long long)json_integer_value(json_object_get(last, "generation")),
               json_string_value(json_object_get(last, "detail")));
    }
    const char *err = json_string_value(json_object_get(root, "last_error"));
    if (err != NULL)
        printf("last error: %s\n", err);
}

static int tls_list(struct lbctl *ctx, int argc, char **argv)
{
    json_t *root;
    int rc = lbctl_get(ctx, "tls list", list_help, argc, argv, "GET", "/api/v1/tls", &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    const json_t *certs = json_object_get(root, "certificates");
    const json_t *cas = json_object_get(root, "backend_cas");
    if (json_array_size(certs) == 0)
        printf("no certificates: no frontend of the active config has tls: true\n");
    else
        rc = lbctl_print_table(7, headers, certs, add_cert_row);
    if (rc == LBCTL_EXIT_OK && json_array_size(cas) > 0) {
        printf("\n");
        rc = lbctl_print_table(6, ca_headers, cas, add_ca_row);
    }
    if (rc == LBCTL_EXIT_OK && json_array_size(certs) + json_array_size(cas) > 0)
        print_reloads(root);
    json_decref(root);
    return rc;
}

static int tls_reload(struct lbctl *ctx, int argc, char **argv)
{
    json_t *root;
    int rc =
        lbctl_get(ctx, "tls reload", reload_help, argc, argv, "POST", "/api/v1/tls/reload", &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    long long gen = (long long)json_integer_value(json_object_get(root, "generation"));
    if (json_is_true(json_object_get(root, "reloaded")))
        printf("reloaded: new certificates published as generation %lld\n", gen);
    else
        printf("unchanged: the certificate files are as served (generation %lld)\n", gen);
    json_decref(root);
    return LBCTL_EXIT_OK;
}

int cmd_tls(struct lbctl *ctx, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            return lbctl_usage("tls", "missing a command: list or reload");
        fputs(tls_help, stdout);
        return LBCTL_EXIT_OK;
    }
    if (strcmp(argv[1], "list") == 0)
        return tls_list(ctx, argc - 1, argv + 1);
    if (strcmp(argv[1], "reload") == 0)
        return tls_reload(ctx, argc - 1, argv + 1);
    return lbctl_usage("tls", "unknown command '%s' (list or reload)", argv[1]);
}
