/*
 * fsck.pmfuse: consistency check and repair of a pmfuse region.
 *
 *   fsck.pmfuse [-n | -p | -a | -y] [-f] [-v] REGION
 *
 * The check opens the region with pool_open() (which takes pmemobj's
 * exclusive lock, so a mounted region is refused) copy-on-write, and maps
 * it read-only: a bug in the check can crash fsck but never write the
 * image.  Each problem found is one line on stdout.
 *
 * Repair (-p/-a, -y, or answers on a terminal) happens only after that
 * check found something to do: the region is then opened for real, checked
 * again (read-only) and repaired in rounds -- each round checks, then applies
 * the repairs that check justifies, each repair one libpmemobj transaction
 * built from the core's own functions (inode_reclaim(), dir_tx_insert(),
 * dir_tx_remove(), fs_mknod()).  A crash during repair leaves a consistent
 * region that at worst needs another fsck.  Finally the region is reopened
 * copy-on-write and checked once more; that check decides the exit status,
 * a sum as in fsck(8): 0 clean, 1 errors corrected, 4 errors left
 * uncorrected, 8 operational error, 16 usage error, 32 cancelled.
 *
 * Check passes:
 *   1  superblock: backup geometry, state, inode table and data runs
 *   2  inode table: chunk offsets, inode_validate() on every used inode
 *   3  per inode: file maps (fmap_walk, block bitmap), symlinks, xattrs,
 *      directories (table, entries, names, types, parents, counts)
 *   4  orphan list; reachability from the root; link counts
 *   5  blocks claimed twice (named by owner), space accounting
 *   6  every metadata offset is an allocated pmemobj object, used once;
 *      allocated objects nobody references (leaks)
 *
 * Every persistent offset is checked with the core's validators before it
 * is dereferenced, and every loop is bounded by the image's geometry.
 */
#include "dir.h"
#include "fsck.h"
#include "xattr.h"
#include "fmap.h"
#include "core.h"
#include "pool.h"
#include "region.h"
#include "pmfuse/format.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FSCK_OK			0
#define FSCK_CORRECTED		1
#define FSCK_UNCORRECTED	4
#define FSCK_OPERATIONAL	8
#define FSCK_USAGE		16
#define FSCK_CANCELLED		32

/* per-inode state */
#define I_USED		0x01	/* mode != 0 */
#define I_BAD		0x02	/* failed validation: its structures are not read */
#define I_REACHED	0x04	/* reachable from the root */
#define I_ONLIST	0x08	/* on the orphan list */
#define I_MAPOK		0x10	/* file map walked cleanly */
#define I_SICK		0x20	/* some structure of it is damaged or shared: never freed */
#define I_LINKBAD	0x40	/* I_BAD only for its link count / orphan fields */
#define I_DIROK		0x80	/* directory read whole: its counts are known */

/* owners of metadata objects */
enum kind {
	K_SUPER = 1, K_ITABLE, K_ICHUNK, K_DIRTAB, K_DIRCHUNK, K_NAME, K_XATTR,
	K_SYMLINK, K_MAPNODE,
};

struct ref {
	uint64_t off;		/* 0 = empty slot */
	uint64_t len;
	uint64_t owner;		/* inode, or chunk index for K_ICHUNK */
	uint8_t kind;
};

struct name_ent {
	uint64_t hash;
	const struct pmfuse_dirent *de;
	uint64_t slot;
	uint32_t gen;
};

struct dup_ent {
	uint64_t block;		/* block + 1; 0 = empty */
	uint64_t ino;
};

struct obj {
	uint64_t off, size;
	uint8_t used;		/* 1 referenced, 2 holds a data run */
};

/* What the check learnt about one inode, for the repairs. */
struct aux {
	uint64_t live;		/* directory: entries read */
	uint64_t nsub;		/* directory: entries that are directories */
	uint64_t named_by;	/* a directory listing it (the last one seen) */
	uint64_t mapped;	/* regular file: blocks its map reaches */
};

/* A directory entry naming a free or unallocated inode. */
struct dangling {
	uint64_t dino, slot, ino;
};

/* -n, ask on a terminal, -p/-a, -y */
enum mode { M_CHECK, M_ASK, M_PREEN, M_YES };

enum fix { FX_ORPHANS = 1, FX_DANGLING, FX_RECLAIM, FX_REATTACH, FX_COUNTS, FX_LEAK, FX_STATE };

#define MAX_ROUNDS 12	/* each round: check, then repair what that check justifies */

struct fsck_repair {
	enum mode mode;
	bool force;
	bool all_yes;		/* "a" answered on the terminal */
	uint64_t fixed;		/* repairs committed */
	uint64_t *declined;	/* keys (fix << 56 | id) not to offer again; 0 = empty */
	size_t dcap, dn;
	struct fs *fs;		/* the core over the region opened for repair */
};

struct fsck {
	const char *region;
	bool verbose;
	struct pool pool;
	struct pool *p;
	bool opened, protected;
	uint64_t max_inodes;
	uint64_t nchunks;
	uint8_t *chunk_ok;
	uint8_t *st;
	uint32_t *nref;
	struct aux *aux;
	uint64_t problems;
	bool quiet;		/* repair rounds: count problems, do not print them */
	bool incomplete;	/* something was skipped: leak check would lie */
	bool root_ok;

	/* blocks: bit per region block; dmap = claimed more than once */
	uint64_t nblocks, nwords;
	uint64_t *bmap, *dmap;
	uint64_t ndup;

	/* metadata objects referenced, by offset */
	struct ref *refs;
	size_t refcap, nrefs;

	/* duplicate names in one directory */
	struct name_ent *names;
	size_t namecap, nnames;
	uint32_t namegen;

	/* BFS queue */
	uint64_t *queue;
	size_t qcap, qhead, qtail;

	/* counters for the summary */
	uint64_t n_used, n_dir, n_reg, n_lnk, n_other, n_orphan, n_bad;
	uint64_t n_mapnodes, n_objects, n_leaks;
	uint64_t meta_bytes;	/* allocated outside the data runs */
	uint64_t used_blocks, capacity;
	bool leak_checked;
	bool used_backup;	/* the primary geometry was damaged */
	bool degraded;		/* pool_open() refused it: checked, never repaired */
	uint64_t sb_off;	/* the primary superblock (root object) */
	bool shared_open;	/* device DAX: libpmemobj's open bookkeeping is written */
	bool guarded;		/* watchdog timers on libpmemobj (the program, not in-process callers) */

	/* for the repairs */
	bool orphan_bad;	/* the orphan list is not exactly the set of orphans */
	bool state_bad;		/* superblock state neither CLEAN nor MOUNTED */
	uint64_t lf_ino;	/* root entry "lost+found", 0 = none */
	struct dangling *dang;
	size_t ndang, dangcap;
	/*
	 * What one check learnt ends here: check_free() clears everything
	 * above.  Below, what outlives it: the owners of blocks claimed twice
	 * (pass 5, freed by it), the heap walk, the superblock checked with,
	 * and the repair.
	 */
	struct dup_ent *dups;
	size_t dupcap;
	/* pass 6: the pmemobj heap's objects; the walk is guarded (heap_walk()) */
	struct obj *heap_objs;
	volatile size_t heap_n, heap_seen;
	bool heap_broken;	/* libpmemobj may be mid-update: never call it again */
	struct pmfuse_super backup_sb;	/* with a damaged primary: what is checked */
	struct fsck_repair r;
};

/*
 * The check running in this process, for what cannot be handed it: the
 * signal handlers (the heap walk's watchdog, a cancel) and fatal exits.
 */
static struct fsck *active;

/* ------------------------------------------------------------------ */
/* output and failure */

static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct fsck *f, const char *fmt, ...)
{
	va_list ap;

	f->problems++;
	if (f->quiet)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

#define OPEN_WATCHDOG_SEC 120	/* pool_open() */
#define HEAP_WATCHDOG_SEC 15	/* no progress walking the heap */

/* the walk of the pmemobj heap (pass 6), guarded against damage */
static sigjmp_buf heap_jmp;

static void cleanup(struct fsck *f)
{
	if (f->protected)
		mprotect(f->pool.base, f->pool.size, PROT_READ | PROT_WRITE);
	f->protected = false;
	if (f->opened && !f->heap_broken)
		pool_close(&f->pool);	/* else exit() drops the mapping and the lock */
	f->opened = false;
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "fsck.pmfuse: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (active)
		cleanup(active);
	exit(FSCK_OPERATIONAL);
}

static void *xcalloc(size_t n, size_t size)
{
	void *m = calloc(n ? n : 1, size);

	if (!m)
		fatal("out of memory (%zu x %zu bytes)", n, size);
	return m;
}

/*
 * libpmemobj trusts its own metadata (lanes, heap headers): damage there can
 * crash it inside pmemobj_open() or the heap walk.  Those crashes become an
 * operational error; a crash anywhere else is a bug in fsck and stays one.
 */
static volatile sig_atomic_t in_pmemobj;

static void say(const char *msg)
{
	if (write(STDERR_FILENO, msg, strlen(msg)) < 0) {
		/* nothing left to do */
	}
}

static void on_fault(int sig)
{
	if (sig == SIGBUS) {
		say("fsck.pmfuse: media error (SIGBUS) while reading the region\n");
		_exit(FSCK_OPERATIONAL);
	}
	if (in_pmemobj == 2)
		siglongjmp(heap_jmp, sig);
	if (in_pmemobj) {
		say("fsck.pmfuse: libpmemobj crashed reading its own pool metadata: the pmemobj pool"
		    " structures (lanes or heap) of the region are damaged\n");
		_exit(FSCK_OPERATIONAL);
	}
	signal(sig, SIG_DFL);	/* returning re-faults: an honest crash */
}

/* A name for messages: printable ASCII as is, the rest as \xNN. */
static const char *esc(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}

#define ESC_MAX (4 * PMFUSE_NAME_MAX + 8)

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symlink";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	default: return "file of unknown type";
	}
}

/* ------------------------------------------------------------------ */
/* inode records */

static struct pmfuse_inode *rec(struct fsck *f, uint64_t ino)
{
	uint64_t c = ino / PMFUSE_INODES_PER_CHUNK;

	if (ino == 0 || ino >= f->max_inodes || !f->chunk_ok[c])
		return NULL;
	return (struct pmfuse_inode *)pool_ptr(f->p, f->p->itable->chunk[c]) +
	       ino % PMFUSE_INODES_PER_CHUNK;
}

/* A used inode whose structures may be read. */
static struct pmfuse_inode *good(struct fsck *f, uint64_t ino)
{
	struct pmfuse_inode *pi = rec(f, ino);

	return pi && (f->st[ino] & (I_USED | I_BAD)) == I_USED ? pi : NULL;
}

/* ------------------------------------------------------------------ */
/* metadata ownership */

static const char *kind_name(uint8_t kind)
{
	switch (kind) {
	case K_SUPER: return "superblock";
	case K_ITABLE: return "inode table";
	case K_ICHUNK: return "inode table chunk";
	case K_DIRTAB: return "directory table";
	case K_DIRCHUNK: return "directory chunk";
	case K_NAME: return "entry name";
	case K_XATTR: return "xattr object";
	case K_SYMLINK: return "symlink target";
	case K_MAPNODE: return "file map node";
	default: return "object";
	}
}

/*
 * A metadata structure in words: as the subject of a problem line
 * ("inode 5: directory chunk") or as its owner ("a directory chunk of
 * inode 5").
 */
static const char *describe(const struct ref *r, bool as_owner, char *buf, size_t len)
{
	const char *kind = kind_name(r->kind);

	switch (r->kind) {
	case K_SUPER: case K_ITABLE:
		snprintf(buf, len, "%s%s", as_owner ? "the " : "", kind);
		break;
	case K_ICHUNK:
		snprintf(buf, len, "inode table chunk %" PRIu64, r->owner);
		break;
	default:
		if (!as_owner)
			snprintf(buf, len, "inode %" PRIu64 ": %s", r->owner, kind);
		else if (r->kind == K_NAME)
			snprintf(buf, len, "an entry name in directory %" PRIu64, r->owner);
		else
			snprintf(buf, len, "a %s of inode %" PRIu64, kind, r->owner);
		break;
	}
	return buf;
}

