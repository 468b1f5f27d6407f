/* tests/e2e/e2e.h: end-to-end harness: real lb-backend and lb-dataplane
 * processes on free 127.0.0.1 ports, raw HTTP clients, metrics scraping.
 *
 * Every wait is bounded by e2e_timeout_ms() (env LB_TEST_TIMEOUT_MS, default
 * 10000). A world (struct e2e) owns a temp dir holding the snapshot and one
 * log file per process (b0.log ... lb.log); under e2e_run() it lives in the
 * run's /tmp/lb-e2e-XXXXXX, removed when the run ends. Set LB_E2E_KEEP=1 to
 * keep them all. Processes are started with PR_SET_PDEATHSIG(SIGKILL), so a
 * failing ck_assert (which ends the forked test without teardown) leaves
 * nothing running; an atexit() hook also stops live worlds on exit().
 *
 * Single-threaded: call everything from the test's thread. */
#ifndef E2E_H
#define E2E_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lb.pb-c.h"

#define E2E_MAX_BACKENDS 16

struct e2e;

/* Called on the snapshot before it is written, to change timeouts, limits,
 * logging... Every sub-message of <snap> (timeouts, limits, logging, metrics,
 * balancing, retries, ejection) is already allocated and owned by the
 * harness; strings set by the callback must outlive e2e_stop() (use
 * literals). */
typedef void (*e2e_tweak_fn)(Lb__V1__Snapshot *snap, void *arg);

struct e2e_opts {
    unsigned backends;           /* 1..E2E_MAX_BACKENDS lb-backend processes b0.. */
    const uint32_t *weights;     /* NULL: all 1; else <backends> entries */
    Lb__V1__Algorithm algorithm; /* LB__V1__ALGORITHM__ROUND_ROBIN, ... */
    unsigned workers;            /* lb-dataplane --workers; 0 = 2 */
    e2e_tweak_fn tweak;          /* NULL or called on the snapshot */
    void *tweak_arg;             /* passed to <tweak> */
    char *const *backend_args;   /* NULL or more lb-backend arguments for every
                                  * backend, NULL-terminated ("--threads", "1",
                                  * ...); kept: must outlive e2e_stop() */
    bool backend_log;            /* each backend logs its requests (lb-backend
                                  * --log) into the world's file b<i>.requests */
    char *const *dp_args;        /* NULL or more lb-dataplane arguments,
                                  * NULL-terminated; kept: must outlive e2e_stop() */
};

/* A raw HTTP response read by e2e_conn_read(). All strings NUL-terminated. */
struct e2e_resp {
    int status;      /* 100..599 */
    char *head;      /* status line and header lines as received */
    size_t head_len; /* bytes in <head> */
    char *body;      /* decoded body (chunked framing removed) */
    size_t body_len; /* bytes in <body> */
    bool closed;     /* the server closed after this response */
};

/* A client connection to 127.0.0.1. */
struct e2e_conn;

/* ---- time, ports, processes ------------------------------------------- */

/* LB_TEST_TIMEOUT_MS from the environment, or 10000. */
uint64_t e2e_timeout_ms(void);

/* <ms> scaled like every wait: times LB_TEST_TIMEOUT_MS / 10 s, at least
 * once, so that bounds stretch with sanitizers and slow machines. */
uint64_t e2e_scaled_ms(uint64_t ms);

/* Monotonic milliseconds. */
uint64_t e2e_now_ms(void);

/* Sleeps <ms> milliseconds. Only where the passing time is itself under test
 * (outlasting a timeout, measuring what a process does meanwhile); say so at
 * the call. To wait for something, use e2e_wait_until() or a poll loop
 * paced by e2e_poll_pause(). */
void e2e_sleep_ms(unsigned ms);

/* The pause between two polls of a condition in a loop bounded by a
 * deadline: it spaces the polls, it is not a wait by itself. */
void e2e_poll_pause(unsigned ms);

/* Polls <cond>(<arg>) until it returns true or <ms> pass (pausing a few ms
 * between polls). Returns the last result. */
bool e2e_wait_until(bool (*cond)(void *arg), void *arg, uint64_t ms);

