/*
 * check.h: the inside of fsck.pmfuse -- the check's context (struct fsck)
 * and what its files share.  mkfs/fsck.h is the checker's public face.
 *
 *   common.c   output, failure and signals; records, metadata ownership,
 *              the block bitmap
 *   super.c    pass 1 superblock, pass 2 inode table
 *   files.c    pass 3 files, symlinks, xattrs, directories
 *   links.c    pass 4 orphan list, reachability, link counts
 *   space.c    pass 5 blocks claimed twice, pass 6 objects against the heap
 *   open.c     opening the region, one check, fsck_check()
 *   repair.c   the repairs, in rounds
 *   main.c     the program
 */
#ifndef PMFUSE_FSCK_CHECK_H
#define PMFUSE_FSCK_CHECK_H

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

enum fix { FX_ORPHANS = 1, FX_DANGLING, FX_RECLAIM, FX_REATTACH, FX_COUNTS, FX_LEAK, FX_STATE,
	   FX_HWM, FX_RECORD };

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
	uint64_t ino_end;	/* past the last inode chunk pass 2 could read */
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
	/* bmap words [bmap_lo, bmap_hi) hold every mark: scans cost what is used */
	uint64_t bmap_lo, bmap_hi;
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
	uint64_t fs_blocks;	/* what statfs reports (formats 2, 3: grows into the region) */
	bool leak_checked;
	bool used_backup;	/* the primary geometry was damaged */
	bool degraded;		/* pool_open() refused it: checked, never repaired */
	uint64_t sb_off;	/* the primary superblock (root object) */
	bool shared_open;	/* device DAX: libpmemobj's open bookkeeping is written */
	bool guarded;		/* watchdog timers on libpmemobj (the program, not in-process callers) */

	/* for the repairs */
	bool orphan_bad;	/* the orphan list is not exactly the set of orphans */
	bool state_bad;		/* superblock state neither CLEAN nor MOUNTED */
	uint64_t hwm_want;	/* format 3: the inode table high-water mark it should have,
				 * when it has another (0: right) */
	uint64_t lf_ino;	/* root entry "lost+found", 0 = none */
	bool record_obj;	/* sb->record_off is an allocated object, the record's alone */
	bool record_bad;	/* the clean-unmount record is unusable or disagrees */
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
 * What cannot be handed a context, so lives in common.c: the check running
 * in this process (for fatal exits and the heap walk's watchdog), the heap
 * walk's jump buffer, and the flags signal handlers read and set:
 *   in_pmemobj        1 inside pmemobj_open(), 2 inside the heap walk: a
 *                     fault there is libpmemobj's on damaged pool structures
 *   cancel_requested  SIGINT/SIGTERM while repairing: stop between transactions
 *   repairing, asking, changed   what a cancel must know to exit correctly
 */
extern struct fsck *active;
extern sigjmp_buf heap_jmp;
extern volatile sig_atomic_t in_pmemobj;
extern volatile sig_atomic_t cancel_requested, repairing, asking, changed;


#define OPEN_WATCHDOG_SEC 120	/* pool_open() */
#define HEAP_WATCHDOG_SEC 15	/* no progress walking the heap */
#define ESC_MAX (4 * PMFUSE_NAME_MAX + 8)	/* a name through esc() */

/* A directory entry, to dir_foreach()'s callback. */
typedef void (*dirent_fn)(void *ctx, uint64_t slot, const struct pmfuse_dirent *de);

/* common.c */
void cleanup(struct fsck *f);
const char *describe(const struct ref *r, bool as_owner, char *buf, size_t len);
const char *esc(const char *s, size_t n, char *out, size_t outlen);
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
struct pmfuse_inode *good(struct fsck *f, uint64_t ino);
uint64_t next_ino(const struct fsck *f, uint64_t ino);
void mark_blocks(struct fsck *f, uint64_t phys, uint64_t n);
void on_fault(int sig);
/* on_fault() for every fault signal: libpmemobj's crashes become exit code 8. */
void install_fault_handlers(void);
/* "REGION is in use": the exit code for it. */
int refuse_in_use(const struct fsck *f);
uint64_t popcount(uint64_t w);
void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct pmfuse_inode *rec(struct fsck *f, uint64_t ino);
bool ref_add(struct fsck *f, uint64_t off, uint64_t len, uint8_t kind, uint64_t owner);
uint64_t ref_inode(const struct ref *r);
void say(const char *msg);
void sicken(struct fsck *f, uint64_t ino);
const char *type_name(uint32_t mode);
void *xsparse(size_t bytes);
void *xcalloc(size_t n, size_t size);

/* super.c: passes 1 and 2 */
void check_itable(struct fsck *f);
void check_super(struct fsck *f);

/* files.c: pass 3 */
void check_inodes(struct fsck *f);
bool dir_foreach(struct fsck *f, uint64_t dino, const struct pmfuse_inode *dpi, bool check, dirent_fn fn, void *ctx);

/* links.c: pass 4 */
void check_links(struct fsck *f);
void check_orphan_list(struct fsck *f);
void check_reachability(struct fsck *f);

/* space.c: passes 5 and 6 */
void check_dups(struct fsck *f);
void check_objects(struct fsck *f);
void check_record(struct fsck *f);
/* for fs_attach(): the blocks the check found in use, the inode chunks it could read */
int claim_checked_blocks(void *ctx, struct alloc *a);
bool chunk_checked_ok(void *ctx, uint64_t c);
void on_alarm(int sig);
void summary(struct fsck *f, uint64_t used_blocks, uint64_t capacity);

/* open.c */
void check_free(struct fsck *f);
struct fsck *fsck_new(void);
void fsck_free(struct fsck *f);
int guarded_pool_open(struct fsck *f, char *why, size_t whylen);
int open_region(struct fsck *f);
void protect(struct fsck *f, bool read_only);
void report(struct fsck *f);
void run_check(struct fsck *f);

/* repair.c */
void on_cancel(int sig);
int repair(struct fsck *f);

#endif
