/* controlplane/certwatch.h: notices when files (certificates, keys, CA
 * bundles, CRLs) change on disk.
 *
 * inotify watches the directories of the files, because editors and
 * certificate tools replace a file by renaming a new one over it; an event
 * naming a watched file (or a name starting with "..", as Kubernetes secret
 * volumes swap their data directory) arms a debounce timer, re-armed by every
 * further event. When it fires, and on a periodic poll as a fallback
 * (filesystems without inotify, symlink swaps elsewhere), each file's stat()
 * and, when that moved, its SHA-256 are compared with what was seen last: a
 * file whose content changed, appeared or disappeared is reported, once, in
 * one callback listing every file that changed.
 *
 * Single-threaded: everything runs on the loop given to certwatch_new(). */
#ifndef LB_CERTWATCH_H
#define LB_CERTWATCH_H

#include <stddef.h>

struct ev_loop;
struct lb_err;
struct certwatch;

#define CERTWATCH_DEBOUNCE_S 0.2
#define CERTWATCH_POLL_S     10.0

/* Called when files changed: <paths> are the watched paths (as given to
 * certwatch_set()) whose content changed, <n> >= 1. The array is valid for
 * the call only. The callback may call certwatch_set() but not
 * certwatch_free(). */
typedef void (*certwatch_fn)(void *ctx, const char *const *paths, size_t n);

/* Creates a watcher on <loop> that calls <fn>(<ctx>, ...) <debounce_s>
 * seconds after the last event of a burst, and polls every <poll_s>
 * seconds (0 = the defaults above). When inotify is unavailable the poll
 * alone notices changes (logged once). Returns NULL and fills <err> on no
 * memory. Caller owns the result; release with certwatch_free(). */
struct certwatch *certwatch_new(struct ev_loop *loop, double debounce_s, double poll_s,
                                certwatch_fn fn, void *ctx, struct lb_err *err);

/* Watches exactly <paths> (<n> of them, copied; duplicates count once) from
 * now on, taking their current content as the baseline: nothing is reported
 * for the state at this call. A path may not exist yet (its creation is a
 * change). LB_OK or LB_ENOMEM (then the previous set stays watched). */
int certwatch_set(struct certwatch *w, const char *const *paths, size_t n, struct lb_err *err);

/* Compares every watched file with its baseline now (as the debounce timer
 * does) and reports changes through the callback; returns how many files
 * changed. */
size_t certwatch_check(struct certwatch *w);

/* Stops every watcher and frees <w>; NULL is a no-op. */
void certwatch_free(struct certwatch *w);

#endif
