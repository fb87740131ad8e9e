/*
 * dax: direct-access map sessions, the daemon's half of libpmfuse-dax.
 *
 * An application that may open the region itself maps a file's blocks
 * straight from it (lib/dax.c); the daemon keeps the kernel's part of DAX
 * (fs/dax.c, the seeds):
 *   - a session per application mapping, tied to the open file it came
 *     through, so the process's exit (the open's release) ends it too;
 *   - write faults (dax_pfn_mkwrite, 003): a hole or unwritten page is
 *     allocated, zeroed, persisted and committed before the reply (the
 *     MAP_SYNC rule, 001); the page is marked DIRTY in the mapping index
 *     and recorded as *granted* (writable) to the session;
 *   - msync (004): the library write-protects its granted pages first,
 *     then the daemon forgets them as granted, flushes the DIRTY pages of
 *     the range and drains once;
 *   - a page granted to a live session may be stored to at any time, so it
 *     stays DIRTY: fsync re-marks the granted pages before and after its
 *     walk (a punch or truncate drops the index, and its marks with it);
 *   - blocks a live session may reach are never reused: while a file has a
 *     session, the blocks it frees (truncate, punch) wait in the inode's
 *     deferred list until the last session ends.  The allocator's state is
 *     DRAM only (rebuilt from the file maps at mount), so the deferred
 *     list needs no persistent record: a crash frees them at the next mount.
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

struct dax_session {
	struct dax_session *next;
	uint64_t id;
	uint64_t owner;			/* the open file it came through */
	uint64_t first, npages;		/* the mapped window, in file pages */
	bool write;
	struct mapping granted;		/* pages made writable: DIRTY-marked entries */
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