/* The inode whose structure r is, or 0 (superblock, inode table and its chunks). */
static uint64_t ref_inode(const struct ref *r)
{
	return r->kind == K_SUPER || r->kind == K_ITABLE || r->kind == K_ICHUNK ? 0 : r->owner;
}

/* Something of ino is damaged or shared with another owner: repairs never free it. */
static void sicken(struct fsck *f, uint64_t ino)
{
	if (ino && ino < f->max_inodes)
		f->st[ino] |= I_SICK;
}

static size_t ref_hash(uint64_t off, size_t cap)
{
	return (size_t)((off >> 3) * 0x9e3779b97f4a7c15ULL) & (cap - 1);
}

static void ref_grow(struct fsck *f)
{
	struct ref *old = f->refs;
	size_t ocap = f->refcap, cap = ocap ? ocap * 2 : 4096;

	f->refs = xcalloc(cap, sizeof(*f->refs));
	f->refcap = cap;
	for (size_t i = 0; i < ocap; i++) {
		if (!old[i].off)
			continue;
		size_t j = ref_hash(old[i].off, cap);
		while (f->refs[j].off)
			j = (j + 1) & (cap - 1);
		f->refs[j] = old[i];
	}
	free(old);
}

/*
 * Record that owner uses [off, +len) as kind.  Returns false (and reports)
 * if something else already uses the same offset.
 */
static bool ref_add(struct fsck *f, uint64_t off, uint64_t len, uint8_t kind, uint64_t owner)
{
	size_t j;

	if ((f->nrefs + 1) * 2 > f->refcap)
		ref_grow(f);
	for (j = ref_hash(off, f->refcap); f->refs[j].off; j = (j + 1) & (f->refcap - 1)) {
		if (f->refs[j].off != off)
			continue;
		struct ref mine = { off, len, owner, kind };
		char a[128], b[128];
		problem(f, "%s at offset %" PRIu64 " is also used as %s", describe(&mine, false, a, sizeof(a)),
			off, describe(&f->refs[j], true, b, sizeof(b)));
		sicken(f, ref_inode(&mine));
		sicken(f, ref_inode(&f->refs[j]));
		f->incomplete = true;
		return false;
	}
	f->refs[j] = (struct ref){ off, len, owner, kind };
	f->nrefs++;
	return true;
}

/* ------------------------------------------------------------------ */
/* block bitmap */

static uint64_t popcount(uint64_t w)
{
	return (uint64_t)__builtin_popcountll(w);
}

/* Mark blocks [phys, +n) used; blocks already used go to the dup map. */
static void mark_blocks(struct fsck *f, uint64_t phys, uint64_t n)
{
	if (phys >= f->nblocks || n > f->nblocks - phys)
		return;		/* pool_block_range_ok() rules this out */
	while (n) {
		uint64_t w = phys >> 6, bit = phys & 63;
		uint64_t k = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << bit;
		uint64_t dup = f->bmap[w] & mask;
		if (dup) {
			f->ndup += popcount(dup & ~f->dmap[w]);
			f->dmap[w] |= dup;
		}
		f->bmap[w] |= mask;
		phys += k;
		n -= k;
	}
}

/* ------------------------------------------------------------------ */
/* pass 1: superblock */

static void check_super(struct fsck *f)
{
	struct pool *p = f->p;
	const struct pmfuse_geometry *pg = &p->sb->geo;
	struct pmfuse_geometry b;
	uint64_t sb_off = f->sb_off;
	uint64_t it_len = sizeof(struct pmfuse_itable) + f->nchunks * sizeof(uint64_t);

	ref_add(f, sb_off, sizeof(struct pmfuse_super), K_SUPER, 0);
	if (!pool_meta_range_ok(p, sb_off, sizeof(struct pmfuse_super)))
		problem(f, "superblock: at offset %" PRIu64 ", inside the data area", sb_off);
	if (!pool_meta_range_ok(p, pg->itable_off, it_len))
		problem(f, "inode table: [%" PRIu64 ", +%" PRIu64 ") overlaps the data area",
			pg->itable_off, it_len);
	else
		ref_add(f, pg->itable_off, it_len, K_ITABLE, 0);

	/* the backup geometry (pool.h; the geometry check put it inside the pool) */
	memcpy(&b, pool_ptr(p, pool_backup_off(pg)), sizeof(b));
	switch (pool_backup_check(pg, &b)) {
	case POOL_BACKUP_OK:
		break;
	case POOL_BACKUP_DAMAGED:
		problem(f, "backup superblock (offset %" PRIu64 "): %s", pool_backup_off(pg),
			b.magic != PMFUSE_BACKUP_MAGIC ? "bad magic" : "checksum mismatch");
		break;
	case POOL_BACKUP_DIFFERS: {
		char diff[256] = "";
		size_t n = 0;
#define CMP(f) do { if (memcmp(&pg->f, &b.f, sizeof(b.f))) \
			n += (size_t)snprintf(diff + n, sizeof(diff) - n, "%s%s", n ? ", " : "", #f); \
		} while (0)
		CMP(version); CMP(block_size); CMP(uuid); CMP(label); CMP(region_size);
		CMP(created); CMP(itable_off); CMP(max_inodes); CMP(meta_reserve);
		CMP(nruns); CMP(pad); CMP(runs);
#undef CMP
		problem(f, "backup superblock differs from the primary in: %s", diff);
	}
	}
	if (p->sb->state != PMFUSE_STATE_CLEAN && p->sb->state != PMFUSE_STATE_MOUNTED) {
		problem(f, "superblock: unknown state %u", p->sb->state);
		f->state_bad = true;
	}
}

/* ------------------------------------------------------------------ */
/* pass 2: inode table */

/*
 * Would the record pass inode_validate() with sane link count and orphan
 * fields?  Then those fields are all that is wrong, and the orphan list
 * repair can set them from what the directories say.
 */
static bool only_links_bad(const struct pool *p, uint64_t ino, const struct pmfuse_inode *pi)
{
	struct pmfuse_inode t = *pi;
	char why[POOL_WHY];

	t.nlink = 1;
	t.flags &= ~PMFUSE_IF_ORPHAN;
	return inode_validate(p, ino, &t, why, sizeof(why)) == 0;
}

static void check_itable(struct fsck *f)
{
	struct pool *p = f->p;
	char why[POOL_WHY];

	for (uint64_t c = 0; c < f->nchunks; c++) {
		uint64_t off = p->itable->chunk[c];
		if (!off)
			continue;
		if (!pool_struct_ok(p, off, PMFUSE_ICHUNK_SIZE)) {
			problem(f, "inode table chunk %" PRIu64 " (inodes %" PRIu64 "-%" PRIu64
				"): offset %" PRIu64 " is out of range", c,
				c * PMFUSE_INODES_PER_CHUNK, c * PMFUSE_INODES_PER_CHUNK + 63, off);
			f->incomplete = true;
			continue;
		}
		if (!ref_add(f, off, PMFUSE_ICHUNK_SIZE, K_ICHUNK, c))
			continue;	/* shared with something: its records are not trusted */
		f->chunk_ok[c] = 1;
		for (unsigned i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
			uint64_t ino = c * PMFUSE_INODES_PER_CHUNK + i;
			const struct pmfuse_inode *pi = (const struct pmfuse_inode *)pool_ptr(p, off) + i;
			if (pi->mode == 0)
				continue;
			if (ino == 0) {
				problem(f, "inode 0: in use (mode %o), but inode 0 is reserved", pi->mode);
				continue;
			}
			f->st[ino] |= I_USED;
			f->n_used++;
			if (inode_validate(p, ino, pi, why, sizeof(why))) {
				problem(f, "%s", why);
				f->st[ino] |= I_BAD;
				f->n_bad++;
				f->incomplete = true;
				if (only_links_bad(p, ino, pi))
					f->st[ino] |= I_LINKBAD;
			}
		}
	}
	if (!f->chunk_ok[0] || !(f->st[PMFUSE_ROOT_INO] & I_USED)) {
		problem(f, "inode 1: the root directory is missing");
	} else if (!S_ISDIR(rec(f, PMFUSE_ROOT_INO)->mode)) {
		problem(f, "inode 1: the root is a %s, not a directory", type_name(rec(f, PMFUSE_ROOT_INO)->mode));
	} else if (f->st[PMFUSE_ROOT_INO] & I_BAD) {
		/* already reported */
	} else {
		f->root_ok = true;
		if (rec(f, PMFUSE_ROOT_INO)->parent != PMFUSE_ROOT_INO)
			problem(f, "inode 1: the root directory's parent is %" PRIu64 ", not 1",
				rec(f, PMFUSE_ROOT_INO)->parent);
	}
}

/* ------------------------------------------------------------------ */
/* pass 3a: regular files */

struct file_ctx {
	struct fsck *f;
	uint64_t ino;
	uint64_t blocks;
	bool beyond_max;
};

static int node_cb(void *ctx, uint64_t node_off)
{
	struct file_ctx *fc = ctx;
	struct fsck *f = fc->f;

	/* a node seen before (shared, or a DAG inside this map) stops the walk */
	if (!ref_add(f, node_off, sizeof(struct pmfuse_mapnode), K_MAPNODE, fc->ino))
		return 1;
	f->n_mapnodes++;
	return 0;
}

static int leaf_cb(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n)
{
	struct file_ctx *fc = ctx;
	struct fsck *f = fc->f;

	if (fblock + n > (PMFUSE_MAX_FILE_SIZE >> PMFUSE_BLOCK_SHIFT))
		fc->beyond_max = true;
	fc->blocks += n;
	mark_blocks(f, phys, n);
	return 0;
}

static void check_file(struct fsck *f, uint64_t ino, const struct pmfuse_inode *pi)
{
	struct file_ctx fc = { f, ino, 0, false };
	int r;

	/* first pass: structure only, each node claimed once (bounds the walk) */
	r = fmap_walk(f->p, pi, NULL, node_cb, &fc);
	if (r < 0) {
		problem(f, "inode %" PRIu64 ": file map damaged (height %u, root entry %#" PRIx64 ")",
			ino, pi->map_height, pi->map_root);
		sicken(f, ino);
		f->incomplete = true;
		return;
	}
	if (r > 0)
		return;		/* shared node, reported by ref_add */
	r = fmap_walk(f->p, pi, leaf_cb, NULL, &fc);
	if (r) {
		problem(f, "inode %" PRIu64 ": file map damaged", ino);
		sicken(f, ino);
		f->incomplete = true;
		return;
	}
	f->st[ino] |= I_MAPOK;
	f->aux[ino].mapped = fc.blocks;
	if (fc.blocks != pi->blocks)
		problem(f, "inode %" PRIu64 ": %" PRIu64 " blocks mapped, but the inode says %" PRIu64,
			ino, fc.blocks, pi->blocks);
	if (fc.beyond_max)
		problem(f, "inode %" PRIu64 ": blocks mapped beyond the maximum file size", ino);
}

/* ------------------------------------------------------------------ */
/* pass 3b: symlinks and xattrs */

static void check_symlink(struct fsck *f, uint64_t ino, const struct pmfuse_inode *pi)
{
	const char *target;

	/* inode_validate() checked the size and a long target's range */
	if (pi->size <= PMFUSE_INLINE_SYMLINK) {
		target = pi->symlink;
		if (pi->dir_off)
			problem(f, "inode %" PRIu64 ": short symlink has a target pointer (%" PRIu64 ")",
				ino, pi->dir_off);
	} else {
		target = pool_ptr(f->p, pi->dir_off);
		ref_add(f, pi->dir_off, pi->size, K_SYMLINK, ino);
	}
	if (memchr(target, '\0', pi->size))
		problem(f, "inode %" PRIu64 ": symlink target contains a NUL byte", ino);
}

