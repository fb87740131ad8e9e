/*
 * dax: direct-access map sessions, the daemon's half of libpmfuse-dax.
 *
 * An application that may open the region itself maps a file's blocks
 * straight from it (lib/dax.c); the daemon keeps the kernel's part of DAX
 * (fs/dax.c, the seeds):
 *   - a session per application mapping, tied to the open file it came
 *     through, so the process's exit (the open's release) ends it too;
 *   - a writable session shares an area of the region with the library: a
 *     bit per page of the window, set while the page is writable in the map
 *     -- the DIRTY mark of the session's pages.  The library sets it itself
 *     on the first write to a page it already maps (dax_pfn_mkwrite, 003:
 *     no round trip), and clears it after flushing the page at msync, with
 *     the page write-protected first (004);
 *   - write faults on holes and unwritten pages come here: allocated,
 *     zeroed, persisted and committed before the reply (the MAP_SYNC rule,
 *     001), the page's bit set;
 *   - fsync of the file (from any descriptor) marks every page with a bit
 *     set DIRTY in the mapping index before its walk, and the bits stay:
 *     the map may store again at any time;
 *   - a session's end turns its set bits into DIRTY pages for the next
 *     fsync (munmap flushes nothing, as in the kernel);
 *   - blocks a live session may reach are never reused: while a file has a
 *     session, the blocks it frees (truncate, punch) wait in the inode's
 *     deferred list until the last session ends.  The allocator's state is
 *     DRAM only (rebuilt from the file maps at mount), so neither the
 *     deferred list nor a shared area needs a persistent record: a crash
 *     frees them at the next mount (which keeps what is still mapped out
 *     of reuse, see below).
 */
#include "core.h"
#include "log.h"
#include "mapping.h"
#include "writeback.h"
#include "pmfuse/dax-ioctl.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define BLK PMFUSE_BLOCK_SIZE
#define BITS_PER_BLOCK (BLK * 8ull)

struct dax_session {
	struct dax_session *next;	/* the inode's sessions */
	struct dax_session *gnext, *gprev;	/* every session (fs->dax_sessions) */
	uint64_t id;
	uint64_t owner;			/* the open file it came through */
	uint64_t first, npages;		/* the mapped window, in file pages */
	bool write;
	/* writable sessions: the area shared with the library */
	uint64_t shared_block, shared_blocks;
	struct pmfuse_dax_shared *shared;
	uint64_t *bits;			/* bit (page - first): writable in the map */
};

struct dax_inode {
	struct dax_session *sessions;
	struct fmap_freed deferred;	/* blocks freed while a session lived */
};

static uint64_t size_pages(const struct pmfuse_inode *pi)
{
	return (pi->size + BLK - 1) / BLK;
}

static struct dax_session *find_session(struct inode *in, uint64_t id, uint64_t owner)
{
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s; s = s->next)
		if (s->id == id && s->owner == owner)
			return s;
	return NULL;
}

/*
 * Session id of owner on the regular file ino, its inode locked
 * (exclusively if excl) and referenced: 0, or -errno with nothing held
 * (-EBADF: no such session).  session_unlock() lets go.
 */
static int session_lock(struct fs *fs, uint64_t ino, uint64_t owner, uint64_t id, bool excl,
			struct inode **inp, struct dax_session **sp)
{
	struct inode *in;
	int ret = data_get_file(fs, ino, &in);

	if (ret)
		return ret;
	if (excl)
		pthread_rwlock_wrlock(&in->lock);
	else
		pthread_rwlock_rdlock(&in->lock);
	*sp = find_session(in, id, owner);
	if (!*sp) {
		pthread_rwlock_unlock(&in->lock);
		inode_put(fs, in);
		return -EBADF;
	}
	*inp = in;
	return 0;
}

static void session_unlock(struct fs *fs, struct inode *in)
{
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
}

/* The session's bits: the other side changes them at any time. */
static void bit_set(struct dax_session *s, uint64_t page)
{
	uint64_t i = page - s->first;
	__atomic_fetch_or(&s->bits[i / 64], 1ull << (i % 64), __ATOMIC_RELEASE);
}

