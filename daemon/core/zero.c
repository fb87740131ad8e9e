/*
 * zero: the one process-wide zero buffer that every hole read points into.
 * An anonymous PROT_READ mapping: every page of it is the kernel's shared
 * zero page, so it costs no memory however much of it is served, and a
 * stray write to it faults instead of corrupting later hole reads.  Also
 * what a transport that copies read segments itself needs: which are holes,
 * and a copy of the others that turns a media error into -EIO.
 */
#include "core.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define ZERO_SIZE (1u << 20)

int zero_init(struct fs *fs)
{
	void *p = mmap(NULL, ZERO_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	fs->zero = p;
	fs->zero_size = ZERO_SIZE;
	return 0;
}

void zero_fini(struct fs *fs)
{
	if (fs->zero)
		munmap((void *)fs->zero, fs->zero_size);
	fs->zero = NULL;
}

bool fs_seg_is_zero(const struct fs *fs, const void *p, size_t n)
{
	const char *z = fs->zero, *c = p;

	return z && c >= z && c + n <= z + fs->zero_size;
}

int fs_seg_copy(struct fs *fs, void *dst, const void *src, size_t n)
{
	const struct region *r = &fs->region;
	const char *c = src;

	/* data in the mapping may sit on a bad page: EIO, not SIGBUS */
	if (c >= r->base && c < r->base + r->size)
		return region_read(&fs->region, dst, src, n);
	memcpy(dst, src, n);
	return 0;
}

bool fs_seg_copy_needed(const struct fs *fs)
{
	return fs->region.fd_io;
}
