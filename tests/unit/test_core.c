/*
 * Unit tests of the pmfuse core without FUSE: allocator, file map,
 * namespace, data path, orphans and remount, all through the core API.
 */
#include "core.h"
#include "harness.h"
#include "dir.h"
#include "acl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/xattr.h>
#define XATTR_CREATE_FLAG XATTR_CREATE
#define XATTR_REPLACE_FLAG XATTR_REPLACE
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

static char region[256];
static const struct fs_cred root_cred = { 0, 0, 0, 0 };

static void make_region(uint64_t size)
{
	snprintf(region, sizeof(region), "/dev/shm/pmfuse-unit-%d", getpid());
	unit_make_region(region, size, "unit");
}

static struct fs *mount_region(void)
{
	return unit_mount(region);
}

static int copy_out(void *ctx, const struct fs_seg *segs, int n, size_t total)
{
	char *dst = ctx;

	(void)total;
	for (int i = 0; i < n; i++) {
		memcpy(dst, segs[i].ptr, segs[i].len);
		dst += segs[i].len;
	}
	return 0;
}

static void test_alloc_aligned_runs_and_enospc(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct alloc *a = &fs->alloc;
	struct alloc_run runs[4];
	uint64_t free0 = alloc_free_count(a), used0 = alloc_used_blocks(a);	/* the backup block */

	int n = alloc_blocks(a, 512, 0, runs, 4);
	CHECK_EQ(n, 1);
	CHECK_EQ(runs[0].len, 512);
	CHECK_EQ(runs[0].phys % 512, 0);	/* a whole 2 MiB group */
	CHECK_EQ(alloc_used_blocks(a), used0 + 512);
	/* (run 0 of a 64 MiB region holds less: the data area grew a piece) */
	CHECK_EQ(a->pieces_added, 1);
	/* more than the region holds: the data area grows, fails, shrinks back */
	uint64_t data0 = a->data_blocks, added0 = a->pieces_added, free1 = alloc_free_count(a);
	CHECK_EQ(alloc_blocks(a, a->nblocks, 0, runs + 1, 3), -ENOSPC);
	CHECK_EQ(alloc_free_count(a), free1);	/* failure reserved nothing */
	CHECK_EQ(alloc_used_blocks(a), used0 + 512);
	CHECK_EQ(a->data_blocks, data0);
	CHECK_EQ(a->pieces_added - added0, a->pieces_removed);
	alloc_free(a, runs[0].phys, runs[0].len);
	/* the piece emptied: back to the heap, and the data area as it was */
	CHECK_EQ(alloc_used_blocks(a), used0);
	CHECK_EQ(alloc_free_count(a), free0);
	CHECK_EQ(alloc_claim(a, pool_backup_block(&fs->pool), 1), -EUCLEAN);
	fs_unmount(fs);
}

/*
 * Data and metadata share the heap: more data than run 0 holds adds pieces
 * (at least 97% of the region becomes usable), and freeing it all gives
 * them back, so the pool's heap can hold metadata again.
 */
static void test_data_area_grows_and_shrinks(void)
{
	make_region(512 << 20);
	struct fs *fs = mount_region();
	struct alloc *a = &fs->alloc;
	struct alloc_run runs[64];
	struct { uint64_t phys, len; } got[8192];
	uint64_t data0 = a->data_blocks, free0 = alloc_free_count(a), total = 0;
	size_t ng = 0;
	struct statvfs sv;

	fs_statfs(fs, &sv);
	CHECK(sv.f_blocks * 4096 >= 0.97 * (512 << 20));
	CHECK(data0 < sv.f_blocks / 2);		/* run 0 alone is not the size */
	for (;;) {
		int n = alloc_blocks(a, 1000, 0, runs, 64);
		if (n < 0) {
			CHECK_EQ(n, -ENOSPC);
			break;
		}
		for (int i = 0; i < n && ng < 8192; i++) {
			got[ng].phys = runs[i].phys;
			got[ng++].len = runs[i].len;
			total += runs[i].len;
			/* every block handed out is a data block of a live piece */
			CHECK(pool_block_range_ok(&fs->pool, runs[i].phys, runs[i].len));
		}
	}
	CHECK(a->pieces_added >= 2);
	CHECK(a->data_blocks > data0);
	/* the data area filled the region but the metadata headroom */
	CHECK(total * 4096 >= 0.96 * (512 << 20));
	for (size_t i = 0; i < ng; i++)
		alloc_free(a, got[i].phys, got[i].len);
	CHECK_EQ(a->pieces_removed, a->pieces_added);
	CHECK_EQ(a->data_blocks, data0);
	CHECK_EQ(alloc_free_count(a), free0);
	/* the pieces are gone from the heap: their blocks are no data now */
	CHECK(!pool_block_range_ok(&fs->pool, got[ng - 1].phys, 1));
	fs_unmount(fs);
	/* and the region is as consistent as before */
	fs = mount_region();
	CHECK_EQ(fs->alloc.data_blocks, data0);
	fs_unmount(fs);
}

struct count_ctx {
	uint64_t leaves, blocks, unwritten;
};

static int count_leaf(void *ctx, uint64_t fb, uint64_t phys, uint64_t n, bool unwritten)
{
	struct count_ctx *c = ctx;
	c->unwritten += unwritten ? n : 0;
	c->leaves++;
	c->blocks += n;
	(void)fb;
	(void)phys;
	return 0;
}

static void test_write_read_roundtrip_and_remount(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	static char buf[300000], out[300000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 3);
	CHECK_EQ(fs_mknod(fs, 1, "f", S_IFREG | 0644, 0, &root_cred, &st), 0);
	uint64_t ino = st.st.st_ino;
	CHECK_EQ(fs_write(fs, ino, 1000, buf, sizeof(buf), false), (long long)sizeof(buf));
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_size, 1000 + sizeof(buf));
	memset(out, 1, sizeof(out));
	CHECK_EQ(fs_read(fs, ino, 0, 1000, copy_out, out, 0), 0);
	for (int i = 0; i < 1000; i++)
		CHECK(out[i] == 0);	/* the head of the first block reads as zeros */
	fs_unmount(fs);

	fs = mount_region();
	CHECK_EQ(fs_lookup(fs, 1, "f", &st), 0);
	CHECK_EQ(st.st.st_ino, ino);
	CHECK_EQ(fs_read(fs, ino, 1000, sizeof(buf), copy_out, out, 0), 0);
	CHECK(memcmp(buf, out, sizeof(buf)) == 0);
	fs_unmount(fs);
}

