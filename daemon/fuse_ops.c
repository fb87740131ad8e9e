/*
 * fuse_ops: translate FUSE low-level requests into pmfuse core calls.
 * Handlers hold no filesystem logic: each unpacks its request, calls the
 * core, and ends in exactly one fuse_reply_*().  The session's userdata is
 * the struct fs.
 */
#include "fuse_ops.h"
#include "fs.h"
#include "pmfuse/dax-ioctl.h"
#include "uring.h"

#include <linux/fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/*
 * How long the kernel may trust names, attributes and absent names without
 * asking.  Nothing but this daemon changes the region while it is mounted
 * (the region lock), and every change goes through the kernel, which drops
 * what it cached of the names and inodes a request changes; what we change
 * on our own (an atime, set-id bits dropped on a write) the kernel either
 * invalidates after the request itself or is told (notify_inval_inode).
 */
#define ATTR_TIMEOUT 3600.0
#define ENTRY_TIMEOUT 3600.0

/*
 * Requests served, per operation: the stats xattr's req_* lines, which tell
 * what an application's work costs in round trips (bench/README.md).
 */
#define PM_OPS(X) \
	X(lookup) \
	X(lookup_handle) /* of "." or "..": a file handle decoded (also in lookup) */ \
	X(forget) \
	X(forget_multi) \
	X(getattr) \
	X(setattr) \
	X(readlink) \
	X(mknod) \
	X(mkdir) \
	X(symlink) \
	X(link) \
	X(unlink) \
	X(rmdir) \
	X(rename) \
	X(open) \
	X(create) \
	X(read) \
	X(write) \
	X(release) \
	X(fsync) \
	X(opendir) \
	X(readdir) \
	X(readdirplus) \
	X(releasedir) \
	X(fsyncdir) \
	X(statfs) \
	X(setxattr) \
	X(getxattr) \
	X(listxattr) \
	X(removexattr) \
	X(fallocate) \
	X(lseek) \
	X(copy_file_range) \
	X(ioctl)

enum pm_op {
#define PM_OP_ENUM(name) OP_##name,
	PM_OPS(PM_OP_ENUM)
#undef PM_OP_ENUM
	OP_COUNT
};

static const char *const pm_op_names[OP_COUNT] = {
#define PM_OP_NAME(name) #name,
	PM_OPS(PM_OP_NAME)
#undef PM_OP_NAME
};

static _Atomic uint64_t pm_op_count[OP_COUNT];

#define COUNT(name) atomic_fetch_add_explicit(&pm_op_count[OP_##name], 1, memory_order_relaxed)

bool pm_opt_writeback_cache;
static bool pm_writeback_cache;	/* negotiated at INIT */

/* opens given FOPEN_DIRECT_IO: for O_DIRECT, and write-only (write_only_direct) */
static _Atomic uint64_t pm_opens_direct, pm_opens_write_only_direct;

int pm_ops_stats_lines(char *buf, size_t size)
{
	size_t n = 0;

	int m = snprintf(buf, size,
			 "writeback_cache %d\nopens_direct %" PRIu64 "\nopens_write_only_direct %" PRIu64 "\n",
			 pm_writeback_cache, atomic_load(&pm_opens_direct),
			 atomic_load(&pm_opens_write_only_direct));
	if (m < 0 || (size_t)m >= size)
		return 0;
	n = (size_t)m;
	for (int i = 0; i < OP_COUNT; i++) {
		uint64_t c = atomic_load_explicit(&pm_op_count[i], memory_order_relaxed);
		m = snprintf(buf + n, size - n, "req_%s %" PRIu64 "\n", pm_op_names[i], c);
		if (m < 0 || (size_t)m >= size - n)
			return (int)n;
		n += (size_t)m;
	}
	return (int)n;
}

static struct fs *pm_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_cred pm_cred(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	return (struct fs_cred){ ctx->uid, ctx->gid, ctx->pid, ctx->umask };
}

/*
 * One bit per inode: has a request on it been refused with EIO (damaged
 * metadata, unreadable media) yet?  The first refusal is logged, the rest
 * are not, so a damaged image cannot flood the log.
 */
static _Atomic uint64_t *eio_logged;
static uint64_t eio_logged_inodes;

static void log_eio_once(fuse_ino_t ino, const char *what)
{
	uint64_t bit = ino < eio_logged_inodes ? ino : 0;
	uint64_t mask = 1ull << (bit % 64);

	if (eio_logged && !(atomic_fetch_or(&eio_logged[bit / 64], mask) & mask))
		log_err("inode %" PRIu64 ": %s, request refused with EIO "
			"(further errors on it not logged)", (uint64_t)ino, what);
}

static void reply_err(fuse_req_t req, fuse_ino_t ino, int err)
{
	if (err == EUCLEAN)	/* the core's word for damaged metadata */
		err = EIO;
	if (err == EIO)
		log_eio_once(ino, "damaged metadata or media error (see fsck.pmfuse)");
	fuse_reply_err(req, err);
}

static void fill_entry(struct fuse_entry_param *e, const struct fs_attr *a)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->st.st_ino;
	/* the kernel gives the root generation 0 (and warns if told otherwise) */
	e->generation = e->ino == FUSE_ROOT_ID ? 0 : a->generation;
	e->attr = a->st;
	e->attr_timeout = ATTR_TIMEOUT;
	e->entry_timeout = ENTRY_TIMEOUT;
}

static void reply_entry(fuse_req_t req, fuse_ino_t parent, int err, const struct fs_attr *a)
{
	struct fuse_entry_param e;

	if (err) {
		reply_err(req, parent, -err);
		return;
	}
	fill_entry(&e, a);
	fuse_reply_entry(req, &e);
}

