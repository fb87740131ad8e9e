/*
 * region: open and map a pmfuse region with libpmem2.  We ask for PAGE
 * granularity, which pmem2 accepts for any source, and then read back the
 * granularity it actually gives (byte on eADR pmem, cache line on ADR pmem,
 * page on an ordinary file) so the persistence functions match the media.
 */
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int region_open(struct region *r, const char *path, char *why, size_t whylen)
{
	struct pmem2_config *cfg = NULL;
	struct pmem2_source *src = NULL;
	int ret;

	memset(r, 0, sizeof(*r));
	r->fd = open(path, O_RDWR | O_CLOEXEC);
	if (r->fd < 0) {
		ret = -errno;
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return ret;
	}
	if (pmem2_source_from_fd(&src, r->fd)) {
		snprintf(why, whylen, "pmem2 source: %s", pmem2_errormsg());
		ret = -EINVAL;
		goto out_close;
	}
	if (pmem2_config_new(&cfg)) {
		snprintf(why, whylen, "pmem2 config: %s", pmem2_errormsg());
		ret = -ENOMEM;
		goto out_source;
	}
	if (pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE)) {
		snprintf(why, whylen, "pmem2 granularity: %s", pmem2_errormsg());
		ret = -EINVAL;
		goto out_config;
	}
	if (pmem2_map_new(&r->map, cfg, src)) {
		snprintf(why, whylen, "pmem2 map: %s", pmem2_errormsg());
		ret = -EINVAL;
		goto out_config;
	}
	r->base = pmem2_map_get_address(r->map);
	r->size = pmem2_map_get_size(r->map);
	r->granularity = pmem2_map_get_store_granularity(r->map);
	r->memcpy_fn = pmem2_get_memcpy_fn(r->map);
	r->memset_fn = pmem2_get_memset_fn(r->map);
	r->persist_fn = pmem2_get_persist_fn(r->map);
	r->flush_fn = pmem2_get_flush_fn(r->map);
	r->drain_fn = pmem2_get_drain_fn(r->map);
	pmem2_config_delete(&cfg);
	pmem2_source_delete(&src);
	return 0;

out_config:
	pmem2_config_delete(&cfg);
out_source:
	pmem2_source_delete(&src);
out_close:
	close(r->fd);
	r->fd = -1;
	return ret;
}

void region_close(struct region *r)
{
	if (r->map)
		pmem2_map_delete(&r->map);
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}

const char *region_granularity_name(const struct region *r)
{
	switch (r->granularity) {
	case PMEM2_GRANULARITY_BYTE: return "byte";
	case PMEM2_GRANULARITY_CACHE_LINE: return "cache_line";
	default: return "page";
	}
}
