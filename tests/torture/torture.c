/*
 * torture: many threads at once on a mounted pmfuse, through every path by
 * which a request reaches an inode -- by name (lookups of names being
 * removed), by kernel reference (FORGET storms from drop_caches), by open
 * handle (writes through files unlinked or renamed over while open), and by
 * number (the stats xattr, which covers every inode, and the extents xattr),
 * by file handle (open_by_handle_at, as an NFS server opens files: after a
 * FORGET storm the daemon is asked LOOKUP of "." and ".."; handles of files
 * deleted in bursts that empty inode chunks must be stale), and by
 * direct-access fault (run under LD_PRELOAD=libpmfuse-dax.so, maps
 * of slot files take their write faults, msync and munmap to the daemon).
 *
 * Each worker thread owns a directory of slot files and keeps a model of
 * their bytes: every read (buffered, and O_DIRECT straight from the daemon)
 * must match it, every call on them must succeed.  It also owns the open
 * handles of files it unlinked or renamed over, with their models.  Shared
 * directories take namespace churn from all threads at once, where only
 * ENOENT, EEXIST, ENOTEMPTY and friends are acceptable answers.
 *
 *   torture run MNT STATE SECONDS THREADS SEED
 *	run the workload; at the end close everything, check that the stats
 *	counters agree with a walk of every file, write the model to STATE/
 *   torture verify MNT STATE
 *	after a remount (or a killed daemon): every slot file holds exactly
 *	its model's bytes, every worker directory exactly its model's names
 *
 * Exit 0 when all held, 1 with the failures on stderr.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define SLOTS		8
#define BIG_SLOTS	2		/* the last two: up to BIG_MAX, huge extents */
#define SMALL_MAX	(192u << 10)
#define BIG_MAX		(5u << 20)
#define MAX_DETACHED	4
#define SHARED_NAMES	24
#define BLK		4096u

static const char *mnt;
static atomic_bool stop;
static atomic_int nfail;
static atomic_uint_fast64_t total_ops;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(int tid, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&fail_lock);
	if (atomic_fetch_add(&nfail, 1) < 30) {
		fprintf(stderr, "torture: thread %d: ", tid);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	pthread_mutex_unlock(&fail_lock);
	atomic_store(&stop, true);
}

/* ------------------------------------------------------------ random */

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1DULL;
}

