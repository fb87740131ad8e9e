/*
 * pmfuse: mount a pmfuse region.
 *
 *   pmfuse REGION MOUNTPOINT [-f] [-d] [-s] [-o opt,...]
 *
 * The region is opened and validated before anything is mounted, so a bad
 * image is refused on stderr with a non-zero exit and no mount appears.
 * Without -f we daemonize once the mount is live.
 */
#include "fs.h"
#include "fuse_ops.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct options {
	char *region;
	int sync;
	int show_help;
	int show_version;
};

enum { KEY_HELP, KEY_VERSION, KEY_IGNORE };

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("sync", sync),
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
	       "    -h, --help             this help\n"
	       "    -V, --version          print the version\n"
	       "Ignored (as passed from fstab): defaults, nofail, _netdev, auto, noauto, x-*\n\n",
	       prog);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct options o = { 0 };
	struct fuse_session *se;
	struct fs *fs = NULL;
	char why[POOL_WHY];
	int ret = 1;

	if (fuse_opt_parse(&args, &o, option_spec, opt_proc) == -1)
		return 1;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (o.show_help || opts.show_help) {
		usage(argv[0]);
		printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out_args;
	}
	if (o.show_version || opts.show_version) {
		printf("pmfuse %s (on-media format %u)\n", PMFUSE_VERSION_STRING, PMFUSE_VERSION);
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (!o.region || !opts.mountpoint) {
		fprintf(stderr, "%s: need a REGION and a MOUNTPOINT (see --help)\n", argv[0]);
		ret = 2;
		goto out_args;
	}

	struct fs_opts fo = { .sync = o.sync != 0 };
	int err = fs_mount(&fs, o.region, &fo, why, sizeof(why));
	if (err) {
		fprintf(stderr, "pmfuse: cannot mount %s: %s\n", o.region, why);
		goto out_args;
	}
	if (opts.debug)
		fprintf(stderr, "pmfuse: %s: %s, granularity %s\n", o.region, why,
			region_granularity_name(&fs->region));

	/* permission checks by the kernel; show up as fuse.pmfuse in mountinfo */
	char fsname[4200];
	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=pmfuse,default_permissions", o.region);
	fuse_opt_add_arg(&args, fsname);

	se = fuse_session_new(&args, &pm_ops, sizeof(pm_ops), fs);
	if (!se)
		goto out_fs;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;
	if (opts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(cfg, opts.clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	/* a signal ends the loop with its number; that is a clean stop */
	if (ret > 0)
		ret = 0;
	ret = ret ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	fs_unmount(fs);
out_args:
	free(opts.mountpoint);
	free(o.region);
	fuse_opt_free_args(&args);
	return ret;
}
