/*
 * pool: the libpmemobj pool that holds all pmfuse metadata, and the
 * validators the daemon, mkfs and fsck share.  Everything persistent is
 * addressed by pool offset; pool_ptr() turns one into a pointer and the
 * *_ok() checks say whether an offset may be dereferenced at all.
 */
#ifndef PMFUSE_POOL_H
#define PMFUSE_POOL_H

#include "pmfuse/format.h"

#include <libpmemobj.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A piece of the data area in DRAM (pieces.c); its id is its index + 1. */
struct pool_piece {
	uint64_t obj;			/* pmemobj allocation (0: a permanent run's) */
	_Atomic uint64_t off, len;	/* data, whole blocks; len 0 while not live */
	int64_t slot;			/* in the piece table; -1: a permanent run */
	bool live;
};

/* Pieces a pool can have (each is 4 MiB or more; growth asks for much more). */
#define POOL_MAX_PIECES 65536u

struct pool {
	PMEMobjpool *pop;
	char *base;
	uint64_t size;
	struct pmfuse_super *sb;
	struct pmfuse_itable *itable;
	/*
	 * The data area (pieces.c).  A piece is 4 MiB or more, so a 2 MiB group
	 * holds parts of at most two: gstart[g] names the piece that holds the
	 * group's first block, gnext[g] one that starts inside it (0: none).
	 * Validators read them and piece[] without a lock; piece[] never moves
	 * (allocated whole).  They change only by pool_piece_add() and
	 * pool_piece_remove(), which their caller serializes (the allocator's
	 * lock).
	 */
	struct pmfuse_pieces *ptab;	/* NULL: format 1, not yet upgraded */
	_Atomic uint32_t *gstart, *gnext;
	uint64_t ngroups;
	struct pool_piece *piece;	/* POOL_MAX_PIECES entries */
	uint32_t npiece;		/* entries ever used */
	/* bytes of metadata objects (headers included): statfs's estimate */
	_Atomic int64_t meta_bytes;
};

struct pool_format_opts {
	uint64_t size;			/* 0: keep the file's size */
	const char *label;
	uint8_t uuid[16];
	uint64_t bytes_per_inode;	/* 0: default */
	uint32_t root_uid, root_gid;
	bool sparse;			/* tests: skip fallocate at create */
};

struct pool_plan {
	uint64_t region_size;
	uint64_t meta_reserve;		/* heap data growth leaves to metadata */
	uint64_t max_inodes;
	uint64_t first_run;		/* bytes asked for permanent run 0 */
	uint64_t capacity_blocks;	/* what statfs reports as f_blocks */
};

#define POOL_WHY 512

/* Size of a region file or devdax device; -errno on failure. */
int64_t pool_region_size(const char *path, char *why, size_t whylen);

/*
 * Sizes of format 2 for a region of size bytes: the heap bytes data growth
 * leaves to metadata; the blocks statfs reports (what mkfs -n prints); the
 * size of a data piece the daemon adds (and of run 0).
 */
uint64_t pool_meta_reserve(uint64_t size);
/* The most inodes a region of size bytes may have (one per 256 bytes): the default. */
uint64_t pool_inode_ceiling(uint64_t size);
uint64_t pool_capacity_blocks(uint64_t size, uint64_t max_inodes);
uint64_t pool_piece_default(uint64_t size);

/* What a region of this size would get; -EINVAL (why set) if too small. */
int pool_plan(uint64_t size, uint64_t bytes_per_inode, struct pool_plan *plan,
	      char *why, size_t whylen);

/* Format a region (the file must exist with its final size). */
int pool_format(const char *path, const struct pool_format_opts *o,
		char *why, size_t whylen);

/*
 * Open and validate a region.  Returns 0, or -errno with a sentence in why:
 * -EAGAIN: in use by another process; -EINVAL: not a pmfuse region or
 * damaged; -EPROTONOSUPPORT: unknown format version.
 */
int pool_open(struct pool *p, const char *path, char *why, size_t whylen);
/*
 * For fsck, after pool_open() refused: open a pool whose pmemobj header is
 * sound and whose superblock carries the pmfuse magic, but whose geometry
 * or inode table may be damaged (p->itable is not set).  0 or -errno.
 */
