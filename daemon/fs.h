/*
 * fs: the pmfuse core -- a POSIX filesystem over one region, with no
 * knowledge of FUSE.  Every function returns 0 (or a count) on success and
 * a negative errno on failure.  Every metadata change is one pmemobj
 * transaction; DRAM state (allocator, directory indexes, inode free list)
 * changes only after that transaction commits, or is rolled back after it
 * aborts.
 *
 * Locking (outer to inner):
 *   fs->rename_lock        serialises renames (tree shape is stable under it)
 *   directory inode locks  ancestor before descendant; unrelated: by ino
 *   non-directory inodes   by ino
 *   fs->orphan_lock, fs->itable_lock, dir index spinless parts: leaf locks
 *   alloc->lock            innermost
 * An inode's lock protects its persistent record, its file map, and for a
 * directory its entries and DRAM index.  Hot paths (read, write, getattr,
 * lookup) take only the locks of the inodes they touch.
 */
#ifndef PMFUSE_FS_H
#define PMFUSE_FS_H

#include "alloc.h"
#include "fmap.h"
#include "pool.h"
#include "region.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct dir_index;

/*
 * An in-memory inode, and its lifetime.
 *
 * A struct inode exists for an inode number while anything refers to it:
 * the kernel (nlookup: LOOKUP and friends add, FORGET subtracts), open files
 * (nopen), or a core operation in progress (refs: inode_get()/inode_put()).
 * It is found through fs->icache[ino], under the number's stripe lock
 * (fs->istripe[ino % 64]), which protects the three counts, the state and
 * the icache slot itself.
 *
 *   LIVE      in icache; inode_get() takes a reference.
 *   EVICTING  the last count dropped to zero.  The thread that dropped it
 *             owns the inode now: under its lock (write) it writes back the
 *             dirty pages, frees the DRAM indexes and, if the inode is
 *             unlinked, reclaims it (one transaction); only then does it
 *             clear the icache slot, wake the stripe's waiters and free the
 *             struct.  The struct stays findable all that time, so
 *             inode_get() of its number waits (fs->istripe_wait) and then
 *             sees either the reclaimed, free record (NULL) or a fresh struct
 *             built from a record nobody else holds: never a second struct
 *             for one record, so never a second reclaim.  fs_forget() and
 *             fs_release() ignore an EVICTING inode (it has no counts left).
 *
 * Hence inode_put() (and fs_forget(), fs_release()) may run I/O and a
 * transaction in the caller's thread: call them holding no inode lock.  A
 * lookup by number (stats, extents, NFS handles, readdirplus) goes through
 * inode_get() like everything else; walks over all inodes read persistent
 * records and never create structs.  Reclaim is idempotent besides: it
 * checks, under fs->orphan_lock in its transaction, that the record is
 * still an unlinked orphan.
 */
enum inode_state {
	INODE_LIVE,
	INODE_EVICTING,
};

struct inode {
	uint64_t ino;
	struct pmfuse_inode *pi;	/* persistent record */
	pthread_rwlock_t lock;
	/* protected by the icache stripe lock */
	enum inode_state state;
	uint64_t nlookup;		/* kernel references */
	uint32_t nopen;			/* open files */
	_Atomic uint32_t ncached;	/* of those, opened without O_DIRECT: the
					 * client may cache their pages */
	uint32_t refs;			/* transient core references */
	/* protected by lock */
	struct dir_index *dir;		/* lazily built, under lock (write) */
	struct index *ix;		/* mapping index: built under lock (write),
					 * dropped (flushed first) on eviction and on
					 * punch/truncate; used under lock (any) */
};

struct fs_opts {
	bool sync;			/* -o sync: persist data before replying */
};

struct fs_stats {
	_Atomic uint64_t flush_bytes;
	_Atomic uint64_t flush_calls;
	_Atomic uint64_t drains;
	_Atomic int64_t dirty_pages;	/* pages marked DIRTY, all files */
	_Atomic uint64_t zero_bytes_served;
	_Atomic uint64_t splice_write_bytes;	/* written by fs_write_from() */
};

