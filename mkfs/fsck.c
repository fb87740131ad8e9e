/*
 * fsck.pmfuse: read-only consistency check of a pmfuse region.
 *
 *   fsck.pmfuse [-n] [-v] [-f] REGION
 *
 * The region is opened with pool_open() (which takes pmemobj's exclusive
 * lock, so a mounted region is refused) and, once open, mapped read-only:
 * a bug here can crash fsck but never write the image.  Each problem found
 * is one line on stdout.  Exit status as fsck(8): 0 clean, 4 errors left
 * uncorrected, 8 operational error, 16 usage error.
 *
 * Passes:
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
#include "fs.h"
#include "pool.h"
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
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FSCK_OK			0
#define FSCK_UNCORRECTED	4
#define FSCK_OPERATIONAL	8
#define FSCK_USAGE		16

/* per-inode state */
#define I_USED		0x01	/* mode != 0 */
#define I_BAD		0x02	/* failed validation: its structures are not read */
#define I_REACHED	0x04	/* reachable from the root */
#define I_ONLIST	0x08	/* on the orphan list */
#define I_MAPOK		0x10	/* file map walked cleanly */

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

static struct fsck {
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
	uint64_t problems;
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
	bool leak_checked;
	bool used_backup;	/* the primary geometry was damaged */
	uint64_t sb_off;	/* the primary superblock (root object) */
	bool shared_open;	/* device DAX: libpmemobj's open bookkeeping is written */
	bool guarded;		/* watchdog timers on libpmemobj (the program, not in-process callers) */
} F;

/* ------------------------------------------------------------------ */
/* output and failure */

static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	F.problems++;
}

#define OPEN_WATCHDOG_SEC 120	/* pool_open() */
#define HEAP_WATCHDOG_SEC 15	/* no progress walking the heap */

/* the walk of the pmemobj heap (pass 6), guarded against damage */
static sigjmp_buf heap_jmp;
static struct obj *heap_objs;
static volatile size_t heap_n, heap_seen;
static bool heap_broken;

