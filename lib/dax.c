/*
 * libpmfuse-dax: direct maps of pmfuse files, the application's half of
 * DAX through FUSE (include/pmfuse/dax.h; the daemon's half is
 * daemon/core/dax.c, the protocol include/pmfuse/dax-ioctl.h).
 *
 * A direct map of file pages [first, first + n) is built in layers:
 *   base     the ordinary mmap of the pmfuse file, never writable: holes
 *            and unwritten extents read as zeros from the daemon's zero
 *            buffer and nothing is allocated (the zero page, seed 000); past
 *            the end of the file it raises SIGBUS, as the kernel does;
 *   overlay  every written extent mapped from the region file at its block
 *            (MAP_FIXED), read-only until written, 2 MiB-aligned extents at
 *            2 MiB-aligned addresses (PMD pages, seed 002).
 * A store to a page not yet writable raises SIGSEGV (SEGV_ACCERR).  On a
 * page the map shows from the region, the handler sets the page's bit in
 * the session's area shared with the daemon (the page's DIRTY mark,
 * dax_pfn_mkwrite, 003) and makes the page writable: no round trip.  On a
 * hole or an unwritten page it asks the daemon (FAULT), which allocates
 * (zeroed, persisted, committed: seed 001's rule) and answers with the
 * block, which the handler maps read-write.  The store is then retried.
 * msync write-protects the writable pages of its range first, flushes them
 * itself (cache-line flushes and one fence, or msync of its mapping of the
 * region at page granularity) and clears their bits (004): the next store
 * faults again.  Where the kernel can track stores (track_init), written
 * pages are writable from the start and the kernel keeps the marks instead:
 * no signal and no mprotect per page and sync cycle.  It asks the daemon only when the daemon said another
 * descriptor read the file through the page cache (which msync drops).
 *
 * Every map keeps its own descriptor of the file (a dup, close-on-exec): the
 * map outlives close(2) as POSIX says, and the process's exit releases the
 * open, which ends its sessions in the daemon.  The region is opened by
 * this process, with its own credentials: nobody gets access through the
 * library that they did not have.
 *
 * Signal handling: the library owns SIGSEGV while a direct map exists and
 * passes every fault that is not a direct map's write to the handler the
 * application installed (sigaction and signal are interposed), or to the
 * default action.
 */
/* off_t is 64 bits here anyway: this keeps mmap and mmap64 two symbols */
#undef _FILE_OFFSET_BITS
#include "pmfuse/dax.h"
#include "pmfuse/dax-ioctl.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define PAGE	PMFUSE_DAX_BLOCK
#define RECENT	64
#define HUGE	(2ull << 20)
#define GIANT	(1ull << 30)
#define MAX_MAPS 4096

#define EXPORT __attribute__((visibility("default")))

/* the kernel's calls, bypassing whatever is interposed (this library too) */
static void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static int sys_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

static int sys_mprotect(void *addr, size_t len, int prot)
{
	return (int)syscall(SYS_mprotect, addr, len, prot);
}

/* A session in the daemon, shared by the pieces a partial munmap leaves. */
struct session {
	uint64_t id;
	int fd;				/* our descriptor of the file */
	int refs;			/* under maps_lock */
	uint64_t first;			/* its window's first file page */
	uint32_t granularity;		/* the region's (PMFUSE_DAX_GRAN_*) */
	int rfd;			/* the region (read-write for a writable map) */
	/* writable sessions, from their first fault: the area shared with the daemon */
	struct pmfuse_dax_shared *_Atomic shared;
	size_t shared_len;		/* its head, then a bit per page (page - first) */
};

struct dmap {
	char *addr;
	size_t len;			/* whole pages */
	uint64_t first;			/* file page at addr */
	int prot;			/* what the application asked for */
	int rfd;			/* the region, opened by this process */
	bool inherited;			/* a child after fork(): the parent ends the session */
	bool track;			/* stores tracked by the kernel (see track_init) */
	unsigned track_msyncs;		/* msyncs that scanned, this epoch (see track_drop) */
	unsigned track_drops;		/* windows they made read-only again */
	struct session *sess;
	pthread_mutex_t lock;		/* granted bits and page protections */
	_Atomic long owner;		/* the thread holding lock, 0 if none */
	/* bit per page, three bitmaps in one allocation (granted owns it) */
	uint64_t *granted;		/* mapped read-write */
	uint64_t *data;			/* mapped from the region */
	uint64_t *hot;			/* kept writable across msync (see sync_range) */
	uint64_t *active;		/* tracking: bit per window of WIN pages (see track_activate) */
	unsigned nhot;
	/* pages recently write-protected by msync, and when (the msync count) */
	struct { uint64_t page; uint64_t gen; } recent[RECENT];
	unsigned nrecent;
	uint64_t gen;			/* msyncs that flushed something */
};

/*
 * A page written again within a few msyncs of being write-protected (a
 * database's meta pages, the pages its copy-on-write tree cycles through)
 * stays writable across msync instead of taking a write-protect and a
 * fault per cycle: it is then simply flushed at every msync of its range,
 * whether stored to or not.  At most HOT_MAX per map.  (Measured with LMDB,
 * 20,000 commits: a fault and its mprotects cost ~7 us here, the flush of a
 * clean 4 KiB page ~0.3 us; 32 pages and a window of 8 msyncs came out best
 * of 8-128 and 2-32.)
 */
#define HOT_MAX 32
#define HOT_WINDOW 8		/* msyncs */
#define HOT_EPOCH 256		/* msyncs after which hot pages go back to faulting */
#ifndef WIN
#define WIN	512		/* pages per tracking window: 2 MiB */
#endif
#ifndef DIRECT_PAGES
#define DIRECT_PAGES	4	/* an msync of at most this many pages flushes without asking */
#endif

static uint64_t *bitmaps(uint64_t npages)
{
	uint64_t nwin = (npages + WIN - 1) / WIN;

	return calloc(3 * ((npages + 63) / 64) + (nwin + 63) / 64 + 1, sizeof(uint64_t));
}

static void set_bitmaps(struct dmap *m, uint64_t *bm, uint64_t npages)
{
	uint64_t w = (npages + 63) / 64;

	m->granted = bm;
	m->data = bm + w;
	m->hot = bm + 2 * w;
	m->active = bm + 3 * w;
}

static long self_tid(void)
{
	static __thread long tid;

	if (!tid)
		tid = syscall(SYS_gettid);
	return tid;
}

static void map_lock(struct dmap *m)
{
	pthread_mutex_lock(&m->lock);
	atomic_store(&m->owner, self_tid());
}

static void map_unlock(struct dmap *m)
{
	atomic_store(&m->owner, 0);
	pthread_mutex_unlock(&m->lock);
}

static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dmap *_Atomic maps[MAX_MAPS];
static _Atomic int maps_hwm;		/* slots [0, hwm) may be in use */
static _Atomic int nmaps;

/* What is known of a pmfuse mount (by st_dev of its files). */
struct mount {
	dev_t dev;
	bool pmfuse;
	struct pmfuse_dax_info info;
	int rfd[2];			/* region opened read-only, read-write; -1 not yet */
	bool denied[2];			/* that open failed: ordinary maps */
};

#define MAX_MOUNTS 16
static struct mount mounts[MAX_MOUNTS];
static int nmounts;

/* SIGSEGV: ours, and the application's */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static struct sigaction app_segv;	/* under segv_lock */
static bool segv_installed;
static pthread_mutex_t segv_lock = PTHREAD_MUTEX_INITIALIZER;

static inline bool test_bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

/* The first set bit at or after i and before n, or n. */
static uint64_t next_bit(const uint64_t *bm, uint64_t i, uint64_t n)
{
	while (i < n) {
		uint64_t w = bm[i / 64] >> (i % 64);
		if (w) {
			i += (uint64_t)__builtin_ctzll(w);
			return i < n ? i : n;
		}
		i += 64 - i % 64;
	}
	return n;
}

