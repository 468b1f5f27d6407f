/* dataplane/dp.c: the process's newest snapshot, handed to its threads. */
#include "dp.h"

#include "snapshot.h"

struct snap *dp_snapshot(struct dp *dp)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *s = snap_ref(dp->snap);
    pthread_mutex_unlock(&dp->lock);
    return s;
}

void dp_swap(struct dp *dp, struct snap *s)
{
    pthread_mutex_lock(&dp->lock);
    struct snap *old = dp->snap;
    dp->snap = s;
    pthread_mutex_unlock(&dp->lock);
    snap_unref(old);
}
