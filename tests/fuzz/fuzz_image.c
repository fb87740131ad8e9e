/*
 * fuzz_image: a damaged pmfuse image is refused cleanly or survives every
 * operation -- it never crashes, hangs or reads outside what it may read.
 *
 * A libFuzzer target (LLVMFuzzerTestOneInput) that also builds with gcc and
 * replay.c's main() for CI.  At start it builds one small valid region
 * (the base image, see build_base()) holding every kind of persistent
 * object pmfuse has, and catalogues those objects by walking it.  An input
 * is a list of patches to those objects (the format is below); each
 * execution restores the base image, applies the patches, and runs
 *   1. fsck_check(): fsck.pmfuse's checker, in-process and read-only
 *      (copy-on-write open), so the image it saw is the one mounted next;
 *   2. fs_mount(): the daemon's validators, through the core, no FUSE;
 *   3. if it mounted: a scripted walk through the core -- readdir of every
 *      reachable directory, lookup/getattr/readlink/listxattr/getxattr of
 *      every entry, reads of every regular file (each byte of each segment
 *      touched, each segment checked to lie in a data piece or the zero
 *      buffer), a write, a create + write + unlink, more changes chosen by
 *      the input -- and fs_unmount(), optionally a second mount and walk.
 * A crash, a sanitizer report, a hang (libFuzzer's -timeout) or a failed
 * oracle (abort() with a message, below) is a bug.  Refusals are not:
 * fs_mount() failing, ops returning -EIO, fsck reporting problems.
 *
 * Oracles besides "no crash":
 *   - fsck says clean (0)        => fs_mount succeeds and no op gives -EIO;
 *   - fs_mount succeeds          => fsck did not give up on the region (8);
 *   - read segments point into a data piece (not the backup block) or the
 *     zero buffer, and add up to what fs_read reports.
 *
 * Input format (all little-endian):
 *   byte 0      ops: extra operations to run after a successful mount
 *               (OP_* below)
 *   byte 1      choice: which entry/file the extra operations pick
 *   then up to MAX_PATCHES records of
 *     byte 0    kind: object kind (enum kind), modulo K_NKINDS
 *     byte 1    index: which object of that kind, modulo how many exist
 *     byte 2    bits 0-4: len - 1 (1..32 data bytes follow)
 *               bits 5-6: how to apply (PATCH_*)
 *               bit 7:    fix up after all patches: recompute the checksum
 *                         or name hash that covers this object, so damage
 *                         gets past the integrity checks to the validators
 *     byte 3-4  offset in the object, modulo its length
 *     len bytes data
 *   A truncated last record is ignored.  Patches are clipped to their
 *   object.  Object indices follow the catalogue order of the base image:
 *   changing build_base() reshuffles what old corpus inputs hit (they stay
 *   valid inputs, they just test other bytes).
 *
 * Per-execution cost is kept low (PMFUSE_FUZZ_PROFILE=1 prints where it
 * goes): the region is a 32 MiB sparse file on /dev/shm, restored by
 * copying back only the base image's pages an execution changed and
 * punching the ones it added (restore()); libpmemobj's own ~10,000
 * allocations per open come from a small uninstrumented allocator with a
 * leak check per execution (pm_malloc()).
 */
#include "dir.h"
#include "core.h"
#include "fsck.h"
#include "log.h"
#include "pool.h"
#include "xattr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REGION_SIZE	PMFUSE_MIN_REGION
#define MAX_PATCHES	16
#define PAGE		4096u

/* libpmemobj 1.12's pool header and descriptor (see daemon/pool.c) */
#define POOL_HDR_SIZE		4096u
#define POOL_HDR_CSUM_OFF	4088u
#define POOL_HDR_CSUM_END	2048u	/* POOL_FEAT_CKSUM_2K: the checksum covers 2 KiB */
#define OBJ_DSC_OFF		4096u
#define OBJ_DSC_SIZE		2048u	/* checksummed part: layout .. checksum */
#define OBJ_DSC_CSUM_OFF	(OBJ_DSC_SIZE - 8)
#define OBJ_ROOT_OFFSET_OFF	(OBJ_DSC_OFF + 2048u)
#define OBJ_DSC_PATCH_SIZE	(2048u + 24)	/* through root_offset, run_id, root_size */

/* ops byte */
#define OP_UNLINK	0x01	/* unlink (or rmdir) the chosen entry */
#define OP_TRUNCATE	0x02	/* truncate the chosen file to half its size */
#define OP_XATTR	0x04	/* setxattr + removexattr on the chosen inode */
#define OP_RENAME	0x08	/* rename the chosen entry into the root */
#define OP_PUNCH	0x10	/* punch a hole in and fallocate the chosen file */
#define OP_STATS	0x20	/* the root's user.pmfuse.stats (walks every file map) */
#define OP_LINK		0x40	/* hard-link the chosen file into the root */
#define OP_REMOUNT	0x80	/* after unmounting: mount and walk once more */

enum patch_how { PATCH_SET, PATCH_XOR, PATCH_ADD, PATCH_POINTER };

enum kind {
	K_POOLHDR,	/* pmemobj pool header */
	K_POOLDESC,	/* pmemobj pool descriptor: layout, lanes, heap, root */
	K_SUPER,	/* superblock (root object) */
	K_BACKUP,	/* backup geometry in the first block of run 0 */
	K_ITABLE,	/* inode table */
	K_ICHUNK,	/* inode table chunk (64 records, used or free) */
	K_INODE,	/* a used inode record */
	K_DIRTAB,	/* directory chunk table */
	K_DIRCHUNK,	/* directory chunk (64 dirents) */
	K_DIRENT,	/* a live dirent */
	K_NAME,		/* long entry name */
	K_XATTR,	/* xattr set */
	K_SYMLINK,	/* long symlink target */
	K_MAPNODE,	/* file map node */
	K_PIECES,	/* the data piece table (format 2 and later) */
	K_NKINDS
};

struct obj {
	uint64_t off, len;
	uint64_t aux;		/* K_NAME: offset of the dirent naming it */
};

static struct catalog {
	struct obj *o;
	size_t n, cap;
} cat[K_NKINDS];

static struct {
	char path[128];
	int fd;
	unsigned char *img;	/* MAP_SHARED view of the region file */
	unsigned char *base;	/* the pristine image */
	struct { uint64_t off, len; } *runs;	/* its non-zero page runs */
	size_t nruns;
	bool verbose;
} H;

/*
 * PMFUSE_FUZZ_PROFILE=1: CPU time (user + system) of each phase of an
 * execution, summed over all executions and printed at exit.
 */
