/*
 * fs: mount/unmount and the namespace operations of the pmfuse core.
 * Each operation gathers its locks, checks everything that can fail with a
 * user-visible errno, then runs one transaction, then brings DRAM state
 * (directory indexes, inode free list, allocator) in line with the outcome.
 */
#include "core.h"
#include "acl.h"
#include "dir.h"
#include "fault.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PMFUSE_LINK_MAX 65000u

struct claim_ctx {
	struct alloc *alloc;
	struct pool_objects *objs;
	uint64_t nodes_left;	/* a damaged map sharing nodes must not loop for ever */
	struct fmap_extents ext;	/* of the file being walked: its huge extents */
};

static int claim_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	struct claim_ctx *c = ctx;

	fmap_extents_leaf(&c->ext, fblock, phys, n, unwritten);
	return alloc_claim(c->alloc, phys, n);
}

static int count_node(void *ctx, uint64_t off)
{
	struct claim_ctx *c = ctx;

	if (!pool_objects_claim(c->objs, off, sizeof(struct pmfuse_mapnode)))
		return -EUCLEAN;
	return c->nodes_left-- ? 0 : -EUCLEAN;
}

/*
 * Claim the objects of an inode that deleting it (or changing it) frees:
 * xattr set, long symlink target, directory table, chunks and names.  Each
 * must be an object libpmemobj allocated, used by nobody else.
 */
static int claim_objects(const struct pool *p, struct pool_objects *objs,
			 const struct pmfuse_inode *pi)
{
	if (pi->xattr_off && !pool_object_ok(p, objs, pi->xattr_off, sizeof(struct pmfuse_xattrs)))
		return -EUCLEAN;
	if (S_ISLNK(pi->mode) && pi->size > PMFUSE_INLINE_SYMLINK &&
	    !pool_object_ok(p, objs, pi->dir_off, pi->size))
		return -EUCLEAN;
	if (S_ISDIR(pi->mode))
		return dir_claim_objects(p, objs, pi);
	return 0;
}

/*
 * The lazy check of a file map (fs_check_inode): each block in use by the
 * allocator and claimed by no inode validated before, each node in range
 * and claimed by none.
 */
struct used_ctx {
	struct fs *fs;
	uint64_t nodes_left;	/* a damaged map sharing nodes must not loop for ever */
};

static int used_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	struct used_ctx *c = ctx;
	uint64_t *bm = c->fs->claimed_blocks;

	(void)fblock;
	(void)unwritten;
	if (!alloc_is_used(&c->fs->alloc, phys, n))
		return -EUCLEAN;
	for (uint64_t b = phys; b < phys + n; b++) {
		if (bm[b / 64] >> (b % 64) & 1)
			return -EUCLEAN;
		bm[b / 64] |= 1ull << (b % 64);
	}
	return 0;
}