static int get_file(struct fs *fs, uint64_t ino, struct inode **out)
{
	struct inode *in = inode_get(fs, ino);

	if (!in)
		return -ENOENT;
	if (!S_ISREG(in->pi->mode)) {
		inode_put(fs, in);
		return -EINVAL;
	}
	*out = in;
	return 0;
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

int fs_dax_map(struct fs *fs, uint64_t ino, uint64_t owner, bool owner_writes,
	       struct pmfuse_dax_req *r)
{
	bool write = r->flags & PMFUSE_DAX_WRITE;
	struct dax_session *s;
	struct inode *in;
	int ret;

	if (r->npages == 0 || r->first > PMFUSE_MAX_FILE_SIZE / BLK ||
	    r->npages > PMFUSE_MAX_FILE_SIZE / BLK - r->first)
		return -EINVAL;
	if (write && !owner_writes)
		return -EACCES;
	if ((ret = get_file(fs, ino, &in)))
		return ret;
	pthread_rwlock_wrlock(&in->lock);
	if (write && (ret = inode_pinned(in->pi)))
		goto out;
	ret = -ENOMEM;
	if (!in->dax && !(in->dax = calloc(1, sizeof(*in->dax))))
		goto out;
	if (!(s = calloc(1, sizeof(*s))))
		goto out;
	ret = describe(fs, in, r->first, r->first + r->npages, r);
	if (ret) {
		free(s);
		goto out;
	}
	s->id = atomic_fetch_add(&fs->dax_next_session, 1) + 1;
	s->owner = owner;
	s->first = r->first;
	s->npages = r->npages;
	s->write = write;
	mapping_init(&s->granted);
	s->next = in->dax->sessions;
	in->dax->sessions = s;
	r->session = s->id;
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
	struct inode *in;
	int ret = get_file(fs, ino, &in);

	if (ret)
		return ret;
	pthread_rwlock_rdlock(&in->lock);
	struct dax_session *s = find_session(in, r->session, owner);
	if (!s)
		ret = -EBADF;
	else if (r->first < s->first || r->first > s->first + s->npages)
		ret = -EINVAL;
	else
		ret = describe(fs, in, r->first, s->first + s->npages, r);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/* Every page granted to a session of in, within [start, end), DIRTY in the index. */
static int remark_granted(struct fs *fs, struct inode *in, uint64_t start, uint64_t end)
{
	for (struct dax_session *s = in->dax ? in->dax->sessions : NULL; s; s = s->next)
		for (uint64_t p = start;
		     (p = mapping_find_marked(&s->granted, p, end, DAX_DIRTY)) != UINT64_MAX; p++) {
			int ret = data_mark_dirty(fs, in, p, 1);
			if (ret)
				return ret;
		}
	return 0;
}

int fs_dax_fault(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_fault *f,
		 bool *allocated)
{
	uint64_t page = f->page, phys, count;
	struct inode *in;
	int ret = get_file(fs, ino, &in);

	*allocated = false;
	if (ret)
		return ret;
	pthread_rwlock_wrlock(&in->lock);
	struct dax_session *s = find_session(in, f->session, owner);
	if (!s || !s->write) {
		ret = s ? -EACCES : -EBADF;
		goto out;
	}
	/* past the end of the file, or outside the map: the kernel's SIGBUS */
	if (page < s->first || page >= s->first + s->npages || page >= size_pages(in->pi)) {
		ret = -EFAULT;
		goto out;
	}
	if ((ret = inode_pinned(in->pi)))
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
	/* the entry goes DIRTY, and the page is the session's to store to until msync */
	if ((ret = data_mark_dirty(fs, in, page, 1)))
		goto out;
	if (!mapping_lookup(&s->granted, page, NULL)) {
		ret = mapping_insert(&s->granted, page, dax_mk_entry(0, DAX_ORDER_4K, 0));
		if (ret)
			goto out;
		mapping_mark_dirty(&s->granted, page, 1);
	}
	f->block = phys;
	f->size = in->pi->size;
	atomic_fetch_add_explicit(&fs->stats.dax_faults, 1, memory_order_relaxed);
out:
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/* Forget the pages of r->ext as granted to s, marking them DIRTY in the index. */
static int ungrant(struct fs *fs, struct inode *in, struct dax_session *s,
		   const struct pmfuse_dax_req *r)
{
	int ret = 0;

	for (uint32_t i = 0; i < r->count && i < PMFUSE_DAX_EXTENTS_MAX; i++) {
		uint64_t p = r->ext[i].page, end = p + r->ext[i].npages;
		if (end < p)
			return -EINVAL;
		while ((p = mapping_find_marked(&s->granted, p, end, DAX_DIRTY)) != UINT64_MAX) {
			/* stored to until the library write-protected it: dirty */
			int err = data_mark_dirty(fs, in, p, 1);
			if (err && !ret)
				ret = err;
			mapping_erase(&s->granted, p);
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
	pmemobj_persist(fs->pool.pop, &in->pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

int fs_dax_sync(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r)
{
	uint64_t bytes = 0, end = r->first + r->npages;
	struct inode *in;
	int ret = get_file(fs, ino, &in);

	if (ret)
		return ret;
	if (end < r->first)
		end = UINT64_MAX;
	pthread_rwlock_wrlock(&in->lock);
	struct dax_session *s = find_session(in, r->session, owner);
	if (!s) {
		ret = -EBADF;
		goto out;
	}
	ret = ungrant(fs, in, s, r);
	if (ret || !(r->flags & PMFUSE_DAX_SYNC_FLUSH))
		goto out;
	/* what other sessions may still store to must be in this walk too */
	if ((ret = remark_granted(fs, in, r->first, end)))
		goto out;
	if (in->mapping)
		ret = writeback_range(fs, in->mapping, r->first, end, &bytes);
	/* ... and stays DIRTY after it */
	if (ret == 0)
		ret = remark_granted(fs, in, r->first, end);
	/* overwrites stored the times in place, as fsync knows */
	pmemobj_persist(fs->pool.pop, &in->pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
	atomic_fetch_add_explicit(&fs->stats.dax_flush_bytes, bytes, memory_order_relaxed);
out:
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/*
 * The end of a session (inode lock held exclusively): its granted pages
 * stay DIRTY for the next fsync (munmap flushes nothing, as in the
 * kernel); with the file's last session, the blocks kept from reuse go back.
 */
static void end_session(struct fs *fs, struct inode *in, struct dax_session *s)
{
	struct dax_session **pp = &in->dax->sessions;

	for (uint64_t p = 0; (p = mapping_find_marked(&s->granted, p, UINT64_MAX, DAX_DIRTY)) != UINT64_MAX; p++)
		(void)data_mark_dirty(fs, in, p, 1);	/* no memory: fsync flushes the file at eviction */
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	atomic_fetch_sub(&fs->stats.dax_maps, 1);
	atomic_fetch_sub(&fs->stats.dax_mapped_bytes, (int64_t)(s->npages * BLK));
	mapping_destroy(&s->granted);
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

int fs_dax_unmap(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r)
{
	struct inode *in;
	int ret = get_file(fs, ino, &in);

	if (ret)
		return ret;
	pthread_rwlock_wrlock(&in->lock);
	struct dax_session *s = find_session(in, r->session, owner);
	if (s)
		end_session(fs, in, s);
	else
		ret = -EBADF;
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
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
	if (!in->dax)
		return;
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
	pthread_mutex_unlock(&fs->dax_watch_lock);
	return NULL;
}

void dax_watch_start(struct fs *fs)
{
	pthread_mutex_init(&fs->dax_watch_lock, NULL);
	pthread_cond_init(&fs->dax_watch_cond, NULL);
	fs->dax_watch_inited = true;
	if (alloc_quarantine_ranges(&fs->alloc))
		fs->dax_watch_started = !pthread_create(&fs->dax_watch, NULL, watch_main, fs);
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
