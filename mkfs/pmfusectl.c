/*
 * pmfusectl: look at and administer pmfuse filesystems.
 *
 *   pmfusectl stats [-j] MOUNTPOINT     counters of a mounted filesystem
 *   pmfusectl info [-j] REGION          the superblock, without mounting
 *   pmfusectl label REGION NEWLABEL     relabel an unmounted region
 *
 * stats reads the virtual xattr user.pmfuse.stats on the root of the mount
 * (daemon/xattr.c makes it up at each read; one "name value" per line) and
 * prints it grouped, or as JSON.  Names it does not know are shown too, so
 * a newer daemon's counters are never hidden by an older pmfusectl.
 *
 * info never opens the pool: pmemobj_open() writes to it (run id, lanes)
 * and takes an exclusive lock, and the region may be mounted.  It reads the
 * pool header, the superblock and its backup with pread (device DAX has no
 * read(2): there it maps the region read-only) and judges them with the
 * validators the daemon uses.  A shared flock, held while reading, tells
 * whether a daemon (or fsck, or mkfs) has the region open: libpmemobj takes
 * an exclusive one for as long as a pool is open.  /proc/self/mountinfo
 * then says where it is mounted: the daemon passes the region as fsname.
 *
 * label does open the pool (pool_open: the exclusive lock refuses a mounted
 * region) and rewrites the label, the geometry checksum and the backup
 * geometry in one transaction, so a crash leaves either label and fsck
 * finds the two copies equal.
 *
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#include "pool.h"
#include "pmfuse/format.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE	2
#define STATS_XATTR	"user.pmfuse.stats"
#define FSTYPE		"fuse.pmfuse"
#define MAX_STATS 256	/* name-value lines of the stats xattr kept */
#define MAX_MOUNTS	16

static const char *prog = "pmfusectl";

/* ------------------------------------------------------------------ */
/* output helpers */

static bool use_colour;

static void heading(const char *title)
{
	if (use_colour)
		printf("\033[1m%s\033[0m\n", title);
	else
		printf("%s\n", title);
}

/* "4.0 GiB"; bytes below 1 KiB as "512 B" */
static const char *human(uint64_t bytes, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)bytes;
	int u = 0;

	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return buf;
	}
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, unit[u]);
	return buf;
}

static const char *percent(uint64_t part, uint64_t whole, char *buf, size_t len)
{
	if (whole == 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f%%", (double)part * 100.0 / (double)whole);
	return buf;
}

static const char *local_time(uint64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0)
		snprintf(buf, len, "never");
	else if (!localtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S %z", &tm))
		snprintf(buf, len, "%" PRIu64 " (seconds since the epoch)", t);
	return buf;
}

static const char *duration(uint64_t s, char *buf, size_t len)
{
	uint64_t d = s / 86400;

	s %= 86400;
	if (d)
		snprintf(buf, len, "%" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
			 d, s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
			 s / 3600, s / 60 % 60, s % 60);
	return buf;
}

static void format_uuid(const uint8_t u[16], char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		u[13], u[14], u[15]);
}

/* A JSON string; bytes >= 0x80 pass through (labels and paths are UTF-8 or opaque). */
static void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			printf("\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			printf("\\u%04x", *c);
		else
			putchar(*c);
	}
	putchar('"');
}

/* A label for the table: quoted, control characters shown as \ooo. */
static void print_label(const char *s)
{
	if (!*s) {
		printf("(none)");
		return;
	}
	putchar('"');
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c < 0x20 || *c == 0x7f || *c == '"' || *c == '\\')
			printf("\\%03o", *c);
		else
			putchar(*c);
	}
	putchar('"');
}

/* ------------------------------------------------------------------ */
/* /proc/self/mountinfo */

struct mnt {
	char mountpoint[PATH_MAX];
	char fstype[64];
	char source[PATH_MAX];
};

/* Undo mountinfo's octal escapes (\040 for a space, ...) into out. */
static void unescape(const char *s, char *out, size_t len)
{
	size_t n = 0;

	while (*s && n + 1 < len) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			out[n++] = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 4;
		} else {
			out[n++] = *s++;
		}
	}
	out[n] = '\0';
}

/*
 * One mountinfo line: "id parent maj:min root MOUNTPOINT opts [tags] -
 * FSTYPE SOURCE superopts".  false if the line does not parse.
 */
static bool parse_mountinfo_line(char *line, struct mnt *m)
{
	char *field[6], *save = NULL, *tok;
	int n = 0;

	for (tok = strtok_r(line, " \n", &save); tok && n < 5; tok = strtok_r(NULL, " \n", &save))
		field[n++] = tok;
	if (n < 5)
		return false;
	unescape(field[4], m->mountpoint, sizeof(m->mountpoint));
	while (tok && strcmp(tok, "-") != 0)
		tok = strtok_r(NULL, " \n", &save);
	if (!tok)
		return false;
	char *type = strtok_r(NULL, " \n", &save);
	char *source = strtok_r(NULL, " \n", &save);
	if (!type || !source)
		return false;
	unescape(type, m->fstype, sizeof(m->fstype));
	unescape(source, m->source, sizeof(m->source));
	return true;
}