static int used_node(void *ctx, uint64_t off)
{
	struct used_ctx *c = ctx;

	if (!pool_object_ok(&c->fs->pool, &c->fs->claimed_objs, off, sizeof(struct pmfuse_mapnode)))
		return -EUCLEAN;
	return c->nodes_left-- ? 0 : -EUCLEAN;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * The first inode checked lists the heap (what a rebuild does at mount, so
 * a mount from the record does not; pmemobj_next() takes ~300 ms for the
 * 31,000 objects of a million empty files): objects are claimed against it
 * exactly as a rebuild claims them.  Objects allocated since the mount are
 * not in it, and no inode that was not yet used can name one but by damage.
 * Nothing changes the heap while it is listed: every change goes through an
 * inode, and none (the root included) passes its first-use check before
 * the listing is done -- the check waits for claim_lock, held meanwhile.
 */
static int claims_init(struct fs *fs)
{
	struct timespec t0;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((ret = pool_objects_load(&fs->pool, &fs->claimed_objs)))
		return ret;
	if (pool_pieces_claim(&fs->pool, &fs->claimed_objs, false) ||
	    !(fs->claimed_blocks = pool_sparse_zalloc((fs->alloc.nblocks / 64 + 1) *
						      sizeof(uint64_t)))) {
		pool_objects_free(&fs->claimed_objs);
		return -ENOMEM;
	}
	log_debug("first use of an inode: heap listed (%zu objects) in %.1f ms",
		  fs->claimed_objs.n, ms_since(&t0));
	return 0;
}

int fs_check_inode(struct fs *fs, uint64_t ino, const struct pmfuse_inode *pi, char *why,
		   size_t whylen)
{
	int ret = inode_validate(&fs->pool, ino, pi, why, whylen);

	if (ret)
		return ret;
	/* a clean record lists no orphan: a flag on one is damage here */
	if (pi->flags & PMFUSE_IF_ORPHAN) {
		snprintf(why, whylen, "inode %" PRIu64 ": an orphan that no list holds", ino);
		return -EUCLEAN;
	}
	pthread_mutex_lock(&fs->claim_lock);
	if (!fs->claimed_blocks && (ret = claims_init(fs))) {
		snprintf(why, whylen, "inode %" PRIu64 ": cannot list the heap to check it: %s", ino,
			 strerror(-ret));
		goto out;
	}
	if (S_ISREG(pi->mode)) {
		struct used_ctx c = { fs, fs->pool.size / sizeof(struct pmfuse_mapnode) };
		if (fmap_walk(&fs->pool, pi, used_leaf, used_node, &c)) {
			snprintf(why, whylen, "inode %" PRIu64 ": its file map is damaged, or names "
				 "blocks the allocator has free or another file has", ino);
			ret = -EUCLEAN;
			goto out;
		}
	}
	if (claim_objects(&fs->pool, &fs->claimed_objs, pi)) {
		snprintf(why, whylen, "inode %" PRIu64 ": an xattr, symlink or directory offset "
			 "is out of range or another inode's", ino);
		ret = -EUCLEAN;
	}
out:
	pthread_mutex_unlock(&fs->claim_lock);
	return ret;
}

/* Inode numbers past this have no record (core.h: ichunk_limit). */
static uint64_t inode_limit(struct fs *fs)
{
	uint64_t n = atomic_load(&fs->ichunk_limit) * PMFUSE_INODES_PER_CHUNK;

	return n < fs->max_inodes ? n : fs->max_inodes;
}

/*
 * Walking inode numbers: at the first of a chunk that was never allocated,
 * step *ino to its last -- or to the last of a format 5 leaf that was never
 * allocated -- and say so (a big region's table is mostly those).
 */
static bool skip_absent_chunk(struct fs *fs, uint64_t *ino)
{
	uint64_t c = *ino / PMFUSE_INODES_PER_CHUNK;

	if (*ino % PMFUSE_INODES_PER_CHUNK)
		return false;
	if (pool_ileaf_absent(&fs->pool, c)) {
		*ino += PMFUSE_INODES_PER_CHUNK * PMFUSE_ILEAF_CHUNKS - 1;
		return true;
	}
	if (pool_ichunk(&fs->pool, c))
		return false;
	*ino += PMFUSE_INODES_PER_CHUNK - 1;
	return true;
}

/*
 * Claim every block reachable from a live file and every metadata object
 * a live inode owns; collect orphans to reclaim.
 */
static int scan_files(struct fs *fs, struct pool_objects *objs, uint64_t **orphans,
		      size_t *norphans, char *why, size_t whylen)
{
	/* every node is a distinct object: more visits than fit in the pool is damage */
	struct claim_ctx c = { &fs->alloc, objs, fs->pool.size / sizeof(struct pmfuse_mapnode),
			      { 0 } };
	size_t cap = 0;

	*orphans = NULL;
	*norphans = 0;
	/* chunk by chunk: a big region's table is mostly chunks never allocated */
	for (uint64_t ino = 1; ino < inode_limit(fs); ino++) {
		if (skip_absent_chunk(fs, &ino))
			continue;
		struct pmfuse_inode *pi = inode_record(fs, ino);
		if (!pi || pi->mode == 0)
			continue;
		if (S_ISREG(pi->mode)) {
			c.ext = (struct fmap_extents){ 0 };
			int ret = fmap_walk(&fs->pool, pi, claim_leaf, count_node, &c);
			if (ret) {
				snprintf(why, whylen, "inode %" PRIu64 ": file map is damaged, or shares "
					 "blocks or nodes with another file", ino);
				return -EUCLEAN;
			}
			fmap_extents_end(&c.ext);
			alloc_huge_add(&fs->alloc, (int64_t)c.ext.huge_2m, (int64_t)c.ext.huge_1g);
		}
		if (claim_objects(&fs->pool, objs, pi)) {
			snprintf(why, whylen, "inode %" PRIu64 ": an xattr, symlink or directory offset "
				 "is not an allocated object of its own", ino);
			return -EUCLEAN;
		}
		if (pi->flags & PMFUSE_IF_ORPHAN) {
			if (*norphans == cap) {
				cap = cap ? cap * 2 : 16;
				uint64_t *n = realloc(*orphans, cap * sizeof(uint64_t));
				if (!n)
					return -ENOMEM;
				*orphans = n;
			}
			(*orphans)[(*norphans)++] = ino;
		}
	}
	return 0;
}

struct state_args {
	struct pmfuse_super *sb;
	uint32_t state;
};

static int tx_set_state(void *arg)
{
	struct state_args *a = arg;

	pmemobj_tx_add_range_direct(&a->sb->state, PMFUSE_SB_MOUNT_SPAN);
	a->sb->state = a->state;
	if (a->state == PMFUSE_STATE_MOUNTED) {
		a->sb->last_mount = (uint64_t)time(NULL);
		a->sb->mount_count++;
	}
	return 0;
}

static int set_state(struct fs *fs, uint32_t state)
{
	struct state_args a = { fs->pool.sb, state };

	return pool_tx(&fs->pool, tx_set_state, &a);
}


/* The DRAM side of a struct fs over fs->pool: the inode cache and its locks. */
static int cache_init(struct fs *fs, char *why, size_t whylen)
{
	const struct pmfuse_geometry *g = &fs->pool.sb->geo;

	fs->max_inodes = g->max_inodes;
	/* a format 4 region's count rises as it is upgraded (pieces.c), after the load */
	fs->icap = fs->max_inodes;
	if (g->version < 5 && pool_inode_ceiling(g->region_size) > fs->icap)
		fs->icap = pool_inode_ceiling(g->region_size);
	fs->icache = pool_sparse_zalloc(fs->icap * sizeof(*fs->icache));
	fs->ifree = pool_sparse_zalloc(inode_chunk_words(fs) * sizeof(uint64_t));
	fs->ifree_any = pool_sparse_zalloc((inode_chunk_words(fs) / 64 + 1) * sizeof(uint64_t));
	fs->icommitted = pool_sparse_zalloc(inode_bitmap_bytes(fs));
	if (!fs->icache || !fs->ifree || !fs->ifree_any || !fs->icommitted) {
		snprintf(why, whylen, "out of memory for %" PRIu64 " inodes", fs->max_inodes);
		return -ENOMEM;
	}
	for (int i = 0; i < 64; i++) {
		pthread_mutex_init(&fs->istripe[i], NULL);
		pthread_cond_init(&fs->istripe_wait[i], NULL);
	}
	pthread_mutex_init(&fs->itable_lock, NULL);
	pthread_mutex_init(&fs->claim_lock, NULL);
	pthread_mutex_init(&fs->orphan_lock, NULL);
	pthread_mutex_init(&fs->rename_lock, NULL);
	return 0;
}

/*
 * Free every cached inode, with nothing running any more.  At unmount
 * (reclaim) each is written back first, and unlinked ones still open are
 * reclaimed now; fsck's detach only frees.
 */
static void cache_retire(struct fs *fs, bool reclaim)
{
	for (uint64_t ino = 0; fs->icache && ino < inode_limit(fs); ino++) {
		/*
		 * An inode is cached only if its chunk exists: skip the rest
		 * unread (on a 4 TiB region the array is 2 GiB of untouched
		 * zero pages, and reading them took seconds at unmount).
		 */
		if (skip_absent_chunk(fs, &ino))
			continue;
		struct inode *in = atomic_load(&fs->icache[ino]);
		if (!in)
			continue;
		if (reclaim)
			inode_retire(fs, in);
		inode_free(in);
		atomic_store(&fs->icache[ino], NULL);
	}
}

/* ... and the cache itself. */
static void cache_fini(struct fs *fs, bool reclaim)
{
	cache_retire(fs, reclaim);
	pool_sparse_free(fs->icache, fs->icap * sizeof(*fs->icache));
	pool_sparse_free(fs->ifree, inode_chunk_words(fs) * sizeof(uint64_t));
	pool_sparse_free(fs->ifree_any, (inode_chunk_words(fs) / 64 + 1) * sizeof(uint64_t));
	pool_sparse_free(fs->ivalid, inode_bitmap_bytes(fs));
	pool_sparse_free(fs->ibad, inode_bitmap_bytes(fs));
	pool_sparse_free(fs->icommitted, inode_bitmap_bytes(fs));
	pool_sparse_free(fs->claimed_blocks, (fs->alloc.nblocks / 64 + 1) * sizeof(uint64_t));
	pool_objects_free(&fs->claimed_objs);
}

/*
 * What a mount checks and builds from the media without a record: the
 * inode table, the allocator, and one walk of every file map and object
 * (blocks and objects claimed once, huge extents counted, orphans listed).
 * *record_obj: the superblock's record offset is an allocated object.
 */
static int rebuild(struct fs *fs, uint64_t **orphans, size_t *norphans, bool *record_obj,
		   char *why, size_t whylen)
{
	struct pool_objects objs;
	uint64_t roff = fs->pool.sb->record_off;
	int ret = inode_load_table(fs, NULL, NULL, NULL, why, whylen);

	if (ret)
		return ret;
	ret = alloc_init(&fs->alloc, &fs->pool, true);
	if (ret) {
		snprintf(why, whylen, "out of memory for the block allocator");
		return ret;
	}
	ret = pool_objects_load(&fs->pool, &objs);
	if (ret) {
		snprintf(why, whylen, "cannot list the pmemobj heap's objects: %s", strerror(-ret));
		return ret;
	}
	if (pool_pieces_claim(&fs->pool, &objs, true)) {
		snprintf(why, whylen, "a data piece is not an allocated object of its own");
		ret = -EUCLEAN;
	} else {
		ret = scan_files(fs, &objs, orphans, norphans, why, whylen);
	}
	/* after the files: an offset a file claimed is not the record's to free */
	if (!ret && roff)
		*record_obj = pool_objects_claim(&objs, roff, sizeof(struct pmfuse_record));
	pool_objects_free(&objs);
	return ret;
}

/*
 * Tests (PMFUSE_VERIFY_RECORD=1): a mount that took the clean-unmount
 * record also rebuilds, into a struct fs of its own, and refuses to mount
 * unless the two agree in every inode number, block and counter.
 */
static int verify_record(struct fs *fs, char *why, size_t whylen)
{
	struct fs *t = calloc(1, sizeof(*t));
	uint64_t *orphans = NULL;
	size_t norphans = 0;
	bool obj = false;
	char rwhy[POOL_WHY];
	int ret;

	if (!t)
		return -ENOMEM;
	t->pool = fs->pool;
	ret = cache_init(t, why, whylen);
	if (!ret) {
		/* a damaged region fails the rebuild itself: that is the message */
		ret = rebuild(t, &orphans, &norphans, &obj, why, whylen);
		int r = ret ? 0 : record_check(t, true, rwhy, sizeof(rwhy));
		if (r == -ENOENT)
			snprintf(rwhy, sizeof(rwhy), "it was used, then found unusable");
		else if (!ret && !r && (norphans || !obj))
			r = -EUCLEAN, snprintf(rwhy, sizeof(rwhy), "orphans, or not an object");
		if (r) {
			snprintf(why, whylen, "the clean-unmount record disagrees with a rebuild: %s",
				 rwhy);
			ret = -EUCLEAN;
		}
		alloc_destroy(&t->alloc);
	}
	cache_fini(t, false);
	free(orphans);
	free(t);
	return ret ? -EUCLEAN : 0;
}

/*
 * What a mount builds from the media: after a clean unmount from its
 * record (record.c), otherwise by rebuild(); then checks the root.
 */
static int load(struct fs *fs, uint64_t **orphans, size_t *norphans, bool *record_obj,
		char *why, size_t whylen)
{
	struct pmfuse_super *sb = fs->pool.sb;
	const char *v = getenv("PMFUSE_VERIFY_RECORD");
	char rwhy[POOL_WHY];
	int ret = record_load(fs, rwhy, sizeof(rwhy));

	*record_obj = ret == 1;
	if (ret < 0) {
		snprintf(why, whylen, "out of memory for the clean-unmount record");
		return ret;
	}
	if (ret == 1) {
		fs->mount_state = "record";
		if (v && *v == '1') {
			if ((ret = verify_record(fs, why, whylen)))
				return ret;
			fs->mount_state = "verified";
		}
	} else {
		if (sb->record_off && sb->state == PMFUSE_STATE_CLEAN)
			log_notice("clean-unmount record not used (%s): rebuilding from the inodes",
				   rwhy);
		fs->mount_state = "rebuilt";
		if ((ret = rebuild(fs, orphans, norphans, record_obj, why, whylen)))
			return ret;
	}
	struct pmfuse_inode *root = inode_record(fs, PMFUSE_ROOT_INO);
	if (!root || !S_ISDIR(root->mode)) {
		snprintf(why, whylen, "root inode is missing or not a directory");
		return -EUCLEAN;
	}
	/*
	 * From a record, the root gets the mount's checks now but for its
	 * claims, which need the heap listed: they come with its first use
	 * after the mount (inode_get), as every other inode's.
	 */
	if (!fs->lazy)
		return 0;
	if ((ret = inode_validate(&fs->pool, PMFUSE_ROOT_INO, root, why, whylen)))
		return ret;
	if (claim_objects(&fs->pool, NULL, root)) {
		snprintf(why, whylen, "inode 1: an xattr or directory offset is out of range");
		return -EUCLEAN;
	}
	return 0;
}

/* Right after a mount from the record: list the heap while nobody waits. */
static void *claims_main(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->claim_lock);
	if (!fs->claimed_blocks && claims_init(fs))
		log_debug("listing the heap after the mount failed; the first use retries");
	pthread_mutex_unlock(&fs->claim_lock);
	return NULL;
}

