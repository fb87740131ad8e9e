/*
 * fsck passes 5 and 6: blocks claimed twice (named by owner), metadata against the pmemobj heap.
 */
#include "check.h"

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

static int dup_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n,
		    bool unwritten)
{
	struct dup_ctx *dc = ctx;
	struct fsck *f = dc->f;
	uint64_t end = phys + n;

	(void)fblock;
	(void)unwritten;
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

void check_dups(struct fsck *f)
{
	if (!f->ndup)
		return;
	if (f->ndup <= DUP_NAME_MAX) {
		f->dupcap = 1;
		while (f->dupcap < 2 * f->ndup)
			f->dupcap *= 2;
		f->dups = calloc(f->dupcap, sizeof(*f->dups));	/* without it: unnamed owners */
	}
	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes; ino = next_ino(f, ino)) {
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


void on_alarm(int sig)
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

/*
 * Format 2: the piece table is an object of its own, and each piece is the
 * allocation it names, holding its data (pool_pieces_load() checked the
 * entries' shape and that pieces do not overlap).
 */
static void check_piece_objects(struct fsck *f, struct obj *o, size_t n)
{
	const struct pmfuse_pieces *t = f->p->ptab;
	size_t k;

	if (!t)
		return;
	k = obj_find(o, n, f->p->sb->pieces_off);
	if (k == SIZE_MAX || o[k].off != f->p->sb->pieces_off ||
	    o[k].size < sizeof(*t) + t->cap * sizeof(t->p[0]))
		problem(f, "piece table at offset %" PRIu64 " is not an allocated object of its size",
			f->p->sb->pieces_off);
	else if (o[k].used)
		problem(f, "piece table at offset %" PRIu64 " is also referenced as other metadata",
			f->p->sb->pieces_off);
	else
		o[k].used = 1;
	for (uint64_t i = 0; i < t->count; i++) {
		const struct pmfuse_piece *e = &t->p[i];
		k = obj_find(o, n, e->obj);
		if (k == SIZE_MAX || o[k].off != e->obj || o[k].size < e->off + e->len - e->obj) {
			problem(f, "data piece %" PRIu64 " [%" PRIu64 ", +%" PRIu64 ") is not an allocated"
				" object that holds it", i, e->off, e->len);
			continue;
		}
		if (o[k].used)
			problem(f, "data piece %" PRIu64 " [%" PRIu64 ", +%" PRIu64 ") overlaps referenced"
				" metadata", i, e->off, e->len);
		o[k].used = 2;
	}
}

/* The clean-unmount record (format 3) is an object of its own. */
static void check_record_object(struct fsck *f, struct obj *o, size_t n)
{
	uint64_t off = f->p->sb->record_off;
	size_t k;

	if (!off)
		return;
	k = obj_find(o, n, off);
	if (k == SIZE_MAX || o[k].off != off || o[k].size < sizeof(struct pmfuse_record)) {
		problem(f, "clean-unmount record at offset %" PRIu64 " is not an allocated object",
			off);
		f->record_bad = true;
	} else if (o[k].used) {
		problem(f, "clean-unmount record at offset %" PRIu64 " is also referenced as other "
			"metadata", off);
		f->record_bad = true;
	} else {
		o[k].used = 1;
		f->record_obj = true;
	}
}

/*
 * The record against what this check found: inode numbers in use and the
 * blocks of the data pieces, exactly (record.c's comparison, over the core
 * attached to this check's findings).  Only when everything else is sound:
 * a repair drops the record anyway.
 */
void check_record(struct fsck *f)
{
	char why[POOL_WHY];
	struct fs *fs;
	int ret;

	if (!f->p->sb->record_off || f->record_bad || f->problems || f->incomplete)
		return;
	if (fs_attach(&fs, f->p, claim_checked_blocks, chunk_checked_ok, f, why, sizeof(why))) {
		problem(f, "clean-unmount record: cannot compare it (%s)", why);
		f->record_bad = true;
		return;
	}
	ret = record_check(fs, false, why, sizeof(why));
	fs_detach(fs);
	/* -ENOENT: unused (the mount rebuilds and drops it), not damaged */
	if (ret == -EUCLEAN)
		problem(f, "clean-unmount record is damaged or disagrees with the file maps: %s",
			why);
	f->record_bad = ret == -EUCLEAN;
}

void check_objects(struct fsck *f)
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
	check_piece_objects(f, o, n);
	check_record_object(f, o, n);
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

void summary(struct fsck *f, uint64_t used_blocks, uint64_t capacity)
{
	const struct pmfuse_super *sb = f->p->sb;
	const struct pmfuse_geometry *g = &sb->geo;
	const uint8_t *u = g->uuid;

	printf("%s: pmfuse version %u, label \"%s\", uuid "
	       "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n",
	       f->region, g->version, g->label, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
	       u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	printf("  region %" PRIu64 " bytes, %u permanent data run(s), %" PRIu64 " data piece(s),",
	       g->region_size, g->nruns, f->p->ptab ? f->p->ptab->count : 0);
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
		printf("  metadata space: %" PRIu64 " KiB in objects outside the data area"
		       " (%s: %" PRIu64 " KiB)\n", f->meta_bytes >> 10,
		       g->version < 2 ? "reserve at mkfs" : "headroom data growth leaves",
		       g->meta_reserve >> 10);
	if (!f->root_ok)
		printf("  reachability not checked: no valid root directory\n");
	if (f->used_backup)
		printf("  checked with the backup superblock: the primary is damaged\n");
	if (f->shared_open)
		printf("  opened without copy-on-write (device DAX, or an old libpmemobj): libpmemobj"
		       " updated its own open bookkeeping (run id, lanes) in the region\n");
}
