/*
 * pieces: the data area of a region as it grows and shrinks (format.h).
 *
 * A piece is one huge pmemobj allocation; its data is the whole blocks of
 * it after the block that holds the allocation's header (permanent runs:
 * from its first 2 MiB boundary).  So pieces never touch: between two,
 * there is always a block that is not data, and "blocks a and b are in the
 * same piece" means every block between them is too.  Range checks are
 * O(1) on gstart[]/gnext[] and piece[], which are written only here, under
 * the caller's lock, and read without one.
 */
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HUGE_2M (2ull << 20)
#define BLK PMFUSE_BLOCK_SIZE
#define GROUP_OF(off) ((off) / HUGE_2M)
/*
 * The smallest piece growth makes: more than a 2 MiB group of data, so no
 * two pieces start inside one group (pool.h).  A table entry holds more.
 */
#define PIECE_MIN ((2ull << 20) + (256ull << 10))
#define PIECE_STEP (256ull << 10)	/* pmemobj's chunk */

/* Make piece id findable from its groups (set), or not (clear). */
static void publish(struct pool *p, uint32_t id, bool set)
{
	struct pool_piece *pc = &p->piece[id - 1];
	uint64_t off = pc->off, len = pc->len;

	for (uint64_t g = GROUP_OF(off); g <= GROUP_OF(off + len - 1); g++) {
		_Atomic uint32_t *slot = g * HUGE_2M >= off ? &p->gstart[g] : &p->gnext[g];
		if (set)
			atomic_store_explicit(slot, id, memory_order_release);
		else if (atomic_load_explicit(slot, memory_order_relaxed) == id)
			atomic_store_explicit(slot, 0, memory_order_release);
	}
}

/* A free DRAM entry for a piece; its id, or 0 if there are POOL_MAX_PIECES. */
static uint32_t list_slot(struct pool *p)
{
	for (uint32_t i = 0; i < p->npiece; i++)
		if (!p->piece[i].live && atomic_load(&p->piece[i].len) == 0)
			return i + 1;
	return p->npiece < POOL_MAX_PIECES ? ++p->npiece : 0;
}

/* Enter a piece in the DRAM view; its id. */
static void list_set(struct pool *p, uint32_t id, uint64_t obj, uint64_t off, uint64_t len,
		     int64_t slot)
{
	struct pool_piece *pc = &p->piece[id - 1];

	pc->obj = obj;
	pc->slot = slot;
	atomic_store(&pc->off, off);
	atomic_store(&pc->len, len);
	pc->live = true;
	publish(p, id, true);
}

bool pool_pieces_overlap(const struct pool *p, uint64_t off, uint64_t len)
{
	if (!len)
		return false;
	for (uint64_t g = GROUP_OF(off); g <= GROUP_OF(off + len - 1) && g < p->ngroups; g++) {
		uint32_t ids[2] = { atomic_load(&p->gstart[g]), atomic_load(&p->gnext[g]) };
		for (int k = 0; k < 2; k++) {
			if (!ids[k])
				continue;
			const struct pool_piece *pc = &p->piece[ids[k] - 1];
			if (off < pc->off + pc->len && pc->off < off + len)
				return true;
		}
	}
	return false;
}

/* Add a validated piece to the DRAM view: 0, or -EINVAL if it meets another. */
static int load_one(struct pool *p, uint64_t obj, uint64_t off, uint64_t len, int64_t slot,
		    char *why, size_t whylen)
{
	uint32_t id;

	/* a block apart from every other piece on both sides */
	if (pool_pieces_overlap(p, off - BLK, len + 2 * BLK)) {
		snprintf(why, whylen, "data piece [%" PRIu64 ", +%" PRIu64 ") overlaps or touches "
			 "another", off, len);
		return -EINVAL;
	}
	if (!(id = list_slot(p))) {
		snprintf(why, whylen, "more than %u data pieces", POOL_MAX_PIECES);
		return -EINVAL;
	}
	list_set(p, id, obj, off, len, slot);
	return 0;
}

