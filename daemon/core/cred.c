/*
 * cred: what a request's caller may do beyond its ids -- its supplementary
 * groups and whether it holds CAP_FSETID -- for the set-id rules of writes,
 * truncates and changes of owner (the kernel's setattr_should_drop_suidgid()
 * and in_group_or_capable()).  A request carries only the caller's fsuid,
 * fsgid and thread id, so the rest comes from /proc/<tid>/status, read only
 * when a file with a set-id bit is at stake.  If that thread is gone (or the
 * request came from the kernel's own writeback, tid 0), root counts as
 * holding CAP_FSETID and only the fsgid as the caller's group.
 */
#include "fs.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAP_FSETID_BIT 4	/* linux/capability.h: CAP_FSETID */

struct cred_status {
	bool ok;
	unsigned long long cap_eff;
	const char *groups;	/* the rest of the "Groups:" line, or NULL */
};

/* Reads /proc/<tid>/status into buf and finds the two fields. */
static struct cred_status read_status(pid_t tid, char *buf, size_t size)
{
	struct cred_status s = { 0 };
	char path[64];
	FILE *f;
	size_t n;

	if (tid <= 0)
		return s;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return s;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *cap = strstr(buf, "\nCapEff:");
	const char *grp = strstr(buf, "\nGroups:");
	if (!cap || sscanf(cap + 8, "%llx", &s.cap_eff) != 1)
		return s;
	s.groups = grp ? grp + 8 : NULL;
	s.ok = true;
	return s;
}

bool fs_cred_capable_fsetid(const struct fs_cred *cr)
{
	char buf[4096];
	struct cred_status s;

	if (!cr)
		return true;	/* the filesystem itself (tools, tests) */
	s = read_status(cr->pid, buf, sizeof(buf));
	if (!s.ok)
		return cr->uid == 0;
	return s.cap_eff & (1ull << CAP_FSETID_BIT);
}

bool fs_cred_in_group(const struct fs_cred *cr, gid_t gid)
{
	char buf[4096];
	struct cred_status s;

	if (!cr || cr->gid == gid)
		return true;
	s = read_status(cr->pid, buf, sizeof(buf));
	if (!s.ok || !s.groups)
		return false;
	for (const char *p = s.groups; *p && *p != '\n';) {
		char *end;
		unsigned long g = strtoul(p, &end, 10);
		if (end == p)
			break;
		if ((gid_t)g == gid)
			return true;
		p = end;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	return false;
}