struct xname {
	const char *name;
	uint16_t len;
};

static int xname_cmp(const void *a, const void *b)
{
	const struct xname *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->name, y->name, x->len);
}

static void check_xattrs(struct fsck *f, uint64_t ino, const struct pmfuse_inode *pi)
{
	const struct pmfuse_xattrs *x;
	struct xname *names;
	char why[POOL_WHY];
	uint32_t i, n = 0;
	size_t pos = 0;

	if (!pi->xattr_off)
		return;
	if (xattr_set_validate(f->p, pi->xattr_off, why, sizeof(why))) {
		problem(f, "inode %" PRIu64 ": %s", ino, why);
		sicken(f, ino);
		f->incomplete = true;
		return;
	}
	x = pool_ptr(f->p, pi->xattr_off);
	if (!ref_add(f, pi->xattr_off, sizeof(*x) + x->used, K_XATTR, ino))
		return;
	/* the records are whole (validated); what remains is duplicate names */
	names = xcalloc(x->count + 1, sizeof(*names));
	for (i = 0; i < x->count; i++) {
		const struct pmfuse_xattr_rec *r = (const void *)((const char *)(x + 1) + pos);
		names[n++] = (struct xname){ (const char *)(r + 1), r->name_len };
		pos += xattr_rec_size(r);
	}
	qsort(names, n, sizeof(*names), xname_cmp);
	for (i = 1; i < n; i++)
		if (!xname_cmp(&names[i - 1], &names[i])) {
			char e[ESC_MAX];
			problem(f, "inode %" PRIu64 ": xattr \"%s\" is stored twice", ino,
				esc(names[i].name, names[i].len, e, sizeof(e)));
		}
	free(names);
}

/* ------------------------------------------------------------------ */
/* directories */

typedef void (*dirent_fn)(void *ctx, uint64_t slot, const struct pmfuse_dirent *de);

/*
 * Visit the live, valid entries of a directory.  With check, damage is
 * reported and the table, chunks and long names are claimed as metadata;
 * without (the reachability walk), damage is skipped silently.  Returns
 * false if some part could not be read.
 */
static bool dir_foreach(struct fsck *f, uint64_t dino, const struct pmfuse_inode *dpi, bool check,
			dirent_fn fn, void *ctx)
{
	struct pool *p = f->p;
	const struct pmfuse_dirtab *t;
	char why[POOL_WHY];
	bool ok = true;

	if (!dpi->dir_off)
		return true;
	t = pool_ptr(p, dpi->dir_off);
	if (!dir_tab_ok(p, dpi)) {
		if (check)
			problem(f, "inode %" PRIu64 ": directory table at offset %" PRIu64
				" is damaged (%" PRIu64 " chunks, capacity %" PRIu64 ")",
				dino, dpi->dir_off, t->nchunks, t->cap);
		return false;
	}
	if (check && !ref_add(f, dpi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t), K_DIRTAB, dino))
		return false;
	for (uint64_t c = 0; c < t->nchunks; c++) {
		uint64_t off = t->chunk[c];
		if (!pool_struct_ok(p, off, sizeof(struct pmfuse_dirchunk))) {
			if (check)
				problem(f, "inode %" PRIu64 ": directory chunk %" PRIu64 " at offset %" PRIu64
					" is out of range", dino, c, off);
			ok = false;
			continue;
		}
		if (check && !ref_add(f, off, sizeof(struct pmfuse_dirchunk), K_DIRCHUNK, dino)) {
			ok = false;
			continue;
		}
		const struct pmfuse_dirchunk *ch = pool_ptr(p, off);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++) {
			const struct pmfuse_dirent *de = &ch->ent[i];
			uint64_t slot = c * PMFUSE_DIRENTS_PER_CHUNK + i;
			if (!de->ino)
				continue;
			if (dir_validate_dirent(p, de, why, sizeof(why))) {
				if (check)
					problem(f, "inode %" PRIu64 ": slot %" PRIu64 ": %s", dino, slot, why);
				ok = false;
				continue;
			}
			if (check && de->name_len > PMFUSE_INLINE_NAME)
				ref_add(f, de->name_off, de->name_len, K_NAME, dino);
			fn(ctx, slot, de);
		}
	}
	return ok;
}

static size_t name_slot(uint64_t h, size_t cap)
{
	return (size_t)(h * 0x9e3779b97f4a7c15ULL >> 17) & (cap - 1);
}

static void names_insert(struct fsck *f, uint64_t h, const struct pmfuse_dirent *de, uint64_t slot)
{
	size_t j = name_slot(h, f->namecap);

	while (f->names[j].gen == f->namegen)
		j = (j + 1) & (f->namecap - 1);
	f->names[j] = (struct name_ent){ h, de, slot, f->namegen };
	f->nnames++;
}

/* Returns the slot of an earlier entry with de's name, or UINT64_MAX; adds de. */
static uint64_t names_check(struct fsck *f, const struct pmfuse_dirent *de, uint64_t slot)
{
	const char *n = dir_dirent_name(f->p, de);

	if ((f->nnames + 1) * 2 > f->namecap) {
		struct name_ent *old = f->names;
		size_t ocap = f->namecap;
		f->namecap = ocap ? ocap * 2 : 1024;
		f->names = xcalloc(f->namecap, sizeof(*f->names));
		f->nnames = 0;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].gen == f->namegen)
				names_insert(f, old[i].hash, old[i].de, old[i].slot);
		free(old);
	}
	for (size_t j = name_slot(de->hash, f->namecap); f->names[j].gen == f->namegen;
	     j = (j + 1) & (f->namecap - 1)) {
		const struct pmfuse_dirent *o = f->names[j].de;
		if (f->names[j].hash == de->hash && o->name_len == de->name_len &&
		    !memcmp(dir_dirent_name(f->p, o), n, de->name_len))
			return f->names[j].slot;
	}
	names_insert(f, de->hash, de, slot);
	return UINT64_MAX;
}

static void names_reset(struct fsck *f)
{
	f->nnames = 0;
	if (++f->namegen == 0) {		/* wrapped: stale generations must go */
		memset(f->names, 0, f->namecap * sizeof(*f->names));
		f->namegen = 1;
	}
}

struct dir_ctx {
	struct fsck *f;
	uint64_t dino;
	uint64_t live, nsub;
};

static void dangling_add(struct fsck *f, uint64_t dino, uint64_t slot, uint64_t ino)
{
	if (f->ndang == f->dangcap) {
		size_t cap = f->dangcap ? f->dangcap * 2 : 64;
		struct dangling *d = realloc(f->dang, cap * sizeof(*d));
		if (!d)
			fatal("out of memory");
		f->dang = d;
		f->dangcap = cap;
	}
	f->dang[f->ndang++] = (struct dangling){ dino, slot, ino };
}

static void dir_check_entry(void *ctx, uint64_t slot, const struct pmfuse_dirent *de)
{
	struct dir_ctx *dc = ctx;
	struct fsck *f = dc->f;
	uint64_t x = de->ino, other;
	const struct pmfuse_inode *px = rec(f, x);
	char e[ESC_MAX];
	const char *name = esc(dir_dirent_name(f->p, de), de->name_len, e, sizeof(e));

	dc->live++;
	other = names_check(f, de, slot);
	if (other != UINT64_MAX)
		problem(f, "inode %" PRIu64 ": entry \"%s\" appears twice (slots %" PRIu64 " and %" PRIu64 ")",
			dc->dino, name, other, slot);
	if (!px || !(f->st[x] & I_USED)) {
		problem(f, "inode %" PRIu64 ": entry \"%s\" refers to %s inode %" PRIu64, dc->dino, name,
			px ? "free" : "unallocated", x);
		dangling_add(f, dc->dino, slot, x);
		return;
	}
	if (f->nref[x] != UINT32_MAX)
		f->nref[x]++;
	f->aux[x].named_by = dc->dino;
	if (dc->dino == PMFUSE_ROOT_INO && de->name_len == 10 &&
	    !memcmp(dir_dirent_name(f->p, de), "lost+found", 10))
		f->lf_ino = x;
	if (S_ISDIR(px->mode))
		dc->nsub++;
	if (x == PMFUSE_ROOT_INO)
		problem(f, "inode 1: the root directory is listed as \"%s\" in directory %" PRIu64,
			name, dc->dino);
	if (f->st[x] & I_BAD)
		return;
	if (de->type != (px->mode & S_IFMT) >> 12)
		problem(f, "inode %" PRIu64 ": entry \"%s\" has type %u (%s), but inode %" PRIu64 " is a %s",
			dc->dino, name, de->type, type_name((uint32_t)de->type << 12), x,
			type_name(px->mode));
	if (S_ISDIR(px->mode) && x != PMFUSE_ROOT_INO && px->parent != dc->dino)
		problem(f, "inode %" PRIu64 ": parent is %" PRIu64 ", but it is listed as \"%s\" in directory %"
			PRIu64, x, px->parent, name, dc->dino);
}

static void check_dir(struct fsck *f, uint64_t ino, const struct pmfuse_inode *pi)
{
	struct dir_ctx dc = { f, ino, 0, 0 };
	bool orphan = pi->nlink == 0 && (pi->flags & PMFUSE_IF_ORPHAN);

	names_reset(f);
	if (!dir_foreach(f, ino, pi, true, dir_check_entry, &dc)) {
		sicken(f, ino);
		f->incomplete = true;
		return;		/* counts are meaningless with entries missing */
	}
	f->st[ino] |= I_DIROK;
	f->aux[ino].live = dc.live;
	f->aux[ino].nsub = dc.nsub;
	if (pi->nentries != dc.live)
		problem(f, "inode %" PRIu64 ": entry count is %" PRIu64 ", but it has %" PRIu64 " entries",
			ino, pi->nentries, dc.live);
	if (orphan) {
		if (dc.live)
			problem(f, "inode %" PRIu64 ": removed directory (orphan) still has %" PRIu64 " entries",
				ino, dc.live);
	} else if (pi->nlink != 2 + dc.nsub) {
		problem(f, "inode %" PRIu64 ": link count %u, but it has %" PRIu64
			" subdirectories (expected %" PRIu64 ")", ino, pi->nlink, dc.nsub, 2 + dc.nsub);
	}
}

