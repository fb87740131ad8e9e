/*
 * alloc: a next-fit bitmap allocator with per-2 MiB-group free counts so
 * full groups are skipped in one step and whole free groups (huge extents)
 * are found without scanning bits.  A set bit is a free block: the bitmap
 * covers the whole region (128 MiB for 4 TiB) but starts as untouched zero
 * pages, and only the data pieces' parts of it are ever written.
 */
#include "alloc.h"
#include "fault.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_BLOCKS PMFUSE_HUGE_2M_BLOCKS
#define WORDS_PER_GROUP (GROUP_BLOCKS / 64)

static inline bool bit_test(const uint64_t *bm, uint64_t b)
{
	return (bm[b / 64] >> (b % 64)) & 1;
}

/* Make room in pfree for piece id; false without memory. */
static bool pfree_fit(struct alloc *a, uint32_t id)
{
	if (id < a->pfree_cap)
		return true;
	uint32_t cap = a->pfree_cap ? a->pfree_cap : 64;
	while (cap <= id)
		cap *= 2;
	uint64_t *n = realloc(a->pfree, cap * sizeof(*n));
	if (!n)
		return false;
	memset(n + a->pfree_cap, 0, (cap - a->pfree_cap) * sizeof(*n));
	a->pfree = n;
	a->pfree_cap = cap;
	return true;
}

/* A range is always inside one piece (pieces never touch: pieces.c). */
static void mark_range(struct alloc *a, uint64_t phys, uint64_t n, bool used)
{
	uint32_t id = pool_piece_of(a->pool, phys);

	if (id && id < a->pfree_cap) {
		if (used)
			a->pfree[id] -= n;
		else
			a->pfree[id] += n;
	}
	for (uint64_t b = phys; b < phys + n; b++) {
		if (used) {
			a->free[b / 64] &= ~(1ull << (b % 64));
			a->group_free[b / GROUP_BLOCKS]--;
		} else {
			a->free[b / 64] |= 1ull << (b % 64);
			a->group_free[b / GROUP_BLOCKS]++;
		}
	}
	if (used)
		a->free_blocks -= n;
	else
		a->free_blocks += n;
}

/* The blocks of piece id become allocatable. */
static int piece_attach(struct alloc *a, uint32_t id)
{
	const struct pool_piece *pc = pool_piece(a->pool, id);

	if (!pfree_fit(a, id))
		return -ENOMEM;
	a->pfree[id] = 0;
	mark_range(a, pc->off >> PMFUSE_BLOCK_SHIFT, pc->len >> PMFUSE_BLOCK_SHIFT, false);
	a->data_blocks += pc->len >> PMFUSE_BLOCK_SHIFT;
	return 0;
}

int alloc_init(struct alloc *a, struct pool *p)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->pool = p;
	a->piece_default = pool_piece_default(p->size);
	a->nblocks = p->size >> PMFUSE_BLOCK_SHIFT;
	a->ngroups = (a->nblocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
	/* everything starts used (clear bits); a piece's blocks become free */
	a->free = calloc(a->ngroups * WORDS_PER_GROUP, sizeof(uint64_t));
	a->group_free = calloc(a->ngroups, sizeof(uint16_t));
	if (!a->free || !a->group_free) {
		alloc_destroy(a);
		return -ENOMEM;
	}
	for (uint32_t id = 1; id <= p->npiece; id++)
		if (pool_piece(p, id)->live && piece_attach(a, id)) {
			alloc_destroy(a);
			return -ENOMEM;
		}
	alloc_claim(a, pool_backup_block(p), 1);
	a->cursor = pool_backup_block(p);
	return 0;
}

void alloc_destroy(struct alloc *a)
{
	free(a->free);
	free(a->group_free);
	free(a->pfree);
	a->free = NULL;
	a->group_free = NULL;
	a->pfree = NULL;
	pthread_mutex_destroy(&a->lock);
}

int alloc_claim(struct alloc *a, uint64_t phys, uint64_t n)
{
	int ret = 0;

	pthread_mutex_lock(&a->lock);
	if (phys >= a->nblocks || n > a->nblocks - phys) {
		ret = -EUCLEAN;
		goto out;
	}
	for (uint64_t b = phys; b < phys + n; b++)
		if (!bit_test(a->free, b)) {
			ret = -EUCLEAN;
			goto out;
		}
	mark_range(a, phys, n, true);
out:
	pthread_mutex_unlock(&a->lock);
	return ret;
}

/* Length of the free run starting at b, at most max. */
static uint64_t free_run_at(struct alloc *a, uint64_t b, uint64_t max)
{
	uint64_t n = 0;

	while (n < max && b + n < a->nblocks && bit_test(a->free, b + n)) {
		if ((b + n) % 64 == 0 && max - n >= 64 && b + n + 64 <= a->nblocks &&
		    a->free[(b + n) / 64] == UINT64_MAX) {
			n += 64;
			continue;
		}
		n++;
	}
	return n;
}

