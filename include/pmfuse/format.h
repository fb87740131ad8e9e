/*
 * pmfuse on-media format: the contract between mkfs.pmfuse, the pmfuse
 * daemon and fsck.pmfuse.  Nothing but fixed-width little-endian structs,
 * their constants, and the encoding of the persistent file map lives here.
 *
 * A region is one libpmemobj pool (layout PMFUSE_LAYOUT).  Its root object is
 * the superblock.  Every persistent object is addressed by its pool offset
 * (a u64; 0 means "none"), never by PMEMoid, because the pool is the only
 * pool: offsets stay valid and are trivially range-checked by validators.
 *
 * Data blocks are 4 KiB.  A block's number is its pool offset / 4096, so a
 * 2 MiB-aligned block number is a 2 MiB-aligned region offset (what a devdax
 * huge page needs).  Block 0 holds the pool header: 0 never names data.
 *
 * Data and metadata share the heap (format 2).  Data lives in "pieces":
 * huge pmemobj allocations trimmed to 2 MiB boundaries.  The runs of the
 * geometry are permanent pieces (mkfs makes one; format 1 had up to 32 and a
 * fixed metadata reserve).  The daemon adds pieces to the piece table when
 * data needs room, always leaving geo.meta_reserve bytes of heap to
 * metadata, and gives a piece back to the heap as soon as it holds no data,
 * so metadata can grow into what data no longer uses.  Adding or removing
 * a piece is one transaction with its table entry.  The first block of run
 * 0 holds a backup of the superblock's immutable part (fsck finds it
 * without the root pointer).
 *
 * Which data blocks are in use is not stored: it is exactly the set of blocks
 * reachable from the file maps of live inodes.  The daemon rebuilds its
 * free-space map at mount, so a crash can never leak or double-allocate a
 * block, and no transaction ever contends on a shared free-space word.
 */
#ifndef PMFUSE_FORMAT_H
#define PMFUSE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define PMFUSE_LAYOUT		"pmfuse"
#define PMFUSE_MAGIC		0x3145535546504d50ULL	/* "PMFUSE1" LE */
#define PMFUSE_BACKUP_MAGIC	0x4b43425355464d50ULL	/* "PMFUSBCK" LE */
#define PMFUSE_VERSION		6
/*
 * format 1 (fixed data runs, no piece table), format 2 (no unwritten
 * extents), format 3 (no inode attribute flags), format 4 (a flat inode
 * table) and format 5 (inode chunks never freed) mount, and are upgraded to
 * 6 in place
 */
#define PMFUSE_VERSION_MIN	1

#define PMFUSE_BLOCK_SHIFT	12
#define PMFUSE_BLOCK_SIZE	(1u << PMFUSE_BLOCK_SHIFT)
#define PMFUSE_HUGE_2M_BLOCKS	512u
#define PMFUSE_MAX_RUNS		32
#define PMFUSE_LABEL_MAX	64
#define PMFUSE_NAME_MAX		255
#define PMFUSE_SYMLINK_MAX	4095
#define PMFUSE_MIN_REGION	(32ull << 20)

/* superblock.state */
#define PMFUSE_STATE_CLEAN	1u	/* cleanly unmounted */
#define PMFUSE_STATE_MOUNTED	2u	/* a daemon has it (or crashed with it) */

struct pmfuse_run {
	uint64_t off;		/* pool offset, 2 MiB aligned */
	uint64_t len;		/* bytes, multiple of 2 MiB */
};

/*
 * Immutable geometry: written by mkfs (and by a label change), covered by
 * the checksum, copied verbatim into the backup block.
 */
struct pmfuse_geometry {
	uint64_t magic;
	uint32_t version;
	uint32_t block_size;
	uint8_t uuid[16];
	char label[PMFUSE_LABEL_MAX];	/* NUL-terminated */
	uint64_t region_size;		/* pool size in bytes */
	uint64_t created;		/* seconds since the epoch */
	uint64_t itable_off;		/* struct pmfuse_itable */
	uint64_t max_inodes;		/* itable capacity, inode 0 unused */
	uint64_t meta_reserve;		/* v1: bytes left to pmemobj for metadata;
					 * v2: heap bytes data growth always leaves free */
	uint32_t nruns;			/* permanent data runs */
	uint32_t pad;
	struct pmfuse_run runs[PMFUSE_MAX_RUNS];
	uint64_t checksum;		/* FNV-1a 64 of everything above */
};