int pool_open_damaged(struct pool *p, const char *path, char *why, size_t whylen);
void pool_close(struct pool *p);
/*
 * For a program that opens one pool in its life (the daemon and fsck
 * call it), before it does: libpmemobj's DRAM for the pool comes from
 * one arena populated at once, not page fault by page fault (pool.c).
 */
void pool_use_open_arena(void);

/*
 * umount returns once the kernel has detached the mount, while the daemon
 * may still be writing back and closing the pool -- holding the region's
 * lock (libpmemobj's flock) a moment longer.  Called when the region was
 * found locked: if the holder is a pmfuse daemon whose mount is gone,
 * wait for it to let go (saying so once on stderr), up to
 * POOL_CLOSE_WAIT_MS.  True if the lock is free now; false at once if the
 * region is mounted or held by anything else (fsck, mkfs, pmfusectl), or
 * after the wait.
 */
#define POOL_CLOSE_WAIT_MS 30000
bool pool_wait_closing(const char *path);

/*
 * Format 3: does sb->ichunk_hwm sit just past the inode table's last chunk?
 * True for older formats.
 */
bool pool_ichunk_hwm_ok(const struct pool *p);

/*
 * The inode table, reached only through these: chunks it can hold, the
 * pool offset of chunk c (0: none; c below pool_ichunks()), and, inside a
 * transaction, setting chunk c (its entry snapshotted).
 */
static inline uint64_t pool_ichunks(const struct pool *p)
{
	return p->itable->nchunks;
}

/* a format 5 leaf: 0 if absent (or out of range: damage fsck reports) */
static inline const struct pmfuse_ileaf *pool_ileaf(const struct pool *p, uint64_t c);

static inline uint64_t pool_ichunk(const struct pool *p, uint64_t c)
{
	if (p->sb->geo.version < 5)
		return p->itable->chunk[c];
	const struct pmfuse_ileaf *l = pool_ileaf(p, c);
	return l ? l->chunk[c % PMFUSE_ILEAF_CHUNKS] : 0;
}

void pool_ichunk_set_tx(struct pool *p, uint64_t c, uint64_t off);	/* 0: frees an empty leaf */
/*
 * In a transaction, format 5: chunk c's entry in the leaf of table top,
 * the leaf made if it is absent (its top entry snapshotted first if snap:
 * not for a table made in this transaction).
 */
uint64_t *pool_ileaf_slot_tx(struct pool *p, struct pmfuse_itable *top, uint64_t c, bool snap);

/*
 * Walking chunk numbers: true if c starts a leaf that does not exist
 * (format 5), so none of its PMFUSE_ILEAF_CHUNKS chunks does.
 */
static inline bool pool_ileaf_absent(const struct pool *p, uint64_t c)
{
	return p->sb->geo.version >= 5 && c % PMFUSE_ILEAF_CHUNKS == 0 && !pool_ileaf(p, c);
}

/* One past the last chunk of the table's first n (at least 1). */
uint64_t pool_ichunk_end(const struct pool *p, uint64_t n);

/* Is this a pmemobj pool signature at the start of the region? */
bool pool_has_pmemobj_signature(const void *first_page);
/* And is the pool (POOL_HEADER_SIZE bytes of its header) of pmfuse's layout? */
bool pool_has_pmfuse_layout(const void *header);

/*
 * Judge a region of size bytes by its first POOL_HEADER_SIZE bytes (the
 * pmemobj pool header and descriptor) without opening the pool: the
 * signature, the pool format, the pmfuse layout, a root object of the
 * superblock's size inside the region, aligned, and lanes and heap where
 * pmemobj_create() puts them (libpmemobj trusts those and can crash on
 * damage).  0 with the superblock's pool offset in *root_off, or -EINVAL /
 * -EPROTONOSUPPORT with a reason in why (path only names the region in
 * it).  pool_open() runs it first, fsck before it opens a pool pool_open()
 * refused; pmfusectl reads a superblock with it while the region is mounted.
 */
#define POOL_HEADER_SIZE 8192
int pool_check_header(const void *head, uint64_t size, const char *path,
		      uint64_t *root_off, char *why, size_t whylen);

uint64_t pool_geometry_checksum(const struct pmfuse_geometry *g);
int pool_check_geometry(const struct pmfuse_geometry *g, uint64_t pool_size,
			char *why, size_t whylen);

