/*
 * core.h: the inside of the pmfuse core (fs.h is its public interface).
 *
 * Modules, each its own files, lowest first:
 *   region     libpmem2: the mapping, store granularity, persistence, media errors
 *   pool       libpmemobj: superblock, validators, transactions (pool_tx)
 *   alloc      data blocks (DRAM only, rebuilt at mount) and huge-extent totals
 *   fmap       a file's persistent map, file block -> region block
 *   mapping    the DAX-style mapping index of an active file (DRAM)
 *   writeback  flushing a mapping's dirty ranges
 *   dir        directory tables (persistent) and their name hashes (DRAM)
 *   inode      the inode table, the inode cache and inode lifetime
 *   data       file contents: read, write, punch, fallocate, fsync
 *   dax        direct-access map sessions: faults, msync, blocks kept from
 *              reuse while mapped (inode_free drops what is left of them)
 *   xattr      extended attributes
 *   fs         mount, unmount and the namespace operations
 * A module calls only modules above it in this list.  fault (failure
 * injection) and log (messages) serve them all.
 *
 * Lock order (outer first; a thread holds locks only in this order):
 *   fs->rename_lock          serialises renames: the tree's shape is stable
 *   directory inode locks    ancestor before descendant; unrelated ones by ino
 *   other inode locks        by ino (lock_two() in fs.c)
 *   fs->orphan_lock          sb->orphan_head and every orphan_next/prev; taken
 *                            inside a transaction and held until it ends
 *                            (pool_tx_lock), never before one
 *   fs->itable_lock          free inode numbers, used_inodes
 *   icache stripe locks      fs->istripe[ino % 64]: icache slots, counts, state
 *   mapping->lock, entry locks   inside one file's mapping index (mapping.h)
 *   alloc->lock              innermost
 * An inode's lock (in->lock, a rwlock) protects its persistent record, its
 * file map, its mapping index and, for a directory, its entries and name
 * hash.  Hot paths (read, write, getattr, lookup) take only the locks of the
 * inodes they touch: there is no global lock on them.
 *
 * Transactions.  Every metadata change is one pmemobj transaction (pool_tx),
 * with what it changes snapshotted first (format.h names the multi-field
 * ranges); DRAM state (allocator, name hashes, free inode numbers, huge
 * totals) follows only once it has committed, or is rolled back.  One
 * exception: an overwrite inside a file stores mtime and ctime in place,
 * without a transaction (each an aligned 8-byte store: a crash leaves an
 * older time, never damage), persisted with the data by fsync.  Data before
 * metadata: new blocks are written and persisted before the transaction
 * that links them commits.
 *
 * Errors.  Inside the core -EUCLEAN means "damaged metadata" (a validator
 * refused what the media holds).  It never leaves the core: public
 * functions return -EIO in its place, as a filesystem does.
 *
 * Names.
 *   record        struct pmfuse_inode, the persistent inode (in->pi)
 *   inode         struct inode, its DRAM twin while anything refers to it
 *   file map      the persistent radix tree of a file's blocks (fmap)
 *   mapping       the DRAM mapping index of DAX-style entries (mapping.h)
 *   name hash     a directory's DRAM hash of names to slots (dir.h)
 *   block         4 KiB of the region, numbered by offset / 4 KiB
 *   huge extent   a 2 MiB / 1 GiB file window mapped to one aligned run
 *   orphan        an unlinked inode still referenced; reclaimed at last release
 */
#ifndef PMFUSE_CORE_H
#define PMFUSE_CORE_H

#include "fs.h"
#include "alloc.h"
#include "fmap.h"
#include "pool.h"
#include "region.h"

#include <pthread.h>
#include <stdatomic.h>

_Static_assert(FS_NAME_MAX == PMFUSE_NAME_MAX && FS_SYMLINK_MAX == PMFUSE_SYMLINK_MAX &&
	       FS_FORMAT_VERSION == PMFUSE_VERSION && FS_WHY_MAX >= POOL_WHY,
	       "fs.h states the format's limits");