enum phase { PH_RESTORE, PH_PATCH, PH_FSCK, PH_MOUNT, PH_WALK, PH_UNMOUNT, PH_REMOUNT, PH_N };
static const char *const phase_name[PH_N] = {
	"restore", "patch", "fsck", "mount", "walk+changes", "unmount", "remount+walk"
};
static struct {
	bool on;
	uint64_t last, ns[PH_N], execs, reruns;
} P;

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The phase that just ended. */
static void phase(enum phase ph)
{
	uint64_t now;

	if (!P.on)
		return;
	now = cpu_ns();
	P.ns[ph] += now - P.last;
	P.last = now;
}

static void profile_report(void)
{
	uint64_t sum = 0;

	for (int i = 0; i < PH_N; i++)
		sum += P.ns[i];
	fprintf(stderr, "fuzz_image: profile of %" PRIu64 " executions, CPU us per execution:\n",
		P.execs);
	for (int i = 0; i < PH_N; i++)
		fprintf(stderr, "  %-14s %8.1f\n", phase_name[i],
			P.execs ? P.ns[i] / 1e3 / (double)P.execs : 0.0);
	fprintf(stderr, "  %-14s %8.1f\n", "total", P.execs ? sum / 1e3 / (double)P.execs : 0.0);
	fprintf(stderr, "  (%" PRIu64 " executions run again: libpmemobj kept more blocks)\n", P.reruns);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_image: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static uint64_t rd64(const unsigned char *img, uint64_t off)
{
	uint64_t v;

	memcpy(&v, img + off, sizeof(v));
	return v;
}

static void wr64(unsigned char *img, uint64_t off, uint64_t v)
{
	memcpy(img + off, &v, sizeof(v));
}

/* ------------------------------------------------------------------ */
/* libpmemobj's own allocations */

/*
 * libpmemobj mallocs about 10,000 runtime objects (11 MB) at every open --
 * three log contexts for each of the pool's 1024 lanes and one more for
 * its undo recovery, the heap's buckets -- and frees them at close.
 * Through the sanitizer's allocator (a stack trace, redzones, quarantine
 * for each) that was half of an execution, through glibc's a quarter, and
 * it buys little: libpmemobj is not instrumented, so its own accesses are
 * never checked, only the libc calls it makes (memset, memcpy) against the
 * redzones.  So they come from this allocator: size classes of powers
 * of two with a free list each, the same sizes every open.  It aborts on a
 * double or foreign free, and an execution must give back every block it
 * takes (the leak check LSan did for them).  pmfuse's own allocations stay
 * with the sanitizer.
 */
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);

#if defined(__clang__)
#define PM_ALLOC_FN __attribute__((no_sanitize("address", "undefined", "coverage")))
#else
#define PM_ALLOC_FN __attribute__((no_sanitize_address, no_sanitize_undefined))
#endif

#define PM_MIN_SHIFT	4
#define PM_NCLASSES	24		/* 16 B .. 128 MiB */
#define PM_LIVE		0x6c69766570616c6cull	/* header magic of a block in use */
#define PM_FREE		0x6672656570616c6cull	/* ... and of a free one */

struct pm_hdr {
	uint64_t magic;
	uint32_t cls;
	uint32_t pad;
};

static struct pm_hdr *pm_freelist[PM_NCLASSES];
static long pm_live;	/* libpmemobj's blocks not yet freed */

PM_ALLOC_FN static void *pm_malloc(size_t size)
{
	unsigned cls = 0;
	struct pm_hdr *h;

	while (cls < PM_NCLASSES && (1ull << (cls + PM_MIN_SHIFT)) < size)
		cls++;
	if (cls == PM_NCLASSES)
		return NULL;
	h = pm_freelist[cls];
	if (h) {
		pm_freelist[cls] = *(struct pm_hdr **)(h + 1);
	} else {
		h = __libc_malloc(sizeof(*h) + (1ull << (cls + PM_MIN_SHIFT)));
		if (!h)
			return NULL;
		h->cls = cls;
	}
	h->magic = PM_LIVE;
	pm_live++;
	return h + 1;
}

PM_ALLOC_FN static void pm_free(void *ptr)
{
	struct pm_hdr *h = (struct pm_hdr *)ptr - 1;

	if (!ptr)
		return;
	if (h->magic != PM_LIVE)
		die("libpmemobj freed %p, %s", ptr,
		    h->magic == PM_FREE ? "a block it had freed already" : "not one of its blocks");
	h->magic = PM_FREE;
	*(struct pm_hdr **)ptr = pm_freelist[h->cls];
	pm_freelist[h->cls] = h;
	pm_live--;
}

PM_ALLOC_FN static void *pm_realloc(void *ptr, size_t size)
{
	struct pm_hdr *h = (struct pm_hdr *)ptr - 1;
	size_t cap;
	void *p;

	if (!ptr)
		return pm_malloc(size);
	if (h->magic != PM_LIVE)
		die("libpmemobj reallocated %p, not a block in use", ptr);
	if (size == 0) {
		pm_free(ptr);
		return NULL;
	}
	cap = 1ull << (h->cls + PM_MIN_SHIFT);
	if (size <= cap)
		return ptr;
	if (!(p = pm_malloc(size)))
		return NULL;
	memcpy(p, ptr, cap);
	pm_free(ptr);
	return p;
}

PM_ALLOC_FN static char *pm_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = pm_malloc(n);

	if (p)
		memcpy(p, s, n);
	return p;
}

/* ------------------------------------------------------------------ */
/* the base image */

static const struct fs_cred root_cred = { 0, 0, 0, 0 };

#define LONG_NAME "a-name-longer-than-thirty-two-bytes-kept-out-of-line"
#define LONG_TARGET "a/symlink/target/longer/than/the/eighty/bytes/that/fit/inline/in/the/inode/record"

static uint64_t mk(struct fs *fs, uint64_t dir, const char *name, mode_t mode)
{
	struct fs_attr st;
	int ret = fs_mknod(fs, dir, name, mode, mode & S_IFCHR ? 0x0501 : 0, &root_cred, &st);

	if (ret)
		die("base image: mknod %s: %s", name, strerror(-ret));
	return st.st.st_ino;
}

static void put(struct fs *fs, uint64_t ino, uint64_t off, size_t len)
{
	static char buf[1 << 16];

	memset(buf, (int)(ino * 13 + off / PAGE), sizeof(buf));
	while (len) {
		size_t n = len < sizeof(buf) ? len : sizeof(buf);
		ssize_t w = fs_write(fs, ino, off, buf, n, false);
		if (w != (ssize_t)n)
			die("base image: write inode %" PRIu64 ": %zd", ino, w);
		off += n;
		len -= n;
	}
}

