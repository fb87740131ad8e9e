/*
 * Crash-state recorder, LD_PRELOADed into the pmfuse daemon by the crash
 * tests (tests/crash/crashtest.py).  Test-only: never installed.
 *
 * On a file region at page granularity the only thing that makes a store
 * durable is an msync (or fsync/fdatasync/sync_file_range) of its page --
 * for libpmemobj's metadata (libpmem calls msync) as much as for libpmem2's
 * data (pmem2_persist_pages calls msync).  This shim interposes those calls
 * and the mmap family, and turns every persistence call that covers the
 * region into one numbered *persistence point* k = 1, 2, 3...  For each
 * point it appends to the trace the region pages that call made durable
 * with their contents at that moment.  Replaying the first k records over
 * the region as it was before the daemon started gives the image a power
 * failure right after point k would leave.
 *
 * The shim keeps a "shadow": the region as persisted so far.  A record holds
 * only the pages whose contents differ from the shadow (re-persisting an
 * unchanged page changes nothing on media), which keeps the trace small.
 * Every PMFUSE_CRASH_DIRTY_EVERY-th point it also records a "dirty" record:
 * every page whose live contents differ from the shadow at that moment --
 * stores made but not yet persisted, any subset of which a real power loss
 * may have let through ("more than flushed survived").
 *
 * Environment (all three required, or the shim stays passive):
 *   PMFUSE_CRASH_REGION   the region file; identified by st_dev/st_ino, so
 *                         mappings made through any path or fd are seen
 *   PMFUSE_CRASH_TRACE    the trace file to write (truncated)
 *   PMFUSE_CRASH_COUNTER  a small file (in /dev/shm) holding shared u64
 *                         counters, read by the workload driver: word 0 is
 *                         the number of persistence points so far
 *   PMFUSE_CRASH_DIRTY_EVERY  optional, see above (0 = never)
 *
 * Everything the shim itself needs from the kernel goes through syscall(2),
 * never through the interposed libc symbols: no recursion, no dlsym() at
 * interposition time, and it composes with AddressSanitizer's own mmap
 * interceptors (which then reach us as "the next mmap").
 *
 * Cache-line mode (PMFUSE_CRASH_GRAIN=line, with the daemon run under
 * PMEM2_FORCE_GRANULARITY=cache_line PMEM_IS_PMEM_FORCE=1: ADR pmem).  Then
 * the persistence events are CPU cache flushes and fences, made through
 * libpmem's exported functions (what libpmemobj calls) and the function
 * pointers libpmem2 hands out (what pmfuse's data path calls).  The shim
 * interposes both -- libpmem's symbols directly, libpmem2's getters by
 * returning wrappers around the real pointers -- and models ADR:
 *   - a flush (or a copy that flushes, or a non-temporal copy) puts each
 *     64-byte line it covers "in flight" for the calling thread, with the
 *     line's contents at that moment;
 *   - a drain (sfence) by a thread makes that thread's in-flight lines
 *     durable: one persistence point, whose record lists them in order
 *     (the driver explores the subsets that may have reached media first);
 *   - a store nobody flushes never becomes durable.
 * msync of region pages counts as a flush of their lines and a drain (what
 * pmem_msync is on DAX).  At exit the shim compares the live region with
 * what it saw persisted: lines that differ were stored and never flushed
 * (or flushed through a path the shim does not see), counted in the shared
 * counters and listed in a last REC_UNFLUSHED record.
 *
 * Trace format (little-endian, host order):
 *   record: struct trace_rec, then entries { u64 file_off; u8 data[U] },
 *           ended by an entry whose file_off is TRACE_END (no data follows);
 *           U is 4096 for page records, 64 for REC_FENCE and REC_UNFLUSHED
 *           (whose trace_rec.off holds the draining thread's id).
 */
/* mmap and mmap64 are two symbols here: no redirection of one to the other */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libpmem.h>
#include <libpmem2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096ull
#define TRACE_MAGIC 0x52434d50u		/* "PMCR" */
#define TRACE_END UINT64_MAX
#define MAX_MAPS 64
#define LINE 64ull
#define MAX_PENDING (1u << 21)		/* in-flight lines, all threads */

enum rec_kind {
	REC_MSYNC = 1,
	REC_FSYNC = 2,
	REC_FDATASYNC = 3,
	REC_SYNC_FILE_RANGE = 4,
	REC_SYNCFS = 5,
	REC_FENCE = 8,			/* cache-line mode: a drain and the lines it made durable */
	REC_DIRTY = 16,			/* not a point: live, unpersisted pages at point k */
	REC_UNFLUSHED = 17,		/* not a point: at exit, lines never flushed */
};

struct trace_rec {
	uint32_t magic;
	uint32_t kind;			/* enum rec_kind */
	uint64_t k;			/* persistence point (for REC_DIRTY: the point it follows) */
	uint64_t off, len;		/* file range the call asked for (whole file: 0, size) */
};