static void bit_clear(struct dax_session *s, uint64_t page)
{
	uint64_t i = page - s->first;
	__atomic_fetch_and(&s->bits[i / 64], ~(1ull << (i % 64)), __ATOMIC_RELEASE);
}

/* The first page >= p and < end whose bit is set in s, or UINT64_MAX. */
static uint64_t bit_next(const struct dax_session *s, uint64_t p, uint64_t end)
{
	if (!s->bits)
		return UINT64_MAX;
	if (p < s->first)
		p = s->first;
	if (end > s->first + s->npages)
		end = s->first + s->npages;
	while (p < end) {
		uint64_t i = p - s->first;
		uint64_t w = __atomic_load_n(&s->bits[i / 64], __ATOMIC_ACQUIRE) >> (i % 64);
		if (w) {
			p += (uint64_t)__builtin_ctzll(w);
			return p < end ? p : UINT64_MAX;
		}
		p += 64 - i % 64;
	}
	return UINT64_MAX;
}

int fs_dax_info(struct fs *fs, struct pmfuse_dax_info *info)
{
	struct stat st;

	memset(info, 0, sizeof(*info));
	if (!fs->region_path || fstat(fs->region.fd, &st))
		return -EOPNOTSUPP;
	info->version = PMFUSE_DAX_VERSION;
	info->granularity = fs->region.granularity == PMEM2_GRANULARITY_BYTE ? PMFUSE_DAX_GRAN_BYTE
			  : fs->region.granularity == PMEM2_GRANULARITY_CACHE_LINE
			  ? PMFUSE_DAX_GRAN_CACHE_LINE : PMFUSE_DAX_GRAN_PAGE;
	info->region_dev = st.st_dev;
	info->region_ino = st.st_ino;
	info->region_size = fs->region.size;
	info->block_size = BLK;
	if (strlen(fs->region_path) >= sizeof(info->region))
		return -ENAMETOOLONG;
	strcpy(info->region, fs->region_path);
	return 0;
}

/*
 * The written extents of pages [from, end) (clipped to the file size) into
 * r->ext, as maximal runs; r->next is where a further call goes on.
 */
static int describe(struct fs *fs, struct inode *in, uint64_t from, uint64_t end,
		    struct pmfuse_dax_req *r)
{
	uint64_t lim = size_pages(in->pi);

	r->count = 0;
	r->flags &= ~PMFUSE_DAX_MORE;
	r->size = in->pi->size;
	if (end > lim)
		end = lim;
	while (from < end) {
		uint64_t phys, count;
		int ret = fmap_lookup(&fs->pool, in->pi, from, &phys, &count);
		if (ret < 0)
			return ret == -EUCLEAN ? -EIO : ret;
		if (count == 0)
			break;
		if (count > end - from)
			count = end - from;
		if (ret == FMAP_DATA) {
			struct pmfuse_dax_extent *last = r->count ? &r->ext[r->count - 1] : NULL;
			if (last && last->page + last->npages == from && last->block + last->npages == phys) {
				last->npages += count;
			} else if (r->count == PMFUSE_DAX_EXTENTS_MAX) {
				r->flags |= PMFUSE_DAX_MORE;
				break;
			} else {
				r->ext[r->count++] = (struct pmfuse_dax_extent){ from, phys, count };
			}
		}
		from += count;
	}
	r->next = from;
	/* huge pages a map can use: 2 MiB of file on 2 MiB of region, both aligned */
	uint64_t huge = 0;
	for (uint32_t i = 0; i < r->count; i++) {
		const struct pmfuse_dax_extent *e = &r->ext[i];
		uint64_t skew = (e->block - e->page) % PMFUSE_HUGE_2M_BLOCKS;
		uint64_t a = (e->page + PMFUSE_HUGE_2M_BLOCKS - 1) / PMFUSE_HUGE_2M_BLOCKS;
		uint64_t b = (e->page + e->npages) / PMFUSE_HUGE_2M_BLOCKS;
		if (skew == 0 && b > a)
			huge += b - a;
	}
	if (huge)
		atomic_fetch_add_explicit(&fs->stats.dax_huge_maps, huge, memory_order_relaxed);
	return 0;
}