static void setx(struct fs *fs, uint64_t ino, const char *name, const char *value)
{
	int ret = fs_setxattr(fs, ino, name, value, strlen(value), 0, NULL);

	if (ret)
		die("base image: setxattr %s: %s", name, strerror(-ret));
}

/*
 * Runs in a child that exits without unmounting (a crash), so the two
 * files unlinked while open stay on the orphan list.  Every kind of object
 * gets at least one instance; the sparse file has a five-level map.
 */
static void populate(const char *path)
{
	struct fs_opts o = { 0 };
	struct fs *fs;
	struct fs_attr st;
	char why[POOL_WHY], name[32];
	int ret;

	if (fs_mount(&fs, path, &o, why, sizeof(why)))
		die("base image: mount: %s", why);
	uint64_t d1 = mk(fs, PMFUSE_ROOT_INO, "d1", S_IFDIR | 0755);
	uint64_t d2 = mk(fs, d1, "d2", S_IFDIR | 0700);
	uint64_t small = mk(fs, PMFUSE_ROOT_INO, "small", S_IFREG | 0644);
	put(fs, small, 0, 5000);
	setx(fs, small, "user.one", "1");
	setx(fs, small, "user.two", "a longer value for the second attribute");
	setx(fs, d1, "user.dir", "on a directory");
	uint64_t lng = mk(fs, d1, LONG_NAME, S_IFREG | 0600);
	put(fs, lng, 4096, 100);
	if ((ret = fs_symlink(fs, PMFUSE_ROOT_INO, "ln", "small", &root_cred, &st)) ||
	    (ret = fs_symlink(fs, d1, "long-link", LONG_TARGET, &root_cred, &st)) ||
	    (ret = fs_link(fs, small, d2, "hardlink", &st)))
		die("base image: symlink/link: %s", strerror(-ret));
	/* blocks 0, 75, 2^18 + 3 (1 GiB on), 2^29 + 7 (2 TiB on): map height 5 */
	uint64_t sparse = mk(fs, PMFUSE_ROOT_INO, "sparse", S_IFREG | 0644);
	put(fs, sparse, 0, PAGE);
	put(fs, sparse, 75ull * PAGE, 2 * PAGE);
	put(fs, sparse, ((1ull << 18) + 3) * PAGE, PAGE);
	put(fs, sparse, ((1ull << 29) + 7) * PAGE, PAGE);
	/* 2 MiB aligned in the file: level-1 leaves */
	uint64_t big = mk(fs, d1, "big", S_IFREG | 0644);
	put(fs, big, 0, 2u << 20);
	mk(fs, PMFUSE_ROOT_INO, "fifo", S_IFIFO | 0644);
	mk(fs, d1, "chr", S_IFCHR | 0644);
	/* more than one directory chunk: names of one inode, so the walk stays cheap */
	uint64_t many = mk(fs, d2, "e00", S_IFREG | 0644);
	for (int i = 1; i < 70; i++) {
		snprintf(name, sizeof(name), "e%02d", i);
		if ((ret = fs_link(fs, many, d2, name, &st)))
			die("base image: link %s: %s", name, strerror(-ret));
	}
	put(fs, many, 0, 10);
	/* preallocated: unwritten leaves (a 2 MiB one, split around a written block) */
	uint64_t pre = mk(fs, d1, "prealloc", S_IFREG | 0644);
	if ((ret = fs_fallocate(fs, pre, 0, 0, 4u << 20)))
		die("base image: fallocate: %s", strerror(-ret));
	put(fs, pre, (2u << 20) + 5 * PAGE + 10, 100);
	/* two orphans: unlinked while open when the "crash" comes */
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "orphan%d", i);
		uint64_t ino = mk(fs, d1, name, S_IFREG | 0644);
		put(fs, ino, 0, 3 * PAGE);
		setx(fs, ino, "user.orphan", "x");
		if ((ret = fs_open(fs, ino, O_RDWR, NULL)) || (ret = fs_unlink(fs, d1, name)))
			die("base image: orphan: %s", strerror(-ret));
	}
	_exit(0);
}

static void build_base(void)
{
	struct pool_format_opts fo = { .sparse = true, .label = "fuzz" };
	char why[POOL_WHY];
	pid_t pid;
	int status;

	H.fd = open(H.path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (H.fd < 0 || ftruncate(H.fd, REGION_SIZE))
		die("%s: %s", H.path, strerror(errno));
	if (pool_format(H.path, &fo, why, sizeof(why)))
		die("format: %s", why);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		populate(H.path);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		die("building the base image failed");

	H.img = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, H.fd, 0);
	H.base = malloc(REGION_SIZE);
	if (H.img == MAP_FAILED || !H.base)
		die("mapping the base image: %s", strerror(errno));
	/* the crash left it "mounted"; the usual case to fuzz is a clean image */
	uint64_t sb_off = rd64(H.img, OBJ_ROOT_OFFSET_OFF);
	((struct pmfuse_super *)(H.img + sb_off))->state = PMFUSE_STATE_CLEAN;
	memcpy(H.base, H.img, REGION_SIZE);
}

/* ------------------------------------------------------------------ */
/* integrity fields the fixups recompute */

/*
 * libpmemobj's header checksums (util_checksum): Fletcher-64 over 32-bit
 * little-endian words, the checksum's own 8 bytes and everything from
 * end on counted as zero words.  Checked against the base image at start.
 */
static uint64_t fletcher64(const unsigned char *p, size_t len, size_t csum_off, size_t end)
{
	uint32_t lo = 0, hi = 0;

	for (size_t i = 0; i < len; i += 4) {
		uint32_t w = 0;
		if (i < end && (i < csum_off || i >= csum_off + 8))
			memcpy(&w, p + i, 4);
		lo += w;
		hi += lo;
	}
	return (uint64_t)hi << 32 | lo;
}

static void fix_pool_hdr(unsigned char *img)
{
	wr64(img, POOL_HDR_CSUM_OFF, fletcher64(img, POOL_HDR_SIZE, POOL_HDR_CSUM_OFF, POOL_HDR_CSUM_END));
}

static void fix_pool_desc(unsigned char *img)
{
	unsigned char *d = img + OBJ_DSC_OFF;

	wr64(d, OBJ_DSC_CSUM_OFF, fletcher64(d, OBJ_DSC_SIZE, OBJ_DSC_CSUM_OFF, OBJ_DSC_SIZE));
}