static void test_hole_read_allocates_nothing(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	static char out[1 << 20];

	CHECK_EQ(fs_mknod(fs, 1, "sparse", S_IFREG | 0644, 0, &root_cred, &st), 0);
	struct stat a = { .st_size = 1ll << 40 };
	CHECK_EQ(fs_setattr(fs, st.st.st_ino, &a, FS_SET_SIZE, NULL, &st), 0);
	uint64_t free0 = alloc_free_count(&fs->alloc);
	uint64_t zero0 = fs->stats.zero_bytes_served;
	CHECK_EQ(fs_read(fs, st.st.st_ino, 1ull << 39, sizeof(out), copy_out, out, 0), 0);
	CHECK_EQ(alloc_free_count(&fs->alloc), free0);
	CHECK_EQ(fs->stats.zero_bytes_served - zero0, sizeof(out));
	CHECK_EQ(st.st.st_blocks, 0);
	fs_unmount(fs);
}

static void test_large_write_uses_huge_leaves(void)
{
	/* a region whose run 0 (64 MiB) holds the file: one extent */
	make_region(4ull << 30);
	struct fs *fs = mount_region();
	struct fs_attr st;
	static char buf[1 << 20];
	struct count_ctx c = { 0 };

	CHECK_EQ(fs_mknod(fs, 1, "big", S_IFREG | 0644, 0, &root_cred, &st), 0);
	for (int i = 0; i < 32; i++)
		CHECK_EQ(fs_write(fs, st.st.st_ino, (uint64_t)i << 20, buf, sizeof(buf), false),
			 sizeof(buf));
	fmap_walk(&fs->pool, inode_record(fs, st.st.st_ino), count_leaf, NULL, &c);
	char text[512];
	CHECK(data_extents_text(fs, st.st.st_ino, text, sizeof(text)) > 0);
	/* 32 MiB written from offset 0 in 1 MiB writes: 16 aligned 2 MiB runs */
	CHECK(strstr(text, "extents 1\n") && strstr(text, "huge_2m 16\n"));
	CHECK_EQ(c.blocks, 32 * 256);
	/* 32 MiB in 4 KiB leaves would be 8192; full contiguous nodes fold into
	 * 16 MiB level-2 leaves */
	CHECK(c.leaves <= 4);
	fs_unmount(fs);
}

static void test_punch_splits_leaf_and_returns_space(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	static char buf[1 << 20], out[1 << 20];

	memset(buf, 0xab, sizeof(buf));
	CHECK_EQ(fs_mknod(fs, 1, "p", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_write(fs, st.st.st_ino, 0, buf, sizeof(buf), false), sizeof(buf));
	uint64_t free0 = alloc_free_count(&fs->alloc);
	CHECK_EQ(fs_fallocate(fs, st.st.st_ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      4096 * 10 + 100, 4096 * 5), 0);
	/* blocks 11..14 are whole inside the range: 4 blocks come back */
	CHECK_EQ(alloc_free_count(&fs->alloc), free0 + 4);
	CHECK_EQ(fs_read(fs, st.st.st_ino, 0, sizeof(out), copy_out, out, 0), 0);
	for (size_t i = 0; i < sizeof(out); i++) {
		bool hole = i >= 4096 * 10 + 100 && i < 4096 * 15 + 100;
		if ((out[i] == 0) != hole) {
			CHECK(!"punched range reads wrong");
			break;
		}
	}
	CHECK_EQ(fs_lseek(fs, st.st.st_ino, 4096 * 11, SEEK_DATA), 4096 * 15);
	CHECK_EQ(fs_lseek(fs, st.st.st_ino, 0, SEEK_HOLE), 4096 * 11);
	fs_unmount(fs);
}

/*
 * fallocate maps unwritten leaves; writes convert exactly the blocks they
 * touch (splitting a leaf), and a leaf whose blocks are all written again
 * folds back into one.  Huge extents are physical layout: unchanged.
 */
static void test_unwritten_leaves_split_convert_and_fold(void)
{
	make_region(256 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	static char buf[2 << 20], out[2 << 20];
	struct count_ctx c = { 0 };
	char text[512];

	CHECK_EQ(fs_mknod(fs, 1, "u", S_IFREG | 0644, 0, &root_cred, &st), 0);
	uint64_t ino = st.st.st_ino, used0 = alloc_used_blocks(&fs->alloc);
	CHECK_EQ(fs_fallocate(fs, ino, 0, 0, 2 << 20), 0);
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0 + 512);
	fmap_walk(&fs->pool, inode_record(fs, ino), count_leaf, NULL, &c);
	CHECK_EQ(c.leaves, 8);		/* 2 MiB: eight level-1 leaves */
	CHECK_EQ(c.unwritten, 512);
	CHECK(data_extents_text(fs, ino, text, sizeof(text)) > 0);
	CHECK(strstr(text, "huge_2m 1\n") && strstr(text, "unwritten_blocks 512\n"));
	CHECK_EQ(fs_read(fs, ino, 0, sizeof(out), copy_out, out, 0), 0);
	for (size_t i = 0; i < sizeof(out); i++)
		if (out[i]) {
			CHECK(!"an unwritten block reads non-zero");
			break;
		}
	CHECK_EQ(fs_lseek(fs, ino, 0, SEEK_DATA), -ENXIO);

	/* one byte in block 100: that block only becomes written */
	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(fs_write(fs, ino, 100 * 4096 + 7, buf, 1, false), 1);
	c = (struct count_ctx){ 0 };
	fmap_walk(&fs->pool, inode_record(fs, ino), count_leaf, NULL, &c);
	CHECK_EQ(c.unwritten, 511);
	CHECK(c.leaves > 8);		/* a level-1 leaf split down to blocks */
	CHECK_EQ(c.blocks, 512);
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0 + 512);
	CHECK_EQ(fs_read(fs, ino, 100 * 4096, 4096, copy_out, out, 0), 0);
	CHECK(out[7] == 0x5a && out[6] == 0 && out[8] == 0 && out[4095] == 0);
	CHECK_EQ(fs_lseek(fs, ino, 0, SEEK_DATA), 100 * 4096);
	CHECK_EQ(fs_lseek(fs, ino, 100 * 4096, SEEK_HOLE), 101 * 4096);

	/* writing all of it converts the rest: one written leaf again */
	CHECK_EQ(fs_write(fs, ino, 0, buf, sizeof(buf), false), (ssize_t)sizeof(buf));
	c = (struct count_ctx){ 0 };
	fmap_walk(&fs->pool, inode_record(fs, ino), count_leaf, NULL, &c);
	CHECK_EQ(c.unwritten, 0);
	CHECK_EQ(c.leaves, 8);
	CHECK(data_extents_text(fs, ino, text, sizeof(text)) > 0);
	CHECK(strstr(text, "huge_2m 1\n") && strstr(text, "unwritten_blocks 0\n"));
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0 + 512);

	/* fallocate over written data leaves it written; past it, unwritten */
	CHECK_EQ(fs_fallocate(fs, ino, FALLOC_FL_KEEP_SIZE, 0, 3 << 20), 0);
	c = (struct count_ctx){ 0 };
	fmap_walk(&fs->pool, inode_record(fs, ino), count_leaf, NULL, &c);
	CHECK_EQ(c.unwritten, 256);
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_size, 2 << 20);
	fs_unmount(fs);

	/* it all survives a remount, and the mount scan claims unwritten blocks */
	fs = mount_region();
	c = (struct count_ctx){ 0 };
	fmap_walk(&fs->pool, inode_record(fs, ino), count_leaf, NULL, &c);
	CHECK_EQ(c.unwritten, 256);
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0 + 768);
	CHECK_EQ(fs_read(fs, ino, 0, sizeof(out), copy_out, out, 0), 0);
	CHECK(out[0] == 0x5a && out[sizeof(out) - 1] == 0x5a);
	fs_unmount(fs);
}

