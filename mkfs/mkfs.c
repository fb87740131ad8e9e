/*
 * mkfs.pmfuse: format a region (devdax device or file) as a pmfuse
 * filesystem.  Refuses to overwrite anything that looks like a filesystem
 * or a pmemobj pool unless forced; -n shows the plan and writes nothing.
 */
#include "pool.h"
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mkfs.pmfuse [-f] [-n] [-q] [-L label] [-U uuid] [-s size] [-i bytes-per-inode] REGION\n"
		"       mkfs.pmfuse -V\n\n"
		"Format REGION, a devdax device (/dev/daxX.Y) or a file, as a pmfuse filesystem.\n\n"
		"  -f          overwrite an existing filesystem, pmemobj pool or other signature\n"
		"  -n          show what would be created; write nothing\n"
		"  -q          quiet: print nothing on success\n"
		"  -L label    filesystem label (at most %d bytes)\n"
		"  -U uuid     filesystem UUID (default: random)\n"
		"  -s size     size of a file region (K, M, G, T suffixes); a missing file is\n"
		"              created, an existing one resized; default: the file's size\n"
		"  -i bytes    bytes of region per inode (default and least 256): sets the\n"
		"              inode count, a ceiling; inodes take space only when used\n"
		"  -V          print the version\n", PMFUSE_LABEL_MAX - 1);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && end[1] == '\0')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uuid(const char *s, uint8_t uuid[16])
{
	int n = 0;

	for (const char *c = s; *c && n < 32; c++) {
		if (*c == '-')
			continue;
		int v;
		if (*c >= '0' && *c <= '9') v = *c - '0';
		else if (*c >= 'a' && *c <= 'f') v = *c - 'a' + 10;
		else if (*c >= 'A' && *c <= 'F') v = *c - 'A' + 10;
		else return -1;
		if (n % 2 == 0)
			uuid[n / 2] = (uint8_t)(v << 4);
		else
			uuid[n / 2] |= (uint8_t)v;
		n++;
	}
	return n == 32 && strlen(s) == 36 ? 0 : -1;
}

static void format_uuid(const uint8_t u[16], char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		u[13], u[14], u[15]);
}