static void pm_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	COUNT(lookup);
	if (fs_is_dot_name(name))
		COUNT(lookup_handle);
	struct fs_attr a;
	int err = fs_lookup(pm_fs(req), parent, name, &a);

	if (err == -ENOENT) {
		/* a negative entry: the kernel need not ask again until it creates the name */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = ENTRY_TIMEOUT };
		fuse_reply_entry(req, &e);
		return;
	}
	reply_entry(req, parent, err, &a);
}

static void pm_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	COUNT(forget);
	fs_forget(pm_fs(req), ino, nlookup);
	fuse_reply_none(req);
}

static void pm_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	COUNT(forget_multi);
	for (size_t i = 0; i < count; i++)
		fs_forget(pm_fs(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void pm_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(getattr);
	struct fs_attr a;
	int err = fs_getattr(pm_fs(req), ino, &a);

	(void)fi;
	if (err)
		reply_err(req, ino, -err);
	else
		fuse_reply_attr(req, &a.st, ATTR_TIMEOUT);
}

static void pm_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	COUNT(setattr);
	static const struct { int fuse, fs; } map[] = {
		{ FUSE_SET_ATTR_MODE, FS_SET_MODE },
		{ FUSE_SET_ATTR_UID, FS_SET_UID },
		{ FUSE_SET_ATTR_GID, FS_SET_GID },
		{ FUSE_SET_ATTR_SIZE, FS_SET_SIZE },
		{ FUSE_SET_ATTR_ATIME, FS_SET_ATIME },
		{ FUSE_SET_ATTR_MTIME, FS_SET_MTIME },
		{ FUSE_SET_ATTR_ATIME_NOW, FS_SET_ATIME_NOW },
		{ FUSE_SET_ATTR_MTIME_NOW, FS_SET_MTIME_NOW },
		{ FUSE_SET_ATTR_CTIME, FS_SET_CTIME },
	};
	struct fs_attr a;
	int valid = 0, err;

	(void)fi;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (to_set & map[i].fuse)
			valid |= map[i].fs;
	/*
	 * With the writeback cache the kernel keeps mtime and ctime and sends
	 * them as explicit times (with CTIME, which nothing else sends): on
	 * write-back of its times (no atime) and for a touch (atime "now").  A
	 * user's explicit utimensat() carries an explicit atime as well.
	 */
	if (pm_writeback_cache && (valid & FS_SET_CTIME) && (valid & FS_SET_MTIME) &&
	    (!(valid & FS_SET_ATIME) || (valid & FS_SET_ATIME_NOW)))
		valid |= FS_SET_CMTIME_CACHED;
	/* "now" wins over an explicit time for the same field */
	if (valid & FS_SET_ATIME_NOW)
		valid &= ~FS_SET_ATIME;
	if (valid & FS_SET_MTIME_NOW)
		valid &= ~FS_SET_MTIME;
	struct fs_cred cr = pm_cred(req);
	err = fs_setattr(pm_fs(req), ino, attr, valid, &cr, &a);
	if (err)
		reply_err(req, ino, -err);
	else
		fuse_reply_attr(req, &a.st, ATTR_TIMEOUT);
}

static void pm_readlink(fuse_req_t req, fuse_ino_t ino)
{
	COUNT(readlink);
	char buf[FS_SYMLINK_MAX + 1];
	int err = fs_readlink(pm_fs(req), ino, buf, sizeof(buf));

	if (err)
		reply_err(req, ino, -err);
	else
		fuse_reply_readlink(req, buf);
}

static void pm_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	COUNT(mknod);
	struct fs_cred cr = pm_cred(req);
	struct fs_attr a;

	reply_entry(req, parent, fs_mknod(pm_fs(req), parent, name, mode, rdev, &cr, &a), &a);
}

static void pm_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	COUNT(mkdir);
	struct fs_cred cr = pm_cred(req);
	struct fs_attr a;

	reply_entry(req, parent, fs_mknod(pm_fs(req), parent, name, S_IFDIR | (mode & 07777), 0, &cr, &a),
		    &a);
}

static void pm_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	COUNT(symlink);
	struct fs_cred cr = pm_cred(req);
	struct fs_attr a;

	reply_entry(req, parent, fs_symlink(pm_fs(req), parent, name, link, &cr, &a), &a);
}

static void pm_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	COUNT(link);
	struct fs_attr a;

	reply_entry(req, ino, fs_link(pm_fs(req), ino, newparent, newname, &a), &a);
}

static void pm_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	COUNT(unlink);
	reply_err(req, parent, -fs_unlink(pm_fs(req), parent, name));
}

static void pm_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	COUNT(rmdir);
	reply_err(req, parent, -fs_rmdir(pm_fs(req), parent, name));
}

static void pm_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	COUNT(rename);
	unsigned f = 0;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		reply_err(req, parent, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		f |= FS_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		f |= FS_RENAME_EXCHANGE;
	reply_err(req, parent, -fs_rename(pm_fs(req), parent, name, newparent, newname, f));
}

/* The mount's -o sync, set at INIT. */
static bool pm_sync_mount;

static bool wants_sync(const struct fuse_file_info *fi)
{
	return pm_sync_mount || (fi->flags & (O_SYNC | O_DSYNC));
}