static void check_inodes(struct fsck *f)
{
	for (uint64_t ino = 1; ino < f->max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(f, ino);
		if (!pi)
			continue;
		check_xattrs(f, ino, pi);
		switch (pi->mode & S_IFMT) {
		case S_IFREG: check_file(f, ino, pi); break;
		case S_IFDIR: check_dir(f, ino, pi); break;
		case S_IFLNK: check_symlink(f, ino, pi); break;
		default: break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* pass 4: orphan list, reachability, link counts */

static void check_orphan_list(struct fsck *f)
{
	uint64_t cur = f->p->sb->orphan_head, prev = 0, steps = 0;
	uint64_t problems = f->problems;

	while (cur) {
		struct pmfuse_inode *pi = rec(f, cur);
		if (++steps > f->max_inodes) {
			problem(f, "orphan list: longer than the inode table (a cycle?)");
			break;
		}
		if (!pi || !(f->st[cur] & I_USED)) {
			if (prev)
				problem(f, "inode %" PRIu64 ": next orphan is %" PRIu64 ", which is not in use",
					prev, cur);
			else
				problem(f, "superblock: orphan list head %" PRIu64 " is not in use", cur);
			break;
		}
		if (f->st[cur] & I_ONLIST) {
			problem(f, "orphan list: cycle at inode %" PRIu64 " (reached again from inode %" PRIu64 ")",
				cur, prev);
			break;
		}
		f->st[cur] |= I_ONLIST;
		if (!(pi->flags & PMFUSE_IF_ORPHAN))
			problem(f, "inode %" PRIu64 ": on the orphan list but not flagged as an orphan", cur);
		if (pi->orphan_prev != prev)
			problem(f, "inode %" PRIu64 ": previous orphan is %" PRIu64 ", expected %" PRIu64,
				cur, pi->orphan_prev, prev);
		prev = cur;
		cur = pi->orphan_next;
	}
	if (f->problems != problems)
		f->orphan_bad = true;
}

static void push(struct fsck *f, uint64_t ino)
{
	if (f->qtail == f->qcap) {
		size_t cap = f->qcap ? f->qcap * 2 : 1024;
		uint64_t *q = realloc(f->queue, cap * sizeof(*q));
		if (!q)
			fatal("out of memory");
		f->queue = q;
		f->qcap = cap;
	}
	f->queue[f->qtail++] = ino;
}

static void reach_entry(void *ctx, uint64_t slot, const struct pmfuse_dirent *de)
{
	struct fsck *f = ctx;
	const struct pmfuse_inode *px = good(f, de->ino);

	(void)slot;
	if (!rec(f, de->ino) || !(f->st[de->ino] & I_USED) || (f->st[de->ino] & I_REACHED))
		return;
	f->st[de->ino] |= I_REACHED;
	if (px && S_ISDIR(px->mode))
		push(f, de->ino);
}

static void check_reachability(struct fsck *f)
{
	if (!f->root_ok)
		return;
	f->st[PMFUSE_ROOT_INO] |= I_REACHED;
	push(f, PMFUSE_ROOT_INO);
	/* each directory is queued at most once (I_REACHED): bounded by max_inodes */
	while (f->qhead < f->qtail) {
		uint64_t d = f->queue[f->qhead++];
		dir_foreach(f, d, rec(f, d), false, reach_entry, f);
	}
}

static void check_links(struct fsck *f)
{
	for (uint64_t ino = 1; ino < f->max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(f, ino);
		if (!(f->st[ino] & I_USED))
			continue;
		if (!pi) {
			/* damaged: counted, not judged */
			const struct pmfuse_inode *r = rec(f, ino);
			if (r && (r->flags & PMFUSE_IF_ORPHAN) && r->nlink == 0)
				f->n_orphan++;
			continue;
		}
		uint32_t refs = f->nref[ino];
		bool dir = S_ISDIR(pi->mode);

		switch (pi->mode & S_IFMT) {
		case S_IFDIR: f->n_dir++; break;
		case S_IFREG: f->n_reg++; break;
		case S_IFLNK: f->n_lnk++; break;
		default: f->n_other++; break;
		}
		if (pi->flags & PMFUSE_IF_ORPHAN) {
			if (!(f->st[ino] & I_ONLIST)) {
				problem(f, "inode %" PRIu64 ": flagged as an orphan but not on the orphan list", ino);
				f->orphan_bad = true;
			}
			if (pi->nlink == 0) {
				f->n_orphan++;
				if (refs)
					problem(f, "inode %" PRIu64 ": orphan (link count 0), but %u names refer to it",
						ino, refs);
				continue;
			}
			problem(f, "inode %" PRIu64 ": flagged as an orphan, but its link count is %u"
				" (it would be deleted at the next mount)", ino, pi->nlink);
			f->orphan_bad = true;
		} else if (pi->orphan_next || pi->orphan_prev) {
			problem(f, "inode %" PRIu64 ": not an orphan, but has orphan list links (next %" PRIu64
				", previous %" PRIu64 ")", ino, pi->orphan_next, pi->orphan_prev);
			f->orphan_bad = true;
		}
		if (f->root_ok && !(f->st[ino] & I_REACHED)) {
			if (dir) {
				problem(f, "inode %" PRIu64 ": directory is not connected to the root"
					" (%u names refer to it)", ino, refs);
				continue;
			}
			if (refs == 0) {
				problem(f, "inode %" PRIu64 ": %s is not in any directory (link count %u)",
					ino, type_name(pi->mode), pi->nlink);
				continue;
			}
			/* named only in disconnected directories: they are reported */
		}
		if (dir) {
			if (ino != PMFUSE_ROOT_INO && refs > 1)
				problem(f, "inode %" PRIu64 ": directory has %u names (directories cannot be"
					" hard-linked)", ino, refs);
		} else if (pi->nlink != refs) {
			problem(f, "inode %" PRIu64 ": link count %u, but %u names refer to it",
				ino, pi->nlink, refs);
		}
	}
}

/* ------------------------------------------------------------------ */
/* pass 5: blocks claimed twice, named by owner */

#define DUP_NAME_MAX (8u << 20)	/* dup blocks whose first owner is remembered */


struct dup_ctx {
	struct fsck *f;
	uint64_t ino;
	uint64_t shared, first, other;
	bool many;
	uint64_t self, self_first;
};

/* First owner of a shared block; records ino if none yet. */
static uint64_t dup_owner(struct fsck *f, uint64_t block, uint64_t ino)
{
	size_t j = (size_t)((block * 0x9e3779b97f4a7c15ULL) >> 20) & (f->dupcap - 1);

	for (; f->dups[j].block; j = (j + 1) & (f->dupcap - 1))
		if (f->dups[j].block == block + 1)
			return f->dups[j].ino;
	f->dups[j] = (struct dup_ent){ block + 1, ino };
	return 0;
}

static int dup_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n)
{
	struct dup_ctx *dc = ctx;
	struct fsck *f = dc->f;
	uint64_t end = phys + n;

	(void)fblock;
	if (phys >= f->nblocks || n > f->nblocks - phys)
		return 0;
	for (uint64_t b = phys; b < end;) {
		uint64_t w = f->dmap[b >> 6] >> (b & 63);
		if (!w) {
			b = (b | 63) + 1;
			continue;
		}
		b += (uint64_t)__builtin_ctzll(w);
		if (b >= end)
			break;
		if (!f->dups) {
			if (!dc->shared++)
				dc->first = b;
		} else {
			uint64_t o = dup_owner(f, b, dc->ino);
			if (o == dc->ino) {
				if (!dc->self++)
					dc->self_first = b;
			} else if (o) {
				if (!dc->shared++) {
					dc->first = b;
					dc->other = o;
				} else if (o != dc->other) {
					dc->many = true;
				}
			}
		}
		b++;
	}
	return 0;
}

static void check_dups(struct fsck *f)
{
	if (!f->ndup)
		return;
	if (f->ndup <= DUP_NAME_MAX) {
		f->dupcap = 1;
		while (f->dupcap < 2 * f->ndup)
			f->dupcap *= 2;
		f->dups = calloc(f->dupcap, sizeof(*f->dups));	/* without it: unnamed owners */
	}
	for (uint64_t ino = 1; ino < f->max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(f, ino);
		struct dup_ctx dc = { .f = f, .ino = ino };
		if (!pi || !(f->st[ino] & I_MAPOK))
			continue;
		fmap_walk(f->p, pi, dup_leaf, NULL, &dc);
		if (dc.shared && f->dups)
			problem(f, "inode %" PRIu64 ": %" PRIu64 " block(s) also used by inode %" PRIu64
				"%s (first shared block %" PRIu64 ")", ino, dc.shared, dc.other,
				dc.many ? " and others" : "", dc.first);
		else if (dc.shared)
			problem(f, "inode %" PRIu64 ": %" PRIu64 " block(s) also used by another file"
				" (first shared block %" PRIu64 ")", ino, dc.shared, dc.first);
		if (dc.self)
			problem(f, "inode %" PRIu64 ": %" PRIu64 " block(s) mapped more than once in the file"
				" (first: block %" PRIu64 ")", ino, dc.self, dc.self_first);
	}
	free(f->dups);
	f->dups = NULL;
}

/* ------------------------------------------------------------------ */
/* pass 6: metadata against the pmemobj heap */

static int obj_cmp(const void *a, const void *b)
{
	const struct obj *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Index of the last object starting at or before off, or SIZE_MAX. */
static size_t obj_find(const struct obj *o, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (o[mid].off <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : SIZE_MAX;
}

#define LEAKS_SHOWN 20

/*
 * The allocated objects of the pmemobj heap, sorted.  A damaged heap can
 * crash or hang libpmemobj's walk: a fault, or no progress for a while,
 * jumps back here and the object checks are skipped.
 */


static void on_alarm(int sig)
{
	(void)sig;
	if (in_pmemobj == 1) {
		say("fsck.pmfuse: libpmemobj did not finish opening the pool: the pmemobj pool"
		    " structures (lanes or heap) of the region are probably damaged\n");
		_exit(FSCK_OPERATIONAL);
	}
	if (in_pmemobj == 2 && active->heap_n == active->heap_seen)
		siglongjmp(heap_jmp, SIGALRM);
	active->heap_seen = active->heap_n;
}

static bool heap_walk(struct fsck *f)
{
	volatile size_t cap = 0;
	size_t limit = (size_t)(f->p->size / 64);
	struct itimerval tick = { { HEAP_WATCHDOG_SEC, 0 }, { HEAP_WATCHDOG_SEC, 0 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa = { .sa_handler = on_alarm };
	int sig;

	f->heap_n = 0;
	f->heap_seen = SIZE_MAX;
	if (f->guarded)
		sigaction(SIGALRM, &sa, NULL);
	if ((sig = sigsetjmp(heap_jmp, 1)) != 0) {
		in_pmemobj = 0;
		if (f->guarded)
			setitimer(ITIMER_REAL, &off, NULL);
		f->heap_broken = true;	/* libpmemobj may be mid-update: never call it again */
		problem(f, "pmemobj heap: walking the allocated objects %s (damaged heap); object checks skipped",
			sig == SIGALRM ? "does not finish" : "crashes");
		return false;
	}
	if (f->guarded)
		setitimer(ITIMER_REAL, &tick, NULL);
	in_pmemobj = 2;
	for (PMEMoid oid = pmemobj_first(f->p->pop); !OID_IS_NULL(oid); oid = pmemobj_next(oid)) {
		if (f->heap_n == limit) {
			in_pmemobj = 0;
			if (f->guarded)
				setitimer(ITIMER_REAL, &off, NULL);
			problem(f, "pmemobj heap: more objects than the region can hold (damaged heap?)");
			return false;
		}
		if (f->heap_n == cap) {
			cap = cap ? cap * 2 : 4096;
			struct obj *m = realloc(f->heap_objs, cap * sizeof(*m));
			if (!m)
				fatal("out of memory");
			f->heap_objs = m;
		}
		f->heap_objs[f->heap_n] = (struct obj){ oid.off, pmemobj_alloc_usable_size(oid), 0 };
		f->heap_n = f->heap_n + 1;
	}
	in_pmemobj = 0;
	if (f->guarded)
		setitimer(ITIMER_REAL, &off, NULL);
	return true;
}

static void check_objects(struct fsck *f)
{
	const struct pmfuse_geometry *g = &f->p->sb->geo;
	struct obj *o;
	size_t n;
	char d[128];

	if (!heap_walk(f))
		return;
	o = f->heap_objs;
	n = f->heap_n;
	f->n_objects = n;
	qsort(o, n, sizeof(*o), obj_cmp);

	/* every referenced offset starts an object big enough for it */
	for (size_t i = 0; i < f->refcap; i++) {
		const struct ref *r = &f->refs[i];
		if (!r->off || r->kind == K_SUPER)	/* the root object is not iterated */
			continue;
		size_t k = obj_find(o, n, r->off);
		describe(r, false, d, sizeof(d));
		if (k == SIZE_MAX || o[k].off != r->off) {
			problem(f, "%s at offset %" PRIu64 " is not an allocated object", d, r->off);
			sicken(f, ref_inode(r));
			continue;
		}
		if (o[k].size < r->len) {
			problem(f, "%s at offset %" PRIu64 " (%" PRIu64 " bytes) is larger than its"
				" allocation (%" PRIu64 " bytes)", d, r->off, r->len, o[k].size);
			sicken(f, ref_inode(r));
		}
		o[k].used = 1;
	}
	/* the data runs lie inside allocations, or pmemobj could hand them out */
	for (uint32_t i = 0; i < g->nruns; i++) {
		size_t k = obj_find(o, n, g->runs[i].off);
		if (k == SIZE_MAX || o[k].size < g->runs[i].off - o[k].off ||
		    o[k].size - (g->runs[i].off - o[k].off) < g->runs[i].len) {
			problem(f, "data run %u [%" PRIu64 ", +%" PRIu64 ") is not inside an allocated object",
				i, g->runs[i].off, g->runs[i].len);
			continue;
		}
		if (o[k].used == 1)
			problem(f, "data run %u [%" PRIu64 ", +%" PRIu64 ") overlaps referenced metadata",
				i, g->runs[i].off, g->runs[i].len);
		o[k].used = 2;
	}
	for (size_t k = 0; k < n; k++)
		if (o[k].used != 2)
			f->meta_bytes += o[k].size;
	/* leaks: meaningful only if every structure could be followed */
	if (!f->incomplete) {
		f->leak_checked = true;
		for (size_t k = 0; k < n; k++) {
			if (o[k].used)
				continue;
			if (f->n_leaks++ < LEAKS_SHOWN)
				problem(f, "metadata: object at offset %" PRIu64 " (%" PRIu64 " bytes) is allocated"
					" but not referenced", o[k].off, o[k].size);
		}
		if (f->n_leaks > LEAKS_SHOWN)
			problem(f, "metadata: %" PRIu64 " more unreferenced objects", f->n_leaks - LEAKS_SHOWN);
	}
}

/* ------------------------------------------------------------------ */

static void print_time(const char *what, uint64_t t)
{
	char buf[64];
	time_t tt = (time_t)t;
	struct tm tm;

	if (t && localtime_r(&tt, &tm) && strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm))
		printf("%s%s", what, buf);
	else
		printf("%snever", what);
}

static void summary(struct fsck *f, uint64_t used_blocks, uint64_t capacity)
{
	const struct pmfuse_super *sb = f->p->sb;
	const struct pmfuse_geometry *g = &sb->geo;
	const uint8_t *u = g->uuid;

	printf("%s: pmfuse version %u, label \"%s\", uuid "
	       "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n",
	       f->region, g->version, g->label, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
	       u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	printf("  region %" PRIu64 " bytes, %u data run(s),", g->region_size, g->nruns);
	print_time(" created ", g->created);
	printf("\n  state: %s, mounted %" PRIu64 " time(s),",
	       sb->state == PMFUSE_STATE_CLEAN ? "cleanly unmounted" :
	       sb->state == PMFUSE_STATE_MOUNTED ? "NOT cleanly unmounted (the daemon stopped"
						   " without unmounting)" : "unknown",
	       sb->mount_count);
	print_time(" last ", sb->last_mount);
	printf("\n  inodes: %" PRIu64 " used of %" PRIu64 ": %" PRIu64 " directories, %" PRIu64
	       " regular files, %" PRIu64 " symlinks, %" PRIu64 " other, %" PRIu64 " damaged\n",
	       f->n_used, f->max_inodes - 1, f->n_dir, f->n_reg, f->n_lnk, f->n_other, f->n_bad);
	printf("  orphans: %" PRIu64 " (deleted files still open at the last session's end;"
	       " reclaimed at the next mount)\n", f->n_orphan);
	printf("  blocks (4 KiB): %" PRIu64 " used, %" PRIu64 " free, %" PRIu64 " total;"
	       " %" PRIu64 " claimed more than once\n", used_blocks,
	       capacity > used_blocks ? capacity - used_blocks : 0, capacity, f->ndup);
	printf("  metadata: %" PRIu64 " objects referenced (%" PRIu64 " file map nodes)",
	       (uint64_t)f->nrefs, f->n_mapnodes);
	if (f->heap_broken || !f->n_objects)
		printf("; pmemobj heap not walked\n");
	else if (f->leak_checked)
		printf(", %" PRIu64 " allocated, %" PRIu64 " unreferenced\n", f->n_objects, f->n_leaks);
	else
		printf(", %" PRIu64 " allocated; leak check skipped (damaged structures)\n",
		       f->n_objects);
	if (!f->heap_broken && f->n_objects)
		printf("  metadata space: %" PRIu64 " KiB in objects outside the data runs"
		       " (reserve at mkfs: %" PRIu64 " KiB)\n", f->meta_bytes >> 10,
		       g->meta_reserve >> 10);
	if (!f->root_ok)
		printf("  reachability not checked: no valid root directory\n");
	if (f->used_backup)
		printf("  checked with the backup superblock: the primary is damaged\n");
	if (f->shared_open)
		printf("  opened without copy-on-write (device DAX, or an old libpmemobj): libpmemobj"
		       " updated its own open bookkeeping (run id, lanes) in the region\n");
}

/* ------------------------------------------------------------------ */
/* opening */

/* pmemobj_open() replays logs and boots the heap: slow on a big pool, endless on a bad one */
static int guarded_pool_open(struct fsck *f, char *why, size_t whylen)
{
	struct sigaction al = { .sa_handler = on_alarm };
	int ret;

	if (f->guarded) {
		sigaction(SIGALRM, &al, NULL);
		alarm(OPEN_WATCHDOG_SEC);
	}
	in_pmemobj = 1;
	ret = pool_open(&f->pool, f->region, why, whylen);
	if (f->guarded)
		alarm(0);
	in_pmemobj = 0;
	return ret;
}

static bool is_char_device(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}


/*
 * pool_open() refused the region.  If it is nevertheless a pmfuse pool
 * whose superblock carries the pmfuse magic, the superblock is damaged:
 * that is a filesystem error (4), and if an intact backup geometry exists
 * the rest of the region is checked with it.  Anything else (no pool, a
 * pool of another layout, a superblock mkfs never finished) cannot be
 * checked (8).  Returns an exit code, or -1 to go on checking.
 */

static int open_damaged(struct fsck *f, const char *why_open)
{
	char why[POOL_WHY];
	const struct pmfuse_super *sb;
	struct pmfuse_geometry g;
	int ret;

	/* a sound pmemobj header and the pmfuse magic, or it cannot be checked */
	in_pmemobj = 1;
	if (f->guarded)
		alarm(OPEN_WATCHDOG_SEC);
	ret = pool_open_damaged(&f->pool, f->region, why, sizeof(why));
	if (f->guarded)
		alarm(0);
	in_pmemobj = 0;
	if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why_open);
		return FSCK_OPERATIONAL;
	}
	sb = f->pool.sb;
	f->sb_off = pool_off(&f->pool, sb);
	f->opened = true;
	if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
		f->protected = true;
	g = sb->geo;
	if (pool_check_geometry(&g, f->pool.size, why, sizeof(why)) == 0) {
		/* the geometry is fine: pool_open() objected to the inode table (below) */
		f->backup_sb = *sb;
		if (((const struct pmfuse_itable *)(f->pool.base + g.itable_off))->nchunks ==
		    g.max_inodes / PMFUSE_INODES_PER_CHUNK)
			problem(f, "superblock: %s", why_open);	/* whatever it was */
	} else {
		problem(f, "%s%s", strncmp(why_open, "superblock", 10) ? "superblock: " : "", why_open);
		int64_t off = pool_backup_find(f->pool.base, f->pool.size, &g);
		if (off < 0) {
			problem(f, "superblock: no intact backup superblock found; nothing more can be checked");
			return FSCK_UNCORRECTED;
		}
		f->backup_sb = *sb;	/* the mutable part (state, orphan list) */
		f->backup_sb.geo = g;
		printf("%s: the backup superblock at offset %" PRId64 " is intact; checking with it\n",
		       f->region, off);
		f->used_backup = true;
	}
	f->pool.sb = &f->backup_sb;
	f->pool.itable = (struct pmfuse_itable *)(f->pool.base + g.itable_off);
	f->degraded = true;
	/* pool_check_geometry() made sure the pool holds max_inodes / 64 chunk offsets */
	if (f->pool.itable->nchunks != g.max_inodes / PMFUSE_INODES_PER_CHUNK)
		problem(f, "inode table: holds %" PRIu64 " chunks, but the superblock says %" PRIu64
			"; checking %" PRIu64, f->pool.itable->nchunks,
			g.max_inodes / PMFUSE_INODES_PER_CHUNK, g.max_inodes / PMFUSE_INODES_PER_CHUNK);
	return -1;
}

/* Open the region read-only; returns an exit code, or -1 to go on checking. */
static int open_region(struct fsck *f)
{
	char why[POOL_WHY];
	int one = 1, zero = 0, ret;

	/*
	 * Copy-on-write: libpmemobj's own bookkeeping at open (run id, lane
	 * and heap runtime state, log replay) stays in private pages, so the
	 * check writes nothing.  Device DAX cannot be mapped that way: there
	 * the open falls back to a shared mapping (pmfuse metadata is still
	 * mapped read-only below).
	 */
	if (pmemobj_ctl_set(NULL, "copy_on_write.at_open", &one))
		f->shared_open = true;	/* an old libpmemobj */
	ret = guarded_pool_open(f, why, sizeof(why));
	if (ret && ret != -EAGAIN && is_char_device(f->region)) {
		pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
		f->shared_open = true;
		ret = guarded_pool_open(f, why, sizeof(why));
	}
	if (ret == -EAGAIN) {
		fprintf(stderr, "fsck.pmfuse: %s is in use (mounted?)\n", f->region);
		return FSCK_OPERATIONAL;
	}
	if (ret == -EINVAL) {
		ret = open_damaged(f, why);
		if (ret >= 0)
			return ret;
	} else if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why);
		return FSCK_OPERATIONAL;
	} else {
		f->opened = true;
		f->sb_off = pool_off(&f->pool, f->pool.sb);
		/* from here on nothing may write the image: make sure nothing can */
		if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
			f->protected = true;
	}
	f->p = &f->pool;
	return -1;
}

/* ------------------------------------------------------------------ */
/* one check of the open region */

static void protect(struct fsck *f, bool read_only)
{
	if (read_only && !f->protected) {
		if (mprotect(f->pool.base, f->pool.size, PROT_READ) == 0)
			f->protected = true;
	} else if (!read_only && f->protected) {
		mprotect(f->pool.base, f->pool.size, PROT_READ | PROT_WRITE);
		f->protected = false;
	}
}

/* Forget what a check learnt; the region stays open. */
static void check_free(struct fsck *f)
{
	struct fsck keep = *f;

	free(f->chunk_ok);
	free(f->st);
	free(f->nref);
	free(f->aux);
	free(f->bmap);
	free(f->dmap);
	free(f->refs);
	free(f->names);
	free(f->queue);
	free(f->dang);
	/* everything but what outlives one check: the region, the repair, the heap walk */
	memset(f, 0, offsetof(struct fsck, dups));
	f->dups = NULL;
	f->region = keep.region;
	f->verbose = keep.verbose;
	f->quiet = keep.quiet;
	f->pool = keep.pool;
	f->p = keep.p ? &f->pool : NULL;
	f->opened = keep.opened;
	f->protected = keep.protected;
	f->used_backup = keep.used_backup;
	f->degraded = keep.degraded;
	f->sb_off = keep.sb_off;
	f->shared_open = keep.shared_open;
	f->guarded = keep.guarded;
}

static void run_check(struct fsck *f)
{
	f->max_inodes = f->p->sb->geo.max_inodes;
	f->nchunks = f->max_inodes / PMFUSE_INODES_PER_CHUNK;	/* == itable->nchunks, or reported */
	f->chunk_ok = xcalloc(f->nchunks, 1);
	f->st = xcalloc(f->max_inodes, 1);
	f->nref = xcalloc(f->max_inodes, sizeof(uint32_t));
	f->aux = xcalloc(f->max_inodes, sizeof(struct aux));
	f->nblocks = f->p->size >> PMFUSE_BLOCK_SHIFT;
	f->nwords = (f->nblocks + 63) / 64;
	f->bmap = xcalloc(f->nwords, sizeof(uint64_t));
	f->dmap = xcalloc(f->nwords, sizeof(uint64_t));
	f->namegen = 1;

	check_super(f);
	check_itable(f);
	check_inodes(f);
	check_orphan_list(f);
	check_reachability(f);
	check_links(f);
	check_dups(f);
	check_objects(f);

	for (uint64_t w = 0; w < f->nwords; w++)
		f->used_blocks += popcount(f->bmap[w]);
	f->capacity = pool_data_blocks(f->p) - 1;	/* the backup block */
	if (f->used_blocks > f->capacity)
		problem(f, "blocks: %" PRIu64 " in use, but the data area holds only %" PRIu64,
			f->used_blocks, f->capacity);
}

/* ------------------------------------------------------------------ */
/* repair */

/*
 * What each mode repairs.  "Safe" repairs (-p/-a) only bring counters and
 * lists in line with the directories, or free what nothing can reach any
 * more -- none of them removes a name or a byte of data that a user could
 * still reach:
 *   orphan list rebuilt from the link counts and the directories; orphans
 *   (link count 0, no name) reclaimed; link counts, directory entry counts,
 *   parent pointers and block counts set from what was counted; entries
 *   naming a free or unallocated inode removed; unreferenced pmemobj
 *   objects freed.
 * Repairs that need -y (or a "yes") change the namespace:
 *   unreachable inodes reattached under /lost+found as "#INO" (lost+found
 *   created if missing).
 * Not repaired (left for a human, exit 4): damaged superblock, inode
 * records, file maps, directory tables or entries, xattr objects; blocks or
 * objects claimed twice; directory cycles; a damaged pmemobj heap.
 */
static volatile sig_atomic_t cancel_requested, repairing, asking, changed;

static void on_cancel(int sig)
{
	(void)sig;
	/*
	 * Not repairing: nothing was written, the copy-on-write mapping and the
	 * lock die with us.  Waiting for an answer: no transaction is open, so
	 * exiting is no worse than a crash between two transactions (and a
	 * flag could be missed by a read() about to block).
	 */
	if (!repairing || asking) {
		say("\nfsck.pmfuse: cancelled\n");
		_exit(FSCK_CANCELLED | (changed ? FSCK_CORRECTED : 0));
	}
	cancel_requested = 1;	/* stop between two transactions */
}

static size_t declined_slot(struct fsck *f, uint64_t key)
{
	size_t j = (size_t)(key * 0x9e3779b97f4a7c15ULL >> 20) & (f->r.dcap - 1);

	while (f->r.declined[j] && f->r.declined[j] != key)
		j = (j + 1) & (f->r.dcap - 1);
	return j;
}

static bool declined_has(struct fsck *f, uint64_t key)
{
	return f->r.dcap && f->r.declined[declined_slot(f, key)] == key;
}

static void declined_add(struct fsck *f, uint64_t key)
{
	if ((f->r.dn + 1) * 2 > f->r.dcap) {
		uint64_t *old = f->r.declined;
		size_t ocap = f->r.dcap;
		f->r.dcap = ocap ? ocap * 2 : 256;
		f->r.declined = xcalloc(f->r.dcap, sizeof(uint64_t));
		for (size_t i = 0; i < ocap; i++)
			if (old[i])
				f->r.declined[declined_slot(f, old[i])] = old[i];
		free(old);
	}
	if (!f->r.declined[declined_slot(f, key)]) {
		f->r.declined[declined_slot(f, key)] = key;
		f->r.dn++;
	}
}

/*
 * May the repair described by what be made?  Safe ones are made by -p;
 * others need -y or a "yes" on the terminal.  A repair refused once is not
 * offered again in a later round.
 */
static bool may_fix(struct fsck *f, bool safe, enum fix kind, uint64_t id, const char *what)
{
	uint64_t key = (uint64_t)kind << 56 | (id & ((1ULL << 56) - 1));
	char line[64];

	if (declined_has(f, key))
		return false;
	switch (f->r.mode) {
	case M_YES:
		return true;
	case M_PREEN:
		if (safe)
			return true;
		printf("%s: not done by -p (needs -y)\n", what);
		break;
	case M_ASK:
		if (f->r.all_yes)
			return true;
		/* from here a SIGINT exits at once; one that came before is seen below */
		asking = 1;
		if (cancel_requested) {
			asking = 0;
			break;
		}
		printf("%s? [y/n/a(ll)] ", what);
		fflush(stdout);
		bool answered = fgets(line, sizeof(line), stdin) != NULL;
		asking = 0;
		if (answered) {
			if (line[0] == 'a' || line[0] == 'A')
				f->r.all_yes = true;
			if (line[0] == 'y' || line[0] == 'Y' || f->r.all_yes)
				return true;
		} else {
			putchar('\n');
		}
		break;
	case M_CHECK:
		break;
	}
	declined_add(f, key);
	return false;
}

/* Report a repair's outcome; a failed one is not tried again. */
static bool fix_done(struct fsck *f, enum fix kind, uint64_t id, const char *what, int ret)
{
	if (ret) {
		printf("%s: FAILED: %s\n", what, strerror(-ret));
		declined_add(f, (uint64_t)kind << 56 | (id & ((1ULL << 56) - 1)));
		return false;
	}
	printf("%s: done\n", what);
	f->r.fixed++;
	changed = 1;
	return true;
}

/*
 * The core (struct fs, fs_attach()) over the region opened for repair,
 * without the daemon's mount: no data mapping, no orphan reclaim, no state
 * change.  Its allocator and free inode numbers come from the check, so the
 * core's own functions keep them right as they free and allocate.
 */

/* The blocks in use, run by run (claimed twice: once). */
static int claim_checked_blocks(void *ctx, struct alloc *a)
{
	struct fsck *f = ctx;

	for (uint64_t b = 0; b < f->nblocks;) {
		if (!(f->bmap[b >> 6] >> (b & 63) & 1)) {
			b++;
			continue;
		}
		uint64_t e = b;
		while (e < f->nblocks && (f->bmap[e >> 6] >> (e & 63) & 1))
			e++;
		alloc_claim(a, b, e - b);
		b = e;
	}
	return 0;
}

/* Damaged inode chunks give no free numbers. */
static bool chunk_checked_ok(void *ctx, uint64_t c)
{
	const struct fsck *f = ctx;

	return f->chunk_ok[c];
}

static void repair_fs_init(struct fsck *f)
{
	char why[POOL_WHY];

	if (fs_attach(&f->r.fs, &f->pool, claim_checked_blocks, chunk_checked_ok, f, why,
		      sizeof(why)))
		fatal("%s", why);
}

static void repair_fs_fini(struct fsck *f)
{
	fs_detach(f->r.fs);
	f->r.fs = NULL;
}

/* May the link count and orphan fields of ino be rewritten (record otherwise sound)? */
static bool links_fixable(struct fsck *f, uint64_t ino)
{
	uint8_t s = f->st[ino];

	return rec(f, ino) && (s & I_USED) && (!(s & I_BAD) || (s & I_LINKBAD));
}

/* Should ino be on the orphan list: unlinked (link count 0) and named nowhere? */
static bool wants_orphan(struct fsck *f, uint64_t ino)
{
	return links_fixable(f, ino) && rec(f, ino)->nlink == 0 && f->nref[ino] == 0;
}

static bool is_listed_orphan(struct fsck *f, uint64_t ino)
{
	const struct pmfuse_inode *pi = rec(f, ino);

	return (f->st[ino] & I_ONLIST) && (pi->flags & PMFUSE_IF_ORPHAN) && pi->nlink == 0;
}

struct orphans_args {
	struct fsck *f;
	const uint64_t *list;
	size_t n;
};

static int tx_rebuild_orphans(void *arg)
{
	struct orphans_args *a = arg;
	struct fsck *f = a->f;
	struct pmfuse_super *sb = f->p->sb;
	size_t pos = 0;

	for (uint64_t ino = 1; ino < f->max_inodes; ino++) {
		struct pmfuse_inode *pi = rec(f, ino);
		struct pmfuse_inode want;
		if (!links_fixable(f, ino))
			continue;
		want = *pi;
		if (pos < a->n && a->list[pos] == ino) {
			want.flags |= PMFUSE_IF_ORPHAN;
			want.orphan_prev = pos ? a->list[pos - 1] : 0;
			want.orphan_next = pos + 1 < a->n ? a->list[pos + 1] : 0;
			pos++;
		} else {
			want.flags &= ~PMFUSE_IF_ORPHAN;
			want.orphan_prev = want.orphan_next = 0;
			/* unlinked, yet named: the names win (the counts pass refines it) */
			if (want.nlink == 0)
				want.nlink = S_ISDIR(want.mode) ? 2 : f->nref[ino];
		}
		if (memcmp(&want, pi, sizeof(want))) {
			pmemobj_tx_add_range_direct(pi, sizeof(*pi));
			*pi = want;
		}
	}
	pmemobj_tx_add_range_direct(&sb->orphan_head, sizeof(sb->orphan_head));
	sb->orphan_head = a->n ? a->list[0] : 0;
	return 0;
}

/*
 * The orphan list must be exactly the inodes with link count 0 that no
 * entry names.  If it is not (damaged links, an unlinked inode left off it,
 * a named one on it), rebuild it in one transaction, in inode order.
 */
static uint64_t fix_orphan_list(struct fsck *f)
{
	bool needed = f->orphan_bad;
	uint64_t *list = NULL;
	size_t n = 0, cap = 0;
	char what[160];

	for (uint64_t ino = 1; ino < f->max_inodes; ino++) {
		if (!links_fixable(f, ino))
			continue;
		bool want = wants_orphan(f, ino);
		if ((f->st[ino] & I_LINKBAD) || want != is_listed_orphan(f, ino) ||
		    (!want && (rec(f, ino)->flags & PMFUSE_IF_ORPHAN)))
			needed = true;
		if (!want)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *l = realloc(list, cap * sizeof(*l));
			if (!l)
				fatal("out of memory");
			list = l;
		}
		list[n++] = ino;
	}
	if (!needed) {
		free(list);
		return 0;
	}
	snprintf(what, sizeof(what), "orphan list: rebuild it from the link counts and entries"
		 " (%zu unlinked inode(s) no entry names; named ones keep their names)", n);
	struct orphans_args a = { f, list, n };
	bool ok = may_fix(f, true, FX_ORPHANS, 0, what) &&
		  fix_done(f, FX_ORPHANS, 0, what, pool_tx(f->p, tx_rebuild_orphans, &a));
	free(list);
	return ok;
}

/* Reclaim the orphans on a sound list, as the next mount would: inode_reclaim(). */
static uint64_t fix_reclaim_orphans(struct fsck *f)
{
	uint64_t n = 0;
	char what[160];

	if (f->orphan_bad)
		return 0;	/* rebuilt first */
	for (uint64_t ino = 1; ino < f->max_inodes && !cancel_requested; ino++) {
		struct pmfuse_inode *pi = good(f, ino);
		if (!pi || !is_listed_orphan(f, ino) || f->nref[ino] || (f->st[ino] & I_SICK))
			continue;
		/* everything it owns was found allocated and unshared: freeing it is safe */
		if (S_ISREG(pi->mode) && !(f->st[ino] & I_MAPOK))
			continue;
		if (S_ISDIR(pi->mode) && (!(f->st[ino] & I_DIROK) || f->aux[ino].live))
			continue;	/* a removed directory with entries: reported, left alone */
		snprintf(what, sizeof(what), "inode %" PRIu64 ": reclaim the unlinked %s"
			 " (%" PRIu64 " bytes, %" PRIu64 " blocks)", ino, type_name(pi->mode),
			 pi->size, pi->blocks);
		if (!may_fix(f, true, FX_RECLAIM, ino, what))
			continue;
		int r = inode_reclaim(f->r.fs, ino, pi);	/* 1: reclaimed, 0: not an orphan */
		if (fix_done(f, FX_RECLAIM, ino, what, r < 0 ? r : r ? 0 : -ESTALE))
			n++;
	}
	return n;
}

struct drop_args {
	struct fs *fs;
	struct inode *dir;
	uint32_t slot;
};

static int tx_drop_dirent(void *arg)
{
	struct drop_args *a = arg;

	dir_tx_remove(a->fs, a->dir, a->slot);
	return 0;
}

/* Remove the entries that name free or unallocated inodes. */
static uint64_t fix_dangling(struct fsck *f)
{
	uint64_t n = 0;
	char what[160 + ESC_MAX], e[ESC_MAX];

	for (size_t i = 0; i < f->ndang && !cancel_requested; i++) {
		const struct dangling *d = &f->dang[i];
		const struct pmfuse_inode *dpi = good(f, d->dino);
		struct inode *dir;
		struct pmfuse_dirent *de;
		int ret;

		/* a directory being removed is left to the orphan repairs */
		if (!dpi || !(f->st[d->dino] & I_DIROK) || (f->st[d->dino] & I_SICK) || dpi->nlink == 0)
			continue;
		if (!(dir = inode_get(f->r.fs, d->dino)))
			continue;
		if (dir_lock_excl(f->r.fs, dir)) {
			inode_put(f->r.fs, dir);
			continue;
		}
		de = dir_slot(f->r.fs, dir, (uint32_t)d->slot);
		if (de && de->ino == d->ino) {
			uint64_t hash = de->hash;
			snprintf(what, sizeof(what), "inode %" PRIu64 ": remove entry \"%s\" (names %s"
				 " inode %" PRIu64 ")", d->dino,
				 esc(dir_dirent_name(f->p, de), de->name_len, e, sizeof(e)),
				 rec(f, d->ino) ? "free" : "unallocated", d->ino);
			if (may_fix(f, true, FX_DANGLING, d->dino << 24 ^ d->slot, what)) {
				struct drop_args a = { f->r.fs, dir, (uint32_t)d->slot };
				ret = pool_tx(f->p, tx_drop_dirent, &a);
				dir_remove_done(dir, (uint32_t)d->slot, hash, ret == 0);
				n += fix_done(f, FX_DANGLING, d->dino << 24 ^ d->slot, what, ret);
			}
		}
		pthread_rwlock_unlock(&dir->lock);
		inode_put(f->r.fs, dir);
	}
	return n;
}

struct reattach_args {
	struct fs *fs;
	struct inode *lf;
	uint64_t ino;
	const char *name;
	size_t len;
	struct dir_pending *pd;
};

/* Name ino in lost+found; it then has exactly that one name (and a directory, that parent). */
static int tx_reattach(void *arg)
{
	struct reattach_args *a = arg;
	struct pmfuse_inode *pi = inode_record(a->fs, a->ino);
	struct pmfuse_inode *lfi = a->lf->pi;
	int r = dir_tx_insert(a->fs, a->lf, a->name, a->len, a->ino, (pi->mode & S_IFMT) >> 12, a->pd);

	if (r)
		return r;
	pmemobj_tx_add_range_direct(pi, sizeof(*pi));
	if (S_ISDIR(pi->mode)) {
		pi->parent = a->lf->ino;
		pmemobj_tx_add_range_direct(&lfi->nlink, sizeof(lfi->nlink));
		lfi->nlink++;
	} else {
		pi->nlink = 1;
	}
	inode_tx_touch(lfi, false, true, true);
	return 0;
}

/* /lost+found as a locked directory of the core, created if missing; NULL if unusable. */
static struct inode *lost_found(struct fsck *f, bool *created)
{
	struct fs_cred root = { 0, 0 };
	struct inode *lf;
	struct fs_attr st;
	uint64_t ino = f->lf_ino;
	const char *what = "/lost+found: create it";

	*created = false;
	if (ino) {
		const struct pmfuse_inode *pi = good(f, ino);
		if (!pi || !S_ISDIR(pi->mode) || !(f->st[ino] & I_REACHED) || (f->st[ino] & I_SICK) ||
		    !(f->st[ino] & I_DIROK) || pi->nlink == 0 || f->nref[ino] != 1) {
			if (!declined_has(f, (uint64_t)FX_REATTACH << 56))
				printf("/lost+found is not a sound directory: nothing can be reattached\n");
			declined_add(f, (uint64_t)FX_REATTACH << 56);
			return NULL;
		}
	} else {
		int ret = fs_mknod(f->r.fs, PMFUSE_ROOT_INO, "lost+found", S_IFDIR | 0700, 0, &root, &st);
		if (!fix_done(f, FX_REATTACH, 0, what, ret))
			return NULL;
		ino = (uint64_t)st.st.st_ino;
		fs_forget(f->r.fs, ino, 1);
		f->lf_ino = ino;
		*created = true;
	}
	if (!(lf = inode_get(f->r.fs, ino)))
		return NULL;
	if (dir_lock_excl(f->r.fs, lf)) {
		inode_put(f->r.fs, lf);
		return NULL;
	}
	return lf;
}

/* " (N bytes)", in a static buffer */
static const char *size_text(uint64_t size)
{
	static char buf[40];

	snprintf(buf, sizeof(buf), " (%" PRIu64 " bytes)", size);
	return buf;
}

/* Unreachable inodes no entry names: under /lost+found as "#INO" (needs -y). */
static uint64_t fix_reattach(struct fsck *f)
{
	struct inode *lf = NULL;
	uint64_t n = 0;
	bool created;
	char what[200], name[40];

	if (!f->root_ok || f->orphan_bad)
		return 0;
	for (uint64_t ino = 2; ino < f->max_inodes && !cancel_requested; ino++) {
		const struct pmfuse_inode *pi = good(f, ino);
		struct dir_pending pd = { 0 };
		uint32_t slot;
		int err, ret;
		size_t len = 0;

		if (!pi || (f->st[ino] & I_REACHED) || f->nref[ino] || pi->nlink == 0 ||
		    (pi->flags & PMFUSE_IF_ORPHAN) || ino == f->lf_ino)
			continue;
		snprintf(what, sizeof(what), "inode %" PRIu64 ": %s%s is in no directory: reattach it"
			 " as /lost+found/#%" PRIu64, ino, type_name(pi->mode),
			 S_ISREG(pi->mode) ? size_text(pi->size) : "", ino);
		if (!may_fix(f, false, FX_REATTACH, ino, what))
			continue;
		if (!lf) {
			lf = lost_found(f, &created);
			if (!lf)
				break;
			n += created;
		}
		/* "#INO", or "#INO.K" if an earlier run left that name behind */
		for (unsigned k = 0; k < 10; k++) {
			len = (size_t)(k ? snprintf(name, sizeof(name), "#%" PRIu64 ".%u", ino, k)
					 : snprintf(name, sizeof(name), "#%" PRIu64, ino));
			if (!dir_find(f->r.fs, lf, name, len, &slot, &err) && err == -ENOENT)
				break;
			len = 0;
		}
		if (!len) {
			fix_done(f, FX_REATTACH, ino, what, -EEXIST);
			continue;
		}
		struct reattach_args a = { f->r.fs, lf, ino, name, len, &pd };
		ret = pool_tx(f->p, tx_reattach, &a);
		dir_insert_done(lf, &pd, ret == 0);
		n += fix_done(f, FX_REATTACH, ino, what, ret);
	}
	if (lf) {
		pthread_rwlock_unlock(&lf->lock);
		inode_put(f->r.fs, lf);
	}
	return n;
}

struct counts_args {
	struct pmfuse_inode *pi;
	struct pmfuse_inode want;
};

static int tx_set_counts(void *arg)
{
	struct counts_args *a = arg;

	pmemobj_tx_add_range_direct(a->pi, sizeof(*a->pi));
	*a->pi = a->want;
	return 0;
}

static void say_set(char *buf, size_t len, size_t *n, const char *field, uint64_t from, uint64_t to)
{
	if (*n < len)
		*n += (size_t)snprintf(buf + *n, len - *n, "%s %s %" PRIu64 " to %" PRIu64,
				       *n ? "," : "", field, from, to);
}

/* Link counts, entry counts, parents and block counts from what the check counted. */
static uint64_t fix_counts(struct fsck *f)
{
	uint64_t n = 0;
	char what[400], d[300];

	for (uint64_t ino = 1; ino < f->max_inodes && !cancel_requested; ino++) {
		struct pmfuse_inode *pi = good(f, ino);
		struct pmfuse_inode want;
		size_t dn = 0;

		if (!pi || (f->st[ino] & I_SICK) || (pi->flags & PMFUSE_IF_ORPHAN))
			continue;
		want = *pi;
		if (S_ISDIR(pi->mode)) {
			if (f->st[ino] & I_DIROK) {
				want.nlink = (uint32_t)(2 + f->aux[ino].nsub);
				want.nentries = f->aux[ino].live;
			}
			if (ino == PMFUSE_ROOT_INO)
				want.parent = PMFUSE_ROOT_INO;
			else if (f->nref[ino] == 1)
				want.parent = f->aux[ino].named_by;
		} else if (f->nref[ino] && f->nref[ino] != UINT32_MAX) {
			want.nlink = f->nref[ino];
		}
		if (S_ISREG(pi->mode) && (f->st[ino] & I_MAPOK))
			want.blocks = f->aux[ino].mapped;
		if (want.nlink != pi->nlink)
			say_set(d, sizeof(d), &dn, "link count", pi->nlink, want.nlink);
		if (want.nentries != pi->nentries)
			say_set(d, sizeof(d), &dn, "entry count", pi->nentries, want.nentries);
		if (want.parent != pi->parent)
			say_set(d, sizeof(d), &dn, "parent", pi->parent, want.parent);
		if (want.blocks != pi->blocks)
			say_set(d, sizeof(d), &dn, "block count", pi->blocks, want.blocks);
		if (!dn)
			continue;
		snprintf(what, sizeof(what), "inode %" PRIu64 ": set%s", ino, d);
		struct counts_args a = { pi, want };
		if (may_fix(f, true, FX_COUNTS, ino, what) &&
		    fix_done(f, FX_COUNTS, ino, what, pool_tx(f->p, tx_set_counts, &a)))
			n++;
	}
	return n;
}

static int tx_free_object(void *arg)
{
	pmemobj_tx_free(pmemobj_oid(arg));
	return 0;
}

/* Objects nothing references (only when every structure could be followed). */
static uint64_t fix_leaks(struct fsck *f)
{
	uint64_t n = 0;
	char what[160];

	if (!f->leak_checked)
		return 0;
	for (size_t k = 0; k < f->heap_n && !cancel_requested; k++) {
		if (f->heap_objs[k].used)
			continue;
		snprintf(what, sizeof(what), "metadata: free the unreferenced object at offset %"
			 PRIu64 " (%" PRIu64 " bytes)", f->heap_objs[k].off, f->heap_objs[k].size);
		if (may_fix(f, true, FX_LEAK, f->heap_objs[k].off, what) &&
		    fix_done(f, FX_LEAK, f->heap_objs[k].off, what,
			     pool_tx(f->p, tx_free_object, pool_ptr(f->p, f->heap_objs[k].off))))
			n++;
	}
	return n;
}

/*
 * One round of repairs from one check.  Repairs that change the shape of
 * the namespace or the orphan list come first; counts and leaks only from
 * a check made after the last of those (the next round), so no repair acts
 * on numbers an earlier one made stale.
 */
static uint64_t repair_round(struct fsck *f)
{
	uint64_t n = fix_orphan_list(f);

	n += fix_dangling(f);
	n += fix_reclaim_orphans(f);
	n += fix_reattach(f);
	if (n || cancel_requested)
		return n;
	n += fix_counts(f);
	n += fix_leaks(f);
	return n;
}

static int tx_mark_clean(void *arg)
{
	struct pmfuse_super *sb = arg;

	pmemobj_tx_add_range_direct(&sb->state, sizeof(sb->state));
	sb->state = PMFUSE_STATE_CLEAN;
	return 0;
}

/*
 * Open the region for real (no copy-on-write) and repair it in rounds until
 * a check finds nothing more it may repair.  A region found wholly clean is
 * recorded as cleanly unmounted.  Returns an exit code, or -1 to go on.
 */
static int repair(struct fsck *f)
{
	char why[POOL_WHY];
	int zero = 0, ret;
	bool settled = false;

	repairing = 1;
	pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
	f->shared_open = false;
	ret = guarded_pool_open(f, why, sizeof(why));
	if (ret == -EAGAIN) {
		fprintf(stderr, "fsck.pmfuse: %s is in use (mounted?)\n", f->region);
		return FSCK_OPERATIONAL;
	}
	if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why);
		return FSCK_OPERATIONAL;
	}
	f->opened = true;
	f->p = &f->pool;
	f->sb_off = pool_off(&f->pool, f->pool.sb);
	f->quiet = true;
	for (int round = 0; round < MAX_ROUNDS && !cancel_requested; round++) {
		check_free(f);
		protect(f, true);		/* the check never writes */
		run_check(f);
		protect(f, false);
		if (f->heap_broken) {
			printf("%s: the pmemobj heap is damaged: no repairs\n", f->region);
			break;
		}
		if (!f->r.fs)
			repair_fs_init(f);
		if (repair_round(f) == 0) {
			settled = true;
			break;
		}
	}
	/* the unknown state is the one problem this repairs */
	if (settled && !cancel_requested && f->problems == f->state_bad && !f->n_orphan &&
	    f->p->sb->state != PMFUSE_STATE_CLEAN) {
		bool unknown = f->p->sb->state != PMFUSE_STATE_MOUNTED;
		ret = pool_tx(f->p, tx_mark_clean, f->p->sb);
		if (unknown)
			fix_done(f, FX_STATE, 0, "superblock: set the unknown state to clean", ret);
		else if (!ret)
			printf("%s: recorded as clean\n", f->region);
	}
	repair_fs_fini(f);
	f->quiet = false;
	fflush(stdout);
	cleanup(f);
	check_free(f);
	return cancel_requested ? FSCK_CANCELLED : -1;
}