/* Words of the shared counter file. */
enum {
	C_POINTS,			/* persistence points so far */
	C_MSYNC_ALL,			/* msync calls seen, any address */
	C_FSYNC_ALL,			/* fsync calls seen, any fd */
	C_FDATASYNC_ALL,
	C_SFR_ALL,			/* sync_file_range */
	C_SYNCFS_ALL,			/* syncfs and sync */
	C_MSYNC_REGION,			/* msync calls that covered region pages */
	C_PAGES,			/* pages written to the trace */
	C_DIRTY_RECS,
	C_MAPS,				/* region mappings seen */
	C_MSYNC_ASYNC,			/* MS_ASYNC-only calls on the region: not points */
	C_READY,			/* 1 once the shim is active */
	/* cache-line mode */
	C_PMEM_FLUSH,			/* pmem_flush + pmem_deep_flush calls */
	C_PMEM_DRAIN,			/* pmem_drain + pmem_deep_drain */
	C_PMEM_PERSIST,			/* pmem_persist + pmem_deep_persist */
	C_PMEM_COPY,			/* pmem_mem{cpy,move,set}[_persist|_nodrain] */
	C_PMEM_MSYNC,			/* pmem_msync */
	C_PMEM2_FLUSH,			/* calls through the pointers libpmem2 gave */
	C_PMEM2_DRAIN,
	C_PMEM2_PERSIST,
	C_PMEM2_COPY,
	C_PMEM2_GETS,			/* pmem2_get_*_fn calls */
	C_LINES_FLUSHED,		/* region lines put in flight */
	C_LINES_CLEAN,			/* flushed lines equal to the durable ones: no effect */
	C_FENCES_EMPTY,			/* drains with nothing of the thread in flight */
	C_UNFLUSHED,			/* at exit: region lines whose stores were never flushed */
	C_UNDRAINED,			/* at exit: lines still in flight (no drain followed) */
	C_LINE_MSYNC,			/* msync calls on the region, modelled as flush + drain */
	C_WORDS,
	/*
	 * Per interposed function (enum fn): the real function's address
	 * (once known) and every call of the wrapper, nested ones included --
	 * what the driver holds against uprobes on the real functions.
	 */
	C_FN_REAL = 64,
	C_FN_CALLS = 128,
};

enum fn {
	F_FLUSH, F_DEEP_FLUSH, F_DRAIN, F_DEEP_DRAIN, F_PERSIST, F_DEEP_PERSIST, F_MSYNC,
	F_MEMCPY, F_MEMMOVE, F_MEMSET, F_MEMCPY_P, F_MEMMOVE_P, F_MEMSET_P,
	F_MEMCPY_N, F_MEMMOVE_N, F_MEMSET_N,
	F2_DEEP_FLUSH,
	F2_FLUSH = 17, F2_DRAIN = 21, F2_PERSIST = 25, F2_MEMCPY = 29, F2_MEMMOVE = 33,
	F2_MEMSET = 37,			/* four wrapper slots each */
	F_COUNT = 41
};

struct pending {
	uint64_t off;			/* file offset of the line */
	uint32_t tid;			/* the flushing thread */
	unsigned char data[LINE];	/* its contents when flushed */
};

struct mapping {
	uintptr_t addr;
	size_t len;
	uint64_t off;			/* file offset of addr */
};

static struct {
	int active;
	dev_t dev;
	ino_t ino;
	int trace_fd, read_fd;
	uint64_t size;
	unsigned char *shadow;		/* the region as persisted so far */
	_Atomic uint64_t *ctr;		/* shared counters, C_WORDS of them */
	uint64_t dirty_every;
	pthread_mutex_t lock;		/* everything above that changes, and maps */
	struct mapping maps[MAX_MAPS];
	int nmaps;
	unsigned char buf[1 << 20];	/* trace staging buffer */
	size_t buflen;
	unsigned char page[PAGE];
	int line_mode;			/* PMFUSE_CRASH_GRAIN=line */
	struct pending *pend;		/* lines in flight, in flush order */
	uint32_t npend;
	uint16_t *pend_count;		/* per region line: its entries in pend */
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .trace_fd = -1, .read_fd = -1 };

static void *raw_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, a, len, prot, flags, fd, off);
}

static void die(const char *msg)
{
	(void)!syscall(SYS_write, 2, "pmfuse crash shim: ", 19);
	(void)!syscall(SYS_write, 2, msg, strlen(msg));
	(void)!syscall(SYS_write, 2, "\n", 1);
	syscall(SYS_exit_group, 99);
}

static void full_write(const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		long w = syscall(SYS_write, S.trace_fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("cannot write the trace");
		c += w;
		n -= (size_t)w;
	}
}

static void emit(const void *p, size_t n)
{
	if (S.buflen + n > sizeof(S.buf)) {
		full_write(S.buf, S.buflen);
		S.buflen = 0;
	}
	if (n > sizeof(S.buf)) {
		full_write(p, n);
		return;
	}
	memcpy(S.buf + S.buflen, p, n);
	S.buflen += n;
}

static void emit_page(uint64_t off, const void *data)
{
	emit(&off, sizeof(off));
	emit(data, PAGE);
	S.ctr[C_PAGES]++;
}