/* First free block at or after from (wrapping once); nblocks if none. */
static uint64_t next_free(struct alloc *a, uint64_t from)
{
	for (uint64_t pass = 0; pass < 2; pass++) {
		uint64_t b = pass ? 0 : from;
		uint64_t end = pass ? from : a->nblocks;
		while (b < end) {
			uint64_t g = b / GROUP_BLOCKS;
			if (a->group_free[g] == 0) {
				b = (g + 1) * GROUP_BLOCKS;
				continue;
			}
			uint64_t w = a->free[b / 64] & ~((1ull << (b % 64)) - 1);
			if (w)
				return b / 64 * 64 + (uint64_t)__builtin_ctzll(w);
			b = (b / 64 + 1) * 64;
		}
	}
	return a->nblocks;
}

/* First wholly free 2 MiB group at or after from; ngroups if none. */
static uint64_t next_free_group(struct alloc *a, uint64_t from_group)
{
	for (uint64_t i = 0; i < a->ngroups; i++) {
		uint64_t g = (from_group + i) % a->ngroups;
		if (a->group_free[g] == GROUP_BLOCKS)
			return g;
	}
	return a->ngroups;
}

#define HUGE_1G_BLOCKS (1ull << 18)
#define GROUPS_PER_1G (HUGE_1G_BLOCKS / GROUP_BLOCKS)

/* First group of a wholly free, 1 GiB-aligned gigabyte; UINT64_MAX if none. */
static uint64_t next_free_1g(struct alloc *a)
{
	for (uint64_t g = 0; g + GROUPS_PER_1G <= a->ngroups; g += GROUPS_PER_1G) {
		uint64_t k = 0;
		while (k < GROUPS_PER_1G && a->group_free[g + k] == GROUP_BLOCKS)
			k++;
		if (k == GROUPS_PER_1G)
			return g;
	}
	return UINT64_MAX;
}

/*
 * Add pieces until n blocks are free: each as large as a growth asks for,
 * or as n needs (a gigabyte more when it wants a 1 GiB-aligned gigabyte,
 * so one lies inside), as the heap allows.  False if the heap has no more.
 */
static bool grow(struct alloc *a, uint64_t n, bool want_1g)
{
	while (a->free_blocks < n) {
		uint64_t need = n > a->free_blocks ? (n - a->free_blocks) << PMFUSE_BLOCK_SHIFT : 0;
		uint64_t want = need + (want_1g ? (1ull << 30) : (4ull << 20));
		uint32_t id;
		if (want < a->piece_default)
			want = a->piece_default;
		if (want > (15ull << 30))
			want = 15ull << 30;
		if (pool_piece_add(a->pool, want, 4ull << 20, &id))
			return false;
		if (piece_attach(a, id)) {
			pool_piece_remove(a->pool, id);
			return false;
		}
		a->pieces_added++;
		a->cursor = pool_piece(a->pool, id)->off >> PMFUSE_BLOCK_SHIFT;
		log_debug("data area: piece %u added at %" PRIu64 ", %" PRIu64 " KiB (asked %" PRIu64
			  " KiB)", id, pool_piece(a->pool, id)->off, pool_piece(a->pool, id)->len >> 10,
			  want >> 10);
	}
	return true;
}

/* Give piece id back to the heap if it holds no data and may go. */
static void maybe_shrink(struct alloc *a, uint32_t id)
{
	const struct pool_piece *pc;

	if (!id || id >= a->pfree_cap)
		return;
	pc = pool_piece(a->pool, id);
	if (pc->slot < 0 || a->pfree[id] != pc->len >> PMFUSE_BLOCK_SHIFT)
		return;
	uint64_t first = pc->off >> PMFUSE_BLOCK_SHIFT, n = pc->len >> PMFUSE_BLOCK_SHIFT;
	int r = pool_piece_remove(a->pool, id);
	if (r) {
		/* not now (in a transaction, or no log space): a later free retries */
		log_debug("data area: piece %u stays for now: %s", id, strerror(-r));
		return;
	}
	/* its blocks (all free) are no data any more: used, and not counted */
	for (uint64_t b = first; b < first + n; b++) {
		a->free[b / 64] &= ~(1ull << (b % 64));
		a->group_free[b / GROUP_BLOCKS]--;
	}
	a->free_blocks -= n;
	a->data_blocks -= n;
	a->pfree[id] = 0;
	a->pieces_removed++;
	log_debug("data area: piece %u given back, %" PRIu64 " KiB", id, n << 2);
}

static void trim_locked(struct alloc *a)
{
	for (uint32_t id = 1; id <= a->pool->npiece; id++)
		if (pool_piece(a->pool, id)->live)
			maybe_shrink(a, id);
}

void alloc_trim(struct alloc *a)
{
	pthread_mutex_lock(&a->lock);
	trim_locked(a);
	pthread_mutex_unlock(&a->lock);
}

static int alloc_locked(struct alloc *a, uint64_t n, uint64_t goal, uint64_t align_fblock,
			struct alloc_run *runs, int maxruns)
{
	uint64_t left = n, g1;
	int nr = 0;

