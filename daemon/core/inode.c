/*
 * inode: the persistent inode table, the DRAM inode cache and the free
 * inode numbers.  An inode number is a slot in the table: stable across
 * mounts, with a generation bumped each time the slot is reused.
 */
#include "core.h"
#include "dir.h"
#include "writeback.h"
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pmfuse_inode *inode_record(struct fs *fs, uint64_t ino)
{
	struct pool *p = &fs->pool;
	uint64_t chunk = ino / PMFUSE_INODES_PER_CHUNK, off;

	if (ino == 0 || ino >= fs->max_inodes ||
	    chunk >= atomic_load_explicit(&fs->ichunk_limit, memory_order_acquire))
		return NULL;
	off = pool_ichunk(p, chunk);
	if (!off || !pool_struct_ok(p, off, PMFUSE_ICHUNK_SIZE))
		return NULL;
	return (struct pmfuse_inode *)pool_ptr(p, off) + ino % PMFUSE_INODES_PER_CHUNK;
}

static pthread_mutex_t *stripe(struct fs *fs, uint64_t ino)
{
	return &fs->istripe[ino % 64];
}

/* A bit per inode number: ivalid and ibad (relaxed), icommitted (ordered). */
static bool bit_test(_Atomic uint64_t *bm, uint64_t ino, memory_order mo)
{
	return atomic_load_explicit(&bm[ino / 64], mo) >> (ino % 64) & 1;
}

static void bit_change(_Atomic uint64_t *bm, uint64_t ino, bool on, memory_order mo)
{
	if (on)
		atomic_fetch_or_explicit(&bm[ino / 64], 1ull << (ino % 64), mo);
	else
		atomic_fetch_and_explicit(&bm[ino / 64], ~(1ull << (ino % 64)), mo);
}

static bool bit_get(_Atomic uint64_t *bm, uint64_t ino)
{
	return bit_test(bm, ino, memory_order_relaxed);
}

static void bit_set(_Atomic uint64_t *bm, uint64_t ino)
{
	bit_change(bm, ino, true, memory_order_relaxed);
}

/* Release: what the create's transaction wrote is seen by whoever acquires it. */
void inode_committed(struct fs *fs, uint64_t ino)
{
	bit_change(fs->icommitted, ino, true, memory_order_release);
}

static bool is_committed(struct fs *fs, uint64_t ino)
{
	return bit_test(fs->icommitted, ino, memory_order_acquire);
}

int inode_first_use(struct fs *fs, uint64_t ino, const struct pmfuse_inode *pi, char *why,
		    size_t whylen)
{
	if (!fs->lazy || bit_get(fs->ivalid, ino))
		return 0;
	if (bit_get(fs->ibad, ino)) {
		snprintf(why, whylen, "inode %" PRIu64 " was found damaged", ino);
		return -EUCLEAN;
	}
	int ret = fs_check_inode(fs, ino, pi, why, whylen);
	bit_set(ret ? fs->ibad : fs->ivalid, ino);
	return ret;
}

/*
 * Mounted from the clean-unmount record, no inode was read at mount: each
 * gets the mount's checks the first time it is got (under its stripe lock,
 * so once) -- the root too, cached since the mount.  A damaged one is
 * reported once and never served.
 */
static bool lazy_valid(struct fs *fs, uint64_t ino, const struct pmfuse_inode *pi)
{
	char why[POOL_WHY];
	bool reported = fs->lazy && bit_get(fs->ibad, ino);

	if (!inode_first_use(fs, ino, pi, why, sizeof(why)))
		return true;
	if (!reported)
		log_err("%s; the inode is not served: run fsck.pmfuse", why);
	return false;
}

struct inode *inode_get(struct fs *fs, uint64_t ino)
{
	struct inode *in;

	if (ino == 0 || ino >= fs->max_inodes)
		return NULL;
	pthread_mutex_lock(stripe(fs, ino));
	/* an inode being evicted is its evictor's until it leaves icache */
	while ((in = atomic_load(&fs->icache[ino])) && in->state == INODE_EVICTING)
		pthread_cond_wait(&fs->istripe_wait[ino % 64], stripe(fs, ino));
	if (!in) {
		struct pmfuse_inode *pi = is_committed(fs, ino) ? inode_record(fs, ino) : NULL;
		if (!pi || pi->mode == 0 || !lazy_valid(fs, ino, pi) ||
		    !(in = calloc(1, sizeof(*in)))) {
			pthread_mutex_unlock(stripe(fs, ino));
			return NULL;
		}
		in->ino = ino;
		in->pi = pi;
		pthread_rwlock_init(&in->lock, NULL);
		atomic_store(&fs->icache[ino], in);
	} else if (fs->lazy && !bit_get(fs->ivalid, ino) && !lazy_valid(fs, ino, in->pi)) {
		pthread_mutex_unlock(stripe(fs, ino));
		return NULL;
	}
	in->refs++;
	pthread_mutex_unlock(stripe(fs, ino));
	return in;
}