/*
 * A writable session's shared area: a header block and the bitmap, zeroed,
 * in one run (the library maps it in one piece).  Free space may be cut
 * into shorter runs first: those are set aside while looking, then freed.
 */
static int shared_alloc(struct fs *fs, struct dax_session *s)
{
	struct alloc_run run, aside[32];
	uint64_t n = 1 + (s->npages + BITS_PER_BLOCK - 1) / BITS_PER_BLOCK;
	int naside = 0, nr;

	while ((nr = alloc_blocks(&fs->alloc, n, 0, &run, 1)) == 1 && run.len < n &&
	       naside < (int)(sizeof(aside) / sizeof(aside[0])))
		aside[naside++] = run;
	for (int i = 0; i < naside; i++)
		alloc_free(&fs->alloc, aside[i].phys, aside[i].len);
	if (nr < 0)
		return nr;
	if (nr == 0 || run.len < n) {
		if (nr)
			alloc_free(&fs->alloc, run.phys, run.len);
		return -ENOSPC;
	}
	char *p = region_block(&fs->region, run.phys);
	int ret = region_zero(&fs->region, p, n * BLK);
	if (ret) {
		alloc_free(&fs->alloc, run.phys, run.len);
		return ret;
	}
	s->shared_block = run.phys;
	s->shared_blocks = n;
	s->bits = (uint64_t *)(p + BLK);
	__atomic_store_n(&((struct pmfuse_dax_shared *)p)->magic, PMFUSE_DAX_SHARED_MAGIC,
			 __ATOMIC_RELEASE);
	/* dax_stats() reads it under fs->dax_lock only */
	__atomic_store_n(&s->shared, (struct pmfuse_dax_shared *)p, __ATOMIC_RELEASE);
	return 0;
}

int fs_dax_map(struct fs *fs, uint64_t ino, uint64_t owner, bool owner_writes,
	       struct pmfuse_dax_req *r)
{
	bool write = r->flags & PMFUSE_DAX_WRITE;
	struct dax_session *s = NULL;
	struct inode *in;
	int ret;