struct mapping;
struct dir_hash;
struct dax_session;

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
 * checks, in its transaction, that the record is still an unlinked
 * orphan (nobody else can change an evicting inode's record).
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
	uint32_t refs;			/* transient core references */
	bool linkable;			/* under lock: an O_TMPFILE not yet linked */
	/* protected by lock */
	struct dir_hash *dhash;		/* lazily built, under lock (write) */
	struct mapping *mapping;	/* mapping index: built under lock (write),
					 * dropped (flushed first) on eviction and on
					 * punch/truncate; used under lock (any) */
	struct dax_inode *dax;		/* direct-access map sessions (dax.c), under
					 * lock (write); NULL when there are none */
	_Atomic bool times_unflushed;	/* mtime/ctime stored in place, not yet
					 * persisted (data.c touch_in_place) */
};

struct fs_stats {
	_Atomic uint64_t flush_bytes;
	_Atomic uint64_t flush_calls;
	_Atomic uint64_t drains;
	_Atomic int64_t dirty_pages;	/* pages marked DIRTY, all files */
	_Atomic uint64_t zero_bytes_served;
	_Atomic uint64_t splice_write_bytes;	/* written by fs_write_from() */
	/* direct access (dax.c) */
	_Atomic int64_t dax_maps;		/* live map sessions */
	_Atomic int64_t dax_mapped_bytes;	/* bytes those sessions map */
	_Atomic uint64_t dax_faults;		/* write faults served */
	_Atomic uint64_t dax_fault_allocs;	/* of which allocated a hole or unwritten page */
	_Atomic uint64_t dax_huge_maps;		/* 2 MiB-aligned extents handed to maps */
	_Atomic uint64_t dax_flush_bytes;	/* flushed by msync/munmap of maps */
	_Atomic uint64_t dax_deferred_blocks;	/* freed while mapped, not yet reusable */
};

struct fs {
	struct pool pool;
	struct region region;
	struct alloc alloc;
	struct fs_opts opts;
	enum fs_atime atime;		/* fs_set_atime(), before any request */
	bool nodiratime;
	struct fs_stats stats;
	/* more "name value" lines for the stats xattr, from the layer above */
	int (*stats_extra)(char *buf, size_t size);
	const void *zero;		/* read-only zero buffer */
	size_t zero_size;

	/* inode cache: ino -> struct inode * (see struct inode for the rules) */
	_Atomic(struct inode *) *icache;
	uint64_t max_inodes;
	uint64_t icap;			/* inode numbers the DRAM arrays cover */
	pthread_mutex_t istripe[64];
	pthread_cond_t istripe_wait[64];	/* an EVICTING inode left icache */
	struct inode *root;		/* the kernel's reference, mount to unmount */

	/*
	 * Free inode numbers, protected by itable_lock.  ifree: per chunk
	 * that exists, a mask of its free slots (bit i: inode c * 64 + i);
	 * ifree_any: a bit per chunk whose mask is not 0, none below
	 * ifree_lo.  A create takes the lowest free number, so inodes gather
	 * in low chunks and high ones empty out; a chunk whose inodes are all
	 * free is given back to the heap (format 6), but for one kept spare
	 * so that a create and an unlink at a chunk's edge do not make and
	 * free a chunk each time.
	 */
	pthread_mutex_t itable_lock;
	uint64_t *ifree;
	uint64_t *ifree_any;
	uint64_t ifree_lo;
	uint64_t next_chunk;		/* lowest chunk that does not exist */
	uint64_t spare_chunk;		/* empty, kept; UINT64_MAX: none */
	uint64_t ichunks_live;		/* chunks that exist */
	uint64_t ichunks_freed;		/* given back since the mount */
	/*
	 * Chunks [0, ichunk_limit) may hold inodes (sb->ichunk_hwm in format 3;
	 * the whole table before): a record past it does not exist, whatever
	 * the table says.  Grows under itable_lock; read without it.
	 */
	_Atomic uint64_t ichunk_limit;
	uint64_t used_inodes;
	/*
	 * A bit per inode number whose record is committed in use: set by the
	 * mount for the inodes it finds, by a create once its transaction has
	 * committed, cleared before the number goes back to the free list.
	 * inode_get() reads a record only with it set, so a lookup by number
	 * (a file handle naming a deleted file) never reads a slot that a
	 * create is writing.
	 */
	_Atomic uint64_t *icommitted;

	/*
	 * Mounted from the clean-unmount record (record.c): no inode was read
	 * at mount, so each is validated on its first inode_get() -- ivalid
	 * bit set once it passed, ibad once it failed (reported once).
	 */
	bool lazy;
	_Atomic uint64_t *ivalid, *ibad;
	/*
	 * What inodes validated so far claimed (fs_check_inode): their
	 * objects, lazy mode, and their data blocks (bit per region block), so
	 * two inodes sharing one are found when the second is first used.
	 */
	pthread_mutex_t claim_lock;
	struct pool_objects claimed_objs;
	uint64_t *claimed_blocks;	/* set once the heap is listed */
	pthread_t claims_thread;	/* lists it right after the mount */
	bool claims_started;
	const char *mount_state;	/* "record", "verified" or "rebuilt" */

