/*
 * data: file contents -- read, write, truncate, fallocate, lseek, fsync.
 * Reads hand out segments that point straight into the region (data) or
 * into the shared zero buffer (holes); nothing is copied or allocated.
 * Writes copy into the region through libpmem2.
 *
 * Ordering rule for allocating writes: new blocks are filled (data, and
 * zeros where the write does not cover them) and persisted *before* the
 * transaction that links them into the file map commits.  A crash can
 * therefore never expose a block's previous contents through this file.
 *
 * Writeback mode (the default) follows the DAX dirty-entry scheme: an
 * overwrite of existing blocks is copied without flushing and its pages are
 * marked DIRTY in the inode's mapping index (index.h); fsync -- and msync,
 * which reaches us as fsync -- tags them TOWRITE, flushes each entry's
 * dirty runs with physically adjacent runs coalesced, and drains once.
 * Synchronous mode (-o sync, O_SYNC/O_DSYNC) persists before replying and
 * leaves no marks.  Allocating writes persist their new blocks before the
 * transaction that publishes them in either mode: data before metadata.
 */
#include "core.h"
#include "mapping.h"
#include "writeback.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLK PMFUSE_BLOCK_SIZE
#define BLK_MASK ((uint64_t)BLK - 1)

int data_get_file(struct fs *fs, uint64_t ino, struct inode **out)
{
	struct inode *in = inode_get(fs, ino);

	if (!in)
		return -ENOENT;
	if (!S_ISREG(in->pi->mode)) {
		int ret = S_ISDIR(in->pi->mode) ? -EISDIR : -EINVAL;
		inode_put(fs, in);
		return ret;
	}
	*out = in;
	return 0;
}

/*
 * Index entries for a run of contiguous blocks: the largest orders whose
 * file offset and physical block are both aligned (what a huge page needs).
 */
static int mapping_add_run(struct mapping *map, uint64_t fblock, uint64_t phys, uint64_t n)
{
	while (n) {
		unsigned order = DAX_ORDER_4K;
		for (unsigned o = DAX_ORDER_1G; o > DAX_ORDER_4K; o = o == DAX_ORDER_1G ? DAX_ORDER_2M : 0) {
			uint64_t m = (1ull << o) - 1;
			if (!(fblock & m) && !(phys & m) && n > m) {
				order = o;
				break;
			}
		}
		int ret = mapping_insert(map, fblock, dax_mk_entry(phys, order, 0));
		if (ret)
			return ret;
		fblock += 1ull << order;
		phys += 1ull << order;
		n -= 1ull << order;
	}
	return 0;
}

/* fmap_walk() visits leaves one by one: join the contiguous ones first. */
struct mapping_build {
	struct mapping *map;
	uint64_t fblock, phys, n;
};

static int build_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	struct mapping_build *b = ctx;
	int ret = 0;

	if (unwritten)		/* reads as a hole; a write converts it */
		return 0;
	if (b->n && b->fblock + b->n == fblock && b->phys + b->n == phys) {
		b->n += n;
		return 0;
	}
	if (b->n)
		ret = mapping_add_run(b->map, b->fblock, b->phys, b->n);
	*b = (struct mapping_build){ b->map, fblock, phys, n };
	return ret;
}

/* The inode's mapping, built from its file map on first use (lock held exclusively). */
static struct mapping *get_mapping(struct fs *fs, struct inode *in)
{
	struct mapping *map;

	if (in->mapping)
		return in->mapping;
	map = malloc(sizeof(*map));
	if (!map)
		return NULL;
	mapping_init(map);
	struct mapping_build b = { map, 0, 0, 0 };
	if (fmap_walk(&fs->pool, in->pi, build_leaf, NULL, &b) ||
	    (b.n && mapping_add_run(map, b.fblock, b.phys, b.n))) {
		mapping_destroy(map);
		free(map);
		return NULL;	/* callers fall back to persisting at once */
	}
	in->mapping = map;
	return map;
}

