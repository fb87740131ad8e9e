/*
 * dir: persistent dirent slots and their DRAM hash index (see dir.h).
 */
#include "dir.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOMB 1u

uint64_t dir_hash(const char *name, size_t len)
{
	uint64_t h = pmfuse_fnv1a(name, len, PMFUSE_FNV_INIT);
	return h < 2 ? h + 2 : h;
}

static struct pmfuse_dirtab *dirtab(struct fs *fs, const struct pmfuse_inode *pi)
{
	return pi->dir_off ? pool_ptr(&fs->pool, pi->dir_off) : NULL;
}

bool dir_tab_ok(const struct pool *p, const struct pmfuse_inode *pi)
{
	const struct pmfuse_dirtab *t;

	if (!pi->dir_off)
		return true;
	t = pool_ptr(p, pi->dir_off);
	return t->nchunks <= t->cap && t->cap < (1u << 26) &&
	       pool_struct_ok(p, pi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t));
}

int dir_claim_objects(const struct pool *p, struct pool_objects *po,
		      const struct pmfuse_inode *pi)
{
	const struct pmfuse_dirtab *t = pool_ptr(p, pi->dir_off);

	if (!pi->dir_off)
		return 0;
	if (!dir_tab_ok(p, pi) ||
	    !pool_objects_claim(po, pi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t)))
		return -EUCLEAN;
	for (uint64_t c = 0; c < t->nchunks; c++) {
		const struct pmfuse_dirchunk *ch;
		/* no pointer to it before it is known to be in the pool */
		if (!pool_struct_ok(p, t->chunk[c], sizeof(*ch)) ||
		    !pool_objects_claim(po, t->chunk[c], sizeof(*ch)))
			return -EUCLEAN;
		ch = pool_ptr(p, t->chunk[c]);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++) {
			const struct pmfuse_dirent *de = &ch->ent[i];
			if (de->ino && de->name_len > PMFUSE_INLINE_NAME &&
			    !pool_objects_claim(po, de->name_off, de->name_len))
				return -EUCLEAN;
		}
	}
	return 0;
}

struct pmfuse_dirent *dir_slot(struct fs *fs, struct inode *dir, uint32_t slot)
{
	struct pmfuse_dirtab *t = dirtab(fs, dir->pi);
	uint64_t c = slot / PMFUSE_DIRENTS_PER_CHUNK, off;

	if (!t || c >= t->nchunks)
		return NULL;
	off = t->chunk[c];
	if (!pool_struct_ok(&fs->pool, off, sizeof(struct pmfuse_dirchunk)))
		return NULL;
	return &((struct pmfuse_dirchunk *)pool_ptr(&fs->pool, off))->ent[slot % PMFUSE_DIRENTS_PER_CHUNK];
}

const char *dir_dirent_name(const struct pool *p, const struct pmfuse_dirent *de)
{
	return de->name_len > PMFUSE_INLINE_NAME ? pool_ptr(p, de->name_off) : de->name;
}

int dir_validate_dirent(const struct pool *p, const struct pmfuse_dirent *de,
			char *why, size_t whylen)
{
	if (de->name_len == 0 || de->name_len > PMFUSE_NAME_MAX ||
	    de->ino >= p->sb->geo.max_inodes) {
		snprintf(why, whylen, "dirent for inode %" PRIu64 ": bad name length %u or inode",
			 de->ino, de->name_len);
		return -EUCLEAN;
	}
	if (de->name_len > PMFUSE_INLINE_NAME && !pool_meta_range_ok(p, de->name_off, de->name_len)) {
		snprintf(why, whylen, "dirent for inode %" PRIu64 ": name pointer out of range", de->ino);
		return -EUCLEAN;
	}
	const char *n = dir_dirent_name(p, de);
	if (memchr(n, '/', de->name_len) || memchr(n, '\0', de->name_len) ||
	    (de->name_len == 1 && n[0] == '.') ||
	    (de->name_len == 2 && n[0] == '.' && n[1] == '.')) {
		snprintf(why, whylen, "dirent for inode %" PRIu64 ": invalid name", de->ino);
		return -EUCLEAN;
	}
	if (de->hash != dir_hash(n, de->name_len)) {
		snprintf(why, whylen, "dirent for inode %" PRIu64 ": name hash mismatch", de->ino);
		return -EUCLEAN;
	}
	return 0;
}

