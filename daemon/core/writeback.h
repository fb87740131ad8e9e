/*
 * writeback: flushing stored bytes to persistence (see writeback.c).
 */
#ifndef PMFUSE_WRITEBACK_H
#define PMFUSE_WRITEBACK_H

#include "core.h"

/* Persist [p, p + len) now (flush and drain), counted in the stats. */
int writeback_persist(struct fs *fs, const void *p, size_t len);

/* Ranges gathered for one flush each per physically contiguous run. */
struct flusher {
	struct fs *fs;
	char *start;			/* the pending run */
	size_t len;
	int err;			/* the first media error met */
	uint64_t total;			/* bytes flushed so far */
};
/* Queue [p, p + len), joining it to the pending run if adjacent. */
void flusher_add(struct flusher *f, char *p, size_t len);
/* Flush the pending run (the caller drains once, after the last). */
void flusher_flush(struct flusher *f);
/* Wait for the flushes issued so far (an sfence, or nothing for msync). */
void writeback_drain(struct fs *fs);

/*
 * Flush every dirty page of a mapping and drain once; 0 or the first media
 * error.  Entries are taken one at a time under their entry lock.
 */
int writeback_mapping(struct fs *fs, struct mapping *map);
/* The same over pages [start, end); *bytes (if not NULL) gets the bytes flushed. */
int writeback_range(struct fs *fs, struct mapping *map, uint64_t start, uint64_t end,
		    uint64_t *bytes);

/*
 * Free an inode's mapping (inode lock held exclusively), flushing its dirty
 * ranges (and mtime/ctime stored in place) first if writeback -- not for an
 * unlinked file about to be
 * reclaimed: nobody can read those bytes again.
 */
int writeback_drop(struct fs *fs, struct inode *in, bool writeback);

#endif