static void fix_geometry(unsigned char *img, uint64_t off)
{
	struct pmfuse_geometry g;

	memcpy(&g, img + off, sizeof(g));
	g.checksum = pool_geometry_checksum(&g);
	memcpy(img + off, &g, sizeof(g));
}

/* Recompute a dirent's name hash, if its name can be read at all. */
static void fix_dirent(unsigned char *img, uint64_t off)
{
	struct pmfuse_dirent de;
	const char *name;

	memcpy(&de, img + off, sizeof(de));
	if (de.name_len <= PMFUSE_INLINE_NAME)
		name = de.name;
	else if (de.name_off < REGION_SIZE && de.name_len <= REGION_SIZE - de.name_off)
		name = (const char *)img + de.name_off;
	else
		return;
	de.hash = dir_hash(name, de.name_len);
	memcpy(img + off, &de, sizeof(de));
}

/* ------------------------------------------------------------------ */
/* the catalogue of the base image's objects */

static void cat_add(enum kind k, uint64_t off, uint64_t len, uint64_t aux)
{
	struct catalog *c = &cat[k];

	if (off >= REGION_SIZE || len == 0 || len > REGION_SIZE - off)
		die("base image: object of kind %d at %" PRIu64 "+%" PRIu64 " is outside the region",
		    k, off, len);
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->o = realloc(c->o, c->cap * sizeof(*c->o));
		if (!c->o)
			die("out of memory");
	}
	c->o[c->n++] = (struct obj){ off, len, aux };
}

static void cat_map(const unsigned char *img, uint64_t e, unsigned level)
{
	if (e == 0 || pmfuse_map_is_leaf(e) || level == 0)
		return;
	cat_add(K_MAPNODE, e, sizeof(struct pmfuse_mapnode), 0);
	for (unsigned i = 0; i < PMFUSE_MAP_SLOTS; i++)
		cat_map(img, rd64(img, e + 8 * i), level - 1);
}

static void cat_dir(const unsigned char *img, const struct pmfuse_inode *pi)
{
	const struct pmfuse_dirtab *t = (const void *)(img + pi->dir_off);

	if (!pi->dir_off)
		return;
	cat_add(K_DIRTAB, pi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t), 0);
	for (uint64_t c = 0; c < t->nchunks; c++) {
		const struct pmfuse_dirchunk *ch = (const void *)(img + t->chunk[c]);
		cat_add(K_DIRCHUNK, t->chunk[c], sizeof(*ch), 0);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++) {
			const struct pmfuse_dirent *de = &ch->ent[i];
			uint64_t off = t->chunk[c] + i * sizeof(*de);
			if (!de->ino)
				continue;
			cat_add(K_DIRENT, off, sizeof(*de), 0);
			if (de->name_len > PMFUSE_INLINE_NAME)
				cat_add(K_NAME, de->name_off, de->name_len, off);
		}
	}
}

static void build_catalog(void)
{
	const unsigned char *img = H.base;
	uint64_t sb_off = rd64(img, OBJ_ROOT_OFFSET_OFF);
	const struct pmfuse_super *sb = (const void *)(img + sb_off);
	const struct pmfuse_itable *it = (const void *)(img + sb->geo.itable_off);

	if (fletcher64(img, POOL_HDR_SIZE, POOL_HDR_CSUM_OFF, POOL_HDR_CSUM_END) !=
	    rd64(img, POOL_HDR_CSUM_OFF) ||
	    fletcher64(img + OBJ_DSC_OFF, OBJ_DSC_SIZE, OBJ_DSC_CSUM_OFF, OBJ_DSC_SIZE) !=
	    rd64(img + OBJ_DSC_OFF, OBJ_DSC_CSUM_OFF))
		die("the pmemobj checksums of the base image are not what this harness computes:"
		    " another libpmemobj format?");
	cat_add(K_POOLHDR, 0, POOL_HDR_SIZE, 0);
	cat_add(K_POOLDESC, OBJ_DSC_OFF, OBJ_DSC_PATCH_SIZE, 0);
	cat_add(K_SUPER, sb_off, sizeof(*sb), 0);
	cat_add(K_BACKUP, sb->geo.runs[0].off, sizeof(struct pmfuse_geometry), 0);
	cat_add(K_ITABLE, sb->geo.itable_off,
		sizeof(*it) + pmfuse_itable_entries(sb->geo.version, it->nchunks) * sizeof(uint64_t), 0);
	const struct pmfuse_pieces *pt = (const void *)(img + sb->pieces_off);
	cat_add(K_PIECES, sb->pieces_off, sizeof(*pt) + pt->cap * sizeof(struct pmfuse_piece), 0);
	for (uint64_t c = 0; c < it->nchunks; c++) {
		const struct pmfuse_ileaf *leaf = NULL;
		if (sb->geo.version >= 5) {
			uint64_t l = it->chunk[c / PMFUSE_ILEAF_CHUNKS];
			if (!l) {
				c += PMFUSE_ILEAF_CHUNKS - 1 - c % PMFUSE_ILEAF_CHUNKS;
				continue;
			}
			if (c % PMFUSE_ILEAF_CHUNKS == 0)
				cat_add(K_ITABLE, l, sizeof(*leaf), 0);
			leaf = (const void *)(img + l);
		}
		uint64_t coff = leaf ? leaf->chunk[c % PMFUSE_ILEAF_CHUNKS] : it->chunk[c];
		if (!coff)
			continue;
		cat_add(K_ICHUNK, coff, PMFUSE_ICHUNK_SIZE, 0);
		for (unsigned i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
			uint64_t off = coff + i * sizeof(struct pmfuse_inode);
			const struct pmfuse_inode *pi = (const void *)(img + off);
			if (!pi->mode)
				continue;
			cat_add(K_INODE, off, sizeof(*pi), 0);
			if (pi->xattr_off)
				cat_add(K_XATTR, pi->xattr_off,
					sizeof(struct pmfuse_xattrs) +
					((const struct pmfuse_xattrs *)(img + pi->xattr_off))->used, 0);
			if (S_ISDIR(pi->mode))
				cat_dir(img, pi);
			else if (S_ISLNK(pi->mode) && pi->size > PMFUSE_INLINE_SYMLINK)
				cat_add(K_SYMLINK, pi->dir_off, pi->size, 0);
			else if (S_ISREG(pi->mode))
				cat_map(img, pi->map_root, pi->map_height);
		}
	}
	for (int k = 0; k < K_NKINDS; k++)
		if (!cat[k].n)
			die("the base image has no object of kind %d", k);
	if (H.verbose)
		for (int k = 0; k < K_NKINDS; k++)
			fprintf(stderr, "fuzz_image: kind %d: %zu object(s)\n", k, cat[k].n);
}