/*
 * In a transaction.  The orphan list is one list for the whole filesystem:
 * fs->orphan_lock is taken here, where the transaction first touches it,
 * and held until it commits (pool_tx_lock), not across all of it.
 */
void inode_tx_orphan_remove(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi)
{
	struct pmfuse_super *sb = fs->pool.sb;

	if (!(pi->flags & PMFUSE_IF_ORPHAN))
		return;
	pool_tx_lock(&fs->orphan_lock);
	struct pmfuse_inode *prev = inode_record(fs, pi->orphan_prev);
	struct pmfuse_inode *next = inode_record(fs, pi->orphan_next);
	if (sb->orphan_head == ino) {
		pmemobj_tx_add_range_direct(&sb->orphan_head, sizeof(sb->orphan_head));
		sb->orphan_head = pi->orphan_next;
	} else if (prev) {
		pmemobj_tx_add_range_direct(&prev->orphan_next, sizeof(prev->orphan_next));
		prev->orphan_next = pi->orphan_next;
	}
	if (next) {
		pmemobj_tx_add_range_direct(&next->orphan_prev, sizeof(next->orphan_prev));
		next->orphan_prev = pi->orphan_prev;
	}
	pmemobj_tx_add_range_direct(&pi->flags, sizeof(pi->flags));
	pmemobj_tx_add_range_direct(&pi->orphan_next, PMFUSE_INODE_ORPHAN_SPAN);
	pi->flags &= ~PMFUSE_IF_ORPHAN;
	pi->orphan_next = pi->orphan_prev = 0;
}

/* In a transaction (the lock as for inode_tx_orphan_remove). */
void inode_tx_orphan_add(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi)
{
	struct pmfuse_super *sb = fs->pool.sb;

	if (pi->flags & PMFUSE_IF_ORPHAN)
		return;
	pool_tx_lock(&fs->orphan_lock);
	struct pmfuse_inode *head = inode_record(fs, sb->orphan_head);
	pmemobj_tx_add_range_direct(&pi->flags, sizeof(pi->flags));
	pmemobj_tx_add_range_direct(&pi->orphan_next, PMFUSE_INODE_ORPHAN_SPAN);
	pi->flags |= PMFUSE_IF_ORPHAN;
	pi->orphan_next = head ? sb->orphan_head : 0;
	pi->orphan_prev = 0;
	if (head) {
		pmemobj_tx_add_range_direct(&head->orphan_prev, sizeof(head->orphan_prev));
		head->orphan_prev = ino;
	}
	if (!seeded_bug("orphan-link"))
		pmemobj_tx_add_range_direct(&sb->orphan_head, sizeof(sb->orphan_head));
	sb->orphan_head = ino;
}

struct reclaim_args {
	struct fs *fs;
	struct inode in;
	struct fmap_freed *freed;
	bool reclaimed;
};

static int tx_reclaim(void *arg)
{
	struct reclaim_args *a = arg;
	struct pmfuse_inode *pi = a->in.pi;

	/*
	 * Idempotent: only a record that is still an unlinked orphan goes.
	 * Nobody else changes it meanwhile: the inode is being evicted (no
	 * references) or the mount has not started serving.
	 */
	a->reclaimed = pi->mode != 0 && pi->nlink == 0 && (pi->flags & PMFUSE_IF_ORPHAN);
	if (!a->reclaimed)
		return 0;
	/*
	 * The whole record is rewritten: snapshot it first, so the field adds
	 * below find it covered (at page granularity every separate snapshot
	 * is an msync of the undo log, and another at commit) -- all but its
	 * orphan links.  Those belong to the orphan list, which neighbours'
	 * transactions change until we hold its lock: a snapshot taken now
	 * would hold stale links, and an abort would write them back.
	 */
	char *rec = (char *)pi, *links = (char *)&pi->orphan_next;
	size_t after = offsetof(struct pmfuse_inode, orphan_next) + PMFUSE_INODE_ORPHAN_SPAN;
	pmemobj_tx_add_range_direct(rec, (size_t)(links - rec));
	pmemobj_tx_add_range_direct(rec + after, sizeof(*pi) - after);
	/* its blocks first: the shared orphan list is locked only from here */
	int ret = inode_tx_free_contents(a->fs, &a->in, a->freed);
	if (ret)
		return ret;
	inode_tx_orphan_remove(a->fs, a->in.ino, pi);
	inode_tx_clear(pi);
	fault_crash_point(FAULT_CRASH_RECLAIM_TX);
	return 0;
}

int inode_reclaim(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi)
{
	struct fmap_freed freed = { 0 };
	struct reclaim_args a = { fs, { .ino = ino, .pi = pi }, &freed, false };
	int ret;

	ret = pool_tx(&fs->pool, tx_reclaim, &a);
	if (ret || !a.reclaimed) {
		free(freed.runs);
		return ret;
	}
	fmap_freed_release(&fs->alloc, &freed);
	inode_release_ino(fs, ino);
	return 1;
}