/* Root object.  Size 2^n - 16 (pmemobj header). */
struct pmfuse_super {
	struct pmfuse_geometry geo;
	/* mutable part, changed only in transactions */
	uint32_t state;
	uint32_t pad;
	uint64_t last_mount;		/* seconds */
	uint64_t mount_count;
	uint64_t orphan_head;		/* ino of first orphan, 0 = none */
	uint64_t pieces_off;		/* v2: struct pmfuse_pieces (never 0) */
	/*
	 * v3: inode table chunks [0, ichunk_hwm) may be allocated, those past
	 * it are not, and chunk ichunk_hwm - 1 is: a mount reads only what is
	 * used.  (Formats 3-5 never freed a chunk; format 6 frees one whose
	 * inodes are all free, and lowers the mark when it was the last.)
	 */
	uint64_t ichunk_hwm;
	/*
	 * v3: the clean-unmount record (struct pmfuse_record), 0 = none.  Set
	 * only in the transaction that marks the region clean, dropped by a
	 * mount before it changes anything: a record that exists is never
	 * older than the state it describes.
	 */
	uint64_t record_off;
	/*
	 * v6: the generation a new inode chunk's slots start from.  A chunk
	 * freed raises it to the highest generation its slots had, so the
	 * number of a file deleted with it, once a chunk is made there again,
	 * comes back with a higher generation: an old file handle is stale.
	 */
	uint64_t igen_floor;
	uint8_t reserved[4080 - sizeof(struct pmfuse_geometry) - 64];
};

/*
 * The clean-unmount record: what a mount would otherwise rebuild by reading
 * every inode and file map (as NOVA saves its allocator at unmount).  It is
 * trusted only when the superblock says clean, its stamp equals
 * sb->mount_count, and its checksum holds; otherwise the mount rebuilds.
 * data[] holds, in order:
 *   ichunks words: per inode chunk, bit i set = inode chunk*64+i in use;
 *   per live data piece (any order): its off and len (bytes); then, for
 *   its blocks in segments of 512 from its first (a piece need not start
 *   on a 2 MiB boundary), each segment's free-block count, four u16 to a
 *   word; then the 8 bitmap words (bit set = free) of each segment that is
 *   neither wholly free nor wholly used, in order.
 */
#define PMFUSE_RECORD_MAGIC	0x44524f4345524d50ULL	/* "PMRECORD" LE */

struct pmfuse_record {
	uint64_t magic;
	uint64_t words;			/* of data[] */
	uint64_t mount_count;		/* sb->mount_count when written */
	uint64_t ichunks;		/* inode chunk masks: sb->ichunk_hwm */
	uint64_t used_inodes;
	int64_t huge_2m, huge_1g;	/* huge extents in all files */
	int64_t meta_bytes;		/* metadata objects, this record excluded */
	uint64_t npieces;		/* live data pieces described */
	uint64_t checksum;		/* pmfuse_record_sum() */
	uint64_t data[];
};

/*
 * The pieces the daemon added to the data area (format 2).  Live entries
 * are [0, count); removing one moves the last into its place.  The table
 * is replaced by a bigger copy when full.  obj is the pmemobj allocation
 * (what is freed); [off, off + len) the 2 MiB-aligned data inside it.
 */
struct pmfuse_piece {
	uint64_t obj;
	uint64_t off;
	uint64_t len;
	uint64_t pad;
};

struct pmfuse_pieces {
	uint64_t count;
	uint64_t cap;
	struct pmfuse_piece p[];
};
#define PMFUSE_PIECE_TYPE	0x50494543u	/* pmemobj type number of a piece */

/*
 * Inode table: chunks of PMFUSE_INODES_PER_CHUNK inode records, allocated
 * on demand.  Inode number = chunk * PMFUSE_INODES_PER_CHUNK + slot; inode
 * 0 is never used, inode 1 is the root directory.  A record with mode == 0
 * is free.  Formats 1-4: chunk[] holds the chunks' offsets, all nchunks of
 * them written at mkfs.  Format 5: chunk[] holds the offsets of leaves
 * (struct pmfuse_ileaf), each of PMFUSE_ILEAF_CHUNKS chunk offsets,
 * allocated as chunks are: only the top (8 bytes per 32768 inodes) is
 * written at mkfs, so the count's ceiling costs nothing until used.
 */
