/*
 * fsck pass 4: the orphan list, reachability from the root, link counts.
 */
#include "check.h"

/* ------------------------------------------------------------------ */
/* pass 4: orphan list, reachability, link counts */

void check_orphan_list(struct fsck *f)
{
	uint64_t cur = f->p->sb->orphan_head, prev = 0, steps = 0;
	uint64_t problems = f->problems;

	while (cur) {
		struct pmfuse_inode *pi = rec(f, cur);
		if (++steps > f->max_inodes) {
			problem(f, "orphan list: longer than the inode table (a cycle?)");
			break;
		}
		if (!pi || !(f->st[cur] & I_USED)) {
			if (prev)
				problem(f, "inode %" PRIu64 ": next orphan is %" PRIu64 ", which is not in use",
					prev, cur);
			else
				problem(f, "superblock: orphan list head %" PRIu64 " is not in use", cur);
			break;
		}
		if (f->st[cur] & I_ONLIST) {
			problem(f, "orphan list: cycle at inode %" PRIu64 " (reached again from inode %" PRIu64 ")",
				cur, prev);
			break;
		}
		f->st[cur] |= I_ONLIST;
		if (!(pi->flags & PMFUSE_IF_ORPHAN))
			problem(f, "inode %" PRIu64 ": on the orphan list but not flagged as an orphan", cur);
		if (pi->orphan_prev != prev)
			problem(f, "inode %" PRIu64 ": previous orphan is %" PRIu64 ", expected %" PRIu64,
				cur, pi->orphan_prev, prev);
		prev = cur;
		cur = pi->orphan_next;
	}
	if (f->problems != problems)
		f->orphan_bad = true;
}

static void push(struct fsck *f, uint64_t ino)
{
	if (f->qtail == f->qcap) {
		size_t cap = f->qcap ? f->qcap * 2 : 1024;
		uint64_t *q = realloc(f->queue, cap * sizeof(*q));
		if (!q)
			fatal("out of memory");
		f->queue = q;
		f->qcap = cap;
	}
	f->queue[f->qtail++] = ino;
}

static void reach_entry(void *ctx, uint64_t slot, const struct pmfuse_dirent *de)
{
	struct fsck *f = ctx;
	const struct pmfuse_inode *px = good(f, de->ino);

	(void)slot;
	if (!rec(f, de->ino) || !(f->st[de->ino] & I_USED) || (f->st[de->ino] & I_REACHED))
		return;
	f->st[de->ino] |= I_REACHED;
	if (px && S_ISDIR(px->mode))
		push(f, de->ino);
}

void check_reachability(struct fsck *f)
{
	if (!f->root_ok)
		return;
	f->st[PMFUSE_ROOT_INO] |= I_REACHED;
	push(f, PMFUSE_ROOT_INO);
	/* each directory is queued at most once (I_REACHED): bounded by max_inodes */
	while (f->qhead < f->qtail) {
		uint64_t d = f->queue[f->qhead++];
		dir_foreach(f, d, rec(f, d), false, reach_entry, f);
	}
}

void check_links(struct fsck *f)
{
	for (uint64_t ino = next_ino(f, 0); ino < f->max_inodes; ino = next_ino(f, ino)) {
		const struct pmfuse_inode *pi = good(f, ino);
		if (!(f->st[ino] & I_USED))
			continue;
		if (!pi) {
			/* damaged: counted, not judged */
			const struct pmfuse_inode *r = rec(f, ino);
			if (r && (r->flags & PMFUSE_IF_ORPHAN) && r->nlink == 0)
				f->n_orphan++;
			continue;
		}
		uint32_t refs = f->nref[ino];
		bool dir = S_ISDIR(pi->mode);

		switch (pi->mode & S_IFMT) {
		case S_IFDIR: f->n_dir++; break;
		case S_IFREG: f->n_reg++; break;
		case S_IFLNK: f->n_lnk++; break;
		default: f->n_other++; break;
		}
		if (pi->flags & PMFUSE_IF_ORPHAN) {
			if (!(f->st[ino] & I_ONLIST)) {
				problem(f, "inode %" PRIu64 ": flagged as an orphan but not on the orphan list", ino);
				f->orphan_bad = true;
			}
			if (pi->nlink == 0) {
				f->n_orphan++;
				if (refs)
					problem(f, "inode %" PRIu64 ": orphan (link count 0), but %u names refer to it",
						ino, refs);
				continue;
			}
			problem(f, "inode %" PRIu64 ": flagged as an orphan, but its link count is %u"
				" (it would be deleted at the next mount)", ino, pi->nlink);
			f->orphan_bad = true;
		} else if (pi->orphan_next || pi->orphan_prev) {
			problem(f, "inode %" PRIu64 ": not an orphan, but has orphan list links (next %" PRIu64
				", previous %" PRIu64 ")", ino, pi->orphan_next, pi->orphan_prev);
			f->orphan_bad = true;
		}
		if (f->root_ok && !(f->st[ino] & I_REACHED)) {
			if (dir) {
				problem(f, "inode %" PRIu64 ": directory is not connected to the root"
					" (%u names refer to it)", ino, refs);
				continue;
			}
			if (refs == 0) {
				problem(f, "inode %" PRIu64 ": %s is not in any directory (link count %u)",
					ino, type_name(pi->mode), pi->nlink);
				continue;
			}
			/* named only in disconnected directories: they are reported */
		}
		if (dir) {
			if (ino != PMFUSE_ROOT_INO && refs > 1)
				problem(f, "inode %" PRIu64 ": directory has %u names (directories cannot be"
					" hard-linked)", ino, refs);
		} else if (pi->nlink != refs) {
			problem(f, "inode %" PRIu64 ": link count %u, but %u names refer to it",
				ino, pi->nlink, refs);
		}
	}
}