static int load_runs(struct pool *p, char *why, size_t whylen)
{
	const struct pmfuse_geometry *g = &p->sb->geo;
	int ret;

	p->ngroups = (p->size + HUGE_2M - 1) / HUGE_2M;
	p->gstart = calloc(p->ngroups, sizeof(*p->gstart));
	p->gnext = calloc(p->ngroups, sizeof(*p->gnext));
	p->piece = calloc(POOL_MAX_PIECES, sizeof(*p->piece));
	if (!p->gstart || !p->gnext || !p->piece) {
		snprintf(why, whylen, "out of memory for the piece map");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < g->nruns; i++)
		if ((ret = load_one(p, 0, g->runs[i].off, g->runs[i].len, -1, why, whylen)))
			return ret;
	return 0;
}

void pool_pieces_load_runs(struct pool *p)
{
	char why[POOL_WHY];

	load_runs(p, why, sizeof(why));
}

int pool_pieces_load(struct pool *p, char *why, size_t whylen)
{
	const struct pmfuse_geometry *g = &p->sb->geo;
	int ret = load_runs(p, why, whylen);

	if (ret || g->version < 2)
		return ret;
	uint64_t t = p->sb->pieces_off;
	if (!pool_struct_ok(p, t, sizeof(struct pmfuse_pieces))) {
		snprintf(why, whylen, "piece table offset %" PRIu64 " is invalid", t);
		return -EINVAL;
	}
	struct pmfuse_pieces *pt = pool_ptr(p, t);
	if (pt->count > pt->cap || pt->cap == 0 || pt->cap > POOL_MAX_PIECES ||
	    !pool_meta_range_ok(p, t, sizeof(*pt) + pt->cap * sizeof(pt->p[0]))) {
		snprintf(why, whylen, "piece table (%" PRIu64 " of %" PRIu64 " entries) is damaged",
			 pt->count, pt->cap);
		return -EINVAL;
	}
	for (uint64_t i = 0; i < pt->count; i++) {
		const struct pmfuse_piece *e = &pt->p[i];
		/* data starts in the block after the allocation's header */
		if (e->obj < POOL_HEADER_SIZE || e->off != ((e->obj + BLK - 1) & ~(uint64_t)(BLK - 1)) ||
		    e->len % BLK || e->len <= HUGE_2M || e->off > p->size ||
		    e->len > p->size - e->off) {
			snprintf(why, whylen, "data piece %" PRIu64 " [%" PRIu64 ", +%" PRIu64
				 ") is invalid", i, e->off, e->len);
			return -EINVAL;
		}
		if ((ret = load_one(p, e->obj, e->off, e->len, (int64_t)i, why, whylen)))
			return ret;
	}
	/* and the table is no piece's data */
	if (!pool_meta_range_ok(p, t, sizeof(*pt) + pt->cap * sizeof(pt->p[0]))) {
		snprintf(why, whylen, "piece table at offset %" PRIu64 " lies in the data area", t);
		return -EINVAL;
	}
	p->ptab = pt;
	return 0;
}

void pool_pieces_free(struct pool *p)
{
	free(p->gstart);
	free(p->gnext);
	free(p->piece);
	p->gstart = p->gnext = NULL;
	p->piece = NULL;
	p->npiece = 0;
	p->ngroups = 0;
	p->ptab = NULL;
}

uint64_t pool_data_blocks(const struct pool *p)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < p->npiece; i++)
		if (p->piece[i].live)
			n += p->piece[i].len >> PMFUSE_BLOCK_SHIFT;
	return n;
}

/* ---------------------------------------------------------------- growth */

struct add_args {
	struct pool *p;
	struct pobj_action *act;
	struct pmfuse_piece e;
	struct pmfuse_pieces *ntab;	/* out: a bigger table replaced the old */
	uint64_t slot;
	bool published;			/* the reservation is the transaction's */
};

