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
	    !pool_object_ok(p, po, pi->dir_off, sizeof(*t) + t->cap * sizeof(uint64_t)))
		return -EUCLEAN;
	for (uint64_t c = 0; c < t->nchunks; c++) {
		const struct pmfuse_dirchunk *ch;
		/* no pointer to it before it is known to be in the pool */
		if (!pool_struct_ok(p, t->chunk[c], sizeof(*ch)) ||
		    !pool_object_ok(p, po, t->chunk[c], sizeof(*ch)))
			return -EUCLEAN;
		ch = pool_ptr(p, t->chunk[c]);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++) {
			const struct pmfuse_dirent *de = &ch->ent[i];
			if (de->ino && de->name_len > PMFUSE_INLINE_NAME &&
			    !pool_object_ok(p, po, de->name_off, de->name_len))
				return -EUCLEAN;
		}
	}
	return 0;
}

uint64_t dir_nslots(struct fs *fs, const struct inode *dir)
{
	struct pmfuse_dirtab *t = dirtab(fs, dir->pi);

	return t ? t->nchunks * PMFUSE_DIRENTS_PER_CHUNK : 0;
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

static int hash_resize(struct dir_hash *dh, size_t cap)
{
	uint64_t *oh = dh->hash;
	uint32_t *os = dh->slot;
	size_t ocap = dh->cap;

	dh->hash = calloc(cap, sizeof(uint64_t));
	dh->slot = malloc(cap * sizeof(uint32_t));
	if (!dh->hash || !dh->slot) {
		free(dh->hash);
		free(dh->slot);
		dh->hash = oh;
		dh->slot = os;
		return -ENOMEM;
	}
	dh->cap = cap;
	dh->used = dh->tombs = 0;
	for (size_t i = 0; i < ocap; i++) {
		if (oh[i] < 2)
			continue;
		size_t j = oh[i] & (cap - 1);
		while (dh->hash[j])
			j = (j + 1) & (cap - 1);
		dh->hash[j] = oh[i];
		dh->slot[j] = os[i];
		dh->used++;
	}
	free(oh);
	free(os);
	return 0;
}

static int hash_add(struct dir_hash *dh, uint64_t h, uint32_t slot)
{
	if ((dh->used + dh->tombs + 1) * 10 > dh->cap * 7) {
		size_t cap = dh->cap ? dh->cap : 16;
		while ((dh->used + 1) * 10 > cap * 5)
			cap *= 2;
		if (hash_resize(dh, cap))
			return -ENOMEM;
	}
	size_t j = h & (dh->cap - 1);
	while (dh->hash[j] >= 2)
		j = (j + 1) & (dh->cap - 1);
	if (dh->hash[j] == TOMB)
		dh->tombs--;
	dh->hash[j] = h;
	dh->slot[j] = slot;
	dh->used++;
	return 0;
}

static void hash_del(struct dir_hash *dh, uint64_t h, uint32_t slot)
{
	if (!dh->cap)
		return;
	for (size_t j = h & (dh->cap - 1); dh->hash[j]; j = (j + 1) & (dh->cap - 1))
		if (dh->hash[j] == h && dh->slot[j] == slot) {
			dh->hash[j] = TOMB;
			dh->used--;
			dh->tombs++;
			return;
		}
}

static int free_push(struct dir_hash *dh, uint32_t slot)
{
	if (dh->nfree == dh->free_cap) {
		size_t cap = dh->free_cap ? dh->free_cap * 2 : 64;
		uint32_t *n = realloc(dh->free_slots, cap * sizeof(uint32_t));
		if (!n)
			return -ENOMEM;
		dh->free_slots = n;
		dh->free_cap = cap;
	}
	dh->free_slots[dh->nfree++] = slot;
	return 0;
}

void dir_hash_free(struct inode *in)
{
	struct dir_hash *dh = in->dhash;

	if (!dh)
		return;
	free(dh->hash);
	free(dh->slot);
	free(dh->free_slots);
	free(dh);
	in->dhash = NULL;
}

int dir_hash_build(struct fs *fs, struct inode *dir)
{
	struct pmfuse_dirtab *t;
	struct dir_hash *dh;
	char why[POOL_WHY];
	int ret = 0;

	if (dir->dhash)
		return 0;
	if (!dir_tab_ok(&fs->pool, dir->pi))
		return -EUCLEAN;
	dh = calloc(1, sizeof(*dh));
	if (!dh)
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
				ret = free_push(dh, slot);
			} else {
				ret = dir_validate_dirent(&fs->pool, de, why, sizeof(why));
				if (!ret)
					ret = hash_add(dh, de->hash, slot);
			}
			if (ret)
				goto fail;
		}
	}
	dir->dhash = dh;
	return 0;
