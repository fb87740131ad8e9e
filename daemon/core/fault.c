/*
 * fault: failure injection at allocation points (see fault.h).
 */
#include "fault.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

_Atomic bool fault_armed;
_Atomic int fault_crash_armed;
static _Atomic uint64_t seen;
static _Atomic uint64_t target;

void fault_arm(uint64_t n)
{
	atomic_store(&seen, 0);
	atomic_store(&target, n);
	atomic_store(&fault_armed, true);
}

void fault_disarm(void)
{
	atomic_store(&fault_armed, false);
}

static const char *const crash_names[] = {
	[FAULT_CRASH_EVICT] = "evict",
	[FAULT_CRASH_RECLAIM_TX] = "reclaim-tx",
	[FAULT_CRASH_ICHUNK_EMPTY] = "ichunk-empty",
	[FAULT_CRASH_ICHUNK_FREE_TX] = "ichunk-free-tx",
};

void fault_crash_slow(void)
{
	raise(SIGKILL);
}

void fault_arm_from_env(void)
{
	const char *s = getenv("PMFUSE_FAULT_CRASH");
	char *end;

	for (size_t i = 1; s && i < sizeof(crash_names) / sizeof(crash_names[0]); i++)
		if (strcmp(s, crash_names[i]) == 0)
			atomic_store(&fault_crash_armed, (int)i);
	s = getenv("PMFUSE_FAULT_ALLOC");
	if (!s || !*s)
		return;
	unsigned long long n = strtoull(s, &end, 10);
	if (*end == '\0')
		fault_arm(n);
}

uint64_t fault_alloc_seen(void)
{
	return atomic_load(&seen);
}

bool fault_alloc_slow(void)
{
	uint64_t n = atomic_fetch_add(&seen, 1) + 1;

	return n == atomic_load(&target);
}