/* Binds 127.0.0.1:0, reads the port, closes. Returns the port or 0 on failure. */
unsigned e2e_free_port(void);

/* Starts argv[0] (a path) with stdin from /dev/null and stdout+stderr
 * appended to <log_path>. Returns the pid, or -1 (fork failed). */
pid_t e2e_spawn(char *const argv[], const char *log_path);

/* Sends SIGTERM to <pid>, waits up to e2e_timeout_ms(), then SIGKILL and
 * waits again. Returns the waitpid() status, or -1 if <pid> was not a child. */
int e2e_kill(pid_t pid);

/* Waits up to <ms> for <pid> to exit. Returns true and fills <status> (may be
 * NULL) when it did. */
bool e2e_wait_exit(pid_t pid, uint64_t ms, int *status);

/* ---- worlds -------------------------------------------------------------- */

/* Starts <o->backends> backends, writes the snapshot, starts lb-dataplane and
 * waits until its frontend accepts connections. Fails the test (ck_abort)
 * when something does not start. Release with e2e_stop(). */
struct e2e *e2e_start_opts(const struct e2e_opts *o);

/* e2e_start_opts() with round robin, weights 1, 2 workers, no tweak. */
struct e2e *e2e_start(unsigned backends);

/* Stops every process <t> started (by pid), removes its temp dir, frees <t>
 * and every string e2e_get() returned. NULL is a no-op. */
void e2e_stop(struct e2e *t);

/* Ports: the frontend, the metrics endpoint, backend <i>. */
unsigned e2e_lb_port(const struct e2e *t);
unsigned e2e_metrics_port(const struct e2e *t);
unsigned e2e_backend_port(const struct e2e *t, unsigned i);

/* pid of lb-dataplane, or -1 once e2e_lb_wait_exit() reaped it. */
pid_t e2e_lb_pid(const struct e2e *t);

/* The value of <name> in the environment <pid> was started with (after its
 * last exec), into <out>; false when it has none or cannot be read. */
bool e2e_proc_env(pid_t pid, const char *name, char *out, size_t outsz);

/* The value of <key> ("Name", "SigBlk", ...) in /proc/<pid>/status, blanks
 * trimmed, into <out>; false when there is none or it cannot be read. */
bool e2e_proc_status(pid_t pid, const char *key, char *out, size_t outsz);

/* Fails the test unless <pid> blocks each of the <n> signals <sigs> and has
 * no handler for it: a daemon whose loop reads its signals from a signalfd
 * (nothing runs asynchronously; none lost to TSan's deferred delivery). */
void e2e_assert_signals_by_fd(pid_t pid, const int *sigs, size_t n);

/* Path of the world's file <name> (in its temp dir), into <out>. */
void e2e_path(const struct e2e *t, const char *name, char *out, size_t outsz);

/* Stops backend <i> by pid (SIGKILL: abrupt). */
void e2e_kill_backend(struct e2e *t, unsigned i);

/* pid of backend <i>, or -1 once stopped. A test may signal it (lb-backend:
 * SIGUSR1 closes its port and connections); e2e_kill_backend() reaps it. */
pid_t e2e_backend_pid(const struct e2e *t, unsigned i);

/* Starts backend <i> again on its port, with the arguments it had (the old
 * process is killed and reaped first if it still runs; its log moves to
 * b<i>.log.old). Fails the test when it does not come up. */
void e2e_restart_backend(struct e2e *t, unsigned i);

/* Sends SIGTERM to lb-dataplane and waits up to <ms> for it to exit. Returns
 * true and fills <status> when it did (the pid is then reaped). */
bool e2e_lb_term(struct e2e *t, uint64_t ms, int *status);

/* Waits up to <ms> for lb-dataplane to exit, sending nothing (a test that
 * signalled it itself: a second SIGTERM would end a drain at once). Returns
 * true and fills <status> (may be NULL) when it did (the pid is then
 * reaped). */
bool e2e_lb_wait_exit(struct e2e *t, uint64_t ms, int *status);

/* ---- clients -------------------------------------------------------------- */

/* Connects to 127.0.0.1:<port> (non-blocking socket, TCP_NODELAY).
 * Returns NULL on failure. */