static int index_resize(struct dir_index *ix, size_t cap)
{
	uint64_t *oh = ix->hash;
	uint32_t *os = ix->slot;
	size_t ocap = ix->cap;

	ix->hash = calloc(cap, sizeof(uint64_t));
	ix->slot = malloc(cap * sizeof(uint32_t));
	if (!ix->hash || !ix->slot) {
		free(ix->hash);
		free(ix->slot);
		ix->hash = oh;
		ix->slot = os;
		return -ENOMEM;
	}
	ix->cap = cap;
	ix->used = ix->tombs = 0;
	for (size_t i = 0; i < ocap; i++) {
		if (oh[i] < 2)
			continue;
		size_t j = oh[i] & (cap - 1);
		while (ix->hash[j])
			j = (j + 1) & (cap - 1);
		ix->hash[j] = oh[i];
		ix->slot[j] = os[i];
		ix->used++;
	}
	free(oh);
	free(os);
	return 0;
}

static int index_add(struct dir_index *ix, uint64_t h, uint32_t slot)
{
	if ((ix->used + ix->tombs + 1) * 10 > ix->cap * 7) {
		size_t cap = ix->cap ? ix->cap : 16;
		while ((ix->used + 1) * 10 > cap * 5)
			cap *= 2;
		if (index_resize(ix, cap))
			return -ENOMEM;
	}
	size_t j = h & (ix->cap - 1);
	while (ix->hash[j] >= 2)
		j = (j + 1) & (ix->cap - 1);
	if (ix->hash[j] == TOMB)
		ix->tombs--;
	ix->hash[j] = h;
	ix->slot[j] = slot;
	ix->used++;
	return 0;
}

static void index_del(struct dir_index *ix, uint64_t h, uint32_t slot)
{
	if (!ix->cap)
		return;
	for (size_t j = h & (ix->cap - 1); ix->hash[j]; j = (j + 1) & (ix->cap - 1))
		if (ix->hash[j] == h && ix->slot[j] == slot) {
			ix->hash[j] = TOMB;
			ix->used--;
			ix->tombs++;
			return;
		}
}

static int free_push(struct dir_index *ix, uint32_t slot)
{
	if (ix->nfree == ix->free_cap) {
		size_t cap = ix->free_cap ? ix->free_cap * 2 : 64;
		uint32_t *n = realloc(ix->free_slots, cap * sizeof(uint32_t));
		if (!n)
			return -ENOMEM;
		ix->free_slots = n;
		ix->free_cap = cap;
	}
	ix->free_slots[ix->nfree++] = slot;
	return 0;
}

void dir_index_free(struct inode *in)
{
	struct dir_index *ix = in->dir;

	if (!ix)
		return;
	free(ix->hash);
	free(ix->slot);
	free(ix->free_slots);
	free(ix);
	in->dir = NULL;
}

