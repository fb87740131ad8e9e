/*
 * mapping: the DAX-style mapping index (see mapping.h for the entry encoding,
 * the marks and the locking rules).
 */
#include "mapping.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NONE UINT64_MAX

struct mapping_node {
	struct mapping_node *parent;
	uint8_t shift;			/* pages per slot = 1 << shift */
	uint8_t offset;			/* slot in parent */
	uint8_t count;			/* non-empty slots, siblings included */
	uint64_t marks[DAX_NR_MARKS];	/* per slot; OR of the subtree for child slots */
	uint64_t slots[DAX_SLOTS];
	uint64_t **bits;		/* per-slot dirty bitmaps of huge entries, lazily */
};

/* ------------------------------------------------------------------ */
/*
 * entry-lock wait queues: a global hashed table of futex event counts, each
 * with a count of sleepers so that an unlock nobody waits for makes no
 * system call (as the kernel's waitqueue_active() check; it used to be a
 * FUTEX_WAKE per unlocked entry, one per fsync).
 */

#define WAITQ_BITS 6
struct waitq {
	_Alignas(64) _Atomic uint32_t seq;
	_Atomic uint32_t waiters;
};
static struct waitq waitq[1 << WAITQ_BITS];

static struct waitq *waitq_for(const struct mapping *map, uint64_t first)
{
	uint64_t h = ((uintptr_t)map >> 4) * 0x9e3779b97f4a7c15ull ^ first * 0xff51afd7ed558ccdull;
	return &waitq[h >> (64 - WAITQ_BITS)];
}

/*
 * Sleep until the count moves past seen.  The caller registered itself in
 * q->waiters (waitq_prepare) and read seen while holding the mapping lock
 * that the waker takes to unlock the entry, so the waker sees it.
 */
static uint32_t waitq_prepare(struct waitq *q)
{
	atomic_fetch_add(&q->waiters, 1);
	return atomic_load(&q->seq);
}

