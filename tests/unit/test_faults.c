/*
 * Allocation failure at every allocation point of a workload.
 *
 * The workload runs once with fault injection counting (fault_arm(0)) to
 * learn how many allocations it makes; then, for every k, on a fresh copy
 * of the same region, it runs again with the k-th allocation failing.  The
 * step that meets the failure must return ENOSPC (data blocks, or metadata
 * through an aborted transaction) and change nothing; run again it must
 * succeed.  Afterwards the filesystem holds exactly what a run without
 * failures leaves, fsck.pmfuse -n is clean, and once everything is deleted
 * every data block is free again: nothing leaked, nothing half-published.
 *
 * usage: test_faults FSCK_BINARY
 */
#include "fault.h"
#include "core.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *fsck_bin;
static char pristine[128], region[128];
static const struct fs_cred root = { 0, 0, 0, 0 };

static struct fs *mount_it(void)
{
	return unit_mount(region);
}

/* Data blocks files hold (statfs's free count also moves with metadata). */
static uint64_t used_blocks(struct fs *fs)
{
	return alloc_used_blocks(&fs->alloc);
}

static int fsck_clean(void)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		execl(fsck_bin, fsck_bin, "-n", region, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ------------------------------------------------------------ workload */

static char data[256 << 10];
static const char long_name[] = "a-name-longer-than-fits-inline-in-a-dirent-slot-of-sixty-four";
static char long_target[300];

static uint64_t lookup_ino(struct fs *fs, uint64_t dir, const char *name)
{
	struct fs_attr st;

	return fs_lookup(fs, dir, name, &st) ? 0 : st.st.st_ino;
}

static int mkfile(struct fs *fs, uint64_t dir, const char *name)
{
	struct fs_attr st;

	return fs_mknod(fs, dir, name, S_IFREG | 0644, 0, &root, &st);
}

static int put(struct fs *fs, uint64_t ino, uint64_t off, size_t len)
{
	ssize_t n = fs_write(fs, ino, off, data, len, false);

	return n < 0 ? (int)n : n == (ssize_t)len ? 0 : -EIO;
}

/* One step of the workload: 0 or -errno, and it must be all-or-nothing. */
static int step(struct fs *fs, int i)
{
	struct fs_attr st;
	uint64_t d = lookup_ino(fs, 1, "d");
	uint64_t f = d ? lookup_ino(fs, d, "f") : 0;
	char name[32];

	switch (i) {
	case 0: return fs_mknod(fs, 1, "d", S_IFDIR | 0755, 0, &root, &st);
	case 1: return mkfile(fs, d, "f");
	case 2: return put(fs, f, 0, 200 << 10);		/* blocks, map nodes */
	case 3: return put(fs, f, 10 << 20, 8192);		/* sparse: deeper map */
	case 4: return put(fs, f, 4096, 100);			/* in place */
	case 5: return fs_symlink(fs, d, "s", long_target, &root, &st);
	case 6: return mkfile(fs, d, long_name);
	case 7: return fs_setxattr(fs, f, "user.k", data, 3000, 0, NULL);
	case 8: return fs_link(fs, f, 1, "l", &st);
	case 9: return fs_rename(fs, d, "f", 1, "g", 0);
	case 10: return fs_fallocate(fs, lookup_ino(fs, 1, "g"), 0, 20 << 20, 4 << 20);
	case 11:	/* a second directory chunk and a bigger chunk table */
		for (int k = 0; k < 70; k++) {
			snprintf(name, sizeof(name), "n%02d", k);
			if (lookup_ino(fs, d, name))
				continue;	/* made before an earlier failure */
			int r = mkfile(fs, d, name);
			if (r)
				return r;
		}
		return 0;
	case 12: {
		struct stat a = { .st_size = 5000 };
		return fs_setattr(fs, lookup_ino(fs, 1, "g"), &a, FS_SET_SIZE, NULL, &st);
	}
	case 13: return fs_fallocate(fs, lookup_ino(fs, 1, "g"),
				      FALLOC_FL_ZERO_RANGE, 100, 3 << 20);
	case 14: {
		uint64_t c = 0;
		int r = mkfile(fs, 1, "copy");
		if (r == 0 || r == -EEXIST)
			c = lookup_ino(fs, 1, "copy");
		if (!c)
			return r;
		/* a failure part way is a short copy, as for write: go on from there */
		for (uint64_t done = 0; done < (1 << 20);) {
			ssize_t n = fs_copy_range(fs, lookup_ino(fs, 1, "g"), done, c, done,
						  (1 << 20) - done);
			if (n <= 0)
				return n < 0 ? (int)n : -EIO;
			done += (uint64_t)n;
		}
		return 0;
	}
	case 15: return fs_unlink(fs, 1, "l");
	/* unwritten blocks past the end, then writes that convert some (leaf splits) */
	case 16: return fs_fallocate(fs, lookup_ino(fs, 1, "g"), FALLOC_FL_KEEP_SIZE,
				      4 << 20, 2 << 20);
	case 17: return put(fs, lookup_ino(fs, 1, "g"), (1 << 20) + 100, 20000);
	case 18: return put(fs, lookup_ino(fs, 1, "g"), (5 << 20) - 10, 8300);
	}
	return 1;	/* no such step */
}
#define NSTEPS 19

/* The whole workload; a failed step is checked and run again. */
static int run_workload(struct fs *fs, int *failures)
{
	for (int i = 0; i < NSTEPS; i++) {
		int r = step(fs, i);
		if (r == -ENOSPC || r == -ENOMEM) {
			(*failures)++;
			fault_disarm();
			r = step(fs, i);
		}
		if (r) {
			fprintf(stderr, "step %d: %s\n", i, strerror(-r));
			return r;
		}
	}
	return 0;
}

/* The state the workload leaves, as text; a failure must not change it. */
static int collect(void *ctx, const struct fs_seg *segs, int n, size_t total)
{
	unsigned long *sum = ctx;

	(void)total;
	for (int i = 0; i < n; i++)
		for (size_t j = 0; j < segs[i].len; j++)
			*sum = *sum * 31 + ((const unsigned char *)segs[i].ptr)[j];
	return 0;
}

static void describe(struct fs *fs, char *out, size_t size)
{
	uint64_t d = lookup_ino(fs, 1, "d"), g = lookup_ino(fs, 1, "g");
	uint64_t c = lookup_ino(fs, 1, "copy");
	unsigned long sg = 7, sc = 7;
	struct fs_attr stg = { 0 }, stc = { 0 };
	char x[4096], link[400] = "";
	ssize_t xl = g ? fs_getxattr(fs, g, "user.k", x, sizeof(x)) : -1;

	if (g) {
		fs_getattr(fs, g, &stg);
		fs_read(fs, g, 0, 64 << 20, collect, &sg, 0);
	}
	if (c) {
		fs_getattr(fs, c, &stc);
		fs_read(fs, c, 0, 64 << 20, collect, &sc, 0);
	}
	if (d && lookup_ino(fs, d, "s"))
		fs_readlink(fs, lookup_ino(fs, d, "s"), link, sizeof(link));
	int many = 0;
	for (int k = 0; d && k < 70; k++) {
		char name[32];
		snprintf(name, sizeof(name), "n%02d", k);
		many += lookup_ino(fs, d, name) != 0;
	}
	snprintf(out, size, "d=%d g=%lld/%lu/%lu c=%lld/%lu x=%zd l=%d s=%zu long=%d many=%d",
		 d != 0, (long long)stg.st.st_size, (unsigned long)stg.st.st_nlink, sg,
		 (long long)stc.st.st_size, sc, xl, lookup_ino(fs, 1, "l") != 0, strlen(link),
		 d && lookup_ino(fs, d, long_name) != 0, many);
}

/* Remove everything the workload made. */
static void clean_up(struct fs *fs)
{
	uint64_t d = lookup_ino(fs, 1, "d");
	char name[32];

	for (int k = 0; k < 70; k++) {
		snprintf(name, sizeof(name), "n%02d", k);
		fs_unlink(fs, d, name);
	}
	CHECK_EQ(fs_unlink(fs, d, long_name), 0);
	CHECK_EQ(fs_unlink(fs, d, "s"), 0);
	CHECK_EQ(fs_rmdir(fs, 1, "d"), 0);
	CHECK_EQ(fs_unlink(fs, 1, "g"), 0);
	CHECK_EQ(fs_unlink(fs, 1, "copy"), 0);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "cp --sparse=always %s %s", from, to);
	if (system(cmd)) {
		fprintf(stderr, "%s failed\n", cmd);
		exit(2);
	}
}

