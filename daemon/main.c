/*
 * pmfuse: mount a pmfuse region.
 *
 *   pmfuse REGION MOUNTPOINT [-f] [-d] [-s] [-o opt,...]
 *
 * The region is opened and validated before anything is mounted, so a bad
 * image is refused on stderr with a non-zero exit and no mount appears.
 * Without -f we daemonize once the mount is live.  Under systemd
 * (Type=notify) READY=1 goes out once the mount is live and STOPPING=1 when
 * the loop ends; SIGTERM ends the loop, and the unmount flushes everything.
 */
#include "fs.h"
#include "fuse_ops.h"
#include "uring.h"
#include "mountinfo.h"
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct options {
	char *region;
	char *log_level;
	int sync;
	int nosplice;
	int nodirect_io;
	int direct_io;
	int nouring;
	int noyield;
	int noacl;
	int writeback_cache;
	int fs_dirty_limit;
	int strictatime;
	int nodiratime;
	int show_help;
	int show_version;
};

enum { KEY_HELP, KEY_VERSION, KEY_IGNORE };

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("sync", sync),
	OPT("nosplice", nosplice),
	OPT("nodirect_io", nodirect_io),
	OPT("direct_io", direct_io),
	OPT("nouring", nouring),
	OPT("noyield", noyield),
	OPT("noacl", noacl),
	OPT("writeback_cache", writeback_cache),
	OPT("fs_dirty_limit", fs_dirty_limit),
	OPT("strictatime", strictatime),
	OPT("nodiratime", nodiratime),
	FUSE_OPT_KEY("acl", KEY_IGNORE),
	OPT("log_level=%s", log_level),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	/* what mount(8)/mount.fuse3 pass from fstab that is not ours */
	FUSE_OPT_KEY("defaults", KEY_IGNORE),
	FUSE_OPT_KEY("nofail", KEY_IGNORE),
	FUSE_OPT_KEY("_netdev", KEY_IGNORE),
	FUSE_OPT_KEY("auto", KEY_IGNORE),
	FUSE_OPT_KEY("noauto", KEY_IGNORE),
	FUSE_OPT_KEY("user", KEY_IGNORE),
	FUSE_OPT_KEY("nouser", KEY_IGNORE),
	FUSE_OPT_KEY("users", KEY_IGNORE),
	FUSE_OPT_KEY("x-", KEY_IGNORE),
	FUSE_OPT_KEY("comment=", KEY_IGNORE),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		o->show_help = 1;
		return 1;	/* libfuse prints its part too */
	case KEY_VERSION:
		o->show_version = 1;
		return 1;
	case KEY_IGNORE:
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (!o->region) {
			o->region = strdup(arg);
			return 0;
		}
		return 1;	/* the mountpoint, for fuse_parse_cmdline() */
	default:
		if (strncmp(arg, "x-", 2) == 0)
			return 0;
		return 1;
	}
}

static void usage(const char *prog)
{
	printf("usage: %s REGION MOUNTPOINT [options]\n\n"
	       "Mount the pmfuse filesystem in REGION (a devdax device or a file made by\n"
	       "mkfs.pmfuse) on MOUNTPOINT.\n\n"
	       "pmfuse options:\n"
	       "    -o sync                persist every write before replying (as MAP_SYNC)\n"
	       "    -o log_level=LEVEL     err, warning, info (default) or debug\n"
	       "    -o nosplice            never take write data through splice (see pmfuse(8))\n"
	       "    -o nodirect_io         O_DIRECT opens use the kernel's page-cache path too\n"
	       "    -o direct_io           every open skips the kernel's page cache, as O_DIRECT\n"
	       "                           ones do (file servers, streaming; see pmfuse(8))\n"
	       "    -o nouring             keep requests on /dev/fuse even where the kernel\n"
	       "                           offers FUSE over io_uring (see pmfuse(8))\n"
	       "    -o noyield             io_uring workers keep their priority when replying\n"
	       "    -o noacl               POSIX ACLs are kept as opaque attributes, not enforced\n"
	       "    -o writeback_cache     buffered writes gather in the kernel's page cache and\n"
	       "                           reach the daemon on write-back, fsync or close: faster\n"
	       "                           small writes, but ENOSPC and EIO come at fsync/close\n"
	       "                           (see pmfuse(8)); default: write-through\n"
	       "    -o fs_dirty_limit      give the mount a kernel filesystem's dirty-page limit\n"
	       "                           instead of FUSE's (1%% of the dirty budget, strict):\n"
	       "                           faster writeback-cache writes (see pmfuse(8))\n"
	       "    -o strictatime         update access times on every read (default: relatime;\n"
	       "                           -o noatime: never)\n"
	       "    -o nodiratime          never update the access times of directories\n"
	       "    -h, --help             this help\n"
	       "    -V, --version          print the version\n"
	       "Ignored (as passed from fstab): defaults, acl, nofail, _netdev, auto, noauto,\n"
	       "user, nouser, users, comment=, x-*\n\n"
	       "Messages go to stderr (to syslog once daemonized, without -f), with\n"
	       "<N> priority prefixes when stderr is the systemd journal.\n\n",
	       prog);
}