/* Files unlinked while open when the last session ended go now. */
static int reclaim_orphans(struct fs *fs, const uint64_t *orphans, size_t n, char *why,
			   size_t whylen)
{
	for (size_t i = 0; i < n; i++) {
		int ret = inode_reclaim(fs, orphans[i], inode_record(fs, orphans[i]));
		if (ret < 0) {
			snprintf(why, whylen, "cannot reclaim orphan inode %" PRIu64 ": %s",
				 orphans[i], strerror(-ret));
			return ret;
		}
	}
	return 0;
}

int fs_mount(struct fs **out, const char *path, const struct fs_opts *o,
	     char *why, size_t whylen)
{
	struct timespec t0;
	double t_pool, t_scan;
	struct fs *fs = calloc(1, sizeof(*fs));
	uint64_t *orphans = NULL;
	size_t norphans = 0;
	int ret;

	if (!fs)
		return -ENOMEM;
	pthread_mutex_init(&fs->dax_lock, NULL);
	fs->opts = *o;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (o->open_arena)
		pool_use_open_arena();
	ret = pool_open(&fs->pool, path, why, whylen);
	if (ret)
		goto out_free;
	t_pool = ms_since(&t0);
	/* the last daemon never unmounted: pmemobj_open just replayed its logs */
	bool unclean = fs->pool.sb->state != PMFUSE_STATE_CLEAN;
	ret = region_open(&fs->region, path, why, whylen);
	if (ret)
		goto out_pool;
	fs->region_path = realpath(path, NULL);	/* NULL: no direct access */
	if (fs->region.size < fs->pool.size) {
		snprintf(why, whylen, "region mapping is smaller than the pool");
		ret = -EINVAL;
		goto out_region;
	}
	bool record_obj;
	if ((ret = cache_init(fs, why, whylen)) ||
	    (ret = load(fs, &orphans, &norphans, &record_obj, why, whylen)))
		goto out_cache;
	/* the first change to the region: a record never outlives what it describes */
	if ((ret = record_drop(&fs->pool, record_obj))) {
		snprintf(why, whylen, "cannot drop the clean-unmount record");
		goto out_cache;
	}
	t_scan = ms_since(&t0);
	/* before anything is freed: blocks live maps of an earlier daemon reach stay out of reuse */
	if ((ret = dax_quarantine_scan(fs)))
		log_warning("cannot list the region's mappings (%s): blocks freed now may be reused "
			 "while a process of an earlier daemon still maps them", strerror(-ret));
	ret = zero_init(fs);
	if (ret) {
		snprintf(why, whylen, "cannot map the zero buffer");
		goto out_cache;
	}
	if ((ret = reclaim_orphans(fs, orphans, norphans, why, whylen)))
		goto out_zero;
	if (fs->pool.sb->geo.version < PMFUSE_VERSION) {
		unsigned from = fs->pool.sb->geo.version;
		if ((ret = pool_upgrade(&fs->pool, why, whylen)))
			goto out_zero;
		fs->max_inodes = fs->pool.sb->geo.max_inodes;	/* within fs->icap */
		log_notice("%s: upgraded from on-media format %u to %u (%s%s%s%s%s)", path, from,
			   PMFUSE_VERSION, from < 2 ? "data and metadata now share the region; " : "",
			   from < 3 ? "fallocate reserves unwritten extents; " : "",
			   from < 4 ? "files take chattr attributes; " : "",
			   from < 5 ? "the inode table grows as it is used; " : "",
			   "inode chunks whose inodes are all deleted go back to the free space");
	}
	alloc_trim(&fs->alloc);
	inode_trim_chunks(fs);
	dax_quarantine_report(fs);
	if (unclean)
		log_notice("%s was not cleanly unmounted: pool recovered, free space and inodes "
			   "rebuilt from the file maps, %zu orphan inode(s) reclaimed", path, norphans);
	else if (norphans)
		log_notice("%s: %zu orphan inode(s) reclaimed", path, norphans);
	if ((ret = set_state(fs, PMFUSE_STATE_MOUNTED))) {
		snprintf(why, whylen, "cannot update the superblock");
		goto out_zero;
	}
	/*
	 * The kernel holds the root from mount to unmount without a LOOKUP
	 * for it: that reference is this one, or the root would be evicted
	 * -- its name hash thrown away -- after every operation on it.
	 */
	bool lazy = fs->lazy;
	fs->lazy = false;	/* load() checked the root; its claims come at its first use */
	fs->root = inode_get(fs, PMFUSE_ROOT_INO);
	fs->lazy = lazy;
	if (!fs->root) {
		snprintf(why, whylen, "out of memory for the root inode");
		ret = -ENOMEM;
		goto out_zero;
	}
	/* where a slow mount spends its time (pmfuse -o log_level=debug) */
	log_debug("mount: pmemobj_open %.1f ms, inode table, objects and file maps %.1f ms "
		  "(%" PRIu64 " inode slots, %s), orphans and superblock %.1f ms",
		  t_pool, t_scan - t_pool, fs->max_inodes, fs->mount_state,
		  ms_since(&t0) - t_scan);
	fault_arm_from_env();		/* tests only: PMFUSE_FAULT_ALLOC, _CRASH */
	free(orphans);
	*out = fs;
	snprintf(why, whylen, "%zu orphan inode(s) reclaimed", norphans);
	return 0;

out_zero:
	zero_fini(fs);
out_cache:
	alloc_destroy(&fs->alloc);
	cache_fini(fs, false);
	free(orphans);
out_region:
	region_close(&fs->region);
out_pool:
	pool_close(&fs->pool);
out_free:
	free(fs->region_path);
	free(fs);
	return ret;
}