static void cleanup(void)
{
	if (F.protected)
		mprotect(F.pool.base, F.pool.size, PROT_READ | PROT_WRITE);
	F.protected = false;
	if (F.opened && !heap_broken)
		pool_close(&F.pool);	/* else exit() drops the mapping and the lock */
	F.opened = false;
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
	cleanup();
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

static struct pmfuse_inode *rec(uint64_t ino)
{
	uint64_t c = ino / PMFUSE_INODES_PER_CHUNK;

	if (ino == 0 || ino >= F.max_inodes || !F.chunk_ok[c])
		return NULL;
	return (struct pmfuse_inode *)pool_ptr(F.p, F.p->itable->chunk[c]) +
	       ino % PMFUSE_INODES_PER_CHUNK;
}

/* A used inode whose structures may be read. */
static struct pmfuse_inode *good(uint64_t ino)
{
	struct pmfuse_inode *pi = rec(ino);

	return pi && (F.st[ino] & (I_USED | I_BAD)) == I_USED ? pi : NULL;
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

/* "inode 5: directory chunk", the subject of a problem line */
static const char *subject(const struct ref *r, char *buf, size_t len)
{
	switch (r->kind) {
	case K_SUPER: case K_ITABLE:
		snprintf(buf, len, "%s", kind_name(r->kind));
		break;
	case K_ICHUNK:
		snprintf(buf, len, "inode table chunk %" PRIu64, r->owner);
		break;
	default:
		snprintf(buf, len, "inode %" PRIu64 ": %s", r->owner, kind_name(r->kind));
		break;
	}
	return buf;
}

/* "a directory chunk of inode 5" */
static const char *owner_desc(const struct ref *r, char *buf, size_t len)
{
	switch (r->kind) {
	case K_SUPER: case K_ITABLE:
		snprintf(buf, len, "the %s", kind_name(r->kind));
		break;
	case K_ICHUNK:
		snprintf(buf, len, "inode table chunk %" PRIu64, r->owner);
		break;
	case K_NAME:
		snprintf(buf, len, "an entry name in directory %" PRIu64, r->owner);
		break;
	default:
		snprintf(buf, len, "a %s of inode %" PRIu64, kind_name(r->kind), r->owner);
		break;
	}
	return buf;
}

static size_t ref_hash(uint64_t off, size_t cap)
{
	return (size_t)((off >> 3) * 0x9e3779b97f4a7c15ULL) & (cap - 1);
}

static void ref_grow(void)
{
	struct ref *old = F.refs;
	size_t ocap = F.refcap, cap = ocap ? ocap * 2 : 4096;

	F.refs = xcalloc(cap, sizeof(*F.refs));
	F.refcap = cap;
	for (size_t i = 0; i < ocap; i++) {
		if (!old[i].off)
			continue;
		size_t j = ref_hash(old[i].off, cap);
		while (F.refs[j].off)
			j = (j + 1) & (cap - 1);
		F.refs[j] = old[i];
	}
	free(old);
}

/*
 * Record that owner uses [off, +len) as kind.  Returns false (and reports)
 * if something else already uses the same offset.
 */
static bool ref_add(uint64_t off, uint64_t len, uint8_t kind, uint64_t owner)
{
	size_t j;

	if ((F.nrefs + 1) * 2 > F.refcap)
		ref_grow();
	for (j = ref_hash(off, F.refcap); F.refs[j].off; j = (j + 1) & (F.refcap - 1)) {
		if (F.refs[j].off != off)
			continue;
		struct ref mine = { off, len, owner, kind };
		char a[128], b[128];
		problem("%s at offset %" PRIu64 " is also used as %s", subject(&mine, a, sizeof(a)),
			off, owner_desc(&F.refs[j], b, sizeof(b)));
		F.incomplete = true;
		return false;
	}
	F.refs[j] = (struct ref){ off, len, owner, kind };
	F.nrefs++;
	return true;
}

/* ------------------------------------------------------------------ */
/* block bitmap */

static uint64_t popcount(uint64_t w)
{
	return (uint64_t)__builtin_popcountll(w);
}

/* Mark blocks [phys, +n) used; blocks already used go to the dup map. */
static void mark_blocks(uint64_t phys, uint64_t n)
{
	if (phys >= F.nblocks || n > F.nblocks - phys)
		return;		/* pool_block_range_ok() rules this out */
	while (n) {
		uint64_t w = phys >> 6, bit = phys & 63;
		uint64_t k = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << bit;
		uint64_t dup = F.bmap[w] & mask;
		if (dup) {
			F.ndup += popcount(dup & ~F.dmap[w]);
			F.dmap[w] |= dup;
		}
		F.bmap[w] |= mask;
		phys += k;
		n -= k;
	}
}

/* ------------------------------------------------------------------ */
/* pass 1: superblock */

static void check_super(void)
{
	struct pool *p = F.p;
	const struct pmfuse_geometry *pg = &p->sb->geo;
	struct pmfuse_geometry b;
	uint64_t sb_off = F.sb_off;
	uint64_t it_len = sizeof(struct pmfuse_itable) + F.nchunks * sizeof(uint64_t);

	ref_add(sb_off, sizeof(struct pmfuse_super), K_SUPER, 0);
	if (!pool_meta_range_ok(p, sb_off, sizeof(struct pmfuse_super)))
		problem("superblock: at offset %" PRIu64 ", inside the data area", sb_off);
	if (!pool_meta_range_ok(p, pg->itable_off, it_len))
		problem("inode table: [%" PRIu64 ", +%" PRIu64 ") overlaps the data area",
			pg->itable_off, it_len);
	else
		ref_add(pg->itable_off, it_len, K_ITABLE, 0);

	/* the backup geometry: first block of run 0 (the geometry checked it is in the pool) */
	memcpy(&b, pool_ptr(p, pg->runs[0].off), sizeof(b));
	if (b.magic != PMFUSE_BACKUP_MAGIC) {
		problem("backup superblock (offset %" PRIu64 "): bad magic %#" PRIx64,
			pg->runs[0].off, b.magic);
	} else if (b.checksum != pool_geometry_checksum(&b)) {
		problem("backup superblock (offset %" PRIu64 "): checksum mismatch", pg->runs[0].off);
	} else {
		char diff[256] = "";
		size_t n = 0;
#define CMP(f) do { if (memcmp(&pg->f, &b.f, sizeof(b.f))) \
			n += (size_t)snprintf(diff + n, sizeof(diff) - n, "%s%s", n ? ", " : "", #f); \
		} while (0)
		CMP(version); CMP(block_size); CMP(uuid); CMP(label); CMP(region_size);
		CMP(created); CMP(itable_off); CMP(max_inodes); CMP(meta_reserve);
		CMP(nruns); CMP(pad); CMP(runs);
#undef CMP
		if (n)
			problem("backup superblock differs from the primary in: %s", diff);
	}
	if (p->sb->state != PMFUSE_STATE_CLEAN && p->sb->state != PMFUSE_STATE_MOUNTED)
		problem("superblock: unknown state %u", p->sb->state);
}

/* ------------------------------------------------------------------ */
/* pass 2: inode table */

static void check_itable(void)
{
	struct pool *p = F.p;
	char why[POOL_WHY];

	for (uint64_t c = 0; c < F.nchunks; c++) {
		uint64_t off = p->itable->chunk[c];
		if (!off)
			continue;
		if (!pool_struct_ok(p, off, PMFUSE_ICHUNK_SIZE)) {
			problem("inode table chunk %" PRIu64 " (inodes %" PRIu64 "-%" PRIu64
				"): offset %" PRIu64 " is out of range", c,
				c * PMFUSE_INODES_PER_CHUNK, c * PMFUSE_INODES_PER_CHUNK + 63, off);
			F.incomplete = true;
			continue;
		}
		if (!ref_add(off, PMFUSE_ICHUNK_SIZE, K_ICHUNK, c))
			continue;	/* shared with something: its records are not trusted */
		F.chunk_ok[c] = 1;
		for (unsigned i = 0; i < PMFUSE_INODES_PER_CHUNK; i++) {
			uint64_t ino = c * PMFUSE_INODES_PER_CHUNK + i;
			const struct pmfuse_inode *pi = (const struct pmfuse_inode *)pool_ptr(p, off) + i;
			if (pi->mode == 0)
				continue;
			if (ino == 0) {
				problem("inode 0: in use (mode %o), but inode 0 is reserved", pi->mode);
				continue;
			}
			F.st[ino] |= I_USED;
			F.n_used++;
			if (inode_validate(p, ino, pi, why, sizeof(why))) {
				problem("%s", why);
				F.st[ino] |= I_BAD;
				F.n_bad++;
				F.incomplete = true;
			}
		}
	}
	if (!F.chunk_ok[0] || !(F.st[PMFUSE_ROOT_INO] & I_USED)) {
		problem("inode 1: the root directory is missing");
	} else if (!S_ISDIR(rec(PMFUSE_ROOT_INO)->mode)) {
		problem("inode 1: the root is a %s, not a directory", type_name(rec(PMFUSE_ROOT_INO)->mode));
	} else if (F.st[PMFUSE_ROOT_INO] & I_BAD) {
		/* already reported */
	} else {
		F.root_ok = true;
		if (rec(PMFUSE_ROOT_INO)->parent != PMFUSE_ROOT_INO)
			problem("inode 1: the root directory's parent is %" PRIu64 ", not 1",
				rec(PMFUSE_ROOT_INO)->parent);
	}
}

/* ------------------------------------------------------------------ */
/* pass 3a: regular files */

struct file_ctx {
	uint64_t ino;
	uint64_t blocks;
	bool beyond_max;
};

static int node_cb(void *ctx, uint64_t node_off)
{
	struct file_ctx *fc = ctx;

	/* a node seen before (shared, or a DAG inside this map) stops the walk */
	if (!ref_add(node_off, sizeof(struct pmfuse_mapnode), K_MAPNODE, fc->ino))
		return 1;
	F.n_mapnodes++;
	return 0;
}

static int leaf_cb(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n)
{
	struct file_ctx *fc = ctx;

	if (fblock + n > (PMFUSE_MAX_FILE_SIZE >> PMFUSE_BLOCK_SHIFT))
		fc->beyond_max = true;
	fc->blocks += n;
	mark_blocks(phys, n);
	return 0;
}

static void check_file(uint64_t ino, const struct pmfuse_inode *pi)
{
	struct file_ctx fc = { ino, 0, false };
	int r;

	/* first pass: structure only, each node claimed once (bounds the walk) */
	r = fmap_walk(F.p, pi, NULL, node_cb, &fc);
	if (r < 0) {
		problem("inode %" PRIu64 ": file map damaged (height %u, root entry %#" PRIx64 ")",
			ino, pi->map_height, pi->map_root);
		F.incomplete = true;
		return;
	}
	if (r > 0)
		return;		/* shared node, reported by ref_add */
	r = fmap_walk(F.p, pi, leaf_cb, NULL, &fc);
	if (r) {
		problem("inode %" PRIu64 ": file map damaged", ino);
		F.incomplete = true;
		return;
	}
	F.st[ino] |= I_MAPOK;
	if (fc.blocks != pi->blocks)
		problem("inode %" PRIu64 ": %" PRIu64 " blocks mapped, but the inode says %" PRIu64,
			ino, fc.blocks, pi->blocks);
	if (fc.beyond_max)
		problem("inode %" PRIu64 ": blocks mapped beyond the maximum file size", ino);
}

/* ------------------------------------------------------------------ */
/* pass 3b: symlinks and xattrs */

static void check_symlink(uint64_t ino, const struct pmfuse_inode *pi)
{
	const char *target;

	/* inode_validate() checked the size and a long target's range */
	if (pi->size <= PMFUSE_INLINE_SYMLINK) {
		target = pi->symlink;
		if (pi->dir_off)
			problem("inode %" PRIu64 ": short symlink has a target pointer (%" PRIu64 ")",
				ino, pi->dir_off);
	} else {
		target = pool_ptr(F.p, pi->dir_off);
		ref_add(pi->dir_off, pi->size, K_SYMLINK, ino);
	}
	if (memchr(target, '\0', pi->size))
		problem("inode %" PRIu64 ": symlink target contains a NUL byte", ino);
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

static void check_xattrs(uint64_t ino, const struct pmfuse_inode *pi)
{
	const struct pmfuse_xattrs *x;
	struct xname *names;
	char why[POOL_WHY];
	uint32_t i, n = 0;
	size_t pos = 0;

	if (!pi->xattr_off)
		return;
	if (xattr_set_validate(F.p, pi->xattr_off, why, sizeof(why))) {
		problem("inode %" PRIu64 ": %s", ino, why);
		F.incomplete = true;
		return;
	}
	x = pool_ptr(F.p, pi->xattr_off);
	if (!ref_add(pi->xattr_off, sizeof(*x) + x->used, K_XATTR, ino))
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
			problem("inode %" PRIu64 ": xattr \"%s\" is stored twice", ino,
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
static bool dir_foreach(uint64_t dino, const struct pmfuse_inode *dpi, bool check,
			dirent_fn fn, void *ctx)
{
	struct pool *p = F.p;
	const struct pmfuse_dirtab *t;
	char why[POOL_WHY];
	bool ok = true;

	if (!dpi->dir_off)
		return true;
	t = pool_ptr(p, dpi->dir_off);
	if (!dir_tab_ok(p, dpi)) {
		if (check)
			problem("inode %" PRIu64 ": directory table at offset %" PRIu64
				" is damaged (%" PRIu64 " chunks, capacity %" PRIu64 ")",
				dino, dpi->dir_off, t->nchunks, t->cap);
		return false;
	}
	if (check && !ref_add(dpi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t), K_DIRTAB, dino))
		return false;
	for (uint64_t c = 0; c < t->nchunks; c++) {
		uint64_t off = t->chunk[c];
		if (!pool_struct_ok(p, off, sizeof(struct pmfuse_dirchunk))) {
			if (check)
				problem("inode %" PRIu64 ": directory chunk %" PRIu64 " at offset %" PRIu64
					" is out of range", dino, c, off);
			ok = false;
			continue;
		}
		if (check && !ref_add(off, sizeof(struct pmfuse_dirchunk), K_DIRCHUNK, dino)) {
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
					problem("inode %" PRIu64 ": slot %" PRIu64 ": %s", dino, slot, why);
				ok = false;
				continue;
			}
			if (check && de->name_len > PMFUSE_INLINE_NAME)
				ref_add(de->name_off, de->name_len, K_NAME, dino);
			fn(ctx, slot, de);
		}
	}
	return ok;
}

static size_t name_slot(uint64_t h, size_t cap)
{
	return (size_t)(h * 0x9e3779b97f4a7c15ULL >> 17) & (cap - 1);
}

static void names_insert(uint64_t h, const struct pmfuse_dirent *de, uint64_t slot)
{
	size_t j = name_slot(h, F.namecap);

	while (F.names[j].gen == F.namegen)
		j = (j + 1) & (F.namecap - 1);
	F.names[j] = (struct name_ent){ h, de, slot, F.namegen };
	F.nnames++;
}

/* Returns the slot of an earlier entry with de's name, or UINT64_MAX; adds de. */
static uint64_t names_check(const struct pmfuse_dirent *de, uint64_t slot)
{
	const char *n = dir_dirent_name(F.p, de);

	if ((F.nnames + 1) * 2 > F.namecap) {
		struct name_ent *old = F.names;
		size_t ocap = F.namecap;
		F.namecap = ocap ? ocap * 2 : 1024;
		F.names = xcalloc(F.namecap, sizeof(*F.names));
		F.nnames = 0;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].gen == F.namegen)
				names_insert(old[i].hash, old[i].de, old[i].slot);
		free(old);
	}
	for (size_t j = name_slot(de->hash, F.namecap); F.names[j].gen == F.namegen;
	     j = (j + 1) & (F.namecap - 1)) {
		const struct pmfuse_dirent *o = F.names[j].de;
		if (F.names[j].hash == de->hash && o->name_len == de->name_len &&
		    !memcmp(dir_dirent_name(F.p, o), n, de->name_len))
			return F.names[j].slot;
	}
	names_insert(de->hash, de, slot);
	return UINT64_MAX;
}

static void names_reset(void)
{
	F.nnames = 0;
	if (++F.namegen == 0) {		/* wrapped: stale generations must go */
		memset(F.names, 0, F.namecap * sizeof(*F.names));
		F.namegen = 1;
	}
}

struct dir_ctx {
	uint64_t dino;
	uint64_t live, nsub;
};

static void dir_check_entry(void *ctx, uint64_t slot, const struct pmfuse_dirent *de)
{
	struct dir_ctx *dc = ctx;
	uint64_t x = de->ino, other;
	const struct pmfuse_inode *px = rec(x);
	char e[ESC_MAX];
	const char *name = esc(dir_dirent_name(F.p, de), de->name_len, e, sizeof(e));

	dc->live++;
	other = names_check(de, slot);
	if (other != UINT64_MAX)
		problem("inode %" PRIu64 ": entry \"%s\" appears twice (slots %" PRIu64 " and %" PRIu64 ")",
			dc->dino, name, other, slot);
	if (!px || !(F.st[x] & I_USED)) {
		problem("inode %" PRIu64 ": entry \"%s\" refers to %s inode %" PRIu64, dc->dino, name,
			px ? "free" : "unallocated", x);
		return;
	}
	if (F.nref[x] != UINT32_MAX)
		F.nref[x]++;
	if (S_ISDIR(px->mode))
		dc->nsub++;
	if (x == PMFUSE_ROOT_INO)
		problem("inode 1: the root directory is listed as \"%s\" in directory %" PRIu64,
			name, dc->dino);
	if (F.st[x] & I_BAD)
		return;
	if (de->type != (px->mode & S_IFMT) >> 12)
		problem("inode %" PRIu64 ": entry \"%s\" has type %u (%s), but inode %" PRIu64 " is a %s",
			dc->dino, name, de->type, type_name((uint32_t)de->type << 12), x,
			type_name(px->mode));
	if (S_ISDIR(px->mode) && x != PMFUSE_ROOT_INO && px->parent != dc->dino)
		problem("inode %" PRIu64 ": parent is %" PRIu64 ", but it is listed as \"%s\" in directory %"
			PRIu64, x, px->parent, name, dc->dino);
}

static void check_dir(uint64_t ino, const struct pmfuse_inode *pi)
{
	struct dir_ctx dc = { ino, 0, 0 };
	bool orphan = pi->nlink == 0 && (pi->flags & PMFUSE_IF_ORPHAN);

	names_reset();
	if (!dir_foreach(ino, pi, true, dir_check_entry, &dc)) {
		F.incomplete = true;
		return;		/* counts are meaningless with entries missing */
	}
	if (pi->nentries != dc.live)
		problem("inode %" PRIu64 ": entry count is %" PRIu64 ", but it has %" PRIu64 " entries",
			ino, pi->nentries, dc.live);
	if (orphan) {
		if (dc.live)
			problem("inode %" PRIu64 ": removed directory (orphan) still has %" PRIu64 " entries",
				ino, dc.live);
	} else if (pi->nlink != 2 + dc.nsub) {
		problem("inode %" PRIu64 ": link count %u, but it has %" PRIu64
			" subdirectories (expected %" PRIu64 ")", ino, pi->nlink, dc.nsub, 2 + dc.nsub);
	}
}

static void check_inodes(void)
{
	for (uint64_t ino = 1; ino < F.max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(ino);
		if (!pi)
			continue;
		check_xattrs(ino, pi);
		switch (pi->mode & S_IFMT) {
		case S_IFREG: check_file(ino, pi); break;
		case S_IFDIR: check_dir(ino, pi); break;
		case S_IFLNK: check_symlink(ino, pi); break;
		default: break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* pass 4: orphan list, reachability, link counts */

static void check_orphan_list(void)
{
	uint64_t cur = F.p->sb->orphan_head, prev = 0, steps = 0;

	while (cur) {
		struct pmfuse_inode *pi = rec(cur);
		if (++steps > F.max_inodes) {
			problem("orphan list: longer than the inode table (a cycle?)");
			break;
		}
		if (!pi || !(F.st[cur] & I_USED)) {
			if (prev)
				problem("inode %" PRIu64 ": next orphan is %" PRIu64 ", which is not in use",
					prev, cur);
			else
				problem("superblock: orphan list head %" PRIu64 " is not in use", cur);
			break;
		}
		if (F.st[cur] & I_ONLIST) {
			problem("orphan list: cycle at inode %" PRIu64 " (reached again from inode %" PRIu64 ")",
				cur, prev);
			break;
		}
		F.st[cur] |= I_ONLIST;
		if (!(pi->flags & PMFUSE_IF_ORPHAN))
			problem("inode %" PRIu64 ": on the orphan list but not flagged as an orphan", cur);
		if (pi->orphan_prev != prev)
			problem("inode %" PRIu64 ": previous orphan is %" PRIu64 ", expected %" PRIu64,
				cur, pi->orphan_prev, prev);
		prev = cur;
		cur = pi->orphan_next;
	}
}

static void push(uint64_t ino)
{
	if (F.qtail == F.qcap) {
		size_t cap = F.qcap ? F.qcap * 2 : 1024;
		uint64_t *q = realloc(F.queue, cap * sizeof(*q));
		if (!q)
			fatal("out of memory");
		F.queue = q;
		F.qcap = cap;
	}
	F.queue[F.qtail++] = ino;
}

static void reach_entry(void *ctx, uint64_t slot, const struct pmfuse_dirent *de)
{
	const struct pmfuse_inode *px = good(de->ino);

	(void)ctx;
	(void)slot;
	if (!rec(de->ino) || !(F.st[de->ino] & I_USED) || (F.st[de->ino] & I_REACHED))
		return;
	F.st[de->ino] |= I_REACHED;
	if (px && S_ISDIR(px->mode))
		push(de->ino);
}

static void check_reachability(void)
{
	if (!F.root_ok)
		return;
	F.st[PMFUSE_ROOT_INO] |= I_REACHED;
	push(PMFUSE_ROOT_INO);
	/* each directory is queued at most once (I_REACHED): bounded by max_inodes */
	while (F.qhead < F.qtail) {
		uint64_t d = F.queue[F.qhead++];
		dir_foreach(d, rec(d), false, reach_entry, NULL);
	}
}

static void check_links(void)
{
	for (uint64_t ino = 1; ino < F.max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(ino);
		if (!(F.st[ino] & I_USED))
			continue;
		if (!pi) {
			/* damaged: counted, not judged */
			const struct pmfuse_inode *r = rec(ino);
			if (r && (r->flags & PMFUSE_IF_ORPHAN) && r->nlink == 0)
				F.n_orphan++;
			continue;
		}
		uint32_t refs = F.nref[ino];
		bool dir = S_ISDIR(pi->mode);

		switch (pi->mode & S_IFMT) {
		case S_IFDIR: F.n_dir++; break;
		case S_IFREG: F.n_reg++; break;
		case S_IFLNK: F.n_lnk++; break;
		default: F.n_other++; break;
		}
		if (pi->flags & PMFUSE_IF_ORPHAN) {
			if (!(F.st[ino] & I_ONLIST))
				problem("inode %" PRIu64 ": flagged as an orphan but not on the orphan list", ino);
			if (pi->nlink == 0) {
				F.n_orphan++;
				if (refs)
					problem("inode %" PRIu64 ": orphan (link count 0), but %u names refer to it",
						ino, refs);
				continue;
			}
			problem("inode %" PRIu64 ": flagged as an orphan, but its link count is %u"
				" (it would be deleted at the next mount)", ino, pi->nlink);
		} else if (pi->orphan_next || pi->orphan_prev) {
			problem("inode %" PRIu64 ": not an orphan, but has orphan list links (next %" PRIu64
				", previous %" PRIu64 ")", ino, pi->orphan_next, pi->orphan_prev);
		}
		if (F.root_ok && !(F.st[ino] & I_REACHED)) {
			if (dir) {
				problem("inode %" PRIu64 ": directory is not connected to the root"
					" (%u names refer to it)", ino, refs);
				continue;
			}
			if (refs == 0) {
				problem("inode %" PRIu64 ": %s is not in any directory (link count %u)",
					ino, type_name(pi->mode), pi->nlink);
				continue;
			}
			/* named only in disconnected directories: they are reported */
		}
		if (dir) {
			if (ino != PMFUSE_ROOT_INO && refs > 1)
				problem("inode %" PRIu64 ": directory has %u names (directories cannot be"
					" hard-linked)", ino, refs);
		} else if (pi->nlink != refs) {
			problem("inode %" PRIu64 ": link count %u, but %u names refer to it",
				ino, pi->nlink, refs);
		}
	}
}

/* ------------------------------------------------------------------ */
/* pass 5: blocks claimed twice, named by owner */

#define DUP_NAME_MAX (8u << 20)	/* dup blocks whose first owner is remembered */

static struct dup_ent *dups;
static size_t dupcap;

struct dup_ctx {
	uint64_t ino;
	uint64_t shared, first, other;
	bool many;
	uint64_t self, self_first;
};

/* First owner of a shared block; records ino if none yet. */
static uint64_t dup_owner(uint64_t block, uint64_t ino)
{
	size_t j = (size_t)((block * 0x9e3779b97f4a7c15ULL) >> 20) & (dupcap - 1);

	for (; dups[j].block; j = (j + 1) & (dupcap - 1))
		if (dups[j].block == block + 1)
			return dups[j].ino;
	dups[j] = (struct dup_ent){ block + 1, ino };
	return 0;
}

static int dup_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n)
{
	struct dup_ctx *dc = ctx;
	uint64_t end = phys + n;

	(void)fblock;
	if (phys >= F.nblocks || n > F.nblocks - phys)
		return 0;
	for (uint64_t b = phys; b < end;) {
		uint64_t w = F.dmap[b >> 6] >> (b & 63);
		if (!w) {
			b = (b | 63) + 1;
			continue;
		}
		b += (uint64_t)__builtin_ctzll(w);
		if (b >= end)
			break;
		if (!dups) {
			if (!dc->shared++)
				dc->first = b;
		} else {
			uint64_t o = dup_owner(b, dc->ino);
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

static void check_dups(void)
{
	if (!F.ndup)
		return;
	if (F.ndup <= DUP_NAME_MAX) {
		dupcap = 1;
		while (dupcap < 2 * F.ndup)
			dupcap *= 2;
		dups = calloc(dupcap, sizeof(*dups));	/* without it: unnamed owners */
	}
	for (uint64_t ino = 1; ino < F.max_inodes; ino++) {
		const struct pmfuse_inode *pi = good(ino);
		struct dup_ctx dc = { .ino = ino };
		if (!pi || !(F.st[ino] & I_MAPOK))
			continue;
		fmap_walk(F.p, pi, dup_leaf, NULL, &dc);
		if (dc.shared && dups)
			problem("inode %" PRIu64 ": %" PRIu64 " block(s) also used by inode %" PRIu64
				"%s (first shared block %" PRIu64 ")", ino, dc.shared, dc.other,
				dc.many ? " and others" : "", dc.first);
		else if (dc.shared)
			problem("inode %" PRIu64 ": %" PRIu64 " block(s) also used by another file"
				" (first shared block %" PRIu64 ")", ino, dc.shared, dc.first);
		if (dc.self)
			problem("inode %" PRIu64 ": %" PRIu64 " block(s) mapped more than once in the file"
				" (first: block %" PRIu64 ")", ino, dc.self, dc.self_first);
	}
	free(dups);
	dups = NULL;
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
	if (in_pmemobj == 2 && heap_n == heap_seen)
		siglongjmp(heap_jmp, SIGALRM);
	heap_seen = heap_n;
}

static bool heap_walk(void)
{
	volatile size_t cap = 0;
	size_t limit = (size_t)(F.p->size / 64);
	struct itimerval tick = { { HEAP_WATCHDOG_SEC, 0 }, { HEAP_WATCHDOG_SEC, 0 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa = { .sa_handler = on_alarm };
	int sig;

	heap_n = 0;
	heap_seen = SIZE_MAX;
	if (F.guarded)
		sigaction(SIGALRM, &sa, NULL);
	if ((sig = sigsetjmp(heap_jmp, 1)) != 0) {
		in_pmemobj = 0;
		if (F.guarded)
			setitimer(ITIMER_REAL, &off, NULL);
		heap_broken = true;	/* libpmemobj may be mid-update: never call it again */
		problem("pmemobj heap: walking the allocated objects %s (damaged heap); object checks skipped",
			sig == SIGALRM ? "does not finish" : "crashes");
		return false;
	}
	if (F.guarded)
		setitimer(ITIMER_REAL, &tick, NULL);
	in_pmemobj = 2;
	for (PMEMoid oid = pmemobj_first(F.p->pop); !OID_IS_NULL(oid); oid = pmemobj_next(oid)) {
		if (heap_n == limit) {
			in_pmemobj = 0;
			if (F.guarded)
				setitimer(ITIMER_REAL, &off, NULL);
			problem("pmemobj heap: more objects than the region can hold (damaged heap?)");
			return false;
		}
		if (heap_n == cap) {
			cap = cap ? cap * 2 : 4096;
			struct obj *m = realloc(heap_objs, cap * sizeof(*m));
			if (!m)
				fatal("out of memory");
			heap_objs = m;
		}
		heap_objs[heap_n] = (struct obj){ oid.off, pmemobj_alloc_usable_size(oid), 0 };
		heap_n = heap_n + 1;
	}
	in_pmemobj = 0;
	if (F.guarded)
		setitimer(ITIMER_REAL, &off, NULL);
	return true;
}

static void check_objects(void)
{
	const struct pmfuse_geometry *g = &F.p->sb->geo;
	struct obj *o;
	size_t n;
	char d[128];

	if (!heap_walk())
		return;
	o = heap_objs;
	n = heap_n;
	F.n_objects = n;
	qsort(o, n, sizeof(*o), obj_cmp);

	/* every referenced offset starts an object big enough for it */
	for (size_t i = 0; i < F.refcap; i++) {
		const struct ref *r = &F.refs[i];
		if (!r->off || r->kind == K_SUPER)	/* the root object is not iterated */
			continue;
		size_t k = obj_find(o, n, r->off);
		subject(r, d, sizeof(d));
		if (k == SIZE_MAX || o[k].off != r->off) {
			problem("%s at offset %" PRIu64 " is not an allocated object", d, r->off);
			continue;
		}
		if (o[k].size < r->len)
			problem("%s at offset %" PRIu64 " (%" PRIu64 " bytes) is larger than its"
				" allocation (%" PRIu64 " bytes)", d, r->off, r->len, o[k].size);
		o[k].used = 1;
	}
	/* the data runs lie inside allocations, or pmemobj could hand them out */
	for (uint32_t i = 0; i < g->nruns; i++) {
		size_t k = obj_find(o, n, g->runs[i].off);
		if (k == SIZE_MAX || o[k].size < g->runs[i].off - o[k].off ||
		    o[k].size - (g->runs[i].off - o[k].off) < g->runs[i].len) {
			problem("data run %u [%" PRIu64 ", +%" PRIu64 ") is not inside an allocated object",
				i, g->runs[i].off, g->runs[i].len);
			continue;
		}
		if (o[k].used == 1)
			problem("data run %u [%" PRIu64 ", +%" PRIu64 ") overlaps referenced metadata",
				i, g->runs[i].off, g->runs[i].len);
		o[k].used = 2;
	}
	for (size_t k = 0; k < n; k++)
		if (o[k].used != 2)
			F.meta_bytes += o[k].size;
	/* leaks: meaningful only if every structure could be followed */
	if (!F.incomplete) {
		F.leak_checked = true;
		for (size_t k = 0; k < n; k++) {
			if (o[k].used)
				continue;
			if (F.n_leaks++ < LEAKS_SHOWN)
				problem("metadata: object at offset %" PRIu64 " (%" PRIu64 " bytes) is allocated"
					" but not referenced", o[k].off, o[k].size);
		}
		if (F.n_leaks > LEAKS_SHOWN)
			problem("metadata: %" PRIu64 " more unreferenced objects", F.n_leaks - LEAKS_SHOWN);
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

static void summary(uint64_t used_blocks, uint64_t capacity)
{
	const struct pmfuse_super *sb = F.p->sb;
	const struct pmfuse_geometry *g = &sb->geo;
	const uint8_t *u = g->uuid;

	printf("%s: pmfuse version %u, label \"%s\", uuid "
	       "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n",
	       F.region, g->version, g->label, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
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
	       F.n_used, F.max_inodes - 1, F.n_dir, F.n_reg, F.n_lnk, F.n_other, F.n_bad);
	printf("  orphans: %" PRIu64 " (deleted files still open at the last session's end;"
	       " reclaimed at the next mount)\n", F.n_orphan);
	printf("  blocks (4 KiB): %" PRIu64 " used, %" PRIu64 " free, %" PRIu64 " total;"
	       " %" PRIu64 " claimed more than once\n", used_blocks,
	       capacity > used_blocks ? capacity - used_blocks : 0, capacity, F.ndup);
	printf("  metadata: %" PRIu64 " objects referenced (%" PRIu64 " file map nodes)",
	       (uint64_t)F.nrefs, F.n_mapnodes);
	if (heap_broken || !F.n_objects)
		printf("; pmemobj heap not walked\n");
	else if (F.leak_checked)
		printf(", %" PRIu64 " allocated, %" PRIu64 " unreferenced\n", F.n_objects, F.n_leaks);
	else
		printf(", %" PRIu64 " allocated; leak check skipped (damaged structures)\n",
		       F.n_objects);
	if (!heap_broken && F.n_objects)
		printf("  metadata space: %" PRIu64 " KiB in objects outside the data runs"
		       " (reserve at mkfs: %" PRIu64 " KiB)\n", F.meta_bytes >> 10,
		       g->meta_reserve >> 10);
	if (!F.root_ok)
		printf("  reachability not checked: no valid root directory\n");
	if (F.used_backup)
		printf("  checked with the backup superblock: the primary is damaged\n");
	if (F.shared_open)
		printf("  opened without copy-on-write (device DAX, or an old libpmemobj): libpmemobj"
		       " updated its own open bookkeeping (run id, lanes) in the region\n");
}

/* ------------------------------------------------------------------ */
/* opening */

/* pmemobj_open() replays logs and boots the heap: slow on a big pool, endless on a bad one */
static int guarded_pool_open(char *why, size_t whylen)
{
	struct sigaction al = { .sa_handler = on_alarm };
	int ret;

	if (F.guarded) {
		sigaction(SIGALRM, &al, NULL);
		alarm(OPEN_WATCHDOG_SEC);
	}
	in_pmemobj = 1;
	ret = pool_open(&F.pool, F.region, why, whylen);
	if (F.guarded)
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
static struct pmfuse_super backup_sb;

static int open_damaged(const char *why_open)
{
	char why[POOL_WHY];
	int64_t size = pool_region_size(F.region, why, sizeof(why));
	PMEMobjpool *pop;
	PMEMoid root;
	const struct pmfuse_super *sb;
	const struct pmfuse_geometry *b = NULL;
	struct pmfuse_geometry g;
	uint64_t root_off;

	/* pmemobj_open() must not see a pool whose own structures are damaged */
	if (size < (int64_t)PMFUSE_MIN_REGION ||
	    pool_precheck_pmemobj(F.region, (uint64_t)size, &root_off, why, sizeof(why)))
		goto not_pmfuse;
	in_pmemobj = 1;
	if (F.guarded)
		alarm(OPEN_WATCHDOG_SEC);
	pop = pmemobj_open(F.region, PMFUSE_LAYOUT);
	if (F.guarded)
		alarm(0);
	in_pmemobj = 0;
	if (!pop)
		goto not_pmfuse;
	/* as pool_open(): pmemobj_root() would reallocate a root of another size */
	if (pmemobj_root_size(pop) != sizeof(struct pmfuse_super) ||
	    OID_IS_NULL(root = pmemobj_root(pop, sizeof(struct pmfuse_super))) ||
	    root.off < 4096 || root.off > (uint64_t)size ||
	    (uint64_t)size - root.off < sizeof(struct pmfuse_super))
		goto close;
	sb = (const struct pmfuse_super *)((const char *)pop + root.off);
	if (sb->geo.magic != PMFUSE_MAGIC)
		goto close;

	F.sb_off = root.off;
	F.pool.pop = pop;
	F.pool.base = (char *)pop;
	F.pool.size = (uint64_t)size;
	F.opened = true;
	if (mprotect(F.pool.base, F.pool.size, PROT_READ) == 0)
		F.protected = true;
	g = sb->geo;
	if (pool_check_geometry(&g, (uint64_t)size, why, sizeof(why)) == 0) {
		/* the geometry is fine: pool_open() objected to the inode table (below) */
		backup_sb = *sb;
		if (((const struct pmfuse_itable *)(F.pool.base + g.itable_off))->nchunks ==
		    g.max_inodes / PMFUSE_INODES_PER_CHUNK)
			problem("superblock: %s", why_open);	/* whatever it was */
	} else {
		problem("%s%s", strncmp(why_open, "superblock", 10) ? "superblock: " : "", why_open);
		/* the backup sits in the first block of its own run 0, at a 2 MiB boundary */
		for (uint64_t off = PMFUSE_HUGE_2M_BLOCKS * PMFUSE_BLOCK_SIZE;
		     off + PMFUSE_BLOCK_SIZE <= (uint64_t)size;
		     off += PMFUSE_HUGE_2M_BLOCKS * PMFUSE_BLOCK_SIZE) {
			const struct pmfuse_geometry *c = (const void *)(F.pool.base + off);
			if (c->magic != PMFUSE_BACKUP_MAGIC || c->checksum != pool_geometry_checksum(c))
				continue;
			g = *c;
			g.magic = PMFUSE_MAGIC;
			g.checksum = pool_geometry_checksum(&g);
			if (g.runs[0].off == off &&
			    !pool_check_geometry(&g, (uint64_t)size, why, sizeof(why))) {
				b = c;
				break;
			}
		}
		if (!b) {
			problem("superblock: no intact backup superblock found; nothing more can be checked");
			return FSCK_UNCORRECTED;
		}
		backup_sb = *sb;	/* the mutable part (state, orphan list) */
		backup_sb.geo = g;
		printf("%s: the backup superblock at offset %" PRIu64 " is intact; checking with it\n",
		       F.region, pool_off(&F.pool, b));
		F.used_backup = true;
	}
	F.pool.sb = &backup_sb;
	F.pool.itable = (struct pmfuse_itable *)(F.pool.base + g.itable_off);
	/* pool_check_geometry() made sure the pool holds max_inodes / 64 chunk offsets */
	if (F.pool.itable->nchunks != g.max_inodes / PMFUSE_INODES_PER_CHUNK)
		problem("inode table: holds %" PRIu64 " chunks, but the superblock says %" PRIu64
			"; checking %" PRIu64, F.pool.itable->nchunks,
			g.max_inodes / PMFUSE_INODES_PER_CHUNK, g.max_inodes / PMFUSE_INODES_PER_CHUNK);
	return -1;
close:
	pmemobj_close(pop);
not_pmfuse:
	fprintf(stderr, "fsck.pmfuse: %s\n", why_open);
	return FSCK_OPERATIONAL;
}

/* Open the region read-only; returns an exit code, or -1 to go on checking. */
static int open_region(void)
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
		F.shared_open = true;	/* an old libpmemobj */
	ret = guarded_pool_open(why, sizeof(why));
	if (ret && ret != -EAGAIN && is_char_device(F.region)) {
		pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
		F.shared_open = true;
		ret = guarded_pool_open(why, sizeof(why));
	}
	if (ret == -EAGAIN) {
		fprintf(stderr, "fsck.pmfuse: %s is in use (mounted?)\n", F.region);
		return FSCK_OPERATIONAL;
	}
	if (ret == -EINVAL) {
		ret = open_damaged(why);
		if (ret >= 0)
			return ret;
	} else if (ret) {
		fprintf(stderr, "fsck.pmfuse: %s\n", why);
		return FSCK_OPERATIONAL;
	} else {
		F.opened = true;
		F.sb_off = pool_off(&F.pool, F.pool.sb);
		/* from here on nothing may write the image: make sure nothing can */
		if (mprotect(F.pool.base, F.pool.size, PROT_READ) == 0)
			F.protected = true;
	}
	F.p = &F.pool;
	return -1;
}

/* Everything a check leaves behind, so the next one (in-process) starts afresh. */
static void reset_state(void)
{
	int zero = 0;

	free(F.chunk_ok);
	free(F.st);
	free(F.nref);
	free(F.bmap);
	free(F.dmap);
	free(F.refs);
	free(F.names);
	free(F.queue);
	free(heap_objs);
	memset(&F, 0, sizeof(F));
	heap_objs = NULL;
	heap_n = 0;
	heap_broken = false;
	memset(&backup_sb, 0, sizeof(backup_sb));
	in_pmemobj = 0;
	/* open_region() turned it on for every later open in this process */
	pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
}

int fsck_check(const char *region, bool verbose, bool guarded)
{
	int ret;

	reset_state();
	F.region = region;
	F.verbose = verbose;
	F.guarded = guarded;
	if (guarded) {
		/* libpmemobj crashing on its own damaged structures: an operational error */
		struct sigaction sa = { .sa_handler = on_fault };
		sigaction(SIGBUS, &sa, NULL);
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGABRT, &sa, NULL);
		sigaction(SIGFPE, &sa, NULL);
		sigaction(SIGILL, &sa, NULL);
	}
	ret = open_region();
	if (ret >= 0) {
		if (ret == FSCK_UNCORRECTED)
			printf("%s: %" PRIu64 " problem(s) found, not repaired\n", F.region, F.problems);
		fflush(stdout);
		cleanup();
		reset_state();
		return ret;
	}

	F.max_inodes = F.p->sb->geo.max_inodes;
	F.nchunks = F.max_inodes / PMFUSE_INODES_PER_CHUNK;	/* == itable->nchunks, or reported */
	F.chunk_ok = xcalloc(F.nchunks, 1);
	F.st = xcalloc(F.max_inodes, 1);
	F.nref = xcalloc(F.max_inodes, sizeof(uint32_t));
	F.nblocks = F.p->size >> PMFUSE_BLOCK_SHIFT;
	F.nwords = (F.nblocks + 63) / 64;
	F.bmap = xcalloc(F.nwords, sizeof(uint64_t));
	F.dmap = xcalloc(F.nwords, sizeof(uint64_t));
	F.namegen = 1;

	check_super();
	check_itable();
	check_inodes();
	check_orphan_list();
	check_reachability();
	check_links();
	check_dups();
	check_objects();

	uint64_t used_blocks = 0;
	for (uint64_t w = 0; w < F.nwords; w++)
		used_blocks += popcount(F.bmap[w]);
	uint64_t capacity = pool_data_blocks(F.p) - 1;	/* the backup block */
	if (used_blocks > capacity)
		problem("blocks: %" PRIu64 " in use, but the data area holds only %" PRIu64,
			used_blocks, capacity);

	if (F.verbose)
		summary(used_blocks, capacity);
	if (F.problems)
		printf("%s: %" PRIu64 " problem(s) found, not repaired\n", F.region, F.problems);
	else
		printf("%s: clean, %" PRIu64 "/%" PRIu64 " inodes, %" PRIu64 "/%" PRIu64 " blocks\n",
		       F.region, F.n_used, F.max_inodes - 1, used_blocks, capacity);
	fflush(stdout);
	cleanup();
	ret = F.problems ? FSCK_UNCORRECTED : FSCK_OK;
	reset_state();
	return ret;
}

#ifndef PMFUSE_FSCK_NO_MAIN
static void usage(FILE *f)
{
	fprintf(f, "usage: fsck.pmfuse [-n] [-v] [-f] REGION\n"
		   "  -n  check only, change nothing (the default)\n"
		   "  -f  check even if the region looks clean (always done)\n"
		   "  -v  print a summary of the region\n"
		   "  -y, -p, -a  accepted; repair is not available in this version\n"
		   "exit status: 0 clean, 4 errors found, 8 operational error, 16 usage error\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	bool repair = false, verbose = false;
	int c;

	while ((c = getopt_long(argc, argv, "nvfypahV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': case 'f': break;
		case 'v': verbose = true; break;
		case 'y': case 'p': case 'a': repair = true; break;
		case 'h': usage(stdout); return FSCK_OK;
		case 'V': printf("fsck.pmfuse %s\n", PMFUSE_VERSION_STRING); return FSCK_OK;
		default: usage(stderr); return FSCK_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "fsck.pmfuse: %s\n", optind < argc ? "only one region can be checked"
								    : "no region given");
		usage(stderr);
		return FSCK_USAGE;
	}
	if (repair)
		fprintf(stderr, "fsck.pmfuse: repair not available in this version; checking only\n");

	return fsck_check(argv[optind], verbose, true);
}
#endif
