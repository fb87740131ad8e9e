/*
 * fs.h: the public interface of the pmfuse core -- a POSIX filesystem over
 * one persistent-memory region, with no knowledge of FUSE.  The FUSE layer
 * (the .c files of daemon/) includes this header and nothing else of the
 * core; the core itself is described in core.h.
 *
 * Conventions.  Inodes are named by number (a struct fs_attr carries the
 * number and its generation, which together name one file for ever).
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure; damaged metadata is -EIO.  Metadata changes are durable when
 * the function returns; written data when fs_fsync() returns (at once with
 * sync).  Any function may be called from any number of threads at once.
 */
#ifndef PMFUSE_FS_H
#define PMFUSE_FS_H

#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct fs;	/* a mounted region */

#define FS_NAME_MAX	255		/* bytes of a name */
#define FS_SYMLINK_MAX	4095		/* bytes of a symlink's target */
#define FS_FORMAT_VERSION 6		/* the on-media format this core writes (reads 1 to 5 too) */
#define FS_WHY_MAX	512		/* room for a refusal's reason */

struct fs_opts {
	bool sync;			/* -o sync: persist data before replying */
	/* the process opens no other pool: pool_use_open_arena() (pool.h) */
	bool open_arena;
};

/*
 * Access times, as the mount's options ask (the kernel leaves them to the
 * FUSE server): relatime (the default) updates the atime on a read or a
 * directory listing when it is not later than the mtime or the ctime, or
 * is a day old; strictatime on every one; noatime (and a read-only mount)
 * never; nodiratime never for directories.  Set before serving requests.
 */
enum fs_atime { FS_ATIME_RELATIME, FS_ATIME_STRICT, FS_ATIME_NEVER };
void fs_set_atime(struct fs *fs, enum fs_atime policy, bool nodiratime);

/*
 * Who asks (the caller's fsuid, fsgid and thread id; pid 0 when unknown).
 * A NULL cred is the filesystem itself: privileged, in every group.
 */
struct fs_cred {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	mode_t umask;	/* applied to a new inode's mode unless a default ACL applies */
};

/* Does the caller hold CAP_FSETID / belong to group gid (cred.c)? */
bool fs_cred_capable_fsetid(const struct fs_cred *cr);
bool fs_cred_in_group(const struct fs_cred *cr, gid_t gid);

/* An inode's attributes, and the generation of its number. */
struct fs_attr {
	struct stat st;
	uint64_t generation;
};

/* mount/unmount: why gets a one-line reason for a refusal */
int fs_mount(struct fs **out, const char *region, const struct fs_opts *o,
	     char *why, size_t whylen);
/*
 * Start the core's background work -- after a mount from the clean-unmount
 * record, listing the heap for the first-use checks of inodes -- once the
 * process is the one that serves (after daemonizing: a fork keeps no
 * thread).  Without it the first inode used does that work.
 */
void fs_start(struct fs *fs);
void fs_unmount(struct fs *fs);

/* What the mount is, for messages and for sizing the layer's own tables. */
struct fs_info {
	bool sync;			/* -o sync */
	const char *granularity;	/* "byte", "cache_line" or "page" */
	bool fd_io;			/* file data through the region's fd */
	long first_touch_ns;		/* the page-fault cost that chose it */
	uint64_t max_inodes;		/* inode numbers are below this */
};
void fs_info(const struct fs *fs, struct fs_info *info);

/*
 * More "name value" lines for the stats xattr, from the layer above: fn
 * writes at most size bytes and returns their count (or >= size if cut off).
 */
void fs_set_stats_extra(struct fs *fs, int (*fn)(char *buf, size_t size));

/* kernel reference counting */
void fs_forget(struct fs *fs, uint64_t ino, uint64_t n);

/* namespace */
/*
 * "." or "..": fs_lookup() answers them for the kernel's export operations
 * (decoding a file handle, finding a directory's parent), never a path walk.
 */
static inline bool fs_is_dot_name(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}
int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct fs_attr *attr);
int fs_getattr(struct fs *fs, uint64_t ino, struct fs_attr *attr);
int fs_ref_ino(struct fs *fs, uint64_t ino, struct fs_attr *attr);	/* readdirplus */