	if (r->npages == 0 || r->first > PMFUSE_MAX_FILE_SIZE / BLK ||
	    r->npages > PMFUSE_MAX_FILE_SIZE / BLK - r->first)
		return -EINVAL;
	if (write && !owner_writes)
		return -EACCES;
	if ((ret = data_get_file(fs, ino, &in)))
		return ret;
	pthread_rwlock_wrlock(&in->lock);
	if (write && (ret = inode_pinned(in->pi)))
		goto out;
	ret = -ENOMEM;
	if (!in->dax && !(in->dax = calloc(1, sizeof(*in->dax))))
		goto out;
	if (!(s = calloc(1, sizeof(*s))))
		goto out;
	s->first = r->first;
	s->npages = r->npages;
	s->write = write;
	if ((ret = describe(fs, in, r->first, r->first + r->npages, r))) {
		free(s);
		goto out;
	}
	/* a tracking map stores to its written pages from the start (a map of
	 * holes only gets its shared area with its first FAULT, as others do) */
	r->shared_block = r->shared_blocks = 0;
	if (write && (r->flags & PMFUSE_DAX_TRACK) && (r->count || (r->flags & PMFUSE_DAX_MORE))) {
		if ((ret = shared_alloc(fs, s))) {
			free(s);
			goto out;
		}
		r->shared_block = s->shared_block;
		r->shared_blocks = s->shared_blocks;
	}
	s->id = atomic_fetch_add(&fs->dax_next_session, 1) + 1;
	s->owner = owner;
	s->next = in->dax->sessions;
	in->dax->sessions = s;
	r->session = s->id;
	pthread_mutex_lock(&fs->dax_lock);
	s->gnext = fs->dax_sessions;
	if (s->gnext)
		s->gnext->gprev = s;
	fs->dax_sessions = s;
	pthread_mutex_unlock(&fs->dax_lock);
	atomic_fetch_add(&fs->stats.dax_maps, 1);
	atomic_fetch_add(&fs->stats.dax_mapped_bytes, (int64_t)(r->npages * BLK));
out:
	if (in->dax && !in->dax->sessions) {
		free(in->dax);
		in->dax = NULL;
	}
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

int fs_dax_extents(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r)
{
	struct dax_session *s;
	struct inode *in;
	int ret = session_lock(fs, ino, owner, r->session, false, &in, &s);

	if (ret)
		return ret;
	if (r->first < s->first || r->first > s->first + s->npages)
		ret = -EINVAL;
	else
		ret = describe(fs, in, r->first, s->first + s->npages, r);
	session_unlock(fs, in);
	return ret;
}

/*
 * Every page a session of in may store to, within [start, end), DIRTY in
 * the index; the times too, if a map made a page writable since we looked
 * (a store through a map changes the file as a write does).
 */
static int remark_granted(struct fs *fs, struct inode *in, uint64_t start, uint64_t end)
{
	bool stored = false;

	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s; s = s->next) {
		if (!s->shared)
			continue;
		stored |= __atomic_exchange_n(&s->shared->stored, 0, __ATOMIC_ACQ_REL) != 0;
		for (uint64_t p = start; (p = bit_next(s, p, end)) != UINT64_MAX; p++) {
			int ret = data_mark_dirty(fs, in, p, 1);
			if (ret)
				return ret;
		}
	}
	if (stored)
		data_touch_locked(fs, in);
	return 0;
}

int fs_dax_fault(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_fault *f,
		 bool *allocated)
{
	uint64_t page = f->page, phys, count;
	struct dax_session *s;
	struct inode *in;

	*allocated = false;
	int ret = session_lock(fs, ino, owner, f->session, true, &in, &s);
	if (ret)
		return ret;
	if (!s->write) {
		ret = -EACCES;
		goto out;
	}
	/* past the end of the file, or outside the map: the kernel's SIGBUS */
	if (page < s->first || page >= s->first + s->npages || page >= size_pages(in->pi)) {
		ret = -EFAULT;
		goto out;
	}
	if ((ret = inode_pinned(in->pi)))
		goto out;
	/* the first write of the session: the area it shares with the library */
	if (!s->shared && (ret = shared_alloc(fs, s)))
		goto out;
	ret = fmap_lookup(&fs->pool, in->pi, page, &phys, &count);
	if (ret >= 0 && ret != FMAP_DATA) {
		uint64_t len = in->pi->size - page * BLK;
		ret = data_zero_locked(fs, in, page * BLK, len < BLK ? len : BLK);
		if (ret == 0)
			ret = fmap_lookup(&fs->pool, in->pi, page, &phys, &count);
		*allocated = ret == FMAP_DATA;
		if (*allocated)
			atomic_fetch_add_explicit(&fs->stats.dax_fault_allocs, 1, memory_order_relaxed);
	}
	if (ret < 0 || ret != FMAP_DATA) {
		ret = ret == -EUCLEAN || ret >= 0 ? -EIO : ret;
		goto out;
	}
	/* the page is the session's to store to until its msync: DIRTY */
	bit_set(s, page);
	__atomic_store_n(&s->shared->stored, 1, __ATOMIC_RELEASE);
	if ((ret = data_mark_dirty(fs, in, page, 1)))
		goto out;
	f->block = phys;
	f->size = in->pi->size;
	f->shared_block = s->shared_block;
	f->shared_blocks = s->shared_blocks;
	atomic_fetch_add_explicit(&fs->stats.dax_faults, 1, memory_order_relaxed);
out:
	session_unlock(fs, in);
	return ret;
}

