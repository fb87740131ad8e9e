/*
 * daxbench: the map figures of bench/run --only dax (bench/README.md).
 * Run plain (the kernel's mmap: page cache on FUSE, shmem on tmpfs) or
 * under LD_PRELOAD=libpmfuse-dax.so (direct maps of pmfuse files).
 *
 *   daxbench store FILE SECONDS    4 KiB random stores, msync(MS_SYNC) of
 *                                  the page after each: stores/s
 *   daxbench load FILE SECONDS     4 KiB random loads (copied out): loads/s
 *
 * FILE exists with its size; it is mapped whole.  Prints "<rate> direct D".
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	int store = strcmp(argv[1], "store") == 0;
	double secs = atof(argv[3]);
	int fd = open(argv[2], store ? O_RDWR : O_RDONLY);
	struct stat st;

	if (fd < 0 || fstat(fd, &st)) {
		perror(argv[2]);
		return 1;
	}
	size_t len = (size_t)st.st_size, pages = len / 4096;
	char *m = mmap(NULL, len, store ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED || pages == 0) {
		perror("mmap");
		return 1;
	}
	static char buf[4096];
	uint64_t seed = 0x9e3779b97f4a7c15ull, n = 0, sum = 0;
	memset(buf, 0x5a, sizeof(buf));
	double t0 = now(), t = t0;
	while (t - t0 < secs) {
		for (int k = 0; k < 64; k++, n++) {
			char *p = m + (next(&seed) % pages) * 4096;
			if (store) {
				buf[0] = (char)n;
				memcpy(p, buf, 4096);
				if (msync(p, 4096, MS_SYNC)) {
					perror("msync");
					return 1;
				}
			} else {
				memcpy(buf, p, 4096);
				sum += (unsigned char)buf[n % 4096];
			}
		}
		t = now();
	}
	int (*direct)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pmfuse_dax_is_direct");
	printf("%.0f direct %d\n", (double)n / (t - t0), direct ? direct(m) : 0);
	munmap(m, len);
	return sum == 1 ? 3 : 0;	/* keep the loads */
}