int data_extents_text(struct fs *fs, uint64_t ino, char *buf, size_t size)
{
	struct fmap_extents c = { 0 };
	struct inode *in;
	int ret = data_get_file(fs, ino, &in);

	if (ret)
		return ret;
	pthread_rwlock_rdlock(&in->lock);
	ret = fmap_count_extents(&fs->pool, in->pi, &c);
	if (ret == 0)
		ret = snprintf(buf, size,
			       "extents %" PRIu64 "\nhuge_1g %" PRIu64 "\nhuge_2m %" PRIu64
			       "\nsmall_blocks %" PRIu64 "\nunwritten_blocks %" PRIu64
			       "\nindex_entries %" PRIu64 "\nindex_loaded %d\n",
			       c.extents, c.huge_1g, c.huge_2m, c.small, c.unwritten,
			       in->mapping ? in->mapping->nr_entries : c.huge_1g + c.huge_2m + c.small,
			       in->mapping != NULL);
	else
		ret = -EIO;
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/*
 * The file bytes at pos, as one map lookup answers them: 1 (data, at *addr)
 * or 0 (a hole, or unwritten blocks: zeros) for the next *len bytes, never
 * past end; -EIO if the map is damaged.  A hole past the last map entry is
 * endless: *len stays in range.
 */
static int lookup_segment(struct fs *fs, const struct pmfuse_inode *pi, uint64_t pos,
			  uint64_t end, char **addr, uint64_t *len)
{
	uint64_t phys, count, left = end - pos;
	int r = fmap_lookup(&fs->pool, pi, pos / BLK, &phys, &count);

	if (r < 0)
		return -EIO;
	*len = count > left / BLK + 1 ? left : count * BLK - (pos & BLK_MASK);
	if (*len > left)
		*len = left;
	if (r != FMAP_DATA) {
		*addr = NULL;
		return 0;
	}
	*addr = region_block(&fs->region, phys) + (pos & BLK_MASK);
	return 1;
}

int fs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, fs_read_fn fn, void *ctx,
	    unsigned flags)
{
	bool atime = false;
	struct fs_seg segs[FS_READ_MAXSEGS];
	struct inode *in;
	uint64_t pos, end, zero_bytes = 0;
	int n = 0, ret;

	ret = data_get_file(fs, ino, &in);
	if (ret)
		return ret;
	pthread_rwlock_rdlock(&in->lock);
	end = in->pi->size;
	if (off > end)
		off = end;
	if (size < end - off)
		end = off + size;
	for (pos = off; pos < end && n < FS_READ_MAXSEGS;) {
		uint64_t len;
		char *data;
		const char *ptr;
		ret = lookup_segment(fs, in->pi, pos, end, &data, &len);
		if (ret < 0)
			goto out;
		if (ret) {
			ptr = data;
		} else {
			if (len > fs->zero_size)
				len = fs->zero_size;
			ptr = fs->zero;
			zero_bytes += len;
		}
		if (n && ret && (const char *)segs[n - 1].ptr + segs[n - 1].len == ptr &&
		    segs[n - 1].ptr != fs->zero)
			segs[n - 1].len += len;
		else
			segs[n++] = (struct fs_seg){ ptr, len };
		pos += len;
	}
	if (zero_bytes)
		atomic_fetch_add_explicit(&fs->stats.zero_bytes_served, zero_bytes,
					  memory_order_relaxed);
	ret = fn(ctx, segs, n, pos - off);
	atime = !(flags & FS_READ_NOATIME) && inode_atime_due(fs, in->pi);
out:
	pthread_rwlock_unlock(&in->lock);
	if (atime)
		inode_touch_atime(fs, in);
	inode_put(fs, in);
	return ret;
}

/*
 * A run of blocks a write fills before they become the file's data for file
 * blocks [fblock, +len): newly reserved, or (convert) the file's own
 * unwritten blocks, whose transaction then marks them written.
 */
struct piece {
	uint64_t fblock, phys, len;
	bool convert;
};

struct pieces {
	struct piece *p;
	size_t n, cap;
	struct piece inline_p[8];
};

