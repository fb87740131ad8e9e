/*
 * pmfuse-corrupt: damage an unmounted pmfuse region in one named way, for
 * the fsck repair tests (never installed).  Each command is one pmemobj
 * transaction on a region opened with the core's pool_open(), so the
 * damage is exactly what is asked for and nothing else:
 *
 *   nlink INO N                 set the link count
 *   nentries INO N              set a directory's entry count
 *   blocks INO N                set the block count
 *   parent INO P                set a directory's parent
 *   drop-dirent DIR NAME        remove NAME from directory DIR, changing
 *                               nothing else (its inode becomes unreachable)
 *   dangling-dirent DIR NAME INO  add NAME -> INO to DIR (INO free or not)
 *   orphan INO                  link count 0, not on the orphan list
 *   orphan-list INO             link count 0 and on the orphan list (what an
 *                               unlink of an open file leaves at a crash)
 *   clear-inode INO             free the record, leaving its entries, file
 *                               map nodes, xattrs and directory chunks behind
 *   leak-object SIZE            allocate an object nothing references
 *   state N                     set the superblock state
 *   hwm N                       set the inode table high-water mark (format 3)
 *   record-flip BIT             flip bit BIT of the clean-unmount record's data,
 *                               leaving its checksum (media damage)
 *   record-lie-inode INO        toggle INO's bit in the record's inode masks and
 *                               fix the checksum (a record that lies well)
 *   record-free-block INO       mark a data block of INO free in the record (one
 *                               in a segment the record keeps bits of: partly
 *                               used) and fix the checksum
 *
 * Exit 0 done, 1 failure (message on stderr), 2 usage.
 */
#include "dir.h"
#include "fmap.h"
#include "pool.h"
#include "pmfuse/format.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct pool P;

static uint64_t *record_seg_words(struct pmfuse_record *r, uint64_t b, uint64_t **count_word,
				  unsigned *shift, uint64_t *seg_start);

/* A block of a file whose record segment has its bits (neither wholly free nor used). */
struct pick {
	struct pmfuse_record *r;
	uint64_t b;
};

static int pick_leaf(void *ctx, uint64_t fblock, uint64_t phys, uint64_t n, bool unwritten)
{
	struct pick *k = ctx;
	uint64_t *cw, s0;
	unsigned sh;

	(void)fblock, (void)unwritten;
	for (uint64_t b = phys; b < phys + n; b++)
		if (record_seg_words(k->r, b, &cw, &sh, &s0)) {
			k->b = b;
			return 1;	/* stop the walk */
		}
	return 0;
}

/*
 * The record's bitmap words of the 512-block segment holding block b (NULL:
 * the segment is wholly free or used, so has none); its count's word and
 * shift.  Bit b is then words[(b - seg start) / 64] bit (b - seg start) % 64.
 */
static uint64_t *record_seg_words(struct pmfuse_record *r, uint64_t b, uint64_t **count_word,
				  unsigned *shift, uint64_t *seg_start)
{
	uint64_t at = r->ichunks;

	for (uint64_t k = 0; k < r->npieces; k++) {
		uint64_t b0 = r->data[at] >> 12, nb = r->data[at + 1] >> 12, nseg = (nb + 511) / 512;
		uint64_t *counts = &r->data[at + 2], words = at + 2 + (nseg + 3) / 4;
		for (uint64_t g = 0; g < nseg; g++) {
			uint64_t c = counts[g / 4] >> (16 * (g % 4)) & 0xffff;
			uint64_t len = nb - g * 512 < 512 ? nb - g * 512 : 512;
			bool partial = c != 0 && c != len;
			if (b0 + g * 512 <= b && b < b0 + g * 512 + len) {
				*count_word = &counts[g / 4];
				*shift = 16 * (g % 4);
				*seg_start = b0 + g * 512;
				return partial ? &r->data[words] : NULL;
			}
			words += partial ? 8 : 0;
		}
		at = words;
	}
	return NULL;
}

static struct pmfuse_inode *record(uint64_t ino)
{
	uint64_t c = ino / PMFUSE_INODES_PER_CHUNK;

