/*
 * fsck passes 1 and 2: the superblock (and its backup) and the inode table.
 */
#include "check.h"

/* ------------------------------------------------------------------ */
/* pass 1: superblock */

void check_super(struct fsck *f)
{
	struct pool *p = f->p;
	const struct pmfuse_geometry *pg = &p->sb->geo;
	struct pmfuse_geometry b;
	uint64_t sb_off = f->sb_off;
	uint64_t it_len = sizeof(struct pmfuse_itable) +
			  pmfuse_itable_entries(pg->version, f->nchunks) * sizeof(uint64_t);

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

/*
 * Format 3: no chunk past the superblock's high-water mark (the daemon reads
 * only below it, and treats inodes past it as nonexistent).
 */
static void check_hwm(struct fsck *f)
{
	const struct pool *p = f->p;
	uint64_t hwm = p->sb->ichunk_hwm, last = f->nchunks;

	f->hwm_want = 0;
	if (p->sb->geo.version < 3)
		return;
	last = pool_ichunk_end(p, f->nchunks);
	if (hwm == 0 || hwm > f->nchunks)
		problem(f, "superblock: inode table high-water mark %" PRIu64 " is out of range "
			"(1 to %" PRIu64 ")", hwm, f->nchunks);
	else if (last > hwm)
		problem(f, "inode table: chunk %" PRIu64 " lies past the superblock's high-water "
			"mark %" PRIu64 " (its inodes are unreachable)", last - 1, hwm);
	else if (last < hwm)
		problem(f, "superblock: inode table high-water mark %" PRIu64 " is past the last "
			"chunk (%" PRIu64 ")", hwm, last - 1);
	else
		return;
	f->hwm_want = last;
}

void check_itable(struct fsck *f)
{
	struct pool *p = f->p;
	char why[POOL_WHY];

	for (uint64_t c = 0; c < f->nchunks; c++) {
		if (p->sb->geo.version >= 5 && c % PMFUSE_ILEAF_CHUNKS == 0) {
			uint64_t leaf = p->itable->chunk[c / PMFUSE_ILEAF_CHUNKS];
			if (leaf && !pool_struct_ok(p, leaf, sizeof(struct pmfuse_ileaf))) {
				problem(f, "inode table leaf %" PRIu64 " (inodes from %" PRIu64 "): "
					"offset %" PRIu64 " is out of range", c / PMFUSE_ILEAF_CHUNKS,
					c * PMFUSE_INODES_PER_CHUNK, leaf);
				f->incomplete = true;
			} else if (leaf) {
				ref_add(f, leaf, sizeof(struct pmfuse_ileaf), K_ITABLE, 0);
			}
			if (pool_ileaf_absent(p, c)) {
				c += PMFUSE_ILEAF_CHUNKS - 1;
				continue;
			}
		}
		uint64_t off = pool_ichunk(p, c);
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
		f->ino_end = (c + 1) * PMFUSE_INODES_PER_CHUNK;
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
	check_hwm(f);
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