/* ------------------------------------------------------------------ */

/* Does someone hold the region's lock (pmemobj's flock: a daemon, or another fsck)? */
static bool region_in_use(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool busy;

	if (fd < 0)
		return false;	/* open_region() says why */
	busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd);		/* drops our lock, if we got it */
	return busy;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fsck.pmfuse [-n | -p | -a | -y] [-f] [-v] REGION\n"
		"Check a pmfuse region and repair it if asked.  The region must not be mounted.\n"
		"  -n      check only, change nothing (the default when stdin is not a terminal;\n"
		"          on a terminal, each repair is asked for)\n"
		"  -p, -a  repair what is safe without asking: orphans reclaimed, the orphan list\n"
		"          rebuilt, link/entry/block counts and parent pointers set from what is\n"
		"          counted, entries naming free inodes removed, unreferenced metadata\n"
		"          objects freed.  A cleanly unmounted region is not checked (see -f)\n"
		"  -y      repair everything that can be: also reattach unreachable files and\n"
		"          directories under /lost+found as #INO (created if missing)\n"
		"  -f      with -p/-a: check even a cleanly unmounted region (the other modes\n"
		"          always check everything)\n"
		"  -v      print a summary of the region\n"
		"  -V, --version, -h, --help\n"
		"exit status, a sum: 0 clean, 1 errors corrected, 4 errors left uncorrected,\n"
		"  8 operational error (e.g. the region is in use), 16 usage error, 32 cancelled\n");
}