static void waitq_sleep(struct waitq *q, uint32_t seen)
{
	syscall(SYS_futex, &q->seq, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
	atomic_fetch_sub(&q->waiters, 1);
}

static void waitq_wake(struct waitq *q)
{
	atomic_fetch_add(&q->seq, 1);
	if (atomic_load(&q->waiters))
		syscall(SYS_futex, &q->seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* tree shape */

static inline bool is_node(uint64_t s)
{
	return s && !(s & DAX_VALUE);
}

static inline struct mapping_node *to_node(uint64_t s)
{
	return (struct mapping_node *)(uintptr_t)s;
}

static unsigned order_shift(unsigned order)
{
	return order == DAX_ORDER_1G ? 18 : order == DAX_ORDER_2M ? 6 : 0;
}

static unsigned order_nslots(unsigned order)
{
	return order == DAX_ORDER_2M ? 8 : 1;
}

static uint64_t covered(unsigned height)
{
	return height >= 11 ? NONE : 1ull << (DAX_SHIFT * height);
}

void mapping_init(struct mapping *map)
{
	memset(map, 0, sizeof(*map));
	pthread_mutex_init(&map->lock, NULL);
}

static void free_node(struct mapping_node *n)
{
	for (unsigned i = 0; i < DAX_SLOTS; i++) {
		if (is_node(n->slots[i]))
			free_node(to_node(n->slots[i]));
		if (n->bits)
			free(n->bits[i]);
	}
	free(n->bits);
	free(n);
}

void mapping_destroy(struct mapping *map)
{
	if (map->root)
		free_node(map->root);
	map->root = NULL;
	map->height = 0;
	pthread_mutex_destroy(&map->lock);
}

static struct mapping_node *new_node(struct mapping_node *parent, unsigned shift, unsigned offset)
{
	struct mapping_node *n = calloc(1, sizeof(*n));

	if (n) {
		n->parent = parent;
		n->shift = (uint8_t)shift;
		n->offset = (uint8_t)offset;
	}
	return n;
}

/* Grow the tree until it covers page idx and has a level of shift. */
static int extend(struct mapping *map, uint64_t idx, unsigned shift)
{
	while (idx >= covered(map->height) || map->height * DAX_SHIFT <= shift) {
		if (!map->root) {
			map->height++;
			continue;
		}
		struct mapping_node *n = new_node(NULL, map->height * DAX_SHIFT, 0);
		if (!n)
			return -ENOMEM;
		n->slots[0] = (uint64_t)(uintptr_t)map->root;
		n->count = 1;
		for (int m = 0; m < DAX_NR_MARKS; m++)
			if (map->root->marks[m])
				n->marks[m] = 1;
		map->root->parent = n;
		map->root->offset = 0;
		map->root = n;
		map->height++;
	}
	if (!map->root) {
		map->root = new_node(NULL, (map->height - 1) * DAX_SHIFT, 0);
		if (!map->root)
			return -ENOMEM;
	}
	return 0;
}

/* The node at level shift on the path to idx, created on the way if asked. */
static struct mapping_node *walk_to(struct mapping *map, uint64_t idx, unsigned shift, bool create)
{
	struct mapping_node *n = map->root;

	if (!n || idx >= covered(map->height))
		return NULL;
	while (n->shift > shift) {
		unsigned slot = (idx >> n->shift) & (DAX_SLOTS - 1);
		uint64_t s = n->slots[slot];
		if (!s) {
			if (!create)
				return NULL;
			struct mapping_node *c = new_node(n, n->shift - DAX_SHIFT, slot);
			if (!c)
				return NULL;
			n->slots[slot] = (uint64_t)(uintptr_t)c;
			n->count++;
			s = n->slots[slot];
		}
		if (!is_node(s))
			return NULL;	/* a bigger entry covers it */
		n = to_node(s);
	}
	return n;
}

/* Canonical node and slot of the entry covering idx; false if none. */
static bool find_slot(struct mapping *map, uint64_t idx, struct mapping_node **np, unsigned *sp)
{
	struct mapping_node *n = map->root;

	if (!n || idx >= covered(map->height))
		return false;
	for (;;) {
		unsigned slot = (idx >> n->shift) & (DAX_SLOTS - 1);
		uint64_t s = n->slots[slot];
		if (!s)
			return false;
		if (dax_is_value(s)) {
			if (dax_is_sibling(s))
				slot = (unsigned)dax_block(s);
			*np = n;
			*sp = slot;
			return true;
		}
		n = to_node(s);
	}
}

static uint64_t slot_first(const struct mapping_node *n, unsigned slot, uint64_t idx)
{
	uint64_t span = (uint64_t)DAX_SLOTS << n->shift;

	return (idx & ~(span - 1)) | ((uint64_t)slot << n->shift);
}

/* ------------------------------------------------------------------ */
/* marks */

static void set_mark(struct mapping_node *n, unsigned slot, enum dax_mark m)
{
	while (n) {
		if (n->marks[m] & (1ull << slot))
			return;
		n->marks[m] |= 1ull << slot;
		slot = n->offset;
		n = n->parent;
	}
}

static void clear_mark(struct mapping_node *n, unsigned slot, enum dax_mark m)
{
	while (n) {
		n->marks[m] &= ~(1ull << slot);
		if (n->marks[m])
			return;
		slot = n->offset;
		n = n->parent;
	}
}

static bool has_mark(const struct mapping_node *n, unsigned slot, enum dax_mark m)
{
	return n->marks[m] & (1ull << slot);
}

/* Words of a huge entry's dirty bitmap. */
static size_t bits_words(uint64_t e)
{
	return dax_pages(e) / 64;
}

/* Dirty pages of the canonical entry at n/slot. */
static uint64_t entry_dirty_pages(const struct mapping_node *n, unsigned slot)
{
	uint64_t e = n->slots[slot], c = 0;

	if (!has_mark(n, slot, DAX_DIRTY))
		return 0;
	if (dax_order(e) == DAX_ORDER_4K)
		return 1;
	if (!n->bits || !n->bits[slot])
		return dax_pages(e);	/* DIRTY without a bitmap: all of it */
	for (size_t w = 0; w < bits_words(e); w++)
		c += (uint64_t)__builtin_popcountll(n->bits[slot][w]);
	return c;
}

/* ------------------------------------------------------------------ */
/* insert, lookup, erase */

int mapping_insert(struct mapping *map, uint64_t first, uint64_t entry)
{
	unsigned order = dax_order(entry), shift = order_shift(order);
	unsigned nslots = order_nslots(order), slot;
	struct mapping_node *n;
	int ret;

	if (first & ((1ull << order) - 1))
		return -EINVAL;
	pthread_mutex_lock(&map->lock);
	ret = extend(map, first + (1ull << order) - 1, shift);
	if (ret)
		goto out;
	n = walk_to(map, first, shift, true);
	if (!n) {
		ret = map->root ? -EEXIST : -ENOMEM;
		goto out;
	}
	slot = (first >> shift) & (DAX_SLOTS - 1);
	for (unsigned i = 0; i < nslots; i++)
		if (n->slots[slot + i]) {
			ret = -EEXIST;
			goto out;
		}
	n->slots[slot] = entry & ~DAX_LOCKED;
	for (unsigned i = 1; i < nslots; i++)
		n->slots[slot + i] = ((uint64_t)slot << DAX_PAYLOAD_SHIFT) | DAX_SIBLING | DAX_VALUE;
	n->count += nslots;
	map->nr_entries++;
	if (order != DAX_ORDER_4K)
		map->nr_huge[order == DAX_ORDER_1G]++;
out:
	pthread_mutex_unlock(&map->lock);
	return ret;
}

uint64_t mapping_lookup(struct mapping *map, uint64_t idx, uint64_t *first)
{
	struct mapping_node *n;
	unsigned slot;
	uint64_t e = 0;

	pthread_mutex_lock(&map->lock);
	if (find_slot(map, idx, &n, &slot)) {
		e = n->slots[slot];
		if (first)
			*first = slot_first(n, slot, idx);
	}
	pthread_mutex_unlock(&map->lock);
	return e;
}

/* Empty the canonical slot (and siblings) at n/slot; prune empty nodes. */
static void remove_slot(struct mapping *map, struct mapping_node *n, unsigned slot)
{
	uint64_t e = n->slots[slot];
	unsigned nslots = order_nslots(dax_order(e));

	map->nr_dirty_pages -= entry_dirty_pages(n, slot);
	for (int m = 0; m < DAX_NR_MARKS; m++)
		clear_mark(n, slot, m);
	if (n->bits) {
		free(n->bits[slot]);
		n->bits[slot] = NULL;
	}
	for (unsigned i = 0; i < nslots; i++)
		n->slots[slot + i] = 0;
	n->count -= nslots;
	map->nr_entries--;
	if (dax_order(e) != DAX_ORDER_4K)
		map->nr_huge[dax_order(e) == DAX_ORDER_1G]--;
	while (n->count == 0) {
		struct mapping_node *p = n->parent;
		free(n->bits);
		if (!p) {
			free(n);
			map->root = NULL;
			map->height = 0;
			return;
		}
		p->slots[n->offset] = 0;
		p->count--;
		free(n);
		n = p;
	}
}

uint64_t mapping_erase(struct mapping *map, uint64_t idx)
{
	struct mapping_node *n;
	unsigned slot;
	uint64_t e = 0;

	pthread_mutex_lock(&map->lock);
	if (find_slot(map, idx, &n, &slot)) {
		e = n->slots[slot];
		remove_slot(map, n, slot);
	}
	pthread_mutex_unlock(&map->lock);
	return e;
}

/* ------------------------------------------------------------------ */
/* dirtiness */

static uint64_t **bits_array(struct mapping_node *n)
{
	if (!n->bits)
		n->bits = calloc(DAX_SLOTS, sizeof(uint64_t *));
	return n->bits;
}

/* Mark pages [p, p + cnt) of the huge canonical entry at n/slot dirty. */
static uint64_t dirty_huge(struct mapping *map, struct mapping_node *n, unsigned slot, uint64_t off,
			   uint64_t cnt)
{
	uint64_t e = n->slots[slot], added = 0;
	bool was_dirty = has_mark(n, slot, DAX_DIRTY);
	uint64_t **ba = bits_array(n);

	if (was_dirty && (!ba || !ba[slot]))
		return 0;	/* already wholly dirty */
	if (ba && !ba[slot] && !was_dirty)
		ba[slot] = calloc(bits_words(e), sizeof(uint64_t));
	if (!ba || !ba[slot]) {
		/* no memory for the bitmap: the whole entry counts as dirty */
		added = dax_pages(e) - entry_dirty_pages(n, slot);
		if (ba && ba[slot]) {
			free(ba[slot]);
			ba[slot] = NULL;
		}
	} else {
		for (uint64_t p = off; p < off + cnt; p++) {
			uint64_t bit = 1ull << (p % 64);
			if (!(ba[slot][p / 64] & bit)) {
				ba[slot][p / 64] |= bit;
				added++;
			}
		}
	}
	set_mark(n, slot, DAX_DIRTY);
	map->nr_dirty_pages += added;
	return added;
}

uint64_t mapping_mark_dirty(struct mapping *map, uint64_t idx, uint64_t cnt)
{
	uint64_t end = idx + cnt, added = 0;

	pthread_mutex_lock(&map->lock);
	while (idx < end) {
		struct mapping_node *n;
		unsigned slot;
		if (!find_slot(map, idx, &n, &slot)) {
			idx++;
			continue;
		}
		uint64_t first = slot_first(n, slot, idx), e = n->slots[slot];
		uint64_t stop = first + dax_pages(e) < end ? first + dax_pages(e) : end;
		if (dax_order(e) == DAX_ORDER_4K) {
			if (!has_mark(n, slot, DAX_DIRTY)) {
				set_mark(n, slot, DAX_DIRTY);
				map->nr_dirty_pages++;
				added++;
			}
		} else {
			added += dirty_huge(map, n, slot, idx - first, stop - idx);
		}
		idx = stop;
	}
	pthread_mutex_unlock(&map->lock);
	return added;
}

/* First page in [start, end) under n (covering base..) whose entry has mark m. */
static uint64_t find_in(const struct mapping_node *n, uint64_t base, uint64_t start, uint64_t end,
			enum dax_mark m)
{
	unsigned slot = start > base ? (unsigned)((start - base) >> n->shift) : 0;

	/* starting inside a multi-slot entry: its marks are on the canonical slot */
	if (slot < DAX_SLOTS && dax_is_value(n->slots[slot]) && dax_is_sibling(n->slots[slot]))
		slot = (unsigned)dax_block(n->slots[slot]);
	for (; slot < DAX_SLOTS; slot++) {
		uint64_t sbase = base + ((uint64_t)slot << n->shift);
		if (sbase >= end)
			break;
		if (!has_mark(n, slot, m))
			continue;
		uint64_t s = n->slots[slot];
		if (dax_is_value(s))
			return sbase > start ? sbase : start;
		uint64_t r = find_in(to_node(s), sbase, start, end, m);
		if (r != NONE)
			return r;
	}
	return NONE;
}

uint64_t mapping_find_marked(struct mapping *map, uint64_t start, uint64_t end, enum dax_mark m)
{
	uint64_t r = NONE;

	pthread_mutex_lock(&map->lock);
	if (map->root && start < covered(map->height))
		r = find_in(map->root, 0, start, end, m);
	pthread_mutex_unlock(&map->lock);
	return r;
}

void mapping_tag_towrite(struct mapping *map, uint64_t start, uint64_t end)
{
	pthread_mutex_lock(&map->lock);
	while (map->root && start < end && start < covered(map->height)) {
		struct mapping_node *n;
		unsigned slot;
		uint64_t p = find_in(map->root, 0, start, end, DAX_DIRTY);
		if (p == NONE || !find_slot(map, p, &n, &slot))
			break;
		set_mark(n, slot, DAX_TOWRITE);
		start = slot_first(n, slot, p) + dax_pages(n->slots[slot]);
	}
	pthread_mutex_unlock(&map->lock);
}

uint64_t mapping_clean_entry(struct mapping *map, uint64_t idx, mapping_run_fn fn, void *ctx)
{
	struct mapping_node *n;
	uint64_t *bits = NULL, e, first, cleaned;
	unsigned slot;

	/*
	 * Under the tree lock: take the dirty state and clear it.  A write that
	 * lands after this re-marks the page and is flushed next time; one that
	 * landed before is covered by the flush below, which runs after.
	 */
	pthread_mutex_lock(&map->lock);
	if (!find_slot(map, idx, &n, &slot) || !has_mark(n, slot, DAX_DIRTY)) {
		if (map->root && find_slot(map, idx, &n, &slot))
			clear_mark(n, slot, DAX_TOWRITE);
		pthread_mutex_unlock(&map->lock);
		return 0;
	}
	e = n->slots[slot];
	first = slot_first(n, slot, idx);
	cleaned = entry_dirty_pages(n, slot);
	if (n->bits) {
		bits = n->bits[slot];
		n->bits[slot] = NULL;
	}
	clear_mark(n, slot, DAX_DIRTY);
	clear_mark(n, slot, DAX_TOWRITE);
	map->nr_dirty_pages -= cleaned;
	pthread_mutex_unlock(&map->lock);

	if (dax_order(e) == DAX_ORDER_4K || !bits) {
		fn(ctx, e, first, dax_pages(e));
	} else {
		/* runs of set bits: adjacent dirty pages become one flush */
		uint64_t pages = dax_pages(e), p = 0;
		while (p < pages) {
			while (p < pages && !(bits[p / 64] >> (p % 64) & 1))
				p++;
			uint64_t q = p;
			while (q < pages && (bits[q / 64] >> (q % 64) & 1))
				q++;
			if (q > p)
				fn(ctx, e, first + p, q - p);
			p = q;
		}
	}
	free(bits);
	return cleaned;
}

/* ------------------------------------------------------------------ */
/* split */

struct split_src {
	uint64_t entry;		/* the huge entry being split */
	uint64_t first;		/* its first page */
	const uint64_t *bits;	/* its dirty bitmap, or NULL */
	bool dirty, towrite;
	unsigned corder;	/* order of the new entries */
	uint64_t entries;	/* new canonical entries made */
};

/* Were any of the old entry's pages [pg, pg + n) dirty? */
static bool src_dirty(const struct split_src *s, uint64_t pg, uint64_t n)
{
	if (!s->dirty)
		return false;
	if (!s->bits)
		return true;
	for (uint64_t p = pg; p < pg + n; p++)
		if (s->bits[p / 64] >> (p % 64) & 1)
			return true;
	return false;
}

/*
 * Build the subtree that replaces one slot of the huge entry: a node at
 * shift covering pages [base, base + 64 << shift), filled down to entries
 * of the new order.  NULL on ENOMEM (nothing left allocated).
 */
static struct mapping_node *build(struct split_src *s, struct mapping_node *parent, unsigned offset,
			     unsigned shift, uint64_t base)
{
	struct mapping_node *n = new_node(parent, shift, offset);
	unsigned cshift = order_shift(s->corder), step = order_nslots(s->corder);

	if (!n)
		return NULL;
	for (unsigned slot = 0; slot < DAX_SLOTS; slot += shift == cshift ? step : 1) {
		uint64_t sbase = base + ((uint64_t)slot << shift);
		uint64_t pg = sbase - s->first;
		if (shift > cshift) {
			struct mapping_node *c = build(s, n, slot, shift - DAX_SHIFT, sbase);
			if (!c)
				goto fail;
			n->slots[slot] = (uint64_t)(uintptr_t)c;
			n->count++;
			for (int m = 0; m < DAX_NR_MARKS; m++)
				if (c->marks[m])
					n->marks[m] |= 1ull << slot;
			continue;
		}
		uint64_t pages = 1ull << s->corder, e = s->entry;
		n->slots[slot] = dax_is_zero(e) ? dax_mk_entry(0, s->corder, DAX_ZERO)
					       : dax_mk_entry(dax_block(e) + pg, s->corder, e & DAX_EMPTY);
		for (unsigned i = 1; i < step; i++)
			n->slots[slot + i] = ((uint64_t)slot << DAX_PAYLOAD_SHIFT) | DAX_SIBLING | DAX_VALUE;
		n->count += step;
		s->entries++;
		if (!src_dirty(s, pg, pages))
			continue;
		if (s->corder != DAX_ORDER_4K && s->bits) {
			/* keep page granularity; without memory the entry is wholly dirty */
			uint64_t *cb = calloc(pages / 64, sizeof(uint64_t));
			if (cb && bits_array(n)) {
				memcpy(cb, &s->bits[pg / 64], pages / 64 * sizeof(uint64_t));
				n->bits[slot] = cb;
			} else {
				free(cb);
			}
		}
		n->marks[DAX_DIRTY] |= 1ull << slot;
		if (s->towrite)
			n->marks[DAX_TOWRITE] |= 1ull << slot;
	}
	return n;
fail:
	free_node(n);
	return NULL;
}

static uint64_t subtree_dirty(const struct mapping_node *n)
{
	uint64_t d = 0;

	for (unsigned s = 0; s < DAX_SLOTS; s++) {
		uint64_t e = n->slots[s];
		if (is_node(e))
			d += subtree_dirty(to_node(e));
		else if (dax_is_value(e) && !dax_is_sibling(e))
			d += entry_dirty_pages(n, s);
	}
	return d;
}

int mapping_split(struct mapping *map, uint64_t idx)
{
	struct mapping_node *n, *kids[8] = { 0 };
	unsigned slot, nslots;
	int ret = 0;

	pthread_mutex_lock(&map->lock);
	if (!find_slot(map, idx, &n, &slot) || dax_order(n->slots[slot]) == DAX_ORDER_4K) {
		ret = -ENOENT;
		goto out;
	}
	uint64_t e = n->slots[slot];
	if (dax_is_locked(e)) {
		ret = -EBUSY;
		goto out;
	}
	struct split_src src = {
		.entry = e,
		.first = slot_first(n, slot, idx),
		.bits = n->bits ? n->bits[slot] : NULL,
		.dirty = has_mark(n, slot, DAX_DIRTY),
		.towrite = has_mark(n, slot, DAX_TOWRITE),
		.corder = dax_order(e) == DAX_ORDER_1G ? DAX_ORDER_2M : DAX_ORDER_4K,
	};
	nslots = order_nslots(dax_order(e));
	/* build everything first: on ENOMEM the huge entry stays whole */
	for (unsigned k = 0; k < nslots; k++) {
		kids[k] = build(&src, n, slot + k, n->shift - DAX_SHIFT,
				src.first + ((uint64_t)k << n->shift));
		if (!kids[k]) {
			for (unsigned j = 0; j < k; j++)
				free_node(kids[j]);
			ret = -ENOMEM;
			goto out;
		}
	}
	uint64_t dirty_before = entry_dirty_pages(n, slot), dirty_after = 0;
	for (int m = 0; m < DAX_NR_MARKS; m++)
		clear_mark(n, slot, m);
	if (n->bits) {
		free(n->bits[slot]);
		n->bits[slot] = NULL;
	}
	for (unsigned k = 0; k < nslots; k++) {
		n->slots[slot + k] = (uint64_t)(uintptr_t)kids[k];
		for (int m = 0; m < DAX_NR_MARKS; m++)
			if (kids[k]->marks[m])
				set_mark(n, slot + k, m);
		dirty_after += subtree_dirty(kids[k]);
	}
	map->nr_entries += src.entries - 1;
	map->nr_huge[dax_order(e) == DAX_ORDER_1G]--;
	if (src.corder == DAX_ORDER_2M)
		map->nr_huge[0] += src.entries;
	/* a bitmap lost to ENOMEM widens dirtiness, never narrows it */
	map->nr_dirty_pages += dirty_after - dirty_before;
out:
	pthread_mutex_unlock(&map->lock);
	return ret;
}

/* ------------------------------------------------------------------ */
/* entry locks */

uint64_t mapping_lock_entry(struct mapping *map, uint64_t idx)
{
	struct mapping_node *n;
	unsigned slot;

	pthread_mutex_lock(&map->lock);
	for (;;) {
		if (!find_slot(map, idx, &n, &slot)) {
			pthread_mutex_unlock(&map->lock);
			return 0;
		}
		uint64_t e = n->slots[slot];
		if (!dax_is_locked(e)) {
			n->slots[slot] = e | DAX_LOCKED;
			pthread_mutex_unlock(&map->lock);
			return e;
		}
		struct waitq *q = waitq_for(map, slot_first(n, slot, idx));
		uint32_t seen = waitq_prepare(q);
		pthread_mutex_unlock(&map->lock);
		waitq_sleep(q, seen);
		pthread_mutex_lock(&map->lock);
	}
}

void mapping_unlock_entry(struct mapping *map, uint64_t idx)
{
	struct mapping_node *n;
	unsigned slot;
	struct waitq *q = NULL;

	pthread_mutex_lock(&map->lock);
	if (find_slot(map, idx, &n, &slot)) {
		n->slots[slot] &= ~DAX_LOCKED;
		q = waitq_for(map, slot_first(n, slot, idx));
	}
	pthread_mutex_unlock(&map->lock);
	if (q)
		waitq_wake(q);
}