	if (ino == 0 || ino >= P.sb->geo.max_inodes || !pool_ichunk(&P, c))
		return NULL;
	return (struct pmfuse_inode *)pool_ptr(&P, pool_ichunk(&P, c)) + ino % PMFUSE_INODES_PER_CHUNK;
}

static struct pmfuse_inode *used(uint64_t ino)
{
	struct pmfuse_inode *pi = record(ino);

	if (!pi || !pi->mode) {
		fprintf(stderr, "pmfuse-corrupt: inode %" PRIu64 " is not in use\n", ino);
		exit(1);
	}
	return pi;
}

/* The slot of name in directory pi (or, name NULL, the first free one). */
static struct pmfuse_dirent *dir_lookup(struct pmfuse_inode *pi, const char *name)
{
	struct pmfuse_dirtab *t;

	if (!S_ISDIR(pi->mode) || !pi->dir_off)
		return NULL;
	t = pool_ptr(&P, pi->dir_off);
	for (uint64_t c = 0; c < t->nchunks; c++) {
		struct pmfuse_dirchunk *ch = pool_ptr(&P, t->chunk[c]);
		for (unsigned i = 0; i < PMFUSE_DIRENTS_PER_CHUNK; i++) {
			struct pmfuse_dirent *de = &ch->ent[i];
			if (!name ? !de->ino :
			    de->ino && de->name_len == strlen(name) &&
			    !memcmp(dir_dirent_name(&P, de), name, de->name_len))
				return de;
		}
	}
	return NULL;
}

struct args {
	const char *cmd;
	uint64_t a, b;
	const char *name;
};

static void add(void *p, size_t n)
{
	pmemobj_tx_add_range_direct(p, n);
}