static void report(struct fsck *f)
{
	if (f->problems)
		printf("%s: %" PRIu64 " problem(s) %s\n", f->region, f->problems,
		       f->r.mode == M_CHECK ? "found, not repaired" : "left uncorrected");
	else
		printf("%s: clean, %" PRIu64 "/%" PRIu64 " inodes, %" PRIu64 "/%" PRIu64 " blocks\n",
		       f->region, f->n_used, f->max_inodes - 1, f->used_blocks, f->capacity);
}

/* Everything a check leaves behind, so the next one (in-process) starts afresh. */
static void reset_state(struct fsck *f)
{
	int zero = 0;

	check_free(f);
	free(f->heap_objs);
	free(f->r.declined);
	memset(f, 0, sizeof(*f));
	in_pmemobj = 0;
	/* open_region() turned it on for every later open in this process */
	pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
}

/* A check's context; the one this process runs is active. */
static struct fsck *fsck_new(void)
{
	active = xcalloc(1, sizeof(*active));
	return active;
}

static void fsck_free(struct fsck *f)
{
	reset_state(f);
	active = NULL;
	free(f);
}

int fsck_check(const char *region, bool verbose, bool guarded)
{
	struct fsck *f = fsck_new();
	int ret;

	f->region = region;
	f->verbose = verbose;
	f->guarded = guarded;
	f->r.mode = M_CHECK;
	if (guarded) {
		/* libpmemobj crashing on its own damaged structures: an operational error */
		struct sigaction sa = { .sa_handler = on_fault };
		sigaction(SIGBUS, &sa, NULL);
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGABRT, &sa, NULL);
		sigaction(SIGFPE, &sa, NULL);
		sigaction(SIGILL, &sa, NULL);
	}
	ret = open_region(f);
	if (ret >= 0) {
		if (ret == FSCK_UNCORRECTED)
			printf("%s: %" PRIu64 " problem(s) found, not repaired\n", f->region, f->problems);
		fflush(stdout);
		cleanup(f);
		fsck_free(f);
		return ret;
	}
	run_check(f);
	if (f->verbose)
		summary(f, f->used_blocks, f->capacity);
	report(f);
	fflush(stdout);
	cleanup(f);
	ret = f->problems ? FSCK_UNCORRECTED : FSCK_OK;
	fsck_free(f);
	return ret;
}

