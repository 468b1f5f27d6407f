/* controlplane/admin_ui.h: the dashboard's static assets, embedded in the
 * binary at build time from controlplane/ui/ (admin_ui_assets.c is generated
 * by CMake; see "the dashboard" in CMakeLists.txt). Read-only data: any
 * thread. */
#ifndef LB_ADMIN_UI_H
#define LB_ADMIN_UI_H

#include <stddef.h>

struct admin_ui_asset {
    const char *name;  /* file name under /ui/, e.g. "app.js" */
    const char *ctype; /* Content-Type */
    const char *etag;  /* quoted, from the content's SHA-256 */
    const unsigned char *data;
    size_t len;
};

extern const struct admin_ui_asset admin_ui_assets[];
extern const size_t admin_ui_n_assets;

#endif
