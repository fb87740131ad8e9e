/*
 * xattr: extended attributes.  All of an inode's attributes live in one
 * object of back-to-back records (format.h); a change builds the new set in
 * DRAM and swaps objects in one transaction, so readers under the inode
 * lock always see a complete set.  "user.pmfuse." is reserved: its names
 * are generated, never stored -- user.pmfuse.stats on the root (counters)
 * and user.pmfuse.extents on a regular file (its extents and huge runs).
 */
#include "core.h"
#include "xattr.h"
#include "acl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define RESERVED_PREFIX "user.pmfuse."
#define STATS_NAME RESERVED_PREFIX "stats"
#define EXTENTS_NAME RESERVED_PREFIX "extents"
#define XATTR_VALUE_MAX 65536

int xattr_set_validate(const struct pool *p, uint64_t off, char *why, size_t whylen)
{
	const struct pmfuse_xattrs *x;
	size_t pos = 0;

	if (!pool_struct_ok(p, off, sizeof(*x))) {
		snprintf(why, whylen, "xattr object at offset %" PRIu64 " is out of range", off);
		return -EUCLEAN;
	}
	x = pool_ptr(p, off);
	if (x->used > PMFUSE_XATTR_MAX_TOTAL || !pool_meta_range_ok(p, off, sizeof(*x) + x->used)) {
		snprintf(why, whylen, "xattr object at offset %" PRIu64 " has an invalid size %u",
			 off, x->used);
		return -EUCLEAN;
	}
	for (uint32_t i = 0; i < x->count; i++) {
		const struct pmfuse_xattr_rec *r = (const void *)((const char *)(x + 1) + pos);
		if (pos + sizeof(*r) > x->used || pos + xattr_rec_size(r) > x->used) {
			snprintf(why, whylen, "xattr record %u of %u extends past the %u bytes used",
				 i, x->count, x->used);
			return -EUCLEAN;
		}
		if (r->name_len == 0 || memchr(r + 1, '\0', r->name_len)) {
			snprintf(why, whylen, "xattr record %u has an empty name or a NUL in it", i);
			return -EUCLEAN;
		}
		pos += xattr_rec_size(r);
	}
	if (pos != x->used) {
		snprintf(why, whylen, "xattr object: %u records take %zu bytes, but %u are used",
			 x->count, pos, x->used);
		return -EUCLEAN;
	}
	return 0;
}

/* Validated view of an inode's attribute object; NULL set = none. */
static int xattrs_get(struct fs *fs, const struct pmfuse_inode *pi,
		      const struct pmfuse_xattrs **out)
{
	char why[POOL_WHY];

	*out = NULL;
	if (!pi->xattr_off)
		return 0;
	if (xattr_set_validate(&fs->pool, pi->xattr_off, why, sizeof(why)))
		return -EIO;
	*out = pool_ptr(&fs->pool, pi->xattr_off);
	return 0;
}

static const struct pmfuse_xattr_rec *xattr_find(const struct pmfuse_xattrs *x, const char *name,
						 size_t nlen)
{
	size_t pos = 0;

	for (uint32_t i = 0; x && i < x->count; i++) {
		const struct pmfuse_xattr_rec *r = (const void *)((const char *)(x + 1) + pos);
		if (r->name_len == nlen && memcmp(r + 1, name, nlen) == 0)
			return r;
		pos += xattr_rec_size(r);
	}
	return NULL;
}

/*
 * mounted_at is the superblock's last_mount: fs_mount() stamps it in the
 * transaction that marks the region mounted, and nothing changes it until
 * the unmount, so it is this session's start (pmfusectl shows the uptime).
 */
