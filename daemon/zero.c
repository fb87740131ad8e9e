/*
 * zero: the one process-wide zero buffer that every hole read points into.
 * An anonymous PROT_READ mapping: every page of it is the kernel's shared
 * zero page, so it costs no memory however much of it is served, and a
 * stray write to it faults instead of corrupting later hole reads.
 */
#include "fs.h"

#include <errno.h>
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
