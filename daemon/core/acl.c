/* acl: see acl.h. */
#include "acl.h"

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define ACL_XATTR_VERSION 2

enum {
	TAG_USER_OBJ = 0x01,
	TAG_USER = 0x02,
	TAG_GROUP_OBJ = 0x04,
	TAG_GROUP = 0x08,
	TAG_MASK = 0x10,
	TAG_OTHER = 0x20,
};

struct acl_entry {
	uint16_t tag, perm;
	uint32_t id;
};

#define HDR 4u
#define ENT 8u

static size_t acl_count(size_t n)
{
	return (n - HDR) / ENT;
}

static struct acl_entry acl_get(const void *v, size_t i)
{
	const unsigned char *p = (const unsigned char *)v + HDR + i * ENT;
	uint16_t tag, perm;
	uint32_t id;

	memcpy(&tag, p, 2);
	memcpy(&perm, p + 2, 2);
	memcpy(&id, p + 4, 4);
	return (struct acl_entry){ le16toh(tag), le16toh(perm), le32toh(id) };
}

static void acl_set_perm(void *v, size_t i, unsigned perm)
{
	uint16_t le = htole16((uint16_t)perm);

	memcpy((unsigned char *)v + HDR + i * ENT + 2, &le, 2);
}

int acl_xattr_kind(const char *name)
{
	if (strcmp(name, ACL_ACCESS_XATTR) == 0)
		return 1;
	if (strcmp(name, ACL_DEFAULT_XATTR) == 0)
		return 2;
	return 0;
}

int acl_check(const void *v, size_t n)
{
	/* the order the kernel keeps: owner, users, owning group, groups, mask, other */
	enum { WANT_OWNER, IN_USERS, IN_GROUPS, AFTER_MASK, DONE } phase = WANT_OWNER;
	uint32_t version;
	bool named = false, masked = false;
	int64_t last_id = -1;

	if (n < HDR + ENT || (n - HDR) % ENT)
		return -EINVAL;
	memcpy(&version, v, 4);
	if (le32toh(version) != ACL_XATTR_VERSION)
		return -EINVAL;
	for (size_t i = 0; i < acl_count(n); i++) {
		struct acl_entry e = acl_get(v, i);

		if (e.perm & ~7u)
			return -EINVAL;
		switch (e.tag) {
		case TAG_USER_OBJ:
			if (phase != WANT_OWNER)
				return -EINVAL;
			phase = IN_USERS;
			break;
		case TAG_USER:
		case TAG_GROUP:
			if (phase != (e.tag == TAG_USER ? IN_USERS : IN_GROUPS) ||
			    (int64_t)e.id <= last_id)
				return -EINVAL;
			last_id = e.id;
			named = true;
			break;
		case TAG_GROUP_OBJ:
			if (phase != IN_USERS)
				return -EINVAL;
			phase = IN_GROUPS;
			last_id = -1;
			break;
		case TAG_MASK:
			if (phase != IN_GROUPS)
				return -EINVAL;
			phase = AFTER_MASK;
			masked = true;
			break;
		case TAG_OTHER:
			if (phase != IN_GROUPS && phase != AFTER_MASK)
				return -EINVAL;
			phase = DONE;
			break;
		default:
			return -EINVAL;
		}
	}
	if (phase != DONE || (named && !masked))
		return -EINVAL;
	return 0;
}

int acl_equiv_mode(const void *v, size_t n, mode_t *mode)
{
	mode_t m = 0;
	int not_equiv = 0;

	for (size_t i = 0; i < acl_count(n); i++) {
		struct acl_entry e = acl_get(v, i);

		switch (e.tag) {
		case TAG_USER_OBJ:
			m |= (e.perm & 7u) << 6;
			break;
		case TAG_GROUP_OBJ:
			m |= (e.perm & 7u) << 3;
			break;
		case TAG_OTHER:
			m |= e.perm & 7u;
			break;
		case TAG_MASK:
			m = (m & ~(mode_t)S_IRWXG) | (e.perm & 7u) << 3;
			not_equiv = 1;
			break;
		default:
			not_equiv = 1;
			break;
		}
	}
	*mode = (*mode & ~(mode_t)0777) | m;
	return not_equiv;
}

void acl_chmod(void *v, size_t n, mode_t mode)
{
	size_t group = SIZE_MAX, mask = SIZE_MAX;

	for (size_t i = 0; i < acl_count(n); i++) {
		struct acl_entry e = acl_get(v, i);

		if (e.tag == TAG_USER_OBJ)
			acl_set_perm(v, i, (mode & S_IRWXU) >> 6);
		else if (e.tag == TAG_OTHER)
			acl_set_perm(v, i, mode & S_IRWXO);
		else if (e.tag == TAG_GROUP_OBJ)
			group = i;
		else if (e.tag == TAG_MASK)
			mask = i;
	}
	if (mask != SIZE_MAX)
		acl_set_perm(v, mask, (mode & S_IRWXG) >> 3);
	else if (group != SIZE_MAX)
		acl_set_perm(v, group, (mode & S_IRWXG) >> 3);
}

int acl_create_masq(void *v, size_t n, mode_t *mode)
{
	mode_t m = *mode;
	size_t group = SIZE_MAX, mask = SIZE_MAX;
	int not_equiv = 0;

	for (size_t i = 0; i < acl_count(n); i++) {
		struct acl_entry e = acl_get(v, i);
		unsigned p = e.perm;

		switch (e.tag) {
		case TAG_USER_OBJ:
			p &= (m >> 6) & 7u;
			acl_set_perm(v, i, p);
			m &= (mode_t)(p << 6) | ~(mode_t)S_IRWXU;
			break;
		case TAG_OTHER:
			p &= m & 7u;
			acl_set_perm(v, i, p);
			m &= (mode_t)p | ~(mode_t)S_IRWXO;
			break;
		case TAG_GROUP_OBJ:
			group = i;
			break;
		case TAG_MASK:
			mask = i;
			not_equiv = 1;
			break;
		default:
			not_equiv = 1;
			break;
		}
	}
	size_t g = mask != SIZE_MAX ? mask : group;
	if (g != SIZE_MAX) {
		unsigned p = acl_get(v, g).perm & ((m >> 3) & 7u);
		acl_set_perm(v, g, p);
		m &= (mode_t)(p << 3) | ~(mode_t)S_IRWXG;
	}
	*mode = (*mode & ~(mode_t)0777) | (m & 0777);
	return not_equiv;
}