#define FS_SET_MODE	(1 << 0)
#define FS_SET_UID	(1 << 1)
#define FS_SET_GID	(1 << 2)
#define FS_SET_SIZE	(1 << 3)
#define FS_SET_ATIME	(1 << 4)
#define FS_SET_MTIME	(1 << 5)
#define FS_SET_ATIME_NOW (1 << 6)
#define FS_SET_MTIME_NOW (1 << 7)
#define FS_SET_CTIME	(1 << 8)
/*
 * The explicit mtime and ctime are the clock of a cache in front of us that
 * keeps them (the kernel's writeback cache), not times a user chose: they
 * count as times set to now, which an append-only file accepts.
 */
#define FS_SET_CMTIME_CACHED (1 << 9)
/*
 * A size change drops what a write would (fs_kill_priv); a change of owner
 * or group drops setuid, and setgid as the kernel's chown does -- unless the
 * same call sets the mode.  cr: the caller (NULL: privileged).
 */
int fs_setattr(struct fs *fs, uint64_t ino, const struct stat *set, int valid,
	       const struct fs_cred *cr, struct fs_attr *attr);
int fs_mknod(struct fs *fs, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct fs_attr *attr);
/*
 * O_TMPFILE: a regular file in directory parent's filesystem with no name
 * (link count 0, on the orphan list: a crash reclaims it, as its last close
 * does), which fs_link() may give a name once.  Mode, group and ACLs as for
 * a file created in parent.
 */
int fs_tmpfile(struct fs *fs, uint64_t parent, mode_t mode, const struct fs_cred *cr,
	       struct fs_attr *attr);
int fs_symlink(struct fs *fs, uint64_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct fs_attr *attr);
int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname,
	    struct fs_attr *attr);
int fs_unlink(struct fs *fs, uint64_t parent, const char *name);
int fs_rmdir(struct fs *fs, uint64_t parent, const char *name);
#define FS_RENAME_NOREPLACE 1
#define FS_RENAME_EXCHANGE  2
int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);
int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t size);

/* open files */
/*
 * flags: the open(2) flags.  atime_due (may be NULL): would a read of ino now
 * update its atime?  A cache in front of us may serve reads we never see: it
 * must let the next one through.
 */
int fs_open(struct fs *fs, uint64_t ino, int flags, bool *atime_due);
void fs_release(struct fs *fs, uint64_t ino);

/* directories */
typedef int (*fs_dirent_fn)(void *ctx, const char *name, size_t namelen, uint64_t ino,
			    unsigned type, int64_t next_off);
int fs_readdir(struct fs *fs, uint64_t ino, int64_t off, fs_dirent_fn fn, void *ctx);

/* data: a read gives segments into the region or into the zero buffer */
struct fs_seg {
	const void *ptr;
	size_t len;
};
#define FS_READ_MAXSEGS 320
/*
 * fn runs with the inode locked shared: the segments stay valid until it
 * returns.  The read updates the atime (fs_set_atime) unless flags has
 * FS_READ_NOATIME (an O_NOATIME open).
 */
typedef int (*fs_read_fn)(void *ctx, const struct fs_seg *segs, int nsegs, size_t total);
#define FS_READ_NOATIME 1u
int fs_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, fs_read_fn fn, void *ctx,
	    unsigned flags);
ssize_t fs_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size,
		 bool sync);
/*
 * Where a write's bytes come from when they are not in memory (a spliced
 * pipe): read(ctx, dst, len) stores the next len bytes at dst -- straight
 * into the region, the only copy -- and returns 0 or -errno.  Where the
 * region's data goes through its file descriptor (page granularity),
 * to_fd(ctx, fd, off, len) writes them to fd at off instead (a splice) if
 * it is set.  The bytes are consumed once, in file order.
 */
struct fs_write_src {
	int (*read)(void *ctx, void *dst, size_t len);
	int (*to_fd)(void *ctx, int fd, uint64_t off, size_t len);
	void *ctx;
};
ssize_t fs_write_from(struct fs *fs, uint64_t ino, uint64_t off, const struct fs_write_src *src,
		      size_t size, bool sync);
int fs_fsync(struct fs *fs, uint64_t ino, bool datasync);
int fs_fallocate(struct fs *fs, uint64_t ino, int mode, uint64_t off, uint64_t len);
int64_t fs_lseek(struct fs *fs, uint64_t ino, int64_t off, int whence);
ssize_t fs_copy_range(struct fs *fs, uint64_t src_ino, uint64_t soff, uint64_t dst_ino,
		      uint64_t doff, uint64_t len);

