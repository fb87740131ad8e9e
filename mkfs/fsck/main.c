/*
 * fsck.pmfuse: consistency check and repair of a pmfuse region.
 *
 *   fsck.pmfuse [-n | -p | -a | -y] [-f] [-v] REGION
 *
 * The check opens the region with pool_open() (which takes pmemobj's
 * exclusive lock, so a mounted region is refused) copy-on-write, and maps
 * it read-only: a bug in the check can crash fsck but never write the
 * image.  Each problem found is one line on stdout.
 *
 * Repair (-p/-a, -y, or answers on a terminal) happens only after that
 * check found something to do: the region is then opened for real, checked
 * again (read-only) and repaired in rounds -- each round checks, then applies
 * the repairs that check justifies, each repair one libpmemobj transaction
 * built from the core's own functions (inode_reclaim(), dir_tx_insert(),
 * dir_tx_remove(), fs_mknod()).  A crash during repair leaves a consistent
 * region that at worst needs another fsck.  Finally the region is reopened
 * copy-on-write and checked once more; that check decides the exit status,
 * a sum as in fsck(8): 0 clean, 1 errors corrected, 4 errors left
 * uncorrected, 8 operational error, 16 usage error, 32 cancelled.
 *
 * Check passes:
 *   1  superblock: backup geometry, state, inode table and data runs
 *   2  inode table: chunk offsets, inode_validate() on every used inode
 *   3  per inode: file maps (fmap_walk, block bitmap), symlinks, xattrs,
 *      directories (table, entries, names, types, parents, counts)
 *   4  orphan list; reachability from the root; link counts
 *   5  blocks claimed twice (named by owner), space accounting
 *   6  every metadata offset is an allocated pmemobj object, used once;
 *      allocated objects nobody references (leaks)
 *
 * Every persistent offset is checked with the core's validators before it
 * is dereferenced, and every loop is bounded by the image's geometry.
 */
#include "check.h"

/* ------------------------------------------------------------------ */

/* Does someone hold the region's lock (pmemobj's flock: a daemon, or another fsck)? */
static bool region_in_use(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool busy;

	if (fd < 0)
		return false;	/* open_region() says why */
	busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd);		/* drops our lock, if we got it */
	/* just unmounted: its daemon may still be closing the region */
	return busy && !pool_wait_closing(path);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fsck.pmfuse [-n | -p | -a | -y] [-f] [-v] REGION\n"
		"Check a pmfuse region and repair it if asked.  The region must not be mounted.\n"
		"  -n      check only, change nothing (the default when stdin is not a terminal;\n"
		"          on a terminal, each repair is asked for)\n"
		"  -p, -a  repair what is safe without asking: orphans reclaimed, the orphan list\n"
		"          rebuilt, link/entry/block counts and parent pointers set from what is\n"
		"          counted, entries naming free inodes removed, unreferenced metadata\n"
		"          objects freed.  A cleanly unmounted region is not checked (see -f)\n"
		"  -y      repair everything that can be: also reattach unreachable files and\n"
		"          directories under /lost+found as #INO (created if missing)\n"
		"  -f      with -p/-a: check even a cleanly unmounted region (the other modes\n"
		"          always check everything)\n"
		"  -v      print a summary of the region\n"
		"  -V, --version, -h, --help\n"
		"exit status, a sum: 0 clean, 1 errors corrected, 4 errors left uncorrected,\n"
		"  8 operational error (e.g. the region is in use), 16 usage error, 32 cancelled\n");
}


/* The command line: -1 to go on, or the exit status. */
static int parse_args(struct fsck *f, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, modes = 0;

	while ((c = getopt_long(argc, argv, "nvfypahV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': f->r.mode = M_CHECK; modes |= 1; break;
		case 'p': case 'a': f->r.mode = M_PREEN; modes |= 2; break;
		case 'y': f->r.mode = M_YES; modes |= 4; break;
		case 'f': f->r.force = true; break;
		case 'v': f->verbose = true; break;
		case 'h': usage(stdout); return FSCK_OK;
		case 'V': printf("fsck.pmfuse %s\n", PMFUSE_VERSION_STRING); return FSCK_OK;
		default: usage(stderr); return FSCK_USAGE;
		}
	}
	if (modes & (modes - 1)) {
		fprintf(stderr, "fsck.pmfuse: only one of -n, -p/-a and -y may be given\n");
		usage(stderr);
		return FSCK_USAGE;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "fsck.pmfuse: %s\n", optind < argc ? "only one region can be checked"
								    : "no region given");
		usage(stderr);
		return FSCK_USAGE;
	}
	f->region = argv[optind];
	f->guarded = true;	/* watchdogs on libpmemobj's open and heap walk */
	if (!modes)
		f->r.mode = isatty(STDIN_FILENO) ? M_ASK : M_CHECK;
	return -1;
}