/* The end of the run of set bits that starts at i (bit i set), at most n. */
static uint64_t run_end(const uint64_t *bm, uint64_t i, uint64_t n)
{
	while (i < n && test_bit(bm, i))
		i++;
	return i;
}

static inline void set_bit(uint64_t *bm, uint64_t i, bool v)
{
	if (v)
		bm[i / 64] |= 1ull << (i % 64);
	else
		bm[i / 64] &= ~(1ull << (i % 64));
}

static struct dmap *find_map(const void *addr)
{
	int hwm = atomic_load(&maps_hwm);

	for (int i = 0; i < hwm; i++) {
		struct dmap *m = atomic_load(&maps[i]);
		if (m && (const char *)addr >= m->addr && (const char *)addr < m->addr + m->len)
			return m;
	}
	return NULL;
}

/* under maps_lock */
static int add_map(struct dmap *m)
{
	for (int i = 0; i < MAX_MAPS; i++)
		if (!atomic_load(&maps[i])) {
			atomic_store(&maps[i], m);
			if (i >= atomic_load(&maps_hwm))
				atomic_store(&maps_hwm, i + 1);
			atomic_fetch_add(&nmaps, 1);
			return 0;
		}
	return -1;
}

/* under maps_lock */
static void remove_map(struct dmap *m)
{
	for (int i = 0; i < atomic_load(&maps_hwm); i++)
		if (atomic_load(&maps[i]) == m) {
			atomic_store(&maps[i], NULL);
			atomic_fetch_sub(&nmaps, 1);
			return;
		}
}

static void chain_segv(int sig, siginfo_t *si, void *ctx)
{
	struct sigaction app;

	pthread_mutex_lock(&segv_lock);
	app = app_segv;
	pthread_mutex_unlock(&segv_lock);
	if ((app.sa_flags & SA_SIGINFO) && app.sa_sigaction) {
		app.sa_sigaction(sig, si, ctx);
	} else if (app.sa_handler != SIG_DFL && app.sa_handler != SIG_IGN) {
		app.sa_handler(sig);
	} else {
		/* the default action: retried, the access kills the process as it would have */
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		sigemptyset(&dfl.sa_mask);
		real_sigaction(SIGSEGV, &dfl, NULL);
	}
}

/* CPU cache flushes: clwb where there is one, else clflushopt, else clflush. */
static int flush_insn = -1;	/* 2 clwb, 1 clflushopt, 0 clflush */

static void flush_lines(const char *p, size_t len)
{
	const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63), *end = p + len;

#if defined(__x86_64__)
	if (flush_insn == 2)
		for (; c < end; c += 64)
			__asm__ volatile(".byte 0x66; xsaveopt %0" : "+m"(*(volatile char *)c));
	else if (flush_insn == 1)
		for (; c < end; c += 64)
			__asm__ volatile(".byte 0x66; clflush %0" : "+m"(*(volatile char *)c));
	else
		for (; c < end; c += 64)
			__asm__ volatile("clflush %0" : "+m"(*(volatile char *)c));
#else
	(void)c;
	(void)end;
#endif
}

static void fence(void)
{
#if defined(__x86_64__)
	__asm__ volatile("sfence" ::: "memory");
#else
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Make [p, p + len) of a region mapping durable, but for the final fence. */
static int persist_run(const struct session *s, char *p, size_t len)
{
	switch (s->granularity) {
	case PMFUSE_DAX_GRAN_BYTE:
		return 0;	/* eADR: visible is durable */
	case PMFUSE_DAX_GRAN_CACHE_LINE:
		flush_lines(p, len);
		return 0;
	default:		/* a region file: its pages are written back by msync */
		return (int)syscall(SYS_msync, p, len, MS_SYNC);
	}
}

/*
 * Store tracking without faults of our own, where the kernel has
 * userfaultfd's asynchronous write-protect and PAGEMAP_SCAN (Linux 6.7).
 * A writable map's written pages are registered for write-protect and
 * protected at mmap.  They become writable a window (WIN pages, 2 MiB) at
 * a time: the first store into a window faults through the handler, which
 * sets the bits of the window's written pages for the daemon and makes
 * them writable (one mprotect).  From then on the first store to a page
 * after its protection takes a fault the kernel resolves alone (it clears
 * the page's protection: the page's DIRTY mark, kept in its page table
 * entry).  msync asks the kernel, in one call per run of writable pages of
 * the active windows in its range, which pages were stored to and
 * protects them again atomically (the TOWRITE snapshot), flushes those,
 * and fences once.  An active window msync finds untouched is made
 * read-only again and its bits cleared, so msync of a whole large map
 * scans only the windows stored to lately, as the bitmap walk of the
 * faulting scheme does.  Not on a devdax region (write-protecting a PMD
 * mapping splits it, which a devdax aligned to 2 MiB refuses), and not
 * with PMFUSE_DAX_TRACK=0.  The daemon cannot see the page-table marks:
 * for it every page of an active window is DIRTY (an fsync from elsewhere,
 * or a session that ends without munmap, flushes them all).
 */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#define TRACK_FEATURE_WP_UNPOPULATED (1ull << 13)
#define TRACK_FEATURE_WP_ASYNC (1ull << 15)

/* <linux/fs.h> of Linux 6.7 (the build host's headers may be older) */
struct track_region {
	uint64_t start, end, categories;
};
struct track_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define TRACK_PAGEMAP_SCAN	_IOWR('f', 16, struct track_scan_arg)
#define TRACK_PAGE_IS_WRITTEN	(1ull << 1)
#define TRACK_SCAN_WP_MATCHING	(1ull << 0)
#define TRACK_SCAN_CHECK_WPASYNC (1ull << 1)

static int track_uffd = -1, track_pagemap = -1;
static pthread_once_t track_once = PTHREAD_ONCE_INIT;

static int high_fd(int fd)
{
	int h = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 512) : -1;

	if (h < 0)
		return fd;
	close(fd);
	return h;
}

