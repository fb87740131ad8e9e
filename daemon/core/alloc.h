/*
 * alloc: the data-block allocator.  Its state lives in DRAM only: a bitmap
 * over every 4 KiB block of the region (blocks outside data pieces
 * permanently "used"), a free count per 2 MiB group and per piece, rebuilt
 * at mount from the file maps of live inodes.  Persistent truth is the file
 * maps themselves, so a crash can neither leak a block nor hand one out
 * twice.
 *
 * The data area follows demand (pool.h, pieces): when a request finds too
 * few free blocks the allocator adds a piece, and a piece that alloc_free()
 * leaves empty goes back to the heap for metadata (not inside a
 * transaction: then it stays until the next alloc_free() outside one).
 *
 * Callers follow one protocol around a metadata transaction:
 *   alloc_blocks()      reserve before the transaction;
 *   alloc_free()        after the transaction that unlinked the blocks
 *                       committed (never before: an abort would leave them
 *                       referenced while another file reuses them);
 *   alloc_free() too    for reservations whose transaction aborted.
 * All functions take a->lock internally.
 */
#ifndef PMFUSE_ALLOC_H
#define PMFUSE_ALLOC_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct pool;

struct alloc {
	pthread_mutex_t lock;
	struct pool *pool;
	uint64_t *pfree;		/* free blocks per piece id */
	uint32_t pfree_cap;
	uint64_t piece_default;		/* bytes a growth asks for */
	uint64_t pieces_added, pieces_removed;	/* counters, under lock */
	uint64_t nblocks;		/* blocks in the region (bitmap bits) */
	uint64_t *free;			/* bit set = free block */
	uint16_t *group_free;		/* free blocks per 512-block group */
	uint64_t ngroups;
	uint64_t free_blocks;		/* protected by lock */
	uint64_t data_blocks;		/* total data blocks */
	uint64_t cursor;		/* next-fit start, in blocks */
	/*
	 * Huge extents in all files (fmap.h): counted at mount, then moved by
	 * the deltas of committed map changes.  No lock: atomic adds.
	 */
	_Atomic int64_t huge_2m, huge_1g;
	/*
	 * Quarantine (alloc_set_quarantine): region ranges that live direct
	 * maps of an earlier daemon may reach.  Blocks in them that are or
	 * become free are held instead: used, in no file, not allocatable.
	 */
	struct alloc_run *quar;
	size_t nquar;
	struct alloc_run *held;
	size_t nheld, held_cap;
	uint64_t held_blocks;
};

struct alloc_run {
	uint64_t phys;
	uint64_t len;
};

/* attach: every live piece's blocks free (a rebuild claims what files use) */
int alloc_init(struct alloc *a, struct pool *p, bool attach);
void alloc_destroy(struct alloc *a);

/* Mount scan: claim blocks referenced by a file; -EUCLEAN if already claimed. */
int alloc_claim(struct alloc *a, uint64_t phys, uint64_t n);

/*
 * Reserve up to n blocks as at most maxruns runs, preferring a run that
 * starts at goal (contiguity with the file's previous block) and, for large
 * requests, whole free 2 MiB groups.  Returns the number of runs (they may
 * cover fewer than n blocks when free space is fragmented into more than
 * maxruns pieces), or -ENOSPC, reserving nothing, if fewer than n blocks
 * are free at all.
 */
int alloc_blocks(struct alloc *a, uint64_t n, uint64_t goal,
		 struct alloc_run *runs, int maxruns);

/*
 * As alloc_blocks(), but when goal cannot be had, start in a wholly free
 * 2 MiB group at the block congruent to fblock modulo 512, so a file
 * written sequentially lines up with the region's huge pages (PMD analogue).
 */
int alloc_blocks_aligned(struct alloc *a, uint64_t n, uint64_t goal, uint64_t fblock,
			 struct alloc_run *runs, int maxruns);
void alloc_free(struct alloc *a, uint64_t phys, uint64_t n);
/*
 * Replace the quarantine with ranges[0..n) (sorted, disjoint, in blocks;
 * the allocator owns the array): held blocks outside them go free, free
 * blocks inside them are held.  alloc_held() counts the held blocks.
 */
void alloc_set_quarantine(struct alloc *a, struct alloc_run *ranges, size_t n);
uint64_t alloc_held(struct alloc *a);
size_t alloc_quarantine_ranges(struct alloc *a);
/*
 * Give every empty piece back (mount: a crash can leave a piece added
 * whose data never got committed).
 */
void alloc_trim(struct alloc *a);
uint64_t alloc_free_count(struct alloc *a);
/* The data area: its blocks, live pieces (runs too), pieces added and given back. */
void alloc_area(struct alloc *a, uint64_t *blocks, uint64_t *pieces, uint64_t *added,
		uint64_t *removed);
/* Blocks in use by files (data blocks of the pieces, less the free ones). */
uint64_t alloc_used_blocks(struct alloc *a);

/*
 * The clean-unmount record's part (format.h, struct pmfuse_record): encode
 * the live pieces' free space into out (NULL: only count), returning the
 * words and the pieces; decode it into an allocator made with attach false,
 * or (compare) check it against a rebuilt one.  -EUCLEAN with why set when
 * the record does not fit the pool or disagrees.
 */
uint64_t alloc_encode(struct alloc *a, uint64_t *out, uint64_t *npieces);
int alloc_decode(struct alloc *a, const uint64_t *in, uint64_t n, uint64_t npieces, bool compare,
		 char *why, size_t whylen);
/* Are blocks [phys, +n) all in use (a file's, by the lazy check of its map)? */
bool alloc_is_used(struct alloc *a, uint64_t phys, uint64_t n);

static inline void alloc_huge_add(struct alloc *a, int64_t n2m, int64_t n1g)
{
	if (n2m)
		atomic_fetch_add_explicit(&a->huge_2m, n2m, memory_order_relaxed);
	if (n1g)
		atomic_fetch_add_explicit(&a->huge_1g, n1g, memory_order_relaxed);
}

#endif
