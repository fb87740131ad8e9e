/*
 * fmap: radix-tree file map.  An entry at level L covers 64^L file blocks
 * and is a hole (0), a leaf mapping all of them to one contiguous physical
 * run ((phys << 1) | 1), or (L >= 1) the offset of a 64-slot node one level
 * down.  Leaves can sit at any level, so a 2 MiB- or 1 GiB-sized extent is
 * a handful of entries, never 512 or 262144 of them.  Unmapping part of a
 * leaf splits it into a node of 64 smaller leaves first -- the persistent
 * twin of splitting a PMD entry -- and so does converting part of an
 * unwritten leaf to written; 64 leaves that are contiguous again, in the
 * same state, fold back into one.
 */
#include "fmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool node_ok(const struct pool *p, uint64_t e)
{
	return !pmfuse_map_is_leaf(e) && pool_struct_ok(p, e, sizeof(struct pmfuse_mapnode));
}

static bool leaf_ok(const struct pool *p, uint64_t e, unsigned level)
{
	return pool_block_range_ok(p, pmfuse_map_phys(e), fmap_span(level));
}

static struct pmfuse_mapnode *node_at(const struct pool *p, uint64_t e)
{
	return pool_ptr(p, e);
}

/* What an entry at level is, once checked against the pool. */
enum entry_kind { HOLE, LEAF, NODE };

static int entry_kind(const struct pool *p, uint64_t e, unsigned level)
{
	if (e == 0)
		return HOLE;
	if (pmfuse_map_is_leaf(e))
		return leaf_ok(p, e, level) ? LEAF : -EUCLEAN;
	return level > 0 && node_ok(p, e) ? NODE : -EUCLEAN;
}