static void track_init(void)
{
	const char *env = getenv("PMFUSE_DAX_TRACK");
	uint64_t want[2] = { TRACK_FEATURE_WP_ASYNC | TRACK_FEATURE_WP_UNPOPULATED,
			     TRACK_FEATURE_WP_ASYNC };
	int u = -1;

	if (env && strcmp(env, "0") == 0)
		return;
	for (int k = 0; k < 2 && u < 0; k++) {
		/* user-mode faults only: what an unprivileged process may have */
		u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
		if (u < 0)
			return;
		struct uffdio_api api = { .api = UFFD_API, .features = want[k] };
		if (ioctl(u, UFFDIO_API, &api) || !(api.features & TRACK_FEATURE_WP_ASYNC)) {
			close(u);
			u = -1;
		}
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	struct track_scan_arg probe = { .size = sizeof(probe) };
	if (u < 0 || pm < 0 || ioctl(pm, TRACK_PAGEMAP_SCAN, &probe) < 0) {
		if (u >= 0)
			close(u);
		if (pm >= 0)
			close(pm);
		return;
	}
	track_uffd = high_fd(u);
	track_pagemap = high_fd(pm);
}

static bool track_available(void)
{
	pthread_once(&track_once, track_init);
	return track_uffd >= 0;
}

/* [a, a + n) registered for write-protect, and protected if protect: 0 or -1. */
static int track_range(char *a, size_t n, bool protect)
{
	struct uffdio_register reg = { .range = { (uint64_t)a, n }, .mode = UFFDIO_REGISTER_MODE_WP };
	struct uffdio_writeprotect wp = { .range = { (uint64_t)a, n },
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP };

	if (ioctl(track_uffd, UFFDIO_REGISTER, &reg))
		return -1;
	return protect && ioctl(track_uffd, UFFDIO_WRITEPROTECT, &wp) ? -1 : 0;
}

/*
 * The pages of [a, a + n) stored to since their last protection, each
 * protected again as it is reported: fn(start, len, arg) per run.  The
 * number of pages, or -1 (the range is not tracked: the tracking
 * descriptor was closed, or a child inherited the map without it).
 */
static int64_t track_scan(char *a, size_t n, void (*fn)(char *p, size_t len, void *arg),
			  void *arg)
{
	struct track_region vec[32];
	struct track_scan_arg sa = {
		.size = sizeof(sa), .flags = TRACK_SCAN_WP_MATCHING | TRACK_SCAN_CHECK_WPASYNC,
		.start = (uint64_t)a, .end = (uint64_t)(a + n), .vec = (uint64_t)vec,
		.vec_len = sizeof(vec) / sizeof(vec[0]), .category_mask = TRACK_PAGE_IS_WRITTEN,
		.return_mask = TRACK_PAGE_IS_WRITTEN,
	};
	int64_t pages = 0;

	for (;;) {
		long got = ioctl(track_pagemap, TRACK_PAGEMAP_SCAN, &sa);
		if (got < 0)
			return -1;
		for (long k = 0; k < got; k++) {
			fn((char *)vec[k].start, (size_t)(vec[k].end - vec[k].start), arg);
			pages += (int64_t)((vec[k].end - vec[k].start) / PAGE);
		}
		if (sa.walk_end >= sa.end || sa.walk_end <= sa.start)
			return pages;
		sa.start = sa.walk_end;	/* the vector was full */
	}
}

/* The page's bit in the shared area (which exists: the session was granted a page). */
static inline void shared_bit(struct session *s, uint64_t page, bool set)
{
	uint64_t *bits = (uint64_t *)((char *)atomic_load(&s->shared) + PAGE);
	uint64_t i = page - s->first, b = 1ull << (i % 64);

	if (set)
		__atomic_fetch_or(&bits[i / 64], b, __ATOMIC_RELEASE);
	else
		__atomic_fetch_and(&bits[i / 64], ~b, __ATOMIC_RELEASE);
}

/*
 * The shared area the daemon made at the session's first fault, mapped
 * once for all the session's pieces (each has its own lock): 0 or -1.
 */
static int map_shared(struct session *s, uint64_t block, uint64_t blocks)
{
	if (atomic_load(&s->shared) || !blocks)
		return atomic_load(&s->shared) ? 0 : -1;
	size_t len = blocks * PAGE;
	struct pmfuse_dax_shared *sh = sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s->rfd,
						(off_t)(block * PAGE));
	if (sh == MAP_FAILED)
		return -1;
	if (__atomic_load_n(&sh->magic, __ATOMIC_ACQUIRE) != PMFUSE_DAX_SHARED_MAGIC) {
		sys_munmap(sh, len);
		return -1;
	}
	struct pmfuse_dax_shared *none = NULL;
	s->shared_len = len;	/* the same whoever wins */
	if (!atomic_compare_exchange_strong(&s->shared, &none, sh))
		sys_munmap(sh, len);	/* another piece's thread was first */
	return 0;
}

/*
 * A tracking map's written pages (mapped read-only): registered and
 * protected; writable a window at a time (track_activate).  On failure the
 * map tracks nothing (each store then faults through the handler, as on a
 * kernel without tracking).
 */
static void track_written(struct dmap *m)
{
	uint64_t n = m->len / PAGE;

	for (uint64_t i = 0; (i = next_bit(m->data, i, n)) < n;) {
		uint64_t j = run_end(m->data, i, n);
		if (!atomic_load(&m->sess->shared) ||
		    track_range(m->addr + i * PAGE, (j - i) * PAGE, true)) {
			m->track = false;
			return;
		}
		i = j;
	}
}

/* The end of window w of m (its first page is w * WIN). */
static uint64_t window_end(const struct dmap *m, uint64_t w)
{
	uint64_t n = m->len / PAGE, hi = (w + 1) * WIN;

	return hi < n ? hi : n;
}

/*
 * A store into window w of a tracking map (m->lock held): its written
 * pages DIRTY for the daemon, then writable.  0, or -1 (SIGBUS).
 */
static int track_activate(struct dmap *m, uint64_t w)
{
	struct pmfuse_dax_shared *sh = atomic_load(&m->sess->shared);
	uint64_t lo = w * WIN, hi = window_end(m, w);

	if (!sh)
		return -1;
	for (uint64_t i = lo; (i = next_bit(m->data, i, hi)) < hi; i++)
		if (!test_bit(m->granted, i))
			shared_bit(m->sess, m->first + i, true);
	__atomic_store_n(&sh->stored, 1, __ATOMIC_RELEASE);
	set_bit(m->active, w, true);	/* before any page is writable: msync scans it */
	/* marked first, writable after: the daemon's fsync never misses a page */
	for (uint64_t i = lo; (i = next_bit(m->data, i, hi)) < hi;) {
		uint64_t j = run_end(m->data, i, hi);
		if (sys_mprotect(m->addr + i * PAGE, (j - i) * PAGE, m->prot))
			return -1;
		for (uint64_t k = i; k < j; k++)
			set_bit(m->granted, k, true);
		i = j;
	}
	return 0;
}

/* A write fault in m at page index i (m->lock held): 0, or -1 to raise SIGBUS. */
static int grant(struct dmap *m, uint64_t i)
{
	struct session *s = m->sess;
	struct pmfuse_dax_shared *sh = atomic_load(&s->shared);

	if (test_bit(m->granted, i))
		return 0;	/* another thread got it first */
	if (m->track && test_bit(m->data, i))
		return track_activate(m, i / WIN);
	/* written again soon after an msync write-protected it: hot */
	for (unsigned k = 0; k < m->nrecent && m->nhot < HOT_MAX; k++)
		if (m->recent[k].page == i && m->gen - m->recent[k].gen <= HOT_WINDOW) {
			set_bit(m->hot, i, true);
			m->nhot++;
			break;
		}
	if (sh && test_bit(m->data, i)) {
		/* dirty first, writable after: the daemon's fsync never misses it */
		shared_bit(s, m->first + i, true);
		__atomic_store_n(&sh->stored, 1, __ATOMIC_RELEASE);
		if (sys_mprotect(m->addr + i * PAGE, PAGE, m->prot))
			return -1;
		__atomic_fetch_add(&sh->faults, 1, __ATOMIC_RELAXED);
	} else {
		struct pmfuse_dax_fault f = { .session = s->id, .page = m->first + i };
		if (ioctl(s->fd, PMFUSE_IOC_DAX_FAULT, &f) < 0 ||
		    map_shared(s, f.shared_block, f.shared_blocks))
			return -1;
		if (sys_mmap(m->addr + i * PAGE, PAGE, m->prot, MAP_SHARED | MAP_FIXED, m->rfd,
			     (off_t)(f.block * PAGE)) == MAP_FAILED)
			return -1;
		/* tracked, unprotected: the next msync finds it stored to */
		if (m->track && track_range(m->addr + i * PAGE, PAGE, false))
			m->track = false;	/* msync flushes what it cannot see, all granted pages */
		if (m->track)
			set_bit(m->active, i / WIN, true);
		set_bit(m->data, i, true);
	}
	set_bit(m->granted, i, true);
	return 0;
}

