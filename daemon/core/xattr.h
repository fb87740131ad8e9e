/*
 * xattr: the validator of an inode's attribute object (format.h), shared
 * by the daemon's read path and fsck.pmfuse.
 */
#ifndef PMFUSE_XATTR_H
#define PMFUSE_XATTR_H

#include "pool.h"

static inline size_t xattr_rec_size(const struct pmfuse_xattr_rec *r)
{
	return (sizeof(*r) + r->name_len + r->value_len + 7) & ~(size_t)7;
}

/*
 * Is the attribute object at off whole: size within limits and the pool,
 * every record inside `used`, names non-empty without NUL bytes, records
 * filling `used` exactly?  0, or -EUCLEAN with a reason in why.
 */
int xattr_set_validate(const struct pool *p, uint64_t off, char *why, size_t whylen);

#endif