/* The region's huge extents, counted from scratch: every file's map. */
static void recount_huge(struct fs *fs, uint64_t *h2, uint64_t *h1)
{
	*h2 = *h1 = 0;
	for (uint64_t ino = 1; ino < fs->max_inodes; ino++) {
		struct pmfuse_inode *pi = inode_record(fs, ino);
		struct fmap_extents e = { 0 };
		if (!pi || !S_ISREG(pi->mode))
			continue;
		CHECK_EQ(fmap_count_extents(&fs->pool, pi, &e), 0);
		*h2 += e.huge_2m;
		*h1 += e.huge_1g;
	}
}

static bool huge_counters_match(struct fs *fs, const char *after)
{
	uint64_t h2, h1;

	recount_huge(fs, &h2, &h1);
	if ((uint64_t)atomic_load(&fs->alloc.huge_2m) == h2 &&
	    (uint64_t)atomic_load(&fs->alloc.huge_1g) == h1)
		return true;
	fprintf(stderr, "after %s: counters say %lld x 2 MiB, %lld x 1 GiB; the maps %llu, %llu\n",
		after, (long long)atomic_load(&fs->alloc.huge_2m),
		(long long)atomic_load(&fs->alloc.huge_1g), (unsigned long long)h2,
		(unsigned long long)h1);
	return false;
}

/*
 * The stats counters of huge extents move with every map change (write,
 * fallocate, punch, truncate, reclaim) and always equal a recount of every
 * file; a remount counts them again from the maps and finds the same.
 */
static void test_huge_counters_follow_every_map_change(void)
{
	make_region(3ull << 30);
	struct fs *fs = mount_region();
	static char buf[4 << 20];
	uint64_t ino[3], seed = 12345;
	struct fs_attr st;
	const uint64_t M = 1 << 20, G = 1 << 30;

	memset(buf, 0x5a, sizeof(buf));
	for (int i = 0; i < 3; i++) {
		char name[8] = { 'h', (char)('0' + i) };
		CHECK_EQ(fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st), 0);
		ino[i] = st.st.st_ino;
	}
	CHECK_EQ(fs_fallocate(fs, ino[0], 0, 0, G), 0);
	CHECK_EQ(atomic_load(&fs->alloc.huge_1g), 1);
	CHECK(huge_counters_match(fs, "a 1 GiB fallocate"));
	/* a 4 KiB hole breaks the 1 GiB extent into 511 of 2 MiB */
	CHECK_EQ(fs_fallocate(fs, ino[0], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * M,
			      4096), 0);
	CHECK_EQ(atomic_load(&fs->alloc.huge_1g), 0);
	CHECK_EQ(atomic_load(&fs->alloc.huge_2m), 511);
	CHECK(huge_counters_match(fs, "a punch in a 1 GiB extent"));
	CHECK_EQ(fs_write(fs, ino[0], 5 * M, buf, 8192, false), 8192);
	CHECK(huge_counters_match(fs, "a write into the hole"));
	int grew = 0, shrank = 0;	/* steps that completed / broke huge extents */
	for (int step = 0; step < 160; step++) {
		int64_t before = atomic_load(&fs->alloc.huge_2m) + atomic_load(&fs->alloc.huge_1g);
#define DRAW() (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17, seed)
		uint64_t f = ino[DRAW() % 3], off = DRAW() % (1200 * M);
		uint64_t len = DRAW() % (32 * M) + 1, r = DRAW();
		char what[64];
		if (r & 2)
			off &= ~(M - 1);	/* aligned often, so huge extents form */
		switch (DRAW() % 5) {
		case 0:
			if (len > sizeof(buf))
				len = sizeof(buf);
			CHECK_EQ(fs_write(fs, f, off, buf, len, false), (ssize_t)len);
			snprintf(what, sizeof(what), "step %d: write", step);
			break;
		case 1:
			CHECK_EQ(fs_fallocate(fs, f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					      off, len), 0);
			snprintf(what, sizeof(what), "step %d: punch", step);
			break;
		case 2:
			CHECK_EQ(fs_fallocate(fs, f, (r & 1) ? FALLOC_FL_KEEP_SIZE : 0,
					      off & ~(2 * M - 1), len), 0);
			snprintf(what, sizeof(what), "step %d: fallocate", step);
			break;
		case 3: {
			struct stat a = { .st_size = (off_t)(off / 2) };
			CHECK_EQ(fs_setattr(fs, f, &a, FS_SET_SIZE, NULL, &st), 0);
			snprintf(what, sizeof(what), "step %d: truncate", step);
			break;
		}
		default:
			CHECK_EQ(fs_fallocate(fs, f, FALLOC_FL_ZERO_RANGE, off, len), 0);
			snprintf(what, sizeof(what), "step %d: zero range", step);
		}
		if (!huge_counters_match(fs, what)) {
			CHECK(!"huge counters drifted");
			break;
		}
		int64_t now = atomic_load(&fs->alloc.huge_2m) + atomic_load(&fs->alloc.huge_1g);
		grew += now > before;
		shrank += now < before;
	}
	CHECK(grew > 10 && shrank > 10);
	CHECK(huge_counters_match(fs, "the random steps"));
	int64_t h2 = atomic_load(&fs->alloc.huge_2m), h1 = atomic_load(&fs->alloc.huge_1g);
	fs_unmount(fs);
	fs = mount_region();
	CHECK_EQ(atomic_load(&fs->alloc.huge_2m), h2);
	CHECK_EQ(atomic_load(&fs->alloc.huge_1g), h1);
	/* reclaim gives them all back */
	for (int i = 0; i < 3; i++) {
		char name[8] = { 'h', (char)('0' + i) };
		CHECK_EQ(fs_unlink(fs, 1, name), 0);
	}
	CHECK_EQ(atomic_load(&fs->alloc.huge_2m), 0);
	CHECK_EQ(atomic_load(&fs->alloc.huge_1g), 0);
	fs_unmount(fs);
}