static uint64_t below(struct rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

static void fill_random(struct rng *r, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd(r);
		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

/* ------------------------------------------------------------ models */

struct content {
	uint8_t *data;
	size_t size, cap;
};

static void content_resize(struct content *c, size_t size)
{
	if (size > c->cap) {
		size_t cap = size + (size >> 2) + BLK;
		c->data = realloc(c->data, cap);
		if (!c->data) {
			perror("realloc");
			exit(2);
		}
		c->cap = cap;
	}
	if (size > c->size)
		memset(c->data + c->size, 0, size - c->size);
	c->size = size;
}

static void content_write(struct content *c, size_t off, const uint8_t *p, size_t n)
{
	if (off + n > c->size)
		content_resize(c, off + n);
	memcpy(c->data + off, p, n);
}

static void content_zero(struct content *c, size_t off, size_t n)
{
	if (off >= c->size)
		return;
	if (n > c->size - off)
		n = c->size - off;
	memset(c->data + off, 0, n);
}

#define SAVED_HANDLES	6
#define DEAD		(-2)		/* a saved handle's slot: its file was deleted */

struct saved_handle {
	struct file_handle h;
	unsigned char b[MAX_HANDLE_SZ];
};

struct slot {
	bool exists;
	int fd;				/* open on the slot's name, or -1 */
	struct content c;
};

/* An open handle whose name is gone (unlinked, or renamed over). */
struct detached {
	int fd;
	struct content c;
};

struct worker {
	int id;
	struct rng r;
	char dir[4096];
	struct slot slot[SLOTS];
	struct detached det[MAX_DETACHED];
	int ndet;
	uint8_t *buf, *rbuf, *dbuf;	/* write data, read-back, O_DIRECT (aligned) */
	uint64_t ops;
	unsigned links;
	struct saved_handle saved[SAVED_HANDLES];	/* op_handle's kept handles */
	int saved_slot[SAVED_HANDLES], nsaved;
};

static size_t slot_max(int s)
{
	return s >= SLOTS - BIG_SLOTS ? BIG_MAX : SMALL_MAX;
}

static void slot_path(struct worker *w, int s, char *out, size_t n)
{
	snprintf(out, n, "%s/f%d", w->dir, s);
}

/* ------------------------------------------------------------ checks */

/* Read all of fd from 0 and compare with the model. */
static bool verify_fd(struct worker *w, int fd, const struct content *c, const char *what)
{
	struct stat st;

	if (fstat(fd, &st)) {
		fail(w->id, "fstat %s: %s", what, strerror(errno));
		return false;
	}
	if ((size_t)st.st_size != c->size) {
		fail(w->id, "%s: size %jd, model %zu", what, (intmax_t)st.st_size, c->size);
		return false;
	}
	size_t done = 0;
	while (done < c->size) {
		size_t want = c->size - done < BIG_MAX ? c->size - done : BIG_MAX;
		ssize_t n = pread(fd, w->rbuf, want, (off_t)done);
		if (n <= 0) {
			fail(w->id, "pread %s at %zu: %s", what, done, n ? strerror(errno) : "EOF");
			return false;
		}
		if (memcmp(w->rbuf, c->data + done, (size_t)n)) {
			size_t i = 0;
			while (w->rbuf[i] == c->data[done + i])
				i++;
			fail(w->id, "%s: byte %zu is %#x, model %#x (size %zu)", what, done + i,
			     w->rbuf[i], c->data[done + i], c->size);
			return false;
		}
		done += (size_t)n;
	}
	return true;
}

/* An O_DIRECT read of a block-aligned piece: straight from the daemon. */
static void verify_direct(struct worker *w, const char *path, const struct content *c)
{
	int fd = open(path, O_RDONLY | O_DIRECT);

	if (fd < 0) {
		fail(w->id, "open O_DIRECT %s: %s", path, strerror(errno));
		return;
	}
	size_t off = below(&w->r, c->size / BLK + 1) * BLK, len = (below(&w->r, 16) + 1) * BLK;
	ssize_t n = pread(fd, w->dbuf, len, (off_t)off);
	size_t expect = off >= c->size ? 0 : (c->size - off < len ? c->size - off : len);
	if (n < 0)
		fail(w->id, "O_DIRECT pread %s: %s", path, strerror(errno));
	else if ((size_t)n != expect)
		fail(w->id, "O_DIRECT pread %s at %zu: %zd bytes, model %zu", path, off, n, expect);
	else if (memcmp(w->dbuf, c->data + off, expect))
		fail(w->id, "O_DIRECT pread %s at %zu: bytes differ from the model", path, off);
	close(fd);
}

static void check_call(struct worker *w, int ret, const char *what, int s)
{
	if (ret < 0)
		fail(w->id, "%s (slot %d): %s", what, s, strerror(errno));
}

/* ------------------------------------------------------------ slot operations */

static int slot_fd(struct worker *w, int s)
{
	char p[4200];

	if (w->slot[s].fd >= 0)
		return w->slot[s].fd;
	slot_path(w, s, p, sizeof(p));
	int fd = open(p, O_RDWR);
	if (fd < 0)
		fail(w->id, "open %s: %s", p, strerror(errno));
	return fd;
}

static void slot_done(struct worker *w, int s, int fd)
{
	if (fd >= 0 && fd != w->slot[s].fd) {
		if (below(&w->r, 2))
			w->slot[s].fd = fd;	/* keep it open for a while */
		else if (close(fd))
			fail(w->id, "close slot %d: %s", s, strerror(errno));
	}
}

static void close_slot_fd(struct worker *w, int s)
{
	if (w->slot[s].fd >= 0 && close(w->slot[s].fd))
		fail(w->id, "close slot %d: %s", s, strerror(errno));
	w->slot[s].fd = -1;
}

static void detached_close(struct worker *w, int i)
{
	struct detached *d = &w->det[i];

	verify_fd(w, d->fd, &d->c, "detached handle");
	if (close(d->fd))	/* the last reference: the daemon reclaims it */
		fail(w->id, "close of a detached handle: %s", strerror(errno));
	free(d->c.data);
	w->det[i] = w->det[--w->ndet];
}

/* The slot's open handle outlives its name: keep it, and its model. */
static void detach(struct worker *w, int s)
{
	struct slot *sl = &w->slot[s];

	if (sl->fd < 0) {
		free(sl->c.data);
	} else {
		if (w->ndet == MAX_DETACHED)
			detached_close(w, 0);
		w->det[w->ndet++] = (struct detached){ sl->fd, sl->c };
	}
	sl->fd = -1;
	sl->c = (struct content){ 0 };
	sl->exists = false;
}

static void op_create(struct worker *w, int s)
{
	char p[4200];
	struct slot *sl = &w->slot[s];
	size_t n = below(&w->r, slot_max(s) + 1);

	slot_path(w, s, p, sizeof(p));
	close_slot_fd(w, s);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fail(w->id, "create %s: %s", p, strerror(errno));
		return;
	}
	fill_random(&w->r, w->buf, n);
	ssize_t got = n ? pwrite(fd, w->buf, n, 0) : 0;
	if (got != (ssize_t)n)
		fail(w->id, "write %zu bytes to new %s: %s", n, p, got < 0 ? strerror(errno) : "short");
	if (!sl->exists)
		sl->c = (struct content){ 0 };
	sl->exists = true;
	sl->c.size = 0;
	content_write(&sl->c, 0, w->buf, n);
	if (below(&w->r, 4) == 0)
		check_call(w, fsync(fd), "fsync after create", s);
	slot_done(w, s, fd);
}

static void op_write(struct worker *w, int s)
{
	struct slot *sl = &w->slot[s];
	size_t max = slot_max(s), off = below(&w->r, sl->c.size + 8192);
	size_t n = below(&w->r, below(&w->r, 8) ? 65536 : max) + 1;

	if (off >= max)
		off = max - 1;
	if (off + n > max)
		n = max - off;
	int fd = slot_fd(w, s);
	if (fd < 0)
		return;
	fill_random(&w->r, w->buf, n);
	ssize_t got = pwrite(fd, w->buf, n, (off_t)off);
	if (got != (ssize_t)n)
		fail(w->id, "pwrite %zu at %zu (slot %d): %s", n, off, s,
		     got < 0 ? strerror(errno) : "short");
	else
		content_write(&sl->c, off, w->buf, n);
	if (below(&w->r, 5) == 0)
		check_call(w, below(&w->r, 2) ? fsync(fd) : fdatasync(fd), "fsync", s);
	slot_done(w, s, fd);
}

static void op_read(struct worker *w, int s)
{
	char p[4200];
	int fd = slot_fd(w, s);

	if (fd < 0)
		return;
	verify_fd(w, fd, &w->slot[s].c, "slot file");
	slot_done(w, s, fd);
	if (below(&w->r, 3) == 0) {
		slot_path(w, s, p, sizeof(p));
		verify_direct(w, p, &w->slot[s].c);
	}
}

static void op_truncate(struct worker *w, int s)
{
	char p[4200];
	size_t size = below(&w->r, slot_max(s));

	if (below(&w->r, 2)) {
		slot_path(w, s, p, sizeof(p));
		check_call(w, truncate(p, (off_t)size), "truncate", s);
	} else {
		int fd = slot_fd(w, s);
		if (fd < 0)
			return;
		check_call(w, ftruncate(fd, (off_t)size), "ftruncate", s);
		slot_done(w, s, fd);
	}
	content_resize(&w->slot[s].c, size);
}

static void op_fallocate(struct worker *w, int s)
{
	struct slot *sl = &w->slot[s];
	int kind = (int)below(&w->r, 4), fd = slot_fd(w, s);
	size_t off = below(&w->r, sl->c.size + BLK), len = below(&w->r, 256 << 10) + 1;
	static const int modes[] = { FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				     FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE };

	if (fd < 0)
		return;
	if (off + len > slot_max(s))
		len = off < slot_max(s) ? slot_max(s) - off : 1;
	if (fallocate(fd, modes[kind], (off_t)off, (off_t)len)) {
		if (!(errno == EOPNOTSUPP && kind == 3))
			fail(w->id, "fallocate mode %#x %zu+%zu (slot %d): %s", modes[kind], off, len,
			     s, strerror(errno));
	} else if (kind == 0 || kind == 3) {
		content_zero(&sl->c, off, len);
		if (kind == 3 && off + len > sl->c.size)
			content_resize(&sl->c, off + len);
	} else if (kind == 1 && off + len > sl->c.size) {
		content_resize(&sl->c, off + len);
	}
	slot_done(w, s, fd);
}

static void op_copy(struct worker *w, int a, int b)
{
	struct slot *sa = &w->slot[a], *sb = &w->slot[b];
	size_t soff = below(&w->r, sa->c.size + 1), len = below(&w->r, 128 << 10) + 1;
	size_t doff = below(&w->r, sb->c.size + BLK);

	if (soff + len > sa->c.size)
		len = sa->c.size - soff;
	if (doff + len > slot_max(b))
		return;
	if (a == b && soff < doff + len && doff < soff + len)
		return;		/* overlapping ranges of one file: EINVAL, as Linux */
	if (len == 0)
		return;
	int fa = slot_fd(w, a);
	if (fa < 0)
		return;
	int fb = a == b ? fa : slot_fd(w, b);
	if (fb < 0) {
		slot_done(w, a, fa);
		return;
	}
	loff_t so = (loff_t)soff, dof = (loff_t)doff;
	ssize_t n = copy_file_range(fa, &so, fb, &dof, len, 0);
	if (n < 0) {
		fail(w->id, "copy_file_range %d->%d %zu bytes: %s", a, b, len, strerror(errno));
	} else {
		memcpy(w->buf, sa->c.data + soff, (size_t)n);
		content_write(&sb->c, doff, w->buf, (size_t)n);
	}
	if (a != b)
		slot_done(w, b, fb);
	slot_done(w, a, fa);
}

static void op_rename(struct worker *w, int a, int b)
{
	char pa[4200], pb[4200];

	if (a == b)
		return;
	slot_path(w, a, pa, sizeof(pa));
	slot_path(w, b, pb, sizeof(pb));
	if (w->slot[b].exists && below(&w->r, 3) == 0) {
		if (syscall(SYS_renameat2, AT_FDCWD, pa, AT_FDCWD, pb, RENAME_EXCHANGE)) {
			fail(w->id, "rename exchange %d<->%d: %s", a, b, strerror(errno));
			return;
		}
		struct slot t = w->slot[a];
		w->slot[a] = w->slot[b];
		w->slot[b] = t;
		return;
	}
	if (rename(pa, pb)) {
		fail(w->id, "rename %d->%d: %s", a, b, strerror(errno));
		return;
	}
	/* the file renamed over may still be open here: that handle lives on */
	if (w->slot[b].exists)
		detach(w, b);
	w->slot[b] = w->slot[a];
	w->slot[a] = (struct slot){ .fd = -1 };
}

static void op_unlink(struct worker *w, int s)
{
	char p[4200];

	slot_path(w, s, p, sizeof(p));
	if (below(&w->r, 2) && w->slot[s].fd < 0)
		w->slot[s].fd = slot_fd(w, s);	/* unlink it while open */
	if (unlink(p)) {
		fail(w->id, "unlink %s: %s", p, strerror(errno));
		return;
	}
	detach(w, s);
}

/* A second name, in the shared link directory, removed again later. */
static void op_link(struct worker *w, int s)
{
	char p[4200], l[4200];

	snprintf(l, sizeof(l), "%s/L/w%d-%u", mnt, w->id, w->links % 8);
	if (w->links % 8 == 0 || below(&w->r, 2)) {
		if (unlink(l) && errno != ENOENT)
			fail(w->id, "unlink link %s: %s", l, strerror(errno));
	}
	slot_path(w, s, p, sizeof(p));
	if (link(p, l) && errno != EEXIST)
		fail(w->id, "link %s %s: %s", p, l, strerror(errno));
	w->links++;
}

static void op_detached(struct worker *w)
{
	struct detached *d = &w->det[below(&w->r, (uint64_t)w->ndet)];
	size_t off = below(&w->r, d->c.size + BLK), n = below(&w->r, 32768) + 1;

	switch (below(&w->r, 4)) {
	case 0:
		fill_random(&w->r, w->buf, n);
		if (pwrite(d->fd, w->buf, n, (off_t)off) != (ssize_t)n)
			fail(w->id, "pwrite to a detached handle: %s", strerror(errno));
		else
			content_write(&d->c, off, w->buf, n);
		break;
	case 1:
		verify_fd(w, d->fd, &d->c, "detached handle");
		break;
	case 2:
		if (fsync(d->fd))
			fail(w->id, "fsync of a detached handle: %s", strerror(errno));
		break;
	default:
		detached_close(w, (int)(d - w->det));
	}
}

/* The reported pattern: create, write 70,000 bytes, unlink, close. */
static void op_orphan_cycle(struct worker *w)
{
	char p[4200];
	int fd;

	snprintf(p, sizeof(p), "%s/tmp", w->dir);
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fail(w->id, "create %s: %s", p, strerror(errno));
		return;
	}
	fill_random(&w->r, w->buf, 70000);
	if (pwrite(fd, w->buf, 70000, 0) != 70000)
		fail(w->id, "pwrite 70000 to %s: %s", p, strerror(errno));
	if (unlink(p))
		fail(w->id, "unlink %s: %s", p, strerror(errno));
	if (close(fd))
		fail(w->id, "close of unlinked %s: %s", p, strerror(errno));
}