/* The pages of r->ext, writable no more in s: DIRTY in the index, bits cleared. */
static int ungrant(struct fs *fs, struct inode *in, struct dax_session *s,
		   const struct pmfuse_dax_req *r)
{
	int ret = 0;

	for (uint32_t i = 0; i < r->count && i < PMFUSE_DAX_EXTENTS_MAX; i++) {
		uint64_t p = r->ext[i].page, end = p + r->ext[i].npages;
		if (end < p)
			return -EINVAL;
		while ((p = bit_next(s, p, end)) != UINT64_MAX) {
			int err = data_mark_dirty(fs, in, p, 1);
			if (err && !ret)
				ret = err;
			bit_clear(s, p);
			p++;
		}
	}
	return ret;
}

/*
 * fsync (and msync through the page cache): every DIRTY page of the file,
 * with the pages live maps may store to counted as DIRTY before the walk
 * and left DIRTY after it.
 */
int fs_fsync(struct fs *fs, uint64_t ino, bool datasync)
{
	struct inode *in = inode_get(fs, ino);
	int ret = 0;

	(void)datasync;	/* metadata is durable when its transaction commits */
	if (!in)
		return -ENOENT;
	pthread_rwlock_rdlock(&in->lock);
	if (in->dax) {	/* marking may build the index: that takes the lock exclusively */
		pthread_rwlock_unlock(&in->lock);
		pthread_rwlock_wrlock(&in->lock);
		ret = remark_granted(fs, in, 0, UINT64_MAX);
	}
	if (ret == 0 && in->mapping)
		ret = writeback_mapping(fs, in->mapping);
	if (ret == 0 && in->dax)
		ret = remark_granted(fs, in, 0, UINT64_MAX);
	/* overwrites store mtime/ctime in place without persisting them */
	atomic_store(&in->times_unflushed, false);
	pmemobj_persist(fs->pool.pop, &in->pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

int fs_dax_sync(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r)
{
	uint64_t bytes = 0, end = r->first + r->npages;
	struct dax_session *s;
	struct inode *in;
	int ret = session_lock(fs, ino, owner, r->session, true, &in, &s);

	if (ret)
		return ret;
	if (end < r->first)
		end = UINT64_MAX;
	ret = ungrant(fs, in, s, r);
	if (ret || !(r->flags & PMFUSE_DAX_SYNC_FLUSH))
		goto out;
	/* the page cache is dropped after the reply (the FUSE layer) */
	if (s->shared)
		__atomic_store_n(&s->shared->cached, 0, __ATOMIC_RELEASE);
	/* the pages written through the FUSE path; the map's own the library flushed */
	if (in->mapping)
		ret = writeback_range(fs, in->mapping, r->first, end, &bytes);
	if (ret == 0)
		ret = remark_granted(fs, in, r->first, end);
	/* overwrites stored the times in place, as fsync knows */
	atomic_store(&in->times_unflushed, false);
	pmemobj_persist(fs->pool.pop, &in->pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
	atomic_fetch_add_explicit(&fs->stats.dax_flush_bytes, bytes, memory_order_relaxed);
out:
	session_unlock(fs, in);
	return ret;
}

/*
 * The end of a session (inode lock held exclusively): its set bits become
 * DIRTY pages for the next fsync, its counters go to the filesystem's, its
 * shared area is freed; with the file's last session, the blocks kept from
 * reuse go back.
 */
static void end_session(struct fs *fs, struct inode *in, struct dax_session *s)
{
	struct dax_session **pp = &in->dax->sessions;

	/* no memory to mark: fsync at eviction flushes the file anyway */
	(void)remark_granted(fs, in, s->first, s->first + s->npages);
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	pthread_mutex_lock(&fs->dax_lock);
	if (s->gprev)
		s->gprev->gnext = s->gnext;
	else
		fs->dax_sessions = s->gnext;
	if (s->gnext)
		s->gnext->gprev = s->gprev;
	if (s->shared) {
		atomic_fetch_add(&fs->stats.dax_faults,
				 __atomic_load_n(&s->shared->faults, __ATOMIC_ACQUIRE));
		atomic_fetch_add(&fs->stats.dax_flush_bytes,
				 __atomic_load_n(&s->shared->flush_bytes, __ATOMIC_ACQUIRE));
	}
	pthread_mutex_unlock(&fs->dax_lock);
	if (s->shared)
		alloc_free(&fs->alloc, s->shared_block, s->shared_blocks);
	atomic_fetch_sub(&fs->stats.dax_maps, 1);
	atomic_fetch_sub(&fs->stats.dax_mapped_bytes, (int64_t)(s->npages * BLK));
	free(s);
	if (!in->dax->sessions) {
		uint64_t n = 0;
		for (size_t i = 0; i < in->dax->deferred.n; i++)
			n += in->dax->deferred.runs[i].len;
		atomic_fetch_sub(&fs->stats.dax_deferred_blocks, n);
		fmap_freed_release(&fs->alloc, &in->dax->deferred);
		free(in->dax);
		in->dax = NULL;
	}
}

void dax_stats(struct fs *fs, uint64_t *faults, uint64_t *flush_bytes)
{
	pthread_mutex_lock(&fs->dax_lock);
	*faults = atomic_load(&fs->stats.dax_faults);
	*flush_bytes = atomic_load(&fs->stats.dax_flush_bytes);
	for (struct dax_session *s = fs->dax_sessions; s; s = s->gnext) {
		struct pmfuse_dax_shared *sh = __atomic_load_n(&s->shared, __ATOMIC_ACQUIRE);
		if (sh) {
			*faults += __atomic_load_n(&sh->faults, __ATOMIC_ACQUIRE);
			*flush_bytes += __atomic_load_n(&sh->flush_bytes, __ATOMIC_ACQUIRE);
		}
	}
	pthread_mutex_unlock(&fs->dax_lock);
}

void fs_dax_note_read(struct fs *fs, uint64_t ino, uint64_t owner)
{
	if (atomic_load_explicit(&fs->stats.dax_maps, memory_order_relaxed) <= 0)
		return;
	struct inode *in = inode_get(fs, ino);
	if (!in)
		return;
	pthread_rwlock_rdlock(&in->lock);
	bool own = false;
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s && !own; s = s->next)
		own = s->owner == owner;
	/* a read through the page cache by another descriptor: msync must drop it */
	for (struct dax_session *s = in->dax && !own ? in->dax->sessions : NULL; s; s = s->next)
		if (s->shared)
			__atomic_store_n(&s->shared->cached, 1, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
}

int fs_dax_unmap(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r)
{
	struct dax_session *s;
	struct inode *in;
	int ret = session_lock(fs, ino, owner, r->session, true, &in, &s);

	if (ret)
		return ret;
	end_session(fs, in, s);
	session_unlock(fs, in);
	return 0;
}

bool fs_dax_release(struct fs *fs, uint64_t ino, uint64_t owner)
{
	bool ended = false;

	/* the common case, no map anywhere, costs one load */
	if (atomic_load_explicit(&fs->stats.dax_maps, memory_order_relaxed) <= 0)
		return false;
	struct inode *in = inode_get(fs, ino);
	if (!in)
		return false;
	pthread_rwlock_wrlock(&in->lock);
	bool any = false;
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s && !any; s = s->next)
		any = s->owner == owner;
	/*
	 * A session ends without its munmap: the process exited (its maps are
	 * gone by now), or closed the library's descriptor behind its back and
	 * still maps what the session reached.  Before anything is freed,
	 * whatever is still mapped is kept out of reuse.
	 */
	if (any) {
		(void)dax_quarantine_scan(fs);
		dax_watch_kick(fs);
	}
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL, *next; s; s = next) {
		next = s->next;
		if (s->owner == owner) {
			end_session(fs, in, s);	/* may free in->dax: next was read first */
			ended = true;
		}
		if (!in->dax)
			break;
	}
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ended;
}

bool fs_dax_mapped(struct fs *fs, uint64_t ino)
{
	bool mapped = false;

	if (atomic_load_explicit(&fs->stats.dax_maps, memory_order_relaxed) <= 0)
		return false;
	struct inode *in = inode_get(fs, ino);
	if (!in)
		return false;
	pthread_rwlock_rdlock(&in->lock);
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s && !mapped; s = s->next)
		mapped = s->write;
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return mapped;
}

