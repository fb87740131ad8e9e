/*
 * Test-only: make pages of the region fault like poisoned pmem.
 *
 * LD_PRELOADed into the daemon.  A thread watches the control file named
 * by $PMFUSE_POISON_CTL; the test writes "poison OFF LEN" or "heal OFF LEN"
 * (byte offsets into the region file named by $PMFUSE_POISON_REGION) to
 * CTL.tmp and renames it to CTL.  The thread then replaces, in every
 * mapping of the region in this process, the pages of that range with a
 * shared mapping of an empty memfd -- so any load or store there raises
 * SIGBUS, as a poisoned page of real pmem does -- or maps the region file
 * back over them ("heal"; the file itself was never touched).  It answers
 * by creating CTL.done holding "ok N" (pages remapped) or "error ...".
 *
 * Where the daemon moves file data through the region's file descriptor
 * (page granularity: region.c use_fd_io) the kernel would report such a
 * page as EIO from pread/pwrite: so pread/pwrite/preadv/pwritev of the
 * region file that touch a poisoned range fail with EIO here too.
 *
 * The kernel here has no memory-failure injection (MADV_HWPOISON), and a
 * truncated region would take metadata with it; this is the one way to
 * poison data pages only.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char region[PATH_MAX];
static char ctl[PATH_MAX];

static int answer(const char *fmt, long v, const char *s)
{
	char tmp[PATH_MAX + 16], done[PATH_MAX + 16];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.done.tmp", ctl);
	snprintf(done, sizeof(done), "%s.done", ctl);
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, fmt, v, s);
	fclose(f);
	return rename(tmp, done);
}

/* Pages now poisoned: where they are, to map the file back over them. */
struct range {
	uintptr_t a;
	size_t n;
	uint64_t foff;
};
static struct range poisoned[64];
static int npoisoned;

/* Where [off, off + len) of the region file is mapped in this process. */
static int find_mappings(uint64_t off, uint64_t len, struct range *out, int max)
{
	char line[PATH_MAX + 256];
	FILE *maps = fopen("/proc/self/maps", "r");
	int n = 0;

	if (!maps)
		return -errno;
	while (fgets(line, sizeof(line), maps) && n < max) {
		uintptr_t start, end;
		unsigned long long foff;
		char path[PATH_MAX] = "";
		if (sscanf(line, "%lx-%lx %*s %llx %*s %*s %4095[^\n]", &start, &end, &foff,
			   path) < 3 || strcmp(path, region) != 0)
			continue;
		uint64_t mfirst = foff, mlast = foff + (end - start);
		uint64_t lo = off > mfirst ? off : mfirst;
		uint64_t hi = off + len < mlast ? off + len : mlast;
		if (lo >= hi)
			continue;
		out[n++] = (struct range){ start + (lo - mfirst), hi - lo, lo };
	}
	fclose(maps);
	return n;
}

/* The poisoned file ranges, for the fd path. */
static struct { uint64_t off, len; } bad[64];
static atomic_int nbad;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;
static dev_t region_dev;
static ino_t region_ino;

static bool fd_hits_poison(int fd, uint64_t off, size_t len)
{
	struct stat st;
	bool hit = false;

	if (atomic_load(&nbad) == 0 || fstat(fd, &st) || st.st_dev != region_dev ||
	    st.st_ino != region_ino)
		return false;
	pthread_mutex_lock(&bad_lock);
	for (int i = 0; i < nbad && !hit; i++)
		hit = off < bad[i].off + bad[i].len && bad[i].off < off + len;
	pthread_mutex_unlock(&bad_lock);
	if (hit)
		errno = EIO;
	return hit;
}

