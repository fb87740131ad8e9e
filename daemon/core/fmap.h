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

#include <stdbool.h>
#include <stdint.h>

static inline uint64_t fmap_span(unsigned level)
{
	return 1ull << (PMFUSE_MAP_SHIFT * level);
}

/*
 * Where does file block fblock live?  Returns FMAP_DATA (mapped at *phys),
 * FMAP_UNWRITTEN (allocated at *phys, reads as zeros) or FMAP_HOLE, with
 * *count the number of following blocks in the same state (contiguous
 * physically, or hole), or -EUCLEAN.
 */
enum { FMAP_HOLE = 0, FMAP_DATA = 1, FMAP_UNWRITTEN = 2 };
int fmap_lookup(const struct pool *p, const struct pmfuse_inode *pi,
		uint64_t fblock, uint64_t *phys, uint64_t *count);

/*
 * Huge extents.  A 2 MiB (1 GiB) window of file blocks, aligned in the file,
 * is a huge extent when all of it maps to one physically contiguous run that
 * starts on a 2 MiB (1 GiB) boundary of the region: what a PMD (PUD) mapping
 * needs.  A 2 MiB window inside a huge 1 GiB one counts as part of that one
 * only.  The allocator keeps the region's totals (alloc.h), so a stats read
 * costs nothing: fmap_map() and fmap_unmap() report how a change moved them,
 * as a delta to apply once its transaction has committed.
 */
struct fmap_huge {
	int64_t n2m, n1g;
};

/* Blocks freed by fmap_unmap(), to hand to alloc_free() after commit. */
struct fmap_freed {
	struct alloc_run *runs;
	size_t n, cap;
	struct fmap_huge huge;		/* huge extents the unmap broke */
};

/*
 * In a transaction: map the hole [fblock, +n) to [phys, +n), written or
 * unwritten, adding the huge extents it completes to *huge (apply with
 * alloc_huge_add() after commit).  Huge extents are physical layout: an
 * unwritten extent counts as one, and converting it changes nothing.
 */
int fmap_map(const struct pool *p, struct pmfuse_inode *pi,
	     uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten, struct fmap_huge *huge);

/*
 * In a transaction: mark the unwritten blocks of [fblock, +n) written (the
 * caller has stored and persisted their contents).  Holes and written blocks
 * in the range are left as they are.
 */
int fmap_convert(const struct pool *p, struct pmfuse_inode *pi, uint64_t fblock, uint64_t n);

/* In a transaction: unmap [fblock, +n), collecting freed runs. */
int fmap_unmap(const struct pool *p, struct pmfuse_inode *pi,
	       uint64_t fblock, uint64_t n, struct fmap_freed *freed);

/* After commit: free the runs, apply the huge-extent delta. */
void fmap_freed_release(struct alloc *a, struct fmap_freed *f);

/*
 * A file's extents: its maximal runs (contiguous in the file and in the
 * region), and how they fall into huge extents and 4 KiB blocks.  Fed leaf
 * by leaf in file order (fmap_extents_leaf), closed by fmap_extents_end.
 */
struct fmap_extents {
	uint64_t extents, huge_1g, huge_2m, small;
	uint64_t unwritten;		/* blocks allocated but never written */
	uint64_t fblock, phys, n;	/* the run being joined */
};
void fmap_extents_leaf(struct fmap_extents *e, uint64_t fblock, uint64_t phys, uint64_t n,
		       bool unwritten);
void fmap_extents_end(struct fmap_extents *e);
int fmap_count_extents(const struct pool *p, const struct pmfuse_inode *pi,
		       struct fmap_extents *e);

/*
 * Visit every leaf in file order (validating the whole structure).
 * cb returns non-zero to stop; that value is returned.  on_node, if set,
 * sees every node offset (fsck accounts metadata).
 */
typedef int (*fmap_leaf_fn)(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n,
			    bool unwritten);
typedef int (*fmap_node_fn)(void *ctx, uint64_t node_off);
int fmap_walk(const struct pool *p, const struct pmfuse_inode *pi,
	      fmap_leaf_fn cb, fmap_node_fn on_node, void *ctx);

#endif
