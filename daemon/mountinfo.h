/* mountinfo: our mount as the kernel lists it in /proc/self/mountinfo. */
#ifndef PMFUSE_MOUNTINFO_H
#define PMFUSE_MOUNTINFO_H

#include <stdbool.h>
#include <stddef.h>

struct mountinfo {
	unsigned minor;		/* of the device number: the FUSE connection (fusectl) */
	char opts[256];		/* the per-mount options: "rw,nosuid,nodev,relatime" */
};

/* The topmost mount on mountpoint; false if there is none (or no /proc). */
bool mountinfo_find(const char *mountpoint, struct mountinfo *mi);
/* Is option (e.g. "noatime") one of mi's per-mount options? */
bool mountinfo_has(const struct mountinfo *mi, const char *option);

#endif
