/*
 * region: open and map a pmfuse region with libpmem2.  We ask for PAGE
 * granularity, which pmem2 accepts for any source, and then read back the
 * granularity it actually gives (byte on eADR pmem, cache line on ADR pmem,
 * page on an ordinary file) so the persistence functions match the media.
 */
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The guarded access running on this thread, if any (see region.h). */
/* volatile: the handler reads them, so no store may be elided or moved */
static __thread sigjmp_buf *volatile fault_jmp;
static __thread struct region *volatile fault_region;
static struct sigaction prev_sigbus;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
	struct region *r = fault_region;
	sigjmp_buf *jb = fault_jmp;
	char *a = si->si_addr;

	(void)sig;
	(void)uctx;
	if (jb && r && a >= r->base && a < r->base + r->size) {
		fault_jmp = NULL;
		atomic_fetch_add_explicit(&r->media_errors, 1, memory_order_relaxed);
		siglongjmp(*jb, 1);
	}
	/* not ours: the access faults again under the disposition we replaced */
	sigaction(SIGBUS, &prev_sigbus, NULL);
}

static void install_sigbus(void)
{
	struct sigaction sa = { 0 };

	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;	/* siglongjmp leaves SIGBUS unblocked */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &prev_sigbus);
}

/*
 * Each guarded access: arm, access, disarm.  sigsetjmp without the signal
 * mask costs no system call.  Nothing is live across the jump but the
 * return value.
 */
#define GUARDED(r, access)						\
	do {								\
		sigjmp_buf jb;						\
		if (sigsetjmp(jb, 0))					\
			return -EIO;					\
		fault_region = (r);					\
		fault_jmp = &jb;					\
		atomic_signal_fence(memory_order_seq_cst);		\
		access;							\
		atomic_signal_fence(memory_order_seq_cst);		\
		fault_jmp = NULL;					\
	} while (0)

/* Zeros for the fd path: never written, so the kernel's zero page where it has one. */
#define ZEROS_LEN (64u << 10)
static const char zeros[ZEROS_LEN];

/*
 * The fd path (fd_io).  Errors come back as errno: EIO is the kernel's
 * report of a bad page (counted as a media error), ENOSPC a region file
 * whose file system is full.  A short transfer means the file ends before
 * the mapping does (truncated under us): EIO too, never a silent extension.
 */
static int fd_io_error(struct region *r, int err)
{
	if (err == ENOSPC || err == EDQUOT)
		return -ENOSPC;
	atomic_fetch_add_explicit(&r->media_errors, 1, memory_order_relaxed);
	return -EIO;
}

static int plain_io(int fd, void *buf, size_t len, uint64_t off, bool write)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = write ? pwrite(fd, (char *)buf + done, len - done, (off_t)(off + done))
				  : pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EINVAL;	/* past the end */
		done += (size_t)n;
	}
	return 0;
}

static int fd_transfer(struct region *r, void *buf, size_t len, uint64_t off, bool write)
{
	int err;

	if (off > r->size || len > r->size - off)
		return fd_io_error(r, EIO);
	err = plain_io(r->fd, buf, len, off, write);
	return err ? fd_io_error(r, -err) : 0;
}

static uint64_t region_off(const struct region *r, const void *p)
{
	return (uint64_t)((const char *)p - r->base);
}

int region_copy(struct region *r, void *dst, const void *src, size_t len)
{
	if (r->fd_io)
		return fd_transfer(r, (void *)src, len, region_off(r, dst), true);
	GUARDED(r, r->memcpy_fn(dst, src, len, PMEM2_F_MEM_NOFLUSH));
	return 0;
}

int region_read(struct region *r, void *dst, const void *src, size_t len)
{
	if (r->fd_io)
		return fd_transfer(r, dst, len, region_off(r, src), false);
	GUARDED(r, memcpy(dst, src, len));
	return 0;
}

static int fd_zero(struct region *r, uint64_t off, size_t len)
{
	struct iovec iov[64];

	if (off > r->size || len > r->size - off)
		return fd_io_error(r, EIO);
	while (len) {
		int cnt = 0;
		size_t n = 0;

		for (; cnt < 64 && n < len; cnt++) {
			size_t k = len - n < ZEROS_LEN ? len - n : ZEROS_LEN;

			iov[cnt] = (struct iovec){ (void *)zeros, k };
			n += k;
		}
		ssize_t done = pwritev(r->fd, iov, cnt, (off_t)off);

		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0)
			return fd_io_error(r, done < 0 ? errno : EIO);
		off += (uint64_t)done;
		len -= (size_t)done;
	}
	return 0;
}

int region_zero(struct region *r, void *dst, size_t len)
{
	if (r->fd_io)
		return fd_zero(r, region_off(r, dst), len);
	GUARDED(r, r->memset_fn(dst, 0, len, PMEM2_F_MEM_NOFLUSH));
	return 0;
}

int region_fill(struct region *r, void *dst, size_t len,
		int (*read)(void *ctx, void *dst, size_t len),
		int (*to_fd)(void *ctx, int fd, uint64_t off, size_t len), void *ctx)
{
	int ret;

	if (r->fd_io && to_fd) {
		uint64_t off = region_off(r, dst);

		if (off > r->size || len > r->size - off)
			return fd_io_error(r, EIO);
		ret = to_fd(ctx, r->fd, off, len);
		return ret == 0 ? 0 : fd_io_error(r, -ret);
	}
	GUARDED(r, ret = read(ctx, dst, len));
	/* a reader's EFAULT is the kernel meeting the same bad page */
	return ret ? -EIO : 0;
}

static void load_lines(const void *p, size_t len)
{
	const volatile char *c = p;

	for (size_t i = 0; i < len; i += 64)
		(void)c[i];
	if (len)
		(void)c[len - 1];
}