#ifdef PMFUSE_FSCK_NO_MAIN
/*
 * In-process callers (tests/fuzz) bring their own main(): this one is
 * renamed rather than left out, so the repair code only it calls still
 * compiles without unused-function warnings.
 */
int fsck_program_main(int argc, char **argv);
#define main fsck_program_main
#endif

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct fsck *f = fsck_new();
	int c, ret, modes = 0;
	bool mode_set = false;

	while ((c = getopt_long(argc, argv, "nvfypahV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': f->r.mode = M_CHECK; modes |= 1; mode_set = true; break;
		case 'p': case 'a': f->r.mode = M_PREEN; modes |= 2; mode_set = true; break;
		case 'y': f->r.mode = M_YES; modes |= 4; mode_set = true; break;
		case 'f': f->r.force = true; break;
		case 'v': f->verbose = true; break;
		case 'h': usage(stdout); return FSCK_OK;
		case 'V': printf("fsck.pmfuse %s\n", PMFUSE_VERSION_STRING); return FSCK_OK;
		default: usage(stderr); return FSCK_USAGE;
		}
	}
	if (modes & (modes - 1)) {
		fprintf(stderr, "fsck.pmfuse: only one of -n, -p/-a and -y may be given\n");
		usage(stderr);
		return FSCK_USAGE;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "fsck.pmfuse: %s\n", optind < argc ? "only one region can be checked"
								    : "no region given");
		usage(stderr);
		return FSCK_USAGE;
	}
	f->region = argv[optind];
	f->guarded = true;	/* watchdogs on libpmemobj's open and heap walk */
	if (!mode_set)
		f->r.mode = isatty(STDIN_FILENO) ? M_ASK : M_CHECK;

	struct sigaction sa = { .sa_handler = on_fault };
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGABRT, &sa, NULL);
	sigaction(SIGFPE, &sa, NULL);
	sigaction(SIGILL, &sa, NULL);
	struct sigaction ca = { .sa_handler = on_cancel };
	sigaction(SIGINT, &ca, NULL);
	sigaction(SIGTERM, &ca, NULL);

	/* pmemobj's lock says "mounted" before anything else can say something obscure */
	if (region_in_use(f->region)) {
		fprintf(stderr, "fsck.pmfuse: %s is in use (mounted?)\n", f->region);
		return FSCK_OPERATIONAL;
	}
	ret = open_region(f);
	if (ret >= 0) {
		if (ret == FSCK_UNCORRECTED) {
			printf("%s: %" PRIu64 " problem(s) found, not repaired\n", f->region, f->problems);
			if (f->r.mode != M_CHECK)
				printf("%s: a damaged superblock is not repaired by this version\n",
				       f->region);
		}
		fflush(stdout);
		cleanup(f);
		return ret;
	}

	/*
	 * "Clean" is the superblock's state: the daemon writes MOUNTED when it
	 * mounts and CLEAN when it unmounts (fs_mount(), fs_unmount()), so a
	 * region left MOUNTED was not unmounted (crash, kill -9), and a CLEAN
	 * one with an empty orphan list needs nothing.  Only the preen mode --
	 * what boot runs -- trusts that; -n, -y and the questions always check.
	 */
	if (f->r.mode == M_PREEN && !f->r.force && !f->degraded &&
	    f->p->sb->state == PMFUSE_STATE_CLEAN && f->p->sb->orphan_head == 0) {
		printf("%s: clean (cleanly unmounted; -f forces a check)\n", f->region);
		cleanup(f);
		return FSCK_OK;
	}

	run_check(f);
	if (f->r.mode == M_CHECK || f->degraded ||
	    (!f->problems && !f->n_orphan && f->p->sb->state == PMFUSE_STATE_CLEAN)) {
		if (f->verbose)
			summary(f, f->used_blocks, f->capacity);
		if (f->problems && f->degraded && f->r.mode != M_CHECK)
			printf("%s: a damaged superblock or inode table is not repaired by this"
			       " version\n", f->region);
		report(f);
		fflush(stdout);
		cleanup(f);
		ret = f->problems ? FSCK_UNCORRECTED : FSCK_OK;
		check_free(f);
		free(f->heap_objs);
		return ret;
	}
	if (f->problems)
		printf("%s: %" PRIu64 " problem(s) found; repairing\n", f->region, f->problems);
	fflush(stdout);
	cleanup(f);
	check_free(f);

	int rret = repair(f);
	if (rret == FSCK_OPERATIONAL)
		return rret | (f->r.fixed ? FSCK_CORRECTED : 0);

	/* the verdict: a fresh copy-on-write check, as -n would make it */
	repairing = 0;
	if (cancel_requested) {
		fprintf(stderr, "fsck.pmfuse: cancelled\n");
		return FSCK_CANCELLED | (f->r.fixed ? FSCK_CORRECTED : 0);
	}
	ret = open_region(f);
	if (ret >= 0)
		return ret | (f->r.fixed ? FSCK_CORRECTED : 0);
	run_check(f);
	if (f->verbose)
		summary(f, f->used_blocks, f->capacity);
	if (f->r.fixed)
		printf("%s: %" PRIu64 " repair(s) made\n", f->region, f->r.fixed);
	report(f);
	if (f->problems && f->r.mode == M_PREEN)
		printf("%s: UNEXPECTED INCONSISTENCY: run fsck.pmfuse -y (or on a terminal, without"
		       " -p/-a) to repair the rest\n", f->region);
	fflush(stdout);
	cleanup(f);
	ret = (f->problems ? FSCK_UNCORRECTED : FSCK_OK) | (f->r.fixed ? FSCK_CORRECTED : 0);
	check_free(f);
	free(f->heap_objs);
	free(f->r.declined);
	return ret;
}