void dax_release_freed(struct fs *fs, struct inode *in, struct fmap_freed *freed)
{
	struct fmap_freed *d = in->dax ? &in->dax->deferred : NULL;

	if (!d || freed->n == 0) {
		fmap_freed_release(&fs->alloc, freed);
		return;
	}
	if (d->n + freed->n > d->cap) {
		size_t cap = (d->n + freed->n) * 2;
		struct alloc_run *runs = realloc(d->runs, cap * sizeof(*runs));
		if (!runs) {
			/*
			 * No memory to remember them: lose them until the next
			 * mount (which rebuilds the free map) rather than let a
			 * mapped block go to another file.
			 */
			alloc_huge_add(&fs->alloc, freed->huge.n2m, freed->huge.n1g);
			free(freed->runs);
			memset(freed, 0, sizeof(*freed));
			return;
		}
		d->runs = runs;
		d->cap = cap;
	}
	uint64_t n = 0;
	for (size_t i = 0; i < freed->n; i++) {
		d->runs[d->n++] = freed->runs[i];
		n += freed->runs[i].len;
	}
	atomic_fetch_add(&fs->stats.dax_deferred_blocks, n);
	/* the huge extents the unmap broke are gone from the file now */
	alloc_huge_add(&fs->alloc, freed->huge.n2m, freed->huge.n1g);
	free(freed->runs);
	memset(freed, 0, sizeof(*freed));
}