/*
 * Reclaim checks the record: a second reclaim of the same inode (the
 * reported race ran two) frees nothing and gives the number back once.
 */
static void test_reclaim_is_idempotent(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct statvfs before, after;
	struct fs_attr st;
	static char buf[70000];
	uint64_t a, b, used0 = alloc_used_blocks(&fs->alloc);

	fs_statfs(fs, &before);
	CHECK_EQ(fs_mknod(fs, 1, "o", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_open(fs, st.st.st_ino, O_RDWR, NULL), 0);
	CHECK_EQ(fs_write(fs, st.st.st_ino, 0, buf, sizeof(buf), false), sizeof(buf));
	CHECK_EQ(fs_unlink(fs, 1, "o"), 0);
	struct pmfuse_inode *pi = inode_record(fs, st.st.st_ino);
	CHECK_EQ(inode_reclaim(fs, st.st.st_ino, pi), 1);
	CHECK_EQ(inode_reclaim(fs, st.st.st_ino, pi), 0);
	fs_statfs(fs, &after);
	/* data blocks all back (the root's directory chunk stays: metadata) */
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0);
	CHECK_EQ(after.f_ffree, before.f_ffree);
	/* the number was freed once: two new inodes get two numbers */
	CHECK_EQ(inode_alloc_ino(fs, &a), 0);
	CHECK_EQ(inode_alloc_ino(fs, &b), 0);
	CHECK(a != b);
	inode_release_ino(fs, a);
	inode_release_ino(fs, b);
	/* the kernel's last references go: nothing is reclaimed twice */
	fs_forget(fs, st.st.st_ino, 1);
	fs_release(fs, st.st.st_ino);
	fs_statfs(fs, &after);
	CHECK_EQ(alloc_used_blocks(&fs->alloc), used0);
	CHECK_EQ(after.f_ffree, before.f_ffree);
	fs_unmount(fs);
}

/*
 * Format 6: a chunk whose inodes are all deleted goes back to the heap (one
 * kept spare), the high-water mark comes down, and a chunk made again at
 * the same numbers hands out generations above every one it had.
 */
static void test_empty_inode_chunks_are_freed_and_generations_stay_new(void)
{
	enum { N = 4 * 64 };
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	char name[16];
	static uint64_t ino[N];
	static uint32_t gen[N];
	uint64_t live, freed;

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "g%d", i);
		CHECK_EQ(fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st), 0);
		ino[i] = st.st.st_ino;
		gen[i] = (uint32_t)st.generation;
		fs_forget(fs, ino[i], 1);
	}
	/* lowest numbers first: 2..257, chunks 0 to 4 */
	CHECK_EQ(ino[0], 2);
	CHECK_EQ(ino[N - 1], N + 1);
	inode_table_stats(fs, &live, &freed);
	CHECK_EQ(live, 5);
	CHECK_EQ(fs->pool.sb->ichunk_hwm, 5);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "g%d", i);
		CHECK_EQ(fs_unlink(fs, 1, name), 0);
	}
	/* chunk 0 holds the root; chunk 1 is kept spare; 2, 3 and 4 are freed */
	inode_table_stats(fs, &live, &freed);
	CHECK_EQ(live, 2);
	CHECK_EQ(freed, 3);
	CHECK_EQ(fs->pool.sb->ichunk_hwm, 2);
	CHECK_EQ(pool_ichunk(&fs->pool, 2), 0);
	CHECK(fs->pool.sb->igen_floor >= gen[N - 1]);
	CHECK(inode_get(fs, ino[N - 1]) == NULL);	/* a handle of it: stale */
	fs_unmount(fs);

	fs = mount_region();				/* from the clean-unmount record */
	inode_table_stats(fs, &live, &freed);
	CHECK_EQ(live, 2);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "h%d", i);
		CHECK_EQ(fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st), 0);
		CHECK_EQ(st.st.st_ino, ino[i]);		/* the same numbers again ... */
		CHECK((uint32_t)st.generation > gen[i]);	/* ... not the same files */
		fs_forget(fs, st.st.st_ino, 1);
	}
	CHECK_EQ(fs->pool.sb->ichunk_hwm, 5);
	fs_unmount(fs);
}

/* A stats read is O(1): it builds no in-memory inode for any file. */
static void test_stats_read_instantiates_no_inode(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	char name[16], text[4096];

	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		CHECK_EQ(fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st), 0);
		CHECK_EQ(fs_write(fs, st.st.st_ino, 0, name, 4, false), 4);
		fs_forget(fs, st.st.st_ino, 1);	/* the kernel forgets it */
	}
	uint64_t cached = 0;
	CHECK(fs_getxattr(fs, 1, "user.pmfuse.stats", text, sizeof(text)) > 0);
	for (uint64_t ino = 2; ino < fs->max_inodes; ino++)
		cached += atomic_load(&fs->icache[ino]) != NULL;
	CHECK_EQ(cached, 0);
	fs_unmount(fs);
}