/*
 * A file opened O_DIRECT is opened FOPEN_DIRECT_IO: the kernel then sends
 * its reads and writes straight to us (as libfuse's passthrough_hp does)
 * instead of through the page-cache path's generic direct I/O.  Only where
 * the kernel can still map such files (DIRECT_IO_ALLOW_MMAP, 6.6+:
 * databases and fsx open O_DIRECT and mmap the same descriptor); such a
 * kernel also writes back a mapping's dirty pages before a direct read or
 * write and drops cached pages after a direct write, so nothing here
 * invalidates pages -- a notification from inside a WRITE may wait for the
 * write-back of a page that this very request carries.  Elsewhere O_DIRECT
 * takes the page-cache path, which maps.  Not in single-threaded mode.
 */
bool pm_opt_direct_io = true;
/*
 * -o direct_io: every open of a file is direct, not only O_DIRECT ones.
 * Reads and writes go straight between the caller's buffer and pmem, with
 * no page-cache pages allocated, filled and dropped on the way and no
 * second copy: what a file server (NFS-Ganesha, Samba) or a streaming
 * application wants, whose data the kernel's cache would only hold twice.
 * Small reads then each reach the daemon (no readahead); maps still work
 * (DIRECT_IO_ALLOW_MMAP), coherent as for O_DIRECT.
 */
bool pm_opt_all_direct;
static _Atomic bool pm_direct_io_mmap;	/* the kernel granted DIRECT_IO_ALLOW_MMAP */

/*
 * Set-id bits and file capabilities: with HANDLE_KILLPRIV_V2 the kernel
 * leaves dropping them on write, truncate and fallocate to us (and with it
 * marks inodes S_NOSEC, which spares the GETXATTR security.capability it
 * would otherwise send before every buffered write).  We apply the kernel's
 * current rules (inode_setid_on_write), on every path: on O_DIRECT files the
 * kernel never does it, and a kernel without V2 would only apply its older
 * rule to setgid.
 */

#define K_HANDLE_KILLPRIV_V2	(1ull << 28)
#define K_DIRECT_IO_ALLOW_MMAP	(1ull << 36)

uint64_t pm_ops_init_reply(uint64_t offered, uint64_t reply)
{
	reply |= offered & K_HANDLE_KILLPRIV_V2;
	if (pm_opt_direct_io)
		reply |= offered & K_DIRECT_IO_ALLOW_MMAP;
	pm_direct_io_mmap = reply & K_DIRECT_IO_ALLOW_MMAP;
	if (!(reply & K_HANDLE_KILLPRIV_V2))
		log_info("the kernel has no HANDLE_KILLPRIV_V2: it also drops set-id bits "
			 "itself, by its older rule");
	if (pm_opt_direct_io && !pm_direct_io_mmap)
		log_info("the kernel cannot map FOPEN_DIRECT_IO files: O_DIRECT opens "
			 "take its page-cache path%s", pm_opt_all_direct ?
			 ", and -o direct_io has no effect" : "");
	return reply;
}

/*
 * Write-only opens skip the page cache too, unless the writeback cache
 * gathers their writes.  Without it every write(2) is a WRITE request
 * either way; through the page cache the kernel first copies the data into
 * newly allocated cache pages (and checks security.capability once per
 * inode), which nothing reads back through this descriptor: a write-only
 * descriptor cannot be mapped, and readers elsewhere read from pmem.
 * dd, cp, tar, git checkout and shell redirections all open O_WRONLY.
 * Coherence with other descriptors is the kernel's, as for O_DIRECT: it
 * writes back a mapping's dirty pages before a direct write and drops the
 * cached pages it overwrote.
 */
static bool write_only_direct(const struct fuse_file_info *fi)
{
	return (fi->flags & O_ACCMODE) == O_WRONLY && !pm_writeback_cache;
}

/*
 * The kernel's page cache may outlive an open (keep_cache): pmfuse is the
 * only writer of its region, and every change the kernel does not make
 * through its own cache it drops itself (truncate, fallocate, copy_file_range
 * destinations, direct writes).  Reads it then serves from the cache never
 * reach us, so when a read would now update the atime (relatime: the file
 * changed since it was last read, or a day passed) the open drops the cache
 * and the first read comes here.  Write-only opens keep it either way: their
 * descriptor reads nothing, and dropping it would write back dirty pages.
 *
 * A file that direct maps may store to (libpmfuse-dax) changes under the
 * page cache: its opens bypass the cache, as O_DIRECT ones (mapped), and
 * the cache of earlier opens is dropped when a writable map starts, at
 * msync and at munmap.
 */
static _Atomic uint64_t pm_open_seq;
#define PM_FH_WRITE	1ull
#define PM_FH_DIRECT	2ull

static void set_open_fh(struct fuse_file_info *fi, bool atime_due, bool mapped)
{
	bool may_direct = pm_opt_direct_io && pm_direct_io_mmap;

	if (may_direct && ((fi->flags & O_DIRECT) || mapped || pm_opt_all_direct)) {
		fi->direct_io = 1;
		atomic_fetch_add_explicit(&pm_opens_direct, 1, memory_order_relaxed);
	} else if (may_direct && write_only_direct(fi)) {
		fi->direct_io = 1;
		fi->keep_cache = 1;	/* others' pages stay: the kernel drops what we overwrite */
		atomic_fetch_add_explicit(&pm_opens_write_only_direct, 1, memory_order_relaxed);
	} else if (!atime_due) {
		fi->keep_cache = 1;
	}
	/*
	 * The handle names the open for direct-access map sessions (which end
	 * with it) and says whether it may write and whether its reads bypass
	 * the page cache: no allocation per open.
	 */
	fi->fh = (atomic_fetch_add_explicit(&pm_open_seq, 1, memory_order_relaxed) + 1) << 2 |
		 (fi->direct_io ? PM_FH_DIRECT : 0) |
		 ((fi->flags & O_ACCMODE) != O_RDONLY ? PM_FH_WRITE : 0);
}