void dax_inode_free(struct fs *fs, struct inode *in)
{
	while (in->dax && in->dax->sessions)
		end_session(fs, in, in->dax->sessions);
}

/*
 * Direct maps that outlive their daemon.  A process keeps its maps of the
 * region when the daemon stops (killed, or SIGTERM while maps were live):
 * it can still store to every page it was granted, and read every block it
 * mapped.  The next daemon cannot know which file those blocks belong to
 * by then, so it keeps every block such a map covers out of reuse: at
 * mount it lists the mappings of the region in /proc/<pid>/maps (by device
 * and inode, whichever path they were opened by) and quarantines their
 * ranges in the allocator (alloc_set_quarantine); a watcher thread lists
 * them again every few seconds and lets go of what is no longer mapped.
 * Blocks of live files in those ranges stay the files'; if a file frees
 * one meanwhile it is held, not freed.
 */
static int cmp_run(const void *x, const void *y)
{
	const struct alloc_run *a = x, *b = y;

	return a->phys < b->phys ? -1 : a->phys > b->phys;
}

/* The region's ranges (in blocks) other processes map, sorted and merged; -errno. */
static int scan_maps(struct fs *fs, struct alloc_run **out, size_t *nout)
{
	struct stat st;
	struct alloc_run *runs = NULL;
	size_t n = 0, cap = 0;
	char path[64], line[4352];
	pid_t self = getpid();

	*out = NULL;
	*nout = 0;
	if (fstat(fs->region.fd, &st))
		return -errno;
	DIR *d = opendir("/proc");
	if (!d)
		return -errno;
	for (struct dirent *de; (de = readdir(d));) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/maps", pid);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;	/* gone, or not ours to read */
		while (fgets(line, sizeof(line), f)) {
			unsigned long lo, hi, off, ino;
			unsigned maj, min;
			if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &min, &ino) != 6 ||
			    ino != st.st_ino || makedev(maj, min) != st.st_dev)
				continue;
			if (n == cap) {
				size_t c = cap ? cap * 2 : 16;
				struct alloc_run *r = realloc(runs, c * sizeof(*r));
				if (!r) {
					fclose(f);
					closedir(d);
					free(runs);
					return -ENOMEM;
				}
				runs = r;
				cap = c;
			}
			runs[n++] = (struct alloc_run){ off / BLK, (hi - lo + BLK - 1) / BLK };
		}
		fclose(f);
	}
	closedir(d);
	if (n > 1)
		qsort(runs, n, sizeof(*runs), cmp_run);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m && runs[i].phys <= runs[m - 1].phys + runs[m - 1].len) {
			uint64_t e = runs[i].phys + runs[i].len;
			if (e > runs[m - 1].phys + runs[m - 1].len)
				runs[m - 1].len = e - runs[m - 1].phys;
		} else {
			runs[m++] = runs[i];
		}
	}
	*out = runs;
	*nout = m;
	return 0;
}

