/*
 * Unit tests for the validator fixes the fuzzer led to (tests/fuzz/
 * regressions has the fuzz inputs themselves): each damages one field of a
 * freshly formatted region by hand and checks the refusal.
 */
#include "core.h"
#include "pool.h"
#include "../unit/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#define OBJ_DSC_OFF		4096u
#define OBJ_DSC_CSUM_OFF	(OBJ_DSC_OFF + 2040u)
#define OBJ_LANES_OFFSET_OFF	(OBJ_DSC_OFF + 1024u)
#define OBJ_ROOT_OFFSET_OFF	(OBJ_DSC_OFF + 2048u)

static char region[256];
static const struct fs_cred root_cred = { 0, 0, 0, 0 };

static void make_region(void)
{
	snprintf(region, sizeof(region), "/dev/shm/pmfuse-damage-%d", getpid());
	unit_make_region(region, PMFUSE_MIN_REGION, "damage");
}

/* A fresh region, mounted. */
static struct fs *mount_fresh(void)
{
	make_region();
	return unit_mount(region);
}

/* The damaged region must refuse to mount, with why naming the damage. */
static void check_refused(const char *because)
{
	struct fs_opts o = { 0 };
	struct fs *fs;
	char why[FS_WHY_MAX];

	CHECK_EQ(fs_mount(&fs, region, &o, why, sizeof(why)), -EUCLEAN);
	if (!strstr(why, because))
		fprintf(stderr, "refused because \"%s\", not \"%s\"\n", why, because);
	CHECK(strstr(why, because) != NULL);
}

/*
 * Damage to inodes a mount from the clean-unmount record does not read:
 * that mount succeeds and refuses the inodes when first used (both are
 * looked up: either may be the one found sharing); a mount that reads
 * every inode (PMFUSE_VERIFY_RECORD=1 rebuilds too) refuses the region.
 */
static void check_refused_at_first_use(const char *because, const char *a, const char *b)
{
	struct fs_opts o = { 0 };
	struct fs_attr st;
	struct fs *fs;
	char why[FS_WHY_MAX];

	unsetenv("PMFUSE_VERIFY_RECORD");
	CHECK_EQ(fs_mount(&fs, region, &o, why, sizeof(why)), 0);
	int ea = fs_lookup(fs, PMFUSE_ROOT_INO, a, &st), eb = fs_lookup(fs, PMFUSE_ROOT_INO, b, &st);
	CHECK(ea == -EIO || eb == -EIO);
	CHECK(ea == 0 || ea == -EIO);
	CHECK(eb == 0 || eb == -EIO);
	fs_unmount(fs);
	setenv("PMFUSE_VERIFY_RECORD", "1", 1);
	check_refused(because);
	unsetenv("PMFUSE_VERIFY_RECORD");
}

static uint64_t peek64(uint64_t off)
{
	uint64_t v = 0;
	int fd = open(region, O_RDONLY);

	if (fd < 0 || pread(fd, &v, sizeof(v), (off_t)off) != sizeof(v))
		exit(2);
	close(fd);
	return v;
}

static void poke64(uint64_t off, uint64_t v)
{
	int fd = open(region, O_RDWR);

	if (fd < 0 || pwrite(fd, &v, sizeof(v), (off_t)off) != sizeof(v))
		exit(2);
	close(fd);
}

/* libpmemobj's descriptor checksum: Fletcher-64 over 2 KiB of 32-bit words. */
static void fix_descriptor_checksum(void)
{
	unsigned char d[2048];
	uint32_t lo = 0, hi = 0, w;
	int fd = open(region, O_RDONLY);

	if (fd < 0 || pread(fd, d, sizeof(d), OBJ_DSC_OFF) != (ssize_t)sizeof(d))
		exit(2);
	close(fd);
	for (size_t i = 0; i < sizeof(d); i += 4) {
		memcpy(&w, d + i, 4);
		lo += i >= 2040 ? 0 : w;
		hi += lo;
	}
	poke64(OBJ_DSC_CSUM_OFF, (uint64_t)hi << 32 | lo);
}

/* pool_check_header() on the region's first bytes, as pool_open() and fsck do. */
static int check_header(uint64_t *root, char *why, size_t whylen)
{
	static unsigned char head[POOL_HEADER_SIZE];
	int fd = open(region, O_RDONLY);

	if (fd < 0 || pread(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head))
		exit(2);
	close(fd);
	return pool_check_header(head, PMFUSE_MIN_REGION, region, root, why, whylen);
}

static int open_refusal(char *why, size_t whylen)
{
	struct pool p;
	int ret = pool_open(&p, region, why, whylen);

	if (ret == 0)
		pool_close(&p);
	return ret;
}

static void test_fresh_region_opens(void)
{
	char why[POOL_WHY];
	uint64_t root;

	make_region();
	uint64_t csum = peek64(OBJ_DSC_CSUM_OFF);
	fix_descriptor_checksum();	/* computes what libpmemobj wrote */
	CHECK_EQ(peek64(OBJ_DSC_CSUM_OFF), csum);
	CHECK_EQ(check_header(&root, why, sizeof(why)), 0);
	CHECK_EQ(open_refusal(why, sizeof(why)), 0);
}