static void op_list_own(struct worker *w)
{
	bool seen[SLOTS] = { 0 };
	DIR *d = opendir(w->dir);
	struct dirent *de;

	if (!d) {
		fail(w->id, "opendir %s: %s", w->dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		int s;
		char tail;
		if (sscanf(de->d_name, "f%d%c", &s, &tail) == 1 && s >= 0 && s < SLOTS) {
			if (!w->slot[s].exists || seen[s])
				fail(w->id, "readdir of own directory lists f%d (model: %s)", s,
				     seen[s] ? "listed twice" : "absent");
			seen[s] = true;
		}
	}
	closedir(d);
	for (int s = 0; s < SLOTS; s++)
		if (w->slot[s].exists && !seen[s])
			fail(w->id, "readdir of own directory misses f%d", s);
}

/* ------------------------------------------------------------ shared churn */

static bool benign(int e)
{
	return e == ENOENT || e == EEXIST || e == ENOTEMPTY || e == EISDIR || e == ENOTDIR ||
	       e == EBUSY;
}

#define SHARED_OK(w, ret, what) do { \
	if ((ret) < 0 && !benign(errno)) \
		fail((w)->id, "%s: %s", what, strerror(errno)); \
} while (0)

static void shared_name(struct worker *w, char *out, size_t n)
{
	snprintf(out, n, "%s/S/n%u", mnt, (unsigned)below(&w->r, SHARED_NAMES));
}