void inode_retire(struct fs *fs, struct inode *in)
{
	bool unlinked = in->pi->mode != 0 && in->pi->nlink == 0;

	/* map sessions left at unmount: their pages are dirty, their blocks free */
	dax_inode_free(fs, in);
	/* write back first, unless nobody can read it again */
	writeback_drop(fs, in, !unlinked);
	if (unlinked)
		inode_reclaim(fs, in->ino, in->pi);
}

void inode_free(struct inode *in)
{
	dir_hash_free(in);
	pthread_rwlock_destroy(&in->lock);
	free(in);
}

/*
 * The evictor's work (see struct inode): nobody else can reach the inode,
 * which stays in icache, EVICTING, until its reclaim has committed.
 */
static void evict(struct fs *fs, struct inode *in)
{
	pthread_rwlock_wrlock(&in->lock);
	fault_crash_point(FAULT_CRASH_EVICT);
	inode_retire(fs, in);
	pthread_rwlock_unlock(&in->lock);

	pthread_mutex_lock(stripe(fs, in->ino));
	atomic_store(&fs->icache[in->ino], NULL);
	pthread_cond_broadcast(&fs->istripe_wait[in->ino % 64]);
	pthread_mutex_unlock(stripe(fs, in->ino));
	inode_free(in);
}

/*
 * With the stripe lock held: drop it, and evict the inode if no count is
 * left on it.
 */
static void unlock_and_evict_unused(struct fs *fs, struct inode *in)
{
	bool unused = in->state == INODE_LIVE && !in->refs && !in->nlookup && !in->nopen;

	if (unused)
		in->state = INODE_EVICTING;
	pthread_mutex_unlock(stripe(fs, in->ino));
	if (unused)
		evict(fs, in);
}

void inode_put(struct fs *fs, struct inode *in)
{
	pthread_mutex_lock(stripe(fs, in->ino));
	in->refs--;
	unlock_and_evict_unused(fs, in);
}

static void lock_one(struct inode *in, bool shared)
{
	if (shared)
		pthread_rwlock_rdlock(&in->lock);
	else
		pthread_rwlock_wrlock(&in->lock);
}

void inode_lock_two(struct inode *a, bool a_shared, struct inode *b, bool b_shared)
{
	if (!b || a == b) {
		lock_one(a, a_shared && (!b || b_shared));
	} else if (a->ino < b->ino) {
		lock_one(a, a_shared);
		lock_one(b, b_shared);
	} else {
		lock_one(b, b_shared);
		lock_one(a, a_shared);
	}
}

void inode_unlock_two(struct inode *a, struct inode *b)
{
	pthread_rwlock_unlock(&a->lock);
	if (b && b != a)
		pthread_rwlock_unlock(&b->lock);
}

void inode_add_lookup(struct fs *fs, struct inode *in)
{
	pthread_mutex_lock(stripe(fs, in->ino));
	in->nlookup++;
	pthread_mutex_unlock(stripe(fs, in->ino));
}

void fs_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
	struct inode *in;

	if (ino == 0 || ino >= fs->max_inodes)
		return;
	pthread_mutex_lock(stripe(fs, ino));
	in = atomic_load(&fs->icache[ino]);
	if (!in || in->state != INODE_LIVE) {
		pthread_mutex_unlock(stripe(fs, ino));
		return;
	}
	in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
	unlock_and_evict_unused(fs, in);
}

static const struct {
	unsigned fs, media;
} iflag_map[] = {
	{ FS_IFL_IMMUTABLE, PMFUSE_IF_IMMUTABLE },
	{ FS_IFL_APPEND, PMFUSE_IF_APPEND },
	{ FS_IFL_NODUMP, PMFUSE_IF_NODUMP },
	{ FS_IFL_NOATIME, PMFUSE_IF_NOATIME },
};

int fs_get_iflags(struct fs *fs, uint64_t ino, unsigned *flags)
{
	struct inode *in = inode_get(fs, ino);

	if (!in)
		return -ENOENT;
	*flags = 0;
	pthread_rwlock_rdlock(&in->lock);
	for (size_t i = 0; i < sizeof(iflag_map) / sizeof(iflag_map[0]); i++)
		if (in->pi->flags & iflag_map[i].media)
			*flags |= iflag_map[i].fs;
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return 0;
}

struct iflags_args {
	struct pmfuse_inode *pi;
	uint32_t flags;
};

static int tx_iflags(void *arg)
{
	struct iflags_args *a = arg;

	pmemobj_tx_add_range_direct(&a->pi->flags, sizeof(a->pi->flags));
	a->pi->flags = a->flags;
	inode_tx_touch(a->pi, false, false, true);
	return 0;
}

