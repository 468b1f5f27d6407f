/* controlplane/config.h: the config model. Imports config.yaml (libyaml) or its
 * JSON twin (jansson), validates it with file:line:column messages, exports it
 * back in canonical form, hashes it and diffs two versions semantically.
 *
 * Every key is described once, in the table of config_schema.c (path, type,
 * default, range or choices, where it lives); decoding (config_load.c),
 * export (config_export.c), copy, free and the diff (config_diff.c) walk it.
 * Rules between keys are checked after decoding (config_validate.c). Adding a
 * key: a field here, a row there, and the code that uses it.
 *
 * Nothing here keeps global state; every function may be called from any
 * thread on distinct objects. */
#ifndef LB_CONFIG_H
#define LB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;

enum config_backend_state {
    CONFIG_BACKEND_ACTIVE = 0,
    CONFIG_BACKEND_DRAINING,
    CONFIG_BACKEND_DISABLED,
};

enum config_send_proxy {
    CONFIG_SEND_PROXY_OFF = 0,
    CONFIG_SEND_PROXY_V1,
    CONFIG_SEND_PROXY_V2,
};

enum config_hc_type {
    CONFIG_HC_HTTP = 0,
    CONFIG_HC_TCP,
};

enum config_rl_algorithm {
    CONFIG_RL_TOKEN_BUCKET = 0,
    CONFIG_RL_SLIDING_WINDOW,
};

enum config_balancing_algorithm {
    CONFIG_BAL_ROUND_ROBIN = 0,
    CONFIG_BAL_WEIGHTED_ROUND_ROBIN,
    CONFIG_BAL_LEAST_REQUEST,
};

enum config_weights {
    CONFIG_WEIGHTS_STATIC = 0, /* the configured weights are published as they are */
    CONFIG_WEIGHTS_DYNAMIC,    /* the control plane adjusts them from reported latency/errors */
};

enum config_log_level {
    CONFIG_LOG_DEBUG = 0,
    CONFIG_LOG_INFO,
    CONFIG_LOG_WARN,
    CONFIG_LOG_ERROR,
};

/* backends[].maxQueue when not set. */
#define CONFIG_DEFAULT_MAX_QUEUE 1024

/* frontends[]: one listener. */
struct config_frontend {
    char *name;        /* unique; default "http-<port>" */
    char *address;     /* IPv4 or IPv6 literal; default "0.0.0.0" */
    uint32_t port;     /* 1..65535; unique per address */
    bool tls;          /* default false; true requires the ssl section */
    char **proxy_from; /* proxyProtocolFrom: CIDRs whose connections start with a PROXY
                        * header (v1 or v2); at most CONFIG_MAX_PROXY_FROM; none = off */
    size_t n_proxy_from;
    bool http2;                     /* TLS: ALPN offers h2 before http/1.1; default true */
    bool http2_cleartext;           /* plain: prior-knowledge HTTP/2 (h2c); default false */
    uint32_t http2_max_streams;     /* http2MaxConcurrentStreams: per connection; 100 */
    uint32_t http2_window;          /* http2InitialWindowSize: per stream, bytes; 65535 */
    uint32_t http2_max_header_list; /* http2MaxHeaderListSize: decoded bytes; 32768 */
};

/* backends[]: one upstream server. */
struct config_backend {
    char *id;                          /* unique, stable; default "<host>-<port>" from the URL */
    char *url;                         /* as written: http[s]://host[:port][/] */
    char *host;                        /* parsed from url: name or IP literal, without [] */
    uint32_t port;                     /* parsed from url; default 80 (http) or 443 (https) */
    bool https;                        /* scheme is https */
    char *ca_file;                     /* https only: CA bundle verifying the backend; "" = the
                                        * system store; relative to the config's directory */
    char *sni;                         /* https only: server name sent and verified; "" = the
                                        * URL's host when it is a name, none for IP literals */
    uint32_t weight;                   /* 1..1000; default 1 */
    enum config_backend_state state;   /* default active */
    uint32_t max_connections;          /* maxConnections: upstream connections open or being set
                                        * up, per data plane; 0..1000000, default 0 = unlimited */
    uint32_t max_queue;                /* maxQueue: requests waiting for a connection, per data
                                        * plane; 1..100000, default 1024 (parsed configs hold
                                        * it; 0 in one built in memory means the default) */
    enum config_send_proxy send_proxy; /* sendProxy: PROXY header on each new connection;
                                        * default off */
};