/* libfuse's own messages share our levels and our sink */
static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
	pm_vlog((int)level, fmt, ap);
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/*
 * The command line: -1 to go on, or the exit status (help, version, a
 * missing argument, an unknown log level).  region gets the region's
 * absolute path: it names the region in mountinfo and in our messages.
 */
static int parse_command_line(struct fuse_args *args, struct options *o,
			      struct fuse_cmdline_opts *opts, const char *prog, char **region)
{
	if (fuse_opt_parse(args, o, option_spec, opt_proc) == -1 ||
	    fuse_parse_cmdline(args, opts) != 0)
		return 1;
	if (o->show_help || opts->show_help) {
		usage(prog);
		printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		return 0;
	}
	if (o->show_version || opts->show_version) {
		printf("pmfuse %s (on-media format %u)\n", PMFUSE_VERSION_STRING, FS_FORMAT_VERSION);
		fuse_lowlevel_version();
		return 0;
	}
	if (!o->region || !opts->mountpoint) {
		fprintf(stderr, "%s: need a REGION and a MOUNTPOINT (see --help)\n", prog);
		return 2;
	}
	if (o->log_level) {
		int level = log_parse_level(o->log_level);
		if (level < 0) {
			log_err("unknown log_level '%s' (err, warning, info or debug)", o->log_level);
			return 2;
		}
		log_set_level(level);
	}
	if (opts->debug)
		log_set_level(LOG_DEBUG);
	if (o->direct_io && (o->nodirect_io || o->writeback_cache || opts->singlethread)) {
		log_err("-o direct_io excludes %s", o->nodirect_io ? "-o nodirect_io" :
			o->writeback_cache ? "-o writeback_cache" : "-s");
		return 2;
	}
	*region = realpath(o->region, NULL);
	if (!*region) {
		log_err("cannot mount %s: %s", o->region, strerror(errno));
		return 1;
	}
	return -1;
}

/* Permission checks by the kernel; show up as fuse.pmfuse in mountinfo. */
static int add_mount_options(struct fuse_args *args, const char *region)
{
	char fsname[PATH_MAX + 16], *mopts = NULL;
	int ret;

	snprintf(fsname, sizeof(fsname), "fsname=%s", region);
	ret = fuse_opt_add_opt_escaped(&mopts, fsname) ||	/* a ',' in the path */
	      fuse_opt_add_opt(&mopts, "subtype=pmfuse,default_permissions") ||
	      fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, mopts);
	free(mopts);
	return ret;
}

static void log_mounted(struct fs *fs, const char *region, const char *mountpoint)
{
	struct fs_info info;
	struct statvfs sv;

	fs_info(fs, &info);
	fs_statfs(fs, &sv);
	log_info("mounted %s on %s (%s mode, %s granularity, %" PRIu64 " of %" PRIu64
		 " data blocks free)", region, mountpoint, info.sync ? "sync" : "writeback",
		 info.granularity, (uint64_t)sv.f_bfree, (uint64_t)sv.f_blocks);
	if (strcmp(info.granularity, "page") == 0)
		log_info("file data goes through the region's %s (a page's first access "
			 "through a mapping: %ld ns)", info.fd_io ? "file descriptor" : "mapping",
			 info.first_touch_ns);
}