	if (n == 0)
		return 0;
	if (a->free_blocks < n &&
	    !grow(a, n, align_fblock != UINT64_MAX && align_fblock % (1ull << 18) == 0 &&
		  n >= (1ull << 18))) {
		/* what this growth added goes back: nothing reserved, nothing kept */
		trim_locked(a);
		return -ENOSPC;
	}
	/*
	 * At a 2 MiB boundary of the file, alignment wins over a misaligned
	 * predecessor: the file's first 2 MiB may be small blocks, the rest
	 * lines up.  Otherwise contiguity with the previous block comes first.
	 */
	if (align_fblock != UINT64_MAX && align_fblock % GROUP_BLOCKS == 0 &&
	    goal % GROUP_BLOCKS != 0)
		goal = 0;
	if (goal && goal < a->nblocks && bit_test(a->free, goal)) {
		uint64_t len = free_run_at(a, goal, left);
		runs[nr++] = (struct alloc_run){ goal, len };
		mark_range(a, goal, len, true);
		left -= len;
	} else if (align_fblock != UINT64_MAX && align_fblock % HUGE_1G_BLOCKS == 0 &&
		   left >= HUGE_1G_BLOCKS && (g1 = next_free_1g(a)) != UINT64_MAX) {
		/* a whole gigabyte from a gigabyte boundary: the PUD analogue */
		uint64_t b = g1 * GROUP_BLOCKS;
		runs[nr++] = (struct alloc_run){ b, HUGE_1G_BLOCKS };
		mark_range(a, b, HUGE_1G_BLOCKS, true);
		left -= HUGE_1G_BLOCKS;
		a->cursor = b + HUGE_1G_BLOCKS;
	} else if (align_fblock != UINT64_MAX) {
		/* no predecessor to follow: line up with a free 2 MiB group */
		uint64_t g = next_free_group(a, a->cursor / GROUP_BLOCKS);
		if (g != a->ngroups) {
			uint64_t b = g * GROUP_BLOCKS + align_fblock % GROUP_BLOCKS;
			uint64_t len = free_run_at(a, b, left);
			runs[nr++] = (struct alloc_run){ b, len };
			mark_range(a, b, len, true);
			left -= len;
			a->cursor = b + len;
		}
	}
	/* large requests: whole 2 MiB groups, so huge extents line up */
	while (left >= GROUP_BLOCKS && nr < maxruns) {
		uint64_t g = next_free_group(a, a->cursor / GROUP_BLOCKS);
		if (g == a->ngroups)
			break;
		uint64_t b = g * GROUP_BLOCKS;
		uint64_t len = free_run_at(a, b, left);
		runs[nr++] = (struct alloc_run){ b, len };
		mark_range(a, b, len, true);
		left -= len;
		a->cursor = b + len;
	}
	while (left && nr < maxruns) {
		uint64_t b = next_free(a, a->cursor);
		if (b == a->nblocks)
			break;
		uint64_t len = free_run_at(a, b, left);
		runs[nr++] = (struct alloc_run){ b, len };
		mark_range(a, b, len, true);
		left -= len;
		a->cursor = b + len;
	}
	/* left > 0 only when maxruns ran out: the caller asks again */
	return nr;
}

int alloc_blocks(struct alloc *a, uint64_t n, uint64_t goal,
		 struct alloc_run *runs, int maxruns)
{
	if (fault_alloc())
		return -ENOSPC;
	pthread_mutex_lock(&a->lock);
	int ret = alloc_locked(a, n, goal, UINT64_MAX, runs, maxruns);
	pthread_mutex_unlock(&a->lock);
	return ret;
}

int alloc_blocks_aligned(struct alloc *a, uint64_t n, uint64_t goal, uint64_t fblock,
			 struct alloc_run *runs, int maxruns)
{
	if (fault_alloc())
		return -ENOSPC;
	pthread_mutex_lock(&a->lock);
	int ret = alloc_locked(a, n, goal, fblock, runs, maxruns);
	pthread_mutex_unlock(&a->lock);
	return ret;
}

void alloc_free(struct alloc *a, uint64_t phys, uint64_t n)
{
	pthread_mutex_lock(&a->lock);
	mark_range(a, phys, n, false);
	maybe_shrink(a, pool_piece_of(a->pool, phys));
	pthread_mutex_unlock(&a->lock);
}

uint64_t alloc_free_count(struct alloc *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->free_blocks;
	pthread_mutex_unlock(&a->lock);
	return n;
}

uint64_t alloc_used_blocks(struct alloc *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->data_blocks - a->free_blocks;
	pthread_mutex_unlock(&a->lock);
	return n;
}

void alloc_area(struct alloc *a, uint64_t *blocks, uint64_t *pieces, uint64_t *added,
		uint64_t *removed)
{
	uint64_t n = 0;

	pthread_mutex_lock(&a->lock);
	for (uint32_t id = 1; id <= a->pool->npiece; id++)
		n += pool_piece(a->pool, id)->live;
	*blocks = a->data_blocks;
	*pieces = n;
	*added = a->pieces_added;
	*removed = a->pieces_removed;
	pthread_mutex_unlock(&a->lock);
}
