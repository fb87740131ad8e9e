/*
 * fsck: opening the region (read-only, or with a damaged superblock), one check, fsck_check().
 */
#include "check.h"

/* ------------------------------------------------------------------ */
/* opening */

/* pmemobj_open() replays logs and boots the heap: slow on a big pool, endless on a bad one */
int guarded_pool_open(struct fsck *f, char *why, size_t whylen)
{
	struct sigaction al = { .sa_handler = on_alarm };
	int ret;

	if (f->guarded) {
		sigaction(SIGALRM, &al, NULL);
		alarm(OPEN_WATCHDOG_SEC);
	}
	in_pmemobj = 1;
	ret = pool_open(&f->pool, f->region, why, whylen);
	if (f->guarded)
		alarm(0);
	in_pmemobj = 0;
	return ret;
}

static bool is_char_device(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}


/*
 * pool_open() refused the region.  If it is nevertheless a pmfuse pool
 * whose superblock carries the pmfuse magic, the superblock is damaged:
 * that is a filesystem error (4), and if an intact backup geometry exists
 * the rest of the region is checked with it.  Anything else (no pool, a
 * pool of another layout, a superblock mkfs never finished) cannot be
 * checked (8).  Returns an exit code, or -1 to go on checking.
 */

static int open_damaged(struct fsck *f, const char *why_open)
{
	char why[POOL_WHY];
	const struct pmfuse_super *sb;
	struct pmfuse_geometry g;
	int ret;

	/* a sound pmemobj header and the pmfuse magic, or it cannot be checked */
	in_pmemobj = 1;
	if (f->guarded)
		alarm(OPEN_WATCHDOG_SEC);
	ret = pool_open_damaged(&f->pool, f->region, why, sizeof(why));
	if (f->guarded)
		alarm(0);
	in_pmemobj = 0;
	if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why_open);
		return FSCK_OPERATIONAL;
	}
	sb = f->pool.sb;
	f->sb_off = pool_off(&f->pool, sb);
	f->opened = true;
	if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
		f->protected = true;
	g = sb->geo;
	if (pool_check_geometry(&g, f->pool.size, why, sizeof(why)) == 0) {
		/* the geometry is fine: pool_open() objected to the inode table (below) */
		f->backup_sb = *sb;
		if (((const struct pmfuse_itable *)(f->pool.base + g.itable_off))->nchunks ==
		    g.max_inodes / PMFUSE_INODES_PER_CHUNK)
			problem(f, "superblock: %s", why_open);	/* whatever it was */
	} else {
		problem(f, "%s%s", strncmp(why_open, "superblock", 10) ? "superblock: " : "", why_open);
		int64_t off = pool_backup_find(f->pool.base, f->pool.size, &g);
		if (off < 0) {
			problem(f, "superblock: no intact backup superblock found; nothing more can be checked");
			return FSCK_UNCORRECTED;
		}
		f->backup_sb = *sb;	/* the mutable part (state, orphan list) */
		f->backup_sb.geo = g;
		printf("%s: the backup superblock at offset %" PRId64 " is intact; checking with it\n",
		       f->region, off);
		f->used_backup = true;
	}
	f->pool.sb = &f->backup_sb;
	f->pool.itable = (struct pmfuse_itable *)(f->pool.base + g.itable_off);
	f->degraded = true;
	/* pool_check_geometry() made sure the pool holds max_inodes / 64 chunk offsets */
	if (f->pool.itable->nchunks != g.max_inodes / PMFUSE_INODES_PER_CHUNK)
		problem(f, "inode table: holds %" PRIu64 " chunks, but the superblock says %" PRIu64
			"; checking %" PRIu64, f->pool.itable->nchunks,
			g.max_inodes / PMFUSE_INODES_PER_CHUNK, g.max_inodes / PMFUSE_INODES_PER_CHUNK);
	return -1;
}

/* Open the region read-only; returns an exit code, or -1 to go on checking. */
int open_region(struct fsck *f)
{
	char why[POOL_WHY];
	int one = 1, zero = 0, ret;

	/*
	 * Copy-on-write: libpmemobj's own bookkeeping at open (run id, lane
	 * and heap runtime state, log replay) stays in private pages, so the
	 * check writes nothing.  Device DAX cannot be mapped that way: there
	 * the open falls back to a shared mapping (pmfuse metadata is still
	 * mapped read-only below).
	 */
	if (pmemobj_ctl_set(NULL, "copy_on_write.at_open", &one))
		f->shared_open = true;	/* an old libpmemobj */
	ret = guarded_pool_open(f, why, sizeof(why));
	if (ret && ret != -EAGAIN && is_char_device(f->region)) {
		pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
		f->shared_open = true;
		ret = guarded_pool_open(f, why, sizeof(why));
	}
	if (ret == -EAGAIN)
		return refuse_in_use(f);
	if (ret == -EINVAL) {
		ret = open_damaged(f, why);
		if (ret >= 0)
			return ret;
	} else if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why);
		return FSCK_OPERATIONAL;
	} else {
		f->opened = true;
		f->sb_off = pool_off(&f->pool, f->pool.sb);
		/* from here on nothing may write the image: make sure nothing can */
		if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
			f->protected = true;
	}
	f->p = &f->pool;
	return -1;
}

/* ------------------------------------------------------------------ */
/* one check of the open region */