/* The runs of non-zero pages: all a restore has to write after punching. */
static void find_nonzero_runs(void)
{
	static const unsigned char zero[PAGE];
	size_t cap = 0;

	for (uint64_t off = 0; off < REGION_SIZE; off += PAGE) {
		if (!memcmp(H.base + off, zero, PAGE))
			continue;
		if (H.nruns && H.runs[H.nruns - 1].off + H.runs[H.nruns - 1].len == off) {
			H.runs[H.nruns - 1].len += PAGE;
			continue;
		}
		if (H.nruns == cap) {
			cap = cap ? 2 * cap : 64;
			H.runs = realloc(H.runs, cap * sizeof(*H.runs));
			if (!H.runs)
				die("out of memory");
		}
		H.runs[H.nruns].off = off;
		H.runs[H.nruns].len = PAGE;
		H.nruns++;
	}
}

static void punch(uint64_t off, uint64_t len)
{
	if (len && fallocate(H.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		die("punching %s: %s", H.path, strerror(errno));
}

/* Punch what of [start, end) lies outside the base image's non-zero runs. */
static void punch_outside_runs(uint64_t start, uint64_t end)
{
	uint64_t cur = start;

	for (size_t i = 0; i < H.nruns && cur < end; i++) {
		uint64_t ro = H.runs[i].off, re = ro + H.runs[i].len;
		if (re <= cur)
			continue;
		if (ro >= end)
			break;
		if (ro > cur)
			punch(cur, ro - cur);
		cur = re;
	}
	if (cur < end)
		punch(cur, end - cur);
}

/*
 * Does a page differ from the base image's?  Not memcmp(): under ASan and
 * libFuzzer each call also checks both ranges' shadow and feeds the bytes
 * compared to the fuzzer's table of compare operands, for 1,300 pages an
 * execution.
 */
#if defined(__clang__)
__attribute__((no_sanitize("address", "coverage")))
#else
__attribute__((no_sanitize_address))
#endif
static bool page_differs(const unsigned char *a, const unsigned char *b)
{
	typedef uint64_t v2 __attribute__((vector_size(16)));
	v2 acc = { 0, 0 };

	for (size_t i = 0; i < PAGE; i += 4 * sizeof(v2)) {
		v2 x[4], y[4];
		memcpy(x, a + i, sizeof(x));
		memcpy(y, b + i, sizeof(y));
		acc |= (x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]);
	}
	return (acc[0] | acc[1]) != 0;
}

/*
 * Undo what the last execution wrote: an execution changes a few dozen
 * pages of the base image's ~1300 non-zero ones and adds a few outside
 * them.  The changed ones are found by comparing with the base image
 * through the region's mapping, the added ones by asking the (sparse)
 * region file where its data is: every page outside the non-zero runs
 * that has any is punched.
 */
static void restore(void)
{
	off_t off = 0, d, h;

	for (size_t i = 0; i < H.nruns; i++)
		for (uint64_t p = H.runs[i].off; p < H.runs[i].off + H.runs[i].len; p += PAGE)
			if (page_differs(H.img + p, H.base + p))
				memcpy(H.img + p, H.base + p, PAGE);
	while ((d = lseek(H.fd, off, SEEK_DATA)) >= 0 && d < (off_t)REGION_SIZE) {
		if ((h = lseek(H.fd, d, SEEK_HOLE)) < 0)
			die("SEEK_HOLE in %s: %s", H.path, strerror(errno));
		if (h > (off_t)REGION_SIZE)
			h = (off_t)REGION_SIZE;
		punch_outside_runs((uint64_t)d, (uint64_t)h);
		off = h;
	}
	if (d < 0 && errno != ENXIO)
		die("SEEK_DATA in %s: %s", H.path, strerror(errno));
}

/* ------------------------------------------------------------------ */
/* patches */

struct patch {
	enum kind kind;
	const struct obj *obj;
	bool fixup;
};

static const struct obj *pick(unsigned kind, unsigned idx)
{
	const struct catalog *c = &cat[kind % K_NKINDS];

	return &c->o[idx % c->n];
}

static void apply_one(const struct obj *o, unsigned how, uint64_t at, const uint8_t *d,
		      size_t len)
{
	unsigned char *p = H.img + o->off;

	if (how == PATCH_ADD || how == PATCH_POINTER) {
		/* a u64 inside the object: shift `at` back if the object ends first */
		uint64_t v, add;
		if (o->len < 8)
			return;
		if (at > o->len - 8)
			at = o->len - 8;
		memcpy(&v, p + at, 8);
		if (how == PATCH_ADD) {
			int64_t delta = 0;
			memcpy(&delta, d, len > 8 ? 8 : len);
			if (len < 8 && (d[len - 1] & 0x80))	/* sign-extend */
				delta |= (int64_t)(~0ull << (8 * len));
			add = (uint64_t)delta;
		} else {
			/* the offset of another object, plus a small signed delta */
			int16_t delta = 0;
			if (len >= 4)
				memcpy(&delta, d + 2, 2);
			const struct obj *t = pick(d[0], len >= 2 ? d[1] : 0);
			v = t->off;
			add = (uint64_t)(int64_t)delta;
		}
		v += add;
		memcpy(p + at, &v, 8);
		return;
	}
	if (len > o->len - at)
		len = o->len - at;
	for (size_t i = 0; i < len; i++)
		p[at + i] = how == PATCH_XOR ? p[at + i] ^ d[i] : d[i];
}

static void fixup(const struct patch *pt)
{
	const struct obj *o = pt->obj;

	switch (pt->kind) {
	case K_POOLHDR: fix_pool_hdr(H.img); break;
	case K_POOLDESC: fix_pool_desc(H.img); break;
	case K_SUPER: case K_BACKUP: fix_geometry(H.img, o->off); break;
	case K_DIRENT: fix_dirent(H.img, o->off); break;
	case K_NAME: fix_dirent(H.img, o->aux); break;
	case K_DIRCHUNK:
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++)
			if (rd64(H.img, o->off + i * sizeof(struct pmfuse_dirent)))
				fix_dirent(H.img, o->off + i * sizeof(struct pmfuse_dirent));
		break;
	default: break;	/* no integrity field covers it */
	}
}

