/*
 * pool: creating, opening and validating the pmemobj pool of a region.
 *
 * libpmemobj trusts its image: a 0-byte file makes pmemobj_open die with
 * SIGBUS and a damaged root_offset opens "successfully" with the root
 * pointing at garbage.  So the size and the PMEMOBJ signature are checked
 * before opening, the root object is range-checked after, and the
 * superblock carries its own magic, version and checksum.
 */
#include "pool.h"
#include "fault.h"
#include "log.h"
#include "region.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpmem2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <dirent.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define HUGE_2M (2 * MiB)
/*
 * One inode per 256 bytes, the most a region may have: an empty file takes
 * more than that (its 256-byte record, its name, pmemobj's headers), so
 * space always runs out before the count does.  The count is a ceiling
 * that costs nothing until used: mkfs writes the table's top (8 bytes per
 * 32768 inodes), leaves and chunks of inodes are taken as used.
 */
#define DEFAULT_BYTES_PER_INODE 256ull
#define MIN_BYTES_PER_INODE 256ull
/* pmemobj's own needs (lanes, heap headers, run metadata) plus headroom */
#define META_SLACK (12 * MiB)
/* per inode: record + dirent + one map node + pmemobj overhead */
#define META_PER_INODE 1024ull

int64_t pool_region_size(const char *path, char *why, size_t whylen)
{
	struct pmem2_source *src;
	struct stat st;
	size_t size;
	int fd;

	if (stat(path, &st) < 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (S_ISREG(st.st_mode))
		return st.st_size;
	if (!S_ISCHR(st.st_mode)) {
		snprintf(why, whylen, "%s: not a regular file or devdax device", path);
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (pmem2_source_from_fd(&src, fd) || pmem2_source_size(src, &size)) {
		snprintf(why, whylen, "%s: not a devdax device: %s", path, pmem2_errormsg());
		close(fd);
		return -EINVAL;
	}
	pmem2_source_delete(&src);
	close(fd);
	return (int64_t)size;
}

/*
 * libpmemobj 1.12's heap as pmemobj_create() lays it out: lanes from 8 KiB
 * (1024 of 3 KiB), the heap from the next page, a 1 KiB heap header, then
 * zones of a 512 KiB header and up to 65528 chunks of 256 KiB each.  A huge
 * allocation is whole chunks inside one zone.
 */
#define OBJ_HEAP_START	(8192ull + 1024 * 3072)
#define OBJ_HEAP_HDR	1024ull
#define OBJ_ZONE_HDR	(512ull << 10)
#define OBJ_CHUNK	(256ull << 10)
#define OBJ_ZONE_CHUNKS	65528ull

/* Bytes of chunks the heap of a pool of size bytes has; *zones: how many zones. */
static uint64_t heap_chunk_bytes(uint64_t size, uint64_t *zones)
{
	uint64_t heap = size > OBJ_HEAP_START + OBJ_HEAP_HDR ? size - OBJ_HEAP_START - OBJ_HEAP_HDR : 0;
	uint64_t chunks = 0;

	*zones = 0;
	while (heap > OBJ_ZONE_HDR + OBJ_CHUNK) {
		uint64_t z = heap < OBJ_ZONE_HDR + OBJ_ZONE_CHUNKS * OBJ_CHUNK ?
			     heap : OBJ_ZONE_HDR + OBJ_ZONE_CHUNKS * OBJ_CHUNK;
		chunks += (z - OBJ_ZONE_HDR) / OBJ_CHUNK;
		heap -= z;
		(*zones)++;
	}
	return chunks * OBJ_CHUNK;
}

uint64_t pool_meta_reserve(uint64_t size)
{
	uint64_t reserve = size / 512;

	reserve = reserve < 2 * MiB ? 2 * MiB : reserve > 256 * MiB ? 256 * MiB : reserve;
	return (reserve + HUGE_2M - 1) & ~(HUGE_2M - 1);
}

/*
 * What statfs calls the size: the heap less the metadata reserve, the inode
 * table, and a 2 MiB trim for a piece per zone and one more; 0 if that
 * leaves less than 8 MiB.
 */
uint64_t pool_capacity_blocks(uint64_t size, uint64_t max_inodes)
{
	uint64_t zones, heap = heap_chunk_bytes(size, &zones);
	uint64_t itable = pmfuse_itable_entries(PMFUSE_VERSION, max_inodes / PMFUSE_INODES_PER_CHUNK) *
			  sizeof(uint64_t);
	uint64_t overhead = pool_meta_reserve(size) + (zones + 1) * HUGE_2M +
			    ((itable + OBJ_CHUNK - 1) & ~(OBJ_CHUNK - 1));

	return heap < overhead + 4 * HUGE_2M ? 0 : (heap - overhead) >> PMFUSE_BLOCK_SHIFT;
}

uint64_t pool_inode_ceiling(uint64_t size)
{
	return size / MIN_BYTES_PER_INODE / PMFUSE_INODES_PER_CHUNK * PMFUSE_INODES_PER_CHUNK;
}

uint64_t pool_piece_default(uint64_t size)
{
	uint64_t piece = size / 16;

	piece = piece < 64 * MiB ? 64 * MiB : piece > 8 * GiB ? 8 * GiB : piece;
	return (piece + HUGE_2M - 1) & ~(HUGE_2M - 1);
}

int pool_plan(uint64_t size, uint64_t bytes_per_inode, struct pool_plan *plan,
	      char *why, size_t whylen)
{
	uint64_t inodes, first, capacity;

	if (size < PMFUSE_MIN_REGION) {
		snprintf(why, whylen, "region of %" PRIu64 " bytes is too small: the minimum is %llu MiB",
			 size, PMFUSE_MIN_REGION >> 20);
		return -EINVAL;
	}
	if (!bytes_per_inode)
		bytes_per_inode = DEFAULT_BYTES_PER_INODE;
	if (bytes_per_inode < MIN_BYTES_PER_INODE) {
		snprintf(why, whylen, "bytes-per-inode must be at least %llu", MIN_BYTES_PER_INODE);
		return -EINVAL;
	}
	inodes = size / bytes_per_inode;
	if (inodes < 256)
		inodes = 256;
	inodes = (inodes + PMFUSE_INODES_PER_CHUNK - 1) / PMFUSE_INODES_PER_CHUNK *
		 PMFUSE_INODES_PER_CHUNK;
	/* never past one per 256 bytes, what a mount accepts */
	if (inodes > pool_inode_ceiling(size))
		inodes = pool_inode_ceiling(size);
	/*
	 * Metadata is not set aside: it shares the heap with data, which only
	 * always leaves it the reserve, so a filesystem full of data can still
	 * create and rename.
	 */
	capacity = pool_capacity_blocks(size, inodes);
	if (!capacity) {
		snprintf(why, whylen, "region of %" PRIu64 " bytes is too small for %" PRIu64
			 " inodes: the minimum is %llu MiB", size, inodes,
			 PMFUSE_MIN_REGION >> 20);
		return -EINVAL;
	}
	/*
	 * Run 0, which mkfs makes and which holds the backup superblock: it
	 * never goes back to the heap, so it is small (1/64, 4 to 64 MiB).
	 */
	first = size / 64;
	first = first < 4 * MiB ? 4 * MiB : first > 64 * MiB ? 64 * MiB : first;
	first = (first + HUGE_2M - 1) & ~(HUGE_2M - 1);
	if (first > (capacity << PMFUSE_BLOCK_SHIFT) / 2)
		first = ((capacity << PMFUSE_BLOCK_SHIFT) / 2) & ~(HUGE_2M - 1);
	plan->region_size = size;
	plan->meta_reserve = pool_meta_reserve(size);
	plan->max_inodes = inodes;
	plan->first_run = first;
	plan->capacity_blocks = capacity;
	return 0;
}

uint64_t pool_geometry_checksum(const struct pmfuse_geometry *g)
{
	return pmfuse_fnv1a(g, offsetof(struct pmfuse_geometry, checksum), PMFUSE_FNV_INIT);
}

int pool_check_geometry(const struct pmfuse_geometry *g, uint64_t pool_size,
			char *why, size_t whylen)
{
	uint64_t prev_end = 0;

	if (g->magic != PMFUSE_MAGIC) {
		snprintf(why, whylen, "superblock magic is wrong: not a pmfuse filesystem");
		return -EINVAL;
	}
	if (g->checksum != pool_geometry_checksum(g)) {
		snprintf(why, whylen, "superblock checksum mismatch: the superblock is damaged");
		return -EINVAL;
	}
	if (g->version < PMFUSE_VERSION_MIN || g->version > PMFUSE_VERSION) {
		snprintf(why, whylen, "unsupported format version %u (this build knows %u to %u)",
			 g->version, PMFUSE_VERSION_MIN, PMFUSE_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (g->block_size != PMFUSE_BLOCK_SIZE) {
		snprintf(why, whylen, "unsupported block size %u", g->block_size);
		return -EINVAL;
	}
	if (g->region_size != pool_size) {
		snprintf(why, whylen, "region is %" PRIu64 " bytes but the superblock says %" PRIu64
			 " (truncated or resized?)", pool_size, g->region_size);
		return -EINVAL;
	}
	if (g->label[PMFUSE_LABEL_MAX - 1] != '\0') {
		snprintf(why, whylen, "superblock label is not terminated");
		return -EINVAL;
	}
	if (g->nruns == 0 || g->nruns > PMFUSE_MAX_RUNS) {
		snprintf(why, whylen, "superblock has %u data runs", g->nruns);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < g->nruns; i++) {
		const struct pmfuse_run *r = &g->runs[i];
		if (r->off % HUGE_2M || r->len % HUGE_2M || r->len == 0 ||
		    r->off < prev_end || r->off > pool_size || r->len > pool_size - r->off) {
			snprintf(why, whylen, "data run %u [%" PRIu64 ", +%" PRIu64 ") is invalid",
				 i, r->off, r->len);
			return -EINVAL;
		}
		prev_end = r->off + r->len;
	}
	if (g->max_inodes < PMFUSE_INODES_PER_CHUNK ||
	    g->max_inodes % PMFUSE_INODES_PER_CHUNK ||
	    g->max_inodes > pool_size / 256) {
		snprintf(why, whylen, "superblock max_inodes %" PRIu64 " is invalid", g->max_inodes);
		return -EINVAL;
	}
	if (g->itable_off == 0 || g->itable_off % sizeof(uint64_t) || g->itable_off > pool_size ||
	    pool_size - g->itable_off < 8 + pmfuse_itable_entries(g->version,
		g->max_inodes / PMFUSE_INODES_PER_CHUNK) * 8) {
		snprintf(why, whylen, "inode table offset %" PRIu64 " is invalid", g->itable_off);
		return -EINVAL;
	}
	return 0;
}

bool pool_has_pmemobj_signature(const void *first_page)
{
	return memcmp(first_page, "PMEMOBJ", 8) == 0;
}


bool pool_meta_range_ok(const struct pool *p, uint64_t off, uint64_t len)
{
	const struct pmfuse_geometry *g = &p->sb->geo;

	if (off < 8192 || off > p->size || len > p->size - off)
		return false;
	if (!p->gstart) {
		/* fsck of a damaged region: the permanent runs are all it knows */
		for (uint32_t i = 0; i < g->nruns && i < PMFUSE_MAX_RUNS; i++)
			if (off < g->runs[i].off + g->runs[i].len && off + len > g->runs[i].off)
				return false;
		return true;
	}
	return !pool_pieces_overlap(p, off, len);
}

bool pool_block_range_ok(const struct pool *p, uint64_t phys, uint64_t n)
{
	uint64_t backup = pool_backup_block(p);

	if (n == 0 || phys >= p->size >> PMFUSE_BLOCK_SHIFT ||
	    n > (p->size >> PMFUSE_BLOCK_SHIFT) - phys)
		return false;
	uint32_t id = pool_piece_of(p, phys);
	return id && id == pool_piece_of(p, phys + n - 1) &&
	       !(phys <= backup && phys + n > backup);
}

static int obj_cmp(const void *a, const void *b)
{
	const struct pool_obj *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

int pool_objects_load(const struct pool *p, struct pool_objects *po)
{
	/* every object takes 64 bytes or more: more is a heap gone round in circles */
	size_t cap = 0, limit = (size_t)(p->size / 64);

	*po = (struct pool_objects){ 0 };
	for (PMEMoid oid = pmemobj_first(p->pop); !OID_IS_NULL(oid); oid = pmemobj_next(oid)) {
		if (po->n == limit) {
			pool_objects_free(po);
			return -EUCLEAN;
		}
		if (po->n == cap) {
			struct pool_obj *o;
			cap = cap ? 2 * cap : 1024;
			o = realloc(po->o, cap * sizeof(*o));
			if (!o) {
				pool_objects_free(po);
				return -ENOMEM;
			}
			po->o = o;
		}
		po->o[po->n++] = (struct pool_obj){ oid.off, pmemobj_alloc_usable_size(oid), false };
	}
	qsort(po->o, po->n, sizeof(*po->o), obj_cmp);
	return 0;
}

bool pool_objects_claim(struct pool_objects *po, uint64_t off, uint64_t len)
{
	size_t lo = 0, hi = po->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (po->o[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == po->n || po->o[lo].off != off || po->o[lo].size < len || po->o[lo].claimed)
		return false;
	po->o[lo].claimed = true;
	return true;
}

void *pool_sparse_zalloc(size_t bytes)
{
	void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void pool_sparse_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes ? bytes : 1);
}

bool pool_object_ok(const struct pool *p, struct pool_objects *po, uint64_t off, uint64_t len)
{
	return po ? pool_objects_claim(po, off, len) : pool_meta_range_ok(p, off, len);
}

void pool_objects_free(struct pool_objects *po)
{
	free(po->o);
	po->o = NULL;
	po->n = 0;
}

/* metadata bytes the running transaction of this thread allocated, less freed */
static __thread int64_t tx_meta_delta;

/* locks held until the outermost transaction of this thread ends (pool_tx_lock) */
#define TX_HELD_MAX 4
static __thread pthread_mutex_t *tx_held[TX_HELD_MAX];
static __thread int tx_nheld;

void pool_tx_lock(pthread_mutex_t *m)
{
	if (pmemobj_tx_stage() != TX_STAGE_WORK) {
		log_err("pool_tx_lock outside a transaction");
		abort();
	}
	for (int i = 0; i < tx_nheld; i++)
		if (tx_held[i] == m)
			return;
	if (tx_nheld == TX_HELD_MAX) {
		log_err("pool_tx_lock: more than %d locks in one transaction", TX_HELD_MAX);
		abort();
	}
	pthread_mutex_lock(m);
	tx_held[tx_nheld++] = m;
}

int pool_tx(const struct pool *p, pool_tx_fn fn, void *arg)
{
	volatile int ret = 0, own = 0;
	bool outer = pmemobj_tx_stage() == TX_STAGE_NONE;

	if (outer)
		tx_meta_delta = 0;
	TX_BEGIN(p->pop) {
		int r = fn(arg);
		if (r) {
			own = r;
			pmemobj_tx_abort(-r);
		}
	} TX_ONABORT {
		int e = pmemobj_tx_errno();
		/*
		 * An abort inside pmemobj (allocation, undo-log growth) means the
		 * metadata heap is full: a pool cannot grow, so that is ENOSPC to
		 * the user, never ENOMEM.  Errors of fn itself pass through.
		 */
		if (own)
			ret = own;
		else
			ret = e == ENOMEM || e <= 0 ? -ENOSPC : -e;
	} TX_END
	if (outer)
		while (tx_nheld)
			pthread_mutex_unlock(tx_held[--tx_nheld]);
	if (outer && ret == 0 && tx_meta_delta)
		atomic_fetch_add(&((struct pool *)p)->meta_bytes, tx_meta_delta);
	return ret;
}

/* What an object costs the heap: its usable size and its 16-byte header. */
static int64_t obj_cost(PMEMoid oid)
{
	return OID_IS_NULL(oid) ? 0 : (int64_t)pmemobj_alloc_usable_size(oid) + 16;
}

void pool_tx_free(PMEMoid oid)
{
	tx_meta_delta -= obj_cost(oid);
	pmemobj_tx_free(oid);
}

/* Every allocation in a transaction comes here: one place to fail them. */
PMEMoid pool_tx_alloc(size_t size)
{
	if (fault_alloc())
		pmemobj_tx_abort(ENOMEM);	/* as pmemobj does when the heap is full */
	PMEMoid oid = pmemobj_tx_alloc(size, 0);
	tx_meta_delta += obj_cost(oid);
	return oid;
}

PMEMoid pool_tx_zalloc(size_t size)
{
	if (fault_alloc())
		pmemobj_tx_abort(ENOMEM);
	PMEMoid oid = pmemobj_tx_zalloc(size, 0);
	tx_meta_delta += obj_cost(oid);
	return oid;
}

/* Allocate the largest block of at most want bytes the heap can give. */
static int alloc_largest(PMEMobjpool *pop, uint64_t want, PMEMoid *oid, uint64_t *got)
{
	uint64_t lo = 0, hi = want / HUGE_2M;	/* in 2 MiB units */

	while (lo < hi) {
		uint64_t mid = (lo + hi + 1) / 2;
		PMEMoid t;
		if (pmemobj_alloc(pop, &t, mid * HUGE_2M, 0, NULL, NULL) == 0) {
			pmemobj_free(&t);
			lo = mid;
		} else {
			hi = mid - 1;
		}
	}
	if (lo < 2)
		return -ENOSPC;
	if (pmemobj_alloc(pop, oid, lo * HUGE_2M, 0, NULL, NULL))
		return -ENOSPC;
	*got = lo * HUGE_2M;
	return 0;
}

static void now_time(struct pmfuse_time *t)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	t->sec = ts.tv_sec;
	t->nsec = (uint32_t)ts.tv_nsec;
	t->pad = 0;
}

/* The inode table's top, sized by the plan, with no leaf yet. */
static struct pmfuse_itable *format_itable(PMEMobjpool *pop, const struct pool_plan *plan,
					   struct pmfuse_geometry *g)
{
	PMEMoid it;
	size_t size = sizeof(struct pmfuse_itable) +
		      pmfuse_itable_entries(PMFUSE_VERSION, plan->max_inodes / PMFUSE_INODES_PER_CHUNK) *
		      sizeof(uint64_t);

	if (pmemobj_zalloc(pop, &it, size, 0))
		return NULL;
	struct pmfuse_itable *itable = pmemobj_direct(it);
	itable->nchunks = plan->max_inodes / PMFUSE_INODES_PER_CHUNK;
	pmemobj_persist(pop, itable, sizeof(*itable));
	g->itable_off = it.off;
	return itable;
}

/*
 * Run 0, the one permanent piece: as much of want as the heap gives
 * (data grows from there on demand), trimmed to 2 MiB boundaries.  Its
 * first block holds the backup superblock.  0 or -ENOSPC.
 */
static int format_first_run(PMEMobjpool *pop, uint64_t want, struct pmfuse_geometry *g)
{
	PMEMoid run;
	uint64_t got, start, end;

	if (alloc_largest(pop, want, &run, &got))
		return -ENOSPC;
	start = (run.off + HUGE_2M - 1) & ~(HUGE_2M - 1);
	end = (run.off + got) & ~(HUGE_2M - 1);
	if (end <= start)
		return -ENOSPC;
	g->runs[0].off = start;
	g->runs[0].len = end - start;
	g->nruns = 1;
	return 0;
}

/* The piece table the daemon grows the data area with: empty. */
static uint64_t format_piece_table(PMEMobjpool *pop)
{
	PMEMoid t;

	if (pmemobj_zalloc(pop, &t, sizeof(struct pmfuse_pieces) + 16 * sizeof(struct pmfuse_piece), 0))
		return 0;
	struct pmfuse_pieces *pt = pmemobj_direct(t);
	pt->cap = 16;
	pmemobj_persist(pop, pt, sizeof(*pt));
	return t.off;
}

/* The root directory: inode 1, in the first inode chunk. */
static int format_root(PMEMobjpool *pop, struct pmfuse_itable *itable,
		       const struct pool_format_opts *o)
{
	PMEMoid chunk, leaf;

	if (pmemobj_zalloc(pop, &chunk, PMFUSE_ICHUNK_SIZE, 0) ||
	    pmemobj_zalloc(pop, &leaf, sizeof(struct pmfuse_ileaf), 0))
		return -ENOSPC;
	struct pmfuse_ileaf *l = pmemobj_direct(leaf);
	l->chunk[0] = chunk.off;
	pmemobj_persist(pop, &l->chunk[0], sizeof(uint64_t));
	itable->chunk[0] = leaf.off;
	pmemobj_persist(pop, &itable->chunk[0], sizeof(uint64_t));
	struct pmfuse_inode *rooti = (struct pmfuse_inode *)((char *)pop + chunk.off) + PMFUSE_ROOT_INO;
	memset(rooti, 0, sizeof(*rooti));
	rooti->mode = 040755;
	rooti->nlink = 2;
	rooti->uid = o->root_uid;
	rooti->gid = o->root_gid;
	rooti->generation = 1;
	rooti->parent = PMFUSE_ROOT_INO;
	now_time(&rooti->atime);
	rooti->mtime = rooti->ctime = rooti->btime = rooti->atime;
	pmemobj_persist(pop, rooti, sizeof(*rooti));
	return 0;
}

int pool_format(const char *path, const struct pool_format_opts *o,
		char *why, size_t whylen)
{
	struct pool_plan plan;
	struct pmfuse_itable *itable;
	struct pmfuse_geometry g;
	PMEMobjpool *pop;
	int64_t size;
	int ret, zero = 0;

	size = pool_region_size(path, why, whylen);
	if (size < 0)
		return (int)size;
	ret = pool_plan((uint64_t)size, o->bytes_per_inode, &plan, why, whylen);
	if (ret)
		return ret;
	if (o->sparse)
		pmemobj_ctl_set(NULL, "fallocate.at_create", &zero);
	/* pmemobj_create wants to create the pool over an existing file of size 0 arg */
	pop = pmemobj_create(path, PMFUSE_LAYOUT, 0, 0600);
	if (!pop) {
		snprintf(why, whylen, "cannot create pool on %s: %s", path, pmemobj_errormsg());
		return errno > 0 ? -errno : -EIO;
	}
	memset(&g, 0, sizeof(g));
	g.magic = PMFUSE_MAGIC;
	g.version = PMFUSE_VERSION;
	g.block_size = PMFUSE_BLOCK_SIZE;
	memcpy(g.uuid, o->uuid, 16);
	snprintf(g.label, sizeof(g.label), "%s", o->label ? o->label : "");
	g.region_size = (uint64_t)size;
	g.created = (uint64_t)time(NULL);
	g.max_inodes = plan.max_inodes;
	g.meta_reserve = plan.meta_reserve;

	ret = -ENOSPC;
	PMEMoid root = pmemobj_root(pop, sizeof(struct pmfuse_super));
	if (OID_IS_NULL(root)) {
		snprintf(why, whylen, "cannot allocate superblock: %s", pmemobj_errormsg());
		goto out;
	}
	if (!(itable = format_itable(pop, &plan, &g))) {
		snprintf(why, whylen, "cannot allocate inode table");
		goto out;
	}
	uint64_t ptab = format_piece_table(pop);
	if (!ptab || format_first_run(pop, plan.first_run, &g)) {
		snprintf(why, whylen, "no room for a data area (region too small)");
		goto out;
	}
	g.checksum = pool_geometry_checksum(&g);
	if (format_root(pop, itable, o)) {
		snprintf(why, whylen, "cannot allocate the first inode chunk");
		goto out;
	}
	void *backup = (char *)pop + pool_backup_off(&g);
	struct pmfuse_geometry bg;
	pool_backup_make(&g, &bg);
	pmemobj_memset_persist(pop, backup, 0, PMFUSE_BLOCK_SIZE);
	pmemobj_memcpy_persist(pop, backup, &bg, sizeof(bg));

	/* The superblock goes last: until it is valid, this is not pmfuse. */
	struct pmfuse_super *sb = pmemobj_direct(root);
	memset(sb, 0, sizeof(*sb));
	sb->state = PMFUSE_STATE_CLEAN;
	sb->pieces_off = ptab;
	sb->ichunk_hwm = 1;		/* the root's chunk */
	sb->geo = g;
	pmemobj_persist(pop, sb, sizeof(*sb));
	ret = 0;
out:
	pmemobj_close(pop);
	return ret;
}

/*
 * libpmemobj 1.12's pool descriptor, as found on media: the layout name
 * follows the 4 KiB pool header, and root_offset/root_size sit at the end
 * of the 2 KiB persistent part.  Reading them ourselves lets a region be
 * judged -- and refused -- before pmemobj_open, which writes to the pool
 * (its run_id) even when we are about to turn it away.
 */
#define OBJ_FORMAT_MAJOR	6
#define OBJ_LAYOUT_OFF		4096
#define OBJ_ROOT_OFFSET_OFF	(4096 + 2048)
#define OBJ_ROOT_SIZE_OFF	(4096 + 2048 + 16)
/*
 * Where the descriptor puts the lanes and the heap.  They are checksummed,
 * but pmemobj_open() trusts them once the checksum matches (a lanes_offset
 * of 1 with a right checksum is a SIGSEGV inside it).  pmemobj_create()
 * always writes lanes at 8 KiB, at most 1024 of them, and the heap right
 * after them at the next page: anything else is damage.
 */
#define OBJ_LANES_OFFSET_OFF	(4096 + 1024)
#define OBJ_NLANES_OFF		(4096 + 1032)
#define OBJ_HEAP_OFFSET_OFF	(4096 + 1040)
#define OBJ_LANES_OFFSET	8192
#define OBJ_NLANES_MAX		1024
#define OBJ_LANE_SIZE		3072	/* struct lane_layout */

bool pool_has_pmfuse_layout(const void *header)
{
	return memcmp((const char *)header + OBJ_LAYOUT_OFF, PMFUSE_LAYOUT,
		      sizeof(PMFUSE_LAYOUT)) == 0;
}

static bool obj_layout_ok(const unsigned char *page, uint64_t size, uint64_t root_off)
{
	uint64_t lanes_off, nlanes, heap_off;

	memcpy(&lanes_off, page + OBJ_LANES_OFFSET_OFF, sizeof(lanes_off));
	memcpy(&nlanes, page + OBJ_NLANES_OFF, sizeof(nlanes));
	memcpy(&heap_off, page + OBJ_HEAP_OFFSET_OFF, sizeof(heap_off));
	return lanes_off == OBJ_LANES_OFFSET && nlanes >= 1 && nlanes <= OBJ_NLANES_MAX &&
	       heap_off == ((lanes_off + nlanes * OBJ_LANE_SIZE + 4095) & ~4095ull) &&
	       heap_off < size && root_off >= heap_off;
}

int pool_check_header(const void *head, uint64_t size, const char *path,
		      uint64_t *root_off, char *why, size_t whylen)
{
	const unsigned char *page = head;
	uint64_t off, root_size;
	uint32_t major;

	if (!pool_has_pmemobj_signature(page)) {
		snprintf(why, whylen, "%s is not a pmfuse region (no pool header)", path);
		return -EINVAL;
	}
	memcpy(&major, page + 8, sizeof(major));
	if (major != OBJ_FORMAT_MAJOR) {
		snprintf(why, whylen, "%s: pmemobj pool format %u is not the one this build reads (%u)",
			 path, major, OBJ_FORMAT_MAJOR);
		return -EPROTONOSUPPORT;
	}
	if (!pool_has_pmfuse_layout(page)) {
		snprintf(why, whylen, "%s is a pmemobj pool of another layout, not a pmfuse region", path);
		return -EINVAL;
	}
	memcpy(&off, page + OBJ_ROOT_OFFSET_OFF, sizeof(off));
	memcpy(&root_size, page + OBJ_ROOT_SIZE_OFF, sizeof(root_size));
	if (root_size != sizeof(struct pmfuse_super) || off % sizeof(uint64_t) ||
	    off < POOL_HEADER_SIZE ||
	    size < sizeof(struct pmfuse_super) || off > size - sizeof(struct pmfuse_super)) {
		snprintf(why, whylen, "%s: superblock pointer is out of range: damaged pool", path);
		return -EINVAL;
	}
	if (!obj_layout_ok(page, size, off)) {
		snprintf(why, whylen, "%s: pmemobj pool descriptor (lanes, heap) is damaged", path);
		return -EINVAL;
	}
	*root_off = off;
	return 0;
}

/*
 * Before pmemobj_open() sees the region: its header (libpmemobj trusts it
 * and can crash on a damaged one) and, with geometry, the superblock's.
 */
static int precheck(const char *path, uint64_t size, bool geometry, char *why, size_t whylen)
{
	unsigned char page[POOL_HEADER_SIZE];
	struct pmfuse_super sb;
	uint64_t root_off;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (region_pread(fd, page, sizeof(page), 0)) {
		snprintf(why, whylen, "%s is not a pmfuse region (no pool header)", path);
		ret = -EINVAL;
		goto out;
	}
	ret = pool_check_header(page, size, path, &root_off, why, whylen);
	if (ret || !geometry)
		goto out;
	if (region_pread(fd, &sb, sizeof(sb), root_off)) {
		snprintf(why, whylen, "%s: cannot read the superblock", path);
		ret = -EIO;
		goto out;
	}
	ret = pool_check_geometry(&sb.geo, size, why, whylen);
out:
	close(fd);
	return ret;
}

/* Size first: pmemobj_open() dies with SIGBUS on an empty file. */
static int64_t open_size(const char *path, char *why, size_t whylen)
{
	int64_t size = pool_region_size(path, why, whylen);

	if (size >= 0 && (uint64_t)size < PMFUSE_MIN_REGION) {
		snprintf(why, whylen, "%s is %" PRId64 " bytes: too small to be a pmfuse region", path, size);
		return -EINVAL;
	}
	return size;
}

bool pool_ichunk_hwm_ok(const struct pool *p)
{
	uint64_t hwm = p->sb->ichunk_hwm, n = pool_ichunks(p);

	if (p->sb->geo.version < 3)
		return true;
	return hwm && hwm <= n && pool_ichunk(p, hwm - 1) && (hwm == n || !pool_ichunk(p, hwm));
}

uint64_t pool_ichunk_end(const struct pool *p, uint64_t n)
{
	uint64_t end = n;

	if (p->sb->geo.version >= 5) {
		uint64_t l = pmfuse_itable_entries(5, end);
		while (l > 1 && !pool_ileaf(p, (l - 1) * PMFUSE_ILEAF_CHUNKS))
			l--;
		if (l * PMFUSE_ILEAF_CHUNKS < end)
			end = l * PMFUSE_ILEAF_CHUNKS;
	}
	while (end > 1 && !pool_ichunk(p, end - 1))
		end--;
	return end;
}

uint64_t *pool_ileaf_slot_tx(struct pool *p, struct pmfuse_itable *top, uint64_t c, bool snap)
{
	uint64_t *leaf = &top->chunk[c / PMFUSE_ILEAF_CHUNKS];

	if (!*leaf) {
		if (snap)
			pmemobj_tx_add_range_direct(leaf, sizeof(uint64_t));
		*leaf = pool_tx_zalloc(sizeof(struct pmfuse_ileaf)).off;
	}
	return &((struct pmfuse_ileaf *)pool_ptr(p, *leaf))->chunk[c % PMFUSE_ILEAF_CHUNKS];
}

void pool_ichunk_set_tx(struct pool *p, uint64_t c, uint64_t off)
{
	uint64_t *slot = &p->itable->chunk[c];

	if (p->sb->geo.version >= 5)
		slot = pool_ileaf_slot_tx(p, p->itable, c, true);
	pmemobj_tx_add_range_direct(slot, sizeof(uint64_t));
	*slot = off;
	if (off || p->sb->geo.version < 5)
		return;
	/* the last chunk of its leaf gone: the leaf goes too */
	uint64_t *leaf = &p->itable->chunk[c / PMFUSE_ILEAF_CHUNKS];
	const struct pmfuse_ileaf *l = pool_ptr(p, *leaf);
	for (unsigned i = 0; i < PMFUSE_ILEAF_CHUNKS; i++)
		if (l->chunk[i])
			return;
	pool_tx_free(pmemobj_oid(l));
	pmemobj_tx_add_range_direct(leaf, sizeof(uint64_t));
	*leaf = 0;
}

/* ------------------------------------------------------------ in use */

/* Can the region be locked now?  (The probe's own lock goes with the fd.) */
static bool lock_free(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool free_now;

	if (fd < 0)
		return true;	/* the caller's own open says why */
	free_now = flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK;
	close(fd);
	return free_now;
}

/* Is pid a pmfuse daemon (pmfuse, or a build of it: pmfuse-tsan)? */
static bool is_daemon(pid_t pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (!(f = fopen(path, "re")))
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = 0;
	fclose(f);
	comm[strcspn(comm, "\n")] = 0;
	return strcmp(comm, "pmfuse") == 0 || strncmp(comm, "pmfuse-", 7) == 0;
}

/*
 * Does the process (its /proc directory open as pid_dir) have the file open?
 * Descriptors are compared by the path their link names, never stat()ed:
 * following them would reach into other filesystems -- a FUSE mount being
 * unmounted (EBUSY), a hung NFS server.
 */
static bool has_open(int pid_dir, const char *real)
{
	int fdd = openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdd < 0 ? NULL : fdopendir(fdd);
	struct dirent *e;
	char target[PATH_MAX];
	bool found = false;

	if (!d) {
		if (fdd >= 0)
			close(fdd);
		return false;
	}
	while (!found && (e = readdir(d))) {
		ssize_t n = e->d_name[0] == '.' ? -1 :
			    readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = 0;
			found = strcmp(target, real) == 0;
		}
	}
	closedir(d);
	return found;
}

/* Does it map the file?  (libpmemobj closes its descriptor: the map keeps the lock.) */
static bool has_mapped(int pid_dir, const struct stat *st)
{
	int mfd = openat(pid_dir, "maps", O_RDONLY | O_CLOEXEC);
	FILE *f = mfd < 0 ? NULL : fdopen(mfd, "re");
	char line[512];
	unsigned maj, min;
	unsigned long ino;
	bool found = false;

	if (!f) {
		if (mfd >= 0)
			close(mfd);
		return false;
	}
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "%*s %*s %*s %x:%x %lu", &maj, &min, &ino) == 3 &&
			ino == st->st_ino && maj == major(st->st_dev) && min == minor(st->st_dev);
	fclose(f);
	return found;
}

/*
 * Who else has the region open or mapped?  The lock belongs to an open
 * file, and /proc/locks names the process that took it -- the daemon's
 * parent, gone once it daemonized -- so look at every process's
 * descriptors and maps.  *pid gets one of them; false if one is not a
 * pmfuse daemon.  Nobody at all is an exiting daemon: its maps and
 * descriptors are gone, the file's last reference (and the lock) not yet.
 */
static bool only_daemons_hold(const char *real, const struct stat *st, pid_t *pid)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;
	bool only = true;

	*pid = 0;
	if (!proc)
		return false;
	while (only && (e = readdir(proc))) {
		char *end;
		long v = strtol(e->d_name, &end, 10);
		if (*end || v <= 0 || v == getpid())
			continue;
		int dfd = openat(dirfd(proc), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue;
		if (has_open(dfd, real) || has_mapped(dfd, st)) {
			*pid = (pid_t)v;
			only = is_daemon((pid_t)v);
		}
		close(dfd);
	}
	closedir(proc);
	return only;
}

/* mountinfo escapes blanks and backslashes as \ooo: undo it in place. */
static void unescape_octal(char *s)
{
	char *o = s;

	for (; *s; s++, o++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o = *s;
		}
	}
	*o = 0;
}

/* Is real (an absolute, resolved path) the source of a fuse.pmfuse mount? */
static bool region_mounted(const char *real)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - "), type[64], src[4096];
		if (!sep || sscanf(sep + 3, "%63s %4095s", type, src) != 2)
			continue;
		unescape_octal(src);
		found = strcmp(type, "fuse.pmfuse") == 0 && strcmp(src, real) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

bool pool_wait_closing(const char *path)
{
	char real[PATH_MAX];
	struct stat st;
	bool said = false;
	pid_t pid = 0;

	if (!realpath(path, real) || stat(real, &st))
		return false;
	for (int waited = 0; waited <= POOL_CLOSE_WAIT_MS; waited += 10) {
		if (lock_free(real))
			return true;
		/* a daemon still starting has the lock and no mount yet: wait for either */
		if (waited % 100 == 0 && (region_mounted(real) || !only_daemons_hold(real, &st, &pid)))
			return false;
		if (!said) {
			char who[48] = "an exiting pmfuse daemon";
			if (pid)
				snprintf(who, sizeof(who), "pmfuse daemon %d", (int)pid);
			fprintf(stderr, "%s: still held by %s, whose mount is gone: waiting up to %d s "
				"for it to finish closing\n", path, who, POOL_CLOSE_WAIT_MS / 1000);
			said = true;
		}
		usleep(10000);
	}
	return false;
}

/*
 * libpmemobj 1.12 writes the footer of a huge block (the chunk header that
 * names the block's last chunk) without flushing it: it counts on heap boot
 * to rewrite footers.  Boot rewrites them for used blocks only
 * (huge_reinit_chunk), yet the zone walk that follows coalesces each free
 * block with the one before it by that block's footer.  A power loss after a
 * free block was split, before its footer's line was written back, leaves
 * there the stale header of a block the chunk once started: the walk then
 * reads a chunk id below zero and the first allocation of the mount dies in
 * heap_get_adjacent_free_block.  (The crash explorer's cache-line images
 * reach it; DAOS's libpmemobj fixed it the same way in 2025.)  So after
 * pmemobj_open() has replayed its logs, and before anything allocates, every
 * huge block's footer is made to name its block, and persisted.  Headers
 * whose sizes do not tile the zone are damage: refused, not walked.
 */
#define OBJ_ZONE_MAGIC		0xC3F0A2D2u
enum { OBJ_CHUNK_FOOTER = 1, OBJ_CHUNK_FREE = 2, OBJ_CHUNK_USED = 3, OBJ_CHUNK_RUN = 4 };

struct obj_chunk_hdr {
	uint16_t type;
	uint16_t flags;
	uint32_t size_idx;
};

static int heap_footers_mend(struct pool *p, const char *path, char *why, size_t whylen)
{
	uint64_t heap_off, mended = 0;

	memcpy(&heap_off, p->base + OBJ_HEAP_OFFSET_OFF, sizeof(heap_off));
	uint64_t zone_off = heap_off + OBJ_HEAP_HDR;
	for (uint32_t zid = 0; zone_off + OBJ_ZONE_HDR + OBJ_CHUNK <= p->size; zid++) {
		uint32_t *zh = (uint32_t *)(p->base + zone_off);
		struct obj_chunk_hdr *ch = (struct obj_chunk_hdr *)(p->base + zone_off + 64);
		uint64_t fits = (p->size - zone_off - OBJ_ZONE_HDR) / OBJ_CHUNK;

		if (zh[0] != OBJ_ZONE_MAGIC)
			break;	/* zones are taken in order: none after this one was used */
		if (zh[1] == 0 || zh[1] > OBJ_ZONE_CHUNKS || zh[1] > fits) {
			snprintf(why, whylen, "%s: pmemobj heap zone %u is damaged (size %u)", path,
				 zid, zh[1]);
			return -EINVAL;
		}
		for (uint32_t i = 0; i < zh[1]; i += ch[i].size_idx) {
			struct obj_chunk_hdr *h = &ch[i];
			if (h->size_idx == 0 || h->size_idx > zh[1] - i ||
			    (h->type != OBJ_CHUNK_FREE && h->type != OBJ_CHUNK_USED &&
			     h->type != OBJ_CHUNK_RUN)) {
				snprintf(why, whylen, "%s: pmemobj heap zone %u, chunk %u is damaged "
					 "(type %u, size %u)", path, zid, i, h->type, h->size_idx);
				return -EINVAL;
			}
			if (h->type == OBJ_CHUNK_RUN || h->size_idx == 1)
				continue;
			struct obj_chunk_hdr *f = &ch[i + h->size_idx - 1];
			if (f->type == OBJ_CHUNK_FOOTER && f->size_idx == h->size_idx)
				continue;
			*f = (struct obj_chunk_hdr){ .type = OBJ_CHUNK_FOOTER, .flags = h->flags,
						     .size_idx = h->size_idx };
			pmemobj_persist(p->pop, f, sizeof(*f));
			mended++;
		}
		zone_off += OBJ_ZONE_HDR + OBJ_ZONE_CHUNKS * OBJ_CHUNK;
	}
	if (mended)
		log_notice("%s: rewrote %" PRIu64 " stale chunk footer(s) of the pmemobj heap "
			   "(left by a power loss)", path, mended);
	return 0;
}

/*
 * What libpmemobj allocates in DRAM while it opens a pool: about 10,000
 * blocks, 12 MB (log contexts and locks for each of its 1024 lanes),
 * touched page by page.  A first touch costs 0.2-0.5 us on most hosts and
 * 7.5 us on one with shadow page tables, where these faults were 25 of
 * pmemobj_open's 45 ms.  A program that opens one pool (the daemon and fsck
 * do) can have them served from one arena populated in one call
 * (3.5 ms for 16 MiB there): blocks are cut from it during pmemobj_open()
 * only, never reused (they live as long as the pool), and whatever the open
 * left unused is given back.  Later allocations go to libc.
 */
#define OPEN_ARENA_BYTES	(14 * MiB)
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static struct {
	char *base;
	size_t len;
	_Atomic size_t used;
	_Atomic bool on;
} open_arena;

static bool in_open_arena(const void *ptr)
{
	const char *c = ptr;

	return open_arena.base && c >= open_arena.base && c < open_arena.base + open_arena.len;
}

static void *arena_malloc(size_t size)
{
	if (atomic_load_explicit(&open_arena.on, memory_order_relaxed) && size < open_arena.len) {
		size_t need = (size + 2 * 16 - 1) & ~(size_t)15;	/* a 16-byte header */
		size_t at = atomic_fetch_add(&open_arena.used, need);
		if (at + need <= open_arena.len) {
			char *blk = open_arena.base + at;
			memcpy(blk, &size, sizeof(size));
			return blk + 16;
		}
	}
	return malloc(size);
}

static void arena_free(void *ptr)
{
	if (!in_open_arena(ptr))
		free(ptr);
}

static void *arena_realloc(void *ptr, size_t size)
{
	if (!in_open_arena(ptr))
		return realloc(ptr, size);
	size_t old;
	memcpy(&old, (char *)ptr - 16, sizeof(old));
	void *n = arena_malloc(size);
	if (n)
		memcpy(n, ptr, old < size ? old : size);
	return n;
}

static char *arena_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = arena_malloc(n);

	return d ? memcpy(d, s, n) : NULL;
}

