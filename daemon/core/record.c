/*
 * record: the clean-unmount record (format.h, struct pmfuse_record).
 *
 * A mount otherwise reads every inode record and walks every file map to
 * learn which inode numbers and data blocks are free (the truth is the
 * maps: nothing else is persistent).  With a million files that is most of
 * a mount.  So a clean unmount writes down what the mount would compute --
 * used-inode masks, the allocator's bitmap of the data pieces, the huge
 * extent and metadata counts -- in the transaction that marks the region
 * clean, and the next mount takes it instead, when:
 *   - the superblock says clean and lists no orphan,
 *   - the record's stamp is the superblock's mount count (a daemon that
 *     does not know records mounts and unmounts without touching it: its
 *     mount bumps the count, so what it left is stale),
 *   - its checksum holds and it fits the pool (pieces, inode chunks).
 * The mount drops the record in its first transaction, so a record that
 * exists never describes anything but the region as it is.  Whatever
 * fails, the mount rebuilds (and says why in the log).  Inodes are then
 * validated on first use (inode_get), with the mount's own validators plus
 * a check that each block a file map names is in use.  fsck and the tests
 * (PMFUSE_VERIFY_RECORD=1: every clean mount also rebuilds and compares)
 * check the record against a rebuild.
 */
#include "core.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The record the superblock names, if a mount may trust it; NULL (why) if
 * not, with *damaged set when the record itself is bad (not merely there
 * is none, or the region's state makes the mount rebuild anyway).
 */
static const struct pmfuse_record *usable(const struct pool *p, bool *damaged, char *why,
					  size_t whylen)
{
	const struct pmfuse_super *sb = p->sb;
	uint64_t off = sb->record_off;
	const struct pmfuse_record *r;

	*damaged = false;
	if (sb->geo.version < 3 || !off) {
		snprintf(why, whylen, "there is none");
		return NULL;
	}
	if (sb->state != PMFUSE_STATE_CLEAN) {
		snprintf(why, whylen, "the region was not cleanly unmounted");
		return NULL;
	}
	if (sb->orphan_head) {
		snprintf(why, whylen, "orphan inodes are listed");
		return NULL;
	}
	*damaged = true;	/* from here every refusal is of the record itself */
	if (!pool_struct_ok(p, off, sizeof(*r))) {
		snprintf(why, whylen, "its offset %" PRIu64 " is out of range", off);
		return NULL;
	}
	r = pool_ptr(p, off);
	if (r->magic != PMFUSE_RECORD_MAGIC) {
		snprintf(why, whylen, "bad magic");
		return NULL;
	}
	if (r->words > p->size / sizeof(uint64_t) ||
	    !pool_struct_ok(p, off, sizeof(*r) + r->words * sizeof(uint64_t))) {
		snprintf(why, whylen, "its length %" PRIu64 " words is out of range", r->words);
		return NULL;
	}
	if (r->mount_count != sb->mount_count) {
		/* a daemon that knows no records mounted since: not damage */
		*damaged = false;
		snprintf(why, whylen, "stale: written at mount %" PRIu64 ", the region is at %" PRIu64,
			 r->mount_count, sb->mount_count);
		return NULL;
	}
	if (pmfuse_record_sum(r) != r->checksum) {
		snprintf(why, whylen, "checksum mismatch");
		return NULL;
	}
	if (r->ichunks != sb->ichunk_hwm || r->ichunks > r->words) {
		snprintf(why, whylen, "it has %" PRIu64 " inode chunks, the table %" PRIu64,
			 r->ichunks, sb->ichunk_hwm);
		return NULL;
	}
	return r;
}

/* What freeing the record gives back to metadata (pool.c counts the same). */
static int64_t record_cost(const struct pmfuse_record *r)
{
	return (int64_t)pmemobj_alloc_usable_size(pmemobj_oid(r)) + 16;
}

/* ------------------------------------------------------------------ write */

struct write_args {
	struct fs *fs;
	const uint64_t *masks;
	struct pmfuse_record hdr;
};

static int tx_write(void *arg)
{
	struct write_args *a = arg;
	struct pool *p = &a->fs->pool;
	struct pmfuse_super *sb = p->sb;
	size_t size = sizeof(struct pmfuse_record) + a->hdr.words * sizeof(uint64_t);
	PMEMoid oid = pool_tx_alloc(size);
	struct pmfuse_record *r = pmemobj_direct(oid);
	uint64_t np;

	*r = a->hdr;
	memcpy(r->data, a->masks, r->ichunks * sizeof(uint64_t));
	if (alloc_encode(&a->fs->alloc, r->data + r->ichunks, &np) != r->words - r->ichunks ||
	    np != r->npieces)
		return -EAGAIN;		/* cannot happen: nothing runs at unmount */
	r->checksum = pmfuse_record_sum(r);
	/* the record is whole on the media before the superblock names it */
	pmemobj_persist(p->pop, r, size);
	pmemobj_tx_add_range_direct(&sb->state, PMFUSE_SB_MOUNT_SPAN);
	sb->state = PMFUSE_STATE_CLEAN;
	pmemobj_tx_add_range_direct(&sb->record_off, sizeof(sb->record_off));
	sb->record_off = oid.off;
	return 0;
}

int record_write(struct fs *fs)
{
	struct pool *p = &fs->pool;
	uint64_t nchunks = atomic_load(&fs->ichunk_limit), used = 0, npieces;
	int ret;

	/* a mount dropped any earlier record; a daemon's unmount writes one */
	if (p->sb->geo.version < 3 || p->sb->orphan_head || p->sb->record_off ||
	    nchunks != p->sb->ichunk_hwm)
		return -EINVAL;
	/* blocks held for an earlier daemon's maps are free on media, not here */
	if (alloc_held(&fs->alloc))
		return -EBUSY;
	uint64_t *masks = calloc(nchunks ? nchunks : 1, sizeof(uint64_t));
	if (!masks)
		return -ENOMEM;
	/* in use: every number of a chunk that exists, but those free */
	inode_free_masks(fs, masks, nchunks);
	ret = 0;
	for (uint64_t c = 0; c < nchunks; c++) {
		uint64_t all = pool_ichunk(p, c) ? inode_chunk_all(c) : 0;
		if (masks[c] & ~all)
			ret = -EINVAL;	/* free numbers past the table, or inode 0 */
		masks[c] = all & ~masks[c];
		used += (uint64_t)__builtin_popcountll(masks[c]);
	}
	if (!ret && used != fs->used_inodes)
		ret = -EINVAL;		/* the counts disagree: let the next mount rebuild */
	if (!ret) {
		struct write_args a = { fs, masks, {
			.magic = PMFUSE_RECORD_MAGIC,
			.mount_count = p->sb->mount_count,
			.ichunks = nchunks,
			.used_inodes = used,
			.huge_2m = atomic_load(&fs->alloc.huge_2m),
			.huge_1g = atomic_load(&fs->alloc.huge_1g),
			.meta_bytes = atomic_load(&p->meta_bytes),
		} };
		a.hdr.words = nchunks + alloc_encode(&fs->alloc, NULL, &npieces);
		a.hdr.npieces = npieces;
		ret = pool_tx(p, tx_write, &a);
	}
	free(masks);
	return ret;
}

/* ------------------------------------------------------------------- load */

int record_load(struct fs *fs, char *why, size_t whylen)
{
	struct pool *p = &fs->pool;
	bool damaged;
	const struct pmfuse_record *r = usable(p, &damaged, why, whylen);
	int ret;

	if (!r)
		return 0;
	ret = inode_load_table(fs, NULL, NULL, r->data, why, whylen);
	if (!ret && fs->used_inodes != r->used_inodes)
		ret = -EUCLEAN, snprintf(why, whylen, "its inode count differs from its masks");
	if (!ret && !(ret = alloc_init(&fs->alloc, p, false))) {
		ret = alloc_decode(&fs->alloc, r->data + r->ichunks, r->words - r->ichunks,
				   r->npieces, false, why, whylen);
		if (ret)
			alloc_destroy(&fs->alloc);
	}
	if (!ret) {
		fs->ivalid = pool_sparse_zalloc(inode_bitmap_bytes(fs));
		fs->ibad = pool_sparse_zalloc(inode_bitmap_bytes(fs));
		if (!fs->ivalid || !fs->ibad) {
			alloc_destroy(&fs->alloc);
			ret = -ENOMEM;
		}
	}
	if (ret) {
		pool_sparse_free(fs->ivalid, inode_bitmap_bytes(fs));
		pool_sparse_free(fs->ibad, inode_bitmap_bytes(fs));
		fs->ivalid = fs->ibad = NULL;
		fs->used_inodes = 0;
		return ret == -ENOMEM ? ret : 0;
	}
	atomic_store(&fs->alloc.huge_2m, r->huge_2m);
	atomic_store(&fs->alloc.huge_1g, r->huge_1g);
	/* as a rebuild counts it: the record too, which record_drop() gives back */
	atomic_store(&p->meta_bytes, r->meta_bytes + record_cost(r));
	fs->lazy = true;
	return 1;
}

/* ------------------------------------------------------------------ check */

int record_check(struct fs *fs, bool counters, char *why, size_t whylen)
{
	struct pool *p = &fs->pool;
	bool damaged;
	const struct pmfuse_record *r = usable(p, &damaged, why, whylen);
	uint64_t used = 0;

	if (!r)
		return damaged ? -EUCLEAN : -ENOENT;
	for (uint64_t c = 0; c < r->ichunks; c++) {
		for (uint64_t i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
			uint64_t ino = c * PMFUSE_INODES_PER_CHUNK + i;
			const struct pmfuse_inode *pi = inode_record(fs, ino);
			bool in_use = pi && pi->mode != 0, said = r->data[c] >> i & 1;
			if (in_use != said) {
				snprintf(why, whylen, "it says inode %" PRIu64 " is %s, it is %s", ino,
					 said ? "in use" : "free", in_use ? "in use" : "free");
				return -EUCLEAN;
			}
			used += said;
		}
	}
	if (used != r->used_inodes) {
		snprintf(why, whylen, "it counts %" PRIu64 " inodes in use, its masks %" PRIu64,
			 r->used_inodes, used);
		return -EUCLEAN;
	}
	int ret = alloc_decode(&fs->alloc, r->data + r->ichunks, r->words - r->ichunks,
			       r->npieces, true, why, whylen);
	if (ret)
		return ret;
	if (counters && (r->huge_2m != atomic_load(&fs->alloc.huge_2m) ||
			 r->huge_1g != atomic_load(&fs->alloc.huge_1g))) {
		snprintf(why, whylen, "huge extents 2M/1G %" PRId64 "/%" PRId64 ", the maps have %"
			 PRId64 "/%" PRId64, r->huge_2m, r->huge_1g,
			 atomic_load(&fs->alloc.huge_2m), atomic_load(&fs->alloc.huge_1g));
		return -EUCLEAN;
	}
	if (counters && r->meta_bytes + record_cost(r) != atomic_load(&p->meta_bytes)) {
		snprintf(why, whylen, "metadata %" PRId64 " bytes, the heap has %" PRId64,
			 r->meta_bytes + record_cost(r), atomic_load(&p->meta_bytes));
		return -EUCLEAN;
	}
	return 0;
}

/* ------------------------------------------------------------------- drop */

struct drop_args {
	struct pool *p;
	bool object;
};

static int tx_drop(void *arg)
{
	struct drop_args *a = arg;
	struct pmfuse_super *sb = a->p->sb;

	pmemobj_tx_add_range_direct(&sb->record_off, sizeof(sb->record_off));
	/* an offset not known to be an allocated object is only forgotten */
	if (a->object)
		pool_tx_free(pmemobj_oid(pool_ptr(a->p, sb->record_off)));
	sb->record_off = 0;
	return 0;
}

int record_drop(struct pool *p, bool object)
{
	struct drop_args a = { p, object };

	if (!p->sb->record_off)
		return 0;
	return pool_tx(p, tx_drop, &a);
}
