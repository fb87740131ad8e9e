/* Minimal unit-test harness: CHECK() records a failure and goes on. */
#ifndef PMFUSE_TEST_HARNESS_H
#define PMFUSE_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

static int test_failures;

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, __func__, #cond); \
		test_failures++; \
	} \
} while (0)

#define CHECK_EQ(a, b) do { \
	long long _a = (long long)(a), _b = (long long)(b); \
	if (_a != _b) { \
		fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, \
			__func__, #a, _a, #b, _b); \
		test_failures++; \
	} \
} while (0)

#define RUN(t) do { \
	int _before = test_failures; \
	t(); \
	printf("%s %s\n", test_failures == _before ? "ok  " : "FAIL", #t); \
} while (0)

#ifdef PMFUSE_CORE_H
#include <fcntl.h>
#include <unistd.h>

/* Create (afresh) and format a sparse region file of size bytes, or end the program. */
static inline void unit_make_region(const char *path, uint64_t size, const char *label)
{
	struct pool_format_opts o = { .sparse = true, .label = label };
	char why[FS_WHY_MAX];
	int fd;

	unlink(path);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size)) {
		perror(path);
		exit(2);
	}
	close(fd);
	if (pool_format(path, &o, why, sizeof(why))) {
		fprintf(stderr, "format %s: %s\n", path, why);
		exit(2);
	}
}

/* Mount a region through the core, or end the test program. */
static inline struct fs *unit_mount(const char *path)
{
	struct fs_opts o = { 0 };
	struct fs *fs = NULL;
	char why[FS_WHY_MAX];

	if (fs_mount(&fs, path, &o, why, sizeof(why))) {
		fprintf(stderr, "mount %s: %s\n", path, why);
		exit(2);
	}
	return fs;
}
#endif

#endif
