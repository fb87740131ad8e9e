/*
 * alloc: a next-fit bitmap allocator with per-2 MiB-group free counts so
 * full groups are skipped in one step and whole free groups (huge extents)
 * are found without scanning bits.
 */
#include "alloc.h"
#include "fault.h"
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_BLOCKS PMFUSE_HUGE_2M_BLOCKS
#define WORDS_PER_GROUP (GROUP_BLOCKS / 64)

static inline bool bit_test(const uint64_t *bm, uint64_t b)
{
	return (bm[b / 64] >> (b % 64)) & 1;
}

static void mark_range(struct alloc *a, uint64_t phys, uint64_t n, bool used)
{
	for (uint64_t b = phys; b < phys + n; b++) {
		if (used) {
			a->used[b / 64] |= 1ull << (b % 64);
			a->group_free[b / GROUP_BLOCKS]--;
		} else {
			a->used[b / 64] &= ~(1ull << (b % 64));
			a->group_free[b / GROUP_BLOCKS]++;
		}
	}
	if (used)
		a->free_blocks -= n;
	else
		a->free_blocks += n;
}

int alloc_init(struct alloc *a, const struct pool *p)
{
	const struct pmfuse_geometry *g = &p->sb->geo;

	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->nblocks = p->size >> PMFUSE_BLOCK_SHIFT;
	a->ngroups = (a->nblocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
	a->used = malloc(a->ngroups * WORDS_PER_GROUP * sizeof(uint64_t));
	a->group_free = calloc(a->ngroups, sizeof(uint16_t));
	if (!a->used || !a->group_free) {
		alloc_destroy(a);
		return -ENOMEM;
	}
	memset(a->used, 0xff, a->ngroups * WORDS_PER_GROUP * sizeof(uint64_t));
	for (uint32_t i = 0; i < g->nruns; i++) {
		uint64_t first = g->runs[i].off >> PMFUSE_BLOCK_SHIFT;
		uint64_t n = g->runs[i].len >> PMFUSE_BLOCK_SHIFT;
		/* everything starts used; a run's blocks become free */
		mark_range(a, first, n, false);
		a->data_blocks += n;
	}
	alloc_claim(a, pool_backup_block(p), 1);
	a->cursor = g->runs[0].off >> PMFUSE_BLOCK_SHIFT;
	return 0;
}

void alloc_destroy(struct alloc *a)
{
	free(a->used);
	free(a->group_free);
	a->used = NULL;
	a->group_free = NULL;
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
		if (bit_test(a->used, b)) {
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

	while (n < max && b + n < a->nblocks && !bit_test(a->used, b + n)) {
		if ((b + n) % 64 == 0 && max - n >= 64 && b + n + 64 <= a->nblocks &&
		    a->used[(b + n) / 64] == 0) {
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
			uint64_t w = a->used[b / 64] | ((1ull << (b % 64)) - 1);
			if (w != UINT64_MAX)
				return b / 64 * 64 + (uint64_t)__builtin_ctzll(~w);
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

static int alloc_locked(struct alloc *a, uint64_t n, uint64_t goal, uint64_t align_fblock,
			struct alloc_run *runs, int maxruns)
{
	uint64_t left = n, g1;
	int nr = 0;

	if (n == 0)
		return 0;
	if (a->free_blocks < n)
		return -ENOSPC;
	/*
	 * At a 2 MiB boundary of the file, alignment wins over a misaligned
	 * predecessor: the file's first 2 MiB may be small blocks, the rest
	 * lines up.  Otherwise contiguity with the previous block comes first.
	 */
	if (align_fblock != UINT64_MAX && align_fblock % GROUP_BLOCKS == 0 &&
	    goal % GROUP_BLOCKS != 0)
		goal = 0;
	if (goal && goal < a->nblocks && !bit_test(a->used, goal)) {
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