/* An ACL with a named user: version 2, then (tag, perm, id) entries (acl_ea.h). */
static const uint32_t acl_named[] = {
	2,
	0x00060001, UINT32_MAX,		/* owner rw- */
	0x00040002, 1000,		/* user 1000 r-- */
	0x00040004, UINT32_MAX,		/* owning group r-- */
	0x00060010, UINT32_MAX,		/* mask rw- */
	0x00000020, UINT32_MAX,		/* other --- */
};

static void op_shared(struct worker *w)
{
	char a[4200], b[4200];
	struct stat st;
	int fd;

	shared_name(w, a, sizeof(a));
	shared_name(w, b, sizeof(b));
	switch (below(&w->r, 12)) {
	case 0:		/* create (or replace) with a little data */
		fd = open(a, O_WRONLY | O_CREAT | (below(&w->r, 2) ? O_EXCL : O_TRUNC), 0644);
		SHARED_OK(w, fd, "shared create");
		if (fd >= 0) {
			size_t n = below(&w->r, 20000);
			fill_random(&w->r, w->buf, n);
			if (pwrite(fd, w->buf, n, 0) < 0)
				fail(w->id, "shared pwrite: %s", strerror(errno));
			if (close(fd))
				fail(w->id, "shared close: %s", strerror(errno));
		}
		break;
	case 1:
		SHARED_OK(w, unlink(a), "shared unlink");
		break;
	case 2:
		SHARED_OK(w, rename(a, b), "shared rename");
		break;
	case 3:
		SHARED_OK(w, link(a, b), "shared link");
		break;
	case 4:		/* lookups of names being removed */
	case 5:
		SHARED_OK(w, stat(a, &st), "shared stat");
		SHARED_OK(w, lstat(b, &st), "shared lstat");
		break;
	case 6:		/* open and read a file others unlink and rename over */
		fd = open(a, O_RDONLY);
		SHARED_OK(w, fd, "shared open");
		if (fd >= 0) {
			if (read(fd, w->rbuf, 65536) < 0)
				fail(w->id, "shared read: %s", strerror(errno));
			char x[512];
			if (fgetxattr(fd, "user.pmfuse.extents", x, sizeof(x)) < 0 &&
			    errno != ENODATA)
				fail(w->id, "extents xattr of an open shared file: %s",
				     strerror(errno));
			if (close(fd))
				fail(w->id, "shared close: %s", strerror(errno));
		}
		break;
	case 7: {	/* directories come and go */
		snprintf(a, sizeof(a), "%s/S/d%u", mnt, (unsigned)below(&w->r, 3));
		if (mkdir(a, 0755))
			SHARED_OK(w, rmdir(a), "shared rmdir");
		break;
	}
	case 8:		/* an ACL, a mode or chattr flags on files others remove */
		switch (below(&w->r, 3)) {
		case 0:
			SHARED_OK(w, setxattr(a, "system.posix_acl_access", acl_named, sizeof(acl_named),
					      0), "shared set ACL");
			break;
		case 1:
			SHARED_OK(w, chmod(a, below(&w->r, 2) ? 0640 : 0604), "shared chmod");
			break;
		default:
			fd = open(a, O_RDONLY | O_NONBLOCK);
			SHARED_OK(w, fd, "shared open for chattr");
			if (fd >= 0) {
				int fl = below(&w->r, 2) ? FS_NODUMP_FL | FS_NOATIME_FL : 0, got;
				if (ioctl(fd, FS_IOC_SETFLAGS, &fl) || ioctl(fd, FS_IOC_GETFLAGS, &got))
					fail(w->id, "shared chattr: %s", strerror(errno));
				close(fd);
			}
		}
		break;
	case 9: {	/* files created under a default ACL, in directories that go */
		snprintf(a, sizeof(a), "%s/S/d%u", mnt, (unsigned)below(&w->r, 3));
		SHARED_OK(w, setxattr(a, "system.posix_acl_default", acl_named, sizeof(acl_named), 0),
			  "shared set default ACL");
		snprintf(b, sizeof(b), "%.4000s/f%u", a, (unsigned)below(&w->r, 1u << 30));
		fd = open(b, O_WRONLY | O_CREAT | O_EXCL, 0666);
		SHARED_OK(w, fd, "create under a default ACL");
		if (fd >= 0) {
			if (close(fd))
				fail(w->id, "shared close: %s", strerror(errno));
			SHARED_OK(w, unlink(b), "unlink under a default ACL");
		}
		break;
	}
	case 10:	/* an O_TMPFILE, written, then named (or dropped) among the others */
		snprintf(b, sizeof(b), "%s/S", mnt);
		fd = open(b, O_TMPFILE | O_RDWR | (below(&w->r, 4) ? 0 : O_EXCL), 0644);
		if (fd < 0) {
			fail(w->id, "O_TMPFILE: %s", strerror(errno));
			break;
		}
		if (pwrite(fd, w->buf, 1000, 0) != 1000)
			fail(w->id, "O_TMPFILE pwrite: %s", strerror(errno));
		if (linkat(fd, "", AT_FDCWD, a, AT_EMPTY_PATH) && !benign(errno))
			fail(w->id, "linkat of an O_TMPFILE: %s", strerror(errno));
		close(fd);
		break;
	default: {
		DIR *d = opendir(below(&w->r, 2) ? mnt : (snprintf(a, sizeof(a), "%s/S", mnt), a));
		if (!d) {
			fail(w->id, "opendir shared: %s", strerror(errno));
			break;
		}
		while (readdir(d))
			;
		closedir(d);
	}
	}
}

