/*
 * acl: POSIX ACLs in the form the kernel stores them as the extended
 * attributes system.posix_acl_access and system.posix_acl_default (a
 * little-endian version word, 2, then 8-byte entries: tag, permissions,
 * id).  The kernel enforces them (FUSE_POSIX_ACL with default_permissions);
 * what it leaves to the filesystem is done here, as its fs/posix_acl.c
 * does: keep the mode and the access ACL in step (a chmod rewrites the
 * ACL's owner, mask or group, and other entries; setting an ACL sets the
 * mode), and give a new inode its parent's default ACL.
 */
#ifndef PMFUSE_ACL_H
#define PMFUSE_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ACL_ACCESS_XATTR	"system.posix_acl_access"
#define ACL_DEFAULT_XATTR	"system.posix_acl_default"

/* Which of the two is name: 1 access, 2 default, 0 neither. */
int acl_xattr_kind(const char *name);
/*
 * Is v (n bytes) a well-formed ACL (posix_acl_valid()): one owner, owning
 * group and other entry, named users and groups in ascending id order,
 * a mask if there is any named entry, permissions within rwx.  0 or -EINVAL.
 */
int acl_check(const void *v, size_t n);
/*
 * The permission bits an access ACL gives the mode (the mask stands for the
 * group class when present), merged into *mode.  0 if the ACL says no more
 * than those bits (it need not be stored), 1 if it does.
 */
int acl_equiv_mode(const void *v, size_t n, mode_t *mode);
/* A chmod to mode, applied to an access ACL in place. */
void acl_chmod(void *v, size_t n, mode_t mode);
/*
 * A new inode's access ACL from a copy of its directory's default ACL, in
 * place, and its mode masked by it (posix_acl_create_masq()).  0 if the
 * result is equivalent to the mode alone, 1 if it must be stored.
 */
int acl_create_masq(void *v, size_t n, mode_t *mode);

#endif