struct e2e_conn *e2e_connect(unsigned port);

/* The same to <ip> (an IPv4 address: 127.0.0.3 stands for another host). */
struct e2e_conn *e2e_connect_host(const char *ip, unsigned port);

/* Closes and frees <c>; NULL is a no-op. */
void e2e_conn_close(struct e2e_conn *c);

/* Sends all <len> bytes within the timeout. Returns 0, or -1 on error. */
int e2e_conn_send(struct e2e_conn *c, const void *buf, size_t len);

/* Reads one response. <head_req>: the request was HEAD (no body follows).
 * A 1xx is returned as a response of its own (read again for the final one).
 * Returns 0, or -1 on timeout, malformed response or close before a full
 * response. <r> is filled on 0; release with e2e_resp_free(). */
int e2e_conn_read(struct e2e_conn *c, struct e2e_resp *r, bool head_req);

/* Reads until the peer closes or <ms> pass. Returns the bytes (NUL
 * terminated, caller frees) and their count in <len>; sets <closed>
 * (may be NULL) when the peer closed. */
char *e2e_conn_read_all(struct e2e_conn *c, uint64_t ms, size_t *len, bool *closed);

/* True if the peer closed the connection (EOF or reset) within <ms>, with
 * nothing left unread. */
bool e2e_conn_is_closed(struct e2e_conn *c, uint64_t ms);

void e2e_resp_free(struct e2e_resp *r);

/* Copies the value of the first header <name> (case-insensitive) into <out>;
 * returns false if absent. */
bool e2e_resp_header(const struct e2e_resp *r, const char *name, char *out, size_t outsz);

/* GET <path> on the world's keep-alive client connection to the frontend
 * (reconnecting if the server closed it). Returns the body (owned by <t>,
 * valid until e2e_stop()), or NULL on failure or a non-2xx status. */
const char *e2e_get(struct e2e *t, const char *path);

/* Sends <method> <path> with <extra> header lines ("Name: v\r\n"..., may be
 * NULL) and <body> (Content-Length framed when <body_len> > 0) on a new
 * connection to <port>, reads the response into <r>. Returns 0 or -1. */
int e2e_request(unsigned port, const char *method, const char *path, const char *extra,
                const void *body, size_t body_len, struct e2e_resp *r);

/* The same to <ip>:<port> (Host: names it). */
int e2e_request_host(const char *ip, unsigned port, const char *method, const char *path,
                     const char *extra, const void *body, size_t body_len, struct e2e_resp *r);

/* Sends <req> raw on a new connection to <port> and reads until the server
 * closes or <ms> pass. Returns the bytes (caller frees), count in <len>,
 * <closed> (may be NULL) whether the server closed within <ms>. */
char *e2e_raw(unsigned port, const void *req, size_t req_len, uint64_t ms, size_t *len,
              bool *closed);

/* ---- backends and metrics -------------------------------------------------- */

/* The field <key> ("connections", "requests", "health", "others") of backend <i>'s /stats,
 * asked directly (this adds one request). Returns -1 on failure. */
long e2e_backend_stat(struct e2e *t, unsigned i, const char *key);

/* GET /metrics from the world's metrics port. Caller frees; NULL on failure. */
char *e2e_scrape(struct e2e *t);

/* GET /metrics from 127.0.0.1:<port> (a process the test started itself).
 * Caller frees; NULL on failure. */
char *e2e_scrape_port(unsigned port);

/* GET /metrics from <ip>:<port>. Caller frees; NULL on failure. */
char *e2e_scrape_host(const char *ip, unsigned port);

/* Polls metric <name> (<labels> as in e2e_metric()) on the world's metrics
 * port until its value is at least <min>, up to e2e_timeout_ms(). Returns the
 * last value seen (NAN when never scraped or absent). */
double e2e_wait_metric(struct e2e *t, const char *name, const char *labels, double min);

/* Lines of the world's file <name> (e.g. "lb.log") containing <needle>; 0
 * when the file does not exist. */
unsigned e2e_log_count(const struct e2e *t, const char *name, const char *needle);