static void test_lanes_offset_with_right_checksum_is_refused_before_pmemobj(void)
{
	char why[POOL_WHY];
	uint64_t root;

	make_region();
	poke64(OBJ_LANES_OFFSET_OFF, 1);
	fix_descriptor_checksum();	/* pmemobj_open() would crash on it */
	CHECK_EQ(check_header(&root, why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "lanes, heap") != NULL);
	CHECK_EQ(open_refusal(why, sizeof(why)), -EINVAL);
}

static void test_misaligned_root_offset_is_refused(void)
{
	char why[POOL_WHY];

	make_region();
	poke64(OBJ_ROOT_OFFSET_OFF, peek64(OBJ_ROOT_OFFSET_OFF) + 1);
	CHECK_EQ(open_refusal(why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "superblock pointer") != NULL);
}

static void test_struct_offsets_must_be_aligned(void)
{
	struct pool p;
	char why[POOL_WHY];

	make_region();
	CHECK_EQ(pool_open(&p, region, why, sizeof(why)), 0);
	uint64_t off = pool_off(&p, p.itable);
	CHECK(pool_struct_ok(&p, off, 64));
	CHECK(!pool_struct_ok(&p, off + 4, 64));
	CHECK(pool_meta_range_ok(&p, off + 4, 64));	/* bytes (names) may start anywhere */
	pool_close(&p);
}

static void test_misaligned_directory_table_refuses_mount(void)
{
	struct fs *fs = mount_fresh();
	struct fs_attr st;

	CHECK_EQ(fs_mknod(fs, PMFUSE_ROOT_INO, "f", S_IFREG | 0644, 0, &root_cred, &st), 0);
	uint64_t at = pool_off(&fs->pool, inode_record(fs, PMFUSE_ROOT_INO)) +
		      offsetof(struct pmfuse_inode, dir_off);
	fs_unmount(fs);
	poke64(at, peek64(at) + 4);
	check_refused("directory table");
}

/*
 * Format 5: a leaf of the inode table that points outside metadata would
 * hide every inode of its 512 chunks (the root's among them): refused.
 */
static void test_inode_table_leaf_outside_metadata_refuses_mount(void)
{
	struct fs *fs = mount_fresh();
	uint64_t top = pool_off(&fs->pool, fs->pool.itable) + offsetof(struct pmfuse_itable, chunk);
	uint64_t leaf = fs->pool.itable->chunk[0];

	CHECK(leaf != 0);
	fs_unmount(fs);
	poke64(top, 4096);	/* the pool header */
	check_refused("inode table leaf 0");
	poke64(top, leaf + 4);	/* misaligned */
	check_refused("inode table leaf 0");
	poke64(top, leaf);
	fs = unit_mount(region);
	fs_unmount(fs);
}