static int tx_add(void *arg)
{
	struct add_args *a = arg;
	struct pmfuse_pieces *t = a->p->ptab;

	if (t->count == t->cap) {
		uint64_t cap = 2 * t->cap;
		PMEMoid n = pool_tx_zalloc(sizeof(*t) + cap * sizeof(t->p[0]));
		struct pmfuse_pieces *nt = pmemobj_direct(n);
		memcpy(nt->p, t->p, t->count * sizeof(t->p[0]));
		nt->count = t->count;
		nt->cap = cap;
		pmemobj_tx_add_range_direct(&a->p->sb->pieces_off, sizeof(uint64_t));
		a->p->sb->pieces_off = n.off;
		pool_tx_free(pmemobj_oid(t));
		a->ntab = t = nt;
	} else {
		pmemobj_tx_add_range_direct(&t->p[t->count], sizeof(t->p[0]));
		pmemobj_tx_add_range_direct(&t->count, sizeof(t->count));
	}
	a->slot = t->count;
	t->p[t->count++] = a->e;
	a->published = true;
	if (pmemobj_tx_publish(a->act, 1))
		pmemobj_tx_abort(ENOMEM);
	return 0;
}

/*
 * Reserve a piece of size bytes, if the heap keeps reserve bytes free
 * beside it (probed with a second reservation, cancelled at once).
 */
static bool reserve(struct pool *p, uint64_t size, uint64_t reserve, struct pobj_action *act,
		    PMEMoid *oid)
{
	struct pobj_action probe;

	*oid = pmemobj_xreserve(p->pop, act, size, PMFUSE_PIECE_TYPE, 0);
	if (OID_IS_NULL(*oid))
		return false;
	if (reserve) {
		PMEMoid r = pmemobj_xreserve(p->pop, &probe, reserve, 0, 0);
		if (OID_IS_NULL(r)) {
			pmemobj_cancel(p->pop, act, 1);
			return false;
		}
		pmemobj_cancel(p->pop, &probe, 1);
	}
	return true;
}

/*
 * Line a reserved piece up with the region's 2 MiB groups (huge pages, and
 * no small partial groups at its ends).  pmemobj puts a huge allocation at
 * the start of the free chunks it picks, so a pad of k chunks reserved
 * first moves the piece k chunks (256 KiB each) on: the best place has the
 * piece's first 2 MiB boundary less than a chunk in.  The pad is cancelled
 * at once: its chunks stay free for metadata.  Where the heap does not do
 * as expected the piece is kept as it comes.  False if it was lost.
 */
static bool align_piece(struct pool *p, uint64_t size, uint64_t reserve_bytes,
			struct pobj_action *act, PMEMoid *oid)
{
	uint64_t want = HUGE_2M - PIECE_STEP + oid->off % PIECE_STEP;
	uint64_t k = ((want + HUGE_2M - oid->off % HUGE_2M) % HUGE_2M) / PIECE_STEP;
	struct pobj_action pad;

	if (!k)
		return true;
	pmemobj_cancel(p->pop, act, 1);
	PMEMoid po = pmemobj_xreserve(p->pop, &pad, k * PIECE_STEP - 16, 0, 0);
	bool ok = reserve(p, size, reserve_bytes, act, oid);
	if (!OID_IS_NULL(po))
		pmemobj_cancel(p->pop, &pad, 1);
	return ok || reserve(p, size, reserve_bytes, act, oid);
}