int fs_set_iflags(struct fs *fs, uint64_t ino, unsigned flags)
{
	struct inode *in;
	uint32_t media = 0;
	int ret = 0;

	for (size_t i = 0; i < sizeof(iflag_map) / sizeof(iflag_map[0]); i++)
		if (flags & iflag_map[i].fs) {
			media |= iflag_map[i].media;
			flags &= ~iflag_map[i].fs;
		}
	if (flags)
		return -EOPNOTSUPP;
	if (!(in = inode_get(fs, ino)))
		return -ENOENT;
	pthread_rwlock_wrlock(&in->lock);
	struct iflags_args a = { in->pi, (in->pi->flags & ~PMFUSE_IF_ATTRS) | media };
	if (a.flags != in->pi->flags)
		ret = pool_tx(&fs->pool, tx_iflags, &a);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

int fs_open(struct fs *fs, uint64_t ino, int flags, bool *atime_due)
{
	struct inode *in = inode_get(fs, ino);
	bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	int ret = 0;

	if (!in)
		return -ENOENT;
	if (writes || atime_due) {
		pthread_rwlock_rdlock(&in->lock);
		/* chattr: immutable files open for reading only, append-only ones to append */
		if (writes)
			ret = (flags & (O_APPEND | O_TRUNC)) == O_APPEND ? inode_immutable(in->pi)
									 : inode_pinned(in->pi);
		if (atime_due)
			*atime_due = inode_atime_due(fs, in->pi);
		pthread_rwlock_unlock(&in->lock);
		if (ret) {
			inode_put(fs, in);
			return ret;
		}
	}
	pthread_mutex_lock(stripe(fs, ino));
	in->nopen++;
	in->refs--;
	pthread_mutex_unlock(stripe(fs, ino));
	return 0;
}

void fs_release(struct fs *fs, uint64_t ino)
{
	struct inode *in;

	if (ino == 0 || ino >= fs->max_inodes)
		return;
	pthread_mutex_lock(stripe(fs, ino));
	in = atomic_load(&fs->icache[ino]);
	if (!in || in->state != INODE_LIVE || !in->nopen) {
		pthread_mutex_unlock(stripe(fs, ino));
		return;
	}
	in->nopen--;
	unlock_and_evict_unused(fs, in);
}

int inode_validate(const struct pool *p, uint64_t ino, const struct pmfuse_inode *pi,
		   char *why, size_t whylen)
{
	mode_t type = pi->mode & S_IFMT;

	switch (type) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		break;
	default:
		snprintf(why, whylen, "inode %" PRIu64 ": bad file type %o", ino, pi->mode);
		return -EUCLEAN;
	}
	if (pi->nlink == 0 && !(pi->flags & PMFUSE_IF_ORPHAN)) {
		snprintf(why, whylen, "inode %" PRIu64 ": link count 0 but not an orphan", ino);
		return -EUCLEAN;
	}
	/* mount reclaims orphans: one flipped bit must not delete a linked file */
	if (pi->nlink != 0 && (pi->flags & PMFUSE_IF_ORPHAN)) {
		snprintf(why, whylen, "inode %" PRIu64 ": marked orphan but has %u link(s)", ino,
			 pi->nlink);
		return -EUCLEAN;
	}
	if (pi->flags & ~(PMFUSE_IF_ORPHAN | PMFUSE_IF_ATTRS)) {
		snprintf(why, whylen, "inode %" PRIu64 ": unknown flags %#x", ino, pi->flags);
		return -EUCLEAN;
	}
	if (pi->map_height > PMFUSE_MAP_MAX_HEIGHT || pi->size > PMFUSE_MAX_FILE_SIZE) {
		snprintf(why, whylen, "inode %" PRIu64 ": file map height %u / size %" PRIu64
			 " out of range", ino, pi->map_height, pi->size);
		return -EUCLEAN;
	}
	if (type != S_IFREG && (pi->map_root || pi->blocks)) {
		snprintf(why, whylen, "inode %" PRIu64 ": non-regular file has data blocks", ino);
		return -EUCLEAN;
	}
	if (pi->xattr_off && !pool_struct_ok(p, pi->xattr_off, sizeof(struct pmfuse_xattrs))) {
		snprintf(why, whylen, "inode %" PRIu64 ": xattr pointer out of range", ino);
		return -EUCLEAN;
	}
	if (type == S_IFDIR) {
		if (pi->dir_off && !pool_struct_ok(p, pi->dir_off, sizeof(struct pmfuse_dirtab))) {
			snprintf(why, whylen, "inode %" PRIu64 ": directory table out of range", ino);
			return -EUCLEAN;
		}
		if (pi->parent == 0 || pi->parent >= p->sb->geo.max_inodes) {
			snprintf(why, whylen, "inode %" PRIu64 ": parent %" PRIu64 " out of range",
				 ino, pi->parent);
			return -EUCLEAN;
		}
	} else if (type == S_IFLNK) {
		if (pi->size == 0 || pi->size > PMFUSE_SYMLINK_MAX ||
		    (pi->size > PMFUSE_INLINE_SYMLINK && !pool_meta_range_ok(p, pi->dir_off, pi->size))) {
			snprintf(why, whylen, "inode %" PRIu64 ": bad symlink target", ino);
			return -EUCLEAN;
		}
	} else if (pi->dir_off) {
		snprintf(why, whylen, "inode %" PRIu64 ": unexpected directory pointer", ino);
		return -EUCLEAN;
	}
	return 0;
}