struct config_healthcheck {
    uint32_t interval_ms;     /* default 10s */
    uint32_t timeout_ms;      /* default 2s; must not exceed interval */
    char *path;               /* default "/health"; starts with '/' */
    uint32_t rise;            /* 1..100, default 2 */
    uint32_t fall;            /* 1..100, default 3 */
    enum config_hc_type type; /* default http */
    uint32_t expected_status; /* 0 (default) = any 2xx or 3xx, else 100..599 exactly */
    char *host;               /* Host header; "" = the backend's host */
    bool fail_open;           /* default true: all down = treat all as up */
};

/* ssl.certificates[]: extra certificates chosen by SNI. */
struct config_certificate {
    char *cert_file;
    char *key_file;
    char **sni; /* server names; n_sni of them */
    size_t n_sni;
};

struct config_ssl {
    bool present;    /* the section exists; every other field is unset if not */
    char *cert_file; /* default certificate; "" if only certificates[] is used */
    char *key_file;
    char *ca_file;        /* client CA for mutual TLS; "" = none */
    char *crl_file;       /* "" = none */
    uint32_t client_auth; /* 0..4, values of lb.v1.ClientAuth; default 0 */
    char *min_version;    /* "TLSv1.2" (default) or "TLSv1.3" */
    char *ciphers;        /* TLS 1.2 cipher list; "" = secure default */
    char *ciphersuites;   /* TLS 1.3 suites; "" = OpenSSL default */
    char *groups;         /* key exchange groups; "" = X25519:P-256:P-384 */
    struct config_certificate *certificates;
    size_t n_certificates;
    /* verify: checks of client certificates beyond the chain; an empty list
     * checks nothing. */
    char **allowed_cn; /* verify.allowedCN: accepted subject CNs */
    size_t n_allowed_cn;
    char **allowed_san_dns; /* verify.allowedSanDNS */
    size_t n_allowed_san_dns;
    char **allowed_san_uri; /* verify.allowedSanURI */
    size_t n_allowed_san_uri;
    char **spki_pins; /* verify.spkiPins as written: 64 hex digits or base64 of 32 bytes
                       * (SHA-256 of the SubjectPublicKeyInfo), each checked at parse */
    size_t n_spki_pins;
    uint32_t ticket_rotation_ms; /* ticketRotation: session ticket key lifetime; at least
                                  * 1s, default 1h */
};

struct config_ratelimit {
    bool enabled;                       /* default false */
    uint32_t rate;                      /* requests per second; must be > 0 when enabled */
    uint32_t burst;                     /* default 0 = same as rate */
    enum config_rl_algorithm algorithm; /* default token_bucket */
    bool per_client;                    /* default true */
    bool global;                        /* default false */
    uint32_t ipv4_prefix;               /* 1..32, default 32: clients keyed by this prefix */
    uint32_t ipv6_prefix;               /* 1..128, default 128 */
    uint32_t max_keys;                  /* default 100000 */
    char **trusted_proxies;             /* CIDRs ("10.0.0.0/8", "::1") whose X-Forwarded-For
                                         * is honoured; at most 64; n_trusted_proxies of them */
    size_t n_trusted_proxies;
    bool headers_on_allowed; /* default true: RateLimit headers on allowed answers */
};

struct config_circuitbreaker {
    bool enabled;            /* default: true when the section exists, else false */
    uint32_t threshold;      /* 1..1000, default 5 */
    uint32_t timeout_ms;     /* default 30s */
    uint32_t max_half_open;  /* 1..1000, default 3 */
    uint32_t max_timeout_ms; /* default 5m; not below timeout */
    bool ignore_5xx;         /* default false: a 5xx answer counts as a failure */
};

/* retries: (optional section) retries of a failed request on other backends. */
struct config_retries {
    bool enabled;             /* default true; false = no retries */
    uint32_t max;             /* 0..5, default 2; 0 = no retries */
    uint32_t budget_percent;  /* 1..100, default 20: retries in flight per active requests */
    uint32_t budget_min;      /* 1..1000, default 3: retries always allowed in flight */
    uint32_t backoff_base_ms; /* default 25ms (at least 1ms) */
    uint32_t backoff_cap_ms;  /* default 250ms; not below backoffBase */
};

/* ejection: (optional section) passive ejection of backends whose connects
 * fail, by the data plane; the control plane's health checks bring them back. */
struct config_ejection {
    bool enabled;                   /* default true */
    uint32_t probe_interval_ms;     /* probeInterval: first probe back-off; default 1s, 10ms..1h */
    uint32_t max_probe_interval_ms; /* maxProbeInterval: back-off cap; default 30s, at most 1h,
                                     * not below probeInterval */
};

struct config_balancing {
    enum config_balancing_algorithm algorithm; /* default weighted_round_robin */
    uint32_t slow_start_ms;                    /* default 30s; 0 = off */
    enum config_weights weights;               /* default static */
};