static inline void *pool_ptr(const struct pool *p, uint64_t off)
{
	return p->base + off;
}

static inline uint64_t pool_off(const struct pool *p, const void *ptr)
{
	return (uint64_t)((const char *)ptr - p->base);
}

/* May [off, off+len) be read as metadata (inside the pool, outside data)? */
bool pool_meta_range_ok(const struct pool *p, uint64_t off, uint64_t len);

/*
 * As pool_meta_range_ok(), for a persistent struct: its offset must also be
 * aligned for its u64 fields (every pmemobj object is), or reading it is
 * undefined behaviour.
 */
static inline bool pool_struct_ok(const struct pool *p, uint64_t off, uint64_t len)
{
	return off % sizeof(uint64_t) == 0 && pool_meta_range_ok(p, off, len);
}

static inline const struct pmfuse_ileaf *pool_ileaf(const struct pool *p, uint64_t c)
{
	uint64_t off = p->itable->chunk[c / PMFUSE_ILEAF_CHUNKS];

	return off && pool_struct_ok(p, off, sizeof(struct pmfuse_ileaf)) ? pool_ptr(p, off) : NULL;
}

/* Are blocks [phys, phys+n) all inside one data piece (and not the backup)? */
bool pool_block_range_ok(const struct pool *p, uint64_t phys, uint64_t n);

/* Total data blocks in all pieces. */
uint64_t pool_data_blocks(const struct pool *p);

static inline bool pool_piece_has(const struct pool *p, uint32_t id, uint64_t phys)
{
	const struct pool_piece *pc = &p->piece[id - 1];
	uint64_t off = atomic_load_explicit(&pc->off, memory_order_acquire) >> PMFUSE_BLOCK_SHIFT;
	uint64_t len = atomic_load_explicit(&pc->len, memory_order_acquire) >> PMFUSE_BLOCK_SHIFT;

	return phys >= off && phys - off < len;
}

/* Id of the piece holding block phys, 0 if it is not a data block. */
static inline uint32_t pool_piece_of(const struct pool *p, uint64_t phys)
{
	uint64_t g = phys / PMFUSE_HUGE_2M_BLOCKS;
	uint32_t id;

	if (g >= p->ngroups)
		return 0;
	id = atomic_load_explicit(&p->gstart[g], memory_order_acquire);
	if (id && pool_piece_has(p, id, phys))
		return id;
	id = atomic_load_explicit(&p->gnext[g], memory_order_acquire);
	return id && pool_piece_has(p, id, phys) ? id : 0;
}

/*
 * Pieces (pieces.c).  pool_pieces_load() builds the DRAM view from the
 * geometry's runs and the piece table, validating both (pool_open() calls
 * it).  pool_piece_add() reserves a piece of at most want bytes (at least
 * min), leaving keep bytes of heap free (geo.meta_reserve at least: what
 * metadata will need beside it), and commits it to the table
 * in one transaction: 0 with its id, or -ENOSPC.  pool_piece_remove() gives
 * an empty, non-permanent piece back to the heap in one transaction.
 * Neither may run inside a transaction.  pool_upgrade() turns a format 1
 * region into format 2 (an empty piece table, version 2).
 */
int pool_pieces_load(struct pool *p, char *why, size_t whylen);
/* Does [off, off + len) (bytes) meet a piece's data? */
bool pool_pieces_overlap(const struct pool *p, uint64_t off, uint64_t len);
/* fsck, when the table is damaged: the geometry's runs alone. */
void pool_pieces_load_runs(struct pool *p);
void pool_pieces_free(struct pool *p);
int pool_piece_add(struct pool *p, uint64_t want, uint64_t min, uint64_t keep, uint32_t *id);
int pool_piece_remove(struct pool *p, uint32_t id);
int pool_upgrade(struct pool *p, char *why, size_t whylen);
static inline const struct pool_piece *pool_piece(const struct pool *p, uint32_t id)
{
	return &p->piece[id - 1];
}

/*
 * The allocated pmemobj objects, sorted by offset, for the mount to check
 * metadata offsets against.  libpmemobj trusts the offsets it is asked to
 * free: freeing one that is not the start of an object it allocated (or
 * freeing one object twice) corrupts its heap or crashes it.  The range
 * checks above cannot tell; the heap can.  Built at mount, dropped after.
 */
