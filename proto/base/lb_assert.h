/* proto/base/lb_assert.h: invariants of state machines and ownership hand-overs.
 * Checked in debug and sanitizer builds, compiled out in release (NDEBUG);
 * never for input validation. */
#ifndef LB_ASSERT_H
#define LB_ASSERT_H

#include <assert.h>

#ifdef NDEBUG
#define LB_ASSERT(cond) ((void)0)
#else
#define LB_ASSERT(cond) assert(cond)
#endif

#endif