static int stats_text(struct fs *fs, char *buf, size_t size)
{
	uint64_t h2 = (uint64_t)atomic_load(&fs->alloc.huge_2m);
	uint64_t h1 = (uint64_t)atomic_load(&fs->alloc.huge_1g);
	struct statvfs sv;
	uint64_t pieces, added, removed, data;

	fs_statfs(fs, &sv);
	alloc_area(&fs->alloc, &data, &pieces, &added, &removed);
	int n = snprintf(buf, size,
			"flush_bytes %" PRIu64 "\nflush_calls %" PRIu64 "\ndrains %" PRIu64
			"\ndirty_pages %" PRId64 "\nzero_bytes_served %" PRIu64
			"\nsplice_write_bytes %" PRIu64 "\nmedia_errors %" PRIu64
			"\nblocks_total %" PRIu64 "\nblocks_free %" PRIu64
			"\nhuge_2m_extents %" PRIu64 "\nhuge_1g_extents %" PRIu64
			"\ninodes_total %" PRIu64 "\ninodes_free %" PRIu64
			"\ngranularity %s\nregion_io %s\nfirst_touch_ns %ld\nmode %s"
			"\nmounted_at %" PRIu64
			"\ndata_area_blocks %" PRIu64 "\ndata_pieces %" PRIu64
			"\npieces_added %" PRIu64 "\npieces_removed %" PRIu64
			"\nmetadata_bytes %" PRId64 "\nmount_state %s\n",
			atomic_load(&fs->stats.flush_bytes), atomic_load(&fs->stats.flush_calls),
			atomic_load(&fs->stats.drains), atomic_load(&fs->stats.dirty_pages),
			atomic_load(&fs->stats.zero_bytes_served),
			atomic_load(&fs->stats.splice_write_bytes),
			atomic_load(&fs->region.media_errors), (uint64_t)sv.f_blocks,
			(uint64_t)sv.f_bfree, h2, h1, (uint64_t)sv.f_files, (uint64_t)sv.f_ffree,
			region_granularity_name(&fs->region), fs->region.fd_io ? "fd" : "map",
			fs->region.first_touch_ns, fs->opts.sync ? "sync" : "writeback",
			fs->pool.sb->last_mount, data, pieces, added, removed,
			atomic_load(&fs->pool.meta_bytes), fs->mount_state ? fs->mount_state : "-");
	uint64_t ichunks, ichunks_freed;
	inode_table_stats(fs, &ichunks, &ichunks_freed);
	if (n >= 0 && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n,
			      "inode_chunks %" PRIu64 "\ninode_chunks_freed %" PRIu64 "\n", ichunks,
			      ichunks_freed);
	uint64_t dax_faults, dax_flush;
	dax_stats(fs, &dax_faults, &dax_flush);
	if (n >= 0 && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n,
			      "dax_maps %" PRId64 "\ndax_mapped_bytes %" PRId64 "\ndax_faults %" PRIu64
			      "\ndax_fault_allocs %" PRIu64 "\ndax_huge_maps %" PRIu64
			      "\ndax_flush_bytes %" PRIu64 "\ndax_deferred_blocks %" PRIu64
			      "\ndax_quarantined_blocks %" PRIu64 "\n",
			      atomic_load(&fs->stats.dax_maps), atomic_load(&fs->stats.dax_mapped_bytes),
			      dax_faults, atomic_load(&fs->stats.dax_fault_allocs),
			      atomic_load(&fs->stats.dax_huge_maps), dax_flush,
			      atomic_load(&fs->stats.dax_deferred_blocks),
			      alloc_held(&fs->alloc));
	if (n >= 0 && (size_t)n < size && fs->stats_extra) {
		int m = fs->stats_extra(buf + n, size - (size_t)n);
		/* a cut-off tail is not counted: the caller copies n bytes of buf */
		if (m > 0 && (size_t)m < size - (size_t)n)
			n += m;
		else
			buf[n] = 0;
	}
	return n;
}

static bool reserved(const char *name)
{
	return strncmp(name, RESERVED_PREFIX, sizeof(RESERVED_PREFIX) - 1) == 0;
}

/*
 * The skeleton of every attribute operation: op runs with the inode locked
 * (exclusively to change its set) and its attribute set validated.
 */
typedef ssize_t (*xattr_op)(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			    void *arg);

static ssize_t with_xattrs(struct fs *fs, uint64_t ino, bool change, xattr_op op, void *arg)
{
	const struct pmfuse_xattrs *x;
	struct inode *in = inode_get(fs, ino);
	ssize_t ret;

	if (!in)
		return -ENOENT;
	if (change)
		pthread_rwlock_wrlock(&in->lock);
	else
		pthread_rwlock_rdlock(&in->lock);
	ret = xattrs_get(fs, in->pi, &x);
	if (ret == 0)
		ret = op(fs, in, x, arg);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}

/* A name and a buffer: what get and list hand their op. */
struct xattr_buf {
	const char *name;
	char *buf;
	size_t size;			/* 0: only say how much is needed */
};