static void emit_end(void)
{
	uint64_t end = TRACE_END;

	emit(&end, sizeof(end));
	full_write(S.buf, S.buflen);	/* a record is on file before its point counts */
	S.buflen = 0;
}

static void emit_header(uint32_t kind, uint64_t k, uint64_t off, uint64_t len)
{
	struct trace_rec r = { TRACE_MAGIC, kind, k, off, len };

	emit(&r, sizeof(r));
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *region = getenv("PMFUSE_CRASH_REGION");
	const char *trace = getenv("PMFUSE_CRASH_TRACE");
	const char *counter = getenv("PMFUSE_CRASH_COUNTER");
	const char *every = getenv("PMFUSE_CRASH_DIRTY_EVERY");
	const char *grain = getenv("PMFUSE_CRASH_GRAIN");
	struct stat st;
	int cfd;

	if (!region || !trace || !counter)
		return;
	/*
	 * Only this process records: a child it might exec (fusermount3, when
	 * mount(2) is refused) inherits LD_PRELOAD but must not truncate the
	 * trace.  getenv's strings stay valid: unsetenv only drops the pointers.
	 */
	unsetenv("PMFUSE_CRASH_REGION");
	unsetenv("PMFUSE_CRASH_TRACE");
	unsetenv("PMFUSE_CRASH_COUNTER");
	unsetenv("PMFUSE_CRASH_DIRTY_EVERY");
	unsetenv("PMFUSE_CRASH_GRAIN");
	if (stat(region, &st) < 0 || !S_ISREG(st.st_mode))
		die("PMFUSE_CRASH_REGION is not a regular file");
	S.dev = st.st_dev;
	S.ino = st.st_ino;
	S.size = (uint64_t)st.st_size;
	S.dirty_every = every ? strtoull(every, NULL, 10) : 0;
	S.line_mode = grain && strcmp(grain, "line") == 0;
	if (grain && !S.line_mode && strcmp(grain, "page"))
		die("PMFUSE_CRASH_GRAIN is neither page nor line");
	S.read_fd = (int)syscall(SYS_openat, AT_FDCWD, region, O_RDONLY | O_CLOEXEC);
	S.trace_fd = (int)syscall(SYS_openat, AT_FDCWD, trace,
				  O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cfd = (int)syscall(SYS_openat, AT_FDCWD, counter, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (S.read_fd < 0 || S.trace_fd < 0 || cfd < 0)
		die("cannot open the region, trace or counter file");
	if (syscall(SYS_ftruncate, cfd, (long)PAGE) < 0)
		die("cannot size the counter file");
	S.ctr = raw_mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	S.shadow = raw_mmap(NULL, S.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	syscall(SYS_close, cfd);
	if (S.ctr == MAP_FAILED || S.shadow == MAP_FAILED)
		die("cannot map the counter file or the shadow");
	memset((void *)S.ctr, 0, PAGE);
	_Static_assert(C_WORDS <= C_FN_REAL && C_FN_CALLS + F_COUNT <= PAGE / 8, "counter page");
	if (S.line_mode) {
		S.pend = raw_mmap(NULL, MAX_PENDING * sizeof(*S.pend), PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		S.pend_count = raw_mmap(NULL, S.size / LINE * sizeof(*S.pend_count),
					PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (S.pend == MAP_FAILED || S.pend_count == MAP_FAILED)
			die("cannot map the in-flight line tables");
	}
	for (uint64_t done = 0; done < S.size;) {
		long n = syscall(SYS_pread64, S.read_fd, S.shadow + done, S.size - done, (long)done);
		if (n <= 0)
			die("cannot read the region");
		done += (uint64_t)n;
	}
	S.active = 1;
	if (S.line_mode) {
		/* libpmem's real functions, for the driver's uprobes (libpmem2's
		 * become known when its getters are called) */
		static const char *const names[] = {
			"pmem_flush", "pmem_deep_flush", "pmem_drain", "pmem_deep_drain",
			"pmem_persist", "pmem_deep_persist", "pmem_msync", "pmem_memcpy",
			"pmem_memmove", "pmem_memset", "pmem_memcpy_persist",
			"pmem_memmove_persist", "pmem_memset_persist", "pmem_memcpy_nodrain",
			"pmem_memmove_nodrain", "pmem_memset_nodrain", "pmem2_deep_flush",
		};
		_Static_assert(sizeof(names) / sizeof(names[0]) == F2_DEEP_FLUSH + 1, "names");
		for (int f = 0; f <= F2_DEEP_FLUSH; f++) {
			void *a = dlsym(RTLD_NEXT, names[f]);
			if (a)
				S.ctr[C_FN_REAL + f] = (uintptr_t)a;
		}
	}
	S.ctr[C_READY] = 1;
}

static int fd_is_region(int fd)
{
	struct stat st;

	return fd >= 0 && syscall(SYS_fstat, fd, &st) == 0 && st.st_dev == S.dev &&
	       st.st_ino == S.ino;
}

/* Forget tracked mappings inside [a, a + len) (unmapped or mapped over). */
static void maps_remove(uintptr_t a, size_t len)
{
	uintptr_t end = a + len;

	for (int i = 0; i < S.nmaps; i++) {
		struct mapping *m = &S.maps[i];
		uintptr_t mend = m->addr + m->len;
		if (mend <= a || m->addr >= end)
			continue;
		if (m->addr < a && mend > end) {	/* a hole in the middle: split */
			if (S.nmaps == MAX_MAPS)
				die("too many region mappings");
			S.maps[S.nmaps++] = (struct mapping){ end, mend - end, m->off + (end - m->addr) };
			m->len = a - m->addr;
		} else if (m->addr < a) {
			m->len = a - m->addr;
		} else if (mend > end) {
			m->off += end - m->addr;
			m->len = mend - end;
			m->addr = end;
		} else {
			S.maps[i--] = S.maps[--S.nmaps];
		}
	}
}

static void *track_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = raw_mmap(addr, len, prot, flags, fd, off);
	int type = flags & MAP_TYPE;

	if (p == MAP_FAILED || !S.active)
		return p;
	pthread_mutex_lock(&S.lock);
	len = (len + PAGE - 1) & ~(PAGE - 1);
	maps_remove((uintptr_t)p, len);
	if (!(flags & MAP_ANONYMOUS) && (type == MAP_SHARED || type == MAP_SHARED_VALIDATE) &&
	    fd_is_region(fd)) {
		if (S.nmaps == MAX_MAPS)
			die("too many region mappings");
		S.maps[S.nmaps++] = (struct mapping){ (uintptr_t)p, len, (uint64_t)off };
		S.ctr[C_MAPS]++;
	}
	pthread_mutex_unlock(&S.lock);
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return track_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return track_mmap(addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len)
{
	long r = syscall(SYS_munmap, addr, len);

	if (r == 0 && S.active) {
		pthread_mutex_lock(&S.lock);
		maps_remove((uintptr_t)addr, (len + PAGE - 1) & ~(PAGE - 1));
		pthread_mutex_unlock(&S.lock);
	}
	return (int)r;
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	/* PMDK does not remap the pool; a remapped region mapping is not followed */
	void *p;

	if (flags & MREMAP_FIXED) {
		__builtin_va_list ap;
		__builtin_va_start(ap, flags);
		void *na = __builtin_va_arg(ap, void *);
		__builtin_va_end(ap);
		p = (void *)syscall(SYS_mremap, old, old_len, new_len, flags, na);
	} else {
		p = (void *)syscall(SYS_mremap, old, old_len, new_len, flags);
	}
	if (p != MAP_FAILED && S.active) {
		pthread_mutex_lock(&S.lock);
		for (int i = 0; i < S.nmaps; i++)
			if (S.maps[i].addr < (uintptr_t)old + old_len &&
			    S.maps[i].addr + S.maps[i].len > (uintptr_t)old)
				die("mremap of a region mapping is not supported");
		maps_remove((uintptr_t)p, new_len);
		pthread_mutex_unlock(&S.lock);
	}
	return p;
}

/* Record file page off (live contents at src) if it differs from the shadow. */
static void persist_page(uint64_t off, const unsigned char *src)
{
	if (off + PAGE > S.size || memcmp(S.shadow + off, src, PAGE) == 0)
		return;
	memcpy(S.shadow + off, src, PAGE);
	emit_page(off, S.shadow + off);
}

static uint64_t next_point(void)
{
	return S.ctr[C_POINTS] + 1;
}

/* The point's record is complete: publish it, and maybe snapshot dirty pages. */
static void finish_point(uint64_t k)
{
	emit_end();
	if (S.dirty_every && k % S.dirty_every == 0) {
		emit_header(REC_DIRTY, k, 0, S.size);
		for (uint64_t off = 0; off < S.size; off += PAGE) {
			if (syscall(SYS_pread64, S.read_fd, S.page, PAGE, (long)off) != (long)PAGE)
				die("cannot read the region");
			if (memcmp(S.shadow + off, S.page, PAGE))
				emit_page(off, S.page);
		}
		emit_end();
		S.ctr[C_DIRTY_RECS]++;
	}
	/*
	 * Published last: a driver that reads k knows point k and its dirty
	 * snapshot are complete, so the snapshot holds no store of an operation
	 * the driver started after reading k.
	 */
	atomic_store_explicit(&S.ctr[C_POINTS], k, memory_order_release);
}

/* The region pages mapped in [addr, addr + len), persisted as one point. */
static void record_msync(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr & ~(PAGE - 1);
	uintptr_t end = ((uintptr_t)addr + len + PAGE - 1) & ~(PAGE - 1);
	uint64_t k, lo = UINT64_MAX, hi = 0;
	int hit = 0;

	pthread_mutex_lock(&S.lock);
	for (int i = 0; i < S.nmaps; i++) {
		struct mapping *m = &S.maps[i];
		if (m->addr < end && m->addr + m->len > a)
			hit = 1;
	}
	if (!hit) {
		pthread_mutex_unlock(&S.lock);
		return;
	}
	k = next_point();
	for (int i = 0; i < S.nmaps; i++) {
		struct mapping *m = &S.maps[i];
		uintptr_t s = a > m->addr ? a : m->addr;
		uintptr_t e = end < m->addr + m->len ? end : m->addr + m->len;
		if (s >= e)
			continue;
		uint64_t foff = m->off + (s - m->addr);
		lo = foff < lo ? foff : lo;
		hi = foff + (e - s) > hi ? foff + (e - s) : hi;
	}
	emit_header(REC_MSYNC, k, lo, hi - lo);
	for (int i = 0; i < S.nmaps; i++) {
		struct mapping *m = &S.maps[i];
		uintptr_t s = a > m->addr ? a : m->addr;
		uintptr_t e = end < m->addr + m->len ? end : m->addr + m->len;
		for (uintptr_t p = s; p < e; p += PAGE)
			persist_page(m->off + (p - m->addr), (const unsigned char *)p);
	}
	S.ctr[C_MSYNC_REGION]++;
	finish_point(k);
	pthread_mutex_unlock(&S.lock);
}

/* fsync and friends on the region's file: [off, off + len) of it becomes durable. */
static void line_file(uint64_t off, uint64_t len);

static void record_file(uint32_t kind, uint64_t off, uint64_t len)
{
	uint64_t k, end;

	if (S.line_mode) {
		line_file(off, len);
		return;
	}
	pthread_mutex_lock(&S.lock);
	k = next_point();
	off &= ~(PAGE - 1);
	end = len == 0 || off + len > S.size ? S.size : off + len;
	emit_header(kind, k, off, end - off);
	for (uint64_t p = off; p < end; p += PAGE) {
		if (syscall(SYS_pread64, S.read_fd, S.page, PAGE, (long)p) != (long)PAGE)
			die("cannot read the region");
		persist_page(p, S.page);
	}
	finish_point(k);
	pthread_mutex_unlock(&S.lock);
}

/* ------------------------------------------------------------ cache lines */

static __thread int in_wrapper;		/* an interposed call is recording already */

static uint32_t gettid_raw(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

/* Put one line (file offset off, live contents at src) in flight for tid. */
static void pend_line(uint32_t tid, uint64_t off, const unsigned char *src)
{
	uint64_t l = off / LINE;

	S.ctr[C_LINES_FLUSHED]++;
	if (S.pend_count[l] == 0 && memcmp(S.shadow + off, src, LINE) == 0) {
		S.ctr[C_LINES_CLEAN]++;	/* already durable as it is */
		return;
	}
	if (S.npend == MAX_PENDING)
		die("too many cache lines in flight");
	if (S.pend_count[l] == UINT16_MAX)
		die("one cache line flushed too often without a drain");
	S.pend[S.npend].off = off;
	S.pend[S.npend].tid = tid;
	memcpy(S.pend[S.npend].data, src, LINE);
	S.npend++;
	S.pend_count[l]++;
}

/* A flush of [addr, addr + len) by the calling thread: region lines in flight. */
static void line_flush(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr & ~(LINE - 1);
	uintptr_t end = (uintptr_t)addr + len;
	uint32_t tid;

	if (!S.active || !S.line_mode || len == 0)
		return;
	tid = gettid_raw();
	pthread_mutex_lock(&S.lock);
	for (int i = 0; i < S.nmaps; i++) {
		struct mapping *m = &S.maps[i];
		uintptr_t s = a > m->addr ? a : m->addr;
		uintptr_t e = end < m->addr + m->len ? end : m->addr + m->len;
		for (uintptr_t p = s; p < e; p += LINE) {
			uint64_t off = m->off + (p - m->addr);
			if (off + LINE <= S.size)
				pend_line(tid, off, (const unsigned char *)p);
		}
	}
	pthread_mutex_unlock(&S.lock);
}

/*
 * A drain by the calling thread: its lines in flight become durable.  The
 * record lists them in flush order; a line flushed twice with different
 * contents is listed twice (either may be what a crash before the drain
 * left), a repeat of the contents just listed for it once.
 */
static void line_drain(void)
{
	uint32_t tid, keep = 0, n = 0;
	uint64_t k;

	if (!S.active || !S.line_mode)
		return;
	tid = gettid_raw();
	pthread_mutex_lock(&S.lock);
	for (uint32_t i = 0; i < S.npend; i++)
		n += S.pend[i].tid == tid;
	if (n == 0) {
		S.ctr[C_FENCES_EMPTY]++;
		pthread_mutex_unlock(&S.lock);
		return;
	}
	k = next_point();
	emit_header(REC_FENCE, k, tid, LINE);
	for (uint32_t i = 0; i < S.npend; i++) {
		struct pending *e = &S.pend[i];
		if (e->tid != tid) {
			S.pend[keep++] = *e;
			continue;
		}
		S.pend_count[e->off / LINE]--;
		if (memcmp(S.shadow + e->off, e->data, LINE)) {
			emit(&e->off, sizeof(e->off));
			emit(e->data, LINE);
			memcpy(S.shadow + e->off, e->data, LINE);
		}
	}
	S.npend = keep;
	finish_point(k);
	pthread_mutex_unlock(&S.lock);
}

/* fsync and friends of the region file: every line of the range that differs. */
static void line_file(uint64_t off, uint64_t len)
{
	uint64_t end = len == 0 || off + len > S.size ? S.size : off + len;
	uint32_t tid = gettid_raw();

	pthread_mutex_lock(&S.lock);
	for (uint64_t p = off & ~(PAGE - 1); p < end; p += PAGE) {
		if (syscall(SYS_pread64, S.read_fd, S.page, PAGE, (long)p) != (long)PAGE)
			die("cannot read the region");
		for (uint64_t l = 0; l < PAGE; l += LINE)
			pend_line(tid, p + l, S.page + l);
	}
	pthread_mutex_unlock(&S.lock);
	line_drain();
}

/* At exit: what the region holds that was never made durable. */
__attribute__((destructor)) static void shim_fini(void)
{
	if (!S.active || !S.line_mode)
		return;
	pthread_mutex_lock(&S.lock);
	S.ctr[C_UNDRAINED] = S.npend;
	emit_header(REC_UNFLUSHED, S.ctr[C_POINTS], 0, LINE);
	for (uint64_t p = 0; p < S.size; p += PAGE) {
		if (syscall(SYS_pread64, S.read_fd, S.page, PAGE, (long)p) != (long)PAGE)
			die("cannot read the region");
		if (memcmp(S.shadow + p, S.page, PAGE) == 0)
			continue;
		for (uint64_t l = 0; l < PAGE; l += LINE) {
			if (memcmp(S.shadow + p + l, S.page + l, LINE) == 0)
				continue;
			uint64_t off = p + l;
			emit(&off, sizeof(off));
			emit(S.page + l, LINE);
			S.ctr[C_UNFLUSHED]++;
		}
	}
	emit_end();
	S.active = 0;
	pthread_mutex_unlock(&S.lock);
}

/*
 * libpmem's entry points.  The real function runs first (a copy's lines
 * are recorded with what it stored); only the outermost interposed call
 * records, so a libpmem function calling another exported one counts once.
 */
#define REAL(name, f)							\
	({								\
		static __typeof__(name) *real_;				\
		if (!real_ && !(real_ = dlsym(RTLD_NEXT, #name)))	\
			die("no next definition of " #name);		\
		if (S.active)						\
			S.ctr[C_FN_REAL + (f)] = (uintptr_t)real_;	\
		real_;							\
	})

#define WRAP_BEGIN(counter, f)						\
	int outer_ = !in_wrapper++;					\
	if (S.active) {							\
		S.ctr[C_FN_CALLS + (f)]++;				\
		if (outer_)						\
			S.ctr[counter]++;				\
	}
#define WRAP_END(addr, len, flush, drain)				\
	do {								\
		if (outer_ && (flush))					\
			line_flush(addr, len);				\
		if (outer_ && (drain))					\
			line_drain();					\
		in_wrapper--;						\
	} while (0)

void pmem_flush(const void *addr, size_t len)
{
	WRAP_BEGIN(C_PMEM_FLUSH, F_FLUSH);
	REAL(pmem_flush, F_FLUSH)(addr, len);
	WRAP_END(addr, len, 1, 0);
}

void pmem_deep_flush(const void *addr, size_t len)
{
	WRAP_BEGIN(C_PMEM_FLUSH, F_DEEP_FLUSH);
	REAL(pmem_deep_flush, F_DEEP_FLUSH)(addr, len);
	WRAP_END(addr, len, 1, 0);
}

void pmem_drain(void)
{
	WRAP_BEGIN(C_PMEM_DRAIN, F_DRAIN);
	REAL(pmem_drain, F_DRAIN)();
	WRAP_END(NULL, 0, 0, 1);
}

int pmem_deep_drain(const void *addr, size_t len)
{
	WRAP_BEGIN(C_PMEM_DRAIN, F_DEEP_DRAIN);
	int r = REAL(pmem_deep_drain, F_DEEP_DRAIN)(addr, len);
	WRAP_END(addr, len, 0, 1);
	return r;
}

void pmem_persist(const void *addr, size_t len)
{
	WRAP_BEGIN(C_PMEM_PERSIST, F_PERSIST);
	REAL(pmem_persist, F_PERSIST)(addr, len);
	WRAP_END(addr, len, 1, 1);
}

int pmem_deep_persist(const void *addr, size_t len)
{
	WRAP_BEGIN(C_PMEM_PERSIST, F_DEEP_PERSIST);
	int r = REAL(pmem_deep_persist, F_DEEP_PERSIST)(addr, len);
	WRAP_END(addr, len, 1, 1);
	return r;
}

int pmem_msync(const void *addr, size_t len)
{
	/* its msync(2) reaches the interposed msync below, which records */
	if (S.active) {
		S.ctr[C_PMEM_MSYNC]++;
		S.ctr[C_FN_CALLS + F_MSYNC]++;
	}
	return REAL(pmem_msync, F_MSYNC)(addr, len);
}

/* flags: a copy flushes unless NOFLUSH, and drains unless NODRAIN or NOFLUSH */
#define COPY_FLUSHES(f) (!((f) & PMEM_F_MEM_NOFLUSH))
#define COPY_DRAINS(f) (!((f) & (PMEM_F_MEM_NOFLUSH | PMEM_F_MEM_NODRAIN)))

void *pmem_memcpy(void *dst, const void *src, size_t len, unsigned flags)
{
	WRAP_BEGIN(C_PMEM_COPY, F_MEMCPY);
	void *r = REAL(pmem_memcpy, F_MEMCPY)(dst, src, len, flags);
	WRAP_END(dst, len, COPY_FLUSHES(flags), COPY_DRAINS(flags));
	return r;
}

void *pmem_memmove(void *dst, const void *src, size_t len, unsigned flags)
{
	WRAP_BEGIN(C_PMEM_COPY, F_MEMMOVE);
	void *r = REAL(pmem_memmove, F_MEMMOVE)(dst, src, len, flags);
	WRAP_END(dst, len, COPY_FLUSHES(flags), COPY_DRAINS(flags));
	return r;
}

void *pmem_memset(void *dst, int c, size_t len, unsigned flags)
{
	WRAP_BEGIN(C_PMEM_COPY, F_MEMSET);
	void *r = REAL(pmem_memset, F_MEMSET)(dst, c, len, flags);
	WRAP_END(dst, len, COPY_FLUSHES(flags), COPY_DRAINS(flags));
	return r;
}

#define WRAP_COPY(name, f, drain, ...)				\
	{								\
		WRAP_BEGIN(C_PMEM_COPY, f);				\
		void *r = REAL(name, f)(__VA_ARGS__);			\
		WRAP_END(dst, len, 1, drain);				\
		return r;						\
	}

void *pmem_memcpy_persist(void *dst, const void *src, size_t len)
	WRAP_COPY(pmem_memcpy_persist, F_MEMCPY_P, 1, dst, src, len)
void *pmem_memmove_persist(void *dst, const void *src, size_t len)
	WRAP_COPY(pmem_memmove_persist, F_MEMMOVE_P, 1, dst, src, len)
void *pmem_memset_persist(void *dst, int c, size_t len)
	WRAP_COPY(pmem_memset_persist, F_MEMSET_P, 1, dst, c, len)
void *pmem_memcpy_nodrain(void *dst, const void *src, size_t len)
	WRAP_COPY(pmem_memcpy_nodrain, F_MEMCPY_N, 0, dst, src, len)
void *pmem_memmove_nodrain(void *dst, const void *src, size_t len)
	WRAP_COPY(pmem_memmove_nodrain, F_MEMMOVE_N, 0, dst, src, len)
void *pmem_memset_nodrain(void *dst, int c, size_t len)
	WRAP_COPY(pmem_memset_nodrain, F_MEMSET_N, 0, dst, c, len)

/*
 * libpmem2: pmfuse calls what pmem2_get_*_fn return.  Each getter hands
 * out a wrapper around the real pointer; a process that maps with several
 * granularities gets different real pointers, one wrapper slot each.
 */
#define SLOTS 4
static pmem2_flush_fn real2_flush[SLOTS];
static pmem2_drain_fn real2_drain[SLOTS];
static pmem2_persist_fn real2_persist[SLOTS];
static pmem2_memcpy_fn real2_memcpy[SLOTS];
static pmem2_memmove_fn real2_memmove[SLOTS];
static pmem2_memset_fn real2_memset[SLOTS];

#define SLOT_WRAPPERS(i)							\
	static void flush2_##i(const void *p, size_t n)				\
	{									\
		WRAP_BEGIN(C_PMEM2_FLUSH, F2_FLUSH + i);					\
		real2_flush[i](p, n);						\
		WRAP_END(p, n, 1, 0);						\
	}									\
	static void drain2_##i(void)						\
	{									\
		WRAP_BEGIN(C_PMEM2_DRAIN, F2_DRAIN + i);					\
		real2_drain[i]();						\
		WRAP_END(NULL, 0, 0, 1);					\
	}									\
	static void persist2_##i(const void *p, size_t n)			\
	{									\
		WRAP_BEGIN(C_PMEM2_PERSIST, F2_PERSIST + i);					\
		real2_persist[i](p, n);						\
		WRAP_END(p, n, 1, 1);						\
	}									\
	static void *memcpy2_##i(void *d, const void *s, size_t n, unsigned f)	\
	{									\
		WRAP_BEGIN(C_PMEM2_COPY, F2_MEMCPY + i);					\
		void *r = real2_memcpy[i](d, s, n, f);				\
		WRAP_END(d, n, COPY_FLUSHES(f), COPY_DRAINS(f));		\
		return r;							\
	}									\
	static void *memmove2_##i(void *d, const void *s, size_t n, unsigned f)	\
	{									\
		WRAP_BEGIN(C_PMEM2_COPY, F2_MEMMOVE + i);					\
		void *r = real2_memmove[i](d, s, n, f);				\
		WRAP_END(d, n, COPY_FLUSHES(f), COPY_DRAINS(f));		\
		return r;							\
	}									\
	static void *memset2_##i(void *d, int c, size_t n, unsigned f)		\
	{									\
		WRAP_BEGIN(C_PMEM2_COPY, F2_MEMSET + i);					\
		void *r = real2_memset[i](d, c, n, f);				\
		WRAP_END(d, n, COPY_FLUSHES(f), COPY_DRAINS(f));		\
		return r;							\
	}
SLOT_WRAPPERS(0)
SLOT_WRAPPERS(1)
SLOT_WRAPPERS(2)
SLOT_WRAPPERS(3)
_Static_assert(PMEM_F_MEM_NOFLUSH == PMEM2_F_MEM_NOFLUSH &&
	       PMEM_F_MEM_NODRAIN == PMEM2_F_MEM_NODRAIN, "libpmem and libpmem2 flags differ");

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;

#define GETTER(kind, type, f)							\
	type pmem2_get_##kind##_fn(struct pmem2_map *map)			\
	{									\
		static type const wrappers[SLOTS] = { kind##2_0, kind##2_1,	\
						      kind##2_2, kind##2_3 };	\
		static type (*get)(struct pmem2_map *);				\
		if (!get && !(get = (type (*)(struct pmem2_map *))dlsym(RTLD_NEXT, "pmem2_get_" #kind "_fn"))) \
			die("no next definition of pmem2_get_" #kind "_fn");	\
		type real = get(map);						\
		type out = NULL;						\
		if (S.active)							\
			S.ctr[C_PMEM2_GETS]++;					\
		if (!real)							\
			return real;						\
		pthread_mutex_lock(&slot_lock);					\
		for (int i = 0; i < SLOTS && !out; i++) {			\
			if (!real2_##kind[i])					\
				real2_##kind[i] = real;				\
			if (real2_##kind[i] == real) {				\
				out = wrappers[i];				\
				if (S.active)					\
					S.ctr[C_FN_REAL + (f) + i] = (uintptr_t)real; \
			}							\
		}								\
		pthread_mutex_unlock(&slot_lock);				\
		if (!out)							\
			die("too many distinct pmem2 " #kind " functions");	\
		return out;							\
	}
GETTER(flush, pmem2_flush_fn, F2_FLUSH)
GETTER(drain, pmem2_drain_fn, F2_DRAIN)
GETTER(persist, pmem2_persist_fn, F2_PERSIST)
GETTER(memcpy, pmem2_memcpy_fn, F2_MEMCPY)
GETTER(memmove, pmem2_memmove_fn, F2_MEMMOVE)
GETTER(memset, pmem2_memset_fn, F2_MEMSET)

int pmem2_deep_flush(struct pmem2_map *map, void *ptr, size_t size)
{
	/* after the lines are flushed: it flushes them again and drains (or msyncs) */
	WRAP_BEGIN(C_PMEM2_PERSIST, F2_DEEP_FLUSH);
	int r = REAL(pmem2_deep_flush, F2_DEEP_FLUSH)(map, ptr, size);
	WRAP_END(ptr, size, 1, 1);
	return r;
}

int msync(void *addr, size_t len, int flags)
{
	if (S.active) {
		S.ctr[C_MSYNC_ALL]++;
		if (S.line_mode && (flags & MS_SYNC)) {
			/* on DAX: a flush of the range's lines and a drain */
			if (!in_wrapper) {
				S.ctr[C_LINE_MSYNC]++;
				line_flush(addr, len);
				line_drain();
			}
		} else if (flags & MS_SYNC)
			record_msync(addr, len);
		else
			S.ctr[C_MSYNC_ASYNC]++;	/* MS_ASYNC starts nothing durable on Linux */
	}
	return (int)syscall(SYS_msync, addr, len, flags);
}

int fsync(int fd)
{
	if (S.active) {
		S.ctr[C_FSYNC_ALL]++;
		if (fd_is_region(fd))
			record_file(REC_FSYNC, 0, 0);
	}
	return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd)
{
	if (S.active) {
		S.ctr[C_FDATASYNC_ALL]++;
		if (fd_is_region(fd))
			record_file(REC_FDATASYNC, 0, 0);
	}
	return (int)syscall(SYS_fdatasync, fd);
}

int sync_file_range(int fd, off_t off, off_t len, unsigned int flags)
{
	if (S.active) {
		S.ctr[C_SFR_ALL]++;
		/* only WAIT_AFTER makes the range durable (and not even metadata) */
		if ((flags & SYNC_FILE_RANGE_WAIT_AFTER) && fd_is_region(fd))
			record_file(REC_SYNC_FILE_RANGE, (uint64_t)off, (uint64_t)len);
	}
	return (int)syscall(SYS_sync_file_range, fd, off, len, flags);
}

int syncfs(int fd)
{
	if (S.active) {
		struct stat st;
		S.ctr[C_SYNCFS_ALL]++;
		if (syscall(SYS_fstat, fd, &st) == 0 && st.st_dev == S.dev)
			record_file(REC_SYNCFS, 0, 0);
	}
	return (int)syscall(SYS_syncfs, fd);
}

void sync(void)
{
	if (S.active) {
		S.ctr[C_SYNCFS_ALL]++;
		record_file(REC_SYNCFS, 0, 0);
	}
	syscall(SYS_sync);
}