static int random_uuid(uint8_t u[16])
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, u, 16) != 16) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	u[6] = (u[6] & 0x0f) | 0x40;	/* version 4 */
	u[8] = (u[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	return 0;
}

/* What does the region hold now?  NULL if nothing we recognise. */
static const char *existing_signature(const char *path)
{
	static unsigned char buf[65536 + 4096];
	ssize_t n = sizeof(buf);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	/* a region is never smaller than this (checked before we get here) */
	int err = region_pread(fd, buf, sizeof(buf), 0);
	close(fd);
	if (err)
		return NULL;
	if (pool_has_pmemobj_signature(buf))
		return pool_has_pmfuse_layout(buf) ? "a pmfuse filesystem" : "a pmemobj pool";
	if (n >= 8 && memcmp(buf, "PMEM", 4) == 0)
		return "a PMDK pool";
	if (n >= 1082 && buf[1080] == 0x53 && buf[1081] == 0xef)
		return "an ext2/ext3/ext4 filesystem";
	if (n >= 4 && memcmp(buf, "XFSB", 4) == 0)
		return "an XFS filesystem";
	if (n >= 65536 + 72 && memcmp(buf + 65536 + 64, "_BHRfS_M", 8) == 0)
		return "a btrfs filesystem";
	return NULL;
}

/*
 * Zero the start of the region so pmemobj_create sees no old pool -- but
 * never under a running daemon: pmemobj holds an flock while a pool is open.
 */
static int wipe_header(const char *path, char *why, size_t whylen)
{
	static const char zeros[1 << 16];
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int ret = 0;

	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 &&
	    (!pool_wait_closing(path) || flock(fd, LOCK_EX | LOCK_NB) < 0)) {
		snprintf(why, whylen, "%s is in use (mounted?): not formatting it", path);
		close(fd);
		return -1;
	}
	int err = fd < 0 ? -errno : 0;
	if (!err)
		err = region_pwrite(fd, zeros, sizeof(zeros), 0) ?:
		      region_pwrite(fd, zeros, sizeof(zeros), 65536);
	if (!err && fsync(fd) < 0 && errno != EINVAL)	/* devdax: nothing to sync */
		err = -errno;
	if (err) {
		snprintf(why, whylen, "%s: cannot clear old signature: %s", path, strerror(-err));
		ret = -1;
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

/* What the command line asks for. */
struct mkfs_args {
	struct pool_format_opts o;
	bool force, dry, quiet, have_uuid;
	uint64_t size;			/* -s, 0 if not given */
	const char *path;
};

/* Parse the command line: -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct mkfs_args *a)
{
	int c;

	while ((c = getopt(argc, argv, "fnqL:U:s:i:Vh")) != -1) {
		switch (c) {
		case 'f': a->force = true; break;
		case 'n': a->dry = true; break;
		case 'q': a->quiet = true; break;
		case 'L':
			if (strlen(optarg) >= PMFUSE_LABEL_MAX) {
				fprintf(stderr, "mkfs.pmfuse: label is longer than %d bytes\n",
					PMFUSE_LABEL_MAX - 1);
				return 1;
			}
			a->o.label = optarg;
			break;
		case 'U':
			if (parse_uuid(optarg, a->o.uuid)) {
				fprintf(stderr, "mkfs.pmfuse: '%s' is not a UUID\n", optarg);
				return 1;
			}
			a->have_uuid = true;
			break;
		case 's':
		case 'i':
			if (parse_size(optarg, c == 's' ? &a->size : &a->o.bytes_per_inode) ||
			    (c == 's' && a->size == 0)) {
				fprintf(stderr, "mkfs.pmfuse: '%s' is not a size\n", optarg);
				return 1;
			}
			break;
		case 'V':
			printf("mkfs.pmfuse %s (on-media format %u)\n", PMFUSE_VERSION_STRING,
			       PMFUSE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 1;
	}
	a->path = argv[optind];
	return -1;
}

/*
 * What is at the path now: a devdax device, a file (refused if it holds a
 * filesystem or pool and -f was not given), or nothing (-s says how big).
 * Sets a->size; 0, or 1 with the reason printed.
 */
static int examine_target(struct mkfs_args *a, bool *is_dev)
{
	char why[POOL_WHY];
	struct stat st;

	*is_dev = false;
	if (stat(a->path, &st) != 0) {
		if (errno != ENOENT) {
			fprintf(stderr, "mkfs.pmfuse: %s: %s\n", a->path, strerror(errno));
			return 1;
		}
		if (!a->size) {
			fprintf(stderr, "mkfs.pmfuse: %s does not exist; give its size with -s\n",
				a->path);
			return 1;
		}
		return 0;
	}
	*is_dev = S_ISCHR(st.st_mode);
	if (!*is_dev && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "mkfs.pmfuse: %s is neither a file nor a devdax device\n", a->path);
		return 1;
	}
	if (*is_dev && a->size) {
		fprintf(stderr, "mkfs.pmfuse: -s applies to file regions only\n");
		return 1;
	}
	const char *sig = existing_signature(a->path);
	if (sig && !a->force) {
		fprintf(stderr, "mkfs.pmfuse: %s already holds %s; use -f to overwrite it\n",
			a->path, sig);
		return 1;
	}
	if (!a->size) {
		int64_t s = pool_region_size(a->path, why, sizeof(why));
		if (s < 0) {
			fprintf(stderr, "mkfs.pmfuse: %s\n", why);
			return 1;
		}
		a->size = (uint64_t)s;
	}
	return 0;
}

/* A file region: created or resized, and every block of it reserved. */
static int prepare_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0 || ftruncate(fd, (off_t)size)) {
		fprintf(stderr, "mkfs.pmfuse: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	/*
	 * Reserve every block now, as pmemobj_create does for files it
	 * creates: a store into a hole of a file on a full filesystem is
	 * a SIGBUS, not an error.  PMEMOBJ_CONF=fallocate.at_create=0
	 * (tests) keeps the file sparse.
	 */
	int at_create = 1;
	pmemobj_ctl_get(NULL, "fallocate.at_create", &at_create);
	if (at_create && (errno = posix_fallocate(fd, 0, (off_t)size))) {
		fprintf(stderr, "mkfs.pmfuse: cannot reserve %" PRIu64 " bytes for %s: %s\n",
			size, path, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}

/* What was made, read back from the region. */
static int report(const char *path, uint64_t size, const char *ustr)
{
	char why[POOL_WHY];
	struct pool p;

	if (pool_open(&p, path, why, sizeof(why))) {
		fprintf(stderr, "mkfs.pmfuse: formatted, but cannot reopen: %s\n", why);
		return 1;
	}
	uint64_t cap = pool_capacity_blocks(p.size, p.sb->geo.max_inodes);
	printf("%s: pmfuse filesystem, format %u\n"
	       "  size           %" PRIu64 " bytes (%" PRIu64 " MiB)\n"
	       "  capacity       %" PRIu64 " blocks (%" PRIu64 " MiB), shared by data and metadata\n"
	       "  block size     %u\n"
	       "  inodes         %" PRIu64 "\n"
	       "  label          %s\n"
	       "  UUID           %s\n",
	       path, PMFUSE_VERSION, size, size >> 20,
	       cap, (cap * PMFUSE_BLOCK_SIZE) >> 20, PMFUSE_BLOCK_SIZE, p.sb->geo.max_inodes - 1,
	       p.sb->geo.label[0] ? p.sb->geo.label : "(none)", ustr);
	pool_close(&p);
	return 0;
}

int main(int argc, char **argv)
{
	struct mkfs_args a = { 0 };
	struct pool_plan plan;
	char why[POOL_WHY], ustr[40];
	bool is_dev;
	int ret = parse_args(argc, argv, &a);

	if (ret >= 0)
		return ret;
	if (!a.have_uuid && random_uuid(a.o.uuid)) {
		fprintf(stderr, "mkfs.pmfuse: cannot read /dev/urandom\n");
		return 1;
	}
	a.o.root_uid = getuid();
	a.o.root_gid = getgid();
	if (examine_target(&a, &is_dev))
		return 1;
	a.size &= ~(uint64_t)(PMFUSE_BLOCK_SIZE - 1);
	if (pool_plan(a.size, a.o.bytes_per_inode, &plan, why, sizeof(why))) {
		fprintf(stderr, "mkfs.pmfuse: %s\n", why);
		return 1;
	}
	format_uuid(a.o.uuid, ustr);
	if (a.dry) {
		printf("would format %s: %" PRIu64 " bytes, capacity %" PRIu64 " blocks (%" PRIu64
		       " MiB) shared by data and metadata, %" PRIu64 " inodes, block size %u, "
		       "label '%s', UUID %s\n",
		       a.path, a.size, plan.capacity_blocks,
		       (plan.capacity_blocks * PMFUSE_BLOCK_SIZE) >> 20, plan.max_inodes - 1,
		       PMFUSE_BLOCK_SIZE, a.o.label ? a.o.label : "", ustr);
		return 0;
	}
	if (!is_dev && prepare_file(a.path, a.size))
		return 1;
	if (wipe_header(a.path, why, sizeof(why)) || pool_format(a.path, &a.o, why, sizeof(why))) {
		fprintf(stderr, "mkfs.pmfuse: %s\n", why);
		return 1;
	}
	return a.quiet ? 0 : report(a.path, a.size, ustr);
}