typedef bool (*mnt_fn)(void *ctx, const struct mnt *m);

/* Call fn for each mount, in mountinfo order (a mount on top comes later). */
static int for_each_mount(mnt_fn fn, void *ctx)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	struct mnt *m;

	if (!f)
		return -errno;
	m = malloc(sizeof(*m));
	if (!m) {
		fclose(f);
		return -ENOMEM;
	}
	while (getline(&line, &cap, f) > 0)
		if (parse_mountinfo_line(line, m) && !fn(ctx, m))
			break;
	free(m);
	free(line);
	fclose(f);
	return 0;
}

/* Does a mount's source name the region whose stat is st? */
static bool source_is_region(const char *source, const char *region_real, const struct stat *st)
{
	struct stat s;

	if (strcmp(source, region_real) == 0)
		return true;
	/* the same file by another name (a symlink such as /dev/pmem/fast) */
	if (source[0] != '/' || stat(source, &s) != 0)
		return false;
	if (S_ISCHR(st->st_mode))
		return S_ISCHR(s.st_mode) && s.st_rdev == st->st_rdev;
	return s.st_dev == st->st_dev && s.st_ino == st->st_ino;
}

struct region_mounts {
	const char *region_real;
	const struct stat *st;
	char mountpoint[MAX_MOUNTS][PATH_MAX];
	int n;
};

static bool collect_region_mount(void *ctx, const struct mnt *m)
{
	struct region_mounts *rm = ctx;

	if (strcmp(m->fstype, FSTYPE) == 0 && rm->n < MAX_MOUNTS &&
	    source_is_region(m->source, rm->region_real, rm->st))
		snprintf(rm->mountpoint[rm->n++], PATH_MAX, "%s", m->mountpoint);
	return true;
}

/* Where is the region (real path, stat) mounted?  Fills rm; rm->n mounts. */
static void find_region_mounts(struct region_mounts *rm, const char *region_real,
			       const struct stat *st)
{
	rm->region_real = region_real;
	rm->st = st;
	rm->n = 0;
	for_each_mount(collect_region_mount, rm);
}

struct containing {
	const char *path;
	struct mnt best;
	size_t best_len;
	bool found;
};