/* Apply the input's patches to the restored image. */
static void apply_patches(const uint8_t *d, size_t n)
{
	struct patch pts[MAX_PATCHES];
	size_t np = 0;

	while (np < MAX_PATCHES && n >= 5) {
		unsigned kind = d[0] % K_NKINDS, how = (d[2] >> 5) & 3;
		size_t len = (d[2] & 31u) + 1;
		const struct obj *o = pick(kind, d[1]);
		uint64_t at = (d[3] | (uint64_t)d[4] << 8) % o->len;
		if (n - 5 < len)
			break;
		apply_one(o, how, at, d + 5, len);
		pts[np++] = (struct patch){ (enum kind)kind, o, (d[2] & 0x80) != 0 };
		d += 5 + len;
		n -= 5 + len;
	}
	for (size_t i = 0; i < np; i++)
		if (pts[i].fixup)
			fixup(&pts[i]);
}

/* ------------------------------------------------------------------ */
/* the walk through the core */

struct ent {
	uint64_t dir, ino;
	unsigned type;
	char name[PMFUSE_NAME_MAX + 1];
	bool nameok;		/* no NUL inside: can be looked up */
};

#define MAX_ENTS	512
#define MAX_READ	(256u << 10)

struct walk {
	struct fs *fs;
	bool strict;		/* fsck said clean: -EIO is a bug */
	uint8_t *seen;		/* inodes visited (directories: queued), by ino */
	uint64_t queue[MAX_ENTS];
	bool held[MAX_ENTS];	/* queue[i] holds a lookup reference until listed */
	size_t qhead, qtail;
	struct ent ents[MAX_ENTS];
	size_t nents;
	uint64_t dir;		/* being listed */
	volatile uint64_t sink;
};

/* An error from the core: refusals are fine, unless fsck called the image clean. */
static void check_ret(struct walk *w, const char *op, uint64_t ino, long long ret)
{
	if (ret >= 0)
		return;
	if (ret == -EIO || ret == -EUCLEAN) {
		if (w->strict)
			die("%s on inode %" PRIu64 ": %s, but fsck found the image clean", op, ino,
			    strerror((int)-ret));
		return;
	}
	if (ret == -ENOMEM)
		die("%s on inode %" PRIu64 ": out of memory", op, ino);
}

static int list_cb(void *ctx, const char *name, size_t len, uint64_t ino, unsigned type,
		   int64_t next)
{
	struct walk *w = ctx;
	struct ent *e;

	(void)next;
	if (w->nents == MAX_ENTS)
		return 1;
	if (len > PMFUSE_NAME_MAX)
		die("readdir of %" PRIu64 " gave a name of %zu bytes", w->dir, len);
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.')) {
		w->sink += ino;
		return 0;
	}
	e = &w->ents[w->nents++];
	e->dir = w->dir;
	e->ino = ino;
	e->type = type;
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	e->nameok = memchr(name, '\0', len) == NULL && len > 0;
	return 0;
}

static int stop_cb(void *ctx, const char *name, size_t len, uint64_t ino, unsigned type,
		   int64_t next)
{
	int *left = ctx;

	(void)name;
	(void)len;
	(void)ino;
	(void)type;
	(void)next;
	return --*left <= 0;
}

struct read_ctx {
	struct walk *w;
	uint64_t ino;
};

/* Every segment lies in one data piece (not the backup block) or the zero buffer. */
static bool seg_ok(struct fs *fs, const char *p, size_t len)
{
	const char *z = fs->zero;

	if (p >= z && p <= z + fs->zero_size && len <= (size_t)(z + fs->zero_size - p))
		return true;
	if (p < fs->region.base || len == 0 || (uint64_t)(p - fs->region.base) >= fs->pool.size ||
	    len > fs->pool.size - (uint64_t)(p - fs->region.base))
		return false;
	uint64_t off = (uint64_t)(p - fs->region.base);
	uint64_t first = off >> PMFUSE_BLOCK_SHIFT, last = (off + len - 1) >> PMFUSE_BLOCK_SHIFT;
	return pool_block_range_ok(&fs->pool, first, last - first + 1);
}

/*
 * Load every byte (a word at a time): a segment that is not mapped faults.
 * Without coverage instrumentation: a traced compare per byte read would
 * cost more than the rest of an execution.  Without ASan's checks: seg_ok()
 * has already placed the segment in the region's data pieces or the zero
 * buffer, mappings ASan never poisons.
 */
#if defined(__clang__)
__attribute__((no_sanitize("address", "coverage")))
#else
__attribute__((no_sanitize_address))
#endif
static uint64_t touch(const unsigned char *p, size_t len)
{
	uint64_t acc = 0, w;
	size_t i = 0;

	for (; len - i >= sizeof(w); i += sizeof(w)) {
		memcpy(&w, p + i, sizeof(w));
		acc += w;
	}
	for (; i < len; i++)
		acc += p[i];
	return acc;
}

static int read_cb(void *ctx, const struct fs_seg *segs, int n, size_t total)
{
	struct read_ctx *rc = ctx;
	size_t sum = 0;
	uint64_t acc = 0;

	if (n < 0 || n > FS_READ_MAXSEGS)
		die("fs_read of inode %" PRIu64 ": %d segments", rc->ino, n);
	for (int i = 0; i < n; i++) {
		const unsigned char *p = segs[i].ptr;
		if (!seg_ok(rc->w->fs, segs[i].ptr, segs[i].len))
			die("fs_read of inode %" PRIu64 ": segment %d (%zu bytes at %p) is outside the"
			    " data pieces and the zero buffer", rc->ino, i, segs[i].len, segs[i].ptr);
		acc += touch(p, segs[i].len);
		sum += segs[i].len;
	}
	if (sum != total)
		die("fs_read of inode %" PRIu64 ": segments add up to %zu bytes, total says %zu",
		    rc->ino, sum, total);
	rc->w->sink += acc;
	return 0;
}

static void read_at(struct walk *w, uint64_t ino, uint64_t off, size_t len)
{
	struct read_ctx rc = { w, ino };

	check_ret(w, "read", ino, fs_read(w->fs, ino, off, len, read_cb, &rc, 0));
}