void pool_use_open_arena(void)
{
	void *a;

	if (open_arena.base)
		return;
	a = mmap(NULL, OPEN_ARENA_BYTES, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (a == MAP_FAILED)
		return;		/* libc it is */
	open_arena.base = a;
	open_arena.len = OPEN_ARENA_BYTES;
#if defined(__SANITIZE_ADDRESS__)
	/* libpmemobj's blocks here point at ones it takes from libc later */
	__lsan_register_root_region(a, OPEN_ARENA_BYTES);
#endif
	pmemobj_set_funcs(arena_malloc, arena_free, arena_realloc, arena_strdup);
}

static PMEMobjpool *obj_open(const char *path)
{
	atomic_store(&open_arena.on, open_arena.base != NULL);
	PMEMobjpool *pop = pmemobj_open(path, PMFUSE_LAYOUT);
	int e = errno;
	atomic_store(&open_arena.on, false);
	if (open_arena.base) {
		/* the pages the open did not take go back */
		size_t used = (atomic_load(&open_arena.used) + 4095) & ~(size_t)4095;
		if (used < open_arena.len)
			madvise(open_arena.base + used, open_arena.len - used, MADV_DONTNEED);
	}
	errno = e;
	return pop;
}

/* pmemobj_open() and the root object, once the header was found sound. */
static int open_pmemobj(struct pool *p, const char *path, uint64_t size, char *why, size_t whylen)
{
	p->pop = obj_open(path);
	int e = errno;
	if (!p->pop && (e == EAGAIN || e == EWOULDBLOCK) && pool_wait_closing(path)) {
		p->pop = obj_open(path);
		e = errno;
	}
	if (!p->pop) {
		if (e == EAGAIN || e == EWOULDBLOCK) {
			snprintf(why, whylen, "%s is in use (mounted by another pmfuse daemon, or being checked)", path);
			return -EAGAIN;
		}
		if (e == EINVAL && strstr(pmemobj_errormsg(), "layout")) {
			snprintf(why, whylen, "%s is a pmemobj pool of another layout, not a pmfuse region", path);
			return -EINVAL;
		}
		snprintf(why, whylen, "%s: cannot open pool: %s", path, pmemobj_errormsg());
		return -EINVAL;
	}
	p->base = (char *)p->pop;
	p->size = size;
	int ret = heap_footers_mend(p, path, why, whylen);
	if (ret) {
		pool_close(p);
		return ret;
	}
	if (pmemobj_root_size(p->pop) != sizeof(struct pmfuse_super)) {
		snprintf(why, whylen, "%s: pool has no pmfuse superblock", path);
		goto fail;
	}
	/* pmemobj_root() would reallocate on a size mismatch; we checked it */
	PMEMoid root = pmemobj_root(p->pop, sizeof(struct pmfuse_super));
	if (OID_IS_NULL(root) || root.off < 4096 || root.off > p->size ||
	    p->size - root.off < sizeof(struct pmfuse_super)) {
		snprintf(why, whylen, "%s: superblock pointer is out of range: damaged pool", path);
		goto fail;
	}
	p->sb = (struct pmfuse_super *)(p->base + root.off);
	return 0;
fail:
	pool_close(p);
	return -EINVAL;
}

/* Size, header (and geometry), pmemobj_open() and the root object. */
static int open_pool(struct pool *p, const char *path, bool geometry, char *why, size_t whylen)
{
	int64_t size;
	int ret;

	memset(p, 0, sizeof(*p));
	size = open_size(path, why, whylen);
	if (size < 0)
		return (int)size;
	ret = precheck(path, (uint64_t)size, geometry, why, whylen);
	return ret ? ret : open_pmemobj(p, path, (uint64_t)size, why, whylen);
}

int pool_open(struct pool *p, const char *path, char *why, size_t whylen)
{
	int ret = open_pool(p, path, true, why, whylen);

	if (ret)
		return ret;
	ret = pool_check_geometry(&p->sb->geo, p->size, why, whylen);
	if (ret)
		goto fail;
	p->itable = (struct pmfuse_itable *)(p->base + p->sb->geo.itable_off);
	if (p->itable->nchunks != p->sb->geo.max_inodes / PMFUSE_INODES_PER_CHUNK) {
		snprintf(why, whylen, "inode table size does not match the superblock");
		ret = -EINVAL;
		goto fail;
	}
	ret = pool_pieces_load(p, why, whylen);
	if (ret)
		goto fail;
	return 0;
fail:
	pool_close(p);
	return ret;
}

int pool_open_damaged(struct pool *p, const char *path, char *why, size_t whylen)
{
	int ret = open_pool(p, path, false, why, whylen);

	if (ret)
		return ret;
	if (p->sb->geo.magic != PMFUSE_MAGIC) {
		snprintf(why, whylen, "%s: no pmfuse superblock (bad magic)", path);
		pool_close(p);
		return -EINVAL;
	}
	/* the data area as far as it can be known: pieces, or the runs alone */
	char ignore[POOL_WHY];
	if (!pool_check_geometry(&p->sb->geo, p->size, ignore, sizeof(ignore)) &&
	    pool_pieces_load(p, ignore, sizeof(ignore))) {
		pool_pieces_free(p);
		pool_pieces_load_runs(p);
	}
	return 0;
}

void pool_backup_make(const struct pmfuse_geometry *g, struct pmfuse_geometry *b)
{
	*b = *g;
	b->magic = PMFUSE_BACKUP_MAGIC;
	b->checksum = pool_geometry_checksum(b);
}

enum pool_backup pool_backup_check(const struct pmfuse_geometry *g,
				   const struct pmfuse_geometry *b)
{
	struct pmfuse_geometry want;

	if (b->magic != PMFUSE_BACKUP_MAGIC || b->checksum != pool_geometry_checksum(b))
		return POOL_BACKUP_DAMAGED;
	pool_backup_make(g, &want);
	return memcmp(&want, b, sizeof(want)) == 0 ? POOL_BACKUP_OK : POOL_BACKUP_DIFFERS;
}

int64_t pool_backup_find(const char *base, uint64_t size, struct pmfuse_geometry *g)
{
	char why[POOL_WHY];

	for (uint64_t off = PMFUSE_HUGE_2M_BLOCKS * PMFUSE_BLOCK_SIZE;
	     off + PMFUSE_BLOCK_SIZE <= size; off += PMFUSE_HUGE_2M_BLOCKS * PMFUSE_BLOCK_SIZE) {
		const struct pmfuse_geometry *c = (const void *)(base + off);
		if (c->magic != PMFUSE_BACKUP_MAGIC || c->checksum != pool_geometry_checksum(c))
			continue;
		*g = *c;
		g->magic = PMFUSE_MAGIC;
		g->checksum = pool_geometry_checksum(g);
		/* it must be where the geometry it describes puts it */
		if (pool_backup_off(g) == off && !pool_check_geometry(g, size, why, sizeof(why)))
			return (int64_t)off;
	}
	return -1;
}

void pool_close(struct pool *p)
{
	pool_pieces_free(p);
	if (p->pop)
		pmemobj_close(p->pop);
	p->pop = NULL;
}