/* The mount holding path: the longest mountpoint that is a prefix of it. */
static bool pick_containing(void *ctx, const struct mnt *m)
{
	struct containing *c = ctx;
	size_t len = strlen(m->mountpoint);

	if (strcmp(m->mountpoint, "/") == 0)
		len = 0;
	else if (strncmp(c->path, m->mountpoint, len) != 0 ||
		 (c->path[len] != '\0' && c->path[len] != '/'))
		return true;
	if (!c->found || len >= c->best_len) {
		c->best = *m;
		c->best_len = len;
		c->found = true;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* stats */

struct stat_kv {
	char name[64];
	char value[128];
	bool numeric;
	int64_t num;
};

struct stats {
	struct stat_kv kv[MAX_STATS];
	int n;
};

static bool is_integer(const char *s)
{
	if (*s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static void parse_stats(char *text, struct stats *st)
{
	char *save = NULL;

	st->n = 0;
	for (char *line = strtok_r(text, "\n", &save); line && st->n < MAX_STATS;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');
		if (!sp || sp == line)
			continue;
		struct stat_kv *kv = &st->kv[st->n++];
		snprintf(kv->name, sizeof(kv->name), "%.*s", (int)(sp - line), line);
		snprintf(kv->value, sizeof(kv->value), "%s", sp + 1);
		kv->numeric = is_integer(kv->value);
		if (kv->numeric) {
			errno = 0;
			kv->num = strtoll(kv->value, NULL, 10);
			kv->numeric = errno == 0;
		}
	}
}

static struct stat_kv *stat_find(struct stats *st, const char *name)
{
	for (int i = 0; i < st->n; i++)
		if (strcmp(st->kv[i].name, name) == 0)
			return &st->kv[i];
	return NULL;
}

/* A numeric counter, or false if the daemon does not report it. */
static bool stat_num(struct stats *st, const char *name, uint64_t *v)
{
	struct stat_kv *kv = stat_find(st, name);

	if (!kv || !kv->numeric)
		return false;
	*v = kv->num < 0 ? 0 : (uint64_t)kv->num;
	return true;
}

/*
 * Read the stats text of the mount at mnt; 0 or an exit status (message
 * printed).  source is set when mountinfo says mnt is a pmfuse mount.
 */
static int read_stats(const char *arg, const char *mnt, const char *source, struct stats *st)
{
	char *buf = NULL;
	ssize_t n;
	size_t size = 4096;

	for (;;) {
		char *nb = realloc(buf, size + 1);
		if (!nb) {
			free(buf);
			fprintf(stderr, "%s: out of memory\n", prog);
			return EXIT_FAILURE;
		}
		buf = nb;
		n = getxattr(mnt, STATS_XATTR, buf, size);
		if (n >= 0 || errno != ERANGE || size >= (1u << 20))
			break;
		size *= 4;
	}
	if (n < 0) {
		int e = errno;
		free(buf);
		if ((e == ENODATA || e == ENOTSUP) && *source)
			fprintf(stderr, "%s: %s: no %s here (a bind mount of a subdirectory?"
				" give the filesystem's own mountpoint)\n", prog, mnt, STATS_XATTR);
		else if (e == ENODATA || e == ENOTSUP)
			fprintf(stderr, "%s: %s is not a pmfuse mount (it has no %s)\n",
				prog, arg, STATS_XATTR);
		else if (e == ENOTCONN || e == ECONNABORTED)
			fprintf(stderr, "%s: %s: the pmfuse daemon is gone (%s); "
				"detach it with: fusermount3 -u %s\n", prog, mnt, strerror(e), mnt);
		else
			fprintf(stderr, "%s: %s: cannot read %s: %s\n", prog, mnt, STATS_XATTR,
				strerror(e));
		return EXIT_FAILURE;
	}
	buf[n] = '\0';
	parse_stats(buf, st);
	free(buf);
	if (!stat_find(st, "blocks_total")) {
		fprintf(stderr, "%s: %s: %s does not hold pmfuse statistics\n", prog, mnt,
			STATS_XATTR);
		return EXIT_FAILURE;
	}
	return 0;
}

/*
 * Which mount to ask: the pmfuse mount holding arg, or the mount of the
 * region arg names.  0 with mnt (and source, if known) filled, or an exit
 * status with the message printed.
 */
static int resolve_mount(const char *arg, char *mnt, char *source)
{
	struct containing *c = NULL;
	struct region_mounts *rm = NULL;
	char real[PATH_MAX];
	struct stat st;
	int ret = EXIT_FAILURE;

	source[0] = '\0';
	if (!realpath(arg, real) || stat(real, &st) != 0) {
		if (errno == ENOTCONN || errno == ECONNABORTED)
			fprintf(stderr, "%s: %s: the pmfuse daemon is gone (%s); detach the"
				" mount with: fusermount3 -u MOUNTPOINT\n", prog, arg, strerror(errno));
		else
			fprintf(stderr, "%s: %s: %s\n", prog, arg, strerror(errno));
		return EXIT_FAILURE;
	}
	c = calloc(1, sizeof(*c));
	rm = malloc(sizeof(*rm));
	if (!c || !rm) {
		fprintf(stderr, "%s: out of memory\n", prog);
		goto out;
	}
	c->path = real;
	if (for_each_mount(pick_containing, c) != 0 || !c->found) {
		/* no mountinfo (no /proc?): let the xattr decide */
		snprintf(mnt, PATH_MAX, "%s", real);
		ret = 0;
		goto out;
	}
	if (strcmp(c->best.fstype, FSTYPE) == 0) {
		/* anything on a pmfuse mount: the counters are the mount's */
		snprintf(mnt, PATH_MAX, "%s", c->best.mountpoint);
		snprintf(source, PATH_MAX, "%s", c->best.source);
		ret = 0;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		/* a region: where is it mounted? */
		find_region_mounts(rm, real, &st);
		if (rm->n) {
			snprintf(mnt, PATH_MAX, "%s", rm->mountpoint[0]);
			snprintf(source, PATH_MAX, "%s", real);
			ret = 0;
			goto out;
		}
		fprintf(stderr, "%s: %s is not on a pmfuse mount, nor a mounted pmfuse region\n",
			prog, arg);
		goto out;
	}
	fprintf(stderr, "%s: %s is not a pmfuse mount (it is on %s, type %s)\n",
		prog, arg, c->best.mountpoint, c->best.fstype);
out:
	free(rm);
	free(c);
	return ret;
}

/* How each known counter is shown; the rest appear under "Other". */
enum kind { K_COUNT, K_BYTES, K_PAGES, K_TEXT };

struct row {
	const char *name;
	const char *label;
	enum kind kind;
};

static const struct row engine_rows[] = {
	{ "flush_bytes", "flushed", K_BYTES },
	{ "flush_calls", "flush calls", K_COUNT },
	{ "drains", "drains", K_COUNT },
	{ "dirty_pages", "dirty pages", K_PAGES },
	{ "zero_bytes_served", "zero bytes served", K_BYTES },
	{ "huge_2m_extents", "huge extents, 2 MiB", K_COUNT },
	{ "huge_1g_extents", "huge extents, 1 GiB", K_COUNT },
};

/* names the table shows in its own groups */
static const char *const shown[] = {
	"blocks_total", "blocks_free", "inodes_total", "inodes_free", "granularity", "mode",
	"mounted_at", "flush_bytes", "flush_calls", "drains", "dirty_pages",
	"zero_bytes_served", "huge_2m_extents", "huge_1g_extents",
};

/* one line of the table: a number right-aligned, then its readable form */
static void print_row(const char *label, const char *value, const char *extra)
{
	if (extra && *extra)
		printf("  %-20s %14s  %s\n", label, value, extra);
	else
		printf("  %-20s %14s\n", label, value);
}

/* one line whose value is text: left-aligned, so long values stay readable */
static void print_text_row(const char *label, const char *value)
{
	printf("  %-20s %s\n", label, value);
}

static void print_row_kind(struct stats *st, const struct row *r)
{
	struct stat_kv *kv = stat_find(st, r->name);
	char h[32] = "";

	if (!kv)
		return;
	if (!kv->numeric) {
		print_text_row(r->label, kv->value);
		return;
	}
	if (r->kind == K_BYTES)
		human((uint64_t)(kv->num < 0 ? 0 : kv->num), h, sizeof(h));
	else if (r->kind == K_PAGES)
		human((uint64_t)(kv->num < 0 ? 0 : kv->num) * PMFUSE_BLOCK_SIZE, h, sizeof(h));
	print_row(r->label, kv->value, h);
}

/* total / used / free, with sizes for blocks and shares of the total */
static void print_used_free(uint64_t total, uint64_t free_, bool blocks)
{
	uint64_t used = total > free_ ? total - free_ : 0;
	const uint64_t part[3] = { total, used, free_ };
	static const char *const name[3] = { "total", "used", "free" };
	char n[32], h[32], p[16], extra[64];

	for (int i = 0; i < 3; i++) {
		snprintf(n, sizeof(n), "%" PRIu64, part[i]);
		if (blocks && i == 0)
			snprintf(extra, sizeof(extra), "%s", human(part[i] * PMFUSE_BLOCK_SIZE, h, sizeof(h)));
		else if (blocks)
			snprintf(extra, sizeof(extra), "%-10s %6s",
				 human(part[i] * PMFUSE_BLOCK_SIZE, h, sizeof(h)),
				 percent(part[i], total, p, sizeof(p)));
		else if (i)	/* in the column of the blocks' shares */
			snprintf(extra, sizeof(extra), "%-10s %6s", "", percent(part[i], total, p, sizeof(p)));
		else
			extra[0] = '\0';
		print_row(name[i], n, extra);
	}
}

static void print_stats_table(struct stats *st, const char *mnt, const char *source)
{
	uint64_t total, free_, at;
	char buf[64];
	bool other = false;

	printf("pmfuse on %s", mnt);
	if (*source)
		printf(", region %s", source);
	printf("\n\n");

	if (stat_num(st, "blocks_total", &total) && stat_num(st, "blocks_free", &free_)) {
		heading("Space (4 KiB blocks)");
		print_used_free(total, free_, true);
	}
	if (stat_num(st, "inodes_total", &total) && stat_num(st, "inodes_free", &free_)) {
		heading("Inodes");
		print_used_free(total, free_, false);
	}
	heading("Data engine");
	for (size_t i = 0; i < sizeof(engine_rows) / sizeof(engine_rows[0]); i++)
		print_row_kind(st, &engine_rows[i]);

	heading("Mount");
	struct stat_kv *kv;
	if ((kv = stat_find(st, "granularity")))
		print_text_row("granularity", kv->value);
	if ((kv = stat_find(st, "mode")))
		print_text_row("mode", kv->value);
	if (stat_num(st, "mounted_at", &at) && at) {
		uint64_t now = (uint64_t)time(NULL);
		print_text_row("mounted at", local_time(at, buf, sizeof(buf)));
		print_text_row("uptime", duration(now > at ? now - at : 0, buf, sizeof(buf)));
	}

	for (int i = 0; i < st->n; i++) {
		bool known = false;
		for (size_t j = 0; j < sizeof(shown) / sizeof(shown[0]); j++)
			known |= strcmp(st->kv[i].name, shown[j]) == 0;
		if (known)
			continue;
		if (!other)
			heading("Other");
		other = true;
		print_text_row(st->kv[i].name, st->kv[i].value);
	}
}

static void json_member(bool *first, const char *name)
{
	printf("%s\n  ", *first ? "" : ",");
	*first = false;
	json_string(name);
	printf(": ");
}

static void print_stats_json(struct stats *st, const char *mnt, const char *source)
{
	uint64_t total, free_, at;
	bool first = true;

	printf("{");
	json_member(&first, "mountpoint");
	json_string(mnt);
	if (*source) {
		json_member(&first, "region");
		json_string(source);
	}
	if (!stat_find(st, "block_size")) {
		json_member(&first, "block_size");
		printf("%u", PMFUSE_BLOCK_SIZE);
	}
	for (int i = 0; i < st->n; i++) {
		json_member(&first, st->kv[i].name);
		if (st->kv[i].numeric)
			printf("%" PRId64, st->kv[i].num);
		else
			json_string(st->kv[i].value);
	}
	/* derived values, unless the daemon already reports them */
	if (!stat_find(st, "blocks_used") && stat_num(st, "blocks_total", &total) &&
	    stat_num(st, "blocks_free", &free_)) {
		json_member(&first, "blocks_used");
		printf("%" PRIu64, total > free_ ? total - free_ : 0);
	}
	if (!stat_find(st, "inodes_used") && stat_num(st, "inodes_total", &total) &&
	    stat_num(st, "inodes_free", &free_)) {
		json_member(&first, "inodes_used");
		printf("%" PRIu64, total > free_ ? total - free_ : 0);
	}
	if (!stat_find(st, "uptime_seconds") && stat_num(st, "mounted_at", &at) && at) {
		uint64_t now = (uint64_t)time(NULL);
		json_member(&first, "uptime_seconds");
		printf("%" PRIu64, now > at ? now - at : 0);
	}
	printf("\n}\n");
}

static int cmd_stats(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char mnt[PATH_MAX], source[PATH_MAX];
	struct stats *st;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'h':
			printf("usage: %s stats [-j] MOUNTPOINT\n", prog);
			return 0;
		default:
			fprintf(stderr, "usage: %s stats [-j] MOUNTPOINT\n", prog);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: %s stats [-j] MOUNTPOINT\n", prog);
		return EXIT_USAGE;
	}
	ret = resolve_mount(argv[optind], mnt, source);
	if (ret)
		return ret;
	st = malloc(sizeof(*st));
	if (!st) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return EXIT_FAILURE;
	}
	ret = read_stats(argv[optind], mnt, source, st);
	if (!ret) {
		if (json)
			print_stats_json(st, mnt, source);
		else
			print_stats_table(st, mnt, source);
	}
	free(st);
	if (!ret && (fflush(stdout) != 0 || ferror(stdout))) {
		fprintf(stderr, "%s: writing the output: %s\n", prog, strerror(errno));
		ret = EXIT_FAILURE;
	}
	return ret;
}

/* ------------------------------------------------------------------ */
/* reading a region without opening the pool */

struct image {
	const char *path;
	int fd;
	const char *map;	/* device DAX: the region mapped read-only */
	uint64_t size;
	char real[PATH_MAX];
	struct stat st;
};

static int image_read(const struct image *im, void *buf, size_t len, uint64_t off)
{
	if (off > im->size || len > im->size - off)
		return -EINVAL;
	if (im->map) {
		memcpy(buf, im->map + off, len);
		return 0;
	}
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(im->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

static void image_close(struct image *im)
{
	if (im->map)
		munmap((void *)im->map, im->size);
	if (im->fd >= 0)
		close(im->fd);	/* drops our shared flock too */
	im->map = NULL;
	im->fd = -1;
}

/* Open a region for reading; 0 or an exit status with the message printed. */
static int image_open(struct image *im, const char *path)
{
	char why[POOL_WHY];
	int64_t size;

	memset(im, 0, sizeof(*im));
	im->fd = -1;
	im->path = path;
	size = pool_region_size(path, why, sizeof(why));
	if (size < 0) {
		fprintf(stderr, "%s: %s\n", prog, why);
		return EXIT_FAILURE;
	}
	if ((uint64_t)size < PMFUSE_MIN_REGION) {
		fprintf(stderr, "%s: %s is %" PRId64 " bytes: too small to be a pmfuse region\n",
			prog, path, size);
		return EXIT_FAILURE;
	}
	im->size = (uint64_t)size;
	if (!realpath(path, im->real))
		snprintf(im->real, sizeof(im->real), "%s", path);
	im->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->fd < 0 || fstat(im->fd, &im->st) != 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		image_close(im);
		return EXIT_FAILURE;
	}
	if (S_ISCHR(im->st.st_mode)) {
		void *m = mmap(NULL, im->size, PROT_READ, MAP_SHARED, im->fd, 0);
		if (m == MAP_FAILED) {
			fprintf(stderr, "%s: %s: cannot map the device: %s\n", prog, path,
				strerror(errno));
			image_close(im);
			return EXIT_FAILURE;
		}
		im->map = m;
	}
	return 0;
}

/* Is the region open elsewhere (a daemon, fsck.pmfuse, mkfs.pmfuse)? */
static bool image_in_use(const struct image *im, int how)
{
	return flock(im->fd, how | LOCK_NB) != 0 && errno == EWOULDBLOCK;
}

static const char *const backup_names[] = {
	[POOL_BACKUP_OK] = "ok", [POOL_BACKUP_DIFFERS] = "differs", [POOL_BACKUP_DAMAGED] = "damaged",
};

/*
 * Read and validate the superblock and the backup geometry.  0, or an
 * exit status with the message printed.
 */
static int read_super(const struct image *im, struct pmfuse_super *sb,
		      enum pool_backup *backup)
{
	unsigned char *head = malloc(POOL_HEADER_SIZE);
	struct pmfuse_geometry b;
	char why[POOL_WHY];
	uint64_t root_off;
	int ret = EXIT_FAILURE;

	if (!head) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return EXIT_FAILURE;
	}
	if (image_read(im, head, POOL_HEADER_SIZE, 0)) {
		fprintf(stderr, "%s: %s is not a pmfuse region (no pool header)\n", prog, im->path);
		goto out;
	}
	if (pool_check_header(head, im->size, im->path, &root_off, why, sizeof(why))) {
		fprintf(stderr, "%s: %s\n", prog, why);
		goto out;
	}
	if (image_read(im, sb, sizeof(*sb), root_off)) {
		fprintf(stderr, "%s: %s: cannot read the superblock\n", prog, im->path);
		goto out;
	}
	if (pool_check_geometry(&sb->geo, im->size, why, sizeof(why))) {
		fprintf(stderr, "%s: %s: %s%s\n", prog, im->path, why,
			sb->geo.magic == PMFUSE_MAGIC ? " (fsck.pmfuse can check it)" : "");
		goto out;
	}
	/* pool_check_geometry() made sure run 0 lies inside the region */
	if (image_read(im, &b, sizeof(b), pool_backup_off(&sb->geo)))
		*backup = POOL_BACKUP_DAMAGED;
	else
		*backup = pool_backup_check(&sb->geo, &b);
	ret = 0;
out:
	free(head);
	return ret;
}

/* ------------------------------------------------------------------ */
/* info */

static const char *state_name(const struct pmfuse_super *sb, bool in_use)
{
	if (sb->state == PMFUSE_STATE_CLEAN)
		return "clean";
	if (sb->state == PMFUSE_STATE_MOUNTED)
		return in_use ? "mounted" : "unclean";
	return "unknown";
}

static const char *state_text(const struct pmfuse_super *sb, bool in_use)
{
	if (sb->state == PMFUSE_STATE_CLEAN)
		return "clean (cleanly unmounted)";
	if (sb->state == PMFUSE_STATE_MOUNTED)
		return in_use ? "mounted (in use now)"
			      : "NOT cleanly unmounted (the daemon stopped without unmounting;"
				" the next mount recovers, fsck.pmfuse checks)";
	return "unknown";
}

static void print_info_table(const struct image *im, const struct pmfuse_super *sb,
			     enum pool_backup backup, bool in_use, const struct region_mounts *rm)
{
	const struct pmfuse_geometry *g = &sb->geo;
	uint64_t data = 0;
	char uuid[40], h[32], t[64];

	for (uint32_t i = 0; i < g->nruns; i++)
		data += g->runs[i].len;
	format_uuid(g->uuid, uuid);
	printf("%s: pmfuse filesystem\n", im->path);
	for (int i = 0; i < rm->n; i++)
		printf("%s is mounted on %s\n", im->path, rm->mountpoint[i]);
	if (in_use && rm->n == 0)
		printf("%s is in use (open by a pmfuse daemon, fsck.pmfuse or mkfs.pmfuse;"
		       " no mount of it in this mount namespace)\n", im->path);
	printf("  %-20s %u\n", "format version", g->version);
	printf("  %-20s %s\n", "UUID", uuid);
	printf("  %-20s ", "label");
	print_label(g->label);
	printf("\n  %-20s %" PRIu64 " bytes (%s)\n", "region size", g->region_size,
	       human(g->region_size, h, sizeof(h)));
	printf("  %-20s %u\n", "block size", g->block_size);
	printf("  %-20s %" PRIu64 "\n", "maximum inodes", g->max_inodes - 1);
	printf("  %-20s offset %" PRIu64 " (%#" PRIx64 ")\n", "inode table", g->itable_off,
	       g->itable_off);
	printf("  %-20s %" PRIu64 " blocks (statfs's size: data and metadata share it)\n",
	       "capacity", pool_capacity_blocks(g->region_size, g->max_inodes));
	printf("  %-20s %" PRIu64 " bytes (%s)\n",
	       g->version < 2 ? "metadata reserve" : "metadata headroom", g->meta_reserve,
	       human(g->meta_reserve, h, sizeof(h)));
	printf("  %-20s %u, %" PRIu64 " bytes (%s)\n",
	       g->version < 2 ? "data runs" : "permanent data runs", g->nruns, data,
	       human(data, h, sizeof(h)));
	for (uint32_t i = 0; i < g->nruns; i++)
		printf("    run %-2u             offset %#14" PRIx64 "  length %#14" PRIx64 "  (%s)\n",
		       i, g->runs[i].off, g->runs[i].len, human(g->runs[i].len, h, sizeof(h)));
	printf("  %-20s %s\n", "state", state_text(sb, in_use));
	printf("  %-20s %" PRIu64 "\n", "mount count", sb->mount_count);
	printf("  %-20s %s\n", "created", local_time(g->created, t, sizeof(t)));
	printf("  %-20s %s\n", "last mounted", local_time(sb->last_mount, t, sizeof(t)));
	printf("  %-20s %s\n", "orphan list", sb->orphan_head ? "not empty (reclaimed at the next mount)"
							      : "empty");
	printf("  %-20s %s\n", "backup superblock",
	       backup == POOL_BACKUP_OK ? "ok (matches the primary)" :
	       backup == POOL_BACKUP_DIFFERS ? "DIFFERS from the primary (run fsck.pmfuse)" :
	       "DAMAGED (run fsck.pmfuse)");
}

static void print_info_json(const struct image *im, const struct pmfuse_super *sb,
			    enum pool_backup backup, bool in_use, const struct region_mounts *rm)
{
	const struct pmfuse_geometry *g = &sb->geo;
	uint64_t data = 0;
	char uuid[40];

	for (uint32_t i = 0; i < g->nruns; i++)
		data += g->runs[i].len;
	format_uuid(g->uuid, uuid);
	printf("{\n  \"region\": ");
	json_string(im->path);
	printf(",\n  \"in_use\": %s,\n  \"mountpoints\": [", in_use ? "true" : "false");
	for (int i = 0; i < rm->n; i++) {
		printf("%s", i ? ", " : "");
		json_string(rm->mountpoint[i]);
	}
	printf("],\n  \"version\": %u,\n  \"uuid\": \"%s\",\n  \"label\": ", g->version, uuid);
	json_string(g->label);
	printf(",\n  \"region_size\": %" PRIu64 ",\n  \"block_size\": %u,\n"
	       "  \"max_inodes\": %" PRIu64 ",\n  \"itable_offset\": %" PRIu64 ",\n"
	       "  \"meta_reserve\": %" PRIu64 ",\n  \"capacity_blocks\": %" PRIu64 ",\n"
	       "  \"data_bytes\": %" PRIu64 ",\n  \"data_runs\": [",
	       g->region_size, g->block_size, g->max_inodes - 1, g->itable_off, g->meta_reserve,
	       pool_capacity_blocks(g->region_size, g->max_inodes), data);
	for (uint32_t i = 0; i < g->nruns; i++)
		printf("%s{\"offset\": %" PRIu64 ", \"length\": %" PRIu64 "}", i ? ", " : "",
		       g->runs[i].off, g->runs[i].len);
	printf("],\n  \"state\": \"%s\",\n  \"mount_count\": %" PRIu64 ",\n"
	       "  \"created\": %" PRIu64 ",\n  \"last_mount\": %" PRIu64 ",\n"
	       "  \"orphans\": %s,\n  \"backup_superblock\": \"%s\"\n}\n",
	       state_name(sb, in_use), sb->mount_count, g->created, sb->last_mount,
	       sb->orphan_head ? "true" : "false", backup_names[backup]);
}

static int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct region_mounts *rm = NULL;
	struct pmfuse_super sb;
	enum pool_backup backup;
	struct image im;
	bool json = false, in_use;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'h':
			printf("usage: %s info [-j] REGION\n", prog);
			return 0;
		default:
			fprintf(stderr, "usage: %s info [-j] REGION\n", prog);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: %s info [-j] REGION\n", prog);
		return EXIT_USAGE;
	}
	ret = image_open(&im, argv[optind]);
	if (ret)
		return ret;
	/*
	 * A shared lock while reading: nobody can open the pool (and change
	 * the label) under us.  If a daemon holds it, the superblock's
	 * geometry is still safe to read: it never changes while mounted.
	 */
	in_use = image_in_use(&im, LOCK_SH);
	ret = read_super(&im, &sb, &backup);
	image_close(&im);
	if (ret)
		return ret;
	rm = malloc(sizeof(*rm));
	if (!rm) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return EXIT_FAILURE;
	}
	find_region_mounts(rm, im.real, &im.st);
	in_use |= rm->n > 0;
	if (json)
		print_info_json(&im, &sb, backup, in_use, rm);
	else
		print_info_table(&im, &sb, backup, in_use, rm);
	free(rm);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: writing the output: %s\n", prog, strerror(errno));
		return EXIT_FAILURE;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* label */

