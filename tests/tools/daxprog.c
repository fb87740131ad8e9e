/*
 * daxprog: a small C program for tests/mount/test_dax.py, run under
 * LD_PRELOAD=libpmfuse-dax.so (daxprog) or linked with it and calling
 * <pmfuse/dax.h> (daxprog-linked, built with -DLINKED).
 *
 *   daxprog store FILE OFF LEN BYTE MODE [hold]
 *       map FILE shared and writable (MODE "sync": MAP_SHARED_VALIDATE |
 *       MAP_SYNC, the stores then flushed with clflush + sfence and no
 *       msync; "msync": msync(MS_SYNC) after; "none": nothing), fill
 *       [OFF, OFF + LEN) with BYTE, print "direct D" (1 if the map is
 *       direct); with hold, print "ready" and wait to be killed
 *   daxprog chain FILE
 *       with a SIGSEGV handler of its own installed, map FILE writable,
 *       store, then touch a PROT_NONE page: the handler must see that
 *       fault (prints "chained") while the map's faults stay the library's
 *   daxprog readinto FILE SRC [read|readv|preadv|recv|recvmsg]
 *       read SRC's first 64 KiB straight into a writable map of FILE with
 *       that call (default read(2); recv/recvmsg: from a socketpair that
 *       SRC's bytes were written into) -- the kernel's stores do not fault:
 *       the library grants the pages first -- msync, print "read N"
 *   daxprog pieces FILE
 *       map FILE (at least 8 MiB) writable, store 'a' at the start of every
 *       MiB, then cut the map: munmap [1 MiB + 4 KiB, 3 MiB - 4 KiB) (a
 *       direct map split in three, a 2 MiB extent carved), mprotect
 *       [5 MiB, 6 MiB) read-only and back, store 'b' at the start of every
 *       MiB still mapped and at both edges of the hole, msync each piece,
 *       munmap the rest piece by piece; touching the hole must fault (the
 *       application's SIGSEGV: prints "hole faults")
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef LINKED
#include "pmfuse/dax.h"
#define MMAP pmfuse_dax_mmap
#define MSYNC pmfuse_dax_msync
#define MUNMAP pmfuse_dax_munmap
static int is_direct(const void *p) { return pmfuse_dax_is_direct(p); }
#else
#define MMAP mmap
#define MSYNC msync
#define MUNMAP munmap
static int is_direct(const void *p)
{
	int (*fn)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pmfuse_dax_is_direct");
	return fn ? fn(p) : 0;
}
#endif

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

static void die(const char *what)
{
	fprintf(stderr, "daxprog: %s: %s\n", what, strerror(errno));
	exit(1);
}

static char *map_file(const char *path, size_t *len, int flags)
{
	int fd = open(path, O_RDWR);
	struct stat st;

	if (fd < 0 || fstat(fd, &st))
		die(path);
	*len = (size_t)st.st_size;
	char *p = MMAP(NULL, *len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	close(fd);	/* the map stays valid */
	return p;
}

static void flush_lines(const char *p, size_t len)
{
	for (const char *c = (const char *)((unsigned long)p & ~63ul); c < p + len; c += 64)
		__asm__ volatile("clflush %0" : "+m"(*(volatile char *)c));
	__asm__ volatile("sfence" ::: "memory");
}

static int store(int argc, char **argv)
{
	if (argc < 7)
		return 2;
	size_t off = strtoull(argv[3], NULL, 0), n = strtoull(argv[4], NULL, 0), len;
	int byte = atoi(argv[5]);
	const char *mode = argv[6];
	int sync = strcmp(mode, "sync") == 0;
	char *p = map_file(argv[2], &len, sync ? MAP_SHARED_VALIDATE | MAP_SYNC : MAP_SHARED);

	if (off + n > len)
		return 2;
	memset(p + off, byte, n);
	if (sync)
		flush_lines(p + off, n);
	else if (strcmp(mode, "msync") == 0 && MSYNC(p, len, MS_SYNC))
		die("msync");
	printf("direct %d\n", is_direct(p));
	if (argc > 7) {
		printf("ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (MUNMAP(p, len))
		die("munmap");
	return 0;
}

static sigjmp_buf env;
static volatile sig_atomic_t app_faults;

static void app_handler(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)si;
	(void)ctx;
	app_faults++;
	siglongjmp(env, 1);
}

static int chain(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = app_handler, .sa_flags = SA_SIGINFO };
	size_t len;

	if (argc < 3)
		return 2;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL))
		die("sigaction");
	char *p = map_file(argv[2], &len, MAP_SHARED);
	char *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (none == MAP_FAILED)
		die("mmap none");
	p[0] = 'a';		/* the library's fault */
	if (sigsetjmp(env, 1) == 0)
		*(volatile char *)none = 1;	/* the application's */
	p[len - 1] = 'z';	/* the library's again, after the application's handler ran */
	if (MSYNC(p, len, MS_SYNC))
		die("msync");
	printf("%s %d direct %d\n", app_faults == 1 ? "chained" : "lost", (int)app_faults,
	       is_direct(p));
	return app_faults == 1 ? 0 : 1;
}