static void read_file(struct walk *w, uint64_t ino, uint64_t size)
{
	char buf[1024];
	int64_t pos = 0;

	if (fs_open(w->fs, ino, O_RDONLY, NULL))
		return;
	read_at(w, ino, 0, MAX_READ);
	read_at(w, ino, size > 65536 ? size - 65536 : 0, 65536 + 100);
	/* the data extents, as SEEK_DATA/SEEK_HOLE find them */
	for (int i = 0; i < 8; i++) {
		int64_t d = fs_lseek(w->fs, ino, pos, SEEK_DATA);
		if (d < 0) {
			check_ret(w, "lseek", ino, d);
			break;
		}
		read_at(w, ino, (uint64_t)d, 65536);
		int64_t h = fs_lseek(w->fs, ino, d, SEEK_HOLE);
		if (h <= d) {
			if (h < 0)
				check_ret(w, "lseek", ino, h);
			else
				die("SEEK_HOLE from %" PRId64 " in inode %" PRIu64 " gave %" PRId64,
				    d, ino, h);
			break;
		}
		pos = h;
	}
	ssize_t n = fs_getxattr(w->fs, ino, "user.pmfuse.extents", buf, sizeof(buf));
	check_ret(w, "extents", ino, n);
	fs_release(w->fs, ino);
}

static void xattrs(struct walk *w, uint64_t ino)
{
	char list[4096], val[65536];
	ssize_t n = fs_listxattr(w->fs, ino, NULL, 0);

	check_ret(w, "listxattr", ino, n);
	n = fs_listxattr(w->fs, ino, list, sizeof(list));
	check_ret(w, "listxattr", ino, n);
	if (n <= 0)
		return;
	if ((size_t)n > sizeof(list) || list[n - 1] != '\0')
		die("listxattr of inode %" PRIu64 " gave %zd bytes, not NUL-terminated", ino, n);
	for (char *name = list; name < list + n; name += strlen(name) + 1) {
		ssize_t v = fs_getxattr(w->fs, ino, name, NULL, 0);
		check_ret(w, "getxattr", ino, v);
		v = fs_getxattr(w->fs, ino, name, val, sizeof(val));
		check_ret(w, "getxattr", ino, v);
		if (v > (ssize_t)sizeof(val))
			die("getxattr of inode %" PRIu64 " returned %zd bytes", ino, v);
	}
}

/* Everything read-only about one inode. */
static void visit(struct walk *w, const struct ent *e)
{
	struct fs_attr st;
	char buf[PMFUSE_SYMLINK_MAX + 2];
	uint64_t ino = e->ino;
	bool looked_up = false;
	int ret;

	if (e->nameok) {
		ret = fs_lookup(w->fs, e->dir, e->name, &st);
		check_ret(w, "lookup", e->dir, ret);
		if (ret == 0) {
			ino = st.st.st_ino;
			looked_up = true;
		}
	}
	ret = fs_getattr(w->fs, ino, &st);
	check_ret(w, "getattr", ino, ret);
	/*
	 * A directory to list keeps its lookup reference until it has been
	 * (as the kernel keeps it while it looks up the entries): with none,
	 * the core drops its index, and rebuilds it at each lookup in it.
	 */
	if (looked_up && !(ret == 0 && S_ISDIR(st.st.st_mode) && ino < w->fs->max_inodes &&
			   !w->seen[ino] && w->qtail < MAX_ENTS))
		fs_forget(w->fs, ino, 1);
	/* the rest once per inode: hard links and damaged entries repeat inodes */
	if (ret || ino >= w->fs->max_inodes || w->seen[ino])
		return;
	w->seen[ino] = 1;
	xattrs(w, ino);
	if (S_ISLNK(st.st.st_mode)) {
		ret = fs_readlink(w->fs, ino, buf, sizeof(buf));
		check_ret(w, "readlink", ino, ret);
		if (ret == 0 && strlen(buf) > PMFUSE_SYMLINK_MAX)
			die("readlink of inode %" PRIu64 " gave %zu bytes", ino, strlen(buf));
	} else if (S_ISREG(st.st.st_mode)) {
		read_file(w, ino, (uint64_t)st.st.st_size);
	} else if (S_ISDIR(st.st.st_mode) && w->qtail < MAX_ENTS) {
		w->held[w->qtail] = looked_up;
		w->queue[w->qtail++] = ino;
	}
}

/* Breadth-first over the tree: every directory listed, every entry visited. */
static void walk_tree(struct walk *w)
{
	struct statvfs sv;
	int left = 3;

	fs_statfs(w->fs, &sv);
	w->seen[PMFUSE_ROOT_INO] = 1;
	w->queue[w->qtail++] = PMFUSE_ROOT_INO;
	xattrs(w, PMFUSE_ROOT_INO);
	while (w->qhead < w->qtail) {
		size_t first = w->nents, q = w->qhead++;
		w->dir = w->queue[q];
		check_ret(w, "readdir", w->dir, fs_readdir(w->fs, w->dir, 0, list_cb, w));
		/* resuming from an offset: the third entry on */
		check_ret(w, "readdir", w->dir, fs_readdir(w->fs, w->dir, 5, stop_cb, &left));
		left = 3;
		for (size_t i = first; i < w->nents; i++)
			visit(w, &w->ents[i]);
		if (w->held[q])
			fs_forget(w->fs, w->dir, 1);
	}
}

/* The input's choice among the entries found, if any. */
static const struct ent *chosen(struct walk *w, unsigned choice, bool want_file)
{
	for (size_t k = 0; k < w->nents; k++) {
		const struct ent *e = &w->ents[(choice + k) % w->nents];
		if (e->nameok && (!want_file || e->type == DT_REG))
			return e;
	}
	return NULL;
}