struct fs {
	struct pool pool;
	struct region region;
	struct alloc alloc;
	struct fs_opts opts;
	struct fs_stats stats;
	/* more "name value" lines for the stats xattr, from the layer above */
	int (*stats_extra)(char *buf, size_t size);
	const void *zero;		/* read-only zero buffer */
	size_t zero_size;

	/* inode cache: ino -> struct inode * (see struct inode for the rules) */
	_Atomic(struct inode *) *icache;
	uint64_t max_inodes;
	pthread_mutex_t istripe[64];
	pthread_cond_t istripe_wait[64];	/* an EVICTING inode left icache */
	struct inode *root;		/* the kernel's reference, mount to unmount */

	/* free inode numbers: protected by itable_lock */
	pthread_mutex_t itable_lock;
	uint64_t *ifree;
	uint64_t nifree;
	uint64_t next_chunk;		/* first never-allocated itable chunk */
	uint64_t used_inodes;

	pthread_mutex_t orphan_lock;	/* sb->orphan_head and orphan links */
	pthread_mutex_t rename_lock;
};

/* Caller identity for permission-relevant decisions (owner, group). */
struct fs_cred {
	uid_t uid;
	gid_t gid;
};

/* mount/unmount */
int fs_mount(struct fs **out, const char *region, const struct fs_opts *o,
	     char *why, size_t whylen);
void fs_unmount(struct fs *fs);

/* inode cache (inode.c) */
struct inode *inode_get(struct fs *fs, uint64_t ino);	/* +1 ref, NULL if free */
void inode_put(struct fs *fs, struct inode *in);	/* may evict: no locks held */
struct pmfuse_inode *inode_record(struct fs *fs, uint64_t ino);
int inode_validate(const struct pool *p, uint64_t ino, const struct pmfuse_inode *pi,
		   char *why, size_t whylen);
void inode_to_stat(const struct inode *in, struct stat *st);
int inode_alloc_ino(struct fs *fs, uint64_t *ino);	/* before the tx */
void inode_release_ino(struct fs *fs, uint64_t ino);	/* after abort or free */
void inode_tx_init(struct fs *fs, uint64_t ino, mode_t mode, uid_t uid, gid_t gid,
		   dev_t rdev);
int inode_tx_destroy(struct fs *fs, struct inode *in, struct fmap_freed *freed);
void inode_tx_touch(struct pmfuse_inode *pi, bool atime, bool mtime, bool ctime);
/*
 * The set-id bits a change of owner or a write by an unprivileged user
 * drops (the kernel's should_remove_suid()): setuid always, setgid only
 * with group execute (without it, setgid marks mandatory locking).
 */
static inline mode_t inode_setid_to_drop(mode_t mode)
{
	mode_t drop = mode & S_ISUID;

	if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		drop |= S_ISGID;
	return drop;
}
void inode_tx_add(struct pmfuse_inode *pi);
int inode_load_table(struct fs *fs, char *why, size_t whylen);
void inode_add_lookup(struct fs *fs, struct inode *in);
void inode_tx_orphan_add(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi);
/* Free an unlinked orphan's record, blocks and number: 1, 0 if it is not one, -errno. */
int inode_reclaim(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi);

/* kernel reference counting */
void fs_forget(struct fs *fs, uint64_t ino, uint64_t n);

/* namespace (fs.c) */
int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *st);
int fs_getattr(struct fs *fs, uint64_t ino, struct stat *st);
int fs_ref_ino(struct fs *fs, uint64_t ino, struct stat *st);	/* readdirplus */

#define FS_SET_MODE	(1 << 0)
#define FS_SET_UID	(1 << 1)
#define FS_SET_GID	(1 << 2)
#define FS_SET_SIZE	(1 << 3)
#define FS_SET_ATIME	(1 << 4)
#define FS_SET_MTIME	(1 << 5)
#define FS_SET_ATIME_NOW (1 << 6)
#define FS_SET_MTIME_NOW (1 << 7)
#define FS_SET_CTIME	(1 << 8)
int fs_setattr(struct fs *fs, uint64_t ino, const struct stat *attr, int valid,
	       struct stat *st);