struct config_timeouts {          /* all > 0 */
    uint32_t client_header_ms;    /* default 10s */
    uint32_t client_body_ms;      /* default 30s */
    uint32_t keep_alive_ms;       /* default 60s */
    uint32_t upstream_connect_ms; /* default 3s */
    uint32_t upstream_header_ms;  /* default 30s */
    uint32_t upstream_idle_ms;    /* default 60s */
    uint32_t drain_ms;            /* default 30s */
    uint32_t queue_ms;            /* queue: wait in a backend's queue, then 503; default 5s,
                                   * at most 10m */
    uint32_t tunnel_idle_ms;      /* tunnelIdle: an Upgrade tunnel with no byte either way is
                                   * closed; default 1h, 1s..24h */
};

struct config_limits {
    uint32_t max_request_line; /* 64..1048576, default 8192 */
    uint32_t max_header_bytes; /* 256..16777216, default 32768 */
    uint32_t max_headers;      /* 1..10000, default 100 */
    uint32_t max_connections;  /* 1..1000000, default 10000 */
    uint32_t max_tunnels;      /* open Upgrade tunnels per worker; 1..1000000, default 10000 */
};

struct config_logging {
    enum config_log_level level; /* default info */
    char *format;                /* "json" (the only format) */
    bool access_log;             /* default true */
};

struct config_metrics {
    bool enabled;  /* default false */
    char *address; /* IP literal; default "127.0.0.1" */
    uint32_t port; /* 1..65535; default 9090 */
};

/* The whole model. Every string is owned by the config (never NULL once parsed
 * or after config_init()); release with config_free(). */
struct config {
    struct config_frontend *frontends; /* at least one */
    size_t n_frontends;
    struct config_backend *backends; /* at least one */
    size_t n_backends;
    struct config_healthcheck healthcheck;
    struct config_ssl ssl;
    struct config_ratelimit ratelimit;
    struct config_circuitbreaker circuitbreaker;
    struct config_retries retries;
    struct config_ejection ejection;
    struct config_balancing balancing;
    struct config_timeouts timeouts;
    struct config_limits limits;
    struct config_logging logging;
    struct config_metrics metrics;
};

/* Parses and validates YAML text <yaml> (<len> bytes). <name> is the file name
 * used in messages ("config.yaml"); NULL means "config". Relative ssl file
 * paths are checked against <base_dir> (NULL = the current directory).
 * Returns LB_OK and a config the caller frees with config_free(), or
 * LB_EINVAL with <err> like "config.yaml:7:12: backends[1].weight: 1001 is out
 * of range (1..1000)." (first error wins), or LB_ENOMEM. */
int config_parse_yaml(const char *yaml, size_t len, const char *name, const char *base_dir,
                      struct config **out, struct lb_err *err);

/* Reads the file at <path> and parses it as config_parse_yaml() does, with the
 * file's base name in messages. <base_dir> NULL means the file's directory.
 * LB_ESYS when the file cannot be read. */
int config_load_yaml(const char *path, const char *base_dir, struct config **out,
                     struct lb_err *err);

/* Parses and validates JSON text (same model and keys as the YAML). Messages
 * name the JSON path instead of a line: "backends[1].weight: ...". JSON syntax
 * errors carry jansson's line:column. */
int config_parse_json(const char *json, size_t len, const char *base_dir, struct config **out,
                      struct lb_err *err);

/* Parses <text> as config_parse_json() (<json>) or config_parse_yaml() (with
 * <name> in messages) do, and also reads every ssl file and checks it as
 * tlscheck does at <now_ms> (Unix ms): each certFile/keyFile pair parses,
 * matches and is within its dates (chained to caFile when that names the
 * issuer), caFile and crlFile parse. The error points at the file key at
 * fault: "config.yaml:7:12: ssl.keyFile: /etc/lb/key.pem does not match
 * ssl.certFile /etc/lb/cert.pem". For configs being applied; stored versions
 * use the plain parsers so that an expired certificate never stops a start.
 * LB_OK, LB_EINVAL or LB_ENOMEM. */
int config_parse_checked(const char *text, size_t len, bool json, const char *name,
                         const char *base_dir, int64_t now_ms, struct config **out,
                         struct lb_err *err);

/* Validates a config built or edited in memory with the same rules as the
 * parsers (messages name the path: "backends[1].weight: 0 is out of range
 * (1..1000)."), directly, without a round trip through text. It reads as its
 * export would: an empty frontend name or backend id gets its default for
 * the check, and so on (see config_normalize()). <cfg> is not changed.
 * LB_OK, LB_EINVAL or LB_ENOMEM. */
int config_validate(const struct config *cfg, const char *base_dir, struct lb_err *err);