static void segv_handler(int sig, siginfo_t *si, void *ctx)
{
	int saved = errno;
	struct dmap *m = si->si_code == SEGV_ACCERR ? find_map(si->si_addr) : NULL;

	/*
	 * Not a direct map's write -- or a fault while this very thread holds
	 * the map (a store from a signal handler that interrupted the library):
	 * waiting would never end, so it is the application's fault to handle.
	 */
	if (!m || !(m->prot & PROT_WRITE) || atomic_load(&m->owner) == self_tid()) {
		errno = saved;
		chain_segv(sig, si, ctx);
		return;
	}
	map_lock(m);
	uint64_t i = (uint64_t)((char *)si->si_addr - m->addr) / PAGE;
	int ret = grant(m, i);
	map_unlock(m);
	if (ret) {	/* past the end of the file, no space, no daemon: as the kernel, SIGBUS */
		char msg[160];
		int n = snprintf(msg, sizeof(msg), "libpmfuse-dax: write fault at file page %llu: %s\n",
				 (unsigned long long)(m->first + i), strerror(errno));
		if (n > 0)
			(void)!write(2, msg, (size_t)n);
		syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGBUS);
	}
	errno = saved;
}

static void install_segv(void)
{
	pthread_mutex_lock(&segv_lock);
	if (!segv_installed) {
		struct sigaction sa = { .sa_sigaction = segv_handler, .sa_flags = SA_SIGINFO | SA_RESTART };
		sigemptyset(&sa.sa_mask);
		segv_installed = real_sigaction(SIGSEGV, &sa, &app_segv) == 0;
	}
	pthread_mutex_unlock(&segv_lock);
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	if (!real_sigaction)
		real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))
			dlsym(RTLD_NEXT, "sigaction");
	if (sig != SIGSEGV)
		return real_sigaction(sig, act, old);
	pthread_mutex_lock(&segv_lock);
	if (!segv_installed) {
		pthread_mutex_unlock(&segv_lock);
		return real_sigaction(sig, act, old);
	}
	if (old)
		*old = app_segv;
	if (act)
		app_segv = *act;
	pthread_mutex_unlock(&segv_lock);
	return 0;
}

EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	struct sigaction sa = { .sa_handler = handler, .sa_flags = SA_RESTART }, old;

	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, &old))
		return SIG_ERR;
	return old.sa_handler;
}

static void after_fork_child(void)
{
	/* the parent's sessions are the parent's: the child does not end them */
	for (int i = 0; i < atomic_load(&maps_hwm); i++) {
		struct dmap *m = atomic_load(&maps[i]);
		if (m)
			m->inherited = true;
	}
}

__attribute__((constructor)) static void init(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;
	flush_insn = 0;
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
		flush_insn = (b >> 24) & 1 ? 2 : (b >> 23) & 1 ? 1 : 0;
#endif
	if (!real_sigaction)
		real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))
			dlsym(RTLD_NEXT, "sigaction");
	pthread_atfork(NULL, NULL, after_fork_child);
}

/*
 * The region behind fd's pmfuse mount, opened by this process for
 * writing or not; -1 when fd is not on pmfuse or the region may not be
 * opened (an ordinary map then).
 */
static pthread_mutex_t mounts_lock = PTHREAD_MUTEX_INITIALIZER;