#define PMFUSE_INODES_PER_CHUNK	64u
#define PMFUSE_ICHUNK_SIZE	(PMFUSE_INODES_PER_CHUNK * sizeof(struct pmfuse_inode))
#define PMFUSE_ROOT_INO		1u
#define PMFUSE_ILEAF_CHUNKS	512u

struct pmfuse_itable {
	uint64_t nchunks;		/* chunks the table can hold */
	uint64_t chunk[];		/* pool offsets, 0 = not allocated; format 5: of leaves */
};

struct pmfuse_ileaf {
	uint64_t chunk[PMFUSE_ILEAF_CHUNKS];	/* pool offsets, 0 = not allocated */
};

/* Entries of chunk[]: one per chunk, or (format 5) one per leaf. */
static inline uint64_t pmfuse_itable_entries(uint32_t version, uint64_t nchunks)
{
	return version >= 5 ? (nchunks + PMFUSE_ILEAF_CHUNKS - 1) / PMFUSE_ILEAF_CHUNKS : nchunks;
}

#define PMFUSE_INLINE_SYMLINK	80

struct pmfuse_time {
	int64_t sec;
	uint32_t nsec;
	uint32_t pad;
};

/* 256 bytes, lives in an inode chunk. */
struct pmfuse_inode {
	uint32_t mode;			/* 0 = free slot */
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint32_t generation;		/* bumped each time the slot is reused */
	uint32_t flags;			/* PMFUSE_IF_* */
	uint64_t size;
	uint64_t blocks;		/* data blocks (4 KiB) referenced by map */
	uint64_t rdev;
	struct pmfuse_time atime, mtime, ctime, btime;
	uint64_t map_root;		/* file map root entry (see below) */
	uint32_t map_height;		/* root entry covers 64^height blocks */
	uint32_t pad0;
	uint64_t xattr_off;		/* struct pmfuse_xattrs, 0 = none */
	uint64_t dir_off;		/* dir: struct pmfuse_dirtab; symlink: target if long */
	uint64_t parent;		/* dir: parent ino */
	uint64_t nentries;		/* dir: live entries (not . and ..) */
	uint64_t orphan_next;		/* orphan list (nlink 0, still open) */
	uint64_t orphan_prev;
	char symlink[PMFUSE_INLINE_SYMLINK];	/* short symlink target */
};

#define PMFUSE_IF_ORPHAN	1u
/* format 4: attributes set by chattr(1) (FS_IOC_SETFLAGS) */
#define PMFUSE_IF_IMMUTABLE	2u	/* no change of data, attributes or names */
#define PMFUSE_IF_APPEND	4u	/* opened for writing only to append; no removal */
#define PMFUSE_IF_NODUMP	8u	/* for dump(8); kept, not acted on */
#define PMFUSE_IF_NOATIME	16u	/* reads leave the atime alone */
#define PMFUSE_IF_ATTRS		(PMFUSE_IF_IMMUTABLE | PMFUSE_IF_APPEND | PMFUSE_IF_NODUMP | \
				 PMFUSE_IF_NOATIME)

/*
 * File map: a radix tree of 64-slot nodes indexed by file block number.
 * An entry at level L covers 64^L consecutive file blocks and is one of
 *   0                      a hole;
 *   (phys << 1) | 1        a leaf: the 64^L blocks map to the contiguous
 *                          physical blocks phys .. phys + 64^L - 1;
 *   UNWRITTEN | (phys << 1) | 1
 *                          (format 3) an unwritten leaf: the blocks are
 *                          allocated (fallocate) but read as zeros and were
 *                          never written; the first write to a block stores
 *                          its data, zeros the rest of it, persists, and
 *                          only then clears the bit in a transaction;
 *   node offset (even)     (L >= 1 only) a struct pmfuse_mapnode whose 64
 *                          entries are at level L - 1.
 * The root entry (level map_height) lives in the inode.  Nodes are 512 bytes
 * (a pmemobj object).  A 2 MiB extent is 8 level-1
 * leaves; a 1 GiB extent aligned in the file is one level-3 leaf.
 */
