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
 * Trace format (little-endian, host order):
 *   record: struct trace_rec, then entries { u64 file_off; u8 page[4096] },
 *           ended by an entry whose file_off is TRACE_END (no page follows).
 */
/* mmap and mmap64 are two symbols here: no redirection of one to the other */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
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

enum rec_kind {
	REC_MSYNC = 1,
	REC_FSYNC = 2,
	REC_FDATASYNC = 3,
	REC_SYNC_FILE_RANGE = 4,
	REC_SYNCFS = 5,
	REC_DIRTY = 16,			/* not a point: live, unpersisted pages at point k */
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
	C_WORDS
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
	if (stat(region, &st) < 0 || !S_ISREG(st.st_mode))
		die("PMFUSE_CRASH_REGION is not a regular file");
	S.dev = st.st_dev;
	S.ino = st.st_ino;
	S.size = (uint64_t)st.st_size;
	S.dirty_every = every ? strtoull(every, NULL, 10) : 0;
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
	for (uint64_t done = 0; done < S.size;) {
		long n = syscall(SYS_pread64, S.read_fd, S.shadow + done, S.size - done, (long)done);
		if (n <= 0)
			die("cannot read the region");
		done += (uint64_t)n;
	}
	S.active = 1;
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
static void record_file(uint32_t kind, uint64_t off, uint64_t len)
{
	uint64_t k, end;

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

int msync(void *addr, size_t len, int flags)
{
	if (S.active) {
		S.ctr[C_MSYNC_ALL]++;
		if (flags & MS_SYNC)
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