void inode_to_attr(const struct inode *in, struct fs_attr *attr)
{
	const struct pmfuse_inode *pi = in->pi;
	struct stat *st = &attr->st;

	memset(attr, 0, sizeof(*attr));
	attr->generation = pi->generation;
	st->st_ino = in->ino;
	st->st_mode = pi->mode;
	st->st_nlink = pi->nlink;
	st->st_uid = pi->uid;
	st->st_gid = pi->gid;
	st->st_rdev = pi->rdev;
	st->st_size = (off_t)pi->size;
	st->st_blksize = PMFUSE_BLOCK_SIZE;
	st->st_blocks = (blkcnt_t)(pi->blocks * (PMFUSE_BLOCK_SIZE / 512));
	st->st_atim.tv_sec = pi->atime.sec;
	st->st_atim.tv_nsec = pi->atime.nsec;
	st->st_mtim.tv_sec = pi->mtime.sec;
	st->st_mtim.tv_nsec = pi->mtime.nsec;
	st->st_ctim.tv_sec = pi->ctime.sec;
	st->st_ctim.tv_nsec = pi->ctime.nsec;
}

/* ------------------------------------------------------- free numbers */

/* With itable_lock held: chunk c's free mask becomes m. */
static void ifree_set(struct fs *fs, uint64_t c, uint64_t m)
{
	fs->ifree[c] = m;
	if (m) {
		fs->ifree_any[c / 64] |= 1ull << (c % 64);
		if (c < fs->ifree_lo)
			fs->ifree_lo = c;
	} else {
		fs->ifree_any[c / 64] &= ~(1ull << (c % 64));
	}
}

/* With itable_lock held: the lowest chunk with a free number, or UINT64_MAX. */
static uint64_t ifree_lowest(struct fs *fs)
{
	uint64_t limit = atomic_load(&fs->ichunk_limit);

	for (uint64_t c = fs->ifree_lo; c < limit; c = (c / 64 + 1) * 64) {
		uint64_t w = fs->ifree_any[c / 64] & (UINT64_MAX << (c % 64));
		if (w) {
			fs->ifree_lo = c / 64 * 64 + (uint64_t)__builtin_ctzll(w);
			return fs->ifree_lo;
		}
	}
	fs->ifree_lo = limit;
	return UINT64_MAX;
}

struct chunk_args {
	struct fs *fs;
	uint64_t c;
	bool hwm_moved;
};

static int tx_add_ichunk(void *arg)
{
	struct chunk_args *a = arg;
	struct pool *p = &a->fs->pool;
	PMEMoid oid = pool_tx_zalloc(PMFUSE_ICHUNK_SIZE);
	struct pmfuse_inode *slot = pmemobj_direct(oid);

	/* new: written without snapshots, as the allocation is undone whole */
	for (unsigned i = 0; i < PMFUSE_INODES_PER_CHUNK; i++)
		slot[i].generation = (uint32_t)p->sb->igen_floor;
	pool_ichunk_set_tx(p, a->c, oid.off);
	if (p->sb->geo.version >= 3 && a->c >= p->sb->ichunk_hwm) {
		pmemobj_tx_add_range_direct(&p->sb->ichunk_hwm, sizeof(uint64_t));
		p->sb->ichunk_hwm = a->c + 1;
	}
	return 0;
}

/*
 * Chunk c's inodes are all free: give it back, with its leaf if that is
 * then empty.  Generations stay above every one it held (sb->igen_floor),
 * and the high-water mark comes down to the last chunk left.
 */
static int tx_free_ichunk(void *arg)
{
	struct chunk_args *a = arg;
	struct pool *p = &a->fs->pool;
	struct pmfuse_super *sb = p->sb;
	uint64_t off = pool_ichunk(p, a->c), gen = sb->igen_floor;
	const struct pmfuse_inode *pi;

	if (!off || !pool_struct_ok(p, off, PMFUSE_ICHUNK_SIZE))
		return -EUCLEAN;
	pi = pool_ptr(p, off);
	for (unsigned i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
		if (pi[i].mode)
			return -EUCLEAN;	/* in use: the free numbers lied */
		if (pi[i].generation > gen)
			gen = pi[i].generation;
	}
	if (gen != sb->igen_floor) {
		pmemobj_tx_add_range_direct(&sb->igen_floor, sizeof(sb->igen_floor));
		sb->igen_floor = gen;
	}
	pool_ichunk_set_tx(p, a->c, 0);
	pool_tx_free(pmemobj_oid(pi));
	if (a->c + 1 == sb->ichunk_hwm) {
		pmemobj_tx_add_range_direct(&sb->ichunk_hwm, sizeof(uint64_t));
		sb->ichunk_hwm = pool_ichunk_end(p, a->c);
		a->hwm_moved = true;
	}
	fault_crash_point(FAULT_CRASH_ICHUNK_FREE_TX);
	return 0;
}