void fs_start(struct fs *fs)
{
	dax_watch_start(fs);
	if (fs->lazy && !fs->claims_started)
		fs->claims_started = !pthread_create(&fs->claims_thread, NULL, claims_main, fs);
}

void fs_unmount(struct fs *fs)
{
	int64_t dirty = atomic_load(&fs->stats.dirty_pages);

	struct timespec t0;
	double t_cache, t_state, t_region;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	dax_watch_stop(fs);
	if (fs->claims_started)
		pthread_join(fs->claims_thread, NULL);
	/* a clean unmount leaves nothing dirty, and no orphan, behind */
	cache_retire(fs, true);
	t_cache = ms_since(&t0);
	/* the record and the clean state are one transaction; without it, the next mount rebuilds */
	int rec = record_write(fs);
	if (rec)
		log_info("no clean-unmount record written (%s): the next mount rebuilds",
			 strerror(-rec));
	if (rec && set_state(fs, PMFUSE_STATE_CLEAN))
		log_err("cannot mark the superblock clean; the next mount will recover");
	t_state = ms_since(&t0);
	cache_fini(fs, false);
	log_info("unmounted: %" PRId64 " dirty page(s) flushed, superblock marked clean%s", dirty,
		 rec ? "" : ", clean-unmount record written");
	zero_fini(fs);
	alloc_destroy(&fs->alloc);
	region_close(&fs->region);
	t_region = ms_since(&t0);
	pool_close(&fs->pool);
	/* the region stays locked until here: a mount waiting for it waits this long */
	log_debug("unmount: inodes %.1f ms, record and superblock %.1f ms, allocator and region %.1f ms, "
		  "pmemobj_close %.1f ms", t_cache, t_state - t_cache, t_region - t_state,
		  ms_since(&t0) - t_region);
	free(fs->region_path);
	free(fs);
}

int fs_attach(struct fs **out, const struct pool *pool, int (*claim)(void *ctx, struct alloc *a),
	      bool (*usable)(void *ctx, uint64_t chunk), void *ctx, char *why, size_t whylen)
{
	struct fs *fs = calloc(1, sizeof(*fs));
	int ret;

	if (!fs)
		return -ENOMEM;
	pthread_mutex_init(&fs->dax_lock, NULL);
	fs->pool = *pool;
	ret = cache_init(fs, why, whylen);
	if (ret)
		goto fail;
	ret = alloc_init(&fs->alloc, &fs->pool, true);
	if (ret) {
		snprintf(why, whylen, "out of memory for the block allocator");
		goto fail;
	}
	if ((ret = claim(ctx, &fs->alloc)) ||
	    (ret = inode_load_table(fs, usable, ctx, NULL, why, whylen))) {
		alloc_destroy(&fs->alloc);
		goto fail;
	}
	*out = fs;
	return 0;
fail:
	cache_fini(fs, false);
	free(fs);
	return ret;
}

void fs_detach(struct fs *fs)
{
	if (!fs)
		return;
	cache_fini(fs, false);
	alloc_destroy(&fs->alloc);
	free(fs);
}

static unsigned mode_to_dtype(mode_t m)
{
	return (m & S_IFMT) >> 12;	/* DT_* == S_IF* >> 12 on Linux */
}