static int pieces_add(struct pieces *ps, uint64_t fblock, uint64_t phys, uint64_t len,
		      bool convert)
{
	struct piece *last = ps->n ? &ps->p[ps->n - 1] : NULL;

	if (last && last->convert == convert && last->fblock + last->len == fblock &&
	    last->phys + last->len == phys) {
		last->len += len;
		return 0;
	}
	if (ps->n == ps->cap) {
		size_t cap = ps->cap * 2;
		struct piece *np = malloc(cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		memcpy(np, ps->p, ps->n * sizeof(*np));
		if (ps->p != ps->inline_p)
			free(ps->p);
		ps->p = np;
		ps->cap = cap;
	}
	ps->p[ps->n++] = (struct piece){ fblock, phys, len, convert };
	return 0;
}

static void pieces_init(struct pieces *ps)
{
	ps->p = ps->inline_p;
	ps->n = 0;
	ps->cap = sizeof(ps->inline_p) / sizeof(ps->inline_p[0]);
}

/* Give back reserved blocks (transaction aborted) and the array. */
static void pieces_release(struct fs *fs, struct pieces *ps, bool free_blocks)
{
	if (free_blocks)
		for (size_t i = 0; i < ps->n; i++)
			if (!ps->p[i].convert)
				alloc_free(&fs->alloc, ps->p[i].phys, ps->p[i].len);
	if (ps->p != ps->inline_p)
		free(ps->p);
	pieces_init(ps);
}

/*
 * Where block fb would go to line up with blocks of its 2 MiB file window
 * already placed (0: none is).  Writes into a window may come in any order --
 * the kernel's write-back sends a file's pages as they age, several WRITEs
 * in flight at once -- and a window becomes a huge extent only if each
 * block lands beside the others, whichever came first.
 */
static uint64_t window_goal(struct fs *fs, struct inode *in, uint64_t fb)
{
	uint64_t b = fb - fb % PMFUSE_HUGE_2M_BLOCKS, end = b + PMFUSE_HUGE_2M_BLOCKS;

	while (b < end) {
		uint64_t phys, count;
		int ret = fmap_lookup(&fs->pool, in->pi, b, &phys, &count);
		if (ret < 0 || count == 0)
			return 0;
		if (ret != FMAP_HOLE)
			return phys + fb >= b ? phys + fb - b : 0;
		b += count;
	}
	return 0;
}

/*
 * Reserve blocks for every hole in file blocks [fb, fb + nb); with convert,
 * unwritten blocks become pieces too (a write fills them).  All or nothing:
 * -ENOSPC leaves nothing reserved.
 */
static int reserve_holes(struct fs *fs, struct inode *in, uint64_t fb, uint64_t nb,
			 bool convert, struct pieces *ps)
{
	uint64_t end = fb + nb, prev_phys = 0, phys0, cnt0;
	struct alloc_run runs[16];
	int ret;

	/*
	 * goal: right after the block before the range, so appends stay
	 * contiguous; without one, in line with the rest of its window
	 */
	if (fb && fmap_lookup(&fs->pool, in->pi, fb - 1, &phys0, &cnt0) > 0)
		prev_phys = phys0 + 1;
	else
		prev_phys = window_goal(fs, in, fb);

	while (fb < end) {
		uint64_t phys, count;
		ret = fmap_lookup(&fs->pool, in->pi, fb, &phys, &count);
		if (ret < 0)
			goto fail;
		if (count > end - fb)
			count = end - fb;
		if (ret == FMAP_UNWRITTEN && convert) {
			int r = pieces_add(ps, fb, phys, count, true);
			if (r) {
				ret = r;
				goto fail;
			}
		}
		if (ret != FMAP_HOLE) {
			prev_phys = phys + count;
			fb += count;
			continue;
		}
		/* a lookup reports a hole only up to the edge of its map entry: join them */
		while (fb + count < end) {
			uint64_t more;
			ret = fmap_lookup(&fs->pool, in->pi, fb + count, &phys, &more);
			if (ret != 0)
				break;
			count += more < end - fb - count ? more : end - fb - count;
		}
		if (ret < 0)
			goto fail;
		uint64_t left = count;
		/* the goal of the window a run last stopped short of (its first block) */
		uint64_t ahead_fb = UINT64_MAX, ahead = 0;
		while (left) {
			/* 64 KiB or more, or a 2 MiB boundary of the file: line up with a group */
			bool align = left >= 16 || (fb && fb % PMFUSE_HUGE_2M_BLOCKS == 0);
			/*
			 * At a window's first block, blocks already placed in
			 * the window lead, not the previous window's last block:
			 * write-back sends a window's second half before its
			 * first often enough, and following the previous window
			 * then splits this one.  Inside a window the block
			 * before fb leads (the window may already be split).
			 */
			uint64_t wg = fb % PMFUSE_HUGE_2M_BLOCKS ? 0 :
				      fb == ahead_fb ? ahead : window_goal(fs, in, fb);
			if (wg)
				prev_phys = wg;
			/*
			 * Following a predecessor out of line with the file's
			 * 2 MiB windows: only to the next window edge, where
			 * alignment takes over again (else one misplaced block
			 * would misalign all the rest of a file written in
			 * pieces that never start on an edge).  Nor past an
			 * edge into a window with blocks of its own: they lead
			 * there.
			 */
			uint64_t want = left, edge = PMFUSE_HUGE_2M_BLOCKS - fb % PMFUSE_HUGE_2M_BLOCKS;
			if (want > edge) {
				ahead_fb = fb + edge;
				ahead = window_goal(fs, in, ahead_fb);
				if (ahead || (align && prev_phys &&
					      (prev_phys - fb) % PMFUSE_HUGE_2M_BLOCKS))
					want = edge;
			}
			int nr = align ? alloc_blocks_aligned(&fs->alloc, want, prev_phys, fb, runs, 16)
				       : alloc_blocks(&fs->alloc, want, prev_phys, runs, 16);
			if (nr < 0) {
				ret = nr;
				goto fail;
			}
			for (int i = 0; i < nr; i++) {
				ret = pieces_add(ps, fb, runs[i].phys, runs[i].len, false);
				if (ret) {
					for (int j = i; j < nr; j++)
						alloc_free(&fs->alloc, runs[j].phys, runs[j].len);
					goto fail;
				}
				fb += runs[i].len;
				left -= runs[i].len;
				prev_phys = runs[i].phys + runs[i].len;
			}
		}
	}
	return 0;
fail:
	pieces_release(fs, ps, true);
	return ret == -EUCLEAN ? -EIO : ret;
}

/* Physical address of file byte pos: in the file map or a reserved piece. */
static char *addr_of(struct fs *fs, struct inode *in, const struct pieces *ps, uint64_t pos,
		     uint64_t *avail, bool *fresh)
{
	uint64_t fb = pos / BLK, phys, count;

	for (size_t i = 0; i < ps->n; i++)
		if (fb >= ps->p[i].fblock && fb < ps->p[i].fblock + ps->p[i].len) {
			*avail = (ps->p[i].fblock + ps->p[i].len - fb) * BLK - (pos & BLK_MASK);
			*fresh = true;
			return region_block(&fs->region, ps->p[i].phys + fb - ps->p[i].fblock) +
			       (pos & BLK_MASK);
		}
	if (fmap_lookup(&fs->pool, in->pi, fb, &phys, &count) != FMAP_DATA)
		return NULL;
	*avail = count * BLK - (pos & BLK_MASK);
	*fresh = false;
	return region_block(&fs->region, phys) + (pos & BLK_MASK);
}

/* Zero the bytes [from, to) of a mapped block beyond the old end of file. */
static int zero_tail(struct fs *fs, struct inode *in, uint64_t from, uint64_t to)
{
	uint64_t phys, count, lim = (from | BLK_MASK) + 1;

	if (!(from & BLK_MASK) || from >= to)
		return 0;
	if (to > lim)
		to = lim;
	if (fmap_lookup(&fs->pool, in->pi, from / BLK, &phys, &count) != FMAP_DATA)
		return 0;	/* a hole or unwritten: reads as zeros already */
	char *p = region_block(&fs->region, phys) + (from & BLK_MASK);
	return region_zero(&fs->region, p, to - from) ?: writeback_persist(fs, p, to - from);
}

/* A write's bytes: in memory (mem), from a reader (rd), or zeros (neither). */
struct wbytes {
	const char *mem;
	const struct fs_write_src *rd;
};

/*
 * Store the bytes into [off, off + len) and zero the uncovered parts of
 * fresh blocks; persist all of it, except overwrites below old_size in
 * writeback mode, which are marked DIRTY instead.  Fails only if a reader
 * or the media fails: what was stored stays, as after a short write, and
 * the fresh blocks are never published.
 */
static int fill_range(struct fs *fs, struct inode *in, const struct pieces *ps,
		      uint64_t off, const struct wbytes *src, uint64_t len, uint64_t old_size,
		      bool writeback)
{
	struct mapping *defer = NULL;
	/* one flush per run of adjacent bytes and one drain per request */
	struct flusher acc = { fs, NULL, 0, 0, 0 };

	uint64_t pos = off, end = off + len;
	int ret = 0;

	while (pos < end) {
		uint64_t avail, n;
		bool fresh;
		char *dst = addr_of(fs, in, ps, pos, &avail, &fresh);
		n = avail < end - pos ? avail : end - pos;
		if (!dst)	/* cannot happen: every hole was reserved */
			break;
		/*
		 * Bytes of an existing block at or past the old end of file are
		 * reached only through the size this write commits: like fresh
		 * blocks they are persisted before that transaction, never left
		 * DIRTY -- or a crash would show what the block held before a
		 * truncate shrank the file.
		 */
		bool exposed = !fresh && pos >= old_size;
		if (!fresh && pos < old_size && n > old_size - pos)
			n = old_size - pos;
		if (fresh && (pos & BLK_MASK)) {
			/* head of a new block before the write */
			ret = region_zero(&fs->region, dst - (pos & BLK_MASK), pos & BLK_MASK);
			flusher_add(&acc, dst - (pos & BLK_MASK), pos & BLK_MASK);
		}
		if (ret)
			;
		else if (src->mem)
			ret = region_copy(&fs->region, dst, src->mem + (pos - off), n);
		else if (src->rd)
			ret = region_fill(&fs->region, dst, n, src->rd->read, src->rd->to_fd,
					  src->rd->ctx);
		else
			ret = region_zero(&fs->region, dst, n);
		if (ret) {
			/* stored bytes of this piece may be partial: persist them all */
			flusher_add(&acc, dst, n);
			break;
		}
		if (writeback && !fresh && !exposed && !defer)
			defer = get_mapping(fs, in);	/* NULL (no memory): persist now */
		if (defer && !fresh && !exposed) {
			/* an overwrite: the data is stored; mark it, flush at fsync */
			uint64_t first = pos / BLK, last = (pos + n - 1) / BLK;
			uint64_t added = mapping_mark_dirty(defer, first, last - first + 1);
			atomic_fetch_add(&fs->stats.dirty_pages, (int64_t)added);
		} else if (!(fresh && seeded_bug("data-before-extent"))) {
			flusher_add(&acc, dst, n);
		}
		if (fresh && ((pos + n) & BLK_MASK)) {
			/* tail of a new block after the write */
			uint64_t t = BLK - ((pos + n) & BLK_MASK);
			ret = region_zero(&fs->region, dst + n, t);
			if (!seeded_bug("zero-tail"))
				flusher_add(&acc, dst + n, t);
			if (ret)
				break;
		}
		pos += n;
	}
	flusher_flush(&acc);
	if (acc.start) {	/* something was queued, so something was flushed */
		writeback_drain(fs);
	}
	return ret ?: acc.err;
}

/* The transaction that publishes persisted blocks, a new size and times. */
struct publish {
	struct fs *fs;
	struct inode *in;
	const struct pieces *ps;
	uint64_t new_size;		/* grow the file to this, if larger */
	bool mtime;
	bool unwritten;			/* map new pieces unwritten (fallocate) */
	struct fmap_huge huge;		/* huge extents completed (after commit) */
};

static int tx_publish(void *arg)
{
	struct publish *pb = arg;
	struct pmfuse_inode *pi = pb->in->pi;

	pb->huge = (struct fmap_huge){ 0 };
	for (size_t i = 0; i < pb->ps->n; i++) {
		const struct piece *pc = &pb->ps->p[i];
		int ret = pc->convert ? fmap_convert(&pb->fs->pool, pi, pc->fblock, pc->len)
				      : fmap_map(&pb->fs->pool, pi, pc->fblock, pc->phys, pc->len,
						 pb->unwritten, &pb->huge);
		if (ret)
			return ret;
	}
	if (pb->new_size > pi->size) {
		pmemobj_tx_add_range_direct(&pi->size, sizeof(pi->size));
		pi->size = pb->new_size;
	}
	inode_tx_touch(pi, false, pb->mtime, true);
	return 0;
}

/* Run the publishing transaction; count the huge extents it completed. */
static int publish(struct fs *fs, struct publish *pb)
{
	int ret = pool_tx(&fs->pool, tx_publish, pb);

	if (ret == 0)
		alloc_huge_add(&fs->alloc, pb->huge.n2m, pb->huge.n1g);
	return ret;
}

/*
 * Map the fresh pieces of a large write into our address space in one call
 * each instead of a page fault per 4 KiB page when the copy first touches
 * them (on a file-backed region without huge pages the faults were a third
 * to a half of the daemon's time in sequential writes).  Only a hint: any
 * failure (an old kernel: EINVAL) leaves the faults to the copy.  Not when
 * data goes through the region's fd: the mapping is not touched then.
 */
#define POPULATE_MIN_BLOCKS 16
static void populate_pieces(struct fs *fs, const struct pieces *ps)
{
	if (fs->region.fd_io)
		return;
	for (size_t i = 0; i < ps->n; i++)
		if (ps->p[i].len >= POPULATE_MIN_BLOCKS)
			(void)madvise(region_block(&fs->region, ps->p[i].phys), ps->p[i].len * BLK,
				      MADV_POPULATE_WRITE);
}

/*
 * A write inside the file over blocks it already has changes neither the map
 * nor the size, only mtime and ctime: they are stored in place, without a
 * transaction (at page granularity a pmemobj transaction is several msyncs,
 * more than the 4 KiB copy).  Each field is 8-byte aligned, so a crash can at
 * worst pair a new second with an old nanosecond: a valid time, never damage.
 * Sync writes persist the times before replying; writeback writes leave them
 * to fsync (fs_fsync persists them), as their data, and mark the inode so
 * that its eviction (and so a clean unmount) persists them too: on ADR pmem
 * a store nobody flushes can be lost to a power failure even after exit.
 */
static void touch_in_place(struct fs *fs, struct inode *in, bool persist_now)
{
	struct pmfuse_inode *pi = in->pi;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	pi->mtime.sec = ts.tv_sec;
	pi->mtime.nsec = (uint32_t)ts.tv_nsec;
	pi->ctime.sec = ts.tv_sec;
	pi->ctime.nsec = (uint32_t)ts.tv_nsec;
	atomic_store(&in->times_unflushed, !persist_now);
	if (persist_now && !seeded_bug("time-in-place"))
		pmemobj_persist(fs->pool.pop, &pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
}

void data_persist_times(struct fs *fs, struct inode *in)
{
	if (atomic_exchange(&in->times_unflushed, false))
		pmemobj_persist(fs->pool.pop, &in->pi->mtime, PMFUSE_INODE_MCTIME_SPAN);
}

/* Write with the inode lock held exclusively; 0 or -errno. */
static int write_locked(struct fs *fs, struct inode *in, uint64_t off, const struct wbytes *src,
			size_t size, bool sync)
{
	struct pieces ps;
	uint64_t old_size = in->pi->size;
	int ret;

	pieces_init(&ps);
	ret = reserve_holes(fs, in, off / BLK, (off + size - 1) / BLK - off / BLK + 1, true, &ps);
	if (ret)
		return ret;
	/* bytes between the old end of file and the write must read as zeros */
	if (off > old_size)
		ret = zero_tail(fs, in, old_size, off);
	populate_pieces(fs, &ps);
	if (ret == 0)
		ret = fill_range(fs, in, &ps, off, src, size, old_size,
				 !(fs->opts.sync || sync));
	if (ret == 0 && ps.n == 0 && off + size <= old_size) {
		touch_in_place(fs, in, fs->opts.sync || sync);
		pieces_release(fs, &ps, false);
		return 0;
	}
	/* data is durable: now publish blocks, size and times in one transaction */
	struct publish pb = { fs, in, &ps, off + size, true, false, { 0 } };
	if (ret == 0)
		ret = publish(fs, &pb);
	/*
	 * The new blocks are clean and mapped.  A clean index is simply
	 * dropped -- rebuilt from the map on next use, with merged runs as
	 * huge entries; a dirty one learns the new blocks.
	 */
	if (ret == 0 && ps.n && in->mapping) {
		if (in->mapping->nr_dirty_pages == 0) {
			writeback_drop(fs, in, true);
		} else {
			for (size_t i = 0; i < ps.n; i++)
				if (mapping_add_run(in->mapping, ps.p[i].fblock, ps.p[i].phys, ps.p[i].len)) {
					writeback_drop(fs, in, true);	/* flushes, rebuilt on next use */
					break;
				}
		}
	}
	pieces_release(fs, &ps, ret != 0);
	return ret;
}

int data_zero_locked(struct fs *fs, struct inode *in, uint64_t off, uint64_t len)
{
	struct wbytes zeros = { NULL, NULL };

	return write_locked(fs, in, off, &zeros, len, false);
}

void data_touch_locked(struct fs *fs, struct inode *in)
{
	touch_in_place(fs, in, false);
}

int data_mark_dirty(struct fs *fs, struct inode *in, uint64_t page, uint64_t n)
{
	struct mapping *map = get_mapping(fs, in);

	if (!map)
		return -ENOMEM;
	uint64_t added = mapping_mark_dirty(map, page, n);
	atomic_fetch_add(&fs->stats.dirty_pages, (int64_t)added);
	return 0;
}

static int check_range(uint64_t off, uint64_t len)
{
	return off > PMFUSE_MAX_FILE_SIZE || len > PMFUSE_MAX_FILE_SIZE - off ? -EFBIG : 0;
}

static ssize_t write_bytes(struct fs *fs, uint64_t ino, uint64_t off, const struct wbytes *src,
			   size_t size, bool sync)
{
	struct inode *in;
	int ret;

	if (size == 0)
		return 0;
	if ((ret = check_range(off, size)) || (ret = data_get_file(fs, ino, &in)))
		return ret;
	pthread_rwlock_wrlock(&in->lock);
	ret = inode_immutable(in->pi) ?: write_locked(fs, in, off, src, size, sync);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret ? ret : (ssize_t)size;
}

ssize_t fs_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size,
		 bool sync)
{
	struct wbytes src = { .mem = buf };

	return write_bytes(fs, ino, off, &src, size, sync);
}

ssize_t fs_write_from(struct fs *fs, uint64_t ino, uint64_t off, const struct fs_write_src *rd,
		      size_t size, bool sync)
{
	struct wbytes src = { .rd = rd };
	ssize_t n = write_bytes(fs, ino, off, &src, size, sync);

	if (n > 0)
		atomic_fetch_add_explicit(&fs->stats.splice_write_bytes, (uint64_t)n,
					  memory_order_relaxed);
	return n;
}

struct grow_args {
	struct fs *fs;
	struct inode *in;
	uint64_t size;
	struct fmap_freed *freed;
};

static int tx_grow(void *arg)
{
	struct grow_args *g = arg;
	int ret = data_tx_truncate(g->fs, g->in, g->size, g->freed);

	if (!ret)
		inode_tx_touch(g->in->pi, false, true, true);
	return ret;
}

int data_tx_truncate(struct fs *fs, struct inode *in, uint64_t size, struct fmap_freed *freed)
{
	struct pmfuse_inode *pi = in->pi;
	int ret;

	if (size < pi->size) {
		uint64_t first = (size + BLK - 1) / BLK;
		/* blocks are about to go: write back what is dirty, then forget it */
		ret = writeback_drop(fs, in, true);
		if (ret)
			return ret;
		ret = fmap_unmap(&fs->pool, pi, first, UINT64_MAX / 2 - first, freed);
		if (ret)
			return ret;
	} else if (size > pi->size && (ret = zero_tail(fs, in, pi->size, size))) {
		return ret;
	}
	pmemobj_tx_add_range_direct(&pi->size, sizeof(pi->size));
	pi->size = size;
	return 0;
}

struct punch_args {
	struct fs *fs;
	struct inode *in;
	uint64_t off, end;		/* bytes to punch, end <= size */
	uint64_t first, last;		/* whole blocks to free (past EOF too) */
	uint64_t new_size;		/* grow the file to this, if larger */
	struct fmap_freed *freed;
};

/*
 * Zero [pos, stop), inside one block, through the pool mapping and in the
 * transaction's undo log: the edges of a punch commit with the blocks it
 * frees, so a crash leaves all of the punch or none of it.
 */
static int tx_zero_partial(struct fs *fs, struct inode *in, uint64_t pos, uint64_t stop)
{
	uint64_t phys, count;
	int r = fmap_lookup(&fs->pool, in->pi, pos / BLK, &phys, &count);
	char *p;

	if (r != FMAP_DATA)
		return r < 0 ? -EIO : 0;	/* reads as zeros already */
	p = fs->pool.base + (phys << PMFUSE_BLOCK_SHIFT) + (pos & BLK_MASK);
	pmemobj_tx_add_range_direct(p, stop - pos);
	memset(p, 0, stop - pos);
	return 0;
}

/* The partial blocks at the edges of [off, end): at most two ranges. */
static int punch_edges(uint64_t off, uint64_t end, uint64_t edge[2][2])
{
	uint64_t head_end = (off | BLK_MASK) + 1;
	int n = 0;

	if ((off & BLK_MASK) || end - off < BLK) {
		edge[n][0] = off;
		edge[n][1] = head_end < end ? head_end : end;
		n++;
	}
	if ((end & BLK_MASK) && (end & ~BLK_MASK) >= (n ? edge[0][1] : off)) {
		edge[n][0] = end & ~BLK_MASK;
		edge[n][1] = end;
		n++;
	}
	return n;
}

static int tx_punch(void *arg)
{
	struct punch_args *a = arg;
	uint64_t edge[2][2];

	/* partial blocks at either edge are zeroed in place */
	for (int i = punch_edges(a->off, a->end, edge) - 1; i >= 0; i--) {
		int r = tx_zero_partial(a->fs, a->in, edge[i][0], edge[i][1]);
		if (r)
			return r;
	}
	if (a->last > a->first) {
		int r = fmap_unmap(&a->fs->pool, a->in->pi, a->first, a->last - a->first, a->freed);
		if (r)
			return r;
	}
	if (a->new_size > a->in->pi->size) {
		pmemobj_tx_add_range_direct(&a->in->pi->size, sizeof(a->in->pi->size));
		a->in->pi->size = a->new_size;
	}
	inode_tx_touch(a->in->pi, false, true, true);
	return 0;
}

/* Punch [off, off + len) in one transaction, growing the file to new_size. */
static int punch(struct fs *fs, struct inode *in, uint64_t off, uint64_t len,
		 uint64_t new_size)
{
	struct fmap_freed freed = { 0 };
	uint64_t end = off + len, size = in->pi->size;
	uint64_t first = (off + BLK - 1) / BLK, last = end / BLK;	/* whole blocks */
	int ret;

	if (off >= size)
		return 0;
	if (end > size)
		end = size;
	/*
	 * The edges are zeroed inside the transaction, where pmemobj snapshots
	 * them first -- outside the media-error guard.  A bad page there must
	 * fail the punch here, not kill the daemon in the undo log.
	 */
	uint64_t edge[2][2];
	for (int i = punch_edges(off, end, edge) - 1; i >= 0; i--) {
		uint64_t phys, count;
		if (fmap_lookup(&fs->pool, in->pi, edge[i][0] / BLK, &phys, &count) == FMAP_DATA &&
		    (ret = region_probe(&fs->region, region_block(&fs->region, phys) +
					(edge[i][0] & BLK_MASK), edge[i][1] - edge[i][0])))
			return ret;
	}
	struct punch_args a = { fs, in, off, end, first, last, new_size, &freed };
	ret = pool_tx(&fs->pool, tx_punch, &a);
	if (ret == 0)
		dax_release_freed(fs, in, &freed);
	else
		free(freed.runs);
	return ret;
}

int fs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off, uint64_t len)
{
	struct pieces ps;
	struct inode *in;
	int ret;

	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if ((mode & FALLOC_FL_PUNCH_HOLE) && mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		return -EOPNOTSUPP;
	if (len == 0)
		return -EINVAL;
	if (off > PMFUSE_MAX_FILE_SIZE || len > PMFUSE_MAX_FILE_SIZE - off)
		return -EFBIG;
	ret = data_get_file(fs, ino, &in);
	if (ret)
		return ret == -EINVAL ? -ENODEV : ret;
	pieces_init(&ps);
	pthread_rwlock_wrlock(&in->lock);
	/* append-only files may only be preallocated (vfs_fallocate) */
	if ((ret = (mode & ~FALLOC_FL_KEEP_SIZE) ? inode_pinned(in->pi) : inode_immutable(in->pi)))
		goto out;
	/* the map changes under the index: write back what is dirty, then forget it */
	if ((ret = writeback_drop(fs, in, true)))
		goto out;
	if (mode & FALLOC_FL_PUNCH_HOLE) {
		ret = punch(fs, in, off, len, 0);
		goto out;
	}
	if (mode & FALLOC_FL_ZERO_RANGE) {
		/*
		 * All the zeros appear at once: the range is punched -- edges
		 * and whole blocks in one transaction, which also grows the
		 * file -- and a hole reads as zeros; the blocks are allocated
		 * again, unwritten, below.  Past the old end of file the last
		 * block is zeroed first: growing the file must show no stale
		 * bytes there.
		 */
		uint64_t grow = (mode & FALLOC_FL_KEEP_SIZE) ? 0 : off + len;
		if ((grow > in->pi->size && (ret = zero_tail(fs, in, in->pi->size, grow))) ||
		    (ret = punch(fs, in, off, len, grow)))
			goto out;
	}
	/*
	 * The new blocks are mapped unwritten: nothing is stored in them (an
	 * 8 GiB preallocation is one transaction, not 8 GiB of zeros).  They
	 * read as zeros, and a write stores its data, zeros the rest of each
	 * block it touches, persists, and only then marks them written: the
	 * blocks' old contents are never reachable.
	 */
	ret = reserve_holes(fs, in, off / BLK, (off + len - 1) / BLK - off / BLK + 1, false, &ps);
	if (ret)
		goto out;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > in->pi->size)
		ret = zero_tail(fs, in, in->pi->size, off + len);
	struct publish pb = { fs, in, &ps, (mode & FALLOC_FL_KEEP_SIZE) ? 0 : off + len, false,
			      true, { 0 } };
	if (!ret)
		ret = publish(fs, &pb);
	pieces_release(fs, &ps, ret != 0);
out:
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/*
 * copy_file_range inside the region: data segments are copied block to
 * block through the write path; holes of the source stay holes (punched in
 * the destination if it had data there).  Returns bytes copied.
 */
ssize_t fs_copy_range(struct fs *fs, uint64_t src_ino, uint64_t soff, uint64_t dst_ino,
		      uint64_t doff, uint64_t len)
{
	struct inode *src, *dst;
	ssize_t ret;
	uint64_t done = 0;

	if ((ret = check_range(doff, len)))
		return ret;
	if ((ret = data_get_file(fs, src_ino, &src)))
		return ret;
	if ((ret = data_get_file(fs, dst_ino, &dst))) {
		inode_put(fs, src);
		return ret;
	}
	if (src == dst && soff < doff + len && doff < soff + len) {
		ret = -EINVAL;	/* overlapping ranges of one file, as Linux */
		goto out_put;
	}
	inode_lock_two(src, true, dst, false);
	if ((ret = inode_immutable(dst->pi)))
		goto out_unlock;
	if (soff >= src->pi->size)
		goto out_unlock;
	if (len > src->pi->size - soff)
		len = src->pi->size - soff;
	ret = writeback_drop(fs, dst, true);	/* the destination's map changes */
	if (ret)
		goto out_unlock;
	while (done < len) {
		uint64_t pos = soff + done, n;
		char *data;
		int r = lookup_segment(fs, src->pi, pos, soff + len, &data, &n);
		if (r < 0) {
			ret = r;
			goto out_unlock;
		}
		if (r == 1) {
			struct wbytes from = { .mem = data };
			ret = write_locked(fs, dst, doff + done, &from, n, false);
		} else {
			ret = punch(fs, dst, doff + done, n, 0);
			if (!ret && doff + done + n > dst->pi->size) {
				/* a trailing hole still extends the destination */
				struct fmap_freed none = { 0 };
				struct grow_args g = { fs, dst, doff + done + n, &none };
				ret = pool_tx(&fs->pool, tx_grow, &g);
			}
		}
		if (ret)
			goto out_unlock;
		done += n;
	}
out_unlock:
	inode_unlock_two(src, dst);
out_put:
	inode_put(fs, dst);
	inode_put(fs, src);
	if (ret < 0 && done == 0)
		return ret;
	return (ssize_t)done;
}

int64_t fs_lseek(struct fs *fs, uint64_t ino, int64_t off, int whence)
{
	struct inode *in;
	int64_t ret;
	int r;

	if (off < 0)
		return -ENXIO;
	r = data_get_file(fs, ino, &in);
	if (r)
		return r;
	pthread_rwlock_rdlock(&in->lock);
	uint64_t size = in->pi->size, pos = (uint64_t)off;
	ret = -ENXIO;
	while (pos < size) {
		uint64_t phys, count;
		r = fmap_lookup(&fs->pool, in->pi, pos / BLK, &phys, &count);
		if (r < 0) {
			ret = -EIO;
			break;
		}
		if ((r == FMAP_DATA) == (whence == SEEK_DATA)) {
			ret = (int64_t)pos;
			break;
		}
		uint64_t next = (pos / BLK + count) * BLK;
		pos = next > pos ? next : size;
	}
	if (whence == SEEK_HOLE && ret == -ENXIO && (uint64_t)off < size)
		ret = (int64_t)size;
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}
