/*
 * fsck.pmfuse's checker as a function, for in-process callers (the fuzz
 * target in tests/fuzz links the checker's library, mkfs/fsck/ without
 * main.c).
 */
#ifndef PMFUSE_FSCK_H
#define PMFUSE_FSCK_H

#include <stdbool.h>

/*
 * Check the region read-only, as fsck.pmfuse -n does; the report goes to
 * stdout.  Returns an
 * fsck(8) exit code: 0 clean, 4 problems found, 8 operational error.
 * guarded is the program's mode: SIGALRM watchdogs around libpmemobj's
 * open and heap walk, and handlers that turn a fault inside libpmemobj
 * into exit code 8 (installed for the rest of the process).  Unguarded,
 * SIGALRM and the fault signals stay whoever else's they are, and a fault
 * is a crash.  May be called again in the same process.
 */
int fsck_check(const char *region, bool verbose, bool guarded);

#endif