/* Completes a config built or edited in memory as parsing its export would,
 * and validates it as config_validate() does: NULL strings become "", an
 * empty frontend name becomes "http-<port>" and an empty backend id
 * "<host>-<port>", an empty frontend address "0.0.0.0", a maxQueue of 0 the
 * default, an ssl section not present its defaults; each backend's host,
 * port and https are set from its url. On error <cfg> stays whole (free it
 * with config_free()) but may be half completed. LB_OK, LB_EINVAL or
 * LB_ENOMEM. */
int config_normalize(struct config *cfg, const char *base_dir, struct lb_err *err);

/* Canonical YAML: every key, defaults filled in, fixed order, strings double
 * quoted, durations like "1m30s". Byte-stable; parsing it gives an equal
 * config. Returns a NUL-terminated string the caller frees with free(), and
 * its length in <len> (may be NULL); NULL on no memory (err filled). */
char *config_export_yaml(const struct config *cfg, size_t *len, struct lb_err *err);

/* The same canonical content as compact JSON with sorted-as-canonical keys.
 * Caller frees with free(). */
char *config_export_json(const struct config *cfg, struct lb_err *err);

/* SHA-256 of the canonical YAML export as 64 lowercase hex digits plus NUL in
 * <hex>. LB_OK or LB_ENOMEM. */
int config_hash(const struct config *cfg, char hex[65], struct lb_err *err);

/* The same from an export already made: <yaml> is config_export_yaml()'s
 * text of <len> bytes. */
int config_hash_yaml(const char *yaml, size_t len, char hex[65], struct lb_err *err);

/* Deep equality of two configs (every field). */
bool config_equal(const struct config *a, const struct config *b);

/* Deep copy; NULL on no memory. Caller frees with config_free(). */
struct config *config_dup(const struct config *cfg);

/* A config with every default and no frontend or backend (not valid as is).
 * NULL on no memory. */
struct config *config_new_default(void);

/* Frees <cfg> and all it owns; NULL is a no-op. */
void config_free(struct config *cfg);

/* Parses a Go-like duration: "10s", "500ms", "1m", "1h", "1m30s". A plain
 * integer is refused (a unit is needed). At most 49 days (fits in ms as
 * uint32). Returns LB_OK or LB_EINVAL with a one-sentence reason. */
int config_duration_parse(const char *text, uint32_t *ms, struct lb_err *err);

/* Canonical text of <ms> ("1m30s", "500ms", "0s") in <buf> (32 bytes is
 * enough). Returns <buf>. */
char *config_duration_format(uint32_t ms, char *buf, size_t size);

/* Names used by the YAML/JSON form. */
const char *config_backend_state_name(enum config_backend_state s);
const char *config_send_proxy_name(enum config_send_proxy v);
const char *config_balancing_algorithm_name(enum config_balancing_algorithm a);
const char *config_weights_name(enum config_weights w);

/* ---- semantic diff ---------------------------------------------------- */

enum config_change_kind {
    CONFIG_CHANGE_ADDED = 0,
    CONFIG_CHANGE_REMOVED,
    CONFIG_CHANGE_CHANGED,
};

/* One difference. <path> is a stable machine path such as
 * "backends[api-1].weight", "frontends[http-8080]" or "ratelimit.rate".
 * <subject> names the list item ("backend api-1", "frontend web") or is NULL
 * for a top-level section field; <field> is the field inside the subject or
 * the dotted section path ("weight", "ratelimit.rate"), NULL when a whole
 * item or section was added or removed. <old_value>/<new_value> are the
 * canonical scalar texts; for an added item <new_value> summarises it
 * ("http://10.0.0.3:80, weight 1") and <old_value> is NULL; the reverse for a
 * removed one. */
struct config_change {
    enum config_change_kind kind;
    char *path;
    char *subject;
    char *field;
    char *old_value;
    char *new_value;
};

struct config_diff {
    struct config_change *changes; /* frontends, backends, then sections */
    size_t n;
};

/* Computes what changed from <a> to <b>. Returns NULL on no memory; an empty
 * diff (n == 0) when equal. Caller frees with config_diff_free(). */
struct config_diff *config_diff_new(const struct config *a, const struct config *b,
                                    struct lb_err *err);

void config_diff_free(struct config_diff *d);

/* One line per change, each ending in '\n': "backend api-1: weight 5 -> 3",
 * "backend b3 added (http://10.0.0.3:80, weight 1)", "frontend http-8080
 * removed", "ratelimit.rate: 100 -> 200". "" for an empty diff. Caller frees;
 * NULL on no memory. */
char *config_diff_text(const struct config_diff *d);

/* JSON array of {"kind":"added|removed|changed","path":...,"subject":...,
 * "field":...,"old":...,"new":...} (absent members are null). Caller frees;
 * NULL on no memory. */
char *config_diff_json(const struct config_diff *d);

#endif
