/* lbctl/output.h: what lbctl prints: aligned tables for people, pretty JSON
 * for scripts, and the cell formats both share. */
#ifndef LBCTL_OUTPUT_H
#define LBCTL_OUTPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

struct table;

/* Creates a table of <ncols> columns titled <headers> (copied; capitals by
 * convention). Returns NULL when out of memory. Release with table_free(). */
struct table *table_new(size_t ncols, const char *const *headers);

/* Releases <t>; NULL is a no-op. */
void table_free(struct table *t);

/* Appends a row of <ncols> cells (copied; NULL prints as "-"). Returns 0, or
 * -1 when out of memory. */
int table_add(struct table *t, const char *const *cells);

/* Prints the header and every row, each column padded to its widest cell
 * (counted in UTF-8 characters), two spaces apart, no trailing blanks. */
void table_print(const struct table *t, FILE *out);

/* Formats <v> for a table cell into <buf>: strings as they are, integers in
 * decimal, true/false as "yes"/"no", NULL or null as "-". Returns <buf>. */
const char *output_cell(const json_t *v, char *buf, size_t bufsz);

/* Formats the epoch milliseconds <v> as local time "2026-11-28 03:12:33";
 * "-" when <v> is NULL, null or not a number. Returns <buf>. */
const char *output_time(const json_t *v, char *buf, size_t bufsz);

/* Prints <v> as JSON with a 2-space indent, keys in the server's order, and
 * a final newline. Returns 0, or -1 when out of memory. */
int output_json(const json_t *v, FILE *out);

#endif
