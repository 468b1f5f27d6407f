/* controlplane/snapbuild.h: struct config (+ runtime health) -> lb.v1.Snapshot.
 * Reads the TLS files and resolves backend host names here, so that the data
 * plane never touches the file system for config or calls the resolver.
 * Blocking (file reads, getaddrinfo): call it off latency-critical paths. */
#ifndef LB_SNAPBUILD_H
#define LB_SNAPBUILD_H

#include "lb.pb-c.h"

#include <stddef.h>
#include <stdint.h>

struct config;
struct lb_err;

/* Runtime health of one backend, by config id. */
struct snapbuild_health {
    const char *id;
    Lb__V1__Health health;
};

struct snapbuild_input {
    const struct config *cfg;              /* validated config (borrowed) */
    uint64_t config_version;               /* stored version it came from */
    uint64_t generation;                   /* bumps on every published change */
    int64_t now_unix_ms;                   /* becomes created_unix_ms */
    const struct snapbuild_health *health; /* may be NULL; absent id = UNKNOWN */
    size_t n_health;
    const char *base_dir; /* relative ssl paths; NULL = cwd */
};

/* Builds a snapshot from <in>: frontends (TLS frontends carry the ssl
 * section with the certificate, key, CA and CRL file contents), backends with
 * weight, admin state, health and a resolved IP literal in host (names go
 * through getaddrinfo; the URL keeps the name, and https backends get it as
 * sni), timeouts and durations in milliseconds, limits, rate limit, circuit
 * breaker, health check, logging, metrics and balancing.
 * Returns LB_OK with *<out> owned by the caller (snapbuild_free()), or
 * LB_ESYS when a TLS file cannot be read (the message names the path),
 * LB_EINVAL when a backend's host does not resolve (the message names the
 * backend), LB_ENOMEM. */
int snapbuild_build(const struct snapbuild_input *in, Lb__V1__Snapshot **out, struct lb_err *err);

/* Serialises <snap> into a malloc'd buffer the caller frees with free().
 * LB_OK or LB_ENOMEM. */
int snapbuild_encode(const Lb__V1__Snapshot *snap, uint8_t **buf, size_t *len, struct lb_err *err);

/* Frees a snapshot made by snapbuild_build(); NULL is a no-op. (A snapshot
 * from lb__v1__snapshot__unpack() is freed with its own free_unpacked.) */
void snapbuild_free(Lb__V1__Snapshot *snap);

#endif
