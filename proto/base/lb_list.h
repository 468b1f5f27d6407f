/* proto/base/lb_list.h: intrusive doubly linked lists.
 *
 * Embed a struct lb_list in each element and one as the head (a sentinel:
 * an empty list points at itself). Insertion and removal are O(1) and never
 * allocate; an element removed with lb_list_del() points at itself, so a
 * second removal is harmless and lb_list_linked() tells whether it is in a
 * list. One owner thread per list: nothing here is atomic. Header-only:
 * these sit on per-connection paths and must inline.
 *
 *     struct upstream { ...; struct lb_list pool; };
 *     lb_list_add(&be->idle, &u->pool);          newest first
 *     struct upstream *u = LB_LIST_ENTRY(be->idle.next, struct upstream, pool); */
#ifndef LB_LIST_H
#define LB_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct lb_list {
    struct lb_list *next;
    struct lb_list *prev;
};

/* The element of type <type> whose member <member> is at <ptr>. */
#define LB_LIST_ENTRY(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Makes <l> an empty list (or an element in none). */
static inline void lb_list_init(struct lb_list *l)
{
    l->next = l->prev = l;
}

static inline bool lb_list_empty(const struct lb_list *head)
{
    return head->next == head;
}

/* Whether element <e> is in a list (after lb_list_init or lb_list_del: no). */
static inline bool lb_list_linked(const struct lb_list *e)
{
    return e->next != e && e->next != NULL;
}

/* Inserts <e> first (after the head). */
static inline void lb_list_add(struct lb_list *head, struct lb_list *e)
{
    e->next = head->next;
    e->prev = head;
    head->next->prev = e;
    head->next = e;
}

/* Inserts <e> last (before the head). */
static inline void lb_list_add_tail(struct lb_list *head, struct lb_list *e)
{
    lb_list_add(head->prev, e);
}

/* Takes <e> out of its list; it then points at itself. */
static inline void lb_list_del(struct lb_list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    lb_list_init(e);
}

#endif