static void test_every_allocation_point_fails_cleanly(void)
{
	struct pool_format_opts o = { .sparse = true, .label = "faults" };
	char why[POOL_WHY], expect[512], got[512];
	uint64_t free0, points;
	int failures = 0;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 13 + i / 4096);
	memset(long_target, 't', sizeof(long_target) - 1);
	snprintf(pristine, sizeof(pristine), "/dev/shm/pmfuse-faults-%d", getpid());
	snprintf(region, sizeof(region), "/dev/shm/pmfuse-faults-%d.run", getpid());
	int fd = open(pristine, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 48 << 20) || close(fd) ||
	    pool_format(pristine, &o, why, sizeof(why))) {
		fprintf(stderr, "format: %s\n", why);
		exit(2);
	}

	/* the reference run: count the allocation points */
	copy_file(pristine, region);
	struct fs *fs = mount_it();
	free0 = used_blocks(fs);
	fault_arm(0);
	CHECK_EQ(run_workload(fs, &failures), 0);
	points = fault_alloc_seen();
	fault_disarm();
	describe(fs, expect, sizeof(expect));
	fs_unmount(fs);
	CHECK(points > 20);
	CHECK_EQ(failures, 0);
	printf("# %llu allocation points; reference state: %s\n", (unsigned long long)points,
	       expect);

	for (uint64_t k = 1; k <= points; k++) {
		int before = test_failures;
		failures = 0;
		copy_file(pristine, region);
		fs = mount_it();
		fault_arm(k);
		CHECK_EQ(run_workload(fs, &failures), 0);
		/* the k-th allocation failed: an error (once) or a short copy */
		CHECK(fault_alloc_seen() >= k);
		CHECK(failures <= 1);
		fault_disarm();
		describe(fs, got, sizeof(got));
		CHECK(strcmp(got, expect) == 0);
		fs_unmount(fs);
		CHECK(fsck_clean());
		/* what is there is durable, and all of it can be removed */
		fs = mount_it();
		describe(fs, got, sizeof(got));
		CHECK(strcmp(got, expect) == 0);
		clean_up(fs);
		fs_unmount(fs);		/* unlinked inodes still looked up go now */
		CHECK(fsck_clean());
		fs = mount_it();
		CHECK_EQ(used_blocks(fs), free0);
		fs_unmount(fs);
		if (test_failures != before) {
			fprintf(stderr, "  ... with allocation %llu of %llu failing: %s\n",
				(unsigned long long)k, (unsigned long long)points, got);
			break;
		}
	}
	printf("# injected %llu allocation failures\n", (unsigned long long)points);
	unlink(region);
	unlink(pristine);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s FSCK_BINARY\n", argv[0]);
		return 2;
	}
	fsck_bin = argv[1];
	RUN(test_every_allocation_point_fails_cleanly);
	return test_failures ? 1 : 0;
}