int dax_quarantine_scan(struct fs *fs)
{
	struct alloc_run *runs;
	size_t n;
	int ret = scan_maps(fs, &runs, &n);

	if (ret)
		return ret;
	uint64_t before = alloc_held(&fs->alloc);
	alloc_set_quarantine(&fs->alloc, runs, n);
	if (before && !alloc_held(&fs->alloc))
		log_notice("direct maps of an earlier daemon are gone: their blocks are free again");
	return 0;
}

/* At mount, after the orphans were reclaimed (their blocks may be held now). */
void dax_quarantine_report(struct fs *fs)
{
	size_t n = alloc_quarantine_ranges(&fs->alloc);

	if (n)
		log_notice("direct maps of an earlier daemon cover %zu range(s) of the region: "
			   "%" PRIu64 " free block(s) kept from reuse until they are unmapped",
			   n, alloc_held(&fs->alloc));
}

static void *watch_main(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->dax_watch_lock);
	while (!fs->dax_watch_stop && alloc_quarantine_ranges(&fs->alloc)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 2;
		pthread_cond_timedwait(&fs->dax_watch_cond, &fs->dax_watch_lock, &ts);
		if (fs->dax_watch_stop)
			break;
		pthread_mutex_unlock(&fs->dax_watch_lock);
		(void)dax_quarantine_scan(fs);
		pthread_mutex_lock(&fs->dax_watch_lock);
	}
	fs->dax_watch_running = false;
	pthread_mutex_unlock(&fs->dax_watch_lock);
	return NULL;
}

void dax_watch_start(struct fs *fs)
{
	pthread_mutex_init(&fs->dax_watch_lock, NULL);
	pthread_cond_init(&fs->dax_watch_cond, NULL);
	fs->dax_watch_inited = true;
	dax_watch_kick(fs);
}

/* Quarantined ranges appeared after the mount: watch them too. */
void dax_watch_kick(struct fs *fs)
{
	if (!fs->dax_watch_inited || !alloc_quarantine_ranges(&fs->alloc))
		return;
	pthread_mutex_lock(&fs->dax_watch_lock);
	if (fs->dax_watch_started && !fs->dax_watch_running) {
		pthread_mutex_unlock(&fs->dax_watch_lock);
		pthread_join(fs->dax_watch, NULL);
		pthread_mutex_lock(&fs->dax_watch_lock);
		fs->dax_watch_started = false;
	}
	if (!fs->dax_watch_started && !fs->dax_watch_stop) {
		fs->dax_watch_running = true;
		fs->dax_watch_started = !pthread_create(&fs->dax_watch, NULL, watch_main, fs);
		fs->dax_watch_running = fs->dax_watch_started;
	}
	pthread_mutex_unlock(&fs->dax_watch_lock);
}

void dax_watch_stop(struct fs *fs)
{
	if (!fs->dax_watch_inited)
		return;
	pthread_mutex_lock(&fs->dax_watch_lock);
	fs->dax_watch_stop = true;
	pthread_cond_signal(&fs->dax_watch_cond);
	pthread_mutex_unlock(&fs->dax_watch_lock);
	if (fs->dax_watch_started)
		pthread_join(fs->dax_watch, NULL);
	pthread_cond_destroy(&fs->dax_watch_cond);
	pthread_mutex_destroy(&fs->dax_watch_lock);
	fs->dax_watch_inited = false;
}