/* fs_open(), asking whether a read is due to update the atime unless the open is write-only */
static int open_file(fuse_req_t req, fuse_ino_t ino, const struct fuse_file_info *fi,
		     bool *atime_due)
{
	*atime_due = false;
	return fs_open(pm_fs(req), ino, fi->flags,
		       (fi->flags & O_ACCMODE) == O_WRONLY ? NULL : atime_due);
}

static struct fuse_session *pm_session;

void pm_ops_set_session(struct fuse_session *se)
{
	pm_session = se;
}

/*
 * Before a change of ino's contents by the caller: drop what it drops
 * (fs_kill_priv).  The kernel's cached mode is stale then: invalidate it
 * (attributes only, which takes no page lock).
 */
static int kill_priv(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_cred cr = pm_cred(req);
	int ret = fs_kill_priv(pm_fs(req), ino, &cr);

	if (ret > 0 && pm_session)
		fuse_lowlevel_notify_inval_inode(pm_session, ino, -1, 0);
	return ret < 0 ? ret : 0;
}

/* The start of both write handlers: false if it has replied (an error). */
static bool write_begin(fuse_req_t req, fuse_ino_t ino, off_t off)
{
	int err = off < 0 ? -EINVAL : kill_priv(req, ino);

	if (err)
		reply_err(req, ino, -err);
	return err == 0;
}

/* The end of both write handlers: n bytes written, or -errno. */
static void reply_write(fuse_req_t req, fuse_ino_t ino, ssize_t n)
{
	if (n < 0) {
		reply_err(req, ino, (int)-n);
		return;
	}
	fuse_reply_write(req, (size_t)n);
}

static void pm_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(open);
	bool atime_due;
	int err = open_file(req, ino, fi, &atime_due);

	/* libfuse negotiates atomic O_TRUNC: the kernel leaves it to us */
	if (!err && (fi->flags & O_TRUNC)) {
		struct stat size0 = { .st_size = 0 };
		struct fs_cred cr = pm_cred(req);
		struct fs_attr a;
		err = fs_setattr(pm_fs(req), ino, &size0, FS_SET_SIZE, &cr, &a);
		if (err)
			fs_release(pm_fs(req), ino);
	}

	if (err) {
		reply_err(req, ino, -err);
	} else {
		set_open_fh(fi, atime_due, fs_dax_mapped(pm_fs(req), ino));
		fuse_reply_open(req, fi);
	}
}

#define K_FUSE_CREATE	35
#define K_FUSE_TMPFILE	51

void pm_ops_translate(void *msg, size_t len)
{
	struct fuse_in_header *in = msg;

	/* the kernel names an O_TMPFILE dentry "/", which no CREATE can carry */
	if (len >= sizeof(*in) && in->opcode == K_FUSE_TMPFILE)
		in->opcode = K_FUSE_CREATE;
}

static void pm_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	COUNT(create);
	struct fs_cred cr = pm_cred(req);
	struct fuse_entry_param e;
	struct fs_attr a;
	bool atime_due;
	int err = strcmp(name, "/") == 0
		? fs_tmpfile(pm_fs(req), parent, S_IFREG | (mode & 07777), &cr, &a)
		: fs_mknod(pm_fs(req), parent, name, S_IFREG | (mode & 07777), 0, &cr, &a);

	if (!err && (err = open_file(req, a.st.st_ino, fi, &atime_due)))
		fs_forget(pm_fs(req), a.st.st_ino, 1);	/* the kernel never learns of it */
	if (err) {
		reply_err(req, parent, -err);
		return;
	}
	fill_entry(&e, &a);
	set_open_fh(fi, atime_due, false);
	fuse_reply_create(req, &e, fi);
}

struct read_reply {
	fuse_req_t req;
	fuse_ino_t ino;
};

/*
 * Where file data goes through the region's file descriptor the segments
 * point into a mapping whose pages may never have been touched, and the
 * kernel copying a reply from it would fault on each: on /dev/fuse the data
 * segments are copied (pread) into this thread's buffer first, holes still
 * come from the zero buffer.  Allocated once per thread, freed at its exit.
 * io_uring workers copy segments themselves (put_payload).
 */
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;
struct bounce {
	size_t len;
	char buf[];
};

static void bounce_key_init(void)
{
	(void)pthread_key_create(&bounce_key, free);
}

static char *bounce_buffer(size_t len)
{
	struct bounce *b;

	pthread_once(&bounce_once, bounce_key_init);
	b = pthread_getspecific(bounce_key);
	if (b && b->len >= len)
		return b->buf;
	free(b);
	b = malloc(sizeof(*b) + len);
	if (b)
		b->len = len;
	(void)pthread_setspecific(bounce_key, b);
	return b ? b->buf : NULL;
}

/* 0, -EIO (a media error) or -ENOMEM */
static int bounce_segments(struct fs *fs, struct iovec *iov, int nsegs, size_t total)
{
	char *buf = bounce_buffer(total), *p;

	if (!buf)
		return -ENOMEM;
	p = buf;
	for (int i = 0; i < nsegs; i++) {
		if (fs_seg_is_zero(fs, iov[i].iov_base, iov[i].iov_len))
			continue;
		int err = fs_seg_copy(fs, p, iov[i].iov_base, iov[i].iov_len);

		if (err)
			return err;
		iov[i].iov_base = p;
		p += iov[i].iov_len;
	}
	return 0;
}

