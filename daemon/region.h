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

#include <libpmem2.h>
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
};

int region_open(struct region *r, const char *path, char *why, size_t whylen);
void region_close(struct region *r);
const char *region_granularity_name(const struct region *r);

static inline void *region_block(const struct region *r, uint64_t block)
{
	return r->base + (block << 12);
}

/* Copy without flushing; the caller persists the whole request once. */
static inline void region_copy_nopersist(const struct region *r, void *dst,
					 const void *src, size_t len)
{
	r->memcpy_fn(dst, src, len, PMEM2_F_MEM_NOFLUSH);
}

static inline void region_zero_nopersist(const struct region *r, void *dst,
					 size_t len)
{
	r->memset_fn(dst, 0, len, PMEM2_F_MEM_NOFLUSH);
}

static inline void region_persist(const struct region *r, const void *p,
				  size_t len)
{
	if (len)
		r->persist_fn((void *)p, len);
}

#endif