int pool_piece_add(struct pool *p, uint64_t want, uint64_t min, uint64_t keep, uint32_t *id)
{
	uint64_t reserve_bytes = keep > p->sb->geo.meta_reserve ? keep : p->sb->geo.meta_reserve;
	struct pobj_action act;
	PMEMoid oid;

	if (!p->ptab || pmemobj_tx_stage() != TX_STAGE_NONE)
		return -ENOSPC;
	if (min < PIECE_MIN)
		min = PIECE_MIN;
	/* whole chunks, 1 more than a multiple of 8: the end just past a 2 MiB boundary */
	uint64_t chunks = (want + 16 + PIECE_STEP - 1) / PIECE_STEP;
	chunks += (9 - chunks % 8) % 8;
	want = chunks * PIECE_STEP - 16;
	if (want >= min && reserve(p, want, reserve_bytes, &act, &oid)) {
		if (!align_piece(p, want, reserve_bytes, &act, &oid))
			return -ENOSPC;
	} else {
		/* the heap is short: the largest piece it gives, in chunks */
		uint64_t lo = (min + PIECE_STEP - 1) / PIECE_STEP, hi = want / PIECE_STEP, got = 0;
		while (lo <= hi) {
			uint64_t mid = lo + (hi - lo) / 2;
			if (reserve(p, mid * PIECE_STEP, reserve_bytes, &act, &oid)) {
				pmemobj_cancel(p->pop, &act, 1);
				got = mid;
				lo = mid + 1;
			} else {
				hi = mid - 1;
			}
		}
		if (!got || !reserve(p, got * PIECE_STEP, reserve_bytes, &act, &oid))
			return -ENOSPC;
	}
	uint64_t start = (oid.off + BLK - 1) & ~(uint64_t)(BLK - 1);
	uint64_t end = (oid.off + pmemobj_alloc_usable_size(oid)) & ~(uint64_t)(BLK - 1);
	struct add_args a = { p, &act, { oid.off, start, end - start, 0 }, NULL, 0, false };
	/* a DRAM slot first: after the commit nothing may fail */
	uint32_t nid = list_slot(p);
	if (!nid) {
		pmemobj_cancel(p->pop, &act, 1);
		return -ENOSPC;
	}
	int ret = pool_tx(p, tx_add, &a);
	if (ret) {
		/* once published, the abort cancelled the reservation */
		if (!a.published)
			pmemobj_cancel(p->pop, &act, 1);
		return ret;
	}
	if (a.ntab)
		p->ptab = a.ntab;
	list_set(p, nid, a.e.obj, a.e.off, a.e.len, (int64_t)a.slot);
	*id = nid;
	return 0;
}

/* ---------------------------------------------------------------- removal */

struct remove_args {
	struct pool *p;
	uint64_t slot;
};

static int tx_remove(void *arg)
{
	struct remove_args *a = arg;
	struct pmfuse_pieces *t = a->p->ptab;
	uint64_t last = t->count - 1;

	pmemobj_tx_free(pmemobj_oid(pool_ptr(a->p, t->p[a->slot].obj)));	/* data, not metadata */
	pmemobj_tx_add_range_direct(&t->count, sizeof(t->count));
	if (a->slot != last) {
		pmemobj_tx_add_range_direct(&t->p[a->slot], sizeof(t->p[0]));
		t->p[a->slot] = t->p[last];
	}
	t->count = last;
	return 0;
}

int pool_piece_remove(struct pool *p, uint32_t id)
{
	struct pool_piece *pc = &p->piece[id - 1];

	if (!pc->live || pc->slot < 0 || !p->ptab || pmemobj_tx_stage() != TX_STAGE_NONE)
		return -EINVAL;
	struct remove_args a = { p, (uint64_t)pc->slot };
	uint64_t last = p->ptab->count - 1;
	int ret = pool_tx(p, tx_remove, &a);
	if (ret)
		return ret;
	publish(p, id, false);
	pc->live = false;
	atomic_store(&pc->len, 0);
	/* the piece that moved into the freed slot */
	for (uint32_t i = 0; i < p->npiece && a.slot != last; i++)
		if (p->piece[i].live && p->piece[i].slot == (int64_t)last)
			p->piece[i].slot = (int64_t)a.slot;
	return 0;
}

/* ---------------------------------------------------------------- upgrade */

struct upgrade_args {
	struct pool *p;
	uint64_t tab;
	uint64_t itable;	/* a new inode table (format 5), 0: none */
};

/*
 * Format 5: the flat table becomes a top and leaves; only chunks that exist
 * get a leaf.  The old table goes back to the heap.  The count rises to
 * the default ceiling (one inode per 256 bytes): chunks past the old count
 * cost nothing until used, where the flat table's count cost 8 bytes each.
 */
static void tx_itable_two_level(struct upgrade_args *a)
{
	struct pool *p = a->p;
	const struct pmfuse_itable *old = p->itable;
	uint64_t n = pool_inode_ceiling(p->sb->geo.region_size) / PMFUSE_INODES_PER_CHUNK;
	PMEMoid t;

	if (n < old->nchunks)
		n = old->nchunks;
	t = pool_tx_zalloc(sizeof(struct pmfuse_itable) + pmfuse_itable_entries(5, n) * sizeof(uint64_t));
	struct pmfuse_itable *top = pmemobj_direct(t);

	top->nchunks = n;
	p->sb->geo.max_inodes = n * PMFUSE_INODES_PER_CHUNK;
	for (uint64_t c = 0; c < old->nchunks; c++) {
		if (!old->chunk[c])
			continue;
		*pool_ileaf_slot_tx(p, top, c, false) = old->chunk[c];
	}
	pool_tx_free(pmemobj_oid(old));
	p->sb->geo.itable_off = t.off;
	a->itable = t.off;
}