/* Polls e2e_log_count() until it is at least <n>, up to e2e_timeout_ms().
 * Returns whether it got there. */
bool e2e_wait_log(const struct e2e *t, const char *name, const char *needle, unsigned n);

/* Sums the samples of metric <name> in Prometheus text <text> whose label set
 * contains every comma-separated pair of <labels> (e.g. "backend=\"b0\"",
 * NULL = any). Returns NAN if no sample matched. */
double e2e_metric(const char *text, const char *name, const char *labels);

/* ---- checks ------------------------------------------------------------- */

/* Byte <i> of lb-backend's /bytes pattern. */
unsigned char e2e_pattern_byte(uint64_t i);

/* FNV-1a 64 of <len> bytes as lb-backend's /hash answers it (16 hex). */
void e2e_fnv1a_hex(const void *buf, size_t len, char out[17]);

/* A TCase named <name> with a timeout scaled for process start-up. */
TCase *e2e_tcase(const char *name);

/* Runs <s> and returns the exit status for main(). */
int e2e_run(Suite *s);

/* ---- certificates ------------------------------------------------------------ */

/* Makes the test certificates (tests/unit/dataplane/tls/make-certs.sh:
 * srv-rsa.pem/.key for a.example.com, client certificates, CAs) in a new
 * /tmp directory whose path goes into <dir>. Fails the test when it cannot. */
void e2e_certs_make(char *dir, size_t size);

/* Removes the directory e2e_certs_make() made. */
void e2e_certs_remove(const char *dir);

/* The bytes of <dir>/<name> (at most 64 KiB), for a snapshot's PEM fields;
 * the caller frees .data. Fails the test when the file cannot be read. */
ProtobufCBinaryData e2e_file_bytes(const char *dir, const char *name);

/* A frontend's TLS settings with one certificate, <name>.pem/.key of a fresh
 * e2e_certs_make() directory: point a snapshot frontend's tls at &x->tls. */
struct e2e_tls1 {
    char dir[256];
    Lb__V1__Tls tls;
    Lb__V1__Certificate cert;
    Lb__V1__Certificate *certp;
};

void e2e_tls1_init(struct e2e_tls1 *x, const char *name);

/* Frees the PEM bytes and removes the directory. */
void e2e_tls1_free(struct e2e_tls1 *x);

/* ---- commands -------------------------------------------------------------- */

/* What a finished child process printed and how it ended. */
struct e2e_cmd {
    int status; /* exit status, or -1 when it ended on a signal or was killed */
    char *out;  /* its stdout, NUL-terminated (at most 256 KiB kept) */
    char *err;  /* its stderr, NUL-terminated (at most 64 KiB kept) */
};

/* Runs argv[0] (a path) with <env> ("K=V" strings, NULL-terminated, may be
 * NULL) added to the environment and stdin from /dev/null; collects both
 * outputs until it exits. Kills it and fails the test (ck_abort) when it runs
 * longer than e2e_timeout_ms(). Returns r->status; release with
 * e2e_cmd_free(). */
int e2e_cmd_run(char *const argv[], const char *const *env, struct e2e_cmd *r);

/* Frees the outputs of <r>; safe to call twice. */
void e2e_cmd_free(struct e2e_cmd *r);

/* The integer value of the first "<key>": in JSON text <json> (null counts as
 * absent). Returns false when absent or not a number. */
bool e2e_json_long(const char *json, const char *key, long *out);

/* The string value of the first "<key>": in JSON text <json> (NULL counts
 * as empty) copied into <out> of <size> bytes, cut to fit; "" when absent,
 * null or not a string. Returns <out>. */
const char *e2e_json_str(const char *json, const char *key, char *out, size_t size);

/* ---- control-plane worlds ---------------------------------------------------- */

#define E2E_MAX_DATAPLANES 4

/* A world of lb-controlplane (temp SQLite db, bootstrap config.yaml written
 * at start on free ports), lb-dataplane processes dp0.. following it over
 * ipc://, and lb-backend processes b0... Every file (config.yaml, lb.db, the
 * runtime dir run/, the state dirs dp<i>/, the logs cp.log, dp<i>.log,
 * b<i>.log, tokens) lives in the world's temp dir, see e2e_cp_path(). */
