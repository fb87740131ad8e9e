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
#include <string.h>
#include <sys/stat.h>
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

int region_copy(struct region *r, void *dst, const void *src, size_t len)
{
	GUARDED(r, r->memcpy_fn(dst, src, len, PMEM2_F_MEM_NOFLUSH));
	return 0;
}

int region_read(struct region *r, void *dst, const void *src, size_t len)
{
	GUARDED(r, memcpy(dst, src, len));
	return 0;
}

int region_zero(struct region *r, void *dst, size_t len)
{
	GUARDED(r, r->memset_fn(dst, 0, len, PMEM2_F_MEM_NOFLUSH));
	return 0;
}

int region_fill(struct region *r, void *dst, size_t len,
		int (*read)(void *ctx, void *dst, size_t len), void *ctx)
{
	int ret;

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