static void install_handlers(void)
{
	struct sigaction ca = { .sa_handler = on_cancel };

	install_fault_handlers();
	sigaction(SIGINT, &ca, NULL);
	sigaction(SIGTERM, &ca, NULL);
}

/*
 * The first, read-only check: its exit status when nothing is to be
 * repaired (or cannot be), -1 when the repair should run.
 */
static int first_check(struct fsck *f)
{
	int ret = open_region(f);

	if (ret >= 0) {
		if (ret == FSCK_UNCORRECTED) {
			printf("%s: %" PRIu64 " problem(s) found, not repaired\n", f->region, f->problems);
			if (f->r.mode != M_CHECK)
				printf("%s: a damaged superblock is not repaired by this version\n",
				       f->region);
		}
		fflush(stdout);
		cleanup(f);
		return ret;
	}
	/*
	 * "Clean" is the superblock's state: the daemon writes MOUNTED when it
	 * mounts and CLEAN when it unmounts (fs_mount(), fs_unmount()), so a
	 * region left MOUNTED was not unmounted (crash, kill -9), and a CLEAN
	 * one with an empty orphan list needs nothing.  Only the preen mode --
	 * what boot runs -- trusts that; -n, -y and the questions always check.
	 */
	if (f->r.mode == M_PREEN && !f->r.force && !f->degraded &&
	    f->p->sb->state == PMFUSE_STATE_CLEAN && f->p->sb->orphan_head == 0 &&
	    pool_ichunk_hwm_ok(f->p)) {
		printf("%s: clean (cleanly unmounted; -f forces a check)\n", f->region);
		cleanup(f);
		return FSCK_OK;
	}
	run_check(f);
	if (f->r.mode == M_CHECK || f->degraded ||
	    (!f->problems && !f->n_orphan && f->p->sb->state == PMFUSE_STATE_CLEAN)) {
		if (f->verbose)
			summary(f, f->used_blocks, f->fs_blocks);
		if (f->problems && f->degraded && f->r.mode != M_CHECK)
			printf("%s: a damaged superblock or inode table is not repaired by this"
			       " version\n", f->region);
		report(f);
		fflush(stdout);
		cleanup(f);
		ret = f->problems ? FSCK_UNCORRECTED : FSCK_OK;
		check_free(f);
		return ret;
	}
	if (f->problems)
		printf("%s: %" PRIu64 " problem(s) found; repairing\n", f->region, f->problems);
	fflush(stdout);
	cleanup(f);
	check_free(f);
	return -1;
}

/* After the repairs, the verdict: a fresh copy-on-write check, as -n would make it. */
static int final_check(struct fsck *f)
{
	int fixed = f->r.fixed ? FSCK_CORRECTED : 0;
	int ret;

	repairing = 0;
	if (cancel_requested) {
		fprintf(stderr, "fsck.pmfuse: cancelled\n");
		return FSCK_CANCELLED | fixed;
	}
	ret = open_region(f);
	if (ret >= 0)
		return ret | fixed;
	run_check(f);
	if (f->verbose)
		summary(f, f->used_blocks, f->fs_blocks);
	if (f->r.fixed)
		printf("%s: %" PRIu64 " repair(s) made\n", f->region, f->r.fixed);
	report(f);
	if (f->problems && f->r.mode == M_PREEN)
		printf("%s: UNEXPECTED INCONSISTENCY: run fsck.pmfuse -y (or on a terminal, without"
		       " -p/-a) to repair the rest\n", f->region);
	fflush(stdout);
	cleanup(f);
	return (f->problems ? FSCK_UNCORRECTED : FSCK_OK) | fixed;
}

int main(int argc, char **argv)
{
	struct fsck *f = fsck_new();
	int ret = parse_args(f, argc, argv);

	if (ret >= 0)
		return ret;
	install_handlers();
	pool_use_open_arena();
	/* pmemobj's lock says "mounted" before anything else can say something obscure */
	if (region_in_use(f->region))
		return refuse_in_use(f);
	ret = first_check(f);
	if (ret < 0) {
		ret = repair(f);
		ret = ret == FSCK_OPERATIONAL ? ret | (f->r.fixed ? FSCK_CORRECTED : 0)
					      : final_check(f);
	}
	fsck_free(f);
	return ret;
}
