/* proto/base/lb_cred.c: systemd credentials (see lb_cred.h). */
#include "lb_cred.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A blank credential: nothing but white space in its first bytes, and no
 * more bytes than that. */
static bool blank(const char *path, off_t size)
{
    char b[64];
    if (size > (off_t)sizeof(b))
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, b, sizeof(b));
    close(fd);
    for (ssize_t i = 0; i < n; i++)
        if (!isspace((unsigned char)b[i]))
            return false;
    return true;
}

bool lb_credential(const char *name, char *out, size_t n)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir == NULL || dir[0] == '\0' || name[0] == '\0' || strchr(name, '/') != NULL)
        return false;
    int len = snprintf(out, n, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= n)
        return false;
    struct stat st;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode) && !blank(out, st.st_size);
}