/* With itable_lock held: chunk c (all free) goes back to the heap. */
static void free_chunk(struct fs *fs, uint64_t c)
{
	struct chunk_args a = { fs, c, false };
	int ret = pool_tx(&fs->pool, tx_free_ichunk, &a);

	if (ret) {
		if (ret == -EUCLEAN)
			log_err("inode chunk %" PRIu64 " has inodes in use that were listed free; "
				"run fsck.pmfuse", c);
		return;		/* it stays, free numbers and all */
	}
	ifree_set(fs, c, 0);
	fs->ichunks_live--;
	fs->ichunks_freed++;
	if (c < fs->next_chunk)
		fs->next_chunk = c;
	if (a.hwm_moved)
		atomic_store_explicit(&fs->ichunk_limit, fs->pool.sb->ichunk_hwm,
				      memory_order_release);
}

/*
 * With itable_lock held: chunk c has just become empty.  One empty chunk
 * is kept (the lowest: the rest are what gathering inodes low empties).
 */
static void chunk_emptied(struct fs *fs, uint64_t c)
{
	/*
	 * Never inside another transaction: an abort of it would bring the
	 * chunk back behind the DRAM state's back.  (No caller releases a
	 * number in one; a chunk left so is the next mount's to free.)
	 */
	if (fs->pool.sb->geo.version < 6 || c == 0 || pmemobj_tx_stage() != TX_STAGE_NONE)
		return;
	if (fs->spare_chunk == UINT64_MAX) {
		fs->spare_chunk = c;
		return;
	}
	if (c < fs->spare_chunk) {
		uint64_t s = fs->spare_chunk;
		fs->spare_chunk = c;
		c = s;
	}
	fault_crash_point(FAULT_CRASH_ICHUNK_EMPTY);
	free_chunk(fs, c);
}

void inode_trim_chunks(struct fs *fs)
{
	pthread_mutex_lock(&fs->itable_lock);
	uint64_t limit = atomic_load(&fs->ichunk_limit);
	for (uint64_t c = 1; c < limit; c++)
		if (fs->ifree[c] == inode_chunk_all(c) && c != fs->spare_chunk)
			chunk_emptied(fs, c);
	pthread_mutex_unlock(&fs->itable_lock);
}

int inode_alloc_ino(struct fs *fs, uint64_t *ino)
{
	struct pool *p = &fs->pool;
	int ret = 0;
	uint64_t c;

	pthread_mutex_lock(&fs->itable_lock);
	c = ifree_lowest(fs);
	if (c == UINT64_MAX) {
		c = fs->next_chunk;
		if (c >= pool_ichunks(p)) {
			ret = -ENOSPC;
			goto out;
		}
		/* its own transaction: a grown table is harmless if the create fails */
		struct chunk_args a = { fs, c, false };
		if (pool_tx(p, tx_add_ichunk, &a)) {
			ret = -ENOSPC;
			goto out;
		}
		if (c >= atomic_load(&fs->ichunk_limit))
			atomic_store_explicit(&fs->ichunk_limit, c + 1, memory_order_release);
		ifree_set(fs, c, inode_chunk_all(c));
		fs->ichunks_live++;
		while (fs->next_chunk < pool_ichunks(p) && pool_ichunk(p, fs->next_chunk))
			fs->next_chunk++;
	}
	*ino = c * PMFUSE_INODES_PER_CHUNK + (uint64_t)__builtin_ctzll(fs->ifree[c]);
	ifree_set(fs, c, fs->ifree[c] & ~(1ull << (*ino % PMFUSE_INODES_PER_CHUNK)));
	if (c == fs->spare_chunk)
		fs->spare_chunk = UINT64_MAX;
	fs->used_inodes++;
	if (fs->lazy) {
		/*
		 * Free numbers from a clean-unmount record were not read at
		 * mount: a slot in use (the record lied) is never handed out.
		 */
		struct pmfuse_inode *pi = inode_record(fs, *ino);
		if (pi && pi->mode) {
			log_err("inode %" PRIu64 " is in use but the clean-unmount record listed "
				"it free; run fsck.pmfuse", *ino);
			inode_committed(fs, *ino);	/* it is, whatever the record said */
			pthread_mutex_unlock(&fs->itable_lock);
			return inode_alloc_ino(fs, ino);
		}
		/* what a new inode holds is allocated now, not read from the media */
		bit_set(fs->ivalid, *ino);
	}
out:
	pthread_mutex_unlock(&fs->itable_lock);
	return ret;
}

