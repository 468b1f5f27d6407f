/* lbctl/lbctl.h: what every verb of lbctl shares: the run context, exit
 * statuses, option parsing and the admin API call with its error reporting. */
#ifndef LBCTL_H
#define LBCTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct client;

enum lbctl_exit {
    LBCTL_EXIT_OK = 0,          /* success */
    LBCTL_EXIT_API = 1,         /* the API answered an error, or nonsense */
    LBCTL_EXIT_USAGE = 2,       /* bad command line */
    LBCTL_EXIT_UNREACHABLE = 3, /* no answer from the control plane */
};

/* One run of lbctl. */
struct lbctl {
    struct client *client; /* the admin API connection */
    bool json;             /* --json: print the server's JSON */
};

/* One option of a verb: "--name VALUE" or "--name=VALUE" when <has_arg>,
 * else "--name". Filled by lbctl_parse(). */
struct lbctl_opt {
    const char *name;  /* without the dashes */
    bool has_arg;      /* takes a value */
    const char *value; /* the value (borrowed from argv), or NULL */
    bool set;          /* seen on the command line */
};

/* A verb: <argv>[0] is its last word, options and operands follow. */
typedef int (*lbctl_cmd_fn)(struct lbctl *ctx, int argc, char **argv);

/* Parses <argv>[1..<argc>) of verb <verb> ("backends add") into <opts> and
 * the operands into <pos> (at most <maxpos>, count in <npos>). "--json" is
 * always accepted and sets ctx->json; "--" ends the options. When "--help"
 * is present, prints <help> on stdout and returns -1 (the verb then exits
 * 0). Returns LBCTL_EXIT_OK, -1, or LBCTL_EXIT_USAGE (message printed). */
int lbctl_parse(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
                struct lbctl_opt *opts, size_t nopts, char **pos, size_t maxpos, size_t *npos);

/* lbctl_parse() for a verb that takes exactly one operand, put in
 * *<operand>; without it, "lbctl: <verb>: <missing> ..." (LBCTL_EXIT_USAGE). */
int lbctl_parse_one(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
                    struct lbctl_opt *opts, size_t nopts, char **operand, const char *missing);

/* Prints "lbctl: <verb>: <message> (see 'lbctl <verb> --help')" on stderr
 * and returns LBCTL_EXIT_USAGE. */
int lbctl_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "lbctl: <message>" on stderr and returns <status>. */
int lbctl_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks a --if-match VERSION (digits, quotes allowed) and an X-Lb-Comment
 * (at most 500 bytes, no control characters) for <verb>. NULL passes.
 * Returns LBCTL_EXIT_OK or LBCTL_EXIT_USAGE (message printed). */
int lbctl_check_if_match(const char *verb, const char *v);
int lbctl_check_comment(const char *verb, const char *v);

/* Parses a decimal integer in [<min>, <max>] from option or operand <what>
 * of <verb>. Returns LBCTL_EXIT_OK or LBCTL_EXIT_USAGE (message printed). */
int lbctl_parse_int(const char *verb, const char *what, const char *s, long long min, long long max,
                    long long *out);

/* Sets <obj>.<key> to the string <value> given as option --<key> of <verb>.
 * Returns LBCTL_EXIT_OK, or LBCTL_EXIT_USAGE (message printed) when <value>
 * is not UTF-8 or memory runs out. */
int lbctl_set_str(const char *verb, json_t *obj, const char *key, const char *value);

/* A request as lbctl_call() sends it. Unset fields are NULL. */
struct lbctl_req {
    const char *method;
    const char *path;   /* percent-encoded */
    const json_t *json; /* JSON body, or NULL */
    const char *body;   /* raw body (when <json> is NULL) of <body_len> bytes */
    size_t body_len;
    const char *content_type; /* of <body> */
    const char *accept;       /* NULL: application/json */
    const char *if_match;     /* If-Match, or NULL */
    const char *comment;      /* X-Lb-Comment, or NULL */
};