struct label_args {
	struct pool *pool;
	const char *label;
};

/*
 * The primary geometry and its backup change together: fsck requires them
 * equal (but for the magic), so a crash must leave both old or both new.
 */
static int tx_set_label(void *arg)
{
	struct label_args *a = arg;
	struct pmfuse_geometry *g = &a->pool->sb->geo;
	struct pmfuse_geometry *b = pool_ptr(a->pool, pool_backup_off(g));

	pmemobj_tx_add_range_direct(g, sizeof(*g));
	pmemobj_tx_add_range_direct(b, sizeof(*b));
	/* the whole field: fsck compares it byte for byte with the backup */
	memset(g->label, 0, sizeof(g->label));
	memcpy(g->label, a->label, strlen(a->label));
	g->checksum = pool_geometry_checksum(g);
	pool_backup_make(g, b);
	return 0;
}

static void refuse_in_use(const char *path, const struct region_mounts *rm)
{
	if (rm->n)
		fprintf(stderr, "%s: %s is in use: mounted on %s; unmount it first\n",
			prog, path, rm->mountpoint[0]);
	else
		fprintf(stderr, "%s: %s is in use (open by a pmfuse daemon, fsck.pmfuse or"
			" mkfs.pmfuse)\n", prog, path);
}

static int cmd_label(int argc, char **argv)
{
	struct region_mounts *rm;
	struct pmfuse_super sb;
	enum pool_backup backup;
	struct image im;
	struct pool p;
	char why[POOL_WHY], old[PMFUSE_LABEL_MAX];
	const char *path, *label;
	bool in_use;
	int ret;

	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: %s label REGION NEWLABEL\n", prog);
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: %s label REGION NEWLABEL\n", prog);
		return EXIT_USAGE;
	}
	path = argv[1];
	label = argv[2];
	if (strlen(label) >= PMFUSE_LABEL_MAX) {
		fprintf(stderr, "%s: label is %zu bytes long; at most %d are allowed\n", prog,
			strlen(label), PMFUSE_LABEL_MAX - 1);
		return EXIT_FAILURE;
	}

	/* judge it read-only first: pool_open() must never see a stranger */
	ret = image_open(&im, path);
	if (ret)
		return ret;
	rm = malloc(sizeof(*rm));
	if (!rm) {
		image_close(&im);
		fprintf(stderr, "%s: out of memory\n", prog);
		return EXIT_FAILURE;
	}
	find_region_mounts(rm, im.real, &im.st);
	/* just unmounted: its daemon may still be closing the region */
	in_use = rm->n > 0 || (image_in_use(&im, LOCK_EX) && !pool_wait_closing(path));
	if (!in_use)
		ret = read_super(&im, &sb, &backup);
	image_close(&im);	/* our own lock would make pool_open() fail */
	if (in_use) {
		refuse_in_use(path, rm);
		ret = EXIT_FAILURE;
		goto out;
	}
	if (ret)
		goto out;
	if (backup != POOL_BACKUP_OK) {
		fprintf(stderr, "%s: %s: the backup superblock %s; run fsck.pmfuse first\n", prog,
			path, backup == POOL_BACKUP_DAMAGED ? "is damaged" : "differs from the primary");
		ret = EXIT_FAILURE;
		goto out;
	}

	ret = pool_open(&p, path, why, sizeof(why));
	if (ret == -EAGAIN) {
		/* mounted between our look and the open */
		find_region_mounts(rm, im.real, &im.st);
		refuse_in_use(path, rm);
		ret = EXIT_FAILURE;
		goto out;
	}
	if (ret) {
		fprintf(stderr, "%s: %s\n", prog, why);
		ret = EXIT_FAILURE;
		goto out;
	}
	memcpy(old, p.sb->geo.label, sizeof(old));
	struct label_args a = { &p, label };
	ret = pool_tx(&p, tx_set_label, &a);
	pool_close(&p);
	if (ret) {
		fprintf(stderr, "%s: %s: cannot change the label: %s\n", prog, path, strerror(-ret));
		ret = EXIT_FAILURE;
		goto out;
	}

	/* read it back the way the daemon and fsck will */
	ret = image_open(&im, path);
	if (!ret) {
		ret = read_super(&im, &sb, &backup);
		image_close(&im);
	}
	if (!ret && (strcmp(sb.geo.label, label) != 0 || backup != POOL_BACKUP_OK)) {
		fprintf(stderr, "%s: %s: the label did not read back as written\n", prog, path);
		ret = EXIT_FAILURE;
	}
	if (!ret) {
		printf("%s: label changed from ", path);
		print_label(old);
		printf(" to ");
		print_label(label);
		printf("\n");
	}