#define PMFUSE_MAP_SHIFT	6
#define PMFUSE_MAP_SLOTS	(1u << PMFUSE_MAP_SHIFT)
#define PMFUSE_MAP_MAX_HEIGHT	7	/* 64^7 blocks = 2^54 bytes */
#define PMFUSE_MAX_FILE_SIZE	(1ull << 50)

struct pmfuse_mapnode {
	uint64_t slot[PMFUSE_MAP_SLOTS];
};

#define PMFUSE_MAP_UNWRITTEN	(1ull << 63)

static inline int pmfuse_map_is_leaf(uint64_t e) { return (e & 1) != 0; }
static inline uint64_t pmfuse_map_leaf(uint64_t phys) { return (phys << 1) | 1; }
static inline uint64_t pmfuse_map_phys(uint64_t e) { return (e & ~PMFUSE_MAP_UNWRITTEN) >> 1; }
static inline int pmfuse_map_is_unwritten(uint64_t e)
{
	return pmfuse_map_is_leaf(e) && (e & PMFUSE_MAP_UNWRITTEN) != 0;
}

/*
 * Directory: a table of chunk offsets (grown by reallocation) and chunks
 * of 64 fixed dirent slots.  A slot's index never changes while its entry
 * lives, so readdir offsets (slot + 3; 1 and 2 are "." and "..") stay valid
 * while the directory changes.  ino == 0 marks a free slot.
 */
#define PMFUSE_DIRENTS_PER_CHUNK 64u
#define PMFUSE_INLINE_NAME	32

struct pmfuse_dirent {
	uint64_t ino;
	uint64_t hash;			/* of the name, for the DRAM index */
	uint16_t name_len;
	uint8_t type;			/* DT_* */
	uint8_t pad[5];
	uint64_t name_off;		/* name_len > PMFUSE_INLINE_NAME */
	char name[PMFUSE_INLINE_NAME];	/* otherwise here, not terminated */
};

struct pmfuse_dirchunk {
	struct pmfuse_dirent ent[PMFUSE_DIRENTS_PER_CHUNK];
};

struct pmfuse_dirtab {
	uint64_t nchunks;		/* used entries of chunk[] */
	uint64_t cap;			/* capacity of chunk[] */
	uint64_t chunk[];
};

/*
 * Extended attributes of one inode: one object, replaced whole on change.
 * Records follow the header back to back, each 8-byte aligned:
 * struct pmfuse_xattr_rec, name (not terminated), value.
 */
#define PMFUSE_XATTR_MAX_TOTAL	(128u << 10)

struct pmfuse_xattrs {
	uint32_t count;
	uint32_t used;			/* bytes of records after the header */
};

struct pmfuse_xattr_rec {
	uint16_t name_len;
	uint16_t pad;
	uint32_t value_len;
};

/*
 * Map nodes, dirent chunks and inode chunks are ordinary pmemobj objects
 * (16-byte header).  Header-less custom allocation classes were tried and
 * dropped: libpmemobj 1.12 does not recycle their partly used runs after an
 * unclean shutdown, so every crash leaked a heap chunk of metadata space.
 */

static inline uint64_t pmfuse_fnv1a(const void *p, uint64_t n, uint64_t h)
{
	const unsigned char *c = p;
	while (n--)
		h = (h ^ *c++) * 0x100000001b3ULL;
	return h;
}
#define PMFUSE_FNV_INIT 0xcbf29ce484222325ULL

/* FNV-1a over 64-bit words: the record's checksum (megabytes at each mount) */
static inline uint64_t pmfuse_fnv1a_words(const uint64_t *w, uint64_t n, uint64_t h)
{
	while (n--)
		h = (h ^ *w++) * 0x100000001b3ULL;
	return h;
}

/* The record's header up to its checksum, then data[]. */
static inline uint64_t pmfuse_record_sum(const struct pmfuse_record *r)
{
	uint64_t h = pmfuse_fnv1a_words(&r->magic, offsetof(struct pmfuse_record, checksum) / 8,
					PMFUSE_FNV_INIT);

	return pmfuse_fnv1a_words(r->data, r->words, h);
}

/*
 * Snapshot ranges.  A transaction that changes several adjacent fields
 * snapshots them as one range (at page granularity each separate range is
 * an msync of the undo log).  Each range is named here, from its first
 * field to its last, and guarded: a reordered field fails the build instead
 * of silently leaving a change outside the snapshot -- a transaction that
 * is not atomic.  Use: pmemobj_tx_add_range_direct(&x->FIRST, NAME).
 */