static int check_name(const char *name, size_t *len)
{
	*len = strlen(name);
	if (*len == 0)
		return -ENOENT;
	if (*len > PMFUSE_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* Take a reference to a directory inode (ENOENT / ENOTDIR otherwise). */
static int get_dir(struct fs *fs, uint64_t ino, struct inode **out)
{
	struct inode *in = inode_get(fs, ino);

	if (!in)
		return -ENOENT;
	if (!S_ISDIR(in->pi->mode)) {
		inode_put(fs, in);
		return -ENOTDIR;
	}
	*out = in;
	return 0;
}

/*
 * What every operation on a name begins with: check the name, take the
 * directory and lock it -- shared to read, exclusive to change -- with its
 * name hash built.  On success the caller holds the reference and the
 * lock; on failure neither.
 */
static int lock_parent(struct fs *fs, uint64_t parent, const char *name, bool excl,
		       struct inode **dir, size_t *len)
{
	int ret = check_name(name, len);

	if (ret || (ret = get_dir(fs, parent, dir)))
		return ret;
	ret = excl ? dir_lock_excl(fs, *dir) : dir_lock_shared(fs, *dir);
	if (ret)
		inode_put(fs, *dir);
	return ret;
}

static void unlock_parent(struct fs *fs, struct inode *dir)
{
	pthread_rwlock_unlock(&dir->lock);
	inode_put(fs, dir);
}

static void attr_locked(struct inode *in, struct fs_attr *attr)
{
	pthread_rwlock_rdlock(&in->lock);
	inode_to_attr(in, attr);
	pthread_rwlock_unlock(&in->lock);
}

/*
 * "." and "..": never asked by a path walk (the VFS resolves them), only
 * by the kernel's export operations, to turn a file handle (inode number
 * and generation) back into an inode it no longer holds, and to find a
 * directory's parent.  "." of any inode answers the inode itself; an
 * inode that is free or has no name left (unlinked, removed) answers
 * ENOENT, which the kernel turns into ESTALE -- as it does a generation
 * that differs because the slot was reused.
 */
static int lookup_dot(struct fs *fs, uint64_t ino, bool dotdot, struct fs_attr *attr)
{
	struct inode *in = inode_get(fs, ino), *target = NULL;
	int ret = 0;

	if (!in)
		return -ENOENT;
	if (dotdot && !S_ISDIR(in->pi->mode)) {
		inode_put(fs, in);
		return -ENOTDIR;
	}
	/* a directory's parent changes only under its lock (rename), and
	 * cannot be removed while the directory is in it */
	pthread_rwlock_rdlock(&in->lock);
	if (in->pi->nlink == 0)
		ret = -ENOENT;
	else if (!dotdot)
		target = in;
	else if (!(target = inode_get(fs, in->pi->parent)))
		ret = -EIO;
	pthread_rwlock_unlock(&in->lock);
	if (target) {
		inode_add_lookup(fs, target);
		attr_locked(target, attr);
		if (target != in)
			inode_put(fs, target);
	}
	inode_put(fs, in);
	return ret;
}

int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct fs_attr *attr)
{
	struct inode *dir, *child = NULL;
	struct pmfuse_dirent *de;
	uint32_t slot;
	size_t len;

	if (fs_is_dot_name(name))
		return lookup_dot(fs, parent, name[1] == '.', attr);
	int ret = lock_parent(fs, parent, name, false, &dir, &len);

	if (ret)
		return ret == -EUCLEAN ? -EIO : ret;
	de = dir_find(fs, dir, name, len, &slot, &ret);
	/* take the child before dropping the directory lock: it cannot be freed */
	if (de && !(child = inode_get(fs, de->ino)))
		ret = -EIO;
	unlock_parent(fs, dir);
	if (child) {
		inode_add_lookup(fs, child);
		attr_locked(child, attr);
		inode_put(fs, child);
	}
	return ret == -EUCLEAN ? -EIO : ret;
}

int fs_readdir(struct fs *fs, uint64_t ino, int64_t off, fs_dirent_fn fn, void *ctx)
{
	struct inode *dir;
	bool atime;
	int ret = get_dir(fs, ino, &dir);

	if (ret)
		return ret;
	ret = dir_lock_shared(fs, dir);
	if (ret)
		goto out;
	if (off < 1 && fn(ctx, ".", 1, ino, DT_DIR, 1))
		goto unlock;
	if (off < 2 && fn(ctx, "..", 2, dir->pi->parent, DT_DIR, 2))
		goto unlock;
	/* offsets are slot + 3: a slot never moves while its entry lives */
	uint64_t nslots = dir_nslots(fs, dir);
	for (uint64_t s = off > 2 ? (uint64_t)off - 2 : 0; s < nslots; s++) {
		struct pmfuse_dirent *de = dir_slot(fs, dir, (uint32_t)s);
		if (!de) {
			ret = -EIO;
			break;
		}
		if (!de->ino)
			continue;
		if (fn(ctx, dir_dirent_name(&fs->pool, de), de->name_len, de->ino, de->type,
		       (int64_t)s + 3))
			break;
	}
unlock:
	atime = inode_atime_due(fs, dir->pi);
	pthread_rwlock_unlock(&dir->lock);
	if (atime)
		inode_touch_atime(fs, dir);
out:
	inode_put(fs, dir);
	return ret == -EUCLEAN ? -EIO : ret;
}

static int attr_of(struct fs *fs, uint64_t ino, bool add_lookup, struct fs_attr *attr)
{
	struct inode *in = inode_get(fs, ino);

	if (!in)
		return -ENOENT;
	if (add_lookup)
		inode_add_lookup(fs, in);
	attr_locked(in, attr);
	inode_put(fs, in);
	return 0;
}

int fs_getattr(struct fs *fs, uint64_t ino, struct fs_attr *attr)
{
	return attr_of(fs, ino, false, attr);
}

int fs_ref_ino(struct fs *fs, uint64_t ino, struct fs_attr *attr)
{
	return attr_of(fs, ino, true, attr);
}

static void set_time(struct pmfuse_time *t, const struct timespec *ts)
{
	t->sec = ts->tv_sec;
	t->nsec = (uint32_t)ts->tv_nsec;
}

struct setattr_args {
	struct fs *fs;
	struct inode *in;
	const struct stat *a;
	int valid;
	const struct fs_cred *cr;
	struct fmap_freed *freed;
	const struct xattr_new *acl;	/* the attribute set after a chmod, if it has an ACL */
};

static int tx_setattr(void *arg)
{
	struct setattr_args *sa = arg;
	struct pmfuse_inode *pi = sa->in->pi;
	const struct stat *a = sa->a;
	int valid = sa->valid;

	inode_tx_add(pi);
	if (valid & FS_SET_SIZE) {
		int r = data_tx_truncate(sa->fs, sa->in, (uint64_t)a->st_size, sa->freed);
		if (r)
			return r;
	}
	if (valid & FS_SET_MODE)
		pi->mode = (pi->mode & S_IFMT) | (a->st_mode & 07777);
	if (sa->acl)
		xattr_tx_install(sa->fs, pi, sa->acl);
	/* as chown(2) does: privileges do not follow the file */
	if ((valid & (FS_SET_UID | FS_SET_GID)) && !(valid & FS_SET_MODE))
		pi->mode &= ~inode_setid_on_chown(pi, sa->cr);
	if (valid & FS_SET_UID)
		pi->uid = a->st_uid;
	if (valid & FS_SET_GID)
		pi->gid = a->st_gid;
	inode_tx_touch(pi, valid & FS_SET_ATIME_NOW, valid & FS_SET_MTIME_NOW, true);
	if (valid & FS_SET_ATIME)
		set_time(&pi->atime, &a->st_atim);
	if (valid & FS_SET_MTIME)
		set_time(&pi->mtime, &a->st_mtim);
	if (valid & FS_SET_CTIME)
		set_time(&pi->ctime, &a->st_ctim);
	return 0;
}

/*
 * A chmod keeps an access ACL in step (posix_acl_chmod()): the attribute
 * set with the ACL's owner, mask (or group) and other entries rewritten,
 * if pi has one.
 */
static int chmod_acl(struct fs *fs, const struct pmfuse_inode *pi, mode_t mode,
		     struct xattr_new *out, bool *has_acl)
{
	void *acl;
	size_t len;
	int ret = xattr_copy(fs, pi, ACL_ACCESS_XATTR, &acl, &len);

	if (ret || !acl)
		return ret;
	if (acl_check(acl, len) == 0) {
		acl_chmod(acl, len, mode);
		ret = xattr_new_from(fs, pi, ACL_ACCESS_XATTR, acl, len, out);
		*has_acl = ret == 0;
	}
	free(acl);
	return ret;
}

int fs_setattr(struct fs *fs, uint64_t ino, const struct stat *a, int valid,
	       const struct fs_cred *cr, struct fs_attr *attr)
{
	struct inode *in = inode_get(fs, ino);
	struct fmap_freed freed = { 0 };
	int ret = 0;

	if (!in)
		return -ENOENT;
	/* truncate(2) carries no times: a size change sets mtime and ctime */
	if ((valid & FS_SET_SIZE) && !(valid & FS_SET_MTIME))
		valid |= FS_SET_MTIME_NOW;
	pthread_rwlock_wrlock(&in->lock);
	struct pmfuse_inode *pi = in->pi;
	/* immutable: nothing; append-only: only times set to now (notify_change) */
	int now_like = FS_SET_ATIME_NOW | FS_SET_MTIME_NOW | FS_SET_CMTIME_CACHED;
	if (valid & FS_SET_CMTIME_CACHED)
		now_like |= FS_SET_MTIME | FS_SET_CTIME;
	if ((ret = (valid & ~now_like) ? inode_pinned(pi) : inode_immutable(pi)))
		goto out;
	if (valid & FS_SET_SIZE) {
		if (S_ISDIR(pi->mode)) {
			ret = -EISDIR;
			goto out;
		}
		if (!S_ISREG(pi->mode)) {
			ret = -EINVAL;
			goto out;
		}
		if ((uint64_t)a->st_size > PMFUSE_MAX_FILE_SIZE) {
			ret = -EFBIG;
			goto out;
		}
	}
	/* a truncate is a change of contents: drop what a write would, first */
	if ((valid & FS_SET_SIZE) && !(valid & FS_SET_MODE)) {
		ret = inode_kill_priv_locked(fs, in, cr);
		if (ret < 0)
			goto out;
	}
	struct xattr_new acl = { 0 };
	bool has_acl = false;
	if ((valid & FS_SET_MODE) && !S_ISLNK(pi->mode)) {
		ret = chmod_acl(fs, pi, a->st_mode, &acl, &has_acl);
		if (ret)
			goto out;
	}
	struct setattr_args sa = { fs, in, a, valid, cr, &freed, has_acl ? &acl : NULL };
	ret = pool_tx(&fs->pool, tx_setattr, &sa);
	xattr_new_free(&acl);
	if (ret == 0)
		dax_release_freed(fs, in, &freed);
	else
		free(freed.runs);
	inode_to_attr(in, attr);
out:
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/* Store a symlink target for inode pi (in a transaction). */
static void tx_set_symlink(struct fs *fs, struct pmfuse_inode *pi, const char *target, size_t len)
{
	if (len <= PMFUSE_INLINE_SYMLINK) {
		memcpy(pi->symlink, target, len);
	} else {
		PMEMoid oid = pool_tx_alloc(len);
		memcpy(pool_ptr(&fs->pool, oid.off), target, len);
		pi->dir_off = oid.off;
	}
	pi->size = len;
}

struct create_args {
	struct fs *fs;
	struct inode *dir;
	const char *name, *target;
	size_t len, tlen;
	uint64_t ino;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	struct dir_pending *pd;
	const struct xattr_new *xattrs;	/* inherited ACLs */
};

static int tx_create(void *arg)
{
	struct create_args *a = arg;
	struct inode *dir = a->dir;

	/* entries, link count, times: one snapshot of the record, not three */
	pmemobj_tx_add_range_direct(dir->pi, sizeof(*dir->pi));
	inode_tx_init(a->fs, a->ino, a->mode, a->uid, a->gid, a->rdev);
	struct pmfuse_inode *pi = inode_record(a->fs, a->ino);
	if (S_ISDIR(a->mode)) {
		pi->parent = dir->ino;
		pmemobj_tx_add_range_direct(&dir->pi->nlink, sizeof(dir->pi->nlink));
		dir->pi->nlink++;
	}
	if (a->target)
		tx_set_symlink(a->fs, pi, a->target, a->tlen);
	if (a->xattrs->count)
		xattr_tx_install(a->fs, pi, a->xattrs);
	int r = dir_tx_insert(a->fs, dir, a->name, a->len, a->ino, mode_to_dtype(a->mode), a->pd);
	if (r)
		return r;
	inode_tx_touch(dir->pi, false, true, true);
	return 0;
}

/*
 * A new inode's mode and ACLs (posix_acl_create()): with a default ACL on
 * the directory, the mode is masked by it, the ACL becomes the inode's
 * access ACL (unless the mode says it all) and, for a directory, its default
 * ACL too; without one, the caller's umask applies.
 */
static int inherit_acls(struct fs *fs, struct inode *dir, mode_t *mode, mode_t umask,
			struct xattr_new *out)
{
	void *def, *acc;
	size_t len;
	int ret = xattr_copy(fs, dir->pi, ACL_DEFAULT_XATTR, &def, &len);

	if (ret)
		return ret;
	if (!def || acl_check(def, len)) {
		free(def);
		*mode &= ~(umask & 0777);
		return 0;
	}
	acc = malloc(len);
	if (!acc) {
		free(def);
		return -ENOMEM;
	}
	memcpy(acc, def, len);
	if (acl_create_masq(acc, len, mode))
		ret = xattr_new_add(out, ACL_ACCESS_XATTR, acc, len);
	if (!ret && S_ISDIR(*mode))
		ret = xattr_new_add(out, ACL_DEFAULT_XATTR, def, len);
	free(acc);
	free(def);
	if (ret)
		xattr_new_free(out);
	return ret;
}

static int create_node(struct fs *fs, uint64_t parent, const char *name, mode_t mode,
		       dev_t rdev, const char *target, const struct fs_cred *cr,
		       struct fs_attr *attr)
{
	struct dir_pending pd = { 0 };
	struct inode *dir, *child;
	int ret, err;
	uint64_t ino;
	uint32_t slot;
	size_t len, tlen = target ? strlen(target) : 0;
	gid_t gid = cr->gid;

	if ((ret = check_name(name, &len)))
		return ret;
	if (target && (tlen == 0 || tlen > PMFUSE_SYMLINK_MAX))
		return tlen ? -ENAMETOOLONG : -ENOENT;
	/* before the directory lock: a new inode chunk is a transaction */
	ret = inode_alloc_ino(fs, &ino);
	if (ret)
		return ret;
	ret = lock_parent(fs, parent, name, true, &dir, &len);
	if (ret) {
		inode_release_ino(fs, ino);
		return ret == -EUCLEAN ? -EIO : ret;
	}
	if (dir->pi->nlink == 0) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (dir_find(fs, dir, name, len, &slot, &err) || err != -ENOENT) {
		ret = err ? err : -EEXIST;
		goto out_unlock;
	}
	if ((ret = inode_immutable(dir->pi)))
		goto out_unlock;
	if (S_ISDIR(mode) && dir->pi->nlink >= PMFUSE_LINK_MAX) {
		ret = -EMLINK;
		goto out_unlock;
	}
	/* setgid directories hand their group (and, to directories, the bit) down */
	if (dir->pi->mode & S_ISGID) {
		gid = dir->pi->gid;
		if (S_ISDIR(mode))
			mode |= S_ISGID;
	}
	struct xattr_new inherited = { 0 };
	if (!target) {
		ret = inherit_acls(fs, dir, &mode, cr->umask, &inherited);
		if (ret)
			goto out_unlock;
	}
	struct create_args ca = { fs, dir, name, target, len, tlen, ino, mode, cr->uid, gid,
				  rdev, &pd, &inherited };
	ret = pool_tx(&fs->pool, tx_create, &ca);
	xattr_new_free(&inherited);
	dir_insert_done(dir, &pd, ret == 0);
	if (ret == 0) {
		inode_committed(fs, ino);
		child = inode_get(fs, ino);
		if (!child) {
			ret = -EIO;
		} else {
			inode_add_lookup(fs, child);
			inode_to_attr(child, attr);
			inode_put(fs, child);
		}
	}
out_unlock:
	unlock_parent(fs, dir);
	if (ret && ret != -EIO)
		inode_release_ino(fs, ino);
	return ret == -EUCLEAN ? -EIO : ret;
}

int fs_mknod(struct fs *fs, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct fs_attr *attr)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		break;
	default:
		return -EINVAL;
	}
	if (!S_ISCHR(mode) && !S_ISBLK(mode))
		rdev = 0;
	return create_node(fs, parent, name, mode, rdev, NULL, cr, attr);
}

