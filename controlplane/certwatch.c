/* controlplane/certwatch.c: inotify on directories plus a stat/hash poll
 * (see certwatch.h). The content hash decides: events only say when to
 * look, so that a touch, a rename of identical bytes or an event storm
 * reports nothing. */
#include "certwatch.h"

#include "lb_err.h"
#include "lb_log.h"
#include "mem.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_READ (16u << 20)

/* One watched file and what was seen of it last. */
struct cw_file {
    char *path;
    char *dir;        /* directory part, "." when none */
    const char *base; /* inside path */
    int wd;           /* inotify watch of dir, -1 = none */
    bool exists;
    struct stat st; /* valid when exists */
    uint8_t sha[32];
};

struct certwatch {
    struct ev_loop *loop;
    certwatch_fn fn;
    void *ctx;
    int ifd;           /* inotify descriptor, -1 = polling only */
    ev_io io;          /* readable ifd */
    ev_timer debounce; /* armed by events, re-armed by each */
    ev_timer poll;     /* periodic fallback */
    double debounce_s;
    struct cw_file *files; /* <n> of them */
    size_t n;
};

static bool same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* SHA-256 of <path>'s content; false when it cannot be read. */
static bool hash_file(const char *path, uint8_t sha[32])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    uint8_t buf[16384];
    size_t total = 0;
    while (ok) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r == -1 && errno == EINTR)
            continue;
        if (r < 0 || (total += (size_t)r) > MAX_READ) {
            ok = false;
            break;
        }
        if (r == 0)
            break;
        ok = EVP_DigestUpdate(md, buf, (size_t)r) == 1;
    }
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(md, sha, &len) == 1 && len == 32;
    EVP_MD_CTX_free(md);
    close(fd);
    return ok;
}

/* Looks at <f> now; true when its content differs from the baseline, which
 * becomes what was seen. */
static bool observe(struct cw_file *f)
{
    struct stat st;
    bool exists = stat(f->path, &st) == 0;
    if (exists && f->exists && same_stat(&st, &f->st))
        return false;
    uint8_t sha[32] = {0};
    if (exists && !hash_file(f->path, sha))
        exists = false; /* unreadable counts as gone until it can be read */
    bool changed = exists != f->exists || (exists && memcmp(sha, f->sha, 32) != 0);
    f->exists = exists;
    if (exists) {
        f->st = st;
        memcpy(f->sha, sha, 32);
    }
    return changed;
}

size_t certwatch_check(struct certwatch *w)
{
    if (w->n == 0)
        return 0;
    const char **changed = calloc(w->n, sizeof(*changed));
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (observe(&w->files[i]) && changed != NULL)
            changed[n++] = w->files[i].path;
    if (n > 0)
        w->fn(w->ctx, changed, n);
    free(changed);
    return n;
}

static void cw_on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    ev_timer_stop(loop, t);
    certwatch_check(t->data);
}

static void cw_on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    certwatch_check(t->data);
}

static bool relevant(const struct certwatch *w, int wd, const char *name)
{
    if (name[0] == '.' && name[1] == '.')
        return true;
    for (size_t i = 0; i < w->n; i++)
        if (w->files[i].wd == wd && strcmp(w->files[i].base, name) == 0)
            return true;
    return false;
}

static void cw_on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    struct certwatch *w = io->data;
    /* Aligned as inotify(7) asks. */
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t r = read(w->ifd, buf, sizeof(buf));
        if (r <= 0)
            break;
        for (char *p = buf; p < buf + r;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            if ((ev->mask & IN_Q_OVERFLOW) || (ev->len > 0 && relevant(w, ev->wd, ev->name)))
                hit = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (hit) {
        w->debounce.repeat = w->debounce_s;
        ev_timer_again(loop, &w->debounce);
    }
}

struct certwatch *certwatch_new(struct ev_loop *loop, double debounce_s, double poll_s,
                                certwatch_fn fn, void *ctx, struct lb_err *err)
{
    struct certwatch *w = mem_zalloc(sizeof(*w), NULL, err);
    if (w == NULL)
        return NULL;
    w->loop = loop;
    w->fn = fn;
    w->ctx = ctx;
    w->debounce_s = debounce_s > 0 ? debounce_s : CERTWATCH_DEBOUNCE_S;
    if (poll_s <= 0)
        poll_s = CERTWATCH_POLL_S;
    ev_init(&w->debounce, cw_on_debounce);
    w->debounce.data = w;
    ev_timer_init(&w->poll, cw_on_poll, poll_s, poll_s);
    w->poll.data = w;
    ev_timer_start(loop, &w->poll);
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd == -1) {
        lb_log(LB_LOG_WARN, "certwatch_poll_only",
               "inotify is unavailable (%s): certificate files are polled every %.0f s",
               strerror(errno), poll_s);
    } else {
        ev_io_init(&w->io, cw_on_inotify, w->ifd, EV_READ);
        w->io.data = w;
        ev_io_start(loop, &w->io);
    }
    return w;
}

static void free_files(struct cw_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].path);
        free(f[i].dir);
    }
    free(f);
}

int certwatch_set(struct certwatch *w, const char *const *paths, size_t n, struct lb_err *err)
{
    struct cw_file *nf = calloc(n ? n : 1, sizeof(*nf));
    if (nf == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = strcmp(nf[j].path, paths[i]) == 0;
        if (dup || paths[i] == NULL || paths[i][0] == '\0')
            continue;
        struct cw_file *f = &nf[k];
        f->wd = -1;
        f->path = strdup(paths[i]);
        const char *slash = f->path ? strrchr(f->path, '/') : NULL;
        f->dir = slash == NULL      ? strdup(".")
                 : slash == f->path ? strdup("/")
                                    : strndup(f->path, (size_t)(slash - f->path));
        if (f->path == NULL || f->dir == NULL) {
            free(f->path);
            free(f->dir);
            free_files(nf, k);
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        }
        f->base = slash ? slash + 1 : f->path;
        k++;
    }
    /* The old watches go first: inotify hands out the same wd for a
     * directory watched again, and removing it afterwards would drop it. */
    for (size_t i = 0; w->ifd != -1 && i < w->n; i++)
        if (w->files[i].wd != -1)
            inotify_rm_watch(w->ifd, w->files[i].wd);
    free_files(w->files, w->n);
    w->files = nf;
    w->n = k;
    for (size_t i = 0; i < k; i++) {
        struct cw_file *f = &nf[i];
        if (w->ifd != -1) {
            f->wd = inotify_add_watch(w->ifd, f->dir,
                                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                          IN_DELETE | IN_MODIFY | IN_ATTRIB);
            if (f->wd == -1)
                lb_log(LB_LOG_WARN, "certwatch_dir",
                       "cannot watch directory %s (%s): %s is polled every few seconds", f->dir,
                       strerror(errno), f->path);
        }
        observe(f);
    }
    ev_timer_stop(w->loop, &w->debounce);
    return LB_OK;
}

void certwatch_free(struct certwatch *w)
{
    if (w == NULL)
        return;
    ev_timer_stop(w->loop, &w->poll);
    ev_timer_stop(w->loop, &w->debounce);
    if (w->ifd != -1) {
        ev_io_stop(w->loop, &w->io);
        close(w->ifd);
    }
    free_files(w->files, w->n);
    free(w);
}