static void test_namespace_errors(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st, d;
	char longname[300];

	memset(longname, 'x', 256);
	longname[256] = '\0';
	CHECK_EQ(fs_mknod(fs, 1, longname, S_IFREG | 0644, 0, &root_cred, &st), -ENAMETOOLONG);
	longname[255] = '\0';
	CHECK_EQ(fs_mknod(fs, 1, longname, S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_mknod(fs, 1, longname, S_IFREG | 0644, 0, &root_cred, &st), -EEXIST);
	CHECK_EQ(fs_mknod(fs, 1, "d", S_IFDIR | 0755, 0, &root_cred, &d), 0);
	CHECK_EQ(fs_mknod(fs, d.st.st_ino, "in", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_rmdir(fs, 1, "d"), -ENOTEMPTY);
	CHECK_EQ(fs_unlink(fs, 1, "d"), -EISDIR);
	CHECK_EQ(fs_rmdir(fs, d.st.st_ino, "in"), -ENOTDIR);
	CHECK_EQ(fs_rename(fs, 1, "d", d.st.st_ino, "sub", 0), -EINVAL);
	CHECK_EQ(fs_link(fs, d.st.st_ino, 1, "dl", &st), -EPERM);
	CHECK_EQ(fs_lookup(fs, 1, "nope", &st), -ENOENT);
	CHECK_EQ(fs_getattr(fs, 1, &st), 0);
	CHECK_EQ(st.st.st_nlink, 3);
	CHECK_EQ(fs_rename(fs, d.st.st_ino, "in", 1, "moved", FS_RENAME_NOREPLACE), 0);
	CHECK_EQ(fs_rename(fs, 1, "moved", 1, longname, FS_RENAME_NOREPLACE), -EEXIST);
	CHECK_EQ(fs_rename(fs, 1, "moved", 1, longname, FS_RENAME_EXCHANGE), 0);
	CHECK_EQ(fs_rmdir(fs, 1, "d"), 0);
	CHECK_EQ(fs_getattr(fs, 1, &st), 0);
	CHECK_EQ(st.st.st_nlink, 2);
	fs_unmount(fs);
}

static int count_entry(void *ctx, const char *name, size_t len, uint64_t ino, unsigned type,
		       int64_t next)
{
	(void)name; (void)len; (void)ino; (void)type; (void)next;
	(*(int *)ctx)++;
	return 0;
}

static void test_readdir_offsets_survive_removal(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	char name[32];
	int n = 0;

	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_EQ(fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st), 0);
	}
	for (int i = 0; i < 500; i += 2) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_EQ(fs_unlink(fs, 1, name), 0);
	}
	CHECK_EQ(fs_readdir(fs, 1, 0, count_entry, &n), 0);
	CHECK_EQ(n, 250 + 2);
	fs_unmount(fs);
	fs = mount_region();
	n = 0;
	CHECK_EQ(fs_readdir(fs, 1, 0, count_entry, &n), 0);
	CHECK_EQ(n, 250 + 2);
	fs_unmount(fs);
}