out:
	free(rm);
	return ret;
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s COMMAND [options] ARGS\n"
		"       %s -V | --version\n\n"
		"Commands:\n"
		"  stats [-j] MOUNTPOINT    counters of a mounted pmfuse filesystem: space,\n"
		"                           inodes, data engine, mode, uptime (-j: JSON)\n"
		"  info [-j] REGION         the superblock of a region, read-only; works on a\n"
		"                           mounted region and says where it is mounted\n"
		"  label REGION NEWLABEL    change the label of an unmounted region (at most %d bytes)\n\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n",
		prog, prog, PMFUSE_LABEL_MAX - 1);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *term = getenv("TERM");
	const char *cmd;
	int c;

	use_colour = isatty(STDOUT_FILENO) && !getenv("NO_COLOR") && term && *term &&
		     strcmp(term, "dumb") != 0;
	while ((c = getopt_long(argc, argv, "+hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("pmfusectl %s (on-media format %u)\n", PMFUSE_VERSION_STRING,
			       PMFUSE_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	optind = 1;	/* each command parses its own options */
	if (strcmp(cmd, "stats") == 0)
		return cmd_stats(argc, argv);
	if (strcmp(cmd, "info") == 0)
		return cmd_info(argc, argv);
	if (strcmp(cmd, "label") == 0)
		return cmd_label(argc, argv);
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
	usage(stderr);
	return EXIT_USAGE;
}
