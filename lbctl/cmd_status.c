/* lbctl/cmd_status.c: "lbctl status" and "lbctl dataplanes". */
#include "client.h"
#include "lbctl.h"
#include "output.h"

#include <stdio.h>

static const char status_help[] =
    "Usage: lbctl status [--json]\n"
    "\n"
    "Shows whether the control plane is up, the active config version, the\n"
    "snapshot generation and how many data planes have applied it\n"
    "(GET /health and GET /api/v1/dataplanes).\n"
    "With --json prints {\"health\": ..., \"dataplanes\": ...} as the server sent them.\n";

static const char dataplanes_help[] =
    "Usage: lbctl dataplanes [--json]\n"
    "\n"
    "Lists the data planes known to the control plane: the config version and\n"
    "snapshot generation each one applied, when it was last seen, whether it is\n"
    "in sync, the binary version, pid and start time of the process behind its\n"
    "latest report (\"-\" until it reports to a restarted control plane; a\n"
    "hand-over or an upgrade changes them), why it rejected a snapshot, if it\n"
    "did, and what it serves and why (SERVING: \"stable\", \"canary of version\n"
    "N\" during a staged rollout, or \"rejected: <reason>\") (GET\n"
    "/api/v1/dataplanes).\n";

int cmd_status(struct lbctl *ctx, int argc, char **argv)
{
    size_t npos;
    int rc = lbctl_parse(ctx, "status", status_help, argc, argv, NULL, 0, NULL, 0, &npos);
    if (rc != LBCTL_EXIT_OK)
        return rc < 0 ? LBCTL_EXIT_OK : rc;
    json_t *health = NULL, *dps = NULL;
    struct lbctl_req h = {.method = "GET", .path = "/health"};
    struct lbctl_req d = {.method = "GET", .path = "/api/v1/dataplanes"};
    if ((rc = lbctl_call(ctx, &h, &health, NULL)) != LBCTL_EXIT_OK)
        return rc;
    if ((rc = lbctl_call(ctx, &d, &dps, NULL)) != LBCTL_EXIT_OK) {
        json_decref(health);
        return rc;
    }
    if (ctx->json) {
        json_t *both = json_pack("{sOsO}", "health", health, "dataplanes", dps);
        rc = both && output_json(both, stdout) == 0 ? LBCTL_EXIT_OK
                                                    : lbctl_fail(LBCTL_EXIT_API, "out of memory");
        json_decref(both);
    } else {
        char status[128], version[32], gen[32];
        size_t total = 0, in_sync = 0, i;
        json_t *dp;
        json_array_foreach(json_object_get(dps, "dataplanes"), i, dp)
        {
            total++;
            if (json_is_true(json_object_get(dp, "in_sync")))
                in_sync++;
        }
        printf("control plane   %s (%s)\n",
               output_cell(json_object_get(health, "status"), status, sizeof(status)),
               client_target(ctx->client));
        printf("active version  %s\n",
               output_cell(json_object_get(health, "active_version"), version, sizeof(version)));
        printf("generation      %s\n",
               output_cell(json_object_get(health, "generation"), gen, sizeof(gen)));
        printf("data planes     %zu of %zu in sync\n", in_sync, total);
    }
    json_decref(health);
    json_decref(dps);
    return rc;
}

static const char *const dp_headers[] = {"NODE",   "VERSION", "GENERATION", "LAST SEEN", "IN SYNC",
                                         "BINARY", "PID",     "STARTED",    "REJECTED",  "SERVING"};

static int add_dp_row(struct table *t, const json_t *dp)
{
    char node[256], ver[32], gen[32], seen[32], sync[8], rej[256], bin[32], pid[16], start[32],
        serving[128];
    json_t *rg = json_object_get(dp, "rejected_generation");
    if (json_integer_value(rg) > 0) {
        char why[200];
        snprintf(rej, sizeof(rej), "generation %lld: %s", (long long)json_integer_value(rg),
                 output_cell(json_object_get(dp, "rejection_reason"), why, sizeof(why)));
    } else {
        snprintf(rej, sizeof(rej), "-");
    }
    const char *row[] = {
        output_cell(json_object_get(dp, "node_id"), node, sizeof(node)),
        output_cell(json_object_get(dp, "applied_version"), ver, sizeof(ver)),
        output_cell(json_object_get(dp, "applied_generation"), gen, sizeof(gen)),
        output_time(json_object_get(dp, "last_seen_ms"), seen, sizeof(seen)),
        output_cell(json_object_get(dp, "in_sync"), sync, sizeof(sync)),
        output_cell(json_object_get(dp, "binary_version"), bin, sizeof(bin)),
        output_cell(json_object_get(dp, "pid"), pid, sizeof(pid)),
        output_time(json_object_get(dp, "started_unix_ms"), start, sizeof(start)),
        rej,
        output_cell(json_object_get(dp, "serving"), serving, sizeof(serving)),
    };
    return table_add(t, row);
}

int cmd_dataplanes(struct lbctl *ctx, int argc, char **argv)
{
    json_t *root;
    int rc = lbctl_get(ctx, "dataplanes", dataplanes_help, argc, argv, "GET", "/api/v1/dataplanes",
                       &root);
    if (rc != LBCTL_EXIT_OK || root == NULL)
        return rc;
    /* SERVING only from a control plane that says it (staged rollouts) */
    size_t i, cols = 9;
    json_t *dp;
    json_array_foreach(json_object_get(root, "dataplanes"), i, dp)
    {
        if (json_object_get(dp, "serving") != NULL)
            cols = 10;
    }
    rc = lbctl_print_table(cols, dp_headers, json_object_get(root, "dataplanes"), add_dp_row);
    json_decref(root);
    return rc;
}
