/*
 * fmap: radix-tree file map.  An entry at level L covers 64^L file blocks
 * and is a hole (0), a leaf mapping all of them to one contiguous physical
 * run ((phys << 1) | 1), or (L >= 1) the offset of a 64-slot node one level
 * down.  Leaves can sit at any level, so a 2 MiB- or 1 GiB-sized extent is
 * a handful of entries, never 512 or 262144 of them.  Unmapping part of a
 * leaf splits it into a node of 64 smaller leaves first -- the persistent
 * twin of splitting a PMD entry.
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
		uint64_t span = fmap_span(level);
		if (e == 0) {
			*count = base + span - fblock;
			return 0;
		}
		if (pmfuse_map_is_leaf(e)) {
			if (!leaf_ok(p, e, level))
				return -EUCLEAN;
			*phys = pmfuse_map_phys(e) + (fblock - base);
			*count = base + span - fblock;
			return 1;
		}
		if (level == 0 || !node_ok(p, e))
			return -EUCLEAN;
		level--;
		uint64_t idx = (fblock - base) >> (PMFUSE_MAP_SHIFT * level);
		base += idx << (PMFUSE_MAP_SHIFT * level);
		e = node_at(p, e)->slot[idx];
	}
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

/* 64 leaves mapping one contiguous physical run: one leaf a level up does it. */
static bool node_collapsible(const struct pmfuse_mapnode *node, uint64_t cspan)
{
	uint64_t first = node->slot[0];

	if (!pmfuse_map_is_leaf(first))
		return false;
	for (unsigned i = 1; i < PMFUSE_MAP_SLOTS; i++)
		if (node->slot[i] != pmfuse_map_leaf(pmfuse_map_phys(first) + i * cspan))
			return false;
	return true;
}

static int map_range(const struct pool *p, uint64_t *slot, bool fresh, unsigned level,
		     uint64_t base, uint64_t fblock, uint64_t phys, uint64_t n)
{
	uint64_t span = fmap_span(level), e = *slot;
	bool node_fresh = false;

	if (e == 0 && fblock == base && n == span) {
		entry_set(slot, pmfuse_map_leaf(phys), fresh);
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
		uint64_t idx = (fblock - base) / cspan;
		uint64_t cbase = base + idx * cspan;
		uint64_t len = cbase + cspan - fblock;
		if (len > n)
			len = n;
		int ret = map_range(p, &node->slot[idx], node_fresh, level - 1, cbase,
				    fblock, phys, len);
		if (ret)
			return ret;
		fblock += len;
		phys += len;
		n -= len;
	}
	if (node_collapsible(node, cspan)) {
		uint64_t leaf = node->slot[0];
		pmemobj_tx_free(pmemobj_oid(node));
		entry_set(slot, leaf, fresh);
	}
	return 0;
}

int fmap_map(const struct pool *p, struct pmfuse_inode *pi,
	     uint64_t fblock, uint64_t phys, uint64_t n)
{
	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	while (fblock + n > fmap_span(pi->map_height)) {
		if (pi->map_height == PMFUSE_MAP_MAX_HEIGHT)
			return -EFBIG;
		pmemobj_tx_add_range_direct(&pi->map_root, sizeof(pi->map_root) +
					    sizeof(pi->map_height));
		if (pi->map_root) {
			uint64_t node = new_node(p);
			node_at(p, node)->slot[0] = pi->map_root;
			pi->map_root = node;
		}
		pi->map_height++;
	}
	pmemobj_tx_add_range_direct(&pi->blocks, sizeof(pi->blocks));
	pi->blocks += n;
	return map_range(p, &pi->map_root, false, pi->map_height, 0, fblock, phys, n);
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

static int unmap_range(const struct pool *p, uint64_t *slot, bool fresh, unsigned level,
		       uint64_t base, uint64_t fblock, uint64_t n,
		       struct fmap_freed *freed, uint64_t *nfreed)
{
	uint64_t span = fmap_span(level), e = *slot;
	bool node_fresh = false;
	int ret;

	if (e == 0)
		return 0;
	if (pmfuse_map_is_leaf(e)) {
		if (!leaf_ok(p, e, level))
			return -EUCLEAN;
		if (fblock == base && n == span) {
			ret = freed_add(freed, pmfuse_map_phys(e), span);
			if (ret)
				return ret;
			*nfreed += span;
			entry_set(slot, 0, fresh);
			return 0;
		}
		/* partial: split the leaf into 64 leaves one level down */
		uint64_t node = new_node(p), cspan = fmap_span(level - 1);
		struct pmfuse_mapnode *nn = node_at(p, node);
		for (unsigned i = 0; i < PMFUSE_MAP_SLOTS; i++)
			nn->slot[i] = pmfuse_map_leaf(pmfuse_map_phys(e) + i * cspan);
		entry_set(slot, node, fresh);
		e = node;
		node_fresh = true;
	} else if (level == 0 || !node_ok(p, e)) {
		return -EUCLEAN;
	}
	struct pmfuse_mapnode *node = node_at(p, e);
	uint64_t cspan = fmap_span(level - 1);
	while (n) {
		uint64_t idx = (fblock - base) / cspan;
		uint64_t cbase = base + idx * cspan;
		uint64_t len = cbase + cspan - fblock;
		if (len > n)
			len = n;
		ret = unmap_range(p, &node->slot[idx], node_fresh, level - 1, cbase, fblock, len,
				  freed, nfreed);
		if (ret)
			return ret;
		fblock += len;
		n -= len;
	}
	if (node_empty(node)) {
		pmemobj_tx_free(pmemobj_oid(node));
		entry_set(slot, 0, fresh);
	}
	return 0;
}

int fmap_unmap(const struct pool *p, struct pmfuse_inode *pi,
	       uint64_t fblock, uint64_t n, struct fmap_freed *freed)
{
	uint64_t nfreed = 0, span;
	int ret;

	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	span = fmap_span(pi->map_height);
	if (fblock >= span || n == 0)
		return 0;
	if (n > span - fblock)
		n = span - fblock;
	ret = unmap_range(p, &pi->map_root, false, pi->map_height, 0, fblock, n, freed, &nfreed);
	if (ret)
		return ret;
	pmemobj_tx_add_range_direct(&pi->map_root, sizeof(pi->map_root) + sizeof(pi->map_height) +
				    sizeof(pi->pad0));
	if (pi->map_root == 0)
		pi->map_height = 0;
	if (nfreed) {
		pmemobj_tx_add_range_direct(&pi->blocks, sizeof(pi->blocks));
		pi->blocks = pi->blocks >= nfreed ? pi->blocks - nfreed : 0;
	}
	return 0;
}

void fmap_freed_release(struct alloc *a, struct fmap_freed *f)
{
	for (size_t i = 0; i < f->n; i++)
		alloc_free(a, f->runs[i].phys, f->runs[i].len);
	free(f->runs);
	memset(f, 0, sizeof(*f));
}

static int walk(const struct pool *p, uint64_t e, unsigned level, uint64_t base,
		fmap_leaf_fn cb, fmap_node_fn on_node, void *ctx)
{
	int ret;

	if (e == 0)
		return 0;
	if (pmfuse_map_is_leaf(e)) {
		if (!leaf_ok(p, e, level))
			return -EUCLEAN;
		return cb ? cb(ctx, base, pmfuse_map_phys(e), fmap_span(level)) : 0;
	}
	if (level == 0 || !node_ok(p, e))
		return -EUCLEAN;
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
