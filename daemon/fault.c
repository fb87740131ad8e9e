/*
 * fault: failure injection at allocation points (see fault.h).
 */
#include "fault.h"

#include <stdlib.h>

_Atomic bool fault_armed;
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

void fault_arm_from_env(void)
{
	const char *s = getenv("PMFUSE_FAULT_ALLOC");
	char *end;

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
