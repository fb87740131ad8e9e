/*
 * fsck pass 3: every inode's structures -- file maps, symlinks, xattrs, directories.
 */
#include "check.h"

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

static int leaf_cb(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	struct file_ctx *fc = ctx;
	struct fsck *f = fc->f;

	(void)unwritten;	/* allocated all the same */
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

/*
 * Visit the live, valid entries of a directory.  With check, damage is
 * reported and the table, chunks and long names are claimed as metadata;
 * without (the reachability walk), damage is skipped silently.  Returns
 * false if some part could not be read.
 */
bool dir_foreach(struct fsck *f, uint64_t dino, const struct pmfuse_inode *dpi, bool check,
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

void check_inodes(struct fsck *f)
{
	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes; ino = next_ino(f, ino)) {
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