static void test_orphan_reclaimed_at_next_mount(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	uint64_t free_before = alloc_free_count(&fs->alloc);
	fs_unmount(fs);

	pid_t pid = fork();
	if (pid == 0) {
		/* a daemon that dies with an unlinked file still open */
		struct fs *f = mount_region();
		struct fs_attr st;
		static char buf[1 << 20];
		fs_mknod(f, 1, "o", S_IFREG | 0644, 0, &root_cred, &st);
		fs_open(f, st.st.st_ino, O_RDWR, NULL);
		fs_write(f, st.st.st_ino, 0, buf, sizeof(buf), false);
		fs_unlink(f, 1, "o");
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fs = mount_region();
	CHECK_EQ(alloc_free_count(&fs->alloc), free_before);
	CHECK_EQ(fs->pool.sb->orphan_head, 0);
	fs_unmount(fs);
}

static void test_xattr_flags_and_limits(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	char v[16];

	CHECK_EQ(fs_setxattr(fs, 1, "user.a", "1", 1, XATTR_REPLACE_FLAG, NULL), -ENODATA);
	CHECK_EQ(fs_setxattr(fs, 1, "user.a", "1", 1, 0, NULL), 0);
	CHECK_EQ(fs_setxattr(fs, 1, "user.a", "2", 1, XATTR_CREATE_FLAG, NULL), -EEXIST);
	CHECK_EQ(fs_getxattr(fs, 1, "user.a", v, 0), 1);
	CHECK_EQ(fs_getxattr(fs, 1, "user.b", v, sizeof(v)), -ENODATA);
	CHECK_EQ(fs_setxattr(fs, 1, "user.pmfuse.x", "1", 1, 0, NULL), -EPERM);
	CHECK_EQ(fs_setxattr(fs, 1, "user.long", "0123456789", 10, 0, NULL), 0);
	CHECK_EQ(fs_getxattr(fs, 1, "user.long", v, 2), -ERANGE);
	CHECK_EQ(fs_removexattr(fs, 1, "user.a"), 0);
	CHECK_EQ(fs_removexattr(fs, 1, "user.a"), -ENODATA);
	fs_unmount(fs);
}

/* How much metadata heap can still be allocated (probed on a copy). */
static size_t heap_free_bytes(void)
{
	char copy[300], cmd[700];
	size_t total = 0, sizes[] = { 1 << 20, 64 << 10, 4096 };
	PMEMoid oid;

	snprintf(copy, sizeof(copy), "%s.probe", region);
	snprintf(cmd, sizeof(cmd), "cp --sparse=always %s %s", region, copy);
	if (system(cmd))
		return 0;
	PMEMobjpool *pop = pmemobj_open(copy, PMFUSE_LAYOUT);
	if (!pop)
		return 0;
	for (int i = 0; i < 3; i++)
		while (pmemobj_alloc(pop, &oid, sizes[i], 0, NULL, NULL) == 0)
			total += sizes[i];
	pmemobj_close(pop);
	unlink(copy);
	return total;
}

struct names {
	char name[64][32];
	int n;
};

static int collect_name(void *ctx, const char *name, size_t len, uint64_t ino, unsigned type,
			int64_t next)
{
	struct names *ns = ctx;

	(void)ino; (void)type; (void)next;
	if (name[0] == '.' || ns->n == 64 || len >= sizeof(ns->name[0]))
		return 0;
	memcpy(ns->name[ns->n], name, len);
	ns->name[ns->n++][len] = 0;
	return 0;
}

static void test_kills_mid_transaction_do_not_leak_metadata_space(void)
{
	make_region(256 << 20);
	size_t before = heap_free_bytes();

	for (int round = 0; round < 16; round++) {
		pid_t pid = fork();
		if (pid == 0) {
			struct fs *f = mount_region();
			struct fs_attr st;
			static char b[4096];
			char name[32];
			for (int i = 0;; i++) {
				snprintf(name, sizeof(name), "r%d-%d", round, i);
				if (fs_mknod(f, 1, name, S_IFREG | 0644, 0, &root_cred, &st))
					_exit(1);
				for (int k = 0; k < 64; k++)
					fs_write(f, st.st.st_ino, (uint64_t)k * 8192, b, sizeof(b), false);
				fs_unlink(f, 1, name);
			}
		}
		usleep(150 * 1000);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		CHECK(WIFSIGNALED(status));	/* it was still working, not failing */
	}
	/*
	 * Mounting reclaims the last session's orphans.  A kill between create
	 * and unlink leaves a file whose data may hold a data piece: they go
	 * too, so the probe sees metadata only.
	 */
	struct fs *fs = mount_region();
	struct names ns = { 0 };
	CHECK_EQ(fs_readdir(fs, 1, 0, collect_name, &ns), 0);
	for (int i = 0; i < ns.n; i++)
		CHECK_EQ(fs_unlink(fs, 1, ns.name[i]), 0);
	uint64_t blocks, pieces, added, removed;
	alloc_area(&fs->alloc, &blocks, &pieces, &added, &removed);
	CHECK_EQ(pieces, 1);		/* run 0 */
	fs_unmount(fs);
	size_t after = heap_free_bytes();
	/*
	 * Header-less custom classes lost a 256 KiB chunk per kill (4 MiB here).
	 * The probe itself varies by a few chunks with where the kills land
	 * (partly used runs): up to 1.2 MiB was seen without any leak.
	 */
	if (after + (2 << 20) < before)
		fprintf(stderr, "heap free before %zu KiB, after 16 kills %zu KiB\n", before >> 10,
			after >> 10);
	CHECK(after + (2 << 20) >= before);
}

static void test_orphan_flag_on_linked_inode_is_refused(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	CHECK_EQ(fs_mknod(fs, 1, "keep", S_IFREG | 0644, 0, &root_cred, &st), 0);
	fs_unmount(fs);

	struct pool p;
	char why[POOL_WHY];
	CHECK_EQ(pool_open(&p, region, why, sizeof(why)), 0);
	struct pmfuse_inode *pi = (struct pmfuse_inode *)pool_ptr(&p, pool_ichunk(&p, st.st.st_ino / PMFUSE_INODES_PER_CHUNK)) +
				  st.st.st_ino % PMFUSE_INODES_PER_CHUNK;
	pi->flags |= PMFUSE_IF_ORPHAN;	/* one flipped bit */
	pmemobj_persist(p.pop, &pi->flags, sizeof(pi->flags));
	pool_close(&p);

	/* mounted from the clean-unmount record: the inode is refused on first use */
	unsetenv("PMFUSE_VERIFY_RECORD");
	fs = mount_region();
	CHECK_EQ(fs_lookup(fs, 1, "keep", &st), -EIO);
	CHECK_EQ(fs_mknod(fs, 1, "other", S_IFREG | 0644, 0, &root_cred, &st), 0);
	fs_unmount(fs);
	/* a mount that reads every inode refuses the region */
	struct fs_opts o = { 0 };
	setenv("PMFUSE_VERIFY_RECORD", "1", 1);
	CHECK(fs_mount(&fs, region, &o, why, sizeof(why)) == -EUCLEAN);
	CHECK(strstr(why, "orphan") != NULL);
}

static void test_full_metadata_heap_is_enospc_and_recovers(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	static char value[60000];
	struct fs_attr st;
	char name[32];
	int i, ret = 0;

	/* 60 KB xattrs live in the metadata heap: fill it */
	for (i = 0; i < 10000 && ret == 0; i++) {
		snprintf(name, sizeof(name), "x%d", i);
		ret = fs_mknod(fs, 1, name, S_IFREG | 0644, 0, &root_cred, &st);
		if (!ret) {
			ret = fs_setxattr(fs, st.st.st_ino, "user.big", value, sizeof(value), 0, NULL);
			fs_forget(fs, st.st.st_ino, 1);	/* as the kernel would */
		}
	}
	CHECK_EQ(ret, -ENOSPC);
	CHECK(i > 10);
	for (int k = 0; k < i; k++) {
		snprintf(name, sizeof(name), "x%d", k);
		fs_unlink(fs, 1, name);
	}
	CHECK_EQ(fs_mknod(fs, 1, "after", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_setxattr(fs, st.st.st_ino, "user.big", value, sizeof(value), 0, NULL), 0);
	fs_unmount(fs);
	fs = mount_region();	/* and the image is still valid */
	CHECK_EQ(fs_lookup(fs, 1, "after", &st), 0);
	fs_unmount(fs);
}

static void on_segv(int sig)
{
	(void)sig;
	_exit(42);
}

static void test_zero_buffer_is_read_only(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	pid_t pid = fork();

	if (pid == 0) {
		/* our own handler, so the answer is the same under ASan */
		struct sigaction sa = { .sa_handler = on_segv };
		sigaction(SIGSEGV, &sa, NULL);
		((volatile char *)fs->zero)[100] = 1;	/* must fault */
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42);
	fs_unmount(fs);
}

/* devdax has no read/write: headers go through a mapping there.  The
 * mapping path must agree byte for byte with plain pread/pwrite. */
static void test_region_io_through_a_mapping(void)
{
	char path[] = "/dev/shm/pmfuse-unit-io-XXXXXX";
	unsigned char a[5000], b[5000], c[5000];
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, 4 << 20), 0);
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (unsigned char)(i * 7 + 3);
	CHECK_EQ(region_mapped_io(fd, a, sizeof(a), 12345, true), 0);
	CHECK_EQ(pread(fd, b, sizeof(b), 12345), (long long)sizeof(b));
	CHECK(memcmp(a, b, sizeof(a)) == 0);
	memset(c, 0, sizeof(c));
	CHECK_EQ(region_mapped_io(fd, c, sizeof(c), 12345, false), 0);
	CHECK(memcmp(a, c, sizeof(a)) == 0);
	CHECK_EQ(region_pread(fd, c, sizeof(c), 12345), 0);
	CHECK(memcmp(a, c, sizeof(a)) == 0);
	/* past the end: an error, never a short read */
	CHECK_EQ(region_mapped_io(fd, c, sizeof(c), (4 << 20) - 100, false), -EINVAL);
	CHECK_EQ(region_pread(fd, c, sizeof(c), (4 << 20) - 100), -EINVAL);
	close(fd);
	unlink(path);
}