void protect(struct fsck *f, bool read_only)
{
	if (read_only && !f->protected) {
		if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
			f->protected = true;
	} else if (!read_only && f->protected) {
		mprotect(f->pool.base, f->pool.size, PROT_READ | PROT_WRITE);
		f->protected = false;
	}
}

/* Forget what a check learnt; the region stays open. */
void check_free(struct fsck *f)
{
	struct fsck keep = *f;

	pool_sparse_free(f->chunk_ok, f->nchunks);
	pool_sparse_free(f->st, f->max_inodes);
	pool_sparse_free(f->nref, f->max_inodes * sizeof(uint32_t));
	pool_sparse_free(f->aux, f->max_inodes * sizeof(struct aux));
	pool_sparse_free(f->bmap, f->nwords * sizeof(uint64_t));
	pool_sparse_free(f->dmap, f->nwords * sizeof(uint64_t));
	free(f->refs);
	free(f->names);
	free(f->queue);
	free(f->dang);
	/* everything but what outlives one check: the region, the repair, the heap walk */
	memset(f, 0, offsetof(struct fsck, dups));
	f->dups = NULL;
	f->region = keep.region;
	f->verbose = keep.verbose;
	f->quiet = keep.quiet;
	f->pool = keep.pool;
	f->p = keep.p ? &f->pool : NULL;
	f->opened = keep.opened;
	f->protected = keep.protected;
	f->used_backup = keep.used_backup;
	f->degraded = keep.degraded;
	f->sb_off = keep.sb_off;
	f->shared_open = keep.shared_open;
	f->guarded = keep.guarded;
}

void run_check(struct fsck *f)
{
	f->max_inodes = f->p->sb->geo.max_inodes;
	f->nchunks = f->max_inodes / PMFUSE_INODES_PER_CHUNK;	/* == itable->nchunks, or reported */
	f->chunk_ok = xsparse(f->nchunks);
	/* by inode number and block: touched only as far as the region is used */
	f->st = xsparse(f->max_inodes);
	f->nref = xsparse(f->max_inodes * sizeof(uint32_t));
	f->aux = xsparse(f->max_inodes * sizeof(struct aux));
	f->nblocks = f->p->size >> PMFUSE_BLOCK_SHIFT;
	f->nwords = (f->nblocks + 63) / 64;
	f->bmap = xsparse(f->nwords * sizeof(uint64_t));
	f->dmap = xsparse(f->nwords * sizeof(uint64_t));
	f->namegen = 1;

	check_super(f);
	check_itable(f);
	check_inodes(f);
	check_orphan_list(f);
	check_reachability(f);
	check_links(f);
	check_dups(f);
	check_objects(f);
	check_record(f);

	for (uint64_t w = f->bmap_lo; w < f->bmap_hi; w++)
		f->used_blocks += popcount(f->bmap[w]);
	f->capacity = pool_data_blocks(f->p) - 1;	/* the backup block */
	/* formats 2 and 3 add data pieces on demand: the size is the region's */
	f->fs_blocks = f->p->sb->geo.version >= 2 ?
		       pool_capacity_blocks(f->p->size, f->max_inodes) : f->capacity;
	if (f->used_blocks > f->capacity)
		problem(f, "blocks: %" PRIu64 " in use, but the data area holds only %" PRIu64,
			f->used_blocks, f->capacity);
}

void report(struct fsck *f)
{
	if (f->problems)
		printf("%s: %" PRIu64 " problem(s) %s\n", f->region, f->problems,
		       f->r.mode == M_CHECK ? "found, not repaired" : "left uncorrected");
	else
		printf("%s: clean, %" PRIu64 "/%" PRIu64 " inodes, %" PRIu64 "/%" PRIu64 " blocks\n",
		       f->region, f->n_used, f->max_inodes - 1, f->used_blocks, f->fs_blocks);
}

/* Everything a check leaves behind, so the next one (in-process) starts afresh. */
static void reset_state(struct fsck *f)
{
	int zero = 0;

	check_free(f);
	free(f->heap_objs);
	free(f->r.declined);
	memset(f, 0, sizeof(*f));
	in_pmemobj = 0;
	/* open_region() turned it on for every later open in this process */
	pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
}

/* A check's context; the one this process runs is active. */
struct fsck *fsck_new(void)
{
	active = xcalloc(1, sizeof(*active));
	return active;
}

void fsck_free(struct fsck *f)
{
	reset_state(f);
	active = NULL;
	free(f);
}

int fsck_check(const char *region, bool verbose, bool guarded)
{
	struct fsck *f = fsck_new();
	int ret;

	f->region = region;
	f->verbose = verbose;
	f->guarded = guarded;
	f->r.mode = M_CHECK;
	if (guarded)
		install_fault_handlers();
	ret = open_region(f);
	if (ret >= 0) {
		if (ret == FSCK_UNCORRECTED)
			printf("%s: %" PRIu64 " problem(s) found, not repaired\n", f->region, f->problems);
		fflush(stdout);
		cleanup(f);
		fsck_free(f);
		return ret;
	}
	run_check(f);
	if (f->verbose)
		summary(f, f->used_blocks, f->fs_blocks);
	report(f);
	fflush(stdout);
	cleanup(f);
	ret = f->problems ? FSCK_UNCORRECTED : FSCK_OK;
	fsck_free(f);
	return ret;
}
