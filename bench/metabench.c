/*
 * metabench: the metadata figures of the pmfuse benchmark.
 *
 *   metabench create  DIR N [K]  open(O_CREAT|O_EXCL|O_WRONLY) + close, N files
 *   metabench stat    DIR N [K]  stat() each of the N files, in creation order
 *   metabench readdir DIR        list DIR once with getdents64 (64 KiB buffer)
 *   metabench unlink  DIR N [K]  unlink() each of the N files
 *
 * K > 0: every K operations the clock is paused and the kernel's dentry and
 * inode caches are dropped (echo 2 > /proc/sys/vm/drop_caches; ignored if
 * refused).  passthrough_ll holds one file descriptor per inode the kernel
 * knows, and RLIMIT_NOFILE may not be raisable (no CAP_SYS_RESOURCE in a
 * container): without the drops it fails with EMFILE long before 100,000
 * files.  Every filesystem gets the same drops.
 *
 * Files are named DIR/f0000000 .. f<N-1>, all in one directory.  Prints one
 * line: "<op> <count> <seconds>" (count = entries for readdir, "." and ".."
 * excluded).  Single-threaded on purpose: it measures the per-operation
 * round trip (application -> kernel -> daemon -> reply), not parallelism.
 * Exit status non-zero on the first failing call, with the errno on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void name(char *buf, size_t size, const char *dir, long i)
{
	snprintf(buf, size, "%s/f%07ld", dir, i);
}

static double paused;	/* seconds spent dropping caches, not counted */

static void maybe_drop(long i, long every)
{
	if (every <= 0 || i == 0 || i % every)
		return;
	double t = now();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "2\n", 2) < 0) {
			/* refused: nothing to undo */
		}
		close(fd);
	}
	paused += now() - t;
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "metabench: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

struct linux_dirent64 {
	unsigned long long d_ino;
	long long d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

int main(int argc, char **argv)
{
	char path[4200];
	double t0, t1;
	long n = 0, count = 0, every = 0;

	if (argc < 3 || (strcmp(argv[1], "readdir") != 0 && argc < 4)) {
		fprintf(stderr, "usage: metabench create|stat|unlink DIR N | readdir DIR\n");
		return 2;
	}
	const char *op = argv[1], *dir = argv[2];
	if (argc > 3)
		n = strtol(argv[3], NULL, 10);
	if (argc > 4)
		every = strtol(argv[4], NULL, 10);

	t0 = now();
	if (strcmp(op, "create") == 0) {
		for (long i = 0; i < n; i++) {
			maybe_drop(i, every);
			name(path, sizeof(path), dir, i);
			int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
			if (fd < 0)
				return fail("create", path);
			close(fd);
		}
		count = n;
	} else if (strcmp(op, "stat") == 0) {
		struct stat st;
		for (long i = 0; i < n; i++) {
			maybe_drop(i, every);
			name(path, sizeof(path), dir, i);
			if (stat(path, &st) != 0)
				return fail("stat", path);
		}
		count = n;
	} else if (strcmp(op, "unlink") == 0) {
		for (long i = 0; i < n; i++) {
			maybe_drop(i, every);
			name(path, sizeof(path), dir, i);
			if (unlink(path) != 0)
				return fail("unlink", path);
		}
		count = n;
	} else if (strcmp(op, "readdir") == 0) {
		static char buf[1 << 16];
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return fail("open", dir);
		for (;;) {
			long got = syscall(SYS_getdents64, fd, buf, sizeof(buf));
			if (got < 0)
				return fail("getdents64", dir);
			if (got == 0)
				break;
			for (long pos = 0; pos < got;) {
				struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + pos);
				if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
					count++;
				pos += d->d_reclen;
			}
		}
		close(fd);
	} else {
		fprintf(stderr, "metabench: unknown operation %s\n", op);
		return 2;
	}
	t1 = now();
	printf("%s %ld %.6f\n", op, count, t1 - t0 - paused);
	return 0;
}