struct tmpfile_args {
	struct fs *fs;
	uint64_t ino;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	const struct xattr_new *xattrs;
};

static int tx_tmpfile(void *arg)
{
	struct tmpfile_args *a = arg;

	inode_tx_init(a->fs, a->ino, a->mode, a->uid, a->gid, 0);
	struct pmfuse_inode *pi = inode_record(a->fs, a->ino);
	pi->nlink = 0;			/* the record is snapshotted whole by inode_tx_init */
	inode_tx_orphan_add(a->fs, a->ino, pi);
	if (a->xattrs->count)
		xattr_tx_install(a->fs, pi, a->xattrs);
	return 0;
}

int fs_tmpfile(struct fs *fs, uint64_t parent, mode_t mode, const struct fs_cred *cr,
	       struct fs_attr *attr)
{
	struct xattr_new inherited = { 0 };
	struct inode *dir, *child;
	uint64_t ino;
	gid_t gid = cr->gid;
	int ret;

	if (!S_ISREG(mode))
		return -EINVAL;
	ret = inode_alloc_ino(fs, &ino);
	if (ret)
		return ret;
	if ((ret = get_dir(fs, parent, &dir))) {
		inode_release_ino(fs, ino);
		return ret;
	}
	pthread_rwlock_rdlock(&dir->lock);
	if (dir->pi->nlink == 0)
		ret = -ENOENT;
	else
		ret = inode_immutable(dir->pi);
	if (!ret && (dir->pi->mode & S_ISGID))
		gid = dir->pi->gid;
	if (!ret)
		ret = inherit_acls(fs, dir, &mode, cr->umask, &inherited);
	pthread_rwlock_unlock(&dir->lock);
	inode_put(fs, dir);
	if (!ret) {
		struct tmpfile_args ta = { fs, ino, mode, cr->uid, gid, &inherited };
		ret = pool_tx(&fs->pool, tx_tmpfile, &ta);
	}
	xattr_new_free(&inherited);
	if (ret) {
		inode_release_ino(fs, ino);
		return ret == -EUCLEAN ? -EIO : ret;
	}
	inode_committed(fs, ino);
	if (!(child = inode_get(fs, ino)))
		return -EIO;
	pthread_rwlock_wrlock(&child->lock);
	child->linkable = true;
	pthread_rwlock_unlock(&child->lock);
	inode_add_lookup(fs, child);
	inode_to_attr(child, attr);
	inode_put(fs, child);
	return 0;
}

int fs_symlink(struct fs *fs, uint64_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct fs_attr *attr)
{
	return create_node(fs, parent, name, S_IFLNK | 0777, 0, target, cr, attr);
}

int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t size)
{
	struct inode *in = inode_get(fs, ino);
	int ret;

	if (!in)
		return -ENOENT;
	pthread_rwlock_rdlock(&in->lock);
	struct pmfuse_inode *pi = in->pi;
	if (!S_ISLNK(pi->mode)) {
		ret = -EINVAL;
	} else if (pi->size > PMFUSE_SYMLINK_MAX ||
		   (pi->size > PMFUSE_INLINE_SYMLINK &&
		    !pool_meta_range_ok(&fs->pool, pi->dir_off, pi->size))) {
		ret = -EIO;
	} else {
		size_t n = pi->size < size - 1 ? pi->size : size - 1;
		memcpy(buf, pi->size > PMFUSE_INLINE_SYMLINK ? pool_ptr(&fs->pool, pi->dir_off)
							      : pi->symlink, n);
		buf[n] = '\0';
		ret = 0;
	}
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

struct link_args {
	struct fs *fs;
	struct inode *dir, *in;
	const char *name;
	size_t len;
	struct dir_pending *pd;
};

static int tx_link(void *arg)
{
	struct link_args *a = arg;
	struct pmfuse_inode *pi = a->in->pi;
	int r = dir_tx_insert(a->fs, a->dir, a->name, a->len, a->in->ino, mode_to_dtype(pi->mode),
			      a->pd);

	if (r)
		return r;
	if (pi->nlink == 0)		/* an O_TMPFILE gets its first name */
		inode_tx_orphan_remove(a->fs, a->in->ino, pi);
	pmemobj_tx_add_range_direct(&pi->nlink, sizeof(pi->nlink));
	pi->nlink++;
	inode_tx_touch(pi, false, false, true);
	inode_tx_touch(a->dir->pi, false, true, true);
	return 0;
}

int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname,
	    struct fs_attr *attr)
{
	struct dir_pending pd = { 0 };
	struct inode *dir, *in;
	int ret, err;
	uint32_t slot;
	size_t len;