int fs_mknod(struct fs *fs, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct stat *st);
int fs_symlink(struct fs *fs, uint64_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct stat *st);
int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname,
	    struct stat *st);
int fs_unlink(struct fs *fs, uint64_t parent, const char *name);
int fs_rmdir(struct fs *fs, uint64_t parent, const char *name);
#define FS_RENAME_NOREPLACE 1
#define FS_RENAME_EXCHANGE  2
int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);
int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t size);

/* open files */
/* flags: the open(2) flags; release gets the same ones */
int fs_open(struct fs *fs, uint64_t ino, int flags);
void fs_release(struct fs *fs, uint64_t ino, int flags);
/* Is the file open without O_DIRECT somewhere (pages of it may be cached)? */
bool fs_cached_opens(struct fs *fs, uint64_t ino);

/* directories (dir.c) */
typedef int (*fs_dirent_fn)(void *ctx, const char *name, size_t namelen, uint64_t ino,
			    unsigned type, int64_t next_off);
int fs_readdir(struct fs *fs, uint64_t ino, int64_t off, fs_dirent_fn fn, void *ctx);

/* data (data.c): read gives segments into the region or the zero buffer */
struct fs_seg {
	const void *ptr;
	size_t len;
};
#define FS_READ_MAXSEGS 320
/* fn runs with the inode locked shared: the segments stay valid until it returns */
typedef int (*fs_read_fn)(void *ctx, const struct fs_seg *segs, int nsegs, size_t total);
int fs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, fs_read_fn fn, void *ctx);
ssize_t fs_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size,
		 bool sync);
/*
 * Where a write's bytes come from when they are not in memory (a spliced
 * pipe): read(ctx, dst, len) stores the next len bytes at dst -- straight
 * into the region, the only copy -- and returns 0 or -errno.  The bytes are
 * consumed once, in file order.
 */
struct fs_write_src {
	int (*read)(void *ctx, void *dst, size_t len);
	void *ctx;
};
ssize_t fs_write_from(struct fs *fs, uint64_t ino, uint64_t off, const struct fs_write_src *src,
		      size_t size, bool sync);
int fs_fsync(struct fs *fs, uint64_t ino, bool datasync);
/* Text for the user.pmfuse.extents xattr of a regular file. */
int data_extents_text(struct fs *fs, uint64_t ino, char *buf, size_t size);
/*
 * Free a file's mapping index (inode lock held exclusively), flushing its
 * dirty ranges first if writeback -- not for an unlinked file about to be
 * reclaimed: nobody can read those bytes again.
 */
int data_drop_index(struct fs *fs, struct inode *in, bool writeback);
int fs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off, uint64_t len);
int64_t fs_lseek(struct fs *fs, uint64_t ino, int64_t off, int whence);
ssize_t fs_copy_range(struct fs *fs, uint64_t src_ino, uint64_t soff, uint64_t dst_ino,
		      uint64_t doff, uint64_t len);
int fs_truncate_locked(struct fs *fs, struct inode *in, uint64_t size,
		       struct fmap_freed *freed);

int fs_statfs(struct fs *fs, struct statvfs *sv);

/* xattrs (xattr.c) */
int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value,
		size_t size, int flags);
ssize_t fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *value, size_t size);
ssize_t fs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size);
int fs_removexattr(struct fs *fs, uint64_t ino, const char *name);
/*
 * Before a write the kernel does not prepare (files opened O_DIRECT): what
 * its file_remove_privs() would do -- drop security.capability, and setuid
 * (and setgid with group execute) unless the writer is privileged.  One
 * transaction when there is something to drop; two loads when not.
 * 1 if something was dropped, 0 if not, or -errno.
 */
int fs_kill_priv(struct fs *fs, uint64_t ino, bool privileged);

/* zero buffer (zero.c) */
int zero_init(struct fs *fs);
void zero_fini(struct fs *fs);


#endif