	_Atomic uint64_t dax_next_session;
	char *region_path;		/* absolute, for direct access (fs_dax_info) */
	/* the quarantine watcher (dax.c) */
	pthread_t dax_watch;
	pthread_mutex_t dax_watch_lock;
	pthread_cond_t dax_watch_cond;
	bool dax_watch_inited, dax_watch_started, dax_watch_running, dax_watch_stop;
	pthread_mutex_t dax_lock;	/* dax_sessions: every live map session */
	struct dax_session *dax_sessions;

	pthread_mutex_t orphan_lock;	/* sb->orphan_head and orphan links */
	pthread_mutex_t rename_lock;
};

/*
 * For fsck's repairs: a struct fs over a pool fsck opened and checked, with
 * no region mapping and no mount scan -- fsck did its own: claim() marks
 * the blocks in use in the allocator, and free inode numbers come from the
 * inode chunks usable() accepts.  Only namespace operations and reclaim may
 * run on it.  fs_detach() frees it and leaves the pool open.
 */
int fs_attach(struct fs **out, const struct pool *pool, int (*claim)(void *ctx, struct alloc *a),
	      bool (*usable)(void *ctx, uint64_t chunk), void *ctx, char *why, size_t whylen);
void fs_detach(struct fs *fs);

/*
 * The clean-unmount record (record.c, format.h struct pmfuse_record).
 * record_write(): at unmount, with nothing cached, write the record and
 * mark the superblock clean in one transaction (-errno: nothing written).
 * record_load(): at mount, before anything else reads the table: 1 if the
 * record was sound and fs's inode numbers, allocator and counters came from
 * it; 0 if the mount must rebuild (why says why, "" when there was none).
 * record_check(): compare the record with fs's state as rebuilt from the
 * inodes and maps (counters too when counters): 0 agree, -EUCLEAN (why) it
 * is damaged or disagrees, -ENOENT there is none the mount would use (and
 * it is not damaged: the region's state makes the mount rebuild anyway).  record_drop(): free it, in its own transaction
 * (a mount's first change to the region); object says the offset is known
 * to be an allocated object.
 */
int record_write(struct fs *fs);
/* The inode numbers chunk c holds, as a mask (inode 0 is never used). */
static inline uint64_t inode_chunk_all(uint64_t c)
{
	return c ? UINT64_MAX : ~1ull;
}
/* Words of fs->ifree: one per chunk the table can hold. */
static inline size_t inode_chunk_words(const struct fs *fs)
{
	return fs->icap / PMFUSE_INODES_PER_CHUNK + 1;
}
/* Bytes of an ivalid/ibad bitmap: a bit per inode number. */
static inline size_t inode_bitmap_bytes(const struct fs *fs)
{
	return (fs->icap / 64 + 1) * sizeof(uint64_t);
}
/*
 * Mounted from the record: validate ino now unless it was (inode.c; once,
 * the outcome kept), 0 or -EUCLEAN (why).  inode_get() calls it.
 */
int inode_first_use(struct fs *fs, uint64_t ino, const struct pmfuse_inode *pi, char *why,
		    size_t whylen);
/* The checks a mount from the record defers to an inode's first use (fs.c). */
int fs_check_inode(struct fs *fs, uint64_t ino, const struct pmfuse_inode *pi, char *why,
		   size_t whylen);
int record_load(struct fs *fs, char *why, size_t whylen);
int record_check(struct fs *fs, bool counters, char *why, size_t whylen);
int record_drop(struct pool *p, bool object);

/* inode table, cache and lifetime (inode.c); see struct inode */
struct inode *inode_get(struct fs *fs, uint64_t ino);	/* +1 ref, NULL if free */
void inode_put(struct fs *fs, struct inode *in);	/* may evict: no locks held */
void inode_add_lookup(struct fs *fs, struct inode *in);
/*
 * Lock two inodes that are not directories of one another, in the one
 * order (by number); b may be NULL or a (locked once, exclusively if either
 * asks).  Shared or exclusive each.
 */