struct e2e_cp;

struct e2e_cp_opts {
    unsigned backends;       /* lb-backend processes b0.., 1..E2E_MAX_BACKENDS */
    unsigned configured;     /* the first <configured> are in config.yaml; 0 = all */
    const uint32_t *weights; /* NULL: all 1; else <backends> entries */
    const char *algorithm;   /* balancing.algorithm; NULL = "weighted_round_robin" */
    bool no_metrics;         /* metrics.enabled false (data planes sharing a host) */
    bool admin_tcp;          /* also --admin-listen 127.0.0.1:<free port> with the
                              * tokens file "tokens" (mode 0600) holding "admin" (rw)
                              * and "viewer" (ro); their tokens alone in the files
                              * "rw.token" and "ro.token"; plain HTTP
                              * (--admin-insecure-http) unless admin_tls */
    bool admin_tls;          /* with admin_tcp: HTTPS with the certificates of
                              * make-certs.sh in "certs/" (srv-ip.pem for 127.0.0.1,
                              * client CA ca.pem); the tokens file also maps the
                              * certificate client1.example.org to rw and
                              * viewer1.example.org (certs/viewer.pem) to ro */
    unsigned dataplanes;     /* data planes started and awaited (snapshot applied) */
    unsigned workers;        /* --workers of each data plane; 0 = 2 */
    const char *control;     /* NULL: the feed on ipc://<dir>/run; else the --control
                              * base both daemons get ("tcp://127.0.0.2:7000"); kept */
    char *const *cp_args;    /* NULL or more lb-controlplane arguments (at most 8),
                              * NULL-terminated; kept: must outlive e2e_cp_stop() */
    char *const *dp_args;    /* the same for every data plane */
    /* more arguments of data plane <i> alone, after dp_args (NULL or
     * NULL-terminated; kept), e.g. its own --bind-address, --metrics-listen */
    char *const *dp_args_each[E2E_MAX_DATAPLANES];
    const char *frontend_address; /* the frontend's address; NULL: 127.0.0.1 */
};

/* The world's file <name> (at most 64 KiB of it; caller frees); fails the
 * test when it cannot be read. */
char *e2e_cp_read(struct e2e_cp *w, const char *name);

/* Client load on the world's frontend for <seconds>: <clients> keep-alive
 * clients (lb-faultload, output in the world's "ka.out") and a child
 * opening one connection per request (counts in "pr.out"). */
struct e2e_load {
    pid_t ka, pr;
    uint64_t ms;
};
struct e2e_load e2e_cp_load_start(struct e2e_cp *w, unsigned clients, unsigned seconds);

/* Waits for both clients of <l> and reads what they counted. */
struct e2e_load_counts {
    long ka_total, ka_failed; /* keep-alive requests, and those that failed */
    long pr_ok, pr_failed;    /* per-connection requests answered 200, and not */
};
void e2e_cp_load_end(struct e2e_cp *w, struct e2e_load *l, struct e2e_load_counts *out);

/* A feed base "tcp://<host>:P" (into <out>, <n> bytes) whose ports P, P+1
 * and P+2 (the control plane's PUB, REP and PULL) are free on <host>;
 * returns P. */
unsigned e2e_feed_base(const char *host, char *out, size_t n);

/* Starts the backends, writes config.yaml, starts the control plane (waits
 * until its admin socket answers) and <o->dataplanes> data planes (waits until
 * each applied a snapshot). Fails the test (ck_abort) when something does not
 * start. Release with e2e_cp_stop(). */
struct e2e_cp *e2e_cp_start(const struct e2e_cp_opts *o);

/* Stops every process of <w> by pid, removes its temp dir, frees <w>. Fails
 * the test when a data plane or the control plane did not exit 0 on SIGTERM.
 * NULL is a no-op. */
void e2e_cp_stop(struct e2e_cp *w);

/* (Re)starts the control plane on the world's db and waits until its admin
 * socket answers; fails the test otherwise. */
void e2e_cp_controlplane_start(struct e2e_cp *w);

/* Sends <sig> to the control plane and reaps it; returns its wait status, or
 * -1 when it was not running. */
