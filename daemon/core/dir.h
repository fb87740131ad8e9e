/*
 * dir: directory entries.  Persistently a directory is a table of 4 KiB
 * chunks of 64 fixed dirent slots (format.h); an entry never moves while it
 * lives, which keeps readdir offsets valid across concurrent changes.  In
 * DRAM each directory in use gets an index -- an open-addressing hash table
 * from name hash to slot, plus the list of free slots -- built on first use
 * from the slots and kept in step after every committed transaction.  All
 * functions require the directory's inode lock: exclusive for anything that
 * builds or changes the index, shared for dir_find()/readdir.
 */
#ifndef PMFUSE_DIR_H
#define PMFUSE_DIR_H

#include "core.h"

struct dir_hash {
	uint64_t *hash;			/* 0 = empty, 1 = tombstone (real hashes are >= 2) */
	uint32_t *slot;
	size_t cap, used, tombs;
	uint32_t *free_slots;		/* stack */
	size_t nfree, free_cap;
};

/* Pending insert: a slot reserved for a transaction. */
struct dir_pending {
	uint32_t slot;
	uint64_t hash;
	bool new_chunk;
	bool popped;
};

int dir_hash_build(struct fs *fs, struct inode *dir);	/* lock held exclusively */
void dir_hash_free(struct inode *in);
uint64_t dir_hash(const char *name, size_t len);

/* Find name; returns the slot's dirent or NULL (-ENOENT) / error in *err. */
struct pmfuse_dirent *dir_find(struct fs *fs, struct inode *dir, const char *name,
			       size_t len, uint32_t *slot, int *err);
struct pmfuse_dirent *dir_slot(struct fs *fs, struct inode *dir, uint32_t slot);
/* Slots in the directory's table, free ones included (readdir's range). */
uint64_t dir_nslots(struct fs *fs, const struct inode *dir);

/* In a transaction; DRAM follows with dir_insert_done() after TX_END. */
int dir_tx_insert(struct fs *fs, struct inode *dir, const char *name, size_t len,
		  uint64_t ino, unsigned type, struct dir_pending *pd);
void dir_insert_done(struct inode *dir, struct dir_pending *pd, bool committed);
void dir_tx_remove(struct fs *fs, struct inode *dir, uint32_t slot);
void dir_remove_done(struct inode *dir, uint32_t slot, uint64_t hash, bool committed);
void dir_tx_retarget(struct pmfuse_dirent *de, uint64_t ino, unsigned type);
void dir_tx_destroy(struct fs *fs, struct pmfuse_inode *pi);
/*
 * Claim (pool_object_ok: with po NULL, range-check) every object a
 * directory's removal could free: its table, its chunks, the long names of
 * its live entries.  0 or -EUCLEAN.
 */
int dir_claim_objects(const struct pool *p, struct pool_objects *po,
		      const struct pmfuse_inode *pi);
/* Is a directory's chunk table (if any) in bounds? */
bool dir_tab_ok(const struct pool *p, const struct pmfuse_inode *pi);
int dir_validate_dirent(const struct pool *p, const struct pmfuse_dirent *de,
			char *why, size_t whylen);
const char *dir_dirent_name(const struct pool *p, const struct pmfuse_dirent *de);

/* Make sure the index exists; returns with the lock held shared or exclusive. */
int dir_lock_shared(struct fs *fs, struct inode *dir);
int dir_lock_excl(struct fs *fs, struct inode *dir);

#endif