void inode_lock_two(struct inode *a, bool a_shared, struct inode *b, bool b_shared);
void inode_unlock_two(struct inode *a, struct inode *b);
struct pmfuse_inode *inode_record(struct fs *fs, uint64_t ino);
int inode_validate(const struct pool *p, uint64_t ino, const struct pmfuse_inode *pi,
		   char *why, size_t whylen);
void inode_to_attr(const struct inode *in, struct fs_attr *attr);
/*
 * List the free inode numbers (and count the used ones) of the table.  With
 * usable NULL every record is validated (a mount); otherwise chunks it
 * refuses are skipped and records are trusted (fsck checked them).  With
 * used (a clean-unmount record's masks, record.c) no record is read.
 */
int inode_load_table(struct fs *fs, bool (*usable)(void *ctx, uint64_t chunk), void *ctx,
		     const uint64_t *used, char *why, size_t whylen);
int inode_alloc_ino(struct fs *fs, uint64_t *ino);	/* before the tx */
void inode_release_ino(struct fs *fs, uint64_t ino);	/* after abort or free */
/*
 * Give back every inode chunk whose inodes are all free, but one (a mount:
 * what an unlink's last release did not, before a crash or in format 5).
 */
void inode_trim_chunks(struct fs *fs);
/* Each chunk's free mask (bit set: free), of the first nchunks. */
void inode_free_masks(struct fs *fs, uint64_t *masks, uint64_t nchunks);
/* Chunks that exist, and those given back since the mount. */
void inode_table_stats(struct fs *fs, uint64_t *live, uint64_t *freed);
/* A create's transaction committed: ino may be read by number (inode_get). */
void inode_committed(struct fs *fs, uint64_t ino);
/* In a transaction: */
void inode_tx_init(struct fs *fs, uint64_t ino, mode_t mode, uid_t uid, gid_t gid,
		   dev_t rdev);
/* what the record holds (blocks, xattrs, entries, a long link's target); then: */
int inode_tx_free_contents(struct fs *fs, struct inode *in, struct fmap_freed *freed);
void inode_tx_clear(struct pmfuse_inode *pi);	/* a free record, its generation kept */
void inode_tx_add(struct pmfuse_inode *pi);	/* snapshot the attributes */
void inode_tx_touch(struct pmfuse_inode *pi, bool atime, bool mtime, bool ctime);
void inode_tx_orphan_add(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi);
void inode_tx_orphan_remove(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi);
/* Free an unlinked orphan's record, blocks and number: 1, 0 if it is not one, -errno. */
int inode_reclaim(struct fs *fs, uint64_t ino, struct pmfuse_inode *pi);
/*
 * How an inode nobody refers to leaves DRAM, whether evicted or at unmount:
 * inode_retire() writes it back (unless unlinked: nobody can read it again)
 * and reclaims it if unlinked, with its lock held exclusively or nothing
 * else running; inode_free() frees its name hash and the struct.
 */
void inode_retire(struct fs *fs, struct inode *in);
void inode_free(struct inode *in);
/*
 * The set-id bits a change of a file's contents drops (write, truncate,
 * fallocate; the kernel's setattr_should_drop_suidgid()) and those a change
 * of owner drops (chown_common()), for caller cr (NULL: the filesystem
 * itself).  Setuid goes always; setgid with group execute, or when the
 * caller is outside the file's group -- without group execute setgid once
 * marked mandatory locking, which only a group member may keep.  A caller
 * with CAP_FSETID keeps both on a write; a chown drops setuid regardless.
 */
mode_t inode_setid_on_write(const struct pmfuse_inode *pi, const struct fs_cred *cr);
mode_t inode_setid_on_chown(const struct pmfuse_inode *pi, const struct fs_cred *cr);
/*
 * What a change of contents by cr drops besides: set-id bits (as above) and
 * security.capability, in one transaction if anything (inode lock held
 * exclusively).  1 if something was dropped, 0 if not, or -errno.
 */
int inode_kill_priv_locked(struct fs *fs, struct inode *in, const struct fs_cred *cr);

/*
 * Access times (inode.c): is pi's atime due for an update by the mount's
 * policy (lock held, shared will do)?  inode_touch_atime() then takes the
 * lock exclusively (the caller holds none, only a reference), checks again
 * and updates it in a transaction; a failure leaves the old atime.
 */
bool inode_atime_due(const struct fs *fs, const struct pmfuse_inode *pi);
void inode_touch_atime(struct fs *fs, struct inode *in);