/* Sends <r>. On a 2xx answer that is JSON (unless <r>->accept asks for
 * something else: then <text> receives the body), stores the parsed value
 * in <*out> (caller decrefs) and returns LBCTL_EXIT_OK. Otherwise prints one
 * line on stderr and returns LBCTL_EXIT_API (the server's error, "message
 * (code)", or an answer that is not JSON) or LBCTL_EXIT_UNREACHABLE.
 * <text> may be NULL when <r>->accept is NULL; it is malloc'd (caller frees). */
int lbctl_call(struct lbctl *ctx, const struct lbctl_req *r, json_t **out, char **text);

/* Prints <root> with output_json() and releases it. Returns LBCTL_EXIT_OK, or
 * LBCTL_EXIT_API when out of memory (message printed). */
int lbctl_emit_json(json_t *root);

/* lbctl_call() for an answer that is JSON, printed by the verb for people:
 * under --json the answer is printed here (lbctl_emit_json()) and *<out> is
 * NULL. Returns the exit status; *<out> (caller decrefs) is set only when
 * it is LBCTL_EXIT_OK and the verb has to print the answer itself. */
int lbctl_fetch(struct lbctl *ctx, const struct lbctl_req *r, json_t **out);

/* A verb without options or operands that sends <method> <path> and prints
 * the JSON answer: lbctl_parse(), then lbctl_fetch(). Returns the exit
 * status; *<out> is set only when the verb has to print the answer itself. */
int lbctl_get(struct lbctl *ctx, const char *verb, const char *help, int argc, char **argv,
              const char *method, const char *path, json_t **out);

/* Adds the table row of <item> to <t>; 0, or -1 when out of memory. */
struct table;
typedef int (*lbctl_row_fn)(struct table *t, const json_t *item);

/* Prints a table of <ncols> columns titled <headers> with a row per element
 * of the array <items> (none when it is not an array). Returns
 * LBCTL_EXIT_OK, or LBCTL_EXIT_API when out of memory (message printed). */
int lbctl_print_table(size_t ncols, const char *const *headers, const json_t *items,
                      lbctl_row_fn row);

/* The options of every write, --comment TEXT and --if-match VERSION, as two
 * consecutive elements of a verb's options; lbctl_check_write() checks them
 * (comment first). */
#define LBCTL_WRITE_OPTS                                                                           \
    {"comment", true, NULL, false},                                                                \
    {                                                                                              \
        "if-match", true, NULL, false                                                              \
    }
int lbctl_check_write(const char *verb, const struct lbctl_opt *w);

/* Percent-encodes <s> for a URL path segment; NULL when out of memory. */
char *lbctl_escape(struct lbctl *ctx, const char *s);

/* The verbs, one file per group. */
int cmd_status(struct lbctl *ctx, int argc, char **argv);
int cmd_dataplanes(struct lbctl *ctx, int argc, char **argv);
int cmd_backends(struct lbctl *ctx, int argc, char **argv);
int cmd_config(struct lbctl *ctx, int argc, char **argv);
int cmd_rollback(struct lbctl *ctx, int argc, char **argv);
int cmd_audit(struct lbctl *ctx, int argc, char **argv);
int cmd_rollout(struct lbctl *ctx, int argc, char **argv);

/* lbctl/common.c: "500ms", "10s", "2m", "1h" or seconds into *<ms>;
 * "5%" or 0.05 into *<out> (0..1). A usage error names --<opt>. */
int lbctl_parse_duration(const char *verb, const char *opt, const char *s, long long *ms);
int lbctl_parse_rate(const char *verb, const char *s, double *out);

/* The options --canary, --bake and --max-error-rate (<o>[0..3), in that
 * order) as the query of a staged write, "nodes=..&bake_ms=..&
 * max_error_rate=.." into <q> ("" without --canary); the exit status. */
#define LBCTL_CANARY_OPTS                                                                          \
    {"canary", true, NULL, false}, {"bake", true, NULL, false},                                    \
    {                                                                                              \
        "max-error-rate", true, NULL, false                                                        \
    }
int lbctl_canary_query(const char *verb, const struct lbctl_opt *o, char *q, size_t size);

#endif