/* Two files, each with an xattr set; returns the offsets of their inode records. */
static void two_files_with_xattrs(uint64_t *a, uint64_t *b, uint64_t *b_ino)
{
	struct fs *fs = mount_fresh();
	struct fs_attr st;

	CHECK_EQ(fs_mknod(fs, PMFUSE_ROOT_INO, "a", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_setxattr(fs, st.st.st_ino, "user.a", "1", 1, 0, NULL), 0);
	*a = pool_off(&fs->pool, inode_record(fs, st.st.st_ino));
	CHECK_EQ(fs_mknod(fs, PMFUSE_ROOT_INO, "b", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_setxattr(fs, st.st.st_ino, "user.b", "2", 1, 0, NULL), 0);
	/* past 64 blocks: the map root becomes a node */
	CHECK_EQ(fs_write(fs, st.st.st_ino, 100 * 4096, "x", 1, false), 1);
	*b = pool_off(&fs->pool, inode_record(fs, st.st.st_ino));
	*b_ino = st.st.st_ino;
	fs_unmount(fs);
}

static void test_xattr_set_shared_by_two_inodes_is_refused(void)
{
	uint64_t a, b, ino;
	const uint64_t x = offsetof(struct pmfuse_inode, xattr_off);

	two_files_with_xattrs(&a, &b, &ino);
	/* deleting one would free the set the other still uses */
	poke64(b + x, peek64(a + x));
	check_refused_at_first_use("not an allocated object of its own", "a", "b");
}

static void test_map_node_that_is_not_an_object_is_refused(void)
{
	uint64_t a, b, ino;
	const uint64_t m = offsetof(struct pmfuse_inode, map_root);

	two_files_with_xattrs(&a, &b, &ino);
	CHECK_EQ(peek64(b + m) & 1, 0);		/* a node, not a leaf */
	/*
	 * Free inode records 10 and 11 of the same chunk: 512 zero bytes, a
	 * node of holes that every range check accepts.  Deleting the file
	 * would hand libpmemobj an offset inside the inode chunk to free.
	 */
	poke64(b + m, b - (ino % PMFUSE_INODES_PER_CHUNK) * 256 + 10 * 256);
	check_refused_at_first_use("file map", "a", "b");
}

/*
 * A region whose data area grew by a piece (more data than run 0 holds),
 * unmounted: *tab is the piece table's offset.
 */
static void region_with_a_piece(uint64_t *tab)
{
	static char buf[1 << 20];
	struct fs *fs = mount_fresh();
	struct fs_attr st;

	memset(buf, 'p', sizeof(buf));
	CHECK_EQ(fs_mknod(fs, 1, "big", S_IFREG | 0644, 0, &root_cred, &st), 0);
	CHECK_EQ(fs_open(fs, st.st.st_ino, O_RDWR, NULL), 0);
	uint64_t run0 = fs->pool.sb->geo.runs[0].len;
	for (uint64_t off = 0; off < run0 + (2 << 20); off += sizeof(buf))
		CHECK_EQ(fs_write(fs, st.st.st_ino, off, buf, sizeof(buf), false), sizeof(buf));
	fs_release(fs, st.st.st_ino);
	/* one piece or more: growth keeps heap beside a piece for metadata */
	CHECK(fs->pool.ptab->count >= 1);
	*tab = fs->pool.sb->pieces_off;
	fs_unmount(fs);
}

/* pool_open() (mount, fsck, pmfusectl) refuses; why names the damage. */
static void check_open_refused(const char *because)
{
	char why[POOL_WHY];

	why[0] = 0;
	int ret = open_refusal(why, sizeof(why));
	if (ret != -EINVAL || !strstr(why, because))
		fprintf(stderr, "%d, refused because \"%s\", not \"%s\"\n", ret, why, because);
	CHECK_EQ(ret, -EINVAL);
	CHECK(strstr(why, because) != NULL);
}

#define PIECE(i, field) (tab + offsetof(struct pmfuse_pieces, p) + \
			 (i) * sizeof(struct pmfuse_piece) + offsetof(struct pmfuse_piece, field))

static void test_damaged_piece_table_refuses_mount(void)
{
	uint64_t tab;

	region_with_a_piece(&tab);
	char why[POOL_WHY];
	CHECK_EQ(open_refusal(why, sizeof(why)), 0);
	uint64_t off = peek64(PIECE(0, off)), len = peek64(PIECE(0, len));
	uint64_t count = peek64(tab + offsetof(struct pmfuse_pieces, count));

	/* a piece over run 0 (where the backup superblock is) */
	poke64(PIECE(0, len), off + len);
	poke64(PIECE(0, off), 8192);
	check_open_refused("data piece 0");
	poke64(PIECE(0, off), off);
	/* running off the end of the region */
	poke64(PIECE(0, len), UINT64_MAX - 4095);
	check_open_refused("data piece 0");
	/* not whole blocks */
	poke64(PIECE(0, len), len - 100);
	check_open_refused("data piece 0");
	poke64(PIECE(0, len), len);
	/* more entries than the table holds */
	poke64(tab + offsetof(struct pmfuse_pieces, count), peek64(tab + offsetof(struct pmfuse_pieces, cap)) + 1);
	check_open_refused("piece table");
	poke64(tab + offsetof(struct pmfuse_pieces, count), count);
	/* the table itself inside a piece */
	poke64(offsetof(struct pmfuse_super, pieces_off) + peek64(OBJ_ROOT_OFFSET_OFF), off + 4096);
	check_open_refused("piece table");
	poke64(offsetof(struct pmfuse_super, pieces_off) + peek64(OBJ_ROOT_OFFSET_OFF), tab);
	CHECK_EQ(open_refusal(why, sizeof(why)), 0);
	struct fs *fs = unit_mount(region);
	fs_unmount(fs);
}

/*
 * A piece that names no allocation of its own (here: the space of the
 * allocation before it, shifted) would let libpmemobj hand its blocks out
 * as metadata.  The mount checks it against the heap.
 */
static void test_piece_that_is_not_an_allocation_refuses_mount(void)
{
	uint64_t tab;

	region_with_a_piece(&tab);
	uint64_t obj = peek64(PIECE(0, obj));
	poke64(PIECE(0, obj), obj + 4096);
	poke64(PIECE(0, off), peek64(PIECE(0, off)) + 4096);
	poke64(PIECE(0, len), peek64(PIECE(0, len)) - 4096);
	check_refused("data piece is not an allocated object");
}

int main(void)
{
	RUN(test_fresh_region_opens);
	RUN(test_lanes_offset_with_right_checksum_is_refused_before_pmemobj);
	RUN(test_misaligned_root_offset_is_refused);
	RUN(test_struct_offsets_must_be_aligned);
	RUN(test_misaligned_directory_table_refuses_mount);
	RUN(test_inode_table_leaf_outside_metadata_refuses_mount);
	RUN(test_xattr_set_shared_by_two_inodes_is_refused);
	RUN(test_map_node_that_is_not_an_object_is_refused);
	RUN(test_damaged_piece_table_refuses_mount);
	RUN(test_piece_that_is_not_an_allocation_refuses_mount);
	unlink(region);
	return test_failures ? 1 : 0;
}
