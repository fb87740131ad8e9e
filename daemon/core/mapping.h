/*
 * mapping: the per-inode mapping index, modelled on the kernel's DAX
 * exceptional entries in mapping->i_pages (fs/dax.c, lib/xarray.c).
 *
 * A radix tree of 64-slot nodes keyed by page index (file offset / 4 KiB).
 * A slot is empty (0), a pointer to a child node (bit 0 clear), or a value
 * entry (bit 0 set) encoded as
 *
 *   63                          8  7   6 5   4       3      2      1      0
 *   [ block number, or canonical ][ - ][order][SIBLING][EMPTY][ZERO][LOCKED][VALUE]
 *     slot for a sibling
 *
 *   LOCKED   the entry is held by mapping_lock_entry(); others wait for it
 *   ZERO     a hole: reads are served from the shared zero buffer
 *   EMPTY    a placeholder while its blocks are being allocated
 *   SIBLING  the other slots of a multi-slot entry point at the canonical one
 *   order    DAX_ORDER_4K (0), DAX_ORDER_2M (9) or DAX_ORDER_1G (18)
 *
 * An order-0 entry fills one slot of a leaf node (shift 0); an order-9
 * entry fills 8 slots of a shift-6 node (canonical slot + 7 siblings); an
 * order-18 entry fills one slot of a shift-12 node.
 *
 * Marks DIRTY and TOWRITE are per canonical slot and OR-ed into every
 * ancestor, so mapping_find_marked() skips clean subtrees.  A huge entry also
 * carries a 4 KiB-granular dirty bitmap (allocated on first dirtying) so a
 * one-byte write into 2 MiB flushes one page, not 512.
 *
 * Locking: map->lock (the xa_lock analogue) protects the tree, entries and
 * marks; it is held only for short, non-blocking steps.  Entry locks (the
 * LOCKED bit) are held across a flush or an allocation and let different
 * ranges of one file proceed in parallel; waiters sleep in a global hashed
 * table of futex wait queues.
 */
#ifndef PMFUSE_MAPPING_H
#define PMFUSE_MAPPING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define DAX_SHIFT	6
#define DAX_SLOTS	(1u << DAX_SHIFT)

#define DAX_VALUE	(1ull << 0)
#define DAX_LOCKED	(1ull << 1)
#define DAX_ZERO		(1ull << 2)
#define DAX_EMPTY	(1ull << 3)
#define DAX_SIBLING	(1ull << 4)
#define DAX_ORDER_MASK	(3ull << 5)
#define DAX_PAYLOAD_SHIFT 8

#define DAX_ORDER_4K	0u
#define DAX_ORDER_2M	9u
#define DAX_ORDER_1G	18u

enum dax_mark { DAX_DIRTY = 0, DAX_TOWRITE = 1, DAX_NR_MARKS = 2 };

static inline unsigned dax_order_code(unsigned order)
{
	return order == DAX_ORDER_1G ? 2 : order == DAX_ORDER_2M ? 1 : 0;
}

static inline uint64_t dax_mk_entry(uint64_t block, unsigned order, uint64_t flags)
{
	return (block << DAX_PAYLOAD_SHIFT) | ((uint64_t)dax_order_code(order) << 5) | flags | DAX_VALUE;
}

static inline uint64_t dax_mk_zero(unsigned order)
{
	return dax_mk_entry(0, order, DAX_ZERO);
}

static inline bool dax_is_value(uint64_t e) { return e & DAX_VALUE; }
static inline bool dax_is_locked(uint64_t e) { return e & DAX_LOCKED; }
static inline bool dax_is_zero(uint64_t e) { return e & DAX_ZERO; }
static inline bool dax_is_empty(uint64_t e) { return e & DAX_EMPTY; }
static inline bool dax_is_sibling(uint64_t e) { return e & DAX_SIBLING; }
static inline uint64_t dax_block(uint64_t e) { return e >> DAX_PAYLOAD_SHIFT; }

static inline unsigned dax_order(uint64_t e)
{
	static const unsigned orders[] = { DAX_ORDER_4K, DAX_ORDER_2M, DAX_ORDER_1G, DAX_ORDER_4K };
	return orders[(e & DAX_ORDER_MASK) >> 5];
}

static inline uint64_t dax_pages(uint64_t e)
{
	return 1ull << dax_order(e);
}

struct mapping_node;

struct mapping {
	pthread_mutex_t lock;
	struct mapping_node *root;		/* covers pages [0, 64^height) */
	unsigned height;		/* 0: empty tree */
	uint64_t nr_entries;		/* canonical value entries */
	uint64_t nr_dirty_pages;	/* 4 KiB pages marked dirty */
	uint64_t nr_huge[2];		/* 2 MiB, 1 GiB entries */
};

void mapping_init(struct mapping *map);
void mapping_destroy(struct mapping *map);

/*
 * Insert entry (from dax_mk_entry) at page index first, which must be
 * aligned to the entry's order; its whole range must be empty.  0,
 * -EEXIST, -EINVAL (misaligned) or -ENOMEM.
 */
int mapping_insert(struct mapping *map, uint64_t first, uint64_t entry);

/* The entry covering page idx (0 if none); *first gets its first page. */
uint64_t mapping_lookup(struct mapping *map, uint64_t idx, uint64_t *first);

/* Remove the entry covering idx (with its marks); returns it, or 0. */
uint64_t mapping_erase(struct mapping *map, uint64_t idx);

/*
 * Split the huge entry covering idx into entries one size down (1 GiB into
 * 2 MiB, 2 MiB into 4 KiB), keeping exactly which pages were dirty.
 * 0, -ENOENT (no huge entry there) or -ENOMEM.
 */
int mapping_split(struct mapping *map, uint64_t idx);

/* Mark pages [idx, idx + n) of existing entries dirty; returns pages newly dirtied. */
uint64_t mapping_mark_dirty(struct mapping *map, uint64_t idx, uint64_t n);

/* First page >= start (and < end) whose entry carries mark; UINT64_MAX if none. */
uint64_t mapping_find_marked(struct mapping *map, uint64_t start, uint64_t end, enum dax_mark mark);

/* Tag every DIRTY entry in [start, end) TOWRITE (the writeback snapshot). */
void mapping_tag_towrite(struct mapping *map, uint64_t start, uint64_t end);

/*
 * For the entry covering idx: call fn for each run of dirty pages
 * (page, count) and clear its DIRTY and TOWRITE marks, all under the
 * entry lock the caller holds.  Returns the number of dirty pages cleaned.
 */
typedef void (*mapping_run_fn)(void *ctx, uint64_t entry, uint64_t page, uint64_t npages);
uint64_t mapping_clean_entry(struct mapping *map, uint64_t idx, mapping_run_fn fn, void *ctx);

/* Entry locks: returns the entry (0 if none is there, nothing locked). */
uint64_t mapping_lock_entry(struct mapping *map, uint64_t idx);
void mapping_unlock_entry(struct mapping *map, uint64_t idx);

#endif
