/* lbctl/output.c */
#include "output.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct table {
    size_t ncols; /* cells per row */
    size_t nrows; /* rows, the header included */
    size_t cap;   /* rows allocated */
    char **cells; /* nrows * ncols owned strings, row-major */
};

struct table *table_new(size_t ncols, const char *const *headers)
{
    struct table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->ncols = ncols;
    if (table_add(t, headers) != 0) {
        table_free(t);
        return NULL;
    }
    return t;
}

void table_free(struct table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

int table_add(struct table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        char **p = realloc(t->cells, cap * t->ncols * sizeof(*p));
        if (p == NULL)
            return -1;
        t->cells = p;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "-");
        if (row[i] == NULL) {
            while (i > 0)
                free(row[--i]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

/* Characters, not bytes, so that a comment in UTF-8 keeps the columns straight. */
static size_t width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

void table_print(const struct table *t, FILE *out)
{
    size_t *w = calloc(t->ncols, sizeof(*w));
    if (w == NULL)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t n = width(t->cells[r * t->ncols + c]);
            if (n > w[c])
                w[c] = n;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            fputs(cell, out);
            if (c + 1 < t->ncols)
                fprintf(out, "%*s", (int)(w[c] - width(cell) + 2), "");
        }
        fputc('\n', out);
    }
    free(w);
}

/* Control characters would break the one-row-per-line promise of a table. */
static void copy_printable(char *buf, size_t bufsz, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < bufsz; i++)
        buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
    buf[i] = '\0';
}

const char *output_cell(const json_t *v, char *buf, size_t bufsz)
{
    if (v == NULL || json_is_null(v))
        snprintf(buf, bufsz, "-");
    else if (json_is_string(v))
        copy_printable(buf, bufsz, json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, bufsz, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, bufsz, "%g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, bufsz, "%s", json_is_true(v) ? "yes" : "no");
    else
        snprintf(buf, bufsz, "-");
    return buf;
}

const char *output_time(const json_t *v, char *buf, size_t bufsz)
{
    if (v == NULL || !json_is_number(v)) {
        snprintf(buf, bufsz, "-");
        return buf;
    }
    double ms = json_number_value(v);
    time_t secs = (time_t)(ms / 1000.0);
    struct tm tm;
    if (localtime_r(&secs, &tm) == NULL || strftime(buf, bufsz, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, bufsz, "-");
    return buf;
}

int output_json(const json_t *v, FILE *out)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (s == NULL)
        return -1;
    fputs(s, out);
    fputc('\n', out);
    free(s);
    return 0;
}