	if ((ret = check_name(newname, &len)))
		return ret;
	in = inode_get(fs, ino);
	if (!in)
		return -ENOENT;
	if (S_ISDIR(in->pi->mode)) {
		inode_put(fs, in);
		return -EPERM;
	}
	ret = lock_parent(fs, newparent, newname, true, &dir, &len);
	if (ret) {
		inode_put(fs, in);
		return ret == -EUCLEAN ? -EIO : ret;
	}
	pthread_rwlock_wrlock(&in->lock);
	if (dir->pi->nlink == 0 || (in->pi->nlink == 0 && !in->linkable)) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (in->pi->nlink >= PMFUSE_LINK_MAX) {
		ret = -EMLINK;
		goto out_unlock;
	}
	if (dir_find(fs, dir, newname, len, &slot, &err) || err != -ENOENT) {
		ret = err ? err : -EEXIST;
		goto out_unlock;
	}
	if ((ret = inode_pinned(in->pi)) || (ret = inode_immutable(dir->pi)))
		goto out_unlock;
	struct link_args la = { fs, dir, in, newname, len, &pd };
	ret = pool_tx(&fs->pool, tx_link, &la);
	dir_insert_done(dir, &pd, ret == 0);
	if (ret == 0) {
		in->linkable = false;
		inode_add_lookup(fs, in);
		inode_to_attr(in, attr);
	}
out_unlock:
	pthread_rwlock_unlock(&in->lock);
	unlock_parent(fs, dir);
	inode_put(fs, in);
	return ret == -EUCLEAN ? -EIO : ret;
}

/* Drop one name of child (in a transaction); parks it as an orphan at 0. */
static void tx_drop_link(struct fs *fs, struct inode *child)
{
	struct pmfuse_inode *pi = child->pi;

	/* nlink, ctime, orphan flag and links: one snapshot of the record, not four */
	pmemobj_tx_add_range_direct(pi, sizeof(*pi));
	pmemobj_tx_add_range_direct(&pi->nlink, sizeof(pi->nlink));
	if (S_ISDIR(pi->mode))
		pi->nlink = 0;
	else
		pi->nlink--;
	inode_tx_touch(pi, false, false, true);
	if (pi->nlink == 0)
		inode_tx_orphan_add(fs, child->ino, pi);
}

struct remove_args {
	struct fs *fs;
	struct inode *dir, *child;
	uint32_t slot;
	bool is_dir;
};

static int tx_remove(void *arg)
{
	struct remove_args *a = arg;

	/* entries, link count, times: one snapshot of the record, not three */
	pmemobj_tx_add_range_direct(a->dir->pi, sizeof(*a->dir->pi));
	dir_tx_remove(a->fs, a->dir, a->slot);
	tx_drop_link(a->fs, a->child);
	if (a->is_dir) {
		pmemobj_tx_add_range_direct(&a->dir->pi->nlink, sizeof(a->dir->pi->nlink));
		a->dir->pi->nlink--;
	}
	inode_tx_touch(a->dir->pi, false, true, true);
	return 0;
}

static int remove_entry(struct fs *fs, uint64_t parent, const char *name, bool want_dir)
{
	struct inode *dir, *child;
	struct pmfuse_dirent *de;
	int ret;
	uint64_t hash;
	uint32_t slot;
	size_t len;

	ret = lock_parent(fs, parent, name, true, &dir, &len);
	if (ret)
		return ret == -EUCLEAN ? -EIO : ret;
	de = dir_find(fs, dir, name, len, &slot, &ret);
	if (!de)
		goto out_unlock;
	hash = de->hash;
	child = inode_get(fs, de->ino);
	if (!child) {
		ret = -EIO;
		goto out_unlock;
	}
	pthread_rwlock_wrlock(&child->lock);
	if (want_dir && !S_ISDIR(child->pi->mode))
		ret = -ENOTDIR;
	else if (!want_dir && S_ISDIR(child->pi->mode))
		ret = -EISDIR;
	else if (want_dir && child->pi->nentries)
		ret = -ENOTEMPTY;
	else
		ret = inode_pinned(child->pi) ?: inode_pinned(dir->pi);
	if (ret)
		goto out_child;
	struct remove_args ra = { fs, dir, child, slot, want_dir };
	ret = pool_tx(&fs->pool, tx_remove, &ra);
	dir_remove_done(dir, slot, hash, ret == 0);
out_child:
	pthread_rwlock_unlock(&child->lock);
	unlock_parent(fs, dir);
	inode_put(fs, child);	/* may reclaim it now if nobody else holds it */
	return ret == -EUCLEAN ? -EIO : ret;
out_unlock:
	unlock_parent(fs, dir);
	return ret == -EUCLEAN ? -EIO : ret;
}

int fs_unlink(struct fs *fs, uint64_t parent, const char *name)
{
	return remove_entry(fs, parent, name, false);
}

int fs_rmdir(struct fs *fs, uint64_t parent, const char *name)
{
	return remove_entry(fs, parent, name, true);
}

/* Is ancestor an ancestor of (or equal to) ino?  Tree is stable under rename_lock. */
static int is_ancestor(struct fs *fs, uint64_t ancestor, uint64_t ino)
{
	for (uint64_t steps = 0; steps < fs->max_inodes; steps++) {
		if (ino == ancestor)
			return 1;
		if (ino == PMFUSE_ROOT_INO)
			return 0;
		struct pmfuse_inode *pi = inode_record(fs, ino);
		if (!pi || !S_ISDIR(pi->mode))
			return -EIO;
		ino = pi->parent;
	}
	return -EIO;
}

/* Move directory s from d1 to d2 (in a transaction): its ".." and link counts. */
static void tx_reparent(struct inode *s, struct inode *d1, struct inode *d2)
{
	if (!S_ISDIR(s->pi->mode) || d1 == d2)
		return;
	pmemobj_tx_add_range_direct(&s->pi->parent, sizeof(s->pi->parent));
	s->pi->parent = d2->ino;
	pmemobj_tx_add_range_direct(&d1->pi->nlink, sizeof(d1->pi->nlink));
	pmemobj_tx_add_range_direct(&d2->pi->nlink, sizeof(d2->pi->nlink));
	d1->pi->nlink--;
	d2->pi->nlink++;
}

struct rename_args {
	struct fs *fs;
	struct inode *d1, *d2, *s, *t;
	struct pmfuse_dirent *sde, *tde;
	uint32_t sslot;
	const char *n2;
	size_t l2;
	unsigned flags;
	struct dir_pending *pd;
	bool inserted;
};

static int tx_rename(void *arg)
{
	struct rename_args *a = arg;
	struct inode *d1 = a->d1, *d2 = a->d2, *s = a->s, *t = a->t;

	if (a->flags & FS_RENAME_EXCHANGE) {
		dir_tx_retarget(a->sde, t->ino, mode_to_dtype(t->pi->mode));
		dir_tx_retarget(a->tde, s->ino, mode_to_dtype(s->pi->mode));
		tx_reparent(s, d1, d2);
		tx_reparent(t, d2, d1);
		inode_tx_touch(t->pi, false, false, true);
	} else {
		if (t) {
			dir_tx_retarget(a->tde, s->ino, mode_to_dtype(s->pi->mode));
			if (S_ISDIR(t->pi->mode)) {
				pmemobj_tx_add_range_direct(&d2->pi->nlink, sizeof(d2->pi->nlink));
				d2->pi->nlink--;
			}
			tx_drop_link(a->fs, t);
		} else {
			int r = dir_tx_insert(a->fs, d2, a->n2, a->l2, s->ino,
					      mode_to_dtype(s->pi->mode), a->pd);
			if (r)
				return r;
			a->inserted = true;
		}
		dir_tx_remove(a->fs, d1, a->sslot);
		tx_reparent(s, d1, d2);
	}
	inode_tx_touch(s->pi, false, false, true);
	inode_tx_touch(d1->pi, false, true, true);
	if (d2 != d1)
		inode_tx_touch(d2->pi, false, true, true);
	return 0;
}