/* Serve requests until unmounted or signalled: 0 for a clean stop. */
static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *opts)
{
	int ret;

	if (opts->singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(cfg, opts->clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, opts->max_threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	/* a signal ends the loop with its number; that is a clean stop */
	return ret > 0 ? 0 : ret ? 1 : 0;
}

/*
 * Access times follow the mount's options, whichever way they were given
 * (-o, fstab, mount -o remount): noatime and ro from the kernel's mount
 * (mountinfo); strictatime and nodiratime, which libfuse does not pass to
 * the kernel, from ours.  The kernel leaves updating them to us.
 */
static void set_atime_policy(struct fs *fs, const char *mountpoint, const struct options *o)
{
	struct mountinfo mi = { 0 };
	enum fs_atime policy = o->strictatime ? FS_ATIME_STRICT : FS_ATIME_RELATIME;
	bool nodiratime;

	if (!mountinfo_find(mountpoint, &mi))
		log_warning("cannot find %s in /proc/self/mountinfo: noatime is not honoured",
			    mountpoint);
	else if (mountinfo_has(&mi, "noatime") || mountinfo_has(&mi, "ro"))
		policy = FS_ATIME_NEVER;
	nodiratime = o->nodiratime || mountinfo_has(&mi, "nodiratime");
	fs_set_atime(fs, policy, nodiratime);
	log_debug("access times: %s%s (mount options %s)",
		  policy == FS_ATIME_NEVER ? "never" : policy == FS_ATIME_STRICT ? "strict" : "relatime",
		  nodiratime ? ", not for directories" : "", mi.opts);
}

/*
 * The kernel gives every FUSE mount a strict dirty-page limit of 1% of the
 * system's dirty budget (/sys/class/bdi/0:N: max_ratio 1, strict_limit 1),
 * a guard against a server that writes pages back slowly or never.  Ours
 * writes them back at memory speed, and the limit is what throttles
 * writers of the writeback cache: buffered 4 KiB random writes with
 * -o writeback_cache ran at 88k/s under it and 210k/s without
 * (bench/README.md).  -o fs_dirty_limit (root) gives the mount a kernel
 * filesystem's limit instead: no strict limit, max_ratio 100.  Not the
 * default: with more dirty pages the kernel writes a large file back in a
 * different order, and a 1 GiB file written through the writeback cache
 * landed in 96-99 extents with fewer of its 2 MiB windows huge, against at
 * most 60 under FUSE's limit (test_engine).
 */
static void lift_dirty_limit(const char *mountpoint)
{
	static const struct { const char *file, *value; } lift[] = {
		{ "strict_limit", "0" }, { "max_ratio", "100" },
	};
	struct mountinfo mi = { 0 };
	char path[64];

	if (!mountinfo_find(mountpoint, &mi)) {
		log_warning("cannot find %s in /proc/self/mountinfo: -o fs_dirty_limit has no "
			    "effect", mountpoint);
		return;
	}
	for (size_t i = 0; i < sizeof(lift) / sizeof(lift[0]); i++) {
		snprintf(path, sizeof(path), "/sys/class/bdi/0:%u/%s", mi.minor, lift[i].file);
		int fd = open(path, O_WRONLY | O_CLOEXEC);

		if (fd < 0 || write(fd, lift[i].value, strlen(lift[i].value)) < 0) {
			log_warning("-o fs_dirty_limit: the kernel's dirty-page limit for FUSE "
				    "stays (%s: %s)", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return;
		}
		close(fd);
	}
	log_debug("dirty pages: a kernel filesystem's limit (/sys/class/bdi/0:%u)", mi.minor);
}

/* The service manager (Type=notify) learns the mount is live. */
static void notify_ready(const char *region, const char *mountpoint)
{
	char *msg;

	if (asprintf(&msg, "READY=1\nSTATUS=Mounted %s on %s", region, mountpoint) < 0)
		msg = NULL;
	service_notify(msg ? msg : "READY=1");
	free(msg);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts = { 0 };
	struct options o = { 0 };
	struct fuse_session *se;
	struct fs *fs = NULL;
	char why[FS_WHY_MAX];
	char *region = NULL;
	int ret;
	struct timespec t0, t1, t2;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	fuse_set_log_func(fuse_log_to_ours);
	ret = parse_command_line(&args, &o, &opts, argv[0], &region);
	if (ret >= 0)
		goto out_args;
	ret = 1;
	pm_opt_splice = !o.nosplice;
	pm_opt_acl = !o.noacl;
	pm_opt_writeback_cache = o.writeback_cache;
	pm_opt_direct_io = !o.nodirect_io && !opts.singlethread;
	pm_opt_all_direct = o.direct_io;
	struct fs_opts fo = { .sync = o.sync != 0, .open_arena = true };
	int err = fs_mount(&fs, region, &fo, why, sizeof(why));
	if (err) {
		log_err("cannot mount %s: %s", region, why);
		goto out_args;
	}
	if (add_mount_options(&args, region))
		goto out_fs;
	se = fuse_session_new(&args, &pm_ops, sizeof(pm_ops), fs);
	if (!se)
		goto out_fs;
	pm_ops_set_session(se);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	set_atime_policy(fs, opts.mountpoint, &o);
	if (o.fs_dirty_limit)
		lift_dirty_limit(opts.mountpoint);
	if (uring_attach(se, fs, opts.mountpoint, !o.nouring && !opts.singlethread, !o.noyield) != 0) {
		log_err("cannot install the session's io hooks");
		goto out_unmount;
	}
	clock_gettime(CLOCK_MONOTONIC, &t2);
	log_debug("mounted %.1f ms after main(): region %.1f ms, FUSE mount %.1f ms",
		  ms_between(&t0, &t2), ms_between(&t0, &t1), ms_between(&t1, &t2));
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;
	if (!opts.foreground)
		log_use_syslog();	/* stderr is /dev/null now */
	fs_start(fs);
	log_mounted(fs, region, opts.mountpoint);
	notify_ready(region, opts.mountpoint);
	ret = serve(se, &opts);
	service_notify("STOPPING=1\nSTATUS=Unmounting");
out_unmount:
	fuse_session_unmount(se);
	uring_detach();		/* the unmount ended the connection the workers wait on */
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	fs_unmount(fs);
out_args:
	free(opts.mountpoint);
	free(region);
	free(o.region);
	free(o.log_level);
	fuse_opt_free_args(&args);
	return ret;
}