static void read_stats(int tid, uint64_t *h2, uint64_t *h1)
{
	char buf[4096];
	ssize_t n = getxattr(mnt, "user.pmfuse.stats", buf, sizeof(buf) - 1);

	if (n < 0) {
		fail(tid, "stats xattr: %s", strerror(errno));
		return;
	}
	buf[n] = 0;
	char *p = strstr(buf, "huge_2m_extents ");
	char *q = strstr(buf, "huge_1g_extents ");
	if (!p || !q) {
		fail(tid, "stats xattr without huge extent counts:\n%s", buf);
		return;
	}
	if (h2)
		*h2 = strtoull(p + 16, NULL, 10);
	if (h1)
		*h1 = strtoull(q + 16, NULL, 10);
}

/*
 * A shared, writable map of the slot file: every byte as the model says,
 * stores into it (through the library's faults when preloaded: holes and
 * unwritten blocks allocated, pages marked dirty), then msync or not.
 */
static void op_map(struct worker *w, int s)
{
	struct slot *sl = &w->slot[s];
	size_t size = sl->c.size;

	if (size == 0)
		return;
	int fd = slot_fd(w, s);
	if (fd < 0)
		return;
	uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		fail(w->id, "mmap slot %d (%zu bytes): %s", s, size, strerror(errno));
		slot_done(w, s, fd);
		return;
	}
	if (memcmp(m, sl->c.data, size)) {
		size_t i = 0;
		while (m[i] == sl->c.data[i])
			i++;
		fail(w->id, "map of slot %d: byte %zu is %#x, model %#x (size %zu)", s, i, m[i],
		     sl->c.data[i], size);
	}
	for (int k = (int)below(&w->r, 4); k >= 0; k--) {
		size_t off = below(&w->r, size), n = below(&w->r, 3 * BLK) + 1;
		if (n > size - off)
			n = size - off;
		fill_random(&w->r, w->buf, n);
		memcpy(m + off, w->buf, n);
		content_write(&sl->c, off, w->buf, n);
	}
	if (below(&w->r, 2))
		check_call(w, msync(m, size, MS_SYNC), "msync", s);
	check_call(w, munmap(m, size), "munmap", s);
	slot_done(w, s, fd);
}

static void op_extents(struct worker *w, int s)
{
	char p[4200], buf[1024];

	slot_path(w, s, p, sizeof(p));
	ssize_t n = getxattr(p, "user.pmfuse.extents", buf, sizeof(buf) - 1);
	if (n < 0)
		fail(w->id, "extents xattr of slot %d: %s", s, strerror(errno));
	else if (buf[n] = 0, !strstr(buf, "huge_2m "))
		fail(w->id, "extents xattr of slot %d says: %s", s, buf);
}

/*
 * By file handle, as an NFS server reaches files: handles of slot files,
 * of shared names and of shared directories, kept a while (the FORGET
 * storms evict their inodes meanwhile, so the daemon is asked LOOKUP of
 * "." -- and ".." to reconnect a directory) and opened later, while others
 * unlink, rename and remove.  A handle opens the very inode it names or is
 * stale (ESTALE), never another file; a fresh handle of a slot file opens
 * it, and a slot file opened by handle holds the model's bytes.
 */
static atomic_uint_fast64_t handle_opens, handle_stale;
static int mount_fd = -1;