int fs_statfs(struct fs *fs, struct statvfs *sv);

/* extended attributes; user.pmfuse.stats (root) and .extents are generated */
/*
 * system.posix_acl_access and system.posix_acl_default are POSIX ACLs
 * (acl.h): checked, kept in step with the mode, and, for the access ACL of
 * a caller cr outside the file's group, setgid dropped.  cr may be NULL.
 */
int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value,
		size_t size, int flags, const struct fs_cred *cr);
ssize_t fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *value, size_t size);
ssize_t fs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size);
int fs_removexattr(struct fs *fs, uint64_t ino, const char *name);
/*
 * chattr(1) attributes, as FS_IOC_GETFLAGS/SETFLAGS carry them (the values
 * are the kernel's FS_*_FL): immutable (no change of data, attributes or
 * names, no opening for writing), append-only (opened for writing only with
 * O_APPEND, no truncation, no removal), nodump (kept) and noatime (reads
 * leave the atime alone).  Setting any other is -EOPNOTSUPP.  The kernel
 * has checked the caller (owner; CAP_LINUX_IMMUTABLE for the first two).
 */
#define FS_IFL_IMMUTABLE	0x10u
#define FS_IFL_APPEND		0x20u
#define FS_IFL_NODUMP		0x40u
#define FS_IFL_NOATIME		0x80u
int fs_get_iflags(struct fs *fs, uint64_t ino, unsigned *flags);
int fs_set_iflags(struct fs *fs, uint64_t ino, unsigned flags);
/*
 * Before cr changes a file's contents (write, fallocate, the destination of
 * a copy): what the kernel's file_remove_privs() does -- drop
 * security.capability, and the set-id bits inode_setid_on_write() names.
 * The kernel leaves this to us (HANDLE_KILLPRIV_V2, and always on O_DIRECT
 * files).  One transaction when there is something to drop; a few loads
 * when not.  1 if something was dropped, 0 if not, or -errno.
 */
int fs_kill_priv(struct fs *fs, uint64_t ino, const struct fs_cred *cr);

/*
 * For a transport that copies read segments itself: is [p, p + n) inside
 * the shared zero buffer (a hole: no need to copy zeros)?  And copy a
 * segment out, with a bad page of the region (a media error) an -EIO, not
 * a SIGBUS.
 */
bool fs_seg_is_zero(const struct fs *fs, const void *p, size_t n);
int fs_seg_copy(struct fs *fs, void *dst, const void *src, size_t n);
/*
 * Must data segments be copied out with fs_seg_copy rather than handed to
 * the kernel to copy from (file data goes through the region's file
 * descriptor: the mapping the segments point into is cold)?
 */
bool fs_seg_copy_needed(const struct fs *fs);

/*
 * Direct access (dax.c; the protocol is include/pmfuse/dax-ioctl.h): map
 * sessions of libpmfuse-dax, one per application mapping, each tied to the
 * open file (owner, the FUSE layer's handle) it came through.  owner_writes:
 * that open may write.  0 or -errno; fs_dax_fault sets *allocated when it
 * filled a hole (cached copies of that page are stale).
 */
struct pmfuse_dax_info;
struct pmfuse_dax_req;
struct pmfuse_dax_fault;
int fs_dax_info(struct fs *fs, struct pmfuse_dax_info *info);
int fs_dax_map(struct fs *fs, uint64_t ino, uint64_t owner, bool owner_writes,
	       struct pmfuse_dax_req *r);
int fs_dax_extents(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r);
int fs_dax_fault(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_fault *f,
		 bool *allocated);
int fs_dax_sync(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r);
int fs_dax_unmap(struct fs *fs, uint64_t ino, uint64_t owner, struct pmfuse_dax_req *r);
/* The open file owner is released: end its sessions (before fs_release); true if it had any. */
bool fs_dax_release(struct fs *fs, uint64_t ino, uint64_t owner);
/* A READ of ino through the page cache by the open owner (msync must drop what it cached). */
void fs_dax_note_read(struct fs *fs, uint64_t ino, uint64_t owner);
/* Does a live writable map session hold ino (its stores bypass the page cache)? */
bool fs_dax_mapped(struct fs *fs, uint64_t ino);

#endif
