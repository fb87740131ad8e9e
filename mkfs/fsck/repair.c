/*
 * fsck: the repairs, in rounds, each one transaction of the core's own functions.
 */
#include "check.h"

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

void on_cancel(int sig)
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
static bool ask_fix(struct fsck *f, bool safe, enum fix kind, uint64_t id, const char *what);

/*
 * ... and before the first repair is made, the clean-unmount record goes:
 * it describes the region as it was (derived data, like a cache: dropping
 * it is not a repair of its own, the next mount rebuilds).
 */
static bool may_fix(struct fsck *f, bool safe, enum fix kind, uint64_t id, const char *what)
{
	if (!ask_fix(f, safe, kind, id, what))
		return false;
	if (kind != FX_RECORD && f->p->sb->record_off && record_drop(f->p, f->record_obj)) {
		printf("%s: cannot drop the clean-unmount record: no repairs\n", f->region);
		return false;
	}
	return true;
}

static bool ask_fix(struct fsck *f, bool safe, enum fix kind, uint64_t id, const char *what)
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
int claim_checked_blocks(void *ctx, struct alloc *a)
{
	struct fsck *f = ctx;

	uint64_t end = f->bmap_hi * 64 < f->nblocks ? f->bmap_hi * 64 : f->nblocks;

	/* a word at a time: a region's bitmap is mostly zero words */
	for (uint64_t b = f->bmap_lo * 64; b < end;) {
		uint64_t w = f->bmap[b >> 6] >> (b & 63);
		if (!w) {
			b = (b | 63) + 1;
			continue;
		}
		b += (uint64_t)__builtin_ctzll(w);
		if (b >= end)
			break;
		uint64_t e = b;
		while (e < end) {
			uint64_t z = ~f->bmap[e >> 6] >> (e & 63);
			if (z) {
				e += (uint64_t)__builtin_ctzll(z);
				break;
			}
			e = (e | 63) + 1;
		}
		if (e > end)
			e = end;
		alloc_claim(a, b, e - b);
		b = e;
	}
	return 0;
}

/* Damaged inode chunks give no free numbers. */
bool chunk_checked_ok(void *ctx, uint64_t c)
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

	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes; ino = next_ino(f, ino)) {
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

	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes; ino = next_ino(f, ino)) {
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
	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes && !cancel_requested;
	     ino = next_ino(f, ino)) {
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
	struct fs_cred root = { 0, 0, 0, 0 };
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
	for (uint64_t ino = next_ino(f, 1); ino < f->max_inodes && !cancel_requested;
	     ino = next_ino(f, ino)) {
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

	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes && !cancel_requested;
	     ino = next_ino(f, ino)) {
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

static int tx_set_hwm(void *arg)
{
	struct fsck *f = arg;

	pmemobj_tx_add_range_direct(&f->p->sb->ichunk_hwm, sizeof(uint64_t));
	f->p->sb->ichunk_hwm = f->hwm_want;
	return 0;
}

/* The inode table's high-water mark, set to just past its last chunk. */
static uint64_t fix_hwm(struct fsck *f)
{
	char what[160];

	if (!f->hwm_want)
		return 0;
	snprintf(what, sizeof(what), "superblock: set the inode table high-water mark to %"
		 PRIu64, f->hwm_want);
	return may_fix(f, true, FX_HWM, 0, what) &&
	       fix_done(f, FX_HWM, 0, what, pool_tx(f->p, tx_set_hwm, f));
}

/*
 * A clean-unmount record that is damaged or disagrees with the file maps
 * is dropped: the next mount rebuilds.  Freed only when the check found it
 * an object of its own.
 */
static uint64_t fix_record(struct fsck *f)
{
	const char *what = "superblock: drop the clean-unmount record (the next mount rebuilds)";

	if (!f->p->sb->record_off || !f->record_bad)
		return 0;
	return may_fix(f, true, FX_RECORD, 0, what) &&
	       fix_done(f, FX_RECORD, 0, what, record_drop(f->p, f->record_obj));
}

/*
 * One round of repairs from one check.  Repairs that change the shape of
 * the namespace or the orphan list come first; counts and leaks only from
 * a check made after the last of those (the next round), so no repair acts
 * on numbers an earlier one made stale.
 */
static uint64_t repair_round(struct fsck *f)
{
	uint64_t n = fix_record(f);

	n += fix_hwm(f);
	if (n)
		return n;	/* the core reads the table below it: check again first */
	n = fix_orphan_list(f);

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
int repair(struct fsck *f)
{
	char why[POOL_WHY];
	int zero = 0, ret;
	bool settled = false;

	repairing = 1;
	pmemobj_ctl_set(NULL, "copy_on_write.at_open", &zero);
	f->shared_open = false;
	ret = guarded_pool_open(f, why, sizeof(why));
	if (ret == -EAGAIN)
		return refuse_in_use(f);
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