static void open_handle(struct worker *w, struct saved_handle *sh, int s, bool fresh,
			const char *what)
{
	char p[4200];
	struct stat st, now;
	uint32_t word[3];

	/* FUSE's handle: the node id (our inode number), high word first, and the generation */
	if (sh->h.handle_bytes < sizeof(word)) {
		fail(w->id, "handle of %s: %u bytes", what, sh->h.handle_bytes);
		return;
	}
	memcpy(word, sh->h.f_handle, sizeof(word));
	uint64_t ino = (uint64_t)word[0] << 32 | word[1];
	int fd = open_by_handle_at(mount_fd, &sh->h, O_RDONLY);
	if (fd >= 0 && s == DEAD) {
		/* its number may be another file's by now: never that file */
		fail(w->id, "the handle of deleted inode %" PRIu64 " (%s) opened a file", ino, what);
		close(fd);
		return;
	}
	if (fd < 0) {
		if ((fresh && s >= 0) || errno != ESTALE)
			fail(w->id, "open_by_handle_at (%s, inode %" PRIu64 "): %s", what, ino,
			     strerror(errno));
		else
			atomic_fetch_add(&handle_stale, 1);
		return;
	}
	atomic_fetch_add(&handle_opens, 1);
	if (s >= 0)
		slot_path(w, s, p, sizeof(p));
	if (fstat(fd, &st))
		fail(w->id, "fstat of %s opened by handle: %s", what, strerror(errno));
	else if (st.st_ino != ino)
		fail(w->id, "the handle of inode %" PRIu64 " (%s) opened inode %ju", ino, what,
		     (uintmax_t)st.st_ino);
	else if (s >= 0 && w->slot[s].exists && !stat(p, &now) && now.st_ino == ino)
		verify_fd(w, fd, &w->slot[s].c, "slot file opened by handle");
	else if (S_ISDIR(st.st_mode) && getdents64(fd, w->rbuf, 65536) < 0 && errno != ENOENT)
		/* ENOENT: removed since it was opened (the VFS's answer for a dead directory) */
		fail(w->id, "getdents of a directory opened by handle: %s", strerror(errno));
	else if (S_ISREG(st.st_mode) && read(fd, w->rbuf, 65536) < 0)
		fail(w->id, "read of a file opened by handle: %s", strerror(errno));
	close(fd);
}

/* Keep a handle of p (of slot s, or -1, or DEAD), in place of an old one. */
static struct saved_handle *save_handle(struct worker *w, const char *p, int s, bool must)
{
	int mount_id, i = w->nsaved < SAVED_HANDLES ? w->nsaved++ : (int)below(&w->r, SAVED_HANDLES);
	struct saved_handle *sh = &w->saved[i];

	sh->h.handle_bytes = MAX_HANDLE_SZ;
	w->saved_slot[i] = s;
	if (name_to_handle_at(AT_FDCWD, p, &sh->h, &mount_id, 0)) {
		if (must || !benign(errno))
			fail(w->id, "name_to_handle_at %s: %s", p, strerror(errno));
		w->saved[i] = w->saved[--w->nsaved];
		w->saved_slot[i] = w->saved_slot[w->nsaved];
		return NULL;
	}
	return sh;
}

static void op_handle(struct worker *w, int s)
{
	struct saved_handle *sh;
	char p[4200];
	int own = (int)below(&w->r, 2), i;

	if (w->nsaved && below(&w->r, 2)) {	/* one taken a while ago */
		i = (int)below(&w->r, (uint64_t)w->nsaved);
		open_handle(w, &w->saved[i], w->saved_slot[i], false, "a kept handle");
		return;
	}
	if (own)
		slot_path(w, s, p, sizeof(p));
	else if (below(&w->r, 2))
		shared_name(w, p, sizeof(p));
	else
		snprintf(p, sizeof(p), "%s/S/d%u", mnt, (unsigned)below(&w->r, 3));
	if ((sh = save_handle(w, p, own ? s : -1, own)))
		open_handle(w, sh, own ? s : -1, true, p);
}

/*
 * Inode chunks come and go: a burst of files made and removed (a chunk's
 * worth or two: the daemon gives back a chunk whose inodes are all free),
 * with the handle of one kept.  Opened later, while other bursts make
 * chunks again at the same numbers, it must be stale.
 */
static void op_burst(struct worker *w)
{
	char d[4200], p[4300];
	unsigned n = 64 + (unsigned)below(&w->r, 96), keep = (unsigned)below(&w->r, n), i;
	struct saved_handle *sh = NULL;

	snprintf(d, sizeof(d), "%s/B%d", mnt, w->id);
	if (mkdir(d, 0755) && errno != EEXIST) {
		fail(w->id, "mkdir %s: %s", d, strerror(errno));
		return;
	}
	for (i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/b%u", d, i);
		int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0) {
			if (errno != ENOSPC)
				fail(w->id, "burst create %s: %s", p, strerror(errno));
			break;
		}
		close(fd);
		if (i == keep)
			sh = save_handle(w, p, DEAD, true);
	}
	n = i;
	for (i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/b%u", d, i);
		if (unlink(p))
			fail(w->id, "burst unlink %s: %s", p, strerror(errno));
	}
	if (sh)
		open_handle(w, sh, DEAD, false, "the handle of a file a burst deleted");
}

/* ------------------------------------------------------------ threads */