int fmap_lookup(const struct pool *p, const struct pmfuse_inode *pi,
		uint64_t fblock, uint64_t *phys, uint64_t *count)
{
	unsigned level = pi->map_height;
	uint64_t e = pi->map_root, base = 0;

	if (level > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	if (fblock >= fmap_span(level)) {
		*count = UINT64_MAX - fblock;
		return 0;
	}
	for (;;) {
		int kind = entry_kind(p, e, level);
		if (kind < 0)
			return kind;
		if (kind != NODE) {
			*count = base + fmap_span(level) - fblock;
			if (kind == HOLE)
				return FMAP_HOLE;
			*phys = pmfuse_map_phys(e) + (fblock - base);
			return pmfuse_map_is_unwritten(e) ? FMAP_UNWRITTEN : FMAP_DATA;
		}
		level--;
		uint64_t idx = (fblock - base) >> (PMFUSE_MAP_SHIFT * level);
		base += idx << (PMFUSE_MAP_SHIFT * level);
		e = node_at(p, e)->slot[idx];
	}
}

/*
 * The part of [fblock, +n) that falls in one child of a node at base whose
 * children span cspan blocks each: the child (*idx, starting at *cbase) and
 * how many blocks.
 */
static uint64_t child_part(uint64_t base, uint64_t cspan, uint64_t fblock, uint64_t n,
			   uint64_t *idx, uint64_t *cbase)
{
	uint64_t len;

	*idx = (fblock - base) / cspan;
	*cbase = base + *idx * cspan;
	len = *cbase + cspan - fblock;
	return len < n ? len : n;
}

/* Snapshot an entry unless it lives in a node allocated by this transaction. */
static void entry_set(uint64_t *slot, uint64_t v, bool fresh)
{
	if (!fresh)
		pmemobj_tx_add_range_direct(slot, sizeof(*slot));
	*slot = v;
}

static uint64_t new_node(const struct pool *p)
{
	PMEMoid oid = pool_tx_zalloc(sizeof(struct pmfuse_mapnode));
	(void)p;
	return oid.off;	/* the transaction aborts (longjmp) on failure */
}

/* The leaf for phys in the state (written or unwritten) of leaf e. */
static uint64_t leaf_like(uint64_t e, uint64_t phys)
{
	return pmfuse_map_leaf(phys) | (e & PMFUSE_MAP_UNWRITTEN);
}

/*
 * 64 leaves mapping one contiguous physical run, all in one state: one leaf
 * a level up does it.
 */
static bool node_collapsible(const struct pmfuse_mapnode *node, uint64_t cspan)
{
	uint64_t first = node->slot[0];

	if (!pmfuse_map_is_leaf(first))
		return false;
	for (unsigned i = 1; i < PMFUSE_MAP_SLOTS; i++)
		if (node->slot[i] != leaf_like(first, pmfuse_map_phys(first) + i * cspan))
			return false;
	return true;
}

/* Fold the node at *slot into one leaf if it can be. */
static void try_collapse(uint64_t *slot, bool fresh, struct pmfuse_mapnode *node, uint64_t cspan)
{
	if (node_collapsible(node, cspan)) {
		uint64_t leaf = node->slot[0];
		pool_tx_free(pmemobj_oid(node));
		entry_set(slot, leaf, fresh);
	}
}

/* Replace the leaf at *slot (level >= 1) by a new node of 64 leaves one level down. */
static uint64_t split_leaf(const struct pool *p, uint64_t *slot, bool fresh, unsigned level)
{
	uint64_t e = *slot, node = new_node(p), cspan = fmap_span(level - 1);
	struct pmfuse_mapnode *nn = node_at(p, node);

	for (unsigned i = 0; i < PMFUSE_MAP_SLOTS; i++)
		nn->slot[i] = leaf_like(e, pmfuse_map_phys(e) + i * cspan);
	entry_set(slot, node, fresh);
	return node;
}

static int map_range(const struct pool *p, uint64_t *slot, bool fresh, unsigned level,
		     uint64_t base, uint64_t fblock, uint64_t phys, uint64_t n, uint64_t flag)
{
	uint64_t span = fmap_span(level), e = *slot;
	bool node_fresh = false;

	if (e == 0 && fblock == base && n == span) {
		entry_set(slot, pmfuse_map_leaf(phys) | flag, fresh);
		return 0;
	}
	if (pmfuse_map_is_leaf(e) || level == 0)
		return -EEXIST;		/* callers map holes only */
	if (e == 0) {
		e = new_node(p);
		entry_set(slot, e, fresh);
		node_fresh = true;
	} else if (!node_ok(p, e)) {
		return -EUCLEAN;
	}
	struct pmfuse_mapnode *node = node_at(p, e);
	uint64_t cspan = fmap_span(level - 1);
	while (n) {
		uint64_t idx, cbase, len = child_part(base, cspan, fblock, n, &idx, &cbase);
		int ret = map_range(p, &node->slot[idx], node_fresh, level - 1, cbase,
				    fblock, phys, len, flag);
		if (ret)
			return ret;
		fblock += len;
		phys += len;
		n -= len;
	}
	try_collapse(slot, fresh, node, cspan);
	return 0;
}

#define HUGE_2M		((uint64_t)PMFUSE_HUGE_2M_BLOCKS)
#define HUGE_1G		(HUGE_2M * HUGE_2M)	/* 1 GiB: 512 windows of 2 MiB */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * Is the window [w, w + size) a huge extent (fmap.h)?  1, 0, or -EUCLEAN.
 * It stops at the first hole, misaligned start or discontinuity, so a
 * window that is not huge costs a lookup or two.
 */
static int window_huge(const struct pool *p, const struct pmfuse_inode *pi, uint64_t w,
		       uint64_t size)
{
	uint64_t pos = w, end = w + size, phys, count, expect;
	int r = fmap_lookup(p, pi, w, &phys, &count);

	if (r <= 0 || (phys & (size - 1)))
		return r < 0 ? r : 0;
	for (expect = phys;;) {
		if (count >= end - pos)
			return 1;
		pos += count;
		expect += count;
		r = fmap_lookup(p, pi, pos, &phys, &count);
		if (r <= 0 || phys != expect)
			return r < 0 ? r : 0;
	}
}

/* How many 2 MiB windows of the 1 GiB window at g overlap [lo, hi)? */
static uint64_t windows_touched(uint64_t g, uint64_t lo, uint64_t hi)
{
	uint64_t a = lo > g ? lo : g, b = min_u64(hi, g + HUGE_1G);

	if (a >= b)
		return 0;
	return ((b + HUGE_2M - 1) / HUGE_2M) - a / HUGE_2M;
}

/*
 * After the hole [fb, end) was mapped: the huge extents it completed.  No
 * window overlapping it was huge before (each had a hole), so only those
 * windows can change -- and a 1 GiB window becoming huge absorbs the 2 MiB
 * ones around the mapping that were counted on their own.
 */
static int huge_after_map(const struct pool *p, const struct pmfuse_inode *pi, uint64_t fb,
			  uint64_t end, struct fmap_huge *h)
{
	for (uint64_t g = fb & ~(HUGE_1G - 1); g < end; g += HUGE_1G) {
		int r = window_huge(p, pi, g, HUGE_1G);
		if (r < 0)
			return r;
		if (r) {
			h->n1g++;
			h->n2m -= (int64_t)(HUGE_1G / HUGE_2M - windows_touched(g, fb, end));
			continue;
		}
		uint64_t hi = min_u64(g + HUGE_1G, end);
		for (uint64_t m = (fb > g ? fb : g) & ~(HUGE_2M - 1); m < hi; m += HUGE_2M) {
			r = window_huge(p, pi, m, HUGE_2M);
			if (r < 0)
				return r;
			h->n2m += r;
		}
	}
	return 0;
}

/*
 * Before [fb, end) is unmapped: the huge extents it will break, found by
 * visiting only its mapped parts (holes are skipped a map entry at a time).
 * A broken 1 GiB extent leaves its untouched 2 MiB windows huge on their own.
 */
static int huge_before_unmap(const struct pool *p, const struct pmfuse_inode *pi, uint64_t fb,
			     uint64_t end, struct fmap_huge *h)
{
	uint64_t pos = fb, checked_g = UINT64_MAX, phys, count;
	bool g_huge = false;

	while (pos < end) {
		int r = fmap_lookup(p, pi, pos, &phys, &count);
		if (r < 0)
			return r;
		if (r == 0) {
			pos = count > end - pos ? end : pos + count;
			continue;
		}
		uint64_t g = pos & ~(HUGE_1G - 1);
		if (g != checked_g) {
			r = window_huge(p, pi, g, HUGE_1G);
			if (r < 0)
				return r;
			checked_g = g;
			g_huge = r;
			if (g_huge) {
				h->n1g--;
				h->n2m += (int64_t)(HUGE_1G / HUGE_2M - windows_touched(g, fb, end));
			}
		}
		if (g_huge) {
			pos = g + HUGE_1G;
			continue;
		}
		uint64_t m = pos & ~(HUGE_2M - 1);
		r = window_huge(p, pi, m, HUGE_2M);
		if (r < 0)
			return r;
		h->n2m -= r;
		pos = m + HUGE_2M;
	}
	return 0;
}

int fmap_map(const struct pool *p, struct pmfuse_inode *pi,
	     uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten, struct fmap_huge *huge)
{
	int ret;

	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	while (fblock + n > fmap_span(pi->map_height)) {
		if (pi->map_height == PMFUSE_MAP_MAX_HEIGHT)
			return -EFBIG;
		pmemobj_tx_add_range_direct(&pi->map_root, PMFUSE_INODE_MAP_SPAN);
		if (pi->map_root) {
			uint64_t node = new_node(p);
			node_at(p, node)->slot[0] = pi->map_root;
			pi->map_root = node;
		}
		pi->map_height++;
	}
	pmemobj_tx_add_range_direct(&pi->blocks, sizeof(pi->blocks));
	pi->blocks += n;
	ret = map_range(p, &pi->map_root, false, pi->map_height, 0, fblock, phys, n,
			unwritten ? PMFUSE_MAP_UNWRITTEN : 0);
	if (ret == 0 && huge)
		ret = huge_after_map(p, pi, fblock, fblock + n, huge);
	return ret;
}

static int freed_add(struct fmap_freed *f, uint64_t phys, uint64_t n)
{
	if (f->n && f->runs[f->n - 1].phys + f->runs[f->n - 1].len == phys) {
		f->runs[f->n - 1].len += n;
		return 0;
	}
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 16;
		struct alloc_run *r = realloc(f->runs, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		f->runs = r;
		f->cap = cap;
	}
	f->runs[f->n++] = (struct alloc_run){ phys, n };
	return 0;
}

static bool node_empty(const struct pmfuse_mapnode *node)
{
	for (unsigned i = 0; i < PMFUSE_MAP_SLOTS; i++)
		if (node->slot[i])
			return false;
	return true;
}

/*
 * A change to the leaves of a range that never adds blocks: unmap (leaves
 * go, their runs are collected) or convert (unwritten leaves become
 * written).  A leaf the range covers wholly is handed to whole_leaf; one it
 * covers in part is split first.  Afterwards a node left empty goes, and a
 * node whose 64 leaves are contiguous again in one state folds into one.
 */
struct range_change {
	/* the range covers leaf e at *slot, of span blocks, wholly */
	int (*whole_leaf)(struct range_change *c, uint64_t *slot, bool fresh, uint64_t e,
			  uint64_t span);
	bool (*leaf_untouched)(uint64_t e);	/* leave this leaf (and its blocks) as is */
	struct fmap_freed *freed;		/* unmap */
	uint64_t nfreed;
};

static int change_range(const struct pool *p, uint64_t *slot, bool fresh, unsigned level,
			uint64_t base, uint64_t fblock, uint64_t n, struct range_change *c)
{
	uint64_t span = fmap_span(level), e = *slot;
	bool node_fresh = false;
	int ret = entry_kind(p, e, level);

	if (ret <= HOLE || (ret == LEAF && c->leaf_untouched && c->leaf_untouched(e)))
		return ret;
	if (ret == LEAF) {
		if (fblock == base && n == span)
			return c->whole_leaf(c, slot, fresh, e, span);
		/* partial: split the leaf into 64 leaves one level down */
		e = split_leaf(p, slot, fresh, level);
		node_fresh = true;
	}
	struct pmfuse_mapnode *node = node_at(p, e);
	uint64_t cspan = fmap_span(level - 1);
	while (n) {
		uint64_t idx, cbase, len = child_part(base, cspan, fblock, n, &idx, &cbase);
		ret = change_range(p, &node->slot[idx], node_fresh, level - 1, cbase, fblock, len, c);
		if (ret)
			return ret;
		fblock += len;
		n -= len;
	}
	if (node_empty(node)) {
		pool_tx_free(pmemobj_oid(node));
		entry_set(slot, 0, fresh);
	} else {
		try_collapse(slot, fresh, node, cspan);
	}
	return 0;
}

/* Clip [*fblock, +*n) to what the map covers: 1 if anything is left, 0, or -EUCLEAN. */
static int clip_range(const struct pmfuse_inode *pi, uint64_t fblock, uint64_t *n)
{
	uint64_t span;

	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	span = fmap_span(pi->map_height);
	if (fblock >= span || *n == 0)
		return 0;
	if (*n > span - fblock)
		*n = span - fblock;
	return 1;
}

static int unmap_leaf(struct range_change *c, uint64_t *slot, bool fresh, uint64_t e,
		      uint64_t span)
{
	int ret = freed_add(c->freed, pmfuse_map_phys(e), span);

	if (ret)
		return ret;
	c->nfreed += span;
	entry_set(slot, 0, fresh);
	return 0;
}

int fmap_unmap(const struct pool *p, struct pmfuse_inode *pi,
	       uint64_t fblock, uint64_t n, struct fmap_freed *freed)
{
	struct range_change c = { .whole_leaf = unmap_leaf, .freed = freed };
	int ret = clip_range(pi, fblock, &n);

	if (ret <= 0)
		return ret;
	ret = huge_before_unmap(p, pi, fblock, fblock + n, &freed->huge);
	if (ret)
		return ret;
	ret = change_range(p, &pi->map_root, false, pi->map_height, 0, fblock, n, &c);
	if (ret)
		return ret;
	pmemobj_tx_add_range_direct(&pi->map_root, PMFUSE_INODE_MAP_SPAN);
	if (pi->map_root == 0)
		pi->map_height = 0;
	if (c.nfreed) {
		pmemobj_tx_add_range_direct(&pi->blocks, sizeof(pi->blocks));
		pi->blocks = pi->blocks >= c.nfreed ? pi->blocks - c.nfreed : 0;
	}
	return 0;
}

static bool is_written(uint64_t e)
{
	return !pmfuse_map_is_unwritten(e);
}

static int convert_leaf(struct range_change *c, uint64_t *slot, bool fresh, uint64_t e,
			uint64_t span)
{
	(void)c;
	(void)span;
	entry_set(slot, e & ~PMFUSE_MAP_UNWRITTEN, fresh);
	return 0;
}

int fmap_convert(const struct pool *p, struct pmfuse_inode *pi, uint64_t fblock, uint64_t n)
{
	struct range_change c = { .whole_leaf = convert_leaf, .leaf_untouched = is_written };
	int ret = clip_range(pi, fblock, &n);

	return ret <= 0 ? ret : change_range(p, &pi->map_root, false, pi->map_height, 0, fblock,
					       n, &c);
}

void fmap_freed_release(struct alloc *a, struct fmap_freed *f)
{
	for (size_t i = 0; i < f->n; i++)
		alloc_free(a, f->runs[i].phys, f->runs[i].len);
	alloc_huge_add(a, f->huge.n2m, f->huge.n1g);
	free(f->runs);
	memset(f, 0, sizeof(*f));
}

static int walk(const struct pool *p, uint64_t e, unsigned level, uint64_t base,
		fmap_leaf_fn cb, fmap_node_fn on_node, void *ctx)
{
	int ret = entry_kind(p, e, level);

	if (ret <= HOLE)
		return ret;
	if (ret == LEAF)
		return cb ? cb(ctx, base, pmfuse_map_phys(e), fmap_span(level),
			       pmfuse_map_is_unwritten(e)) : 0;
	if (on_node && (ret = on_node(ctx, e)))
		return ret;
	const struct pmfuse_mapnode *node = node_at(p, e);
	for (unsigned i = 0; i < PMFUSE_MAP_SLOTS; i++) {
		ret = walk(p, node->slot[i], level - 1, base + i * fmap_span(level - 1),
			   cb, on_node, ctx);
		if (ret)
			return ret;
	}
	return 0;
}

int fmap_walk(const struct pool *p, const struct pmfuse_inode *pi,
	      fmap_leaf_fn cb, fmap_node_fn on_node, void *ctx)
{
	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	return walk(p, pi->map_root, pi->map_height, 0, cb, on_node, ctx);
}

static void count_run(struct fmap_extents *e)
{
	uint64_t fb = e->fblock, phys = e->phys, n = e->n;

	if (!n)
		return;
	e->extents++;
	while (n) {
		uint64_t step = 1;
		if (!(fb & (HUGE_1G - 1)) && !(phys & (HUGE_1G - 1)) && n >= HUGE_1G)
			e->huge_1g++, step = HUGE_1G;
		else if (!(fb & (HUGE_2M - 1)) && !(phys & (HUGE_2M - 1)) && n >= HUGE_2M)
			e->huge_2m++, step = HUGE_2M;
		else
			e->small++;
		fb += step;
		phys += step;
		n -= step;
	}
	e->n = 0;
}

void fmap_extents_leaf(struct fmap_extents *e, uint64_t fblock, uint64_t phys, uint64_t n,
		       bool unwritten)
{
	if (unwritten)
		e->unwritten += n;
	if (e->n && e->fblock + e->n == fblock && e->phys + e->n == phys) {
		e->n += n;
		return;
	}
	count_run(e);
	e->fblock = fblock;
	e->phys = phys;
	e->n = n;
}

void fmap_extents_end(struct fmap_extents *e)
{
	count_run(e);
}

static int extents_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	fmap_extents_leaf(ctx, fblock, phys, n, unwritten);
	return 0;
}

int fmap_count_extents(const struct pool *p, const struct pmfuse_inode *pi,
		       struct fmap_extents *e)
{
	int ret = fmap_walk(p, pi, extents_leaf, NULL, e);

	fmap_extents_end(e);
	return ret;
}