static int region_for(int fd, const struct stat *st, bool write, struct pmfuse_dax_info *out)
{
	struct mount *mt = NULL;
	int rfd = -1;

	pthread_mutex_lock(&mounts_lock);
	for (int i = 0; i < nmounts; i++)
		if (mounts[i].dev == st->st_dev)
			mt = &mounts[i];
	if (!mt) {
		struct statfs sfs;
		mt = &mounts[nmounts < MAX_MOUNTS ? nmounts++ : MAX_MOUNTS - 1];
		memset(mt, 0, sizeof(*mt));
		mt->dev = st->st_dev;
		mt->rfd[0] = mt->rfd[1] = -1;
		mt->pmfuse = fstatfs(fd, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC &&
			     ioctl(fd, PMFUSE_IOC_DAX_INFO, &mt->info) == 0 &&
			     mt->info.version == PMFUSE_DAX_VERSION && mt->info.block_size == PAGE;
	}
	if (mt->pmfuse && mt->rfd[write] < 0 && !mt->denied[write]) {
		int r = open(mt->info.region, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		struct stat rst;
		if (r >= 0 && (fstat(r, &rst) || rst.st_dev != mt->info.region_dev ||
			       rst.st_ino != mt->info.region_ino)) {
			close(r);	/* not the region the daemon maps */
			r = -1;
		}
		mt->rfd[write] = r;
		mt->denied[write] = r < 0;
	}
	if (mt->pmfuse) {
		rfd = mt->rfd[write];
		*out = mt->info;
	}
	pthread_mutex_unlock(&mounts_lock);
	return rfd;
}

/* Pages [i, i + n) of m mapped from the region at block, with prot. */
static int overlay(struct dmap *m, uint64_t i, uint64_t n, uint64_t block, int prot)
{
	return sys_mmap(m->addr + i * PAGE, n * PAGE, prot, MAP_SHARED | MAP_FIXED, m->rfd,
			(off_t)(block * PAGE)) == MAP_FAILED ? -1 : 0;
}

/* The largest page size (1 GiB, 2 MiB or 0) e can be mapped with, aligned in the region. */
static uint64_t extent_align(const struct pmfuse_dax_extent *e)
{
	uint64_t lo = e->block * PAGE, hi = (e->block + e->npages) * PAGE;
	uint64_t sizes[2] = { GIANT, HUGE };

	for (int k = 0; k < 2; k++)
		if ((lo + sizes[k] - 1) / sizes[k] * sizes[k] + sizes[k] <= hi)
			return sizes[k];
	return 0;
}

/*
 * An address for len bytes at which the extent of r that can take the
 * largest pages lands aligned as it is in the region -- 1 GiB (PUD pages
 * on a devdax region) or 2 MiB (PMD) -- and with it every extent whose
 * skew is the same (hint: NULL for the kernel's choice).
 */
static void *huge_hint(const struct pmfuse_dax_req *r, uint64_t first, size_t len, void **resv,
		       size_t *resv_len)
{
	const struct pmfuse_dax_extent *best = NULL;
	uint64_t align = 0;

	for (uint32_t i = 0; i < r->count; i++) {
		uint64_t a = extent_align(&r->ext[i]);
		if (a > align) {
			align = a;
			best = &r->ext[i];
		}
	}
	if (!best)
		return NULL;
	/* want addr + (page - first) * PAGE == block * PAGE (mod align) */
	char *area = sys_mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
			      MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return NULL;
	uint64_t skew = ((best->block - best->page) * PAGE) % align;
	uint64_t want = (skew + first * PAGE) % align;
	uint64_t a = (uint64_t)area, at = a - a % align + want;
	if (at < a)
		at += align;
	*resv = area;
	*resv_len = len + align;
	return (void *)at;
}

static void session_put(struct session *s, bool end)
{
	pthread_mutex_lock(&maps_lock);
	bool last = --s->refs == 0;
	pthread_mutex_unlock(&maps_lock);
	if (!last)
		return;
	/* the daemon frees the shared area at UNMAP: no longer ours to reach by then */
	if (atomic_load(&s->shared))
		sys_munmap(atomic_load(&s->shared), s->shared_len);
	if (end) {
		struct pmfuse_dax_req *r = calloc(1, sizeof(*r));
		if (r) {
			r->session = s->id;
			(void)ioctl(s->fd, PMFUSE_IOC_DAX_UNMAP, r);
			free(r);
		}
	}
	close(s->fd);
	free(s);
}

/*
 * The map's own descriptor of the file: a new open with O_DIRECT, so the
 * base map's reads of holes bypass the page cache (they never make msync
 * ask the daemon to drop it); a dup where that cannot be had.  High and
 * close-on-exec, out of the application's way.
 */
static int session_fd(int fd, bool write)
{
	char path[64];
	int nfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int o = open(path, (write ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
	if (o >= 0) {
		struct stat a, b;
		if (fstat(o, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino) {
			nfd = fcntl(o, F_DUPFD_CLOEXEC, 512);
			if (nfd >= 0) {
				close(o);
				return nfd;
			}
			return o;
		}
		close(o);
	}
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 512);
	return nfd >= 0 ? nfd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

static void *plain_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return sys_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *pmfuse_dax_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	int type = flags & MAP_TYPE;
	struct stat st;
	struct pmfuse_dax_info info;

	if (fd < 0 || (flags & MAP_ANONYMOUS) || (type != MAP_SHARED && type != MAP_SHARED_VALIDATE) ||
	    len == 0 || off < 0 || (off % PAGE) || prot == PROT_NONE || fstat(fd, &st) ||
	    !S_ISREG(st.st_mode))
		return plain_mmap(addr, len, prot, flags, fd, off);
	int acc = fcntl(fd, F_GETFL);
	bool write = prot & PROT_WRITE;
	/* write implies read on x86 (and the flushes of msync read the pages) */
	if (write)
		prot |= PROT_READ;
	/* what the kernel would refuse, it refuses (EACCES) */
	if (acc < 0 || (acc & O_ACCMODE) == O_WRONLY || (write && (acc & O_ACCMODE) != O_RDWR))
		return plain_mmap(addr, len, prot, flags, fd, off);
	int rfd = region_for(fd, &st, write, &info);
	if (rfd < 0)
		return plain_mmap(addr, len, prot, flags, fd, off);
	if (type == MAP_SHARED_VALIDATE && (flags & MAP_SYNC) &&
	    info.granularity == PMFUSE_DAX_GRAN_PAGE) {
		/* a page-granular region needs msync: as the kernel for a non-DAX file */
		errno = EOPNOTSUPP;
		return MAP_FAILED;
	}
	int keep = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_NORESERVE);
	size_t plen = (len + PAGE - 1) / PAGE * PAGE;
	uint64_t first = (uint64_t)off / PAGE, npages = plen / PAGE;
	struct pmfuse_dax_req *r = calloc(1, sizeof(*r));
	struct session *s = calloc(1, sizeof(*s));
	struct dmap *m = calloc(1, sizeof(*m));
	uint64_t *granted = bitmaps(npages);
	void *resv = NULL, *ret = MAP_FAILED;
	size_t resv_len = 0;
	int err = ENOMEM;

	if (!r || !s || !m || !granted)
		goto fail;
	set_bitmaps(m, granted, npages);
	s->fd = session_fd(fd, write);
	if (s->fd < 0) {
		err = errno;
		goto fail;
	}
	s->refs = 1;
	s->first = first;
	s->granularity = info.granularity;
	r->first = first;
	r->npages = npages;
	r->flags = write ? PMFUSE_DAX_WRITE : 0;
	struct stat rst;
	m->track = write && track_available() && fstat(rfd, &rst) == 0 && S_ISREG(rst.st_mode);
	if (m->track)
		r->flags |= PMFUSE_DAX_TRACK;
	if (ioctl(s->fd, PMFUSE_IOC_DAX_MAP, r) < 0) {
		/* the daemon would not (an immutable file, ...): the kernel's answer then */
		close(s->fd);
		free(r);
		free(s);
		free(m);
		free(granted);
		return plain_mmap(addr, len, prot, flags, fd, off);
	}
	s->id = r->session;
	s->rfd = rfd;
	/* without the shared area no page may be writable before it is marked */
	if (m->track && r->shared_blocks && map_shared(s, r->shared_block, r->shared_blocks))
		m->track = false;
	if (!(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && plen >= HUGE) {
		void *hint = huge_hint(r, first, plen, &resv, &resv_len);
		if (hint) {
			addr = hint;
			keep |= MAP_FIXED;
		}
	}
	/* the base: the file itself, never writable (holes, and SIGBUS past the end) */
	m->addr = sys_mmap(addr, plen, prot & ~PROT_WRITE, MAP_SHARED | keep, s->fd, off);
	if (m->addr == MAP_FAILED) {
		err = errno;
		m->addr = NULL;
		goto fail_session;
	}
	if (resv) {	/* the reservation's parts the map does not use */
		char *a = resv, *e = a + resv_len;
		if (m->addr > a)
			sys_munmap(a, (size_t)(m->addr - a));
		if (m->addr + plen < e)
			sys_munmap(m->addr + plen, (size_t)(e - (m->addr + plen)));
		resv = NULL;
	}
	m->len = plen;
	m->first = first;
	m->prot = prot;
	m->rfd = rfd;
	m->sess = s;
	pthread_mutex_init(&m->lock, NULL);
	for (;;) {
		for (uint32_t i = 0; i < r->count; i++) {
			const struct pmfuse_dax_extent *e = &r->ext[i];
			if (e->page < first || e->page + e->npages > first + npages ||
			    overlay(m, e->page - first, e->npages, e->block, prot & ~PROT_WRITE)) {
				err = errno ? errno : EIO;
				goto fail_map;
			}
			for (uint64_t k = e->page - first; k < e->page - first + e->npages; k++)
				set_bit(m->data, k, true);
		}
		if (!(r->flags & PMFUSE_DAX_MORE))
			break;
		r->first = r->next;
		if (ioctl(s->fd, PMFUSE_IOC_DAX_EXTENTS, r) < 0) {
			err = errno;
			goto fail_map;
		}
	}
	if (m->track)
		track_written(m);
	if (write)
		install_segv();
	pthread_mutex_lock(&maps_lock);
	int full = add_map(m);
	pthread_mutex_unlock(&maps_lock);
	if (full) {
		err = ENOMEM;
		goto fail_map;
	}
	free(r);
	return m->addr;

fail_map:
	sys_munmap(m->addr, plen);
fail_session:
	if (resv)
		sys_munmap(resv, resv_len);
	r->session = s->id;
	(void)ioctl(s->fd, PMFUSE_IOC_DAX_UNMAP, r);
	close(s->fd);
fail:
	free(r);
	free(s);
	free(m);
	free(granted);
	errno = err;
	return ret;
}

/*
 * msync of pages [i, j) of m (m->lock held), as dax_writeback_mapping_range:
 * the writable pages are write-protected first (a store from now on faults
 * and marks its page again), then flushed, one fence for all, then their
 * bits cleared.  The daemon is asked only when a descriptor read the file
 * through the page cache since the last time (it drops those copies) --
 * with it, it flushes what was written through the FUSE path in the range.
 */
static int sync_ask_daemon(struct dmap *m, uint64_t i, uint64_t j);

struct track_flush {
	const struct session *s;
	uint64_t bytes;
	int ret;
};

static void track_flush_run(char *p, size_t len, void *arg)
{
	struct track_flush *tf = arg;

	if (persist_run(tf->s, p, len))
		tf->ret = -1;
	tf->bytes += len;
}

/* The writable pages of [lo, hi) scanned, what was stored to flushed: pages, or -1. */
static int64_t track_scan_granted(struct dmap *m, uint64_t lo, uint64_t hi, struct track_flush *tf)
{
	int64_t stored = 0;
	bool failed = false;

	for (uint64_t p = lo; (p = next_bit(m->granted, p, hi)) < hi;) {
		uint64_t q = run_end(m->granted, p, hi);
		int64_t got = track_scan(m->addr + p * PAGE, (q - p) * PAGE, track_flush_run, tf);
		if (got < 0) {	/* the kernel cannot tell: all of it */
			track_flush_run(m->addr + p * PAGE, (q - p) * PAGE, tf);
			got = (int64_t)(q - p);
			failed = true;
		}
		stored += got;
		p = q;
	}
	return failed ? -1 : stored;
}

/* The writable pages of [lo, hi) of m given prot: 0 or -1. */
static int window_prot(struct dmap *m, uint64_t lo, uint64_t hi, int prot)
{
	for (uint64_t p = lo; (p = next_bit(m->granted, p, hi)) < hi;) {
		uint64_t q = run_end(m->granted, p, hi);
		if (sys_mprotect(m->addr + p * PAGE, (q - p) * PAGE, prot))
			return -1;
		p = q;
	}
	return 0;
}

/*
 * An active window msync found untouched (m->lock held): read-only again,
 * then scanned once more for a store that came in between (flushed, and
 * the window stays active), else its pages are no longer DIRTY.
 */
static bool track_deactivate(struct dmap *m, uint64_t w, struct track_flush *tf, int64_t *stored)
{
	uint64_t lo = w * WIN, hi = window_end(m, w);
	int64_t late = -1;

	if (window_prot(m, lo, hi, m->prot & ~PROT_WRITE) == 0)
		late = track_scan_granted(m, lo, hi, tf);
	if (late != 0) {
		/* a store came in between (flushed now), or no telling: it stays
		 * active, and a granted page is a writable page */
		*stored += late > 0 ? late : 0;
		(void)window_prot(m, lo, hi, m->prot);
		return false;
	}
	for (uint64_t p = lo; (p = next_bit(m->granted, p, hi)) < hi; p++) {
		shared_bit(m->sess, m->first + p, false);
		set_bit(m->granted, p, false);
	}
	set_bit(m->active, w, false);
	return true;
}

/*
 * A map whose msyncs keep finding the windows stored into last time
 * untouched (every store to a new place, then msync of the whole map: fio's
 * mmap engine with fsync=1) pays a window's activation, scans and return to
 * read-only per store: faulting page by page costs less there.  After
 * TRACK_EPOCH scanning msyncs of which more than half made a window
 * read-only, the map stops tracking (m->lock held): unregistered (which
 * drops the kernel's marks), its writable pages stay writable, DIRTY, and
 * the next msync write-protects and flushes them as the faulting scheme
 * does.
 */
#define TRACK_EPOCH 64

static void track_drop(struct dmap *m)
{
	struct uffdio_range r = { (uint64_t)m->addr, m->len };

	if (ioctl(track_uffd, UFFDIO_UNREGISTER, &r))
		return;		/* still registered: go on tracking */
	m->track = false;
}

/*
 * msync of pages [i, j) of a tracking map (m->lock held): in each active
 * window, the pages the kernel saw stored to are protected again and
 * flushed, one fence for all; their bits stay set while the window is
 * active.  A window wholly in the range with nothing stored to is made
 * read-only again.  A run the kernel cannot tell about is flushed whole.
 */
static int sync_tracked(struct dmap *m, uint64_t i, uint64_t j)
{
	struct track_flush tf = { m->sess, 0, 0 };
	uint64_t n = m->len / PAGE;
	int64_t stored = 0;

	if (j > n)
		j = n;
	/*
	 * A few pages (a database's meta page): flushing the writable ones
	 * costs less than asking the kernel which were stored to and taking a
	 * fault on the next store -- they are treated as the kernel treats a
	 * 2 MiB DIRTY entry, flushed whole (and stay stored-to for the kernel:
	 * a larger msync or munmap may flush them once more).
	 */
	if (j - i <= DIRECT_PAGES) {
		for (uint64_t p = i; (p = next_bit(m->granted, p, j)) < j; p++)
			track_flush_run(m->addr + p * PAGE, PAGE, &tf);
	} else {
		uint64_t nwin = (j + WIN - 1) / WIN, drops = 0;

		for (uint64_t w = i / WIN; (w = next_bit(m->active, w, nwin)) < nwin; w++) {
			uint64_t lo = w * WIN, hi = window_end(m, w);
			int64_t got = track_scan_granted(m, lo > i ? lo : i, hi < j ? hi : j, &tf);
			stored += got > 0 ? got : 0;
			if (got == 0 && lo >= i && hi <= j && track_deactivate(m, w, &tf, &stored))
				drops++;
		}
		m->track_drops += drops ? 1 : 0;
		if (++m->track_msyncs == TRACK_EPOCH) {
			if (m->track_drops > TRACK_EPOCH / 2 && !m->inherited)
				track_drop(m);
			m->track_msyncs = m->track_drops = 0;
		}
	}
	struct pmfuse_dax_shared *sh = atomic_load(&m->sess->shared);
	if (tf.bytes) {	/* granted pages exist: so does the shared area */
		fence();
		__atomic_fetch_add(&sh->flush_bytes, tf.bytes, __ATOMIC_RELAXED);
	}
	if (stored) {	/* only scans count: the direct flush above asks nothing */
		/* each page stored to took one write-protect fault, in the kernel */
		__atomic_fetch_add(&sh->faults, (uint64_t)stored, __ATOMIC_RELAXED);
		/* the file changed: its times, when the daemon next looks */
		__atomic_store_n(&sh->stored, 1, __ATOMIC_RELEASE);
	}
	if (sync_ask_daemon(m, i, j))
		tf.ret = -1;
	return tf.ret;
}

static int sync_range(struct dmap *m, uint64_t i, uint64_t j)
{
	struct session *s = m->sess;
	uint64_t bytes = 0;
	int ret = 0;

	if (m->track)
		return sync_tracked(m, i, j);
	/*
	 * Every HOT_EPOCH msyncs the hot pages are write-protected like the
	 * others: those still written every cycle fault once and come back,
	 * those no longer written stop being flushed for nothing.
	 */
	bool demote = m->nhot && (m->gen + 1) % HOT_EPOCH == 0;

	for (uint64_t p = i; (p = next_bit(m->granted, p, j)) < j;) {
		uint64_t q = p;
		bool hot = test_bit(m->hot, p) && !demote;
		while (q < j && test_bit(m->granted, q) && (test_bit(m->hot, q) && !demote) == hot)
			q++;
		char *a = m->addr + p * PAGE;
		size_t n = (q - p) * PAGE;
		/* a hot run stays writable (and dirty): it is flushed, that is all */
		if ((!hot && sys_mprotect(a, n, m->prot & ~PROT_WRITE)) || persist_run(s, a, n))
			ret = -1;
		bytes += n;
		p = q;
	}
	struct pmfuse_dax_shared *sh = atomic_load(&s->shared);
	if (bytes) {	/* granted pages exist: so does the shared area */
		fence();
		m->gen++;
		for (uint64_t p = i; (p = next_bit(m->granted, p, j)) < j; p++) {
			if (test_bit(m->hot, p)) {
				if (!demote)
					continue;
				set_bit(m->hot, p, false);
				m->nhot--;
			}
			set_bit(m->granted, p, false);
			shared_bit(s, m->first + p, false);
			/* remembered, oldest forgotten first */
			unsigned k = m->nrecent < RECENT ? m->nrecent++ : (unsigned)(m->gen + p) % RECENT;
			m->recent[k].page = p;
			m->recent[k].gen = m->gen;
		}
		__atomic_fetch_add(&sh->flush_bytes, bytes, __ATOMIC_RELAXED);
	}
	if (sync_ask_daemon(m, i, j))
		ret = -1;
	return ret;
}

/* msync's question to the daemon, only when a descriptor read the file through the page cache */
static int sync_ask_daemon(struct dmap *m, uint64_t i, uint64_t j)
{
	struct session *s = m->sess;
	struct pmfuse_dax_shared *sh = atomic_load(&s->shared);
	int ret = 0;

	if (sh && __atomic_load_n(&sh->cached, __ATOMIC_ACQUIRE)) {
		struct pmfuse_dax_req *r = calloc(1, sizeof(*r));
		if (!r) {
			errno = ENOMEM;
			return -1;
		}
		*r = (struct pmfuse_dax_req){ .session = s->id, .first = m->first + i,
					      .npages = j - i, .flags = PMFUSE_DAX_SYNC_FLUSH };
		if (ioctl(s->fd, PMFUSE_IOC_DAX_SYNC, r) < 0)
			ret = -1;
		free(r);
	}
	return ret;
}

/*
 * Pages [i, j) of m go (munmap of a part; m->lock held): their stores are
 * the daemon's to flush at the next fsync.
 */
struct forget {
	struct dmap *m;
	struct pmfuse_dax_req *r;
	int ret;
};

static void forget_send(struct forget *f)
{
	if (!f->r || !f->r->count)
		return;
	f->r->session = f->m->sess->id;
	if (ioctl(f->m->sess->fd, PMFUSE_IOC_DAX_SYNC, f->r) < 0)
		f->ret = -1;
	f->r->count = 0;
}

/* file pages [page, page + npages): DIRTY in the daemon */
static void forget_report(struct forget *f, uint64_t page, uint64_t npages)
{
	if (!f->r && !(f->r = calloc(1, sizeof(*f->r)))) {
		errno = ENOMEM;
		f->ret = -1;
		return;
	}
	f->r->ext[f->r->count++] = (struct pmfuse_dax_extent){ page, 0, npages };
	if (f->r->count == PMFUSE_DAX_EXTENTS_MAX)
		forget_send(f);
}

static void forget_stored(char *p, size_t len, void *arg)
{
	struct forget *f = arg;

	/*
	 * No "stored" here: the pages may be the ones an fsync of the daemon
	 * already flushed (and touched the times for) without the kernel's
	 * marks being cleared; times changed after that fsync would be times
	 * nobody persisted.
	 */
	forget_report(f, f->m->first + (uint64_t)(p - f->m->addr) / PAGE, len / PAGE);
}

static int forget_range(struct dmap *m, uint64_t i, uint64_t j)
{
	struct forget f = { m, NULL, 0 };

	for (uint64_t p = i; (p = next_bit(m->granted, p, j)) < j;) {
		uint64_t q = run_end(m->granted, p, j);
		/* a tracking map reports what was stored to, if the kernel can tell */
		if (!m->track || track_scan(m->addr + p * PAGE, (q - p) * PAGE, forget_stored, &f) < 0)
			forget_report(&f, m->first + p, q - p);
		p = q;
	}
	forget_send(&f);
	free(f.r);
	if (f.ret)
		return -1;	/* the bits left set make the pages DIRTY when the session ends */
	for (uint64_t p = i; (p = next_bit(m->granted, p, j)) < j; p++) {
		/* the pages not stored to since msync: clean, and unmapped now */
		if (m->track)
			shared_bit(m->sess, m->first + p, false);
		set_bit(m->granted, p, false);
		if (test_bit(m->hot, p)) {
			set_bit(m->hot, p, false);
			m->nhot--;
		}
	}
	return 0;
}

/* Split m at page index at (0 < at < npages): the new map takes [at, end). */
static struct dmap *split(struct dmap *m, uint64_t at)
{
	uint64_t n = m->len / PAGE, tail = n - at;
	struct dmap *t = calloc(1, sizeof(*t));
	uint64_t *bm = t ? bitmaps(tail) : NULL;

	if (!bm) {
		free(t);
		return NULL;
	}
	*t = *m;
	pthread_mutex_init(&t->lock, NULL);
	atomic_store(&t->owner, 0);	/* m's holder (this thread) does not hold t */
	t->addr = m->addr + at * PAGE;
	t->len = tail * PAGE;
	t->first = m->first + at;
	set_bitmaps(t, bm, tail);
	t->nhot = 0;
	t->nrecent = 0;
	for (uint64_t i = 0; i < tail; i++) {
		uint64_t *from[3] = { m->granted, m->data, m->hot };
		uint64_t *to[3] = { t->granted, t->data, t->hot };
		for (int k = 0; k < 3; k++) {
			set_bit(to[k], i, test_bit(from[k], at + i));
			if (k != 1)	/* data stays known to both halves' pages only */
				set_bit(from[k], at + i, false);
		}
		if (test_bit(t->hot, i)) {
			t->nhot++;
			m->nhot--;
		}
	}
	m->len = at * PAGE;
	/* the halves' windows no longer line up with the old: all active, to be scanned */
	for (uint64_t w = 0; w < (tail + WIN - 1) / WIN; w++)
		set_bit(t->active, w, true);
	for (uint64_t w = 0; w < (at + WIN - 1) / WIN; w++)
		set_bit(m->active, w, true);
	pthread_mutex_lock(&maps_lock);
	if (add_map(t)) {
		pthread_mutex_unlock(&maps_lock);
		free(bm);
		free(t);
		return NULL;
	}
	t->sess->refs++;
	pthread_mutex_unlock(&maps_lock);
	return t;
}

/*
 * The direct map covering exactly [a, a + len) of the map at a, split off
 * as needed (m->lock not held); NULL if none, or no memory to split.
 */
static struct dmap *carve(char *a, size_t len, bool *nomem)
{
	struct dmap *m = find_map(a);

	*nomem = false;
	if (!m)
		return NULL;
	map_lock(m);
	uint64_t i = (uint64_t)(a - m->addr) / PAGE, n = m->len / PAGE;
	uint64_t j = i + len / PAGE < n ? i + len / PAGE : n;
	struct dmap *t = m;
	if (i > 0)
		t = split(m, i);
	map_unlock(m);
	if (!t) {
		*nomem = true;
		return NULL;
	}
	if (j - i < t->len / PAGE) {
		map_lock(t);
		struct dmap *rest = split(t, j - i);
		map_unlock(t);
		if (!rest) {
			*nomem = true;
			return NULL;
		}
	}
	return t;
}

static int unmap_piece(struct dmap *m, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&maps_lock);
	remove_map(m);
	pthread_mutex_unlock(&maps_lock);
	map_lock(m);
	/* its pages stay dirty in the daemon for the next fsync */
	if (!m->inherited)
		forget_range(m, 0, m->len / PAGE);
	map_unlock(m);
	session_put(m->sess, !m->inherited);
	pthread_mutex_destroy(&m->lock);
	free(m->granted);
	free(m);
	return 0;
}

/*
 * Run fn over the direct maps in [addr, addr + len) and plain(start, len)
 * over the runs of pages between them.
 */
static int split_range(void *addr, size_t len, int (*fn)(struct dmap *m, void *arg), void *arg,
		       bool carve_out, int (*plain)(char *a, size_t n, void *arg))
{
	char *a = (char *)addr, *end = a + (len + PAGE - 1) / PAGE * PAGE, *run = a;
	int ret = 0;

	while (a < end) {
		struct dmap *m = find_map(a);
		if (!m) {
			a += PAGE;
			continue;
		}
		if (run < a && plain(run, (size_t)(a - run), arg))
			ret = -1;
		size_t span = (size_t)(m->addr + m->len - a);
		if (span > (size_t)(end - a))
			span = (size_t)(end - a);
		if (carve_out) {
			bool nomem;
			if (!(m = carve(a, span, &nomem))) {
				errno = ENOMEM;
				return -1;
			}
		}
		if (fn(m, arg))
			ret = -1;
		a += span;
		run = a;
	}
	if (run < end && plain(run, (size_t)(end - run), arg))
		ret = -1;
	return ret;
}

struct sync_op {
	char *start, *end;
	int flags;
};

static int sync_piece(struct dmap *m, void *arg)
{
	struct sync_op *so = arg;
	char *a = so->start > m->addr ? so->start : m->addr;
	char *e = so->end < m->addr + m->len ? so->end : m->addr + m->len;
	uint64_t i = (uint64_t)(a - m->addr) / PAGE;
	uint64_t j = (uint64_t)(e - m->addr + PAGE - 1) / PAGE;

	/* MS_ASYNC starts nothing (nor in the kernel, since 2.6.19) */
	if (!(so->flags & MS_SYNC))
		return 0;
	map_lock(m);
	int ret = sync_range(m, i, j);
	map_unlock(m);
	return ret;
}

static int sync_plain(char *a, size_t n, void *arg)
{
	return (int)syscall(SYS_msync, a, n, ((struct sync_op *)arg)->flags);
}

EXPORT int pmfuse_dax_msync(void *addr, size_t len, int flags)
{
	if ((uintptr_t)addr % PAGE || (flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE)) ||
	    ((flags & MS_ASYNC) && (flags & MS_SYNC))) {
		errno = EINVAL;
		return -1;
	}
	if (atomic_load(&nmaps) == 0)
		return (int)syscall(SYS_msync, addr, len, flags);
	struct sync_op so = { addr, (char *)addr + len, flags };
	return split_range(addr, len, sync_piece, &so, false, sync_plain);
}

static int protect_piece(struct dmap *m, void *arg)
{
	int prot = *(int *)arg, ret = 0;

	if (prot & PROT_WRITE)
		prot |= PROT_READ;
	uint64_t n = m->len / PAGE;

	map_lock(m);
	m->prot = prot;
	/* granted pages take prot; the others never PROT_WRITE (a store must fault) */
	for (uint64_t i = 0; i < n;) {
		bool g = test_bit(m->granted, i);
		uint64_t j = i;
		while (j < n && test_bit(m->granted, j) == g)
			j++;
		if (sys_mprotect(m->addr + i * PAGE, (j - i) * PAGE, g ? prot : prot & ~PROT_WRITE))
			ret = -1;
		i = j;
	}
	map_unlock(m);
	return ret;
}

static int protect_plain(char *a, size_t n, void *arg)
{
	return sys_mprotect(a, n, *(int *)arg);
}

EXPORT int pmfuse_dax_mprotect(void *addr, size_t len, int prot)
{
	if (atomic_load(&nmaps) == 0 || (uintptr_t)addr % PAGE)
		return sys_mprotect(addr, len, prot);
	/* a writable direct map needs a descriptor open for writing, as mmap did */
	for (char *a = addr; a < (char *)addr + len; a += PAGE) {
		struct dmap *m = find_map(a);
		if (m && (prot & PROT_WRITE) && !(m->prot & PROT_WRITE) &&
		    (fcntl(m->sess->fd, F_GETFL) & O_ACCMODE) != O_RDWR) {
			errno = EACCES;
			return -1;
		}
		if (m && (prot & PROT_WRITE))
			install_segv();
	}
	return split_range(addr, len, protect_piece, &prot, true, protect_plain);
}

static int unmap_plain(char *a, size_t n, void *arg)
{
	(void)a;
	(void)n;
	(void)arg;
	return 0;	/* the caller unmaps the whole range after */
}

EXPORT int pmfuse_dax_munmap(void *addr, size_t len)
{
	if (atomic_load(&nmaps) == 0 || (uintptr_t)addr % PAGE || len == 0)
		return sys_munmap(addr, len);
	if (split_range(addr, len, unmap_piece, NULL, true, unmap_plain))
		return -1;
	return sys_munmap(addr, len);
}

EXPORT int pmfuse_dax_is_direct(const void *addr)
{
	return atomic_load(&nmaps) && find_map(addr) ? 1 : 0;
}

EXPORT int pmfuse_dax_is_tracked(const void *addr)
{
	struct dmap *m = atomic_load(&nmaps) ? find_map(addr) : NULL;

	return m && m->track ? 1 : 0;
}

/*
 * mremap of a direct map: shrinking drops the tail; growing (or moving)
 * maps the file again at the new size and drops the old map.  The pages
 * stored through the old one stay dirty in the daemon (the next fsync or
 * msync flushes them).
 */
static void *dax_mremap(struct dmap *m, void *old, size_t old_len, size_t new_len, int flags,
			void *new_addr)
{
	size_t olen = (old_len + PAGE - 1) / PAGE * PAGE, nlen = (new_len + PAGE - 1) / PAGE * PAGE;

	if ((char *)old != m->addr || olen != m->len) {
		errno = EINVAL;		/* only whole maps move */
		return MAP_FAILED;
	}
	if (nlen <= olen && !(flags & MREMAP_FIXED)) {
		if (nlen < olen && pmfuse_dax_munmap((char *)old + nlen, olen - nlen))
			return MAP_FAILED;
		return old;
	}
	if (!(flags & MREMAP_MAYMOVE)) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	int fd = m->sess->fd;
	void *n = pmfuse_dax_mmap((flags & MREMAP_FIXED) ? new_addr : NULL, nlen, m->prot,
				  MAP_SHARED | ((flags & MREMAP_FIXED) ? MAP_FIXED : 0), fd,
				  (off_t)(m->first * PAGE));
	if (n == MAP_FAILED)
		return n;
	pmfuse_dax_munmap(old, olen);
	return n;
}

/*
 * The kernel's own stores into a map (read(2) into it) do not fault
 * through the library: they fail with EFAULT on a page not yet granted.
 * So before a read into a writable direct map -- read, pread, readv,
 * preadv(2), recv, recvfrom, recvmsg: what brings data into a database's
 * pages -- its pages are granted.
 */
static void prefault(void *buf, size_t len)
{
	if (atomic_load(&nmaps) == 0 || len == 0)
		return;
	for (char *a = (char *)((uintptr_t)buf & ~(uintptr_t)(PAGE - 1)); a < (char *)buf + len;
	     a += PAGE) {
		struct dmap *m = find_map(a);
		if (!m || !(m->prot & PROT_WRITE))
			continue;
		map_lock(m);
		(void)grant(m, (uint64_t)(a - m->addr) / PAGE);
		map_unlock(m);
	}
}

/* the next definition of a function we wrap (same prototype), looked up once */
#define REAL(name) \
	static __typeof__(&name) real_##name; \
	if (!real_##name) \
		real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	REAL(read);
	prefault(buf, n);
	return real_read(fd, buf, n);
}

EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	REAL(pread);
	prefault(buf, n);
	return real_pread(fd, buf, n, off);
}

EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t off) __attribute__((alias("pread")));