static void worker_step(struct worker *w)
{
	int s = (int)below(&w->r, SLOTS), t = (int)below(&w->r, SLOTS);
	struct slot *sl = &w->slot[s];
	unsigned op = (unsigned)below(&w->r, 100);

	if (!sl->exists || op < 8) {
		op_create(w, s);
		return;
	}
	if (op < 28)
		op_write(w, s);
	else if (op < 40)
		op_read(w, s);
	else if (op < 45)
		op_truncate(w, s);
	else if (op < 52)
		op_fallocate(w, s);
	else if (op < 56 && w->slot[t].exists)
		op_copy(w, s, t);
	else if (op < 61)
		op_rename(w, s, t);
	else if (op < 64)
		op_unlink(w, s);
	else if (op < 66)
		op_link(w, s);
	else if (op < 72 && w->ndet)
		op_detached(w);
	else if (op < 76)
		op_orphan_cycle(w);
	else if (op < 78)
		op_list_own(w);
	else if (op < 80)
		op_extents(w, s);
	else if (op < 82)
		read_stats(w->id, NULL, NULL);
	else if (op < 86)
		op_map(w, s);
	else if (op < 89)
		op_handle(w, s);
	else if (op < 90)
		op_burst(w);
	else
		op_shared(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	if (mkdir(w->dir, 0755) && errno != EEXIST) {
		fail(w->id, "mkdir %s: %s", w->dir, strerror(errno));
		return NULL;
	}
	while (!atomic_load(&stop)) {
		worker_step(w);
		w->ops++;
	}
	/* wind down: every handle closed, so every orphan is reclaimed */
	while (w->ndet)
		detached_close(w, w->ndet - 1);
	for (int s = 0; s < SLOTS; s++) {
		if (w->slot[s].fd >= 0 && below(&w->r, 2))
			check_call(w, fsync(w->slot[s].fd), "final fsync", s);
		close_slot_fd(w, s);
	}
	atomic_fetch_add(&total_ops, w->ops);
	return NULL;
}

static atomic_uint_fast64_t stats_reads, forget_storms;

/* What `watch pmfusectl stats` does, only faster: the reported trigger. */
static void *stats_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		read_stats(-1, NULL, NULL);
		atomic_fetch_add(&stats_reads, 1);
	}
	return NULL;
}

/* FORGET storms: the kernel drops every unused dentry and inode. */
static void *forget_main(void *arg)
{
	struct rng r = { (uint64_t)(uintptr_t)arg | 1 };

	while (!atomic_load(&stop)) {
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
		if (fd >= 0) {
			if (write(fd, below(&r, 4) ? "2" : "3", 1) == 1)
				atomic_fetch_add(&forget_storms, 1);
			close(fd);
		}
		usleep((useconds_t)(20000 + below(&r, 80000)));
	}
	return NULL;
}

/* ------------------------------------------------------------ the end */

struct walk_sum {
	uint64_t h2, h1, files;
	uint64_t *seen;			/* inode numbers counted: names, not files */
	size_t nseen, cap;
};

static bool seen_before(struct walk_sum *sum, uint64_t ino)
{
	for (size_t i = 0; i < sum->nseen; i++)
		if (sum->seen[i] == ino)
			return true;
	if (sum->nseen == sum->cap) {
		sum->cap = sum->cap ? 2 * sum->cap : 256;
		sum->seen = realloc(sum->seen, sum->cap * sizeof(uint64_t));
		if (!sum->seen)
			exit(2);
	}
	sum->seen[sum->nseen++] = ino;
	return false;
}

static void walk_extents(const char *dir, struct walk_sum *sum)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[4200], buf[1024];

	if (!d) {
		fail(-1, "opendir %s: %s", dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			walk_extents(p, sum);
		} else if (S_ISREG(st.st_mode)) {
			if (seen_before(sum, st.st_ino))
				continue;	/* another name of a file counted */
			ssize_t n = getxattr(p, "user.pmfuse.extents", buf, sizeof(buf) - 1);
			if (n < 0) {
				fail(-1, "extents xattr of %s: %s", p, strerror(errno));
				continue;
			}
			buf[n] = 0;
			char *a = strstr(buf, "huge_2m "), *b = strstr(buf, "huge_1g ");
			if (a && b) {
				sum->h2 += strtoull(a + 8, NULL, 10);
				sum->h1 += strtoull(b + 8, NULL, 10);
			}
			sum->files++;
		}
	}
	closedir(d);
}

/*
 * The stats counters of huge extents are kept up to date as blocks are
 * mapped and unmapped; a walk of every file must agree once all is quiet
 * (closed files may take a moment to be reclaimed: their RELEASE is async).
 */
static void check_huge_counters(void)
{
	struct walk_sum sum;
	uint64_t h2 = 0, h1 = 0;

	for (int tries = 0; tries < 100; tries++) {
		if (tries)
			free(sum.seen);
		sum = (struct walk_sum){ 0 };
		read_stats(-1, &h2, &h1);
		walk_extents(mnt, &sum);
		if (h2 == sum.h2 && h1 == sum.h1)
			break;
		usleep(50000);
	}
	if (h2 != sum.h2 || h1 != sum.h1)
		fail(-1, "stats say %" PRIu64 " 2 MiB and %" PRIu64 " 1 GiB extents, "
		     "a walk of %" PRIu64 " files finds %" PRIu64 " and %" PRIu64,
		     h2, h1, sum.files, sum.h2, sum.h1);
	free(sum.seen);
	printf("huge extents: %" PRIu64 " x 2 MiB, %" PRIu64 " x 1 GiB (stats = walk)\n", h2, h1);
}

static void workers_free(struct worker *ws, int n)
{
	for (int t = 0; t < n; t++) {
		for (int s = 0; s < SLOTS; s++)
			free(ws[t].slot[s].c.data);
		for (int i = 0; i < ws[t].ndet; i++)
			free(ws[t].det[i].c.data);
		free(ws[t].buf);
		free(ws[t].rbuf);
		free(ws[t].dbuf);
	}
	free(ws);
}