/*
 * Lock a rename's two directories: the ancestor first, as every
 * parent-then-child path locks; two unrelated ones in inode order.
 * rename_lock already keeps renames from deadlocking each other, but one
 * order per pair keeps lock-order checkers (ThreadSanitizer) able to prove it.
 */
static int lock_rename_dirs(struct fs *fs, struct inode *d1, struct inode *d2)
{
	bool d1_first;
	int ret;

	if (d1 == d2 || is_ancestor(fs, d1->ino, d2->ino) == 1)
		d1_first = true;
	else if (is_ancestor(fs, d2->ino, d1->ino) == 1)
		d1_first = false;
	else
		d1_first = d1->ino < d2->ino;
	if ((ret = dir_lock_excl(fs, d1_first ? d1 : d2)))
		return ret;
	if (d1 != d2 && (ret = dir_lock_excl(fs, d1_first ? d2 : d1)))
		pthread_rwlock_unlock(&(d1_first ? d1 : d2)->lock);
	return ret;
}

/* What forbids moving s from d1 to d2 (over t, if any), by the flags and the tree. */
static int rename_allowed(struct fs *fs, struct inode *d1, struct inode *d2, struct inode *s,
			  struct inode *t, unsigned flags)
{
	if ((flags & FS_RENAME_EXCHANGE) && !t)
		return -ENOENT;
	if ((flags & FS_RENAME_NOREPLACE) && t)
		return -EEXIST;
	/* a directory may not move below itself */
	if (S_ISDIR(s->pi->mode) && d1 != d2 && is_ancestor(fs, s->ino, d2->ino))
		return -EINVAL;
	if (t && (flags & FS_RENAME_EXCHANGE) && S_ISDIR(t->pi->mode) && d1 != d2 &&
	    is_ancestor(fs, t->ino, d1->ino))
		return -EINVAL;
	return 0;
}

/* What forbids it by the files themselves (their locks held). */
static int replace_allowed(struct inode *d1, struct inode *d2, struct inode *s,
			   struct inode *t, unsigned flags)
{
	if (t && !(flags & FS_RENAME_EXCHANGE)) {
		if (S_ISDIR(s->pi->mode) && !S_ISDIR(t->pi->mode))
			return -ENOTDIR;
		if (!S_ISDIR(s->pi->mode) && S_ISDIR(t->pi->mode))
			return -EISDIR;
		if (S_ISDIR(t->pi->mode) && t->pi->nentries)
			return -ENOTEMPTY;
	}
	if (S_ISDIR(s->pi->mode) && d1 != d2 && !t && d2->pi->nlink >= PMFUSE_LINK_MAX)
		return -EMLINK;
	/* chattr: the moved and the replaced file keep their names, and their directories */
	if (inode_pinned(s->pi) || (t && inode_pinned(t->pi)) || inode_pinned(d1->pi) ||
	    inode_immutable(d2->pi) || (t && inode_pinned(d2->pi)))
		return -EPERM;
	return 0;
}

static void put_if(struct fs *fs, struct inode *in)
{
	if (in)
		inode_put(fs, in);
}

int fs_rename(struct fs *fs, uint64_t p1, const char *n1, uint64_t p2, const char *n2,
	      unsigned flags)
{
	struct inode *d1 = NULL, *d2 = NULL, *s = NULL, *t = NULL;
	struct pmfuse_dirent *sde, *tde;
	struct dir_pending pd = { 0 };
	uint32_t sslot, tslot;
	size_t l1, l2;
	int ret, err;
	uint64_t shash;

	if ((ret = check_name(n1, &l1)) || (ret = check_name(n2, &l2)))
		return ret;
	if ((flags & FS_RENAME_EXCHANGE) && (flags & FS_RENAME_NOREPLACE))
		return -EINVAL;
	pthread_mutex_lock(&fs->rename_lock);
	if ((ret = get_dir(fs, p1, &d1)) || (ret = get_dir(fs, p2, &d2)) ||
	    (ret = lock_rename_dirs(fs, d1, d2)))
		goto out;
	sde = dir_find(fs, d1, n1, l1, &sslot, &ret);
	if (!sde)
		goto out_unlock;
	shash = sde->hash;
	tde = dir_find(fs, d2, n2, l2, &tslot, &err);
	if (!tde && err != -ENOENT) {
		ret = err;
		goto out_unlock;
	}
	ret = 0;
	if (!(s = inode_get(fs, sde->ino)) || (tde && !(t = inode_get(fs, tde->ino)))) {
		ret = -EIO;
		goto out_unlock;
	}
	if (t == s || (ret = rename_allowed(fs, d1, d2, s, t, flags)))
		goto out_unlock;	/* t == s: the same file, nothing to do */
	inode_lock_two(s, false, t, false);
	if ((ret = replace_allowed(d1, d2, s, t, flags)))
		goto out_unlock_children;
	struct rename_args ra = { fs, d1, d2, s, t, sde, tde, sslot, n2, l2, flags, &pd, false };
	ret = pool_tx(&fs->pool, tx_rename, &ra);
	if (ra.inserted || ret)
		dir_insert_done(d2, &pd, ret == 0 && ra.inserted);
	if (!(flags & FS_RENAME_EXCHANGE))
		dir_remove_done(d1, sslot, shash, ret == 0);
out_unlock_children:
	inode_unlock_two(s, t);
out_unlock:
	pthread_rwlock_unlock(&d1->lock);
	if (d2 != d1)
		pthread_rwlock_unlock(&d2->lock);
out:
	put_if(fs, t);
	put_if(fs, s);
	put_if(fs, d2);
	put_if(fs, d1);
	pthread_mutex_unlock(&fs->rename_lock);
	return ret == -EUCLEAN ? -EIO : ret;
}

void fs_info(const struct fs *fs, struct fs_info *info)
{
	info->sync = fs->opts.sync;
	info->granularity = region_granularity_name(&fs->region);
	info->fd_io = fs->region.fd_io;
	info->first_touch_ns = fs->region.first_touch_ns;
	info->max_inodes = fs->max_inodes;
}

void fs_set_stats_extra(struct fs *fs, int (*fn)(char *buf, size_t size))
{
	fs->stats_extra = fn;
}

int fs_statfs(struct fs *fs, struct statvfs *sv)
{
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = PMFUSE_BLOCK_SIZE;
	sv->f_frsize = PMFUSE_BLOCK_SIZE;
	/*
	 * Data and metadata share the heap.  The size is what the region could
	 * hold as data; growth always leaves meta_reserve of heap to metadata,
	 * so metadata costs data space only beyond that.
	 */
	uint64_t cap = pool_capacity_blocks(fs->pool.size, fs->max_inodes);
	uint64_t used = alloc_used_blocks(&fs->alloc);
	int64_t meta = atomic_load(&fs->pool.meta_bytes) - (int64_t)fs->pool.sb->geo.meta_reserve;
	uint64_t meta_blocks = meta > 0 ? ((uint64_t)meta + PMFUSE_BLOCK_SIZE - 1) >> PMFUSE_BLOCK_SHIFT : 0;
	sv->f_blocks = cap;
	sv->f_bfree = cap > used + meta_blocks ? cap - used - meta_blocks : 0;
	sv->f_bavail = sv->f_bfree;
	pthread_mutex_lock(&fs->itable_lock);
	sv->f_files = fs->max_inodes - 1;
	sv->f_ffree = sv->f_files - fs->used_inodes;
	pthread_mutex_unlock(&fs->itable_lock);
	sv->f_favail = sv->f_ffree;
	sv->f_namemax = PMFUSE_NAME_MAX;
	return 0;
}
