/* mountinfo: see mountinfo.h. */
#include "mountinfo.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A mountinfo path field with its \040-style escapes undone, in place. */
static void unescape(char *s)
{
	char *o = s;

	for (const char *i = s; *i; o++) {
		if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] && i[3]) {
			*o = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
			i += 4;
		} else {
			*o = *i++;
		}
	}
	*o = 0;
}

bool mountinfo_find(const char *mountpoint, struct mountinfo *mi)
{
	char *want = realpath(mountpoint, NULL), line[8192];
	bool found = false;
	FILE *f;

	if (!want || !(f = fopen("/proc/self/mountinfo", "re"))) {
		free(want);
		return false;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		char mnt[4096], opts[256];

		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ..." */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s %255s", &maj, &min, mnt, opts) != 4)
			continue;
		unescape(mnt);
		if (strcmp(mnt, want) == 0) {	/* the last one is the topmost */
			mi->minor = min;
			snprintf(mi->opts, sizeof(mi->opts), "%s", opts);
			found = true;
		}
	}
	fclose(f);
	free(want);
	return found;
}

bool mountinfo_has(const struct mountinfo *mi, const char *option)
{
	size_t n = strlen(option);

	for (const char *p = mi->opts; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && strncmp(p, option, n) == 0)
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}