static int readinto(int argc, char **argv)
{
	size_t len;

	if (argc < 4)
		return 2;
	char *p = map_file(argv[2], &len, MAP_SHARED);
	const char *how = argc > 4 ? argv[4] : "read";
	size_t want = len < 65536 ? len : 65536;
	int src = open(argv[3], O_RDONLY);
	if (src < 0)
		die(argv[3]);
	/* two pieces, the second ending the range: each iovec is granted */
	struct iovec iov[2] = { { p, want / 2 }, { p + want / 2, want - want / 2 } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;
	if (!strcmp(how, "read")) {
		n = read(src, p, want);
	} else if (!strcmp(how, "readv")) {
		n = readv(src, iov, 2);
	} else if (!strcmp(how, "preadv")) {
		n = preadv(src, iov, 2, 0);
	} else {
		int sv[2];
		char *tmp = malloc(want);
		if (!tmp || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) ||
		    pread(src, tmp, want, 0) != (ssize_t)want ||
		    write(sv[0], tmp, want) != (ssize_t)want)
			die("socketpair");
		free(tmp);
		close(sv[0]);
		if (!strcmp(how, "recv")) {
			n = 0;
			for (ssize_t r; (size_t)n < want && (r = recv(sv[1], p + n, want - (size_t)n, 0)) > 0;)
				n += r;
		} else {
			n = recvmsg(sv[1], &msg, MSG_WAITALL);
		}
		close(sv[1]);
	}
	if (n < 0)
		die(how);
	if (MSYNC(p, len, MS_SYNC))
		die("msync");
	printf("read %zd direct %d\n", n, is_direct(p));
	return 0;
}

static int pieces(int argc, char **argv)
{
	const size_t M = 1u << 20, P = 4096;
	struct sigaction sa = { .sa_sigaction = app_handler, .sa_flags = SA_SIGINFO };
	size_t len;

	if (argc < 3)
		return 2;
	char *p = map_file(argv[2], &len, MAP_SHARED);
	if (len < 8 * M)
		return 2;
	for (size_t o = 0; o < len; o += M)
		p[o] = 'a';
	char *hole = p + M + P, *hole_end = p + 3 * M - P;
	if (MUNMAP(hole, (size_t)(hole_end - hole)))
		die("munmap of the middle");
#ifdef LINKED
	if (pmfuse_dax_mprotect(p + 5 * M, M, PROT_READ) ||
	    pmfuse_dax_mprotect(p + 5 * M, M, PROT_READ | PROT_WRITE))
		die("mprotect");
#else
	if (mprotect(p + 5 * M, M, PROT_READ) || mprotect(p + 5 * M, M, PROT_READ | PROT_WRITE))
		die("mprotect");
#endif
	for (size_t o = 0; o < len; o += M)
		if (p + o < hole || p + o >= hole_end)
			p[o + 1] = 'b';
	hole[-1] = 'L';		/* the last byte before the hole */
	hole_end[0] = 'R';	/* the first after it */
	if (MSYNC(p, (size_t)(hole - p), MS_SYNC) ||
	    MSYNC(hole_end, (size_t)(p + len - hole_end), MS_SYNC))
		die("msync of the pieces");
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL))
		die("sigaction");
	if (sigsetjmp(env, 1) == 0)
		*(volatile char *)(hole + M) = 'X';
	printf("hole %s direct %d\n", app_faults == 1 ? "faults" : "is mapped",
	       is_direct(p) && is_direct(hole_end));
	if (MUNMAP(p, (size_t)(hole - p)) || MUNMAP(hole_end, 4 * M) ||
	    MUNMAP(hole_end + 4 * M, (size_t)(p + len - hole_end) - 4 * M))
		die("munmap of the pieces");
	return app_faults == 1 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(argv[1], "store") == 0)
		return store(argc, argv);
	if (strcmp(argv[1], "chain") == 0)
		return chain(argc, argv);
	if (strcmp(argv[1], "readinto") == 0)
		return readinto(argc, argv);
	if (strcmp(argv[1], "pieces") == 0)
		return pieces(argc, argv);
	return 2;
}