int e2e_cp_controlplane_kill(struct e2e_cp *w, int sig);

/* Starts data plane <i> (node id "dp<i>", state dir "dp<i>/", log "dp<i>.log")
 * without waiting; fails the test when it is already running. */
void e2e_cp_dataplane_start(struct e2e_cp *w, unsigned i);

/* pids of the control plane and of data plane <i> (-1: not running), for a
 * test that signals them itself (SIGHUP). */
pid_t e2e_cp_controlplane_pid(const struct e2e_cp *w);
pid_t e2e_cp_dataplane_pid(const struct e2e_cp *w, unsigned i);

/* SIGTERM to data plane <i>; returns its wait status (-1: not running). */
int e2e_cp_dataplane_stop(struct e2e_cp *w, unsigned i);

/* True once data plane <i>'s log contains <needle>, polled up to <ms>; false
 * when the time passes or the process exits first. */
bool e2e_cp_dataplane_log_has(struct e2e_cp *w, unsigned i, const char *needle, uint64_t ms);

/* Ports: the frontend, the data planes' metrics, backend <i>, the admin TCP
 * listener (0 without admin_tcp). */
unsigned e2e_cp_frontend_port(const struct e2e_cp *w);
unsigned e2e_cp_metrics_port(const struct e2e_cp *w);
unsigned e2e_cp_backend_port(const struct e2e_cp *w, unsigned i);
unsigned e2e_cp_admin_port(const struct e2e_cp *w);

/* "http://127.0.0.1:<port of backend i>", valid until e2e_cp_stop(). */
const char *e2e_cp_backend_url(const struct e2e_cp *w, unsigned i);

/* Path of the world's file <name> into <out>. */
void e2e_cp_path(const struct e2e_cp *w, const char *name, char *out, size_t outsz);

/* Starts an extra lb-backend --name <name> on <port> (0 = any), its output
 * in the world's file <log>; waits until it listens, fills <bound> with its
 * port and returns its pid (stop it with e2e_kill). Fails the test when it
 * does not start. */
pid_t e2e_cp_backend_spawn(struct e2e_cp *w, const char *name, unsigned port, const char *log,
                           unsigned *bound);

/* The field <key> of backend <i>'s /stats (adds one request); -1 on failure. */
long e2e_cp_backend_stat(struct e2e_cp *w, unsigned i, const char *key);

/* GET /metrics from the metrics port; caller frees; NULL on failure. */
char *e2e_cp_scrape(struct e2e_cp *w);

/* Runs lbctl --socket <admin socket> followed by the NULL-terminated
 * arguments. Returns its exit status; release <r> with e2e_cmd_free(). */
int e2e_cp_lbctl(struct e2e_cp *w, struct e2e_cmd *r, ...) __attribute__((sentinel));

/* Writes the world's file <name>: a config with one TLS frontend "web-tls"
 * (127.0.0.1, a free port), backend b0, ssl.certFile <dir>/cert.pem and
 * ssl.keyFile <dir>/<key>, then the YAML lines <extra> (may be NULL). */
void e2e_cp_write_tls_config(struct e2e_cp *w, const char *name, const char *key,
                             const char *extra);

/* One entry of `lbctl --json dataplanes`. */
struct e2e_dp_status {
    char node_id[64];
    long applied_version;
    long applied_generation;
    long rejected_generation;
    char rejection_reason[256]; /* "" when null */
    bool in_sync;
};

/* Runs `lbctl --json dataplanes`; fills up to <max> entries of <dp> and the
 * control plane's <version> and <generation> (each may be NULL). Returns the
 * number of data planes listed, or -1 when lbctl failed. */
int e2e_cp_dataplanes(struct e2e_cp *w, struct e2e_dp_status *dp, unsigned max, long *version,
                      long *generation);

/* Polls e2e_cp_dataplanes() until exactly <n> data planes are listed, all in
 * sync with the control plane's generation, at most e2e_timeout_ms(). Returns
 * that generation (its version into <version>, may be NULL), or -1. */
long e2e_cp_wait_in_sync(struct e2e_cp *w, unsigned n, long *version);

#endif
