/*
 * region: the libpmem2 mapping of a pmfuse region through which all file
 * data is read and written.  pmemobj maps the same file for metadata; the
 * two MAP_SHARED mappings see the same memory.  The region picks its
 * persistence primitives from the store granularity pmem2 reports:
 * byte (eADR: stores are durable once visible), cache line (ADR: flush +
 * drain) or page (plain file: msync).
 */
#ifndef PMFUSE_REGION_H
#define PMFUSE_REGION_H

#include "pmfuse/format.h"

#include <libpmem2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct region {
	int fd;
	struct pmem2_map *map;
	char *base;
	size_t size;
	enum pmem2_granularity granularity;
	pmem2_memcpy_fn memcpy_fn;
	pmem2_memset_fn memset_fn;
	pmem2_persist_fn persist_fn;
	pmem2_flush_fn flush_fn;
	pmem2_drain_fn drain_fn;
	/*
	 * File data moves through fd (pread/pwrite), not the mapping: at page
	 * granularity (an ordinary file, made durable by msync of the range
	 * either way) where a page's first access through the mapping is dear
	 * (see use_fd_io in region.c).
	 */
	bool fd_io;
	long first_touch_ns;	/* what decided it (-1 or 0: not measured) */
	_Atomic uint64_t media_errors;	/* SIGBUS caught in the functions below */
};

int region_open(struct region *r, const char *path, char *why, size_t whylen);

/*
 * Bytes of a region outside the daemon's mapping: headers judged before
 * pmemobj_open, signatures mkfs reads and clears.  A devdax device has no
 * read(2)/write(2), only mmap, so there the bytes go through a short-lived
 * libpmem2 mapping (read-only unless writing; writes are persisted).
 * fd must be open for writing to write.  0 or -errno; never short.
 */
int region_pread(int fd, void *buf, size_t len, uint64_t off);
int region_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* The mapping path itself, for any fd (tests use it on plain files). */
int region_mapped_io(int fd, void *buf, size_t len, uint64_t off, bool write);
void region_close(struct region *r);
const char *region_granularity_name(const struct region *r);

static inline void *region_block(const struct region *r, uint64_t block)
{
	return r->base + (block << PMFUSE_BLOCK_SHIFT);
}

/*
 * Media errors.  A load or store to a poisoned page of real pmem -- or to a
 * page of a region file that no longer exists -- raises SIGBUS.  Every
 * access to file data through the mapping goes through the functions
 * below: a SIGBUS inside one unwinds back to it (sigsetjmp, no syscall) and
 * it returns -EIO, so the request fails instead of the daemon.  Faults
 * outside these functions (metadata, which pmemobj reads directly) keep the
 * default action.  With fd_io the kernel reports the same page as EIO from
 * pread/pwrite.  r->media_errors counts both.
 */

/* Copy / zero without flushing; the caller persists the whole request once. */
int region_copy(struct region *r, void *dst, const void *src, size_t len);
/* Copy out of the region into ordinary memory (cached stores): 0 or -EIO. */
int region_read(struct region *r, void *dst, const void *src, size_t len);
int region_zero(struct region *r, void *dst, size_t len);
/*
 * Store the next len bytes of a reader at dst: read(ctx, dst, len) under the
 * guard, or with fd_io to_fd(ctx, r->fd, offset of dst, len) (a splice).
 */
int region_fill(struct region *r, void *dst, size_t len,
		int (*read)(void *ctx, void *dst, size_t len),
		int (*to_fd)(void *ctx, int fd, uint64_t off, size_t len), void *ctx);
int region_flush(struct region *r, const void *p, size_t len);
/* Load every cache line of [p, p + len): -EIO if one is bad.  For bytes
 * that code outside these functions (a pmemobj undo log) is about to read. */
int region_probe(struct region *r, const void *p, size_t len);
int region_persist(struct region *r, const void *p, size_t len);

#endif