void inode_release_ino(struct fs *fs, uint64_t ino)
{
	uint64_t c = ino / PMFUSE_INODES_PER_CHUNK;

	bit_change(fs->icommitted, ino, false, memory_order_relaxed);
	pthread_mutex_lock(&fs->itable_lock);
	ifree_set(fs, c, fs->ifree[c] | 1ull << (ino % PMFUSE_INODES_PER_CHUNK));
	fs->used_inodes--;
	if (fs->ifree[c] == inode_chunk_all(c))
		chunk_emptied(fs, c);
	pthread_mutex_unlock(&fs->itable_lock);
}

void inode_free_masks(struct fs *fs, uint64_t *masks, uint64_t nchunks)
{
	pthread_mutex_lock(&fs->itable_lock);
	for (uint64_t c = 0; c < nchunks; c++)
		masks[c] = fs->ifree[c];
	pthread_mutex_unlock(&fs->itable_lock);
}

void inode_table_stats(struct fs *fs, uint64_t *live, uint64_t *freed)
{
	pthread_mutex_lock(&fs->itable_lock);
	*live = fs->ichunks_live;
	*freed = fs->ichunks_freed;
	pthread_mutex_unlock(&fs->itable_lock);
}

static void now(struct pmfuse_time *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	t->sec = ts.tv_sec;
	t->nsec = (uint32_t)ts.tv_nsec;
}

static int time_cmp(const struct pmfuse_time *a, const struct pmfuse_time *b)
{
	if (a->sec != b->sec)
		return a->sec < b->sec ? -1 : 1;
	return a->nsec < b->nsec ? -1 : a->nsec > b->nsec;
}

void fs_set_atime(struct fs *fs, enum fs_atime policy, bool nodiratime)
{
	fs->atime = policy;
	fs->nodiratime = nodiratime;
}

/* The kernel's atime_needs_update() with relatime_need_update(). */
bool inode_atime_due(const struct fs *fs, const struct pmfuse_inode *pi)
{
	struct pmfuse_time t;

	if (fs->atime == FS_ATIME_NEVER || (fs->nodiratime && S_ISDIR(pi->mode)) ||
	    (pi->flags & PMFUSE_IF_NOATIME))
		return false;
	now(&t);
	if (time_cmp(&pi->atime, &t) == 0)
		return false;
	return fs->atime == FS_ATIME_STRICT || time_cmp(&pi->mtime, &pi->atime) >= 0 ||
	       time_cmp(&pi->ctime, &pi->atime) >= 0 || t.sec - pi->atime.sec >= 24 * 60 * 60;
}

static int tx_atime(void *arg)
{
	struct pmfuse_inode *pi = arg;

	pmemobj_tx_add_range_direct(&pi->atime, sizeof(pi->atime));
	now(&pi->atime);
	return 0;
}

void inode_touch_atime(struct fs *fs, struct inode *in)
{
	pthread_rwlock_wrlock(&in->lock);
	/* an unlinked inode's record may be reclaimed: its atime is nobody's */
	if (in->pi->nlink && inode_atime_due(fs, in->pi))
		pool_tx(&fs->pool, tx_atime, in->pi);
	pthread_rwlock_unlock(&in->lock);
}

void inode_tx_add(struct pmfuse_inode *pi)
{
	pmemobj_tx_add_range_direct(&pi->mode, PMFUSE_INODE_ATTR_SPAN);
}

void inode_tx_touch(struct pmfuse_inode *pi, bool atime, bool mtime, bool ctime)
{
	struct pmfuse_time t;

	now(&t);
	pmemobj_tx_add_range_direct(&pi->atime, PMFUSE_INODE_TIMES_SPAN);
	if (atime)
		pi->atime = t;
	if (mtime)
		pi->mtime = t;
	if (ctime)
		pi->ctime = t;
}

void inode_tx_init(struct fs *fs, uint64_t ino, mode_t mode, uid_t uid, gid_t gid,
		   dev_t rdev)
{
	struct pmfuse_inode *pi = inode_record(fs, ino);
	uint32_t gen = pi->generation + 1;

	pmemobj_tx_add_range_direct(pi, sizeof(*pi));
	memset(pi, 0, sizeof(*pi));
	pi->mode = mode;
	pi->nlink = S_ISDIR(mode) ? 2 : 1;
	pi->uid = uid;
	pi->gid = gid;
	pi->rdev = rdev;
	pi->generation = gen ? gen : 1;
	now(&pi->atime);
	pi->mtime = pi->ctime = pi->btime = pi->atime;
}