static int reply_segments(void *ctx, const struct fs_seg *segs, int nsegs, size_t total)
{
	struct read_reply *rr = ctx;
	struct iovec iov[FS_READ_MAXSEGS];
	struct fs *fs = pm_fs(rr->req);

	for (int i = 0; i < nsegs; i++) {
		iov[i].iov_base = (void *)segs[i].ptr;
		iov[i].iov_len = segs[i].len;
	}
	if (fs_seg_copy_needed(fs) && !uring_serving()) {
		int err = bounce_segments(fs, iov, nsegs, total);

		if (err) {
			if (err == -EIO)
				log_eio_once(rr->ino, "media error in its data");
			reply_err(rr->req, rr->ino, -err);
			return 0;
		}
	}
	/*
	 * Sent while the core holds the inode lock: blocks cannot move under
	 * us.  The kernel copies from the mapping itself; if it meets a bad
	 * page the write fails with EFAULT and the reader gets EIO.
	 */
	/* one segment (the usual small read): fuse_reply_iov would malloc a copy of iov */
	int ret = nsegs == 1 ? fuse_reply_buf(rr->req, iov[0].iov_base, iov[0].iov_len)
			     : fuse_reply_iov(rr->req, iov, nsegs);
	if (ret == -EFAULT)
		log_eio_once(rr->ino, "media error in its data");
	return 0;
}

static void pm_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	COUNT(read);
	struct read_reply rr = { req, ino };
	int err;

	if (off < 0) {
		reply_err(req, ino, EINVAL);
		return;
	}
	if (!(fi->fh & PM_FH_DIRECT))	/* into the page cache: maps' msync must drop it */
		fs_dax_note_read(pm_fs(req), ino, fi->fh);
	err = fs_read(pm_fs(req), ino, (uint64_t)off, size, reply_segments, &rr,
		      (fi->flags & O_NOATIME) ? FS_READ_NOATIME : 0);
	if (err)
		reply_err(req, ino, -err);
}

static void pm_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	COUNT(write);
	ssize_t n;

	if (!write_begin(req, ino, off))
		return;
	n = fs_write(pm_fs(req), ino, (uint64_t)off, buf, size, wants_sync(fi));
	reply_write(req, ino, n);
}

/* Move the next len bytes of a write request's buffer (a spliced pipe) to out */
static int copy_bufvec_out(struct fuse_bufvec *in, struct fuse_bufvec *out, size_t len)
{
	ssize_t n = fuse_buf_copy(out, in, 0);

	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -EIO;
}

/* ... into dst */
static int copy_from_bufvec(void *ctx, void *dst, size_t len)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(len);

	out.buf[0].mem = dst;
	return copy_bufvec_out(ctx, &out, len);
}

/* ... to fd at off: pipe to file, by splice where it can */
static int copy_from_bufvec_to_fd(void *ctx, int fd, uint64_t off, size_t len)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(len);

	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
	out.buf[0].fd = fd;
	out.buf[0].pos = (off_t)off;
	return copy_bufvec_out(ctx, &out, len);
}

/*
 * With splice, the kernel hands a WRITE's data over as a pipe: read it
 * straight into the region, one copy, instead of into a buffer first.
 */
static void pm_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	COUNT(write);
	size_t size = fuse_buf_size(in);
	ssize_t n;

	if (!write_begin(req, ino, off))
		return;
	if (in->count == 1 && !(in->buf[0].flags & FUSE_BUF_IS_FD)) {
		n = fs_write(pm_fs(req), ino, (uint64_t)off, (const char *)in->buf[0].mem + in->off,
			     size, wants_sync(fi));
	} else {
		struct fs_write_src src = { copy_from_bufvec, copy_from_bufvec_to_fd, in };
		n = fs_write_from(pm_fs(req), ino, (uint64_t)off, &src, size,
				  wants_sync(fi));
	}
	reply_write(req, ino, n);
}

/*
 * No .flush: FLUSH (sent on every close(2)) has nothing to do here -- data
 * durability is fsync's, and we keep no locks.  Without the handler libfuse
 * answers the first FLUSH with ENOSYS and the kernel stops sending them,
 * which saves a round trip per close (a quarter of a create+close).
 */

static void pm_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(release);
	bool mapped = fs_dax_release(pm_fs(req), ino, fi->fh);
	fs_release(pm_fs(req), ino);
	fuse_reply_err(req, 0);
	if (mapped && pm_session)	/* a process with direct maps exited */
		fuse_lowlevel_notify_inval_inode(pm_session, ino, 0, 0);
}

static void pm_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	COUNT(fsync);
	(void)fi;
	reply_err(req, ino, -fs_fsync(pm_fs(req), ino, datasync));
}

static void pm_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(opendir);
	struct fs_attr a;
	int err = fs_getattr(pm_fs(req), ino, &a);

	if (!err && !S_ISDIR(a.st.st_mode))
		err = -ENOTDIR;
	if (err)
		reply_err(req, ino, -err);
	else
		fuse_reply_open(req, fi);
}

struct dirbuf {
	fuse_req_t req;
	struct fs *fs;
	char *buf;
	size_t size, used;
	bool plus;
	int err;
};