fail:
	dir->dhash = dh;
	dir_hash_free(dir);
	return ret;
}

int dir_lock_shared(struct fs *fs, struct inode *dir)
{
	int ret;

	pthread_rwlock_rdlock(&dir->lock);
	if (dir->dhash)
		return 0;
	pthread_rwlock_unlock(&dir->lock);
	pthread_rwlock_wrlock(&dir->lock);
	ret = dir_hash_build(fs, dir);
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
	ret = dir_hash_build(fs, dir);
	if (ret)
		pthread_rwlock_unlock(&dir->lock);
	return ret;
}

struct pmfuse_dirent *dir_find(struct fs *fs, struct inode *dir, const char *name,
			       size_t len, uint32_t *slot, int *err)
{
	struct dir_hash *dh = dir->dhash;
	uint64_t h = dir_hash(name, len);

	*err = -ENOENT;
	if (!dh || !dh->cap)
		return NULL;
	for (size_t j = h & (dh->cap - 1); dh->hash[j]; j = (j + 1) & (dh->cap - 1)) {
		if (dh->hash[j] != h)
			continue;
		struct pmfuse_dirent *de = dir_slot(fs, dir, dh->slot[j]);
		if (!de) {
			*err = -EUCLEAN;
			return NULL;
		}
		if (de->name_len == len && memcmp(dir_dirent_name(&fs->pool, de), name, len) == 0) {
			*slot = dh->slot[j];
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
			pool_tx_free(pmemobj_oid(t));
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
	struct dir_hash *dh = dir->dhash;
	struct pmfuse_dirent *de;
	int ret;

	pd->hash = dir_hash(name, len);
	pd->new_chunk = false;
	pd->popped = false;
	if (dh->nfree) {
		/* popped before anything can abort; dir_insert_done() pushes back */
		pd->slot = dh->free_slots[--dh->nfree];
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
	if (!pd->new_chunk && !seeded_bug("dir-slot"))
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
	struct dir_hash *dh = dir->dhash;

	if (!committed) {
		if (pd->popped)
			dh->nfree++;	/* the slot is still on top of the stack */
		return;
	}
	if (pd->new_chunk)
		for (uint32_t i = PMFUSE_DIRENTS_PER_CHUNK; i-- > 1;)
			free_push(dh, pd->slot + i);
	if (hash_add(dh, pd->hash, pd->slot))
		dir_hash_free(dir);	/* out of memory: rebuild on next use */
}

void dir_tx_remove(struct fs *fs, struct inode *dir, uint32_t slot)
{
	struct pmfuse_dirent *de = dir_slot(fs, dir, slot);

	pmemobj_tx_add_range_direct(de, sizeof(*de));
	if (de->name_len > PMFUSE_INLINE_NAME)
		pool_tx_free(pmemobj_oid(pool_ptr(&fs->pool, de->name_off)));
	memset(de, 0, sizeof(*de));
	pmemobj_tx_add_range_direct(&dir->pi->nentries, sizeof(dir->pi->nentries));
	dir->pi->nentries--;
}

void dir_remove_done(struct inode *dir, uint32_t slot, uint64_t hash, bool committed)
{
	if (!committed || !dir->dhash)
		return;
	hash_del(dir->dhash, hash, slot);
	if (free_push(dir->dhash, slot))
		dir_hash_free(dir);
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
				pool_tx_free(pmemobj_oid(pool_ptr(&fs->pool, ch->ent[i].name_off)));
		pool_tx_free(pmemobj_oid(ch));
	}
	pool_tx_free(pmemobj_oid(t));
	pmemobj_tx_add_range_direct(&pi->dir_off, sizeof(pi->dir_off));
	pi->dir_off = 0;
}
