/*
 * fmap: the persistent file map (file block -> physical block), the radix
 * tree described in include/pmfuse/format.h.  Lookups are lock-free with
 * respect to the tree but the caller holds the inode lock (shared for
 * lookups, exclusive for changes).  fmap_map()/fmap_unmap() must run inside
 * a pmemobj transaction; they snapshot what they change.  Every entry is
 * validated as it is followed: a damaged map yields -EUCLEAN, never a wild
 * pointer.
 */
#ifndef PMFUSE_FMAP_H
#define PMFUSE_FMAP_H

#include "alloc.h"
#include "pool.h"

#include <stdint.h>

static inline uint64_t fmap_span(unsigned level)
{
	return 1ull << (PMFUSE_MAP_SHIFT * level);
}

/*
 * Where does file block fblock live?  Returns 1 (mapped at *phys) or 0
 * (hole), with *count the number of following blocks in the same state
 * (contiguous physically, or hole), or -EUCLEAN.
 */
int fmap_lookup(const struct pool *p, const struct pmfuse_inode *pi,
		uint64_t fblock, uint64_t *phys, uint64_t *count);

/* Blocks freed by fmap_unmap(), to hand to alloc_free() after commit. */
struct fmap_freed {
	struct alloc_run *runs;
	size_t n, cap;
};

/* In a transaction: map the hole [fblock, +n) to [phys, +n). */
int fmap_map(const struct pool *p, struct pmfuse_inode *pi,
	     uint64_t fblock, uint64_t phys, uint64_t n);

/* In a transaction: unmap [fblock, +n), collecting freed runs. */
int fmap_unmap(const struct pool *p, struct pmfuse_inode *pi,
	       uint64_t fblock, uint64_t n, struct fmap_freed *freed);

void fmap_freed_release(struct alloc *a, struct fmap_freed *f);

/*
 * Visit every leaf in file order (validating the whole structure).
 * cb returns non-zero to stop; that value is returned.  on_node, if set,
 * sees every node offset (fsck accounts metadata).
 */
typedef int (*fmap_leaf_fn)(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n);
typedef int (*fmap_node_fn)(void *ctx, uint64_t node_off);
int fmap_walk(const struct pool *p, const struct pmfuse_inode *pi,
	      fmap_leaf_fn cb, fmap_node_fn on_node, void *ctx);

#endif