static int fill_dirent(void *ctx, const char *name, size_t namelen, uint64_t ino,
		       unsigned type, int64_t next_off)
{
	struct dirbuf *b = ctx;
	char nm[FS_NAME_MAX + 1];
	size_t need;

	memcpy(nm, name, namelen);
	nm[namelen] = '\0';
	if (!b->plus) {
		struct stat st = { .st_ino = ino, .st_mode = type << 12 };
		need = fuse_add_direntry(b->req, b->buf + b->used, b->size - b->used, nm, &st, next_off);
		if (need > b->size - b->used)
			return 1;
		b->used += need;
		return 0;
	}
	struct fuse_entry_param e;
	struct fs_attr a;
	bool dots = strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0;
	if (dots) {
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = ino;
		e.attr.st_mode = S_IFDIR;
	} else if (fs_getattr(b->fs, ino, &a)) {
		return 0;
	} else {
		fill_entry(&e, &a);
	}
	need = fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, nm, &e, next_off);
	if (need > b->size - b->used)
		return 1;
	/* the kernel now holds a reference to this entry's inode */
	if (!dots)
		fs_ref_ino(b->fs, ino, &a);
	b->used += need;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct dirbuf b = { .req = req, .fs = pm_fs(req), .size = size, .plus = plus };
	int err;

	b.buf = malloc(size);
	if (!b.buf) {
		reply_err(req, ino, ENOMEM);
		return;
	}
	err = fs_readdir(b.fs, ino, off, fill_dirent, &b);
	if (err && b.used == 0)
		reply_err(req, ino, -err);
	else
		fuse_reply_buf(req, b.buf, b.used);
	free(b.buf);
}

static void pm_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	COUNT(readdir);
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void pm_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	COUNT(readdirplus);
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void pm_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(releasedir);
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void pm_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	COUNT(fsyncdir);
	(void)fi;
	/* directory changes are durable when their transaction commits */
	reply_err(req, ino, -fs_fsync(pm_fs(req), ino, datasync));
}

static void pm_statfs(fuse_req_t req, fuse_ino_t ino)
{
	COUNT(statfs);
	struct statvfs sv;

	(void)ino;
	fs_statfs(pm_fs(req), &sv);
	fuse_reply_statfs(req, &sv);
}

static void pm_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	COUNT(setxattr);
	struct fs_cred cr = pm_cred(req);

	reply_err(req, ino, -fs_setxattr(pm_fs(req), ino, name, value, size, flags, &cr));
}

static void reply_xattr_result(fuse_req_t req, fuse_ino_t ino, ssize_t n, const char *buf,
			       size_t size)
{
	if (n < 0)
		reply_err(req, ino, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void pm_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	COUNT(getxattr);
	char *buf = size ? malloc(size) : NULL;

	if (size && !buf) {
		reply_err(req, ino, ENOMEM);
		return;
	}
	reply_xattr_result(req, ino, fs_getxattr(pm_fs(req), ino, name, buf, size), buf, size);
	free(buf);
}

static void pm_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	COUNT(listxattr);
	char *buf = size ? malloc(size) : NULL;

	if (size && !buf) {
		reply_err(req, ino, ENOMEM);
		return;
	}
	reply_xattr_result(req, ino, fs_listxattr(pm_fs(req), ino, buf, size), buf, size);
	free(buf);
}

static void pm_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	COUNT(removexattr);
	reply_err(req, ino, -fs_removexattr(pm_fs(req), ino, name));
}

static void pm_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	COUNT(fallocate);
	int err;

	(void)fi;
	if (off < 0 || len <= 0) {
		reply_err(req, ino, EINVAL);
		return;
	}
	err = kill_priv(req, ino);
	if (!err)
		err = fs_fallocate(pm_fs(req), ino, mode, (uint64_t)off, (uint64_t)len);
	reply_err(req, ino, -err);
}

static void pm_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	COUNT(lseek);
	int64_t r;

	(void)fi;
	/*
	 * The kernel sends LSEEK without writing its dirty pages back first:
	 * with the writeback cache, data written but not yet written back is
	 * a hole here, and SEEK_DATA would send cp(1) past it.  ENOSYS makes
	 * the kernel answer itself from then on, for the whole mount: data
	 * everywhere up to its own idea of the size (what POSIX allows).
	 */
	if (pm_writeback_cache) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		reply_err(req, ino, EINVAL);
		return;
	}
	r = fs_lseek(pm_fs(req), ino, off, whence);
	if (r < 0)
		reply_err(req, ino, (int)-r);
	else
		fuse_reply_lseek(req, r);
}