int dir_index_build(struct fs *fs, struct inode *dir)
{
	struct pmfuse_dirtab *t;
	struct dir_index *ix;
	char why[POOL_WHY];
	int ret = 0;

	if (dir->dir)
		return 0;
	if (!dir_tab_ok(&fs->pool, dir->pi))
		return -EUCLEAN;
	ix = calloc(1, sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	t = dirtab(fs, dir->pi);
	/* lowest slots are handed out first: push in reverse */
	for (uint64_t c = t ? t->nchunks : 0; c-- > 0;) {
		if (!pool_struct_ok(&fs->pool, t->chunk[c], sizeof(struct pmfuse_dirchunk))) {
			ret = -EUCLEAN;
			goto fail;
		}
		struct pmfuse_dirchunk *ch = pool_ptr(&fs->pool, t->chunk[c]);
		for (unsigned i = PMFUSE_DIRENTS_PER_CHUNK; i-- > 0;) {
			struct pmfuse_dirent *de = &ch->ent[i];
			uint32_t slot = (uint32_t)(c * PMFUSE_DIRENTS_PER_CHUNK + i);
			if (!de->ino) {
				ret = free_push(ix, slot);
			} else {
				ret = dir_validate_dirent(&fs->pool, de, why, sizeof(why));
				if (!ret)
					ret = index_add(ix, de->hash, slot);
			}
			if (ret)
				goto fail;
		}
	}
	dir->dir = ix;
	return 0;
fail:
	dir->dir = ix;
	dir_index_free(dir);
	return ret;
}

int dir_lock_shared(struct fs *fs, struct inode *dir)
{
	int ret;

	pthread_rwlock_rdlock(&dir->lock);
	if (dir->dir)
		return 0;
	pthread_rwlock_unlock(&dir->lock);
	pthread_rwlock_wrlock(&dir->lock);
	ret = dir_index_build(fs, dir);
	pthread_rwlock_unlock(&dir->lock);
	if (ret)
		return ret;
	pthread_rwlock_rdlock(&dir->lock);
	return 0;
}

int dir_lock_excl(struct fs *fs, struct inode *dir)
{
	int ret;

	pthread_rwlock_wrlock(&dir->lock);
	ret = dir_index_build(fs, dir);
	if (ret)
		pthread_rwlock_unlock(&dir->lock);
	return ret;
}

struct pmfuse_dirent *dir_find(struct fs *fs, struct inode *dir, const char *name,
			       size_t len, uint32_t *slot, int *err)
{
	struct dir_index *ix = dir->dir;
	uint64_t h = dir_hash(name, len);

	*err = -ENOENT;
	if (!ix || !ix->cap)
		return NULL;
	for (size_t j = h & (ix->cap - 1); ix->hash[j]; j = (j + 1) & (ix->cap - 1)) {
		if (ix->hash[j] != h)
			continue;
		struct pmfuse_dirent *de = dir_slot(fs, dir, ix->slot[j]);
		if (!de) {
			*err = -EUCLEAN;
			return NULL;
		}
		if (de->name_len == len && memcmp(dir_dirent_name(&fs->pool, de), name, len) == 0) {
			*slot = ix->slot[j];
			*err = 0;
			return de;
		}
	}
	return NULL;
}

/* Append a chunk to the directory table (in a transaction). */
static int tx_add_chunk(struct fs *fs, struct inode *dir, uint32_t *first_slot)
{
	struct pmfuse_inode *pi = dir->pi;
	struct pmfuse_dirtab *t = dirtab(fs, pi);
	bool fresh = false;

	if (!t || t->nchunks == t->cap) {
		uint64_t cap = t ? t->cap * 2 : 4;
		if (cap * PMFUSE_DIRENTS_PER_CHUNK > UINT32_MAX / 2)
			return -ENOSPC;
		PMEMoid oid = pool_tx_zalloc(sizeof(*t) + cap * sizeof(uint64_t));
		struct pmfuse_dirtab *nt = pool_ptr(&fs->pool, oid.off);
		nt->cap = cap;
		if (t) {
			nt->nchunks = t->nchunks;
			memcpy(nt->chunk, t->chunk, t->nchunks * sizeof(uint64_t));
			pmemobj_tx_free(pmemobj_oid(t));
		}
		pmemobj_tx_add_range_direct(&pi->dir_off, sizeof(pi->dir_off));
		pi->dir_off = oid.off;
		t = nt;
		fresh = true;
	}
	PMEMoid ch = pool_tx_zalloc(sizeof(struct pmfuse_dirchunk));
	if (!fresh)
		pmemobj_tx_add_range_direct(t, sizeof(*t) + (t->nchunks + 1) * sizeof(uint64_t));
	t->chunk[t->nchunks] = ch.off;
	*first_slot = (uint32_t)(t->nchunks * PMFUSE_DIRENTS_PER_CHUNK);
	t->nchunks++;
	return 0;
}

int dir_tx_insert(struct fs *fs, struct inode *dir, const char *name, size_t len,
		  uint64_t ino, unsigned type, struct dir_pending *pd)
{
	struct dir_index *ix = dir->dir;
	struct pmfuse_dirent *de;
	int ret;

	pd->hash = dir_hash(name, len);
	pd->new_chunk = false;
	pd->popped = false;
	if (ix->nfree) {
		/* popped before anything can abort; dir_insert_done() pushes back */
		pd->slot = ix->free_slots[--ix->nfree];
		pd->popped = true;
	} else {
		ret = tx_add_chunk(fs, dir, &pd->slot);
		if (ret)
			return ret;
		pd->new_chunk = true;
	}
	de = dir_slot(fs, dir, pd->slot);
	if (!de)
		return -EUCLEAN;
	if (!pd->new_chunk)
		pmemobj_tx_add_range_direct(de, sizeof(*de));
	memset(de, 0, sizeof(*de));
	de->ino = ino;
	de->hash = pd->hash;
	de->name_len = (uint16_t)len;
	de->type = (uint8_t)type;
	if (len > PMFUSE_INLINE_NAME) {
		PMEMoid n = pool_tx_alloc(len);
		memcpy(pool_ptr(&fs->pool, n.off), name, len);
		de->name_off = n.off;
	} else {
		memcpy(de->name, name, len);
	}
	pmemobj_tx_add_range_direct(&dir->pi->nentries, sizeof(dir->pi->nentries));
	dir->pi->nentries++;
	return 0;
}

void dir_insert_done(struct inode *dir, struct dir_pending *pd, bool committed)
{
	struct dir_index *ix = dir->dir;

	if (!committed) {
		if (pd->popped)
			ix->nfree++;	/* the slot is still on top of the stack */
		return;
	}
	if (pd->new_chunk)
		for (uint32_t i = PMFUSE_DIRENTS_PER_CHUNK; i-- > 1;)
			free_push(ix, pd->slot + i);
	if (index_add(ix, pd->hash, pd->slot))
		dir_index_free(dir);	/* out of memory: rebuild on next use */
}

void dir_tx_remove(struct fs *fs, struct inode *dir, uint32_t slot)
{
	struct pmfuse_dirent *de = dir_slot(fs, dir, slot);

	pmemobj_tx_add_range_direct(de, sizeof(*de));
	if (de->name_len > PMFUSE_INLINE_NAME)
		pmemobj_tx_free(pmemobj_oid(pool_ptr(&fs->pool, de->name_off)));
	memset(de, 0, sizeof(*de));
	pmemobj_tx_add_range_direct(&dir->pi->nentries, sizeof(dir->pi->nentries));
	dir->pi->nentries--;
}

void dir_remove_done(struct inode *dir, uint32_t slot, uint64_t hash, bool committed)
{
	if (!committed || !dir->dir)
		return;
	index_del(dir->dir, hash, slot);
	if (free_push(dir->dir, slot))
		dir_index_free(dir);
}

void dir_tx_retarget(struct pmfuse_dirent *de, uint64_t ino, unsigned type)
{
	pmemobj_tx_add_range_direct(&de->ino, PMFUSE_DIRENT_TARGET_SPAN);
	de->ino = ino;
	de->type = (uint8_t)type;
}

void dir_tx_destroy(struct fs *fs, struct pmfuse_inode *pi)
{
	struct pmfuse_dirtab *t = dirtab(fs, pi);

	if (!t || !dir_tab_ok(&fs->pool, pi))
		return;
	for (uint64_t c = 0; c < t->nchunks; c++) {
		if (!pool_struct_ok(&fs->pool, t->chunk[c], sizeof(struct pmfuse_dirchunk)))
			continue;
		struct pmfuse_dirchunk *ch = pool_ptr(&fs->pool, t->chunk[c]);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++)
			if (ch->ent[i].ino && ch->ent[i].name_len > PMFUSE_INLINE_NAME)
				pmemobj_tx_free(pmemobj_oid(pool_ptr(&fs->pool, ch->ent[i].name_off)));
		pmemobj_tx_free(pmemobj_oid(ch));
	}
	pmemobj_tx_free(pmemobj_oid(t));
	pmemobj_tx_add_range_direct(&pi->dir_off, sizeof(pi->dir_off));
	pi->dir_off = 0;
}