struct pool_obj {
	uint64_t off, size;
	bool claimed;
};

struct pool_objects {
	struct pool_obj *o;
	size_t n;
};

int pool_objects_load(const struct pool *p, struct pool_objects *po);
/* Is off the start of an object of at least len bytes that nothing claimed yet?  Claims it. */
bool pool_objects_claim(struct pool_objects *po, uint64_t off, uint64_t len);
/*
 * The check a metadata offset of an inode gets: claimed from po, or, with
 * po NULL, only in range.
 */
bool pool_object_ok(const struct pool *p, struct pool_objects *po, uint64_t off, uint64_t len);
void pool_objects_free(struct pool_objects *po);

/*
 * Zeroed memory for arrays indexed by inode number or block, sized by the
 * region's maxima but touched only as far as they are used: mapped
 * MAP_NORESERVE, so a 16 TiB region's (tens of GiB, untouched) do not hit
 * the overcommit limit.  NULL without memory.
 */
void *pool_sparse_zalloc(size_t bytes);
void pool_sparse_free(void *p, size_t bytes);
/*
 * Mount: claim the objects of the table's pieces (-EUCLEAN if one is not an
 * allocation that holds its piece) and (count_meta) set meta_bytes from
 * the rest.
 */
int pool_pieces_claim(struct pool *p, struct pool_objects *objs, bool count_meta);

/*
 * The backup superblock, the one rule mkfs, fsck, pmfusectl and the daemon
 * share: a copy of the geometry with magic PMFUSE_BACKUP_MAGIC and its own
 * checksum, in the first block of data run 0 -- on a 2 MiB boundary, where
 * fsck finds it without the root pointer -- and never given to a file.
 */
static inline uint64_t pool_backup_off(const struct pmfuse_geometry *g)
{
	return g->runs[0].off;
}

static inline uint64_t pool_backup_block(const struct pool *p)
{
	return pool_backup_off(&p->sb->geo) >> PMFUSE_BLOCK_SHIFT;
}

/* The backup image of geometry g. */
void pool_backup_make(const struct pmfuse_geometry *g, struct pmfuse_geometry *b);

enum pool_backup { POOL_BACKUP_OK, POOL_BACKUP_DIFFERS, POOL_BACKUP_DAMAGED };
/* Does b, read from pool_backup_off(g), back up g? */
enum pool_backup pool_backup_check(const struct pmfuse_geometry *g,
				   const struct pmfuse_geometry *b);

/*
 * With the primary superblock damaged: search the region mapped at base
 * for an intact backup that lies where the geometry it holds says; its
 * offset (*g: that geometry, as a primary), or -1.
 */
int64_t pool_backup_find(const char *base, uint64_t size, struct pmfuse_geometry *g);

/*
 * Run fn(arg) as one transaction.  fn returns 0 to commit or -errno to
 * abort; pmemobj failures inside abort too and come back as -ENOSPC (the
 * metadata heap is full).  Returns 0 or -errno.  Keeping the setjmp of TX_BEGIN here means no caller's locals
 * live across a longjmp.
 */
typedef int (*pool_tx_fn)(void *arg);
int pool_tx(const struct pool *p, pool_tx_fn fn, void *arg);

/*
 * Inside a transaction: lock m until the thread's outermost pool_tx() has
 * committed or aborted (what pmemobj_tx_lock() does for locks that live in
 * pmem).  Taken where the transaction first needs what m protects, so a
 * lock that serialises one shared structure is held for that part and the
 * commit, not for the whole transaction.  Taking m again is a no-op.
 * Snapshot what m protects only once it is held: an abort writes snapshots
 * back, and one taken before would undo other transactions' changes.
 */
void pool_tx_lock(pthread_mutex_t *m);

/*
 * Allocation and freeing of metadata inside a transaction (an allocation
 * failure aborts it).  They count p->meta_bytes, applied when the
 * transaction commits.
 */
PMEMoid pool_tx_alloc(size_t size);
PMEMoid pool_tx_zalloc(size_t size);
void pool_tx_free(PMEMoid oid);

#endif