static void pm_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	COUNT(copy_file_range);
	ssize_t n;

	(void)fi_in;
	(void)fi_out;
	if (flags || off_in < 0 || off_out < 0) {
		reply_err(req, ino_in, EINVAL);
		return;
	}
	n = kill_priv(req, ino_out);
	if (n == 0)
		n = fs_copy_range(pm_fs(req), ino_in, (uint64_t)off_in, ino_out, (uint64_t)off_out,
				  len);
	if (n < 0)
		reply_err(req, ino_in, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

/*
 * chattr(1) and lsattr(1): the kernel turns FS_IOC_GETFLAGS/SETFLAGS (and
 * xfs_io's FS_IOC_FSGETXATTR/FSSETXATTR) into FUSE_IOCTL requests after its
 * own checks (owner, CAP_LINUX_IMMUTABLE).  Every other ioctl is ENOTTY.
 */
static const struct {
	unsigned fl, xflag;
} xflag_map[] = {
	{ FS_IFL_IMMUTABLE, FS_XFLAG_IMMUTABLE },
	{ FS_IFL_APPEND, FS_XFLAG_APPEND },
	{ FS_IFL_NODUMP, FS_XFLAG_NODUMP },
	{ FS_IFL_NOATIME, FS_XFLAG_NOATIME },
};

static unsigned fl_to_xflags(unsigned fl)
{
	unsigned x = 0;

	for (size_t i = 0; i < sizeof(xflag_map) / sizeof(xflag_map[0]); i++)
		if (fl & xflag_map[i].fl)
			x |= xflag_map[i].xflag;
	return x;
}

/* -1 if x names a flag we do not keep */
static int xflags_to_fl(unsigned x, unsigned *fl)
{
	*fl = 0;
	for (size_t i = 0; i < sizeof(xflag_map) / sizeof(xflag_map[0]); i++)
		if (x & xflag_map[i].xflag) {
			*fl |= xflag_map[i].fl;
			x &= ~xflag_map[i].xflag;
		}
	return x ? -1 : 0;
}

/*
 * libpmfuse-dax's requests (include/pmfuse/dax-ioctl.h): the core does the
 * work; here the request struct is copied in and out, and after a fault
 * that filled a hole or a msync, the kernel's cached copies of those pages
 * (other descriptors' page cache, the holes of maps) are dropped, after the
 * reply so the faulting process is not kept waiting on them.
 */
static void dax_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, struct fuse_file_info *fi,
		      const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	static _Thread_local struct pmfuse_dax_req r;
	struct fs *fs = pm_fs(req);
	bool allocated = false;
	int err;

	if (cmd == PMFUSE_IOC_DAX_INFO) {
		struct pmfuse_dax_info info;
		if (out_bufsz < sizeof(info) || (err = fs_dax_info(fs, &info))) {
			reply_err(req, ino, out_bufsz < sizeof(info) ? EINVAL : -err);
			return;
		}
		fuse_reply_ioctl(req, 0, &info, sizeof(info));
		return;
	}
	if (cmd == PMFUSE_IOC_DAX_FAULT) {
		struct pmfuse_dax_fault f;
		if (in_bufsz < sizeof(f) || out_bufsz < sizeof(f)) {
			reply_err(req, ino, EINVAL);
			return;
		}
		memcpy(&f, in_buf, sizeof(f));
		err = fs_dax_fault(fs, ino, fi->fh, &f, &allocated);
		if (err) {
			reply_err(req, ino, -err);
			return;
		}
		fuse_reply_ioctl(req, 0, &f, sizeof(f));
		if (allocated && pm_session)
			fuse_lowlevel_notify_inval_inode(pm_session, ino,
							 (off_t)(f.page * PMFUSE_DAX_BLOCK),
							 PMFUSE_DAX_BLOCK);
		return;
	}
	if (in_bufsz < sizeof(r) || out_bufsz < sizeof(r)) {
		reply_err(req, ino, EINVAL);
		return;
	}
	memcpy(&r, in_buf, sizeof(r));
	switch (cmd) {
	case PMFUSE_IOC_DAX_MAP:
		err = fs_dax_map(fs, ino, fi->fh, fi->fh & PM_FH_WRITE, &r);
		break;
	case PMFUSE_IOC_DAX_EXTENTS:
		err = fs_dax_extents(fs, ino, fi->fh, &r);
		break;
	case PMFUSE_IOC_DAX_SYNC:
		err = fs_dax_sync(fs, ino, fi->fh, &r);
		break;
	default:
		err = fs_dax_unmap(fs, ino, fi->fh, &r);
		break;
	}
	if (err) {
		reply_err(req, ino, -err);
		return;
	}
	fuse_reply_ioctl(req, 0, &r, sizeof(r));
	if (!pm_session)
		return;
	/* msync, munmap (all or part): what was stored is the file's bytes now */
	if (cmd == PMFUSE_IOC_DAX_SYNC)
		fuse_lowlevel_notify_inval_inode(pm_session, ino, (off_t)(r.first * PMFUSE_DAX_BLOCK),
						 (off_t)(r.npages * PMFUSE_DAX_BLOCK));
	else if (cmd == PMFUSE_IOC_DAX_UNMAP ||
		 (cmd == PMFUSE_IOC_DAX_MAP && (r.flags & PMFUSE_DAX_WRITE)))
		fuse_lowlevel_notify_inval_inode(pm_session, ino, 0, 0);
}

static void pm_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	COUNT(ioctl);
	struct fs *fs = pm_fs(req);
	struct fsxattr fsx;
	unsigned fl;
	int err, v;

	(void)arg;
	(void)fi;
	(void)flags;
	switch (cmd) {
	case FS_IOC_GETFLAGS:
	case FS_IOC32_GETFLAGS:
		if (out_bufsz < sizeof(v) || (err = fs_get_iflags(fs, ino, &fl))) {
			reply_err(req, ino, out_bufsz < sizeof(v) ? EINVAL : -err);
			return;
		}
		v = (int)fl;
		fuse_reply_ioctl(req, 0, &v, sizeof(v));
		return;
	case FS_IOC_SETFLAGS:
	case FS_IOC32_SETFLAGS:
		if (in_bufsz < sizeof(v)) {
			reply_err(req, ino, EINVAL);
			return;
		}
		memcpy(&v, in_buf, sizeof(v));
		err = fs_set_iflags(fs, ino, (unsigned)v);
		break;
	case FS_IOC_FSGETXATTR:
		if (out_bufsz < sizeof(fsx) || (err = fs_get_iflags(fs, ino, &fl))) {
			reply_err(req, ino, out_bufsz < sizeof(fsx) ? EINVAL : -err);
			return;
		}
		memset(&fsx, 0, sizeof(fsx));
		fsx.fsx_xflags = fl_to_xflags(fl);
		fuse_reply_ioctl(req, 0, &fsx, sizeof(fsx));
		return;
	case FS_IOC_FSSETXATTR:
		if (in_bufsz < sizeof(fsx)) {
			reply_err(req, ino, EINVAL);
			return;
		}
		memcpy(&fsx, in_buf, sizeof(fsx));
		if (xflags_to_fl(fsx.fsx_xflags, &fl) || fsx.fsx_extsize || fsx.fsx_projid ||
		    fsx.fsx_cowextsize)
			err = -EOPNOTSUPP;
		else
			err = fs_set_iflags(fs, ino, fl);
		break;
	case PMFUSE_IOC_DAX_INFO:
	case PMFUSE_IOC_DAX_MAP:
	case PMFUSE_IOC_DAX_EXTENTS:
	case PMFUSE_IOC_DAX_FAULT:
	case PMFUSE_IOC_DAX_SYNC:
	case PMFUSE_IOC_DAX_UNMAP:
		dax_ioctl(req, ino, cmd, fi, in_buf, in_bufsz, out_bufsz);
		return;
	default:
		reply_err(req, ino, ENOTTY);
		return;
	}
	if (err)
		reply_err(req, ino, -err);
	else
		fuse_reply_ioctl(req, 0, NULL, 0);
}