static void changes(struct walk *w, unsigned ops, unsigned choice)
{
	static char buf[3 * PAGE];
	const struct ent *f = chosen(w, choice, true), *e = chosen(w, choice, false);
	struct fs *fs = w->fs;
	struct fs_attr st;
	int ret;

	memset(buf, 0x5a, sizeof(buf));
	/* always: overwrite and extend an existing file, create, write, unlink */
	if (f && fs_getattr(fs, f->ino, &st) == 0 && S_ISREG(st.st.st_mode)) {
		check_ret(w, "write", f->ino, fs_write(fs, f->ino, 100, buf, PAGE, false));
		check_ret(w, "write", f->ino, fs_write(fs, f->ino, (uint64_t)st.st.st_size, buf,
						       sizeof(buf), choice & 1));
		check_ret(w, "fsync", f->ino, fs_fsync(fs, f->ino, false));
	}
	ret = fs_mknod(fs, PMFUSE_ROOT_INO, "fuzz-new", S_IFREG | 0644, 0, &root_cred, &st);
	check_ret(w, "create", PMFUSE_ROOT_INO, ret);
	if (ret == 0) {
		uint64_t ino = st.st.st_ino;
		check_ret(w, "write", ino, fs_write(fs, ino, 3 * PAGE + 5, buf, sizeof(buf), false));
		read_at(w, ino, 0, MAX_READ);
		check_ret(w, "unlink", PMFUSE_ROOT_INO, fs_unlink(fs, PMFUSE_ROOT_INO, "fuzz-new"));
		fs_forget(fs, ino, 1);
	}
	if ((ops & OP_TRUNCATE) && f && fs_getattr(fs, f->ino, &st) == 0) {
		struct stat a = { .st_size = st.st.st_size / 2 };
		check_ret(w, "truncate", f->ino, fs_setattr(fs, f->ino, &a, FS_SET_SIZE, NULL, &st));
	}
	if ((ops & OP_PUNCH) && f) {
		check_ret(w, "punch", f->ino, fs_fallocate(fs, f->ino,
			  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE, 2 * PAGE));
		check_ret(w, "fallocate", f->ino, fs_fallocate(fs, f->ino, 0, 0, 8 * PAGE));
	}
	if ((ops & OP_XATTR) && e) {
		check_ret(w, "setxattr", e->ino, fs_setxattr(fs, e->ino, "user.fuzz", "v", 1, 0, NULL));
		check_ret(w, "removexattr", e->ino, fs_removexattr(fs, e->ino, "user.one"));
	}
	if ((ops & OP_LINK) && f) {
		ret = fs_link(fs, f->ino, PMFUSE_ROOT_INO, "fuzz-link", &st);
		check_ret(w, "link", f->ino, ret);
		if (ret == 0)
			fs_forget(fs, f->ino, 1);
	}
	if ((ops & OP_RENAME) && e)
		check_ret(w, "rename", e->dir, fs_rename(fs, e->dir, e->name, PMFUSE_ROOT_INO,
							 "fuzz-renamed", choice & 2 ? FS_RENAME_EXCHANGE : 0));
	if ((ops & OP_UNLINK) && e) {
		/* after a rename the entry may be gone: either name */
		ret = e->type == DT_DIR ? fs_rmdir(fs, e->dir, e->name) : fs_unlink(fs, e->dir, e->name);
		if (ret == -ENOENT)
			ret = e->type == DT_DIR ? fs_rmdir(fs, PMFUSE_ROOT_INO, "fuzz-renamed")
						: fs_unlink(fs, PMFUSE_ROOT_INO, "fuzz-renamed");
		check_ret(w, "unlink", e->dir, ret);
	}
	if (ops & OP_STATS) {
		char text[1024];
		check_ret(w, "stats", 1, fs_getxattr(fs, PMFUSE_ROOT_INO, "user.pmfuse.stats", text,
						     sizeof(text)));
	}
}

static void run_mounted(struct fs *fs, bool strict, unsigned ops, unsigned choice, bool change)
{
	static struct walk walk;	/* 150 KiB: not allocated per execution */
	struct walk *w = &walk;

	memset(w, 0, offsetof(struct walk, ents));
	w->nents = 0;
	if (!(w->seen = calloc(fs->max_inodes, 1)))
		die("out of memory");
	w->fs = fs;
	w->strict = strict;
	walk_tree(w);
	if (change)
		changes(w, ops, choice);
	free(w->seen);
}

/* ------------------------------------------------------------------ */

static void remove_image(void)
{
	unlink(H.path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("PMFUSE_FUZZ_DIR");

	(void)argc;
	(void)argv;
	H.verbose = getenv("PMFUSE_FUZZ_VERBOSE") != NULL;
	if (!H.verbose) {
		/* fsck's report and the core's notices: thousands of lines a second */
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, STDOUT_FILENO);
			close(null);
		}
		log_set_level(LOG_CRIT);
	}
	pmemobj_set_funcs(pm_malloc, pm_free, pm_realloc, pm_strdup);
	snprintf(H.path, sizeof(H.path), "%s/pmfuse-fuzz-%d.img", dir ? dir : "/dev/shm",
		 (int)getpid());
	build_base();
	atexit(remove_image);
	find_nonzero_runs();
	build_catalog();
	if ((P.on = getenv("PMFUSE_FUZZ_PROFILE") != NULL))
		atexit(profile_report);
	return 0;
}

static int run_one(const uint8_t *data, size_t size)
{
	struct fs_opts o = { 0 };
	struct fs *fs;
	char why[POOL_WHY];
	unsigned ops = size > 0 ? data[0] : 0, choice = size > 1 ? data[1] : 0;
	int rc, ret;

	if (P.on) {
		P.execs++;
		P.last = cpu_ns();
	}
	restore();
	phase(PH_RESTORE);
	if (size > 2)
		apply_patches(data + 2, size - 2);
	phase(PH_PATCH);

	rc = fsck_check(H.path, false, false);
	phase(PH_FSCK);
	ret = fs_mount(&fs, H.path, &o, why, sizeof(why));
	phase(PH_MOUNT);
	if (H.verbose)
		fprintf(stderr, "fuzz_image: fsck %d, mount %d (%s)\n", rc, ret, why);
	if (ret) {
		if (rc == 0)
			die("fsck found the image clean, but fs_mount refused it: %s", why);
		if (ret == -ENOMEM)
			die("fs_mount: out of memory: %s", why);
		return 0;
	}
	if (rc == 8)
		die("fsck could not check the image (exit 8), but fs_mount accepted it");
	run_mounted(fs, rc == 0, ops, choice, true);
	phase(PH_WALK);
	fs_unmount(fs);
	phase(PH_UNMOUNT);
	if (ops & OP_REMOUNT) {
		if (fs_mount(&fs, H.path, &o, why, sizeof(why)) == 0) {
			run_mounted(fs, false, 0, 0, false);
			fs_unmount(fs);
		}
		phase(PH_REMOUNT);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool warm;
	long live;

	if (!H.base)
		LLVMFuzzerInitialize(NULL, NULL);
	/*
	 * libpmemobj's process-wide tables (open pools by uuid and address,
	 * this thread's lanes) keep the nodes they grow for reuse, the removed
	 * ones after 16 more removals: the first executions grow them (warm-up
	 * below), a new path may grow them once.  An execution that leaves more
	 * blocks allocated than it found is run again, and only if that leaves
	 * more again is it a leak.
	 */
	if (!warm) {
		static const uint8_t unpatched[2] = { OP_REMOUNT, 0 };
		warm = true;
		for (int i = 0; i < 16; i++)
			run_one(unpatched, sizeof(unpatched));
	}
	live = pm_live;
	run_one(data, size);
	if (pm_live != live) {
		live = pm_live;
		P.reruns++;
		run_one(data, size);
		if (pm_live != live)
			die("libpmemobj holds %ld blocks after this execution, %ld before it: a pool"
			    " left open, or a leak", pm_live, live);
	}
	return 0;
}