int region_probe(struct region *r, const void *p, size_t len)
{
	GUARDED(r, load_lines(p, len));
	return 0;
}

int region_flush(struct region *r, const void *p, size_t len)
{
	GUARDED(r, r->flush_fn(p, len));
	return 0;
}

int region_persist(struct region *r, const void *p, size_t len)
{
	if (len)
		GUARDED(r, r->persist_fn(p, len));
	return 0;
}

/*
 * What the first access to a page through a new mapping costs here, in ns
 * per 4 KiB page: a memfd's pages, written by the kernel first (so that
 * the host has backed them: only the mapping is new), mapped afresh and
 * read once each.  About 100 ns on bare metal or under EPT (the read fault maps 16
 * pages at once); about 5000 ns under a hypervisor that shadows guest page
 * tables, where every page pays its own exit.  -1 if it cannot be measured.
 */
#define PROBE_PAGES 256
static long first_touch_ns(void)
{
	long ps = sysconf(_SC_PAGESIZE), ns = -1;
	size_t len = (size_t)PROBE_PAGES * (size_t)ps;
	int fd = memfd_create("pmfuse-probe", MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	struct iovec iov[PROBE_PAGES * 4096 / ZEROS_LEN];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(iov) / sizeof(iov[0]); i++, n += ZEROS_LEN)
		iov[i] = (struct iovec){ (void *)zeros, ZEROS_LEN };
	if (ps == 4096 && pwritev(fd, iov, (int)(sizeof(iov) / sizeof(iov[0])), 0) == (ssize_t)n) {
		const volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
						 fd, 0);

		if (p != MAP_FAILED) {
			struct timespec t0, t1;

			clock_gettime(CLOCK_MONOTONIC, &t0);
			for (size_t i = 0; i < len; i += (size_t)ps)
				(void)p[i];
			clock_gettime(CLOCK_MONOTONIC, &t1);
			ns = ((t1.tv_sec - t0.tv_sec) * 1000000000L + t1.tv_nsec - t0.tv_nsec) /
			     PROBE_PAGES;
			munmap((void *)p, len);
		}
	}
	close(fd);
	return ns;
}

/*
 * At page granularity the region is an ordinary file (on tmpfs, or a file
 * system without DAX): its bytes live in the page cache, and what makes
 * them durable is msync of the range (pmem2's flush there), which writes
 * back the range's pages however they were dirtied.  So file data may move
 * with pread/pwrite instead, the kernel copying through its own map of the
 * pages.  Which is faster depends on the host: through our mapping a page
 * costs a fault on its first access per mount, and where that fault is
 * dear (first_touch_ns: ~5 us under shadow paging, where a new file's first
 * write ran 8x slower than an overwrite and every read after a remount paid
 * it too) the fd wins; elsewhere the mapping's plain memcpy does (pwrite
 * costs ~1 us per call and per-page work in the kernel).  At cache-line or
 * byte granularity (real pmem, DAX) stores through the mapping are the
 * point: no page cache, huge pages, user-space flushes.
 * PMFUSE_REGION_IO=map or =fd overrides the choice at page granularity.
 */
#define FD_IO_FIRST_TOUCH_NS 1500
static bool use_fd_io(struct region *r)
{
	const char *env = getenv("PMFUSE_REGION_IO");
	struct stat st;

	if (r->granularity != PMEM2_GRANULARITY_PAGE || fstat(r->fd, &st) || !S_ISREG(st.st_mode))
		return false;
	if (env && strcmp(env, "map") == 0)
		return false;
	if (env && strcmp(env, "fd") == 0)
		return true;
	r->first_touch_ns = first_touch_ns();
	return r->first_touch_ns > FD_IO_FIRST_TOUCH_NS;
}

int region_open(struct region *r, const char *path, char *why, size_t whylen)
{
	struct pmem2_config *cfg = NULL;
	struct pmem2_source *src = NULL;
	int ret;

	pthread_once(&sigbus_once, install_sigbus);
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
	r->fd_io = use_fd_io(r);
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

int region_mapped_io(int fd, void *buf, size_t len, uint64_t off, bool write)
{
	struct pmem2_config *cfg = NULL;
	struct pmem2_source *src = NULL;
	struct pmem2_map *map = NULL;
	size_t size;
	int ret = -EIO;

	if (pmem2_source_from_fd(&src, fd) || pmem2_source_size(src, &size))
		goto out;
	if (off > size || len > size - off) {
		ret = -EINVAL;
		goto out;
	}
	if (pmem2_config_new(&cfg) ||
	    pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) ||
	    pmem2_config_set_protection(cfg, write ? PMEM2_PROT_READ | PMEM2_PROT_WRITE
						 : PMEM2_PROT_READ) ||
	    pmem2_map_new(&map, cfg, src))
		goto out;
	char *base = pmem2_map_get_address(map);
	if (write)
		pmem2_get_memcpy_fn(map)(base + off, buf, len, 0);	/* persisted */
	else
		memcpy(buf, base + off, len);
	ret = 0;
out:
	if (map)
		pmem2_map_delete(&map);
	if (cfg)
		pmem2_config_delete(&cfg);
	if (src)
		pmem2_source_delete(&src);
	return ret;
}

static int region_io(int fd, void *buf, size_t len, uint64_t off, bool write)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return S_ISCHR(st.st_mode) ? region_mapped_io(fd, buf, len, off, write)
				   : plain_io(fd, buf, len, off, write);
}

int region_pread(int fd, void *buf, size_t len, uint64_t off)
{
	return region_io(fd, buf, len, off, false);
}

int region_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return region_io(fd, (void *)buf, len, off, true);
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