static int write_model(struct worker *ws, int nthreads, const char *state)
{
	char p[4200];
	FILE *m;

	snprintf(p, sizeof(p), "%s/manifest", state);
	m = fopen(p, "w");
	if (!m)
		return -1;
	fprintf(m, "%d\n", nthreads);
	for (int t = 0; t < nthreads; t++)
		for (int s = 0; s < SLOTS; s++) {
			struct slot *sl = &ws[t].slot[s];
			if (!sl->exists)
				continue;
			fprintf(m, "%d %d %zu\n", t, s, sl->c.size);
			snprintf(p, sizeof(p), "%s/w%d-f%d", state, t, s);
			FILE *f = fopen(p, "w");
			if (!f || fwrite(sl->c.data, 1, sl->c.size, f) != sl->c.size || fclose(f))
				return -1;
		}
	return fclose(m);
}

static int run(const char *state, double seconds, int nthreads, uint64_t seed)
{
	struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
	pthread_t *th = calloc((size_t)nthreads + 3, sizeof(*th));
	char p[4200];

	snprintf(p, sizeof(p), "%s/S", mnt);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/L", mnt);
	mkdir(p, 0755);
	mount_fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);	/* before any worker */
	if (mount_fd < 0) {
		perror(mnt);
		return 2;
	}
	for (int t = 0; t < nthreads; t++) {
		struct worker *w = &ws[t];
		w->id = t;
		w->r.s = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)t * 7919 + 1;
		snprintf(w->dir, sizeof(w->dir), "%s/w%d", mnt, t);
		for (int s = 0; s < SLOTS; s++)
			w->slot[s].fd = -1;
		w->buf = malloc(BIG_MAX + BLK);
		w->rbuf = malloc(BIG_MAX + BLK);
		if (posix_memalign((void **)&w->dbuf, BLK, 16 * BLK) || !w->buf || !w->rbuf) {
			perror("malloc");
			return 2;
		}
		pthread_create(&th[t], NULL, worker_main, w);
	}
	pthread_create(&th[nthreads], NULL, stats_main, NULL);
	pthread_create(&th[nthreads + 1], NULL, stats_main, NULL);
	pthread_create(&th[nthreads + 2], NULL, forget_main, (void *)(uintptr_t)seed);

	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		usleep(50000);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (!atomic_load(&stop) &&
		 (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
	atomic_store(&stop, true);
	for (int i = 0; i < nthreads + 3; i++)
		pthread_join(th[i], NULL);
	printf("torture: %" PRIuFAST64 " operations by %d threads, %" PRIuFAST64
	       " stats reads, %" PRIuFAST64 " FORGET storms (drop_caches), %" PRIuFAST64
	       " opens by handle (%" PRIuFAST64 " stale)\n",
	       atomic_load(&total_ops), nthreads, atomic_load(&stats_reads),
	       atomic_load(&forget_storms), atomic_load(&handle_opens),
	       atomic_load(&handle_stale));
	if (atomic_load(&nfail) == 0) {
		atomic_store(&stop, false);
		check_huge_counters();
		/* every slot once more, then the model for the verify step */
		for (int t = 0; t < nthreads; t++) {
			op_list_own(&ws[t]);
			for (int s = 0; s < SLOTS; s++)
				if (ws[t].slot[s].exists) {
					int fd = slot_fd(&ws[t], s);
					if (fd >= 0) {
						verify_fd(&ws[t], fd, &ws[t].slot[s].c, "slot file");
						close(fd);
					}
				}
		}
		if (write_model(ws, nthreads, state)) {
			perror("writing the model");
			return 2;
		}
	}
	close(mount_fd);
	workers_free(ws, nthreads);
	free(th);
	return atomic_load(&nfail) ? 1 : 0;
}

static int verify(const char *state)
{
	char p[4200];
	FILE *m;
	int nthreads, t, s, checked = 0;
	size_t size;

	snprintf(p, sizeof(p), "%s/manifest", state);
	m = fopen(p, "r");
	if (!m || fscanf(m, "%d", &nthreads) != 1) {
		fprintf(stderr, "torture: no model in %s\n", state);
		return 2;
	}
	struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
	while (fscanf(m, "%d %d %zu", &t, &s, &size) == 3) {
		if (t < 0 || t >= nthreads || s < 0 || s >= SLOTS)
			return 2;
		struct slot *sl = &ws[t].slot[s];
		snprintf(p, sizeof(p), "%s/w%d-f%d", state, t, s);
		FILE *f = fopen(p, "r");
		content_resize(&sl->c, size);
		if (!f || fread(sl->c.data, 1, size, f) != size)
			return 2;
		fclose(f);
		sl->exists = true;
	}
	fclose(m);
	for (t = 0; t < nthreads; t++) {
		struct worker *w = &ws[t];
		w->id = t;
		w->rbuf = malloc(BIG_MAX + BLK);
		snprintf(w->dir, sizeof(w->dir), "%s/w%d", mnt, t);
		op_list_own(w);
		for (s = 0; s < SLOTS; s++) {
			if (!w->slot[s].exists)
				continue;
			slot_path(w, s, p, sizeof(p));
			int fd = open(p, O_RDONLY);
			if (fd < 0) {
				fail(t, "open %s: %s", p, strerror(errno));
				continue;
			}
			verify_fd(w, fd, &w->slot[s].c, p);
			close(fd);
			checked++;
		}
	}
	printf("torture verify: %d files checked byte for byte\n", checked);
	workers_free(ws, nthreads);
	return atomic_load(&nfail) ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 7 && !strcmp(argv[1], "run")) {
		mnt = argv[2];
		int n = atoi(argv[5]);
		return run(argv[3], atof(argv[4]), n < 1 ? 1 : n, strtoull(argv[6], NULL, 0));
	}
	if (argc == 4 && !strcmp(argv[1], "verify")) {
		mnt = argv[2];
		return verify(argv[3]);
	}
	fprintf(stderr, "usage: torture run MNT STATE SECONDS THREADS SEED\n"
			"       torture verify MNT STATE\n");
	return 2;
}