static ssize_t get_value(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			 void *arg)
{
	struct xattr_buf *b = arg;
	const struct pmfuse_xattr_rec *r = xattr_find(x, b->name, strlen(b->name));

	(void)fs;
	(void)in;
	if (!r)
		return -ENODATA;
	if (b->size == 0)
		return r->value_len;
	if (r->value_len > b->size)
		return -ERANGE;
	memcpy(b->buf, (const char *)(r + 1) + r->name_len, r->value_len);
	return r->value_len;
}

ssize_t fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *value, size_t size)
{
	struct xattr_buf g = { name, value, size };

	bool stats = ino == PMFUSE_ROOT_INO && strcmp(name, STATS_NAME) == 0;
	if (stats || strcmp(name, EXTENTS_NAME) == 0) {
		char buf[4096];	/* the stats are ~2.2 KiB */
		int n = stats ? stats_text(fs, buf, sizeof(buf))
			      : data_extents_text(fs, ino, buf, sizeof(buf));
		if (n < 0)
			return n == -EINVAL || n == -EISDIR ? -ENODATA : n;
		if (size == 0)
			return n;
		if ((size_t)n > size)
			return -ERANGE;
		memcpy(value, buf, (size_t)n);
		return n;
	}
	return with_xattrs(fs, ino, false, get_value, &g);
}

static ssize_t list_names(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			  void *arg)
{
	struct xattr_buf *b = arg;
	size_t need = 0, pos = 0;

	(void)fs;
	(void)in;
	for (uint32_t i = 0; x && i < x->count; i++) {
		const struct pmfuse_xattr_rec *r = (const void *)((const char *)(x + 1) + pos);
		if (b->size) {
			if (need + r->name_len + 1 > b->size)
				return -ERANGE;
			memcpy(b->buf + need, r + 1, r->name_len);
			b->buf[need + r->name_len] = '\0';
		}
		need += r->name_len + 1;
		pos += xattr_rec_size(r);
	}
	return (ssize_t)need;
}

ssize_t fs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size)
{
	struct xattr_buf b = { NULL, list, size };

	return with_xattrs(fs, ino, false, list_names, &b);
}

void xattr_new_free(struct xattr_new *n)
{
	free(n->recs);
	*n = (struct xattr_new){ 0 };
}

int xattr_new_add(struct xattr_new *n, const char *name, const void *value, size_t vlen)
{
	size_t nlen = strlen(name);
	size_t rec = (sizeof(struct pmfuse_xattr_rec) + nlen + vlen + 7) & ~(size_t)7;
	char *recs;

	if (n->used + rec > PMFUSE_XATTR_MAX_TOTAL)
		return -ENOSPC;
	recs = realloc(n->recs, n->used + rec);
	if (!recs)
		return -ENOMEM;
	n->recs = recs;
	struct pmfuse_xattr_rec *r = (void *)(recs + n->used);
	memset(r, 0, rec);
	r->name_len = (uint16_t)nlen;
	r->value_len = (uint32_t)vlen;
	memcpy(r + 1, name, nlen);
	memcpy((char *)(r + 1) + nlen, value, vlen);
	n->used += rec;
	n->count++;
	return 0;
}

/* x's records without name, then name=value if value is non-NULL. */
static int new_set(const struct pmfuse_xattrs *x, const char *name, size_t nlen,
		   const void *value, size_t vlen, struct xattr_new *out)
{
	size_t pos = 0;

	*out = (struct xattr_new){ 0 };
	out->recs = malloc((x ? x->used : 0) + 8);
	if (!out->recs)
		return -ENOMEM;
	for (uint32_t i = 0; x && i < x->count; i++) {
		const struct pmfuse_xattr_rec *r = (const void *)((const char *)(x + 1) + pos);
		pos += xattr_rec_size(r);
		if (r->name_len == nlen && memcmp(r + 1, name, nlen) == 0)
			continue;
		memcpy(out->recs + out->used, r, xattr_rec_size(r));
		out->used += xattr_rec_size(r);
		out->count++;
	}
	int ret = value ? xattr_new_add(out, name, value, vlen) : 0;
	if (ret)
		xattr_new_free(out);
	return ret;
}

int xattr_new_from(struct fs *fs, const struct pmfuse_inode *pi, const char *name,
		   const void *value, size_t vlen, struct xattr_new *out)
{
	const struct pmfuse_xattrs *x;
	int ret = xattrs_get(fs, pi, &x);

	return ret ? ret : new_set(x, name, strlen(name), value, vlen, out);
}

