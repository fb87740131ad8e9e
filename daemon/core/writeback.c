/*
 * writeback: getting a file's stored bytes to persistence.  A flusher
 * gathers ranges and flushes physically adjacent ones as one (which matters
 * most at page granularity, where a flush is an msync); writeback_mapping()
 * is fsync's walk over the DIRTY entries of a mapping index (mapping.h),
 * the analogue of dax_writeback_mapping_range().
 */
#include "writeback.h"
#include "mapping.h"

#include <stdlib.h>

#define BLK PMFUSE_BLOCK_SIZE

int writeback_persist(struct fs *fs, const void *p, size_t len)
{
	atomic_fetch_add_explicit(&fs->stats.flush_bytes, len, memory_order_relaxed);
	atomic_fetch_add_explicit(&fs->stats.flush_calls, 1, memory_order_relaxed);
	return region_persist(&fs->region, p, len);
}

void flusher_flush(struct flusher *f)
{
	if (!f->len)
		return;
	int err = region_flush(&f->fs->region, f->start, f->len);
	if (err && !f->err)
		f->err = err;
	atomic_fetch_add_explicit(&f->fs->stats.flush_bytes, f->len, memory_order_relaxed);
	atomic_fetch_add_explicit(&f->fs->stats.flush_calls, 1, memory_order_relaxed);
	f->total += f->len;
	f->len = 0;
}

void flusher_add(struct flusher *f, char *p, size_t len)
{
	if (!len)
		return;
	if (f->len && f->start + f->len == p) {
		f->len += len;
		return;
	}
	flusher_flush(f);
	f->start = p;
	f->len = len;
}

void writeback_drain(struct fs *fs)
{
	fs->region.drain_fn();
	atomic_fetch_add_explicit(&fs->stats.drains, 1, memory_order_relaxed);
}

static void flush_run(void *ctx, uint64_t entry, uint64_t page, uint64_t npages)
{
	struct flusher *f = ctx;
	uint64_t first = page & ~(dax_pages(entry) - 1);
	flusher_add(f, region_block(&f->fs->region, dax_block(entry) + (page - first)), npages * BLK);
}

/*
 * Flush every dirty page of the mapping in pages [start, end) and drain
 * once.  Entries are taken one at a time under their entry lock; the walk
 * snapshots with TOWRITE so pages dirtied meanwhile wait for the next fsync
 * instead of starving this.
 */
int writeback_range(struct fs *fs, struct mapping *map, uint64_t start, uint64_t end,
		    uint64_t *bytes)
{
	struct flusher f = { fs, NULL, 0, 0, 0 };
	uint64_t cleaned = 0;

	mapping_tag_towrite(map, start, end);
	for (uint64_t p = start; (p = mapping_find_marked(map, p, end, DAX_TOWRITE)) != UINT64_MAX;) {
		uint64_t first, e = mapping_lock_entry(map, p);
		if (!e)
			break;
		mapping_lookup(map, p, &first);
		cleaned += mapping_clean_entry(map, p, flush_run, &f);
		mapping_unlock_entry(map, p);
		p = first + dax_pages(e);
	}
	flusher_flush(&f);
	if (cleaned)
		atomic_fetch_sub(&fs->stats.dirty_pages, (int64_t)cleaned);
	writeback_drain(fs);
	if (bytes)
		*bytes = f.total;
	return f.err;
}

int writeback_mapping(struct fs *fs, struct mapping *map)
{
	return writeback_range(fs, map, 0, UINT64_MAX, NULL);
}

int writeback_drop(struct fs *fs, struct inode *in, bool writeback)
{
	int ret = 0;

	if (writeback)
		data_persist_times(fs, in);
	if (!in->mapping)
		return 0;
	/* nr_dirty_pages is stable: writers hold the inode lock exclusively */
	if (writeback && in->mapping->nr_dirty_pages)
		ret = writeback_mapping(fs, in->mapping);
	else if (in->mapping->nr_dirty_pages)
		atomic_fetch_sub(&fs->stats.dirty_pages, (int64_t)in->mapping->nr_dirty_pages);
	mapping_destroy(in->mapping);
	free(in->mapping);
	in->mapping = NULL;
	return ret;
}