int inode_tx_free_contents(struct fs *fs, struct inode *in, struct fmap_freed *freed)
{
	struct pmfuse_inode *pi = in->pi;
	int ret;

	ret = fmap_unmap(&fs->pool, pi, 0, UINT64_MAX / 2, freed);
	if (ret)
		return ret;
	if (pi->xattr_off)
		pool_tx_free(pmemobj_oid(pool_ptr(&fs->pool, pi->xattr_off)));
	if (S_ISDIR(pi->mode))
		dir_tx_destroy(fs, pi);
	else if (S_ISLNK(pi->mode) && pi->size > PMFUSE_INLINE_SYMLINK && pi->dir_off)
		pool_tx_free(pmemobj_oid(pool_ptr(&fs->pool, pi->dir_off)));
	return 0;
}

void inode_tx_clear(struct pmfuse_inode *pi)
{
	pmemobj_tx_add_range_direct(pi, sizeof(*pi));
	uint32_t gen = pi->generation;
	memset(pi, 0, sizeof(*pi));
	pi->generation = gen;
}

int inode_load_table(struct fs *fs, bool (*usable)(void *ctx, uint64_t chunk), void *ctx,
		     const uint64_t *used, char *why, size_t whylen)
{
	struct pool *p = &fs->pool;
	/* what the geometry says (a mount checked the table holds as many) */
	uint64_t nchunks = fs->max_inodes / PMFUSE_INODES_PER_CHUNK;
	bool seen_hole = false;

	/*
	 * Format 3: only chunks below the high-water mark are read (or exist).
	 * The mark sits just past the last chunk (format 6 lowers it when it
	 * frees that chunk), and a mount checks so: a damaged mark cannot hide
	 * inodes (or their blocks, which would then look free).  fsck (usable)
	 * sees it all.
	 */
	/*
	 * Format 5: a leaf that is not metadata would hide 512 chunks (fsck
	 * reports it).  Those up to the high-water mark are what a mount reads.
	 */
	uint64_t leaves = pmfuse_itable_entries(5, p->sb->ichunk_hwm < nchunks ?
						   p->sb->ichunk_hwm : nchunks);
	for (uint64_t l = 0; !usable && p->sb->geo.version >= 5 && l < leaves; l++) {
		if (p->itable->chunk[l] && !pool_ileaf(p, l * PMFUSE_ILEAF_CHUNKS)) {
			snprintf(why, whylen, "inode table leaf %" PRIu64 " points outside metadata", l);
			return -EUCLEAN;
		}
	}
	if (p->sb->geo.version >= 3 && !usable) {	/* fsck's view is the whole table */
		if (!pool_ichunk_hwm_ok(p)) {
			snprintf(why, whylen, "superblock: inode table high-water mark %" PRIu64
				 " does not sit just past the table's last chunk (of %" PRIu64 "); "
				 "fsck.pmfuse -p repairs it", p->sb->ichunk_hwm, nchunks);
			return -EUCLEAN;
		}
		nchunks = p->sb->ichunk_hwm;
	}
	atomic_store(&fs->ichunk_limit, nchunks);
	fs->next_chunk = nchunks;
	fs->ifree_lo = 0;
	fs->spare_chunk = UINT64_MAX;
	fs->ichunks_live = fs->ichunks_freed = 0;
	for (uint64_t c = 0; c < nchunks; c++) {
		if (pool_ileaf_absent(p, c)) {
			if (!seen_hole)
				fs->next_chunk = c;
			seen_hole = true;
			c += PMFUSE_ILEAF_CHUNKS - 1;
			continue;
		}
		uint64_t off = pool_ichunk(p, c);
		if (!off) {
			if (used && used[c]) {
				snprintf(why, whylen, "record: inode chunk %" PRIu64 " does not exist "
					 "but has inodes in use", c);
				return -EUCLEAN;
			}
			if (!seen_hole)
				fs->next_chunk = c;
			seen_hole = true;
			continue;
		}
		if (usable ? !usable(ctx, c) : !pool_struct_ok(p, off, PMFUSE_ICHUNK_SIZE)) {
			if (usable)
				continue;	/* damaged: none of its numbers is handed out */
			snprintf(why, whylen, "inode table chunk %" PRIu64 " points outside metadata", c);
			return -EUCLEAN;
		}
		fs->ichunks_live++;
		uint64_t freem = 0;
		for (uint64_t i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
			uint64_t ino = c * PMFUSE_INODES_PER_CHUNK + i;
			struct pmfuse_inode *pi = (struct pmfuse_inode *)pool_ptr(p, off) + i;
			if (ino == 0)
				continue;
			/* the clean-unmount record's masks: no record is read */
			bool in_use = used ? used[c] >> i & 1 : pi->mode != 0;
			if (!in_use) {
				freem |= 1ull << i;
				continue;
			}
			if (!used && !usable) {
				int ret = inode_validate(p, ino, pi, why, whylen);
				if (ret)
					return ret;
			}
			fs->used_inodes++;
			inode_committed(fs, ino);
		}
		ifree_set(fs, c, freem);	/* all of it: a failed record load set some */
	}
	return 0;
}
