/*
 * libpmfuse-dax: direct maps of pmfuse files (pmfuse-dax(7)).
 *
 * A MAP_SHARED mapping of a file on a pmfuse mount, made by a process that
 * may open the mount's region itself (read-only for PROT_READ, read-write
 * for a writable map), maps the file's blocks straight from the region:
 * loads and stores reach persistent memory with no copy and no FUSE round
 * trip.  Holes read as zeros and allocate nothing; the first store to a
 * hole faults once to the daemon, which allocates it and marks it dirty;
 * the first store to a written page per msync cycle marks it dirty (a
 * fault the kernel resolves alone where it can track stores, else one the
 * library serves); msync flushes only the dirty pages.
 * Everything else -- another filesystem, MAP_PRIVATE, a process that may
 * not open the region -- is an ordinary mmap.
 *
 * Two ways to use it: link with -lpmfuse-dax and call these functions, or
 * preload it (LD_PRELOAD=libpmfuse-dax.so), which makes mmap, munmap,
 * msync, mprotect and mremap these.  MAP_SHARED_VALIDATE | MAP_SYNC is
 * accepted where the region's granularity allows it (cache line or byte);
 * then a store made durable with CPU flushes (pmem_persist) needs no msync.
 */
#ifndef PMFUSE_DAX_H
#define PMFUSE_DAX_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

void *pmfuse_dax_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int pmfuse_dax_munmap(void *addr, size_t len);
int pmfuse_dax_msync(void *addr, size_t len, int flags);
int pmfuse_dax_mprotect(void *addr, size_t len, int prot);

/* 1 if addr lies in a direct map, 0 if not. */
int pmfuse_dax_is_direct(const void *addr);

/*
 * 1 if addr lies in a writable direct map whose stores the kernel tracks
 * (userfaultfd's asynchronous write-protect and PAGEMAP_SCAN, Linux 6.7):
 * a store to a written page then faults in the kernel only, and msync
 * learns from the kernel which pages were stored to.  0 otherwise (each
 * page's first store per msync cycle faults through the library).
 */
int pmfuse_dax_is_tracked(const void *addr);

#ifdef __cplusplus
}
#endif

#endif