static int tx_corrupt(void *arg)
{
	struct args *x = arg;
	struct pmfuse_inode *pi;
	struct pmfuse_dirent *de;

	if (!strcmp(x->cmd, "nlink")) {
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->nlink = (uint32_t)x->b;
	} else if (!strcmp(x->cmd, "nentries")) {
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->nentries = x->b;
	} else if (!strcmp(x->cmd, "blocks")) {
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->blocks = x->b;
	} else if (!strcmp(x->cmd, "parent")) {
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->parent = x->b;
	} else if (!strcmp(x->cmd, "drop-dirent")) {
		pi = used(x->a);
		if (!(de = dir_lookup(pi, x->name)))
			return -ENOENT;
		add(de, sizeof(*de));
		if (de->name_len > PMFUSE_INLINE_NAME)
			pmemobj_tx_free(pmemobj_oid(pool_ptr(&P, de->name_off)));
		memset(de, 0, sizeof(*de));
		add(pi, sizeof(*pi));
		pi->nentries--;
	} else if (!strcmp(x->cmd, "dangling-dirent")) {
		size_t len = strlen(x->name);
		pi = used(x->a);
		if (len == 0 || len > PMFUSE_INLINE_NAME || dir_lookup(pi, x->name))
			return -EINVAL;
		if (!(de = dir_lookup(pi, NULL)))
			return -ENOSPC;		/* no free slot in the existing chunks */
		add(de, sizeof(*de));
		de->ino = x->b;
		de->hash = dir_hash(x->name, len);
		de->name_len = (uint16_t)len;
		de->type = DT_REG;
		memcpy(de->name, x->name, len);
		add(pi, sizeof(*pi));
		pi->nentries++;
	} else if (!strcmp(x->cmd, "orphan")) {
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->nlink = 0;
		pi->flags &= ~PMFUSE_IF_ORPHAN;
		pi->orphan_next = pi->orphan_prev = 0;
	} else if (!strcmp(x->cmd, "orphan-list")) {
		struct pmfuse_inode *head = record(P.sb->orphan_head);
		pi = used(x->a);
		add(pi, sizeof(*pi));
		pi->nlink = 0;
		pi->flags |= PMFUSE_IF_ORPHAN;
		pi->orphan_prev = 0;
		pi->orphan_next = P.sb->orphan_head;
		if (head) {
			add(head, sizeof(*head));
			head->orphan_prev = x->a;
		}
		add(&P.sb->orphan_head, sizeof(P.sb->orphan_head));
		P.sb->orphan_head = x->a;
	} else if (!strcmp(x->cmd, "clear-inode")) {
		pi = used(x->a);
		uint32_t gen = pi->generation;
		add(pi, sizeof(*pi));
		memset(pi, 0, sizeof(*pi));
		pi->generation = gen;
	} else if (!strcmp(x->cmd, "leak-object")) {
		PMEMoid oid = pmemobj_tx_zalloc(x->a, 0);
		printf("%" PRIu64 "\n", oid.off);
	} else if (!strcmp(x->cmd, "state")) {
		add(&P.sb->state, sizeof(P.sb->state));
		P.sb->state = (uint32_t)x->a;
	} else if (!strncmp(x->cmd, "record-", 7)) {
		struct pmfuse_record *r = P.sb->record_off ? pool_ptr(&P, P.sb->record_off) : NULL;
		if (!r)
			return -ENOENT;
		add(r, sizeof(*r) + r->words * sizeof(uint64_t));
		if (!strcmp(x->cmd, "record-flip")) {
			r->data[x->a / 64 % r->words] ^= 1ull << (x->a % 64);
			return 0;
		}
		if (!strcmp(x->cmd, "record-lie-inode")) {
			if (x->a / 64 >= r->ichunks)
				return -EINVAL;
			r->data[x->a / 64] ^= 1ull << (x->a % 64);
			r->used_inodes += r->data[x->a / 64] >> (x->a % 64) & 1 ? 1 : -1;
		} else if (!strcmp(x->cmd, "record-free-block")) {
			uint64_t *cw, *w, b, s0, k;
			unsigned sh;
			struct pick pk = { r, 0 };
			pi = used(x->a);
			if (fmap_walk(&P, pi, pick_leaf, NULL, &pk) != 1)
				return -EINVAL;
			b = pk.b;
			w = record_seg_words(r, b, &cw, &sh, &s0);
			k = b - s0;
			if (w[k / 64] >> (k % 64) & 1)
				return -EINVAL;
			w[k / 64] |= 1ull << (k % 64);
			*cw += 1ull << sh;
		} else {
			return -EOPNOTSUPP;
		}
		r->checksum = pmfuse_record_sum(r);
	} else if (!strcmp(x->cmd, "hwm")) {
		add(&P.sb->ichunk_hwm, sizeof(P.sb->ichunk_hwm));
		P.sb->ichunk_hwm = x->a;
	} else {
		return -EOPNOTSUPP;
	}
	return 0;
}

static uint64_t num(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || !*s) {
		fprintf(stderr, "pmfuse-corrupt: not a number: %s\n", s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct args x = { 0 };
	char why[POOL_WHY];
	int ret;

	if (argc < 4 && !(argc == 3 && !strcmp(argv[2], "help"))) {
		fprintf(stderr, "usage: pmfuse-corrupt REGION COMMAND ARGS... (see the source)\n");
		return 2;
	}
	x.cmd = argv[2];
	if (!strcmp(x.cmd, "drop-dirent")) {
		if (argc != 5)
			return 2;
		x.a = num(argv[3]);
		x.name = argv[4];
	} else if (!strcmp(x.cmd, "dangling-dirent")) {
		if (argc != 6)
			return 2;
		x.a = num(argv[3]);
		x.name = argv[4];
		x.b = num(argv[5]);
	} else {
		x.a = num(argv[3]);
		if (argc > 4)
			x.b = num(argv[4]);
	}
	if ((ret = pool_open(&P, argv[1], why, sizeof(why)))) {
		fprintf(stderr, "pmfuse-corrupt: %s\n", why);
		return 1;
	}
	ret = pool_tx(&P, tx_corrupt, &x);
	pool_close(&P);
	if (ret) {
		fprintf(stderr, "pmfuse-corrupt: %s failed: %s\n", x.cmd, strerror(-ret));
		return 1;
	}
	return 0;
}