int xattr_copy(struct fs *fs, const struct pmfuse_inode *pi, const char *name, void **value,
	       size_t *len)
{
	const struct pmfuse_xattrs *x;
	const struct pmfuse_xattr_rec *r;
	int ret = xattrs_get(fs, pi, &x);

	*value = NULL;
	*len = 0;
	if (ret || !(r = xattr_find(x, name, strlen(name))))
		return ret;
	*value = malloc(r->value_len ? r->value_len : 1);
	if (!*value)
		return -ENOMEM;
	memcpy(*value, (const char *)(r + 1) + r->name_len, r->value_len);
	*len = r->value_len;
	return 0;
}

void xattr_tx_install(struct fs *fs, struct pmfuse_inode *pi, const struct xattr_new *n)
{
	uint64_t off = 0;

	if (n->count) {
		PMEMoid oid = pool_tx_alloc(sizeof(struct pmfuse_xattrs) + n->used);
		struct pmfuse_xattrs *nx = pool_ptr(&fs->pool, oid.off);
		nx->count = n->count;
		nx->used = (uint32_t)n->used;
		memcpy(nx + 1, n->recs, n->used);
		off = oid.off;
	}
	if (pi->xattr_off)
		pool_tx_free(pmemobj_oid(pool_ptr(&fs->pool, pi->xattr_off)));
	pmemobj_tx_add_range_direct(&pi->xattr_off, sizeof(pi->xattr_off));
	pi->xattr_off = off;
}

struct swap_args {
	struct fs *fs;
	struct inode *in;
	const struct xattr_new *set;
	mode_t mode;		/* the inode's mode after the swap, in the same transaction */
};

static int tx_swap(void *arg)
{
	struct swap_args *a = arg;
	struct pmfuse_inode *pi = a->in->pi;

	xattr_tx_install(a->fs, pi, a->set);
	if (a->mode != pi->mode) {
		pmemobj_tx_add_range_direct(&pi->mode, sizeof(pi->mode));
		pi->mode = a->mode;
	}
	inode_tx_touch(pi, false, false, true);
	return 0;
}

/*
 * Replace the set: drop name (if present) and, if value is non-NULL, add
 * name=value; the mode becomes mode.  One transaction.
 */
static int xattr_rewrite(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			 const char *name, size_t nlen, const void *value, size_t vlen,
			 mode_t mode)
{
	struct xattr_new n;
	int ret = new_set(x, name, nlen, value, vlen, &n);

	if (ret)
		return ret;
	struct swap_args a = { fs, in, &n, mode };
	ret = pool_tx(&fs->pool, tx_swap, &a);
	xattr_new_free(&n);
	return ret;
}

/* A change of one attribute: value NULL removes it. */
struct xattr_change {
	const char *name;
	size_t nlen;
	const void *value;
	size_t size;
	int flags;			/* XATTR_CREATE, XATTR_REPLACE */
	const struct fs_cred *cr;
};

struct mode_args {
	struct pmfuse_inode *pi;
	mode_t mode;
};

static int tx_set_mode(void *arg)
{
	struct mode_args *a = arg;

	pmemobj_tx_add_range_direct(&a->pi->mode, sizeof(a->pi->mode));
	a->pi->mode = a->mode;
	inode_tx_touch(a->pi, false, false, true);
	return 0;
}

/* The mode becomes mode (and ctime now), one transaction. */
static int inode_set_mode(struct fs *fs, struct inode *in, mode_t mode)
{
	struct mode_args a = { in->pi, mode };

	return pool_tx(&fs->pool, tx_set_mode, &a);
}

/*
 * Setting a POSIX ACL (the kernel has checked the caller owns the file):
 * a default ACL only on a directory; an access ACL sets the permission bits
 * and is not stored when they say it all; setgid goes if the caller is
 * outside the group (posix_acl_update_mode()).
 */
static ssize_t change_acl(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			  struct xattr_change *c, int kind)
{
	mode_t mode = in->pi->mode;
	const void *value = c->value;

	if (acl_check(value, c->size))
		return -EINVAL;
	if (kind == 2) {
		if (!S_ISDIR(mode))
			return -EACCES;
	} else {
		if (!acl_equiv_mode(value, c->size, &mode))
			value = NULL;
		if ((mode & S_ISGID) && !fs_cred_in_group(c->cr, in->pi->gid) &&
		    !fs_cred_capable_fsetid(c->cr))
			mode &= ~(mode_t)S_ISGID;
		if (!value && !xattr_find(x, c->name, c->nlen))
			return inode_set_mode(fs, in, mode);	/* nothing to store or drop */
	}
	return xattr_rewrite(fs, in, x, c->name, c->nlen, value, c->size, mode);
}