static size_t iov_len(const struct iovec *iov, int cnt)
{
	size_t n = 0;

	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

#define REAL(name) \
	static __typeof__(name) *real; \
	if (!real) \
		real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	REAL(pread64);
	return fd_hits_poison(fd, (uint64_t)off, n) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64);
	return fd_hits_poison(fd, (uint64_t)off, n) ? -1 : real(fd, buf, n, off);
}

ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(preadv64);
	return fd_hits_poison(fd, (uint64_t)off, iov_len(iov, cnt)) ? -1 : real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev64);
	return fd_hits_poison(fd, (uint64_t)off, iov_len(iov, cnt)) ? -1 : real(fd, iov, cnt, off);
}

static long poison(uint64_t off, uint64_t len)
{
	struct range r[16];
	int memfd = memfd_create("pmfuse-poison", MFD_CLOEXEC);
	int n = find_mappings(off, len, r, 16);
	long pages = 0;

	if (memfd < 0)
		return -errno;
	for (int i = 0; i < n && npoisoned < 64; i++) {
		/* an empty file: every access to these pages is SIGBUS */
		if (mmap((void *)r[i].a, r[i].n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 memfd, 0) == MAP_FAILED) {
			pages = -errno;
			break;
		}
		poisoned[npoisoned++] = r[i];
		pages += r[i].n / 4096;
	}
	close(memfd);
	pthread_mutex_lock(&bad_lock);
	if (nbad < 64) {
		bad[nbad].off = off;
		bad[nbad].len = len;
		atomic_fetch_add(&nbad, 1);
	}
	pthread_mutex_unlock(&bad_lock);
	return n < 0 ? n : pages;
}

static long heal(uint64_t off, uint64_t len)
{
	int rfd = open(region, O_RDWR | O_CLOEXEC);
	long pages = 0;

	if (rfd < 0)
		return -errno;
	for (int i = 0; i < npoisoned; i++) {
		struct range *r = &poisoned[i];
		if (r->foff >= off + len || r->foff + r->n <= off)
			continue;
		if (mmap((void *)r->a, r->n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, rfd,
			 (off_t)r->foff) == MAP_FAILED) {
			pages = -errno;
			break;
		}
		pages += r->n / 4096;
		poisoned[i--] = poisoned[--npoisoned];
	}
	close(rfd);
	pthread_mutex_lock(&bad_lock);
	for (int i = 0; i < nbad; i++)
		if (bad[i].off < off + len && off < bad[i].off + bad[i].len) {
			bad[i] = bad[nbad - 1];
			atomic_fetch_sub(&nbad, 1);
			i--;
		}
	pthread_mutex_unlock(&bad_lock);
	return pages;
}

static void *watch(void *arg)
{
	(void)arg;
	for (;;) {
		char cmd[16];
		unsigned long long off, len;
		FILE *f = fopen(ctl, "r");
		if (!f) {
			usleep(5000);
			continue;
		}
		int n = fscanf(f, "%15s %llu %llu", cmd, &off, &len);
		fclose(f);
		unlink(ctl);
		if (n != 3 || (strcmp(cmd, "poison") && strcmp(cmd, "heal"))) {
			answer("error %ld %s\n", 0, "bad command");
			continue;
		}
		long r = strcmp(cmd, "poison") == 0 ? poison(off, len) : heal(off, len);
		if (r < 0)
			answer("error %ld %s\n", r, strerror((int)-r));
		else
			answer("ok %ld%s\n", r, "");
	}
	return NULL;
}

__attribute__((constructor)) static void poison_init(void)
{
	const char *r = getenv("PMFUSE_POISON_REGION"), *c = getenv("PMFUSE_POISON_CTL");
	pthread_t t;

	if (!r || !c || !realpath(r, region) || strlen(c) >= sizeof(ctl) - 16)
		return;
	strcpy(ctl, c);
	struct stat st;
	if (stat(region, &st) == 0) {
		region_dev = st.st_dev;
		region_ino = st.st_ino;
	}
	/* the daemon's children (none today) must not inherit the watcher */
	unsetenv("LD_PRELOAD");
	if (pthread_create(&t, NULL, watch, NULL) == 0)
		pthread_detach(t);
}