/* What a change of contents the kernel leaves to us must drop first. */
static void test_kill_priv_drops_caps_and_setid_bits(void)
{
	make_region(64 << 20);
	struct fs *fs = mount_region();
	/* pid 0: no /proc to read, so root holds CAP_FSETID and the fsgid is the only group */
	const struct fs_cred user = { 1000, 1000, 0, 0 }, member = { 1000, 0, 0, 0 };
	struct fs_attr st;
	struct stat a = { .st_mode = 06755 };
	char v[8];

	CHECK_EQ(fs_mknod(fs, 1, "f", S_IFREG | 0644, 0, &root_cred, &st), 0);
	uint64_t ino = st.st.st_ino;
	CHECK_EQ(st.st.st_gid, 0);
	CHECK_EQ(fs_kill_priv(fs, ino, &user), 0);		/* nothing to drop */
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE, NULL, &st), 0);
	CHECK_EQ(fs_setxattr(fs, ino, "user.keep", "1", 1, 0, NULL), 0);
	CHECK_EQ(fs_kill_priv(fs, ino, &root_cred), 0);	/* root keeps set-id, no caps */
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 06755);
	CHECK_EQ(fs_setxattr(fs, ino, "security.capability", "capsdata", 8, 0, NULL), 0);
	CHECK_EQ(fs_kill_priv(fs, ino, &root_cred), 1);	/* caps go even for root */
	CHECK_EQ(fs_getxattr(fs, ino, "security.capability", v, sizeof(v)), -ENODATA);
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 06755);
	CHECK_EQ(fs_setxattr(fs, ino, "security.capability", "capsdata", 8, 0, NULL), 0);
	CHECK_EQ(fs_kill_priv(fs, ino, &user), 1);		/* both, one transaction */
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0755);
	CHECK_EQ(fs_getxattr(fs, ino, "security.capability", v, sizeof(v)), -ENODATA);
	CHECK_EQ(fs_getxattr(fs, ino, "user.keep", v, sizeof(v)), 1);
	/* setgid without g+x: a group member keeps it, anyone else drops it */
	a.st_mode = 02745;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE, NULL, &st), 0);
	CHECK_EQ(fs_kill_priv(fs, ino, &member), 0);
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 02745);
	CHECK_EQ(fs_kill_priv(fs, ino, &user), 1);
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0745);
	/* a truncate drops what a write does; a mode set with it wins */
	a.st_mode = 06755;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE, NULL, &st), 0);
	a.st_size = 100;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_SIZE, &root_cred, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 06755);
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_SIZE | FS_SET_MODE, &user, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 06755);
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_SIZE, &user, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0755);
	/* chown: setuid goes even for root, setgid only with g+x (root is in every group) */
	a.st_mode = 06745;
	a.st_uid = 5;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE, NULL, &st), 0);
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_UID, &root_cred, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 02745);
	a.st_mode = 06755;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE, NULL, &st), 0);
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_UID, &root_cred, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0755);
	a.st_mode = 02745;
	CHECK_EQ(fs_setattr(fs, ino, &a, FS_SET_MODE | FS_SET_UID, &root_cred, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 02745);		/* a mode set with it wins */
	fs_unmount(fs);
	fs = mount_region();
	CHECK_EQ(fs_getxattr(fs, ino, "security.capability", v, sizeof(v)), -ENODATA);
	CHECK_EQ(fs_getattr(fs, ino, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 02745);
	fs_unmount(fs);
}

/* Groups and CAP_FSETID come from the caller's /proc/<tid>/status. */
static void test_cred_reads_groups_and_capabilities_of_the_caller(void)
{
	const struct fs_cred self = { getuid(), getgid(), (pid_t)gettid(), 0 };
	const struct fs_cred gone = { 1000, 1000, 0, 0 }, gone_root = { 0, 0, 0, 0 };
	gid_t keep[64];
	int n = getgroups(64, keep);

	CHECK(n >= 0);
	CHECK(fs_cred_in_group(&gone, 1000));
	CHECK(!fs_cred_in_group(&gone, 4242));
	CHECK(!fs_cred_capable_fsetid(&gone));
	CHECK(fs_cred_capable_fsetid(&gone_root));
	CHECK(fs_cred_capable_fsetid(NULL));
	if (geteuid() != 0)
		return;		/* setgroups needs root */
	gid_t g[] = { 4241, 4242, 4243 };
	CHECK_EQ(setgroups(3, g), 0);
	CHECK(fs_cred_in_group(&self, 4242));
	CHECK(fs_cred_in_group(&self, 4243));
	CHECK(!fs_cred_in_group(&self, 4244));
	CHECK_EQ(setgroups((size_t)n, keep), 0);
	CHECK(fs_cred_capable_fsetid(&self));		/* root with its capabilities */
}

/* An ACL in xattr form: version 2, then (tag, perm, id) entries. */
static size_t make_acl(unsigned char *buf, const uint32_t (*e)[3], size_t n)
{
	uint32_t v = 2;

	memcpy(buf, &v, 4);
	for (size_t i = 0; i < n; i++) {
		uint16_t tag = (uint16_t)e[i][0], perm = (uint16_t)e[i][1];
		memcpy(buf + 4 + 8 * i, &tag, 2);
		memcpy(buf + 6 + 8 * i, &perm, 2);
		memcpy(buf + 8 + 8 * i, &e[i][2], 4);
	}
	return 4 + 8 * n;
}

#define ACL(buf, ...) make_acl(buf, (const uint32_t[][3]){ __VA_ARGS__ }, \
			       sizeof((const uint32_t[][3]){ __VA_ARGS__ }) / 12)
enum { UO = 1, U = 2, GO = 4, G = 8, MASK = 0x10, OTH = 0x20 };
#define NOID 0xffffffffu