bool pm_opt_splice = true;
bool pm_opt_acl = true;

/*
 * libfuse splices each request into a pipe as large as its receive buffer
 * (256 pages and a header page) and, if it cannot grow a pipe that far,
 * quietly copies instead.  Ask only when such a pipe is allowed.
 */
#define SPLICE_PIPE_SIZE (257u * 4096u)

static bool pipe_can_hold(unsigned bytes)
{
	int p[2];
	bool ok;

	if (pipe2(p, O_CLOEXEC))
		return false;
	ok = fcntl(p[0], F_SETPIPE_SZ, bytes) >= (int)bytes;
	close(p[0]);
	close(p[1]);
	return ok;
}

static void pm_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs_info info;

	fs_info(userdata, &info);
	pm_sync_mount = info.sync;
	eio_logged_inodes = info.max_inodes;
	eio_logged = calloc((info.max_inodes + 63) / 64, sizeof(*eio_logged));
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_IOCTL_DIR)
		conn->want |= FUSE_CAP_IOCTL_DIR;	/* chattr of directories */
	/*
	 * File handles (name_to_handle_at, NFS servers) outlive the kernel's
	 * inodes: with export support the kernel asks LOOKUP of "." for an
	 * inode number it no longer holds (and ".." for a directory's parent);
	 * inode numbers and generations are persistent, so a handle opens the
	 * same file after eviction, a daemon restart or a remount.
	 */
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	/*
	 * POSIX ACLs: the kernel enforces them (with default_permissions) and
	 * hands us the caller's umask unapplied, so that a default ACL can
	 * stand in for it (fs_mknod); the core keeps ACLs and modes in step.
	 */
	if (pm_opt_acl && (conn->capable & FUSE_CAP_POSIX_ACL) &&
	    (conn->capable & FUSE_CAP_DONT_MASK))
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
	else
		conn->want &= ~(unsigned)FUSE_CAP_POSIX_ACL;
	/*
	 * The writeback cache: buffered writes land in the kernel's page cache
	 * and reach us as page-sized WRITEs on write-back, close, fsync or
	 * msync; the kernel keeps size and mtime meanwhile and sends them in a
	 * SETATTR before FSYNC.  fsync, O_SYNC and msync still return only
	 * after our FSYNC has flushed and drained.  Not with -o sync, whose
	 * promise is that write(2) itself returns with the data persistent.
	 */
	pm_writeback_cache = pm_opt_writeback_cache && !pm_sync_mount &&
			     (conn->capable & FUSE_CAP_WRITEBACK_CACHE);
	if (pm_writeback_cache)
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* libfuse turns splice on by itself because we have write_buf */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	if (pm_opt_splice && (conn->capable & FUSE_CAP_SPLICE_READ)) {
		if (pipe_can_hold(SPLICE_PIPE_SIZE))
			conn->want |= FUSE_CAP_SPLICE_READ;
		else
			log_notice("writes are copied twice: splice needs pipes of %u bytes "
				   "(sysctl fs.pipe-max-size, or CAP_SYS_RESOURCE)",
				   SPLICE_PIPE_SIZE);
	}
}

static void pm_destroy(void *userdata)
{
	(void)userdata;
	free(eio_logged);
	eio_logged = NULL;
}

const struct fuse_lowlevel_ops pm_ops = {
	.init = pm_init,
	.destroy = pm_destroy,
	.lookup = pm_lookup,
	.forget = pm_forget,
	.forget_multi = pm_forget_multi,
	.getattr = pm_getattr,
	.setattr = pm_setattr,
	.readlink = pm_readlink,
	.mknod = pm_mknod,
	.mkdir = pm_mkdir,
	.symlink = pm_symlink,
	.link = pm_link,
	.unlink = pm_unlink,
	.rmdir = pm_rmdir,
	.rename = pm_rename,
	.open = pm_open,
	.create = pm_create,
	.read = pm_read,
	.write = pm_write,
	.write_buf = pm_write_buf,
	.release = pm_release,
	.fsync = pm_fsync,
	.opendir = pm_opendir,
	.readdir = pm_readdir,
	.readdirplus = pm_readdirplus,
	.releasedir = pm_releasedir,
	.fsyncdir = pm_fsyncdir,
	.statfs = pm_statfs,
	.setxattr = pm_setxattr,
	.getxattr = pm_getxattr,
	.listxattr = pm_listxattr,
	.removexattr = pm_removexattr,
	.fallocate = pm_fallocate,
	.lseek = pm_lseek,
	.copy_file_range = pm_copy_file_range,
	.ioctl = pm_ioctl,
};