#define PMFUSE_SPAN(type, first, last) \
	(offsetof(type, last) + sizeof(((type *)0)->last) - offsetof(type, first))

/* &sb->state: state, last_mount, mount_count (a mount or unmount) */
#define PMFUSE_SB_MOUNT_SPAN	PMFUSE_SPAN(struct pmfuse_super, state, mount_count)
/* pi (&pi->mode): every attribute a setattr may change, mode .. btime */
#define PMFUSE_INODE_ATTR_SPAN	PMFUSE_SPAN(struct pmfuse_inode, mode, btime)
/* &pi->atime: atime, mtime, ctime */
#define PMFUSE_INODE_TIMES_SPAN	PMFUSE_SPAN(struct pmfuse_inode, atime, ctime)
/* &pi->mtime: mtime, ctime (an overwrite's times, persisted in place) */
#define PMFUSE_INODE_MCTIME_SPAN PMFUSE_SPAN(struct pmfuse_inode, mtime, ctime)
/* &pi->map_root: map_root, map_height (and pad0) */
#define PMFUSE_INODE_MAP_SPAN	PMFUSE_SPAN(struct pmfuse_inode, map_root, pad0)
/* &pi->orphan_next: orphan_next, orphan_prev */
#define PMFUSE_INODE_ORPHAN_SPAN PMFUSE_SPAN(struct pmfuse_inode, orphan_next, orphan_prev)
/* de (&de->ino): what a rename retargets, ino .. type */
#define PMFUSE_DIRENT_TARGET_SPAN PMFUSE_SPAN(struct pmfuse_dirent, ino, type)

_Static_assert(offsetof(struct pmfuse_super, state) < offsetof(struct pmfuse_super, last_mount) &&
	       offsetof(struct pmfuse_super, last_mount) < offsetof(struct pmfuse_super, mount_count),
	       "PMFUSE_SB_MOUNT_SPAN: state, last_mount, mount_count in that order");
_Static_assert(offsetof(struct pmfuse_inode, mode) == 0 &&
	       offsetof(struct pmfuse_inode, btime) < offsetof(struct pmfuse_inode, map_root) &&
	       offsetof(struct pmfuse_inode, rdev) < offsetof(struct pmfuse_inode, atime) &&
	       offsetof(struct pmfuse_inode, size) < offsetof(struct pmfuse_inode, btime),
	       "PMFUSE_INODE_ATTR_SPAN: the record opens with its attributes, mode .. btime");
_Static_assert(offsetof(struct pmfuse_inode, atime) < offsetof(struct pmfuse_inode, mtime) &&
	       offsetof(struct pmfuse_inode, mtime) < offsetof(struct pmfuse_inode, ctime),
	       "PMFUSE_INODE_TIMES_SPAN: atime, mtime, ctime in that order");
_Static_assert(offsetof(struct pmfuse_inode, map_root) < offsetof(struct pmfuse_inode, map_height) &&
	       offsetof(struct pmfuse_inode, map_height) < offsetof(struct pmfuse_inode, pad0),
	       "PMFUSE_INODE_MAP_SPAN: map_root, map_height, pad0 in that order");
_Static_assert(offsetof(struct pmfuse_inode, orphan_next) < offsetof(struct pmfuse_inode, orphan_prev),
	       "PMFUSE_INODE_ORPHAN_SPAN: orphan_next, orphan_prev in that order");
_Static_assert(offsetof(struct pmfuse_dirent, ino) == 0 &&
	       offsetof(struct pmfuse_dirent, type) < offsetof(struct pmfuse_dirent, name_off),
	       "PMFUSE_DIRENT_TARGET_SPAN: a dirent opens with ino .. type");

_Static_assert(sizeof(struct pmfuse_inode) == 256, "inode is 256 bytes");
_Static_assert(sizeof(struct pmfuse_dirent) == 64, "dirent is 64 bytes");
_Static_assert(sizeof(struct pmfuse_dirchunk) == 4096, "dirchunk is 4 KiB");
_Static_assert(sizeof(struct pmfuse_mapnode) == 512, "mapnode is 512 bytes");
_Static_assert(sizeof(struct pmfuse_super) == 4080, "super is 2^12 - 16");

#endif
