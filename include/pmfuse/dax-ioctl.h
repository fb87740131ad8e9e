/*
 * The direct-access protocol between libpmfuse-dax (in an application) and
 * the pmfuse daemon: ioctls on a pmfuse file, which the kernel carries to
 * the daemon as FUSE_IOCTL requests (restricted ioctls: each command's
 * argument is one fixed-size struct, copied in and out whole).  Not an
 * application interface: applications use <pmfuse/dax.h> or the preload.
 *
 * The daemon plays the kernel's part of DAX (fs/dax.c):
 *   INFO    which region backs the mount (the library opens it itself: the
 *           kernel's permission check on that open is the trust model)
 *   MAP     start a map session for pages [first, first + npages) of the
 *           file: its written extents within the file size come back as
 *           (page, block, npages) runs, MAP_MORE says call EXTENTS for the
 *           rest.  A writable session gets, with its first FAULT, a shared
 *           area in the region (shared_block, shared_blocks): a struct
 *           pmfuse_dax_shared, then a bitmap with a bit per page of the
 *           window, set while the page is writable in the map (the DIRTY
 *           mark of the session's pages).  A map only read allocates nothing.
 *           With TRACK the shared area comes with the MAP reply: the
 *           library maps the written pages writable at once, sets their
 *           bits, and learns from the kernel which pages were stored to
 *           since its last msync (userfaultfd's asynchronous write-protect
 *           and PAGEMAP_SCAN), with no fault of its own; the bits then stay
 *           set while the page is mapped (every fsync flushes them).
 *           The blocks of a file with a live session are never given to
 *           another file until every session of the file has ended.
 *   EXTENTS more runs from page first on (no new session)
 *   FAULT   a write to a page that is a hole, unwritten, or not mapped yet
 *           (struct pmfuse_dax_fault): allocated if needed (zeroed,
 *           persisted, committed before the reply: the MAP_SYNC rule), its
 *           bit set; block is the page's block.  A write to a page the map
 *           already shows from the region needs no request: the library
 *           sets the page's bit and makes it writable itself.
 *   SYNC    with SYNC_FLUSH (msync, when the shared area's "cached" says a
 *           descriptor read the file through the page cache): flush the
 *           DIRTY pages of [first, +npages) written through the FUSE path,
 *           drop the page cache there, clear "cached".  The library flushes
 *           the map's own writable pages itself (CPU flushes, or msync of
 *           its region mapping at page granularity) and clears their bits.
 *           Without SYNC_FLUSH (munmap of a part): the pages of ext[] (runs
 *           of page/npages) become DIRTY in the daemon and their bits clear.
 *   UNMAP   the session is over (munmap): its set bits become DIRTY pages
 *           for the next fsync, the shared area is freed
 * A session also ends when the open file it came through is released (the
 * process exited), the same way; fsync of the file flushes the pages whose
 * bits are set in any live session.
 */
#ifndef PMFUSE_DAX_IOCTL_H
#define PMFUSE_DAX_IOCTL_H

#include <linux/ioctl.h>
#include <stdint.h>

#define PMFUSE_DAX_VERSION	1
#define PMFUSE_DAX_BLOCK	4096u	/* a file page and a region block */

/* region store granularity, as pmem2 reports it */
#define PMFUSE_DAX_GRAN_BYTE		0
#define PMFUSE_DAX_GRAN_CACHE_LINE	1
#define PMFUSE_DAX_GRAN_PAGE		2

struct pmfuse_dax_info {
	uint32_t version;
	uint32_t granularity;
	uint64_t region_dev;		/* st_dev and st_ino of the region the daemon maps */
	uint64_t region_ino;
	uint64_t region_size;
	uint32_t block_size;
	uint32_t pad;
	char region[4056];		/* its absolute path, NUL-terminated */
};

struct pmfuse_dax_extent {
	uint64_t page;			/* file page */
	uint64_t block;			/* region block (offset / block_size) */
	uint64_t npages;
};

#define PMFUSE_DAX_EXTENTS_MAX	166

/* flags */
#define PMFUSE_DAX_WRITE	(1u << 0)	/* MAP: writable map; FAULT: a write */
#define PMFUSE_DAX_MORE		(1u << 1)	/* out: more extents after next */
#define PMFUSE_DAX_SYNC_FLUSH	(1u << 2)	/* SYNC: flush and drain (msync) */
/*
 * MAP of a writable map whose written pages are writable from the start
 * (the library learns which were stored to from the kernel: see MAP): the
 * shared area comes back at once, in shared_block and shared_blocks.
 */
#define PMFUSE_DAX_TRACK	(1u << 3)

struct pmfuse_dax_req {
	uint64_t session;		/* MAP: out; the others: in */
	uint64_t first;			/* pages [first, first + npages) */
	uint64_t npages;
	uint64_t next;			/* out: first page not described yet */
	uint64_t size;			/* out: the file size */
	uint32_t flags;
	uint32_t count;			/* extents in ext[] */
	uint64_t shared_block;		/* MAP with TRACK, out: the session's shared area */
	uint64_t shared_blocks;
	struct pmfuse_dax_extent ext[PMFUSE_DAX_EXTENTS_MAX];
};

/*
 * The head of a writable session's shared area (one block; the bitmap of
 * the window's pages follows in the next blocks).  Written by both sides
 * with atomic operations.
 */
#define PMFUSE_DAX_SHARED_MAGIC	0x706d646178736871ull	/* "pmdaxshq" */
struct pmfuse_dax_shared {
	uint64_t magic;
	uint64_t faults;		/* library: write faults it served alone */
	uint64_t flush_bytes;		/* library: bytes its msync flushed */
	uint32_t cached;		/* daemon: the page cache may hold the file's pages */
	uint32_t stored;		/* library: a page was made writable since the daemon looked */
};

/* small: a fault is served in a signal handler, on the faulting thread's stack */
struct pmfuse_dax_fault {
	uint64_t session;
	uint64_t page;			/* in: the file page written */
	uint64_t block;			/* out: its region block */
	uint64_t size;			/* out: the file size */
	uint64_t shared_block;		/* out: the session's shared area */
	uint64_t shared_blocks;
};

#define PMFUSE_IOC_MAGIC	0xb7
#define PMFUSE_IOC_DAX_INFO	_IOR(PMFUSE_IOC_MAGIC, 1, struct pmfuse_dax_info)
#define PMFUSE_IOC_DAX_MAP	_IOWR(PMFUSE_IOC_MAGIC, 2, struct pmfuse_dax_req)
#define PMFUSE_IOC_DAX_EXTENTS	_IOWR(PMFUSE_IOC_MAGIC, 3, struct pmfuse_dax_req)
#define PMFUSE_IOC_DAX_FAULT	_IOWR(PMFUSE_IOC_MAGIC, 4, struct pmfuse_dax_fault)
#define PMFUSE_IOC_DAX_SYNC	_IOWR(PMFUSE_IOC_MAGIC, 5, struct pmfuse_dax_req)
#define PMFUSE_IOC_DAX_UNMAP	_IOWR(PMFUSE_IOC_MAGIC, 6, struct pmfuse_dax_req)

_Static_assert(sizeof(struct pmfuse_dax_info) == 4096, "one page");
_Static_assert(sizeof(struct pmfuse_dax_req) <= 4096, "one page");

#endif