/*
 * chattr attributes: an immutable inode takes no change of data, attributes
 * or names; an append-only one is written only by appending, and neither
 * loses a name.  -EPERM when pi forbids it.
 */
static inline int inode_immutable(const struct pmfuse_inode *pi)
{
	return (pi->flags & PMFUSE_IF_IMMUTABLE) ? -EPERM : 0;
}

static inline int inode_pinned(const struct pmfuse_inode *pi)
{
	return (pi->flags & (PMFUSE_IF_IMMUTABLE | PMFUSE_IF_APPEND)) ? -EPERM : 0;
}

/* attribute sets built in DRAM and installed in a transaction (xattr.c) */
struct xattr_new {
	char *recs;
	size_t used;
	uint32_t count;
};
/* pi's attributes with name replaced by value (NULL: removed). */
int xattr_new_from(struct fs *fs, const struct pmfuse_inode *pi, const char *name,
		   const void *value, size_t vlen, struct xattr_new *out);
int xattr_new_add(struct xattr_new *n, const char *name, const void *value, size_t vlen);
void xattr_new_free(struct xattr_new *n);
/* In a transaction: pi's attribute object becomes n's (none if empty). */
void xattr_tx_install(struct fs *fs, struct pmfuse_inode *pi, const struct xattr_new *n);
/* A malloc'd copy of pi's attribute name (NULL, 0 if it has none), or -errno. */
int xattr_copy(struct fs *fs, const struct pmfuse_inode *pi, const char *name, void **value,
	       size_t *len);

/* file contents (data.c) */
/* Text for the user.pmfuse.extents xattr of a regular file. */
int data_extents_text(struct fs *fs, uint64_t ino, char *buf, size_t size);
/* In a transaction, inode lock held exclusively: set the size, unmapping what goes. */
int data_tx_truncate(struct fs *fs, struct inode *in, uint64_t size, struct fmap_freed *freed);

/* the shared zero buffer (zero.c) */
int zero_init(struct fs *fs);
void zero_fini(struct fs *fs);

/*
 * data.c for dax.c, inode lock held exclusively: make [off, off + len) of
 * a hole or unwritten range written zeros (allocated, zeroed, persisted,
 * committed); mark pages [page, page + n) of existing blocks DIRTY.
 */
int data_zero_locked(struct fs *fs, struct inode *in, uint64_t off, uint64_t len);
/* A reference to the regular file ino: 0, -ENOENT, -EISDIR or -EINVAL. */
int data_get_file(struct fs *fs, uint64_t ino, struct inode **out);
int data_mark_dirty(struct fs *fs, struct inode *in, uint64_t page, uint64_t n);
/* mtime and ctime to now, in place (as an overwrite does; fsync persists them) */
void data_touch_locked(struct fs *fs, struct inode *in);
/* persist mtime/ctime if a write stored them in place without persisting */
void data_persist_times(struct fs *fs, struct inode *in);

/*
 * dax.c: after a transaction that unmapped blocks of in committed (inode
 * lock held exclusively): free them, or, while a direct map of the file
 * may still reach them, keep them until its last session ends.
 */
void dax_release_freed(struct fs *fs, struct inode *in, struct fmap_freed *freed);
void dax_inode_free(struct fs *fs, struct inode *in);
/*
 * Mount: keep the blocks other processes' maps of the region may reach
 * out of reuse (alloc_set_quarantine), then watch for them to go.
 */
int dax_quarantine_scan(struct fs *fs);
void dax_quarantine_report(struct fs *fs);
void dax_watch_start(struct fs *fs);
void dax_watch_kick(struct fs *fs);
void dax_watch_stop(struct fs *fs);
/* Faults and flushed bytes, the live sessions' own counts included. */
void dax_stats(struct fs *fs, uint64_t *faults, uint64_t *flush_bytes);

/*
 * Seeded bugs, for the crash explorer's own test (tests/crash, --seeded):
 * in the pmfuse-seeded test build (-DPMFUSE_SEEDED_BUGS) the environment
 * variable PMFUSE_SEEDED_BUG=NAME drops one flush the filesystem needs, so
 * that the explorer can show it catches the loss.  Every other build
 * compiles seeded_bug() to false.
 */
#ifdef PMFUSE_SEEDED_BUGS
bool seeded_bug(const char *name);
#else
#define seeded_bug(name) false
#endif

#endif