static void prefault_iov(const struct iovec *iov, int cnt)
{
	if (atomic_load(&nmaps) == 0 || !iov)
		return;
	for (int i = 0; i < cnt; i++)
		prefault(iov[i].iov_base, iov[i].iov_len);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	REAL(readv);
	prefault_iov(iov, cnt);
	return real_readv(fd, iov, cnt);
}

EXPORT ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(preadv);
	prefault_iov(iov, cnt);
	return real_preadv(fd, iov, cnt, off);
}

EXPORT ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
	__attribute__((alias("preadv")));

EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	REAL(preadv2);
	prefault_iov(iov, cnt);
	return real_preadv2(fd, iov, cnt, off, flags);
}

EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
	__attribute__((alias("preadv2")));

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	REAL(recv);
	prefault(buf, n);
	return real_recv(fd, buf, n, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
			socklen_t *fromlen)
{
	REAL(recvfrom);
	prefault(buf, n);
	return real_recvfrom(fd, buf, n, flags, from, fromlen);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	REAL(recvmsg);
	if (msg)
		prefault_iov(msg->msg_iov, (int)msg->msg_iovlen);
	return real_recvmsg(fd, msg, flags);
}

/* The preload: the application's calls. */
EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return pmfuse_dax_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

EXPORT int munmap(void *addr, size_t len)
{
	return pmfuse_dax_munmap(addr, len);
}

EXPORT int msync(void *addr, size_t len, int flags)
{
	return pmfuse_dax_msync(addr, len, flags);
}

EXPORT int mprotect(void *addr, size_t len, int prot)
{
	return pmfuse_dax_mprotect(addr, len, prot);
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;

	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	struct dmap *m = atomic_load(&nmaps) ? find_map(old) : NULL;
	if (m)
		return dax_mremap(m, old, old_len, new_len, flags, new_addr);
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}