/* The core's half of POSIX ACLs: checks, mode in step, inheritance. */
static void test_posix_acls_follow_the_kernels_rules(void)
{
	unsigned char a[128], b[128];
	size_t n;
	mode_t m;

	n = ACL(a, { UO, 6, NOID }, { GO, 4, NOID }, { OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), 0);
	m = S_IFREG | 04777;
	CHECK_EQ(acl_equiv_mode(a, n, &m), 0);			/* the mode says it all */
	CHECK_EQ(m, S_IFREG | 04640);
	n = ACL(a, { UO, 6, NOID }, { U, 4, 5 }, { U, 6, 7 }, { GO, 4, NOID }, { G, 2, 9 },
		{ MASK, 6, NOID }, { OTH, 1, NOID });
	CHECK_EQ(acl_check(a, n), 0);
	m = 0;
	CHECK_EQ(acl_equiv_mode(a, n, &m), 1);
	CHECK_EQ(m, 0661);					/* the mask is the group class */
	acl_chmod(a, n, 0754);
	memcpy(b, a, n);
	CHECK_EQ(ACL(a, { UO, 7, NOID }, { U, 4, 5 }, { U, 6, 7 }, { GO, 4, NOID }, { G, 2, 9 },
		     { MASK, 5, NOID }, { OTH, 4, NOID }), n);
	CHECK(memcmp(a, b, n) == 0);
	/* refused: users out of order, no mask with named entries, bad permission or tag */
	n = ACL(a, { UO, 6, NOID }, { U, 4, 7 }, { U, 4, 5 }, { GO, 4, NOID }, { MASK, 6, NOID },
		{ OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), -EINVAL);
	n = ACL(a, { UO, 6, NOID }, { U, 4, 7 }, { GO, 4, NOID }, { OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), -EINVAL);
	n = ACL(a, { UO, 8, NOID }, { GO, 4, NOID }, { OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), -EINVAL);
	n = ACL(a, { UO, 6, NOID }, { GO, 4, NOID }, { 0x40, 0, NOID }, { OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), -EINVAL);
	n = ACL(a, { GO, 4, NOID }, { UO, 6, NOID }, { OTH, 0, NOID });
	CHECK_EQ(acl_check(a, n), -EINVAL);
	CHECK_EQ(acl_check(a, 4), -EINVAL);
	CHECK_EQ(acl_check(a, n - 1), -EINVAL);
	/* create: the mode masks the default ACL's owner, mask and other entries */
	n = ACL(a, { UO, 7, NOID }, { U, 7, 5 }, { GO, 5, NOID }, { MASK, 7, NOID },
		{ OTH, 5, NOID });
	m = S_IFREG | 0640;
	CHECK_EQ(acl_create_masq(a, n, &m), 1);
	CHECK_EQ(m, S_IFREG | 0640);
	CHECK_EQ(ACL(b, { UO, 6, NOID }, { U, 7, 5 }, { GO, 5, NOID }, { MASK, 4, NOID },
		     { OTH, 0, NOID }), n);
	CHECK(memcmp(a, b, n) == 0);
	n = ACL(a, { UO, 7, NOID }, { GO, 0, NOID }, { OTH, 5, NOID });
	m = S_IFDIR | 0777;
	CHECK_EQ(acl_create_masq(a, n, &m), 0);
	CHECK_EQ(m, S_IFDIR | 0705);

	/* through the filesystem */
	make_region(64 << 20);
	struct fs *fs = mount_region();
	struct fs_attr st;
	const struct fs_cred outsider = { 1000, 1000, 0, 022 }, umasked = { 0, 0, 0, 027 };
	char v[128];

	CHECK_EQ(fs_mknod(fs, 1, "f", S_IFREG | 02775, 0, &root_cred, &st), 0);
	uint64_t f = st.st.st_ino;
	n = ACL(a, { UO, 7, NOID }, { GO, 5, NOID }, { OTH, 1, NOID });
	CHECK_EQ(fs_setxattr(fs, f, ACL_DEFAULT_XATTR, a, n, 0, NULL), -EACCES);
	CHECK_EQ(fs_setxattr(fs, f, ACL_ACCESS_XATTR, a, 4, 0, NULL), -EINVAL);
	CHECK_EQ(fs_setxattr(fs, f, ACL_ACCESS_XATTR, a, n, 0, &outsider), 0);
	CHECK_EQ(fs_getattr(fs, f, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0751);			/* setgid gone: not a member */
	CHECK_EQ(fs_getxattr(fs, f, ACL_ACCESS_XATTR, v, sizeof(v)), -ENODATA);
	n = ACL(a, { UO, 7, NOID }, { U, 7, 5 }, { GO, 5, NOID }, { MASK, 7, NOID },
		{ OTH, 0, NOID });
	CHECK_EQ(fs_mknod(fs, 1, "d", S_IFDIR | 0777, 0, &root_cred, &st), 0);
	uint64_t d = st.st.st_ino;
	CHECK_EQ(fs_setxattr(fs, d, ACL_DEFAULT_XATTR, a, n, 0, NULL), 0);
	CHECK_EQ(fs_mknod(fs, d, "g", S_IFREG | 0666, 0, &umasked, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0660);			/* the ACL, not the umask */
	CHECK_EQ(fs_getxattr(fs, st.st.st_ino, ACL_ACCESS_XATTR, v, sizeof(v)), (ssize_t)n);
	CHECK_EQ(fs_getxattr(fs, st.st.st_ino, ACL_DEFAULT_XATTR, v, sizeof(v)), -ENODATA);
	CHECK_EQ(fs_mknod(fs, d, "sub", S_IFDIR | 0777, 0, &umasked, &st), 0);
	CHECK_EQ(fs_getxattr(fs, st.st.st_ino, ACL_DEFAULT_XATTR, v, sizeof(v)), (ssize_t)n);
	CHECK(memcmp(v, a, n) == 0);
	CHECK_EQ(fs_mknod(fs, 1, "h", S_IFREG | 0666, 0, &umasked, &st), 0);
	CHECK_EQ(st.st.st_mode & 07777, 0640);			/* no default ACL: the umask */
	/* chmod rewrites the access ACL in the same transaction */
	CHECK_EQ(fs_lookup(fs, d, "g", &st), 0);
	uint64_t g = st.st.st_ino;
	struct stat sa = { .st_mode = 0604 };
	CHECK_EQ(fs_setattr(fs, g, &sa, FS_SET_MODE, NULL, &st), 0);
	fs_unmount(fs);
	fs = mount_region();
	CHECK_EQ(fs_getxattr(fs, g, ACL_ACCESS_XATTR, v, sizeof(v)), (ssize_t)n);
	CHECK_EQ(ACL(b, { UO, 6, NOID }, { U, 7, 5 }, { GO, 5, NOID }, { MASK, 0, NOID },
		     { OTH, 4, NOID }), n);
	CHECK(memcmp(v, b, n) == 0);
	fs_unmount(fs);
}

int main(void)
{
	/* every remount that takes the clean-unmount record also rebuilds and compares */
	setenv("PMFUSE_VERIFY_RECORD", "1", 1);
	RUN(test_alloc_aligned_runs_and_enospc);
	RUN(test_data_area_grows_and_shrinks);
	RUN(test_write_read_roundtrip_and_remount);
	RUN(test_hole_read_allocates_nothing);
	RUN(test_large_write_uses_huge_leaves);
	RUN(test_punch_splits_leaf_and_returns_space);
	RUN(test_unwritten_leaves_split_convert_and_fold);
	RUN(test_huge_counters_follow_every_map_change);
	RUN(test_reclaim_is_idempotent);
	RUN(test_empty_inode_chunks_are_freed_and_generations_stay_new);
	RUN(test_stats_read_instantiates_no_inode);
	RUN(test_namespace_errors);
	RUN(test_readdir_offsets_survive_removal);
	RUN(test_orphan_reclaimed_at_next_mount);
	RUN(test_xattr_flags_and_limits);
	RUN(test_kills_mid_transaction_do_not_leak_metadata_space);
	RUN(test_orphan_flag_on_linked_inode_is_refused);
	RUN(test_full_metadata_heap_is_enospc_and_recovers);
	RUN(test_zero_buffer_is_read_only);
	RUN(test_region_io_through_a_mapping);
	RUN(test_kill_priv_drops_caps_and_setid_bits);
	RUN(test_cred_reads_groups_and_capabilities_of_the_caller);
	RUN(test_posix_acls_follow_the_kernels_rules);
	unlink(region);
	return test_failures ? 1 : 0;
}