static ssize_t change_value(struct fs *fs, struct inode *in, const struct pmfuse_xattrs *x,
			    void *arg)
{
	struct xattr_change *c = arg;
	bool exists = xattr_find(x, c->name, c->nlen) != NULL;
	int kind = acl_xattr_kind(c->name);

	if (inode_pinned(in->pi))
		return -EPERM;		/* chattr +i or +a (xattr_permission) */

	if (kind && c->value)
		return change_acl(fs, in, x, c, kind);
	if ((c->flags & XATTR_CREATE) && exists)
		return -EEXIST;
	if (((c->flags & XATTR_REPLACE) || !c->value) && !exists)
		return -ENODATA;
	return xattr_rewrite(fs, in, x, c->name, c->nlen, c->value, c->size, in->pi->mode);
}

int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value,
		size_t size, int flags, const struct fs_cred *cr)
{
	struct xattr_change c = { name, strlen(name), value ? value : "", size, flags, cr };

	if (reserved(name))
		return -EPERM;
	if (c.nlen == 0 || c.nlen > 255)
		return -ERANGE;
	if (size > XATTR_VALUE_MAX)
		return -E2BIG;
	return (int)with_xattrs(fs, ino, true, change_value, &c);
}

int fs_removexattr(struct fs *fs, uint64_t ino, const char *name)
{
	struct xattr_change c = { name, strlen(name), NULL, 0, 0, NULL };

	if (reserved(name))
		return -EPERM;
	return (int)with_xattrs(fs, ino, true, change_value, &c);
}

#define CAPS_NAME "security.capability"

static mode_t sgid_to_drop(const struct pmfuse_inode *pi, const struct fs_cred *cr)
{
	if (!(pi->mode & S_ISGID))
		return 0;
	if ((pi->mode & S_IXGRP) || !(fs_cred_in_group(cr, pi->gid) || fs_cred_capable_fsetid(cr)))
		return S_ISGID;
	return 0;
}

mode_t inode_setid_on_write(const struct pmfuse_inode *pi, const struct fs_cred *cr)
{
	mode_t drop;

	if (!S_ISREG(pi->mode) || !(pi->mode & (S_ISUID | S_ISGID)))
		return 0;
	drop = (pi->mode & S_ISUID) | sgid_to_drop(pi, cr);
	return drop && !fs_cred_capable_fsetid(cr) ? drop : 0;
}

mode_t inode_setid_on_chown(const struct pmfuse_inode *pi, const struct fs_cred *cr)
{
	if (S_ISDIR(pi->mode))
		return 0;
	return (pi->mode & S_ISUID) | sgid_to_drop(pi, cr);
}

int inode_kill_priv_locked(struct fs *fs, struct inode *in, const struct fs_cred *cr)
{
	const struct pmfuse_xattrs *x;
	mode_t clear = inode_setid_on_write(in->pi, cr);
	int ret = xattrs_get(fs, in->pi, &x);

	if (ret == 0 && xattr_find(x, CAPS_NAME, strlen(CAPS_NAME))) {
		ret = xattr_rewrite(fs, in, x, CAPS_NAME, strlen(CAPS_NAME), NULL, 0,
				    in->pi->mode & ~clear);
		ret = ret ?: 1;
	} else if (ret == 0 && clear) {
		ret = inode_set_mode(fs, in, in->pi->mode & ~clear);
		ret = ret ?: 1;
	}
	return ret;
}

/* Nothing to drop: no set-id bit on a regular file, no attribute at all. */
static bool nothing_to_kill(const struct pmfuse_inode *pi)
{
	return !pi->xattr_off && (!S_ISREG(pi->mode) || !(pi->mode & (S_ISUID | S_ISGID)));
}

int fs_kill_priv(struct fs *fs, uint64_t ino, const struct fs_cred *cr)
{
	struct inode *in = inode_get(fs, ino);
	int ret;

	if (!in)
		return -ENOENT;
	if (nothing_to_kill(in->pi)) {	/* the common case */
		inode_put(fs, in);
		return 0;
	}
	pthread_rwlock_wrlock(&in->lock);
	ret = inode_kill_priv_locked(fs, in, cr);
	pthread_rwlock_unlock(&in->lock);
	inode_put(fs, in);
	return ret;
}