int fs_readdir(struct fs *fs, uint64_t ino, int64_t off, fs_dirent_fn fn, void *ctx)
{
	struct inode *dir = inode_get(fs, ino);
	struct pmfuse_dirtab *t;
	int ret = 0;

	if (!dir)
		return -ENOENT;
	if (!S_ISDIR(dir->pi->mode)) {
		inode_put(fs, dir);
		return -ENOTDIR;
	}
	ret = dir_lock_shared(fs, dir);
	if (ret)
		goto out;
	if (off < 1 && fn(ctx, ".", 1, ino, DT_DIR, 1))
		goto unlock;
	if (off < 2 && fn(ctx, "..", 2, dir->pi->parent, DT_DIR, 2))
		goto unlock;
	t = dirtab(fs, dir->pi);
	uint64_t nslots = t ? t->nchunks * PMFUSE_DIRENTS_PER_CHUNK : 0;
	for (uint64_t s = off > 2 ? (uint64_t)off - 2 : 0; s < nslots; s++) {
		struct pmfuse_dirent *de = dir_slot(fs, dir, (uint32_t)s);
		if (!de) {
			ret = -EIO;
			break;
		}
		if (!de->ino)
			continue;
		if (fn(ctx, dir_dirent_name(&fs->pool, de), de->name_len, de->ino, de->type,
		       (int64_t)s + 3))
			break;
	}
unlock:
	pthread_rwlock_unlock(&dir->lock);
out:
	inode_put(fs, dir);
	return ret;
}