static int tx_upgrade(void *arg)
{
	struct upgrade_args *a = arg;
	struct pmfuse_super *sb = a->p->sb;

	pmemobj_tx_add_range_direct(sb, sizeof(*sb));
	if (sb->geo.version < 2) {
		PMEMoid t = pool_tx_zalloc(sizeof(struct pmfuse_pieces) +
					   16 * sizeof(struct pmfuse_piece));
		struct pmfuse_pieces *pt = pmemobj_direct(t);

		pt->cap = 16;
		sb->pieces_off = t.off;
		/* format 1 kept a worst-case reserve out of the data area: now it is shared */
		sb->geo.meta_reserve = pool_meta_reserve(sb->geo.region_size);
		a->tab = t.off;
	}
	/*
	 * format 3 adds a leaf flag (unwritten extents) that format 2 never
	 * set, and the inode table's high-water mark; format 4 inode flags
	 * (chattr) that format 3 never set
	 */
	if (sb->geo.version < 3) {
		sb->ichunk_hwm = pool_ichunk_end(a->p, pool_ichunks(a->p));
	}
	if (sb->geo.version < 5)
		tx_itable_two_level(a);
	/* format 6 frees inode chunks: none was, so no generation is above 0 */
	if (sb->geo.version < 6)
		sb->igen_floor = 0;
	sb->geo.version = PMFUSE_VERSION;
	sb->geo.checksum = pool_geometry_checksum(&sb->geo);
	return 0;
}

int pool_upgrade(struct pool *p, char *why, size_t whylen)
{
	struct upgrade_args a = { p, 0, 0 };
	struct pmfuse_geometry bg;

	if (p->sb->geo.version >= PMFUSE_VERSION)
		return 0;
	int ret = pool_tx(p, tx_upgrade, &a);
	if (ret) {
		snprintf(why, whylen, "cannot upgrade the region to format %u: %s", PMFUSE_VERSION,
			 strerror(-ret));
		return ret;
	}
	if (a.tab)
		p->ptab = pool_ptr(p, a.tab);
	if (a.itable)
		p->itable = pool_ptr(p, a.itable);
	/* the backup follows; until it does, fsck reports it stale (and mends it) */
	pool_backup_make(&p->sb->geo, &bg);
	pmemobj_memcpy_persist(p->pop, pool_ptr(p, pool_backup_off(&p->sb->geo)), &bg, sizeof(bg));
	return 0;
}

/* ---------------------------------------------------------------- mount */

int pool_pieces_claim(struct pool *p, struct pool_objects *objs, bool count_meta)
{
	int64_t meta = 0;

	for (uint32_t i = 0; i < p->npiece; i++) {
		const struct pool_piece *pc = &p->piece[i];
		if (pc->live && pc->slot >= 0 &&
		    !pool_objects_claim(objs, pc->obj, pc->off + pc->len - pc->obj))
			return -EUCLEAN;
	}
	/* everything else is metadata, but the objects that hold permanent runs */
	for (size_t k = 0; count_meta && k < objs->n; k++) {
		const struct pool_obj *o = &objs->o[k];
		/* a piece's data starts at its object's first block or 2 MiB boundary */
		uint64_t b = (o->off + BLK - 1) & ~(uint64_t)(BLK - 1);
		uint64_t h = (o->off + HUGE_2M - 1) & ~(HUGE_2M - 1);
		if (!(b < o->off + o->size && pool_piece_of(p, b >> PMFUSE_BLOCK_SHIFT)) &&
		    !(h < o->off + o->size && pool_piece_of(p, h >> PMFUSE_BLOCK_SHIFT)))
			meta += (int64_t)o->size + 16;
	}
	if (count_meta)
		atomic_store(&p->meta_bytes, meta);
	return 0;
}
